"""Phase diagrams, critical lines, depth-scale curves and map dynamics.

This module sweeps the core's vectorised order-parameter functions (:mod:`meanfield.forward`) over grids of
``weight_var = sigma_w^2`` and ``bias_var = sigma_b^2`` and packages the results as frozen, saveable objects with a
``.plot()`` method. The mathematics is that of Poole et al. (2016), "Exponential expressivity in deep neural networks
through transient chaos", and Schoenholz et al. (2017), "Deep information propagation" (see docs/mathematics.md section 2):

* length map ``V(q) = sigma_w^2 int Dz phi(sqrt(q) z)^2 + sigma_b^2``, fixed point ``q* = V(q*)``;
* ``chi_1 = sigma_w^2 int Dz phi'(sqrt(q*) z)^2`` (order-to-chaos transition at ``chi_1 = 1``);
* ``c*``, the stable fixed point of the correlation map reached from ``c < 1``, and
  ``chi_c = sigma_w^2 int Dz1 Dz2 phi'(u1*) phi'(u2*)`` at ``(q*, c*)`` (``= chi_1`` in the ordered phase where c* = 1);
* depth scales ``xi_q = -1/log|V'(q*)|``, ``xi_c = -1/log|chi_c|`` and ``xi_grad = -1/log chi_1``.

Everything here is without dropout (keep probability rho = 1), where ``chi_1`` is both the gradient-norm ratio per
layer and the slope of the correlation map at ``c = 1``. Under dropout these differ (``chi_1 = (sigma_w^2/rho) E[phi'^2]``
against ``c_map_slope = sigma_w^2 E[phi'^2]``) and the critical line is ``chi_1 = 1``, the gradients' (the correlation
map then has no critical point): see :mod:`meanfield.forward` and ``critical_weight_var(..., dropout_keep=rho)``.

Array convention: every 2-D array of a :class:`PhaseDiagram` has shape ``(len(bias_vars), len(weight_vars))``; row ``i``
is ``bias_var = bias_vars[i]`` and column ``j`` is ``weight_var = weight_vars[j]`` (sigma_w^2 on the horizontal axis,
sigma_b^2 on the vertical axis, as in the papers' figures).
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    import os
    from typing import Sequence, Tuple

    from matplotlib.axes import Axes

    from ._typing import ActivationLike, ArrayLike

import importlib
import warnings
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import numpy as np

from ._checks import as_float_array, check_finite_array, check_in_range, check_int, check_nonneg, check_positive
from ._interop import Table, progress_callback, require, short_repr, to_dataframe, to_xarray
from ._io import atomic_open, check_alloc, deferred_sigint

if TYPE_CHECKING:
    import pandas
    import xarray

__all__ = [
    "PhaseDiagram",
    "PhaseDiagramInterrupted",
    "phase_diagram",
    "CriticalLine",
    "critical_line",
    "DepthScaleCurve",
    "depth_scale_curve",
    "MapDynamics",
    "map_dynamics",
]

_forward_module = importlib.import_module(".forward", __package__)

#: the order parameters a :class:`PhaseDiagram` holds, in CSV column order
QUANTITIES = ("qstar", "chi1", "cstar", "chi_c", "xi_q", "xi_c", "xi_grad")

#: largest ``depth`` of :func:`map_dynamics` (and ``meanfield maps --depth``)
MAX_MAP_DEPTH = 1000


# --------------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------------
def _core():
    """The core module :mod:`meanfield.forward` (``meanfield.forward`` the attribute is the function ``forward``)."""
    return _forward_module


def _resolve_activation(activation, activation_params=None):
    """Return an :class:`~meanfield.activations.Activation` for a name or an Activation."""
    from .activations import get_activation

    params = dict(activation_params or {})
    return get_activation(activation, **params)


def _activation_label(act) -> str:
    name = getattr(act, "name", str(act))
    return str(name)


def _activation_params(act) -> tuple:
    params = getattr(act, "params", ())
    try:
        return tuple(float(p) for p in params)
    except TypeError:
        return ()


def _is_custom(act) -> bool:
    return bool(getattr(act, "is_custom", False))


#: the keyword of :func:`~meanfield.activations.get_activation` that sets a built-in's first parameter
_PARAM_KEYWORD = {"leaky_relu": "slope", "elu": "alpha"}


def _rebuild_activation(name: str, params: tuple):
    """The built-in :class:`~meanfield.activations.Activation` named ``name`` with parameters ``params`` (as stored
    by :meth:`PhaseDiagram.save`); None if ``name`` is not a built-in."""
    from .activations import get_activation

    key = _PARAM_KEYWORD.get(name)
    try:
        return get_activation(name, **({key: float(params[0])} if key and len(params) else {}))
    except (ValueError, TypeError):
        return None


def _activation_fields(act) -> dict:
    """The activation fields every result object of this module carries: the name and parameters (plain data, saved
    to files) and the :class:`~meanfield.activations.Activation` itself (in memory only)."""
    return {"activation": _activation_label(act), "activation_params": _activation_params(act),
            "activation_object": act}


class _Result:
    """Base of the result dataclasses of this module."""

    def to_dict(self) -> dict:
        """Plain dictionary of every field but ``activation_object`` (in memory only): arrays copied,
        ``activation_params`` a tuple."""
        out = {}
        for f in fields(self):
            if f.name in ("activation_object", "finished"):  # a PhaseDiagram adds its own finished mask
                continue
            v = getattr(self, f.name)
            out[f.name] = np.array(v) if isinstance(v, np.ndarray) else tuple(v) if isinstance(v, tuple) else v
        return out

    def _table(self) -> Table:  # pragma: no cover - each result describes its arrays
        raise NotImplementedError

    def to_xarray(self) -> "xarray.Dataset":
        """The arrays as an :class:`xarray.Dataset` with named dimensions and coordinates (``weight_var``,
        ``bias_var``, ...; see the class docstring) and the scalar fields as attributes. Needs xarray
        (``pip install xarray``), imported only here."""
        return to_xarray(self._table())

    def to_dataframe(self) -> "pandas.DataFrame":
        """The arrays as a tidy :class:`pandas.DataFrame`, one row per grid point (or layer), the coordinates as
        columns; the scalar fields are in ``DataFrame.attrs``. Needs pandas (``pip install pandas``), imported only
        here."""
        return to_dataframe(self._table())


def _activation_object_field():
    """The ``activation_object`` field: the Activation a result was computed with (not compared, not in ``to_dict``)."""
    return field(default=None, compare=False, repr=False)


def _grid_axis(name: str, value, *, positive: bool) -> np.ndarray:
    """Validate a 1-D strictly increasing grid axis."""
    arr = check_finite_array(name, value)
    arr = np.atleast_1d(arr).astype(np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers, got shape {arr.shape}")
    if positive:
        check_positive(name, arr)
    else:
        check_nonneg(name, arr)
    if arr.size > 1 and np.any(np.diff(arr) <= 0):
        raise ValueError(f"{name} must be strictly increasing")
    return arr


def _readonly(arr) -> np.ndarray:
    out = np.array(arr, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


def _xi_from_slope(slope) -> np.ndarray:
    """Depth scale ``xi = -1/log(slope)`` with the core's conventions (inf at slope 1, negative above)."""
    return _forward_module._neg_inv_log(slope)


