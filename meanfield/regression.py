r"""Kernel regression with the infinite-width kernels (docs/mathematics.md section 4).

* NNGP posterior (Lee et al. 2018; Rasmussen & Williams eq. 2.25-2.26): with training kernel ``K = K(X, X)``, cross
  kernel ``K_* = K(X_*, X)``, observation noise ``sigma_n^2``,

  .. math::

      \mu_* = K_* (K + \sigma_n^2 I)^{-1} Y,\qquad
      \Sigma_* = K(X_*, X_*) - K_* (K + \sigma_n^2 I)^{-1} K_*^T .

* NTK gradient flow on the MSE loss ``(1/2) ||f(X) - Y||^2`` (Jacot et al. 2018; Lee et al. 2019) with learning rate
  ``eta``: the training outputs obey ``df/dt = -eta Theta (f - Y)``, so

  .. math::

      f_t(X) = Y + e^{-\eta \Theta t}(f_0(X) - Y),\qquad
      f_t(X_*) = f_0(X_*) + \Theta_* \Theta^{-1} (I - e^{-\eta\Theta t}) (Y - f_0(X)),

  which at ``t = inf`` is the kernel interpolant ``Theta_* Theta^{-1} Y`` (for ``f_0 = 0``). Computed through the
  eigendecomposition ``Theta = U diag(lambda) U^T`` with ``(1 - e^{-eta lambda t}) / lambda = -expm1(-eta lambda t) /
  lambda`` (stable for small ``lambda t``).
* Trainability (Xiao, Pennington & Schoenholz 2020): the condition number ``kappa = lambda_max / lambda_min`` of
  ``Theta(X, X)``; the slowest eigenmode relaxes ``kappa`` times slower than the fastest (against depth:
  :mod:`meanfield.trainability`).
* NTK-GP (Lee et al. 2019, eq. 16): mean *and covariance* of the ensemble of trained networks at any ``t``, with
  neural-tangents' ridge and time conventions: :func:`gaussian_prediction`, :func:`ntk_gp_regression`
  (docs/regression.md).

Examples
--------
>>> import numpy as np
>>> from meanfield import Network
>>> from meanfield.regression import nngp_regression
>>> rng = np.random.default_rng(0)
>>> X, Xs = rng.standard_normal((20, 3)), rng.standard_normal((5, 3))
>>> post = nngp_regression(Network("erf", depth=2, weight_var=1.5), X, np.sin(X[:, 0]), Xs, noise_var=1e-2)
>>> post.mean.shape, bool(np.all(post.variance >= 0))
((5,), True)
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from typing import Any

    from ._typing import ArrayLike, NetworkLike

import math
import warnings
from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.linalg

from ._checks import as_float_array, check_array, check_nonneg, check_positive
from ._interop import short_repr

__all__ = [
    "GPPosterior",
    "NTKPrediction",
    "gp_posterior",
    "ntk_gradient_flow",
    "ntk_condition_number",
    "nngp_regression",
    "ntk_regression",
    "GaussianPrediction",
    "gaussian_prediction",
    "ntk_gp_regression",
]


# relative asymmetry allowed in a kernel matrix: kernels assembled in floating point are symmetric to a few ulps of
# their largest entry; anything far above that is not a kernel (cho_factor would silently read one triangle only)
_SYMMETRY_RTOL = 1e-10



def _kernels(network, *inputs, **options):
    """:func:`meanfield.kernels` on ``x_train`` / ``x_test``: its errors about the inputs name these parameters (the
    kernel's own names are ``x1, x2``)."""
    from .kernels import kernels

    try:
        return kernels(network, *inputs, **options)
    except ValueError as exc:
        msg = str(exc)
        for own in ("x1, x2", "x1", "x2"):
            if msg.startswith(own):
                raise ValueError("x_train, x_test" + msg[len(own):]) from exc
        raise

def _square(name, a):
    a = check_array(name, a, 2)
    if a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square 2-D matrix, got shape {a.shape}")
    scale = float(np.max(np.abs(a)))
    asym = float(np.max(np.abs(a - a.T)))
    if asym > _SYMMETRY_RTOL * scale:
        raise ValueError(f"{name} must be symmetric (a kernel matrix); max |{name} - {name}^T| = {asym:.3g} "
                         f"exceeds {_SYMMETRY_RTOL:g} x max |{name}| = {_SYMMETRY_RTOL * scale:.3g}")
    return a


def _targets(y, n, name="y_train"):
    y = check_array(name, y, (1, 2))
    if y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) or ({n}, n_outputs), {n} being the number of training "
                         f"inputs (rows of x_train / the kernel), got {y.shape}")
    return y


