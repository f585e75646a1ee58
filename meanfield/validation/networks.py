r"""Random finite-width networks in torch, batched over seeds, matching a :class:`meanfield.Network`.

A :class:`NetworkEnsemble` holds ``n_seeds`` independent draws of a fully connected network with ``depth`` hidden layers
of width ``M_l = round(alpha_l * width)``, input dimension ``M_0 = round(alpha_0 * width)`` and ``n_outputs`` linear
outputs (docs/mathematics.md section 1)::

    u^l = (sigma_{w,l} / sqrt(M_{l-1})) w^l h^{l-1} + sigma_{b,l} beta^l,   w^l, beta^l ~ N(0, 1),
    h^l = phi_l(u^l),  f = u^L.

The raw standard-normal draws ``w^l, beta^l`` are stored once; the two parameterizations differ only in which tensors
are the trainable parameters (and hence in gradients):

* ``"standard"`` (SP): ``W^l = sigma_w w^l / sqrt(M_{l-1})``, ``b^l = sigma_b beta^l`` are the parameters;
* ``"ntk"`` (Jacot 2018): ``w^l, beta^l`` themselves are the parameters.

Every network of an ensemble is drawn from its own generator seeded by ``(seed, index)``, so network ``i`` of a seed
is the same whatever chunking or device order is used to draw the others.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .._checks import check_int
from ..network import Network

__all__ = [
    "ChainEnsemble",
    "NetworkEnsemble",
    "TorchDense",
    "TorchDropout",
    "TorchNonlinearity",
    "TorchResidual",
    "TorchActivation",
    "haar_orthogonal",
    "layer_widths",
    "resolve_device",
    "resolve_dtype",
    "sample_chain",
    "sample_ensemble",
    "torch_activation",
]

PARAMETERIZATIONS = ("standard", "ntk")


def resolve_device(device=None) -> torch.device:
    """``None`` or ``"auto"`` -> CUDA when available, else CPU; ``"cuda"`` without a GPU raises ValueError."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be None, 'auto', 'cpu', 'cuda' or a torch.device, got {device!r}")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but torch sees no CUDA device; use device='cpu' or 'auto'")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")
    return dev


def resolve_dtype(dtype="float64") -> torch.dtype:
    """``"float64"``/``"float32"`` (or the torch dtypes) -> torch dtype; anything else raises."""
    table = {"float64": torch.float64, "double": torch.float64, "float32": torch.float32, "float": torch.float32}
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float64, torch.float32):
            return dtype
        raise ValueError(f"dtype must be float64 or float32, got {dtype}")
    if isinstance(dtype, str) and dtype in table:
        return table[dtype]
    if dtype is np.float64:
        return torch.float64
    if dtype is np.float32:
        return torch.float32
    raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")


# --------------------------------------------------------------------------------------------------------------------
# activations in torch
# --------------------------------------------------------------------------------------------------------------------
_SELU_LAMBDA = 1.0507009873554804934193349852946
_SELU_ALPHA = 1.6732632423543772848170429916717
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _gelu_d(x):
    return 0.5 * torch.erfc(-x / math.sqrt(2.0)) + x * _INV_SQRT_2PI * torch.exp(-0.5 * x * x)


def _silu_d(x):
    s = torch.sigmoid(x)
    return s + x * s * (1.0 - s)


def _mish_d(x):
    t = torch.tanh(torch.nn.functional.softplus(x))
    return t + x * torch.sigmoid(x) * (1.0 - t * t)


def _elu(alpha, lam):
    def phi(x):
        return lam * torch.where(x > 0, x, alpha * torch.expm1(torch.clamp(x, max=0.0)))

    def dphi(x):
        return lam * torch.where(x > 0, torch.ones_like(x), alpha * torch.exp(torch.clamp(x, max=0.0)))

    return phi, dphi


