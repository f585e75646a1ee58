"""Kernel regression (meanfield.regression) against direct linear algebra and explicit ODE integration.

Error analysis: the library works through a Cholesky factorisation (GP) or an eigendecomposition (gradient flow) of
well-conditioned matrices (condition numbers <= ~1e3 here), so agreement with numpy.linalg.solve / scipy.linalg.expm is
expected to ~cond * 1e-16 ~ 1e-13; tolerances 1e-10. The Euler check uses step dt: global error ~ dt * t * |Theta|^2 / 2.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings, strategies as st

from meanfield.kernels import kernels
from meanfield.network import Network
from meanfield.regression import (GPPosterior, NTKPrediction, gaussian_prediction, gp_posterior, nngp_regression,
                                  ntk_condition_number, ntk_gradient_flow, ntk_regression)


def _spd(rng, n, cond=50.0):
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.geomspace(1.0, cond, n)
    return (q * lam) @ q.T


@st.composite
def _problem(draw):
    seed = draw(st.integers(0, 2 ** 31))
    n = draw(st.integers(1, 7))
    m = draw(st.integers(1, 4))
    c = draw(st.sampled_from([None, 2]))
    rng = np.random.default_rng(seed)
    full = _spd(rng, n + m)
    y = rng.standard_normal((n,) if c is None else (n, c))
    return full[:n, :n], full[n:, :n], full[n:, n:], y


@settings(max_examples=30, deadline=None)
@given(_problem(), st.floats(0.0, 1.0))
def test_gp_posterior_direct(problem, noise):
    K, Ks, Kss, y = problem
    post = gp_posterior(K, Ks, y, k_test=Kss, noise_var=noise)
    A = K + noise * np.eye(K.shape[0])
    mean = Ks @ np.linalg.solve(A, y)
    cov = Kss - Ks @ np.linalg.solve(A, Ks.T)
    assert np.allclose(post.mean, mean, rtol=1e-10, atol=1e-10)
    assert np.allclose(post.covariance, cov, rtol=1e-10, atol=1e-10)
    diag = gp_posterior(K, Ks, y, k_test=np.diag(Kss), noise_var=noise)
    assert np.allclose(diag.variance, np.clip(np.diag(cov), 0, None), atol=1e-10)
    assert isinstance(post, GPPosterior) and set(post.to_dict()) == {"mean", "variance", "covariance", "noise_var"}


def test_gp_interpolates_without_noise():
    rng = np.random.default_rng(0)
    K = _spd(rng, 5)
    y = rng.standard_normal(5)
    post = gp_posterior(K, K, y, k_test=K)
    assert np.allclose(post.mean, y, atol=1e-12)
    assert np.allclose(post.variance, 0.0, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(_problem(), st.floats(0.1, 3.0))
def test_ntk_flow_limits_and_expm(problem, eta):
    Th, Ts, _, y = problem
    n = Th.shape[0]
    t = np.array([0.0, 0.37, np.inf])
    f0 = np.random.default_rng(1).standard_normal(y.shape)
    f0s = np.random.default_rng(2).standard_normal((Ts.shape[0],) + y.shape[1:])
    p = ntk_gradient_flow(Th, Ts, y, t, learning_rate=eta, f0_train=f0, f0_test=f0s)
    # t = 0: initial outputs; t = inf: kernel interpolant f0* + Ts Th^{-1} (y - f0)
    assert np.allclose(p.test[0], f0s, atol=1e-12) and np.allclose(p.train[0], f0, atol=1e-12)
    assert np.allclose(p.test[2], f0s + Ts @ np.linalg.solve(Th, y - f0), rtol=1e-10, atol=1e-10)
    assert np.allclose(p.train[2], y, atol=1e-10)
    # finite t against the matrix exponential
    E = scipy.linalg.expm(-eta * Th * t[1])
    ref_test = f0s + Ts @ np.linalg.solve(Th, (np.eye(n) - E) @ (y - f0))
    ref_train = y + E @ (f0 - y)
    assert np.allclose(p.test[1], ref_test, rtol=1e-10, atol=1e-10)
    assert np.allclose(p.train[1], ref_train, rtol=1e-10, atol=1e-10)
    assert np.isclose(p.condition_number, np.linalg.cond(Th), rtol=1e-8)


def test_ntk_flow_against_euler():
    """Integrate df/dt = -eta Theta (f - y) and df*/dt = -eta Theta_* (f - y) by explicit Euler (dt = 1e-4, t = 0.5):
    global error ~ dt t eta^2 |Theta|^2 |y| / 2 ~ 1e-4 here; tolerance 1e-3."""
    rng = np.random.default_rng(3)
    full = _spd(rng, 6, cond=20.0) / 5.0
    Th, Ts = full[:4, :4], full[4:, :4]
    y = rng.standard_normal(4)
    eta, T, dt = 0.8, 0.5, 1e-4
    f, fs = np.zeros(4), np.zeros(2)
    for _ in range(int(round(T / dt))):
        r = f - y
        f, fs = f - dt * eta * Th @ r, fs - dt * eta * Ts @ r
    p = ntk_gradient_flow(Th, Ts, y, T, learning_rate=eta)
    assert np.allclose(p.train[0], f, atol=1e-3) and np.allclose(p.test[0], fs, atol=1e-3)
    assert isinstance(p, NTKPrediction) and p.to_dict()["learning_rate"] == eta


def test_singular_kernel():
    Th = np.ones((3, 3))
    with pytest.warns(RuntimeWarning, match="singular"):
        assert ntk_condition_number(Th) == np.inf
    with pytest.warns(RuntimeWarning):
        p = ntk_gradient_flow(Th, Th, np.array([1.0, 2.0, 3.0]), 1e6)
    # only the mean of y is learnable along the 1 1^T direction; the rest is never fit
    assert np.allclose(p.train[0], 2.0, atol=1e-8)
    # t = inf: the limit of the same flow (the pseudo-inverse on the trained modes), not an error
    with pytest.warns(RuntimeWarning, match="singular"):
        p_inf = ntk_gradient_flow(Th, Th, np.array([1.0, 2.0, 3.0]), np.inf)
    assert np.allclose(p_inf.train[0], 2.0, atol=1e-12) and np.allclose(p_inf.test[0], 2.0, atol=1e-12)


def test_condition_number_direct():
    rng = np.random.default_rng(4)
    K = _spd(rng, 6, cond=300.0)
    assert np.isclose(ntk_condition_number(K), np.linalg.cond(K), rtol=1e-8)


def test_network_level_regression():
    """nngp_regression / ntk_regression = the matrix functions applied to meanfield.kernels output."""
    rng = np.random.default_rng(5)
    X, Xs = rng.standard_normal((8, 3)), rng.standard_normal((3, 3))
    y = np.sin(X[:, 0])
    net = Network("tanh", depth=3, weight_var=1.6, bias_var=0.1)
    post = nngp_regression(net, X, y, Xs, noise_var=0.05)
    K = kernels(net, X, compute_ntk=False).nngp
    Ks = kernels(net, Xs, X, compute_ntk=False).nngp
    Kss = kernels(net, Xs, compute_ntk=False).nngp
    ref = gp_posterior(K, Ks, y, k_test=Kss, noise_var=0.05)
    assert np.allclose(post.mean, ref.mean, rtol=1e-12, atol=1e-14)
    assert np.allclose(post.variance, ref.variance, rtol=1e-9, atol=1e-13)
    full = nngp_regression(net, X, y, Xs, noise_var=0.05, full_covariance=True)
    assert np.allclose(full.covariance, ref.covariance, atol=1e-13)
    p = ntk_regression(net, X, y, Xs, t=[1.0, np.inf])
    th = kernels(net, X).ntk
    ths = kernels(net, Xs, X).ntk
    assert np.allclose(p.test[1], ths @ np.linalg.solve(th, y), rtol=1e-9, atol=1e-12)


def test_ordered_phase_is_ill_conditioned():
    """Xiao 2020: deep in the ordered phase the NTK tends to a constant matrix (kappa grows with depth); in the
    chaotic phase it tends to a multiple of the identity (kappa -> 1)."""
    X = np.random.default_rng(6).standard_normal((6, 4))
    X /= np.linalg.norm(X, axis=1, keepdims=True) / 2.0
    kap = {}
    for name, wv in [("ordered", 0.8), ("chaotic", 4.0)]:
        kap[name] = [ntk_condition_number(kernels(Network("tanh", depth=d, weight_var=wv, bias_var=0.3), X).ntk)
                     for d in (2, 20)]
    assert kap["ordered"][1] > 3 * kap["ordered"][0]
    assert kap["chaotic"][1] < kap["chaotic"][0] and kap["chaotic"][1] < 2.0


@pytest.mark.parametrize("call,match", [
    (lambda: gp_posterior(np.ones((2, 3)), np.ones((1, 2)), np.ones(2)), "k_train"),
    (lambda: gp_posterior(np.eye(2), np.ones((1, 3)), np.ones(2)), "k_cross"),
    (lambda: gp_posterior(np.eye(2), np.ones((1, 2)), np.ones(3)), "y_train"),
    (lambda: gp_posterior(np.eye(2), np.ones((1, 2)), np.ones(2), noise_var=-1.0), "noise_var"),
    (lambda: ntk_gradient_flow(np.eye(2), np.ones((1, 2)), np.ones(2), -1.0), "t must"),
    (lambda: ntk_gradient_flow(np.eye(2), np.ones((1, 2)), np.ones(2), 1.0, learning_rate=0.0), "learning_rate"),
    (lambda: ntk_gradient_flow(-np.eye(2), np.ones((1, 2)), np.ones(2), 1.0), "semi-definite"),
])
def test_bad_input(call, match):
    with pytest.warns(RuntimeWarning) if "semi" in match else _nullctx():
        with pytest.raises(ValueError, match=match):
            call()


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# ---------------------------------------------------------------------------------------------------------------------
# issue 11: no silent NaN / cast on bad arrays; every error names the parameter
# ---------------------------------------------------------------------------------------------------------------------
def _base_problem():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((4, 3))
    return X, np.arange(4.0), X @ X.T + np.eye(4)


_BAD = {
    "nan": lambda a: np.full_like(a, np.nan), "inf": lambda a: np.full_like(a, np.inf),
    "empty": lambda a: a[:0], "ndim": lambda a: a[None, None], "complex": lambda a: a + 1j,
    "bool": lambda a: a > 0, "str": lambda a: a.astype(str),
    "object": lambda a: np.array([None] * a.size, dtype=object).reshape(a.shape),
    "shape": lambda a: a[..., :-1],
}


def _calls():
    X, y, K = _base_problem()
    net = Network("relu", depth=2, weight_var=2.0, bias_var=0.1)
    return [   # (parameter name, good value, call)
        ("k_train", K, lambda v: gp_posterior(v, K, y)),
        ("k_cross", K, lambda v: gp_posterior(K, v, y)),
        ("y_train", y, lambda v: gp_posterior(K, K, v)),
        ("k_test", np.diag(K), lambda v: gp_posterior(K, K, y, k_test=v)),
        ("theta_train", K, lambda v: ntk_gradient_flow(v, K, y, 1.0)),
        ("theta_cross", K, lambda v: ntk_gradient_flow(K, v, y, 1.0)),
        ("y_train", y, lambda v: ntk_gradient_flow(K, K, v, 1.0)),
        ("f0_train", y, lambda v: ntk_gradient_flow(K, K, y, 1.0, f0_train=v)),
        ("theta", K, lambda v: ntk_condition_number(v)),
        ("x_train", X, lambda v: nngp_regression(net, v, y, X)),
        ("y_train", y, lambda v: nngp_regression(net, X, v, X)),
        ("x_test", X, lambda v: nngp_regression(net, X, y, v)),
        ("x_train", X, lambda v: ntk_regression(net, v, y, X)),
        ("x_test", X, lambda v: ntk_regression(net, X, y, v)),
    ]


@pytest.mark.parametrize("bad", sorted(_BAD))
def test_bad_arrays_raise_naming_the_parameter(bad):
    """NaN/inf, empty, wrong ndim, mismatched shape -> ValueError; complex (was silently cast with a ComplexWarning),
    bool, str, object -> TypeError; each message names the parameter."""
    for name, good, call in _calls():
        if bad == "shape" and name == "theta":
            continue      # a non-square theta is covered by the "ndim" / square checks
        exc = TypeError if bad in ("complex", "bool", "str", "object") else ValueError
        with pytest.raises(exc, match=name):
            call(_BAD[bad](good))


def test_asymmetric_kernel_is_rejected():
    """gp_posterior used to read one triangle of an asymmetric k_train through Cholesky (silently wrong answer)."""
    _, y, K = _base_problem()
    A = K.copy()
    A[0, 1] += 0.5
    with pytest.raises(ValueError, match="k_train must be symmetric"):
        gp_posterior(A, K, y)
    with pytest.raises(ValueError, match="theta_train must be symmetric"):
        ntk_gradient_flow(A, K, y, 1.0)
    with pytest.raises(ValueError, match="theta must be symmetric"):
        ntk_condition_number(A)
    # round-off asymmetry (a few ulps, far below the 1e-10 relative tolerance) is accepted
    B = K.copy()
    B[0, 1] *= 1 + 4e-16
    post = gp_posterior(B, K, y, k_test=np.diag(K))
    np.testing.assert_allclose(post.mean, K @ np.linalg.solve(K, y), rtol=1e-12)


def test_empty_time_list_and_complex_times():
    _, y, K = _base_problem()
    with pytest.raises(ValueError, match="t must"):
        ntk_gradient_flow(K, K, y, [])
    with pytest.raises(TypeError, match="t must"):
        ntk_gradient_flow(K, K, y, [1.0 + 1j])


# ------------------------------------------------------------------------------------------------ neural-tangents
def _nt_setup():
    pytest.importorskip("neural_tangents")
    import jax

    jax.config.update("jax_enable_x64", True)
    import neural_tangents as nt
    from neural_tangents import stax

    return jax, nt, stax


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_regression_against_neural_tangents(act):
    """NTK-GP mean and covariance at finite t and t = inf, and the NNGP posterior, against neural-tangents'
    ``predict.gradient_descent_mse_ensemble`` (skipped where neural-tangents is not installed; CI does not install it).

    Error analysis. Both libraries evaluate the same closed forms (arc-cosine / arcsine kernels) in float64, so the
    kernels agree to a few ulps times the depth: off-diagonal entries to <= 1e-12 relative (measured 1e-15). On the
    diagonal neural-tangents' relu NTK goes through arccos of a correlation rounded near 1 and is off by ~1e-8 (its
    qdot = (pi - arccos c) / (2 pi) at c = 1 - O(eps) has the sqrt(1 - c) sensitivity), while meanfield's diagonal
    is exact (qhat = q/2, qdot = 1/2 on the same input): so meanfield's diagonal is checked against that one-line
    recursion (1e-13), neural-tangents' only to 1e-7. The regression itself is then compared two ways:
    (a) neural-tangents' predictor fed meanfield's kernels, so that only the linear algebra differs: an
    eigendecomposition / Cholesky of a ridge-regularized kernel with condition number <= ~1e5 (ridge 1e-3 of the mean
    diagonal), errors ~cond * eps ~ 1e-11; tolerance 1e-10 relative to the largest entry; (b) end to end with each
    library's own kernels: erf at the same 1e-10, relu at 1e-6 (room for neural-tangents' diagonal error, up to 1e-8,
    times the amplification of the solve: 9e-9 on the digits benchmark). Measured here: kernels 2e-16 (relu's
    diagonal included, for these inputs), predictions <= 8e-15 in both comparisons."""
    jax, nt, stax = _nt_setup()
    import collections

    rng = np.random.default_rng(11)
    x_train, x_test = rng.standard_normal((20, 5)), rng.standard_normal((8, 5))
    y_train = np.sin(x_train[:, :2])
    wv, bv, depth, reg = 1.7, 0.1, 2, 1e-3
    times = np.array([0.5, 20.0, 1e3])
    net = Network(act, depth=depth, weight_var=wv, bias_var=bv)
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(64, W_std=wv ** 0.5, b_std=bv ** 0.5), stax.Relu() if act == "relu" else stax.Erf()]
    kernel_fn = stax.serial(*layers, stax.Dense(1, W_std=wv ** 0.5, b_std=bv ** 0.5))[2]

    # kernels
    X = np.vstack([x_test, x_train])
    mf = kernels(net, X)
    ntk_ = kernel_fn(X, None, ("nngp", "ntk"))
    off = ~np.eye(len(X), dtype=bool)
    for a, b in ((mf.nngp, np.asarray(ntk_.nngp)), (mf.ntk, np.asarray(ntk_.ntk))):
        assert np.max(np.abs(a - b)[off]) <= 1e-12 * np.max(np.abs(a))
        assert np.max(np.abs(np.diag(a) - np.diag(b))) <= (1e-7 if act == "relu" else 1e-12) * np.max(np.abs(a))
    if act == "relu":   # the same-input recursion: q' = w q/2 + b, Theta' = q' + w Theta / 2
        q = wv * np.sum(X * X, axis=1) / X.shape[1] + bv
        th = q.copy()
        for _ in range(depth):
            q = wv * q / 2 + bv
            th = q + wv * th / 2
        assert np.max(np.abs(np.diag(mf.nngp) - q)) <= 1e-13 * np.max(q)
        assert np.max(np.abs(np.diag(mf.ntk) - th)) <= 1e-13 * np.max(th)

    def ours(K, T):
        m = len(x_test)
        args = (K[m:, m:], K[:m, m:], K[:m, :m], y_train)
        g = gaussian_prediction(*args, list(times) + [np.inf], ntk_train=T[m:, m:], ntk_cross=T[:m, m:],
                                diag_reg=reg, loss="mean")
        p = gaussian_prediction(*args, np.inf, get="nngp", diag_reg=reg, loss="mean")
        return g, p

    Kern = collections.namedtuple("Kern", ["nngp", "ntk"])

    def mf_kernel_fn(x1, x2, get, **kw):   # meanfield's kernels behind neural-tangents' kernel_fn interface
        r = kernels(net, np.asarray(x1), None if x2 is None else np.asarray(x2))
        if isinstance(get, str):
            return jax.numpy.asarray(getattr(r, get))
        return Kern(*(jax.numpy.asarray(getattr(r, g)) for g in ("nngp", "ntk")))

    g, p = ours(mf.nngp, mf.ntk)
    for fn, tol in ((mf_kernel_fn, 1e-10), (kernel_fn, 1e-6 if act == "relu" else 1e-10)):
        pred = nt.predict.gradient_descent_mse_ensemble(fn, x_train, y_train, diag_reg=reg)
        fin = pred(t=times, x_test=x_test, get="ntk", compute_cov=True)
        inf = pred(t=None, x_test=x_test, get="ntk", compute_cov=True)
        post = pred(t=None, x_test=x_test, get="nngp", compute_cov=True)
        pairs = [(g.mean[i], fin.mean[i]) for i in range(len(times))] + [(g.mean[-1], inf.mean), (p.mean[0], post.mean)]
        pairs += [(g.covariance[i], fin.covariance[i]) for i in range(len(times))]
        pairs += [(g.covariance[-1], inf.covariance), (p.covariance[0], post.covariance)]
        for a, b in pairs:
            assert np.max(np.abs(a - np.asarray(b))) <= tol * np.max(np.abs(a)), (fn is kernel_fn, tol)
