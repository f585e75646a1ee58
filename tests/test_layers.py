"""The composable network description (meanfield.layers, meanfield.trace) and residual networks end to end.

Independent routes used here:

* a hand-written recursion of the residual MLP in this file, with the Gaussian pair expectations from the arc-cosine
  closed form (relu, Cho & Saul 2009) coded below, or from nested scipy quadrature (tanh);
* random finite-width torch networks built from the same chain (meanfield.validation.networks.sample_chain),
  measured by autograd (q-tilde) and the chain rule for Dense layers (NTK, checked against a full autograd Jacobian).
"""
import math

import numpy as np
import pytest
from scipy import integrate

import meanfield as mf
from meanfield.layers import Dense, Dropout, Nonlinearity, Residual, Serial, serial
from meanfield.trace import trace

W, B, ALPHA, NBLOCKS = 1.5, 0.1, 0.5, 4


def residual_chain(act, w=W, b=B, alpha=ALPHA, n_blocks=NBLOCKS):
    blocks = [Residual(serial(Nonlinearity(act), Dense(w, b)), alpha=alpha) for _ in range(n_blocks)]
    return serial(Dense(w, b), *blocks, Nonlinearity(act), Dense(w, b))


# ------------------------------------------------------------------------------------------------- independent routes
def relu_pair(q1, q2, q12):
    """Arc-cosine kernel: E[relu(u) relu(v)] and E[relu'(u) relu'(v)] (Cho & Saul 2009)."""
    s = math.sqrt(q1 * q2)
    c = min(1.0, max(-1.0, q12 / s))
    t = math.acos(c)
    return s * (math.sin(t) + (math.pi - t) * c) / (2 * math.pi), (math.pi - t) / (2 * math.pi)


def _npdf(z):
    return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _quad_pair(f, q1, q2, q12):
    """E[f(u) f(v)] by nested adaptive scipy quadrature in (z1, z2) on [-12, 12]^2 (Gaussian tail < 1e-31)."""
    opts = dict(epsabs=1e-14, epsrel=1e-13, limit=200)
    if q12 == q1 == q2:
        return integrate.quad(lambda z: f(math.sqrt(q1) * z) ** 2 * _npdf(z), -12, 12, **opts)[0]
    a = q12 / math.sqrt(q1)
    b = math.sqrt(max(q2 - a * a, 0.0))

    def inner(z1):
        return integrate.quad(lambda z2: f(a * z1 + b * z2) * _npdf(z2), -12, 12, **opts)[0]

    return integrate.quad(lambda z1: f(math.sqrt(q1) * z1) * _npdf(z1) * inner(z1), -12, 12, **opts)[0]


def tanh_pair(q1, q2, q12):
    return (_quad_pair(math.tanh, q1, q2, q12), _quad_pair(lambda u: 1.0 - math.tanh(u) ** 2, q1, q2, q12))


def hand_residual(G, pair, w=W, b=B, alpha=ALPHA, n_blocks=NBLOCKS):
    """The residual MLP of residual_chain written out by hand (docs/mathematics.md sec. 8), on the Gram matrix G.

    Returns per Dense layer (chain order: first, the block Dense layers, readout) q, qhat, qtilde, and the NNGP and
    NTK (NTK parameterization).
    """
    n = len(G)
    a2 = alpha * alpha

    def expect(Q):
        qh, qd = np.empty((n, n)), np.empty((n, n))
        for i in range(n):
            for j in range(i, n):
                qh[i, j], qd[i, j] = pair(Q[i, i], Q[j, j], Q[i, j])
                qh[j, i], qd[j, i] = qh[i, j], qd[i, j]
        return qh, qd

    Q = w * G + b
    Th = Q.copy()
    qs, qhats, qdots = [Q], [G], []
    for _ in range(n_blocks):
        qh, qd = expect(Q)
        Qb = w * qh + b                    # the block's output
        Thb = w * qd * Th + Qb
        qs.append(Qb)
        qhats.append(qh)
        qdots.append(qd)
        Q, Th = Q + a2 * Qb, Th + a2 * Thb
    qh, qd = expect(Q)
    QL = w * qh + b
    ThL = w * qd * Th + QL
    qs.append(QL)
    qhats.append(qh)
    # backward: qtilde = 1 at the output; readout and last nonlinearity; blocks carry alpha g
    t = w * qd * np.ones((n, n))           # at the stream after the last block
    qtildes = [np.ones((n, n))]
    for k in reversed(range(n_blocks)):
        qtildes.insert(0, a2 * t)          # output of the block's Dense layer: delta scaled by alpha
        t = t + a2 * w * qdots[k] * t      # skip + block
    qtildes.insert(0, t)
    return qs, qhats, qtildes, QL, ThL


