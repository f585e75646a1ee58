r"""Exact finite-width prior of a deep linear network's output, and of the random kernel scale ``S``.

``f(x) | S ~ N(0, S s^2)`` with ``S = prod_l chi^2_{N_l} / N_l`` (:mod:`meanfield.deep_linear`), so the output density
and the density of ``S`` are Meijer G-functions (:mod:`meanfield.deep_linear.meijer_g`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from typing import Optional, Sequence, Union

    from matplotlib.axes import Axes

    from .._typing import ArrayLike

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import special

from .._interop import short_repr
from .._checks import check_finite_array, check_positive
from ..errors import DivergenceWarning
from ._common import _check_depth, _result_dict, _widths
from .meijer_g import log_meijer_g

__all__ = ["DeepLinearPriorResult", "deep_linear_prior", "deep_linear_prior_density"]


@dataclass(frozen=True)
class DeepLinearPriorResult:
    """Exact prior statistics of one output of a deep linear network at input norm ``|x|^2/N_0 = input_norm``.

    Attributes
    ----------
    depth, widths, weight_var, input_norm : the parameters.
    variance : float
        ``E f^2 = s^2 = sigma^{2L} input_norm`` (width independent: the NNGP value).
    fourth_moment : float
        ``E f^4 = 3 s^4 prod_l (1 + 2/N_l)``.
    excess_kurtosis : float
        ``E f^4 / s^4 - 3 = 3 (prod_l (1 + 2/N_l) - 1)`` (``~ 6 depth / N``): the finite-width non-Gaussianity.
    density_scale : float
        ``c = 2^L s^2 / prod_l N_l`` in ``p(f) = G(f^2/c | 0, (N_l-1)/2) / (sqrt(pi c) prod Gamma(N_l/2))``.
    """

    depth: int
    widths: tuple
    weight_var: float
    input_norm: float
    variance: float
    fourth_moment: float
    excess_kurtosis: float
    density_scale: float

    __repr__ = short_repr

    def to_dict(self) -> dict:
        return _result_dict(self)

    def density(self, f: ArrayLike, method: str = "saddle") -> np.ndarray:
        """``p(f)`` (see :func:`deep_linear_prior_density`)."""
        return deep_linear_prior_density(f, self.depth, list(self.widths), self.weight_var,
                                         self.input_norm, method=method)

    def plot(self, ax: Optional[Axes] = None, n_points: int = 201, logy: bool = True) -> Axes:
        """Plot the exact density against its infinite-width Gaussian limit ``N(0, s^2)``; returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4.5, 3.2))
        s = math.sqrt(self.variance)
        f = np.linspace(-5 * s, 5 * s, int(n_points))
        f = f[f != 0.0]
        ax.plot(f, self.density(f), lw=2, label=f"exact, depth {self.depth}, $N={list(self.widths)}$")
        ax.plot(f, np.exp(-f ** 2 / (2 * s * s)) / math.sqrt(2 * math.pi * s * s), "k--", lw=1,
                label=r"$N\to\infty$: $\mathcal{N}(0, s^2)$")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("$f(x)$")
        ax.set_ylabel("$p(f)$")
        ax.legend(fontsize=8)
        ax.figure.tight_layout()
        return ax


def deep_linear_prior(depth: int, width: Union[int, Sequence[int]], weight_var: float = 1.0,
                      input_norm: float = 1.0) -> DeepLinearPriorResult:
    r"""Exact prior moments of a deep linear network output (Zavatone-Veth & Pehlevan).

    ``f^2 = s^2 z^2 prod_{l=1}^{L-1} chi^2_{N_l}/N_l`` (module docstring), hence ``E f^2 = s^2`` and
    ``E f^4 = 3 s^4 prod_l (N_l + 2)/N_l``.

    Parameters
    ----------
    depth : int
        Number of hidden layers ``depth >= 0`` (``L = depth + 1`` weight layers).
    width : int or sequence of int
        Hidden widths ``N_l`` (one int for all layers).
    weight_var : float
        ``sigma^2 > 0``: every weight is ``N(0, sigma^2 / fan_in)``.
    input_norm : float
        ``|x|^2 / N_0 > 0``.

    Examples
    --------
    >>> r = deep_linear_prior(depth=2, width=4)
    >>> r.variance, round(r.fourth_moment, 6)
    (1.0, 6.75)
    """
    depth = _check_depth(depth, 0)
    ws = _widths(width, depth)
    weight_var = check_positive("weight_var", weight_var, scalar=True)
    input_norm = check_positive("input_norm", input_norm, scalar=True)   # (an array failed in math.log, unnamed)
    # in logs: sigma^(2L) and 2^L overflow a float (OverflowError from Python's **) at depth ~ 1000
    log_s2 = (depth + 1) * math.log(weight_var) + math.log(input_norm)
    prod = float(np.prod(1.0 + 2.0 / ws))
    with np.errstate(over="ignore"):
        s2 = float(np.exp(log_s2))
        fourth = float(np.exp(math.log(3.0 * prod) + 2.0 * log_s2))
        scale = float(np.exp(_log_density_scale(depth, ws, weight_var, input_norm)))
    if math.isinf(fourth):
        warnings.warn(f"the prior {'variance' if math.isinf(s2) else 'fourth moment'} exceeds the float64 range "
                      f"(returned as inf): weight_var^(depth + 1) input_norm = exp({log_s2:.4g})", DivergenceWarning,
                      stacklevel=2)
    return DeepLinearPriorResult(depth=depth, widths=tuple(int(w) for w in ws), weight_var=weight_var,
                                 input_norm=input_norm, variance=s2, fourth_moment=fourth,
                                 excess_kurtosis=3.0 * (prod - 1.0), density_scale=scale)


