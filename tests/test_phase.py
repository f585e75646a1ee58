"""Tests of meanfield.phase: phase diagrams, critical lines, depth-scale curves and map dynamics.

Every expected number comes from a route independent of meanfield.forward:

* closed forms for erf (Williams 1997) and ReLU (Cho & Saul), solved with scipy.optimize.brentq;
* scipy.integrate.quad over the real line for tanh (epsrel 1e-12), with q* by brentq on V(q) - q;
* the critical line parameterized by q* (docs/mathematics.md sec. 2): sigma_w^2 = 1 / E[phi'^2], sigma_b^2 = q* - sigma_w^2 E[phi^2],
  which needs no root finding in sigma_w^2 at all.

Error budget (used for the tolerances): quad at epsrel 1e-12 on smooth integrands of size O(1) gives ~1e-12 absolute;
brentq with xtol 1e-15 adds nothing comparable. The core claims ~1e-12 on its quadratures and fixed points. chi_1 and
the critical sigma_w^2 are O(1) with O(1) derivatives with respect to q*, so 1e-12 errors stay ~1e-11; we allow 1e-9
(the brief's accuracy target for the critical line). c* near the critical line is ill-conditioned (the fixed point is
shallow), so c*, chi_c are checked at points well inside the chaotic phase, where 1e-8 is ample.
"""
from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize

from meanfield.phase import (CriticalLine, DepthScaleCurve, MapDynamics, PhaseDiagram, critical_line,
                             depth_scale_curve, map_dynamics, phase_diagram)

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# ------------------------------------------------------------------------------------------------------------------
# independent reference routes
# ------------------------------------------------------------------------------------------------------------------
def gauss_mean(f, q):
    """int Dz f(sqrt(q) z) by adaptive quad (independent of the library's quadrature)."""
    if q == 0.0:
        return f(0.0)
    s = math.sqrt(q)
    val, _ = integrate.quad(lambda z: f(s * z) * math.exp(-0.5 * z * z) * _INV_SQRT_2PI, -np.inf, np.inf,
                            epsabs=1e-14, epsrel=1e-12, limit=200)
    return val


def tanh_sq(x):
    return math.tanh(x) ** 2


def sech4(x):
    return (1.0 - math.tanh(x) ** 2) ** 2


def qstar_tanh(w, b):
    g = lambda q: w * gauss_mean(tanh_sq, q) + b - q
    lo = 0.0
    if b == 0.0:
        lo = 1e-10
        if g(lo) <= 0.0:
            return 0.0
    hi = 1.0 + 2 * b
    while g(hi) > 0:
        hi *= 2
    return optimize.brentq(g, lo, hi, xtol=1e-15, rtol=1e-15, maxiter=300)


def chi1_tanh(w, b):
    return w * gauss_mean(sech4, qstar_tanh(w, b))


# erf closed forms (docs/mathematics.md sec. 2, Williams 1997)
def erf_msq(q):
    return 2.0 / math.pi * math.asin(2 * q / (1 + 2 * q))


def erf_dmsq(q):
    return 4.0 / math.pi / math.sqrt(1 + 4 * q)


def qstar_erf(w, b):
    g = lambda q: w * erf_msq(q) + b - q
    lo = 0.0
    if b == 0.0:
        lo = 1e-12
        if g(lo) <= 0:
            return 0.0
    hi = 1.0 + 2 * b
    while g(hi) > 0:
        hi *= 2
    return optimize.brentq(g, lo, hi, xtol=1e-15, rtol=1e-15, maxiter=300)


def erf_reference(w, b):
    """q*, chi1, c*, chi_c, xi_q, xi_c, xi_grad for erf from closed forms and brentq."""
    q = qstar_erf(w, b)
    chi1 = w * erf_dmsq(q)
    # correlation map C(c) = [w (2/pi) arcsin(2 c q / (1 + 2q)) + b] / q; c* = 1 in the ordered phase
    if chi1 <= 1.0:
        cs = 1.0
    else:
        C = lambda c: (w * 2 / math.pi * math.asin(2 * c * q / (1 + 2 * q)) + b) / q - c
        cs = optimize.brentq(C, -1.0 + 1e-15, 1.0 - 1e-9, xtol=1e-15, rtol=1e-15)
    chic = w * 4 / math.pi / math.sqrt((1 + 2 * q) ** 2 - 4 * (cs * q) ** 2)
    vprime = w * 4 / (math.pi * (1 + 2 * q) * math.sqrt(1 + 4 * q))  # d/dq of w (2/pi) arcsin(2q/(1+2q))
    xi = lambda s: -1.0 / math.log(s)
    return dict(qstar=q, chi1=chi1, cstar=cs, chi_c=chic, xi_q=xi(vprime), xi_c=xi(chic), xi_grad=xi(chi1))


