"""Compiled kernels of the spectral theory (user-facing validation lives in the public modules)."""
import numba as nb

from .. import _numba_cache  # noqa: F401  (installs the per-user kernel cache before any kernel below is defined)
import numpy as np


@nb.njit(cache=True)
def psi_discrete(w, d, p):
    """For a discrete law sum_k p_k delta(d_k) and complex w (1-D): psi(w) = sum p w d / (1 - w d),
    1 + psi(w) = sum p / (1 - w d) (summed as such) and psi'(w) = sum p d / (1 - w d)^2."""
    n = w.shape[0]
    z = np.empty(n, np.complex128)
    z1 = np.empty(n, np.complex128)
    dz = np.empty(n, np.complex128)
    for i in range(n):
        wi = w[i]
        a = 0j
        b = 0j
        c = 0j
        for k in range(d.shape[0]):
            inv = 1.0 / (1.0 - wi * d[k])
            t = p[k] * inv
            a += t * wi * d[k]
            b += t
            c += t * d[k] * inv
        z[i] = a
        z1[i] = b
        dz[i] = c
    return z, z1, dz