def _builtin_torch(name: str, p0: float):
    if name == "tanh":
        return torch.tanh, lambda x: 1.0 - torch.tanh(x) ** 2
    if name == "relu":
        return torch.relu, lambda x: (x > 0).to(x.dtype)
    if name == "leaky_relu":
        return (lambda x: torch.where(x > 0, x, p0 * x)), (lambda x: torch.where(x > 0, torch.ones_like(x),
                                                                                  torch.full_like(x, p0)))
    if name == "linear":
        return (lambda x: x), torch.ones_like
    if name == "erf":
        return torch.special.erf, lambda x: _TWO_OVER_SQRT_PI * torch.exp(-x * x)
    if name == "sigmoid":
        return torch.sigmoid, lambda x: torch.sigmoid(x) * (1.0 - torch.sigmoid(x))
    if name == "hard_tanh":
        return (lambda x: torch.clamp(x, -1.0, 1.0)), (lambda x: ((x > -1.0) & (x < 1.0)).to(x.dtype))
    if name == "softplus":
        return torch.nn.functional.softplus, torch.sigmoid
    if name == "gelu":
        return (lambda x: 0.5 * x * torch.erfc(-x / math.sqrt(2.0))), _gelu_d
    if name == "silu":
        return (lambda x: x * torch.sigmoid(x)), _silu_d
    if name == "elu":
        return _elu(p0, 1.0)
    if name == "selu":
        return _elu(_SELU_ALPHA, _SELU_LAMBDA)
    if name == "sin":
        return torch.sin, torch.cos
    if name == "mish":
        return torch.nn.functional.mish, _mish_d
    return None


@dataclass(frozen=True)
class TorchActivation:
    """A torch version of a :class:`meanfield.activations.Activation`: ``phi`` and ``dphi`` act on tensors.

    ``differentiable`` is False for custom activations, which are evaluated through numpy on the CPU (usable for
    the explicit forward/backward passes of :mod:`meanfield.validation.measure`, not for autograd or torch.func).
    """

    name: str
    phi: object
    dphi: object
    differentiable: bool = True


def torch_activation(activation) -> TorchActivation:
    """Torch implementation of a built-in activation (by name or :class:`Activation`).

    Examples
    --------
    >>> import torch
    >>> from meanfield.validation import torch_activation
    >>> float(torch_activation("tanh").dphi(torch.tensor(0.0)))
    1.0
    """
    from ..activations import get_activation

    act = get_activation(activation)
    fns = _builtin_torch(act.name, float(act.params[0])) if not act.is_custom else None
    if fns is not None:
        return TorchActivation(act.name, fns[0], fns[1], True)

    def _np(order):
        def f(x):
            arr = x.detach().cpu().numpy()
            out = np.asarray(act.phi(arr) if order == 0 else act.dphi(arr), dtype=np.float64)
            return torch.as_tensor(out, dtype=x.dtype, device=x.device).reshape(x.shape)
        return f

    return TorchActivation(act.name, _np(0), _np(1), False)


# --------------------------------------------------------------------------------------------------------------------
# the ensemble
# --------------------------------------------------------------------------------------------------------------------
def layer_widths(network: Network, width: int, n_outputs: int = 1) -> tuple:
    """``(M_0, M_1, ..., M_depth, C)``: ``M_l = max(1, round(alpha_l * width))`` and ``C = n_outputs``."""
    width = check_int("width", width, 1)
    n_outputs = check_int("n_outputs", n_outputs, 1)
    return tuple(max(1, int(round(a * width))) for a in network.alphas) + (n_outputs,)


def _network_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint64)[0] % (2 ** 63))


