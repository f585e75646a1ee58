"""Warnings and errors for numerical trouble (never a silent NaN)."""
from __future__ import annotations

__all__ = ["DivergenceWarning", "ConvergenceWarning", "NoCriticalPointWarning", "PrecisionWarning"]


class DivergenceWarning(RuntimeWarning):
    """q grows without bound (q* = inf): an unbounded activation in its chaotic phase, e.g. relu with weight_var > 2;
    or a value exceeds the float64 range and is returned as inf (e.g. ``length_map("relu", 1e300, 1e300, 0)``,
    ``meijer_g`` at huge arguments: use ``log_meijer_g``)."""


class ConvergenceWarning(RuntimeWarning):
    """A fixed-point or root iteration did not converge; the affected entries are NaN."""


class NoCriticalPointWarning(RuntimeWarning):
    """No weight variance makes chi_1 = 1 for the given bias variance; the affected entries are NaN."""


class PrecisionWarning(RuntimeWarning):
    """A value is returned, but rounding limits its accuracy to the relative error stated in the message (e.g. q*
    near the q = 0 end of the critical line for activations without a series there; see :func:`meanfield.qstar`)."""
