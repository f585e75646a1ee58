"""Description of a fully connected network: activation, depth, weight and bias variances, widths, dropout.

Notation (docs/mathematics.md section 1): ``depth`` hidden layers and a linear readout, so ``L = depth + 1`` weight layers;
``weight_var = sigma_w^2`` and ``bias_var = sigma_b^2`` are variances, per weight layer if given as sequences.
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from .layers import Serial

from dataclasses import dataclass, field
from typing import Sequence, Union

import numpy as np

from ._checks import check_in_range, check_int, check_nonneg, check_positive
from .activations import Activation, get_activation

__all__ = ["Network", "MAX_DEPTH"]

#: largest ``depth`` accepted (forward/backward cost grows linearly with depth; the signal-propagation depth scales
#: are at most a few hundred layers away from criticality)
MAX_DEPTH = 10_000


def _per_layer(name: str, value, n: int, check) -> tuple:
    if isinstance(value, (list, tuple, np.ndarray)):
        vals = list(np.asarray(value, dtype=object).ravel()) if isinstance(value, np.ndarray) else list(value)
        if len(vals) != n:
            raise ValueError(f"{name} must be a number or a sequence of length {n}, got length {len(vals)}")
        return tuple(float(check(f"{name}[{i}]", v)) for i, v in enumerate(vals))
    return (float(check(name, value)),) * n


@dataclass(frozen=True)
class Network:
    """A fully connected network at initialization (infinite-width description).

    Parameters
    ----------
    activation : str, Activation or sequence
        Activation of the hidden layers; a sequence of length ``depth`` gives one per hidden layer.
    depth : int
        Number of hidden layers, ``1 <= depth <= MAX_DEPTH`` (10000); the network has ``L = depth + 1`` weight
        layers, the last a linear readout.
    weight_var, bias_var : float or sequence
        sigma_w^2 and sigma_b^2 (variances, >= 0); a sequence of length ``L`` gives one per weight layer, readout
        last. Weights are ``N(0, weight_var / fan_in)``.
    width_ratios : sequence of float, optional
        ``(alpha_0, ..., alpha_depth)`` with ``alpha_l = M_l / M`` (``alpha_0`` the input dimension over M). Default all 1.
    dropout_keep : float
        Keep probability rho in (0, 1] of (inverted) dropout on the hidden post-activations.
    activation_params : dict
        Parameters for named activations (``slope`` of leaky_relu, ``alpha`` of elu).

    Examples
    --------
    >>> from meanfield import Network
    >>> net = Network("tanh", depth=5, weight_var=1.5, bias_var=0.05)
    >>> net.n_layers, net.weight_vars[-1]
    (6, 1.5)
    """

    activation: Union[str, Activation, Sequence] = "tanh"
    depth: int = 3
    weight_var: Union[float, Sequence[float]] = 1.0
    bias_var: Union[float, Sequence[float]] = 0.0
    width_ratios: Union[None, Sequence[float]] = None
    dropout_keep: float = 1.0
    activation_params: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        depth = check_int("depth", self.depth, 1)
        if depth > MAX_DEPTH:
            raise ValueError(f"depth must be an integer in [1, {MAX_DEPTH}] (MAX_DEPTH), got {depth}")
        L = depth + 1
        object.__setattr__(self, "_weight_vars", _per_layer("weight_var", self.weight_var, L, check_nonneg))
        object.__setattr__(self, "_bias_vars", _per_layer("bias_var", self.bias_var, L, check_nonneg))
        if isinstance(self.activation, (list, tuple)):
            if len(self.activation) != depth:
                raise ValueError(f"activation must be one activation or a sequence of length depth={depth}, "
                                 f"got length {len(self.activation)}")
            acts = tuple(get_activation(a, **self.activation_params) if isinstance(a, str) else get_activation(a)
                         for a in self.activation)
        else:
            a = self.activation
            act = get_activation(a, **self.activation_params) if isinstance(a, str) else get_activation(a)
            acts = (act,) * depth
        object.__setattr__(self, "_activations", acts)
        if self.width_ratios is None:
            alphas = (1.0,) * (depth + 1)
        else:
            if not isinstance(self.width_ratios, (list, tuple, np.ndarray)):
                raise TypeError(f"width_ratios must be None or a sequence of {depth + 1} positive numbers, "
                                f"got {self.width_ratios!r}")
            alphas = _per_layer("width_ratios", list(self.width_ratios), depth + 1, check_positive)
        object.__setattr__(self, "_alphas", alphas)
        if np.ndim(self.dropout_keep) != 0:
            raise ValueError(f"dropout_keep must be a single number in (0, 1], got {self.dropout_keep!r}")
        check_in_range("dropout_keep", self.dropout_keep, 0.0, 1.0, lo_open=True)

    @property
    def n_layers(self) -> int:
        """L = depth + 1 weight layers."""
        return self.depth + 1

    @property
    def weight_vars(self) -> tuple:
        """sigma_{w,l}^2 for l = 1..L (readout last)."""
        return self._weight_vars

    @property
    def bias_vars(self) -> tuple:
        """sigma_{b,l}^2 for l = 1..L (readout last)."""
        return self._bias_vars

    @property
    def activations(self) -> tuple:
        """Activation of hidden layers 1..depth."""
        return self._activations

    @property
    def alphas(self) -> tuple:
        """Width ratios alpha_0 .. alpha_depth."""
        return self._alphas

    @property
    def is_homogeneous(self) -> bool:
        """True if every layer has the same activation, weight_var and bias_var."""
        return (len(set(self._weight_vars)) == 1 and len(set(self._bias_vars)) == 1
                and len(set(self._activations)) == 1)

    def to_layers(self) -> Serial:
        """The equivalent layer chain (:mod:`meanfield.layers`): ``Dense(w_1, b_1), Nonlinearity(phi_1), [Dropout],
        ..., Dense(w_L, b_L)``, with ``width_ratio = alpha_l`` and ``input_ratio = alpha_0``.

        Examples
        --------
        >>> [type(l).__name__ for l in Network("relu", depth=1, dropout_keep=0.5).to_layers()]
        ['Dense', 'Nonlinearity', 'Dropout', 'Dense']
        """
        from .layers import Dense, Dropout, Nonlinearity, Serial

        layers = []
        for l in range(self.depth):
            layers.append(Dense(self._weight_vars[l], self._bias_vars[l], self._alphas[l + 1]))
            layers.append(Nonlinearity(self._activations[l]))
            if self.dropout_keep < 1.0:
                layers.append(Dropout(float(self.dropout_keep)))
        layers.append(Dense(self._weight_vars[-1], self._bias_vars[-1]))
        return Serial(tuple(layers), self._alphas[0])

    def to_dict(self) -> dict:
        return {
            "activation": [a.name for a in self._activations],
            "activation_params": [list(a.params) for a in self._activations],
            "depth": self.depth,
            "weight_var": list(self._weight_vars),
            "bias_var": list(self._bias_vars),
            "width_ratios": list(self._alphas),
            "dropout_keep": float(self.dropout_keep),
        }
