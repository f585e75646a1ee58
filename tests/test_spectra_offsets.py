"""Kernel spectra with per-unit offsets (a bias, or a non-centred activation feeding layer l >= 2): the generalised
nested chain of meanfield.spectra._linear_width against independent routes.

Independent routes and error analysis:
- Fan & Wang's one-unknown recursion (tests/_fan_wang_reference.py, the pre-generalisation code kept verbatim): with one
  node per level the two-trace chain solves the same equations in other unknowns, so Stieltjes transforms agree to the
  Newton tolerance (|residual| <= 1e-13 relative) times the conditioning: asserted 1e-11 relative;
- Silverstein's scalar equation for a sample covariance with a population law (one hidden layer on orthonormal inputs
  has rows of covariance c(s) I): solved here by scalar Newton, agreement to 1e-10;
- the engine's forward map and two-input expectation (meanfield.forward q^l_{12}, meanfield.gaussian.pair_expectation)
  against the per-unit offset law's nested quadrature (Gauss-Hermite in the offset, the engine's rule in the rest):
  tau_l^2 = sigma_b^2 + sigma_w^2 E[mu_{l-1}(s)^2] and E[phi(u) phi(u')] = E[mu(s)^2] to 1e-9 (the law's nodes are
  doubled until its moments agree to 1e-9);
- the closed second-moment recursion with E[(a + b2)^2] against the contour moments (two algorithms; 1e-8);
- the density on its grid: mass 1 and moments against the contour moments (1e-3, the accuracy of the kernel spectra's
  grids, tests/test_spectra.py);
- Monte Carlo (torch, CPU, slow): Kolmogorov-Smirnov distance of the bulk of finite networks (the mean spike removed)
  shrinking with the width (M = 200, 400, 800; measured 0.033 -> 0.015 -> 0.012 for relu depth 2), and the spike at
  n E[mu_L^2] (measured within 3 %; its own fluctuation is O(1/sqrt(M)) relative: asserted 8 %).
"""
from __future__ import annotations

import numpy as np
import pytest

from meanfield import Network, conjugate_kernel_spectrum, forward, fisher_spectrum, ntk_spectrum
from meanfield.gaussian import pair_expectation
from meanfield.spectra import _linear_width as lw
from meanfield.spectra.kernels import _layer_statistics

from . import _fan_wang_reference as fw


@pytest.mark.parametrize("gamma,b2,coef", [([0.5, 0.7, 0.3], [1.0, 0.6, 0.4], [0.2, 0.3, 0.5, 1.0]),
                                           ([2.0], [1.0], [0.0, 1.0]),
                                           ([0.4, 1.5, 0.8, 0.6], [1.0, 0.9, 0.2, 0.7], [0.0, 0.0, 0.1, 0.0, 1.0])])
def test_one_node_laws_reduce_to_fan_wang(gamma, b2, coef):
    x = np.linspace(0.02, 6.0, 25) + 1e-6j
    m_ref, ok_ref = fw.stieltjes(fw.Chain(gamma, b2), coef, x, 12.0)
    m_new, ok_new = lw.stieltjes(lw.Chain(gamma, b2), coef, x, 12.0)
    assert ok_ref.all() and ok_new.all()
    np.testing.assert_allclose(m_new, m_ref, rtol=1e-11)
    # a law of several identical nodes is the same law
    laws = [(np.full(3, 1 / 3), np.full(3, 1 - b), np.full(3, b)) for b in b2]
    m_split, _ = lw.stieltjes(lw.Chain(gamma, laws=laws), coef, x, 12.0)
    np.testing.assert_allclose(m_split, m_ref, rtol=1e-11)


def _silverstein(p, c, gamma, zeta):
    """Stieltjes transform of K = (1/N) sum_i c_i z_i z_i^T (n x n, z_i ~ N(0, I_n), c_i ~ sum p delta(c), n/N = gamma):
    K = gamma Z^T C Z / n, whose companion transform solves w = -1/m + (1/gamma) E[c / (1 + c m)] at w = zeta/gamma
    (Silverstein 1995), by Newton from far above the axis down to each target."""
    out = []
    for zt in np.atleast_1d(zeta):
        m = -1.0 / (zt.real / gamma + 10j)
        for eta in np.geomspace(10.0, zt.imag / gamma, 60):
            w = zt.real / gamma + 1j * eta
            for _ in range(100):
                f = -1.0 / m + np.sum(p * c / (1 + c * m)) / gamma - w
                df = 1.0 / m ** 2 - np.sum(p * c * c / (1 + c * m) ** 2) / gamma
                step = f / df
                m = m - step
                if abs(step) < 1e-15 * abs(m):
                    break
        out.append(m / gamma)
    return np.array(out)


