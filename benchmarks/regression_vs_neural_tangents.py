"""NTK-GP and NNGP regression: meanfield vs neural-tangents' ``predict.gradient_descent_mse_ensemble``, side by side.

Same data (scikit-learn's 8x8 digits: ``--n-train`` training and ``--n-test`` test images, centred and scaled to
``|x|^2 / M_0 = 1``, one-hot targets), same network (``--depth`` hidden layers, NTK parameterization), same ridge
(``diag_reg`` relative to the mean diagonal of the kernel being inverted) and the same clock (neural-tangents
minimizes the *mean* squared error: meanfield's ``loss="mean"``). For each activation the script computes, in both
libraries:

* the NTK-GP mean and covariance at finite times ``--times`` and at ``t = inf`` (``get="ntk"``),
* the NNGP mean and covariance at ``t = inf`` (the GP posterior with noise = ridge, ``get="nngp"``),

and prints the largest difference of each (relative to the largest entry of meanfield's array), and the wall time of
the whole pipeline (kernels + prediction, best of ``--repeat``; neural-tangents' first call, which compiles, is
reported apart) and its ratio. Activations: relu and erf (closed forms in both: the arc-cosine and arcsine kernels),
tanh (meanfield's Mehler series to ~1e-15 against neural-tangents' ``ElementwiseNumerical(deg=--deg)``, a 2-D
Gauss-Hermite rule whose error dominates the difference). The kernel matrices themselves are also compared (NNGP and
NTK on the joint test + training inputs, off-diagonal and diagonal entries separately).

neural-tangents is NOT a dependency of meanfield; with it (and jax, float64) importable, run

    python benchmarks/regression_vs_neural_tangents.py [--n-train 300] [--n-test 100] [--depth 3]

(to install it apart: ``pip install neural-tangents==0.6.5 jax==0.4.30 jaxlib==0.4.30``). Without it the script
times meanfield alone.
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
from meanfield.regression import gaussian_prediction  # noqa: E402


def digits(n_train, n_test, seed=0):
    """Digits images centred and scaled to |x|^2 / M_0 = 1, one-hot targets (centred: mean 0 per class)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(X))[:n_train + n_test]
    X = X[idx] - X[idx].mean(axis=0)
    X = X / np.sqrt(np.mean(X * X, axis=1, keepdims=True))
    Y = np.eye(10)[y[idx]] - 0.1
    return X[:n_train], Y[:n_train], X[n_train:]


def nt_kernel_fn(name, weight_var, bias_var, depth, deg=25):
    """neural-tangents' kernel function of the same MLP (the width 512 is irrelevant to the kernels)."""
    import jax.numpy as jnp
    from neural_tangents import stax

    act = {"tanh": lambda: stax.ElementwiseNumerical(jnp.tanh, deg=deg), "relu": stax.Relu, "erf": stax.Erf}[name]
    layers = []
    for _ in range(depth):
        layers += [stax.Dense(512, W_std=math.sqrt(weight_var), b_std=math.sqrt(bias_var)), act()]
    layers += [stax.Dense(1, W_std=math.sqrt(weight_var), b_std=math.sqrt(bias_var))]
    return stax.serial(*layers)[2]


def nt_predictions(kernel_fn, x_train, y_train, x_test, times, diag_reg):
    """neural-tangents: {(get, t): (mean, covariance)} for the NTK at ``times`` and inf and the NNGP at inf."""
    import jax
    import neural_tangents as nt

    predict = nt.predict.gradient_descent_mse_ensemble(kernel_fn, x_train, y_train, diag_reg=diag_reg)
    out = {}
    fin = predict(t=np.asarray(times), x_test=x_test, get="ntk", compute_cov=True)
    for i, t in enumerate(times):
        out[("ntk", t)] = (np.asarray(fin.mean[i]), np.asarray(fin.covariance[i]))
    for get in ("ntk", "nngp"):
        g = predict(t=None, x_test=x_test, get=get, compute_cov=True)
        out[(get, math.inf)] = (np.asarray(g.mean), np.asarray(g.covariance))
    jax.block_until_ready([v[0] for v in out.values()])
    return out


def meanfield_predictions(network, x_train, y_train, x_test, times, diag_reg):
    """meanfield: the same dictionary (one kernel computation on test + training inputs, then the predictions)."""
    m = x_test.shape[0]
    r = kernels(network, np.vstack([x_test, x_train]))
    K, T = r.nngp, r.ntk
    args = (K[m:, m:], K[:m, m:], K[:m, :m], y_train)
    ntk = gaussian_prediction(*args, list(times) + [math.inf], ntk_train=T[m:, m:], ntk_cross=T[:m, m:], get="ntk",
                              diag_reg=diag_reg, loss="mean")
    nngp = gaussian_prediction(*args, math.inf, get="nngp", diag_reg=diag_reg, loss="mean")
    out = {("ntk", t): (ntk.mean[i], ntk.covariance[i]) for i, t in enumerate(list(times) + [math.inf])}
    out[("nngp", math.inf)] = (nngp.mean[0], nngp.covariance[0])
    return out, (K, T)


def _best(fn, repeat):
    out, best = None, math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def rel_diff(a, b):
    """max |a - b| / max |a|."""
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(a)))


