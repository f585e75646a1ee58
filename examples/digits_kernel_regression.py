"""
Digits: kernel accuracy against depth, next to trained torch networks (not run in the docs build)
=================================================================================================

NNGP and NTK regression / classification on scikit-learn's digits (shipped with scikit-learn: no download), against
depth and weight_var around the critical line of erf networks (bias_var = 0.05), next to finite torch networks trained
by gradient descent.

Data: the 1797 8x8 digits, centred per pixel and scaled to ``|x|^2 / M_0 = 1``; 500 training and 500 test images (fixed
seed); targets one-hot (10 outputs, MSE), prediction = argmax. Infinite-width predictors (meanfield): the NNGP
posterior mean K_*X (K + s I)^{-1} Y and the NTK-GP mean at the end of training Theta_*X (Theta + s I)^{-1} Y, with a
small ridge s = 1e-4 x mean diagonal (neural-tangents' diag_reg convention). All depths 0..32 for one weight_var come
from one layer sweep (meanfield.trainability.kernels_by_depth). Finite networks (torch, CPU): width 256, NTK
parameterization with the same weight_var / bias_var, full-batch gradient descent (learning rate n / lambda_max,
500 steps, float32) on the MSE, depths 1 and 2, both the raw network f (one draw of the NTK-GP) and the centred
f - f_0 (whose outputs the NTK-GP mean predicts), next to the NTK-GP mean at the same training time.

Run:  python examples/digits_kernel_regression.py     (about 3-4 min on one core; writes figures/digits_accuracy.png and
      figures/digits_accuracy.csv)
"""
from __future__ import annotations

import csv
import os
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
from meanfield import critical_weight_var, gp_posterior  # noqa: E402
from meanfield.trainability import kernels_by_depth  # noqa: E402

ACT, BIAS, MAX_DEPTH, RIDGE = "erf", 0.05, 32, 1e-4
N_TRAIN, N_TEST, SEED = 500, 500, 0
DEPTHS = [1, 2, 4, 8, 16, 32]
TORCH_DEPTHS = [1, 2]
WIDTH, STEPS = 256, 500
SWEEP_WIDTHS = [256, 1024, 4096]


def load():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    X = X - X.mean(axis=0)
    X = X / np.linalg.norm(X, axis=1, keepdims=True) * np.sqrt(X.shape[1])
    idx = np.random.default_rng(SEED).permutation(len(X))
    tr, te = idx[:N_TRAIN], idx[N_TRAIN:N_TRAIN + N_TEST]
    return X[tr], y[tr], X[te], y[te]


def kernel_scores(w, xtr, ytr, xte, yte):
    """Test accuracy and RMSE of the NNGP and NTK predictors for depths 0..MAX_DEPTH at weight_var w."""
    Y = np.eye(10)[ytr]
    m = len(xte)
    Ks, Ts = kernels_by_depth(ACT, w, BIAS, np.vstack([xte, xtr]), MAX_DEPTH)
    out = {}
    for name, mats in (("nngp", Ks), ("ntk", Ts)):
        acc, rmse = [], []
        for A in mats:
            tr = A[m:, m:]
            s = RIDGE * float(np.mean(np.diag(tr)))
            mean = gp_posterior(tr, A[:m, m:], Y, noise_var=s).mean
            acc.append(float(np.mean(np.argmax(mean, axis=1) == yte)))
            rmse.append(float(np.sqrt(np.mean((mean - np.eye(10)[yte]) ** 2))))
        out[name] = (np.array(acc), np.array(rmse))
    return out


def torch_score(w, depth, lam_max, xtr, ytr, xte, yte, centred, width=WIDTH, seed=0):
    """A finite erf network of the same weight_var / bias_var in the NTK parameterization, trained by full-batch
    gradient descent on L = (1/(2n)) sum_i |g(x_i) - y_i|^2 with learning rate n / lambda_max (half the largest stable
    rate of the linearized dynamics, lambda_max of the infinite-width NTK) for STEPS steps: the regime the NTK
    describes. ``centred``: g = f - f_0 (the network minus its frozen initial function), whose trained outputs the
    NTK-GP *mean* predicts; otherwise g = f, one draw of the NTK-GP. Returns (test accuracy, train accuracy, test
    outputs)."""
    import torch

    torch.manual_seed(seed)
    dims = [xtr.shape[1]] + [width] * depth + [10]
    Ws = [torch.randn(dims[i + 1], dims[i], requires_grad=True) for i in range(depth + 1)]
    bs = [torch.randn(dims[i + 1], requires_grad=True) for i in range(depth + 1)]

    def f(x):
        h = x
        for i in range(depth + 1):
            h = (w / dims[i]) ** 0.5 * h @ Ws[i].T + BIAS ** 0.5 * bs[i]
            if i < depth:
                h = torch.erf(h)
        return h

    X, Xs = torch.tensor(xtr, dtype=torch.float32), torch.tensor(xte, dtype=torch.float32)
    Y = torch.tensor(np.eye(10)[ytr], dtype=torch.float32)
    with torch.no_grad():
        f0, f0s = (f(X), f(Xs)) if centred else (0.0, 0.0)
    opt = torch.optim.SGD(Ws + bs, lr=len(xtr) / lam_max)
    for _ in range(STEPS):
        opt.zero_grad()
        loss = 0.5 * ((f(X) - f0 - Y) ** 2).sum() / len(xtr)
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = (f(Xs) - f0s).numpy()
        train_acc = float(np.mean(np.argmax((f(X) - f0).numpy(), axis=1) == ytr))
    return float(np.mean(np.argmax(pred, axis=1) == yte)), train_acc, pred


