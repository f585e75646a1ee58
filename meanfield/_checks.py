"""Input validation shared by the user-facing functions.

Every check names the parameter and the allowed range, so that a user sees at once what to fix.
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = [
    "check_nonneg",
    "check_positive",
    "check_finite_array",
    "check_int",
    "check_in_range",
    "as_float_array",
]


def as_float_array(name: str, value) -> np.ndarray:
    """Convert ``value`` to a float64 array; reject non-numeric input with a TypeError."""
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"{name} must be a real number or an array of real numbers, got {value!r}")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a real number or an array of real numbers, got {value!r}") from exc
    return arr


def _ret(arr: np.ndarray):
    return float(arr) if arr.ndim == 0 else arr


def check_finite_array(name: str, value) -> np.ndarray:
    """Return ``value`` as a float64 array, raising ValueError if any entry is NaN or infinite."""
    arr = as_float_array(name, value)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return arr


def check_nonneg(name: str, value):
    """Validate a finite variance-like quantity ``>= 0``; returns a float or an array."""
    arr = check_finite_array(name, value)
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0 (a variance), got {value!r}")
    return _ret(arr)


def check_positive(name: str, value):
    """Validate a finite quantity ``> 0``; returns a float or an array."""
    arr = check_finite_array(name, value)
    if np.any(arr <= 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return _ret(arr)


def check_in_range(name: str, value, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False):
    """Validate ``lo <= value <= hi`` (ends open on request); returns a float or an array."""
    arr = check_finite_array(name, value)
    bad_lo = arr <= lo if lo_open else arr < lo
    bad_hi = arr >= hi if hi_open else arr > hi
    if np.any(bad_lo) or np.any(bad_hi):
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return _ret(arr)


def check_int(name: str, value, minimum: int = 1) -> int:
    """Validate an integer ``>= minimum`` (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