def _evaluate_block(act, w: np.ndarray, b: np.ndarray) -> dict:
    """All order parameters at broadcast arrays ``w``, ``b`` through the core's compiled, parallel kernels
    (:mod:`meanfield.forward`; the length map is iterated from ``q^1 = w + b``).

    Two passes: (1) q*, chi_1 and V'(q*) everywhere (1-D integrals only); (2) the correlation fixed point c* and
    chi_c only where chi_1 > 1, restarting from the q* of pass 1 (so pass 2 does not solve for q* again). In the ordered
    phase (chi_1 <= 1, no dropout) c* = 1 and chi_c = chi_1 exactly (docs/mathematics.md sec. 2), which is what the core returns
    there too, so the 2-D quadratures of the correlation map are skipped.
    """
    shape = np.broadcast(w, b).shape
    # the core's compiled pass solves c* only in the chaotic phase (c* = 1, chi_c = chi_1 when ordered)
    fp = _forward_module.fixed_point(act, w, b)
    out = {"qstar": fp.q_star, "chi1": fp.chi_1, "cstar": fp.c_star, "chi_c": fp.chi_c, "xi_q": fp.xi_q,
           "xi_c": fp.xi_c, "xi_grad": fp.xi_grad}
    return {k: np.asarray(v, dtype=np.float64).reshape(shape) for k, v in out.items()}


def _critical_weight_vars(act, bias_vars: np.ndarray) -> np.ndarray:
    """w_c(b) for each bias (nan where the core finds no critical point, with its warning passed on)."""
    return np.asarray(_forward_module.critical_weight_var(act, bias_vars), dtype=np.float64)


def _summarise_warnings(caught, n_points: int, where: str, n_diverged: Optional[int] = None) -> None:
    """Re-emit the core's warnings (one per evaluated block) as one warning per category.

    For a divergence warning the count of grid points with ``q* = inf`` (``n_diverged``) replaces the per-block counts.
    """
    by_cat: dict = {}
    for w in caught:
        by_cat.setdefault(w.category, []).append(str(w.message))
    for cat, msgs in by_cat.items():
        if cat.__name__ == "DivergenceWarning" and n_diverged is not None:
            msg = (f"{where}: q* = inf (the length map diverges) at {n_diverged} of {n_points} points; chi_1 and the "
                   "correlation map there are their q -> inf limits and xi_q is NaN")
        else:
            msg = f"{where}: {msgs[0]}"
            if len(msgs) > 1:
                msg += f" (and {len(msgs) - 1} similar warnings)"
        warnings.warn(msg, cat, stacklevel=3)