G3 = np.array([[1.0, 0.0, 0.6], [0.0, 1.3, 0.8], [0.6, 0.8, 0.9]])


# ------------------------------------------------------------------------------------------------- layer objects
def test_layer_validation_names_parameters():
    with pytest.raises(ValueError, match="weight_var"):
        Dense(-1.0)
    with pytest.raises(ValueError, match="bias_var"):
        Dense(1.0, -0.1)
    with pytest.raises(ValueError, match="width_ratio"):
        Dense(1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="weight_var"):
        Dense([1.0, 2.0])
    with pytest.raises(ValueError, match="keep"):
        Dropout(0.0)
    with pytest.raises(ValueError, match="keep"):
        Dropout(1.5)
    with pytest.raises(ValueError, match="unknown activation"):
        Nonlinearity("nope")
    with pytest.raises(TypeError, match="params"):
        Nonlinearity("elu", 1.0)
    with pytest.raises(ValueError, match="Dense"):
        Residual(serial(Dense(1.0), Nonlinearity("relu")))
    with pytest.raises(TypeError, match="block"):
        Residual("relu")
    with pytest.raises(ValueError, match="alpha"):
        Residual(Dense(1.0), alpha=float("nan"))
    with pytest.raises(TypeError, match="layers"):
        serial(Dense(1.0), "relu")
    with pytest.raises(ValueError, match="input_ratio"):
        serial(Dense(1.0), input_ratio=0.0)
    with pytest.raises(TypeError, match="network"):
        mf.kernels("relu", np.eye(2))
    with pytest.raises(ValueError, match="width ratio"):
        trace(serial(Dense(1.0), Residual(Dense(1.0, width_ratio=2.0))), gram=[[1.0]])


def test_serial_flattens_and_network_to_layers():
    inner = serial(Nonlinearity("relu"), Dense(2.0))
    net = serial(Dense(1.0), inner, Dropout(0.9))
    assert isinstance(net, Serial) and len(net) == 4 and net.n_dense == 2
    assert Nonlinearity("relu") == Nonlinearity(mf.get_activation("relu"))
    n = mf.Network(["tanh", "relu"], depth=2, weight_var=[1.0, 2.0, 3.0], bias_var=0.1, width_ratios=[0.5, 1, 2])
    ch = n.to_layers()
    assert [type(l).__name__ for l in ch] == ["Dense", "Nonlinearity", "Dense", "Nonlinearity", "Dense"]
    assert ch.input_ratio == 0.5 and ch[2].width_ratio == 2.0 and ch[4].weight_var == 3.0
    assert ch.to_dict()["layers"][1]["activation"] == "tanh"


