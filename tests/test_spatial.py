"""Convolutional / pooling / layer-norm chains at infinite width (meanfield.spatial).

Independent routes:

* tests/_spatial_reference.py: every layer as an explicit matrix on the (input x position) covariance, closed-form
  relu / erf entry by entry (no code shared with meanfield.spatial);
* neural-tangents (optional: skipped without it), same architectures, its closed forms for Relu and Erf;
* mpmath 2-D quadrature at 20 digits for tanh and gelu (no closed form in neural-tangents).

Error analysis for the 1e-12 tolerances: both sides evaluate the same closed forms in float64 through at most ~12
linear maps and nonlinearities of O(1) gain; each step adds a few ulps relative (the Conv sums <= 9 taps), so the
accumulated relative error stays below ~1e-14; 1e-12 leaves two orders of margin.
"""
import math
import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import meanfield as mf
from meanfield.layers import Dense, Dropout, Nonlinearity, Residual, serial
from meanfield.spatial import (AvgPool, Conv, Flatten, GlobalAvgPool, LayerNorm, spatial_kernels, spatial_variances)

from tests._spatial_reference import reference

# architectures as tuples, shared by the meanfield, brute-force and neural-tangents builders
ARCHS = {
    "conv-flatten-2d": ([("conv", 2.0, 0.1, (3, 3), (1, 1), "SAME"), ("act",),
                         ("conv", 1.5, 0.2, (2, 3), (2, 1), "VALID"), ("act",), ("flat",), ("dense", 1.3, 0.1)],
                        (5, 4, 3)),
    "conv-gap-circular": ([("conv", 2.0, 0.1, (3, 3), (1, 1), "CIRCULAR"), ("act",),
                           ("conv", 1.5, 0.2, (3, 3), (2, 2), "SAME"), ("act",), ("gap",), ("dense", 1.3, 0.1)],
                          (4, 5, 2)),
    "conv-pool-1d": ([("conv", 2.0, 0.1, (3,), (1,), "SAME"), ("act",), ("pool", (2,), (2,), "VALID"),
                      ("conv", 1.2, 0.0, (2,), (1,), "CIRCULAR"), ("act",), ("flat",), ("dense", 1.3, 0.1)],
                     (7, 2)),
    "layernorm": ([("conv", 2.0, 0.1, (3, 3), (1, 1), "SAME"), ("ln", "channel"), ("act",),
                   ("conv", 1.5, 0.2, (3, 3), (1, 1), "SAME"), ("ln", "all"), ("act",), ("gap",),
                   ("dense", 1.3, 0.1)], (3, 4, 2)),
    "residual": ([("conv", 2.0, 0.1, (3, 3), (1, 1), "SAME"),
                  ("res", 0.7, [("act",), ("conv", 1.5, 0.1, (3, 3), (1, 1), "SAME")]), ("act",),
                  ("pool", (2, 2), (1, 1), "SAME"), ("flat",), ("dense", 1.3, 0.1)], (4, 4, 3)),
    "dropout": ([("conv", 2.0, 0.1, (3, 3), (1, 1), "SAME"), ("act",), ("drop", 0.7),
                 ("conv", 1.5, 0.2, (3, 3), (1, 1), "CIRCULAR"), ("act",), ("drop", 0.8),
                 ("pool", (2, 2), (1, 1), "SAME"),
                 ("conv", 1.2, 0.1, (2, 2), (1, 1), "SAME"), ("act",), ("drop", 0.9), ("flat",), ("dense", 1.3, 0.1)],
                (4, 4, 2)),
    "spatial-output": ([("conv", 2.0, 0.1, (2,), (1,), "SAME"), ("act",), ("conv", 1.0, 0.1, (3,), (1,), "SAME")],
                       (5, 2)),
}


