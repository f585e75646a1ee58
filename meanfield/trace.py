r"""One sweep of a layer chain over a data set: the per-layer trace of q, q-hat, q-dot, q-tilde and the NTK
(docs/mathematics.md section 8).

The sweep runs in three passes, each made of the layer rules of :mod:`meanfield.layers` and nothing else:

1. *rows*: the single-input variances ``q(x, x)`` through the chain (``O(N)`` work per layer); a Nonlinearity builds
   its per-row pair plan here (Hermite coefficients, closed-form constants);
2. *tiles*: the pair covariances ``Q(x, x')`` and the NTK ``Theta(x, x')`` tile by tile (a pair's recursion needs
   only the per-row data of step 1); on a diagonal tile every layer's diagonal is set from step 1, so the single-input
   values are exact and the matrix exactly symmetric;
3. *backward*: Karakida's ``qtilde`` from ``qtilde = 1`` at the output (one output unit) back to the input.

:func:`meanfield.kernels`, :func:`meanfield.forward`, :func:`meanfield.backward` and the Fisher statistics are views
of this sweep. :func:`trace` returns every layer's matrices for a (small) data set.

Examples
--------
>>> import numpy as np
>>> from meanfield.layers import Dense, Nonlinearity, serial
>>> tr = trace(serial(Dense(2.0), Nonlinearity("relu"), Dense(2.0)), np.eye(2))
>>> tr.nngp.tolist()
[[1.0, 0.3183098861837907], [0.3183098861837907, 1.0]]
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from typing import Dict, Tuple

    from ._typing import ArrayLike, NetworkLike
    import pandas
    import xarray

import copy

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ._checks import check_finite_array, check_positive
from ._interop import Table, short_repr, to_dataframe, to_xarray
from .layers import Dense, Dropout, Layer, Nonlinearity, Residual, Serial

__all__ = ["Trace", "TraceStep", "trace", "as_chain"]


def as_chain(network) -> Serial:
    """The layer chain of ``network``: a :class:`~meanfield.Network` (via ``to_layers()``), a Serial, or one layer."""
    from .network import Network

    if isinstance(network, Network):
        return network.to_layers()
    if isinstance(network, Serial):
        return network
    if isinstance(network, Layer):
        return Serial((network,))
    raise TypeError(f"network must be a meanfield.Network or a layer chain (meanfield.layers.serial), "
                    f"got {type(network).__name__}")


# --------------------------------------------------------------------------------------------------- the passes
class _Ctx:
    __slots__ = ("want_dot", "rtol", "width", "inputs")

    def __init__(self, want_dot, rtol, width, inputs="gram"):
        self.want_dot, self.rtol, self.width = want_dot, rtol, width
        self.inputs = inputs    # the argument(s) that carry the inputs, named in errors


class _Node:
    """One layer of a compiled chain: its rows in and out, fan-in, pair plan (Nonlinearity), sub-chain (Residual)."""

    __slots__ = ("layer", "path", "q_in", "q_out", "fan_in", "fan_in_ratio", "ctx", "plan", "sub", "want_dot", "rtol",
                 "param", "dq_in", "dq_out", "slopes")

    def __init__(self, layer, path, q_in, ctx, fan_in_ratio, fan_in):
        self.layer, self.path, self.q_in, self.ctx = layer, path, q_in, ctx
        self.fan_in_ratio, self.fan_in = fan_in_ratio, fan_in
        self.want_dot, self.rtol = ctx.want_dot, ctx.rtol
        self.plan = self.sub = self.q_out = None
        self.param = self.dq_in = self.dq_out = self.slopes = None


def _compile(layers, q, ctx, ratio, fan_in, path=""):
    """Row pass: returns ``(nodes, q_out, out_ratio, out_fan_in)``; ``fan_in`` is the absolute width entering."""
    nodes = []
    for k, lay in enumerate(layers):
        node = _Node(lay, f"{path}{'.' if path else ''}{k}", q, ctx, ratio, fan_in)
        q = node.layer._row(node, q)
        if not np.all(np.isfinite(q)):
            raise ValueError(f"{ctx.inputs}: the variance q overflowed at layer {node.path} ({type(lay).__name__}): "
                             "the inputs' squared norms times weight_var, plus bias_var, are too large for this depth")
        node.q_out = q
        if isinstance(lay, Dense):
            ratio = lay.width_ratio
            fan_in = ratio * ctx.width if ctx.width is not None else np.nan
        nodes.append(node)
    return nodes, q, ratio, fan_in


def _tile_forward(nodes, Q, T, ri, rj, diag, standard, record=None):
    """Tile pass through ``nodes``: returns ``(Q, T, aux)`` (``aux`` per node: qdot tiles, sub-lists for Residual)."""
    auxes = []
    for node in nodes:
        Qo, To, aux = node.layer._tile(node, Q, T, ri, rj, diag, standard, record)
        if diag:
            np.fill_diagonal(Qo, node.q_out[ri])
        if record is not None:
            record[id(node)] = (Q, Qo, aux)
        auxes.append(aux)
        Q, T = Qo, To
    return Q, T, auxes


def _tile_backward(nodes, Qt, auxes, diag, record=None):
    """Backward pass of ``qtilde`` through ``nodes`` (from the output of the last to the input of the first)."""
    for node, aux in zip(reversed(nodes), reversed(auxes)):
        if record is not None:
            record[id(node)] = Qt
        Qt = node.layer._back(node, Qt, aux, diag, record)
    return Qt


def _number_parameters(nodes, start=0):
    """Give each Dense node (in chain order, residual blocks included) its parameter index; returns the count."""
    for node in nodes:
        if isinstance(node.layer, Dense):
            node.param = start
            start += 1
        if node.sub is not None:
            start = _number_parameters(node.sub, start)
    return start


def _row_tangents(nodes, q, dq):
    """Derivative of the row pass: ``dq`` (P, N) at the chain's input -> at its output (stored on the nodes)."""
    for node in nodes:
        node.dq_in = dq
        dq = node.layer._row_tangent(node, node.q_in, dq)
        node.dq_out = dq
    return dq


