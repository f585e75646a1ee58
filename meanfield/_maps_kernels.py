"""Compiled kernels for the forward order parameters (numba); user-facing wrappers are in :mod:`meanfield.forward`.

Status codes returned next to values: 0 converged, 1 q diverged (q* = inf), 2 no convergence within max_iter.
"""
from __future__ import annotations

import math

import numba as nb

from . import _numba_cache  # noqa: F401  (installs the per-user kernel cache before any kernel below is defined)
import numpy as np

from ._gaussian_kernels import (row_kernel, _two_prod, dmean_sq_dq, e1d, e1d_sq_and_slope, e2d, mean_sq,
                                mehler_sum, pair_closed)
from .activations import ERF, LEAKY_RELU, SIN, TANH, has_closed_form, is_homogeneous, phi_eval

QMAX = 1e15          # q beyond this (starting from q_init <= 1e12) counts as divergence
BIG = 1e8            # where the large-|u| slopes of an unbounded activation are read off
EPS = 2.220446049250313e-16
NOISE = 64 * EPS     # relative rounding noise of V(q) - q
OK, DIVERGED, NOT_CONVERGED = 0, 1, 2


@nb.njit(cache=True)
def length_map_scalar(ev, code, p0, p1, kinks, scale, q, wv, bv, rho):
    """V(q) = (sigma_w^2 / rho) E[phi(u)^2] + sigma_b^2, u ~ N(0, q)."""
    return wv / rho * mean_sq(ev, code, p0, p1, kinks, scale, q, 0) + bv


# Taylor coefficients g_1, g_2, ... of E[phi(u)^2] = sum_{n>=1} g_n q^n, u ~ N(0, q), for the odd smooth built-ins
# (tanh: g_n = t_2n (2n-1)!! with tanh^2 x = sum t_k x^k; erf: (2/pi) asin(2q/(1+2q)); sin: (1 - e^(-2q))/2), from
# mpmath at 50 digits. Used by _fmap below q < SERIES_Q: tanh's series is asymptotic with |g_(n+1)/g_n| < 11 for
# n < 16, erf's converges for q < 1/4 (ratio -> 4), sin's is entire; at q < 0.005 the first dropped term is below
# 1e-19 of g_2 q^2.
SERIES_Q = 0.005
_G_TANH = np.array([1.0, -2.0, 5.6666666666666666667, -20.666666666666666667, 92.133333333333333333,
                    -485.42222222222222222, 2951.0126984126984127, -20332.006349206349206, 156564.78377425044092,
                    -1332519.6531922398589, 12421147.100554753888, -125852532.64198385976, 1377164977.7400679978,
                    -16186174331.385473973, 203360290395.25209567, -2719821103387.9334809])
_G_ERF = np.array([1.2732395447351626862, -2.5464790894703253723, 5.9417845420974258687, -15.278874536821952234,
                   42.27155288520740118, -123.92864902088916812, 380.51673251228004849, -1212.1240465878748772,
                   3975.6197429052824229, -13346.606203731869341, 45651.888127429736734, -158543.78811042245768,
                   557545.32838330750562, -1981330.9819241805843, 7103687.2676133122516, -25663273.660852928764,
                   93326122.309419279679, -341351548.87023330035, 1254919836.690021203, -4634497069.1738515996,
                   17185311160.240635546, -63959739987.82766605, 238836981135.17381287, -894567946809.82994401])
_G_SIN = np.array([(-1.0) ** (n + 1) * 2.0 ** (n - 1) / math.factorial(n) for n in range(1, 25)])
_G1_LO_ERF = -7.871470670072994e-17     # 4/pi - fl(4/pi): g_1 of erf as a double-double (tanh, sin: g_1 = 1 exactly)


@nb.njit(cache=True, inline="always")
def has_q0_series(code):
    """True for the activations whose Taylor series of E[phi^2] in q is tabulated above (tanh, erf, sin): _fmap sums
    V(q) - q from it near q = 0, so q* there is exact to rounding."""
    return code == TANH or code == ERF or code == SIN


