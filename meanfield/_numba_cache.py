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
import sys

import numba
from numba.core import caching as _caching
from numba.core import config as _config

__all__ = ["user_cache_root", "cache_root", "install"]

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
    tag = f"{version}-py{sys.version_info[0]}.{sys.version_info[1]}-numba{numba.__version__}"
    return os.path.join(root, "meanfield", "numba", tag)


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


def install(version: str) -> None:
    """Put meanfield's locator first in numba's locator list (once); call before any kernel is compiled or loaded.

    Parameters
    ----------
    version : str
        meanfield's version string (part of the cache directory name).
    """
    root = cache_root(version)
    if root is None:
        return   # no per-user cache directory: numba's defaults apply
    impl = getattr(_caching, "CacheImpl", None) or _caching._CacheImpl   # renamed in numba 0.59
    classes = impl._locator_classes   # one list, shared by FunctionCache and the library caches
    if any(getattr(c, "_meanfield_package_dir", None) == _PACKAGE_DIR for c in classes):
        return
    classes.insert(0, _make_locator(root, _PACKAGE_DIR))

