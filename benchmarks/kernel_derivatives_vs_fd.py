"""Cost of the forward-mode kernel derivatives (meanfield.kernel_derivatives: NNGP, NTK and their derivatives with
respect to all 2L weight/bias variances in one sweep) against the baseline route, central finite differences (4L + 1
kernel evaluations), and against one kernel evaluation, in the same process.

Run:  python benchmarks/kernel_derivatives_vs_fd.py [n_points]
Printed per case: time of one kernels() call, of kernel_derivatives(), of the finite-difference route, the ratios
FD / forward-mode (above 1: forward mode faster) and forward-mode / one kernel call, and the largest relative
difference between the two derivative routes.
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))
from meanfield import Network, kernel_derivatives, kernels  # noqa: E402


def best(fn, repeat=3):
    out, ts = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return min(ts), out


def main(n=200):
    x = np.random.default_rng(0).standard_normal((n, 10))
    for act, depth in (("relu", 3), ("erf", 3), ("relu", 10)):
        L = depth + 1
        w, b = [1.7] * L, [0.1] * L
        net = Network(act, depth, weight_var=w, bias_var=b)
        kernels(net, x), kernel_derivatives(net, x)    # warm-up (compilation)
        t_k, _ = best(lambda: kernels(net, x))
        t_d, d = best(lambda: kernel_derivatives(net, x))

        def fd():
            out, h = [], 1e-5
            for p in range(2 * L):
                ks = []
                for s in (h, -h):
                    ww, bb = list(w), list(b)
                    (ww if p % 2 == 0 else bb)[p // 2] += s
                    ks.append(kernels(Network(act, depth, weight_var=ww, bias_var=bb), x).ntk)
                out.append((ks[0] - ks[1]) / (2 * h))
            return np.array(out)

        t_f, dfd = best(fd, repeat=1)
        err = float(np.max(np.abs(dfd - d.d_ntk)) / np.max(np.abs(d.d_ntk)))
        print(f"{act:5s} depth {depth:2d} n {n}: kernels {t_k * 1e3:8.1f} ms | forward mode {t_d * 1e3:8.1f} ms | "
              f"finite differences {t_f * 1e3:8.1f} ms | FD / forward {t_f / t_d:5.1f} | forward / kernels "
              f"{t_d / t_k:5.1f} | max rel diff {err:.1e}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
