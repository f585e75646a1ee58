r"""Activation functions and their first two derivatives, usable inside numba-compiled code.

Every built-in activation has an integer ``code`` understood by the compiled scalar evaluator
:func:`act_eval` ``(code, p0, p1, x, order)``, where ``order`` is 0 for :math:`\phi`, 1 for :math:`\phi'` and 2 for
:math:`\phi''`, and ``p0, p1`` are the activation's parameters (the slope of ``leaky_relu``, the ``alpha`` of ``elu``).
Kinked activations list the points where they are not smooth (``kinks``); the quadrature splits its panels there.
``scale`` is the length (in units of the pre-activation u) over which the activation varies -- the half-width of its
strip of analyticity, or 1 for entire functions that grow along the imaginary axis -- and sets the quadrature step.

Closed forms of the Gaussian pair expectations exist for ``relu``, ``leaky_relu``, ``erf`` and ``linear``
(``Activation.closed_form``): see :mod:`meanfield.gaussian`.

A user-defined activation comes from numba-compilable scalar functions through :func:`custom_activation`; missing
derivatives are computed by 9-point finite differences that never straddle a declared kink (stated errors in
:func:`custom_activation`).

Examples
--------
>>> from meanfield import get_activation
>>> act = get_activation("leaky_relu", slope=0.2)
>>> float(act.phi(-1.0)), float(act.dphi(-1.0))
(-0.2, 0.2)
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from typing import Callable, Optional, Sequence

    from ._typing import ActivationLike, ArrayLike, FloatOrArray

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numba as nb

from . import _numba_cache  # noqa: F401  (installs the per-user kernel cache before any kernel below is defined)
import numpy as np

__all__ = [
    "Activation",
    "ACTIVATIONS",
    "get_activation",
    "custom_activation",
    "act_eval",
    "phi_eval",
    "EV_SIGNATURE",
    "has_closed_form",
    "is_homogeneous",
]

SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

# integer codes of the built-in activations (used inside compiled code)
LINEAR, RELU, LEAKY_RELU, TANH, ERF, SIGMOID, HARD_TANH, SOFTPLUS, GELU, SILU, ELU, SELU, SIN, MISH = range(14)
CUSTOM = -1


@nb.njit(cache=True, inline="always")
def _sigmoid(x):
    if x >= 0.0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@nb.njit(cache=True)
def act_eval(code, p0, p1, x, order):
    """phi^(order)(x) for the built-in activation ``code`` with parameters ``p0, p1`` (compiled scalar)."""
    if code == TANH:
        t = math.tanh(x)
        if order == 0:
            return t
        if order == 1:
            return 1.0 - t * t
        return -2.0 * t * (1.0 - t * t)
    if code == RELU:
        if order == 0:
            return x if x > 0.0 else 0.0
        if order == 1:
            return 1.0 if x > 0.0 else 0.0
        return 0.0
    if code == LINEAR:
        if order == 0:
            return x
        if order == 1:
            return 1.0
        return 0.0
    if code == ERF:
        if order == 0:
            return math.erf(x)
        d = _TWO_OVER_SQRT_PI * math.exp(-x * x)
        if order == 1:
            return d
        return -2.0 * x * d
    if code == LEAKY_RELU:
        if order == 0:
            return x if x > 0.0 else p0 * x
        if order == 1:
            return 1.0 if x > 0.0 else p0
        return 0.0
    if code == SIGMOID:
        s = _sigmoid(x)
        if order == 0:
            return s
        if order == 1:
            return s * (1.0 - s)
        return s * (1.0 - s) * (1.0 - 2.0 * s)
    if code == HARD_TANH:
        if order == 0:
            return -1.0 if x < -1.0 else (1.0 if x > 1.0 else x)
        if order == 1:
            return 1.0 if (x > -1.0 and x < 1.0) else 0.0
        return 0.0
    if code == SOFTPLUS:
        if order == 0:
            return max(x, 0.0) + math.log1p(math.exp(-abs(x)))
        s = _sigmoid(x)
        if order == 1:
            return s
        return s * (1.0 - s)
    if code == GELU:
        cdf = 0.5 * math.erfc(-x / math.sqrt(2.0))
        pdf = _INV_SQRT_2PI * math.exp(-0.5 * x * x)
        if order == 0:
            return x * cdf
        if order == 1:
            return cdf + x * pdf
        return pdf * (2.0 - x * x)
    if code == SILU:
        s = _sigmoid(x)
        if order == 0:
            return x * s
        if order == 1:
            return s + x * s * (1.0 - s)
        return s * (1.0 - s) * (2.0 + x * (1.0 - 2.0 * s))
    if code == ELU or code == SELU:
        if code == ELU:
            lam = 1.0
            alpha = p0
        else:
            lam = SELU_LAMBDA
            alpha = SELU_ALPHA
        if x > 0.0:
            if order == 0:
                return lam * x
            if order == 1:
                return lam
            return 0.0
        if order == 0:
            return lam * alpha * math.expm1(x)
        return lam * alpha * math.exp(x)
    if code == SIN:
        if order == 0:
            return math.sin(x)
        if order == 1:
            return math.cos(x)
        return -math.sin(x)
    if code == MISH:
        # x tanh(softplus(x)); with t = tanh(softplus(x)), s = sigmoid(x): phi' = t + x s (1 - t^2),
        # phi'' = s (1 - t^2) (2 + x (1 - s - 2 t s))
        t = math.tanh(max(x, 0.0) + math.log1p(math.exp(-abs(x))))
        if order == 0:
            return x * t
        s = _sigmoid(x)
        if order == 1:
            return t + x * s * (1.0 - t * t)
        return s * (1.0 - t * t) * (2.0 + x * (1.0 - s - 2.0 * t * s))
    return math.nan


#: numba signature of a custom activation's compiled evaluator ``ev(x, order) -> phi^(order)(x)``. The compiled
#: kernels take it as a first-class function argument (a function pointer), so one compiled (and cached) copy of each
#: kernel serves every activation; a custom activation costs only the compilation of its own evaluator.
EV_SIGNATURE = nb.types.float64(nb.types.float64, nb.types.int64)


@nb.cfunc(EV_SIGNATURE, cache=True)
def _no_custom(x, order):
    """Evaluator passed for built-in activations (never called: built-ins dispatch on their code)."""
    return math.nan


@nb.njit(cache=True, inline="always")
def phi_eval(ev, code, p0, p1, x, order):
    """phi^(order)(x): the built-in evaluator for ``code >= 0``, else the custom evaluator ``ev(x, order)``."""
    if code >= 0:
        return act_eval(code, p0, p1, x, order)
    return ev(x, order)


@nb.njit(cache=True, parallel=False)
def _act_eval_array(ev, code, p0, p1, x, order):
    out = np.empty(x.size)
    for i in range(x.size):
        out[i] = phi_eval(ev, code, p0, p1, x[i], order)
    return out


@dataclass(frozen=True)
class Activation:
    """An activation function phi with its derivatives, in a form the compiled kernels understand.

    Parameters
    ----------
    name : str
        Name (``"tanh"``, ``"relu"``, ...).
    code : int
        Integer code of a built-in activation for :func:`act_eval`; ``-1`` for a custom activation.
    params : tuple of float
        ``(p0, p1)``: slope of ``leaky_relu``, ``alpha`` of ``elu``; zeros otherwise.
    kinks : tuple of float
        Points (in units of the pre-activation) where phi or phi' is not smooth.
    scale : float
        Length over which phi varies, which sets the quadrature panel width (``inf`` for piecewise polynomials).
    closed_form : bool
        True if closed forms of the Gaussian pair expectations are used (relu, leaky_relu, erf, linear, sin).
    homogeneous : bool
        True if phi is positively homogeneous of degree 1, ``phi(a x) = a phi(x)`` for ``a > 0`` (relu, leaky_relu,
        linear): the correlation map and chi_1 do not depend on q, and the critical weight variance is the same for
        every bias (:attr:`critical_weight_var`).
    evaluator : numba cfunc, optional
        For a custom activation: its compiled evaluator ``ev(x, order)`` of signature ``EV_SIGNATURE``, passed to
        the compiled kernels as a function pointer.
    """

    name: str
    code: int
    params: tuple = (0.0, 0.0)
    kinks: tuple = ()
    scale: float = 1.0
    closed_form: bool = False
    evaluator: Optional[Callable] = field(default=None, repr=False)   # identity: two customs never compare equal
    graded: bool = False
    homogeneous: bool = False
    #: custom activation: the ``(phi, dphi, d2phi)`` it was built from, so that it can be pickled (rebuilt and
    #: compiled again where it is unpickled, e.g. on the workers of meanfield.distributed)
    source: Optional[tuple] = field(default=None, repr=False, compare=False)

    def __reduce_ex__(self, protocol):
        if self.code == CUSTOM and self.source is not None:
            return (_rebuild_custom, (self.name, *self.source, self.kinks, self.scale))
        return super().__reduce_ex__(protocol)

    @property
    def kernel_args(self) -> tuple:
        """``(ev, code, p0, p1, kinks, signed_scale)`` as the compiled kernels take them (``ev`` the custom evaluator or a placeholder) (a negative scale marks an
        activation whose analyticity strip widens away from u = 0, allowing geometrically graded panels)."""
        sc = -self.scale if self.graded else self.scale
        ev = _no_custom if self.evaluator is None else self.evaluator
        return (ev, self.code, float(self.params[0]), float(self.params[1]), np.asarray(self.kinks, dtype=np.float64),
                sc)

    @property
    def is_custom(self) -> bool:
        return self.code == CUSTOM

    @property
    def critical_weight_var(self) -> Optional[float]:
        """Critical sigma_w^2 (chi_1 = 1) valid for every bias variance, known in closed form for positively
        homogeneous activations: ``2 / (phi'(0+)^2 + phi'(0-)^2)`` (2 for relu, 1 for linear); None otherwise."""
        if not self.homogeneous:
            return None
        return 2.0 / (self.dphi(1.0) ** 2 + self.dphi(-1.0) ** 2)

    @property
    def smooth(self) -> bool:
        """True if phi is analytic on the real line (no kinks)."""
        return len(self.kinks) == 0

    def _eval(self, x, order: int):
        arr = np.asarray(x, dtype=np.float64)
        ev, code, p0, p1 = self.kernel_args[:4]
        out = _act_eval_array(ev, code, p0, p1, np.ascontiguousarray(arr.ravel()), order).reshape(arr.shape)
        if self.is_custom:
            bad = ~np.isfinite(out) & np.isfinite(arr)
            if np.any(bad):
                x_bad = float(arr[bad].ravel()[0])
                raise ValueError(f"custom activation {self.name!r}: derivative of order {order} is not finite at "
                                 f"x = {x_bad!r}")
        return float(out) if out.ndim == 0 else out

    def phi(self, x: ArrayLike) -> FloatOrArray:
        """phi(x), elementwise."""
        return self._eval(x, 0)

    def dphi(self, x: ArrayLike) -> FloatOrArray:
        """phi'(x), elementwise."""
        return self._eval(x, 1)

    def d2phi(self, x: ArrayLike) -> FloatOrArray:
        """phi''(x), elementwise (zero on the linear pieces of kinked activations)."""
        return self._eval(x, 2)

    def __call__(self, x: ArrayLike) -> FloatOrArray:
        return self.phi(x)


