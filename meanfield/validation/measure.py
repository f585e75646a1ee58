r"""Measurements on random finite networks: order parameters, kernels, Fisher spectra, gradient descent.

Notation of docs/mathematics.md. For a :class:`~meanfield.validation.networks.NetworkEnsemble` of S networks:

* forward order parameters per network and layer l = 1..L: ``q^l(x,x) = (1/M_l) sum_i u^l_i(x)^2`` (likewise
  ``q^l(x',x')`` and ``q^l(x,x')``), ``c^l = q^l(x,x') / sqrt(q^l(x,x) q^l(x',x'))``;
* backward order parameters (Karakida's convention: sums over units, averaged over the C output units k):
  ``qtilde_1^l = sum_i delta^l_i(x)^2``, ``qtilde_2^l = sum_i delta^l_i(x) delta^l_i(x')`` with
  ``delta^l_i = d f_k / d u^l_i``; ``chi_1^l = qtilde_1^l / qtilde_1^{l+1}`` (gradient-norm ratio of adjacent layers);
* empirical NNGP: the output covariance ``E_seeds[f_k(x) f_k(x')]`` (averaged over seeds and outputs);
* empirical NTK ``Theta(x,x') = sum_p df(x)/dtheta_p df(x')/dtheta_p``, by Jacobian contraction with ``torch.func``
  (or, as an exact second route, layer by layer: ``sum_l (delta^l . delta'^l)(s_w^2 h^{l-1} . h'^{l-1} + s_b^2)``);
* Fisher information ``F = (1/T) sum_t sum_k grad f_k(x_t) grad f_k(x_t)^T`` (P x P) through its dual
  ``F* = J J^T / T`` (CT x CT, the same non-zero spectrum): mean eigenvalue ``tr F / P``, second moment
  ``tr F^2 / P = ||F*||_F^2 / P`` and ``lambda_max``; the P x P matrix is never formed;
* full-batch gradient descent on ``(1/2T) sum_t ||y_t - f(x_t)||^2``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .._checks import check_finite_array, check_int, check_nonneg, check_positive
from .networks import NetworkEnsemble, _network_seed

__all__ = [
    "FisherSample",
    "OrderParameterSample",
    "TrainingRun",
    "empirical_nngp",
    "empirical_ntk",
    "fisher_statistics",
    "gram_layerwise",
    "measure_order_parameters",
    "pair_inputs",
    "train_gd",
]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _check_ensemble(ensemble):
    if not isinstance(ensemble, NetworkEnsemble):
        raise TypeError(f"ensemble must be a NetworkEnsemble (see sample_ensemble), got {type(ensemble).__name__}")


def _check_finite_result(name, arr):
    if not np.all(np.isfinite(arr)):
        raise FloatingPointError(f"{name}: the finite networks produced non-finite values (overflow?); reduce depth, "
                                 "weight_var or the input norm, or use float64")
    return arr


# --------------------------------------------------------------------------------------------------------------------
# two inputs with prescribed Gram matrix
# --------------------------------------------------------------------------------------------------------------------
def pair_inputs(input_dim: int, input_norm: float = 1.0, input_norm2: Optional[float] = None,
                input_overlap: float = 0.0, *, dtype=torch.float64, device="cpu") -> torch.Tensor:
    r"""Two fixed inputs ``x, x'`` (shape ``(2, M_0)``) with ``x.x/M_0 = input_norm``, ``x'.x'/M_0 = input_norm2`` and
    ``x.x'/M_0 = input_overlap`` (the ``qhat^0`` of :func:`meanfield.forward.forward`).

    The weights are isotropic, so only this Gram matrix matters; the vectors are built from two orthonormal
    directions (a seeded QR) so that no coordinate is special.
    """
    input_dim = check_int("input_dim", input_dim, 2)
    n1 = check_nonneg("input_norm", input_norm)
    n2 = n1 if input_norm2 is None else check_nonneg("input_norm2", input_norm2)
    ov = float(check_finite_array("input_overlap", input_overlap))
    if ov * ov > n1 * n2 * (1 + 1e-12):
        raise ValueError(f"input_overlap must satisfy overlap^2 <= input_norm * input_norm2 (a Gram matrix), got "
                         f"overlap={ov}, norms=({n1}, {n2})")
    rng = np.random.default_rng(12345)
    qmat, _ = np.linalg.qr(rng.standard_normal((input_dim, 2)))
    e1, e2 = qmat[:, 0] * math.sqrt(input_dim), qmat[:, 1] * math.sqrt(input_dim)
    x1 = math.sqrt(n1) * e1
    if n1 > 0:
        a = ov / math.sqrt(n1)
        x2 = a * e1 + math.sqrt(max(n2 - a * a, 0.0)) * e2
    else:
        x2 = math.sqrt(n2) * e2
    return torch.as_tensor(np.stack([x1, x2]), dtype=dtype, device=device)


# --------------------------------------------------------------------------------------------------------------------
# order parameters
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OrderParameterSample:
    r"""Per-network order parameters for two inputs (arrays over S networks; layer axis l = 1..L, index l-1).

    Attributes
    ----------
    q1, q1b, q2, c : ndarray (S, L)
        ``q^l(x,x)``, ``q^l(x',x')``, ``q^l(x,x')`` (means over the M_l units; layer L over the C outputs) and
        ``c^l``.
    qtilde1, qtilde2 : ndarray (S, L)
        Karakida's sums over units of ``delta^l(x)^2`` and ``delta^l(x) delta^l(x')``, averaged over outputs
        (``qtilde^L = 1`` exactly).
    chi1 : ndarray (S, L-1)
        ``qtilde_1^l / qtilde_1^{l+1}``, l = 1..L-1.
    outputs : ndarray (S, 2, C)
        ``f_k(x), f_k(x')``.
    qhat1, qhat2 : ndarray (S, L)
        ``h^l(x).h^l(x)/M_l`` and ``h^l(x).h^l(x')/M_l`` for l = 0..L-1 (``qhat^0`` the input Gram entries).
    ntk, ntk_standard : ndarray (S, 2, 2)
        ``(1/C) sum_k Theta_kk`` on ``(x, x')`` in NTK and in standard parameterization (exact layerwise Gram).
    """

    width: int
    q1: np.ndarray
    q1b: np.ndarray
    q2: np.ndarray
    c: np.ndarray
    qtilde1: np.ndarray
    qtilde2: np.ndarray
    chi1: np.ndarray
    outputs: np.ndarray
    ntk: np.ndarray
    ntk_standard: np.ndarray
    qhat1: np.ndarray
    qhat2: np.ndarray

    @property
    def n_seeds(self) -> int:
        return self.q1.shape[0]

    @staticmethod
    def concatenate(samples) -> "OrderParameterSample":
        """Join the samples of several chunks of networks (same width)."""
        samples = list(samples)
        names = ["q1", "q1b", "q2", "c", "qtilde1", "qtilde2", "chi1", "outputs", "ntk", "ntk_standard", "qhat1",
                 "qhat2"]
        return OrderParameterSample(samples[0].width,
                                    *[np.concatenate([getattr(s, n) for s in samples]) for n in names])

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}


def _layer_grams(ensemble: NetworkEnsemble, us, hs, deltas):
    """Per-layer ``(delta . delta')`` and ``(h . h')`` contractions: lists of (S, T, C, T, C) and (S, T, T)."""
    dd, hh = [], []
    S = ensemble.n_seeds
    for l in range(ensemble.n_layers):
        d = deltas[l]
        T, C = d.shape[1], d.shape[2]
        dflat = d.reshape(S, T * C, -1)
        dd.append(torch.bmm(dflat, dflat.transpose(1, 2)).reshape(S, T, C, T, C))
        h = hs[l]
        hh.append(torch.matmul(h, h.transpose(-1, -2)))
    return dd, hh


def _combine_gram(ensemble, dd, hh, parameterization):
    if parameterization == "standard":
        sw2 = (1.0,) * ensemble.n_layers
        sb2 = (1.0,) * ensemble.n_layers
    else:
        sw2 = tuple(s * s for s in ensemble.weight_scales)
        sb2 = tuple(s * s for s in ensemble.bias_scales)
    out = 0
    for l in range(ensemble.n_layers):
        out = out + dd[l] * (sw2[l] * hh[l][:, :, None, :, None] + sb2[l])
    return out


def gram_layerwise(ensemble: NetworkEnsemble, x, parameterization: Optional[str] = None,
                   params: Optional[dict] = None) -> torch.Tensor:
    r"""Exact ``J J^T`` of every network, layer by layer, without forming J.

    ``df_k(x_t)/dW^l_ij = delta^l_i(t,k) h^{l-1}_j(t)``, so in standard parameterization
    ``(J J^T)_{(t,k),(s,k')} = sum_l (delta^l(t,k) . delta^l(s,k')) (h^{l-1}(t) . h^{l-1}(s) + 1)``; in NTK
    parameterization the two factors carry ``sigma_w^2 / M_{l-1}`` and ``sigma_b^2``.

    ``params`` (optional, as from :meth:`NetworkEnsemble.parameters`, in the ensemble's parameterization) replaces
    the initial parameters, e.g. to follow the kernel along training. Returns a tensor of shape ``(S, T, C, T, C)``.
    """
    _check_ensemble(ensemble)
    param = ensemble.parameterization if parameterization is None else parameterization
    if param not in ("standard", "ntk"):
        raise ValueError(f"parameterization must be 'standard' or 'ntk', got {param!r}")
    if params is not None and param != ensemble.parameterization:
        raise ValueError("with params, parameterization must be the ensemble's own")
    us, hs = ensemble.forward_pass(x, params)
    deltas = ensemble.backward_pass(us, params)
    dd, hh = _layer_grams(ensemble, us, hs, deltas)
    return _combine_gram(ensemble, dd, hh, param)


def measure_order_parameters(ensemble: NetworkEnsemble, input_norm: float = 1.0, input_norm2: Optional[float] = None,
                             input_overlap: float = 0.0) -> OrderParameterSample:
    r"""Measure q, c, qtilde, chi_1 per layer, the outputs and the 2 x 2 NTK of every network of ``ensemble``.

    The inputs are built by :func:`pair_inputs` with ``x.x/M_0 = input_norm`` etc., the same arguments as
    :func:`meanfield.forward.forward`, so ``q^1 = sigma_w^2 input_norm + sigma_b^2`` exactly.

    Examples
    --------
    >>> from meanfield import Network
    >>> from meanfield.validation import sample_ensemble, measure_order_parameters
    >>> ens = sample_ensemble(Network("relu", depth=2, weight_var=2.0), width=64, n_seeds=8, device="cpu")
    >>> s = measure_order_parameters(ens, input_norm=1.0, input_overlap=0.5)
    >>> s.q1.shape, s.chi1.shape
    ((8, 3), (8, 2))
    """
    _check_ensemble(ensemble)
    x = pair_inputs(ensemble.widths[0], input_norm, input_norm2, input_overlap, dtype=ensemble.dtype,
                    device=ensemble.device)
    us, hs = ensemble.forward_pass(x)
    deltas = ensemble.backward_pass(us)
    q1 = torch.stack([u[:, 0].pow(2).mean(-1) for u in us], 1)
    q1b = torch.stack([u[:, 1].pow(2).mean(-1) for u in us], 1)
    q2 = torch.stack([(u[:, 0] * u[:, 1]).mean(-1) for u in us], 1)
    c = q2 / torch.sqrt(q1 * q1b)
    qt1 = torch.stack([d[:, 0].pow(2).sum(-1).mean(-1) for d in deltas], 1)
    qt2 = torch.stack([(d[:, 0] * d[:, 1]).sum(-1).mean(-1) for d in deltas], 1)
    chi = qt1[:, :-1] / qt1[:, 1:]
    dd, hh = _layer_grams(ensemble, us, hs, deltas)
    grams = []
    for param in ("ntk", "standard"):
        g = _combine_gram(ensemble, dd, hh, param)  # (S, 2, C, 2, C)
        grams.append(torch.diagonal(g, dim1=2, dim2=4).mean(-1))  # (S, 2, 2)
    out = OrderParameterSample(ensemble.width, _np(q1), _np(q1b), _np(q2), _np(c), _np(qt1), _np(qt2), _np(chi),
                               _np(us[-1]), _np(grams[0]), _np(grams[1]),
                               _np(torch.stack([h[:, 0].pow(2).mean(-1) for h in hs], 1)),
                               _np(torch.stack([(h[:, 0] * h[:, 1]).mean(-1) for h in hs], 1)))
    for name in ("q1", "q2", "qtilde1", "ntk"):
        _check_finite_result(name, getattr(out, name))
    return out


# --------------------------------------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------------------------------------
def empirical_nngp(outputs):
    r"""Empirical NNGP: the output covariance over the ensemble, ``K(x_t, x_s) = E_{seeds, k}[f_k(x_t) f_k(x_s)]``.

    Parameters
    ----------
    outputs : array or tensor of shape (S, T, C)
        Outputs of S networks at T inputs (e.g. ``ensemble(x)``).

    Returns
    -------
    mean, standard_error : ndarray (T, T)
        The average over the S*C samples and its standard error (the S networks are independent; the C outputs of
        one network are averaged first, so correlations between outputs of one network are accounted for).
    """
    f = _np(outputs) if isinstance(outputs, torch.Tensor) else np.asarray(outputs, dtype=np.float64)
    if f.ndim != 3:
        raise ValueError(f"outputs must have shape (S, T, C), got {f.shape}")
    if f.shape[0] < 2:
        raise ValueError("outputs must hold at least 2 networks (S >= 2) for a standard error")
    per_net = np.einsum("stk,suk->stu", f, f) / f.shape[2]
    return per_net.mean(0), per_net.std(0, ddof=1) / math.sqrt(f.shape[0])


def empirical_ntk(ensemble: NetworkEnsemble, x, method: str = "func", chunk: int = 1) -> torch.Tensor:
    r"""Empirical NTK ``Theta_{(t,k),(s,k')} = sum_p d f_k(x_t)/d theta_p  d f_k'(x_s)/d theta_p`` of every network.

    ``method="func"`` computes each network's Jacobian with ``torch.func.jacrev`` over the parameters of the
    ensemble's parameterization (``theta = (W, b)`` in standard, ``(w, beta)`` in NTK parameterization) and contracts
    it; ``method="layerwise"`` uses :func:`gram_layerwise` (exact, never forms J). Returns ``(S, T, C, T, C)``.

    Examples
    --------
    >>> from meanfield import Network
    >>> from meanfield.validation import sample_ensemble, empirical_ntk
    >>> import torch
    >>> ens = sample_ensemble(Network("tanh", depth=2), 16, 2, n_outputs=2, parameterization="ntk", device="cpu")
    >>> x = torch.randn(3, 16, dtype=torch.float64)
    >>> th = empirical_ntk(ens, x)
    >>> th.shape, bool(torch.allclose(th, empirical_ntk(ens, x, method="layerwise")))
    (torch.Size([2, 3, 2, 3, 2]), True)
    """
    _check_ensemble(ensemble)
    if method == "layerwise":
        return gram_layerwise(ensemble, x)
    if method != "func":
        raise ValueError(f"method must be 'func' or 'layerwise', got {method!r}")
    from torch.func import jacrev

    x = ensemble._check_input(x)
    params = ensemble.parameters()
    S = ensemble.n_seeds
    T, C = x.shape[-2], ensemble.n_outputs
    out = []
    for s in range(S):
        p_s = {k: v[s] for k, v in params.items()}
        xs = x[s] if x.ndim == 3 else x

        def f(p):
            return ensemble.apply(p, xs).reshape(-1)  # (T*C,), t major

        jac = jacrev(f)(p_s)
        g = 0
        for j in jac.values():
            jf = j.reshape(T * C, -1)
            g = g + jf @ jf.T
        out.append(g.reshape(T, C, T, C))
    return torch.stack(out)


# --------------------------------------------------------------------------------------------------------------------
# Fisher information
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FisherSample:
    r"""FIM eigenvalue statistics of every network (arrays over S networks), from the dual ``F* = J J^T / T``.

    Attributes
    ----------
    mean : ndarray (S,)
        ``m_lambda = tr F / P``.
    second_moment : ndarray (S,)
        ``s_lambda = tr F^2 / P = ||F*||_F^2 / P``.
    lambda_max : ndarray (S,)
        Largest eigenvalue of F.
    eigenvalues : ndarray (S, C T)
        The spectrum of ``F*`` (the non-zero part of F's spectrum), ascending.
    n_params : int
        P, the number of parameters (weights and biases, readout included).
    """

    width: int
    n_samples: int
    n_outputs: int
    n_params: int
    mean: np.ndarray
    second_moment: np.ndarray
    lambda_max: np.ndarray
    eigenvalues: np.ndarray

    @staticmethod
    def concatenate(parts) -> "FisherSample":
        parts = list(parts)
        p0 = parts[0]
        return FisherSample(p0.width, p0.n_samples, p0.n_outputs, p0.n_params,
                                *[np.concatenate([getattr(p, n) for p in parts])
                                  for n in ("mean", "second_moment", "lambda_max", "eigenvalues")])

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}


def gaussian_inputs(ensemble: NetworkEnsemble, n_samples: int, seed: int = 0) -> torch.Tensor:
    """Inputs ``x_t ~ N(0, I_{M_0})``, independent for each network: shape ``(S, T, M_0)``, seeded per network."""
    n_samples = check_int("n_samples", n_samples, 1)
    gen = torch.Generator(device=ensemble.device)
    xs = torch.empty((ensemble.n_seeds, n_samples, ensemble.widths[0]), dtype=ensemble.dtype, device=ensemble.device)
    for i, idx in enumerate(ensemble.seeds):
        gen.manual_seed(_network_seed(seed + 7919, idx))
        xs[i].normal_(generator=gen)
    return xs


def fisher_statistics(ensemble: NetworkEnsemble, x=None, *, n_samples: int = 32, seed: int = 0,
                      params: Optional[dict] = None, mean_subtraction: bool = False) -> FisherSample:
    r"""Eigenvalue statistics of the empirical FIM ``F = (1/T) sum_t sum_k grad f_k(x_t) grad f_k(x_t)^T`` (MSE).

    Computed through the dual ``F* = J J^T / T`` (``C T x C T``; :func:`gram_layerwise`), never the P x P matrix:
    ``tr F = tr F*``, ``tr F^2 = ||F*||_F^2`` and the non-zero eigenvalues coincide. Karakida, Akaho & Amari predict
    ``m ~ kappa_1 C / M``, ``s ~ alpha C ((T-1)/T kappa_2^2 + kappa_1^2/T)``,
    ``lambda_max ~ alpha M ((T-1)/T kappa_2 + kappa_1/T)`` (docs/mathematics.md section 5) for inputs ``x ~ N(0, I)``.

    Parameters
    ----------
    ensemble : NetworkEnsemble
        Gradients are taken in its parameterization.
    x : tensor (T, M_0) or (S, T, M_0), optional
        Inputs; default ``n_samples`` Gaussian inputs per network (:func:`gaussian_inputs`).
    params : dict, optional
        Parameters replacing the initial ones (e.g. during training; see :meth:`NetworkEnsemble.parameters`).
    mean_subtraction : bool
        FIM of the batch-mean-subtracted outputs ``f_k(x_t) - (1/T) sum_s f_k(x_s)`` (batch normalization's mean
        subtraction in the last layer): the dual is projected by ``(I_T - 1 1^T / T) (x) I_C``;
        :func:`meanfield.fisher_statistics` with ``mean_subtraction=True`` is the theory.

    Examples
    --------
    >>> from meanfield import Network
    >>> from meanfield.validation import sample_ensemble, fisher_statistics
    >>> ens = sample_ensemble(Network("tanh", 2, 1.5, 0.1), 32, 4, n_outputs=2, device="cpu")
    >>> fs = fisher_statistics(ens, n_samples=8)
    >>> fs.eigenvalues.shape
    (4, 16)
    """
    _check_ensemble(ensemble)
    if x is None:
        x = gaussian_inputs(ensemble, n_samples, seed)
    x = ensemble._check_input(x)
    T = x.shape[-2]
    C = ensemble.n_outputs
    if not isinstance(mean_subtraction, (bool, np.bool_)):
        raise TypeError(f"mean_subtraction must be True or False, got {type(mean_subtraction).__name__}")
    if mean_subtraction and T < 2:
        raise ValueError(f"n_samples (T) must be >= 2 with mean_subtraction=True, got {T}")
    g = gram_layerwise(ensemble, x, params=params).reshape(ensemble.n_seeds, T * C, T * C) / T
    if mean_subtraction:   # rows (t, k): project out the mean over t of every output
        proj = torch.kron(torch.eye(T, dtype=g.dtype, device=g.device) - 1.0 / T,
                          torch.eye(C, dtype=g.dtype, device=g.device))
        g = proj @ g @ proj
    g = 0.5 * (g + g.transpose(1, 2))
    P = ensemble.n_params
    ev = torch.linalg.eigvalsh(g)
    mean = torch.diagonal(g, dim1=1, dim2=2).sum(-1) / P
    second = g.pow(2).sum((1, 2)) / P
    res = FisherSample(ensemble.width, int(T), int(C), int(P), _np(mean), _np(second), _np(ev[:, -1]), _np(ev))
    _check_finite_result("fisher_statistics", res.eigenvalues)
    return res


# --------------------------------------------------------------------------------------------------------------------
# gradient descent
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingRun:
    """Full-batch gradient descent on ``(1/2T) sum_t ||y_t - f(x_t)||^2`` for every network.

    Attributes
    ----------
    learning_rate : ndarray (S,)
    losses : ndarray (S, n_steps + 1)
        Loss before each step (``losses[:, 0]`` at initialization); ``inf`` after an overflow.
    top_mode : ndarray (S, n_steps + 1)
        ``|v . r|``: the residual ``r_(t,k) = f_k(x_t) - y_(t,k)`` along the top eigenvector ``v`` of the dual
        ``F* = J J^T / T`` at initialization (close to ``1_T`` in one output direction, Karakida et al.), which the
        linearized dynamics multiply by ``1 - eta lambda_max`` per step.
    lambda_max0 : ndarray (S,)
        ``lambda_max(F)`` at initialization.
    sharpness_steps : tuple of int
    sharpness : ndarray (S, len(sharpness_steps))
        ``lambda_max(F)`` of the current parameters at those steps (``nan`` once diverged).
    diverged : ndarray of bool (S,)
        Loss non-finite or above ``divergence_factor`` times its initial value at some step.
    """

    learning_rate: np.ndarray
    losses: np.ndarray
    top_mode: np.ndarray
    lambda_max0: np.ndarray
    sharpness_steps: tuple
    sharpness: np.ndarray
    diverged: np.ndarray
    divergence_factor: float

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}


def train_gd(ensemble: NetworkEnsemble, x, y, learning_rate, n_steps: int = 100,
             divergence_factor: float = 1e3, sharpness_steps=(0,)) -> TrainingRun:
    r"""Train every network of ``ensemble`` by full-batch gradient descent on the MSE loss.

    ``loss = (1/2T) sum_t ||y_t - f(x_t)||^2``, ``theta <- theta - eta grad loss``, in the ensemble's
    parameterization. Near initialization the loss Hessian is the FIM ``F = J^T J / T`` (plus a residual term), so
    the linearized dynamics are stable only for ``eta < 2 / lambda_max`` (Karakida, Akaho & Amari; docs/mathematics.md section
    5). Beyond it a finite network may still converge after a transient (the 'catapult' of Lewkowycz et al. 2020:
    the sharpness drops below ``2 / eta``); ``sharpness`` records ``lambda_max(F)`` along the way.

    Parameters
    ----------
    x : tensor (T, M_0) or (S, T, M_0); y : tensor (T, C) or (S, T, C)
    learning_rate : float or sequence of length S
    n_steps : int
    divergence_factor : float
        A run counts as diverged once its loss exceeds this factor times the initial loss (or overflows).
    sharpness_steps : sequence of int
        Steps (0..n_steps) at which ``lambda_max(F)`` is computed through the dual Gram matrix.

    Examples
    --------
    >>> import torch
    >>> from meanfield import Network
    >>> from meanfield.validation import sample_ensemble, train_gd
    >>> ens = sample_ensemble(Network("tanh", 2, 1.5, 0.1), 32, 2, device="cpu")
    >>> x, y = torch.randn(8, 32, dtype=torch.float64), torch.randn(8, 1, dtype=torch.float64)
    >>> run = train_gd(ens, x, y, 0.05, n_steps=20)
    >>> bool(run.losses[0, -1] < run.losses[0, 0])
    True
    """
    _check_ensemble(ensemble)
    n_steps = check_int("n_steps", n_steps, 1)
    divergence_factor = float(check_positive("divergence_factor", divergence_factor))
    S = ensemble.n_seeds
    if np.ndim(learning_rate) == 0 or np.size(learning_rate) == S:
        lr = np.broadcast_to(np.asarray(check_positive("learning_rate", learning_rate), dtype=np.float64),
                             (S,)).copy()
    else:
        raise ValueError(f"learning_rate must be a positive number or a sequence of length n_seeds={S}")
    steps = tuple(sorted({check_int("sharpness_steps[i]", int(k) if isinstance(k, np.integer) else k, 0)
                          for k in sharpness_steps}))
    if steps and steps[-1] > n_steps:
        raise ValueError(f"sharpness_steps must lie in [0, n_steps={n_steps}], got {steps[-1]}")
    x = ensemble._check_input(x)
    y = torch.as_tensor(y, dtype=ensemble.dtype, device=ensemble.device)
    T, C = x.shape[-2], ensemble.n_outputs
    if y.ndim not in (2, 3) or tuple(y.shape[-2:]) != (T, C):
        raise ValueError(f"y must have shape (T, C) = ({T}, {C}) or (S, T, C), got {tuple(y.shape)}")
    params = ensemble.parameters(requires_grad=True)
    lr_t = torch.as_tensor(lr, dtype=ensemble.dtype, device=ensemble.device)
    losses = np.full((S, n_steps + 1), np.inf)
    resid = np.full((S, n_steps + 1), np.inf)
    with torch.no_grad():
        g0 = gram_layerwise(ensemble, x).reshape(S, T * C, T * C) / T
        ev0, vec0 = torch.linalg.eigh(0.5 * (g0 + g0.transpose(1, 2)))
        v_top = vec0[:, :, -1]  # (S, T*C), (t, k) with t major, as r.reshape(S, -1)
        lam0 = _np(ev0[:, -1])
    sharp = np.full((S, len(steps)), np.nan)
    alive = torch.ones(S, dtype=torch.bool, device=ensemble.device)
    for step in range(n_steps + 1):
        f = ensemble.apply(params, x)
        r = f - y
        loss = 0.5 * r.pow(2).sum((-1, -2)) / T  # (S,)
        lv = _np(loss)
        finite = np.isfinite(lv) & _np(alive).astype(bool)
        losses[:, step] = np.where(finite, lv, np.inf)
        resid[:, step] = np.where(finite, _np((r.detach().reshape(S, -1) * v_top).sum(-1).abs()), np.inf)
        if step in steps:
            with torch.no_grad(), np.errstate(invalid="ignore"):
                g = gram_layerwise(ensemble, x, params=params).reshape(S, T * C, T * C) / T
                g = torch.nan_to_num(0.5 * (g + g.transpose(1, 2)), nan=0.0, posinf=0.0, neginf=0.0)
                lam = _np(torch.linalg.eigvalsh(g)[:, -1])
            sharp[:, steps.index(step)] = np.where(finite, lam, np.nan)
        if step == n_steps:
            break
        alive = alive & torch.as_tensor(finite & (lv <= divergence_factor * losses[:, 0]), device=ensemble.device)
        if not bool(alive.any()):  # every network has diverged: nothing left to train
            break
        grads = torch.autograd.grad(torch.where(alive, loss, torch.zeros_like(loss)).sum(), list(params.values()))
        with torch.no_grad():
            for p, g in zip(params.values(), grads):
                shape = (S,) + (1,) * (p.ndim - 1)
                p -= torch.where(alive.reshape(shape), lr_t.reshape(shape) * g, torch.zeros_like(g))
    with np.errstate(invalid="ignore"):
        diverged = np.any(~np.isfinite(losses) | (losses > divergence_factor * losses[:, :1]), axis=1)
    return TrainingRun(lr, losses, resid, lam0, steps, sharp, diverged, divergence_factor)
