"""cgroup.event_control notifications: usage thresholds, OOM, removal on rmdir and close.

Kernel references: mm/memcontrol-v1.c __mem_cgroup_usage_register_event(),
__mem_cgroup_threshold() (every threshold crossed since the last check is signalled,
in either direction), memcg1_check_events() / mem_cgroup_event_ratelimit() with
THRESHOLDS_EVENTS_TARGET = 128 page events, memcg_write_event_control() (only
usage_in_bytes, memsw.usage_in_bytes, oom_control and pressure_level are accepted),
mem_cgroup_css_offline() (each registered event is removed and its eventfd signalled
once), memcg_event_wake() (POLLHUP on close unregisters).
"""

from __future__ import annotations

import errno

import pytest

import memcg
from memcg.cgroup import cgroup_get_from_path

PAGE = 4096
MiB = 1 << 20
KiB = 1 << 10


@pytest.fixture
def k():
    kernel = memcg.SimKernel(memory="1G", cpus=1)
    kernel.mkdir("/g")
    try:
        yield kernel
    finally:
        kernel.close()


def test_threshold_crossing_up_and_down_signal_once_each(k):
    ev = k.event("/g/memory.usage_in_bytes", "16M")
    t = k.spawn("/g")
    assert ev.count() == 0
    t.touch_anon(8 * MiB)
    assert ev.count() == 0  # still below
    t.touch_anon(24 * MiB)
    assert ev.count() == 1  # crossed up once, however many checks ran above it
    t.touch_anon(8 * MiB)
    assert ev.count() == 0  # staying above: nothing
    t.free_anon(36 * MiB)
    assert ev.count() == 1  # crossed down once
    t.free_anon(4 * MiB)
    assert ev.count() == 0
    t.touch_anon(32 * MiB)
    assert ev.count() == 1  # and up again


def test_threshold_counts_page_cache_and_reclaim_crossing_down(k):
    ev = k.event("/g/memory.usage_in_bytes", "8M")
    t = k.spawn("/g")
    t.read_file("f", 16 * MiB)
    assert ev.count() == 1
    k.write("/g/memory.limit_in_bytes", "4M")  # reclaim takes usage back below 8M
    assert int(k.read("/g/memory.usage_in_bytes")) <= 4 * MiB
    # the crossing is noticed at a ratelimited check (reclaim's uncharges count as
    # page events too); more activity below the threshold adds nothing
    t.read_file("g", 2 * MiB)
    assert ev.count() == 1
    assert int(k.read("/g/memory.usage_in_bytes")) < 8 * MiB


def test_threshold_checked_on_ancestors(k):
    k.mkdir("/g/c")
    ev = k.event("/g/memory.usage_in_bytes", "8M")
    evc = k.event("/g/c/memory.usage_in_bytes", "64M")
    k.spawn("/g/c").touch_anon(16 * MiB)
    assert ev.count() == 1
    assert evc.count() == 0


def test_several_thresholds_crossed_at_once_all_fire(k):
    # three thresholds closer together than one 128-page check interval
    evs = [k.event("/g/memory.usage_in_bytes", f"{n}K") for n in (100, 200, 300)]
    far = k.event("/g/memory.usage_in_bytes", "64M")
    t = k.spawn("/g")
    t.touch_anon(4 * MiB)
    assert [e.count() for e in evs] == [1, 1, 1]
    assert far.count() == 0
    t.free_anon(4 * MiB)
    # The freed page tables go to the per-CPU stock and the objects' page stays charged:
    # usage stays at 256K, as on the real kernel after a munmap (kernel_v1_behaviour.json
    # "c": 262144 bytes), so only the 300K threshold is crossed back
    assert [e.count() for e in evs] == [0, 0, 1]


def test_thresholds_crossed_over_many_checks_each_fire_once(k):
    sizes = ("4M", "8M", "12M", "16M")
    evs = [k.event("/g/memory.usage_in_bytes", s) for s in sizes]
    k.spawn("/g").touch_anon(32 * MiB)
    assert [e.count() for e in evs] == [1] * len(sizes)


def test_same_eventfd_threshold_registered_twice(k):
    a = k.event("/g/memory.usage_in_bytes", "4M")
    b = k.event("/g/memory.usage_in_bytes", "4M")
    k.spawn("/g").touch_anon(8 * MiB)
    assert (a.count(), b.count()) == (1, 1)