def _log_density_scale(depth: int, ws: np.ndarray, weight_var: float, input_norm: float) -> float:
    """log c, c = 2^L sigma^(2L) input_norm / prod_l N_l (the Meijer-G argument's scale)."""
    return float((depth + 1) * (math.log(2.0) + math.log(weight_var)) + math.log(input_norm) - np.sum(np.log(ws)))


def deep_linear_prior_density(f: ArrayLike, depth: int, width: Union[int, Sequence[int]], weight_var: float = 1.0,
                              input_norm: float = 1.0, *, log: bool = False, method: str = "saddle") -> np.ndarray:
    r"""Exact prior density of the output ``f(x)`` of a deep linear network at finite width.

    ``p(f) = G^{L,0}_{0,L}(f^2/c | 0, (N_1 - 1)/2, ..., (N_{L-1} - 1)/2) / (sqrt(pi c) prod_l Gamma(N_l/2))``,
    ``c = 2^L sigma^{2L} input_norm / prod_l N_l`` (Zavatone-Veth & Pehlevan 2021; seed eq. 3.38 with a
    single output unit; derivation in the module docstring).  ``depth = 0``: ``N(0, s^2)``; ``depth = 1``:
    ``p(f) = 2 (f^2/c)^{(N-1)/4} K_{(N-1)/2}(2|f|/sqrt(c)) / (sqrt(pi c) Gamma(N/2))``.  ``p(0) = inf`` when some
    ``N_l = 1`` (logarithmic divergence), finite otherwise.

    Parameters
    ----------
    f : float or array
        Output values.
    depth, width, weight_var, input_norm : see :func:`deep_linear_prior`.
    log : bool
        Return ``log p(f)`` (robust at any width).
    method : {"saddle", "mpmath"}
        Route for the Meijer G-function (:func:`log_meijer_g`).

    Examples
    --------
    >>> from scipy.integrate import quad
    >>> round(quad(lambda f: deep_linear_prior_density(f, 2, 3), -np.inf, np.inf)[0], 8)
    1.0
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DivergenceWarning)   # only the log scale is used here, which never overflows
        pr = deep_linear_prior(depth, width, weight_var, input_norm)
    ws = np.asarray(pr.widths, dtype=float)
    ff = check_finite_array("f", f)
    log_c = _log_density_scale(pr.depth, ws, pr.weight_var, pr.input_norm)
    b = np.concatenate([[0.0], (ws - 1.0) / 2.0])
    # f -> 0: G tends to prod_{l} Gamma((N_l - 1)/2), finite unless some N_l = 1 (then a log divergence: +inf)
    f2 = np.maximum(ff * ff, 1e-300)
    try:
        lg = np.asarray(log_meijer_g(b, log_x=np.log(f2) - log_c, method=method))
    except ValueError as exc:
        raise ValueError(f"f, depth, width, weight_var, input_norm: the density's Meijer-G argument f^2 / c (log c = "
                         f"{log_c:.4g}) is out of reach: {exc}") from None
    if depth > 0 and np.any(ws == 1):
        lg = np.where(ff == 0.0, np.inf, lg)
    logp = lg - 0.5 * (math.log(math.pi) + log_c) - float(np.sum(special.gammaln(ws / 2.0)))
    out = logp if log else np.exp(logp)
    return float(out) if np.ndim(out) == 0 else out


def _log_density_log_scale(ell: np.ndarray, ws: np.ndarray, method: str = "saddle") -> np.ndarray:
    """Density of ``log S``, ``S = prod chi^2_{N_l}/N_l``: ``G^{L-1,0}_{0,L-1}(S/c' | N_l/2) / prod Gamma(N_l/2)``."""
    k = ws / 2.0
    log_cp = float(np.sum(np.log(2.0 / ws)))
    if ws.size == 1:  # Gamma(k) in log space, closed form
        t = ell - log_cp
        return k[0] * t - np.exp(t) - special.gammaln(k[0])
    lg = np.asarray(log_meijer_g(k, log_x=ell - log_cp, method=method))
    return lg - float(np.sum(special.gammaln(k)))