def ntk_finite_time(w, depth, xtr, ytr, xte, yte):
    """Accuracy of the NTK-GP mean after the torch networks' training time (STEPS steps of learning rate
    n / lambda_max on the mean-over-examples loss), and lambda_max."""
    from meanfield import ntk_gp_regression
    from meanfield.network import Network

    net = Network(ACT, depth, weight_var=w, bias_var=BIAS)
    from meanfield import kernels

    lam_max = float(np.linalg.eigvalsh(kernels(net, xtr).ntk)[-1])
    # rate on f: eta / n with eta = n / lambda_max, i.e. time STEPS / lambda_max at unit rate
    p = ntk_gp_regression(net, xtr, np.eye(10)[ytr], xte, t=STEPS / lam_max)
    return float(np.mean(np.argmax(p.mean[0], axis=1) == yte)), lam_max, p.mean[0]


def main():
    t0 = time.time()
    xtr, ytr, xte, yte = load()
    wc = critical_weight_var(ACT, BIAS)
    grid = [0.6, 1.0, wc, 1.7, 2.0, 2.5, 3.0, 3.5]
    scores = {}
    for w in grid:
        scores[w] = kernel_scores(w, xtr, ytr, xte, yte)
        a, b = scores[w]["nngp"][0], scores[w]["ntk"][0]
        print(f"weight_var {w:.3f}: NNGP acc depth 1/4/16/32 = {a[1]:.3f}/{a[4]:.3f}/{a[16]:.3f}/{a[32]:.3f}; "
              f"NTK {b[1]:.3f}/{b[4]:.3f}/{b[16]:.3f}/{b[32]:.3f}   [{time.time() - t0:.0f} s]")
    torch_rows = []
    for w in (1.0, wc, 3.0):
        for d in TORCH_DEPTHS:
            ntk_acc, lam_max, ntk_mean = ntk_finite_time(w, d, xtr, ytr, xte, yte)
            acc, tr_acc, _ = torch_score(w, d, lam_max, xtr, ytr, xte, yte, centred=False)
            cacc, _, cpred = torch_score(w, d, lam_max, xtr, ytr, xte, yte, centred=True)
            rel = float(np.linalg.norm(cpred - ntk_mean) / np.linalg.norm(ntk_mean))
            torch_rows.append((w, d, acc, tr_acc, ntk_acc, cacc, rel))
            print(f"depth {d} weight_var {w:.3f}: torch width {WIDTH} test acc {acc:.3f} (train {tr_acc:.3f}), "
                  f"centred f - f_0 {cacc:.3f}; NTK-GP mean at the same training time {ntk_acc:.3f}; "
                  f"|centred outputs - NTK-GP mean| / |NTK-GP mean| = {rel:.3f}   [{time.time() - t0:.0f} s]")
    # width dependence at depth 1, critical weight_var: the centred network approaches the NTK-GP mean
    width_rows = []
    ntk_acc, lam_max, ntk_mean = ntk_finite_time(wc, 1, xtr, ytr, xte, yte)
    for width in SWEEP_WIDTHS:
        cacc, _, cpred = torch_score(wc, 1, lam_max, xtr, ytr, xte, yte, centred=True, width=width)
        rel = float(np.linalg.norm(cpred - ntk_mean) / np.linalg.norm(ntk_mean))
        width_rows.append((width, cacc, rel))
        print(f"depth 1, critical weight_var, width {width}: centred test acc {cacc:.3f}, |outputs - NTK-GP mean| / "
              f"|NTK-GP mean| = {rel:.3f}   [{time.time() - t0:.0f} s]")
    fig_dir = os.path.join(ROOT, "figures")
    with open(os.path.join(fig_dir, "digits_accuracy.csv"), "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["model", "weight_var", "depth", "test_accuracy", "test_rmse_or_train_accuracy"])
        for w in grid:
            for name in ("nngp", "ntk"):
                for d in range(MAX_DEPTH + 1):
                    wr.writerow([name, f"{w:.4f}", d, f"{scores[w][name][0][d]:.4f}", f"{scores[w][name][1][d]:.4f}"])
        for w, d, acc, tr_acc, ntk_acc, cacc, rel in torch_rows:
            wr.writerow([f"torch_width{WIDTH}", f"{w:.4f}", d, f"{acc:.4f}", f"{tr_acc:.4f}"])
            wr.writerow([f"torch_width{WIDTH}_centred", f"{w:.4f}", d, f"{cacc:.4f}", f"rel_dist_to_ntk_mean={rel:.4f}"])
            wr.writerow([f"ntk_gp_mean_steps{STEPS}", f"{w:.4f}", d, f"{ntk_acc:.4f}", ""])
        for width, cacc, rel in width_rows:
            wr.writerow([f"torch_width{width}_centred", f"{wc:.4f}", 1, f"{cacc:.4f}", f"rel_dist_to_ntk_mean={rel:.4f}"])
    from matplotlib.lines import Line2D

    fig, axs = plt.subplots(1, 3, figsize=(15, 4.6))
    colors = {1.0: "C0", wc: "C1", 3.0: "C2"}
    for w in (1.0, wc, 3.0):
        axs[0].plot(DEPTHS, scores[w]["nngp"][0][DEPTHS], "o-", color=colors[w])
        axs[0].plot(DEPTHS, scores[w]["ntk"][0][DEPTHS], "s--", color=colors[w], mfc="none")
        tw = [(d, a, nt, ca) for ww, d, a, _, nt, ca, _ in torch_rows if ww == w]
        axs[0].plot([r[0] for r in tw], [r[1] for r in tw], "*", ms=12, color=colors[w])
        axs[0].plot([r[0] for r in tw], [r[3] for r in tw], "P", ms=8, color=colors[w], mfc="none")
        axs[0].plot([r[0] for r in tw], [r[2] for r in tw], "x", ms=9, color=colors[w])
    phase = [Line2D([], [], color=colors[w], lw=3, label=lab) for w, lab in
             ((1.0, "ordered 1.0"), (wc, f"critical {wc:.3f}"), (3.0, "chaotic 3.0"))]
    kind = [Line2D([], [], color="k", marker="o", ls="-", label="NNGP (t = inf)"),
            Line2D([], [], color="k", marker="s", ls="--", mfc="none", label="NTK (t = inf)"),
            Line2D([], [], color="k", marker="*", ls="", ms=10, label=f"torch f, width {WIDTH}"),
            Line2D([], [], color="k", marker="P", ls="", mfc="none", label="torch f - f0"),
            Line2D([], [], color="k", marker="x", ls="", label="NTK-GP mean, same time")]
    leg = axs[0].legend(handles=phase, title="weight_var", fontsize=7, title_fontsize=7, loc="lower left")
    axs[0].add_artist(leg)
    axs[0].legend(handles=kind, fontsize=7, loc="lower center")
    axs[0].set_ylim(0.0, 1.02)
    axs[0].set_xscale("log", base=2)
    axs[0].set_xlabel("depth (hidden layers)")
    axs[0].set_ylabel("test accuracy")
    axs[0].set_title("accuracy against depth")
    for d, ls in ((1, ":"), (8, "-"), (32, "--")):
        axs[1].plot(grid, [scores[w]["nngp"][0][d] for w in grid], "o" + ls, color="C3", label=f"NNGP depth {d}")
        axs[1].plot(grid, [scores[w]["ntk"][0][d] for w in grid], "s" + ls, color="C4", mfc="none",
                    label=f"NTK depth {d}")
    for ax in axs[1:]:
        ax.axvline(wc, color="k", lw=0.8, ls="--")
    axs[1].set_xlabel(r"weight_var $\sigma_w^2$ (dashed: critical)")
    axs[1].set_ylabel("test accuracy")
    axs[1].set_title("accuracy against weight_var")
    axs[1].legend(fontsize=7)
    for d, ls in ((1, ":"), (8, "-"), (32, "--")):
        axs[2].plot(grid, [scores[w]["nngp"][1][d] for w in grid], "o" + ls, color="C3", label=f"NNGP depth {d}")
        axs[2].plot(grid, [scores[w]["ntk"][1][d] for w in grid], "s" + ls, color="C4", mfc="none",
                    label=f"NTK depth {d}")
    axs[2].set_xlabel(r"weight_var $\sigma_w^2$")
    axs[2].set_ylabel("test RMSE (one-hot targets)")
    axs[2].set_title("regression error against weight_var")
    axs[2].legend(fontsize=7)
    fig.suptitle(f"digits, {ACT}, bias_var {BIAS}: n_train {N_TRAIN}, n_test {N_TEST}, ridge {RIDGE:g} x mean "
                 f"diagonal; torch: width {WIDTH}, gradient descent {STEPS} steps at lr n / lambda_max", fontsize=10)
    fig.tight_layout()
    out = os.path.join(fig_dir, "digits_accuracy.png")
    fig.savefig(out, dpi=120)
    print("wrote", out, f"[{time.time() - t0:.0f} s]")


if __name__ == "__main__":
    main()
