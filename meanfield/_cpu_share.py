"""How many CPU cores other processes leave to this one: the compiled row loops start threads only when it is >= 2.

Measured on a 2-core machine with one other busy process: the threaded phase diagram took ~1 ms per point, the
serial one ~0.25 ms (threads woken for each of a few hundred short parallel regions wait for a time slice on a
busy core), while on the idle machine the threaded one took ~0.14 ms. So the threads are worth starting only where
cores are idle.

On Linux the share is read from ``/proc/stat`` (busy time of all CPUs) minus ``/proc/self/stat`` (this process's own
time) over the interval since the previous reading (at most one reading every ``_INTERVAL`` seconds; between two,
the previous answer stands). Elsewhere, or before two readings exist, every core counts as free (numba's default).
"""
from __future__ import annotations

import os
import time

__all__ = ["free_cores"]

_INTERVAL = 0.2     # seconds between two readings
_state: dict = {"t": None, "busy": 0.0, "own": 0.0, "free": None}


def _read():
    """(busy ticks of all CPUs, ticks of this process) or None where /proc is not available."""
    try:
        with open("/proc/stat", "rb") as f:
            cpu = f.readline().split()[1:]
        with open("/proc/self/stat", "rb") as f:
            own = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    ticks = [float(v) for v in cpu]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0.0)    # idle + iowait
    busy = sum(ticks[:8]) - idle                                # user nice system idle iowait irq softirq steal
    return busy, float(own[11]) + float(own[12])                # utime, stime (fields 14 and 15 of stat)


def free_cores() -> int:
    """Cores not kept busy by other processes over the last fraction of a second (at least 1)."""
    n = os.cpu_count() or 1
    now = time.monotonic()
    last = _state["t"]
    if last is not None and now - last < _INTERVAL and _state["free"] is not None:
        return int(_state["free"])
    reading = _read()
    if reading is None:
        return n
    busy, own = reading
    free = n
    if last is not None:
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        others = ((busy - _state["busy"]) - (own - _state["own"])) / (hz * (now - last))
        free = max(1, min(n, int(n - others + 0.5)))
    _state.update(t=now, busy=busy, own=own, free=free)
    return free
