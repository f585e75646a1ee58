"""Compiled kernels of the Gaussian-expectation engine (numba). The user-facing functions, with input checks, live in
:mod:`meanfield.gaussian`.

Scheme
------
(The private kernels receive ``scale`` with a negative sign for activations whose analyticity strip widens away
from u = 0 -- all poles on the imaginary axis -- so that panels may grow geometrically away from the transition region;
see ``_next_width``. Quadrature accuracy is unchanged and large q stays cheap.)

Gaussian expectations are integrals in the standard-normal variable z, u = sqrt(q) z. The rule is composite
Gauss-Legendre (16 nodes per panel) on z in [-ZMAX, ZMAX] with panel edges at the activation's kinks (so each panel
integrates an analytic function) and panel width h = min(1, scale/sqrt(q)), ``scale`` being the half-width of the
activation's strip of analyticity in u. A 16-point Gauss-Legendre panel of half-width h/2 integrates a function
analytic in the Bernstein ellipse with rho = 2d/h + sqrt((2d/h)^2 + 1) >= 2 + sqrt(5) with error ~ rho^(-32) < 1e-19
(relative to the function's size on the ellipse); the truncation at |z| = ZMAX = 10 drops Gaussian mass 1.5e-23.
Bivariate expectations are nested: E[f(u) g(v)] = E_z1[ f(su z1) E_z2[ g(sv (c z1 + s z2)) ] ] with s = sqrt(1 - c^2);
the inner integral is an analytic function of z1 except in a layer of width ~ s/|c| around the points where
sv c z1 hits a kink of g, so the outer rule places extra panel edges at those points and at +-1, 2, 4, 8 layer widths.
"""
from __future__ import annotations

import functools
import math
import types

import numba as nb

from . import _numba_cache  # noqa: F401  (installs the per-user kernel cache before any kernel below is defined)
import numpy as np

from ._cpu_share import free_cores

from .activations import ERF, LEAKY_RELU, LINEAR, RELU, SIN, has_closed_form, phi_eval

ZMAX = 10.0
ZMAX_COEF = 14.0
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)
GL_X = np.ascontiguousarray(_GL_X)
GL_W = np.ascontiguousarray(_GL_W)
NGL = 16


def _standard_rule():
    """The rule every smooth integrand varying on scales >= 1 in z gets: unit panels on [-ZMAX, ZMAX], with the
    standard normal density folded into the weights (computed once, at import)."""
    edges = np.arange(-10.0, 10.0 + 0.5, 1.0)
    z = (0.5 * (edges[:-1, None] + edges[1:, None]) + 0.5 * _GL_X[None, :]).ravel()
    w = (0.5 * np.ones_like(edges[:-1])[:, None] * _GL_W[None, :]).ravel() * np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return np.ascontiguousarray(z), np.ascontiguousarray(w)


STD_Z, STD_W = _standard_rule()
# graded panels: width <= GRADE * distance to the transition centre. The poles lie on the imaginary axis above the
# centre, so a panel [x, x + G x] (x the distance to the centre) sees them no closer than (1 + G/2) x from its middle,
# i.e. at 2/G + 1 half-widths: 16-point Gauss-Legendre then errs by ~rho^-32 with rho = r + sqrt(r^2 - 1), r = 2/G + 1,
# 3.5e-25 for G = 1 (0.25 gave 1e-40 at three times the nodes per decade of q).
GRADE = 1.0
HMIN = 1e-3       # smallest uniform panel width (non-graded activations at q > (scale / 1e-3)^2 reach it)



class _RowKernel:
    """A compiled loop over rows, built twice: with threads (``prange``) when the call carries at least ``min_work``
    (by default: rows, the entries of the 7th argument), serial below, where starting the threads costs more than it
    saves (~0.1 ms on an idle machine, tens of ms on a busy one), and serial whenever other processes keep the cores
    busy (:func:`meanfield._cpu_share.free_cores` < 2). Both builds are cached; the serial one has its own
    qualified name, so the two never share a cache entry. ``compile_both`` (set only by :mod:`meanfield._precompile`)
    runs the other build too, so that the install-time warm-up on tiny inputs compiles both."""

    compile_both = False

    def __init__(self, py_func, min_work, work=None):
        serial = types.FunctionType(py_func.__code__, py_func.__globals__, py_func.__name__ + "_serial",
                                    py_func.__defaults__, py_func.__closure__)
        serial.__qualname__ = py_func.__qualname__ + "_serial"
        self.parallel = nb.njit(cache=True, parallel=True)(py_func)
        self.serial = nb.njit(cache=True)(serial)
        self.min_work = min_work
        self.work = work if work is not None else (lambda args: np.size(args[6]))
        functools.update_wrapper(self, py_func)

    def __call__(self, *args):
        threads = self.work(args) >= self.min_work and nb.config.NUMBA_NUM_THREADS > 1 and free_cores() > 1
        if _RowKernel.compile_both:
            (self.serial if threads else self.parallel)(*args)
        return (self.parallel if threads else self.serial)(*args)


def row_kernel(min_work, work=None):
    """Decorator: :class:`_RowKernel` with the given threshold (and measure of work)."""
    return lambda py_func: _RowKernel(py_func, min_work, work)


@nb.njit(cache=True)
def _sorted_edges(lo, hi, pts, n):
    """Sorted unique panel edges: lo, hi and the points pts[:n] inside (lo, hi)."""
    e = np.empty(n + 2)
    m = 0
    e[m] = lo
    m += 1
    for i in range(n):
        if pts[i] > lo and pts[i] < hi:
            e[m] = pts[i]
            m += 1
    e[m] = hi
    m += 1
    out = np.sort(e[:m])
    # drop duplicates
    k = 1
    for i in range(1, m):
        # relative tolerance only: kinks at +-1/sqrt(q) for q ~ 1e50 lie 1e-25 apart and must stay separate panels
        if out[i] > out[k - 1] + 1e-15 * max(abs(out[i]), abs(out[k - 1])):
            out[k] = out[i]
            k += 1
    return out[:k]



