"""Figures for meanfield.spectra: theory (free probability / linear-width random-matrix theory) against finite random
networks (torch; CPU, or CUDA when present).

    python figures/make_spectra.py

writes
  figures/spectra_jacobian.png   singular-value densities of the input-output Jacobian at criticality, ReLU and
                                 hard-tanh, Gaussian vs orthogonal weights, L = 2, 8, 32, 128 (Pennington, Schoenholz &
                                 Ganguli 2017, Fig. 2), with histograms of width-400 networks at L = 32
  figures/spectra_kernels.png    CK and NTK eigenvalue densities of a tanh network (Fan & Wang 2020) with histograms of
                                 a network with n = 1000 samples, width M = 2000
  figures/spectra_distances.csv  Kolmogorov-Smirnov distances between simulated and predicted spectra against width
and prints the distances.
"""
from __future__ import annotations

import csv
import os
import sys
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
from meanfield import (Network, conjugate_kernel_spectrum, critical_weight_var, jacobian_spectrum,  # noqa: E402
                       ntk_spectrum)
from meanfield.validation.spectra_sim import jacobian_eigenvalues, kernel_eigenvalues, ks_distance  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEPTHS = (2, 8, 32, 128)
HT_BIAS = 1e-4
NETS = {"relu": dict(activation="relu", weight_var=2.0, bias_var=0.0),
        "hard_tanh": dict(activation="hard_tanh", weight_var=float(critical_weight_var("hard_tanh", HT_BIAS)),
                          bias_var=HT_BIAS)}


def jacobian_figure(rows):
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), layout="constrained")
    for i, (name, kw) in enumerate(NETS.items()):
        for j, weights in enumerate(("gaussian", "orthogonal")):
            ax = axes[i, j]
            for L in DEPTHS:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    sp = jacobian_spectrum(Network(depth=L, **kw), weights, n_points=600)
                line = sp.plot(ax=ax, singular_values=True, log=False, label=f"L={L}").lines[-1]
                for a, m in sp.atoms:          # point masses: a marker at the top with the mass
                    if a > 0:
                        ax.plot([np.sqrt(a)], [2.85 - 0.2 * DEPTHS.index(L)], "v", color=line.get_color(), ms=5)
                        ax.annotate(f"{m:.2f}", (np.sqrt(a), 2.85 - 0.2 * DEPTHS.index(L)), xytext=(5, -3),
                                    textcoords="offset points", fontsize=7, color=line.get_color())
                if L == 32:
                    e = jacobian_eigenvalues(Network(depth=L, **kw), weights, 400, n_networks=2, seed=7)
                    sv = np.sqrt(np.clip(e.ravel(), 0, None))
                    ax.hist(sv[sv > 1e-6], bins=60, range=(0, 3), weights=np.full(np.count_nonzero(sv > 1e-6),
                            1.0 / sv.size / 0.05), histtype="step", color="k", lw=0.8, label="L=32, N=400 (2 nets)")
                    atoms = ", ".join(f"{m:.2f} at {np.sqrt(a):.2f}" for a, m in sp.atoms)
                    ax.set_title(f"{name}, {weights} (atoms L=32: {atoms or 'none'})", fontsize=9)
            ax.set_xlim(0, 3)
            ax.set_ylim(0, 3)
            ax.set_xlabel("singular value of J")
            ax.legend(fontsize=7)
    fig.suptitle("Jacobian singular values at chi_1 = 1: theory (lines; triangles: point masses) vs torch networks")
    fig.savefig(os.path.join(HERE, "spectra_jacobian.png"), dpi=130)
    plt.close(fig)
    # KS against width
    for name, kw in NETS.items():
        for weights in ("gaussian", "orthogonal"):
            net = Network(depth=8, **kw)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sp = jacobian_spectrum(net, weights, n_points=400)
            for N in (100, 200, 400, 800):
                e = jacobian_eigenvalues(net, weights, N, n_networks=2, seed=11)
                rows.append(("jacobian", f"{name} {weights} L=8", N, ks_distance(e, sp)))


def kernels_figure(rows):
    net = Network("tanh", depth=2, weight_var=1.5)
    g = 0.5
    ck = conjugate_kernel_spectrum(net, g, n_points=400)
    nt = ntk_spectrum(net, g, n_points=400)
    c, k = kernel_eigenvalues(net, 1000, 2000, seed=3)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for ax, sp, e, title in ((axes[0], ck, c, "conjugate kernel G_2"), (axes[1], nt, k, "NTK")):
        ax.hist(e, bins=70, density=True, color="0.8", label="n=1000, M=2000")
        sp.plot(ax=ax, label="Fan-Wang limit", color="C3")
        ax.set_title(f"tanh, depth 2, sigma_w^2 = 1.5, n/M = {g}: {title}", fontsize=9)
        ax.legend(fontsize=8)
    fig.savefig(os.path.join(HERE, "spectra_kernels.png"), dpi=130)
    plt.close(fig)
    for M in (100, 200, 400, 800, 1600):
        c, k = kernel_eigenvalues(net, int(g * M), M, seed=5)
        rows.append(("conjugate_kernel", "tanh depth 2 n/M=0.5", M, ks_distance(c, ck)))
        rows.append(("ntk", "tanh depth 2 n/M=0.5", M, ks_distance(k, nt)))


def main():
    rows = []
    jacobian_figure(rows)
    kernels_figure(rows)
    with open(os.path.join(HERE, "spectra_distances.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["matrix", "case", "width", "ks_distance"])
        w.writerows(rows)
    for r in rows:
        print(f"{r[0]:18s} {r[1]:28s} width {r[2]:5d}  KS {r[3]:.4f}")


if __name__ == "__main__":
    main()
