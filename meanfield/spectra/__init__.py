"""Spectra of deep random networks from free probability (see docs/spectra.md)."""
from .result import Spectrum
from .jacobian import JacobianSpectrum, jacobian_spectrum

__all__ = ["Spectrum", "JacobianSpectrum", "jacobian_spectrum"]