@nb.njit(cache=True)
def _next_width(x, hi, h, graded, centre, cap):
    """Width of the next panel starting at x: h, or (graded rule) a fraction GRADE of the distance to the centre of
    the activation's transition region, capped at 1 and at the segment end hi."""
    w = h
    if graded:
        if x >= centre:
            g = GRADE * (x - centre)
        else:
            g = GRADE * (centre - x) / (1.0 + GRADE)
        if g > w:
            w = g
    if w > cap:
        w = cap
    if w < HMIN and not graded:
        w = HMIN
    # no panel narrower than the spacing of floats at x: at huge q the graded width scale/sqrt(q) falls below
    # eps |x| (selu at q = 1e50 next to its kink at z = -1), x + w == x, and the rule never ended. Such a panel is
    # below the resolution of z itself (sqrt(q) z varies by more than the activation's scale within one ulp of z);
    # its share of the integral is O(1e-15). Near z = 0 the floats are dense and no floor applies (tanh' at
    # q = 1e300 lives on |z| < 1e-150).
    floor = 8.9e-16 * abs(x)   # 4 ulp
    if w < floor:
        w = floor
    if x + w > hi or hi - (x + w) < 0.25 * w:
        w = hi - x
    return w

@nb.njit(cache=True)
def _pw(ev, code, p0, p1, x, order):
    """phi^(order)(x), with order -1 meaning the constant 1."""
    if order < 0:
        return 1.0
    return phi_eval(ev, code, p0, p1, x, order)


@nb.njit(cache=True)
def _rule(edges, h, graded, centre, cap):
    """Composite 16-point Gauss-Legendre rule on the segments between ``edges``: nodes z and plain Legendre weights
    (the caller multiplies by its weight function). Panel widths from ``_next_width``."""
    n = 0
    for e in range(edges.size - 1):
        x = edges[e]
        while x < edges[e + 1]:
            x += _next_width(x, edges[e + 1], h, graded, centre, cap)
            n += 1
    z = np.empty(n * NGL)
    w = np.empty(n * NGL)
    k = 0
    for e in range(edges.size - 1):
        x = edges[e]
        hi = edges[e + 1]
        while x < hi:
            width = _next_width(x, hi, h, graded, centre, cap)
            mid = x + 0.5 * width
            x += width
            for j in range(NGL):
                z[k] = mid + 0.5 * width * GL_X[j]
                w[k] = 0.5 * width * GL_W[j]
                k += 1
    return z, w


@nb.njit(cache=True)
def _scaled_rule(kinks, scale, sd, mean, zmax, hmax):
    """Rule in z for integrands of phi(mean + sd z): panel edges where mean + sd z hits a kink, width
    min(hmax, |scale| / sd), graded about the transition centre z = -mean/sd when scale < 0."""
    graded = scale < 0.0
    h = hmax
    if sd > 0.0 and abs(scale) / sd < h:
        h = abs(scale) / sd
    pts = np.empty(kinks.size)
    for i in range(kinks.size):
        if sd > 0.0:
            pts[i] = (kinks[i] - mean) / sd
        else:
            pts[i] = 0.0 if kinks[i] == mean else 1e300  # q = 0: phi^(k)(0 z) is a step at z = 0
    centre = -mean / sd if sd > 0.0 else 0.0
    return _rule(_sorted_edges(-zmax, zmax, pts, kinks.size), h, graded, centre, hmax)


TINY = 1e-300     # one-sided evaluation point of the q -> 0 limits (phi^(k)(+-TINY) = phi^(k)(0+-) to rounding)


@nb.njit(cache=True)
def _kink_at_zero(kinks):
    for i in range(kinks.size):
        if kinks[i] == 0.0:
            return True
    return False


@nb.njit(cache=True)
def _limit0(ev, code, p0, p1, kinks, a, b):
    """lim_{q -> 0} E[phi^(a)(u) phi^(b)(u)], u ~ N(0, q): phi^(a) phi^(b) at 0, or, for a kink at 0, the mean of the
    one-sided limits (u > 0 and u < 0 each carry probability 1/2), e.g. E[phi'^2] -> (phi'(0-)^2 + phi'(0+)^2) / 2."""
    if _kink_at_zero(kinks):
        # phi itself (order 0) is continuous at the kink: its factor is phi(0) exactly (phi(+-TINY) would leave
        # ~1e-300 behind, e.g. E[relu(u)] at q = 0); only the derivatives take the one-sided values
        ta = TINY if a >= 1 else 0.0
        tb = TINY if b >= 1 else 0.0
        return 0.5 * (_pw(ev, code, p0, p1, ta, a) * _pw(ev, code, p0, p1, tb, b)
                      + _pw(ev, code, p0, p1, -ta, a) * _pw(ev, code, p0, p1, -tb, b))
    return _pw(ev, code, p0, p1, 0.0, a) * _pw(ev, code, p0, p1, 0.0, b)


@nb.njit(cache=True)
def e1d(ev, code, p0, p1, kinks, scale, q, a, b, m):
    """E[u^m phi^(a)(u) phi^(b)(u)], u ~ N(0, q); a, b in {-1 (constant 1), 0, 1, 2}, m in {0, 1}."""
    if q <= 0.0:
        if m == 1:
            return 0.0
        return _limit0(ev, code, p0, p1, kinks, a, b)
    s = math.sqrt(q)
    if kinks.size == 0 and abs(scale) >= s:
        # smooth and slowly varying in z: the precomputed standard rule (same nodes _scaled_rule would build)
        acc = 0.0
        for j in range(STD_Z.size):
            u = s * STD_Z[j]
            val = _pw(ev, code, p0, p1, u, a) * _pw(ev, code, p0, p1, u, b)
            if m == 1:
                val *= u
            acc += STD_W[j] * val
        return acc
    z, w = _scaled_rule(kinks, scale, s, 0.0, ZMAX, 1.0)
    acc = 0.0
    for j in range(z.size):
        u = s * z[j]
        val = _pw(ev, code, p0, p1, u, a) * _pw(ev, code, p0, p1, u, b)
        if m == 1:
            val *= u
        acc += w[j] * val * math.exp(-0.5 * z[j] * z[j])
    return acc * _INV_SQRT_2PI