@nb.njit(cache=True)
def _fmap(ev, code, p0, p1, kinks, scale, q, wv, bv, rho):
    """(F, |F| scale, F') for F(q) = V(q) - q. Near q = 0 on the critical line of tanh, erf and sin (sigma_w^2 phi'(0)^2
    ~ rho, tiny sigma_b^2), F ~ sigma_b^2 + (r g_1 - 1) q + r g_2 q^2 (r = sigma_w^2/rho) lies far below the rounding of
    V(q) ~ eps q, and q* ~ sqrt(sigma_b^2 / (2 r |g_2|)) would be lost (tanh, weight_var 1, bias_var 1e-300 gave 4e-285
    for 7.07e-151). There F is summed from the Taylor series with the linear coefficient r g_1 - 1 formed first;
    the scale (the sum of the terms' moduli) is what the root tests measure |F| against. Elsewhere F' is only the
    Newton slope (the root is bracketed)."""
    if q < SERIES_Q and has_q0_series(code):
        g = _G_TANH if code == TANH else (_G_ERF if code == ERF else _G_SIN)
        r = wv / rho
        acc = 0.0
        dacc = 0.0
        for i in range(g.size - 1, 0, -1):   # g[i] = g_(i+1): acc = sum_{n>=2} g_n q^(n-2), dacc = sum n g_n q^(n-2)
            acc = acc * q + g[i]
            dacc = dacc * q + (i + 1) * g[i]
        # r g_1 - 1 to a few ulp of itself (it vanishes on the critical line): exact product, exact subtraction
        # (Sterbenz), plus the low part of g_1
        if r < 1e290:
            p, e = _two_prod(r, g[0])
            lin = (p - 1.0) + (e + (r * _G1_LO_ERF if code == ERF else 0.0))
        else:
            lin = r * g[0] - 1.0
        quad = r * (acc * q * q)
        return lin * q + quad + bv, abs(lin * q) + abs(quad) + bv, lin + r * (dacc * q)
    if has_closed_form(code):
        v = length_map_scalar(ev, code, p0, p1, kinks, scale, q, wv, bv, rho)
        return v - q, max(v, q), wv / rho * dmean_sq_dq(ev, code, p0, p1, kinks, scale, q) - 1.0
    e0, slope = e1d_sq_and_slope(ev, code, p0, p1, kinks, scale, q)
    v = wv / rho * e0 + bv
    return v - q, max(v, q), wv / rho * slope - 1.0


