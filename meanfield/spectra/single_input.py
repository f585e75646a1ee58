r"""Spectrum of the Fisher information given a single input (Hayase & Karakida, "The spectrum of Fisher information of
deep networks achieving dynamical isometry", AISTATS 2021).

For one input at the fixed point (every ``h^l_i ~ N(0, q*)``), NTK parameterization and an output layer of the same
width M, the conditional FIM ``F = J^T J`` (``J = d h^L / d theta``, M x P) has the non-zero eigenvalues of the M x M
``Theta_L = J J^T``, built by

.. math:: \Theta_1 = q^* I, \qquad \Theta_{l+1} = q^* I + W_{l+1} D_l \Theta_l D_l W_{l+1}^T

(the weights of layer l+1 contribute ``sigma_w^2 |phi(h^l)|^2 / M = sigma_w^2 E[phi^2]``, its bias ``sigma_b^2``: together
``q*``). With ``W`` Haar orthogonal (times ``sigma_w``) or Gaussian, asymptotic freeness gives
``mu_{l+1} = delta_{q*} [+] (nu_W [x] nu_{D^2} [x] mu_l)``: a shift and a free multiplicative convolution per layer. The
mean eigenvalue is ``q* sum_{k<L} chi_1^k`` (``L`` q* at dynamical isometry: the spectrum moves out linearly in depth).

Numerics: subordination. For ``nu = nu_W [x] nu_D`` (S-transform ``S_W S_D``), ``psi_{nu [x] mu}(u) = psi_mu(omega)`` with
``omega S_nu(psi_mu(omega)) = u``; ``S_D(z) = (1+z) v / z`` with ``psi_D(v) = z``; the shift maps
``psi_{mu_{l+1}}(omega) = (1 + psi_{nu [x] mu_l}(omega/(1 - omega q*)))/(1 - omega q*) - 1``. The unknowns
``(omega_l, v_l)``, l = 1..L-1, solve 2(L-1) equations by Newton's method (finite-difference Jacobian) along a
continuation from far above the real axis, as for the kernel spectra.

Atoms: Belinschi's rule for free multiplicative convolutions, ``(mu [x] nu)({ab}) = max(0, mu({a}) + nu({b}) - 1)``
(``ab != 0``), ``(mu [x] nu)({0}) = max(mu({0}), nu({0}))``, applied layer by layer from ``mu_1 = delta_{q*}``
(:func:`_atoms`): with orthogonal weights and a projection-valued ``phi'^2`` (relu, hard_tanh) most of the mass can be
point masses away from ``q*`` (hard_tanh near the edge of chaos, two hidden layers: 0.945 at
``q* (1 + sigma_w^2 + sigma_w^4)``). The continuous part is ``-Im G / pi`` with every atom's Lorentzian removed.
"""
from __future__ import annotations

import warnings

import numpy as np

from .._checks import check_int
from ..errors import PrecisionWarning
from ..network import Network
from .jacobian import _check_network, _fixed_point_q
from ._law import derivative_law
from .kernels import KernelSpectrum

__all__ = ["single_input_fisher_spectrum"]

MAX_SINGLE_INPUT_DEPTH = 12


