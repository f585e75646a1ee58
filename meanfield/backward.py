r"""Backward order parameters: the back-propagated signal second moments q-tilde (docs/mathematics.md section 3).

Karakida's convention (sums over units, so the values do not depend on the width): with
delta^l_i = d f_k / d u^l_i for one output unit,

.. math::
    \tilde q_1^L = \tilde q_2^L = 1, \qquad
    \tilde q_1^l = \frac{\sigma_{w,l+1}^2}{\rho}\, \tilde q_1^{l+1}\, E[\phi'(u)^2], \qquad
    \tilde q_2^l = \sigma_{w,l+1}^2\, \tilde q_2^{l+1}\, E[\phi'(u)\phi'(v)].

(Schoenholz's per-unit mean E[(delta_i^l)^2] is q-tilde / M_l.) With q at its fixed point, q-tilde_1^l = chi_1^{L-l}.
Inverted dropout with keep probability rho multiplies the same-input recursion by 1/rho (E[(m/rho)^2] = 1/rho) and
leaves the cross-input one unchanged (independent masks for the two inputs).
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from typing import Any

    from matplotlib.axes import Axes

    from ._typing import NetworkLike

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

from ._interop import Table, short_repr, to_dataframe, to_xarray
from .errors import DivergenceWarning
from .forward import ForwardResult, forward

if TYPE_CHECKING:
    import pandas
    import xarray

__all__ = ["backward", "BackwardResult"]


@dataclass(frozen=True)
class BackwardResult:
    """Per-layer q-tilde, indexed ``[l - 1]`` for l = 1..L (the last entry, the readout, is 1).

    ``qtilde1`` (input x), ``qtilde1b`` (input x'), ``qtilde2`` (cross term), and the forward result they used.
    """

    qtilde1: np.ndarray
    qtilde1b: np.ndarray
    qtilde2: np.ndarray
    forward: ForwardResult

    __repr__ = short_repr

    def _table(self) -> Table:
        n = self.qtilde1.size
        return Table(coords={"layer": np.arange(1, n + 1)},
                     data={k: (("layer",), getattr(self, k)) for k in ("qtilde1", "qtilde1b", "qtilde2")},
                     rows=("layer",))

    def to_xarray(self) -> "xarray.Dataset":
        """``qtilde1, qtilde1b, qtilde2`` on the dimension ``layer`` = 1..L. Needs xarray."""
        return to_xarray(self._table())

    def to_dataframe(self) -> "pandas.DataFrame":
        """One row per layer ``l = 1..L``: ``qtilde1, qtilde1b, qtilde2``. Needs pandas."""
        return to_dataframe(self._table())

    def to_dict(self) -> dict:
        return {"qtilde1": self.qtilde1.tolist(), "qtilde1b": self.qtilde1b.tolist(),
                "qtilde2": self.qtilde2.tolist(), "forward": self.forward.to_dict()}

    def plot(self, ax: Optional[Axes] = None) -> Axes:
        """Plot q-tilde_1^l and q-tilde_2^l against the layer index (log scale)."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(4.5, 3.2))
        layers = np.arange(1, self.qtilde1.size + 1)
        ax.semilogy(layers, self.qtilde1, "o-", label=r"$\tilde q_1^l$")
        ax.semilogy(layers, np.abs(self.qtilde2), "s--", label=r"$|\tilde q_2^l|$")
        ax.set_xlabel("layer $l$")
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
        return ax


def backward(network: NetworkLike, forward_result: Optional[ForwardResult] = None, **forward_kwargs: Any) -> BackwardResult:
    """Back-propagate q-tilde through ``network`` (see the module docstring for the recursion).

    A view of the backward pass of the layer sweep (:mod:`meanfield.trace`): q-tilde at each Dense layer's output.

    Parameters
    ----------
    network : Network or layer chain
    forward_result : ForwardResult, optional
        Reuse a forward pass; otherwise :func:`meanfield.forward` is called with ``forward_kwargs``
        (``input_norm``, ``input_norm2``, ``input_overlap``).

    Raises
    ------
    TypeError
        If ``network`` is not a Network or layer chain, or ``forward_result`` is not a ForwardResult.
    ValueError
        If ``forward_result`` belongs to another network or is given together with forward keyword arguments.

    Examples
    --------
    >>> from meanfield import Network, backward
    >>> br = backward(Network("relu", depth=3, weight_var=1.0, bias_var=0.1))
    >>> br.qtilde1.tolist()   # chi_1 = 1/2 per layer
    [0.125, 0.25, 0.5, 1.0]
    """
    from .trace import as_chain

    as_chain(network)   # type check
    if forward_result is None:
        forward_result = forward(network, **forward_kwargs)
    elif not isinstance(forward_result, ForwardResult):
        raise TypeError(f"forward_result must be a meanfield.ForwardResult (from meanfield.forward) or None, "
                        f"got {type(forward_result).__name__}")
    elif forward_kwargs:
        raise ValueError("give either forward_result or forward keyword arguments, not both")
    elif type(forward_result.network) is not type(network) or forward_result.network != network:
        raise ValueError("forward_result was computed for a different network")
    fr = forward_result
    if fr.trace is None or fr.trace.dense[-1].qtilde is None:
        raise ValueError("forward_result carries no trace with a backward pass; compute it with meanfield.forward")
    qt = np.array([s.qtilde for s in fr.trace.dense], dtype=np.float64).reshape(-1, 2, 2)
    over = ~np.isfinite(qt) & ~np.isnan(qt)
    if over.any():
        n_over = int(over.reshape(qt.shape[0], -1).any(axis=1).sum())
        warnings.warn(f"q-tilde exceeds the float64 range (returned as inf) at {n_over} of {qt.shape[0]} layers: the "
                      "back-propagated gradient norms grow by chi_1 per layer; reduce weight_var or depth",
                      DivergenceWarning, stacklevel=2)
    return BackwardResult(qtilde1=qt[:, 0, 0].copy(), qtilde1b=qt[:, 1, 1].copy(), qtilde2=qt[:, 0, 1].copy(),
                          forward=fr)
