"""The OOM killer and memory.oom_control.

Kernel references: mm/oom_kill.c oom_badness() (rss + swap entries + page tables, plus
oom_score_adj * totalpages / 1000; -1000 is never chosen), select_bad_process() (ties:
the later scanned task wins, 5.9+), memcg_memory_event_mm(victim, MEMCG_OOM_KILL) (the
victim's group counts the kill; v1 does not propagate it up); mm/memcontrol.c
try_charge_memcg() / mem_cgroup_oom(); mm/memcontrol-v1.c memcg1_oom_prepare(),
mem_cgroup_oom_synchronize() (oom_kill_disable: the faulting task sleeps),
memcg1_oom_recover() (uncharge, limit raise, oom_kill_disable=0 wake sleepers),
mem_cgroup_oom_register_event() (an eventfd registered under OOM is signalled at once).
"""

from __future__ import annotations

import pytest

import memcg

PAGE = 4096
MiB = 1 << 20


def stat(k, group):
    return {ln.split()[0]: int(ln.split()[1]) for ln in k.read(f"{group}/memory.stat").splitlines()}


def oom_control(k, group):
    return {key: int(v) for key, v in (ln.split() for ln in k.read(f"{group}/memory.oom_control").splitlines())}


def num(k, path):
    return int(k.read(path))


@pytest.fixture
def k():
    kernel = memcg.SimKernel(memory="1G")
    try:
        yield kernel
    finally:
        kernel.close()


def test_oom_control_default_text(k):
    k.mkdir("/g")
    assert k.read("/g/memory.oom_control") == "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"


def test_hog_is_killed_neighbour_untouched(k):
    k.mkdir("/hog")
    k.mkdir("/quiet")
    k.write("/hog/memory.limit_in_bytes", "16M")
    quiet = k.spawn("/quiet")
    quiet.touch_anon(8 * MiB)
    hog = k.spawn("/hog")
    hog.touch_anon(64 * MiB)
    assert hog.state == "oom_killed"
    assert oom_control(k, "/hog") == {"oom_kill_disable": 0, "under_oom": 0, "oom_kill": 1}
    assert num(k, "/hog/memory.failcnt") > 0
    assert num(k, "/hog/memory.max_usage_in_bytes") <= 16 * MiB
    assert stat(k, "/hog")["rss"] == 0
    assert k.read("/hog/cgroup.procs") == ""
    assert quiet.state == "running"
    assert stat(k, "/quiet")["rss"] == 8 * MiB
    assert oom_control(k, "/quiet")["oom_kill"] == 0
    assert k.debugfs()["global_oom_kills"] == 0
    # the killed task can do nothing more
    with pytest.raises(ProcessLookupError):
        hog.touch_anon(PAGE)


def test_victim_is_biggest_in_subtree_not_the_charger(k):
    """/p's limit is hit by a small task in /p/b; the big one in /p/a dies, and the kill
    is counted in /p/a (the victim's group), not in /p (the limited one)."""
    for g in ("/p", "/p/a", "/p/b"):
        k.mkdir(g)
    k.write("/p/memory.limit_in_bytes", "32M")
    big = k.spawn("/p/a")
    big.touch_anon(20 * MiB)
    small = k.spawn("/p/b")
    small.touch_anon(4 * MiB)
    small.touch_anon(12 * MiB)
    assert big.state == "oom_killed"
    assert small.state == "running"
    assert stat(k, "/p/b")["rss"] == 16 * MiB
    assert oom_control(k, "/p/a")["oom_kill"] == 1
    assert oom_control(k, "/p")["oom_kill"] == 0
    assert oom_control(k, "/p/b")["oom_kill"] == 0
    assert num(k, "/p/memory.failcnt") > 0
    assert num(k, "/p/a/memory.failcnt") == 0


def test_oom_only_looks_inside_the_limited_subtree(k):
    k.mkdir("/limited")
    k.mkdir("/outside")
    outside = k.spawn("/outside")
    outside.touch_anon(64 * MiB)  # biggest task on the machine, but not in the subtree
    k.write("/limited/memory.limit_in_bytes", "8M")
    a = k.spawn("/limited")
    a.touch_anon(16 * MiB)
    assert a.state == "oom_killed"
    assert outside.state == "running"


