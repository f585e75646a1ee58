"""Independent high-precision references for the tests: mpmath quadrature (30+ digits) and scipy adaptive quadrature.

Nothing here calls meanfield's numerics; activations are re-implemented in mpmath.
"""
from __future__ import annotations

import math

import mpmath as mp
import numpy as np
from scipy import integrate

SELU_L = mp.mpf("1.0507009873554804934193349852946")
SELU_A = mp.mpf("1.6732632423543772848170429916717")


def _sig(x):
    return 1 / (1 + mp.exp(-x))


def _mish(x):
    return x * mp.tanh(mp.log1p(mp.exp(x)))


MP_PHI = {
    "tanh": (mp.tanh, lambda x: 1 - mp.tanh(x) ** 2, lambda x: -2 * mp.tanh(x) * (1 - mp.tanh(x) ** 2)),
    "erf": (mp.erf, lambda x: 2 / mp.sqrt(mp.pi) * mp.exp(-x * x), lambda x: -4 * x / mp.sqrt(mp.pi) * mp.exp(-x * x)),
    "sigmoid": (_sig, lambda x: _sig(x) * (1 - _sig(x)), lambda x: _sig(x) * (1 - _sig(x)) * (1 - 2 * _sig(x))),
    "softplus": (lambda x: mp.log1p(mp.exp(x)), _sig, lambda x: _sig(x) * (1 - _sig(x))),
    "gelu": (lambda x: x * mp.ncdf(x), lambda x: mp.ncdf(x) + x * mp.npdf(x), lambda x: mp.npdf(x) * (2 - x * x)),
    "silu": (lambda x: x * _sig(x), lambda x: _sig(x) + x * _sig(x) * (1 - _sig(x)),
             lambda x: _sig(x) * (1 - _sig(x)) * (2 + x * (1 - 2 * _sig(x)))),
    "sin": (mp.sin, mp.cos, lambda x: -mp.sin(x)),
    # mish: derivatives by mpmath's numerical differentiation at working precision, independent of the library's formulas
    "mish": (_mish, lambda x: mp.diff(_mish, x), lambda x: mp.diff(_mish, x, 2)),
    "relu": (lambda x: x if x > 0 else 0, lambda x: 1 if x > 0 else 0, lambda x: 0),
    "hard_tanh": (lambda x: max(-1, min(1, x)), lambda x: 1 if -1 < x < 1 else 0, lambda x: 0),
    "elu": (lambda x: x if x > 0 else mp.expm1(x), lambda x: 1 if x > 0 else mp.exp(x), lambda x: 0 if x > 0 else mp.exp(x)),
    "selu": (lambda x: SELU_L * x if x > 0 else SELU_L * SELU_A * mp.expm1(x),
             lambda x: SELU_L if x > 0 else SELU_L * SELU_A * mp.exp(x), lambda x: 0 if x > 0 else SELU_L * SELU_A * mp.exp(x)),
    "linear": (lambda x: x, lambda x: 1, lambda x: 0),
}
KINKS = {"relu": [0], "hard_tanh": [-1, 1], "elu": [0], "selu": [0]}


def mp_expect(name, q, fa=0, fb=0, m=0, dps=30):
    """E[u^m phi^(fa)(u) phi^(fb)(u)], u ~ N(0, q), by mpmath tanh-sinh quadrature split at 0 and the kinks."""
    with mp.workdps(dps):
        q = mp.mpf(q)
        s = mp.sqrt(q)
        fs = MP_PHI[name]
        f = lambda z: (s * z) ** m * fs[fa](s * z) * fs[fb](s * z) * mp.npdf(z)
        pts = sorted(set([mp.mpf(0)] + [mp.mpf(k) / s for k in KINKS.get(name, [])]))
        # extra breakpoints where the integrand varies on the scale 1/sqrt(q)
        extra = [t / s for t in (-4, -1, 1, 4)] if q > 1 else []
        pts = sorted(set(pts + extra))
        return mp.quad(f, [-mp.inf] + pts + [mp.inf])


def mp_qstar(name, wv, bv, q0):
    """Fixed point of V(q) = wv E[phi^2] + bv by mpmath findroot (secant) at 30 digits."""
    with mp.workdps(30):
        return mp.findroot(lambda q: wv * mp_expect(name, q) + bv - q, mp.mpf(q0), tol=mp.mpf(10) ** -26)


