r"""Infinite-width NNGP and NTK kernels of a fully connected network on a data set (docs/mathematics.md section 4).

For inputs ``x, x'`` (rows of ``x1``, ``x2``, dimension ``M_0``) the pre-activation covariance follows

.. math::

    q^1(x,x') = \sigma_{w,1}^2\, x\cdot x'/M_0 + \sigma_{b,1}^2,\qquad
    \hat q^l = E[\phi_l(u)\phi_l(v)],\qquad \dot q^l = E[\phi_l'(u)\phi_l'(v)],\qquad
    q^{l+1} = \sigma_{w,l+1}^2\,\hat q^l + \sigma_{b,l+1}^2,

with ``(u, v)`` centred Gaussian of covariance ``[[q^l(x,x), q^l(x,x')], [q^l(x,x'), q^l(x',x')]]``. The NNGP kernel is
``K = q^L`` (Lee et al. 2018). The NTK in the NTK parameterization (Jacot et al. 2018) is

.. math::

    \Theta^1 = q^1,\qquad \Theta^{l+1} = q^{l+1} + \sigma_{w,l+1}^2\,\dot q^l\,\Theta^l
    \quad\Big(= \textstyle\sum_{l=1}^L \tilde q^l q^l\Big),

and in the standard parameterization at width ``M`` (hidden widths ``M_l = alpha_l M``, every weight and bias a trained
parameter)

.. math::

    \Theta_{SP} = \sum_{l=1}^{L} \tilde q^l\,(M_{l-1}\hat q^{l-1} + 1),\qquad M_0 \hat q^0 = x\cdot x',

computed by the same recursion with ``q^{l+1}`` replaced by ``M_l \hat q^l + 1`` (``Theta_SP^1 = x.x' + 1``).
``tilde q^l`` is Karakida's back-propagated overlap (docs/mathematics.md section 3).

How the Gaussian pair expectations are computed, layer by layer:

* closed forms for relu / leaky_relu (arc-cosine kernel, Cho & Saul 2009), erf (Williams 1997) and linear;
* the Mehler (Hermite) expansion for smooth activations: with ``a_k(q) = E[\phi(\sqrt q z) He_k(z)]/\sqrt{k!}``,
  ``E[\phi(u)\phi(v)] = \sum_k a_k(q_u) a_k(q_v) c^k``, ``c = q_{uv}/\sqrt{q_u q_v}`` (likewise ``phi'``). The coefficients
  come from a Gauss-Hermite rule whose size is doubled until the Parseval remainder
  ``R_K(q) = E[f^2] - \sum_{k<K} a_k^2`` is below ``rtol * E[f^2]`` for every row; Cauchy-Schwarz bounds the
  truncation error of a pair by ``|c|^K sqrt(R_K(q_u) R_K(q_v))`` (reported per layer in :class:`KernelResult`);
* :func:`meanfield.quadrature.pair_expectation` for kinked activations without closed forms (hard_tanh, elu, selu,
  kinked custom activations), and for the rare pairs whose Mehler bound misses the tolerance.

The work is done tile by tile through all layers (a pair's recursion needs only per-row diagonal data), so the memory
beyond the output is ``O(tile_size^2 + n_rows * n_terms)`` per layer. Diagonal entries of a symmetric kernel
(``x2=None``) are set from the exact single-input length map, and the matrix is mirrored, so it is exactly symmetric.

Examples
--------
>>> import numpy as np
>>> from meanfield import Network
>>> from meanfield.kernels import kernels
>>> x = np.random.default_rng(0).standard_normal((5, 3))
>>> res = kernels(Network("tanh", depth=3, weight_var=1.5, bias_var=0.1), x)
>>> res.nngp.shape, bool(np.all(res.ntk == res.ntk.T))
((5, 5), True)
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.special

from . import _kernels_numba as _nk
from . import _quad_kernels as _qk
from ._checks import check_int, check_positive, check_finite_array
from .activations import Activation, act_eval
from .network import Network

__all__ = ["KernelResult", "kernels", "nngp_kernel", "ntk_kernel", "nngp_diagonal"]

_LINEAR, _RELU, _LEAKY, _ERF = "linear", "relu", "leaky_relu", "erf"
_N_NODES_MAX = 4096


# --------------------------------------------------------------------------------------------- Hermite coefficients
@functools.lru_cache(maxsize=16)
def _gauss_hermite(n: int):
    """Probabilists' Gauss-Hermite rule normalised to the standard normal: nodes, weights, sqrt(weights)."""
    z, w = scipy.special.roots_hermitenorm(n)
    w = w / math.sqrt(2.0 * math.pi)
    # nodes with sqrt(weight) < 1e-20 (|z| > ~13.6) change no coefficient of a polynomially bounded f by more than
    # ~1e-18 (|sqrt(w) He_k/sqrt(k!)| <= 1 by discrete orthonormality): drop them (most nodes of a large rule)
    keep = np.sqrt(w) > 1e-20
    z, w = z[keep], w[keep]
    return z, w, np.sqrt(w)