@nb.njit(cache=True)
def e1d_sq_and_slope(ev, code, p0, p1, kinks, scale, q):
    """(E[phi(u)^2], E[u phi(u) phi'(u)] / q) in one pass over the nodes (the length map and its slope)."""
    if has_closed_form(code) or q <= 1e-100:
        qe = q if q > 1e-100 else 1e-100
        return mean_sq(ev, code, p0, p1, kinks, scale, q, 0), e1d(ev, code, p0, p1, kinks, scale, qe, 0, 1, 1) / qe
    s = math.sqrt(q)
    e0 = 0.0
    e1 = 0.0
    if kinks.size == 0 and abs(scale) >= s:
        for j in range(STD_Z.size):
            u = s * STD_Z[j]
            f = phi_eval(ev, code, p0, p1, u, 0)
            e0 += STD_W[j] * f * f
            e1 += STD_W[j] * u * f * phi_eval(ev, code, p0, p1, u, 1)
        return e0, e1 / q
    z, w = _scaled_rule(kinks, scale, s, 0.0, ZMAX, 1.0)
    for j in range(z.size):
        u = s * z[j]
        g = w[j] * math.exp(-0.5 * z[j] * z[j])
        f = phi_eval(ev, code, p0, p1, u, 0)
        e0 += g * f * f
        e1 += g * u * f * phi_eval(ev, code, p0, p1, u, 1)
    return e0 * _INV_SQRT_2PI, e1 * _INV_SQRT_2PI / q


@nb.njit(cache=True)
def _smooth1(ev, code, p0, p1, kinks, scale, mean, sd, order):
    """E[phi^(order)(mean + sd z)], z ~ N(0, 1) (inner integral of the nested rule)."""
    if sd <= 0.0:
        return _pw(ev, code, p0, p1, mean, order)
    if kinks.size == 0 and abs(scale) >= sd and abs(mean) <= abs(scale):
        acc = 0.0
        for j in range(STD_Z.size):
            acc += STD_W[j] * _pw(ev, code, p0, p1, mean + sd * STD_Z[j], order)
        return acc
    z, w = _scaled_rule(kinks, scale, sd, mean, ZMAX, 1.0)
    acc = 0.0
    for j in range(z.size):
        acc += w[j] * _pw(ev, code, p0, p1, mean + sd * z[j], order) * math.exp(-0.5 * z[j] * z[j])
    return acc * _INV_SQRT_2PI


_LAYER = np.array([-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0])


@nb.njit(cache=True)
def outer_rule(kinks, scale, qu, qv, quv):
    """The outer rule of the nested 2-D rule for ``(u, v) ~ N(0, [[qu, quv], [quv, qv]])`` (``qu, qv > 0``), with
    ``u = su z``, ``v = sv c z + sd z'``: nodes ``z`` and plain weights ``w`` (panel edges at the kinks of
    ``phi(su z)`` and at the boundary layers of the inner integral around ``sv c z = kink``), and
    ``(su, sv, c, sd)``. Written once for :func:`e2d` and the finite-width pair nodes."""
    su = math.sqrt(qu)
    sv = math.sqrt(qv)
    c = quv / (su * sv)
    if c > 1.0:
        c = 1.0
    if c < -1.0:
        c = -1.0
    # sqrt(1 - c^2) from the scaled covariance: qu qv overflows for q > 1.3e154 (the old inf - inf gave s = 0, a
    # wrong number, or NaN) and cancels near |c| = 1
    _, sa, sb, _, sdet = _scaled_cov(qu, qv, quv)
    s = math.sqrt(sdet) / (math.sqrt(sa) * math.sqrt(sb)) if sdet > 0.0 else 0.0
    sd = sv * s
    ascale = abs(scale)
    h = 1.0
    if ascale / su < h:
        h = ascale / su
    if abs(c) > 0.0 and ascale / (sv * abs(c)) < h:
        h = ascale / (sv * abs(c))
    # panel edges: kinks of phi(su z) and the boundary layers of the inner integral around sv c z = kink
    nk = kinks.size
    npts = nk
    if abs(c) > 0.0:
        npts += nk * _LAYER.size
    pts = np.empty(npts)
    for i in range(nk):
        pts[i] = kinks[i] / su
    if abs(c) > 0.0:
        width = s / abs(c)
        for i in range(nk):
            layer_centre = kinks[i] / (sv * c)
            for j in range(_LAYER.size):
                pts[nk + i * _LAYER.size + j] = layer_centre + _LAYER[j] * width
    z, w = _rule(_sorted_edges(-ZMAX, ZMAX, pts, npts), h, scale < 0.0, 0.0, 1.0)
    return z, w, su, sv, c, sd


@nb.njit(cache=True)
def e2d_moment(ev, code, p0, p1, kinks, scale, qu, qv, quv, a, b, m):
    """E[u^m phi^(a)(u) phi^(b)(v)] for (u, v) ~ N(0, [[qu, quv], [quv, qv]]), m in {0, 1}, by the nested composite
    rule (``phi^(2)`` is the regular part of phi'', without delta functions at the kinks)."""
    if qu <= 0.0 and qv <= 0.0:
        if m == 1:
            return 0.0
        return e1d(ev, code, p0, p1, kinks, scale, 0.0, a, b, 0)       # u = v = 0: the c = 1 limit
    if qu <= 0.0:
        if m == 1:
            return 0.0
        # one variance 0 (so q_uv = 0): the c = 0 limit, phi^(a)(0) averaged over the two sides of a kink at 0
        return _limit0(ev, code, p0, p1, kinks, a, -1) * e1d(ev, code, p0, p1, kinks, scale, qv, b, -1, 0)
    if qv <= 0.0:
        return _limit0(ev, code, p0, p1, kinks, b, -1) * e1d(ev, code, p0, p1, kinks, scale, qu, a, -1, m)
    z, w, su, sv, c, sd = outer_rule(kinks, scale, qu, qv, quv)
    acc = 0.0
    for j in range(z.size):
        fz = _pw(ev, code, p0, p1, su * z[j], a)
        if m == 1:
            fz *= su * z[j]
        if fz != 0.0:
            inner = _smooth1(ev, code, p0, p1, kinks, scale, sv * c * z[j], sd, b)
            acc += w[j] * fz * inner * math.exp(-0.5 * z[j] * z[j])
    return acc * _INV_SQRT_2PI


