"""What the result objects share for the ecosystem around them: a short ``repr``, the lazy import of the optional
libraries (pandas, xarray, tqdm) with an error that says how to install them, and the conversion of a result's
arrays to an :class:`xarray.Dataset` (named dimensions and coordinates) or a tidy :class:`pandas.DataFrame`.

Each result class describes its arrays once, as a :class:`Table` (its ``_table()`` method): the coordinates (1-D
arrays, one per dimension), the data variables with the dimensions they span, the attributes, and which
dimensions and variables make the rows and columns of the DataFrame. ``to_xarray`` and ``to_dataframe`` are
written once, here, from that description; pandas builds the DataFrame without xarray.
"""
from __future__ import annotations

import dataclasses
import importlib
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["short_repr", "require", "Table", "to_xarray", "to_dataframe", "progress_callback"]

#: extra of the distribution that installs each optional library
_EXTRA = {"pandas": "interop", "xarray": "interop", "tqdm": None}


def require(module: str, purpose: str) -> Any:
    """Import the optional ``module`` or raise an ImportError naming ``purpose`` and the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRA.get(module)
        how = f"pip install {module}" + (f"  (or pip install 'meanfield-theory[{extra}]')" if extra else "")
        raise ImportError(f"{purpose} needs the optional package {module!r}, which is not installed: {how}") from exc


# --------------------------------------------------------------------------------------------------------------------
# short repr
# --------------------------------------------------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    """One value as a few characters: arrays by their shape (or their values when at most 3), floats in 6 digits."""
    if isinstance(value, np.ndarray):
        if value.size <= 3 and value.ndim <= 1:
            return "array([" + ", ".join(_fmt(v) for v in value.tolist()) + "])"
        dims = "x".join(map(str, value.shape)) or "scalar"
        return f"<array {dims}>" if value.dtype == np.float64 else f"<{value.dtype} array {dims}>"
    if isinstance(value, (bool, np.bool_)) or value is None:
        return repr(value)
    if isinstance(value, (float, np.floating)):
        text = f"{float(value):.6g}"
        return text if any(ch in text for ch in ".eni") else text + ".0"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, (tuple, list)):
        open_, close = ("(", ")") if isinstance(value, tuple) else ("[", "]")
        if len(value) <= 4:
            inner = ", ".join(_fmt(v) for v in value)
            return open_ + inner + ("," if isinstance(value, tuple) and len(value) == 1 else "") + close
        return f"{open_}{_fmt(value[0])}, {_fmt(value[1])}, ... {len(value)} items{close}"
    if isinstance(value, dict):
        return f"dict({len(value)} keys)" if len(value) > 3 else "{" + ", ".join(map(str, value)) + "}"
    text = repr(value)
    return text if len(text) <= 70 else f"{type(value).__name__}(...)"


def short_repr(obj: Any, width: int = 110, max_lines: int = 4) -> str:
    """``ClassName(field=value, ...)`` of a dataclass in at most ``max_lines`` lines: arrays appear as their shape,
    numbers in 6 significant digits, long tuples and nested objects abbreviated (``to_dict()`` has everything)."""
    parts = [f"{f.name}={_fmt(getattr(obj, f.name))}" for f in dataclasses.fields(obj) if f.repr]
    text = f"{type(obj).__name__}(" + ", ".join(parts) + ")"
    lines = textwrap.wrap(text, width=width, subsequent_indent="    ", break_long_words=False,
                          break_on_hyphens=False)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][: width - 8] + " ...)"
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# tables: one description, two conversions
# --------------------------------------------------------------------------------------------------------------------
@dataclass
class Table:
    """The arrays of a result with their dimensions.

    ``coords``: dimension name -> 1-D coordinate array; ``data``: variable name -> (dims, array); ``attrs``: scalars and
    short tuples; ``rows``: the dimensions that index the DataFrame's rows (their product); ``columns``: the variables
    it holds (default: every variable spanning exactly ``rows``; a variable on fewer dimensions is repeated).
    """

    coords: Mapping[str, Any]
    data: Mapping[str, Tuple[Tuple[str, ...], Any]]
    attrs: Dict[str, Any] = field(default_factory=dict)
    rows: Tuple[str, ...] = ()
    columns: Optional[Sequence[str]] = None


def _attr(value: Any) -> Any:
    """An attribute value that netCDF can store (tuples to lists, bools to ints, None to "none")."""
    if isinstance(value, (tuple, list)):
        return [_attr(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if value is None:
        return "none"
    return value


def to_xarray(table: Table) -> Any:
    """An :class:`xarray.Dataset` of ``table``: dimensions and coordinates named as in the Table."""
    xr = require("xarray", "to_xarray()")
    data = {k: (dims, np.asarray(v)) for k, (dims, v) in table.data.items()}
    return xr.Dataset(data, coords={k: np.asarray(v) for k, v in table.coords.items()},
                      attrs={k: _attr(v) for k, v in table.attrs.items()})


def to_dataframe(table: Table) -> Any:
    """A tidy :class:`pandas.DataFrame` of ``table``: one row per point of ``table.rows`` (the dimensions as columns,
    last dimension fastest), one column per variable; ``DataFrame.attrs`` holds the attributes."""
    pd = require("pandas", "to_dataframe()")
    rows = table.rows
    shape = tuple(np.asarray(table.coords[d]).size for d in rows)
    grids = np.meshgrid(*[np.asarray(table.coords[d]) for d in rows], indexing="ij") if rows else []
    out: Dict[str, np.ndarray] = {d: g.ravel() for d, g in zip(rows, grids)}
    names = table.columns if table.columns is not None else [k for k, (dims, _) in table.data.items()
                                                            if tuple(dims) == tuple(rows)]
    for name in names:
        dims, values = table.data[name]
        arr = np.asarray(values)
        order = [rows.index(d) for d in dims]            # the variable's axes in row order, then broadcast
        arr = np.transpose(arr, np.argsort(order)) if arr.ndim > 1 else arr
        expand = [slice(None) if d in dims else None for d in rows]
        out[name] = np.broadcast_to(arr[tuple(expand)], shape).ravel()
    frame = pd.DataFrame(out)
    frame.attrs.update({k: _attr(v) for k, v in table.attrs.items()})
    return frame


# --------------------------------------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------------------------------------
class _TqdmProgress:
    """``progress(done, total)`` callback drawing a tqdm bar (created at the first call, closed at the end)."""

    def __init__(self, desc: str, unit: str):
        self.desc, self.unit = desc, unit
        self.bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            tqdm = require("tqdm", "progress=True").tqdm
            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, leave=True)
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def progress_callback(progress: Any, desc: str, unit: str = "row") -> Optional[Callable[[int, int], None]]:
    """The callback behind a ``progress=`` argument: ``False``/``None`` none, ``True`` a tqdm bar labelled ``desc``,
    a callable ``progress(done, total)`` itself; anything else is a TypeError."""
    if progress is None or progress is False:
        return None
    if progress is True:
        return _TqdmProgress(desc, unit)
    if callable(progress):
        return progress
    raise TypeError(f"progress must be True, False, None or a callable progress(done, total), "
                    f"got {type(progress).__name__}")


def layer_coords(n: int, start: int = 1) -> np.ndarray:
    """Layer indices ``start, ..., start + n - 1``."""
    return np.arange(start, start + n)


def pad(values: Iterable[float], n: int, offset: int) -> np.ndarray:
    """``values`` placed at positions ``offset, offset + 1, ...`` of a length-``n`` array of NaN."""
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64)
    out = np.full(n, np.nan)
    out[offset:offset + arr.size] = arr
    return out