# --------------------------------------------------------------------------------------------------------------------
# phase diagram
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PhaseDiagram(_Result):
    """Order parameters of the infinite-width network over a (bias_var, weight_var) grid.

    Attributes
    ----------
    activation : str
        Activation name (``Activation.name``).
    activation_params : tuple of float
        The activation's parameters (``Activation.params``).
    weight_vars : ndarray, shape (nw,)
        ``sigma_w^2`` axis (columns).
    bias_vars : ndarray, shape (nb,)
        ``sigma_b^2`` axis (rows).
    qstar, chi1, cstar, chi_c, xi_q, xi_c, xi_grad : ndarray, shape (nb, nw)
        ``q*``, ``chi_1``, ``c*``, ``chi_c``, and the depth scales ``xi_q``, ``xi_c``, ``xi_grad`` (docs/mathematics.md sec. 2).
        ``q* = inf`` where the length map diverges (unbounded activations); entries derived from a divergent
        ``q*`` are whatever the core returns there (documented in :mod:`meanfield.forward`).
    critical_weight_vars : ndarray, shape (nb,)
        The critical line ``sigma_w^2 = w_c(sigma_b^2)`` where ``chi_1 = 1`` (``nan`` where none exists).
    finished : ndarray of bool, shape (nb, nw), optional
        Mask of the grid points that were computed; ``None`` (the default) means all of them. A partial diagram
        (computation interrupted, see :class:`PhaseDiagramInterrupted`) has ``nan`` at the unfinished points and
        in ``critical_weight_vars``; :attr:`complete` tells which.
    activation_object : Activation, optional
        The :class:`~meanfield.activations.Activation` the diagram was computed with, kept in memory so that a
        custom activation goes with its results (e.g. to :meth:`critical_line_points`). It is not part of
        :meth:`to_dict` nor of the file :meth:`save` writes: :meth:`load` rebuilds a built-in activation from its name
        and parameters, and a custom one only when it is passed again (``PhaseDiagram.load(path, activation=act)``);
        otherwise it is ``None`` (with a warning), and only the name is known.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.phase import PhaseDiagram, phase_diagram
    >>> pd = phase_diagram("tanh", np.linspace(0.5, 4, 40), np.linspace(0, 0.5, 30))
    >>> pd.chi1.shape
    (30, 40)
    >>> ax = pd.plot("chi1")           # heat map with the critical line overlaid
    >>> path = pd.save("tanh_phase.npz"); pd2 = PhaseDiagram.load(path)   # doctest: +SKIP
    """

    activation: str
    activation_params: tuple
    weight_vars: np.ndarray
    bias_vars: np.ndarray
    qstar: np.ndarray
    chi1: np.ndarray
    cstar: np.ndarray
    chi_c: np.ndarray
    xi_q: np.ndarray
    xi_c: np.ndarray
    xi_grad: np.ndarray
    critical_weight_vars: np.ndarray
    finished: Optional[np.ndarray] = None
    activation_object: object = _activation_object_field()

    __repr__ = short_repr

    def _table(self) -> Table:
        """Dims ``(bias_var, weight_var)``: the seven quantities (and the ``finished`` mask of a partial diagram);
        ``critical_weight_var`` on ``bias_var``. DataFrame rows: the grid points, ``weight_var`` fastest (as
        :meth:`to_csv`)."""
        grid = ("bias_var", "weight_var")
        data = {k: (grid, getattr(self, k)) for k in QUANTITIES}
        data["critical_weight_var"] = (("bias_var",), self.critical_weight_vars)
        if self.finished is not None:
            data["finished"] = (grid, np.asarray(self.finished, dtype=bool))
        return Table(coords={"bias_var": self.bias_vars, "weight_var": self.weight_vars}, data=data,
                     attrs={"activation": self.activation, "activation_params": self.activation_params,
                            "complete": self.complete}, rows=grid)

    # ---- derived quantities -------------------------------------------------------------------------------------
    @property
    def complete(self) -> bool:
        """False for a partial diagram (some grid points not computed; see :attr:`finished`)."""
        return self.finished is None or bool(np.all(self.finished))

    @property
    def shape(self) -> tuple:
        """``(len(bias_vars), len(weight_vars))``."""
        return (self.bias_vars.size, self.weight_vars.size)

    @property
    def chaotic(self) -> np.ndarray:
        """Boolean mask of the chaotic phase (``chi_1 > 1``)."""
        return self.chi1 > 1.0

    @property
    def xi_c_ridge(self) -> np.ndarray:
        """For each bias row, the grid weight_var where ``xi_c`` is largest (the ridge; nan if the row has no finite
        value). On a fine grid it tracks :attr:`critical_weight_vars`, where ``xi_c`` diverges."""
        out = np.full(self.bias_vars.size, np.nan)
        for i in range(self.bias_vars.size):
            row = np.where(np.isnan(self.xi_c[i]), -np.inf, self.xi_c[i])
            if np.all(row == -np.inf):
                continue
            out[i] = self.weight_vars[int(np.argmax(row))]
        return out

    def critical_line_points(self) -> Tuple[np.ndarray, np.ndarray]:
        """The critical line as plotted: ``(weight_vars, bias_vars)`` arrays, the stored
        :attr:`critical_weight_vars` with extra points between the first two bias values when the grid starts at
        ``sigma_b^2 = 0``. There ``w_c - w_c(0)`` grows like ``(sigma_b^2)^(1/3)`` for odd smooth activations (tanh,
        erf), steeper than any uniform grid resolves. Without :attr:`activation_object` (a custom activation loaded
        from a file) the stored line is returned."""
        wc = np.asarray(self.critical_weight_vars, dtype=float)
        b = self.bias_vars
        act = self.activation_object
        if b.size < 2 or b[0] != 0.0 or act is None:
            return wc, b
        extra = np.geomspace(b[1] * 1e-6, b[1], 40)[:-1]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                wx = _critical_weight_vars(act, extra)
        except (ValueError, TypeError, IndexError):  # no critical point to refine: keep the stored line
            return wc, b
        return np.concatenate([wc[:1], wx, wc[1:]]), np.concatenate([b[:1], extra, b[1:]])

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in QUANTITIES:
            raise KeyError(f"unknown quantity {name!r}; choose one of {', '.join(QUANTITIES)}")
        return getattr(self, name)

    # ---- export ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain-python/NumPy dictionary of every field but :attr:`activation_object` (arrays copied), with the
        ``complete`` flag and the ``finished`` mask (all True for a complete diagram)."""
        out = super().to_dict()
        out["complete"] = self.complete
        out["finished"] = (np.ones(self.shape, dtype=bool) if self.finished is None
                           else np.array(self.finished, dtype=bool))
        return out

    def save(self, path: Union[str, os.PathLike]) -> str:
        """Write a compressed ``.npz`` atomically (``.npz`` is appended when missing); returns the path written.

        The file holds the ``complete`` flag and the ``finished`` mask, so a partial diagram stays marked partial.
        """
        path = str(path)
        if not path.endswith(".npz"):
            path += ".npz"
        d = self.to_dict()
        d["activation"] = np.array(d["activation"])
        d["activation_params"] = np.array(d["activation_params"], dtype=np.float64)
        d["activation_custom"] = np.array(_is_custom(self.activation_object))
        d["complete"] = np.array(d["complete"])
        with atomic_open(path) as fh:
            np.savez_compressed(fh, **d)
        return path

    @classmethod
    def load(cls, path: Union[str, os.PathLike], *, activation: Optional[ActivationLike] = None) -> "PhaseDiagram":
        """Read a file written by :meth:`save`.

        A file keeps the activation's name and parameters, not its code: a built-in activation is rebuilt from them;
        a custom one (:func:`~meanfield.activations.custom_activation`) cannot be stored, so pass it again as
        ``activation`` to get it back as :attr:`activation_object` (its name must match the file's). Without it
        the diagram loads with ``activation_object=None`` and a warning; its arrays are complete, only the refinement
        of the critical line near ``sigma_b^2 = 0`` in plots (:meth:`critical_line_points`) is skipped.
        """
        with np.load(str(path), allow_pickle=False) as f:
            missing = [k for k in ("weight_vars", "bias_vars", *QUANTITIES) if k not in f.files]
            if missing:
                raise ValueError(f"{path} is not a PhaseDiagram file (missing {', '.join(missing)})")
            kw = {k: _readonly(f[k]) for k in ("weight_vars", "bias_vars", *QUANTITIES)}
            crit = f["critical_weight_vars"] if "critical_weight_vars" in f.files else np.full(kw["bias_vars"].size, np.nan)
            finished = None
            if "finished" in f.files and not bool(np.all(f["finished"])):
                finished = np.array(f["finished"], dtype=bool)
                finished.setflags(write=False)
            name = str(f["activation"])
            params = tuple(float(p) for p in np.atleast_1d(f["activation_params"]))
            custom = bool(f["activation_custom"]) if "activation_custom" in f.files else False
        act = _loaded_activation(path, name, params, custom, activation)
        return cls(activation=name, activation_params=params, critical_weight_vars=_readonly(crit),
                   finished=finished, activation_object=act, **kw)

    def to_csv(self, path: Union[str, os.PathLike]) -> str:
        """Write one row per grid point: ``weight_var,bias_var,qstar,chi1,cstar,chi_c,xi_q,xi_c,xi_grad`` (atomically).

        A partial diagram writes only its finished points, after a first line ``# partial: K of N grid points``.
        """
        path = str(path)
        W, B = np.meshgrid(self.weight_vars, self.bias_vars)
        cols = [W.ravel(), B.ravel()] + [getattr(self, k).ravel() for k in QUANTITIES]
        data = np.column_stack(cols)
        header = ",".join(("weight_var", "bias_var") + QUANTITIES)
        if not self.complete:
            keep = np.asarray(self.finished, dtype=bool).ravel()
            data = data[keep]
            header = f"# partial: {int(keep.sum())} of {keep.size} grid points (computation interrupted)\n" + header
        with atomic_open(path) as fh:
            np.savetxt(fh, data, delimiter=",", header=header, comments="", fmt="%.17g")
        return path

    def plot(self, quantity: str = "chi1", ax: Optional[Axes] = None, *,
             critical: Union[bool, Tuple[ArrayLike, ArrayLike]] = True, **kwargs: Any) -> Axes:
        """Heat map of ``quantity`` with the critical line (:meth:`critical_line_points`); see
        :func:`meanfield.plotting.plot_phase_diagram`."""
        from .plotting import plot_phase_diagram

        if critical is True:
            critical = self.critical_line_points()
        return plot_phase_diagram(self, quantity=quantity, ax=ax, critical=critical, **kwargs)


def _loaded_activation(path, name: str, params: tuple, custom: bool, activation):
    """The Activation of a loaded result: ``activation`` if given (checked against the file's name), else the built-in
    named in the file, else None with a warning (a custom activation cannot be stored in a file)."""
    if activation is not None:
        from .activations import get_activation

        act = get_activation(activation)
        if _activation_label(act) != name:
            raise ValueError(f"{path} holds a phase diagram of activation {name!r}, not {_activation_label(act)!r}")
        return act
    act = None if custom else _rebuild_activation(name, params)
    if act is None:
        warnings.warn(f"{path}: the custom activation {name!r} cannot be stored in a file, only its name; pass it "
                      "again as PhaseDiagram.load(path, activation=...) to attach it (activation_object is None)",
                      UserWarning, stacklevel=3)
    return act


def phase_diagram(
    activation: ActivationLike,
    weight_vars: ArrayLike,
    bias_vars: ArrayLike,
    *,
    block_rows: Optional[int] = None,
    progress: Union[bool, Callable[[int, int], None], None] = False,
    activation_params: Optional[dict] = None,
) -> PhaseDiagram:
    r"""Evaluate q*, chi_1, c*, chi_c, xi_q, xi_c and xi_grad over a grid of (weight_var, bias_var).

    For every grid point (Poole et al. 2016; Schoenholz et al. 2017; docs/mathematics.md sec. 2)

    .. math::
        q^* = \sigma_w^2\!\int\!Dz\,\phi(\sqrt{q^*}z)^2 + \sigma_b^2,\qquad
        \chi_1 = \sigma_w^2\!\int\!Dz\,\phi'(\sqrt{q^*}z)^2,\qquad
        \chi_c = \sigma_w^2\!\int\!Dz_1Dz_2\,\phi'(u_1^*)\phi'(u_2^*),

    with ``c*`` the stable correlation fixed point, and ``xi_q = -1/log V'(q*)``, ``xi_c = -1/log chi_c``,
    ``xi_grad = -1/log chi_1``. The ordered phase has ``chi_1 < 1``, the chaotic phase ``chi_1 > 1``; the critical line
    ``chi_1 = 1`` is computed by :func:`meanfield.forward.critical_weight_var` for each bias. The sweep calls the
    core's numba-parallel vectorised functions on blocks of rows.

    Parameters
    ----------
    activation : str or Activation
        Activation name (``"tanh"``, ``"relu"``, ``"erf"``, ...) or an :class:`~meanfield.activations.Activation`.
    weight_vars : array_like, shape (nw,)
        Strictly increasing ``sigma_w^2 > 0`` values (columns).
    bias_vars : array_like, shape (nb,)
        Strictly increasing ``sigma_b^2 >= 0`` values (rows).
    block_rows : int, optional
        Rows evaluated per call to the core (default: chunks sized adaptively to about 0.2 s each, so that Ctrl-C
        is answered quickly at no measurable cost).
    progress : bool or callable, optional
        ``True`` shows a tqdm progress bar over the rows (bias values); ``False`` (default) or ``None`` shows nothing;
        a callable ``progress(done_rows, total_rows)`` is called after each chunk that finishes a row (the CLI draws
        its progress bar with it).
    activation_params : dict, optional
        Parameters passed to :func:`~meanfield.activations.get_activation` with a name (e.g. ``{"slope": 0.2}``).

    Returns
    -------
    PhaseDiagram
        Frozen result, arrays of shape ``(nb, nw)``.

    Raises
    ------
    PhaseDiagramInterrupted
        On Ctrl-C (a ``KeyboardInterrupt``; raised between compiled chunks, i.e. within about 0.2 s); its
        ``.partial`` holds the points finished so far.
    ValueError
        If the grid's arrays would not fit in memory (about 100 bytes per point).

    Warns
    -----
    RuntimeWarning
        Once per distinct message from the core (e.g. ``q*`` diverging), with the number of occurrences.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.phase import phase_diagram
    >>> pd = phase_diagram("erf", np.linspace(0.2, 3, 50), np.linspace(0, 1, 40))
    >>> bool(pd.chaotic[0, -1]), bool(pd.chaotic[0, 0])
    (True, False)
    """
    act = _resolve_activation(activation, activation_params)
    progress = progress_callback(progress, f"phase_diagram({_activation_label(act)!r})")
    w_axis = _grid_axis("weight_vars", weight_vars, positive=True)
    b_axis = _grid_axis("bias_vars", bias_vars, positive=False)
    nb, nw = b_axis.size, w_axis.size
    if block_rows is not None:
        block_rows = check_int("block_rows", block_rows, 1)
    # 7 result arrays plus the flattened grid and one chunk's temporaries (about 4 more per point)
    check_alloc("weight_vars, bias_vars", 8.0 * 12 * nb * nw, f"a {nb} x {nw} phase-diagram grid")

    arrays = {k: np.full((nb, nw), np.nan) for k in QUANTITIES}
    W, B = (a.ravel() for a in np.meshgrid(w_axis, b_axis))
    n_total = nb * nw
    done = [0]  # points finished, updated by _sweep chunk by chunk
    with warnings.catch_warnings(record=True) as caught, deferred_sigint() as sigint:
        warnings.simplefilter("always")
        try:
            _sweep(act, W, B, arrays, nw, block_rows, progress, sigint, done)
            crit = _critical_weight_vars(act, b_axis)
            sigint.check()
        except (KeyboardInterrupt, SystemError) as exc:
            if not (isinstance(exc, KeyboardInterrupt) or isinstance(exc.__context__, KeyboardInterrupt)):
                raise
            partial = _finish(act, w_axis, b_axis, arrays, np.full(nb, np.nan), caught, done[0])
            raise PhaseDiagramInterrupted(partial) from None
    return _finish(act, w_axis, b_axis, arrays, crit, caught, n_total)


class PhaseDiagramInterrupted(KeyboardInterrupt):
    """``KeyboardInterrupt`` raised by :func:`phase_diagram` on Ctrl-C; ``.partial`` is the :class:`PhaseDiagram` of
    the points finished so far (``partial.complete`` is False, unfinished points are ``nan``)."""

    def __init__(self, partial: "PhaseDiagram"):
        super().__init__("phase_diagram interrupted")
        self.partial = partial


#: target wall time of one compiled call of the adaptive sweep (Ctrl-C is answered between calls)
_CHUNK_SECONDS = 0.2


def _sweep(act, W, B, arrays, nw, block_rows, progress, sigint, counter) -> None:
    """Fill ``arrays`` (shape (nb, nw)) chunk by chunk over the flattened grid ``W``, ``B``; ``counter[0]`` is the
    number of points finished (kept up to date, so an interrupt knows what is done).

    Chunks are ``block_rows`` rows, or (``None``) sized adaptively to about :data:`_CHUNK_SECONDS` each (at least 64
    points, growing at most 4x per chunk), so the compiled calls stay efficient and a held Ctrl-C is raised quickly.
    """
    import time

    n_total = W.size
    nb = n_total // nw
    flat = {k: v.reshape(-1) for k, v in arrays.items()}
    size = block_rows * nw if block_rows is not None else min(n_total, 64)
    done = 0
    while done < n_total:
        stop = min(n_total, done + size)
        t0 = time.perf_counter()
        res = _evaluate_block(act, W[done:stop], B[done:stop])
        for k in QUANTITIES:
            flat[k][done:stop] = res[k]
        dt = time.perf_counter() - t0
        rows_before, done = done // nw, stop
        counter[0] = done
        if progress is not None and (done // nw > rows_before or done == n_total):
            progress(done // nw, nb)
        sigint.check()
        if block_rows is None:
            size = int(min(4 * size, max(64, size * _CHUNK_SECONDS / max(dt, 1e-6))))


def _finish(act, w_axis, b_axis, arrays, crit, caught, n_done) -> "PhaseDiagram":
    """Package the sweep's arrays (the first ``n_done`` points of the flattened grid finished) and report warnings."""
    nb, nw = b_axis.size, w_axis.size
    finished = None
    if n_done < nb * nw:
        finished = (np.arange(nb * nw) < n_done).reshape(nb, nw)
        finished.setflags(write=False)
    ok = slice(None) if finished is None else finished
    n_div = int(np.isinf(arrays["qstar"][ok]).sum())
    _summarise_warnings(caught, n_done, f"phase_diagram({_activation_label(act)!r})", n_div)
    _warn_nan({k: v[ok] for k, v in arrays.items()}, "phase_diagram")
    return PhaseDiagram(
        **_activation_fields(act),
        weight_vars=_readonly(w_axis),
        bias_vars=_readonly(b_axis),
        critical_weight_vars=_readonly(crit),
        finished=finished,
        **{k: _readonly(v) for k, v in arrays.items()},
    )


def _warn_nan(arrays: dict, where: str) -> None:
    """Warn about NaN entries, except xi_q where q* = inf (documented: no length-map slope at infinity)."""
    diverged = np.isinf(arrays["qstar"])
    bad = {}
    for k, v in arrays.items():
        mask = np.isnan(v)
        if k == "xi_q":
            mask &= ~diverged
        if mask.any():
            bad[k] = int(mask.sum())
    if bad:
        desc = ", ".join(f"{k}: {n}" for k, n in bad.items())
        warnings.warn(f"{where}: NaN entries ({desc}); these points are left blank in plots", RuntimeWarning,
                      stacklevel=3)


# --------------------------------------------------------------------------------------------------------------------
# critical line
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class CriticalLine(_Result):
    """The order-to-chaos line ``chi_1(sigma_w^2, sigma_b^2) = 1`` and the chaotic branch just beyond it.

    Attributes
    ----------
    activation, activation_params, activation_object
        As in :class:`PhaseDiagram`.
    bias_vars : ndarray, shape (nb,)
        ``sigma_b^2`` values.
    weight_vars : ndarray, shape (nb,)
        Critical ``sigma_w^2`` (``nan`` where no critical point exists).
    qstar : ndarray, shape (nb,)
        ``q*`` on the critical line (``inf`` where it diverges, e.g. ReLU with ``sigma_b^2 > 0``).
    offsets : ndarray, shape (no,)
        Relative distances into the chaotic phase: ``sigma_w^2 = w_c (1 + offset)``.
    chaotic_weight_vars : ndarray, shape (nb, no)
        The ``sigma_w^2`` values ``w_c (1 + offsets)``.
    cstar, chi_c, xi_c : ndarray, shape (nb, no)
        The ``c* != 1`` branch of the correlation map there: its stable fixed point ``c* < 1``, the slope
        ``chi_c = sigma_w^2 int Dz1 Dz2 phi'(u1*) phi'(u2*)`` at ``(q*, c*)``, and ``xi_c = -1/log chi_c``.
        As ``offset -> 0``: ``c* -> 1``, ``chi_c -> 1`` and ``xi_c`` diverges (Schoenholz et al. 2017).

    Examples
    --------
    >>> from meanfield.phase import critical_line
    >>> line = critical_line("erf", [0.0, 0.1])
    >>> round(float(line.weight_vars[0]), 12)       # pi/4
    0.785398163397
    """

    activation: str
    activation_params: tuple
    bias_vars: np.ndarray
    weight_vars: np.ndarray
    qstar: np.ndarray
    offsets: np.ndarray
    chaotic_weight_vars: np.ndarray
    cstar: np.ndarray
    chi_c: np.ndarray
    xi_c: np.ndarray
    activation_object: object = _activation_object_field()

    __repr__ = short_repr

    def _table(self) -> Table:
        """Dim ``bias_var``: the critical ``weight_var`` and ``qstar``; dims ``(bias_var, offset)``: the chaotic branch
        ``chaotic_weight_var``, ``cstar``, ``chi_c``, ``xi_c``. DataFrame rows: ``(bias_var, offset)`` (the critical
        columns repeated per offset), or ``bias_var`` alone without offsets."""
        branch = ("bias_var", "offset")
        data = {"weight_var": (("bias_var",), self.weight_vars), "qstar": (("bias_var",), self.qstar),
                "chaotic_weight_var": (branch, self.chaotic_weight_vars), "cstar": (branch, self.cstar),
                "chi_c": (branch, self.chi_c), "xi_c": (branch, self.xi_c)}
        rows = branch if self.offsets.size else ("bias_var",)
        return Table(coords={"bias_var": self.bias_vars, "offset": self.offsets}, data=data,
                     attrs={"activation": self.activation, "activation_params": self.activation_params}, rows=rows,
                     columns=[k for k, (dims, _) in data.items() if set(dims) <= set(rows)])

    def plot(self, ax: Optional[Axes] = None, **kwargs: Any) -> Axes:
        """Plot the line in the (sigma_w^2, sigma_b^2) plane."""
        from .plotting import plot_critical_line

        return plot_critical_line(self, ax=ax, **kwargs)


def critical_line(
    activation: ActivationLike,
    bias_vars: ArrayLike,
    *,
    offsets: Sequence[float] = (1e-3, 1e-2, 1e-1),
    activation_params: Optional[dict] = None,
) -> CriticalLine:
    r"""Critical weight variances ``sigma_w^2 = w_c(sigma_b^2)`` (``chi_1 = 1``) and the chaotic branch beyond them.

    On the critical line (Poole et al. 2016; docs/mathematics.md sec. 2)

    .. math:: \sigma_w^2 \int Dz\, \phi'(\sqrt{q^*} z)^2 = 1,\qquad q^* = \sigma_w^2\int Dz\,\phi(\sqrt{q^*}z)^2+\sigma_b^2,

    solved by :func:`meanfield.forward.critical_weight_var` (to ~1e-12). Just inside the chaotic phase,
    ``sigma_w^2 = w_c (1 + offset)``, the correlation map has a stable fixed point ``c* < 1``; its slope ``chi_c`` and
    depth scale ``xi_c = -1/log chi_c`` are returned for each offset (``xi_c`` diverges as ``offset -> 0``).
    Known values: tanh at ``sigma_b^2 = 0`` is critical at 1, erf at pi/4, ReLU at 2 for every ``sigma_b^2``.

    Parameters
    ----------
    activation : str or Activation
    bias_vars : float or array_like
        ``sigma_b^2 >= 0`` (any order).
    offsets : sequence of float, optional
        Relative offsets in ``(0, 1e6]`` into the chaotic phase (default 1e-3, 1e-2, 1e-1); ``()`` skips the branch.
    activation_params : dict, optional
        Parameters for :func:`~meanfield.activations.get_activation`.

    Returns
    -------
    CriticalLine

    Examples
    --------
    >>> from meanfield.phase import critical_line
    >>> float(critical_line("relu", 0.3, offsets=()).weight_vars[0])   # q* diverges there (DivergenceWarning)
    2.0
    """
    fw = _core()

    act = _resolve_activation(activation, activation_params)
    b = np.atleast_1d(check_nonneg("bias_vars", bias_vars)).astype(np.float64).ravel()
    off = as_float_array("offsets", offsets)
    off = np.atleast_1d(off).ravel() if off.size else np.empty(0)
    if off.size:   # relative distances from the critical weight_var: w_c (1 + offset) must stay a usable variance
        check_in_range("offsets", off, 0.0, 1e6, lo_open=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wc = _critical_weight_vars(act, b)
        ok = np.isfinite(wc)
        q = np.full_like(b, np.nan)
        if ok.any():
            q[ok] = np.asarray(fw.qstar(act, wc[ok], b[ok]), dtype=np.float64)
        Wc = wc[:, None] * (1.0 + off[None, :])
        cs = np.full(Wc.shape, np.nan)
        xc = np.full(Wc.shape, np.nan)
        if off.size and ok.any():
            Bc = np.broadcast_to(b[:, None], Wc.shape)
            cs[ok] = np.asarray(fw.cstar(act, Wc[ok], Bc[ok]), dtype=np.float64)
            xc[ok] = np.asarray(fw.chi_c(act, Wc[ok], Bc[ok]), dtype=np.float64)
    _summarise_warnings(caught, b.size, f"critical_line({_activation_label(act)!r})", int(np.isinf(q).sum()))
    return CriticalLine(
        **_activation_fields(act),
        bias_vars=_readonly(b),
        weight_vars=_readonly(wc),
        qstar=_readonly(q),
        offsets=_readonly(off),
        chaotic_weight_vars=_readonly(Wc),
        cstar=_readonly(cs),
        chi_c=_readonly(xc),
        xi_c=_readonly(_xi_from_slope(xc)),
    )


# --------------------------------------------------------------------------------------------------------------------
# depth scales at fixed bias
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class DepthScaleCurve(_Result):
    """Depth scales against ``sigma_w^2`` at fixed ``sigma_b^2`` (Schoenholz et al. 2017, Fig. 1).

    Attributes
    ----------
    activation, activation_params, activation_object
        As in :class:`PhaseDiagram`.
    bias_var : float
        The fixed ``sigma_b^2``.
    weight_vars : ndarray, shape (nw,)
    qstar, chi1, cstar, chi_c, xi_q, xi_c, xi_grad : ndarray, shape (nw,)
        As in :class:`PhaseDiagram`.
    critical_weight_var : float
        ``w_c(sigma_b^2)`` where ``chi_1 = 1`` and ``xi_c`` diverges (nan if none).

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.phase import depth_scale_curve
    >>> curve = depth_scale_curve("tanh", np.linspace(1, 4, 60), bias_var=0.05)
    >>> ax = curve.plot()
    """

    activation: str
    activation_params: tuple
    bias_var: float
    weight_vars: np.ndarray
    qstar: np.ndarray
    chi1: np.ndarray
    cstar: np.ndarray
    chi_c: np.ndarray
    xi_q: np.ndarray
    xi_c: np.ndarray
    xi_grad: np.ndarray
    critical_weight_var: float
    activation_object: object = _activation_object_field()

    __repr__ = short_repr

    def _table(self) -> Table:
        """Dim ``weight_var``: the seven quantities; attributes ``bias_var`` and ``critical_weight_var``."""
        return Table(coords={"weight_var": self.weight_vars},
                     data={k: (("weight_var",), getattr(self, k)) for k in QUANTITIES},
                     attrs={"activation": self.activation, "activation_params": self.activation_params,
                            "bias_var": self.bias_var, "critical_weight_var": self.critical_weight_var},
                     rows=("weight_var",))

    def to_csv(self, path: Union[str, os.PathLike]) -> str:
        """Write ``weight_var,qstar,chi1,cstar,chi_c,xi_q,xi_c,xi_grad`` rows (bias_var in the header comment)."""
        path = str(path)
        data = np.column_stack([self.weight_vars] + [getattr(self, k) for k in QUANTITIES])
        header = f"# activation={self.activation} bias_var={self.bias_var!r} critical_weight_var={self.critical_weight_var!r}\n"
        header += ",".join(("weight_var",) + QUANTITIES)
        with atomic_open(path) as fh:
            np.savetxt(fh, data, delimiter=",", header=header, comments="", fmt="%.17g")
        return path

    def plot(self, ax: Optional[Axes] = None, **kwargs: Any) -> Axes:
        """xi_q and xi_c against sigma_w^2 with the critical point; see :func:`meanfield.plotting.plot_depth_scales`."""
        from .plotting import plot_depth_scales

        return plot_depth_scales(self, ax=ax, **kwargs)


def depth_scale_curve(activation: ActivationLike, weight_vars: ArrayLike, bias_var: float = 0.05, *,
                      activation_params: Optional[dict] = None) -> DepthScaleCurve:
    r"""Depth scales ``xi_q``, ``xi_c`` (and ``xi_grad``) against ``sigma_w^2`` at fixed ``sigma_b^2``.

    ``1/xi_q = -log V'(q*)``, ``1/xi_c = -log chi_c`` (Schoenholz et al. 2017, eqs. 8-9; docs/mathematics.md sec. 2); ``xi_c``
    diverges at the critical point ``w_c(sigma_b^2)`` where ``chi_1 = 1``, ``xi_q`` stays finite there.

    Parameters
    ----------
    activation : str or Activation
    weight_vars : array_like, shape (nw,)
        Strictly increasing ``sigma_w^2 > 0``.
    bias_var : float
        ``sigma_b^2 >= 0`` (default 0.05, Schoenholz's Fig. 1).
    activation_params : dict, optional

    Returns
    -------
    DepthScaleCurve

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.phase import depth_scale_curve
    >>> c = depth_scale_curve("erf", np.linspace(0.5, 3, 30), 0.0)
    >>> abs(c.critical_weight_var - np.pi / 4) < 1e-9
    True
    """
    b = check_nonneg("bias_var", bias_var)
    if np.ndim(b) != 0:
        raise ValueError("bias_var must be a single number (use phase_diagram for a grid of biases)")
    pd = phase_diagram(activation, weight_vars, [float(b)], activation_params=activation_params)
    return DepthScaleCurve(
        activation=pd.activation,
        activation_params=pd.activation_params,
        activation_object=pd.activation_object,
        bias_var=float(b),
        weight_vars=pd.weight_vars,
        critical_weight_var=float(pd.critical_weight_vars[0]),
        **{k: _readonly(getattr(pd, k)[0]) for k in QUANTITIES},
    )


# --------------------------------------------------------------------------------------------------------------------
# length / correlation map dynamics (Poole et al. 2016, Figs. 1-2)
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class MapDynamics(_Result):
    """Length and correlation maps and their iterates for a few ``sigma_w^2`` at fixed ``sigma_b^2``.

    Attributes
    ----------
    activation, activation_params, activation_object
        As in :class:`PhaseDiagram`.
    bias_var : float
    weight_vars : ndarray, shape (nw,)
    q_grid : ndarray, shape (nq,)
        Inputs of the length map.
    length_map : ndarray, shape (nw, nq)
        ``V(q) = sigma_w^2 int Dz phi(sqrt(q) z)^2 + sigma_b^2``.
    q0 : ndarray, shape (n0,)
        Starting lengths ``q^1``.
    q_layers : ndarray, shape (nw, n0, depth)
        ``q^l`` for ``l = 1..depth`` (``q^{l+1} = V(q^l)``).
    qstar : ndarray, shape (nw,)
        Fixed points (inf where the map diverges).
    cstar : ndarray, shape (nw,)
        Stable correlation fixed points (:func:`meanfield.forward.cstar`; the q -> inf limit where q* = inf).
    q_ref : ndarray, shape (nw,)
        The length at which the correlation map is drawn: ``q*`` when finite, else ``q^depth`` from ``q^1 = 1``.
    c_grid : ndarray, shape (nc,)
        Inputs of the correlation map.
    correlation_map : ndarray, shape (nw, nc)
        ``C(c) = [sigma_w^2 E[phi(u1) phi(u2)] + sigma_b^2] / V(q_ref)`` with ``u1, u2`` of variance ``q_ref`` and
        correlation ``c`` (equals docs/mathematics.md's ``C(c; q*)`` at ``q_ref = q*``).
    c0 : ndarray, shape (m0,)
        Starting correlations ``c^1``.
    c_layers : ndarray, shape (nw, m0, depth)
        ``c^l`` for ``l = 1..depth`` from the exact two-input recursion (both inputs starting at ``q_ref``; the lengths
        are propagated too, so the result is right even where ``q*`` is infinite).
    chi1 : ndarray, shape (nw,)
        ``chi_1`` at each weight variance (its phase: ordered below 1, chaotic above; shown in the plot's legend).

    Examples
    --------
    >>> from meanfield.phase import map_dynamics
    >>> md = map_dynamics("tanh", [1.0, 2.5, 4.0], bias_var=0.3, depth=15)
    >>> axs = md.plot()                # 2 x 2 panels; axs[0, 0].figure is the figure
    """

    activation: str
    activation_params: tuple
    bias_var: float
    weight_vars: np.ndarray
    q_grid: np.ndarray
    length_map: np.ndarray
    q0: np.ndarray
    q_layers: np.ndarray
    qstar: np.ndarray
    cstar: np.ndarray
    q_ref: np.ndarray
    c_grid: np.ndarray
    correlation_map: np.ndarray
    c0: np.ndarray
    c_layers: np.ndarray
    activation_object: object = _activation_object_field()
    chi1: Optional[np.ndarray] = None

    __repr__ = short_repr

    def _table(self) -> Table:
        """Dims ``weight_var``, ``q`` (the length-map grid), ``c`` (the correlation-map grid), ``q_start``,
        ``c_start`` (``q^1``, ``c^1``) and ``layer`` (``l = 1..depth``): ``length_map (weight_var, q)``,
        ``correlation_map (weight_var, c)``, ``q_layers (weight_var, q_start, layer)``,
        ``c_layers (weight_var, c_start, layer)``, ``qstar``, ``cstar``, ``q_ref (weight_var)``. The DataFrame holds
        the iterates ``q^l`` (rows ``weight_var, q_start, layer``); the correlation iterates and the maps are in
        :meth:`to_xarray`."""
        w = ("weight_var",)
        return Table(coords={"weight_var": self.weight_vars, "q": self.q_grid, "c": self.c_grid,
                             "q_start": self.q0, "c_start": self.c0,
                             "layer": np.arange(1, self.q_layers.shape[-1] + 1)},
                     data={"length_map": (w + ("q",), self.length_map),
                           "correlation_map": (w + ("c",), self.correlation_map),
                           "q_layers": (w + ("q_start", "layer"), self.q_layers),
                           "c_layers": (w + ("c_start", "layer"), self.c_layers),
                           "qstar": (w, self.qstar), "cstar": (w, self.cstar), "q_ref": (w, self.q_ref),
                           **({} if self.chi1 is None else {"chi1": (w, self.chi1)})},
                     attrs={"activation": self.activation, "activation_params": self.activation_params,
                            "bias_var": self.bias_var},
                     rows=("weight_var", "q_start", "layer"), columns=["q_layers"])

    def to_dataframe(self) -> "pandas.DataFrame":
        """The iterates in long form, one row per (``weight_var``, ``quantity``, ``start``, ``layer``): ``quantity``
        is ``"q"`` (``start`` = ``q^1``, ``value`` = ``q^l``) or ``"c"`` (``start`` = ``c^1``, ``value`` = ``c^l``).
        The maps themselves are in :meth:`to_xarray`. Needs pandas."""
        pd = require("pandas", "to_dataframe()")
        frames = []
        for quantity, starts, values in (("q", self.q0, self.q_layers), ("c", self.c0, self.c_layers)):
            t = Table(coords={"weight_var": self.weight_vars, "start": starts,
                              "layer": np.arange(1, values.shape[-1] + 1)},
                      data={"value": (("weight_var", "start", "layer"), values)},
                      rows=("weight_var", "start", "layer"))
            frame = to_dataframe(t)
            frame.insert(1, "quantity", quantity)
            frames.append(frame)
        out = pd.concat(frames, ignore_index=True)
        out.attrs.update(activation=self.activation, activation_params=list(self.activation_params),
                         bias_var=self.bias_var)
        return out

    def plot(self, ax: Optional[np.ndarray] = None, **kwargs: Any) -> np.ndarray:
        """Four panels: V(q) against the identity, q^l against l, C(c) against the identity, c^l against l; draws on
        ``ax`` (a 2 x 2 array of Axes) if given and returns the 2 x 2 array of Axes (see
        :func:`meanfield.plotting.plot_map_dynamics`; ``fig=`` still works but is deprecated)."""
        from .plotting import plot_map_dynamics

        return plot_map_dynamics(self, ax, **kwargs)


def _covariance_map(fw, act, c, q, w, b) -> np.ndarray:
    """``q_12 = sigma_w^2 E[phi(u_1) phi(u_2)] + sigma_b^2`` for two inputs of squared length ``q`` at correlation
    ``c``: the public correlation map ``C(c; q) = q_12 / q`` times ``q``."""
    return np.asarray(fw.correlation_map(act, c, w, b, q=q), dtype=np.float64) * q


def map_dynamics(
    activation: ActivationLike,
    weight_vars: ArrayLike,
    bias_var: float = 0.3,
    *,
    depth: int = 15,
    q0: Sequence[float] = (0.02, 0.5, 1.5, 3.0),
    c0: Sequence[float] = (0.0, 0.3, 0.6, 0.9, 0.99),
    q_max: Optional[float] = None,
    n_grid: int = 101,
    activation_params: Optional[dict] = None,
) -> MapDynamics:
    r"""Iterate the length map and the correlation map layer by layer (Poole et al. 2016, Figs. 1-2).

    Length: ``q^{l+1} = V(q^l) = sigma_w^2 int Dz phi(sqrt(q^l) z)^2 + sigma_b^2``. Correlation (two inputs of equal
    length ``q^l`` and correlation ``c^l``):

    .. math:: q_{12}^{l+1} = \sigma_w^2\,E[\phi(u_1)\phi(u_2)] + \sigma_b^2,\qquad c^{l+1} = q_{12}^{l+1}/V(q^l),

    with ``(u_1, u_2)`` Gaussian of variances ``q^l`` and covariance ``c^l q^l``, i.e. ``c^{l+1} = C(c^l; q^l) q^l / V(q^l)``
    with the public maps :func:`meanfield.forward.length_map` and :func:`meanfield.forward.correlation_map`.
    Starting at ``q^1 = q*`` this is docs/mathematics.md's ``c^{l+1} = C(c^l; q*)``.

    Parameters
    ----------
    activation : str or Activation
    weight_vars : float or array_like
        A few ``sigma_w^2 > 0`` values, one curve each.
    bias_var : float
        ``sigma_b^2 >= 0``.
    depth : int
        Number of layers plotted, ``2 <= depth <= MAX_MAP_DEPTH`` (1000; the iterates settle within a few depth
        scales, and each layer costs a few quadratures per curve).
    q0 : sequence of float
        Starting lengths ``q^1 > 0``.
    c0 : sequence of float
        Starting correlations in ``[-1, 1]``.
    q_max : float, optional
        Right end of the length-map grid (default: 1.5 x the largest of q^1, 1 and the finite q* below 100 x that).
    n_grid : int
        Points on the map grids (>= 3).
    activation_params : dict, optional

    Returns
    -------
    MapDynamics
    """
    fw = _core()
    act = _resolve_activation(activation, activation_params)
    ws = np.atleast_1d(check_positive("weight_vars", weight_vars)).astype(np.float64).ravel()
    b = check_nonneg("bias_var", bias_var)
    if np.ndim(b) != 0:
        raise ValueError("bias_var must be a single number")
    b = float(b)
    depth = check_int("depth", depth, 2)
    if depth > MAX_MAP_DEPTH:
        raise ValueError(f"depth must be an integer in [2, {MAX_MAP_DEPTH}] (layers drawn in the map figure), "
                         f"got {depth}")
    n_grid = check_int("n_grid", n_grid, 3)
    q0a = np.atleast_1d(check_positive("q0", q0)).astype(np.float64).ravel()
    c0a = np.atleast_1d(check_in_range("c0", c0, -1.0, 1.0)).astype(np.float64).ravel()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qs = np.asarray(fw.qstar(act, ws, b), dtype=np.float64).reshape(ws.shape)
        cs = np.asarray(fw.cstar(act, ws, b), dtype=np.float64).reshape(ws.shape)
        chi = np.asarray(fw.chi1(act, ws, b), dtype=np.float64).reshape(ws.shape)
        # length-map iterates
        q_layers = np.empty((ws.size, q0a.size, depth))
        for i, w in enumerate(ws):
            q = q0a.copy()
            for l in range(depth):
                q_layers[i, :, l] = q
                q = np.asarray(fw.length_map(act, q, w, b), dtype=np.float64)
        # reference length for the correlation map
        q_ref = np.empty_like(ws)
        for i, w in enumerate(ws):
            if np.isfinite(qs[i]) and qs[i] > 0:
                q_ref[i] = qs[i]
            else:
                q = 1.0
                for _ in range(depth):
                    q = float(fw.length_map(act, q, w, b))
                q_ref[i] = q if np.isfinite(q) and q > 0 else 1.0
        base = max(float(np.max(q0a)), 1.0)
        shown = qs[np.isfinite(qs) & (qs <= 100.0 * base)]  # a huge q* (marginal divergence) would flatten the panel
        if q_max is not None:
            qm = check_positive("q_max", q_max, scalar=True)
        else:
            qm = 1.5 * float(np.max(np.concatenate([shown, q0a, [1.0]])))
        q_grid = np.linspace(0.0, qm, n_grid)
        Vq = np.stack([np.asarray(fw.length_map(act, q_grid, w, b), dtype=np.float64) for w in ws])

        c_grid = np.linspace(-1.0, 1.0, n_grid)
        Cc = np.empty((ws.size, n_grid))
        c_layers = np.empty((ws.size, c0a.size, depth))
        for i, w in enumerate(ws):
            qr = q_ref[i]
            Vr = float(fw.length_map(act, qr, w, b))
            Cc[i] = _covariance_map(fw, act, c_grid, qr, w, b) / Vr
            c = c0a.copy()
            q = qr
            for l in range(depth):
                c_layers[i, :, l] = c
                qn = float(fw.length_map(act, q, w, b))
                if not (qn > 0.0 and np.isfinite(qn)):
                    raise ValueError(f"map_dynamics: the length reached {qn} at layer {l + 2} for the weight_vars entry "
                                     f"{w} with bias_var={b}; the correlation is undefined there (use bias_var > 0)")
                c = np.clip(_covariance_map(fw, act, c, q, w, b) / qn, -1.0, 1.0)
                q = qn
    _summarise_warnings(caught, ws.size, f"map_dynamics({_activation_label(act)!r})", int(np.isinf(qs).sum()))
    return MapDynamics(
        **_activation_fields(act),
        bias_var=b,
        weight_vars=_readonly(ws),
        q_grid=_readonly(q_grid),
        length_map=_readonly(Vq),
        q0=_readonly(q0a),
        q_layers=_readonly(q_layers),
        qstar=_readonly(qs),
        cstar=_readonly(cs),
        q_ref=_readonly(q_ref),
        c_grid=_readonly(c_grid),
        correlation_map=_readonly(Cc),
        c0=_readonly(c0a),
        c_layers=_readonly(c_layers),
        chi1=_readonly(chi),
    )