@nb.njit(cache=True)
def qstar_scalar(ev, code, p0, p1, kinks, scale, wv, bv, rho, q0, max_iter):
    """Fixed point of the length map reached from q0: bracket the sign change of F(q) = V(q) - q in the direction the
    iteration moves (geometric steps), then safeguarded Newton (rtsafe). Returns (q*, status, iterations)."""
    tol = 8.0 * EPS
    q = q0
    if math.isinf(q):      # the starting point itself overflowed (weight_var + bias_var > 1.8e308)
        return math.inf, DIVERGED, 0
    F, Fs, _ = _fmap(ev, code, p0, p1, kinks, scale, q, wv, bv, rho)
    if math.isnan(F):
        return math.nan, NOT_CONVERGED, 0
    # purely relative (an absolute floor of 1e-300 accepted any q0 below ~1e-315 as a fixed point: linear,
    # weight_var 5e-324, bias_var 0 returned q* = 5e-324, where V(q) = 5e-324 q < q and q* = 0)
    if abs(F) <= tol * Fs:
        return q, OK, 0
    it = 0
    # divergence threshold relative to the problem's own scale (q* ~ weight_var or bias_var may be huge and finite)
    qmax = QMAX * max(1.0, q0, wv / rho, bv)
    if qmax > 1e308:
        qmax = 1e308
    if F > 0.0:
        lo = q
        hi = q
        Fhi = F
        while True:
            it += 1
            Vhi = Fhi + hi      # V(hi) from F(hi) = V(hi) - hi, already evaluated (inf / NaN carry through)
            nxt = max(2.0 * hi, Vhi, 1e-300)
            if not nxt <= qmax:     # also NaN (V overflowing to inf - inf): no finite fixed point
                return math.inf, DIVERGED, it
            Fn, Fs, _ = _fmap(ev, code, p0, p1, kinks, scale, nxt, wv, bv, rho)
            # a sign change must stand out of the rounding noise of V (~ eps q); otherwise keep going (V(q) - q may
            # tend to 0 from above, as for softplus at weight_var = 2, where q grows without bound)
            if Fn <= -NOISE * Fs:
                lo = hi
                hi = nxt
                break
            hi = nxt
            lo = nxt
            Fhi = Fn
    else:
        hi = q
        lo = q
        v0 = length_map_scalar(ev, code, p0, p1, kinks, scale, 0.0, wv, bv, rho)
        while True:
            it += 1
            nxt = 0.25 * lo
            if v0 == 0.0 and (nxt < 1e-250 or (nxt < 1e-12 * q0 and nxt < 1e-12)) or nxt == 0.0:
                # F < 0 down to q -> 0 and V(0) = 0: q* = 0 (below 1e-12 the map is linear to 1e-12 relative,
                # F(q) = (V'(0) - 1) q + O(q^2) with V'(0) - 1 <= 0, so no positive fixed point is left below)
                return 0.0, OK, it
            Fn, _, _ = _fmap(ev, code, p0, p1, kinks, scale, nxt, wv, bv, rho)
            if math.isnan(Fn):
                return math.nan, NOT_CONVERGED, it
            if Fn >= 0.0:
                hi = lo
                lo = nxt
                if Fn == 0.0:
                    return nxt, OK, it
                break
            lo = nxt
    # rtsafe on [lo, hi] with F(lo) > 0 > F(hi)
    x = lo + 0.5 * (hi - lo)      # (lo + hi) / 2 overflows for hi near the largest float
    dxold = hi - lo
    dx = dxold
    for k in range(max_iter):
        it += 1
        Fx, Fs, dF = _fmap(ev, code, p0, p1, kinks, scale, x, wv, bv, rho)
        if abs(Fx) <= tol * Fs:
            return x, OK, it
        if Fx > 0.0:
            lo = x
        else:
            hi = x
        newton_ok = dF != 0.0
        if newton_ok:
            xn = x - Fx / dF
            newton_ok = (xn > lo) and (xn < hi) and (abs(2.0 * Fx) < abs(dxold * dF))
        dxold = dx
        if newton_ok:
            dx = -Fx / dF
            x = x + dx
        else:
            dx = 0.5 * (hi - lo)
            x = lo + dx
        if hi - lo <= 4.0 * EPS * hi or abs(dx) <= 2.0 * EPS * x:
            return x, OK, it
    return x, NOT_CONVERGED, it


@nb.njit(cache=True)
def asymptotic_slopes(ev, code, p0, p1):
    """phi'(+BIG), phi'(-BIG): the slopes an unbounded activation approaches (its q -> inf limit is leaky-relu-like)."""
    return phi_eval(ev, code, p0, p1, BIG, 1), phi_eval(ev, code, p0, p1, -BIG, 1)


@nb.njit(cache=True)
def chi1_scalar(ev, code, p0, p1, kinks, scale, qs, wv, rho):
    """chi_1 = (sigma_w^2 / rho) E[phi'(u)^2] at q*; in the q* = inf limit the asymptotic slopes give
    (sigma_w^2 / rho) (a_+^2 + a_-^2) / 2."""
    if math.isinf(qs):
        ap, am = asymptotic_slopes(ev, code, p0, p1)
        return wv / rho * 0.5 * (ap * ap + am * am)
    return wv / rho * mean_sq(ev, code, p0, p1, kinks, scale, qs, 1)


@nb.njit(cache=True)
def _leaky_pair(slope, c, deriv):
    return pair_closed(LEAKY_RELU, slope, 1.0, 1.0, c, deriv)


ALL_C = 2.0           # "the truncated series is good for every |c| <= 1"


