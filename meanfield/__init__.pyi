"""Type stub of meanfield's public API: what ``meanfield/__init__.py`` loads lazily on first access.

This file is the one list of the public names: the package reads it at import time to know which module holds
each name, and type checkers read it for the types.
"""
from ._version import __version__ as __version__

from .activations import (ACTIVATIONS as ACTIVATIONS, Activation as Activation,
    custom_activation as custom_activation, get_activation as get_activation)
from .network import (Network as Network)
from .layers import (Layer as Layer, Dense as Dense, Nonlinearity as Nonlinearity, Dropout as Dropout,
    Residual as Residual, Serial as Serial, serial as serial)
from .trace import (Trace as Trace, TraceStep as TraceStep, trace as trace)
from .spatial import (Conv as Conv, AvgPool as AvgPool, GlobalAvgPool as GlobalAvgPool, Flatten as Flatten,
    LayerNorm as LayerNorm, spatial_kernels as spatial_kernels, spatial_variances as spatial_variances,
    spatial_trace as spatial_trace, SpatialTrace as SpatialTrace)
from .signal import (ResidualSignal as ResidualSignal, residual_signal as residual_signal,
    ResidualPhaseDiagram as ResidualPhaseDiagram, residual_phase_diagram as residual_phase_diagram,
    CNNModes as CNNModes, cnn_mode_depth_scales as cnn_mode_depth_scales)
from .forward import (length_map as length_map, correlation_map as correlation_map, qstar as qstar, cstar as cstar,
    chi1 as chi1, c_map_slope as c_map_slope, chi_c as chi_c, depth_scales as depth_scales,
    fixed_point as fixed_point, critical_weight_var as critical_weight_var, forward as forward,
    DepthScales as DepthScales, FixedPoint as FixedPoint, ForwardResult as ForwardResult)
from .backward import (backward as backward, BackwardResult as BackwardResult)
from .gaussian import (gaussian_expectation as gaussian_expectation, gaussian_rule as gaussian_rule,
    hermite_coefficients as hermite_coefficients, mehler_terms as mehler_terms, pair_expectation as pair_expectation)
from .errors import (DivergenceWarning as DivergenceWarning, ConvergenceWarning as ConvergenceWarning,
    NoCriticalPointWarning as NoCriticalPointWarning, PrecisionWarning as PrecisionWarning)
from .kernels import (KernelResult as KernelResult, kernels as kernels, nngp_kernel as nngp_kernel,
    ntk_kernel as ntk_kernel, nngp_diagonal as nngp_diagonal)
from .regression import (GPPosterior as GPPosterior, NTKPrediction as NTKPrediction, gp_posterior as gp_posterior,
    ntk_gradient_flow as ntk_gradient_flow, ntk_condition_number as ntk_condition_number,
    nngp_regression as nngp_regression, ntk_regression as ntk_regression, GaussianPrediction as GaussianPrediction,
    gaussian_prediction as gaussian_prediction, ntk_gp_regression as ntk_gp_regression)
from .fisher import (FisherStatistics as FisherStatistics, FeatureMetricStatistics as FeatureMetricStatistics,
    fisher_statistics as fisher_statistics, feature_metric_statistics as feature_metric_statistics,
    spatial_fisher_statistics as spatial_fisher_statistics, SpatialFisherStatistics as SpatialFisherStatistics)
from .validation.fisher_sim import (FiniteWidthSpectrum as FiniteWidthSpectrum,
    finite_width_fisher as finite_width_fisher)
from .normalization import (BatchNormBound as BatchNormBound, batch_norm_lambda_max_bound as batch_norm_lambda_max_bound,
    layer_norm_fisher_statistics as layer_norm_fisher_statistics)
from .learning_rate import (LearningRateThresholds as LearningRateThresholds,
    learning_rate_thresholds as learning_rate_thresholds)
from .phase import (PhaseDiagram as PhaseDiagram, phase_diagram as phase_diagram, CriticalLine as CriticalLine,
    critical_line as critical_line, DepthScaleCurve as DepthScaleCurve, depth_scale_curve as depth_scale_curve,
    MapDynamics as MapDynamics, map_dynamics as map_dynamics)
from .deep_linear import (log_meijer_g as log_meijer_g, meijer_g as meijer_g,
    DeepLinearPriorResult as DeepLinearPriorResult, deep_linear_prior as deep_linear_prior,
    deep_linear_prior_density as deep_linear_prior_density, hz_saddle_point as hz_saddle_point, bpkr_u0 as bpkr_u0,
    BPKRResult as BPKRResult, bpkr as bpkr, DeepLinearPosteriorResult as DeepLinearPosteriorResult,
    deep_linear_posterior as deep_linear_posterior, nngp_linear_posterior as nngp_linear_posterior)
from .finite_width import (FiniteWidthCorrections as FiniteWidthCorrections,
    finite_width_corrections as finite_width_corrections)
from .distributed import (DistributedKernels as DistributedKernels, distributed_kernels as distributed_kernels,
    KernelSolve as KernelSolve, kernel_solve as kernel_solve, DistributedPrediction as DistributedPrediction,
    distributed_nngp_regression as distributed_nngp_regression,
    distributed_ntk_regression as distributed_ntk_regression, distributed_map as distributed_map,
    distributed_phase_diagram as distributed_phase_diagram, distributed_critical_line as distributed_critical_line,
    distributed_depth_scale_curve as distributed_depth_scale_curve)
from .spectra import (Spectrum as Spectrum, JacobianSpectrum as JacobianSpectrum, KernelSpectrum as KernelSpectrum,
    jacobian_spectrum as jacobian_spectrum, conjugate_kernel_spectrum as conjugate_kernel_spectrum,
    ntk_spectrum as ntk_spectrum, fisher_spectrum as fisher_spectrum,
    single_input_fisher_spectrum as single_input_fisher_spectrum)
from .hyperparameters import (KernelDerivatives as KernelDerivatives, kernel_derivatives as kernel_derivatives,
    MarginalLikelihood as MarginalLikelihood, nngp_log_marginal_likelihood as nngp_log_marginal_likelihood,
    NNGPFit as NNGPFit, fit_nngp as fit_nngp)
from .trainability import (DepthMetrics as DepthMetrics, depth_metrics as depth_metrics,
    kernels_by_depth as kernels_by_depth)

from .natural_gradient import (NGDKernel as NGDKernel, NGDDynamics as NGDDynamics, ngd_kernel as ngd_kernel,
    ngd_dynamics as ngd_dynamics, layer_ntks as layer_ntks)
from .softmax_dynamics import (CrossEntropyDynamics as CrossEntropyDynamics,
    cross_entropy_ntk_dynamics as cross_entropy_ntk_dynamics, softmax_fisher_lambda_max as softmax_fisher_lambda_max)
from .fisher_dynamics import (FisherAlongTraining as FisherAlongTraining, fisher_along_training as fisher_along_training,
    empirical_fisher_eigenvalues as empirical_fisher_eigenvalues)
