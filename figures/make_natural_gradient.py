"""Figure for meanfield.natural_gradient (Karakida & Osawa 2020): NGD with exact and approximate Fisher information.

    python figures/make_natural_gradient.py

writes figures/natural_gradient.png (and .svg):
  (a) training loss of GD and of NGD with the full, block-diagonal (layer-wise), K-FAC and unit-wise Fisher matrices:
      infinite-width predictions (lines, eta alpha = 1/2 for the NGD variants) and tanh networks of width 1024
      trained in torch (markers, mean over seeds);
  (b) deviation of the finite networks' curves from the prediction against width (rms over seeds): O(1/sqrt M) for
      GD, full, block-diagonal, K-FAC and unit-wise NGD damped by rho = 0.1 / M; the undamped (pseudo-inverse)
      unit-wise curves do not approach the prediction (see docs);
  (c) exact NGD with damping rho: the predicted loss (lines) against width-1024 networks (markers).
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
from meanfield.natural_gradient import ngd_dynamics, ngd_kernel  # noqa: E402
from meanfield.network import Network  # noqa: E402
from meanfield.validation import sample_ensemble, train_ngd  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
NET = Network("tanh", depth=2, weight_var=1.5, bias_var=0.1)
N, STEPS, SEEDS = 8, 8, 3
WIDTHS = [64, 128, 256, 512, 1024]
METHODS = ["gd", "full", "block_diagonal", "kfac", "unit_wise", "unit_wise_damped"]
LABELS = {"gd": "GD", "full": "NGD (full FIM)", "block_diagonal": "block-diagonal", "kfac": "K-FAC",
          "unit_wise": r"unit-wise, $\rho=0$", "unit_wise_damped": r"unit-wise, $\rho=0.1/M$"}
COLOURS = {"gd": "k", "full": "C0", "block_diagonal": "C1", "kfac": "C2", "unit_wise": "C3",
           "unit_wise_damped": "C4"}
RHO_TILDE = 0.1   # unit-wise damping rho = RHO_TILDE / M: the regime in which finite networks follow the prediction


def _data(M0):
    x = np.random.default_rng(1).standard_normal((N, M0))
    y = np.random.default_rng(2).standard_normal((N, 1))
    return x, y


def _eta(method, x, M, damping):
    if method == "gd":
        return 1.0
    return 0.5 / ngd_kernel(NET, x, method=method, width=M, damping=damping).alpha


def _run(method, M, damping=0.0):
    if method == "unit_wise_damped":
        method, damping = "unit_wise", RHO_TILDE / M
    ens = sample_ensemble(NET, M, SEEDS, parameterization="ntk", device="cpu", seed=7)
    x, y = _data(ens.widths[0])
    eta = _eta(method, x, M, damping)
    run = train_ngd(ens, torch.as_tensor(x), torch.as_tensor(y), eta, STEPS, method=method, damping=damping)
    th = [ngd_dynamics(NET, x, y, eta, STEPS, method=method, damping=damping, width=M, f0_train=run.train[s, 0])
          for s in range(SEEDS)]
    err = [np.abs(run.train[s] - th[s].train).max() / np.abs(run.train[s, 0] - y).max() for s in range(SEEDS)]
    return run, th, float(np.sqrt(np.mean(np.square(err))))


def main():
    torch.set_num_threads(1)
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.9))
    ax = axes[0]
    steps = np.arange(STEPS + 1)
    errs = {m: [] for m in METHODS}
    for m in METHODS:
        for M in WIDTHS:
            run, th, e = _run(m, M)
            errs[m].append(e)
            if M == WIDTHS[-1]:
                pred = np.mean([t.loss for t in th], axis=0)
                ax.semilogy(steps, pred, color=COLOURS[m], label=LABELS[m])
                ax.semilogy(steps, run.loss.mean(0), "o", color=COLOURS[m], ms=4, mfc="none")
        print(f"{m:15s} rms deviation vs width {WIDTHS}: " + ", ".join(f"{e:.2e}" for e in errs[m]))
    ax.set_xlabel(r"step $t$")
    ax.set_ylabel(r"training loss $\mathcal{L}_t$")
    ax.set_title(rf"(a) tanh, $L=3$, $N={N}$, $M={WIDTHS[-1]}$, $\eta\alpha=1/2$", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")

    ax = axes[1]
    Ms = np.array(WIDTHS, dtype=float)
    for m in METHODS:
        ax.loglog(Ms, errs[m], "o-", color=COLOURS[m], label=LABELS[m], ms=4)
    ax.loglog(Ms, 0.5 / np.sqrt(Ms), "k:", label=r"$\propto M^{-1/2}$")
    ax.set_xlabel(r"width $M$")
    ax.set_ylabel(r"$\max_t |f_t - f_t^{\rm NTK}| / |f_0 - y|$")
    ax.set_title("(b) deviation from the NTK-regime prediction", fontsize=10)
    ax.legend(fontsize=7, ncol=2)

    ax = axes[2]
    for i, rho in enumerate([0.0, 1e-3, 1e-2, 1e-1]):
        run, th, e = _run("full", WIDTHS[-1], damping=rho)
        ax.semilogy(steps, np.mean([t.loss for t in th], axis=0), color=f"C{i}", label=rf"$\rho={rho:g}$")
        ax.semilogy(steps, run.loss.mean(0), "o", color=f"C{i}", ms=4, mfc="none")
        print(f"damping {rho:g}: predicted loss at t={STEPS} {np.mean([t.loss[-1] for t in th]):.3e}, "
              f"networks {run.loss[:, -1].mean():.3e}, rms deviation {e:.2e}")
    ax.set_xlabel(r"step $t$")
    ax.set_ylabel(r"training loss $\mathcal{L}_t$")
    ax.set_title(r"(c) exact NGD with damping, $\eta = 1/2$", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    from meanfield.plotting import save_figure

    save_figure(fig, os.path.join(HERE, "natural_gradient"))
    print("wrote figures/natural_gradient.png")


if __name__ == "__main__":
    main()
