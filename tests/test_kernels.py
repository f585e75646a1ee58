"""NNGP / NTK kernels on data sets (meanfield.kernels), each number against an independent route.

References used here:
* mpmath (25 digits) 2-D trapezoid rule for smooth activations. Error analysis: for an integrand analytic in the strip
  |Im z| < b and decaying like a Gaussian, the trapezoid rule with step h has error ~ exp(-2 pi b / h) (Poisson
  summation). For tanh(s z) the poles sit at Im z = pi/(2 s); with all variances q <= 2.5 here, s <= 1.6 and b >= 0.98,
  so h = 0.15 gives exp(-41) ~ 2e-18; truncating at |z| <= 11 costs exp(-60). gelu and sin are entire.
* mpmath 1-D quadrature with the inner Gaussian integral in closed form (relu family, hard_tanh, elu, selu), split at
  the kinks: independent of the arc-cosine formulas and of the 2-D quadrature of meanfield.gaussian.
* finite-width networks with explicit back-propagation (structure of the standard / NTK parameterizations).
Expected error of the library: Mehler truncation <= 1e-14 relative per layer (Parseval remainder), Gauss-Hermite weights
~1e-14 relative, amplified through <= 3 layers by factors sigma_w^2 E[phi'^2] = O(1): ~1e-13. Tolerance 1e-11 relative
(to the scale sqrt(K(x,x) K(x',x'))), below the required 1e-10.
"""
from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from meanfield.activations import custom_activation, get_activation
from meanfield.gaussian import hermite_table
from meanfield.kernels import KernelResult, kernels, nngp_diagonal, nngp_kernel, ntk_kernel
from meanfield.network import Network

mp.mp.dps = 25

# ------------------------------------------------------------------------------------------- mpmath references
_MP_SMOOTH = {
    "tanh": (mp.tanh, lambda x: 1 / mp.cosh(x) ** 2),
    "sin": (mp.sin, mp.cos),
    "gelu": (lambda x: x * (1 + mp.erf(x / mp.sqrt(2))) / 2,
             lambda x: (1 + mp.erf(x / mp.sqrt(2))) / 2 + x * mp.exp(-x * x / 2) / mp.sqrt(2 * mp.pi)),
    "erf": (mp.erf, lambda x: 2 / mp.sqrt(mp.pi) * mp.exp(-x * x)),
}


def _trap_nodes(h=mp.mpf("0.15"), zmax=11):
    n = int(zmax / h)
    z = [k * h for k in range(-n, n + 1)]
    w = [mp.exp(-t * t / 2) * h / mp.sqrt(2 * mp.pi) for t in z]
    return z, w


_Z, _W = _trap_nodes()


def _mp_gauss1(f, q):
    s = mp.sqrt(q)
    return mp.fsum(w * f(s * z) for z, w in zip(_Z, _W))


def _mp_pair(f, qu, qv, quv):
    """E[f(u) f(v)], (u, v) ~ N(0, [[qu, quv], [quv, qv]]), by the 2-D trapezoid rule in Cholesky coordinates."""
    su, sv = mp.sqrt(qu), mp.sqrt(qv)
    c = quv / (su * sv)
    s = mp.sqrt(1 - c * c)
    tot = mp.mpf(0)
    for a, wa in zip(_Z, _W):
        fa = f(su * a)
        if fa == 0:
            continue
        tot += wa * fa * mp.fsum(wb * f(sv * (c * a + s * b)) for b, wb in zip(_Z, _W))
    return tot


