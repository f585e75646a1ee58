r"""Back-propagating kernel renormalization (Li & Sompolinsky 2021) and the Hanin-Zlokapa large-width saddle.

At large width the posterior of a deep linear network is the GP with the renormalized kernel ``S* K``; ``S*`` solves
the saddle equations derived in :mod:`meanfield.deep_linear`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from typing import Sequence, Union

    from .._typing import ArrayLike

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from scipy import optimize

from .._interop import short_repr
from .._checks import check_positive
from ._common import _check_depth, _Kernel, _result_dict, _setup

__all__ = ["hz_saddle_point", "bpkr_u0", "BPKRResult", "bpkr"]


def hz_saddle_point(alpha: float, ratio: float, depth: int) -> float:
    r"""Hanin-Zlokapa large-width saddle ``z*``: ``(1 + z/alpha)(1 + z)^{L-1} = ratio``, ``z > max(-alpha, -1)``.

    ``ratio = Q/P = y^T K_P^{-1} y / P = |theta*|^2 / (sigma^{2L} alpha_0)`` (seed eq. 3.43c, whose branch
    condition must read ``max``, not ``min``).  The left side increases from 0 to infinity on the allowed interval,
    so the root is unique.  Then ``u_0 = sigma^2 (1 + z*)`` solves the ``T = 0`` BPKR equation.

    Parameters
    ----------
    alpha : float
        ``P / N > 0``.
    ratio : float
        ``Q / P > 0``.
    depth : int
        Hidden layers ``depth = L - 1 >= 0``.

    Examples
    --------
    >>> round(hz_saddle_point(0.5, 1.0, 2), 12)  # Q/P = 1: no renormalization
    0.0
    """
    alpha = check_positive("alpha", alpha, scalar=True)
    ratio = check_positive("ratio", ratio, scalar=True)
    depth = _check_depth(depth, 0)
    if depth == 0:  # no hidden layer: 1 + z/alpha = ratio
        return alpha * (ratio - 1.0)
    lo = max(-alpha, -1.0)

    # in x = log(1 + z - lo) the log of the left side is increasing and smooth
    def h(x):  # z = lo + e; both logs computed without cancellation at the lower end
        e = math.exp(x)
        if alpha <= 1.0:  # lo = -alpha
            a1, a2 = e / alpha, (1.0 - alpha) + e
        else:  # lo = -1
            a1, a2 = (1.0 - 1.0 / alpha) + e / alpha, e
        return math.log(a1) + (depth * math.log(a2) if depth else 0.0) - math.log(ratio)

    a, bnd = -50.0, 1.0
    while h(bnd) < 0:
        bnd += 2.0
    while h(a) > 0:
        a -= 50.0
        if a < -2000:
            return lo
    x = optimize.brentq(h, a, bnd, xtol=1e-15, rtol=4 * np.finfo(float).eps, maxiter=400)
    return lo + math.exp(x)


def bpkr_u0(alpha: float, r0: float, depth: int, weight_var: float = 1.0) -> float:
    r"""Zero-temperature BPKR kernel renormalization ``u_0``: ``1 - u_0/sigma^2 = alpha (1 - u_0^{-(L-1)} r_0)``.

    Li & Sompolinsky (2021) eq. (3.32) of the seed; ``r_0 = y^T K_0^{-1} y / P`` with ``K_0 = sigma^2 X X^T/N_0``.
    Solved through ``u_0 = sigma^2 (1 + z*)`` with :func:`hz_saddle_point` at ``ratio = r_0 / sigma^{2(L-1)}``.
    Needs ``depth >= 1`` (hidden layers to renormalize).

    Examples
    --------
    >>> u = bpkr_u0(alpha=0.5, r0=3.0, depth=2)
    >>> abs(1 - u - 0.5 * (1 - 3.0 / u ** 2)) < 1e-12
    True
    """
    weight_var = check_positive("weight_var", weight_var, scalar=True)
    # u_0 renormalizes the hidden layers' kernel: without a hidden layer (depth 0) there is none (the formula would
    # give u_0 = sigma^2 (1 - alpha (1 - r_0)), negative for alpha (1 - r_0) > 1)
    depth = _check_depth(depth, 1)
    r0 = check_positive("r0", r0, scalar=True)
    log_ratio = math.log(r0) - depth * math.log(weight_var)
    if not -700.0 < log_ratio < 700.0:
        raise ValueError(f"r0 / weight_var^depth = exp({log_ratio:.4g}) is outside the float range: r0 = {r0!r}, "
                         f"weight_var = {weight_var!r}, depth = {depth}")
    z = hz_saddle_point(alpha, math.exp(log_ratio), depth)
    return weight_var * (1.0 + z)


@dataclass(frozen=True)
class BPKRResult:
    r"""Back-propagating kernel renormalization (Li & Sompolinsky) for a deep linear network.

    Attributes
    ----------
    u0 : float
        Kernel renormalization ``u_0`` (equal widths: the common ``u_l``; otherwise ``sigma^2 S*^{1/(L-1)}``).
    u : tuple of float
        Per hidden layer ``u_l = sigma^2 g_l``, ``N_l (1 - g_l) = R`` with ``R`` the right side of LS eq. (3.24).
    renormalization : float
        ``S* = prod_l u_l / sigma^2``: the renormalized kernel is ``S* K`` (``(u_0/sigma^2)^{L-1}`` for equal widths).
    r0 : float
        Mean squared readout ``r_0 = y^T K_0^{-1} y / P`` (``K_0 = sigma^2 X X^T / N_0``; ``nan`` if singular).
    alphas : tuple of float
        ``P / N_l``.
    z_star : float
        ``u_0 / sigma^2 - 1`` (HZ's saddle when ``T = 0`` and widths are equal).
    residual : float
        Largest ``|N_l (1 - g_l) - R(S*)| / N_l``: how well the saddle equations are solved.
    free_energy : float
        ``-log Z`` at the saddle, ``Z`` = evidence with the prior rate ``(N_l/2)(g - 1 - log g)`` (LS's ``beta H_0``
        up to its dropped constants); equals the exact ``-log Z`` up to ``O(log N)``.
    mean, variance : ndarray or None
        Predictive mean and variance at ``X_test`` of the GP with kernel ``S* K`` and noise ``T``.
    """

    depth: int
    widths: tuple
    weight_var: float
    temperature: float
    u0: float
    u: tuple
    renormalization: float
    r0: float
    alphas: tuple
    z_star: float
    residual: float
    free_energy: float
    mean: Optional[np.ndarray]
    variance: Optional[np.ndarray]

    __repr__ = short_repr

    def to_dict(self) -> dict:
        return _result_dict(self)


def _bpkr_solve(kern: _Kernel, ws: np.ndarray):
    """Minimise the BPKR objective over the one-parameter family of stationary ``g_l``.

    All layers share ``N_l (1 - g_l) = R``, so ``g_l = 1 + (g_min - 1) N_min / N_l``; we scan ``x = log g_min``
    for the global minimum of ``sum_l (N_l/2)(g_l - 1 - log g_l) - log N(y; 0, S K_P + T)`` and polish the
    stationarity equation ``N_min (g_min - 1) + R(S) = 0``.  Returns ``(S*, g, residual, objective)``.
    """
    nmin = float(np.min(ws))

    def g_of(x):
        return 1.0 + (math.exp(x) - 1.0) * nmin / ws

    def obj(x):
        g = g_of(x)
        prior = float(np.sum(ws / 2.0 * (g - 1.0 - np.log(g))))
        return prior - kern.loglik(float(np.prod(g)))

    xs = np.linspace(-40.0, 40.0, 801)
    with np.errstate(all="ignore"):
        vals = np.array([obj(x) for x in xs])
    vals = np.where(np.isfinite(vals), vals, np.inf)
    i = int(np.argmin(vals))
    if i == 0 or i == len(xs) - 1:
        raise FloatingPointError("BPKR saddle not bracketed: the data scale y^T K^{-1} y / P is extreme")
    res = optimize.minimize_scalar(obj, bracket=(xs[i - 1], xs[i], xs[i + 1]), method="brent", tol=1e-12)
    x = float(res.x)

    def stat(x):
        return nmin * (math.exp(x) - 1.0) + kern.R(float(np.prod(g_of(x))))

    for dx in (1e-6, 1e-4, 1e-2):
        a, b_ = x - dx, x + dx
        if stat(a) * stat(b_) < 0:
            x = optimize.brentq(stat, a, b_, xtol=1e-15, rtol=4 * np.finfo(float).eps)
            break
    g = g_of(x)
    S = float(np.prod(g))
    R = kern.R(S)
    residual = float(np.max(np.abs(ws * (1.0 - g) - R) / ws))
    return S, g, residual, obj(x)


def bpkr(X: ArrayLike, y: ArrayLike, depth: int, width: Union[int, Sequence[int]], weight_var: float = 1.0,
         temperature: float = 0.0, X_test: Optional[ArrayLike] = None) -> BPKRResult:
    r"""Back-propagating kernel renormalization (Li & Sompolinsky 2021) for a deep linear network.

    The posterior of a deep linear network is, at large width (``N_l, P -> inf``, ``alpha_l = P/N_l`` fixed), the
    GP with the renormalized kernel ``S* K``, ``K = sigma^{2L} X X^T / N_0``, ``S* = prod_l u_l / sigma^2``, where
    ``u_l = sigma^2 g_l`` solve (seed eq. 3.24, ``Gamma = S K_P + T``)

        N_l (1 - u_l/sigma^2) = Tr(Gamma^{-1} S K_P) - y^T Gamma^{-1} S K_P Gamma^{-1} y ,

    the stationarity of ``-sum_l (N_l/2)(g_l - 1 - log g_l) + log N(y; 0, S K_P + T)``.  At ``T = 0`` and equal widths
    this is ``1 - u_0/sigma^2 = alpha (1 - u_0^{-(L-1)} r_0)`` (seed 3.32).  The objective is minimised globally over a
    one-parameter family (all ``g_l`` share ``N_l (1 - g_l)``), then the stationarity equation is polished.

    Parameters
    ----------
    X : array (P, N_0)
        Training inputs.
    y : array (P,)
        Targets.
    depth : int
        Hidden layers ``depth >= 0`` (``L = depth + 1`` weight layers).
    width : int or sequence of int
        Hidden widths.
    weight_var : float
        ``sigma^2 > 0``.
    temperature : float
        ``T >= 0`` (label-noise variance).  ``T = 0`` needs ``X`` of full row rank.
    X_test : array (n, N_0), optional
        Test inputs for the predictive mean and variance.

    Returns
    -------
    BPKRResult

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((4, 8)); y = rng.standard_normal(4)
    >>> r = bpkr(X, y, depth=2, width=16)
    >>> r.residual < 1e-10
    True
    """
    kern, depth, ws, weight_var, T, Xt = _setup(X, y, depth, width, weight_var, temperature, X_test)
    P = kern.P
    if depth == 0:
        S, g, residual, objv = 1.0, np.zeros(0), 0.0, -kern.loglik(1.0)
    else:
        S, g, residual, objv = _bpkr_solve(kern, ws)
    r0 = kern.Q() * weight_var ** depth / P if kern.rank_ok else float("nan")
    mean = var = None
    if Xt is not None:
        mean, var = kern.gp(S)
    u0 = weight_var * S ** (1.0 / depth) if depth > 0 else weight_var
    return BPKRResult(depth=depth, widths=tuple(int(w) for w in ws), weight_var=weight_var, temperature=T,
                      u0=float(u0), u=tuple(float(weight_var * v) for v in g), renormalization=S, r0=float(r0),
                      alphas=tuple(float(P / w) for w in ws), z_star=float(u0 / weight_var - 1.0),
                      residual=residual, free_energy=float(objv), mean=mean, variance=var)