def mf_chain(spec, act):
    out = []
    for s in spec:
        k = s[0]
        if k == "conv":
            out.append(Conv(s[1], s[2], s[3], s[4], s[5]))
        elif k == "act":
            out.append(Nonlinearity(act))
        elif k == "dense":
            out.append(Dense(s[1], s[2]))
        elif k == "gap":
            out.append(GlobalAvgPool())
        elif k == "flat":
            out.append(Flatten())
        elif k == "pool":
            out.append(AvgPool(s[1], s[2], s[3]))
        elif k == "ln":
            out.append(LayerNorm(s[1]))
        elif k == "res":
            out.append(Residual(serial(*mf_chain(s[2], act)), alpha=s[1]))
        elif k == "drop":
            out.append(Dropout(s[1]))
    return serial(*out)


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


# ------------------------------------------------------------------------------------------- brute-force reference
@pytest.mark.parametrize("name", sorted(ARCHS))
@pytest.mark.parametrize("act", ["relu", "erf"])
@pytest.mark.parametrize("par", ["ntk", "standard"])
def test_against_bruteforce(name, act, par):
    spec, shape = ARCHS[name]
    x = np.random.default_rng(1).standard_normal((3,) + shape)
    width = 16.0 if par == "standard" else None
    K, T = reference(spec, x, act, par, width)
    res = mf.kernels(mf_chain(spec, act), x, parameterization=par, width=width)
    if K.ndim == 4:     # spatial output: reference (N, N, P, P); meanfield (N, N, *S, *S)
        assert res.nngp.shape == (3, 3) + shape[:-1] * 2
        res_K, res_T = (a.reshape(K.shape) for a in (res.nngp, res.ntk))
    else:
        res_K, res_T = res.nngp, res.ntk
    assert _rel(res_K, K) < 1e-12
    assert _rel(res_T, T) < 1e-12


def test_exact_symmetry_and_tiling():
    spec, shape = ARCHS["residual"]
    x = np.random.default_rng(2).standard_normal((7,) + shape)
    ch = mf_chain(spec, "relu")
    a = spatial_kernels(ch, x)
    b = spatial_kernels(ch, x, tile=2)
    assert np.array_equal(a.nngp, a.nngp.T) and np.array_equal(a.ntk, a.ntk.T)
    np.testing.assert_allclose(b.nngp, a.nngp, rtol=1e-14, atol=0)
    np.testing.assert_allclose(b.ntk, a.ntk, rtol=1e-14, atol=0)
    # cross kernel = block of the joint kernel; the diagonal matches the single-input pass
    c = spatial_kernels(ch, x[:3], x[3:])
    np.testing.assert_allclose(c.nngp, a.nngp[:3, 3:], rtol=1e-14)
    v = spatial_variances(ch, x)
    np.testing.assert_allclose(np.diag(a.nngp), v.q[-1], rtol=1e-15)
    np.testing.assert_array_equal(mf.nngp_diagonal(ch, x), v.q[-1])
    # spatial output in full form is symmetric under (input, position) <-> (input', position')
    s = mf.kernels(mf_chain(*ARCHS["spatial-output"][:1], "erf"), x[:, :, 0, :])
    assert np.array_equal(s.nngp, s.nngp.transpose(1, 0, 3, 2))


def test_per_layer_variances_against_reference():
    """q per layer from the single-input pass equals the reference's diagonal, layer after layer."""
    spec, shape = ARCHS["conv-gap-circular"]
    x = np.random.default_rng(3).standard_normal((2,) + shape)
    v = spatial_variances(mf_chain(spec, "relu"), x)
    for k in range(1, len(spec) + 1):
        K, _ = reference(spec[:k], x, "relu")
        d = np.diagonal(K, axis1=0, axis2=1).T if K.ndim == 4 else np.diag(K)
        if K.ndim == 4:
            d = np.stack([np.diag(K[i, i]) for i in range(2)])
        np.testing.assert_allclose(v.q[k - 1].reshape(d.shape), d, rtol=1e-13)


def test_delta_orthogonal_rule_is_centre_tap():
    """Delta-orthogonal Conv at infinite width = a 1 x 1 Conv (SAME, stride 1): only the centre tap has variance."""
    x = np.random.default_rng(4).standard_normal((3, 5, 5, 2))
    tail = [Nonlinearity("tanh"), Flatten(), Dense(1.0)]
    a = mf.kernels(serial(Conv(1.7, 0.1, (3, 3), orthogonal=True), *tail), x)
    b = mf.kernels(serial(Conv(1.7, 0.1, (1, 1)), *tail), x)
    np.testing.assert_array_equal(a.nngp, b.nngp)
    np.testing.assert_array_equal(a.ntk, b.ntk)


