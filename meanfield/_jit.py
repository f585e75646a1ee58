"""Compiled-kernel plumbing: the built-in kernels are cached numba functions that call ``act_eval`` by name; for a
custom activation the same Python source is recompiled with ``act_eval`` bound to the user's evaluator."""
from __future__ import annotations

import types

import numba as nb

__all__ = ["KernelSet", "kernel_set"]


class KernelSet:
    """Namespace of compiled kernels for one activation evaluator (attribute access by kernel name)."""

    def __init__(self, mapping):
        self.__dict__.update(mapping)


_REGISTRY: list = []     # kernels that depend on act_eval, registered at import time (immutable after import)
_CUSTOM_CACHE: dict = {}  # compiled kernel sets for custom evaluators, keyed by the evaluator object


def register(*dispatchers):
    """Declare compiled functions whose code (directly or through other registered functions) calls act_eval."""
    _REGISTRY.extend(dispatchers)
    return dispatchers[0] if len(dispatchers) == 1 else dispatchers


def kernel_set(activation) -> KernelSet:
    """Kernels for ``activation``: the cached built-ins, or a recompiled copy for a custom activation."""
    if activation.evaluator is None:
        return _builtin_set()
    ev = activation.evaluator
    ks = _CUSTOM_CACHE.get(ev)
    if ks is None:
        g = {}
        for d in _REGISTRY:
            g.update(d.py_func.__globals__)
        g["act_eval"] = ev
        new = {}
        for d in _REGISTRY:
            f = d.py_func
            fn = types.FunctionType(f.__code__, g, f.__name__, f.__defaults__, f.__closure__)
            opts = {k: v for k, v in d.targetoptions.items() if k in ("parallel", "fastmath", "inline", "boundscheck")}
            new[f.__name__] = nb.njit(**opts)(fn)
        g.update(new)
        ks = KernelSet(new)
        _CUSTOM_CACHE[ev] = ks
    return ks


def _builtin_set() -> KernelSet:
    return KernelSet({d.py_func.__name__: d for d in _REGISTRY})