def _mp_kernels_pair(names, wv, bv, x, y, pair_fn=None, gauss_fn=None):
    """K and Theta (NTK parameterization) for the pair (x, y) by the layer recursion in mpmath."""
    pair_fn = pair_fn or (lambda name, d, qu, qv, quv: _mp_pair(_MP_SMOOTH[name][d], qu, qv, quv))
    gauss_fn = gauss_fn or (lambda name, d, q: _mp_gauss1(lambda u: _MP_SMOOTH[name][d](u) ** 2, q))
    d = len(x)
    x = [mp.mpf(float(v)) for v in x]
    y = [mp.mpf(float(v)) for v in y]
    qx = wv[0] * mp.fsum(a * a for a in x) / d + bv[0]
    qy = wv[0] * mp.fsum(a * a for a in y) / d + bv[0]
    qxy = wv[0] * mp.fsum(a * b for a, b in zip(x, y)) / d + bv[0]
    tx, ty, txy = qx, qy, qxy
    for l, name in enumerate(names):
        w, b = mp.mpf(wv[l + 1]), mp.mpf(bv[l + 1])
        hx, hy, hxy = gauss_fn(name, 0, qx), gauss_fn(name, 0, qy), pair_fn(name, 0, qx, qy, qxy)
        dx, dy, dxy = gauss_fn(name, 1, qx), gauss_fn(name, 1, qy), pair_fn(name, 1, qx, qy, qxy)
        qx, qy, qxy = w * hx + b, w * hy + b, w * hxy + b
        tx, ty, txy = qx + w * dx * tx, qy + w * dy * ty, qxy + w * dxy * txy
    return [float(v) for v in (qx, qy, qxy, tx, ty, txy)]


def _check_pair(res, i, j, ref, tol=1e-11):
    qx, qy, qxy, tx, ty, txy = ref
    assert abs(res.nngp[i, i] - qx) <= tol * qx
    assert abs(res.nngp[j, j] - qy) <= tol * qy
    assert abs(res.nngp[i, j] - qxy) <= tol * math.sqrt(qx * qy)
    assert abs(res.ntk[i, i] - tx) <= tol * tx
    assert abs(res.ntk[i, j] - txy) <= tol * math.sqrt(tx * ty)


_X3 = np.array([[0.9, -0.4, 0.3], [0.5, 0.8, -1.1], [-0.2, 0.3, 0.25]])


def test_tanh_depth2_against_mpmath():
    wv, bv = [1.3, 1.6, 1.1], [0.2, 0.05, 0.1]
    net = Network("tanh", depth=2, weight_var=wv, bias_var=bv)
    res = kernels(net, _X3)
    for i, j in [(1, 2)]:
        ref = _mp_kernels_pair(["tanh", "tanh"], wv, bv, _X3[i], _X3[j])
        _check_pair(res, i, j, ref)
    assert max(res.truncation_bound) <= 1e-13 and max(res.truncation_bound_dot) <= 1e-13
    assert res.routes == ("mehler", "mehler") and res.n_fallback == 0


def test_heterogeneous_gelu_sin_against_mpmath():
    wv, bv = [1.2, 0.9, 1.4], [0.1, 0.3, 0.0]
    net = Network(["gelu", "sin"], depth=2, weight_var=wv, bias_var=bv)
    res = kernels(net, _X3[:2])
    _check_pair(res, 0, 1, _mp_kernels_pair(["gelu", "sin"], wv, bv, _X3[0], _X3[1]))


def test_erf_closed_form_against_mpmath_and_mehler():
    wv, bv = [1.5, 2.0], [0.1, 0.2]
    res = kernels(Network("erf", depth=1, weight_var=wv, bias_var=bv), _X3)
    _check_pair(res, 0, 2, _mp_kernels_pair(["erf"], wv, bv, _X3[0], _X3[2]))
    # erf as a custom activation goes through the Mehler route: closed form vs expansion
    erf2 = custom_activation("erf_custom", lambda x: math.erf(x), lambda x: 2.0 / math.sqrt(math.pi) * math.exp(-x * x))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 4))
    for depth in (1, 4):
        a = kernels(Network("erf", depth=depth, weight_var=1.7, bias_var=0.2), x)
        b = kernels(Network(erf2, depth=depth, weight_var=1.7, bias_var=0.2), x)
        assert b.routes[0] == "mehler"
        scale = np.sqrt(np.outer(np.diag(a.ntk), np.diag(a.ntk)))
        assert np.max(np.abs(a.nngp - b.nngp) / np.sqrt(np.outer(np.diag(a.nngp), np.diag(a.nngp)))) < 1e-11
        assert np.max(np.abs(a.ntk - b.ntk) / scale) < 1e-11


