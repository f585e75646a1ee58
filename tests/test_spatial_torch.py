"""Finite-width torch twins of convolutional chains against the infinite-width theory (meanfield.spatial).

Monte Carlo error analysis (as tests/test_layers.py): each per-network value is the infinite-width value plus a
fluctuation O(1/sqrt(M)) and a bias O(1/M) per layer, so |mean - theory| <= 5 standard errors (estimated from the
seeds) + n_layers / M times the largest entry.
"""
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from meanfield.layers import Dense, Nonlinearity, Residual, serial  # noqa: E402
from meanfield.spatial import (AvgPool, Conv, Flatten, GlobalAvgPool, LayerNorm, spatial_kernels,  # noqa: E402
                               spatial_variances)
from meanfield.validation.spatial_networks import sample_spatial_chain  # noqa: E402


def cnn(orthogonal=False):
    return serial(Conv(2.0, 0.1, (3, 3), padding="SAME"), LayerNorm(), Nonlinearity("relu"),
                  Conv(1.2, 0.1, (3, 3), padding="CIRCULAR", orthogonal=orthogonal),
                  Residual(serial(Nonlinearity("tanh"), Conv(1.5, 0.1, (3, 3), padding="SAME")), alpha=0.7),
                  Nonlinearity("erf"), AvgPool((2, 2), (1, 1), "SAME"), Conv(1.3, 0.0, (2, 2), (2, 2), "VALID"),
                  Nonlinearity("relu"), GlobalAvgPool(), Dense(1.3, 0.1))


def _close(sample, theory, M, n_layers, what):
    mean = sample.mean(axis=0)
    se = sample.std(axis=0, ddof=1) / math.sqrt(sample.shape[0])
    tol = 5 * se + n_layers / M * np.abs(theory).max()
    bad = np.abs(mean - theory) > tol
    assert not bad.any(), f"{what}: torch {mean[bad]} vs theory {theory[bad]} (tol {tol[bad]})"
    return float(np.max(np.abs(mean - theory)) / np.abs(theory).max())


def _measure(ch, x, M, S, par="ntk"):
    ens = sample_spatial_chain(ch, x.shape[1:], M, S, n_outputs=2, parameterization=par, seed=11, device="cpu")
    return ens.order_parameters(x)


@pytest.mark.parametrize("par", ["ntk", "standard"])
def test_cnn_twin_nngp_ntk_and_q_per_layer(par):
    """Every layer type at once (Conv SAME/CIRCULAR/VALID with stride, LayerNorm, Residual, AvgPool, GAP, Dense),
    width 48, 24 networks."""
    M, S = 48, 24
    ch = cnn()
    x = np.random.default_rng(0).standard_normal((3, 6, 6, 2))
    emp = _measure(ch, x, M, S, par)
    th = spatial_kernels(ch, x, parameterization=par, width=float(M))
    _close(emp["nngp"], th.nngp, M, 8, "nngp")
    _close(emp["ntk"], th.ntk, M, 8, "ntk")
    v = spatial_variances(ch, x)
    theory_q = [q for q, name in zip(v.q, v.layers) if name in ("Conv", "Dense")][:-1]   # not the readout
    assert len(theory_q) == len(emp["q"])
    for k, ((tw, q), tq) in enumerate(zip(emp["q"], theory_q)):
        _close(q, tq, M, k + 1, f"q of layer {k}")


