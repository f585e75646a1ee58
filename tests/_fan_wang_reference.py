"""Fan & Wang's nested recursion with ONE unknown delta_l per level (the centred, bias-free case), as it stood in
meanfield/spectra/_linear_width.py at commit c10903d, kept verbatim as an independent reference for the generalised
chain (two traces per level and a per-unit law of row covariances), which must reduce to it when every law is one
node. Not used by the library."""
from __future__ import annotations

import numpy as np


class Chain:
    """Levels j = 0..L with ratios gamma[j] and slopes b2[j] (level 0: the input Gram matrix, b2 = 1 over K_{-1} = I;
    for orthonormal inputs level 0 is absent: K_0 = I)."""

    def __init__(self, gamma, b2):
        self.gamma = np.asarray(gamma, dtype=float)
        self.b2 = np.asarray(b2, dtype=float)
        self.n = len(self.gamma)

    def _reduce(self, z, delta):
        """All reduced coefficient vectors: zs[k] has entries (*, 0..k-1) after removing levels n-1..k (zs[n] = z)."""
        n = self.n
        zs = [None] * (n + 1)
        zs[n] = z
        cur = z
        for k in range(n - 1, -1, -1):
            c = cur[..., k + 1] / (1.0 + delta[..., k])
            nxt = cur[..., :k + 1].copy()
            if k >= 1:
                nxt[..., 0] = nxt[..., 0] + c * (1.0 - self.b2[k])
                nxt[..., k] = nxt[..., k] + c * self.b2[k]
            else:      # level 0 sits on K_{-1} = I: its population is the identity
                nxt[..., 0] = nxt[..., 0] + c
            zs[k] = nxt
            cur = nxt
        return zs

    def _T(self, zs, k, w):
        """T over levels k-1..0 of the reduced chain: zs[k] has entries (*, 0..k-1); w the same shape."""
        t = 0.0
        for j in range(k - 1, -1, -1):
            zj = zs[j + 1]
            r = w[..., j + 1] / zj[..., j + 1]
            t = t + r
            w = w[..., :j + 1] - r[..., None] * zj[..., :j + 1]
        return t + w[..., 0] / zs[0][..., 0]

    def residual(self, z, delta):
        zs = self._reduce(z, delta)
        R = np.empty_like(delta)
        for k in range(self.n):
            # sigma vector of level k over the reduced chain zs[k] (entries *, 0..k-1): (1 - b2, 0, ..., b2)
            sig = np.zeros(zs[k].shape, dtype=complex)
            sig[..., 0] = 1.0 - self.b2[k]
            if k >= 1:
                sig[..., k] = self.b2[k]
            else:
                sig[..., 0] = 1.0     # level 0 over K_{-1} = I
            zk = zs[k + 1][..., k + 1]
            R[..., k] = delta[..., k] - self.gamma[k] * zk * self._T(zs, k, sig)
        return R, zs

    def stieltjes(self, z, delta):
        zs = self._reduce(z, delta)
        w = np.zeros(z.shape, dtype=complex)
        w[..., 0] = 1.0
        return self._T(zs, self.n, w)

    def solve(self, z, delta, tol=1e-13, max_iter=60):
        """Newton on delta (arrays (..., n)) for coefficient vectors z (..., n + 1). Returns delta, converged mask."""
        n = self.n
        conv = None
        for _ in range(max_iter):
            with np.errstate(all="ignore"):
                R, _ = self.residual(z, delta)
                scale = 1.0 + np.abs(delta)
                conv = np.all(np.abs(R) <= tol * scale, axis=-1)
                if np.all(conv):
                    break
                J = np.empty(delta.shape + (n,), dtype=complex)
                h = 1e-7 * scale
                for j in range(n):
                    dp = delta.copy()
                    dp[..., j] += h[..., j]
                    Rj, _ = self.residual(z, dp)
                    J[..., :, j] = (Rj - R) / h[..., j:j + 1]
                step = np.linalg.solve(J, -R[..., None])[..., 0]
                step = np.where(np.isfinite(step), step, 0.0)
                # keep 1 + delta away from 0 (damping)
                big = np.abs(step) > 0.5 * (1.0 + np.abs(delta))
                fac = np.where(big, 0.5 * (1.0 + np.abs(delta)) / np.maximum(np.abs(step), 1e-300), 1.0)
                step = step * fac.min(axis=-1, keepdims=True)
                delta = np.where(conv[..., None], delta, delta + step)
        return delta, conv


def stieltjes(chain, coef, zeta, eta_start, n_steps=None):
    """m(zeta) = (1/n) tr (r_+ I + sum r_j K_j - zeta)^{-1} for targets ``zeta`` with Im zeta > 0 (coef = (r_+, r_0..r_L)),
    by continuation from Re zeta + i eta_start straight down to each target (geometric steps in the height).
    Returns m and the converged mask."""
    zeta = np.asarray(zeta, dtype=complex)
    n = chain.n
    im_t = np.maximum(zeta.imag, 1e-300)
    if n_steps is None:
        n_steps = max(2, int(np.ceil(2.5 * np.log10(eta_start / im_t.min()))) + 1)
    frac = np.linspace(0.0, 1.0, n_steps)
    delta = np.zeros(zeta.shape + (n,), dtype=complex)
    ok = np.ones(zeta.shape, dtype=bool)
    coef = np.asarray(coef, dtype=complex)
    hist = []
    for i, f in enumerate(frac):
        eta = np.exp((1 - f) * np.log(eta_start) + f * np.log(im_t))
        zc = zeta.real + 1j * eta
        z = np.broadcast_to(coef, zeta.shape + (n + 1,)).copy()
        z[..., 0] = coef[0] - zc
        if i == 0:   # fixed-point iteration far from the axis (contractive there)
            for _ in range(200):
                R, _ = chain.residual(z, delta)
                delta = delta - R
            start = delta
        elif len(hist) >= 2:   # secant predictor (equal steps in log eta)
            start = 2.0 * hist[-1] - hist[-2]
        else:
            start = hist[-1]
        delta, ok = chain.solve(z, start)
        if i > 0 and not np.all(ok):      # retry from the previous solution where the predictor failed
            d2, ok2 = chain.solve(z, hist[-1])
            delta = np.where(ok[..., None], delta, d2)
            ok = ok | ok2
        hist = (hist + [delta])[-2:]
    m = chain.stieltjes(z, delta)
    ok = ok & (m.imag >= -1e-12 * np.abs(m))     # the physical branch has Im m > 0 in the upper half plane
    return m, ok