@dataclass(frozen=True, eq=False)
class NetworkEnsemble:
    r"""``n_seeds`` independent random finite networks with the statistics of a :class:`meanfield.Network`.

    Attributes
    ----------
    network : Network
        The infinite-width description (activations, per-layer ``weight_var``/``bias_var``, width ratios).
    width : int
        ``M``; layer widths are ``widths = (M_0, M_1, ..., M_depth, C)``.
    parameterization : {"standard", "ntk"}
        Which tensors are the trainable parameters (see the module docstring); the function is the same.
    raw_weights, raw_biases : tuple of torch.Tensor
        Standard-normal draws ``w^l`` of shape ``(S, M_l, M_{l-1})`` and ``beta^l`` of shape ``(S, M_l)``, l = 1..L.
    seeds : tuple of int
        Indices of the networks (network ``i`` is drawn from the generator seeded by ``(seed, seeds[i])``).
    """

    network: Network
    width: int
    n_outputs: int
    parameterization: str
    seed: int
    seeds: tuple
    widths: tuple
    raw_weights: tuple
    raw_biases: tuple

    # ---- basic facts -------------------------------------------------------------------------------------------
    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def n_layers(self) -> int:
        return len(self.raw_weights)

    @property
    def device(self) -> torch.device:
        return self.raw_weights[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.raw_weights[0].dtype

    @property
    def n_params(self) -> int:
        """P: number of weights and biases of one network (readout included)."""
        w = self.widths
        return int(sum(w[l] * w[l - 1] + w[l] for l in range(1, len(w))))

    @property
    def weight_scales(self) -> tuple:
        """``sigma_{w,l} / sqrt(M_{l-1})`` for l = 1..L."""
        return tuple(math.sqrt(v / self.widths[l]) for l, v in enumerate(self.network.weight_vars))

    @property
    def bias_scales(self) -> tuple:
        """``sigma_{b,l}`` for l = 1..L."""
        return tuple(math.sqrt(v) for v in self.network.bias_vars)

    @property
    def activations(self) -> tuple:
        return tuple(torch_activation(a) for a in self.network.activations)

    def effective_weights(self) -> tuple:
        """``W^l = sigma_w w^l / sqrt(M_{l-1})`` (the SP weights, whatever the parameterization)."""
        return tuple(s * w for s, w in zip(self.weight_scales, self.raw_weights))

    def effective_biases(self) -> tuple:
        return tuple(s * b for s, b in zip(self.bias_scales, self.raw_biases))

    # ---- parameters --------------------------------------------------------------------------------------------
    def parameters(self, requires_grad: bool = False) -> dict:
        """Trainable parameters ``{"W1": (S, M_1, M_0), "b1": (S, M_1), ...}`` in this ensemble's parameterization."""
        if self.parameterization == "standard":
            ws, bs = self.effective_weights(), self.effective_biases()
        else:
            ws, bs = self.raw_weights, self.raw_biases
        out = {}
        for l, (w, b) in enumerate(zip(ws, bs), start=1):
            out[f"W{l}"] = w.detach().clone().requires_grad_(requires_grad)
            out[f"b{l}"] = b.detach().clone().requires_grad_(requires_grad)
        return out

    def _scales(self):
        if self.parameterization == "standard":
            return (1.0,) * self.n_layers, (1.0,) * self.n_layers
        return self.weight_scales, self.bias_scales

    @functools.cached_property
    def chain_ensemble(self) -> "ChainEnsemble":
        """The same networks as a :class:`ChainEnsemble` of ``network.to_layers()`` (the same draws): the layer twins
        compute the forward pass, which is written once there."""
        ch = self.network.to_layers()
        twins, _ = _twins(ch.layers, self.width, self.widths[0], [0], True, self.n_outputs)
        return ChainEnsemble(ch, self.width, self.n_outputs, self.parameterization, self.seed, self.seeds,
                             tuple(twins), self.widths[0], self.raw_weights, self.raw_biases)

    def apply(self, params: dict, x: torch.Tensor) -> torch.Tensor:
        """Network outputs ``f`` for the parameters ``params`` (as from :meth:`parameters`, batched or a single
        network's slice) at inputs ``x`` of shape ``(T, M_0)`` (shared) or ``(S, T, M_0)``; differentiable by
        autograd and torch.func. Returns shape ``(..., T, C)``."""
        for act in self.activations:
            if not act.differentiable:
                raise ValueError(f"activation {act.name!r} is custom (numpy); autograd/torch.func need a built-in "
                                 "activation")
        return self.chain_ensemble._propagate(x, params)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``f(x)`` of every network: shape ``(S, T, C)``."""
        return self.forward_pass(x)[0][-1]

    def _layer_tensors(self, params: Optional[dict] = None) -> list:
        """``[(w, s_w, b, s_b), ...]`` with ``u^l = s_w h w^T + s_b b``: the raw draws by default, or ``params`` (as
        from :meth:`parameters`, e.g. after training) in this ensemble's parameterization."""
        if params is None:
            return list(zip(self.raw_weights, self.weight_scales, self.raw_biases, self.bias_scales))
        sw, sb = self._scales()
        return [(params[f"W{l}"].detach(), sw[l - 1], params[f"b{l}"].detach(), sb[l - 1])
                for l in range(1, self.n_layers + 1)]

    def forward_pass(self, x: torch.Tensor, params: Optional[dict] = None):
        """Explicit forward pass. Returns ``(us, hs)``: ``us[l-1] = u^l`` (shape ``(S, T, M_l)``, l = 1..L) and
        ``hs[l] = h^l`` (l = 0..L-1, ``hs[0]`` the input broadcast to ``(S, T, M_0)``). ``params`` (optional)
        replaces the initial parameters (same layout as :meth:`parameters`)."""
        x = self._check_input(x)
        _, record = self.chain_ensemble.forward_pass(x, params)
        return [u.detach() for _, _, u in record], [h.detach() for _, h, _ in record]

    def backward_pass(self, us, params: Optional[dict] = None) -> list:
        r"""Backpropagated signals ``delta^l[s, t, k, i] = d f_k(x_t) / d u^l_i`` for every output unit k.

        ``delta^L = e_k``; ``delta^l = phi'(u^l) * (W^{l+1 T} delta^{l+1})``. Returns a list indexed l-1 (l = 1..L) of
        tensors of shape ``(S, T, C, M_l)``.
        """
        acts = self.activations
        layers = self._layer_tensors(params)
        S, T, C = us[-1].shape
        eye = torch.eye(C, dtype=self.dtype, device=self.device)
        deltas = [eye.expand(S, T, C, C)]
        for l in range(self.n_layers - 1, 0, -1):
            w, sw = layers[l][0], layers[l][1]
            d = deltas[0].reshape(S, T * C, -1)
            back = (sw * torch.bmm(d, w)).reshape(S, T, C, -1)  # W^{l+1 T} delta^{l+1}
            deltas.insert(0, back * acts[l - 1].dphi(us[l - 1]).unsqueeze(-2))
        return deltas

    def _check_input(self, x):
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x, dtype=np.float64))
        x = x.to(device=self.device, dtype=self.dtype)
        if x.ndim == 1:
            x = x.unsqueeze(0)
        if x.ndim not in (2, 3) or x.shape[-1] != self.widths[0]:
            raise ValueError(f"x must have shape (T, M_0) or (n_seeds, T, M_0) with M_0 = {self.widths[0]}, "
                             f"got {tuple(x.shape)}")
        if x.ndim == 3 and x.shape[0] != self.n_seeds:
            raise ValueError(f"x with 3 dimensions must have n_seeds = {self.n_seeds} rows, got {x.shape[0]}")
        if not torch.all(torch.isfinite(x)):
            raise ValueError("x must be finite (no NaN or inf)")
        return x

    def select(self, index) -> "NetworkEnsemble":
        """The sub-ensemble of the networks at positions ``index`` (a slice or a sequence of positions)."""
        if isinstance(index, slice):
            pos = list(range(self.n_seeds))[index]
        else:
            pos = [int(i) for i in index]
        idx = torch.as_tensor(pos, dtype=torch.long, device=self.device)
        return NetworkEnsemble(self.network, self.width, self.n_outputs, self.parameterization, self.seed,
                               tuple(self.seeds[i] for i in pos), self.widths,
                               tuple(w.index_select(0, idx) for w in self.raw_weights),
                               tuple(b.index_select(0, idx) for b in self.raw_biases))