# ------------------------------------------------------------------------------ kinked activations (1-D routes)
_PHI = lambda t: mp.ncdf(t)                       # noqa: E731
_PDF = lambda t: mp.npdf(t)                       # noqa: E731


def _inner(name, deriv, m, s, p):
    """E_z[f(m + s z)] in closed form (Gaussian integrals of piecewise-linear / exponential pieces)."""
    if s == 0:
        raise ZeroDivisionError
    a = m / s
    if name in ("relu", "leaky_relu"):
        sl = p if name == "leaky_relu" else 0
        pos = m * _PHI(a) + s * _PDF(a)            # E[relu(m + s z)]
        return (1 - sl) * _PHI(a) + sl if deriv else (1 - sl) * pos + sl * m
    if name == "hard_tanh":
        lo, hi = (-1 - m) / s, (1 - m) / s
        if deriv:
            return _PHI(hi) - _PHI(lo)
        # -1 * P(z<lo) + 1 * P(z>hi) + E[(m + s z); lo<z<hi]
        return -_PHI(lo) + (1 - _PHI(hi)) + m * (_PHI(hi) - _PHI(lo)) + s * (_PDF(lo) - _PDF(hi))
    if name in ("elu", "selu"):
        lam, al = (1, p) if name == "elu" else (mp.mpf("1.0507009873554804934193349852946"),
                                               mp.mpf("1.6732632423543772848170429916717"))
        # E[e^{m+sz}; m+sz<0] = e^{m + s^2/2} Phi(-a - s)
        ex = mp.exp(m + s * s / 2) * _PHI(-a - s)
        if deriv:
            return lam * (_PHI(a) + al * ex)
        return lam * (m * _PHI(a) + s * _PDF(a) + al * (ex - _PHI(-a)))
    raise KeyError(name)


def _kinked_fns(name, p):
    act = get_activation(name, **({"slope": float(p)} if name == "leaky_relu" else {}))

    def f(d, u):
        return _f_exact(name, d, u, p)

    def pair_fn(_n, d, qu, qv, quv):
        su, sv = mp.sqrt(qu), mp.sqrt(qv)
        c = quv / (su * sv)
        s = sv * mp.sqrt(1 - c * c)
        kinks = sorted({float(k) / float(su) for k in act.kinks})
        pts = [-mp.inf] + [mp.mpf(k) for k in kinks] + [mp.inf]
        return mp.quad(lambda z: _PDF(z) * f(d, su * z) * _inner(name, d, sv * c * z, s, p), pts)

    def gauss_fn(_n, d, q):
        sq = mp.sqrt(q)
        pts = [-mp.inf] + [mp.mpf(float(k)) / sq for k in act.kinks] + [mp.inf]
        return mp.quad(lambda z: _PDF(z) * f(d, sq * z) ** 2, pts)
    return pair_fn, gauss_fn


def _f_exact(name, d, u, p):
    if name in ("relu", "leaky_relu"):
        sl = p if name == "leaky_relu" else 0
        return (1 if u > 0 else sl) if d else (u if u > 0 else sl * u)
    if name == "hard_tanh":
        return (1 if -1 < u < 1 else 0) if d else max(-1, min(1, u))
    lam, al = (1, p) if name == "elu" else (mp.mpf("1.0507009873554804934193349852946"),
                                           mp.mpf("1.6732632423543772848170429916717"))
    if u > 0:
        return lam if d else lam * u
    return lam * al * mp.exp(u) if d else lam * al * mp.expm1(u)


