"""meanfield: exact, fast infinite-width (mean-field) theory of deep neural networks.

The public API is re-exported here; see the README for a tour.
"""
from .activations import ACTIVATIONS, Activation, custom_activation, get_activation
from .backward import BackwardResult, backward
from .errors import ConvergenceWarning, DivergenceWarning, NoCriticalPointWarning
from .forward import (DepthScales, FixedPoint, ForwardResult, chi1, chi_c, correlation_map, critical_weight_var,
                      cstar, depth_scales, fixed_point, forward, length_map, qstar)
from .network import Network
from .quadrature import gaussian_expectation, gaussian_rule, hermite_coefficients, mehler_terms, pair_expectation

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS", "Activation", "custom_activation", "get_activation",
    "Network",
    "length_map", "correlation_map", "qstar", "cstar", "chi1", "chi_c", "depth_scales", "fixed_point",
    "critical_weight_var", "forward", "backward",
    "DepthScales", "FixedPoint", "ForwardResult", "BackwardResult",
    "gaussian_expectation", "gaussian_rule", "hermite_coefficients", "mehler_terms", "pair_expectation",
    "DivergenceWarning", "ConvergenceWarning", "NoCriticalPointWarning",
]
