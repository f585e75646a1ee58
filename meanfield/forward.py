r"""Forward order parameters: length and correlation maps, fixed points, chi_1, chi_c, depth scales, critical line.

Notation of docs/mathematics.md section 2 (Poole et al. 2016, Schoenholz et al. 2017). For one input of squared length q,

.. math::
    V(q) = \frac{\sigma_w^2}{\rho} \int Dz\, \phi(\sqrt{q} z)^2 + \sigma_b^2, \qquad q^{l+1} = V(q^l),

and for two inputs of equal length q at correlation c, with u_1 = sqrt(q) z_1, u_2 = sqrt(q)(c z_1 + sqrt(1-c^2) z_2),

.. math::
    C(c; q) = \frac{\sigma_w^2 \int Dz_1 Dz_2\, \phi(u_1)\phi(u_2) + \sigma_b^2}{q},
    \qquad \chi_1 = \frac{\sigma_w^2}{\rho} \int Dz\, \phi'(\sqrt{q^*} z)^2,
    \qquad \chi_c = \sigma_w^2 \int Dz_1 Dz_2\, \phi'(u_1^*)\phi'(u_2^*).

Depth scales: 1/xi_q = -log|V'(q*)|, 1/xi_c = -log|chi_c|, 1/xi_grad = -log chi_1 (|q^l - q*| ~ exp(-l/xi_q) also
when V'(q*) < 0, where the deviation alternates in sign; a negative xi means the deviation grows).

Dropout: rho is the keep probability (inverted dropout on the post-activations: the same-input map carries
sigma_w^2/rho, the cross-input map sigma_w^2). Two quantities then differ by the factor rho and are kept apart:

* ``chi_1 = (sigma_w^2/rho) E[phi'(u)^2]``, the gradient-norm ratio per layer (q-tilde_1^l = chi_1^(L-l),
  :mod:`meanfield.backward`; 1/xi_grad = -log chi_1), returned by :func:`chi1` and ``FixedPoint.chi_1``;
* ``c_map_slope = dC/dc at c = 1 = sigma_w^2 E[phi'(u)^2] = rho chi_1``, returned by :func:`c_map_slope` and
  ``FixedPoint.c_map_slope``.

Without dropout they coincide. With dropout c = 1 is no fixed point of the correlation map (C(1) < 1), c* < 1 at every
weight variance and xi_c stays finite (Schoenholz et al. 2017): the correlation map has no order-to-chaos transition,
and its slope at c = 1 marks none. What stays critical is the backward pass, so the critical line under dropout is
chi_1 = 1 (gradients neither explode nor vanish, xi_grad diverges): :func:`critical_weight_var` with
``dropout_keep=rho`` returns rho times the dropout-free critical weight variance (everything depends on sigma_w^2/rho).

Every function broadcasts over numpy arrays of ``weight_var`` and ``bias_var`` and runs compiled, in parallel.
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from typing import Optional, Sequence, Tuple, Union

    from matplotlib.axes import Axes

    from ._typing import ActivationLike, ArrayLike, FloatOrArray, NetworkLike

import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from . import _maps_kernels as _mk
from ._interop import Table, pad, short_repr, to_dataframe, to_xarray
from ._checks import check_finite_array, check_in_range, check_nonneg
from .activations import get_activation
from .gaussian import _check_rtol, mehler_rows
from .errors import ConvergenceWarning, DivergenceWarning, NoCriticalPointWarning, PrecisionWarning
from .network import Network

if TYPE_CHECKING:
    import pandas
    import xarray

__all__ = [
    "length_map",
    "correlation_map",
    "qstar",
    "cstar",
    "chi1",
    "c_map_slope",
    "chi_c",
    "depth_scales",
    "fixed_point",
    "critical_weight_var",
    "forward",
    "DepthScales",
    "FixedPoint",
    "ForwardResult",
]

_MAX_ITER = 400
#: default accuracy of the Mehler series behind the correlation map of smooth activations without closed forms (the
#: ``rtol`` argument of correlation_map, cstar, chi_c, fixed_point, depth_scales): the series is truncated where its
#: Parseval tail is below ``rtol E[f^2]``, and beyond the |c| up to which the truncated series is that accurate
#: (large q, c near 1) the nested 2-D quadrature is used instead, so C(c) and C'(c) are good to ~rtol relative
RTOL = 1e-14


def _shaped(shape, flat):
    out = np.asarray(flat).reshape(shape)
    return float(out) if out.ndim == 0 else out


def _prep(weight_var, bias_var, *extra, extra_names=("q_init",)):
    arrays = [check_nonneg("weight_var", weight_var), check_nonneg("bias_var", bias_var)] + list(extra)
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    try:
        b = np.broadcast_arrays(*arrays)
    except ValueError:
        names = ["weight_var", "bias_var", *extra_names][:len(arrays)]
        shapes = ", ".join(f"{n} {a.shape}" for n, a in zip(names, arrays))
        raise ValueError(f"{', '.join(names)} must broadcast to one shape, got {shapes}") from None
    return b[0].shape, [np.ascontiguousarray(x.ravel()) for x in b]


def _rho(dropout_keep):
    return check_in_range("dropout_keep", dropout_keep, 0.0, 1.0, lo_open=True, scalar=True)


def _where(mask, wv, bv, n=3):
    idx = np.flatnonzero(mask)[:n]
    return ", ".join(f"(weight_var={wv[i]:.6g}, bias_var={bv[i]:.6g})" for i in idx)


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point order parameters at (weight_var, bias_var); arrays broadcast like the inputs.

    Attributes
    ----------
    q_star, c_star : float or ndarray
        Length and correlation fixed points.
    chi_1 : float or ndarray
        Gradient-norm ratio per layer, (sigma_w^2/rho) E[phi'(u)^2] at q* (q* = inf: its q -> inf limit).
    c_map_slope : float or ndarray
        Slope of the correlation map at c = 1, sigma_w^2 E[phi'(u)^2] = rho chi_1 (q* = inf: the slope rho of the
        limiting map). Equal to chi_1 without dropout; see the module docstring for which one is critical.
    chi_c : float or ndarray
        Slope of the correlation map at c*, sigma_w^2 E[phi'(u_1) phi'(u_2)] (= chi_1 when c* = 1).
    vprime : float or ndarray
        V'(q*), the slope of the length map at its fixed point (negative where E[phi^2] decreases with q); NaN where
        q* = inf (with the DivergenceWarning).
    xi_q, xi_c, xi_grad : float or ndarray
        Depth scales 1/xi_q = -log|V'(q*)|, 1/xi_c = -log|chi_c|, 1/xi_grad = -log chi_1: ``inf`` where the slope is
        one in modulus (xi_c and xi_grad on the critical line; xi_q stays finite there), 0 where it is 0, negative
        where deviations grow (xi_grad in the chaotic phase: gradients grow like exp(-l/xi_grad) = chi_1^l). xi_q uses
        |V'(q*)| because a negative slope still contracts: q^l - q* alternates in sign and decays like
        |V'(q*)|^l = exp(-l/xi_q). NaN where q* = inf.
    """

    q_star: object
    c_star: object
    chi_1: object
    chi_c: object
    vprime: object
    xi_q: object
    xi_c: object
    xi_grad: object
    c_map_slope: object

    __repr__ = short_repr

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class DepthScales:
    """Depth scales 1/xi_q = -log|V'(q*)|, 1/xi_c = -log|chi_c|, 1/xi_grad = -log chi_1 (Schoenholz et al. 2017);
    see :class:`FixedPoint` for the conventions (``inf`` at criticality, negative where deviations grow)."""

    xi_q: object
    xi_c: object
    xi_grad: object

    __repr__ = short_repr

    def __iter__(self):
        return iter((self.xi_q, self.xi_c, self.xi_grad))

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}


