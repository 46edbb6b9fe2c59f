"""cgroup v2 mechanisms of the model: the nanosecond clock, memory.high throttling,
effective memory.min/low protection and PSI (memory.pressure and its triggers).

The expectations of tools/testing/selftests/cgroup/test_memcontrol.c (test_memcg_min,
test_memcg_low, test_memcg_high, test_memcg_high_sync) are written here in our own words.
Where the interface files are not in the v2 table yet, the helpers set the counters the
files' write handlers set (page_counter_set_min/low, memory.high, memory.max).
"""

import errno
import re

import pytest
from hypothesis import given, settings, strategies as st

from memcg import cgroup, psi, sched
from memcg.backends.sim import SimKernel
from memcg.mm import memcontrol
from memcg.mm.memcontrol import (MEMCG_HIGH, MEMCG_LOW, MEMCG_MAX, MEMCG_OOM, MEMCG_OOM_KILL,
                                 calculate_high_delay, calculate_overage, MEMCG_CHARGE_BATCH)
from memcg.mm.page_counter import PageCounter, page_counter_calculate_protection

MB = 1 << 20
PAGES_PER_MB = MB // 4096
EVENT_INDEX = {"low": MEMCG_LOW, "high": MEMCG_HIGH, "max": MEMCG_MAX, "oom": MEMCG_OOM,
               "oom_kill": MEMCG_OOM_KILL}


def _group(k, path):
    return cgroup.cgroup_get_from_path(k.sys, path)


def _has_file(k, path, name):
    return name in k.listdir(path)


def _set(k, path, name, value):
    """Write a v2 file, or (before the file is in the table) set what its handler sets."""
    if _has_file(k, path, name):
        k.write(f"{path}/{name}", str(value))
        return
    memcg = _group(k, path)
    pages = memcontrol.PAGE_COUNTER_MAX if value == "max" else int(value) // 4096
    if name == "memory.min":
        memcg.memory.set_min(pages)
    elif name == "memory.low":
        memcg.memory.set_low(pages)
    elif name == "memory.high":
        memcg.memory.high = pages
    elif name == "memory.max":
        memcg.memory.max = pages
    elif name == "memory.swap.max":
        memcg.swap.max = pages
    else:
        raise KeyError(name)


def _current(k, path):
    if _has_file(k, path, "memory.current"):
        return int(k.read(f"{path}/memory.current"))
    return _group(k, path).memory.usage * 4096


def _event(k, path, key):
    if _has_file(k, path, "memory.events"):
        for line in k.read(f"{path}/memory.events").splitlines():
            name, value = line.split()
            if name == key:
                return int(value)
        raise KeyError(key)
    return _group(k, path).memory_events[EVENT_INDEX[key]]


def values_close(a, b, err):
    """The selftests' values_close(): within err percent of the pair's mean."""
    return abs(a - b) <= (a + b) / 100 * err


# --- the clock ------------------------------------------------------------------------

def test_high_resolution_timers_run_at_their_nanosecond_before_the_tick():
    clock = sched.Clock()
    seen = []
    t1 = sched.HrTimer(lambda: seen.append(("hr", clock.now, clock.ns)))
    t2 = sched.HrTimer(lambda: seen.append(("late", clock.now, clock.ns)))
    sched.hrtimer_start(clock, t1, 250 * sched.NSEC_PER_MSEC)
    sched.hrtimer_start(clock, t2, 1500 * sched.NSEC_PER_MSEC)
    sched.run_until(clock, 1)
    assert seen == [("hr", 0, 250_000_000)]
    assert (clock.now, clock.ns) == (1, 1_000_000_000)
    sched.hrtimer_cancel(t2)
    sched.run_until(clock, 3)
    assert seen == [("hr", 0, 250_000_000)]
    assert clock.ns == 3 * sched.NSEC_PER_SEC


