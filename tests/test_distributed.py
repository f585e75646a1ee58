"""meanfield.distributed on a LocalCluster of 2 worker processes started here (CI has no other services).

Every check compares with an independent route: the in-memory kernels bit for bit (same tile code, so any difference
is a bug in the split, the scatter or the assembly), the in-memory GP posterior / NTK interpolant (scipy Cholesky) to
the solver's error bound, and the single-process sweeps bit for bit (each grid point is computed on its own).
"""
import faulthandler
import math
import pickle
import os
import signal
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")
cloudpickle = pytest.importorskip("cloudpickle")

from meanfield import Network, critical_line, custom_activation, get_activation, depth_scale_curve, gp_posterior, kernels, phase_diagram  # noqa: E402
from meanfield.distributed import (distributed_critical_line, distributed_depth_scale_curve,  # noqa: E402
                                   distributed_kernels, distributed_map, distributed_nngp_regression,
                                   distributed_ntk_regression, distributed_phase_diagram, kernel_solve)
from meanfield.layers import Dense, Nonlinearity, Residual, serial  # noqa: E402

#: heavier variants run with MEANFIELD_SLOW=1 (the default run starts a cluster whose workers import meanfield)
slow = pytest.mark.skipif(os.environ.get("MEANFIELD_SLOW") != "1", reason="slow: set MEANFIELD_SLOW=1")

#: a hung cluster must not hang the suite: dump the stacks and exit after this many seconds
_HANG_SECONDS = 240


@pytest.fixture(scope="module")
def client():
    faulthandler.dump_traceback_later(_HANG_SECONDS, exit=True)
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None,
                                       memory_limit="2GiB", silence_logs=50)
    cl = distributed.Client(cluster, timeout=60)
    try:
        yield cl
    finally:
        cl.close(timeout=30)
        cluster.close(timeout=30)
        faulthandler.cancel_dump_traceback_later()


def _same_result(a, b):
    return (np.array_equal(a.nngp, b.nngp) and (a.ntk is None) == (b.ntk is None)
            and (a.ntk is None or np.array_equal(a.ntk, b.ntk)) and a.n_terms == b.n_terms
            and a.truncation_bound == b.truncation_bound and a.truncation_bound_dot == b.truncation_bound_dot
            and a.n_fallback == b.n_fallback and a.routes == b.routes)


# ------------------------------------------------------------- without a cluster (run first: no default client yet)
def test_distributed_map_needs_a_client():
    if distributed.client._get_global_client() is not None:
        pytest.skip("a default client exists in this process")
    with pytest.raises(ValueError, match="client"):
        distributed_map(abs, [1, -2])


def test_custom_activation_pickles():
    """A custom activation is rebuilt from its source when unpickled (the workers get it that way)."""
    act = _NETS["custom-activation"].activation
    back = pickle.loads(cloudpickle.dumps(act))   # as dask ships it (plain pickle cannot pickle a lambda)
    xs = np.linspace(-3, 3, 13)
    assert back.is_custom and back.name == "scaled_tanh" and back.evaluator is not act.evaluator
    assert np.array_equal(back.phi(xs), act.phi(xs)) and np.array_equal(back.dphi(xs), act.dphi(xs))
    tanh = get_activation("tanh")
    assert pickle.loads(pickle.dumps(tanh)) == tanh


def test_distributed_kernels_bad_input():
    net = _NETS["relu-closed"]
    x = np.ones((10, 2))
    with pytest.raises(ValueError, match="chunks must be a multiple of tile_size"):
        distributed_kernels(net, x, chunks=12, tile_size=8)
    with pytest.raises(ValueError, match="chunks"):
        distributed_kernels(net, x, chunks=4, tile_size=8)
    with pytest.raises(ValueError, match="parameterization"):
        distributed_kernels(net, x, parameterization="mean-field")
    with pytest.raises(TypeError, match="client"):
        distributed_kernels(net, x, client="tcp://nowhere:8786")


def test_missing_dask_names_the_extra(monkeypatch):
    import meanfield.distributed as md

    monkeypatch.setitem(sys.modules, "dask", None)   # import dask -> ImportError
    with pytest.raises(ImportError, match=r"meanfield-theory\[dask\]"):
        md.distributed_kernels(_NETS["relu-closed"], np.ones((3, 2)))


