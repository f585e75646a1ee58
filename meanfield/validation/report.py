r"""Theory against simulation on a ladder of widths: the ``python -m meanfield.validation run`` driver and its report.

For every validation network (default: tanh with ``L = 4`` weight layers and relu with ``L = 3``, as in
docs/mathematics.md section 5) and every width of the ladder, :func:`run_validation` draws ``n_seeds`` random networks,
measures

* forward order parameters ``q^l(x,x)``, ``q^l(x,x')``, ``c^l`` and backward ones ``qtilde_1^l``, ``qtilde_2^l``,
  ``chi_1^l`` at every hidden layer, against :func:`meanfield.forward.forward` / :func:`meanfield.backward.backward`;
* the NNGP (output covariance over seeds) and the NTK (NTK and standard parameterization) on ``(x, x')``, against
  :mod:`meanfield.kernels`;
* the FIM mean eigenvalue, second moment and largest eigenvalue (standard parameterization, ``T`` Gaussian inputs,
  ``C`` outputs) and the NTK-parameterization ``J J^T`` spectrum, against :mod:`meanfield.fisher`;

and trains one width by full-batch gradient descent at learning rates around ``eta_c = 2 / lambda_max``. Each record
gives the theory value, the simulated mean over networks, its standard error, the relative error, and the relative
RMS deviation of a single network; each (network, quantity) series gets fitted exponents of the error and of the
single-network fluctuation against width, and a weighted fit of an ``a / M`` bias.

The work is split by role: :mod:`meanfield.validation.theory` assembles the library's values,
:mod:`meanfield.validation.simulate` measures the random networks, :mod:`meanfield.validation.fitting` makes the
records and the fits against width; this module holds the configuration, :func:`run_validation` that ties them
together, and the result :class:`ValidationReport` with its markdown, JSON and plots.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from .._checks import check_int
from .._io import atomic_open, check_writable_dir
from ..network import Network
from .fitting import ENSEMBLE_ONLY, fit_series, make_record
from .networks import resolve_device, resolve_dtype
from .simulate import default_settings, simulate_width, train_near_critical
from .theory import (finite_width_bias, fisher_theory, resolve_inputs, standard_ntk_theory,
                     width_independent_theory)

__all__ = ["ValidationConfig", "ValidationReport", "default_configs", "fit_series", "run_validation"]


# --------------------------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ValidationConfig:
    """One validation network and its inputs.

    ``input_norm``, ``input_norm2``, ``input_overlap`` are the ``qhat^0`` of :func:`meanfield.forward.forward`
    (``x.x/M_0`` etc.); ``None`` for ``input_norm`` puts ``q^1`` at the fixed point ``q*`` (so every layer's
    ``chi_1^l`` equals the library's ``chi1``) and ``input_overlap=None`` gives ``c^1 = 0.5``.
    """

    name: str
    network: Network
    n_outputs: int = 3
    n_samples: int = 32
    input_norm: Optional[float] = None
    input_norm2: Optional[float] = None
    input_overlap: Optional[float] = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["network"] = self.network.to_dict()
        return d


def default_configs() -> list:
    """tanh (depth 3, sigma_w^2 = 1.5, sigma_b^2 = 0.1) and relu (depth 2, sigma_w^2 = 1.8, sigma_b^2 = 0.1, q* = 1)."""
    return [
        ValidationConfig("tanh", Network("tanh", depth=3, weight_var=1.5, bias_var=0.1)),
        ValidationConfig("relu", Network("relu", depth=2, weight_var=1.8, bias_var=0.1)),
    ]


# --------------------------------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ValidationReport:
    """Result of :func:`run_validation`: ``meta`` (device, dtype, settings, timings), ``records`` (one per network,
    quantity and width), ``fits`` (one per network and quantity), ``training`` (per network), ``checks``
    (agreement between independent routes inside the library and the simulation) and ``deep_linear`` (records from
    :mod:`meanfield.validation.deep_linear`)."""

    meta: dict
    records: list
    fits: list
    training: list
    checks: dict
    deep_linear: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(meta=self.meta, records=self.records, fits=self.fits, training=self.training,
                    checks=self.checks, deep_linear=self.deep_linear)

    @classmethod
    def from_json(cls, path: str) -> "ValidationReport":
        """Load a report written by :meth:`save` (e.g. to re-plot it without re-running the networks)."""
        with open(path) as fh:
            d = json.load(fh)
        d = _unjson(d)
        return cls(d["meta"], d["records"], d["fits"], d["training"], d["checks"], d.get("deep_linear", []))

    def fit(self, config: str, quantity: str) -> dict:
        for f in self.fits:
            if f["config"] == config and f["quantity"] == quantity:
                return f
        raise KeyError(f"no fit for config={config!r}, quantity={quantity!r}")

    # ---- interpretation ------------------------------------------------------------------------------------------
    def _interpretation(self) -> list:
        """Bullets that explain each family of rows, with the ranges measured in this run."""
        def sel(pred):
            return [f for f in self.fits if pred(f)]

        def rng(fs, key):
            v = [f[key] for f in fs if np.isfinite(f[key])]
            return (min(v), max(v)) if v else (float("nan"), float("nan"))

        def exps(fs, key="error_exponent"):
            return ", ".join(f"{f['config']} {f[key]:+.2f} ± {f[key + '_se']:.2f}" for f in fs) or "n/a"

        selfavg = sel(lambda f: f["group"] in ("forward", "backward", "NTK")
                      or f["quantity"] in ("m_lambda", "NTK mean eigenvalue", "K(x,x') readout-averaged"))
        lo, hi = rng(selfavg, "fluctuation_exponent")
        amax = max((abs(f["bias_coefficient"]) for f in selfavg), default=float("nan"))
        nres = sum(f["bias_resolved"] for f in selfavg)
        keys = {(f["config"], f["quantity"]) for f in selfavg}
        z = np.array([abs(r["relative_error"]) / r["relative_standard_error"] for r in self.records
                      if (r["config"], r["quantity"]) in keys and r["relative_standard_error"] > 0])
        out = [
            f"* **Self-averaging order parameters** (q, c, qtilde, chi_1, the NTK entries in both parameterizations, "
            f"the readout-averaged NNGP, the FIM mean eigenvalue `m_lambda` and the NTK mean eigenvalue; {len(selfavg)} rows): single-network "
            f"fluctuation exponents {lo:+.2f} to {hi:+.2f} (expected -1/2: a mean over ~M units). Their O(1/M) biases "
            f"are small, `|a| <= {amax:.2g}` in `relative error = a/M`, so with these ensembles the mean is "
            f"noise-limited ({nres} of {len(selfavg)} rows resolved): of the {z.size} (row, width) comparisons, "
            f"{int(np.sum(z > 2))} differ from theory by more than 2 SE and {int(np.sum(z > 3))} by more than 3 SE "
            f"(Gaussian noise alone: about {0.0455 * z.size:.0f} and {0.0027 * z.size:.1f}). `q^1` and `q^2` are exactly unbiased (`u^1` is Gaussian given the fixed inputs, and "
            f"`E[q^2 | h^1] = sigma_w^2 |h^1|^2/M_1 + sigma_b^2` with `E|h^1|^2/M_1 = qhat^1` exactly). For "
            f"`m_lambda` two O(1/M) bookkeeping terms have opposite signs: the exact P exceeds `alpha M^2` (readout "
            f"and biases), while the trace gains the bias gradients `sum_l qtilde^l`.",
            f"* **Second moment `s_lambda`**: a sum of squares of the dual entries, so the O(M^{{1/2}}) fluctuation "
            f"of each entry adds its variance: a positive bias O(1/M), resolved; fitted error exponents "
            f"{exps(sel(lambda f: f['quantity'] == 's_lambda'))} (expected -1).",
            f"* **Largest eigenvalues** (`lambda_max` of the FIM; `NTK lambda_max`): the outlier is C-fold degenerate "
            f"at infinite width and split by O(M^{{-1/2}}) fluctuations in one network; the largest of the C is "
            f"biased upward at that order (order statistics), plus O(1/M) corrections. Fitted error exponents: FIM "
            f"{exps(sel(lambda f: f['quantity'] == 'lambda_max'))}; NTK "
            f"{exps(sel(lambda f: f['quantity'] == 'NTK lambda_max'))} (between -1/2 and -1: fluctuation-dominated). "
            f"This upward bias also makes the theory's `eta_c = 2/lambda_max` slightly optimistic at finite width "
            f"(training section).",
            f"* **Smallest NTK eigenvalue** `kappa'_1 - kappa'_2` (NTK lambda_min): the bulk of the `T x T` block "
            f"spreads by O(sqrt(T/M)) at finite width and its lower edge is approached slowly: exponents "
            f"{exps(sel(lambda f: f['quantity'] == 'NTK lambda_min'))} over this range (docs/mathematics.md: still ~10% low at "
            f"width 8192); compare condition numbers with this in mind.",
            f"* **NNGP** `K(x,x)`, `K(x,x')`: the covariance of the outputs over the ensemble; one network holds only C "
            f"samples of it, so its error is set by the number of seeds, not by width (single-network exponents "
            f"{exps(sel(lambda f: f['quantity'] in ENSEMBLE_ONLY), 'fluctuation_exponent')}, about 0; 'seed "
            f"noise'). The row `K(x,x') readout-averaged` averages the readout weights out analytically "
            f"(`E[f f' | h^{{L-1}}] = sigma_w^2 h.h'/M + sigma_b^2`, same expectation, no readout noise) and is "
            f"self-averaging like `q^l`.",
        ]
        return out

    # ---- markdown ------------------------------------------------------------------------------------------------
    def to_markdown(self) -> str:
        m = self.meta
        lines = [
            "# Validation: mean-field theory against random finite networks",
            "",
            f"Generated by `{m['command']}` on **{m['device_description']}** (torch {m['torch_version']}, "
            f"{m['dtype']}, up to {m['torch_threads']} threads: one once other processes kept cores busy) in "
            f"{m['elapsed_s']:.0f} s, {m['date']}.",
            "",
            f"**Device** {m['device']} ({m['device_description']}); **precision** {m['dtype']}; **time** "
            f"{m['elapsed_s']:.0f} s in total; **scale** {m.get('scale', 'n/a')}. " + _gpu_note(m),
            "",
            "| capability | what is checked | rows | time (s) | status |",
            "|---|---|---|---|---|",
        ] + [f"| `{c['name']}` | {c['title']} | {c['n_records']} | {c['elapsed_s']:.1f} | {c['status']} |"
             for c in m.get("capabilities", [])] + [
            "",
            f"Width ladder (capability `ladder`): widths {m['settings']['widths']}; {m['settings']['n_seeds']} "
            f"independent networks per width; Fisher statistics with T = {m['settings']['n_samples']} Gaussian "
            f"inputs; master seed {m['seed']}. Each other capability has its own widths and ensemble (its section).",
            "",
            "Columns: theory (infinite width, from the library), simulated mean over the networks at the largest width "
            "and its standard error (SE), relative error `(sim - theory)/|theory|` and its ratio to the SE, the fitted "
            "exponent of `|relative error|` against width, the weighted `a/M` fit of the relative error, and the "
            "relative standard deviation of a *single* network with its exponent.",
            "",
            "## How to read the exponents",
            "",
            "Two different errors shrink with width. (1) The **bias** of an averaged quantity: the expectation over "
            "random networks of `q^l`, `qtilde^l`, the FIM moments, ... differs from the infinite-width value by "
            "`O(1/M)` (finite-width corrections enter the mean at second order in the `O(M^{-1/2})` fluctuations). "
            "Expected error exponent **-1**. (2) The **fluctuation** of one network: its value is a mean over `~M` "
            "weakly dependent units and deviates from theory by `O(M^{-1/2})`: expected exponent **-1/2** "
            "(column 'single-net exp.'); a quantity *defined* by one network's extreme eigenvalue inherits that "
            "`M^{-1/2}` as a bias. The mean of S networks carries noise `SE ~ M^{-1/2}/sqrt(S)`; where that noise "
            "exceeds the bias, the error of the mean is *noise-limited*: its fitted exponent then describes the SE "
            "(about -1/2, with large scatter), not the bias, and the weighted `a/M` fit bounds the bias instead. "
            "Rows marked 'bias' have `|error| > 2 SE` at every width. Column 'a predicted': the O(1/M) bias "
            "`K1^l / K^l` of the mean metric from `meanfield.finite_width_corrections` (docs/finite_width.md), for the "
            "rows whose mean is a layer's metric (`q^l`, the output covariances), and `Theta1/Theta` for the "
            "NTK-parameterization `Theta(x,x)`; validation/finite_width/README.md resolves them with larger "
            "ensembles.",
            "",
        ] + (self._interpretation() if m["configs"] else []) + [""]
        widths = m["settings"]["widths"]
        Mmax = max(widths)
        for cfg in m["configs"]:
            name = cfg["name"]
            lines += [f"## Network `{name}`", "", "```", json.dumps(cfg["network"]), "```", "",
                      f"Inputs: `x.x/M_0 = {cfg['inputs'][0]:.6g}`, `x'.x'/M_0 = {cfg['inputs'][1]:.6g}`, "
                      f"`x.x'/M_0 = {cfg['inputs'][2]:.6g}`; C = {cfg['n_outputs']} outputs.", ""]
            lines += ["| group | quantity | theory | sim. mean (M=%d) | SE | rel. error | err/SE | error exp. | regime "
                      "| a (rel. err = a/M) | a predicted | single-net rel. std | single-net exp. |" % Mmax,
                      "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for f in [f for f in self.fits if f["config"] == name]:
                r = [r for r in self.records if r["config"] == name and r["quantity"] == f["quantity"]
                     and r["width"] == Mmax][0]
                ratio = r["relative_error"] / r["relative_standard_error"] if r["relative_standard_error"] > 0 else 0
                lines.append(
                    f"| {f['group']} | `{f['quantity']}` | {r['theory']:.6g} | {r['simulated_mean']:.6g} | "
                    f"{r['standard_error']:.2g} | {r['relative_error']:+.2e} | {ratio:+.1f} | "
                    f"{f['error_exponent']:+.2f} ± {f['error_exponent_se']:.2f} | {f['regime']} | "
                    f"{f['bias_coefficient']:+.3g} ± {f['bias_coefficient_se']:.2g} | {_predicted_cell(f)} | "
                    f"{r['single_network_relative_std']:.2e} | {f['fluctuation_exponent']:+.2f} |")
            srcs = sorted({r["theory_source"] for r in self.records if r["config"] == name})
            lines += ["", "Theory sources: " + "; ".join(f"`{s}`" for s in srcs) + ".", ""]
        lines += self._capability_markdown()
        lines += ["## Checks between independent routes", "", "| check | value |", "|---|---|"]
        for k, v in self.checks.items():
            lines.append(f"| {k} | {v:.3g} |" if isinstance(v, float) else f"| {k} | {v} |")
        lines += ["", "`torch_func_vs_layerwise`: the NTK from `torch.func.jacrev` Jacobian contraction against the "
                  "exact layerwise Gram `sum_l (delta.delta')(s_w^2 h.h' + s_b^2)` used for every record (relative, "
                  "largest over the networks checked).", ""]
        lines += ["## Gradient descent around the critical learning rate", "",
                  "Full-batch GD on `(1/2T) sum_t ||y_t - f(x_t)||^2` (standard parameterization, targets "
                  "`y ~ N(0, 1)`, Gaussian inputs). Learning rates: `eta = factor * eta_c` with `eta_c = 2 / "
                  "lambda_max` from the theory at this width (anchor 'theory'), and `factor * 2 / lambda_max(F)` "
                  "with each network's own measured `lambda_max` at initialization (anchor 'network'). Linear "
                  "stability: the residual along the top eigenvector of the dual `F* = J J^T / T` is multiplied by "
                  "`1 - eta lambda_max` per step, so it shrinks for `eta lambda_max / 2 < 1` and grows beyond "
                  "('top-mode ratio' after 1 and 5 steps, linear prediction `|1 - eta lambda_max|^k` in brackets). "
                  "A finite network above the threshold may still converge after a transient (the catapult of "
                  "Lewkowycz et al. 2020): the sharpness `lambda_max(F)` falls until `eta lambda_max / 2 <= 1` "
                  "(column 'final eta lambda_max/2'); far above the threshold it diverges (loss above 1000 x "
                  "initial or overflow). Medians over the networks.", ""]
        for tr in self.training:
            lines += [f"**{tr['config']}**, width {tr['width']}, {tr['n_networks']} networks, T = {tr['n_samples']}, "
                      f"C = {tr['n_outputs']}, {tr['n_steps']} steps: theory `eta_c = {tr['eta_critical_theory']:.4g}`, "
                      f"measured `2/lambda_max` = {tr['eta_critical_empirical_mean']:.4g} ± "
                      f"{tr['eta_critical_empirical_std']:.2g} (mean ± std over networks).", "",
                      "| anchor | factor | eta lambda_max / 2 | top-mode ratio, step 1 (linear) | step 5 (linear) | "
                      "final eta lambda_max / 2 | diverged | max loss / initial | final loss / initial |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for run in tr["runs"]:
                lines.append(f"| {run['anchor']} | {run['lr_factor']:.2f} | {run['eta_lambda_emp_over_2']:.3f} | "
                             f"{run['median_top_mode_ratio_step1']:.3g} ({run['linear_prediction_step1']:.3g}) | "
                             f"{run['median_top_mode_ratio_step5']:.3g} ({run['linear_prediction_step5']:.3g}) | "
                             f"{run['median_final_sharpness_eta_over_2']:.3g} | {run['fraction_diverged']:.0%} | "
                             f"{run['median_max_loss_ratio']:.3g} | {run['median_final_loss_ratio']:.3g} |")
            lines.append("")
        if self.deep_linear:
            lines += ["## Deep linear networks (meanfield.validation.deep_linear)", "",
                      "| quantity | width | theory | sim. mean | SE | rel. error |", "|---|---|---|---|---|---|"]
            for r in self.deep_linear:
                th = float(r["theory"])
                rel = (float(r["simulated_mean"]) - th) / abs(th) if th != 0 else float("nan")
                lines.append(f"| {r['quantity']} | {r['width']} | {th:.6g} | {float(r['simulated_mean']):.6g} | "
                             f"{float(r['standard_error']):.2g} | {rel:+.2e} |")
            lines.append("")
        elif m.get("deep_linear_status"):
            lines += ["## Deep linear networks", "", m["deep_linear_status"], ""]
        if m.get("plots"):
            lines += ["## Plots", ""] + [f"![{p}]({p})" for p in m["plots"]] + [""]
        return "\n".join(lines)

    def _capability_markdown(self) -> list:
        """One section per capability of :mod:`meanfield.validation.checks` run: description and the same table
        columns as the ladder's, with the expected error scaling of each row."""
        lines = []
        for cap in self.meta.get("capabilities", []):
            fits = [f for f in self.fits if f["config"] == cap["name"]]
            if not fits:
                continue
            import re

            desc = re.sub(r":\w+:`~?", "`", cap["description"]).replace("``", "`")
            z = [abs(r["relative_error"]) / r["relative_standard_error"]
                 for f in fits for r in self._series(cap["name"], f["quantity"]) if r["relative_standard_error"] > 0]
            nb = sum(f["regime"] == "bias" for f in fits)
            lines += [f"## Capability `{cap['name']}`: {cap['title']}", "", desc, "",
                      f"Widths {fits[0]['widths']}; {cap['elapsed_s']:.1f} s. {len(fits)} rows, {nb} with a resolved "
                      f"bias (|error| > 2 SE at every width); of the {len(z)} (row, width) comparisons "
                      f"{sum(v > 2 for v in z)} differ from theory by more than 2 SE and {sum(v > 3 for v in z)} by "
                      f"more than 3 SE (noise alone: about {0.0455 * len(z):.1f} and {0.0027 * len(z):.2f}; the rows "
                      "of one capability share networks, so their deviations are correlated).", "",
                      "| quantity | theory | sim. mean (largest M) | SE | rel. error | err/SE | error exp. | regime | "
                      "expected exp. | a (rel. err = a/M) | single-net rel. std | single-net exp. |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|"]
            for f in fits:
                r = self._series(cap["name"], f["quantity"])[-1]
                ratio = r["relative_error"] / r["relative_standard_error"] if r["relative_standard_error"] > 0 else 0
                lines.append(
                    f"| `{f['quantity']}` | {r['theory']:.6g} | {r['simulated_mean']:.6g} | "
                    f"{r['standard_error']:.2g} | {r['relative_error']:+.2e} | {ratio:+.1f} | "
                    f"{f['error_exponent']:+.2f} ± {f['error_exponent_se']:.2f} | {f['regime']} | "
                    f"{f.get('expected', '')} | {f['bias_coefficient']:+.3g} ± {f['bias_coefficient_se']:.2g} | "
                    f"{r['single_network_relative_std']:.2e} | {f['fluctuation_exponent']:+.2f} |")
            srcs = sorted({r["theory_source"] for r in self.records if r["config"] == cap["name"]})
            lines += ["", "Theory sources: " + "; ".join(f"`{x}`" for x in srcs) + ".", ""]
        return lines

    # ---- plots ---------------------------------------------------------------------------------------------------
    def _series(self, config: str, quantity: str) -> list:
        """The records of one (network, quantity) series, by increasing width."""
        return sorted((r for r in self.records if r["config"] == config and r["quantity"] == quantity),
                      key=lambda r: r["width"])

    @staticmethod
    def _math_label(quantity: str) -> str:
        """A quantity key as a label with mathtext: ``qtilde_1^1`` -> ``$\\tilde q_1^{1}$``, ``NTK lambda_max`` ->
        ``NTK $\\lambda_{\\max}$``; words stay text, symbols become math, token by token."""
        import re

        def math(t):
            t = t.replace("lambda_max", r"\lambda_{\max}").replace("m_lambda", r"m_\lambda")
            t = t.replace("s_lambda", r"s_\lambda").replace("lambda^", r"\lambda^")
            t = t.replace("qtilde", r"\tilde q").replace("Theta", r"\Theta").replace("chi", r"\chi")
            t = re.sub(r"(?<![A-Za-z\\])eta", r"\\eta", t)
            t = t.replace("_SP", r"_{\mathrm{SP}}").replace("Var", r"\mathrm{Var}")
            t = t.replace("xi_", r"\xi_").replace("*", r"^{*}")
            t = re.sub(r"_(\d\d+)", r"_{\1}", t)
            return "$" + re.sub(r"\^(\d+)", r"^{\1}", t) + "$"

        symbolic = re.compile(r"[\^_()\[\]/=]|^(Theta|M|x|t|Var|eta|C-1|lambda_max|[0-9.]+)$")
        words = re.compile(r"^\([A-Za-z -]+\)$")                         # "(orthogonal)", "(CE)": text
        return " ".join(r"$\times$" if tok == "x" else math(tok) if symbolic.search(tok) and not words.match(tok)
                        else tok for tok in quantity.split(" "))

    def plot(self, out_dir: str, dpi: int = 100) -> list:
        """Write PNG figures into ``out_dir``: per network, theory vs simulation against width for a
        representative set of quantities, and the error scaling; the GD loss curves. Returns the file names."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        os.makedirs(out_dir, exist_ok=True)
        files = []

        def finish(fig, fn):
            fig.tight_layout()
            _save_png(fig, os.path.join(out_dir, fn), dpi)
            plt.close(fig)
            files.append(fn)

        for cfg in self.meta["configs"]:
            name = cfg["name"]
            L = cfg["network"]["depth"] + 1
            qs = [f"q^{L - 1}(x,x)", f"c^{L - 1}", "qtilde_1^1", "chi_1^1", "K(x,x')", "Theta(x,x')",
                  "m_lambda", "s_lambda", "lambda_max"]
            labels = [rf"$q^{{{L - 1}}}(x,x)$", rf"$c^{{{L - 1}}}$", r"$\tilde q_1^{1}$", r"$\chi_1^{1}$",
                      r"NNGP $K(x,x')$", r"NTK $\Theta(x,x')$", r"$m_\lambda$", r"$s_\lambda$", r"$\lambda_{\max}$"]
            fig, axes = plt.subplots(3, 3, figsize=(11, 9))
            for ax, q, lab in zip(axes.ravel(), qs, labels):
                rs = self._series(name, q)
                if not rs:
                    ax.set_visible(False)
                    continue
                M = np.array([r["width"] for r in rs])
                th = np.array([r["theory"] for r in rs])
                mu = np.array([r["simulated_mean"] for r in rs])
                se = np.array([r["standard_error"] for r in rs])
                sd = np.array([r["single_network_relative_std"] * abs(r["theory"]) for r in rs])
                ax.plot(M, th, "k-", lw=1.5, label=r"theory ($M=\infty$)" if q not in ("m_lambda", "lambda_max")
                        else "theory")
                ax.fill_between(M, mu - sd, mu + sd, color="C0", alpha=0.15, label="single network ±1 std")
                ax.errorbar(M, mu, yerr=se, fmt="o", color="C0", ms=4, capsize=3, label="mean ± SE")
                ax.set_xscale("log", base=2)
                if q in ("m_lambda", "lambda_max"):
                    ax.set_yscale("log")
                ax.set_xlabel("width $M$")
                ax.set_ylabel(lab)
                ax.set_title(lab, fontsize=10)
            axes.ravel()[0].legend(fontsize=7)
            fig.suptitle(f"{name}: theory vs {self.meta['settings']['n_seeds']} random networks "
                         f"({self.meta['device']})")
            finish(fig, f"{name}_theory_vs_width.png")

            # error scaling
            fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
            sel = [f"q^{L - 1}(x,x)", "qtilde_1^1", "chi_1^1", "Theta(x,x)", "m_lambda", "s_lambda", "lambda_max",
                   "NTK lambda_max"]
            for i, q in enumerate(sel):
                rs = self._series(name, q)
                if not rs:
                    continue
                M = np.array([r["width"] for r in rs], float)
                e = np.abs([r["relative_error"] for r in rs])
                s = np.array([r["relative_standard_error"] for r in rs])
                fl = np.array([r["single_network_relative_std"] for r in rs])
                axes[0].errorbar(M, e, yerr=s, fmt="o-", color=f"C{i}", ms=3, capsize=2, label=self._math_label(q))
                axes[1].plot(M, fl, "o-", color=f"C{i}", ms=3, label=self._math_label(q))
            for ax, p, ttl in ((axes[0], -1.0, "|relative error of the mean| (± SE)"),
                               (axes[1], -0.5, "single-network relative std")):
                Mr = np.array([min(self.meta["settings"]["widths"]), max(self.meta["settings"]["widths"])], float)
                yl = ax.get_ylim()
                ref = np.sqrt(yl[0] * yl[1]) if yl[0] > 0 else 1e-2
                ax.plot(Mr, ref * (Mr / Mr[0]) ** p, "k--", lw=1, label=f"slope {p:g}")
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_xlabel("width $M$")
                ax.set_title(ttl, fontsize=10)
            axes[0].set_ylabel("relative error")
            axes[0].legend(handles=[axes[0].lines[-1]], fontsize=7, loc="lower left")
            axes[1].set_ylabel(r"std / |theory|")
            axes[1].legend(fontsize=7, ncol=2)
            fig.suptitle(f"{name}: error scaling with width")
            finish(fig, f"{name}_error_scaling.png")
        for cap in self.meta.get("capabilities", []):
            qs = list(dict.fromkeys(r["quantity"] for r in self.records if r["config"] == cap["name"]))
            if not qs:
                continue
            fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
            allM = []
            for i, q in enumerate(qs):
                rs = self._series(cap["name"], q)
                M = np.array([r["width"] for r in rs], float)
                allM += list(M)
                e = np.abs([r["relative_error"] for r in rs])
                se = np.array([r["relative_standard_error"] for r in rs])
                fl = np.array([r["single_network_relative_std"] for r in rs])
                style = dict(color=f"C{i % 10}", marker="os^vDP*Xhd"[(i // 10) % 10], ms=3)
                axes[0].errorbar(M, e, yerr=se, ls="-", capsize=2, label=self._math_label(q), **style)
                axes[1].plot(M, fl, ls="-", label=self._math_label(q), **style)
            Mr = np.array([min(allM), max(allM)], float)
            for ax, p, ttl in ((axes[0], -1.0, "|relative error of the mean| (± SE)"),
                               (axes[1], -0.5, "single-network relative std")):
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                yl = ax.get_ylim()
                ref = math.sqrt(yl[0] * yl[1]) if yl[0] > 0 else 1e-2
                ax.plot(Mr, ref * (Mr / Mr[0]) ** p, "k--", lw=1, label=f"slope {p:g}")
                ax.set_xlabel("width $M$")
                ax.set_title(ttl, fontsize=10)
            axes[0].set_ylabel("relative error")
            axes[0].legend(handles=[axes[0].lines[-1]], fontsize=7, loc="lower left")
            axes[1].set_ylabel(r"std / |theory|")
            axes[1].legend(fontsize=6, ncol=2)
            if any("batch" in str(r.get("expected", "")) for r in self.records if r["config"] == cap["name"]):
                axes[1].set_title("relative std of one batch estimate (ensemble statistics)", fontsize=10)
            fig.suptitle(f"{cap['name']}: {cap['title']} ({self.meta['device']}, {self.meta['dtype']})", fontsize=10)
            finish(fig, f"{cap['name']}_error_scaling.png")
        if self.training:
            n = len(self.training)
            fig, axes = plt.subplots(2, n, figsize=(5.5 * n, 7.5), squeeze=False)
            for j, tr in enumerate(self.training):
                ax, ax2 = axes[0, j], axes[1, j]
                for i, run in enumerate(tr["runs"]):
                    if run.get("anchor", "theory") == "theory":
                        lab = rf"$\eta = {run['lr_factor']:g}\,\eta_c$"
                    else:
                        lab = rf"$\eta = {run['lr_factor']:g}\cdot 2/\lambda_{{\max}}$(net)"
                    curve = np.asarray(run["median_loss_curve"], float)
                    curve = np.where(np.isfinite(curve), curve, np.nan)
                    ls = "-" if run.get("anchor", "theory") == "theory" else "--"
                    ax.plot(np.arange(curve.size), curve, color=f"C{i}", ls=ls, label=lab)
                    sh = np.asarray(run["median_sharpness_eta_over_2"], float)
                    ax2.plot(run["sharpness_steps"], sh, marker="o", ls=ls, color=f"C{i}", ms=3, label=lab)
                ax.set_yscale("log")
                ax.set_xlabel("GD step")
                ax.set_ylabel("loss / initial loss (median)")
                ax.set_title(f"{tr['config']}, M = {tr['width']}: " + r"$\eta_c = 2/\lambda_{\max}$ (theory)",
                             fontsize=10)
                ax.legend(fontsize=8)
                ax2.axhline(1.0, color="k", lw=1, ls="--")
                ax2.set_xscale("symlog", linthresh=1)
                ax2.set_xlim(0, tr["n_steps"])
                ax2.set_yscale("log")
                ax2.set_xlabel("GD step")
                ax2.set_ylabel(r"$\eta\,\lambda_{\max}(F)/2$ (median)")
                ax2.set_title("sharpness along training (stable below the dashed line)", fontsize=10)
            finish(fig, "gd_learning_rate_threshold.png")
        return files

    def save(self, out_dir: str) -> dict:
        """Write ``validation.json``, ``README.md`` (the markdown report) and the plots into ``out_dir``."""
        os.makedirs(out_dir, exist_ok=True)
        plots = self.plot(out_dir)
        self.meta["plots"] = plots
        with atomic_open(os.path.join(out_dir, "validation.json"), "w") as fh:
            json.dump(_jsonable(self.to_dict()), fh, indent=1)
        with atomic_open(os.path.join(out_dir, "README.md"), "w", encoding="utf-8") as fh:
            fh.write(self.to_markdown())
        return dict(json=os.path.join(out_dir, "validation.json"), markdown=os.path.join(out_dir, "README.md"),
                    plots=[os.path.join(out_dir, p) for p in plots])


def _share_cpu(dev, max_threads: int) -> int:
    """On the CPU, lower torch's thread count to the cores other processes leave free (measured now) and return the
    count in use. Measured on the 2-core machine with one other busy process: two threads made the small-tensor
    training checks 20-50 times slower than one (each short parallel region waits for a time slice on the busy core).
    The count is only ever lowered, never raised again: with torch 2.13's oneMKL build, any explicit
    ``torch.set_num_threads(n > 1)`` breaks the batched LU of ``torch.linalg.solve`` for the rest of the process
    ("Parameter 6 was incorrect on entry to DLASWP"), so a run that had to go down to one thread stays there."""
    current = torch.get_num_threads()
    if dev.type != "cpu" or current <= 1:
        return current
    from .._cpu_share import free_cores

    free_cores()
    time.sleep(0.25)    # two readings of /proc/stat: the share of the cores over the last quarter second
    n = max(1, min(int(max_threads), free_cores()))
    if n < current:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def _gpu_note(meta: dict) -> str:
    """A sentence on how the run relates to the GPU ladder."""
    if meta.get("device") == "cuda":
        return "Full GPU scale (widths up to 8192 for the checks, batched over networks)."
    return ("No GPU was used: this is the CPU report (smaller widths and ensembles); the GPU scale runs with "
            "`python -m meanfield.validation run --device cuda`.")


def _predicted_cell(fit: dict) -> str:
    """The predicted ``a`` of :func:`meanfield.finite_width_corrections` for a row, blank where none."""
    a = fit.get("predicted_bias_coefficient")
    if a is None:
        return ""
    return "0" if abs(a) < 1e-12 else f"{a:+.3g}"     # exact zeros (q^1, q^2, relu's diagonal) up to rounding


def _save_png(fig, path: str, dpi: int) -> None:
    """Write ``fig`` to ``path`` atomically (temporary file in the same folder, then os.replace)."""
    with atomic_open(path) as fh:
        fig.savefig(fh, dpi=dpi, format="png")


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else str(v)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj


def _unjson(obj):
    if isinstance(obj, dict):
        return {k: _unjson(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unjson(v) for v in obj]
    if isinstance(obj, str) and obj in ("inf", "-inf", "nan"):
        return float(obj)
    return obj


# --------------------------------------------------------------------------------------------------------------------
# the driver
# --------------------------------------------------------------------------------------------------------------------
def _deep_linear_records(quick: bool) -> tuple:
    """Records of :func:`meanfield.validation.deep_linear.validation_records` (JSON-ready) and a status line; a
    failure there is reported in the status, not raised."""
    from .deep_linear import validation_records

    try:
        recs = validation_records(quick=quick)
    except Exception as exc:  # report, do not hide
        return [], f"meanfield.validation.deep_linear.validation_records failed: {type(exc).__name__}: {exc}"
    out = [_jsonable(dict(r)) for r in recs]
    return out, f"{len(out)} records from meanfield.validation.deep_linear.validation_records"


def run_validation(quick: bool = False, device=None, out: Optional[str] = None, *, dtype="float64", seed: int = 0,
                   configs: Optional[Sequence[ValidationConfig]] = None, widths: Optional[Sequence[int]] = None,
                   n_seeds: Optional[int] = None, train: bool = True, deep_linear: bool = True,
                   log: Optional[Callable] = print, only: Union[None, str, Sequence[str]] = None
                   ) -> ValidationReport:
    r"""Compare every theory quantity of the library with random finite networks on a ladder of widths.

    Parameters
    ----------
    quick : bool
        Small widths (16-256) and few networks: every capability in under 2 minutes on a CPU.
    device : None, "cpu" or "cuda"
        Default CUDA when available. The full ladder is 64..512 on CPU and 64..8192 on GPU; most other checks
        also reach width 8192 on GPU.
    out : str, optional
        Folder for ``validation.json``, ``README.md`` and the PNG plots (nothing is written if None).
    dtype : "float64" or "float32"
    seed : int
        Master seed; network ``i`` at every width is drawn from the generator seeded by ``(seed, i)``.
    configs : sequence of ValidationConfig, optional
        Default :func:`default_configs`.
    widths, n_seeds : optional overrides of the ladder and of the number of networks per width.
    train : bool
        Run the gradient-descent learning-rate experiment.
    deep_linear : bool
        Include the records of :func:`meanfield.validation.deep_linear.validation_records`.
    log : callable or None
        Progress messages.
    only : None, str or sequence of str
        Capabilities to run (:data:`meanfield.validation.capabilities.CAPABILITIES`, e.g. ``"ladder,dropout"``);
        default all. ``train=False`` / ``deep_linear=False`` drop ``gd_threshold`` / ``deep_linear``. ``widths`` and
        ``n_seeds`` override the ladder's settings only (each other check has its own ladder per scale: quick, CPU,
        GPU).

    Returns
    -------
    ValidationReport

    Examples
    --------
    >>> from meanfield.validation import run_validation
    >>> rep = run_validation(quick=True, device="cpu", log=None)     # doctest: +SKIP
    >>> rep.fit("tanh", "m_lambda")["error_exponent"]                 # doctest: +SKIP
    """
    t0 = time.time()
    if out is not None:  # fail before the computation, not after it
        out = check_writable_dir(out, "out")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype)
    seed = check_int("seed", seed, 0)
    st = dict(default_settings(bool(quick), dev))
    if widths is not None:
        ws = tuple(check_int("widths[i]", int(w) if isinstance(w, (np.integer,)) else w, 2) for w in widths)
        if len(ws) < 2:
            raise ValueError("widths must hold at least 2 widths (for the exponent fits)")
        st["widths"] = tuple(sorted(set(ws)))
        st["train_width"] = min(st["train_width"], max(st["widths"]))
    if n_seeds is not None:
        st["n_seeds"] = check_int("n_seeds", n_seeds, 2)
    configs = list(default_configs() if configs is None else configs)
    if not configs:
        raise ValueError("configs must hold at least one ValidationConfig")
    for c in configs:
        if not isinstance(c, ValidationConfig):
            raise TypeError(f"configs must hold ValidationConfig objects, got {type(c).__name__}")
        if c.network.dropout_keep != 1.0:
            raise ValueError(f"config {c.name!r}: dropout_keep must be 1 (the ladder's networks have no dropout; "
                             "dropout is validated by the 'dropout' capability)")
    from .capabilities import CAPABILITIES, resolve_only
    from .checks import CheckContext

    names = resolve_only(only)
    if not train and "gd_threshold" in names:
        names.remove("gd_threshold")
    if not deep_linear and "deep_linear" in names:
        names.remove("deep_linear")
    say = log if log is not None else (lambda *a, **k: None)
    max_threads = torch.get_num_threads()
    records, checks, training, cfg_meta = [], {}, [], []
    predicted = {}
    cap_meta = {}
    t_ladder = time.time()
    for cfg in (configs if ("ladder" in names or "gd_threshold" in names) else []):
        inputs = resolve_inputs(cfg)
        predicted.update({(cfg.name, q): a for q, a in finite_width_bias(cfg, inputs).items()})
        th_fixed, chk = width_independent_theory(cfg, inputs)
        checks.update({f"{cfg.name}: {k}": v for k, v in chk.items()})
        if "ladder" in names:
            cfg_meta.append(dict(cfg.to_dict(), inputs=list(inputs)))
        eta_c = None
        for M in (st["widths"] if "ladder" in names else ()):
            _share_cpu(dev, max_threads)
            t1 = time.time()
            th = dict(th_fixed)
            th["Theta_SP(x,x)"], th["Theta_SP(x,x')"] = standard_ntk_theory(cfg.network, M, inputs)
            thf, eta = fisher_theory(cfg.network, M, st["n_samples"], cfg.n_outputs)
            th.update(thf)
            if M == st["train_width"]:
                eta_c = eta
            samples, chk = simulate_width(cfg, inputs, M, st, dev, dt, seed)
            checks[f"{cfg.name}: M={M}: torch_func_vs_layerwise_max_rel_diff"] = chk[
                "torch_func_vs_layerwise_max_rel_diff"]
            for q, (val, src) in th.items():
                records.append(make_record(cfg.name, q, M, val, src, samples[q]))
            say(f"[validation] {cfg.name}: width {M}: {st['n_seeds']} networks in {time.time() - t1:.1f} s")
        if "gd_threshold" in names:
            if eta_c is None:
                _, eta_c = fisher_theory(cfg.network, st["train_width"], st["n_samples"], cfg.n_outputs)
            t1 = time.time()
            training.append(train_near_critical(cfg, st, eta_c, dev, dt, seed))
            say(f"[validation] {cfg.name}: gradient descent at width {st['train_width']} in {time.time() - t1:.1f} s")
    n_ladder = len(records)
    t_ladder = time.time() - t_ladder
    for nm, n_rec in (("ladder", n_ladder), ("gd_threshold", len(training))):
        if nm in names:
            cap_meta[nm] = dict(CAPABILITIES[nm].to_dict(), elapsed_s=t_ladder if nm == "ladder" else 0.0,
                                n_records=n_rec, status="ok")
    if "gd_threshold" in names and "ladder" in names:
        cap_meta["gd_threshold"]["status"] = "ok (time included in ladder)"
    scale = "quick" if quick else ("gpu" if dev.type == "cuda" else "cpu")
    ctx = CheckContext(scale, dev, dt, seed, chunk_bytes=int(st["chunk_bytes"]))
    for nm in names:
        cap = CAPABILITIES[nm]
        if cap.run is None:
            continue
        threads = _share_cpu(dev, max_threads)
        t1 = time.time()
        try:
            recs = cap.run(ctx)
            status = "ok"
        except Exception as exc:  # report, do not hide: the other capabilities still run
            recs, status = [], f"failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
        records += recs
        cap_meta[nm] = dict(cap.to_dict(), elapsed_s=time.time() - t1, n_records=len(recs), status=status,
                            torch_threads=threads)
        say(f"[validation] {nm}: {len(recs)} rows in {time.time() - t1:.1f} s ({status})")
    fits = []
    keys = []
    for r in records:
        k = (r["config"], r["quantity"])
        if k not in keys:
            keys.append(k)
    for k in keys:
        fits.append(dict(fit_series([r for r in records if (r["config"], r["quantity"]) == k]),
                         predicted_bias_coefficient=predicted.get(k)))
    t1 = time.time()
    dl, dl_status = (_deep_linear_records(quick) if "deep_linear" in names
                     else ([], "deep-linear comparison not requested"))
    if "deep_linear" in names:
        cap_meta["deep_linear"] = dict(CAPABILITIES["deep_linear"].to_dict(), elapsed_s=time.time() - t1,
                                       n_records=len(dl), status="ok" if dl else dl_status)
    if dev.type == "cuda":
        desc = f"GPU: {torch.cuda.get_device_name(dev)}"
    else:
        desc = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} logical cores visible)"
    cmd = "python -m meanfield.validation run" + (" --quick" if quick else "") + f" --device {dev.type}"
    if dt != torch.float64:
        cmd += " --dtype float32"
    if seed:
        cmd += f" --seed {seed}"
    if widths is not None:
        cmd += " --widths " + ",".join(str(w) for w in st["widths"])
    if n_seeds is not None:
        cmd += f" --n-seeds {st['n_seeds']}"
    if configs is not None and [c.name for c in configs] != [c.name for c in default_configs()]:
        cmd += " (custom configs)"
    if only is not None:
        cmd += " --only " + ",".join(names)
    else:
        if not train:
            cmd += " --no-train"
        if not deep_linear:
            cmd += " --no-deep-linear"
    meta = dict(command=cmd, device=dev.type, device_description=desc,
                torch_version=torch.__version__, torch_threads=max_threads, dtype=str(dt).replace(
                    "torch.", ""), seed=seed, quick=bool(quick), settings=_jsonable(st),
                configs=_jsonable(cfg_meta), elapsed_s=time.time() - t0,
                date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), deep_linear_status=dl_status,
                scale=scale, capabilities=[cap_meta[n] for n in names if n in cap_meta])
    rep = ValidationReport(meta, records, fits, training, checks, dl)
    if out is not None:
        paths = rep.save(out)
        say(f"[validation] wrote {paths['json']}, {paths['markdown']} and {len(paths['plots'])} plots")
    return rep