def test_delta_orthogonal_and_haar_twins():
    """Delta-orthogonal Conv and Haar-orthogonal Dense: the forward order parameters agree with the Gaussian-weight
    theory (which does not depend on orthogonality at infinite width)."""
    from meanfield.validation.networks import sample_chain

    M, S = 48, 24
    ch = cnn(orthogonal=True)
    x = np.random.default_rng(1).standard_normal((3, 6, 6, 2))
    emp = _measure(ch, x, M, S)
    th = spatial_kernels(ch, x)
    _close(emp["nngp"], th.nngp, M, 8, "nngp (delta-orthogonal)")
    _close(emp["ntk"], th.ntk, M, 8, "ntk (delta-orthogonal)")
    W = emp and sample_spatial_chain(ch, x.shape[1:], M, 1, device="cpu").raw["W2"][0]
    np.testing.assert_allclose((W @ W.T).numpy(), M * np.eye(M), atol=1e-10)      # sqrt(M) O, O orthogonal
    # Haar Dense chain (vector inputs) through meanfield.trace
    import meanfield as mf

    dch = serial(Dense(1.5, 0.1, orthogonal=True), Nonlinearity("tanh"), Dense(1.5, 0.1, orthogonal=True),
                 Nonlinearity("tanh"), Dense(1.0, orthogonal=True))
    xv = np.random.default_rng(2).standard_normal((3, M))
    parts = sample_chain(dch, M, S, n_outputs=2, parameterization="ntk", seed=3, device="cpu")
    assert np.allclose(parts.raw_weights[1][0] @ parts.raw_weights[1][0].T, M * np.eye(M))
    op = parts.order_parameters(torch.as_tensor(xv))
    tr = mf.trace(dch, xv)
    for k in range(3):
        _close(op["q"][k], tr.q[k], M, k + 1, f"q^{k + 1} (Haar)")
    _close(op["ntk"], tr.ntk, M, 3, "ntk (Haar)")


@pytest.mark.skipif(os.environ.get("MEANFIELD_SLOW") != "1", reason="slow: set MEANFIELD_SLOW=1")
def test_cnn_twin_error_shrinks_with_width():
    """The deviation of the mean over 64 networks from theory falls with width (O(1/M) bias + O(1/sqrt(M S)))."""
    ch = cnn()
    x = np.random.default_rng(0).standard_normal((3, 6, 6, 2))
    th = spatial_kernels(ch, x)
    errs = []
    for M in (16, 64, 256):
        emp = _measure(ch, x, M, 64)
        errs.append(_close(emp["ntk"], th.ntk, M, 8, f"ntk M={M}"))
    print("relative NTK deviation at M = 16, 64, 256:", errs)
    assert errs[2] < errs[0]


def test_cnn_chi1_approaches_theory_with_width():
    """chi_1 of a CIRCULAR Conv layer after tanh: the mean of |J v|^2 / |v|^2 over random directions v, with
    J = d conv(tanh(u)) / du at a finite network's own pre-activations u, tends to w E[tanh'(u)^2], u ~ N(0, q)
    (q from the single-input pass; the expectation by scipy quadrature). Its seed-to-seed spread falls like
    1/sqrt(M P) and the mean stays within 5 standard errors + 2/M."""
    from scipy import integrate
    from meanfield.validation.spatial_networks import _run

    w, b = 1.7, 0.1
    ch = serial(Conv(1.0, 0.0, (3, 3), padding="CIRCULAR"), Nonlinearity("tanh"),
                Conv(w, b, (3, 3), padding="CIRCULAR"))
    x = np.random.default_rng(4).standard_normal((1, 6, 6, 4))
    x *= 2.0 / np.linalg.norm(x, axis=-1, keepdims=True)             # every position: |x|^2 / C = 1
    q = spatial_variances(ch, x).q[0]
    assert np.ptp(q) < 1e-12
    q = float(q.ravel()[0])
    d2 = integrate.quad(lambda z: (1 - math.tanh(math.sqrt(q) * z) ** 2) ** 2 * math.exp(-z * z / 2)
                        / math.sqrt(2 * math.pi), -12, 12, epsabs=1e-14)[0]
    chi1 = w * d2
    spreads = []
    for M in (16, 128):
        ens = sample_spatial_chain(ch, x.shape[1:], M, 16, seed=5, device="cpu")
        params = ens.parameters()
        u = _run(ens.twins[:1], torch.as_tensor(x).expand(16, *x.shape), params, ens, None)
        v = torch.randn(u.shape, generator=torch.Generator().manual_seed(6), dtype=u.dtype)
        _, Jv = torch.func.jvp(lambda h: _run(ens.twins[1:], h, params, ens, None), (u,), (v,))
        ratio = ((Jv ** 2).sum(dim=(1, 2, 3, 4)) / (v ** 2).sum(dim=(1, 2, 3, 4))).numpy()
        _close(ratio[:, None], np.array([chi1]), M, 2, f"chi_1 at M={M}")
        spreads.append(ratio.std())
        print(f"M={M}: chi_1 measured {ratio.mean():.4f} +- {ratio.std() / 4:.4f}, theory {chi1:.4f}")
    assert spreads[1] < spreads[0] / 2          # ~ sqrt(8) smaller


