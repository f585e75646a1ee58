"""Repository-level pytest configuration: the docstring examples of meanfield are run as doctests; those of the
torch-based validation subpackage only when torch is installed, those of meanfield.distributed only with dask."""
import importlib.util

import matplotlib

matplotlib.use("Agg")

collect_ignore_glob = []
if importlib.util.find_spec("torch") is None:
    collect_ignore_glob.append("meanfield/validation/*")
if importlib.util.find_spec("sklearn") is None:
    collect_ignore_glob.append("meanfield/sklearn_kernels.py")

if importlib.util.find_spec("dask") is None or importlib.util.find_spec("distributed") is None:
    collect_ignore_glob.append("meanfield/distributed.py")   # optional extra meanfield-theory[dask]
