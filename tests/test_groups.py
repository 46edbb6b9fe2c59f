"""Group lifecycle and hierarchy: mkdir/rmdir/listdir, task lists, dying groups,
inherited settings, hierarchical limits and totals.

Kernel references: kernel/cgroup/cgroup.c cgroup_destroy_locked() (EBUSY with tasks or
online children; charges never block rmdir), kernel/cgroup/cgroup-v1.c
__cgroup1_procs_write() (ESRCH for an unknown pid), cgroup_pidlist_show() (sorted pids);
mm/memcontrol.c mem_cgroup_css_alloc() (swappiness and oom_kill_disable copied from the
parent; soft limit unlimited; move_charge_at_immigrate 0), mem_cgroup_css_offline()
(a group with charges stays as a dying memcg, its counters linked to the parent);
mm/memcontrol-v1.c memcg1_stat_format() (hierarchical_memory_limit = min over ancestors,
total_* over the subtree).
"""

from __future__ import annotations

import errno

import pytest

import memcg
from memcg.mm.page_counter import PAGE_COUNTER_MAX

PAGE = 4096
MiB = 1 << 20
UNLIMITED = PAGE_COUNTER_MAX * PAGE


def stat(k, group):
    return {ln.split()[0]: int(ln.split()[1]) for ln in k.read(f"{group}/memory.stat").splitlines()}


def num(k, path):
    return int(k.read(path))


def subdirs(k, path):
    return [n for n in k.listdir(path) if not n.startswith(("memory.", "cgroup.", "mempressure."))
            and n not in ("tasks", "notify_on_release", "release_agent")]


@pytest.fixture
def k():
    kernel = memcg.SimKernel(memory="1G")
    try:
        yield kernel
    finally:
        kernel.close()


# --- mkdir / rmdir / listdir --------------------------------------------------------------


def test_mkdir_listdir_rmdir(k):
    assert subdirs(k, "/") == []
    k.mkdir("/a")
    k.mkdir("/b")
    k.mkdir("/a/x")
    assert sorted(subdirs(k, "/")) == ["a", "b"]
    assert subdirs(k, "/a") == ["x"]
    assert "memory.limit_in_bytes" in k.listdir("/a/x")
    assert "memory.usage_in_bytes" in k.listdir("/")
    # root-only files
    assert "release_agent" in k.listdir("/") and "release_agent" not in k.listdir("/a")
    k.rmdir("/a/x")
    assert subdirs(k, "/a") == []
    with pytest.raises(FileNotFoundError):
        k.read("/a/x/memory.usage_in_bytes")
    k.rmdir("/a")
    k.rmdir("/b")
    assert subdirs(k, "/") == []
    assert k.debugfs()["memcg_ids_in_use"] == 1


def test_mkdir_errors(k):
    k.mkdir("/a")
    with pytest.raises(FileExistsError):
        k.mkdir("/a")
    with pytest.raises(FileExistsError):
        k.mkdir("/memory.stat")  # a file of that name exists
    with pytest.raises(FileNotFoundError):
        k.mkdir("/nope/child")


def test_rmdir_errors(k):
    with pytest.raises(FileNotFoundError):
        k.rmdir("/nope")
    with pytest.raises(OSError) as e:
        k.rmdir("/")
    assert e.value.errno == errno.EBUSY
    k.mkdir("/a")
    with pytest.raises(NotADirectoryError):
        k.rmdir("/a/memory.stat")


def test_rmdir_ebusy_with_a_task(k):
    k.mkdir("/a")
    t = k.spawn("/a")
    with pytest.raises(OSError) as e:
        k.rmdir("/a")
    assert e.value.errno == errno.EBUSY
    assert "a" in subdirs(k, "/")
    t.exit()
    k.rmdir("/a")
    assert "a" not in subdirs(k, "/")


def test_rmdir_ebusy_with_a_child(k):
    k.mkdir("/a")
    k.mkdir("/a/b")
    with pytest.raises(OSError) as e:
        k.rmdir("/a")
    assert e.value.errno == errno.EBUSY
    k.rmdir("/a/b")
    k.rmdir("/a")


def test_rmdir_not_blocked_by_a_dying_child(k):
    k.mkdir("/a")
    k.mkdir("/a/b")
    t = k.spawn("/a/b")
    t.read_file("f", 1 * MiB)
    t.exit()
    k.rmdir("/a/b")
    assert k.debugfs()["dying_groups"] == 1
    k.rmdir("/a")  # only online children count
    assert k.debugfs()["dying_groups"] == 2


