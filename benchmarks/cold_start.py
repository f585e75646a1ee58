"""Cold start: ``import meanfield`` and the first call of public functions in a fresh process, fresh user cache.

Each measurement runs in a new Python process with an empty per-user cache directory (``XDG_CACHE_HOME`` set to a
new temporary folder), as on a machine where meanfield was just installed. Two ways, same interpreter, same install:

* **shipped**: the kernels compiled at install time (``pip install .`` runs ``meanfield._precompile`` in the wheel
  build) are copied into the user cache on first use and loaded;
* **compile** (the baseline): ``MEANFIELD_NO_PRECOMPILE=1``, the kernels are compiled on first use (what every
  install did before, and what an editable install still does).

Run it with the interpreter of an environment where meanfield was installed with ``pip install .``::

    python -m venv /tmp/mf && /tmp/mf/bin/pip install . && /tmp/mf/bin/python benchmarks/cold_start.py

Printed: per call, seconds shipped / compile and their ratio; and the import time (median of 5 processes). The run
takes several minutes (every baseline call compiles from nothing).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

CALLS = {
    "chi1": "mf.chi1('tanh', 1.5, 0.05)",
    "phase_diagram": "mf.phase_diagram('tanh', np.linspace(0.5, 4, 20), np.linspace(0, 0.5, 20))",
    "kernels (tanh)": "mf.kernels(mf.Network('tanh', depth=3, weight_var=1.5, bias_var=0.05), np.eye(4))",
    "kernels (relu)": "mf.kernels(mf.Network('relu', depth=3, weight_var=2.0, bias_var=0.05), np.eye(4))",
    "fisher_statistics": "mf.fisher_statistics(mf.Network('tanh', depth=3, weight_var=1.5, bias_var=0.05), "
                         "width=100, n_samples=10)",
    "critical_weight_var": "mf.critical_weight_var('erf', 0.05)",
    "forward": "mf.forward(mf.Network('elu', depth=5, weight_var=1.5, bias_var=0.05))",
    "custom_activation + chi1": "mf.chi1(mf.custom_activation('softsign', numba.njit(lambda x: x / (1 + abs(x))), "
                                "kinks=(0.0,)), 1.5, 0.05)",
}

_SNIPPET = """
import time, json
t0 = time.perf_counter()
import meanfield as mf
t1 = time.perf_counter()
import numpy as np, numba
t2 = time.perf_counter()
{call}
t3 = time.perf_counter()
print(json.dumps({{"import": t1 - t0, "call": t3 - t2}}))
"""


def _run(python, call, compile_mode):
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH")}
        env.update(XDG_CACHE_HOME=home, MPLBACKEND="Agg")
        if compile_mode:
            env["MEANFIELD_NO_PRECOMPILE"] = "1"
        out = subprocess.run([python, "-c", _SNIPPET.format(call=call)], env=env, capture_output=True, text=True,
                             cwd=home, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", default=sys.executable, help="interpreter of the environment to measure")
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(CALLS))
    args = ap.parse_args(argv)
    names = [n for n in CALLS if not args.only or n in args.only.split(",")]
    loc = subprocess.run([args.python, "-c", "import meanfield, os; print(os.path.dirname(meanfield.__file__))"],
                         capture_output=True, text=True, check=True, cwd=tempfile.gettempdir()).stdout.strip()
    shipped = os.path.isdir(os.path.join(loc, "_kernel_cache"))
    print(f"meanfield at {loc}; kernel cache shipped with the install: {shipped}; cpus {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    imports = [_run(args.python, "pass", False)["import"] for _ in range(5)]
    print(f"import meanfield: {statistics.median(imports):.3f} s (median of 5 fresh processes)")
    print(f"{'first call':28s} {'shipped':>9s} {'compile':>9s} {'ratio':>7s}")
    for name in names:
        a = _run(args.python, CALLS[name], False)["call"]
        b = _run(args.python, CALLS[name], True)["call"]
        print(f"{name:28s} {a:8.2f}s {b:8.2f}s {b / a:6.1f}x", flush=True)


if __name__ == "__main__":
    main()
