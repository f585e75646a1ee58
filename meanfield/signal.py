r"""Signal propagation beyond fully connected networks: residual networks (Yang & Schoenholz 2017) and the spatial
modes of convolutional networks (Xiao et al. 2018). docs/architectures.md sections 3-4.

Residual network ``h^l = h^{l-1} + alpha (W^l phi(h^{l-1}) + b^l)`` (Yang & Schoenholz's reduced residual network,
``W`` of variance ``weight_var / M``): the length and correlation recursions are the Residual layer rule of
:mod:`meanfield.layers`,

.. math::

    q^l = q^{l-1} + \alpha^2 (\sigma_w^2 E[\phi(u)^2] + \sigma_b^2),\qquad
    q_{12}^l = q_{12}^{l-1} + \alpha^2 (\sigma_w^2 E[\phi(u)\phi(v)] + \sigma_b^2),

and the squared gradient norm obeys ``qtilde^{l-1} = qtilde^l (1 + alpha^2 sigma_w^2 E[phi'(u)^2])``: the residual
``chi_1^l = 1 + alpha^2 sigma_w^2 E[phi'(u)^2]`` is at least 1, there is no fixed point of ``q`` (it grows without
bound when ``sigma_b > 0`` or phi is unbounded) and the approach of ``c`` to 1 and the growth of the gradients are
polynomial in depth rather than exponential (Yang & Schoenholz 2017, their Table 1). :func:`residual_signal` runs
the recursions through :func:`meanfield.trace` (the same code as the kernels).

Convolutional network with CIRCULAR padding at a spatially uniform fixed point (``q^*`` on the spatial diagonal,
``c^* q^*`` off it; Xiao et al. 2018): a perturbation of the covariance along a spatial diagonal ``Sigma(p, p + r)``
evolves by ``chi_c`` times the filter average ``(1/|F|) sum_{d in F} delta Sigma(p + d, p + d + r)``. Its eigenvectors
are Fourier modes along ``p`` with eigenvalues ``lambda_k = (1/|F|) sum_{d in F} exp(2 pi i k.d / n)``, so mode ``k``
decays as ``(chi_c |lambda_k|)^l`` with depth scale ``xi_k = -1 / log(chi_c |lambda_k|)``; ``lambda_0 = 1`` (the
spatially uniform mode obeys the fully connected c-map), every other mode decays faster. A delta-orthogonal kernel
(only the centre tap) has ``lambda_k = 1`` for every ``k``: all modes keep the fully connected depth scale, the
basis of Xiao et al.'s 10,000-layer CNNs. :func:`cnn_mode_depth_scales` gives the ``lambda_k`` and ``xi_k``.

Examples
--------
>>> r = residual_signal("erf", 1.0, 0.05, depth=100, alpha=1.0)
>>> bool(r.q[-1] > r.q[0]) and bool(np.all(r.chi1 >= 1.0))
True
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ._typing import ActivationLike, ArrayLike

import numpy as np

from ._checks import check_in_range, check_int, check_nonneg, check_positive

__all__ = ["ResidualSignal", "residual_signal", "ResidualPhaseDiagram", "residual_phase_diagram", "CNNModes",
           "cnn_mode_depth_scales"]


@dataclass(frozen=True)
class ResidualSignal:
    """Residual q / c / gradient recursions (see the module docstring).

    Attributes
    ----------
    depth : ndarray (L + 1,)
        0 .. L.
    q, c : ndarray (L + 1,)
        Variance of the first input and correlation of the pair after ``l`` blocks.
    chi1 : ndarray (L,)
        ``1 + alpha^2 sigma_w^2 E[phi'(u)^2]`` of block ``l`` (the factor by which the squared gradient grows going
        down through it).
    grad_sq : ndarray (L + 1,)
        Squared gradient (``qtilde``) at the input of a network made of the first ``l`` blocks, for 1 at its
        output: ``prod_{j <= l} chi1_j``.
    q_exponent, one_minus_c_exponent, grad_exponent : float
        Log-log slopes over the last half of the depth: ``q ~ l^a``, ``1 - c ~ l^-b`` and the squared gradient
        through ``l`` blocks ``~ l^g`` (polynomial behaviour gives stable slopes; exponential behaviour slopes that
        grow with the depth).
    """

    depth: np.ndarray
    q: np.ndarray
    c: np.ndarray
    chi1: np.ndarray
    grad_sq: np.ndarray
    q_exponent: float
    one_minus_c_exponent: float
    grad_exponent: float

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}

    def plot(self, ax: Optional["Axes"] = None) -> "Axes":
        """q, 1 - c and the squared gradient against depth on log-log axes; returns the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots()
        l = self.depth[1:]
        ax.loglog(l, self.q[1:], label="q^l")
        ax.loglog(l, np.maximum(1 - self.c[1:], 1e-300), label="1 - c^l")
        ax.loglog(l, self.grad_sq[1:], label="gradient^2 at the input of l blocks")
        ax.set_xlabel("depth l")
        ax.legend()
        return ax


