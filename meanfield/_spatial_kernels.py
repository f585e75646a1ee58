"""Compiled loops of :mod:`meanfield.spatial`: the closed-form pair expectations on a tile in the diagonal-in-space
form (pairs of inputs ``(i, j)`` at the same position ``p``), entry by entry through the engine's scalar
:func:`meanfield._gaussian_kernels.pair_closed_both` (the formulas exist once there), so each entry equals the one the
per-position 2-D tiles give, bit for bit. A separate module: its cache entries do not depend on the engine's file."""
from __future__ import annotations

import math

import numba as nb
import numpy as np

from ._gaussian_kernels import pair_closed_both, row_kernel
from .activations import ERF, LEAKY_RELU, RELU, SIN

__all__ = ["closed_tile_diag"]


@nb.njit(cache=True, inline="always")
def _closed_diag_row(code, p0, Q, qi, qj, qhat, qdot, want_dot, ii):
    worst = 0.0
    for jj in range(Q.shape[1]):
        for p in range(Q.shape[2]):
            a, b, quv = qi[ii, p], qj[jj, p], Q[ii, jj, p]
            # the correlation check of correlation_tile (same arithmetic): |c| may exceed 1 only by rounding
            d = a * b
            if d > 0.0:
                c = quv / math.sqrt(d)
                if c > 1.0:
                    worst = max(worst, c - 1.0)
                elif c < -1.0:
                    worst = max(worst, -1.0 - c)
            e, dd = pair_closed_both(code, p0, a, b, quv, True, want_dot)
            qhat[ii, jj, p] = e
            if want_dot:
                qdot[ii, jj, p] = dd
    return worst


@row_kernel(20_000, work=lambda args: args[2].size)
def closed_tile_diag(code, p0, Q, qi, qj, qhat, qdot, want_dot):
    """Closed forms on a diagonal-form tile ``Q`` (a, b, P) with the variances ``qi`` (a, P), ``qj`` (b, P): the
    ``P`` per-position tiles of ``closed_tile`` in one call (rows in parallel, the activation code a constant per row
    loop). Returns the largest ``|c| - 1 > 0`` met (0 if none), as ``correlation_tile``."""
    worst = np.zeros(Q.shape[0])
    for ii in nb.prange(Q.shape[0]):
        if code == ERF:
            worst[ii] = _closed_diag_row(ERF, p0, Q, qi, qj, qhat, qdot, want_dot, ii)
        elif code == LEAKY_RELU:
            worst[ii] = _closed_diag_row(LEAKY_RELU, p0, Q, qi, qj, qhat, qdot, want_dot, ii)
        elif code == RELU:
            worst[ii] = _closed_diag_row(RELU, p0, Q, qi, qj, qhat, qdot, want_dot, ii)
        elif code == SIN:
            worst[ii] = _closed_diag_row(SIN, p0, Q, qi, qj, qhat, qdot, want_dot, ii)
        else:
            worst[ii] = _closed_diag_row(code, p0, Q, qi, qj, qhat, qdot, want_dot, ii)
    return worst.max()
