r"""Random finite networks against the 1/width corrections of :mod:`meanfield.finite_width`.

:func:`simulate_corrections` draws torch ensembles (:func:`meanfield.validation.networks.sample_chain`, NTK
parameterization, one output unit) at one width on two inputs and returns, per network, the metric
``G^l = C_b + C_W h^{l-1}.h'^{l-1}/n_{l-1}`` of every Dense layer (``E[G^l] = E[q^l]`` exactly, with less noise than
``q^l`` itself: ``q^l`` is ``G^l`` times an independent chi-square average) and the NTK ``Theta(x, x)``.
:func:`ladder` runs a ladder of widths and fits ``M (simulated - infinite width) = a + b / M`` for

* ``q^l(x,x)``, ``q^l(x,x')``: ``M (E[G^l]/K^l - 1)``, predicted ``a = K1^l / K^l``;
* the mean NTK: ``M (E[Theta(x,x)]/Theta - 1)``, predicted ``Theta1 / Theta``;
* the output kurtosis: ``3 M Var(G^L(x,x)) / E[G^L]^2`` (the excess kurtosis of one output unit is exactly
  ``3 Var(G^L) / E[G^L]^2``, the outputs being Gaussian given ``G^L``), predicted ``3 v^L / (K^L)^2``;
* the NTK variance: ``M Var(Theta(x,x)) / E[Theta]^2``, predicted ``(a + 2 b) / Theta^2``, and the same for
  ``Theta(x,x')``, predicted ``(a + b + c) / Theta^2``.

Standard errors come from batch means (20 batches). :class:`FiniteWidthLadder` holds the records and fits and writes
a markdown table with the predicted ``a`` next to the fitted one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from .._checks import check_int
from ..finite_width import finite_width_corrections
from ..trace import as_chain
from .measure import pair_inputs
from .networks import sample_chain

__all__ = ["simulate_corrections", "ladder", "FiniteWidthLadder", "fit_coefficient"]

_N_BATCH = 20


def simulate_corrections(network, width: int, n_seeds: int, *, inputs=(1.0, 1.0, 0.5), seed: int = 0,
                         device="cpu", dtype="float64", chunk_bytes: int = 2 ** 27) -> dict:
    """Per-network samples at one width: ``{"G": (S, L, 3)`` metric entries ``(xx, xx', x'x')`` per Dense layer,
    ``"theta": (S, 2)`` the NTK ``Theta(x, x)``, ``Theta(x, x')`` of the single output}."""
    chain = as_chain(network)
    width = check_int("width", width, 2)
    n_seeds = check_int("n_seeds", n_seeds, 2)
    probe = sample_chain(chain, width, 1, n_outputs=1, parameterization="ntk", seed=seed, device=device,
                         dtype=dtype)
    per = max(1, min(n_seeds, chunk_bytes // max(1, 8 * probe.n_params)))
    x = pair_inputs(probe.input_width, *inputs, dtype=probe.dtype, device=probe.device)
    Gs, ths = [], []
    for start in range(0, n_seeds, per):
        n = min(per, n_seeds - start)
        ens = sample_chain(chain, width, n, n_outputs=1, parameterization="ntk", seed=seed, first_index=start,
                           device=device, dtype=dtype)
        op = ens.order_parameters(x)
        G = []
        for d, qh in zip(ens.dense, op["qhat"]):
            g = d.layer.weight_var * qh + d.layer.bias_var
            G.append(np.stack([g[:, 0, 0], g[:, 0, 1], g[:, 1, 1]], -1))
        Gs.append(np.stack(G, 1))
        ths.append(np.stack([op["ntk"][:, 0, 0], op["ntk"][:, 0, 1]], -1))
        del ens, op
    return {"G": np.concatenate(Gs), "theta": np.concatenate(ths)}


def _batches(x, n=_N_BATCH):
    return np.array_split(np.asarray(x), n)


def _mean_se(stat, *arrays):
    """``stat`` on the full sample and its batch-means standard error."""
    full = stat(*arrays)
    parts = [stat(*p) for p in zip(*[_batches(a) for a in arrays])]
    return float(full), float(np.std(parts, ddof=1) / math.sqrt(len(parts)))


def fit_coefficient(widths, values, errors) -> dict:
    """Weighted least squares of ``values = a + b / M`` (weights ``1/errors^2``): ``a``, its standard error, ``b``,
    and the chi^2 per degree of freedom."""
    M = np.asarray(widths, float)
    y = np.asarray(values, float)
    s = np.asarray(errors, float)
    cols = [np.ones_like(M), 1.0 / M] if M.size >= 3 else [np.ones_like(M)]   # a + b/M needs 3 widths
    A = np.vstack(cols).T / s[:, None]
    coef, *_ = np.linalg.lstsq(A, y / s, rcond=None)
    cov = np.linalg.inv(A.T @ A)
    coef, cov = np.append(coef, 0.0)[:2], np.pad(cov, (0, 2 - cov.shape[0]))
    resid = (y - coef[0] - coef[1] / M) / s
    dof = max(len(M) - len(cols), 1)
    return dict(a=float(coef[0]), a_se=float(math.sqrt(cov[0, 0])), b=float(coef[1]),
                b_se=float(math.sqrt(cov[1, 1])), chi2_per_dof=float(resid @ resid / dof))


def _predictions(network, inputs):
    n1, n2, ov = inputs
    fw = finite_width_corrections(network, gram=[[n1, ov], [ov, n2]])
    pred = {}
    for l in range(2, fw.depth + 1):
        K = fw.kernel[l - 1]
        pred[f"q^{l}(x,x)"] = (float(K[0, 0]), float(fw.kernel_correction[l - 1, 0, 0] / K[0, 0]))
        pred[f"q^{l}(x,x')"] = (float(K[0, 1]), float(fw.kernel_correction[l - 1, 0, 1] / K[0, 1]))
    pred["Theta(x,x)"] = (float(fw.ntk[-1, 0, 0]), float(fw.ntk_correction[-1, 0] / fw.ntk[-1, 0, 0]))
    pred["output kurtosis"] = (0.0, float(fw.output_kurtosis[0]))
    pred["Var Theta(x,x) / Theta^2"] = (0.0, float(fw.relative_ntk_variance[-1, 0, 0]))
    pred["Var Theta(x,x') / Theta^2"] = (0.0, float(fw.relative_ntk_variance[-1, 0, 1]))
    return fw, pred


def _measure(samples, pred, width):
    """``{quantity: (M * deviation, SE)}`` from the per-network samples of one width."""
    G, th = samples["G"], samples["theta"]
    M = float(width)
    out = {}
    L = G.shape[1]
    for l in range(2, L + 1):                    # G^1 is deterministic (fixed inputs)
        for e, tag in ((0, "(x,x)"), (1, "(x,x')")):
            K = pred[f"q^{l}{tag}"][0]
            m, se = _mean_se(lambda g: np.mean(g) / K - 1.0, G[:, l - 1, e])
            out[f"q^{l}{tag}"] = (M * m, M * se)
    T = pred["Theta(x,x)"][0]
    m, se = _mean_se(lambda t: np.mean(t) / T - 1.0, th[:, 0])
    out["Theta(x,x)"] = (M * m, M * se)
    m, se = _mean_se(lambda g: 3.0 * np.var(g, ddof=1) / np.mean(g) ** 2, G[:, -1, 0])
    out["output kurtosis"] = (M * m, M * se)
    for e, tag in ((0, "(x,x)"), (1, "(x,x')")):
        m, se = _mean_se(lambda t: np.var(t, ddof=1) / np.mean(t) ** 2, th[:, e])
        out[f"Var Theta{tag} / Theta^2"] = (M * m, M * se)
    return out


@dataclass(frozen=True)
class FiniteWidthLadder:
    """Records ``(config, quantity, width, M*deviation, SE, predicted a)`` and fits ``(config, quantity, predicted
    a, fitted a, SE, b, chi^2/dof)`` of a ladder run; ``meta`` the settings and timings."""

    meta: dict
    records: list
    fits: list

    def to_dict(self) -> dict:
        return dict(meta=self.meta, records=self.records, fits=self.fits)

    def fit(self, config: str, quantity: str) -> dict:
        for f in self.fits:
            if f["config"] == config and f["quantity"] == quantity:
                return f
        raise KeyError(f"no fit for config={config!r}, quantity={quantity!r}")

    def to_markdown(self) -> str:
        m = self.meta
        lines = ["# Finite-width corrections: predicted O(1/M) coefficients against torch ensembles", "",
                 f"Generated by `{m['command']}` on {m['device']} in {m['elapsed_s']:.0f} s, {m['date']}. "
                 f"Widths {m['widths']}; networks per width {m['n_seeds']}; inputs `x.x/M_0, x'.x'/M_0, x.x'/M_0 = "
                 f"{m['inputs']}`; one output unit, NTK parameterization.", "",
                 "Each row: the quantity's deviation from infinite width times M, `M (sim - inf)` (relative for q), "
                 "at every width with its batch-means SE, the weighted fit `M (sim - inf) = a + b/M`, and the "
                 "predicted `a` of `meanfield.finite_width_corrections`. `q^l` is measured as the metric "
                 "`G^l = C_b + C_W h^{l-1}.h'^{l-1}/n_{l-1}` (same expectation as `q^l`, less noise). "
                 "z = (fitted a - predicted a) / SE.", ""]
        for cfg in m["configs"]:
            name = cfg["name"]
            lines += [f"## `{name}`: {cfg['description']}", "",
                      "| quantity | predicted a | fitted a ± SE | z | b | chi2/dof | "
                      + " | ".join(f"M={w}" for w in m["widths"]) + " |",
                      "|---|---|---|---|---|---|" + "---|" * len(m["widths"])]
            for f in [f for f in self.fits if f["config"] == name]:
                recs = sorted([r for r in self.records if r["config"] == name and r["quantity"] == f["quantity"]],
                              key=lambda r: r["width"])
                cells = " | ".join(f"{r['value']:+.3g} ± {r['se']:.2g}" for r in recs)
                lines.append(f"| `{f['quantity']}` | {f['predicted']:+.4g} | {f['a']:+.4g} ± {f['a_se']:.2g} | "
                             f"{f['z']:+.1f} | {f['b']:+.3g} | {f['chi2_per_dof']:.2f} | {cells} |")
            lines.append("")
        return "\n".join(lines)


def ladder(configs: Sequence[tuple], widths: Sequence[int] = (16, 32, 64, 128, 256, 512),
           n_seeds=None, *, inputs=(1.0, 1.0, 0.5), seed: int = 0, device="cpu", dtype="float64",
           min_width_fit: int = 16, log=print, command: str = "meanfield.validation.finite_width_sim.ladder"
           ) -> FiniteWidthLadder:
    """Run ``configs`` (``(name, network, description)``) on the width ladder; ``n_seeds`` an int or a mapping
    width -> number of networks. Rows whose prediction is exactly 0 (``q^1``, ``q^2``) are kept as checks."""
    import platform
    import time

    t0 = time.time()
    widths = tuple(int(w) for w in widths)
    seeds = {w: (n_seeds[w] if isinstance(n_seeds, dict) else int(n_seeds or 2000)) for w in widths}
    say = log or (lambda *a, **k: None)
    records, fits, cfg_meta = [], [], []
    for name, network, desc in configs:
        fw, pred = _predictions(network, inputs)
        cfg_meta.append(dict(name=name, description=desc, network=network.to_dict()))
        per_q = {}
        for M in widths:
            t1 = time.time()
            s = simulate_corrections(network, M, seeds[M], inputs=inputs, seed=seed, device=device, dtype=dtype)
            for q, (v, se) in _measure(s, pred, M).items():
                records.append(dict(config=name, quantity=q, width=M, value=v, se=se, predicted=pred[q][1],
                                    n_networks=seeds[M]))
                per_q.setdefault(q, []).append((M, v, se))
            say(f"[finite-width] {name}: width {M}: {seeds[M]} networks in {time.time() - t1:.1f} s")
        for q, rows in per_q.items():
            rows = [r for r in rows if r[0] >= min_width_fit]
            Ms, vs, ses = zip(*rows)
            f = fit_coefficient(Ms, vs, np.maximum(ses, 1e-300))
            z = (f["a"] - pred[q][1]) / f["a_se"] if f["a_se"] > 0 else float("nan")
            fits.append(dict(config=name, quantity=q, predicted=pred[q][1], z=float(z), **f))
    meta = dict(command=command, device=f"{device} ({platform.machine()}, torch {torch.__version__}, "
                f"{torch.get_num_threads()} threads, {dtype})", widths=list(widths),
                n_seeds=[seeds[w] for w in widths], inputs=list(inputs), seed=seed, configs=cfg_meta,
                elapsed_s=time.time() - t0, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    return FiniteWidthLadder(meta, records, fits)
