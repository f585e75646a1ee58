"""
Deep linear networks at finite width
====================================

For linear activations the finite-width theory is exact. The prior of one output is not Gaussian at finite width:
its excess kurtosis is :math:`3(\\prod_l (1 + 2/N_l) - 1) \\approx 6\\,\\mathrm{depth}/N` and its density is a Meijer
G-function (Zavatone-Veth & Pehlevan 2021; Hanin & Zlokapa 2023). The Bayesian posterior keeps the NNGP mean and
rescales the variance by a kernel renormalization (Li & Sompolinsky 2021; the math page, sec. 6).
"""
import matplotlib.pyplot as plt
import numpy as np

import meanfield as mf

depth, width = 3, 4

# %%
# The prior density against samples of random linear networks (numpy)
prior = mf.deep_linear_prior(depth, width)
print(prior)
rng = np.random.default_rng(0)
n = 200_000
f = rng.standard_normal(n)              # the input contributes |x|^2/N_0 = 1: u^1 ~ N(0, 1) per unit
h = rng.standard_normal((n, width))     # first hidden layer, N_1 = width units
for _ in range(depth - 1):
    W = rng.standard_normal((n, width, width)) / np.sqrt(width)
    h = np.einsum("nij,nj->ni", W, h)
f = np.einsum("ni,ni->n", rng.standard_normal((n, width)) / np.sqrt(width), h)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
ax = prior.plot(ax=axes[0])
ax.hist(f, bins=200, range=(-5, 5), density=True, histtype="step", color="C3", label=f"{n} sampled networks")
ax.legend(fontsize=8)
ax.set_title(f"prior of one output: depth {depth}, width {width}")
kurt = np.mean(f ** 4) / np.mean(f ** 2) ** 2 - 3
print(f"excess kurtosis: exact {prior.excess_kurtosis:.3f}, sampled {kurt:.3f}")

# %%
# The posterior at finite width: the predictive variance grows or shrinks with the width against the NNGP, by the
# factor the kernel renormalization predicts.
X = rng.standard_normal((20, 30))
y = X @ rng.standard_normal(30) / np.sqrt(30)
X_test = rng.standard_normal((5, 30))
gp = mf.nngp_linear_posterior(X, y, depth, temperature=0.01, X_test=X_test)
widths = np.array([8, 16, 32, 64, 128, 256])
ratio = [np.mean(mf.deep_linear_posterior(X, y, depth, int(N), temperature=0.01, X_test=X_test).variance
                 / gp.variance) for N in widths]
ratio_bpkr = [np.mean(mf.bpkr(X, y, depth, int(N), temperature=0.01, X_test=X_test).variance / gp.variance)
              for N in widths]
ax = axes[1]
ax.plot(widths, ratio, "o-", label="exact finite-width posterior")
ax.plot(widths, ratio_bpkr, "s--", label="kernel renormalization (BPKR)")
ax.axhline(1.0, color="k", lw=1, label=r"NNGP ($N\to\infty$)")
ax.set_xscale("log", base=2)
ax.set_xticks(widths, [str(N) for N in widths])
ax.set_xlabel("hidden width $N$")
ax.set_ylabel("predictive variance / NNGP variance")
ax.legend(fontsize=8)
