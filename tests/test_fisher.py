"""Tests of meanfield.fisher against finite-width random networks written here in plain numpy.

The independent route is a random network of width M: forward pass, per-sample back-propagation of
``delta^l_k = d f_k / d u^l`` for every output, the Jacobian (explicitly for tiny networks, through the exact dual Gram
matrix ``J J^T / T`` otherwise), and its eigenvalues.

Error analysis (used for every tolerance below). The theory keeps the O(M) part of the dual ``F* = J J^T / T``; the
dropped part has entries O(sqrt(M)) (order parameters are averages over M units, fluctuating by O(1/sqrt(M)) from
network to network), so each statistic of ONE network has a relative error ``eps(M) ~ K / sqrt(M)``. K depends on the
depth and the activation; with L <= 4 layers, measured values are K ~ 1 (mean), ~2-3 (second moment, a square;
lambda_max, whose C-fold outlier is split at O(sqrt(M))). Tests therefore check (i) the rms relative error over a few
seeds is below ``K_TOL / sqrt(M)`` with the generous ``K_TOL = 4`` (mean) or ``8`` (others) -- a 2-4x margin over the
measured constants -- and (ii) it shrinks with width: from M = 64 to M = 2048 the rms error pooled over the
statistics and 6 seeds must fall below 0.5 of its value (the theory says sqrt(1/32) = 0.18; an rms over ~18 noisy
numbers is uncertain by ~+-20%, so 0.5 is a safe bound that still fails if the error did not decrease).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from meanfield.fisher import (
    FeatureMetricStatistics,
    FisherStatistics,
    feature_metric_statistics,
    fisher_statistics,
)
from meanfield.validation.fisher_sim import finite_width_fisher
from meanfield.network import Network

ACTS = {
    "tanh": (np.tanh, lambda x: 1.0 - np.tanh(x) ** 2),
    "relu": (lambda x: np.maximum(x, 0.0), lambda x: (x > 0).astype(np.float64)),
}
# (activation, network kwargs) in Karakida's regime: non-centred (bias), L = 4 for tanh and L = 3 for relu
CASES = {
    "tanh": dict(activation="tanh", depth=3, weight_var=3.0, bias_var=0.64),
    "relu": dict(activation="relu", depth=2, weight_var=2.0, bias_var=0.5),
}
K_MEAN, K_OTHER = 4.0, 8.0
SHRINK = 0.5
M_SMALL, M_LARGE, N_SEEDS = 64, 2048, 6


# ----------------------------------------------------------------------------------------------------------------------
# independent finite-width network
# ----------------------------------------------------------------------------------------------------------------------
class Net:
    """A random network of the given widths with explicit per-sample back-propagation (rows (k, t))."""

    def __init__(self, act, widths, weight_var, bias_var, T, rng, ntk=False):
        phi, dphi = ACTS[act]
        L = len(widths) - 1
        self.L, self.widths, self.T, self.C = L, widths, T, widths[-1]
        self.sw, self.sb, self.ntk = weight_var, bias_var, ntk
        self.X = rng.standard_normal((T, widths[0]))
        self.W = [rng.standard_normal((widths[l + 1], widths[l])) * np.sqrt(weight_var / widths[l]) for l in range(L)]
        self.b = [rng.standard_normal(widths[l + 1]) * np.sqrt(bias_var) for l in range(L)]
        self.H, self.U = [self.X], []
        for l in range(L):
            u = self.H[-1] @ self.W[l].T + self.b[l]
            self.U.append(u)
            if l < L - 1:
                self.H.append(phi(u))
        C = self.C
        self.delta = [None] * L        # (C, T, M_l): d f_k(x_t) / d u^l
        self.delta[L - 1] = np.repeat(np.eye(C)[:, None, :], T, axis=1)
        for l in range(L - 2, -1, -1):
            self.delta[l] = (self.delta[l + 1] @ self.W[l + 1]) * dphi(self.U[l])[None]

    @property
    def logits(self):
        return self.U[-1]

    def n_params(self):
        w = self.widths
        return sum(w[l + 1] * w[l] + w[l + 1] for l in range(self.L))

    def jacobian(self):
        """Explicit J (C T x P): columns dW^1, db^1, ..., dW^L, db^L; SP or NTK parameterization."""
        C, T = self.C, self.T
        cols = []
        for l in range(self.L):
            D = self.delta[l].reshape(C * T, -1)
            Hp = np.tile(self.H[l], (C, 1))
            gw = D[:, :, None] * Hp[:, None, :]
            if self.ntk:
                gw = gw * np.sqrt(self.sw / self.widths[l])
                cols += [gw.reshape(C * T, -1), D * np.sqrt(self.sb)]
            else:
                cols += [gw.reshape(C * T, -1), D]
        return np.concatenate(cols, axis=1)

    def dual_blocks(self):
        """Per-layer dual Gram blocks J_l J_l^T (not divided by T)."""
        C = self.C
        out = []
        for l in range(self.L):
            D = self.delta[l].reshape(C * self.T, -1)
            HH = self.H[l] @ self.H[l].T
            G = self.sw * HH / self.widths[l] + self.sb if self.ntk else HH + 1.0
            out.append((D @ D.T) * np.tile(G, (C, C)))
        return out

    def feature_blocks(self):
        """Per-layer dual blocks of the input/feature metric: (d f / d h^l)(d f / d h^l)^T, l = 0..L-1."""
        out = []
        for l in range(self.L):
            G = self.delta[l].reshape(self.C * self.T, -1) @ self.W[l]
            out.append(G @ G.T)
        return out

    def softmax_R(self):
        """Block-diagonal Q^{1/2} (rows (k, t)), Q_t = diag(g_t) - g_t g_t^T."""
        C, T = self.C, self.T
        z = self.logits - self.logits.max(axis=1, keepdims=True)
        g = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        R = np.zeros((C * T, C * T))
        for t in range(T):
            Q = np.diag(g[t]) - np.outer(g[t], g[t])
            w, V = np.linalg.eigh(Q)
            idx = np.arange(C) * T + t
            R[np.ix_(idx, idx)] = (V * np.sqrt(np.clip(w, 0, None))) @ V.T
        return R, g


def make_net(case, M, T, C, seed, ntk=False):
    kw = CASES[case]
    widths = [M] * (kw["depth"] + 1) + [C]
    return Net(kw["activation"], widths, kw["weight_var"], kw["bias_var"], T, np.random.default_rng(seed), ntk=ntk)


def network(case):
    return Network(**CASES[case])


def rms(x):
    return float(np.sqrt(np.mean(np.square(x))))


# ----------------------------------------------------------------------------------------------------------------------
# the duality the whole module rests on
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ntk", [False, True])
def test_dual_gram_has_the_fisher_spectrum(ntk):
    """Non-zero eigenvalues of F = J^T J / T (P x P) equal those of the dual built from deltas and activations."""
    net = make_net("tanh", 7, 3, 2, seed=1, ntk=ntk)
    J = net.jacobian()
    assert J.shape == (6, net.n_params())
    F = J.T @ J / net.T
    ev_primal = np.sort(np.linalg.eigvalsh(F))[-6:]
    ev_dual = np.linalg.eigvalsh(sum(net.dual_blocks()) / net.T)
    np.testing.assert_allclose(ev_primal, ev_dual, rtol=1e-9, atol=1e-12 * ev_dual.max())
    # and the module's own simulator builds the same kind of matrix (same size, positive semi-definite, P counted)
    sp = finite_width_fisher(network("tanh"), 7, 3, 2, parameterization="ntk" if ntk else "standard", seed=1)
    assert sp.eigenvalues.shape == (6,) and sp.eigenvalues.min() > -1e-10
    assert sp.n_eigenvalues == (6 if ntk else net.n_params())


# ----------------------------------------------------------------------------------------------------------------------
# MSE, standard parameterization: m_lambda, s_lambda, lambda_max against width
# ----------------------------------------------------------------------------------------------------------------------
def _mse_errors(case, M, T, C, seeds):
    """Signed relative errors per seed: mean, second moment, lambda_max, mean of the C largest, median of the bulk."""
    th = fisher_statistics(network(case), M, T, C)
    errs = []
    for s in seeds:
        net = make_net(case, M, T, C, seed=s)
        F = sum(net.dual_blocks()) / T
        ev = np.linalg.eigvalsh(F)
        P = net.n_params()
        errs.append([np.trace(F) / P / th.mean_eigenvalue - 1,
                     np.sum(F * F) / P / th.second_moment - 1,
                     ev[-1] / th.lambda_max - 1,
                     ev[-C:].mean() / th.lambda_max - 1,        # the C-fold outlier, averaged
                     np.median(ev[:-C]) / th.bulk_eigenvalue - 1])
    return np.asarray(errs)


def _check_convergence(err_small, err_large, n_mean=1):
    """err_*: (seeds, stats) signed relative errors at M_SMALL, M_LARGE; the first n_mean columns are means."""
    for M, e in ((M_SMALL, err_small), (M_LARGE, err_large)):
        r = np.sqrt(np.mean(np.square(e), axis=0))
        assert np.all(r[:n_mean] < K_MEAN / np.sqrt(M)), (M, r)
        assert np.all(r[n_mean:] < K_OTHER / np.sqrt(M)), (M, r)
    assert rms(err_large) < SHRINK * rms(err_small), (rms(err_small), rms(err_large))


@pytest.mark.parametrize("case", ["tanh", "relu"])
def test_mse_statistics_converge_like_one_over_sqrt_width(case):
    T, C, seeds = 16, 2, range(N_SEEDS)
    e_small = _mse_errors(case, M_SMALL, T, C, seeds)
    e_large = _mse_errors(case, M_LARGE, T, C, seeds)
    _check_convergence(e_small[:, :4], e_large[:, :4])
    # the bulk eigenvalue alpha M (kappa_1 - kappa_2)/T is spread at relative O(sqrt(T/M)) around its value (a
    # Marchenko-Pastur-like spreading of the C(T-1)-fold degenerate level; docs/mathematics.md sec. 5: 'approached slowly');
    # its median must be within 3 sqrt(T/M) at the large width
    assert rms(e_large[:, 4]) < 3 * np.sqrt(T / M_LARGE)


def test_unequal_widths():
    """Width ratios alpha_l enter through alpha = sum alpha_l alpha_{l-1} and the weights alpha_{l-1}/alpha."""
    ratios, M, T, C = (2.0, 0.5, 1.5), 1024, 16, 2     # equal-width formulas would be off by 30-60% here
    net_t = Network("tanh", depth=2, weight_var=2.0, bias_var=0.3, width_ratios=ratios)
    th = fisher_statistics(net_t, M, T, C)
    assert np.isclose(th.alpha, 2.0 * 0.5 + 0.5 * 1.5)
    widths = [int(r * M) for r in ratios] + [C]
    e = []
    for s in range(4):
        net = Net("tanh", widths, 2.0, 0.3, T, np.random.default_rng(50 + s))
        F = sum(net.dual_blocks()) / T
        ev = np.linalg.eigvalsh(F)
        e.append([np.trace(F) / net.n_params() / th.mean_eigenvalue - 1, ev[-C:].mean() / th.lambda_max - 1])
    r = np.sqrt(np.mean(np.square(e), axis=0))
    m_min = min(widths[:-1])
    assert r[0] < K_MEAN / np.sqrt(m_min) and r[1] < K_OTHER / np.sqrt(m_min), r


def test_theory_scalings_in_width():
    """M m_lambda, s_lambda and lambda_max / M do not depend on M; eta_c = 2 / lambda_max."""
    net = network("tanh")
    a = fisher_statistics(net, 100, 16, 3)
    b = fisher_statistics(net, 10_000, 16, 3)
    assert np.isclose(100 * a.mean_eigenvalue, 10_000 * b.mean_eigenvalue, rtol=1e-12)
    assert np.isclose(a.second_moment, b.second_moment, rtol=1e-12)
    assert np.isclose(a.lambda_max / 100, b.lambda_max / 10_000, rtol=1e-12)
    assert np.isclose(a.eta_critical * a.lambda_max, 2.0)
    assert a.lambda_max_multiplicity == 3
    # alpha = sum_{l=1}^{L-1} alpha_l alpha_{l-1} = depth for equal widths
    assert a.alpha == 3.0


def test_diagonal_blocks():
    """F_ll of each weight layer (readout included) against the same finite networks, M = 1024."""
    case, M, T, C = "tanh", 1024, 16, 2
    th = fisher_statistics(network(case), M, T, C)
    errs, first = [], []
    for s in range(4):
        net = make_net(case, M, T, C, seed=10 + s)
        row = []
        for l, B in enumerate(net.dual_blocks()):
            B = B / T
            n = net.widths[l + 1] * net.widths[l] + net.widths[l + 1]
            ev = np.linalg.eigvalsh(B)
            row.append([np.trace(B) / n / th.layer_mean_eigenvalue[l] - 1,
                        np.sum(B * B) / n / th.layer_second_moment[l] - 1,
                        ev[-C:].mean() / th.layer_lambda_max[l] - 1])
            if l == 0:
                first.append(ev[-1] / th.layer_lambda_max[0])
        errs.append(row)
    e = np.sqrt(np.mean(np.square(errs), axis=0))      # (L, 3)
    # the readout block has n = C M_{L-1} + C parameters, not ~M^2: its mean carries a relative O(1/M) bias from
    # the C bias parameters too -- still far inside K / sqrt(M)
    assert np.all(e[:, 0] < K_MEAN / np.sqrt(M)), e
    assert np.all(e[:, 1] < K_OTHER / np.sqrt(M)), e
    # layers l >= 2 have an outlier (kappa_2^(l) > 0) ...
    assert np.all(e[1:, 2] < K_OTHER / np.sqrt(M)), e
    # ... but the first does not: qhat_2^0 = 0 (independent inputs), so kappa_2^(1) = 0 and all C T non-zero
    # eigenvalues of F_11 sit at M qtilde_1^1 qhat_1^0 / T at leading order; the input Gram X X^T / M_0 spreads them
    # as a Marchenko-Pastur law, whose edge is (1 + sqrt(T/M_0))^2. The top eigenvalue must lie in that band.
    assert th.layer_kappa2[0] == 0.0
    edge = (1 + np.sqrt(T / M)) ** 2
    assert np.all(np.asarray(first) > 1 - K_OTHER / np.sqrt(M)) and np.all(np.asarray(first) < edge * (1 + K_OTHER / np.sqrt(M))), first
    # the blocks add up: the full dual is the sum of the layer duals, so lambda_max(F) <= sum_l lambda_max(F_ll)
    assert th.lambda_max <= th.layer_lambda_max.sum() * (1 + 1e-12)


# ----------------------------------------------------------------------------------------------------------------------
# NTK parameterization
# ----------------------------------------------------------------------------------------------------------------------
def test_ntk_parameterization_width_independent_and_matches():
    case, T, C = "relu", 16, 2
    th = fisher_statistics(network(case), 256, T, C, parameterization="ntk")
    th2 = fisher_statistics(network(case), 4096, T, C, parameterization="ntk")
    assert np.isclose(th.lambda_max, th2.lambda_max, rtol=1e-12)
    assert np.isclose(th.mean_eigenvalue, th2.mean_eigenvalue, rtol=1e-12)
    assert np.isclose(th.condition_number, th.lambda_max / th.bulk_eigenvalue)
    assert np.isclose(th.eta_critical, 2 * T / th.lambda_max)
    res = {}
    for M in (M_SMALL, M_LARGE):
        e = []
        for s in range(N_SEEDS):
            net = make_net(case, M, T, C, seed=20 + s, ntk=True)
            Th = sum(net.dual_blocks())
            ev = np.linalg.eigvalsh(Th)
            e.append([np.trace(Th) / (C * T) / th.mean_eigenvalue - 1, np.sum(Th * Th) / (C * T) / th.second_moment - 1,
                      ev[-C:].mean() / th.lambda_max - 1])
        res[M] = np.asarray(e)
    _check_convergence(res[M_SMALL], res[M_LARGE])


# ----------------------------------------------------------------------------------------------------------------------
# input / feature-space metric
# ----------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["tanh", "relu"])
def test_feature_metric(case):
    T, C = 16, 2
    res = {}
    for M in (M_SMALL, M_LARGE):
        th = feature_metric_statistics(network(case), M, T, C)
        e = []
        for s in range(N_SEEDS):
            net = make_net(case, M, T, C, seed=30 + s)
            blocks = [B / T for B in net.feature_blocks()]
            A = sum(blocks)
            D = sum(net.widths[:-1])
            assert th.dimension == D
            ev = np.linalg.eigvalsh(A)
            e.append([np.trace(A) / D / th.mean_eigenvalue - 1,
                      np.trace(blocks[-1]) / M / th.layer_mean_eigenvalue[-1] - 1,
                      np.sum(A * A) / D / th.second_moment - 1,
                      ev[-C:].mean() / th.lambda_max - 1])
        res[M] = np.asarray(e)
    _check_convergence(res[M_SMALL], res[M_LARGE], n_mean=2)
    # pathology: the mean falls like 1/M while lambda_max stays O(1)
    a, b = feature_metric_statistics(network(case), 100, T, C), feature_metric_statistics(network(case), 10_000, T, C)
    assert np.isclose(a.lambda_max, b.lambda_max) and np.isclose(100 * a.mean_eigenvalue, 10_000 * b.mean_eigenvalue)


# ----------------------------------------------------------------------------------------------------------------------
# cross-entropy (softmax) FIM
# ----------------------------------------------------------------------------------------------------------------------
def test_softmax_moments_against_gauss_hermite():
    """C = 2: g_1 = sigmoid(d), d = f_1 - f_2 ~ N(0, 2 q_1^L); Q_t = g1 g2 [[1,-1],[-1,1]], so
    Tr Q = 2 g1 g2, Tr Q^2 = 4 (g1 g2)^2 and Tr Q_t Q_t' = 4 g1 g2 g1' g2' with corr(d, d') = q_2^L / q_1^L.
    1-D / 2-D Gauss-Hermite (60 nodes, error < 1e-10 for these analytic integrands) versus the module's Monte Carlo:
    agreement within 4 standard errors (false-alarm rate ~1e-4 per quantity)."""
    net = network("tanh")
    th = fisher_statistics(net, 512, 8, 2, loss="cross_entropy", n_mc=4000, seed=3)
    q1, q2 = th.order_parameters["q1"][-1], th.order_parameters["q2"][-1]
    z, w = np.polynomial.hermite_e.hermegauss(60)
    w = w / w.sum()
    p = lambda d: 1.0 / (1.0 + np.exp(-d))
    d = np.sqrt(2 * q1) * z
    v = p(d) * (1 - p(d))
    exact = {"E_trQ": np.sum(w * 2 * v), "E_trQ2": np.sum(w * 4 * v ** 2), "E_g1_squared": np.sum(w * p(d) ** 2)}
    c = q2 / q1
    Z1, Z2 = np.meshgrid(z, z, indexing="ij")
    d1 = np.sqrt(2 * q1) * Z1
    d2 = np.sqrt(2 * q1) * (c * Z1 + np.sqrt(1 - c * c) * Z2)
    v1, v2 = p(d1) * (1 - p(d1)), p(d2) * (1 - p(d2))
    exact["E_trQQ_pair"] = np.sum(np.outer(w, w) * 4 * v1 * v2)
    for k, val in exact.items():
        assert abs(th.softmax_moments[k] - val) < 4 * th.mc_stderr[k], (k, th.softmax_moments[k], val)


def test_cross_entropy_against_finite_networks():
    """(a) Conditional on a network's own outputs, the large-M dual of F_ce is (alpha M/T) [K_tt' R_t R_t'] (R_t =
    Q_t^{1/2}); its spectrum must match the simulated one at O(1/sqrt(M)). (b) Averaged over networks, the
    module's expected statistics (Monte Carlo over Gaussian outputs) match within the sampling error of the outputs
    (8 networks: relative spread of E Tr Q across networks ~20%, so 25% for means)."""
    case, M, T, C = "tanh", 1024, 16, 3
    mse = fisher_statistics(network(case), M, T, C)
    ce = fisher_statistics(network(case), M, T, C, loss="cross_entropy", n_mc=400)
    assert ce.outliers.shape == (C - 1,)
    assert ce.lambda_max <= mse.lambda_max / 2 * (1 + 1e-12)    # Q_t <= I/2 in the Loewner order
    K = np.full((T, T), mse.kappa2)
    np.fill_diagonal(K, mse.kappa1)
    sims = []
    for s in range(8):
        net = make_net(case, M, T, C, seed=40 + s)
        R, g = net.softmax_R()
        Fce = R @ (sum(net.dual_blocks()) / T) @ R
        ev = np.linalg.eigvalsh(Fce)
        pred = R @ np.kron(np.eye(C), K * mse.alpha * M / T) @ R
        evp = np.linalg.eigvalsh(pred)
        if s < 3:  # (a) conditional check: top C-1 outliers and the trace
            np.testing.assert_allclose(ev[-(C - 1):], evp[-(C - 1):], rtol=K_OTHER / np.sqrt(M))
            assert abs(np.trace(Fce) / np.trace(pred) - 1) < K_MEAN / np.sqrt(M)
            # Weyl bracket of the outliers, from the Q-bar decomposition in the docstring
            Qbar = np.mean([np.diag(gt) - np.outer(gt, gt) for gt in g], axis=0)
            lam_q = np.sort(np.linalg.eigvalsh(Qbar))[::-1][:C - 1]
            lo = mse.alpha * M * mse.kappa2 * lam_q
            assert np.all(evp[::-1][:C - 1] >= lo * (1 - 1e-9))
            assert np.all(evp[::-1][:C - 1] <= lo + mse.alpha * M / T * (mse.kappa1 - mse.kappa2) * 0.5 + 1e-9)
        P = net.n_params()
        Ace = R @ (sum(net.feature_blocks()) / T) @ R          # softmax-weighted input/feature metric
        sims.append([np.trace(Fce) / P, np.sum(Fce * Fce) / P, ev[-1], ev[-2], np.linalg.eigvalsh(Ace)[-1]])
    sims = np.mean(sims, axis=0)
    fce = feature_metric_statistics(network(case), M, T, C, loss="cross_entropy", n_mc=400)
    assert abs(sims[4] / fce.lambda_max - 1) < 0.25
    assert abs(sims[0] / ce.mean_eigenvalue - 1) < 0.25
    assert abs(sims[1] / ce.second_moment - 1) < 0.35       # a square: twice the relative spread
    assert abs(sims[2] / ce.outliers[0] - 1) < 0.25
    assert abs(sims[3] / ce.outliers[1] - 1) < 0.25


# ----------------------------------------------------------------------------------------------------------------------
# learning rate: eta_c = 2 / lambda_max
# ----------------------------------------------------------------------------------------------------------------------
def _gd_losses(net, Y, eta, steps, stop_ratio=1e6):
    """Full-batch GD on (1/2T) sum_t ||y_t - f(x_t)||^2 for a tanh network (explicit numpy backprop); stops once the
    loss exceeds ``stop_ratio`` times its initial value."""
    W = [w.copy() for w in net.W]
    b = [x.copy() for x in net.b]
    T, L = net.T, net.L
    losses = []
    for _ in range(steps):
        H, U = [net.X], []
        for l in range(L):
            U.append(H[-1] @ W[l].T + b[l])
            if l < L - 1:
                H.append(np.tanh(U[-1]))
        r = U[-1] - Y
        loss = 0.5 * np.sum(r * r) / T
        losses.append(loss)
        if not np.isfinite(loss) or loss > stop_ratio * losses[0]:
            break
        d = r / T
        for l in range(L - 1, -1, -1):
            gW, gb = d.T @ H[l], d.sum(axis=0)
            if l > 0:
                d = (d @ W[l]) * (1.0 - np.tanh(U[l - 1]) ** 2)
            W[l] -= eta * gW
            b[l] -= eta * gb
    return np.array(losses)


def test_learning_rate_bound():
    """Start next to a global minimum (targets = initial outputs + 1e-2 noise, so the Hessian ~ F): with the
    theory's eta_c = 2/lambda_max, GD at 0.9 eta_c never raises the loss and converges; at 1.1 eta_c the minimum is
    unstable: the loss grows geometrically (factor ~ (1 - 1.1*2)^2 = 1.44 per step along the top eigenvector) by
    orders of magnitude. (Past that, a finite network may 'catapult' back to a flatter minimum instead of diverging
    to infinity; the linearised model diverges outright, checked last.)"""
    M, T = 512, 16
    kw = dict(activation="tanh", depth=2, weight_var=3.0, bias_var=0.64)
    net = Net("tanh", [M, M, M, 1], 3.0, 0.64, T, np.random.default_rng(0))
    th = fisher_statistics(Network(**kw), M, T, 1)
    lam = np.linalg.eigvalsh(sum(net.dual_blocks()) / T)[-1]
    # precondition: this network's lambda_max is within the O(1/sqrt(M)) band, well inside +-10%
    assert abs(lam / th.lambda_max - 1) < 0.05
    Y = net.logits + 1e-2 * np.random.default_rng(1).standard_normal(net.logits.shape)
    # 0.9 eta_c: slowest relevant contraction ~0.6 per step here, 30 steps reach ~1e-6 of the initial loss
    stable = _gd_losses(net, Y, 0.9 * th.eta_critical, 30)
    assert np.all(np.diff(stable) <= 1e-12 * stable[0]) and stable[-1] < 1e-3 * stable[0]
    # 1.1 eta_c: growth ~1.3-1.44 per step, > 1e3 within ~25 steps (60 allowed)
    unstable = _gd_losses(net, Y, 1.1 * th.eta_critical, 60, stop_ratio=1e3)
    assert np.nanmax(unstable) > 1e3 * unstable[0]
    # linearised dynamics r <- (I - eta Theta / T) r with the network's own F: diverges for every eta > eta_c
    F = sum(net.dual_blocks()) / T
    r = (net.logits - Y).ravel()
    for fac, grows in ((0.9, False), (1.1, True)):
        rr = r.copy()
        for _ in range(200):
            rr = rr - fac * 2 / lam * (F @ rr)
        assert (np.linalg.norm(rr) > 1e3 * np.linalg.norm(r)) == grows


# ----------------------------------------------------------------------------------------------------------------------
# invariants, results, validation
# ----------------------------------------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(act=st.sampled_from(["tanh", "relu", "erf"]), depth=st.integers(1, 4), sw=st.floats(0.5, 3.0),
       sb=st.floats(0.05, 1.0), T=st.integers(2, 50), C=st.integers(1, 5), M=st.integers(10, 5000))
def test_invariants(act, depth, sw, sb, T, C, M):
    net = Network(act, depth=depth, weight_var=sw, bias_var=sb)
    s = fisher_statistics(net, M, T, C)
    N = s.alpha * M * M
    # the statistics describe C T non-zero eigenvalues among N ~ alpha M^2: they are a spectrum only while C T <= N
    # (M = 10, T = 23, C = 5 has 115 > 100, and Jensen fails as it must)
    assume(C * T <= N)
    # the leading dual has eigenvalue lambda_max (C-fold) and the bulk (C(T-1)-fold): trace and Frobenius identities
    assert np.isclose(s.mean_eigenvalue * N, C * (s.lambda_max + (T - 1) * s.bulk_eigenvalue), rtol=1e-10)
    assert np.isclose(s.second_moment * N, C * (s.lambda_max ** 2 + (T - 1) * s.bulk_eigenvalue ** 2), rtol=1e-10)
    assert 0 < s.kappa2 <= s.kappa1 * (1 + 1e-12)       # Cauchy-Schwarz on the overlaps
    assert s.second_moment >= s.mean_eigenvalue ** 2     # Jensen
    n = fisher_statistics(net, M, T, C, parameterization="ntk")
    assert n.lambda_max >= n.mean_eigenvalue >= n.bulk_eigenvalue > 0
    f = feature_metric_statistics(net, M, T, C)
    # trace of the leading dual (1/T) I_C (x) [kappa_1 I + kappa_2 (11^T - I)]: C (lambda_max + (T-1)(k1-k2)/T)
    assert np.isclose(f.mean_eigenvalue * f.alpha_prime * M,
                      C * (f.lambda_max + (T - 1) * (f.kappa1 - f.kappa2) / T), rtol=1e-10)
    assert np.isclose(f.kappa1, np.sum(f.layer_kappa1))


def test_results_are_frozen_and_serialisable():
    s = fisher_statistics(network("relu"), 128, 8, 2)
    assert isinstance(s, FisherStatistics)
    with pytest.raises(Exception):
        s.kappa1 = 0.0
    d = s.to_dict()
    assert d["kappa1"] == s.kappa1 and d["network"]["depth"] == 2 and isinstance(d["layer_lambda_max"], list)
    f = feature_metric_statistics(network("relu"), 128, 8, 2)
    assert isinstance(f, FeatureMetricStatistics) and f.to_dict()["dimension"] == 3 * 128


def test_centred_network_warns():
    with pytest.warns(RuntimeWarning, match="centred"):
        fisher_statistics(Network("tanh", depth=2, weight_var=1.5, bias_var=0.0), 64, 4, 1)


@pytest.mark.parametrize("kwargs, exc", [
    (dict(width=0), ValueError), (dict(width=10.5), TypeError), (dict(n_samples=0), ValueError),
    (dict(n_outputs=0), ValueError), (dict(parameterization="mean_field"), ValueError), (dict(loss="hinge"), ValueError),
    (dict(loss="cross_entropy", n_outputs=1), ValueError),
])
def test_bad_input(kwargs, exc):
    args = dict(network=network("tanh"), width=32, n_samples=4, n_outputs=2)
    args.update(kwargs)
    with pytest.raises(exc):
        fisher_statistics(**args)


def test_bad_network():
    with pytest.raises(TypeError):
        fisher_statistics("tanh", 32, 4)
    with pytest.raises(ValueError, match="dropout"):
        fisher_statistics(Network("tanh", depth=2, bias_var=0.1, dropout_keep=0.9), 32, 4)


@pytest.mark.parametrize("parameterization", ["standard", "ntk"])
def test_single_sample_has_no_bulk_and_no_nan(parameterization):
    """Issue 11: fisher_statistics(net, 64, 1, 2).bulk_eigenvalue was NaN. With T = 1 the leading dual is
    ``scale kappa_1 I_C`` (docs/fisher.md sec. 1): no bulk, all C non-zero eigenvalues equal lambda_max, so
    bulk_eigenvalue is defined as that smallest eigenvalue (= lambda_max, condition number 1). Checked (i) in closed
    form (alpha M kappa_1 for SP, kappa'_1 for the NTK), (ii) against random finite networks: the C eigenvalues of
    one network's dual scatter around it by a relative K / sqrt(M); rms over 4 seeds below K_TOL / sqrt(M) with
    K_TOL = 8 (module docstring)."""
    net = Network("tanh", depth=3, weight_var=1.5, bias_var=0.05)
    st64 = fisher_statistics(net, 64, 1, 2, parameterization=parameterization)
    assert np.isfinite(st64.bulk_eigenvalue) and np.isfinite(st64.condition_number)
    M = 1024
    st = fisher_statistics(net, M, 1, 2, parameterization=parameterization)
    closed = st.alpha * M * st.kappa1 if parameterization == "standard" else st.kappa1
    assert st.lambda_max == pytest.approx(closed, rel=1e-14)
    assert st.bulk_eigenvalue == st.lambda_max and st.condition_number == 1.0
    errs = []
    for seed in range(4):
        ev = finite_width_fisher(net, M, 1, 2, parameterization=parameterization, seed=seed).eigenvalues
        assert ev.shape == (2,)
        errs.extend(ev / st.bulk_eigenvalue - 1.0)
    assert rms(errs) < 8 / np.sqrt(M)


def test_cross_entropy_bulk_is_none_not_nan():
    """Issue 11: the cross-entropy bulk eigenvalue is not computed; it was NaN ("not computed"), it is now None, and
    so is the condition number that depends on it, in the dataclass and in ``to_dict`` (no NaN anywhere)."""
    import json

    net = Network("tanh", depth=2, weight_var=1.5, bias_var=0.1)
    st = fisher_statistics(net, 128, 4, 3, loss="cross_entropy", n_mc=50)
    assert st.bulk_eigenvalue is None and st.condition_number is None
    d = st.to_dict()
    assert d["bulk_eigenvalue"] is None and d["condition_number"] is None
    json.dumps(d, allow_nan=False)     # every number finite, None for what is not computed
    mse = fisher_statistics(net, 128, 4, 3)
    assert isinstance(mse.bulk_eigenvalue, float) and mse.condition_number == pytest.approx(
        mse.lambda_max / mse.bulk_eigenvalue, rel=1e-15)
