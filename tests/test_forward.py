"""Forward order parameters against independent routes (mpmath 30 digits, scipy adaptive quadrature, closed forms)
and the invariants of the maps.

Error budget: q*, chi_1, V'(q*) come from 1-D integrals accurate to ~1e-15 and a root solved to 8 ulp; c*, chi_c from
Mehler series truncated below 1e-17; the mpmath references are exact to 25+ digits and the scipy 2-D reference to
~1e-12 absolute (QUADPACK with epsabs 1e-15 per level), hence the 1e-10 tolerances (the issue's requirement).
"""
import math
import warnings

import mpmath as mp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import optimize

import meanfield as mf
from tests._reference import mp_expect, mp_qstar, scipy_pair

SMOOTH = ["tanh", "erf", "sigmoid", "gelu", "softplus", "silu"]
# (weight_var, bias_var) in the ordered and (where one exists at these values) chaotic phase; gelu/softplus/silu
# are unbounded, so their chaotic points must keep q finite (weight_var below 2 / (slope^2 + ...)).
POINTS = {
    "tanh": [(1.5, 0.05), (3.0, 0.3)],
    "erf": [(1.0, 0.1), (2.5, 0.05)],
    "sigmoid": [(4.0, 0.5), (120.0, 0.1)],
    "gelu": [(1.0, 0.1), (1.9, 0.05)],
    "softplus": [(1.0, 0.2), (1.5, 0.0)],
    "silu": [(1.5, 0.1), (1.95, 0.02)],  # unbounded: the second points are ordered too (see test_cstar_chic_vs_scipy)
}


@pytest.mark.parametrize("name", SMOOTH)
def test_qstar_chi1_xiq_vs_mpmath(name):
    for wv, bv in POINTS[name]:
        fp = mf.fixed_point(name, wv, bv)
        ref_q = mp_qstar(name, wv, bv, fp.q_star * (1 + 1e-3) + 1e-6)
        assert fp.q_star == pytest.approx(float(ref_q), rel=1e-10), (name, wv, bv)
        ref_chi = wv * mp_expect(name, ref_q, 1, 1)
        assert fp.chi_1 == pytest.approx(float(ref_chi), rel=1e-10)
        # V'(q*) = chi_1 + sigma_w^2 E[phi'' phi] (MATH.md), evaluated with mpmath's phi''
        ref_vp = ref_chi + wv * mp_expect(name, ref_q, 2, 0)
        assert fp.vprime == pytest.approx(float(ref_vp), rel=1e-10)
        assert fp.xi_q == pytest.approx(float(-1 / mp.log(ref_vp)), rel=1e-10)


def _scipy_cstar(name, wv, bv, q, c0):
    C = lambda c: (wv * scipy_pair(name, q, q, c * q) + bv) / q - c
    lo, hi = max(c0 - 2e-3, -1.0), min(c0 + 2e-3, 1 - 1e-9)
    return optimize.brentq(C, lo, hi, xtol=1e-14, rtol=1e-14)


@pytest.mark.parametrize("name,rho", [("tanh", 1.0), ("sigmoid", 1.0), ("gelu", 0.9), ("silu", 0.9),
                                      ("softplus", 0.8)])
def test_cstar_chic_vs_scipy(name, rho):
    """c* < 1 and chi_c against scipy's adaptive quadrature + Brent root (independent algorithms). tanh and sigmoid
    in their chaotic phase; gelu, silu and softplus have no chaotic phase with finite q* (they grow like relu), so
    they are tested with dropout, which makes c* < 1 everywhere."""
    wv, bv = POINTS[name][1] if rho == 1.0 else POINTS[name][0]
    fp = mf.fixed_point(name, wv, bv, dropout_keep=rho)
    assert fp.c_star < 1 and (fp.chi_1 > 1 or rho < 1)
    cs = _scipy_cstar(name, wv, bv, fp.q_star, fp.c_star)
    assert fp.c_star == pytest.approx(cs, rel=1e-10, abs=1e-12)
    ref_chic = wv * scipy_pair(name, fp.q_star, fp.q_star, cs * fp.q_star, order=1)
    assert fp.chi_c == pytest.approx(ref_chic, rel=1e-10)
    assert fp.xi_c == pytest.approx(-1 / math.log(ref_chic), rel=1e-9)


