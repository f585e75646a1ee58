"""Where numba caches meanfield's compiled kernels: a per-user cache directory, never the package folder.

numba's default for ``cache=True`` functions is the ``__pycache__`` folder next to the source file. For an installed
package that folder is not listed in pip's RECORD, so ``pip uninstall`` (and the uninstall step of ``pip install -e``)
leaves ``site-packages/meanfield/__pycache__/*.nbi|*.nbc`` behind, and the left-over ``meanfield`` folder then shadows
the editable install as an empty namespace package. This module registers a numba cache locator that puts the cache
of the functions defined in *meanfield's own files* (and only those: the user's other numba code keeps numba's
default) in

    <user cache dir>/meanfield/numba/<meanfield version>-py<X.Y>-numba<version>/<folder>_<sha1 of the source folder>/

where ``<user cache dir>`` is ``$XDG_CACHE_HOME`` or ``~/.cache`` (Linux and other Unix), ``~/Library/Caches``
(macOS) or ``%LOCALAPPDATA%`` (Windows). The sha1 of the absolute source folder keeps two installs (say an editable
checkout and a regular install in site-packages) apart; numba itself invalidates an entry when the source file
changes (the index stamp: a content hash in recent numba, mtime and size in older ones) or the function's bytecode
changes (the index key). As with numba's default, an edit to *another* module that a kernel calls into is not noticed.

If ``NUMBA_CACHE_DIR`` is set, numba's own handling of it is left alone; if the per-user directory cannot be created
or written, numba's default locators apply (``__pycache__`` next to the source, then numba's user-wide directory).
Deleting ``<user cache dir>/meanfield`` clears the cache (it is rebuilt on the next calls).
"""
from __future__ import annotations

import os
import shutil
import sys

import numba
from numba.core import caching as _caching
from numba.core import config as _config
from numba.core import event as _event