def test_network_and_chain_views_agree():
    """kernels, forward, backward and the Fisher statistics of a Network equal those of its chain."""
    net = mf.Network("tanh", depth=3, weight_var=1.7, bias_var=0.2, width_ratios=[0.5, 1.0, 2.0, 1.0])
    ch = net.to_layers()
    x = np.random.default_rng(3).standard_normal((7, 5))
    for par, wd in (("ntk", None), ("standard", 64.0)):
        a, b = mf.kernels(net, x, parameterization=par, width=wd), mf.kernels(ch, x, parameterization=par, width=wd)
        np.testing.assert_array_equal(a.nngp, b.nngp)
        np.testing.assert_array_equal(a.ntk, b.ntk)
    fa, fb = mf.forward(net, 1.2, 0.8, 0.3), mf.forward(ch, 1.2, 0.8, 0.3)
    for k in ("q1", "q2", "qhat2", "qdot2"):
        np.testing.assert_array_equal(getattr(fa, k), getattr(fb, k))
    np.testing.assert_array_equal(mf.backward(net, fa).qtilde2, mf.backward(ch, fb).qtilde2)
    sa, sb = mf.fisher_statistics(net, 128, 8, 2), mf.fisher_statistics(ch, 128, 8, 2)
    assert (sa.kappa1, sa.kappa2, sa.alpha, sa.n_params) == (sb.kappa1, sb.kappa2, sb.alpha, sb.n_params)
    ma, mb = mf.feature_metric_statistics(net, 128, 8, 2), mf.feature_metric_statistics(ch, 128, 8, 2)
    assert (ma.kappa1, ma.kappa2, ma.dimension) == (mb.kappa1, mb.kappa2, mb.dimension)


def test_dropout_layer_rules():
    """Dropout: same-input variance / keep, cross covariance unchanged; qtilde likewise (docs/mathematics.md sec. 2-3),
    against the arc-cosine closed form."""
    rho, w, b = 0.8, 1.3, 0.1
    ch = serial(Dense(w, b), Nonlinearity("relu"), Dropout(rho), Dense(w, b))
    tr = trace(ch, gram=G3, compute_ntk=False)
    Q1 = w * G3 + b
    qh = np.array([[relu_pair(Q1[i, i], Q1[j, j], Q1[i, j])[0] for j in range(3)] for i in range(3)])
    qd = np.array([[relu_pair(Q1[i, i], Q1[j, j], Q1[i, j])[1] for j in range(3)] for i in range(3)])
    qh_drop = qh + np.diag(np.diag(qh)) * (1 / rho - 1)
    np.testing.assert_allclose(tr.nngp, w * qh_drop + b, rtol=1e-13)
    qd_drop = qd + np.diag(np.diag(qd)) * (1 / rho - 1)
    np.testing.assert_allclose(tr.qtilde[0], w * qd_drop, rtol=1e-13)
    # NTK with one mask per input: Theta after the dropout is qdot Theta^1 with its same-input entries / keep
    full = mf.trace(ch, gram=G3)
    th = full.ntk
    np.testing.assert_allclose(th, w * (qd_drop * Q1) + (w * qh_drop + b), rtol=1e-13)
    # the forward NTK equals the backward route sum_l qtilde^l (w qhat^{l-1} + b) (sec. 4), dropout included
    via_back = sum(qt * (w * qh + b) for qt, qh in zip(full.qtilde, full.qhat))
    np.testing.assert_allclose(th, via_back, rtol=1e-13)


