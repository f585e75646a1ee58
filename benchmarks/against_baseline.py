"""Speed of this checkout against an older meanfield (a baseline checkout), both imported into one process.

Run from the repository root, with a baseline checkout made by git, e.g. v0.1::

    git worktree add /tmp/meanfield-v0.1 6046e21
    python benchmarks/against_baseline.py --baseline /tmp/meanfield-v0.1

The baseline's package is imported under another module name (``meanfield_baseline``), so both versions run in the
same process on the same inputs; each case is warmed up once (numba compilation is not timed, except in the
"custom activation" case, whose point is the cost of a new activation), then timed as the best of ``--repeat`` runs.
Printed per case: baseline time, this checkout's time, their ratio (baseline / this: above 1 is faster now) and the
largest relative difference of the results.
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))


def _load_baseline(path: str):
    init = os.path.join(path, "meanfield", "__init__.py")
    if not os.path.isfile(init):
        raise SystemExit(f"--baseline: no meanfield/__init__.py under {path!r}")
    spec = importlib.util.spec_from_file_location("meanfield_baseline", init,
                                                  submodule_search_locations=[os.path.dirname(init)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["meanfield_baseline"] = mod
    spec.loader.exec_module(mod)
    return mod


def _best(fn, repeat):
    out = fn()
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _diff(a, b):
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.max(np.abs(a[ok] - b[ok]) / np.maximum(np.abs(b[ok]), 1e-300))) if ok.any() else 0.0


def cases(mf, n_kernel):
    x = np.random.default_rng(0).standard_normal((n_kernel, 20))
    x_big = np.random.default_rng(1).standard_normal((2000, 20))
    w = np.linspace(0.5, 4.0, 100)
    b = np.linspace(0.0, 0.5, 100)
    W, B = np.meshgrid(w, b)
    w30, b30 = np.meshgrid(np.linspace(0.5, 4.0, 30), np.linspace(0.0, 0.5, 30))
    c = np.linspace(-0.999, 0.999, 1000)

    def kern(act, xx):
        return lambda: (lambda r: np.stack([r.nngp, r.ntk]))(mf.kernels(mf.Network(act, depth=10, weight_var=1.5,
                                                                                    bias_var=0.05), xx))
    return {
        "chi_1 grid 100x100 tanh": lambda: mf.chi1("tanh", W, B),
        "fixed_point grid 30x30 tanh (q*, chi_1, c*, chi_c)": lambda: np.stack(
            [mf.fixed_point("tanh", w30, b30).c_star, mf.fixed_point("tanh", w30, b30).chi_c]),
        "fixed_point grid 30x30 gelu": lambda: mf.fixed_point("gelu", w30 * 0.5, b30).c_star,
        "correlation_map gelu, 1000 c, q = 3": lambda: mf.correlation_map("gelu", c, 1.5, 0.1, q=3.0),
        f"kernels tanh N={n_kernel} depth 10": kern("tanh", x),
        "kernels relu N=2000 depth 10": kern("relu", x_big),
        "kernels erf N=2000 depth 10": kern("erf", x_big),
        "forward tanh depth 200": lambda: mf.forward(mf.Network("tanh", depth=200, weight_var=1.5,
                                                                bias_var=0.05), input_overlap=0.3).qdot2,
        "forward elu depth 200 (nested quadrature)": lambda: mf.forward(mf.Network("elu", depth=200, weight_var=1.5,
                                                                                   bias_var=0.05),
                                                                        input_overlap=0.3).qdot2,
    }


def custom_activation_first_call(mf):
    """A new custom activation: building it and its first chi_1 (compilation included)."""
    t = time.perf_counter()
    act = mf.custom_activation("softsign", lambda u: u / (1.0 + abs(u)), kinks=(0.0,))
    v = mf.chi1(act, 1.5, 0.05)
    return time.perf_counter() - t, v


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", required=True, help="path of a checkout of the older meanfield")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--n-kernel", type=int, default=500)
    args = p.parse_args(argv)
    import meanfield as new
    old = _load_baseline(args.baseline)
    warnings.simplefilter("ignore")
    print(f"this checkout: {os.path.dirname(new.__file__)}\nbaseline:      {os.path.dirname(old.__file__)}")
    print(f"{'case':55s} {'baseline s':>11s} {'this s':>9s} {'ratio':>7s} {'max rel diff':>13s}")
    cn, co = cases(new, args.n_kernel), cases(old, args.n_kernel)
    for name in cn:
        to, ro = _best(co[name], args.repeat)
        tn, rn = _best(cn[name], args.repeat)
        print(f"{name:55s} {to:11.4f} {tn:9.4f} {to / tn:7.2f} {_diff(rn, ro):13.1e}", flush=True)
    to, vo = custom_activation_first_call(old)
    tn, vn = custom_activation_first_call(new)
    print(f"{'custom activation: build + first chi_1 (compiles)':55s} {to:11.4f} {tn:9.4f} {to / tn:7.2f} "
          f"{_diff(vn, vo):13.1e}")


if __name__ == "__main__":
    main()