def _qtilde_sums(q):
    """(..., N, N, P, P) -> (..., 2, N, N): the same-position sum and the sum over all position pairs. Summing over
    positions averages the O(1/sqrt(M)) per-entry fluctuations (per-entry q-tilde of one network fluctuates by
    ~sqrt(2 n_layers / M), 20% at M = 256 for this chain)."""
    return np.stack([np.einsum("...nmpp->...nm", q), q.sum(axis=(-1, -2))], axis=-3)


def _qtilde_check(M, S, x, ch):
    from meanfield.spatial import spatial_trace

    tr = spatial_trace(ch, x)
    theory = [q for q, name in zip(tr.qtilde, tr.layers) if name == "Conv"]
    meas = sample_spatial_chain(ch, x.shape[1:], M, S, seed=13, device="cpu").qtilde(x)
    assert len(theory) == len(meas)
    errs = []
    for k, (t, (lay, q)) in enumerate(zip(theory, meas)):
        assert isinstance(lay, Conv)
        t = t.reshape(q.shape[1:])
        errs.append(_close(_qtilde_sums(q), _qtilde_sums(t), M, len(theory) - k + 2, f"qtilde sums of Conv {k}"))
    return errs


def test_cnn_twin_qtilde_per_layer():
    """Back-propagated overlaps of finite CNNs (autograd, 48 networks of width 24; every layer type on the way:
    GlobalAvgPool, strided VALID Conv, AvgPool, residual block, CIRCULAR Conv, LayerNorm) against spatial_trace."""
    x = np.random.default_rng(0).standard_normal((3, 6, 6, 2))
    _qtilde_check(24, 48, x, cnn())


@pytest.mark.skipif(os.environ.get("MEANFIELD_SLOW") != "1", reason="slow: set MEANFIELD_SLOW=1")
def test_cnn_twin_qtilde_widths():
    """Widths 16, 64, 256 (channels), seeds 256, 128, 96: within 5 standard errors + O(1/M) at every width; the
    measured deviations (printed) are 2-6% at M = 256, at the level of the seed noise."""
    x = np.random.default_rng(0).standard_normal((3, 6, 6, 2))
    for M, S in ((16, 256), (64, 128), (256, 96)):
        print(f"M={M}: largest relative deviation per Conv layer", np.round(_qtilde_check(M, S, x, cnn()), 4))