def kernel_diffs(mf, nt_k):
    """(off-diagonal, diagonal) max differences of the NNGP and NTK matrices, relative to their largest entries."""
    off = ~np.eye(mf[0].shape[0], dtype=bool)
    res = {}
    for name, a, b in (("nngp", mf[0], nt_k[0]), ("ntk", mf[1], nt_k[1])):
        d = np.abs(a - b) / np.max(np.abs(a))
        res[name] = (float(d[off].max()), float(np.diag(d).max()))
    return res


def run_case(name, wv, bv, depth, data, times, diag_reg, repeat, deg, have_nt):
    x_train, y_train, x_test = data
    net = Network(name, depth=depth, weight_var=wv, bias_var=bv)
    meanfield_predictions(net, x_train[:5], y_train[:5], x_test[:3], times, diag_reg)      # compile numba kernels
    (mf, mf_k), t_mf = _best(lambda: meanfield_predictions(net, x_train, y_train, x_test, times, diag_reg), repeat)
    line = {"case": name, "t_meanfield": t_mf}
    if not have_nt:
        return line
    import jax

    kf = jax.jit(nt_kernel_fn(name, wv, bv, depth, deg), static_argnames=("get",))
    t0 = time.perf_counter()
    nt_out = nt_predictions(kf, x_train, y_train, x_test, times, diag_reg)
    line["t_nt_first"] = time.perf_counter() - t0
    nt_out, t_nt = _best(lambda: nt_predictions(kf, x_train, y_train, x_test, times, diag_reg), repeat)
    line["t_nt"] = t_nt
    line["ratio"] = t_nt / t_mf
    xj = np.vstack([x_test, x_train])
    k = kf(xj, None, get=("nngp", "ntk"))
    line["kernels"] = kernel_diffs(mf_k, (np.asarray(k.nngp), np.asarray(k.ntk)))
    if name == "relu":
        # which diagonal is right: on the same input relu has qhat = q/2, qdot = 1/2 exactly, so the diagonal NTK
        # follows q' = w q/2 + b, Theta' = q' + w Theta/2 (no arccos)
        q = wv * np.sum(xj * xj, axis=1) / xj.shape[1] + bv
        th = q.copy()
        for _ in range(depth):
            q = wv * q / 2 + bv
            th = q + wv * th / 2
        line["relu_diag"] = (float(np.max(np.abs(np.diag(mf_k[1]) - th)) / th.max()),
                             float(np.max(np.abs(np.diag(np.asarray(k.ntk)) - th)) / th.max()))
    line["pred"] = {key: (rel_diff(mf[key][0], nt_out[key][0]), rel_diff(mf[key][1], nt_out[key][1]))
                    for key in mf}
    return line


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--diag-reg", type=float, default=1e-4, help="ridge relative to the mean diagonal")
    p.add_argument("--times", default="10,1000,100000", help="finite training times (neural-tangents' clock)")
    p.add_argument("--deg", type=int, default=25, help="Gauss-Hermite degree of ElementwiseNumerical (tanh)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cases", default="relu,erf,tanh")
    a = p.parse_args(argv)
    try:
        import jax
        jax.config.update("jax_enable_x64", True)
        import neural_tangents
        have_nt = True
        print(f"neural-tangents {neural_tangents.__version__}, jax {jax.__version__} (float64)")
    except Exception as exc:  # noqa: BLE001
        have_nt = False
        print(f"neural-tangents not importable ({exc.__class__.__name__}: {exc}); timing meanfield alone")
    data = digits(a.n_train, a.n_test)
    times = [float(t) for t in a.times.split(",")]
    params = {"relu": (2.0, 0.1), "erf": (1.8, 0.1), "tanh": (1.8, 0.1)}
    print(f"digits: {a.n_train} training, {a.n_test} test images, 10 one-hot outputs; depth {a.depth}; "
          f"diag_reg {a.diag_reg:g} (relative); times {times} and inf")
    for name in a.cases.split(","):
        wv, bv = params[name]
        r = run_case(name, wv, bv, a.depth, data, times, a.diag_reg, a.repeat, a.deg, have_nt)
        print(f"\n== {name}: weight_var={wv}, bias_var={bv}")
        print(f"  meanfield        {r['t_meanfield']:8.3f} s  (kernels + NTK-GP at {len(times) + 1} times "
              "+ NNGP posterior, means and covariances)")
        if not have_nt:
            continue
        label = f"ElementwiseNumerical(deg={a.deg})" if name == "tanh" else f"stax.{name.capitalize()}()"
        print(f"  neural-tangents  {r['t_nt']:8.3f} s  [{label}; first call incl. jit {r['t_nt_first']:.2f} s]")
        print(f"  time ratio neural-tangents / meanfield = {r['ratio']:.2f}")
        for k, (off, dg) in r["kernels"].items():
            print(f"  {k.upper():5s} matrix: max |diff| / max entry  off-diagonal {off:.1e}, diagonal {dg:.1e}")
        if "relu_diag" in r:
            print("  NTK diagonal against the exact same-input recursion (q' = w q/2 + b, Theta' = q' + w Theta/2): "
                  f"meanfield {r['relu_diag'][0]:.1e}, neural-tangents {r['relu_diag'][1]:.1e}")
        for (get, t), (dm, dc) in r["pred"].items():
            print(f"  {get:4s} t={t:<8g}  mean {dm:.1e}   covariance {dc:.1e}")


if __name__ == "__main__":
    main()
