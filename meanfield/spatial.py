r"""Convolutional, pooling and layer-norm layers at infinite width, and the sweep of a chain over images
(docs/architectures.md).

Inputs are shaped like neural-tangents' ``(N, H, W, C)`` (2-D) or ``(N, L, C)`` (1-D): batch, spatial axes, channels.
The signal of input ``x`` at position ``p`` and channel ``i`` is Gaussian over the random weights, independent across
channels and with covariance ``Q(x, p; x', p')`` across inputs and positions (Novak et al. 2019, Garriga-Alonso et
al. 2019). The layer rules (``w`` = weight_var, ``b`` = bias_var, ``F`` the filter's positions, ``|F|`` their number,
``s`` the stride, ``x.x'/C`` the input covariance over channels):

=====================  ==============================================================================================
layer                  rule on the covariance ``Q`` (the NTK ``Theta`` follows the same linear maps)
=====================  ==============================================================================================
Conv(w, b)             ``Q_out(p, p') = (w / |F|) sum_{d in F} Q(s p + d, s p' + d) + b``  (padded entries are 0,
                       CIRCULAR wraps); NTK param. ``Theta_out = (w / |F|) sum_d Theta(...) + Q_out``, standard
                       ``Theta_out = (w / |F|) sum_d Theta(...) + C |F| (1 / |F|) sum_d Q(...) + 1``
AvgPool(k)             ``Q_out(p, p') = k^-2 sum_{a, a' in window} Q(s p + a, s p' + a')``  (needs all ``(p, p')``)
GlobalAvgPool()        ``Q_out = P^-2 sum_{p, p'} Q(p, p')``  (needs all ``(p, p')``)
Flatten()              ``Q_out = P^-1 sum_p Q(p, p)``  (needs only the spatial diagonal)
LayerNorm(axis)        ``Q_out(p, p') = Q(p, p') / sqrt((eps + v(x, p)) (eps + v(x', p')))``, ``v(x, p) = Q(x, p; x,
                       p)`` (``axis="channel"``) or its mean over positions (``axis="all"``); ``Theta`` likewise
Dense(w, b)            per position over the channels: ``w Q + b`` (as for vectors)
Nonlinearity(phi)      ``E[phi(u) phi(v)]`` entry by entry, ``(u, v)`` of covariance ``[[Q(x,p;x,p), Q(x,p;x',p')],
                       [., Q(x',p';x',p')]]``; ``Theta_out = E[phi'(u) phi'(v)] Theta`` (the expectation engine)
Residual(g, alpha)     ``Q + alpha^2 Q_g``, ``Theta + alpha^2 Theta_g``
Dropout(keep)          same input and same position ``Q(x, p; x, p) / keep`` (a mask per input, position and
                       channel, torch ``nn.Dropout``); other entries unchanged; ``Theta`` likewise
=====================  ==============================================================================================

Backwards, q-tilde (:func:`spatial_trace`) flows through the transposes of these maps (``E[phi'(u) phi'(v)]``
entry by entry for a Nonlinearity), from ``qtilde = 1`` at one output unit.

These are neural-tangents' ``stax`` conventions (``W_std^2 = weight_var``, ``b_std^2 = bias_var``, fan-in over filter
size times channels; ``AvgPool(normalize_edges=False)`` by default), so the two libraries can be compared entry by
entry. Which form of the covariance flows is decided from the end of the chain backwards, as in neural-tangents: the
full ``(N, N, P, P)`` form (``P`` positions) is carried only where a later GlobalAvgPool or AvgPool needs the
off-diagonal positions; before a Flatten the diagonal-in-space form ``(N, N, P)`` suffices (a Conv maps the spatial
diagonal to itself, a Nonlinearity acts entry by entry).

The sweep is tiled over pairs of inputs: memory ``O(N P^2 + tile)`` in the full form, ``O(N P + tile)`` in the diagonal
one. The full form is refused above :data:`MAX_PAIR_ENTRIES` entries per pair (``P^2``, e.g. 45 x 45 images) or
:data:`MAX_SELF_ENTRIES` entries for the ``N`` same-input blocks (``N P^2``, e.g. N = 128 at 32 x 32), with a message
naming the size; the diagonal form has no such limit.

Examples
--------
>>> import numpy as np
>>> from meanfield.layers import Dense, Nonlinearity, serial
>>> from meanfield.spatial import Conv, Flatten
>>> net = serial(Conv(2.0, 0.1, (3, 3)), Nonlinearity("relu"), Flatten(), Dense(1.0))
>>> x = np.random.default_rng(0).standard_normal((4, 6, 6, 3))
>>> res = spatial_kernels(net, x)
>>> res.nngp.shape, bool(np.all(res.ntk == res.ntk.T))
((4, 4), True)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ._typing import ArrayLike, NetworkLike
    from .kernels import KernelResult

import numpy as np

from ._checks import check_finite_array, check_int, check_nonneg, check_positive
from ._interop import short_repr
from .layers import Dense, Dropout, Layer, Nonlinearity, Residual, _pair_plan, _scalar

__all__ = ["Conv", "AvgPool", "GlobalAvgPool", "Flatten", "LayerNorm", "spatial_kernels", "spatial_variances",
           "spatial_trace", "SpatialTrace", "is_spatial", "MAX_PAIR_ENTRIES", "MAX_SELF_ENTRIES"]

#: Largest ``P^2`` (entries of one pair's full spatial covariance) accepted: 2^22, e.g. 45 x 45 images (2025 positions).
MAX_PAIR_ENTRIES = 2 ** 22
#: Largest ``N P^2`` (the same-input blocks of the full spatial form, 8 bytes each: 1 GiB) accepted.
MAX_SELF_ENTRIES = 2 ** 27
_TILE_ENTRIES = 2 ** 20   # entries of a cross tile (a * b * P^2 or a * b * P) processed at once

_PADDINGS = ("SAME", "VALID", "CIRCULAR")


def _int_tuple(name, value, ndim=None):
    t = ((value,) * (ndim or 1)) if np.ndim(value) == 0 else tuple(value)
    if len(t) == 0 or (ndim is not None and len(t) != ndim):
        raise ValueError(f"{name} must be a positive integer or a tuple of {ndim or 'one or more'} positive integers, "
                         f"got {value!r}")
    return tuple(check_int(name, v, 1) for v in t)


def _padding(value):
    if not isinstance(value, str) or value.upper() not in _PADDINGS:
        raise ValueError(f"padding must be one of {_PADDINGS}, got {value!r}")
    return value.upper()


def _axis_geometry(n, k, s, padding, what):
    """``(n_out, lo, hi)`` of a window ``k``, stride ``s`` on an axis of length ``n`` (lax.padtype_to_pads)."""
    if padding == "VALID":
        if k > n:
            raise ValueError(f"{what}: window {k} is larger than the spatial size {n} with padding='VALID'")
        return (n - k) // s + 1, 0, 0
    n_out = -(-n // s)
    total = max((n_out - 1) * s + k - n, 0)
    return n_out, total // 2, total - total // 2


# ------------------------------------------------------------------------------------------------ layer objects
@dataclass(frozen=True)
class Conv(Layer):
    r"""Convolution over the spatial axes (1-D or 2-D: the length of ``filter_shape``), ``C_out = width_ratio * M``
    channels, weights ``N(0, weight_var / (C_in |F|))``, bias ``N(0, bias_var)`` per output channel.

    Rule: ``Q_out(p, p') = (weight_var / |F|) sum_{d in F} Q(s p + d - lo, s p' + d - lo) + bias_var`` with zero
    padding (SAME), none (VALID) or wrap-around (CIRCULAR); ``lo`` is lax's SAME left padding. NTK parameterization
    ``Theta_out = conv(Theta) + Q_out``; standard ``Theta_out = conv(Theta) + C_in |F| avg(Q) + 1`` (Novak et al.
    2019, eqs. in their appendix; neural-tangents ``stax.Conv``).

    Parameters
    ----------
    weight_var, bias_var : float
        ``W_std^2`` and ``b_std^2`` of neural-tangents (>= 0).
    filter_shape : tuple of int
        ``(k,)`` for 1-D or ``(k_h, k_w)`` for 2-D inputs.
    strides : tuple of int, optional
        Default 1 on every axis.
    padding : {"SAME", "VALID", "CIRCULAR"}
    width_ratio : float
        Output channels over M (> 0), as :class:`~meanfield.layers.Dense`.
    orthogonal : bool
        Delta-orthogonal weights in the finite-width twin (Xiao et al. 2018): the centre tap of the filter is a
        (scaled) Haar-orthogonal matrix, the other taps zero. At infinite width only the centre tap carries variance,
        so the rule becomes that of a 1 x 1 convolution: ``Q_out(p, p') = weight_var Q(s p, s p') + bias_var``
        (``filter_shape`` still sets the padding geometry).

    Examples
    --------
    >>> Conv(2.0, 0.1, (3, 3), padding="circular").padding
    'CIRCULAR'
    """

    weight_var: float = 1.0
    bias_var: float = 0.0
    filter_shape: tuple = (3, 3)
    strides: Optional[tuple] = None
    padding: str = "SAME"
    width_ratio: float = 1.0
    orthogonal: bool = False
    _fresh_weights = True     # (class attribute) may end a residual block

    def __post_init__(self):
        object.__setattr__(self, "weight_var", _scalar("weight_var", self.weight_var, check_nonneg))
        object.__setattr__(self, "bias_var", _scalar("bias_var", self.bias_var, check_nonneg))
        fs = _int_tuple("filter_shape", self.filter_shape)
        if len(fs) > 2:
            raise ValueError(f"filter_shape must have 1 (1-D) or 2 (2-D) entries, got {self.filter_shape!r}")
        object.__setattr__(self, "filter_shape", fs)
        st = (1,) * len(fs) if self.strides is None else _int_tuple("strides", self.strides, len(fs))
        object.__setattr__(self, "strides", st)
        object.__setattr__(self, "padding", _padding(self.padding))
        object.__setattr__(self, "width_ratio", _scalar("width_ratio", self.width_ratio, check_positive))
        if not isinstance(self.orthogonal, (bool, np.bool_)):
            raise TypeError(f"orthogonal must be True or False, got {self.orthogonal!r}")
        object.__setattr__(self, "orthogonal", bool(self.orthogonal))

    @property
    def filter_size(self) -> int:
        return int(np.prod(self.filter_shape))

    def to_dict(self) -> dict:
        return {"layer": "Conv", "weight_var": self.weight_var, "bias_var": self.bias_var,
                "filter_shape": list(self.filter_shape), "strides": list(self.strides), "padding": self.padding,
                "width_ratio": self.width_ratio, "orthogonal": self.orthogonal}


@dataclass(frozen=True)
class AvgPool(Layer):
    r"""Average pooling over windows ``window_shape`` (per channel, no parameters).

    Rule: ``Q_out(p, p') = sum_{a, a'} Q(s p + a, s p' + a') / (n(p) n(p'))`` with ``n = |window|``, or, with
    ``normalize_edges=True`` and SAME padding, the number of non-padded entries of the window (neural-tangents
    ``stax.AvgPool``). Needs the full spatial covariance.

    Examples
    --------
    >>> AvgPool((2, 2)).strides
    (2, 2)
    """

    window_shape: tuple = (2, 2)
    strides: Optional[tuple] = None
    padding: str = "VALID"
    normalize_edges: bool = False

    def __post_init__(self):
        ws = _int_tuple("window_shape", self.window_shape)
        if len(ws) > 2:
            raise ValueError(f"window_shape must have 1 or 2 entries, got {self.window_shape!r}")
        object.__setattr__(self, "window_shape", ws)
        # default strides: the window (non-overlapping), as torch's avg_pool; neural-tangents' default is 1, so give
        # strides explicitly when comparing
        st = ws if self.strides is None else _int_tuple("strides", self.strides, len(ws))
        object.__setattr__(self, "strides", st)
        object.__setattr__(self, "padding", _padding(self.padding))
        object.__setattr__(self, "normalize_edges", bool(self.normalize_edges))

    def to_dict(self) -> dict:
        return {"layer": "AvgPool", "window_shape": list(self.window_shape), "strides": list(self.strides),
                "padding": self.padding, "normalize_edges": self.normalize_edges}


@dataclass(frozen=True)
class GlobalAvgPool(Layer):
    r"""Mean over all positions: ``Q_out(x, x') = P^-2 sum_{p, p'} Q(x, p; x', p')`` (needs the full form).

    Examples
    --------
    >>> GlobalAvgPool().to_dict()
    {'layer': 'GlobalAvgPool'}
    """

    def to_dict(self) -> dict:
        return {"layer": "GlobalAvgPool"}


@dataclass(frozen=True)
class Flatten(Layer):
    r"""Positions and channels into one vector of ``P C`` units: ``Q_out(x, x') = P^-1 sum_p Q(x, p; x', p)``.

    The next Dense layer's fan-in is ``P C`` (the standard parameterization sees it).

    Examples
    --------
    >>> Flatten().to_dict()
    {'layer': 'Flatten'}
    """

    def to_dict(self) -> dict:
        return {"layer": "Flatten"}


@dataclass(frozen=True)
class LayerNorm(Layer):
    r"""Layer normalisation ``(h - mean) / sqrt(var + eps)`` over the channels (``axis="channel"``, neural-tangents
    ``LayerNorm(axis=-1)``) or over channels and positions (``axis="all"``, ``axis=(1, 2, 3)``).

    At infinite width the channel mean vanishes and the variance concentrates on ``v(x, p) = Q(x, p; x, p)`` (or its
    mean over positions), so ``Q_out(x, p; x', p') = Q / sqrt((eps + v(x, p)) (eps + v(x', p')))`` and the NTK and
    ``qtilde`` are divided alike (neural-tangents' rule; the finite-width twin measures the O(1/M) remainder).

    Examples
    --------
    >>> LayerNorm().axis
    'channel'
    """

    axis: str = "channel"
    eps: float = 1e-12

    def __post_init__(self):
        if self.axis not in ("channel", "all"):
            raise ValueError(f"axis must be 'channel' or 'all', got {self.axis!r}")
        object.__setattr__(self, "eps", _scalar("eps", self.eps, check_nonneg))

    def to_dict(self) -> dict:
        return {"layer": "LayerNorm", "axis": self.axis, "eps": self.eps}


_SPATIAL_TYPES = (Conv, AvgPool, GlobalAvgPool, Flatten, LayerNorm)


def is_spatial(chain) -> bool:
    """Whether ``chain`` holds a layer of this module (then it needs inputs with spatial axes)."""
    for lay in chain:
        if isinstance(lay, _SPATIAL_TYPES):
            return True
        if isinstance(lay, Residual) and is_spatial(lay.block):
            return True
    return False


# ------------------------------------------------------------------------------------------------ the linear maps
# A state is (array, shape, form): form "flat" (no spatial axes), "diag" (..., P) or "full" (..., P, P); shape is the
# spatial shape (H, W) or (L,). Leading axes are batches (one input: (N,), a tile of pairs: (a, b)).
def _pad_axes(A, axes, lo, hi, padding):
    if lo == 0 and hi == 0:
        return A
    pads = [(0, 0)] * A.ndim
    for ax in axes:
        pads[ax] = (lo, hi)
    return np.pad(A, pads, mode="wrap" if padding == "CIRCULAR" else "constant")


def _window_axis(A, axes, k, s, padding, n, what, joint):
    """Sum over a window of ``k`` along ``axes`` with stride ``s``: jointly shifted (``joint``: the pair of a
    covariance's twin axes moved together, as a filter tap) or each axis on its own (a pooling window per position)."""
    n_out, lo, hi = _axis_geometry(n, k, s, padding, what)
    if padding == "SAME" and (lo or hi):
        return _window_axis_zero_pad(A, axes, k, s, n, n_out, lo, joint), n_out
    A = _pad_axes(A, axes, lo, hi, padding)
    stop = (n_out - 1) * s + 1
    out = None
    if joint:
        for d in range(k):
            idx = [slice(None)] * A.ndim
            for ax in axes:
                idx[ax] = slice(d, d + stop, s)
            term = A[tuple(idx)]
            out = term.copy() if out is None else out.__iadd__(term)
        return out, n_out
    for ax in axes:
        acc = None
        for d in range(k):
            idx = [slice(None)] * A.ndim
            idx[ax] = slice(d, d + stop, s)
            term = A[tuple(idx)]
            acc = term.copy() if acc is None else acc.__iadd__(term)
        A = acc
    return A, n_out


def _window_axis_zero_pad(A, axes, k, s, n, n_out, lo, joint):
    """:func:`_window_axis` with zero padding, without building the padded array: each tap adds the input entries it
    reads (``i = s o + d - lo`` inside ``[0, n)``) into the outputs ``o`` that read them, in the order of the taps, so
    every sum equals the padded one (``x + 0 = x``)."""
    groups = [axes] if joint else [[ax] for ax in axes]
    for grp in groups:
        shp = list(A.shape)
        for ax in grp:
            shp[ax] = n_out
        out = np.zeros(shp)
        for d in range(k):
            o0 = max(0, -(-(lo - d) // s))                 # first output whose tap d reads inside the input
            o1 = min(n_out - 1, (n - 1 + lo - d) // s)     # last one
            if o1 < o0:
                continue
            i0 = o0 * s + d - lo
            src = [slice(None)] * A.ndim
            dst = [slice(None)] * A.ndim
            for ax in grp:
                src[ax] = slice(i0, i0 + (o1 - o0) * s + 1, s)
                dst[ax] = slice(o0, o1 + 1)
            out[tuple(dst)] += A[tuple(src)]
        A = out
    return A


def _edge_counts(n, k, s, padding):
    """Per output position, the number of non-padded entries of its window (SAME padding)."""
    n_out, lo, _ = _axis_geometry(n, k, s, padding, "AvgPool")
    starts = np.arange(n_out) * s - lo
    return np.clip(starts + k, 0, n) - np.clip(starts, 0, n)


def _expand(A, shape, form, lead):
    """View ``A`` (lead batch axes + P or P, P) with the positions unfolded into ``shape``."""
    if form == "diag":
        return A.reshape(A.shape[:lead] + shape)
    return A.reshape(A.shape[:lead] + shape + shape)


def _fold(A, shape, form, lead):
    P = int(np.prod(shape))
    return A.reshape(A.shape[:lead] + ((P,) if form == "diag" else (P, P)))


def _conv_avg(A, shape, form, lay, lead):
    """``(1/|F|) sum_{d in F} A(s p + d, s p' + d)``: the filter average of a Conv on a diag or full state."""
    S = len(shape)
    X = _spatial_first(_expand(A, shape, form, lead), lead)
    out_shape = []
    for ax in range(S):
        k = 1 if lay.orthogonal else lay.filter_shape[ax]
        n = shape[ax]
        if lay.orthogonal:
            # delta-orthogonal: only the centre tap; its position in the padded window is the SAME/CIRCULAR offset
            n_out, lo, hi = _axis_geometry(n, lay.filter_shape[ax], lay.strides[ax], lay.padding, "Conv")
            c = lay.filter_shape[ax] // 2 - lo        # input index of output 0's centre tap
            axes = [ax] + ([S + ax] if form == "full" else [])
            Xp = _pad_axes(X, axes, lo, hi, lay.padding)
            idx = [slice(None)] * Xp.ndim
            for a in axes:
                idx[a] = slice(c + lo, c + lo + (n_out - 1) * lay.strides[ax] + 1, lay.strides[ax])
            X = Xp[tuple(idx)]
        else:
            axes = [ax] + ([S + ax] if form == "full" else [])
            X, n_out = _window_axis(X, axes, k, lay.strides[ax], lay.padding, n, "Conv", True)
            X = X / k
        out_shape.append(n_out)
    out_shape = tuple(out_shape)
    return _fold(np.ascontiguousarray(_spatial_last(X, lead)), out_shape, form, lead), out_shape


def _spatial_first(X, lead):
    """View with the spatial axes first: the window sums then add long contiguous runs (all the pairs of a tile at
    once) instead of short rows of positions."""
    return np.moveaxis(X, tuple(range(lead, X.ndim)), tuple(range(X.ndim - lead)))


def _spatial_last(X, lead):
    return np.moveaxis(X, tuple(range(X.ndim - lead)), tuple(range(lead, X.ndim)))


def _avg_pool(A, shape, lay, lead):
    """AvgPool on a full state: each of the two position axes averaged over its own window."""
    S = len(shape)
    X = _spatial_first(_expand(A, shape, "full", lead), lead)
    out_shape = []
    for ax in range(S):
        k, s, n = lay.window_shape[ax], lay.strides[ax], shape[ax]
        X, n_out = _window_axis(X, [ax, S + ax], k, s, lay.padding, n, "AvgPool", False)
        if lay.normalize_edges and lay.padding == "SAME":
            cnt = _edge_counts(n, k, s, lay.padding).astype(np.float64)
            b1 = [1] * X.ndim
            b1[ax] = n_out
            b2 = [1] * X.ndim
            b2[S + ax] = n_out
            X = X / cnt.reshape(b1) / cnt.reshape(b2)
        else:
            X = X / (k * k)
        out_shape.append(n_out)
    out_shape = tuple(out_shape)
    return _fold(np.ascontiguousarray(_spatial_last(X, lead)), out_shape, "full", lead), out_shape


def _dropout_same(A, form, keep, lead):
    r"""Inverted dropout with a mask drawn per input, position and channel (torch ``nn.Dropout``): ``E[m m'] /
    keep^2`` is ``1 / keep`` for the same unit and 1 otherwise, so only the same-input, same-position entries
    ``(x, p; x, p)`` are divided by ``keep``. ``A`` is a same-input state (``lead = 1``: (N, ...)) or a diagonal tile
    (``lead = 2``: (a, a, ...), the blocks ``[k, k]``); returns a copy."""
    A = np.array(A, dtype=np.float64)
    if keep == 1.0:
        return A
    idx = np.arange(A.shape[0])
    sel = (idx,) * lead
    if form == "full":
        r = np.arange(A.shape[-1])
        sel = tuple(i[:, None] for i in sel) + (r[None, :], r[None, :])
    A[sel] /= keep
    return A


def _to_diag(A, lead):
    return np.diagonal(A, axis1=lead, axis2=lead + 1).copy()     # a writable copy (the tile pass writes into it)


def _reduce(A, form, kind, lead):
    """GlobalAvgPool (``kind="gap"``, full form) or Flatten (``"flatten"``, spatial mean of the diagonal)."""
    if kind == "gap":
        if form != "full":
            raise AssertionError("GlobalAvgPool needs the full spatial form")   # pragma: no cover - planner bug
        return A.mean(axis=(lead, lead + 1))
    if form == "full":
        A = np.diagonal(A, axis1=lead, axis2=lead + 1)
    return A.mean(axis=lead)


# ------------------------------------------------------------------------------------------------ the adjoint maps
# q-tilde flows backwards through the transposes of the linear maps above: if a layer maps the covariance as
# ``Q_out = A Q A^T`` (A acting on positions), ``<Q_out, R> = <Q, A^T R A>`` gives ``qtilde_in = A^T qtilde_out A``.
def _unpad_axes(X, axes, lo, n, padding):
    """Adjoint of :func:`_pad_axes` on ``axes``: drop the zero padding, or fold the wrapped entries back (CIRCULAR)."""
    npad = X.shape[axes[0]]
    if npad == n and lo == 0:
        return X
    for ax in axes:
        if padding == "CIRCULAR":
            fold = np.zeros((npad, n))
            fold[np.arange(npad), (np.arange(npad) - lo) % n] = 1.0
            X = np.moveaxis(np.moveaxis(X, ax, -1) @ fold, -1, ax)
        else:
            idx = [slice(None)] * X.ndim
            idx[ax] = slice(lo, lo + n)
            X = X[tuple(idx)]
    return X


def _window_axis_adjoint(A, axes, k, s, padding, n, what, joint, taps=None):
    """Adjoint of :func:`_window_axis` (``taps``: the window offsets that carry weight, default all ``k``)."""
    n_out, lo, hi = _axis_geometry(n, k, s, padding, what)
    npad = n + lo + hi
    stop = (n_out - 1) * s + 1
    taps = range(k) if taps is None else taps
    groups = [axes] if joint else [[ax] for ax in axes]
    for grp in groups:
        shp = list(A.shape)
        for ax in grp:
            shp[ax] = npad
        out = np.zeros(shp)
        for d in taps:
            idx = [slice(None)] * A.ndim
            for ax in grp:
                idx[ax] = slice(d, d + stop, s)
            out[tuple(idx)] += A
        A = out
    return _unpad_axes(A, axes, lo, n, padding)


def _out_shape(shape, window, strides, padding, what):
    return tuple(_axis_geometry(n, k, s, padding, what)[0] for n, k, s in zip(shape, window, strides))


def _conv_avg_adjoint(R, shape, form, lay, lead):
    """Transpose of :func:`_conv_avg`: ``R`` on the Conv's output positions -> its input ``shape``:
    ``(1/|F|) sum_{d in F} sum_{s p + d = q, s p' + d = q'} R(p, p')`` (a padded position receives nothing; CIRCULAR
    wraps)."""
    S = len(shape)
    X = _expand(R, _out_shape(shape, lay.filter_shape, lay.strides, lay.padding, "Conv"), form, lead)
    for ax in range(S):
        k = lay.filter_shape[ax]
        axes = [lead + ax] + ([lead + S + ax] if form == "full" else [])
        if lay.orthogonal:
            X = _window_axis_adjoint(X, axes, k, lay.strides[ax], lay.padding, shape[ax], "Conv", True, [k // 2])
        else:
            X = _window_axis_adjoint(X, axes, k, lay.strides[ax], lay.padding, shape[ax], "Conv", True) / k
    return _fold(np.ascontiguousarray(X), shape, form, lead)


def _avg_pool_adjoint(R, shape, lay, lead):
    """Transpose of :func:`_avg_pool` (full form): each position axis spread back over its own window."""
    S = len(shape)
    out_shape = _out_shape(shape, lay.window_shape, lay.strides, lay.padding, "AvgPool")
    X = _expand(R, out_shape, "full", lead)
    for ax in range(S):
        k, s, n = lay.window_shape[ax], lay.strides[ax], shape[ax]
        if lay.normalize_edges and lay.padding == "SAME":
            cnt = _edge_counts(n, k, s, lay.padding).astype(np.float64)
            b1 = [1] * X.ndim
            b1[lead + ax] = out_shape[ax]
            b2 = [1] * X.ndim
            b2[lead + S + ax] = out_shape[ax]
            X = X / cnt.reshape(b1) / cnt.reshape(b2)
        else:
            X = X / (k * k)
        X = _window_axis_adjoint(X, [lead + ax, lead + S + ax], k, s, lay.padding, n, "AvgPool", False)
    return _fold(np.ascontiguousarray(X), shape, "full", lead)


def _from_diag(A, lead):
    """Adjoint of :func:`_to_diag`: the diagonal form ``(..., P)`` as a full form with zero off-diagonal entries."""
    P = A.shape[lead]
    out = np.zeros(A.shape + (P,))
    idx = np.arange(P)
    out[(slice(None),) * lead + (idx, idx)] = A
    return out


def _reduce_adjoint(R, form, kind, P, lead):
    """Transpose of :func:`_reduce`: GlobalAvgPool spreads ``R / P^2`` over all ``(p, p')``, Flatten ``R / P`` over
    the spatial diagonal."""
    R = np.asarray(R, dtype=np.float64)
    if kind == "gap":
        return np.broadcast_to((R / (P * P))[(...,) + (None,) * 2], R.shape + (P, P)).copy()
    D = np.broadcast_to((R / P)[..., None], R.shape + (P,)).copy()
    return _from_diag(D, lead) if form == "full" else D


# ------------------------------------------------------------------------------------------------ planning
def _need_full(layers, need_out):
    """Backward scan: per layer, whether its input must carry the full spatial form; and the chain's input need."""
    needs = [False] * len(layers)
    need = need_out
    for k in range(len(layers) - 1, -1, -1):
        lay = layers[k]
        if isinstance(lay, Flatten):
            need = False
        elif isinstance(lay, (GlobalAvgPool, AvgPool)):
            need = True
        elif isinstance(lay, Residual):
            _, nb = _need_full(lay.block.layers, need)
            need = need or nb
        needs[k] = need
    return needs, need


class _SNode:
    """One layer of a compiled spatial chain."""

    __slots__ = ("layer", "path", "form_in", "form_out", "shape_in", "shape_out", "fan_in", "plan", "sub",
                 "self_dot", "self_out", "ln_scale")

    def __init__(self, layer, path):
        self.layer, self.path = layer, path
        self.plan = self.sub = self.self_dot = self.ln_scale = None


class _Ctx:
    def __init__(self, want_dot, rtol, width, standard):
        self.want_dot, self.rtol, self.width, self.standard = want_dot, rtol, width, standard


def _diag_of(S, form):
    """Per-row variances (inputs x positions, flattened) of a same-input state."""
    if form == "flat":
        return S.copy()
    if form == "diag":
        return S.reshape(-1).copy()
    return np.diagonal(S, axis1=1, axis2=2).reshape(-1).copy()


def _check_full(shape, n, where):
    P = int(np.prod(shape))
    if P * P > MAX_PAIR_ENTRIES:
        raise ValueError(f"x: the full spatial covariance needed before {where} has P^2 = {P * P} entries per pair of "
                         f"inputs (spatial shape {shape}), above the {MAX_PAIR_ENTRIES} that are practical (e.g. 45 x "
                         "45 images); use Flatten instead of GlobalAvgPool/AvgPool (the diagonal form), or smaller "
                         "inputs")
    if n * P * P > MAX_SELF_ENTRIES:
        raise ValueError(f"x: the full spatial covariance needed before {where} has N P^2 = {n * P * P} same-input "
                         f"entries (N = {n}, spatial shape {shape}), above the {MAX_SELF_ENTRIES} (1 GiB) that are "
                         "practical; use fewer inputs, Flatten instead of GlobalAvgPool/AvgPool, or smaller inputs")


def _compile(layers, S, form, shape, fan_in, ctx, needs_after, path, n, gaussian=False):
    """Row pass over ``layers`` on the same-input states ``S`` (one block per input). Returns the nodes and the
    output ``(S, form, shape, fan_in)``. ``needs_after[k]`` says whether layer k's output must stay full."""
    nodes = []
    for k, lay in enumerate(layers):
        node = _SNode(lay, f"{path}{'.' if path else ''}{k}")
        if isinstance(lay, Nonlinearity) and not gaussian:
            raise ValueError(f"layer {node.path} (Nonlinearity) acts on a signal that is not Gaussian (the inputs, or "
                             "the output of another Nonlinearity): the kernel rule needs a Conv or Dense layer "
                             "before it (as in neural-tangents)")
        node.form_in, node.shape_in, node.fan_in = form, shape, fan_in
        if isinstance(lay, _SPATIAL_TYPES[:4]) and form == "flat":
            raise ValueError(f"layer {node.path} ({type(lay).__name__}) needs spatial axes, but its input has none "
                             "(after Flatten or GlobalAvgPool)")
        if isinstance(lay, Dense):
            S = lay.weight_var * S + lay.bias_var
            fan_in = lay.width_ratio * ctx.width if ctx.width is not None else np.nan
        elif isinstance(lay, Conv):
            if len(lay.filter_shape) != len(shape):
                raise ValueError(f"layer {node.path}: a {len(lay.filter_shape)}-D Conv on {len(shape)}-D inputs "
                                 f"(spatial shape {shape}); filter_shape must have {len(shape)} entries")
            A, shape = _conv_avg(S, shape, form, lay, 1)
            S = lay.weight_var * A + lay.bias_var
            fan_in = lay.width_ratio * ctx.width if ctx.width is not None else np.nan
        elif isinstance(lay, Nonlinearity):
            q = _diag_of(S, form)
            node.plan = _pair_plan(lay.activation, q, ctx.want_dot, ctx.rtol)
            E2 = np.asarray(node.plan.E2, dtype=np.float64)
            D2 = None if node.plan.D2 is None else np.asarray(node.plan.D2, dtype=np.float64)
            if form == "full":
                P = S.shape[1]
                out = np.empty_like(S)
                dots = np.empty_like(S) if ctx.want_dot else None
                r = np.arange(P)
                for i in range(S.shape[0]):
                    rows = i * P + r
                    qh, qd = node.plan.pairs(np.ascontiguousarray(S[i]), rows, rows)
                    np.fill_diagonal(qh, E2[rows])
                    out[i] = qh
                    if dots is not None:
                        np.fill_diagonal(qd, D2[rows])
                        dots[i] = qd
                S, node.self_dot = out, dots
            else:
                S = E2.reshape(S.shape)
                node.self_dot = None if D2 is None else D2.reshape(S.shape)
        elif isinstance(lay, LayerNorm):
            v = _diag_of(S, form).reshape((S.shape[0], -1))       # (N, P) or (N, 1)
            if lay.axis == "all":
                v = np.broadcast_to(v.mean(axis=1, keepdims=True), v.shape)
            node.ln_scale = 1.0 / np.sqrt(lay.eps + v)            # (N, P)
            if not np.all(np.isfinite(node.ln_scale)):
                raise ValueError(f"LayerNorm at {node.path}: a variance is 0 and eps = 0 (division by zero); give "
                                 "eps > 0")
            S = _ln_apply(S, form, node.ln_scale, node.ln_scale)
        elif isinstance(lay, AvgPool):
            if len(lay.window_shape) != len(shape):
                raise ValueError(f"layer {node.path}: a {len(lay.window_shape)}-D AvgPool on spatial shape {shape}")
            S, shape = _avg_pool(S, shape, lay, 1)
        elif isinstance(lay, GlobalAvgPool):
            S, form, shape = _reduce(S, form, "gap", 1), "flat", ()
        elif isinstance(lay, Flatten):
            P = int(np.prod(shape)) if shape else 1
            S, form, shape = _reduce(S, form, "flatten", 1), "flat", ()
            fan_in = fan_in * P
        elif isinstance(lay, Residual):
            sub_needs, _ = _need_full(lay.block.layers, needs_after[k])
            sub_needs = sub_needs[1:] + [needs_after[k]]
            node.sub, Sb, fb, shb, _ = _compile(lay.block.layers, S, form, shape, fan_in, ctx, sub_needs,
                                                node.path + ".block", n, gaussian)
            if fb == "diag" and form == "full":
                S, form = _to_diag(S, 1), "diag"
            if fb != form or shb != shape:
                raise ValueError(f"Residual block at {node.path} changes the spatial shape from {shape} to {shb}: "
                                 "the block must keep it (SAME or CIRCULAR padding, stride 1)")
            S = S + (lay.alpha * lay.alpha) * Sb
        elif isinstance(lay, Dropout):
            S = _dropout_same(S, form, lay.keep, 1)
        else:
            raise TypeError(f"layer {node.path}: {type(lay).__name__} is not supported in a spatial chain")
        if form == "full" and not needs_after[k]:
            S, form = _to_diag(S, 1), "diag"
        if form == "full":
            _check_full(shape, n, f"layer {node.path}")
        if not np.all(np.isfinite(S)):
            raise ValueError(f"x: the variance overflowed at layer {node.path} ({type(lay).__name__}); reduce the "
                             "inputs' norms, weight_var or depth")
        node.form_out, node.shape_out, node.self_out = form, shape, S
        # Gaussian after a Conv / Dense; kept by the linear maps, by LayerNorm (a per-input rescaling at infinite
        # width) and by a Residual whose skip is Gaussian (its block ends in a Conv or Dense)
        if isinstance(lay, (Dense, Conv)):
            gaussian = True
        elif isinstance(lay, Nonlinearity) or (isinstance(lay, Dropout) and lay.keep < 1.0):
            gaussian = False
        nodes.append(node)
    return nodes, S, form, shape, fan_in


def _ln_apply(A, form, si, sj):
    """Divide by ``sqrt(v_i v_j)``: ``si`` (a, P) for the first input axis, ``sj`` (b, P) for the second; a
    same-input state (one batch axis) passes the same array twice."""
    if form == "flat":
        if A.ndim == 1:
            return A * si[:, 0] * sj[:, 0]
        return A * si[:, 0][:, None] * sj[:, 0][None, :]
    if A.ndim == (2 if form == "diag" else 3):     # same-input state (N, P) / (N, P, P)
        if form == "diag":
            return A * si * sj
        return A * si[:, :, None] * sj[:, None, :]
    if form == "diag":
        return A * si[:, None, :] * sj[None, :, :]
    return A * si[:, None, :, None] * sj[None, :, None, :]


# ------------------------------------------------------------------------------------------------ the tile pass
def _pairs_tile(plan, Q, form, ri, rj, P):
    """``(qhat, qdot)`` on a tile of pairs of inputs (a, b[, P[, P]]) from the engine's pair plan."""
    if form == "flat":
        return plan.pairs(np.ascontiguousarray(Q), ri, rj)
    a, b = len(ri), len(rj)
    r = np.arange(P)
    if form == "full":
        Q2 = np.ascontiguousarray(Q.transpose(0, 2, 1, 3).reshape(a * P, b * P))
        rows_i = (ri[:, None] * P + r).reshape(-1)
        rows_j = (rj[:, None] * P + r).reshape(-1)
        qh, qd = plan.pairs(Q2, rows_i, rows_j)
        back = lambda M: M.reshape(a, P, b, P).transpose(0, 2, 1, 3)   # noqa: E731
        return back(qh), (None if qd is None else back(qd))
    return plan.pairs_diag(Q, ri, rj, P)


def _tile_forward(nodes, Q, T, ri, rj, diag, ctx, record=None):
    """Forward a tile of input pairs through ``nodes``; on a diagonal tile the same-input entries are reset from the
    row pass after every layer (exact single-input values). ``record`` (a dict) receives per node
    ``(Q_out, qdot, direct)``: the output covariance, a Nonlinearity's ``E[phi'(u) phi'(v)]`` tile and a Conv /
    Dense layer's own NTK term (its parameters' gradient Gram) in the layer's form."""
    for node in nodes:
        lay = node.layer
        form, shape = node.form_in, node.shape_in
        P = int(np.prod(shape)) if shape else 1
        direct = qd = None
        if isinstance(lay, Dense):
            Qo = lay.weight_var * Q + lay.bias_var
            if T is not None:
                direct = node.fan_in * Q + 1.0 if ctx.standard else Qo
                T = lay.weight_var * T + direct
            Q = Qo
        elif isinstance(lay, Conv):
            A, _ = _conv_avg(Q, shape, form, lay, 2)
            Qo = lay.weight_var * A + lay.bias_var
            if T is not None:
                Ta, _ = _conv_avg(T, shape, form, lay, 2)
                direct = node.fan_in * lay.filter_size * A + 1.0 if ctx.standard else Qo
                if ctx.standard and lay.orthogonal:
                    direct = node.fan_in * A + 1.0     # only the centre tap is a parameter of the infinite limit
                T = lay.weight_var * Ta + direct
            Q = Qo
        elif isinstance(lay, Nonlinearity):
            qh, qd = _pairs_tile(node.plan, Q, form, ri, rj, P)
            if qd is not None and diag:
                _set_self(qd, node.self_dot[ri], form)
            if T is not None:
                T = qd * T
            Q = qh
        elif isinstance(lay, LayerNorm):
            si, sj = node.ln_scale[ri], node.ln_scale[rj]
            Q = _ln_apply(Q, form, si, sj)
            if T is not None:
                T = _ln_apply(T, form, si, sj)
        elif isinstance(lay, AvgPool):
            Q, _ = _avg_pool(Q, shape, lay, 2)
            if T is not None:
                T, _ = _avg_pool(T, shape, lay, 2)
        elif isinstance(lay, Dropout):
            # cross entries unchanged; the same-input ones of Q come from the row pass (set below), of Theta here
            Q = Q.copy() if diag else Q
            if T is not None and diag:
                T = _dropout_same(T, form, lay.keep, 2)
        elif isinstance(lay, (GlobalAvgPool, Flatten)):
            kind = "gap" if isinstance(lay, GlobalAvgPool) else "flatten"
            Q = _reduce(Q, form, kind, 2)
            if T is not None:
                T = _reduce(T, form, kind, 2)
        elif isinstance(lay, Residual):
            Qb, Tb = _tile_forward(node.sub, Q, T, ri, rj, diag, ctx, record)
            if Qb.ndim < Q.ndim:       # the block's output went to the diagonal form
                Q = _to_diag(Q, 2)
                T = None if T is None else _to_diag(T, 2)
            a2 = lay.alpha * lay.alpha
            Q = Q + a2 * Qb
            if T is not None:
                T = T + a2 * Tb
        if node.form_out == "diag" and Q.ndim == 4:
            Q = _to_diag(Q, 2)
            if T is not None:
                T = _to_diag(T, 2)
        if diag:
            _set_self(Q, node.self_out[ri], node.form_out)
        if T is not None and np.ndim(T) == 0:
            T = np.broadcast_to(T, Q.shape).copy()
        if record is not None:
            record[id(node)] = (Q, qd, direct)
    return Q, T


def _own_form(node):
    """The form a layer's own rule produces (before the sweep takes the spatial diagonal for later layers)."""
    if isinstance(node.layer, (GlobalAvgPool, Flatten)):
        return "flat"
    if isinstance(node.layer, Residual):
        return node.sub[-1].form_out if node.sub else node.form_in
    return node.form_in


def _tile_backward(nodes, R, fwd, ri, rj, diag, back, terms):
    r"""Back-propagate q-tilde on a tile of input pairs through ``nodes`` (from the output of the last node).

    ``R`` is ``qtilde(x, p; x', p') = sum_i delta_i(x, p) delta_i(x', p')`` at the output (``delta = df/ds`` for one
    output unit ``f``, summed over channels ``i``), in the output node's form. Each layer applies the transpose of its
    forward map (gradient independence: the weights of the backward pass are independent of the forward ones,
    Schoenholz et al. 2017, Xiao et al. 2018): Conv ``qtilde_in = w conv^T(qtilde_out)``, Dense ``w qtilde``,
    Nonlinearity ``qdot * qtilde``, LayerNorm the same scaling as forward, AvgPool / GlobalAvgPool / Flatten their
    transposes, Residual ``qtilde + alpha^2 g^T(qtilde)``. ``back[id(node)]`` receives q-tilde at each node's output,
    ``terms[id(node)]`` each Conv / Dense layer's NTK term ``sum_{p, p'} qtilde_out direct`` (a, b)."""
    for node in reversed(nodes):
        back[id(node)] = R
        lay = node.layer
        form, shape = node.form_in, node.shape_in
        P = int(np.prod(shape)) if shape else 1
        _, qd, direct = fwd[id(node)]
        own = _own_form(node)
        if node.form_out == "diag" and own == "full":
            R = _from_diag(R, 2)
        if direct is not None:
            t = R * direct
            terms[id(node)] = t.sum(axis=tuple(range(2, t.ndim))) if t.ndim > 2 else t
        if isinstance(lay, Dense):
            R = lay.weight_var * R
        elif isinstance(lay, Conv):
            R = lay.weight_var * _conv_avg_adjoint(R, shape, form, lay, 2)
        elif isinstance(lay, Nonlinearity):
            R = qd * R
        elif isinstance(lay, LayerNorm):
            R = _ln_apply(R, form, node.ln_scale[ri], node.ln_scale[rj])
        elif isinstance(lay, AvgPool):
            R = _avg_pool_adjoint(R, shape, lay, 2)
        elif isinstance(lay, Dropout):
            R = _dropout_same(R, form, lay.keep, 2) if diag else R
        elif isinstance(lay, (GlobalAvgPool, Flatten)):
            R = _reduce_adjoint(R, form, "gap" if isinstance(lay, GlobalAvgPool) else "flatten", P, 2)
        elif isinstance(lay, Residual):
            Rb = _tile_backward(node.sub, (lay.alpha * lay.alpha) * R, fwd, ri, rj, diag, back, terms)
            if own == "diag" and form == "full":
                R = _from_diag(R, 2)
            R = R + Rb
    return R


def _set_self(A, blocks, form=None):
    """Write the same-input blocks ``blocks`` (a, ...) on the diagonal of a square tile ``A`` (a, a, ...)."""
    for k in range(A.shape[0]):
        A[k, k] = blocks[k]


# ------------------------------------------------------------------------------------------------ public sweep
def _check_images(name, x):
    X = check_finite_array(name, x)
    if X.ndim not in (3, 4) or min(X.shape) < 1:
        raise ValueError(f"{name} must be shaped (N, L, C) or (N, H, W, C) like neural-tangents' inputs, with every "
                         f"size >= 1, got shape {X.shape}")
    return np.ascontiguousarray(X, dtype=np.float64)


def _prepare(chain, x, x2, parameterization, width, compute_ntk, rtol):
    from .trace import as_chain

    ch = as_chain(chain)
    if not isinstance(parameterization, str) or parameterization not in ("ntk", "standard"):
        raise ValueError(f"parameterization must be 'ntk' or 'standard', got {parameterization!r}")
    if width is not None:
        width = float(check_positive("width", width))
    elif parameterization == "standard":
        raise ValueError("width must be given (> 0) for parameterization='standard'")
    rtol = float(check_positive("rtol", rtol))
    X = _check_images("x1", x)
    if x2 is not None:
        X2 = _check_images("x2", x2)
        if X2.shape[1:] != X.shape[1:]:
            raise ValueError(f"x2 must have the spatial shape and channels of x1, {X.shape[1:]}, got {X2.shape[1:]}")
        X = np.concatenate([X, X2])
    return ch, X, parameterization, width, bool(compute_ntk), rtol


def _run_rows(ch, X, ctx):
    n, shape, C = X.shape[0], X.shape[1:-1], X.shape[-1]
    P = int(np.prod(shape))
    needs, need_in = _need_full(ch.layers, True)
    needs_after = needs[1:] + [True]
    if need_in:
        _check_full(shape, n, "the first layer")
        F = X.reshape(n, P, C)
        S = np.einsum("npc,nqc->npq", F, F) / C
        form = "full"
    else:
        S = np.einsum("npc,npc->np", X.reshape(n, P, C), X.reshape(n, P, C)) / C
        form = "diag"
    nodes, S, form, shape_out, _ = _compile(ch.layers, S, form, shape, float(C), ctx, needs_after, "", n)
    return nodes, form, shape_out, need_in


def _input_tile(F, ri, rj, need_in):
    """``x.x'/C`` per pair of positions (full) or per position (diag) on a tile; ``F`` (N, P, C)."""
    C = F.shape[-1]
    if need_in:
        return np.einsum("apc,bqc->abpq", F[ri], F[rj], optimize=True) / C
    return np.einsum("apc,bpc->abp", F[ri], F[rj], optimize=True) / C


def spatial_kernels(network: NetworkLike, x1: ArrayLike, x2: Optional[ArrayLike] = None, *,
                    parameterization: str = "ntk", width: Optional[float] = None, compute_ntk: bool = True,
                    rtol: float = 1e-14, tile: Optional[int] = None) -> "KernelResult":
    r"""NNGP and NTK of a chain with convolutional / pooling / layer-norm layers on images (rules in the module
    docstring; Novak et al. 2019, Arora et al. 2019, Xiao et al. 2018).

    Parameters
    ----------
    network : Serial
        A chain of :mod:`meanfield.layers` and :mod:`meanfield.spatial` layers.
    x1 : array_like (N, H, W, C) or (N, L, C)
    x2 : array_like, optional
        Second set (same spatial shape and channels); the result is then the ``(N1, N2)`` cross kernel.
    parameterization : {"ntk", "standard"}
    width : float, optional
        M (channels of a hidden layer = width_ratio M), required for ``"standard"``.
    compute_ntk : bool
    rtol : float
        Accuracy of the Mehler expansions (as :func:`meanfield.kernels`).
    tile : int, optional
        Inputs per tile side (default: sized so that a tile holds about 2^20 entries).

    Returns
    -------
    KernelResult
        ``nngp``/``ntk`` of shape ``(N1, N2)`` if the chain ends without spatial axes, else ``(N1, N2, *S, *S)``
        (``S`` the output spatial shape) when the chain ends in full form.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.layers import Nonlinearity, Dense, serial
    >>> net = serial(Conv(1.0, 0.0, (3,)), Nonlinearity("erf"), GlobalAvgPool(), Dense(1.0))
    >>> res = spatial_kernels(net, np.ones((2, 5, 1)))
    >>> bool(res.nngp[0, 1] == res.nngp[1, 0])
    True
    """
    from .kernels import KernelResult

    ch, X, parameterization, width, compute_ntk, rtol = _prepare(network, x1, x2, parameterization, width,
                                                                 compute_ntk, rtol)
    n1 = np.shape(x1)[0]
    n = X.shape[0]
    ctx = _Ctx(compute_ntk, rtol, width, parameterization == "standard")
    nodes, form_out, shape_out, need_in = _run_rows(ch, X, ctx)
    shape = X.shape[1:-1]
    P = int(np.prod(shape))
    C = X.shape[-1]
    per_pair = P * P if need_in else P
    for node in _walk(nodes):
        if node.form_out == "full":
            per_pair = max(per_pair, int(np.prod(node.shape_out)) ** 2)
        elif node.form_out == "diag":
            per_pair = max(per_pair, int(np.prod(node.shape_out)))
    if tile is None:
        tile = max(1, int(math.sqrt(_TILE_ENTRIES / per_pair)))
    else:
        tile = check_int("tile", tile, 1)
    # output: (n, n) without spatial axes; (n, n, *S) diagonal form; (n, n, *S, *S) full form (stored (n, n, P, P))
    P_last = int(np.prod(shape_out)) if form_out != "flat" else 1
    tail = {"flat": (), "diag": (P_last,), "full": (P_last, P_last)}[form_out]
    out_tail = {"flat": (), "diag": tuple(shape_out), "full": tuple(shape_out) * 2}[form_out]
    from ._io import check_alloc

    check_alloc("x1, x2", 8.0 * n * n * int(np.prod(tail)) * (1 + compute_ntk), f"the ({n}, {n}, ...) kernel arrays")
    K = np.empty((n, n) + tail)
    Th = np.empty_like(K) if compute_ntk else None
    F = X.reshape(n, P, C)
    for i0 in range(0, n, tile):
        ri = np.arange(i0, min(i0 + tile, n))
        for j0 in range(i0, n, tile):
            rj = np.arange(j0, min(j0 + tile, n))
            diag = i0 == j0
            Q0 = _input_tile(F, ri, rj, need_in)
            Q, T = _tile_forward(nodes, Q0, (np.zeros_like(Q0) if compute_ntk else None), ri, rj, diag, ctx)
            K[ri[0]:ri[-1] + 1, rj[0]:rj[-1] + 1] = Q
            if compute_ntk:
                Th[ri[0]:ri[-1] + 1, rj[0]:rj[-1] + 1] = T
    _symmetrize(K, form_out)
    if compute_ntk:
        _symmetrize(Th, form_out)
    if not np.all(np.isfinite(K)) or (compute_ntk and not np.all(np.isfinite(Th))):
        raise ValueError("x1, x2: kernel entries are not finite (overflow); reduce the inputs' norms, weight_var or "
                         "depth")
    K = K.reshape((n, n) + out_tail)
    Th = None if Th is None else Th.reshape((n, n) + out_tail)
    if x2 is not None:
        K = np.ascontiguousarray(K[:n1, n1:])
        Th = None if Th is None else np.ascontiguousarray(Th[:n1, n1:])
    plans = [nd.plan for nd in _walk(nodes) if isinstance(nd.layer, Nonlinearity)]
    excess = max((p.max_c_excess for p in plans), default=0.0)
    if excess > 1e-8:
        import warnings

        warnings.warn(f"correlations exceeded 1 by up to {excess:.2e} and were clipped (inconsistent covariances)",
                      RuntimeWarning, stacklevel=2)
    return KernelResult(nngp=K, ntk=Th, parameterization=parameterization, width=width,
                        n_terms=tuple(p.n_terms for p in plans), truncation_bound=tuple(p.bound for p in plans),
                        truncation_bound_dot=tuple(p.bound_dot for p in plans),
                        n_fallback=int(sum(p.n_fallback for p in plans)), routes=tuple(p.label for p in plans))


def _symmetrize(A, form):
    """Upper block triangle -> lower: ``A[j, i] = A[i, j]`` with the position axes swapped in the full form."""
    n = A.shape[0]
    iu, ju = np.triu_indices(n, 1)
    if form == "full":
        A[ju, iu] = np.swapaxes(A[iu, ju], -1, -2)
        d = np.arange(n)
        A[d, d] = 0.5 * (A[d, d] + np.swapaxes(A[d, d], -1, -2))
    else:
        A[ju, iu] = A[iu, ju]


def _walk(nodes):
    for node in nodes:
        yield node
        if node.sub is not None:
            yield from _walk(node.sub)


@dataclass(frozen=True)
class SpatialVariances:
    """Per layer (chain order, residual blocks after their Residual): ``path``, layer name, and the same-input
    variance ``q(x, p) = Q(x, p; x, p)`` of the signal leaving it, shape ``(N, *spatial)`` or ``(N,)``."""

    paths: tuple
    layers: tuple
    q: tuple

    def to_dict(self) -> dict:
        return {"paths": list(self.paths), "layers": list(self.layers), "q": [v.tolist() for v in self.q]}


def spatial_variances(network: NetworkLike, x: ArrayLike, rtol: float = 1e-14) -> SpatialVariances:
    """The single-input pass only: every layer's output variance per input and position (O(N P) or O(N P^2) work).

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.layers import Nonlinearity, serial
    >>> v = spatial_variances(serial(Conv(2.0, 0.0, (3,), padding="CIRCULAR"), Nonlinearity("relu")),
    ...                       np.ones((1, 4, 2)))
    >>> v.q[-1].tolist()      # 2 * 1 then relu halves it
    [[1.0, 1.0, 1.0, 1.0]]
    """
    ch, X, _, _, _, rtol = _prepare(network, x, None, "ntk", None, False, rtol)
    ctx = _Ctx(False, rtol, None, False)
    nodes, _, _, _ = _run_rows(ch, X, ctx)
    paths, names, qs = [], [], []
    n = X.shape[0]
    for node in _walk(nodes):
        S = node.self_out
        q = _diag_of(S, node.form_out).reshape((n,) + tuple(node.shape_out))
        paths.append(node.path)
        names.append(type(node.layer).__name__)
        qs.append(q)
    return SpatialVariances(tuple(paths), tuple(names), tuple(qs))


def _tail(form, shape):
    P = int(np.prod(shape)) if shape else 1
    return {"flat": (), "diag": (P,), "full": (P, P)}[form]


def _unfold_pairs(A, form, shape):
    """``(N, N, P[, P])`` -> ``(N, N, *S[, *S])``."""
    return A.reshape(A.shape[:2] + {"flat": (), "diag": tuple(shape), "full": tuple(shape) * 2}[form])


@dataclass(frozen=True)
class SpatialTrace:
    r"""Per layer of a convolutional chain on ``N`` inputs (see :func:`spatial_trace`); every tuple in chain order,
    the layers of a residual block right after their Residual.

    Attributes
    ----------
    paths, layers : tuple of str
        Position (e.g. ``"2.block.1"``) and class name of each layer.
    forms : tuple of str
        ``"full"`` (all position pairs), ``"diag"`` (only ``p = p'``: the other entries of ``cov`` are not carried and
        those of ``qtilde`` are 0) or ``"flat"`` (no spatial axes) at each layer's output.
    cov : tuple of ndarray
        The covariance ``Q(x, p; x', p')`` of the signal leaving each layer: ``(N, N, *S, *S)`` (full),
        ``(N, N, *S)`` (diag: ``p = p'``) or ``(N, N)``.
    qtilde : tuple of ndarray
        ``qtilde(x, p; x', p') = sum_i delta_i(x, p) delta_i(x', p')`` at each layer's output (``delta = df/ds`` for
        one output unit ``f``, summed over the channels, so width independent: Karakida's convention), same shapes.
    ntk_terms : tuple
        Per Conv / Dense layer the ``(N, N)`` Gram matrix of the gradients with respect to its own parameters,
        ``sum_{p, p'} qtilde_out(x, p; x', p') D(x, p; x', p')`` (``D = Q_out`` in the NTK parameterization,
        ``C_in |F| conv-average(Q_in) + 1`` in the standard one); None for the other layers. They sum to ``ntk``.
    nngp, ntk : ndarray (N, N)
    parameterization : str
    width : float or None
    """

    paths: tuple
    layers: tuple
    forms: tuple
    cov: tuple
    qtilde: tuple
    ntk_terms: tuple
    nngp: np.ndarray
    ntk: np.ndarray
    parameterization: str
    width: Optional[float]

    __repr__ = short_repr

    def qtilde_same_input(self) -> tuple:
        """Per layer ``qtilde(x, p; x, p)``, shape ``(N, *S)`` or ``(N,)``: the channel-summed squared gradient of
        the output with respect to the signal at each position (Schoenholz's per-unit ``E[delta^2]`` times the
        channels)."""
        out = []
        for f, q in zip(self.forms, self.qtilde):
            n = q.shape[0]
            d = q[np.arange(n), np.arange(n)]
            if f == "full":
                k = (d.ndim - 1) // 2
                S = d.shape[1:1 + k]
                P = int(np.prod(S))
                d = np.diagonal(d.reshape(n, P, P), axis1=1, axis2=2).reshape((n,) + S)
            out.append(d)
        return tuple(out)

    def plot(self, ax: Optional["Axes"] = None) -> "Axes":
        """The gradient's squared norm per layer, ``sum_p qtilde(x, p; x, p)`` averaged over the inputs, against
        the layer (log scale; Conv and Dense layers marked)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4.5, 3.2))
        g = np.array([np.mean(d.reshape(d.shape[0], -1).sum(axis=1)) for d in self.qtilde_same_input()])
        k = np.arange(len(g))
        ax.semilogy(k, g, "-", color="0.6")
        w = np.array([name in ("Conv", "Dense") for name in self.layers])
        ax.semilogy(k[w], g[w], "o", label="Conv / Dense output")
        ax.set_xlabel("layer (chain order)")
        ax.set_ylabel(r"$\sum_p \tilde q(x, p; x, p)$")
        ax.legend()
        return ax

    def to_dict(self) -> dict:
        return {"paths": list(self.paths), "layers": list(self.layers), "forms": list(self.forms),
                "cov": [c.tolist() for c in self.cov], "qtilde": [q.tolist() for q in self.qtilde],
                "ntk_terms": [None if t is None else t.tolist() for t in self.ntk_terms],
                "nngp": self.nngp.tolist(), "ntk": self.ntk.tolist(), "parameterization": self.parameterization,
                "width": self.width}


def _trace_arrays(network, x, parameterization, width, rtol, tile, store):
    """The tile loop of :func:`spatial_trace`: ``(nodes in walk order, nngp, ntk, cov, qtilde, ntk terms)`` (dicts
    by node id); ``store=False`` keeps only the NNGP, the NTK and the terms (``O(N^2)`` memory per layer)."""
    from ._io import check_alloc

    _check_images("x", x)
    ch, X, parameterization, width, _, rtol = _prepare(network, x, None, parameterization, width, True, rtol)
    n = X.shape[0]
    ctx = _Ctx(True, rtol, width, parameterization == "standard")
    nodes, form_out, _, need_in = _run_rows(ch, X, ctx)
    if form_out != "flat":
        raise ValueError("network must end without spatial axes (GlobalAvgPool or Flatten, then e.g. a Dense readout): "
                         "q-tilde is back-propagated from one output unit")
    every = list(_walk(nodes))
    shape, C = X.shape[1:-1], X.shape[-1]
    P = int(np.prod(shape))
    tails = [_tail(nd.form_out, nd.shape_out) for nd in every]
    entries = sum(int(np.prod(t)) for t in tails)
    check_alloc("x", 8.0 * n * n * (2 * entries * store + len(every) + 2),
                f"the per-layer ({n}, {n}, ...) trace arrays")
    per_pair = max([P * P if need_in else P] + [int(np.prod(t)) * (4 if nd.form_in == "full" else 1)
                                                for t, nd in zip(tails, every)])
    tile = max(1, int(math.sqrt(_TILE_ENTRIES / per_pair))) if tile is None else check_int("tile", tile, 1)
    cov = {id(nd): np.empty((n, n) + t) for nd, t in zip(every, tails)} if store else {}
    qt = {id(nd): np.empty((n, n) + t) for nd, t in zip(every, tails)} if store else {}
    terms = {id(nd): np.empty((n, n)) for nd in every if isinstance(nd.layer, (Conv, Dense))}
    K, Th = np.empty((n, n)), np.empty((n, n))
    F = X.reshape(n, P, C)
    for i0 in range(0, n, tile):
        ri = np.arange(i0, min(i0 + tile, n))
        for j0 in range(i0, n, tile):
            rj = np.arange(j0, min(j0 + tile, n))
            diag = i0 == j0
            Q0 = _input_tile(F, ri, rj, need_in)
            fwd, back, tt = {}, {}, {}
            Q, T = _tile_forward(nodes, Q0, np.zeros_like(Q0), ri, rj, diag, ctx, fwd)
            _tile_backward(nodes, np.ones((len(ri), len(rj))), fwd, ri, rj, diag, back, tt)
            sl = (slice(ri[0], ri[-1] + 1), slice(rj[0], rj[-1] + 1))
            K[sl], Th[sl] = Q, T
            for nd in every:
                if store:
                    cov[id(nd)][sl] = fwd[id(nd)][0]
                    qt[id(nd)][sl] = back[id(nd)]
                if id(nd) in terms:
                    terms[id(nd)][sl] = tt[id(nd)]
    for A in (K, Th, *terms.values()):
        _symmetrize(A, "flat")
    for nd in every if store else ():
        _symmetrize(cov[id(nd)], nd.form_out)
        _symmetrize(qt[id(nd)], nd.form_out)
    if not (np.all(np.isfinite(K)) and np.all(np.isfinite(Th))
            and all(np.all(np.isfinite(q)) for q in qt.values())):
        raise ValueError("x: trace entries are not finite (overflow); reduce the inputs' norms, weight_var or depth")
    return every, K, Th, cov, qt, terms


def spatial_trace(network: NetworkLike, x: ArrayLike, *, parameterization: str = "ntk",
                  width: Optional[float] = None, rtol: float = 1e-14, tile: Optional[int] = None) -> SpatialTrace:
    r"""Every layer's covariance and back-propagated q-tilde of a convolutional chain on a data set, and the NTK
    split into the layers' terms.

    Forward as :func:`spatial_kernels`. Backward from ``qtilde = 1`` at the (single-unit) output, each layer applies
    the transpose of its linear map on the position pairs, under the gradient-independence assumption (Schoenholz et
    al. 2017; Xiao et al. 2018, whose ``E[delta^2]`` per unit is ``qtilde / C``; Karakida et al. 2019's sums over
    units):

    * Conv: ``qtilde_in(q, q') = (w / |F|) sum_{d in F} sum_{s p + d = q, s p' + d = q'} qtilde_out(p, p')``
      (``sum_j W_{d,ij} W_{d',i'j} -> (w / |F|) delta_dd' delta_ii'``; padded positions receive nothing, CIRCULAR
      wraps; delta-orthogonal: the centre tap only, weight ``w``);
    * Dense ``w qtilde``; Nonlinearity ``E[phi'(u) phi'(v)] qtilde`` entry by entry; LayerNorm divides by
      ``sqrt(v(x, p) v(x', p'))`` like the forward (its projections add O(1/C));
    * AvgPool / GlobalAvgPool ``A^T qtilde A`` (GAP: ``qtilde / P^2`` on every pair), Flatten ``qtilde / P`` on the
      spatial diagonal (off-diagonal 0: distinct positions meet distinct readout weights);
    * Residual ``qtilde + alpha^2 g^T(qtilde)``; Dropout divides the same-input, same-position entries by ``keep``.

    The layers' NTK terms ``sum_{p, p'} qtilde_out D`` add up to the forward-mode NTK (reverse mode against forward
    mode: the tests check the identity to rounding).

    Parameters
    ----------
    network : Serial
        A chain ending without spatial axes (after GlobalAvgPool or Flatten, typically then a Dense readout).
    x : array_like (N, H, W, C) or (N, L, C)
    parameterization : {"ntk", "standard"}
    width : float, optional
        M, required for ``"standard"``.
    rtol : float
    tile : int, optional
        Inputs per tile side.

    Returns
    -------
    SpatialTrace

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.layers import Dense, Nonlinearity, serial
    >>> net = serial(Conv(2.0, 0.0, (3,), padding="CIRCULAR"), Nonlinearity("relu"), Flatten(), Dense(1.0))
    >>> tr = spatial_trace(net, np.ones((1, 4, 2)))
    >>> tr.qtilde_same_input()[0].tolist()     # 1 / P per position, times relu's E[phi'^2] = 1/2
    [[0.125, 0.125, 0.125, 0.125]]
    >>> bool(abs(sum(t for t in tr.ntk_terms if t is not None) - tr.ntk).max() < 1e-15)
    True
    """
    every, K, Th, cov, qt, terms = _trace_arrays(network, x, parameterization, width, rtol, tile, True)
    return SpatialTrace(
        paths=tuple(nd.path for nd in every), layers=tuple(type(nd.layer).__name__ for nd in every),
        forms=tuple(nd.form_out for nd in every),
        cov=tuple(_unfold_pairs(cov[id(nd)], nd.form_out, nd.shape_out) for nd in every),
        qtilde=tuple(_unfold_pairs(qt[id(nd)], nd.form_out, nd.shape_out) for nd in every),
        ntk_terms=tuple(terms.get(id(nd)) for nd in every), nngp=K, ntk=Th, parameterization=parameterization,
        width=width)


def _parameter_counts(layers, shape, c_in, width, n_outputs, top=True):
    """Per Conv / Dense layer in walk order, its number of parameters at width ``width`` (hidden layers
    ``max(1, round(width_ratio width))`` channels, the top chain's last Dense ``n_outputs``; a delta-orthogonal Conv's
    parameters are its centre tap), as the torch twins of :mod:`meanfield.validation.spatial_networks` build them.
    Returns ``(counts, c_out, shape_out)``."""
    counts = []
    for k, lay in enumerate(layers):
        if isinstance(lay, (Conv, Dense)):
            readout = top and k == len(layers) - 1 and isinstance(lay, Dense)
            c_out = n_outputs if readout else max(1, int(round(lay.width_ratio * width)))
            taps = lay.filter_size if isinstance(lay, Conv) and not lay.orthogonal else 1
            counts.append(c_out * c_in * taps + c_out)
            if isinstance(lay, Conv):
                shape = _out_shape(shape, lay.filter_shape, lay.strides, lay.padding, "Conv")
            c_in = c_out
        elif isinstance(lay, AvgPool):
            shape = _out_shape(shape, lay.window_shape, lay.strides, lay.padding, "AvgPool")
        elif isinstance(lay, GlobalAvgPool):
            shape = ()
        elif isinstance(lay, Flatten):
            c_in, shape = c_in * int(np.prod(shape)), ()
        elif isinstance(lay, Residual):
            sub, _, _ = _parameter_counts(lay.block.layers, shape, c_in, width, n_outputs, False)
            counts.extend(sub)
    return counts, c_in, shape
