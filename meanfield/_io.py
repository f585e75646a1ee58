"""Safe output: atomic file writes, overwrite checks, memory-size checks and deferred Ctrl-C.

* :func:`atomic_open` -- every output file (npz, csv, json, md, png, svg, pdf) is written to a temporary file in the
  same folder and moved onto the real name with :func:`os.replace` only once it is complete, so an interrupted or
  failed write never leaves a truncated file under the real name (and never clobbers the previous version).
* :func:`existing_files` -- the files of a planned output that already exist (the CLIs refuse to overwrite them
  unless ``--overwrite`` is given).
* :func:`check_alloc` -- raise ``ValueError`` naming the parameter before an allocation that could not succeed.
* :func:`deferred_sigint` -- hold a Ctrl-C (SIGINT) while a compiled (numba) call runs and raise it as
  ``KeyboardInterrupt`` between calls (an interrupt arriving inside a compiled call otherwise surfaces as a
  ``SystemError``).
"""
from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading

__all__ = ["atomic_open", "existing_files", "check_writable_dir", "check_alloc", "available_memory",
           "deferred_sigint", "MAX_ALLOC_BYTES"]

#: hard upper bound for a single result allocation (bytes), whatever the free memory
MAX_ALLOC_BYTES = 32 * 2 ** 30


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb", **kwargs):
    """Open a temporary file next to ``path`` for writing; on success move it onto ``path`` atomically.

    On any exception (including ``KeyboardInterrupt``) the temporary file is removed and ``path`` is untouched.

    Parameters
    ----------
    path : str or path-like
        Final file name (its folder must exist).
    mode : {"wb", "w"}
        Binary or text mode; ``kwargs`` go to :func:`open` (e.g. ``encoding``).

    Examples
    --------
    >>> with atomic_open("out.json", "w") as fh:     # doctest: +SKIP
    ...     fh.write("{}")
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def existing_files(paths) -> list:
    """The paths in ``paths`` that already exist (in order)."""
    return [p for p in paths if os.path.lexists(p)]


def check_writable_dir(path, name: str = "--out") -> str:
    """Create folder ``path`` if needed and check that files can be created in it; returns its absolute path.

    Raises ``ValueError`` naming ``name`` when it is not a folder, cannot be created or is not writable.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{name}: {path} exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ValueError(f"{name}: cannot write into {path} ({exc.strerror or exc})") from None
    return path


def available_memory() -> float:
    """Available physical memory in bytes (``inf`` where the platform does not say)."""
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES")) * float(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        return float("inf")


def check_alloc(name: str, nbytes: float, what: str) -> None:
    """Raise ``ValueError`` naming ``name`` if ``nbytes`` exceed :data:`MAX_ALLOC_BYTES` or the available memory."""
    limit = min(float(MAX_ALLOC_BYTES), available_memory())
    if nbytes > limit:
        raise ValueError(f"{name}: {what} would need {nbytes / 2 ** 30:.3g} GiB, more than the {limit / 2 ** 30:.3g} "
                         "GiB allowed (the smaller of 32 GiB and the available memory); use a smaller size")


class _Deferred:
    """State of :func:`deferred_sigint`: ``pending`` is set by a held Ctrl-C."""

    def __init__(self):
        self.pending = False

    def check(self) -> None:
        """Raise the held ``KeyboardInterrupt``, if any."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt


@contextlib.contextmanager
def deferred_sigint():
    """Hold SIGINT inside the block; call ``.check()`` on the yielded object between compiled calls to raise it.

    A second Ctrl-C while one is held raises at once. Outside the main thread, or when the program installed its own
    SIGINT handler, nothing is changed (``check`` is then a no-op). A ``SystemError`` that wraps a
    ``KeyboardInterrupt`` (Ctrl-C inside a compiled call) is turned back into the ``KeyboardInterrupt``.
    """
    state = _Deferred()
    swap = (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if swap:
        def handler(signum, frame):
            if state.pending:
                raise KeyboardInterrupt
            state.pending = True

        signal.signal(signal.SIGINT, handler)
    try:
        yield state
    except SystemError as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt) or isinstance(exc.__context__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise
    finally:
        if swap:
            signal.signal(signal.SIGINT, signal.default_int_handler)