@nb.njit(cache=True)
def e2d(ev, code, p0, p1, kinks, scale, qu, qv, quv, a, b):
    """E[phi^(a)(u) phi^(b)(v)] for (u, v) ~ N(0, [[qu, quv], [quv, qv]]) by the nested composite rule."""
    return e2d_moment(ev, code, p0, p1, kinks, scale, qu, qv, quv, a, b, 0)


@nb.njit(cache=True)
def _sin_minus_xcos(x):
    """sin x - x cos x without cancellation for small x (series sum_n (-1)^(n+1) 2n x^(2n+1) / (2n+1)!)."""
    if x > 0.5:
        return math.sin(x) - x * math.cos(x)
    x2 = x * x
    term = x * x2 / 3.0  # n = 1
    acc = term
    for n in range(2, 12):
        term *= -x2 / ((2.0 * n) * (2.0 * n + 1.0)) * (2.0 * n) / (2.0 * n - 2.0)
        acc += term
    return acc


@nb.njit(cache=True)
def _two_prod(a, b):
    """(p, e) with p = fl(a b) and p + e = a b exactly (Dekker / Veltkamp splitting; needs |a|, |b| <= 1e290)."""
    p = a * b
    t = 134217729.0 * a
    ah = t - (t - a)
    al = a - ah
    t = 134217729.0 * b
    bh = t - (t - b)
    bl = b - bh
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


@nb.njit(cache=True)
def _scaled_cov(qu, qv, quv):
    """(S, a, b, c, det) with (qu, qv, quv) = S (a, b, c), S a power of two (exact scaling, no overflow or underflow
    of the products below) and det = a b - c^2 >= 0 to a few ulps of a b, free of cancellation near c^2 = a b."""
    m = qu if qu > qv else qv
    if m <= 0.0:
        return 0.0, 0.0, 0.0, 0.0, 0.0
    _, ex = math.frexp(m)
    if ex > 1023:
        # m >= 2^1023: 2^1024 overflows to inf (and a = b = c = 0 gave E[erf'^2] = nan, E[erf^2] = 0 at q = 1.8e308);
        # 2^1023 keeps a, b, c in [1, 2), where every product below is still far from overflow
        ex = 1023
    S = math.ldexp(1.0, ex)
    a = qu / S
    b = qv / S
    c = quv / S
    p1, e1 = _two_prod(a, b)
    p2, e2 = _two_prod(c, c)
    det = (p1 - p2) + (e1 - e2)
    if det < 0.0:
        det = 0.0
    return S, a, b, c, det


@nb.njit(cache=True)
def pair_closed(code, p0, qu, qv, quv, deriv):
    """Closed form of E[phi(u)phi(v)] (deriv=0) or E[phi'(u)phi'(v)] (deriv=1): one of the pair that
    :func:`pair_closed_both` computes (the formulas are there)."""
    e, d = pair_closed_both(code, p0, qu, qv, quv, deriv == 0, deriv == 1)
    return e if deriv == 0 else d


@nb.njit(cache=True, inline="always")
def pair_closed_both(code, p0, qu, qv, quv, want_e, want_d):
    """Closed forms of (E[phi(u)phi(v)], E[phi'(u)phi'(v)]), sharing the scaled covariance and the angle between
    the two (a kernel tile needs both at every entry); ``want_e``/``want_d`` False skips that one (returned as 0).

    relu (Cho & Saul arc-cosine): sqrt(qu qv)/(2 pi) (sin t + (pi - t) cos t), (pi - t)/(2 pi), t = angle;
    leaky_relu with slope a = a x + (1-a) relu(x): a quv + (1-a)^2 R, a + (1-a)^2 (pi - t)/(2 pi);
    erf (Williams): (2/pi) arcsin(2 quv / sqrt((1+2qu)(1+2qv))), (4/pi) / sqrt((1+2qu)(1+2qv) - 4 quv^2);
    linear: quv, 1; sin: e^(-(qu+qv)/2) sinh(quv), e^(-(qu+qv)/2) cosh(quv). Everything is evaluated on the
    covariance scaled by a power of two S (so no product overflows for q up to 1e308 or underflows for q down to
    1e-308) with det = qu qv - quv^2 computed free of cancellation (``_scaled_cov``); the angle t = atan2(sqrt(det),
    quv) is then accurate to a few ulps also near c = +-1, and (1+2qu)(1+2qv) - 4 quv^2 = 1 + 2(qu + qv) + 4 det has
    no cancellation either.
    Degenerate variances: qu = qv = 0 is the c = 1 limit (u = v = 0); one zero variance gives t = pi/2 (c = 0).
    """
    e = 0.0
    d = 0.0
    if code == LINEAR:
        return quv, 1.0
    if code == SIN:
        # E[sin u sin v] = e^(-s) sinh(quv), E[cos u cos v] = e^(-s) cosh(quv), s = (qu + qv)/2 >= |quv|. For large
        # arguments the exponents are combined, e^(-s) sinh(x) = (e^(x-s) - e^(-x-s))/2 with both exponents <= 0, so
        # nothing overflows (q up to 1e308); with |x| >= 1 the difference loses at most a factor coth(1) ~ 1.3.
        s = 0.5 * qu + 0.5 * qv
        if s < 700.0 or abs(quv) < 1.0:
            g = math.exp(-s)
            return g * math.sinh(quv), g * math.cosh(quv)
        ep = math.exp(quv - s)
        em = math.exp(-quv - s)
        return 0.5 * (ep - em), 0.5 * (ep + em)
    S, a, b, c, det = _scaled_cov(qu, qv, quv)
    if code == ERF:
        # scaled by S: (1+2qu)(1+2qv) - 4quv^2 = S^2 (1/S^2 + 2(a+b)/S + 4 det)
        if S == 0.0:
            return 0.0, 4.0 / math.pi
        if S < 1e-100:
            # tiny variances: unscaled, g = 1 + 2(qu + qv) + 4 det (1/S^2 would overflow for S < 1e-154; S^2 det
            # underflows, harmlessly next to 1)
            g1 = 1.0 + 2.0 * (qu + qv) + 4.0 * (S * S * det)
            sg1 = math.sqrt(g1)
            if want_e:
                e = (2.0 / math.pi) * math.atan2(2.0 * quv, sg1)
            return e, (4.0 / math.pi) / sg1
        inv = 1.0 / S
        sg = math.sqrt(inv * inv + 2.0 * (a + b) * inv + 4.0 * det)
        if want_e:
            # (2/pi) asin(2 quv / sqrt(A B)) = (2/pi) atan2(2 quv, sqrt(A B - 4 quv^2)), divided through by S
            e = (2.0 / math.pi) * math.atan2(2.0 * c, sg)
        return e, (4.0 / math.pi) / (S * sg)
    # relu family
    slope = p0 if code == LEAKY_RELU else 0.0
    if S == 0.0:
        # u = v = 0: the c = 1 limit (E[phi'^2] -> (1 + slope^2) / 2)
        return 0.0, slope + (1.0 - slope) ** 2 * 0.5
    sd = math.sqrt(det)
    if a == 0.0 or b == 0.0:
        t = 0.5 * math.pi
        pit = 0.5 * math.pi
    elif c < 0.0:
        # pi - t without cancellation near c = -1 (t -> pi)
        pit = math.atan2(sd, -c)
        t = math.pi - pit
    else:
        t = math.atan2(sd, c)
        pit = math.pi - t
    if want_e:
        if c < 0.0:
            # near c = -1 the two terms cancel: with x = pi - t, sqrt(det) + (pi - t) quv = sqrt(qu qv) (sin x - x cos x)
            r = math.sqrt(a) * math.sqrt(b) * _sin_minus_xcos(pit) / (2.0 * math.pi)
        else:
            r = (sd + pit * c) / (2.0 * math.pi)
        e = S * (slope * c + (1.0 - slope) ** 2 * r)
    if want_d:
        d = slope + (1.0 - slope) ** 2 * pit / (2.0 * math.pi)
    return e, d