def test_rmdir_with_charges_succeeds(k):
    k.mkdir("/a")
    t = k.spawn("/a")
    t.touch_anon(1 * MiB)
    t.read_file("f", 1 * MiB)
    t.move("/")
    k.rmdir("/a")  # charges never block rmdir
    assert "a" not in subdirs(k, "/")


# --- tasks and cgroup.procs ----------------------------------------------------------------


def test_tasks_and_procs_list_pids_sorted(k):
    k.mkdir("/a")
    k.mkdir("/b")
    t1 = k.spawn("/b")
    t2 = k.spawn("/a")
    t3 = k.spawn("/b")
    t1.move("/a")  # joins /a after t2 but lists first (smaller pid)
    assert t1.pid < t2.pid < t3.pid
    assert k.read("/a/cgroup.procs") == f"{t1.pid}\n{t2.pid}\n"
    assert k.read("/a/tasks") == f"{t1.pid}\n{t2.pid}\n"
    assert k.read("/b/cgroup.procs") == f"{t3.pid}\n"
    t2.exit()
    assert k.read("/a/cgroup.procs") == f"{t1.pid}\n"
    k.mkdir("/c")
    assert k.read("/c/cgroup.procs") == ""


def test_writing_a_pid_to_cgroup_procs_moves_the_task(k):
    k.mkdir("/a")
    k.mkdir("/b")
    t = k.spawn("/a")
    k.write("/b/cgroup.procs", f"{t.pid}\n")
    assert k.read("/b/cgroup.procs") == f"{t.pid}\n"
    assert k.read("/a/cgroup.procs") == ""
    t.touch_anon(1 * MiB)
    assert stat(k, "/b")["rss"] == 1 * MiB
    assert stat(k, "/a")["rss"] == 0
    k.write("/a/tasks", str(t.pid))
    assert k.read("/a/tasks") == f"{t.pid}\n"
    k.write("/cgroup.procs", str(t.pid))
    assert t.pid in [int(p) for p in k.read("/cgroup.procs").split()]
    assert k.read("/a/tasks") == ""


@pytest.mark.parametrize("text, err", [
    ("999999", errno.ESRCH), ("-5", errno.EINVAL), ("abc", errno.EINVAL), ("12x", errno.EINVAL),
])
def test_cgroup_procs_write_errors(k, text, err):
    k.mkdir("/a")
    with pytest.raises(OSError) as e:
        k.write("/a/cgroup.procs", text)
    assert e.value.errno == err


def test_cgroup_procs_exited_task_is_esrch(k):
    k.mkdir("/a")
    t = k.spawn("/")
    t.exit()
    with pytest.raises(OSError) as e:
        k.write("/a/cgroup.procs", str(t.pid))
    assert e.value.errno == errno.ESRCH


def test_fork_child_in_same_group(k):
    k.mkdir("/a")
    t = k.spawn("/a")
    c = t.fork()
    assert c.pid != t.pid
    assert k.read("/a/cgroup.procs") == "".join(f"{p}\n" for p in sorted((t.pid, c.pid)))
    c.touch_anon(1 * MiB)
    assert stat(k, "/a")["rss"] == 1 * MiB


# --- dying groups --------------------------------------------------------------------------


def test_removed_group_with_page_cache_lingers_as_dying(k):
    k.mkdir("/p")
    k.mkdir("/p/c")
    t = k.spawn("/p/c")
    t.read_file("f", 4 * MiB)
    t.move("/p")
    ids_before = k.debugfs()["memcg_ids_in_use"]
    # one pgpgin per folio (mm/memcontrol.c: memcg_check_events after the folio's
    # charge): 4 MiB read in readahead folios is 400 of them
    pgpgin = stat(k, "/p/c")["pgpgin"]
    assert pgpgin == 400
    k.rmdir("/p/c")
    assert "c" not in subdirs(k, "/p")
    assert k.debugfs()["dying_groups"] == 1
    assert k.debugfs()["memcg_ids_in_use"] == ids_before  # its id is still held
    # its charge still counts in the parent, with the child's statistics that /p paid
    # for at the mkdir (mem_cgroup_css_alloc: 3 pages of kmem out of a 64-page batch);
    # the rest of that batch is gone: the offline's drain_all_stock(child) finds the
    # child in a slot of this CPU's stock and drains the whole stock, /p's slot too
    # (mm/memcontrol.c 6.18: is_memcg_drain_needed, drain_stock_fully).  The real
    # kernel shows 4M + 7 pages here, its Python worker's own pages included.
    assert num(k, "/p/memory.usage_in_bytes") == 4 * MiB + 3 * 4096
    s = stat(k, "/p")
    assert s["cache"] == 0 and s["total_cache"] == 4 * MiB
    # a new group of the same name meanwhile is a different, empty group
    k.mkdir("/p/c")
    assert num(k, "/p/c/memory.usage_in_bytes") == 0
    assert stat(k, "/p/c")["cache"] == 0
    assert k.debugfs()["dying_groups"] == 1
    # the parent's force_empty reclaims the dying child's pages, and it is freed
    k.write("/p/memory.force_empty", "0")
    assert k.debugfs()["dying_groups"] == 0
    # left: the new /p/c's statistics (3 pages of kmem), and 2 pages the freed child's
    # statistics gave back to /p's stock after force_empty had drained it
    assert num(k, "/p/memory.kmem.usage_in_bytes") == 3 * PAGE
    assert num(k, "/p/memory.usage_in_bytes") == 5 * PAGE
    assert stat(k, "/p")["total_cache"] == 0
    # its event counts are kept for the ancestors
    assert stat(k, "/p")["total_pgpgin"] == pgpgin
    assert k.debugfs()["memcg_ids_in_use"] == ids_before


