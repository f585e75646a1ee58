"""CNN kernels: meanfield.spatial vs neural-tangents on the same network, one process.

Network: 3 x [Conv(3x3, SAME, W_std^2 = 2, b_std^2 = 0.1) -> activation] -> Flatten (or GlobalAvgPool) -> Dense,
NTK parameterization, N images of 8 x 8 x 3. Prints wall times (first call excluded, best of --repeat; neural-tangents
jitted), their ratio, and the largest difference relative to the largest entry (off the diagonal, and on it: there
neural-tangents' relu NTK carries an O(sqrt(eps)) error, see tests/test_spatial.py).

Flatten needs only the spatial diagonal of the covariance ((N, N, 64) per layer); GlobalAvgPool needs the full
spatial covariance ((N, N, 64, 64)), about 64 times the work and, in neural-tangents, the memory.

neural-tangents is optional (the script times meanfield alone without it). It needs an older jax:

    python -m venv --system-site-packages ntenv
    ntenv/bin/pip install neural-tangents==0.6.5 jax==0.4.30 jaxlib==0.4.30 tf2jax==0.3.6
    ntenv/bin/python benchmarks/cnn_vs_neural_tangents.py [--n 200] [--pool flatten,gap]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from meanfield.layers import Dense, Nonlinearity, serial  # noqa: E402
from meanfield.spatial import Conv, Flatten, GlobalAvgPool, spatial_kernels  # noqa: E402

W, B = 2.0, 0.1


def _best(fn, repeat):
    out, best = None, math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def meanfield_chain(act, pool):
    layers = []
    for _ in range(3):
        layers += [Conv(W, B, (3, 3), padding="SAME"), Nonlinearity(act)]
    layers += [Flatten() if pool == "flatten" else GlobalAvgPool(), Dense(1.0, 0.0)]
    return serial(*layers)


def nt_kernel_fn(act, pool):
    from neural_tangents import stax

    layers = []
    for _ in range(3):
        layers += [stax.Conv(64, (3, 3), padding="SAME", W_std=math.sqrt(W), b_std=math.sqrt(B)),
                   {"relu": stax.Relu, "erf": stax.Erf}[act]()]
    layers += [stax.Flatten() if pool == "flatten" else stax.GlobalAvgPool(), stax.Dense(1, W_std=1.0, b_std=0.0)]
    return stax.serial(*layers)[2]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--n-gap", type=int, default=100, help="N for the GlobalAvgPool case (full spatial covariance)")
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--acts", default="relu,erf")
    p.add_argument("--pool", default="flatten,gap")
    a = p.parse_args(argv)
    try:
        import jax
        jax.config.update("jax_enable_x64", True)
        import neural_tangents
        have_nt = True
        print(f"neural-tangents {neural_tangents.__version__}, jax {jax.__version__} (float64, CPU)")
    except Exception as exc:  # noqa: BLE001
        have_nt = False
        print(f"neural-tangents not importable ({type(exc).__name__}: {exc}); timing meanfield alone")
    rng = np.random.default_rng(0)
    for pool in a.pool.split(","):
        n = a.n if pool == "flatten" else a.n_gap
        x = rng.standard_normal((n, 8, 8, 3))
        for act in a.acts.split(","):
            ch = meanfield_chain(act, pool)
            spatial_kernels(ch, x[:2])
            res, t_mf = _best(lambda: spatial_kernels(ch, x), a.repeat)
            line = f"{pool:8s} {act:5s} N={n}: meanfield {t_mf:8.3f} s"
            if have_nt:
                kf = jax.jit(nt_kernel_fn(act, pool), static_argnames=("get",))
                t0 = time.perf_counter()
                jax.block_until_ready(kf(x, None, get=("nngp", "ntk")))
                t_first = time.perf_counter() - t0
                out, t_nt = _best(lambda: jax.block_until_ready(kf(x, None, get=("nngp", "ntk"))), a.repeat)
                off = ~np.eye(n, dtype=bool)
                d_off = max(np.abs(np.asarray(out.nngp) - res.nngp)[off].max() / np.abs(res.nngp).max(),
                            np.abs(np.asarray(out.ntk) - res.ntk)[off].max() / np.abs(res.ntk).max())
                d_diag = max(np.abs(np.diag(np.asarray(out.nngp)) - np.diag(res.nngp)).max() / np.abs(res.nngp).max(),
                             np.abs(np.diag(np.asarray(out.ntk)) - np.diag(res.ntk)).max() / np.abs(res.ntk).max())
                line += (f" | neural-tangents {t_nt:8.3f} s (first call {t_first:.1f} s) | ratio nt/meanfield "
                         f"{t_nt / t_mf:6.2f}x | max rel diff off-diag {d_off:.1e}, diag {d_diag:.1e}")
            print(line, flush=True)


if __name__ == "__main__":
    main()
