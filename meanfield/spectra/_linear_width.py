"""Nested deterministic-equivalent equations for linear combinations of conjugate kernels across layers.

Notation (docs/spectra.md): K_0, ..., K_L are n x n Gram matrices with K_l = (1/N_l) Y_l^T Y_l (ratio
gamma_l = n / N_l). Given K_{l-1}, the N_l rows y_i of Y_l are independent with covariances

    Sigma_i = a_i I + b2_i K_{l-1},      K_{-1} = I,

where (a_i, b2_i) is drawn from a discrete per-level law ``sum_j p_j delta(a_j, b2_j)`` (the per-unit offset s_i of a
network with biases or non-centred activations; one node (1 - b_l^2, b_l^2) in Fan & Wang's centred, bias-free case).
For coefficient vectors z = (z_*, z_0, ..., z_l) and w of the same shape let

    T_l(z, w) = lim (1/n) tr[(w_* I + sum_j w_j K_j)(z_* I + sum_j z_j K_j)^{-1}].

One level is removed by the deterministic equivalent of a sample covariance with independent, non-identically
distributed rows (Couillet & Debbah 2011, Thm 6.1; Wagner, Couillet, Debbah & Slock 2012) plus an independent matrix:

    (A + z_l K_l)^{-1} ~ (A + z_l E_j[Sigma_j / (1 + delta_j)])^{-1},
    delta_j = gamma_l z_l (a_j t0_l + b2_j t1_l),  t0_l = T_{l-1}(z', e_*),  t1_l = T_{l-1}(z', e_{l-1}),

so  z'_* = z_* + z_l E[a / (1 + delta)],  z'_{l-1} = z_{l-1} + z_l E[b2 / (1 + delta)],
T_l(z, w) = w_l / z_l + T_{l-1}(z', w_{<l} - (w_l / z_l) z_{<l}), and T_{-1}(z, w) = w_* / z_* (K_{-1} = I). With one
node per level, delta = gamma_l z_l T_{l-1}(z', (1 - b_l^2) e_* + b_l^2 e_{l-1}) is Fan & Wang's recursion. The
Stieltjes transform of r_+ I + sum_j r_j K_j at zeta is T_L((r_+ - zeta, r_0, ..., r_L), (1, 0, ..., 0)). The 2(L+1)
unknowns (t0_l, t1_l) solve a nested system, by Newton's method (finite-difference Jacobian) along a continuation in
Im zeta from far above the real axis.
"""
from __future__ import annotations

import numpy as np


