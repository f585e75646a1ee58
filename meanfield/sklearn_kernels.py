r"""scikit-learn kernels: the NNGP and the NTK of a fully connected network as
``sklearn.gaussian_process.kernels.Kernel`` objects, with ``weight_var`` and ``bias_var`` as hyperparameters and the
analytic gradient of :func:`meanfield.hyperparameters.kernel_derivatives` (needs the optional extra ``sklearn``).

One ``weight_var`` and one ``bias_var`` are shared by all ``depth + 1`` layers, so
``dK / d weight_var = sum_l dK / d weight_var_l``; scikit-learn optimizes ``theta = log(hyperparameter)`` and takes
``dK / d theta = hyperparameter * dK / d hyperparameter``.

Examples
--------
>>> import numpy as np
>>> from sklearn.gaussian_process import GaussianProcessRegressor
>>> from sklearn.gaussian_process.kernels import WhiteKernel
>>> x = np.linspace(-2, 2, 20)[:, None]
>>> y = np.sin(2 * x[:, 0]) + 0.1 * np.random.default_rng(0).standard_normal(20)
>>> gp = GaussianProcessRegressor(NNGPKernel("relu", depth=2) + WhiteKernel(0.1), random_state=0)
>>> gp = gp.fit(x, y)
>>> bool(gp.log_marginal_likelihood_value_ > gp.log_marginal_likelihood(gp.kernel.theta))
True
"""
from __future__ import annotations

from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:
    from typing import Optional, Tuple, Union

    from ._typing import ArrayLike, FloatArray, Pair
    from .network import Network

import numpy as np

try:
    from sklearn.gaussian_process.kernels import Hyperparameter, Kernel
except ImportError as exc:   # pragma: no cover - depends on the environment
    raise ImportError("meanfield.sklearn_kernels needs scikit-learn: pip install 'meanfield-theory[sklearn]'") from exc

__all__ = ["NNGPKernel", "NTKKernel"]


class _NetworkKernel(Kernel):
    _ntk = False

    def __init__(self, activation: str = "relu", depth: int = 2, weight_var: float = 1.0, bias_var: float = 0.1,
                 weight_var_bounds: Union[Tuple[float, float], str] = (1e-2, 1e2),
                 bias_var_bounds: Union[Tuple[float, float], str] = (1e-5, 1e1)) -> None:
        self.activation = activation
        self.depth = depth
        self.weight_var = weight_var
        self.bias_var = bias_var
        self.weight_var_bounds = weight_var_bounds
        self.bias_var_bounds = bias_var_bounds

    @property
    def hyperparameter_weight_var(self) -> Hyperparameter:
        return Hyperparameter("weight_var", "numeric", self.weight_var_bounds)

    @property
    def hyperparameter_bias_var(self) -> Hyperparameter:
        return Hyperparameter("bias_var", "numeric", self.bias_var_bounds)

    def _network(self) -> Network:
        from .network import Network

        return Network(self.activation, int(self.depth), weight_var=float(self.weight_var),
                       bias_var=float(self.bias_var))

    def __call__(self, X: ArrayLike, Y: Optional[ArrayLike] = None,
                 eval_gradient: bool = False) -> Union[FloatArray, Pair]:
        from .hyperparameters import kernel_derivatives
        from .kernels import kernels

        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        if Y is not None:
            if eval_gradient:
                raise ValueError("gradient can only be evaluated when Y is None")
            Y = np.atleast_2d(np.asarray(Y, dtype=np.float64))
        net = self._network()
        if not eval_gradient:
            r = kernels(net, X, Y, compute_ntk=self._ntk)
            return r.ntk if self._ntk else r.nngp
        d = kernel_derivatives(net, X, compute_ntk=self._ntk)
        K, dK = (d.ntk, d.d_ntk) if self._ntk else (d.nngp, d.d_nngp)
        grads = []
        # scikit-learn orders the hyperparameters by attribute name: bias_var, then weight_var
        for hp, sl, value in ((self.hyperparameter_bias_var, slice(1, None, 2), self.bias_var),
                              (self.hyperparameter_weight_var, slice(0, None, 2), self.weight_var)):
            if not hp.fixed:
                grads.append(float(value) * dK[sl].sum(axis=0))
        grad = np.stack(grads, axis=-1) if grads else np.empty(K.shape + (0,))
        return K, grad

    def is_stationary(self) -> bool:
        return False

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(activation={self.activation!r}, depth={self.depth}, "
                f"weight_var={float(self.weight_var):.3g}, bias_var={float(self.bias_var):.3g})")


class NNGPKernel(_NetworkKernel):
    r"""NNGP kernel ``K(x, x') = q^L(x, x')`` (Lee et al. 2018) of a network with ``depth`` hidden layers of
    ``activation`` and one ``weight_var``, ``bias_var`` for all layers, as a scikit-learn kernel.

    Parameters
    ----------
    activation : str
        With the gradient (hyperparameter fitting) every built-in activation; kinked ones without closed forms
        (hard_tanh, elu, selu) cost one to two times their kernel again per gradient (2-D quadrature of the
        partials).
    depth : int
    weight_var, bias_var : float
        Hyperparameters (> 0 for scikit-learn's log scale).
    weight_var_bounds, bias_var_bounds : pair of floats or "fixed"

    Examples
    --------
    >>> import numpy as np
    >>> k = NNGPKernel("erf", depth=3, weight_var=2.0, bias_var=0.1)
    >>> K, dK = k(np.eye(3), eval_gradient=True)
    >>> K.shape, dK.shape, k.theta.round(3).tolist()   # theta = log(bias_var), log(weight_var)
    ((3, 3), (3, 3, 2), [-2.303, 0.693])
    """

    def diag(self, X: ArrayLike) -> FloatArray:
        from .kernels import nngp_diagonal

        return nngp_diagonal(self._network(), np.atleast_2d(np.asarray(X, dtype=np.float64)))


class NTKKernel(_NetworkKernel):
    r"""Neural tangent kernel (NTK parameterization, Jacot et al. 2018) of the same network, as a scikit-learn kernel:
    GP regression with it gives the mean of an infinitely wide network trained to convergence with ridge
    ``noise`` (the NTK-GP mean at ``t = inf``; its covariance is :func:`meanfield.gaussian_prediction`'s).

    Examples
    --------
    >>> import numpy as np
    >>> k = NTKKernel("relu", depth=1, weight_var=2.0, bias_var=0.0)
    >>> float(k(np.ones((1, 2)))[0, 0]), float(k.diag(np.ones((1, 2)))[0])
    (4.0, 4.0)
    """

    _ntk = True

    def diag(self, X: ArrayLike) -> FloatArray:
        from .kernels import kernels

        X = np.atleast_2d(np.asarray(X, dtype=np.float64))
        # Theta(x, x) depends on x only through |x|^2 / M_0: one 1-D proxy input per distinct squared norm
        norms = np.einsum("ij,ij->i", X, X) / X.shape[1]
        u, inv = np.unique(norms, return_inverse=True)
        th = kernels(self._network(), np.sqrt(u)[:, None]).ntk
        return np.diagonal(th)[inv.ravel()].copy()
