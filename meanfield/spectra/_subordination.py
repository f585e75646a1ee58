"""Density of the squared singular values of a product of free factors from one subordination equation.

For J J^T with J = prod_{l=1}^L D_l W_l (free factors, W^T W with S-transform S_W, D^2 with moment generating function
psi_D), the S-transform identity S_{JJ^T} = (S_W S_D)^L becomes, with w the subordination point of the D^2 law
(psi_D(w) = z = psi_{JJ^T}(1/zeta)),

    log zeta = (g L - L + 1) log(1 + z) + (L - 1) log z - L log w        (mean-normalised factors)

where g = 1 for Gaussian weights (S_W = 1/(1+z)) and g = 0 for orthogonal ones (S_W = 1). The density of s = log x is
p(s) = -Im z(x + i0) / pi. The equation is solved by Newton's method in w, in logarithms so that any depth and any
scale of x is representable, with the branches of the logarithms tracked along continuation paths that stay in the
upper half plane (where the solution is unique and analytic): from far outside the support down to the real axis at a
relative height eps_h, along the grid at that height, and down to eps = 1e-14 at each grid point.
"""
from __future__ import annotations

import numpy as np

EPS_H = 0.1          # relative height of the horizontal continuation path
EPS_MIN = 1e-14      # final relative height (the density is read there; its effect is O(EPS_MIN) relative)
NEWTON_MAX = 40


def _log_zeta(s, eps):
    """log(x (1 + i eps)) for x = e^s, any eps >= 0 (no overflow)."""
    return s + 0.5 * np.logaddexp(0.0, 2.0 * np.log(np.maximum(eps, 1e-300))) + 1j * np.arctan(eps)