def _neg_inv_log(x):
    """Depth scale xi = -1 / log|x| of a per-layer factor x: 0 at x = 0, inf at |x| = 1, negative for |x| > 1."""
    ax = np.abs(np.asarray(x, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        lx = np.log(ax)
        out = np.where(ax == 0, 0.0, np.where(lx == 0, np.inf, -1.0 / np.where(lx == 0, 1.0, lx)))
    return np.where(np.isnan(ax), np.nan, out)


def _warn_overflow(what, out, wv, bv):
    """DivergenceWarning where a map's value (from finite inputs) exceeds the float64 range and is returned as inf."""
    over = np.isinf(out)
    if np.any(over):
        warnings.warn(f"{what} exceeds the float64 range (returned as inf) at {int(over.sum())} of {over.size} points, "
                      f"e.g. {_where(over, wv, bv)}", DivergenceWarning, stacklevel=3)


def _fixed_points(activation, weight_var, bias_var, dropout_keep, q_init, need_c, rtol=RTOL):
    act = get_activation(activation)
    rho = _rho(dropout_keep)
    rtol = _check_rtol(rtol)
    if q_init is None:
        shape, (wv, bv) = _prep(weight_var, bias_var)
        q0 = wv + bv  # q^1 for an input with x.x / M_0 = 1
    else:
        shape, (wv, bv, q0) = _prep(weight_var, bias_var, check_nonneg("q_init", q_init))
    qs, chi, slope1, vp, st_q = _mk.fixed_points_many(*act.kernel_args, wv, bv, rho, q0, _MAX_ITER)
    cs = np.full(qs.size, np.nan)
    chic = np.full(qs.size, np.nan)
    st_c = np.zeros(qs.size, dtype=np.int64)
    if need_c:
        # the Mehler series where the c-solve needs it (not at c* = 1: rho = 1 and chi_1 <= 1)
        rows, A, B, EA, EB = mehler_rows(act, qs, ~((rho == 1.0) & (chi <= 1.0)), rtol)
        cs, chic, st_c = _mk.cstar_many(*act.kernel_args, qs, wv, bv, rho, _MAX_ITER, A, B, EA, EB, rows, rtol)
    div = st_q == _mk.DIVERGED
    if np.any(div):
        warnings.warn(f"q diverges (q* = inf) at {int(div.sum())} of {div.size} points, e.g. {_where(div, wv, bv)}: "
                      f"{act.name} is unbounded and the length map has no finite fixed point there; chi_1 and the "
                      "correlation map are given in the q -> inf limit, xi_q is NaN", DivergenceWarning, stacklevel=3)
    bad = (st_q == _mk.NOT_CONVERGED) | (st_c == _mk.NOT_CONVERGED)
    if np.any(bad):
        warnings.warn(f"fixed-point iteration did not converge at {int(bad.sum())} points, e.g. {_where(bad, wv, bv)}; "
                      "those entries are NaN", ConvergenceWarning, stacklevel=3)
        for arr in (qs, chi, slope1, vp, cs, chic):
            arr[bad] = np.nan
    _warn_precision(act, qs, vp)
    fin = ~div
    for what, arr in (("chi_1", chi), ("V'(q*)", vp), ("chi_c", chic), ("the c-map slope", slope1)):
        _warn_overflow(what, np.where(fin, arr, 0.0), wv, bv)
    return shape, qs, chi, vp, cs, chic, slope1


def _warn_precision(act, qs, vp):
    """PrecisionWarning where q* is small and V'(q*) ~ 1 (the q = 0 end of the critical line, tiny bias_var): V(q) - q
    then lies below the rounding of V(q) (~64 eps q) and q* is resolved only to ~64 eps / |V'(q*) - 1| relative.
    tanh, erf and sin sum V(q) - q from a Taylor series there (exact to rounding); the closed-form activations
    (relu family, linear) have V(q) - q linear in q."""
    if act.closed_form or _mk.has_q0_series(act.code):
        return
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = 64 * np.finfo(float).eps / np.abs(vp - 1.0)
    weak = np.isfinite(qs) & (qs > 0) & (qs < 1e-3) & ~(rel <= 1e-8)
    if np.any(weak):
        warnings.warn(f"q* = {qs[weak][0]:.6g} lies near the q = 0 end of the critical line (V'(q*) = "
                      f"{vp[weak][0]:.17g}): V(q) - q is below the rounding of V(q) there, so q* is resolved only to "
                      f"a relative {min(float(np.max(rel[weak])), 1.0):.1g} at {int(weak.sum())} point(s)",
                      PrecisionWarning, stacklevel=4)


def fixed_point(activation: ActivationLike, weight_var: ArrayLike, bias_var: ArrayLike, *, dropout_keep: float = 1.0,
                q_init: Optional[ArrayLike] = None,
                rtol: float = RTOL) -> FixedPoint:
    """All fixed-point order parameters and depth scales at once (one compiled pass; see the module docstring).

    Parameters
    ----------
    activation : str or Activation
    weight_var, bias_var : float or array_like
        sigma_w^2 and sigma_b^2 (>= 0), broadcast against each other.
    dropout_keep : float
        Keep probability rho in (0, 1].
    q_init : float or array_like, optional
        Where the length-map iteration starts (default weight_var + bias_var: q^1 of an input with x.x/M_0 = 1).
    rtol : float
        Accuracy of the correlation map's Mehler series (:data:`RTOL`, in ``[1e-16, 1e-3]``); c*, chi_c and xi_c
        are then good to about ``rtol / |1 - chi_c|`` relative. Next to the critical line pass a smaller rtol: tanh
        at weight_var 2.069, bias_var 0.1207 (chi_c = 0.9978) gives c* to 1.1e-11 at the default and to 5e-14 at
        ``rtol=1e-15`` (against mpmath at 25 digits), where the series then hands c near 1 to the nested 2-D
        quadrature (a few ms per point).

    Examples
    --------
    >>> from meanfield import fixed_point
    >>> fp = fixed_point("tanh", 1.5, 0.05)
    >>> round(fp.q_star, 6), fp.c_star
    (0.418037, 1.0)
    """
    shape, qs, chi, vp, cs, chic, slope1 = _fixed_points(activation, weight_var, bias_var, dropout_keep, q_init, True,
                                                         rtol)
    return FixedPoint(q_star=_shaped(shape, qs), c_star=_shaped(shape, cs), chi_1=_shaped(shape, chi),
                      chi_c=_shaped(shape, chic), vprime=_shaped(shape, vp), xi_q=_shaped(shape, _neg_inv_log(vp)),
                      xi_c=_shaped(shape, _neg_inv_log(chic)), xi_grad=_shaped(shape, _neg_inv_log(chi)),
                      c_map_slope=_shaped(shape, slope1))


def length_map(activation: ActivationLike, q: ArrayLike, weight_var: ArrayLike, bias_var: ArrayLike, *,
               dropout_keep: float = 1.0) -> FloatOrArray:
    r"""The length map V(q) = (sigma_w^2/rho) E[phi(u)^2] + sigma_b^2, u ~ N(0, q) (Poole et al. 2016, eq. 3).

    Examples
    --------
    >>> from meanfield import length_map
    >>> length_map("relu", 2.0, 1.0, 0.1)   # sigma_w^2 q / 2 + sigma_b^2
    1.1
    """
    act = get_activation(activation)
    rho = _rho(dropout_keep)
    shape, (wv, bv, qq) = _prep(weight_var, bias_var, check_nonneg("q", q), extra_names=("q",))
    out = _mk.length_map_many(*act.kernel_args, qq, wv, bv, rho)
    _warn_overflow("V(q)", out, wv, bv)
    return _shaped(shape, out)


def correlation_map(activation: ActivationLike, c: ArrayLike, weight_var: ArrayLike, bias_var: ArrayLike,
                    q: Optional[ArrayLike] = None, *, dropout_keep: float = 1.0,
                    return_derivative: bool = False, rtol: float = RTOL) -> Union[FloatOrArray, Tuple[FloatOrArray, FloatOrArray]]:
    r"""The correlation map C(c; q) = (sigma_w^2 E[phi(u_1)phi(u_2)] + sigma_b^2) / q (Poole et al. 2016, eq. 5).

    Parameters
    ----------
    activation : str or Activation
    c : float or array_like
        Input correlation in [-1, 1].
    weight_var, bias_var : float or array_like
    q : float or array_like, optional
        Common squared length of the two inputs; default q* (the fixed point of the length map).
    dropout_keep : float
        Keep probability rho; q* then comes from the dropout length map and C(1) < 1.
    return_derivative : bool
        Also return dC/dc = sigma_w^2 E[phi'(u_1) phi'(u_2)].
    rtol : float
        Accuracy of the Mehler series of smooth activations (see :data:`RTOL`).

    Examples
    --------
    >>> from meanfield import correlation_map
    >>> round(correlation_map("tanh", 1.0, 1.5, 0.05), 12)   # c = 1 is a fixed point
    1.0
    """
    act = get_activation(activation)
    rho = _rho(dropout_keep)
    cc = check_in_range("c", c, -1.0, 1.0)
    if q is None:
        shape_q, qs, *_ = _fixed_points(act, weight_var, bias_var, rho, None, False)
        qv = np.asarray(qs).reshape(shape_q)
    else:
        qv = np.asarray(check_nonneg("q", q), dtype=np.float64)
    shape, (wv, bv, cf, qf) = _prep(weight_var, bias_var, cc, qv, extra_names=("c", "q"))
    if np.any(qf == 0):
        if q is not None:
            raise ValueError("q must be > 0 for the correlation map (C(c; q) = (...)/q)")
        raise ValueError("the correlation map needs q > 0, and these weight_var, bias_var give q* = 0 (C(c; q*) is "
                         "0/0 there): pass q explicitly, e.g. a small positive q")
    rtol = _check_rtol(rtol)
    rows, A, B, EA, EB = mehler_rows(act, qf, np.ones(qf.size, dtype=bool), rtol)
    out, dout = _mk.correlation_map_many(*act.kernel_args, cf, qf, wv, bv, rho, A, B, EA, EB, rows, rtol)
    _warn_overflow("C(c)", out, wv, bv)
    if return_derivative:
        _warn_overflow("dC/dc", dout, wv, bv)
    if return_derivative:
        return _shaped(shape, out), _shaped(shape, dout)
    return _shaped(shape, out)


def qstar(activation: ActivationLike, weight_var: ArrayLike, bias_var: ArrayLike, *, dropout_keep: float = 1.0,
          q_init: Optional[ArrayLike] = None) -> FloatOrArray:
    """Fixed point q* of the length map reached from ``q_init`` (``inf`` with a DivergenceWarning if q grows
    without bound).

    Near the q = 0 end of the critical line (phi(0) = 0, sigma_w^2 phi'(0)^2 ~ rho, tiny bias_var) V(q) - q ~
    bias_var + O(q^2) lies far below the rounding of V(q) (~eps q). tanh, erf and sin then sum V(q) - q from the
    Taylor series of E[phi^2] (q* exact to rounding, e.g. ``qstar("tanh", 1, 1e-300)`` = 7.07e-151); for the other
    activations with phi(0) = 0 (elu, selu, hard_tanh, gelu, silu, custom) q* there is resolved only to a relative
    ~64 eps / |V'(q*) - 1|, and a :class:`~meanfield.errors.PrecisionWarning` says so when that exceeds 1e-8.

    Examples
    --------
    >>> from meanfield import qstar
    >>> qstar("relu", 1.5, 0.1)   # sigma_b^2 / (1 - sigma_w^2 / 2)
    0.4
    """
    shape, qs, *_ = _fixed_points(activation, weight_var, bias_var, dropout_keep, q_init, False)
    return _shaped(shape, qs)


def chi1(activation: ActivationLike, weight_var: ArrayLike, bias_var: ArrayLike, *, dropout_keep: float = 1.0,
         q_init: Optional[ArrayLike] = None) -> FloatOrArray:
    """chi_1 = (sigma_w^2/rho) E[phi'(u)^2] at q*: the per-layer gradient-norm ratio (critical at chi_1 = 1).

    Without dropout this is also the slope of the correlation map at c = 1; with dropout that slope is
    rho chi_1 (:func:`c_map_slope`; the module docstring says which one is critical and why).

    Examples
    --------
    >>> from meanfield import chi1
    >>> chi1("relu", 2.0, 0.0)   # relu is critical at weight_var = 2 for every bias
    1.0
    """
    shape, _, chi, *_ = _fixed_points(activation, weight_var, bias_var, dropout_keep, q_init, False)
    return _shaped(shape, chi)


def c_map_slope(activation: ActivationLike, weight_var: ArrayLike, bias_var: ArrayLike, *, dropout_keep: float = 1.0,
                q_init: Optional[ArrayLike] = None) -> FloatOrArray:
    """dC/dc at c = 1 of the correlation map at q*: sigma_w^2 E[phi'(u)^2] = rho chi_1 (``chi_1`` without dropout).

    Under dropout c = 1 is not a fixed point and this slope defines no phase boundary (see the module docstring);
    where q* = inf it is the slope rho of the limiting map C(c) = rho E[phi(u)phi(v)] / E[phi(u)^2].

    Examples
    --------
    >>> from meanfield import c_map_slope, chi1
    >>> c_map_slope("relu", 0.75, 0.1, dropout_keep=0.5), chi1("relu", 0.75, 0.1, dropout_keep=0.5)
    (0.375, 0.75)
    """
    shape, *_, slope1 = _fixed_points(activation, weight_var, bias_var, dropout_keep, q_init, False)
    return _shaped(shape, slope1)


def cstar(activation: ActivationLike, weight_var: ArrayLike, bias_var: ArrayLike, *, dropout_keep: float = 1.0,
          q_init: Optional[ArrayLike] = None, rtol: float = RTOL) -> FloatOrArray:
    """Stable fixed point c* in [0, 1] of the correlation map at q* (1 in the ordered phase without dropout).

    Examples
    --------
    >>> from meanfield import cstar
    >>> cstar("tanh", 4.0, 0.0)   # odd activation, no bias, chaotic: c* = 0
    0.0
    """
    shape, _, _, _, cs, *_ = _fixed_points(activation, weight_var, bias_var, dropout_keep, q_init, True, rtol)
    return _shaped(shape, cs)


def chi_c(activation: ActivationLike, weight_var: ArrayLike, bias_var: ArrayLike, *, dropout_keep: float = 1.0,
          q_init: Optional[ArrayLike] = None, rtol: float = RTOL) -> FloatOrArray:
    """chi_c = sigma_w^2 E[phi'(u_1) phi'(u_2)] at (q*, c*) (= chi_1 when c* = 1).

    Examples
    --------
    >>> from meanfield import chi_c
    >>> chi_c("relu", 1.5, 0.1)
    0.75
    """
    shape, *_, chic, _ = _fixed_points(activation, weight_var, bias_var, dropout_keep, q_init, True, rtol)
    return _shaped(shape, chic)


def depth_scales(activation: ActivationLike, weight_var: ArrayLike, bias_var: ArrayLike, *, dropout_keep: float = 1.0,
                 q_init: Optional[ArrayLike] = None,
                 rtol: float = RTOL) -> DepthScales:
    r"""Depth scales (Schoenholz et al. 2017): 1/xi_q = -log|V'(q*)|, 1/xi_c = -log|chi_c|, 1/xi_grad = -log chi_1.

    xi_c and xi_grad are ``inf`` at criticality; xi_grad < 0 in the chaotic phase (gradients grow). xi_q is defined
    from |V'(q*)|: where the length map decreases at its fixed point (V'(q*) < 0, e.g. a bump-shaped activation) the
    deviation q^l - q* alternates in sign and its modulus decays like |V'(q*)|^l = exp(-l/xi_q); xi_q is 0 where
    V'(q*) = 0 and negative where |V'(q*)| > 1 (an unstable fixed point). Returns a :class:`DepthScales` (iterable
    as ``xi_q, xi_c, xi_grad``).

    Examples
    --------
    >>> from meanfield import critical_weight_var, depth_scales
    >>> w = critical_weight_var("tanh", 0.05)
    >>> xi_q, xi_c, xi_grad = depth_scales("tanh", w, 0.05)
    >>> bool(xi_c > 1e6)
    True
    """
    fp = fixed_point(activation, weight_var, bias_var, dropout_keep=dropout_keep, q_init=q_init, rtol=rtol)
    return DepthScales(xi_q=fp.xi_q, xi_c=fp.xi_c, xi_grad=fp.xi_grad)


def critical_weight_var(activation: ActivationLike, bias_var: ArrayLike, *, return_qstar: bool = False,
                        dropout_keep: float = 1.0) -> Union[FloatOrArray, Tuple[FloatOrArray, FloatOrArray]]:
    r"""The weight variance at which chi_1 = 1 for the given bias variance (order-to-chaos transition).

    chi_1 = (sigma_w^2/rho) E[phi'^2] is the gradient-norm ratio; without dropout it is also the slope of the
    correlation map at c = 1. Under dropout the correlation map has no critical point (c* < 1 and xi_c finite at every
    weight variance), so the line returned is that of the gradients, chi_1 = 1 (xi_grad diverges); since q* and chi_1
    depend on sigma_w^2 only through sigma_w^2/rho, it is rho times the dropout-free line.

    The critical line is parameterised by q*: sigma_w^2 = 1 / E[phi'(sqrt(q*) z)^2] and
    sigma_b^2 = q* - sigma_w^2 E[phi(sqrt(q*) z)^2]; the compiled kernel solves the second equation for q* by
    bracketing and Illinois regula falsi to machine precision. For the relu family the answer is 2 / (1 + slope^2)
    for every bias (q* then grows linearly with depth), for linear 1.

    For unbounded smooth activations (softplus, gelu, silu, elu) the length map can have several fixed points; the
    critical point returned is a fixed point q*_c of V with chi_1 = 1, reached by the iteration from inputs whose
    q^1 lies in its basin (use ``return_qstar=True`` and pass ``q_init=q*_c`` to the other functions). Where
    sigma_b^2 exceeds what the critical line reaches, the entry is NaN with a :class:`NoCriticalPointWarning`.

    Parameters
    ----------
    activation : str or Activation
    bias_var : float or array_like
    return_qstar : bool
        Also return q* on the critical line (``inf`` for the relu family with bias > 0).
    dropout_keep : float
        Keep probability rho in (0, 1]: the line chi_1 = (sigma_w^2/rho) E[phi'^2] = 1 (see above).

    Examples
    --------
    >>> from meanfield import critical_weight_var
    >>> critical_weight_var("tanh", 0.0), critical_weight_var("relu", 0.3)
    (1.0, 2.0)
    """
    act = get_activation(activation)
    rho = _rho(dropout_keep)
    bv = np.asarray(check_nonneg("bias_var", bias_var), dtype=np.float64)
    shape = bv.shape
    flat = np.ascontiguousarray(bv.ravel())
    if act.critical_weight_var is not None:
        wv = _shaped(shape, rho * np.full(flat.size, act.critical_weight_var))
        if return_qstar:
            return wv, _shaped(shape, np.where(flat > 0, np.inf, 1.0))
        return wv
    wv, qc, st = _mk.critical_many(*act.kernel_args, flat, _MAX_ITER)
    # the chi_1 = 1 fixed point must attract the length iteration (|V'(q*)| < 1), else it is no phase boundary
    unstable = np.array([np.isfinite(w) and abs(_mk.vprime_scalar(*act.kernel_args, q, w, 1.0)) > 1.0 + 1e-9
                         for w, q in zip(wv, qc)], dtype=bool)
    wv[unstable] = np.nan
    qc[unstable] = np.nan
    bad = ~np.isfinite(wv)
    if np.any(bad):
        warnings.warn(f"no critical weight variance for {int(bad.sum())} bias values, e.g. bias_var="
                      f"{flat[bad][:3].tolist()} (the line does not reach them, or its fixed point is unstable in q, "
                      "|V'(q*)| > 1); those entries are NaN", NoCriticalPointWarning, stacklevel=2)
    wv = rho * wv   # the line in sigma_w^2 / rho, computed at rho = 1
    if return_qstar:
        return _shaped(shape, wv), _shaped(shape, qc)
    return _shaped(shape, wv)


# --------------------------------------------------------------------------------------------------------------------
# layer-by-layer propagation through a Network

@dataclass(frozen=True)
class ForwardResult:
    r"""Per-layer forward order parameters of a :class:`~meanfield.Network` (or a layer chain) for two inputs x, x'.

    Arrays indexed ``[l - 1]`` for layers l = 1..L (pre-activations): ``q1`` = q^l(x,x), ``q1b`` = q^l(x',x'),
    ``q2`` = q^l(x,x'), ``c`` = q2 / sqrt(q1 q1b). Indexed ``[l]`` for l = 0..L-1 (post-activations, l = 0 the
    input): ``qhat1``, ``qhat1b``, ``qhat2`` = E[phi(u)^2], E[phi(u')^2], E[phi(u)phi(u')]. Indexed ``[l - 1]`` for
    hidden layers l = 1..L-1: ``qdot1``, ``qdot1b``, ``qdot2`` = E[phi'(u)^2], E[phi'(u')^2], E[phi'(u)phi'(u')].

    For a layer chain, ``l`` counts its Dense layers in chain order (those of residual blocks included): ``q`` is
    each Dense layer's output covariance, ``qhat`` its input covariance, and ``qdot`` is per Nonlinearity.
    ``trace`` is the :class:`meanfield.trace.Trace` the arrays are views of (q-tilde included).
    """

    network: object
    q1: np.ndarray
    q1b: np.ndarray
    q2: np.ndarray
    c: np.ndarray
    qhat1: np.ndarray
    qhat1b: np.ndarray
    qhat2: np.ndarray
    qdot1: np.ndarray
    qdot1b: np.ndarray
    qdot2: np.ndarray
    trace: object = field(default=None, compare=False, repr=False)

    __repr__ = short_repr

    def _table(self) -> Table:
        """Dim ``layer`` = 0..L: ``q1, q1b, q2, c`` at the pre-activations of layers 1..L (NaN at 0),
        ``qhat1, qhat1b, qhat2`` at the post-activations of layers 0..L-1 (0: the input; NaN at L), ``qdot1, qdot1b,
        qdot2`` at the hidden layers 1..L-1 (NaN elsewhere; on their own dim ``nonlinearity`` for a chain whose
        Nonlinearity count differs from L-1)."""
        n = self.q1.size + 1
        data = {k: (("layer",), pad(getattr(self, k), n, 1)) for k in ("q1", "q1b", "q2", "c")}
        data.update({k: (("layer",), pad(getattr(self, k), n, 0)) for k in ("qhat1", "qhat1b", "qhat2")})
        coords = {"layer": np.arange(n)}
        if self.qdot1.size <= n - 2:
            data.update({k: (("layer",), pad(getattr(self, k), n, 1)) for k in ("qdot1", "qdot1b", "qdot2")})
        else:
            coords["nonlinearity"] = np.arange(1, self.qdot1.size + 1)
            data.update({k: (("nonlinearity",), getattr(self, k)) for k in ("qdot1", "qdot1b", "qdot2")})
        return Table(coords=coords, data=data, rows=("layer",))

    def to_xarray(self) -> "xarray.Dataset":
        """The per-layer order parameters as an :class:`xarray.Dataset` on the dimension ``layer`` (0..L; see
        :meth:`to_dataframe` for which layers each quantity has). Needs xarray."""
        return to_xarray(self._table())

    def to_dataframe(self) -> "pandas.DataFrame":
        """One row per layer ``l = 0..L``: ``q1, q1b, q2, c`` (pre-activations of layer l, NaN at 0), ``qhat1, qhat1b,
        qhat2`` (post-activations of layer l, l = 0 the input; NaN at L), ``qdot1, qdot1b, qdot2`` (hidden layers).
        Needs pandas."""
        return to_dataframe(self._table())

    def to_dict(self) -> dict:
        d = {k: getattr(self, k).tolist() for k in ("q1", "q1b", "q2", "c", "qhat1", "qhat1b", "qhat2", "qdot1",
                                                     "qdot1b", "qdot2")}
        d["network"] = self.network.to_dict()
        return d

    def plot(self, ax: Optional[Sequence[Axes]] = None) -> Sequence[Axes]:
        """Plot q^l and c^l against the layer index; returns the matplotlib axes (two panels)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(1, 2, figsize=(8, 3.2))
        layers = np.arange(1, self.q1.size + 1)
        ax[0].plot(layers, self.q1, "o-", label="$q^l(x,x)$")
        ax[0].plot(layers, self.q1b, "s--", label="$q^l(x',x')$")
        ax[0].set_xlabel("layer $l$")
        ax[0].set_ylabel("$q^l$")
        ax[0].legend()
        ax[1].plot(layers, self.c, "o-")
        ax[1].set_xlabel("layer $l$")
        ax[1].set_ylabel("$c^l$")
        from matplotlib.ticker import MaxNLocator

        for a in ax:
            a.xaxis.set_major_locator(MaxNLocator(integer=True))
        return ax


def forward(network: NetworkLike, input_norm: float = 1.0, input_norm2: Optional[float] = None,
            input_overlap: float = 0.0) -> ForwardResult:
    r"""Propagate the second moments of two inputs through ``network`` (docs/mathematics.md sec. 2, heterogeneous layers).

    .. math::
        q^1 = \sigma_{w,1}^2\, x\cdot x'/M_0 + \sigma_{b,1}^2,\qquad
        q^{l+1}(x,x) = \frac{\sigma_{w,l+1}^2}{\rho} \hat q^l(x,x) + \sigma_{b,l+1}^2,\qquad
        q^{l+1}(x,x') = \sigma_{w,l+1}^2 \hat q^l(x,x') + \sigma_{b,l+1}^2.

    A view of the layer sweep (:func:`meanfield.trace.trace`) on the 2 x 2 Gram matrix of the two inputs.

    Parameters
    ----------
    network : Network or layer chain
        A :class:`~meanfield.Network` or a chain of :mod:`meanfield.layers` (then ``l`` counts Dense layers).
    input_norm, input_norm2 : float
        x.x / M_0 and x'.x' / M_0 (``input_norm2`` defaults to ``input_norm``).
    input_overlap : float
        x.x' / M_0 (Karakida's setting x ~ N(0, I): input_norm = 1, input_overlap = 0).

    Examples
    --------
    >>> from meanfield import Network, forward
    >>> fr = forward(Network("relu", depth=2, weight_var=2.0, bias_var=0.0), input_norm=1.0)
    >>> fr.q1.tolist()
    [2.0, 2.0, 2.0]
    """
    from .layers import Nonlinearity
    from .trace import as_chain, trace

    chain = as_chain(network)
    n1 = check_nonneg("input_norm", input_norm, scalar=True)
    n2 = n1 if input_norm2 is None else check_nonneg("input_norm2", input_norm2, scalar=True)
    ov = float(check_finite_array("input_overlap", input_overlap, scalar=True))
    if ov * ov > n1 * n2 * (1 + 1e-12):
        raise ValueError("input_overlap^2 must be <= input_norm * input_norm2 (Cauchy-Schwarz)")
    tr = trace(chain, gram=np.array([[n1, ov], [ov, n2]]), compute_ntk=False, backward=True,
               _inputs="input_norm, input_norm2")
    dense = tr.dense
    if isinstance(network, Network):   # qhat: the activations' outputs, before dropout
        qh = [dense[0].cov_in] + [s.cov_out for s in tr.steps if isinstance(s.layer, Nonlinearity)]
    else:
        qh = [s.cov_in for s in dense]

    def pick(mats):
        m = np.array(mats, dtype=np.float64).reshape(-1, 2, 2)
        return m[:, 0, 0].copy(), m[:, 1, 1].copy(), m[:, 0, 1].copy()

    q1, q1b, q2 = pick([s.cov_out for s in dense])
    qh1, qh1b, qh2 = pick(qh)
    qd1, qd1b, qd2 = pick(tr.qdot)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore", under="ignore"):
        prod = q1 * q1b
        # sqrt(q1) sqrt(q1b) where the product over- or underflows (q ~ 1e308 gave c = q2 / inf = 0 for c = 1)
        c = np.where(q1 * q1b > 0, q2 / np.sqrt(prod), 1.0)
        far = (q1 > 0) & (q1b > 0) & ~((prod > 1e-300) & np.isfinite(prod))
        if far.any():
            # scaled by a power of two (exact): sqrt(fl(a a)) = a in binary floating point, so c = 1 stays exactly 1
            s = np.ldexp(1.0, -np.frexp(np.maximum(q1, q1b))[1])
            a, b, x = q1 * s, q1b * s, q2 * s
            ab = a * b
            c = np.where(far, np.where(ab > 0, x / np.sqrt(ab), x / (np.sqrt(a) * np.sqrt(b))), c)
    return ForwardResult(network=network, q1=q1, q1b=q1b, q2=q2, c=c, qhat1=qh1, qhat1b=qh1b, qhat2=qh2, qdot1=qd1,
                         qdot1b=qd1b, qdot2=qd2, trace=tr)