# ------------------------------------------------------------------------------------------------------------------
# critical line
# ------------------------------------------------------------------------------------------------------------------
def test_critical_line_known_values():
    line = critical_line("tanh", 0.0)
    assert abs(line.weight_vars[0] - 1.0) < 1e-9
    line = critical_line("erf", 0.0)
    assert abs(line.weight_vars[0] - math.pi / 4) < 1e-9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ReLU's q* diverges on its critical line when sigma_b^2 > 0
        line = critical_line("relu", [0.0, 0.1, 0.5, 2.0], offsets=())
    np.testing.assert_allclose(line.weight_vars, 2.0, rtol=0, atol=1e-9)


@pytest.mark.parametrize("q", [0.05, 0.3, 1.0, 2.5])
def test_critical_line_tanh_matches_q_parameterization(q):
    # docs/mathematics.md sec. 2: the critical line as a curve parameterized by q*
    w = 1.0 / gauss_mean(sech4, q)
    b = q - w * gauss_mean(tanh_sq, q)
    assert b >= 0.0
    line = critical_line("tanh", b, offsets=())
    assert abs(line.weight_vars[0] - w) < 1e-9
    assert abs(line.qstar[0] - q) < 1e-8 * max(1.0, q)


def test_critical_line_tanh_matches_brentq_on_quad_chi1():
    b = 0.2
    w_ref = optimize.brentq(lambda w: chi1_tanh(w, b) - 1.0, 1.0, 4.0, xtol=1e-14)
    line = critical_line("tanh", [b], offsets=())
    assert abs(line.weight_vars[0] - w_ref) < 1e-9


@pytest.mark.parametrize("q", [0.1, 1.0, 3.0])
def test_critical_line_erf_closed_form(q):
    w = 1.0 / erf_dmsq(q)  # = (pi/4) sqrt(1 + 4q)
    b = q - w * erf_msq(q)
    line = critical_line("erf", b, offsets=())
    assert abs(line.weight_vars[0] - w) < 1e-9


def test_critical_line_chaotic_branch_erf():
    b = 0.1
    line = critical_line("erf", b, offsets=(1e-2, 1e-1, 0.5))
    assert isinstance(line, CriticalLine)
    assert line.cstar.shape == (1, 3)
    for k, off in enumerate(line.offsets):
        w = line.weight_vars[0] * (1 + off)
        assert abs(line.chaotic_weight_vars[0, k] - w) < 1e-12
        ref = erf_reference(w, b)
        assert abs(line.cstar[0, k] - ref["cstar"]) < 1e-8
        assert abs(line.chi_c[0, k] - ref["chi_c"]) < 1e-8
        assert abs(line.xi_c[0, k] - ref["xi_c"]) < 1e-6 * ref["xi_c"]
    # the branch approaches c* = 1, chi_c = 1 (xi_c diverging) towards the line
    assert np.all(np.diff(line.cstar[0]) < 0)
    assert np.all(np.diff(line.xi_c[0]) < 0)
    assert np.all(line.cstar[0] < 1.0)


def test_critical_line_bad_input():
    with pytest.raises(ValueError, match="bias_vars"):
        critical_line("tanh", -0.1)
    with pytest.raises(ValueError, match="bias_vars"):
        critical_line("tanh", [0.1, float("nan")])
    with pytest.raises(ValueError, match="offsets"):
        critical_line("tanh", 0.1, offsets=(-0.1,))
    with pytest.raises(ValueError, match="unknown activation"):
        critical_line("nope", 0.1)