def _cross(name, a, n):
    a = check_array(name, a, 2)
    if a.shape[1] != n:
        raise ValueError(f"{name} must have shape (n_test, {n}), got {a.shape}")
    return a


@dataclass(frozen=True)
class GPPosterior:
    """Gaussian-process posterior at the test points.

    Attributes
    ----------
    mean : ndarray, shape (n_test,) or (n_test, n_outputs)
    variance : ndarray, shape (n_test,)
        Posterior variance of the latent function (add ``noise_var`` for the predictive variance of an observation).
    covariance : ndarray or None, shape (n_test, n_test)
        Full posterior covariance when ``k_test`` was a matrix.
    noise_var : float
    """

    mean: np.ndarray
    variance: np.ndarray
    covariance: Optional[np.ndarray]
    noise_var: float

    __repr__ = short_repr

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "variance": self.variance.tolist(),
                "covariance": None if self.covariance is None else self.covariance.tolist(),
                "noise_var": self.noise_var}


def gp_posterior(k_train: ArrayLike, k_cross: ArrayLike, y_train: ArrayLike, k_test: Optional[ArrayLike] = None,
                 noise_var: float = 0.0) -> GPPosterior:
    r"""GP posterior mean and variance: ``mu = K_* (K + s I)^{-1} Y``, ``Sigma = K_** - K_* (K + s I)^{-1} K_*^T``.

    Parameters
    ----------
    k_train : (n, n) array
        Prior kernel on the training inputs (e.g. the NNGP); symmetric to a relative 1e-10.
    k_cross : (n_test, n) array
        Kernel between test and training inputs.
    y_train : (n,) or (n, C) array
    k_test : (n_test,) or (n_test, n_test) array, optional
        Prior variances (diagonal) or covariance at the test inputs; without it the variance is not computed (NaN).
    noise_var : float
        Observation noise variance ``sigma_n^2 >= 0``.

    Uses a Cholesky factorisation of ``K + s I`` (raises ``numpy.linalg.LinAlgError`` with advice if it is not
    positive definite: add ``noise_var``).

    Raises
    ------
    TypeError
        If an array is not real numeric data (complex, bool, str, object).
    ValueError
        For NaN/inf entries, empty arrays, a wrong number of dimensions, mismatched shapes, or a ``k_train`` that is
        not symmetric.

    Examples
    --------
    >>> import numpy as np
    >>> K = np.array([[2.0, 1.0], [1.0, 2.0]])
    >>> post = gp_posterior(K, K, np.array([1.0, -1.0]), k_test=np.diag(K))   # at the training points, no noise
    >>> np.allclose(post.mean, [1.0, -1.0]), np.allclose(post.variance, 0.0)
    (True, True)
    """
    K = _square("k_train", k_train)
    n = K.shape[0]
    Ks = _cross("k_cross", k_cross, n)
    y = _targets(y_train, n)
    s = check_nonneg("noise_var", noise_var, scalar=True)
    A = K + s * np.eye(n)
    try:
        cf = scipy.linalg.cho_factor(A, lower=True, check_finite=False)
    except np.linalg.LinAlgError as exc:
        raise np.linalg.LinAlgError("k_train + noise_var * I is not positive definite; increase noise_var") from exc
    mean = Ks @ scipy.linalg.cho_solve(cf, y, check_finite=False)
    cov = None
    var = np.full(Ks.shape[0], np.nan)
    if k_test is not None:
        kt = check_array("k_test", k_test, (1, 2))
        V = scipy.linalg.solve_triangular(cf[0], Ks.T, lower=True, check_finite=False)   # L^{-1} K_*^T
        if kt.ndim == 2:
            if kt.shape != (Ks.shape[0], Ks.shape[0]):
                raise ValueError(f"k_test must have shape ({Ks.shape[0]},) or ({Ks.shape[0]}, {Ks.shape[0]}), "
                                 f"got {kt.shape}")
            cov = kt - V.T @ V
            cov = 0.5 * (cov + cov.T)
            var = np.diag(cov).copy()
        else:
            if kt.shape != (Ks.shape[0],):
                raise ValueError(f"k_test must have shape ({Ks.shape[0]},) or ({Ks.shape[0]}, {Ks.shape[0]}), "
                                 f"got {kt.shape}")
            var = kt - np.einsum("ij,ij->j", V, V)
        scale = max(float(np.max(np.abs(np.diag(K)))), 1e-300)
        neg = var < 0
        if np.any(var < -1e-8 * scale):
            warnings.warn(f"posterior variance negative down to {var.min():.3g} (ill-conditioned kernel); clipped to 0",
                          RuntimeWarning, stacklevel=2)
        var = np.where(neg, 0.0, var)
    return GPPosterior(mean=mean, variance=var, covariance=cov, noise_var=s)


