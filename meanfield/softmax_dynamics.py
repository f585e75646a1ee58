r"""Training dynamics under the softmax cross-entropy loss in the NTK regime, and the softmax FIM along training.

Karakida, Akaho & Amari, "Pathological spectra of the Fisher information metric and its variants in deep neural
networks" (Neural Computation 2021), sec. 3.4 and Fig. 5; Lee et al. (2019) for the NTK-regime dynamics. The
derivations are in ``docs/natural_gradient.md`` (section "Training dynamics under cross-entropy").

Gradient descent on ``L = (1/N) sum_n CE(y_n, softmax(f(x_n)))`` with learning rate ``eta`` moves the logits, in the
NTK regime (the NTK ``Theta`` of the training inputs fixed at its initial value, the same for every class), by

    df/dt = -(eta / N) Theta (g(f) - y),      g = softmax(f),        (gradient flow, t counted in steps)
    f_{t+1} = f_t - (eta / N) Theta (g(f_t) - y)                     (the linearised network's gradient descent).

The softmax FIM is ``F = (1/N) sum_n J_n^T Q_n J_n`` with ``Q_n = diag(g_n) - g_n g_n^T``; its non-zero eigenvalues
are those of the dual ``F* = (1/N) [Q_n^{1/2} Theta_nm Q_m^{1/2}]`` (``NC x NC``), evaluated here along the trajectory.
For a kernel ``Theta = kappa_2 1 1^T + (kappa_1 - kappa_2) I`` (Karakida's Gaussian inputs, NTK parameterization:
``kappa_1 = sum_l qtilde_1^l q_1^l``, ``kappa_2 = sum_l qtilde_2^l q_2^l``) Weyl's inequality (their Theorem 3.3 with
the softmax outputs of time ``t`` substituted, as in their Fig. 5) bounds the largest eigenvalue:

    kappa_2 lambda_1(Qbar) <= lambda_max(F) <= kappa_2 lambda_1(Qbar) + (kappa_1 - kappa_2) max_n lambda_max(Q_n) / N,

``Qbar = (1/N) sum_n Q_n``. The MSE FIM ``Theta / N`` does not change in the NTK regime; the softmax FIM does, through
``g_t``: it shrinks as the outputs saturate.

Examples
--------
>>> import numpy as np
>>> th = np.array([[2.0, 0.5], [0.5, 2.0]])
>>> d = cross_entropy_ntk_dynamics(th, np.eye(2), [0.0, 10.0], learning_rate=1.0)
>>> bool(d.loss[1] < d.loss[0]), bool(np.allclose(d.logits[:, :, :].sum(-1), 0.0))
(True, True)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ._checks import as_float_array, check_array, check_positive
from ._interop import short_repr

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ._typing import ArrayLike

__all__ = ["CrossEntropyDynamics", "cross_entropy_ntk_dynamics", "softmax_fisher_lambda_max"]


def _softmax(f: np.ndarray) -> np.ndarray:
    z = f - f.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _softmax_fisher_dual(theta: np.ndarray, g: np.ndarray) -> tuple:
    """``(Q, F*)``: ``Q_n = diag(g_n) - g_n g_n^T`` (B, N, C, C) and the dual ``(1/N) [Q_n^{1/2} Theta_nm Q_m^{1/2}]``
    (B, NC, NC, symmetrised) of the softmax FIM for softmax outputs ``g`` (B, N, C) and a class-shared NTK."""
    from .fisher import _softmax_moments, _sqrtm_psd

    N, C = g.shape[-2:]
    Q = _softmax_moments(g)[0]
    R = _sqrtm_psd(Q)
    B = np.einsum("bnij,nm,bmjk->bnimk", R, theta, R).reshape(-1, N * C, N * C) / N
    return Q, 0.5 * (B + np.swapaxes(B, 1, 2))


def softmax_fisher_lambda_max(theta: ArrayLike, g: ArrayLike, kappa1: Optional[float] = None,
                              kappa2: Optional[float] = None) -> tuple:
    r"""Largest eigenvalue of the softmax FIM ``F = (1/N) sum_n J_n^T Q_n J_n`` and Karakida's bounds on it.

    ``lambda_max(F) = lambda_max((1/N) [Q_n^{1/2} Theta_nm Q_m^{1/2}])``; bounds (module docstring)
    ``[kappa_2 lambda_1(Qbar), kappa_2 lambda_1(Qbar) + (kappa_1 - kappa_2) max_n lambda_max(Q_n) / N]``.

    Parameters
    ----------
    theta : (N, N) array
        NTK of the inputs (shared by the classes: ``Theta (x) I_C``).
    g : (..., N, C) array
        Softmax outputs (rows on the simplex).
    kappa1, kappa2 : float, optional
        Diagonal and off-diagonal value of the two-valued kernel of the bounds; default the means of ``theta``'s
        diagonal and off-diagonal entries.

    Returns
    -------
    (lambda_max, lower, upper) : arrays of shape ``g.shape[:-2]``

    Examples
    --------
    >>> import numpy as np
    >>> g = np.full((3, 2), 0.5)
    >>> lam, lo, up = softmax_fisher_lambda_max(np.eye(3) + 1.0, g)
    >>> [round(float(v), 12) for v in (lam, lo, up)]   # Q = [[1, -1], [-1, 1]]/4: Theta (x) Q / N, top 4 (1/2) / 3
    [0.666666666667, 0.5, 0.666666666667]
    """
    Th = check_array("theta", theta, 2)
    G = check_array("g", g)
    if G.ndim < 2 or Th.shape != (G.shape[-2], G.shape[-2]):
        raise ValueError(f"theta must be (N, N) and g (..., N, C) with the same N, got {Th.shape} and {G.shape}")
    if np.any(G < -1e-12) or not np.allclose(G.sum(-1), 1.0, atol=1e-8):
        raise ValueError("g must hold softmax outputs: non-negative rows summing to 1")
    N, C = G.shape[-2:]
    batch = G.shape[:-2]
    Q, B = _softmax_fisher_dual(Th, G.reshape(-1, N, C))
    lam = np.linalg.eigvalsh(B)[:, -1]
    off = Th[~np.eye(N, dtype=bool)]
    k1 = float(np.mean(np.diagonal(Th))) if kappa1 is None else float(kappa1)
    k2 = (float(np.mean(off)) if N > 1 else 0.0) if kappa2 is None else float(kappa2)
    qbar = np.linalg.eigvalsh(Q.mean(axis=1))[:, -1]
    qmax = np.linalg.eigvalsh(Q)[..., -1].max(axis=1)
    lower = k2 * qbar
    upper = lower + (k1 - k2) * qmax / N
    return lam.reshape(batch), lower.reshape(batch), upper.reshape(batch)


@dataclass(frozen=True)
class CrossEntropyDynamics:
    r"""NTK-regime logits under cross-entropy training and the softmax FIM along them.

    Attributes
    ----------
    times : ndarray (n_t,)
        In steps (``t = eta^{-1} x`` gradient-flow time).
    logits : ndarray (n_t, N, C)
    probabilities : ndarray (n_t, N, C)
        ``g_t = softmax(f_t)``.
    loss : ndarray (n_t,)
        ``(1/N) sum_n CE(y_n, g_t(x_n))``.
    fisher_lambda_max : ndarray (n_t,)
        ``lambda_max`` of the softmax FIM ``F_t`` (infinite width: ``Theta`` fixed, ``g_t`` from the dynamics).
    fisher_lower, fisher_upper : ndarray (n_t,)
        Karakida's bounds on it.
    mse_lambda_max : float
        ``lambda_max(Theta) / N``, the MSE FIM's largest eigenvalue (constant in the NTK regime).
    learning_rate : float
    discrete : bool
        True: gradient descent of the linearised network; False: gradient flow (``solve_ivp``).
    """

    times: np.ndarray
    logits: np.ndarray
    probabilities: np.ndarray
    loss: np.ndarray
    fisher_lambda_max: np.ndarray
    fisher_lower: np.ndarray
    fisher_upper: np.ndarray
    mse_lambda_max: float
    learning_rate: float
    discrete: bool

    __repr__ = short_repr

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}

    def plot(self, ax: Optional["Axes"] = None, **kwargs: Any) -> "Axes":
        """``lambda_max`` of the softmax FIM with its bounds (band) and of the MSE FIM against the step."""
        from .plotting import _new_ax

        ax = _new_ax(ax)
        line = ax.plot(self.times, self.fisher_lambda_max, label=r"$\lambda_{\max}(F_{\rm CE})$", **kwargs)[0]
        ax.fill_between(self.times, self.fisher_lower, self.fisher_upper, color=line.get_color(), alpha=0.2,
                        label="bounds")
        ax.axhline(self.mse_lambda_max, color="k", ls="--", label=r"$\lambda_{\max}(F_{\rm MSE})$")
        ax.set_xlabel(r"step $t$")
        ax.set_ylabel(r"$\lambda_{\max}$")
        return ax


def cross_entropy_ntk_dynamics(theta: ArrayLike, y: ArrayLike, times: ArrayLike, learning_rate: float = 1.0,
                               f0: Optional[ArrayLike] = None, *, discrete: bool = False,
                               kappa1: Optional[float] = None, kappa2: Optional[float] = None,
                               rtol: float = 1e-10) -> CrossEntropyDynamics:
    r"""Logits of a wide network trained on the cross-entropy loss in the NTK regime, and its softmax FIM.

    ``df/dt = -(eta/N) Theta (softmax(f) - y)`` integrated by :func:`scipy.integrate.solve_ivp` (DOP853, relative
    tolerance ``rtol``), or with ``discrete=True`` the map ``f_{t+1} = f_t - (eta/N) Theta (softmax(f_t) - y)`` (the
    linearised network's gradient descent; ``times`` then integer steps). Along the trajectory
    :func:`softmax_fisher_lambda_max` gives the FIM's largest eigenvalue and Karakida's bounds (their Fig. 5).

    Parameters
    ----------
    theta : (N, N) array
        NTK of the training inputs (e.g. :func:`meanfield.ntk_kernel`, NTK parameterization), symmetric PSD.
    y : (N, C) array
        Targets: one-hot labels or probability vectors (C >= 2).
    times : 1-D array of numbers >= 0, increasing
        In steps.
    learning_rate : float
        ``eta > 0``.
    f0 : (N, C) array, optional
        Logits at initialization (default 0).
    discrete : bool
    kappa1, kappa2 : float, optional
        Passed to :func:`softmax_fisher_lambda_max`.
    rtol : float
        ``solve_ivp`` relative tolerance (absolute ``rtol * 1e-2``).

    Examples
    --------
    >>> import numpy as np
    >>> d = cross_entropy_ntk_dynamics(np.eye(2), np.eye(2), [0, 1, 2], 1.0, discrete=True)
    >>> d.logits[1, 0].round(6).tolist()     # -(1/2) (g - y) with g = (1/2, 1/2), y = (1, 0)
    [0.25, -0.25]
    """
    from scipy.integrate import solve_ivp

    Th = check_array("theta", theta, 2)
    N = Th.shape[0]
    if Th.shape != (N, N) or not np.allclose(Th, Th.T, rtol=1e-10, atol=1e-12 * np.abs(Th).max()):
        raise ValueError(f"theta must be a symmetric (N, N) matrix, got shape {Th.shape}")
    if np.linalg.eigvalsh(0.5 * (Th + Th.T))[0] < -1e-10 * np.abs(Th).max():
        raise ValueError("theta must be positive semi-definite")
    Y = check_array("y", y, 2)
    if Y.shape[0] != N or Y.shape[1] < 2:
        raise ValueError(f"y must have shape (N, C) with N = {N} and C >= 2, got {Y.shape}")
    if np.any(Y < 0) or not np.allclose(Y.sum(1), 1.0, atol=1e-10):
        raise ValueError("y must hold one-hot labels or probability vectors (non-negative rows summing to 1)")
    C = Y.shape[1]
    eta = float(check_positive("learning_rate", learning_rate, scalar=True))
    rtol = float(check_positive("rtol", rtol, scalar=True))
    ts = np.atleast_1d(as_float_array("times", times))
    if ts.ndim != 1 or ts.size < 1 or np.any(~np.isfinite(ts)) or np.any(ts < 0) or np.any(np.diff(ts) < 0):
        raise ValueError(f"times must be a 1-D increasing array of finite numbers >= 0, got {times!r}")
    F0 = np.zeros_like(Y) if f0 is None else check_array("f0", f0, 2)
    if F0.shape != Y.shape:
        raise ValueError(f"f0 must have the shape of y {Y.shape}, got {F0.shape}")
    A = eta * Th / N
    if discrete:
        if np.any(ts != np.round(ts)):
            raise ValueError("times must be integer steps with discrete=True")
        steps = ts.astype(np.int64)
        out, f = [], F0.copy()
        for t in range(int(steps[-1]) + 1):
            if t in set(steps.tolist()):
                out.extend([f.copy()] * int(np.sum(steps == t)))
            f = f - A @ (_softmax(f) - Y)
        logits = np.array(out)
    else:
        def rhs(_, z):
            f = z.reshape(N, C)
            return (-A @ (_softmax(f) - Y)).ravel()

        sol = solve_ivp(rhs, (0.0, float(ts[-1])), F0.ravel(), method="DOP853", t_eval=ts, rtol=rtol,
                        atol=rtol * 1e-2 * max(1.0, float(np.abs(F0).max())))
        if not sol.success:
            raise RuntimeError(f"cross_entropy_ntk_dynamics: solve_ivp failed: {sol.message}")
        logits = sol.y.T.reshape(len(ts), N, C)
    if not np.all(np.isfinite(logits)):
        raise FloatingPointError("cross_entropy_ntk_dynamics: the logits overflowed (learning_rate too large?)")
    g = _softmax(logits)
    z = logits - logits.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    loss = -(Y * logp).sum((-1, -2)) / N
    lam, lo, up = softmax_fisher_lambda_max(Th, g, kappa1, kappa2)
    mse = float(np.linalg.eigvalsh(Th)[-1] / N)
    return CrossEntropyDynamics(ts, logits, g, loss, lam, lo, up, mse, eta, bool(discrete))
