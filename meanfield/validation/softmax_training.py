r"""Gradient descent on the softmax cross-entropy loss for finite torch networks, with the FIM tracked along training.

The finite-width twin of :mod:`meanfield.softmax_dynamics` (Karakida, Akaho & Amari 2021, Fig. 5). Every network of
a :class:`~meanfield.validation.networks.NetworkEnsemble` is trained by full-batch gradient descent on
``L = (1/N) sum_n CE(y_n, softmax(f(x_n)))``; at the recorded steps the empirical NTK ``Theta`` (``NC x NC``, exact,
layer by layer: :func:`~meanfield.validation.measure.gram_layerwise`) gives the largest eigenvalue of the softmax FIM
``F = (1/N) sum_n J_n^T Q_n J_n`` through its dual ``(1/N) Q^{1/2} Theta Q^{1/2}`` and that of the MSE FIM
``Theta / N``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._checks import check_int, check_positive
from .measure import _check_ensemble, _np, gram_layerwise
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


def _fisher_top(theta: torch.Tensor, f: torch.Tensor) -> tuple:
    """``lambda_max`` of ``(1/N) Q^{1/2} Theta Q^{1/2}`` and of ``Theta / N`` for every network."""
    S, N, C = f.shape
    g = torch.softmax(f, -1)
    Q = torch.diag_embed(g) - g[..., :, None] * g[..., None, :]
    w, V = torch.linalg.eigh(Q)
    R = (V * w.clamp_min(0).sqrt()[..., None, :]) @ V.transpose(-1, -2)       # (S, N, C, C)
    B = torch.einsum("snij,snjmk,smkl->sniml", R, theta, R).reshape(S, N * C, N * C) / N
    th = theta.reshape(S, N * C, N * C) / N
    top = torch.linalg.eigvalsh(0.5 * (B + B.transpose(1, 2)))[:, -1]
    mse = torch.linalg.eigvalsh(0.5 * (th + th.transpose(1, 2)))[:, -1]
    return _np(top), _np(mse)


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
    >>> x, y = torch.randn(6, 32, dtype=torch.float64), torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0, 1, 2]]
    >>> run = train_gd_cross_entropy(ens, x, y, 2.0, n_steps=20, record_steps=[0, 20])
    >>> bool(run.loss[0, 1] < run.loss[0, 0])
    True
    """
    _check_ensemble(ensemble)
    eta = float(check_positive("learning_rate", learning_rate, scalar=True))
    n_steps = check_int("n_steps", n_steps, 1)
    x = ensemble._check_input(x)
    if x.ndim != 2:
        raise ValueError("x must have shape (N, M_0) (the same inputs for every network)")
    N, C = x.shape[0], ensemble.n_outputs
    if C < 2:
        raise ValueError("the ensemble needs n_outputs >= 2 (classes) for the softmax cross-entropy loss")
    y = torch.as_tensor(y, dtype=ensemble.dtype, device=ensemble.device)
    if tuple(y.shape) != (N, C) or bool(torch.any(y < 0)) or not bool(torch.allclose(y.sum(1), torch.ones(N,
                                                                                        dtype=y.dtype))):
        raise ValueError(f"y must have shape (N, C) = ({N}, {C}) with non-negative rows summing to 1")
    steps = list(range(n_steps + 1)) if record_steps is None else sorted({check_int("record_steps[i]", int(s), 0)
                                                                           for s in record_steps})
    if not steps or steps[-1] > n_steps:
        raise ValueError(f"record_steps must be non-empty and lie in [0, n_steps={n_steps}]")
    params = ensemble.parameters(requires_grad=True)
    S = ensemble.n_seeds
    logits, losses, tops, mses = [], [], [], []
    ntk0 = None
    for step in range(n_steps + 1):
        f = ensemble.apply(params, x)                                        # (S, N, C)
        loss = -(y * torch.log_softmax(f, -1)).sum((-1, -2)) / N              # (S,)
        if not bool(torch.all(torch.isfinite(loss))):
            raise FloatingPointError("train_gd_cross_entropy: the loss overflowed (learning_rate too large?)")
        if step in steps:
            with torch.no_grad():
                theta = gram_layerwise(ensemble, x, params=params)           # (S, N, C, N, C)
                if step == 0:
                    ntk0 = _np(theta)
                top, mse = _fisher_top(theta, f.detach())
            logits.append(_np(f))
            losses.append(_np(loss))
            tops.append(top)
            mses.append(mse)
        if step == n_steps:
            break
        grads = torch.autograd.grad(loss.sum(), list(params.values()))
        with torch.no_grad():
            for p, g in zip(params.values(), grads):
                p -= eta * g
    if ntk0 is None:
        with torch.no_grad():
            ntk0 = _np(gram_layerwise(ensemble, x))
    return CrossEntropyRun(eta, ensemble.width, np.array(steps), np.stack(logits, 1), np.stack(losses, 1),
                           np.stack(tops, 1), np.stack(mses, 1), ntk0)
