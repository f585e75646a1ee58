"""Ladder of widths 16-512 for the 1/width corrections (meanfield.finite_width) against torch ensembles.

Run from the repository root:  PYTHONPATH=. python validation/run_finite_width.py [--quick]
Writes validation/finite_width/README.md (predicted a next to fitted a) and validation/finite_width/ladder.json.
"""
import argparse
import json
import os
import sys

import torch

from meanfield import Network
from meanfield.validation.finite_width_sim import ladder

CONFIGS = [
    ("tanh-critical", Network("tanh", depth=3, weight_var=1.0, bias_var=0.0),
     "tanh, depth 3 (L = 4 Dense layers), C_W = 1, C_b = 0 (critical: chi_1 -> 1, K* = 0)"),
    ("tanh", Network("tanh", depth=3, weight_var=1.5, bias_var=0.1),
     "tanh, depth 3, C_W = 1.5, C_b = 0.1 (off criticality; the validation report's tanh network)"),
    ("relu-critical", Network("relu", depth=3, weight_var=2.0, bias_var=0.0),
     "relu, depth 3, C_W = 2, C_b = 0 (critical, scale invariant)"),
    ("relu", Network("relu", depth=3, weight_var=1.8, bias_var=0.1),
     "relu, depth 3, C_W = 1.8, C_b = 0.1 (off criticality)"),
]
WIDTHS = (16, 32, 64, 128, 256, 512)
N_SEEDS = {16: 40000, 32: 30000, 64: 16000, 128: 6000, 256: 1500, 512: 400}
QUICK = {16: 4000, 32: 2000, 64: 1000}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="widths 16-64, few networks (a smoke test)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "finite_width"))
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    seeds = QUICK if a.quick else N_SEEDS
    cmd = "python validation/run_finite_width.py" + (" --quick" if a.quick else "")
    rep = ladder(CONFIGS, widths=tuple(seeds), n_seeds=seeds, command=cmd, min_width_fit=16)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "ladder.json"), "w") as fh:
        json.dump(rep.to_dict(), fh, indent=1)
    with open(os.path.join(a.out, "README.md"), "w") as fh:
        fh.write(rep.to_markdown() + "\n")
    print(rep.to_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
