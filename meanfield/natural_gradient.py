r"""Natural gradient descent (NGD) with exact and approximate Fisher information in the NTK regime.

Karakida & Osawa, "Understanding approximate Fisher information for fast convergence of natural gradient descent in
wide neural networks" (NeurIPS 2020); the derivations are written out in ``docs/natural_gradient.md``.

Setting (NTK parameterization, their notation)
----------------------------------------------
``N`` training inputs ``X``, outputs ``f(X)`` (``N x C``), loss ``L = (1/2N) sum_n ||f(x_n) - y_n||^2``, Jacobian
``J = d f / d theta`` (``CN x P``), Fisher information ``G = J^T J / N``. One NGD step with a (possibly approximate)
Fisher matrix ``G~`` and damping ``rho``::

    theta_{t+1} = theta_t - eta (G~ + rho I)^{-1} grad L,     grad L = J^T (f_t - y) / N.

Near the infinite-width limit the step moves the outputs by ``f_{t+1} - f_t = -eta Theta_bar (f_t - y)`` with the
*function-space kernel* ``Theta_bar = J (G~ + rho I)^{-1} J^T / N`` computed at initialization (the NTK regime:
``G~_t^{-1} J_t`` stays close to ``G~_0^{-1} J_0``), so

    f_t(X) - y = (I - eta Theta_bar)^t (f_0(X) - y),
    f_t(x') = f_0(x') - eta Theta_bar(x', X) sum_{s<t} (f_s(X) - y).

When ``Theta_bar = alpha I`` (their *isotropic condition*) every mode converges at the same rate:
``f_t - y = (1 - eta alpha)^t (f_0 - y)``, one step at ``eta = 1/alpha``, stable for ``0 < eta alpha < 2``.
With the layer Grams ``Theta_l = J_l J_l^T`` (the NTK of layer ``l``: ``Theta = sum_l Theta_l``), the
augmented-input Gram ``K^h_l = sum_j s_w^2 h^{l-1}_j h'^{l-1}_j + s_b^2 -> q^l`` and the back-propagated Gram
``K^delta_l = sum_i delta^l_i delta'^l_i -> qtilde^l`` (``Theta_l = K^delta_l o K^h_l``, ``o`` the Hadamard product),
push-through identities give per method (``eps = sqrt(rho)``; ``+`` the pseudo-inverse, the limit ``rho -> 0``)

* ``gd`` (plain gradient descent, for comparison): ``Theta_bar = Theta / N``, not isotropic;
* ``full``: ``Theta_bar = Theta (Theta + N rho I)^+``, ``alpha = 1`` at ``rho = 0``;
* ``block_diagonal``: ``Theta_bar = sum_l Theta_l (Theta_l + N rho I)^+``, ``alpha = L`` (weight layers);
* ``kfac``: ``Theta_bar = N sum_l [K^h_l (K^h_l + N eps I)^+] o [K^delta_l (K^delta_l + N eps I)^+]``,
  ``alpha = N (L-1) + 1``;
* ``unit_wise`` at ``rho = 0``: ``Theta_bar = sum_{l,i} P_{l,i}``, ``P_{l,i} = diag(1[delta^l_{n,i} != 0])``,
  ``alpha = sum_{l<L} M_l p_l + 1`` (the kernel only: finite networks do not follow these curves, see below);
* ``unit_wise`` with ``rho = rho_tilde / M`` (the regime in which finite networks converge to the prediction):
  ``Theta_bar = q^L (q^L + N rho)^{-1} + sum_{l<L} M_l E[D q^l D (D q^l D + N rho M_l I)^{-1}]``,
  ``D = diag(phi'(u) o g)``, ``u ~ N(0, q^l)``, ``g ~ N(0, sigma_{w,l+1}^2 qtilde^{l+1})`` (not isotropic).

Why:

* ``full``: ``J (J^T J)^+ J^T`` is the projector on the range of ``J``: the identity when ``Theta`` is non-singular.
* ``block_diagonal`` (layer-wise FIM): each layer's projector is the identity when ``Theta_l`` is non-singular, which
  holds for the first layer too (Schur product theorem: ``K^h_1`` is PSD with a positive diagonal, ``K^delta_1`` PD)
  whatever the input dimension; hence ``alpha = L`` and ``eta = 1/L`` converges in one step.
* ``kfac`` (K-FAC, ``G_l ~ A_{l-1} (x) B_l``, ``A = E[h~ h~^T]``, ``B = E[delta delta^T]`` summed over the C outputs,
  factor damping ``eps``): ``h~^T A^+ h~' = N [K^h (K^h)^+]`` is ``N`` times a projector, likewise for ``delta``.
  Hidden layers (``M_l >= CN``) give ``N I``; the readout, whose ``delta^L = e_k`` does not depend on the input, gives
  ``I`` (``K^delta_L = 1 1^T``); the first layer gives ``N diag(P_0)``, ``P_0 = q^1 (q^1)^+`` the projector on the
  row space of the augmented inputs, which is the identity only if ``N <= M_0`` (``+1`` with a bias): otherwise
  K-FAC is *not* isotropic and the samples converge at the rates ``eta (N (L - 2 + P_0,nn) + 1)``.
  (The talk slides of the paper quote ``alpha = NL``; this module derives and checks ``N(L-1)+1`` for ``L`` weight
  layers including the readout; the two agree to leading order in ``N``.)
* ``unit_wise`` (one block per unit: its incoming weights and bias; ``C = 1``): the block of unit ``i`` of layer
  ``l`` is ``J_{l,i}^T J_{l,i}/N`` with rows ``delta^l_{n,i} h~^{l-1}_n``; with ``d = sqrt(M_l) delta^l_{., i}``
  (``O(1)``) and ``D = diag(d)`` its function-space term is ``D K^h D (D K^h D + N rho M_l I)^{-1}``
  (push-through). At ``rho = 0`` it is the projector ``diag(1[d_n != 0])`` (when ``q^1(X, X)`` is non-singular);
  summed over the ``M_l`` units, ``M_l p_l(x_n)`` on the diagonal, ``p_l = P(phi'(u^l) != 0)``: ``1`` for activations
  whose derivative vanishes only on a null set (tanh, erf, gelu, leaky_relu, ...), ``1/2`` for relu (``alpha =
  M(L-1)/2 + 1`` as in the paper), ``erf(1/sqrt(2 q^l_nn))`` for hard_tanh (input dependent: not isotropic).
  **But** unit ``i``'s step moves its pre-activations by ``Delta u_{n,i} = -eta r_n / delta_{n,i}``, and
  ``delta_{n,i}`` has a density at 0, so ``Delta u`` has a Cauchy-like tail at every width: finite networks leave
  the linear regime and do not follow the ``rho = 0`` curves (deviation 0.15-0.23 for ``M = 64 ... 1024`` at
  ``eta alpha = 1/2``, flat to ``M = 4096``;
  ``docs/natural_gradient.md``). With ``rho = rho_tilde / M`` each unit's step is bounded,
  ``|Delta u_{., i}| <= eta sqrt(M_l) ||q^l||^{1/2} ||r|| / (2 sqrt(N rho M_l)) = O(1/sqrt M)``, the networks stay in
  the NTK regime and the kernel's infinite-width limit is ``M_l E[...]`` over the law of ``d`` (gradient
  independence): ``d = phi'(u) o g`` with ``u ~ N(0, q^l)`` (the unit's pre-activations; ``K^h_l -> q^l``) and
  ``g ~ N(0, sigma_{w,l+1}^2 qtilde^{l+1})`` independent (``qtilde^L = 1 1^T``: ``g = sigma_{w,L} v 1`` with the
  unit's readout weight ``v``). The readout unit (``delta = 1``) gives ``q^L (q^L + N rho)^{-1} -> I``. The
  ``2N``-dimensional Gaussian integral is computed by randomized quasi-Monte Carlo (8 scrambled Sobol replicates,
  ``n_points`` in all; standard error in ``NGDKernel.integration_error``, relative ``1e-3`` (tanh) to ``3e-3``
  (relu) at the default ``2^15`` points, decreasing like ``n_points^{-1.1}`` for smooth ``phi'`` and like the
  Monte-Carlo ``n_points^{-1/2}`` for relu's step ``phi'``). Constant ``rho`` is not a useful regime: the unit
  blocks are ``O(1/M)`` and unit-wise NGD becomes GD with learning rate ``eta/(N rho)``.

Examples
--------
>>> import numpy as np
>>> from meanfield import Network
>>> x = np.random.default_rng(0).standard_normal((4, 8))
>>> k = ngd_kernel(Network("tanh", depth=2, weight_var=1.5, bias_var=0.1), x, method="block_diagonal")
>>> round(k.alpha, 10), k.is_isotropic
(3.0, True)
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ._checks import check_array, check_finite_array, check_int, check_nonneg, check_positive
from ._interop import short_repr

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ._typing import ArrayLike
    from .network import Network

__all__ = ["METHODS", "NGDKernel", "NGDDynamics", "ngd_kernel", "ngd_dynamics", "layer_ntks"]

#: NGD variants (``"gd"`` is plain gradient descent for comparison)
METHODS = ("gd", "full", "block_diagonal", "kfac", "unit_wise")

#: relative deviation ``max |Theta_bar - alpha I| / alpha`` below which a kernel counts as isotropic
ISOTROPY_RTOL = 1e-8


def _pinv_apply(K: np.ndarray, B: np.ndarray, reg: float) -> np.ndarray:
    """``B (K + reg I)^+`` for a symmetric PSD ``K`` (eigenvalues at or below ``n eps lambda_max`` dropped)."""
    n = K.shape[0]
    lam, U = np.linalg.eigh(0.5 * (K + K.T) + reg * np.eye(n))
    tol = 10 * n * np.finfo(float).eps * max(float(np.max(np.abs(lam))), 1e-300)
    inv = np.where(lam > tol, 1.0 / np.where(lam > tol, lam, 1.0), 0.0)
    return ((B @ U) * inv) @ U.T


def layer_ntks(network: "Network", x: ArrayLike) -> tuple:
    r"""Infinite-width per-layer Grams of ``network`` (NTK parameterization) on the rows of ``x``.

    Returns ``(theta_layers, kh_layers, kdelta_layers)``, tuples of ``L`` (weight layers) ``(n, n)`` arrays:
    ``K^h_l = q^l = sigma_{w,l}^2 qhat^{l-1} + sigma_{b,l}^2`` (the Gram of the augmented layer input
    ``(sigma_w h / sqrt(M_{l-1}), sigma_b)``), ``K^delta_l = qtilde^l`` (Karakida's back-propagated overlap, summed
    over units) and ``Theta_l = K^delta_l o K^h_l``, whose sum is the NTK (Jacot et al. 2018). All come from
    :func:`meanfield.trace.trace` (one layer sweep).

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network, ntk_kernel
    >>> x = np.random.default_rng(1).standard_normal((3, 5))
    >>> th, kh, kd = layer_ntks(Network("relu", depth=2, weight_var=2.0, bias_var=0.1), x)
    >>> bool(np.allclose(sum(th), ntk_kernel(Network("relu", depth=2, weight_var=2.0, bias_var=0.1), x)))
    True
    """
    from .network import Network
    from .trace import trace

    if not isinstance(network, Network):
        raise TypeError(f"network must be a meanfield.Network, got {type(network).__name__}")
    tr = trace(network, x, parameterization="ntk")
    kh = tuple(np.array(q) for q in tr.q)
    kd = tuple(np.array(t) for t in tr.qtilde)
    return tuple(a * b for a, b in zip(kd, kh)), kh, kd


# ------------------------------------------------------------------------------------------------------ kernel
@dataclass(frozen=True)
class NGDKernel:
    r"""Function-space kernel ``Theta_bar = J (G~ + rho I)^{-1} J^T / N`` of one NGD variant at infinite width.

    Attributes
    ----------
    method : str
        One of :data:`METHODS`.
    damping : float
        ``rho``.
    train : ndarray (N, N)
        ``Theta_bar(X, X)`` (the same for each of the C outputs).
    test : ndarray (N', N) or None
        ``Theta_bar(X', X)`` (None without ``x_test``; ``unit_wise``: only with ``damping > 0``).
    alpha : float
        ``tr Theta_bar / N``: the isotropic constant when ``Theta_bar = alpha I``.
    isotropy_error : float
        ``max |Theta_bar - alpha I| / alpha``.
    eigenvalues : ndarray (N,)
        Eigenvalues of ``Theta_bar(X, X)`` (ascending): the per-mode rates ``1 - eta lambda``.
    integration_error : float
        Standard error (largest entry of ``train``) of the randomized quasi-Monte Carlo integral of the damped
        unit-wise kernel; 0 for the methods computed in closed form.
    """

    method: str
    damping: float
    train: np.ndarray
    test: Optional[np.ndarray]
    alpha: float
    isotropy_error: float
    eigenvalues: np.ndarray
    integration_error: float = 0.0

    __repr__ = short_repr

    @property
    def is_isotropic(self) -> bool:
        return bool(self.isotropy_error < ISOTROPY_RTOL)

    @property
    def critical_learning_rate(self) -> float:
        """``2 / lambda_max(Theta_bar)``: the linearised dynamics diverge above it."""
        return float(2.0 / self.eigenvalues[-1])

    def to_dict(self) -> dict:
        return {"method": self.method, "damping": self.damping, "train": self.train.tolist(),
                "test": None if self.test is None else self.test.tolist(), "alpha": self.alpha,
                "isotropy_error": self.isotropy_error, "eigenvalues": self.eigenvalues.tolist(),
                "integration_error": self.integration_error}


def _active_fraction(activation, q: np.ndarray) -> np.ndarray:
    """``p = P(phi'(u) != 0)`` for ``u ~ N(0, q)`` (vectorised over ``q``)."""
    name = activation.name
    if name == "relu":
        return np.full_like(q, 0.5)
    if name == "hard_tanh":
        from scipy.special import erf

        return erf(1.0 / np.sqrt(2.0 * np.maximum(q, 1e-300)))
    if activation.code < 0:
        raise ValueError(f"unit_wise: custom activation {name!r}: the fraction of units with phi'(u) != 0 is not "
                         "known; use a built-in activation")
    return np.ones_like(q)   # phi' vanishes at most on a null set (tanh, erf, gelu, leaky_relu, linear, ...)


def _check_method(method, damping):
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    rho = float(check_nonneg("damping", damping, scalar=True))
    if method == "gd" and rho > 0:
        raise ValueError("damping must be 0 for method='gd' (plain gradient descent has no Fisher matrix to damp)")
    return rho


#: randomized quasi-Monte Carlo replicates of the damped unit-wise integral (their spread gives its standard error)
UNIT_WISE_REPLICATES = 8


def _psd_sqrt(A: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix (negative round-off eigenvalues clipped)."""
    lam, U = np.linalg.eigh(0.5 * (A + A.T))
    return (U * np.sqrt(np.clip(lam, 0.0, None))) @ U.T


def _unit_wise_expectation(activation, q: np.ndarray, cov_g: np.ndarray, n_train: int, c: float, n_points: int,
                           seed: int) -> tuple:
    r"""Per-unit damped kernel ``E[d' (k' o d)^T (D q D + c I)^{-1}]`` over the unit's law, and its standard error.

    ``q`` and ``cov_g`` are over all points (the first ``n_train`` are the training inputs ``X``, the rest test
    inputs ``X'``); ``u ~ N(0, q)`` and ``g ~ N(0, cov_g)`` are independent and ``d = phi'(u) o g`` is the law of a
    unit's scaled back-propagated vector ``sqrt(M_l) delta^l_{., i}`` at infinite width. On the training block
    (``D = diag(d_X)``, ``q = q(X, X)``) the integrand is ``D q D (D q D + c I)^{-1}``; the test rows use
    ``d' = d_{X'}`` and ``k' = q(X', X)``. A ``2(N + N')``-dimensional Gaussian integral, by randomized quasi-Monte
    Carlo: ``UNIT_WISE_REPLICATES`` independently scrambled Sobol sequences (``n_points`` points in all) mapped
    through the normal quantile; the mean of the replicates is the estimate, their standard deviation over
    ``sqrt(R)`` its standard error. The integrand is bounded, so the error is at most the Monte-Carlo
    ``O(n_points^{-1/2})`` (relu's step ``phi'``); measured ``~ n_points^{-1.1}`` for tanh. Cost
    ``O(n_points N^3)`` (one batched ``eigh`` per chunk).

    Returns ``(train (N, N), test (N', N), err_train (N, N))``.
    """
    from scipy.special import ndtri
    from scipy.stats import qmc

    n_all, n = q.shape[0], n_train
    R = UNIT_WISE_REPLICATES
    m = max(int(math.ceil(math.log2(max(n_points // R, 2)))), 1)
    sq, sg = _psd_sqrt(q), _psd_sqrt(cov_g)
    qx, qt = q[:n, :n], q[n:, :n]
    chunk = max(1, 2 ** 21 // (n_all * n_all))
    reps, reps_t = [], []
    for ss in np.random.SeedSequence([seed, n_all]).spawn(R):
        z = qmc.Sobol(2 * n_all, scramble=True, seed=np.random.default_rng(ss)).random_base2(m)
        z = ndtri(np.clip(z, 1e-16, 1.0 - 1e-16))
        acc, acc_t = np.zeros((n, n)), np.zeros((n_all - n, n))
        for a in range(0, z.shape[0], chunk):
            u = z[a:a + chunk, :n_all] @ sq
            d_all = np.asarray(activation.dphi(u), dtype=float) * (z[a:a + chunk, n_all:] @ sg)
            d = d_all[:, :n]
            A = d[:, :, None] * qx[None] * d[:, None, :]
            # A = U diag(lam) U^T (PSD): A (A + c)^{-1} = U diag(lam / (lam + c)) U^T, stable for any c > 0.
            # Eigenvalues at or below the round-off level n eps lam_max are the exact null space of A (d_n = 0 or a
            # singular q), on which both integrands vanish identically: dropped, as in the pseudo-inverse
            lam, U = np.linalg.eigh(A)
            keep = lam > 10 * n * np.finfo(float).eps * np.abs(lam).max(-1, keepdims=True)
            inv = np.where(keep, 1.0 / (np.where(keep, lam, 0.0) + c), 0.0)
            V = U * np.sqrt(np.where(keep, lam, 0.0) * inv)[:, None, :]
            Vf = V.transpose(1, 0, 2).reshape(n, -1)
            acc += Vf @ Vf.T                                       # sum_p U diag(lam / (lam + c)) U^T
            if n_all > n:
                B = d_all[:, n:, None] * qt[None] * d[:, None, :]        # d' (k' o d)^T
                W = (B @ U) * inv[:, None, :]
                acc_t += W.transpose(1, 0, 2).reshape(n_all - n, -1) @ U.transpose(1, 0, 2).reshape(n, -1).T
        reps.append(acc / z.shape[0])
        reps_t.append(acc_t / z.shape[0])
    reps_a = np.array(reps)
    mean = reps_a.mean(0)
    err = reps_a.std(0, ddof=1) / math.sqrt(R)
    return 0.5 * (mean + mean.T), np.array(reps_t).mean(0), err


def ngd_kernel(network: "Network", x: ArrayLike, x_test: Optional[ArrayLike] = None, *, method: str = "full",
               damping: float = 0.0, width: Optional[int] = None, n_points: int = 2 ** 15) -> NGDKernel:
    r"""Infinite-width function-space kernel ``Theta_bar`` of NGD with the exact or an approximate Fisher matrix.

    Karakida & Osawa (NeurIPS 2020), NTK parameterization; see the module docstring for the formula of each method
    and ``docs/natural_gradient.md`` for the derivations.

    Parameters
    ----------
    network : Network
        The architecture (``L = depth + 1`` weight layers).
    x : array_like (N, M_0)
        Training inputs.
    x_test : array_like (N', M_0), optional
        Test inputs for ``Theta_bar(X', X)`` (``unit_wise``: with ``damping > 0`` only).
    method : {"gd", "full", "block_diagonal", "kfac", "unit_wise"}
    damping : float
        ``rho >= 0`` (``G~ + rho I``; K-FAC damps each Kronecker factor by ``sqrt(rho)``); 0 is the pseudo-inverse.
        For ``unit_wise`` the infinite-width kernel is the limit ``M -> infinity`` at fixed ``rho M``: pass the
        damping ``rho = rho_tilde / M`` that the finite network of width ``M`` uses (``rho = 0``: the pseudo-inverse
        kernel, which finite networks do not follow; see the module docstring).
    width : int, optional
        ``M`` (hidden widths ``round(alpha_l M)``), required for ``unit_wise`` only.
    n_points : int
        Quasi-Monte Carlo points of the damped ``unit_wise`` integral (``>= 16``; standard error in
        ``integration_error``); unused otherwise.

    Returns
    -------
    NGDKernel

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network
    >>> x = np.random.default_rng(0).standard_normal((4, 8))
    >>> net = Network("relu", depth=2, weight_var=2.0, bias_var=0.1)
    >>> round(ngd_kernel(net, x, method="kfac").alpha, 10)        # N (L - 1) + 1 with N = 4, L = 3
    9.0
    >>> round(ngd_kernel(net, x, method="unit_wise", width=100).alpha, 10)   # M (L - 1) / 2 + 1
    101.0
    >>> k = ngd_kernel(net, x, method="unit_wise", width=100, damping=0.1 / 100, n_points=2 ** 12)
    >>> bool(50 < k.alpha < 101 and k.integration_error < 0.02 * k.alpha)   # damping slows the small-|delta| units
    True
    """
    from .network import Network

    if not isinstance(network, Network):
        raise TypeError(f"network must be a meanfield.Network, got {type(network).__name__}")
    rho = _check_method(method, damping)
    X = check_finite_array("x", x)
    if X.ndim != 2 or X.shape[0] < 1:
        raise ValueError(f"x must be a 2-D array (N, M_0), got shape {X.shape}")
    n = X.shape[0]
    Xt = None
    if x_test is not None:
        Xt = check_finite_array("x_test", x_test)
        if Xt.ndim != 2 or Xt.shape[1] != X.shape[1] or Xt.shape[0] < 1:
            raise ValueError(f"x_test must have shape (N', {X.shape[1]}), got {Xt.shape}")
        if method == "unit_wise" and rho == 0:
            raise ValueError("x_test is not supported for method='unit_wise' at damping = 0 (the pseudo-inverse "
                             "kernel at a test input depends on 1 / delta at the training inputs, whose mean "
                             "diverges); give damping > 0")
    Xall = X if Xt is None else np.vstack([X, Xt])
    th, kh, kd = layer_ntks(network, Xall)
    tr_, te_ = slice(0, n), slice(n, Xall.shape[0])
    integration_error = 0.0

    def split(A):
        return A[tr_, tr_], (None if Xt is None else A[te_, tr_])

    L = len(th)
    if method == "gd":
        A, B = split(sum(th))
        train, test = A / n, (None if B is None else B / n)
    elif method == "full":
        A, B = split(sum(th))
        train = _pinv_apply(A, A, n * rho)
        test = None if B is None else _pinv_apply(A, B, n * rho)
    elif method == "block_diagonal":
        train, test = np.zeros((n, n)), (None if Xt is None else np.zeros((Xt.shape[0], n)))
        for T in th:
            A, B = split(T)
            train = train + _pinv_apply(A, A, n * rho)
            if B is not None:
                test = test + _pinv_apply(A, B, n * rho)
    elif method == "kfac":
        eps = math.sqrt(rho)
        train, test = np.zeros((n, n)), (None if Xt is None else np.zeros((Xt.shape[0], n)))
        for H, D in zip(kh, kd):
            Ah, Bh = split(H)
            Ad, Bd = split(D)
            train = train + n * _pinv_apply(Ah, Ah, n * eps) * _pinv_apply(Ad, Ad, n * eps)
            if Bh is not None:
                test = test + n * _pinv_apply(Ah, Bh, n * eps) * _pinv_apply(Ad, Bd, n * eps)
    else:  # unit_wise
        if width is None:
            raise ValueError("width must be given (an int >= 1) for method='unit_wise'")
        M = check_int("width", width, 1)
        q1 = kh[0][tr_, tr_]
        lam = np.linalg.eigvalsh(q1)
        if rho == 0 and lam[0] <= 10 * n * np.finfo(float).eps * lam[-1]:
            raise ValueError("unit_wise: the augmented input Gram q^1(x, x) is singular (N > M_0 + 1, or repeated "
                             "inputs): the unit-wise projectors are then not diagonal and the theory does not apply "
                             "at damping = 0 (use damping > 0)")
        if rho == 0:
            diag = np.ones(n)   # the readout unit (C = 1): its projector is the identity
            for l, act in enumerate(network.activations):
                Ml = max(int(round(network.alphas[l + 1] * M)), 1)
                diag = diag + Ml * _active_fraction(act, np.diagonal(kh[l])[tr_].copy())
            train, test = np.diag(diag), None
        else:
            # readout (one unit, delta = 1): K^h (K^h + N rho)^{-1}; hidden layer l: M_l E[F_{c_l}(d)],
            # c_l = N rho M_l (module docstring)
            check_int("n_points", n_points, 2 * UNIT_WISE_REPLICATES)
            qL, qLt = split(kh[-1])
            train = _pinv_apply(qL, qL, n * rho)
            test = None if qLt is None else _pinv_apply(qL, qLt, n * rho)
            var = 0.0
            for l, act in enumerate(network.activations):
                Ml = max(int(round(network.alphas[l + 1] * M)), 1)
                cov_g = network.weight_vars[l + 1] * kd[l + 1]
                F, Ft, err = _unit_wise_expectation(act, kh[l], cov_g, n, n * rho * Ml, n_points, l)
                train = train + Ml * F
                if test is not None:
                    test = test + Ml * Ft
                var = var + (Ml * float(np.max(err))) ** 2
            integration_error = math.sqrt(var)
    train = 0.5 * (train + train.T)
    alpha = float(np.trace(train) / n)
    iso = float(np.max(np.abs(train - alpha * np.eye(n))) / alpha) if alpha > 0 else math.inf
    ev = np.linalg.eigvalsh(train)
    if not np.all(np.isfinite(ev)) or ev[-1] <= 0:
        raise FloatingPointError(f"ngd_kernel: the {method} kernel is not finite or vanishes (overflow, or a "
                                 "network whose Jacobian is zero)")
    return NGDKernel(method, rho, train, test, alpha, iso, ev, integration_error)


# ---------------------------------------------------------------------------------------------------- dynamics
@dataclass(frozen=True)
class NGDDynamics:
    r"""Predicted NGD training curves in the NTK regime (:func:`ngd_dynamics`).

    Attributes
    ----------
    kernel : NGDKernel
    learning_rate : float
    steps : ndarray (n_steps + 1,)
    train : ndarray (n_steps + 1, N, C)
        ``f_t(X) = y + (I - eta Theta_bar)^t (f_0(X) - y)``.
    test : ndarray (n_steps + 1, N', C) or None
        ``f_t(X') = f_0(X') - eta Theta_bar(X', X) sum_{s<t} (f_s(X) - y)``.
    loss : ndarray (n_steps + 1,)
        ``(1/2N) sum_n ||f_t(x_n) - y_n||^2``.
    """

    kernel: NGDKernel
    learning_rate: float
    steps: np.ndarray
    train: np.ndarray
    test: Optional[np.ndarray]
    loss: np.ndarray

    __repr__ = short_repr

    def to_dict(self) -> dict:
        return {"kernel": self.kernel.to_dict(), "learning_rate": self.learning_rate, "steps": self.steps.tolist(),
                "train": self.train.tolist(), "test": None if self.test is None else self.test.tolist(),
                "loss": self.loss.tolist()}

    def plot(self, ax: Optional["Axes"] = None, **kwargs: Any) -> "Axes":
        """Training loss against the step (log scale), on ``ax`` (a new figure if None)."""
        from .plotting import _new_ax

        ax = _new_ax(ax)
        kwargs.setdefault("label", self.kernel.method)
        ax.semilogy(self.steps, self.loss, **kwargs)
        ax.set_xlabel(r"step $t$")
        ax.set_ylabel(r"$\mathcal{L}_t$")
        return ax


def ngd_dynamics(network: "Network", x_train: ArrayLike, y_train: ArrayLike, learning_rate: float, n_steps: int,
                 *, method: str = "full", damping: float = 0.0, width: Optional[int] = None, n_points: int = 2 ** 15,
                 f0_train: Optional[ArrayLike] = None, x_test: Optional[ArrayLike] = None,
                 f0_test: Optional[ArrayLike] = None, kernel: Optional[NGDKernel] = None) -> NGDDynamics:
    r"""NTK-regime training curves of NGD (or GD) with the exact or an approximate Fisher matrix.

    ``f_t(X) - y = (I - eta Theta_bar)^t (f_0(X) - y)``; isotropic methods (``Theta_bar = alpha I``) give
    ``(1 - eta alpha)^t (f_0 - y)`` (Karakida & Osawa 2020). ``Theta_bar`` from :func:`ngd_kernel`.

    Parameters
    ----------
    network : Network
    x_train : array_like (N, M_0)
    y_train : array_like (N,) or (N, C)
    learning_rate : float
        ``eta > 0`` (``theta <- theta - eta (G~ + rho I)^{-1} grad L``, ``L = (1/2N) sum ||f - y||^2``).
    n_steps : int
    method, damping, width, n_points
        As in :func:`ngd_kernel` (``unit_wise``: use ``damping = rho_tilde / M``, the regime finite networks follow).
    f0_train, f0_test : array_like, optional
        Outputs at initialization (default 0, the mean over initializations).
    x_test : array_like (N', M_0), optional
    kernel : NGDKernel, optional
        The :func:`ngd_kernel` of these inputs, ``method`` and ``damping`` (e.g. ``ngd_dynamics(...).kernel``), reused
        instead of recomputed: curves from many initial outputs at the cost of one kernel (the unit-wise kernel with
        damping is a quasi-Monte Carlo integral).

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network
    >>> x = np.random.default_rng(0).standard_normal((4, 8))
    >>> d = ngd_dynamics(Network("tanh", 2, 1.5, 0.1), x, np.ones(4), 0.5, 3, method="full")
    >>> np.allclose(d.train[:, 0, 0], 1 - 0.5 ** np.arange(4))
    True
    """
    eta = float(check_positive("learning_rate", learning_rate, scalar=True))
    n_steps = check_int("n_steps", n_steps, 1)
    y = check_array("y_train", y_train)
    X = check_finite_array("x_train", x_train)
    if X.ndim != 2:
        raise ValueError(f"x_train must be a 2-D array (N, M_0), got shape {X.shape}")
    n = X.shape[0]
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != n:
        raise ValueError(f"y_train must have shape (N,) or (N, C) with N = {n}, got {np.shape(y_train)}")
    if method == "unit_wise" and y.shape[1] != 1:
        raise ValueError("method='unit_wise' needs one output (y_train of shape (N,) or (N, 1)): with C > 1 a unit's "
                         "rows are parallel across outputs and the kernel is not isotropic")
    if kernel is None:
        k = ngd_kernel(network, X, x_test, method=method, damping=damping, width=width, n_points=n_points)
    elif not isinstance(kernel, NGDKernel):
        raise TypeError(f"kernel must be an NGDKernel (from ngd_kernel), got {type(kernel).__name__}")
    elif (kernel.method != method or kernel.damping != damping or kernel.train.shape != (n, n)
          or (x_test is None) != (kernel.test is None)):
        raise ValueError(f"kernel must be the ngd_kernel of these inputs with method={method!r}, damping={damping!r} "
                         f"(and x_test given to both or neither), got method={kernel.method!r}, "
                         f"damping={kernel.damping!r}, shape {kernel.train.shape}")
    else:
        k = kernel
    f0 = np.zeros_like(y) if f0_train is None else check_array("f0_train", f0_train)
    if f0.size != y.size:
        raise ValueError(f"f0_train must have the shape of y_train {y.shape}, got {f0.shape}")
    f0 = f0.reshape(y.shape)
    kt = k.test
    test: Optional[list] = None
    if kt is not None:
        nt = kt.shape[0]
        g0 = np.zeros((nt, y.shape[1])) if f0_test is None else check_array("f0_test", f0_test)
        if g0.size != nt * y.shape[1]:
            raise ValueError(f"f0_test must have shape ({nt}, {y.shape[1]}), got {np.shape(g0)}")
        test = [g0.reshape(nt, y.shape[1]).copy()]
    if eta * k.eigenvalues[-1] >= 2.0:
        warnings.warn(f"learning_rate = {eta:g} is at or above the critical 2 / lambda_max(Theta_bar) = "
                      f"{k.critical_learning_rate:.4g}: the linearised dynamics diverge", RuntimeWarning, stacklevel=2)
    r = f0 - y
    train = [f0.copy()]
    for _ in range(n_steps):
        if test is not None and kt is not None:
            test.append(test[-1] - eta * kt @ r)
        r = r - eta * k.train @ r
        train.append(y + r)
    train_a = np.array(train)
    loss = 0.5 * np.sum((train_a - y) ** 2, axis=(1, 2)) / n
    if not np.all(np.isfinite(loss)):
        raise FloatingPointError("ngd_dynamics: the predicted outputs overflowed (learning_rate far above the critical "
                                 "one?)")
    return NGDDynamics(k, eta, np.arange(n_steps + 1), train_a, None if test is None else np.array(test), loss)
