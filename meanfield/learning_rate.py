r"""Learning-rate thresholds of full-batch gradient descent on the squared loss from the FIM's largest eigenvalue.

Karakida, Akaho & Amari (AISTATS 2019, sec. 4.1; Neural Comput. 2021) and Lewkowycz, Bahri, Dyer, Sohl-Dickstein &
Gur-Ari, "The large learning rate phase of deep learning: the catapult mechanism" (2020); docs/fisher_normalization.md.

Loss ``E(theta) = (1/2T) sum_t ||y_t - f(x_t)||^2``; its Hessian is ``F + (1/T) sum_t sum_k r_tk grad^2 f_k`` with
``F = J^T J / T`` the empirical FIM (MSE) and ``r`` the residuals. Linearizing the network around ``theta_0`` (the NTK
regime), gradient descent ``theta <- theta - eta grad E`` moves the residuals by ``r <- (I - eta J J^T / T) r``, so
the component along an eigenvector of ``F* = J J^T / T`` with eigenvalue ``lambda`` is multiplied by
``1 - eta lambda`` per step: the dynamics converge iff

    eta < eta_c = 2 / lambda_max(F).

In the infinite-width limit the NTK (hence ``F*``) does not move during training (Jacot et al. 2018; Lee et al. 2019),
so this threshold holds *along the whole trajectory*, ``eta_c(t) = eta_c(0)``, with ``lambda_max`` the mean-field value
of :func:`meanfield.fisher_statistics` (``alpha M (kappa_1/T + (T-1)/T kappa_2)`` in the standard parameterization,
``(kappa'_1 + (T-1) kappa'_2)/T`` for ``F`` in the NTK parameterization; with ``mean_subtraction`` the outliers are
gone and ``eta_c`` is ``T/(alpha M (kappa_1 - kappa_2))``, resp. ``2T/(kappa'_1 - kappa'_2)``). At finite width the
NTK moves by a relative ``O(1/sqrt(M))`` for ``eta < eta_c``.

Above ``eta_c`` a finite nonlinear network need not diverge: the loss first grows along the top mode, the growing
residual drives the NTK's top eigenvalue down ("catapult") until ``eta lambda_max < 2`` and the run re-converges in a
flatter region. In the solvable two-layer model of Lewkowycz et al. (the 'uv model') this happens for
``2/lambda_max < eta < 4/lambda_max``; above ``eta_max = 4/lambda_max`` it diverges. For deep nonlinear networks they
measure larger ``eta_max`` (``~12/lambda_max`` for ReLU); :mod:`meanfield.validation.catapult` measures it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ._checks import check_int, check_positive
from ._interop import short_repr
from .fisher import fisher_statistics
from .network import Network

__all__ = ["LearningRateThresholds", "learning_rate_thresholds"]


@dataclass(frozen=True)
class LearningRateThresholds:
    r"""Gradient-descent learning-rate thresholds (see :func:`learning_rate_thresholds`).

    Attributes
    ----------
    width, n_samples, n_outputs, parameterization, mean_subtraction
        The inputs.
    lambda_max : float
        Largest eigenvalue of ``F = J^T J / T`` (the loss Hessian's Gauss-Newton part) at initialization, mean-field.
    eta_critical : float
        ``2 / lambda_max``: the linear-stability threshold, at initialization and (infinite width, NTK regime) along
        the whole trajectory.
    eta_max_uv : float
        ``4 / lambda_max``: the divergence threshold of the uv model of Lewkowycz et al. (2020); between the two, the
        catapult phase.
    """

    network: Network
    width: int
    n_samples: int
    n_outputs: int
    parameterization: str
    mean_subtraction: bool
    lambda_max: float
    eta_critical: float
    eta_max_uv: float

    __repr__ = short_repr

    def top_mode_factor(self, learning_rate: float) -> float:
        """``1 - eta lambda_max``: the linearized per-step factor of the residual along the top eigenvector."""
        return 1.0 - float(check_positive("learning_rate", learning_rate)) * self.lambda_max

    def regime(self, learning_rate: float) -> str:
        """``"lazy"`` (``eta < eta_c``), ``"catapult"`` (``eta_c <= eta < 4/lambda_max``, the uv-model range) or
        ``"divergent"`` (beyond); the boundary values belong to the upper regime."""
        eta = float(check_positive("learning_rate", learning_rate))
        return "lazy" if eta < self.eta_critical else ("catapult" if eta < self.eta_max_uv else "divergent")

    def linearized_residual(self, learning_rate: float, n_steps: int) -> np.ndarray:
        """``|1 - eta lambda_max|^k`` for ``k = 0..n_steps``: the top-mode residual of the linearized (frozen-NTK)
        dynamics relative to its initial value."""
        n_steps = check_int("n_steps", n_steps, 0)
        return np.abs(self.top_mode_factor(learning_rate)) ** np.arange(n_steps + 1, dtype=np.float64)

    def to_dict(self) -> dict:
        """Plain-Python dictionary (the network through ``Network.to_dict``)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "network"}
        d["network"] = self.network.to_dict()
        return d


