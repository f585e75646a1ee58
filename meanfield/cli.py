"""Command line interface: ``meanfield <command> ...`` (also ``python -m meanfield <command> ...``).

Commands
--------
phase-diagram   chi_1 heat map with the critical line, xi_c map with its ridge; PNG, SVG, .npz and .csv
maps            Poole-style length-map / correlation-map iteration figure
depth-scales    xi_q and xi_c against sigma_w^2 at fixed sigma_b^2 (Schoenholz et al. 2017, Fig. 1)
figures         all of the above for tanh, relu and erf into one folder

Every command has ``--help`` with an example. Bad arguments print one line ``meanfield <command>: error: ...`` to
stderr and exit with status 2; no traceback (``--traceback`` shows one for unexpected errors).

No lost work: every file is written atomically (temporary file, then ``os.replace``); a command refuses to overwrite
existing output files unless ``--overwrite`` is given; Ctrl-C prints ``interrupted`` and exits with status 130,
keeping the files already written and, for a phase diagram, the finished part of the grid (``.npz``/``.csv`` marked
partial). Limits: at most ``MAX_AXIS_POINTS`` points per grid axis, ``--depth`` at most
:data:`meanfield.phase.MAX_MAP_DEPTH`.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings

import numpy as np

from ._version import __version__

__all__ = ["main", "build_parser", "parse_grid", "parse_values"]

#: largest number of points on one grid axis (a 10^5 x 10^5 phase diagram would need ~1 TB)
MAX_AXIS_POINTS = 100_000

# per-activation defaults used by ``meanfield figures`` (chosen so that the critical line is well inside the window
# and the whole command stays within a couple of minutes on two cores)
FIGURE_DEFAULTS = {
    "tanh": dict(weight=(0.5, 4.0), bias=(0.0, 0.5), map_bias=0.3, ds_weight=(0.5, 4.0), ds_bias=0.05),
    "relu": dict(weight=(0.5, 4.0), bias=(0.0, 0.5), map_bias=0.05, ds_weight=(0.5, 3.5), ds_bias=0.05),
    "erf": dict(weight=(0.2, 3.0), bias=(0.0, 0.5), map_bias=0.3, ds_weight=(0.2, 3.0), ds_bias=0.05),
}


# ----------------------------------------------------------------------------------------------------------------
# argument helpers
# ----------------------------------------------------------------------------------------------------------------
class CLIError(Exception):
    """A user error found after parsing (reported as one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr (no usage block) and exit status 2."""

    def error(self, message):  # noqa: D401 - argparse API
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def parse_grid(text: str, name: str = "grid", *, min_points: int = 1) -> np.ndarray:
    """Parse ``START:STOP:NUM`` (NUM evenly spaced points, both ends included), ``A,B,C`` or a single number.

    >>> parse_grid("0.5:4:8")
    array([0.5, 1. , 1.5, 2. , 2.5, 3. , 3.5, 4. ])
    """
    text = str(text).strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            start, stop = float(parts[0]), float(parts[1])
            num = int(parts[2])
            if not (math.isfinite(start) and math.isfinite(stop)):
                raise ValueError
            if num < 1:
                raise CLIError(f"{name}: the number of points in {text!r} must be >= 1")
            if num > MAX_AXIS_POINTS:
                raise CLIError(f"{name}: the number of points in {text!r} must be <= {MAX_AXIS_POINTS}")
            if num > 1 and not stop > start:
                raise CLIError(f"{name}: STOP must be larger than START in {text!r}")
            values = np.linspace(start, stop, num)
        else:
            values = np.array([float(v) for v in text.split(",") if v.strip() != ""])
            if values.size > MAX_AXIS_POINTS:
                raise CLIError(f"{name}: at most {MAX_AXIS_POINTS} values, got {values.size}")
            if values.size == 0 or not np.all(np.isfinite(values)):
                raise ValueError
    except CLIError:
        raise
    except ValueError:
        raise CLIError(f"{name}: expected START:STOP:NUM (e.g. 0.5:4:200), a comma list or a number, got {text!r}")
    if values.size < min_points:
        raise CLIError(f"{name}: need at least {min_points} points, got {values.size} from {text!r}")
    return values


def parse_values(text: str, name: str) -> np.ndarray:
    """Parse a comma list ``1,2.5,4`` (or a grid ``START:STOP:NUM``)."""
    return parse_grid(text, name)


def _parse_number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CLIError(f"{name}: expected a number, got {text!r}")
    if not math.isfinite(value):
        raise CLIError(f"{name}: expected a finite number, got {text!r}")
    return value


def _activation_params(pairs) -> dict:
    out = {}
    for item in pairs or ():
        if "=" not in item:
            raise CLIError(f"--param: expected KEY=VALUE (e.g. slope=0.2), got {item!r}")
        key, val = item.split("=", 1)
        out[key.strip()] = _parse_number(val, f"--param {key.strip()}")
    return out


def _resolve(args):
    from .activations import get_activation

    params = _activation_params(getattr(args, "param", None))
    return get_activation(args.activation, **params), params


def _out_dir(path: str) -> str:
    from ._io import check_writable_dir

    try:
        return check_writable_dir(path, "--out")
    except ValueError as exc:
        raise CLIError(str(exc)) from None


def _phase_files(out, prefix):
    stem = os.path.join(out, f"{prefix}_phase")
    return [stem + ".npz", stem + ".csv"] + [f"{stem}_{q}.{e}" for q in ("chi1", "xi_c") for e in ("png", "svg")]


def _maps_files(out, prefix):
    stem = os.path.join(out, f"{prefix}_maps")
    return [stem + ".npz", stem + ".png", stem + ".svg"]


def _depth_scales_files(out, prefix):
    stem = os.path.join(out, f"{prefix}_depth_scales")
    return [stem + ".csv", stem + ".png", stem + ".svg"]


def _refuse_overwrite(paths, overwrite: bool) -> None:
    """CLIError naming the planned output files that exist already (unless ``overwrite``)."""
    from ._io import existing_files

    if overwrite:
        return
    found = existing_files(paths)
    if found:
        folder = os.path.dirname(found[0])
        names = ", ".join(os.path.relpath(p, folder) for p in found)
        raise CLIError(f"--out: refusing to overwrite {len(found)} existing file(s) in {folder}: {names} "
                       "(use --overwrite)")


class ProgressBar:
    """Text progress bar on stderr: ``label [#######-----] 58% (rows 116/200, 3.1 s)``."""

    def __init__(self, label: str, stream=None, width: int = 30):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.start = time.perf_counter()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def __call__(self, done: int, total: int) -> None:
        frac = done / total if total else 1.0
        n = int(round(self.width * frac))
        elapsed = time.perf_counter() - self.start
        line = (f"{self.label} [{'#' * n}{'-' * (self.width - n)}] {100 * frac:3.0f}% "
                f"(rows {done}/{total}, {elapsed:.1f} s)")
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
        else:
            # not a terminal: one line per 25 % step
            step = int(4 * frac)
            if step == getattr(self, "_last", -1) and done < total:
                return
            self._last = step
            self.stream.write(line + "\n")
        self.stream.flush()


# ----------------------------------------------------------------------------------------------------------------
# commands
# ----------------------------------------------------------------------------------------------------------------
def _close(fig):
    import matplotlib.pyplot as plt

    plt.close(fig)


def run_phase_diagram(act, params, weight_vars, bias_vars, out, *, prefix=None, progress=True, dpi=130,
                      log=print):
    """Compute and write the phase-diagram files; returns the list of paths."""
    from . import plotting
    from .phase import phase_diagram

    prefix = prefix or act.name
    n_points = weight_vars.size * bias_vars.size
    bar = ProgressBar(f"{act.name} phase diagram {bias_vars.size}x{weight_vars.size}") if (
        progress and n_points >= 2000) else None
    from .phase import PhaseDiagramInterrupted

    stem = os.path.join(out, f"{prefix}_phase")
    try:
        pd = phase_diagram(act, weight_vars, bias_vars, progress=bar)
    except PhaseDiagramInterrupted as exc:  # keep the finished points (marked partial), then stop
        if bar is not None and bar.tty:
            bar.stream.write("\n")
        part = exc.partial
        for p in (part.save(stem + ".npz"), part.to_csv(stem + ".csv")):
            log(p)
        sys.stderr.write(f"{act.name} phase diagram: kept the {int(np.sum(part.finished))} of {part.finished.size} "
                         f"finished grid points (marked partial) in {stem}.npz/.csv\n")
        raise KeyboardInterrupt from None
    paths = [pd.save(stem + ".npz"), pd.to_csv(stem + ".csv")]
    for quantity in ("chi1", "xi_c"):
        ax = pd.plot(quantity, title=_phase_title(pd, quantity))
        paths += plotting.save_figure(ax.figure, f"{stem}_{quantity}", dpi=dpi)
        _close(ax.figure)
    for p in paths:
        log(p)
    return paths


def _phase_title(pd, quantity):
    if quantity == "chi1":
        return rf"{pd.activation}: $\chi_1$ (order-to-chaos at $\chi_1=1$)"
    return rf"{pd.activation}: correlation depth scale $\xi_c=-1/\log\chi_c$"


def run_maps(act, params, weight_vars, bias_var, depth, out, *, prefix=None, dpi=130, log=print):
    """Compute and write the map-dynamics figure (PNG, SVG) and data (.npz); returns the paths."""
    from . import plotting
    from .phase import map_dynamics

    prefix = prefix or act.name
    md = map_dynamics(act, weight_vars, bias_var, depth=depth)
    stem = os.path.join(out, f"{prefix}_maps")
    from ._io import atomic_open

    with atomic_open(stem + ".npz") as fh:
        np.savez_compressed(fh, **{k: np.array(v) for k, v in md.to_dict().items()})
    fig = md.plot()[0, 0].figure
    paths = [stem + ".npz"] + plotting.save_figure(fig, stem, dpi=dpi)
    _close(fig)
    for p in paths:
        log(p)
    return paths


def run_depth_scales(act, params, weight_vars, bias_var, out, *, prefix=None, dpi=130, log=print):
    """Compute and write the depth-scale figure (PNG, SVG) and data (.csv); returns the paths."""
    from . import plotting
    from .phase import depth_scale_curve

    prefix = prefix or act.name
    curve = depth_scale_curve(act, weight_vars, bias_var)
    stem = os.path.join(out, f"{prefix}_depth_scales")
    paths = [curve.to_csv(stem + ".csv")]
    ax = curve.plot()
    paths += plotting.save_figure(ax.figure, stem, dpi=dpi)
    _close(ax.figure)
    for p in paths:
        log(p)
    return paths


def _cmd_phase_diagram(args):
    act, params = _resolve(args)
    w = parse_grid(args.weight_var, "--weight-var", min_points=2)
    b = parse_grid(args.bias_var, "--bias-var", min_points=2)
    out = _out_dir(args.out)
    _refuse_overwrite(_phase_files(out, args.prefix or act.name), args.overwrite)
    run_phase_diagram(act, params, w, b, out, prefix=args.prefix, progress=not args.quiet,
                      dpi=args.dpi)


def _cmd_maps(args):
    act, params = _resolve(args)
    w = parse_values(args.weight_var, "--weight-var")
    b = _parse_number(args.bias_var, "--bias-var")
    _check_depth(args.depth)
    out = _out_dir(args.out)
    _refuse_overwrite(_maps_files(out, args.prefix or act.name), args.overwrite)
    run_maps(act, params, w, b, args.depth, out, prefix=args.prefix, dpi=args.dpi)


def _check_depth(depth):
    from .phase import MAX_MAP_DEPTH

    if depth > MAX_MAP_DEPTH:
        raise CLIError(f"--depth: expected an integer in [2, {MAX_MAP_DEPTH}] (layers drawn), got {depth}")


def _cmd_depth_scales(args):
    act, params = _resolve(args)
    w = parse_grid(args.weight_var, "--weight-var", min_points=2)
    b = _parse_number(args.bias_var, "--bias-var")
    out = _out_dir(args.out)
    _refuse_overwrite(_depth_scales_files(out, args.prefix or act.name), args.overwrite)
    run_depth_scales(act, params, w, b, out, prefix=args.prefix, dpi=args.dpi)


def _cmd_figures(args):
    from .activations import get_activation

    names = [a.strip() for a in args.activations.split(",") if a.strip()]
    if not names:
        raise CLIError("--activations: give at least one name, e.g. tanh,relu,erf")
    acts = [get_activation(n) for n in names]  # validate all names before any work
    _check_depth(args.depth)
    out = _out_dir(args.out)
    _refuse_overwrite([p for act in acts for files in (_phase_files, _maps_files, _depth_scales_files)
                       for p in files(out, act.name)], args.overwrite)
    nw, nb = args.grid
    t0 = time.perf_counter()
    for act in acts:
        d = FIGURE_DEFAULTS.get(act.name, FIGURE_DEFAULTS["tanh"])
        w = np.linspace(*d["weight"], nw)
        b = np.linspace(*d["bias"], nb)
        run_phase_diagram(act, {}, w, b, out, progress=not args.quiet, dpi=args.dpi)
        run_maps(act, {}, _map_weights(act, d["map_bias"]), d["map_bias"], args.depth, out, dpi=args.dpi)
        run_depth_scales(act, {}, np.linspace(*d["ds_weight"], args.depth_points), d["ds_bias"], out, dpi=args.dpi)
        if not args.quiet:
            sys.stderr.write(f"{act.name}: done ({time.perf_counter() - t0:.1f} s so far)\n")


def _map_weights(act, bias_var):
    """Three sigma_w^2 values for the map figure: ordered (0.6 w_c), critical (w_c) and chaotic (1.8 w_c)."""
    from .forward import critical_weight_var

    wc = float(critical_weight_var(act, bias_var))
    if not np.isfinite(wc):
        return np.array([0.5, 1.0, 2.0, 4.0])
    return np.array([round(0.6 * wc, 2), round(wc, 4), round(1.8 * wc, 2)])


def _grid_size(text):
    try:
        parts = [int(p) for p in str(text).lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NWxNB (e.g. 160x120) or N, got {text!r}")
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 2 or max(parts) > MAX_AXIS_POINTS:
        raise argparse.ArgumentTypeError(f"expected NWxNB with both sizes in [2, {MAX_AXIS_POINTS}], got {text!r}")
    return tuple(parts)


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    if v < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2, got {v}")
    return v


def _positive_dpi(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    if not 20 <= v <= 1200:
        raise argparse.ArgumentTypeError(f"expected 20 <= dpi <= 1200, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of the ``meanfield`` command."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog="meanfield", formatter_class=fmt,
                     description="Mean-field (infinite-width) theory of deep networks: phase diagrams and figures.",
                     epilog="example:\n  meanfield figures --out figures\n  meanfield phase-diagram --help")
    parser.add_argument("--traceback", action="store_true", help="show a Python traceback on unexpected errors")
    parser.add_argument("--version", action="version", version=f"meanfield {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def common(p, *, act_default="tanh"):
        p.add_argument("--activation", "-a", default=act_default,
                       help=f"activation name: tanh, relu, erf, sigmoid, leaky_relu, ... (default {act_default})")
        p.add_argument("--param", action="append", metavar="KEY=VALUE",
                       help="activation parameter, e.g. --param slope=0.2 for leaky_relu (repeatable)")
        p.add_argument("--out", "-o", default=".", help="output folder (created if missing; default: current)")
        p.add_argument("--prefix", default=None, help="file-name prefix (default: the activation name)")
        p.add_argument("--dpi", type=_positive_dpi, default=130, help="PNG resolution (default 130)")
        overwrite(p)

    def overwrite(p):
        p.add_argument("--overwrite", action="store_true",
                       help="replace output files that exist already (default: refuse and name them)")

    p = sub.add_parser(
        "phase-diagram", formatter_class=fmt, help="chi_1 and xi_c heat maps over (sigma_w^2, sigma_b^2)",
        description="Evaluate q*, chi_1, c*, chi_c, xi_q, xi_c, xi_grad on a grid and write the chi_1 heat map with the "
                    "critical line (chi_1 = 1) and the xi_c map with its ridge (PNG + SVG), plus the data "
                    "(PREFIX_phase.npz, PREFIX_phase.csv).",
        epilog="example:\n  meanfield phase-diagram --activation tanh --weight-var 0.5:4:200 --bias-var 0:0.5:200 "
               "--out figures\n\nRANGE is START:STOP:NUM (NUM evenly spaced points, both ends included).")
    common(p)
    p.add_argument("--weight-var", "-w", default="0.5:4:200", metavar="RANGE",
                   help="sigma_w^2 grid START:STOP:NUM (default 0.5:4:200)")
    p.add_argument("--bias-var", "-b", default="0:0.5:200", metavar="RANGE",
                   help="sigma_b^2 grid START:STOP:NUM (default 0:0.5:200)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_phase_diagram)

    p = sub.add_parser(
        "maps", formatter_class=fmt, help="length- and correlation-map iteration figure (Poole et al. 2016)",
        description="Plot the length map V(q) and the correlation map C(c; q*) against the identity line, and their "
                    "iterates q^l and c^l against the layer l, for a few sigma_w^2 (PREFIX_maps.png/.svg/.npz).",
        epilog="example:\n  meanfield maps --activation tanh --weight-var 1,2,4 --bias-var 0.3 --depth 15 --out figures")
    common(p)
    p.add_argument("--weight-var", "-w", default="1,2,4", metavar="LIST",
                   help="comma list of sigma_w^2 values, one curve each (default 1,2,4)")
    p.add_argument("--bias-var", "-b", default="0.3", metavar="VALUE", help="sigma_b^2 (default 0.3)")
    p.add_argument("--depth", type=_positive_int, default=15, help="number of layers plotted (default 15)")
    p.set_defaults(func=_cmd_maps)

    p = sub.add_parser(
        "depth-scales", formatter_class=fmt, help="xi_q and xi_c against sigma_w^2 (Schoenholz et al. 2017)",
        description="Plot the depth scales xi_q = -1/log V'(q*), xi_c = -1/log chi_c and xi_grad = -1/log chi_1 "
                    "against sigma_w^2 at fixed sigma_b^2, with the critical point marked "
                    "(PREFIX_depth_scales.png/.svg/.csv).",
        epilog="example:\n  meanfield depth-scales --activation tanh --weight-var 0.5:4:300 --bias-var 0.05 --out figures")
    common(p)
    p.add_argument("--weight-var", "-w", default="0.5:4:300", metavar="RANGE",
                   help="sigma_w^2 grid START:STOP:NUM (default 0.5:4:300)")
    p.add_argument("--bias-var", "-b", default="0.05", metavar="VALUE", help="sigma_b^2 (default 0.05)")
    p.set_defaults(func=_cmd_depth_scales)

    p = sub.add_parser(
        "figures", formatter_class=fmt, help="all figures for tanh, relu and erf into one folder",
        description="Run phase-diagram, maps and depth-scales for each activation (default tanh, relu, erf) with the "
                    "windows listed in figures/README.md.",
        epilog="example:\n  meanfield figures --out figures\n  meanfield figures --out /tmp/figs --grid 60x40")
    p.add_argument("--out", "-o", default="figures", help="output folder (default: figures)")
    p.add_argument("--activations", default="tanh,relu,erf", help="comma list (default tanh,relu,erf)")
    p.add_argument("--grid", type=_grid_size, default=(100, 80), metavar="NWxNB",
                   help="phase-diagram grid, sigma_w^2 points x sigma_b^2 points (default 100x80)")
    p.add_argument("--depth", type=_positive_int, default=20, help="layers in the map figures (default 20)")
    p.add_argument("--depth-points", type=_positive_int, default=200,
                   help="sigma_w^2 points in the depth-scale curves (default 200)")
    p.add_argument("--dpi", type=_positive_dpi, default=130, help="PNG resolution (default 130)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    overwrite(p)
    p.set_defaults(func=_cmd_figures)
    return parser


def _one_line(exc) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv=None) -> int:
    """Entry point of the ``meanfield`` console script; returns the exit status."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a parse error (2, already reported in one line)
        return int(exc.code) if isinstance(exc.code, int) else 2
    if args.command is None:
        sys.stderr.write("meanfield: error: a COMMAND is required: phase-diagram, maps, depth-scales or figures "
                         "(see 'meanfield --help')\n")
        return 2
    prog = f"meanfield {args.command}"

    import matplotlib

    matplotlib.use("Agg")

    def showwarning(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(f"{prog}: warning: {_one_line(message)}\n")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = showwarning
            args.func(args)
    except (CLIError, ValueError, TypeError) as exc:
        if args.traceback and not isinstance(exc, CLIError):
            raise
        sys.stderr.write(f"{prog}: error: {_one_line(exc)}\n")
        return 2
    except OSError as exc:
        if args.traceback:
            raise
        sys.stderr.write(f"{prog}: error: {_one_line(exc)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except MemoryError:
        sys.stderr.write(f"{prog}: error: out of memory (use smaller grids)\n")
        return 1
    except Exception as exc:  # pragma: no cover - unexpected
        if isinstance(exc, SystemError) and isinstance(exc.__context__, KeyboardInterrupt):
            sys.stderr.write(f"{prog}: interrupted\n")  # Ctrl-C inside a compiled call
            return 130
        if args.traceback:
            raise
        sys.stderr.write(f"{prog}: internal error: {type(exc).__name__}: {_one_line(exc)} (rerun with --traceback)\n")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
