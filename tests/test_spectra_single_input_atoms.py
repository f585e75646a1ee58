"""Point masses of the single-input FIM with Haar orthogonal weights (meanfield.spectra.single_input._atoms, Belinschi's
atom rule for free multiplicative convolutions) against independent routes.

Independent routes and error analysis:
- exact finite-dimensional algebra: with D^2 a projection (relu, hard_tanh; trace t = P(phi' != 0)),
  Theta_2 = q* (I + sigma_w^2 W P W^T) has exactly the eigenvalues q* (mass 1 - t) and q* (1 + sigma_w^2) (mass t), and
  Theta_3 = q* I + sigma_w^2 q* P + sigma_w^4 q* P Q P with P, Q free projections of trace t: Voiculescu's law of P Q P
  (atoms 1 - t at 0, 2t - 1 at 1 when t >= 1/2, density sqrt((l+ - x)(x - l-)) / (2 pi x (1 - x)) on [l-, l+],
  l+- = 2 t (1 - t) +- 2 t (1 - t)); t from math.erf, q* from the fixed-point equation solved here. Atom locations and
  masses: 1e-12; the solver's density on its grid against the closed form: 1e-6 relative (Newton tolerance 1e-12 at
  height 1e-9 X; the density is read off Im G, which at a 1/sqrt edge converges like sqrt(height / distance));
- the contour moments (subordination solver, no atom rule) against atoms + the closed-form continuous part (scipy
  quad): 1e-8;
- Monte Carlo (torch, slow): the multiplicities of repeated eigenvalues of Haar-orthogonal networks (M = 800, 3 seeds)
  against the masses: the finite-network multiplicities are exact functions of the empirical traces of the D's, which
  fluctuate by sqrt(t (1 - t) / M) ~ 0.006 per layer, so 0.03 is asserted.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import integrate, optimize

from meanfield import Network, single_input_fisher_spectrum


def _hard_tanh_qstar(wv, bv):
    """q* = sigma_w^2 E[hard_tanh(u)^2] + sigma_b^2, u ~ N(0, q), E[h^2] = q P(|u| < 1) - 2 sqrt(q) phi(1/sqrt q)
    + P(|u| > 1) in closed form."""
    def f(q):
        s = math.sqrt(q)
        p_in = math.erf(1 / (s * math.sqrt(2)))
        inner = q * p_in - 2 * s * math.exp(-0.5 / q) / math.sqrt(2 * math.pi)
        return wv * (inner + (1 - p_in)) + bv - q
    return optimize.brentq(f, 1e-6, 10.0, xtol=1e-15, rtol=1e-15)


def _pqp_density(x, t):
    lp = 4 * t * (1 - t)
    inside = (x > 0) & (x < lp)
    return np.where(inside, np.sqrt(np.clip((lp - x) * x, 0, None)) / (2 * np.pi * x * (1 - x) + 1e-300), 0.0)


def test_relu_one_hidden_layer_is_a_point_spectrum():
    # Theta_2 = q* I + sigma_w^2 q* W P W^T, P of trace 1/2, q* = sigma_b^2 / (1 - sigma_w^2 / 2)
    wv, bv = 1.5, 0.1
    q = bv / (1 - wv / 2)
    sp = single_input_fisher_spectrum(Network("relu", depth=1, weight_var=wv, bias_var=bv), "orthogonal")
    assert len(sp.atoms) == 2
    for (a, m), (a0, m0) in zip(sp.atoms, [(q, 0.5), (q * (1 + wv), 0.5)]):
        assert a == pytest.approx(a0, rel=1e-12) and m == pytest.approx(m0, rel=1e-12)
    np.testing.assert_allclose(sp.moments, [0.5 * q ** k + 0.5 * (q * (1 + wv)) ** k for k in (1, 2, 3)], rtol=1e-12)


@pytest.mark.parametrize("act,wv,bv", [pytest.param("hard_tanh", 1.05, 2e-4, marks=pytest.mark.slow),
                                       ("relu", 1.5, 0.1)])
def test_two_hidden_layers_free_projections(act, wv, bv):
    if act == "relu":
        q, t = bv / (1 - wv / 2), 0.5
    else:
        q = _hard_tanh_qstar(wv, bv)
        t = math.erf(1 / math.sqrt(2 * q))
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # no warning: the whole mass is located
        sp = single_input_fisher_spectrum(Network(act, depth=2, weight_var=wv, bias_var=bv), "orthogonal",
                                          n_points=200, n_moments=3)
    exact = [(q, 1 - t)] + ([(q + wv * q + wv ** 2 * q, 2 * t - 1)] if t > 0.5 else [])
    assert sp.parameters["qstar"] == pytest.approx(q, rel=1e-10)
    assert len(sp.atoms) == len(exact)
    for (a, m), (a0, m0) in zip(sp.atoms, exact):
        assert a == pytest.approx(a0, rel=1e-10) and m == pytest.approx(m0, rel=1e-10)
    # continuous part: y = q + sigma_w^2 q + sigma_w^4 q x, x ~ P Q P restricted to its continuous part
    lo, sc = q + wv * q, wv ** 2 * q
    rho = _pqp_density((sp.x - lo) / sc, t) / sc
    edge = 4 * t * (1 - t) * sc
    inner = (sp.x > lo + 1e-3 * edge) & (sp.x < lo + (1 - 1e-3) * edge)
    np.testing.assert_allclose(sp.density[inner], rho[inner], rtol=1e-6)
    cont = [integrate.quad(lambda x: (lo + sc * x) ** k * _pqp_density(np.array([x]), t)[0], 0, 4 * t * (1 - t),
                           limit=200, epsabs=1e-14, epsrel=1e-13)[0] for k in (0, 1, 2, 3)]
    assert cont[0] == pytest.approx(1 - t, rel=1e-9)       # Voiculescu's continuous mass
    for k in (1, 2, 3):
        assert sp.moments[k - 1] == pytest.approx(cont[k] + sum(m * a ** k for a, m in exact), rel=1e-8)
    assert sp.mass == pytest.approx(1.0, abs=5e-3)


@pytest.mark.slow
def test_deeper_orthogonal_hard_tanh_atoms_follow_the_rule():
    # L = 4: the top atom carries 3 t - 2 (the rule applied three times), the bottom one 1 - t; the contour moments
    # (solver only) equal atoms + density moments to the grid's accuracy
    wv, bv = 1.05, 2e-4
    q = _hard_tanh_qstar(wv, bv)
    t = math.erf(1 / math.sqrt(2 * q))
    sp = single_input_fisher_spectrum(Network("hard_tanh", depth=3, weight_var=wv, bias_var=bv), "orthogonal",
                                      n_points=160)
    top = q * (1 + wv + wv ** 2 + wv ** 3)
    assert [(pytest.approx(a, rel=1e-10), pytest.approx(m, rel=1e-10)) for a, m in sp.atoms] == \
        [(q, 1 - t), (top, 3 * t - 2)]
    assert sp.moment_from_density(1) == pytest.approx(sp.moments[0], rel=3e-3)
    assert sp.mass == pytest.approx(1.0, abs=5e-3)


@pytest.mark.slow
@pytest.mark.parametrize("depth", [2, 3])
def test_atoms_against_torch_orthogonal_networks(depth):
    pytest.importorskip("torch")
    import torch

    from meanfield.validation.spectra_sim import single_input_fisher_eigenvalues

    torch.set_num_threads(1)
    net = Network("hard_tanh", depth=depth, weight_var=1.05, bias_var=2e-4)
    sp = single_input_fisher_spectrum(net, "orthogonal", n_points=64)
    M = 800
    found = {a: [] for a, _ in sp.atoms}
    for seed in range(3):
        e = np.sort(single_input_fisher_eigenvalues(net, "orthogonal", M, seed=seed))
        # repeated eigenvalues (to 1e-8 of the largest): the finite network's atoms, located within O(1/sqrt M)
        tie = np.diff(e) <= 1e-8 * e[-1]
        for a, _ in sp.atoms:
            near = np.abs(e - a) <= 0.1 * a
            in_group = np.zeros(len(e), bool)
            in_group[:-1] |= tie
            in_group[1:] |= tie
            found[a].append(np.count_nonzero(near & in_group) / M)
    for a, m in sp.atoms:
        assert np.mean(found[a]) == pytest.approx(m, abs=0.03)
