"""Activations: values and derivatives against mpmath, the registry, custom activations, bad input."""
import math

import mpmath as mp
import numpy as np
import pytest

import meanfield as mf
from tests._reference import MP_PHI

XS = [-3.1, -1.0, -0.2, 0.0, 0.37, 1.5, 4.0]


@pytest.mark.parametrize("name", [n for n in MP_PHI])
@pytest.mark.parametrize("order", [0, 1, 2])
def test_values_and_derivatives_match_mpmath(name, order):
    act = mf.get_activation(name)
    f = [act.phi, act.dphi, act.d2phi][order]
    for x in XS:
        if name in ("relu", "hard_tanh", "elu", "selu") and x in (0.0, -1.0):
            continue  # kinks: the derivative is one-sided there by convention
        ref = float(MP_PHI[name][order](mp.mpf(x)))
        # double-precision evaluation of an elementary function: a few ulp
        assert f(x) == pytest.approx(ref, rel=1e-14, abs=1e-15), (name, order, x)


def test_derivatives_are_derivatives():
    """phi' and phi'' agree with central differences of phi (error O(h^2) ~ 1e-8 with h = 1e-4)."""
    h = 1e-4
    x = np.linspace(-3, 3, 31) + 0.013
    for name in mf.ACTIVATIONS:
        act = mf.get_activation(name)
        fd1 = (act.phi(x + h) - act.phi(x - h)) / (2 * h)
        smooth = np.all([abs(xx - k) > 2 * h for xx in x for k in act.kinks])
        assert smooth
        np.testing.assert_allclose(act.dphi(x), fd1, atol=1e-7, err_msg=name)
        fd2 = (act.dphi(x + h) - act.dphi(x - h)) / (2 * h)
        np.testing.assert_allclose(act.d2phi(x), fd2, atol=1e-7, err_msg=name)


def test_parameters():
    a = mf.get_activation("leaky_relu", slope=0.2)
    assert a.phi(-2.0) == pytest.approx(-0.4) and a.dphi(-2.0) == pytest.approx(0.2)
    e = mf.get_activation("elu", alpha=0.5)
    assert e.phi(-1.0) == pytest.approx(0.5 * math.expm1(-1.0))
    assert mf.get_activation("identity").name == "linear"
    assert mf.get_activation(a) is a


def test_unknown_activation_lists_names():
    with pytest.raises(ValueError, match="known activations:.*tanh"):
        mf.get_activation("swishy")
    with pytest.raises(TypeError):
        mf.get_activation(3)
    with pytest.raises(ValueError, match="slope"):
        mf.get_activation("tanh", slope=1.0)
    with pytest.raises(ValueError, match="alpha"):
        mf.get_activation("elu", alpha=-1.0)


def test_custom_activation_matches_builtin():
    """A user-defined tanh without derivatives (8th-order finite differences, ~1e-13 / 1e-10 error) reproduces the
    built-in tanh through the whole compiled pipeline."""
    act = mf.custom_activation("mytanh", lambda x: math.tanh(x), scale=math.pi / 2)
    x = np.linspace(-2, 2, 9)
    np.testing.assert_allclose(act.dphi(x), 1 - np.tanh(x) ** 2, atol=1e-12)
    np.testing.assert_allclose(act.d2phi(x), -2 * np.tanh(x) * (1 - np.tanh(x) ** 2), atol=1e-9)
    assert mf.qstar(act, 1.7, 0.1) == pytest.approx(mf.qstar("tanh", 1.7, 0.1), rel=1e-12)
    # chi_1 uses phi' (finite differences, 1e-13 relative)
    assert mf.chi1(act, 1.7, 0.1) == pytest.approx(mf.chi1("tanh", 1.7, 0.1), rel=1e-11)
    assert mf.pair_expectation(act, 1.0, 0.5, 0.3) == pytest.approx(mf.pair_expectation("tanh", 1.0, 0.5, 0.3),
                                                                    rel=1e-13)


def test_custom_activation_with_derivatives_and_errors():
    act = mf.custom_activation("cube", lambda x: x ** 3, lambda x: 3 * x * x, lambda x: 6 * x, scale=10.0)
    # E[u^6] = 15 q^3
    assert mf.gaussian_expectation(lambda u: act.phi(u) ** 2, 0.7) == pytest.approx(15 * 0.7 ** 3, rel=1e-13)
    with pytest.raises(TypeError):
        mf.custom_activation("bad", 3.0)
    with pytest.raises(TypeError, match="compiled"):
        mf.custom_activation("bad", lambda x: {}[x])


# ---------------------------------------------------------------------------------------------------------------------
# issue 11: finite differences at declared kinks, NaN-producing custom activations
# ---------------------------------------------------------------------------------------------------------------------
def _softsign(x):
    return x / (1.0 + abs(x))