@nb.njit(cache=True)
def dmean_sq_dq(ev, code, p0, p1, kinks, scale, q):
    """d/dq E[phi(sqrt(q) z)^2] = E[u phi(u) phi'(u)] / q (Gaussian integration by parts; needs only phi, phi')."""
    if code == RELU:
        return 0.5
    if code == LEAKY_RELU:
        return 0.5 * (1.0 + p0 * p0)
    if code == LINEAR:
        return 1.0
    if code == ERF:
        return 4.0 / (math.pi * (1.0 + 2.0 * q) * math.sqrt(1.0 + 4.0 * q))
    if code == SIN:
        return math.exp(-2.0 * q)      # d/dq (1 - e^(-2q)) / 2
    qe = q if q > 1e-100 else 1e-100
    return e1d(ev, code, p0, p1, kinks, scale, qe, 0, 1, 1) / qe


@nb.njit(cache=True)
def dmean_sq_dot_dq(ev, code, p0, p1, kinks, scale, dl, dr, q):
    """d/dq E[phi'(u)^2], u ~ N(0, q), for phi' with jumps: ``(1/(2q)) E[u h'(u)]`` with ``h = phi'^2`` (Gaussian
    integration by parts), ``h' = 2 phi' phi''`` between the kinks plus ``(dr_k^2 - dl_k^2) delta(u - k)`` at each kink
    ``k`` (``dl, dr`` the one-sided values phi'(k-), phi'(k+)):

    ``(1/q) E[u phi'(u) phi''(u)] + (1/(2q)) sum_k (dr_k^2 - dl_k^2) k p_q(k)``, ``p_q`` the N(0, q) density."""
    qe = q if q > 1e-100 else 1e-100
    acc = e1d(ev, code, p0, p1, kinks, scale, qe, 1, 2, 1)
    for i in range(kinks.size):
        k = kinks[i]
        if k != 0.0:
            pk = math.exp(-0.5 * k * k / qe) / math.sqrt(2.0 * math.pi * qe)
            acc += 0.5 * (dr[i] * dr[i] - dl[i] * dl[i]) * k * pk
    return acc / qe


@nb.njit(cache=True)
def _kink_side(ev, code, p0, p1, kinks, scale, dl, dr, qu, qv, quv, sd, want_dot):
    """The u-side terms of :func:`pair_partials_kinked` at qu > 0: the delta functions of phi''(u) at the kinks,
    ``J_k delta(u - k)`` with ``J_k = phi'(k+) - phi'(k-)``, integrated against functions of v through the law of v
    given u = k, N(quv k / qu, sd^2):

    ``(sum_k J_k p_u(k) E[phi(v) | k], sum_k J_k p_u(k) E[r(v) | k], sum_k J_k k p_u(k) E[phi'(v) | k],
    sum_{k, l} J_k J_l p_u(k) p_{v|k}(l))`` (``r`` the regular part of phi''; the last sum needs sd > 0)."""
    s0 = 0.0
    s2 = 0.0
    s1 = 0.0
    dd = 0.0
    for i in range(kinks.size):
        J = dr[i] - dl[i]
        if J == 0.0:
            continue
        k = kinks[i]
        pk = math.exp(-0.5 * k * k / qu) / math.sqrt(2.0 * math.pi * qu)
        mean = quv / qu * k
        s0 += J * pk * _smooth1(ev, code, p0, p1, kinks, scale, mean, sd, 0)
        if want_dot:
            s2 += J * pk * _smooth1(ev, code, p0, p1, kinks, scale, mean, sd, 2)
            s1 += J * k * pk * _smooth1(ev, code, p0, p1, kinks, scale, mean, sd, 1)
            if sd > 0.0:
                for l in range(kinks.size):
                    Jl = dr[l] - dl[l]
                    if Jl != 0.0:
                        t = (kinks[l] - mean) / sd
                        dd += J * Jl * pk * math.exp(-0.5 * t * t) * _INV_SQRT_2PI / sd
    return s0, s2, s1, dd


