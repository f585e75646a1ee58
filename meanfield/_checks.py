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
    "check_array",
]


def as_float_array(name: str, value) -> np.ndarray:
    """Convert ``value`` to a float64 array.

    Raises TypeError for anything that is not real numeric data -- None, str/bytes, complex, bool, object arrays of
    non-numbers, strings, dates, ragged sequences -- instead of casting it silently (numpy would drop imaginary parts
    with a ComplexWarning, turn booleans into 0/1 and parse numeric strings).
    """
    def _fail(what, exc=None):
        msg = f"{name} must be a real number or an array of real numbers, got {what}"
        if exc is None:
            raise TypeError(msg)
        raise TypeError(msg) from exc

    if isinstance(value, (str, bytes)) or value is None:
        _fail(repr(value))
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as exc:   # ragged nested sequences
        _fail(f"{type(value).__name__} that is not a rectangular array of numbers", exc)
    kind = raw.dtype.kind
    if kind == "O":   # e.g. Fractions or Decimals: accept only what converts to real floats exactly as numbers
        if any(isinstance(v, (complex, np.complexfloating, bool, np.bool_, str, bytes)) or v is None
               for v in raw.ravel()):
            _fail(f"an object array containing non-real entries ({raw.dtype})")
        try:
            return np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            _fail("an object array that does not convert to real numbers", exc)
    if kind == "c":
        _fail(f"complex data (dtype {raw.dtype}); pass the real part explicitly if that is intended")
    if kind == "b":
        _fail(f"boolean data (dtype {raw.dtype})")
    if kind not in "iuf":
        _fail(f"data of dtype {raw.dtype}")
    return np.asarray(raw, dtype=np.float64)


def check_array(name: str, value, ndim=None, *, min_size: int = 1, finite: bool = True) -> np.ndarray:
    """Return ``value`` as a float64 array with the given number of dimensions and every axis of length >= min_size.

    ``ndim`` is an int or a tuple of allowed ints (None: any). Non-numeric data -> TypeError (:func:`as_float_array`);
    wrong ndim, an empty axis, or (with ``finite``) NaN/inf entries -> ValueError naming ``name``.
    """
    arr = as_float_array(name, value)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise ValueError(f"{name} must be a {want} array, got {arr.ndim}-D with shape {arr.shape}")
    if any(n < min_size for n in arr.shape):
        raise ValueError(f"{name} must not be empty (every axis of length >= {min_size}), got shape {arr.shape}")
    if finite and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return arr


def _ret(arr: np.ndarray):
    return float(arr) if arr.ndim == 0 else arr


def check_finite_array(name: str, value, *, scalar: bool = False) -> np.ndarray:
    """Return ``value`` as a float64 array, raising ValueError if any entry is NaN or infinite.

    With ``scalar``: a single number is required (an array of any shape raises TypeError naming ``name``)."""
    arr = as_float_array(name, value)
    if scalar and arr.ndim != 0:
        raise TypeError(f"{name} must be a single real number, got an array of shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return arr


def check_nonneg(name: str, value, *, scalar: bool = False):
    """Validate a finite variance-like quantity ``>= 0``; returns a float or (unless ``scalar``) an array."""
    arr = check_finite_array(name, value, scalar=scalar)
    if np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0 (a variance), got {value!r}")
    return _ret(arr)


def check_positive(name: str, value, *, scalar: bool = False):
    """Validate a finite quantity ``> 0``; returns a float or (unless ``scalar``) an array."""
    arr = check_finite_array(name, value, scalar=scalar)
    if np.any(arr <= 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return _ret(arr)


def check_in_range(name: str, value, lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False,
                   scalar: bool = False):
    """Validate ``lo <= value <= hi`` (ends open on request); returns a float or (unless ``scalar``) an array."""
    arr = check_finite_array(name, value, scalar=scalar)
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
