r"""Fitting side of the validation: records of theory against simulation, and their scaling with width.

:func:`make_record` turns a theory value and the per-network samples at one width into a row (mean, standard error,
relative error, single-network spread); :func:`fit_series` fits one (network, quantity) series of rows against width
(error and fluctuation exponents, weighted ``a / M`` bias).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["GROUPS", "ENSEMBLE_ONLY", "make_record", "fit_series"]

GROUPS = {
    "q^": "forward", "c^": "forward", "qtilde": "backward", "chi_1": "backward", "K(": "NNGP",
    "Theta(": "NTK", "Theta_SP": "NTK", "m_lambda": "Fisher", "s_lambda": "Fisher", "lambda_max": "Fisher",
    "NTK ": "NTK spectrum",
}

# which quantities are averages over the ensemble only (not self-averaging in one network)
ENSEMBLE_ONLY = ("K(x,x)", "K(x,x')")


def _group(q: str) -> str:
    for k, v in GROUPS.items():
        if q.startswith(k):
            return v
    return "other"


def make_record(cfg_name, quantity, width, theory, source, samples, *, kind=None, theory_se: float = 0.0,
                expected=None) -> dict:
    """One (network, quantity, width) row: theory, mean of the per-network ``samples`` and its standard error,
    relative error, single-network relative spread.

    ``kind`` ("single-network" or "ensemble") defaults to "ensemble" for the :data:`ENSEMBLE_ONLY` quantities;
    ``theory_se`` (a Monte-Carlo standard error of the theory value itself) is added in quadrature to the SE;
    ``expected`` (text) states the expected error scaling of the row."""
    x = np.asarray(samples, dtype=np.float64)
    S = x.size
    if S == 0 or not np.all(np.isfinite(x)):
        raise FloatingPointError(f"{cfg_name}: {quantity} at width {width}: {S} samples, "
                                 f"{int(np.sum(~np.isfinite(x)))} of them non-finite")
    mean = float(x.mean())
    se = float(x.std(ddof=1) / math.sqrt(S)) if S > 1 else float("nan")
    se = math.sqrt(se * se + float(theory_se) ** 2)
    scale = abs(theory) if theory != 0 else 1.0
    rms = float(np.sqrt(np.mean((x - theory) ** 2)))
    return dict(config=cfg_name, group=_group(quantity), quantity=quantity, width=int(width), theory=float(theory),
                simulated_mean=mean, standard_error=se, relative_error=(mean - theory) / scale,
                relative_standard_error=se / scale, single_network_relative_std=float(x.std(ddof=1)) / scale,
                single_network_relative_rms=rms / scale, n_networks=int(S), theory_source=source,
                kind=kind or ("ensemble" if quantity in ENSEMBLE_ONLY else "single-network"),
                **({} if expected is None else {"expected": str(expected)}))


def _slope(x, y):
    y = np.asarray(y, float)
    with np.errstate(divide="ignore"):   # log(0) = -inf: a row in exact agreement, dropped below (not finite)
        x, y = np.log(np.asarray(x, float)), np.log(y)
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return float("nan"), float("nan")
    x, y = x[ok], y[ok]
    A = np.vstack([x, np.ones_like(x)]).T
    coef, res, *_ = np.linalg.lstsq(A, y, rcond=None)
    if x.size > 2:
        resid = y - A @ coef
        s2 = float(resid @ resid) / (x.size - 2)
        se = math.sqrt(s2 / float(np.sum((x - x.mean()) ** 2)))
    else:
        se = float("nan")
    return float(coef[0]), se


def fit_series(records: Sequence[dict]) -> dict:
    r"""Fits of one (network, quantity) series against width M.

    * ``error_exponent``: least-squares slope of ``log |relative error|`` against ``log M`` (and its standard error
      from the residuals). Meaningful as a bias exponent only when ``bias_resolved`` (every ``|error| > 2 SE``);
      otherwise the error is noise of the ensemble mean, ``SE ~ M^{-1/2} / sqrt(S)`` for self-averaging quantities.
    * ``fluctuation_exponent``: slope of the single-network relative standard deviation (expected ``-1/2`` for
      self-averaging quantities, a mean over ``~M`` weakly dependent terms; ``0`` for the NNGP, an ensemble quantity).
    * ``bias_coefficient``: weighted least-squares ``a`` of ``relative error = a / M`` (weights ``1/SE^2``) with its
      standard error and the ``chi^2`` per degree of freedom of that model and of ``a = 0``.
    """
    recs = sorted(records, key=lambda r: r["width"])
    M = np.array([r["width"] for r in recs], float)
    e = np.array([r["relative_error"] for r in recs])
    s = np.array([r["relative_standard_error"] for r in recs])
    fl = np.array([r["single_network_relative_std"] for r in recs])
    slope, slope_se = _slope(M, np.abs(e))
    fslope, fslope_se = _slope(M, fl)
    # rows whose networks all gave the same value (SE 0: indicator rows, e.g. a fraction of runs that is exactly 1)
    # carry no weight information; they enter the a/M fit only if some row has a positive SE
    fit = s > 0
    if np.any(fit):
        w = 1.0 / s[fit] ** 2
        Mf, ef = M[fit], e[fit]
        denom = float(np.sum(w / Mf ** 2))
        a = float(np.sum(w * ef / Mf) / denom)
        a_se = float(1.0 / math.sqrt(denom))
        dof = max(Mf.size - 1, 1)
        chi2_a = float(np.sum(w * (ef - a / Mf) ** 2) / dof)
        chi2_0 = float(np.sum(w * ef ** 2) / Mf.size)
    else:
        a = 0.0 if np.all(e == 0) else math.nan
        a_se, chi2_a, chi2_0 = 0.0, 0.0, 0.0
    resolved = bool(np.all(np.abs(e) > 2 * s))
    kind = recs[0]["kind"]
    if resolved:
        regime = "bias"
    elif kind == "ensemble":
        regime = "seed noise"
    else:
        regime = "noise-limited"
    extra = {"expected": recs[0]["expected"]} if "expected" in recs[0] else {}
    return dict(config=recs[0]["config"], group=recs[0]["group"], quantity=recs[0]["quantity"], kind=kind, **extra,
                widths=M.astype(int).tolist(), error_exponent=slope, error_exponent_se=slope_se,
                bias_resolved=resolved, regime=regime, fluctuation_exponent=fslope,
                fluctuation_exponent_se=fslope_se, bias_coefficient=a, bias_coefficient_se=a_se,
                chi2_per_dof_bias_model=chi2_a, chi2_per_dof_zero_bias=chi2_0,
                relative_error_at_largest_width=float(e[-1]), relative_se_at_largest_width=float(s[-1]))