def test_threshold_registered_above_current_usage_only_fires_on_crossing(k):
    t = k.spawn("/g")
    t.touch_anon(16 * MiB)
    below = k.event("/g/memory.usage_in_bytes", "8M")  # already crossed: no event
    above = k.event("/g/memory.usage_in_bytes", "24M")
    t.touch_anon(1 * MiB)
    assert below.count() == 0 and above.count() == 0
    t.touch_anon(16 * MiB)
    assert below.count() == 0 and above.count() == 1
    t.free_anon(32 * MiB)
    assert below.count() == 1 and above.count() == 1


def test_excursion_between_checks_is_not_seen(k):
    """Thresholds are checked every 128 page events per CPU: going above a threshold and
    back within fewer events goes unnoticed, as in the kernel."""
    t = k.spawn("/g")
    t.touch_anon(64 * PAGE)  # 64 events: the first check runs, the next is due at 192
    ev = k.event("/g/memory.usage_in_bytes", f"{100 * PAGE}")
    t.touch_anon(32 * PAGE)  # usage 128 pages (a new batch): above, but no check yet
    assert int(k.read("/g/memory.usage_in_bytes")) >= 100 * PAGE
    t.free_anon(32 * PAGE)  # back to 96 pages at event 128
    assert int(k.read("/g/memory.usage_in_bytes")) < 100 * PAGE
    assert ev.count() == 0
    t.touch_anon(1 * MiB)  # well past: the next check sees it
    assert ev.count() == 1


def test_memsw_threshold(k):
    ev = k.event("/g/memory.memsw.usage_in_bytes", "8M")
    k.spawn("/g").touch_anon(16 * MiB)
    assert ev.count() == 1


def test_minus_one_threshold_is_accepted_and_never_crossed(k):
    ev = k.event("/g/memory.usage_in_bytes", "-1")
    t = k.spawn("/g")
    t.touch_anon(32 * MiB)
    t.free_anon(32 * MiB)
    assert ev.count() == 0


def test_zero_threshold_is_crossed_by_the_first_charge_back(k):
    t = k.spawn("/g")
    ev = k.event("/g/memory.usage_in_bytes", "0")  # usage 0 >= 0 already: current
    t.touch_anon(4 * MiB)
    assert ev.count() == 0  # never goes below 0
    assert ev.fileno() >= 0


def test_empty_threshold_is_zero(k):
    """memparse("") parses nothing and leaves nothing: page_counter_memparse gives 0."""
    k.event("/g/memory.usage_in_bytes", "")
    assert [t for t, _ in cgroup_get_from_path(k.sys, "/g").thresholds] == [0]


@pytest.mark.parametrize("args", ["abc", "1KB", "-2", "1 2", "0x"])
def test_bad_threshold_is_einval(k, args):
    with pytest.raises(OSError) as e:
        k.event("/g/memory.usage_in_bytes", args)
    assert e.value.errno == errno.EINVAL


@pytest.mark.parametrize("name", ["memory.stat", "memory.limit_in_bytes", "memory.failcnt",
                                  "memory.max_usage_in_bytes", "cgroup.procs"])
def test_event_on_other_files_is_einval(k, name):
    with pytest.raises(OSError) as e:
        k.event(f"/g/{name}", "1M")
    assert e.value.errno == errno.EINVAL


def test_event_on_missing_file_or_group(k):
    with pytest.raises(OSError) as e:
        k.event("/g/memory.nonexistent", "1M")
    assert e.value.errno == errno.ENOENT
    with pytest.raises(OSError) as e:
        k.event("/nope/memory.usage_in_bytes", "1M")
    assert e.value.errno == errno.ENOENT


# --- removal ---------------------------------------------------------------------------------


def test_rmdir_signals_every_registered_eventfd_once(k):
    k.mkdir("/g/c")
    usage = k.event("/g/c/memory.usage_in_bytes", "1G")
    memsw = k.event("/g/c/memory.memsw.usage_in_bytes", "1G")
    oom = k.event("/g/c/memory.oom_control")
    pressure = k.event("/g/c/memory.pressure_level", "low")
    parent = k.event("/g/memory.usage_in_bytes", "1G")
    k.rmdir("/g/c")
    assert [e.count() for e in (usage, memsw, oom, pressure)] == [1, 1, 1, 1]
    assert parent.count() == 0
    # gone for good: nothing more arrives
    k.spawn("/g").touch_anon(8 * MiB)
    assert [e.count() for e in (usage, memsw, oom, pressure)] == [0, 0, 0, 0]


