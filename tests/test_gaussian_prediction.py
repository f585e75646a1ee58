"""NTK-GP and NNGP predictive mean and covariance (meanfield.regression.gaussian_prediction) against (a) the same
formulas through scipy.linalg.expm and numpy.linalg.solve (an independent route to the matrix functions), (b) a
Monte-Carlo ensemble of initial outputs f_0 ~ GP(0, K) evolved by RK4 integration of the gradient-flow ODE, and
(c) invariants (exact symmetry, PSD, t = 0 prior, neural-tangents' time and ridge conventions). The dropout NTK
against a wide numpy network's empirical tangent kernel with one dropout mask per input.

Error analysis: (a) matrices with condition number <~1e4 (ridge or well-spread inputs): eigh vs expm/solve agree to
~cond x 1e-16 ~ 1e-12 relative; tolerance 1e-9. (b) RK4 with dt = 5e-3, eta = 0.8 on eigenvalues <~ 10 has global error
~t lambda (dt eta lambda)^4 / 120 ~ 1e-7; Monte-Carlo with S samples: the sample mean has standard error sqrt(Sigma_ii / S), the sample covariance
sqrt((Sigma_ii Sigma_jj + Sigma_ij^2) / S); tolerance 5 standard errors. (c) exact or to rounding.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings, strategies as st

from meanfield import Network, kernels
from meanfield.regression import GaussianPrediction, gaussian_prediction, gp_posterior, ntk_gp_regression


def _problem(seed=0, n=8, m=4, dup=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n + m, 3))
    if dup:
        X[m + 1] = X[m]          # a duplicated training input: Theta, K singular
    r = kernels(Network("relu", depth=2, weight_var=1.8, bias_var=0.2), X)
    K, T = r.nngp, r.ntk
    y = rng.standard_normal(n)
    return dict(nngp_train=K[m:, m:], nngp_cross=K[:m, m:], nngp_test=K[:m, :m], ntk_train=T[m:, m:],
                ntk_cross=T[:m, m:]), y


def _reference(k, y, t, get, eta, reg):
    K, Ks, Kss = k["nngp_train"], k["nngp_cross"], k["nngp_test"]
    Th, Ts = (k["ntk_train"], k["ntk_cross"]) if get == "ntk" else (K, Ks)
    n = len(K)
    Thr = Th + reg * np.eye(n)
    E = np.eye(n) if np.isinf(t) else np.eye(n) - scipy.linalg.expm(-eta * t * Thr)
    M = Ts @ np.linalg.solve(Thr, E)
    if get == "ntk":
        cov = Kss - M @ Ks.T - Ks @ M.T + M @ K @ M.T
    else:
        E2 = np.eye(n) if np.isinf(t) else np.eye(n) - scipy.linalg.expm(-2 * eta * t * Thr)
        cov = Kss - Ks @ np.linalg.solve(Thr, E2) @ Ks.T
    return M @ y, cov


@pytest.mark.parametrize("get", ["ntk", "nngp"])
@pytest.mark.parametrize("reg", [0.0, 0.05])
def test_against_expm_route(get, reg):
    k, y = _problem()
    times = [0.3, 2.0, np.inf]
    p = gaussian_prediction(**k, y_train=y, t=times, get=get, learning_rate=0.7, diag_reg=reg,
                            diag_reg_absolute_scale=True)
    for i, t in enumerate(times):
        mean, cov = _reference(k, y, t, get, 0.7, reg)
        np.testing.assert_allclose(p.mean[i], mean, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(p.covariance[i], cov, rtol=1e-9, atol=1e-9)
    assert isinstance(p, GaussianPrediction) and p.variance.shape == (3, 4)


def test_neural_tangents_conventions():
    """diag_reg relative to the mean diagonal (diag_reg_absolute_scale=False), loss='mean' = time scaled by
    1/y_train.size; t = 0 is the prior; the NNGP at t = inf is the GP posterior with noise = the ridge."""
    k, y = _problem(1)
    Y = np.stack([y, -2 * y], axis=1)
    rel = gaussian_prediction(**k, y_train=Y, t=1.5, diag_reg=0.1)
    ab = gaussian_prediction(**k, y_train=Y, t=1.5, diag_reg=0.1 * np.trace(k["ntk_train"]) / 8,
                             diag_reg_absolute_scale=True)
    np.testing.assert_allclose(rel.mean, ab.mean, rtol=1e-13)
    assert rel.mean.shape == (1, 4, 2) and abs(rel.diag_reg - ab.diag_reg) < 1e-15
    mean_loss = gaussian_prediction(**k, y_train=Y, t=1.5 * Y.size, loss="mean")
    sum_loss = gaussian_prediction(**k, y_train=Y, t=1.5)
    np.testing.assert_allclose(mean_loss.mean, sum_loss.mean, rtol=1e-12)
    np.testing.assert_allclose(mean_loss.covariance, sum_loss.covariance, rtol=1e-12, atol=1e-14)
    p0 = gaussian_prediction(**k, y_train=y, t=0.0)
    assert np.all(p0.mean == 0) and np.allclose(p0.covariance[0], k["nngp_test"], rtol=1e-12, atol=1e-13)
    s = 0.03
    post = gp_posterior(k["nngp_train"], k["nngp_cross"], y, k_test=k["nngp_test"], noise_var=s)
    g = gaussian_prediction(**k, y_train=y, get="nngp", diag_reg=s, diag_reg_absolute_scale=True)
    np.testing.assert_allclose(g.mean[0], post.mean, rtol=1e-10)
    np.testing.assert_allclose(g.covariance[0], post.covariance, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="get"):
        gaussian_prediction(**k, y_train=y, get="both")
    with pytest.raises(ValueError, match="ntk_train"):
        gaussian_prediction(k["nngp_train"], k["nngp_cross"], k["nngp_test"], y)
    with pytest.raises(ValueError, match="diag_reg"):
        gaussian_prediction(**k, y_train=y, diag_reg=-1.0)
    with pytest.raises(ValueError, match="loss"):
        gaussian_prediction(**k, y_train=y, loss="l2")


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2 ** 31), st.sampled_from(["ntk", "nngp"]), st.sampled_from([0.0, 1e-8, 0.1]),
       st.sampled_from([0.0, 0.5, 10.0, np.inf]), st.booleans())
def test_covariance_exactly_symmetric_and_psd(seed, get, reg, t, dup):
    k, y = _problem(seed, n=6, m=5, dup=dup)
    p = gaussian_prediction(**k, y_train=y, t=t, get=get, diag_reg=reg)
    C = p.covariance[0]
    assert np.array_equal(C, C.T)
    assert np.all(np.isfinite(p.mean))
    # a Gram matrix F F^T: eigenvalues >= -(rounding of one product) ~ n eps |F|^2 <= n eps max(K)
    assert np.linalg.eigvalsh(C).min() >= -20 * np.finfo(float).eps * np.max(np.abs(k["nngp_test"]))


def test_monte_carlo_ensemble_of_linearized_networks():
    """The definition: f_0 ~ GP(0, K_joint), then df/dt = -eta Theta (f_X - Y) on train and test outputs."""
    k, y = _problem(2, n=5, m=3)
    m, n = 3, 5
    Kj = np.block([[k["nngp_test"], k["nngp_cross"]], [k["nngp_cross"].T, k["nngp_train"]]])
    Tall = np.vstack([k["ntk_cross"], k["ntk_train"]])          # d f_all / dt = -eta Tall (f_X - Y)
    S = 10000
    rng = np.random.default_rng(5)
    f = np.linalg.cholesky(Kj + 1e-12 * np.eye(m + n)) @ rng.standard_normal((m + n, S))
    eta, t, dt = 0.8, 1.0, 5e-3

    def rhs(f):
        return -eta * Tall @ (f[m:] - y[:, None])

    for _ in range(int(round(t / dt))):
        a = rhs(f)
        b = rhs(f + 0.5 * dt * a)
        c = rhs(f + 0.5 * dt * b)
        d = rhs(f + dt * c)
        f = f + dt / 6 * (a + 2 * b + 2 * c + d)
    p = gaussian_prediction(**k, y_train=y, t=t, learning_rate=eta)
    mu, C = p.mean[0], p.covariance[0]
    emp_mu, emp_C = f[:m].mean(axis=1), np.cov(f[:m])
    se_mu = np.sqrt(np.diag(C) / S)
    se_C = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C ** 2) / S)
    assert np.all(np.abs(emp_mu - mu) <= 5 * se_mu + 1e-7)
    assert np.all(np.abs(emp_C - C) <= 5 * se_C + 1e-7)


def test_ntk_gp_regression_network():
    X = np.linspace(-1, 1, 7)[:, None]
    net = Network("erf", depth=3, weight_var=2.0, bias_var=0.1)
    p = ntk_gp_regression(net, X, X[:, 0] ** 2, X, t=[1.0, np.inf], diag_reg=1e-12)
    np.testing.assert_allclose(p.mean[-1], X[:, 0] ** 2, atol=1e-6)
    assert np.max(np.abs(p.covariance[-1])) < 1e-6
    q = ntk_gp_regression(net, X, X[:, 0] ** 2, X[::2], get="nngp", diag_reg=1e-3, diag_reg_absolute_scale=True)
    ref = gp_posterior(kernels(net, X).nngp, kernels(net, X[::2], X).nngp, X[:, 0] ** 2,
                       k_test=kernels(net, X[::2]).nngp, noise_var=1e-3)
    np.testing.assert_allclose(q.mean[0], ref.mean, rtol=1e-9)
    assert set(q.to_dict()) == {"times", "mean", "covariance", "get", "diag_reg"}


# ------------------------------------------------------------------------------------------------ dropout NTK
def test_dropout_ntk_against_wide_network():
    """Empirical NTK of a one-hidden-layer relu network (NTK parameterization, width M) with inverted dropout after
    the activation, one mask per input (the same mask for both arguments of a same-input entry), averaged over R
    draws; standard error from the spread of the draws, tolerance 5 standard errors + the O(1/M) bias (~1e-3)."""
    w1, b1, w2, b2, keep = 1.6, 0.2, 1.3, 0.1, 0.7
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 4))
    M, R = 4000, 12
    ths = []
    for _ in range(R):
        W = rng.standard_normal((M, 4))
        beta = rng.standard_normal(M)
        v = rng.standard_normal(M)
        h = np.sqrt(w1 / 4) * x @ W.T + np.sqrt(b1) * beta          # (3, M)
        d = (rng.random((3, M)) < keep) / keep                       # one mask per input
        a, da = np.maximum(h, 0) * d, (h > 0) * d * v
        G = w1 * x @ x.T / 4 + b1
        ths.append(w2 / M * a @ a.T + b2 + w2 / M * (da @ da.T) * G)
    ths = np.array(ths)
    emp, se = ths.mean(0), ths.std(0, ddof=1) / np.sqrt(R)
    theory = kernels(Network("relu", depth=1, weight_var=[w1, w2], bias_var=[b1, b2], dropout_keep=keep), x).ntk
    assert np.all(np.abs(emp - theory) <= 5 * se + 2e-3 * np.abs(theory))
    no_drop = kernels(Network("relu", depth=1, weight_var=[w1, w2], bias_var=[b1, b2]), x).ntk
    assert np.all(np.diag(theory) > np.diag(no_drop)) and np.allclose(theory - np.diag(np.diag(theory)),
                                                                      no_drop - np.diag(np.diag(no_drop)))


def test_ntk_gradient_flow_ridge_on_a_singular_kernel():
    """ntk_gradient_flow(diag_reg=s) at t = inf is the ridge predictor; with a duplicated training input (singular
    Theta) it equals gaussian_prediction's mean with the same absolute ridge and Theta_* (Theta + s I)^{-1} Y."""
    from meanfield.regression import ntk_gradient_flow, ntk_regression

    k, y = _problem(3, dup=True)
    s = 1e-3
    p = ntk_gradient_flow(k["ntk_train"], k["ntk_cross"], y, [0.5, np.inf], diag_reg=s)
    g = gaussian_prediction(**k, y_train=y, t=[0.5, np.inf], diag_reg=s, diag_reg_absolute_scale=True)
    np.testing.assert_allclose(p.test, g.mean, rtol=1e-10, atol=1e-12)
    ref = k["ntk_cross"] @ np.linalg.solve(k["ntk_train"] + s * np.eye(8), y)
    np.testing.assert_allclose(p.test[1], ref, rtol=1e-8)
    X = np.linspace(-1, 1, 5)[:, None]
    r = ntk_regression(Network("relu", depth=2, weight_var=2.0, bias_var=0.1), np.vstack([X, X]), np.tile(X[:, 0], 2),
                       X, diag_reg=1e-9)
    np.testing.assert_allclose(r.test[-1], X[:, 0], atol=1e-6)
    with pytest.raises(ValueError, match="diag_reg"):
        ntk_gradient_flow(k["ntk_train"], k["ntk_cross"], y, 1.0, diag_reg=-1.0)


