"""NNGP and NTK entries against the input angle, for several depths, in the ordered and chaotic phases of tanh.

Inputs x(theta) on a circle with |x|^2 / M_0 = 1; the kernel between x(0) and x(theta). Columns: ordered phase
(chi_1 < 1), chaotic phase (chi_1 > 1). Top: NNGP correlation K(theta)/K(0). Middle: NTK Theta(theta)/Theta(0).
Bottom: the raw NTK diagonal Theta(0) and off-diagonal Theta(pi/2) against depth (seed 002, after Xiao et al. 2020:
in the chaotic phase the diagonal grows like chi_1^l while the off-diagonal converges; in the ordered phase both
converge to the same value, so Theta -> p* 1 1^T).

Run:  python figures/make_kernels.py        (writes figures/kernels_angle.png)
"""
from __future__ import annotations

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from meanfield.kernels import kernels  # noqa: E402
from meanfield.network import Network  # noqa: E402

PHASES = {"ordered": (1.0, 0.5), "chaotic": (4.0, 0.05)}
DEPTHS = [1, 2, 4, 8, 16, 32, 64]


def _chi1(wv, bv, n_iter=500):
    """chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2] at the fixed point of the length map (Gauss-Hermite, 200 nodes)."""
    z, w = np.polynomial.hermite_e.hermegauss(200)
    w = w / w.sum()
    q = 1.0
    for _ in range(n_iter):
        q = wv * np.sum(w * np.tanh(np.sqrt(q) * z) ** 2) + bv
    return wv * np.sum(w * (1 - np.tanh(np.sqrt(q) * z) ** 2) ** 2)


def main(out=None):
    out = out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels_angle.png")
    theta = np.linspace(0.0, np.pi, 181)
    x2 = np.sqrt(2.0) * np.stack([np.cos(theta), np.sin(theta)], axis=1)
    x1 = x2[:1]
    fig, axes = plt.subplots(3, 2, figsize=(9.5, 10.5), constrained_layout=True)
    cmap = plt.get_cmap("viridis")
    norm = matplotlib.colors.LogNorm(vmin=DEPTHS[0], vmax=DEPTHS[-1])
    for col, (phase, (wv, bv)) in enumerate(PHASES.items()):
        chi1 = _chi1(wv, bv)
        diag, off = [], []
        for depth in DEPTHS:
            r = kernels(Network("tanh", depth=depth, weight_var=wv, bias_var=bv), x1, x2)
            k, t = r.nngp[0], r.ntk[0]
            color = cmap(norm(depth))
            axes[0, col].plot(theta, k / k[0], color=color)
            axes[1, col].plot(theta, t / t[0], color=color)
            diag.append(t[0])
            off.append(t[90])
        axes[0, col].set_title(f"{phase}: tanh, $\\sigma_w^2={wv}$, $\\sigma_b^2={bv}$, $\\chi_1={chi1:.2f}$")
        axes[0, col].set_ylabel(r"$K^{(L)}(\theta) / K^{(L)}(0)$")
        axes[1, col].set_ylabel(r"$\Theta^{(L)}(\theta) / \Theta^{(L)}(0)$")
        for row in (0, 1):
            axes[row, col].set_xlabel(r"input angle $\theta$")
            axes[row, col].set_xticks([0, np.pi / 4, np.pi / 2, 3 * np.pi / 4, np.pi])
            axes[row, col].set_xticklabels(["0", r"$\pi/4$", r"$\pi/2$", r"$3\pi/4$", r"$\pi$"])
            axes[row, col].grid(alpha=0.3)
        ax = axes[2, col]
        ax.plot(DEPTHS, diag, "o-", label=r"diagonal $\Theta^{(L)}(x, x)$")
        ax.plot(DEPTHS, off, "s--", label=r"off-diagonal $\Theta^{(L)}(\theta=\pi/2)$")
        if phase == "chaotic":
            ax.set_yscale("log")
        ax.set_xscale("log", base=2)
        ax.set_xticks(DEPTHS, [str(d) for d in DEPTHS])
        ax.set_xlabel("depth $L-1$ (hidden layers)")
        ax.set_ylabel(r"NTK entry")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    cb = fig.colorbar(sm, ax=axes[:2, :], label="depth (hidden layers)", shrink=0.8)
    cb.set_ticks(DEPTHS, labels=[str(d) for d in DEPTHS])   # integer depths, not powers of ten
    cb.minorticks_off()
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
