r"""Monte-Carlo validation of the mean-field theory against random finite-width networks (torch).

Needs torch: ``pip install "meanfield-theory[validation]"`` (or ``pip install torch``). Runs on CUDA when available, else CPU.

* :func:`sample_chain` draws random networks from any layer chain (:mod:`meanfield.layers`: Dense, Nonlinearity,
  Dropout, Residual), each layer replaced by its torch twin; :meth:`ChainEnsemble.order_parameters` measures q,
  q-hat, q-tilde and the NTK per Dense layer.
* :func:`sample_ensemble` draws ``n_seeds`` random networks matching a :class:`meanfield.Network` (standard or NTK
  parameterization, docs/mathematics.md section 1), batched over seeds, float64 or float32.
* :func:`measure_order_parameters` measures q, c, qtilde (Karakida's sums over units) and chi_1 per layer for two
  inputs, and the output covariance (empirical NNGP); :func:`empirical_ntk` contracts Jacobians with ``torch.func``;
  :func:`fisher_statistics` gives the FIM mean eigenvalue, second moment and largest eigenvalue through the dual
  ``C T x C T`` Gram matrix ``J J^T / T``; :func:`train_gd` runs full-batch gradient descent on the MSE loss.
* :func:`normalized_fisher_spectrum` (FIM spectrum with batch / layer normalization in the hidden layers or the
  output mean subtracted, by autograd through the whole batch) and :func:`catapult_scan` (lazy / catapult / divergent
  phases of gradient descent against ``eta lambda_max / 2``): the simulations of :mod:`meanfield.normalization` and
  :mod:`meanfield.learning_rate`.
* :func:`train_ngd` trains by natural gradient with the exact, block-diagonal, K-FAC or unit-wise Fisher matrix (dual
  form; Karakida & Osawa 2020); :func:`track_fisher` trains by gradient descent (MSE or cross-entropy) recording the
  spectra of the NTK, the model FIM and the empirical FIM; :func:`train_gd_cross_entropy` is its cross-entropy view
  with the softmax FIM's largest eigenvalue (Karakida et al. Fig. 5). Theory: :mod:`meanfield.natural_gradient`,
  :mod:`meanfield.softmax_dynamics`, :mod:`meanfield.fisher_dynamics`.
* :data:`CAPABILITIES` (:mod:`~meanfield.validation.capabilities`) registers what is validated, each capability a
  check of :mod:`~meanfield.validation.checks` (``python -m meanfield.validation run --only NAME,...``).
* :func:`run_validation` (``python -m meanfield.validation run``) compares every theory quantity of the library with
  the simulation on a ladder of widths and writes JSON, a markdown report and plots. Its parts: ``theory`` (the
  library's values), ``simulate`` (the random networks), ``fitting`` (records and fits against width), ``report``
  (the driver and the :class:`ValidationReport`).

Numpy only, importable without torch: ``deep_linear`` (sampled deep linear networks) and ``fisher_sim``
(:func:`finite_width_fisher`, the FIM/NTK spectrum of one random network, also ``meanfield.finite_width_fisher``).
"""
import importlib

_TORCH_MESSAGE = ("meanfield.validation needs PyTorch, which is not installed. Install it with "
                  "`pip install \"meanfield-theory[validation]\"` (or `pip install torch`).")

# public name -> submodule; the torch-based submodules load on first use, so that the numpy-only
# ``meanfield.validation.deep_linear`` imports without torch
_LAZY = {
    **dict.fromkeys(["NetworkEnsemble", "TorchActivation", "layer_widths", "resolve_device", "resolve_dtype",
                     "sample_ensemble", "torch_activation"], "networks"),
    **dict.fromkeys(["ChainEnsemble", "TorchDense", "TorchDropout", "TorchNonlinearity", "TorchResidual",
                     "sample_chain"], "networks"),
    **dict.fromkeys(["FisherSample", "OrderParameterSample", "TrainingRun", "empirical_nngp", "empirical_ntk",
                     "fisher_statistics", "gaussian_inputs", "gram_layerwise", "measure_order_parameters",
                     "pair_inputs", "train_gd"], "measure"),
    **dict.fromkeys(["ValidationConfig", "ValidationReport", "default_configs", "run_validation"], "report"),
    **dict.fromkeys(["SpatialEnsemble", "sample_spatial_chain"], "spatial_networks"),
    "haar_orthogonal": "networks",
    **dict.fromkeys(["NGDRun", "train_ngd"], "natural_gradient"),
    **dict.fromkeys(["CrossEntropyRun", "train_gd_cross_entropy"], "softmax_training"),
    **dict.fromkeys(["FisherTrack", "track_fisher"], "fisher_tracking"),
    **dict.fromkeys(["Capability", "CAPABILITIES", "capability_names"], "capabilities"),
    **dict.fromkeys(["CheckContext", "gram_inputs"], "checks"),
    "fit_series": "fitting",
    **dict.fromkeys(["jacobian_eigenvalues", "kernel_eigenvalues", "fisher_eigenvalues",
                     "single_input_fisher_eigenvalues", "ks_distance", "wasserstein_distance"], "spectra_sim"),
    **dict.fromkeys(["FiniteWidthSpectrum", "finite_width_fisher"], "fisher_sim"),
    **dict.fromkeys(["CatapultScan", "catapult_scan"], "catapult"),
    **dict.fromkeys(["NormalizedSpectrum", "normalized_fisher_spectrum"], "normalization_sim"),
}
#: submodules that need only numpy
_NUMPY_ONLY = ("fitting", "fisher_sim")


def __getattr__(name):
    if name in _LAZY:
        if _LAZY[name] not in _NUMPY_ONLY:
            try:
                import torch  # noqa: F401
            except ImportError as exc:
                raise ImportError(_TORCH_MESSAGE) from exc
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CatapultScan",
    "CAPABILITIES",
    "Capability",
    "CheckContext",
    "capability_names",
    "gram_inputs",
    "ChainEnsemble",
    "NormalizedSpectrum",
    "catapult_scan",
    "normalized_fisher_spectrum",
    "CrossEntropyRun",
    "SpatialEnsemble",
    "sample_spatial_chain",
    "haar_orthogonal",
    "FiniteWidthSpectrum",
    "FisherSample",
    "FisherTrack",
    "NetworkEnsemble",
    "NGDRun",
    "OrderParameterSample",
    "TorchActivation",
    "TrainingRun",
    "ValidationConfig",
    "ValidationReport",
    "default_configs",
    "empirical_nngp",
    "empirical_ntk",
    "finite_width_fisher",
    "fisher_statistics",
    "fit_series",
    "gaussian_inputs",
    "gram_layerwise",
    "layer_widths",
    "measure_order_parameters",
    "pair_inputs",
    "resolve_device",
    "resolve_dtype",
    "run_validation",
    "sample_chain",
    "sample_ensemble",
    "torch_activation",
    "train_gd",
    "train_ngd",
    "train_gd_cross_entropy",
    "track_fisher",
]
