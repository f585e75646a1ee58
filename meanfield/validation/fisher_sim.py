r"""Eigenvalue spectra of the FIM, NTK and feature metric of one random finite network (numpy, float64).

The simulation side of :mod:`meanfield.fisher`: :func:`finite_width_fisher` draws one network of the given width,
back-propagates ``delta^l_k`` explicitly and forms the dual Gram matrix ``F* = J J^T / T`` whose spectrum the
theory's statistics describe (notation of :mod:`meanfield.fisher`). Numpy only (no torch), so it is also exported
at the top level as ``meanfield.finite_width_fisher``; the torch ensembles of :mod:`meanfield.validation.measure`
measure the same statistics batched over many networks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from typing import Union

from dataclasses import dataclass, fields

import numpy as np

from .._interop import short_repr
from ..fisher import _check_mean_subtraction, _sqrtm_psd, _validate
from ..network import Network

__all__ = ["FiniteWidthSpectrum", "finite_width_fisher"]


@dataclass(frozen=True)
class FiniteWidthSpectrum:
    """Non-zero spectrum of one random finite network (see :func:`finite_width_fisher`).

    ``eigenvalues`` (ascending, the ``C T`` eigenvalues of the dual), ``n_eigenvalues`` (``P`` for the FIM, ``D`` for
    the feature metric, ``C T`` for the NTK), ``mean_eigenvalue = Tr/n``, ``second_moment = Tr(.^2)/n``,
    ``lambda_max``, ``dual`` (the ``C T x C T`` matrix, rows ordered ``(k, t)``), ``logits`` (``T x C``),
    ``layer_eigenvalues`` (list over blocks).
    """

    eigenvalues: np.ndarray
    n_eigenvalues: int
    mean_eigenvalue: float
    second_moment: float
    lambda_max: float
    dual: np.ndarray
    logits: np.ndarray
    layer_eigenvalues: list
    layer_mean_eigenvalue: np.ndarray
    layer_second_moment: np.ndarray

    __repr__ = short_repr

    def to_dict(self) -> dict:
        return {fld.name: (getattr(self, fld.name).tolist() if isinstance(getattr(self, fld.name), np.ndarray)
                           else getattr(self, fld.name))
                for fld in fields(self) if fld.name not in ("dual", "layer_eigenvalues")}


def finite_width_fisher(network: Network, width: int, n_samples: int, n_outputs: int = 1,
                        parameterization: str = "standard", loss: str = "mse", metric: str = "fisher",
                        seed: Union[int, np.random.Generator, None] = None,
                        mean_subtraction: bool = False) -> FiniteWidthSpectrum:
    """Spectrum of the FIM / NTK / feature metric of one random network of the given width (numpy, float64).

    Draws ``W^l ~ N(0, sigma_w^2/M_{l-1})``, ``b^l ~ N(0, sigma_b^2)`` and ``x_t ~ N(0, I_{M_0})``, back-propagates
    ``delta^l_k`` explicitly for every output and sample, and forms the dual Gram matrix (:mod:`meanfield.fisher`): its
    eigenvalues are the non-zero eigenvalues of the ``P x P`` (or ``D x D``) matrix. Cost ``O(L C T M^2 + (C T)^3)``.

    Parameters
    ----------
    metric : {"fisher", "feature"}
        ``"fisher"``: ``F = J^T Q J / T`` (SP) or ``Theta = Q^1/2 J J^T Q^1/2`` (NTK parameterization);
        ``"feature"``: ``A`` of :func:`feature_metric_statistics`.
    seed : int, Generator or None
    mean_subtraction : bool
        Spectrum for the batch-mean-subtracted outputs ``f_k(x_t) - (1/T) sum_s f_k(x_s)``: every block of the dual
        is projected by ``I_C (x) (I_T - 1 1^T / T)`` (the mean subtraction is linear, so the Jacobian rows are
        projected; MSE only, ``n_samples >= 2``). ``n_eigenvalues`` is unchanged.

    Examples
    --------
    >>> from meanfield import Network, finite_width_fisher
    >>> sp = finite_width_fisher(Network("tanh", depth=2, weight_var=2.0, bias_var=0.1), 64, 8, 2, seed=0)
    >>> sp.eigenvalues.shape
    (16,)
    """
    M, T, C = _validate(network, width, n_samples, n_outputs, parameterization, loss)
    mean_subtraction = _check_mean_subtraction(mean_subtraction, loss, T)
    if metric not in ("fisher", "feature"):
        raise ValueError(f"metric must be 'fisher' or 'feature', got {metric!r}")
    rng = np.random.default_rng(seed)
    L = network.n_layers
    widths = [max(int(round(al * M)), 1) for al in network.alphas] + [C]
    sw, sb = network.weight_vars, network.bias_vars
    X = rng.standard_normal((T, widths[0]))
    Ws = [rng.standard_normal((widths[l + 1], widths[l])) * np.sqrt(sw[l] / widths[l]) for l in range(L)]
    bs = [rng.standard_normal(widths[l + 1]) * np.sqrt(sb[l]) for l in range(L)]
    H, U = [X], []
    for l in range(L):
        u = H[-1] @ Ws[l].T + bs[l]
        U.append(u)
        if l < L - 1:
            H.append(network.activations[l].phi(u))
    logits = U[-1]
    D = [None] * L   # delta^l, shape (C, T, M_l)
    D[L - 1] = np.broadcast_to(np.eye(C)[:, None, :], (C, T, C)).copy()
    for l in range(L - 2, -1, -1):
        D[l] = (D[l + 1] @ Ws[l + 1]) * network.activations[l].dphi(U[l])[None]
    blocks, ns = [], []
    for l in range(L):
        Dl = D[l].reshape(C * T, widths[l + 1])
        if metric == "fisher":
            if parameterization == "standard":
                G = H[l] @ H[l].T + 1.0
                ns.append(widths[l + 1] * widths[l] + widths[l + 1])
            else:
                G = sw[l] * (H[l] @ H[l].T) / widths[l] + sb[l]
                ns.append(C * T)
            blocks.append((Dl @ Dl.T) * np.tile(G, (C, C)) / (T if parameterization == "standard" else 1.0))
        else:
            Gh = Dl @ Ws[l]          # d f / d h^{l}, rows (k, t)
            blocks.append(Gh @ Gh.T / T)
            ns.append(widths[l])
    if loss == "cross_entropy":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        g = e / e.sum(axis=1, keepdims=True)
        Q = -g[:, :, None] * g[:, None, :]
        Q[:, np.arange(C), np.arange(C)] += g
        R = _sqrtm_psd(Q)                               # (T, C, C)
        # block-diagonal (over t) R acting on rows ordered (k, t)
        Rbig = np.zeros((C * T, C * T))
        for t in range(T):
            idx = np.arange(C) * T + t
            Rbig[np.ix_(idx, idx)] = R[t]
        blocks = [Rbig @ B @ Rbig for B in blocks]
    if mean_subtraction:
        proj = np.kron(np.eye(C), np.eye(T) - 1.0 / T)   # rows (k, t): per output, remove the mean over t
        blocks = [proj @ B @ proj for B in blocks]
    dual = sum(blocks)
    n_tot = int(sum(ns)) if (metric == "feature" or parameterization == "standard") else C * T
    ev = np.linalg.eigvalsh(dual)
    lay_ev = [np.linalg.eigvalsh(B) for B in blocks]
    return FiniteWidthSpectrum(
        eigenvalues=ev, n_eigenvalues=n_tot, mean_eigenvalue=float(np.trace(dual) / n_tot),
        second_moment=float(np.sum(dual * dual) / n_tot), lambda_max=float(ev[-1]), dual=dual, logits=logits,
        layer_eigenvalues=lay_ev,
        layer_mean_eigenvalue=np.array([np.trace(B) / n for B, n in zip(blocks, ns)]),
        layer_second_moment=np.array([np.sum(B * B) / n for B, n in zip(blocks, ns)]))