class _HK:
    def __init__(self, law, q, weight_var, gaussian, n_layers):
        self.law, self.q, self.wv, self.gauss, self.L = law, q, weight_var, gaussian, n_layers

    def _sw(self, z):
        return 1.0 / (self.wv * (1.0 + z)) if self.gauss else 1.0 / self.wv + 0 * z

    def residual(self, X, zeta):
        """X (..., 2(L-1)) = (omega_1, v_1, ..., omega_{L-1}, v_{L-1}); returns residuals and psi_{mu_L}(1/zeta)."""
        L, q = self.L, self.q
        om = X[..., 0::2]
        v = X[..., 1::2]
        R = np.empty_like(X)
        z_prev = None
        for l in range(L - 1):
            w = om[..., l]
            if l == 0:
                z = w * q / (1.0 - w * q)
            else:
                z = (1.0 + z_prev) / (1.0 - w * q) - 1.0
            nxt = om[..., l + 1] if l + 1 < L - 1 else 1.0 / zeta
            u = nxt / (1.0 - nxt * q)
            zd, _, _ = self.law.psi(v[..., l])
            R[..., 2 * l] = zd - z
            R[..., 2 * l + 1] = w * self._sw(z) * (1.0 + z) * v[..., l] / z - u
            z_prev = z
        wL = 1.0 / zeta
        zL = (1.0 + z_prev) / (1.0 - wL * q) - 1.0 if L > 1 else wL * q / (1.0 - wL * q)
        return R, zL

    def solve(self, X, zeta, tol=1e-12, max_iter=60):
        n = X.shape[-1]
        conv = np.ones(X.shape[:-1], dtype=bool)
        for _ in range(max_iter):
            with np.errstate(all="ignore"):
                R, _ = self.residual(X, zeta)
                sc = 1.0 + np.abs(X)
                conv = np.all(np.abs(R) <= tol * sc, axis=-1)
                if np.all(conv):
                    break
                J = np.empty(X.shape + (n,), dtype=complex)
                h = 1e-7 * sc
                for j in range(n):
                    Xp = X.copy()
                    Xp[..., j] += h[..., j]
                    Rj, _ = self.residual(Xp, zeta)
                    J[..., :, j] = (Rj - R) / h[..., j:j + 1]
                step = np.linalg.solve(J, -R[..., None])[..., 0]
                step = np.where(np.isfinite(step), step, 0.0)
                big = np.abs(step) > 0.3 * sc
                fac = np.where(big, 0.3 * sc / np.maximum(np.abs(step), 1e-300), 1.0).min(axis=-1, keepdims=True)
                X = np.where(conv[..., None], X, X + step * fac)
        return X, conv

    def start(self, zeta):
        """Far from the support (|zeta| large): all omegas ~ 1/zeta-sized, v from psi_D(v) ~ z."""
        L, q = self.L, self.q
        X = np.empty(zeta.shape + (2 * (L - 1),), dtype=complex)
        # omega_{l} ~ u_l / S_nu(0), u_{L-1} = 1/(zeta - q), u_l = omega_{l+1}/(1 - omega_{l+1} q)
        snu0 = (1.0 / self.wv) / self.law.mean   # S_W(0) S_D(0) = 1/(sigma_w^2 E[D^2])
        nxt = 1.0 / zeta
        oms = [None] * (L - 1)
        for l in range(L - 2, -1, -1):
            u = nxt / (1.0 - nxt * q)
            oms[l] = u / snu0
            nxt = oms[l]
        z_prev = None
        for l in range(L - 1):
            w = oms[l]
            z = w * q / (1.0 - w * q) if l == 0 else (1.0 + z_prev) / (1.0 - w * q) - 1.0
            X[..., 2 * l] = w
            X[..., 2 * l + 1] = z / self.law.mean
            z_prev = z
        return X

    def psi_top(self, zeta, eta_start):
        zeta = np.asarray(zeta, dtype=complex)
        if self.L == 1:
            w = 1.0 / zeta
            return w * self.q / (1.0 - w * self.q), np.ones(zeta.shape, bool)
        im_t = np.maximum(zeta.imag, 1e-300)
        n_steps = max(2, int(np.ceil(3 * np.log10(eta_start / im_t.min()))) + 1)
        X = None
        hist = []
        for i, f in enumerate(np.linspace(0.0, 1.0, n_steps)):
            zc = zeta.real + 1j * np.exp((1 - f) * np.log(eta_start) + f * np.log(im_t))
            if i == 0:
                X = self.start(zc)
                start = X
            elif len(hist) >= 2:
                start = 2 * hist[-1] - hist[-2]
            else:
                start = hist[-1]
            X, ok = self.solve(start, zc)
            if i > 0 and not np.all(ok):
                X2, ok2 = self.solve(hist[-1], zc)
                X = np.where(ok[..., None], X, X2)
                ok = ok | ok2
            hist = (hist + [X])[-2:]
        _, zL = self.residual(X, zc)
        # the physical branch has Im G < 0 (G = (1 + psi)/zeta); the descent can land on a spurious root near atoms
        # of an atomic D law: re-solve those points by marching along Re zeta, at the target height, from the
        # nearest good point
        phys = ((1.0 + zL) / zc).imag <= 1e-10 * np.abs((1.0 + zL) / zc)
        if zeta.ndim == 1 and zeta.size > 1 and not np.all(phys) and np.any(phys & ok):
            good = np.nonzero(phys & ok)[0]
            for i in np.nonzero(~(phys & ok))[0]:
                j = good[np.argmin(np.abs(zeta.real[good] - zeta.real[i]))]
                Xi = X[j]
                for f in np.linspace(0.0, 1.0, 41)[1:]:
                    zi = np.array([zc[j] + f * (zc[i] - zc[j])])
                    Xi, oki = self.solve(Xi[None, :], zi)
                    Xi = Xi[0]
                _, zi_L = self.residual(Xi[None, :], zc[i:i + 1])
                Gi = (1.0 + zi_L[0]) / zc[i]
                if oki[0] and Gi.imag <= 1e-10 * abs(Gi):
                    X[i], zL[i], ok[i], phys[i] = Xi, zi_L[0], True, True
        return zL, ok & phys


