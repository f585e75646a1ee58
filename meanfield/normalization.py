r"""Largest FIM eigenvalue of wide networks with batch or layer normalization in the hidden layers.

Karakida, Akaho & Amari, "The normalization method for alleviating pathological sharpness in wide neural networks"
(NeurIPS 2019); docs/fisher_normalization.md. Notation of :mod:`meanfield.fisher`: ``L`` weight layers, widths
``M_l = alpha_l M``, ``T`` inputs ``x_t ~ N(0, I)``, ``C`` linear outputs, standard parameterization, MSE FIM
``F = J^T J / T`` whose largest eigenvalue without normalization is ``alpha M (kappa_1/T + (T-1)/T kappa_2)``.
Mean subtraction in the *last* layer is an option of :func:`meanfield.fisher_statistics` (it removes the ``O(M)``
outliers). Here the normalization sits in the *hidden* layers, on the pre-activations ``u^l`` (``l = 1..L-1``,
no affine parameters, i.e. ``gamma = 1, beta = 0`` as at initialization), and the readout is left alone:

* batch normalization (BN), over the batch of ``T`` inputs, unit by unit:
  ``uhat_i(t) = (u_i(t) - mean_s u_i(s)) / std_s u_i(s)``, then ``h = phi(uhat)``;
* layer normalization (LN), over the units, input by input:
  ``uhat_i(t) = (u_i(t) - mean_j u_j(t)) / std_j u_j(t)``.

Neither removes the ``O(M)`` largest eigenvalue:

**BN in the middle layers** (:func:`batch_norm_lambda_max_bound`). The Rayleigh quotient of ``F* = J J^T / T`` on
``v = e_k (x) 1_T / sqrt(T)`` restricted to the readout's parameters (a principal block of a PSD sum, so a lower
bound for the whole matrix) is ``1 + sum_i mu_i^2`` with ``mu_i = (1/T) sum_t h^{L-1}_i(t)`` the batch mean of the
last hidden layer, exactly, for every network:

    lambda_max(F) >= 1 + sum_{i=1}^{M_{L-1}} mu_i^2  ->  1 + alpha_{L-1} M E[mu^2]   (M -> inf),

where ``E[mu^2] = E[(mean_t phi(zhat_t))^2]`` and ``zhat`` is a standardized batch: at large width the ``T``
pre-activations of one unit are exchangeable Gaussians (common variance and covariance), so after BN ``zhat`` is
uniform on the sphere of radius ``sqrt(T)`` in ``1^perp``, whatever the layer's order parameters.
``E[mu^2] -> E[phi(z)]^2`` (``z ~ N(0, 1)``) as ``T -> inf``. So for an activation with non-zero Gaussian mean (ReLU:
``1/(2 pi)``) ``lambda_max >= alpha_{L-1} M E[phi(z)]^2 = O(M)``: BN in the middle layers leaves the pathological
sharpness (Karakida et al. 2019, sec. 4.2: a lower bound of order M).

**LN in the middle layers** (:func:`layer_norm_fisher_statistics`). At large width the per-input mean over units is
``O(1/sqrt(M))`` and the variance over units is the order parameter ``q_1^l``, so LN acts as the division
``u^l -> u^l / sqrt(s_l)`` with ``s_l = sigma_{w,l}^2 qhat_1^{l-1} + sigma_{b,l}^2`` (``qhat_1^0 = 1``;
``qhat_1^{l-1} = E[phi(z)^2]`` after a normalized layer); its Jacobian ``(I - 1 1^T/M - uhat uhat^T/M)/sqrt(s_l)``
differs from ``I/sqrt(s_l)`` by rank 2, an ``O(1/M)`` change of the ``delta`` overlaps. The network is therefore the
plain network with ``sigma_{w,l}^2 -> sigma_{w,l}^2 / s_l``, ``sigma_{b,l}^2 -> sigma_{b,l}^2 / s_l`` (so
``q_1^l = 1``), except that the gradient with respect to the original ``W^l, b^l`` carries an extra
``1/sqrt(s_l)``: its FIM block is the equivalent network's divided by ``s_l``. Hence

    kappa_i^LN = sum_l (alpha_{l-1}/alpha) qtilde_i^l qhat_i^{l-1} / s_l      (equivalent network's order parameters,
                                                                              s_L = 1 for the readout)
    lambda_max = alpha M (kappa_1^LN / T + (T-1)/T kappa_2^LN)  = O(M)        (C-fold)

and the mean ``C kappa_1^LN / M``, second moment ``alpha C (kappa_1^2/T + (T-1)/T kappa_2^2)`` as in
:func:`meanfield.fisher_statistics`: LN does not alleviate the sharpness either.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional

import numpy as np

from ._checks import check_int
from ._interop import short_repr
from .fisher import FisherStatistics, _validate, fisher_statistics
from .network import Network

__all__ = ["BatchNormBound", "batch_norm_lambda_max_bound", "layer_norm_fisher_statistics"]


@dataclass(frozen=True)
class BatchNormBound:
    r"""Lower bound on ``lambda_max(F)`` with batch normalization in the hidden layers (see
    :func:`batch_norm_lambda_max_bound`).

    Attributes
    ----------
    width, n_samples, n_outputs : int
        ``M``, ``T``, ``C``.
    last_hidden_width : int
        ``M_{L-1} = alpha_{L-1} M``.
    mean_square_batch_mean : float
        ``E[mu^2]``, ``mu = mean_t phi(zhat_t)`` with ``zhat`` a standardized batch of ``T`` (Monte Carlo).
    mean_square_batch_mean_stderr : float
        Its Monte-Carlo standard error.
    activation_mean_squared : float
        ``E[phi(z)]^2`` (``z ~ N(0, 1)``), the ``T -> inf`` limit of ``E[mu^2]`` (Gaussian quadrature).
    lambda_max_bound : float
        ``1 + M_{L-1} E[mu^2]``.
    lambda_max_bound_large_T : float
        ``1 + M_{L-1} E[phi(z)]^2``.
    unnormalized_lambda_max : float
        ``lambda_max`` of the same network without normalization (:func:`meanfield.fisher_statistics`), for reference.
    """

    network: Network
    width: int
    n_samples: int
    n_outputs: int
    last_hidden_width: int
    mean_square_batch_mean: float
    mean_square_batch_mean_stderr: float
    activation_mean_squared: float
    lambda_max_bound: float
    lambda_max_bound_large_T: float
    unnormalized_lambda_max: float

    __repr__ = short_repr

    def to_dict(self) -> dict:
        """Plain-Python dictionary (the network through ``Network.to_dict``)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "network"}
        d["network"] = self.network.to_dict()
        return d


