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
from tests._reference import mp_expect, mp_gelu_pair, mp_qstar, scipy_pair

SMOOTH = ["tanh", "erf", "sigmoid", "gelu", "softplus", "silu", "mish"]
# (weight_var, bias_var) in the ordered and (where one exists at these values) chaotic phase; gelu/softplus/silu
# are unbounded, so their chaotic points must keep q finite (weight_var below 2 / (slope^2 + ...)).
POINTS = {
    "tanh": [(1.5, 0.05), (3.0, 0.3)],
    "erf": [(1.0, 0.1), (2.5, 0.05)],
    "sigmoid": [(4.0, 0.5), (120.0, 0.1)],
    "gelu": [(1.0, 0.1), (1.9, 0.05)],
    "softplus": [(1.0, 0.2), (1.5, 0.0)],
    "silu": [(1.5, 0.1), (1.95, 0.02)],  # unbounded: the second points are ordered too (see test_cstar_chic_vs_scipy)
    "mish": [(1.2, 0.1)],
}


@pytest.mark.parametrize("name", SMOOTH)
def test_qstar_chi1_xiq_vs_mpmath(name):
    for wv, bv in POINTS[name]:
        fp = mf.fixed_point(name, wv, bv)
        ref_q = mp_qstar(name, wv, bv, fp.q_star * (1 + 1e-3) + 1e-6)
        assert fp.q_star == pytest.approx(float(ref_q), rel=1e-10), (name, wv, bv)
        ref_chi = wv * mp_expect(name, ref_q, 1, 1)
        assert fp.chi_1 == pytest.approx(float(ref_chi), rel=1e-10)
        # V'(q*) = chi_1 + sigma_w^2 E[phi'' phi] (docs/mathematics.md), evaluated with mpmath's phi''
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
    # q* is resolved to an ulp, so C(1) = V(q*)/q* = 1 + (1 - V'(q*)) dq/q* to within 2 ulp(q*)/q*: 2e-16 for normal
    # q*, up to ~1e-11 for a subnormal one (bias_var ~ 1e-313 gives q* ~ 3e-313, whose ulp is 1.7e-11 of it)
    grain = 2.0 * np.spacing(q) / q
    c = np.sort(np.asarray(cs))
    Cc, dC = mf.correlation_map(name, c, wv, bv, q=q * np.ones_like(c), return_derivative=True)
    assert np.all(Cc <= 1 + 1e-12 + grain) and np.all(Cc >= -1 - 1e-12)
    assert np.all(np.diff(Cc) >= -1e-13 - grain)
    assert np.all(dC >= -1e-15)
    assert mf.correlation_map(name, 1.0, wv, bv) == pytest.approx(1.0, abs=1e-13 + grain)


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


# ------------------------------------------------------------------------------------------------------------------
# issue 11: the correlation map near |c| = 1 at large q, |V'(q*)| in xi_q, chi_1 against the c-map slope under dropout

def _mp_qstar_newton(name, wv, bv, q):
    """One Newton step of the mpmath length map from q (quadratic: q's error of ~1e-13 leaves ~1e-24)."""
    V = wv * mp_expect(name, q) + bv
    dV = wv * (mp_expect(name, q, 1, 1) + mp_expect(name, q, 2, 0))
    return q - (V - q) / (dV - 1), dV


