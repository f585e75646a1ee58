r"""Squared singular values of the input-output Jacobian of a deep network at its fixed point (free probability).

Pennington, Schoenholz & Ganguli, "Resurrecting the sigmoid in deep learning through dynamical isometry" (NeurIPS 2017)
and "The emergence of spectral universality in deep networks" (AISTATS 2018). With ``h^l = W^l phi(h^{l-1}) + b^l``,
``J = d phi(h^L) / d phi(h^0) = prod_{l=1}^{L} D_l W_l``, ``D_l = diag(phi'(h^l))`` and every ``h^l_i ~ N(0, q*)``
(inputs at the fixed point), the factors ``W_l^T W_l`` and ``D_l^2`` are asymptotically free and

.. math:: S_{JJ^T}(z) = \prod_{l=1}^{L} S_{W_l^T W_l}(z)\, S_{D_l^2}(z) = \big(S_W(z)\, S_{D^2}(z)\big)^L,

with ``S_W(z) = 1 / (sigma_w^2 (1 + z))`` for Gaussian ``W_ij ~ N(0, sigma_w^2/N)`` (Marchenko-Pastur, ratio 1) and
``S_W = 1/sigma_w^2`` for scaled orthogonal weights. ``S(z) = (1+z)/z * chi(z)``, ``chi`` the compositional inverse of
``psi(w) = sum_k m_k w^k``. The mean squared singular value is ``chi_1^L`` and normalised variances add,
``m_2/m_1^2 - 1 = L (v_W + v_D)`` with ``v_W = 1`` (Gaussian) or 0 (orthogonal) and ``v_D = E[phi'^4]/E[phi'^2]^2 - 1``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from typing import Any, Optional

    from matplotlib.axes import Axes

    from .._typing import ArrayLike, FloatOrArray

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from .._checks import check_int
from ..errors import DivergenceWarning, PrecisionWarning
from ..network import Network
from . import _series
from ._law import derivative_law
from ._subordination import Product
from .result import Spectrum

__all__ = ["JacobianSpectrum", "jacobian_spectrum"]

_WEIGHTS = ("gaussian", "orthogonal")
_TAIL_MASS = 1e-9


@dataclass(frozen=True)
class JacobianSpectrum(Spectrum):
    r"""Spectrum of ``J J^T`` (squared singular values of the input-output Jacobian); see :class:`Spectrum`.

    Deep networks spread the squared singular values over many orders of magnitude (for Gaussian weights ``log x``
    has mean ~ ``-L/2`` per unit of ``log chi_1``), so the primary representation is the density of ``log x``:

    Attributes
    ----------
    log_x : ndarray
        Grid of ``s = log x`` (``x = exp(log_x)``; ``x`` underflows to 0 below ``log_x ~ -745``).
    density_log_x : ndarray
        Density of ``log x`` (``x rho(x)``), which integrates to 1 minus the atoms over ``log_x``.
    normalized_moments : ndarray
        Moments of ``J J^T / chi_1^L`` (mean 1), finite at any depth.
    chi1, qstar : float
        chi_1 = sigma_w^2 E[phi'(h)^2] and q* of the network.
    variance_ratio : float
        ``m_2 / m_1^2 - 1`` (0 for exact dynamical isometry).
    condition_proxy : float
        ``x_max / m_1``: largest squared singular value over the mean (1 for exact isometry).
    condition_number : float
        ``sqrt(x_max / x_min)`` over the support of the continuous part (inf if it reaches 0 or an atom sits at 0).
    """

    log_x: np.ndarray = None
    density_log_x: np.ndarray = None
    normalized_moments: np.ndarray = None
    chi1: float = float("nan")
    qstar: float = float("nan")
    variance_ratio: float = float("nan")
    condition_proxy: float = float("nan")
    condition_number: float = float("nan")

    @property
    def mass(self) -> float:
        return float(np.sum(self.weights * self.density_log_x) + sum(m for _, m in self.atoms))

    def cdf(self, x: ArrayLike) -> FloatOrArray:
        """Cumulative distribution function at ``x`` (accumulated over the grid in log x, plus atoms)."""
        x = np.asarray(x, dtype=float)
        c = np.cumsum(self.weights * self.density_log_x)
        with np.errstate(divide="ignore"):
            s = np.log(np.maximum(x, 0.0))
        F = np.interp(s, self.log_x, c, left=0.0, right=c[-1])
        tol = 1e-9 * max([abs(self.edges[1])] + [abs(a) for a, _ in self.atoms] + [1e-300])
        for a, m in self.atoms:   # an atom counts from a - tol: rounding puts exact eigenvalues a hair either side
            F = F + m * (x >= a - tol)
        return np.clip(F, 0.0, 1.0)

    def moment_from_density(self, k: int) -> float:
        """``m_k`` from the density of ``log x`` and the atoms (computed in logarithms: no overflow before the end)."""
        s = self.log_x
        lw = np.log(np.maximum(self.weights * self.density_log_x, 1e-320)) + k * s
        mx = lw.max()
        cont = math.exp(mx) * float(np.sum(np.exp(lw - mx))) if np.isfinite(mx) else 0.0
        return cont + sum(m * a ** k for a, m in self.atoms)

    def plot(self, ax: Optional[Axes] = None, *, label: Optional[str] = None, log: Optional[bool] = None,
             singular_values: bool = False, **kwargs: Any) -> Axes:
        """Density of ``x`` (``log=False``), of ``log x`` (``log=True``; default when x spans > 30 e-folds), or of the
        singular values ``sqrt(x)`` (``singular_values=True``). Returns the Axes."""
        from ..plotting import _new_ax

        ax = _new_ax(ax)
        if log is None:
            log = (self.log_x[-1] - self.log_x[0]) > 30
        lab = label if label is not None else f"{self.parameters.get('weights', '')} L={self.parameters.get('depth')}"
        if log:
            ax.plot(self.log_x, self.density_log_x, label=lab, **kwargs)
            ax.set_xlabel("log of squared singular value")
            ax.set_ylabel("density of log x")
        elif singular_values:
            sv = np.exp(self.log_x / 2)
            with np.errstate(over="ignore", invalid="ignore"):
                dens = 2.0 * self.density_log_x / np.maximum(sv, 1e-300)   # rho_sigma = 2 sigma rho_x = 2 p / sigma
            ax.plot(sv, dens, label=lab, **kwargs)
            ax.set_xlabel("singular value")
            ax.set_ylabel("density")
        else:
            ax.plot(self.x, self.density, label=lab, **kwargs)
            ax.set_xlabel("squared singular value")
            ax.set_ylabel("density")
        return ax


def _check_network(network):
    if not isinstance(network, Network):
        raise TypeError(f"network must be a meanfield.Network, got {type(network).__name__}")
    if not network.is_homogeneous:
        raise ValueError("network must be homogeneous (one activation, weight_var and bias_var for every layer): the "
                         "spectrum is computed at the fixed point q*")
    if any(a != 1.0 for a in network.alphas):
        raise ValueError("network.width_ratios must all be 1 (square weight matrices) for the Jacobian spectrum")
    if network.dropout_keep != 1.0:
        raise ValueError("network.dropout_keep must be 1.0 for the Jacobian spectrum")


def _fixed_point_q(network, any_q_if_homogeneous=True):
    from ..forward import qstar as _qstar

    act = network.activations[0]
    if act.homogeneous and any_q_if_homogeneous:
        return 1.0   # phi' of a positively homogeneous activation has the same law at every q > 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = float(_qstar(act, network.weight_vars[0], network.bias_vars[0]))
    if act.homogeneous and np.isfinite(q) and q == 0.0:
        q = 1.0   # no bias and chi < 1: the scale is free
    if not np.isfinite(q):
        raise ValueError("the network has no finite fixed point q* (its length map diverges); reduce weight_var")
    return q


def _normalized_law(act, q, refine=1):
    law = derivative_law(act, q, refine)
    if not law.mean > 0:
        raise ValueError("phi'(h) = 0 almost surely at q*: the Jacobian vanishes")
    return law.scaled(1.0 / law.mean), law.mean


def _log_s_factor(law_tilde, gaussian, n):
    """Series (length n-1) of log S of one layer, W^T W D^2 with mean 1."""
    m = law_tilde.moments(n - 1)
    log_s = _series.log_s_from_moments(m)
    if gaussian:
        log_s = log_s - _series.log1p_series(np.array([1.0, 1.0] + [0.0] * (n - 3)))
    return log_s


def _upper_edge(prod, law_tilde):
    """min of x(w) over real w in (0, 1/d_max): the right end of the support (normalised units), in logarithms."""
    wmax = 1.0 / law_tilde.values[-1]

    def f(u):   # w = wmax (1 - e^u): u -> 0- is w -> 0+, u -> -inf is w -> wmax (the pole)
        with np.errstate(all="ignore"):
            v = float(prod.log_x_real(wmax * (-np.expm1(u))))
        return v if np.isfinite(v) else np.inf

    res = minimize_scalar(f, bounds=(-34.0, -1e-12), method="bounded", options={"xatol": 1e-13})
    # the minimiser may sit at the pole (orthogonal, atom at d_max with large mass): compare with the limit there
    return min(float(res.fun), f(-34.0))


def jacobian_spectrum(network: Network, weights: str = "gaussian", *, n_points: int = 400, n_moments: int = 6,
                      error_estimate: bool = True) -> JacobianSpectrum:
    r"""Limiting density of the squared singular values of the input-output Jacobian ``J = prod_l D_l W_l``.

    Parameters
    ----------
    network : Network
        Homogeneous network; ``network.depth`` = L hidden layers (``J`` stops at the last hidden post-activation: the
        readout is not part of it), evaluated at the fixed point ``q*`` of ``(activation, weight_var, bias_var)``.
    weights : {"gaussian", "orthogonal"}
        i.i.d. Gaussian ``N(0, sigma_w^2/N)`` weights or ``sigma_w`` times Haar orthogonal matrices.
    n_points : int
        Grid size of the density (in ``log x``, clustered at both ends).
    n_moments : int
        Number of moments from the S-transform series.
    error_estimate : bool
        For a smooth activation (continuous law of phi'^2) recompute the density with a twice finer discretisation of
        that law and report the largest difference.

    Returns
    -------
    JacobianSpectrum

    Notes
    -----
    The law of ``phi'(h)^2`` is the engine's quadrature rule (:mod:`meanfield.gaussian`) read as a discrete measure
    (exact for piecewise-linear activations). Moments come from the power series of ``(S_W S_D)^L``; the density from
    the subordination equation (:mod:`meanfield.spectra._subordination`) by Newton continuation in logarithms; the
    upper edge from the minimum of ``x(w)`` on the real interval ``(0, 1/max phi'^2)``. The lower edge is 0 for
    Gaussian weights (the Marchenko-Pastur factor reaches 0) and is read from the grid for orthogonal ones. Atoms:
    at 0 with mass ``P(phi'(h) = 0)``; for orthogonal weights at ``sigma_w^{2L} a^L`` with mass
    ``L P(phi'^2 = a) - (L - 1)`` where positive (L = 1: every atom of ``sigma_w^2 phi'^2``).

    Examples
    --------
    >>> from meanfield import Network
    >>> from meanfield.spectra import jacobian_spectrum
    >>> sp = jacobian_spectrum(Network("linear", depth=2, weight_var=1.0), "gaussian", n_points=200)
    >>> [round(float(m), 8) for m in sp.moments[:3]]   # Fuss-Catalan numbers binom(3k, k) / (2k + 1)
    [1.0, 3.0, 12.0]
    >>> round(float(sp.edges[1]), 8)               # (L+1)^(L+1) / L^L
    6.75
    """
    _check_network(network)
    if weights == "orthogonal" and network.depth == 1 and len(network.activations[0].kinks) == 0 \
            and network.activations[0].name != "linear":
        raise ValueError("weights='orthogonal' with depth=1 and a smooth activation: J J^T = sigma_w^2 diag(phi'(h)^2) "
                         "has the (continuous) law of sigma_w^2 phi'(h)^2 itself, which this free-probability solver "
                         "does not resolve; use depth >= 2")
    if weights not in _WEIGHTS:
        raise ValueError(f"weights must be one of {_WEIGHTS}, got {weights!r}")
    n_points = check_int("n_points", n_points, 16)
    n_moments = check_int("n_moments", n_moments, 1)
    if n_moments > 20:
        raise ValueError(f"n_moments must be in [1, 20] (the series loses accuracy beyond), got {n_moments}")
    L = network.depth
    gaussian = weights == "gaussian"
    act = network.activations[0]
    wv = network.weight_vars[0]
    q = _fixed_point_q(network)
    law_t, mean_d = _normalized_law(act, q)
    chi = wv * mean_d
    if not chi > 0:
        raise ValueError("weight_var must be > 0 (the Jacobian vanishes)")
    log_scale = L * math.log(chi)

    # ---- moments from the S-transform series (normalised, then scaled by chi^L)
    n_ser = n_moments + 3
    log_s = L * _log_s_factor(law_t, gaussian, n_ser)
    m_norm = _series.moments_from_s_transform(log_s, n_ser - 1)[:n_moments]
    with np.errstate(over="ignore"):
        moments = np.array([m_norm[k] * math.exp(min((k + 1) * log_scale, 709.0)) if (k + 1) * log_scale < 709
                            else np.inf for k in range(n_moments)])
    if not np.all(np.isfinite(moments)):
        warnings.warn("moments of J J^T exceed the float64 range and are returned as inf; use normalized_moments "
                      "(moments of J J^T / chi_1^L)", DivergenceWarning, stacklevel=2)

    # ---- atoms (normalised units)
    p0 = sum(m for a, m in law_t.atoms if a == 0.0)
    atoms_t = []
    if p0 > 0:
        atoms_t.append((0.0, p0))
    if not gaussian:
        for a, m in law_t.atoms:
            if a > 0 and (L == 1 or L * m - (L - 1) > 1e-12):
                atoms_t.append((a ** L, m if L == 1 else L * m - (L - 1)))
    atom_mass = sum(m for _, m in atoms_t)

    # ---- density of s = log x (normalised)
    prod = Product(law_t, L, gaussian)
    s_hi = _upper_edge(prod, law_t)
    continuous = atom_mass < 1.0 - 1e-12
    if continuous:
        # the continuous part reaches 0 unless the weights are orthogonal and phi'^2 is bounded away from 0 (a
        # piecewise-linear activation without a zero slope, e.g. leaky_relu: then the edge is found by bisection)
        edge_pos = (not gaussian) and p0 == 0.0 and len(law_t.atoms) == len(law_t.values)
        s_lo, p_lo_zero = _lower_end(prod, s_hi, gaussian, edge_pos)
        s, wts = _grid(prod, s_lo, s_hi, n_points, gaussian)
        p, ok = prod.solve_grid(s, s_hi)
        p[-1] = 0.0
        if p_lo_zero:
            p[0] = 0.0
        if not np.all(ok):
            warnings.warn(f"the subordination equation did not converge at {np.count_nonzero(~ok)} of {len(s)} grid "
                          "points (next to an edge); the density there is approximate", PrecisionWarning, stacklevel=2)
        lower = math.exp(s_lo) if p_lo_zero else 0.0
        err = 0.0
        if error_estimate and len(law_t.values) != len(law_t.atoms):
            law2, _ = _normalized_law(act, q, refine=2)
            p2, _ = Product(law2, L, gaussian).solve_grid(s, s_hi)
            p2[-1] = 0.0
            if p_lo_zero:
                p2[0] = 0.0
            err = float(np.max(np.abs(p2 - p)))
    else:
        s = np.array([s_hi])
        p = np.zeros(1)
        wts = np.zeros(1)
        lower = math.exp(s_hi)
        err = 0.0
    upper = math.exp(s_hi)

    mass = float(np.sum(wts * p)) + atom_mass
    if continuous and abs(mass - 1.0) > 1e-3:
        warnings.warn(f"the density on the grid integrates to {mass:.6f} (atoms included), not 1: the far left tail "
                      f"of log x is under-resolved (very deep network; n_points={n_points}); the moments are exact",
                      PrecisionWarning, stacklevel=2)
    if err > 1e-3 * max(float(p.max()), 1e-300):
        warnings.warn(f"the density depends on the discretisation of the law of phi'^2 by up to {err:.3g} (relative "
                      f"{err / p.max():.3g}): the spectrum follows that law closely (orthogonal weights, few layers)",
                      PrecisionWarning, stacklevel=2)
    # ---- back to physical units
    atoms = tuple((a * math.exp(log_scale) if a > 0 else 0.0, m) for a, m in atoms_t)
    log_x = s + log_scale
    with np.errstate(over="ignore", under="ignore"):
        x = np.exp(log_x)
        dens = p * np.exp(-np.maximum(log_x, -709.0))
    edges = (lower * math.exp(log_scale), upper * math.exp(log_scale)) if abs(log_scale) < 700 else (
        (0.0 if lower == 0 else math.inf), math.inf)
    var_ratio = float(m_norm[1] - 1.0) if n_moments >= 2 else float(L * ((1.0 if gaussian else 0.0)
                                                                          + law_t.moments(2)[2] - 1.0))
    x_min = 0.0 if (lower == 0.0 or p0 > 0) else lower
    cond = math.sqrt(upper / x_min) if x_min > 0 else math.inf
    method = ("S-transform power series for the moments; density of log x from the subordination equation "
              "(Newton continuation in logarithms, |residual| <= 1e-12 L); trapezoid rule on a cosine-clustered "
              "grid in log x; upper edge = min of x(w) on the real axis; error_estimate = max |density_log_x| "
              "change under a twice finer discretisation of the law of phi'^2 (0 for piecewise-linear activations)")
    params = dict(activation=act.name, depth=L, weight_var=wv, bias_var=network.bias_vars[0], weights=weights,
                  qstar=q, chi1=chi, mean_dphi2=mean_d)
    return JacobianSpectrum(kind="jacobian", x=x, density=dens, weights=wts, atoms=atoms, moments=moments,
                            edges=edges, error_estimate=err, method=method, parameters=params,
                            log_x=log_x, density_log_x=p, normalized_moments=m_norm, chi1=chi, qstar=q,
                            variance_ratio=var_ratio, condition_proxy=upper, condition_number=cond)


def _cosine_grid(a, b, n):
    """n points on [a, b] clustered at both ends (s = a + (b - a)(1 - cos(pi t))/2, t uniform) and the trapezoid
    weights in t (the integrand p(s) ds/dt vanishes like the distance to a square-root edge: error O(n^-2))."""
    t = np.linspace(0.0, 1.0, n)
    s = a + (b - a) * (1.0 - np.cos(np.pi * t)) / 2.0
    w = (b - a) * np.pi * np.sin(np.pi * t) / 2.0 * (t[1] - t[0])
    # the integrand p(s) ds/dt vanishes at both ends (ds/dt = 0); with this cosine map the trapezoid rule is the
    # Fejer-type rule, spectrally accurate for an integrand analytic up to the ends (a square-root edge); an inverse
    # square root at an end (an atom at the edge, orthogonal weights) leaves an O(1/n) error
    w[0] = w[-1] = 0.0
    s[-1] = b
    return s, w


def _grid(prod, s_lo, s_hi, n, gaussian):
    """Grid in s = log x and quadrature weights: one cosine-clustered grid on windows up to 48 e-folds; wider windows
    (deep networks, where log x spreads over ~L e-folds) get half the points on the top 24 e-folds (the edge and the
    large moments) and half below. For Gaussian weights the lower part is a cosine grid in u = x^(1/(L+1)) from u = 0
    (the density of log x decays like u as x -> 0, so p(s) ds = p (L+1) du/u is smooth in u); otherwise in s."""
    top = 24.0
    if s_hi - s_lo <= 2 * top:
        return _cosine_grid(s_lo, s_hi, n)
    n1 = n // 2
    if gaussian:
        k = prod.L + 1.0
        u_top = np.exp((s_hi - top) / k - (s_hi - top) / k)   # = 1: u measured relative to the junction
        u, wu = _cosine_grid(0.0, u_top, n - n1 + 1)
        with np.errstate(divide="ignore"):
            s1 = (s_hi - top) + k * np.log(u)
        w1 = wu * k / np.where(u > 0, u, 1.0)
        s1[0] = s1[1] - 50.0 * k if len(s1) > 1 else s1[0]   # weight 0 there: any finite point
        w1[0] = 0.0
    else:
        s1, w1 = _cosine_grid(s_lo, s_hi - top, n - n1 + 1)
    s2, w2 = _cosine_grid(s_hi - top, s_hi, n1)
    w1[-1] += w2[0]
    return np.concatenate([s1, s2[1:]]), np.concatenate([w1, w2[1:]])


def _lower_end(prod, s_hi, gaussian, lower_edge_positive):
    """Left end of the grid in s = log x (normalised units): the lower edge of the support of the continuous part if it
    is above 0, else the point below which the continuous part has mass < 1e-9 (its density of log x decays there like
    e^{kappa s}, so the tail mass is p(s)/kappa). Returns (s_lo, density_is_zero_there)."""
    # probes s_hi - 4, -8, ...; the density of log x decays at least like e^{s/(L+1)} below the bulk (|w| ~ e^{-s/(L+1)}
    # there), so a window of 40 (L + 1) holds all but e^{-40} of the mass
    widths = 4.0 * 2.0 ** np.arange(0, 1 + int(np.ceil(np.log2(10.0 * (prod.L + 1)))))
    probes = s_hi - widths[::-1]
    p, ok = prod.solve_grid(probes, s_hi)
    p, ok = p[::-1], ok[::-1]                         # now ordered as widths (moving left)
    pmax = max(p.max(), 1e-300)
    for k in range(1, len(widths)):
        if not ok[k]:      # the continuation cannot go further left: stop at the last point reached
            return s_hi - widths[k - 1], False
        if not gaussian and lower_edge_positive and p[k] <= 1e-13 * pmax:
            a, b = s_hi - widths[k], s_hi - widths[k - 1]   # zero at a, positive at b: bisection for the edge
            for _ in range(45):
                mid = 0.5 * (a + b)
                pm, _ = prod.solve_grid(np.array([mid]), s_hi)
                if pm[0] > 1e-13 * pmax:
                    b = mid
                else:
                    a = mid
            return a, True
        kappa = (np.log(max(p[k - 1], 1e-300)) - np.log(max(p[k], 1e-300))) / (widths[k] - widths[k - 1])
        if gaussian:   # the density of log x decays like e^{s/(L+1)} as x -> 0 (Marchenko-Pastur factors)
            kappa = min(kappa, 1.0 / (prod.L + 1))
        if p[k] <= 1e-300 or (kappa > 0 and p[k] / kappa < _TAIL_MASS):
            # one more doubling as a margin when it can be reached (the decay rate is estimated from two probes)
            return s_hi - widths[min(k + 1, len(widths) - 1) if ok[min(k + 1, len(widths) - 1)] else k], False
    return s_hi - widths[-1], False
