"""Kernel derivatives (meanfield.hyperparameters) against central finite differences of meanfield.kernels and against
an independent mpmath recursion differentiated at 40 digits; the log marginal likelihood's gradient against finite
differences; fit_nngp against a derivative-free optimizer.

Error analysis. Central differences with relative step h: truncation ~ h^2 |f'''| / 6 and rounding ~ eps |f| / h;
with h = 1e-5 and kernels of order 1 whose parameter dependence is smooth on the scale of the parameters, the error is
~1e-10 relative (1e-11 rounding x condition of the recursion); tolerance 1e-7. The mpmath route evaluates the closed
forms (arc-cosine, arcsine) at 40 digits and differentiates with mpmath.diff (step ~1e-20, error ~1e-30); the library
works in float64 through a depth-3 recursion whose per-layer error is a few ulps amplified by the layer Jacobians
(order 1 here): expected ~1e-15 relative to the largest entry (measured 3e-16 relu, 4e-16 erf); tolerance 1e-13.
"""
from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings, strategies as st

from meanfield import Network, kernels
from meanfield.hyperparameters import (KernelDerivatives, MarginalLikelihood, NNGPFit, fit_nngp, kernel_derivatives,
                                       nngp_log_marginal_likelihood)
from meanfield.layers import Dense, Dropout, Nonlinearity, Residual, serial

WV = [1.3, 1.7, 0.9, 1.1]
BV = [0.1, 0.2, 0.05, 0.3]


def _net(act, w=WV, b=BV, keep=1.0):
    params = {"slope": 0.2} if act == "leaky_relu" else {}
    return Network(act, depth=3, weight_var=list(w), bias_var=list(b), activation_params=params, dropout_keep=keep)


def _fd(act, x, x2, p, keep=1.0, h=1e-5, **kw):
    out = []
    for s in (h, -h):
        w, b = list(WV), list(BV)
        (w if p % 2 == 0 else b)[p // 2] += s
        r = kernels(_net(act, w, b, keep), x, x2, **kw)
        out.append((r.nngp, r.ntk))
    return (out[0][0] - out[1][0]) / (2 * h), (out[0][1] - out[1][1]) / (2 * h)


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "erf", "sin", "linear"])
@pytest.mark.parametrize("keep, sym", [(1.0, True), (1.0, False), (0.8, True)])
def test_derivatives_match_finite_differences(act, keep, sym):
    rng = np.random.default_rng(0)
    x, x2 = rng.standard_normal((5, 3)), (None if sym else rng.standard_normal((3, 3)))
    d = kernel_derivatives(_net(act, keep=keep), x, x2)
    r = kernels(_net(act, keep=keep), x, x2)
    assert np.array_equal(d.nngp, r.nngp) or np.allclose(d.nngp, r.nngp, rtol=1e-14, atol=0)
    assert np.allclose(d.ntk, r.ntk, rtol=1e-14, atol=0)
    for p in range(8):
        fk, ft = _fd(act, x, x2, p, keep)
        assert np.max(np.abs(fk - d.d_nngp[p])) <= 1e-7 * max(np.max(np.abs(d.d_nngp[p])), 1e-3)
        assert np.max(np.abs(ft - d.d_ntk[p])) <= 1e-7 * np.max(np.abs(d.d_ntk[p]))
    if sym:   # derivatives of a symmetric kernel are exactly symmetric
        assert np.array_equal(d.d_nngp, d.d_nngp.transpose(0, 2, 1))
        assert np.array_equal(d.d_ntk, d.d_ntk.transpose(0, 2, 1))