@nb.njit(cache=True)
def pair_partials_kinked(ev, code, p0, p1, kinks, scale, dl, dr, qu, qv, quv, want_dot):
    """Partial derivatives of ``qhat = E[phi(u) phi(v)]`` and ``qdot = E[phi'(u) phi'(v)]`` with respect to
    ``(qu, qv, quv)`` for an activation phi that is continuous with a piecewise smooth phi' (jumps ``J_k`` of phi' at
    the kinks: ``phi'' = r + sum_k J_k delta(. - k)``, ``r`` the regular part, ``_pw(.., 2)``). Gaussian integration
    by parts in the distributional sense:

    * ``d qhat/dqu = E[phi''(u) phi(v)] / 2 = (E[r(u) phi(v)] + sum_k J_k p_u(k) E[phi(v) | u = k]) / 2``;
    * ``d qdot/dquv = E[phi''(u) phi''(v)] = E[r(u) r(v)] + sum_k J_k p_u(k) E[r(v) | u = k] + (u <-> v)
      + sum_{k,l} J_k J_l p(k, l)`` (Price's theorem);
    * ``d qdot/dqu = E[phi^(3)(u) phi'(v)] / 2 = (E[u phi''(u) phi'(v)] - quv d qdot/dquv) / (2 qu)`` by Stein's
      identity ``E[u h] = qu E[d_u h] + quv E[d_v h]`` for ``h = phi''(u) phi'(v)``, which avoids the derivatives of
      delta functions in phi^(3); ``E[u phi''(u) phi'(v)] = E[u r(u) phi'(v)] + sum_k J_k k p_u(k) E[phi'(v) | u = k]``.

    The regular parts are nested-rule integrals (:func:`e2d_moment`); the conditional laws are
    ``v | u = k ~ N(quv k / qu, det / qu)`` (:func:`_kink_side`). At correlation +1 with equal variances (identical
    inputs, which every parameter keeps identical) the ``d qdot`` partials are those of the derivative along that
    line: ``0, s(q)/2, s(q)/2`` with ``s = d E[phi'^2]/dq`` (:func:`dmean_sq_dot_dq`). At any other degenerate
    covariance (correlation -1, or +1 with different variances: proportional inputs without bias, which a bias
    variance moves off the line) the ``d qdot`` partials, and at a zero variance all partials, are NaN: the
    derivatives of a kinked activation are unbounded there (one-sided), and the caller raises.

    Returns ``(a_u, a_v, b_Q, b_u, b_v)`` (the b's NaN without ``want_dot``)."""
    nan = math.nan
    if qu <= 0.0 or qv <= 0.0:
        return nan, nan, nan, nan, nan
    S, a, b, c, sdet = _scaled_cov(qu, qv, quv)
    sd_v = math.sqrt(S * sdet / a)     # sd of v given u: det / qu = S sdet / a
    sd_u = math.sqrt(S * sdet / b)
    u0, u2, u1, dd = _kink_side(ev, code, p0, p1, kinks, scale, dl, dr, qu, qv, quv, sd_v, want_dot)
    v0, v2, v1, _ = _kink_side(ev, code, p0, p1, kinks, scale, dl, dr, qv, qu, quv, sd_u, want_dot)
    a_u = 0.5 * (e2d_moment(ev, code, p0, p1, kinks, scale, qu, qv, quv, 2, 0, 0) + u0)
    a_v = 0.5 * (e2d_moment(ev, code, p0, p1, kinks, scale, qv, qu, quv, 2, 0, 0) + v0)
    if not want_dot:
        return a_u, a_v, nan, nan, nan
    if sdet <= 0.0:
        if quv > 0.0 and qu == qv:
            return (a_u, a_v, 0.0, 0.5 * dmean_sq_dot_dq(ev, code, p0, p1, kinks, scale, dl, dr, qu),
                    0.5 * dmean_sq_dot_dq(ev, code, p0, p1, kinks, scale, dl, dr, qv))
        return a_u, a_v, nan, nan, nan
    bq = e2d_moment(ev, code, p0, p1, kinks, scale, qu, qv, quv, 2, 2, 0) + u2 + v2 + dd
    mu = e2d_moment(ev, code, p0, p1, kinks, scale, qu, qv, quv, 2, 1, 1) + u1
    mv = e2d_moment(ev, code, p0, p1, kinks, scale, qv, qu, quv, 2, 1, 1) + v1
    return a_u, a_v, bq, (mu - quv * bq) / (2.0 * qu), (mv - quv * bq) / (2.0 * qv)


@row_kernel(4, work=lambda args: args[8].size)
def pair_partials_kinked_tile(ev, code, p0, p1, kinks, scale, dl, dr, Q, qi, qj, want_dot, out):
    """:func:`pair_partials_kinked` on a tile of covariances ``Q`` (rows' variances ``qi``, columns' ``qj``) into
    ``out`` of shape (5,) + Q.shape."""
    for ii in nb.prange(Q.shape[0]):
        for jj in range(Q.shape[1]):
            r = pair_partials_kinked(ev, code, p0, p1, kinks, scale, dl, dr, qi[ii], qj[jj], Q[ii, jj], want_dot)
            out[0, ii, jj] = r[0]
            out[1, ii, jj] = r[1]
            out[2, ii, jj] = r[2]
            out[3, ii, jj] = r[3]
            out[4, ii, jj] = r[4]


@row_kernel(64, work=lambda args: args[8].size)
def dmean_sq_dot_dq_many(ev, code, p0, p1, kinks, scale, dl, dr, q):
    out = np.empty(q.size)
    for i in nb.prange(q.size):
        out[i] = dmean_sq_dot_dq(ev, code, p0, p1, kinks, scale, dl, dr, q[i])
    return out