def _atoms(law, q, weight_var, gaussian, n_layers, tol=1e-12):
    """Point masses of mu_L, mu_{l+1} = delta_q [+] (nu_W [x] nu_{D^2} [x] mu_l), mu_1 = delta_q, from Belinschi's
    theorem on the atoms of a free multiplicative convolution of laws on [0, inf) (Belinschi 2003; Bercovici &
    Voiculescu 1993): (mu [x] nu)({a b}) = max(0, mu({a}) + nu({b}) - 1) for a b != 0 and
    (mu [x] nu)({0}) = max(mu({0}), nu({0})). nu_W = delta_{sigma_w^2} (orthogonal: a scaling) or Marchenko-Pastur of
    ratio 1 (Gaussian: no atoms, so only the atom at 0 survives); the shift by q* moves every atom by q*.
    Returns ((location, mass), ...) ascending, masses > tol."""
    d_atoms = [(float(v), float(m)) for v, m in law.atoms]
    d0 = sum(m for v, m in d_atoms if v == 0.0)
    atoms = {q: 1.0}                                  # mu_1 = delta_{q*}
    for _ in range(n_layers - 1):
        nxt = {}
        # nu_D [x] mu_l (mu_l lives on [q*, inf): no atom at 0)
        if d0 > tol:
            nxt[0.0] = d0
        if not gaussian:
            for v, m in d_atoms:
                if v == 0.0:
                    continue
                for a, ma in atoms.items():
                    mass = m + ma - 1.0
                    if mass > tol:
                        loc = v * a
                        nxt[loc] = nxt.get(loc, 0.0) + mass
        # scale by sigma_w^2 (orthogonal) and shift by q*
        atoms = {q + weight_var * x: m for x, m in nxt.items()}
    return tuple(sorted((float(a), float(m)) for a, m in atoms.items()))


