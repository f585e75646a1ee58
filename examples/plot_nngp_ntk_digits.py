"""
NNGP and NTK regression on a real data set
==========================================

An infinitely wide network is a Gaussian process (its NNGP kernel, Lee et al. 2018), and gradient descent on it is
kernel regression with its neural tangent kernel (Jacot et al. 2018; Lee et al. 2019). Both kernels depend on the
initialization: deep in the ordered phase they forget the input (every pair of inputs gets the same kernel value),
on the edge of chaos they keep it longest (Schoenholz et al. 2017; Xiao et al. 2020).

We classify handwritten digits (scikit-learn's ``load_digits``, 8x8 images, shipped with scikit-learn: no download)
by regression on one-hot labels with ReLU networks of growing depth, at the critical :math:`\\sigma_w^2 = 2` and in the
ordered phase.
"""
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits

import meanfield as mf

# %%
# Data: 400 training and 300 test images, each standardized to :math:`|x|^2/M_0 = 1`.
X, y = load_digits(return_X_y=True)
rng = np.random.default_rng(0)
idx = rng.permutation(len(y))
train, test = idx[:400], idx[400:700]
X = X - X.mean(axis=1, keepdims=True)
X = X / np.sqrt((X ** 2).mean(axis=1, keepdims=True))
Y = np.eye(10)[y] - 0.1                                     # centred one-hot targets


def accuracy(pred):
    return float(np.mean(np.argmax(pred, axis=1) == y[test]))


# %%
# Test accuracy of the NNGP posterior mean and of the fully trained (:math:`t = \infty`) NTK predictor.
depths = [1, 4, 16, 64]
results = {}
for label, weight_var in (("critical, $\\sigma_w^2=2$", 2.0), ("ordered, $\\sigma_w^2=1.2$", 1.2)):
    acc_gp, acc_ntk = [], []
    for depth in depths:
        net = mf.Network("relu", depth=depth, weight_var=weight_var, bias_var=0.05)
        post = mf.nngp_regression(net, X[train], Y[train], X[test], noise_var=1e-3)
        ntk = mf.ntk_regression(net, X[train], Y[train], X[test], t=np.inf)
        acc_gp.append(accuracy(post.mean))
        acc_ntk.append(accuracy(ntk.test[-1]))
    results[label] = (acc_gp, acc_ntk)
    print(label, "NNGP:", acc_gp, "NTK:", acc_ntk)

fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
for i, (label, (acc_gp, acc_ntk)) in enumerate(results.items()):
    ax.plot(depths, acc_gp, "o-", color=f"C{i}", label=f"NNGP, {label}")
    ax.plot(depths, acc_ntk, "s--", color=f"C{i}", label=f"NTK, {label}")
ax.set_xscale("log", base=2)
ax.set_xticks(depths, [str(d) for d in depths])
ax.set_xlabel("depth (hidden layers)")
ax.set_ylabel("test accuracy")
ax.set_title("digits: infinite-width ReLU networks")
ax.legend(fontsize=8)

# %%
# In the ordered phase the kernel of a deep network tends to a constant plus a vanishing input-dependent part, so the
# NNGP posterior loses the inputs with depth; at the critical point the correlation map approaches its fixed point
# only polynomially (ReLU), so deep kernels still separate the digits. The fully trained NTK predictor of the ordered
# network keeps its accuracy only because :math:`t = \infty` is exact here: its condition number (Xiao et al. 2020)
# says how long gradient descent would have to run to get there.
for weight_var in (2.0, 1.2):
    net = mf.Network("relu", depth=64, weight_var=weight_var, bias_var=0.05)
    theta = mf.ntk_kernel(net, X[train])
    print(f"sigma_w^2={weight_var}: NTK condition number at depth 64 = {mf.ntk_condition_number(theta):.3g}")