def _slope(x, y):
    m = len(x) // 2
    x, y = np.log(x[m:]), np.log(np.abs(y[m:]))
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(x[ok], y[ok], 1)[0])


def residual_signal(activation: ActivationLike, weight_var: float, bias_var: float, *, depth: int, alpha: float = 1.0, q0: float = 1.0,
                    c0: float = 0.5, rtol: float = 1e-12) -> ResidualSignal:
    r"""q, c, chi_1 and gradient recursions of a residual network of ``depth`` blocks (Yang & Schoenholz 2017).

    Parameters
    ----------
    activation : str or Activation
    weight_var, bias_var : float
        sigma_w^2 > 0, sigma_b^2 >= 0 of each block's Dense layer.
    depth : int
        Number of blocks L >= 2.
    alpha : float
        Branch scale (only alpha^2 enters).
    q0 : float
        Input variance of both inputs (> 0).
    c0 : float
        Input correlation in [-1, 1].

    Examples
    --------
    >>> r = residual_signal("relu", 2.0, 0.0, depth=10, alpha=1.0, q0=1.0)
    >>> round(float(r.q[1]), 12)       # q + (2 * q / 2) = 2q
    2.0
    """
    from .layers import Dense, Nonlinearity, Residual, serial
    from .trace import trace

    depth = check_int("depth", depth, 2)
    weight_var = float(check_positive("weight_var", weight_var))
    bias_var = float(check_nonneg("bias_var", bias_var))
    q0 = float(check_positive("q0", q0))
    c0 = float(check_in_range("c0", c0, -1.0, 1.0))
    block = Residual(serial(Nonlinearity(activation), Dense(weight_var, bias_var)), alpha=alpha)
    chain = serial(*([block] * depth))
    G = np.array([[q0, c0 * q0], [c0 * q0, q0]])
    tr = trace(chain, gram=G, compute_ntk=False, rtol=rtol)
    res_steps = [s for s in tr.steps if s.path.count(".") == 0]
    nl_steps = [s for s in tr.steps if isinstance(s.layer, Nonlinearity)]
    q = np.array([q0] + [s.cov_out[0, 0] for s in res_steps])
    q2 = np.array([q0] + [s.cov_out[1, 1] for s in res_steps])
    c = np.array([c0] + [s.cov_out[0, 1] for s in res_steps]) / np.sqrt(q * q2)
    # chi_1 of block l: 1 + alpha^2 w E[phi'(u)^2], u ~ N(0, q^{l-1}) (the qdot diagonal of its Nonlinearity)
    chi = 1.0 + block.alpha ** 2 * weight_var * np.array([s.qdot[0, 0] for s in nl_steps])
    grad = np.concatenate([[1.0], np.cumprod(chi)])         # squared gradient at the input of l blocks
    l = np.arange(depth + 1, dtype=float)
    return ResidualSignal(depth=l, q=q, c=c, chi1=chi, grad_sq=grad, q_exponent=_slope(l[1:], q[1:]),
                          one_minus_c_exponent=-_slope(l[1:], 1 - c[1:]),
                          grad_exponent=_slope(l[1:], grad[1:]))


@dataclass(frozen=True)
class CNNModes:
    """Fourier modes of a CIRCULAR convolution at a spatially uniform fixed point (see the module docstring).

    Attributes
    ----------
    modes : ndarray (K, S)
        Integer wave vectors ``k`` (S spatial axes).
    eigenvalues : ndarray (K,)
        ``|lambda_k|``.
    chi_c : float
        ``sigma_w^2 E[phi'(u) phi'(v)]`` at ``(q^*, c^*)``: the slope of the fully connected c-map at ``c^*``.
    multipliers : ndarray (K,)
        ``chi_c |lambda_k|``: per-layer factor of mode ``k``.
    depth_scales : ndarray (K,)
        ``xi_k = -1 / log(chi_c |lambda_k|)`` (inf where the factor is 1, 0 where it is 0).
    """

    modes: np.ndarray
    eigenvalues: np.ndarray
    chi_c: float
    multipliers: np.ndarray
    depth_scales: np.ndarray

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}


def filter_eigenvalues(filter_shape, spatial_shape, orthogonal=False):
    """``|lambda_k| = |(1/|F|) sum_{d in F} exp(2 pi i k.d / n)|`` for every wave vector ``k`` of ``spatial_shape``."""
    modes = np.array(list(itertools.product(*[range(n) for n in spatial_shape])), dtype=float)
    if orthogonal:
        return modes.astype(int), np.ones(len(modes))
    taps = np.array(list(itertools.product(*[range(k) for k in filter_shape])), dtype=float)
    phase = 2 * np.pi * (modes / np.asarray(spatial_shape, float)) @ taps.T
    lam = np.abs(np.exp(1j * phase).mean(axis=1))
    return modes.astype(int), lam


