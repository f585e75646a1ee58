"""Peak memory per dask worker against N at a fixed chunk size, and the speed-up of 2 workers over 1.

Run from the repository root (needs the extra ``meanfield-theory[dask]``)::

    python benchmarks/distributed_kernels.py                       # N = 4096 ... 16384, chunks 1024, 1 GiB per worker
    python benchmarks/distributed_kernels.py --n 8192 --speedup-n 8192 --memory-limit 2GiB

Each run is a fresh process (a second cluster started in one process showed a larger footprint per worker from the
start) with a LocalCluster of worker processes (one thread each, ``--memory-limit`` each). It computes the NNGP and
NTK of a tanh network (depth 3, Mehler route) as dask arrays and reduces them to their Frobenius norms on the
cluster, so no process ever holds a whole matrix. The workers are warmed up first (numba loads its cache in each
process: not timed, not counted).

Per worker it prints: the peak resident memory (``ru_maxrss``), the footprint after the warm-up (Python, numpy, numba,
dask, meanfield), the row data it owns (its share of the scattered row chunks, ``N / workers`` inputs' variances and
Hermite tables: the one part that grows with N, linearly), the rest (peak - footprint - owned rows: the blocks), and
the bound on that rest, from the largest numbers of block tasks it was given and of finished blocks it held (a worker
plugin watching every task transition):

    rest <= threads * (4 c r + 3 c^2 8 B) + held * 2 c^2 8 B

(``c`` rows per chunk, ``r`` bytes of row data per input: a running block task holds its two fetched row chunks and
their stacked copy, its NNGP and NTK blocks and one consumer temporary; a finished block holds its two matrices until
its consumers ran). Then, at ``--speedup-n``, the wall time with 1 worker and with 2 (run back to back), their
ratio, each worker's CPU time (the work: equal totals mean the split costs nothing) and its time in tasks (dask's task
stream): their sum over their maximum is the speed-up the schedule allows with enough free cores. The wall-clock
ratio is bounded by the free cores of the machine: on a shared machine it is lower.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

MIB = 2.0 ** 20


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


def _cpu_seconds():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _watch_plugin():
    from distributed import WorkerPlugin

    class Watch(WorkerPlugin):
        """Largest number of block tasks given to this worker (waiting to run or running) and of finished blocks
        held, and the largest row data it held, over all task transitions."""
        name = "meanfield-benchmark-watch"

        def setup(self, worker):
            self.worker, self.given, self.held, self.rows = worker, 0, 0, 0

        def transition(self, key, start, finish, **kwargs):
            state = self.worker.state
            blocks = [ts for ts in state.tasks.values() if "kernel_block" in str(ts.key)]
            self.given = max(self.given, sum(ts.state in ("waiting", "ready", "constrained", "executing")
                                             for ts in blocks))
            self.held = max(self.held, sum(ts.state == "memory" for ts in blocks))
            self.rows = max(self.rows, sum(ts.nbytes for k, ts in state.tasks.items()
                                           if "RowChunk" in str(k) and ts.state == "memory"))

    return Watch()


def _watched(dask_worker):
    w = dask_worker.plugins["meanfield-benchmark-watch"]
    return dict(given=w.given, held=w.held, rows_mib=w.rows / MIB, peak_mib=_peak_rss_mib(),
                threads=dask_worker.state.nthreads)


def run(n_workers, n, args):
    import dask
    import dask.array as da
    from distributed import Client, LocalCluster, get_task_stream

    from meanfield import Network
    from meanfield.distributed import distributed_kernels

    x = np.random.default_rng(0).standard_normal((n, args.dim))
    net = Network("tanh", depth=3, weight_var=1.5, bias_var=0.1)
    env = {} if args.numba_threads is None else {"NUMBA_NUM_THREADS": str(args.numba_threads)}
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, memory_limit=args.memory_limit,
                      dashboard_address=None, silence_logs=50, env=env) as cluster, Client(cluster) as client:
        # warm-up: every worker imports meanfield and loads the compiled kernels (a tiny kernel per worker)
        warm = distributed_kernels(net, x[:2 * args.tile], chunks=args.tile, tile_size=args.tile, client=client)
        dask.compute(warm.nngp.sum(), warm.ntk.sum())
        del warm
        idle = client.run(_peak_rss_mib)   # a worker's own footprint before the run
        client.register_plugin(_watch_plugin())
        cpu0 = client.run(_cpu_seconds)
        t0 = time.perf_counter()
        with get_task_stream(client) as stream:
            dk = distributed_kernels(net, x, chunks=args.chunks, tile_size=args.tile, client=client)
            fro_k, fro_t = dask.compute(da.sqrt((dk.nngp ** 2).sum()), da.sqrt((dk.ntk ** 2).sum()))
        wall = time.perf_counter() - t0
        cpu = [v - cpu0[k] for k, v in client.run(_cpu_seconds).items()]
        watched = client.run(_watched)
        limit = cluster.workers[next(iter(cluster.workers))].memory_manager.memory_limit / MIB
        saturation = client.run_on_scheduler(lambda: float(dask.config.get("distributed.scheduler.worker-saturation")))
    busy = {}   # seconds each worker spent computing tasks
    for task in stream.data:
        for ss in task["startstops"]:
            if ss["action"] == "compute":
                busy[task["worker"]] = busy.get(task["worker"], 0.0) + ss["stop"] - ss["start"]
    from meanfield.distributed import _RowChunk
    from meanfield.kernels import _check_options, _rows
    from meanfield.trace import _take_nodes

    # row data per input (bytes): that of one full chunk, from the same row pass
    chain = _check_options(net, x, None, "ntk", None, True, 1e-14, args.tile)[0]
    nodes, _ = _rows(chain, x, True, 1e-14)
    c = min(args.chunks, n)
    per_input = _RowChunk(_take_nodes(nodes, np.arange(c)), x[:c]).nbytes / c
    return dict(n=n, workers=n_workers, wall=wall, cpu=cpu, fro_k=repr(float(fro_k)), fro_t=repr(float(fro_t)),
                idle=list(idle.values()), watched=list(watched.values()), busy=list(busy.values()), limit=limit,
                saturation=saturation, row_bytes_per_input=per_input)


def _bound_mib(r, args):
    """The stated bound on a worker's peak minus its footprint and owned rows (see the module docstring)."""
    c, block = args.chunks, 8.0 * args.chunks ** 2
    w = r["watched"]
    return [(v["threads"] * (4 * c * r["row_bytes_per_input"] + 3 * block) + v["held"] * 2 * block) / MIB for v in w]


