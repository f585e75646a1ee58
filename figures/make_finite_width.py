"""The depth-to-width ratio: leading 1/width predictions against torch ensembles at criticality.

Writes figures/finite_width_depth_ratio.png (and .csv with the plotted numbers). Run from the repository root:
``python figures/make_finite_width.py`` (about two minutes on one CPU core; needs torch).

Networks at criticality, relu (C_W = 2, C_b = 0) and tanh (C_W = 1, C_b = 0), one input with x.x/M_0 = 1, depth
``L - 1`` hidden layers of width n. Left: excess kurtosis of one output unit; right: relative variance of the NTK
``Var(Theta)/E[Theta]^2``; against ``L / n``. Lines: the O(1/n) predictions of ``meanfield.finite_width_corrections``
(``3 v^L / (n K^2)`` and ``(a + 2 b) / (n Theta^2)``), straight in ``L/n`` at criticality (relu: kurtosis slope
15, NTK slope 11/3); dashed: the exact relu kurtosis ``3 ((1 + 5/n)^(L-1) - 1)`` (all orders). Points: torch ensembles (``meanfield.validation.finite_width_sim.simulate_corrections``) at
n = 32 and n = 64, +-2 SE; they follow the lines at small ``L/n`` and bend upward as higher orders in ``L/n`` grow.
"""
from __future__ import annotations

import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402

from meanfield import Network, finite_width_corrections  # noqa: E402
from meanfield.validation.finite_width_sim import _mean_se, simulate_corrections  # noqa: E402

CASES = [("relu", 2.0, "C0"), ("tanh", 1.0, "C3")]
WIDTHS = {32: ("o", 6000), 64: ("s", 2000)}
MAX_RATIO = 0.3
DEPTHS = (2, 4, 6, 8, 12, 16)          # hidden layers; L = depth + 1 Dense layers


def main():
    torch.set_num_threads(1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    rows = []
    for name, cw, color in CASES:
        deep = finite_width_corrections(Network(name, depth=40, weight_var=cw), gram=[[1.0]])
        Ls = np.arange(1, deep.depth + 1)
        kurt = 3 * deep.single_vertex[:, 0] / deep.kernel[:, 0, 0] ** 2
        ntk = deep.relative_ntk_variance[:, 0, 0]
        n = 64     # the O(1/n) lines of n = 32 and 64 differ only by the layer offset: one is drawn
        sel = Ls / n <= MAX_RATIO + 0.02
        axes[0].plot(Ls[sel] / n, kurt[sel] / n, "-", color=color, lw=1, label=f"{name}: O(1/n) prediction")
        axes[1].plot(Ls[sel] / n, ntk[sel] / n, "-", color=color, lw=1, label=f"{name}: O(1/n) prediction")
        if name == "relu":
            # all orders for relu with C_b = 0: G^{l+1} = G^l (2/n) sum_j relu(xi_j)^2 is a product of independent
            # factors of mean 1 and variance 5/n, so the excess kurtosis is exactly 3 ((1 + 5/n)^(L-1) - 1)
            for n, ls in ((32, "--"), (64, ":")):
                Lx = np.arange(1, int((MAX_RATIO + 0.02) * n) + 1)
                axes[0].plot(Lx / n, 3 * ((1 + 5 / n) ** (Lx - 1) - 1), ls, color=color, lw=1,
                             label=f"relu: exact, all orders, n = {n}")
        for n, (marker, S) in WIDTHS.items():
            for d in DEPTHS:
                L = d + 1
                if L / n > MAX_RATIO:
                    continue
                s = simulate_corrections(Network(name, depth=d, weight_var=cw), n, S, inputs=(1.0, 1.0, 0.5),
                                         seed=11)
                g, th = s["G"][:, -1, 0], s["theta"][:, 0]
                k, k_se = _mean_se(lambda x: 3 * np.var(x, ddof=1) / np.mean(x) ** 2, g)
                v, v_se = _mean_se(lambda x: np.var(x, ddof=1) / np.mean(x) ** 2, th)
                rows.append(dict(activation=name, width=n, depth=d, L_over_n=L / n, kurtosis=k, kurtosis_se=k_se,
                                 kurtosis_pred=kurt[L - 1] / n, ntk_rel_var=v, ntk_rel_var_se=v_se,
                                 ntk_rel_var_pred=ntk[L - 1] / n))
                lab = f"{name}, n = {n} (torch)" if d == DEPTHS[0] else None
                axes[0].errorbar(L / n, k, 2 * k_se, fmt=marker, color=color, mfc="none", label=lab)
                axes[1].errorbar(L / n, v, 2 * v_se, fmt=marker, color=color, mfc="none", label=lab)
                print(rows[-1], flush=True)
    axes[0].set_ylabel("excess kurtosis of one output")
    axes[1].set_ylabel(r"$\mathrm{Var}(\Theta)/E[\Theta]^2$")
    for ax in axes:
        ax.set_xlabel("depth / width  (L / n)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Finite-width corrections at criticality grow with depth/width")
    fig.tight_layout()
    fig.savefig(os.path.join(HERE, "finite_width_depth_ratio.png"), dpi=110)
    with open(os.path.join(HERE, "finite_width_depth_ratio.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


if __name__ == "__main__":
    main()