@pytest.mark.parametrize("name,p", [("relu", 0), ("leaky_relu", mp.mpf("0.2")), ("hard_tanh", 0), ("elu", 1),
                                    ("selu", 0)])
def test_kinked_and_closed_forms_against_mpmath(name, p):
    if name in ("hard_tanh", "elu", "selu"):
        pytest.importorskip("meanfield.gaussian")
    wv, bv = [1.4, 1.9, 1.2], [0.1, 0.05, 0.2]
    params = {"slope": float(p)} if name == "leaky_relu" else {}
    net = Network(name, depth=2, weight_var=wv, bias_var=bv, activation_params=params)
    res = kernels(net, _X3[:2])
    pair_fn, gauss_fn = _kinked_fns(name, p)
    ref = _mp_kernels_pair([name, name], wv, bv, _X3[0], _X3[1], pair_fn=pair_fn, gauss_fn=gauss_fn)
    _check_pair(res, 0, 1, ref, tol=1e-11)


# ------------------------------------------------------------------------------- finite networks (parameterizations)
def _empirical_ntk(x, wv, bv, width, depth, seed):
    """Parts of the finite-width NTK of a tanh network (one scalar output) by explicit back-propagation.

    SP gradients: dW^l = delta^l h^{l-1 T}, db^l = delta^l. Returns (input-layer weight term, hidden-layer weight terms,
    bias terms) of the SP NTK and the NTK-parameterization NTK (u = sqrt(w/M) W h + sqrt(b) beta), for the Gram of x.
    """
    rng = np.random.default_rng(seed)
    n, d = x.shape
    fans = [d] + [width] * depth
    outs = [width] * depth + [1]
    Ws = [rng.standard_normal((outs[l], fans[l])) for l in range(depth + 1)]
    betas = [rng.standard_normal(outs[l]) for l in range(depth + 1)]
    hs, us, h = [x.T], [], x.T
    for l in range(depth + 1):
        u = math.sqrt(wv[l] / fans[l]) * Ws[l] @ h + math.sqrt(bv[l]) * betas[l][:, None]
        us.append(u)
        if l < depth:
            h = np.tanh(u)
            hs.append(h)
    deltas = [None] * (depth + 1)
    delta = np.ones((1, n))
    deltas[depth] = delta
    for l in range(depth - 1, -1, -1):
        delta = (1 - np.tanh(us[l]) ** 2) * (math.sqrt(wv[l + 1] / fans[l + 1]) * Ws[l + 1].T @ delta)
        deltas[l] = delta
    dd = [deltas[l].T @ deltas[l] for l in range(depth + 1)]
    hh = [hs[l].T @ hs[l] for l in range(depth + 1)]
    w_in = dd[0] * hh[0]
    w_hidden = sum(dd[l] * hh[l] for l in range(1, depth + 1))
    bias = sum(dd)
    ntkp = sum(dd[l] * (wv[l] * hh[l] / fans[l] + bv[l]) for l in range(depth + 1))
    return w_in, w_hidden, bias, ntkp