def _tile_tangent(nodes, Q, T, dQ, dT, ri, rj, diag, standard):
    """Tile pass with its forward-mode derivative: returns ``(Q, T, dQ, dT, aux)`` at the output of ``nodes``."""
    auxes = []
    for node in nodes:
        Qo, To, aux, dQo, dTo = node.layer._tile_tangent(node, Q, T, dQ, dT, ri, rj, diag, standard)
        if diag:
            np.fill_diagonal(Qo, node.q_out[ri])
            idx = np.arange(len(ri))
            dQo[:, idx, idx] = node.dq_out[:, ri]
        auxes.append(aux)
        Q, T, dQ, dT = Qo, To, dQo, dTo
    return Q, T, dQ, dT, auxes

def _take_nodes(nodes, rows):
    """The row-pass result ``nodes`` restricted to the inputs ``rows`` (copies; per-row data only for those rows).

    The tile pass on the copy with local row indices gives bit for bit the tiles of the full row pass.
    """
    out = []
    for node in nodes:
        new = copy.copy(node)
        new.q_in, new.q_out = node.q_in[rows], node.q_out[rows]
        if node.plan is not None:
            new.plan = node.plan.take(rows)
        if node.sub is not None:
            new.sub = _take_nodes(node.sub, rows)
        out.append(new)
    return out


def _stack_nodes(a, b):
    """The rows of ``a`` followed by those of ``b`` (both from :func:`_take_nodes` of one row pass)."""
    out = []
    for na, nb in zip(a, b):
        new = copy.copy(na)
        new.q_in, new.q_out = np.concatenate([na.q_in, nb.q_in]), np.concatenate([na.q_out, nb.q_out])
        if na.plan is not None:
            new.plan = na.plan.stack(nb.plan)
        if na.sub is not None:
            new.sub = _stack_nodes(na.sub, nb.sub)
        out.append(new)
    return out


def _walk(nodes):
    """All nodes in chain order, those of residual blocks right after their Residual."""
    for node in nodes:
        yield node
        if node.sub is not None:
            yield from _walk(node.sub)


def _has_dropout(chain) -> bool:
    for lay in chain:
        if isinstance(lay, Dropout) and lay.keep < 1.0:
            return True
        if isinstance(lay, Residual) and _has_dropout(lay.block):
            return True
    return False


def _mirror(A):
    iu = np.triu_indices(A.shape[0], 1)
    A.T[iu] = A[iu]
    return A


# ---------------------------------------------------------------------------------------------------- the trace
@dataclass(frozen=True)
class TraceStep:
    """One layer of a :class:`Trace`: ``cov_in``/``cov_out`` (N x N covariances of the signal entering and leaving
    it), ``qdot`` (Nonlinearity: ``E[phi'(u) phi'(v)]``, else None), ``qtilde`` (back-propagated overlap at its output,
    None without the backward pass), ``fan_in_ratio`` (width ratio of the signal entering), ``path`` (position,
    e.g. ``"2.block.1"``)."""

    layer: Layer
    path: str
    cov_in: np.ndarray
    cov_out: np.ndarray
    qdot: Optional[np.ndarray]
    qtilde: Optional[np.ndarray]
    fan_in_ratio: float

    __repr__ = short_repr