def test_erf_closed_form_fixed_points():
    """erf: closed forms (Williams) give q* and chi_1 via a scalar root of the closed-form length map."""
    wv, bv = 2.5, 0.05
    V = lambda q: wv * 2 / math.pi * math.asin(2 * q / (1 + 2 * q)) + bv
    q = optimize.brentq(lambda q: V(q) - q, 1e-6, 10, xtol=1e-15, rtol=1e-15)
    fp = mf.fixed_point("erf", wv, bv)
    assert fp.q_star == pytest.approx(q, rel=1e-13)
    assert fp.chi_1 == pytest.approx(wv * 4 / math.pi / math.sqrt((1 + 2 * q) ** 2 - 4 * q * q), rel=1e-13)
    C = lambda c: (wv * 2 / math.pi * math.asin(2 * c * q / (1 + 2 * q)) + bv) / q - c
    assert fp.c_star == pytest.approx(optimize.brentq(C, 0, 1 - 1e-6, xtol=1e-15), rel=1e-13)


def test_relu_closed_forms():
    assert mf.qstar("relu", 1.5, 0.1) == pytest.approx(0.1 / (1 - 0.75), rel=1e-14)
    assert mf.chi1("relu", 1.5, 0.1) == pytest.approx(0.75, rel=1e-14)
    # arc-cosine c-map: C(c) = (w/2pi (sqrt(1-c^2) + (pi - acos c) c) q + b) / q
    w, b = 1.2, 0.3
    q = b / (1 - w / 2)
    for c in [-0.5, 0.0, 0.7]:
        ref = (w / (2 * math.pi) * (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) * q + b) / q
        assert mf.correlation_map("relu", c, w, b) == pytest.approx(ref, rel=1e-14)
    lk = mf.get_activation("leaky_relu", slope=0.2)
    assert mf.critical_weight_var(lk, 0.4) == pytest.approx(2 / 1.04, rel=1e-15)


def test_known_critical_points():
    assert mf.critical_weight_var("tanh", 0.0) == pytest.approx(1.0, rel=1e-14)
    assert mf.critical_weight_var("erf", 0.0) == pytest.approx(math.pi / 4, rel=1e-14)
    np.testing.assert_allclose(mf.critical_weight_var("relu", [0.0, 0.1, 1.0, 3.0]), 2.0, rtol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.DivergenceWarning)
        np.testing.assert_allclose(mf.chi1("relu", 2.0, [0.0, 0.1, 1.0]), 1.0, rtol=1e-15)


def test_softplus_has_no_critical_line():
    """softplus: q* is finite only for weight_var < 2 (V(q) ~ weight_var q / 2), where chi_1 < weight_var / 2 < 1, so
    there is no finite critical point: NaN with a warning."""
    with pytest.warns(mf.NoCriticalPointWarning):
        assert np.isnan(mf.critical_weight_var("softplus", 0.1))