@pytest.mark.parametrize("field, bad, match", [
    ("nngp_train", np.full((8, 8), np.nan), "nngp_train"),
    ("ntk_train", np.arange(64.0).reshape(8, 8), "ntk_train"),          # not symmetric
    ("nngp_cross", np.ones((4, 7)), "nngp_cross"),
    ("nngp_test", np.eye(3), "nngp_test"),
    ("ntk_cross", np.ones((3, 8)), "ntk_cross"),
    ("nngp_train", np.eye(8) * 1j, "nngp_train"),
])
def test_bad_kernels_name_the_parameter(field, bad, match):
    k, y = _problem(4)
    k[field] = bad
    with pytest.raises((ValueError, TypeError), match=match):
        gaussian_prediction(**k, y_train=y)


def test_bad_times_targets_and_indefinite_kernels():
    k, y = _problem(4)
    for t in (-1.0, np.nan, [[1.0]]):
        with pytest.raises(ValueError, match="t must"):
            gaussian_prediction(**k, y_train=y, t=t)
    with pytest.raises(ValueError, match="y_train"):
        gaussian_prediction(**k, y_train=y[:3])
    with pytest.raises(ValueError, match="learning_rate"):
        gaussian_prediction(**k, y_train=y, learning_rate=0.0)
    neg = dict(k, ntk_train=k["ntk_train"] - 10 * np.max(k["ntk_train"]) * np.eye(8))
    with pytest.raises(ValueError, match="positive semi-definite"):
        gaussian_prediction(**neg, y_train=y)
    bad_joint = dict(k, nngp_test=k["nngp_test"] - 10 * np.max(k["nngp_test"]) * np.eye(4))
    with pytest.raises(ValueError, match="positive semi-definite"):
        gaussian_prediction(**bad_joint, y_train=y)