def test_standard_parameterization_and_residual_chain():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3))
    d = kernel_derivatives(_net("relu"), x, parameterization="standard", width=50.0)
    for p in (0, 3, 6):
        fk, ft = _fd("relu", x, None, p, parameterization="standard", width=50.0)
        assert np.max(np.abs(ft - d.d_ntk[p])) <= 1e-7 * np.max(np.abs(d.d_ntk[p]))

    def chain(w):
        return serial(Dense(w[0], w[1]), Residual(serial(Nonlinearity("erf"), Dense(w[2], w[3])), alpha=0.7),
                      Nonlinearity("relu"), Dropout(0.9), Dense(w[4], w[5]))

    w0 = np.array([1.2, 0.1, 1.5, 0.2, 0.8, 0.3])
    d = kernel_derivatives(chain(w0), x)
    assert [p for p, _ in d.parameters] == ["0", "0", "1.block.1", "1.block.1", "4", "4"]
    for p in range(6):
        e = np.zeros(6)
        e[p] = 1e-5
        rp, rm = kernels(chain(w0 + e), x), kernels(chain(w0 - e), x)
        fk, ft = (rp.nngp - rm.nngp) / 2e-5, (rp.ntk - rm.ntk) / 2e-5
        assert np.max(np.abs(fk - d.d_nngp[p])) <= 1e-7 * np.max(np.abs(d.d_nngp[p]))
        assert np.max(np.abs(ft - d.d_ntk[p])) <= 1e-7 * np.max(np.abs(d.d_ntk[p]))


# --------------------------------------------------------------------------------------------- mpmath reference
def _mp_pair(act, qi, qj, Q):
    if act == "relu":
        r = mp.sqrt(qi * qj)
        t = mp.acos(max(min(Q / r, mp.mpf(1)), mp.mpf(-1)))
        return r * (mp.sin(t) + (mp.pi - t) * mp.cos(t)) / (2 * mp.pi), (mp.pi - t) / (2 * mp.pi)
    A, B = 1 + 2 * qi, 1 + 2 * qj
    return 2 / mp.pi * mp.asin(2 * Q / mp.sqrt(A * B)), 4 / mp.pi / mp.sqrt(A * B - 4 * Q * Q)


