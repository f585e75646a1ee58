r"""The registry of validated capabilities: what ``python -m meanfield.validation run --only NAME,...`` can run.

Each :class:`Capability` names one family of predictions of the library, the theory routes it checks and how
(``description``), and ``run(ctx)`` producing rows of theory against simulation
(:mod:`meanfield.validation.checks`). Three capabilities are the historical parts of the run, driven by
:func:`meanfield.validation.report.run_validation` itself: ``ladder`` (order parameters q, c, qtilde, chi_1, NNGP, NTK,
the MSE Fisher statistics and the NTK spectrum on the width ladder, per validation network), ``gd_threshold``
(gradient descent around ``eta_c = 2/lambda_max``) and ``deep_linear`` (exact sampling of deep linear networks).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

from . import checks, training_checks

__all__ = ["Capability", "CAPABILITIES", "capability_names", "resolve_only"]


@dataclass(frozen=True)
class Capability:
    """One validated capability: ``name`` (the ``--only`` key), a one-line ``title``, the ``description`` of what is
    compared with what, and ``run`` (``CheckContext -> list of records``; None for the three parts run by
    :func:`~meanfield.validation.report.run_validation` itself)."""

    name: str
    title: str
    run: Optional[Callable] = None

    @property
    def description(self) -> str:
        doc = (self.run.__doc__ if self.run is not None else None) or self.title
        return " ".join(doc.split("\n    Examples\n")[0].split())   # the check's docstring without its doctest

    def to_dict(self) -> dict:
        return dict(name=self.name, title=self.title, description=self.description)


def _caps():
    c, t = checks, training_checks
    return [
        Capability("ladder", "order parameters q, c, qtilde, chi_1; NNGP; NTK (both parameterizations); MSE Fisher "
                   "m, s, lambda_max; NTK spectrum, on the width ladder (tanh and relu networks)"),
        Capability("gd_threshold", "full-batch gradient descent around eta_c = 2/lambda_max (theory and per-network)"),
        Capability("deep_linear", "deep linear networks: prior and posterior sampled exactly at finite width"),
        Capability("softmax_fisher", "cross-entropy (softmax) FIM: mean, second moment and the C-1 outliers",
                   c.check_softmax_fisher),
        Capability("mean_subtraction", "MSE FIM with the output mean subtracted over the batch (Karakida sec. 4.2)",
                   c.check_mean_subtraction),
        Capability("natural_gradient",
                   "natural-gradient training curves: exact NGD, layer-wise, K-FAC, damped unit-wise (and GD)",
                   t.check_natural_gradient),
        Capability("cross_entropy_dynamics", "cross-entropy training: loss and softmax FIM lambda_max along training",
                   t.check_cross_entropy_dynamics),
        Capability("fisher_training", "model FIM and empirical FIM along training (MSE and cross-entropy)",
                   t.check_fisher_training),
        Capability("normalization", "batch / layer normalization in the hidden layers: lambda_max = O(M)",
                   t.check_normalization),
        Capability("catapult", "learning-rate phases of gradient descent: eta_c, lazy sharpness, catapult",
                   t.check_catapult),
        Capability("diagonal_blocks", "diagonal blocks F_ll of the FIM", c.check_diagonal_blocks),
        Capability("feature_metric", "input/feature-space metric A and its blocks", c.check_feature_metric),
        Capability("dropout", "dropout: q, c, qtilde per layer", c.check_dropout),
        Capability("depth_scales", "depth scales xi_q, xi_c, xi_grad as fitted decay rates", c.check_depth_scales),
        Capability("gp_posterior", "Bayesian readout posterior vs the NNGP posterior", c.check_gp_posterior),
        Capability("ntk_dynamics", "gradient-descent training vs NTK gradient flow", c.check_ntk_dynamics),
        Capability("kernel_regression", "converged training vs NTK kernel regression", c.check_kernel_regression),
        Capability("residual", "residual chains: NNGP and NTK", c.check_residual),
        Capability("cnn", "convolutional chains: NNGP, NTK and q-tilde", c.check_cnn),
        Capability("cnn_fisher", "convolutional chains: FIM mean, second moment and lambda_max", c.check_cnn_fisher),
        Capability("jacobian_spectrum", "input-output Jacobian singular values: moments", c.check_jacobian_spectrum),
        Capability("kernel_spectrum", "conjugate-kernel, NTK and FIM-bulk spectra (linear width): moments",
                   c.check_kernel_spectrum),
        Capability("single_input_fisher", "single-input FIM (Hayase & Karakida): moments of its spectrum",
                   c.check_single_input_fisher),
        Capability("finite_width", "O(1/M) corrections: output kurtosis and NTK variance", c.check_finite_width),
    ]


#: name -> Capability, in report order
CAPABILITIES = {cap.name: cap for cap in _caps()}


def capability_names() -> list:
    """The registered names, in report order.

    Examples
    --------
    >>> from meanfield.validation.capabilities import capability_names
    >>> capability_names()[:3]
    ['ladder', 'gd_threshold', 'deep_linear']
    """
    return list(CAPABILITIES)


def resolve_only(only: Union[None, str, Sequence[str]]) -> list:
    """Capability names to run: ``None`` -> all; a comma-separated string or a sequence of names -> those (in report
    order). Unknown names raise ValueError listing the known ones."""
    if only is None:
        return capability_names()
    if isinstance(only, str):
        names = [n.strip() for n in only.split(",") if n.strip()]
    elif isinstance(only, (list, tuple)) and all(isinstance(n, str) for n in only):
        names = [n.strip() for n in only]
    else:
        raise TypeError(f"only must be None, a comma-separated string or a sequence of names, got {only!r}")
    bad = [n for n in names if n not in CAPABILITIES]
    if bad or not names:
        raise ValueError(f"only must name capabilities among {capability_names()}, got {only!r}")
    return [n for n in CAPABILITIES if n in names]
