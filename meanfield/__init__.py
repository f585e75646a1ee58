"""meanfield: exact, fast infinite-width (mean-field) theory of deep neural networks.

The public API is re-exported here; see the README for a tour.
"""
from ._version import __version__

from ._numba_cache import install as _install_numba_cache

_install_numba_cache(__version__)   # first: numba caches meanfield's kernels per user, not in the package folder

from .activations import ACTIVATIONS, Activation, custom_activation, get_activation
from .backward import BackwardResult, backward
from .errors import ConvergenceWarning, DivergenceWarning, NoCriticalPointWarning, PrecisionWarning
from .forward import (DepthScales, FixedPoint, ForwardResult, c_map_slope, chi1, chi_c, correlation_map,
                      critical_weight_var, cstar, depth_scales, fixed_point, forward, length_map, qstar)
from .network import Network
from .layers import Dense, Dropout, Layer, Nonlinearity, Residual, Serial, serial
from .trace import Trace, TraceStep, trace
from .spatial import AvgPool, Conv, Flatten, GlobalAvgPool, LayerNorm, spatial_kernels, spatial_variances
from .signal import (CNNModes, ResidualPhaseDiagram, ResidualSignal, cnn_mode_depth_scales, residual_phase_diagram,
                     residual_signal)
from .gaussian import gaussian_expectation, gaussian_rule, hermite_coefficients, mehler_terms, pair_expectation
from .kernels import KernelResult, kernels, nngp_diagonal, nngp_kernel, ntk_kernel
from .regression import (GPPosterior, NTKPrediction, gp_posterior, nngp_regression, ntk_condition_number,
                         ntk_gradient_flow, ntk_regression)
from .fisher import FeatureMetricStatistics, FisherStatistics, feature_metric_statistics, fisher_statistics
from .validation.fisher_sim import FiniteWidthSpectrum, finite_width_fisher   # numpy only: no torch needed
from .phase import (CriticalLine, DepthScaleCurve, MapDynamics, PhaseDiagram, critical_line, depth_scale_curve,
                    map_dynamics, phase_diagram)
from .finite_width import FiniteWidthCorrections, finite_width_corrections   # 1/width corrections (RYH 2022)

from .spectra import (JacobianSpectrum, KernelSpectrum, Spectrum, conjugate_kernel_spectrum, fisher_spectrum,
                      jacobian_spectrum, ntk_spectrum, single_input_fisher_spectrum)
from .deep_linear import (BPKRResult, DeepLinearPosteriorResult, DeepLinearPriorResult, bpkr, bpkr_u0,
                          deep_linear_posterior, deep_linear_prior, deep_linear_prior_density, hz_saddle_point,
                          log_meijer_g, meijer_g, nngp_linear_posterior)
from .distributed import (DistributedKernels, DistributedPrediction, KernelSolve, distributed_critical_line,   # dask
                          distributed_depth_scale_curve, distributed_kernels, distributed_map,                 # is
                          distributed_nngp_regression, distributed_ntk_regression, distributed_phase_diagram,  # lazy
                          kernel_solve)