def sample_ensemble(network: Network, width: int, n_seeds: int, *, n_outputs: int = 1,
                    parameterization: str = "standard", seed: int = 0, first_index: int = 0,
                    device=None, dtype="float64") -> NetworkEnsemble:
    r"""Draw ``n_seeds`` random finite networks with the statistics of ``network`` at width ``width``.

    Parameters
    ----------
    network : Network
        Infinite-width description: ``W^l_ij ~ N(0, sigma_{w,l}^2 / M_{l-1})``, ``b^l_i ~ N(0, sigma_{b,l}^2)``.
    width : int
        M (>= 1); hidden widths ``round(alpha_l M)``, input dimension ``round(alpha_0 M)``.
    n_seeds : int
        Number of independent networks S (>= 1), batched along the first axis of every tensor.
    n_outputs : int
        C, the number of linear outputs.
    parameterization : {"standard", "ntk"}
        Standard (SP) or NTK parameterization (docs/mathematics.md section 1): same function, different gradients.
    seed, first_index : int
        Network i (i = first_index .. first_index + n_seeds - 1) is drawn from a generator seeded by ``(seed, i)``.
    device : None, "auto", "cpu" or "cuda"
        Default: CUDA when available, else CPU.
    dtype : "float64" or "float32"

    Examples
    --------
    >>> from meanfield import Network
    >>> from meanfield.validation import sample_ensemble
    >>> ens = sample_ensemble(Network("tanh", depth=2, weight_var=1.5), width=32, n_seeds=4, device="cpu")
    >>> ens.widths, ens.n_params
    ((32, 32, 32, 1), 2145)
    """
    if not isinstance(network, Network):
        raise TypeError(f"network must be a meanfield.Network, got {type(network).__name__}")
    if network.dropout_keep != 1.0:
        raise ValueError("network.dropout_keep must be 1.0: the finite networks here have no dropout (the theory's "
                         "dropout maps are not validated by this module)")
    n_seeds = check_int("n_seeds", n_seeds, 1)
    seed = check_int("seed", seed, 0)
    first_index = check_int("first_index", first_index, 0)
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    widths = layer_widths(network, width, n_outputs)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype)
    L = len(widths) - 1
    ws = [torch.empty((n_seeds, widths[l], widths[l - 1]), dtype=dt, device=dev) for l in range(1, L + 1)]
    bs = [torch.empty((n_seeds, widths[l]), dtype=dt, device=dev) for l in range(1, L + 1)]
    gen = torch.Generator(device=dev)
    for i in range(n_seeds):
        gen.manual_seed(_network_seed(seed, first_index + i))
        for l in range(L):
            ws[l][i].normal_(generator=gen)
            bs[l][i].normal_(generator=gen)
    return NetworkEnsemble(network, int(width), int(n_outputs), parameterization, seed,
                           tuple(range(first_index, first_index + n_seeds)), widths, tuple(ws), tuple(bs))