def test_v1_never_arms_a_high_resolution_timer():
    k = SimKernel(memory="256M")
    k.mkdir("/a")
    k.write("/a/memory.limit_in_bytes", "8M")
    t = k.spawn("/a")
    t.read_file("f", 32 * MB)
    k.advance(3)
    assert k.sys.clock.hrtimers == []
    assert k.sys.clock.ns == 3 * sched.NSEC_PER_SEC and k.sys.psi_system is None


# --- memory.high ----------------------------------------------------------------------

@pytest.mark.parametrize("usage_mb,table_ms", [(100, 0), (101, 6), (105, 159), (110, 639),
                                               (117, 1849)])
def test_calculate_high_delay_follows_the_kernels_table(usage_mb, table_ms):
    # mm/memcontrol.c's table for a high of 100M, one charge batch; here in jiffies at HZ
    over = calculate_overage(usage_mb * PAGES_PER_MB, 100 * PAGES_PER_MB)
    jiffies = calculate_high_delay(None, MEMCG_CHARGE_BATCH, over)
    assert abs(jiffies * 1000 // sched.HZ - table_ms) <= 1000 // sched.HZ


def check_memcg_high(k, g, page_cache=True):
    """test_memcg_high: high 30M and no swap; 31M of anon survives (no OOM), 50M of page
    cache never brings memory.current to 50M, high events are counted."""
    k.mkdir(g)
    _set(k, g, "memory.swap.max", 0)
    _set(k, g, "memory.high", 30 * MB)
    t = k.spawn(g)
    t.touch_anon(31 * MB)
    k.advance(10)
    assert t.state == "running"
    assert _event(k, g, "oom_kill") == 0 and _event(k, g, "max") == 0
    t.exit()
    assert _event(k, g, "high") > 0
    if not page_cache:
        return
    r = k.spawn(g)
    r.read_file("cache", 50 * MB)
    k.advance(5)
    assert _current(k, g) < 50 * MB
    assert _current(k, g) <= 30 * MB + 30 * MB // 20  # within 5% of memory.high
    assert _event(k, g, "high") > 0
    assert _event(k, g, "oom_kill") == 0
    r.exit()


def check_memcg_high_sync(k, g, size):
    """test_memcg_high_sync: one big mlock with high 30M and max 140M - the synchronous
    over-high path sleeps the task inside the fault, so memory.max is never reached:
    high events grow, max events do not, nobody is OOM-killed."""
    k.mkdir(g)
    _set(k, g, "memory.swap.max", 0)
    _set(k, g, "memory.high", 30 * MB)
    _set(k, g, "memory.max", 140 * MB)
    pre_high, pre_max = _event(k, g, "high"), _event(k, g, "max")
    t = k.spawn(g)
    t.touch_anon(size, locked=True)
    for _ in range(120):
        if t.state != "blocked":
            break
        assert 30 * MB < _current(k, g) < 140 * MB
        k.advance(1)
    assert _event(k, g, "high") > pre_high
    assert _event(k, g, "max") == pre_max
    assert _event(k, g, "oom_kill") == 0
    t.exit()


def test_high_throttles_anon_without_oom_and_keeps_page_cache_near_high():
    check_memcg_high(SimKernel(memory="1G", hierarchy="v2"), "/t")


def test_high_throttles_one_big_mlock_inside_the_kernel():
    k = SimKernel(memory="1G", hierarchy="v2")
    k.mkdir("/t")
    _set(k, "/t", "memory.high", 30 * MB)
    _set(k, "/t", "memory.max", 140 * MB)
    t = k.spawn("/t")
    t.touch_anon(200 * MB, locked=True)  # the selftest's 200M: still sleeping after 10 s
    k.advance(10)
    assert t.state == "blocked"
    assert 30 * MB < _current(k, "/t") < 140 * MB
    assert _event(k, "/t", "high") > 0 and _event(k, "/t", "max") == 0
    check_memcg_high_sync(SimKernel(memory="1G", hierarchy="v2"), "/u", 36 * MB)


def test_the_penalty_sleep_blocks_only_the_throttled_task():
    k = SimKernel(memory="1G", hierarchy="v2")
    k.mkdir("/slow")
    k.mkdir("/fast")
    _set(k, "/slow", "memory.high", 8 * MB)
    slow, fast = k.spawn("/slow"), k.spawn("/fast")
    slow.touch_anon(16 * MB)
    assert slow.state == "blocked"
    fast.touch_anon(16 * MB)  # runs while the other sleeps
    assert fast.state == "running" and _current(k, "/fast") >= 16 * MB
    slow.free_anon(16 * MB)  # waits behind the sleep
    assert _current(k, "/slow") > 8 * MB
    k.advance(60)
    assert slow.state == "running" and _current(k, "/slow") < MB


# --- memory.min and memory.low --------------------------------------------------------

def _protection_tree(k, r, attr):
    """test_memcg_min/low's tree: A (max 200M, no swap) / B (50M) / C 75M, D 25M, E 0,
    F 500M, with 50M of page cache in C, D and E; then A/G allocates 148M of anon, and
    B keeps its 50M, shared 29M/21M between C and D (memcg_protection.m).  The page
    cache is written, as alloc_pagecache() makes it: a read would come in readahead
    folios of up to 2M (6.18), and reclaim takes whole folios."""
    for p in ("/A", "/A/B", "/A/G") + tuple(f"/A/B/{c}" for c in "CDEF"):
        k.mkdir(r + p)
    for p in ("/A", "/A/B"):  # the selftest's cg_write(parent, "cgroup.subtree_control", "+memory")
        k.write(f"{r}{p}/cgroup.subtree_control", "+memory")
    _set(k, r + "/A", "memory.max", 200 * MB)
    _set(k, r + "/A", "memory.swap.max", 0)
    readers = [k.spawn(f"{r}/A/B/{c}") for c in "CDE"]
    for c, t in zip("CDE", readers):
        t.write_file(f"file-{c}", 50 * MB)
    for p, mb in (("/A/B", 50), ("/A/B/C", 75), ("/A/B/D", 25), ("/A/B/E", 0), ("/A/B/F", 500)):
        _set(k, r + p, attr, mb * MB)
    assert values_close(_current(k, r + "/A/B"), 150 * MB, 3)
    g = k.spawn(r + "/A/G")
    g.touch_anon(148 * MB)
    assert g.state == "running"
    assert values_close(_current(k, r + "/A/B"), 50 * MB, 3)
    assert values_close(_current(k, r + "/A/B/C"), 29 * MB, 15)
    assert values_close(_current(k, r + "/A/B/D"), 21 * MB, 20)
    assert _current(k, r + "/A/B/F") == 0
    g.exit()
    return readers


def check_memcg_min(k, r):
    readers = _protection_tree(k, r, "memory.min")
    g = k.spawn(r + "/A/G")
    g.touch_anon(170 * MB)  # more than A has unprotected: the OOM killer, not B's cache
    assert g.state == "oom_killed"
    assert _event(k, r + "/A/G", "oom_kill") == 1
    assert values_close(_current(k, r + "/A/B"), 50 * MB, 3)
    return readers


def check_memcg_low(k, r, recursiveprot):
    readers = _protection_tree(k, r, "memory.low")
    g = k.spawn(r + "/A/G")
    g.touch_anon(170 * MB)  # low is best effort: the allocation succeeds
    assert g.state == "running"
    assert values_close(_current(k, r + "/A/B"), 30 * MB, 3)
    for c in "CDEF":
        assert _event(k, f"{r}/A/B/{c}", "oom") == 0
    assert _event(k, r + "/A/B/C", "low") > 0 and _event(k, r + "/A/B/D", "low") > 0
    assert _event(k, r + "/A/B/F", "low") == 0
    if not recursiveprot:
        assert _event(k, r + "/A/B/E", "low") == 0
    g.exit()
    return readers


def test_memory_min_is_shared_in_proportion_and_holds_against_oom():
    check_memcg_min(SimKernel(memory="1G", hierarchy="v2"), "")


@pytest.mark.parametrize("mount_options", [(), ("memory_recursiveprot",)])
def test_memory_low_gives_way_with_low_events_only_where_it_protected(mount_options):
    k = SimKernel(memory="1G", hierarchy="v2", mount_options=mount_options)
    check_memcg_low(k, "", bool(mount_options))


@st.composite
def _trees(draw):
    """A parent counter under a top level, its children with usage and protection."""
    n = draw(st.integers(1, 5))
    usages = draw(st.lists(st.integers(0, 5000), min_size=n, max_size=n))
    settings_ = draw(st.lists(st.integers(0, 6000), min_size=n, max_size=n))
    own = draw(st.integers(0, 2000))  # the parent's own pages
    parent_setting = draw(st.integers(0, 12000))
    return usages, settings_, own, parent_setting


@settings(max_examples=200, deadline=None)
@given(_trees(), st.booleans(), st.booleans())
def test_children_never_get_more_protection_than_their_parent(tree, recursive, use_low):
    usages, settings_, own, parent_setting = tree
    root = PageCounter(protection_support=True)
    top = PageCounter(parent=root, protection_support=True)
    parent = PageCounter(parent=top, protection_support=True)
    kids = [PageCounter(parent=parent, protection_support=True) for _ in usages]
    setter = "set_low" if use_low else "set_min"
    getattr(top, setter)(10**9)
    getattr(parent, setter)(parent_setting)
    parent.charge(own)
    for c, u, s in zip(kids, usages, settings_):
        getattr(c, setter)(s)
        c.charge(u)
    for c in [top, parent] + kids:
        page_counter_calculate_protection(root, c, recursive)
    field = "elow" if use_low else "emin"
    pe = getattr(parent, field)
    eff = [getattr(c, field) for c in kids]
    assert sum(eff) <= pe
    claimed = [min(u, s) for u, s in zip(usages, settings_)]
    assert (parent.children_low_usage if use_low else parent.children_min_usage) == sum(claimed)
    for c, e, cl in zip(kids, eff, claimed):
        if not c.usage:
            continue
        if sum(claimed) > pe:
            # overcommitted: shares in proportion to the protected usage
            assert e == cl * pe // sum(claimed)
        elif not recursive:
            assert e == cl
        else:
            assert e >= cl


# --- PSI ------------------------------------------------------------------------------

PRESSURE = re.compile(r"some avg10=(\d+\.\d\d) avg60=(\d+\.\d\d) avg300=(\d+\.\d\d) total=(\d+)\n"
                      r"full avg10=(\d+\.\d\d) avg60=(\d+\.\d\d) avg300=(\d+\.\d\d) total=(\d+)\n\Z")


def _pressure(k, path):
    m = PRESSURE.match(k.read(f"{path}/memory.pressure"))
    assert m, k.read(f"{path}/memory.pressure")
    v = m.groups()
    return {"some": [float(x) for x in v[:3]] + [int(v[3])],
            "full": [float(x) for x in v[4:7]] + [int(v[7])]}


def test_memory_pressure_reads_zero_on_an_idle_group_and_the_root_has_one():
    k = SimKernel(hierarchy="v2")
    k.mkdir("/a")
    assert k.read("/a/memory.pressure") == (
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    assert "memory.pressure" in k.listdir("/")
    _pressure(k, "/")


def check_throttled_pressure(k, r):
    """A task throttled at memory.high stalls its group and every ancestor; alone in its
    group and asleep in the stall, its some and full times are the same."""
    k.mkdir(r + "/a")
    k.write(r + "/a/cgroup.subtree_control", "+memory")  # /a/b needs a memory css of its own
    k.mkdir(r + "/a/b")
    _set(k, r + "/a/b", "memory.swap.max", 0)
    _set(k, r + "/a/b", "memory.high", 8 * MB)
    efd = k.event(r + "/a/b/memory.pressure", "some 150000 1000000")
    t = k.spawn(r + "/a/b")
    t.touch_anon(12 * MB)
    k.advance(4)
    b, a = _pressure(k, r + "/a/b"), _pressure(k, r + "/a")
    assert b["some"][3] > 100000  # microseconds
    assert abs(b["some"][3] - b["full"][3]) <= b["some"][3] // 10
    assert a["some"][3] >= b["some"][3] * 9 // 10
    assert 0 < b["some"][0] <= 100
    assert efd.signals >= 1 if hasattr(efd, "signals") else efd.count() >= 1
    t.exit()
    efd.close()


def test_a_throttled_task_stalls_its_group_and_the_ancestors():
    k = SimKernel(memory="1G", hierarchy="v2")
    check_throttled_pressure(k, "")
    k.mkdir("/x")
    _set(k, "/x", "memory.high", 8 * MB)
    t = k.spawn("/x")
    t.touch_anon(16 * MB)
    assert t.state == "blocked"
    k.advance(20)
    x, root = _pressure(k, "/x"), _pressure(k, "/")
    assert x["some"] == x["full"]
    assert root["some"][3] >= x["some"][3]


@pytest.mark.parametrize("text", ["some 0 1000000", "some 1000001 1000000", "some 1000 499999",
                                  "some 1000 10000001", "none 1000 1000000", "some 1000",
                                  "full", "", "some -1 1000000"])
def test_bad_triggers_are_einval(text):
    k = SimKernel(hierarchy="v2")
    k.mkdir("/a")
    with pytest.raises(OSError) as e:
        k.event("/a/memory.pressure", text)
    assert e.value.errno == errno.EINVAL
    if text:
        with pytest.raises(OSError) as e:
            k.write("/a/memory.pressure", text)
        assert e.value.errno == errno.EINVAL


def test_a_trigger_fires_at_most_once_per_window():
    k = SimKernel(memory="1G", hierarchy="v2")
    k.mkdir("/a")
    _set(k, "/a", "memory.high", 8 * MB)
    efd = k.event("/a/memory.pressure", "some 150000 1000000")
    quiet = k.event("/a/memory.pressure", "full 900000 1000000")
    t = k.spawn("/a")
    t.touch_anon(64 * MB)
    k.advance(10)
    assert 1 <= efd.signals <= 10 + 1
    assert efd.signals >= 5  # the task sleeps nearly all the time: most windows fire
    assert quiet.signals <= efd.signals
    k.close()


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["touch", "free", "advance", "read"]),
                          st.integers(1, 12)), min_size=1, max_size=12))
def test_psi_totals_grow_averages_stay_in_range_triggers_respect_windows(ops):
    k = SimKernel(memory="512M", hierarchy="v2")
    k.mkdir("/a")
    _set(k, "/a", "memory.high", 8 * MB)
    efd = k.event("/a/memory.pressure", "some 100000 1000000")
    t = k.spawn("/a")
    last = {"some": 0, "full": 0}
    for op, n in ops:
        if op == "touch":
            t.touch_anon(n * MB)
        elif op == "free":
            t.free_anon(n * MB)
        elif op == "advance":
            k.advance(n)
        p = _pressure(k, "/a")
        for kind in ("some", "full"):
            assert p[kind][3] >= last[kind]
            last[kind] = p[kind][3]
            assert all(0 <= x <= 100 for x in p[kind][:3])
        assert p["full"][3] <= p["some"][3]
    elapsed = k.sys.clock.ns
    group = psi.cgroup_psi(k.sys, _group(k, "/a"))
    (trigger,) = group.triggers
    assert trigger.events == efd.signals <= elapsed // trigger.win_size + 1
    k.close()
