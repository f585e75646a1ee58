"""Figure for meanfield.softmax_dynamics (Karakida, Akaho & Amari 2021, Fig. 5): cross-entropy training in the NTK
regime and the softmax FIM along training.

    python figures/make_softmax_dynamics.py

writes figures/softmax_dynamics.png (and .svg):
  (a) training loss: NTK-regime prediction (the linearised network's gradient descent, line; its gradient-flow
      limit integrated by solve_ivp, dotted) against tanh networks of widths 64 and
      512 trained by gradient descent in torch (markers, mean over seeds);
  (b) largest eigenvalue of the softmax FIM along training: prediction (line), Karakida's bounds with the softmax
      outputs of each step substituted (band), the networks (markers); the MSE FIM's lambda_max = lambda_max(Theta)/N
      (dashed; constant in the NTK regime) and its measured values.
Gaussian inputs (N = 32, M_0 = 128), C = 3 classes given by a teacher network of the same architecture.
It prints the numbers shown.
"""
from __future__ import annotations

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
from meanfield import fisher_statistics, ntk_kernel  # noqa: E402
from meanfield.network import Network  # noqa: E402
from meanfield.softmax_dynamics import cross_entropy_ntk_dynamics  # noqa: E402
from meanfield.validation import sample_ensemble, train_gd_cross_entropy  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
N, C, M0, ETA, STEPS, SEEDS = 32, 3, 128, 4.0, 300, 2
WIDTHS = [64, 512]


def _net(M):
    return Network("tanh", depth=2, weight_var=1.5, bias_var=0.1, width_ratios=[M0 / M, 1, 1])


def main():
    torch.set_num_threads(1)
    x = np.random.default_rng(1).standard_normal((N, M0))
    teacher = sample_ensemble(_net(256), 256, 1, n_outputs=C, parameterization="ntk", device="cpu", seed=99)
    y = np.eye(C)[teacher(torch.as_tensor(x))[0].argmax(-1).numpy()]
    th = ntk_kernel(_net(256), x)
    fs = fisher_statistics(_net(256), 256, N, C, parameterization="ntk")
    rec = list(range(0, STEPS + 1, 10))
    fine = np.linspace(0, STEPS, 301)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
    for j, M in enumerate(WIDTHS):
        ens = sample_ensemble(_net(M), M, SEEDS, n_outputs=C, parameterization="ntk", device="cpu", seed=5)
        run = train_gd_cross_entropy(ens, torch.as_tensor(x), torch.as_tensor(y), ETA, STEPS, record_steps=rec)
        flows = [cross_entropy_ntk_dynamics(th, y, fine, ETA, run.logits[s, 0], kappa1=fs.kappa1,
                                            kappa2=fs.kappa2, discrete=True) for s in range(SEEDS)]
        flow = np.mean([cross_entropy_ntk_dynamics(th, y, fine, ETA, run.logits[s, 0]).loss for s in range(SEEDS)],
                       axis=0)
        loss_th = np.mean([d.loss for d in flows], axis=0)
        lam_th = np.mean([d.fisher_lambda_max for d in flows], axis=0)
        lo = np.mean([d.fisher_lower for d in flows], axis=0)
        up = np.mean([d.fisher_upper for d in flows], axis=0)
        col = f"C{j}"
        axes[0].semilogy(fine, loss_th, color=col, label=rf"NTK theory ($f_0$ of $M={M}$)")
        axes[0].semilogy(fine, flow, color=col, ls=":", lw=1, label="gradient flow" if j == 0 else None)
        axes[0].semilogy(rec, run.loss.mean(0), "o", color=col, ms=4, mfc="none", label=rf"torch, $M={M}$")
        if j == len(WIDTHS) - 1:
            axes[1].plot(fine, lam_th, color="C0", label=r"$\lambda_{\max}(F_{\rm CE})$ theory")
            axes[1].fill_between(fine, lo, up, color="C0", alpha=0.2, label="bounds (Theorem 3.3)")
            axes[1].axhline(flows[0].mse_lambda_max, color="k", ls="--", label=r"$\lambda_{\max}(F_{\rm MSE})$ theory")
        axes[1].plot(rec, run.fisher_lambda_max.mean(0), "o", color=col, ms=4, mfc="none",
                     label=rf"$\lambda_{{\max}}(F_{{\rm CE}})$, $M={M}$")
        axes[1].plot(rec, run.mse_lambda_max.mean(0), "s", color=col, ms=3, mfc="none",
                     label=rf"$\lambda_{{\max}}(F_{{\rm MSE}})$, $M={M}$")
        idx = [int(np.argmin(np.abs(fine - r))) for r in rec]
        print(f"M={M}: loss theory {loss_th[idx][[0, 5, -1]]} (flow {flow[idx][[0, 5, -1]]}), networks "
              f"{run.loss.mean(0)[[0, 5, -1]]}")
        print(f"  CE-FIM lambda_max theory {lam_th[idx][[0, 5, -1]]}, networks "
              f"{run.fisher_lambda_max.mean(0)[[0, 5, -1]]}, bounds [{lo[0]:.4f}, {up[0]:.4f}] at t=0")
        print(f"  MSE-FIM lambda_max theory {flows[0].mse_lambda_max:.4f}, networks "
              f"{run.mse_lambda_max.mean(0)[[0, -1]]}")
    axes[0].set_xlabel(r"step $t$")
    axes[0].set_ylabel(r"cross-entropy loss")
    axes[0].set_title(rf"(a) tanh $L=3$, $N={N}$, $C={C}$, $\eta={ETA:g}$ (NTK param.)", fontsize=10)
    axes[0].legend(fontsize=8)
    axes[1].set_yscale("log")
    axes[1].set_xlabel(r"step $t$")
    axes[1].set_ylabel(r"$\lambda_{\max}$")
    axes[1].set_title("(b) largest FIM eigenvalue along training", fontsize=10)
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    from meanfield.plotting import save_figure

    save_figure(fig, os.path.join(HERE, "softmax_dynamics"))
    print("wrote figures/softmax_dynamics.png")


if __name__ == "__main__":
    main()
