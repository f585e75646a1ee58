r"""Deep linear networks at finite width: exact Bayesian posterior, Meijer G-functions and BPKR.

The network (docs/mathematics.md section 6, seed 001 chapter 3) has ``depth`` hidden layers of widths
``N_1..N_{L-1}`` and a linear readout, so ``L = depth + 1`` weight layers (the notation of :class:`meanfield.Network`),
input dimension ``N_0``, identity activation and one linear output,

    f(x) = W^L W^{L-1} ... W^1 x,       W^l_ij ~ N(0, sigma^2 / N_{l-1})   (sigma^2 = ``weight_var``),

and the Bayesian posterior at temperature ``T`` (= the variance of Gaussian label noise) on ``P`` examples is

    p(W | X, y)  ~  prior(W) * prod_mu N(y_mu ; f(x_mu), T)         (T = 0: f(x_mu) = y_mu exactly).

Derivation used throughout (ours; it replaces the seed's long route and is checked against sampled networks)
--------------------------------------------------------------------------------------------------------------
**Scale-mixture identity.** Write the end-to-end map as ``f(x) = theta . x`` with ``theta^T = v^T W^1`` and the
top-down row vector ``v^T = W^L W^{L-1} ... W^2`` (length ``N_1``).  For a fixed row vector ``a`` and a Gaussian
matrix ``W^l`` with iid ``N(0, sigma^2/N_{l-1})`` entries, ``a W^l ~ N(0, sigma^2 |a|^2 / N_{l-1} I)``, so
``|a W^l|^2 = |a|^2 (sigma^2/N_{l-1}) chi^2_{N_{l-1}}`` independently of the direction.  Iterating from the readout
down,

    |v|^2 = sigma^{2(L-1)} S,  S = prod_{l=1}^{L-1} g_l,   g_l = chi^2_{N_l} / N_l  (independent, E g_l = 1),

and, given ``v``, ``theta ~ N(0, sigma^2 |v|^2 / N_0 I)``.  Hence **a deep linear network is a Gaussian process whose
kernel is the infinite-width (NNGP) kernel times one random scale** ``S``:

    f | S  ~  GP(0, S K),        K(x, x') = sigma^{2L} x.x' / N_0 .

Everything below follows from this with ordinary Gaussian algebra:

* prior of one output (``K(x,x) = s^2``): ``f^2 = s^2 z^2 prod_l g_l`` is a product of ``L`` independent
  gamma variables; the Mellin transform of a product of ``Gamma(k_j)`` variables is ``prod_j Gamma(k_j + s - 1)``,
  which is that of ``G^{m,0}_{0,m}``.  Changing variables to ``f`` (two signs, Jacobian) gives

      p(f) = G^{L,0}_{0,L}( f^2 / c | 0, (N_1-1)/2, ..., (N_{L-1}-1)/2 ) / ( sqrt(pi c) prod_l Gamma(N_l/2) ),
      c = 2^L s^2 / prod_l N_l ,

  identical to Zavatone-Veth & Pehlevan (seed eq. 3.38 with one output unit).  Moments: ``E f^2 = s^2``,
  ``E f^4 = 3 s^4 prod_l (1 + 2/N_l)``.  ``depth = 0`` gives the Gaussian, ``depth = 1`` a K-Bessel law.
* posterior of the scale: ``p(S | y) ~ p(S) N(y; 0, S K_P + T I)`` (``K_P`` the ``P x P`` train kernel); given
  ``S`` the predictive law of ``f(x*)`` is the GP posterior with mean ``m_S = S k*^T (S K_P + T)^{-1} y`` and
  variance ``v_S = S k** - S^2 k*^T (S K_P + T)^{-1} k*``.  Predictive mean ``E[m_S | y]``, variance
  ``E[v_S | y] + Var[m_S | y]``.
* ``T = 0`` (needs ``P <= N_0`` and ``X`` of full row rank): ``m_S = k*^T K_P^{-1} y`` does not depend on ``S``
  (predictive mean = NNGP mean = ``theta* . x`` with the minimum-norm interpolator ``theta*``), and
  ``v_S = S v_NNGP`` with ``v_NNGP = sigma^{2L} |x_perp|^2 / N_0``.  With ``Q = y^T K_P^{-1} y`` the posterior
  weight is ``p(S) S^{-P/2} exp(-Q/(2S))``; the Mellin transform of ``w -> E[Y^a exp(-w/Y)]`` is
  ``Gamma(s) E[Y^{a+s}]``, so

      E[S | y] = prod_l (2/N_l) G[1]/G[0],   G[k] = G^{L,0}_{0,L}( w | P/2, N_1/2 + k, ..., N_{L-1}/2 + k ),
      w = Q prod_l N_l / 2^L = prod_{l=0}^{L-1} (N_l / (2 sigma^2)) |theta*|^2 ,

  which is Hanin & Zlokapa's ``Var = (1/2) prod_{l=0}^{L-1} (2 sigma^2/N_l) |x_perp|^2 G[1]/G[0]`` (seed 3.42b).
  The evidence is ``log Z = -P/2 log(2 pi) - 1/2 log det K_P - P/2 log(Q/2) + log G[0] - sum_l log Gamma(N_l/2)``.
* large width (saddle of the Mellin-Barnes integral ``G = (2 pi i)^{-1} int prod_j Gamma(b_j + s) w^{-s} ds``):
  the saddle ``s*`` solves ``sum_j psi(b_j + s*) = log w``; replacing ``psi`` by ``log`` and writing
  ``g_l = 1 + 2 s*/N_l`` gives ``P (1 + 2 s*/P) prod_l g_l = Q``, i.e. for equal widths with ``z* = 2 s*/N``,
  ``alpha = P/N``, ``alpha_0 = P/N_0``:

      (1 + z*/alpha) (1 + z*)^{L-1} = Q / P = |theta*|^2 / (sigma^{2L} alpha_0),    z* > max(-alpha, -1),

  and ``G[1]/G[0] -> (N (1 + z*)/2)^{L-1}``, so ``E[S | y] -> (1 + z*)^{L-1}``.
* BPKR (Li & Sompolinsky) is the same saddle taken on the ``g_l``: the log posterior density of the ``g_l`` is
  ``-sum_l (N_l/2)(g_l - 1 - log g_l) + log N(y; 0, S K_P + T)`` up to ``O(log N)``; its stationarity reads

      N_l (1 - g_l) = Tr[(S K_P + T)^{-1} S K_P] - y^T (S K_P + T)^{-1} S K_P (S K_P + T)^{-1} y ,

  i.e. LS's eq. (3.24) with ``u_l = sigma^2 g_l`` and ``u^{L-1} K_0 = S K_P`` (``K_0 = sigma^2 X X^T / N_0``).  At
  ``T = 0`` this is ``1 - u_0/sigma^2 = alpha (1 - u_0^{-(L-1)} r_0)`` with
  ``r_0 = y^T K_0^{-1} y / P = sigma^{2(L-1)} Q/P``, the HZ saddle with ``u_0 = sigma^2 (1 + z*)`` and
  ``alpha_0 sigma^2 r_0 = |theta*|^2``.  The renormalized predictor is the GP with kernel
  ``S* K = (u_0/sigma^2)^{L-1} K``; its variance exceeds the NNGP one by ``(u_0/sigma^2)^{L-1}`` at ``T = 0`` and the
  exact one differs from it by ``O(1/N)``.

Typos in the seed (each checked numerically in ``tests/test_deep_linear.py``)
----------------------------------------------------------------------------
* 3.2 lacks the ``N_{l-1}`` of the prior precision (the measures 3.5 are right: ``W ~ N(0, sigma^2/N_{l-1})``).
* 3.16-3.17: the rank-one matrix is ``sigma^4/N^2 (t.x)(t.x)`` without the 1/2 (else 3.20 does not follow).
* 3.22: the delta-function exponent is ``N u m/(2 sigma^2) - 1/2 t^T (u K) t`` (not ``-(sigma^2/N) t^T u K t``);
  3.27 flips the sign of the ``log(1 + m)`` terms (3.23 is right).
* 3.43c: the root is taken with ``z* > max(-alpha, -1)`` (both Gamma arguments ``P/2 + s``, ``N/2 + s`` of the
  Mellin-Barnes integrand positive); with ``min``, spurious roots in ``(-alpha, -1)`` exist for even ``depth``,
  ``alpha > 1``.
* 3.61: ``<exp(-beta H)> ~ exp(-beta <H>)`` (the "Gaussian limit") is the first cumulant, exact as ``beta -> 0``
  (high temperature), not ``beta -> inf`` (Jensen makes it a lower bound); 3.62 misses the 2 of ``-2 <f> y`` (harmless:
  ``<f> = 0``).
* A.2c: ``G^{1,0}_{0,2}(x/2 | 0, 1/2) = cos(sqrt(2 x))/sqrt(pi)`` (the seed has ``cos(sqrt(2) x)``);
  A.3a: ``G^{m,n}_{p,q}(x | a; b) = G^{n,m}_{q,p}(1/x | 1-b; 1-a)`` (the seed keeps ``m, n, p, q`` and ``a, b``).

References: Q. Li and H. Sompolinsky, PRX 11, 031059 (2021); B. Hanin and A. Zlokapa, PNAS 120 (2023);
J. Zavatone-Veth and C. Pehlevan, NeurIPS 2021; seed 001 (Leiden M.Sc. thesis 2023), chapter 3.
"""
from .bpkr import BPKRResult, bpkr, bpkr_u0, hz_saddle_point
from .meijer_g import log_meijer_g, meijer_g
from .posterior import DeepLinearPosteriorResult, deep_linear_posterior, nngp_linear_posterior
from .prior import DeepLinearPriorResult, deep_linear_prior, deep_linear_prior_density

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
