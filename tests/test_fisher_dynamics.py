"""Tests of meanfield.fisher_dynamics (model FIM, empirical FIM and NTK along NTK-regime training) and its torch twin.

Independent routes:

1. the empirical FIM built explicitly in parameter space for a linear model ``f = (Phi (x) I_C) theta`` (NTK
   ``Phi Phi^T (x) I_C``), diagonalised with numpy;
2. the MSE residuals from :func:`meanfield.natural_gradient.ngd_dynamics` (``method="gd"``, an iteration of the map,
   against the eigen-decomposition used here) and the constancy of the MSE model FIM;
3. an identity: with labels drawn from the model, ``E_{y ~ g}[(g - y)(g - y)^T] = Q``, so for one input the
   expected (single) empirical eigenvalue ``Theta E|g - y|^2`` equals the sum of the model FIM's eigenvalues;
4. wide tanh networks trained by gradient descent in torch (MSE and cross-entropy).

Error analysis for 4: per network the NTK differs from its limit by ``O(1/sqrt M)`` at initialization and moves by as
much during training; the residuals and softmax outputs inherit it, so the largest eigenvalues of the model and the
empirical FIM follow the prediction to ``K/sqrt(M)`` relative (to their largest value along training). Measured rms
over 3 networks: ``K ~ 1`` (max over the recorded steps); the tests require ``K < 4``. That the error decreases is
checked in the slow test from M = 64 to M = 1024 (pooled over the four quantities; 1/sqrt(M) predicts 1/4, required
< 1/2).
"""
from __future__ import annotations

import numpy as np
import pytest

from meanfield import Network, ntk_kernel
from meanfield.fisher_dynamics import empirical_fisher_eigenvalues, fisher_along_training
from meanfield.natural_gradient import ngd_dynamics

NET = Network("tanh", depth=2, weight_var=1.5, bias_var=0.1)


def test_empirical_fisher_against_explicit_matrix():
    rng = np.random.default_rng(0)
    N, C, P0 = 5, 3, 8
    Phi = rng.standard_normal((N, P0))
    e = rng.standard_normal((N, C))
    F = np.zeros((P0 * C, P0 * C))
    for n in range(N):
        grad = np.kron(Phi[n][None, :], np.eye(C)).T @ e[n]          # J_n^T e_n
        F += np.outer(grad, grad) / N
    ev = np.linalg.eigvalsh(F)[-N:]
    np.testing.assert_allclose(empirical_fisher_eigenvalues(Phi @ Phi.T, e), ev, rtol=1e-10, atol=1e-12)


def test_mse_along_training():
    x = np.random.default_rng(1).standard_normal((6, 9))
    y = np.random.default_rng(2).standard_normal((6, 2))
    f0 = np.random.default_rng(3).standard_normal((6, 2))
    th = ntk_kernel(NET, x)
    steps = np.arange(0, 9)
    tr = fisher_along_training(th, y, steps, 1.3, f0)
    gd = ngd_dynamics(NET, x, y, 1.3, 8, method="gd", f0_train=f0)
    np.testing.assert_allclose(tr.outputs, gd.train, atol=1e-10)
    np.testing.assert_allclose(tr.model_eigenvalues, np.broadcast_to(np.sort(np.repeat(np.linalg.eigvalsh(th), 2)) / 6,
                                                                      tr.model_eigenvalues.shape), rtol=1e-10)
    for t in steps:
        D = gd.train[t] - y
        expect = np.linalg.eigvalsh((D @ D.T) * th / 6)
        np.testing.assert_allclose(tr.empirical_eigenvalues[t], expect, rtol=1e-9, atol=1e-14)
    assert tr.empirical_eigenvalues[-1, -1] < 0.5 * tr.empirical_eigenvalues[0, -1]   # decays with the residuals


def test_cross_entropy_empirical_equals_model_in_expectation_over_model_labels():
    th = np.array([[1.7]])
    f0 = np.array([[0.3, -0.5, 1.1]])
    C = 3
    g = np.exp(f0[0]) / np.exp(f0[0]).sum()
    expected_emp = sum(g[k] * fisher_along_training(th, np.eye(C)[[k]], [0], 1.0, f0, loss="cross_entropy")
                       .empirical_eigenvalues[0, -1] for k in range(C))
    model = fisher_along_training(th, np.eye(C)[[0]], [0], 1.0, f0, loss="cross_entropy").model_eigenvalues[0]
    assert expected_emp == pytest.approx(model.sum(), rel=1e-12)


def test_bad_input():
    th = np.eye(2)
    with pytest.raises(ValueError, match="loss"):
        fisher_along_training(th, np.eye(2), [0], 1.0, loss="hinge")
    with pytest.raises(ValueError, match="steps"):
        fisher_along_training(th, np.eye(2), [0.5], 1.0)
    with pytest.raises(ValueError, match="y"):
        fisher_along_training(th, np.eye(3), [0], 1.0)
    with pytest.raises(ValueError, match="errors"):
        empirical_fisher_eigenvalues(th, np.ones((3, 1)))


def _compare(widths, n_seeds=3):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from meanfield.validation import sample_ensemble, track_fisher

    N, M0 = 8, 64
    x = np.random.default_rng(1).standard_normal((N, M0))
    out = {}
    for loss, C, eta in (("mse", 1, 1.0), ("cross_entropy", 3, 4.0)):
        rng = np.random.default_rng(2)
        y = rng.standard_normal((N, C)) if loss == "mse" else np.eye(C)[rng.integers(0, C, N)]
        for M in widths:
            net = Network("tanh", depth=2, weight_var=1.5, bias_var=0.1, width_ratios=[M0 / M, 1, 1])
            th = ntk_kernel(net, x)
            ens = sample_ensemble(net, M, n_seeds, n_outputs=C, parameterization="ntk", device="cpu", seed=5)
            steps = [0, 5, 10, 20, 40]
            tr = track_fisher(ens, torch.as_tensor(x), torch.as_tensor(y), eta, 40, loss=loss, record_steps=steps)
            em, ee = [], []
            for s in range(n_seeds):
                d = fisher_along_training(th, y, steps, eta, tr.outputs[s, 0], loss=loss)
                em.append(np.abs(tr.model_eigenvalues[s, :, -1] - d.model_eigenvalues[:, -1]).max()
                          / d.model_eigenvalues[:, -1].max())
                ee.append(np.abs(tr.empirical_eigenvalues[s, :, -1] - d.empirical_eigenvalues[:, -1]).max()
                          / d.empirical_eigenvalues[:, -1].max())
            out[loss, M] = (float(np.sqrt(np.mean(np.square(em)))), float(np.sqrt(np.mean(np.square(ee)))))
            assert max(out[loss, M]) < 4 / np.sqrt(M), (loss, M, out)
    return out


def test_against_wide_networks():
    _compare((64, 256))


@pytest.mark.slow   # ~15 s (MEANFIELD_SLOW=1)
def test_error_shrinks_with_width():
    out = _compare((64, 1024))
    small = np.mean([out["mse", 64], out["cross_entropy", 64]])
    large = np.mean([out["mse", 1024], out["cross_entropy", 1024]])
    assert large < 0.5 * small, out
