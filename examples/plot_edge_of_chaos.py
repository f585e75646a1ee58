"""
Choose an initialization on the edge of chaos
=============================================

A deep network trains when signals and gradients neither die out nor explode with depth. At infinite width this is a
property of two numbers, the weight variance ``weight_var`` (:math:`\\sigma_w^2`) and the bias variance ``bias_var``
(:math:`\\sigma_b^2`): the per-layer gradient factor :math:`\\chi_1 = \\sigma_w^2\\,E[\\phi'(u)^2]` at the fixed point
:math:`q^*` of the length map must be 1 (Poole et al. 2016; Schoenholz et al. 2017; the math page, sec. 2). There the
correlation depth scale :math:`\\xi_c` diverges, and a network of depth :math:`L` trains when :math:`L \\lesssim
6\\,\\xi_c` (Schoenholz et al.'s empirical rule).

This tutorial picks :math:`\\sigma_w^2` for a tanh network: the critical value for a chosen :math:`\\sigma_b^2`, its
phase diagram, and how far one may stray from it for a given depth.
"""
import matplotlib.pyplot as plt
import numpy as np

import meanfield as mf

# %%
# The critical weight variance
# ----------------------------
# :func:`meanfield.critical_weight_var` solves :math:`\chi_1 = 1` for each bias variance.
bias_var = 0.05
weight_var = mf.critical_weight_var("tanh", bias_var)
fp = mf.fixed_point("tanh", weight_var, bias_var)
print(f"sigma_w^2 = {weight_var:.6f}: q* = {fp.q_star:.4f}, chi_1 = {fp.chi_1:.12f}")

# %%
# The phase diagram
# -----------------
# Over a grid of :math:`(\sigma_w^2, \sigma_b^2)`, :math:`\chi_1` separates the ordered phase (:math:`\chi_1<1`,
# inputs become indistinguishable) from the chaotic one (:math:`\chi_1>1`, nearby inputs decorrelate). The colour
# scale is logarithmic and symmetric about 1; the dashed line is the critical line.
diagram = mf.phase_diagram("tanh", np.linspace(0.5, 4, 50), np.linspace(0, 0.5, 30))
fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
diagram.plot("chi1", ax=axes[0])
diagram.plot("xi_c", ax=axes[1])
axes[0].plot([weight_var], [bias_var], "k*", ms=12)
print(diagram)

# %%
# How close is close enough?
# --------------------------
# The depth scale :math:`\xi_c` against :math:`\sigma_w^2` at our bias variance: signals propagate through about
# :math:`6\,\xi_c` layers. For a 50-layer network we need :math:`\xi_c \gtrsim 50/6`.
curve = mf.depth_scale_curve("tanh", np.linspace(0.8, 3.5, 120), bias_var)
ax = curve.plot()
depth = 50
ax.axhline(depth / 6, color="0.3", lw=1, ls="-.", label=rf"$\xi_c = {depth}/6$")
ax.legend(loc="upper right", fontsize=8)
ok = curve.weight_vars[curve.xi_c >= depth / 6]
print(f"a {depth}-layer tanh network with sigma_b^2={bias_var} trains for sigma_w^2 in [{ok.min():.3f}, {ok.max():.3f}]")

# %%
# The results convert to pandas and xarray for further analysis (``pip install pandas xarray``).
table = curve.to_dataframe()
print(table[["weight_var", "chi1", "xi_c"]].iloc[::24].to_string(index=False))