@nb.njit(cache=True)
def mehler_cmax(coef, full_sq, rtol):
    """Largest |c| up to which the truncated Mehler series sum_{k<K} a_k^2 c^k of f is within rtol E[f^2] of the
    whole series (ALL_C if it is for every |c| <= 1).

    Parseval: sum_k a_k^2 = E[f^2], so the dropped terms sum to at most |c|^K R_K with R_K = E[f^2] - sum_{k<K} a_k^2.
    R_K comes from E[f^2] (1-D quadrature, ~1e-16 relative) minus a compensated (Neumaier) sum of the a_k^2, so it is
    resolved down to a few ulp of E[f^2], far below rtol. The bound is what makes the series unusable near |c| = 1 at
    large q: the spectrum of phi(sqrt(q) z) then reaches k ~ q (gelu, silu: a_k^2 ~ k^(-3/2) e^(-k/q)) or beyond the
    term cap, and R_K is not small (gelu at q = 795: R_K ~ 1e-4 E for phi' at K = 4000)."""
    n = coef.size
    while n > 0 and coef[n - 1] == 0.0:     # zero padding of a table row (hermite_table): not terms of the series
        n -= 1
    s = 0.0
    comp = 0.0
    for k in range(n):
        x = coef[k] * coef[k]
        t = s + x
        if abs(s) >= abs(x):
            comp += (s - t) + x
        else:
            comp += (x - t) + s
        s = t
    rem = full_sq - (s + comp)
    tol = rtol * full_sq
    if rem <= tol or n == 0:
        return ALL_C
    return math.exp(math.log(tol / rem) / n)


@nb.njit(cache=True)
def cmap_eval(mode, ev, code, p0, p1, kinks, scale, qs, wv, bv, rho, c, acoef, bcoef, cmax_a, cmax_b):
    """Correlation map C(c) and C'(c) at q = qs for the modes: 0 closed form, 1 Mehler series (acoef, bcoef are the
    Hermite coefficients of phi and phi', trusted for |c| <= cmax_a, cmax_b: beyond, the nested quadrature), 2 nested
    quadrature, 3 q* = inf limit (leaky form, slopes in acoef). At c = 1 (modes 0-2) the 1-D integrals E[phi^2],
    E[phi'^2] -- the length map's own integrand, so C(1) = 1 at the fixed point to rounding."""
    if mode == 3:
        slope = acoef[1] / acoef[0] if acoef[0] != 0.0 else 0.0
        norm = _leaky_pair(slope, 1.0, 0)
        return rho * _leaky_pair(slope, c, 0) / norm, rho * _leaky_pair(slope, c, 1) / norm
    if c == 1.0:
        e = mean_sq(ev, code, p0, p1, kinks, scale, qs, 0)
        d = mean_sq(ev, code, p0, p1, kinks, scale, qs, 1)
    elif mode == 0:
        e = pair_closed(code, p0, qs, qs, c * qs, 0)
        d = pair_closed(code, p0, qs, qs, c * qs, 1)
    else:
        if mode == 1 and abs(c) <= cmax_a:
            e = mehler_sum(acoef, acoef, c)
        else:
            e = e2d(ev, code, p0, p1, kinks, scale, qs, qs, c * qs, 0, 0)
        if mode == 1 and abs(c) <= cmax_b:
            d = mehler_sum(bcoef, bcoef, c)
        else:
            d = e2d(ev, code, p0, p1, kinks, scale, qs, qs, c * qs, 1, 1)
    return (wv * e + bv) / qs, wv * d


@nb.njit(cache=True)
def cmap_setup(ev, code, p0, p1, kinks, scale, qs, acoef, bcoef, ea, eb, rtol):
    """Choose the evaluation mode of the correlation map at q* and what it needs: (mode, acoef, bcoef, cmax_a, cmax_b),
    see cmap_eval. ``acoef``, ``bcoef``: Hermite coefficients of phi and phi' at qs (from
    :func:`meanfield.gaussian.hermite_table`; empty where none were computed: then the nested quadrature); ``ea``,
    ``eb``: E[phi^2], E[phi'^2] on the coefficients' own rule (< 0: not given, the 1-D quadrature's)."""
    if math.isinf(qs):
        ap, am = asymptotic_slopes(ev, code, p0, p1)
        a = np.array([ap, am])
        return 3, a, a, ALL_C, ALL_C
    if has_closed_form(code):
        z = np.zeros(1)
        return 0, z, z, ALL_C, ALL_C
    if kinks.size == 0 and acoef.size > 0 and bcoef.size > 0:
        ca = mehler_cmax(acoef, ea if ea >= 0.0 else mean_sq(ev, code, p0, p1, kinks, scale, qs, 0), rtol)
        cb = mehler_cmax(bcoef, eb if eb >= 0.0 else mean_sq(ev, code, p0, p1, kinks, scale, qs, 1), rtol)
        return 1, acoef, bcoef, ca, cb
    z = np.zeros(1)
    return 2, z, z, ALL_C, ALL_C