def test_gelu_cstar_chic_xic_at_large_q_vs_mpmath():
    """gelu at weight_var 1.995, bias_var 2 (q* ~ 795, chaotic, c* ~ 1 - 1.8e-4): before the fix the truncated Mehler
    series (4000 terms; its Parseval tail is ~1e-4 E[phi'^2] there) gave c* off by 6e-6, chi_c by 1.3e-4, xi_c by
    8.6%. Reference: the 1-D reduction of the gelu pair integral (inner integral closed, mp_gelu_pair), q* and c* by
    one Newton step of the mpmath maps from meanfield's values.

    Error budget: the maps are evaluated to ~1e-15 relative; c* is conditioned by 1/(1 - chi_c) ~ 730, so c* is good
    to ~1e-12 (tolerance 1e-11); chi_c inherits C''(c*) * dc* ~ 1e-12 (tolerance 1e-10 relative); xi_c = -1/log chi_c
    has relative error rel(chi_c) / |log chi_c| (|log chi_c| = 1.4e-3), hence its tolerance 1e-10 / |log chi_c|."""
    wv, bv = 1.995, 2.0
    fp = mf.fixed_point("gelu", wv, bv)
    q, _ = _mp_qstar_newton("gelu", wv, bv, mp.mpf(fp.q_star))
    assert fp.q_star == pytest.approx(float(q), rel=1e-12)
    c = mp.mpf(fp.c_star)
    G = (wv * mp_gelu_pair(q, c, 0) + bv) / q - c
    c_ref = c - G / (wv * mp_gelu_pair(q, c, 1) - 1)
    chic_ref = wv * mp_gelu_pair(q, c_ref, 1)
    assert fp.c_star == pytest.approx(float(c_ref), abs=1e-11)
    assert fp.chi_c == pytest.approx(float(chic_ref), rel=1e-10)
    xi_ref = float(-1 / mp.log(chic_ref))
    assert fp.xi_c == pytest.approx(xi_ref, rel=1e-10 / abs(math.log(float(chic_ref))))


def test_gelu_cmap_across_the_mehler_range_vs_mpmath():
    """C(c) and dC/dc at q = 795 on both sides of where the Mehler tail bound hands over to the nested quadrature
    (|c| ~ 0.995 here) and at c = 1 (1-D integrals). Each route is good to ~1e-15 relative; tolerance 1e-13."""
    q = 795.0
    c = np.array([0.99, 0.99999, 1.0, -0.999])
    C, D = mf.correlation_map("gelu", c, 1.0, 0.0, q=q, return_derivative=True)
    for ci, Ci, Di in zip(c, C, D):
        assert Ci * q == pytest.approx(float(mp_gelu_pair(q, ci, 0)), rel=1e-13), ci
        assert Di == pytest.approx(float(mp_gelu_pair(q, ci, 1)), rel=1e-13), ci


@pytest.mark.parametrize("name,q", [("tanh", 100.0), ("silu", 370.0), ("sigmoid", 1000.0), ("softplus", 1000.0)])
def test_cmap_at_c1_large_q_vs_mpmath(name, q):
    """C(1) = E[phi^2] / q and dC/dc(1) = E[phi'^2] (weight_var 1, bias 0) against mpmath 1-D integrals. Before the
    fix: tanh at q = 100 off by 4e-10 (C) and 3e-7 (dC/dc), silu at q = 370 by ~1e-10, sigmoid and softplus at
    q = 1000 by up to 2e-4. 1-D quadrature ~1e-15 relative: tolerance 1e-13."""
    C, D = mf.correlation_map(name, 1.0, 1.0, 0.0, q=q, return_derivative=True)
    assert C * q == pytest.approx(float(mp_expect(name, q, 0, 0, dps=20)), rel=1e-13)
    assert D == pytest.approx(float(mp_expect(name, q, 1, 1, dps=20)), rel=1e-13)


