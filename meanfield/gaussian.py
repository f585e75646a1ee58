r"""Gaussian expectations of activations: one- and two-dimensional, closed forms and compiled quadrature.

The compiled rule (see :mod:`meanfield._gaussian_kernels`) is composite 16-point Gauss-Legendre in the standard-normal
variable with panel edges at the activation's kinks and panel widths set by the activation's analyticity scale; it is
accurate to a few units of 1e-16 relative for every built-in activation and q from 1e-6 to 1e10 (tests compare with
mpmath at 30-50 digits). Two-dimensional expectations use closed forms where they exist (relu family: Cho & Saul
arc-cosine kernel; erf: Williams 1997; linear; sin: e^(-(q_u+q_v)/2) sinh(q_uv), and for sin' = cos the same with
cosh), the Mehler/Hermite expansion for smooth activations, and a nested rule
that splits at the kinks otherwise.

Mehler's formula. With a_k(f) = E[f(z) He_k(z)] / sqrt(k!) and corr(z1, z2) = c,

.. math:: E[f(z_1) g(z_2)] = \sum_{k \ge 0} a_k(f)\, a_k(g)\, c^k ,

so for u = sqrt(q_u) z1, v = sqrt(q_v) z2 all pair expectations follow from per-variance coefficient vectors. The
truncation error after K terms is bounded by sqrt(R_K(f) R_K(g)), R_K(f) = E[f^2] - sum_{k<K} a_k(f)^2 (Parseval).
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from typing import Callable, Optional, Sequence, Tuple, Union

    from ._typing import ActivationLike, ArrayLike, FloatOrArray, Pair

import copy

import functools
import math
import warnings

import numpy as np
import scipy.special
from numba.core.registry import CPUDispatcher

from . import _gaussian_kernels as _gk
from ._checks import as_float_array, check_nonneg, check_positive
from .activations import _check_kinks, Activation, get_activation

_N_NODES_MAX = 4096

__all__ = ["gaussian_expectation", "pair_expectation", "hermite_coefficients", "gaussian_rule", "mehler_terms",
           "PairPlan", "hermite_table", "mehler_rows"]


def _broadcast(*arrays):
    b = np.broadcast_arrays(*[np.asarray(a, dtype=np.float64) for a in arrays])
    shape = b[0].shape
    return shape, [np.ascontiguousarray(x.ravel()) for x in b]


def _shape_out(shape, flat):
    out = flat.reshape(shape)
    return float(out) if out.ndim == 0 else out


def gaussian_rule(q: ArrayLike, *, scale: float = 1.0, kinks: Sequence[float] = (), graded: bool = False) -> Pair:
    """Nodes ``z`` and weights ``w`` with ``sum(w * g(sqrt(q) * z)) ~= E[g(u)]``, u ~ N(0, q).

    Parameters
    ----------
    q : float
        Variance (>= 0).
    scale : float
        Length in u over which g varies (half-width of its strip of analyticity; ``inf`` for piecewise polynomials).
    kinks : sequence of float
        Points in u where g is not smooth; panels end there.
    graded : bool
        Allow panels to grow geometrically away from u = 0 (g's singularities lie on the imaginary axis).
    """
    q = check_nonneg("q", q, scalar=True)
    scale = as_float_array("scale", scale)
    if scale.ndim != 0 or not scale > 0:
        raise ValueError(f"scale must be a number > 0 (inf for a piecewise polynomial), got {scale!r}")
    if not isinstance(graded, (bool, np.bool_)):
        raise TypeError(f"graded must be True or False, got {graded!r}")
    kk = np.asarray(_check_kinks(kinks), dtype=np.float64)
    sc = -float(scale) if graded else float(scale)
    return _gk.rule_1d(kk, sc, q)


def _nodes_u(q, z, kinks):
    """u = sqrt(q) z; at q = 0 with a kink at 0 the one-sided points +-TINY, so that the rule gives the q -> 0 limit
    (the mean of g(0-) and g(0+)) instead of g(0)."""
    if q == 0 and any(float(k) == 0.0 for k in kinks):
        return np.copysign(_gk.TINY, z)
    return np.sqrt(q) * z


def gaussian_expectation(fn: Callable[[np.ndarray], np.ndarray], q: ArrayLike, *, scale: float = 1.0,
                         kinks: Sequence[float] = (), graded: bool = False,
                         return_error: bool = False) -> Union[FloatOrArray, Tuple[FloatOrArray, FloatOrArray]]:
    r"""E[fn(u)] for u ~ N(0, q), vectorised over ``q``.

    .. math:: E[g(u)] = \int Dz\, g(\sqrt{q} z)

    Parameters
    ----------
    fn : callable or str or Activation
        A numpy-vectorised callable, a numba scalar function, or an activation (then E[phi(u)] is computed).
    q : float or array_like
        Variance(s) >= 0.
    scale, kinks, graded
        Describe ``fn`` for the quadrature (see :func:`gaussian_rule`); ignored for an activation.
    return_error : bool
        Also return an error estimate: the difference from the same rule with half the panel width.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import gaussian_expectation
    >>> round(gaussian_expectation(lambda u: u**4, 2.0), 12)   # 3 q^2
    12.0
    """
    if isinstance(fn, str) or hasattr(fn, "kernel_args"):
        act = get_activation(fn)
        scale, kinks, graded = act.scale, act.kinks, act.graded
        fn = act.phi
    if not callable(fn):
        raise TypeError("fn must be callable (numpy-vectorised or a numba scalar function) or an activation")
    kinks = _check_kinks(kinks)   # a number is one kink; TypeError / ValueError naming kinks otherwise
    qa = check_nonneg("q", q)
    qa = np.atleast_1d(np.asarray(qa, dtype=np.float64))
    if isinstance(fn, CPUDispatcher):
        f = np.vectorize(fn, otypes=[np.float64])
    else:
        f = fn
    vals = np.empty(qa.size)
    errs = np.empty(qa.size)

    def values(qi, z):
        g = np.asarray(f(_nodes_u(qi, z, kinks)), dtype=np.float64)
        if qi == 0 and np.ndim(g) == 1 and g.size == z.size and any(float(k) == 0.0 for k in kinks):
            # one-sided values within 1e-280 of g(0) are g(0): a function continuous at the kink (relu) gives its
            # value there exactly, not g(+-1e-300) (relu: 5e-301); a real jump keeps the mean of the two sides
            g0 = float(np.asarray(f(np.zeros(1)), dtype=np.float64).ravel()[0])
            g = np.where(np.abs(g - g0) <= 1e-280 * (1.0 + abs(g0)), g0, g)
        return g

    for i, qi in enumerate(qa.ravel()):
        z, w = gaussian_rule(qi, scale=scale, kinks=kinks, graded=graded)
        vals[i] = np.dot(w, values(qi, z))
        if return_error:
            z2, w2 = gaussian_rule(qi, scale=scale / 2, kinks=kinks, graded=graded)
            errs[i] = abs(np.dot(w2, values(qi, z2)) - vals[i])
    shape = np.shape(q)
    out = _shape_out(shape, vals)
    if return_error:
        return out, _shape_out(shape, errs)
    return out


def pair_expectation(activation: ActivationLike, q_u: ArrayLike, q_v: ArrayLike, q_uv: ArrayLike,
                     derivative: bool = False) -> FloatOrArray:
    r"""E[phi(u) phi(v)] (or E[phi'(u) phi'(v)]) for (u, v) ~ N(0, [[q_u, q_uv], [q_uv, q_v]]), broadcasting.

    Closed forms for relu, leaky_relu, erf and linear; otherwise the nested compiled rule (about 1e-15 relative; kinks
    handled by panel splitting, including the boundary layer as |c| -> 1).

    Parameters
    ----------
    activation : str or Activation
    q_u, q_v : array_like
        Variances (>= 0).
    q_uv : array_like
        Covariance, with q_uv^2 <= q_u q_v.
    derivative : bool
        If True return E[phi'(u) phi'(v)].

    Examples
    --------
    >>> from meanfield import pair_expectation
    >>> round(pair_expectation("relu", 1.0, 1.0, 0.0), 12)   # 1/(2 pi)
    0.159154943092
    """
    act = get_activation(activation)
    shape, (qu, qv, quv) = _broadcast(check_nonneg("q_u", q_u), check_nonneg("q_v", q_v),
                                      as_float_array("q_uv", q_uv))
    if not np.all(np.isfinite(quv)):
        raise ValueError("q_uv must be finite")
    if np.any(np.abs(quv) > np.sqrt(qu) * np.sqrt(qv) * (1 + 5e-13) + 1e-300):   # no overflow for q up to 1e308
        raise ValueError("q_uv must satisfy q_uv^2 <= q_u q_v (a covariance matrix must be positive semi-definite)")
    out = _gk.pair_expect_many(*act.kernel_args, qu, qv, quv, 1 if derivative else 0)
    return _shape_out(shape, out)


def _check_rtol(rtol):
    rtol = check_positive("rtol", rtol, scalar=True)
    if not 1e-16 <= rtol <= 1e-3:
        raise ValueError(f"rtol must lie in [1e-16, 1e-3], got {rtol!r}")
    return rtol


def mehler_terms(activation: ActivationLike, q: float, *, rtol: float = 1e-16) -> int:
    """Number of Hermite terms :func:`hermite_table` keeps for ``phi(sqrt(q) z)`` and ``phi'(sqrt(q) z)`` (the larger):
    the first K whose Parseval tail ``sum_{k>=K} a_k^2`` is below ``rtol E[f^2]`` (for activations with kinks the spectrum decays only algebraically
    and the count reaches the cap, 2048, before that: see :func:`hermite_coefficients`).

    Where the spectrum provably extends beyond the cap (a Cauchy-Schwarz bound from ``E[phi^2]``, ``E[phi'^2]``,
    ``E[phi''^2]`` shows a tail above ``2e-3 E[f^2]`` from term 1537 on; e.g. sin at q > ~1600, whose spectrum is
    Poisson(q)), the cap is returned at once with a ``RuntimeWarning`` instead of building the table.

    Examples
    --------
    >>> from meanfield import mehler_terms
    >>> 100 < mehler_terms("tanh", 1.0) < 400
    True
    """
    act = get_activation(activation)
    q = check_nonneg("q", q, scalar=True)
    rtol = _check_rtol(rtol)
    beyond, mean_index = _beyond_table(act, np.array([q]))
    if beyond[0]:
        warnings.warn(f"the Hermite spectrum of {act.name}(sqrt(q) z) at q = {q:.6g} extends beyond the {_K_CAP}-term "
                      f"table (its mean index q E[phi'^2] / E[phi^2] is {mean_index[0]:.4g}): no truncation meets "
                      f"rtol = {rtol:g}; returning the cap {_K_CAP}", RuntimeWarning, stacklevel=2)
        return _K_CAP
    return max(int(hermite_table(act, np.array([q]), d, rtol, rule="composite")[0].shape[1]) for d in (False, True))


_K_CAP = _N_NODES_MAX // 2      # the largest Hermite table (terms)
_N_TERMS_MAX = 10_000           # hermite_coefficients(n_terms=...): beyond, the composite rule alone costs seconds
_COEF_WORK_MAX = 2e8            # node x term products of one hermite_coefficients call (~2 s at ~10 ns each)


def _composite_nodes(act: Activation, q: np.ndarray, n_terms: int) -> np.ndarray:
    """Upper estimate of the node count of ``_gaussian_kernels.hermite_coeffs``' composite rule per variance (its
    panel widths, see ``_next_width``: ``min(12/sqrt(2 n_terms + 1), 1, scale/sqrt(q))``, floored at ``HMIN`` unless
    graded; graded rules widen geometrically away from the centre up to the oscillation width, so their extra
    panels grow like ``log(sqrt(q))``); 16 nodes per panel, one more panel per kink."""
    hosc = min(1.0, 12.0 / math.sqrt(2.0 * n_terms + 1.0))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        fine = np.where(np.asarray(q) > 0, act.scale / np.sqrt(q), np.inf)
        if act.graded:
            panels = 2 * _gk.ZMAX_COEF / hosc + 2 * np.log2(np.maximum(hosc / fine, 1.0)) / math.log2(1 + _gk.GRADE) + 4
        else:
            panels = 2 * _gk.ZMAX_COEF / np.maximum(np.minimum(hosc, fine), _gk.HMIN) + 1
    return _gk.NGL * (panels + len(act.kinks))


def _beyond_table(act: Activation, q: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    r"""Where the Hermite spectrum of ``f(z) = phi(sqrt(q) z)`` provably extends beyond the capped table, so that no
    table of :func:`hermite_table` (at most ``_K_CAP`` terms, converged only with ``K <= 3/4`` of them) can meet any
    allowed ``rtol`` (``<= 1e-3``); and the mean spectral index ``M``. Three 1-D integrals per q, no table.

    With ``E_j = E[phi^{(j)}(u)^2]``, u ~ N(0, q), and ``a_k`` the normalised Hermite coefficients of f,
    ``sum_k a_k^2 = E_0``, ``sum_k k a_k^2 = E[f'^2] = q E_1`` and ``sum_k k(k-1) a_k^2 = E[f''^2] = q^2 E_2``
    (Parseval for ``f^{(j)}``, whose coefficients are ``sqrt(k!/(k-j)!) a_k``). Split the first moment at K:
    ``sum_{k<K} k a_k^2 <= K E_0``, and by Cauchy-Schwarz ``sum_{k>=K} k a_k^2 <= sqrt(T_K S_2)`` with
    ``T_K = sum_{k>=K} a_k^2`` and ``S_2 = sum k^2 a_k^2 = q^2 E_2 + q E_1``. Hence, with ``M = q E_1 / E_0 > K``,

    ``T_K / E_0 >= (M - K)^2 E_0 / S_2 = (1 - K/M)^2 E_1^2 / (E_0 (E_2 + E_1/q))``.

    The identities need ``f''`` square integrable: activations with kinks are never declared beyond (their
    tables are cheap: graded or piecewise-polynomial rules). The bound is tested at ``K = 3 K_cap / 4 + 1``: it also covers the table of phi' (its coefficients are
    ``sqrt((k+1)/q) a_{k+1}``, a reweighting by an increasing factor, which moves relative mass to larger k, so its
    relative tail from ``K - 1`` is at least f's from K). ``beyond`` where the bound exceeds ``2e-3``, twice the largest
    rtol (so that the quadrature errors of the ``E_j``, ~1e-12 relative, cannot decide it). Example: sin, whose
    spectrum at variance q is Poisson(q) (``a_k^2 = e^{-q} q^k / k!`` on odd k), is beyond from q ~ 1600 on, where
    the table's composite rule would need up to ~5e5 nodes (20 s) to conclude the same.
    """
    q = np.ascontiguousarray(q, dtype=np.float64).ravel()
    ok = np.isfinite(q) & (q > 0)
    beyond = np.zeros(q.size, dtype=bool)
    mean_index = np.zeros(q.size)
    if act.kinks or not ok.any():     # a kink in phi or phi' puts a delta into f'': E[f''^2] = inf, no bound
        return beyond, mean_index
    qo = np.ascontiguousarray(q[ok])
    e0, e1, e2 = (_gk.e1d_many(*act.kernel_args, qo, j, j, 0) for j in (0, 1, 2))
    kb = 3 * _K_CAP // 4 + 1
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        m = qo * e1 / e0
        bound = (1.0 - kb / m) ** 2 * e1 * e1 / (e0 * (e2 + e1 / qo))
    good = (e0 > 0) & np.isfinite(m) & np.isfinite(bound)
    beyond[ok] = good & (m > kb) & (bound > 2e-3)
    mean_index[ok] = np.where(good, m, 0.0)
    return beyond, mean_index


def hermite_coefficients(activation: ActivationLike, q: float, n_terms: Optional[int] = None, derivative: bool = False,
                         *, rtol: float = 1e-16) -> np.ndarray:
    r"""Normalised Hermite coefficients a_k = E[f(z) He_k(z)] / sqrt(k!), f(z) = phi(sqrt(q) z) (or phi').

    Mehler's formula then gives every pair expectation: ``E[f(z_1) g(z_2)] = sum_k a_k(f) a_k(g) c^k``. Computed by
    :func:`hermite_table` (the library's one Hermite algorithm) on its composite rule (kink-aware Gauss-Legendre panels,
    ~1e-17), the number of terms chosen from the Parseval remainder.

    Parameters
    ----------
    activation : str or Activation
    q : float or array_like
        Variance(s) >= 0.
    n_terms : int, optional
        Number of coefficients, at most 10000 (and at most ~2e8 / n_terms composite-rule nodes in all, e.g. ~450
        terms for sin at q >= 1e6, where the rule needs ~4.5e5 nodes); default: as many as the Parseval tail needs to
        fall below ``rtol E[f^2]`` at every q (see :func:`mehler_terms`; a ValueError where the spectrum provably
        extends beyond the 2048-term cap, e.g. sin at q > ~1600, whose spectrum is Poisson(q)).
    derivative : bool
        Coefficients of phi'(sqrt(q) z) instead.
    rtol : float
        Relative Parseval tail aimed at when ``n_terms`` is not given (``[1e-16, 1e-3]``).

    Returns
    -------
    ndarray, shape ``np.shape(q) + (n_terms,)``

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import hermite_coefficients, pair_expectation
    >>> a = hermite_coefficients("tanh", 1.0)
    >>> bool(abs(np.polyval(a[::-1] ** 2, 0.3) - pair_expectation("tanh", 1.0, 1.0, 0.3)) < 1e-14)
    True
    """
    act = get_activation(activation)
    qa = np.atleast_1d(np.asarray(check_nonneg("q", q), dtype=np.float64))
    rtol = _check_rtol(rtol)
    order = 1 if derivative else 0
    flat = np.ascontiguousarray(qa.ravel())
    if n_terms is None:
        beyond, mean_index = _beyond_table(act, flat)
        if beyond.any():
            i = int(np.argmax(beyond))
            raise ValueError(f"q: the Hermite spectrum of {act.name}(sqrt(q) z) at q = {flat[i]:.6g} extends beyond the "
                             f"{_K_CAP} terms of the table (mean index q E[phi'^2] / E[phi^2] = {mean_index[i]:.4g}), so "
                             f"no truncation meets rtol = {rtol:g}: pass n_terms for the leading coefficients, or a "
                             "smaller q")
        A = hermite_table(act, flat, derivative, rtol, rule="composite")[0]
        return A.reshape(np.shape(q) + (A.shape[1],))
    if isinstance(n_terms, bool) or not isinstance(n_terms, (int, np.integer)) or not 1 <= n_terms <= _N_TERMS_MAX:
        raise ValueError(f"n_terms must be an integer in [1, {_N_TERMS_MAX}], got {n_terms!r}")
    n_terms = int(n_terms)
    work = float(np.sum(_composite_nodes(act, flat, n_terms))) * n_terms
    if work > _COEF_WORK_MAX:
        raise ValueError(f"n_terms, q: {n_terms} coefficients at variance up to {float(np.max(flat)):.4g} need ~{work:.2g} "
                         f"node-term products of the composite rule (limit {_COEF_WORK_MAX:.0e}, a few seconds): "
                         "ask for fewer terms or variances")
    return _coefficients(act, flat, 2 * n_terms, n_terms, order, True)[0].reshape(np.shape(q) + (n_terms,))


def mehler_rows(act: Activation, q: np.ndarray, need: np.ndarray, rtol: float):
    """Hermite tables of phi and phi' at the distinct variances ``q[need]`` for the compiled correlation-map kernels:
    ``(rows, A, B, EA, EB)`` with ``A[rows[i]]``, ``B[rows[i]]`` the coefficients at ``q[i]`` and ``EA``, ``EB`` the
    ``E[phi^2]``, ``E[phi'^2]`` of the same quadrature rule (``rows[i] = -1`` where not needed or not a smooth activation
    without closed forms: those use closed forms or the nested quadrature). The series' truncation test
    (``_maps_kernels.mehler_cmax``) compares the coefficients with the E of their own rule: by discrete Parseval the
    difference is then the dropped tail alone, not the rule's error (~1e-14 for Gauss-Hermite)."""
    rows = np.full(q.size, -1, dtype=np.int64)
    empty = np.zeros((0, 1))
    none = np.zeros(0)
    if act.closed_form or not act.smooth:
        return rows, empty, empty, none, none
    need = need & np.isfinite(q) & (q > 0)
    if not need.any():
        return rows, empty, empty, none, none
    qu, inv = np.unique(q[need], return_inverse=True)
    rows[need] = inv.ravel()
    A, _, EA = hermite_table(act, qu, False, rtol, rule="per_row")[:3]
    B, _, EB = hermite_table(act, qu, True, rtol, rule="per_row")[:3]
    return rows, np.ascontiguousarray(A), np.ascontiguousarray(B), EA, EB


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
    return _gk.hermite_basis(z, sw, n_terms)


def _coefficients(act, q, n, kt, order, composite=False, rowwise=True):
    """``(A, E)``: the first ``kt`` coefficients and ``E[f^2]`` per variance. Smooth activations: the ``n``-node
    Gauss-Hermite rule through the Hermite basis; with kinks (or ``composite``): the kink-aware composite rule (``n``
    unused), where a Gauss-Hermite rule would converge only algebraically (relu at n = 4096: 4e-5) or not resolve
    phi(sqrt(q) z) at all (gelu at q = 795: 2e-9). ``rowwise``: each row summed on its own (bit for bit independent
    of the batch) instead of one BLAS product."""
    ev, code, p0, p1 = act.kernel_args[:4]
    if composite or not act.smooth:
        qc = np.ascontiguousarray(q, dtype=np.float64)
        return _gk.hermite_coeffs_many(*act.kernel_args, qc, kt, order), _gk.mean_sq_many(*act.kernel_args, qc, order)
    z, w, sw = _gauss_hermite(n)
    F = _gk.eval_grid(ev, code, p0, p1, np.ascontiguousarray(np.outer(np.sqrt(q), z)), order)
    if not np.all(np.isfinite(F)):
        raise FloatingPointError(f"activation {act.name!r} is not finite on the Gauss-Hermite nodes "
                                 f"(variance up to {float(np.max(q)):.3g})")
    if rowwise:
        return _gk.hermite_project(F, w, sw, _basis(n, kt))
    # one matrix product (BLAS): a row's last bits may then depend on the batch (blocking), which the shared rule of
    # the kernels allows and the per-row schemes do not
    return (F * sw) @ _basis(n, kt), (F * F) @ w


def hermite_table(act: Activation, q: np.ndarray, derivative: bool, rtol: float, n_start: int = 64,
                  rule: str = "shared"):
    """Hermite coefficients ``a_k(q) = E[f(z) He_k(z)]/sqrt(k!)`` of ``f(z) = phi(sqrt(q) z)`` (or ``phi'``) per q: the
    library's one Hermite algorithm (the kernels' pair plans, the correlation map and :func:`hermite_coefficients` use
    it).

    Returns ``(A, R, E, converged, n)``: ``A`` of shape (m, K), row i holding its own ``K_i <= K`` coefficients and
    zeros after; the Parseval remainders ``R_i = sum_{k>=K_i} a_k^2`` (measured up to the rule's resolved range, where
    the coefficients have decayed, or ``E - sum a_k^2`` where they have not); ``E = E[f^2]``; whether
    ``R_i <= rtol E_i`` held for every q within ``_N_NODES_MAX`` nodes; the largest rule size used.

    Two rules for the coefficient integrals: the ``n``-node Gauss-Hermite rule (fast and batched through one Hermite
    basis, with an absolute floor of ~5e-15 from the rule's weights) and the kink-aware composite Gauss-Legendre rule
    of ``_gaussian_kernels.hermite_coeffs`` (~1e-17; slower: its recurrence runs node by node). ``rule`` picks how
    they are used:

    * ``"shared"`` (the kernels): one Gauss-Hermite rule for all rows (smooth activations), sized on the extreme
      variances; rows it does not resolve, and activations with kinks, get the composite rule.
    * ``"per_row"`` (the correlation map and fixed points): each row on its own; smooth activations climb
      Gauss-Hermite rules from ``n_start`` up to twice the size the strip of analyticity predicts (below
      ``_N_NODES_MAX``), then take the composite rule (measured against the composite rule: C(c) = sum a_k^2 c^k
      agrees to <= 6e-14 relative for tanh, gelu, sigmoid and mish up to q = 50); kinks take the composite rule.
    * ``"composite"`` (:func:`hermite_coefficients`, :func:`mehler_terms`): each row on its own, composite rule only.

    In the per-row schemes each variance is treated on its own (so its coefficients do not depend on the other rows,
    and a grid computed in pieces is bit for bit the grid computed at once): the rule size ``n``
    (Gauss-Hermite nodes for smooth activations; for activations with kinks, the kink-aware composite rule with
    ``n/2`` terms) doubles from ``n_start`` until the computed spectrum has decayed below ``rtol E`` within 3/4 of
    the resolved range ``k < n/2``, and ``K_i`` is the first index where it has. An ``n``-node Gauss-Hermite rule
    integrates ``f He_k`` exactly up to the polynomial approximation error of ``f`` of degree ``2n - 1 - k > n``,
    i.e. the same (already negligible) spectral tail. The spectrum widens with q (the strip of analyticity of
    ``phi(sqrt(q) z)`` narrows like ``1/sqrt(q)``), so large variances need larger rules.
    """
    order = 1 if derivative else 0
    q = np.ascontiguousarray(q, dtype=np.float64).ravel()
    if rule not in ("shared", "per_row", "composite"):
        raise ValueError(f"rule must be 'shared', 'per_row' or 'composite', got {rule!r}")
    if act.smooth and rule == "shared":
        return _hermite_table_shared(act, q, order, rtol, n_start)
    m = q.size
    rows = [None] * m
    R = np.empty(m)
    E = np.empty(m)
    conv = np.ones(m, dtype=bool)
    # each row starts at its own size, from the strip of analyticity of phi(sqrt(q) z) (half-width d = scale/sqrt(q):
    # the coefficients decay like exp(-d sqrt(2k)), so ~ 450/d^2 terms reach 1e-17), and doubles while it fails
    with np.errstate(divide="ignore", over="ignore"):
        guess = np.where(np.isfinite(act.scale), 450.0 * q / act.scale ** 2 + 30.0, n_start / 2)
    # (in multiples of 64, so that rows of similar variance share a compiled batch; a row's size depends on its q only)
    n_guess = (64 * np.ceil(np.minimum(2.0 * guess, _N_NODES_MAX) / 64)).astype(np.int64)
    n_guess = np.clip(n_guess, n_start, _N_NODES_MAX)
    # per_row: smooth activations climb Gauss-Hermite rules from n_start (cheap, and the strip estimate is far too
    # pessimistic for entire functions such as gelu) and switch to the composite rule at the strip estimate's size
    gh = np.full(m, rule == "per_row" and act.smooth)
    n_row = np.where(gh, n_start, n_guess)
    pending = np.arange(m)
    n_used = int(n_row.max()) if m else n_start
    while pending.size:
        n = int(n_row[pending].min())
        gauss_hermite = bool(gh[pending][n_row[pending] == n].any())
        sel = pending[(n_row[pending] == n) & (gh[pending] == gauss_hermite)]
        kt = n // 2
        A, Ep = _coefficients(act, q[sel], n, kt, order, not gauss_hermite)
        tail = _tails(A)
        first, good = _first_below(tail, Ep, rtol, kt)
        done = good | ((n >= _N_NODES_MAX) & (not gauss_hermite))
        for j in np.flatnonzero(done):
            i = sel[j]
            K = max(int(first[j]), 1) if good[j] else kt
            rows[i] = A[j, :K]
            R[i] = tail[j, K] if K < kt else max(Ep[j] - float(np.sum(A[j] * A[j])), tail[j, -1])
            E[i] = Ep[j]
            conv[i] = bool(good[j])
        failed = sel[~done]
        if gauss_hermite:
            # Gauss-Hermite up to twice the strip estimate's size (phi' needs ~1.4 times phi's terms) and below
            # _N_NODES_MAX, then the composite rule at that size
            cap = np.minimum(2 * n_guess[failed], _N_NODES_MAX - 64)
            to_composite = failed[n_row[failed] >= cap]
            n_row[failed] = np.minimum(2 * n_row[failed], cap)
            gh[to_composite] = False
            n_row[to_composite] = np.minimum(2 * n_guess[to_composite], _N_NODES_MAX)
        else:
            n_row[failed] *= 2
        n_used = max(n_used, n)
        pending = np.setdiff1d(pending, sel[done], assume_unique=True)
    K = max(r.size for r in rows) if m else 1
    out = np.zeros((m, K))
    for i, r in enumerate(rows):
        out[i, :r.size] = r
    return out, R, E, bool(conv.all()), n_used


def _tails(A):
    """``tail[:, k] = sum_{k <= j < kt} a_j^2`` (the measured Parseval tails)."""
    return np.cumsum((A * A)[:, ::-1], axis=1)[:, ::-1]


def _first_below(tail, E, rtol, kt):
    """First k with ``tail[:, k] <= rtol E`` per row, and whether it lies within 3/4 of the resolved range and the
    table holds the spectrum's mass (Parseval closure ``sum_{k<kt} a_k^2 >= (1 - 1e-6) E``). Without the closure a
    spectrum lying wholly beyond the table passed as converged after one term: sin at q = 1e4 (Poisson(q) spectrum,
    every a_k with k < 2048 below 1e-16) gave ``mehler_terms = 1`` and a tail of 1e-31 against E = 0.5. A table that
    converged holds its mass to the rules' accuracy (~1e-14 relative), far inside the 1e-6 tolerance."""
    ok = tail <= rtol * E[:, None]
    first = np.argmax(ok, axis=1)
    closed = tail[:, 0] >= (1.0 - 1e-6) * E
    return first, ok.any(axis=1) & (first <= (3 * kt) // 4) & closed


def _hermite_table_shared(act, q, order, rtol, n_start):
    """The Gauss-Hermite scheme of :func:`hermite_table`: one rule for all rows, its size found on the extreme
    variances (the spectrum widens with q), then every row checked and the rule doubled while a row fails; rows the
    largest rule does not resolve get the composite rule's coefficients."""
    qs = np.unique(np.array([q.min(), np.median(q), q.max()]))
    n = n_start
    while True:                                   # probe: smallest n resolving the extreme variances
        kt = n // 2
        A, E = _coefficients(act, qs, n, kt, order, rowwise=False)
        first, good = _first_below(_tails(A), E, rtol, kt)
        if good.all() or n >= _N_NODES_MAX:
            K = max(int(first.max()), 1) if good.all() else kt
            break
        n *= 2
    while True:
        kt = min(n // 2, K + K // 4 + 8)
        A, E = _coefficients(act, q, n, kt, order, rowwise=False)
        tail = _tails(A)
        ok_rows = tail <= rtol * E[:, None]
        first = np.argmax(ok_rows, axis=1)
        good = ok_rows.any(axis=1)
        if good.all() or n >= _N_NODES_MAX:
            if not good.all():
                bad = ~good
                A[bad], E[bad] = _coefficients(act, q[bad], n, kt, order, True)
                tail[bad] = _tails(A[bad])
            K = max(int(np.where(good, first, kt).max()), 1)
            R = tail[:, K] if K < kt else np.maximum(E - np.sum(A * A, axis=1), tail[:, -1])
            return np.ascontiguousarray(A[:, :K]), R, E, bool(good.all()), n
        n *= 2
        K = n // 2


# ------------------------------------------------------------------------------------------------ pair plans
def _route(act: Activation) -> str:
    """How the pairs of one layer are computed: closed forms (table flag ``closed_form``), the Mehler series for
    smooth activations, nested 2-D quadrature for the rest (kinks make the Hermite spectrum decay slowly)."""
    if act.closed_form:
        return "closed"
    return "mehler" if act.smooth else "quadrature"


class PairPlan:
    """Per-row data for the Gaussian pair expectations of one activation over a set of inputs (rows).

    Built once per layer from the rows' variances ``q`` (shape (n,)); then :meth:`pairs` gives
    ``qhat = E[phi(u) phi(v)]`` and ``qdot = E[phi'(u) phi'(v)]`` on any tile of row pairs from their covariances.
    ``E2 = E[phi(u)^2]`` and ``D2 = E[phi'(u)^2]`` per row are the tile diagonals. Routes: ``"closed"`` (relu family,
    erf, linear: the scalar closed forms of ``_gaussian_kernels.pair_closed``), ``"mehler"`` (smooth activations:
    Hermite coefficients per distinct variance from :func:`hermite_table`, truncated where the Parseval remainder is
    below ``rtol`` relative, so that the relative truncation error of every pair is below ``rtol``), ``"quadrature"``
    (kinked activations without closed forms, and Mehler layers that did not converge: the nested 2-D rule).

    Attributes ``n_terms``, ``bound``, ``bound_dot``, ``n_fallback``, ``max_c_excess`` report the numerical budget.
    """

    def __init__(self, act: Activation, q: np.ndarray, want_dot: bool, rtol: float):
        self.act = act
        self.route = _route(act)
        self.label = act.name if self.route == "closed" else self.route
        self.q = q
        self.want_dot = want_dot
        self.rtol = rtol
        self.n_terms = (0, 0)
        self.bound = 0.0        # largest relative Mehler tail bound met (phi)
        self.bound_dot = 0.0    # same for phi'
        self.n_fallback = 0
        self.max_c_excess = 0.0
        self.fell_back = False
        if self.route == "mehler":
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
                              "is computed by 2-D quadrature (meanfield.pair_expectation) instead",
                              RuntimeWarning, stacklevel=4)
                self.route = self.label = "quadrature"
                self.fell_back = True
                self.n_terms = (0, 0)
                self.row_bound = self.row_bound_dot = 0.0
        if self.route != "mehler":
            # the single-input expectations E[phi(u)^2], E[phi'(u)^2]: closed forms or the 1-D rule
            args = act.kernel_args
            qc = np.ascontiguousarray(q, dtype=np.float64)
            self.E2 = _gk.mean_sq_many(*args, qc, 0)
            self.D2 = _gk.mean_sq_many(*args, qc, 1) if want_dot else None

    def pairs(self, Q: np.ndarray, ri: np.ndarray, rj: np.ndarray):
        """qhat, qdot (or None) on the tile of pairs (ri x rj) with current covariance tile Q."""
        qi, qj = self.q[ri], self.q[rj]
        want_dot = self.want_dot
        if self.route == "quadrature":
            if self.fell_back:
                self.n_fallback += Q.size
            return self._quadrature(Q, qi, qj)
        C = np.empty_like(Q)
        excess = _gk.correlation_tile(Q, qi, qj, C)
        self.max_c_excess = max(self.max_c_excess, excess)
        if self.route == "closed":
            qhat = np.empty_like(Q)
            qdot = np.empty_like(Q)
            _gk.closed_tile(self.act.code, float(self.act.params[0]), Q, qi, qj, qhat, qdot, want_dot)
            return qhat, (qdot if want_dot else None)
        ii, jj = self.inv[ri], self.inv[rj]
        qhat = np.empty_like(Q)
        _gk.mehler(C, self.A[ii], np.ascontiguousarray(self.A[jj].T), qhat)
        qdot = None
        if want_dot:
            qdot = np.empty_like(Q)
            _gk.mehler(C, self.D[ii], np.ascontiguousarray(self.D[jj].T), qdot)
        # every row converged (else the layer was routed to quadrature): for all pairs
        # |c|^K sqrt(R_i R_j) / sqrt(E_i E_j) <= max_i R_i / E_i
        self.bound = max(self.bound, self.row_bound)
        self.bound_dot = max(self.bound_dot, self.row_bound_dot)
        return qhat, qdot

    def pairs_diag(self, Q: np.ndarray, ri: np.ndarray, rj: np.ndarray, P: int):
        """:meth:`pairs` on a diagonal-in-space tile ``Q`` (a, b, P) whose rows are ``ri * P + p``, ``rj * P + p``
        (pairs of inputs at the same position ``p``): one compiled call for the closed forms, equal entry by entry to
        ``P`` calls of :meth:`pairs`; the other routes loop over the positions."""
        if self.route == "closed":
            r = np.arange(P)
            qi = np.ascontiguousarray(self.q[ri[:, None] * P + r])
            qj = np.ascontiguousarray(self.q[rj[:, None] * P + r])
            Q = np.ascontiguousarray(Q)
            qhat = np.empty_like(Q)
            qdot = np.empty_like(Q)
            from ._spatial_kernels import closed_tile_diag

            excess = closed_tile_diag(self.act.code, float(self.act.params[0]), Q, qi, qj, qhat, qdot,
                                      self.want_dot)
            self.max_c_excess = max(self.max_c_excess, excess)
            return qhat, (qdot if self.want_dot else None)
        qh = np.empty_like(Q)
        qd = np.empty_like(Q) if self.want_dot else None
        for p in range(P):
            h, d = self.pairs(np.ascontiguousarray(Q[:, :, p]), ri * P + p, rj * P + p)
            qh[:, :, p] = h
            if qd is not None:
                qd[:, :, p] = d
        return qh, qd

    # ----------------------------------------------------------------- partial derivatives (kernel derivatives)
    def partials(self, Q, ri, rj, qhat, qdot, want_dot: bool):
        """Partial derivatives of ``qhat`` and ``qdot`` on a tile with respect to ``(q_i, q_j, Q)``, as
        :func:`pair_partials` returns them: closed forms for the closed-form activations, Mehler series for smooth
        ones (:meth:`_series_partials`); NotImplementedError for the quadrature route."""
        qi, qj = self.q[ri][:, None], self.q[rj][None, :]
        if self.route == "closed":
            return pair_partials(self.act, Q, qi, qj, qhat, qdot, want_dot)
        if self.route == "mehler":
            return self._series_partials(Q, ri, rj, want_dot)
        return self._kinked_partials(Q, ri, rj, want_dot)

    def _kinked_partials(self, Q, ri, rj, want_dot):
        """Quadrature route (kinked activations without closed forms, and Mehler layers that fell back): the
        distributional integration by parts of ``_gaussian_kernels.pair_partials_kinked`` (delta functions of phi''
        at the kinks through conditional Gaussian expectations, regular parts by the nested 2-D rule)."""
        dl, dr = kink_slopes(self.act)
        Q = np.ascontiguousarray(Q, dtype=np.float64)
        out = np.empty((5,) + Q.shape)
        _gk.pair_partials_kinked_tile(*self.act.kernel_args, dl, dr, Q, np.ascontiguousarray(self.q[ri]),
                                      np.ascontiguousarray(self.q[rj]), bool(want_dot), out)
        a_i, a_j, bQ, b_i, b_j = out
        if not want_dot:
            return a_i, a_j, None, None, None
        return a_i, a_j, bQ, b_i, b_j

    def _series_partials(self, Q, ri, rj, want_dot):
        r"""Mehler-series partials. With ``a_k(q) = E[phi(sqrt(q) z) h_k(z)]`` (normalised Hermite ``h_k``),
        ``qhat = sum_k a_k(q_i) a_k(q_j) c^k``, ``c = Q / sqrt(q_i q_j)``. Gaussian integration by parts gives
        ``a_k'(q) = (sqrt((k+1)(k+2)) a_{k+2} + k a_k) / (2q)``; at fixed ``Q`` the ``k a_k`` part cancels against
        ``dc/dq_i = -c / (2 q_i)``, so

        ``d qhat/dq_i = (1 / (2 q_i)) sum_k sqrt((k+1)(k+2)) a_{k+2}(q_i) a_k(q_j) c^k``  (= E[phi'' phi] / 2),

        and with the coefficients ``d_k`` of phi' the same for ``qdot``, plus
        ``d qdot/dQ = (1 / sqrt(q_i q_j)) sum_k (k+1) d_{k+1}(q_i) d_{k+1}(q_j) c^k``. The shifted tables drop the
        last one or two terms of the truncated ones: the neglected tail is the table's (below ``rtol`` relative)
        times ~k."""
        qi, qj = self.q[ri], self.q[rj]
        C = np.empty_like(Q)
        _gk.correlation_tile(Q, qi, qj, C)
        ii, jj = self.inv[ri], self.inv[rj]
        with np.errstate(divide="ignore", invalid="ignore"):
            inv2i = np.where(qi > 0, 0.5 / np.where(qi > 0, qi, 1.0), 0.0)[:, None]
            inv2j = np.where(qj > 0, 0.5 / np.where(qj > 0, qj, 1.0), 0.0)[None, :]

        def shifted(T, m):
            K = T.shape[1] - m
            if K <= 0:
                return None, None
            k = np.arange(K)
            w = np.sqrt((k + 1.0) * (k + 2.0)) if m == 2 else (k + 1.0)
            return np.ascontiguousarray(T[:, m:] * w), np.ascontiguousarray(T[:, :K])

        def series(Ai, AjT):
            out = np.empty_like(Q)
            _gk.mehler(C, np.ascontiguousarray(Ai), np.ascontiguousarray(AjT), out)
            return out

        def dq(T):
            S, B = shifted(T, 2)
            if S is None:
                return np.zeros_like(Q), np.zeros_like(Q)
            return series(S[ii], B[jj].T) * inv2i, series(B[ii], S[jj].T) * inv2j

        a_i, a_j = dq(self.A)
        if not want_dot:
            return a_i, a_j, None, None, None
        b_i, b_j = dq(self.D)
        K = self.D.shape[1] - 1
        if K <= 0:
            bQ = np.zeros_like(Q)
        else:
            D1 = np.ascontiguousarray(self.D[:, 1:] * np.sqrt(np.arange(1.0, K + 1.0)))
            with np.errstate(divide="ignore", invalid="ignore"):
                r = np.sqrt(np.outer(qi, qj))
                bQ = np.where(r > 0, series(D1[ii], D1[jj].T) / np.where(r > 0, r, 1.0), 0.0)
        return a_i, a_j, bQ, b_i, b_j

    def row_slopes(self):
        """``(d E[phi^2]/dq, d E[phi'^2]/dq)`` per row (``want_dot`` plans): :func:`row_slopes` for closed forms; for
        the Mehler route ``d E[phi'^2]/dq = (1/q) sum_k d_k (sqrt((k+1)(k+2)) d_{k+2} + k d_k)``."""
        if self.route == "closed":
            return row_slopes(self.act, self.q, True)
        args = self.act.kernel_args
        if self.route != "mehler":
            q = np.ascontiguousarray(self.q, dtype=np.float64)
            dE2 = np.array([_gk.dmean_sq_dq(*args, float(v)) for v in q])
            return dE2, _gk.dmean_sq_dot_dq_many(*args, *kink_slopes(self.act), q)
        dE2 = np.array([_gk.dmean_sq_dq(*args, float(v)) for v in self.q])
        D = self.D
        K = D.shape[1]
        k = np.arange(K, dtype=np.float64)
        acc = np.sum(k * D * D, axis=1)
        if K > 2:
            acc += np.sum(np.sqrt((k[:-2] + 1.0) * (k[:-2] + 2.0)) * D[:, 2:] * D[:, :-2], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            uq = np.unique(self.q)
            slope_u = np.where(uq > 0, acc / np.where(uq > 0, uq, 1.0), 0.0)
        return dE2, slope_u[self.inv]

    # per-row data of the plan, and the per-distinct-variance tables indexed by ``inv`` (Mehler route)
    _ROW_FIELDS = ("q", "E2", "D2")
    _TABLE_FIELDS = ("A", "R", "E", "D", "RD", "ED")

    def take(self, rows: np.ndarray) -> "PairPlan":
        """The plan of the rows ``rows`` only (a copy; its tables one row per input, its budget counters at 0).

        :meth:`pairs` on the copy gives bit for bit what it gives on the full plan for the same pairs: the per-row
        data are the same numbers, only fewer (the distributed kernels ship each block just its rows' data).
        """
        new = copy.copy(self)
        for name in self._ROW_FIELDS:
            val = getattr(self, name)
            setattr(new, name, None if val is None else np.ascontiguousarray(val[rows]))
        if self.route == "mehler" or hasattr(self, "inv"):
            sel = self.inv[rows]
            for name in self._TABLE_FIELDS:
                if hasattr(self, name):
                    setattr(new, name, np.ascontiguousarray(getattr(self, name)[sel]))
            new.inv = np.arange(len(sel))
        new.bound = new.bound_dot = 0.0
        new.n_fallback = 0
        new.max_c_excess = 0.0
        return new

    def stack(self, other: "PairPlan") -> "PairPlan":
        """The plan of this plan's rows followed by ``other``'s (both from :meth:`take` of one plan)."""
        new = copy.copy(self)
        for name in self._ROW_FIELDS:
            a, b = getattr(self, name), getattr(other, name)
            setattr(new, name, None if a is None else np.concatenate([a, b]))
        if hasattr(self, "inv"):
            for name in self._TABLE_FIELDS:
                if hasattr(self, name):
                    setattr(new, name, np.concatenate([getattr(self, name), getattr(other, name)]))
            new.inv = np.arange(len(self.inv) + len(other.inv))
        return new

    def budget(self) -> tuple:
        """``(max_c_excess, n_fallback, bound, bound_dot)`` met so far by :meth:`pairs`."""
        return self.max_c_excess, self.n_fallback, self.bound, self.bound_dot

    def _quadrature(self, Q, qi, qj):
        # E[f(u) f(v)] is symmetric in (u, v): each distinct unordered pair (min q, max q, Q) is integrated once, so
        # a symmetric tile (forward's two inputs, the diagonal tiles of kernels) costs half, and comes out exactly
        # symmetric
        Q = np.asarray(Q, dtype=np.float64)
        qu = np.broadcast_to(qi[:, None], Q.shape)
        qv = np.broadcast_to(qj[None, :], Q.shape)
        keys = np.stack([np.minimum(qu, qv).ravel(), np.maximum(qu, qv).ravel(), Q.ravel()], axis=1)
        uniq, inv = np.unique(keys, axis=0, return_inverse=True)
        inv = inv.ravel()
        a, b, c = (np.ascontiguousarray(col) for col in uniq.T)
        qhat = np.asarray(pair_expectation(self.act, a, b, c), dtype=np.float64)[inv].reshape(Q.shape)
        qdot = (np.asarray(pair_expectation(self.act, a, b, c, derivative=True), dtype=np.float64)[inv]
                .reshape(Q.shape) if self.want_dot else None)
        return qhat, qdot


# ------------------------------------------------------------------------------ derivatives of the pair expectations
#: activations whose pair expectations have closed-form partial derivatives (kernel derivatives, meanfield.hyperparameters)
DIFFERENTIABLE_ACTIVATIONS = ("linear", "relu", "leaky_relu", "erf", "sin")


def kink_slopes(act: Activation) -> Tuple[np.ndarray, np.ndarray]:
    """One-sided derivatives ``(phi'(k-), phi'(k+))`` at each kink ``k`` of ``act`` (evaluated at the neighbouring
    floats, where phi' equals its one-sided limit to rounding):
    ``phi'' = r + sum_k (phi'(k+) - phi'(k-)) delta(. - k)``.

    Examples
    --------
    >>> from meanfield import get_activation
    >>> [v.tolist() for v in kink_slopes(get_activation("hard_tanh"))]
    [[0.0, 1.0], [1.0, 0.0]]
    """
    k = np.asarray(act.kinks, dtype=np.float64)
    lo, hi = np.nextafter(k, -np.inf), np.nextafter(k, np.inf)
    ev, code, p0, p1 = act.kernel_args[:4]
    dl = np.array([_gk._pw(ev, code, p0, p1, float(v), 1) for v in lo])
    dr = np.array([_gk._pw(ev, code, p0, p1, float(v), 1) for v in hi])
    return np.ascontiguousarray(dl), np.ascontiguousarray(dr)


def check_differentiable(act: Activation) -> None:
    """Raise NotImplementedError unless the pair expectations of ``act`` have partial derivatives here: closed forms
    (:data:`DIFFERENTIABLE_ACTIVATIONS`), the Mehler series of a smooth activation (tanh, sigmoid, gelu, ...), or the
    kink-aware integration by parts of a continuous activation with kinks (hard_tanh, elu, selu, custom ones), which
    needs phi continuous at its kinks (a jump of phi would put derivatives of delta functions into phi'')."""
    route = _route(act)
    if route == "closed":
        if not act.is_custom and act.name in DIFFERENTIABLE_ACTIVATIONS:
            return
        raise NotImplementedError(f"kernel derivatives of the closed-form activation {act.name!r} are not implemented")
    if route == "mehler":
        return
    ev, code, p0, p1 = act.kernel_args[:4]
    for k in act.kinks:
        lo = _gk._pw(ev, code, p0, p1, float(np.nextafter(k, -np.inf)), 0)
        hi = _gk._pw(ev, code, p0, p1, float(np.nextafter(k, np.inf)), 0)
        if not abs(hi - lo) <= 1e-12 * (1.0 + abs(hi) + abs(lo)):
            raise NotImplementedError(
                f"kernel derivatives need an activation continuous at its kinks; {act.name!r} jumps at {k} "
                f"(from {lo!r} to {hi!r})")


def pair_partials(act: Activation, Q, qi, qj, qhat, qdot, want_dot: bool):
    r"""Partial derivatives of ``qhat = E[phi(u)phi(v)]`` and ``qdot = E[phi'(u)phi'(v)]`` with respect to the entries
    ``(q_i, q_j, Q)`` of the covariance ``[[q_i, Q], [Q, q_j]]`` of ``(u, v)``, on a tile (``qi`` a column, ``qj`` a
    row).

    Price's theorem gives ``d qhat / dQ = qdot`` and ``d qhat / dq_i = E[phi''(u) phi(v)] / 2`` (heat equation);
    the closed forms below are those of :func:`_gaussian_kernels.pair_closed`, differentiated:

    * relu family (slope ``s``; ``qhat`` positively homogeneous of degree 1, ``qdot`` of degree 0, both functions of
      the angle): ``d qhat/dq_i = (qhat - Q qdot) / (2 q_i)`` (Euler), ``d qdot/dQ = (1-s)^2 / (2 pi sqrt(q_i q_j -
      Q^2))``, ``d qdot/dq_i = -Q (d qdot/dQ) / (2 q_i)``;
    * erf, ``A = 1 + 2 q_i``, ``B = 1 + 2 q_j``, ``g = A B - 4 Q^2``: ``d qhat/dq_i = -Q qdot / A``,
      ``d qdot/dQ = 16 Q / (pi g^{3/2})``, ``d qdot/dq_i = -4 B / (pi g^{3/2})``;
    * sin: ``d qhat/dq_i = -qhat / 2``, ``d qdot/dQ = qhat``, ``d qdot/dq_i = -qdot / 2``; linear: zeros.

    Pairs at correlation exactly +-1 (``q_i q_j = Q^2``: identical inputs, which stay identical for every parameter
    value) get ``d qdot`` = 0 for the relu family, where the formula is 0 x inf.

    Returns
    -------
    (a_i, a_j, b_Q, b_i, b_j) : arrays of the tile's shape
        ``a = d qhat/dq``; ``b = d qdot`` (None without ``want_dot``).
    """
    check_differentiable(act)
    Q = np.asarray(Q, dtype=np.float64)
    qi = np.asarray(qi, dtype=np.float64)
    qj = np.asarray(qj, dtype=np.float64)
    zero = np.zeros(np.broadcast(Q, qi, qj).shape)
    name = act.name
    b = (None, None, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        if name == "linear":
            a_i = a_j = zero
            if want_dot:
                b = (zero, zero, zero)
        elif name in ("relu", "leaky_relu"):
            s = float(act.params[0]) if name == "leaky_relu" else 0.0
            a_i = np.where(qi > 0, (qhat - Q * qdot) / (2.0 * np.where(qi > 0, qi, 1.0)), 0.0)
            a_j = np.where(qj > 0, (qhat - Q * qdot) / (2.0 * np.where(qj > 0, qj, 1.0)), 0.0)
            if want_dot:
                r = np.sqrt(qi * qj)
                det = (r - np.abs(Q)) * (r + np.abs(Q))
                ok = det > 0
                bQ = np.where(ok, (1.0 - s) ** 2 / (2.0 * np.pi * np.sqrt(np.where(ok, det, 1.0))), 0.0)
                b = (bQ, np.where(ok, -Q * bQ / (2.0 * np.where(qi > 0, qi, 1.0)), 0.0),
                     np.where(ok, -Q * bQ / (2.0 * np.where(qj > 0, qj, 1.0)), 0.0))
        elif name == "erf":
            A, B = 1.0 + 2.0 * qi, 1.0 + 2.0 * qj
            a_i, a_j = -Q * qdot / A, -Q * qdot / B
            if want_dot:
                g = A * B - 4.0 * Q * Q
                g32 = g * np.sqrt(g)
                b = (16.0 * Q / (np.pi * g32), -4.0 * B / (np.pi * g32), -4.0 * A / (np.pi * g32))
        else:   # sin
            a_i = a_j = -0.5 * qhat + zero
            if want_dot:
                b = (qhat + zero, -0.5 * qdot + zero, -0.5 * qdot + zero)
    return (a_i + zero, a_j + zero) + b


def row_slopes(act: Activation, q, want_dot: bool):
    r"""``d E[phi(u)^2] / dq`` (the engine's ``dmean_sq_dq``) and ``d E[phi'(u)^2] / dq`` per row, ``u ~ N(0, q)``.

    The second: 0 for the relu family and linear, ``-8 / (pi (1 + 4q)^{3/2})`` for erf, ``-e^{-2q}`` for sin.
    """
    check_differentiable(act)
    q = np.ascontiguousarray(q, dtype=np.float64)
    args = act.kernel_args
    dE2 = np.array([_gk.dmean_sq_dq(*args, float(v)) for v in q])
    if not want_dot:
        return dE2, None
    if act.name == "erf":
        dD2 = -8.0 / (np.pi * (1.0 + 4.0 * q) ** 1.5)
    elif act.name == "sin":
        dD2 = -np.exp(-2.0 * q)
    else:
        dD2 = np.zeros_like(q)
    return dE2, dD2
