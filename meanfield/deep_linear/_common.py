"""Input checks, the linear-kernel algebra and result helpers shared by the deep-linear modules."""
from __future__ import annotations

from dataclasses import fields

import numpy as np

from .._checks import check_array, check_int, check_nonneg, check_positive


def _check_depth(depth, minimum: int = 0) -> int:
    """``depth`` as an int in ``[minimum, MAX_DEPTH]`` (the library's bound on hidden layers, 10000): the widths, the
    Meijer-G parameters and ``weight_var ** (depth + 1)`` are built per layer, and a depth of 1e9 allocated gigabytes
    (seconds and a MemoryError) before anything else could be said."""
    from ..network import MAX_DEPTH

    depth = check_int("depth", depth, minimum)
    if depth > MAX_DEPTH:
        raise ValueError(f"depth must be an integer in [{minimum}, {MAX_DEPTH}] (MAX_DEPTH), got {depth}")
    return depth


def _widths(width, depth: int) -> np.ndarray:
    if isinstance(width, (list, tuple, np.ndarray)):
        ws = list(np.ravel(np.asarray(width, dtype=object)))
        if len(ws) != depth:
            raise ValueError(f"width must be an integer or a sequence of length depth={depth}, got length {len(ws)}")
        return np.array([check_int(f"width[{i}]", int(w) if isinstance(w, np.integer) else w, 1)
                         for i, w in enumerate(ws)], dtype=np.float64)
    return np.full(depth, float(check_int("width", width, 1)))


def _data(X, y):
    X = check_array("X", X, 2)
    y = check_array("y", y, 1)
    if y.shape[0] != X.shape[0]:
        raise ValueError(f"X and y must have one row per sample: X has P={X.shape[0]} rows, y has shape {y.shape}")
    return X, y


def _test_inputs(X_test, n0: int):
    if X_test is None:
        return None
    Xt = check_array("X_test", X_test, (1, 2))
    if Xt.ndim == 1:
        Xt = Xt[None, :]
    if Xt.shape[1] != n0:
        raise ValueError(f"X_test must have shape (n, N_0={n0}), got {np.shape(X_test)}")
    return Xt


class _Kernel:
    """Train/test linear-kernel algebra in the eigenbasis of ``K_P = sigma^{2L} X X^T / N_0`` (``L = depth + 1``)."""

    def __init__(self, X, y, Xt, weight_var, depth, temperature):
        self.P, self.n0 = X.shape
        scale = weight_var ** (depth + 1) / self.n0
        K = scale * (X @ X.T)
        kap, U = np.linalg.eigh(K)
        self.kap = np.clip(kap, 0.0, None)
        self.yt = U.T @ y
        self.T = temperature
        kmax = float(np.max(self.kap))
        self.rank_ok = bool(np.min(self.kap) > 1e-10 * kmax) if kmax > 0 else False
        if temperature == 0.0 and not self.rank_ok:
            raise ValueError("temperature=0 needs P <= N_0 and X of full row rank (the train kernel is singular); "
                             "use temperature > 0")
        if Xt is not None:
            self.kt = scale * (Xt @ X.T) @ U  # (n, P) in the eigenbasis
            self.ktt = scale * np.sum(Xt * Xt, axis=1)
        else:
            self.kt = None
            self.ktt = None

    def Q(self) -> float:
        return float(np.sum(self.yt ** 2 / self.kap))

    def logdetK(self) -> float:
        return float(np.sum(np.log(self.kap)))

    def loglik(self, S: float) -> float:
        """log N(y; 0, S K_P + T I)."""
        d = S * self.kap + self.T
        return float(-0.5 * np.sum(self.yt ** 2 / d) - 0.5 * np.sum(np.log(2 * np.pi * d)))

    def R(self, S: float) -> float:
        """Tr[(SK+T)^{-1} SK] - y^T (SK+T)^{-1} SK (SK+T)^{-1} y (the BPKR right-hand side)."""
        a = S * self.kap
        d = a + self.T
        return float(np.sum(a / d) - np.sum(self.yt ** 2 * a / d ** 2))

    def gp(self, S: float):
        """Predictive mean and variance of the GP with kernel S K (train noise T) at the test inputs."""
        d = S * self.kap + self.T
        mean = S * (self.kt @ (self.yt / d))
        var = S * self.ktt - S ** 2 * np.sum(self.kt ** 2 / d, axis=1)
        return mean, np.maximum(var, 0.0)


def _result_dict(result) -> dict:
    """Every field of a result dataclass, arrays as lists."""
    out = {}
    for f in fields(result):
        v = getattr(result, f.name)
        out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
    return out


def _setup(X, y, depth, width, weight_var, temperature, X_test):
    """Check the common arguments of the posterior and BPKR functions and build the kernel algebra.

    Returns ``(kern, depth, widths, weight_var, temperature, X_test)``; ``widths`` is None when ``width`` is None
    (the NNGP, which has no widths)."""
    X, y = _data(X, y)
    depth = _check_depth(depth, 0)
    ws = None if width is None else _widths(width, depth)
    weight_var = check_positive("weight_var", weight_var)
    T = check_nonneg("temperature", temperature)
    Xt = _test_inputs(X_test, X.shape[1])
    return _Kernel(X, y, Xt, weight_var, depth, T), depth, ws, weight_var, T, Xt
