"""Result objects of the spectral theory: a density on a grid, atoms, moments and edges."""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from typing import Any, Optional

    from matplotlib.axes import Axes

    from .._typing import ArrayLike, FloatOrArray

from dataclasses import asdict, dataclass, field, fields

import numpy as np


def _jsonable(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


@dataclass(frozen=True)
class Spectrum:
    r"""Limiting eigenvalue distribution ``mu = rho(x) dx + sum_j m_j delta(x - a_j)``.

    Attributes
    ----------
    kind : str
        What the eigenvalues are of (``"jacobian"``, ``"conjugate_kernel"``, ``"ntk"``, ``"fisher"``,
        ``"single_input_fisher"``).
    x : ndarray
        Grid (ascending) on which the density of the continuous part is given.
    density : ndarray
        rho(x) on ``x``.
    weights : ndarray
        Quadrature weights on ``x`` for integrals against the continuous part, ``int f rho dx ~ sum(weights f rho)``
        (trapezoid or midpoint rule in the grid's own variable, which clusters points at the edges).
    atoms : tuple of (location, mass)
        Point masses.
    moments : ndarray
        ``m_k = int x^k dmu``, k = 1..len(moments), from the series / contour route (not from ``density``).
    edges : tuple of float
        ``(lower, upper)`` ends of the support of the continuous part.
    error_estimate : float
        Estimated absolute error of ``density`` (sup over the grid), see ``method``.
    method : str
        Numerical method and its error control, in words.
    parameters : dict
        The inputs (and derived scalars such as q*, chi_1) the spectrum was computed for.
    """

    kind: str
    x: np.ndarray
    density: np.ndarray
    weights: np.ndarray
    atoms: tuple
    moments: np.ndarray
    edges: tuple
    error_estimate: float
    method: str
    parameters: dict

    @property
    def mass(self) -> float:
        """Total mass of the continuous part on the grid plus the atoms (1 up to the discretisation error)."""
        return float(np.sum(self.weights * self.density) + sum(m for _, m in self.atoms))

    def moment_from_density(self, k: int) -> float:
        """``int x^k dmu`` from the density on the grid and the atoms (an independent check of ``moments``)."""
        return float(np.sum(self.weights * self.density * self.x ** k) + sum(m * a ** k for a, m in self.atoms))

    def cdf(self, x: ArrayLike) -> FloatOrArray:
        """Cumulative distribution function at ``x``: atoms at or below x plus the integral of the density (its
        quadrature weights accumulated, linearly interpolated between grid points)."""
        x = np.asarray(x, dtype=float)
        c = np.cumsum(self.weights * self.density)
        F = np.interp(x, self.x, c, left=0.0, right=c[-1] if len(c) else 0.0)
        tol = 1e-9 * max([abs(self.edges[1])] + [abs(a) for a, _ in self.atoms] + [1e-300])
        for a, m in self.atoms:   # an atom counts from a - tol: rounding puts exact eigenvalues a hair either side
            F = F + m * (x >= a - tol)
        return np.clip(F, 0.0, 1.0)

    def to_dict(self) -> dict:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    def plot(self, ax: Optional[Axes] = None, *, label: Optional[str] = None, atoms: bool = True,
             **kwargs: Any) -> Axes:
        """Density against x (atoms as vertical markers with their mass); returns the Axes."""
        from ..plotting import _new_ax

        ax = _new_ax(ax)
        line, = ax.plot(self.x, self.density, label=label if label is not None else self.kind, **kwargs)
        if atoms:
            for a, m in self.atoms:
                ax.axvline(a, color=line.get_color(), ls=":", lw=1)
                ax.annotate(f"{m:.3g}", (a, 0), xytext=(2, 10), textcoords="offset points", fontsize=7,
                            color=line.get_color())
        ax.set_xlabel("eigenvalue")
        ax.set_ylabel("density")
        return ax
