r"""Limiting spectra of the conjugate kernel (CK), the neural tangent kernel (NTK) and the Fisher information in the
linear-width regime (Fan & Wang, "Spectra of the conjugate kernel and neural tangent kernel for linear-width neural
networks", NeurIPS 2020).

Setting: ``n`` inputs ``x ~ N(0, I_d)`` (or exactly orthonormal ones), hidden widths ``N_l = alpha_l M``, input dimension
``d = alpha_0 M``, with ``n / M = samples_per_width`` fixed as everything grows; NTK parameterization
``h^l = sigma_w W^l x^{l-1} / sqrt(N_{l-1}) + sigma_b b^l``, scalar readout. Per layer, at the variance ``q^l`` of the
library's forward sweep, ``e_l = E[phi(h)^2]``, ``v_l = Var phi(h)`` and the Fan-Wang slope
``b_l^2 = q^l E[phi'(h)]^2 / v_l``. With ``K_l = G_l / v_l`` (``G_l = phi(H_l)^T phi(H_l) / N_l``, ``K_0 = X^T X / d``),

- CK (Fan & Wang Thm 3.4): ``K_l`` has the law of a sample covariance, ratio ``gamma_l = n / N_l``, of population
  ``(1 - b_l^2) I + b_l^2 K_{l-1}``: ``mu_l = rho^MP_{gamma_l} [x] ((1 - b_l^2) + b_l^2 mu_{l-1})``.
- NTK (Fan & Wang Thm 3.7): ``Theta ~ r_+ I + sum_{j=0}^{L} r_j K_j`` with ``r_j = sigma_w^2 v_j prod_{k>j} beta_k``,
  ``r_+ = sigma_w^2 sum_j e_j (prod_{k>j} chi_k - prod_{k>j} beta_k)``, ``chi_k = sigma_w^2 E[phi'^2]``,
  ``beta_k = sigma_w^2 E[phi']^2`` (the backward kernel is ``chi`` on the diagonal and ``beta`` off it). The joint law
  of the nested ``K_j`` enters through the recursion of :mod:`meanfield.spectra._linear_width`.
- FIM (standard parameterization, ``F = J^T J / n``, as in :mod:`meanfield.fisher`): its non-zero eigenvalues are those
  of ``(M / (n sigma_w^2)) Theta`` (bias-free network of equal widths), a fraction ``n / P`` of all ``P`` eigenvalues.

Fan & Wang need a centred activation (``E[phi(h)] = 0``) and no bias, so that distinct inputs stay (nearly) orthogonal
through the layers. Otherwise every unit i of layer l carries an offset common to all inputs,
``h_i(a) = s_i + g_i(a)`` with ``s_i ~ N(0, tau_l^2)``, ``tau_l^2 = q^l c^l`` (the forward covariance of two
orthogonal inputs, ``sigma_b^2 + sigma_w^2 E_s[mu_{l-1}(s)^2]``) and ``g_i`` of covariance ``p_l K_{l-1}``,
``p_l = q^l - tau_l^2``. Given ``s``, ``phi(s + g) = mu(s) + beta(s) g + noise`` with ``mu(s) = E_g phi(s + g)``,
``beta(s) = E_g phi'(s + g)`` and noise variance ``Var_g phi(s + g) - p beta(s)^2``. The ``mu(s_i)`` part is the same
for every input: a finite-rank term, the outlier ``n E[mu_L^2]`` of the CK. The centred rows are independent with
commuting covariances ``v_l (a(s) I + b2(s) K_{l-1})``, ``b2 = p beta^2 / v_l``, ``a = Var_g phi / v_l - b2``,
``v_l = E_s Var_g phi``: the conjugate kernel is supported at any depth by the chain of
:mod:`meanfield.spectra._linear_width` with these per-unit laws (Gauss-Hermite in ``s``).

NTK / FIM: with ``Theta = sum_{l=1}^{L+1} (w_l G_{l-1} + b_l 1 1^T) o B_l`` (NTK: ``w_l = sigma_w^2``,
``b_l = sigma_b^2``; FIM: ``w_l = alpha_{l-1}``, ``b_l = 0``) the constant part ``c_l = w_l E[mu_{l-1}^2] + b_l`` of a
weight-gradient Gram multiplies the fluctuation of the derivative Gram ``B_l``, an O(1) bulk term. At the top hidden
layer that fluctuation ``F`` has rows ``v_i (kappa(s_i) g_i + noise)``, ``kappa(s) = E_g phi''(s + g)``, in the same
``g_i`` as the CK rows: ``Theta ~ r_+ I + sum_j r_j K_j + c_L F`` (:func:`_gradient_coefficients`) with a rank-two top
level in the chain (:func:`_top_pair`). Below the top layer ``B_l``'s fluctuation also carries the backward
fluctuation of the layers above, coupling the levels in both directions (not built; docs/spectra.md, "Offsets below
the top hidden layer", gives the structure and torch measurements): ``c_l != 0`` for some ``l < L`` raises ValueError
(a bias at depth >= 2 for the NTK, a non-centred layer below ``L - 1``). The outliers: ``n`` times the kernel's
value for two orthogonal inputs (NTK, CK), Karakida's ``lambda_max`` (FIM, :func:`meanfield.fisher_statistics`).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from .._checks import check_int, check_positive
from ..errors import PrecisionWarning
from ..network import Network
from ._linear_width import Chain, stieltjes
from .result import Spectrum

__all__ = ["KernelSpectrum", "conjugate_kernel_spectrum", "ntk_spectrum", "fisher_spectrum"]

_INPUTS = ("gaussian", "orthonormal")
MAX_KERNEL_DEPTH = 20


@dataclass(frozen=True)
class KernelSpectrum(Spectrum):
    """Spectrum of an n x n kernel matrix (or of the FIM) in the linear-width regime; see :class:`Spectrum`.

    Attributes
    ----------
    outliers : tuple of float
        Eigenvalues outside the bulk that grow with the width (non-centred networks), in the units of ``x``; each
        carries mass 1/n -> 0 (not in ``atoms``).
    nonzero_fraction : float
        For the FIM: the fraction ``n / P`` of its eigenvalues the bulk describes (the others are 0); 1 otherwise.
    """

    outliers: tuple = ()
    nonzero_fraction: float = 1.0


#: Gauss-Hermite nodes of the per-unit offset law: first try, and the most (doubling until the law's moments agree)
_OFFSET_NODES = (40, 320)


def _offset_law_stats(act, q, tau2, n_nodes):
    """Per-unit statistics of phi(s + g), s ~ N(0, tau2) (Gauss-Hermite, ``n_nodes``), g ~ N(0, q - tau2) (the
    engine's rule, kinks shifted by s): node weights, mu(s) = E_g phi, var(s) = Var_g phi, beta(s) = E_g phi'."""
    from ..gaussian import gaussian_rule

    p = q - tau2
    if tau2 > 0.0:
        x, w = np.polynomial.hermite_e.hermegauss(n_nodes)
        s, w = math.sqrt(tau2) * x, w / math.sqrt(2.0 * math.pi)
    else:
        s, w = np.zeros(1), np.ones(1)
    mu, var, beta = np.empty(len(s)), np.empty(len(s)), np.empty(len(s))
    kappa, var_d, cov = np.empty(len(s)), np.empty(len(s)), np.empty(len(s))
    for j, sj in enumerate(s):
        z, wz = gaussian_rule(p, scale=act.scale, kinks=[k - sj for k in act.kinks])
        u = sj + math.sqrt(p) * z
        f = np.asarray(act.phi(u), dtype=float)
        d = np.asarray(act.dphi(u), dtype=float)
        mu[j] = wz @ f
        var[j] = max(wz @ (f - mu[j]) ** 2, 0.0)
        beta[j] = wz @ d
        kappa[j] = (wz @ (d * z)) / math.sqrt(p)          # E_g phi''(s + g) by Stein's lemma (kinks allowed)
        var_d[j] = max(wz @ (d - beta[j]) ** 2, 0.0)
        cov[j] = wz @ ((f - mu[j]) * (d - beta[j]))
    return w, mu, var, beta, dict(s=s, kappa=kappa, var_d=var_d, cov=cov)


def _offset_law(act, q, tau2, layer):
    """The law of the bulk row covariance a I + b2 K_{l-1} of hidden layer ``layer`` (docs/spectra.md, section 2):
    b2(s) = p beta(s)^2 / v, a(s) = var(s) / v - b2(s), v = E_s var(s), p = q - tau2; with the mean statistics.
    The number of offset nodes is doubled until E[a], E[b2], E[(a + b2)^2] and E[mu^2] agree to 1e-9 (relative)."""
    p = q - tau2

    def build(n_nodes):
        w, mu, var, beta, extra = _offset_law_stats(act, q, tau2, n_nodes)
        v = float(w @ var)
        if not v > 0:
            raise ValueError(f"phi(h) is constant at layer {layer}: the conjugate kernel is degenerate")
        b2 = np.minimum(p * beta ** 2 / v, var / v)
        a = np.maximum(var / v - b2, 0.0)
        key = np.array([w @ a, w @ b2, w @ (a + b2) ** 2, w @ mu ** 2, w @ beta ** 2, w @ extra["var_d"]])
        units = dict(w=w, beta=beta, var=var, p=p, **extra)
        return dict(law=(w, a, b2), v=v, mean2=float(w @ mu ** 2), mean=float(w @ mu), key=key,
                    beta2=float(w @ beta ** 2), var_d=float(w @ extra["var_d"]), units=units)

    n = _OFFSET_NODES[0]
    cur = build(n)
    if tau2 == 0.0:
        return cur
    while True:
        nxt = build(2 * n)
        err = float(np.max(np.abs(nxt["key"] - cur["key"]) / np.maximum(np.abs(nxt["key"]), 1e-300)))
        if err <= 1e-9 or 2 * n >= _OFFSET_NODES[1]:
            if err > 1e-9:
                warnings.warn(f"the per-unit offset law of layer {layer} is resolved only to {err:.1e} (relative) "
                              f"with {2 * n} Gauss-Hermite nodes (tau^2 / q = {tau2 / q:.3g})", PrecisionWarning,
                              stacklevel=4)
            return cur if err <= 1e-9 else nxt
        cur, n = nxt, 2 * n


def _layer_statistics(network, samples_per_width, inputs):
    """Per level j = 0..L: gamma_j, the row law (a, b2) of the chain, v_j, e_j, chi_j, beta_j (level 0 = input Gram;
    chi/beta of hidden layers, beta_j = sigma_w^2 E_s[beta_j(s)^2] the off-diagonal of the backward kernel), the
    per-unit offset variances tau_l^2 = q^l c^l (orthogonal inputs), E[mu_l^2], and the top layer's per-unit
    statistics (for the NTK / FIM term of :func:`_top_pair`)."""
    from ..forward import forward
    from ..gaussian import gaussian_expectation

    if not isinstance(network, Network):
        raise TypeError(f"network must be a meanfield.Network, got {type(network).__name__}")
    if network.depth > MAX_KERNEL_DEPTH:
        raise ValueError(f"network.depth must be <= {MAX_KERNEL_DEPTH} for the kernel spectra (the nested system has "
                         f"2 (depth + 1) unknowns), got {network.depth}")
    if network.dropout_keep != 1.0:
        raise ValueError("network.dropout_keep must be 1.0 for the kernel spectra")
    if len(set(network.weight_vars)) != 1:
        raise ValueError("network.weight_var must be the same for every layer")
    if len(set(network.bias_vars)) != 1:
        raise ValueError("network.bias_var must be the same for every layer")
    spw = check_positive("samples_per_width", samples_per_width)
    if inputs not in _INPUTS:
        raise ValueError(f"inputs must be one of {_INPUTS}, got {inputs!r}")
    wv, bv = network.weight_vars[0], network.bias_vars[0]
    if not wv > 0:
        raise ValueError("weight_var must be > 0")
    L = network.depth
    fr = forward(network, input_norm=1.0, input_overlap=0.0)
    q = np.asarray(fr.q1, dtype=float)[:L]           # pre-activation variances of hidden layers 1..L
    tau2 = np.asarray(fr.q2, dtype=float)[:L]        # covariance of two orthogonal inputs' pre-activations
    if not np.all(np.isfinite(q)) or not np.all(q > 0):
        raise ValueError("the forward variances q^l are not finite and positive for this network")
    tau2 = np.where(np.abs(tau2) <= 1e-14 * q, 0.0, tau2)
    if np.any(tau2 < 0.0) or np.any(tau2 >= q):
        raise ValueError("the per-unit offset variance tau^2 = q c must lie in [0, q) at every layer (inputs that "
                         "become perfectly correlated have no bulk)")
    gamma = [spw / network.alphas[0]] + [spw / network.alphas[l] for l in range(1, L + 1)]
    laws = [(np.ones(1), np.zeros(1), np.ones(1))]
    v, e, chi, beta, mean, mean2, var_d = [1.0], [1.0], [], [], [], [0.0], []
    ol = None
    for l in range(L):
        act = network.activations[l]
        kw = dict(scale=act.scale, kinks=act.kinks, graded=act.graded)
        e2 = float(gaussian_expectation(lambda u, a=act: a.phi(u) ** 2, q[l], **kw))
        d2 = float(gaussian_expectation(lambda u, a=act: a.dphi(u) ** 2, q[l], **kw))
        ol = _offset_law(act, float(q[l]), float(tau2[l]), l + 1)
        laws.append(ol["law"])
        mean.append(ol["mean"])
        mean2.append(ol["mean2"])
        e.append(e2)
        v.append(ol["v"])
        chi.append(wv * d2)
        beta.append(wv * ol["beta2"])
        var_d.append(wv * ol["var_d"])
    if inputs == "orthonormal":
        # K_0 = I exactly: drop level 0 (the first hidden level then sits on K_{-1} = I)
        gamma, laws = gamma[1:], laws[1:]
    b2 = np.array([float(law[0] @ law[2]) for law in laws])
    return dict(gamma=np.array(gamma), laws=laws, b2=b2, v=np.array(v), e=np.array(e), chi=np.array(chi),
                beta=np.array(beta), mean=np.array(mean), mean2=np.array(mean2), var_d=np.array(var_d), tau2=tau2,
                weight_var=wv, bias_var=bv, q=q, inputs=inputs, top_units=ol["units"],
                top=(network.activations[L - 1], float(q[L - 1]), float(tau2[L - 1])))


def _gradient_coefficients(st, w, b, what):
    """Theta = sum_{l=1}^{L+1} (w_l G_{l-1} + b_l 1 1^T) o B_l (B_{L+1} = 1 1^T; NTK: w_l = sigma_w^2, b_l = sigma_b^2;
    FIM x n / M: w_l = alpha_{l-1}, b_l = 0) as r_+ I + sum_j r_j K_j + c_L F + finite rank, with
    r_j = w_{j+1} v_j prod_{k>j} beta_k, c_l = w_l E[mu_{l-1}^2] + b_l (the constant part of layer l's weight-gradient
    Gram), F the fluctuation of B_L (E tr F / n = sigma_w^2 E_s Var_g phi'_L = var_d_L) and r_+ from the diagonal
    sum_l (w_l e_{l-1} + b_l) prod_{k>=l} chi_k less sum_j r_j, c_L var_d_L and the finite-rank part's diagonal
    (w_{L+1} E[mu_L^2] + b_{L+1}) + c_L beta_L. Supported when c_l = 0 for l < L (ValueError otherwise)."""
    v, e, chi, beta, mean2 = st["v"], st["e"], st["chi"], st["beta"], st["mean2"]
    L = len(chi)
    c = [w[l - 1] * mean2[l - 1] + b[l - 1] for l in range(1, L + 2)]     # c_1..c_{L+1}
    scale = max(abs(x) for x in list(w) + list(b) + [1e-300]) * max(float(np.max(e)), 1e-300)
    for l in range(1, L):
        if abs(c[l - 1]) > 1e-12 * scale:
            why = []
            if st["bias_var"] > 0 and b[l - 1] != 0:
                why.append(f"bias_var = {st['bias_var']:g}")
            if mean2[l - 1] > 0:
                why.append(f"a non-centred layer {l - 1} (E_s[mu^2] = {mean2[l - 1]:.3g}; the activation is not "
                           "centred or a bias offsets it)")
            raise ValueError(
                f"{what} spectrum: the weight-gradient Gram of layer {l} has a constant part c = {c[l - 1]:.3g} (from "
                f"{' and '.join(why)}), which multiplies the fluctuation of the derivative Gram B_{l}, coupled to the "
                "backward fluctuations of the layers above (its rows have covariances in the derivative Gram of the "
                "layer above, whose rows have covariances in this layer's conjugate kernel: docs/spectra.md, 'Offsets "
                "below the top hidden layer'; measured with torch, replacing it by the propagated top term "
                "(B_l ~ prod beta_k B_L) shifts the bulk's second moment by a width-independent 0.2-2 %): not "
                "covered. Supported: no constant part below the last "
                "hidden layer (bias_var = 0 and centred activations in layers 1..depth-2, any activation in the last "
                "two; or depth = 1 with any bias_var); conjugate_kernel_spectrum supports every case")
    r = [w[j] * v[j] * float(np.prod(beta[j:])) for j in range(L + 1)]
    diag = sum((w[l - 1] * e[l - 1] + b[l - 1]) * float(np.prod(chi[l - 1:])) for l in range(1, L + 2))
    cL = c[L - 1] if abs(c[L - 1]) > 1e-12 * scale else 0.0
    finite = c[L] + cL * beta[L - 1]
    rplus = diag - sum(r) - cL * st["var_d"][L - 1] - finite
    return rplus, np.array(r), cL


#: Gauss-Hermite nodes of the rank-two top level: over the offset s, and over the readout weight's |v|
_PAIR_NODES = (20, 8)


def _top_pair(st, cL, n_s=None, n_v=None):
    """The rank-two top level (K_L, F) of the chain: per unit (offset s, readout weight v) the rows
    (phi - mu, sqrt(sigma_w^2) v (phi' - beta)) linearise as g (alpha_1, alpha_2) + noise with
    alpha = (beta sqrt(p / v_L), sqrt(sigma_w^2) v kappa sqrt(p)), kappa = E_g phi''(s + g), and noise covariance
    [[Var phi - p beta^2) / v_L, sqrt(sigma_w^2) v (Cov(phi, phi') - p beta kappa) / sqrt(v_L)], [.,
    sigma_w^2 v^2 (Var phi' - p kappa^2)]]."""
    act, q, tau2 = st["top"]
    n_s = _PAIR_NODES[0] if n_s is None else n_s
    n_v = _PAIR_NODES[1] if n_v is None else n_v
    w, _, var, beta, extra = _offset_law_stats(act, q, tau2, n_s)
    u = dict(w=w, beta=beta, var=var, p=q - tau2, **extra)
    wv, vL, p = st["weight_var"], float(st["v"][-1]), u["p"]
    xv, wvn = np.polynomial.hermite_e.hermegauss(2 * n_v)       # the law depends on v^2: the positive half, doubled
    xv, wvn = xv[n_v:], 2.0 * wvn[n_v:] / math.sqrt(2.0 * math.pi)
    _V_NODES = n_v
    W = (u["w"][:, None] * wvn[None, :]).ravel()
    beta, kappa = np.repeat(u["beta"], _V_NODES), np.repeat(u["kappa"], _V_NODES)
    var, var_d, cov = np.repeat(u["var"], _V_NODES), np.repeat(u["var_d"], _V_NODES), np.repeat(u["cov"], _V_NODES)
    vv = np.tile(xv, len(u["w"]))
    sw = math.sqrt(wv)
    al = np.stack([beta * math.sqrt(p / vL), sw * vv * kappa * math.sqrt(p)], axis=-1)
    nz = np.empty((len(W), 2, 2))
    nz[:, 0, 0] = np.maximum(var - p * beta ** 2, 0.0) / vL
    nz[:, 1, 1] = wv * vv ** 2 * np.maximum(var_d - p * kappa ** 2, 0.0)
    nz[:, 0, 1] = nz[:, 1, 0] = sw * vv * (cov - p * beta * kappa) / math.sqrt(vL)
    return W, al, nz, cL


def _chain_coefficients(st, rplus, r, cL=0.0):
    """Levels of the chain (level 0 = input Gram for Gaussian inputs, else hidden layer 1 on K_0 = I), with the
    rank-two top level (K_L, F) when c_L != 0, and the coefficient vector (r_+, c_0, ...) over them."""
    pair = _top_pair(st, cL) if cL != 0.0 else None
    chain = Chain(st["gamma"], laws=st["laws"], pair=pair)
    chain.f_stats = _f_stats(st) if cL != 0.0 else None
    chain.cL = cL
    if st["inputs"] == "orthonormal":
        return chain, rplus + r[0], np.asarray(r[1:], dtype=float)
    return chain, rplus, np.asarray(r, dtype=float)


def _f_stats(st):
    """Closed-form statistics of F (the fluctuation of B_L) for the second-moment recursion: E[A^F], E[B^F] (row
    covariance A^F K_{L-1} + B^F I), E[(A^F + B^F)^2] (E v^4 = 3), and the same-unit cross term with K_L,
    E[(tr C / n)^2] = sigma_w^2 E_s[Cov_g(phi, phi')^2] / v_L."""
    u = st["top_units"]
    wv, vL, p, w = st["weight_var"], float(st["v"][-1]), u["p"], u["w"]
    ea = wv * p * float(w @ u["kappa"] ** 2)
    eb = wv * float(w @ np.maximum(u["var_d"] - p * u["kappa"] ** 2, 0.0))
    e2 = 3.0 * wv ** 2 * float(w @ u["var_d"] ** 2)
    cross = wv * float(w @ u["cov"] ** 2) / vL
    return ea, eb, e2, cross


def _law_moments(chain):
    """Per level: E[a], E[b2], E[(a + b2)^2] of its row law (levels on K_{-1} = I: b2 counted in a)."""
    out = []
    for k, (p, a, b2) in enumerate(chain.laws):
        out.append((float(p @ a), float(p @ b2), float(p @ (a + b2) ** 2)))
    return out


def _moments_closed_form(chain, rplus, c):
    """m_1, m_2 of r_+ I + sum_j c_j K_j (every K_j of mean 1) by the second-moment recursion, an independent route:
    with Sigma_i = a_i I + b2_i K_{j-1} the row covariances of level j,
    E tr K_j^2 / n = 1 + gamma_j E[(a + b2)^2] + E[b2]^2 (E tr K_{j-1}^2 / n - 1) (on K_{-1} = I: 1 + gamma_j E[c^2])
    and, for j > i, E tr(K_j K_i) / n = E[a] + E[b2] E tr(K_{j-1} K_i) / n (Fan & Wang: a = 1 - b^2, E[c^2] = 1)."""
    g = chain.gamma
    n = chain.n
    mom = _law_moments(chain)
    C = np.empty((n, n))
    for j in range(n):
        ea, eb, ec2 = mom[j]
        C[j, j] = 1.0 + g[j] * ec2 if j == 0 else 1.0 + g[j] * ec2 + eb ** 2 * (C[j - 1, j - 1] - 1.0)
        for i in range(j):
            C[j, i] = C[i, j] = ea + eb * C[j - 1, i]
    m1 = rplus + float(np.sum(c))
    m2 = rplus ** 2 + 2 * rplus * float(np.sum(c)) + float(c @ C @ c)
    fs, cf = getattr(chain, "f_stats", None), getattr(chain, "cL", 0.0)
    if fs is not None and cf != 0.0:
        # F: rows of covariance A^F K_{L-1} + B^F I from the same units as K_L (top level t)
        ea_f, eb_f, e2_f, cross = fs
        t = n - 1
        ea, eb, _ = mom[t]
        Cprev = (lambda j: C[t - 1, j]) if t >= 1 else (lambda j: 1.0)
        m2prev = C[t - 1, t - 1] if t >= 1 else 1.0
        cff = ea_f ** 2 * (m2prev - 1.0) + (ea_f + eb_f) ** 2 + g[t] * e2_f
        cfk = [ea_f * Cprev(j) + eb_f for j in range(t)]
        cfk.append(ea_f * eb * m2prev + ea_f * ea + eb_f * eb + eb_f * ea + g[t] * cross)
        trf = ea_f + eb_f
        m1 = m1 + cf * trf
        m2 = m2 + 2 * rplus * cf * trf + 2 * cf * float(np.dot(c, cfk)) + cf ** 2 * cff
    return m1, m2


def _norm_bound(chain, rplus, c):
    """A bound on the operator norm (start of the support search; the search extends it if the density is not 0
    there): level j's rows have covariances of norm <= max_i (a_i + b2_i |K_{j-1}|)."""
    bound, kn = abs(rplus), 1.0
    for j in range(chain.n):
        p, a, b2 = chain.laws[j]
        pop = float(np.max(a + b2 * (max(1.0, kn) if j > 0 else 1.0)))
        kn = (1.0 + math.sqrt(chain.gamma[j])) ** 2 * pop
        bound += abs(c[j]) * kn
    return bound


def _solve_points(chain, coef, x, eta, eta_start):
    m, ok = stieltjes(chain, coef, np.asarray(x, dtype=float) + 1j * eta, eta_start=eta_start)
    return np.maximum(m.imag / np.pi, 0.0), m, ok


def _spectrum_of_combination(chain, rplus, c, scale, n_points, n_moments):
    """Density (grid, weights), atom at the bottom of the support, edges, moments (contour) and error estimate of
    scale * (r_+ I + sum_j c_j K_j)."""
    coef = np.concatenate([[rplus], c])
    X = 1.2 * _norm_bound(chain, rplus, c) + 1e-3
    eta = 1e-10 * X
    top = 2.0 * X
    # atom at the bottom of the support (r_+; K_j all psd): mass = lim eta Im m(r_+ + i eta)
    eta_a = 1e-9 * X
    _, ma, _ = _solve_points(chain, coef, [rplus], eta_a, top)
    mass0 = float(eta_a * ma[0].imag)
    mass0 = mass0 if mass0 > 1e-6 else 0.0

    def dens(x, h=eta):   # continuous part: the atom's Lorentzian removed
        p, m, ok = _solve_points(chain, coef, x, h, top)
        x = np.asarray(x, dtype=float)
        return np.maximum(p - mass0 * h / np.pi / ((x - rplus) ** 2 + h * h), 0.0), ok

    xc = np.linspace(rplus, X, 601)[1:]
    pc, _ = dens(xc)
    thr = 1e-7 * max(pc.max(), 1e-300)
    on = pc > thr
    for _ in range(4):      # the bound is a heuristic with per-unit offsets: extend the pass while the top is inside
        if not on[-1]:
            break
        xe = np.linspace(X, 2.0 * X, 601)[1:]
        pe, _ = dens(xe)
        xc, pc, X = np.concatenate([xc, xe]), np.concatenate([pc, pe]), 2.0 * X
        thr = 1e-7 * max(pc.max(), 1e-300)
        on = pc > thr
    brackets = []       # (outside, inside) pairs for every edge
    for i in range(len(xc)):
        if on[i] and (i == 0 or not on[i - 1]):
            brackets.append((xc[i - 1] if i > 0 else rplus, xc[i]))
        if on[i] and (i + 1 == len(xc) or not on[i + 1]):
            brackets.append((xc[i + 1] if i + 1 < len(xc) else X, xc[i]))
    out = np.array([b[0] for b in brackets], dtype=float)
    inn = np.array([b[1] for b in brackets], dtype=float)
    thr = 1e-9 * max(pc.max(), 1e-300)
    for _ in range(24):   # all edges at once, at height 1e-15 X (outside the support the density is O(height))
        mid = 0.5 * (out + inn)
        pm, _ = dens(mid, 1e-15 * X)
        pos = pm > thr
        inn = np.where(pos, mid, inn)
        out = np.where(pos, out, mid)
    e = 0.5 * (out + inn)
    edges = [(e[k], e[k + 1]) for k in range(0, len(e) - 1, 2)]
    total = sum(b - a for a, b in edges)
    xs, ws = [], []
    for a, b in edges:
        k = max(16, int(round(n_points * (b - a) / total)))
        t = np.linspace(0.0, 1.0, k)
        xs.append(a + (b - a) * (1.0 - np.cos(np.pi * t)) / 2.0)
        w = (b - a) * np.pi * np.sin(np.pi * t) / 2.0 * (t[1] - t[0])
        w[0] = w[-1] = 0.0
        ws.append(w)
    x = np.concatenate(xs)
    wts = np.concatenate(ws)
    p, ok = dens(x)
    p2, _ = dens(x, 1e3 * eta)
    err = float(np.max(np.abs(p - p2)))
    if not np.all(ok):
        warnings.warn(f"the nested equations did not converge at {np.count_nonzero(~ok)} of {len(x)} grid points",
                      PrecisionWarning, stacklevel=3)
    atoms = ((rplus * scale, min(mass0, 1.0)),) if mass0 > 0 else ()
    # moments from a contour integral of m around the support: m_k = -(1/2 pi i) oint zeta^k m(zeta) d zeta
    lo_s = rplus
    hi_s = edges[-1][1] if edges else rplus
    cen, rad = 0.5 * (lo_s + hi_s), 0.75 * (hi_s - lo_s) + 1e-3 * max(hi_s, 1.0)
    nth = 128
    th = (np.arange(nth // 2) + 0.5) * 2 * np.pi / nth
    zeta = cen + rad * np.exp(1j * th)
    mz, okz = stieltjes(chain, coef, zeta, eta_start=top + rad)
    moments = []
    for k in range(1, n_moments + 1):
        f = zeta ** k * mz * rad * np.exp(1j * th)
        mk = -(2.0 * np.sum(f).real) / nth    # lower half circle = complex conjugate of the upper half
        moments.append(mk * scale ** k)
    lower = edges[0][0] * scale if edges else rplus * scale
    upper = edges[-1][1] * scale if edges else rplus * scale
    return dict(x=x * scale, density=p / scale, weights=wts * scale, atoms=atoms, moments=np.array(moments),
                edges=(float(lower), float(upper)), error_estimate=err / scale)


_METHOD = ("Fan-Wang nested deterministic equivalents (two traces per level; per-unit offset laws by Gauss-Hermite "
           "quadrature, 40-320 nodes, doubled until the law's moments agree to 1e-9; NTK / FIM with offsets: a rank-two "
           "top level, 20 x 8 Gauss-Hermite nodes in (s, |v|), 2e-8 relative) solved by Newton's method "
           "(finite-difference Jacobian, |residual| <= 1e-13) along a continuation in Im zeta; density = "
           "Im m(x + i 1e-10 X)/pi on cosine grids over the support intervals (found on a 600-point pass, edges by 24 "
           "bisections at height 1e-15 X); error_estimate = max change of the density between heights 1e-10 X and "
           "1e-7 X; moments from the trapezoid rule for the contour integral of zeta^k m(zeta) on a circle around the "
           "support (256 points, exponentially convergent)")


def conjugate_kernel_spectrum(network: Network, samples_per_width: float, *, inputs: str = "gaussian",
                              n_points: int = 300, n_moments: int = 4) -> KernelSpectrum:
    r"""Limiting eigenvalue density of the conjugate kernel ``G_L = phi(H_L)^T phi(H_L) / N_L`` (n x n) of the last
    hidden layer, n / M = ``samples_per_width`` (Fan & Wang 2020, Theorem 3.4; see the module docstring).

    Parameters
    ----------
    network : Network
        One weight variance, any ``bias_var`` and activation (per-unit offsets, module docstring); widths
        ``N_l = alpha_l M`` from ``width_ratios`` (``alpha_0 M`` = input dimension).
    samples_per_width : float
        n / M.
    inputs : {"gaussian", "orthonormal"}
        ``x ~ N(0, I_d)`` (input Gram Marchenko-Pastur with ratio n/d) or exactly orthonormal inputs (``K_0 = I``).
    n_points, n_moments : int
        Grid size and number of moments.

    Returns
    -------
    KernelSpectrum
        In the units of ``G_L``; the bulk is that of the centred ``G_L`` (the mean part removed). With offsets
        (bias, or a non-centred activation) ``outliers`` holds the spike ``n E_s[mu_L(s)^2]`` (the CK's value for two
        orthogonal inputs, times n) per unit ``M`` (multiply by M); ``parameters["tau2"]`` the offset variances.

    Examples
    --------
    >>> from meanfield import Network
    >>> from meanfield.spectra import conjugate_kernel_spectrum
    >>> sp = conjugate_kernel_spectrum(Network("linear", depth=1), 0.5, inputs="orthonormal")
    >>> [round(float(m), 8) for m in sp.moments[:2]]     # Marchenko-Pastur, ratio 1/2: 1, 1 + 1/2
    [1.0, 1.5]
    >>> sp = conjugate_kernel_spectrum(Network("relu", depth=1, weight_var=2.0, bias_var=0.5), 0.5,
    ...                                inputs="orthonormal", n_points=32, n_moments=1)
    >>> # offset variance sigma_b^2; spike (n/M) E[relu(u) relu(u')] = 0.5 (q / 2 pi)(sin t + (pi - t) cos t),
    >>> # q = 2.5, cos t = 0.5 / 2.5 (arc-cosine kernel)
    >>> sp.parameters["tau2"], round(sp.outliers[0], 4)
    ([0.5], 0.2654)
    """
    st = _layer_statistics(network, samples_per_width, inputs)
    n_points = check_int("n_points", n_points, 16)
    n_moments = check_int("n_moments", n_moments, 1)
    L = network.depth
    r = np.zeros(L + 1)
    r[-1] = 1.0
    chain, rplus, c = _chain_coefficients(st, 0.0, r)
    scale = float(st["v"][-1])
    res = _spectrum_of_combination(chain, rplus, c, scale, n_points, n_moments)
    m1, m2 = _moments_closed_form(chain, rplus, c)
    outl = ()
    mu2 = float(st["mean2"][-1])
    if mu2 > 1e-20 * float(st["e"][-1]):
        outl = (samples_per_width * mu2,)
    params = dict(network=network.to_dict(), samples_per_width=float(samples_per_width), inputs=inputs,
                  b2=st["b2"].tolist(), gamma=st["gamma"].tolist(), q=st["q"].tolist(), tau2=st["tau2"].tolist(),
                  mean_square=mu2, offset_moments=[list(m) for m in _law_moments(chain)],
                  closed_form_m1=m1 * scale, closed_form_m2=m2 * scale ** 2, outlier_units="per width M")
    return KernelSpectrum(kind="conjugate_kernel", x=res["x"], density=res["density"], weights=res["weights"],
                          atoms=res["atoms"], moments=res["moments"], edges=res["edges"],
                          error_estimate=res["error_estimate"], method=_METHOD, parameters=params, outliers=outl)


def ntk_spectrum(network: Network, samples_per_width: float, *, inputs: str = "gaussian", n_points: int = 300,
                 n_moments: int = 4) -> KernelSpectrum:
    r"""Limiting eigenvalue density of the NTK ``Theta`` (n x n, NTK parameterization, scalar readout) in the
    linear-width regime (Fan & Wang 2020, Theorem 3.7): ``Theta ~ r_+ I + sum_j r_j K_j`` (module docstring).

    Parameters are those of :func:`conjugate_kernel_spectrum`, with ``c_l = 0`` below the top hidden layer (module
    docstring): no bias and centred activations in layers ``1..depth-2``, or ``depth = 1`` with any bias. The first
    moment is the library's :func:`meanfield.ntk_kernel` at ``x.x/d = 1`` less its value for two orthogonal inputs,
    which times ``n`` is the spike (``outliers``, per width M; the NTK's value for two orthogonal inputs,
    ``parameters["c_top"]`` the coefficient of the derivative-fluctuation term).

    Examples
    --------
    >>> from meanfield import Network
    >>> from meanfield.spectra import ntk_spectrum
    >>> sp = ntk_spectrum(Network("linear", depth=1), 0.5, inputs="orthonormal")
    >>> round(float(sp.moments[0]), 8)                 # Theta = K_0 + K_1 with K_0 = I: mean 2
    2.0
    """
    st = _layer_statistics(network, samples_per_width, inputs)
    n_points = check_int("n_points", n_points, 16)
    n_moments = check_int("n_moments", n_moments, 1)
    L = network.depth
    wv, bv = st["weight_var"], st["bias_var"]
    rplus, r, cL = _gradient_coefficients(st, [wv] * (L + 1), [bv] * (L + 1), "the NTK")
    chain, rp, c = _chain_coefficients(st, rplus, r, cL)
    res = _spectrum_of_combination(chain, rp, c, 1.0, n_points, n_moments)
    m1, m2 = _moments_closed_form(chain, rp, c)
    outl = ()
    spike = wv * float(st["mean2"][-1]) + bv + cL * float(st["beta"][-1])
    if spike > 1e-20 * float(st["e"][-1]):
        outl = (samples_per_width * spike,)
    params = dict(network=network.to_dict(), samples_per_width=float(samples_per_width), inputs=inputs,
                  r_plus=rplus, r=r.tolist(), c_top=cL, b2=st["b2"].tolist(), gamma=st["gamma"].tolist(),
                  q=st["q"].tolist(), tau2=st["tau2"].tolist(), closed_form_m1=m1, closed_form_m2=m2,
                  outlier_units="per width M")
    return KernelSpectrum(kind="ntk", x=res["x"], density=res["density"], weights=res["weights"], atoms=res["atoms"],
                          moments=res["moments"], edges=res["edges"], error_estimate=res["error_estimate"],
                          method=_METHOD, parameters=params, outliers=outl)


def fisher_spectrum(network: Network, width: int, n_samples: int, *, inputs: str = "gaussian", n_points: int = 300,
                    n_moments: int = 4) -> KernelSpectrum:
    r"""Limiting density of the non-zero eigenvalues of the empirical FIM ``F = J^T J / n`` (standard parameterization,
    scalar linear output, MSE; the convention of :func:`meanfield.fisher_statistics`) in the linear-width regime.

    ``F`` has the non-zero eigenvalues of ``J J^T / n = (1/n) sum_l N_{l-1} G_{l-1} o B_l``, i.e. of
    ``(M / n) (r^F_+ I + sum_j r^F_j K_j)`` with ``r^F_j = alpha_j v_j prod_{k>j} beta_k`` and
    ``r^F_+ = sum_j alpha_j e_j (prod_{k>j} chi_k - prod_{k>j} beta_k)`` (the NTK coefficients with fan-in ``N_j``
    instead of ``sigma_w^2``); they are a fraction ``nonzero_fraction = n / P`` of the ``P`` eigenvalues. With per-unit
    offsets (a non-centred activation, or a bias) the top layer adds ``c_L F`` (module docstring; supported when no
    layer below ``L - 1`` has a mean: depth 1 or 2 with any bias and activation) and the outlier is Karakida's
    ``lambda_max`` (:func:`meanfield.fisher_statistics` at this width and sample size); the bias gradients are O(1/M)
    in the standard parameterization and leave the bulk.

    Examples
    --------
    >>> from meanfield import Network
    >>> from meanfield.spectra import fisher_spectrum
    >>> sp = fisher_spectrum(Network("tanh", depth=2, weight_var=1.5), width=400, n_samples=200, n_points=32)
    >>> sp.parameters["n_params"], round(sp.nonzero_fraction, 6)      # 400 x 400 x 2 + 400 weights
    (320400, 0.000624)
    """
    width = check_int("width", width, 1)
    n_samples = check_int("n_samples", n_samples, 1)
    spw = n_samples / width
    st = _layer_statistics(network, spw, inputs)
    n_points = check_int("n_points", n_points, 16)
    n_moments = check_int("n_moments", n_moments, 1)
    alphas = np.asarray(network.alphas, dtype=float)
    L = network.depth
    # standard parameterization: the bias gradients enter J J^T / n with weight 1 / M relative to the weights'
    rplus, r, cL = _gradient_coefficients(st, alphas.tolist(), [0.0] * (L + 1), "the FIM")
    chain, rp, c = _chain_coefficients(st, rplus, r, cL)
    scale = width / n_samples
    res = _spectrum_of_combination(chain, rp, c, scale, n_points, n_moments)
    m1, m2 = _moments_closed_form(chain, rp, c)
    widths = [int(round(a * width)) for a in alphas] + [1]
    n_params = sum(widths[l] * widths[l + 1] for l in range(L + 1))
    outl = ()
    if float(st["mean2"][-1]) > 1e-20 * float(st["e"][-1]):
        from ..fisher import fisher_statistics
        outl = (float(fisher_statistics(network, width=width, n_samples=n_samples).lambda_max),)
    params = dict(network=network.to_dict(), width=width, n_samples=n_samples, inputs=inputs, r_plus=rplus,
                  r=r.tolist(), n_params=n_params, closed_form_m1=m1 * scale, closed_form_m2=m2 * scale ** 2)
    return KernelSpectrum(kind="fisher", x=res["x"], density=res["density"], weights=res["weights"],
                          atoms=res["atoms"], moments=res["moments"], edges=res["edges"],
                          error_estimate=res["error_estimate"], method=_METHOD, parameters=params, outliers=outl,
                          nonzero_fraction=n_samples / n_params)
