r"""Sampled finite deep linear networks (numpy only) against the exact and renormalized theory.

Every sample here draws the actual weight matrices ``W^l`` (entries ``N(0, sigma^2 / N_{l-1})``) and multiplies
them out; nothing uses the chi-square product / Meijer-G reduction of :mod:`meanfield.deep_linear`, so agreement is
an independent check of it.

* Prior: :func:`sample_prior_outputs` draws ``f(x) = W^L ... W^1 x`` (``L = depth + 1`` weight layers).
* Posterior (``p(W) ~ prior(W) prod_mu N(y_mu; f(x_mu), T)``, ``T >= 0``): :func:`sample_posterior` draws the upper
  layers ``W^L, W^{L-1}, ..., W^2`` (top down) from a proposal: the prior, with the readout's variance and, in each
  ``W^l``, the row-space direction ``a/|a|`` of the already drawn upper product ``a`` stretched by ``sqrt(g)``,
  ``g`` the BPKR factor ``u/sigma^2`` (only ``a W^l`` enters ``f``, so this puts the proposal where the posterior
  is; its density ratio to the prior is exact and elementary), and integrates the first layer exactly:
  given the top-down row vector ``v^T = W^L ... W^2``, ``f(x) = v^T W^1 x`` is a Gaussian process with kernel
  ``sigma^2 |v|^2 x.x' / N_0`` (elementary: ``f`` is linear in the Gaussian ``W^1``), so conditioning on the data is
  an exact Gaussian conditional (at ``T = 0`` the constraint ``f(X) = y`` is imposed exactly) and the sample's
  importance weight is ``prior/proposal * N(y; 0, sigma^2 |v|^2 X X^T / N_0 + T I)``.  Self-normalised importance
  sampling; the standard error comes from ``n_batches`` independent batches.
* :func:`validation_records` returns ``[{quantity, width, theory, simulated_mean, standard_error}, ...]`` for the
  validation runner; :func:`convergence_table` tabulates exact vs BPKR vs NNGP (the ``1/N`` approach).

This module imports only numpy and :mod:`meanfield.deep_linear` (no torch).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from meanfield._checks import check_finite_array, check_int, check_nonneg, check_positive
from meanfield.deep_linear import (bpkr, deep_linear_posterior, deep_linear_prior, deep_linear_prior_density,
                                   nngp_linear_posterior)

__all__ = [
    "sample_prior_outputs",
    "sample_posterior",
    "make_dataset",
    "validation_records",
    "convergence_table",
]

_CHUNK_FLOATS = 1 << 22  # ~32 MB of float64 per weight tensor chunk


def _widths(width, depth):
    if isinstance(width, (list, tuple, np.ndarray)):
        ws = [check_int(f"width[{i}]", int(w), 1) for i, w in enumerate(width)]
        if len(ws) != depth:
            raise ValueError(f"width must be an integer or a sequence of length depth={depth}")
        return ws
    return [check_int("width", width, 1)] * depth


def sample_prior_outputs(x, depth: int, width, weight_var: float = 1.0, n_samples: int = 10000,
                         seed: int = 0) -> np.ndarray:
    """Outputs ``f(x)`` of ``n_samples`` independently drawn deep linear networks (actual weight matrices).

    Parameters
    ----------
    x : array (N_0,)
        Input.
    depth : int
        Hidden layers ``depth >= 0`` (``L = depth + 1`` weight layers).
    width : int or sequence of int
        Hidden widths.
    weight_var : float
        ``sigma^2``; ``W^l_ij ~ N(0, sigma^2 / N_{l-1})``.
    n_samples : int
        Number of networks.
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    ndarray (n_samples,)

    Examples
    --------
    >>> f = sample_prior_outputs(np.ones(4), depth=2, width=3, n_samples=2000)
    >>> bool(abs(np.mean(f ** 2) - 1) < 0.2)
    True
    """
    x = check_finite_array("x", x)
    if x.ndim != 1:
        raise ValueError("x must be a 1-d input vector")
    depth = check_int("depth", depth, 0)
    ws = _widths(width, depth)
    sigma2 = check_positive("weight_var", weight_var)
    n_samples = check_int("n_samples", n_samples, 1)
    rng = np.random.default_rng(seed)
    dims = [x.size] + ws + [1]
    biggest = max(dims[i] * dims[i + 1] for i in range(len(dims) - 1))
    chunk = max(1, _CHUNK_FLOATS // biggest)
    out = np.empty(n_samples)
    for start in range(0, n_samples, chunk):
        b = min(chunk, n_samples - start)
        h = np.broadcast_to(x, (b, x.size))
        for l in range(1, len(dims)):
            W = rng.standard_normal((b, dims[l], dims[l - 1])) * math.sqrt(sigma2 / dims[l - 1])
            h = np.einsum("bij,bj->bi", W, h)
        out[start:start + b] = h[:, 0]
    return out


def sample_posterior(X, y, X_test, depth: int, width, weight_var: float = 1.0, temperature: float = 0.0,
                     n_samples: int = 20000, n_batches: int = 20, seed: int = 0,
                     proposal: str = "bpkr") -> dict:
    r"""Posterior statistics of finite deep linear networks by importance sampling of actual weight matrices.

    See the module docstring for the scheme (upper layers sampled, first layer integrated exactly).

    Parameters
    ----------
    X, y : arrays (P, N_0), (P,)
        Training data.
    X_test : array (n, N_0)
        Test inputs.
    depth, width, weight_var, temperature : the network and the posterior temperature ``T >= 0``.
    n_samples : int
        Total number of weight draws (split into ``n_batches`` equal batches).
    n_batches : int
        Independent batches for the standard error (>= 2).
    seed : int
        Seed.
    proposal : {"bpkr", "prior"}
        Scale each upper layer's prior variance by the BPKR factor ``g_l`` or sample the prior itself.

    Returns
    -------
    dict
        ``mean``, ``mean_se``, ``variance``, ``variance_se`` (arrays over test inputs), ``scale_mean``,
        ``scale_mean_se`` (``E[S|y]``, ``S = |v|^2 / sigma^{2(L-1)}``), ``ess`` (effective sample size, pooled),
        ``n_samples``.
    """
    X = check_finite_array("X", X)
    y = check_finite_array("y", y)
    Xt = np.atleast_2d(check_finite_array("X_test", X_test))
    if X.ndim != 2 or y.shape != (X.shape[0],) or Xt.shape[1] != X.shape[1]:
        raise ValueError("X must be (P, N_0), y (P,), X_test (n, N_0)")
    depth = check_int("depth", depth, 1)
    ws = _widths(width, depth)
    sigma2 = check_positive("weight_var", weight_var)
    T = check_nonneg("temperature", temperature)
    n_samples = check_int("n_samples", n_samples, 2)
    n_batches = check_int("n_batches", n_batches, 2)
    if proposal not in ("bpkr", "prior"):
        raise ValueError(f"proposal must be 'bpkr' or 'prior', got {proposal!r}")
    P, n0 = X.shape
    gam = np.ones(depth)
    if proposal == "bpkr":
        gam = np.clip(np.array(bpkr(X, y, depth, ws, sigma2, T).u) / sigma2, 0.05, 20.0)
    G = X @ X.T
    lam, U = np.linalg.eigh(G)
    if T == 0.0 and np.min(lam) <= 1e-10 * np.max(lam):
        raise ValueError("temperature=0 needs X of full row rank (P <= N_0)")
    yt = U.T @ y
    kt = (Xt @ X.T) @ U  # (n, P)
    ktt = np.sum(Xt * Xt, axis=1)
    rng = np.random.default_rng(seed)

    per = n_samples // n_batches
    logw_all, m_all, v_all, s_all = [], [], [], []
    biggest = max(ws[i] * ws[i + 1] for i in range(depth - 1)) if depth > 1 else 1
    chunk = max(1, _CHUNK_FLOATS // biggest)
    for _ in range(n_batches):
        done = 0
        while done < per:
            b = min(chunk, per - done)
            done += b
            # readout W^L (1 x N_{L-1}), prior variance sigma^2 / N_{L-1}, proposal variance gam_{L-1} times that
            nl = ws[-1]
            g = gam[-1]
            a = rng.standard_normal((b, nl)) * math.sqrt(g * sigma2 / nl)
            logr = 0.5 * nl * math.log(g) - (nl / (2 * sigma2)) * (1 - 1 / g) * np.sum(a * a, axis=1)
            for l in range(depth, 1, -1):  # W^l: N_l x N_{l-1}, fan-in N_{l-1}; proposal factor gam_{l-1}
                n_out, n_in = ws[l - 1], ws[l - 2]
                g = gam[l - 2]
                W = rng.standard_normal((b, n_out, n_in)) * math.sqrt(sigma2 / n_in)
                # stretch the row-space direction a/|a| by sqrt(g): only a W^l enters f, so only it is tilted
                ahat = a / np.linalg.norm(a, axis=1, keepdims=True)
                proj = np.einsum("bi,bij->bj", ahat, W)  # ahat^T W, (b, n_in)
                W += (math.sqrt(g) - 1.0) * ahat[:, :, None] * proj[:, None, :]
                proj *= math.sqrt(g)
                # prior / proposal = g^{n_in/2} exp(-(n_in / 2 sigma^2)(1 - 1/g) |ahat^T W|^2)
                logr += 0.5 * n_in * math.log(g) - (n_in / (2 * sigma2)) * (1 - 1 / g) * np.sum(proj * proj, axis=1)
                a = np.einsum("bi,bij->bj", a, W)
            c = sigma2 * np.sum(a * a, axis=1) / n0  # f = theta.x, theta ~ N(0, c I)
            d = c[:, None] * lam[None, :] + T  # eigenvalues of c X X^T + T
            loglik = -0.5 * np.sum(yt ** 2 / d + np.log(2 * np.pi * d), axis=1)
            alpha = yt[None, :] / d  # (b, P)
            m = c[:, None] * (alpha @ kt.T)  # (b, n)
            v = c[:, None] * ktt[None, :] - c[:, None] ** 2 * ((1.0 / d) @ (kt.T ** 2))
            logw_all.append(logr + loglik)
            m_all.append(m)
            v_all.append(np.maximum(v, 0.0))
            s_all.append(c * n0 / sigma2 ** (depth + 1))
    logw = np.concatenate(logw_all)
    M = np.concatenate(m_all)
    V = np.concatenate(v_all)
    S = np.concatenate(s_all)
    nb = len(logw) // n_batches

    def estimate(idx):
        lw = logw[idx]
        w = np.exp(lw - np.max(lw))
        w /= np.sum(w)
        mean = w @ M[idx]
        var = w @ V[idx] + w @ (M[idx] - mean) ** 2
        return mean, var, float(w @ S[idx]), float(1.0 / np.sum(w * w))

    batches = [estimate(slice(i * nb, (i + 1) * nb)) for i in range(n_batches)]
    mean, var, smean, ess = estimate(slice(0, nb * n_batches))
    bm = np.array([bt[0] for bt in batches])
    bv = np.array([bt[1] for bt in batches])
    bs = np.array([bt[2] for bt in batches])
    k = math.sqrt(n_batches)
    return {"mean": mean, "mean_se": bm.std(axis=0, ddof=1) / k, "variance": var,
            "variance_se": bv.std(axis=0, ddof=1) / k, "scale_mean": smean,
            "scale_mean_se": float(bs.std(ddof=1) / k), "ess": ess, "n_samples": nb * n_batches}


def make_dataset(n_examples: int = 4, input_dim: int = 8, ratio: float = 3.0, n_test: int = 1, seed: int = 0):
    r"""Gaussian inputs and targets rescaled so that ``Q/P = y^T K^{-1} y / P = ratio`` (``K = X X^T / N_0``).

    ``ratio > 1`` means the data ask for a larger output scale than the prior's, so finite width renormalizes the
    kernel upward (``u_0 > sigma^2``).  Returns ``X (P, N_0), y (P,), X_test (n_test, N_0)``.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_examples, input_dim))
    y = rng.standard_normal(n_examples)
    Q = y @ np.linalg.solve(X @ X.T / input_dim, y)
    y *= math.sqrt(ratio * n_examples / Q)
    return X, y, rng.standard_normal((n_test, input_dim))