@pytest.mark.parametrize("net,g", [(Network("tanh", depth=1, weight_var=1.5, bias_var=1.0), 0.5),
                                   (Network("relu", depth=1, weight_var=2.0, bias_var=0.5), 1.5)])
def test_one_layer_with_bias_is_silverstein(net, g):
    st = _layer_statistics(net, g, "orthonormal")
    p, a, b2 = st["laws"][0]
    assert len(p) > 1            # a bias: a law of offsets
    chain = lw.Chain(st["gamma"], laws=st["laws"])
    zeta = np.array([0.3, 0.9, 1.7, 2.5]) + 1e-3j
    m, ok = lw.stieltjes(chain, [0.0, 1.0], zeta, 20.0)
    assert ok.all()
    np.testing.assert_allclose(m, _silverstein(p, a + b2, st["gamma"][0], zeta), rtol=1e-10)


@pytest.mark.parametrize("net", [Network("relu", depth=3, weight_var=2.0, bias_var=0.1),
                                 Network("tanh", depth=3, weight_var=1.5, bias_var=0.3),
                                 Network("gelu", depth=2, weight_var=1.8)])
def test_offset_variance_is_the_forward_covariance(net):
    st = _layer_statistics(net, 0.5, "gaussian")
    fr = forward(net, input_norm=1.0, input_overlap=0.0)
    wv, bv = net.weight_vars[0], net.bias_vars[0]
    L = net.depth
    # tau_1^2 = sigma_b^2 (the inputs are centred); tau_{l+1}^2 = sigma_b^2 + sigma_w^2 E_s[mu_l(s)^2]
    assert st["tau2"][0] == pytest.approx(bv, abs=1e-14)
    for l in range(L - 1):
        assert bv + wv * st["mean2"][l + 1] == pytest.approx(st["tau2"][l + 1], rel=1e-9)
    # the last layer's E[mu^2] (the outlier's size) against the engine's two-input expectation at covariance tau^2
    q, t2 = float(fr.q1[L - 1]), float(fr.q2[L - 1])
    assert st["mean2"][-1] == pytest.approx(float(pair_expectation(net.activations[-1], q, q, t2)), rel=1e-9)
    # law of total variance: v_l = E phi^2 - E_s mu^2 (engine's one-dimensional expectation)
    np.testing.assert_allclose(st["v"][1:], st["e"][1:] - st["mean2"][1:], rtol=1e-9)


@pytest.mark.parametrize("net", [Network("relu", depth=2, weight_var=2.0, bias_var=0.1),
                                 Network("tanh", depth=2, weight_var=1.5, bias_var=0.3)])
def test_offset_ck_moments_and_mass(net):
    sp = conjugate_kernel_spectrum(net, 0.5, n_points=120, n_moments=2)
    # contour moments (from the chain) vs the closed second-moment recursion (no chain): two algorithms
    assert sp.moments[0] == pytest.approx(sp.parameters["closed_form_m1"], rel=1e-8)
    assert sp.moments[1] == pytest.approx(sp.parameters["closed_form_m2"], rel=1e-8)
    # the first moment is E tr G_L / n = E_s Var_g phi (the mean part is removed into the outlier)
    st = _layer_statistics(net, 0.5, "gaussian")
    assert sp.moments[0] == pytest.approx(st["e"][-1] - st["mean2"][-1], rel=1e-8)
    assert sp.mass == pytest.approx(1.0, abs=1e-3)
    for k in (1, 2):
        assert sp.moment_from_density(k) == pytest.approx(sp.moments[k - 1], rel=1e-3)
    # the per-unit offsets widen the bulk: its variance exceeds that of the same chain with the law collapsed to its
    # mean (E[(a + b2)^2] > 1 = (E[a + b2])^2)
    assert sp.parameters["offset_moments"][-1][2] > 1.0 + 1e-6
    assert sp.outliers[0] == pytest.approx(0.5 * st["mean2"][-1], rel=1e-12)


def test_ntk_and_fisher_with_offsets_below_the_top_are_refused():
    with pytest.raises(ValueError, match="bias_var"):
        ntk_spectrum(Network("tanh", depth=2, bias_var=0.1), 0.5)
    with pytest.raises(ValueError, match="centred"):
        ntk_spectrum(Network("relu", depth=3, weight_var=2.0), 0.5)
    with pytest.raises(ValueError, match="centred"):
        fisher_spectrum(Network("gelu", depth=3), width=100, n_samples=50)


