"""Trainability and generalization against depth and weight_var (after Xiao, Pennington & Schoenholz 2020, Fig. 1):
erf networks, bias_var = 0.05, on scikit-learn's digits (shipped with the package, no download), inputs centred and
scaled to |x|^2 / M_0 = 1.

(a) log10 of the NTK condition number kappa^l of Theta^l(X, X) over (weight_var, depth); (b) test accuracy of the
NTK mean predictor after a fixed training budget (gradient flow for time 1e4 / lambda_max: 1e4 steps of learning
rate 1 / lambda_max), one-hot targets, argmax; both with the critical weight_var (dashed) and 6 xi_c (white).
(c) kappa^l and (d) the predictor ratio <P(Theta^l)Y, Ybar> / |Ybar|^2 against depth in the ordered phase, at
criticality and in the chaotic phase, exact (markers) against the large-depth forms of meanfield.trainability (lines).

Run:  python figures/make_trainability.py        (about 1-2 min on one core; writes figures/trainability_depth.png)
"""
from __future__ import annotations

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from meanfield import critical_weight_var, depth_scales  # noqa: E402
from meanfield.trainability import depth_metrics  # noqa: E402

ACT, BIAS, MAX_DEPTH, STEPS = "erf", 0.05, 60, 1e4
N_TRAIN, N_TEST = 150, 250


def digits(seed=0):
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X - X.mean(axis=0)
    X = X / np.linalg.norm(X, axis=1, keepdims=True) * np.sqrt(X.shape[1])
    idx = np.random.default_rng(seed).permutation(len(X))
    tr, te = idx[:N_TRAIN], idx[N_TRAIN:N_TRAIN + N_TEST]
    return X[tr], np.eye(10)[y[tr]], X[te], y[te]


def main(out=None):
    out = out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "trainability_depth.png")
    xtr, ytr, xte, yte = digits()
    wc = critical_weight_var(ACT, BIAS)
    grid = np.linspace(0.6, 2.6, 17)
    logk = np.full((MAX_DEPTH + 1, len(grid)), np.nan)
    acc = np.full_like(logk, np.nan)
    for j, w in enumerate(grid):
        m = depth_metrics(ACT, w, BIAS, xtr, ytr, xte, max_depth=MAX_DEPTH, train_steps=STEPS)
        logk[:, j] = np.log10(np.minimum(m.condition_number, 1e17))
        acc[:, j] = [np.mean(np.argmax(P, axis=1) == yte) for P in m.predictor]
        print(f"weight_var {w:.2f} ({m.phase}): kappa^1 {m.condition_number[1]:.3g}, kappa^{MAX_DEPTH} "
              f"{m.condition_number[-1]:.3g}; accuracy l=1 {acc[1, j]:.3f}, l={MAX_DEPTH} {acc[-1, j]:.3f}")
    dw = 0.5 * (grid[1] - grid[0])
    fine = np.linspace(grid[0] - dw, grid[-1] + dw, 200)
    xi = np.array([abs(depth_scales(ACT, w, BIAS).xi_c) for w in fine])
    fig, axs = plt.subplots(2, 2, figsize=(11, 8.5))
    ext = [grid[0] - dw, grid[-1] + dw, 0.5, MAX_DEPTH + 0.5]   # depths 1..MAX_DEPTH (l = 0 is the linear readout)
    for ax, data, title, cmap in ((axs[0, 0], logk, r"(a) $\log_{10}\kappa^l$ of $\Theta^l(X,X)$", "magma"),
                                  (axs[0, 1], acc, f"(b) test accuracy, NTK predictor after {STEPS:.0e} steps",
                                   "viridis")):
        im = ax.imshow(data[1:], origin="lower", aspect="auto", extent=ext, cmap=cmap, interpolation="nearest")
        fig.colorbar(im, ax=ax)
        ax.plot(fine, np.minimum(6 * xi, MAX_DEPTH), "w-", lw=1.5, label=r"$6\xi_c$")
        ax.axvline(wc, color="w", ls="--", lw=1, label=r"critical $\sigma_w^2$")
        ax.set_xlabel(r"weight_var $\sigma_w^2$")
        ax.set_ylabel("depth l")
        ax.set_title(title, fontsize=10)
        ax.set_ylim(0.5, MAX_DEPTH + 0.5)
        ax.set_xlim(ext[0], ext[1])
    axs[0, 0].legend(loc="upper right", fontsize=8)
    for w in (1.0, wc, 2.5):
        m = depth_metrics(ACT, w, BIAS, xtr, ytr, xte, max_depth=MAX_DEPTH)
        m.plot(axs[1, 0], "condition_number")
        m.plot(axs[1, 1], "ratio")
    axs[1, 0].set_title(r"(c) $\kappa^l$: exact (markers), large-depth form (lines)", fontsize=10)
    axs[1, 1].set_title(r"(d) $P(\Theta^l)Y$ along $\bar Y$: 1 = constant predictor, 0 = zero", fontsize=10)
    axs[1, 0].legend(fontsize=7)
    fig.suptitle(f"{ACT}, bias_var = {BIAS}, digits (n_train = {N_TRAIN}, n_test = {N_TEST}); "
                 f"ordered $\\sigma_w^2$ = 1.0, critical {wc:.3f}, chaotic 2.5", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print("wrote", out)
    return out


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
