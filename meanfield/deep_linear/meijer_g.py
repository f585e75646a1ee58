r"""The Meijer G-function ``G^{m,0}_{0,m}(x | b_1, ..., b_m)``, the special function of deep linear networks.

``G^{m,0}_{0,m}(x | b) = (2 pi i)^{-1} int prod_j Gamma(b_j + s) x^{-s} ds`` is the density (up to the normalisation
``prod_j Gamma(b_j + 1)``) of a product of independent gamma variables, which is what the output prior and the scale
posterior of a deep linear network reduce to (:mod:`meanfield.deep_linear`). Two routes: a float64 saddle-point
quadrature of the Mellin-Barnes integral in log space (default, robust at large widths) and ``mpmath.meijerg`` with
the working precision raised until it settles (the cross-check).
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from .._typing import ArrayLike

import math
import warnings
from typing import Optional

import numpy as np
from scipy import optimize, special

from .._checks import check_array, check_finite_array, check_positive
from ..errors import DivergenceWarning

__all__ = ["log_meijer_g", "meijer_g"]


_WORK_MAX = 20_000_000     # log-gamma evaluations of one saddle quadrature (a few seconds)
_CHUNK = 1_000_000         # complex entries per block of the quadrature (16 MB)


def _saddle_s(b: np.ndarray, log_w: float) -> float:
    """Real saddle ``s0 > -min(b)`` of ``phi(s) = sum log Gamma(b + s) - s log w`` (``sum psi(b + s0) = log w``)."""
    bmin = float(np.min(b))

    def h(tau):  # s = -bmin + exp(tau); h increasing in tau
        s = -bmin + math.exp(tau)
        return float(np.sum(special.digamma(b + s))) - log_w

    lo, hi = -700.0, 1.0
    while h(hi) < 0.0:
        hi += 4.0
        if hi > 700.0:
            raise FloatingPointError("Meijer-G saddle search diverged (log_x too large)")
    if h(lo) > 0.0:  # w astronomically small: the saddle sits on the pole
        raise FloatingPointError("Meijer-G argument too small for the saddle route")
    tau = optimize.brentq(h, lo, hi, xtol=1e-15, rtol=1e-15, maxiter=500)
    return -bmin + math.exp(tau)


def _log_g0m_saddle(b: np.ndarray, log_w: float) -> float:
    r"""log G^{m,0}_{0,m}(w | b) by the Mellin-Barnes integral on the vertical line through its real saddle.

    ``G = (1/2 pi) int exp(phi(s0 + i t)) dt = exp(phi(s0))/pi int_0^inf Re exp(phi(s0 + i t) - phi(s0)) dt``
    (the integrand is conjugate-symmetric).  The linear phase vanishes at the saddle, ``|Gamma(x + i t)|`` decreases
    in ``|t|``, and the integrand is analytic in the strip ``|Im t| < d = min(b) + s0``: the trapezoid rule with step
    ``h`` converges like ``exp(-2 pi d / h)``.  We take ``h = min(sigma/4, d/8)`` (``sigma = phi''(s0)^{-1/2}``) and
    check it against the ``2h`` rule.
    """
    s0 = _saddle_s(b, log_w)
    x0 = b + s0
    phi0 = float(np.sum(special.gammaln(x0))) - s0 * log_w
    curv = float(np.sum(special.polygamma(1, x0)))
    sigma = 1.0 / math.sqrt(curv)
    d = float(np.min(x0))
    h = min(sigma / 4.0, d / 8.0)
    if not (h > 0.0 and math.isfinite(h)):
        # b ~ -1.8e308: s0 = -min(b) + tiny rounds so that b + s0 = 0, the pole itself (a step h = 0 divided by 0)
        raise FloatingPointError("the saddle lies on a pole to float64 precision (parameters b too large in modulus)")

    # repeated parameters (every hidden layer of one width) are evaluated once and weighted by their multiplicity:
    # the work is (nodes) x (distinct parameters), not x depth (depth 1000 near the pole took seconds)
    xu, mult = np.unique(x0, return_counts=True)
    grouped = xu.size < x0.size

    def dphi(t):
        if grouped:
            return special.loggamma(xu[None, :] + 1j * t[:, None]) @ mult - np.sum(special.gammaln(x0)) - 1j * t * log_w
        z = x0[None, :] + 1j * t[:, None]
        return np.sum(special.loggamma(z), axis=1) - np.sum(special.gammaln(x0)) - 1j * t * log_w

    # extent: where Re(dphi) < -46 (integrand below 1e-20 relative to its peak)
    tmax = 8.0 * sigma
    while float(np.real(dphi(np.array([tmax])))[0]) > -46.0:
        tmax *= 1.6
        if tmax > 1e7 * max(sigma, 1.0):
            raise FloatingPointError("Mellin-Barnes integrand does not decay")
    n = int(math.ceil(tmax / h))
    n += n % 2  # even, so that the 2h rule uses every other node
    if n > 4_000_000:
        raise FloatingPointError("Mellin-Barnes quadrature needs too many nodes (argument too close to a pole)")
    if n * xu.size > _WORK_MAX:
        raise FloatingPointError(f"Mellin-Barnes quadrature needs {n} nodes x {xu.size} distinct parameters, beyond the "
                                 f"budget of {_WORK_MAX:.0e} log-gamma evaluations (argument close to a pole with "
                                 "many distinct widths)")
    t = np.arange(n + 1) * (tmax / n)
    step_rows = max(1, _CHUNK // xu.size)     # bounded memory: rows of the (nodes x parameters) array per block
    vals = np.concatenate([np.real(np.exp(dphi(t[i:i + step_rows]))) for i in range(0, t.size, step_rows)])
    step = tmax / n
    i1 = step * (0.5 * vals[0] + np.sum(vals[1:]))
    i2 = 2 * step * (0.5 * vals[0] + np.sum(vals[2::2]))
    # the trapezoid error decays like exp(-2 pi d / h): err(h) ~ err(2h)^2, so |I_h - I_2h| < 1e-7 means err(h) < 1e-13
    if not (i1 > 0.0) or abs(i1 - i2) > 1e-7 * abs(i1):
        raise FloatingPointError(f"Mellin-Barnes quadrature not converged (I_h={i1!r}, I_2h={i2!r})")
    return phi0 + math.log(i1 / math.pi)


def _log_g0m_mpmath(b: np.ndarray, log_w: float, dps: Optional[int] = None) -> float:
    """log G^{m,0}_{0,m}(w|b) with mpmath.meijerg, raising the working precision until two precisions agree."""
    import mpmath as mp

    start = 30 if dps is None else int(dps)
    prev = None
    for k in range(5):
        prec = start * 2 ** k
        with mp.workdps(prec):
            bb = [mp.mpf(float(v)) for v in b]
            w = mp.exp(mp.mpf(log_w))
            try:
                val = mp.meijerg([[], []], [bb, []], w, maxprec=40 * prec)
            except (ValueError, ZeroDivisionError, mp.libmp.NoConvergence):
                prev = None
                continue
            if val <= 0:
                prev = None
                continue
            cur = float(mp.log(val))
        if dps is not None:
            return cur
        if prev is not None and abs(cur - prev) <= 1e-13 * max(1.0, abs(cur)):
            return cur
        prev = cur
    raise FloatingPointError("mpmath.meijerg did not converge up to %d digits" % (start * 16))


def log_meijer_g(b: ArrayLike, x: Optional[ArrayLike] = None, *, log_x: Optional[ArrayLike] = None,
                 method: str = "saddle") -> np.ndarray:
    r"""Logarithm of the Meijer G-function ``G^{m,0}_{0,m}(x | b_1, ..., b_m)`` for ``x > 0``.

    ``G^{m,0}_{0,m}(x|b) = (2 pi i)^{-1} int_{c - i inf}^{c + i inf} prod_j Gamma(b_j + s) x^{-s} ds``, ``c > -min b``
    (seed appendix A, eq. A.1 with ``s -> -s``): its Mellin transform is ``prod_j Gamma(b_j + s)``, so
    ``G(y | k_j - 1) / prod_j Gamma(k_j)`` is the density of a product of independent ``Gamma(k_j)`` variables.  This
    is the only family the deep linear network needs.

    Parameters
    ----------
    b : sequence of float
        Lower parameters, ``m >= 1`` of them (any real values; the contour passes right of all poles).
    x : float or array, optional
        Argument ``> 0``.  Give ``log_x`` instead for arguments beyond float range (``x ~ N^L`` is routine).
    log_x : float or array, optional
        ``log(x)``.
    method : {"saddle", "mpmath"}
        ``"saddle"`` (default): float64 quadrature of the Mellin-Barnes integral along the vertical line through
        its real saddle, in log space; accurate to ~1e-12 relative and robust at widths ``N >> 1000``.
        ``"mpmath"``: ``mpmath.meijerg``, raising the precision (30, 60, ... digits) until two precisions agree;
        exact but slow at large parameters (default mpmath precision fails near ``N = 1000``).

    Returns
    -------
    float or ndarray
        ``log G`` (same shape as ``x``).

    Examples
    --------
    >>> import numpy as np
    >>> round(float(log_meijer_g([0.0], 2.0)), 12)  # G^{1,0}_{0,1}(x|0) = exp(-x)
    -2.0
    """
    bb = check_array("b", b, (0, 1)).ravel()
    if (x is None) == (log_x is None):
        raise TypeError("give exactly one of x and log_x")
    if x is not None:
        lx = np.log(np.asarray(check_positive("x", x), dtype=np.float64))
        shape = np.shape(x)
    else:
        lx = check_finite_array("log_x", log_x)
        shape = np.shape(log_x)
    if method not in ("saddle", "mpmath"):
        raise ValueError(f"method must be 'saddle' or 'mpmath', got {method!r}")
    route = _log_g0m_saddle if method == "saddle" else _log_g0m_mpmath
    name = "x" if x is not None else "log_x"
    out = np.empty(np.size(lx))
    for i, v in enumerate(np.ravel(lx)):
        try:
            out[i] = route(bb, float(v))
        except FloatingPointError as exc:   # outside the saddle route's range: say which argument
            # the reach depends on both: huge parameters (b ~ 1e17: log-gamma values ~ 1e18 leave no digits for the
            # integrand's phase) fail at any x
            raise ValueError(f"{name}, b: log(x) = {float(v):.6g} with b in [{float(np.min(bb)):.4g}, "
                             f"{float(np.max(bb)):.4g}] is out of reach of the {method} route ({exc})") from None
    return float(out[0]) if shape == () else out.reshape(shape)


def meijer_g(b: ArrayLike, x: ArrayLike, method: str = "saddle") -> np.ndarray:
    """``G^{m,0}_{0,m}(x | b)`` (see :func:`log_meijer_g`); overflows to ``inf`` with a warning if out of range.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.special import kv
    >>> x = 1.3  # G^{2,0}_{0,2}(x | a, b) = 2 x^{(a+b)/2} K_{a-b}(2 sqrt x)
    >>> bool(np.isclose(meijer_g([0.5, 0.0], x), 2 * x ** 0.25 * kv(0.5, 2 * np.sqrt(x))))
    True
    """
    lg = np.asarray(log_meijer_g(b, x, method=method))
    if np.any(lg > 709.0):
        warnings.warn("meijer_g overflows float64 (returned as inf); use log_meijer_g", DivergenceWarning,
                      stacklevel=2)
    with np.errstate(over="ignore"):
        out = np.exp(lg)
    return float(out) if out.ndim == 0 else out
