"""Mean subtraction in the last layer, batch / layer normalization in the hidden layers, learning-rate thresholds.

Independent routes:
* the numpy random networks of tests/test_fisher.py (``Net``: explicit per-sample back-propagation; the mean
  subtraction is applied here to the explicit Jacobian's rows) for the mean-subtracted FIM / NTK / feature metric;
* torch autograd through the whole normalized batch (meanfield.validation.normalization_sim) for BN / LN, and the
  torch ensembles of meanfield.validation.measure;
* closed forms: T = 2 and T = 3 batch means of a standardized batch (exact / 1-D quadrature), E[relu(z)] = 1/sqrt(2 pi),
  the pre-LN variances s_l by hand.

Error analysis (tolerances). As in tests/test_fisher.py every statistic of ONE network of width M deviates from the
mean-field value by a relative ``K/sqrt(M)`` (order parameters are averages over M units): K_MEAN = 4 for traces, 8
otherwise (2-4x the measured constants). With mean subtraction the ``C(T-1)``-fold level is spread like a
Marchenko-Pastur law of relative width ~ ``sqrt(T/M)``; its top edge sits at ``(1 + c sqrt(T/M))`` times the level
with c ~ 1.5-2 measured (tanh L = 4 / relu L = 3, T = 16, M = 256..4096), so ``lambda_max`` is checked in
``[level (1 - K_MEAN/sqrt(M)), level (1 + 4 sqrt(T/M) + K_MEAN/sqrt(M))]``; the lower side is also a theorem (the trace
bound, below).
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate

from meanfield import Network, feature_metric_statistics, finite_width_fisher, fisher_statistics
from meanfield.learning_rate import LearningRateThresholds, learning_rate_thresholds
from meanfield.normalization import BatchNormBound, batch_norm_lambda_max_bound, layer_norm_fisher_statistics
from tests.test_fisher import CASES, K_MEAN, K_OTHER, make_net, network, rms

T, C = 16, 2


def _proj(T_, C_):
    """I_C (x) (I_T - 1 1^T / T): rows (k, t), the mean over t of each output removed (written here independently)."""
    P = np.zeros((C_ * T_, C_ * T_))
    for k in range(C_):
        sl = slice(k * T_, (k + 1) * T_)
        P[sl, sl] = np.eye(T_) - np.full((T_, T_), 1.0 / T_)
    return P


# ----------------------------------------------------------------------------------------------------------------------
# mean subtraction: exact identities
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ntk", [False, True])
def test_mean_subtracted_jacobian_route(ntk):
    """Subtracting the batch mean of the outputs = projecting J's rows: the explicit (tiny) Jacobian with the mean
    subtracted has the spectrum that finite_width_fisher(mean_subtraction=True) builds from the dual (same draws)."""
    Tn, Cn = 5, 2
    net = make_net("tanh", 7, Tn, Cn, seed=3, ntk=ntk)
    J = net.jacobian()                          # rows (k, t)
    Jbar = J.reshape(Cn, Tn, -1)
    Jbar = (Jbar - Jbar.mean(axis=1, keepdims=True)).reshape(Cn * Tn, -1)
    ev = np.linalg.eigvalsh(Jbar @ Jbar.T / (1 if ntk else Tn))
    sp = finite_width_fisher(network("tanh"), 7, Tn, Cn, parameterization="ntk" if ntk else "standard", seed=3,
                             mean_subtraction=True)
    np.testing.assert_allclose(sp.eigenvalues, ev, rtol=1e-9, atol=1e-10 * ev.max())
    # C zero eigenvalues (the eigenvectors 1_T of each output are annihilated)
    assert np.all(np.abs(ev[:Cn]) < 1e-9 * ev.max())


def test_theory_identities():
    """P K P = (kappa_1 - kappa_2) P: lambda_max with mean subtraction = the unsubtracted bulk level; trace drops by
    the outlier's share; NTK level kappa'_1 - kappa'_2 independent of M and T."""
    net = network("relu")
    a, b = fisher_statistics(net, 512, T, C), fisher_statistics(net, 512, T, C, mean_subtraction=True)
    assert np.isclose(b.lambda_max, a.bulk_eigenvalue, rtol=1e-12)
    assert b.lambda_max_multiplicity == C * (T - 1) and b.condition_number == 1.0
    # Tr(P K P) = T k1 - (k1 + (T-1) k2) per output
    assert np.isclose(b.mean_eigenvalue * b.n_eigenvalues,
                      a.mean_eigenvalue * a.n_eigenvalues - C * a.lambda_max, rtol=1e-12)
    levels = [fisher_statistics(net, M, Tn, C, "ntk", mean_subtraction=True).lambda_max
              for M in (64, 4096) for Tn in (4, 256)]
    assert np.allclose(levels, levels[0], rtol=1e-12)
    nt = fisher_statistics(net, 64, 4, C, "ntk")
    assert np.isclose(levels[0], nt.kappa1 - nt.kappa2, rtol=1e-12)
    fm, fm0 = feature_metric_statistics(net, 512, T, C, mean_subtraction=True), feature_metric_statistics(net, 512, T, C)
    assert np.isclose(fm.lambda_max, (fm0.kappa1 - fm0.kappa2) / T, rtol=1e-12)


