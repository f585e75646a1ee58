r"""Measured learning-rate phases of gradient descent on torch networks: lazy, catapult, divergent.

The simulation side of :mod:`meanfield.learning_rate`. Every network of an ensemble is trained by full-batch gradient
descent (:func:`meanfield.validation.train_gd`) on ``(1/2T) sum_t ||y_t - f(x_t)||^2`` with targets ``y ~ N(0, 1)``
at learning rates ``eta = factor * 2 / lambda_max0`` (``lambda_max0`` the network's own largest FIM eigenvalue at
initialization), and each run is classified:

* ``diverged``: the final loss is not finite or not below the initial loss (the run did not come back);
* ``catapulted``: not diverged, but the loss rose above ``spike`` times its initial value on the way;
* lazy: neither (the loss never rose that far).

The linear theory puts the lazy/catapult boundary at ``factor = 1`` (``eta_c = 2/lambda_max``); Lewkowycz et al.
(2020) put the catapult/divergence boundary at ``factor = 2`` for their uv model and measure larger values for deep
ReLU networks. ``sharpness`` records ``lambda_max(F)`` along the trajectory: constant up to ``O(1/sqrt(M))`` in the
lazy phase (the NTK regime), pushed below ``2/eta`` by a catapult.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional, Sequence

import numpy as np
import torch

from .._checks import check_int, check_positive
from .._interop import short_repr
from ..network import Network
from .measure import gaussian_inputs, train_gd
from .networks import sample_ensemble

__all__ = ["CatapultScan", "catapult_scan"]


@dataclass(frozen=True)
class CatapultScan:
    r"""Result of :func:`catapult_scan`: arrays ``(K, S)`` over the K learning-rate factors and S networks.

    Attributes
    ----------
    factors : ndarray (K,)
        ``eta lambda_max0 / 2``.
    lambda_max0 : ndarray (S,)
        Each network's ``lambda_max(F)`` at initialization.
    eta_critical_theory : float
        ``2 / lambda_max`` of the mean-field theory (:func:`meanfield.learning_rate.learning_rate_thresholds`).
    sharpness_steps : tuple of int
    sharpness : ndarray (K, S, len(sharpness_steps))
        ``lambda_max(F)`` along training (``nan`` once diverged).
    max_loss_ratio, final_loss_ratio : ndarray (K, S)
        Largest and final loss over the initial loss.
    diverged, catapulted : ndarray of bool (K, S)
    """

    network: Network
    width: int
    n_samples: int
    n_outputs: int
    n_steps: int
    spike: float
    factors: np.ndarray
    lambda_max0: np.ndarray
    eta_critical_theory: float
    sharpness_steps: tuple
    sharpness: np.ndarray
    max_loss_ratio: np.ndarray
    final_loss_ratio: np.ndarray
    diverged: np.ndarray
    catapulted: np.ndarray

    __repr__ = short_repr

    def fraction(self, phase: str) -> np.ndarray:
        """Fraction of the networks in ``phase`` ("lazy", "catapult", "diverged") at every factor, shape (K,)."""
        if phase == "diverged":
            m = self.diverged
        elif phase == "catapult":
            m = self.catapulted
        elif phase == "lazy":
            m = ~self.diverged & ~self.catapulted
        else:
            raise ValueError(f"phase must be 'lazy', 'catapult' or 'diverged', got {phase!r}")
        return m.mean(axis=1)

    def divergence_factor(self) -> float:
        """Smallest factor at which at least half of the networks diverged (``nan`` if none did): the measured
        ``eta_max lambda_max0 / 2``."""
        k = np.flatnonzero(self.fraction("diverged") >= 0.5)
        return float(self.factors[k[0]]) if k.size else float("nan")

    def catapult_onset_factor(self) -> float:
        """Smallest factor at which at least half of the networks catapulted or diverged (``nan`` if none)."""
        k = np.flatnonzero(self.fraction("lazy") < 0.5)
        return float(self.factors[k[0]]) if k.size else float("nan")

    def lazy_sharpness_drift(self) -> float:
        """Largest ``|lambda_max(t)/lambda_max0 - 1|`` over the runs with factor < 1 (the NTK-regime drift)."""
        sel = self.factors < 1
        if not sel.any():
            return float("nan")
        return float(np.nanmax(np.abs(self.sharpness[sel] / self.lambda_max0[None, :, None] - 1.0)))

    def plot(self, ax=None, **kwargs):
        """Fractions of lazy / catapult / diverged runs against ``eta lambda_max0 / 2`` on ``ax``."""
        import matplotlib.pyplot as plt

        ax = plt.gca() if ax is None else ax
        for phase, st in (("lazy", "o-"), ("catapult", "s-"), ("diverged", "^-")):
            ax.plot(self.factors, self.fraction(phase), st, label=phase, **kwargs)
        ax.axvline(1.0, color="k", ls=":", lw=1)
        ax.axvline(2.0, color="k", ls="--", lw=1)
        ax.set_xlabel(r"$\eta\,\lambda_{\max}(0)/2$")
        ax.set_ylabel("fraction of networks")
        return ax

    def to_dict(self) -> dict:
        d = {}
        for f in fields(self):
            v = getattr(self, f.name)
            d[f.name] = v.to_dict() if f.name == "network" else (v.tolist() if isinstance(v, np.ndarray) else v)
        return d


def catapult_scan(network: Network, width: int, factors: Sequence[float], *, n_samples: int = 16,
                  n_outputs: int = 1, n_seeds: int = 3, n_steps: int = 300, spike: float = 2.0,
                  sharpness_steps: Optional[Sequence[int]] = None, seed: int = 0, device=None,
                  dtype="float64") -> CatapultScan:
    r"""Train ``n_seeds`` torch networks at each learning rate ``factor * 2 / lambda_max0`` and classify the runs.

    Standard parameterization, float64, inputs ``x_t ~ N(0, I)`` and targets ``y ~ N(0, 1)`` (seeded), full-batch
    gradient descent for ``n_steps`` steps (module docstring for the classification).

    Parameters
    ----------
    network : Network
    width : int
    factors : sequence of float
        ``eta lambda_max0 / 2`` values (> 0).
    n_samples, n_outputs, n_seeds, n_steps : int
    spike : float
        A run that does not diverge but whose loss exceeds ``spike`` times the initial loss is a catapult (> 1).
    sharpness_steps : sequence of int, optional
        Steps at which ``lambda_max(F)`` is recorded; default ``0, 1, 2, 5, 10, 20, 50, 100, ..., n_steps``.
    seed : int
    device, dtype
        As for :func:`meanfield.validation.sample_ensemble` (default: CUDA when available, else CPU; float64).

    Examples
    --------
    >>> from meanfield import Network
    >>> from meanfield.validation.catapult import catapult_scan
    >>> scan = catapult_scan(Network("relu", 2, 2.0, 0.1), 64, [0.5], n_seeds=2, n_steps=50)
    >>> scan.fraction("lazy").tolist()
    [1.0]
    """
    from ..learning_rate import learning_rate_thresholds

    width = check_int("width", width, 1)
    fac = np.asarray([float(check_positive("factors[i]", f)) for f in factors], dtype=np.float64)
    if fac.size == 0:
        raise ValueError("factors must contain at least one learning-rate factor")
    n_steps = check_int("n_steps", n_steps, 1)
    n_seeds = check_int("n_seeds", n_seeds, 1)
    spike = float(check_positive("spike", spike))
    if not spike > 1:
        raise ValueError(f"spike must be > 1 (a loss ratio), got {spike}")
    if sharpness_steps is None:
        base = [0, 1, 2, 5, 10, 20, 50] + list(range(100, n_steps + 1, 100)) + [n_steps]
        sharpness_steps = sorted({k for k in base if k <= n_steps})
    theory = learning_rate_thresholds(network, width, n_samples, n_outputs)
    ens = sample_ensemble(network, width, n_seeds, n_outputs=n_outputs, seed=seed, device=device, dtype=dtype)
    x = gaussian_inputs(ens, n_samples, seed)
    gen = torch.Generator().manual_seed(int(seed) + 104729)
    y = torch.randn((n_seeds, n_samples, n_outputs), generator=gen, dtype=torch.float64).to(ens.device, ens.dtype)
    runs = []
    lam0 = None
    for f in fac:
        if lam0 is None:
            probe = train_gd(ens, x, y, 1e-12, n_steps=1, sharpness_steps=(0,))
            lam0 = probe.lambda_max0
        runs.append(train_gd(ens, x, y, f * 2.0 / lam0, n_steps=n_steps, divergence_factor=1e30,
                             sharpness_steps=tuple(sharpness_steps)))
    losses = np.stack([r.losses for r in runs])                 # (K, S, n_steps + 1)
    with np.errstate(invalid="ignore", over="ignore"):
        ratio = losses / losses[:, :, :1]
        final = ratio[:, :, -1]
        mx = np.where(np.isfinite(ratio), ratio, np.inf).max(axis=2)
        diverged = ~np.isfinite(final) | (final >= 1.0)
    catapulted = ~diverged & (mx > spike)
    return CatapultScan(network=network, width=width, n_samples=int(n_samples), n_outputs=int(n_outputs),
                        n_steps=n_steps, spike=spike, factors=fac, lambda_max0=np.asarray(lam0),
                        eta_critical_theory=theory.eta_critical, sharpness_steps=tuple(runs[0].sharpness_steps),
                        sharpness=np.stack([r.sharpness for r in runs]), max_loss_ratio=mx, final_loss_ratio=final,
                        diverged=diverged, catapulted=catapulted)
