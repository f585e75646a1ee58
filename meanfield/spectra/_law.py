"""The law of D^2 = phi'(h)^2, h ~ N(0, q), as a discrete measure from the engine's quadrature rule.

The nodes and weights are those of :func:`meanfield.gaussian.gaussian_rule` (composite Gauss-Legendre in the
standard-normal variable, panels ending at the activation's kinks), so every moment ``E[phi'(h)^(2k)]`` of the discrete
law equals the engine's Gaussian expectation. Where phi' is constant on a whole panel (relu, hard_tanh, leaky_relu,
linear) the nodes merge into exact atoms; a smooth phi' gives one small atom per node, a discretisation of a continuous
law whose transforms are accurate at distance >> the node spacing from its support (the spectra built on it carry an
error estimate from a rule with twice as many panels).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..gaussian import gaussian_rule
from ._kernels import psi_discrete

#: nodes of one merged value needed to call it an atom of the true law (a panel has 16 nodes; a smooth phi'^2 is even
#: in h for the built-ins, so distinct values merge at most in symmetric pairs)
_ATOM_NODES = 8


@dataclass(frozen=True)
class DerivativeLaw:
    """Discrete law ``sum_k weights[k] delta(values[k])`` of phi'(h)^2, with the true atoms identified."""

    values: np.ndarray        # support points (ascending)
    weights: np.ndarray       # masses (sum 1 to rounding)
    atoms: tuple              # ((value, mass), ...) of the true law: phi' constant on a set of positive probability
    mean: float               # E[phi'^2]

    def psi(self, w):
        """psi(w) = E[w d / (1 - w d)] (moment generating function of the law, w complex), 1 + psi(w) =
        E[1 / (1 - w d)] (summed as such: no cancellation where psi ~ -1) and psi'(w)."""
        w = np.asarray(w, dtype=np.complex128)
        z, z1, dz = psi_discrete(np.ascontiguousarray(w.ravel()), self.values, self.weights)
        return z.reshape(w.shape), z1.reshape(w.shape), dz.reshape(w.shape)

    def moments(self, k_max: int) -> np.ndarray:
        """E[d^k], k = 0..k_max."""
        return np.array([np.dot(self.weights, self.values ** k) for k in range(k_max + 1)])

    def scaled(self, factor: float) -> "DerivativeLaw":
        return DerivativeLaw(self.values * factor, self.weights, tuple((v * factor, m) for v, m in self.atoms),
                             self.mean * factor)


def _finer_rule(activation, q, n_nodes):
    """A second, independent discretisation for error estimates: composite 16-point Gauss-Legendre on
    [-ZMAX, ZMAX] in the standard-normal variable with about ``n_nodes`` nodes, panels also ending at the kinks."""
    from .._gaussian_kernels import ZMAX

    n_pan = max(2, int(np.ceil(n_nodes / 16)))
    edges = set(np.linspace(-ZMAX, ZMAX, n_pan + 1).tolist())
    if q > 0:
        edges |= {k / np.sqrt(q) for k in activation.kinks if abs(k / np.sqrt(q)) < ZMAX}
    edges = np.array(sorted(edges))
    x, wx = np.polynomial.legendre.leggauss(16)
    a, b = edges[:-1, None], edges[1:, None]
    z = ((a + b) / 2 + (b - a) / 2 * x).ravel()
    w = ((b - a) / 2 * wx).ravel() * np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    return z, w


def derivative_law(activation, q: float, refine: int = 1) -> DerivativeLaw:
    """Law of phi'(h)^2 for h ~ N(0, q): the engine's rule (``refine = 1``) or, for error estimates, an independent
    composite Gauss-Legendre rule with ``refine`` times as many nodes."""
    z, w = gaussian_rule(q, scale=activation.scale, kinks=activation.kinks, graded=activation.graded)
    if refine > 1:
        z, w = _finer_rule(activation, q, refine * len(z))
    if q == 0.0:
        u = np.copysign(1e-300, z) if any(float(k) == 0.0 for k in activation.kinks) else np.zeros_like(z)
    else:
        u = np.sqrt(q) * z
    d = np.asarray(activation.dphi(u), dtype=np.float64) ** 2
    order = np.argsort(d, kind="stable")
    d, w = d[order], w[order]
    # merge equal values (to 1e-14 relative): exact atoms of piecewise-linear activations, symmetric pairs otherwise
    vals, wts, counts = [], [], []
    for di, wi in zip(d, w):
        if vals and abs(di - vals[-1]) <= 1e-14 * max(abs(di), 1e-300):
            wts[-1] += wi
            counts[-1] += 1
        else:
            vals.append(di)
            wts.append(wi)
            counts.append(1)
    vals, wts = np.array(vals), np.array(wts)
    wts = wts / wts.sum()
    atoms = tuple((float(v), float(m)) for v, m, c in zip(vals, wts, counts) if c >= _ATOM_NODES)
    return DerivativeLaw(vals, wts, atoms, float(np.dot(wts, vals)))
