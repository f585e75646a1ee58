"""Xiao et al. 2020 depth metrics (meanfield.trainability) against (a) the NTK of a separately built network of each
depth (meanfield.kernels) and ntk_gradient_flow, (b) the scalar theory: chi_1 from meanfield.chi1 sets the large-depth
rates -- chaotic: the predictor ratio decays by 1/chi_1 per layer and the exact metrics approach the weak-data-
dependence forms; ordered, smooth activation: kappa grows like 1 / (l chi_1^l).

Error analysis: (a) the same closed-form layer rules along two paths: agreement to a few ulps per layer, 1e-12
relative. (b) The rates are asymptotic: corrections decay like the next eigenvalue of the linearized map, ~chi_c^l
(chaotic: chi_c(c*) = 0.877 here, ~3e-5 at l = 80; tolerance 20 chi_c^l) or ~1/l^2 for the ordered l-prefactor (tested through the ratio of
kappa at l and l + 10 with the l-factor included: measured 1.3e-3 at l = 80, 8e-4 at l = 100; tolerance 5e-3).
"""
from __future__ import annotations

import numpy as np
import pytest

from meanfield import Network, chi1, chi_c, kernels, ntk_gradient_flow
from meanfield.trainability import DepthMetrics, depth_metrics


def _sphere(n, d=6, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True) * np.sqrt(d)


def test_per_depth_ntk_and_predictor_against_separate_networks():
    x = _sphere(14)
    xtr, xte, y = x[:10], x[10:], np.sin(x[:10, :2])
    m = depth_metrics("erf", 1.6, 0.05, xtr, y, xte, max_depth=6)
    for l in (1, 3, 6):
        net = Network("erf", depth=l, weight_var=1.6, bias_var=0.05)
        th, ths = kernels(net, xtr).ntk, kernels(net, xte, xtr).ntk
        lam = np.linalg.eigvalsh(th)
        assert abs(m.condition_number[l] / (lam.max() / lam.min()) - 1) < 1e-9
        ref = ntk_gradient_flow(th, ths, y, np.inf).test[0]
        np.testing.assert_allclose(m.predictor[l], ref, rtol=1e-9, atol=1e-9)
    assert m.predictor.shape == (7, 4, 2) and isinstance(m, DepthMetrics) and "chi1" in m.to_dict()
    # the finite-budget predictor approaches the t = inf one as the budget grows
    f = depth_metrics("erf", 1.6, 0.05, xtr, y, xte, max_depth=3, train_steps=1e12)
    np.testing.assert_allclose(f.predictor, m.predictor[:4], rtol=1e-6, atol=1e-8)


def test_chaotic_phase_rates_and_asymptotic_forms():
    x = _sphere(24, seed=1)
    y = np.eye(3)[np.arange(20) % 3]
    w, b = 2.5, 0.05
    m = depth_metrics("erf", w, b, x[:20], y, x[20:], max_depth=85)
    assert m.phase == "chaotic"
    c1, cc = chi1("erf", w, b), chi_c("erf", w, b)     # cc = 0.877: the slowest correction decays like cc^l
    assert abs(m.chi1 - c1) < 1e-14
    for l in (60, 70, 80):
        tol = 20 * cc ** l                           # measured ~5 cc^l (2.5e-5 .. 2e-4 at l = 80)
        assert abs(m.ratio[l + 1] / m.ratio[l] * c1 - 1) < tol
        assert abs(m.ratio[l] / m.ratio_asymptotic[l] - 1) < tol
        assert abs((m.condition_number[l] - 1) / (m.condition_number_asymptotic[l] - 1) - 1) < tol
    assert m.condition_number[85] < 1.001


def test_ordered_phase_condition_number_grows_like_inverse_l_chi1_power():
    x = _sphere(16, seed=2)
    w, b = 1.0, 0.05
    m = depth_metrics("erf", w, b, x[:12], x[:12, 0], x[12:], max_depth=110)
    assert m.phase == "ordered"
    c1 = chi1("erf", w, b)
    # kappa l chi_1^l -> const (measured 399.7, 411.3, 413.6, 414.6 at l = 40, 60, 80, 100: corrections ~1/l^2)
    for l in (80, 100):
        pred = (l / (l + 10)) * c1 ** (-10)
        assert abs(m.condition_number[l + 10] / m.condition_number[l] / pred - 1) < 5e-3
    assert np.all(np.diff(m.condition_number[5:]) > 0)
    assert m.ratio_asymptotic[100] > 0.999   # the constant predictor Ybar


def test_bad_input():
    x = _sphere(5)
    with pytest.raises(ValueError, match="max_depth"):
        depth_metrics("relu", 2.0, 0.1, x, x[:, 0], x, max_depth=0)
    with pytest.raises(ValueError, match="x_test"):
        depth_metrics("relu", 2.0, 0.1, x, x[:, 0], x[:, :2])
    with pytest.raises(ValueError, match="y_train"):
        depth_metrics("relu", 2.0, 0.1, x, x[:3, 0], x)