def _check_plain_network(network, width, n_samples, n_outputs):
    if not isinstance(network, Network):
        raise TypeError(f"network must be a meanfield.Network, got {type(network).__name__}")
    if network.depth < 1:
        raise ValueError("network.depth must be >= 1: normalization acts on hidden layers")
    return _validate(network, width, n_samples, n_outputs, "standard", "mse")


def batch_norm_lambda_max_bound(network: Network, width: int, n_samples: int, n_outputs: int = 1, *,
                                n_mc: int = 20000, seed: int = 0) -> BatchNormBound:
    r"""Lower bound on the largest FIM eigenvalue with batch normalization in every hidden layer.

    Karakida, Akaho & Amari (NeurIPS 2019), batch normalization in the middle layers; docs/fisher_normalization.md.
    For every network (no large-width assumption) ``lambda_max(F) >= 1 + sum_i mu_i^2``, ``mu_i`` the batch mean of
    the last hidden activation ``h^{L-1}_i``; at large width this is

        lambda_max(F) >= 1 + alpha_{L-1} M E[mu^2],   E[mu^2] = E[(mean_t phi(zhat_t))^2]  ->  E[phi(z)]^2  (T -> inf)

    with ``zhat`` uniform on the sphere ``{sum_t zhat_t = 0, sum_t zhat_t^2 = T}`` (a batch after BN). The bound is
    ``O(M)`` whenever ``E[phi(z)] != 0``: BN in the middle layers leaves the ``O(M)`` outlier (unlike mean subtraction
    in the last layer, ``fisher_statistics(..., mean_subtraction=True)``).

    Parameters
    ----------
    network : Network
        The activation of the last hidden layer and ``alpha_{L-1}`` are used (weight/bias variances drop out: BN
        standardizes the pre-activations).
    width, n_samples, n_outputs : int
        ``M``, ``T`` (>= 2: BN needs a batch), ``C`` (the bound holds for each output).
    n_mc : int
        Monte-Carlo draws of ``zhat`` for ``E[mu^2]`` (relative standard error ~ ``sqrt(2 / n_mc)`` or better).
    seed : int

    Examples
    --------
    >>> from meanfield import Network
    >>> from meanfield.normalization import batch_norm_lambda_max_bound
    >>> b = batch_norm_lambda_max_bound(Network("relu", depth=2, weight_var=2.0, bias_var=0.1), 512, 64, n_mc=2000)
    >>> round(b.activation_mean_squared, 4)       # E[relu(z)]^2 = 1 / (2 pi)
    0.1592
    >>> b.lambda_max_bound > 0.15 * 512
    True
    """
    from .gaussian import gaussian_expectation

    M, T, C = _check_plain_network(network, width, n_samples, n_outputs)
    if T < 2:
        raise ValueError(f"n_samples must be >= 2 for batch normalization (a batch of one has no variance), got {T}")
    n_mc = check_int("n_mc", n_mc, 2)
    act = network.activations[-1]
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_mc, T))
    z -= z.mean(axis=1, keepdims=True)
    z /= z.std(axis=1, keepdims=True)
    mu2 = np.asarray(act.phi(z), dtype=np.float64).mean(axis=1) ** 2
    e_mu2 = float(mu2.mean())
    se = float(mu2.std(ddof=1) / np.sqrt(n_mc))
    mean_phi = float(np.asarray(gaussian_expectation(act.phi, 1.0), dtype=np.float64).reshape(-1)[0])
    m_last = max(int(round(network.alphas[-1] * M)), 1)
    lam0 = fisher_statistics(network, M, T, C).lambda_max
    return BatchNormBound(network=network, width=M, n_samples=T, n_outputs=C, last_hidden_width=m_last,
                          mean_square_batch_mean=e_mu2, mean_square_batch_mean_stderr=se,
                          activation_mean_squared=mean_phi ** 2, lambda_max_bound=1.0 + m_last * e_mu2,
                          lambda_max_bound_large_T=1.0 + m_last * mean_phi ** 2, unnormalized_lambda_max=lam0)


