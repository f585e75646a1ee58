r"""Trainability and generalization against depth (Xiao, Pennington & Schoenholz 2020, "Disentangling trainability
and generalization in deep neural networks"; docs/regression.md).

For a network of ``l`` hidden layers (all with the same activation, weight_var, bias_var) and its NTK ``Theta^l`` on
the training inputs:

* trainability: the condition number ``kappa^l = lambda_max / lambda_min`` of ``Theta^l(X, X)`` (gradient flow relaxes
  the slowest mode ``kappa`` times slower than the fastest);
* generalization: the mean predictor at the end of training ``P(Theta^l) Y = Theta^l(X_*, X) Theta^l(X, X)^{-1} Y``.

Large-depth form (Xiao et al. sec. 3-4, "weak data dependence"): with inputs of equal norm every pair of inputs
approaches the same fixed point, so ``Theta^l ~ (Theta_d - Theta_o) I + Theta_o 1 1^T`` with the two scalars
``Theta_d^l`` (same input) and ``Theta_o^l`` (a pair at the data's mean correlation) of the two-input recursion. Then

.. math::

    \kappa^l \approx \frac{\Theta_d + (n-1)\Theta_o}{\Theta_d - \Theta_o},\qquad
    P(\Theta^l)Y \approx r_l\,\bar Y,\quad r_l = \frac{n\Theta_o}{\Theta_d + (n-1)\Theta_o}

(``Ybar`` the mean training target, the same for every test input, whose cross kernel is ``Theta_o``). In the
*ordered* phase (``chi_1 < 1``) ``Theta_d - Theta_o -> 0``: ``kappa^l`` grows without bound (for smooth activations
like ``1 / (l chi_1^l)``: the c-map converges at rate ``chi_1`` and the forcing resonates with the decay) and
``r_l -> 1``, the predictor is the constant ``Ybar`` -- the network cannot be trained, and would not generalize. In
the *chaotic* phase (``chi_1 > 1``) ``Theta_d ~ chi_1^l`` grows while ``Theta_o`` stays bounded: ``kappa^l - 1 ~
chi_1^{-l}`` (easy to train) but ``r_l ~ chi_1^{-l} -> 0``: the network memorizes and predicts 0 away from the
training set. At criticality both approach finite limits polynomially. The approach of the exact metrics to these
forms is set by the depth scales ``xi_c`` of :func:`meanfield.depth_scales`.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.standard_normal((20, 5)); x /= np.linalg.norm(x, axis=1, keepdims=True) / np.sqrt(5)
>>> m = depth_metrics("erf", 3.0, 0.05, x[:15], x[:15, 0], x[15:], max_depth=40)   # chaotic phase
>>> bool(m.condition_number[-1] < m.condition_number[1]), bool(abs(m.ratio[-1]) < abs(m.ratio[1]))
(True, True)
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from typing import List, Optional, Tuple

    from matplotlib.axes import Axes

    from ._typing import ActivationLike, ArrayLike, FloatArray

from dataclasses import dataclass

import numpy as np

from ._checks import check_array, check_int, check_nonneg, check_positive

__all__ = ["DepthMetrics", "depth_metrics", "kernels_by_depth"]


@dataclass(frozen=True)
class DepthMetrics:
    """Trainability and generalization metrics for depths ``0..max_depth`` (:func:`depth_metrics`).

    Attributes
    ----------
    depths : ndarray (D,)
        Hidden layers ``l = 0, 1, ..., max_depth`` (``l = 0``: the readout on the inputs).
    condition_number : ndarray (D,)
        ``kappa^l`` of ``Theta^l(X, X)`` (``inf`` once ``lambda_min`` is at round-off, ``n eps lambda_max``).
    predictor : ndarray (D, n_test[, C])
        ``P(Theta^l) Y`` at the test inputs (pseudo-inverse on the modes above round-off).
    ratio : ndarray (D,)
        ``<P(Theta^l) Y, Ybar> / |Ybar|^2`` averaged over test inputs: 1 for the constant predictor ``Ybar``, 0 for
        the zero predictor (the quantity the asymptotic ``r_l`` predicts).
    condition_number_asymptotic, ratio_asymptotic : ndarray (D,)
        The large-depth forms of the module docstring.
    theta_diag, theta_off : ndarray (D,)
        ``Theta_d^l``, ``Theta_o^l`` of the two-input recursion.
    chi1 : float
        ``chi_1`` at the fixed point ``q*``; ``phase`` is "ordered" (< 1 - 1e-9), "chaotic" (> 1 + 1e-9) or "critical".
    """

    depths: np.ndarray
    condition_number: np.ndarray
    predictor: np.ndarray
    ratio: np.ndarray
    condition_number_asymptotic: np.ndarray
    ratio_asymptotic: np.ndarray
    theta_diag: np.ndarray
    theta_off: np.ndarray
    chi1: float
    phase: str

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}

    def plot(self, ax: Optional[Axes] = None, which: str = "condition_number") -> Axes:
        """Exact (markers) and asymptotic (line) ``kappa^l`` (``which="condition_number"``) or ratio against depth;
        returns the Axes."""
        import matplotlib.pyplot as plt

        ax = ax if ax is not None else plt.gca()
        exact = getattr(self, which)
        asym = getattr(self, which + "_asymptotic")
        line, = ax.plot(self.depths, exact, "o", ms=3, label=f"exact ({self.phase})")
        ax.plot(self.depths, asym, "-", color=line.get_color(), lw=1, label="large-depth form")
        ax.set_xlabel("depth l")
        ax.set_ylabel(r"$\kappa^l$" if which == "condition_number" else r"$P(\Theta^l)Y \cdot \bar Y / |\bar Y|^2$")
        if which == "condition_number":
            ax.set_yscale("log")
        return ax


def kernels_by_depth(activation: ActivationLike, weight_var: float, bias_var: float, x: ArrayLike, max_depth: int, *,
                     rtol: float = 1e-14) -> Tuple[List[FloatArray], List[FloatArray]]:
    r"""NNGP ``K^l`` and NTK ``Theta^l`` on the rows of ``x`` of the networks with ``l = 0..max_depth`` hidden layers
    (all layers alike), from one sweep of the deepest chain: the output of its (l+1)-th Dense layer is the output of
    the depth-``l`` network.

    Returns
    -------
    (nngp, ntk) : two lists of ``max_depth + 1`` symmetric (N, N) arrays

    Examples
    --------
    >>> import numpy as np
    >>> K, T = kernels_by_depth("relu", 2.0, 0.0, np.eye(2), 3)
    >>> [float(k[0, 0]) for k in K], [float(t[0, 0]) for t in T]   # q = 1 kept; Theta^l = (l + 1) q
    ([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0])
    """
    from .kernels import _check_inputs, _rows
    from .layers import Dense
    from .network import Network

    X, _ = _check_inputs(x, None, "x")
    L = check_int("max_depth", max_depth, 0)
    chain = Network(activation, max(L, 1), weight_var=weight_var, bias_var=bias_var).to_layers()
    nodes, _ = _rows(chain, X, True, check_positive("rtol", rtol, scalar=True), xname="x")
    r = np.arange(X.shape[0])
    Q = X @ X.T / X.shape[1]
    np.fill_diagonal(Q, np.einsum("ij,ij->i", X, X) / X.shape[1])
    T = 0.0
    nngps, thetas = [], []
    for node in nodes:
        Q, T, _ = node.layer._tile(node, Q, T, r, r, True, False)
        np.fill_diagonal(Q, node.q_out)
        if isinstance(node.layer, Dense):
            nngps.append(0.5 * (Q + Q.T))
            thetas.append(0.5 * (T + T.T))
            if len(thetas) == L + 1:
                break
    return nngps, thetas


def _ntk_per_depth(activation, weight_var, bias_var, X, max_depth):
    return kernels_by_depth(activation, weight_var, bias_var, X, max_depth)[1]


def _solve_live(Th, Ts, Y, train_steps=None):
    n = Th.shape[0]
    lam, U = np.linalg.eigh(Th)
    tol = n * np.finfo(float).eps * max(float(np.abs(lam).max()), 1e-300)
    live = lam > tol
    kappa = float(lam.max() / lam.min()) if lam.min() > tol else np.inf
    safe = np.where(live, lam, 1.0)
    if train_steps is None:
        g = np.where(live, 1.0 / safe, 0.0)
    else:   # gradient flow for time t = train_steps / lambda_max (learning rate 1 / lambda_max)
        g = np.where(live, -np.expm1(-train_steps * lam / lam.max()) / safe, 0.0)
    return kappa, (Ts @ U) @ (g[:, None] * (U.T @ Y.reshape(n, -1)))


def depth_metrics(activation: ActivationLike, weight_var: float, bias_var: float, x_train: ArrayLike,
                  y_train: ArrayLike, x_test: ArrayLike, max_depth: int = 50, diag_reg: float = 0.0,
                  train_steps: Optional[float] = None) -> DepthMetrics:
    r"""Condition number of ``Theta^l`` and mean predictor ``P(Theta^l) Y`` for ``l = 0..max_depth`` hidden layers,
    with their large-depth forms (module docstring; Xiao et al. 2020).

    Parameters
    ----------
    activation : str
        Name of an activation (as :class:`~meanfield.Network`).
    weight_var, bias_var : float
        Shared by every layer.
    x_train : (n, M_0) array
        Best with rows of equal norm (the large-depth form assumes it; Xiao et al. normalize the inputs).
    y_train : (n,) or (n, C) array
    x_test : (n_test, M_0) array
    max_depth : int
        >= 1.
    diag_reg : float
        Absolute ridge added to ``Theta^l(X, X)`` before inverting (0: pseudo-inverse on the modes above round-off).
    train_steps : float, optional
        None: the predictor at the end of training (``t = inf``). A number ``S``: the mean prediction after gradient
        flow for time ``S / lambda_max`` (``S`` steps of learning rate ``1 / lambda_max``, the finite training budget
        of Xiao et al.'s trainability experiments): modes with ``lambda < lambda_max / S`` are not learned, so an
        ill-conditioned ``Theta`` (ordered phase) fails to fit.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.eye(4) * 2.0
    >>> m = depth_metrics("relu", 1.0, 0.1, x, np.arange(4.0), x, max_depth=10)   # ordered: kappa grows
    >>> m.phase, bool(m.condition_number[10] > m.condition_number[1])
    ('ordered', True)
    """
    from .forward import chi1 as _chi1

    X = check_array("x_train", x_train, 2)
    Xs = check_array("x_test", x_test, 2)
    if Xs.shape[1] != X.shape[1]:
        raise ValueError(f"x_test must have shape (n_test, {X.shape[1]}), got {Xs.shape}")
    Y = check_array("y_train", y_train, (1, 2))
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"y_train must have shape ({X.shape[0]},) or ({X.shape[0]}, n_outputs), got {Y.shape}")
    L = check_int("max_depth", max_depth, 1)
    reg = check_nonneg("diag_reg", diag_reg, scalar=True)
    steps = None if train_steps is None else float(check_nonneg("train_steps", train_steps, scalar=True))
    w = float(check_nonneg("weight_var", weight_var, scalar=True))
    b = float(check_nonneg("bias_var", bias_var, scalar=True))
    n, m = X.shape[0], Xs.shape[0]
    thetas = _ntk_per_depth(activation, w, b, np.vstack([Xs, X]), L)
    Ybar = Y.mean(axis=0)
    kappas, preds, ratios = [], [], []
    for T in thetas:
        kappa, P = _solve_live(T[m:, m:] + reg * np.eye(n), T[:m, m:], Y, steps)
        kappas.append(kappa)
        P = P.reshape((m,) + Y.shape[1:])
        preds.append(P)
        ratios.append(float(np.mean(P.reshape(m, -1) @ np.atleast_1d(Ybar)) / max(float(np.sum(Ybar ** 2)), 1e-300)))
    # two-input recursion at the data's mean squared norm and mean off-diagonal overlap
    G = X @ X.T / X.shape[1]
    q0 = float(np.mean(np.diag(G)))
    off = float((G.sum() - np.trace(G)) / max(n * (n - 1), 1))
    c0 = max(min(off / q0, 1.0), -1.0) if q0 > 0 else 0.0
    pair = np.sqrt(q0) * np.array([[1.0, 0.0], [c0, np.sqrt(max(1.0 - c0 * c0, 0.0))]])
    two = _ntk_per_depth(activation, w, b, pair * np.sqrt(2.0), L)
    td = np.array([t[0, 0] for t in two])
    to = np.array([t[0, 1] for t in two])
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa_a = np.where(td - to > 0, (td + reg + (n - 1) * to) / (td + reg - to), np.inf)
        ratio_a = n * to / (td + reg + (n - 1) * to)
    x1 = float(_chi1(activation, w, b))
    phase = "ordered" if x1 < 1 - 1e-9 else ("chaotic" if x1 > 1 + 1e-9 else "critical")
    return DepthMetrics(depths=np.arange(len(thetas)), condition_number=np.array(kappas), predictor=np.array(preds),
                        ratio=np.array(ratios), condition_number_asymptotic=kappa_a, ratio_asymptotic=ratio_a,
                        theta_diag=td, theta_off=to, chi1=x1, phase=phase)