def test_fd_derivatives_do_not_straddle_kinks_softsign():
    """softsign x/(1+|x|) is C^1 with a jump of phi'' at 0: phi' = 1/(1+|x|)^2, phi'' = -2 sign(x)/(1+|x|)^3.
    Central differences across 0 gave phi'(0) = 0.99886; the one-sided stencils are exact up to the kink from each
    side. Error budget (docstring of _fd_derivative): phi' <= 1e-11, phi'' <= 1e-8 (one-sided roundoff
    ~360 eps / h^2 with h = 2e-3); tolerances 1e-11 / 1e-8."""
    act = mf.custom_activation("softsign", _softsign, kinks=(0.0,))
    x = np.array([-0.5, -8e-3, -1e-3, -1e-9, 0.0, 1e-9, 1e-3, 5e-3, 0.5])
    np.testing.assert_allclose(act.dphi(x), 1 / (1 + np.abs(x)) ** 2, rtol=0, atol=1e-11)
    d2_exact = np.where(x >= 0, -2.0, 2.0) / (1 + np.abs(x)) ** 3          # right-hand value at the kink itself
    np.testing.assert_allclose(act.d2phi(x), d2_exact, rtol=0, atol=1e-8)


def test_fd_derivatives_relu_like_with_two_kinks():
    """A custom piecewise-linear 'leaky hard tanh' with kinks at -1 and 1 (slopes 0.1 | 1 | 0.1): phi' is the slope of
    the piece containing x (the right-hand one at a kink), phi'' = 0. Piecewise linear: truncation is zero, only
    roundoff remains (<= 1e-11 for phi', 1e-8 for phi'')."""
    def lht(x):
        if x < -1.0:
            return -1.0 + 0.1 * (x + 1.0)
        if x > 1.0:
            return 1.0 + 0.1 * (x - 1.0)
        return x
    act = mf.custom_activation("leaky_hard_tanh", lht, kinks=[1.0, -1.0], scale=math.inf)
    x = np.array([-3.0, -1.0 - 1e-3, -1.0, -1.0 + 1e-6, 0.0, 1.0 - 1e-3, 1.0, 1.0 + 1e-9, 2.0])
    slope = np.array([0.1, 0.1, 1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1])
    np.testing.assert_allclose(act.dphi(x), slope, rtol=0, atol=1e-11)
    np.testing.assert_allclose(act.d2phi(x), 0.0, rtol=0, atol=1e-8)


def test_chi1_of_custom_kinked_activation_against_mpmath():
    """chi_1 = sigma_w^2 E[phi'(u)^2] at q* for softsign without given derivatives; q* and chi_1 by mpmath at 30
    digits (tanh-sinh split at the kink). The quadrature is ~1e-15 and the finite differences ~1e-13 relative away from
    the kink (the one-sided region |x| < 8e-3 carries ~1e-2 of the Gaussian weight at <= 1e-11): tolerance 1e-12.
    Before the fix chi_1 was off by 1.6e-5 relative. (One custom activation only: each one recompiles the kernels.)"""
    act = mf.custom_activation("softsign", _softsign, kinks=(0.0,))
    wv, bv = 1.5, 0.05
    with mp.workdps(30):
        def expect(g, q):
            s = mp.sqrt(q)
            return mp.quad(lambda z: g(s * z) * mp.npdf(z), [-mp.inf, 0, mp.inf])
        ph = lambda x: x / (1 + abs(x))
        q_star = mp.findroot(lambda q: wv * expect(lambda x: ph(x) ** 2, q) + bv - q, mp.mpf("0.5"),
                             tol=mp.mpf(10) ** -26)
        chi_ref = float(wv * expect(lambda x: 1 / (1 + abs(x)) ** 4, q_star))
    assert mf.chi1(act, wv, bv) == pytest.approx(chi_ref, rel=1e-12)


def test_custom_activation_nan_is_reported():
    """phi(x) = sqrt(x) is NaN for x < 0 (numba returns NaN): ValueError naming the activation and an x where it
    fails, at creation. A function finite on the probe grid but NaN further out is caught on evaluation."""
    with pytest.raises(ValueError, match=r"'sqrt_act'.*not finite at x = -"):
        mf.custom_activation("sqrt_act", lambda x: math.sqrt(x))
    with pytest.raises(ValueError, match=r"'given'.*phi''"):
        mf.custom_activation("given", lambda x: x, lambda x: 1.0, lambda x: math.log(x))
    far = mf.custom_activation("far", lambda x: x if x < 25.0 else math.nan, lambda x: 1.0, lambda x: 0.0)
    assert far.phi(3.0) == 3.0
    with pytest.raises(ValueError, match=r"'far'.*x = 30.0"):
        far.phi(np.array([1.0, 30.0]))
    with pytest.raises(TypeError, match="kinks"):
        mf.custom_activation("k", lambda x: x, kinks=[1j])
    with pytest.raises(ValueError, match="kinks"):
        mf.custom_activation("k", lambda x: x, kinks=[math.nan])


@pytest.mark.parametrize("scale", [1e-3, 5e-324, 0.0, -1.0, float("nan"), True])
def test_custom_activation_scale_has_a_floor(scale):
    """A scale below 0.1 made the nested 2-D rule place ~1e11 nodes per pair (the thorough hostile hunt hung in
    fixed_point of a custom activation with a subnormal scale): refused up front, naming the parameter."""
    with pytest.raises(ValueError, match="scale"):
        mf.custom_activation("fast", lambda x: math.tanh(x), scale=scale)