# ------------------------------------------------------------------ NTK / FIM: the rank-two top level (K_L, F)
def test_pair_level_algebra():
    gam, b2, coef = [0.5, 0.7, 0.3], [1.0, 0.6, 0.4], [0.2, 0.3, 0.5, 1.0]
    x = np.linspace(0.05, 5, 20) + 1e-6j
    m0, _ = lw.stieltjes(lw.Chain(gam, b2), coef, x, 10.0)
    # z_F = 0: the pair level is the scalar level (alpha = (b, *), noise (1 - b^2, *))
    al, nz = np.array([[np.sqrt(0.4), 0.3]]), np.array([[[0.6, 0.1], [0.1, 0.5]]])
    m1, _ = lw.stieltjes(lw.Chain(gam, b2, pair=(np.ones(1), al, nz, 0.0)), coef, x, 10.0)
    np.testing.assert_allclose(m1, m0, rtol=1e-12)
    # F = K_top (identical rows): z_1 K + z_F K = (z_1 + z_F) K, the 2 x 2 algebra against the scalar chain
    al, nz = np.array([[np.sqrt(0.4), np.sqrt(0.4)]]), np.array([[[0.6, 0.6], [0.6, 0.6]]])
    m2, _ = lw.stieltjes(lw.Chain(gam, b2, pair=(np.ones(1), al, nz, 0.7)), [0.2, 0.3, 0.5, 0.3], x, 10.0)
    np.testing.assert_allclose(m2, m0, rtol=1e-11)


@pytest.mark.parametrize("net", [Network("relu", depth=2, weight_var=2.0),
                                 Network("tanh", depth=1, weight_var=1.5, bias_var=0.3)])
def test_ntk_with_top_offsets_moments_and_library_kernel(net):
    from meanfield import ntk_kernel

    sp = ntk_spectrum(net, 0.5, n_points=48, n_moments=2)
    assert sp.parameters["c_top"] > 0            # the F term is present
    # contour moments (chain with the rank-two top level) vs the closed second-moment recursion with F (no chain)
    assert sp.moments[0] == pytest.approx(sp.parameters["closed_form_m1"], rel=1e-8)
    assert sp.moments[1] == pytest.approx(sp.parameters["closed_form_m2"], rel=1e-8)
    # the library's NTK (its own recursion): the diagonal minus the off-diagonal at orthogonal inputs is the bulk
    # mean, the off-diagonal (the constant, rank-one part) times n is the spike
    x = np.sqrt(8.0) * np.eye(8)[:2]
    th = ntk_kernel(net, x)
    assert sp.moments[0] == pytest.approx(th[0, 0] - th[0, 1], rel=1e-9)
    assert sp.outliers[0] == pytest.approx(0.5 * th[0, 1], rel=1e-9)
    assert sp.mass == pytest.approx(1.0, abs=1e-3)


@pytest.mark.slow
def test_fisher_relu_depth_two_is_the_scaled_ntk():
    # F = J^T J / n in the standard parameterization, equal widths, no bias: J J^T / n = (M / n) Theta / sigma_w^2
    net = Network("relu", depth=2, weight_var=2.0)
    M, n = 200, 100
    sf = fisher_spectrum(net, M, n, n_points=32, n_moments=2)
    sn = ntk_spectrum(net, n / M, n_points=32, n_moments=2)
    np.testing.assert_allclose(sf.moments, [(M / n / 2.0) * sn.moments[0], (M / n / 2.0) ** 2 * sn.moments[1]],
                               rtol=1e-9)
    _bulk_plus_outlier_is_karakidas_trace(net, sf, M, n)


def _bulk_plus_outlier_is_karakidas_trace(net, sp, M, n):
    # Karakida's order parameters (meanfield.fisher): Tr F = n m_1 (bulk) + lambda_max (the spike) up to the spike's
    # own O(1) share of the bulk and O(1/M) corrections (measured 0.4 %; asserted 2 %, as tests/test_spectra.py)
    import warnings

    from meanfield import fisher_statistics

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fs = fisher_statistics(net, width=M, n_samples=n)
    assert sp.outliers == (pytest.approx(fs.lambda_max),)
    assert n * sp.moments[0] + sp.outliers[0] == pytest.approx(fs.n_eigenvalues * fs.mean_eigenvalue, rel=0.02)