@nb.njit(cache=True)
def cmap_slope1_scalar(ev, code, p0, p1, kinks, scale, qs, wv, rho, chi):
    """dC/dc at c = 1 given chi_1 = chi at the same (q*, sigma_w^2): sigma_w^2 E[phi'(u)^2] = rho chi_1 for finite q*;
    in the q* = inf limit the slope at c = 1 of the limiting map (cmap_eval mode 3), rho."""
    if math.isinf(qs):
        ap, am = asymptotic_slopes(ev, code, p0, p1)
        a = np.array([ap, am])
        return cmap_eval(3, ev, code, p0, p1, kinks, scale, qs, wv, 0.0, rho, 1.0, a, a, ALL_C, ALL_C)[1]
    return rho * chi


@nb.njit(cache=True)
def cstar_scalar(ev, code, p0, p1, kinks, scale, qs, wv, bv, rho, max_iter, acoef, bcoef, ea, eb, rtol):
    """Stable fixed point c* of the correlation map in [0, 1] and chi_c = C'(c*). Returns (c*, chi_c, status).

    On [0, 1] the map is C(c) = (sigma_w^2 sum_k a_k^2 c^k + sigma_b^2) / q* with a_k >= 0 squares (Mehler), so
    G(c) = C(c) - c is convex with G(0) >= 0: if G'(1) <= 0 (and no dropout) c* = 1; otherwise Newton from c = 0
    increases monotonically to the unique root in [0, 1)."""
    if qs == 0.0:
        # q* = 0 (sigma_b = 0, phi(0) = 0). Positively homogeneous activations: the map does not depend on q.
        if is_homogeneous(code):
            qs = 1.0
        else:
            # the q -> 0 limit is the linearised map C(c) = rho c (chi_1 at rho = 1), slope sigma_w^2 lim E[phi'^2]:
            # phi'(0)^2, or the mean of the one-sided squares where phi' jumps at 0 (elu, selu)
            d2 = mean_sq(ev, code, p0, p1, kinks, scale, 0.0, 1)
            if rho == 1.0:
                return 1.0, wv * d2, OK
            return 0.0, wv * d2, OK
    if rho == 1.0 and not math.isinf(qs):
        # ordered or critical (C'(1) = chi_1 <= 1): c* = 1, chi_c = chi_1 -- a 1-D integral, no 2-D setup needed
        chi = wv * mean_sq(ev, code, p0, p1, kinks, scale, qs, 1)
        if chi <= 1.0:
            return 1.0, chi, OK
    if not math.isinf(qs):
        # c* = 0 when C(0) = (sigma_w^2 E[phi]^2 + sigma_b^2)/q* vanishes (odd phi, no bias; the test of the loop
        # below): chi_c = C'(0) = sigma_w^2 E[phi']^2. Two 1-D integrals instead of the Mehler setup, which takes
        # seconds at huge q* (tanh at weight_var 1e300)
        m0 = e1d(ev, code, p0, p1, kinks, scale, qs, 0, -1, 0)
        if (wv * m0 * m0 + bv) / qs <= 4.0 * EPS:
            m1 = e1d(ev, code, p0, p1, kinks, scale, qs, 1, -1, 0)
            return 0.0, wv * m1 * m1, OK
    mode, a, b, ca, cb = cmap_setup(ev, code, p0, p1, kinks, scale, qs, acoef, bcoef, ea, eb, rtol)
    C1, D1 = cmap_eval(mode, ev, code, p0, p1, kinks, scale, qs, wv, bv, rho, 1.0, a, b, ca, cb)
    if rho == 1.0 and D1 <= 1.0:
        return 1.0, D1, OK
    c = 0.0
    for it in range(max_iter):
        C, D = cmap_eval(mode, ev, code, p0, p1, kinks, scale, qs, wv, bv, rho, c, a, b, ca, cb)
        G = C - c
        dG = D - 1.0
        if G <= 4.0 * EPS:
            return c, D, OK
        if dG >= 0.0:
            break
        step = -G / dG
        cn = c + step
        if cn >= 1.0:
            cn = 0.5 * (c + 1.0)
        if abs(cn - c) <= 2.0 * EPS:
            C, D = cmap_eval(mode, ev, code, p0, p1, kinks, scale, qs, wv, bv, rho, cn, a, b, ca, cb)
            return cn, D, OK
        c = cn
    C, D = cmap_eval(mode, ev, code, p0, p1, kinks, scale, qs, wv, bv, rho, c, a, b, ca, cb)
    return c, D, NOT_CONVERGED