@nb.njit(cache=True)
def pair_expect(ev, code, p0, p1, kinks, scale, qu, qv, quv, deriv):
    """E[phi^(d)(u) phi^(d)(v)], d = deriv in {0, 1}: closed form if one exists, else the nested rule."""
    if has_closed_form(code):
        return pair_closed(code, p0, qu, qv, quv, deriv)
    return e2d(ev, code, p0, p1, kinks, scale, qu, qv, quv, deriv, deriv)


@nb.njit(cache=True)
def mean_sq(ev, code, p0, p1, kinks, scale, q, deriv):
    """E[phi^(d)(u)^2], u ~ N(0, q): closed form if one exists, else the 1-D rule."""
    if has_closed_form(code):
        return pair_closed(code, p0, q, q, q, deriv)
    return e1d(ev, code, p0, p1, kinks, scale, q, deriv, deriv, 0)


@nb.njit(cache=True, inline="always")
def _hermite_next(z, psi, psi_prev, k):
    """psi_{k+1}(z) from psi_k, psi_{k-1}: the normalised Hermite recurrence (He_k / sqrt(k!) times the starting
    weight), written once for :func:`hermite_coeffs` and :func:`hermite_basis`."""
    return (z * psi - math.sqrt(k) * psi_prev) / math.sqrt(k + 1.0)


@nb.njit(cache=True)
def hermite_coeffs(ev, code, p0, p1, kinks, scale, q, nterms, deriv):
    """Normalised Hermite coefficients a_k = E[f(z) He_k(z)] / sqrt(k!), k < nterms, f(z) = phi^(deriv)(sqrt(q) z), on
    the kink-aware composite rule: the rule :func:`meanfield.gaussian.hermite_table` uses for activations with kinks
    (where a Gauss-Hermite rule converges only algebraically) and for variances so large that no Gauss-Hermite rule
    of up to 4096 nodes resolves phi(sqrt(q) z).

    a_k = int f(z) psi_k(z) sqrt(phi_N(z)) dz with the Hermite functions psi_k = He_k sqrt(phi_N)/sqrt(k!)
    (|psi_k| <= 1), on a composite Gauss-Legendre rule over |z| <= 14 (sqrt(phi_N) < 4e-22 beyond), panels split
    where sqrt(q) z hits a kink, width <= min(12/sqrt(2 nterms + 1), scale/sqrt(q)): psi_k oscillates at most like
    cos(sqrt(2k+1) z), i.e. <= 6 rad per panel half-width, which 16-point Gauss-Legendre integrates to
    ~6^32/32! < 1e-20. The recurrence runs node by node (no basis matrix: the rule can have 1e4 nodes).
    Mehler: E[f(z1) g(z2)] = sum_k a_k(f) a_k(g) c^k for corr(z1, z2) = c.
    """
    out = np.zeros(nterms)
    s = math.sqrt(q) if q > 0.0 else 0.0
    hosc = 12.0 / math.sqrt(2.0 * nterms + 1.0)
    if hosc > 1.0:
        hosc = 1.0
    z, w = _scaled_rule(kinks, scale, s, 0.0, ZMAX_COEF, hosc)
    c0 = (2.0 * math.pi) ** -0.25
    for j in range(z.size):
        g = math.exp(-0.25 * z[j] * z[j]) * c0  # sqrt of the standard normal density
        u = s * z[j] if s > 0.0 else math.copysign(TINY, z[j])   # q = 0: the one-sided limits at a kink at 0
        wt = w[j] * phi_eval(ev, code, p0, p1, u, deriv) * g
        psi_prev = 0.0
        psi = g
        for k in range(nterms):
            out[k] += wt * psi
            psi_next = _hermite_next(z[j], psi, psi_prev, k)
            psi_prev = psi
            psi = psi_next
    return out


@nb.njit(cache=True)
def mehler_sum(coef_a, coef_b, c):
    """sum_k a_k b_k c^k by Horner's rule."""
    acc = 0.0
    for k in range(coef_a.size - 1, -1, -1):
        acc = acc * c + coef_a[k] * coef_b[k]
    return acc


@row_kernel(64)
def e1d_many(ev, code, p0, p1, kinks, scale, q, a, b, m):
    out = np.empty(q.size)
    for i in nb.prange(q.size):
        out[i] = e1d(ev, code, p0, p1, kinks, scale, q[i], a, b, m)
    return out


@row_kernel(8)
def pair_expect_many(ev, code, p0, p1, kinks, scale, qu, qv, quv, deriv):
    out = np.empty(qu.size)
    for i in nb.prange(qu.size):
        out[i] = pair_expect(ev, code, p0, p1, kinks, scale, qu[i], qv[i], quv[i], deriv)
    return out


@row_kernel(64)
def mean_sq_many(ev, code, p0, p1, kinks, scale, q, deriv):
    out = np.empty(q.size)
    for i in nb.prange(q.size):
        out[i] = mean_sq(ev, code, p0, p1, kinks, scale, q[i], deriv)
    return out


@row_kernel(8)
def e2d_many(ev, code, p0, p1, kinks, scale, qu, qv, quv, a, b):
    out = np.empty(qu.size)
    for i in nb.prange(qu.size):
        out[i] = e2d(ev, code, p0, p1, kinks, scale, qu[i], qv[i], quv[i], a, b)
    return out


@row_kernel(8)
def hermite_coeffs_many(ev, code, p0, p1, kinks, scale, q, nterms, deriv):
    out = np.empty((q.size, nterms))
    for i in nb.prange(q.size):
        out[i, :] = hermite_coeffs(ev, code, p0, p1, kinks, scale, q[i], nterms, deriv)
    return out




@nb.njit(cache=True)
def rule_1d(kinks, scale, q):
    """Nodes z and weights w (standard normal density included) of the 1-D rule used by e1d."""
    s = math.sqrt(q) if q > 0.0 else 0.0
    z, w = _scaled_rule(kinks, scale, s, 0.0, ZMAX, 1.0)
    for j in range(z.size):
        w[j] *= math.exp(-0.5 * z[j] * z[j]) * _INV_SQRT_2PI
    return z, w


