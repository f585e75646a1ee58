"""Type aliases of the public signatures (for annotations only; nothing here is used at run time)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    from .activations import Activation
    from .layers import Layer
    from .network import Network

__all__ = ["ArrayLike", "FloatArray", "FloatOrArray", "ActivationLike", "NetworkLike", "Pair"]

#: a float64 array
FloatArray = NDArray[np.float64]
#: a float for scalar arguments, an array of the broadcast shape for array arguments
FloatOrArray = Union[float, NDArray[np.float64]]
#: an activation name ("tanh", "relu", ...) or an :class:`~meanfield.activations.Activation`
ActivationLike = Union[str, "Activation"]
#: a :class:`~meanfield.network.Network` or a layer chain (:class:`~meanfield.layers.Layer`, e.g. ``serial(...)``)
NetworkLike = Union["Network", "Layer"]
#: two arrays
Pair = Tuple[NDArray[np.float64], NDArray[np.float64]]