def test_parameterizations_against_finite_network():
    """Theta_SP = sum_l qtilde^l (M_{l-1} qhat^{l-1} + 1) and Theta_NTK = sum_l qtilde^l q^l vs finite networks.

    Theta_SP(M) is affine in M: slope = sum_{l>=2} qtilde^l qhat^{l-1} (hidden weights), intercept =
    qtilde^1 x.x' + sum_l qtilde^l (input weights + every bias). Compared part by part with the finite network, so a
    missing bias term or a misplaced width factor shows as an O(1) error. Each finite-width overlap fluctuates with
    relative size ~ C/sqrt(M) (C = O(1)); averaged over S = 6 seeds at M = 1024, ~0.013 C; tolerance 0.06.
    """
    wv, bv, M, depth, S = [1.6, 1.4, 1.2], [0.3, 0.2, 0.5], 1024, 2, 6
    x = _X3
    net = Network("tanh", depth=depth, weight_var=wv, bias_var=bv)
    parts = [_empirical_ntk(x, wv, bv, M, depth, s) for s in range(S)]
    w_in, w_hidden, bias, ntkp = (sum(p[k] for p in parts) / S for k in range(4))
    theta_ntk = ntk_kernel(net, x)
    theta_sp = ntk_kernel(net, x, parameterization="standard", width=M)
    slope = (ntk_kernel(net, x, parameterization="standard", width=2 * M) - theta_sp) / M
    intercept = theta_sp - M * slope

    def rel(a, b):
        return np.max(np.abs(a - b) / np.sqrt(np.outer(np.diag(b), np.diag(b))))
    assert rel(ntkp, theta_ntk) < 0.06
    assert rel(w_in + w_hidden + bias, theta_sp) < 0.06
    assert rel(w_hidden, M * slope) < 0.06
    assert rel(w_in + bias, intercept) < 0.06
    # a kernel without the bias terms is clearly rejected by the same comparison
    assert rel(w_in, intercept) > 0.3


# ------------------------------------------------------------------------------------------------ properties
_ACTS = ["tanh", "relu", "erf", "sin", "leaky_relu", "softplus"]


@st.composite
def _setups(draw):
    act = draw(st.sampled_from(_ACTS))
    depth = draw(st.integers(1, 4))
    wv = draw(st.lists(st.floats(0.3, 2.5), min_size=depth + 1, max_size=depth + 1))
    bv = draw(st.lists(st.floats(0.0, 0.5), min_size=depth + 1, max_size=depth + 1))
    n = draw(st.integers(2, 6))
    dim = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2 ** 31))
    scale = draw(st.floats(0.1, 1.5))
    x = scale * np.random.default_rng(seed).standard_normal((n, dim))
    return Network(act, depth=depth, weight_var=wv, bias_var=bv), x


def _ntk_tol(net):
    """relu-family qdot = (1-a)^2 (pi - arccos c)/(2 pi) + a is square-root sensitive at |c| = 1: a rounding error
    of 1e-16 in c (collinear inputs, e.g. dim 1) moves arccos c by ~1.5e-8, i.e. the kernel by ~3e-9 relative. This is
    the conditioning of the exact kernel, not an algorithmic error; everything else is held to 1e-10."""
    return 1e-7 if net.activations[0].name in ("relu", "leaky_relu") else 1e-10


def _rel(a, b):
    d = np.sqrt(np.outer(np.abs(np.diag(b)), np.abs(np.diag(b)))) if a.shape[0] == a.shape[1] else 1.0
    return np.max(np.abs(a - b) / d)


@settings(max_examples=25, deadline=None)
@given(_setups())
def test_symmetric_psd_permutation(setup):
    net, x = setup
    res = kernels(net, x)
    for k in (res.nngp, res.ntk):
        assert np.array_equal(k, k.T)                                   # mirrored: exactly symmetric
        ev = np.linalg.eigvalsh(k)
        assert ev.min() >= -1e-12 * ev.max()                            # PSD to round-off
    perm = np.random.default_rng(x.shape[0]).permutation(x.shape[0])
    rp = kernels(net, x[perm])
    # same row data, Gram entries may round differently in another order: relative 1e-13 (relu's NTK depends on
    # arccos(c), which is sqrt-sensitive at c = 1; distinct random inputs keep c < 1 - 1e-6 here)
    assert _rel(rp.nngp, res.nngp[np.ix_(perm, perm)]) < 1e-12
    assert _rel(rp.ntk, res.ntk[np.ix_(perm, perm)]) < _ntk_tol(net)