@dataclass(frozen=True)
class NTKPrediction:
    """Mean outputs of a network trained by gradient flow in the NTK regime.

    Attributes
    ----------
    times : ndarray, shape (n_t,)
        Training times ``t`` (``inf`` allowed).
    test : ndarray, shape (n_t, n_test[, C])
        ``f_t(X_*)``.
    train : ndarray, shape (n_t, n[, C])
        ``f_t(X)``.
    learning_rate : float
    condition_number : float
        ``lambda_max / lambda_min`` of ``Theta(X, X)``; ``inf`` (with a RuntimeWarning) when it is singular to
        round-off (see :func:`ntk_condition_number`).
    """

    times: np.ndarray
    test: np.ndarray
    train: np.ndarray
    learning_rate: float
    condition_number: float

    __repr__ = short_repr

    def to_dict(self) -> dict:
        return {"times": self.times.tolist(), "test": self.test.tolist(), "train": self.train.tolist(),
                "learning_rate": self.learning_rate, "condition_number": self.condition_number}


def ntk_gradient_flow(theta_train: ArrayLike, theta_cross: ArrayLike, y_train: ArrayLike, t: ArrayLike,
                      learning_rate: float = 1.0, f0_train: Optional[ArrayLike] = None,
                      f0_test: Optional[ArrayLike] = None, diag_reg: float = 0.0) -> NTKPrediction:
    r"""Outputs of gradient flow on ``(1/2)||f(X) - Y||^2`` at times ``t`` with a constant NTK.

    ``f_t(X_*) = f_0(X_*) + Theta_* Theta^{-1} (I - exp(-eta Theta t)) (Y - f_0(X))`` and
    ``f_t(X) = Y + exp(-eta Theta t) (f_0(X) - Y)`` (Jacot 2018; Lee 2019). ``t = inf`` gives the kernel interpolant;
    for a singular ``theta_train`` (eigenvalues at or below ``n eps lambda_max``) the pseudo-inverse limit: those modes
    never train and keep their residual (the condition number is then ``inf``, with a RuntimeWarning).

    Parameters
    ----------
    theta_train : (n, n) array
        ``Theta(X, X)``, symmetric (to a relative 1e-10) and positive semi-definite.
    theta_cross : (n_test, n) array
        ``Theta(X_*, X)``.
    y_train : (n,) or (n, C) array
    t : float or 1-D array of floats >= 0 (``numpy.inf`` allowed)
    learning_rate : float
        eta > 0.
    f0_train, f0_test : arrays, optional
        Network outputs at initialization (default 0: the mean over initializations).
    diag_reg : float
        Absolute ridge >= 0 added to ``theta_train`` (``Theta + diag_reg I`` drives the flow): makes ``t = inf``
        the ridge predictor ``Theta_* (Theta + diag_reg I)^{-1} Y`` of a singular kernel. For neural-tangents'
        relative ridge and the predictive covariance see :func:`gaussian_prediction`.

    Examples
    --------
    >>> import numpy as np
    >>> th = np.array([[2.0, 0.5], [0.5, 1.0]])
    >>> p = ntk_gradient_flow(th, th, np.array([1.0, 2.0]), [0.0, np.inf])
    >>> np.allclose(p.test[1], [1.0, 2.0]), np.allclose(p.test[0], 0.0)
    (True, True)
    """
    Th = _square("theta_train", theta_train)
    n = Th.shape[0]
    Ts = _cross("theta_cross", theta_cross, n)
    y = _targets(y_train, n)
    eta = check_positive("learning_rate", learning_rate, scalar=True)
    times = np.atleast_1d(as_float_array("t", t))
    if times.ndim != 1 or times.size < 1 or np.any(np.isnan(times)) or np.any(times < 0):
        raise ValueError(f"t must be a number or a 1-D array of numbers >= 0 (inf allowed), got {t!r}")
    f0 = np.zeros_like(y) if f0_train is None else check_array("f0_train", f0_train)
    f0s = np.zeros((Ts.shape[0],) + y.shape[1:]) if f0_test is None else check_array("f0_test", f0_test)
    if f0.shape != y.shape:
        raise ValueError(f"f0_train must have the shape of y_train {y.shape}, got {f0.shape}")
    if f0s.shape != (Ts.shape[0],) + y.shape[1:]:
        raise ValueError(f"f0_test must have shape {(Ts.shape[0],) + y.shape[1:]}, got {f0s.shape}")
    reg = check_nonneg("diag_reg", diag_reg, scalar=True)
    lam, U = np.linalg.eigh(0.5 * (Th + Th.T) + reg * np.eye(n))
    if not np.all(np.isfinite(lam)):
        raise ValueError("theta_train (in ntk_regression: the NTK of x_train) is too large for its "
                         "eigendecomposition (overflow); rescale the inputs or the kernel")
    cond = ntk_condition_number(Th, _eigvals=lam)
    tol = n * np.finfo(float).eps * max(abs(lam).max(), 1e-300)
    if np.any(lam < -tol):
        raise ValueError(f"theta_train must be positive semi-definite; smallest eigenvalue {lam.min():.3g}")
    lam = np.maximum(lam, 0.0)
    live = lam > tol       # modes that train; those at or below round-off (a singular theta_train) never do
    r = U.T @ (y - f0).reshape(n, -1)          # residual in the eigenbasis
    tests, trains = [], []
    for tt in times:
        if math.isinf(tt):
            # (1 - e^{-inf})/lambda on the trained modes: the pseudo-inverse (minimum-norm) limit; a mode of a
            # singular theta_train keeps its residual
            g = np.where(live, 1.0 / np.where(live, lam, 1.0), 0.0)
            decay = np.where(live, 0.0, 1.0)
        else:
            x = eta * lam * tt
            g = np.where(lam > 0, -np.expm1(-x) / np.where(lam > 0, lam, 1.0), eta * tt)
            decay = np.exp(-x)
        coef = U @ (g[:, None] * r)
        tests.append(f0s.reshape(Ts.shape[0], -1) + Ts @ coef)
        trains.append(y.reshape(n, -1) - U @ (decay[:, None] * r))
    shape_t = (len(times), Ts.shape[0]) + y.shape[1:]
    shape_r = (len(times), n) + y.shape[1:]
    return NTKPrediction(times=times, test=np.array(tests).reshape(shape_t), train=np.array(trains).reshape(shape_r),
                         learning_rate=eta, condition_number=cond)


