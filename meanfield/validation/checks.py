r"""Checks of the capabilities beyond the width ladder: each draws batched torch ensembles of finite networks on its
own ladder of widths and returns rows (:func:`meanfield.validation.fitting.make_record`) of theory against simulation.

Every check is one function ``check_<name>(ctx) -> list of records`` registered in
:mod:`meanfield.validation.capabilities`; ``ctx`` (:class:`CheckContext`) gives the scale (``"quick"``, ``"cpu"`` or
``"gpu"``), device, precision, seed and optional overrides of the widths and ensemble size. The theory side of every
row is a public function of the library (named in the row's ``theory_source``); the simulation side is computed here
from the raw network tensors by a different route (autograd or explicit contractions of the batched ensembles of
:mod:`meanfield.validation.networks`), so that agreement is a test of the theory, not of shared code.

Error scaling expected (the ``expected`` field of each row): a quantity that is an average over ~M weakly dependent
units fluctuates by ``O(M^{-1/2})`` in one network and its ensemble mean is biased by ``O(1/M)`` ("self-averaging",
expected error exponent -1 once the bias is resolved, about -1/2 while noise-limited); a quantity that depends on the
random outputs of one network (softmax weights ``Q_t``, the output covariance) fluctuates by ``O(1)`` whatever M
("ensemble": only its mean over networks converges, error exponent -1 for the bias).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..errors import PrecisionWarning
from ..network import Network
from .fitting import make_record
from .measure import _combine_gram, _layer_grams
from .networks import NetworkEnsemble, layer_widths, sample_chain, sample_ensemble

__all__ = ["CheckContext", "gram_inputs", "cross_entropy_dual", "feature_gradients", "check_softmax_fisher",
           "check_diagonal_blocks", "check_feature_metric",
           "check_dropout", "check_depth_scales", "check_gp_posterior", "check_ntk_dynamics",
           "check_kernel_regression", "check_residual", "check_cnn", "check_cnn_fisher", "check_jacobian_spectrum",
           "check_kernel_spectrum",
           "check_single_input_fisher", "check_finite_width"]


@dataclass(frozen=True)
class CheckContext:
    """Settings shared by the checks: ``scale`` in ``("quick", "cpu", "gpu")``, torch ``device`` and ``dtype``,
    master ``seed``, optional ``widths``/``n_seeds`` overriding every check's own ladder, ``chunk_bytes`` the memory
    budget of one batch of networks (weights of a chunk of the ensemble)."""

    scale: str
    device: torch.device
    dtype: torch.dtype
    seed: int = 0
    widths: Optional[tuple] = None
    n_seeds: Optional[int] = None
    chunk_bytes: int = 2 ** 27

    def __post_init__(self):
        if self.scale not in ("quick", "cpu", "gpu"):
            raise ValueError(f"scale must be 'quick', 'cpu' or 'gpu', got {self.scale!r}")
        if not isinstance(self.device, torch.device):
            raise TypeError(f"device must be a torch.device, got {type(self.device).__name__}")
        if self.dtype not in (torch.float64, torch.float32):
            raise ValueError(f"dtype must be torch.float64 or torch.float32, got {self.dtype}")
        if self.widths is not None and (len(self.widths) < 1 or not all(
                isinstance(w, (int, np.integer)) and w >= 2 for w in self.widths)):
            raise ValueError(f"widths must be integers >= 2, got {self.widths!r}")
        if self.n_seeds is not None and not (isinstance(self.n_seeds, (int, np.integer)) and self.n_seeds >= 2):
            raise ValueError(f"n_seeds must be an integer >= 2, got {self.n_seeds!r}")
        if not (isinstance(self.chunk_bytes, (int, np.integer)) and self.chunk_bytes >= 1):
            raise ValueError(f"chunk_bytes must be a positive integer, got {self.chunk_bytes!r}")

    def ladder(self, quick: tuple, cpu: tuple, gpu: tuple) -> tuple:
        """``(widths, n_seeds)`` of a check at this scale (each argument a ``(widths, n_seeds)`` pair), overrides
        applied."""
        w, s = {"quick": quick, "cpu": cpu, "gpu": gpu}[self.scale]
        return (tuple(self.widths) if self.widths is not None else tuple(w),
                int(self.n_seeds) if self.n_seeds is not None else int(s))

    def chunks(self, n_seeds: int, n_params: int):
        """``(first_index, count)`` batches of networks whose weights fit in ``chunk_bytes`` (x3 for activations)."""
        item = 8 if self.dtype == torch.float64 else 4
        per = max(1, min(n_seeds, self.chunk_bytes // max(1, 3 * n_params * item)))
        return [(s, min(per, n_seeds - s)) for s in range(0, n_seeds, per)]


def _n_params(widths) -> int:
    return int(sum(widths[l] * widths[l - 1] + widths[l] for l in range(1, len(widths))))


def _np(t) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def gram_inputs(input_dim: int, gram: ArrayLike, *, dtype: torch.dtype = torch.float64, device: Any = "cpu",
                seed: int = 12345) -> torch.Tensor:
    r"""Inputs ``X`` (``n x input_dim``) with ``X X^T / input_dim = gram`` (an ``n x n`` positive semi-definite
    matrix): coordinates ``V diag(e)^{1/2}`` of the eigendecomposition ``gram = V diag(e) V^T`` along ``n`` Haar random
    orthonormal directions (seeded QR). The theory sees inputs only through this Gram matrix (isotropic weights).

    Examples
    --------
    >>> import numpy as np
    >>> X = gram_inputs(16, np.array([[1.0, 0.3], [0.3, 2.0]]))
    >>> bool(np.allclose(X.numpy() @ X.numpy().T / 16, [[1.0, 0.3], [0.3, 2.0]]))
    True
    """
    g = np.asarray(gram, dtype=np.float64)
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"gram must be a square matrix, got shape {g.shape}")
    n = g.shape[0]
    if not isinstance(input_dim, (int, np.integer)) or input_dim < n:
        raise ValueError(f"input_dim must be an integer >= n = {n} (the number of inputs), got {input_dim!r}")
    if not np.all(np.isfinite(g)) or not np.allclose(g, g.T, rtol=1e-12, atol=1e-14):
        raise ValueError("gram must be finite and symmetric")
    e, v = np.linalg.eigh(g)
    if e[0] < -1e-10 * max(1.0, abs(e[-1])):
        raise ValueError(f"gram must be positive semi-definite, smallest eigenvalue {e[0]:.3g}")
    coords = v * np.sqrt(np.clip(e, 0.0, None))
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((int(input_dim), n)))
    x = math.sqrt(input_dim) * coords @ q.T
    return torch.as_tensor(x, dtype=dtype, device=device)


def _small_dataset(n_train: int, n_test: int, dim: int = 4, seed: int = 4):
    """A fixed small regression set in ``dim`` dimensions, scaled to ``x.x/dim = 1``: ``(X, y, X_test)``. Networks of
    any width see it through its Gram matrix (:func:`gram_inputs`)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_train + n_test, dim))
    X *= math.sqrt(dim) / np.linalg.norm(X, axis=1, keepdims=True)
    X[n_train:] = X[:n_test] + 0.4 * X[n_train:]          # test points near training points: O(1) predictions
    X *= math.sqrt(dim) / np.linalg.norm(X, axis=1, keepdims=True)
    y = 3.0 * (np.sin(X[:n_train, 0]) + 0.5 * X[:n_train, 1])
    return X[:n_train], y, X[n_train:]


def _rec(cap, quantity, width, theory, source, samples, expected, kind="single-network", theory_se=0.0):
    rec = make_record(cap, quantity, width, theory, source, samples, kind=kind, theory_se=theory_se,
                      expected=expected)
    rec["group"] = cap
    return rec


_SELF = "-1 (bias O(1/M)); single network -1/2"
_ENS = "-1 (bias O(1/M)); single network 0 (depends on the random outputs)"
_KINK = "-1/2 (relu: units crossing the kink move the NTK's mean by O(M^{-1/2})); single network -1/2"


# --------------------------------------------------------------------------------------------------------------------
# Fisher information: softmax (cross-entropy) FIM, diagonal blocks, feature metric
# --------------------------------------------------------------------------------------------------------------------
_FISHER_NET = Network("relu", depth=2, weight_var=1.8, bias_var=0.1)


