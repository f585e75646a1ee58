r"""Eigenvalue statistics of the Fisher information matrix (FIM) and its variants in wide random networks.

Karakida, Akaho & Amari, "Universal statistics of Fisher information in deep neural networks: mean field approach"
(AISTATS 2019) and "Pathological spectra of the Fisher information metric and its variants in deep neural networks"
(Neural Computation 2021); docs/mathematics.md sections 3 and 5. The derivations are written out in ``docs/fisher.md``.

Setting and notation
--------------------
``depth`` hidden layers and a linear readout (``L = depth + 1`` weight layers), widths ``M_l = alpha_l M``
(``alpha_0 M`` the input dimension), ``C = n_outputs`` linear outputs, ``T = n_samples`` inputs ``x_t ~ N(0, I)``
(so ``qhat_1^0 = 1``, ``qhat_2^0 = 0``). Standard parameterization (SP): ``W^l_ij ~ N(0, sigma_w^2/M_{l-1})``,
``b^l_i ~ N(0, sigma_b^2)``. With ``delta^l_{k,i} = d f_k / d u^l_i`` the per-sample Jacobian ``J`` (rows ``(k, t)``,
``C T`` of them, columns the ``P`` parameters) has ``df_k/dW^l_ij = delta^l_{k,i} h^{l-1}_j`` and
``df_k/db^l_i = delta^l_{k,i}``.

Every statistic here comes from the dual Gram matrix ``F* = J J^T / T`` (``C T x C T``), which has the same non-zero
eigenvalues as the empirical FIM ``F = J^T J / T`` (``P x P``):

.. math::

    F^*_{(k,t),(k',t')} = \frac1T \sum_{l=1}^{L} \Big(\sum_i \delta^l_{k,i}(t)\,\delta^l_{k',i}(t')\Big)
                          \Big(\sum_j h^{l-1}_j(t)\,h^{l-1}_j(t') + 1\Big)
                        \;\to\; \frac{\alpha M}{T}\,\delta_{kk'}\,\big[\kappa_1\delta_{tt'} + \kappa_2(1-\delta_{tt'})\big]
                          \;+\; O(\sqrt M),

with ``alpha = sum_{l=1}^{L-1} alpha_l alpha_{l-1}`` (``P ~ alpha M^2``) and

    kappa_1 = sum_{l=1}^{L} (alpha_{l-1}/alpha) qtilde_1^l qhat_1^{l-1},
    kappa_2 = sum_{l=1}^{L} (alpha_{l-1}/alpha) qtilde_2^l qhat_2^{l-1}.

Hence (means over all ``P`` eigenvalues of ``F``; ``Tr F = Tr F*``, ``Tr F^2 = ||F*||_F^2``)

    m_lambda   = C kappa_1 / M
    s_lambda   = alpha C ( kappa_1^2 / T + (T-1)/T kappa_2^2 )
    lambda_max = alpha M ( kappa_1 / T + (T-1)/T kappa_2 )     (C-fold; eigenvector 1_T per output)
    bulk       = alpha M (kappa_1 - kappa_2) / T               (C(T-1)-fold; the rest of the P eigenvalues are 0;
                                                               for T = 1 there is no bulk and it is set to lambda_max)

and the critical learning rate of full-batch gradient descent on ``(1/2T) sum_t ||y_t - f(x_t)||^2`` is
``eta_c = 2 / lambda_max`` (the Gauss-Newton part of the Hessian is F): above it the minimum is linearly unstable
(the linearised dynamics diverge); a finite nonlinear network may instead 'catapult' to a flatter region and
re-converge, diverging only at larger learning rates (docs/fisher.md sec. 7).

Mean subtraction in the last layer (``mean_subtraction=True``; batch normalization of the outputs, Karakida et al.
2021 eq. 22) projects the dual by ``I_C (x) (I - 11^T/T)``: the ``C`` outliers vanish and every other non-zero
eigenvalue is ``alpha M (kappa_1 - kappa_2) / T`` (NTK parameterization: ``kappa'_1 - kappa'_2``, independent of
``M`` and ``T``); docs/fisher_normalization.md, which also covers batch / layer normalization in the hidden layers
(:mod:`meanfield.normalization`) and the learning-rate thresholds (:mod:`meanfield.learning_rate`).

Finite-width accuracy: the neglected part of ``F*`` has entries ``O(sqrt(M))`` against ``O(M)``, so a single network's
statistics deviate from these values by a relative ``O(1/sqrt(M))`` (for ``lambda_max`` the ``C``-fold outlier is also
split by ``O(sqrt(M))``, which biases the single largest eigenvalue upwards at that order). The formulas need a
non-centred network (``kappa_2 > 0``: a bias or an activation with non-zero Gaussian mean); for a centred one a warning
is issued.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Optional

import numpy as np

from ._checks import check_int
from ._interop import Table, short_repr, to_dataframe, to_xarray

if TYPE_CHECKING:
    import pandas
    import xarray

    from ._typing import ArrayLike, NetworkLike
from .network import Network

__all__ = [
    "FisherStatistics",
    "FeatureMetricStatistics",
    "fisher_statistics",
    "feature_metric_statistics",
    "SpatialFisherStatistics",
    "spatial_fisher_statistics",
]

_PARAMETERIZATIONS = ("standard", "ntk")
_LOSSES = ("mse", "cross_entropy")


# ----------------------------------------------------------------------------------------------------------------------
# order parameters from the core
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _OrderParameters:
    q1: np.ndarray       # q_1^l, l = 1..L          (index l-1)
    q2: np.ndarray       # q_2^l, l = 1..L          (index l-1)
    qhat1: np.ndarray    # qhat_1^l, l = 0..L-1     (index l)
    qhat2: np.ndarray    # qhat_2^l, l = 0..L-1     (index l)
    qtilde1: np.ndarray  # qtilde_1^l, l = 1..L     (index l-1)
    qtilde2: np.ndarray  # qtilde_2^l, l = 1..L     (index l-1)
    alphas: np.ndarray = None       # fan-in width ratio alpha_{l-1} of Dense layer l = 1..L (index l-1)
    weight_vars: np.ndarray = None  # sigma_{w,l}^2 of Dense layer l = 1..L (index l-1)


def _order_parameters(network) -> _OrderParameters:
    """Order parameters of docs/mathematics.md sections 2-3 for independent inputs ``x ~ N(0, I)``, per Dense layer
    ``l = 1..L`` of ``network`` (a Network or a layer chain): views of one layer sweep (:mod:`meanfield.trace`)."""
    from .forward import forward
    from .backward import backward

    fr = forward(network, input_norm=1.0, input_overlap=0.0)
    br = backward(network, forward_result=fr)
    dense = fr.trace.dense
    L = len(dense)
    op = _OrderParameters(
        q1=np.asarray(fr.q1, dtype=np.float64).reshape(-1)[:L],
        q2=np.asarray(fr.q2, dtype=np.float64).reshape(-1)[:L],
        qhat1=np.asarray(fr.qhat1, dtype=np.float64).reshape(-1)[:L],
        qhat2=np.asarray(fr.qhat2, dtype=np.float64).reshape(-1)[:L],
        qtilde1=np.asarray(br.qtilde1, dtype=np.float64).reshape(-1)[:L],
        qtilde2=np.asarray(br.qtilde2, dtype=np.float64).reshape(-1)[:L],
        alphas=np.array([s.fan_in_ratio for s in dense], dtype=np.float64),
        weight_vars=np.array([s.layer.weight_var for s in dense], dtype=np.float64),
    )
    for name in ("q1", "q2", "qhat1", "qhat2", "qtilde1", "qtilde2"):
        arr = getattr(op, name)
        if arr.shape != (L,):
            raise RuntimeError(f"core returned {name} of shape {arr.shape}, expected ({L},)")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"order parameter {name} is not finite for this network (the forward or backward signal "
                             f"diverges); reduce weight_var or depth")
    return op


# ----------------------------------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------------------------------
def _validate(network, width, n_samples, n_outputs, parameterization, loss, allow_chain=False):
    from .layers import Dense, Layer
    from .trace import _has_dropout, as_chain

    if allow_chain and isinstance(network, Layer):
        chain = as_chain(network)
        if _has_dropout(chain):
            raise ValueError("network must have no Dropout layer (keep < 1): the Fisher statistics are for networks "
                             "without dropout")
        if not isinstance(chain.layers[-1], Dense):
            raise ValueError("network (a layer chain) must end with a Dense layer, the linear readout")
    elif not isinstance(network, Network):
        raise TypeError(f"network must be a meanfield.Network{' or a layer chain' if allow_chain else ''}, "
                        f"got {type(network).__name__}")
    elif network.dropout_keep != 1.0:
        raise ValueError("network.dropout_keep must be 1.0: the Fisher statistics are for networks without dropout")
    width = check_int("width", width, 1)
    n_samples = check_int("n_samples", n_samples, 1)
    n_outputs = check_int("n_outputs", n_outputs, 1)
    if parameterization not in _PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {_PARAMETERIZATIONS}, got {parameterization!r}")
    if loss not in _LOSSES:
        raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")
    if loss == "cross_entropy" and n_outputs < 2:
        raise ValueError("n_outputs must be >= 2 for loss='cross_entropy' (a 1-class softmax is constant)")
    return width, n_samples, n_outputs


def _check_mean_subtraction(mean_subtraction, loss, n_samples):
    if not isinstance(mean_subtraction, (bool, np.bool_)):
        raise TypeError(f"mean_subtraction must be True or False, got {type(mean_subtraction).__name__}")
    if mean_subtraction and loss != "mse":
        raise ValueError("mean_subtraction=True needs loss='mse' (the mean-subtracted statistics are derived for the "
                         f"squared loss), got loss={loss!r}")
    if mean_subtraction and n_samples < 2:
        raise ValueError(f"n_samples must be >= 2 with mean_subtraction=True (one mean-subtracted output is 0), "
                         f"got {n_samples}")
    return bool(mean_subtraction)


# ----------------------------------------------------------------------------------------------------------------------
# softmax (cross-entropy) expectations by Monte Carlo over the infinite-width Gaussian outputs
# ----------------------------------------------------------------------------------------------------------------------
def _softmax_samples(q1L, q2L, n_samples, n_outputs, n_mc, seed):
    """Softmax outputs g (n_mc, T, C) of logits drawn from the NNGP: f_{t,k} ~ N(0, q1L), cov across t = q2L."""
    rng = np.random.default_rng(seed)
    T, C = n_samples, n_outputs
    q2c = min(max(q2L, 0.0), q1L)  # q2 in [0, q1] for inputs x ~ N(0, I) (Mehler: qhat_2 >= 0 when q_2 >= 0)
    shared = rng.standard_normal((n_mc, 1, C)) * np.sqrt(q2c)
    own = rng.standard_normal((n_mc, T, C)) * np.sqrt(q1L - q2c)
    f = shared + own
    f -= f.max(axis=2, keepdims=True)
    e = np.exp(f)
    return e / e.sum(axis=2, keepdims=True)


def _softmax_moments(g):
    """Per-sample moments: mean_t Tr Q_t, mean_t Tr Q_t^2, mean_{t != t'} Tr Q_t Q_t'  (each shape (n_mc,))."""
    n_mc, T, C = g.shape
    Q = -g[..., :, None] * g[..., None, :]
    idx = np.arange(C)
    Q[..., idx, idx] += g
    trQ = np.trace(Q, axis1=2, axis2=3).mean(axis=1)
    trQ2_t = np.einsum("ntij,ntij->nt", Q, Q)
    trQ2 = trQ2_t.mean(axis=1)
    if T > 1:
        S = Q.sum(axis=1)
        pair = (np.einsum("nij,nij->n", S, S) - trQ2_t.sum(axis=1)) / (T * (T - 1))
    else:
        pair = np.zeros(n_mc)
    return Q, trQ, trQ2, pair


def _sqrtm_psd(Q):
    """Symmetric square roots of a stack of PSD matrices (..., C, C)."""
    w, V = np.linalg.eigh(Q)
    w = np.clip(w, 0.0, None)
    return (V * np.sqrt(w)[..., None, :]) @ np.swapaxes(V, -1, -2)


def _softmax_top_eigenvalues(R, k1, k2, n_top, chunk_bytes=64 * 2 ** 20):
    """Top ``n_top`` eigenvalues of B = [K_tt' R_t R_t'] (CT x CT) for each MC sample; K = k1 on, k2 off the diagonal."""
    n_mc, T, C, _ = R.shape   # C here is the dimension of R_t (C - 1 in the reduced basis)
    K = np.full((T, T), k2)
    np.fill_diagonal(K, k1)
    Kbig = np.kron(K, np.ones((C, C)))[None]
    out = np.empty((n_mc, n_top))
    step = max(1, int(chunk_bytes // (8 * (T * C) ** 2)))
    for s0 in range(0, n_mc, step):
        Rs = R[s0:s0 + step]
        # B[(t,a),(t',b)] = K[t,t'] * (R_t R_t')[a,b], batched over draws
        X = Rs.reshape(len(Rs), T * C, C)           # R_t symmetric: (R_t R_t')_ab = sum_c X[(t,a),c] X[(t',b),c]
        B = (X @ np.swapaxes(X, 1, 2)) * Kbig
        ev = np.linalg.eigvalsh(B)
        out[s0:s0 + step] = ev[:, ::-1][:, :n_top]
    return out


# ----------------------------------------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------------------------------------
class _ToDict:
    #: first layer index of the per-layer blocks (FIM: weight layers 1..L; feature metric: activations 0..L-1)
    _first_layer = 1

    def _table(self) -> Table:
        layer = {k: getattr(self, k) for k in ("layer_kappa1", "layer_kappa2", "layer_mean_eigenvalue",
                                                "layer_second_moment", "layer_lambda_max") if hasattr(self, k)}
        n = len(next(iter(layer.values())))
        scalars = {f.name: getattr(self, f.name) for f in fields(self)
                   if isinstance(getattr(self, f.name), (int, float, str)) and getattr(self, f.name) is not None}
        return Table(coords={"layer": np.arange(self._first_layer, self._first_layer + n)},
                     data={k[len("layer_"):]: (("layer",), np.asarray(v, dtype=float)) for k, v in layer.items()},
                     attrs=scalars, rows=("layer",))

    def to_xarray(self) -> "xarray.Dataset":
        """The per-layer block statistics (``layer_*`` without the prefix) on the dimension ``layer``, the scalar
        statistics of the whole matrix as attributes. Needs xarray."""
        return to_xarray(self._table())

    def to_dataframe(self) -> "pandas.DataFrame":
        """One row per layer block: ``kappa1, kappa2, mean_eigenvalue, second_moment, lambda_max`` of the block
        (``layer_*`` attributes); the whole matrix's scalar statistics are in ``DataFrame.attrs``. Needs pandas."""
        return to_dataframe(self._table())

    def to_dict(self) -> dict:
        """Plain-Python dictionary of the result (arrays as lists, the network through ``Network.to_dict``)."""
        d = {}
        for fld in fields(self):
            k, v = fld.name, getattr(self, fld.name)
            if k == "network":
                continue
            if isinstance(v, np.ndarray):
                v = v.tolist()
            elif isinstance(v, tuple):
                v = list(v)
            d[k] = v
        d["network"] = self.network.to_dict()
        return d


@dataclass(frozen=True)
class FisherStatistics(_ToDict):
    r"""Eigenvalue statistics of the empirical FIM (or, for ``parameterization="ntk"``, of the NTK).

    Attributes
    ----------
    network, width, n_samples, n_outputs, parameterization, loss
        The inputs (``M = width``, ``T = n_samples``, ``C = n_outputs``).
    matrix : str
        Which matrix the statistics describe: ``"F = J^T Q J / T (P x P)"`` (standard parameterization; ``Q = I`` for
        MSE) or ``"Theta = Q^1/2 J J^T Q^1/2 (CT x CT)"`` (NTK parameterization).
    alphas : tuple
        Width ratios ``alpha_0..alpha_{L-1}`` (input first) and ``alpha_L = C/M`` for the readout.
    alpha : float
        ``sum_{l=1}^{L-1} alpha_l alpha_{l-1}`` (``P ~ alpha M^2``).
    n_params : int
        Exact number of parameters (weights and biases) at this width (the asymptotic count is ``alpha M^2``).
    n_eigenvalues : float
        The number ``N`` the mean and second moment divide by: ``alpha M^2`` (SP) or ``C T`` (NTK).
    kappa1, kappa2 : float
        SP: ``sum_l (alpha_{l-1}/alpha) qtilde_i^l qhat_i^{l-1}``; NTK: ``kappa'_i = sum_l qtilde_i^l q_i^l``.
    mean_eigenvalue, second_moment : float
        ``m_lambda = Tr/N`` and ``s_lambda = Tr(.^2)/N``.
    lambda_max : float
        Largest eigenvalue; ``lambda_max_multiplicity`` its degeneracy (``C`` for MSE, 1 for cross-entropy, whose
        ``C - 1`` outliers are in ``outliers``).
    bulk_eigenvalue : float or None
        MSE: the smallest eigenvalue of the leading ``C T x C T`` dual, i.e. the other non-zero eigenvalue
        ``scale (kappa_1 - kappa_2)`` (``C (T-1)``-fold) for ``T > 1``; NTK parameterization: the smallest eigenvalue
        ``kappa'_1 - kappa'_2``. With ``n_samples = 1`` there is no bulk: the dual is ``scale kappa_1 I_C``, all its
        ``C`` eigenvalues equal ``lambda_max``, and ``bulk_eigenvalue = lambda_max`` (condition number 1).
        ``None`` for cross-entropy (not computed; ``to_dict`` gives ``None`` too).
    condition_number : float or None
        ``lambda_max / bulk_eigenvalue`` (NTK: ``(kappa'_1 + (T-1) kappa'_2) / (kappa'_1 - kappa'_2)``); 1 for
        ``n_samples = 1``; ``inf`` where the bulk eigenvalue is 0; ``None`` for cross-entropy (not computed).
    eta_critical : float
        ``2 / lambda_max(F)`` with ``F = J^T J / T``: the largest stable learning rate of full-batch gradient descent on
        ``(1/2T) sum_t ||y_t - f(x_t)||^2`` (for the NTK parameterization ``2 T / lambda_max(Theta)``).
    layer_kappa1, layer_kappa2, layer_mean_eigenvalue, layer_second_moment, layer_lambda_max : ndarray (L,)
        The same statistics for the diagonal blocks ``F_ll`` (parameters of weight layer ``l = 1..L`` alone; readout
        last): SP ``kappa_i^(l) = qtilde_i^l qhat_i^{l-1}``, ``m = C kappa_1^(l)/M_l``,
        ``s = C (alpha_{l-1}/alpha_l)(kappa_1^2/T + (T-1)/T kappa_2^2)``,
        ``lambda_max = alpha_{l-1} M (kappa_1/T + (T-1)/T kappa_2)`` (with ``M_L = C``); NTK
        ``kappa_i^(l) = qtilde_i^l q_i^l``. The first block has ``kappa_2^(1) = 0`` (independent inputs): no outlier,
        its ``C T`` eigenvalues spread around ``layer_lambda_max[0]`` up to the Marchenko-Pastur edge
        ``(1 + sqrt(T/M_0))^2`` times it.
    outliers : ndarray or None
        Cross-entropy: the ``C - 1`` largest eigenvalues (expectation over the Gaussian outputs).
    outliers_large_T : float or None
        Cross-entropy: their common ``T -> inf`` value ``scale T kappa_2 (1 - C E[g_1^2])/(C - 1)``.
    softmax_moments : dict or None
        Cross-entropy: ``E Tr Q``, ``E Tr Q^2``, ``E Tr Q_t Q_t'`` (``t != t'``), ``E g_1^2``.
    mc_stderr : dict or None
        Monte-Carlo standard errors of the cross-entropy quantities (same keys as the statistics).
    order_parameters : dict
        ``q1, q2, qhat1, qhat2, qtilde1, qtilde2`` used.
    mean_subtraction : bool
        Whether the statistics are those of the mean-subtracted outputs ``f_k(x_t) - (1/T) sum_s f_k(x_s)``
        (batch normalization's mean subtraction in the last layer; see :func:`fisher_statistics`).
    """

    network: Network
    width: int
    n_samples: int
    n_outputs: int
    parameterization: str
    loss: str
    matrix: str
    alphas: tuple
    alpha: float
    n_params: int
    n_eigenvalues: float
    kappa1: float
    kappa2: float
    mean_eigenvalue: float
    second_moment: float
    lambda_max: float
    lambda_max_multiplicity: int
    bulk_eigenvalue: Optional[float]
    condition_number: Optional[float]
    eta_critical: float
    layer_kappa1: np.ndarray
    layer_kappa2: np.ndarray
    layer_mean_eigenvalue: np.ndarray
    layer_second_moment: np.ndarray
    layer_lambda_max: np.ndarray
    outliers: Optional[np.ndarray]
    outliers_large_T: Optional[float]
    softmax_moments: Optional[dict]
    mc_stderr: Optional[dict]
    order_parameters: dict
    mean_subtraction: bool = False

    __repr__ = short_repr


@dataclass(frozen=True)
class FeatureMetricStatistics(_ToDict):
    r"""Eigenvalue statistics of the input/feature-space metric ``A = (1/T) sum_t sum_k grad_h f_k grad_h f_k^T``.

    ``h = (h^0, ..., h^{L-1})`` stacks the input and all hidden activations (dimension
    ``D = sum_{l=0}^{L-1} M_l = alpha' M``). Attributes: ``kappa1, kappa2 = sum_{l=1}^{L} sigma_{w,l}^2 qtilde_i^l``;
    ``dimension``; ``alpha_prime``; ``mean_eigenvalue = C kappa_1 / (alpha' M)``;
    ``second_moment = C (kappa_1^2 + (T-1) kappa_2^2) / (T alpha' M)``;
    ``lambda_max = kappa_1/T + (T-1)/T kappa_2`` (``C``-fold, O(1)); per-layer blocks ``A_ll`` for ``h^l``,
    ``l = 0..L-1``: ``layer_kappa_i = sigma_{w,l+1}^2 qtilde_i^{l+1}``, ``layer_mean_eigenvalue = C kappa_1^(l)/M_l``,
    ``layer_lambda_max = kappa_1^(l)/T + (T-1)/T kappa_2^(l)``. Cross-entropy: ``Q``-weighted as for the FIM, with
    ``outliers`` the ``C - 1`` largest.
    """

    network: Network
    width: int
    n_samples: int
    n_outputs: int
    loss: str
    dimension: int
    alpha_prime: float
    kappa1: float
    kappa2: float
    mean_eigenvalue: float
    second_moment: float
    lambda_max: float
    lambda_max_multiplicity: int
    layer_kappa1: np.ndarray
    layer_kappa2: np.ndarray
    layer_mean_eigenvalue: np.ndarray
    layer_second_moment: np.ndarray
    layer_lambda_max: np.ndarray
    outliers: Optional[np.ndarray]
    mc_stderr: Optional[dict]
    mean_subtraction: bool = False

    __repr__ = short_repr
    _first_layer = 0


# ----------------------------------------------------------------------------------------------------------------------
# the generic dual-Gram statistics
# ----------------------------------------------------------------------------------------------------------------------
def _mse_stats(scale, k1, k2, N, T, C, mean_subtraction=False):
    """Statistics of the eigenvalues of a matrix whose dual is ``scale * I_C (x) [k1 I + k2 (11^T - I)]`` (T x T).

    ``bulk`` is the smallest eigenvalue of the dual: ``scale (k1 - k2)`` (``C (T-1)``-fold) for ``T > 1``; for
    ``T = 1`` the dual is ``scale k1 I_C``, there is no separate bulk and its smallest eigenvalue is ``lmax``.

    ``mean_subtraction``: the dual projected by ``I_C (x) P``, ``P = I - 11^T/T`` (output mean over the batch
    subtracted, Karakida et al. 2021 eq. 22): ``P K P = (k1 - k2) P``, so the ``C`` outliers (eigenvector ``1_T``) go
    to 0 and every other eigenvalue is ``scale (k1 - k2)`` (``C (T-1)``-fold): ``lmax = bulk = scale (k1 - k2)``.
    """
    if mean_subtraction:
        lev = scale * (k1 - k2)
        return C * (T - 1) * lev / N, C * (T - 1) * lev ** 2 / N, lev, lev
    mean = scale * C * T * k1 / N
    second = scale ** 2 * C * T * (k1 ** 2 + (T - 1) * k2 ** 2) / N
    lmax = scale * (k1 + (T - 1) * k2)
    bulk = scale * (k1 - k2) if T > 1 else lmax
    return mean, second, lmax, bulk


class _SoftmaxMC:
    """Monte-Carlo draws of the softmax outputs at infinite width, shared by all the blocks of one call."""

    def __init__(self, q1L, q2L, T, C, n_mc, seed):
        g = _softmax_samples(q1L, q2L, T, C, n_mc, seed)
        Q, trQ, trQ2, pair = _softmax_moments(g)
        self.T, self.C, self.n_mc = T, C, n_mc
        # Q_t 1 = 0: work in an orthonormal basis V of the complement of 1 (C-1 dims), which removes the T trivial
        # zero eigenvalues of the dual and cuts the eigenvalue cost by ((C-1)/C)^3
        V = np.linalg.svd(np.eye(C) - 1.0 / C)[0][:, :C - 1]
        self.R = _sqrtm_psd(np.swapaxes(V, 0, 1) @ Q @ V)
        self.trQ, self.trQ2, self.pair = trQ, trQ2, pair
        self.g1sq = (g ** 2).mean(axis=(1, 2))

    @staticmethod
    def _mean_se(x):
        """Sample mean over the draws (axis 0) and its standard error."""
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=0)
        se = x.std(axis=0, ddof=1) / np.sqrt(x.shape[0])
        if x.ndim == 1:
            return float(mean), float(se)
        return mean, se

    def stats(self, scale, k1, k2, N):
        T, C = self.T, self.C
        mean_s = scale * k1 * T * self.trQ / N
        second_s = scale ** 2 * T * (k1 ** 2 * self.trQ2 + (T - 1) * k2 ** 2 * self.pair) / N
        top = scale * _softmax_top_eigenvalues(self.R, k1, k2, C - 1)
        m, m_se = self._mean_se(mean_s)
        s, s_se = self._mean_se(second_s)
        o, o_se = self._mean_se(top)
        return m, s, np.atleast_1d(o), {"mean_eigenvalue": float(m_se), "second_moment": float(s_se),
                                        "outliers": np.atleast_1d(o_se).tolist(), "lambda_max": float(np.atleast_1d(o_se)[0])}

    def moments(self):
        out, se = {}, {}
        for name, arr in (("E_trQ", self.trQ), ("E_trQ2", self.trQ2), ("E_trQQ_pair", self.pair),
                          ("E_g1_squared", self.g1sq)):
            out[name], se[name] = self._mean_se(arr)
            se[name] = float(se[name])
        return out, se