@pytest.mark.parametrize("name", ["tanh", "erf", "sigmoid", "gelu", "silu", "hard_tanh", "elu"])
def test_chi1_is_one_on_critical_line(name):
    """chi_1 = 1 to 1e-10 at the returned critical point, with q* found independently by the fixed-point solver
    started from the critical line's q* (unbounded activations may have other fixed points too)."""
    bvs = np.array([0.01, 0.05, 0.2, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.NoCriticalPointWarning)
        wc, qc = mf.critical_weight_var(name, bvs, return_qstar=True)
    ok = np.isfinite(wc)
    assert ok.sum() >= 1
    q = mf.qstar(name, wc[ok], bvs[ok], q_init=qc[ok] * (1 + 1e-6))
    np.testing.assert_allclose(q, qc[ok], rtol=1e-10)
    np.testing.assert_allclose(mf.chi1(name, wc[ok], bvs[ok], q_init=qc[ok]), 1.0, rtol=1e-10, atol=0)
    if name in ("tanh", "erf", "sigmoid", "hard_tanh"):  # bounded: a single fixed point, every entry exists
        assert ok.all()
        np.testing.assert_allclose(mf.chi1(name, wc, bvs), 1.0, rtol=1e-10, atol=0)


def test_critical_line_vs_scipy_brentq():
    """Independent route: scipy brentq on chi_1(w) - 1, chi_1 from mpmath q* (tanh, bias 0.05)."""
    def chi_minus_one(w):
        q = mp_qstar("tanh", w, 0.05, 0.5)
        return float(w * mp_expect("tanh", q, 1, 1, dps=25)) - 1
    ref = optimize.brentq(chi_minus_one, 1.0, 2.0, xtol=1e-13)
    assert mf.critical_weight_var("tanh", 0.05) == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("name", ["tanh", "erf", "relu", "sigmoid", "hard_tanh", "gelu"])
def test_chi1_equals_finite_difference_of_cmap(name):
    """chi_1 = dC/dc at c = 1. Second-order one-sided difference, h = 1e-4: error h^2 C'''/3 ~ 1e-8 for smooth maps;
    the relu-family c-map has C'' ~ (1-c)^(-1/2) at c = 1, so its error is O(sqrt(h)) ~ 1e-2 (checked to that)."""
    wv, bv = (1.7, 0.1) if name != "sigmoid" else (20.0, 0.1)
    h = 1e-4
    C = lambda c: mf.correlation_map(name, c, wv, bv)
    fd = (3 * C(1.0) - 4 * C(1 - h) + C(1 - 2 * h)) / (2 * h)
    tol = 5e-2 if name in ("relu", "hard_tanh") else 1e-7
    assert fd == pytest.approx(mf.chi1(name, wv, bv), rel=tol)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["tanh", "erf", "relu", "sigmoid", "hard_tanh", "softplus", "gelu"]),
       st.floats(0.1, 4.0), st.floats(0.0, 1.0), st.lists(st.floats(-1.0, 1.0), min_size=2, max_size=6))
def test_cmap_maps_interval_into_itself(name, wv, bv, cs):
    """C maps [-1, 1] into itself, C(1) = 1 and C is non-decreasing for monotone activations (phi' >= 0 makes
    dC/dc = sigma_w^2 E[phi'(u)phi'(v)] >= 0)."""
    if name == "sigmoid":
        wv *= 10
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.DivergenceWarning)
        q = mf.qstar(name, wv, bv)
    assume(np.isfinite(q) and q > 0)  # C(1) = V(q)/q is 1 only at the fixed point
    c = np.sort(np.asarray(cs))
    Cc, dC = mf.correlation_map(name, c, wv, bv, q=q * np.ones_like(c), return_derivative=True)
    assert np.all(Cc <= 1 + 1e-12) and np.all(Cc >= -1 - 1e-12)
    assert np.all(np.diff(Cc) >= -1e-13)
    assert np.all(dC >= -1e-15)
    assert mf.correlation_map(name, 1.0, wv, bv) == pytest.approx(1.0, abs=1e-13)


def test_xi_c_diverges_at_criticality():
    bv = 0.05
    wc = mf.critical_weight_var("tanh", bv)
    eps = np.array([1e-1, 1e-2, 1e-3, 1e-4])
    xi_below = mf.depth_scales("tanh", wc * (1 - eps), bv).xi_c
    xi_above = mf.depth_scales("tanh", wc * (1 + eps), bv).xi_c
    assert np.all(np.diff(xi_below) > 0) and np.all(np.diff(xi_above) > 0)
    # 1/xi_c = -log chi_c ~ |chi_1 - 1| ~ |w - w_c|: xi_c * eps tends to a constant
    r = xi_below * eps
    assert r[-1] == pytest.approx(r[-2], rel=2e-2)
    assert xi_below[-1] > 1e3 and xi_above[-1] > 1e3


def test_xi_grad_sign_and_depth_scales_iterable():
    xq, xc, xg = mf.depth_scales("tanh", [0.8, 2.0], 0.0)
    assert xg[0] > 0 and xg[1] < 0 and np.all(xc > 0)


