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
fig, ax = plt.subplots(figsize=(6, 4))
ax.set_title(f"prior of one output: depth {depth}, width {width}")
prior.plot(ax=ax)
counts, edges = np.histogram(f, bins=100, range=(-5, 5))
centres = 0.5 * (edges[1:] + edges[:-1])
ok = counts > 0
ax.plot(centres[ok], counts[ok] / (n * np.diff(edges)[ok]), ".", color="C3", ms=4, label=f"{n} sampled networks")
ax.legend(fontsize=8)
kurt = np.mean(f ** 4) / np.mean(f ** 2) ** 2 - 3
print(f"excess kurtosis: exact {prior.excess_kurtosis:.3f}, sampled {kurt:.3f}")

# %%
# The posterior at finite width, in Li & Sompolinsky's proportional limit: :math:`P` examples and hidden width
# :math:`N` grow together at :math:`P/N = 1/2` (input dimension :math:`N_0 = N`). The predictive variance at a test
# input differs from the NNGP's by a finite factor, the kernel renormalization (BPKR); the exact finite-width result
# (Hanin & Zlokapa's Meijer-G ratio) approaches it as :math:`1/N`.
widths = np.array([16, 32, 64, 128, 256])
exact, renorm = [], []
for N in widths:
    P = N // 2
    X = rng.standard_normal((P, N))
    y = 2.0 * X @ rng.standard_normal(N) / np.sqrt(N)   # a linear teacher
    X_test = rng.standard_normal((1, N))
    gp = mf.nngp_linear_posterior(X, y, depth, temperature=1e-3, X_test=X_test)
    exact.append(float(mf.deep_linear_posterior(X, y, depth, int(N), temperature=1e-3, X_test=X_test).variance[0]
                       / gp.variance[0]))
    renorm.append(float(mf.bpkr(X, y, depth, int(N), temperature=1e-3, X_test=X_test).variance[0] / gp.variance[0]))
    print(f"N={N:4d}, P={P:4d}: exact/NNGP = {exact[-1]:.4f}, BPKR/NNGP = {renorm[-1]:.4f}")
fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
gap = np.array(exact) / np.array(renorm) - 1.0
ax.plot(widths, gap, "o-", label="exact / BPKR $- 1$")
ax.plot(widths, gap[0] * widths[0] / widths, "k--", lw=1, label=r"$\propto 1/N$")
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xticks(widths, [str(N) for N in widths])
ax.set_xlabel(r"hidden width $N$ ($P = N/2$ examples)")
ax.set_ylabel("relative difference of the predictive variances")
ax.set_title("finite width against kernel renormalization")
ax.legend(fontsize=8)