# ----------------------------------------------------------------------------------------------------------------------
# mean subtraction against finite networks
# ----------------------------------------------------------------------------------------------------------------------
def _ms_errors(case, M, ntk, seeds, metric="fisher"):
    """Relative errors (mean eigenvalue, lambda_max) of the mean-subtracted matrix of independent numpy networks,
    and the unsubtracted lambda_max / subtracted lambda_max ratio."""
    net_mf = network(case)
    if metric == "fisher":
        th = fisher_statistics(net_mf, M, T, C, "ntk" if ntk else "standard", mean_subtraction=True)
    else:
        th = feature_metric_statistics(net_mf, M, T, C, mean_subtraction=True)
    P = _proj(T, C)
    out = []
    for s in seeds:
        net = make_net(case, M, T, C, seed=s, ntk=ntk)
        blocks = net.dual_blocks() if metric == "fisher" else net.feature_blocks()
        F = sum(blocks) / (1 if ntk else T)
        Fb = P @ F @ P
        ev, ev0 = np.linalg.eigvalsh(Fb), np.linalg.eigvalsh(F)
        n = C * T if ntk else (net.n_params() if metric == "fisher" else sum(net.widths[:-1]))
        out.append([np.trace(Fb) / n / th.mean_eigenvalue - 1, ev[-1] / th.lambda_max - 1, ev0[-1] / ev[-1]])
    return np.asarray(out), th


@pytest.mark.parametrize("case, ntk", [("tanh", False), ("relu", False), ("tanh", True)])
def test_mean_subtraction_removes_the_outliers(case, ntk):
    """The C outliers disappear; lambda_max falls to the bulk level alpha M (kappa_1-kappa_2)/T (SP) or
    kappa'_1-kappa'_2 (NTK, width independent); the measured ratio unsubtracted/subtracted follows the theory."""
    lam_plain = fisher_statistics(network(case), 64, T, C, "ntk" if ntk else "standard").lambda_max
    for M in (256, 1024):
        e, th = _ms_errors(case, M, ntk, range(3))
        assert rms(e[:, 0]) < K_MEAN / np.sqrt(M), (M, e[:, 0])
        # lambda_max within [level (1 - K/sqrt(M)), level (1 + 4 sqrt(T/M) + K/sqrt(M))] (module docstring)
        assert np.all(e[:, 1] > -K_MEAN / np.sqrt(M)), (M, e[:, 1])
        assert np.all(e[:, 1] < 4 * np.sqrt(T / M) + K_MEAN / np.sqrt(M)), (M, e[:, 1])
        ratio_th = (fisher_statistics(network(case), M, T, C, "ntk" if ntk else "standard").lambda_max
                    / th.lambda_max)
        # the ratio carries both errors: relative (K_OTHER/sqrt(M) + 4 sqrt(T/M))
        assert np.all(np.abs(e[:, 2] / ratio_th - 1) < K_OTHER / np.sqrt(M) + 4 * np.sqrt(T / M)), (M, e[:, 2])
    if ntk:   # width independent: the same level at both widths, far below the unsubtracted outlier
        assert th.lambda_max < 0.5 * lam_plain


