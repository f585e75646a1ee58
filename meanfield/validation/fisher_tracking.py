r"""The NTK, the model FIM and the empirical FIM of finite torch networks tracked along gradient-descent training.

The finite-width twin of :mod:`meanfield.fisher_dynamics`. Every network of a
:class:`~meanfield.validation.networks.NetworkEnsemble` is trained by full-batch gradient descent on the MSE loss
``(1/2N) sum_n ||f(x_n) - y_n||^2`` or the softmax cross-entropy ``(1/N) sum_n CE(y_n, softmax(f(x_n)))``. At the
recorded steps the exact empirical NTK ``Theta = J J^T`` (``NC x NC``, layer by layer,
:func:`~meanfield.validation.measure.gram_layerwise`) gives, without forming any ``P x P`` matrix,

* the spectrum of ``Theta``;
* the non-zero spectrum of the model FIM ``(1/N) sum_n J_n^T Lambda_n J_n`` from its dual
  ``(1/N) Lambda^{1/2} Theta Lambda^{1/2}`` (``Lambda_n = I`` for MSE, ``Q_n = diag(g_n) - g_n g_n^T`` for
  cross-entropy);
* the non-zero spectrum of the empirical FIM ``(1/N) sum_n grad l_n grad l_n^T`` from its ``N x N`` dual
  ``(1/N) [e_n^T Theta_nm e_m]``, ``e_n = f_n - y_n`` (MSE) or ``g_n - y_n`` (cross-entropy).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np
import torch

from .._checks import check_int, check_positive
from .measure import _check_ensemble, _np, gram_layerwise
from .networks import NetworkEnsemble

__all__ = ["FisherTrack", "track_fisher"]


@dataclass(frozen=True)
class FisherTrack:
    r"""Spectra along gradient-descent training of every network (:func:`track_fisher`).

    Attributes
    ----------
    loss : str
    steps : ndarray (n_rec,)
    outputs : ndarray (S, n_rec, N, C)
    losses : ndarray (S, n_rec)
    ntk_eigenvalues, model_eigenvalues : ndarray (S, n_rec, N C)
        Ascending spectra of ``Theta`` and of the model FIM's dual.
    empirical_eigenvalues : ndarray (S, n_rec, N)
        Ascending spectrum of the empirical FIM's dual.
    ntk0 : ndarray (S, N, C, N, C)
        Empirical NTK at the first recorded step.
    """

    loss: str
    learning_rate: float
    width: int
    steps: np.ndarray
    outputs: np.ndarray
    losses: np.ndarray
    ntk_eigenvalues: np.ndarray
    model_eigenvalues: np.ndarray
    empirical_eigenvalues: np.ndarray
    ntk0: np.ndarray

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}


def _spectra(theta: torch.Tensor, f: torch.Tensor, y: torch.Tensor, loss: str) -> tuple:
    S, N, C = f.shape
    th = theta.reshape(S, N * C, N * C)
    ntk = torch.linalg.eigvalsh(0.5 * (th + th.transpose(1, 2)))
    if loss == "mse":
        model = ntk / N
        e = f - y
    else:
        g = torch.softmax(f, -1)
        Q = torch.diag_embed(g) - g[..., :, None] * g[..., None, :]
        w, V = torch.linalg.eigh(Q)
        R = (V * w.clamp_min(0).sqrt()[..., None, :]) @ V.transpose(-1, -2)
        B = torch.einsum("snij,snjmk,smkl->sniml", R, theta, R).reshape(S, N * C, N * C) / N
        model = torch.linalg.eigvalsh(0.5 * (B + B.transpose(1, 2)))
        e = g - y
    D = torch.einsum("snj,snjmk,smk->snm", e, theta, e) / N
    emp = torch.linalg.eigvalsh(0.5 * (D + D.transpose(1, 2)))
    return _np(ntk), _np(model), _np(emp)


def track_fisher(ensemble: NetworkEnsemble, x, y, learning_rate: float, n_steps: int = 100, *, loss: str = "mse",
                 record_steps=None) -> FisherTrack:
    r"""Train every network by full-batch gradient descent and record the NTK, model-FIM and empirical-FIM spectra.

    ``theta <- theta - eta grad L`` in the ensemble's parameterization, ``L`` the MSE ``(1/2N) sum ||f - y||^2`` or
    the cross-entropy ``(1/N) sum CE``. In the NTK regime (NTK parameterization, wide networks) the spectra follow
    :func:`meanfield.fisher_dynamics.fisher_along_training` up to ``O(1/sqrt(M))``.

    Parameters
    ----------
    ensemble : NetworkEnsemble
    x : tensor (N, M_0); y : tensor (N, C)
        Targets; for cross-entropy non-negative rows summing to 1 (C >= 2).
    learning_rate : float
    n_steps : int
    loss : {"mse", "cross_entropy"}
    record_steps : sequence of int, optional
        Steps (0..n_steps) at which everything is recorded (default: all).

    Examples
    --------
    >>> import torch
    >>> from meanfield import Network
    >>> from meanfield.validation import sample_ensemble, track_fisher
    >>> ens = sample_ensemble(Network("tanh", 2, 1.5, 0.1), 32, 1, parameterization="ntk", device="cpu")
    >>> gen = torch.Generator().manual_seed(0)
    >>> x = torch.randn(4, 32, dtype=torch.float64, generator=gen)
    >>> y = torch.randn(4, 1, dtype=torch.float64, generator=gen)
    >>> tr = track_fisher(ens, x, y, 1.0, n_steps=30, record_steps=[0, 30])
    >>> bool(tr.empirical_eigenvalues[0, 1, -1] < tr.empirical_eigenvalues[0, 0, -1])
    True
    """
    _check_ensemble(ensemble)
    if loss not in ("mse", "cross_entropy"):
        raise ValueError(f"loss must be 'mse' or 'cross_entropy', got {loss!r}")
    eta = float(check_positive("learning_rate", learning_rate, scalar=True))
    n_steps = check_int("n_steps", n_steps, 1)
    x = ensemble._check_input(x)
    if x.ndim != 2:
        raise ValueError("x must have shape (N, M_0) (the same inputs for every network)")
    N, C = x.shape[0], ensemble.n_outputs
    y = torch.as_tensor(y, dtype=ensemble.dtype, device=ensemble.device)
    if tuple(y.shape) != (N, C) or not bool(torch.all(torch.isfinite(y))):
        raise ValueError(f"y must be a finite array of shape (N, C) = ({N}, {C}), got {tuple(y.shape)}")
    if loss == "cross_entropy":
        if C < 2:
            raise ValueError("the ensemble needs n_outputs >= 2 (classes) for the softmax cross-entropy loss")
        if bool(torch.any(y < 0)) or not bool(torch.allclose(y.sum(1), torch.ones(N, dtype=y.dtype))):
            raise ValueError("y must have non-negative rows summing to 1 (one-hot labels) for cross_entropy")
    steps = list(range(n_steps + 1)) if record_steps is None else sorted({check_int("record_steps[i]", int(s), 0)
                                                                           for s in record_steps})
    if not steps or steps[-1] > n_steps:
        raise ValueError(f"record_steps must be non-empty and lie in [0, n_steps={n_steps}]")
    params = ensemble.parameters(requires_grad=True)
    rec: Dict[str, list] = {k: [] for k in ("f", "loss", "ntk", "model", "emp")}
    ntk0 = np.empty(0)
    for step in range(steps[-1] + 1):
        f = ensemble.apply(params, x)                                        # (S, N, C)
        if loss == "mse":
            L = 0.5 * (f - y).pow(2).sum((-1, -2)) / N
        else:
            L = -(y * torch.log_softmax(f, -1)).sum((-1, -2)) / N
        if not bool(torch.all(torch.isfinite(L))):
            raise FloatingPointError("track_fisher: the loss overflowed (learning_rate too large?)")
        if step in steps:
            with torch.no_grad():
                theta = gram_layerwise(ensemble, x, params=params)           # (S, N, C, N, C)
                if ntk0.size == 0:
                    ntk0 = _np(theta)
                a, b, c = _spectra(theta, f.detach(), y, loss)
            for k, v in zip(rec, (_np(f), _np(L), a, b, c)):
                rec[k].append(v)
        if step == steps[-1]:
            break
        grads = torch.autograd.grad(L.sum(), list(params.values()))
        with torch.no_grad():
            for p, g in zip(params.values(), grads):
                p -= eta * g
    out = [np.stack(rec[k], 1) for k in ("f", "loss", "ntk", "model", "emp")]
    return FisherTrack(loss, eta, ensemble.width, np.array(steps), out[0], out[1], out[2], out[3], out[4], ntk0)
