"""Depth behaviour of residual vs fully connected erf networks (after Yang & Schoenholz 2017, Table 1 and Fig. 1),
and the spatial Fourier modes of a CNN with a uniform vs a delta-orthogonal kernel (after Xiao et al. 2018, Fig. 2).

Left: length q^l against depth, log-log. The fully connected net (h^l = W phi(h^{l-1}) + b) converges exponentially
to its fixed point q*; the residual net (h^l = h^{l-1} + W phi(h^{l-1}) + b) has no fixed point and grows
polynomially, q^l ~ l. Dots: finite torch residual networks (width 512, 16 seeds, readout of 64 units:
q estimated from f.f'/64). Middle: log of the squared gradient through l layers: chi_1^l (a straight line in l) for the
fully connected net, exp(O(sqrt(l))) for the residual net (a straight line against sqrt(l), top axis).
Right: per-layer factor chi_c |lambda_k| of the spatial Fourier modes k of a CIRCULAR 3-tap 1-D tanh CNN on 16
positions at its fixed point: with a uniform filter every k != 0 mode decays faster than the uniform mode; with the
delta-orthogonal kernel all modes share the fully connected rate (Xiao et al.'s dynamical isometry for CNNs).
Fourth: phase diagram over (sigma_w^2, sigma_b^2): the residual net's log squared gradient at depth 100 is positive
everywhere (chi_1^l >= 1: no ordered, vanishing-gradient phase), while the fully connected net has its order-chaos
line chi_1 = 1 (dashed).

Run:  python figures/make_residual_depth.py      (writes figures/residual_depth.png; ~2 minutes on 2 cores)
"""
from __future__ import annotations

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import meanfield as mf  # noqa: E402
from meanfield.layers import Dense, Nonlinearity, Residual, serial  # noqa: E402

W, B, DEPTH = 1.5, 0.05, 400


def fully_connected(depth):
    tr = mf.trace(mf.Network("erf", depth=depth, weight_var=W, bias_var=B), gram=[[1.0]], compute_ntk=False)
    q = np.array([1.0] + [s.cov_out[0, 0] for s in tr.steps if isinstance(s.layer, Dense)][:-1])
    chi = np.array([W * s.qdot[0, 0] for s in tr.steps if isinstance(s.layer, Nonlinearity)])
    return q, np.concatenate([[1.0], np.cumprod(chi)])


def torch_residual_q(depths, width=512, n_seeds=16, n_out=64):
    import torch
    from meanfield.validation.networks import sample_chain

    x = np.random.default_rng(0).standard_normal((1, width))
    x *= np.sqrt(width) / np.linalg.norm(x)            # |x|^2 / M_0 = 1
    out = []
    for L in depths:
        ch = serial(*[Residual(serial(Nonlinearity("erf"), Dense(W, B)), alpha=1.0) for _ in range(L)],
                    Dense(1.0, 0.0))
        f = sample_chain(ch, width, n_seeds, n_outputs=n_out, parameterization="ntk", seed=1, device="cpu")(
            torch.as_tensor(x)).numpy()
        out.append(np.mean(f ** 2))                    # E[f^2] = 1 * q_stream + 0
    return np.array(out)


def main():
    res = mf.residual_signal("erf", W, B, depth=DEPTH, alpha=1.0, q0=1.0)
    q_fc, g_fc = fully_connected(60)
    depths = [1, 4, 16, 64, 128]
    q_torch = torch_residual_q(depths)
    fig, ax = plt.subplots(1, 4, figsize=(20, 4.2))
    l = res.depth
    ax[0].loglog(l[1:], res.q[1:], label="residual: theory")
    ax[0].loglog(depths, q_torch, "o", label="residual: torch, width 512")
    ax[0].loglog(np.arange(1, len(q_fc)), q_fc[1:], label="fully connected: theory")
    ax[0].loglog(l[10:], res.q[-1] * l[10:] / l[-1], "k:", lw=1, label="slope 1")
    ax[0].set_xlabel("depth l")
    ax[0].set_ylabel("q^l")
    ax[0].set_title(f"erf, sigma_w^2={W}, sigma_b^2={B}")
    ax[0].legend(fontsize=8)
    ax[1].plot(np.sqrt(l), np.log(res.grad_sq), label="residual: log grad^2 vs sqrt(l)")
    lf = np.arange(len(g_fc))
    ax[1].plot(np.sqrt(lf), np.log(g_fc), label="fully connected: log grad^2 (chi_1^l)")
    ax[1].set_xlabel("sqrt(depth)")
    ax[1].set_ylabel("log squared gradient")
    ax[1].legend(fontsize=8)
    for orth, style in ((False, "o-"), (True, "s--")):
        m = mf.cnn_mode_depth_scales("tanh", 2.0, 0.05, (3,), (16,), orthogonal=orth)
        ax[2].plot(m.modes[:, 0], m.multipliers, style, label="delta-orthogonal" if orth else "uniform 3-tap filter")
    ax[2].set_xlabel("spatial Fourier mode k (16 positions)")
    ax[2].set_ylabel("per-layer factor chi_c |lambda_k|")
    ax[2].set_title("CNN, tanh, sigma_w^2=2, sigma_b^2=0.05")
    ax[2].legend(fontsize=8)
    d = mf.residual_phase_diagram("erf", np.linspace(0.5, 4.0, 8), np.linspace(0.0, 0.5, 6), depth=100)
    d.plot(ax=ax[3])
    ax[3].set_title("residual erf: log grad^2 at depth 100\n(dashed: fully connected chi_1 = 1)")
    fig.tight_layout()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "residual_depth.png")
    fig.savefig(path, dpi=110)
    print("wrote", path, "| q exponent", round(res.q_exponent, 3), "| torch q", np.round(q_torch, 3),
          "theory", np.round(res.q[depths], 3))


if __name__ == "__main__":
    main()
