"""Fisher statistics of convolutional chains on a data set (meanfield.fisher.spatial_fisher_statistics).

Independent route: meanfield.fisher_statistics, Karakida's order-parameter formulas from the vector sweep (forward q,
backward q-tilde). A chain of 1 x 1 convolutions on 1 x 1 images with inputs of norm 1 and overlap 0 (scaled
orthonormal rows: exactly Karakida's ``qhat_1^0 = 1, qhat_2^0 = 0``) is his MLP, with ``alpha_0 = C_0 / M``.

* NTK parameterization: both are exact infinite-width values of the same matrix (``kappa'_1`` on, ``kappa'_2`` off the
  diagonal), so they agree to rounding (1e-12: sums of a few O(1) terms and a 5 x 5 eigenvalue problem).
* Standard parameterization: Karakida keeps the leading order in M (``P ~ alpha M^2``, the bias terms ``+1`` next to
  ``M_l qhat`` dropped, the readout's ``C/M``), we the exact ``Theta`` and ``P``: relative differences O((C + 3)/M),
  measured 2e-5..8e-5 at M = 1e5 for the whole matrix and blocks 2..L; tolerance 20 / M. The first block (fan-in
  ``C_0 = 8``: its bias term is 1/8 of it) is compared with the exact ``Theta_1 = qtilde^1 (x.x' + 1)`` instead.
"""
import numpy as np
import pytest

import meanfield as mf
from meanfield.fisher import spatial_fisher_statistics
from meanfield.layers import Dense, Nonlinearity, serial
from meanfield.spatial import Conv, Flatten, GlobalAvgPool

T, C0, C = 5, 8, 3


def _orthonormal_images():
    Q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((C0, T)))
    return (np.sqrt(C0) * Q.T).reshape(T, 1, 1, C0)


def _pair(M, act):
    conv = serial(Conv(1.6, 0.1, (1, 1)), Nonlinearity(act), Conv(1.3, 0.2, (1, 1)), Nonlinearity(act), Flatten(),
                  Dense(1.2, 0.1))
    mlp = serial(Dense(1.6, 0.1), Nonlinearity(act), Dense(1.3, 0.2), Nonlinearity(act), Dense(1.2, 0.1),
                 input_ratio=C0 / M)
    return conv, mlp


STATS = ("mean_eigenvalue", "second_moment", "lambda_max", "eta_critical")
LAYER_STATS = ("layer_mean_eigenvalue", "layer_second_moment", "layer_lambda_max")


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_ntk_parameterization_equals_karakida(act):
    conv, mlp = _pair(1000, act)
    a = spatial_fisher_statistics(conv, _orthonormal_images(), 1000, C, "ntk")
    b = mf.fisher_statistics(mlp, 1000, T, C, "ntk")
    for k in STATS + LAYER_STATS:
        np.testing.assert_allclose(getattr(a, k), getattr(b, k), rtol=1e-12, err_msg=k)
    assert a.n_params == b.n_params and a.n_eigenvalues == C * T and a.lambda_max_multiplicity == C


def test_standard_parameterization_approaches_karakida():
    M = 10 ** 5
    conv, mlp = _pair(M, "tanh")
    a = spatial_fisher_statistics(conv, _orthonormal_images(), M, C)
    b = mf.fisher_statistics(mlp, M, T, C)
    assert a.n_params == b.n_params
    for k in STATS:
        np.testing.assert_allclose(getattr(a, k), getattr(b, k), rtol=20 / M, err_msg=k)
    for k in LAYER_STATS:
        np.testing.assert_allclose(getattr(a, k)[1:], getattr(b, k)[1:], rtol=20 / M, err_msg=k)
    op = b.order_parameters
    theta1 = np.full((T, T), op["qtilde2"][0])
    np.fill_diagonal(theta1, op["qtilde1"][0] * (C0 + 1))
    P1 = M * C0 + M
    np.testing.assert_allclose([a.layer_mean_eigenvalue[0], a.layer_second_moment[0], a.layer_lambda_max[0]],
                               [C * np.trace(theta1) / (T * P1), C * np.sum(theta1 ** 2) / (T * T * P1),
                                np.linalg.eigvalsh(theta1)[-1] / T], rtol=1e-12)


def test_spatial_fisher_parameter_count_result_and_errors():
    net = serial(Conv(2.0, 0.1, (3, 2)), Nonlinearity("relu"), Conv(1.0, 0.0, (2, 2), orthogonal=True),
                 GlobalAvgPool(), Dense(1.0, 0.1, width_ratio=0.5), Nonlinearity("erf"), Dense(1.0))
    x = np.random.default_rng(1).standard_normal((4, 4, 5, 3))
    st = spatial_fisher_statistics(net, x, 20, 2)
    assert list(st.layer_n_params) == [20 * 3 * 6 + 20, 20 * 20 + 20, 10 * 20 + 10, 2 * 10 + 2]
    assert st.n_params == sum(st.layer_n_params) and st.layer_paths == ("0", "2", "4", "6")
    # the blocks' traces add up to the whole matrix's (Tr F = sum_l Tr F_ll)
    np.testing.assert_allclose(np.sum(st.layer_mean_eigenvalue * st.layer_n_params), st.mean_eigenvalue * st.n_params,
                               rtol=1e-13)
    assert st.to_dict()["network"]["layer"] == "Serial"
    with pytest.raises(ValueError, match="Dense layer"):
        spatial_fisher_statistics(serial(Conv(1.0), GlobalAvgPool()), x, 8)
    with pytest.raises(ValueError, match="width"):
        spatial_fisher_statistics(net, x, 0)
    with pytest.raises(ValueError, match="parameterization"):
        spatial_fisher_statistics(net, x, 8, parameterization="mup")
    with pytest.raises(ValueError, match="x must be shaped"):
        spatial_fisher_statistics(net, x[:, 0, 0], 8)