__all__ = ["user_cache_root", "cache_root", "install", "shipped_cache", "seed_from_shipped"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def user_cache_root(environ=None, platform=None, home=None) -> str | None:
    """The platform's per-user cache directory, or None if it cannot be determined as an absolute path.

    Parameters
    ----------
    environ : mapping, optional
        Environment variables (default ``os.environ``).
    platform : str, optional
        ``sys.platform`` value (default the running platform).
    home : str, optional
        Home directory (default ``os.path.expanduser("~")``).

    Returns
    -------
    str or None
        ``$XDG_CACHE_HOME`` (if set to an absolute path) or ``~/.cache`` on Linux and other Unix,
        ``~/Library/Caches`` on macOS, ``%LOCALAPPDATA%`` on Windows.
    """
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    home = os.path.expanduser("~") if home is None else home
    if platform.startswith("win"):
        root = environ.get("LOCALAPPDATA", "")
    elif platform == "darwin":
        root = os.path.join(home, "Library", "Caches")
    else:
        xdg = environ.get("XDG_CACHE_HOME", "")
        root = xdg if os.path.isabs(xdg) else os.path.join(home, ".cache")   # XDG spec: ignore relative values
    return root if os.path.isabs(root) else None


def cache_root(version: str, environ=None, platform=None, home=None) -> str | None:
    """Directory holding meanfield's compiled-kernel cache for this meanfield, Python and numba version.

    Parameters
    ----------
    version : str
        meanfield's version string.
    environ, platform, home
        As in :func:`user_cache_root`.

    Returns
    -------
    str or None
        ``<user cache dir>/meanfield/numba/<version>-py<X.Y>-numba<numba version>``, or None if there is no usable
        per-user cache directory.
    """
    root = user_cache_root(environ, platform, home)
    if root is None:
        return None
    return os.path.join(root, "meanfield", "numba", _tag(version))


def _tag(version: str) -> str:
    return f"{version}-py{sys.version_info[0]}.{sys.version_info[1]}-numba{numba.__version__}"


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def _make_locator(root: str, package_dir: str) -> type:
    """A numba cache locator class for functions defined in files under ``package_dir``, caching under ``root``."""

    class MeanfieldCacheLocator(_caching._SourceFileBackedLocatorMixin, _caching._CacheLocator):
        """numba cache locator: meanfield's own compiled functions are cached in a per-user directory."""

        _meanfield_package_dir = package_dir

        def __init__(self, py_func, py_file):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._cache_path = os.path.join(root, self.get_suitable_cache_subpath(py_file))

        def get_cache_path(self):
            return self._cache_path

        @classmethod
        def from_function(cls, py_func, py_file):
            if _config.CACHE_DIR or not _inside(py_file, package_dir):
                return None   # NUMBA_CACHE_DIR set, or not meanfield's code: numba's own locators decide
            # the mixin returns None when the file is missing or the directory is not writable
            return super().from_function(py_func, py_file)

    return MeanfieldCacheLocator


def _relative_locator(root: str, package_dir: str) -> type:
    """Locator of the build step (``python -m meanfield._precompile --into DIR``): a relocatable layout,
    ``<root>/<folder of the source relative to the package's parent>``, e.g. ``meanfield/spectra``."""
    base = os.path.dirname(package_dir)

    class MeanfieldBuildLocator(_caching._SourceFileBackedLocatorMixin, _caching._CacheLocator):
        """numba cache locator writing meanfield's kernels into the cache shipped with the wheel."""

        _meanfield_package_dir = package_dir

        def __init__(self, py_func, py_file):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._cache_path = os.path.join(root, os.path.relpath(os.path.dirname(os.path.abspath(py_file)), base))

        def get_cache_path(self):
            return self._cache_path

        @classmethod
        def from_function(cls, py_func, py_file):
            if not _inside(py_file, package_dir):
                return None
            return super().from_function(py_func, py_file)

    return MeanfieldBuildLocator


def shipped_cache(version: str, package_dir: str = _PACKAGE_DIR) -> str:
    """Folder of the kernel cache built at install time for this meanfield, Python and numba version."""
    return os.path.join(package_dir, "_kernel_cache", _tag(version))


def seed_from_shipped(root: str, version: str, package_dir: str = _PACKAGE_DIR) -> int:
    """Copy the cache shipped with the package into the per-user cache ``root`` where that has no entry yet for a
    source folder. Each folder is copied to a temporary name and renamed into place (atomic: a concurrent process or
    an interrupted copy never leaves a half-filled folder). Returns the number of folders copied; any OS error
    (read-only disk, full disk) just leaves the cache to be compiled on first use."""
    shipped = shipped_cache(version, package_dir)
    if not os.path.isdir(shipped):
        return 0
    base = os.path.dirname(package_dir)
    copied = 0
    for dirpath, _, files in os.walk(shipped):
        if not any(f.endswith(".nbi") for f in files):
            continue
        source_folder = os.path.join(base, os.path.relpath(dirpath, shipped))
        target = os.path.join(root, _caching._CacheLocator.get_suitable_cache_subpath(
            os.path.join(source_folder, "__init__.py")))
        if os.path.exists(target):
            continue
        tmp = f"{target}.tmp{os.getpid()}"
        try:
            os.makedirs(tmp)
            for f in files:      # this folder's own files (its subfolders are other source folders)
                shutil.copy2(os.path.join(dirpath, f), tmp)
            os.replace(tmp, target)
            copied += 1
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return copied


class _CompileNotice(_event.Listener):
    """Tells the user once per process, on stderr, when meanfield's kernels are compiled rather than loaded."""

    told = False

    def on_start(self, event):
        if _CompileNotice.told:
            return
        dispatcher = event.data.get("dispatcher")
        module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
        if module.startswith("meanfield."):
            _CompileNotice.told = True
            sys.stderr.write("meanfield: compiling numerical kernels, once per install (a few minutes in all on two "
                             "cores; `python -m meanfield._precompile` does it all at once)...\n")

    def on_end(self, event):
        pass


def install(version: str) -> None:
    """Put meanfield's locator first in numba's locator list (once); call before any kernel is compiled or loaded.

    Also seeds the per-user cache from the one built at install time (:func:`seed_from_shipped`) and registers the
    one-time "compiling" notice.

    Parameters
    ----------
    version : str
        meanfield's version string (part of the cache directory name).
    """
    impl = getattr(_caching, "CacheImpl", None) or _caching._CacheImpl   # renamed in numba 0.59
    classes = impl._locator_classes   # one list, shared by FunctionCache and the library caches
    if any(getattr(c, "_meanfield_package_dir", None) == _PACKAGE_DIR for c in classes):
        return
    build = os.environ.get("MEANFIELD_KERNEL_CACHE_BUILD", "")
    if build:
        classes.insert(0, _relative_locator(os.path.join(build, _tag(version)), _PACKAGE_DIR))
        return
    _event.register("numba:compile", _CompileNotice())
    root = cache_root(version)
    if root is None:
        return   # no per-user cache directory: numba's defaults apply
    if not _config.CACHE_DIR and os.environ.get("MEANFIELD_NO_PRECOMPILE", "") != "1":
        seed_from_shipped(root, version)
    classes.insert(0, _make_locator(root, _PACKAGE_DIR))


def _install_once() -> None:
    from ._version import __version__
    install(__version__)


# Importing this module installs the locator: every module that defines compiled kernels imports it first (the
# package itself imports nothing heavy, see meanfield/__init__.py, so ``import meanfield.forward`` also lands here).
_install_once()
