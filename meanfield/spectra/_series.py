"""Truncated power series (coefficient arrays, index = power) for moment <-> S-transform conversions."""
from __future__ import annotations

import numpy as np


def mul(a, b):
    n = len(a)
    return np.convolve(a, b)[:n]


def reciprocal(a):
    """1/a for a[0] != 0."""
    n = len(a)
    out = np.zeros(n)
    out[0] = 1.0 / a[0]
    for k in range(1, n):
        out[k] = -np.dot(a[1:k + 1], out[k - 1::-1][:k]) / a[0]
    return out


def log1p_series(a):
    """log(a) for a[0] == 1, via (log a)' = a'/a."""
    n = len(a)
    da = np.arange(1, n) * a[1:]
    q = mul(np.concatenate([da, [0.0]]), reciprocal(a))[:n - 1]
    out = np.zeros(n)
    out[1:] = q / np.arange(1, n)
    return out


def exp_series(a):
    """exp(a) for a[0] == 0, via y' = a' y."""
    n = len(a)
    y = np.zeros(n)
    y[0] = 1.0
    da = np.arange(1, n) * a[1:]
    for k in range(1, n):
        y[k] = np.dot(da[:k], y[k - 1::-1][:k]) / k
    return y


def compose(a, b):
    """a(b(z)) for b[0] == 0."""
    n = len(a)
    out = np.zeros(n)
    p = np.zeros(n)
    p[0] = 1.0
    for k in range(n):
        out += a[k] * p
        p = mul(p, b)
    return out


def revert(a):
    """Compositional inverse of a (a[0] == 0, a[1] != 0), by Newton iteration on a(g(z)) = z."""
    n = len(a)
    g = np.zeros(n)
    g[1] = 1.0 / a[1]
    da = np.arange(1, n) * a[1:]
    da = np.concatenate([da, [0.0]])
    ident = np.zeros(n)
    ident[1] = 1.0
    for _ in range(2 * n.bit_length() + 2):
        r = compose(a, g) - ident
        g = g - mul(r, reciprocal(compose(da, g)))
    return g


def moments_from_s_transform(log_s, n):
    """Moments m_1..m_{n-1} of a measure with mean 1 from the series of log S(z) (log S(0) = 0).

    chi(z) = z/(1+z) S(z) is the compositional inverse of psi(w) = sum_k m_k w^k.
    """
    s = exp_series(log_s)
    one_plus_z_inv = np.array([(-1.0) ** k for k in range(n)])
    chi = np.concatenate([[0.0], mul(one_plus_z_inv, s)[:n - 1]])
    return revert(chi)[1:]


def log_s_from_moments(m):
    """Series of log S(z) of a measure with moments m[0] = 1, m[1] = 1, m[2], ... (mean normalised to 1)."""
    n = len(m)
    psi = np.concatenate([[0.0], m[1:]])
    chi = revert(psi)
    s = mul(np.concatenate([chi[1:], [0.0]]), np.array([1.0] + [1.0] + [0.0] * (n - 2)))   # (1+z) chi(z)/z
    return log1p_series(s[:n - 1])   # chi is known to order n-1, so S to order n-2
