"""meanfield's scikit-learn kernels: analytic gradient against finite differences in scikit-learn's log coordinates,
GaussianProcessRegressor end to end (its optimizer uses the analytic gradient and improves the likelihood), and the
predictions against meanfield.gp_posterior (an independent implementation of the same posterior).

Error analysis: central differences in theta = log(hyperparameter) with step 1e-5: truncation ~1e-10 x |d^3K|,
rounding ~1e-16 / 1e-5 = 1e-11 relative; tolerance 1e-7 relative to the largest gradient entry. Posterior means from
two Cholesky solves of a matrix with condition number <~1e4: agreement ~1e-12; tolerance 1e-9.
"""
from __future__ import annotations

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.gaussian_process import GaussianProcessRegressor  # noqa: E402
from sklearn.gaussian_process.kernels import WhiteKernel  # noqa: E402

from meanfield import Network, gp_posterior, kernels  # noqa: E402
from meanfield.hyperparameters import fit_nngp  # noqa: E402
from meanfield.sklearn_kernels import NNGPKernel, NTKKernel  # noqa: E402


@pytest.mark.parametrize("cls", [NNGPKernel, NTKKernel])
@pytest.mark.parametrize("act", ["relu", "erf", "tanh", "hard_tanh"])
def test_gradient_matches_finite_differences(cls, act):
    x = np.random.default_rng(0).standard_normal((7, 3))
    k = cls(act, depth=3, weight_var=1.7, bias_var=0.2)
    K, dK = k(x, eval_gradient=True)
    assert dK.shape == (7, 7, 2)
    ref = kernels(Network(act, depth=3, weight_var=1.7, bias_var=0.2), x)
    # bit for bit, except through the nested 2-D rule (hard_tanh), which is not bit-symmetric in (u, v): the
    # derivative sweep symmetrizes (K + K^T) / 2 and may differ from kernels() in the last bit
    np.testing.assert_allclose(K, ref.ntk if cls is NTKKernel else ref.nngp, rtol=1e-14 if act == "hard_tanh" else 0)
    h = 1e-5
    for i in range(2):
        tp, tm = k.theta.copy(), k.theta.copy()
        tp[i] += h
        tm[i] -= h
        fd = (k.clone_with_theta(tp)(x) - k.clone_with_theta(tm)(x)) / (2 * h)
        assert np.max(np.abs(fd - dK[..., i])) <= 1e-7 * np.max(np.abs(dK[..., i]))
    np.testing.assert_allclose(k.diag(x), np.diag(K), rtol=1e-13)
    # a fixed hyperparameter drops out of the gradient
    kf = cls(act, depth=3, weight_var=1.7, bias_var=0.2, bias_var_bounds="fixed")
    np.testing.assert_array_equal(kf(x, eval_gradient=True)[1][..., 0], dK[..., 1])
    assert clone(k).get_params()["depth"] == 3 and "NNGPKernel" in repr(NNGPKernel())
    with pytest.raises(ValueError, match="Y is None"):
        k(x, x, eval_gradient=True)


def test_gaussian_process_regressor_uses_the_analytic_gradient_and_improves_the_likelihood(monkeypatch):
    # data drawn from the model (relu depth 2, weight_var 2.5, bias_var 0.3, noise 0.01): a well-posed optimum
    rng = np.random.default_rng(1)
    x = rng.uniform(-2, 2, (60, 2))
    K = kernels(Network("relu", depth=2, weight_var=2.5, bias_var=0.3), x, compute_ntk=False).nngp
    y = np.linalg.cholesky(K + 0.01 * np.eye(60)) @ rng.standard_normal(60)
    calls = {"grad": 0}
    orig = NNGPKernel.__call__

    def spy(self, X, Y=None, eval_gradient=False):
        calls["grad"] += bool(eval_gradient)
        return orig(self, X, Y, eval_gradient)

    monkeypatch.setattr(NNGPKernel, "__call__", spy)
    kernel = NNGPKernel("relu", depth=2, weight_var=1.0, bias_var=1.0) + WhiteKernel(0.5, (1e-6, 1e1))
    gp = GaussianProcessRegressor(kernel, random_state=0).fit(x, y)
    start = gp.log_marginal_likelihood(kernel.theta)
    assert calls["grad"] > 3       # scikit-learn's L-BFGS-B asked for the analytic gradient at every step
    assert gp.log_marginal_likelihood_value_ > start + 50.0
    # the same optimum as meanfield's own fit (its own likelihood code and optimizer call): measured 4.30056519675
    # both, hyperparameters equal to 1e-4; tolerance 1e-5 in the value (both stop at gradient norm ~1e-5)
    f = fit_nngp(Network("relu", depth=2, weight_var=1.0, bias_var=1.0), x, y, 0.5)
    assert abs(f.log_marginal_likelihood - gp.log_marginal_likelihood_value_) < 1e-5
    np.testing.assert_allclose([f.weight_var, f.bias_var, f.noise_var],
                               [gp.kernel_.k1.weight_var, gp.kernel_.k1.bias_var, gp.kernel_.k2.noise_level], rtol=1e-2)
    # at the optimum (interior) the likelihood gradient vanishes
    _, g = gp.log_marginal_likelihood(gp.kernel_.theta, eval_gradient=True)
    bounds = gp.kernel_.bounds
    interior = (gp.kernel_.theta > bounds[:, 0] + 1e-3) & (gp.kernel_.theta < bounds[:, 1] - 1e-3)
    assert np.all(np.abs(g[interior]) < 1e-2 * len(y))
    # prediction = meanfield's posterior with the fitted hyperparameters
    kf = gp.kernel_
    net = Network("relu", depth=2, weight_var=kf.k1.weight_var, bias_var=kf.k1.bias_var)
    xs = rng.uniform(-2, 2, (5, 2))
    mean, std = gp.predict(xs, return_std=True)
    post = gp_posterior(kernels(net, x, compute_ntk=False).nngp, kernels(net, xs, x, compute_ntk=False).nngp, y,
                        k_test=np.diag(kernels(net, xs, compute_ntk=False).nngp), noise_var=kf.k2.noise_level)
    np.testing.assert_allclose(mean, post.mean, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(std ** 2, post.variance + kf.k2.noise_level, rtol=1e-7, atol=1e-9)