class Chain:
    """Levels j = 0..L with ratios gamma[j] and per-level laws of (a, b2) (level 0: the input Gram matrix, which sits
    on K_{-1} = I; for orthonormal inputs level 0 is absent and the first hidden level sits on K_{-1} = I).

    ``b2`` is either an array of slopes (one node per level: a = 1 - b2) or ``laws`` gives per level a tuple of arrays
    ``(p, a, b2)`` (probabilities summing to 1, and the node values).
    """

    def __init__(self, gamma, b2=None, laws=None, pair=None):
        self.gamma = np.asarray(gamma, dtype=float)
        self.n = len(self.gamma)
        if laws is None:
            b2 = np.asarray(b2, dtype=float)
            laws = [(np.ones(1), np.array([1.0 - b]), np.array([b])) for b in b2]
        self.laws = [tuple(np.asarray(x, dtype=float) for x in law) for law in laws]
        if len(self.laws) != self.n:
            raise ValueError("one law per level")
        # optional second matrix F on the top level, built from the same units: each unit contributes the rank-two
        # term Y_i diag(z_top, z_F) Y_i^T / N, Y_i = g_i alpha_i^T + E_i (g_i of covariance K_{top-1}, E_i white
        # across inputs with 2 x 2 covariance noise_i); pair = (p, alpha (k, 2), noise (k, 2, 2), z_F)
        self.pair = None
        if pair is not None:
            pp, al, nz, zf = pair
            self.pair = (np.asarray(pp, float), np.asarray(al, float), np.asarray(nz, float), complex(zf))

    def _reduce(self, z, t):
        """All reduced coefficient vectors: zs[k] has entries (*, 0..k-1) after removing levels n-1..k (zs[n] = z)."""
        n = self.n
        zs = [None] * (n + 1)
        zs[n] = z
        cur = z
        for k in range(n - 1, -1, -1):
            p, a, b2 = self.laws[k]
            zk = cur[..., k + 1]
            if k == n - 1 and self.pair is not None:
                ca, cb = self._pair_terms(zk, t[..., 2 * k], t[..., 2 * k + 1], self.gamma[k])
            else:
                d = self.gamma[k] * zk[..., None] * (a * t[..., 2 * k, None] + b2 * t[..., 2 * k + 1, None])
                inv = p / (1.0 + d)
                ca = zk * np.sum(inv * a, axis=-1)
                cb = zk * np.sum(inv * b2, axis=-1)
            nxt = cur[..., :k + 1].copy()
            nxt[..., 0] = nxt[..., 0] + ca
            if k >= 1:
                nxt[..., k] = nxt[..., k] + cb
            else:      # level 0 sits on K_{-1} = I
                nxt[..., 0] = nxt[..., 0] + cb
            zs[k] = nxt
            cur = nxt
        return zs

    def _pair_terms(self, zk, t0, t1, gamma):
        """Rank-two top level: Delta_i = gamma (alpha_i alpha_i^T t1 + noise_i t0), M_i = D (I + Delta_i D)^{-1},
        D = diag(z_top, z_F); returns E[tr(M N)] (onto I) and E[alpha^T M alpha] (onto K_{top-1})."""
        from ._kernels import pair_terms

        p, al, nz, zf = self.pair
        shape = np.broadcast(zk, t0, t1).shape
        f = [np.ascontiguousarray(np.broadcast_to(x, shape), dtype=np.complex128).ravel() for x in (zk, t0, t1)]
        ca, cb = pair_terms(f[0], f[1], f[2], zf, float(gamma), p, np.ascontiguousarray(al[:, 0]),
                            np.ascontiguousarray(al[:, 1]), np.ascontiguousarray(nz[:, 0, 0]),
                            np.ascontiguousarray(nz[:, 0, 1]), np.ascontiguousarray(nz[:, 1, 1]))
        return ca.reshape(shape), cb.reshape(shape)

    def _T(self, zs, k, w):
        """T over levels k-1..0 of the reduced chain: zs[k] has entries (*, 0..k-1); w the same shape."""
        t = 0.0
        for j in range(k - 1, -1, -1):
            zj = zs[j + 1]
            r = w[..., j + 1] / zj[..., j + 1]
            t = t + r
            w = w[..., :j + 1] - r[..., None] * zj[..., :j + 1]
        return t + w[..., 0] / zs[0][..., 0]

    def residual(self, z, t):
        zs = self._reduce(z, t)
        R = np.empty_like(t)
        for k in range(self.n):
            e0 = np.zeros(zs[k].shape, dtype=complex)
            e0[..., 0] = 1.0
            R[..., 2 * k] = t[..., 2 * k] - self._T(zs, k, e0)
            if k >= 1:
                e1 = np.zeros(zs[k].shape, dtype=complex)
                e1[..., k] = 1.0
                R[..., 2 * k + 1] = t[..., 2 * k + 1] - self._T(zs, k, e1)
            else:      # K_{-1} = I: the two traces coincide
                R[..., 1] = t[..., 1] - t[..., 0]
        return R, zs

    def stieltjes(self, z, t):
        zs = self._reduce(z, t)
        w = np.zeros(z.shape, dtype=complex)
        w[..., 0] = 1.0
        return self._T(zs, self.n, w)

    def solve(self, z, t, tol=1e-13, max_iter=60):
        """Newton on t (arrays (..., 2n)) for coefficient vectors z (..., n + 1). Returns t, converged mask."""
        m = 2 * self.n
        conv = None
        for _ in range(max_iter):
            with np.errstate(all="ignore"):
                R, _ = self.residual(z, t)
                scale = 1.0 + np.abs(t)
                conv = np.all(np.abs(R) <= tol * scale, axis=-1)
                if np.all(conv):
                    break
                h = 1e-7 * scale
                # all m perturbed points in one batched call: dp[..., j, :] = t + h_j e_j
                dp = t[..., None, :] + h[..., None, :] * np.eye(m)
                Rj, _ = self.residual(np.broadcast_to(z[..., None, :], z.shape[:-1] + (m, z.shape[-1])), dp)
                J = np.swapaxes((Rj - R[..., None, :]) / h[..., :, None], -1, -2)
                step = np.linalg.solve(J, -R[..., None])[..., 0]
                step = np.where(np.isfinite(step), step, 0.0)
                big = np.abs(step) > 0.5 * (1.0 + np.abs(t))       # damping
                fac = np.where(big, 0.5 * (1.0 + np.abs(t)) / np.maximum(np.abs(step), 1e-300), 1.0)
                step = step * fac.min(axis=-1, keepdims=True)
                t = np.where(conv[..., None], t, t + step)
        return t, conv


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
    t = np.zeros(zeta.shape + (2 * n,), dtype=complex)
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
                R, _ = chain.residual(z, t)
                t = t - R
                if np.all(np.abs(R) <= 1e-14 * (1.0 + np.abs(t))):
                    break
            start = t
        elif len(hist) >= 2:   # secant predictor (equal steps in log eta)
            start = 2.0 * hist[-1] - hist[-2]
        else:
            start = hist[-1]
        t, ok = chain.solve(z, start)
        if i > 0 and not np.all(ok):      # retry from the previous solution where the predictor failed
            t2, ok2 = chain.solve(z, hist[-1])
            t = np.where(ok[..., None], t, t2)
            ok = ok | ok2
        hist = (hist + [t])[-2:]
    m = chain.stieltjes(z, t)
    ok = ok & (m.imag >= -1e-12 * np.abs(m))     # the physical branch has Im m > 0 in the upper half plane
    if zeta.ndim == 1 and zeta.size > 1 and not np.all(ok) and np.any(ok):
        # points where the descent failed or landed on a spurious root (next to an edge): march along Re zeta at
        # the target height from the nearest good point
        good = np.nonzero(ok)[0]
        for i in np.nonzero(~ok)[0]:
            j = good[np.argmin(np.abs(zeta.real[good] - zeta.real[i]))]
            ti, oki = t[j:j + 1], np.zeros(1, bool)
            for f in np.linspace(0.0, 1.0, 21)[1:]:
                zi = zc[j] + f * (zc[i] - zc[j])
                zz = np.broadcast_to(coef, (1, n + 1)).copy()
                zz[:, 0] = coef[0] - zi
                ti, oki = chain.solve(zz, ti)
            mi = chain.stieltjes(zz, ti)
            if oki[0] and mi[0].imag >= -1e-12 * abs(mi[0]):
                t[i], m[i], ok[i] = ti[0], mi[0], True
    return m, ok