@settings(max_examples=15, deadline=None)
@given(_setups())
def test_cross_kernel_matches_joint_kernel(setup):
    net, x = setup
    n = x.shape[0]
    k = n // 2
    joint = kernels(net, x)
    cross = kernels(net, x[:k + 1], x[k:], tile_size=8)
    sc = np.sqrt(np.outer(np.diag(joint.ntk), np.diag(joint.ntk)))[:k + 1, k:]
    sk = np.sqrt(np.outer(np.diag(joint.nngp), np.diag(joint.nngp)))[:k + 1, k:]
    # the shared row x[k] enters the cross kernel as a pair with c = 1 up to round-off (relu's qdot: ~1e-8)
    assert np.max(np.abs(cross.nngp - joint.nngp[:k + 1, k:]) / sk) < 1e-12
    assert np.max(np.abs(cross.ntk - joint.ntk[:k + 1, k:]) / sc) < 1e-7


@settings(max_examples=15, deadline=None)
@given(_setups())
def test_nngp_diagonal_is_length_map(setup):
    forward = pytest.importorskip("meanfield.forward")
    net, x = setup
    res = kernels(net, x)
    diag = nngp_diagonal(net, x)
    assert np.array_equal(np.diag(res.nngp), diag)
    for i in range(x.shape[0]):
        fr = forward.forward(net, input_norm=float(x[i] @ x[i] / x.shape[1]))
        assert abs(fr.q1[-1] - diag[i]) <= 1e-11 * diag[i]


@settings(max_examples=10, deadline=None)
@given(_setups())
def test_ntk_equals_sum_qtilde_q(setup):
    """Theta^L(x, x') = sum_l qtilde^l(x, x') q^l(x, x') from meanfield.forward / meanfield.backward on each pair."""
    forward = pytest.importorskip("meanfield.forward")
    backward = pytest.importorskip("meanfield.backward")
    net, x = setup
    res = kernels(net, x[:3])
    d = x.shape[1]
    for i, j in [(0, 1), (0, 0), (1, 2)] if x.shape[0] >= 3 else [(0, 1), (0, 0)]:
        fr = forward.forward(net, input_norm=float(x[i] @ x[i] / d), input_norm2=float(x[j] @ x[j] / d),
                             input_overlap=float(x[i] @ x[j] / d))
        br = backward.backward(net, fr)
        q2 = fr.q1 if i == j else fr.q2
        qt = br.qtilde1 if i == j else br.qtilde2
        theta = float(np.sum(np.asarray(qt) * np.asarray(q2)))
        scale = math.sqrt(res.ntk[i, i] * res.ntk[j, j])
        assert abs(res.ntk[i, j] - theta) <= _ntk_tol(net) * scale


def test_dropout_nngp():
    """Dropout (keep rho): same-input map uses weight_var/rho, cross-input map weight_var (docs/mathematics.md sec. 2).
    Independent numpy recursion with the relu arc-cosine kernel."""
    rho, wv, bv, depth = 0.7, 1.8, 0.1, 3
    x = np.random.default_rng(3).standard_normal((4, 3))
    K = nngp_kernel(Network("relu", depth=depth, weight_var=wv, bias_var=bv, dropout_keep=rho), x)
    q = wv * x @ x.T / 3 + bv
    d = np.diag(q).copy()
    for _ in range(depth):
        c = np.clip(q / np.sqrt(np.outer(d, d)), -1, 1)
        t = np.arccos(c)
        qh = np.sqrt(np.outer(d, d)) * (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)
        q = wv * qh + bv
        d = (wv / rho) * d / 2 + bv
        np.fill_diagonal(q, d)
    assert np.max(np.abs(K - q) / np.sqrt(np.outer(d, d))) < 1e-13
    # the NTK (one mask per input): Theta^{l+1} = q^{l+1} + w qdot Theta^l, qdot's same-input entries / rho
    q = wv * x @ x.T / 3 + bv
    d = np.diag(q).copy()
    th = q.copy()
    for _ in range(depth):
        c = np.clip(q / np.sqrt(np.outer(d, d)), -1, 1)
        t = np.arccos(c)
        qh = np.sqrt(np.outer(d, d)) * (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)
        qd = (np.pi - t) / (2 * np.pi)
        np.fill_diagonal(qd, 0.5 / rho)
        q = wv * qh + bv
        d = (wv / rho) * d / 2 + bv
        np.fill_diagonal(q, d)
        th = q + wv * qd * th
    T = ntk_kernel(Network("relu", depth=depth, weight_var=wv, bias_var=bv, dropout_keep=rho), x)
    assert np.max(np.abs(T - th) / np.sqrt(np.outer(np.diag(th), np.diag(th)))) < 1e-13