def _layer_norm_scales(network: Network) -> np.ndarray:
    """``s_l = sigma_{w,l}^2 qhat_1^{l-1} + sigma_{b,l}^2`` (pre-LN variance) of the hidden layers l = 1..L-1."""
    from .forward import length_map

    sw, sb = network.weight_vars, network.bias_vars
    s = np.empty(network.depth)
    qhat = 1.0                                           # inputs x ~ N(0, I): qhat_1^0 = 1
    for l in range(network.depth):
        s[l] = sw[l] * qhat + sb[l]
        if not s[l] > 0:
            raise ValueError(f"layer {l + 1} has zero pre-activation variance (weight_var = bias_var = 0): layer "
                             f"normalization is undefined")
        qhat = float(length_map(network.activations[l], 1.0, 1.0, 0.0))   # E[phi(z)^2] after LN
    return s


def layer_norm_fisher_statistics(network: Network, width: int, n_samples: int,
                                 n_outputs: int = 1) -> FisherStatistics:
    r"""FIM eigenvalue statistics (MSE, standard parameterization) with layer normalization in every hidden layer.

    Karakida, Akaho & Amari (NeurIPS 2019), layer normalization: ``lambda_max = O(M)``; derivation in the module
    docstring and docs/fisher_normalization.md. The statistics are those of :func:`meanfield.fisher_statistics` for
    the equivalent network (``sigma_{w,l}^2 / s_l``, ``sigma_{b,l}^2 / s_l``, ``s_l = sigma_{w,l}^2 qhat_1^{l-1} +
    sigma_{b,l}^2``) with each hidden layer's block divided by ``s_l``:

        kappa_i = sum_l (alpha_{l-1}/alpha) qtilde_i^l qhat_i^{l-1} / s_l,
        m_lambda = C kappa_1 / M,  s_lambda = alpha C (kappa_1^2/T + (T-1)/T kappa_2^2),
        lambda_max = alpha M (kappa_1/T + (T-1)/T kappa_2)            (C-fold).

    Returns
    -------
    FisherStatistics
        ``network`` is the original network; ``order_parameters`` are the equivalent network's (``q_1^l = 1`` in the
        hidden layers) and gain the key ``"layer_norm_scales"`` (``s_1..s_{L-1}``).

    Examples
    --------
    >>> from meanfield import Network
    >>> from meanfield.normalization import layer_norm_fisher_statistics
    >>> st = layer_norm_fisher_statistics(Network("relu", depth=2, weight_var=2.0, bias_var=0.1), 512, 16)
    >>> st.lambda_max > 10 * st.width * st.mean_eigenvalue    # an O(M) outlier
    True
    """
    M, T, C = _check_plain_network(network, width, n_samples, n_outputs)
    s = _layer_norm_scales(network)
    eq = Network(list(network.activations), depth=network.depth,
                 weight_var=[w / sl for w, sl in zip(network.weight_vars[:-1], s)] + [network.weight_vars[-1]],
                 bias_var=[b / sl for b, sl in zip(network.bias_vars[:-1], s)] + [network.bias_vars[-1]],
                 width_ratios=list(network.alphas))
    st = fisher_statistics(eq, M, T, C)
    inv = np.append(1.0 / s, 1.0)                        # block factor 1/s_l, readout 1
    a = np.asarray(st.alphas[:-1])
    lk1, lk2 = st.layer_kappa1 * inv, st.layer_kappa2 * inv
    k1 = float(np.sum(a * lk1) / st.alpha)
    k2 = float(np.sum(a * lk2) / st.alpha)
    mean = C * k1 / M
    second = st.alpha * C * (k1 ** 2 / T + (T - 1) / T * k2 ** 2)
    lmax = st.alpha * M * (k1 / T + (T - 1) / T * k2)
    bulk = st.alpha * M * (k1 - k2) / T if T > 1 else lmax
    op = dict(st.order_parameters)
    op["layer_norm_scales"] = s.tolist()
    return replace(st, network=network, kappa1=k1, kappa2=k2, mean_eigenvalue=float(mean), second_moment=float(second),
                   lambda_max=float(lmax), bulk_eigenvalue=float(bulk),
                   condition_number=float(lmax / bulk) if bulk > 0 else np.inf, eta_critical=float(2.0 / lmax),
                   layer_kappa1=lk1, layer_kappa2=lk2, layer_mean_eigenvalue=st.layer_mean_eigenvalue * inv,
                   layer_second_moment=st.layer_second_moment * inv ** 2, layer_lambda_max=st.layer_lambda_max * inv,
                   order_parameters=op)