def test_depth_scale_xi_q_matches_iteration():
    """|q^l - q*| decays like exp(-l / xi_q): measure the ratio of successive deviations of the iterated map."""
    wv, bv = 2.0, 0.1
    fp = mf.fixed_point("tanh", wv, bv)
    q = fp.q_star + 1e-3
    devs = []
    for _ in range(12):
        q = mf.length_map("tanh", q, wv, bv)
        devs.append(q - fp.q_star)
    ratio = devs[-1] / devs[-2]
    assert ratio == pytest.approx(math.exp(-1 / fp.xi_q), rel=1e-5)  # nonlinear correction ~ deviation ~ 1e-8


def test_relu_chaotic_q_diverges_with_warning():
    with pytest.warns(mf.DivergenceWarning, match="q diverges"):
        q = mf.qstar("relu", 2.5, 0.1)
    assert q == math.inf
    with pytest.warns(mf.DivergenceWarning):
        fp = mf.fixed_point("relu", [1.0, 2.5], 0.1)
    assert np.isfinite(fp.q_star[0]) and np.isinf(fp.q_star[1])
    assert not np.any(np.isnan(fp.chi_1)) and not np.any(np.isnan(fp.c_star))


def test_dropout():
    """Dropout: relu closed form q* = b / (1 - w/(2 rho)); c = 1 is no longer fixed, c* < 1, xi_c finite even at the
    dropout-free critical point (Schoenholz et al. 2017)."""
    rho = 0.9
    assert mf.qstar("relu", 1.0, 0.1, dropout_keep=rho) == pytest.approx(0.1 / (1 - 1 / (2 * rho)), rel=1e-14)
    assert mf.correlation_map("tanh", 1.0, 1.5, 0.05, dropout_keep=rho) < 1
    wc = mf.critical_weight_var("tanh", 0.05)
    fp = mf.fixed_point("tanh", wc, 0.05, dropout_keep=0.99)
    assert fp.c_star < 1 and np.isfinite(fp.xi_c)
    # c* is a fixed point of the dropout c-map
    assert mf.correlation_map("tanh", fp.c_star, wc, 0.05, dropout_keep=0.99) == pytest.approx(fp.c_star, abs=1e-13)
    # chi_c is the slope there (finite difference, h = 1e-6: error ~ h C'' ~ 1e-6)
    h = 1e-6
    slope = (mf.correlation_map("tanh", fp.c_star + h, wc, 0.05, dropout_keep=0.99)
             - mf.correlation_map("tanh", fp.c_star - h, wc, 0.05, dropout_keep=0.99)) / (2 * h)
    assert slope == pytest.approx(fp.chi_c, rel=1e-7)


def test_vectorised_matches_scalar():
    w = np.array([[0.5, 1.5], [2.5, 3.5]])
    b = np.array([0.0, 0.2])
    fp = mf.fixed_point("tanh", w, b)
    assert fp.q_star.shape == (2, 2)
    for i in range(2):
        for j in range(2):
            assert fp.c_star[i, j] == mf.cstar("tanh", w[i, j], b[j])


def test_bad_input_names_parameter():
    with pytest.raises(ValueError, match="weight_var"):
        mf.qstar("tanh", -1.0, 0.0)
    with pytest.raises(ValueError, match="bias_var"):
        mf.chi1("tanh", 1.0, -0.1)
    with pytest.raises(ValueError, match=r"c must lie in \[-1, 1\]"):
        mf.correlation_map("tanh", 1.2, 1.0, 0.1)
    with pytest.raises(ValueError, match="dropout_keep"):
        mf.qstar("tanh", 1.0, 0.1, dropout_keep=0.0)
    with pytest.raises(ValueError, match="dropout_keep"):
        mf.qstar("tanh", 1.0, 0.1, dropout_keep=1.5)
    with pytest.raises(ValueError, match="finite"):
        mf.qstar("tanh", np.nan, 0.1)
    with pytest.raises(ValueError, match="known activations"):
        mf.qstar("tanhh", 1.0, 0.1)
    with pytest.raises(ValueError, match="q"):
        mf.length_map("tanh", -1.0, 1.0, 0.0)
    with pytest.raises(TypeError, match="weight_var"):
        mf.qstar("tanh", "big", 0.0)