def test_relu_critical_and_linear_closed_values():
    """relu at weight_var = 2, bias_var = 0 keeps q = 2|x|^2/M_0; linear network: K = w^L x.x'/M_0 exactly and
    Theta = L w^L x.x'/M_0 (each of the L layers contributes qtilde^l q^l = w^{L-l} w^l x.x'/M_0)."""
    x = np.random.default_rng(4).standard_normal((5, 3))
    K = nngp_kernel(Network("relu", depth=4, weight_var=2.0, bias_var=0.0), x)
    assert np.allclose(np.diag(K), 2 * np.sum(x * x, 1) / 3, rtol=1e-14, atol=0)
    w, L = 1.3, 4
    r = kernels(Network("linear", depth=L - 1, weight_var=w, bias_var=0.0), x)
    g = x @ x.T / 3
    assert np.allclose(r.nngp, w ** L * g, rtol=1e-13, atol=1e-15)
    assert np.allclose(r.ntk, L * w ** L * g, rtol=1e-13, atol=1e-15)


def test_hermite_table_against_mpmath():
    """a_k(q) = E[tanh(sqrt(q) z) He_k(z)] / sqrt(k!) against mpmath quadrature for a few k, and the reported
    Parseval remainder vs the mpmath tail E[f^2] - sum a_k^2."""
    act = get_activation("tanh")
    q = 1.7
    A, R, E, ok, _ = hermite_table(act, np.array([q]), False, 1e-14)
    assert ok
    sq = mp.sqrt(q)
    for k in (1, 5, 21):
        ref = mp.quad(lambda z: mp.tanh(sq * z) * mp.hermite(k, z / mp.sqrt(2)) * 2 ** (-mp.mpf(k) / 2)
                      * mp.npdf(z), [-mp.inf, 0, mp.inf]) / mp.sqrt(mp.factorial(k))
        # Gauss-Hermite weights from scipy are accurate to ~1e-14 relative (asymptotic formulas for n > 150)
        assert abs(A[0, k] - float(ref)) < 5e-14
    e_ref = _mp_gauss1(lambda u: mp.tanh(u) ** 2, mp.mpf(q))
    assert abs(E[0] - float(e_ref)) < 1e-13
    assert R[0] <= 1e-14 * E[0]


def test_custom_activation_matches_builtin():
    ct = custom_activation("my_tanh", lambda v: math.tanh(v), lambda v: 1.0 - math.tanh(v) ** 2)
    x = np.random.default_rng(5).standard_normal((4, 2))
    a = kernels(Network("tanh", depth=2, weight_var=1.5, bias_var=0.1), x)
    b = kernels(Network(ct, depth=2, weight_var=1.5, bias_var=0.1), x)
    assert np.max(np.abs(a.ntk - b.ntk)) < 1e-13 * np.max(a.ntk)


