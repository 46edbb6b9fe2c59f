"""vmpressure: level computation, windows, delivery modes, where pressure is accounted."""

from __future__ import annotations

from collections import Counter

import pytest

import memcg
from memcg.mm.vmpressure import (VMPRESSURE_CRITICAL, VMPRESSURE_LOW, VMPRESSURE_MEDIUM,
                              vmpressure_calc_level, vmpressure_win)

MiB = 1 << 20


@pytest.mark.parametrize("scanned,reclaimed,level", [
    (512, 512, VMPRESSURE_LOW),
    (512, 600, VMPRESSURE_LOW),          # slab reclaim can exceed scanned: pressure 0
    (512, 128, VMPRESSURE_MEDIUM),       # the 75% example of mm/vmpressure.c
    (512, 0, VMPRESSURE_CRITICAL),
    (512, 204, VMPRESSURE_MEDIUM),       # 60% (integer arithmetic)
    (512, 205, VMPRESSURE_LOW),          # 59%
    (512, 25, VMPRESSURE_CRITICAL),      # 95%
    (512, 26, VMPRESSURE_MEDIUM),        # 94%
])
def test_calc_level(scanned, reclaimed, level):
    assert vmpressure_calc_level(scanned, reclaimed) == level


def group(limit="32M", swap="0", memory="1G"):
    k = memcg.SimKernel(memory=memory, swap=swap)
    k.mkdir("/p")
    k.mkdir("/p/c")
    k.write("/p/c/memory.limit_in_bytes", limit)
    return k


def test_no_event_before_a_full_window():
    k = group(limit="32M")
    ev = k.event("/p/c/memory.pressure_level", "low")
    t = k.spawn("/p/c")
    t.read_file("f", 32 * MiB)          # fills the group: no reclaim yet
    assert ev.count() == 0
    t.read_file("g", 1 * MiB)           # 256 pages over: reclaim scans less than a window
    assert ev.count() == 0
    t.read_file("h", 2 * MiB)           # now more than vmpressure_win pages were scanned
    assert ev.count() >= 1
    assert vmpressure_win == 512


def test_listener_hears_its_level_and_above():
    k = group(limit="64M", swap="512M")
    evs = {lvl: k.event("/p/c/memory.pressure_level", lvl) for lvl in ("low", "medium", "critical")}
    t = k.spawn("/p/c")
    t.read_file("f", 128 * MiB)
    t.touch_anon(160 * MiB)
    levels = Counter(lvl for path, lvl in k.sys.pressure_history if path == "/p/c")
    # low and critical windows on both rules (3.8 also medium ones); each listener hears
    # its own level and those above it (mm/vmpressure.c: vmpressure_event)
    assert levels["low"] > 0 and levels["critical"] > 0
    assert evs["low"].count() == sum(levels.values())
    assert evs["medium"].count() == levels["medium"] + levels["critical"]
    assert evs["critical"].count() == levels["critical"]


def test_modes_on_the_parent():
    """default: silent when a listener below fired; hierarchy: always; local: own only."""
    k = group(limit="32M")
    child = k.event("/p/c/memory.pressure_level", "low")
    default = k.event("/p/memory.pressure_level", "low")
    hier = k.event("/p/memory.pressure_level", "low,hierarchy")
    local = k.event("/p/memory.pressure_level", "low,local")
    t = k.spawn("/p/c")
    t.read_file("f", 128 * MiB)
    n = child.count()
    assert n > 0
    assert (default.count(), hier.count(), local.count()) == (0, n, 0)


def test_default_mode_passes_up_when_nobody_below_listens():
    k = group(limit="32M")
    default = k.event("/p/memory.pressure_level", "low")
    k.spawn("/p/c").read_file("f", 128 * MiB)
    assert default.count() > 0


def test_pressure_goes_to_the_group_whose_limit_was_hit():
    """Reclaim for the parent's limit is accounted to the parent: the child hears nothing."""
    k = memcg.SimKernel(memory="1G")
    k.mkdir("/p")
    k.mkdir("/p/c")
    k.write("/p/memory.limit_in_bytes", "32M")
    child = k.event("/p/c/memory.pressure_level", "low,hierarchy")
    parent = k.event("/p/memory.pressure_level", "low,local")
    k.spawn("/p/c").read_file("f", 128 * MiB)
    assert parent.count() > 0
    assert child.count() == 0


def test_priority_three_or_below_is_critical():
    """Anon with no swap: reclaim scans nothing and its priority falls to 0 - critical."""
    k = group(limit="16M")
    k.write("/p/c/memory.oom_control", "1")    # no OOM kill: the task sleeps instead
    crit = k.event("/p/c/memory.pressure_level", "critical")
    t = k.spawn("/p/c")
    t.touch_anon(32 * MiB)
    assert t.state == "blocked"
    assert crit.count() > 0


def test_force_empty_produces_pressure():
    k = group(limit="-1")
    ev = k.event("/p/c/memory.pressure_level", "low")
    k.spawn("/p/c").read_file("f", 32 * MiB)
    assert ev.count() == 0
    k.write("/p/c/memory.force_empty", "0")
    assert ev.count() > 0
    assert "cache 0\n" in k.read("/p/c/memory.stat")


def test_global_reclaim_is_accounted_to_the_root():
    k = memcg.SimKernel(memory="64M")
    k.mkdir("/g")
    root = k.event("/memory.pressure_level", "low")
    child = k.event("/g/memory.pressure_level", "low")
    k.spawn("/g").read_file("f", 128 * MiB)
    assert root.count() > 0
    assert child.count() == 0


def test_coexists_with_thresholds_and_oom_events():
    k = group(limit="32M")
    low = k.event("/p/c/memory.pressure_level", "low")
    thr = k.event("/p/c/memory.usage_in_bytes", "16M")
    oom = k.event("/p/c/memory.oom_control")
    t = k.spawn("/p/c")
    t.read_file("f", 64 * MiB)
    assert low.count() > 0 and thr.count() == 1 and oom.count() == 0
    t.touch_anon(64 * MiB)
    assert t.state == "oom_killed" and oom.count() == 1