def test_kernel_solve_reports_residual_and_non_convergence():
    rng = np.random.default_rng(6)
    A = rng.standard_normal((30, 30))
    K = A @ A.T + 1e-6 * np.eye(30)             # cond ~ 1e8: CG cannot reach 1e-14 in 3 steps
    y = rng.standard_normal(30)
    with pytest.warns(Warning, match="max_iter=3"):
        sol = kernel_solve(K, y, max_iter=3, rtol=1e-14)
    true = np.linalg.norm(K @ sol.coef - y) / np.linalg.norm(y)
    assert sol.n_iter == 3 and sol.residual == pytest.approx(true, rel=1e-6)
    with pytest.raises(np.linalg.LinAlgError, match="positive definite"):
        kernel_solve(-np.eye(4), np.ones(4))
    with pytest.raises(ValueError, match="method"):
        kernel_solve(np.eye(4), np.ones(4), method="lu")
    with pytest.raises(ValueError, match="y must have shape"):
        kernel_solve(np.eye(4), np.ones(5))


@settings(max_examples=10, deadline=None, derandomize=True)
@given(n1=st.integers(1, 30), n2=st.one_of(st.none(), st.integers(1, 20)), tiles_per_chunk=st.integers(1, 3),
       activation=st.sampled_from(["relu", "erf", "tanh"]), depth=st.integers(1, 3),
       scale=st.floats(1e-3, 10.0), seed=st.integers(0, 2 ** 16))
def test_blocks_equal_in_memory_for_any_split(n1, n2, tiles_per_chunk, activation, depth, scale, seed):
    """Invariant: for any sizes, chunking and input scale the blocks reassemble the in-memory kernel bit for bit
    (dask's threaded scheduler here; the cluster tests below check the same across processes)."""
    rng = np.random.default_rng(seed)
    x1 = scale * rng.standard_normal((n1, 3))
    x2 = None if n2 is None else scale * rng.standard_normal((n2, 3))
    net = Network(activation, depth=depth, weight_var=1.3, bias_var=0.05)
    ref = kernels(net, x1, x2, tile_size=8)
    got = distributed_kernels(net, x1, x2, chunks=8 * tiles_per_chunk, tile_size=8).compute(scheduler="threads")
    assert _same_result(got, ref)


# ---------------------------------------------------------------------------------------------------------- kernels
_NETS = {
    "tanh-mehler": Network("tanh", depth=3, weight_var=1.5, bias_var=0.1),
    "relu-closed": Network("relu", depth=2, weight_var=2.0, bias_var=0.1),
    "residual-chain": serial(Dense(1.0), Residual(serial(Nonlinearity("erf"), Dense(2.0)), alpha=0.5),
                             Nonlinearity("gelu"), Dense(1.3, 0.1)),
    # a custom activation travels to the workers as its Python source and is compiled again there
    "custom-activation": Network(custom_activation("scaled_tanh", lambda x: 1.7159 * math.tanh(2.0 * x / 3.0)),
                                 depth=2, weight_var=1.2, bias_var=0.1),
}


@pytest.mark.parametrize("name", [n if n == "tanh-mehler" else pytest.param(n, marks=slow) for n in _NETS])
def test_kernels_bit_for_bit_on_the_cluster(client, name):
    """Symmetric and cross kernels, both parameterizations, ragged last blocks: equal bit for bit, same budget."""
    net = _NETS[name]
    rng = np.random.default_rng(3)
    x1, x2 = rng.standard_normal((45, 4)), 2.0 * rng.standard_normal((21, 4))
    for b, param, width in [(None, "ntk", None), (x2, "standard", 64.0)]:
        ref = kernels(net, x1, b, parameterization=param, width=width, tile_size=8)
        dk = distributed_kernels(net, x1, b, chunks=16, tile_size=8, parameterization=param, width=width,
                                 client=client)
        assert dk.nngp.chunks[0] == (16, 16, 13)
        assert _same_result(dk.compute(), ref)
        nngp_only = distributed_kernels(net, x1, b, chunks=16, tile_size=8, compute_ntk=False, client=client)
        assert nngp_only.ntk is None
        assert np.array_equal(nngp_only.nngp.compute(), kernels(net, x1, b, compute_ntk=False, tile_size=8).nngp)