def test_fisher_with_bias_one_hidden_layer():
    net = Network("tanh", depth=1, weight_var=1.5, bias_var=0.3)
    M, n = 400, 200
    sp = fisher_spectrum(net, M, n, n_points=32, n_moments=2)
    assert sp.moments[1] == pytest.approx(sp.parameters["closed_form_m2"], rel=1e-8)
    _bulk_plus_outlier_is_karakidas_trace(net, sp, M, n)


@pytest.mark.slow
@pytest.mark.parametrize("net,widths,bound", [
    (Network("tanh", depth=1, weight_var=1.5, bias_var=0.3), (200, 800), 0.02),
    (Network("relu", depth=2, weight_var=2.0), (400, 1600), 0.045)])
def test_ntk_with_top_offsets_against_torch_networks(net, widths, bound):
    pytest.importorskip("torch")
    import torch

    from meanfield.validation.spectra_sim import kernel_eigenvalues, ks_distance

    torch.set_num_threads(1)
    g = 0.5
    sp = ntk_spectrum(net, g, n_points=200)
    ks = {}
    for M in widths:
        # spherical readout: the O(M^-1/2) fluctuation of |v|^2 / M rescales the whole bulk (same limit)
        ks[M] = np.mean([ks_distance(kernel_eigenvalues(net, int(g * M), M, seed=s, spherical_readout=True)[1][:-1],
                                     sp) for s in range(3)])
    # measured: tanh depth 1 (bias 0.3) 0.029 (M = 200), 0.009 (M = 800); relu depth 2 0.066 (400), 0.039 (800),
    # 0.014-0.032 (1600, seeds 10-13 and 0-2). relu's per-network fluctuation is large:
    # (1/N) sum_j v_j^2 P(h_j > 0 | s_j) scales B_2 by 1 + O(N^-1/2) (bulk means 4.51-4.81 against 4.63 at M = 1600), so KS ~ M^-1/2. Without the F term
    # the distance stays at 0.04-0.06 (tanh at every width, relu at 1600)
    assert ks[widths[1]] < bound and ks[widths[1]] < 0.6 * ks[widths[0]]


@pytest.mark.slow
@pytest.mark.parametrize("net", [Network("relu", depth=2, weight_var=2.0, bias_var=0.1),
                                 Network("relu", depth=3, weight_var=2.0, bias_var=0.1),
                                 Network("tanh", depth=2, weight_var=1.5, bias_var=1.0)])
def test_offset_ck_against_torch_networks(net):
    pytest.importorskip("torch")
    import torch

    from meanfield.validation.spectra_sim import kernel_eigenvalues, ks_distance

    torch.set_num_threads(1)
    g = 0.5
    sp = conjugate_kernel_spectrum(net, g, n_points=200)
    ks, top = {}, {}
    for M in (200, 400, 800):
        r = []
        for seed in range(3):
            c, _ = kernel_eigenvalues(net, int(g * M), M, seed=seed)
            r.append((ks_distance(c[:-1], sp), c[-1] / M))       # the spike removed from the bulk
        ks[M], top[M] = np.mean(r, axis=0)
    # measured (3 seeds): relu d2 0.033/0.015/0.012, relu d3 0.032/0.023/0.013, tanh d2 (bias 1) ~0.03/0.023/0.019
    assert ks[800] < 0.03 and ks[800] < 0.8 * ks[200]
    assert top[800] == pytest.approx(sp.outliers[0], rel=0.08)


@pytest.mark.slow
def test_fisher_with_bias_depth_two_against_torch_networks():
    pytest.importorskip("torch")
    import torch

    from meanfield.validation.spectra_sim import fisher_eigenvalues, ks_distance

    torch.set_num_threads(1)
    net = Network("tanh", depth=2, weight_var=1.5, bias_var=0.3)      # c_2 > 0 (the bias offsets layer 1's mean)
    ks, top = {}, {}
    for M in (200, 800):
        sp = fisher_spectrum(net, M, M // 2, n_points=150)
        r = []
        for seed in range(3):
            e = fisher_eigenvalues(net, M // 2, M, seed=seed, spherical_readout=True)
            r.append((ks_distance(e[:-1], sp), e[-1] / sp.outliers[0]))
        ks[M], top[M] = np.mean(r, axis=0)
    # measured KS 0.037 (M = 200), 0.032 (400), 0.016 (800); the top eigenvalue / Karakida's lambda_max 1.08, 1.04,
    # 0.98 (relu depth 2 with sigma_b^2 = 0.1: KS 0.100, 0.067, 0.046, the M^-1/2 fluctuation of relu networks)
    assert ks[800] < 0.025 and ks[800] < 0.7 * ks[200]
    assert top[800] == pytest.approx(1.0, abs=0.08)