def test_oom_score_adj_min_is_unkillable(k):
    k.mkdir("/g")
    k.write("/g/memory.limit_in_bytes", "16M")
    big = k.spawn("/g")
    big.oom_score_adj = -1000
    big.touch_anon(10 * MiB)
    other = k.spawn("/g")
    other.touch_anon(2 * MiB)
    third = k.spawn("/g")
    third.touch_anon(1 * MiB)
    other.touch_anon(8 * MiB)  # over the limit: big would score highest, but is exempt
    assert big.state == "running"
    assert other.state == "oom_killed"  # 2M+ beats third's 1M
    assert third.state == "running"
    assert oom_control(k, "/g")["oom_kill"] == 1


def test_oom_score_adj_max_is_preferred(k):
    k.mkdir("/g")
    k.write("/g/memory.limit_in_bytes", "16M")
    big = k.spawn("/g")
    big.touch_anon(10 * MiB)
    tiny = k.spawn("/g")
    tiny.oom_score_adj = 1000
    tiny.touch_anon(2 * MiB)
    charger = k.spawn("/g")
    charger.touch_anon(5 * MiB)  # 17M: one kill is enough
    assert tiny.state == "oom_killed"
    assert big.state == "running"
    assert charger.state == "running"
    assert stat(k, "/g")["rss"] == 15 * MiB
    assert oom_control(k, "/g")["oom_kill"] == 1


def test_negative_oom_score_adj_protects_a_big_task(k):
    k.mkdir("/g")
    k.write("/g/memory.limit_in_bytes", "16M")
    big = k.spawn("/g")
    big.oom_score_adj = -500  # -500 * (4096 pages // 1000) = -2000 points
    big.touch_anon(6 * MiB)  # 1536 pages
    small = k.spawn("/g")
    small.touch_anon(1 * MiB)
    small.touch_anon(12 * MiB)
    assert big.state == "running"
    assert small.state == "oom_killed"


def test_tie_kills_the_later_scanned_task(k):
    k.mkdir("/g")
    k.write("/g/memory.limit_in_bytes", "16M")
    first = k.spawn("/g")
    first.touch_anon(4 * MiB)
    second = k.spawn("/g")
    second.touch_anon(4 * MiB)
    charger = k.spawn("/g")
    charger.oom_score_adj = -1000
    charger.touch_anon(10 * MiB)
    assert first.state == "running"
    assert second.state == "oom_killed"
    assert charger.state == "running"


def test_tie_order_follows_the_group_task_list(k):
    """The scan order is the group's task list, not pid order: a task that moved in
    later is scanned later, and wins the tie."""
    k.mkdir("/g")
    k.mkdir("/h")
    k.write("/g/memory.limit_in_bytes", "16M")
    first = k.spawn("/h")
    second = k.spawn("/g")
    assert first.pid < second.pid
    first.move("/g")  # joins /g's task list after second
    second.touch_anon(4 * MiB)
    first.touch_anon(4 * MiB)
    charger = k.spawn("/g")
    charger.oom_score_adj = -1000
    charger.touch_anon(10 * MiB)
    assert first.state == "oom_killed"
    assert second.state == "running"
    assert charger.state == "running"


def test_no_killable_task_blocks_the_charger(k):
    k.mkdir("/g")
    k.write("/g/memory.limit_in_bytes", "8M")
    t = k.spawn("/g")
    t.oom_score_adj = -1000
    t.touch_anon(16 * MiB)
    assert t.state == "blocked"
    assert oom_control(k, "/g")["oom_kill"] == 0
    assert num(k, "/g/memory.usage_in_bytes") <= 8 * MiB
    # the fault is retried on every tick and keeps failing
    k.advance(3)
    assert t.state == "blocked"
    # more room: the next retry completes the fault
    k.write("/g/memory.limit_in_bytes", "32M")
    k.advance(1)
    assert t.state == "running"
    assert stat(k, "/g")["rss"] == 16 * MiB