def _fisher_pass(ctx, net, width, n_seeds, T, C):
    """Yield, per chunk of networks (SP, Gaussian inputs ``x ~ N(0, I)``): ``(ens, x, f, deltas, dd, hh)``."""
    from .measure import gaussian_inputs

    P = _n_params(layer_widths(net, width, C))
    for start, n in ctx.chunks(n_seeds, P):
        ens = sample_ensemble(net, width, n, n_outputs=C, seed=ctx.seed, first_index=start, device=ctx.device,
                              dtype=ctx.dtype)
        x = gaussian_inputs(ens, T, ctx.seed)
        us, hs = ens.forward_pass(x)
        deltas = ens.backward_pass(us)
        dd, hh = _layer_grams(ens, us, hs, deltas)
        yield ens, x, us[-1], deltas, dd, hh


def _psd_sqrt(Q):
    e, v = torch.linalg.eigh(Q)
    return (v * e.clamp(min=0).sqrt().unsqueeze(-2)) @ v.transpose(-1, -2)


def cross_entropy_dual(gram: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    r"""Dual ``(1/T) [Q_t^{1/2} (J J^T)_{tt'} Q_{t'}^{1/2}]`` (``S x CT x CT``) of the cross-entropy FIM
    ``F = (1/T) sum_t J_t^T Q_t J_t`` from ``gram = J J^T`` of shape ``(S, T, C, T, C)`` and the logits ``outputs``
    ``(S, T, C)``; ``Q_t = diag(g_t) - g_t g_t^T`` with ``g_t`` the softmax. Same non-zero spectrum as F."""
    S, T, C = outputs.shape
    g = torch.softmax(outputs, -1)
    R = _psd_sqrt(torch.diag_embed(g) - g.unsqueeze(-1) * g.unsqueeze(-2))          # (S, T, C, C)
    D = torch.einsum("stab,stbuc,sucd->staud", R, gram, R).reshape(S, T * C, T * C) / T
    return 0.5 * (D + D.transpose(1, 2))


def check_softmax_fisher(ctx: CheckContext) -> list:
    r"""Cross-entropy FIM ``F = (1/T) sum_t J_t^T Q_t J_t`` (``Q_t = diag(g_t) - g_t g_t^T``, softmax ``g_t`` of the
    network's own outputs) in standard parameterization: mean ``tr F / P``, second moment ``tr F^2 / P`` and the
    ``C - 1`` outliers, through the dual ``(1/T) [Q_t^{1/2} (J J^T)_{tt'} Q_{t'}^{1/2}]``, against
    :func:`meanfield.fisher.fisher_statistics` (``loss="cross_entropy"``, Karakida et al. 2021 Theorems 3.3-3.4; its
    Monte-Carlo standard error over the Gaussian outputs is added to the row's SE). All depend on the random outputs:
    ensemble quantities.

    Examples
    --------
    >>> import torch
    >>> ctx = CheckContext("quick", torch.device("cpu"), torch.float64, widths=(16, 32), n_seeds=2)
    >>> rows = check_softmax_fisher(ctx)
    >>> [r["quantity"] for r in rows[:3]]
    ['m_lambda (CE)', 's_lambda (CE)', 'outlier 1 of C-1 (CE)']
    """
    from ..fisher import fisher_statistics

    net, T, C = _FISHER_NET, 8, 3
    widths, S = ctx.ladder(((32, 64, 128), 96), ((64, 128, 256, 512), 256), ((256, 512, 1024, 2048, 4096, 8192), 512))
    n_mc = 4000 if ctx.scale == "quick" else 20000
    out = []
    for M in widths:
        ths = fisher_statistics(net, M, T, C, loss="cross_entropy", n_mc=n_mc, seed=ctx.seed)
        parts = []
        for ens, x, f, deltas, dd, hh in _fisher_pass(ctx, net, M, S, T, C):
            D = cross_entropy_dual(_combine_gram(ens, dd, hh, "standard"), f)
            ev = torch.linalg.eigvalsh(D)
            P = ens.n_params
            parts.append(np.concatenate([_np(torch.diagonal(D, dim1=1, dim2=2).sum(-1) / P)[:, None],
                                         _np(D.pow(2).sum((1, 2)) / P)[:, None], _np(ev[:, -(C - 1):].flip(-1))], 1))
        a = np.concatenate(parts)
        means, seconds, outs = a[:, 0], a[:, 1], a[:, 2:]
        src = "meanfield.fisher.fisher_statistics(loss='cross_entropy')"
        se: dict = ths.mc_stderr or {}
        out.append(_rec("softmax_fisher", "m_lambda (CE)", M, ths.mean_eigenvalue, src, means, _ENS, "ensemble",
                        float(se.get("mean_eigenvalue", 0.0))))
        out.append(_rec("softmax_fisher", "s_lambda (CE)", M, ths.second_moment, src, seconds, _ENS, "ensemble",
                        float(se.get("second_moment", 0.0))))
        ose = np.atleast_1d(se.get("outliers", np.zeros(C - 1)))
        for k in range(C - 1):
            out.append(_rec("softmax_fisher", f"outlier {k + 1} of C-1 (CE)", M,
                            float(ths.outliers[k]),  # type: ignore[index]
                            src,
                            outs[:, k], _ENS, "ensemble", float(ose[k]) if ose.size > k else 0.0))
    return out


def check_mean_subtraction(ctx: CheckContext) -> list:
    r"""MSE FIM with each output's mean over the batch subtracted (batch normalization's mean subtraction in the last
    layer; Karakida, Akaho & Amari sec. 4.2): the torch networks' ``tr F / P`` and ``lambda_max`` (dual
    ``P_T J J^T P_T / T``, :func:`meanfield.validation.fisher_statistics` with ``mean_subtraction=True``) against
    :func:`meanfield.fisher.fisher_statistics` with ``mean_subtraction=True``: the ``C`` outliers are gone and the
    ``C (T - 1)`` remaining eigenvalues share ``alpha (M / T) (kappa_1 - kappa_2)``. At finite width that common value
    spreads, so the measured ``lambda_max`` (the top of the spread) converges from above, slowly
    (docs/fisher_normalization.md).

    Examples
    --------
    >>> import torch
    >>> ctx = CheckContext("quick", torch.device("cpu"), torch.float64, widths=(16, 32), n_seeds=2)
    >>> [r["quantity"] for r in check_mean_subtraction(ctx)[:2]]
    ['m_lambda (mean subtracted)', 'lambda_max (mean subtracted)']
    """
    from ..fisher import fisher_statistics
    from .measure import fisher_statistics as measured_fisher

    net, T, C = _FISHER_NET, 8, 2
    widths, S = ctx.ladder(((32, 64, 128), 16), ((64, 128, 256, 512), 48), ((256, 512, 1024, 2048, 4096, 8192), 128))
    src = "meanfield.fisher.fisher_statistics(mean_subtraction=True)"
    out = []
    for M in widths:
        th = fisher_statistics(net, M, T, C, mean_subtraction=True)
        means, tops = [], []
        for start, n in ctx.chunks(S, _n_params(layer_widths(net, M, C))):
            ens = sample_ensemble(net, M, n, n_outputs=C, seed=ctx.seed, first_index=start, device=ctx.device,
                                  dtype=ctx.dtype)
            fs = measured_fisher(ens, n_samples=T, seed=ctx.seed, mean_subtraction=True)
            means.append(fs.mean)
            tops.append(fs.lambda_max)
        out.append(_rec("mean_subtraction", "m_lambda (mean subtracted)", M, th.mean_eigenvalue, src,
                        np.concatenate(means), _SELF))
        out.append(_rec("mean_subtraction", "lambda_max (mean subtracted)", M, th.lambda_max, src,
                        np.concatenate(tops), _SELF))
    return out


def check_diagonal_blocks(ctx: CheckContext) -> list:
    r"""Diagonal blocks ``F_ll`` of the MSE FIM (standard parameterization, parameters of weight layer l alone):
    ``tr F_ll / P_l``, ``tr F_ll^2 / P_l`` and ``lambda_max(F_ll)`` from the layer's dual
    ``(delta^l.delta'^l)(h^{l-1}.h'^{l-1} + 1) / T`` against ``layer_mean_eigenvalue``, ``layer_second_moment``,
    ``layer_lambda_max`` of :func:`meanfield.fisher.fisher_statistics` (Karakida et al. sec. 3.2). The first block
    has no outlier (independent inputs: its top eigenvalue sits at a Marchenko-Pastur edge), so its ``lambda_max`` is
    not compared.

    Examples
    --------
    >>> import torch
    >>> ctx = CheckContext("quick", torch.device("cpu"), torch.float64, widths=(16, 32), n_seeds=2)
    >>> rows = check_diagonal_blocks(ctx)
    >>> rows[0]["quantity"], rows[0]["group"]
    ('m_lambda(F_11)', 'diagonal_blocks')
    """
    from ..fisher import fisher_statistics

    net, T, C = _FISHER_NET, 16, 2
    widths, S = ctx.ladder(((32, 64, 128), 48), ((64, 128, 256, 512), 96), ((256, 512, 1024, 2048, 4096, 8192), 256))
    out = []
    src = "meanfield.fisher.fisher_statistics (layer_*)"
    for M in widths:
        ths = fisher_statistics(net, M, T, C)
        L = net.n_layers
        acc: dict = {k: [] for k in range(L)}
        for ens, x, f, deltas, dd, hh in _fisher_pass(ctx, net, M, S, T, C):
            for l in range(L):
                G = (dd[l] * (hh[l][:, :, None, :, None] + 1.0)).reshape(ens.n_seeds, T * C, T * C) / T
                G = 0.5 * (G + G.transpose(1, 2))
                Pl = ens.widths[l + 1] * (ens.widths[l] + 1)
                acc[l].append(np.stack([_np(torch.diagonal(G, dim1=1, dim2=2).sum(-1) / Pl),
                                        _np(G.pow(2).sum((1, 2)) / Pl), _np(torch.linalg.eigvalsh(G)[:, -1])], -1))
        for l in range(L):
            a = np.concatenate(acc[l])
            out.append(_rec("diagonal_blocks", f"m_lambda(F_{l + 1}{l + 1})", M, ths.layer_mean_eigenvalue[l], src,
                            a[:, 0], _SELF))
            out.append(_rec("diagonal_blocks", f"s_lambda(F_{l + 1}{l + 1})", M, ths.layer_second_moment[l], src,
                            a[:, 1], _SELF))
            if l > 0:
                out.append(_rec("diagonal_blocks", f"lambda_max(F_{l + 1}{l + 1})", M, ths.layer_lambda_max[l], src,
                                a[:, 2], "-1/2 to -1 (top of C near-degenerate outliers)"))
    return out


def feature_gradients(ensemble: NetworkEnsemble, deltas: Sequence[torch.Tensor]) -> list:
    r"""``grad_{h^{l-1}} f_k(x_t) = W^{l T} delta^l_k(x_t)`` for l = 1..L: tensors ``(S, T C, M_{l-1})`` (rows
    ``(t, k)``, t major) from the backward signals of :meth:`NetworkEnsemble.backward_pass` and the effective (SP) weights."""
    out = []
    for d, W in zip(deltas, ensemble.effective_weights()):
        S, T, C, _ = d.shape
        out.append(torch.bmm(d.reshape(S, T * C, -1), W))
    return out


def check_feature_metric(ctx: CheckContext) -> list:
    r"""Metric of the input and feature spaces ``A = (1/T) sum_t sum_k grad_h f_k grad_h f_k^T`` (``h`` stacks
    ``h^0 = x, ..., h^{L-1}``): ``grad_{h^{l-1}} f_k = W^{l T} delta^l_k`` from the backward pass, the dual
    ``C T x C T`` Gram summed over layers; mean ``tr A / D``, second moment ``tr A^2 / D``, ``lambda_max`` and the
    per-layer blocks' ``lambda_max`` against :func:`meanfield.fisher.feature_metric_statistics` (Karakida et al.
    2021, Theorem 5.1).

    Examples
    --------
    >>> import torch
    >>> ctx = CheckContext("quick", torch.device("cpu"), torch.float64, widths=(16, 32), n_seeds=2)
    >>> rows = check_feature_metric(ctx)
    >>> rows[2]["quantity"]
    'lambda_max(A)'
    """
    from ..fisher import feature_metric_statistics

    net, T, C = _FISHER_NET, 16, 2
    widths, S = ctx.ladder(((32, 64, 128), 48), ((64, 128, 256, 512), 96), ((256, 512, 1024, 2048, 4096, 8192), 256))
    out = []
    src = "meanfield.fisher.feature_metric_statistics"
    for M in widths:
        ths = feature_metric_statistics(net, M, T, C)
        L = net.n_layers
        rows = []
        for ens, x, f, deltas, dd, hh in _fisher_pass(ctx, net, M, S, T, C):
            blocks = [torch.bmm(g, g.transpose(1, 2)) / T for g in feature_gradients(ens, deltas)]
            A = torch.stack(blocks).sum(0)
            A = 0.5 * (A + A.transpose(1, 2))
            D = sum(ens.widths[:L])
            cols = [_np(torch.diagonal(A, dim1=1, dim2=2).sum(-1) / D), _np(A.pow(2).sum((1, 2)) / D),
                    _np(torch.linalg.eigvalsh(A)[:, -1])]
            cols += [_np(torch.linalg.eigvalsh(0.5 * (b + b.transpose(1, 2)))[:, -1]) for b in blocks]
            rows.append(np.stack(cols, -1))
        a = np.concatenate(rows)
        out.append(_rec("feature_metric", "m_lambda(A)", M, ths.mean_eigenvalue, src, a[:, 0], _SELF))
        out.append(_rec("feature_metric", "s_lambda(A)", M, ths.second_moment, src, a[:, 1], _SELF))
        out.append(_rec("feature_metric", "lambda_max(A)", M, ths.lambda_max, src, a[:, 2],
                        "-1/2 to -1 (top of C near-degenerate outliers)"))
        for l in range(L):
            out.append(_rec("feature_metric", f"lambda_max(A_{l}{l})", M, ths.layer_lambda_max[l], src, a[:, 3 + l],
                            "-1/2 to -1 (top of C near-degenerate outliers)"))
    return out


# --------------------------------------------------------------------------------------------------------------------
# dropout
# --------------------------------------------------------------------------------------------------------------------
def check_dropout(ctx: CheckContext) -> list:
    r"""Dropout (keep probability rho = 0.8 after every nonlinearity, a fresh Bernoulli mask per network, input and
    unit, scaled by 1/rho): ``q^l(x,x)``, ``q^l(x,x')``, ``c^l`` and ``qtilde_1^l`` (autograd through the same masks)
    of the torch twin :class:`meanfield.validation.networks.TorchDropout` against :func:`meanfield.forward.forward`
    and :func:`meanfield.backward.backward` with ``dropout_keep`` (Schoenholz et al. 2017 sec. 5:
    ``q = sigma_w^2 E[phi^2]/rho + sigma_b^2`` on the diagonal, no 1/rho off it).

    Examples
    --------
    >>> import torch
    >>> ctx = CheckContext("quick", torch.device("cpu"), torch.float64, widths=(16, 32), n_seeds=2)
    >>> rows = check_dropout(ctx)
    >>> rows[0]["quantity"], round(rows[0]["theory"], 12)
    ('q^1(x,x)', 1.6)
    """
    from ..backward import backward
    from ..forward import forward
    from .measure import pair_inputs

    net = Network("tanh", depth=3, weight_var=1.5, bias_var=0.1, dropout_keep=0.8)
    n1, ov = 1.0, 0.5
    widths, S = ctx.ladder(((32, 64, 128), 48), ((64, 128, 256, 512), 128), ((256, 512, 1024, 2048, 4096, 8192), 256))
    fr = forward(net, input_norm=n1, input_overlap=ov)
    br = backward(net, forward_result=fr)
    q1, q2, c, qt = (np.asarray(v, float).reshape(-1) for v in (fr.q1, fr.q2, fr.c, br.qtilde1))
    chain = net.to_layers()
    out = []
    for M in widths:
        P = _n_params(layer_widths(net, M, 1))
        acc = []
        for start, n in ctx.chunks(S, P):
            ens = sample_chain(chain, M, n, n_outputs=1, seed=ctx.seed, first_index=start, device=ctx.device,
                               dtype=ctx.dtype)
            x = pair_inputs(ens.input_width, n1, n1, ov, dtype=ens.dtype, device=ens.device)
            gen = torch.Generator(device=ens.device).manual_seed(ctx.seed * 1000 + start + 17)
            op = ens.order_parameters(x, generator=gen)
            acc.append(np.stack([np.stack([q[:, 0, 0], q[:, 0, 1], q[:, 0, 1] / np.sqrt(q[:, 0, 0] * q[:, 1, 1]),
                                           t[:, 0, 0]], -1) for q, t in zip(op["q"], op["qtilde"])], 1))
        a = np.concatenate(acc)                                    # (S, L, 4)
        for l in range(1, net.n_layers):
            src = "meanfield.forward (dropout_keep=0.8)"
            out.append(_rec("dropout", f"q^{l}(x,x)", M, q1[l - 1], src, a[:, l - 1, 0], _SELF))
            out.append(_rec("dropout", f"q^{l}(x,x')", M, q2[l - 1], src, a[:, l - 1, 1], _SELF))
            out.append(_rec("dropout", f"c^{l}", M, c[l - 1], src, a[:, l - 1, 2], _SELF))
            out.append(_rec("dropout", f"qtilde_1^{l}", M, qt[l - 1], "meanfield.backward (dropout_keep=0.8)",
                            a[:, l - 1, 3], _SELF))
    return out


# --------------------------------------------------------------------------------------------------------------------
# depth scales
# --------------------------------------------------------------------------------------------------------------------
def _slope_over_layers(y):
    """Least-squares slope of ``y`` (S, n_layers) against the layer index, per network."""
    L = y.shape[1]
    t = np.arange(L, dtype=float) - (L - 1) / 2.0
    return (y - y.mean(1, keepdims=True)) @ t / float(t @ t)


def check_depth_scales(ctx: CheckContext) -> list:
    r"""Depth scales (Schoenholz et al. 2017) as fitted exponential decay rates in deep finite networks
    (tanh, ``sigma_w^2 = 2.5``, ``sigma_b^2 = 0.05``: chaotic, ``c* < 1``, so all three scales are finite), against
    :func:`meanfield.forward.depth_scales`:

    * ``1/xi_q``: minus the fitted slope over layers of ``log |q^l(x_+) - q^l(x_-)|``, two inputs on the same ray
      with ``q^1 = q*(1 +- eps)`` (common weights, so the difference is the linear response of ``q^l - q*``, which
      decays like ``|V'(q*)|^l``);
    * ``1/xi_c``: the same for ``c^l(x, y_+) - c^l(x, y_-)`` with ``c^1 = c* +- eps``;
    * ``1/xi_grad``: the fitted slope of ``log qtilde_1^l`` (gradient norm per layer), ``qtilde^l ~ chi_1^{-l}``.

    Each network gives one fitted rate (least squares over its layers); its fluctuation is O(M^{-1/2}).

    Examples
    --------
    >>> import torch
    >>> ctx = CheckContext("quick", torch.device("cpu"), torch.float64, widths=(16, 32), n_seeds=2)
    >>> rows = check_depth_scales(ctx)
    >>> [r["quantity"] for r in rows[:3]]
    ['1/xi_q', '1/xi_c', '1/xi_grad']
    """
    from ..forward import depth_scales, fixed_point

    sw2, sb2, depth, eps = 2.5, 0.05, 8, 1e-3
    net = Network("tanh", depth=depth, weight_var=sw2, bias_var=sb2)
    fp = fixed_point("tanh", sw2, sb2)
    xs = depth_scales("tanh", sw2, sb2)
    qs, cs = float(fp.q_star), float(fp.c_star)  # type: ignore[arg-type]
    nq = lambda q: (q - sb2) / sw2                                          # noqa: E731  qhat^0 giving q^1 = q
    n0, np_, nm = nq(qs), nq(qs * (1 + eps)), nq(qs * (1 - eps))
    ovp, ovm = nq(qs * (cs + eps)), nq(qs * (cs - eps))
    # Gram of (x, x+, x-, y+, y-): x+/x- on the ray of x; y+/y- in one plane with x, norm n0, overlaps ovp/ovm (so
    # that y+ - y- = O(eps): the difference through common weights is the linear response)
    e = np.eye(3)
    vecs = [math.sqrt(n0) * e[0], math.sqrt(np_) * e[0], math.sqrt(nm) * e[0]]
    for ovl in (ovp, ovm):
        a = ovl / math.sqrt(n0)
        vecs.append(a * e[0] + math.sqrt(max(n0 - a * a, 0.0)) * e[1])
    V = np.array(vecs)
    gram = V @ V.T
    widths, S = ctx.ladder(((64, 128, 256), 24), ((64, 128, 256, 512), 96), ((256, 512, 1024, 2048, 4096, 8192), 128))
    out = []
    src = "meanfield.forward.depth_scales"
    for M in widths:
        P = _n_params(layer_widths(net, M, 1))
        rq, rc, rg = [], [], []
        for start, n in ctx.chunks(S, P):
            ens = sample_ensemble(net, M, n, seed=ctx.seed, first_index=start, device=ctx.device, dtype=ctx.dtype)
            x = gram_inputs(ens.widths[0], gram, dtype=ens.dtype, device=ens.device)
            us, _ = ens.forward_pass(x)
            hidden = us[:-1]                                                # u^1..u^{L-1}: (S, 5, M)
            q = torch.stack([(u * u).mean(-1) for u in hidden], 1)           # (S, depth, 5)
            cxy = torch.stack([(u[:, 0] * u[:, 3]).mean(-1) / torch.sqrt(q[:, k, 0] * q[:, k, 3])
                               - (u[:, 0] * u[:, 4]).mean(-1) / torch.sqrt(q[:, k, 0] * q[:, k, 4])
                               for k, u in enumerate(hidden)], 1)
            dq = _np((q[:, :, 1] - q[:, :, 2]).abs())
            rq.append(-_slope_over_layers(np.log(dq[:, :5])))           # 5 layers: ~1e-5 of eps left, far above 1e-16
            rc.append(-_slope_over_layers(np.log(_np(cxy.abs()))))
            deltas = ens.backward_pass([u[:, :1] for u in us])
            qt = np.stack([_np((d[:, 0, 0] ** 2).sum(-1)) for d in deltas[:-1]], 1)
            rg.append(_slope_over_layers(np.log(qt)))
        for name, xi, r in (("1/xi_q", xs.xi_q, rq), ("1/xi_c", xs.xi_c, rc), ("1/xi_grad", xs.xi_grad, rg)):
            out.append(_rec("depth_scales", name, M, 1.0 / float(xi), src, np.concatenate(r), _SELF))  # type: ignore
    return out


# --------------------------------------------------------------------------------------------------------------------
# Bayesian readout posterior, NTK training dynamics, kernel regression
# --------------------------------------------------------------------------------------------------------------------
_REG_NET = Network("relu", depth=2, weight_var=1.8, bias_var=0.1)


def check_gp_posterior(ctx: CheckContext) -> list:
    r"""Bayesian finite networks: with the hidden layers fixed at their random draw, the posterior of the readout
    weights ``w ~ N(0, sigma_w^2/M)``, ``b ~ N(0, sigma_b^2)`` given ``y = f(X) + N(0, s)`` is Gaussian; its
    predictive mean and variance at test points are computed in weight space (``(M+1) x (M+1)`` posterior precision
    ``Phi^T Phi / s + I``) and compared with the NNGP posterior :func:`meanfield.regression.nngp_regression`, which
    the finite posterior approaches as the random-feature kernel ``Phi Phi^T`` tends to the NNGP (fluctuation
    O(M^{-1/2}), bias O(1/M)).

    Examples
    --------
    >>> import torch
    >>> ctx = CheckContext("quick", torch.device("cpu"), torch.float64, widths=(16, 32), n_seeds=2)
    >>> rows = check_gp_posterior(ctx)
    >>> rows[0]["quantity"]
    'posterior mean f(x*_1)'
    """
    from ..regression import nngp_regression

    net, noise = _REG_NET, 0.05
    X, y, Xt = _small_dataset(6, 2)
    post = nngp_regression(net, X, y, Xt, noise_var=noise)
    widths, S = ctx.ladder(((32, 64, 128), 48), ((64, 128, 256, 512), 128), ((256, 512, 1024, 2048, 4096, 8192), 256))
    Xall = np.vstack([X, Xt])
    out = []
    src = "meanfield.regression.nngp_regression"
    sw, sb = math.sqrt(net.weight_vars[-1]), math.sqrt(net.bias_vars[-1])
    for M in widths:
        P = _n_params(layer_widths(net, M, 1))
        rows = []
        for start, n in ctx.chunks(S, P):
            ens = sample_ensemble(net, M, n, seed=ctx.seed, first_index=start, device=ctx.device, dtype=ctx.dtype)
            x = gram_inputs(ens.widths[0], Xall @ Xall.T / X.shape[1], dtype=ens.dtype, device=ens.device)
            _, hs = ens.forward_pass(x)
            h = hs[-1]                                                       # (S, n, M_{L-1}) readout input
            Phi = torch.cat([sw * h / math.sqrt(h.shape[-1]), sb * torch.ones_like(h[..., :1])], -1)
            Ptr, Pte = Phi[:, :len(X)], Phi[:, len(X):]
            A = Ptr.transpose(1, 2) @ Ptr / noise + torch.eye(Phi.shape[-1], dtype=ens.dtype, device=ens.device)
            yt = torch.as_tensor(y, dtype=ens.dtype, device=ens.device)
            w_mean = torch.linalg.solve(A, (Ptr.transpose(1, 2) @ yt) / noise)        # (S, M+1)
            mean = (Pte @ w_mean.unsqueeze(-1)).squeeze(-1)
            var = (Pte * torch.linalg.solve(A, Pte.transpose(1, 2)).transpose(1, 2)).sum(-1)
            rows.append(np.concatenate([_np(mean), _np(var)], -1))
        a = np.concatenate(rows)
        for j in range(len(Xt)):
            out.append(_rec("gp_posterior", f"posterior mean f(x*_{j + 1})", M, float(post.mean[j]), src, a[:, j],
                            _SELF))
            out.append(_rec("gp_posterior", f"posterior var f(x*_{j + 1})", M, float(post.variance[j]), src,
                            a[:, len(Xt) + j], _SELF))
    return out


def _train_ntk(ctx, net, M, S, X, y, Xt, learning_rate, steps):
    """Full-batch GD on ``(1/2) sum ||f(X) - y||^2`` of ``S`` networks (NTK parameterization, one output); returns
    numpy arrays ``f0_train (S, n)``, ``f0_test (S, n_t)`` and ``{step: f_test (S, n_t)}`` for ``steps``."""
    Xall = np.vstack([X, Xt])
    P = _n_params(layer_widths(net, M, 1))
    f0s, f0ts, fts = [], [], {k: [] for k in steps}
    for start, n in ctx.chunks(S, P):
        ens = sample_ensemble(net, M, n, parameterization="ntk", seed=ctx.seed, first_index=start, device=ctx.device,
                              dtype=ctx.dtype)
        x = gram_inputs(ens.widths[0], Xall @ Xall.T / X.shape[1], dtype=ens.dtype, device=ens.device)
        yt = torch.as_tensor(y, dtype=ens.dtype, device=ens.device)
        params = ens.parameters(requires_grad=True)
        n_tr = len(X)
        for step in range(max(steps) + 1):
            f = ens.apply(params, x)[..., 0]                                 # (S, n_all)
            if step == 0:
                f0s.append(_np(f[:, :n_tr]))
                f0ts.append(_np(f[:, n_tr:]))
            if step in fts:
                fts[step].append(_np(f[:, n_tr:]))
            if step == max(steps):
                break
            loss = 0.5 * (f[:, :n_tr] - yt).pow(2).sum()
            grads = torch.autograd.grad(loss, list(params.values()))
            with torch.no_grad():
                for p, g in zip(params.values(), grads):
                    p -= learning_rate * g
    return np.concatenate(f0s), np.concatenate(f0ts), {k: np.concatenate(v) for k, v in fts.items()}


def _control_variate(theta, theta_x, y, t, lr, f0, f0t):
    """``f_t^lin(f0) - f_t^lin(0)`` at the test points for every network (:func:`ntk_gradient_flow` is linear in the
    initial outputs): subtracting it from a trained network's output removes the O(1) randomness of its
    initialization exactly in the linear model and leaves an estimator of the mean prediction whose expectation is
    unchanged (``E f_0 = 0``)."""
    from ..regression import ntk_gradient_flow

    base = ntk_gradient_flow(theta, theta_x, y, t, learning_rate=lr).test[-1]
    return np.stack([ntk_gradient_flow(theta, theta_x, y, t, learning_rate=lr, f0_train=a, f0_test=b).test[-1] - base
                     for a, b in zip(f0, f0t)])


def check_ntk_dynamics(ctx: CheckContext) -> list:
    r"""NTK training dynamics: wide networks (NTK parameterization, relu, one output) trained by full-batch gradient
    descent with a small step (``eta lambda_max(Theta) = 0.01``, so the discrete steps follow the flow to a relative
    ``<= 0.27 / n_steps``) against :func:`meanfield.regression.ntk_gradient_flow` with the NTK of
    :func:`meanfield.kernels.kernels` at two times. Each network's output minus the linear-model response to its own
    initial outputs (a control variate with zero mean) is compared with the mean prediction ``f_t(x*)`` (deviations:
    the NTK's O(M^{-1/2}) fluctuation and its O(M^{-1/2}) motion during training).

    Examples
    --------
    Training takes a few seconds, so the example is not run as a doctest.

    >>> import torch
    >>> ctx = CheckContext("quick", torch.device("cpu"), torch.float64, widths=(16, 32), n_seeds=2)
    >>> rows = check_ntk_dynamics(ctx)     # doctest: +SKIP
    >>> len(rows), rows[0]["n_networks"]     # doctest: +SKIP
    (8, 2)
    """
    from ..kernels import kernels
    from ..regression import ntk_gradient_flow

    net = _REG_NET
    X, y, Xt = _small_dataset(4, 2)
    th = np.asarray(kernels(net, X, parameterization="ntk").ntk)
    thx = np.asarray(kernels(net, Xt, X, parameterization="ntk").ntk)
    lmax = float(np.linalg.eigvalsh(th)[-1])
    lr = 0.01 / lmax
    n_steps = {"quick": 400, "cpu": 600, "gpu": 1000}[ctx.scale]
    steps = (n_steps // 4, n_steps)
    widths, S = ctx.ladder(((32, 64, 128), 16), ((32, 64, 128, 256), 48), ((256, 512, 1024, 2048, 4096), 128))
    out = []
    src = "meanfield.regression.ntk_gradient_flow"
    for M in widths:
        f0, f0t, ft = _train_ntk(ctx, net, M, S, X, y, Xt, lr, steps)
        for k in steps:
            theory = ntk_gradient_flow(th, thx, y, k, learning_rate=lr).test[-1]
            z = ft[k] - _control_variate(th, thx, y, k, lr, f0, f0t)
            for j in range(len(Xt)):
                out.append(_rec("ntk_dynamics", f"f_t(x*_{j + 1}), eta t lambda_max = {0.01 * k:g}", M,
                                float(theory[j]), src, z[:, j], _KINK))
    return out


def check_kernel_regression(ctx: CheckContext) -> list:
    r"""Kernel regression as the end of training: networks (NTK parameterization) trained by gradient descent to
    convergence (``eta = 1/lambda_max(Theta)``, until the linear model's slowest mode has decayed below 1e-12) against
    the NTK interpolant :func:`meanfield.regression.ntk_regression` (``t = inf``), with the same control variate as
    :func:`check_ntk_dynamics`; at convergence the step size does not matter (gradient descent and flow reach the
    same interpolant in the linear model). Two networks: erf (smooth: the mean prediction is biased by ``O(1/M)``)
    and relu. For relu the bias is ``O(M^{-1/2})``: pre-activations move by ``O(M^{-1/2})`` during training, so a
    fraction ``O(M^{-1/2})`` of the units cross the kink, and the crossings do not cancel in the mean (a unit with
    ``h(x) < 0`` gets no gradient from ``x`` itself, one with ``h(x) > 0`` does), so the NTK's mean moves at first
    order. Measured with 160 networks per width (relative bias of the two test points): relu -2.3%/-3.3%,
    -1.3%/-1.8%, -1.1%/-1.1% at M = 64, 256, 1024 (SE 0.6, 0.35, 0.2%), a fitted exponent -0.3 to -0.4, somewhat
    flatter than -1/2 at these widths; erf within its 0.2-0.6% SE at M = 64 and 256.

    Examples
    --------
    Training takes a few seconds, so the example is not run as a doctest.

    >>> import torch
    >>> ctx = CheckContext("quick", torch.device("cpu"), torch.float64, widths=(16, 32), n_seeds=2)
    >>> rows = check_kernel_regression(ctx)     # doctest: +SKIP
    >>> rows[0]["quantity"]     # doctest: +SKIP
    'f_inf(x*_1) (erf)'
    """
    from ..kernels import kernels
    from ..regression import ntk_regression

    X, y, Xt = _small_dataset(4, 2)
    widths, S = ctx.ladder(((32, 64, 128), 16), ((64, 128, 256, 512), 48), ((256, 512, 1024, 2048, 4096), 128))
    out = []
    for net, expected in ((Network("erf", depth=2, weight_var=1.8, bias_var=0.1), _SELF), (_REG_NET, _KINK)):
        name = net.activations[0].name
        th = np.asarray(kernels(net, X, parameterization="ntk").ntk)
        thx = np.asarray(kernels(net, Xt, X, parameterization="ntk").ntk)
        ev = np.linalg.eigvalsh(th)
        lr = 1.0 / ev[-1]
        n_steps = int(math.ceil(math.log(1e-12) / math.log(1.0 - ev[0] / ev[-1])))
        theory = ntk_regression(net, X, y, Xt).test[-1]
        for M in widths:
            f0, f0t, ft = _train_ntk(ctx, net, M, S, X, y, Xt, lr, (n_steps,))
            z = ft[n_steps] - _control_variate(th, thx, y, np.inf, 1.0, f0, f0t)
            for j in range(len(Xt)):
                out.append(_rec("kernel_regression", f"f_inf(x*_{j + 1}) ({name})", M, float(theory[j]),
                                "meanfield.regression.ntk_regression", z[:, j], expected))
    return out


# --------------------------------------------------------------------------------------------------------------------
# architectures: residual chains and CNNs
# --------------------------------------------------------------------------------------------------------------------
def _pair_records(cap, M, th_nngp, th_ntk, nngp, ntk, src, suffix=""):
    out = []
    for (i, j), tag in (((0, 0), "(x,x)"), ((0, 1), "(x,x')")):
        out.append(_rec(cap, f"K{tag} readout-averaged{suffix}", M, float(th_nngp[i, j]), src, nngp[:, i, j], _SELF))
        out.append(_rec(cap, f"Theta{tag}{suffix}", M, float(th_ntk[i, j]), src, ntk[:, i, j], _SELF))
    return out


def check_residual(ctx: CheckContext) -> list:
    r"""Residual network ``Dense -> 3 x Residual(tanh -> Dense, alpha = 0.7) -> tanh -> Dense`` (NTK
    parameterization): readout-averaged NNGP ``sigma_w^2 h.h'/M + sigma_b^2`` and NTK (autograd Gram) of
    :meth:`meanfield.validation.networks.ChainEnsemble.order_parameters` against :func:`meanfield.kernels.kernels`
    on the layer chain.

    Examples
    --------
    >>> import torch
    >>> ctx = CheckContext("quick", torch.device("cpu"), torch.float64, widths=(16, 32), n_seeds=2)
    >>> rows = check_residual(ctx)
    >>> rows[1]["quantity"]
    'Theta(x,x)'
    """
    from ..kernels import kernels
    from ..layers import Dense, Nonlinearity, Residual, serial
    from .measure import pair_inputs

    blocks = [Residual(serial(Nonlinearity("tanh"), Dense(1.2, 0.05)), 0.7) for _ in range(3)]
    chain = serial(Dense(1.0, 0.1), *blocks, Nonlinearity("tanh"), Dense(1.5, 0.1))
    n1, ov = 1.0, 0.4
    X = pair_inputs(8, n1, n1, ov).numpy()
    kr = kernels(chain, X, parameterization="ntk")
    widths, S = ctx.ladder(((32, 64, 128), 32), ((64, 128, 256, 512), 96), ((256, 512, 1024, 2048, 4096, 8192), 256))
    out = []
    last = chain.layers[-1]
    for M in widths:
        probe = sample_chain(chain, M, 1, seed=ctx.seed, device=ctx.device, dtype=ctx.dtype)
        nn_, nt = [], []
        for start, n in ctx.chunks(S, probe.n_params):
            ens = sample_chain(chain, M, n, parameterization="ntk", seed=ctx.seed, first_index=start,
                               device=ctx.device, dtype=ctx.dtype)
            x = pair_inputs(ens.input_width, n1, n1, ov, dtype=ens.dtype, device=ens.device)
            op = ens.order_parameters(x)
            nn_.append(last.weight_var * op["qhat"][-1] + last.bias_var)
            nt.append(op["ntk"])
        out += _pair_records("residual", M, np.asarray(kr.nngp), np.asarray(kr.ntk), np.concatenate(nn_),
                             np.concatenate(nt), "meanfield.kernels.kernels (layer chain)")
    return out


def check_cnn(ctx: CheckContext) -> list:
    r"""Convolutional networks (NTK parameterization; width = channels): the readout-averaged NNGP and the NTK
    (one vmapped autograd pullback for all inputs) of
    :class:`meanfield.validation.spatial_networks.SpatialEnsemble` against :func:`meanfield.spatial.spatial_kernels`
    (width-independent at this parameterization); and per Conv layer the back-propagated overlap summed over the
    positions, ``sum_p qtilde(x, p; x', p)`` (autograd gradients of the output with respect to the Conv outputs,
    :meth:`~meanfield.validation.spatial_networks.SpatialEnsemble.qtilde`), against
    :func:`meanfield.spatial.spatial_trace`. Two chains:

    * ``Conv 3x3 SAME -> relu -> Conv 3x3 CIRCULAR -> erf -> GlobalAvgPool -> Dense`` on ``6 x 6`` images with 2
      channels;
    * 1-D: ``Conv 3 stride 2 VALID -> LayerNorm -> tanh -> AvgPool 2 -> Conv 3 SAME delta-orthogonal -> relu ->
      Flatten -> Dense`` on length-12 signals with 2 channels (strides, VALID padding, layer norm, average pooling,
      orthogonal weights and flattening).

    Examples
    --------
    >>> import torch
    >>> ctx = CheckContext("quick", torch.device("cpu"), torch.float64, widths=(4, 8), n_seeds=2)
    >>> rows = check_cnn(ctx)
    >>> sorted({r["width"] for r in rows})
    [4, 8]
    """
    from ..layers import Dense, Nonlinearity, serial
    from ..spatial import AvgPool, Conv, Flatten, GlobalAvgPool, LayerNorm, spatial_kernels, spatial_trace
    from .spatial_networks import sample_spatial_chain

    def position_sum(q, form, n):
        """sum_p qtilde(x, p; x', p) of a spatial_trace entry (full, diag or flat form)."""
        if form == "flat":
            return q
        if form == "diag":
            return q.reshape(n, n, -1).sum(axis=-1)
        P = int(round(math.sqrt(q.size // (n * n))))
        return np.einsum("nmpp->nm", q.reshape(n, n, P, P))

    chains = (
        ("", serial(Conv(2.0, 0.1, (3, 3), padding="SAME"), Nonlinearity("relu"),
                    Conv(1.5, 0.1, (3, 3), padding="CIRCULAR"), Nonlinearity("erf"), GlobalAvgPool(),
                    Dense(1.3, 0.1)),
         np.random.default_rng(0).standard_normal((2, 6, 6, 2))),
        (" (1-D, layer norm, orthogonal)",
         serial(Conv(1.8, 0.1, (3,), strides=(2,), padding="VALID"), LayerNorm(), Nonlinearity("tanh"),
                AvgPool((2,)), Conv(2.0, 0.0, (3,), padding="SAME", orthogonal=True), Nonlinearity("relu"), Flatten(),
                Dense(1.3, 0.1)),
         np.random.default_rng(1).standard_normal((2, 12, 2))),
    )
    widths, S = ctx.ladder(((16, 32, 64), 16), ((16, 32, 64, 128), 32), ((64, 128, 256, 512, 1024), 128))
    out = []
    for suffix, chain, x in chains:
        n_in = x.shape[0]
        th = spatial_kernels(chain, x, parameterization="ntk")
        tr = spatial_trace(chain, x)
        qt_th = [position_sum(q, form, n_in) for q, form, name in zip(tr.qtilde, tr.forms, tr.layers) if name == "Conv"]
        for M in widths:
            per = max(1, min(S, ctx.chunk_bytes // (8 * 3 * 9 * M * M * 40)))
            nn_, nt, qts = [], [], []
            for start in range(0, S, per):
                n = min(per, S - start)
                ens = sample_spatial_chain(chain, x.shape[1:], M, n, n_outputs=1, parameterization="ntk",
                                           seed=ctx.seed, first_index=start, device=ctx.device, dtype=ctx.dtype)
                op = ens.order_parameters(x)
                nn_.append(np.asarray(op["nngp"]))
                nt.append(np.asarray(op["ntk"]))
                qts.append([q if q.ndim == 3 else np.einsum("snmpp->snm", q) for lay, q in ens.qtilde(x)
                            if isinstance(lay, Conv)])
            out += _pair_records("cnn", M, np.asarray(th.nngp), np.asarray(th.ntk), np.concatenate(nn_),
                                 np.concatenate(nt), "meanfield.spatial.spatial_kernels", suffix)
            for k, t in enumerate(qt_th):
                meas = np.concatenate([q[k] for q in qts])
                for (i, j), tag in (((0, 0), "(x,x)"), ((0, 1), "(x,x')")):
                    out.append(_rec("cnn", f"sum_p qtilde{tag} at Conv {k + 1}{suffix}", M, float(t[i, j]),
                                    "meanfield.spatial.spatial_trace", meas[:, i, j], _SELF))
    return out


def check_cnn_fisher(ctx: CheckContext) -> list:
    r"""FIM statistics of convolutional chains (``Conv 3x3 -> relu -> Conv 3x3 CIRCULAR -> tanh -> Flatten -> Dense``,
    standard parameterization, ``T = 5`` images of ``5 x 5 x 2``, ``C = 2`` outputs): ``m_lambda``, ``s_lambda`` and
    ``lambda_max`` of ``J^T J / T`` from each network's exact Jacobian Gram
    (:meth:`~meanfield.validation.spatial_networks.SpatialEnsemble.jacobian_gram`, autograd) against
    :func:`meanfield.fisher.spatial_fisher_statistics` (the NTK on the data set; exact parameter count). The mean is
    linear in the Gram (bias O(1/M)); the second moment and the top eigenvalue (C-fold degenerate in the limit, split
    at finite width) carry an upward bias of the order of the Gram's relative variance.
    """
    from ..fisher import spatial_fisher_statistics
    from ..layers import Dense, Nonlinearity, serial
    from ..spatial import Conv, Flatten
    from .spatial_networks import sample_spatial_chain

    chain = serial(Conv(2.0, 0.1, (3, 3)), Nonlinearity("relu"), Conv(1.5, 0.2, (3, 3), padding="CIRCULAR"),
                   Nonlinearity("tanh"), Flatten(), Dense(1.2, 0.1))
    x = np.random.default_rng(0).standard_normal((5, 5, 5, 2))
    T, C = 5, 2
    widths, S = ctx.ladder(((16, 32), 8), ((16, 32, 64, 128), 24), ((64, 128, 256, 512, 1024), 64))
    out = []
    src = "meanfield.fisher.spatial_fisher_statistics"
    for M in widths:
        st = spatial_fisher_statistics(chain, x, M, C)
        per = max(1, min(S, ctx.chunk_bytes // (8 * 3 * 9 * M * M * 2 * C * T)))
        emp: dict = {"m_lambda": [], "s_lambda": [], "lambda_max": []}
        for start in range(0, S, per):
            g = sample_spatial_chain(chain, x.shape[1:], M, min(per, S - start), n_outputs=C,
                                     parameterization="standard", seed=ctx.seed, first_index=start,
                                     device=ctx.device, dtype=ctx.dtype).jacobian_gram(x)
            G = g["gram"] / T
            emp["m_lambda"].append(np.trace(G, axis1=1, axis2=2) / g["n_params"])
            emp["s_lambda"].append(np.sum(G * G, axis=(1, 2)) / g["n_params"])
            emp["lambda_max"].append(np.linalg.eigvalsh(G)[:, -1])
        for q, th in (("m_lambda", st.mean_eigenvalue), ("s_lambda", st.second_moment),
                      ("lambda_max", st.lambda_max)):
            out.append(_rec("cnn_fisher", f"{q} (CNN)", M, float(th), src, np.concatenate(emp[q]), _SELF))
    return out


# --------------------------------------------------------------------------------------------------------------------
# spectra and finite-width corrections
# --------------------------------------------------------------------------------------------------------------------
def check_jacobian_spectrum(ctx: CheckContext) -> list:
    r"""Squared singular values of the input-output Jacobian ``J = prod_l D_l W_l`` (tanh, depth 3, at ``q*``;
    Gaussian and Haar-orthogonal weights): the first three normalized moments ``(1/M) tr (J J^T)^k`` of each network
    (:func:`meanfield.validation.spectra_sim.jacobian_eigenvalues`) against the moments of
    :func:`meanfield.spectra.jacobian_spectrum` (free probability, Pennington et al. 2017/2018). Moments of the
    empirical spectral distribution are self-averaging.

    Examples
    --------
    >>> import torch
    >>> ctx = CheckContext("quick", torch.device("cpu"), torch.float64, widths=(16, 32), n_seeds=2)
    >>> rows = check_jacobian_spectrum(ctx)
    >>> rows[0]["quantity"]
    'E[lambda^1] (gaussian)'
    """
    from ..spectra import jacobian_spectrum
    from .spectra_sim import jacobian_eigenvalues

    net = Network("tanh", depth=3, weight_var=1.5, bias_var=0.1)
    widths, S = ctx.ladder(((32, 64, 128), 16), ((64, 128, 256, 512), 48), ((256, 512, 1024, 2048, 4096), 64))
    out = []
    for weights in ("gaussian", "orthogonal"):
        sp = jacobian_spectrum(net, weights, n_points=100, error_estimate=False)
        mom = np.asarray(sp.moments, float)
        for M in widths:
            ev = jacobian_eigenvalues(net, weights, M, n_networks=S, seed=ctx.seed + M, device=ctx.device,
                                      dtype=ctx.dtype)
            for k in range(3):
                out.append(_rec("jacobian_spectrum", f"E[lambda^{k + 1}] ({weights})", M, float(mom[k]),
                                f"meanfield.spectra.jacobian_spectrum('{weights}')", np.mean(ev ** (k + 1), 1),
                                _SELF))
    return out


def check_kernel_spectrum(ctx: CheckContext) -> list:
    r"""Spectra of the conjugate kernel ``G_L`` and of the NTK in the linear-width regime (``n = M/2`` Gaussian
    inputs, depth 2): the first two normalized moments ``(1/n) tr K^k`` of each network's kernel
    (:func:`meanfield.validation.spectra_sim.kernel_eigenvalues`) against the moments of
    :func:`meanfield.spectra.conjugate_kernel_spectrum` and :func:`meanfield.spectra.ntk_spectrum`: tanh with
    ``sigma_w^2 = 1.5`` and no bias (Fan & Wang 2020, both kernels), relu with ``sigma_b^2 = 0.1`` (the CK with
    per-unit offsets) and relu without bias (the NTK of a non-centred network, offsets at the top hidden layer); the
    relu kernels' one outlier (the spike) is removed from the simulated spectra; and the FIM bulk of the tanh network
    (:func:`meanfield.spectra.fisher_spectrum`, standard parameterization, against
    :func:`meanfield.validation.spectra_sim.fisher_eigenvalues`). The moments are linear statistics of
    the eigenvalues: the conjugate kernel's fluctuate by ~O(1/M) in one network, the NTK's by O(M^{-1/2}) (its trace
    shares the fluctuation of the backward signals' norms).

    Examples
    --------
    The theory of five spectra takes about ten seconds, so the example is not run as a doctest.

    >>> import torch
    >>> ctx = CheckContext("quick", torch.device("cpu"), torch.float64, widths=(16, 32), n_seeds=2)
    >>> rows = check_kernel_spectrum(ctx)     # doctest: +SKIP
    >>> [r["quantity"] for r in rows[:2]]     # doctest: +SKIP
    ['E[lambda^1] (conjugate kernel)', 'E[lambda^2] (conjugate kernel)']
    """
    from ..spectra import conjugate_kernel_spectrum, fisher_spectrum, ntk_spectrum
    from .spectra_sim import fisher_eigenvalues, kernel_eigenvalues

    ratio = 0.5
    # (label, network, kernels, outliers): tanh without bias (Fan & Wang); relu with a bias (per-unit offsets: the CK
    # at any depth) and relu without (non-centred: the NTK with offsets at the top hidden layer); the relu kernels have
    # one outlier (the spike n E[mu_L^2]), removed from the simulated spectra before the bulk's moments are taken
    cases = (("", Network("tanh", depth=2, weight_var=1.5, bias_var=0.0), ("conjugate kernel", "NTK"), 0),
             (", relu, bias_var 0.1", Network("relu", depth=2, weight_var=2.0, bias_var=0.1), ("conjugate kernel",),
              1),
             (", relu", Network("relu", depth=2, weight_var=2.0, bias_var=0.0), ("NTK",), 1))
    widths, S = ctx.ladder(((32, 64, 128), 16), ((64, 128, 256, 512), 32), ((256, 512, 1024, 2048, 4096), 64))
    out = []
    exp = "-1 (bias O(1/M)); single network -1 (conjugate kernel) to -1/2 (NTK)"
    for label, net, names, n_out in cases:
        th = {}
        for name in names:
            fn = conjugate_kernel_spectrum if name == "conjugate kernel" else ntk_spectrum
            th[name] = np.asarray(fn(net, ratio, n_points=100).moments, float)
        for M in widths:
            ev = [kernel_eigenvalues(net, int(round(ratio * M)), M, seed=ctx.seed * 7919 + M * 1000 + i,
                                     device=ctx.device) for i in range(S)]
            for j, name in enumerate(("conjugate kernel", "NTK")):
                if name not in th:
                    continue
                e = np.sort(np.stack([v[j] for v in ev]), axis=1)
                e = e[:, :e.shape[1] - n_out]
                for k in range(2):
                    out.append(_rec("kernel_spectrum", f"E[lambda^{k + 1}] ({name}{label})", M, float(th[name][k]),
                                    "meanfield.spectra." + ("conjugate_kernel_spectrum" if j == 0 else "ntk_spectrum"),
                                    np.mean(e ** (k + 1), 1), exp))
    # the FIM bulk (standard parameterization, F = J^T J / n, its n non-zero eigenvalues) of the tanh network
    net = cases[0][1]
    for M in widths:
        n = int(round(ratio * M))
        mom = np.asarray(fisher_spectrum(net, M, n, n_points=64).moments, float)
        e = np.stack([fisher_eigenvalues(net, n, M, seed=ctx.seed * 7919 + M * 1000 + i, device=ctx.device)
                      for i in range(S)])
        for k in range(2):
            scale = float(M) ** (k + 1)
            out.append(_rec("kernel_spectrum", f"E[lambda^{k + 1}] / M^{k + 1} (FIM bulk)", M, float(mom[k]) / scale,
                            "meanfield.spectra.fisher_spectrum", np.mean(e ** (k + 1), 1) / scale, exp))
    return out


def check_single_input_fisher(ctx: CheckContext) -> list:
    r"""Conditional FIM of one input (Hayase & Karakida 2021): the eigenvalues of ``Theta_L = J J^T`` (``M x M``, NTK
    parameterization, tanh, depth 3, at the fixed point; Gaussian and Haar-orthogonal weights) of each network
    (:func:`meanfield.validation.spectra_sim.single_input_fisher_eigenvalues`), first three normalized moments
    ``(1/M) tr Theta_L^k`` against those of :func:`meanfield.spectra.single_input_fisher_spectrum` (free
    multiplicative convolution; the first is ``q* sum_{k<L} chi_1^k``). Linear statistics of the eigenvalues:
    self-averaging, bias O(1/M).
    """
    from ..spectra import single_input_fisher_spectrum
    from .spectra_sim import single_input_fisher_eigenvalues

    net = Network("tanh", depth=3, weight_var=1.5, bias_var=0.1)
    widths, S = ctx.ladder(((32, 64, 128), 8), ((64, 128, 256, 512), 24), ((256, 512, 1024, 2048, 4096), 48))
    out = []
    for weights in ("gaussian", "orthogonal"):
        with warnings.catch_warnings():   # only the moments are used: exact (contour integral) at any n_points
            warnings.simplefilter("ignore", PrecisionWarning)
            mom = np.asarray(single_input_fisher_spectrum(net, weights, n_points=16).moments, float)
        for M in widths:
            ev = np.stack([single_input_fisher_eigenvalues(net, weights, M, seed=ctx.seed * 7919 + M * 1000 + i,
                                                           device=ctx.device) for i in range(S)])
            for k in range(3):
                out.append(_rec("single_input_fisher", f"E[lambda^{k + 1}] ({weights})", M, float(mom[k]),
                                f"meanfield.spectra.single_input_fisher_spectrum('{weights}')",
                                np.mean(ev ** (k + 1), 1), _SELF))
    return out


def check_finite_width(ctx: CheckContext) -> list:
    r"""The O(1/M) corrections of :func:`meanfield.finite_width_corrections` (relu, depth 3, ``sigma_w^2 = 2``,
    ``sigma_b^2 = 0``, critical; NTK parameterization, one output) against torch ensembles
    (:func:`meanfield.validation.finite_width_sim.simulate_corrections`): ``M`` times the output excess kurtosis
    ``3 Var(G^L)/E[G^L]^2`` (predicted ``3 v^L / (K^L)^2``), and ``M Var(Theta)/E[Theta]^2`` for ``Theta(x,x)`` and
    ``Theta(x,x')`` (predicted ``relative_ntk_variance``). These are statistics of the ensemble: the networks are split
    into 20 batches, each batch gives one estimate (the row's samples), and the mean of the batch estimates tends to
    the coefficient with a relative error ``b/(a M)`` (next order), exponent -1.

    Examples
    --------
    >>> import torch
    >>> ctx = CheckContext("quick", torch.device("cpu"), torch.float64, widths=(8, 16), n_seeds=40)
    >>> rows = check_finite_width(ctx)
    >>> rows[0]["quantity"], rows[0]["kind"]
    ('M x output excess kurtosis', 'ensemble')
    """
    from .finite_width_sim import _predictions, simulate_corrections

    net = Network("relu", depth=3, weight_var=2.0, bias_var=0.0)
    inputs = (1.0, 1.0, 0.5)
    _, pred = _predictions(net, inputs)
    widths, S = ctx.ladder(((16, 32, 64), 3000), ((16, 32, 64, 128), 6000), ((16, 32, 64, 128, 256, 512), 40000))
    out = []
    src = "meanfield.finite_width_corrections"
    n_batch = 20
    if S < 2 * n_batch:
        raise ValueError(f"n_seeds must be >= {2 * n_batch} for the finite_width check (20 batch estimates), got {S}")
    for M in widths:
        s = simulate_corrections(net, M, S, inputs=inputs, seed=ctx.seed, device=ctx.device,
                                 dtype="float64" if ctx.dtype == torch.float64 else "float32",
                                 chunk_bytes=ctx.chunk_bytes)
        G = np.array_split(s["G"][:, -1, 0], n_batch)
        th = [np.array_split(s["theta"][:, e], n_batch) for e in (0, 1)]
        exp = "-1 (next order b/M); ensemble statistic (batch estimates)"
        kurt = [3.0 * M * np.var(g, ddof=1) / np.mean(g) ** 2 for g in G]
        out.append(_rec("finite_width", "M x output excess kurtosis", M, pred["output kurtosis"][1], src,
                        np.array(kurt), exp, "ensemble"))
        for e, tag in ((0, "(x,x)"), (1, "(x,x')")):
            v = [M * np.var(t, ddof=1) / np.mean(t) ** 2 for t in th[e]]
            out.append(_rec("finite_width", f"M Var Theta{tag} / Theta^2", M,
                            pred[f"Var Theta{tag} / Theta^2"][1], src, np.array(v), exp, "ensemble"))
    return out
