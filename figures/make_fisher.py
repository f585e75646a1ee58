"""Figures for meanfield.fisher (Karakida, Akaho & Amari): theory against finite-width random networks.

    python figures/make_fisher.py

writes
  figures/fisher_statistics_vs_width.png  M m_lambda, s_lambda, lambda_max / M against width (tanh L=4, relu L=3)
  figures/fisher_spectrum.png             eigenvalue histograms (MSE and softmax FIM) with the outliers marked
  figures/fisher_variants_vs_width.png    NTK parameterization and input/feature metric against width (tanh L=4)
and prints the numbers shown (theory, simulated mean +- standard deviation over seeds).
"""
from __future__ import annotations

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
from meanfield.fisher import feature_metric_statistics, fisher_statistics  # noqa: E402
from meanfield.validation.fisher_sim import finite_width_fisher  # noqa: E402
from meanfield.network import Network  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CASES = {
    "tanh": Network("tanh", depth=3, weight_var=3.0, bias_var=0.64),
    "relu": Network("relu", depth=2, weight_var=2.0, bias_var=0.5),
}
T, C = 32, 3
WIDTHS = [32, 64, 128, 256, 512, 1024, 2048, 4096]
SEEDS = 4


def _plain_log_ticks(axis):
    """Tick labels of a log axis as plain numbers (6, 0.4) instead of 6 x 10^0."""
    class Plain(matplotlib.ticker.LogFormatter):   # matplotlib's choice of which ticks to label, printed with %g
        def _num_to_string(self, x, vmin, vmax):
            return f"{x:g}"

    axis.set_major_formatter(Plain())
    axis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def statistics_vs_width():
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    colours = {"tanh": "C0", "relu": "C3"}
    Ms = np.array(WIDTHS, dtype=float)
    for name, net in CASES.items():
        th = fisher_statistics(net, WIDTHS[0], T, C)
        theory = [C * th.kappa1, th.second_moment, th.lambda_max / WIDTHS[0]]
        sims = np.empty((len(WIDTHS), SEEDS, 3))
        for i, M in enumerate(WIDTHS):
            for s in range(SEEDS):
                sp = finite_width_fisher(net, M, T, C, seed=1000 * i + s)
                sims[i, s] = [M * sp.mean_eigenvalue, sp.second_moment, sp.lambda_max / M]
        mean, sd = sims.mean(axis=1), sims.std(axis=1, ddof=1)
        print(f"{name}: theory M m = {theory[0]:.4f}, s = {theory[1]:.4f}, lambda_max/M = {theory[2]:.4f}")
        for i, M in enumerate(WIDTHS):
            print(f"  M={M:5d}  M m = {mean[i, 0]:.4f}+-{sd[i, 0]:.4f}  s = {mean[i, 1]:.4f}+-{sd[i, 1]:.4f}  "
                  f"lambda_max/M = {mean[i, 2]:.4f}+-{sd[i, 2]:.4f}")
        for j, ax in enumerate(axes):
            ax.axhline(theory[j], color=colours[name], lw=1.5, label=f"{name} theory")
            ax.errorbar(Ms, mean[:, j], yerr=sd[:, j], fmt="o", ms=4, capsize=2, color=colours[name],
                        label=f"{name} simulation")
    labels = [r"$M\, m_\lambda$", r"$s_\lambda$", r"$\lambda_{\max} / M$"]
    for ax, lab in zip(axes, labels):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
        ax.set_xlabel(r"width $M$")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(rf"FIM eigenvalue statistics, MSE, $T={T}$, $C={C}$ "
                 rf"(tanh: $L=4$, $\sigma_w^2=3$, $\sigma_b^2=0.64$; relu: $L=3$, $\sigma_w^2=2$, $\sigma_b^2=0.5$); "
                 rf"points: mean $\pm$ sd over {SEEDS} networks", fontsize=9)
    fig.tight_layout()
    path = os.path.join(HERE, "fisher_statistics_vs_width.png")
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def spectrum_histogram():
    net, M, Th, n_net = CASES["tanh"], 512, 64, 8
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, loss in zip(axes, ("mse", "cross_entropy")):
        th = fisher_statistics(net, M, Th, C, loss=loss, n_mc=200)
        ev, top = [], []
        for s in range(n_net):
            sp = finite_width_fisher(net, M, Th, C, loss=loss, seed=500 + s)
            e = sp.eigenvalues[sp.eigenvalues > 1e-9 * sp.lambda_max]
            ev.append(e)
            top.append(sp.eigenvalues[::-1][: (C if loss == "mse" else C - 1)])
        ev = np.concatenate(ev)
        bins = np.logspace(np.log10(ev.min()), np.log10(ev.max() * 1.3), 60)
        ax.hist(ev, bins=bins, color="0.6", label=f"non-zero eigenvalues, {n_net} networks")
        ax.hist(np.concatenate(top), bins=bins, color="C1", alpha=0.8,
                label=f"top {C if loss == 'mse' else C - 1} of each network")
        if loss == "mse":
            ax.axvline(th.lambda_max, color="C3", lw=2, label=r"theory $\lambda_{\max}$ ($C$-fold)")
            ax.axvline(th.bulk_eigenvalue, color="C0", lw=2, ls="--",
                       label=r"theory bulk $\alpha M(\kappa_1-\kappa_2)/T$")
            ax.set_title(rf"MSE FIM, tanh $L=4$, $M={M}$, $T={Th}$, $C={C}$ ($P\approx{th.alpha * M * M:.0f}$; "
                         "all other eigenvalues 0)", fontsize=8)
        else:
            for k, o in enumerate(th.outliers):
                ax.axvline(o, color="C3", lw=2, ls="-" if k == 0 else ":",
                           label=rf"theory outlier {k + 1} (MC over Gaussian outputs)")
            ax.axvline(th.outliers_large_T, color="k", lw=1, ls="--", label=r"$T\to\infty$ outliers")
            ax.set_title(rf"softmax (cross-entropy) FIM, same networks: $C-1={C - 1}$ dispersed outliers", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel(r"eigenvalue $\lambda$")
        ax.set_ylabel("count")
        ax.legend(fontsize=6.5, loc="upper right" if loss == "mse" else "upper left")
        print(f"{loss}: theory lambda_max = {th.lambda_max:.3f}; simulated top = "
              f"{np.mean([t[0] for t in top]):.3f} +- {np.std([t[0] for t in top], ddof=1):.3f}")
    fig.tight_layout()
    path = os.path.join(HERE, "fisher_spectrum.png")
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def variants_vs_width():
    """NTK parameterization: mean, lambda_max, lambda_min of Theta (width independent); feature metric: M m, lambda_max."""
    net, widths = CASES["tanh"], [64, 128, 256, 512, 1024, 2048, 4096]
    ntk = fisher_statistics(net, 64, T, C, parameterization="ntk")
    feat = feature_metric_statistics(net, 64, T, C)
    sims = np.empty((len(widths), SEEDS, 5))
    for i, M in enumerate(widths):
        for s in range(SEEDS):
            a = finite_width_fisher(net, M, T, C, parameterization="ntk", seed=2000 + 100 * i + s)
            b = finite_width_fisher(net, M, T, C, metric="feature", seed=2000 + 100 * i + s)
            sims[i, s] = [a.mean_eigenvalue, a.lambda_max, a.eigenvalues[0], M * b.mean_eigenvalue, b.lambda_max]
    mean, sd = sims.mean(axis=1), sims.std(axis=1, ddof=1)
    theory = [ntk.mean_eigenvalue, ntk.lambda_max, ntk.bulk_eigenvalue, 64 * feat.mean_eigenvalue, feat.lambda_max]
    labels = [r"NTK mean $\kappa'_1$", r"NTK $\lambda_{\max}$", r"NTK $\lambda_{\min}$",
              r"feature metric $M m_\lambda$", r"feature metric $\lambda_{\max}$"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    Ms = np.array(widths, dtype=float)
    for j in range(5):
        ax = axes[0] if j < 3 else axes[1]
        col = f"C{j}"
        ax.axhline(theory[j], color=col, lw=1.5)
        ax.errorbar(Ms, mean[:, j], yerr=sd[:, j], fmt="o", ms=4, capsize=2, color=col, label=labels[j])
        print(f"{labels[j]}: theory {theory[j]:.4f}; " + ", ".join(
            f"M={M}: {mean[i, j]:.4f}+-{sd[i, j]:.4f}" for i, M in enumerate(widths)))
    axes[0].set_title(rf"NTK parameterization, $\Theta = JJ^T$ ($T={T}$, $C={C}$): width independent", fontsize=9)
    axes[1].set_title(r"input/feature metric $A$: mean $\propto 1/M$, $\lambda_{\max} = O(1)$", fontsize=9)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis)
        ax.set_xlabel(r"width $M$")
        ax.set_ylabel("eigenvalue statistic")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(HERE, "fisher_variants_vs_width.png")
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


if __name__ == "__main__":
    for p in (statistics_vs_width(), spectrum_histogram(), variants_vs_width()):
        print("wrote", p)
