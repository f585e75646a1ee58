"""q-tilde of convolutional chains (meanfield.spatial.spatial_trace) against independent routes.

* tests/_spatial_reference.py: every layer as an explicit matrix on the (input x position) units, backward as the
  explicit transposes ``B^T R B`` (no code shared with meanfield.spatial);
* the NTK identity: the layers' terms ``sum qtilde_out D`` (reverse mode) add up to the forward-mode NTK recursion of
  :func:`meanfield.spatial_kernels` (a different algorithm on the same rules);
* 1 x 1 convolutions: each position pair behaves as a pair of inputs of the MLP, so q-tilde equals the vector sweep's
  (:func:`meanfield.trace`) divided by ``P^2`` (GlobalAvgPool's transpose);
* linear CNNs: closed forms by counting filter taps.

Error analysis for the 1e-12 tolerances: both sides evaluate the same closed forms (relu, erf) or the same engine in
float64 through <= ~12 maps of O(1) gain with sums of <= 9 taps per step; a few ulps per step leave the relative error
below ~1e-14 (measured <= 6e-16), so 1e-12 has two orders of margin.
"""
import itertools

import numpy as np
import pytest

import meanfield as mf
from meanfield.layers import Dense, Nonlinearity, Residual, serial
from meanfield.spatial import Conv, Flatten, GlobalAvgPool, LayerNorm, spatial_kernels, spatial_trace

from tests._spatial_reference import reference, reference_backward
from tests.test_spatial import ARCHS, _rel, mf_chain

FLAT_ARCHS = sorted(k for k in ARCHS if k != "spatial-output")


@pytest.mark.parametrize("name", FLAT_ARCHS)
@pytest.mark.parametrize("act", ["relu", "erf"])
@pytest.mark.parametrize("par", ["ntk", "standard"])
def test_qtilde_and_covariances_against_bruteforce(name, act, par):
    spec, shape = ARCHS[name]
    N = 3
    x = np.random.default_rng(1).standard_normal((N,) + shape)
    width = 16.0 if par == "standard" else None
    tape = []
    _, T = reference(spec, x, act, par, width, tape)
    ents = reference_backward(tape)
    tr = spatial_trace(mf_chain(spec, act), x, parameterization=par, width=width, tile=2)
    assert len(ents) == len(tr.qtilde) == len(tr.cov)
    for e, q, c, form in zip(ents, tr.qtilde, tr.cov, tr.forms):
        P = e["qt"].shape[0] // N
        R = e["qt"].reshape(N, P, N, P).transpose(0, 2, 1, 3)
        K = e["K"].reshape(N, P, N, P).transpose(0, 2, 1, 3)
        if form == "full":
            assert _rel(q.reshape(R.shape), R) < 1e-12 and _rel(c.reshape(K.shape), K) < 1e-12
        elif form == "diag":
            d = np.diagonal(R, axis1=2, axis2=3)
            assert _rel(q.reshape(d.shape), d) < 1e-12
            assert np.array_equal(R, R * np.eye(P))          # the reference has no off-diagonal q-tilde there
            assert _rel(c.reshape(d.shape), np.diagonal(K, axis1=2, axis2=3)) < 1e-12
        else:
            assert _rel(q, R[:, :, 0, 0]) < 1e-12 and _rel(c, K[:, :, 0, 0]) < 1e-12
    ours = [t for t in tr.ntk_terms if t is not None]
    theirs = [e["term"] for e in ents if "term" in e]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert _rel(a, b) < 1e-12
    assert _rel(sum(ours), T) < 1e-12                         # reverse mode = the reference's forward NTK
    assert _rel(tr.ntk, spatial_kernels(mf_chain(spec, act), x, parameterization=par, width=width).ntk) < 1e-13


@pytest.mark.parametrize("act", ["tanh", "gelu", "relu", "sin"])
def test_one_by_one_convolutions_equal_the_mlp_trace(act):
    """A chain of 1 x 1 convolutions before GlobalAvgPool acts on each position pair as the MLP on a pair of inputs,
    so q-tilde at every Conv output is meanfield.trace's q-tilde on the N P position vectors divided by P^2 (the
    GAP transpose), and the covariances are the MLP's (vector sweep: same engine, different code; rounding only)."""
    x = np.random.default_rng(8).standard_normal((2, 2, 2, 3))
    N, P = 2, 4
    w1, b1, w2, b2, wr, br = 1.6, 0.1, 1.3, 0.05, 1.2, 0.02
    conv = serial(Conv(w1, b1, (1, 1)), Nonlinearity(act), Conv(w2, b2, (1, 1)), Nonlinearity(act),
                  GlobalAvgPool(), Dense(wr, br))
    mlp = serial(Dense(w1, b1), Nonlinearity(act), Dense(w2, b2), Nonlinearity(act), Dense(wr, br))
    tr = spatial_trace(conv, x)
    ref = mf.trace(mlp, x.reshape(N * P, 3))
    convs = [k for k, name in enumerate(tr.layers) if name == "Conv"]
    for k, l in zip(convs, range(2)):
        qt = ref.qtilde[l].reshape(N, P, N, P).transpose(0, 2, 1, 3) / P ** 2
        q = ref.q[l].reshape(N, P, N, P).transpose(0, 2, 1, 3)
        assert _rel(tr.qtilde[k].reshape(qt.shape), qt) < 1e-12
        assert _rel(tr.cov[k].reshape(q.shape), q) < 1e-12