def haar_orthogonal(rows: int, cols: int, generator, dtype=torch.float64, device="cpu") -> torch.Tensor:
    """A ``(rows, cols)`` matrix with orthonormal rows (rows <= cols) or columns, Haar distributed: QR of a Gaussian
    matrix with the signs of R's diagonal moved into Q (Mezzadri 2007).

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> O = haar_orthogonal(3, 5, g)
    >>> bool(torch.allclose(O @ O.T, torch.eye(3, dtype=O.dtype)))
    True
    """
    n, m = max(rows, cols), min(rows, cols)
    A = torch.empty((n, m), dtype=dtype, device=device).normal_(generator=generator)
    Qm, R = torch.linalg.qr(A)
    Qm = Qm * torch.sign(torch.diagonal(R)).unsqueeze(0)
    return Qm if rows >= cols else Qm.T


# --------------------------------------------------------------------------------------------------------------------
# torch twins of the layers of meanfield.layers: a finite-width network from any chain
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TorchDense:
    """Twin of :class:`meanfield.layers.Dense`: ``u = s_w h W^T + s_b b`` with parameters ``W{index}``, ``b{index}``
    (``s_w = sqrt(weight_var / fan_in)``, ``s_b = sqrt(bias_var)`` in the NTK parameterization, 1 in the standard
    one, where the parameters are the effective weights)."""

    layer: object
    index: int
    fan_in: int
    fan_out: int

    @property
    def weight_scale(self) -> float:
        return math.sqrt(self.layer.weight_var / self.fan_in)

    @property
    def bias_scale(self) -> float:
        return math.sqrt(self.layer.bias_var)

    def apply(self, h, params, ens, record, gen):
        W, b = params[f"W{self.index}"], params[f"b{self.index}"]
        if ens.parameterization == "ntk":
            u = self.weight_scale * torch.matmul(h, W.transpose(-1, -2)) + self.bias_scale * b.unsqueeze(-2)
        else:
            u = torch.matmul(h, W.transpose(-1, -2)) + b.unsqueeze(-2)
        if record is not None:
            record.append((self, h, u))
        return u