def ntk_condition_number(theta: ArrayLike, _eigvals: Optional[np.ndarray] = None) -> float:
    r"""Condition number ``kappa = lambda_max / lambda_min`` of a symmetric kernel matrix (Xiao et al. 2020).

    ``inf`` (with a warning) when ``lambda_min <= 0`` within round-off: the kernel is singular and the slowest mode
    never trains.

    Examples
    --------
    >>> import numpy as np
    >>> ntk_condition_number(np.diag([4.0, 1.0]))
    4.0
    """
    if _eigvals is None:
        th = _square("theta", theta)
        _eigvals = np.linalg.eigvalsh(0.5 * (th + th.T))
    lmin, lmax = float(_eigvals.min()), float(_eigvals.max())
    if lmax <= 0 or lmin <= len(_eigvals) * np.finfo(float).eps * lmax:
        warnings.warn(f"kernel is singular to round-off (lambda_min = {lmin:.3g}, lambda_max = {lmax:.3g}); "
                      "condition number set to inf", RuntimeWarning, stacklevel=2)
        return math.inf
    return lmax / lmin


def _regression_inputs(x_train, y_train, x_test):
    """Validate the data of :func:`nngp_regression` / :func:`ntk_regression` under the caller's parameter names."""
    X = check_array("x_train", x_train, 2)
    Xs = check_array("x_test", x_test, 2)
    if Xs.shape[1] != X.shape[1]:
        raise ValueError(f"x_test must have shape (n_test, {X.shape[1]}) matching x_train's input dimension, "
                         f"got {Xs.shape}")
    return X, _targets(y_train, X.shape[0]), Xs


