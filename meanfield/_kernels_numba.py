"""Compiled loops behind :mod:`meanfield.kernels` (private).

All functions work on one tile of pairs ``(i, j)`` of a kernel matrix: ``Q`` is the tile of the current pre-activation
covariance ``q^l(x_i, x_j)``, ``qi`` / ``qj`` the per-row variances ``q^l(x_i, x_i)``, ``q^l(x_j, x_j)``.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from ._quad_kernels import pair_closed
from .activations import ERF, LEAKY_RELU, phi_eval



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
def leaky_relu_tile(Q, qi, qj, slope, qhat, qdot, want_dot):
    """Closed forms (Cho & Saul arc-cosine kernel) for ``phi(u) = max(u, slope u)`` on a tile of covariances ``Q``.

    Each entry is the scalar :func:`meanfield._quad_kernels.pair_closed` (the formula exists once): it works on the
    covariance itself with a cancellation-free ``det = q_u q_v - q_uv^2`` and the ``sin x - x cos x`` series near
    c = -1, so it keeps full relative accuracy there (a formula in ``c = Q / sqrt(q_u q_v)`` cannot: ``pi - acos(c)``
    loses all digits of the result ~ (1 + c)^(3/2)).
    """
    ti, tj = Q.shape
    for ii in nb.prange(ti):
        for jj in range(tj):
            qhat[ii, jj] = pair_closed(LEAKY_RELU, slope, qi[ii], qj[jj], Q[ii, jj], 0)
            if want_dot:
                qdot[ii, jj] = pair_closed(LEAKY_RELU, slope, qi[ii], qj[jj], Q[ii, jj], 1)


@nb.njit(cache=True)
def erf_tile(Q, qi, qj, qhat, qdot, want_dot):
    """Williams' closed forms ``(2/pi) asin(2 q_uv / sqrt((1+2q_u)(1+2q_v)))`` and
    ``(4/pi) / sqrt((1+2q_u)(1+2q_v) - 4 q_uv^2)``, entry by entry through the scalar ``pair_closed``."""
    ti, tj = Q.shape
    for ii in nb.prange(ti):
        for jj in range(tj):
            qhat[ii, jj] = pair_closed(ERF, 0.0, qi[ii], qj[jj], Q[ii, jj], 0)
            if want_dot:
                qdot[ii, jj] = pair_closed(ERF, 0.0, qi[ii], qj[jj], Q[ii, jj], 1)


mehler_tile_serial = nb.njit(cache=True)(_mehler_tile)
mehler_tile_parallel = nb.njit(cache=True, parallel=True)(_mehler_tile)


def mehler(C, Ai, AjT, out):
    """Dispatch: threads only when the tile carries enough work to pay for them (~4e6 multiply-adds)."""
    if C.size * Ai.shape[1] >= 4_000_000 and nb.config.NUMBA_NUM_THREADS > 1:
        mehler_tile_parallel(C, Ai, AjT, out)
    else:
        mehler_tile_serial(C, Ai, AjT, out)
