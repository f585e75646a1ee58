"""Signal propagation beyond fully connected networks (meanfield.signal).

Independent routes: closed forms (relu residual length map; the uniform-filter eigenvalues), and the full spatial
kernel sweep of meanfield.spatial for the CNN Fourier modes (a different code path from the linearisation).
"""
import math

import numpy as np
import pytest

import meanfield as mf
from meanfield.layers import Nonlinearity, serial
from meanfield.spatial import Conv, spatial_kernels


def test_relu_residual_closed_form():
    """relu, bias 0: E[relu(u)^2] = q/2 and E[relu'^2] = 1/2, so q^l = q0 (1 + a^2 w / 2)^l and
    chi_1 = 1 + a^2 w / 2 exactly (exponential growth: Yang & Schoenholz's relu reduced resnet); the arc-cosine
    kernel gives the correlation map c' = (c + a^2 w k(c) / 2) / (1 + a^2 w / 2), k(c) = (sqrt(1-c^2) + (pi -
    acos c) c) / pi."""
    w, a, L = 1.2, 0.8, 40
    r = mf.residual_signal("relu", w, 0.0, depth=L, alpha=a, q0=1.3, c0=0.3)
    g = 1 + a * a * w / 2
    np.testing.assert_allclose(r.q, 1.3 * g ** np.arange(L + 1), rtol=1e-12)
    np.testing.assert_allclose(r.chi1, g, rtol=1e-13)
    np.testing.assert_allclose(r.grad_sq, g ** np.arange(L + 1), rtol=1e-12)
    c = 0.3
    for l in range(1, L + 1):
        k = (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi
        c = (c + a * a * w * k / 2) / g
        assert r.c[l] == pytest.approx(c, rel=1e-12)


def test_erf_residual_is_polynomial_in_depth():
    """erf (bounded, E[erf'^2] ~ q^-1/2): q grows linearly (q ~ a^2 (w E[phi^2](inf) + b) l, E[erf(u)^2] -> 1)
    rather than converging exponentially to a fixed point, and log of the gradient grows like sqrt(l) (sum of
    a^2 w E[phi'^2] ~ l^-1/2): sub-exponential, Yang & Schoenholz 2017 Table 1 (tanh-like case)."""
    r = mf.residual_signal("erf", 1.5, 0.05, depth=400, alpha=1.0)
    assert 0.95 < r.q_exponent < 1.1
    l = r.depth[1:]
    logg = np.log(r.grad_sq[1:])               # squared gradient at the input of l blocks
    m = len(l) // 4
    coef = np.polyfit(np.sqrt(l[m:]), logg[m:], 1)
    resid = logg[m:] - np.polyval(coef, np.sqrt(l[m:]))
    assert np.max(np.abs(resid)) < 0.02 * logg[-1]
    assert np.all(r.chi1 > 1)


@pytest.mark.parametrize("orthogonal", [False, True])
def test_cnn_fourier_modes_against_spatial_sweep(orthogonal):
    """Perturb the spatially uniform fixed point of a CIRCULAR 1-D tanh CNN along one spatial diagonal with Fourier
    mode k; after D layers the full spatial sweep's perturbation norm shrinks by (chi_c |lambda_k|)^D (linear
    regime: eps = 1e-7, second-order terms ~eps, so 1e-4 relative)."""
    w, b, L, D, r_off = 2.0, 0.05, 8, 6, 2     # chaotic phase: c* < 1, the fixed point is full rank
    qs, cs = mf.qstar("tanh", w, b), mf.cstar("tanh", w, b)
    modes = mf.cnn_mode_depth_scales("tanh", w, b, (3,), (L,), orthogonal=orthogonal)
    base = qs * ((1 - cs) * np.eye(L) + cs * np.ones((L, L)))

    def run(S0):
        x = (np.linalg.cholesky(S0) * math.sqrt(L))[None]             # x x^T / C = S0, C = L channels
        layers = [Conv(1.0, 0.0, (1,))]
        for _ in range(D):
            layers += [Nonlinearity("tanh"), Conv(w, b, (3,), padding="CIRCULAR", orthogonal=orthogonal)]
        return spatial_kernels(serial(*layers), x, compute_ntk=False).nngp[0, 0]

    K0 = run(base)
    p = np.arange(L)
    for k in (0, 1, 2):
        dS = np.zeros((L, L))
        dS[p, (p + r_off) % L] = 1e-7 * np.cos(2 * np.pi * k * p / L)
        dS = dS + dS.T
        d = run(base + dS) - K0
        ratio = np.linalg.norm(d) / np.linalg.norm(dS)
        assert ratio == pytest.approx(modes.multipliers[k] ** D, rel=1e-4)
    if not orthogonal:
        assert modes.eigenvalues[1] == pytest.approx(abs(1 + 2 * math.cos(2 * math.pi / L)) / 3, rel=1e-14)
        assert np.all(modes.depth_scales[1:] < modes.depth_scales[0])
    else:
        assert np.all(modes.depth_scales == modes.depth_scales[0])


def test_layernorm_pins_q():
    """After LayerNorm every position has variance 1/(1 + eps/q) and the next Conv's q is w + b whatever the input
    scale: the length map is fixed (docs/architectures.md sec. 5)."""
    from meanfield.spatial import LayerNorm, spatial_variances

    x = np.random.default_rng(0).standard_normal((2, 5, 3)) * np.array([0.1, 10.0])[:, None, None]
    ch = serial(Conv(2.0, 0.1, (3,)), LayerNorm(), Nonlinearity("tanh"), Conv(1.5, 0.2, (3,), padding="CIRCULAR"))
    v = spatial_variances(ch, x)
    np.testing.assert_allclose(v.q[1], 1.0, rtol=1e-10)
    assert np.ptp(v.q[3]) < 1e-10      # eps / q <= 1e-10 for q >= 0.01


def test_residual_phase_diagram_has_no_ordered_phase():
    """Where the fully connected erf net is ordered (chi_1 < 1, vanishing gradients) the residual net's gradient still
    grows (every chi_1^l >= 1), and it grows with weight_var at fixed bias_var."""
    d = mf.residual_phase_diagram("erf", [0.5, 1.5, 3.0], [0.0, 0.3], depth=30)
    assert np.any(d.fc_chi1 < 1) and np.any(d.fc_chi1 > 1)
    assert np.all(d.log_grad_sq > 0)
    assert np.all(np.diff(d.log_grad_sq, axis=1) > 0)
    r = mf.residual_signal("erf", 1.5, 0.3, depth=30)
    assert d.log_grad_sq[1, 1] == pytest.approx(np.log(np.prod(r.chi1)), rel=1e-12)