def nngp_regression(network: NetworkLike, x_train: ArrayLike, y_train: ArrayLike, x_test: ArrayLike,
                    noise_var: float = 0.0, full_covariance: bool = False, **kernel_options: Any) -> GPPosterior:
    """Bayesian inference with the infinite-width network prior: NNGP kernels of ``network``, then :func:`gp_posterior`.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network
    >>> X = np.linspace(-1, 1, 6)[:, None]
    >>> post = nngp_regression(Network("relu", depth=2, weight_var=2.0, bias_var=0.1), X, X[:, 0] ** 2, X, 1e-6)
    >>> bool(np.allclose(post.mean, X[:, 0] ** 2, atol=1e-4))
    True
    """
    x_train, y_train, x_test = _regression_inputs(x_train, y_train, x_test)
    k = _kernels(network, x_train, compute_ntk=False, **kernel_options).nngp
    k_cross = _kernels(network, x_test, x_train, compute_ntk=False, **kernel_options).nngp
    if full_covariance:
        k_test = _kernels(network, x_test, compute_ntk=False, **kernel_options).nngp
    else:
        from .kernels import nngp_diagonal
        k_test = nngp_diagonal(network, x_test, **{k: v for k, v in kernel_options.items() if k == "rtol"})
    return gp_posterior(k, k_cross, y_train, k_test=k_test, noise_var=noise_var)


def ntk_regression(network: NetworkLike, x_train: ArrayLike, y_train: ArrayLike, x_test: ArrayLike,
                   t: ArrayLike = np.inf, learning_rate: float = 1.0, diag_reg: float = 0.0,
                   **kernel_options: Any) -> NTKPrediction:
    """Mean prediction of an infinitely wide network trained by gradient flow: NTK of ``network``, then
    :func:`ntk_gradient_flow` (outputs at initialization averaged to 0; ``diag_reg`` an absolute ridge). The
    predictive covariance (NTK-GP) is :func:`ntk_gp_regression`'s.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network
    >>> X = np.linspace(-1, 1, 5)[:, None]
    >>> p = ntk_regression(Network("relu", depth=2, weight_var=2.0, bias_var=0.1), X, X[:, 0], X)
    >>> bool(np.allclose(p.test[-1], X[:, 0]))
    True
    """
    x_train, y_train, x_test = _regression_inputs(x_train, y_train, x_test)
    th = _kernels(network, x_train, **kernel_options).ntk
    th_cross = _kernels(network, x_test, x_train, **kernel_options).ntk
    return ntk_gradient_flow(th, th_cross, y_train, t, learning_rate=learning_rate, diag_reg=diag_reg)