# ------------------------------------------------------------------------------------------------- residual: exact
@pytest.mark.parametrize("act, pair, rtol", [
    # relu: the library's tile route is the same closed form; only rounding differs (a few ulps per layer)
    ("relu", relu_pair, 1e-12),
    # tanh: nested scipy quadrature, each expectation to ~1e-13 relative; ~11 layers of O(1) gain: 1e-10
    ("tanh", tanh_pair, 1e-10),
])
def test_residual_against_hand_recursion(act, pair, rtol):
    G = G3[:2, :2] if act == "tanh" else G3     # tanh: two inputs (three pairs) keep the quadrature cheap
    qs, qhats, qtildes, K, Th = hand_residual(G, pair)
    tr = trace(residual_chain(act), gram=G)
    assert len(tr.dense) == NBLOCKS + 2
    for k in range(NBLOCKS + 2):
        np.testing.assert_allclose(tr.q[k], qs[k], rtol=rtol, atol=rtol * 1e-3, err_msg=f"q, Dense {k}")
        np.testing.assert_allclose(tr.qhat[k], qhats[k], rtol=rtol, atol=rtol * 1e-3, err_msg=f"qhat, Dense {k}")
        np.testing.assert_allclose(tr.qtilde[k], qtildes[k], rtol=rtol, err_msg=f"qtilde, Dense {k}")
    np.testing.assert_allclose(tr.nngp, K, rtol=rtol)
    np.testing.assert_allclose(tr.ntk, Th, rtol=rtol)
    # the public views
    x = np.linalg.cholesky(G + 0 * np.eye(len(G)))          # rows with x.x'/M_0 = G (M_0 = len(G))
    x = x * math.sqrt(len(G))
    res = mf.kernels(residual_chain(act), x)
    np.testing.assert_allclose(res.nngp, K, rtol=rtol)
    np.testing.assert_allclose(res.ntk, Th, rtol=rtol)
    np.testing.assert_allclose(mf.nngp_diagonal(residual_chain(act), x), np.diag(K), rtol=rtol)
    # SP NTK: sum over Dense layers of qtilde (M_{l-1} qhat + 1), M_0 the input dimension
    M = 100.0
    sp = mf.ntk_kernel(residual_chain(act), x, parameterization="standard", width=M)
    fan = [len(G)] + [M] * (NBLOCKS + 1)
    np.testing.assert_allclose(sp, sum(t * (f * qh + 1) for t, f, qh in zip(qtildes, fan, qhats)), rtol=rtol)
    # forward / backward views (inputs 0 and 1)
    fr = mf.forward(residual_chain(act), G[0, 0], G[1, 1], G[0, 1])
    np.testing.assert_allclose(fr.q2, [q[0, 1] for q in qs], rtol=rtol, atol=1e-15)
    br = mf.backward(residual_chain(act), fr)
    np.testing.assert_allclose(br.qtilde1, [t[0, 0] for t in qtildes], rtol=rtol)
    np.testing.assert_allclose(br.qtilde2, [t[0, 1] for t in qtildes], rtol=rtol)


@pytest.mark.parametrize("act, pair", [("relu", relu_pair), ("tanh", tanh_pair)])
def test_residual_fisher_kappas_against_hand_recursion(act, pair):
    """Karakida's kappas (x ~ N(0, I): unit norms, zero overlap) of the residual MLP: SP
    kappa_i = sum_l (alpha_{l-1}/alpha) qtilde_i^l qhat_i^{l-1} with alpha = number of non-readout Dense layers (all
    ratios 1); NTK parameterization kappa'_i = sum_l qtilde_i^l q_i^l. Tolerances as in the test above."""
    rtol = 1e-12 if act == "relu" else 1e-10
    qs, qhats, qtildes, _, _ = hand_residual(np.eye(2), pair)
    alpha = NBLOCKS + 1
    st = mf.fisher_statistics(residual_chain(act), 256, 4, 2)
    assert st.alpha == alpha and st.n_params == (1 + NBLOCKS) * (256 * 256 + 256) + 2 * 256 + 2
    k1 = sum(t[0, 0] * qh[0, 0] for t, qh in zip(qtildes, qhats)) / alpha
    k2 = sum(t[0, 1] * qh[0, 1] for t, qh in zip(qtildes, qhats)) / alpha
    assert st.kappa1 == pytest.approx(k1, rel=rtol)
    assert st.kappa2 == pytest.approx(k2, rel=rtol)
    nt = mf.fisher_statistics(residual_chain(act), 256, 4, 2, parameterization="ntk")
    assert nt.kappa1 == pytest.approx(sum(t[0, 0] * q[0, 0] for t, q in zip(qtildes, qs)), rel=rtol)
    assert nt.kappa2 == pytest.approx(sum(t[0, 1] * q[0, 1] for t, q in zip(qtildes, qs)), rel=rtol)


