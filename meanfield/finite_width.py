r"""Leading finite-width (1/width) corrections of a deep network at initialization (docs/finite_width.md).

At width ``M`` (layer widths ``n_l = alpha_l M``) the preactivations of a random network are not exactly Gaussian.
Given the previous layer, the units ``z^l_i`` are independent ``N(0, G^l)`` with the random *metric*
``G^l(x, x') = C_b + (C_W / n_{l-1}) sum_j phi(z^{l-1}_j(x)) phi(z^{l-1}_j(x'))``; its mean and its fluctuation fix
every O(1/M) effect (Roberts, Yaida & Hanin, "The Principles of Deep Learning Theory", 2022, ch. 4-5 and 8;
Yaida 2020; Hanin 2022). This module computes, per Dense layer ``l`` and for every input and pair of inputs:

* the **four-point vertex** ``v^l_{ee'} = M Cov(G^l_e, G^l_{e'})`` for the entries ``e, e'`` of the metric of a
  pair ``(x_i, x_j)`` (basis ``(ii, ij, jj)``); the book's ``V^{(l)}`` (normalised by the fan-in ``n_{l-1}``) is
  ``alpha_{l-1} v^l``. Recursion (``(u, v)`` centred Gaussian with the infinite-width kernel ``K^l`` of the pair,
  ``S_{ee'} = <sigma_e sigma_e'> - <sigma_e><sigma_e'>`` the covariance of the products ``sigma_e`` =
  ``phi(u)^2, phi(u) phi(v), phi(v)^2``, ``J_{e e'} = d<sigma_e>/dK_{e'}``):

  .. math:: v^{l+1} = C_W^2\, S / \alpha_l + C_W^2\, J\, v^l J^T,\qquad v^1 = 0

* the **kernel correction** ``E[q^l] = K^l + K1^l / M + O(1/M^2)`` (``q^l = z.z'/n_l``, the mean metric):

  .. math:: K1^{l+1}_e = C_W \big(\sum_{e'} J_{e e'} K1^l_{e'} + \tfrac12 \sum_{e' e''} H_{e e' e''} v^l_{e' e''}\big),
            \qquad K1^1 = 0

  with ``H`` the second derivatives of ``<sigma_e>`` in the kernel entries;
* the **output kurtosis**: one output unit has excess kurtosis ``3 v^L_{ii,ii} / (M (K^L_{ii})^2)``, and the
  connected four-point function of the outputs is ``E[f_a f_b f'_c f'_d]_c = v^L_{(ab)(cd)} / M`` (units ``f != f'``);
* the **NTK variance** (NTK parameterization) of every entry ``Theta(x_i, x_j)``: ``M Var[Theta_kk] = a + b + c``
  (``a + 2 b`` on the diagonal), ``M Cov[Theta_kk, Theta_mm] = a``, ``M E[Theta_km^2] = b`` and
  ``M E[Theta_km Theta_mk] = c`` for output units ``k != m``, from the book's ch. 8 recursions for its ``A``, ``B``
  and ``D`` tensors (here per ``1/M``; derivation in docs/finite_width.md).

The Gaussian expectations (products of phi and phi' with Hermite weights; derivatives in the kernel by Price's
theorem and Gaussian integration by parts, so that relu needs no delta functions) use the engine's 1-D rule
(:func:`meanfield.gaussian.gaussian_rule`) and its nested 2-D rule (:mod:`meanfield._finite_width_kernels`),
accurate to ~1e-14 relative for the built-in activations (tests compare with mpmath). Pairs of nearly equal inputs
lose accuracy like ``1e-16 / (1 - c^2)^2`` (the Hermite weights carry the inverse kernel): a
:class:`~meanfield.PrecisionWarning` says so when that exceeds 1e-8.

Examples
--------
>>> from meanfield import Network, finite_width_corrections
>>> fw = finite_width_corrections(Network("relu", depth=4, weight_var=2.0), gram=[[0.5]])   # K = 1
>>> [round(float(v), 10) for v in fw.vertex[:, 0, 0, 0, 0]]     # relu at criticality: v^l = 5 (l - 1) K^2
[0.0, 5.0, 10.0, 15.0, 20.0]
>>> round(float(fw.output_kurtosis[0]), 10)                       # 3 v^L / K^2
60.0
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from typing import Optional

    from matplotlib.axes import Axes

    from ._typing import ArrayLike, NetworkLike

import math
import warnings
from dataclasses import dataclass
import numpy as np

from . import _finite_width_kernels as _fk
from .activations import get_activation
from .errors import PrecisionWarning
from .gaussian import gaussian_rule
from .layers import Dense, Dropout, Nonlinearity, Residual
from .trace import as_chain, trace

__all__ = ["FiniteWidthCorrections", "finite_width_corrections"]

_PAIR_WARN = 1e-8          # relative accuracy below which a pair of nearly equal inputs is reported


# ------------------------------------------------------------------------------------------ Gaussian expectations
class _Single:
    """Expectations over u ~ N(0, K) of one activation (1-D rule of the engine, products of phi and phi')."""

    def __init__(self, act, K):
        z, w = gaussian_rule(K, scale=act.scale, kinks=act.kinks, graded=act.graded)
        s = math.sqrt(K)
        u = s * z
        p, d = act.phi(u), act.dphi(u)
        E = lambda g: float(np.dot(w, g))          # noqa: E731
        p2, d2 = p * p, d * d
        self.f = E(p2)                             # <phi^2>
        self.f1 = E(u * p * d) / K                 # d<phi^2>/dK = <u phi phi'>/K (Stein)
        self.f2 = E(p * d * (z ** 3 - 3 * z)) / (2 * K ** 1.5)   # d^2<phi^2>/dK^2 = (1/4)<(phi^2)' He_3>/K^(3/2)
        self.g = E(d2)                             # <phi'^2>
        self.g1 = E(d2 * (z * z - 1)) / (2 * K)    # d<phi'^2>/dK = (1/2)<phi'^2 He_2>/K
        self.g2 = E(d2 * (z ** 4 - 6 * z * z + 3)) / (4 * K * K)   # d^2<phi'^2>/dK^2 = (1/4)<phi'^2 He_4>/K^2
        self.p4 = E(p2 * p2)
        self.d4 = E(d2 * d2)
        self.p2d2 = E(p2 * d2)


def _pair(act, Kuu, Kuv, Kvv, su: _Single, sv: _Single):
    """``(f, S, J, H, ntk)`` of a pair, basis ``(uu, uv, vv)``: the means ``f`` of the products ``sigma_e``, their
    covariance ``S``, the first and second derivatives ``J``, ``H`` of their means in the independent kernel entries
    (off-diagonal counted once), and the expectations the NTK recursions need (``ntk``). Price: d/dK_uv <F> = <d_u d_v F>,
    d/dK_uu <F> = (1/2)<d_u^2 F>; the derivatives beyond phi' are moved onto the Hermite weights
    ``H_alpha(y)`` (``y = K^-1 (u, v)``) by Gaussian integration by parts."""
    u, v, w = _fk.pair_nodes(*act.kernel_args[4:6], Kuu, Kvv, Kuv)
    det = Kuu * Kvv - Kuv * Kuv
    Puu, Puv, Pvv = Kvv / det, -Kuv / det, Kuu / det
    yu, yv = Puu * u + Puv * v, Puv * u + Pvv * v
    pu, pv, du, dv = act.phi(u), act.phi(v), act.dphi(u), act.dphi(v)
    E = lambda g: float(np.dot(w, g))          # noqa: E731
    f12 = E(pu * pv)
    p3u_v, p2p2, pu_p3v = E(pu ** 3 * pv), E(pu * pu * pv * pv), E(pu * pv ** 3)
    f = (su.f, f12, sv.f)
    S = np.empty((3, 3))
    S[0, 0] = su.p4 - su.f ** 2
    S[0, 1] = S[1, 0] = p3u_v - su.f * f12
    S[0, 2] = S[2, 0] = p2p2 - su.f * sv.f
    S[1, 1] = p2p2 - f12 * f12
    S[1, 2] = S[2, 1] = pu_p3v - f12 * sv.f
    S[2, 2] = sv.p4 - sv.f ** 2
    dd = du * dv
    J = np.zeros((3, 3))
    J[0, 0], J[2, 2] = su.f1, sv.f1
    J[1, 1] = E(dd)
    J[1, 0] = 0.5 * E(du * pv * yu)
    J[1, 2] = 0.5 * E(pu * dv * yv)
    H = np.zeros((3, 3, 3))
    H[0, 0, 0], H[2, 2, 2] = su.f2, sv.f2
    Huv = E(dd * (yu * yv - Puv))
    H[1, 1, 1] = Huv
    H[1, 0, 1] = H[1, 1, 0] = 0.5 * E(dd * (yu * yu - Puu))
    H[1, 2, 1] = H[1, 1, 2] = 0.5 * E(dd * (yv * yv - Pvv))
    H[1, 0, 2] = H[1, 2, 0] = 0.25 * Huv
    H[1, 0, 0] = 0.25 * E(du * pv * (yu ** 3 - 3 * Puu * yu))
    H[1, 2, 2] = 0.25 * E(pu * dv * (yv ** 3 - 3 * Pvv * yv))
    # the NTK of the pair: <phi'^2 phi'^2>, <phi phi phi' phi'>, and <sigma_e phi'(u) phi'(v)> for e = uu, uv, vv
    ppdd = pu * pv * dd
    ntk = dict(dd2=E(dd * dd), ppdd=E(ppdd), sdd=np.array([E(pu * pu * dd), E(ppdd), E(pv * pv * dd)]),
               spp=np.array([p3u_v, p2p2, pu_p3v]))
    return np.array(f), S, J, H, ntk


# --------------------------------------------------------------------------------------------------- the result
@dataclass(frozen=True)
class FiniteWidthCorrections:
    r"""O(1/M) corrections of a network on ``N`` inputs, per Dense layer (see :func:`finite_width_corrections`).

    Every array is a coefficient of ``1/M`` (``M`` the width; layer widths ``n_l = alpha_l M``).

    Attributes
    ----------
    chain : Serial
    gram : ndarray (N, N)
    fan_in_ratios : ndarray (L,)
        ``alpha_{l-1}``: width ratio entering each Dense layer (NaN for the first, whose input is fixed).
    kernel : ndarray (L, N, N)
        Infinite-width ``K^l`` (from :func:`meanfield.trace`).
    kernel_correction : ndarray (L, N, N)
        ``K1^l``: ``E[q^l] = K^l + K1^l / M``.
    vertex : ndarray (L, N, N, 3, 3)
        ``M Cov(G^l_e, G^l_e')`` for the metric entries ``e, e' in (ii, ij, jj)`` of each pair ``(i, j)``.
    ntk : ndarray (L, N, N)
        Infinite-width NTK ``Theta^l(x_i, x_j)`` (NTK parameterization).
    ntk_variance : ndarray (L, N, N)
        ``M Var[Theta^l_kk(x_i, x_j)]`` of one unit ``k`` (``a + b + c``; ``a + 2 b`` on the diagonal).
    ntk_unit_covariance : ndarray (L, N, N)
        ``M Cov[Theta^l_kk(x_i, x_j), Theta^l_mm(x_i, x_j)]`` for units ``k != m`` (``a``).
    ntk_cross_unit : ndarray (L, N, N)
        ``M E[Theta^l_km(x_i, x_j)^2]`` for units ``k != m`` (``b``).
    ntk_cross_unit_transposed : ndarray (L, N, N)
        ``M E[Theta^l_km(x_i, x_j) Theta^l_mk(x_i, x_j)]`` for units ``k != m`` (``c``; equals ``b`` on the
        diagonal).
    ntk_kernel_covariance : ndarray (L, N, N, 3)
        ``M Cov[G^l_e, E[Theta^l_kk(x_i, x_j) | previous layer]]`` for ``e in (ii, ij, jj)`` (``d``).
    ntk_correction : ndarray (L, N)
        ``Theta1^l``: ``E[Theta^l_kk(x_i, x_i)] = Theta^l + Theta1^l / M`` (one input).
    """

    chain: object
    gram: np.ndarray
    fan_in_ratios: np.ndarray
    kernel: np.ndarray
    kernel_correction: np.ndarray
    vertex: np.ndarray
    ntk: np.ndarray
    ntk_variance: np.ndarray
    ntk_unit_covariance: np.ndarray
    ntk_cross_unit: np.ndarray
    ntk_cross_unit_transposed: np.ndarray
    ntk_kernel_covariance: np.ndarray
    ntk_correction: np.ndarray

    @property
    def depth(self) -> int:
        """Number of Dense layers L."""
        return int(self.kernel.shape[0])

    @property
    def single_vertex(self) -> np.ndarray:
        """``(L, N)``: ``M Var(G^l(x_i, x_i))``."""
        return np.einsum("lii->li", self.vertex[:, :, :, 0, 0])

    @property
    def vertex_book(self) -> np.ndarray:
        """The vertex in the book's normalisation, ``V^{(l)} = n_{l-1} Cov(G, G) = alpha_{l-1} v^l``."""
        a = np.where(np.isfinite(self.fan_in_ratios), self.fan_in_ratios, 0.0)
        return self.vertex * a[:, None, None, None, None]

    @property
    def relative_kernel_correction(self) -> np.ndarray:
        """``K1^l / K^l`` per entry (the ``a`` of ``E[q^l] / K^l - 1 = a / M``)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.kernel_correction / self.kernel

    @property
    def output_kurtosis(self) -> np.ndarray:
        """``(N,)``: excess kurtosis of one output unit times M, ``3 v^L / (K^L)^2``."""
        return 3.0 * self.single_vertex[-1] / np.diagonal(self.kernel[-1]) ** 2

    @property
    def relative_ntk_variance(self) -> np.ndarray:
        """``(L, N, N)``: ``M Var[Theta] / Theta^2`` per entry."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.ntk_variance / self.ntk ** 2

    def to_dict(self) -> dict:
        return {"chain": self.chain.to_dict() if hasattr(self.chain, "to_dict") else
                [l.to_dict() for l in self.chain], "gram": self.gram.tolist(),
                "fan_in_ratios": self.fan_in_ratios.tolist(), "kernel": self.kernel.tolist(),
                "kernel_correction": self.kernel_correction.tolist(), "vertex": self.vertex.tolist(),
                "ntk": self.ntk.tolist(), "ntk_variance": self.ntk_variance.tolist(),
                "ntk_unit_covariance": self.ntk_unit_covariance.tolist(),
                "ntk_cross_unit": self.ntk_cross_unit.tolist(),
                "ntk_cross_unit_transposed": self.ntk_cross_unit_transposed.tolist(),
                "ntk_kernel_covariance": self.ntk_kernel_covariance.tolist(),
                "ntk_correction": self.ntk_correction.tolist(),
                "output_kurtosis": self.output_kurtosis.tolist()}

    def plot(self, ax: Optional[Axes] = None, input_index: int = 0) -> Axes:
        """Per-layer ``M Var(G)/K^2``, ``K1/K`` and ``M Var(Theta)/Theta^2`` of input ``input_index``; returns the
        Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots()
        i = int(input_index)
        l = np.arange(1, self.depth + 1)
        K = self.kernel[:, i, i]
        ax.plot(l, self.single_vertex[:, i] / K ** 2, "o-", label=r"$M\,\mathrm{Var}(G^l)/K^2$")
        ax.plot(l, self.kernel_correction[:, i, i] / K, "s-", label=r"$K1^l/K^l$")
        ax.plot(l, self.relative_ntk_variance[:, i, i], "^-", label=r"$M\,\mathrm{Var}(\Theta^l)/\Theta^2$")
        ax.set_xlabel("layer l")
        ax.set_ylabel("coefficient of 1/M")
        ax.legend()
        return ax


# ------------------------------------------------------------------------------------------------- the recursion
def _plan(chain):
    """``[(dense, activation or None, fan_in_ratio)]`` for an MLP chain (Dense, Nonlinearity, Dropout(keep=1))."""
    out = []
    act = None
    ratio = float("nan")
    seen_dense = False
    for k, lay in enumerate(chain):
        if isinstance(lay, Residual):
            raise ValueError(f"finite-width corrections of Residual blocks are not implemented (layer {k})")
        if isinstance(lay, Dropout):
            if lay.keep < 1.0:
                raise ValueError(f"finite-width corrections with dropout are not implemented (layer {k}, "
                                 f"keep={lay.keep:g} < 1)")
            continue
        if isinstance(lay, Nonlinearity):
            if not seen_dense:
                raise ValueError(f"the chain must start with a Dense layer (layer {k} is a Nonlinearity): the "
                                 "finite-width expansion starts from the first layer's Gaussian preactivations")
            if act is not None:
                raise ValueError(f"two Nonlinearity layers in a row (layer {k}): compose them into one activation")
            act = lay.activation
            continue
        if isinstance(lay, Dense):
            out.append((lay, act, ratio if seen_dense else float("nan")))
            seen_dense = True
            ratio = lay.width_ratio
            act = None
            continue
        raise ValueError(f"layer {k} ({type(lay).__name__}) is not supported by the finite-width corrections")
    if not out:
        raise ValueError("the chain has no Dense layer")
    if act is not None:
        raise ValueError("the chain must end with a Dense layer (the readout)")
    return out


def finite_width_corrections(network: NetworkLike, x: Optional[ArrayLike] = None, *,
                             gram: Optional[ArrayLike] = None) -> FiniteWidthCorrections:
    r"""Leading 1/width corrections at initialization: four-point vertex, mean-kernel correction, output kurtosis and
    NTK variance, per Dense layer.

    Notation of Roberts, Yaida & Hanin (2022): ``C_W`` = ``weight_var``, ``C_b`` = ``bias_var``, ``n_l`` =
    ``width_ratio_l * M``, preactivation ``z^l`` = the output of Dense layer ``l``; NTK parameterization with the
    book's learning-rate tensors ``lambda_W = C_W``, ``lambda_b = C_b``. See the module docstring for the recursions
    and docs/finite_width.md for their derivation. Corrections are returned as coefficients of ``1/M``.

    Parameters
    ----------
    network : Network, Serial or Layer
        A fully connected chain: Dense layers, each but the first preceded by at most one Nonlinearity (two Dense
        layers in a row act as a linear activation). Residual blocks and dropout are not supported.
    x : array_like (N, M_0), optional
        Inputs; or give ``gram``.
    gram : array_like (N, N), optional
        ``x.x'/M_0`` of the inputs; every input must have ``K^1(x, x) > 0``.

    Returns
    -------
    FiniteWidthCorrections

    Examples
    --------
    >>> from meanfield import Network, finite_width_corrections
    >>> fw = finite_width_corrections(Network("linear", depth=3, weight_var=1.0), gram=[[1.0, 0.5], [0.5, 1.0]])
    >>> fw.output_kurtosis.round(12).tolist()          # linear: 3 * 2 * (number of hidden layers)
    [18.0, 18.0]
    >>> bool(abs(fw.kernel_correction).max() < 1e-14)   # the mean kernel of a linear network is exact
    True
    """
    chain = as_chain(network)
    plan = _plan(chain.layers)
    tr = trace(chain, x, gram=gram, compute_ntk=False, backward=False, _inputs=None)
    G = np.array(tr.steps[0].cov_in)
    dense_steps = tr.dense
    N, L = G.shape[0], len(plan)
    K = np.array([s.cov_out for s in dense_steps])
    if np.any(np.diagonal(K, axis1=1, axis2=2) <= 0):
        raise ValueError(("x" if x is not None else "gram") + ": every input needs a positive variance K^l(x, x) at "
                         "every layer (an input with x = 0 and bias_var = 0 has none)")
    K1 = np.zeros((L, N, N))
    V = np.zeros((L, N, N, 3, 3))
    T = np.zeros((L, N, N))          # Theta(x_i, x_j)
    A = np.zeros((L, N, N))          # M Var(Hhat_ij), Hhat the NTK's mean over the last weights
    B = np.zeros((L, N, N))          # M E[Theta_km(x_i,x_j)^2], units k != m
    C = np.zeros((L, N, N))          # M E[Theta_km(x_i,x_j) Theta_mk(x_i,x_j)]
    D = np.zeros((L, N, N, 3))       # M Cov(G_e, Hhat_ij), e in (ii, ij, jj)
    T1 = np.zeros((L, N))            # M (E[Theta(x_i, x_i)] - Theta)
    ratios = np.array([r for _, _, r in plan])
    linear = get_activation("linear")
    rev = [2, 1, 0]
    try:
        with np.errstate(over="raise", invalid="raise"):
            _sweep(plan, G, K, K1, V, T, A, B, C, D, T1, linear, rev, worst_box := [0.0])
    except (OverflowError, FloatingPointError) as exc:
        raise FloatingPointError("finite_width_corrections: a correction overflowed the float64 range (the inputs' "
                                 "norms, weight_var or the depth are too large)") from exc
    for name, arr in (("kernel_correction", K1), ("vertex", V), ("ntk_variance", A + B + C)):
        if not np.all(np.isfinite(arr)):
            raise FloatingPointError(f"finite_width_corrections: {name} is not finite (the activation or a variance "
                                     "left the float64 range)")
    worst = worst_box[0]
    if worst > _PAIR_WARN:
        warnings.warn(f"pairs of nearly parallel inputs: the pair corrections are accurate to about {worst:.1e} "
                      "relative (Hermite weights carry the inverse kernel, ~1e-16 / (1 - c^2)^2)", PrecisionWarning,
                      stacklevel=2)
    return FiniteWidthCorrections(chain=chain, gram=G, fan_in_ratios=ratios, kernel=K, kernel_correction=K1,
                                  vertex=V, ntk=T, ntk_variance=A + B + C, ntk_unit_covariance=A, ntk_cross_unit=B,
                                  ntk_cross_unit_transposed=C, ntk_kernel_covariance=D, ntk_correction=T1)


def _sweep(plan, G, K, K1, V, T, A, B, C, D, T1, linear, rev, worst_box):
    """The layer recursions, filling the arrays in place (``worst_box[0]``: worst pair accuracy estimate)."""
    N = G.shape[0]
    worst = 0.0
    R = np.zeros(N)      # (1/n_{l-1}) E[sum_mm' (phi phi')_m (phi phi')_m' Theta_mm'] entering the mean-NTK shift
    for l, (lay, act, alpha) in enumerate(plan):
        Cw, Cb = lay.weight_var, lay.bias_var
        if l == 0:
            T[0] = Cw * G + Cb
            continue
        act = linear if act is None else act
        Kp = K[l - 1]
        singles = [_Single(act, float(Kp[i, i])) for i in range(N)]
        for i in range(N):
            s = singles[i]
            # one input: vertex, kernel correction, NTK (a, b = c, d)
            v, k1 = V[l - 1, i, i, 0, 0], K1[l - 1, i, i]
            chi_par, chi_perp = Cw * s.f1, Cw * s.g
            V[l, i, i] = Cw * Cw * (s.p4 - s.f ** 2) / alpha + chi_par ** 2 * v
            K1[l, i, i] = chi_par * k1 + 0.5 * Cw * s.f2 * v
            th = T[l - 1, i, i]
            T[l, i, i] = Cb + Cw * s.f + chi_perp * th
            var_h = Cw * Cw * (s.p4 + 2 * th * s.p2d2 + th * th * s.d4 - (s.f + th * s.g) ** 2)
            cov_gh = Cw * Cw * (s.p4 + th * s.p2d2 - s.f * (s.f + th * s.g))
            p = Cw * s.f1 + Cw * th * s.g1
            a, b, d = A[l - 1, i, i], B[l - 1, i, i], D[l - 1, i, i, 0]
            B[l, i, i] = C[l, i, i] = Cw * Cw * s.d4 * th * th / alpha + chi_perp ** 2 * b
            A[l, i, i] = var_h / alpha + p * p * v + 2 * p * chi_perp * d + chi_perp ** 2 * a
            D[l, i, i] = cov_gh / alpha + chi_par * (p * v + chi_perp * d)
            # mean NTK: E[Theta^{l+1}] = C_b + C_W E[phi^2] + C_W E[phi'^2 (Hhat + X)], with E[phi'(z_j)^2 X_jj] =
            # 2 (C_W^{(l)})^2 <phi'^2>' R^l / n_{l-1} (Wick: z_j and X_jj share the row j of W^{(l)})
            prev, ratio_prev = plan[l - 1][0].weight_var, plan[l - 1][2]
            xterm = 0.0 if l == 1 else 2 * prev * prev * s.g1 * R[i] / ratio_prev
            T1[l, i] = (Cw * (s.f1 * k1 + 0.5 * s.f2 * v)
                        + Cw * (s.g * T1[l - 1, i] + s.g1 * (k1 * th + d) + 0.5 * s.g2 * v * th) + Cw * xterm)
            R[i] = s.p2d2 * th + (0.0 if l == 1 else (alpha / ratio_prev) * (prev * s.f1) ** 2 * R[i])
            for j in range(i + 1, N):
                kuu, kuv, kvv = float(Kp[i, i]), float(Kp[i, j]), float(Kp[j, j])
                one_c2 = 1.0 - kuv * kuv / (kuu * kvv)
                if one_c2 <= 0.0:
                    raise ValueError(f"inputs {i} and {j} have correlation 1 at layer {l} (identical up to scale): "
                                     "give each distinct input once")
                worst = max(worst, 1e-16 / one_c2 ** 2)
                sj = singles[j]
                f, S, J, H, nt = _pair(act, kuu, kuv, kvv, s, sj)
                vp = V[l - 1, i, j]
                k1p = np.array([K1[l - 1, i, i], K1[l - 1, i, j], K1[l - 1, j, j]])
                vn = Cw * Cw * (S / alpha + J @ vp @ J.T)
                k1n = Cw * (J @ k1p + 0.5 * np.einsum("abc,bc->a", H, vp))
                V[l, i, j] = vn
                V[l, j, i] = vn[np.ix_(rev, rev)]
                K1[l, i, j] = K1[l, j, i] = k1n[1]
                # NTK entry (x_i, x_j): h = C_W phi(u) phi(v) + C_W Theta phi'(u) phi'(v) per unit
                th = T[l - 1, i, j]
                qdot = J[1, 1]
                chi = Cw * qdot
                T[l, i, j] = T[l, j, i] = Cb + Cw * f[1] + chi * th
                mean_h = f[1] + th * qdot
                var_h = Cw * Cw * (nt["spp"][1] + 2 * th * nt["ppdd"] + th * th * nt["dd2"] - mean_h ** 2)
                cov_gh = Cw * Cw * (nt["spp"] + th * nt["sdd"] - f * mean_h)          # (3,): e = ii, ij, jj
                pv = Cw * J[1] + Cw * th * H[1, :, 1]                                   # d E[h | G, Hhat] / dG_e
                a, b, c, d = A[l - 1, i, j], B[l - 1, i, j], C[l - 1, i, j], D[l - 1, i, j]
                A[l, i, j] = A[l, j, i] = var_h / alpha + pv @ vp @ pv + 2 * chi * (pv @ d) + chi * chi * a
                B[l, i, j] = B[l, j, i] = (Cw * Cw * nt["dd2"] * th * th / alpha
                                           + Cw * Cw * s.g * sj.g * b)
                C[l, i, j] = C[l, j, i] = Cw * Cw * nt["dd2"] * th * th / alpha + chi * chi * c
                dn = cov_gh / alpha + Cw * J @ (vp @ pv + chi * d)
                D[l, i, j] = dn
                D[l, j, i] = dn[rev]
    worst_box[0] = worst