# ------------------------------------------------------------------------------------ NTK-GP: mean and covariance
@dataclass(frozen=True)
class GaussianPrediction:
    r"""Gaussian distribution of the outputs at the test points, one per training time (:func:`gaussian_prediction`).

    Attributes
    ----------
    times : ndarray, shape (n_t,)
        Training times ``t`` (``inf`` for the end of training).
    mean : ndarray, shape (n_t, n_test[, C])
    covariance : ndarray, shape (n_t, n_test, n_test)
        Exactly symmetric and a Gram matrix ``F F^T`` (positive semi-definite up to the rounding of one product).
    get : str
        ``"ntk"`` (gradient descent on all layers) or ``"nngp"`` (readout only / Bayesian posterior at ``t = inf``).
    diag_reg : float
        The ridge added to the training kernel, in absolute units.
    """

    times: np.ndarray
    mean: np.ndarray
    covariance: np.ndarray
    get: str
    diag_reg: float

    @property
    def variance(self) -> np.ndarray:
        """Diagonal of the covariance, shape (n_t, n_test)."""
        return np.diagonal(self.covariance, axis1=1, axis2=2).copy()

    def to_dict(self) -> dict:
        return {"times": self.times.tolist(), "mean": self.mean.tolist(), "covariance": self.covariance.tolist(),
                "get": self.get, "diag_reg": self.diag_reg}


def _psd_factor(K):
    """``F`` with ``F F^T = K`` (eigenvalues clipped at 0: a kernel matrix that is singular to round-off)."""
    mu, V = np.linalg.eigh(0.5 * (K + K.T))
    tol = K.shape[0] * np.finfo(float).eps * max(float(np.abs(mu).max()), 1e-300)
    if mu.min() < -1e3 * tol:
        raise ValueError(f"the joint NNGP matrix of test and training inputs is not positive semi-definite "
                         f"(smallest eigenvalue {mu.min():.3g})")
    return V * np.sqrt(np.maximum(mu, 0.0))


def _gram(F):
    C = F @ F.T
    return 0.5 * (C + C.T)          # exactly symmetric (the two triangles of F F^T may differ in the last bit)