@dataclass(frozen=True)
class Trace:
    r"""Per-layer trace of a chain on ``N`` inputs (see :func:`trace`).

    Attributes
    ----------
    chain : Serial
    steps : tuple of TraceStep
        Every layer in chain order (the layers of a residual block right after their Residual).
    nngp : ndarray (N, N)
        Covariance of the chain's output.
    ntk : ndarray (N, N) or None
    parameterization : str
    width : float or None

    The views ``dense``, ``q``, ``qhat``, ``qtilde``, ``qdot`` select, for each Dense layer in order, its output
    covariance ``q^l``, input covariance ``qhat^{l-1}`` and output overlap ``qtilde^l``, and for each Nonlinearity its
    ``qdot``.
    """

    chain: Serial
    steps: tuple
    nngp: np.ndarray
    ntk: Optional[np.ndarray]
    parameterization: str
    width: Optional[float]

    __repr__ = short_repr

    def _table(self) -> Table:
        n = self.nngp.shape[0]
        dims: Tuple[str, ...] = ("layer", "input_1", "input_2")
        data: Dict[str, Tuple[Tuple[str, ...], np.ndarray]] = {"q": (dims, np.stack(self.q)),
                                                               "qhat": (dims, np.stack(self.qhat))}
        if all(t is not None for t in self.qtilde):
            data["qtilde"] = (dims, np.stack(self.qtilde))
        coords = {"layer": np.arange(1, len(self.dense) + 1), "input_1": np.arange(n), "input_2": np.arange(n)}
        if self.qdot:
            coords["nonlinearity"] = np.arange(1, len(self.qdot) + 1)
            data["qdot"] = (("nonlinearity", "input_1", "input_2"), np.stack(self.qdot))
        data["nngp"] = (("input_1", "input_2"), self.nngp)
        if self.ntk is not None:
            data["ntk"] = (("input_1", "input_2"), self.ntk)
        return Table(coords=coords, data=data, attrs={"parameterization": self.parameterization, "width": self.width},
                     rows=dims)

    def to_xarray(self) -> "xarray.Dataset":
        """Per Dense layer ``l = 1..L`` (dim ``layer``) the N x N matrices ``q`` (its output covariance), ``qhat`` (its
        input covariance) and ``qtilde`` (back-propagated overlap; with the backward pass) on ``(input_1, input_2)``;
        ``qdot`` per Nonlinearity (dim ``nonlinearity``); the chain's ``nngp`` and ``ntk``. Needs xarray."""
        return to_xarray(self._table())

    def to_dataframe(self) -> "pandas.DataFrame":
        """One row per (Dense layer ``l``, ``input_1``, ``input_2``): ``q``, ``qhat``, ``qtilde``. Needs pandas."""
        return to_dataframe(self._table())

    @property
    def dense(self) -> tuple:
        return tuple(s for s in self.steps if isinstance(s.layer, Dense))

    @property
    def q(self) -> tuple:
        return tuple(s.cov_out for s in self.dense)

    @property
    def qhat(self) -> tuple:
        return tuple(s.cov_in for s in self.dense)

    @property
    def qtilde(self) -> tuple:
        return tuple(s.qtilde for s in self.dense)

    @property
    def qdot(self) -> tuple:
        return tuple(s.qdot for s in self.steps if isinstance(s.layer, Nonlinearity))

    @property
    def fan_in_ratios(self) -> np.ndarray:
        """Width ratio entering each Dense layer (``alpha_{l-1}``; the first is the chain's ``input_ratio``)."""
        return np.array([s.fan_in_ratio for s in self.dense])


def _check_gram(gram):
    G = check_finite_array("gram", gram)
    if G.ndim != 2 or G.shape[0] != G.shape[1] or G.shape[0] < 1:
        raise ValueError(f"gram must be a square (N, N) matrix of inputs' x.x'/M_0, got shape {G.shape}")
    if np.any(np.diagonal(G) < 0) or not np.allclose(G, G.T, rtol=1e-12, atol=0.0):
        raise ValueError("gram must be symmetric with a non-negative diagonal (x.x'/M_0 of the inputs)")
    return np.ascontiguousarray(G)