def test_mean_subtracted_feature_metric():
    e, _ = _ms_errors("relu", 1024, False, range(3), metric="feature")
    assert rms(e[:, 0]) < K_MEAN / np.sqrt(1024)
    assert np.all(e[:, 1] > -K_MEAN / np.sqrt(1024)) and np.all(e[:, 1] < 4 * np.sqrt(T / 1024) + K_MEAN / 32)


def test_lambda_max_trace_bound_every_network():
    """lambda_max >= Tr / rank = Tr / (C (T-1)) holds for every network (the lower bound of Karakida et al.)."""
    P = _proj(T, C)
    for s in range(3):
        net = make_net("relu", 64, T, C, seed=s)
        Fb = P @ (sum(net.dual_blocks()) / T) @ P
        assert np.linalg.eigvalsh(Fb)[-1] >= np.trace(Fb) / (C * (T - 1)) * (1 - 1e-12)


def test_torch_ensemble_mean_subtraction():
    """The torch ensembles (measure.fisher_statistics) agree at two widths; the trace error shrinks with width."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from meanfield.validation import sample_ensemble
    from meanfield.validation import fisher_statistics as measure_fisher

    net = network("tanh")
    errs = {}
    for M in (64, 256):
        th = fisher_statistics(net, M, T, C, mean_subtraction=True)
        fs = measure_fisher(sample_ensemble(net, M, 4, n_outputs=C, device="cpu"), n_samples=T, mean_subtraction=True)
        errs[M] = fs.mean / th.mean_eigenvalue - 1
        lam = fs.lambda_max / th.lambda_max - 1
        assert rms(errs[M]) < K_MEAN / np.sqrt(M), (M, errs[M])
        assert np.all(lam > -K_MEAN / np.sqrt(M)) and np.all(lam < 4 * np.sqrt(T / M) + K_MEAN / np.sqrt(M)), lam
        assert np.all(np.abs(fs.eigenvalues[:, :C]) < 1e-8 * fs.eigenvalues[:, -1:])   # the C removed directions


# ----------------------------------------------------------------------------------------------------------------------
# batch normalization in the middle layers
# ----------------------------------------------------------------------------------------------------------------------
def test_batch_mean_closed_forms():
    """E[mu^2] of a standardized batch: T = 2 relu: zhat = (1, -1) so mu = 1/2 exactly; T = 3 by 1-D quadrature over
    the circle zhat = sqrt(3) (cos a e1 + sin a e2) in 1-perp; T -> inf: E[relu(z)]^2 = 1/(2 pi)."""
    net = Network("relu", depth=2, weight_var=2.0, bias_var=0.1)
    b2 = batch_norm_lambda_max_bound(net, 100, 2, n_mc=200)
    assert np.isclose(b2.mean_square_batch_mean, 0.25, rtol=1e-12) and b2.mean_square_batch_mean_stderr < 1e-12
    e1, e2 = np.array([1, -1, 0]) / np.sqrt(2), np.array([1, 1, -2]) / np.sqrt(6)

    def mu2(a):
        z = np.sqrt(3) * (np.cos(a) * e1 + np.sin(a) * e2)
        return np.maximum(z, 0).mean() ** 2

    exact = integrate.quad(mu2, 0, 2 * np.pi, limit=200, points=[np.pi / 6 + k * np.pi / 3 for k in range(6)])[0]
    exact /= 2 * np.pi
    b3 = batch_norm_lambda_max_bound(net, 100, 3, n_mc=40000, seed=1)
    # Monte Carlo: 5 standard errors
    assert abs(b3.mean_square_batch_mean - exact) < 5 * b3.mean_square_batch_mean_stderr
    assert np.isclose(b3.activation_mean_squared, 1 / (2 * np.pi), rtol=1e-10)
    assert np.isclose(b3.lambda_max_bound, 1 + 100 * b3.mean_square_batch_mean)


def test_batch_norm_bound_against_torch_networks():
    """With BN in every hidden layer: (i) every network's lambda_max >= 1 + sum_i mu_i^2 (Rayleigh quotient, exact);
    (ii) that measured sum is 1 + M E[mu^2]: M i.i.d. units, relative SD sd(mu^2)/(E[mu^2] sqrt(M)) -> 4 SD plus the
    O(1/sqrt(M)) exchangeability error (K_MEAN/sqrt(M)); (iii) the bound grows like M (the outlier stays O(M))."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from meanfield.validation.normalization_sim import normalized_fisher_spectrum

    net = network("relu")
    ratios = []
    for M in (64, 256):
        b = batch_norm_lambda_max_bound(net, M, T, C, n_mc=20000)
        sd = b.mean_square_batch_mean_stderr * np.sqrt(20000) / b.mean_square_batch_mean   # SD(mu^2) / E[mu^2]
        for s in range(2):
            sp = normalized_fisher_spectrum(net, M, T, C, normalization="batch", seed=s)
            assert sp.lambda_max >= sp.batch_mean_bound * (1 - 1e-10)
            assert abs(sp.batch_mean_bound / b.lambda_max_bound - 1) < 4 * sd / np.sqrt(M) + K_MEAN / np.sqrt(M)
            ratios.append(sp.lambda_max / M)
    # lambda_max / M at M = 256 is not smaller than at M = 64 by more than the finite-size error: O(M)
    assert min(ratios[2:]) > 0.5 * max(ratios[:2])
    assert b.lambda_max_bound > 0.15 * M  # 1/(2 pi) = 0.159 per unit of the last hidden layer


