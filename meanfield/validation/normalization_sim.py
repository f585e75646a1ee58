r"""FIM spectrum of one random finite network with batch / layer normalization (torch autograd, float64).

The simulation side of :mod:`meanfield.normalization` and of ``fisher_statistics(..., mean_subtraction=True)``:
the Jacobian ``J`` (``C T x P``) of the (optionally mean-subtracted) outputs of the whole batch with respect to all
parameters comes from ``torch.func.jacrev`` on the batched forward pass -- batch normalization couples the samples,
so the per-sample back-propagation of :func:`meanfield.finite_width_fisher` does not apply -- and the spectrum is
that of the dual ``J J^T / T``.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import numpy as np
import torch

from .._checks import check_int
from .._interop import short_repr
from ..fisher import _validate
from ..network import Network
from .networks import layer_widths, torch_activation

__all__ = ["NormalizedSpectrum", "normalized_fisher_spectrum"]

_NORMALIZATIONS = (None, "batch", "layer")


@dataclass(frozen=True)
class NormalizedSpectrum:
    """Spectrum of ``F* = J J^T / T`` of one network (see :func:`normalized_fisher_spectrum`).

    ``eigenvalues`` (ascending, ``C T``), ``n_params`` (P), ``mean_eigenvalue = Tr F / P``,
    ``second_moment = Tr F^2 / P``, ``lambda_max``, ``batch_mean_bound = 1 + sum_i mu_i^2`` (``mu_i`` the batch mean of
    the last hidden activation: the exact lower bound of :func:`meanfield.normalization.batch_norm_lambda_max_bound`
    when ``normalization="batch"``).
    """

    width: int
    n_samples: int
    n_outputs: int
    normalization: Optional[str]
    mean_subtraction: bool
    n_params: int
    eigenvalues: np.ndarray
    mean_eigenvalue: float
    second_moment: float
    lambda_max: float
    batch_mean_bound: float

    __repr__ = short_repr

    def to_dict(self) -> dict:
        return {f.name: (getattr(self, f.name).tolist() if isinstance(getattr(self, f.name), np.ndarray)
                         else getattr(self, f.name)) for f in fields(self)}


def normalized_fisher_spectrum(network: Network, width: int, n_samples: int, n_outputs: int = 1, *,
                               normalization: Optional[str] = None, mean_subtraction: bool = False,
                               seed: int = 0) -> NormalizedSpectrum:
    r"""FIM spectrum (MSE, standard parameterization) of one random network with normalized hidden layers.

    ``W^l ~ N(0, sigma_{w,l}^2 / M_{l-1})``, ``b^l ~ N(0, sigma_{b,l}^2)``, inputs ``x_t ~ N(0, I)``; in every hidden
    layer the pre-activation ``u^l`` is normalized before the activation (no affine parameters):
    ``"batch"``: per unit over the batch, ``(u - mean_t u) / std_t u``; ``"layer"``: per input over the units; ``None``:
    not at all. ``mean_subtraction`` subtracts the batch mean of each output (batch normalization's mean subtraction in
    the last layer, Karakida et al. 2021 eq. 22). Cost: ``C T`` backward passes over ``P`` parameters (keep
    ``width <= ~512``).

    Parameters
    ----------
    network : Network
    width, n_samples, n_outputs : int
    normalization : {None, "batch", "layer"}
    mean_subtraction : bool
    seed : int

    Examples
    --------
    >>> from meanfield import Network
    >>> from meanfield.validation.normalization_sim import normalized_fisher_spectrum
    >>> sp = normalized_fisher_spectrum(Network("relu", 2, 2.0, 0.1), 32, 8, 2, normalization="batch")
    >>> sp.eigenvalues.shape, bool(sp.lambda_max >= sp.batch_mean_bound * (1 - 1e-9))
    ((16,), True)
    """
    if not isinstance(network, Network):
        raise TypeError(f"network must be a meanfield.Network, got {type(network).__name__}")
    M, T, C = _validate(network, width, n_samples, n_outputs, "standard", "mse")
    if normalization not in _NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {_NORMALIZATIONS}, got {normalization!r}")
    if not isinstance(mean_subtraction, (bool, np.bool_)):
        raise TypeError(f"mean_subtraction must be True or False, got {type(mean_subtraction).__name__}")
    if (normalization == "batch" or mean_subtraction) and T < 2:
        raise ValueError(f"n_samples must be >= 2 for batch statistics, got {T}")
    seed = check_int("seed", seed, 0)
    widths = layer_widths(network, M, C)
    if normalization == "layer" and min(widths[1:-1]) < 2:
        raise ValueError(f"width must give every hidden layer >= 2 units for layer normalization, got widths "
                         f"{widths[1:-1]}")
    L = network.n_layers
    acts = [torch_activation(a) for a in network.activations]
    if not all(a.differentiable for a in acts):
        raise ValueError("network must use built-in activations (custom ones are not differentiable by torch)")
    gen = torch.Generator().manual_seed(seed)
    dt = torch.float64
    x = torch.randn(T, widths[0], generator=gen, dtype=dt)
    params = {}
    for l in range(L):
        params[f"W{l}"] = torch.randn(widths[l + 1], widths[l], generator=gen, dtype=dt) * np.sqrt(
            network.weight_vars[l] / widths[l])
        params[f"b{l}"] = torch.randn(widths[l + 1], generator=gen, dtype=dt) * np.sqrt(network.bias_vars[l])

    def hidden(p):
        h = x
        for l in range(L - 1):
            u = h @ p[f"W{l}"].T + p[f"b{l}"]
            if normalization == "batch":
                u = (u - u.mean(0, keepdim=True)) / u.std(0, unbiased=False, keepdim=True)
            elif normalization == "layer":
                u = (u - u.mean(1, keepdim=True)) / u.std(1, unbiased=False, keepdim=True)
            h = acts[l].phi(u)
        return h

    def outputs(p):
        f = hidden(p) @ p[f"W{L - 1}"].T + p[f"b{L - 1}"]
        if mean_subtraction:
            f = f - f.mean(0, keepdim=True)
        return f

    jac = torch.func.jacrev(outputs)(params)
    J = torch.cat([j.reshape(T * C, -1) for j in jac.values()], dim=1)
    G = J @ J.T / T
    G = 0.5 * (G + G.T)
    P = int(J.shape[1])
    ev = torch.linalg.eigvalsh(G).numpy()
    if not np.all(np.isfinite(ev)):
        raise FloatingPointError("non-finite FIM eigenvalues (the normalized forward pass overflowed)")
    with torch.no_grad():
        mu = hidden(params).mean(0)
    return NormalizedSpectrum(width=M, n_samples=T, n_outputs=C, normalization=normalization,
                              mean_subtraction=bool(mean_subtraction), n_params=P, eigenvalues=ev,
                              mean_eigenvalue=float(torch.trace(G)) / P, second_moment=float((G * G).sum()) / P,
                              lambda_max=float(ev[-1]), batch_mean_bound=1.0 + float((mu ** 2).sum()))