_BUILTINS = {
    "linear": dict(code=LINEAR, kinks=(), scale=math.inf, closed_form=True, homogeneous=True),
    "relu": dict(code=RELU, kinks=(0.0,), scale=math.inf, closed_form=True, homogeneous=True),
    "leaky_relu": dict(code=LEAKY_RELU, kinks=(0.0,), scale=math.inf, closed_form=True, homogeneous=True),
    "tanh": dict(graded=True, code=TANH, kinks=(), scale=math.pi / 2, closed_form=False),
    "erf": dict(graded=True, code=ERF, kinks=(), scale=1.0, closed_form=True),
    "sigmoid": dict(graded=True, code=SIGMOID, kinks=(), scale=math.pi, closed_form=False),
    "hard_tanh": dict(code=HARD_TANH, kinks=(-1.0, 1.0), scale=math.inf, closed_form=False),
    "softplus": dict(graded=True, code=SOFTPLUS, kinks=(), scale=math.pi, closed_form=False),
    "gelu": dict(graded=True, code=GELU, kinks=(), scale=1.0, closed_form=False),
    "silu": dict(graded=True, code=SILU, kinks=(), scale=math.pi, closed_form=False),
    "elu": dict(graded=True, code=ELU, kinks=(0.0,), scale=2.0, closed_form=False),
    "selu": dict(graded=True, code=SELU, kinks=(0.0,), scale=2.0, closed_form=False),
    "sin": dict(code=SIN, kinks=(), scale=1.0, closed_form=True),
    # mish (Misra 2019): singularities nearest the real axis at 0.35 + 2.36i (tanh(softplus) = +-inf), so half-width 2
    "mish": dict(graded=True, code=MISH, kinks=(), scale=2.0, closed_form=False),
}

