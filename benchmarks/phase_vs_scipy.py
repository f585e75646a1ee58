"""Speed and accuracy of ``meanfield.phase_diagram``'s chi_1 grid against a straightforward scipy.integrate.quad route.

Run from the repository root::

    python benchmarks/phase_vs_scipy.py                  # 200 x 200 tanh grid, scipy on a 20 x 20 subsample
    python benchmarks/phase_vs_scipy.py --n 100 --sub 10 --activation erf

What is timed (same process, same points):

* meanfield: ``meanfield.forward.chi1`` on the full N x N grid of (sigma_w^2, sigma_b^2) (after warm-up calls of
  ``chi1`` and ``phase_diagram`` on small grids so that numba compilation is not counted; their time is printed
  separately). The complete
  ``phase_diagram`` (q*, chi_1, c*, chi_c and the three depth scales) is timed on a PD_N x PD_N grid (c* costs most).
* scipy: for each point, q* by ``scipy.optimize.brentq`` on ``V(q) - q`` with ``V`` evaluated by ``scipy.integrate.quad``
  over the real line, then ``chi_1 = sigma_w^2 int Dz phi'(sqrt(q*) z)^2`` by ``quad``. Run on every ``sub``-th row and
  column; its time is scaled by (grid points / subsampled points) to the full grid.

The printed speed ratio is scaled scipy time / meanfield time; the max difference is over the subsampled points.
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time

import numpy as np
from scipy import integrate, optimize

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)

PHI = {
    "tanh": (math.tanh, lambda x: 1.0 - math.tanh(x) ** 2),
    "erf": (lambda x: math.erf(x), lambda x: 2.0 / math.sqrt(math.pi) * math.exp(-x * x)),
}


def gauss_mean(f, q):
    """int Dz f(sqrt(q) z) by adaptive quad over the real line (epsabs 1e-14, epsrel 1e-12)."""
    if q == 0.0:
        return f(0.0)
    s = math.sqrt(q)
    val, _ = integrate.quad(lambda z: f(s * z) * math.exp(-0.5 * z * z) * _INV_SQRT_2PI, -np.inf, np.inf,
                            epsabs=1e-14, epsrel=1e-12, limit=200)
    return val


def qstar_quad(phi, weight_var, bias_var):
    """Stable fixed point of V(q) = w E[phi^2] + b reached from q > 0 (bounded phi): brentq on V(q) - q."""
    g = lambda q: weight_var * gauss_mean(lambda x: phi(x) ** 2, q) + bias_var - q
    lo = 0.0
    if bias_var == 0.0:
        lo = 1e-10
        if g(lo) <= 0.0:  # no positive fixed point: q* = 0 (ordered phase without bias)
            return 0.0
    hi = max(1.0, 2.0 * bias_var)
    while g(hi) > 0.0:
        hi *= 2.0
    return optimize.brentq(g, lo, hi, xtol=1e-15, rtol=1e-15, maxiter=200)


def chi1_quad(activation, weight_var, bias_var):
    phi, dphi = PHI[activation]
    q = qstar_quad(phi, weight_var, bias_var)
    return weight_var * gauss_mean(lambda x: dphi(x) ** 2, q)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--activation", default="tanh", choices=sorted(PHI))
    ap.add_argument("--n", type=int, default=200, help="grid points per axis (default 200)")
    ap.add_argument("--sub", type=int, default=10, help="scipy uses every SUB-th row and column (default 10)")
    ap.add_argument("--repeats", type=int, default=2, help="best of REPEATS for the meanfield chi1 timing")
    ap.add_argument("--pd-n", type=int, default=50,
                    help="grid points per axis for timing the complete phase_diagram (default 50; c* is costly)")
    args = ap.parse_args(argv)

    import numba

    fw = importlib.import_module("meanfield.forward")
    from meanfield.phase import phase_diagram

    w = np.linspace(0.5, 4.0, args.n)
    b = np.linspace(0.0, 0.5, args.n)
    W, B = np.meshgrid(w, b)
    print(f"activation {args.activation}, grid {args.n} x {args.n}, numba threads {numba.get_num_threads()}, "
          f"cpus {os.cpu_count()}")

    t = time.perf_counter()
    fw.chi1(args.activation, W[:2, :2], B[:2, :2])
    phase_diagram(args.activation, w[::max(1, args.n // 12)], b[::max(1, args.n // 12)])  # threaded kernels too
    print(f"first calls (numba compile or cache load): {time.perf_counter() - t:.2f} s")

    best = cpu = math.inf
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        chi = np.asarray(fw.chi1(args.activation, W, B))
        best, cpu = min(best, time.perf_counter() - t), min(cpu, time.process_time() - c)
    print(f"meanfield chi1 on {W.size} points: {best:.3f} s wall, {cpu:.3f} s CPU summed over threads "
          f"({1e6 * best / W.size:.1f} us/point wall); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")

    wp = np.linspace(0.5, 4.0, args.pd_n)
    bp = np.linspace(0.0, 0.5, args.pd_n)
    t = time.perf_counter()
    pd = phase_diagram(args.activation, wp, bp)
    t_pd = time.perf_counter() - t
    frac = float(np.mean(pd.chaotic))
    print(f"meanfield phase_diagram (q*, chi1, c*, chi_c, xi_q, xi_c, xi_grad) on {pd.chi1.size} points "
          f"({100 * frac:.0f}% chaotic, where c* is solved): {t_pd:.2f} s ({1e3 * t_pd / pd.chi1.size:.2f} ms/point)")

    rows = np.arange(0, args.n, args.sub)
    cols = np.arange(0, args.n, args.sub)
    t, c = time.perf_counter(), time.process_time()
    ref = np.array([[chi1_quad(args.activation, w[j], b[i]) for j in cols] for i in rows])
    t_sp, cpu_sp = time.perf_counter() - t, time.process_time() - c
    n_sub = ref.size
    t_sp_full = t_sp * W.size / n_sub
    diff = np.abs(chi[np.ix_(rows, cols)] - ref)
    k = np.unravel_index(np.argmax(diff), diff.shape)
    print(f"scipy quad chi1 on {n_sub} subsampled points: {t_sp:.2f} s ({1e6 * t_sp / n_sub:.0f} us/point); "
          f"scaled to {W.size} points: {t_sp_full:.1f} s")
    print(f"speed ratio (scipy / meanfield, chi1 on the same grid): {t_sp_full / best:.0f}x wall, "
          f"{cpu_sp * W.size / n_sub / cpu:.0f}x CPU (scipy is single-threaded)")
    print(f"max |chi1_meanfield - chi1_scipy| = {diff.max():.2e} at sigma_w^2 = {w[cols[k[1]]]:.4f}, "
          f"sigma_b^2 = {b[rows[k[0]]]:.4f};  max relative = {np.max(diff / np.abs(ref)):.2e}")


if __name__ == "__main__":
    main()