def test_residual_ntk_identity_standard_and_ntk():
    """Theta = sum_Dense qtilde^l * (direct term of layer l), in both parameterizations, from one trace."""
    ch = residual_chain("gelu")
    x = np.random.default_rng(5).standard_normal((5, 4))
    for par, M in (("ntk", None), ("standard", 50.0)):
        tr = trace(ch, x, parameterization=par, width=M)
        fan = [4.0] + [M or 0.0] * (len(tr.dense) - 1)
        direct = [s.cov_out if par == "ntk" else f * s.cov_in + 1 for s, f in zip(tr.dense, fan)]
        np.testing.assert_allclose(sum(s.qtilde * d for s, d in zip(tr.dense, direct)), tr.ntk, rtol=1e-13)


# ------------------------------------------------------------------------------------------------- residual: torch
torch = pytest.importorskip("torch")


def _inputs(M0, G, rng):
    """Rows x_t of dimension M0 with x.x'/M0 = G exactly (orthonormal frame times the Cholesky factor)."""
    Qf, _ = np.linalg.qr(rng.standard_normal((M0, len(G))))
    return (Qf @ np.linalg.cholesky(G).T).T * math.sqrt(M0)


def _measure(chain, M, n_seeds, chunk, C, x, parameterization="ntk"):
    from meanfield.validation.networks import sample_chain

    parts = []
    for i in range(0, n_seeds, chunk):
        ens = sample_chain(chain, M, chunk, n_outputs=C, parameterization=parameterization, seed=2024,
                           first_index=i, device="cpu")
        parts.append(ens.order_parameters(torch.as_tensor(x)))
    return {k: (np.concatenate([p[k] for p in parts]) if k == "ntk" else
                [np.concatenate([p[k][j] for p in parts]) for j in range(len(parts[0][k]))]) for k in parts[0]}


def _close(sample, theory, scale, M, n_layers, what):
    """Monte Carlo comparison. Error analysis: each per-network value is the infinite-width value plus a fluctuation
    O(1/sqrt(M)) (sums of M weakly dependent terms) plus a bias O(1/M) from the finite-width corrections, whose
    coefficient grows at most linearly with the number of layers it has passed. So
    |mean - theory| <= 5 standard errors (estimated from the seeds; ~50 entries compared, a 5-sigma false alarm has
    probability < 1e-4) + n_layers / M times the entry's natural scale sqrt(K(x,x) K(x',x'))."""
    mean = sample.mean(axis=0)
    se = sample.std(axis=0, ddof=1) / math.sqrt(sample.shape[0])
    tol = 5 * se + n_layers / M * scale
    bad = np.abs(mean - theory) > tol
    assert not bad.any(), (f"{what}: torch {mean[bad]} vs theory {theory[bad]} (tol {tol[bad]}, se {se[bad]})")


@pytest.mark.parametrize("act", ["relu", "tanh"])
def test_residual_against_torch_networks(act):
    """NNGP, NTK, q, q-tilde per Dense layer and Fisher kappas of the residual MLP against 48 torch networks of width
    512 (NTK parameterization, 4 outputs). Inputs: x1, x2 with unit norms and zero overlap (Karakida's setting),
    x3 correlated with both."""
    M, S, C = 512, 48, 4
    ch = residual_chain(act)
    G = np.array([[1.0, 0.0, 0.6], [0.0, 1.0, 0.7], [0.6, 0.7, 1.0]])
    x = _inputs(M, G, np.random.default_rng(0))
    emp = _measure(ch, M, S, 16, C, x)
    tr = trace(ch, gram=G)
    nd = len(tr.dense)

    def scale(A):
        d = np.sqrt(np.abs(np.diag(A)))
        return np.outer(d, d)

    for k in range(nd - 1):   # the readout has C = 4 units: its q is compared through the NNGP below
        _close(emp["q"][k], tr.q[k], scale(tr.q[k]), M, k + 1, f"q Dense {k}")
    for k in range(nd):
        _close(emp["qhat"][k], tr.qhat[k], scale(tr.qhat[k]), M, k + 1, f"qhat Dense {k}")
        _close(emp["qtilde"][k], tr.qtilde[k], scale(tr.qtilde[k]), M, nd, f"qtilde Dense {k}")
    w, b = ch[-1].weight_var, ch[-1].bias_var      # NNGP: expectation over the readout weights, given h
    _close(w * emp["qhat"][-1] + b, tr.nngp, scale(tr.nngp), M, nd, "NNGP")
    _close(emp["ntk"], tr.ntk, scale(tr.ntk), M, nd, "NTK")
    # Fisher kappas (SP; alpha = 5, all ratios 1): per network from its own qtilde and qhat
    st = mf.fisher_statistics(ch, M, 2, C)
    k1 = sum(t[:, 0, 0] * h[:, 0, 0] for t, h in zip(emp["qtilde"], emp["qhat"])) / st.alpha
    k2 = sum(t[:, 0, 1] * h[:, 0, 1] for t, h in zip(emp["qtilde"], emp["qhat"])) / st.alpha
    _close(k1[:, None], np.array([st.kappa1]), np.array([st.kappa1]), M, nd, "kappa1")
    _close(k2[:, None], np.array([st.kappa2]), np.array([st.kappa1]), M, nd, "kappa2")


