"""Compiled loops behind :mod:`meanfield.kernels` (private).

All functions work on one tile of pairs ``(i, j)`` of a kernel matrix: ``Q`` is the tile of the current pre-activation
covariance ``q^l(x_i, x_j)``, ``qi`` / ``qj`` the per-row variances ``q^l(x_i, x_i)``, ``q^l(x_j, x_j)``.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

_INV_PI = 1.0 / math.pi
_TWO_OVER_PI = 2.0 / math.pi
_FOUR_OVER_PI = 4.0 / math.pi


@nb.njit(cache=True)
def eval_grid(ev, code, p0, p1, x, order):
    """``ev(code, p0, p1, x[r, n], order)`` on a 2-D grid (rows in parallel)."""
    m, n = x.shape
    out = np.empty((m, n))
    for r in nb.prange(m):
        for s in range(n):
            out[r, s] = ev(code, p0, p1, x[r, s], order)
    return out


@nb.njit(cache=True)
def hermite_basis(nodes, sqrtw, n_terms):
    """``G[s, k] = sqrt(w_s) He_k(z_s) / sqrt(k!)`` by the normalised three-term recurrence.

    Discrete orthonormality of the Gauss-Hermite rule gives ``|G[s, k]| <= 1``, so the recurrence started from
    ``sqrt(w_s)`` cannot overflow; nodes whose weight underflows contribute nothing anyway.
    """
    n = nodes.shape[0]
    G = np.zeros((n, n_terms))
    for s in range(n):
        z = nodes[s]
        g0 = sqrtw[s]
        G[s, 0] = g0
        if n_terms > 1:
            g1 = z * g0
            G[s, 1] = g1
            for k in range(1, n_terms - 1):
                g2 = (z * g1 - math.sqrt(k) * g0) / math.sqrt(k + 1.0)
                G[s, k + 1] = g2
                g0 = g1
                g1 = g2
    return G


def _mehler_tile(C, Ai, AjT, out):
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


@nb.njit(cache=True)
def leaky_relu_tile(C, qi, qj, slope, qhat, qdot, want_dot):
    """Closed forms (Cho & Saul arc-cosine kernel) for ``phi(u) = max(u, slope u)``.

    ``phi = (1-a) relu + a id`` gives ``E[phi(u)phi(v)] = (1-a)^2 sqrt(q_u q_v)(sin t + (pi - t) cos t)/(2 pi)
    + a q_uv`` (the cross terms are ``E[relu(u) v] = q_uv / 2``), and ``E[phi'(u)phi'(v)] = (1-a)^2 (pi - t)/(2 pi) + a``,
    with ``t = arccos(c)``.
    """
    ti, tj = C.shape
    b = (1.0 - slope) * (1.0 - slope)
    for ii in nb.prange(ti):
        for jj in range(tj):
            c = C[ii, jj]
            t = math.acos(c)
            s = math.sqrt(qi[ii] * qj[jj])
            qhat[ii, jj] = b * s * (math.sqrt(max(0.0, 1.0 - c * c)) + (math.pi - t) * c) * 0.5 * _INV_PI + slope * s * c
            if want_dot:
                qdot[ii, jj] = b * (math.pi - t) * 0.5 * _INV_PI + slope


@nb.njit(cache=True)
def erf_tile(Q, qi, qj, qhat, qdot, want_dot):
    """Williams' closed forms: ``(2/pi) asin(2 q_uv / sqrt((1+2q_u)(1+2q_v)))`` and
    ``(4/pi) / sqrt((1+2q_u)(1+2q_v) - 4 q_uv^2)``."""
    ti, tj = Q.shape
    for ii in nb.prange(ti):
        for jj in range(tj):
            a = 1.0 + 2.0 * qi[ii]
            b = 1.0 + 2.0 * qj[jj]
            quv = Q[ii, jj]
            arg = 2.0 * quv / math.sqrt(a * b)
            arg = min(1.0, max(-1.0, arg))
            qhat[ii, jj] = _TWO_OVER_PI * math.asin(arg)
            if want_dot:
                qdot[ii, jj] = _FOUR_OVER_PI / math.sqrt(max(a * b - 4.0 * quv * quv, 1e-300))


mehler_tile_serial = nb.njit(cache=True)(_mehler_tile)
mehler_tile_parallel = nb.njit(cache=True, parallel=True)(_mehler_tile)


def mehler(C, Ai, AjT, out):
    """Dispatch: threads only when the tile carries enough work to pay for them (~4e6 multiply-adds)."""
    if C.size * Ai.shape[1] >= 4_000_000 and nb.config.NUMBA_NUM_THREADS > 1:
        mehler_tile_parallel(C, Ai, AjT, out)
    else:
        mehler_tile_serial(C, Ai, AjT, out)