def test_no_killable_task_operations_queue_behind_the_blocked_fault(k):
    k.mkdir("/g")
    k.write("/g/memory.limit_in_bytes", "8M")
    t = k.spawn("/g")
    t.oom_score_adj = -1000
    t.touch_anon(16 * MiB)
    assert t.state == "blocked"
    t.free_anon(16 * MiB)  # waits behind the fault
    assert t.state == "blocked"
    k.write("/g/memory.limit_in_bytes", "32M")
    k.advance(1)
    assert t.state == "running"
    assert stat(k, "/g")["rss"] == 0


# --- oom_kill_disable -------------------------------------------------------------------------


@pytest.fixture
def frozen(k):
    """A group with oom_kill_disable=1 whose only task blocked in a fault over the limit."""
    k.mkdir("/g")
    k.write("/g/memory.limit_in_bytes", "8M")
    k.write("/g/memory.oom_control", "1")
    ev = k.event("/g/memory.oom_control")
    t = k.spawn("/g")
    t.touch_anon(16 * MiB)
    return k, t, ev


def test_oom_kill_disable_blocks_the_faulting_task(frozen):
    k, t, ev = frozen
    assert t.state == "blocked"
    assert oom_control(k, "/g") == {"oom_kill_disable": 1, "under_oom": 1, "oom_kill": 0}
    assert ev.count() == 1
    assert ev.count() == 0  # count() reads and resets
    assert num(k, "/g/memory.usage_in_bytes") <= 8 * MiB
    k.advance(5)  # time alone does not help
    assert t.state == "blocked"
    assert ev.count() == 0


def test_raising_limit_wakes_the_sleeper(frozen):
    k, t, ev = frozen
    k.write("/g/memory.limit_in_bytes", "32M")
    assert t.state == "running"
    assert oom_control(k, "/g")["under_oom"] == 0
    assert stat(k, "/g")["rss"] == 16 * MiB
    assert oom_control(k, "/g")["oom_kill"] == 0


def test_writing_oom_kill_disable_0_wakes_it_and_it_is_killed(frozen):
    k, t, ev = frozen
    ev.count()
    k.write("/g/memory.oom_control", "0")
    assert t.state == "oom_killed"
    assert oom_control(k, "/g") == {"oom_kill_disable": 0, "under_oom": 0, "oom_kill": 1}
    assert stat(k, "/g")["rss"] == 0


def test_freeing_memory_in_the_group_wakes_the_sleeper(k):
    k.mkdir("/g")
    k.write("/g/memory.limit_in_bytes", "12M")
    k.write("/g/memory.oom_control", "1")
    helper = k.spawn("/g")
    helper.touch_anon(6 * MiB)
    t = k.spawn("/g")
    t.touch_anon(8 * MiB)  # 14M: the limit is hit
    assert t.state == "blocked"
    assert oom_control(k, "/g")["under_oom"] == 1
    helper.free_anon(6 * MiB)  # uncharge under OOM: memcg1_oom_recover()
    assert t.state == "running"
    assert stat(k, "/g")["rss"] == 8 * MiB
    assert oom_control(k, "/g")["under_oom"] == 0
    assert oom_control(k, "/g")["oom_kill"] == 0


def test_uncharge_in_an_unrelated_group_does_not_wake(k):
    """memcg_oom_wake_function(): only an ancestor/descendant uncharge wakes a sleeper."""
    k.mkdir("/g")
    k.mkdir("/other")
    k.write("/g/memory.limit_in_bytes", "8M")
    k.write("/g/memory.oom_control", "1")
    o = k.spawn("/other")
    o.touch_anon(4 * MiB)
    t = k.spawn("/g")
    t.touch_anon(16 * MiB)
    assert t.state == "blocked"
    o.free_anon(4 * MiB)
    assert t.state == "blocked"
    assert oom_control(k, "/g")["under_oom"] == 1


