r"""Finite random networks (torch) for the spectral theory of :mod:`meanfield.spectra`: eigenvalues of ``J J^T``, of
the conjugate kernel and NTK of ``n`` inputs, and of the single-input Fisher information, plus the distances
(Kolmogorov-Smirnov, Wasserstein-1) between an empirical spectrum and a predicted one. CPU by default, CUDA when
available (``device="auto"``); float64.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .networks import resolve_device, resolve_dtype

__all__ = ["jacobian_eigenvalues", "kernel_eigenvalues", "fisher_eigenvalues", "single_input_fisher_eigenvalues",
           "ks_distance", "wasserstein_distance"]


def _phi(act, x):
    return torch.from_numpy(np.asarray(act.phi(x.cpu().numpy()), dtype=np.float64)).to(x.device)


def _dphi(act, x):
    return torch.from_numpy(np.asarray(act.dphi(x.cpu().numpy()), dtype=np.float64)).to(x.device)


def _weight(n_out, n_in, weight_var, weights, gen, device):
    """sigma_w W / sqrt(n_in) (Gaussian) or sigma_w Q (Haar orthogonal, square)."""
    g = torch.randn(n_out, n_in, generator=gen, dtype=torch.float64, device="cpu").to(device)
    if weights == "gaussian":
        return math.sqrt(weight_var / n_in) * g
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r))[None, :]
    return math.sqrt(weight_var) * q


def jacobian_eigenvalues(network, weights: str, width: int, n_networks: int = 1, seed: int = 0, device=None,
                         batch: int = 16, dtype="float64"):
    """Eigenvalues of ``J J^T``, ``J = prod_l D_l W_l``, for ``n_networks`` random networks of ``width`` units, the
    input's pre-activation ``h^0 ~ N(0, q*)`` (so every layer sits at the fixed point). Returns an array
    ``(n_networks, width)``.

    The draws are made network by network from one generator seeded by ``seed`` (so the result does not depend on
    ``batch`` or ``dtype``: drawn in float64, then cast); the forward pass, the Jacobian products and the eigenvalues
    are computed for ``batch`` networks at once (batched matrix products: one kernel per layer for the whole batch on
    a GPU) in ``dtype`` ("float64" or "float32"; float32 eigenvalues carry an absolute error ~1e-7 lambda_max).
    """
    from ..spectra.jacobian import _check_network, _fixed_point_q
    from .networks import torch_activation

    _check_network(network)
    if not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
    dev, dt = resolve_device(device), resolve_dtype(dtype)
    act = network.activations[0]
    tact = torch_activation(act)
    phi: Any = tact.phi if tact.differentiable else (lambda x: _phi(act, x))
    dphi: Any = tact.dphi if tact.differentiable else (lambda x: _dphi(act, x))
    wv, bv = network.weight_vars[0], network.bias_vars[0]
    q = _fixed_point_q(network)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n_networks, batch):
        hs, Ws, bs = [], [], []
        for _ in range(min(batch, n_networks - start)):        # the draws of one network, in order
            hs.append(math.sqrt(q) * torch.randn(width, generator=gen, dtype=torch.float64).to(dev))
            layer = []
            for _l in range(network.depth):
                W = _weight(width, width, wv, weights, gen, dev)
                b = math.sqrt(bv) * torch.randn(width, generator=gen, dtype=torch.float64).to(dev)
                layer.append((W, b))
            Ws.append([w for w, _ in layer])
            bs.append([b for _, b in layer])
        h = torch.stack(hs).to(dt)                                           # (n, M)
        J = torch.eye(width, dtype=dt, device=dev).expand(h.shape[0], width, width)
        for l in range(network.depth):
            W = torch.stack([w[l] for w in Ws]).to(dt)
            h = torch.bmm(W, phi(h).unsqueeze(-1)).squeeze(-1) + torch.stack([b[l] for b in bs]).to(dt)
            J = torch.bmm(dphi(h).unsqueeze(-1) * W, J)
        out.append(torch.linalg.eigvalsh(torch.bmm(J, J.transpose(1, 2))).to("cpu", torch.float64).numpy())
    return np.concatenate(out)


def kernel_gradient_grams(network, n_samples: int, width: int, inputs: str = "gaussian", seed: int = 0, device=None,
                          spherical_readout: bool = False):
    """The layerwise Gram matrices of the NTK of one random network (the draws of :func:`kernel_eigenvalues`):
    ``G_l = x^{l T} x^l / N_l`` (l = 0..L, ``x^0`` the inputs) and the derivative Grams ``B_l = delta_l^T delta_l``
    (l = 1..L, ``delta_l = d f / d h^l``, N_l x n), so that
    ``Theta = sigma_w^2 G_L + sigma_b^2 1 1^T + sum_{l=1}^{L} (sigma_w^2 G_{l-1} + sigma_b^2 1 1^T) o B_l``.
    Returns ``(G, B)``: lists of n x n float64 tensors (on ``device``), ``B[l - 1] = B_l``. Used to measure which
    parts of the NTK are O(1) in operator norm (docs/spectra.md, section 2: offsets below the top hidden layer)."""
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    wv = network.weight_vars[0]
    if len(set(network.bias_vars)) != 1:
        raise ValueError("network.bias_var must be the same for every layer")
    widths = [max(1, int(round(a * width))) for a in network.alphas]
    d, n = widths[0], n_samples
    if inputs == "orthonormal":
        if d < n:
            raise ValueError("orthonormal inputs need input dimension >= n_samples")
        Qm, _ = torch.linalg.qr(torch.randn(d, n, generator=gen, dtype=torch.float64))
        X = (math.sqrt(d) * Qm).to(dev)                       # columns of norm^2 = d
    else:
        X = torch.randn(d, n, generator=gen, dtype=torch.float64).to(dev)
    xs, hs, Ws, v = _forward_draws(network, widths, X, gen, dev, spherical_readout)
    G = [x.T @ x / x.shape[0] for x in xs]
    # backward: delta_l = d f / d h^l (N_l x n)
    B = [None] * network.depth
    delta = math.sqrt(wv / widths[-1]) * v[:, None] * _dphi(network.activations[-1], hs[-1])
    for l in range(network.depth - 1, -1, -1):
        B[l] = delta.T @ delta
        if l > 0:
            delta = _dphi(network.activations[l - 1], hs[l - 1]) * (math.sqrt(wv / widths[l]) * Ws[l].T @ delta)
    return G, B


def _forward_draws(network, widths, X, gen, dev, spherical_readout):
    """Forward pass of one random network (NTK parameterization, weights drawn layer by layer from ``gen``, a bias
    drawn only where ``bias_var > 0`` so that bias-free networks keep their draws) on the columns of ``X``, then its
    readout weights: ``(xs, hs, Ws, v)`` with ``xs[l]`` the post-activations (``xs[0] = X``), ``hs`` the
    pre-activations, ``Ws`` the raw weights. ``spherical_readout``: ``|v|^2 = N_L`` exactly."""
    wv, bv = network.weight_vars[0], network.bias_vars[0]
    xs, hs, Ws = [X], [], []
    for l in range(network.depth):
        W = torch.randn(widths[l + 1], widths[l], generator=gen, dtype=torch.float64).to(dev)
        h = math.sqrt(wv / widths[l]) * W @ xs[-1]
        if bv > 0:
            h = h + math.sqrt(bv) * torch.randn(widths[l + 1], 1, generator=gen, dtype=torch.float64).to(dev)
        Ws.append(W)
        hs.append(h)
        xs.append(_phi(network.activations[l], h))
    v = torch.randn(widths[-1], generator=gen, dtype=torch.float64).to(dev)
    if spherical_readout:
        v = v * math.sqrt(widths[-1]) / torch.linalg.norm(v)
    return xs, hs, Ws, v


def kernel_eigenvalues(network, n_samples: int, width: int, inputs: str = "gaussian", seed: int = 0, device=None,
                       spherical_readout: bool = False):
    """Eigenvalues of the conjugate kernel ``G_L`` and of the NTK ``Theta`` (NTK parameterization, scalar readout,
    ``h^l = sigma_w W^l x^{l-1} / sqrt(N_{l-1}) + sigma_b b^l``, the readout ``sigma_w v . x^L / sqrt(N_L) + sigma_b b``)
    of one random network with hidden widths ``alpha_l width`` on ``n_samples`` inputs ``x ~ N(0, I_d)``
    (``d = alpha_0 width``) or orthonormal ones. Returns ``(ck, ntk)``.

    ``spherical_readout``: rescale the Gaussian readout weights to ``|v|^2 = N_L`` exactly. Every gradient term of the
    NTK is proportional to ``|v|^2 / N_L`` to leading order, whose O(N_L^{-1/2}) fluctuation scales the whole bulk and
    dominates distances at moderate widths; the limit law is the same."""
    wv, bv = network.weight_vars[0], network.bias_vars[0]
    G, B = kernel_gradient_grams(network, n_samples, width, inputs=inputs, seed=seed, device=device,
                                 spherical_readout=spherical_readout)
    ck = torch.linalg.eigvalsh(G[-1]).cpu().numpy()
    theta = wv * G[-1] + bv                                   # readout layer (B = 1 1^T)
    for l in range(network.depth - 1, -1, -1):
        theta = theta + (wv * G[l] + bv) * B[l]
    ntk = torch.linalg.eigvalsh(theta).cpu().numpy()
    return ck, ntk


def fisher_eigenvalues(network, n_samples: int, width: int, seed: int = 0, device=None,
                       spherical_readout: bool = False):
    """Non-zero eigenvalues of the empirical FIM ``F = J^T J / n`` (standard parameterization: ``W^l`` of variance
    ``sigma_w^2 / N_{l-1}``, biases of variance ``sigma_b^2``, scalar linear readout; the convention of
    :func:`meanfield.fisher_statistics`) of one random network with hidden widths ``alpha_l width`` on ``n_samples``
    inputs ``x ~ N(0, I_d)``: the eigenvalues of ``J J^T / n = (1/n) [N_L G_L + 1 1^T + sum_l (N_{l-1} G_{l-1} +
    1 1^T) o B_l]`` (``B_l = delta_l^T delta_l``, ``delta_l = df / dh^l``). ``spherical_readout`` as in
    :func:`kernel_eigenvalues`. Returns an array of ``n_samples`` eigenvalues."""
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    wv = network.weight_vars[0]
    if len(set(network.weight_vars)) != 1 or len(set(network.bias_vars)) != 1:
        raise ValueError("network.weight_var and network.bias_var must be the same for every layer")
    widths = [max(1, int(round(a * width))) for a in network.alphas]
    n = n_samples
    X = torch.randn(widths[0], n, generator=gen, dtype=torch.float64).to(dev)
    xs, hs, Ws, v = _forward_draws(network, widths, X, gen, dev, spherical_readout)
    jj = xs[-1].T @ xs[-1] + 1.0                                      # readout weights and bias
    delta = math.sqrt(wv / widths[-1]) * v[:, None] * _dphi(network.activations[-1], hs[-1])
    for l in range(network.depth - 1, -1, -1):
        jj = jj + (xs[l].T @ xs[l] + 1.0) * (delta.T @ delta)
        if l > 0:
            delta = _dphi(network.activations[l - 1], hs[l - 1]) * (math.sqrt(wv / widths[l]) * Ws[l].T @ delta)
    return torch.linalg.eigvalsh(jj / n).cpu().numpy()


def single_input_fisher_eigenvalues(network, weights: str, width: int, seed: int = 0, device=None):
    """Eigenvalues of ``Theta_L = J J^T`` (M x M) for one input at the fixed point, output layer of width M, NTK
    parameterization: ``Theta_{l+1} = (sigma_w^2 |phi(h^l)|^2 / M + sigma_b^2) I + W D_l Theta_l D_l W^T``."""
    from ..spectra.jacobian import _check_network, _fixed_point_q

    _check_network(network)
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    act = network.activations[0]
    wv, bv = network.weight_vars[0], network.bias_vars[0]
    q = _fixed_point_q(network, any_q_if_homogeneous=False)
    M = width
    z = torch.randn(M, generator=gen, dtype=torch.float64)
    x = _phi(act, (math.sqrt(q * M) * z / torch.linalg.norm(z)).to(dev))      # empirical q of the input exactly q*
    W = _weight(M, M, wv, weights, gen, dev)
    h = W @ x + math.sqrt(bv) * torch.randn(M, generator=gen, dtype=torch.float64).to(dev)
    theta = (wv * float(x @ x) / M + bv) * torch.eye(M, dtype=torch.float64, device=dev)
    for _l in range(network.depth):
        x = _phi(act, h)
        D = _dphi(act, h)
        W = _weight(M, M, wv, weights, gen, dev)
        theta = (wv * float(x @ x) / M + bv) * torch.eye(M, dtype=torch.float64, device=dev) + \
            (W * D[None, :]) @ theta @ (W * D[None, :]).T
        h = W @ x + math.sqrt(bv) * torch.randn(M, generator=gen, dtype=torch.float64).to(dev)
    return torch.linalg.eigvalsh(theta).cpu().numpy()


def ks_distance(eigenvalues, spectrum) -> float:
    """sup_x |F_empirical(x) - F_theory(x)| (Kolmogorov-Smirnov) against ``spectrum.cdf``, both one-sided limits
    compared at every eigenvalue. Eigenvalues within 1e-9 (relative to the spectrum's scale) of an atom are placed on
    it. Eigenvalues below 1e-12 of the largest one are rounding noise of ``eigvalsh`` (absolute error ~1e-16 of the
    norm): they are compared as one block at that floor, with the theory's mass below it (its atom at 0 included)."""
    e = np.sort(np.asarray(eigenvalues, dtype=float).ravel())
    scale = max([abs(spectrum.edges[1])] + [abs(a) for a, _ in spectrum.atoms] + [1e-300])
    floor = 1e-12 * max(float(np.max(np.abs(e))), 1e-300)
    for a, _ in spectrum.atoms:
        if abs(a) > floor:
            e = np.where(np.abs(e - a) <= 1e-9 * scale, a, e)
    e = np.where(e < floor, floor, e)
    e = np.sort(e)
    n = len(e)
    xs = np.unique(e)
    fe_r = np.searchsorted(e, xs, side="right") / n
    fe_l = np.searchsorted(e, xs, side="left") / n
    ft_r = spectrum.cdf(xs)
    ft_l = ft_r.copy()          # left limits: the theory jumps only at its atoms
    for a, m in spectrum.atoms:
        ft_l = ft_l - m * (xs == a)
    ft_l = np.where(xs == floor, 0.0, ft_l)     # the floor block: everything below it on both sides
    return float(max(np.max(np.abs(fe_r - ft_r)), np.max(np.abs(fe_l - ft_l))))


def wasserstein_distance(eigenvalues, spectrum) -> float:
    """W_1 = int |F_empirical - F_theory| dx over the range of both."""
    e = np.sort(np.asarray(eigenvalues, dtype=float).ravel())
    xs = np.union1d(e, spectrum.x)
    xs = np.union1d(xs, [a for a, _ in spectrum.atoms])
    Fe = np.searchsorted(e, xs, side="right") / len(e)
    Ft = spectrum.cdf(xs)
    return float(np.sum(np.abs(Fe - Ft)[:-1] * np.diff(xs)))