def test_result_object_and_wrappers():
    net = Network("erf", depth=2, weight_var=1.2, bias_var=0.1)
    x = np.random.default_rng(6).standard_normal((3, 2))
    r = kernels(net, x)
    assert isinstance(r, KernelResult)
    d = r.to_dict()
    assert d["routes"] == ["erf", "erf"] and np.allclose(d["nngp"], r.nngp)
    assert np.array_equal(nngp_kernel(net, x), r.nngp) and np.array_equal(ntk_kernel(net, x), r.ntk)
    assert kernels(net, x, compute_ntk=False).ntk is None


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(x1=np.ones(3)), ValueError, "x1"),
    (dict(x1=np.ones((2, 3)), x2=np.ones((2, 2))), ValueError, "x2"),
    (dict(x1=np.array([[np.nan, 1.0]])), ValueError, "x1"),
    (dict(x1="abc"), TypeError, "x1"),
    (dict(x1=np.ones((2, 2)), parameterization="mup"), ValueError, "parameterization"),
    (dict(x1=np.ones((2, 2)), parameterization="standard"), ValueError, "width"),
    (dict(x1=np.ones((2, 2)), parameterization="standard", width=-1.0), ValueError, "width"),
    (dict(x1=np.ones((2, 2)), rtol=0.5), ValueError, "rtol"),
    (dict(x1=np.ones((2, 2)), tile_size=2.5), TypeError, "tile_size"),
])
def test_bad_input(kwargs, exc, match):
    net = Network("tanh", depth=1)
    x1 = kwargs.pop("x1")
    with pytest.raises(exc, match=match):
        kernels(net, x1, **kwargs)


def test_bad_network():
    with pytest.raises(TypeError, match="network"):
        kernels("tanh", np.ones((2, 2)))


def test_unconverged_expansion_falls_back_to_quadrature():
    """At very large variance (q ~ 80) tanh's Hermite spectrum decays too slowly for the node cap: the library warns
    and recomputes the pairs by meanfield.gaussian.pair_expectation (an independent 2-D rule, ~1e-15)."""
    from meanfield.gaussian import pair_expectation
    x = np.array([[1.0, 0.2], [0.3, -1.1], [-0.8, 0.5]]) * 1.3
    wv, bv = [90.0, 1.0], [0.0, 0.0]
    with pytest.warns(RuntimeWarning, match="Mehler"):
        res = kernels(Network("tanh", depth=1, weight_var=wv, bias_var=bv), x)
    assert res.n_fallback > 0
    q = wv[0] * x @ x.T / 2
    d = np.diag(q)
    ref = wv[1] * pair_expectation("tanh", d[:, None], d[None, :], q)
    assert np.max(np.abs(res.nngp - ref)) < 1e-12


@pytest.mark.parametrize("act", ["relu", "erf"])
def test_tiled_kernels_near_anticorrelation(act):
    # issue 10: x = (1, 0), x' = (-1, 2^-20): the Gram matrix and q^1 = weight_var x.x'/M_0 are exact in float64, and
    # c = -1/sqrt(1 + 2^-40) = -1 + 4.5e-13. mpmath (50 digits) evaluates the closed forms from the exact q^1; the
    # tile uses the scalar cancellation-free formula (~1e-15 relative), so 1e-12 is a safe bound.
    import mpmath as mp
    x = np.array([[1.0, 0.0], [-1.0, 2.0 ** -20]])
    net = Network(act, depth=1, weight_var=2.0, bias_var=0.0)
    res = kernels(net, x)
    with mp.workdps(50):
        q11, q22, q12 = mp.mpf(1), 1 + mp.mpf(2) ** -40, mp.mpf(-1)
        if act == "relu":
            s = mp.sqrt(q11 * q22)
            t = mp.acos(q12 / s)
            e0 = s * (mp.sin(t) + (mp.pi - t) * mp.cos(t)) / (2 * mp.pi)
            e1 = (mp.pi - t) / (2 * mp.pi)
        else:
            a, b = 1 + 2 * q11, 1 + 2 * q22
            e0 = 2 / mp.pi * mp.asin(2 * q12 / mp.sqrt(a * b))
            e1 = 4 / mp.pi / mp.sqrt(a * b - 4 * q12 ** 2)
        K = 2 * e0
        T = K + 2 * e1 * q12
    assert abs(res.nngp[0, 1] / float(K) - 1) <= 1e-12
    assert abs(res.ntk[0, 1] / float(T) - 1) <= 1e-12
    assert abs(nngp_kernel(net, x[:1], x[1:])[0, 0] / float(K) - 1) <= 1e-12
