"""``python -m meanfield.validation run [--only NAME,...] [--quick] [--device cuda|cpu] [--out DIR] [--overwrite]``:
theory vs finite networks; ``python -m meanfield.validation list``: the capabilities ``--only`` accepts.

Argument errors print one line ``python -m meanfield.validation run: error: ...`` and exit with status 2; the output
folder is checked (created, writable, no existing report files unless ``--overwrite``) before any computation;
Ctrl-C prints ``interrupted`` and exits with status 130.
"""
from __future__ import annotations

import argparse
import os
import sys

#: files of a report written by ValidationReport.save (plots are listed in the report itself)
REPORT_FILES = ("validation.json", "README.md")


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line on stderr and exit status 2 (as the ``meanfield`` command)."""

    def error(self, message):  # noqa: D401 - argparse API
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m meanfield.validation",
                description="Compare the mean-field theory with random finite-width networks.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="list the validated capabilities (the names --only accepts)")
    r = sub.add_parser("run", help="run the width ladder and write JSON, a markdown report and plots")
    r.add_argument("--only", default=None,
                   help="comma-separated capabilities to validate (default all; see 'list'), e.g. dropout,cnn")
    r.add_argument("--quick", action="store_true", help="small widths and few networks (all capabilities in < 2 min "
                   "on a CPU)")
    r.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto",
                   help="torch device (default: cuda when available, else cpu)")
    r.add_argument("--out", default="validation", help="output folder (default: ./validation)")
    r.add_argument("--overwrite", action="store_true", help="replace an existing report in --out")
    r.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    r.add_argument("--seed", type=int, default=0, help="master seed (>= 0)")
    r.add_argument("--widths", default=None, help="comma-separated widths overriding the width ladder ('ladder' "
                   "capability only), e.g. 64,128,256")
    r.add_argument("--n-seeds", type=int, default=None, help="networks per width (>= 2) overriding the width "
                   "ladder's ('ladder' capability only)")
    r.add_argument("--configs", default=None, help="comma-separated subset of the validation networks (tanh,relu)")
    r.add_argument("--no-train", action="store_true", help="skip the gradient-descent experiment")
    r.add_argument("--no-deep-linear", action="store_true", help="skip the deep-linear comparison")
    r.add_argument("--quiet", action="store_true", help="no progress messages")
    return p


def _one_line(exc) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_out(path: str, overwrite: bool) -> str:
    """Create/check the output folder and refuse to replace an existing report unless ``overwrite``."""
    from .._io import check_writable_dir, existing_files

    path = check_writable_dir(path, "--out")
    found = existing_files([os.path.join(path, f) for f in REPORT_FILES])
    if found and not overwrite:
        raise ValueError(f"--out: refusing to overwrite existing file(s) in {path}: "
                         f"{', '.join(os.path.basename(f) for f in found)} (use --overwrite)")
    return path


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a parse error (2, already reported in one line)
        return int(exc.code) if isinstance(exc.code, int) else 2
    prog = f"python -m meanfield.validation {args.command}"

    def fail(msg: str, code: int = 2) -> int:
        sys.stderr.write(f"{prog}: error: {msg}\n")
        return code

    try:
        from . import run_validation
    except ImportError as exc:
        return fail(_one_line(exc))
    if args.command == "list":
        from .capabilities import CAPABILITIES
        for cap in CAPABILITIES.values():
            print(f"{cap.name:18s} {cap.title}")
        return 0
    if args.seed < 0:
        return fail("--seed must be an integer >= 0")
    widths = configs = None
    try:
        if args.only is not None:
            from .capabilities import resolve_only
            resolve_only(args.only)          # unknown names fail before the output folder is touched
        out = _check_out(args.out, args.overwrite)
        if args.widths is not None:
            try:
                widths = [int(w) for w in args.widths.split(",") if w.strip()]
            except ValueError:
                raise ValueError(f"--widths must be comma-separated integers, got {args.widths!r}") from None
        if args.configs is not None:
            from .report import default_configs
            known = {c.name: c for c in default_configs()}
            names = [n.strip() for n in args.configs.split(",") if n.strip()]
            bad = [n for n in names if n not in known]
            if bad or not names:
                raise ValueError(f"--configs must be a comma-separated subset of {sorted(known)}, got {args.configs!r}")
            configs = [known[n] for n in names]
        rep = run_validation(quick=args.quick, device=args.device, out=out, dtype=args.dtype, seed=args.seed,
                             widths=widths, n_seeds=args.n_seeds, configs=configs, train=not args.no_train,
                             deep_linear=not args.no_deep_linear, log=None if args.quiet else print,
                             only=args.only)
    except (ValueError, TypeError) as exc:
        return fail(_one_line(exc))
    except OSError as exc:
        return fail(_one_line(exc), 1)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    print(f"[validation] done in {rep.meta['elapsed_s']:.1f} s on {rep.meta['device_description']}; "
          f"report in {args.out}/README.md")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