@nb.njit(cache=True)
def vprime_scalar(ev, code, p0, p1, kinks, scale, qs, wv, rho):
    """V'(q*) = (sigma_w^2 / rho) d/dq E[phi^2] = chi_1 + (sigma_w^2/rho) E[phi'' phi] for smooth phi."""
    return wv / rho * dmean_sq_dq(ev, code, p0, p1, kinks, scale, qs)


@row_kernel(8)
def fixed_points_many(ev, code, p0, p1, kinks, scale, wv, bv, rho, q0, max_iter):
    """For each (wv[i], bv[i], q0[i]): q*, chi_1 (gradient-norm ratio), dC/dc at c = 1, V'(q*); plus status codes."""
    n = wv.size
    qs = np.empty(n)
    chi = np.empty(n)
    slope1 = np.empty(n)
    vp = np.empty(n)
    st_q = np.zeros(n, dtype=np.int64)
    for i in nb.prange(n):
        q, s, _ = qstar_scalar(ev, code, p0, p1, kinks, scale, wv[i], bv[i], rho, q0[i], max_iter)
        qs[i] = q
        st_q[i] = s
        chi[i] = chi1_scalar(ev, code, p0, p1, kinks, scale, q, wv[i], rho)
        slope1[i] = cmap_slope1_scalar(ev, code, p0, p1, kinks, scale, q, wv[i], rho, chi[i])
        if math.isinf(q):
            vp[i] = math.nan
        else:
            vp[i] = vprime_scalar(ev, code, p0, p1, kinks, scale, q, wv[i], rho)
    return qs, chi, slope1, vp, st_q


@nb.njit(cache=True)
def _row(table, rows, i):
    """Coefficient row rows[i] of ``table`` (empty for rows[i] < 0)."""
    if rows[i] < 0:
        return np.zeros(0)
    return table[rows[i]]


@nb.njit(cache=True)
def _entry(values, rows, i):
    """values[rows[i]] (-1 for rows[i] < 0)."""
    if rows[i] < 0:
        return -1.0
    return values[rows[i]]


@row_kernel(8)
def cstar_many(ev, code, p0, p1, kinks, scale, qs, wv, bv, rho, max_iter, A, B, EA, EB, rows, rtol):
    """c* and chi_c at each q*[i]; A[rows[i]], B[rows[i]]: Hermite coefficients of phi, phi' at qs[i] (rows[i] < 0:
    none, the nested quadrature is used where the series would be)."""
    n = qs.size
    cs = np.empty(n)
    chic = np.empty(n)
    st_c = np.zeros(n, dtype=np.int64)
    for i in nb.prange(n):
        c, d, sc = cstar_scalar(ev, code, p0, p1, kinks, scale, qs[i], wv[i], bv[i], rho, max_iter,
                                _row(A, rows, i), _row(B, rows, i), _entry(EA, rows, i), _entry(EB, rows, i), rtol)
        cs[i] = c
        chic[i] = d
        st_c[i] = sc
    return cs, chic, st_c


@row_kernel(64)
def length_map_many(ev, code, p0, p1, kinks, scale, q, wv, bv, rho):
    out = np.empty(q.size)
    for i in nb.prange(q.size):
        out[i] = length_map_scalar(ev, code, p0, p1, kinks, scale, q[i], wv[i], bv[i], rho)
    return out


