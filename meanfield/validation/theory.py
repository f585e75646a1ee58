r"""Theory side of the validation: the library's infinite-width (and width-M) values of every compared quantity.

For one validation network (:class:`~meanfield.validation.report.ValidationConfig`) and its two inputs, this module
assembles ``{quantity: (value, source)}`` from the library's public routes only: :func:`meanfield.forward.forward` and
:func:`meanfield.backward.backward` (order parameters per layer), :func:`meanfield.kernels.kernels` (NNGP and NTK in
both parameterizations) and :func:`meanfield.fisher.fisher_statistics` (Karakida's FIM and NTK spectrum statistics),
plus the cross-checks between routes that should agree exactly. The quantity names are those of
:func:`meanfield.validation.simulate.simulate_width`.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from ..backward import backward
from ..fisher import fisher_statistics
from ..forward import chi1, forward, qstar
from ..kernels import kernels
from .measure import pair_inputs
from .networks import layer_widths

__all__ = ["resolve_inputs", "width_independent_theory", "fisher_theory", "standard_ntk_theory",
           "finite_width_bias"]


def resolve_inputs(cfg) -> tuple:
    """(input_norm, input_norm2, input_overlap) with the defaults of
    :class:`~meanfield.validation.report.ValidationConfig` filled in."""
    net = cfg.network
    sw2, sb2 = net.weight_vars[0], net.bias_vars[0]
    n1 = cfg.input_norm
    if n1 is None:
        n1 = 1.0
        if net.is_homogeneous and sw2 > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                qs = float(qstar(net.activations[0], sw2, sb2))
            if np.isfinite(qs) and qs > sb2:
                n1 = (qs - sb2) / sw2
    n2 = n1 if cfg.input_norm2 is None else cfg.input_norm2
    ov = cfg.input_overlap
    if ov is None:
        q1a, q1b = sw2 * n1 + sb2, sw2 * n2 + sb2
        ov = (0.5 * math.sqrt(q1a * q1b) - sb2) / sw2 if sw2 > 0 else 0.0
        ov = float(np.clip(ov, -math.sqrt(n1 * n2), math.sqrt(n1 * n2)))
    return float(n1), float(n2), float(ov)


def width_independent_theory(cfg, inputs: tuple) -> tuple:
    """Width-independent theory values {quantity: (value, source)} and the cross-checks between library routes."""
    net = cfg.network
    L = net.n_layers
    n1, n2, ov = inputs
    fr = forward(net, input_norm=n1, input_norm2=n2, input_overlap=ov)
    br = backward(net, forward_result=fr)
    q1, q1b, q2, c = (np.asarray(getattr(fr, k), dtype=np.float64).reshape(-1) for k in ("q1", "q1b", "q2", "c"))
    qt1, qt2 = (np.asarray(getattr(br, k), dtype=np.float64).reshape(-1) for k in ("qtilde1", "qtilde2"))
    th, checks = {}, {}
    src = "meanfield.forward"
    for l in range(1, L):
        th[f"q^{l}(x,x)"] = (float(q1[l - 1]), src)
        th[f"q^{l}(x,x')"] = (float(q2[l - 1]), src)
        th[f"c^{l}"] = (float(c[l - 1]), src)
    for l in range(1, L):
        th[f"qtilde_1^{l}"] = (float(qt1[l - 1]), "meanfield.backward")
        th[f"qtilde_2^{l}"] = (float(qt2[l - 1]), "meanfield.backward")
        th[f"chi_1^{l}"] = (float(qt1[l - 1] / qt1[l]), "meanfield.backward (qtilde_1^l / qtilde_1^(l+1))")
    # the fixed-point chi_1 of the library, when the inputs sit at q*
    if cfg.input_norm is None and net.is_homogeneous:
        ch = float(chi1(net.activations[0], net.weight_vars[0], net.bias_vars[0]))
        checks["chi1_fixed_point"] = ch
        checks["max_rel_diff_chi1_layers_vs_fixed_point"] = float(
            max(abs(th[f"chi_1^{l}"][0] - ch) for l in range(1, L)) / abs(ch))
    # NNGP and NTK on (x, x')
    nngp = np.array([[q1[-1], q2[-1]], [q2[-1], q1b[-1]]])
    ntk_core = np.array([[np.sum(qt1 * q1), np.sum(qt2 * q2)], [np.sum(qt2 * q2), np.nan]])
    X = pair_inputs(64, n1, n2, ov).numpy()
    ksrc = "meanfield.kernels"
    kr = kernels(net, X, parameterization="ntk")
    K, Th = np.asarray(kr.nngp), np.asarray(kr.ntk)
    checks["max_abs_diff_nngp_kernels_vs_forward"] = float(np.max(np.abs(K - nngp)))
    checks["max_abs_diff_ntk_kernels_vs_sum_qtilde_q"] = float(np.nanmax(np.abs(Th - ntk_core)))
    th["K(x,x)"] = (float(K[0, 0]), ksrc)
    th["K(x,x')"] = (float(K[0, 1]), ksrc)
    th["K(x,x') readout-averaged"] = (float(K[0, 1]), ksrc)
    th["Theta(x,x)"] = (float(Th[0, 0]), ksrc)
    th["Theta(x,x')"] = (float(Th[0, 1]), ksrc)
    return th, checks


def fisher_theory(net, width: int, T: int, C: int) -> tuple:
    """Karakida's FIM statistics (standard parameterization) and NTK spectrum at width ``width`` from
    :func:`meanfield.fisher.fisher_statistics` (the library's one implementation of the kappas): {quantity: (value,
    source)} and the critical learning rate ``eta_c = 2 / lambda_max``."""
    sp = fisher_statistics(net, width, T, C, parameterization="standard")
    ntk = fisher_statistics(net, width, T, C, parameterization="ntk")
    src = "meanfield.fisher"
    out = {
        "m_lambda": (float(sp.mean_eigenvalue), src),
        "s_lambda": (float(sp.second_moment), src),
        "lambda_max": (float(sp.lambda_max), src),
        "NTK mean eigenvalue": (float(ntk.mean_eigenvalue), src),
        "NTK lambda_max": (float(ntk.lambda_max), src),
        "NTK lambda_min": (float(ntk.bulk_eigenvalue), src),
    }
    return out, float(sp.eta_critical)


def standard_ntk_theory(net, width: int, inputs: tuple) -> tuple:
    """Standard-parameterization NTK on (x, x') at width M (:func:`meanfield.kernels.kernels`): the pairs
    ``(Theta_SP(x,x), source)`` and ``(Theta_SP(x,x'), source)``."""
    M0 = layer_widths(net, width)[0]
    X = pair_inputs(M0, *inputs).numpy()
    Th = np.asarray(kernels(net, X, parameterization="standard", width=width).ntk)
    return (float(Th[0, 0]), "meanfield.kernels"), (float(Th[0, 1]), "meanfield.kernels")


def finite_width_bias(cfg, inputs: tuple) -> dict:
    """Predicted ``a`` of ``relative error = a / M`` for the quantities whose mean is the metric of a layer
    (:func:`meanfield.finite_width_corrections`, ``K1 / K``): ``q^l(x,x)``, ``q^l(x,x')`` and the output covariances
    ``K(x,x)``, ``K(x,x')``, ``K(x,x') readout-averaged`` (``E[f f'] = E[G^L]``), and ``Theta(x,x)`` (NTK
    parameterization: ``Theta1 / Theta``). Empty for networks the expansion does not cover (dropout)."""
    from ..finite_width import finite_width_corrections

    n1, n2, ov = inputs
    try:
        fw = finite_width_corrections(cfg.network, gram=[[n1, ov], [ov, n2]])
    except ValueError:
        return {}
    rel = fw.relative_kernel_correction
    out = {}
    for l in range(1, fw.depth):
        out[f"q^{l}(x,x)"] = float(rel[l - 1, 0, 0])
        out[f"q^{l}(x,x')"] = float(rel[l - 1, 0, 1])
    out["Theta(x,x)"] = float(fw.ntk_correction[-1, 0] / fw.ntk[-1, 0, 0])     # NTK parameterization, mean NTK
    out["K(x,x)"] = float(rel[-1, 0, 0])
    out["K(x,x')"] = out["K(x,x') readout-averaged"] = float(rel[-1, 0, 1])
    return out
