"""Build step: compile meanfield's numba kernels into the wheel (see meanfield/_precompile.py).

Everything else about the package is in pyproject.toml. When the wheel is built (``pip install .`` builds it on the
machine it installs to), this runs ``python -m meanfield._precompile --into <build>/meanfield/_kernel_cache`` on the
freshly copied sources; the cache it writes is shipped in the wheel, and the first calls after install load compiled
kernels instead of compiling them. Skipped for editable installs (``pip install -e .``: the kernels compile into the
per-user cache on first use) and when ``MEANFIELD_NO_PRECOMPILE=1``. A failing or interrupted precompile never fails
the build: the wheel then simply ships no cache.
"""
import os
import subprocess
import sys

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithKernels(build_py):
    """build_py, then the kernel cache into the build folder."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False) or os.environ.get("MEANFIELD_NO_PRECOMPILE", "") == "1":
            return
        target = os.path.join(os.path.abspath(self.build_lib), "meanfield", "_kernel_cache")
        # the fresh copy first, then this interpreter's own path (pip's isolated build environment, where numba is)
        path = os.pathsep.join([os.path.abspath(self.build_lib)] + [p for p in sys.path if p])
        env = dict(os.environ, PYTHONPATH=path, MPLBACKEND="Agg")
        env.pop("NUMBA_CACHE_DIR", None)
        try:
            subprocess.run([sys.executable, "-m", "meanfield._precompile", "--into", target], env=env, check=True,
                           timeout=3600)
        except (OSError, subprocess.SubprocessError) as exc:
            sys.stderr.write(f"meanfield: kernels not precompiled ({exc}); they compile on first use instead\n")
            import shutil

            shutil.rmtree(target, ignore_errors=True)


setup(cmdclass={"build_py": BuildPyWithKernels})
