"""Speed-up of 2 dask workers over 1 on a kernel larger than one worker's memory limit, and peak memory per worker.

Run from the repository root (needs the extra ``meanfield-theory[dask]``)::

    python benchmarks/distributed_kernels.py            # N = 10240: NNGP + NTK = 1.56 GiB, worker limit 1 GiB
    python benchmarks/distributed_kernels.py --n 16384 --memory-limit 2GiB --chunks 2048

Both runs use the same inputs, each in a fresh process (a second cluster started in one process showed a larger
footprint per worker from the start): a LocalCluster of 1 worker process, then one of 2 (one thread each,
``--memory-limit`` each). Each computes the NNGP and NTK of a tanh network (depth 3, Mehler route) as dask
arrays and reduces them to their Frobenius norms on the cluster, so no process ever holds a whole matrix. The workers
are warmed up first (numba loads its cache in each process: not timed). Printed: wall time with 1 and 2 workers,
their ratio (the speed-up), each worker's peak resident memory (``ru_maxrss``) against its limit and against the
size of the matrices, and each worker's time spent in tasks (from dask's task stream): their sum over their maximum
is the speed-up the schedule allows with enough free cores. The wall-clock ratio is bounded by the free cores of the
machine: on a shared machine it is lower.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # Linux: KiB


def run(n_workers, args, x, net):
    import dask
    from distributed import Client, LocalCluster, get_task_stream

    from meanfield.distributed import distributed_kernels

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, memory_limit=args.memory_limit,
                      dashboard_address=None, silence_logs=50) as cluster, Client(cluster) as client:
        # warm-up: every worker imports meanfield and loads the compiled kernels (a tiny kernel per worker)
        warm = distributed_kernels(net, x[:2 * args.tile], chunks=args.tile, tile_size=args.tile, client=client)
        dask.compute(warm.nngp.sum(), warm.ntk.sum())
        idle = client.run(_peak_rss_mib)   # a worker's own footprint (python, numpy, numba, meanfield) before the run
        t0 = time.perf_counter()
        with get_task_stream(client) as stream:
            dk = distributed_kernels(net, x, chunks=args.chunks, tile_size=args.tile, client=client)
            fro_k, fro_t = dask.compute(dask.array.sqrt((dk.nngp ** 2).sum()), dask.array.sqrt((dk.ntk ** 2).sum()))
        wall = time.perf_counter() - t0
        peaks = client.run(_peak_rss_mib)
        limit = cluster.workers[next(iter(cluster.workers))].memory_manager.memory_limit / 2 ** 20
    busy = {}   # seconds each worker spent computing tasks
    for task in stream.data:
        for ss in task["startstops"]:
            if ss["action"] == "compute":
                busy[task["worker"]] = busy.get(task["worker"], 0.0) + ss["stop"] - ss["start"]
    return wall, float(fro_k), float(fro_t), peaks, limit, busy, idle


def _single(args):
    """One cluster size, in this (fresh) process: prints one JSON line."""
    from meanfield import Network

    x = np.random.default_rng(0).standard_normal((args.n, args.dim))
    net = Network("tanh", depth=3, weight_var=1.5, bias_var=0.1)
    wall, fk, ft, peaks, limit, busy, idle = run(args.single, args, x, net)
    print(json.dumps(dict(wall=wall, fro_k=repr(fk), fro_t=repr(ft), peaks=list(peaks.values()), limit=limit,
                          busy=list(busy.values()), idle=list(idle.values()))))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10240, help="number of inputs N (kernels N x N)")
    ap.add_argument("--dim", type=int, default=64, help="input dimension")
    ap.add_argument("--chunks", type=int, default=1024, help="block size (a multiple of --tile)")
    ap.add_argument("--tile", type=int, default=256, help="tile size of the tile pass")
    ap.add_argument("--memory-limit", default="1GiB", help="memory limit of each worker")
    ap.add_argument("--single", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    import dask.array  # noqa: F401  (fail early without the extra)

    if args.single is not None:
        return _single(args)
    size_mib = 2 * 8.0 * args.n ** 2 / 2 ** 20
    print(f"tanh depth 3, N = {args.n}, input dim {args.dim}: NNGP + NTK = {size_mib:.0f} MiB; "
          f"chunks {args.chunks} ({8.0 * args.chunks ** 2 / 2 ** 20:.0f} MiB per block), "
          f"worker memory limit {args.memory_limit}; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}")
    results = {}
    for n_workers in (1, 2):   # each in a fresh process, so that no cluster inherits the other's footprint
        cmd = [sys.executable, os.path.abspath(__file__), "--single", str(n_workers), "--n", str(args.n),
               "--dim", str(args.dim), "--chunks", str(args.chunks), "--tile", str(args.tile),
               "--memory-limit", args.memory_limit]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        results[n_workers] = r
        print(f"{n_workers} worker(s): {r['wall']:8.2f} s wall   |K|_F = {r['fro_k']}  |Theta|_F = {r['fro_t']}\n"
              f"    peak RSS per worker [MiB]: {', '.join(f'{v:.0f}' for v in r['peaks'])} (after the warm-up: "
              f"{', '.join(f'{v:.0f}' for v in r['idle'])}; limit {r['limit']:.0f} MiB, matrices {size_mib:.0f} MiB); "
              f"task compute time per worker [s]: {', '.join(f'{v:.1f}' for v in r['busy'])} (schedule-bound "
              f"speed-up {sum(r['busy']) / max(r['busy']):.2f}x)")
    same = (results[1]["fro_k"], results[1]["fro_t"]) == (results[2]["fro_k"], results[2]["fro_t"])
    print(f"speed-up 2 workers / 1 worker (wall): {results[1]['wall'] / results[2]['wall']:.2f}x; "
          f"norms equal bit for bit: {same}")


if __name__ == "__main__":
    main()
