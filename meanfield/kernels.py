r"""Infinite-width NNGP and NTK kernels of a fully connected network on a data set (docs/mathematics.md section 4).

For inputs ``x, x'`` (rows of ``x1``, ``x2``, dimension ``M_0``) the pre-activation covariance follows

.. math::

    q^1(x,x') = \sigma_{w,1}^2\, x\cdot x'/M_0 + \sigma_{b,1}^2,\qquad
    \hat q^l = E[\phi_l(u)\phi_l(v)],\qquad \dot q^l = E[\phi_l'(u)\phi_l'(v)],\qquad
    q^{l+1} = \sigma_{w,l+1}^2\,\hat q^l + \sigma_{b,l+1}^2,

with ``(u, v)`` centred Gaussian of covariance ``[[q^l(x,x), q^l(x,x')], [q^l(x,x'), q^l(x',x')]]``. The NNGP kernel is
``K = q^L`` (Lee et al. 2018). The NTK in the NTK parameterization (Jacot et al. 2018) is

.. math::

    \Theta^1 = q^1,\qquad \Theta^{l+1} = q^{l+1} + \sigma_{w,l+1}^2\,\dot q^l\,\Theta^l
    \quad\Big(= \textstyle\sum_{l=1}^L \tilde q^l q^l\Big),

and in the standard parameterization at width ``M`` (hidden widths ``M_l = alpha_l M``, every weight and bias a trained
parameter)

.. math::

    \Theta_{SP} = \sum_{l=1}^{L} \tilde q^l\,(M_{l-1}\hat q^{l-1} + 1),\qquad M_0 \hat q^0 = x\cdot x',

computed by the same recursion with ``q^{l+1}`` replaced by ``M_l \hat q^l + 1`` (``Theta_SP^1 = x.x' + 1``).
``tilde q^l`` is Karakida's back-propagated overlap (docs/mathematics.md section 3).

How the Gaussian pair expectations are computed, layer by layer:

* closed forms for relu / leaky_relu (arc-cosine kernel, Cho & Saul 2009), erf (Williams 1997) and linear;
* the Mehler (Hermite) expansion for smooth activations: with ``a_k(q) = E[\phi(\sqrt q z) He_k(z)]/\sqrt{k!}``,
  ``E[\phi(u)\phi(v)] = \sum_k a_k(q_u) a_k(q_v) c^k``, ``c = q_{uv}/\sqrt{q_u q_v}`` (likewise ``phi'``). The coefficients
  come from a Gauss-Hermite rule whose size is doubled until the Parseval remainder
  ``R_K(q) = E[f^2] - \sum_{k<K} a_k^2`` is below ``rtol * E[f^2]`` for every row; Cauchy-Schwarz bounds the
  truncation error of a pair by ``|c|^K sqrt(R_K(q_u) R_K(q_v))`` (reported per layer in :class:`KernelResult`);
* :func:`meanfield.gaussian.pair_expectation` for kinked activations without closed forms (hard_tanh, elu, selu,
  kinked custom activations), and for the rare pairs whose Mehler bound misses the tolerance.

The work is done tile by tile through all layers (a pair's recursion needs only per-row diagonal data), so the memory
beyond the output is ``O(tile_size^2 + n_rows * n_terms)`` per layer. Diagonal entries of a symmetric kernel
(``x2=None``) are set from the exact single-input length map, and the matrix is mirrored, so it is exactly symmetric.

Examples
--------
>>> import numpy as np
>>> from meanfield import Network
>>> from meanfield.kernels import kernels
>>> x = np.random.default_rng(0).standard_normal((5, 3))
>>> res = kernels(Network("tanh", depth=3, weight_var=1.5, bias_var=0.1), x)
>>> res.nngp.shape, bool(np.all(res.ntk == res.ntk.T))
((5, 5), True)
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from typing import Any

    from ._typing import ArrayLike, NetworkLike

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from ._checks import check_int, check_positive, check_finite_array
from ._interop import Table, short_repr, to_dataframe, to_xarray

if TYPE_CHECKING:
    import pandas
    import xarray

__all__ = ["KernelResult", "kernels", "nngp_kernel", "ntk_kernel", "nngp_diagonal"]



# ------------------------------------------------------------------------------------------------------- result
@dataclass(frozen=True)
class KernelResult:
    """NNGP and NTK matrices of a network on a data set, with the numerical error budget.

    Attributes
    ----------
    nngp : ndarray, shape (n1, n2)
        ``K(x_i, x'_j) = q^L`` (Lee et al. 2018).
    ntk : ndarray or None
        ``Theta(x_i, x'_j)`` in the requested parameterization; None if not computed.
    parameterization : str
        ``"ntk"`` or ``"standard"``.
    width : float or None
        Width M of the standard parameterization.
    n_terms : tuple of (int, int)
        Per hidden layer, Mehler terms used for phi and phi' (0 for closed forms and direct quadrature).
    truncation_bound, truncation_bound_dot : tuple of float
        Per hidden layer, the largest Cauchy-Schwarz bound ``|c|^K sqrt(R_i R_j) / sqrt(E_i E_j)`` on the relative
        truncation error of ``qhat`` (``qdot``) met over all pairs (0 where no expansion is used).
    n_fallback : int
        Pairs x layers computed by 2-D quadrature because the Mehler expansion did not converge within 4096
        Gauss-Hermite nodes (very large variances; a RuntimeWarning says so).
    routes : tuple of str
        Per hidden layer: "linear", "leaky_relu", "erf", "mehler" or "quadrature".
    """

    nngp: np.ndarray
    ntk: Optional[np.ndarray]
    parameterization: str
    width: Optional[float]
    n_terms: tuple
    truncation_bound: tuple
    truncation_bound_dot: tuple
    n_fallback: int
    routes: tuple

    __repr__ = short_repr

    def _table(self) -> Table:
        n1, n2 = self.nngp.shape
        data = {"nngp": (("x1", "x2"), self.nngp)}
        if self.ntk is not None:
            data["ntk"] = (("x1", "x2"), self.ntk)
        return Table(coords={"x1": np.arange(n1), "x2": np.arange(n2),
                             "hidden_layer": np.arange(1, len(self.routes) + 1)},
                     data={**data, "route": (("hidden_layer",), np.array(self.routes, dtype=object)),
                           "truncation_bound": (("hidden_layer",), np.array(self.truncation_bound, dtype=float))},
                     attrs={"parameterization": self.parameterization, "width": self.width,
                            "n_fallback": self.n_fallback}, rows=("x1", "x2"))

    def to_xarray(self) -> "xarray.Dataset":
        """``nngp`` (and ``ntk``) on the dimensions ``(x1, x2)`` (row and column inputs, numbered from 0), the
        per-hidden-layer ``route`` and ``truncation_bound`` on ``hidden_layer``. Needs xarray."""
        return to_xarray(self._table())

    def to_dataframe(self) -> "pandas.DataFrame":
        """One row per pair of inputs ``(x1, x2)``: ``nngp`` (and ``ntk``). Needs pandas."""
        return to_dataframe(self._table())

    def to_dict(self) -> dict:
        return {
            "nngp": self.nngp.tolist(),
            "ntk": None if self.ntk is None else self.ntk.tolist(),
            "parameterization": self.parameterization,
            "width": self.width,
            "n_terms": [list(t) for t in self.n_terms],
            "truncation_bound": list(self.truncation_bound),
            "truncation_bound_dot": list(self.truncation_bound_dot),
            "n_fallback": self.n_fallback,
            "routes": list(self.routes),
        }


# ------------------------------------------------------------------------------------------------- validation
def _ndim(x) -> int:
    """np.ndim, or -1 for what numpy cannot make an array of (a ragged list): the input checks then name it."""
    try:
        return int(np.ndim(x))
    except ValueError:
        return -1


def _check_inputs(x1, x2, name1="x1"):
    x1 = check_finite_array(name1, x1)
    if x1.ndim != 2 or x1.shape[0] < 1 or x1.shape[1] < 1:
        raise ValueError(f"{name1} must be a 2-D array (n_points, input_dim) with n_points, input_dim >= 1, "
                         f"got shape {x1.shape}")
    if x2 is not None:
        x2 = check_finite_array("x2", x2)
        if x2.ndim != 2 or x2.shape[0] < 1 or x2.shape[1] != x1.shape[1]:
            raise ValueError(f"x2 must be a 2-D array (n_points, {x1.shape[1]}) matching x1's input dimension, "
                             f"got shape {x2.shape}")
    return np.ascontiguousarray(x1), (None if x2 is None else np.ascontiguousarray(x2))


# ---------------------------------------------------------------------------------------------------- driver
def _rows(chain, X: np.ndarray, want_dot: bool, rtol: float, width=None, xname: str = "x1, x2"):
    """Row pass of the layer sweep (:mod:`meanfield.trace`) on the inputs ``X``: ``(nodes, q_out)``."""
    from .trace import _compile, _Ctx

    norms = np.einsum("ij,ij->i", X, X) / X.shape[1]
    if not np.all(np.isfinite(norms)):
        raise ValueError(f"{xname}: the squared norms |x|^2 / input_dim overflowed (inputs too large)")
    nodes, q, _, _ = _compile(chain.layers, norms, _Ctx(want_dot, rtol, width, xname), chain.input_ratio,
                              float(X.shape[1]))
    return nodes, q


def nngp_diagonal(network: NetworkLike, x: ArrayLike, rtol: float = 1e-14) -> np.ndarray:
    """Diagonal ``K(x_i, x_i) = q^L(x_i)`` of the NNGP (single-input length map per row; O(n) work).

    ``network`` is a :class:`~meanfield.Network` or a layer chain (:mod:`meanfield.layers`).

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network
    >>> nngp_diagonal(Network("relu", depth=3, weight_var=2.0), np.ones((2, 4)))
    array([2., 2.])
    """
    from .trace import as_chain
    from .spatial import is_spatial, spatial_variances

    chain = as_chain(network)
    if _ndim(x) in (3, 4) or is_spatial(chain):      # images: the single-input pass of meanfield.spatial
        return spatial_variances(chain, x, rtol=rtol).q[-1]
    x, _ = _check_inputs(x, None, "x")
    return _rows(chain, x, False, check_positive("rtol", rtol, scalar=True), xname="x")[1]


def kernels(network: NetworkLike, x1: ArrayLike, x2: Optional[ArrayLike] = None, *, parameterization: str = "ntk",
            width: Optional[float] = None,
            compute_ntk: bool = True, rtol: float = 1e-14, tile_size: int = 512) -> KernelResult:
    r"""NNGP and NTK of ``network`` between the rows of ``x1`` and ``x2`` in one pass (shared work).

    A view of the layer sweep of :mod:`meanfield.trace`: the row pass once, then the tile pass tile by tile.

    Parameters
    ----------
    network : Network or layer chain
        A :class:`~meanfield.Network` (activation(s), depth, per-layer ``weight_var`` / ``bias_var``;
        ``width_ratios`` enter the standard parameterization only; ``dropout_keep < 1``: the same-input entries of
        the NNGP and the NTK are divided by rho at each dropout layer (one mask per input), so dropout acts on the
        diagonal of a symmetric kernel only; see :class:`~meanfield.layers.Dropout` and docs/regression.md), or a
        chain of :mod:`meanfield.layers` (Dense, Nonlinearity, Dropout, Residual) and :mod:`meanfield.spatial`
        (Conv, AvgPool, GlobalAvgPool, Flatten, LayerNorm; then ``x1`` holds images, see
        :func:`meanfield.spatial.spatial_kernels`).
    x1 : array_like, shape (n1, M_0), or (n1, H, W, C) / (n1, L, C) for a convolutional chain
    x2 : array_like, shape (n2, M_0), optional
        ``None`` gives the symmetric kernel of ``x1`` with itself (upper triangle computed, then mirrored).
    parameterization : {"ntk", "standard"}
        NTK parameterization (width independent) or standard parameterization ``Theta_SP`` at width ``width``.
    width : float, optional
        Width M (required for ``"standard"``); hidden widths are ``alpha_l M``.
    compute_ntk : bool
        False skips the phi' expectations (NNGP only).
    rtol : float
        Target relative size of the Parseval remainder of the Mehler expansions (default 1e-14).
    tile_size : int
        Rows per tile, >= 8 (memory ~ a few tile_size^2 floats per array).

    Returns
    -------
    KernelResult
        Its per-hidden-layer tuples (``n_terms``, ``routes``, ...) have one entry per Nonlinearity, in chain order.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network
    >>> x = np.eye(3)
    >>> r = kernels(Network("relu", depth=2, weight_var=2.0, bias_var=0.0), x)
    >>> float(r.nngp[0, 0])   # relu at weight_var = 2 preserves q = 2 |x|^2 / M_0
    0.6666666666666666
    """
    from .spatial import is_spatial, spatial_kernels
    from .trace import as_chain

    if _ndim(x1) in (3, 4) or is_spatial(as_chain(network)):   # images (N, H, W, C) / sequences (N, L, C)
        return spatial_kernels(as_chain(network), x1, x2, parameterization=parameterization, width=width,
                               compute_ntk=compute_ntk, rtol=rtol)
    chain, x1, x2, parameterization, width, rtol, tile, compute_ntk = _check_options(
        network, x1, x2, parameterization, width, compute_ntk, rtol, tile_size)
    sym = x2 is None
    n1 = x1.shape[0]
    X = x1 if sym else np.vstack([x1, x2])
    n2 = n1 if sym else x2.shape[0]
    off2 = 0 if sym else n1
    standard = parameterization == "standard"

    from ._io import check_alloc  # size check before the (n1, n2) allocations (no raw MemoryError)

    check_alloc("x1, x2", 8.0 * n1 * n2 * (2 + compute_ntk), f"the {n1} x {n2} kernel matrices")
    nodes, _ = _rows(chain, X, compute_ntk, rtol, width)
    K, T = _tile_pass(nodes, X, n1, n2, off2, sym, tile, standard, compute_ntk)
    return _result(nodes, K, T, parameterization, width)


def _check_options(network, x1, x2, parameterization, width, compute_ntk, rtol, tile_size):
    """Validated ``(chain, x1, x2, parameterization, width, rtol, tile, compute_ntk)`` of :func:`kernels`."""
    from .trace import as_chain

    chain = as_chain(network)
    x1, x2 = _check_inputs(x1, x2)
    if not isinstance(parameterization, str) or parameterization not in ("ntk", "standard"):
        raise ValueError(f"parameterization must be 'ntk' or 'standard', got {parameterization!r}")
    if parameterization == "standard":
        if width is None:
            raise ValueError("width must be given (> 0) for parameterization='standard'")
        width = check_positive("width", width, scalar=True)
    elif width is not None:
        width = check_positive("width", width, scalar=True)
    rtol = check_positive("rtol", rtol, scalar=True)
    if rtol < 1e-15 or rtol > 1e-3:
        raise ValueError(f"rtol must lie in [1e-15, 1e-3], got {rtol!r}")
    tile = check_int("tile_size", tile_size, 8)
    compute_ntk = bool(compute_ntk)
    return chain, x1, x2, parameterization, width, rtol, tile, compute_ntk


def _tile_pass(nodes, X, n1, n2, off2, sym, tile, standard, compute_ntk):
    """Tile pass of the layer sweep over rows ``0..n1`` x columns ``off2..off2+n2`` of ``X`` (``nodes`` from the row
    pass on ``X``): returns ``(K, T)`` of shape ``(n1, n2)``.

    Tiles start at multiples of ``tile``; ``sym`` (``X`` against itself, ``off2 = 0``) computes the tiles on and above
    the diagonal and mirrors them. :mod:`meanfield.distributed` runs this same function on each block of a dask array.
    """
    from .trace import _tile_forward

    dim = X.shape[1]
    T0 = 0.0 if compute_ntk else None
    K = np.empty((n1, n2))
    T = np.empty((n1, n2)) if compute_ntk else None
    for i0 in range(0, n1, tile):
        ri = np.arange(i0, min(i0 + tile, n1))
        j_start = i0 if sym else 0
        for j0 in range(j_start, n2, tile):
            rj_out = np.arange(j0, min(j0 + tile, n2))
            rj = rj_out + off2
            diag = sym and i0 == j0
            Q0 = X[ri] @ X[rj].T / dim
            Q, Th, _ = _tile_forward(nodes, Q0, T0, ri, rj, diag, standard)
            if diag:
                iu = np.triu_indices(len(ri), 1)
                Q.T[iu] = Q[iu]
                if compute_ntk:
                    Th.T[iu] = Th[iu]
            K[ri[0]:ri[-1] + 1, rj_out[0]:rj_out[-1] + 1] = Q
            if compute_ntk:
                T[ri[0]:ri[-1] + 1, rj_out[0]:rj_out[-1] + 1] = Th
            if sym and not diag:
                K[rj_out[0]:rj_out[-1] + 1, ri[0]:ri[-1] + 1] = Q.T
                if compute_ntk:
                    T[rj_out[0]:rj_out[-1] + 1, ri[0]:ri[-1] + 1] = Th.T
    return K, T


def _plans(nodes):
    """The pair plans of the Nonlinearity layers of ``nodes``, in chain order (their error budget)."""
    from .layers import Nonlinearity
    from .trace import _walk

    return [nd.plan for nd in _walk(nodes) if isinstance(nd.layer, Nonlinearity)]


def _check_finite(K, T):
    if not np.all(np.isfinite(K)) or (T is not None and not np.all(np.isfinite(T))):
        raise ValueError("x1, x2: kernel entries are not finite (overflow); reduce the inputs' norms, weight_var or "
                         "depth")


def _result(nodes, K, T, parameterization, width, stacklevel=3) -> KernelResult:
    """Checks (clipped correlations, overflow) and the :class:`KernelResult` of a finished tile pass."""
    layers = _plans(nodes)
    excess = max((lay.max_c_excess for lay in layers), default=0.0)
    if excess > 1e-8:
        warnings.warn(f"correlations exceeded 1 by up to {excess:.2e} and were clipped (inconsistent covariances)",
                      RuntimeWarning, stacklevel=stacklevel)
    _check_finite(K, T)
    return KernelResult(
        nngp=K, ntk=T, parameterization=parameterization, width=width,
        n_terms=tuple(lay.n_terms for lay in layers),
        truncation_bound=tuple(lay.bound for lay in layers),
        truncation_bound_dot=tuple(lay.bound_dot for lay in layers),
        n_fallback=int(sum(lay.n_fallback for lay in layers)),
        routes=tuple(lay.label for lay in layers),
    )


def nngp_kernel(network: NetworkLike, x1: ArrayLike, x2: Optional[ArrayLike] = None, **options: Any) -> np.ndarray:
    r"""NNGP kernel ``K(x, x') = q^L(x, x')`` of ``network`` between the rows of ``x1`` and ``x2`` (Lee et al. 2018).

    ``q^1 = sigma_w^2 x.x'/M_0 + sigma_b^2``, ``q^{l+1} = sigma_w^2 E[phi(u)phi(v)] + sigma_b^2``; see
    :func:`kernels` for the options and the error control. ``x2=None`` gives an exactly symmetric matrix.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network
    >>> K = nngp_kernel(Network("erf", depth=4, weight_var=2.0, bias_var=0.1), np.eye(4))
    >>> bool(np.all(np.linalg.eigvalsh(K) > 0))
    True
    """
    return kernels(network, x1, x2, compute_ntk=False, **options).nngp


def ntk_kernel(network: NetworkLike, x1: ArrayLike, x2: Optional[ArrayLike] = None, parameterization: str = "ntk",
               width: Optional[float] = None, **options: Any) -> np.ndarray:
    r"""Neural tangent kernel of ``network`` between the rows of ``x1`` and ``x2`` (Jacot et al. 2018).

    NTK parameterization: ``Theta^{l+1} = q^{l+1} + sigma_w^2 qdot^l Theta^l``, ``Theta^1 = q^1``
    (``= sum_l qtilde^l q^l``). Standard parameterization at width M:
    ``Theta_SP = sum_l qtilde^l (M_{l-1} qhat^{l-1} + 1)`` with ``M_0 qhat^0 = x.x'``. See :func:`kernels`.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network
    >>> net = Network("relu", depth=1, weight_var=2.0, bias_var=0.0)
    >>> float(ntk_kernel(net, np.ones((1, 2)))[0, 0])   # q^1 = 2, Theta^2 = q^2 + 2 * (1/2) * q^1 = 4
    4.0
    """
    return kernels(network, x1, x2, parameterization=parameterization, width=width, **options).ntk