__all__ = [
    "ACTIVATIONS", "Activation", "custom_activation", "get_activation",
    "Network",
    # composable network description and its layer sweep
    "Layer", "Dense", "Nonlinearity", "Dropout", "Residual", "Serial", "serial", "Trace", "TraceStep", "trace",
    # convolutional / pooling / layer-norm layers, their kernels, and signal propagation beyond fully connected
    "Conv", "AvgPool", "GlobalAvgPool", "Flatten", "LayerNorm", "spatial_kernels", "spatial_variances",
    "ResidualSignal", "residual_signal", "ResidualPhaseDiagram", "residual_phase_diagram", "CNNModes",
    "cnn_mode_depth_scales",
    "length_map", "correlation_map", "qstar", "cstar", "chi1", "c_map_slope", "chi_c", "depth_scales", "fixed_point",
    "critical_weight_var", "forward", "backward",
    "DepthScales", "FixedPoint", "ForwardResult", "BackwardResult",
    "gaussian_expectation", "gaussian_rule", "hermite_coefficients", "mehler_terms", "pair_expectation",
    "DivergenceWarning", "ConvergenceWarning", "NoCriticalPointWarning", "PrecisionWarning",
    # kernels and kernel regression
    "KernelResult", "kernels", "nngp_kernel", "ntk_kernel", "nngp_diagonal",
    "GPPosterior", "NTKPrediction", "gp_posterior", "ntk_gradient_flow", "ntk_condition_number", "nngp_regression",
    "ntk_regression",
    # Fisher information
    "FisherStatistics", "FeatureMetricStatistics", "FiniteWidthSpectrum", "fisher_statistics",
    "feature_metric_statistics", "finite_width_fisher",
    # phase diagrams
    "PhaseDiagram", "phase_diagram", "CriticalLine", "critical_line", "DepthScaleCurve", "depth_scale_curve",
    "MapDynamics", "map_dynamics",
    # deep linear networks
    "log_meijer_g", "meijer_g", "DeepLinearPriorResult", "deep_linear_prior", "deep_linear_prior_density",
    "hz_saddle_point", "bpkr_u0", "BPKRResult", "bpkr", "DeepLinearPosteriorResult", "deep_linear_posterior",
    "nngp_linear_posterior",
    # leading 1/width corrections: four-point vertex, kernel correction, output kurtosis, NTK variance
    "FiniteWidthCorrections", "finite_width_corrections",

    # on a dask cluster (optional extra meanfield-theory[dask])
    "DistributedKernels", "distributed_kernels", "KernelSolve", "kernel_solve", "DistributedPrediction",
    "distributed_nngp_regression", "distributed_ntk_regression", "distributed_map", "distributed_phase_diagram",
    "distributed_critical_line", "distributed_depth_scale_curve",

    # spectra (free probability, linear-width random-matrix theory)
    "Spectrum", "JacobianSpectrum", "KernelSpectrum", "jacobian_spectrum", "conjugate_kernel_spectrum", "ntk_spectrum",
    "fisher_spectrum", "single_input_fisher_spectrum",
]

# kernel regression as neural-tangents and scikit-learn users expect it: NTK-GP mean and covariance, kernel derivatives,
# marginal likelihood and its fit, Xiao et al.'s depth metrics (scikit-learn kernels: meanfield.sklearn_kernels)
from .regression import GaussianPrediction, gaussian_prediction, ntk_gp_regression
from .hyperparameters import (KernelDerivatives, MarginalLikelihood, NNGPFit, fit_nngp, kernel_derivatives,
                              nngp_log_marginal_likelihood)
from .trainability import DepthMetrics, depth_metrics, kernels_by_depth

# training dynamics beyond gradient descent on MSE: natural gradient (Karakida & Osawa 2020), cross-entropy in the NTK
# regime with the softmax FIM along training, model vs empirical Fisher along training
from .natural_gradient import NGDDynamics, NGDKernel, layer_ntks, ngd_dynamics, ngd_kernel
from .softmax_dynamics import CrossEntropyDynamics, cross_entropy_ntk_dynamics, softmax_fisher_lambda_max
from .fisher_dynamics import FisherAlongTraining, empirical_fisher_eigenvalues, fisher_along_training

__all__ += ["NGDKernel", "NGDDynamics", "ngd_kernel", "ngd_dynamics", "layer_ntks", "CrossEntropyDynamics",
            "cross_entropy_ntk_dynamics", "softmax_fisher_lambda_max", "FisherAlongTraining", "fisher_along_training",
            "empirical_fisher_eigenvalues"]
__all__ += ["GaussianPrediction", "gaussian_prediction", "ntk_gp_regression", "KernelDerivatives", "kernel_derivatives",
            "MarginalLikelihood", "nngp_log_marginal_likelihood", "NNGPFit", "fit_nngp", "DepthMetrics",
            "depth_metrics", "kernels_by_depth"]