def test_xi_q_from_negative_vprime_vs_mpmath():
    """phi = cos: E[cos(sqrt(q) z)^2] = (1 + exp(-2q))/2 decreases with q, so V'(q*) = -weight_var exp(-2 q*) < 0
    (no built-in activation has a decreasing E[phi^2]). xi_q = -1/log|V'(q*)| (it was 0.0 before). Reference: q* by
    mpmath findroot on the closed-form length map, V' by mpmath differentiation. q* and V' come from 1-D integrals
    good to ~1e-15: tolerance 1e-12 (xi_q ~ 0.66 is well conditioned: d xi / xi = d V' / (V' log|V'|))."""
    cos = mf.custom_activation("cos", lambda x: math.cos(x), lambda x: -math.sin(x), lambda x: -math.cos(x),
                               scale=1.0)
    wv, bv = 1.5, 0.1
    with mp.workdps(30):
        V = lambda q: wv * (1 + mp.exp(-2 * q)) / 2 + bv
        qs = mp.findroot(lambda q: V(q) - q, mp.mpf(1))
        vp = mp.diff(V, qs)
    assert vp < 0
    fp = mf.fixed_point(cos, wv, bv)
    assert fp.q_star == pytest.approx(float(qs), rel=1e-12)
    assert fp.vprime == pytest.approx(float(vp), rel=1e-12)
    assert fp.xi_q == pytest.approx(float(-1 / mp.log(-vp)), rel=1e-12)
    assert mf.depth_scales(cos, wv, bv).xi_q == fp.xi_q
    # |q^l - q*| ~ |V'|^l, alternating in sign (the convention's meaning)
    d = [mf.length_map(cos, fp.q_star + 1e-4, wv, bv) - fp.q_star]
    d.append(mf.length_map(cos, fp.q_star + d[0], wv, bv) - fp.q_star)
    assert d[0] < 0 < d[1] and d[1] / d[0] == pytest.approx(-math.exp(-1 / fp.xi_q), rel=1e-3)  # O(deviation)


def test_dropout_chi1_and_c_map_slope_vs_mpmath():
    """Under dropout (rho = 0.8) chi_1 = (weight_var/rho) E[phi'^2] (gradient-norm ratio) and the c-map slope at
    c = 1, weight_var E[phi'^2], differ by rho. Reference: q* of the mpmath dropout length map, E[phi'^2] in mpmath
    (1-D, 1e-15: tolerance 1e-12). The dropout critical line is chi_1 = 1 (module docstring): checked on the mpmath
    map at the returned weight variance."""
    wv, bv, rho = 1.5, 0.05, 0.8
    fp = mf.fixed_point("tanh", wv, bv, dropout_keep=rho)
    q = mp_qstar("tanh", wv / rho, bv, fp.q_star)
    e1 = mp_expect("tanh", q, 1, 1)
    assert fp.chi_1 == pytest.approx(float(wv / rho * e1), rel=1e-12)
    assert fp.c_map_slope == pytest.approx(float(wv * e1), rel=1e-12)
    assert mf.chi1("tanh", wv, bv, dropout_keep=rho) == fp.chi_1
    assert mf.c_map_slope("tanh", wv, bv, dropout_keep=rho) == fp.c_map_slope
    _, d1 = mf.correlation_map("tanh", 1.0, wv, bv, dropout_keep=rho, return_derivative=True)
    assert d1 == pytest.approx(fp.c_map_slope, rel=1e-14)
    no_drop = mf.fixed_point("tanh", wv, bv)
    assert no_drop.c_map_slope == no_drop.chi_1
    wc = mf.critical_weight_var("tanh", bv, dropout_keep=rho)
    qc = mp_qstar("tanh", wc / rho, bv, 0.5)
    assert float(wc / rho * mp_expect("tanh", qc, 1, 1)) == pytest.approx(1.0, rel=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mf.DivergenceWarning)
        relu = mf.fixed_point("relu", 2.4, 0.1, dropout_keep=rho)   # q* = inf: the limiting map's slope is rho
    assert relu.c_map_slope == pytest.approx(rho, rel=1e-15) and relu.chi_1 == pytest.approx(2.4 / rho / 2, rel=1e-15)