class Product:
    """The equation for one product: law of D^2 (mean 1), depth L, g (1 Gaussian / 0 orthogonal)."""

    def __init__(self, law, depth, gaussian):
        self.law = law
        self.L = int(depth)
        self.a1 = (1.0 if gaussian else 0.0) * self.L - self.L + 1.0
        self.a2 = self.L - 1.0

    # residual value change and derivative, logs tracked by the caller
    def _zdz(self, w):
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.law.psi(w)

    def newton(self, w, logs, target, tol):
        with np.errstate(all="ignore"):   # trial steps may leave the domain; they are rejected (non-finite) below
            return self._newton(w, logs, target, tol)

    def _newton(self, w, logs, target, tol):
        """Newton iterations for R(w) = a1 log(1+z) + a2 log z - L log w - target = 0 (arrays); ``logs`` = (Lw, Lz,
        L1z) on the tracked branch at ``w``. Returns w, logs, converged mask."""
        L, a1, a2 = self.L, self.a1, self.a2
        Lw, Lz, L1z = logs
        z, z1, dz = self._zdz(w)
        conv = np.zeros(np.shape(w), dtype=bool)
        for _ in range(NEWTON_MAX):
            R = a1 * L1z + a2 * Lz - L * Lw - target
            conv = np.abs(R) <= tol
            if np.all(conv):
                break
            dR = (a1 / z1 + a2 / z) * dz - L / w
            step = np.where(conv, 0.0, -R / dR)
            # limit the relative change of w, z and 1+z so that principal logs of the ratios track the branch
            lam = np.ones(np.shape(w))
            for _k in range(30):
                wn = w + lam * step
                zn, z1n, dzn = self._zdz(wn)
                rw, rz, r1 = wn / w, zn / z, z1n / z1
                bad = (np.abs(rw - 1) > 0.5) | (np.abs(rz - 1) > 0.5) | (np.abs(r1 - 1) > 0.5) | ~np.isfinite(zn)
                if not np.any(bad):
                    break
                lam = np.where(bad, lam * 0.5, lam)
            Lw = Lw + np.log(rw)
            Lz = Lz + np.log(rz)
            L1z = L1z + np.log(r1)
            w, z, z1, dz = wn, zn, z1n, dzn
        R = a1 * L1z + a2 * Lz - L * Lw - target
        conv = np.abs(R) <= tol
        return w, (Lw, Lz, L1z), conv

    def start(self, s0, eps0):
        """Solution far from the support (|zeta| >> support): w ~ 1/zeta with principal logs."""
        lz = _log_zeta(np.asarray(s0, dtype=float), eps0)
        w = np.exp(-lz)
        z, z1, _ = self._zdz(w)
        logs = (-lz, np.log(z), np.log(z1))
        return w, logs

    def tol(self):
        return 1e-12 * max(1.0, self.L)

    def solve_grid(self, s_grid, s_right):
        """p(s) = -Im z / pi on ``s_grid`` (ascending) and the converged mask. ``s_right``: a point right of the support."""
        tol = self.tol()
        s_grid = np.asarray(s_grid, dtype=float)
        # 1) vertical from far above down to eps_h at s_start = s_right
        s_start = max(float(s_right), float(s_grid[-1])) + 1.0
        t0 = 12.0
        w, logs = self.start(np.array([s_start]), np.exp(t0))
        for t in np.arange(t0, np.log(EPS_H), -0.5):
            w, logs, ok = self.newton(w, logs, _log_zeta(s_start, np.exp(t)), tol)
        w, logs, ok = self.newton(w, logs, _log_zeta(s_start, EPS_H), tol)
        # 2) horizontal at eps_h, right to left, adaptive steps with a secant predictor in log w
        n = len(s_grid)
        W = np.empty(n, complex)
        LG = [np.empty(n, complex) for _ in range(3)]
        s_cur, w_cur, lg_cur = s_start, w[0], tuple(x[0] for x in logs)
        prev = None
        failed_below = -1      # grid points with index <= failed_below could not be reached
        for i in range(n - 1, -1, -1):
            s_goal = s_grid[i]
            h = s_goal - s_cur
            while s_cur > s_goal:
                s_try = max(s_goal, s_cur + h)
                w_pred = w_cur
                if prev is not None and prev[0] != s_cur:
                    slope = (np.log(w_cur) - np.log(prev[1])) / (s_cur - prev[0])
                    w_pred = w_cur * np.exp(slope * (s_try - s_cur))
                # logs at the predictor: update from the current branch
                z0, z10, _ = self._zdz(np.array([w_cur]))
                zp, z1p, _ = self._zdz(np.array([w_pred]))
                if not np.isfinite(zp[0]) or abs(w_pred / w_cur - 1) > 0.5 or abs(zp[0] / z0[0] - 1) > 0.5 \
                        or abs(z1p[0] / z10[0] - 1) > 0.5:
                    w_pred, zp, z1p = w_cur, z0, z10
                lgp = (lg_cur[0] + np.log(w_pred / w_cur), lg_cur[1] + np.log(zp[0] / z0[0]),
                       lg_cur[2] + np.log(z1p[0] / z10[0]))
                wn, lgn, ok = self.newton(np.array([w_pred]), tuple(np.array([v]) for v in lgp),
                                          _log_zeta(s_try, EPS_H), tol)
                if ok[0]:
                    prev = (s_cur, w_cur)
                    s_cur, w_cur, lg_cur = s_try, wn[0], tuple(v[0] for v in lgn)
                    h = max(h * 1.5, s_goal - s_cur) if s_cur > s_goal else h
                else:
                    h = h / 2.0
                    if abs(h) < 1e-9:
                        break
            if s_cur > s_goal:
                failed_below = i
                W[:i + 1] = w_cur
                for k in range(3):
                    LG[k][:i + 1] = lg_cur[k]
                break
            W[i] = w_cur
            for k in range(3):
                LG[k][i] = lg_cur[k]
        # 3) vertical at every grid point from eps_h down to EPS_MIN (vectorised)
        logs = tuple(LG)
        w = W
        for t in np.arange(np.log(EPS_H) - 0.5, np.log(EPS_MIN), -0.5):
            w, logs, ok = self.newton(w, logs, _log_zeta(s_grid, np.exp(t)), tol)
        w, logs, ok = self.newton(w, logs, _log_zeta(s_grid, EPS_MIN), tol)
        z, _, _ = self._zdz(w)
        p = np.maximum(-z.imag / np.pi, 0.0)
        p = np.where(np.isfinite(p), p, 0.0)
        ok = ok & np.isfinite(z)
        if failed_below >= 0:
            p[:failed_below + 1] = 0.0
            ok[:failed_below + 1] = False
        return p, ok

    def log_x_real(self, w):
        """log x(w) for real w where x(w) > 0 (for the edge search)."""
        z, z1, _ = self._zdz(np.asarray(w, dtype=float))
        z, z1 = z.real, z1.real
        return self.a1 * np.log(np.abs(z1)) + self.a2 * np.log(np.abs(z)) - self.L * np.log(np.abs(w))
