r"""Gradient descent on the softmax cross-entropy loss for finite torch networks, with the FIM tracked along training.

The finite-width twin of :mod:`meanfield.softmax_dynamics` (Karakida, Akaho & Amari 2021, Fig. 5). A view of
:func:`~meanfield.validation.fisher_tracking.track_fisher`: every network of a
:class:`~meanfield.validation.networks.NetworkEnsemble` is trained by full-batch gradient descent on
``L = (1/N) sum_n CE(y_n, softmax(f(x_n)))``; at the recorded steps the empirical NTK ``Theta`` (``NC x NC``, exact,
layer by layer: :func:`~meanfield.validation.measure.gram_layerwise`) gives the largest eigenvalue of the softmax FIM
``F = (1/N) sum_n J_n^T Q_n J_n`` through its dual ``(1/N) Q^{1/2} Theta Q^{1/2}`` and that of the MSE FIM
``Theta / N``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fisher_tracking import track_fisher
from .networks import NetworkEnsemble

__all__ = ["CrossEntropyRun", "train_gd_cross_entropy"]


@dataclass(frozen=True)
class CrossEntropyRun:
    r"""Cross-entropy gradient descent of every network (:func:`train_gd_cross_entropy`).

    Attributes
    ----------
    steps : ndarray (n_rec,)
        Recorded steps.
    logits : ndarray (S, n_rec, N, C)
    loss : ndarray (S, n_rec)
    fisher_lambda_max : ndarray (S, n_rec)
        Largest eigenvalue of the softmax FIM at those steps.
    mse_lambda_max : ndarray (S, n_rec)
        Largest eigenvalue of ``J^T J / N`` (the MSE FIM).
    ntk0 : ndarray (S, N, C, N, C)
        Empirical NTK at initialization.
    """

    learning_rate: float
    width: int
    steps: np.ndarray
    logits: np.ndarray
    loss: np.ndarray
    fisher_lambda_max: np.ndarray
    mse_lambda_max: np.ndarray
    ntk0: np.ndarray

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}


def train_gd_cross_entropy(ensemble: NetworkEnsemble, x, y, learning_rate: float, n_steps: int = 100,
                           record_steps=None) -> CrossEntropyRun:
    r"""Full-batch gradient descent on the softmax cross-entropy loss, the softmax FIM tracked along training.

    ``theta <- theta - eta grad L``, ``L = (1/N) sum_n CE(y_n, softmax(f(x_n)))``, in the ensemble's
    parameterization. In the NTK regime (NTK parameterization, wide networks) the logits follow
    :func:`meanfield.softmax_dynamics.cross_entropy_ntk_dynamics` (``discrete=True``) up to ``O(1/sqrt(M))``.

    Parameters
    ----------
    ensemble : NetworkEnsemble
    x : tensor (N, M_0)
    y : tensor (N, C)
        One-hot labels (or probability vectors), C = ``ensemble.n_outputs`` >= 2.
    learning_rate : float
    n_steps : int
    record_steps : sequence of int, optional
        Steps (0..n_steps) at which logits, loss and the FIMs' largest eigenvalues are recorded (default: all).

    Examples
    --------
    >>> import torch
    >>> from meanfield import Network
    >>> from meanfield.validation import sample_ensemble, train_gd_cross_entropy
    >>> ens = sample_ensemble(Network("tanh", 2, 1.5, 0.1), 32, 1, n_outputs=3, parameterization="ntk", device="cpu")
    >>> x = torch.randn(6, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    >>> y = torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0, 1, 2]]
    >>> run = train_gd_cross_entropy(ens, x, y, 2.0, n_steps=20, record_steps=[0, 20])
    >>> bool(run.loss[0, 1] < run.loss[0, 0])
    True
    """
    tr = track_fisher(ensemble, x, y, learning_rate, n_steps, loss="cross_entropy", record_steps=record_steps)
    N = tr.outputs.shape[2]
    return CrossEntropyRun(tr.learning_rate, tr.width, tr.steps, tr.outputs, tr.losses, tr.model_eigenvalues[..., -1],
                           tr.ntk_eigenvalues[..., -1] / N, tr.ntk0)