# ------------------------------------------------------------------------------------------------------------------
# phase diagram
# ------------------------------------------------------------------------------------------------------------------
def test_phase_diagram_tanh_matches_scipy_quad():
    w = np.array([0.5, 0.9, 1.2, 2.0, 3.5])
    b = np.array([0.0, 0.05, 0.3])
    pd = phase_diagram("tanh", w, b)
    assert pd.chi1.shape == (3, 5) and pd.shape == (3, 5)
    for i, bb in enumerate(b):
        for j, ww in enumerate(w):
            q = qstar_tanh(ww, bb)
            assert abs(pd.qstar[i, j] - q) < 1e-9 * max(1.0, q)
            assert abs(pd.chi1[i, j] - ww * gauss_mean(sech4, q)) < 1e-9
    np.testing.assert_allclose(pd.xi_grad, -1.0 / np.log(pd.chi1), rtol=1e-12)
    assert np.array_equal(pd.chaotic, pd.chi1 > 1)
    # ordered phase: c* = 1 and chi_c = chi_1
    ordered = pd.chi1 < 1
    np.testing.assert_allclose(pd.cstar[ordered], 1.0, atol=1e-10)
    np.testing.assert_allclose(pd.chi_c[ordered], pd.chi1[ordered], rtol=1e-9)


def test_phase_diagram_erf_all_quantities_closed_form():
    w = np.array([0.4, 0.7, 1.5, 2.5])
    b = np.array([0.0, 0.1, 0.4])
    pd = phase_diagram("erf", w, b)
    for i, bb in enumerate(b):
        for j, ww in enumerate(w):
            ref = erf_reference(ww, bb)
            for name in ("qstar", "chi1", "cstar", "chi_c"):
                assert abs(pd[name][i, j] - ref[name]) < 1e-8, (name, ww, bb)
            for name in ("xi_q", "xi_c", "xi_grad"):
                assert abs(pd[name][i, j] - ref[name]) < 1e-7 * max(1.0, ref[name]), (name, ww, bb)
    np.testing.assert_allclose(pd.critical_weight_vars[0], math.pi / 4, atol=1e-9)


def test_phase_diagram_blocks_and_progress_match_single_call():
    w = np.linspace(0.5, 3.0, 7)
    b = np.linspace(0.0, 0.4, 5)
    calls = []
    one = phase_diagram("tanh", w, b)
    blocked = phase_diagram("tanh", w, b, block_rows=2, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 5), (4, 5), (5, 5)]
    for name in ("qstar", "chi1", "cstar", "chi_c", "xi_q", "xi_c", "xi_grad"):
        np.testing.assert_array_equal(one[name], blocked[name])


def test_phase_diagram_ridge_tracks_critical_line():
    w = np.linspace(0.6, 3.0, 121)  # spacing 0.02
    b = np.array([0.0, 0.1, 0.3])
    pd = phase_diagram("tanh", w, b)
    # xi_c diverges on the line, so the grid maximum is one of the two neighbouring grid points
    assert np.all(np.abs(pd.xi_c_ridge - pd.critical_weight_vars) <= 0.02 + 1e-12)


def test_phase_diagram_result_object(tmp_path):
    pd = phase_diagram("tanh", np.linspace(0.5, 3, 6), np.linspace(0, 0.5, 4))
    assert isinstance(pd, PhaseDiagram)
    with pytest.raises(dataclasses.FrozenInstanceError):
        pd.chi1 = None
    with pytest.raises(ValueError):
        pd.chi1[0, 0] = 2.0  # read-only arrays
    d = pd.to_dict()
    assert d["activation"] == "tanh" and d["chi1"].shape == (4, 6)
    path = pd.save(tmp_path / "pd")
    assert path.endswith(".npz")
    back = PhaseDiagram.load(path)
    assert back.activation == "tanh"
    assert back.complete and pd.complete
    back_d = back.to_dict()
    for k, v in d.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(back_d[k], v)
    csv = np.loadtxt(pd.to_csv(tmp_path / "pd.csv"), delimiter=",", skiprows=1)
    assert csv.shape == (24, 9)
    W, B = np.meshgrid(pd.weight_vars, pd.bias_vars)
    np.testing.assert_array_equal(csv[:, 0], W.ravel())
    np.testing.assert_array_equal(csv[:, 1], B.ravel())
    np.testing.assert_array_equal(csv[:, 3], pd.chi1.ravel())
    with pytest.raises(KeyError):
        pd["nope"]
    ax = pd.plot("chi1")
    assert ax.get_xlabel().startswith(r"$\sigma_w^2$")
    import matplotlib.pyplot as plt

    plt.close(ax.figure)