def test_dying_group_freed_when_its_last_page_goes(k):
    k.mkdir("/c")
    t = k.spawn("/c")
    t.read_file("f", 1 * MiB)
    t.move("/")
    k.rmdir("/c")
    assert k.debugfs()["dying_groups"] == 1
    t.unlink("f")
    assert k.debugfs()["dying_groups"] == 0


def test_dying_group_without_charges_goes_at_once(k):
    k.mkdir("/c")
    t = k.spawn("/c")
    t.touch_anon(1 * MiB)
    t.exit()  # anon freed; only the stock was left, and rmdir drains it
    k.rmdir("/c")
    assert k.debugfs()["dying_groups"] == 0


def test_dying_group_pages_reclaimed_by_parent_limit(k):
    k.mkdir("/p")
    k.mkdir("/p/c")
    t = k.spawn("/p/c")
    t.read_file("old", 8 * MiB)
    t.move("/p")
    k.rmdir("/p/c")
    assert k.debugfs()["dying_groups"] == 1
    k.write("/p/memory.limit_in_bytes", "4M")
    t.read_file("new", 4 * MiB)
    assert num(k, "/p/memory.usage_in_bytes") <= 4 * MiB
    assert k.debugfs()["dying_groups"] == 0
    assert stat(k, "/p")["cache"] > 0


def test_page_cache_of_a_dying_group_is_not_recharged_to_readers(k):
    """Pages stay charged to the dying group while cached, whoever reads them."""
    k.mkdir("/c")
    k.mkdir("/d")
    t = k.spawn("/c")
    t.read_file("f", 2 * MiB)
    t.move("/d")
    k.rmdir("/c")
    t.read_file("f", 2 * MiB)
    assert stat(k, "/d")["cache"] == 0
    assert k.debugfs()["dying_groups"] == 1


# --- inheritance ----------------------------------------------------------------------------


def test_settings_inherited_at_mkdir(k):
    k.mkdir("/p")
    k.write("/p/memory.swappiness", "17")
    k.write("/p/memory.oom_control", "1")
    k.write("/p/memory.soft_limit_in_bytes", "8M")
    k.write("/p/memory.limit_in_bytes", "64M")
    k.mkdir("/p/c")
    assert k.read("/p/c/memory.swappiness") == "17\n"
    assert k.read("/p/c/memory.oom_control").startswith("oom_kill_disable 1\n")
    # not inherited: soft limit, hard limit, move_charge_at_immigrate
    assert num(k, "/p/c/memory.soft_limit_in_bytes") == UNLIMITED
    assert num(k, "/p/c/memory.limit_in_bytes") == UNLIMITED
    assert k.read("/p/c/memory.move_charge_at_immigrate") == "0\n"
    # a later change in the parent does not reach existing children
    k.write("/p/memory.swappiness", "90")
    assert k.read("/p/c/memory.swappiness") == "17\n"
    k.mkdir("/p/d")
    assert k.read("/p/d/memory.swappiness") == "90\n"


def test_default_settings_of_a_new_group(k):
    k.mkdir("/g")
    assert k.read("/g/memory.swappiness") == "60\n"
    assert k.read("/g/memory.use_hierarchy") == "1\n"
    assert num(k, "/g/memory.limit_in_bytes") == UNLIMITED
    assert num(k, "/g/memory.memsw.limit_in_bytes") == UNLIMITED
    assert num(k, "/g/memory.usage_in_bytes") == 0


def test_move_charge_at_immigrate_only_accepts_zero(k):
    k.mkdir("/g")
    k.write("/g/memory.move_charge_at_immigrate", "0")
    for bad in ("1", "3"):
        with pytest.raises(OSError) as e:
            k.write("/g/memory.move_charge_at_immigrate", bad)
        assert e.value.errno == errno.EINVAL


