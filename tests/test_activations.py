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
