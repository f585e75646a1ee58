"""NNGP/NTK kernels: meanfield vs neural-tangents, same inputs and network, one process.

Cases (N points in dimension 20, depth hidden layers, NTK parameterization):
  tanh  -- meanfield's Mehler expansion vs neural-tangents' ``ElementwiseNumerical(deg=25)`` (2-D Gauss-Hermite)
  relu  -- closed form (arc-cosine) in both
  erf   -- closed form in both
For each: wall times (compile / first call excluded, best of --repeat), their ratio, and each library's max abs
error (relative to the largest entry) against a reference on a random subset of pairs. The reference is independent of
both libraries: for tanh a float64 2-D trapezoid rule in Cholesky coordinates (step 0.05 on [-11, 11]^2; error
~exp(-2 pi b / h) < 1e-30 for the strip half-width b > 0.9 met here, rounding ~1e-16), for relu/erf the closed forms
evaluated in mpmath at 30 digits.

neural-tangents is NOT a dependency of meanfield. It needs an old jax; to run this script:

    python -m venv --system-site-packages ntenv
    ntenv/bin/pip install neural-tangents==0.6.5 jax==0.4.30 jaxlib==0.4.30 tf2jax==0.3.6
    ntenv/bin/python benchmarks/kernels_vs_neural_tangents.py [--n 500] [--depth 10]

The script installs nothing; without neural-tangents it times meanfield alone.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from meanfield.kernels import kernels  # noqa: E402
from meanfield.network import Network  # noqa: E402


def _best(fn, repeat):
    out, best = None, math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


# ------------------------------------------------------------------------------------------------ references
def _trap_pair(f, qu, qv, quv, h=0.05, zmax=11.0):
    z = np.arange(-zmax, zmax + h / 2, h)
    w = np.exp(-z * z / 2) * h / math.sqrt(2 * math.pi)
    su, sv = math.sqrt(qu), math.sqrt(qv)
    c = max(-1.0, min(1.0, quv / (su * sv)))
    s = math.sqrt(max(0.0, 1 - c * c))
    fu = f(su * z)
    inner = f(sv * (c * z[:, None] + s * z[None, :])) @ w
    return float(np.sum(w * fu * inner))


def _trap_1(f, q, h=0.05, zmax=11.0):
    z = np.arange(-zmax, zmax + h / 2, h)
    w = np.exp(-z * z / 2) * h / math.sqrt(2 * math.pi)
    return float(np.sum(w * f(math.sqrt(q) * z)))


def _reference_pair(name, wv, bv, depth, x, y):
    """(K_xy, Theta_xy) by the layer recursion with an independent integrator."""
    d = len(x)
    if name == "tanh":
        f = (np.tanh, lambda u: 1 - np.tanh(u) ** 2)
        pair = lambda k, a, b, c: _trap_pair(f[k], a, b, c)     # noqa: E731
        one = lambda k, a: _trap_1(lambda u: f[k](u) ** 2, a)   # noqa: E731
        qx, qy, qxy = (wv * float(x @ x) / d + bv, wv * float(y @ y) / d + bv, wv * float(x @ y) / d + bv)
    else:
        import mpmath as mp
        mp.mp.dps = 30
        X = [mp.mpf(float(v)) for v in x]
        Y = [mp.mpf(float(v)) for v in y]
        qx = wv * mp.fsum(a * a for a in X) / d + bv
        qy = wv * mp.fsum(a * a for a in Y) / d + bv
        qxy = wv * mp.fsum(a * b for a, b in zip(X, Y)) / d + bv
        if name == "relu":
            def pair(k, a, b, c):
                cc = max(-1, min(1, c / mp.sqrt(a * b)))
                t = mp.acos(cc)
                if k == 0:
                    return mp.sqrt(a * b) * (mp.sin(t) + (mp.pi - t) * mp.cos(t)) / (2 * mp.pi)
                return (mp.pi - t) / (2 * mp.pi)
            one = lambda k, a: a / 2 if k == 0 else mp.mpf(1) / 2    # noqa: E731
        else:  # erf
            def pair(k, a, b, c):
                if k == 0:
                    return 2 / mp.pi * mp.asin(2 * c / mp.sqrt((1 + 2 * a) * (1 + 2 * b)))
                return 4 / mp.pi / mp.sqrt((1 + 2 * a) * (1 + 2 * b) - 4 * c * c)
            one = lambda k, a: pair(k, a, a, a)                        # noqa: E731
    txy = qxy
    for _ in range(depth):
        hxy, dxy = pair(0, qx, qy, qxy), pair(1, qx, qy, qxy)
        hx, hy = one(0, qx), one(0, qy)
        qx, qy, qxy = wv * hx + bv, wv * hy + bv, wv * hxy + bv
        txy = qxy + wv * dxy * txy
    return float(qxy), float(txy)


# ------------------------------------------------------------------------------------------------ runners
def _nt_kernel_fn(name, wv, bv, depth, deg):
    from neural_tangents import stax
    import jax.numpy as jnp
    act = {"tanh": lambda: stax.ElementwiseNumerical(jnp.tanh, deg=deg), "relu": stax.Relu, "erf": stax.Erf}[name]
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(512, W_std=math.sqrt(wv), b_std=math.sqrt(bv)), act()]
    layers += [stax.Dense(1, W_std=math.sqrt(wv), b_std=math.sqrt(bv))]
    _, _, kernel_fn = stax.serial(*layers)
    return kernel_fn


def run_case(name, n, dim, depth, wv, bv, deg, repeat, n_ref, have_nt, rng):
    x = rng.standard_normal((n, dim))
    net = Network(name, depth=depth, weight_var=wv, bias_var=bv)
    kernels(net, x[:4])                                        # compile numba kernels
    res, t_mf = _best(lambda: kernels(net, x), repeat)
    line = {"case": name, "N": n, "depth": depth, "t_meanfield": t_mf}
    nt_k = None
    if have_nt:
        import jax
        kf = jax.jit(_nt_kernel_fn(name, wv, bv, depth, deg), static_argnames=("get",))
        xj = jax.numpy.asarray(x)
        t0 = time.perf_counter()
        jax.block_until_ready(kf(xj, None, get=("nngp", "ntk")))
        line["t_nt_first"] = time.perf_counter() - t0
        out, t_nt = _best(lambda: jax.block_until_ready(kf(xj, None, get=("nngp", "ntk"))), repeat)
        nt_k = (np.asarray(out.nngp), np.asarray(out.ntk))
        line["t_nt"] = t_nt
        line["ratio_nt_over_meanfield"] = t_nt / t_mf
    # reference on random pairs (plus the diagonal element of one row)
    pairs = [(i, j) for i, j in zip(rng.integers(0, n, n_ref), rng.integers(0, n, n_ref))]
    pairs.append((0, 0))
    ref = np.array([_reference_pair(name, wv, bv, depth, x[i], x[j]) for i, j in pairs])
    scale_k, scale_t = np.max(np.abs(res.nngp)), np.max(np.abs(res.ntk))
    idx = tuple(np.array(pairs).T)
    line["err_meanfield"] = max(np.max(np.abs(res.nngp[idx] - ref[:, 0])) / scale_k,
                                np.max(np.abs(res.ntk[idx] - ref[:, 1])) / scale_t)
    if nt_k is not None:
        line["err_nt"] = max(np.max(np.abs(nt_k[0][idx] - ref[:, 0])) / scale_k,
                             np.max(np.abs(nt_k[1][idx] - ref[:, 1])) / scale_t)
        line["max_diff_full_matrix"] = max(np.max(np.abs(nt_k[0] - res.nngp)) / scale_k,
                                           np.max(np.abs(nt_k[1] - res.ntk)) / scale_t)
        off = ~np.eye(n, dtype=bool)
        line["max_diff_offdiag"] = max(np.max(np.abs(nt_k[0] - res.nngp)[off]) / scale_k,
                                       np.max(np.abs(nt_k[1] - res.ntk)[off]) / scale_t)
    line["mehler_terms_layer1"] = res.n_terms[0]
    line["trunc_bound"] = max(res.truncation_bound + res.truncation_bound_dot)
    return line


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--dim", type=int, default=20)
    p.add_argument("--depth", type=int, default=10)
    p.add_argument("--deg", type=int, default=25, help="Gauss-Hermite degree of ElementwiseNumerical")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--n-ref", type=int, default=20, help="random pairs checked against the reference")
    p.add_argument("--cases", default="tanh,relu,erf")
    a = p.parse_args(argv)
    try:
        import jax
        jax.config.update("jax_enable_x64", True)
        import neural_tangents  # noqa: F401
        have_nt = True
        print(f"neural-tangents {neural_tangents.__version__}, jax {jax.__version__} (float64)")
    except Exception as exc:  # noqa: BLE001
        have_nt = False
        print(f"neural-tangents not importable ({exc.__class__.__name__}: {exc}); timing meanfield alone.\n"
              "Install it in a separate environment: pip install neural-tangents==0.6.5 jax==0.4.30 "
              "jaxlib==0.4.30 tf2jax==0.3.6")
    rng = np.random.default_rng(0)
    params = {"tanh": (1.8, 0.1), "relu": (2.0, 0.1), "erf": (1.8, 0.1)}
    for name in a.cases.split(","):
        wv, bv = params[name]
        r = run_case(name, a.n, a.dim, a.depth, wv, bv, a.deg, a.repeat, a.n_ref, have_nt, rng)
        print(f"\n== {name}: N={r['N']}, depth={r['depth']}, weight_var={wv}, bias_var={bv}")
        print(f"  meanfield        {r['t_meanfield']:9.4f} s   max rel error vs reference {r['err_meanfield']:.2e}"
              f"   (Mehler terms layer 1: {r['mehler_terms_layer1']}, truncation bound {r['trunc_bound']:.1e})")
        if have_nt:
            label = f"ElementwiseNumerical(deg={a.deg})" if name == "tanh" else f"stax.{name.capitalize()}()"
            print(f"  neural-tangents  {r['t_nt']:9.4f} s   max rel error vs reference {r['err_nt']:.2e}   "
                  f"[{label}; first call incl. compile {r['t_nt_first']:.2f} s]")
            print(f"  speed ratio neural-tangents / meanfield = {r['ratio_nt_over_meanfield']:.1f}x;   "
                  f"max |difference| / max entry: full matrices {r['max_diff_full_matrix']:.2e}, "
                  f"off-diagonal {r['max_diff_offdiag']:.2e}")


if __name__ == "__main__":
    main()
