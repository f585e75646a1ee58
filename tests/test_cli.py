"""End-to-end tests of the ``meanfield`` command line (meanfield.cli), on small grids.

The commands are run in-process through ``meanfield.cli.main(argv)`` (one subprocess test checks
``python -m meanfield``). Each written file is parsed back and compared with the library called directly: the CLI must
write exactly what the library computes (the library's numbers are checked against independent routes in
test_phase.py), so the comparisons are exact or at round-trip precision (CSV written with 17 significant digits).
"""
from __future__ import annotations

import os
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest

from meanfield.cli import main, parse_grid
from meanfield.phase import PhaseDiagram, depth_scale_curve, map_dynamics, phase_diagram

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _check_png(path):
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100


def _check_svg(path):
    with open(path, encoding="utf-8") as f:
        head = f.read(400)
    assert "<svg" in head or head.startswith("<?xml")


def test_phase_diagram_command(tmp_path, capsys):
    rc = main(["phase-diagram", "--activation", "tanh", "--weight-var", "0.5:4:9", "--bias-var", "0:0.5:6",
               "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out.split()
    expected = ["tanh_phase.npz", "tanh_phase.csv", "tanh_phase_chi1.png", "tanh_phase_chi1.svg",
                "tanh_phase_xi_c.png", "tanh_phase_xi_c.svg"]
    for name in expected:
        assert os.path.join(str(tmp_path), name) in out
        assert (tmp_path / name).stat().st_size > 0
    ref = phase_diagram("tanh", np.linspace(0.5, 4, 9), np.linspace(0, 0.5, 6))
    back = PhaseDiagram.load(tmp_path / "tanh_phase.npz")
    for name in ("weight_vars", "bias_vars", "qstar", "chi1", "cstar", "chi_c", "xi_q", "xi_c", "xi_grad",
                 "critical_weight_vars"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ref, name))
    csv = np.loadtxt(tmp_path / "tanh_phase.csv", delimiter=",", skiprows=1)
    assert csv.shape == (54, 9)
    np.testing.assert_array_equal(csv[:, 3], ref.chi1.ravel())
    np.testing.assert_array_equal(csv[:, 7], ref.xi_c.ravel())
    for stem in ("tanh_phase_chi1", "tanh_phase_xi_c"):
        _check_png(tmp_path / f"{stem}.png")
        _check_svg(tmp_path / f"{stem}.svg")


def test_phase_diagram_progress_bar_on_long_grid(tmp_path, capsys):
    rc = main(["phase-diagram", "-a", "erf", "-w", "0.2:3:50", "-b", "0:0.5:40", "-o", str(tmp_path),
               "--prefix", "big"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "100%" in err and "rows 40/40" in err
    assert (tmp_path / "big_phase_chi1.png").exists()


def test_maps_command(tmp_path, capsys):
    rc = main(["maps", "-a", "erf", "--weight-var", "0.5,2", "--bias-var", "0.3", "--depth", "5",
               "--out", str(tmp_path)])
    assert rc == 0
    for name in ("erf_maps.npz", "erf_maps.png", "erf_maps.svg"):
        assert (tmp_path / name).stat().st_size > 0
    _check_png(tmp_path / "erf_maps.png")
    ref = map_dynamics("erf", [0.5, 2.0], 0.3, depth=5)
    with np.load(tmp_path / "erf_maps.npz") as f:
        np.testing.assert_array_equal(f["q_layers"], ref.q_layers)
        np.testing.assert_array_equal(f["c_layers"], ref.c_layers)
        np.testing.assert_array_equal(f["qstar"], ref.qstar)
        assert str(f["activation"]) == "erf"


def test_depth_scales_command(tmp_path, capsys):
    rc = main(["depth-scales", "-a", "tanh", "-w", "0.5:4:15", "-b", "0.05", "-o", str(tmp_path)])
    assert rc == 0
    for name in ("tanh_depth_scales.csv", "tanh_depth_scales.png", "tanh_depth_scales.svg"):
        assert (tmp_path / name).stat().st_size > 0
    _check_png(tmp_path / "tanh_depth_scales.png")
    ref = depth_scale_curve("tanh", np.linspace(0.5, 4, 15), 0.05)
    with open(tmp_path / "tanh_depth_scales.csv") as f:
        first = f.readline()
    assert f"critical_weight_var={ref.critical_weight_var!r}" in first
    data = np.loadtxt(tmp_path / "tanh_depth_scales.csv", delimiter=",", skiprows=2)
    np.testing.assert_array_equal(data[:, 0], ref.weight_vars)
    np.testing.assert_array_equal(data[:, 5], ref.xi_q)
    np.testing.assert_array_equal(data[:, 6], ref.xi_c)


def test_figures_command(tmp_path, capsys):
    rc = main(["figures", "--out", str(tmp_path), "--grid", "8x6", "--depth", "4", "--depth-points", "8", "-q"])
    assert rc == 0
    capsys.readouterr()
    for act in ("tanh", "relu", "erf"):
        for name in (f"{act}_phase.npz", f"{act}_phase.csv", f"{act}_phase_chi1.png", f"{act}_phase_chi1.svg",
                     f"{act}_phase_xi_c.png", f"{act}_phase_xi_c.svg", f"{act}_maps.png", f"{act}_maps.svg",
                     f"{act}_maps.npz", f"{act}_depth_scales.png", f"{act}_depth_scales.svg",
                     f"{act}_depth_scales.csv"):
            assert (tmp_path / name).stat().st_size > 0, name
        pd = PhaseDiagram.load(tmp_path / f"{act}_phase.npz")
        assert pd.shape == (6, 8) and pd.activation == act


@pytest.mark.parametrize("command", ["phase-diagram", "maps", "depth-scales", "figures"])
def test_help_has_example(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "example:" in text and f"meanfield {command}" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["phase-diagram", "--weight-var", "4:0.5:10", "-q"],
        ["phase-diagram", "--weight-var", "a:b:c", "-q"],
        ["phase-diagram", "--weight-var", "0.5:4:1", "-q"],
        ["phase-diagram", "--bias-var", "-1:0.5:5", "--weight-var", "1:2:3", "-q"],
        ["phase-diagram", "--activation", "nosuch", "-q"],
        ["phase-diagram", "--activation", "leaky_relu", "--param", "slope", "-q"],
        ["phase-diagram", "--activation", "tanh", "--param", "slope=0.2", "-q"],
        ["phase-diagram", "--dpi", "0"],
        ["maps", "--weight-var", "-1,2"],
        ["maps", "--depth", "x"],
        ["maps", "--bias-var", "nan"],
        ["depth-scales", "--bias-var", "-0.5"],
        ["figures", "--grid", "1x5"],
        ["figures", "--activations", "tanh,bogus"],
        ["frobnicate"],
        ["phase-diagram", "--no-such-flag"],
        [],
    ],
)
def test_bad_arguments_one_line_error(argv, capsys, tmp_path):
    if argv and "--out" not in argv and argv[0] in ("phase-diagram", "maps", "depth-scales", "figures"):
        argv = argv + ["--out", str(tmp_path)]
    rc = main(argv)
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0]


def test_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    rc = main(["maps", "--out", str(f)])
    assert rc == 2
    assert "not a folder" in capsys.readouterr().err


def test_parse_grid():
    np.testing.assert_array_equal(parse_grid("0:1:3"), [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(parse_grid("1,2.5"), [1.0, 2.5])
    np.testing.assert_array_equal(parse_grid("2"), [2.0])


def test_python_dash_m(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "meanfield", "maps", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "example:" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "meanfield", "maps", "--depth", "0"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_ctrl_c_during_phase_diagram_keeps_partial_grid(tmp_path):
    """Issue 11 item 8: SIGINT to ``meanfield phase-diagram`` in the middle of a 200 x 200 tanh grid (sent once the
    first rows are reported on stderr) stops it within a few seconds with exit status 130 and "interrupted", and
    leaves a loadable npz and csv that carry the ``finished`` mask and are marked partial (unfinished points NaN)."""
    import signal
    import threading
    import time

    out = tmp_path / "out"
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, "-m", "meanfield", "phase-diagram", "-a", "tanh", "-w", "0.5:4:200",
                             "-b", "0:0.5:200", "--out", str(out)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines, started = [], threading.Event()

    def pump():
        for line in proc.stderr:
            lines.append(line)
            if "phase diagram" in line and "rows" in line:
                started.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        # progress is reported per finished row; a cold numba cache may take minutes before the first one
        assert started.wait(600), f"no progress reported: {''.join(lines)}"
        time.sleep(1.0)
        assert proc.poll() is None, "the grid finished before the interrupt: make it larger"
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    err = "".join(lines)
    assert rc == 130, err      # (proc.wait's 30 s timeout guards against a hang; no timing assertion here)
    assert "interrupted" in err
    assert "Traceback" not in err and "internal error" not in err, err
    pd = PhaseDiagram.load(out / "tanh_phase.npz")
    assert not pd.complete and pd.finished is not None
    n_done = int(pd.finished.sum())
    assert 0 < n_done < 200 * 200
    with np.load(out / "tanh_phase.npz") as f:
        assert "finished" in f.files and not bool(f["complete"])
        assert np.array_equal(f["finished"], pd.finished)
    # finished points are the finished rows' values, the others NaN; the csv holds exactly the finished points
    assert np.all(np.isfinite(pd.qstar[pd.finished])) and np.all(np.isnan(pd.qstar[~pd.finished]))
    with open(out / "tanh_phase.csv", encoding="utf-8") as f:
        first = f.readline()
    assert first.startswith("# partial:") and f"{n_done} of {200 * 200}" in first
    rows = np.loadtxt(out / "tanh_phase.csv", delimiter=",", skiprows=2, ndmin=2)
    assert rows.shape == (n_done, 9)
    np.testing.assert_array_equal(rows[:, 2], pd.qstar[pd.finished])


class _DyingFile:
    """File wrapper that writes ``budget`` bytes, then raises KeyboardInterrupt in the middle of a write (Ctrl-C while
    a file is being written); it records how many bytes really reached the temporary file."""

    def __init__(self, fh, budget, log):
        self._fh, self._left, self._log = fh, budget, log

    def write(self, data):
        if len(data) >= self._left:
            self._fh.write(data[:self._left])
            self._fh.flush()
            self._log["bytes_on_disk"] = os.fstat(self._fh.fileno()).st_size
            raise KeyboardInterrupt
        self._left -= len(data)
        return self._fh.write(data)

    def __getattr__(self, name):
        return getattr(self._fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._fh.close()
        return False


@pytest.mark.parametrize("existing", [True, False])
@pytest.mark.parametrize("kind", ["npz", "csv"])
def test_interrupted_write_leaves_target_untouched(tmp_path, monkeypatch, existing, kind):
    """Issue 11 item 9: a write interrupted midway (KeyboardInterrupt after part of the bytes reached the disk) leaves
    the target file as it was -- the old content, or absent -- and no temporary file behind."""
    import tempfile

    import meanfield._io as mio

    pd = phase_diagram("tanh", np.linspace(0.5, 3.0, 12), np.linspace(0.0, 0.3, 7))
    target = tmp_path / f"tanh_phase.{kind}"
    old = b"old content that must survive\n" * 50
    if existing:
        target.write_bytes(old)
    log, temps = {}, []
    real_fdopen, real_mkstemp = os.fdopen, tempfile.mkstemp

    def mkstemp(*a, **k):
        fd, name = real_mkstemp(*a, **k)
        temps.append(name)
        return fd, name

    monkeypatch.setattr(mio.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(mio.os, "fdopen", lambda fd, mode, **kw: _DyingFile(real_fdopen(fd, mode, **kw), 300, log))
    with pytest.raises(KeyboardInterrupt):
        (pd.save if kind == "npz" else pd.to_csv)(str(target))
    monkeypatch.undo()
    assert len(temps) == 1 and log.get("bytes_on_disk", 0) > 0, log   # part of the file had reached the disk
    assert not os.path.exists(temps[0]), "temporary file left behind"
    assert sorted(os.listdir(tmp_path)) == ([target.name] if existing else [])
    if existing:
        assert target.read_bytes() == old
    # and an uninterrupted write afterwards works and round-trips
    (pd.save if kind == "npz" else pd.to_csv)(str(target))
    if kind == "npz":
        np.testing.assert_array_equal(PhaseDiagram.load(target).qstar, pd.qstar)
    else:
        np.testing.assert_array_equal(np.loadtxt(target, delimiter=",", skiprows=1)[:, 2], pd.qstar.ravel())
