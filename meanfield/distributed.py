r"""meanfield on a dask cluster: kernels as dask arrays, kernel regression on them, and sweeps split across workers
(docs/distributed.md).

Nothing here computes anything new: every number comes from the in-memory code, run on the workers of whatever dask
deployment the client points at (a ``LocalCluster``, a scheduler address, a batch-queue or cloud cluster).

* :func:`distributed_kernels`: the NNGP / NTK matrices as dask arrays. The row pass of the layer sweep
  (:mod:`meanfield.trace`: per input its variances, per layer its Hermite tables, ``O(N)`` work) runs once on the
  client; each row chunk's share of it is scattered to the cluster once. Each ``chunks x chunks`` block is then the
  tile pass of :func:`meanfield.kernels` (the same function, ``kernels._tile_pass``) on its two row chunks, so the
  matrices equal the in-memory ones bit for bit (``chunks`` must be a multiple of ``tile_size``: the blocks are
  made of the in-memory kernel's tiles). A symmetric kernel computes the blocks on and above the diagonal; those
  below are their transposes. A block task fetches its two row chunks when it runs (they are not its dask
  dependencies), so the blocks are root tasks that the scheduler queues, and a worker's memory is bounded by the
  chunk size (see "Memory per worker" in :func:`distributed_kernels`).
* :func:`kernel_solve`, :func:`distributed_nngp_regression`, :func:`distributed_ntk_regression`: the solve
  ``(K + s I) a = Y`` of kernel regression (NNGP posterior mean, Lee et al. 2018; NTK gradient flow at ``t = inf``
  with a ridge ``s``, Jacot et al. 2018) by block Jacobi-preconditioned conjugate gradients (each step one
  distributed product ``K p``) or by dask's blocked Cholesky factorisation, with the relative residual
  ``||(K + s I) a - Y|| / ||Y||`` recomputed at the end and reported.
* :func:`distributed_map` and the sweeps built on it (:func:`distributed_phase_diagram`,
  :func:`distributed_critical_line`, :func:`distributed_depth_scale_curve`): independent tasks on the cluster, each
  point's result sent back to the client as soon as it is finished (so a worker that dies loses only the tasks it
  was running, which dask runs again elsewhere), warnings raised on the workers re-raised on the client once each.
  The sweeps evaluate every grid point independently of the others, so the split results equal the single-process
  ones bit for bit.

dask is optional: ``pip install "meanfield-theory[dask]"`` (dask and distributed); it is imported only when one of these
functions is called.

Examples
--------
>>> import numpy as np
>>> from meanfield import Network, kernels
>>> from meanfield.distributed import distributed_kernels
>>> x = np.random.default_rng(0).standard_normal((40, 3))
>>> net = Network("tanh", depth=3, weight_var=1.5, bias_var=0.1)
>>> dk = distributed_kernels(net, x, chunks=16, tile_size=8)      # dask arrays (any scheduler; no cluster here)
>>> dk.nngp.chunks
((16, 16, 8), (16, 16, 8))
>>> bool(np.array_equal(dk.nngp.compute(), kernels(net, x).nngp))
True
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from typing import Iterable, Sequence, Union

    import dask.array
    from distributed import Client

    from ._typing import ActivationLike, ArrayLike, NetworkLike
    from .kernels import KernelResult
    from .phase import CriticalLine, DepthScaleCurve, PhaseDiagram

import math
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from ._checks import check_int, check_nonneg, check_positive
from .errors import ConvergenceWarning

__all__ = [
    "DistributedKernels",
    "distributed_kernels",
    "KernelSolve",
    "kernel_solve",
    "DistributedPrediction",
    "distributed_nngp_regression",
    "distributed_ntk_regression",
    "distributed_map",
    "distributed_phase_diagram",
    "distributed_critical_line",
    "distributed_depth_scale_curve",
]

_MISSING = ("meanfield.distributed needs dask and distributed, an optional extra: pip install 'meanfield-theory[dask]' "
            "(or pip install dask distributed)")


def _dask():
    try:
        import dask
        import dask.array as da
    except ImportError as exc:
        raise ImportError(_MISSING) from exc
    return dask, da


def _client(client, required: bool):
    """``client``, else the default dask.distributed client (the last one created), else None (or an error)."""
    try:
        from distributed import Client, get_client
    except ImportError as exc:
        if required or client is not None:
            raise ImportError(_MISSING) from exc
        return None
    if client is not None:
        if not isinstance(client, Client):
            raise TypeError(f"client must be a dask.distributed.Client, got {type(client).__name__}")
        return client
    try:
        return get_client()
    except ValueError:
        if required:
            raise ValueError("client: no dask.distributed client found; pass client=Client(...) (e.g. "
                             "Client(LocalCluster()) or Client('tcp://scheduler:8786')) or create one first") from None
        return None


# --------------------------------------------------------------------------------------------------------------------
# kernels as dask arrays
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistributedKernels:
    """NNGP and NTK of a network on a data set as dask arrays (see :func:`distributed_kernels`).

    Attributes
    ----------
    nngp : dask.array.Array, shape (n1, n2)
    ntk : dask.array.Array or None
        Not computed with ``compute_ntk=False``.
    parameterization : str
    width : float or None
    chunks : int
        Rows and columns per block.
    tile_size : int
    n_terms, routes : tuple
        Per hidden layer, as in :class:`~meanfield.kernels.KernelResult` (from the row pass, known before any block
        is computed).
    budget : dask.delayed.Delayed
        Per hidden layer ``(max_c_excess, n_fallback, bound, bound_dot)`` over all blocks (computing it computes the
        blocks; :meth:`compute` gets it together with the matrices).
    """

    nngp: Any
    ntk: Any
    parameterization: str
    width: Optional[float]
    chunks: int
    tile_size: int
    n_terms: tuple
    routes: tuple
    budget: Any = field(repr=False)
    _nodes: Any = field(repr=False, compare=False, default=None)

    def compute(self, **compute_kwargs: Any) -> KernelResult:
        """Compute everything into memory: the :class:`~meanfield.kernels.KernelResult` that
        :func:`meanfield.kernels` gives for the same arguments, with the same checks and warnings."""
        dask, _ = _dask()
        from .kernels import _plans, _result
        from .trace import _take_nodes

        K, T, budget = dask.compute(self.nngp, self.ntk, self.budget, **compute_kwargs)
        nodes = _take_nodes(self._nodes, slice(None))   # copies: the budget is written into their plans
        for plan, (excess, n_fallback, bound, bound_dot) in zip(_plans(nodes), budget):
            plan.max_c_excess, plan.n_fallback, plan.bound, plan.bound_dot = excess, n_fallback, bound, bound_dot
        return _result(nodes, K, T, self.parameterization, self.width)

    def to_dict(self) -> dict:
        """The description (shapes, chunks, per-layer terms and routes); the matrices stay on the cluster."""
        return {"shape": list(self.nngp.shape), "chunks": self.chunks, "tile_size": self.tile_size,
                "parameterization": self.parameterization, "width": self.width, "compute_ntk": self.ntk is not None,
                "n_terms": [list(t) for t in self.n_terms], "routes": list(self.routes)}


class _RowChunk:
    """One row chunk's share of the row pass: its inputs ``x`` and its rows' per-layer data ``nodes``
    (``trace._take_nodes``: variances, Hermite tables of the Mehler route, about ``sum_l (K_l + Kd_l)`` floats per input
    and layer, often more than ``x`` itself).

    ``nbytes`` (and ``sys.getsizeof``, which ``dask.sizeof`` uses for objects it does not know) counts every array in
    it, so that dask's worker memory accounting (spilling, pausing, the dashboard) sees what the chunk holds.
    """

    def __init__(self, nodes, x: np.ndarray):
        from .trace import _walk

        self.nodes, self.x = nodes, x
        size = x.nbytes
        for node in _walk(nodes):
            for name in node.__slots__:
                size += _array_bytes(getattr(node, name, None))
            if node.plan is not None:
                size += sum(_array_bytes(v) for v in vars(node.plan).values())
        self.nbytes = int(size)

    def __sizeof__(self) -> int:
        return object.__sizeof__(self) + self.nbytes


def _array_bytes(value) -> int:
    return value.nbytes if isinstance(value, np.ndarray) else 0


class _ChunkRef:
    """A scattered row chunk, referred to by a block task without being one of its dask dependencies.

    On the client it holds the chunk's future (so the chunk lives on the cluster as long as the arrays built on it);
    it travels to a worker as the key alone, and :func:`_kernel_block` fetches the chunk for the time of the task
    (from the worker's own memory, else from the worker holding it). Were the chunks dependencies, every worker would
    keep a replica of every chunk its blocks read (dask's active memory manager keeps replicas of data that queued
    tasks still wait for), i.e. the row data of all ``N`` inputs on every worker; and the blocks, having
    dependencies on many keys, would not be root tasks, so dask would assign all of them at once instead of queuing
    them (below).
    """

    def __init__(self, future):
        self.key = future.key
        self.future = future

    def __reduce__(self):
        return _ChunkRef._from_key, (self.key,)

    @staticmethod
    def _from_key(key):
        ref = _ChunkRef.__new__(_ChunkRef)
        ref.key, ref.future = key, None
        return ref

    def __dask_tokenize__(self):
        return ("meanfield-row-chunk", self.key)

    def fetch(self) -> _RowChunk:
        from distributed import Future, get_client

        client = get_client()
        try:
            return client.gather(Future(self.key, client, state="memory"))
        except Exception as exc:   # CancelledError: the scheduler forgot the key
            raise RuntimeError(f"distributed_kernels: the row chunk {self.key!r} is lost (the worker holding it died; "
                               "scattered data cannot be recomputed): call distributed_kernels again") from exc


def _kernel_block(piece_i, piece_j, standard: bool, compute_ntk: bool, tile: int):
    """One block: the tile pass of :func:`meanfield.kernels` on row chunk ``piece_i`` against ``piece_j`` (None: the
    diagonal block of a symmetric kernel); each a :class:`_RowChunk` or a :class:`_ChunkRef` to fetch. Returns
    ``(K, T, budget per hidden layer)``."""
    from .kernels import _check_finite, _plans, _tile_pass
    from .trace import _stack_nodes, _take_nodes

    if isinstance(piece_i, _ChunkRef):
        piece_i = piece_i.fetch()
    if isinstance(piece_j, _ChunkRef):
        piece_j = piece_j.fetch()
    x_i = piece_i.x
    n1 = x_i.shape[0]
    if piece_j is None:
        nodes = _take_nodes(piece_i.nodes, slice(None))   # a private copy: pairs() counts its budget in the plans
        X, n2, off2, sym = x_i, n1, 0, True
    else:
        nodes = _stack_nodes(piece_i.nodes, piece_j.nodes)
        X, n2, off2, sym = np.vstack([x_i, piece_j.x]), piece_j.x.shape[0], n1, False
    del piece_i, piece_j   # fetched chunks: only their stacked copy is needed from here on
    K, T = _tile_pass(nodes, X, n1, n2, off2, sym, tile, standard, compute_ntk)
    _check_finite(K, T)
    return K, T, [plan.budget() for plan in _plans(nodes)]


def _merge_budgets(budgets):
    """Per hidden layer: largest correlation excess, total fallback pairs, largest truncation bounds."""
    if not budgets:
        return []
    out = []
    for per_layer in zip(*budgets):
        out.append((max(b[0] for b in per_layer), int(sum(b[1] for b in per_layer)),
                    max(b[2] for b in per_layer), max(b[3] for b in per_layer)))
    return out


def distributed_kernels(network: NetworkLike, x1: ArrayLike, x2: Optional[ArrayLike] = None, *, chunks: int = 4096,
                        client: Optional[Client] = None, parameterization: str = "ntk",
                        width: Optional[float] = None, compute_ntk: bool = True, rtol: float = 1e-14,
                        tile_size: int = 512) -> DistributedKernels:
    r"""NNGP and NTK of ``network`` between the rows of ``x1`` and ``x2`` as dask arrays, block by block on a cluster.

    Same mathematics, options and numbers as :func:`meanfield.kernels` (``K = q^L``, ``Theta^{l+1} = q^{l+1} +
    sigma_w^2 qdot^l Theta^l``; Lee et al. 2018, Jacot et al. 2018): the row pass (per input variances and Hermite
    tables) runs here once, each row chunk's part of it is scattered to the cluster, and every block is the in-memory
    tile pass on its two row chunks; ``.compute()`` of a matrix equals the in-memory matrix bit for bit.

    Parameters
    ----------
    network, x1, x2, parameterization, width, compute_ntk, rtol, tile_size
        As in :func:`meanfield.kernels`.
    chunks : int
        Rows (and columns) per block, a multiple of ``tile_size`` (default 4096: 128 MiB per float64 block). Sets
        the memory per worker (below).
    client : dask.distributed.Client, optional
        The cluster to scatter the rows' data to (default: the current client, if any). Without a client the arrays
        work with any dask scheduler, the rows' data then travel inside the task graph.

    Returns
    -------
    DistributedKernels
        ``.nngp``, ``.ntk`` (dask arrays, lazy), ``.compute()`` (a :class:`~meanfield.kernels.KernelResult`).
        Both matrices come out of the same block tasks: compute or persist them together
        (``dask.compute(dk.nngp, dk.ntk)``, ``client.persist([dk.nngp, dk.ntk])``) or the blocks are computed twice.
        Non-finite entries (overflow) raise the ValueError of :func:`meanfield.kernels` when a block is computed.

    Notes
    -----
    Memory per worker. Write ``c`` for ``chunks``, ``b = 8 c^2`` bytes for one matrix block, ``m = 1 + compute_ntk``
    matrices, ``r`` for the bytes of row data per input (its ``M_0`` inputs and, per Nonlinearity layer, its
    variances and, on the Mehler route, its ``K_l + K'_l`` Hermite coefficients: 10 KiB for tanh, depth 3,
    ``M_0 = 64``), ``W`` workers of ``t`` threads. Then the peak resident memory of a worker is at most::

        footprint + (N / W) r + t (4 c r + (m + 1) b) + h m b

    * footprint: the worker process with numpy, numba, dask and meanfield loaded (about 250 MiB);
    * ``(N / W) r``: its share of the row chunks, scattered once, round robin, and never replicated (a block task
      fetches its two chunks for its own duration); the one term that grows with ``N``, linearly, as the inputs do;
    * ``t (4 c r + (m + 1) b)``: each running block task holds its two row chunks and their stacked copy, its ``m``
      blocks and one temporary of a consumer (``K ** 2`` of a reduction, say);
    * ``h m b``: finished blocks held until their consumers ran. dask queues the block tasks (root tasks: they have
      no dependencies) and gives a worker a new one only while it has fewer than
      ``ceil(worker-saturation * t)`` tasks in progress, consumers included
      (``distributed.scheduler.worker-saturation``, default 1.1); with consumers that use a block at once
      (reductions, ``dask.array.store`` into zarr, HDF5 or a memmap, products with vectors),
      ``h <= ceil(worker-saturation * t) + 1``.

    None of it depends on ``N`` but the owned rows. To keep it so on your cluster: leave the scheduler's
    ``distributed.scheduler.worker-saturation`` finite (``inf`` turns queuing off; 1.0 gives the fewest blocks in
    flight), give the workers few threads, choose ``chunks`` so the bound fits the workers' ``memory_limit``, and
    consume the blocks as they come; ``persist()`` or ``compute()`` of a whole matrix holds all of it, by request.
    The row chunks report their true size to dask (``sys.getsizeof``), so its memory manager spills them when a
    worker is short. Without a distributed client the chunks are nodes of the graph and the scheduler's own rules
    apply.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network, ntk_kernel
    >>> x = np.random.default_rng(1).standard_normal((30, 4))
    >>> net = Network("relu", depth=2, weight_var=2.0, bias_var=0.1)
    >>> dk = distributed_kernels(net, x[:20], x[20:], chunks=8, tile_size=8)
    >>> dk.ntk.shape, bool(np.array_equal(dk.ntk.compute(), ntk_kernel(net, x[:20], x[20:])))
    ((20, 10), True)
    """
    dask, da = _dask()
    from .kernels import _check_options, _plans, _rows
    from .trace import _take_nodes

    chain, x1, x2, parameterization, width, rtol, tile, compute_ntk = _check_options(
        network, x1, x2, parameterization, width, compute_ntk, rtol, tile_size)
    chunk = check_int("chunks", chunks, tile)
    if chunk % tile:
        raise ValueError(f"chunks must be a multiple of tile_size={tile} (each block is made of the in-memory "
                         f"kernel's tiles, so that the results are the same bit for bit), got {chunk}")
    sym = x2 is None
    n1 = x1.shape[0]
    n2 = n1 if sym else x2.shape[0]
    X = x1 if sym else np.vstack([x1, x2])
    nodes, _ = _rows(chain, X, compute_ntk, rtol, width)
    standard = parameterization == "standard"

    def pieces(offset, n):
        return [_RowChunk(_take_nodes(nodes, np.arange(offset + s, offset + min(s + chunk, n))),
                          X[offset + s: offset + min(s + chunk, n)]) for s in range(0, n, chunk)]

    rows1 = pieces(0, n1)
    rows2 = rows1 if sym else pieces(n1, n2)
    cl = _client(client, required=False)
    if cl is not None:   # the rows' data go to the cluster once; block tasks fetch their two chunks when they run
        rows1 = [_ChunkRef(f) for f in cl.scatter(rows1, hash=False)]
        rows2 = rows1 if sym else [_ChunkRef(f) for f in cl.scatter(rows2, hash=False)]
    else:                # any other scheduler: the chunks are nodes of the graph, dependencies of their blocks
        rows1 = [dask.delayed(p, traverse=False) for p in rows1]
        rows2 = rows1 if sym else [dask.delayed(p, traverse=False) for p in rows2]
    block = dask.delayed(_kernel_block, pure=True, nout=3)
    tasks = {}
    for bi in range(len(rows1)):
        for bj in range(len(rows2)):
            if sym and bj < bi:
                continue
            tasks[bi, bj] = block(rows1[bi], None if sym and bi == bj else rows2[bj], standard, compute_ntk, tile)

    def size(n, b):
        return min(chunk, n - b * chunk)

    def assemble(which):
        grid = []
        for bi in range(len(rows1)):
            row = []
            for bj in range(len(rows2)):
                if sym and bj < bi:   # below the diagonal: the transpose of the block above it
                    row.append(da.from_delayed(tasks[bj, bi][which], (size(n2, bj), size(n1, bi)), np.float64).T)
                else:
                    row.append(da.from_delayed(tasks[bi, bj][which], (size(n1, bi), size(n2, bj)), np.float64))
            grid.append(row)
        return da.block(grid)

    budget = dask.delayed(_merge_budgets, pure=True)([t[2] for t in tasks.values()])
    return DistributedKernels(
        nngp=assemble(0), ntk=assemble(1) if compute_ntk else None, parameterization=parameterization, width=width,
        chunks=chunk, tile_size=tile, n_terms=tuple(p.n_terms for p in _plans(nodes)),
        routes=tuple(p.label for p in _plans(nodes)), budget=budget, _nodes=nodes)


# --------------------------------------------------------------------------------------------------------------------
# kernel regression
# --------------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KernelSolve:
    """Solution of ``(K + ridge I) coef = y`` (see :func:`kernel_solve`).

    Attributes
    ----------
    coef : ndarray, shape (n,) or (n, C)
    residual : float
        ``max_c ||(K + ridge I) coef_c - y_c|| / ||y_c||``, recomputed from ``coef`` with one more product.
    n_iter : int
        Conjugate-gradient steps (0 for Cholesky).
    method : str
        ``"cg"`` or ``"cholesky"``.
    ridge : float
    """

    coef: np.ndarray
    residual: float
    n_iter: int
    method: str
    ridge: float

    def to_dict(self) -> dict:
        return {"coef": self.coef.tolist(), "residual": self.residual, "n_iter": self.n_iter, "method": self.method,
                "ridge": self.ridge}


def _as_dask_square(da, kernel):
    if not isinstance(kernel, da.Array):
        kernel = np.asarray(kernel, dtype=np.float64)
        kernel = da.from_array(kernel, chunks=min(4096, max(1, kernel.shape[0])) if kernel.ndim == 2 else -1)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] < 1:
        raise ValueError(f"kernel must be a square (n, n) matrix, got shape {kernel.shape}")
    return kernel


class _Product:
    """``V -> (K + s I) V`` for ndarrays ``V`` with the kernel persisted on the cluster.

    On a dask.distributed client each block of ``K`` is multiplied where it lives (one task per block, sent with
    its slice of ``V``; the ``chunks x n_outputs`` products are summed here): a conjugate-gradient step costs one
    round trip and no new graph, and a worker holds only its own blocks. Without a client, dask's own ``K @ V``.
    """

    def __init__(self, K, s):
        self.s = s
        self.client = _client(None, required=False)
        self.K = K.persist()
        self.rows = None
        if self.client is not None:
            blocks = self.K.to_delayed()
            from distributed import futures_of

            by_key = {f.key: f for f in futures_of(self.K)}
            self.rows = [[by_key[d.key] for d in row] for row in blocks]
            self.offsets = np.concatenate([[0], np.cumsum(self.K.chunks[1])])

    def __call__(self, V):
        if self.rows is None:
            return (self.K @ V).compute() + self.s * V
        pieces = [V[self.offsets[j]:self.offsets[j + 1]] for j in range(len(self.offsets) - 1)]
        futures = [[self.client.submit(np.matmul, blk, pieces[j], pure=False) for j, blk in enumerate(row)]
                   for row in self.rows]
        parts = self.client.gather(futures)
        out = np.concatenate([sum(row[1:], row[0]) for row in parts], axis=0)
        return out + self.s * V


def _cholesky_solve(da, K, s, Y2):
    """``(K + s I)^{-1} Y2`` by dask's blocked Cholesky factorisation. dask needs equal square chunks: ``K`` is
    padded to a multiple of its chunk with an identity block (``[[K, 0], [0, I]]``, whose factor is ``[[L, 0], [0, I]]``
    and whose solution with zero-padded ``Y2`` is the wanted one, zero-padded)."""
    n = K.shape[0]
    c = max(K.chunks[0])
    if K.chunks[0] != K.chunks[1] or any(ch != c for ch in K.chunks[0][:-1]):
        K = K.rechunk(c)
    pad = (-n) % c
    A = K + s * da.eye(n, chunks=c) if s else K
    if pad:
        A = da.block([[A, da.zeros((n, pad), chunks=c)], [da.zeros((pad, n), chunks=c), da.eye(pad, chunks=c)]])
    A = A.rechunk(c)
    L = da.linalg.cholesky(A, lower=True)
    Yd = da.from_array(np.vstack([Y2, np.zeros((pad, Y2.shape[1]))]), chunks=(c, Y2.shape[1]))
    z = da.linalg.solve_triangular(L, Yd, lower=True)
    coef = da.linalg.solve_triangular(L.T, z, lower=False).compute()[:n]
    if not np.all(np.isfinite(coef)):
        raise np.linalg.LinAlgError("kernel + ridge * I is not positive definite; increase ridge")
    return coef


def kernel_solve(kernel: Union[dask.array.Array, ArrayLike], y: ArrayLike, ridge: float = 0.0, *, method: str = "cg", rtol: float = 1e-10,
                 max_iter: Optional[int] = None) -> KernelSolve:
    r"""Solve ``(K + ridge I) coef = y`` for a symmetric positive (semi-)definite kernel held as a dask array.

    ``method="cg"``: conjugate gradients with the Jacobi preconditioner ``diag(K) + ridge`` (Hestenes & Stiefel
    1952), one independent iteration per column of ``y``; each step is one distributed product ``K p`` (the
    kernel is persisted on the cluster first), so a worker holds only its blocks. Stops when every column's relative
    residual ``||r_c|| / ||y_c||`` is below ``rtol`` (a :class:`~meanfield.ConvergenceWarning` if ``max_iter``,
    default ``10 n``, is reached first: round-off can make CG need more than ``n`` steps). The error in ``coef`` is
    at most ``cond(K + ridge I)`` times the residual.

    ``method="cholesky"``: dask's blocked Cholesky factorisation ``K + ridge I = L L^T`` and two triangular solves
    (``O(n^3)`` work, numerically stable to ``~cond * eps``).

    Parameters
    ----------
    kernel : dask.array.Array or array_like, shape (n, n)
        E.g. ``distributed_kernels(...).nngp`` (uniform square chunks for ``"cholesky"``).
    y : array_like, shape (n,) or (n, C)
    ridge : float
        ``>= 0`` added to the diagonal (observation noise ``sigma_n^2`` of the GP, or an NTK ridge).
    method : {"cg", "cholesky"}
    rtol : float
        Target relative residual of ``"cg"`` (``> 0``).
    max_iter : int, optional

    Returns
    -------
    KernelSolve
        ``coef``, the recomputed relative ``residual``, the number of iterations.

    Examples
    --------
    >>> import numpy as np
    >>> K = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> sol = kernel_solve(K, [1.0, 0.0], ridge=1.0)       # (K + I) coef = y
    >>> np.allclose(sol.coef, np.linalg.solve(K + np.eye(2), [1.0, 0.0])), sol.residual < 1e-10
    (True, True)
    """
    dask, da = _dask()
    K = _as_dask_square(da, kernel)
    n = K.shape[0]
    Y = np.asarray(y, dtype=np.float64)
    if Y.ndim not in (1, 2) or Y.shape[0] != n:
        raise ValueError(f"y must have shape ({n},) or ({n}, n_outputs), got {Y.shape}")
    if not np.all(np.isfinite(Y)):
        raise ValueError("y must be finite (no NaN or inf)")
    s = float(check_nonneg("ridge", ridge, scalar=True))
    if method not in ("cg", "cholesky"):
        raise ValueError(f"method must be 'cg' or 'cholesky', got {method!r}")
    rtol = float(check_positive("rtol", rtol, scalar=True))
    max_iter = 10 * n if max_iter is None else check_int("max_iter", max_iter, 1)
    Y2 = Y.reshape(n, -1)
    product = _Product(K, s)
    ynorm = np.linalg.norm(Y2, axis=0)
    scale = np.where(ynorm > 0, ynorm, 1.0)
    n_iter = 0
    if method == "cholesky":
        coef = _cholesky_solve(da, product.K, s, Y2)
    else:
        d = da.diagonal(product.K).compute() + s
        if np.any(d <= 0):
            raise np.linalg.LinAlgError("kernel + ridge * I has a non-positive diagonal entry: it is not positive "
                                        "definite; increase ridge")
        coef = np.zeros_like(Y2)
        R = Y2.copy()
        Z = R / d[:, None]
        P = Z.copy()
        rz = np.sum(R * Z, axis=0)
        active = ynorm > 0
        while n_iter < max_iter and np.any(active):
            AP = product(P)
            pap = np.sum(P * AP, axis=0)
            if np.any(pap[active] <= 0):
                raise np.linalg.LinAlgError("kernel + ridge * I is not positive definite (p^T A p <= 0 in the "
                                            "conjugate gradients); increase ridge")
            alpha = np.where(active, rz / np.where(active, pap, 1.0), 0.0)
            coef += alpha * P
            R -= alpha * AP
            n_iter += 1
            active = active & (np.linalg.norm(R, axis=0) > rtol * scale)
            Z = R / d[:, None]
            rz_new = np.sum(R * Z, axis=0)
            beta = np.where(active, rz_new / np.where(rz > 0, rz, 1.0), 0.0)
            P = Z + beta * P
            rz = rz_new
    residual = float(np.max(np.linalg.norm(Y2 - product(coef), axis=0) / scale))
    if method == "cg" and np.any(active):
        warnings.warn(f"conjugate gradients: relative residual {residual:.3g} after max_iter={n_iter} steps is above "
                      f"rtol={rtol:g} (ill-conditioned kernel: increase ridge or max_iter)", ConvergenceWarning,
                      stacklevel=2)
    return KernelSolve(coef=coef.reshape(Y.shape), residual=residual, n_iter=n_iter, method=method, ridge=s)


@dataclass(frozen=True)
class DistributedPrediction:
    """Kernel-regression prediction at the test points from a distributed solve.

    Attributes
    ----------
    mean : ndarray, shape (n_test,) or (n_test, C)
        ``K(X_*, X) (K(X, X) + ridge I)^{-1} Y``.
    solve : KernelSolve
        The training solve, with its residual.
    """

    mean: np.ndarray
    solve: KernelSolve

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "solve": self.solve.to_dict()}


def _regression(network, x_train, y_train, x_test, ridge, which, chunks, client, method, rtol, max_iter,
                kernel_options):
    from .regression import _regression_inputs

    X, y, Xs = _regression_inputs(x_train, y_train, x_test)
    opts = dict(kernel_options, chunks=chunks, client=client, compute_ntk=(which == "ntk"))
    if "kernel_rtol" in opts:
        opts["rtol"] = opts.pop("kernel_rtol")
    K = getattr(distributed_kernels(network, X, **opts), which)
    Ks = getattr(distributed_kernels(network, Xs, X, **opts), which)
    sol = kernel_solve(K, y, ridge, method=method, rtol=rtol, max_iter=max_iter)
    mean = (Ks @ sol.coef.reshape(X.shape[0], -1)).compute().reshape((Xs.shape[0],) + y.shape[1:])
    return DistributedPrediction(mean=mean, solve=sol)


def distributed_nngp_regression(network: NetworkLike, x_train: ArrayLike, y_train: ArrayLike, x_test: ArrayLike,
                                noise_var: float = 0.0, *, chunks: int = 4096, client: Optional[Client] = None,
                                method: str = "cg", rtol: float = 1e-10, max_iter: Optional[int] = None,
                                **kernel_options: Any) -> DistributedPrediction:
    r"""NNGP posterior mean ``mu_* = K_* (K + sigma_n^2 I)^{-1} Y`` (Lee et al. 2018) with the kernels and the solve on
    a dask cluster (:func:`distributed_kernels`, :func:`kernel_solve`; the posterior variance is not computed).

    ``kernel_options`` go to :func:`distributed_kernels` (``tile_size``, ``kernel_rtol`` for its ``rtol``); ``rtol``
    here is the solver's.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network, nngp_regression
    >>> X = np.linspace(-1, 1, 12)[:, None]; Xs = np.array([[0.05], [0.5]])
    >>> net = Network("erf", depth=2, weight_var=1.5, bias_var=0.1)
    >>> p = distributed_nngp_regression(net, X, X[:, 0] ** 2, Xs, 1e-3, chunks=8, tile_size=8)
    >>> bool(np.allclose(p.mean, nngp_regression(net, X, X[:, 0] ** 2, Xs, 1e-3).mean, rtol=1e-8))
    True
    """
    return _regression(network, x_train, y_train, x_test, noise_var, "nngp", chunks, client, method, rtol, max_iter,
                       kernel_options)


def distributed_ntk_regression(network: NetworkLike, x_train: ArrayLike, y_train: ArrayLike, x_test: ArrayLike,
                               ridge: float = 0.0, *, chunks: int = 4096, client: Optional[Client] = None,
                               method: str = "cg", rtol: float = 1e-10, max_iter: Optional[int] = None,
                               **kernel_options: Any) -> DistributedPrediction:
    r"""Mean output of an infinitely wide network trained to ``t = inf`` by gradient flow on the MSE loss plus a ridge:
    ``f_inf(X_*) = Theta_* (Theta + ridge I)^{-1} Y`` (Jacot et al. 2018; Lee et al. 2019), on a dask cluster.

    ``kernel_options`` go to :func:`distributed_kernels` (``parameterization``, ``width``, ``tile_size``, and
    ``kernel_rtol`` for its ``rtol``); ``rtol`` here is the solver's (see :func:`kernel_solve`).

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network, ntk_regression
    >>> X = np.linspace(-1, 1, 10)[:, None]
    >>> net = Network("relu", depth=2, weight_var=2.0, bias_var=0.1)
    >>> p = distributed_ntk_regression(net, X, X[:, 0], X, 0.0, chunks=8, tile_size=8, rtol=1e-12)
    >>> bool(np.allclose(p.mean, X[:, 0], atol=1e-8)), p.solve.residual < 1e-12
    (True, True)
    """
    return _regression(network, x_train, y_train, x_test, ridge, "ntk", chunks, client, method, rtol, max_iter,
                       kernel_options)


# --------------------------------------------------------------------------------------------------------------------
# sweeps
# --------------------------------------------------------------------------------------------------------------------
def _run_recording(function, args, kwargs):
    """Run one task on a worker, returning its value and the warnings it raised (to re-raise on the client)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = function(*args, **kwargs)
    return value, [(w.category, str(w.message)) for w in caught]


def _as_call(task):
    if isinstance(task, dict):
        return (), task
    if isinstance(task, tuple):
        return task, {}
    return (task,), {}


def distributed_map(function: Callable, tasks: Iterable, *, client: Optional[Client] = None, retries: int = 2,
                    on_result: Optional[Callable[[int, Any], None]] = None,
                    timeout: Optional[float] = None) -> list:
    """``[function(task) for task in tasks]`` on a dask cluster, each result kept on the client as soon as it arrives.

    A task is a dict (keyword arguments), a tuple (positional arguments) or one argument. Results come back in the
    order of ``tasks``. Each finished result is fetched to the client and released on the cluster at once, so a
    worker that dies (killed, out of memory, preempted) loses only the tasks it was running; the scheduler runs those
    again on the other workers (a task that kills three workers is given up: ``distributed.scheduler.KilledWorker``).
    Warnings raised in the tasks are raised again here, once per distinct message.

    Parameters
    ----------
    function : callable
        Must be importable or picklable by cloudpickle on the workers.
    tasks : iterable
    client : dask.distributed.Client, optional
        Default: the current client.
    retries : int
        Extra attempts for a task that raises an exception (``>= 0``); the last exception is raised here.
    on_result : callable, optional
        ``on_result(index, value)`` called on the client as each result arrives (e.g. to save finished points).
    timeout : float, optional
        Seconds to wait for all results (``TimeoutError`` after it).

    Examples
    --------
    >>> from distributed import Client, LocalCluster                       # doctest: +SKIP
    >>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))  # doctest: +SKIP
    >>> from meanfield import critical_weight_var
    >>> distributed_map(critical_weight_var, [("tanh", 0.0), ("erf", 0.0)])  # doctest: +SKIP
    [1.0, 0.7853981633974483]
    """
    _dask()
    from distributed import as_completed

    cl = _client(client, required=True)
    retries = check_int("retries", retries, 0)
    if timeout is not None:
        timeout = float(check_positive("timeout", timeout, scalar=True))
    calls = [_as_call(t) for t in tasks]
    tag = uuid.uuid4().hex
    name = getattr(function, "__name__", "task")
    futures = [cl.submit(_run_recording, function, args, kwargs, key=f"meanfield-{name}-{tag}-{i}", pure=False,
                         retries=retries) for i, (args, kwargs) in enumerate(calls)]
    index = {f.key: i for i, f in enumerate(futures)}
    results: list = [None] * len(futures)
    caught: list = []
    try:
        for fut, (value, warns) in as_completed(futures, with_results=True, timeout=timeout):
            i = index[fut.key]
            results[i] = value
            caught.extend(warns)
            fut.release()
            if on_result is not None:
                on_result(i, value)
    finally:
        cl.cancel([f for f in futures if not f.done()])
    seen = set()
    for cat, msg in caught:
        if (cat, msg) not in seen:
            seen.add((cat, msg))
            warnings.warn(msg, cat, stacklevel=2)
    return results


def _n_tasks(cl, n_items: int, per_task: Optional[int], name: str) -> int:
    if per_task is not None:
        return check_int(name, per_task, 1)
    n_workers = max(1, len(cl.scheduler_info().get("workers", {})))
    return max(1, math.ceil(n_items / (4 * n_workers)))


def distributed_phase_diagram(activation: ActivationLike, weight_vars: ArrayLike, bias_vars: ArrayLike, *,
                              client: Optional[Client] = None, rows_per_task: Optional[int] = None,
                              activation_params: Optional[dict] = None, retries: int = 2) -> PhaseDiagram:
    """:func:`meanfield.phase_diagram` with its rows (bias values) split across a dask cluster.

    Each task is ``phase_diagram(activation, weight_vars, bias_vars[rows])``; every grid point is computed
    independently of the others, so the assembled :class:`~meanfield.PhaseDiagram` equals the single-process one
    bit for bit. ``rows_per_task`` defaults to about four tasks per worker. See :func:`distributed_map` for
    ``client``, ``retries`` and what happens when a worker dies.
    """
    from .phase import PhaseDiagram, QUANTITIES, _activation_fields, _grid_axis, _readonly, _resolve_activation
    from .phase import phase_diagram

    act = _resolve_activation(activation, activation_params)
    w = _grid_axis("weight_vars", weight_vars, positive=True)
    b = _grid_axis("bias_vars", bias_vars, positive=False)
    _dask()
    cl = _client(client, required=True)
    per = _n_tasks(cl, b.size, rows_per_task, "rows_per_task")
    parts = distributed_map(phase_diagram, [(act, w, b[s:s + per]) for s in range(0, b.size, per)], client=cl,
                            retries=retries)
    return PhaseDiagram(**_activation_fields(act), weight_vars=_readonly(w), bias_vars=_readonly(b),
                        critical_weight_vars=_readonly(np.concatenate([p.critical_weight_vars for p in parts])),
                        finished=None,
                        **{k: _readonly(np.concatenate([getattr(p, k) for p in parts], axis=0)) for k in QUANTITIES})


def distributed_critical_line(activation: ActivationLike, bias_vars: ArrayLike, *,
                              offsets: Sequence[float] = (1e-3, 1e-2, 1e-1), client: Optional[Client] = None,
                              points_per_task: Optional[int] = None, activation_params: Optional[dict] = None,
                              retries: int = 2) -> CriticalLine:
    """:func:`meanfield.critical_line` with its bias values split across a dask cluster (equal bit for bit to the
    single-process line: each bias is solved on its own). See :func:`distributed_map`."""
    from .phase import CriticalLine, _activation_fields, _readonly, _resolve_activation, critical_line

    act = _resolve_activation(activation, activation_params)
    b = np.atleast_1d(check_nonneg("bias_vars", bias_vars)).astype(np.float64).ravel()
    if b.size == 0:
        raise ValueError("bias_vars must hold at least one value")
    _dask()
    cl = _client(client, required=True)
    per = _n_tasks(cl, b.size, points_per_task, "points_per_task")
    parts = distributed_map(critical_line, [dict(activation=act, bias_vars=b[s:s + per], offsets=offsets)
                                            for s in range(0, b.size, per)], client=cl, retries=retries)
    cat = {k: _readonly(np.concatenate([getattr(p, k) for p in parts], axis=0))
           for k in ("bias_vars", "weight_vars", "qstar", "chaotic_weight_vars", "cstar", "chi_c", "xi_c")}
    return CriticalLine(**_activation_fields(act), offsets=parts[0].offsets, **cat)


def distributed_depth_scale_curve(activation: ActivationLike, weight_vars: ArrayLike, bias_var: float = 0.05, *,
                                  client: Optional[Client] = None, points_per_task: Optional[int] = None,
                                  activation_params: Optional[dict] = None, retries: int = 2) -> DepthScaleCurve:
    """:func:`meanfield.depth_scale_curve` with its weight variances split across a dask cluster (equal bit for bit
    to the single-process curve). See :func:`distributed_map`."""
    from .phase import DepthScaleCurve, QUANTITIES, _grid_axis, _readonly, _resolve_activation, phase_diagram

    act = _resolve_activation(activation, activation_params)
    w = _grid_axis("weight_vars", weight_vars, positive=True)
    bv = check_nonneg("bias_var", bias_var)
    if np.ndim(bv) != 0:
        raise ValueError("bias_var must be a single number (use distributed_phase_diagram for a grid of biases)")
    _dask()
    cl = _client(client, required=True)
    per = _n_tasks(cl, w.size, points_per_task, "points_per_task")
    parts = distributed_map(phase_diagram, [(act, w[s:s + per], [float(bv)]) for s in range(0, w.size, per)],
                            client=cl, retries=retries)
    return DepthScaleCurve(activation=parts[0].activation, activation_params=parts[0].activation_params,
                           activation_object=act, bias_var=float(bv), weight_vars=_readonly(w),
                           critical_weight_var=float(parts[0].critical_weight_vars[0]),
                           **{k: _readonly(np.concatenate([getattr(p, k)[0] for p in parts])) for k in QUANTITIES})