def _mp_kernels(act, x, w, b):
    """NNGP and NTK (NTK parameterization) of a depth-3 network by the closed forms, in mpmath."""
    n, m = len(x), len(x[0])
    G = [[mp.fsum(mp.mpf(x[i][k]) * mp.mpf(x[j][k]) for k in range(m)) / m for j in range(n)] for i in range(n)]
    Q = [[w[0] * G[i][j] + b[0] for j in range(n)] for i in range(n)]
    T = [row[:] for row in Q]
    for l in range(1, len(w)):
        pairs = [[_mp_pair(act, Q[i][i], Q[j][j], Q[i][j]) if i != j else None for j in range(n)] for i in range(n)]
        for i in range(n):   # same-input entries by the one-variable forms (exact at c = 1)
            if act == "relu":
                pairs[i][i] = (Q[i][i] / 2, mp.mpf(1) / 2)
            else:
                pairs[i][i] = (2 / mp.pi * mp.asin(2 * Q[i][i] / (1 + 2 * Q[i][i])), 4 / mp.pi / mp.sqrt(1 + 4 * Q[i][i]))
        Q = [[w[l] * pairs[i][j][0] + b[l] for j in range(n)] for i in range(n)]
        T = [[Q[i][j] + w[l] * pairs[i][j][1] * T[i][j] for j in range(n)] for i in range(n)]
    return Q, T


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_derivatives_match_mpmath(act):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2))
    d = kernel_derivatives(_net(act), x)
    mp.mp.dps = 40
    try:
        for p in range(8):
            def entry(s, i, j, which):
                w = [mp.mpf(v) for v in WV]
                b = [mp.mpf(v) for v in BV]
                (w if p % 2 == 0 else b)[p // 2] += s
                return _mp_kernels(act, x.tolist(), w, b)[which][i][j]

            for which, got in ((0, d.d_nngp[p]), (1, d.d_ntk[p])):
                scale = np.max(np.abs(got))
                for i, j in ((0, 0), (0, 1), (1, 2)):
                    ref = float(mp.diff(lambda s: entry(s, i, j, which), 0))
                    assert abs(got[i, j] - ref) <= 1e-13 * scale, (p, which, i, j, got[i, j], ref)
    finally:
        mp.mp.dps = 15


@pytest.mark.parametrize("act", ["tanh", "gelu", "softplus", "silu"])
def test_smooth_activations_series_route_against_finite_differences(act):
    """Smooth activations without closed forms: the partials are Mehler series with shifted Hermite tables."""
    rng = np.random.default_rng(5)
    x, x2 = rng.standard_normal((5, 3)), rng.standard_normal((3, 3))
    for X2 in (None, x2):
        d = kernel_derivatives(_net(act), x, X2)
        for p in (0, 3, 5, 6):
            fk, ft = _fd(act, x, X2, p)
            assert np.max(np.abs(fk - d.d_nngp[p])) <= 1e-7 * np.max(np.abs(d.d_nngp[p]))
            assert np.max(np.abs(ft - d.d_ntk[p])) <= 1e-7 * np.max(np.abs(d.d_ntk[p]))


@pytest.mark.parametrize("name", ["tanh", "gelu", "sigmoid"])
def test_series_partials_against_nested_quadrature(name):
    """An independent algorithm for the partials: Price's theorem d qhat/dQ = qdot, d qdot/dQ = E[phi''(u) phi''(v)],
    and the heat equation d qhat/dq_u = E[phi''(u) phi(v)] / 2, evaluated by the engine's nested 2-D quadrature
    (kink-aware Gauss-Legendre, ~1e-15) against the Mehler-series partials (measured 2e-14 relative to the tile's
    largest qhat / qdot; tolerance 1e-12); all five partials also against the quadrature route of the kinked
    activations (Stein's identity for d qdot/dq). The same-input slope d E[phi'^2]/dq against a 4th-order central
    difference of E[phi'(u)^2] (step 1e-3: truncation ~1e-12 h^4-scaled, rounding ~1e-13; tolerance 1e-9)."""
    from meanfield import _gaussian_kernels as gk
    from meanfield import get_activation
    from meanfield.gaussian import PairPlan

    act = get_activation(name)
    q = np.array([0.7, 1.9, 3.1])
    Q = np.array([[0.7, 0.5, -0.9], [0.5, 1.9, 1.2], [-0.9, 1.2, 3.1]])
    plan = PairPlan(act, q, True, 1e-14)
    r = np.arange(3)
    qhat, qdot = plan.pairs(Q.copy(), r, r)
    a_i, a_j, bQ, b_i, b_j = plan.partials(Q.copy(), r, r, qhat, qdot, True)
    args = act.kernel_args
    for i in range(3):
        for j in range(3):
            if i != j:
                assert abs(a_i[i, j] - 0.5 * gk.e2d(*args, q[i], q[j], Q[i, j], 2, 0)) <= 1e-12 * np.max(qhat)
                assert abs(a_j[i, j] - 0.5 * gk.e2d(*args, q[i], q[j], Q[i, j], 0, 2)) <= 1e-12 * np.max(qhat)
                assert abs(bQ[i, j] - gk.e2d(*args, q[i], q[j], Q[i, j], 2, 2)) <= 1e-12 * np.max(qdot)
    # d qdot/dq_i, d qdot/dq_j: the quadrature route's Stein identity (E[u phi''(u) phi'(v)] - Q E[phi'' phi'']) /
    # (2 q_i) on the nested rule (the route of kinked activations, here without kinks): measured 2e-14
    quad = plan._kinked_partials(Q.copy(), r, r, True)
    off = ~np.eye(3, dtype=bool)
    for k, (mine, other) in enumerate(zip((a_i, a_j, bQ, b_i, b_j), quad)):
        assert np.max(np.abs(mine - other)[off]) <= 1e-12 * (np.max(qhat) if k < 2 else np.max(qdot)), k
    dE2, dD2 = plan.row_slopes()
    h = 1e-3
    for i in range(3):
        f = [gk.mean_sq(*args, q[i] + s * h, 1) for s in (-2, -1, 1, 2)]
        fd = (f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * h)
        assert abs(dD2[i] - fd) <= 1e-9


# ------------------------------------------------------------------------------------------- kinked activations
KINKED = [("hard_tanh", {}), ("elu", {"alpha": 0.5}), ("selu", {}), ("elu", {"alpha": 1.0})]


@pytest.mark.parametrize("act, params", KINKED)
def test_kinked_activations_against_finite_differences(act, params):
    """hard_tanh, elu (alpha != 1: phi' jumps at 0; alpha = 1: only phi'' jumps) and selu through the distributional
    integration by parts (delta functions of phi'' at the kinks). Same error analysis as above: h = 1e-5, truncation
    h^2 |f^(3)| / 6 ~ 1e-11 and rounding eps |f| / h ~ 1e-11 times the recursion's condition (the kernels themselves
    are ~1e-15 accurate); measured 1e-10 to 4e-10 relative to the largest entry; tolerance 2e-8 (the kinked pair
    expectations are smooth functions of the covariance away from correlation +-1, so the FD estimate is valid)."""
    rng = np.random.default_rng(0)
    x, x2 = rng.standard_normal((4, 3)), rng.standard_normal((2, 3))

    def net(w, b):
        return Network(act, depth=3, weight_var=list(w), bias_var=list(b), activation_params=params)

    for X2 in ((None, x2) if act != "selu" and params.get("alpha") != 1.0 else (None,)):   # (test-time budget)
        d = kernel_derivatives(net(WV, BV), x, X2)
        r = kernels(net(WV, BV), x, X2)
        np.testing.assert_allclose(d.ntk, r.ntk, rtol=1e-14, atol=0)
        for p in (0, 3):   # w_1 (through every layer) and b_2
            out = []
            for s in (1e-5, -1e-5):
                w, b = list(WV), list(BV)
                (w if p % 2 == 0 else b)[p // 2] += s
                rr = kernels(net(w, b), x, X2)
                out.append((rr.nngp, rr.ntk))
            fk, ft = (out[0][0] - out[1][0]) / 2e-5, (out[0][1] - out[1][1]) / 2e-5
            assert np.max(np.abs(fk - d.d_nngp[p])) <= 2e-8 * np.max(np.abs(d.d_nngp[p])), (p, "nngp")
            assert np.max(np.abs(ft - d.d_ntk[p])) <= 2e-8 * np.max(np.abs(d.d_ntk[p])), (p, "ntk")
        if X2 is None:
            assert np.array_equal(d.d_ntk, d.d_ntk.transpose(0, 2, 1))


def _mp_kinked(name, alpha):
    """phi, phi' and their conditional means E[phi(m + s z)], E[phi'(m + s z)] in closed form (mpmath), kinks."""
    Phi, pdf = mp.ncdf, mp.npdf
    if name == "hard_tanh":
        def Ef(m, s):   # E[clip(m + s z, -1, 1)] = -P(< -1) + P(> 1) + m P(|.| < 1) + s (pdf(a) - pdf(b))
            a, b = (-1 - m) / s, (1 - m) / s
            return -Phi(a) + 1 - Phi(b) + m * (Phi(b) - Phi(a)) + s * (pdf(a) - pdf(b))
        return (lambda x: max(min(x, mp.mpf(1)), mp.mpf(-1)), lambda x: mp.mpf(1 if -1 < x < 1 else 0), Ef,
                lambda m, s: Phi((1 - m) / s) - Phi((-1 - m) / s), (-1, 1))
    from meanfield.activations import SELU_ALPHA, SELU_LAMBDA
    lam, al = (mp.mpf(SELU_LAMBDA), mp.mpf(SELU_ALPHA)) if name == "selu" else (mp.mpf(1), mp.mpf(alpha))

    def Ef(m, s):   # E[x 1{x > 0}] + alpha E[(e^x - 1) 1{x < 0}], x = m + s z
        t = m / s
        return lam * (m * Phi(t) + s * pdf(t) + al * (mp.exp(m + s * s / 2) * Phi(-t - s) - Phi(-t)))
    return (lambda x: lam * (x if x > 0 else al * mp.expm1(x)), lambda x: lam * (1 if x > 0 else al * mp.exp(x)), Ef,
            lambda m, s: lam * (Phi(m / s) + al * mp.exp(m + s * s / 2) * Phi(-m / s - s)), (0,))


def _mp_pair_kinked(name, alpha, qu, qv, Q, deriv):
    """E[phi(u) phi(v)] (or phi') as a 1-D mp.quad over u of phi(u) E[phi(v) | u] (the inner Gaussian integral in
    closed form; v | u ~ N(Q u / qu, qv - Q^2 / qu)), split at the kinks of phi(u) and where the conditional mean of v
    crosses a kink, so that tanh-sinh quadrature sees analytic pieces."""
    f, df, Ef, Edf, kinks = _mp_kinked(name, alpha)
    g, G = (f, Ef) if deriv == 0 else (df, Edf)
    su, s = mp.sqrt(qu), mp.sqrt(qv - Q * Q / qu)
    pts = sorted({mp.mpf(k) / su for k in kinks} | {mp.mpf(k) * su / Q for k in kinks})
    return mp.quad(lambda z: mp.npdf(z) * g(su * z) * G(Q * z / su, s), [-mp.inf] + pts + [mp.inf])


@pytest.mark.parametrize("act, params, pair", [
    ("hard_tanh", {}, (1, 2)), ("elu", {"alpha": 0.5}, (0, 3)),
    pytest.param("selu", {}, (0, 3), marks=pytest.mark.slow),
    pytest.param("hard_tanh", {}, (0, 3), marks=pytest.mark.slow),
    pytest.param("elu", {"alpha": 1.0}, (0, 2), marks=pytest.mark.slow),
    pytest.param("selu", {}, (0, 2), marks=pytest.mark.slow)])
def test_kinked_partials_against_mpmath(act, params, pair):
    """The five partials of (qhat, qdot) with respect to (q_i, q_j, Q) against mpmath: the pair expectations as 1-D
    tanh-sinh integrals of closed-form conditional expectations at 20 digits (error ~1e-20), differentiated by
    mp.diff (which raises the working precision for its difference step: error ~1e-18 absolute). The library:
    nested Gauss-Legendre (~1e-16 relative) and conditional 1-D rules, combined in a few terms of order 1 (Stein's
    identity divides by 2 q_i ~ 1); measured <= 4e-16 absolute on these entries (values 0.005 to 0.7) at 30 digits;
    tolerance 1e-12 absolute (well within the 1e-10 asked). Pair (0, 3) has correlation 0.98 (the delta-delta term
    p(k, l) is large there), (0, 2) and (1, 2) moderate correlations of both signs. Also the same-input slope
    d E[phi'(u)^2] / dq against mp.diff of the 1-D integral."""
    from meanfield import get_activation
    from meanfield.gaussian import PairPlan

    al = params.get("alpha", 1.0)
    q = np.array([0.7, 1.9, 3.1, 0.45])
    Q = np.array([[0.7, 0.5, -0.9, 0.55], [0.5, 1.9, 1.2, 0.1], [-0.9, 1.2, 3.1, 0.3], [0.55, 0.1, 0.3, 0.45]])
    plan = PairPlan(get_activation(act, **params), q, True, 1e-14)
    r = np.arange(4)
    qhat, qdot = plan.pairs(Q.copy(), r, r)
    got = plan.partials(Q.copy(), r, r, qhat, qdot, True)
    i, j = pair
    mp.mp.dps = 20
    try:
        qi, qj, Qij = mp.mpf(q[i]), mp.mpf(q[j]), mp.mpf(Q[i, j])
        F = lambda a, b, c, d: _mp_pair_kinked(act, al, a, b, c, d)   # noqa: E731
        refs = [mp.diff(lambda t: F(t, qj, Qij, 0), qi), mp.diff(lambda t: F(qi, t, Qij, 0), qj),
                mp.diff(lambda t: F(qi, qj, t, 1), Qij), mp.diff(lambda t: F(t, qj, Qij, 1), qi),
                mp.diff(lambda t: F(qi, t, Qij, 1), qj)]
        for k, ref in enumerate(refs):
            assert abs(got[k][i, j] - float(ref)) <= 1e-12, (k, got[k][i, j], float(ref))
        df, kinks = _mp_kinked(act, al)[1], _mp_kinked(act, al)[4]

        def d2(t):   # E[phi'(u)^2], u ~ N(0, t)
            st = mp.sqrt(t)
            return mp.quad(lambda z: mp.npdf(z) * df(st * z) ** 2,
                           [-mp.inf] + sorted(mp.mpf(k) / st for k in kinks) + [mp.inf])

        assert abs(plan.row_slopes()[1][i] - float(mp.diff(d2, mp.mpf(q[i])))) <= 1e-12
    finally:
        mp.mp.dps = 15


def test_kinked_degenerate_pairs():
    """Identical inputs in x1 and x2: their pair's derivatives equal the same-input (diagonal) entries of the symmetric
    kernel, computed by the one-variable slopes. The NNGP derivative to 1e-12 relative (d qhat is smooth in the
    covariance). The NTK derivative only to ~sqrt(eps): after the first nonlinearity the pair's covariance comes from
    the 2-D rule and the variances from the 1-D rule, so their correlation is 1 - O(eps) instead of exactly 1, and
    qdot (like relu's arc-cosine) varies like sqrt(1 - c) there; the forward NTK of such a pair differs from the
    diagonal by the same ~3e-8 (measured 2.8e-8 for the NTK and for its derivative here; relu's closed form 2.7e-9);
    tolerance 1e-6. Inputs x and -x without bias (correlation -1, where qdot is not differentiable for a kinked
    activation), and x and 2 x without bias, raise ValueError naming the inputs."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4))
    net = Network("hard_tanh", depth=2, weight_var=1.7, bias_var=0.2)
    d = kernel_derivatives(net, x, x.copy())
    ds = kernel_derivatives(net, x)
    for arr, ref, tol in ((d.d_nngp, ds.d_nngp, 1e-12), (d.d_ntk, ds.d_ntk, 1e-6)):
        scale = np.max(np.abs(ref))
        assert np.max(np.abs(np.diagonal(arr, axis1=1, axis2=2) - np.diagonal(ref, axis1=1, axis2=2))) <= tol * scale
    with pytest.raises(ValueError, match="x1, x2"):
        kernel_derivatives(Network("selu", depth=2, weight_var=1.0, bias_var=0.0), x[:1], -x[:1])
    # x and 2 x without bias: correlation +1 at different variances, which a bias variance moves off the line
    with pytest.raises(ValueError, match="x1, x2"):
        kernel_derivatives(Network("hard_tanh", depth=2, weight_var=1.0, bias_var=0.0), x[:1], 2 * x[:1])


def test_unsupported_activation_and_bad_input():
    from meanfield import custom_activation

    step = custom_activation("step_tanh", lambda u: math.tanh(u) + (1.0 if u > 0.5 else 0.0),
                             lambda u: 1.0 - math.tanh(u) ** 2, lambda u: -2.0 * math.tanh(u) * (1 - math.tanh(u) ** 2),
                             kinks=[0.5])
    with pytest.raises(NotImplementedError, match="continuous"):
        kernel_derivatives(serial(Dense(1.0, 0.1), Nonlinearity(step), Dense(1.0, 0.1)), np.eye(2))
    with pytest.raises(ValueError, match="x1"):
        kernel_derivatives(Network("relu", depth=2), np.ones(3))
    with pytest.raises(ValueError, match="width"):
        kernel_derivatives(Network("relu", depth=2), np.eye(2), parameterization="standard")


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2 ** 31), st.sampled_from(["relu", "erf"]), st.floats(0.3, 3.0), st.floats(0.0, 1.0))
def test_derivative_invariants(seed, act, w, b):
    """Euler-type identities: with bias_var = 0 and relu the NNGP is homogeneous of degree 1 in each weight_var, so
    sum_l w_l dK/dw_l = L K; in general sum over all 2L parameters of theta dK/dtheta is the derivative along
    theta -> (1+e) theta, checked by a single finite difference."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((4, 3))
    net = Network(act, depth=2, weight_var=w, bias_var=b)
    d = kernel_derivatives(net, x)
    theta = np.array([w, b] * 3)
    along = np.einsum("p,pij->ij", theta, d.d_nngp)
    h = 1e-6
    fd = (kernels(Network(act, depth=2, weight_var=w * (1 + h), bias_var=b * (1 + h)), x, compute_ntk=False).nngp
          - kernels(Network(act, depth=2, weight_var=w * (1 - h), bias_var=b * (1 - h)), x, compute_ntk=False).nngp
          ) / (2 * h)
    assert np.max(np.abs(fd - along)) <= 1e-7 * np.max(np.abs(d.nngp))
    if act == "relu":
        d0 = kernel_derivatives(Network("relu", depth=2, weight_var=w, bias_var=0.0), x)
        np.testing.assert_allclose(np.einsum("p,pij->ij", np.array([w] * 3), d0.d_nngp[0::2]), 3 * d0.nngp,
                                   rtol=1e-12, atol=1e-14 * np.max(d0.nngp))
    assert isinstance(d, KernelDerivatives) and set(d.to_dict()) >= {"d_nngp", "parameters"}


# ------------------------------------------------------------------------------------------- marginal likelihood
def _lml_direct(K, y, s):
    A = K + s * np.eye(len(K))
    Y = y.reshape(len(K), -1)
    sign, logdet = np.linalg.slogdet(A)
    return float(-0.5 * np.sum(Y * np.linalg.solve(A, Y)) - 0.5 * Y.shape[1] * logdet
                 - 0.5 * Y.size * math.log(2 * math.pi))


@pytest.mark.parametrize("ncols", [1, 2])
def test_log_marginal_likelihood_and_gradient(ncols):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((12, 2))
    y = np.sin(x[:, :1] * np.arange(1, ncols + 1)).squeeze()
    net = _net("erf")
    r = nngp_log_marginal_likelihood(net, x, y, 0.05)
    K = kernels(net, x, compute_ntk=False).nngp
    assert abs(r.value - _lml_direct(K, y, 0.05)) <= 1e-10 * abs(r.value)
    h = 1e-5
    for p in range(8):
        w, b = list(WV), list(BV)
        vals = []
        for s in (h, -h):
            ww, bb = list(w), list(b)
            (ww if p % 2 == 0 else bb)[p // 2] += s
            vals.append(_lml_direct(kernels(_net("erf", ww, bb), x, compute_ntk=False).nngp, y, 0.05))
        fd = (vals[0] - vals[1]) / (2 * h)
        got = (r.d_weight_var if p % 2 == 0 else r.d_bias_var)[p // 2]
        assert abs(got - fd) <= 1e-6 * max(abs(fd), 1.0)
    fd = (_lml_direct(K, y, 0.05 + h) - _lml_direct(K, y, 0.05 - h)) / (2 * h)
    assert abs(r.d_noise_var - fd) <= 1e-6 * max(abs(fd), 1.0)
    assert isinstance(r, MarginalLikelihood) and set(r.to_dict()) == {"value", "d_weight_var", "d_bias_var",
                                                                      "d_noise_var"}


def test_fit_nngp_against_derivative_free_optimum():
    """L-BFGS-B with the analytic gradient reaches the optimum that Nelder-Mead (no gradient) finds."""
    rng = np.random.default_rng(4)
    x = rng.uniform(-2, 2, (25, 1))
    y = np.sin(2 * x[:, 0]) + 0.1 * rng.standard_normal(25)
    start = Network("relu", depth=2, weight_var=1.0, bias_var=0.5)
    f = fit_nngp(start, x, y, 0.2)
    assert f.success and f.log_marginal_likelihood > f.initial_log_marginal_likelihood + 1.0

    def neg(t):
        w, b, s = np.exp(t)
        return -_lml_direct(kernels(Network("relu", depth=2, weight_var=w, bias_var=b), x, compute_ntk=False).nngp,
                            y, s)

    nm = scipy.optimize.minimize(neg, np.log([1.0, 0.5, 0.2]), method="Nelder-Mead",
                                 options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 2000})
    # both maximize the same smooth function; Nelder-Mead's tolerance is 1e-9 in the value
    assert f.log_marginal_likelihood >= -nm.fun - 1e-5
    assert abs(f.log_marginal_likelihood + neg(np.log([f.weight_var, f.bias_var, f.noise_var]))) < 1e-9
    assert isinstance(f, NNGPFit) and f.to_dict()["network"]["depth"] == 2
    with pytest.raises(TypeError, match="network"):
        fit_nngp(serial(Dense(1.0)), x, y)
    with pytest.raises(ValueError, match="bounds"):
        fit_nngp(start, x, y, bounds=((0, 1), (1, 2), (1, 2)))
