"""meanfield: exact, fast infinite-width (mean-field) theory of deep neural networks.

The public API is re-exported here; see the README for a tour.

Importing the package is cheap (no numba, scipy or matplotlib): each public name is loaded from its module on first
access (PEP 562). The list of names, and the module that holds each, is the type stub ``__init__.pyi`` next to this
file, read once at import time; type checkers read the same file for the types.
"""
from __future__ import annotations

import ast as _ast
import importlib as _importlib
import os as _os
import sys as _sys
import types as _types

from ._version import __version__


def _read_stub() -> dict:
    """{public name: its module, relative to this package} from ``__init__.pyi``, in the stub's order."""
    with open(_os.path.join(_os.path.dirname(__file__), "__init__.pyi"), encoding="utf-8") as f:
        tree = _ast.parse(f.read())
    return {alias.name: node.module for node in tree.body
            if isinstance(node, _ast.ImportFrom) and node.level == 1 and node.module != "_version"
            for alias in node.names}


_EXPORTS = _read_stub()
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value   # later accesses skip this function
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))


class _Package(_types.ModuleType):
    """The package's module type: four public functions share their module's name (``forward``, ``backward``,
    ``kernels``, ``trace``). Importing such a submodule makes the import system bind it as an attribute of the package;
    that binding is dropped here, so ``meanfield.forward`` stays the function (loaded by ``__getattr__``), as it was
    when the package imported everything eagerly. The submodule itself is ``sys.modules["meanfield.forward"]``."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, _types.ModuleType) and _EXPORTS.get(name) == name:
            return
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
