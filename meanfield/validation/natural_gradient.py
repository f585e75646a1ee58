r"""Natural gradient descent on finite torch networks: exact NGD and its layer-wise, K-FAC and unit-wise approximations.

The finite-width twin of :mod:`meanfield.natural_gradient` (Karakida & Osawa, NeurIPS 2020). For every network of a
:class:`~meanfield.validation.networks.NetworkEnsemble` (S networks at once) and MSE loss
``L = (1/2N) sum_n ||f(x_n) - y_n||^2``, one step is

    theta <- theta - eta (G~ + rho I)^{-1} grad L,       grad L = J^T r / N,   r = f(X) - y,

computed in the dual (``N C``-sized) form: the ``P x P`` Fisher matrix is never formed. Per weight layer ``l`` with
inputs ``h = h^{l-1}`` (``S, N, M_{l-1}``), back-propagated ``delta = d f_k / d u^l`` (``S, N, C, M_l``) and the
parameterization's scales ``s_w, s_b`` (``u^l = s_w W h + s_b b``):

* the layer Jacobian ``J_l`` has rows ``(s_w delta_{n,k} (x) h_n, s_b delta_{n,k})``; ``K^h = s_w^2 h h^T + s_b^2``,
  ``K^delta = [delta_{n,k} . delta_{m,k'}]`` and ``J_l J_l^T = K^delta o K^h``;
* ``gd``: ``Delta theta = -eta J^T r / N``;
* ``full``: ``Delta theta = -eta J^T (J J^T + N rho I)^+ r`` (push-through identity), ``J J^T = sum_l J_l J_l^T``;
* ``block_diagonal``: ``Delta theta_l = -eta J_l^T (J_l J_l^T + N rho I)^+ r``;
* ``kfac``: ``Delta W~_l = -eta (B + eps)^{-1} grad_W~ L (A + eps)^{-1}`` with ``A = H~ H~^T / N``,
  ``B = D D^T / N`` (``D`` the ``M_l x NC`` matrix of the ``delta_{n,k}``), ``eps = sqrt(rho)``; by push-through
  ``Delta W~_l = -eta N D (K^delta + N eps)^+ R (K^h + N eps)^+ H~^T``, ``R_{(m,k),n} = r_{n,k} [m = n]``;
* ``unit_wise`` (``C = 1``): per unit ``i`` of layer ``l``, ``Delta theta_{l,i} = -eta J_{l,i}^T (J_{l,i} J_{l,i}^T +
  N rho I)^+ r`` with ``J_{l,i} J_{l,i}^T = (delta_i delta_i^T) o K^h``.
  Its pre-activations move by ``Delta u_{., i} = -eta K^h D_i (D_i K^h D_i + N rho I)^+ r`` (``D_i = diag(delta_i)``):
  unbounded as ``delta_{n,i} -> 0`` at ``rho = 0``, ``O(1/sqrt M)`` for ``rho = rho_tilde / M`` -- the regime in
  which these networks follow :func:`meanfield.natural_gradient.ngd_kernel`'s unit-wise prediction.

``+`` is the pseudo-inverse (eigenvalues at or below ``10 n eps_machine lambda_max`` dropped), the ``rho -> 0``
limit. The measured function-space kernel ``Theta_bar = J (G~ + rho I)^{-1} J^T / N`` at initialization is the
response of the outputs to one step with a unit residual, computed by applying the same update to the basis.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from .._checks import check_int, check_nonneg, check_positive
from ..natural_gradient import METHODS
from .measure import _check_ensemble, _np
from .networks import NetworkEnsemble

__all__ = ["NGDRun", "train_ngd"]


def _pinv_apply(K: torch.Tensor, R: torch.Tensor, reg: float) -> torch.Tensor:
    """``(K + reg I)^+ R`` for batched symmetric PSD ``K`` (..., n, n) and ``R`` (..., n, b)."""
    n = K.shape[-1]
    lam, U = torch.linalg.eigh(0.5 * (K + K.transpose(-1, -2)) + reg * torch.eye(n, dtype=K.dtype, device=K.device))
    tol = 10 * n * torch.finfo(K.dtype).eps * lam.abs().amax(-1, keepdim=True).clamp_min(1e-300)
    inv = torch.where(lam > tol, 1.0 / torch.where(lam > tol, lam, torch.ones_like(lam)), torch.zeros_like(lam))
    return U @ (inv.unsqueeze(-1) * (U.transpose(-1, -2) @ R))


class _Step:
    """Layer factors of every network at the current parameters and the NGD update rules (see the module doc)."""

    def __init__(self, ensemble: NetworkEnsemble, x, params, method, rho):
        self.ens, self.method, self.rho = ensemble, method, rho
        us, hs = ensemble.forward_pass(x, params)
        deltas = ensemble.backward_pass(us, params)
        self.f = us[-1]
        self.S, self.N, self.C = self.f.shape
        self.sw, self.sb = ensemble._scales()
        self.h, self.d, self.kh, self.kd = [], [], [], []
        S, N, C = self.S, self.N, self.C
        for l in range(ensemble.n_layers):
            h, d = hs[l], deltas[l]
            self.h.append(h)
            self.d.append(d)
            self.kh.append(self.sw[l] ** 2 * h @ h.transpose(1, 2) + self.sb[l] ** 2)          # (S, N, N)
            df = d.reshape(S, N * C, -1)
            self.kd.append((df @ df.transpose(1, 2)).reshape(S, N, C, N, C))                   # (S, N, C, N, C)
        self.gram = [kd * kh[:, :, None, :, None] for kd, kh in zip(self.kd, self.kh)]

    # coefficients: Z[s, b, m, k, n] with Delta W = -eta s_w sum Z delta_{m,k} h_n^T (per layer), for residuals r
    def coefficients(self, r: torch.Tensor) -> list:
        """``r`` (S, B, N, C) -> per layer ``Z`` (S, B, N, C, N) (or for unit_wise ``V`` (S, B, M_l, N))."""
        S, N, C = self.S, self.N, self.C
        B = r.shape[1]
        L = len(self.h)
        eye = torch.eye(N, dtype=r.dtype, device=r.device)

        def diag_z(V):   # V (S, B, N, C) -> Z[m, k, n] = V[m, k] [m = n]
            return V.unsqueeze(-1) * eye[None, None, :, None, :]

        rf = r.reshape(S, B, N * C).transpose(1, 2)          # (S, NC, B)
        if self.method == "gd":
            return [diag_z(r / N)] * L
        if self.method == "full":
            G = sum(self.gram).reshape(S, N * C, N * C)
            V = _pinv_apply(G, rf, N * self.rho).transpose(1, 2).reshape(S, B, N, C)
            return [diag_z(V)] * L
        if self.method == "block_diagonal":
            out = []
            for g in self.gram:
                V = _pinv_apply(g.reshape(S, N * C, N * C), rf, N * self.rho).transpose(1, 2).reshape(S, B, N, C)
                out.append(diag_z(V))
            return out
        if self.method == "kfac":
            eps = math.sqrt(self.rho)
            out = []
            for kh, kd in zip(self.kh, self.kd):
                kd_inv = _pinv_apply(kd.reshape(S, N * C, N * C),
                                     torch.eye(N * C, dtype=r.dtype, device=r.device).expand(S, -1, -1), N * eps)
                kh_inv = _pinv_apply(kh, eye.expand(S, -1, -1), N * eps)
                kd_inv = kd_inv.reshape(S, N, C, N, C)
                out.append(N * torch.einsum("smkpq,sbpq,spn->sbmkn", kd_inv, r, kh_inv))
            return out
        # unit_wise (C = 1): per unit i, A_i = (d_i d_i^T) o K^h
        out = []
        for d, kh in zip(self.d, self.kh):
            di = d[:, :, 0, :].transpose(1, 2)                                  # (S, M, N)
            A = di[:, :, :, None] * di[:, :, None, :] * kh[:, None]               # (S, M, N, N)
            V = _pinv_apply(A, rf[:, None].expand(-1, A.shape[1], -1, -1), N * self.rho)   # (S, M, N, B)
            out.append(V.permute(0, 3, 1, 2))                                     # (S, B, M, N)
        return out

    def updates(self, coefs: list) -> list:
        """Per layer ``(dW, db)`` (without ``-eta``) for a single residual (B = 1)."""
        out = []
        for l, (Z, h, d) in enumerate(zip(coefs, self.h, self.d)):
            if self.method == "unit_wise":
                w = Z[:, 0] * d[:, :, 0, :].transpose(1, 2)                     # (S, M, N): V_{i,n} delta_{n,i}
                dW = self.sw[l] * torch.einsum("sin,snj->sij", w, h)
                db = self.sb[l] * w.sum(-1)
            else:
                Dz = torch.einsum("smkn,smki->sni", Z[:, 0], d)                  # (S, N, M_l): sum_{m,k} Z delta
                dW = self.sw[l] * torch.einsum("sni,snj->sij", Dz, h)
                db = self.sb[l] * Dz.sum(1)
            out.append((dW, db))
        return out

    def response(self, coefs: list) -> torch.Tensor:
        """Change of the training outputs per unit ``-eta``: ``(J Delta theta)`` for each residual, (S, B, N, C)."""
        tot: Any = 0
        for l, Z in enumerate(coefs):
            if self.method == "unit_wise":
                di = self.d[l][:, :, 0, :]                                         # (S, N, M)
                w = Z * di.transpose(1, 2)[:, None]                                # (S, B, M, N)
                tot = tot + torch.einsum("spi,sbin,snp->sbp", di, w, self.kh[l]).unsqueeze(-1)
            else:
                tot = tot + torch.einsum("spqmk,sbmkn,snp->sbpq", self.kd[l], Z, self.kh[l])
        return tot


@dataclass(frozen=True)
class NGDRun:
    r"""NGD (or GD) training of every network of an ensemble (:func:`train_ngd`).

    Attributes
    ----------
    method : str
    damping : float
    learning_rate : float
    width : int
    train : ndarray (S, n_steps + 1, N, C)
        ``f_t(X)``.
    test : ndarray (S, n_steps + 1, N', C) or None
    loss : ndarray (S, n_steps + 1)
        ``(1/2N) sum_n ||f_t(x_n) - y_n||^2``.
    kernel0 : ndarray (S, N C, N C)
        Measured ``Theta_bar = J (G~ + rho I)^{-1} J^T / N`` at initialization (rows and columns ``(n, k)``).
    """

    method: str
    damping: float
    learning_rate: float
    width: int
    train: np.ndarray
    test: Optional[np.ndarray]
    loss: np.ndarray
    kernel0: np.ndarray

    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}


def train_ngd(ensemble: NetworkEnsemble, x, y, learning_rate: float, n_steps: int = 10, *, method: str = "full",
              damping: float = 0.0, x_test=None) -> NGDRun:
    r"""Train every network of ``ensemble`` by NGD with the exact or an approximate Fisher matrix (or by GD).

    See the module docstring for the update of each ``method``; Karakida & Osawa (NeurIPS 2020) predict, in the NTK
    regime, ``f_t - y = (I - eta Theta_bar)^t (f_0 - y)`` with the infinite-width ``Theta_bar`` of
    :func:`meanfield.natural_gradient.ngd_kernel` (use the ensemble in the ``"ntk"`` parameterization for that
    comparison); the finite network departs from it by ``O(1/sqrt(M))`` -- for ``unit_wise`` only with a damping
    ``rho = rho_tilde / M`` (at ``rho = 0`` the units with small back-propagated ``delta`` leave the linear regime).

    Parameters
    ----------
    ensemble : NetworkEnsemble
    x : tensor (N, M_0); y : tensor (N, C)
    learning_rate : float
        ``eta > 0``.
    n_steps : int
    method : {"gd", "full", "block_diagonal", "kfac", "unit_wise"}
    damping : float
        ``rho >= 0`` (K-FAC: ``sqrt(rho)`` on each factor); 0 is the pseudo-inverse.
    x_test : tensor (N', M_0), optional
        Inputs at which the outputs are also recorded.

    Examples
    --------
    >>> import torch
    >>> from meanfield import Network
    >>> from meanfield.validation import sample_ensemble, train_ngd
    >>> ens = sample_ensemble(Network("tanh", 2, 1.5, 0.1), 64, 1, parameterization="ntk", device="cpu")
    >>> gen = torch.Generator().manual_seed(0)
    >>> x = torch.randn(4, 64, dtype=torch.float64, generator=gen)
    >>> y = torch.randn(4, 1, dtype=torch.float64, generator=gen)
    >>> run = train_ngd(ens, x, y, 1.0, n_steps=2, method="full")
    >>> bool(run.loss[0, 1] < 1e-2 * run.loss[0, 0])     # one exact NGD step at eta = 1 nearly interpolates
    True
    """
    _check_ensemble(ensemble)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    rho = float(check_nonneg("damping", damping, scalar=True))
    if method == "gd" and rho > 0:
        raise ValueError("damping must be 0 for method='gd' (plain gradient descent has no Fisher matrix to damp)")
    eta = float(check_positive("learning_rate", learning_rate, scalar=True))
    n_steps = check_int("n_steps", n_steps, 1)
    x = ensemble._check_input(x)
    if x.ndim != 2:
        raise ValueError("x must have shape (N, M_0) (the same inputs for every network)")
    N, C = x.shape[0], ensemble.n_outputs
    y = torch.as_tensor(y, dtype=ensemble.dtype, device=ensemble.device)
    if tuple(y.shape) != (N, C):
        raise ValueError(f"y must have shape (N, C) = ({N}, {C}), got {tuple(y.shape)}")
    if not bool(torch.all(torch.isfinite(y))):
        raise ValueError("y must be finite")
    if method == "unit_wise" and C != 1:
        raise ValueError("method='unit_wise' needs n_outputs = 1")
    xt = None if x_test is None else ensemble._check_input(x_test)
    params = ensemble.parameters()
    S = ensemble.n_seeds
    trains, tests = [], []
    kernel0 = np.empty(0)
    for step in range(n_steps + 1):
        st = _Step(ensemble, x, params, method, rho)
        trains.append(st.f)
        if xt is not None:
            tests.append(ensemble.apply(params, xt).detach())
        if step == 0:   # measured Theta_bar: the response to the unit residuals e_(n,k)
            basis = torch.eye(N * C, dtype=x.dtype, device=x.device).reshape(N * C, N, C).expand(S, -1, -1, -1)
            kernel0 = _np(st.response(st.coefficients(basis)).reshape(S, N * C, N * C).transpose(1, 2))
        if step == n_steps:
            break
        r = (st.f - y).unsqueeze(1)
        with torch.no_grad():
            for l, (dW, db) in enumerate(st.updates(st.coefficients(r)), start=1):
                params[f"W{l}"] -= eta * dW
                params[f"b{l}"] -= eta * db
    train = _np(torch.stack(trains, 1))
    loss = 0.5 * ((train - _np(y)) ** 2).sum((-1, -2)) / N
    if not np.all(np.isfinite(loss)):
        raise FloatingPointError("train_ngd: the outputs overflowed (learning_rate too large for this method?)")
    return NGDRun(method, rho, eta, ensemble.width, train, None if xt is None else _np(torch.stack(tests, 1)), loss,
                  kernel0)