def learning_rate_thresholds(network: Network, width: int, n_samples: int, n_outputs: int = 1,
                             parameterization: str = "standard", *,
                             mean_subtraction: bool = False) -> LearningRateThresholds:
    r"""Critical learning rate ``eta_c = 2 / lambda_max(F)`` and the uv-model divergence threshold ``4 / lambda_max``.

    ``lambda_max`` is the mean-field largest eigenvalue of ``F = J^T J / T`` from :func:`meanfield.fisher_statistics`
    (Karakida, Akaho & Amari 2019, sec. 4.1: ``eta_c = 2 / (alpha M (kappa_1/T + (T-1)/T kappa_2))`` in the standard
    parameterization; NTK parameterization: ``2 T / (kappa'_1 + (T-1) kappa'_2)``, width independent). In the
    infinite-width NTK regime ``F`` is constant in time, so ``eta_c`` holds along the trajectory. The catapult phase
    ``eta_c < eta < eta_max`` (Lewkowycz et al. 2020; ``eta_max = 4/lambda_max`` in their uv model) is where a finite
    network leaves the linear regime and re-converges at lower sharpness.

    Parameters
    ----------
    network, width, n_samples, n_outputs, parameterization
        As for :func:`meanfield.fisher_statistics` (MSE loss).
    mean_subtraction : bool
        Outputs mean-subtracted over the batch (batch normalization in the last layer): the ``O(M)`` outlier is
        removed and ``eta_c`` becomes ``2 T / (alpha M (kappa_1 - kappa_2))`` (SP).

    Examples
    --------
    >>> from meanfield import Network
    >>> from meanfield.learning_rate import learning_rate_thresholds
    >>> lr = learning_rate_thresholds(Network("relu", depth=2, weight_var=2.0, bias_var=0.1), 256, 16)
    >>> round(lr.eta_max_uv / lr.eta_critical, 6), lr.regime(1.5 * lr.eta_critical)
    (2.0, 'catapult')
    """
    st = fisher_statistics(network, width, n_samples, n_outputs, parameterization, "mse",
                           mean_subtraction=mean_subtraction)
    lam = st.lambda_max if parameterization == "standard" else st.lambda_max / st.n_samples   # eigenvalue of F
    if not (np.isfinite(lam) and lam > 0):
        raise ValueError(f"lambda_max = {lam} is not a positive finite number for this network: no learning-rate "
                         f"threshold")
    return LearningRateThresholds(network=network, width=st.width, n_samples=st.n_samples, n_outputs=st.n_outputs,
                                  parameterization=parameterization, mean_subtraction=st.mean_subtraction,
                                  lambda_max=float(lam), eta_critical=2.0 / lam, eta_max_uv=4.0 / lam)