# ------------------------------------------------------------------------------------------- mpmath (tanh, gelu)
def _mp_pair(f, qa, qb, c, dps=20):
    """E[f(u) f(v)], (u, v) of covariance [[qa, c], [c, qb]], nested mpmath Gauss-Legendre quadrature on [-11, 11]^2
    (Gaussian tail < 1e-27) at ``dps`` digits: slow (about a minute per pair)."""
    import mpmath as mp

    with mp.workdps(dps):
        qa, qb, c = mp.mpf(qa), mp.mpf(qb), mp.mpf(c)
        sa = mp.sqrt(qa)
        a = c / sa
        b = mp.sqrt(qb - a * a)
        inner = lambda z1: mp.quad(lambda z2: f(a * z1 + b * z2) * mp.npdf(z2), [-11, 0, 11],  # noqa: E731
                                   method="gauss-legendre")
        return mp.quad(lambda z1: f(sa * z1) * mp.npdf(z1) * inner(z1), [-11, 0, 11], method="gauss-legendre")


def _circular_chain_and_covariances(act, L):
    """Conv(k = 2, CIRCULAR, 1-D) -> act -> Flatten -> Dense on two inputs whose positions all have channel norm^2 = C:
    every same-input variance is w + b, so each needed expectation is one pair (q, c) per position; the Flatten needs
    only same-position entries. Returns the chain, x, w_out, b_out and per position the conv output covariance Q_p."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, L, 3))
    x *= np.sqrt(3) / np.linalg.norm(x, axis=-1, keepdims=True)
    w, b, w2, b2 = 1.6, 0.1, 1.3, 0.05
    ch = serial(Conv(w, b, (2,), padding="CIRCULAR"), Nonlinearity(act), Flatten(), Dense(w2, b2))
    G = np.einsum("apc,bqc->abpq", x, x) / 3
    # CIRCULAR, k = 2: SAME padding total 1, lo = 0: position p sees p and p + 1 (mod L)
    Q = np.stack([w * (G[:, :, p, p] + G[:, :, (p + 1) % L, (p + 1) % L]) / 2 + b for p in range(L)])
    return ch, x, w2, b2, Q


def _check_against_pairs(ch, x, w2, b2, Q, pair):
    """NNGP and NTK entries from per-position pair expectations ``pair(q, c, order)`` (NTK param: Theta after the
    conv is Q, after the act qdot Q, after the Dense w2 * that + K)."""
    res = mf.kernels(ch, x)
    L = len(Q)
    q = Q[0, 0, 0]
    for i, j in ((0, 1),):
        qh = sum(pair(q, Q[p, i, j] / q, 0) for p in range(L)) / L
        qd = sum(pair(q, Q[p, i, j] / q, 1) * Q[p, i, j] for p in range(L)) / L
        K = w2 * qh + b2
        T = K + w2 * qd
        assert abs(res.nngp[i, j] - K) < 1e-12 * abs(K), (res.nngp[i, j], K)
        assert abs(res.ntk[i, j] - T) < 1e-12 * abs(T), (res.ntk[i, j], T)


def test_gelu_against_mpmath():
    """gelu (no closed form in neural-tangents): each pair is a 1-D mpmath integral at 20 digits (the inner Gaussian
    integral of gelu is closed, tests/_reference.mp_gelu_pair), accurate to ~1e-18; meanfield's Mehler route is
    accurate to rtol = 1e-14 per expectation, two layers of O(1) gain: 1e-12."""
    from tests._reference import mp_gelu_pair

    ch, x, w2, b2, Q = _circular_chain_and_covariances("gelu", 2)
    _check_against_pairs(ch, x, w2, b2, Q, lambda q, c, o: float(mp_gelu_pair(q, min(c, 1.0), o)))


@pytest.mark.skipif(os.environ.get("MEANFIELD_SLOW") != "1", reason="slow (minutes): set MEANFIELD_SLOW=1")
def test_tanh_against_mpmath():
    """tanh: nested 2-D mpmath quadrature at 20 digits (~1e-18), one position (L = 1) so four pairs; 1e-12 as above."""
    import mpmath as mp
    from tests._reference import MP_PHI

    ch, x, w2, b2, Q = _circular_chain_and_covariances("tanh", 1)
    f = MP_PHI["tanh"]
    _check_against_pairs(ch, x, w2, b2, Q,
                         lambda q, c, o: float(_mp_pair(f[o], q, q, c * q)) if c < 1 else
                         float(mp.quad(lambda z: f[o](mp.sqrt(q) * z) ** 2 * mp.npdf(z), [-mp.inf, 0, mp.inf])))


# ------------------------------------------------------------------------------------------- hostile input
def test_errors_are_clear():
    x = np.ones((2, 4, 4, 1))
    with pytest.raises(ValueError, match="padding"):
        Conv(1.0, 0.0, (3, 3), padding="FULL")
    with pytest.raises(ValueError, match="filter_shape"):
        Conv(1.0, 0.0, (3, 3, 3))
    with pytest.raises(ValueError, match="strides"):
        Conv(1.0, 0.0, (3, 3), strides=(1,))
    with pytest.raises(ValueError, match="weight_var"):
        Conv(-1.0)
    with pytest.raises(ValueError, match="axis"):
        LayerNorm("batch")
    with pytest.raises(ValueError, match="filter_shape must have 2"):
        mf.kernels(serial(Conv(1.0, 0.0, (3,)), Flatten(), Dense(1.0)), x)
    with pytest.raises(ValueError, match="larger than the spatial size"):
        mf.kernels(serial(Conv(1.0, 0.0, (5, 5), padding="VALID"), Flatten(), Dense(1.0)), x)
    with pytest.raises(ValueError, match="needs spatial axes"):
        mf.kernels(serial(Flatten(), Conv(1.0, 0.0, (3, 3)), Dense(1.0)), x)
    with pytest.raises(ValueError, match="spatial shape"):
        mf.kernels(serial(Conv(1.0), Residual(Conv(1.0, 0.0, (3, 3), strides=2)), Flatten(), Dense(1.0)), x)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        spatial_kernels(serial(Conv(1.0), Flatten(), Dense(1.0)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="not Gaussian"):
        mf.kernels(serial(Conv(1.0), Nonlinearity("relu"), Residual(serial(Nonlinearity("relu"), Conv(1.0))),
                          Flatten(), Dense(1.0)), x)
    with pytest.raises(ValueError, match="not Gaussian"):
        mf.kernels(serial(Nonlinearity("relu"), Conv(1.0), Flatten(), Dense(1.0)), x)
    with pytest.raises(ValueError, match="use meanfield.kernels"):
        mf.trace(serial(Conv(1.0), Flatten(), Dense(1.0)), gram=np.eye(2))
    # the full spatial covariance is refused above 2^22 entries per pair (46 x 46 images), the diagonal form is not
    big = np.ones((1, 46, 46, 1))
    with pytest.raises(ValueError, match="P\\^2 = 4477456 entries per pair"):
        mf.kernels(serial(Conv(1.0, 0.0, (1, 1)), GlobalAvgPool(), Dense(1.0)), big, compute_ntk=False)
    assert mf.kernels(serial(Conv(1.0, 0.0, (1, 1)), Flatten(), Dense(1.0)), big).nngp.shape == (1, 1)
    with pytest.raises(ValueError, match="N P\\^2"):
        mf.kernels(serial(Conv(1.0, 0.0, (1, 1)), GlobalAvgPool(), Dense(1.0)), np.ones((300, 26, 26, 1)),
                   compute_ntk=False)


@settings(max_examples=8, deadline=None, derandomize=True)
@given(st.sampled_from(["relu", "erf", "tanh"]), st.integers(1, 3), st.sampled_from(["SAME", "VALID", "CIRCULAR"]),
       st.integers(1, 2), st.booleans(), st.floats(0.5, 3.0))
def test_properties_symmetric_psd(act, k, padding, stride, gap, w):
    """Any small chain: exactly symmetric, positive semi-definite NNGP and NTK, diagonal = single-input pass."""
    x = np.random.default_rng(k + stride).standard_normal((5, 5, 4, 2))
    ch = serial(Conv(w, 0.1, (k, k), (stride, stride), padding), Nonlinearity(act),
                Conv(w, 0.1, (k, 1), (1, 1), padding), Nonlinearity(act),
                GlobalAvgPool() if gap else Flatten(), Dense(1.0, 0.0))
    r = mf.kernels(ch, x)
    for A in (r.nngp, r.ntk):
        assert np.array_equal(A, A.T)
        assert np.linalg.eigvalsh(A).min() > -1e-12 * np.abs(A).max()
    np.testing.assert_allclose(np.diag(r.nngp), spatial_variances(ch, x).q[-1], rtol=1e-14)


# ------------------------------------------------------------------------------------------- neural-tangents
def _nt():
    try:
        import jax
        jax.config.update("jax_enable_x64", True)
        from neural_tangents import stax
    except Exception as exc:  # noqa: BLE001 - any import failure (missing jax, incompatible versions) skips
        pytest.skip(f"neural-tangents not importable ({type(exc).__name__}: {exc})")
    return stax


def nt_layers(stax, spec, act, par):
    A = {"relu": stax.Relu, "erf": stax.Erf}[act]
    out = []
    for s in spec:
        k = s[0]
        if k == "conv":
            out.append(stax.Conv(16, s[3], s[4], s[5], W_std=math.sqrt(s[1]), b_std=math.sqrt(s[2]),
                                 parameterization=par))
        elif k == "act":
            out.append(A())
        elif k == "dense":
            out.append(stax.Dense(16, W_std=math.sqrt(s[1]), b_std=math.sqrt(s[2]), parameterization=par))
        elif k == "gap":
            out.append(stax.GlobalAvgPool())
        elif k == "flat":
            out.append(stax.Flatten())
        elif k == "pool":
            out.append(stax.AvgPool(s[1], s[2], s[3]))
        elif k == "ln":
            out.append(stax.LayerNorm(axis=-1 if s[1] == "channel" else (1, 2, 3)))
        elif k == "res":
            branch = stax.serial(*nt_layers(stax, s[2], act, par))
            out.append(stax.serial(stax.FanOut(2), stax.parallel(stax.Identity(), branch), stax.FanInSum()))
    return out


SLOW = pytest.mark.skipif(os.environ.get("MEANFIELD_SLOW") != "1", reason="slow: set MEANFIELD_SLOW=1")
# neural-tangents' kernel_fn runs op by op (~10-20 s a case on a loaded 2-core machine): two cases by default, which
# together cover every layer type, both activations and both parameterizations; all 20 with MEANFIELD_SLOW=1
NT_CASES = [pytest.param(n, a, p, marks=() if (n, a, p) in (("residual", "relu", "ntk"),
                                                            ("layernorm", "erf", "standard"),
                                                            ("conv-pool-1d", "relu", "standard")) else SLOW)
            for n in ["conv-flatten-2d", "conv-gap-circular", "conv-pool-1d", "layernorm", "residual"]
            for a in ["relu", "erf"] for p in ["ntk", "standard"]]


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name, act, par", NT_CASES)
def test_against_neural_tangents(name, act, par):
    """Entry by entry against neural-tangents' closed forms (float64). Off the diagonal and for erf everywhere: 1e-10
    relative to the largest entry (rounding only, as above). The relu NTK diagonal of neural-tangents carries an
    O(sqrt(eps)) error: it takes the angle as arctan2(sqrt(q q' - Q^2), Q) where Q = q up to rounding, so
    sqrt(q^2 - Q^2) ~ 1e-8 q; there meanfield is checked against the brute-force reference above (1e-12) and
    neural-tangents only to 1e-8."""
    stax = _nt()
    spec, shape = ARCHS[name]
    if name == "residual":          # neural-tangents has no branch scale: alpha = 1 here
        spec = [s if s[0] != "res" else ("res", 1.0, s[2]) for s in spec]
    x = np.random.default_rng(5).standard_normal((4,) + shape)
    _, _, kernel_fn = stax.serial(*nt_layers(stax, spec, act, par))
    nt = kernel_fn(x, None, ("nngp", "ntk"))
    res = mf.kernels(mf_chain(spec, act), x, parameterization=par, width=16.0)
    off = ~np.eye(4, dtype=bool)
    for mine, theirs in ((res.nngp, np.asarray(nt.nngp)), (res.ntk, np.asarray(nt.ntk))):
        scale = np.abs(mine).max()
        assert np.abs(mine - theirs)[off].max() < 1e-10 * scale
        diag_tol = 1e-8 if (act == "relu" and mine is res.ntk) else 1e-10
        assert np.abs(np.diag(mine) - np.diag(theirs)).max() < diag_tol * scale


@settings(max_examples=int(os.environ.get("MEANFIELD_SPATIAL_EXAMPLES", "25")), deadline=None, derandomize=True)
@given(st.integers(1, 2), st.integers(3, 6), st.integers(1, 4), st.integers(1, 3),
       st.sampled_from(["SAME", "VALID", "CIRCULAR"]), st.sampled_from(["SAME", "VALID", "CIRCULAR"]),
       st.sampled_from(["flat", "gap"]), st.sampled_from(["ntk", "standard"]))
def test_random_geometry_against_bruteforce(ndim, n, k, s, pad1, pad2, head, par):
    """Random filter sizes, strides, paddings and spatial sizes (1-D and 2-D) against the brute-force reference."""
    k, s = min(k, n), min(s, n)
    shape = (n,) * ndim + (2,)
    filt, strides = (k,) * ndim, (s,) * ndim
    n_out = (n - k) // s + 1 if pad1 == "VALID" else -(-n // s)
    spec = [("conv", 1.7, 0.1, filt, strides, pad1), ("act",)]
    if n_out >= 2:
        spec.append(("pool", (2,) * ndim, (1,) * ndim, pad2))
    spec += [("conv", 1.3, 0.2, (1,) * ndim, (1,) * ndim, pad2), ("act",), (head,), ("dense", 1.1, 0.1)]
    x = np.random.default_rng(n + k).standard_normal((2,) + shape)
    width = 8.0 if par == "standard" else None
    K, T = reference(spec, x, "relu", par, width)
    res = mf.kernels(mf_chain(spec, "relu"), x, parameterization=par, width=width)
    assert _rel(res.nngp, K) < 1e-12 and _rel(res.ntk, T) < 1e-12


@pytest.mark.parametrize("act", sorted(mf.ACTIVATIONS))
def test_one_by_one_convolutions_equal_the_mlp_on_positions(act):
    """Every activation: a chain of 1 x 1 convolutions acts on each position as an MLP acts on a vector, so the full
    spatial covariance before GlobalAvgPool is the MLP kernel (meanfield.kernels on the N P position vectors, the
    vector code path) and the GAP kernel is its mean over position pairs. Same engine, different sweep: rounding only
    (1e-12; the quadrature route of kinked activations is deterministic in its inputs, so equal too)."""
    x = np.random.default_rng(8).standard_normal((2, 1, 2, 3))
    w1, b1, w2, b2, wr, br = 1.6, 0.1, 1.3, 0.05, 1.2, 0.02
    conv = serial(Conv(w1, b1, (1, 1)), Nonlinearity(act), Conv(w2, b2, (1, 1)), Nonlinearity(act),
                  GlobalAvgPool(), Dense(wr, br))
    mlp = serial(Dense(w1, b1), Nonlinearity(act), Dense(w2, b2), Nonlinearity(act), Dense(1.0, 0.0))
    r = mf.kernels(conv, x)
    m = mf.kernels(mlp, x.reshape(4, 3))
    # the MLP's last Dense(1, 0) has K = qhat and Theta = qdot-weighted Theta + qhat: subtract to get the hidden ones
    qhat = m.nngp.reshape(2, 2, 2, 2).mean(axis=(1, 3))
    theta_hidden = (m.ntk - m.nngp).reshape(2, 2, 2, 2).mean(axis=(1, 3))
    K = wr * qhat + br
    T = wr * theta_hidden + K
    assert _rel(r.nngp, K) < 1e-12
    assert _rel(r.ntk, T) < 1e-12