def test_freeing_memory_wakes_the_sleeper_which_may_block_again(k):
    k.mkdir("/g")
    k.write("/g/memory.limit_in_bytes", "8M")
    k.write("/g/memory.oom_control", "1")
    ev = k.event("/g/memory.oom_control")
    helper = k.spawn("/g")
    helper.touch_anon(2 * MiB)
    t = k.spawn("/g")
    t.touch_anon(16 * MiB)
    assert t.state == "blocked"
    assert ev.count() == 1
    helper.free_anon(2 * MiB)  # 2M freed is not enough for 16M: it sleeps again
    assert t.state == "blocked"
    assert oom_control(k, "/g")["under_oom"] == 1
    assert ev.count() == 1  # the new OOM is notified again
    assert stat(k, "/g")["rss"] > 6 * MiB
    helper.exit()
    t.exit()
    assert oom_control(k, "/g")["under_oom"] == 0


def test_event_registered_while_under_oom_fires_at_once(frozen):
    k, t, ev = frozen
    late = k.event("/g/memory.oom_control")
    assert late.count() == 1
    assert late.count() == 0
    # after the OOM is over a new registration gets nothing
    k.write("/g/memory.limit_in_bytes", "32M")
    later = k.event("/g/memory.oom_control")
    assert later.count() == 0


def test_oom_event_fires_in_descendants_not_ancestors(k):
    """mem_cgroup_oom_notify() walks the OOMing group's subtree."""
    for g in ("/p", "/p/c", "/p/c/d", "/p/s"):
        k.mkdir(g)
    k.write("/p/c/memory.limit_in_bytes", "8M")
    k.write("/p/c/memory.oom_control", "1")
    evs = {g: k.event(f"{g}/memory.oom_control") for g in ("/p", "/p/c", "/p/c/d", "/p/s")}
    t = k.spawn("/p/c")
    t.touch_anon(16 * MiB)
    assert t.state == "blocked"
    assert {g: e.count() for g, e in evs.items()} == {"/p": 0, "/p/c": 1, "/p/c/d": 1, "/p/s": 0}
    assert oom_control(k, "/p/c/d")["under_oom"] == 1
    assert oom_control(k, "/p")["under_oom"] == 0


def test_oom_event_fires_on_a_normal_kill(k):
    k.mkdir("/g")
    k.write("/g/memory.limit_in_bytes", "8M")
    ev = k.event("/g/memory.oom_control")
    t = k.spawn("/g")
    t.touch_anon(16 * MiB)
    assert t.state == "oom_killed"
    assert ev.count() == 1
    assert oom_control(k, "/g")["under_oom"] == 0


def test_oom_kill_disable_inherited_and_root_rejects_it(k):
    import errno

    with pytest.raises(OSError) as e:
        k.write("/memory.oom_control", "1")
    assert e.value.errno == errno.EINVAL
    k.mkdir("/g")
    for bad in ("2", "-1", "x"):
        with pytest.raises(OSError):
            k.write("/g/memory.oom_control", bad)
    k.write("/g/memory.oom_control", "1")
    k.mkdir("/g/c")
    assert oom_control(k, "/g/c")["oom_kill_disable"] == 1


# --- global OOM ---------------------------------------------------------------------------------


def test_global_oom_kills_the_biggest_task():
    with memcg.SimKernel(memory="64M") as k:
        k.mkdir("/a")
        k.mkdir("/b")
        small = k.spawn("/a")
        small.touch_anon(8 * MiB)
        big = k.spawn("/b")
        big.touch_anon(36 * MiB)
        grower = k.spawn("/a")
        grower.touch_anon(24 * MiB)  # the machine is out of memory
        assert big.state == "oom_killed"
        assert small.state == "running"
        assert grower.state == "running"
        assert k.debugfs()["global_oom_kills"] == 1
        assert oom_control(k, "/b")["oom_kill"] == 1
        assert oom_control(k, "/a")["oom_kill"] == 0
        assert stat(k, "/a")["rss"] == 32 * MiB
        assert k.debugfs()["nr_free_pages"] >= k.debugfs()["watermarks"]["min"]


def test_global_oom_prefers_reclaiming_cache_over_killing():
    with memcg.SimKernel(memory="64M") as k:
        k.mkdir("/a")
        t = k.spawn("/a")
        t.read_file("f", 40 * MiB)
        t.touch_anon(40 * MiB)
        assert t.state == "running"
        assert k.debugfs()["global_oom_kills"] == 0
        assert stat(k, "/a")["rss"] == 40 * MiB