def trace(network: NetworkLike, x: Optional[ArrayLike] = None, *, gram: Optional[ArrayLike] = None,
          parameterization: str = "ntk", width: Optional[float] = None,
          compute_ntk: bool = True, backward: bool = True, rtol: float = 1e-14, _inputs: Optional[str] = None) -> Trace:
    r"""Run ``network`` on a data set and return every layer's covariance, q-dot, q-tilde and the NTK.

    Forward, per layer (see :mod:`meanfield.layers` for the rules): ``Q`` from ``Q^0 = x.x'/M_0``, ``Theta`` from
    ``Theta^0 = 0``; backward ``qtilde = 1`` at the output (one output unit) down to the input. The NTK satisfies
    ``Theta = sum_{Dense} qtilde^l (w_l qhat^{l-1} + b_l)`` (NTK parameterization) or
    ``sum_{Dense} qtilde^l (M_{l-1} qhat^{l-1} + 1)`` (standard).

    Parameters
    ----------
    network : Network, Serial or Layer
    x : array_like (N, M_0), optional
        Inputs; or give ``gram``.
    gram : array_like (N, N), optional
        ``x.x'/M_0`` of the inputs (symmetric, non-negative diagonal).
    parameterization : {"ntk", "standard"}
    width : float, optional
        M, required for ``"standard"`` (fan-in widths ``alpha M``; the first layer's fan-in is ``M_0``, the columns
        of ``x``, or ``round(input_ratio M)`` with ``gram``).
    compute_ntk, backward : bool
        Skip the NTK / the backward pass.
    rtol : float
        Accuracy of the Mehler expansions (as in :func:`meanfield.kernels`).

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield.layers import Dense, Nonlinearity, Residual, serial
    >>> net = serial(Dense(1.0), Residual(serial(Nonlinearity("relu"), Dense(2.0)), alpha=1.0), Dense(1.0))
    >>> tr = trace(net, gram=[[1.0]])
    >>> [float(q[0, 0]) for q in tr.q]     # q^1 = 1, block adds 2 * 1/2, readout
    [1.0, 1.0, 2.0]
    >>> [float(t[0, 0]) for t in tr.qtilde]
    [2.0, 1.0, 1.0]
    """
    chain = as_chain(network)
    from .spatial import is_spatial

    if is_spatial(chain):
        raise ValueError("network has convolutional / pooling / layer-norm layers: use meanfield.kernels (NNGP, NTK) "
                         "or meanfield.spatial.spatial_trace (per-layer q, q-tilde) on images; trace covers vector "
                         "chains")
    if not isinstance(parameterization, str) or parameterization not in ("ntk", "standard"):
        raise ValueError(f"parameterization must be 'ntk' or 'standard', got {parameterization!r}")
    if width is not None:
        width = float(check_positive("width", width))
    elif parameterization == "standard":
        raise ValueError("width must be given (> 0) for parameterization='standard'")
    rtol = float(check_positive("rtol", rtol))
    if (x is None) == (gram is None):
        raise ValueError("give exactly one of x (inputs) and gram (their x.x'/M_0)")
    if x is not None:
        X = check_finite_array("x", x)
        if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
            raise ValueError(f"x must be a 2-D array (n_points, input_dim), got shape {X.shape}")
        G = X @ X.T / X.shape[1]
        np.fill_diagonal(G, np.einsum("ij,ij->i", X, X) / X.shape[1])
        dim = float(X.shape[1])
    else:
        G = _check_gram(gram)
        dim = float(max(1, round(chain.input_ratio * width))) if width is not None else np.nan
    compute_ntk, backward = bool(compute_ntk), bool(backward)
    ctx = _Ctx(compute_ntk or backward, rtol, width, _inputs or ("x" if x is not None else "gram"))
    nodes, _, _, _ = _compile(chain.layers, np.diagonal(G).copy(), ctx, chain.input_ratio, dim)
    n = G.shape[0]
    r = np.arange(n)
    standard = parameterization == "standard"
    fwd = {}
    Q, T, auxes = _tile_forward(nodes, G.copy(), (0.0 if compute_ntk else None), r, r, True, standard, fwd)
    back = {}
    if backward:
        _tile_backward(nodes, np.ones((n, n)), auxes, True, back)
    steps = []
    for node in _walk(nodes):
        cin, cout, aux = fwd[id(node)]
        qd = aux if isinstance(node.layer, Nonlinearity) else None
        qt = back.get(id(node))
        steps.append(TraceStep(node.layer, node.path, _mirror(np.array(cin, dtype=np.float64)),
                               _mirror(np.array(cout, dtype=np.float64)),
                               None if qd is None else _mirror(np.array(qd)),
                               None if qt is None else _mirror(np.array(qt)), float(node.fan_in_ratio)))
    ntk = None
    if compute_ntk:
        ntk = _mirror(np.array(np.broadcast_to(T, (n, n)), dtype=np.float64))
    return Trace(chain=chain, steps=tuple(steps), nngp=_mirror(np.array(Q)), ntk=ntk,
                 parameterization=parameterization, width=width)