@functools.lru_cache(maxsize=16)
def _basis(n: int, n_terms: int):
    z, _, sw = _gauss_hermite(n)
    return _nk.hermite_basis(z, sw, n_terms)


def _evaluator(act: Activation):
    if act.evaluator is not None:
        return act.evaluator, -1, 0.0, 0.0
    return act_eval, int(act.code), float(act.params[0]), float(act.params[1])


def _coefficients(act, q, n, kt, order):
    ev, code, p0, p1 = _evaluator(act)
    z, w, sw = _gauss_hermite(n)
    F = _nk.eval_grid(ev, code, p0, p1, np.ascontiguousarray(np.outer(np.sqrt(q), z)), order)
    if not np.all(np.isfinite(F)):
        raise FloatingPointError(f"activation {act.name!r} is not finite on the Gauss-Hermite nodes "
                                 f"(variance up to {float(np.max(q)):.3g})")
    A = (F * sw) @ _basis(n, kt)
    E = (F * F) @ w
    return A, E


def _probe(act, q, order, rtol, n_start):
    """Smallest rule size n (doubling) and term count K with R_K <= rtol E for the variances ``q`` (a few rows)."""
    n = n_start
    while True:
        kt = n // 2
        A, E = _coefficients(act, q, n, kt, order)
        tail = np.cumsum((A * A)[:, ::-1], axis=1)[:, ::-1]      # tail[:, k] = sum_{k <= j < kt} a_j^2
        ok = tail <= rtol * E[:, None]
        first = np.argmax(ok, axis=1)
        good = ok.any(axis=1) & (first <= (3 * kt) // 4)
        if good.all():
            return n, max(int(first.max()), 1), True
        if n >= _N_NODES_MAX:
            return n, kt, False
        n *= 2


def hermite_table(act: Activation, q: np.ndarray, derivative: bool, rtol: float, n_start: int = 64):
    """Hermite coefficients ``a_k(q) = E[f(z) He_k(z)]/sqrt(k!)`` of ``f(z) = phi(sqrt(q) z)`` (or ``phi'``) per q.

    Returns ``(A, R, E, converged, n)``: ``A`` of shape (m, K); the Parseval remainders ``R_K = sum_{k>=K} a_k^2``
    (measured up to ``K + K/4``, where the coefficients have decayed), ``E = E[f^2]``; whether ``R_K <= rtol E`` held
    for every q within ``_N_NODES_MAX`` nodes; the rule size used.

    The rule size is found on the extreme variances (the spectrum widens with q: the strip of analyticity of
    ``phi(sqrt(q) z)`` narrows like ``1/sqrt(q)``), doubling until the computed spectrum has decayed below rtol within
    3/4 of the resolved range ``k < n/2``: the ``n``-node rule integrates ``f He_k`` exactly up to the polynomial
    approximation error of ``f`` of degree ``2n - 1 - k > n``, i.e. the same (already negligible) spectral tail.
    Every row is then checked; a failing row doubles the rule again.
    """
    order = 1 if derivative else 0
    qs = np.unique(np.array([q.min(), np.median(q), q.max()]))
    n, K, ok = _probe(act, qs, order, rtol, n_start)
    while True:
        kt = min(n // 2, K + K // 4 + 8)
        A, E = _coefficients(act, q, n, kt, order)
        tail = np.cumsum((A * A)[:, ::-1], axis=1)[:, ::-1]
        ok_rows = tail <= rtol * E[:, None]
        first = np.argmax(ok_rows, axis=1)
        good = ok_rows.any(axis=1)
        if good.all() or n >= _N_NODES_MAX:
            K = max(int(np.where(good, first, kt).max()), 1)
            R = tail[:, K] if K < kt else np.maximum(E - np.sum(A * A, axis=1), tail[:, -1])
            return np.ascontiguousarray(A[:, :K]), R, E, bool(good.all()), n
        n *= 2
        K = n // 2


# ------------------------------------------------------------------------------------------------ per-layer plan
def _route(act: Activation) -> str:
    if act.evaluator is None:
        if act.name == "linear":
            return _LINEAR
        if act.name in ("relu", "leaky_relu"):
            return _LEAKY
        if act.name == "erf":
            return _ERF
    return "mehler" if len(act.kinks) == 0 else "quadrature"


class _Layer:
    """Per-row data of one hidden layer: variance q, E[phi^2], E[phi'^2], and what the pair route needs."""

    def __init__(self, act: Activation, q: np.ndarray, want_dot: bool, rtol: float):
        self.act = act
        self.route = _route(act)
        self.q = q
        self.want_dot = want_dot
        self.rtol = rtol
        self.n_terms = (0, 0)
        self.bound = 0.0        # largest relative Mehler tail bound met (phi)
        self.bound_dot = 0.0    # same for phi'
        self.n_fallback = 0
        self.max_c_excess = 0.0
        self.fell_back = False
        r = self.route
        if r == _LINEAR:
            self.E2 = q.copy()
            self.D2 = np.ones_like(q)
        elif r == _LEAKY:
            a = float(act.params[0]) if act.name == "leaky_relu" else 0.0
            self.slope = a
            self.E2 = 0.5 * (1.0 + a * a) * q
            self.D2 = np.full_like(q, 0.5 * (1.0 + a * a))   # also at q = 0: the q -> 0 limit (mean of the one-sided slopes^2)
        elif r == _ERF:
            self.E2 = np.array([_qk.pair_closed(_qk.ERF, 0.0, v, v, v, 0) for v in q])
            self.D2 = np.array([_qk.pair_closed(_qk.ERF, 0.0, v, v, v, 1) for v in q])
        elif r == "mehler":
            qu, inv = np.unique(q, return_inverse=True)
            self.inv = inv.ravel()
            A, R, E, ok, n = hermite_table(act, qu, False, rtol)
            self.A, self.R, self.E = A, R, E
            self.E2 = E[self.inv]
            kd = 0
            if want_dot:
                D, RD, ED, okd, _ = hermite_table(act, qu, True, rtol, n_start=max(64, n // 2))
                self.D, self.RD, self.ED = D, RD, ED
                self.D2 = ED[self.inv]
                kd = D.shape[1]
                ok = ok and okd
            else:
                self.D2 = None
            self.n_terms = (A.shape[1], kd)
            # with every row converged, |c|^K sqrt(R_i R_j) / sqrt(E_i E_j) <= max_i R_i / E_i for all pairs
            self.row_bound = float(np.max(R / np.where(E > 0, E, 1.0)))
            self.row_bound_dot = float(np.max(RD / np.where(ED > 0, ED, 1.0))) if want_dot else 0.0
            if not ok:
                warnings.warn(f"Mehler expansion of {act.name!r} did not reach rtol={rtol:g} with "
                              f"{_N_NODES_MAX} Gauss-Hermite nodes (variance up to {float(qu.max()):.3g}); this layer "
                              "is computed by 2-D quadrature (meanfield.quadrature.pair_expectation) instead",
                              RuntimeWarning, stacklevel=4)
                self.route = "quadrature"
                self.fell_back = True
                self.n_terms = (0, 0)
                self.row_bound = self.row_bound_dot = 0.0
        if self.route == "quadrature":
            from .quadrature import pair_expectation
            # the single-input expectations E[phi(u)^2], E[phi'(u)^2] are the pair expectations at c = 1
            self.E2 = np.asarray(pair_expectation(act, q, q, q), dtype=np.float64)
            self.D2 = (np.asarray(pair_expectation(act, q, q, q, derivative=True), dtype=np.float64)
                       if want_dot else None)

    def pairs(self, Q: np.ndarray, ri: np.ndarray, rj: np.ndarray):
        """qhat, qdot (or None) on the tile of pairs (ri x rj) with current covariance tile Q."""
        qi, qj = self.q[ri], self.q[rj]
        r = self.route
        want_dot = self.want_dot
        if r == _LINEAR:
            return Q.copy(), (np.ones_like(Q) if want_dot else None)
        if r == _ERF:
            qhat = np.empty_like(Q)
            qdot = np.empty_like(Q)
            _nk.erf_tile(Q, qi, qj, qhat, qdot, want_dot)
            return qhat, (qdot if want_dot else None)
        if r == "quadrature":
            if self.fell_back:
                self.n_fallback += Q.size
            return self._quadrature(Q, qi, qj)
        C = np.empty_like(Q)
        excess = _nk.correlation_tile(Q, qi, qj, C)
        self.max_c_excess = max(self.max_c_excess, excess)
        if r == _LEAKY:
            qhat = np.empty_like(Q)
            qdot = np.empty_like(Q)
            _nk.leaky_relu_tile(Q, qi, qj, self.slope, qhat, qdot, want_dot)
            return qhat, (qdot if want_dot else None)
        # Mehler route
        ii, jj = self.inv[ri], self.inv[rj]
        qhat = np.empty_like(Q)
        _nk.mehler(C, self.A[ii], np.ascontiguousarray(self.A[jj].T), qhat)
        qdot = None
        if want_dot:
            qdot = np.empty_like(Q)
            _nk.mehler(C, self.D[ii], np.ascontiguousarray(self.D[jj].T), qdot)
        # every row converged (else the layer was routed to quadrature): for all pairs
        # |c|^K sqrt(R_i R_j) / sqrt(E_i E_j) <= max_i R_i / E_i
        self.bound = max(self.bound, self.row_bound)
        self.bound_dot = max(self.bound_dot, self.row_bound_dot)
        return qhat, qdot

    def _quadrature(self, Q, qi, qj):
        from .quadrature import pair_expectation
        qu = np.broadcast_to(qi[:, None], Q.shape)
        qv = np.broadcast_to(qj[None, :], Q.shape)
        qhat = np.asarray(pair_expectation(self.act, qu, qv, Q), dtype=np.float64)
        qdot = (np.asarray(pair_expectation(self.act, qu, qv, Q, derivative=True), dtype=np.float64)
                if self.want_dot else None)
        return qhat, qdot




# ------------------------------------------------------------------------------------------------------- result
@dataclass(frozen=True)
class KernelResult:
    """NNGP and NTK matrices of a network on a data set, with the numerical error budget.

    Attributes
    ----------
    nngp : ndarray, shape (n1, n2)
        ``K(x_i, x'_j) = q^L`` (Lee et al. 2018).
    ntk : ndarray or None
        ``Theta(x_i, x'_j)`` in the requested parameterization; None if not computed.
    parameterization : str
        ``"ntk"`` or ``"standard"``.
    width : float or None
        Width M of the standard parameterization.
    n_terms : tuple of (int, int)
        Per hidden layer, Mehler terms used for phi and phi' (0 for closed forms and direct quadrature).
    truncation_bound, truncation_bound_dot : tuple of float
        Per hidden layer, the largest Cauchy-Schwarz bound ``|c|^K sqrt(R_i R_j) / sqrt(E_i E_j)`` on the relative
        truncation error of ``qhat`` (``qdot``) met over all pairs (0 where no expansion is used).
    n_fallback : int
        Pairs x layers computed by 2-D quadrature because the Mehler expansion did not converge within 4096
        Gauss-Hermite nodes (very large variances; a RuntimeWarning says so).
    routes : tuple of str
        Per hidden layer: "linear", "leaky_relu", "erf", "mehler" or "quadrature".
    """

    nngp: np.ndarray
    ntk: Optional[np.ndarray]
    parameterization: str
    width: Optional[float]
    n_terms: tuple
    truncation_bound: tuple
    truncation_bound_dot: tuple
    n_fallback: int
    routes: tuple

    def to_dict(self) -> dict:
        return {
            "nngp": self.nngp.tolist(),
            "ntk": None if self.ntk is None else self.ntk.tolist(),
            "parameterization": self.parameterization,
            "width": self.width,
            "n_terms": [list(t) for t in self.n_terms],
            "truncation_bound": list(self.truncation_bound),
            "truncation_bound_dot": list(self.truncation_bound_dot),
            "n_fallback": self.n_fallback,
            "routes": list(self.routes),
        }


# ------------------------------------------------------------------------------------------------- validation
def _check_network(network) -> Network:
    if not isinstance(network, Network):
        raise TypeError(f"network must be a meanfield.Network, got {type(network).__name__}")
    return network


def _check_inputs(x1, x2, name1="x1"):
    x1 = check_finite_array(name1, x1)
    if x1.ndim != 2 or x1.shape[0] < 1 or x1.shape[1] < 1:
        raise ValueError(f"{name1} must be a 2-D array (n_points, input_dim) with n_points, input_dim >= 1, "
                         f"got shape {x1.shape}")
    if x2 is not None:
        x2 = check_finite_array("x2", x2)
        if x2.ndim != 2 or x2.shape[0] < 1 or x2.shape[1] != x1.shape[1]:
            raise ValueError(f"x2 must be a 2-D array (n_points, {x1.shape[1]}) matching x1's input dimension, "
                             f"got shape {x2.shape}")
    return np.ascontiguousarray(x1), (None if x2 is None else np.ascontiguousarray(x2))


# ---------------------------------------------------------------------------------------------------- driver
def _row_recursion(network: Network, X: np.ndarray, want_dot: bool, rtol: float, xname: str = "x1, x2"):
    """Single-input length map per row: ``q^1 = w_1 |x|^2/M_0 + b_1``, ``q^{l+1} = (w_{l+1}/rho) E[phi^2] + b_{l+1}``.

    Returns the per-layer row variances ``[q^1, ..., q^L]`` and the per-hidden-layer pair plans.
    """
    wv, bv, acts = network.weight_vars, network.bias_vars, network.activations
    rho = float(network.dropout_keep)
    norms = np.einsum("ij,ij->i", X, X)
    q = wv[0] * norms / X.shape[1] + bv[0]
    if not np.all(np.isfinite(q)):
        raise ValueError(f"{xname}: the first-layer variance weight_var |x|^2 / input_dim + bias_var overflowed "
                         "(inputs too large)")
    qrows = [q]
    layers = []
    for l in range(network.depth):
        lay = _Layer(acts[l], q, want_dot, rtol)
        layers.append(lay)
        q = (wv[l + 1] / rho) * lay.E2 + bv[l + 1]
        if not np.all(np.isfinite(q)):
            raise ValueError(f"{xname}: the variance q^{l + 2} overflowed (the inputs' squared norms times weight_var, "
                             "plus bias_var, are too large for this depth)")
        qrows.append(q)
    return qrows, layers


def nngp_diagonal(network: Network, x, rtol: float = 1e-14) -> np.ndarray:
    """Diagonal ``K(x_i, x_i) = q^L(x_i)`` of the NNGP (single-input length map per row; O(n) work).

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network
    >>> nngp_diagonal(Network("relu", depth=3, weight_var=2.0), np.ones((2, 4)))
    array([2., 2.])
    """
    network = _check_network(network)
    x, _ = _check_inputs(x, None, "x")
    return _row_recursion(network, x, False, check_positive("rtol", rtol, scalar=True), "x")[0][-1]


def kernels(network: Network, x1, x2=None, *, parameterization: str = "ntk", width: Optional[float] = None,
            compute_ntk: bool = True, rtol: float = 1e-14, tile_size: int = 512) -> KernelResult:
    r"""NNGP and NTK of ``network`` between the rows of ``x1`` and ``x2`` in one pass (shared work).

    Parameters
    ----------
    network : Network
        Activation(s), depth, per-layer ``weight_var`` / ``bias_var``; ``width_ratios`` enter the standard
        parameterization only; ``dropout_keep < 1`` is supported for the NNGP only (same-input map uses
        ``weight_var / rho``, so it acts on the diagonal of a symmetric kernel).
    x1 : array_like, shape (n1, M_0)
    x2 : array_like, shape (n2, M_0), optional
        ``None`` gives the symmetric kernel of ``x1`` with itself (upper triangle computed, then mirrored).
    parameterization : {"ntk", "standard"}
        NTK parameterization (width independent) or standard parameterization ``Theta_SP`` at width ``width``.
    width : float, optional
        Width M (required for ``"standard"``); hidden widths are ``alpha_l M``.
    compute_ntk : bool
        False skips the phi' expectations (NNGP only).
    rtol : float
        Target relative size of the Parseval remainder of the Mehler expansions (default 1e-14).
    tile_size : int
        Rows per tile, >= 8 (memory ~ a few tile_size^2 floats per array).

    Returns
    -------
    KernelResult

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network
    >>> x = np.eye(3)
    >>> r = kernels(Network("relu", depth=2, weight_var=2.0, bias_var=0.0), x)
    >>> float(r.nngp[0, 0])   # relu at weight_var = 2 preserves q = 2 |x|^2 / M_0
    0.6666666666666666
    """
    network = _check_network(network)
    x1, x2 = _check_inputs(x1, x2)
    if parameterization not in ("ntk", "standard"):
        raise ValueError(f"parameterization must be 'ntk' or 'standard', got {parameterization!r}")
    if parameterization == "standard":
        if width is None:
            raise ValueError("width must be given (> 0) for parameterization='standard'")
        width = check_positive("width", width, scalar=True)
    elif width is not None:
        width = check_positive("width", width, scalar=True)
    rtol = check_positive("rtol", rtol, scalar=True)
    if rtol < 1e-15 or rtol > 1e-3:
        raise ValueError(f"rtol must lie in [1e-15, 1e-3], got {rtol!r}")
    tile = check_int("tile_size", tile_size, 8)
    compute_ntk = bool(compute_ntk)
    rho = float(network.dropout_keep)
    if compute_ntk and rho < 1.0:
        raise ValueError("the NTK with dropout (dropout_keep < 1) is not implemented; use compute_ntk=False "
                         "or nngp_kernel")

    sym = x2 is None
    n1 = x1.shape[0]
    X = x1 if sym else np.vstack([x1, x2])
    n2 = n1 if sym else x2.shape[0]
    off2 = 0 if sym else n1
    dim = X.shape[1]
    wv, bv = network.weight_vars, network.bias_vars
    standard = parameterization == "standard"
    widths = [a * width for a in network.alphas] if standard else None

    from ._io import check_alloc  # size check before the (n1, n2) allocations (no raw MemoryError)

    check_alloc("x1, x2", 8.0 * n1 * n2 * (2 + compute_ntk), f"the {n1} x {n2} kernel matrices")
    qrows, layers = _row_recursion(network, X, compute_ntk, rtol)

    K = np.empty((n1, n2))
    T = np.empty((n1, n2)) if compute_ntk else None
    for i0 in range(0, n1, tile):
        ri = np.arange(i0, min(i0 + tile, n1))
        j_start = i0 if sym else 0
        for j0 in range(j_start, n2, tile):
            rj_out = np.arange(j0, min(j0 + tile, n2))
            rj = rj_out + off2
            diag = sym and i0 == j0
            G = X[ri] @ X[rj].T
            Q = wv[0] * G / dim + bv[0]
            if diag:
                np.fill_diagonal(Q, qrows[0][ri])
            Th = None
            if compute_ntk:
                Th = G + 1.0 if standard else Q.copy()
            for l, lay in enumerate(layers):
                qhat, qdot = lay.pairs(Q, ri, rj)
                if diag:
                    np.fill_diagonal(qhat, lay.E2[ri])
                    if qdot is not None:
                        np.fill_diagonal(qdot, lay.D2[ri])
                Qn = wv[l + 1] * qhat + bv[l + 1]
                if diag:
                    np.fill_diagonal(Qn, qrows[l + 1][ri])
                if compute_ntk:
                    direct = widths[l + 1] * qhat + 1.0 if standard else Qn
                    Th = direct + wv[l + 1] * qdot * Th
                Q = Qn
            if diag:
                iu = np.triu_indices(len(ri), 1)
                Q.T[iu] = Q[iu]
                if compute_ntk:
                    Th.T[iu] = Th[iu]
            K[ri[0]:ri[-1] + 1, rj_out[0]:rj_out[-1] + 1] = Q
            if compute_ntk:
                T[ri[0]:ri[-1] + 1, rj_out[0]:rj_out[-1] + 1] = Th
            if sym and not diag:
                K[rj_out[0]:rj_out[-1] + 1, ri[0]:ri[-1] + 1] = Q.T
                if compute_ntk:
                    T[rj_out[0]:rj_out[-1] + 1, ri[0]:ri[-1] + 1] = Th.T

    excess = max((lay.max_c_excess for lay in layers), default=0.0)
    if excess > 1e-8:
        warnings.warn(f"correlations exceeded 1 by up to {excess:.2e} and were clipped (inconsistent covariances)",
                      RuntimeWarning, stacklevel=2)
    if not np.all(np.isfinite(K)) or (compute_ntk and not np.all(np.isfinite(T))):
        raise ValueError("x1, x2: kernel entries are not finite (overflow); reduce the inputs' norms, weight_var or "
                         "depth")
    return KernelResult(
        nngp=K, ntk=T, parameterization=parameterization, width=width,
        n_terms=tuple(lay.n_terms for lay in layers),
        truncation_bound=tuple(lay.bound for lay in layers),
        truncation_bound_dot=tuple(lay.bound_dot for lay in layers),
        n_fallback=int(sum(lay.n_fallback for lay in layers)),
        routes=tuple(lay.route for lay in layers),
    )


def nngp_kernel(network: Network, x1, x2=None, **options) -> np.ndarray:
    r"""NNGP kernel ``K(x, x') = q^L(x, x')`` of ``network`` between the rows of ``x1`` and ``x2`` (Lee et al. 2018).

    ``q^1 = sigma_w^2 x.x'/M_0 + sigma_b^2``, ``q^{l+1} = sigma_w^2 E[phi(u)phi(v)] + sigma_b^2``; see
    :func:`kernels` for the options and the error control. ``x2=None`` gives an exactly symmetric matrix.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network
    >>> K = nngp_kernel(Network("erf", depth=4, weight_var=2.0, bias_var=0.1), np.eye(4))
    >>> bool(np.all(np.linalg.eigvalsh(K) > 0))
    True
    """
    return kernels(network, x1, x2, compute_ntk=False, **options).nngp


def ntk_kernel(network: Network, x1, x2=None, parameterization: str = "ntk", width: Optional[float] = None,
               **options) -> np.ndarray:
    r"""Neural tangent kernel of ``network`` between the rows of ``x1`` and ``x2`` (Jacot et al. 2018).

    NTK parameterization: ``Theta^{l+1} = q^{l+1} + sigma_w^2 qdot^l Theta^l``, ``Theta^1 = q^1``
    (``= sum_l qtilde^l q^l``). Standard parameterization at width M:
    ``Theta_SP = sum_l qtilde^l (M_{l-1} qhat^{l-1} + 1)`` with ``M_0 qhat^0 = x.x'``. See :func:`kernels`.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network
    >>> net = Network("relu", depth=1, weight_var=2.0, bias_var=0.0)
    >>> float(ntk_kernel(net, np.ones((1, 2)))[0, 0])   # q^1 = 2, Theta^2 = q^2 + 2 * (1/2) * q^1 = 4
    4.0
    """
    return kernels(network, x1, x2, parameterization=parameterization, width=width, **options).ntk