def fisher_statistics(network: Network, width: int, n_samples: int, n_outputs: int = 1,
                      parameterization: str = "standard", loss: str = "mse", *, n_mc: int = 400,
                      seed: int = 0, mean_subtraction: bool = False) -> FisherStatistics:
    r"""Asymptotic (large-width) eigenvalue statistics of the empirical Fisher information matrix.

    Karakida, Akaho & Amari (2019, 2021), Theorems 3.1 (MSE), 3.3-3.4 (softmax), sec. 3.2 (diagonal blocks) and 4.1
    (NTK parameterization); docs/mathematics.md sec. 5; derivations in ``docs/fisher.md``.

    Standard parameterization, MSE (``F = J^T J / T``, mean and second moment over all ``P ~ alpha M^2`` eigenvalues)::

        m_lambda   = C kappa_1 / M
        s_lambda   = alpha C (kappa_1^2 / T + (T-1)/T kappa_2^2)
        lambda_max = alpha M (kappa_1 / T + (T-1)/T kappa_2)      (C-fold),   eta_c = 2 / lambda_max

    NTK parameterization (statistics of the ``C T`` eigenvalues of ``Theta = J J^T``, width independent)::

        kappa'_i = sum_l qtilde_i^l q_i^l,   m = kappa'_1,   s = kappa'_1^2 + (T-1) kappa'_2^2,
        lambda_max = kappa'_1 + (T-1) kappa'_2 (C-fold),   lambda_min = kappa'_1 - kappa'_2,   cond = lambda_max/lambda_min

    Cross-entropy (``F = (1/T) sum_t J_t^T Q_t J_t``, ``Q_t = diag(g_t) - g_t g_t^T``): the dual is
    ``scale [K_tt' Q_t^{1/2} Q_t'^{1/2}]`` with ``K`` as for MSE, so

        m = scale T kappa_1 E[Tr Q] / N,   s = scale^2 T (kappa_1^2 E[Tr Q^2] + (T-1) kappa_2^2 E[Tr Q_t Q_t']) / N,

    and, by Weyl's inequality, the ``C - 1`` largest eigenvalues lie in
    ``scale T kappa_2 lambda_k(Qbar) + [0, scale (kappa_1 - kappa_2) max_t lambda_max(Q_t)]``, ``Qbar = mean_t Q_t``:
    ``C - 1`` outliers (``Q_t 1 = 0`` removes the ``C``-th), degenerate only as ``T -> inf``, where they tend to
    ``scale T kappa_2 (1 - C E[g_1^2]) / (C - 1)``.

    Mean subtraction in the last layer (``mean_subtraction=True``; Karakida, Akaho & Amari 2021 sec. 4.2 eq. 22, and
    "The normalization method for alleviating pathological sharpness in wide neural networks", NeurIPS 2019: batch
    normalization's mean subtraction applied to the outputs, ``fbar_k(x_t) = f_k(x_t) - (1/T) sum_s f_k(x_s)``):
    the Jacobian becomes ``(I_C (x) P) J`` with ``P = I_T - 1 1^T / T`` and the dual ``(I_C (x) P) F* (I_C (x) P)``.
    ``P K P = (kappa_1 - kappa_2) P`` removes the ``C`` outliers (eigenvector ``1_T``) entirely; all other non-zero
    eigenvalues are equal at leading order::

        lambda_max = bulk = scale (kappa_1 - kappa_2)      (C (T-1)-fold; condition number 1)
        m_lambda   = C (T-1) scale (kappa_1 - kappa_2) / N,   s_lambda = C (T-1) scale^2 (kappa_1 - kappa_2)^2 / N

    i.e. SP ``lambda_max = alpha (M/T) (kappa_1 - kappa_2)`` (``O(1)`` for ``T ~ M``: Karakida's ``rho = M/T``), NTK
    parameterization ``lambda_max(Theta) = kappa'_1 - kappa'_2``, independent of both the width and ``T``. Since the
    trace is exact, ``lambda_max >= Tr / (C (T-1))`` = this value holds for every finite network too (the lower bound
    of Karakida et al. 2019); at finite width the ``C (T-1)`` levels spread by a relative ``~ sqrt(T/M)``
    (docs/fisher_normalization.md). MSE only; needs ``n_samples >= 2``.

    The expectations over the softmax outputs use the infinite-width output distribution (the NNGP: logits i.i.d. over
    the ``C`` outputs, variance ``q_1^L``, covariance ``q_2^L`` between inputs) by plain Monte Carlo with ``n_mc`` draws
    of all ``T x C`` logits (seeded, reproducible); ``mc_stderr`` gives the standard error of each quantity (relative
    error ~ ``1/sqrt(n_mc T)`` for the moments, ``~ 1/sqrt(n_mc)`` for the outliers, which are computed from the
    ``C T x C T`` dual of each draw: cost ``O(n_mc (C T)^3)``).

    Parameters
    ----------
    network : Network or layer chain
        The architecture (``depth`` hidden layers + linear readout, per-layer variances and width ratios allowed), or
        a chain of :mod:`meanfield.layers` ending in a Dense readout (e.g. with residual blocks): the sums then run
        over its Dense layers in chain order, ``alpha_{l-1}`` being the fan-in width ratio of layer ``l``
        (docs/mathematics.md sec. 8).
    width : int
        The reference width ``M`` (``M_l = alpha_l M``).
    n_samples : int
        ``T``, the number of inputs ``x_t ~ N(0, I_{M_0})``.
    n_outputs : int
        ``C``, the number of outputs (classes for cross-entropy, >= 2 there).
    parameterization : {"standard", "ntk"}
    loss : {"mse", "cross_entropy"}
    n_mc : int
        Monte-Carlo draws for the cross-entropy expectations.
    seed : int
        Seed of those draws.
    mean_subtraction : bool
        Statistics of the FIM of the batch-mean-subtracted outputs (batch normalization's mean subtraction in the last
        layer); MSE only, ``n_samples >= 2``.

    Returns
    -------
    FisherStatistics

    Examples
    --------
    >>> from meanfield import Network, fisher_statistics
    >>> st = fisher_statistics(Network("tanh", depth=3, weight_var=3.0, bias_var=0.64), width=1024, n_samples=32,
    ...                        n_outputs=3)
    >>> round(st.width * st.mean_eigenvalue / 3, 3) == round(st.kappa1, 3)
    True
    """
    M, T, C = _validate(network, width, n_samples, n_outputs, parameterization, loss, allow_chain=True)
    n_mc = check_int("n_mc", n_mc, 2)
    mean_subtraction = _check_mean_subtraction(mean_subtraction, loss, T)
    op = _order_parameters(network)
    L = op.q1.size                                       # Dense layers (weight layers)
    alphas = tuple(op.alphas.tolist()) + (C / M,)        # alpha_0..alpha_{L-1} (fan-in ratios), alpha_L = C/M
    a = np.asarray(alphas)
    alpha = float(np.sum(a[1:L] * a[0:L - 1]))
    widths = [max(int(round(al * M)), 1) for al in alphas[:L]] + [C]
    n_params = int(sum(widths[l + 1] * widths[l] + widths[l + 1] for l in range(L)))

    if parameterization == "standard":
        lk1 = op.qtilde1 * op.qhat1
        lk2 = op.qtilde2 * op.qhat2
        k1 = float(np.sum(a[:L] * lk1) / alpha)
        k2 = float(np.sum(a[:L] * lk2) / alpha)
        scale, N = alpha * M / T, alpha * M * M
        layer_scale = a[:L] * M / T
        layer_N = a[1:L + 1] * a[:L] * M * M
        matrix = "F = J^T Q J / T (P x P)" if loss == "cross_entropy" else "F = J^T J / T (P x P)"
        to_F = 1.0
    else:
        lk1 = op.qtilde1 * op.q1
        lk2 = op.qtilde2 * op.q2
        k1, k2 = float(np.sum(lk1)), float(np.sum(lk2))
        scale, N = 1.0, float(C * T)
        layer_scale = np.ones(L)
        layer_N = np.full(L, float(C * T))
        matrix = "Theta = Q^1/2 J J^T Q^1/2 (CT x CT)" if loss == "cross_entropy" else "Theta = J J^T (CT x CT)"
        to_F = 1.0 / T   # eigenvalues of F = J^T J / T are those of Theta divided by T

    if T > 1 and not mean_subtraction and not k2 > 1e-12 * abs(k1):
        warnings.warn("kappa2 = 0: the network is centred (no bias and an activation with zero Gaussian mean); the "
                      "largest-eigenvalue formulas then miss O(sqrt(M)) terms of the same order (Karakida et al. assume "
                      "a non-centred network)", RuntimeWarning, stacklevel=2)

    outliers = outliers_T = sm = se = None
    if loss == "mse":
        mean, second, lmax, bulk = _mse_stats(scale, k1, k2, N, T, C, mean_subtraction)
        mult = C * (T - 1) if mean_subtraction else C
        lay = [_mse_stats(layer_scale[l], lk1[l], lk2[l], layer_N[l], T, C, mean_subtraction) for l in range(L)]
        lay_mean = np.array([x[0] for x in lay])
        lay_second = np.array([x[1] for x in lay])
        lay_lmax = np.array([x[2] for x in lay])
    else:
        mc = _SoftmaxMC(op.q1[-1], op.q2[-1], T, C, n_mc, seed)
        mean, second, outliers, se = mc.stats(scale, k1, k2, N)
        lmax = float(outliers[0])
        bulk = None     # not computed for cross-entropy
        mult = 1
        sm, sm_se = mc.moments()
        se.update(sm_se)
        outliers_T = float(scale * T * k2 * (1.0 - C * sm["E_g1_squared"]) / (C - 1))
        lay = [mc.stats(layer_scale[l], lk1[l], lk2[l], layer_N[l]) for l in range(L)]
        lay_mean = np.array([x[0] for x in lay])
        lay_second = np.array([x[1] for x in lay])
        lay_lmax = np.array([x[2][0] for x in lay])
        se["layer_lambda_max"] = [x[3]["lambda_max"] for x in lay]
    if bulk is None:
        cond = None
    else:
        cond = float(lmax / bulk) if bulk > 0 else np.inf
    eta_c = float(2.0 / (lmax * to_F)) if lmax > 0 else np.inf
    return FisherStatistics(
        network=network, width=M, n_samples=T, n_outputs=C, parameterization=parameterization, loss=loss,
        matrix=matrix, alphas=alphas, alpha=alpha, n_params=n_params, n_eigenvalues=float(N),
        kappa1=k1, kappa2=k2, mean_eigenvalue=float(mean), second_moment=float(second), lambda_max=float(lmax),
        lambda_max_multiplicity=int(mult), bulk_eigenvalue=None if bulk is None else float(bulk), condition_number=cond, eta_critical=eta_c,
        layer_kappa1=np.asarray(lk1, dtype=np.float64), layer_kappa2=np.asarray(lk2, dtype=np.float64),
        layer_mean_eigenvalue=lay_mean, layer_second_moment=lay_second, layer_lambda_max=lay_lmax,
        outliers=outliers, outliers_large_T=outliers_T, softmax_moments=sm, mc_stderr=se,
        order_parameters={k: getattr(op, k).tolist() for k in ("q1", "q2", "qhat1", "qhat2", "qtilde1", "qtilde2")},
        mean_subtraction=mean_subtraction,
    )


