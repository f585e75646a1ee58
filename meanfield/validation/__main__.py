"""``python -m meanfield.validation run [--quick] [--device cuda|cpu] [--out DIR]``: theory vs finite networks."""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m meanfield.validation",
                                description="Compare the mean-field theory with random finite-width networks.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the width ladder and write JSON, a markdown report and plots")
    r.add_argument("--quick", action="store_true", help="small widths and few networks (a smoke test)")
    r.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto",
                   help="torch device (default: cuda when available, else cpu)")
    r.add_argument("--out", default="validation", help="output folder (default: ./validation)")
    r.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    r.add_argument("--seed", type=int, default=0, help="master seed (>= 0)")
    r.add_argument("--widths", default=None, help="comma-separated widths overriding the ladder, e.g. 64,128,256")
    r.add_argument("--n-seeds", type=int, default=None, help="networks per width (>= 2) overriding the default")
    r.add_argument("--configs", default=None, help="comma-separated subset of the validation networks (tanh,relu)")
    r.add_argument("--no-train", action="store_true", help="skip the gradient-descent experiment")
    r.add_argument("--no-deep-linear", action="store_true", help="skip the deep-linear comparison")
    r.add_argument("--quiet", action="store_true", help="no progress messages")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from . import run_validation
    except ImportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.seed < 0:
        print("error: --seed must be an integer >= 0", file=sys.stderr)
        return 2
    widths = configs = None
    try:
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
        rep = run_validation(quick=args.quick, device=args.device, out=args.out, dtype=args.dtype, seed=args.seed,
                             widths=widths, n_seeds=args.n_seeds, configs=configs, train=not args.no_train,
                             deep_linear=not args.no_deep_linear, log=None if args.quiet else print)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[validation] done in {rep.meta['elapsed_s']:.1f} s on {rep.meta['device_description']}; "
          f"report in {args.out}/README.md")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