def test_torch_twin_ntk_equals_autograd_jacobian():
    """The ensemble's NTK (chain rule per Dense layer) equals J J^T from autograd over all parameters (exact)."""
    from meanfield.validation.networks import sample_chain

    ch = residual_chain("tanh", n_blocks=2)
    x = torch.randn(3, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for par in ("ntk", "standard"):
        ens = sample_chain(ch, 24, 1, n_outputs=2, parameterization=par, seed=3, device="cpu")
        op = ens.order_parameters(x)
        p = ens.parameters(requires_grad=True)
        f = ens.apply(p, x)
        J = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(f[0, t, c], list(p.values()),
                                                                               retain_graph=True)])
                         for c in range(2) for t in range(3)]).reshape(2, 3, -1)
        th = (J[0] @ J[0].T + J[1] @ J[1].T).numpy() / 2
        np.testing.assert_allclose(op["ntk"][0], th, rtol=1e-12)


def test_chain_ensemble_matches_network_ensemble():
    from meanfield.validation.networks import sample_chain, sample_ensemble

    net = mf.Network("tanh", depth=2, weight_var=1.5, bias_var=0.1, width_ratios=[0.5, 1.0, 2.0])
    a = sample_ensemble(net, 16, 3, n_outputs=2, seed=4, device="cpu")
    b = sample_chain(net, 16, 3, n_outputs=2, seed=4, device="cpu")
    assert a.widths == (8, 16, 32, 2) and b.n_params == a.n_params
    x = torch.randn(5, 8, dtype=torch.float64)
    torch.testing.assert_close(a(x), b(x), rtol=1e-13, atol=1e-14)


def test_dropout_twin_against_theory():
    """Torch dropout twin: the same-input variance carries 1/keep, the cross covariance does not (MC, as above)."""
    M, S, rho = 512, 32, 0.7
    ch = serial(Dense(1.5, 0.1), Nonlinearity("relu"), Dropout(rho), Dense(1.5, 0.1), Nonlinearity("relu"),
                Dropout(rho), Dense(1.0))
    G = np.array([[1.0, 0.5], [0.5, 1.0]])
    x = _inputs(M, G, np.random.default_rng(1))
    emp = _measure(ch, M, S, 16, 1, x, parameterization="standard")
    tr = trace(ch, gram=G, compute_ntk=False)
    for k in range(3):
        d = np.sqrt(np.diag(tr.qhat[k]))
        _close(emp["qhat"][k], tr.qhat[k], np.outer(d, d), M, k + 1, f"qhat Dense {k}")
        d = np.sqrt(np.abs(np.diag(tr.qtilde[k])))
        _close(emp["qtilde"][k], tr.qtilde[k], np.outer(d, d), M, 3, f"qtilde Dense {k}")