def _same_transpose(R, k):
    """Transpose of a SAME, stride-1 Conv's filter average on the spatial diagonal, by explicit loops:
    ``out(q) = (1/|F|) sum over (output p, tap d) with p + d - lo = q of R(p)`` (lax: lo = (k - 1) // 2)."""
    out = np.zeros_like(R)
    lo = [(kk - 1) // 2 for kk in k]
    for p in itertools.product(*map(range, R.shape)):
        for d in itertools.product(*map(range, k)):
            q = tuple(pi + di - li for pi, di, li in zip(p, d, lo))
            if all(0 <= qi < n for qi, n in zip(q, R.shape)):
                out[q] += R[p]
    return out / np.prod(k)


def test_linear_cnn_closed_forms():
    """Linear activations: (a) CIRCULAR convolutions + GlobalAvgPool: the transpose of a circular stride-1 Conv maps a
    constant to w times it, so q-tilde at Conv l is w_r / P^2 prod_{k > l} w_k on every entry; (b) SAME convolutions
    + Flatten: q-tilde stays on the spatial diagonal, w_r / P at the last Conv, then spread back by explicit loops
    over (position, tap) times w (edges are read fewer times)."""
    x = np.random.default_rng(3).standard_normal((3, 5, 4, 2))
    P = 20
    ws, wr = (1.7, 0.6, 2.2), 1.3
    lin = Nonlinearity("linear")
    circ = serial(*itertools.chain.from_iterable((Conv(w, 0.1, (3, 3), padding="CIRCULAR"), lin) for w in ws),
                  GlobalAvgPool(), Dense(wr, 0.2))
    tr = spatial_trace(circ, x)
    convs = [q for q, name in zip(tr.qtilde, tr.layers) if name == "Conv"]
    for l, q in enumerate(convs):
        np.testing.assert_allclose(q, wr / P ** 2 * np.prod(ws[l + 1:]), rtol=1e-13, atol=0)
    same = serial(*itertools.chain.from_iterable((Conv(w, 0.1, (3, 2), padding="SAME"), lin) for w in ws),
                  Flatten(), Dense(wr, 0.2))
    tr = spatial_trace(same, x)
    convs = [q for q, name in zip(tr.qtilde, tr.layers) if name == "Conv"]
    expect = np.full((5, 4), wr / P)
    for l in (2, 1, 0):
        np.testing.assert_allclose(convs[l], np.broadcast_to(expect, (3, 3, 5, 4)), rtol=1e-13, atol=0)
        expect = ws[l] * _same_transpose(expect, (3, 2))


def test_trace_tiles_symmetry_and_same_input():
    spec, shape = ARCHS["residual"]
    x = np.random.default_rng(2).standard_normal((5,) + shape)
    ch = mf_chain(spec, "erf")
    a, b = spatial_trace(ch, x), spatial_trace(ch, x, tile=2)
    for qa, qb, form in zip(a.qtilde, b.qtilde, a.forms):
        np.testing.assert_allclose(qb, qa, rtol=1e-14, atol=1e-300)
        if form == "full":
            k = (qa.ndim - 2) // 2
            axes = (1, 0) + tuple(range(2 + k, 2 + 2 * k)) + tuple(range(2, 2 + k))
            assert np.array_equal(qa, qa.transpose(axes))
        else:
            assert np.array_equal(qa, np.swapaxes(qa, 0, 1))
    k = a.forms.index("diag")
    np.testing.assert_array_equal(a.qtilde_same_input()[k], a.qtilde[k][np.arange(5), np.arange(5)])
    assert a.to_dict()["layers"] == list(a.layers)
    import matplotlib
    matplotlib.use("Agg")
    ax = a.plot()
    assert ax.get_xlabel() == "layer (chain order)"
    import matplotlib.pyplot as plt
    plt.close("all")
    np.testing.assert_allclose(a.nngp, spatial_kernels(ch, x).nngp, rtol=1e-14)


def test_trace_errors():
    x = np.ones((2, 4, 4, 1))
    with pytest.raises(ValueError, match="end without spatial axes"):
        spatial_trace(serial(Conv(1.0), Nonlinearity("relu"), Conv(1.0)), x)
    with pytest.raises(ValueError, match="width must be given"):
        spatial_trace(serial(Conv(1.0), Flatten(), Dense(1.0)), x, parameterization="standard")
    with pytest.raises(ValueError, match=r"^x must be shaped"):
        spatial_trace(serial(Conv(1.0), Flatten(), Dense(1.0)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="tile"):
        spatial_trace(serial(Conv(1.0), Flatten(), Dense(1.0)), x, tile=0)
    with pytest.raises(ValueError, match="use meanfield.kernels"):
        mf.trace(serial(Conv(1.0), LayerNorm(), Flatten(), Dense(1.0)), gram=np.eye(2))


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_dropout_one_by_one_convolutions_equal_the_mlp(act):
    """Dropout with one mask per (input, position, channel): through 1 x 1 convolutions each (input, position) is one
    input of the MLP with its own masks, so the full spatial NNGP / NTK / q-tilde before GlobalAvgPool are the MLP's
    on the N P position vectors (meanfield.layers.Dropout: only an input with itself gets 1/keep)."""
    from meanfield.layers import Dropout

    x = np.random.default_rng(9).standard_normal((2, 2, 2, 3))
    N, P = 2, 4
    conv = serial(Conv(1.6, 0.1, (1, 1)), Nonlinearity(act), Dropout(0.7), Conv(1.3, 0.05, (1, 1)),
                  Nonlinearity(act), Dropout(0.8), GlobalAvgPool(), Dense(1.2, 0.02))
    mlp = serial(Dense(1.6, 0.1), Nonlinearity(act), Dropout(0.7), Dense(1.3, 0.05), Nonlinearity(act),
                 Dropout(0.8), Dense(1.2, 0.02))
    tr = spatial_trace(conv, x)
    ref = mf.trace(mlp, x.reshape(N * P, 3))
    gap = tr.layers.index("GlobalAvgPool")
    k = gap - 1                                   # the second Dropout's output: the MLP's readout input qhat
    qhat = ref.qhat[2].reshape(N, P, N, P).transpose(0, 2, 1, 3)
    assert _rel(tr.cov[k].reshape(qhat.shape), qhat) < 1e-12
    for k, l in zip([j for j, name in enumerate(tr.layers) if name == "Conv"], range(2)):
        qt = ref.qtilde[l].reshape(N, P, N, P).transpose(0, 2, 1, 3) / P ** 2
        assert _rel(tr.qtilde[k].reshape(qt.shape), qt) < 1e-12
    # NTK: the MLP's readout NTK on position pairs, averaged over the pairs (GAP) -> the conv chain's
    theta_hidden = (ref.ntk - ref.nngp).reshape(N, P, N, P).mean(axis=(1, 3)) / 1.2
    K = 1.2 * qhat.mean(axis=(2, 3)) + 0.02
    assert _rel(tr.nngp, K) < 1e-12
    assert _rel(tr.ntk, 1.2 * theta_hidden + K) < 1e-12
    with pytest.raises(ValueError, match="not Gaussian"):
        spatial_trace(serial(Conv(1.0), Dropout(0.5), Nonlinearity(act), Flatten(), Dense(1.0)), x)


@pytest.mark.parametrize("act", ["relu", "erf", "leaky_relu", "sin", "linear", "tanh"])
def test_diagonal_tiles_equal_per_position_tiles(act):
    """PairPlan.pairs_diag (one compiled call per diagonal-form tile for the closed forms) equals the per-position
    2-D tiles of PairPlan.pairs bit for bit, correlation-excess bookkeeping included (a speed change only)."""
    from meanfield.activations import get_activation
    from meanfield.gaussian import PairPlan

    rng = np.random.default_rng(4)
    N, P = 5, 6
    q = rng.uniform(0.2, 2.0, N * P)
    a = get_activation(act)
    ri, rj = np.arange(3), np.arange(1, 5)
    qi, qj = q.reshape(N, P)[ri], q.reshape(N, P)[rj]
    Q = rng.uniform(-1, 1, (3, 4, P)) * np.sqrt(qi[:, None, :] * qj[None, :, :])
    Q[0, 0, 0] = np.sqrt(qi[0, 0] * qj[0, 0]) * (1 + 1e-12)            # |c| > 1 by "rounding": clipped, recorded
    one, two = PairPlan(a, q, True, 1e-14), PairPlan(a, q, True, 1e-14)
    h, d = one.pairs_diag(Q, ri, rj, P)
    for p in range(P):
        hp, dp = two.pairs(np.ascontiguousarray(Q[:, :, p]), ri * P + p, rj * P + p)
        assert np.array_equal(h[:, :, p], hp) and np.array_equal(d[:, :, p], dp)
    assert one.max_c_excess == two.max_c_excess > 0
