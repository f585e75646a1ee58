"""Spectra of deep random networks from free probability and random-matrix theory (see docs/spectra.md).

- :func:`jacobian_spectrum`: squared singular values of the input-output Jacobian (Pennington, Schoenholz & Ganguli).
- :func:`conjugate_kernel_spectrum`, :func:`ntk_spectrum`, :func:`fisher_spectrum`: linear-width CK / NTK / FIM bulk
  (Fan & Wang), with Karakida's outlier for non-centred one-hidden-layer networks.
- :func:`single_input_fisher_spectrum`: conditional FIM of one input (Hayase & Karakida).
"""
from .result import Spectrum
from .jacobian import JacobianSpectrum, jacobian_spectrum
from .kernels import KernelSpectrum, conjugate_kernel_spectrum, fisher_spectrum, ntk_spectrum
from .single_input import single_input_fisher_spectrum

__all__ = ["Spectrum", "JacobianSpectrum", "KernelSpectrum", "jacobian_spectrum", "conjugate_kernel_spectrum",
           "ntk_spectrum", "fisher_spectrum", "single_input_fisher_spectrum"]