def test_selu_chi_c_at_zero_qstar_is_the_one_sided_mean():
    """At q* = 0 (bias 0) chi_c of selu is the q -> 0 limit sigma_w^2 (phi'(0-)^2 + phi'(0+)^2)/2
    = sigma_w^2 lambda^2 (1 + alpha^2)/2, not sigma_w^2 phi'(0-)^2 (0.927 at weight_var 0.3; issue 11 item 2).
    Reference: the analytic value in 30-digit mpmath; the library forms two products of doubles and their mean
    (a few ulp), tolerance 1e-14."""
    from tests._reference import SELU_A, SELU_L

    ref = float(mp.mpf(0.3) * SELU_L ** 2 * (1 + SELU_A ** 2) / 2)
    fp = mf.fixed_point("selu", 0.3, 0.0)
    assert fp.q_star == 0.0 and fp.c_star == 1.0
    assert fp.chi_c == pytest.approx(ref, rel=1e-14)
    assert mf.chi_c("selu", 0.3, 0.0) == pytest.approx(ref, rel=1e-14)
    assert fp.chi_1 == pytest.approx(ref, rel=1e-14)


def test_length_map_overflow_warns():
    """V(q) beyond the float64 range is returned as inf with a DivergenceWarning (it was silent); a huge but finite
    value is exact (relu closed form sigma_w^2 q / 2 + sigma_b^2) and silent."""
    from meanfield.errors import DivergenceWarning

    with pytest.warns(DivergenceWarning, match="exceeds the float64 range"):
        assert mf.length_map("relu", 1e300, 1e300, 0.0) == math.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mf.length_map("relu", 1e300, 1.5, 0.05) == pytest.approx(7.5e299, rel=1e-15)
    with pytest.warns(DivergenceWarning):
        mf.correlation_map("relu", 0.5, 1.0, 1e300, q=1e-10)      # sigma_b^2 / q = 1e310


def _mp_qstar_small(name, wv, bv, q_guess, dps):
    """Fixed point of V(q) = wv E[phi^2] + bv by mpmath at dps digits; E[phi^2] by mpmath quadrature (tanh) or the
    closed form (1 - e^(-2q))/2 (sin)."""
    with mp.workdps(dps):
        if name == "sin":
            e = lambda q: (1 - mp.exp(-2 * q)) / 2  # noqa: E731
        else:
            e = lambda q: mp_expect(name, q, dps=dps)  # noqa: E731
        return mp.findroot(lambda q: wv * e(q) + bv - q, mp.mpf(q_guess), tol=mp.mpf(10) ** (-dps + 5))


@pytest.mark.parametrize("bv", [1e-20, 1e-12, 1e-6, 1e-4])
def test_qstar_tanh_critical_tiny_bias_vs_mpmath(bv):
    """At weight_var 1 (critical at q = 0) V(q) - q = bv - 2q^2 + O(q^3) sinks below the rounding of V(q) (~eps q):
    q* ~ sqrt(bv/2) was lost (bv = 1e-20 gave a relative error 1e-6, bv = 1e-300 a wrong exponent). Below q = 0.005
    the library sums V(q) - q from the Taylor series of E[tanh^2]; above, the direct route's error is
    ~ eps q / |F'(q*)| = eps/4 absolute, 3e-15 relative at bv = 1e-4. Reference: mpmath findroot with quadrature at
    40 digits (the cancellation costs at most 10 of them). Tolerance 1e-13."""
    q = mf.qstar("tanh", 1.0, bv)
    ref = _mp_qstar_small("tanh", 1.0, bv, math.sqrt(bv / 2), 40)
    assert q == pytest.approx(float(ref), rel=1e-13)


