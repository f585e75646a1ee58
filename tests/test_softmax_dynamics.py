"""Tests of meanfield.softmax_dynamics (cross-entropy NTK dynamics, softmax FIM along training; Karakida et al. Fig. 5).

Independent routes:

1. a closed form: one input, two classes, ``d = f_1 - f_2`` obeys ``dd/dt = 2 eta k / (1 + e^d)`` (label 1), so
   ``d + e^d = d_0 + e^{d_0} + 2 eta k t`` and ``d = c - W(e^c)`` (Lambert W);
2. gradient flow as the limit of the discrete map with ``m`` sub-steps of ``eta/m``: Euler's global error is
   ``O(1/m)``;
3. the softmax FIM built explicitly in parameter space for a linear model ``f = (Phi (x) I_C) theta`` (its NTK is
   ``Phi Phi^T (x) I_C``) and diagonalised with numpy; Weyl's bounds checked on exactly two-valued kernels;
4. wide tanh networks trained by gradient descent on the cross-entropy in torch.

Error analysis for 4: the logits of one network follow the NTK prediction up to ``O(1/sqrt(M))`` (the NTK moves by
``O(1/sqrt M)`` during training and differs from its limit by as much at initialization); measured, relative to the
logits' total change, ``K ~ 2`` (rms over 3 networks), so the test requires ``< 4/sqrt(M)``; the FIM's largest
eigenvalue carries the same relative error (measured ``K ~ 0.5``; tolerance ``2/sqrt(M)``). Both must shrink from
M = 64 to 256 (to below 0.75 of the M = 64 value; 1/sqrt(M) predicts 0.5, the rms of 3 networks is uncertain by
~30%).
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import lambertw

from meanfield import Network, fisher_statistics, ntk_kernel
from meanfield.softmax_dynamics import cross_entropy_ntk_dynamics, softmax_fisher_lambda_max


def test_two_class_closed_form():
    k, eta, d0 = 1.7, 0.8, -0.4
    times = np.linspace(0.0, 5.0, 11)
    f0 = np.array([[d0 / 2, -d0 / 2]])
    d = cross_entropy_ntk_dynamics(np.array([[k]]), np.array([[1.0, 0.0]]), times, eta, f0, rtol=1e-12)
    c = d0 + np.exp(d0) + 2 * eta * k * times
    expect = c - lambertw(np.exp(c)).real
    np.testing.assert_allclose(d.logits[:, 0, 0] - d.logits[:, 0, 1], expect, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(d.logits.sum(-1), 0.0, atol=1e-10)        # sum_k (g_k - y_k) = 0 conserves sum_k f_k
    np.testing.assert_allclose(d.loss, np.log1p(np.exp(-expect)), rtol=1e-8)


def test_flow_is_the_small_step_limit_of_the_map():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 6))
    th = ntk_kernel(Network("tanh", 2, 1.5, 0.1), x)
    y = np.eye(3)[[0, 1, 2, 0, 1]]
    f0 = rng.standard_normal((5, 3))
    flow = cross_entropy_ntk_dynamics(th, y, [0.0, 4.0], 2.0, f0, rtol=1e-12).logits[-1]
    errs = []
    for m in (50, 100):
        disc = cross_entropy_ntk_dynamics(th, y, [0, 4 * m], 2.0 / m, f0, discrete=True).logits[-1]
        errs.append(np.abs(disc - flow).max())
    assert errs[1] < 1e-2 and 0.4 < errs[1] / errs[0] < 0.6          # first order: halving the step halves it


def test_fisher_lambda_max_against_explicit_parameter_space_matrix():
    rng = np.random.default_rng(1)
    N, C, P0 = 4, 3, 7
    Phi = rng.standard_normal((N, P0))
    g = rng.dirichlet(np.ones(C), size=N)
    F = np.zeros((P0 * C, P0 * C))
    for n in range(N):
        Jn = np.kron(Phi[n][None, :], np.eye(C))          # (C, P0 C): df_k / dtheta_(p,k')
        Qn = np.diag(g[n]) - np.outer(g[n], g[n])
        F += Jn.T @ Qn @ Jn / N
    lam, lo, up = softmax_fisher_lambda_max(Phi @ Phi.T, g)
    assert float(lam) == pytest.approx(np.linalg.eigvalsh(F)[-1], rel=1e-10)


def test_bounds_hold_for_two_valued_kernels():
    rng = np.random.default_rng(2)
    for _ in range(20):
        N, C = rng.integers(2, 8), rng.integers(2, 6)
        k2 = rng.uniform(0.0, 1.0)
        k1 = k2 + rng.uniform(0.0, 2.0)
        th = k2 * np.ones((N, N)) + (k1 - k2) * np.eye(N)
        g = rng.dirichlet(np.full(C, rng.uniform(0.2, 3.0)), size=(4, N))
        lam, lo, up = softmax_fisher_lambda_max(th, g)
        assert lam.shape == (4,)
        assert np.all(lo <= lam * (1 + 1e-10) + 1e-14) and np.all(lam <= up * (1 + 1e-10) + 1e-14)


def test_karakida_kappas_are_the_kernel_of_gaussian_inputs():
    # the bounds' default kappas (means of the data NTK's diagonal / off-diagonal) against fisher_statistics's
    # kappa'_1, kappa'_2 (NTK parameterization) for x ~ N(0, I_M0): the off-diagonal entries fluctuate by
    # O(1/sqrt(M0)) ~ 0.09 around kappa'_2, their mean over 120 pairs (not independent) within ~3 x 0.09/sqrt(15)
    net = Network("tanh", 2, 1.5, 0.1)
    x = np.random.default_rng(3).standard_normal((16, 128))
    th = ntk_kernel(net, x)
    fs = fisher_statistics(net, 128, 16, 3, parameterization="ntk")
    assert np.mean(np.diagonal(th)) == pytest.approx(fs.kappa1, abs=0.05)
    assert np.mean(th[~np.eye(16, dtype=bool)]) == pytest.approx(fs.kappa2, abs=0.07)


def test_bad_input():
    th = np.eye(2)
    y = np.eye(2)
    with pytest.raises(ValueError, match="y"):
        cross_entropy_ntk_dynamics(th, np.ones((2, 2)), [0, 1])
    with pytest.raises(ValueError, match="theta"):
        cross_entropy_ntk_dynamics(np.array([[1.0, 2.0], [0.0, 1.0]]), y, [0, 1])
    with pytest.raises(ValueError, match="semi-definite"):
        cross_entropy_ntk_dynamics(np.array([[1.0, 2.0], [2.0, 1.0]]), y, [0, 1])
    with pytest.raises(ValueError, match="times"):
        cross_entropy_ntk_dynamics(th, y, [1, 0])
    with pytest.raises(ValueError, match="integer"):
        cross_entropy_ntk_dynamics(th, y, [0, 0.5], discrete=True)
    with pytest.raises(ValueError, match="learning_rate"):
        cross_entropy_ntk_dynamics(th, y, [0, 1], -1.0)
    with pytest.raises(ValueError, match="g must"):
        softmax_fisher_lambda_max(th, np.ones((2, 2)))


def test_against_wide_networks():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from meanfield.validation import sample_ensemble, train_gd_cross_entropy

    N, C, M0 = 8, 3, 64
    x = np.random.default_rng(1).standard_normal((N, M0))
    y = np.eye(C)[np.random.default_rng(2).integers(0, C, N)]
    steps = list(range(0, 81, 20))
    eta = 4.0
    e_f, e_l = {}, {}
    for M in (64, 256):
        net = Network("tanh", depth=2, weight_var=1.5, bias_var=0.1, width_ratios=[M0 / M, 1, 1])
        th = ntk_kernel(net, x)
        ens = sample_ensemble(net, M, 3, n_outputs=C, parameterization="ntk", device="cpu", seed=5)
        run = train_gd_cross_entropy(ens, torch.as_tensor(x), torch.as_tensor(y), eta, steps[-1],
                                     record_steps=steps)
        ef, el = [], []
        for s in range(3):
            d = cross_entropy_ntk_dynamics(th, y, steps, eta, run.logits[s, 0], discrete=True)
            ef.append(np.abs(run.logits[s] - d.logits).max() / np.abs(d.logits[-1] - d.logits[0]).max())
            el.append(np.abs(run.fisher_lambda_max[s] - d.fisher_lambda_max).max() / d.fisher_lambda_max.max())
        e_f[M], e_l[M] = np.sqrt(np.mean(np.square(ef))), np.sqrt(np.mean(np.square(el)))
        assert e_f[M] < 4 / np.sqrt(M) and e_l[M] < 2 / np.sqrt(M), (M, e_f, e_l)
        # the MSE FIM (Theta / N) at initialization against the theory's: the C-fold top eigenvalue is split at
        # O(1/sqrt M) and the largest of the C is biased upwards (measured K ~ 2 for one network; as in
        # test_fisher.py the tolerance for lambda_max is K = 6)
        assert np.abs(run.mse_lambda_max[:, 0] - d.mse_lambda_max).max() < 6 / np.sqrt(M) * d.mse_lambda_max
    assert e_f[256] < 0.75 * e_f[64], e_f
