"""Where numba caches meanfield's compiled kernels (meanfield._numba_cache), and the README's two install commands
run one after the other in one environment.

The defect: numba's default ``cache=True`` location is ``__pycache__`` next to the source, so ``pip install .``
followed by a call left ``site-packages/meanfield/__pycache__/*.nbi|*.nbc`` behind after ``pip install -e .``
uninstalled the regular copy; the left-over folder then shadowed the editable install as a namespace package
(``module 'meanfield' has no attribute 'critical_weight_var'``). The checks here are on file locations and imports,
so they are exact (no tolerances).
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
from numba.core import caching, config

from meanfield import _numba_cache

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
PACKAGE = os.path.join(REPO, "meanfield")


def _nb_files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder) for d, _, fs in os.walk(folder) for f in fs
                  if f.endswith((".nbi", ".nbc")))


def _copy_source(dst):
    """Copy what ``pip install`` needs (pyproject, README, the package without caches) into ``dst``."""
    os.makedirs(dst)
    for name in ("pyproject.toml", "README.md", "setup.py"):
        shutil.copy(os.path.join(REPO, name), dst)
    shutil.copytree(PACKAGE, os.path.join(dst, "meanfield"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc", "*.pyc"))
    return dst


def _clean_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CACHE_DIR", "PYTHON"))}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), XDG_CACHE_HOME=str(tmp_path / "xdg"), MPLBACKEND="Agg", **extra)
    return env


# ---------------------------------------------------------------------------------------------------------------
# the directory


def test_user_cache_root_per_platform():
    assert _numba_cache.user_cache_root({"XDG_CACHE_HOME": "/x/c"}, "linux", "/h") == "/x/c"
    assert _numba_cache.user_cache_root({}, "linux", "/h") == os.path.join("/h", ".cache")
    # a relative XDG_CACHE_HOME is invalid (XDG base-directory spec) and ignored; no usable home: no directory
    assert _numba_cache.user_cache_root({"XDG_CACHE_HOME": "rel"}, "linux", "/h") == os.path.join("/h", ".cache")
    assert _numba_cache.user_cache_root({}, "linux", "~") is None
    assert _numba_cache.user_cache_root({}, "darwin", "/h") == os.path.join("/h", "Library", "Caches")
    assert _numba_cache.user_cache_root({}, "win32", "/h") is None
    win = _numba_cache.user_cache_root({"LOCALAPPDATA": os.path.abspath("appdata")}, "win32", "/h")
    assert win == os.path.abspath("appdata")


def test_cache_root_is_versioned():
    import numba

    root = _numba_cache.cache_root("9.8.7", {"XDG_CACHE_HOME": "/x/c"}, "linux", "/h")
    tag = f"9.8.7-py{sys.version_info[0]}.{sys.version_info[1]}-numba{numba.__version__}"
    assert root == os.path.join("/x/c", "meanfield", "numba", tag)
    assert _numba_cache.cache_root("9.8.7", {}, "linux", "~") is None


# ---------------------------------------------------------------------------------------------------------------
# the locator, in process


def _locator_class(root, package_dir):
    return _numba_cache._make_locator(str(root), str(package_dir))


def _some_function():
    return 1


def test_locator_only_for_package_files(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", "")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "mod.py").write_text("x = 1\n")
    (tmp_path / "user.py").write_text("x = 1\n")
    cls = _locator_class(tmp_path / "cache", pkg)
    loc = cls.from_function(_some_function, str(pkg / "mod.py"))
    assert loc is not None
    assert loc.get_cache_path() == os.path.join(str(tmp_path / "cache"), cls.get_suitable_cache_subpath(str(pkg / "mod.py")))
    assert os.path.isdir(loc.get_cache_path())
    # the user's own files (also a sibling folder whose name starts with the package's) keep numba's default
    assert cls.from_function(_some_function, str(tmp_path / "user.py")) is None
    (tmp_path / "pkg2").mkdir()
    (tmp_path / "pkg2" / "m.py").write_text("x = 1\n")
    assert cls.from_function(_some_function, str(tmp_path / "pkg2" / "m.py")) is None


def test_locator_respects_numba_cache_dir(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "mod.py").write_text("x = 1\n")
    monkeypatch.setattr(config, "CACHE_DIR", str(tmp_path / "ncd"))
    assert _locator_class(tmp_path / "cache", pkg).from_function(_some_function, str(pkg / "mod.py")) is None


def test_locator_falls_back_when_unwritable(tmp_path, monkeypatch):
    # a cache root below a regular file cannot be created (also for root, unlike a chmod-ed folder): numba's own
    # locators take over
    monkeypatch.setattr(config, "CACHE_DIR", "")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "mod.py").write_text("x = 1\n")
    (tmp_path / "file").write_text("")
    assert _locator_class(tmp_path / "file" / "cache", pkg).from_function(_some_function, str(pkg / "mod.py")) is None


_PROBE_KERNEL = """
import numba