ACTIVATIONS = tuple(_BUILTINS)

# The table's flags as bitmasks over the built-in codes, for the compiled kernels (which cannot read an Activation)
_CLOSED_FORM_MASK = sum(1 << v["code"] for v in _BUILTINS.values() if v["closed_form"])
_HOMOGENEOUS_MASK = sum(1 << v["code"] for v in _BUILTINS.values() if v.get("homogeneous", False))


@nb.njit(cache=True, inline="always")
def has_closed_form(code):
    """True for a built-in activation whose Gaussian pair expectations have closed forms (table flag ``closed_form``)."""
    return code >= 0 and (_CLOSED_FORM_MASK >> code) & 1 == 1


@nb.njit(cache=True, inline="always")
def is_homogeneous(code):
    """True for a positively homogeneous built-in activation, phi(a x) = a phi(x) for a > 0 (table flag
    ``homogeneous``): its correlation map and chi_1 do not depend on q."""
    return code >= 0 and (_HOMOGENEOUS_MASK >> code) & 1 == 1
_ALIASES = {"identity": "linear", "swish": "silu", "hardtanh": "hard_tanh", "leakyrelu": "leaky_relu"}


def _param_float(name: str, value) -> float:
    """An activation parameter as a float, or a TypeError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    return float(value)


def get_activation(spec: ActivationLike, **params: float) -> Activation:
    """Return the :class:`Activation` for a name (or pass an Activation through).

    Parameters
    ----------
    spec : str or Activation
        One of ``ACTIVATIONS``: linear, relu, leaky_relu, tanh, erf, sigmoid, hard_tanh, softplus, gelu (exact,
        ``x Phi(x)``), silu, elu, selu, sin, mish (``x tanh(softplus(x))``).
    **params
        ``slope`` for leaky_relu (default 0.01), ``alpha`` for elu (default 1.0).

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known names) or an invalid parameter.
    TypeError
        If ``spec`` is neither a string nor an Activation.
    """
    if isinstance(spec, Activation):
        if params:
            raise ValueError("activation parameters cannot be given together with an Activation object")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"activation must be a name (str) or an Activation, got {type(spec).__name__}")
    name = _ALIASES.get(spec.lower().replace("-", "_"), spec.lower().replace("-", "_"))
    if name not in _BUILTINS:
        raise ValueError(f"unknown activation {spec!r}; known activations: {', '.join(ACTIVATIONS)}")
    info = _BUILTINS[name]
    p0 = 0.0
    allowed = {"leaky_relu": {"slope"}, "elu": {"alpha"}}.get(name, set())
    unknown = set(params) - allowed
    if unknown:
        raise ValueError(f"activation {name!r} takes no parameter(s) {sorted(unknown)}; allowed: {sorted(allowed) or 'none'}")
    if name == "leaky_relu":
        p0 = _param_float("slope", params.get("slope", 0.01))
        if not math.isfinite(p0):
            raise ValueError(f"slope must be finite, got {p0}")
    elif name == "elu":
        p0 = _param_float("alpha", params.get("alpha", 1.0))
        if not (math.isfinite(p0) and p0 >= 0):
            raise ValueError(f"alpha must be finite and >= 0, got {p0}")
    kinks = info["kinks"]
    if name == "elu" and p0 == 1.0:
        kinks = (0.0,)  # C^1 but phi'' jumps: still split there
    return Activation(name=name, code=info["code"], params=(p0, 0.0), kinks=kinks, scale=info["scale"],
                      closed_form=info["closed_form"], graded=info.get("graded", False),
                      homogeneous=info.get("homogeneous", False))


def _fd_weights(offsets, order):
    """Exact finite-difference weights ``w`` with ``f^(order)(x) ~ sum_i w_i f(x + offsets_i h) / h^order``.

    Solved in rational arithmetic from the moment conditions ``sum_i w_i s_i^k / k! = [k == order]``,
    ``k = 0..len(offsets)-1`` (so the formula is exact for polynomials of degree ``len(offsets) - 1``).
    """
    from fractions import Fraction

    n = len(offsets)
    A = [[Fraction(int(si)) ** k / math.factorial(k) for si in offsets] + [Fraction(int(k == order))]
         for k in range(n)]
    for c in range(n):                                  # Gauss-Jordan elimination, exact
        p = next(r for r in range(c, n) if A[r][c] != 0)
        A[c], A[p] = A[p], A[c]
        A[c] = [v / A[c][c] for v in A[c]]
        for r in range(n):
            if r != c and A[r][c] != 0:
                A[r] = [vr - A[r][c] * vc for vr, vc in zip(A[r], A[c])]
    return tuple(float(A[k][n]) for k in range(n))


# 9-point stencils: central (offsets -4..4, error O(h^8)) and one-sided (0..8, O(h^8) for phi', O(h^7) for phi'')
_CENTRAL = tuple(range(-4, 5))
_FORWARD = tuple(range(0, 9))
_FD_H = 2e-3


def _fd_derivative(f, order, kinks=()):
    """Finite-difference ``phi^(order)`` (order 1 or 2) of a custom activation that never straddles a kink.

    Step ``h = 2e-3 (1 + |x|)``. Away from the declared ``kinks`` (no kink within ``4h``): 9-point central differences,
    truncation ~ ``h^8 f^(9+order)`` and roundoff ~ ``1e-16 |f| sum|w| / h^order``: about 1e-13 relative for phi' and
    1e-10 for phi'' on a function varying on a unit scale. Within ``4h`` of a kink the stencil moves to the side of
    ``x`` with more room to the next kink -- 9 one-sided points ``x, x +- h, ..., x +- 8h``, with ``h`` shrunk to fit
    before the next kink on that side -- so only the smooth piece containing ``x`` is sampled and the derivative is
    that piece's (one-sided) derivative; at a kink itself the right-hand derivative. One-sided errors: truncation
    ~ ``h^8 f^(9) / 9`` (phi') and ``h^7 f^(9)`` (phi''), roundoff ~ ``80 eps |f| / h`` ~ 4e-12 (phi') and
    ~ ``360 eps |f| / h^2`` ~ 1e-8 (phi'') relative, on a unit-scale function.
    """
    kk = np.sort(np.asarray(kinks, dtype=np.float64))
    wc = _fd_weights(_CENTRAL, order)
    wf = _fd_weights(_FORWARD, order)
    wb = tuple(w * (-1.0) ** order for w in wf)        # backward stencil: offsets -s, weights (-1)^order w
    nk = kk.size
    kinks_t = tuple(float(k) for k in kk) if nk else (0.0,)
    h0 = _FD_H

    @nb.njit
    def deriv(x):
        h = h0 * (1.0 + abs(x))
        dl = math.inf   # distance to the nearest kink at or left of x
        dr = math.inf   # distance to the nearest kink right of x
        if nk > 0:
            for k in kinks_t:
                if k <= x:
                    dl = min(dl, x - k)
                else:
                    dr = min(dr, k - x)
        if dl >= 4.0 * h and dr >= 4.0 * h:
            acc = 0.0
            for i in range(9):
                acc += wc[i] * f(x + (i - 4) * h)
            return acc / h ** order
        acc = 0.0
        if dr > dl:                                 # room on the right: forward stencil
            h = min(h, dr / 8.0)
            for i in range(9):
                acc += wf[i] * f(x + i * h)
        else:                                       # backward stencil
            h = min(h, dl / 8.0)
            for i in range(9):
                acc += wb[i] * f(x - i * h)
        return acc / h ** order
    return deriv


# probe grid of custom_activation: where the Gaussian expectations put their weight for q up to ~40 (|x| <= 20 at
# step 0.05), plus the declared kinks and points just beside them
_PROBE_GRID = np.linspace(-20.0, 20.0, 801)


def _check_kinks(kinks) -> tuple:
    """Kinks as a sorted tuple of distinct finite floats (TypeError / ValueError naming ``kinks`` otherwise)."""
    from ._checks import check_array

    arr = check_array("kinks", kinks, (0, 1), min_size=0)
    return tuple(sorted(set(float(k) for k in arr.reshape(-1))))


def _probe_finite(name: str, ev, kinks: tuple) -> None:
    """Raise ValueError naming the activation and a sample x where phi, phi' or phi'' is NaN or infinite."""
    extra = [k + d for k in kinks for d in (-1e-6, 0.0, 1e-6)]
    xs = np.concatenate([[0.3, 0.0], _PROBE_GRID, extra])
    for order, what in ((0, "phi"), (1, "phi'"), (2, "phi''")):
        for x in xs:
            v = ev(float(x), order)
            if not math.isfinite(v):
                raise ValueError(f"custom activation {name!r}: {what}(x) = {v} is not finite at x = {float(x)!r} "
                                 f"(phi and its derivatives must be finite on the whole real line)")