def test_oom_kill_disable_page_cache_read_fails_with_enomem(k):
    """Outside a user fault there is no sleeping: the charge fails (-ENOMEM to read())."""
    import errno

    k.mkdir("/g")
    k.write("/g/memory.limit_in_bytes", "8M")
    k.write("/g/memory.oom_control", "1")
    t = k.spawn("/g")
    # exactly at the limit; nothing reclaimable.  The mapping's page tables are charged
    # too, as on the real kernel (docs/kmem.md): 2045 pages not 2 MiB-aligned take 3 PTE
    # pages of their own, 2048 in all
    t.touch_anon(8 * MiB - 3 * 4096)
    assert t.state == "running"
    assert num(k, "/g/memory.usage_in_bytes") == 8 * MiB
    with pytest.raises(OSError) as e:
        t.read_file("f", 4 * MiB)
    assert e.value.errno == errno.ENOMEM
    assert t.state == "running"
    assert oom_control(k, "/g") == {"oom_kill_disable": 1, "under_oom": 0, "oom_kill": 0}
    assert num(k, "/g/memory.usage_in_bytes") <= 8 * MiB


def test_shmem_swapped_back_in_counts_for_oom_badness():
    with memcg.SimKernel(memory="1G", swap="1G") as k:
        k.mkdir("/g")
        a = k.spawn("/g")
        a.touch_shm("seg", 8 * MiB)
        k.write("/g/memory.force_empty", "0")  # the segment goes to swap
        assert stat(k, "/g")["swap"] == 8 * MiB
        a.touch_shm("seg", 8 * MiB)  # and comes back: a maps 2048 pages again
        assert stat(k, "/g")["shmem"] == 8 * MiB
        b = k.spawn("/g")
        b.touch_anon(6 * MiB)  # 1536 pages
        k.write("/g/memory.limit_in_bytes", "16M")
        k.write("/g/memory.memsw.limit_in_bytes", "16M")  # no swapping: OOM
        c = k.spawn("/g")
        c.oom_score_adj = -1000
        c.touch_anon(4 * MiB)
        # a (2048 shmem pages) outscores b (1536 anon pages) and is chosen first
        assert a.state == "oom_killed"
        assert c.state == "running"


def test_shmem_mapped_by_a_task_counts_for_oom_badness():
    """Control for the test above, without the trip through swap."""
    with memcg.SimKernel(memory="1G", swap="1G") as k:
        k.mkdir("/g")
        a = k.spawn("/g")
        a.touch_shm("seg", 8 * MiB)
        b = k.spawn("/g")
        b.touch_anon(6 * MiB)
        k.write("/g/memory.limit_in_bytes", "16M")
        k.write("/g/memory.memsw.limit_in_bytes", "16M")
        c = k.spawn("/g")
        c.oom_score_adj = -1000
        c.touch_anon(4 * MiB)
        assert a.state == "oom_killed"
        # killing a frees no memory (the segment stays cached): b goes too
        assert b.state == "oom_killed"
        assert c.state == "running"
        assert oom_control(k, "/g")["oom_kill"] == 2
        assert stat(k, "/g")["shmem"] == 8 * MiB


class _Pad:
    """An object of about a task's size, to vary where the next task is allocated."""

    def __init__(self):
        self.a = self.b = self.c = None


def test_retry_order_of_blocked_tasks_is_deterministic():
    outcomes = set()
    keep = []
    for pad in range(24):
        k = memcg.SimKernel(memory="1G")
        k.mkdir("/g")
        k.write("/g/memory.limit_in_bytes", "8M")
        first = k.spawn("/g")
        keep.append([_Pad() for _ in range(pad)])
        second = k.spawn("/g")
        for t in (first, second):
            t.oom_score_adj = -1000  # nobody can be killed: chargers block
        first.touch_anon(6 * MiB)
        second.touch_anon(4 * MiB)  # blocks at the limit
        first.touch_anon(4 * MiB)  # blocks too
        assert first.state == second.state == "blocked"
        k.write("/g/memory.limit_in_bytes", "12M")  # room for one of them
        k.advance(1)
        outcomes.add((first.state, second.state))
        keep.append(k)
    assert len(outcomes) == 1, outcomes
