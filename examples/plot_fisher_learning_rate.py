"""
Fisher spectrum and the largest stable learning rate
====================================================

The Fisher information matrix (FIM) of a wide network has a pathological spectrum (Karakida, Akaho & Amari 2019):
most eigenvalues are close to zero while a few outliers grow with the width :math:`M`, the largest like
:math:`\\lambda_{\\max} \\approx \\alpha M ((T-1)/T\\,\\kappa_2 + \\kappa_1/T)`. Gradient descent on the squared loss
is stable at a minimum for learning rates :math:`\\eta < 2/\\lambda_{\\max}` (the math page, sec. 5, and
``docs/fisher.md``).

Here :func:`meanfield.fisher_statistics` gives these statistics at infinite width, and
:func:`meanfield.finite_width_fisher` computes the exact spectrum of random finite networks (numpy) to compare.
"""
import matplotlib.pyplot as plt
import numpy as np

import meanfield as mf

net = mf.Network("tanh", depth=3, weight_var=2.0, bias_var=0.1)
n_samples, n_outputs = 8, 1

# %%
# Theory against sampled networks, for growing width
widths = [32, 64, 128, 256]
theory = [mf.fisher_statistics(net, width=M, n_samples=n_samples, n_outputs=n_outputs) for M in widths]
sampled = np.array([[mf.finite_width_fisher(net, M, n_samples, n_outputs, seed=s).lambda_max for s in range(10)]
                    for M in widths])
fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
ax.plot(widths, [t.lambda_max for t in theory], "k-", label=r"theory ($M\to\infty$ statistics)")
ax.errorbar(widths, sampled.mean(axis=1), yerr=sampled.std(axis=1, ddof=1) / np.sqrt(sampled.shape[1]), fmt="o",
            color="C3", label="10 random networks (mean $\\pm$ s.e.)")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xticks(widths, [str(M) for M in widths])
ax.set_xlabel("width $M$")
ax.set_ylabel(r"$\lambda_{\max}$ of the FIM")
ax.legend(fontsize=8)
for M, t, s in zip(widths, theory, sampled):
    print(f"M={M:4d}: lambda_max theory {t.lambda_max:9.3f}, sampled {s.mean():9.3f} +- {s.std(ddof=1):.3f}, "
          f"eta_c = 2/lambda_max = {t.eta_critical:.4g}")

# %%
# The sampled largest eigenvalue lies above the theory at small widths and approaches it as :math:`M` grows: the
# theory is the :math:`M \to \infty` limit, and the largest of several random eigenvalues is biased upwards at finite
# :math:`M` (``docs/fisher.md``, sec. 2). The learning rate :math:`2/\lambda_{\max}` is therefore an upper bound that
# becomes sharp for wide networks.

# %%
# The spectrum of random networks: :math:`C T` non-zero eigenvalues (from the dual Gram matrix), one outlier near
# :math:`\lambda_{\max}` and a bulk near :math:`\alpha M(\kappa_1-\kappa_2)/T`, here for 4 networks of width 256.
M, T = 256, 32
stats = mf.fisher_statistics(net, width=M, n_samples=T)
fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
for seed in range(4):
    ev = np.sort(mf.finite_width_fisher(net, M, T, 1, seed=seed).eigenvalues)[::-1]
    ax.plot(np.arange(1, ev.size + 1), ev, "o", ms=4, alpha=0.7, label="4 networks, one colour each" if seed == 0 else None)
ax.axhline(stats.lambda_max, color="k", ls="--", label=r"theory $\lambda_{\max}$")
ax.axhline(stats.bulk_eigenvalue, color="C2", ls=":", label=r"theory bulk $\alpha M(\kappa_1-\kappa_2)/T$")
ax.set_yscale("log")
ax.set_xlabel("rank")
ax.set_ylabel(r"non-zero eigenvalue $\lambda$ of the FIM")
ax.legend(fontsize=8)
print(stats)

# %%
# Per-layer blocks of the FIM as a table (pandas):
print(stats.to_dataframe().to_string(index=False))