def custom_activation(name: str, phi: Callable[[float], float], dphi: Optional[Callable[[float], float]] = None,
                      d2phi: Optional[Callable[[float], float]] = None, *, kinks: Sequence[float] = (),
                      scale: float = 1.0) -> Activation:
    """Build an :class:`Activation` from numba-compilable scalar functions.

    Parameters
    ----------
    name : str
        Label used in plots and results.
    phi, dphi, d2phi : callable
        Scalar functions ``float -> float``; plain Python functions are compiled with ``numba.njit``. Missing
        derivatives are computed by 9-point finite differences that never straddle a declared kink (central away
        from the kinks: about 1e-13 relative error for phi', 1e-10 for phi'' on functions varying on a unit scale;
        one-sided within ``8e-3 (1 + |x|)`` of a kink: about 1e-11 for phi', 1e-8 for phi''; see ``_fd_derivative``).
    kinks : sequence of float
        Points where phi or phi' is not smooth (the quadrature splits there, and the finite differences do not
        cross them: each side gets its own one-sided derivative, the right-hand one at the kink itself).
    scale : float
        Length over which phi varies (half-width of its strip of analyticity); smaller is more careful and slower.
        At least 0.1 (``inf`` allowed): the nested 2-D rule places ~320 / scale nodes per unit variance in each
        direction, so a scale of 1e-3 meant ~1e11 evaluations per pair expectation (a run that did not end). For an
        activation varying faster, rescale it: ``phi(x) = f(k x)`` is ``f`` at ``weight_var * k^2``, ``bias_var * k^2``.

    Raises
    ------
    TypeError
        If ``phi`` is not callable, the functions do not compile with numba, or ``kinks`` is not real numbers.
    ValueError
        If ``scale < 0.1``, a kink is not finite, or phi, phi' or phi'' is NaN or infinite somewhere on the probe grid
        (``|x| <= 20`` at step 0.05, and at and beside each kink); the message names the activation and that x.

    Examples
    --------
    >>> import math
    >>> from meanfield import custom_activation, qstar
    >>> act = custom_activation("scaled_tanh", lambda x: 1.7159 * math.tanh(2.0 * x / 3.0))
    >>> q = qstar(act, 1.0, 0.1)
    """
    if not callable(phi):
        raise TypeError("phi must be a callable float -> float")
    if not (isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale >= 0.1):
        raise ValueError(f"scale must be a number >= 0.1 (inf allowed), got {scale!r}: finer activations would make "
                         "the 2-D quadrature unbounded; rescale the activation instead (see the docstring)")

    kinks = _check_kinks(kinks)
    key = (phi, dphi, d2phi, kinks)
    try:
        ev = _EVALUATORS.get(key)
    except TypeError:        # unhashable callables: no reuse
        key, ev = None, None
    if ev is None:
        ev = _make_evaluator(name, phi, dphi, d2phi, kinks)
        if key is not None:
            _EVALUATORS[key] = ev
    _probe_finite(str(name), ev, kinks)
    return Activation(name=str(name), code=CUSTOM, params=(0.0, 0.0), kinks=kinks,
                      scale=float(scale), closed_form=False, evaluator=ev, source=(phi, dphi, d2phi))