@numba.njit(cache=True)
def probe(x):
    return x + {c}
"""


def _load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.probe


def test_cache_written_reused_and_invalidated_by_source_edit(tmp_path, monkeypatch):
    # a package-local cache=True function, with the locator first in numba's list (as install() does)
    monkeypatch.setattr(config, "CACHE_DIR", "")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    path = pkg / "probe_kernels.py"
    path.write_text(_PROBE_KERNEL.format(c="1.0"))
    root = tmp_path / "cache"
    monkeypatch.setattr(caching.CacheImpl, "_locator_classes",
                        [_locator_class(root, pkg)] + list(caching.CacheImpl._locator_classes))
    f = _load(path, "_mf_probe_a")
    assert f(1.0) == 2.0 and len(f.stats.cache_misses) == 1
    assert os.path.samefile(os.path.dirname(f.stats.cache_path), root)
    assert [n for n in _nb_files(str(root)) if n.endswith(".nbi")] != [] and _nb_files(str(pkg)) == []
    g = _load(path, "_mf_probe_b")              # a new process would load it the same way
    assert g(1.0) == 2.0 and len(g.stats.cache_hits) == 1
    # only a constant changes (same bytecode, so the index key is unchanged): the source stamp must invalidate
    path.write_text(_PROBE_KERNEL.format(c="2.25"))
    h = _load(path, "_mf_probe_c")
    assert h(1.0) == 3.25 and len(h.stats.cache_misses) == 1 and not h.stats.cache_hits


def test_two_installs_get_different_directories():
    # the subfolder is named by a sha1 of the absolute source folder
    cls = _locator_class("/c", "/a/meanfield")
    a = cls.get_suitable_cache_subpath("/a/meanfield/forward.py")
    b = cls.get_suitable_cache_subpath("/b/site-packages/meanfield/forward.py")
    assert a != b and a.startswith("meanfield_") and b.startswith("meanfield_")


def test_seed_from_shipped_copies_into_numbas_folder_names(tmp_path):
    """The shipped cache (relocatable layout: <tag>/meanfield/..., <tag>/meanfield/spectra/...) lands in the folder
    names numba's locator derives from the installed sources, once (an existing folder is left alone)."""
    pkg = tmp_path / "site" / "meanfield"
    (pkg / "spectra").mkdir(parents=True)
    shipped = tmp_path / "site" / "meanfield" / "_kernel_cache" / _numba_cache._tag("9.9")
    for rel in ("meanfield", os.path.join("meanfield", "spectra")):
        (shipped / rel).mkdir(parents=True)
        (shipped / rel / "x.f-1.py311.nbi").write_bytes(b"index")
        (shipped / rel / "x.f-1.py311.1.nbc").write_bytes(b"data")
    root = tmp_path / "user"
    assert _numba_cache.seed_from_shipped(str(root), "9.9", str(pkg)) == 2
    for folder in (pkg, pkg / "spectra"):
        target = root / caching._CacheLocator.get_suitable_cache_subpath(str(folder / "__init__.py"))
        assert sorted(os.listdir(target)) == ["x.f-1.py311.1.nbc", "x.f-1.py311.nbi"]
    assert _numba_cache.seed_from_shipped(str(root), "9.9", str(pkg)) == 0       # already there: nothing copied
    assert _numba_cache.seed_from_shipped(str(tmp_path / "u2"), "other", str(pkg)) == 0   # other version: none


def test_installed_once_first_in_numba_list():
    classes = caching.CacheImpl._locator_classes
    ours = [c for c in classes if getattr(c, "_meanfield_package_dir", None) == _numba_cache._PACKAGE_DIR]
    if _numba_cache.cache_root("0") is None:
        pytest.skip("no per-user cache directory in this environment")
    assert len(ours) == 1
    assert classes.index(ours[0]) < classes.index(caching.InTreeCacheLocator)
    _numba_cache.install("0.1.0")    # idempotent
    assert len([c for c in classes if getattr(c, "_meanfield_package_dir", None) == _numba_cache._PACKAGE_DIR]) == 1


# ---------------------------------------------------------------------------------------------------------------
# a fresh process, as a user runs it


_USER_MODULE = """
import numba

@numba.njit(cache=True)
def user_kernel(x):
    return x + 1.0
"""