@dataclass(frozen=True, eq=False)
class TorchNonlinearity:
    """Twin of :class:`meanfield.layers.Nonlinearity`: ``phi`` elementwise (torch implementation of the activation)."""

    layer: object
    activation: TorchActivation

    def apply(self, h, params, ens, record, gen):
        return self.activation.phi(h)


@dataclass(frozen=True, eq=False)
class TorchDropout:
    """Twin of :class:`meanfield.layers.Dropout`: ``h m / keep``, ``m ~ Bernoulli(keep)`` per seed, input and unit
    (a fresh mask at every call, drawn from the generator passed to the ensemble's call)."""

    layer: object

    def apply(self, h, params, ens, record, gen):
        keep = self.layer.keep
        if keep == 1.0:
            return h
        m = torch.rand(h.shape, generator=gen, dtype=h.dtype, device=h.device) < keep
        return h * m.to(h.dtype) / keep


@dataclass(frozen=True, eq=False)
class TorchResidual:
    """Twin of :class:`meanfield.layers.Residual`: ``h + alpha g(h)`` with ``g`` the block's twins."""

    layer: object
    block: tuple

    def apply(self, h, params, ens, record, gen):
        g = h
        for tw in self.block:
            g = tw.apply(g, params, ens, record, gen)
        return h + self.layer.alpha * g


def _twins(layers, width, fan_in, counter, last_is_readout, n_outputs):
    """Twins of ``layers`` (a tuple of meanfield.layers objects) for a stream of width ``fan_in``."""
    from ..layers import Dense, Dropout, Nonlinearity, Residual

    out = []
    for k, lay in enumerate(layers):
        if isinstance(lay, Dense):
            counter[0] += 1
            readout = last_is_readout and k == len(layers) - 1
            fan_out = n_outputs if readout else max(1, int(round(lay.width_ratio * width)))
            out.append(TorchDense(lay, counter[0], fan_in, fan_out))
            fan_in = fan_out
        elif isinstance(lay, Nonlinearity):
            out.append(TorchNonlinearity(lay, torch_activation(lay.activation)))
        elif isinstance(lay, Dropout):
            out.append(TorchDropout(lay))
        elif isinstance(lay, Residual):
            block, f2 = _twins(lay.block.layers, width, fan_in, counter, False, n_outputs)
            if f2 != fan_in:
                raise ValueError(f"Residual block maps width {fan_in} to {f2}; its last Dense must keep the width")
            out.append(TorchResidual(lay, tuple(block)))
        else:
            raise TypeError(f"no torch twin for layer {type(lay).__name__}")
    return out, fan_in


def _dense_twins(twins):
    for tw in twins:
        if isinstance(tw, TorchDense):
            yield tw
        elif isinstance(tw, TorchResidual):
            yield from _dense_twins(tw.block)