def validation_records(widths: Optional[Sequence[int]] = None, depth: int = 2, weight_var: float = 1.0,
                       n_samples: Optional[int] = None, temperatures: Sequence[float] = (0.0, 0.1), seed: int = 0,
                       quick: bool = False) -> list:
    r"""Exact finite-width theory vs sampled deep linear networks, for the validation runner.

    Quantities (each at every width; prior at ``|x|^2/N_0 = 1``, posterior on :func:`make_dataset` with ``P = 4``,
    ``N_0 = 8``, ``Q/P = 3``):

    * ``deep_linear.prior_variance`` ``E f^2 = sigma^{2L}``; ``deep_linear.prior_fourth_moment``
      ``3 prod (1 + 2/N)``; ``deep_linear.prior_prob_within_sd`` ``P(|f| < s)`` from the Meijer-G density
      (standard errors: sample std / sqrt(n) and the binomial sqrt(p(1-p)/n));
    * ``deep_linear.posterior_variance[T=...]``, ``deep_linear.posterior_scale[T=...]`` (``E[S|y]``) and, for
      ``T > 0``, ``deep_linear.posterior_mean[T=...]`` (at ``T = 0`` every draw interpolates, so the mean has no
      sampling error): exact (Meijer-G at ``T = 0``, quadrature at ``T > 0``) vs importance sampling (batch s.e.).

    Parameters
    ----------
    widths : sequence of int, optional
        Default ``(2, 4, 8, 16, 32)`` (``quick``: ``(2, 4, 8, 16)``).
    n_samples : int, optional
        Networks per width; default 20000 (``quick``: 5000).  About 8 s for the default on one CPU core.
    quick : bool
        Smaller defaults (the validation runner's smoke test).

    Returns
    -------
    list of dict
        ``{"quantity", "width", "theory", "simulated_mean", "standard_error"}``.
    """
    if widths is None:
        widths = (2, 4, 8, 16) if quick else (2, 4, 8, 16, 32)
    if n_samples is None:
        n_samples = 5000 if quick else 20000
    depth = check_int("depth", depth, 1)
    recs = []
    n0 = 8
    x = np.ones(n0)
    for k, N in enumerate(widths):
        N = check_int("width", N, 1)
        pr = deep_linear_prior(depth, N, weight_var, 1.0)
        f = sample_prior_outputs(x, depth, N, weight_var, n_samples, seed=seed + 1000 + k)
        s = math.sqrt(pr.variance)
        from scipy.integrate import quad

        p_in = 2 * quad(lambda t: deep_linear_prior_density(t, depth, N, weight_var, 1.0), 0.0, s,
                        epsabs=1e-12, limit=200)[0]
        ind = (np.abs(f) < s).astype(float)
        recs += [
            _rec("deep_linear.prior_variance", N, pr.variance, f ** 2),
            _rec("deep_linear.prior_fourth_moment", N, pr.fourth_moment, f ** 4),
            {"quantity": "deep_linear.prior_prob_within_sd", "width": N, "theory": float(p_in),
             "simulated_mean": float(ind.mean()), "standard_error": float(math.sqrt(p_in * (1 - p_in) / f.size))},
        ]
    X, y, Xt = make_dataset(4, n0, 3.0, 1, seed=seed)
    for j, T in enumerate(temperatures):
        for k, N in enumerate(widths):
            ex = deep_linear_posterior(X, y, depth, N, weight_var, T, Xt)
            mc = sample_posterior(X, y, Xt, depth, N, weight_var, T, n_samples=n_samples,
                                  seed=seed + 2000 + 100 * j + k)
            tag = f"[T={T:g}]"
            if T > 0:  # at T = 0 every sample interpolates, so the mean is exact in each draw (s.e. = 0)
                recs.append({"quantity": "deep_linear.posterior_mean" + tag, "width": int(N),
                             "theory": float(ex.mean[0]), "simulated_mean": float(mc["mean"][0]),
                             "standard_error": float(mc["mean_se"][0])})
            recs += [
                {"quantity": "deep_linear.posterior_variance" + tag, "width": int(N),
                 "theory": float(ex.variance[0]), "simulated_mean": float(mc["variance"][0]),
                 "standard_error": float(mc["variance_se"][0])},
                {"quantity": "deep_linear.posterior_scale" + tag, "width": int(N), "theory": float(ex.scale_mean),
                 "simulated_mean": float(mc["scale_mean"]), "standard_error": float(mc["scale_mean_se"])},
            ]
    return recs


