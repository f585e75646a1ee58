r"""Composable description of a network at infinite width: layers, each carrying its kernel rule (docs/mathematics.md
section 8).

In the spirit of neural-tangents ``stax``: a network is a chain of layer objects built with :func:`serial`, and one
state flows through it. The state of a data set of ``N`` inputs is

* per input, the variance ``q(x, x)`` of the current signal (the *row* state, shape ``(N,)``);
* per pair, the covariance ``Q(x, x')`` of the signal and the neural tangent kernel ``Theta(x, x')`` of the signal
  with respect to all parameters upstream (the *tile* state, computed tile by tile);
* backwards, Karakida's back-propagated overlap ``qtilde(x, x') = sum_i delta_i(x) delta_i(x')`` (sums over units, so
  independent of the width), ``delta_i = d f / d s_i`` for one output unit ``f`` and the signal ``s`` at that point.

Each layer gives the rule for each of the three (``_row``, ``_tile``, ``_back``); the sweep of
:mod:`meanfield.trace` runs them. The layer rules are (``w`` = weight_var, ``b`` = bias_var):

==================  ===============================  ====================================  ==========================
layer               covariance ``Q``                 NTK ``Theta``                         ``qtilde`` backward
==================  ===============================  ====================================  ==========================
Dense(w, b)         ``w Q + b``                      ``w Theta + (w Q + b)`` (NTK param.)  ``w qtilde``
                                                     ``w Theta + (M_in Q + 1)`` (standard)
Nonlinearity(phi)   ``E[phi(u) phi(v)]``             ``E[phi'(u) phi'(v)] Theta``          ``E[phi'(u)phi'(v)] qtilde``
Dropout(rho)        ``Q``; same input ``Q / rho``    ``Theta``; same input ``Theta / rho``  ``qtilde``; same input
                                                                                           ``qtilde / rho``
Residual(g, a)      ``Q + a^2 Q_g``                  ``Theta + a^2 Theta_g``               ``qtilde + a^2 g^T(qtilde)``
==================  ===============================  ====================================  ==========================

``(u, v)`` is centred Gaussian with covariance ``[[Q(x,x), Q(x,x')], [Q(x,x'), Q(x',x')]]``; ``Q_g, Theta_g`` are the
block's own output started from ``(Q, Theta)``; ``g^T`` is the block's backward rule. The cross terms between the skip
and the block vanish at infinite width because the block ends in a Dense layer of fresh zero-mean weights.

Examples
--------
>>> from meanfield.layers import Dense, Nonlinearity, Residual, serial
>>> net = serial(Dense(2.0), Residual(serial(Nonlinearity("relu"), Dense(2.0)), alpha=0.5), Dense(1.0))
>>> len(net), net.n_dense
(3, 3)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import numpy as np

from ._checks import check_in_range, check_nonneg, check_positive
from .activations import Activation, get_activation

__all__ = ["Layer", "Dense", "Nonlinearity", "Dropout", "Residual", "Serial", "serial"]


def _pair_plan(act: Activation, q: np.ndarray, want_dot: bool, rtol: float):
    """The per-row pair plan of an activation (the one import site of the expectation engine).

    Returns an object with ``E2`` = E[phi(u)^2], ``D2`` = E[phi'(u)^2] per row (``u ~ N(0, q_i)``), and
    ``pairs(Q, ri, rj) -> (qhat, qdot or None)`` on a tile of pair covariances.
    """
    from .gaussian import PairPlan

    return PairPlan(act, q, want_dot, rtol)


def _scalar(name, value, check):
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a single number, got {value!r}")
    return float(check(name, value))


class Layer:
    """Base of the layers: each implements the row, tile and backward rules used by :mod:`meanfield.trace`."""

    def _row(self, node, q):   # pragma: no cover - abstract
        raise NotImplementedError

    # forward-mode derivatives (meanfield.hyperparameters): tangents carry a leading axis over the chain's
    # parameters (weight_var, bias_var of each Dense layer, in chain order); ``_row_tangent`` is the derivative of
    # ``_row``, ``_tile_tangent`` runs ``_tile`` and its derivative ``_tangent`` together
    def _row_tangent(self, node, q, dq):   # pragma: no cover - abstract
        raise NotImplementedError

    def _tile_tangent(self, node, Q, T, dQ, dT, ri, rj, diag, standard):
        Qo, To, aux = self._tile(node, Q, T, ri, rj, diag, standard)
        dQo, dTo = self._tangent(node, Q, T, Qo, To, aux, dQ, dT, ri, rj, diag, standard)
        return Qo, To, aux, dQo, dTo

    def to_dict(self) -> dict:   # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Dense(Layer):
    r"""Fully connected layer ``s_out = W s_in + b`` with ``W_ij ~ N(0, weight_var / fan_in)``, ``b_i ~ N(0, bias_var)``.

    Rules: ``Q_out = weight_var Q_in + bias_var``; NTK parameterization ``Theta_out = weight_var Theta_in + Q_out``,
    standard parameterization ``Theta_out = weight_var Theta_in + (M_in Q_in + 1)`` (``M_in`` the fan-in width);
    backward ``qtilde_in = weight_var qtilde_out``.

    Parameters
    ----------
    weight_var : float
        sigma_w^2 >= 0.
    bias_var : float
        sigma_b^2 >= 0.
    width_ratio : float
        Output width over M (> 0): Karakida's ``alpha_l = M_l / M``. Ignored for the last Dense layer of a chain
        (the readout), whose output count is ``C = n_outputs``.
    orthogonal : bool
        Haar-orthogonal weights ``sqrt(weight_var / fan_in) sqrt(max(fan_in, fan_out)) O`` in the finite-width twins
        (Saxe et al. 2014, Pennington et al. 2017). The infinite-width rules above are unchanged (the forward order
        parameters of orthogonal and Gaussian weights agree as M -> infinity); only the spectra at finite width differ.

    Examples
    --------
    >>> Dense(1.5, 0.1)
    Dense(weight_var=1.5, bias_var=0.1, width_ratio=1.0)
    """

    weight_var: float = 1.0
    bias_var: float = 0.0
    width_ratio: float = 1.0
    orthogonal: bool = field(default=False, repr=False)
    _fresh_weights = True     # (class attribute) ends a residual block: zero-mean output, no skip/block cross term

    def __post_init__(self):
        object.__setattr__(self, "weight_var", _scalar("weight_var", self.weight_var, check_nonneg))
        object.__setattr__(self, "bias_var", _scalar("bias_var", self.bias_var, check_nonneg))
        object.__setattr__(self, "width_ratio", _scalar("width_ratio", self.width_ratio, check_positive))
        if not isinstance(self.orthogonal, (bool, np.bool_)):
            raise TypeError(f"orthogonal must be True or False, got {self.orthogonal!r}")
        object.__setattr__(self, "orthogonal", bool(self.orthogonal))

    def _row(self, node, q):
        return self.weight_var * q + self.bias_var

    def _tile(self, node, Q, T, ri, rj, diag, standard, record=None):
        Qo = self.weight_var * Q
        Qo += self.bias_var
        if T is None:
            return Qo, None, None
        direct = node.fan_in * Q + 1.0 if standard else Qo
        if np.ndim(T) == 0:
            return Qo, direct + self.weight_var * T, None
        To = self.weight_var * T
        To += direct
        return Qo, To, None

    def _back(self, node, Qt, aux, diag, record=None):
        return self.weight_var * Qt

    def _row_tangent(self, node, q, dq):
        out = self.weight_var * dq
        out[2 * node.param] += q             # d/d weight_var
        out[2 * node.param + 1] += 1.0       # d/d bias_var
        return out

    def _tangent(self, node, Q, T, Qo, To, aux, dQ, dT, ri, rj, diag, standard):
        k = node.param
        dQo = self.weight_var * dQ
        dQo[2 * k] += Q
        dQo[2 * k + 1] += 1.0
        if dT is None:
            return dQo, None
        dTo = self.weight_var * dT
        dTo += node.fan_in * dQ if standard else dQo
        dTo[2 * k] += T
        return dQo, dTo

    def to_dict(self) -> dict:
        return {"layer": "Dense", "weight_var": self.weight_var, "bias_var": self.bias_var,
                "width_ratio": self.width_ratio, "orthogonal": self.orthogonal}


@dataclass(frozen=True)
class Nonlinearity(Layer):
    r"""Elementwise activation ``s_out = phi(s_in)``.

    Rules, with ``(u, v)`` centred Gaussian of covariance ``[[Q(x,x), Q(x,x')], [Q(x,x'), Q(x',x')]]``:
    ``Q_out = qhat = E[phi(u) phi(v)]``, ``Theta_out = qdot Theta_in`` with ``qdot = E[phi'(u) phi'(v)]``,
    backward ``qtilde_in = qdot qtilde_out``. The expectations come from the expectation engine (closed forms,
    Mehler series or nested quadrature, chosen per activation).

    Parameters
    ----------
    activation : str or Activation
        A name of :data:`meanfield.ACTIVATIONS` or an :class:`~meanfield.Activation` (e.g. a custom one).
    params : dict, optional
        Parameters of a named activation (``slope`` of leaky_relu, ``alpha`` of elu).

    Examples
    --------
    >>> Nonlinearity("leaky_relu", {"slope": 0.2}).activation.params[0]
    0.2
    """

    activation: Union[str, Activation] = "tanh"
    params: dict = field(default=None, compare=False, hash=False, repr=False)

    def __post_init__(self):
        p = {} if self.params is None else self.params
        if not isinstance(p, dict):
            raise TypeError(f"params must be a dict of activation parameters, got {type(p).__name__}")
        a = self.activation
        act = get_activation(a, **p) if isinstance(a, str) else get_activation(a)
        if p and not isinstance(a, str):
            raise ValueError("params cannot be given together with an Activation object")
        object.__setattr__(self, "activation", act)

    def _row(self, node, q):
        node.plan = _pair_plan(self.activation, q, node.want_dot, node.rtol)
        return np.asarray(node.plan.E2, dtype=np.float64)

    def _tile(self, node, Q, T, ri, rj, diag, standard, record=None):
        qhat, qdot = node.plan.pairs(Q, ri, rj)
        if diag:
            if qdot is not None:
                np.fill_diagonal(qdot, node.plan.D2[ri])
        return qhat, (None if T is None else qdot * T), qdot

    def _back(self, node, Qt, aux, diag, record=None):
        return aux * Qt

    def _row_tangent(self, node, q, dq):
        node.slopes = node.plan.row_slopes()
        return node.slopes[0] * dq

    def _tangent(self, node, Q, T, Qo, To, aux, dQ, dT, ri, rj, diag, standard):
        # Price's theorem: d qhat = qdot dQ + (d qhat/dq_i) dq_i + (d qhat/dq_j) dq_j; likewise for qdot
        dqi, dqj = node.dq_in[:, ri][:, :, None], node.dq_in[:, rj][:, None, :]
        a_i, a_j, bQ, b_i, b_j = node.plan.partials(Q, ri, rj, Qo, aux, dT is not None)
        dQo = aux * dQ + a_i * dqi + a_j * dqj
        dTo = None
        if dT is not None:
            dTo = aux * dT + T * (bQ * dQ + b_i * dqi + b_j * dqj)
        if diag:
            idx = np.arange(len(ri))
            dE2, dD2 = node.slopes
            dQo[:, idx, idx] = dE2[ri] * node.dq_in[:, ri]
            if dT is not None:
                Tii = np.diagonal(T) if np.ndim(T) == 2 else T
                dTo[:, idx, idx] = node.plan.D2[ri] * dT[:, idx, idx] + Tii * dD2[ri] * node.dq_in[:, ri]
        return dQo, dTo

    def to_dict(self) -> dict:
        return {"layer": "Nonlinearity", "activation": self.activation.name,
                "params": list(self.activation.params)}


@dataclass(frozen=True)
class Dropout(Layer):
    r"""Inverted dropout ``s_out = m s_in / keep`` with ``m ~ Bernoulli(keep)`` drawn per unit and per input.

    Rules: same-input variance ``q_out = q_in / keep`` (``E[(m/keep)^2] = 1/keep``), cross-input covariance unchanged
    (independent masks); the NTK likewise ``Theta_in / keep`` on the same input, unchanged across inputs (the
    infinite-width limit of the tangent kernel with one mask per input: ``sum_i m_i m'_i / keep^2`` over units
    concentrates on ``E[m m'] / keep^2``, 1 for independent masks, ``1 / keep`` for the same mask); backward likewise
    ``qtilde_out / keep`` on the same input, unchanged across inputs.

    Parameters
    ----------
    keep : float
        Keep probability rho in (0, 1].

    Examples
    --------
    >>> Dropout(0.8).keep
    0.8
    """

    keep: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "keep", _scalar("keep", self.keep,
                                                 lambda n, v: check_in_range(n, v, 0.0, 1.0, lo_open=True)))

    def _row(self, node, q):
        return q / self.keep

    def _tile(self, node, Q, T, ri, rj, diag, standard, record=None):
        # the same-input entries (one mask) are set from the row pass by the sweep (Q) or scaled here (Theta)
        if T is not None and diag and self.keep < 1.0 and np.ndim(T) == 2:
            T = T.copy()
            np.fill_diagonal(T, np.diagonal(T) / self.keep)
        return (Q.copy() if diag else Q), T, None

    def _row_tangent(self, node, q, dq):
        return dq / self.keep

    def _tangent(self, node, Q, T, Qo, To, aux, dQ, dT, ri, rj, diag, standard):
        dQo = dQ.copy()
        dTo = None if dT is None else dT.copy()
        if diag and self.keep < 1.0:
            idx = np.arange(len(ri))
            dQo[:, idx, idx] /= self.keep
            if dTo is not None:
                dTo[:, idx, idx] /= self.keep
        return dQo, dTo

    def _back(self, node, Qt, aux, diag, record=None):
        if not diag or self.keep == 1.0:
            return Qt
        out = Qt.copy()
        np.fill_diagonal(out, np.diagonal(Qt) / self.keep)
        return out

    def to_dict(self) -> dict:
        return {"layer": "Dropout", "keep": self.keep}


@dataclass(frozen=True)
class Serial(Layer):
    """A chain of layers applied in order (build it with :func:`serial`; nested chains are flattened).

    Attributes
    ----------
    layers : tuple of Layer
    input_ratio : float
        Input dimension over M (Karakida's ``alpha_0``); enters the Fisher statistics and the finite-width twins.

    Examples
    --------
    >>> from meanfield.layers import Dense, Nonlinearity, serial
    >>> net = serial(Dense(1.5), Nonlinearity("tanh"), Dense(1.5))
    >>> [type(l).__name__ for l in net]
    ['Dense', 'Nonlinearity', 'Dense']
    """

    layers: tuple = ()
    input_ratio: float = 1.0

    def __post_init__(self):
        flat = []
        for lay in self.layers:
            if isinstance(lay, Serial):
                flat.extend(lay.layers)
            elif isinstance(lay, Layer):
                flat.append(lay)
            else:
                raise TypeError(f"layers must be meanfield.layers objects (Dense, Nonlinearity, Dropout, Residual, "
                                f"Serial), got {type(lay).__name__}")
        object.__setattr__(self, "layers", tuple(flat))
        object.__setattr__(self, "input_ratio", _scalar("input_ratio", self.input_ratio, check_positive))

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    @property
    def n_dense(self) -> int:
        """Number of Dense layers, those inside residual blocks included."""
        return sum(l.block.n_dense if isinstance(l, Residual) else isinstance(l, Dense) for l in self.layers)

    def to_dict(self) -> dict:
        return {"layer": "Serial", "input_ratio": self.input_ratio, "layers": [l.to_dict() for l in self.layers]}


def serial(*layers: Layer, input_ratio: float = 1.0) -> Serial:
    """Chain ``layers`` in order (nested :class:`Serial` chains are flattened).

    Parameters
    ----------
    *layers : Layer
    input_ratio : float
        Input dimension over M (``alpha_0``), used by the Fisher statistics and the finite-width twins.

    Examples
    --------
    >>> from meanfield.layers import Dense, Nonlinearity, serial
    >>> len(serial(Dense(1.0), serial(Nonlinearity("relu"), Dense(2.0))))
    3
    """
    if len(layers) == 0:
        raise ValueError("layers must contain at least one layer")
    return Serial(tuple(layers), input_ratio)


@dataclass(frozen=True)
class Residual(Layer):
    r"""Residual connection ``s_out = s_in + alpha g(s_in)`` around a block ``g`` of fresh weights.

    At infinite width the skip and the block are uncorrelated (the block ends in a Dense layer with zero-mean weights),
    so ``Q_out = Q_in + alpha^2 Q_g``, ``Theta_out = Theta_in + alpha^2 Theta_g`` (``Q_g``, ``Theta_g`` the block's
    output started from ``Q_in``, ``Theta_in``) and backward ``qtilde_in = qtilde_out + alpha^2 g^T(qtilde_out)``.

    Parameters
    ----------
    block : Layer or Serial
        The residual branch; its last layer must be Dense, and its output width ratio must equal its input's.
    alpha : float
        Branch scale (finite, may be 0 or negative; only alpha^2 enters).

    Examples
    --------
    >>> from meanfield.layers import Dense, Nonlinearity, serial
    >>> Residual(serial(Nonlinearity("relu"), Dense(2.0)), alpha=0.5).alpha
    0.5
    """

    block: Layer = None
    alpha: float = 1.0

    def __post_init__(self):
        blk = self.block
        if isinstance(blk, Layer) and not isinstance(blk, Serial):
            blk = Serial((blk,))
        if not isinstance(blk, Serial):
            raise TypeError(f"block must be a layer or a serial chain, got {type(self.block).__name__}")
        if not getattr(blk.layers[-1], "_fresh_weights", False) if len(blk) else True:
            raise ValueError("block must end with a Dense or Conv layer (its zero-mean output makes the skip/block "
                             "cross terms vanish)")
        object.__setattr__(self, "block", blk)
        if np.ndim(self.alpha) != 0 or not np.isfinite(float(self.alpha)) or isinstance(self.alpha, bool):
            raise ValueError(f"alpha must be a finite number, got {self.alpha!r}")
        object.__setattr__(self, "alpha", float(self.alpha))

    def _row(self, node, q):
        from .trace import _compile

        node.sub, qb, ratio, _ = _compile(self.block.layers, q, node.ctx, node.fan_in_ratio, node.fan_in,
                                          node.path + ".block")
        if ratio != node.fan_in_ratio:
            raise ValueError(f"Residual block at {node.path} changes the width ratio from {node.fan_in_ratio:g} to "
                             f"{ratio:g}: its last Dense layer must have width_ratio={node.fan_in_ratio:g}")
        return q + (self.alpha * self.alpha) * qb

    def _tile(self, node, Q, T, ri, rj, diag, standard, record=None):
        from .trace import _tile_forward

        Qb, Tb, aux = _tile_forward(node.sub, Q, T, ri, rj, diag, standard, record)
        a2 = self.alpha * self.alpha
        return Q + a2 * Qb, (None if T is None else T + a2 * Tb), aux

    def _back(self, node, Qt, aux, diag, record=None):
        from .trace import _tile_backward

        # the block's output carries alpha g: its overlaps are alpha^2 qtilde_out (recorded so inside the block)
        return Qt + _tile_backward(node.sub, (self.alpha * self.alpha) * Qt, aux, diag, record)

    def _row_tangent(self, node, q, dq):
        from .trace import _row_tangents

        return dq + (self.alpha * self.alpha) * _row_tangents(node.sub, q, dq)

    def _tile_tangent(self, node, Q, T, dQ, dT, ri, rj, diag, standard):
        from .trace import _tile_tangent

        Qb, Tb, dQb, dTb, aux = _tile_tangent(node.sub, Q, T, dQ, dT, ri, rj, diag, standard)
        a2 = self.alpha * self.alpha
        return (Q + a2 * Qb, (None if T is None else T + a2 * Tb), aux, dQ + a2 * dQb,
                (None if dT is None else dT + a2 * dTb))

    def to_dict(self) -> dict:
        return {"layer": "Residual", "alpha": self.alpha, "block": self.block.to_dict()}