@dataclass(frozen=True, eq=False)
class ChainEnsemble:
    r"""``n_seeds`` independent random finite networks built from a layer chain (:mod:`meanfield.layers`).

    Each layer is replaced by its torch twin (:class:`TorchDense`, :class:`TorchNonlinearity`, :class:`TorchDropout`,
    :class:`TorchResidual`); Dense layer ``k`` (chain order, residual blocks included) has standard-normal draws
    ``raw_weights[k-1]`` of shape ``(S, fan_out, fan_in)`` and ``raw_biases[k-1]`` of shape ``(S, fan_out)``. The
    input width is ``round(input_ratio * width)``, Dense outputs ``round(width_ratio * width)``, the last Dense of
    the chain has ``n_outputs`` outputs. For a chain from :meth:`meanfield.Network.to_layers` the draws are those
    of :func:`sample_ensemble` with the same seed (the same networks).
    """

    chain: object
    width: int
    n_outputs: int
    parameterization: str
    seed: int
    seeds: tuple
    twins: tuple
    input_width: int
    raw_weights: tuple
    raw_biases: tuple

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def dense(self) -> tuple:
        """The Dense twins in chain order."""
        return tuple(_dense_twins(self.twins))

    @property
    def dtype(self) -> torch.dtype:
        return self.raw_weights[0].dtype

    @property
    def device(self) -> torch.device:
        return self.raw_weights[0].device

    @property
    def n_params(self) -> int:
        return int(sum(d.fan_out * d.fan_in + d.fan_out for d in self.dense))

    def parameters(self, requires_grad: bool = False) -> dict:
        """``{"W1": (S, fan_out, fan_in), "b1": (S, fan_out), ...}`` in this ensemble's parameterization."""
        out = {}
        for d, w, b in zip(self.dense, self.raw_weights, self.raw_biases):
            if self.parameterization == "standard":
                w, b = d.weight_scale * w, d.bias_scale * b
            out[f"W{d.index}"] = w.detach().clone().requires_grad_(requires_grad)
            out[f"b{d.index}"] = b.detach().clone().requires_grad_(requires_grad)
        return out

    def _run(self, x, params, record, generator):
        x = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        if x.ndim not in (2, 3) or x.shape[-1] != self.input_width or (x.ndim == 3 and x.shape[0] != self.n_seeds):
            raise ValueError(f"x must have shape (T, {self.input_width}) or ({self.n_seeds}, T, {self.input_width}), "
                             f"got {tuple(x.shape)}")
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(_network_seed(self.seed, 2 ** 40 + self.seeds[0]))   # dropout masks
        return self._propagate(x.expand(self.n_seeds, *x.shape[-2:]), params, record, generator)

    def _propagate(self, h, params, record=None, generator=None):
        """The layer twins applied to ``h`` as it is (any leading shape the parameters broadcast against: the whole
        ensemble, or one network's slice under torch.func)."""
        for tw in self.twins:
            h = tw.apply(h, params, self, record, generator)
        return h

    def apply(self, params: dict, x, generator=None) -> torch.Tensor:
        """Outputs ``(S, T, C)`` for the parameters ``params`` (differentiable by autograd)."""
        return self._run(x, params, None, generator)

    def __call__(self, x, generator=None) -> torch.Tensor:
        return self._run(x, self.parameters(), None, generator)

    def forward_pass(self, x, params: Optional[dict] = None, generator=None):
        """``(f, record)``: outputs ``(S, T, C)`` and, per Dense layer in chain order, ``(twin, h_in, u_out)``."""
        record = []
        f = self._run(x, self.parameters() if params is None else params, record, generator)
        return f, record

    def order_parameters(self, x, generator=None) -> dict:
        r"""Empirical per-Dense order parameters for the inputs ``x`` (T, M_0), per seed (leading axis S):

        ``q[k] = u.u'/M_out``, ``qhat[k] = h.h'/M_in``, ``qtilde[k] = sum_i delta_i delta'_i`` (averaged over the C
        output units, ``delta = d f_c / d u``), and ``ntk = sum_k qtilde[k] * direct_k`` with ``direct_k =
        (w_k/M_in) h.h' + b_k`` (NTK parameterization) or ``h.h' + 1`` (standard): by the chain rule the
        parameter-gradient Gram matrix of a Dense layer is ``(delta.delta') (s_w^2 h.h' + s_b^2)``, so ``ntk`` is
        ``J J^T`` averaged over the outputs. All arrays are numpy, shape ``(S, T, T)``.
        """
        f, record = self.forward_pass(x, self.parameters(requires_grad=True), generator)
        us = [u for _, _, u in record]
        C = f.shape[-1]
        qt = [torch.zeros(f.shape[0], f.shape[1], f.shape[1], dtype=f.dtype, device=f.device) for _ in us]
        for c in range(C):
            grads = torch.autograd.grad(f[..., c].sum(), us, retain_graph=c < C - 1)
            for k, g in enumerate(grads):
                qt[k] += g @ g.transpose(-1, -2) / C
        out = {"q": [], "qhat": [], "qtilde": [], "ntk": 0.0}
        for k, (d, h, u) in enumerate(record):
            hh = (h @ h.transpose(-1, -2)).detach()
            out["q"].append(((u @ u.transpose(-1, -2)).detach() / d.fan_out).cpu().numpy())
            out["qhat"].append((hh / d.fan_in).cpu().numpy())
            out["qtilde"].append(qt[k].detach().cpu().numpy())
            direct = hh + 1.0 if self.parameterization == "standard" else (d.layer.weight_var * hh / d.fan_in
                                                                           + d.layer.bias_var)
            out["ntk"] = out["ntk"] + (qt[k] * direct).detach().cpu().numpy()
        return out