def _rec(name, width, theory, samples):
    return {"quantity": name, "width": int(width), "theory": float(theory), "simulated_mean": float(samples.mean()),
            "standard_error": float(samples.std(ddof=1) / math.sqrt(samples.size))}


def convergence_table(widths: Sequence[int] = (4, 8, 16, 32, 64, 128, 256, 512, 1024), depth: int = 2,
                      alpha: float = 0.5, alpha0: float = 0.5, ratio: float = 3.0, weight_var: float = 1.0,
                      seed: int = 0) -> list:
    r"""Exact vs BPKR vs NNGP predictive variance at fixed ``alpha = P/N`` (Li-Sompolinsky's limit), no sampling.

    For each width ``N``: ``P = round(alpha N)`` examples of dimension ``N_0 = round(P / alpha0)``, targets with
    ``Q/P = ratio``.  Returns dicts with ``width``, ``exact``, ``bpkr``, ``nngp`` (predictive variance at one test
    input) and ``n_gap = N (exact / bpkr - 1)``, which tends to a constant: the exact result approaches the
    renormalized theory as ``1/N``, while both stay away from the NNGP.
    """
    rows = []
    for N in widths:
        P = max(1, int(round(alpha * N)))
        n0 = max(P, int(round(P / alpha0)))
        X, y, Xt = make_dataset(P, n0, ratio, 1, seed=seed)
        ex = deep_linear_posterior(X, y, depth, N, weight_var, 0.0, Xt)
        bp = bpkr(X, y, depth, N, weight_var, 0.0, Xt)
        ng = nngp_linear_posterior(X, y, depth, weight_var, 0.0, Xt)
        rows.append({"width": int(N), "examples": P, "input_dim": n0, "exact": float(ex.variance[0]),
                     "bpkr": float(bp.variance[0]), "nngp": float(ng.variance[0]),
                     "n_gap": float(N * (ex.variance[0] / bp.variance[0] - 1.0))})
    return rows
