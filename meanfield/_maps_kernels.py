"""Compiled kernels for the forward order parameters (numba); user-facing wrappers are in :mod:`meanfield.forward`.

Status codes returned next to values: 0 converged, 1 q diverged (q* = inf), 2 no convergence within max_iter.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from ._gaussian_kernels import (dmean_sq_dq, e1d_sq_and_slope, e2d, hermite_coeffs, mean_sq, mehler_sum,
                            n_hermite_terms, pair_closed)
from .activations import LEAKY_RELU, has_closed_form, is_homogeneous, phi_eval

QMAX = 1e15          # q beyond this (starting from q_init <= 1e12) counts as divergence
BIG = 1e8            # where the large-|u| slopes of an unbounded activation are read off
EPS = 2.220446049250313e-16
NOISE = 64 * EPS     # relative rounding noise of V(q) - q
OK, DIVERGED, NOT_CONVERGED = 0, 1, 2


@nb.njit(cache=True)
def length_map_scalar(ev, code, p0, p1, kinks, scale, q, wv, bv, rho):
    """V(q) = (sigma_w^2 / rho) E[phi(u)^2] + sigma_b^2, u ~ N(0, q)."""
    return wv / rho * mean_sq(ev, code, p0, p1, kinks, scale, q, 0) + bv


@nb.njit(cache=True)
def qstar_scalar(ev, code, p0, p1, kinks, scale, wv, bv, rho, q0, max_iter):
    """Fixed point of the length map reached from q0: bracket the sign change of F(q) = V(q) - q in the direction the
    iteration moves (geometric steps), then safeguarded Newton (rtsafe). Returns (q*, status, iterations)."""
    tol = 8.0 * EPS
    q = q0
    F = length_map_scalar(ev, code, p0, p1, kinks, scale, q, wv, bv, rho) - q
    if abs(F) <= tol * max(q, 1e-300):
        return q, OK, 0
    it = 0
    # divergence threshold relative to the problem's own scale (q* ~ weight_var or bias_var may be huge and finite)
    qmax = QMAX * max(1.0, q0, wv / rho, bv)
    if qmax > 1e308:
        qmax = 1e308
    if F > 0.0:
        lo = q
        hi = q
        while True:
            it += 1
            Vhi = length_map_scalar(ev, code, p0, p1, kinks, scale, hi, wv, bv, rho)
            nxt = max(2.0 * hi, Vhi, 1e-300)
            if nxt > qmax:
                return math.inf, DIVERGED, it
            Fn = length_map_scalar(ev, code, p0, p1, kinks, scale, nxt, wv, bv, rho) - nxt
            # a sign change must stand out of the rounding noise of V (~ eps q); otherwise keep going (V(q) - q may
            # tend to 0 from above, as for softplus at weight_var = 2, where q grows without bound)
            if Fn <= -NOISE * nxt:
                lo = hi
                hi = nxt
                break
            hi = nxt
            lo = nxt
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
            Fn = length_map_scalar(ev, code, p0, p1, kinks, scale, nxt, wv, bv, rho) - nxt
            if Fn >= 0.0:
                hi = lo
                lo = nxt
                if Fn == 0.0:
                    return nxt, OK, it
                break
            lo = nxt
    # rtsafe on [lo, hi] with F(lo) > 0 > F(hi)
    x = 0.5 * (lo + hi)
    dxold = hi - lo
    dx = dxold
    for k in range(max_iter):
        it += 1
        if has_closed_form(code):
            Fx = length_map_scalar(ev, code, p0, p1, kinks, scale, x, wv, bv, rho) - x
            dF = wv / rho * dmean_sq_dq(ev, code, p0, p1, kinks, scale, x) - 1.0
        else:
            e0, slope = e1d_sq_and_slope(ev, code, p0, p1, kinks, scale, x)
            Fx = wv / rho * e0 + bv - x
            dF = wv / rho * slope - 1.0
        if abs(Fx) <= tol * x:
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


MEHLER_RTOL = 1e-13   # accepted Mehler truncation bound, relative to the series' value E[f^2] at c = 1
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
    s = 0.0
    comp = 0.0
    for k in range(coef.size):
        x = coef[k] * coef[k]
        t = s + x
        if abs(s) >= abs(x):
            comp += (s - t) + x
        else:
            comp += (x - t) + s
        s = t
    rem = full_sq - (s + comp)
    tol = rtol * full_sq
    if rem <= tol or coef.size == 0:
        return ALL_C
    return math.exp(math.log(tol / rem) / coef.size)


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
def cmap_setup(ev, code, p0, p1, kinks, scale, qs):
    """Choose the evaluation mode of the correlation map at q* and precompute what it needs:
    (mode, acoef, bcoef, cmax_a, cmax_b), see cmap_eval."""
    if math.isinf(qs):
        ap, am = asymptotic_slopes(ev, code, p0, p1)
        a = np.array([ap, am])
        return 3, a, a, ALL_C, ALL_C
    if has_closed_form(code):
        z = np.zeros(1)
        return 0, z, z, ALL_C, ALL_C
    if kinks.size == 0:
        n = n_hermite_terms(qs, scale, False)
        a = hermite_coeffs(ev, code, p0, p1, kinks, scale, qs, n, 0)
        b = hermite_coeffs(ev, code, p0, p1, kinks, scale, qs, n, 1)
        ca = mehler_cmax(a, mean_sq(ev, code, p0, p1, kinks, scale, qs, 0), MEHLER_RTOL)
        cb = mehler_cmax(b, mean_sq(ev, code, p0, p1, kinks, scale, qs, 1), MEHLER_RTOL)
        return 1, a, b, ca, cb
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
def cstar_scalar(ev, code, p0, p1, kinks, scale, qs, wv, bv, rho, max_iter):
    """Stable fixed point c* of the correlation map in [0, 1] and chi_c = C'(c*). Returns (c*, chi_c, status).

    On [0, 1] the map is C(c) = (sigma_w^2 sum_k a_k^2 c^k + sigma_b^2) / q* with a_k >= 0 squares (Mehler), so
    G(c) = C(c) - c is convex with G(0) >= 0: if G'(1) <= 0 (and no dropout) c* = 1; otherwise Newton from c = 0
    increases monotonically to the unique root in [0, 1)."""
    if qs == 0.0:
        # q* = 0 (sigma_b = 0, phi(0) = 0). Positively homogeneous activations: the map does not depend on q.
        if is_homogeneous(code):
            qs = 1.0
        else:
            # smooth phi: the q -> 0 limit is the linearised map C(c) = rho c (chi_1 at rho = 1)
            d0 = phi_eval(ev, code, p0, p1, 0.0, 1)
            if rho == 1.0:
                return 1.0, wv * d0 * d0, OK
            return 0.0, wv * d0 * d0, OK
    if rho == 1.0 and not math.isinf(qs):
        # ordered or critical (C'(1) = chi_1 <= 1): c* = 1, chi_c = chi_1 -- a 1-D integral, no 2-D setup needed
        chi = wv * mean_sq(ev, code, p0, p1, kinks, scale, qs, 1)
        if chi <= 1.0:
            return 1.0, chi, OK
    mode, a, b, ca, cb = cmap_setup(ev, code, p0, p1, kinks, scale, qs)
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


@nb.njit(cache=True, parallel=True)
def fixed_points_many(ev, code, p0, p1, kinks, scale, wv, bv, rho, q0, need_c, max_iter):
    """For each (wv[i], bv[i], q0[i]): q*, chi_1 (gradient-norm ratio), dC/dc at c = 1, V'(q*), and (if need_c) c*,
    chi_c; plus status codes."""
    n = wv.size
    qs = np.empty(n)
    chi = np.empty(n)
    slope1 = np.empty(n)
    vp = np.empty(n)
    cs = np.full(n, np.nan)
    chic = np.full(n, np.nan)
    st_q = np.zeros(n, dtype=np.int64)
    st_c = np.zeros(n, dtype=np.int64)
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
        if need_c:
            c, d, sc = cstar_scalar(ev, code, p0, p1, kinks, scale, q, wv[i], bv[i], rho, max_iter)
            cs[i] = c
            chic[i] = d
            st_c[i] = sc
    return qs, chi, slope1, vp, cs, chic, st_q, st_c


@nb.njit(cache=True, parallel=True)
def length_map_many(ev, code, p0, p1, kinks, scale, q, wv, bv, rho):
    out = np.empty(q.size)
    for i in nb.prange(q.size):
        out[i] = length_map_scalar(ev, code, p0, p1, kinks, scale, q[i], wv[i], bv[i], rho)
    return out


@nb.njit(cache=True)
def correlation_map_many(ev, code, p0, p1, kinks, scale, c, q, wv, bv, rho):
    """C(c) and C'(c) at the given q; the Mehler setup is recomputed only when q changes between entries."""
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
            mode, a, b, ca, cb = cmap_setup(ev, code, p0, p1, kinks, scale, q[i])
            qlast = q[i]
        out[i], dout[i] = cmap_eval(mode, ev, code, p0, p1, kinks, scale, q[i], wv[i], bv[i], rho, c[i], a, b, ca, cb)
    return out, dout


@nb.njit(cache=True)
def _critical_g(ev, code, p0, p1, kinks, scale, q, bv):
    """g(q) = q - E[phi^2]/E[phi'^2] - sigma_b^2: zero where (sigma_w^2 = 1/E[phi'^2], q) is critical with bias bv."""
    e1 = mean_sq(ev, code, p0, p1, kinks, scale, q, 1)
    return q - mean_sq(ev, code, p0, p1, kinks, scale, q, 0) / e1 - bv


@nb.njit(cache=True, parallel=True)
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
            wv_out[i] = 1.0 / mean_sq(ev, code, p0, p1, kinks, scale, 0.0, 1)
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
            x = (lo * ghi - hi * glo) / (ghi - glo)
            if not (x > lo and x < hi):
                x = 0.5 * (lo + hi)
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
        wv_out[i] = 1.0 / mean_sq(ev, code, p0, p1, kinks, scale, x, 1)
    return wv_out, q_out, st


