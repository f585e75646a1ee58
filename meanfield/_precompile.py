"""Compile every numerical kernel once, ahead of the first call: at install time, and on request.

``pip install .`` builds the wheel on the machine it installs to; the build step (``setup.py``) runs
``python -m meanfield._precompile --into <build>/meanfield/_kernel_cache`` and ships the numba cache it writes inside
the package. On first use, :func:`meanfield._numba_cache.install` copies that cache into the per-user cache
directory, so the first call of a public function loads compiled kernels instead of compiling them (minutes on two
cores). numba keys each entry by the source file's content hash, the function's bytecode, the argument types and
the CPU (name and features): an entry built for another CPU, Python or numba is simply not used, and numba compiles
as before. ``MEANFIELD_NO_PRECOMPILE=1`` skips the step at build time, and at run time leaves the shipped cache
unused (``benchmarks/cold_start.py`` measures both ways).

:func:`warm_up` is the list of calls that reaches every compiled kernel's signature: one call per public entry
point, for a smooth (tanh), a kinked (elu), a closed-form (relu, erf) and a custom activation. Run
``python -m meanfield._precompile`` to fill the per-user cache of an existing install (an editable one, say).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

__all__ = ["warm_up", "main"]


def _calls():
    """(label, thunk) pairs: every public entry point that reaches compiled code, on tiny inputs."""
    import numpy as np

    import meanfield as mf

    x = np.array([[1.0, 0.0, 0.5], [0.3, -0.8, 0.2], [0.0, 0.6, -0.7]])
    calls = []
    for name in ("tanh", "elu", "relu", "erf"):
        net = mf.Network(name, depth=2, weight_var=1.5, bias_var=0.05)
        calls += [
            (f"maps {name}", lambda n=name: (mf.length_map(n, np.array([0.5, 1.0]), 1.5, 0.05),
                                             mf.correlation_map(n, np.array([0.2, 0.9]), 1.0, 1.5, 0.05))),
            (f"fixed points {name}", lambda n=name: (mf.fixed_point(n, np.array([1.5, 2.5]), np.array([0.05, 0.3])),
                                                     mf.critical_weight_var(n, np.array([0.05])))),
            (f"forward/backward {name}", lambda net=net: (mf.forward(net), mf.backward(net), mf.trace(net, x))),
            (f"kernels {name}", lambda net=net: (mf.kernels(net, x), mf.kernels(net, x, x[:2]))),
            (f"kernel derivatives {name}", lambda net=net: mf.kernel_derivatives(net, x)),
            (f"expectations {name}", lambda n=name: (mf.gaussian_expectation(n, 1.3), mf.pair_expectation(n, 1.0, 0.8, 0.3),
                                                     mf.pair_expectation(n, 1.0, 0.8, 0.3, derivative=True),
                                                     mf.hermite_coefficients(n, 1.0, 8))),
        ]
    tanh = mf.Network("tanh", depth=2, weight_var=1.5, bias_var=0.05)
    calls += [
        ("phase diagram", lambda: mf.phase_diagram("tanh", np.array([1.0, 2.0]), np.array([0.0, 0.1]))),
        ("critical line", lambda: mf.critical_line("tanh", np.array([0.05, 0.1]))),
        ("depth scale curve", lambda: mf.depth_scale_curve("tanh", np.array([1.0, 2.0]), 0.05)),
        ("map dynamics", lambda: mf.map_dynamics("tanh", 1.5, 0.05, depth=3)),
        ("fisher", lambda: mf.fisher_statistics(tanh, width=64, n_samples=4)),
        ("finite width", lambda: mf.finite_width_corrections(tanh, x[:2])),
        ("spectra", lambda: (mf.jacobian_spectrum(tanh), mf.conjugate_kernel_spectrum(
            mf.Network("tanh", depth=1, weight_var=1.5, bias_var=0.0), 1.0),
            mf.ntk_spectrum(mf.Network("relu", depth=1, weight_var=2.0, bias_var=0.1), 1.0, n_points=16))),
        ("spatial", lambda: [mf.spatial_kernels(mf.serial(mf.Conv(2.0, 0.1, (2, 2)), mf.Nonlinearity(n), mf.Flatten(),
                                                          mf.Dense(1.0)), np.ones((2, 3, 3, 1)))
                             for n in ("relu", "tanh")]),
        ("spatial trace", lambda: mf.spatial_trace(mf.serial(mf.Conv(2.0, 0.1, (2, 2)), mf.Nonlinearity("relu"),
                                                             mf.GlobalAvgPool(), mf.Dense(1.0)), np.ones((2, 3, 3, 1)))),
        ("signal", lambda: (mf.residual_signal("tanh", 1.5, 0.05, depth=3),
                            mf.cnn_mode_depth_scales("tanh", 1.5, 0.05, (3,), (4,)))),
        ("custom", lambda: mf.chi1(mf.custom_activation("softsign_warmup", _softsign(), kinks=(0.0,)), 1.5, 0.05)),
    ]
    return calls


def _softsign():
    import numba

    @numba.njit
    def softsign(x):
        return x / (1.0 + abs(x))
    return softsign


def warm_up(verbose: bool = False) -> list:
    """Call every public entry point once on tiny inputs, so that numba compiles (or loads) each kernel.

    Parameters
    ----------
    verbose : bool, optional
        Print each step and its time to stderr.

    Returns
    -------
    list of (str, float, str or None)
        Label, seconds and the error message of each call (None when it ran): a failed call is reported, not raised.
    """
    from ._gaussian_kernels import _RowKernel

    _RowKernel.compile_both = True   # this process only: the threaded and the serial build of every row loop
    out = []
    for label, thunk in _calls():
        t = time.perf_counter()
        err = None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                thunk()
        except Exception as exc:   # noqa: BLE001 - a warm-up step that fails is reported, the others still run
            err = f"{type(exc).__name__}: {exc}"
        dt = time.perf_counter() - t
        out.append((label, dt, err))
        if verbose:
            sys.stderr.write(f"  {label}: {dt:.1f} s{'' if err is None else '  (' + err + ')'}\n")
    return out


def main(argv=None) -> int:
    """``python -m meanfield._precompile [--into DIR]``: compile the kernels into the per-user cache (or DIR)."""
    ap = argparse.ArgumentParser(prog="python -m meanfield._precompile", description=__doc__.splitlines()[0])
    ap.add_argument("--into", metavar="DIR", help="write a relocatable cache into DIR (the build step uses this)")
    args = ap.parse_args(argv)
    if args.into:
        os.environ["MEANFIELD_KERNEL_CACHE_BUILD"] = os.path.abspath(args.into)   # read by meanfield._numba_cache
    t = time.perf_counter()
    sys.stderr.write("meanfield: compiling numerical kernels (once per install; a few minutes on two cores)\n")
    results = warm_up(verbose=True)
    failed = [r for r in results if r[2] is not None]
    sys.stderr.write(f"meanfield: kernels compiled in {time.perf_counter() - t:.0f} s"
                     f"{'' if not failed else f'; {len(failed)} step(s) failed (compiled on first use instead)'}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