def test_limit_on_root_is_einval(k):
    with pytest.raises(OSError) as e:
        k.write("/memory.limit_in_bytes", "1G")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        k.write("/memory.force_empty", "0")
    assert e.value.errno == errno.EINVAL


# --- hierarchy in memory.stat ----------------------------------------------------------------


def test_hierarchical_memory_limit_is_min_over_ancestors(k):
    for g in ("/a", "/a/b", "/a/b/c"):
        k.mkdir(g)
    k.write("/a/memory.limit_in_bytes", "64M")
    k.write("/a/b/memory.limit_in_bytes", "256M")
    assert stat(k, "/")["hierarchical_memory_limit"] == UNLIMITED
    assert stat(k, "/a")["hierarchical_memory_limit"] == 64 * MiB
    assert stat(k, "/a/b")["hierarchical_memory_limit"] == 64 * MiB
    assert stat(k, "/a/b/c")["hierarchical_memory_limit"] == 64 * MiB
    k.write("/a/b/c/memory.limit_in_bytes", "16M")
    assert stat(k, "/a/b/c")["hierarchical_memory_limit"] == 16 * MiB
    assert stat(k, "/a/b")["hierarchical_memory_limit"] == 64 * MiB
    k.write("/a/b/c/memory.memsw.limit_in_bytes", "32M")
    assert stat(k, "/a/b/c")["hierarchical_memsw_limit"] == 32 * MiB
    assert stat(k, "/a/b")["hierarchical_memsw_limit"] == UNLIMITED


def test_total_stats_sum_the_subtree(k):
    for g in ("/a", "/a/b", "/a/c", "/a/b/d", "/x"):
        k.mkdir(g)
    k.spawn("/a").touch_anon(1 * MiB)
    k.spawn("/a/b").read_file("f", 2 * MiB)
    k.spawn("/a/c").touch_anon(3 * MiB)
    k.spawn("/a/b/d").touch_shm("s", 4 * MiB)
    k.spawn("/x").touch_anon(5 * MiB)
    a = stat(k, "/a")
    assert a["rss"] == 1 * MiB and a["cache"] == 0
    assert a["total_rss"] == 4 * MiB
    assert a["total_cache"] == 6 * MiB
    assert a["total_shmem"] == 4 * MiB
    assert a["total_mapped_file"] == 4 * MiB
    b = stat(k, "/a/b")
    assert b["total_cache"] == 6 * MiB and b["cache"] == 2 * MiB and b["total_rss"] == 0
    root = stat(k, "/")
    assert root["total_rss"] == 9 * MiB
    assert root["total_cache"] == 6 * MiB
    for key in ("inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable"):
        assert a[f"total_{key}"] == sum(stat(k, g)[key] for g in ("/a", "/a/b", "/a/c", "/a/b/d"))
    # usage of an inner group covers its children's charges
    assert num(k, "/a/memory.usage_in_bytes") >= a["total_rss"] + a["total_cache"]


def test_root_usage_is_computed_from_stats(k):
    k.mkdir("/a")
    t = k.spawn("/a")
    t.touch_anon(3 * MiB)
    r = k.spawn("/")
    r.read_file("f", 2 * MiB)
    # the root's usage is cache + rss of everything, without the stock surplus
    assert num(k, "/memory.usage_in_bytes") == 5 * MiB
    assert stat(k, "/")["cache"] == 2 * MiB


def test_swapout_from_dying_group_charges_the_online_ancestor():
    with memcg.SimKernel(memory="1G", swap="1G") as k:
        k.mkdir("/p")
        k.mkdir("/p/c")
        t = k.spawn("/p/c")
        t.touch_anon(4 * MiB)
        t.move("/p")
        k.rmdir("/p/c")  # offline with no swap entries: its id is released
        assert k.debugfs()["dying_groups"] == 1
        k.write("/p/memory.force_empty", "0")  # swaps out every page of the subtree
        assert stat(k, "/p")["total_swap"] == 4 * MiB
        # left in memory: the task's page tables (2 PTE pages) and the page of its
        # mapping's objects, kernel memory that is not swapped (kernel_v1_behaviour.json
        # "a": 3 pages of kmem for 4 MiB of anon), and the 3 pages /p paid for the
        # child's statistics at the mkdir, back in /p's stocks once the child was freed
        assert num(k, "/p/memory.usage_in_bytes") == 6 * 4096
        assert num(k, "/p/memory.memsw.usage_in_bytes") == 4 * MiB + 6 * 4096
        # the swap entries belong to /p now, and nothing holds /p/c any more
        assert stat(k, "/p")["swap"] == 4 * MiB
        assert k.debugfs()["dying_groups"] == 0
