r"""Exact finite-width Bayesian posterior of a deep linear network (Hanin & Zlokapa 2023) and its NNGP limit.

Given the scale ``S`` the posterior is a GP with kernel ``S K``; the posterior of ``S`` is its prior density
(:mod:`meanfield.deep_linear.prior`) times the GP evidence. At ``T = 0`` its moments are ratios of Meijer
G-functions, at ``T > 0`` a one-dimensional quadrature in ``log S`` (derivation in :mod:`meanfield.deep_linear`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from typing import Sequence, Union

    from .._typing import ArrayLike

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import special

from .._interop import short_repr
from ._common import _Kernel, _result_dict, _setup
from .bpkr import _bpkr_solve, hz_saddle_point
from .meijer_g import log_meijer_g
from .prior import _log_density_log_scale

__all__ = ["DeepLinearPosteriorResult", "deep_linear_posterior", "nngp_linear_posterior"]


@dataclass(frozen=True)
class DeepLinearPosteriorResult:
    r"""Exact Bayesian posterior of a finite-width deep linear network (or its infinite-width limit).

    Attributes
    ----------
    depth, widths, weight_var, temperature : the parameters (``widths = ()`` for the NNGP).
    mean, variance : ndarray or None
        Predictive mean and variance of ``f(x)`` at ``X_test`` (variance of the function, without label noise).
    scale_mean : float
        ``E[S | y]``; at ``T = 0`` the predictive variance is ``scale_mean`` times the NNGP variance.
    scale_std : float
        Posterior standard deviation of ``S``.
    log_evidence : float
        ``log Z = log int prior(W) prod_mu N(y_mu; f(x_mu), T) dW`` (a density in ``y`` at ``T = 0``).
    free_energy : float
        ``-log Z``.
    z_star : float
        Equal widths: HZ saddle ``z*`` at ``T = 0`` (``nan`` otherwise).
    method : str
        ``"meijer-g"`` (T = 0, Hanin-Zlokapa ratio ``G[1]/G[0]``), ``"quadrature"`` (T > 0: one-dimensional
        integral over ``log S`` with the Meijer-G prior density of ``S``) or ``"nngp"``.
    """

    depth: int
    widths: tuple
    weight_var: float
    temperature: float
    mean: Optional[np.ndarray]
    variance: Optional[np.ndarray]
    scale_mean: float
    scale_std: float
    log_evidence: float
    free_energy: float
    z_star: float
    method: str

    __repr__ = short_repr

    def to_dict(self) -> dict:
        return _result_dict(self)


def _scale_posterior_grid(kern: _Kernel, ws: np.ndarray, S_center: float, method: str = "saddle"):
    """Nodes ``log S``, normalised weights and ``log int p(log S) N(y; 0, S K + T) d log S`` by the trapezoid rule."""
    sd = math.sqrt(float(np.sum(special.polygamma(1, ws / 2.0))))  # prior sd of log S
    c = math.log(S_center)

    def logw(ell):
        return _log_density_log_scale(ell, ws, method) + np.array([kern.loglik(float(math.exp(e))) for e in ell])

    lo, hi = c - 14 * sd, c + 14 * sd
    for _ in range(20):  # widen until both ends are negligible
        ends = logw(np.array([lo, hi]))
        mid = logw(np.array([c]))[0]
        grow = False
        if ends[0] > mid - 46:
            lo -= 6 * sd
            grow = True
        if ends[1] > mid - 46:
            hi += 6 * sd
            grow = True
        if not grow:
            break
    n = 400
    ell = np.linspace(lo, hi, n + 1)
    lw = logw(ell)
    m = float(np.max(lw))
    w = np.exp(lw - m)
    h = ell[1] - ell[0]
    i1 = h * (np.sum(w) - 0.5 * (w[0] + w[-1]))
    i2 = 2 * h * (np.sum(w[::2]) - 0.5 * (w[0] + w[-1]))
    if abs(i1 - i2) > 1e-8 * i1:
        warnings.warn(f"posterior quadrature over log S not converged (relative change {abs(i1 - i2) / i1:.1e})",
                      RuntimeWarning, stacklevel=3)
    wts = w * h
    wts[0] *= 0.5
    wts[-1] *= 0.5
    return ell, wts / i1, m + math.log(i1)


def deep_linear_posterior(X: ArrayLike, y: ArrayLike, depth: int, width: Union[int, Sequence[int]], weight_var: float = 1.0,
                          temperature: float = 0.0, X_test: Optional[ArrayLike] = None, *,
                          method: str = "saddle") -> DeepLinearPosteriorResult:
    r"""Exact finite-width posterior of a deep linear network (Hanin & Zlokapa 2023; derivation in module docstring).

    ``T = 0``: predictive mean ``k*^T K_P^{-1} y`` (NNGP mean), variance ``E[S|y] v_NNGP(x)`` with

        E[S | y] = prod_l (2/N_l) G[1]/G[0],  G[k] = G^{L,0}_{0,L}(Q prod_l N_l / 2^L | P/2, N_l/2 + k),

    ``Q = y^T K_P^{-1} y`` (HZ's ``Var = (1/2) prod_{l=0}^{L-1} (2 sigma^2/N_l) |x_perp|^2 G[1]/G[0]``, seed 3.42b).
    ``T > 0``: ``E[.]`` over ``p(S|y) ~ p(S) N(y; 0, S K_P + T)`` by the trapezoid rule in ``log S`` (exponentially
    convergent for this smooth, log-concave-tailed integrand; checked against the half-step rule), with the prior
    density of ``S`` a Meijer G-function (``depth >= 2``) or a gamma density (``depth = 1``).

    Parameters
    ----------
    X, y, depth, width, weight_var, temperature, X_test : see :func:`bpkr`.
    method : {"saddle", "mpmath"}
        Route for the Meijer G-functions (:func:`log_meijer_g`).

    Returns
    -------
    DeepLinearPosteriorResult

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((4, 8)); y = 2 * rng.standard_normal(4)
    >>> ex = deep_linear_posterior(X, y, depth=2, width=200)
    >>> from meanfield.deep_linear import bpkr
    >>> bp = bpkr(X, y, depth=2, width=200)
    >>> abs(ex.scale_mean / bp.renormalization - 1) < 0.02   # O(1/N) apart
    True
    """
    if method not in ("saddle", "mpmath"):
        raise ValueError(f"method must be 'saddle' or 'mpmath', got {method!r}")
    kern, depth, ws, weight_var, T, Xt = _setup(X, y, depth, width, weight_var, temperature, X_test)
    P = kern.P
    if depth == 0:
        return _nngp(kern, depth, weight_var, T)
    z_star = float("nan")
    if T == 0.0:
        Q = kern.Q()
        log_w = math.log(Q) + float(np.sum(np.log(ws))) - (depth + 1) * math.log(2.0)
        b0 = np.concatenate([[P / 2.0], ws / 2.0])
        lg0 = float(log_meijer_g(b0, log_x=log_w, method=method))
        lg1 = float(log_meijer_g(b0 + np.concatenate([[0.0], np.ones(depth)]), log_x=log_w, method=method))
        lg2 = float(log_meijer_g(b0 + np.concatenate([[0.0], 2 * np.ones(depth)]), log_x=log_w, method=method))
        log_cp = float(np.sum(np.log(2.0 / ws)))
        s1 = math.exp(log_cp + lg1 - lg0)
        s2 = math.exp(2 * log_cp + lg2 - lg0)
        scale_std = math.sqrt(max(s2 - s1 * s1, 0.0))
        log_ev = (-P / 2.0 * math.log(2 * math.pi) - 0.5 * kern.logdetK() - P / 2.0 * math.log(Q / 2.0) + lg0
                  - float(np.sum(special.gammaln(ws / 2.0))))
        mean = var = None
        if Xt is not None:
            mean, v1 = kern.gp(1.0)
            var = s1 * v1
        if np.all(ws == ws[0]):
            z_star = hz_saddle_point(P / ws[0], Q / P, depth)
        return DeepLinearPosteriorResult(depth=depth, widths=tuple(int(w) for w in ws), weight_var=weight_var,
                                         temperature=T, mean=mean, variance=var, scale_mean=s1, scale_std=scale_std,
                                         log_evidence=log_ev, free_energy=-log_ev, z_star=z_star,
                                         method="meijer-g")
    centre = _bpkr_solve(kern, ws)[0]
    ell, wts, log_ev = _scale_posterior_grid(kern, ws, centre, method)
    S = np.exp(ell)
    s1 = float(np.sum(wts * S))
    s2 = float(np.sum(wts * S * S))
    mean = var = None
    if Xt is not None:
        ms = np.empty((S.size, Xt.shape[0]))
        vs = np.empty_like(ms)
        for i, s in enumerate(S):
            ms[i], vs[i] = kern.gp(float(s))
        mean = wts @ ms
        var = wts @ vs + wts @ (ms - mean) ** 2
    return DeepLinearPosteriorResult(depth=depth, widths=tuple(int(w) for w in ws), weight_var=weight_var,
                                     temperature=T, mean=mean, variance=var, scale_mean=s1,
                                     scale_std=math.sqrt(max(s2 - s1 * s1, 0.0)), log_evidence=log_ev,
                                     free_energy=-log_ev, z_star=z_star, method="quadrature")


def _nngp(kern: _Kernel, depth: int, weight_var: float, T: float) -> DeepLinearPosteriorResult:
    mean = var = None
    if kern.kt is not None:
        mean, var = kern.gp(1.0)
    if T == 0.0:
        log_ev = -0.5 * kern.Q() - 0.5 * kern.logdetK() - kern.P / 2.0 * math.log(2 * math.pi)
    else:
        log_ev = kern.loglik(1.0)
    return DeepLinearPosteriorResult(depth=depth, widths=(), weight_var=weight_var, temperature=T, mean=mean,
                                     variance=var, scale_mean=1.0, scale_std=0.0, log_evidence=float(log_ev),
                                     free_energy=float(-log_ev), z_star=0.0, method="nngp")


def nngp_linear_posterior(X: ArrayLike, y: ArrayLike, depth: int, weight_var: float = 1.0, temperature: float = 0.0,
                          X_test: Optional[ArrayLike] = None) -> DeepLinearPosteriorResult:
    r"""Infinite-width (NNGP) posterior of a deep linear network: the GP with ``K = sigma^{2L} X X^T / N_0``.

    Mean ``k*^T (K_P + T)^{-1} y``, variance ``k** - k*^T (K_P + T)^{-1} k*`` (``S = 1``).

    Examples
    --------
    >>> X = np.eye(2, 3); y = np.array([1.0, -1.0])
    >>> r = nngp_linear_posterior(X, y, depth=1, X_test=np.array([0.0, 0.0, 1.0]))
    >>> float(r.variance[0])  # sigma^4 |x_perp|^2 / N_0
    0.3333333333333333
    """
    kern, depth, _, weight_var, T, _ = _setup(X, y, depth, None, weight_var, temperature, X_test)
    return _nngp(kern, depth, weight_var, T)
