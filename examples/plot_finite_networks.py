"""
Check a prediction against finite networks
==========================================

Every number meanfield computes is a statement about random networks of infinite width. This tutorial tests two of
them on small torch networks: the layer-by-layer length :math:`q^l` and correlation :math:`c^l` of two inputs
(the math page, sec. 2), and the NNGP covariance of the outputs. The Monte-Carlo error shrinks with the number of
networks, the finite-width bias like :math:`1/M`. (The full check of every quantity, with width scaling, is
``python -m meanfield.validation run``.)
"""
import matplotlib.pyplot as plt
import numpy as np
import torch

import meanfield as mf

torch.manual_seed(0)
depth, weight_var, bias_var = 8, 1.5, 0.05
net = mf.Network("tanh", depth=depth, weight_var=weight_var, bias_var=bias_var)

# two inputs of dimension 64 with |x|^2/M_0 = 1 and overlap x.x'/M_0 = 0.3
M0 = 64
x1 = torch.randn(M0, dtype=torch.float64)
x1 *= np.sqrt(M0) / x1.norm()
x2 = torch.randn(M0, dtype=torch.float64)
x2 -= (x2 @ x1) / (x1 @ x1) * x1
x2 *= np.sqrt(M0) / x2.norm()
x2 = 0.3 * x1 + np.sqrt(1 - 0.3 ** 2) * x2
theory = mf.forward(net, input_norm=1.0, input_norm2=1.0, input_overlap=0.3)


def sample(width, n_networks):
    """q^l(x, x), c^l and the outputs of n_networks random tanh networks of the given width."""
    q = np.zeros((n_networks, depth + 1))
    c = np.zeros((n_networks, depth + 1))
    out = np.zeros((n_networks, 2))
    for s in range(n_networks):
        h = torch.stack([x1, x2], dim=1)                                # (M_0, 2)
        fan_in = M0
        for l in range(depth + 1):
            n_out = width if l < depth else 1
            W = torch.randn(n_out, fan_in, dtype=torch.float64) * np.sqrt(weight_var / fan_in)
            b = torch.randn(n_out, 1, dtype=torch.float64) * np.sqrt(bias_var)
            u = W @ h + b                                                # pre-activations of layer l + 1
            if l < depth:
                q[s, l] = float((u[:, 0] ** 2).mean())
                c[s, l] = float((u[:, 0] * u[:, 1]).mean() / torch.sqrt((u[:, 0] ** 2).mean() * (u[:, 1] ** 2).mean()))
                h, fan_in = torch.tanh(u), width
            else:
                out[s] = u[0].numpy()
    return q[:, :depth], c[:, :depth], out


widths = [32, 128, 512]
layers = np.arange(1, depth + 1)
fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
axes[0].plot(layers, theory.q1[:depth], "k-", lw=2, label=r"theory $q^l$ ($M\to\infty$)")
axes[1].plot(layers, theory.c[:depth], "k-", lw=2, label=r"theory $c^l$ ($M\to\infty$)")
for i, M in enumerate(widths):
    q, c, out = sample(M, 30)
    axes[0].errorbar(layers, q.mean(0), q.std(0, ddof=1) / np.sqrt(len(q)), fmt="o", ms=4, color=f"C{i}",
                     label=f"$M={M}$, 30 networks")
    axes[1].errorbar(layers, c.mean(0), c.std(0, ddof=1) / np.sqrt(len(c)), fmt="o", ms=4, color=f"C{i}",
                     label=f"$M={M}$")
    err = np.abs(q.mean(0) - theory.q1[:depth]) / (q.std(0, ddof=1) / np.sqrt(len(q)))
    print(f"M={M:4d}: largest |q^l - theory| in Monte-Carlo standard errors: {err.max():.2f}")
for ax, name in zip(axes, ("$q^l$", "$c^l$")):
    ax.set_xlabel("layer $l$")
    ax.set_ylabel(name)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8)
axes[0].set_title("length of one input")
axes[1].set_title("correlation of two inputs")

# %%
# The outputs: their covariance over random networks is the NNGP kernel :math:`K(x, x') = q^L(x, x')`.
q, c, out = sample(128, 300)
K = mf.nngp_kernel(net, torch.stack([x1, x2]).numpy())
emp = np.cov(out.T)
print("NNGP kernel (theory):\n", np.round(K, 4))
print("output covariance of 300 networks of width 128:\n", np.round(emp, 4))
# standard error of a sample variance of n Gaussian draws: sqrt(2/(n-1)) times the variance
print("standard error of the diagonal:", np.round(np.sqrt(2 / 299) * np.diag(K), 4))
