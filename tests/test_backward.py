"""Network description, layer-by-layer forward propagation and back-propagated order parameters."""
import math

import numpy as np
import pytest

import meanfield as mf
from tests._reference import mp_expect


def test_qtilde_is_chi1_power_at_fixed_point():
    """With the input at q^1 = q*, every layer sits at the fixed point and qtilde_1^l = chi_1^(L-l) (docs/mathematics.md sec. 3)."""
    wv, bv, depth = 1.8, 0.1, 6
    fp = mf.fixed_point("tanh", wv, bv)
    net = mf.Network("tanh", depth=depth, weight_var=wv, bias_var=bv)
    br = mf.backward(net, input_norm=(fp.q_star - bv) / wv)
    np.testing.assert_allclose(br.forward.q1, fp.q_star, rtol=1e-13)
    L = depth + 1
    expected = fp.chi_1 ** (L - np.arange(1, L + 1))
    np.testing.assert_allclose(br.qtilde1, expected, rtol=1e-12)


def test_forward_against_mpmath_layer_recursion():
    """Heterogeneous network: per-layer recursion evaluated independently with mpmath 1-D integrals."""
    net = mf.Network(["tanh", "erf"], depth=2, weight_var=[1.0, 2.0, 1.5], bias_var=[0.1, 0.0, 0.2])
    fr = mf.forward(net, input_norm=0.7)
    q1 = 1.0 * 0.7 + 0.1
    assert fr.q1[0] == pytest.approx(q1, rel=1e-15)
    q2 = 2.0 * float(mp_expect("tanh", q1)) + 0.0
    assert fr.q1[1] == pytest.approx(q2, rel=1e-13)
    q3 = 1.5 * float(mp_expect("erf", q2)) + 0.2
    assert fr.q1[2] == pytest.approx(q3, rel=1e-13)
    assert fr.qdot1[0] == pytest.approx(float(mp_expect("tanh", q1, 1, 1)), rel=1e-13)
    br = mf.backward(net, forward_result=fr)
    assert br.qtilde1[1] == pytest.approx(1.5 * float(mp_expect("erf", q2, 1, 1)), rel=1e-13)
    assert br.qtilde1[0] == pytest.approx(2.0 * br.qtilde1[1] * float(mp_expect("tanh", q1, 1, 1)), rel=1e-13)


def test_two_inputs_cross_terms_relu_closed_form():
    net = mf.Network("relu", depth=3, weight_var=2.0, bias_var=0.0)
    fr = mf.forward(net, input_norm=1.0, input_norm2=1.0, input_overlap=0.0)
    # arc-cosine recursion on the correlation with q = 2 at every layer
    c = 0.0
    for l in range(1, 4):
        c = (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / math.pi
        assert fr.c[l] == pytest.approx(c, rel=1e-13)
    br = mf.backward(net, forward_result=fr)
    # qtilde_2 recursion: sigma_w^2 E[phi'phi'] = 2 (pi - theta)/(2 pi)
    t = 1.0
    for l in range(3, 0, -1):
        t *= 2 * (math.pi - math.acos(fr.c[l - 1])) / (2 * math.pi)
        assert br.qtilde2[l - 1] == pytest.approx(t, rel=1e-13)


def test_dropout_in_forward_and_backward():
    rho = 0.8
    net = mf.Network("relu", depth=2, weight_var=1.0, bias_var=0.1, dropout_keep=rho)
    fr = mf.forward(net, input_norm=1.0, input_overlap=0.5)
    assert fr.q1[1] == pytest.approx(1.0 / rho * fr.q1[0] / 2 + 0.1, rel=1e-14)
    br = mf.backward(net, forward_result=fr)
    assert br.qtilde1[1] == pytest.approx(1.0 / rho * 0.5, rel=1e-14)
    assert br.qtilde2[1] == pytest.approx(1.0 * fr.qdot2[1], rel=1e-14)


def test_network_validation():
    with pytest.raises(ValueError, match="depth"):
        mf.Network("tanh", depth=0)
    with pytest.raises(TypeError, match="depth"):
        mf.Network("tanh", depth=2.5)
    with pytest.raises(ValueError, match="weight_var"):
        mf.Network("tanh", depth=2, weight_var=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"bias_var\[1\]"):
        mf.Network("tanh", depth=2, bias_var=[0.1, -0.1, 0.0])
    with pytest.raises(ValueError, match="activation"):
        mf.Network(["tanh"], depth=2)
    with pytest.raises(ValueError, match="dropout_keep"):
        mf.Network("tanh", dropout_keep=0.0)
    with pytest.raises(ValueError, match="width_ratios"):
        mf.Network("tanh", depth=2, width_ratios=[1.0, 0.0, 1.0])
    with pytest.raises(TypeError):
        mf.forward("not a network")
    with pytest.raises(ValueError, match="input_overlap"):
        mf.forward(mf.Network("tanh"), input_norm=1.0, input_overlap=2.0)


def test_network_properties_and_dict():
    net = mf.Network("leaky_relu", depth=2, weight_var=[1, 2, 3], activation_params={"slope": 0.2},
                     width_ratios=[0.5, 1, 2])
    assert net.n_layers == 3 and net.weight_vars == (1.0, 2.0, 3.0) and net.alphas == (0.5, 1.0, 2.0)
    assert net.activations[0].params[0] == 0.2
    d = net.to_dict()
    assert d["activation"] == ["leaky_relu", "leaky_relu"] and d["width_ratios"] == [0.5, 1.0, 2.0]
    fr = mf.forward(net)
    assert set(fr.to_dict()) >= {"q1", "c", "qhat1", "network"}


def test_forward_result_of_wrong_type_is_a_type_error():
    """Issue 11: backward(net, forward_result="x") raised AttributeError."""
    net = mf.Network("tanh", depth=3, weight_var=1.5, bias_var=0.05)
    for bad in ("x", 1.0, {"q1": [1.0]}):
        with pytest.raises(TypeError, match="forward_result"):
            mf.backward(net, forward_result=bad)


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(weight_var=1.0 + 1j), TypeError, "weight_var"), (dict(bias_var=True), TypeError, "bias_var"),
    (dict(weight_var=[1.0, np.nan, 1.0, 1.0]), ValueError, "weight_var"),
    (dict(width_ratios=2.0), TypeError, "width_ratios"), (dict(width_ratios=[1, 1j, 1, 1]), TypeError, "width_ratios"),
    (dict(dropout_keep=np.array([0.5, 0.5])), ValueError, "dropout_keep"), (dict(bias_var="0.1"), TypeError, "bias_var"),
])
def test_network_rejects_non_real_input(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        mf.Network("tanh", depth=3, **kwargs)
