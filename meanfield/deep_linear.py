r"""Deep linear networks at finite width: exact Bayesian posterior, Meijer G-functions and BPKR.

The network (docs/mathematics.md section 6, seed 001 chapter 3) has ``depth = L`` hidden layers of widths ``N_1..N_L``,
input dimension ``N_0``, identity activation and one linear output,

    f(x) = W^{L+1} W^L ... W^1 x,     W^l_ij ~ N(0, sigma^2 / N_{l-1})   (sigma^2 = ``weight_var``),

and the Bayesian posterior at temperature ``T`` (= the variance of Gaussian label noise) on ``P`` examples is

    p(W | X, y)  ~  prior(W) * prod_mu N(y_mu ; f(x_mu), T)         (T = 0: f(x_mu) = y_mu exactly).

Derivation used throughout (ours; it replaces the seed's long route and is checked against sampled networks)
--------------------------------------------------------------------------------------------------------------
**Scale-mixture identity.** Write the end-to-end map as ``f(x) = theta . x`` with ``theta^T = v^T W^1`` and the
top-down row vector ``v^T = W^{L+1} W^L ... W^2`` (length ``N_1``).  For a fixed row vector ``a`` and a Gaussian
matrix ``W^l`` with iid ``N(0, sigma^2/N_{l-1})`` entries, ``a W^l ~ N(0, sigma^2 |a|^2 / N_{l-1} I)``, so
``|a W^l|^2 = |a|^2 (sigma^2/N_{l-1}) chi^2_{N_{l-1}}`` independently of the direction.  Iterating from the readout
down,

    |v|^2 = sigma^{2L} S,      S = prod_{l=1}^{L} g_l,   g_l = chi^2_{N_l} / N_l  (independent, E g_l = 1),

and, given ``v``, ``theta ~ N(0, sigma^2 |v|^2 / N_0 I)``.  Hence **a deep linear network is a Gaussian process whose
kernel is the infinite-width (NNGP) kernel times one random scale** ``S``:

    f | S  ~  GP(0, S K),        K(x, x') = sigma^{2(L+1)} x.x' / N_0 .

Everything below follows from this with ordinary Gaussian algebra:

* prior of one output (``K(x,x) = s^2``): ``f^2 = s^2 z^2 prod_l g_l`` is a product of ``L + 1`` independent
  gamma variables; the Mellin transform of a product of ``Gamma(k_j)`` variables is ``prod_j Gamma(k_j + s - 1)``,
  which is that of ``G^{m,0}_{0,m}``.  Changing variables to ``f`` (two signs, Jacobian) gives

      p(f) = G^{L+1,0}_{0,L+1}( f^2 / c | 0, (N_1-1)/2, ..., (N_L-1)/2 ) / ( sqrt(pi c) prod_l Gamma(N_l/2) ),
      c = 2^{L+1} s^2 / prod_l N_l ,

  identical to Zavatone-Veth & Pehlevan (seed eq. 3.38 with one output unit).  Moments: ``E f^2 = s^2``,
  ``E f^4 = 3 s^4 prod_l (1 + 2/N_l)``.  ``depth = 0`` gives the Gaussian, ``depth = 1`` a K-Bessel law.
* posterior of the scale: ``p(S | y) ~ p(S) N(y; 0, S K_P + T I)`` (``K_P`` the ``P x P`` train kernel); given
  ``S`` the predictive law of ``f(x*)`` is the GP posterior with mean ``m_S = S k*^T (S K_P + T)^{-1} y`` and
  variance ``v_S = S k** - S^2 k*^T (S K_P + T)^{-1} k*``.  Predictive mean ``E[m_S | y]``, variance
  ``E[v_S | y] + Var[m_S | y]``.
* ``T = 0`` (needs ``P <= N_0`` and ``X`` of full row rank): ``m_S = k*^T K_P^{-1} y`` does not depend on ``S``
  (predictive mean = NNGP mean = ``theta* . x`` with the minimum-norm interpolator ``theta*``), and
  ``v_S = S v_NNGP`` with ``v_NNGP = sigma^{2(L+1)} |x_perp|^2 / N_0``.  With ``Q = y^T K_P^{-1} y`` the posterior
  weight is ``p(S) S^{-P/2} exp(-Q/(2S))``; the Mellin transform of ``w -> E[Y^a exp(-w/Y)]`` is
  ``Gamma(s) E[Y^{a+s}]``, so

      E[S | y] = prod_l (2/N_l) G[1]/G[0],   G[k] = G^{L+1,0}_{0,L+1}( w | P/2, N_1/2 + k, ..., N_L/2 + k ),
      w = Q prod_l N_l / 2^{L+1} = prod_{l=0}^{L} (N_l / (2 sigma^2)) |theta*|^2 ,

  which is Hanin & Zlokapa's ``Var = (1/2) prod_{l=0}^L (2 sigma^2/N_l) |x_perp|^2 G[1]/G[0]`` (seed 3.42b).
  The evidence is ``log Z = -P/2 log(2 pi) - 1/2 log det K_P - P/2 log(Q/2) + log G[0] - sum_l log Gamma(N_l/2)``.
* large width (saddle of the Mellin-Barnes integral ``G = (2 pi i)^{-1} int prod_j Gamma(b_j + s) w^{-s} ds``):
  the saddle ``s*`` solves ``sum_j psi(b_j + s*) = log w``; replacing ``psi`` by ``log`` and writing
  ``g_l = 1 + 2 s*/N_l`` gives ``P (1 + 2 s*/P) prod_l g_l = Q``, i.e. for equal widths with ``z* = 2 s*/N``,
  ``alpha = P/N``, ``alpha_0 = P/N_0``:

      (1 + z*/alpha) (1 + z*)^L = Q / P = |theta*|^2 / (sigma^{2(L+1)} alpha_0),    z* > max(-alpha, -1),

  and ``G[1]/G[0] -> (N (1 + z*)/2)^L``, so ``E[S | y] -> (1 + z*)^L``.
* BPKR (Li & Sompolinsky) is the same saddle taken on the ``g_l``: the log posterior density of the ``g_l`` is
  ``-sum_l (N_l/2)(g_l - 1 - log g_l) + log N(y; 0, S K_P + T)`` up to ``O(log N)``; its stationarity reads

      N_l (1 - g_l) = Tr[(S K_P + T)^{-1} S K_P] - y^T (S K_P + T)^{-1} S K_P (S K_P + T)^{-1} y ,

  i.e. LS's eq. (3.24) with ``u_l = sigma^2 g_l`` and ``u^L K_0 = S K_P`` (``K_0 = sigma^2 X X^T / N_0``).  At
  ``T = 0`` this is ``1 - u_0/sigma^2 = alpha (1 - u_0^{-L} r_0)`` with ``r_0 = y^T K_0^{-1} y / P = sigma^{2L} Q/P``,
  the HZ saddle with ``u_0 = sigma^2 (1 + z*)`` and ``alpha_0 sigma^2 r_0 = |theta*|^2``.  The renormalized
  predictor is the GP with kernel ``S* K = (u_0/sigma^2)^L K``; its variance exceeds the NNGP one by
  ``(u_0/sigma^2)^L`` at ``T = 0`` and the exact one differs from it by ``O(1/N)``.

Typos in the seed (each checked numerically in ``tests/test_deep_linear.py``)
----------------------------------------------------------------------------
* 3.2 lacks the ``N_{l-1}`` of the prior precision (the measures 3.5 are right: ``W ~ N(0, sigma^2/N_{l-1})``).
* 3.16-3.17: the rank-one matrix is ``sigma^4/N^2 (t.x)(t.x)`` without the 1/2 (else 3.20 does not follow).
* 3.22: the delta-function exponent is ``N u m/(2 sigma^2) - 1/2 t^T (u K) t`` (not ``-(sigma^2/N) t^T u K t``);
  3.27 flips the sign of the ``log(1 + m)`` terms (3.23 is right).
* 3.43c: the root is taken with ``z* > max(-alpha, -1)`` (both Gamma arguments ``P/2 + s``, ``N/2 + s`` of the
  Mellin-Barnes integrand positive); with ``min``, spurious roots in ``(-alpha, -1)`` exist for even ``L``,
  ``alpha > 1``.
* 3.61: ``<exp(-beta H)> ~ exp(-beta <H>)`` (the "Gaussian limit") is the first cumulant, exact as ``beta -> 0``
  (high temperature), not ``beta -> inf`` (Jensen makes it a lower bound); 3.62 misses the 2 of ``-2 <f> y`` (harmless:
  ``<f> = 0``).
* A.2c: ``G^{1,0}_{0,2}(x/2 | 0, 1/2) = cos(sqrt(2 x))/sqrt(pi)`` (the seed has ``cos(sqrt(2) x)``);
  A.3a: ``G^{m,n}_{p,q}(x | a; b) = G^{n,m}_{q,p}(1/x | 1-b; 1-a)`` (the seed keeps ``m, n, p, q`` and ``a, b``).

References: Q. Li and H. Sompolinsky, PRX 11, 031059 (2021); B. Hanin and A. Zlokapa, PNAS 120 (2023);
J. Zavatone-Veth and C. Pehlevan, NeurIPS 2021; seed 001 (Leiden M.Sc. thesis 2023), chapter 3.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, fields
from typing import Optional

import numpy as np
from scipy import optimize, special

from ._checks import check_array, check_finite_array, check_int, check_nonneg, check_positive

__all__ = [
    "log_meijer_g",
    "meijer_g",
    "DeepLinearPriorResult",
    "deep_linear_prior",
    "deep_linear_prior_density",
    "hz_saddle_point",
    "bpkr_u0",
    "BPKRResult",
    "bpkr",
    "DeepLinearPosteriorResult",
    "deep_linear_posterior",
    "nngp_linear_posterior",
]


# ---------------------------------------------------------------------------------------------------------------
# Meijer G^{m,0}_{0,m}: Mellin-Barnes integral through its real saddle (float64, log space) and mpmath
# ---------------------------------------------------------------------------------------------------------------

def _saddle_s(b: np.ndarray, log_w: float) -> float:
    """Real saddle ``s0 > -min(b)`` of ``phi(s) = sum log Gamma(b + s) - s log w`` (``sum psi(b + s0) = log w``)."""
    bmin = float(np.min(b))

    def h(tau):  # s = -bmin + exp(tau); h increasing in tau
        s = -bmin + math.exp(tau)
        return float(np.sum(special.digamma(b + s))) - log_w

    lo, hi = -700.0, 1.0
    while h(hi) < 0.0:
        hi += 4.0
        if hi > 700.0:
            raise FloatingPointError("Meijer-G saddle search diverged (log_x too large)")
    if h(lo) > 0.0:  # w astronomically small: the saddle sits on the pole
        raise FloatingPointError("Meijer-G argument too small for the saddle route")
    tau = optimize.brentq(h, lo, hi, xtol=1e-15, rtol=1e-15, maxiter=500)
    return -bmin + math.exp(tau)


def _log_g0m_saddle(b: np.ndarray, log_w: float) -> float:
    r"""log G^{m,0}_{0,m}(w | b) by the Mellin-Barnes integral on the vertical line through its real saddle.

    ``G = (1/2 pi) int exp(phi(s0 + i t)) dt = exp(phi(s0))/pi int_0^inf Re exp(phi(s0 + i t) - phi(s0)) dt``
    (the integrand is conjugate-symmetric).  The linear phase vanishes at the saddle, ``|Gamma(x + i t)|`` decreases
    in ``|t|``, and the integrand is analytic in the strip ``|Im t| < d = min(b) + s0``: the trapezoid rule with step
    ``h`` converges like ``exp(-2 pi d / h)``.  We take ``h = min(sigma/4, d/8)`` (``sigma = phi''(s0)^{-1/2}``) and
    check it against the ``2h`` rule.
    """
    s0 = _saddle_s(b, log_w)
    x0 = b + s0
    phi0 = float(np.sum(special.gammaln(x0))) - s0 * log_w
    curv = float(np.sum(special.polygamma(1, x0)))
    sigma = 1.0 / math.sqrt(curv)
    d = float(np.min(x0))
    h = min(sigma / 4.0, d / 8.0)

    def dphi(t):
        z = x0[None, :] + 1j * t[:, None]
        return np.sum(special.loggamma(z), axis=1) - np.sum(special.gammaln(x0)) - 1j * t * log_w

    # extent: where Re(dphi) < -46 (integrand below 1e-20 relative to its peak)
    tmax = 8.0 * sigma
    while float(np.real(dphi(np.array([tmax])))[0]) > -46.0:
        tmax *= 1.6
        if tmax > 1e7 * max(sigma, 1.0):
            raise FloatingPointError("Mellin-Barnes integrand does not decay")
    n = int(math.ceil(tmax / h))
    n += n % 2  # even, so that the 2h rule uses every other node
    if n > 4_000_000:
        raise FloatingPointError("Mellin-Barnes quadrature needs too many nodes (argument too close to a pole)")
    t = np.arange(n + 1) * (tmax / n)
    vals = np.real(np.exp(dphi(t)))
    step = tmax / n
    i1 = step * (0.5 * vals[0] + np.sum(vals[1:]))
    i2 = 2 * step * (0.5 * vals[0] + np.sum(vals[2::2]))
    # the trapezoid error decays like exp(-2 pi d / h): err(h) ~ err(2h)^2, so |I_h - I_2h| < 1e-7 means err(h) < 1e-13
    if not (i1 > 0.0) or abs(i1 - i2) > 1e-7 * abs(i1):
        raise FloatingPointError(f"Mellin-Barnes quadrature not converged (I_h={i1!r}, I_2h={i2!r})")
    return phi0 + math.log(i1 / math.pi)


def _log_g0m_mpmath(b: np.ndarray, log_w: float, dps: Optional[int] = None) -> float:
    """log G^{m,0}_{0,m}(w|b) with mpmath.meijerg, raising the working precision until two precisions agree."""
    import mpmath as mp

    start = 30 if dps is None else int(dps)
    prev = None
    for k in range(5):
        prec = start * 2 ** k
        with mp.workdps(prec):
            bb = [mp.mpf(float(v)) for v in b]
            w = mp.exp(mp.mpf(log_w))
            try:
                val = mp.meijerg([[], []], [bb, []], w, maxprec=40 * prec)
            except (ValueError, ZeroDivisionError, mp.libmp.NoConvergence):
                prev = None
                continue
            if val <= 0:
                prev = None
                continue
            cur = float(mp.log(val))
        if dps is not None:
            return cur
        if prev is not None and abs(cur - prev) <= 1e-13 * max(1.0, abs(cur)):
            return cur
        prev = cur
    raise FloatingPointError("mpmath.meijerg did not converge up to %d digits" % (start * 16))


def log_meijer_g(b, x=None, *, log_x=None, method: str = "saddle") -> np.ndarray:
    r"""Logarithm of the Meijer G-function ``G^{m,0}_{0,m}(x | b_1, ..., b_m)`` for ``x > 0``.

    ``G^{m,0}_{0,m}(x|b) = (2 pi i)^{-1} int_{c - i inf}^{c + i inf} prod_j Gamma(b_j + s) x^{-s} ds``, ``c > -min b``
    (seed appendix A, eq. A.1 with ``s -> -s``): its Mellin transform is ``prod_j Gamma(b_j + s)``, so
    ``G(y | k_j - 1) / prod_j Gamma(k_j)`` is the density of a product of independent ``Gamma(k_j)`` variables.  This
    is the only family the deep linear network needs.

    Parameters
    ----------
    b : sequence of float
        Lower parameters, ``m >= 1`` of them (any real values; the contour passes right of all poles).
    x : float or array, optional
        Argument ``> 0``.  Give ``log_x`` instead for arguments beyond float range (``x ~ N^{L+1}`` is routine).
    log_x : float or array, optional
        ``log(x)``.
    method : {"saddle", "mpmath"}
        ``"saddle"`` (default): float64 quadrature of the Mellin-Barnes integral along the vertical line through
        its real saddle, in log space; accurate to ~1e-12 relative and robust at widths ``N >> 1000``.
        ``"mpmath"``: ``mpmath.meijerg``, raising the precision (30, 60, ... digits) until two precisions agree;
        exact but slow at large parameters (default mpmath precision fails near ``N = 1000``).

    Returns
    -------
    float or ndarray
        ``log G`` (same shape as ``x``).

    Examples
    --------
    >>> import numpy as np
    >>> round(float(log_meijer_g([0.0], 2.0)), 12)  # G^{1,0}_{0,1}(x|0) = exp(-x)
    -2.0
    """
    bb = check_array("b", b, (0, 1)).ravel()
    if (x is None) == (log_x is None):
        raise TypeError("give exactly one of x and log_x")
    if x is not None:
        lx = np.log(np.asarray(check_positive("x", x), dtype=np.float64))
        shape = np.shape(x)
    else:
        lx = check_finite_array("log_x", log_x)
        shape = np.shape(log_x)
    if method not in ("saddle", "mpmath"):
        raise ValueError(f"method must be 'saddle' or 'mpmath', got {method!r}")
    route = _log_g0m_saddle if method == "saddle" else _log_g0m_mpmath
    out = np.array([route(bb, float(v)) for v in np.ravel(lx)])
    return float(out[0]) if shape == () else out.reshape(shape)


def meijer_g(b, x, method: str = "saddle"):
    """``G^{m,0}_{0,m}(x | b)`` (see :func:`log_meijer_g`); overflows to ``inf`` with a warning if out of range.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.special import kv
    >>> x = 1.3  # G^{2,0}_{0,2}(x | a, b) = 2 x^{(a+b)/2} K_{a-b}(2 sqrt x)
    >>> bool(np.isclose(meijer_g([0.5, 0.0], x), 2 * x ** 0.25 * kv(0.5, 2 * np.sqrt(x))))
    True
    """
    lg = np.asarray(log_meijer_g(b, x, method=method))
    if np.any(lg > 709.0):
        warnings.warn("meijer_g overflows float64; use log_meijer_g", RuntimeWarning, stacklevel=2)
    with np.errstate(over="ignore"):
        out = np.exp(lg)
    return float(out) if out.ndim == 0 else out


# ---------------------------------------------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------------------------------------------

def _widths(width, depth: int) -> np.ndarray:
    if isinstance(width, (list, tuple, np.ndarray)):
        ws = list(np.ravel(np.asarray(width, dtype=object)))
        if len(ws) != depth:
            raise ValueError(f"width must be an integer or a sequence of length depth={depth}, got length {len(ws)}")
        return np.array([check_int(f"width[{i}]", int(w) if isinstance(w, np.integer) else w, 1)
                         for i, w in enumerate(ws)], dtype=np.float64)
    return np.full(depth, float(check_int("width", width, 1)))


def _data(X, y):
    X = check_array("X", X, 2)
    y = check_array("y", y, 1)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"y must be a 1-d array of length P={X.shape[0]}, got shape {y.shape}")
    return X, y


def _test_inputs(X_test, n0: int):
    if X_test is None:
        return None
    Xt = check_array("X_test", X_test, (1, 2))
    if Xt.ndim == 1:
        Xt = Xt[None, :]
    if Xt.shape[1] != n0:
        raise ValueError(f"X_test must have shape (n, N_0={n0}), got {np.shape(X_test)}")
    return Xt


class _Kernel:
    """Train/test linear-kernel algebra in the eigenbasis of ``K_P = sigma^{2(L+1)} X X^T / N_0``."""

    def __init__(self, X, y, Xt, weight_var, depth, temperature):
        self.P, self.n0 = X.shape
        scale = weight_var ** (depth + 1) / self.n0
        K = scale * (X @ X.T)
        kap, U = np.linalg.eigh(K)
        self.kap = np.clip(kap, 0.0, None)
        self.yt = U.T @ y
        self.T = temperature
        kmax = float(np.max(self.kap))
        self.rank_ok = bool(np.min(self.kap) > 1e-10 * kmax) if kmax > 0 else False
        if temperature == 0.0 and not self.rank_ok:
            raise ValueError("temperature=0 needs P <= N_0 and X of full row rank (the train kernel is singular); "
                             "use temperature > 0")
        if Xt is not None:
            self.kt = scale * (Xt @ X.T) @ U  # (n, P) in the eigenbasis
            self.ktt = scale * np.sum(Xt * Xt, axis=1)
        else:
            self.kt = None
            self.ktt = None

    def Q(self) -> float:
        return float(np.sum(self.yt ** 2 / self.kap))

    def logdetK(self) -> float:
        return float(np.sum(np.log(self.kap)))

    def loglik(self, S: float) -> float:
        """log N(y; 0, S K_P + T I)."""
        d = S * self.kap + self.T
        return float(-0.5 * np.sum(self.yt ** 2 / d) - 0.5 * np.sum(np.log(2 * np.pi * d)))

    def R(self, S: float) -> float:
        """Tr[(SK+T)^{-1} SK] - y^T (SK+T)^{-1} SK (SK+T)^{-1} y (the BPKR right-hand side)."""
        a = S * self.kap
        d = a + self.T
        return float(np.sum(a / d) - np.sum(self.yt ** 2 * a / d ** 2))

    def gp(self, S: float):
        """Predictive mean and variance of the GP with kernel S K (train noise T) at the test inputs."""
        d = S * self.kap + self.T
        mean = S * (self.kt @ (self.yt / d))
        var = S * self.ktt - S ** 2 * np.sum(self.kt ** 2 / d, axis=1)
        return mean, np.maximum(var, 0.0)


# ---------------------------------------------------------------------------------------------------------------
# prior of the output
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeepLinearPriorResult:
    """Exact prior statistics of one output of a deep linear network at input norm ``|x|^2/N_0 = input_norm``.

    Attributes
    ----------
    depth, widths, weight_var, input_norm : the parameters.
    variance : float
        ``E f^2 = s^2 = sigma^{2(L+1)} input_norm`` (width independent: the NNGP value).
    fourth_moment : float
        ``E f^4 = 3 s^4 prod_l (1 + 2/N_l)``.
    excess_kurtosis : float
        ``E f^4 / s^4 - 3 = 3 (prod_l (1 + 2/N_l) - 1)`` (``~ 6 L / N``): the finite-width non-Gaussianity.
    density_scale : float
        ``c = 2^{L+1} s^2 / prod_l N_l`` in ``p(f) = G(f^2/c | 0, (N_l-1)/2) / (sqrt(pi c) prod Gamma(N_l/2))``.
    """

    depth: int
    widths: tuple
    weight_var: float
    input_norm: float
    variance: float
    fourth_moment: float
    excess_kurtosis: float
    density_scale: float

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def density(self, f, method: str = "saddle"):
        """``p(f)`` (see :func:`deep_linear_prior_density`)."""
        return deep_linear_prior_density(f, self.depth, list(self.widths), self.weight_var,
                                         self.input_norm, method=method)

    def plot(self, ax=None, n_points: int = 201, logy: bool = True):
        """Plot the exact density against its infinite-width Gaussian limit ``N(0, s^2)``; returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4.5, 3.2))
        s = math.sqrt(self.variance)
        f = np.linspace(-5 * s, 5 * s, int(n_points))
        f = f[f != 0.0]
        ax.plot(f, self.density(f), lw=2, label=f"exact, $L={self.depth}$, $N={list(self.widths)}$")
        ax.plot(f, np.exp(-f ** 2 / (2 * s * s)) / math.sqrt(2 * math.pi * s * s), "k--", lw=1,
                label=r"$N\to\infty$: $\mathcal{N}(0, s^2)$")
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("$f(x)$")
        ax.set_ylabel("$p(f)$")
        ax.legend(fontsize=8)
        ax.figure.tight_layout()
        return ax