def test_qstar_critical_bias_1e300():
    """bv = 1e-300: tanh (weight_var 1) against the expansion q* = r (1 + 17 r / 12 + O(r^2)), r = sqrt(bv/2) (from
    E[tanh^2 u] = q - 2q^2 + 17q^3/3 - ...; the dropped term is ~1e-300 relative); sin (weight_var 1) against mpmath
    findroot on the closed form at 700 digits. Both roots are well conditioned once F is summed without
    cancellation (relative error ~ eps): tolerance 1e-14."""
    with mp.workdps(50):
        r = mp.sqrt(mp.mpf(1e-300) / 2)
        ref_tanh = r * (1 + 17 * r / 12)
    assert mf.qstar("tanh", 1.0, 1e-300) == pytest.approx(float(ref_tanh), rel=1e-14)
    ref_sin = _mp_qstar_small("sin", 1.0, 1e-300, 1e-150, 700)
    assert mf.qstar("sin", 1.0, 1e-300) == pytest.approx(float(ref_sin), rel=1e-14)
    # and erf at its (float) critical weight variance pi/4, where also the linear term (w 4/pi - 1) q matters
    w = math.pi / 4
    with mp.workdps(700):
        ref_erf = mp.findroot(lambda q: w * 2 / mp.pi * mp.asin(2 * q / (1 + 2 * q)) + mp.mpf(1e-300) - q,
                              mp.mpf(mf.qstar("erf", w, 1e-300)) * (1 + mp.mpf(10) ** -3), tol=mp.mpf(10) ** -690)
    assert mf.qstar("erf", w, 1e-300) == pytest.approx(float(ref_erf), rel=1e-13)


def test_precision_warning_near_q0_end_of_critical_line():
    """Activations without the small-q series (selu here, at its critical weight variance for bias 0) get a
    PrecisionWarning for q* at a tiny bias instead of a silently imprecise value; tanh (series) gets none, and is
    right (checked against the expansion in test_qstar_critical_bias_1e300)."""
    from meanfield.errors import PrecisionWarning
    from tests._reference import SELU_A, SELU_L

    w = float(2 / (SELU_L ** 2 * (1 + SELU_A ** 2)))
    with pytest.warns(PrecisionWarning, match="critical line"):
        mf.qstar("selu", w, 1e-30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mf.qstar("tanh", 1.0, 1e-30)
        mf.qstar("selu", 1.5, 0.05)


def test_tanh_cstar_at_huge_qstar_is_fast_and_right():
    """tanh at weight_var 1e300, bias 0: c* = 0 (C(0) = sigma_w^2 E[tanh]^2 / q* = 0) and chi_c = sigma_w^2 E[sech^2]^2.
    The Mehler setup took seconds at q* ~ 1e300 (hostile hunt); c* = 0 is now found from two 1-D integrals.
    Reference by asymptotics: E[sech^2(sqrt(q) z)] = (2/sqrt(2 pi q)) (1 + O(1/q)) and q* = sigma_w^2 (1 - O(q^-1/2)),
    so chi_c = 2 sigma_w^2 / (pi q*) = 2/pi to a relative 1e-150; the library's 1-D quadrature is good to ~1e-15.
    Tolerance 1e-12."""
    fp = mf.fixed_point("tanh", 1e300, 0.0)    # (its speed is not asserted here: tests make no timing claims)
    assert fp.c_star == 0.0
    assert fp.q_star == pytest.approx(1e300, rel=1e-14)
    assert fp.chi_c == pytest.approx(2 / math.pi, rel=1e-12)


def test_qstar_overflowing_start_does_not_hang():
    """qstar('linear', 1e300, 1.8e308) looped forever (the start weight_var + bias_var overflows, V(q) - q = NaN);
    it is q* = inf with a DivergenceWarning (V(q) = 1e300 q + 1.8e308 has no finite fixed point)."""
    from meanfield.errors import DivergenceWarning

    with pytest.warns(DivergenceWarning):
        assert mf.qstar("linear", 1e300, 1.7976931348623157e308) == math.inf
    with pytest.warns(DivergenceWarning):
        assert mf.qstar("tanh", 1e300, 1.7976931348623157e308) == math.inf


def test_qstar_at_the_largest_weight_var():
    """tanh at weight_var = 1.8e308 (the largest float), bias 0, hung: the bisection midpoint (lo + hi)/2 overflowed to
    inf. q* = w E[tanh^2] = w (1 - O(w^-1/2)) = w to double precision (asymptotics as in
    test_tanh_cstar_at_huge_qstar_is_fast_and_right)."""
    w = 1.7976931348623157e308
    assert mf.qstar("tanh", w, 0.0) == pytest.approx(w, rel=1e-14)