def sample_chain(chain, width: int, n_seeds: int, *, n_outputs: int = 1, parameterization: str = "standard",
                 seed: int = 0, first_index: int = 0, device=None, dtype="float64") -> ChainEnsemble:
    r"""Draw ``n_seeds`` random finite networks of width ``width`` from a layer chain (or a Network).

    Dense layer ``k``: ``W ~ N(0, weight_var / fan_in)``, ``b ~ N(0, bias_var)`` (standard or NTK parameterization,
    as :func:`sample_ensemble`); network ``i`` is drawn from the generator seeded by ``(seed, first_index + i)``,
    Dense layers in chain order, weights then biases.

    Examples
    --------
    >>> from meanfield.layers import Dense, Nonlinearity, Residual, serial
    >>> from meanfield.validation.networks import sample_chain
    >>> net = serial(Dense(1.0), Residual(serial(Nonlinearity("relu"), Dense(2.0)), 0.5), Dense(1.0))
    >>> ens = sample_chain(net, width=16, n_seeds=2, n_outputs=3, device="cpu")
    >>> tuple(ens(torch.ones(4, 16)).shape), ens.n_params
    ((2, 4, 3), 595)
    """
    from ..trace import as_chain

    ch = as_chain(chain)
    width = check_int("width", width, 1)
    n_seeds = check_int("n_seeds", n_seeds, 1)
    n_outputs = check_int("n_outputs", n_outputs, 1)
    seed = check_int("seed", seed, 0)
    first_index = check_int("first_index", first_index, 0)
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    from ..layers import Dense

    if not isinstance(ch.layers[-1], Dense):
        raise ValueError("chain must end with a Dense layer (the linear readout with n_outputs outputs)")
    m0 = max(1, int(round(ch.input_ratio * width)))
    twins, _ = _twins(ch.layers, width, m0, [0], True, n_outputs)
    dense = list(_dense_twins(twins))
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    ws = [torch.empty((n_seeds, d.fan_out, d.fan_in), dtype=dt, device=dev) for d in dense]
    bs = [torch.empty((n_seeds, d.fan_out), dtype=dt, device=dev) for d in dense]
    gen = torch.Generator(device=dev)
    for i in range(n_seeds):
        gen.manual_seed(_network_seed(seed, first_index + i))
        for k, d in enumerate(dense):
            if d.layer.orthogonal:     # Haar-orthogonal, entries of unit variance like the Gaussian draws
                ws[k][i] = math.sqrt(max(d.fan_in, d.fan_out)) * haar_orthogonal(d.fan_out, d.fan_in, gen, dt, dev)
            else:
                ws[k][i].normal_(generator=gen)
            bs[k][i].normal_(generator=gen)
    return ChainEnsemble(ch, width, n_outputs, parameterization, seed,
                         tuple(range(first_index, first_index + n_seeds)), tuple(twins), m0, tuple(ws), tuple(bs))