def single_input_fisher_spectrum(network: Network, weights: str = "orthogonal", *, n_points: int = 200,
                                 n_moments: int = 3) -> KernelSpectrum:
    r"""Limiting density of the non-zero eigenvalues of the conditional FIM of one input (Hayase & Karakida 2021).

    Parameters
    ----------
    network : Network
        Homogeneous, equal widths; ``L = depth + 1`` weight layers, the output layer as wide as the hidden ones (so
        ``Theta_L`` is M x M); evaluated at the fixed point q*. ``depth <= 12``.
    weights : {"orthogonal", "gaussian"}
        Scaled Haar orthogonal or i.i.d. Gaussian weights.

    Returns
    -------
    KernelSpectrum
        Spectrum of ``Theta_L = J J^T`` (NTK parameterization); ``moments[0] = q* sum_{k<L} chi_1^k``.

    Examples
    --------
    >>> from meanfield import Network
    >>> from meanfield.spectra import single_input_fisher_spectrum
    >>> sp = single_input_fisher_spectrum(Network("linear", depth=2, weight_var=1.0), "orthogonal", n_points=32)
    >>> [round(a, 8) for a, m in sp.atoms]       # Theta_3 = q* (1 + 1 + 1) I for a linear orthogonal network
    [3.0]
    """
    _check_network(network)
    if weights not in ("orthogonal", "gaussian"):
        raise ValueError(f"weights must be 'orthogonal' or 'gaussian', got {weights!r}")
    if network.depth > MAX_SINGLE_INPUT_DEPTH:
        raise ValueError(f"network.depth must be <= {MAX_SINGLE_INPUT_DEPTH} for the single-input FIM spectrum, got "
                         f"{network.depth}")
    n_points = check_int("n_points", n_points, 16)
    n_moments = check_int("n_moments", n_moments, 1)
    act = network.activations[0]
    wv, bv = network.weight_vars[0], network.bias_vars[0]
    q = _fixed_point_q(network, any_q_if_homogeneous=False)
    law = derivative_law(act, q)
    L = network.depth + 1
    chi = wv * law.mean
    m1 = q * sum(chi ** k for k in range(L))
    hk = _HK(law, q, wv, weights == "gaussian", L)
    # exact moments m_1, m_2 by the same recursion on moments (free cumulants): independent of the density route
    # point masses: linear orthogonal networks give Theta_L = m_1 I
    if weights == "orthogonal" and len(law.values) == 1:
        x = np.array([m1])
        return KernelSpectrum(kind="single_input_fisher", x=x, density=np.zeros(1), weights=np.zeros(1),
                              atoms=((m1, 1.0),), moments=np.array([m1 ** k for k in range(1, n_moments + 1)]),
                              edges=(m1, m1), error_estimate=0.0, method="point mass (linear orthogonal network)",
                              parameters=dict(network=network.to_dict(), weights=weights, qstar=q, chi1=chi))
    # support bound: ||Theta_L|| <= q* sum_k (||W||^2 max D^2)^k
    wmax = wv * (4.0 if weights == "gaussian" else 1.0) * float(law.values[-1])
    X = q * sum(wmax ** k for k in range(L)) * 1.05
    top = 3.0 * X
    eta = 1e-9 * X

    # atoms from Belinschi's rule (q* with mass P(phi' = 0): the top layer's D has that null space; orthogonal weights
    # also carry the atoms of the lower layers through); checked below against the contour moments
    atoms = _atoms(law, q, wv, weights == "gaussian", L)
    atom_mass = sum(m for _, m in atoms)
    params = dict(network=network.to_dict(), weights=weights, qstar=q, chi1=chi, mean_closed_form=m1)
    if atom_mass > 1.0 - 1e-9:      # a point spectrum (e.g. relu / hard_tanh, orthogonal, depth = 1)
        moments = np.array([sum(m * a ** k for a, m in atoms) for k in range(1, n_moments + 1)])
        return KernelSpectrum(kind="single_input_fisher", x=np.array([atoms[0][0]]), density=np.zeros(1),
                              weights=np.zeros(1), atoms=atoms, moments=moments, edges=(atoms[0][0], atoms[-1][0]),
                              error_estimate=0.0, method="point spectrum (Belinschi's atom rule; no continuous part)",
                              parameters=params)

    def dens(x, h=eta):
        x = np.asarray(x, dtype=float)
        zeta = x + 1j * h
        zL, ok = hk.psi_top(zeta, top)
        G = (1.0 + zL) / zeta
        p = -G.imag / np.pi
        for a, m in atoms:        # the continuous part: the atoms' Lorentzians removed
            p = p - m * h / np.pi / ((x - a) ** 2 + h * h)
        return np.maximum(p, 0.0), ok

    xc = np.linspace(0.0, X, 401)[1:]
    pc, _ = dens(xc)
    thr = 1e-6 * max(pc.max(), 1e-300)
    on = np.nonzero(pc > thr)[0]
    a_out, a_in = (xc[on[0] - 1] if on[0] > 0 else 0.0), xc[on[0]]
    b_in, b_out = xc[on[-1]], (xc[on[-1] + 1] if on[-1] + 1 < len(xc) else X)
    out = np.array([a_out, b_out])
    inn = np.array([a_in, b_in])
    thr = 1e-9 * max(pc.max(), 1e-300)
    for _ in range(24):   # at height 1e-14 X: outside the support the density is O(height)
        mid = 0.5 * (out + inn)
        pm, _ = dens(mid, 1e-14 * X)
        pos = pm > thr
        inn = np.where(pos, mid, inn)
        out = np.where(pos, out, mid)
    lo, hi = 0.5 * (out + inn)
    # midpoint rule in t for x = lo + (hi - lo) sin^2(pi t / 2): exact for the arcsine-type 1/sqrt edges of free
    # compressions by projections (orthogonal weights, relu / hard_tanh), spectrally accurate for square-root edges
    t = (np.arange(n_points) + 0.5) / n_points
    x = lo + (hi - lo) * (1.0 - np.cos(np.pi * t)) / 2.0
    wts = (hi - lo) * np.pi * np.sin(np.pi * t) / 2.0 / n_points
    p, ok = dens(x)
    p2, _ = dens(x, 1e3 * eta)
    if not np.all(ok):
        warnings.warn(f"the subordination equations did not converge at {np.count_nonzero(~ok)} of {len(x)} points",
                      PrecisionWarning, stacklevel=2)
    # moments: contour integral of G around [0, X] (it encloses every atom, located or not)
    cen, rad = 0.5 * X, 0.55 * X
    nth = 256
    th = (np.arange(nth // 2) + 0.5) * 2 * np.pi / nth
    zeta = cen + rad * np.exp(1j * th)
    zL, _ = hk.psi_top(zeta, top + rad)
    G = (1.0 + zL) / zeta
    moments = np.array([(2.0 * np.sum(zeta ** k * G * rad * np.exp(1j * th)).real) / nth
                        for k in range(1, n_moments + 1)])
    method = ("Hayase-Karakida layer recursion by subordination (Newton, finite-difference Jacobian, |residual| <= "
              "1e-12) along a continuation in Im zeta; density -Im G(x + i 1e-9 X)/pi on a cosine grid over the "
              "support (edges by 24 bisections); moments from the contour integral of zeta^k G(zeta)")
    total = float(np.sum(wts * p)) + atom_mass
    first = float(np.sum(wts * p * x)) + sum(m * a for a, m in atoms)
    if abs(total - 1.0) > 1e-2 or abs(first - moments[0]) > 1e-2 * abs(moments[0]):
        warnings.warn(f"density and atoms hold {total:.4f} of the mass and give the mean {first:.6g} (contour "
                      f"integral: {moments[0]:.6g}): the continuous part is not resolved on the grid; the moments "
                      "(contour integral around the whole spectrum) are exact", PrecisionWarning, stacklevel=2)
    return KernelSpectrum(kind="single_input_fisher", x=x, density=p, weights=wts, atoms=atoms, moments=moments,
                          edges=(float(lo), float(hi)), error_estimate=float(np.max(np.abs(p - p2))), method=method,
                          parameters=params)
