"""Compiled node sets for the Gaussian expectations of the finite-width corrections (numba). The user-facing
functions live in :mod:`meanfield.finite_width`.

The 1/width corrections need Gaussian expectations of *products* of the activation and its first derivative, with
polynomial weights (``E[phi(u)^2 phi(v)^2]``, ``E[phi'(u) phi(v) H(u, v)]``, ...), several per pair of inputs and
layer. Instead of one compiled integral per integrand, :func:`pair_nodes` returns the nodes ``(u, v)`` and weights
of the engine's nested composite rule (``_gaussian_kernels.e2d``: outer panels at the kinks of phi and at the
boundary layers of the inner integral, inner panels from ``_scaled_rule``), with the bivariate normal density
folded into the weights, so that every integrand of one pair is a weighted sum over the same nodes. The accuracy is
that of ``e2d`` for integrands that are products of phi, phi' (kinks at the same points) and polynomials:
16-point Gauss-Legendre panels inside the strip of analyticity, ~1e-15 relative (tests compare with mpmath).
"""
from __future__ import annotations

import math

import numba as nb

from . import _numba_cache  # noqa: F401  (installs the per-user kernel cache before any kernel below is defined)
import numpy as np

from ._gaussian_kernels import ZMAX, _INV_SQRT_2PI, _scaled_rule, outer_rule

__all__ = ["pair_nodes"]


@nb.njit(cache=True)
def pair_nodes(kinks, scale, qu, qv, quv):
    """Nodes ``u, v`` and weights ``w`` (density included) with ``sum(w g(u, v)) ~= E[g(u, v)]`` for
    ``(u, v) ~ N(0, [[qu, quv], [quv, qv]])``, ``qu, qv > 0`` and ``|c| < 1``; ``g`` smooth away from the lines where
    ``u`` or ``v`` is a kink."""
    z1, w1, su, sv, c, sd = outer_rule(kinks, scale, qu, qv, quv)
    total = 0
    for j in range(z1.size):
        zi, _ = _scaled_rule(kinks, scale, sd, sv * c * z1[j], ZMAX, 1.0)
        total += zi.size
    u = np.empty(total)
    v = np.empty(total)
    w = np.empty(total)
    k = 0
    for j in range(z1.size):
        mean = sv * c * z1[j]
        g1 = w1[j] * math.exp(-0.5 * z1[j] * z1[j]) * _INV_SQRT_2PI
        zi, wi = _scaled_rule(kinks, scale, sd, mean, ZMAX, 1.0)
        for i in range(zi.size):
            u[k] = su * z1[j]
            v[k] = mean + sd * zi[i]
            w[k] = g1 * wi[i] * math.exp(-0.5 * zi[i] * zi[i]) * _INV_SQRT_2PI
            k += 1
    return u, v, w