def test_kernel_blocks_are_independent_tasks(client):
    """A single block computes without the others (memory per task: its rows and its chunk only)."""
    net = _NETS["tanh-mehler"]
    x = np.random.default_rng(4).standard_normal((40, 3))
    dk = distributed_kernels(net, x, chunks=8, tile_size=8, client=client)
    ref = kernels(net, x, tile_size=8)
    assert np.array_equal(dk.ntk[24:32, 8:16].compute(), ref.ntk[24:32, 8:16])   # below the diagonal: a transpose
    assert np.array_equal(dask.array.diagonal(dk.nngp).compute(), np.diagonal(ref.nngp))
    # 15 block tasks (on and above the diagonal) + 10 transposes + the from_delayed/getitem layers: O(blocks), and
    # no block task depends on another (each holds its two row chunks only)
    graph = dict(dk.nngp.__dask_graph__())
    assert len(graph) < 6 * 25




def test_row_chunk_size_is_what_it_holds():
    """dask sizes an object it does not know by ``sys.getsizeof``: a row chunk reports the bytes of all its arrays
    (variances, Hermite tables, inputs), checked against an independent count, the length of its pickle (the arrays'
    bytes plus a little framing: within 5% + 64 KiB)."""
    from dask.sizeof import sizeof

    from meanfield.distributed import _RowChunk
    from meanfield.kernels import _check_options, _rows
    from meanfield.trace import _take_nodes

    x = np.random.default_rng(7).standard_normal((64, 5))
    chain = _check_options(_NETS["tanh-mehler"], x, None, "ntk", None, True, 1e-14, 8)[0]
    nodes, _ = _rows(chain, x, True, 1e-14)
    chunk = _RowChunk(_take_nodes(nodes, np.arange(16, 48)), x[16:48])
    n_pickle = len(pickle.dumps(chunk, protocol=5))
    assert chunk.nbytes <= n_pickle <= 1.05 * chunk.nbytes + 65536
    assert sizeof(chunk) >= chunk.nbytes > 20 * x[16:48].nbytes   # the tables, not the inputs, dominate


def test_blocks_in_flight_per_worker_are_bounded(client):
    """The mechanism that bounds a worker's memory, observed on every worker at every task transition while a
    Frobenius norm of NNGP and NTK is reduced on the cluster (28 block tasks, more than twice the cluster's threads,
    so that dask treats them as root tasks):

    * a worker is given at most ``ceil(worker-saturation * nthreads)`` block tasks at a time (dask's queuing of root
      tasks: the blocks have no dependencies, their row chunks are fetched inside the task);
    * no row chunk is ever held by two workers (blocks fetch their chunks for the time of the task, not as replicas);
    * finished blocks waiting for their consumers: at most one more than the blocks a worker may be given.

    Before the change, a worker was given all its blocks at once (18-68 at 8-16 chunks) and held a replica of every
    row chunk. The norms equal those of the in-memory matrices to rounding.
    """
    from distributed import WorkerPlugin

    class Watch(WorkerPlugin):
        name = "meanfield-watch"

        def setup(self, worker):
            self.worker, self.given, self.done, self.chunks = worker, 0, 0, set()
            self.before = {str(k) for k in worker.state.data}   # chunks of earlier tests' kernels, if still alive

        def transition(self, key, start, finish, **kwargs):
            state = self.worker.state
            blocks = [ts for ts in state.tasks.values() if "kernel_block" in str(ts.key)]
            self.given = max(self.given, sum(ts.state in ("waiting", "ready", "constrained", "executing")
                                             for ts in blocks))
            self.done = max(self.done, sum(ts.state == "memory" for ts in blocks))
            self.chunks |= {str(k) for k in state.data if "RowChunk" in str(k)} - self.before

    def report(dask_worker):
        w = dask_worker.plugins["meanfield-watch"]
        return w.given, w.done, sorted(w.chunks), dask_worker.state.nthreads

    net = _NETS["tanh-mehler"]
    x = np.random.default_rng(8).standard_normal((112, 3))     # 7 chunks of 16: 28 blocks on and above the diagonal
    client.register_plugin(Watch())
    try:
        dk = distributed_kernels(net, x, chunks=16, tile_size=8, client=client)
        norms = dask.compute(dask.array.sqrt((dk.nngp ** 2).sum()), dask.array.sqrt((dk.ntk ** 2).sum()))
        seen = client.run(report)
    finally:
        client.unregister_worker_plugin("meanfield-watch")
    saturation = client.run_on_scheduler(lambda: float(dask.config.get("distributed.scheduler.worker-saturation")))
    ref = kernels(net, x, tile_size=8)
    ref_norms = dask.compute(*(dask.array.sqrt((dask.array.from_array(m, chunks=16) ** 2).sum())
                               for m in (ref.nngp, ref.ntk)))
    # the same 12544 non-negative squares summed in another order (a transposed block is summed through its view):
    # each sum is exact to ~(log2(n) + number of partial sums) eps ~ 5e-15 relative
    np.testing.assert_allclose(np.array(norms, dtype=float), np.array(ref_norms, dtype=float), rtol=1e-13, atol=0)
    held = [c for _, _, chunks, _ in seen.values() for c in chunks]
    assert len(held) == len(set(held)) == 7                   # each chunk on one worker only
    for given, done, _, nthreads in seen.values():
        slots = max(math.ceil(saturation * nthreads), 1)
        assert 1 <= given <= slots
        assert done <= slots + 1


