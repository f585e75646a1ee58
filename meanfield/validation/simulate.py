r"""Simulation side of the validation: random finite networks (torch), measured on a ladder of widths.

:func:`simulate_width` draws the networks of one width in memory-bounded chunks and returns, per quantity, one sample
per network (order parameters per layer, NNGP and NTK entries, FIM and NTK spectrum statistics) under the names that
:mod:`meanfield.validation.theory` gives the theory values; :func:`train_near_critical` runs gradient descent around
the critical learning rate. The measurements themselves are :mod:`meanfield.validation.measure`.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .measure import (FisherSample, OrderParameterSample, empirical_ntk, fisher_statistics, gaussian_inputs,
                      measure_order_parameters, pair_inputs, train_gd)
from .networks import layer_widths, sample_ensemble

__all__ = ["default_settings", "simulate_width", "train_near_critical"]


def default_settings(quick: bool, device: torch.device) -> dict:
    """Widths, ensemble sizes and training lengths of a run: ``quick`` (a smoke test), the CPU ladder or the GPU
    ladder."""
    gpu = device.type == "cuda"
    if quick:
        return dict(widths=(32, 64, 128), n_seeds=48, n_func=4, n_samples=16, train_width=64, train_seeds=4,
                    train_steps=30, lr_factors=(0.5, 0.9, 1.1, 2.0, 4.0),
                    lr_factors_network=(0.9, 1.1), chunk_bytes=2 ** 27)
    if gpu:
        return dict(widths=(64, 128, 256, 512, 1024, 2048, 4096, 8192), n_seeds=256, n_func=16, n_samples=32,
                    train_width=1024, train_seeds=16, train_steps=300, lr_factors=(0.5, 0.9, 1.1, 2.0, 4.0),
                    lr_factors_network=(0.9, 1.1),
                    chunk_bytes=2 ** 31)
    return dict(widths=(64, 128, 256, 512), n_seeds=256, n_func=8, n_samples=32, train_width=256, train_seeds=4,
                train_steps=60, lr_factors=(0.5, 0.9, 1.1, 2.0, 4.0), lr_factors_network=(0.9, 1.1),
                chunk_bytes=2 ** 27)


def _chunks(n_seeds: int, n_params: int, itemsize: int, budget: int) -> list:
    per = max(1, min(n_seeds, budget // max(1, 3 * n_params * itemsize)))
    return [(s, min(per, n_seeds - s)) for s in range(0, n_seeds, per)]


def simulate_width(cfg, inputs: tuple, width: int, st: dict, device, dtype, seed: int) -> tuple:
    """Per-network samples {quantity: array (S,)} at one width, plus implementation checks."""
    net = cfg.network
    L = net.n_layers
    T, C = st["n_samples"], cfg.n_outputs
    widths = layer_widths(net, width, C)
    P = int(sum(widths[l] * widths[l - 1] + widths[l] for l in range(1, len(widths))))
    itemsize = 8 if dtype == torch.float64 else 4
    ops, fis_sp, fis_ntk = [], [], []
    func_diff = 0.0
    for start, n in _chunks(st["n_seeds"], P, itemsize, st["chunk_bytes"]):
        ens = sample_ensemble(net, width, n, n_outputs=C, parameterization="standard", seed=seed, first_index=start,
                              device=device, dtype=dtype)
        ops.append(measure_order_parameters(ens, *inputs))
        x = gaussian_inputs(ens, T, seed)
        fis_sp.append(fisher_statistics(ens, x))
        ens_ntk = dataclasses.replace(ens, parameterization="ntk")
        fis_ntk.append(fisher_statistics(ens_ntk, x))
        n_func = min(n, st["n_func"] - start)
        if n_func > 0:  # the torch.func Jacobian contraction must agree with the layerwise Gram
            sub = ens_ntk.select(slice(0, n_func))
            xx = pair_inputs(widths[0], *inputs, dtype=ens.dtype, device=ens.device)
            th_f = empirical_ntk(sub, xx, method="func")
            th_l = empirical_ntk(sub, xx, method="layerwise")
            func_diff = max(func_diff, float((th_f - th_l).abs().max() / th_l.abs().max()))
        del ens, ens_ntk
    op = OrderParameterSample.concatenate(ops)
    fsp = FisherSample.concatenate(fis_sp)
    fntk = FisherSample.concatenate(fis_ntk)
    s = {}
    for l in range(1, L):
        s[f"q^{l}(x,x)"] = op.q1[:, l - 1]
        s[f"q^{l}(x,x')"] = op.q2[:, l - 1]
        s[f"c^{l}"] = op.c[:, l - 1]
        s[f"qtilde_1^{l}"] = op.qtilde1[:, l - 1]
        s[f"qtilde_2^{l}"] = op.qtilde2[:, l - 1]
        s[f"chi_1^{l}"] = op.chi1[:, l - 1]
    f = op.outputs  # (S, 2, C)
    s["K(x,x)"] = np.mean(f[:, 0] * f[:, 0], -1)
    s["K(x,x')"] = np.mean(f[:, 0] * f[:, 1], -1)
    # Rao-Blackwellized NNGP: E[f_k(x) f_k(x') | h^{L-1}] = sigma_{w,L}^2 qhat^{L-1}(x,x') + sigma_{b,L}^2 has the
    # same expectation as f f' and no readout sampling noise
    s["K(x,x') readout-averaged"] = net.weight_vars[-1] * op.qhat2[:, -1] + net.bias_vars[-1]
    s["Theta(x,x)"] = op.ntk[:, 0, 0]
    s["Theta(x,x')"] = op.ntk[:, 0, 1]
    s["Theta_SP(x,x)"] = op.ntk_standard[:, 0, 0]
    s["Theta_SP(x,x')"] = op.ntk_standard[:, 0, 1]
    s["m_lambda"] = fsp.mean
    s["s_lambda"] = fsp.second_moment
    s["lambda_max"] = fsp.lambda_max
    ev = fntk.eigenvalues * T  # eigenvalues of Theta = J J^T (C T x C T)
    s["NTK mean eigenvalue"] = ev.mean(1)
    s["NTK lambda_max"] = ev[:, -1]
    s["NTK lambda_min"] = ev[:, 0]
    return s, {"torch_func_vs_layerwise_max_rel_diff": func_diff, "n_params": P}


def train_near_critical(cfg, st: dict, eta_c: float, device, dtype, seed: int) -> dict:
    """Full-batch gradient descent of ``st["train_seeds"]`` networks of width ``st["train_width"]`` at learning rates
    ``factor * eta_c`` (theory) and ``factor * 2 / lambda_max`` (each network's own), with loss and sharpness
    curves."""
    net = cfg.network
    T, C = st["n_samples"], cfg.n_outputs
    n_steps = int(st["train_steps"])
    ens = sample_ensemble(net, st["train_width"], st["train_seeds"], n_outputs=C, seed=seed + 1, device=device,
                          dtype=dtype)
    x = gaussian_inputs(ens, T, seed + 1)
    gen = torch.Generator(device="cpu").manual_seed(seed + 2)
    y = torch.randn((ens.n_seeds, T, C), generator=gen, dtype=torch.float64).to(ens.device, ens.dtype)
    lam_emp = fisher_statistics(ens, x).lambda_max
    sharp_steps = tuple(k for k in (0, 1, 3, 10, 30, 100) if k < n_steps) + (n_steps,)
    runs = []
    plan = [("theory", f) for f in st["lr_factors"]] + [("network", f) for f in st["lr_factors_network"]]
    for anchor, fac in plan:
        eta = fac * eta_c if anchor == "theory" else fac * 2.0 / lam_emp
        tr = train_gd(ens, x, y, eta, n_steps=n_steps, sharpness_steps=sharp_steps)
        L0 = tr.losses[:, 0]
        eta_arr = np.broadcast_to(np.asarray(eta, float), (ens.n_seeds,))
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            ratio = tr.losses / L0[:, None]
            rratio = tr.top_mode / tr.top_mode[:, :1]
            sh = tr.sharpness * eta_arr[:, None] / 2.0
        k5 = min(5, n_steps)
        lin = np.abs(1 - eta_arr * lam_emp)
        runs.append(dict(anchor=anchor, lr_factor=float(fac),
                         learning_rate=float(np.median(eta_arr)),
                         eta_lambda_emp_over_2=float(np.median(eta_arr * lam_emp / 2.0)),
                         fraction_diverged=float(np.mean(tr.diverged)),
                         median_final_loss_ratio=float(np.median(ratio[:, -1])),
                         median_max_loss_ratio=float(np.median(np.max(ratio, 1))),
                         median_top_mode_ratio_step1=float(np.median(rratio[:, 1])),
                         linear_prediction_step1=float(np.median(lin)),
                         median_top_mode_ratio_step5=float(np.median(rratio[:, k5])),
                         linear_prediction_step5=float(np.median(lin ** k5)),
                         median_final_sharpness_eta_over_2=float(np.nanmedian(sh[:, -1]))
                         if np.any(np.isfinite(sh[:, -1])) else float("nan"),
                         median_loss_curve=np.median(ratio, 0).tolist(),
                         sharpness_steps=list(sharp_steps),
                         median_sharpness_eta_over_2=[float(np.nanmedian(c)) if np.any(np.isfinite(c))
                                                      else float("nan") for c in sh.T]))
    return dict(config=cfg.name, width=int(st["train_width"]), n_networks=int(ens.n_seeds), n_samples=T,
                n_outputs=C, n_steps=n_steps, eta_critical_theory=float(eta_c),
                eta_critical_empirical_mean=float(np.mean(2.0 / lam_emp)),
                eta_critical_empirical_std=float(np.std(2.0 / lam_emp, ddof=1)) if lam_emp.size > 1 else 0.0,
                divergence_factor=1e3, runs=runs)