def cnn_mode_depth_scales(activation: ActivationLike, weight_var: float, bias_var: float,
                          filter_shape: Sequence[int], spatial_shape: Sequence[int], *,
                          orthogonal: bool = False) -> CNNModes:
    r"""Per spatial Fourier mode, the multiplier ``chi_c |lambda_k|`` and depth scale of a CIRCULAR CNN at its
    spatially uniform fixed point (Xiao et al. 2018; module docstring).

    Examples
    --------
    >>> m = cnn_mode_depth_scales("tanh", 1.5, 0.05, (3,), (8,))
    >>> bool(m.depth_scales[0] == m.depth_scales.max())    # the uniform mode lives longest
    True
    >>> d = cnn_mode_depth_scales("tanh", 1.5, 0.05, (3,), (8,), orthogonal=True)
    >>> bool(np.all(d.depth_scales == d.depth_scales[0]))
    True
    """
    from .forward import chi_c

    fs = tuple(int(check_int("filter_shape", k, 1)) for k in np.atleast_1d(filter_shape))
    ss = tuple(int(check_int("spatial_shape", n, 1)) for n in np.atleast_1d(spatial_shape))
    if len(fs) != len(ss):
        raise ValueError(f"filter_shape {fs} and spatial_shape {ss} must have the same number of axes")
    chi = float(chi_c(activation, weight_var, bias_var))
    modes, lam = filter_eigenvalues(fs, ss, orthogonal)
    mult = chi * lam
    with np.errstate(divide="ignore"):
        xi = np.where(mult >= 1.0, np.inf, np.where(mult <= 0, 0.0, -1.0 / np.log(np.where(mult > 0, mult, 1.0))))
    return CNNModes(modes=modes, eigenvalues=lam, chi_c=chi, multipliers=mult, depth_scales=xi)


@dataclass(frozen=True)
class ResidualPhaseDiagram:
    """Residual-network depth behaviour over a (weight_var, bias_var) grid (:func:`residual_phase_diagram`).

    Attributes
    ----------
    weight_vars, bias_vars : ndarray
        Grid axes (rows: bias_var, columns: weight_var).
    depth : int
    log_grad_sq : ndarray (B, W)
        ``log prod_{l <= L} chi1_l``: the log squared gradient at the input of ``depth`` blocks (0 would be
        isometry; it is positive everywhere, as every ``chi1_l >= 1``).
    q_exponent : ndarray (B, W)
        Log-log slope of ``q^l`` over the last half of the depth (1 for bounded activations: linear growth).
    fc_chi1 : ndarray (B, W)
        ``chi_1`` of the fully connected network with the same (weight_var, bias_var), for contrast: its order-chaos
        boundary ``chi_1 = 1`` has no residual counterpart.
    """

    weight_vars: np.ndarray
    bias_vars: np.ndarray
    depth: int
    log_grad_sq: np.ndarray
    q_exponent: np.ndarray
    fc_chi1: np.ndarray

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}

    def plot(self, ax: Optional["Axes"] = None) -> "Axes":
        """Heat map of the log squared gradient with the fully connected chi_1 = 1 line; returns the Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots()
        m = ax.pcolormesh(self.weight_vars, self.bias_vars, self.log_grad_sq, shading="auto")
        plt.colorbar(m, ax=ax, label=f"log squared gradient, residual, depth {self.depth}")
        ax.contour(self.weight_vars, self.bias_vars, self.fc_chi1, levels=[1.0], colors="w", linestyles="--")
        ax.set_xlabel("weight_var")
        ax.set_ylabel("bias_var")
        return ax


def residual_phase_diagram(activation: ActivationLike, weight_vars: ArrayLike, bias_vars: ArrayLike, *, depth: int = 100,
                           alpha: float = 1.0) -> ResidualPhaseDiagram:
    """:func:`residual_signal` over a grid, beside the fully connected ``chi_1`` (Yang & Schoenholz 2017, Fig. 1).

    Examples
    --------
    >>> d = residual_phase_diagram("erf", [0.5, 2.0], [0.0, 0.1], depth=20)
    >>> bool(np.all(d.log_grad_sq > 0)), d.log_grad_sq.shape
    (True, (2, 2))
    """
    from .forward import chi1

    wv = np.atleast_1d(np.asarray(weight_vars, dtype=float))
    bv = np.atleast_1d(np.asarray(bias_vars, dtype=float))
    g = np.empty((len(bv), len(wv)))
    e = np.empty_like(g)
    for i, b in enumerate(bv):
        for j, w in enumerate(wv):
            r = residual_signal(activation, w, b, depth=depth, alpha=alpha)
            g[i, j] = np.log(r.grad_sq[-1])
            e[i, j] = r.q_exponent
    W, B = np.meshgrid(wv, bv)
    return ResidualPhaseDiagram(weight_vars=wv, bias_vars=bv, depth=int(depth), log_grad_sq=g, q_exponent=e,
                                fc_chi1=np.asarray(chi1(activation, W, B), dtype=float))