# ----------------------------------------------------------------------------------------------------------------------
# layer normalization
# ----------------------------------------------------------------------------------------------------------------------
def test_layer_norm_scales_by_hand():
    """s_1 = sigma_w^2 + sigma_b^2 (x ~ N(0, I)); after LN a relu layer has qhat = E[relu(z)^2] = 1/2."""
    net = Network("relu", depth=2, weight_var=2.0, bias_var=0.3)
    st = layer_norm_fisher_statistics(net, 128, 8)
    np.testing.assert_allclose(st.order_parameters["layer_norm_scales"], [2.3, 2.0 * 0.5 + 0.3], rtol=1e-10)
    assert st.network is net


@pytest.mark.parametrize("case", ["relu", "tanh"])
def test_layer_norm_against_torch_networks(case):
    """LN in every hidden layer: mean eigenvalue and the C-fold outlier (top-C mean) of torch autograd networks
    within K/sqrt(M) of the theory at M = 64 and 256; lambda_max = O(M) (not alleviated)."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from meanfield.validation.normalization_sim import normalized_fisher_spectrum

    net = network(case)
    per_unit = {}
    for M in (64, 256):
        th = layer_norm_fisher_statistics(net, M, T, C)
        e, top = [], []
        for s in range(2):
            sp = normalized_fisher_spectrum(net, M, T, C, normalization="layer", seed=10 + s)
            top.append(sp.eigenvalues[-C:].mean())
            e.append([sp.mean_eigenvalue / th.mean_eigenvalue - 1, top[-1] / th.lambda_max - 1])
        e = np.asarray(e)
        assert rms(e[:, 0]) < K_MEAN / np.sqrt(M) and rms(e[:, 1]) < K_OTHER / np.sqrt(M), (M, e)
        per_unit[M] = np.mean(top) / M
    # measured outlier / M does not fall with width (a 1/sqrt(M) decay would halve it; finite-size error ~ 2/8)
    assert per_unit[256] > 0.7 * per_unit[64], per_unit


# ----------------------------------------------------------------------------------------------------------------------
# learning-rate thresholds
# ----------------------------------------------------------------------------------------------------------------------
def test_learning_rate_thresholds_closed_form():
    net = network("tanh")
    st = fisher_statistics(net, 256, T, C)
    lr = learning_rate_thresholds(net, 256, T, C)
    assert np.isclose(lr.eta_critical, st.eta_critical) and np.isclose(lr.eta_max_uv, 2 * lr.eta_critical)
    assert np.isclose(lr.eta_critical, 2 / (st.alpha * 256 * (st.kappa1 / T + (T - 1) / T * st.kappa2)))
    ntk = learning_rate_thresholds(net, 256, T, C, "ntk")
    sn = fisher_statistics(net, 256, T, C, "ntk")
    assert np.isclose(ntk.eta_critical, 2 * T / (sn.kappa1 + (T - 1) * sn.kappa2))
    ms = learning_rate_thresholds(net, 256, T, C, mean_subtraction=True)
    assert np.isclose(ms.eta_critical, 2 * T / (st.alpha * 256 * (st.kappa1 - st.kappa2)))
    assert [lr.regime(f * lr.eta_critical) for f in (0.99, 1.0, 1.99, 2.0)] == ["lazy", "catapult", "catapult",
                                                                                "divergent"]
    assert np.isclose(lr.linearized_residual(1.5 * lr.eta_critical, 3)[-1], 8.0)   # |1 - 3|^3
    assert isinstance(lr, LearningRateThresholds) and lr.to_dict()["eta_critical"] == lr.eta_critical


def test_eta_critical_against_torch_networks_and_phases():
    """Measured 2/lambda_max0 of torch networks within K/sqrt(M) of the theory; GD at 0.5 eta_c stays lazy with the
    sharpness frozen to O(1/sqrt(M)) (NTK regime); at 1.5 eta_c every run catapults (loss up > 2x, then below its
    start) and ends with eta lambda_max < 2; at 40 eta_c it diverges."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from meanfield.validation.catapult import catapult_scan

    net = Network("relu", depth=2, weight_var=2.0, bias_var=0.1)
    M = 128
    scan = catapult_scan(net, M, [0.5, 1.5, 40.0], n_seeds=3, n_steps=200)
    err = (2 / scan.lambda_max0) / scan.eta_critical_theory - 1
    assert rms(err) < K_OTHER / np.sqrt(M), err
    assert scan.fraction("lazy")[0] == 1.0 and scan.fraction("catapult")[1] == 1.0
    assert scan.fraction("diverged")[2] == 1.0
    # frozen sharpness: relative drift below K_OTHER/sqrt(M) = 0.7 is too loose to mean anything; measured ~0.15 at
    # M = 128 -> require < 0.3 (the slow test checks that it shrinks with width)
    assert scan.lazy_sharpness_drift() < 0.3
    final = scan.sharpness[1, :, -1] * 1.5 * 2 / scan.lambda_max0   # eta lambda_max(end)
    assert np.all(final < 2.0)


