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