def gaussian_prediction(nngp_train: ArrayLike, nngp_cross: ArrayLike, nngp_test: ArrayLike, y_train: ArrayLike,
                        t: ArrayLike = np.inf, *, ntk_train: Optional[ArrayLike] = None,
                        ntk_cross: Optional[ArrayLike] = None, get: str = "ntk", learning_rate: float = 1.0, diag_reg: float = 0.0,
                        diag_reg_absolute_scale: bool = False, loss: str = "sum") -> GaussianPrediction:
    r"""Mean and covariance of an infinite ensemble of infinitely wide networks trained by gradient flow on the MSE.

    NTK-GP (``get="ntk"``; Lee et al. 2019, eq. 16): the outputs at initialization are the NNGP ``f_0 ~ GP(0, K)``,
    training is linear in the NTK ``Theta``; with ``G_t = Theta^{-1}(I - e^{-eta Theta t})`` on the training kernel,

    .. math::

        \mu_t(X_*) = \Theta_{*X} G_t Y,\qquad
        \Sigma_t = K_{**} - \Theta_{*X} G_t K_{X*} - K_{*X} G_t \Theta_{X*} + \Theta_{*X} G_t K_{XX} G_t \Theta_{X*}.

    NNGP (``get="nngp"``; only the readout trained, Lee et al. 2019 sec. 2.3.1): the same with ``Theta = K`` and
    ``Sigma_t = K_** - K_*X K^{-1}(I - e^{-2 eta K t}) K_X*``; at ``t = inf`` the GP posterior with noise
    ``diag_reg``.

    Semantics of neural-tangents' ``gradient_descent_mse_ensemble``: ``diag_reg`` is added to the training kernel
    that is inverted / exponentiated (``Theta`` for ``"ntk"``, ``K`` for ``"nngp"``), in units of its mean diagonal
    unless ``diag_reg_absolute_scale``; the NNGP ``K_XX`` inside ``Sigma`` is not regularized. neural-tangents
    minimizes the *mean* squared error, so its dynamics run at rate ``eta / y_train.size``: ``loss="mean"`` selects
    that time scale, ``loss="sum"`` (default) the rate ``eta`` of :func:`ntk_gradient_flow`.

    The covariance is assembled as a Gram matrix ``F F^T``: ``Sigma_t = B^T K_joint B`` with ``B = [I; -G_t
    Theta_X*]`` and ``K_joint`` the NNGP of the test and training inputs together, factored once, so it is exactly
    symmetric and positive semi-definite (to the rounding of one matrix product). At ``t = inf`` a singular
    ``Theta`` without ridge gives the pseudo-inverse limit (modes with eigenvalue below ``n eps lambda_max`` do not
    train), as in :func:`ntk_gradient_flow`.

    Parameters
    ----------
    nngp_train, nngp_cross, nngp_test : arrays (n, n), (n_test, n), (n_test, n_test)
        NNGP kernel ``K`` on the training inputs, between test and training inputs, on the test inputs.
    y_train : (n,) or (n, C) array
    t : float or 1-D array of floats >= 0 (``inf`` allowed)
    ntk_train, ntk_cross : arrays (n, n), (n_test, n)
        The NTK, required for ``get="ntk"``.
    get : {"ntk", "nngp"}
    learning_rate : float
        eta > 0.
    diag_reg : float
        Ridge >= 0 on the training kernel.
    diag_reg_absolute_scale : bool
        False (default, as neural-tangents): the ridge is ``diag_reg * trace / n`` of the training kernel.
    loss : {"sum", "mean"}
        Loss ``(1/2)||f - Y||^2`` (rate ``eta``) or its mean over the ``y_train.size`` entries (neural-tangents).

    Examples
    --------
    >>> import numpy as np
    >>> K = np.array([[2.0, 1.0, 0.5], [1.0, 2.0, 1.0], [0.5, 1.0, 2.0]])   # NNGP of (test, train, train)
    >>> p = gaussian_prediction(K[1:, 1:], K[:1, 1:], K[:1, :1], np.array([1.0, -1.0]), [0.0, np.inf],
    ...                         ntk_train=2 * K[1:, 1:], ntk_cross=2 * K[:1, 1:])
    >>> p.mean[0].tolist(), bool(np.allclose(p.covariance[0], K[:1, :1]))   # t = 0: the prior
    ([0.0], True)
    """
    if get not in ("ntk", "nngp"):
        raise ValueError(f"get must be 'ntk' or 'nngp', got {get!r}")
    if loss not in ("sum", "mean"):
        raise ValueError(f"loss must be 'sum' or 'mean', got {loss!r}")
    K = _square("nngp_train", nngp_train)
    n = K.shape[0]
    Ks = _cross("nngp_cross", nngp_cross, n)
    m = Ks.shape[0]
    Kss = _square("nngp_test", nngp_test)
    if Kss.shape[0] != m:
        raise ValueError(f"nngp_test must have shape ({m}, {m}) matching nngp_cross, got {Kss.shape}")
    y = _targets(y_train, n)
    eta = check_positive("learning_rate", learning_rate, scalar=True)
    reg = check_nonneg("diag_reg", diag_reg, scalar=True)
    times = np.atleast_1d(as_float_array("t", t))
    if times.ndim != 1 or times.size < 1 or np.any(np.isnan(times)) or np.any(times < 0):
        raise ValueError(f"t must be a number or a 1-D array of numbers >= 0 (inf allowed), got {t!r}")
    if get == "ntk":
        if ntk_train is None or ntk_cross is None:
            raise ValueError("get='ntk' needs ntk_train and ntk_cross")
        Th = _square("ntk_train", ntk_train)
        if Th.shape != K.shape:
            raise ValueError(f"ntk_train must have shape {K.shape} like nngp_train, got {Th.shape}")
        Ts = _cross("ntk_cross", ntk_cross, n)
        if Ts.shape != Ks.shape:
            raise ValueError(f"ntk_cross must have shape {Ks.shape} like nngp_cross, got {Ts.shape}")
    else:
        Th, Ts = K, Ks
    rate = eta / (y.size if loss == "mean" else 1.0)
    absolute = reg if diag_reg_absolute_scale else reg * float(np.trace(Th)) / n
    lam, U = np.linalg.eigh(0.5 * (Th + Th.T) + absolute * np.eye(n))
    tol = n * np.finfo(float).eps * max(float(np.abs(lam).max()), 1e-300)
    if np.any(lam < -tol * 1e3):
        raise ValueError(f"the training kernel plus diag_reg must be positive semi-definite; smallest eigenvalue "
                         f"{lam.min():.3g}")
    lam = np.maximum(lam, 0.0)
    live = lam > tol
    safe = np.where(live, lam, 1.0)
    yy = y.reshape(n, -1)
    TsU = Ts @ U
    # factor of the joint NNGP (test rows first); the NTK-GP covariance is B^T K_joint B
    F = _psd_factor(np.block([[Kss, Ks], [Ks.T, K]]))
    Fs, Fx = F[:m], F[m:]
    means, covs = [], []
    for tt in times:
        if math.isinf(tt):
            g = np.where(live, 1.0 / safe, 0.0)
        else:
            x = rate * tt * lam
            g = np.where(live, -np.expm1(-x) / safe, rate * tt)
        A = (TsU * g) @ U.T                     # Theta_*X G_t, shape (m, n)
        means.append(A @ yy)
        if get == "ntk":
            C = _gram(Fs - A @ Fx)
        else:
            # K_** - K_*X U [(1 - e^{-2 lam t}) / lam] U^T K_X*: the posterior with ridge (a Gram matrix with the
            # extra ridge factor sqrt(s) A) plus the not-yet-learned part K_*X U [e^{-2 lam t} / lam] U^T K_X*
            if math.isinf(tt):
                extra = np.zeros((m, 0))
            else:
                e = np.where(live, np.exp(-rate * tt * lam) / np.sqrt(safe), 0.0)
                extra = TsU * e
            A_inf = (TsU * np.where(live, 1.0 / safe, 0.0)) @ U.T
            C = _gram(np.hstack([Fs - A_inf @ Fx, math.sqrt(absolute) * A_inf, extra]))
        covs.append(C)
    mean = np.array(means).reshape((len(times), m) + y.shape[1:])
    return GaussianPrediction(times=times, mean=mean, covariance=np.array(covs), get=get, diag_reg=absolute)


