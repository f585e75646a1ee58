r"""Model (true) Fisher information, empirical Fisher information and NTK along training in the NTK regime.

For ``N`` training inputs, outputs ``f`` (``N x C``), Jacobian ``J`` and per-sample loss ``l_n``:

* the NTK ``Theta = J J^T`` (``NC x NC``; at infinite width ``Theta (x) I_C``, constant during training);
* the model ("true") FIM ``F = (1/N) sum_n J_n^T Lambda_n J_n``, the expected outer product of score vectors under
  the model's own predictive distribution: ``Lambda_n = I_C`` for the MSE loss (unit-variance Gaussian model),
  ``Lambda_n = Q_n = diag(g_n) - g_n g_n^T`` for the softmax cross-entropy; non-zero spectrum from the dual
  ``(1/N) [Lambda_n^{1/2} Theta_nm Lambda_m^{1/2}]``;
* the empirical FIM ``F_emp = (1/N) sum_n grad l_n grad l_n^T = (1/N) sum_n J_n^T e_n e_n^T J_n`` with the observed
  errors ``e_n = dl_n/df_n`` (``f_n - y_n`` for MSE, ``g_n - y_n`` for cross-entropy); rank ``<= N``, non-zero
  spectrum from the ``N x N`` dual ``(1/N) [e_n^T Theta_nm e_m]``.

In the NTK regime the MSE model FIM is ``Theta / N`` at every step, while the empirical FIM is quadratic in the
residuals and decays with them, ``(1/N) D_t Theta D_t`` (``D_t`` the residuals of step ``t``): it measures the
remaining error, not the geometry, and the two agree only when the labels are drawn from the model
(``E_{y ~ g}[e e^T] = Q``; Kunstner et al. 2019). For cross-entropy the model FIM itself moves, through ``Q_t``
(:mod:`meanfield.softmax_dynamics`). The residuals follow ``r_t = (I - (eta/N) Theta)^t r_0`` (MSE) or the
cross-entropy map of :func:`meanfield.softmax_dynamics.cross_entropy_ntk_dynamics`.

Examples
--------
>>> import numpy as np
>>> th = np.array([[2.0, 0.5], [0.5, 2.0]])
>>> tr = fisher_along_training(th, np.array([[1.0], [-1.0]]), [0, 50], learning_rate=1.0)
>>> np.allclose(tr.model_eigenvalues[0], tr.model_eigenvalues[1]), bool(tr.empirical_eigenvalues[1, -1] < 1e-6)
(True, True)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ._checks import as_float_array, check_array, check_positive
from ._interop import short_repr

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ._typing import ArrayLike

__all__ = ["FisherAlongTraining", "fisher_along_training", "empirical_fisher_eigenvalues"]

_LOSSES = ("mse", "cross_entropy")


def empirical_fisher_eigenvalues(theta: ArrayLike, errors: ArrayLike) -> np.ndarray:
    r"""Non-zero spectrum of the empirical FIM ``(1/N) sum_n J_n^T e_n e_n^T J_n`` for a class-shared NTK.

    The dual is ``(1/N) [(e_n . e_m) Theta_nm]`` (``N x N``).

    Parameters
    ----------
    theta : (N, N) array
        NTK of the inputs (``Theta (x) I_C``).
    errors : (..., N, C) array
        ``e_n = dl_n / df_n``.

    Returns
    -------
    ndarray (..., N)
        Ascending eigenvalues of the dual.

    Examples
    --------
    >>> import numpy as np
    >>> empirical_fisher_eigenvalues(np.eye(2), np.array([[1.0], [2.0]])).tolist()   # diag(1, 4) / 2
    [0.5, 2.0]
    """
    Th = check_array("theta", theta, 2)
    E = check_array("errors", errors)
    if E.ndim < 2 or Th.shape != (E.shape[-2], E.shape[-2]):
        raise ValueError(f"theta must be (N, N) and errors (..., N, C) with the same N, got {Th.shape}, {E.shape}")
    N = Th.shape[0]
    D = np.einsum("...nk,...mk->...nm", E, E) * Th / N
    return np.linalg.eigvalsh(0.5 * (D + np.swapaxes(D, -1, -2)))


@dataclass(frozen=True)
class FisherAlongTraining:
    r"""Spectra of the NTK, the model FIM and the empirical FIM along NTK-regime training (:func:`fisher_along_training`).

    Attributes
    ----------
    loss : str
    steps : ndarray (n_t,)
    outputs : ndarray (n_t, N, C)
        ``f_t`` (logits for cross-entropy).
    ntk_eigenvalues : ndarray (N C,)
        Of ``Theta (x) I_C`` (constant).
    model_eigenvalues : ndarray (n_t, N C)
        Non-zero spectrum of the model FIM (ascending; for cross-entropy ``N`` of them are 0: ``Q_n 1 = 0``).
    empirical_eigenvalues : ndarray (n_t, N)
        Non-zero spectrum of the empirical FIM (ascending).
    """

    loss: str
    learning_rate: float
    steps: np.ndarray
    outputs: np.ndarray
    ntk_eigenvalues: np.ndarray
    model_eigenvalues: np.ndarray
    empirical_eigenvalues: np.ndarray

    __repr__ = short_repr

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}

    def plot(self, ax: Optional["Axes"] = None, **kwargs: Any) -> "Axes":
        """Largest eigenvalues of the model FIM, the empirical FIM and ``Theta / N`` against the step."""
        from .plotting import _new_ax

        ax = _new_ax(ax)
        N = self.outputs.shape[1]
        ax.semilogy(self.steps, self.model_eigenvalues[:, -1], label=r"$\lambda_{\max}(F)$", **kwargs)
        ax.semilogy(self.steps, self.empirical_eigenvalues[:, -1], label=r"$\lambda_{\max}(F_{\rm emp})$", **kwargs)
        ax.axhline(self.ntk_eigenvalues[-1] / N, color="k", ls="--", label=r"$\lambda_{\max}(\Theta)/N$")
        ax.set_xlabel(r"step $t$")
        ax.set_ylabel(r"$\lambda_{\max}$")
        return ax


def fisher_along_training(theta: ArrayLike, y: ArrayLike, steps: ArrayLike, learning_rate: float,
                          f0: Optional[ArrayLike] = None, *, loss: str = "mse") -> FisherAlongTraining:
    r"""Model FIM, empirical FIM and NTK spectra of a wide network trained by gradient descent (NTK regime).

    See the module docstring. ``loss="mse"``: ``L = (1/2N) sum ||f - y||^2``, ``f_t - y = (I - eta Theta/N)^t
    (f_0 - y)``; ``loss="cross_entropy"``: :func:`meanfield.softmax_dynamics.cross_entropy_ntk_dynamics`
    (``discrete=True``).

    Parameters
    ----------
    theta : (N, N) array
        Infinite-width NTK of the training inputs (e.g. :func:`meanfield.ntk_kernel`), symmetric PSD.
    y : (N, C) array
        Targets (one-hot / probability rows for cross-entropy).
    steps : 1-D array of int >= 0
    learning_rate : float
    f0 : (N, C) array, optional
        Outputs at initialization (default 0).
    loss : {"mse", "cross_entropy"}

    Examples
    --------
    >>> import numpy as np
    >>> tr = fisher_along_training(np.eye(2) + 0.5, np.eye(2), [0, 10], 2.0, loss="cross_entropy")
    >>> tr.model_eigenvalues.shape, tr.empirical_eigenvalues.shape
    ((2, 4), (2, 2))
    """
    from .softmax_dynamics import _softmax_fisher_dual, cross_entropy_ntk_dynamics

    if loss not in _LOSSES:
        raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")
    Th = check_array("theta", theta, 2)
    Y = check_array("y", y, 2)
    N = Th.shape[0]
    if Th.shape != (N, N) or not np.allclose(Th, Th.T, rtol=1e-10, atol=1e-12 * np.abs(Th).max()):
        raise ValueError(f"theta must be a symmetric (N, N) matrix, got shape {Th.shape}")
    if Y.shape[0] != N:
        raise ValueError(f"y must have shape (N, C) with N = {N}, got {Y.shape}")
    C = Y.shape[1]
    eta = float(check_positive("learning_rate", learning_rate, scalar=True))
    st = np.atleast_1d(as_float_array("steps", steps))
    if st.ndim != 1 or st.size < 1 or np.any(st < 0) or np.any(st != np.round(st)) or np.any(np.diff(st) < 0):
        raise ValueError(f"steps must be a 1-D increasing array of integers >= 0, got {steps!r}")
    st = st.astype(np.int64)
    F0 = np.zeros_like(Y) if f0 is None else check_array("f0", f0, 2)
    if F0.shape != Y.shape:
        raise ValueError(f"f0 must have the shape of y {Y.shape}, got {F0.shape}")
    lam_th = np.linalg.eigvalsh(0.5 * (Th + Th.T))
    ntk_ev = np.sort(np.repeat(lam_th, C))
    if loss == "mse":
        if lam_th[0] < -1e-10 * abs(lam_th[-1]):
            raise ValueError("theta must be positive semi-definite")
        lam, U = np.linalg.eigh(0.5 * (Th + Th.T))
        r0 = U.T @ (F0 - Y)
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.array([Y + U @ ((1.0 - eta * lam / N)[:, None] ** int(t) * r0) for t in st])
        if not np.all(np.isfinite(out)):
            raise FloatingPointError("fisher_along_training: the outputs overflowed (learning_rate above "
                                     "2 N / lambda_max(theta)?)")
        errors = out - Y
        model = np.broadcast_to(ntk_ev / N, (len(st), N * C)).copy()
    else:
        d = cross_entropy_ntk_dynamics(Th, Y, st, eta, F0, discrete=True)
        out = d.logits
        errors = d.probabilities - Y
        model = np.linalg.eigvalsh(_softmax_fisher_dual(Th, d.probabilities)[1])
    emp = empirical_fisher_eigenvalues(Th, errors)
    return FisherAlongTraining(loss, eta, st, out, ntk_ev, model, emp)