def feature_metric_statistics(network: Network, width: int, n_samples: int, n_outputs: int = 1, loss: str = "mse",
                              *, n_mc: int = 400, seed: int = 0,
                              mean_subtraction: bool = False) -> FeatureMetricStatistics:
    r"""Eigenvalue statistics of the metric of the input and feature spaces (Karakida et al. 2021, Theorem 5.1).

    ``A = (1/T) sum_t sum_k grad_h f_k(x_t) grad_h f_k(x_t)^T`` with ``h = (h^0 = x, h^1, ..., h^{L-1})`` (dimension
    ``D = alpha' M``, ``alpha' = sum_{l=0}^{L-1} alpha_l``). Since ``df_k/dh^{l-1}_j = sum_i delta^l_{k,i} W^l_ij`` and
    ``sum_j W^l_ij W^l_i'j -> sigma_{w,l}^2 delta_ii'``, the dual ``A* = (1/T) grad grad^T`` (``C T x C T``) tends to
    ``(1/T) I_C (x) [kappa_1 I + kappa_2 (11^T - I)]`` with ``kappa_i = sum_{l=1}^{L} sigma_{w,l}^2 qtilde_i^l``:

        m_lambda   = C kappa_1 / (alpha' M)              (falls like 1/M)
        s_lambda   = C (kappa_1^2 + (T-1) kappa_2^2) / (T alpha' M)
        lambda_max = kappa_1 / T + (T-1)/T kappa_2       (C-fold, O(1) at any width)

    Diagonal block ``A_ll`` (``h^l`` alone, ``l = 0..L-1``; ``l = 0`` is the input metric): the ``l+1`` term only and
    dimension ``M_l``. Cross-entropy: as in :func:`fisher_statistics` (Monte Carlo over the Gaussian outputs).

    ``mean_subtraction=True`` (MSE, ``T >= 2``): the metric of the batch-mean-subtracted outputs; as for the FIM the
    dual becomes ``(1/T) I_C (x) (kappa_1 - kappa_2) P``, so ``lambda_max = (kappa_1 - kappa_2) / T``
    (``C (T-1)``-fold), ``m = C (T-1)(kappa_1 - kappa_2) / (T alpha' M)``,
    ``s = C (T-1) (kappa_1 - kappa_2)^2 / (T^2 alpha' M)``.

    Examples
    --------
    >>> from meanfield import Network, feature_metric_statistics
    >>> st = feature_metric_statistics(Network("relu", depth=2, weight_var=2.0, bias_var=0.1), 512, 16, 2)
    >>> st.lambda_max > 100 * st.mean_eigenvalue
    True
    """
    M, T, C = _validate(network, width, n_samples, n_outputs, "standard", loss, allow_chain=True)
    n_mc = check_int("n_mc", n_mc, 2)
    mean_subtraction = _check_mean_subtraction(mean_subtraction, loss, T)
    op = _order_parameters(network)
    L = op.q1.size
    a = op.alphas                   # alpha_0..alpha_{L-1}, the fan-in ratios of the Dense layers
    sw = op.weight_vars             # sigma_{w,l}^2, l = 1..L
    alpha_p = float(a.sum())
    widths = [max(int(round(al * M)), 1) for al in a]
    D = int(sum(widths))
    lk1 = sw * op.qtilde1          # block of h^{l-1} (index l-1)
    lk2 = sw * op.qtilde2
    k1, k2 = float(lk1.sum()), float(lk2.sum())
    if T > 1 and not mean_subtraction and not k2 > 1e-12 * abs(k1):
        warnings.warn("kappa2 = 0: the network is centred; the largest-eigenvalue formula misses terms of the same order",
                      RuntimeWarning, stacklevel=2)
    scale, N = 1.0 / T, alpha_p * M
    layer_N = a * M
    outliers = se = None
    if loss == "mse":
        mean, second, lmax, _ = _mse_stats(scale, k1, k2, N, T, C, mean_subtraction)
        mult = C * (T - 1) if mean_subtraction else C
        lay = [_mse_stats(scale, lk1[l], lk2[l], layer_N[l], T, C, mean_subtraction) for l in range(L)]
        lay_lmax = np.array([x[2] for x in lay])
    else:
        mc = _SoftmaxMC(op.q1[-1], op.q2[-1], T, C, n_mc, seed)
        mean, second, outliers, se = mc.stats(scale, k1, k2, N)
        lmax, mult = float(outliers[0]), 1
        lay = [mc.stats(scale, lk1[l], lk2[l], layer_N[l]) for l in range(L)]
        lay_lmax = np.array([x[2][0] for x in lay])
    return FeatureMetricStatistics(
        network=network, width=M, n_samples=T, n_outputs=C, loss=loss, dimension=D, alpha_prime=alpha_p,
        kappa1=k1, kappa2=k2, mean_eigenvalue=float(mean), second_moment=float(second), lambda_max=float(lmax),
        lambda_max_multiplicity=int(mult), layer_kappa1=lk1, layer_kappa2=lk2,
        layer_mean_eigenvalue=np.array([x[0] for x in lay]), layer_second_moment=np.array([x[1] for x in lay]),
        layer_lambda_max=lay_lmax, outliers=outliers, mc_stderr=se, mean_subtraction=mean_subtraction)


