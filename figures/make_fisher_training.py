"""Figure for meanfield.fisher_dynamics: model (true) FIM, empirical FIM and NTK along gradient-descent training.

    python figures/make_fisher_training.py

writes figures/fisher_training.png (and .svg):
  (a) MSE regression: largest eigenvalue of the model FIM (= lambda_max(Theta)/N), of the empirical FIM, along
      training -- NTK-regime predictions (lines) against tanh networks of widths 64 and 1024 (markers, mean over
      seeds);
  (b) the same for softmax cross-entropy (C = 3 classes from a teacher network);
  (c) the full non-zero spectra (cross-entropy) at the first and last step: model FIM and empirical FIM, prediction
      (lines) against the width-1024 networks (markers).
Gaussian inputs, N = 16, M_0 = 64, tanh L = 3, NTK parameterization. It prints the numbers shown.
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
from meanfield import ntk_kernel  # noqa: E402
from meanfield.fisher_dynamics import fisher_along_training  # noqa: E402
from meanfield.network import Network  # noqa: E402
from meanfield.validation import sample_ensemble, track_fisher  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
N, M0, STEPS, SEEDS = 16, 64, 100, 3
WIDTHS = [64, 1024]
CASES = {"mse": (1, 1.0), "cross_entropy": (3, 4.0)}


def _net(M):
    return Network("tanh", depth=2, weight_var=1.5, bias_var=0.1, width_ratios=[M0 / M, 1, 1])


def main():
    torch.set_num_threads(1)
    x = np.random.default_rng(1).standard_normal((N, M0))
    th = ntk_kernel(_net(256), x)
    rec = list(range(0, STEPS + 1, 5))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.6))
    for i, (loss, (C, eta)) in enumerate(CASES.items()):
        if loss == "mse":
            y = np.random.default_rng(2).standard_normal((N, C))
        else:
            teacher = sample_ensemble(_net(256), 256, 1, n_outputs=C, parameterization="ntk", device="cpu", seed=99)
            y = np.eye(C)[teacher(torch.as_tensor(x))[0].argmax(-1).numpy()]
        ax = axes[i]
        for j, M in enumerate(WIDTHS):
            ens = sample_ensemble(_net(M), M, SEEDS, n_outputs=C, parameterization="ntk", device="cpu", seed=5)
            tr = track_fisher(ens, torch.as_tensor(x), torch.as_tensor(y), eta, STEPS, loss=loss, record_steps=rec)
            th_runs = [fisher_along_training(th, y, rec, eta, tr.outputs[s, 0], loss=loss) for s in range(SEEDS)]
            model = np.mean([d.model_eigenvalues[:, -1] for d in th_runs], axis=0)
            emp = np.mean([d.empirical_eigenvalues[:, -1] for d in th_runs], axis=0)
            ls = "-" if j == len(WIDTHS) - 1 else ":"
            ax.semilogy(rec, model, color="C0", ls=ls, label=r"model $F$, theory" + (f" ($f_0$, $M={M}$)"))
            ax.semilogy(rec, emp, color="C3", ls=ls, label=r"empirical $F_{\rm emp}$, theory" + f" ($M={M}$)")
            mk = "o" if j == len(WIDTHS) - 1 else "^"
            ax.semilogy(rec, tr.model_eigenvalues[:, :, -1].mean(0), mk, color="C0", ms=4, mfc="none",
                        label=rf"model $F$, torch $M={M}$")
            ax.semilogy(rec, tr.empirical_eigenvalues[:, :, -1].mean(0), mk, color="C3", ms=4, mfc="none",
                        label=rf"empirical, torch $M={M}$")
            print(f"{loss} M={M}: lambda_max model theory {model[[0, 4, -1]]}, networks "
                  f"{tr.model_eigenvalues[:, :, -1].mean(0)[[0, 4, -1]]}; empirical theory {emp[[0, 4, -1]]}, "
                  f"networks {tr.empirical_eigenvalues[:, :, -1].mean(0)[[0, 4, -1]]}")
            if loss == "cross_entropy" and j == len(WIDTHS) - 1:
                ax2 = axes[2]
                for k, (t, c) in enumerate(((0, "C0"), (-1, "C2"))):
                    d = th_runs[0]
                    mod = d.model_eigenvalues[t][d.model_eigenvalues[t] > 1e-12 * d.model_eigenvalues[t, -1]][::-1]
                    em = d.empirical_eigenvalues[t][::-1]
                    ax2.semilogy(np.arange(1, len(mod) + 1), mod, "-", color=c,
                                 label=rf"model $F$, $t={rec[t]}$")
                    ax2.semilogy(np.arange(1, len(em) + 1), em, "--", color=c,
                                 label=rf"empirical, $t={rec[t]}$")
                    tm = tr.model_eigenvalues[0, t][::-1][:len(mod)]
                    te = tr.empirical_eigenvalues[0, t][::-1]
                    ax2.semilogy(np.arange(1, len(tm) + 1), tm, "o", color=c, ms=3, mfc="none")
                    ax2.semilogy(np.arange(1, len(te) + 1), te, "x", color=c, ms=3)
        ax.set_xlabel(r"step $t$")
        ax.set_ylabel(r"$\lambda_{\max}$")
        ax.set_title(f"({'ab'[i]}) {'MSE regression' if loss == 'mse' else 'softmax cross-entropy, C = 3'}",
                     fontsize=10)
        ax.legend(fontsize=6.5, loc="lower left")
    axes[2].set_xlabel("eigenvalue rank")
    axes[2].set_ylabel("eigenvalue")
    axes[2].set_title(rf"(c) CE spectra: theory (lines), $M={WIDTHS[-1]}$ (markers)", fontsize=10)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    from meanfield.plotting import save_figure

    save_figure(fig, os.path.join(HERE, "fisher_training"))
    print("wrote figures/fisher_training.png")


if __name__ == "__main__":
    main()