def np_phi(name, order):
    import scipy.special as sp

    sig = lambda x: sp.expit(x)
    table = {
        "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
        "erf": (sp.erf, lambda x: 2 / np.sqrt(np.pi) * np.exp(-x * x)),
        "sigmoid": (sig, lambda x: sig(x) * (1 - sig(x))),
        "softplus": (lambda x: np.logaddexp(0, x), sig),
        "gelu": (lambda x: x * sp.ndtr(x), lambda x: sp.ndtr(x) + x * np.exp(-x * x / 2) / np.sqrt(2 * np.pi)),
        "silu": (lambda x: x * sig(x), lambda x: sig(x) + x * sig(x) * (1 - sig(x))),
        "sin": (np.sin, np.cos),
        "hard_tanh": (lambda x: np.clip(x, -1, 1), lambda x: ((x > -1) & (x < 1)).astype(float)),
        "elu": (lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))), lambda x: np.where(x > 0, 1.0, np.exp(np.minimum(x, 0)))),
        "relu": (lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(float)),
    }
    return table[name][order]


def scipy_pair(name, qu, qv, quv, order=0):
    """E[phi^(o)(u) phi^(o)(v)] by nested scipy adaptive quadrature (QUADPACK, epsabs 1e-14): an algorithm
    independent of meanfield's Gauss-Legendre/Mehler routes, good to ~1e-13 absolute for smooth activations."""
    f = np_phi(name, order)
    kinks = KINKS.get(name, [])
    su, sv = math.sqrt(qu), math.sqrt(qv)
    c = quv / (su * sv)
    s = math.sqrt(max(0.0, 1 - c * c))
    nd = lambda z: math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

    def inner(z1):
        if s == 0:
            return float(f(np.array(sv * c * z1)))
        g = lambda z2: float(f(np.array(sv * (c * z1 + s * z2)))) * nd(z2)
        pts = [-c * z1 / s] + [(k / sv - c * z1) / s for k in kinks]
        pts = [p for p in pts if -12 < p < 12]
        return integrate.quad(g, -12, 12, epsabs=1e-15, epsrel=1e-14, limit=200, points=pts)[0]

    h = lambda z1: float(f(np.array(su * z1))) * inner(z1) * nd(z1)
    pts = [0.0] + [k / su for k in kinks] + ([k / (sv * c) for k in kinks] if c != 0 else [])
    pts = [p for p in pts if -12 < p < 12]
    return integrate.quad(h, -12, 12, epsabs=1e-15, epsrel=1e-14, limit=200, points=pts)[0]


def mp_gelu_pair(q, c, order=0, dps=20):
    """E[phi^(o)(u1) phi^(o)(u2)] for gelu (o = 0, 1), u1 = sqrt(q) z1, u2 = sqrt(q)(c z1 + sqrt(1-c^2) z2), as a 1-D
    mpmath integral over z1: the inner integral over z2 is closed. With X ~ N(m, s^2), r = sqrt(1 + s^2), Stein's lemma
    and E[npdf(X)] = npdf(m/r)/r give E[X ncdf(X)] = m ncdf(m/r) + s^2 npdf(m/r)/r and
    E[ncdf(X) + X npdf(X)] = ncdf(m/r) + m npdf(m/r)/r^3. Breakpoints on the scales 1/sqrt(q) (phi(u1)) and
    r/(sqrt(q) c) (the inner integral) keep tanh-sinh at full accuracy for large q."""
    with mp.workdps(dps):
        q, c = mp.mpf(q), mp.mpf(c)
        sq = mp.sqrt(q)
        s2 = q * (1 - c * c)
        r = mp.sqrt(1 + s2)
        if order == 0:
            f = lambda x: x * mp.ncdf(x)
            inner = lambda m: m * mp.ncdf(m / r) + s2 * mp.npdf(m / r) / r
        else:
            f = lambda x: mp.ncdf(x) + x * mp.npdf(x)
            inner = lambda m: mp.ncdf(m / r) + m * mp.npdf(m / r) / r ** 3
        g = lambda z: mp.npdf(z) * f(sq * z) * inner(sq * c * z)
        scales = [1 / sq] + ([r / (sq * abs(c))] if c != 0 else [])
        pts = sorted(set([mp.mpf(0)] + [k * w for w in scales for k in (-8, -4, -2, -1, 1, 2, 4, 8)]))
        pts = [p for p in pts if abs(p) < 12]
        return mp.quad(g, [-mp.inf] + pts + [mp.inf])