# ------------------------------------------------------------------------ tiles of a kernel matrix
@nb.njit(cache=True)
def eval_grid(ev, code, p0, p1, x, order):
    """``phi^(order)(x[r, n])`` on a 2-D grid."""
    m, n = x.shape
    out = np.empty((m, n))
    for r in nb.prange(m):
        for s in range(n):
            out[r, s] = phi_eval(ev, code, p0, p1, x[r, s], order)
    return out


@nb.njit(cache=True)
def hermite_basis(nodes, sqrtw, n_terms):
    """``G[s, k] = sqrt(w_s) He_k(z_s) / sqrt(k!)`` by the normalised three-term recurrence (the one place the
    Hermite recurrence is written).

    For a Gauss-Hermite rule discrete orthonormality gives ``|G[s, k]| <= 1``; with ``sqrtw`` the square root of the
    normal density these are the Hermite functions, also bounded by 1. So the recurrence cannot overflow; nodes whose
    weight underflows contribute nothing anyway.
    """
    n = nodes.shape[0]
    G = np.zeros((n, n_terms))
    for s in range(n):
        psi_prev = 0.0
        psi = sqrtw[s]
        for k in range(n_terms):
            G[s, k] = psi
            psi_next = _hermite_next(nodes[s], psi, psi_prev, k)
            psi_prev = psi
            psi = psi_next
    return G


@row_kernel(200_000, work=lambda args: args[0].size * args[3].shape[1])
def hermite_project(F, w, sw, G):
    """``A[r, k] = sum_s F[r, s] sw[s] G[s, k]`` and ``E[r] = sum_s w[s] F[r, s]^2``: the Hermite coefficients and
    ``E[f^2]`` of each row of function values on a Gauss-Hermite rule. Each row is summed in a fixed order, so a row's
    result does not depend on the other rows (a variance gives the same coefficients alone or in a batch)."""
    m, ns = F.shape
    kt = G.shape[1]
    A = np.zeros((m, kt))
    E = np.zeros(m)
    for r in nb.prange(m):
        e = 0.0
        for s in range(ns):
            f = F[r, s]
            e += w[s] * f * f
            fs = f * sw[s]
            if fs != 0.0:
                for k in range(kt):
                    A[r, k] += fs * G[s, k]
        E[r] = e
    return A, E


def _mehler_tile(C, Ai, AjT, out):  # compiled below as ``mehler``
    """``out[i, j] = sum_k Ai[i, k] AjT[k, j] C[i, j]^k`` (Horner in k, vectorised over j)."""
    ti, tj = C.shape
    K = Ai.shape[1]
    for ii in nb.prange(ti):
        acc = np.zeros(tj)
        for k in range(K - 1, -1, -1):
            a = Ai[ii, k]
            for jj in range(tj):
                acc[jj] = acc[jj] * C[ii, jj] + a * AjT[k, jj]
        for jj in range(tj):
            out[ii, jj] = acc[jj]


@nb.njit(cache=True)
def correlation_tile(Q, qi, qj, C):
    """``C = Q / sqrt(qi qj)`` clipped to [-1, 1]; 0 where a variance vanishes. Returns the largest |c| - 1 > 0 seen."""
    ti, tj = Q.shape
    worst = np.zeros(ti)
    for ii in nb.prange(ti):
        worst[ii] = 0.0
        for jj in range(tj):
            d = qi[ii] * qj[jj]
            c = 0.0
            if d > 0.0:
                c = Q[ii, jj] / math.sqrt(d)
            if c > 1.0:
                worst[ii] = max(worst[ii], c - 1.0)
                c = 1.0
            elif c < -1.0:
                worst[ii] = max(worst[ii], -1.0 - c)
                c = -1.0
            C[ii, jj] = c
    return worst.max()


@nb.njit(cache=True, inline="always")
def _closed_row(code, p0, Q, qi, qj, qhat, qdot, want_dot, ii):
    for jj in range(Q.shape[1]):
        e, d = pair_closed_both(code, p0, qi[ii], qj[jj], Q[ii, jj], True, want_dot)
        qhat[ii, jj] = e
        if want_dot:
            qdot[ii, jj] = d


@row_kernel(20_000, work=lambda args: args[2].size)
def closed_tile(code, p0, Q, qi, qj, qhat, qdot, want_dot):
    """Closed forms on a tile of covariances ``Q`` (rows' variances ``qi``, columns' ``qj``), entry by entry through the
    scalar :func:`pair_closed` (the formulas exist once there): relu / leaky_relu (Cho & Saul arc-cosine kernel, with
    a cancellation-free determinant and the ``sin x - x cos x`` series near c = -1, so full relative accuracy there),
    erf (Williams), sin and linear. Rows run in parallel; each row's loop is entered with the activation code as a
    constant, so the compiler specialises ``pair_closed`` to one activation instead of dispatching on every entry."""
    for ii in nb.prange(Q.shape[0]):
        if code == ERF:
            _closed_row(ERF, p0, Q, qi, qj, qhat, qdot, want_dot, ii)
        elif code == LEAKY_RELU:
            _closed_row(LEAKY_RELU, p0, Q, qi, qj, qhat, qdot, want_dot, ii)
        elif code == RELU:
            _closed_row(RELU, p0, Q, qi, qj, qhat, qdot, want_dot, ii)
        elif code == SIN:
            _closed_row(SIN, p0, Q, qi, qj, qhat, qdot, want_dot, ii)
        else:
            _closed_row(code, p0, Q, qi, qj, qhat, qdot, want_dot, ii)


#: ``out[i, j] = sum_k Ai[i, k] AjT[k, j] C[i, j]^k``; threads only when the tile carries enough work to pay for them
#: (~4e6 multiply-adds)
mehler = _RowKernel(_mehler_tile, 4_000_000, work=lambda args: args[0].size * args[1].shape[1])
