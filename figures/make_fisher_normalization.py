"""Figures for mean subtraction / batch and layer normalization of the FIM and the learning-rate phases.

    python figures/make_fisher_normalization.py            # both figures (~4 min on one CPU core)
    python figures/make_fisher_normalization.py spectra    # only figures/fisher_normalization.png
    python figures/make_fisher_normalization.py catapult   # only figures/learning_rate_catapult.png

writes
  figures/fisher_normalization.png   (a) SP lambda_max against width at fixed M/T = 8, with and without mean
                                     subtraction in the last layer; (b) NTK-parameterization lambda_max(Theta) against
                                     T at M = 1024 (mean subtraction: width- and T-independent); (c) lambda_max / M
                                     with BN or LN in the hidden layers (torch autograd) against the theory
  figures/learning_rate_catapult.png (a) fractions of lazy / catapult / diverged GD runs against eta lambda_max(0)/2;
                                     (b) loss spike; (c) final sharpness; (d) sharpness along training below eta_c
                                     (the NTK regime) at several widths
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
from meanfield._io import atomic_open  # noqa: E402
from meanfield.fisher import fisher_statistics  # noqa: E402
from meanfield.network import Network  # noqa: E402
from meanfield.normalization import batch_norm_lambda_max_bound, layer_norm_fisher_statistics  # noqa: E402
from meanfield.validation.fisher_sim import finite_width_fisher  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TANH = Network("tanh", depth=3, weight_var=3.0, bias_var=0.64)
RELU = Network("relu", depth=2, weight_var=2.0, bias_var=0.5)
C = 2
SEEDS = 3


def _save(fig, name):
    path = os.path.join(HERE, name)
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, dpi=130, format="png")
    plt.close(fig)
    print("wrote", path)


def _sim(net, M, T, par, ms, seeds=SEEDS):
    v = [finite_width_fisher(net, M, T, C, parameterization=par, seed=1000 * M + 10 * T + s,
                             mean_subtraction=ms).lambda_max for s in range(seeds)]
    return np.mean(v), np.std(v, ddof=1)


def spectra():
    import torch

    from meanfield.validation.normalization_sim import normalized_fisher_spectrum

    torch.set_num_threads(1)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9))
    # (a) SP, rho = M / T = 8
    ax = axes[0]
    rho, Ms = 8, np.array([64, 128, 256, 512, 1024])
    for ms, col, lab in ((False, "C0", "no normalization"), (True, "C3", "mean subtraction (last layer)")):
        th = np.array([fisher_statistics(TANH, M, M // rho, C, mean_subtraction=ms).lambda_max for M in Ms])
        sim = np.array([_sim(TANH, M, M // rho, "standard", ms) for M in Ms])
        ax.plot(Ms, th, "-", color=col, label=f"{lab}: theory" + (r" $\alpha\rho(\kappa_1-\kappa_2)$" if ms else ""))
        if ms:
            ax.plot(Ms, th * (1 + np.sqrt(1 / rho)) ** 2, "--", color=col, lw=1,
                    label=r"heuristic MP edge $\times(1+\sqrt{T/M})^2$")
        ax.errorbar(Ms, sim[:, 0], sim[:, 1], fmt="o", color=col, ms=4, capsize=2, label="finite networks")
        print(f"(a) SP rho={rho} mean_subtraction={ms}: theory {np.round(th, 3)}, sim {np.round(sim[:, 0], 3)} "
              f"+- {np.round(sim[:, 1], 3)}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("width $M$  ($T = M/8$)")
    ax.set_ylabel(r"$\lambda_{\max}(F)$")
    ax.set_title(r"(a) SP, tanh $L=4$, $\rho=M/T=8$: $O(M)$ outliers removed", fontsize=9)
    ax.legend(fontsize=7)
    # (b) NTK parameterization, M = 1024, T varied
    ax = axes[1]
    M, Ts = 1024, np.array([4, 8, 16, 32, 64, 128])
    for ms, col, lab in ((False, "C0", "no normalization"), (True, "C3", "mean subtraction")):
        th = np.array([fisher_statistics(TANH, M, T, C, "ntk", mean_subtraction=ms).lambda_max for T in Ts])
        sim = np.array([_sim(TANH, M, T, "ntk", ms) for T in Ts])
        ax.plot(Ts, th, "-", color=col, label=f"{lab}: theory")
        if ms:
            ax.plot(Ts, th * (1 + np.sqrt(Ts / M)) ** 2, "--", color=col, lw=1,
                    label=r"heuristic MP edge $\times(1+\sqrt{T/M})^2$")
        ax.errorbar(Ts, sim[:, 0], sim[:, 1], fmt="o", color=col, ms=4, capsize=2, label="finite networks")
        print(f"(b) NTK M={M} mean_subtraction={ms}: theory {np.round(th, 3)}, sim {np.round(sim[:, 0], 3)} "
              f"+- {np.round(sim[:, 1], 3)}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("number of inputs $T$  ($M = 1024$)")
    ax.set_ylabel(r"$\lambda_{\max}(\Theta)$")
    ax.set_title(r"(b) NTK param.: $\kappa'_1+(T-1)\kappa'_2$ vs $\kappa'_1-\kappa'_2$", fontsize=9)
    ax.legend(fontsize=7)
    # (c) BN / LN in the hidden layers, relu L = 3, T = 16
    ax = axes[2]
    T, Ms = 16, np.array([64, 128, 256, 512])
    plain = np.array([fisher_statistics(RELU, M, T, C).lambda_max for M in Ms]) / Ms
    ln_th = np.array([layer_norm_fisher_statistics(RELU, M, T, C).lambda_max for M in Ms]) / Ms
    bn_b = np.array([batch_norm_lambda_max_bound(RELU, M, T, C).lambda_max_bound for M in Ms]) / Ms
    ms_th = np.array([fisher_statistics(RELU, M, T, C, mean_subtraction=True).lambda_max for M in Ms]) / Ms
    sims = {}
    for norm in (None, "batch", "layer"):
        v = np.array([[normalized_fisher_spectrum(RELU, M, T, C, normalization=norm, seed=s).lambda_max / M
                       for s in range(SEEDS)] for M in Ms])
        sims[norm] = (v.mean(1), v.std(1, ddof=1))
    ax.plot(Ms, plain, "-", color="C0", label="none: theory")
    ax.errorbar(Ms, *sims[None], fmt="o", color="C0", ms=4, capsize=2)
    ax.plot(Ms, ln_th, "-", color="C2", label="LN (hidden): theory")
    ax.errorbar(Ms, *sims["layer"], fmt="s", color="C2", ms=4, capsize=2)
    ax.plot(Ms, bn_b, "--", color="C1", label="BN (hidden): lower bound")
    ax.errorbar(Ms, *sims["batch"], fmt="^", color="C1", ms=4, capsize=2)
    ax.plot(Ms, ms_th, ":", color="C3", label="mean subtraction (last): theory")
    for k, v in (("plain", plain), ("LN theory", ln_th), ("BN bound", bn_b), ("mean-sub theory", ms_th)):
        print(f"(c) relu T={T} lambda_max/M {k}: {np.round(v, 4)}")
    for k, v in sims.items():
        print(f"(c) sim {k}: {np.round(v[0], 4)} +- {np.round(v[1], 4)}")
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, None)
    ax.set_xlabel("width $M$  ($T = 16$)")
    ax.set_ylabel(r"$\lambda_{\max}(F)/M$")
    ax.set_title("(c) relu $L=3$: normalization in the hidden layers", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, "fisher_normalization.png")


def catapult():
    import torch

    from meanfield.validation.catapult import catapult_scan

    torch.set_num_threads(1)
    net = Network("relu", depth=2, weight_var=2.0, bias_var=0.1)
    factors = [0.5, 0.9, 1.1, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0]
    widths = [64, 128, 256, 512]
    scans = {M: catapult_scan(net, M, factors, n_seeds=SEEDS, n_steps=200) for M in widths}
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    cols = dict(zip(widths, ["C0", "C1", "C2", "C3"]))
    for M, sc in scans.items():
        f = sc.factors
        axes[0].plot(f, 1 - sc.fraction("lazy"), "o-", color=cols[M], ms=3, label=f"$M={M}$")
        axes[0].plot(f, sc.fraction("diverged"), "x--", color=cols[M], ms=4,
                     label="diverged" if M == widths[-1] else None)
        ok = ~sc.diverged                                        # panels (b), (c): the runs that re-converged
        keep = ok.any(axis=1)
        with np.errstate(invalid="ignore"):
            spike = np.array([np.median(sc.max_loss_ratio[k][ok[k]]) for k in np.flatnonzero(keep)])
            axes[1].plot(f[keep], spike, "o-", color=cols[M], ms=3, label=f"$M={M}$")
            fin = np.array([np.median(sc.sharpness[k, ok[k], -1] / sc.lambda_max0[ok[k]] * f[k])
                            for k in np.flatnonzero(keep)])
            print(f"M={M}: factors {f[keep].tolist()}: median max-loss ratio {np.round(spike, 2).tolist()}, "
                  f"median final eta lambda_max/2 {np.round(fin, 3).tolist()}")
        axes[2].plot(f[keep], fin, "o-", color=cols[M], ms=3, label=f"$M={M}$")
        lazy = sc.sharpness[0] / sc.lambda_max0[:, None]       # factor 0.5
        axes[3].plot(sc.sharpness_steps, np.median(lazy, 0), "o-", color=cols[M], ms=3,
                     label=fr"$M={M}$, $\eta={f[0]:g}\,\eta_c$")
        err = (2 / sc.lambda_max0) / sc.eta_critical_theory - 1
        print(f"M={M}: measured 2/lambda_max0 vs theory eta_c: rel. err {np.round(err, 3)}; catapult onset "
              f"{sc.catapult_onset_factor()}, divergence {sc.divergence_factor()}, lazy sharpness drift "
              f"{sc.lazy_sharpness_drift():.3f}")
    axes[0].set_xscale("log")
    axes[0].axvspan(1, 2, color="0.9", zorder=0, label="uv-model catapult range")
    axes[0].set_xlabel(r"$\eta\,\lambda_{\max}(0)/2$")
    axes[0].set_ylabel("fraction of runs")
    axes[0].set_title("(a) loss more than doubled (o), diverged (x)", fontsize=9)
    axes[0].legend(fontsize=6)
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].axvline(1, color="k", ls=":", lw=1)
    axes[1].set_xlabel(r"$\eta\,\lambda_{\max}(0)/2$")
    axes[1].set_ylabel("max loss / initial loss")
    axes[1].set_title("(b) loss spike of the re-converged runs", fontsize=9)
    axes[1].legend(fontsize=7)
    axes[2].set_xscale("log")
    axes[2].axhline(1, color="k", ls=":", lw=1)
    axes[2].set_xlabel(r"$\eta\,\lambda_{\max}(0)/2$")
    axes[2].set_ylabel(r"$\eta\,\lambda_{\max}(\mathrm{end})/2$")
    axes[2].set_title(r"(c) final sharpness: re-converged below $2/\eta$", fontsize=9)
    axes[2].legend(fontsize=7)
    axes[3].set_xscale("symlog", linthresh=1)
    axes[3].axhline(1, color="k", ls=":", lw=1)
    axes[3].set_xlabel("GD step")
    axes[3].set_ylabel(r"$\lambda_{\max}(t)/\lambda_{\max}(0)$")
    axes[3].set_title(r"(d) below $\eta_c$: NTK regime, $\eta_c(t)\approx\eta_c(0)$", fontsize=9)
    axes[3].legend(fontsize=7)
    fig.suptitle(r"Full-batch GD, relu $L=3$ ($\sigma_w^2=2$, $\sigma_b^2=0.1$), $T=16$, $C=1$, "
                 f"{SEEDS} networks per point", fontsize=10)
    fig.tight_layout()
    _save(fig, "learning_rate_catapult.png")


if __name__ == "__main__":
    which = sys.argv[1:] or ["spectra", "catapult"]
    for w in which:
        if w not in ("spectra", "catapult"):
            raise SystemExit(f"unknown figure {w!r}: choose 'spectra' or 'catapult'")
        {"spectra": spectra, "catapult": catapult}[w]()