def test_phase_diagram_relu_divergence_is_reported():
    from meanfield.errors import DivergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pd = phase_diagram("relu", np.array([1.0, 1.5, 2.5, 3.0]), np.array([0.1, 0.2, 0.3]), block_rows=1)
    # one summary warning for the whole grid (not one per block), with the grid count: 2 columns x 3 rows diverge
    div = [w for w in caught if issubclass(w.category, DivergenceWarning)]
    assert len(div) == 1 and "at 6 of 12 points" in str(div[0].message)
    assert not [w for w in caught if "NaN entries" in str(w.message)]  # xi_q = NaN where q* = inf is documented
    # ordered side: closed form q* = b / (1 - w/2), chi_1 = w/2 (Cho & Saul)
    np.testing.assert_allclose(pd.qstar[:, :2], pd.bias_vars[:, None] / (1 - pd.weight_vars[None, :2] / 2),
                               rtol=1e-12)
    assert np.all(np.isnan(pd.xi_q[:, 2:]))
    np.testing.assert_allclose(pd.chi1, np.broadcast_to(pd.weight_vars / 2, pd.shape), rtol=1e-12)
    assert np.all(np.isinf(pd.qstar[:, 2:]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(weight_vars=[1.0, -1.0], bias_vars=[0.0, 0.1]), "weight_vars"),
        (dict(weight_vars=[0.0, 1.0], bias_vars=[0.0, 0.1]), "weight_vars"),
        (dict(weight_vars=[2.0, 1.0], bias_vars=[0.0, 0.1]), "increasing"),
        (dict(weight_vars=[1.0, 2.0], bias_vars=[-0.1, 0.1]), "bias_vars"),
        (dict(weight_vars=[1.0, np.nan], bias_vars=[0.0, 0.1]), "weight_vars"),
        (dict(weight_vars=[[1.0, 2.0]], bias_vars=[0.0, 0.1]), "1-D"),
        (dict(weight_vars=[], bias_vars=[0.0, 0.1]), "weight_vars"),
    ],
)
def test_phase_diagram_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        phase_diagram("tanh", **kwargs)


def test_phase_diagram_bad_types():
    with pytest.raises(TypeError):
        phase_diagram("tanh", "1,2", [0.0])
    with pytest.raises(TypeError):
        phase_diagram(3, [1.0], [0.0])
    with pytest.raises(ValueError, match="block_rows"):
        phase_diagram("tanh", [1.0], [0.0], block_rows=0)


@settings(max_examples=15, deadline=None)
@given(b=st.one_of(st.just(0.0), st.floats(1e-12, 1.0)), delta=st.floats(0.02, 0.5), side=st.sampled_from([-1, 1]))
def test_chi1_crosses_one_exactly_at_the_critical_line(b, delta, side):
    """Property: chi_1 < 1 left of w_c(b) and > 1 right of it (tanh's chi_1 increases with sigma_w^2).

    Biases in (0, 1e-12) are left out: near sigma_b^2 = 0 the line is w_c = 1 + O(b^(1/3)) and its q*-parameterization
    b = q - w E[phi^2] = O(q^3) cancels catastrophically; the core returns NaN below b ~ 1e-40 (reported)."""
    wc = critical_line("tanh", b, offsets=()).weight_vars[0]
    w = wc * (1 + side * delta)
    pd = phase_diagram("tanh", [w], [b])
    assert (pd.chi1[0, 0] > 1.0) == (side > 0)


# ------------------------------------------------------------------------------------------------------------------
# depth-scale curve and map dynamics
# ------------------------------------------------------------------------------------------------------------------
def test_depth_scale_curve_erf():
    w = np.linspace(0.3, 2.5, 12)
    curve = depth_scale_curve("erf", w, 0.05)
    assert isinstance(curve, DepthScaleCurve)
    for j, ww in enumerate(w):
        ref = erf_reference(ww, 0.05)
        assert abs(curve.xi_c[j] - ref["xi_c"]) < 1e-7 * max(1.0, ref["xi_c"])
        assert abs(curve.xi_q[j] - ref["xi_q"]) < 1e-7 * max(1.0, ref["xi_q"])
    ref_wc = optimize.brentq(lambda ww: ww * erf_dmsq(qstar_erf(ww, 0.05)) - 1, 0.5, 2.0, xtol=1e-14)
    assert abs(curve.critical_weight_var - ref_wc) < 1e-9
    d = curve.to_dict()
    assert d["bias_var"] == 0.05 and d["xi_c"].shape == (12,)
    with pytest.raises(ValueError, match="bias_var"):
        depth_scale_curve("erf", w, [0.1, 0.2])
    with pytest.raises(ValueError, match="bias_var"):
        depth_scale_curve("erf", w, -1.0)


