"""meanfield._cpu_share.free_cores: the compiled row loops start threads only where other processes leave >= 2 cores.

The readings of /proc are replaced by scripted ones, so the arithmetic is checked exactly: over an interval of dt
seconds, other processes used (d busy - d own) / (HZ dt) cores.
"""
import os

import pytest

from meanfield import _cpu_share


@pytest.fixture
def scripted(monkeypatch):
    clock = {"t": 100.0}
    readings = []
    monkeypatch.setattr(_cpu_share, "_state", {"t": None, "busy": 0.0, "own": 0.0, "free": None})
    monkeypatch.setattr(_cpu_share.time, "monotonic", lambda: clock["t"])
    monkeypatch.setattr(_cpu_share, "_read", lambda: readings.pop(0))
    monkeypatch.setattr(_cpu_share.os, "cpu_count", lambda: 4)
    return clock, readings


def test_counts_other_processes_not_this_one(scripted):
    clock, readings = scripted
    hz = os.sysconf("SC_CLK_TCK")
    readings += [(0.0, 0.0), (3.0 * hz, 3.0 * hz), (3.0 * hz + 2.5 * hz, 3.0 * hz), (6.0 * hz, 3.0 * hz + 0.5 * hz)]
    assert _cpu_share.free_cores() == 4            # first reading: no interval yet, every core counts as free
    clock["t"] += 1.0
    assert _cpu_share.free_cores() == 4            # 3 cores busy, all of them this process's own
    clock["t"] += 1.0
    assert _cpu_share.free_cores() == 2            # 2.5 cores of others: 4 - 2.5 rounds to 2 (int(1.5 + 0.5))
    clock["t"] += 0.05
    assert _cpu_share.free_cores() == 2            # within the interval: the previous answer, no reading taken
    clock["t"] += 0.95
    assert _cpu_share.free_cores() == 4            # others used 0 cores over the last second


def test_never_below_one_and_without_proc(scripted, monkeypatch):
    clock, readings = scripted
    hz = os.sysconf("SC_CLK_TCK")
    readings += [(0.0, 0.0), (40.0 * hz, 0.0)]
    _cpu_share.free_cores()
    clock["t"] += 1.0
    assert _cpu_share.free_cores() == 1            # others used 40 cores' worth (more than exist): still 1
    monkeypatch.setattr(_cpu_share, "_read", lambda: None)
    clock["t"] += 1.0
    assert _cpu_share.free_cores() == 4            # no /proc: numba's default, every core


def test_real_reading_is_in_range():
    n = os.cpu_count() or 1
    assert 1 <= _cpu_share.free_cores() <= n