@slow
def test_lost_row_chunk_raises_a_clear_error(client):
    """The row chunks are scattered data (not recomputable): when the worker holding some dies, a block that needs one
    raises a RuntimeError saying so, at once (it does not wait for the chunk)."""
    net = _NETS["tanh-mehler"]
    x = np.random.default_rng(9).standard_normal((96, 3))
    dk = distributed_kernels(net, x, chunks=16, tile_size=8, client=client)
    pids = client.run(os.getpid)
    os.kill(sorted(pids.values())[0], signal.SIGKILL)
    try:
        with pytest.raises(RuntimeError, match="row chunk .* is lost"):
            client.compute(dk.nngp.sum()).result(timeout=120)
    finally:
        client.wait_for_workers(2, timeout=60)


# -------------------------------------------------------------------------------------------------------- regression
def _regression_case(client, methods):
    """NNGP posterior mean and NTK t = inf with a ridge against the in-memory route (scipy Cholesky of the in-memory
    kernels).

    Error analysis: CG stops at relative residual r <= rtol = 1e-10, so the relative error of the coefficients is at
    most cond(K + s I) r; with s = 0.1 and the largest eigenvalue <~ n max K ~ 32 * 3, cond <~ 1e3, so 1e-6 bounds
    the error of the means relative to their largest entry (a loose bound: |K_*| |coef| ~ |mean| here). Cholesky and
    the in-memory route are both good to cond * eps ~ 1e-13, inside the same tolerance.
    """
    net = Network("tanh", depth=2, weight_var=1.5, bias_var=0.1)
    rng = np.random.default_rng(5)
    X, Xs = rng.standard_normal((32, 3)), rng.standard_normal((7, 3))
    y = np.column_stack([np.sin(X[:, 0]), X[:, 1] * X[:, 2]])
    s = 0.1
    ref_k = kernels(net, X, tile_size=8)
    ref_c = kernels(net, Xs, X, tile_size=8)
    ref_nngp = gp_posterior(ref_k.nngp, ref_c.nngp, y, noise_var=s).mean
    ref_ntk = ref_c.ntk @ np.linalg.solve(ref_k.ntk + s * np.eye(32), y[:, 0])
    for which, method in methods:
        if which == "nngp":
            p = distributed_nngp_regression(net, X, y, Xs, s, chunks=16, tile_size=8, method=method, rtol=1e-10,
                                            client=client)
            ref = ref_nngp
        else:
            p = distributed_ntk_regression(net, X, y[:, 0], Xs, s, chunks=16, tile_size=8, method=method, rtol=1e-10,
                                           client=client)
            ref = ref_ntk
        assert p.mean.shape == ref.shape and p.solve.method == method
        assert p.solve.residual < (1e-9 if method == "cg" else 1e-12)
        assert (p.solve.n_iter > 0) == (method == "cg")
        np.testing.assert_allclose(p.mean, ref, rtol=0, atol=1e-6 * np.abs(ref).max())


def test_regression_matches_in_memory(client):
    _regression_case(client, [("nngp", "cg"), ("ntk", "cholesky")])


@slow
def test_regression_matches_in_memory_all_routes(client):
    _regression_case(client, [("nngp", "cholesky"), ("ntk", "cg")])