@pytest.mark.slow
def test_ntk_regime_sharpness_drift_shrinks_with_width():
    """Below eta_c the sharpness drift (the NTK's motion) falls with width: 4x the width at least halves it
    (1/sqrt(M) would give 0.5, measured 0.29: drifts 0.20 and 0.059)."""
    pytest.importorskip("torch")
    from meanfield.validation.catapult import catapult_scan

    net = Network("relu", depth=2, weight_var=2.0, bias_var=0.1)
    d = [catapult_scan(net, M, [0.5, 0.9], n_seeds=3, n_steps=200).lazy_sharpness_drift() for M in (64, 256)]
    assert d[1] < 0.5 * d[0], d


# ----------------------------------------------------------------------------------------------------------------------
# validation of inputs
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, exc", [
    (dict(mean_subtraction=True, loss="cross_entropy"), ValueError),
    (dict(mean_subtraction="yes"), TypeError),
])
def test_bad_mean_subtraction(kwargs, exc):
    with pytest.raises(exc, match="mean_subtraction"):
        fisher_statistics(network("tanh"), 64, 8, 2, **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="n_samples"):
        fisher_statistics(network("tanh"), 64, 1, 2, mean_subtraction=True)
    with pytest.raises(ValueError, match="n_samples"):
        batch_norm_lambda_max_bound(network("relu"), 64, 1)
    with pytest.raises(TypeError, match="network"):
        layer_norm_fisher_statistics("relu", 64, 8)       # type: ignore[arg-type]
    with pytest.raises(ValueError, match="learning_rate"):
        learning_rate_thresholds(network("relu"), 64, 8).regime(-1.0)
    b = batch_norm_lambda_max_bound(network("relu"), 64, 8, n_mc=100)
    assert isinstance(b, BatchNormBound) and b.to_dict()["width"] == 64