def test_map_dynamics_erf_against_closed_form():
    ws = [0.5, 2.0]
    b = 0.3
    md = map_dynamics("erf", ws, b, depth=6, q0=(0.2, 2.0), c0=(0.0, 0.5))
    assert isinstance(md, MapDynamics)
    for i, w in enumerate(ws):
        V = lambda q: w * erf_msq(q) + b
        np.testing.assert_allclose(md.length_map[i], [V(q) for q in md.q_grid], rtol=1e-10, atol=1e-12)
        for k, q0 in enumerate(md.q0):
            q = q0
            for l in range(6):
                assert abs(md.q_layers[i, k, l] - q) < 1e-10 * max(1, q)
                q = V(q)
        qs = qstar_erf(w, b)
        assert abs(md.qstar[i] - qs) < 1e-9
        # correlation iterates at q = q*: C(c) = [w (2/pi) arcsin(2 c q/(1+2q)) + b] / q*
        C = lambda c: (w * 2 / math.pi * math.asin(2 * c * qs / (1 + 2 * qs)) + b) / qs
        np.testing.assert_allclose(md.correlation_map[i], [C(c) for c in md.c_grid], atol=1e-9)
        for k, c0 in enumerate(md.c0):
            c = c0
            for l in range(6):
                assert abs(md.c_layers[i, k, l] - c) < 1e-9
                c = C(c)
    with pytest.raises(ValueError, match="c0"):
        map_dynamics("erf", [1.0], 0.1, c0=(1.5,))
    with pytest.raises(ValueError, match="depth"):
        map_dynamics("erf", [1.0], 0.1, depth=1)
    with pytest.raises(ValueError, match="weight_vars"):
        map_dynamics("erf", [-1.0], 0.1)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_every_quantity_plots(activation):
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # relu: q* = inf in half the window (tested above)
        pd = phase_diagram(activation, np.linspace(0.5, 4, 8), np.linspace(0, 0.5, 5))
        line = critical_line(activation, pd.bias_vars, offsets=())
    for q in ("qstar", "chi1", "cstar", "chi_c", "xi_q", "xi_c", "xi_grad"):
        ax = pd.plot(q)
        assert ax.get_ylabel().startswith(r"$\sigma_b^2$")
        plt.close(ax.figure)
    ax = line.plot()
    np.testing.assert_allclose(ax.lines[0].get_xdata(), line.weight_vars)
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="quantity"):
        pd.plot("nope")


def test_tanh_depth_scales_and_chi_c_against_quad():
    """xi_q through docs/mathematics.md's form 1/xi_q = -log(chi_1 + sigma_w^2 E[phi'' phi]) and chi_c at sigma_b^2 = 0, where the
    odd tanh has c* = 0 exactly, so the two pre-activations are independent and
    chi_c = sigma_w^2 (E[phi'(sqrt(q*) z)])^2 -- both 1-D quad integrals, no 2-D quadrature needed."""
    sech2 = lambda x: 1.0 - math.tanh(x) ** 2
    phi2_phi = lambda x: -2.0 * math.tanh(x) ** 2 * (1.0 - math.tanh(x) ** 2)  # phi'' phi for tanh
    w = np.array([1.4, 2.5, 3.5])
    b = np.array([0.0, 0.2])
    pd = phase_diagram("tanh", w, b)
    for i, bb in enumerate(b):
        for j, ww in enumerate(w):
            q = qstar_tanh(ww, bb)
            vprime = ww * gauss_mean(sech4, q) + ww * gauss_mean(phi2_phi, q)
            xi_q = -1.0 / math.log(vprime)
            # d xi / d vprime = xi^2 / vprime: a 1e-12 error in vprime moves xi_q by ~1e-12 xi^2 (xi_q < 3 here)
            assert abs(pd.xi_q[i, j] - xi_q) < 1e-9
            if bb == 0.0:
                assert pd.cstar[i, j] == pytest.approx(0.0, abs=1e-12)
                chic = ww * gauss_mean(sech2, q) ** 2
                assert abs(pd.chi_c[i, j] - chic) < 1e-9
                assert abs(pd.xi_c[i, j] - (-1.0 / math.log(chic))) < 1e-8
    # V'(q*) from docs/mathematics.md's form agrees with a centred difference of the quad length map as well (O(h^2) ~ 1e-8)
    ww, bb = 2.5, 0.2
    q = qstar_tanh(ww, bb)
    h = 1e-4
    V = lambda x: ww * gauss_mean(tanh_sq, x) + bb
    fd = (V(q + h) - V(q - h)) / (2 * h)
    assert abs(fd - (ww * gauss_mean(sech4, q) + ww * gauss_mean(phi2_phi, q))) < 1e-7