def test_rmdir_signals_per_registration(k):
    k.mkdir("/g/c")
    a = k.event("/g/c/memory.usage_in_bytes", "1M")
    b = k.event("/g/c/memory.usage_in_bytes", "2M")
    k.rmdir("/g/c")
    assert (a.count(), b.count()) == (1, 1)


def test_closing_the_eventfd_unregisters(k):
    grp = cgroup_get_from_path(k.sys, "/g")
    gone = k.event("/g/memory.usage_in_bytes", "8M")
    kept = k.event("/g/memory.usage_in_bytes", "8M")
    oom = k.event("/g/memory.oom_control")
    assert len(grp.thresholds) == 2 and len(grp.event_list) == 3
    gone.close()
    oom.close()
    assert len(grp.thresholds) == 1 and grp.thresholds[0][1] is kept
    assert grp.oom_notify == []
    assert [e for e, _ in grp.event_list] == [kept]
    k.spawn("/g").touch_anon(16 * MiB)
    assert kept.count() == 1
    assert gone.signals == 0 and oom.signals == 0
    assert gone.count() == 0
    gone.close()  # closing twice is harmless


def test_closed_eventfd_gets_nothing_at_rmdir(k):
    k.mkdir("/g/c")
    ev = k.event("/g/c/memory.usage_in_bytes", "1M")
    ev.close()
    k.rmdir("/g/c")
    assert ev.signals == 0


def test_close_keeps_threshold_index_consistent(k):
    """Unregistering rebuilds the array: crossings of the remaining thresholds still fire
    in both directions."""
    t = k.spawn("/g")
    low = k.event("/g/memory.usage_in_bytes", "4M")
    mid = k.event("/g/memory.usage_in_bytes", "8M")
    high = k.event("/g/memory.usage_in_bytes", "12M")
    t.touch_anon(10 * MiB)
    assert (low.count(), mid.count(), high.count()) == (1, 1, 0)
    low.close()
    t.touch_anon(6 * MiB)
    assert (mid.count(), high.count()) == (0, 1)
    t.free_anon(14 * MiB)
    assert (mid.count(), high.count()) == (1, 1)


def test_watch_callback_runs_with_the_count(k):
    seen = []
    ev = k.event("/g/memory.usage_in_bytes", "8M")
    ev.watch(seen.append)
    t = k.spawn("/g")
    t.touch_anon(16 * MiB)
    assert seen == [1]
    # the watcher read the eventfd: nothing left for count()
    assert ev.count() == 0
    t.free_anon(16 * MiB)
    assert seen == [1, 1]


def test_watch_sees_oom_and_removal(k):
    seen = []
    k.mkdir("/g/c")
    k.write("/g/c/memory.limit_in_bytes", "4M")
    ev = k.event("/g/c/memory.oom_control")
    ev.watch(lambda n: seen.append(("oom", n)))
    t = k.spawn("/g/c")
    t.touch_anon(8 * MiB)
    assert t.state == "oom_killed"
    assert seen == [("oom", 1)]
    k.rmdir("/g/c")
    assert seen == [("oom", 1), ("oom", 1)]


def test_watch_on_pending_signal_runs_at_once(k):
    ev = k.event("/g/memory.usage_in_bytes", "8M")
    k.spawn("/g").touch_anon(16 * MiB)
    seen = []
    ev.watch(seen.append)  # like a reader that starts after the event happened
    k.advance(1)
    assert seen == [1]


def test_eventfd_is_pollable(k):
    import select

    ev = k.event("/g/memory.usage_in_bytes", "8M")
    fd = ev.fileno()
    assert select.select([fd], [], [], 0)[0] == []
    k.spawn("/g").touch_anon(16 * MiB)
    assert select.select([fd], [], [], 0)[0] == [fd]
    assert ev.count() == 1
    assert select.select([fd], [], [], 0)[0] == []


def test_closing_an_eventfd_signals_pending_crossings_of_the_others(k):
    t = k.spawn("/g")
    t.touch_anon(64 * PAGE)  # a check runs now; the next one is due 128 events later
    a = k.event("/g/memory.usage_in_bytes", f"{100 * PAGE}")
    b = k.event("/g/memory.usage_in_bytes", "1G")
    t.touch_anon(32 * PAGE)  # usage 128 pages: above a's threshold, no check due yet
    assert a.count() == 0
    b.close()
    assert a.count() == 1