_PROBE = """
import json, sys
import meanfield, meanfield.activations as k
import usermod
assert k.has_closed_form(0) and usermod.user_kernel(1.0) == 2.0     # cheap kernels: compiled and saved to the cache
print(json.dumps({"meanfield": meanfield.__file__, "cache": k.has_closed_form.stats.cache_path,
                  "user": usermod.user_kernel.stats.cache_path}))
"""


def test_cache_outside_package_in_subprocess(tmp_path):
    src = _copy_source(str(tmp_path / "src"))
    user = tmp_path / "user"
    user.mkdir()
    (user / "usermod.py").write_text(_USER_MODULE)
    env = _clean_env(tmp_path, PYTHONPATH=os.pathsep.join([src, str(user)]))
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, cwd=str(tmp_path), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert os.path.samefile(os.path.dirname(info["meanfield"]), os.path.join(src, "meanfield"))
    assert _nb_files(os.path.join(src, "meanfield")) == []
    root = os.path.join(str(tmp_path / "xdg"), "meanfield", "numba")
    cached = _nb_files(root)
    assert any("activations.has_closed_form-" in f and f.endswith(".nbi") for f in cached), cached
    assert any("activations.has_closed_form-" in f and f.endswith(".nbc") for f in cached), cached
    assert os.path.commonpath([info["cache"], root]) == root
    # the user's own cache=True function keeps numba's default location (__pycache__ next to its source)
    assert os.path.samefile(info["user"], str(user / "__pycache__"))
    assert any(f.startswith("usermod.user_kernel-") for f in os.listdir(user / "__pycache__"))
    assert not any("usermod" in f for f in cached)


# ---------------------------------------------------------------------------------------------------------------
# end to end: pip install . ; call ; pip install -e . ; call (slow: two pip builds and a cold compile)

_E2E = os.environ.get("MEANFIELD_TEST_INSTALL") == "1"


@pytest.mark.skipif(not _E2E, reason="slow (~1 min): set MEANFIELD_TEST_INSTALL=1 (.ci/run does)")
def test_pip_install_then_editable(tmp_path):
    src = _copy_source(str(tmp_path / "src"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    py = str(venv / ("Scripts" if os.name == "nt" else "bin") / ("python.exe" if os.name == "nt" else "python"))
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    # the dependencies (and pip, setuptools) come from this environment, appended after the new venv's own
    # site-packages by a .pth file (no download, no build isolation)
    names = ("matplotlib", "mpmath", "numba", "numpy", "pip", "scipy", "setuptools")
    deps = sorted({os.path.dirname(os.path.dirname(os.path.abspath(importlib.util.find_spec(m).origin)))
                   for m in names})
    for d in deps:
        if os.path.exists(os.path.join(d, "meanfield", "__init__.py")):
            pytest.skip(f"a regular meanfield install in {d} would shadow the test's installs")
        assert not os.path.exists(os.path.join(d, "meanfield")), f"left-over namespace folder {d}/meanfield"
    with open(os.path.join(site, "_meanfield_test_deps.pth"), "w") as f:
        f.write("\n".join(deps) + "\n")
    env = _clean_env(tmp_path)
    pip_install = [py, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                   "--disable-pip-version-check", "-q"]

    def run(*args):
        out = subprocess.run(list(args), env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, f"{args}\n{out.stdout}\n{out.stderr}"
        return out.stdout

    run(*pip_install, src)
    installed = os.path.join(site, "meanfield")
    where = run(py, "-c", "import meanfield, meanfield.activations as k; assert k.has_closed_form(0); "
                          "print(meanfield.__file__)").strip()
    assert os.path.samefile(os.path.dirname(where), installed)
    # the build step compiled the kernels into the wheel (meanfield/_kernel_cache, listed in RECORD); nothing else
    # in the package folder, and the first call seeded the per-user cache from it
    shipped = _nb_files(os.path.join(installed, "_kernel_cache"))
    assert any(f.endswith(".nbi") and "forward" not in f for f in shipped), shipped
    assert _nb_files(installed) == [os.path.join("_kernel_cache", f) for f in shipped]
    assert _nb_files(str(tmp_path / "xdg")) != []
    run(*pip_install, "-e", src)
    assert not os.path.exists(installed), os.listdir(installed)
    where = run(py, "-c", "import meanfield; meanfield.critical_weight_var('tanh', 0.05); "
                          "print(meanfield.__file__)").strip()
    assert os.path.samefile(os.path.dirname(where), os.path.join(src, "meanfield"))
    assert _nb_files(os.path.join(src, "meanfield")) == []
