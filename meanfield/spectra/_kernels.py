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


@nb.njit(cache=True)
def pair_terms(z1, t0, t1, zf, gamma, p, al0, al1, n00, n01, n11):
    """Rank-two top level of the kernel chain (meanfield.spectra._linear_width.Chain._pair_terms), for flat complex
    arrays z1, t0, t1 and the node law (p, alpha, noise): per point, sum_k p_k tr(M_k N_k) and
    sum_k p_k alpha_k^T M_k alpha_k with M = D (I + Delta D)^{-1}, D = diag(z1, zf),
    Delta = gamma (alpha alpha^T t1 + N t0)."""
    n = z1.shape[0]
    ca = np.empty(n, np.complex128)
    cb = np.empty(n, np.complex128)
    for i in range(n):
        a = 0j
        b = 0j
        zi, u0, u1 = z1[i], t0[i], t1[i]
        for k in range(p.shape[0]):
            d11 = gamma * (al0[k] * al0[k] * u1 + n00[k] * u0)
            d12 = gamma * (al0[k] * al1[k] * u1 + n01[k] * u0)
            d22 = gamma * (al1[k] * al1[k] * u1 + n11[k] * u0)
            inv = 1.0 / ((1.0 + d11 * zi) * (1.0 + d22 * zf) - d12 * d12 * zi * zf)
            m11 = zi * (1.0 + d22 * zf) * inv
            m12 = -2.0 * zi * d12 * zf * inv          # m12 + m21
            m22 = zf * (1.0 + d11 * zi) * inv
            a += p[k] * (m11 * n00[k] + m12 * n01[k] + m22 * n11[k])
            b += p[k] * (m11 * al0[k] * al0[k] + m12 * al0[k] * al1[k] + m22 * al1[k] * al1[k])
        ca[i] = a
        cb[i] = b
    return ca, cb