def _rebuild_custom(name, phi, dphi, d2phi, kinks, scale):
    """Unpickle a custom :class:`Activation` (see ``Activation.__reduce_ex__``)."""
    return custom_activation(name, phi, dphi, d2phi, kinks=kinks, scale=scale)


#: compiled evaluators of custom activations, keyed by (phi, dphi, d2phi, kinks): building the same activation again
#: reuses its compiled evaluator (the kernels themselves are compiled once for all activations)
_EVALUATORS: dict = {}


def _make_evaluator(name, phi, dphi, d2phi, kinks):
    def jit(f):
        return f if isinstance(f, nb.core.registry.CPUDispatcher) else nb.njit(f)

    f0 = jit(phi)
    f1 = jit(dphi) if dphi is not None else _fd_derivative(f0, 1, kinks)
    f2 = jit(d2phi) if d2phi is not None else _fd_derivative(f0, 2, kinks)

    def ev_py(x, order):
        if order == 0:
            return f0(x)
        if order == 1:
            return f1(x)
        return f2(x)

    try:
        ev = nb.cfunc(EV_SIGNATURE)(ev_py)
    except Exception as exc:  # numba typing errors are long; give the gist
        raise TypeError(f"custom activation {name!r} could not be compiled by numba: {exc}") from exc
    return ev