# ----------------------------------------------------------------------------------------------------------------------
# convolutional chains on a data set
# ----------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpatialFisherStatistics:
    r"""Eigenvalue statistics of the FIM of a convolutional chain on a data set (see
    :func:`spatial_fisher_statistics`).

    Attributes
    ----------
    network : Serial
    width, n_samples, n_outputs : int
        ``M``, ``T`` (the inputs given), ``C``.
    parameterization : str
    matrix : str
        The matrix whose eigenvalues are described.
    n_params : int
        ``P``, the exact number of parameters at width ``M``.
    n_eigenvalues : float
        The count the mean and second moment divide by: ``P`` (standard) or ``C T`` (NTK parameterization).
    mean_eigenvalue, second_moment, lambda_max : float
        ``m_lambda``, ``s_lambda`` and the largest eigenvalue (``C``-fold).
    lambda_max_multiplicity : int
        ``C``.
    eta_critical : float
        ``2 / lambda_max(F)`` with ``F = J^T J / T``.
    layer_paths : tuple of str
        Path of each Conv / Dense layer (chain order, residual blocks included).
    layer_n_params : ndarray of int
    layer_mean_eigenvalue, layer_second_moment, layer_lambda_max : ndarray
        The same statistics for the diagonal blocks ``F_ll`` (one layer's weights and biases alone).
    ntk : ndarray (T, T)
        The infinite-width NTK ``Theta`` (one output) the statistics come from.
    """

    network: object
    width: int
    n_samples: int
    n_outputs: int
    parameterization: str
    matrix: str
    n_params: int
    n_eigenvalues: float
    mean_eigenvalue: float
    second_moment: float
    lambda_max: float
    lambda_max_multiplicity: int
    eta_critical: float
    layer_paths: tuple
    layer_n_params: np.ndarray
    layer_mean_eigenvalue: np.ndarray
    layer_second_moment: np.ndarray
    layer_lambda_max: np.ndarray
    ntk: np.ndarray

    __repr__ = short_repr

    def to_dict(self) -> dict:
        """Plain-Python dictionary (arrays as lists, the chain through its ``to_dict``)."""
        d = {}
        for fld in fields(self):
            v = getattr(self, fld.name)
            d[fld.name] = v.tolist() if isinstance(v, np.ndarray) else list(v) if isinstance(v, tuple) else v
        d["network"] = self.network.to_dict()
        return d