# ------------------------------------------------------------------------------------------------------------ sweeps
def test_sweeps_equal_single_process(client):
    w, b = np.linspace(0.5, 3.0, 9), np.linspace(0.0, 0.4, 5)
    pd = distributed_phase_diagram("erf", w, b, rows_per_task=2, client=client)
    ref = phase_diagram("erf", w, b)
    for k in ("qstar", "chi1", "cstar", "chi_c", "xi_q", "xi_c", "xi_grad", "critical_weight_vars"):
        assert np.array_equal(getattr(pd, k), getattr(ref, k), equal_nan=True), k
    assert pd.complete and pd.shape == ref.shape
    line = distributed_critical_line("tanh", b, points_per_task=2, client=client)
    ref_line = critical_line("tanh", b)
    for k in ("weight_vars", "qstar", "chaotic_weight_vars", "cstar", "chi_c", "xi_c"):
        assert np.array_equal(getattr(line, k), getattr(ref_line, k), equal_nan=True), k
    curve = distributed_depth_scale_curve("tanh", w, 0.05, points_per_task=4, client=client)
    ref_curve = depth_scale_curve("tanh", w, 0.05)
    for k in ("xi_q", "xi_c", "xi_grad", "cstar"):
        assert np.array_equal(getattr(curve, k), getattr(ref_curve, k), equal_nan=True), k
    assert curve.critical_weight_var == ref_curve.critical_weight_var


def test_sweep_warnings_reach_the_client(client):
    with pytest.warns(Warning, match="q\\* = inf"):   # relu with bias: the length map diverges at w = 2
        distributed_critical_line("relu", [0.1, 0.2], offsets=(), client=client)


def test_sweep_survives_a_killed_worker(client, tmp_path):
    """Kill one worker process mid-sweep: the result equals the single-process sweep, and the points the client
    held before the kill were computed exactly once (finished points are kept, only running ones are redone)."""
    log = str(tmp_path)

    def point(i, bias_var):
        with open(os.path.join(log, f"{i}-{os.getpid()}-{time.time_ns()}"), "w"):
            pass
        time.sleep(0.3)
        from meanfield import critical_weight_var
        return float(critical_weight_var("tanh", bias_var))

    biases = np.linspace(0.0, 0.5, 12)
    pids = client.run(os.getpid)
    held, killed = [], []

    def on_result(i, value):
        held.append(i)
        if len(held) == 3 and not killed:
            victim = sorted(pids.values())[0]
            killed.append((victim, list(held)))
            os.kill(victim, signal.SIGKILL)

    out = distributed_map(point, [(i, float(b)) for i, b in enumerate(biases)], client=client, on_result=on_result,
                          timeout=150)
    from meanfield import critical_weight_var
    ref = [float(critical_weight_var("tanh", float(b))) for b in biases]
    assert out == ref
    runs = {}
    for name in os.listdir(log):
        i, pid, _ = name.split("-")
        runs.setdefault(int(i), []).append(int(pid))
    victim, before = killed[0]
    assert all(len(runs[i]) == 1 for i in before)          # held by the client: never recomputed
    assert sorted(runs) == list(range(12))
    client.wait_for_workers(2, timeout=60)                 # the nanny restarts the killed worker


@slow
def test_import_meanfield_without_dask():
    """``import meanfield`` works without dask; calling a distributed function names the extra."""
    import subprocess

    code = ("import sys; sys.modules['dask'] = None; sys.modules['distributed'] = None\n"
            "import numpy as np, meanfield\n"
            "try:\n    meanfield.distributed_kernels(meanfield.Network('relu', depth=1), np.ones((2, 2)))\n"
            "except ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=os.path.join(os.path.dirname(__file__), ".."))
    assert out.returncode == 0, out.stderr
    assert "pip install 'meanfield-theory[dask]'" in out.stdout


@slow
def test_validation_ladder_split_across_workers(client):
    """The docs' recipe: one task per (network, width) of the torch validation ladder; equal to the in-process
    simulation bit for bit (network i at every width is seeded by (seed, i), independently of the other tasks)."""
    pytest.importorskip("torch")
    from meanfield.validation.networks import resolve_device, resolve_dtype
    from meanfield.validation.report import default_configs
    from meanfield.validation.simulate import default_settings, simulate_width
    from meanfield.validation.theory import resolve_inputs

    dev, dt = resolve_device("cpu"), resolve_dtype("float64")
    st = dict(default_settings(True, dev), n_seeds=8, widths=(16, 32))
    tasks = [(cfg, resolve_inputs(cfg), M, st, dev, dt, 0) for cfg in default_configs() for M in st["widths"]]
    ladder = distributed_map(simulate_width, tasks, client=client, timeout=300)
    for (samples, _), task in zip(ladder, tasks):
        ref, _ = simulate_width(*task)
        assert set(samples) == set(ref)
        assert all(np.array_equal(np.asarray(samples[k]), np.asarray(ref[k]), equal_nan=True) for k in ref)