def _fim_check(M, S, par, flatten=False, chunk=None):
    """Empirical FIM statistics of S finite CNNs (Jacobian Gram by autograd; eigenvalues of J J^T / T) against
    spatial_fisher_statistics. Error analysis: Tr F is linear in the Gram, so its mean has an O(1/M) bias and an
    O(1/sqrt(M)) seed spread; s_lambda and lambda_max are quadratic / convex in it, so they carry in addition a
    positive bias of the order of the Gram's relative variance (the spread squared, <~ 0.1 here at M = 24); the
    tolerance is 5 standard errors + 3 n_layers / M."""
    from meanfield.fisher import spatial_fisher_statistics

    if flatten:
        ch = serial(Conv(2.0, 0.1, (3, 3)), Nonlinearity("relu"), Conv(1.5, 0.2, (3, 3), padding="CIRCULAR"),
                    Nonlinearity("tanh"), Flatten(), Dense(1.2, 0.1))
    else:
        ch = serial(Conv(2.0, 0.1, (3, 3)), Nonlinearity("relu"), Conv(1.5, 0.2, (3, 3), padding="CIRCULAR"),
                    Nonlinearity("tanh"), AvgPool((2, 2)), Conv(1.3, 0.1, (2, 2), padding="VALID"),
                    Nonlinearity("relu"), GlobalAvgPool(), Dense(1.2, 0.1))
    x = np.random.default_rng(0).standard_normal((5, 5 if flatten else 6, 5 if flatten else 6, 2))
    T, C = 5, 2
    st = spatial_fisher_statistics(ch, x, M, C, par)
    scale, n_eig = (1.0 / T, st.n_params) if par == "standard" else (1.0, C * T)
    chunk = chunk or S
    emp = {"mean_eigenvalue": [], "second_moment": [], "lambda_max": []}
    lay = []
    for start in range(0, S, chunk):
        g = sample_spatial_chain(ch, x.shape[1:], M, chunk, n_outputs=C, parameterization=par, seed=3,
                                 first_index=start, device="cpu").jacobian_gram(x)
        assert g["n_params"] == st.n_params and g["layer_n_params"] == list(st.layer_n_params)
        G = g["gram"]
        emp["mean_eigenvalue"].append(scale * np.trace(G, axis1=1, axis2=2) / n_eig)
        emp["second_moment"].append(scale ** 2 * np.sum(G * G, axis=(1, 2)) / n_eig)
        emp["lambda_max"].append(scale * np.linalg.eigvalsh(G)[:, -1])
        lay.append(np.array([scale * np.trace(G_l, axis1=1, axis2=2) for G_l in g["layers"]]).T)
    errs = {}
    for k, v in emp.items():
        errs[k] = _close(np.concatenate(v)[:, None], np.array([getattr(st, k)]), M, 3 * 4, f"{k} ({par}, M={M})")
    lay = np.concatenate(lay) / (np.array(st.layer_n_params) if par == "standard" else C * T)
    _close(lay, st.layer_mean_eigenvalue, M, 3 * 4, f"layer mean eigenvalues ({par})")
    return errs


def test_cnn_twin_fisher_statistics():
    _fim_check(24, 16, "standard")


@pytest.mark.skipif(os.environ.get("MEANFIELD_SLOW") != "1", reason="slow: set MEANFIELD_SLOW=1")
def test_cnn_twin_fisher_statistics_widths():
    """Conv-relu-Conv-tanh-Flatten-Dense, widths 16, 64, 256 with 64, 32, 12 networks. Measured (standard
    parameterization, mean - 1 +- standard error): m_lambda -1.3 +- 0.8 %, -0.4 +- 0.6 %, +0.2 +- 0.5 %, its seed spread
    6.7, 3.6, 1.6 % (falling like 1/sqrt(M)); s_lambda and lambda_max within 2.3 standard errors (lambda_max +2 %:
    the splitting of its C-fold degeneracy). The GlobalAvgPool chain in NTK parameterization at 16, 64, 256."""
    for M, S, chunk in ((16, 64, 64), (64, 32, 16), (256, 12, 4)):
        print(f"flatten M={M}: relative deviation",
              {k: round(v, 4) for k, v in _fim_check(M, S, "standard", True, chunk).items()})
    for M, S, chunk in ((16, 48, 48), (64, 16, 16), (256, 6, 6)):
        print(f"GAP ntk M={M}: relative deviation", {k: round(v, 4) for k, v in _fim_check(M, S, "ntk").items()})