@nb.njit(cache=True)
def correlation_map_many(ev, code, p0, p1, kinks, scale, c, q, wv, bv, rho, A, B, EA, EB, rows, rtol):
    """C(c) and C'(c) at the given q; A[rows[i]], B[rows[i]] the Hermite coefficients at q[i] (see cstar_many); the
    setup is redone only when q changes between entries."""
    out = np.empty(c.size)
    dout = np.empty(c.size)
    qlast = -1.0
    mode = 0
    a = np.zeros(1)
    b = np.zeros(1)
    ca = ALL_C
    cb = ALL_C
    for i in range(c.size):
        if q[i] != qlast:
            mode, a, b, ca, cb = cmap_setup(ev, code, p0, p1, kinks, scale, q[i], _row(A, rows, i), _row(B, rows, i),
                                            _entry(EA, rows, i), _entry(EB, rows, i), rtol)
            qlast = q[i]
        out[i], dout[i] = cmap_eval(mode, ev, code, p0, p1, kinks, scale, q[i], wv[i], bv[i], rho, c[i], a, b, ca, cb)
    return out, dout


@nb.njit(cache=True)
def _critical_g(ev, code, p0, p1, kinks, scale, q, bv):
    """g(q) = q - E[phi^2]/E[phi'^2] - sigma_b^2: zero where (sigma_w^2 = 1/E[phi'^2], q) is critical with bias bv."""
    e1 = mean_sq(ev, code, p0, p1, kinks, scale, q, 1)
    if e1 <= 0.0:
        return -math.inf      # phi' = 0 almost everywhere at this q: no finite sigma_w^2 makes chi_1 = 1
    return q - mean_sq(ev, code, p0, p1, kinks, scale, q, 0) / e1 - bv


@row_kernel(8)
def critical_many(ev, code, p0, p1, kinks, scale, bv, max_iter):
    """Critical weight variance for each bias variance: parameterise the critical line by q* (docs/mathematics.md sec. 2),
    solve g(q*) = 0 by bracketing and bisection/secant (Illinois), return (sigma_w^2, q*, status)."""
    n = bv.size
    wv_out = np.empty(n)
    q_out = np.empty(n)
    st = np.zeros(n, dtype=np.int64)
    for i in nb.prange(n):
        b = bv[i]
        lo = 0.0
        glo = _critical_g(ev, code, p0, p1, kinks, scale, 0.0, b)
        if glo >= 0.0:
            # the critical q* is 0 (only possible for bias 0 and phi(0) = 0)
            e0 = mean_sq(ev, code, p0, p1, kinks, scale, 0.0, 1)
            wv_out[i] = 1.0 / e0 if e0 > 0.0 else math.nan
            q_out[i] = 0.0
            continue
        hi = max(b, 1e-3)
        ghi = _critical_g(ev, code, p0, p1, kinks, scale, hi, b)
        ok = True
        while ghi < 0.0:
            lo = hi
            glo = ghi
            hi *= 2.0
            if hi > 1e12:
                ok = False
                break
            ghi = _critical_g(ev, code, p0, p1, kinks, scale, hi, b)
        if not ok:
            wv_out[i] = math.nan
            q_out[i] = math.nan
            st[i] = NOT_CONVERGED
            continue
        side = 0
        x = hi
        for k in range(max_iter):
            den = ghi - glo
            x = (lo * ghi - hi * glo) / den if den != 0.0 else 0.5 * (lo + hi)
            if not (x > lo and x < hi):
                x = 0.5 * (lo + hi)
                if not x < hi:
                    # lo + hi overflows for bias near the largest float (bias_var 1.8e308: x = inf, and the rule
                    # of E[phi'^2] at q = inf never ended, panels of width 0); the secant products overflow too
                    x = lo + 0.5 * (hi - lo)
            gx = _critical_g(ev, code, p0, p1, kinks, scale, x, b)
            if gx == 0.0 or (hi - lo) <= 4.0 * EPS * hi:
                break
            if gx < 0.0:
                lo = x
                glo = gx
                if side == -1:
                    ghi *= 0.5
                side = -1
            else:
                hi = x
                ghi = gx
                if side == 1:
                    glo *= 0.5
                side = 1
            if (hi - lo) <= 4.0 * EPS * hi:
                break
        q_out[i] = x
        e1 = mean_sq(ev, code, p0, p1, kinks, scale, x, 1)
        if e1 > 0.0:
            wv_out[i] = 1.0 / e1
        else:
            wv_out[i] = math.nan
            st[i] = NOT_CONVERGED
    return wv_out, q_out, st


