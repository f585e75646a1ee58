r"""Derivatives of the NNGP and NTK with respect to every layer's weight and bias variance, the NNGP log marginal
likelihood with its gradient, and the fit of (weight_var, bias_var, noise_var) that maximizes it (docs/regression.md).

Forward-mode differentiation of the layer sweep (:mod:`meanfield.trace`): every layer rule of
:mod:`meanfield.layers` has a tangent rule, and the tangents ``dQ, dTheta`` of all ``2 L`` parameters (``L`` Dense
layers, weight_var and bias_var each) travel through the chain together with ``Q, Theta``. The rules (``w, b`` the
layer's variances, ``e_w, e_b`` the unit tangents of its own parameters):

* Dense: ``dQ' = w dQ + Q e_w + e_b``, ``dTheta' = w dTheta + Theta e_w + dQ'`` (NTK parameterization; standard:
  ``+ M_in dQ``);
* Nonlinearity (Price's theorem: ``d qhat / dQ(x, x') = qdot``, ``d qhat / dq(x) = E[phi''(u) phi(v)] / 2``, with
  closed forms per activation in :func:`meanfield.gaussian.pair_partials`): ``dqhat = qdot dQ + a_i dq_i + a_j dq_j``,
  ``dTheta' = qdot dTheta + Theta (b_Q dQ + b_i dq_i + b_j dq_j)``; the same-input entries use
  ``d E[phi^2]/dq`` (the engine's ``dmean_sq_dq``);
* Dropout: tangents scale like the values; Residual: ``dQ + alpha^2 dQ_block``.

The partial derivatives have closed forms for the activations in
:data:`meanfield.gaussian.DIFFERENTIABLE_ACTIVATIONS` (relu, leaky_relu, erf, linear, sin), are Mehler series for
smooth activations (tanh, sigmoid, gelu, silu, softplus, mish, custom smooth ones; see
:meth:`meanfield.gaussian.PairPlan.partials`), and for kinked activations without closed forms (hard_tanh, elu, selu,
custom ones continuous at their kinks) come from Gaussian integration by parts in the distributional sense: with
``phi'' = r + sum_k J_k delta(u - k)`` (``J_k`` the jump of phi' at the kink ``k``),
``d qhat/dq_i = (E[r(u) phi(v)] + sum_k J_k p_i(k) E[phi(v) | u = k]) / 2``, ``d qdot/dQ = E[phi''(u) phi''(v)]``
(regular, delta-regular and delta-delta terms) and ``d qdot/dq_i = (E[u phi''(u) phi'(v)] - Q d qdot/dQ) / (2 q_i)``
(Stein's identity, which avoids the derivatives of delta functions in phi^(3)); the conditional expectations given
``u = k`` are 1-D rules of the engine and the regular parts its nested 2-D rule
(:func:`meanfield._gaussian_kernels.pair_partials_kinked`).

Log marginal likelihood of targets ``Y`` (n x C, independent columns) under the NNGP with noise ``s``, ``A = K + s I``
(Rasmussen & Williams eq. 2.30 and 5.9):

.. math::

    \log p(Y) = -\tfrac12 \mathrm{tr}(Y^T A^{-1} Y) - \tfrac{C}{2}\log\det A - \tfrac{nC}{2}\log 2\pi,\qquad
    \partial_\theta \log p = \tfrac12 \mathrm{tr}\big((\alpha\alpha^T - C A^{-1})\,\partial_\theta A\big),
    \ \alpha = A^{-1} Y.

Examples
--------
>>> import numpy as np
>>> from meanfield import Network
>>> x = np.random.default_rng(0).standard_normal((5, 3))
>>> d = kernel_derivatives(Network("relu", depth=2, weight_var=1.5, bias_var=0.1), x)
>>> d.d_nngp.shape, d.parameters[:2]
((6, 5, 5), (('0', 'weight_var'), ('0', 'bias_var')))
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from typing import Sequence, Tuple

    from ._typing import ArrayLike, NetworkLike
    from .network import Network

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.linalg
import scipy.optimize

from ._checks import check_array, check_nonneg, check_positive

__all__ = ["KernelDerivatives", "kernel_derivatives", "MarginalLikelihood", "nngp_log_marginal_likelihood",
           "NNGPFit", "fit_nngp"]


@dataclass(frozen=True)
class KernelDerivatives:
    """The kernels and their derivatives with respect to each Dense layer's weight_var and bias_var.

    Attributes
    ----------
    nngp, ntk : ndarray (n1, n2); ``ntk`` None without ``compute_ntk``
    d_nngp, d_ntk : ndarray (2 L, n1, n2)
        Derivatives in the order of ``parameters``: ``(w_1, b_1, w_2, b_2, ..., w_L, b_L)``, readout last.
    parameters : tuple of (path, name)
        The Dense layer's position in the chain and ``"weight_var"`` or ``"bias_var"``.
    """

    nngp: np.ndarray
    ntk: Optional[np.ndarray]
    d_nngp: np.ndarray
    d_ntk: Optional[np.ndarray]
    parameters: tuple

    @property
    def d_nngp_weight_var(self) -> np.ndarray:
        """``dK / d weight_var_l``, shape (L, n1, n2)."""
        return self.d_nngp[0::2]

    @property
    def d_nngp_bias_var(self) -> np.ndarray:
        return self.d_nngp[1::2]

    @property
    def d_ntk_weight_var(self) -> Optional[np.ndarray]:
        return None if self.d_ntk is None else self.d_ntk[0::2]

    @property
    def d_ntk_bias_var(self) -> Optional[np.ndarray]:
        return None if self.d_ntk is None else self.d_ntk[1::2]

    def to_dict(self) -> dict:
        return {"nngp": self.nngp.tolist(), "ntk": None if self.ntk is None else self.ntk.tolist(),
                "d_nngp": self.d_nngp.tolist(), "d_ntk": None if self.d_ntk is None else self.d_ntk.tolist(),
                "parameters": [list(p) for p in self.parameters]}


def _check_chain(chain, check):
    from .layers import Nonlinearity, Residual

    for lay in chain:
        if isinstance(lay, Nonlinearity):
            check(lay.activation)
        elif isinstance(lay, Residual):
            _check_chain(lay.block, check)


def kernel_derivatives(network: NetworkLike, x1: ArrayLike, x2: Optional[ArrayLike] = None, *, compute_ntk: bool = True, parameterization: str = "ntk",
                       width: Optional[float] = None, rtol: float = 1e-14) -> KernelDerivatives:
    r"""NNGP and NTK between the rows of ``x1`` and ``x2`` and their derivatives with respect to every weight_var and
    bias_var, by forward-mode differentiation of the layer sweep (module docstring).

    Parameters
    ----------
    network : Network or layer chain
        Its activations must have closed forms (:data:`meanfield.gaussian.DIFFERENTIABLE_ACTIVATIONS`), be smooth, or
        be continuous with kinks (hard_tanh, elu, selu).
    x1 : array_like (n1, M_0)
    x2 : array_like (n2, M_0), optional
        None: the symmetric kernel of ``x1`` (its derivatives exactly symmetric).
    compute_ntk : bool
    parameterization : {"ntk", "standard"}
    width : float, optional
        Required for ``"standard"``.
    rtol : float
        Passed to the sweep (accuracy of the Mehler series, also of their derivatives' series).

    Cost: ``2 L + 1`` times the kernel's memory and arithmetic (all tangents at once).

    Raises
    ------
    NotImplementedError
        For an activation that jumps at a kink (a custom one: derivatives of delta functions would enter).
    ValueError
        For bad inputs (as :func:`meanfield.kernels`) or non-finite derivatives (a kinked activation at correlation
        -1, at correlation +1 between inputs of different variance (proportional inputs without bias) or at a zero
        variance, where the derivative is unbounded; overflow).

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network
    >>> d = kernel_derivatives(Network("linear", depth=1, weight_var=2.0, bias_var=0.0), np.ones((1, 1)))
    >>> d.nngp.tolist(), d.d_nngp[:, 0, 0].tolist()   # K = w_1 w_2 x^2 + w_2 b_1 + b_2
    ([[4.0]], [2.0, 2.0, 2.0, 1.0])
    """
    from .gaussian import check_differentiable
    from .kernels import _check_inputs, _rows
    from .trace import _number_parameters, _row_tangents, _tile_tangent, _walk, as_chain

    chain = as_chain(network)
    x1, x2 = _check_inputs(x1, x2)
    if not isinstance(parameterization, str) or parameterization not in ("ntk", "standard"):
        raise ValueError(f"parameterization must be 'ntk' or 'standard', got {parameterization!r}")
    if parameterization == "standard" and width is None:
        raise ValueError("width must be given (> 0) for parameterization='standard'")
    if width is not None:
        width = check_positive("width", width, scalar=True)
    compute_ntk = bool(compute_ntk)
    sym = x2 is None
    X = x1 if sym else np.vstack([x1, x2])
    _check_chain(chain, check_differentiable)
    from ._io import check_alloc

    n_tan = 2 * chain.n_dense + 1
    n2 = x1.shape[0] if sym else x2.shape[0]
    check_alloc("x1, x2", 8.0 * x1.shape[0] * n2 * n_tan * (3 + 3 * compute_ntk),
                f"the {n_tan} kernel tangents of shape ({x1.shape[0]}, {n2})")
    nodes, _ = _rows(chain, X, True, check_positive("rtol", rtol, scalar=True), width)
    n_dense = _number_parameters(nodes)
    P = 2 * n_dense
    N = X.shape[0]
    _row_tangents(nodes, nodes[0].q_in, np.zeros((P, N)))
    n1 = x1.shape[0]
    ri = np.arange(n1)
    rj = ri if sym else np.arange(n1, N)
    Q0 = X[ri] @ X[rj].T / X.shape[1]
    dQ0 = np.zeros((P, len(ri), len(rj)))
    dT0 = np.zeros_like(dQ0) if compute_ntk else None
    Q, T, dQ, dT, _ = _tile_tangent(nodes, Q0, 0.0 if compute_ntk else None, dQ0, dT0, ri, rj, sym,
                                    parameterization == "standard")
    if sym:
        Q, dQ = 0.5 * (Q + Q.T), 0.5 * (dQ + dQ.transpose(0, 2, 1))
        if compute_ntk:
            T, dT = 0.5 * (T + T.T), 0.5 * (dT + dT.transpose(0, 2, 1))
    for name, arr in (("NNGP", dQ), ("NTK", dT)):
        if arr is not None and not np.all(np.isfinite(arr)):
            raise ValueError(f"x1, x2: derivatives of the {name} are not finite (a kinked activation at correlation "
                             "-1, at correlation +1 between inputs of different variance, or at a zero variance; or "
                             "overflow)")
    params = []
    for node in _walk(nodes):
        if node.param is not None:
            params += [(node.path, "weight_var"), (node.path, "bias_var")]
    return KernelDerivatives(nngp=np.array(Q, dtype=np.float64), ntk=None if T is None else np.array(T),
                             d_nngp=dQ, d_ntk=dT, parameters=tuple(params))


# ------------------------------------------------------------------------------------------- marginal likelihood
@dataclass(frozen=True)
class MarginalLikelihood:
    """NNGP log marginal likelihood and its gradient.

    Attributes
    ----------
    value : float
    d_weight_var, d_bias_var : ndarray (L,)
        Derivatives with respect to each Dense layer's variances (readout last).
    d_noise_var : float
    """

    value: float
    d_weight_var: np.ndarray
    d_bias_var: np.ndarray
    d_noise_var: float

    def to_dict(self) -> dict:
        return {"value": self.value, "d_weight_var": self.d_weight_var.tolist(),
                "d_bias_var": self.d_bias_var.tolist(), "d_noise_var": self.d_noise_var}


def _lml(K, dK, y, s):
    """Value and gradient (over dK's leading axis, then noise) of the log marginal likelihood with A = K + s I."""
    n = K.shape[0]
    Y = y.reshape(n, -1)
    C = Y.shape[1]
    try:
        cf = scipy.linalg.cho_factor(K + s * np.eye(n), lower=True, check_finite=False)
    except np.linalg.LinAlgError as exc:
        raise np.linalg.LinAlgError("NNGP + noise_var * I is not positive definite; increase noise_var") from exc
    alpha = scipy.linalg.cho_solve(cf, Y, check_finite=False)
    value = (-0.5 * float(np.sum(Y * alpha)) - C * float(np.sum(np.log(np.diag(cf[0]))))
             - 0.5 * n * C * math.log(2.0 * math.pi))
    W = alpha @ alpha.T - C * scipy.linalg.cho_solve(cf, np.eye(n), check_finite=False)
    grad = 0.5 * np.einsum("ij,pij->p", W, dK) if dK is not None else None
    return value, grad, 0.5 * float(np.trace(W))


def nngp_log_marginal_likelihood(network: NetworkLike, x: ArrayLike, y: ArrayLike, noise_var: float) -> MarginalLikelihood:
    r"""Log marginal likelihood of ``y`` under the NNGP of ``network`` with observation noise, and its gradient with
    respect to every layer's weight_var, bias_var and the noise variance (module docstring for the formulas).

    Parameters
    ----------
    network : Network or layer chain
    x : array_like (n, M_0)
    y : array_like (n,) or (n, C)
        C independent output columns sharing the kernel.
    noise_var : float
        ``s > 0`` (or >= 0 with a positive definite NNGP).

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network
    >>> x = np.linspace(-1, 1, 8)[:, None]
    >>> r = nngp_log_marginal_likelihood(Network("erf", depth=2, weight_var=2.0, bias_var=0.1), x, x[:, 0], 0.01)
    >>> r.d_weight_var.shape, bool(np.isfinite(r.value))
    ((3,), True)
    """
    X = check_array("x", x, 2)
    Y = check_array("y", y, (1, 2))
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"y must have shape ({X.shape[0]},) or ({X.shape[0]}, n_outputs), got {Y.shape}")
    s = check_nonneg("noise_var", noise_var, scalar=True)
    d = kernel_derivatives(network, X, compute_ntk=False)
    value, grad, gs = _lml(d.nngp, d.d_nngp, Y, s)
    return MarginalLikelihood(value=value, d_weight_var=grad[0::2], d_bias_var=grad[1::2], d_noise_var=gs)


@dataclass(frozen=True)
class NNGPFit:
    """Result of :func:`fit_nngp`.

    Attributes
    ----------
    network : Network
        The network with the fitted weight_var and bias_var (shared by all layers).
    weight_var, bias_var, noise_var : float
    log_marginal_likelihood : float
        At the optimum; ``initial_log_marginal_likelihood`` at the start.
    initial_log_marginal_likelihood : float
    success : bool
    message : str
    n_evaluations : int
    """

    network: Network
    weight_var: float
    bias_var: float
    noise_var: float
    log_marginal_likelihood: float
    initial_log_marginal_likelihood: float
    success: bool
    message: str
    n_evaluations: int

    def to_dict(self) -> dict:
        return {"network": self.network.to_dict(), "weight_var": self.weight_var, "bias_var": self.bias_var,
                "noise_var": self.noise_var, "log_marginal_likelihood": self.log_marginal_likelihood,
                "initial_log_marginal_likelihood": self.initial_log_marginal_likelihood, "success": self.success,
                "message": self.message, "n_evaluations": self.n_evaluations}


def fit_nngp(network: Network, x: ArrayLike, y: ArrayLike, noise_var: float = 0.1, *,
             bounds: Sequence[Tuple[float, float]] = ((1e-3, 1e2), (1e-6, 1e1), (1e-8, 1e2)),
             fit_noise: bool = True, maxiter: int = 200) -> NNGPFit:
    r"""Maximize the NNGP log marginal likelihood over ``(weight_var, bias_var, noise_var)`` (one weight_var and one
    bias_var shared by all layers) with L-BFGS-B in log coordinates, using the analytic gradient
    ``d log p / d log w = w sum_l d log p / d w_l``.

    Parameters
    ----------
    network : Network
        Activation, depth, dropout of the model; its (first layer's) weight_var, bias_var are the starting point.
    x, y : arrays
    noise_var : float
        Starting (or, with ``fit_noise=False``, fixed) noise variance > 0.
    bounds : three (low, high) pairs
        For weight_var, bias_var, noise_var (> 0: the search runs in log coordinates).
    fit_noise : bool
    maxiter : int

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network
    >>> x = np.linspace(-2, 2, 15)[:, None]
    >>> f = fit_nngp(Network("relu", depth=2, weight_var=1.0, bias_var=0.5), x, np.sin(2 * x[:, 0]), 0.1)
    >>> f.log_marginal_likelihood > f.initial_log_marginal_likelihood
    True
    """
    from .network import Network

    if not isinstance(network, Network):
        raise TypeError(f"network must be a meanfield.Network, got {type(network).__name__}")
    X = check_array("x", x, 2)
    Y = check_array("y", y, (1, 2))
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"y must have shape ({X.shape[0]},) or ({X.shape[0]}, n_outputs), got {Y.shape}")
    s0 = check_positive("noise_var", noise_var, scalar=True)
    b = np.asarray(bounds, dtype=np.float64)
    if b.shape != (3, 2) or not np.all(np.isfinite(b)) or np.any(b[:, 0] <= 0) or np.any(b[:, 0] >= b[:, 1]):
        raise ValueError(f"bounds must be three (low, high) pairs with 0 < low < high, got {bounds!r}")
    w0 = min(max(network.weight_vars[0], b[0, 0]), b[0, 1])
    b0 = min(max(network.bias_vars[0], b[1, 0]), b[1, 1])
    s0 = min(max(s0, b[2, 0]), b[2, 1])

    def make(w, bv):
        return Network(network.activations, network.depth, weight_var=w, bias_var=bv,
                       width_ratios=network.alphas, dropout_keep=network.dropout_keep)

    count = [0]

    def objective(theta):
        count[0] += 1
        w, bv = math.exp(theta[0]), math.exp(theta[1])
        s = math.exp(theta[2]) if fit_noise else s0
        d = kernel_derivatives(make(w, bv), X, compute_ntk=False)
        value, grad, gs = _lml(d.nngp, d.d_nngp, Y, s)
        g = np.array([w * grad[0::2].sum(), bv * grad[1::2].sum(), s * gs if fit_noise else 0.0])
        return -value, -g

    theta0 = np.log([w0, b0, s0])
    v0 = -objective(theta0)[0]
    lb = np.log(b)
    if not fit_noise:
        lb[2] = [theta0[2], theta0[2]]
    res = scipy.optimize.minimize(objective, theta0, jac=True, method="L-BFGS-B", bounds=[tuple(r) for r in lb],
                                  options={"maxiter": int(maxiter)})
    w, bv = float(math.exp(res.x[0])), float(math.exp(res.x[1]))
    s = float(math.exp(res.x[2])) if fit_noise else s0
    return NNGPFit(network=make(w, bv), weight_var=w, bias_var=bv, noise_var=s,
                   log_marginal_likelihood=float(-res.fun), initial_log_marginal_likelihood=float(v0),
                   success=bool(res.success), message=str(res.message), n_evaluations=count[0])