def test_cnn_twin_dropout():
    """Dropout with a mask per (input, position, channel) (torch nn.Dropout): NNGP, NTK (one mask per input, as the
    theory's limit) and the per-position variance after each Conv against spatial_kernels (width 32, 24 networks).
    The 1/keep factor moves the same-position variances by far more than the tolerance, so the test tells the
    per-element rule from no dropout (the variance after the second Conv is >= 1.3 times the dropout-free one,
    against a tolerance of ~ 5 standard errors + 2/M ~ 10%)."""
    from meanfield.layers import Dropout

    ch = serial(Conv(2.0, 0.1, (3, 3)), Nonlinearity("relu"), Dropout(0.6),
                Conv(1.5, 0.1, (3, 3), padding="CIRCULAR"), Nonlinearity("tanh"), Dropout(0.7), AvgPool((2, 2)),
                Conv(1.3, 0.1, (2, 2)), Nonlinearity("relu"), Dropout(0.8), GlobalAvgPool(), Dense(1.2, 0.1))
    x = np.random.default_rng(2).standard_normal((3, 5, 5, 2))
    M, S = 32, 24
    emp = _measure(ch, x, M, S)
    th = spatial_kernels(ch, x)
    _close(emp["nngp"], th.nngp, M, 8, "nngp with dropout")
    _close(emp["ntk"], th.ntk, M, 8, "ntk with dropout")
    v = spatial_variances(ch, x)
    qs = [q for q, name in zip(v.q, v.layers) if name == "Conv"]
    for k, ((tw, q), tq) in enumerate(zip(emp["q"], qs)):
        _close(q, tq, M, k + 1, f"q after Conv {k} with dropout")
    # the per-position variance after a Conv sees the full 1/keep (same input, same position); the kernels after
    # GlobalAvgPool only its 1/P share
    plain = spatial_variances(serial(*[lay for lay in ch if not isinstance(lay, Dropout)]), x)
    q_plain = [q for q, name in zip(plain.q, plain.layers) if name == "Conv"][1]
    assert np.min(qs[1] / q_plain) > 1.3


@pytest.mark.skipif(os.environ.get("MEANFIELD_SLOW") != "1", reason="slow: set MEANFIELD_SLOW=1")
def test_flatten_cnn_qtilde_approach_with_width():
    """Conv-relu-Conv(CIRCULAR)-tanh-Flatten-Dense, widths 16, 64, 256 with 256, 128, 64 networks: the
    position-summed q-tilde of both Conv layers within 5 standard errors + 2 / M, and its seed spread falling like
    1/sqrt(M) (measured 0.18, 0.095, 0.047 at Conv 1; the mean deviation of Conv 2's cross-input entry
    +2.5 +- 1.0 %, +0.6 +- 0.7 %, +0.3 +- 0.5 %: the O(1/M) bias)."""
    from meanfield.spatial import spatial_trace

    ch = serial(Conv(2.0, 0.1, (3, 3)), Nonlinearity("relu"), Conv(1.5, 0.2, (3, 3), padding="CIRCULAR"),
                Nonlinearity("tanh"), Flatten(), Dense(1.2, 0.1))
    x = np.random.default_rng(0).standard_normal((3, 5, 5, 2))
    tr = spatial_trace(ch, x)
    theory = [q.reshape(3, 3, -1).sum(-1) for q, name in zip(tr.qtilde, tr.layers) if name == "Conv"]
    spreads = []
    for M, S in ((16, 256), (64, 128), (256, 64)):
        meas = sample_spatial_chain(ch, x.shape[1:], M, S, seed=21, device="cpu").qtilde(x)
        for k, ((_, q), t) in enumerate(zip(meas, theory)):
            sums = np.einsum("snmpp->snm", q)
            _close(sums, t, M, 2, f"sum_p qtilde at Conv {k + 1}, M={M}")
        spreads.append((np.einsum("snmpp->snm", meas[0][1])[:, 0, 0] / theory[0][0, 0]).std(ddof=1))
    print("seed spread of sum_p qtilde(x, x) at Conv 1:", np.round(spreads, 3))
    assert spreads[1] < 0.7 * spreads[0] and spreads[2] < 0.7 * spreads[1]      # 1/sqrt(4) = 0.5 each step
