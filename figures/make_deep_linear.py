"""Exact vs renormalized (BPKR) vs infinite-width predictive variance of deep linear networks against width.

Writes figures/deep_linear_variance.png.  Run from the repository root: ``python figures/make_deep_linear.py``.

Setting: Li-Sompolinsky's limit, ``alpha = P/N = 0.5`` and ``alpha_0 = P/N_0 = 0.5`` fixed while the width ``N``
grows, targets with ``Q/P = y^T K^{-1} y / P = 3`` (the data ask for a larger output scale than the prior gives),
weight variance 1, zero temperature.  The inputs are orthogonal, ``X = sqrt(N_0) [I_P, 0]``, and the test input is
orthogonal to them, so the NNGP predictive variance is exactly ``sigma^{2(L+1)} = 1`` and the plotted variance is the
renormalization factor itself (exact: ``E[S|y]`` from Hanin-Zlokapa's Meijer-G ratio; BPKR: ``(u_0/sigma^2)^L``).
Points: importance sampling of actual weight matrices (numpy, :mod:`meanfield.validation.deep_linear`), +-2 s.e.
"""
from __future__ import annotations

import importlib.util
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from meanfield.deep_linear import bpkr, deep_linear_posterior  # noqa: E402

# the sampling module is numpy-only; load it by path so that the figure does not need torch
_spec = importlib.util.spec_from_file_location("_dl_validation", os.path.join(ROOT, "meanfield", "validation",
                                                                              "deep_linear.py"))
_val = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_val)

ALPHA, ALPHA0, RATIO = 0.5, 0.5, 3.0


def design(N):
    P = max(1, int(round(ALPHA * N)))
    n0 = int(round(P / ALPHA0))
    X = np.zeros((P, n0))
    X[np.arange(P), np.arange(P)] = np.sqrt(n0)
    y = np.full(P, np.sqrt(RATIO))  # K = I, so Q/P = RATIO
    xt = np.zeros((1, n0))
    xt[0, P] = np.sqrt(n0)  # orthogonal to the data: NNGP variance = 1
    return X, y, xt


def main(out=os.path.join(HERE, "deep_linear_variance.png")):
    widths = np.unique(np.round(np.logspace(np.log10(2), np.log10(2048), 36)).astype(int))
    widths = widths[widths % 2 == 0]
    mc_widths = [4, 8, 16, 32]
    colors = {1: "tab:blue", 2: "tab:orange", 3: "tab:green"}
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.2))
    ax, bx = axes
    for L, col in colors.items():
        exact, renorm = [], []
        for N in widths:
            X, y, xt = design(N)
            exact.append(deep_linear_posterior(X, y, L, int(N), 1.0, 0.0, xt).variance[0])
            renorm.append(bpkr(X, y, L, int(N), 1.0, 0.0, xt).variance[0])
        exact, renorm = np.array(exact), np.array(renorm)
        ax.plot(widths, exact, "-", color=col, lw=2, label=f"exact (Meijer G), $L={L}$")
        ax.plot(widths, renorm, "--", color=col, lw=1.3, label=f"BPKR $(u_0/\\sigma^2)^L$, $L={L}$")
        bx.loglog(widths, np.abs(exact / renorm - 1), "-", color=col, lw=2, label=f"$|$exact/BPKR$ - 1|$, $L={L}$")
        bx.loglog(widths, np.abs(exact - 1), ":", color=col, lw=1.5, label=f"$|$exact/NNGP$ - 1|$, $L={L}$")
        for k, N in enumerate(mc_widths):
            X, y, xt = design(N)
            mc = _val.sample_posterior(X, y, xt, L, N, 1.0, 0.0, n_samples=20000, seed=100 * L + k)
            ax.errorbar([N], mc["variance"], yerr=2 * mc["variance_se"], fmt="o", color=col, ms=4, capsize=2,
                        label="sampled networks ($\\pm 2$ s.e.)" if (k == 0 and L == 1) else None)
    ax.axhline(1.0, color="k", ls=":", lw=1.3, label="infinite width (NNGP)")
    ax.set_xscale("log")
    ax.set_xlabel("hidden width $N$")
    ax.set_ylabel(r"predictive variance $\mathrm{Var}[f(x_*)]$ / $\sigma^{2(L+1)}|x_\perp|^2/N_0$")
    ax.set_title(r"$T=0$, $\alpha=P/N=0.5$, $\alpha_0=P/N_0=0.5$, $y^\top K^{-1}y/P=3$", fontsize=10)
    ax.legend(fontsize=7, ncol=1, loc="upper right")
    ref = 0.5 / widths
    bx.loglog(widths, ref, color="gray", lw=1, ls="-.", label=r"$\propto 1/N$")
    bx.set_xlabel("hidden width $N$")
    bx.set_ylabel("relative difference")
    bx.set_title("exact $\\to$ BPKR as $1/N$; NNGP stays off", fontsize=10)
    bx.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