def test_phase_diagram_near_c1_at_large_q_vs_mpmath():
    """Issue 11: the phase diagram shares the core's correlation-map kernels, so at gelu (1.995, 2) -- q* ~ 795,
    c* ~ 1 - 1.8e-4, where the truncated Mehler series used to give c* off by 6e-6 and chi_c by 1.3e-4 -- it must agree
    with the 1-D reduced mpmath pair integral (tests/_reference.mp_gelu_pair): c* and q* by one Newton step of the
    mpmath maps from the diagram's values. c* is conditioned by 1/(1 - chi_c) ~ 730 on ~1e-15 map errors: tolerance
    1e-11; chi_c 1e-10 relative (see tests/test_forward.py for the full budget)."""
    import mpmath as mp

    from tests._reference import mp_expect, mp_gelu_pair

    wv, bv = 1.995, 2.0
    pd = phase_diagram("gelu", [1.9, wv], [0.0, bv])
    qs, cs, chic = float(pd.qstar[1, 1]), float(pd.cstar[1, 1]), float(pd.chi_c[1, 1])
    q = mp.mpf(qs)
    V = wv * mp_expect("gelu", q, dps=20) + bv
    dV = wv * (mp_expect("gelu", q, 1, 1, dps=20) + mp_expect("gelu", q, 2, 0, dps=20))
    q = q - (V - q) / (dV - 1)
    c = mp.mpf(cs)
    c_ref = c - ((wv * mp_gelu_pair(q, c, 0) + bv) / q - c) / (wv * mp_gelu_pair(q, c, 1) - 1)
    assert cs == pytest.approx(float(c_ref), abs=1e-11)
    assert chic == pytest.approx(float(wv * mp_gelu_pair(q, c_ref, 1)), rel=1e-10)


def test_phase_diagram_keeps_its_activation(tmp_path):
    """In memory a result keeps its Activation (custom ones too); a file keeps the name, and a custom activation is
    reattached by passing it to load (without it: a warning and activation_object None)."""
    from meanfield.activations import custom_activation, get_activation

    act = custom_activation("scaled_tanh", lambda x: 1.5 * math.tanh(x))
    w, b = np.linspace(0.3, 1.5, 5), np.array([0.0, 0.1, 0.2])
    pd = phase_diagram(act, w, b)
    assert pd.activation == "scaled_tanh" and pd.activation_object is act
    assert depth_scale_curve(act, w, 0.1).activation_object is act
    assert critical_line(act, [0.1], offsets=()).activation_object is act
    wc, bc = pd.critical_line_points()  # refined near b = 0 with the custom activation itself
    assert wc.size > b.size and bc[0] == 0.0 and np.all(np.diff(bc) > 0)
    path = pd.save(tmp_path / "custom")
    with pytest.warns(UserWarning, match="custom activation 'scaled_tanh'"):
        back = PhaseDiagram.load(path)
    assert back.activation == "scaled_tanh" and back.activation_object is None
    np.testing.assert_array_equal(back.critical_line_points()[0], pd.critical_weight_vars)
    again = PhaseDiagram.load(path, activation=act)
    assert again.activation_object is act
    with pytest.raises(ValueError, match="scaled_tanh"):
        PhaseDiagram.load(path, activation="tanh")
    # a built-in (with a parameter) is rebuilt from the file
    pd2 = phase_diagram("leaky_relu", [1.0, 1.5], [0.1], activation_params={"slope": 0.2})
    back2 = PhaseDiagram.load(pd2.save(tmp_path / "lrelu"))
    assert back2.activation_object == get_activation("leaky_relu", slope=0.2)


def test_plotting_imports_no_phase():
    """plotting draws result objects and computes nothing: it imports no meanfield module that computes (no circle
    with phase)."""
    import ast
    import inspect

    import meanfield.plotting as plotting

    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(plotting))):
        if isinstance(node, ast.ImportFrom):
            imported.add(("." * node.level) + (node.module or ""))
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert not {m for m in imported if m.startswith(".") or m.startswith("meanfield")} - {"._io"}