def ntk_gp_regression(network: NetworkLike, x_train: ArrayLike, y_train: ArrayLike, x_test: ArrayLike,
                      t: ArrayLike = np.inf, *, get: str = "ntk", learning_rate: float = 1.0, diag_reg: float = 0.0,
                      diag_reg_absolute_scale: bool = False, loss: str = "sum",
                      **kernel_options: Any) -> GaussianPrediction:
    """:func:`gaussian_prediction` with the kernels of ``network``: one symmetric kernel computation on the test
    and training inputs together gives ``K``, ``Theta`` on train-train, test-train and test-test.

    Examples
    --------
    >>> import numpy as np
    >>> from meanfield import Network
    >>> X = np.linspace(-1, 1, 6)[:, None]
    >>> p = ntk_gp_regression(Network("relu", depth=2, weight_var=2.0, bias_var=0.1), X, X[:, 0], X,
    ...                       diag_reg=1e-10)
    >>> bool(np.allclose(p.mean[-1], X[:, 0], atol=1e-6)), bool(np.allclose(p.covariance[-1], 0, atol=1e-6))
    (True, True)
    """
    x_train, y_train, x_test = _regression_inputs(x_train, y_train, x_test)
    m = x_test.shape[0]
    r = _kernels(network, np.vstack([x_test, x_train]), compute_ntk=(get == "ntk"), **kernel_options)
    K, T = r.nngp, r.ntk
    return gaussian_prediction(K[m:, m:], K[:m, m:], K[:m, :m], y_train, t,
                               ntk_train=None if T is None else T[m:, m:], ntk_cross=None if T is None else T[:m, m:],
                               get=get, learning_rate=learning_rate, diag_reg=diag_reg,
                               diag_reg_absolute_scale=diag_reg_absolute_scale, loss=loss)