def _fresh(n_workers, n, args):
    cmd = [sys.executable, os.path.abspath(__file__), "--single", f"{n_workers},{n}", "--dim", str(args.dim),
           "--chunks", str(args.chunks), "--tile", str(args.tile), "--memory-limit", args.memory_limit,
           "--numba-threads", str(args.numba_threads or 0)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="*", default=[4096, 8192, 12288, 16384],
                    help="numbers of inputs N (kernels N x N) for the memory sweep (2 workers)")
    ap.add_argument("--speedup-n", type=int, default=8192, help="N of the 1- vs 2-worker timing (0: skip)")
    ap.add_argument("--dim", type=int, default=64, help="input dimension")
    ap.add_argument("--chunks", type=int, default=1024, help="block size (a multiple of --tile)")
    ap.add_argument("--tile", type=int, default=256, help="tile size of the tile pass")
    ap.add_argument("--memory-limit", default="1GiB", help="memory limit of each worker")
    ap.add_argument("--numba-threads", type=int, default=1,
                    help="NUMBA_NUM_THREADS of each worker (default 1: a worker uses one core, so that 2 workers "
                         "against 1 measures the split; 0: numba's default, all cores when they are free)")
    ap.add_argument("--single", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.numba_threads == 0:
        args.numba_threads = None

    import dask.array  # noqa: F401  (fail early without the extra)

    if args.single is not None:
        n_workers, n = (int(v) for v in args.single.split(","))
        print(json.dumps(run(n_workers, n, args)))
        return
    print(f"tanh depth 3, input dim {args.dim}, chunks {args.chunks} ({8.0 * args.chunks ** 2 / MIB:.0f} MiB per "
          f"matrix block), worker memory limit {args.memory_limit}, one thread per worker, NUMBA_NUM_THREADS "
          f"{args.numba_threads or 'default'}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    results = {}
    if args.n:
        print("peak memory per worker against N (2 workers), MiB:")
        print(f"{'N':>6} {'NNGP+NTK':>9} {'peak':>11} {'footprint':>11} {'owned rows':>11} {'rest':>11} {'bound':>6} "
              f"{'given':>5} {'held':>4}")
        for n in args.n:
            r = _fresh(2, n, args)
            results[2, n] = r
            w = r["watched"]
            rest = [v["peak_mib"] - i - v["rows_mib"] for v, i in zip(w, r["idle"])]

            def pair(vals, fmt="{:.0f}"):
                return ",".join(fmt.format(v) for v in vals)

            print(f"{n:>6} {2 * 8.0 * n * n / MIB:>9.0f} {pair(v['peak_mib'] for v in w):>11} {pair(r['idle']):>11} "
                  f"{pair(v['rows_mib'] for v in w):>11} {pair(rest):>11} {max(_bound_mib(r, args)):>6.0f} "
                  f"{max(v['given'] for v in w):>5} {max(v['held'] for v in w):>4}   ({r['wall']:.0f} s)", flush=True)
        last = results[2, args.n[-1]]
        print(f"row data per input: {last['row_bytes_per_input'] / 1024:.1f} KiB "
              f"(inputs {8 * args.dim / 1024:.1f} KiB, "
              f"the rest variances and Hermite tables); blocks given to a worker at most "
              f"ceil(worker-saturation x threads) = {max(math.ceil(last['saturation']), 1)} "
              f"(worker-saturation {last['saturation']}); memory limit {last['limit']:.0f} MiB")
    if args.speedup_n:
        n = args.speedup_n
        one = _fresh(1, n, args)   # back to back, so that both see about the same load from other processes
        two = _fresh(2, n, args)
        for r in (one, two):
            print(f"N = {n}, {r['workers']} worker(s): {r['wall']:8.2f} s wall, CPU time per worker [s]: "
                  f"{', '.join(f'{v:.1f}' for v in r['cpu'])}, task time per worker [s]: "
                  f"{', '.join(f'{v:.1f}' for v in r['busy'])} (schedule-bound speed-up "
                  f"{sum(r['busy']) / max(r['busy']):.2f}x), |K|_F = {r['fro_k']}, |Theta|_F = {r['fro_t']}")
        print(f"speed-up 2 workers / 1 worker (wall): {one['wall'] / two['wall']:.2f}x; norms equal bit for bit: "
              f"{(one['fro_k'], one['fro_t']) == (two['fro_k'], two['fro_t'])}")


if __name__ == "__main__":
    main()