def _gram_statistics(theta, scale, n_eig, C):
    """``(m, s, lambda_max)`` of ``scale Theta (x) I_C`` over ``n_eig`` eigenvalues (the rest zero)."""
    ev = np.linalg.eigvalsh(theta)
    return (float(C * scale * np.trace(theta) / n_eig), float(C * scale * scale * np.sum(theta * theta) / n_eig),
            float(scale * ev[-1]))


def spatial_fisher_statistics(network: NetworkLike, x: ArrayLike, width: int, n_outputs: int = 1,
                              parameterization: str = "standard", *, rtol: float = 1e-14,
                              tile: Optional[int] = None) -> SpatialFisherStatistics:
    r"""Eigenvalue statistics of the empirical FIM of a wide convolutional chain on the data set ``x`` (MSE loss).

    With ``J`` the ``C T x P`` Jacobian of the ``C`` outputs on the ``T`` inputs with respect to the ``P`` parameters,
    ``F = J^T J / T`` and the Gram ``J J^T`` share their non-zero eigenvalues, and ``J J^T -> Theta (x) I_C`` at
    infinite width (``Theta`` the NTK of one output, :func:`meanfield.spatial.spatial_kernels`). Hence, exactly in
    ``Theta`` (Karakida, Akaho & Amari 2019, the FIM's mean ``m_lambda = Tr F / P`` and second moment
    ``s_lambda = Tr F^2 / P``, here on a given data set instead of their i.i.d. Gaussian inputs):

    * standard parameterization (``Theta`` grows like ``M``)::

        m_lambda = C Tr(Theta) / (T P),   s_lambda = C ||Theta||_F^2 / (T^2 P),   lambda_max = lambda_max(Theta) / T

      (``C``-fold), ``eta_c = 2 / lambda_max``;
    * NTK parameterization: the same statistics of the ``C T`` eigenvalues of ``J J^T`` (as
      :func:`meanfield.fisher_statistics`): ``m = Tr(Theta) / T``, ``s = ||Theta||_F^2 / T``,
      ``lambda_max = lambda_max(Theta)``, ``eta_c = 2 T / lambda_max``.

    ``P`` is the exact parameter count at width ``M`` (hidden layers ``round(width_ratio M)`` channels, the readout
    ``C``), not Karakida's leading ``alpha M^2``; for vector-like chains the two agree to ``O(1/M)``. The diagonal
    blocks ``F_ll`` (one layer's parameters) use that layer's NTK term (:attr:`SpatialTrace.ntk_terms`) and
    parameter count. A finite network's statistics deviate by a relative ``O(1/sqrt(M))`` (as in
    :func:`meanfield.fisher_statistics`; ``lambda_max`` is biased upwards at that order by the splitting of its
    ``C``-fold degeneracy).

    Parameters
    ----------
    network : Serial
        Convolutional chain ending in a Dense readout (after GlobalAvgPool or Flatten).
    x : array_like (T, H, W, C_0) or (T, L, C_0)
    width : int
        ``M``.
    n_outputs : int
        ``C``.
    parameterization : {"standard", "ntk"}
    rtol : float
    tile : int, optional
        As :func:`meanfield.spatial.spatial_kernels`.

    Returns
    -------
    SpatialFisherStatistics

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.layers import Dense, Nonlinearity, serial
    >>> from meanfield.spatial import Conv, GlobalAvgPool
    >>> net = serial(Conv(2.0, 0.1, (3, 3)), Nonlinearity("relu"), GlobalAvgPool(), Dense(1.0, 0.1))
    >>> x = np.random.default_rng(0).standard_normal((4, 5, 5, 3))
    >>> st = spatial_fisher_statistics(net, x, width=256, n_outputs=2)
    >>> st.n_params == 256 * 3 * 9 + 256 + 2 * 256 + 2
    True
    >>> bool(st.lambda_max > 10 * st.mean_eigenvalue)       # pathological sharpness (Karakida et al.)
    True
    """
    from .layers import Dense
    from .spatial import _check_images, _parameter_counts, _trace_arrays
    from .trace import _has_dropout, as_chain

    chain = as_chain(network)
    if not isinstance(chain.layers[-1], Dense):
        raise ValueError("network must end with a Dense layer, the linear readout")
    if _has_dropout(chain):
        raise ValueError("network must have no Dropout layer (keep < 1): the Fisher statistics are for networks "
                         "without dropout")
    M = check_int("width", width, 1)
    C = check_int("n_outputs", n_outputs, 1)
    if parameterization not in _PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {_PARAMETERIZATIONS}, got {parameterization!r}")
    X = _check_images("x", x)
    T = X.shape[0]
    every, _, theta, _, _, terms = _trace_arrays(chain, X, parameterization, float(M), rtol, tile, False)
    counts, _, _ = _parameter_counts(chain.layers, X.shape[1:-1], X.shape[-1], M, C)
    P = int(sum(counts))
    standard = parameterization == "standard"
    scale = 1.0 / T if standard else 1.0
    n_eig = float(P) if standard else float(C * T)
    m, s, lmax = _gram_statistics(theta, scale, n_eig, C)
    params = [nd for nd in every if id(nd) in terms]
    if len(params) != len(counts):       # pragma: no cover - the two walks of the chain disagree
        raise RuntimeError(f"{len(params)} parameter layers in the sweep, {len(counts)} counted")
    lay = [_gram_statistics(terms[id(nd)], scale, float(cnt) if standard else n_eig, C)
           for nd, cnt in zip(params, counts)]
    lmax_F = lmax if standard else lmax / T
    return SpatialFisherStatistics(
        network=chain, width=M, n_samples=T, n_outputs=C, parameterization=parameterization,
        matrix="F = J^T J / T (P x P)" if standard else "Theta = J J^T (CT x CT)", n_params=P, n_eigenvalues=n_eig,
        mean_eigenvalue=m, second_moment=s, lambda_max=lmax, lambda_max_multiplicity=C,
        eta_critical=float(2.0 / lmax_F) if lmax_F > 0 else np.inf,
        layer_paths=tuple(nd.path for nd in params), layer_n_params=np.array(counts, dtype=np.int64),
        layer_mean_eigenvalue=np.array([v[0] for v in lay]), layer_second_moment=np.array([v[1] for v in lay]),
        layer_lambda_max=np.array([v[2] for v in lay]), ntk=theta)