def deep_linear_prior(depth: int, width, weight_var: float = 1.0, input_norm: float = 1.0) -> DeepLinearPriorResult:
    r"""Exact prior moments of a deep linear network output (Zavatone-Veth & Pehlevan).

    ``f^2 = s^2 z^2 prod_{l=1}^L chi^2_{N_l}/N_l`` (module docstring), hence ``E f^2 = s^2`` and
    ``E f^4 = 3 s^4 prod_l (N_l + 2)/N_l``.

    Parameters
    ----------
    depth : int
        Number of hidden layers ``L >= 0``.
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
    depth = check_int("depth", depth, 0)
    ws = _widths(width, depth)
    weight_var = check_positive("weight_var", weight_var)
    input_norm = check_positive("input_norm", input_norm)
    s2 = weight_var ** (depth + 1) * input_norm
    prod = float(np.prod(1.0 + 2.0 / ws))
    return DeepLinearPriorResult(depth=depth, widths=tuple(int(w) for w in ws), weight_var=weight_var,
                                 input_norm=input_norm, variance=s2, fourth_moment=3.0 * s2 ** 2 * prod,
                                 excess_kurtosis=3.0 * (prod - 1.0),
                                 density_scale=2.0 ** (depth + 1) * s2 / float(np.prod(ws)))


def deep_linear_prior_density(f, depth: int, width, weight_var: float = 1.0, input_norm: float = 1.0, *,
                              log: bool = False, method: str = "saddle"):
    r"""Exact prior density of the output ``f(x)`` of a deep linear network at finite width.

    ``p(f) = G^{L+1,0}_{0,L+1}(f^2/c | 0, (N_1 - 1)/2, ..., (N_L - 1)/2) / (sqrt(pi c) prod_l Gamma(N_l/2))``,
    ``c = 2^{L+1} sigma^{2(L+1)} input_norm / prod_l N_l`` (Zavatone-Veth & Pehlevan 2021; seed eq. 3.38 with a
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
    pr = deep_linear_prior(depth, width, weight_var, input_norm)
    ws = np.asarray(pr.widths, dtype=float)
    ff = check_finite_array("f", f)
    c = pr.density_scale
    b = np.concatenate([[0.0], (ws - 1.0) / 2.0])
    # f -> 0: G tends to prod_{l} Gamma((N_l - 1)/2), finite unless some N_l = 1 (then a log divergence: +inf)
    f2 = np.maximum(ff * ff, 1e-300)
    lg = np.asarray(log_meijer_g(b, log_x=np.log(f2 / c), method=method))
    if depth > 0 and np.any(ws == 1):
        lg = np.where(ff == 0.0, np.inf, lg)
    logp = lg - 0.5 * np.log(np.pi * c) - float(np.sum(special.gammaln(ws / 2.0)))
    out = logp if log else np.exp(logp)
    return float(out) if np.ndim(out) == 0 else out


# ---------------------------------------------------------------------------------------------------------------
# large-width saddle and BPKR
# ---------------------------------------------------------------------------------------------------------------

def hz_saddle_point(alpha: float, ratio: float, depth: int) -> float:
    r"""Hanin-Zlokapa large-width saddle ``z*``: ``(1 + z/alpha)(1 + z)^L = ratio``, ``z > max(-alpha, -1)``.

    ``ratio = Q/P = y^T K_P^{-1} y / P = |theta*|^2 / (sigma^{2(L+1)} alpha_0)`` (seed eq. 3.43c, whose branch
    condition must read ``max``, not ``min``).  The left side increases from 0 to infinity on the allowed interval,
    so the root is unique.  Then ``u_0 = sigma^2 (1 + z*)`` solves the ``T = 0`` BPKR equation.

    Parameters
    ----------
    alpha : float
        ``P / N > 0``.
    ratio : float
        ``Q / P > 0``.
    depth : int
        ``L >= 0``.

    Examples
    --------
    >>> round(hz_saddle_point(0.5, 1.0, 2), 12)  # Q/P = 1: no renormalization
    0.0
    """
    alpha = check_positive("alpha", alpha)
    ratio = check_positive("ratio", ratio)
    depth = check_int("depth", depth, 0)
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
    r"""Zero-temperature BPKR kernel renormalization ``u_0``: ``1 - u_0/sigma^2 = alpha (1 - u_0^{-L} r_0)``.

    Li & Sompolinsky (2021) eq. (3.32) of the seed; ``r_0 = y^T K_0^{-1} y / P`` with ``K_0 = sigma^2 X X^T/N_0``.
    Solved through ``u_0 = sigma^2 (1 + z*)`` with :func:`hz_saddle_point` at ``ratio = r_0 / sigma^{2L}``.

    Examples
    --------
    >>> u = bpkr_u0(alpha=0.5, r0=3.0, depth=2)
    >>> abs(1 - u - 0.5 * (1 - 3.0 / u ** 2)) < 1e-12
    True
    """
    weight_var = check_positive("weight_var", weight_var)
    depth = check_int("depth", depth, 0)
    r0 = check_positive("r0", r0)
    z = hz_saddle_point(alpha, r0 / weight_var ** depth, depth)
    return weight_var * (1.0 + z)


@dataclass(frozen=True)
class BPKRResult:
    r"""Back-propagating kernel renormalization (Li & Sompolinsky) for a deep linear network.

    Attributes
    ----------
    u0 : float
        Kernel renormalization ``u_0`` (equal widths: the common ``u_l``; otherwise ``sigma^2 S*^{1/L}``).
    u : tuple of float
        Per hidden layer ``u_l = sigma^2 g_l``, ``N_l (1 - g_l) = R`` with ``R`` the right side of LS eq. (3.24).
    renormalization : float
        ``S* = prod_l u_l / sigma^2``: the renormalized kernel is ``S* K`` (``(u_0/sigma^2)^L`` for equal widths).
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

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out


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


def bpkr(X, y, depth: int, width, weight_var: float = 1.0, temperature: float = 0.0, X_test=None) -> BPKRResult:
    r"""Back-propagating kernel renormalization (Li & Sompolinsky 2021) for a deep linear network.

    The posterior of a deep linear network is, at large width (``N_l, P -> inf``, ``alpha_l = P/N_l`` fixed), the
    GP with the renormalized kernel ``S* K``, ``K = sigma^{2(L+1)} X X^T / N_0``, ``S* = prod_l u_l / sigma^2``, where
    ``u_l = sigma^2 g_l`` solve (seed eq. 3.24, ``Gamma = S K_P + T``)

        N_l (1 - u_l/sigma^2) = Tr(Gamma^{-1} S K_P) - y^T Gamma^{-1} S K_P Gamma^{-1} y ,

    the stationarity of ``-sum_l (N_l/2)(g_l - 1 - log g_l) + log N(y; 0, S K_P + T)``.  At ``T = 0`` and equal widths
    this is ``1 - u_0/sigma^2 = alpha (1 - u_0^{-L} r_0)`` (seed 3.32).  The objective is minimised globally over a
    one-parameter family (all ``g_l`` share ``N_l (1 - g_l)``), then the stationarity equation is polished.

    Parameters
    ----------
    X : array (P, N_0)
        Training inputs.
    y : array (P,)
        Targets.
    depth : int
        Hidden layers ``L >= 0``.
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
    X, y = _data(X, y)
    depth = check_int("depth", depth, 0)
    ws = _widths(width, depth)
    weight_var = check_positive("weight_var", weight_var)
    T = check_nonneg("temperature", temperature)
    Xt = _test_inputs(X_test, X.shape[1])
    kern = _Kernel(X, y, Xt, weight_var, depth, T)
    P = X.shape[0]
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


# ---------------------------------------------------------------------------------------------------------------
# exact finite-width posterior
# ---------------------------------------------------------------------------------------------------------------

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

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out


def _log_density_log_scale(ell: np.ndarray, ws: np.ndarray, method: str = "saddle") -> np.ndarray:
    """Density of ``log S``, ``S = prod chi^2_{N_l}/N_l``: ``G^{L,0}_{0,L}(S/c' | N_l/2) / prod Gamma(N_l/2)``."""
    k = ws / 2.0
    log_cp = float(np.sum(np.log(2.0 / ws)))
    if ws.size == 1:  # Gamma(k) in log space, closed form
        t = ell - log_cp
        return k[0] * t - np.exp(t) - special.gammaln(k[0])
    lg = np.asarray(log_meijer_g(k, log_x=ell - log_cp, method=method))
    return lg - float(np.sum(special.gammaln(k)))


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


def deep_linear_posterior(X, y, depth: int, width, weight_var: float = 1.0, temperature: float = 0.0,
                          X_test=None, *, method: str = "saddle") -> DeepLinearPosteriorResult:
    r"""Exact finite-width posterior of a deep linear network (Hanin & Zlokapa 2023; derivation in module docstring).

    ``T = 0``: predictive mean ``k*^T K_P^{-1} y`` (NNGP mean), variance ``E[S|y] v_NNGP(x)`` with

        E[S | y] = prod_l (2/N_l) G[1]/G[0],  G[k] = G^{L+1,0}_{0,L+1}(Q prod_l N_l / 2^{L+1} | P/2, N_l/2 + k),

    ``Q = y^T K_P^{-1} y`` (HZ's ``Var = (1/2) prod_{l=0}^L (2 sigma^2/N_l) |x_perp|^2 G[1]/G[0]``, seed 3.42b).
    ``T > 0``: ``E[.]`` over ``p(S|y) ~ p(S) N(y; 0, S K_P + T)`` by the trapezoid rule in ``log S`` (exponentially
    convergent for this smooth, log-concave-tailed integrand; checked against the half-step rule), with the prior
    density of ``S`` a Meijer G-function (``L >= 2``) or a gamma density (``L = 1``).

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
    >>> bp = bpkr(X, y, depth=2, width=200)
    >>> abs(ex.scale_mean / bp.renormalization - 1) < 0.02   # O(1/N) apart
    True
    """
    X, y = _data(X, y)
    depth = check_int("depth", depth, 0)
    ws = _widths(width, depth)
    weight_var = check_positive("weight_var", weight_var)
    T = check_nonneg("temperature", temperature)
    if method not in ("saddle", "mpmath"):
        raise ValueError(f"method must be 'saddle' or 'mpmath', got {method!r}")
    Xt = _test_inputs(X_test, X.shape[1])
    kern = _Kernel(X, y, Xt, weight_var, depth, T)
    P = X.shape[0]
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


def nngp_linear_posterior(X, y, depth: int, weight_var: float = 1.0, temperature: float = 0.0,
                          X_test=None) -> DeepLinearPosteriorResult:
    r"""Infinite-width (NNGP) posterior of a deep linear network: the GP with ``K = sigma^{2(L+1)} X X^T / N_0``.

    Mean ``k*^T (K_P + T)^{-1} y``, variance ``k** - k*^T (K_P + T)^{-1} k*`` (``S = 1``).

    Examples
    --------
    >>> X = np.eye(2, 3); y = np.array([1.0, -1.0])
    >>> r = nngp_linear_posterior(X, y, depth=1, X_test=np.array([0.0, 0.0, 1.0]))
    >>> float(r.variance[0])  # sigma^4 |x_perp|^2 / N_0
    0.3333333333333333
    """
    X, y = _data(X, y)
    depth = check_int("depth", depth, 0)
    weight_var = check_positive("weight_var", weight_var)
    T = check_nonneg("temperature", temperature)
    Xt = _test_inputs(X_test, X.shape[1])
    return _nngp(_Kernel(X, y, Xt, weight_var, depth, T), depth, weight_var, T)
