"""Charging: the per-CPU charge stock, failcnt, max_usage and who pays for a page.

Kernel references: mm/memcontrol.c try_charge_memcg() / consume_stock() / refill_stock() /
drain_all_stock(), MEMCG_CHARGE_BATCH = 64 pages (include/linux/memcontrol.h, 6.1+);
mm/filemap.c filemap_add_folio() charges page cache at insertion to the inserting task's
memcg; mm/memcontrol-v1.c mem_cgroup_force_empty(), mem_cgroup_resize_max().
"""

from __future__ import annotations

import errno

import pytest

import memcg
from memcg.cgroup import cgroup_get_from_path
from memcg.mm.memcontrol import MEMCG_CHARGE_BATCH, stock_pages

PAGE = 4096
MiB = 1 << 20
BATCH = MEMCG_CHARGE_BATCH


def stat(k, group):
    return {ln.split()[0]: int(ln.split()[1]) for ln in k.read(f"{group}/memory.stat").splitlines()}


def num(k, path):
    return int(k.read(path))


def usage_pages(k, group):
    return num(k, f"{group}/memory.usage_in_bytes") // PAGE


@pytest.fixture
def k1():
    """One CPU, so every charge goes through the same stock."""
    k = memcg.SimKernel(memory="1G", cpus=1)
    k.mkdir("/a")
    try:
        yield k
    finally:
        k.close()


def test_batch_constant_is_6_1_value():
    assert BATCH == 64


def test_one_page_charges_a_whole_batch(k1):
    t = k1.spawn("/a")
    t.touch_anon(PAGE)
    assert usage_pages(k1, "/a") == BATCH
    s = stat(k1, "/a")
    assert s["rss"] == PAGE
    assert s["cache"] == 0
    assert stock_pages(k1.sys, cgroup_get_from_path(k1.sys, "/a")) == BATCH - 1
    # the next 63 pages come out of the stock: usage does not move
    t.touch_anon((BATCH - 1) * PAGE)
    assert usage_pages(k1, "/a") == BATCH
    assert stat(k1, "/a")["rss"] == BATCH * PAGE
    t.touch_anon(PAGE)
    assert usage_pages(k1, "/a") == 2 * BATCH


@pytest.mark.parametrize("n", [1, 63, 64, 65, 100, 128, 129, 1000, 4096])
def test_usage_is_rounded_up_to_the_batch(n):
    with memcg.SimKernel(memory="1G", cpus=1) as k:
        k.mkdir("/a")
        t = k.spawn("/a")
        t.touch_anon(n * PAGE)
        # a 2 MiB-aligned mapping (n a multiple of 512) also charges its page tables, one
        # PTE page per 2 MiB, and a page of its objects, as on the real kernel
        # (kernel_v1_behaviour.json "a": 1024 pages + 3 kmem pages, usage 1088 pages);
        # other mappings share a region with their neighbour ("b": no kmem)
        kmem = n // 512 + 1 if n % 512 == 0 else -(-n // 512) - 1
        assert usage_pages(k, "/a") == -(-(n + kmem) // BATCH) * BATCH
        assert stat(k, "/a")["rss"] == n * PAGE


def test_stock_is_per_cpu():
    """Two tasks on two CPUs each take their own batch."""
    with memcg.SimKernel(memory="1G", cpus=2) as k:
        k.mkdir("/a")
        t1, t2 = k.spawn("/a"), k.spawn("/a")
        assert t1.cpu != t2.cpu
        t1.touch_anon(PAGE)
        t2.touch_anon(PAGE)
        assert usage_pages(k, "/a") == 2 * BATCH
        assert stat(k, "/a")["rss"] == 2 * PAGE


def test_stock_drained_by_limit_write_below_usage(k1):
    t = k1.spawn("/a")
    t.touch_anon(PAGE)
    assert usage_pages(k1, "/a") == BATCH
    # the limit is below usage only because of the stock: the write drains it and succeeds
    k1.write("/a/memory.limit_in_bytes", str(2 * PAGE))
    assert num(k1, "/a/memory.limit_in_bytes") == 2 * PAGE
    assert usage_pages(k1, "/a") == 1
    assert stat(k1, "/a")["rss"] == PAGE


def test_stock_drained_by_force_empty(k1):
    t = k1.spawn("/a")
    t.touch_anon(10 * PAGE)
    assert usage_pages(k1, "/a") == BATCH
    k1.write("/a/memory.force_empty", "0")
    # anon cannot be reclaimed without swap, but the stock went back
    assert usage_pages(k1, "/a") == 10
    assert stock_pages(k1.sys, cgroup_get_from_path(k1.sys, "/a")) == 0


def test_stock_drained_by_rmdir(k1):
    k1.mkdir("/a/c")
    # /a paid for the child's statistics (mem_cgroup_css_alloc): 3 pages of a batch
    assert usage_pages(k1, "/a") == BATCH
    assert num(k1, "/a/memory.kmem.usage_in_bytes") == 3 * PAGE
    t = k1.spawn("/a/c")
    t.touch_anon(PAGE)
    t.free_anon(PAGE)
    # nothing is in use, but the stock still holds the rest of the batch
    assert usage_pages(k1, "/a/c") == BATCH - 1
    assert usage_pages(k1, "/a") == BATCH + BATCH - 1
    t.exit()
    k1.rmdir("/a/c")
    # the offline drained the CPU's stock (both groups' slots, 6.16+), then the
    # statistics were freed: 2 of their pages are back in /a's stock; the object stock
    # holds exactly 4096 bytes, and refill_obj_stock() gives back only more than a page
    assert usage_pages(k1, "/a") == 3
    assert num(k1, "/a/memory.kmem.usage_in_bytes") == PAGE
    assert k1.debugfs()["dying_groups"] == 0  # nothing left to keep it around


def test_failcnt_counts_failed_batch_attempts(k1):
    """100-page limit, 100 pages touched: every batch attempt past 64 pages hits the limit,
    then the single-page retry succeeds; nothing fails for good."""
    k1.write("/a/memory.limit_in_bytes", str(100 * PAGE))
    t = k1.spawn("/a")
    t.touch_anon(100 * PAGE)
    assert t.state == "running"
    assert stat(k1, "/a")["rss"] == 100 * PAGE
    assert usage_pages(k1, "/a") == 100
    # one failed 64-page attempt per page charged after the first batch
    assert num(k1, "/a/memory.failcnt") == 100 - BATCH
    assert "oom_kill 0" in k1.read("/a/memory.oom_control")
    k1.write("/a/memory.failcnt", "whatever")
    assert num(k1, "/a/memory.failcnt") == 0


def test_failcnt_zero_far_below_limit(k1):
    k1.write("/a/memory.limit_in_bytes", "64M")
    t = k1.spawn("/a")
    t.touch_anon(8 * MiB)
    assert num(k1, "/a/memory.failcnt") == 0


def test_max_usage_tracks_peak_and_resets_to_usage(k1):
    t = k1.spawn("/a")
    t.touch_anon(4 * MiB)
    peak = num(k1, "/a/memory.max_usage_in_bytes")
    assert peak >= num(k1, "/a/memory.usage_in_bytes") >= 4 * MiB
    t.free_anon(3 * MiB)
    usage = num(k1, "/a/memory.usage_in_bytes")
    assert usage < peak
    assert num(k1, "/a/memory.max_usage_in_bytes") == peak
    k1.write("/a/memory.max_usage_in_bytes", "0")
    assert num(k1, "/a/memory.max_usage_in_bytes") == usage
    assert num(k1, "/a/memory.memsw.max_usage_in_bytes") == peak  # only memory's was reset
    k1.write("/a/memory.memsw.max_usage_in_bytes", "1")
    assert num(k1, "/a/memory.memsw.max_usage_in_bytes") == num(k1, "/a/memory.memsw.usage_in_bytes")


def test_usage_equals_memsw_usage_without_swap(k1):
    t = k1.spawn("/a")
    t.touch_anon(3 * MiB)
    t.read_file("f", 2 * MiB)
    assert num(k1, "/a/memory.usage_in_bytes") == num(k1, "/a/memory.memsw.usage_in_bytes")


# --- who pays ----------------------------------------------------------------------------


@pytest.fixture
def k2():
    k = memcg.SimKernel(memory="1G", cpus=2)
    k.mkdir("/A")
    k.mkdir("/B")
    try:
        yield k
    finally:
        k.close()


def test_page_cache_charged_to_first_toucher(k2):
    ta, tb = k2.spawn("/A"), k2.spawn("/B")
    ta.read_file("shared", 2 * MiB)
    tb.read_file("shared", 2 * MiB)
    assert stat(k2, "/A")["cache"] == 2 * MiB
    assert stat(k2, "/B")["cache"] == 0
    # B reads more of the file: only the new part is B's
    tb.read_file("shared", 3 * MiB)
    assert stat(k2, "/A")["cache"] == 2 * MiB
    assert stat(k2, "/B")["cache"] == 1 * MiB


def test_evicted_page_cache_is_charged_to_the_next_reader(k2):
    ta, tb = k2.spawn("/A"), k2.spawn("/B")
    ta.read_file("shared", 2 * MiB)
    k2.write("/A/memory.force_empty", "0")
    assert stat(k2, "/A")["cache"] == 0
    assert num(k2, "/A/memory.usage_in_bytes") == 0
    tb.read_file("shared", 2 * MiB)
    assert stat(k2, "/B")["cache"] == 2 * MiB
    assert stat(k2, "/A")["cache"] == 0
    assert stat(k2, "/B")["workingset_refault_file"] == 2 * MiB // PAGE


def test_task_move_does_not_move_charges(k2):
    t = k2.spawn("/A")
    t.touch_anon(2 * MiB)
    t.read_file("f", 1 * MiB)
    usage_a = num(k2, "/A/memory.usage_in_bytes")
    t.move("/B")
    assert k2.read("/B/cgroup.procs") == f"{t.pid}\n"
    assert k2.read("/A/cgroup.procs") == ""
    assert stat(k2, "/A")["rss"] == 2 * MiB
    assert stat(k2, "/A")["cache"] == 1 * MiB
    assert num(k2, "/A/memory.usage_in_bytes") == usage_a
    assert num(k2, "/B/memory.usage_in_bytes") == 0
    # new memory goes to the new group; freeing the old uncharges the old group
    t.touch_anon(1 * MiB)
    assert stat(k2, "/B")["rss"] == 1 * MiB
    t.exit()
    assert stat(k2, "/A")["rss"] == 0
    assert stat(k2, "/B")["rss"] == 0


def test_exit_frees_anon_but_page_cache_stays(k2):
    t = k2.spawn("/A")
    t.touch_anon(4 * MiB)
    t.read_file("f", 2 * MiB)
    t.exit()
    assert t.state == "exited"
    s = stat(k2, "/A")
    assert s["rss"] == 0
    assert s["cache"] == 2 * MiB
    assert num(k2, "/A/memory.usage_in_bytes") >= 2 * MiB
    with pytest.raises(OSError) as e:
        t.touch_anon(PAGE)
    assert e.value.errno == errno.ESRCH


def test_free_anon_uncharges(k2):
    t = k2.spawn("/A")
    t.touch_anon(4 * MiB)
    before = num(k2, "/A/memory.usage_in_bytes")
    t.free_anon(3 * MiB)
    assert stat(k2, "/A")["rss"] == 1 * MiB
    assert before - num(k2, "/A/memory.usage_in_bytes") == 3 * MiB
    s = stat(k2, "/A")
    assert s["pgpgout"] == 3 * MiB // PAGE
    assert s["pgpgin"] == 4 * MiB // PAGE


def test_mlocked_anon_is_unevictable_and_never_reclaimed():
    with memcg.SimKernel(memory="1G", cpus=1, swap="1G") as k:
        k.mkdir("/A")
        t = k.spawn("/A")
        t.touch_anon(4 * MiB, locked=True)
        s = stat(k, "/A")
        assert s["unevictable"] == 4 * MiB
        assert s["rss"] == 4 * MiB
        assert s["inactive_anon"] == s["active_anon"] == 0
        k.write("/A/memory.force_empty", "0")
        assert stat(k, "/A")["unevictable"] == 4 * MiB
        with pytest.raises(OSError) as e:
            k.write("/A/memory.limit_in_bytes", "2M")
        assert e.value.errno == errno.EBUSY
        s = stat(k, "/A")
        assert s["unevictable"] == 4 * MiB and s["swap"] == 0
        # evictable anon beside it does go to swap
        t.touch_anon(4 * MiB)
        k.write("/A/memory.limit_in_bytes", "5M")
        s = stat(k, "/A")
        assert s["unevictable"] == 4 * MiB
        assert s["swap"] >= 3 * MiB
        assert num(k, "/A/memory.usage_in_bytes") <= 5 * MiB


def test_shm_counts_as_cache_shmem_and_mapped_not_rss(k2):
    t = k2.spawn("/A")
    t.touch_shm("seg", 3 * MiB)
    s = stat(k2, "/A")
    assert s["cache"] == 3 * MiB
    assert s["shmem"] == 3 * MiB
    assert s["mapped_file"] == 3 * MiB
    assert s["rss"] == 0
    # swap-backed: on the anon LRU
    assert s["inactive_anon"] + s["active_anon"] == 3 * MiB
    assert s["inactive_file"] + s["active_file"] == 0
    # a second group mapping it pays nothing
    tb = k2.spawn("/B")
    tb.touch_shm("seg", 3 * MiB)
    assert stat(k2, "/B")["cache"] == 0
    t.exit()
    tb.exit()
    s = stat(k2, "/A")
    assert s["cache"] == 3 * MiB and s["shmem"] == 3 * MiB and s["mapped_file"] == 0
    k2.spawn("/A").unlink("seg")
    s = stat(k2, "/A")
    assert s["cache"] == 0 and s["shmem"] == 0


def test_write_file_makes_dirty_page_cache(k2):
    t = k2.spawn("/A")
    t.write_file("log", 2 * MiB)
    s = stat(k2, "/A")
    assert s["dirty"] == 2 * MiB
    assert s["cache"] == 2 * MiB
    assert s["rss"] == 0
    # writing pages that a read brought in dirties them too
    t.read_file("data", 1 * MiB)
    assert stat(k2, "/A")["dirty"] == 2 * MiB
    t.write_file("data", 1 * MiB)
    assert stat(k2, "/A")["dirty"] == 3 * MiB


def test_unlink_frees_page_cache(k2):
    t = k2.spawn("/A")
    t.read_file("f", 4 * MiB)
    t.write_file("g", 1 * MiB)
    free_before = k2.debugfs()["nr_free_pages"]
    t.unlink("f")
    s = stat(k2, "/A")
    assert s["cache"] == 1 * MiB
    assert k2.debugfs()["nr_free_pages"] == free_before + 4 * MiB // PAGE
    t.unlink("g")
    s = stat(k2, "/A")
    assert s["cache"] == 0 and s["dirty"] == 0
    with pytest.raises(FileNotFoundError):
        t.unlink("g")


def test_charges_propagate_to_ancestors(k2):
    k2.mkdir("/A/c")
    t = k2.spawn("/A/c")
    t.touch_anon(2 * MiB)
    # and /A's own batch, from which it paid for /A/c's statistics at the mkdir
    assert num(k2, "/A/memory.usage_in_bytes") == num(k2, "/A/c/memory.usage_in_bytes") + 64 * PAGE
    assert stat(k2, "/A")["rss"] == 0
    assert stat(k2, "/A")["total_rss"] == 2 * MiB


def test_unlinked_shm_is_freed_at_last_unmap(k2):
    t = k2.spawn("/A")
    t.touch_shm("seg", 2 * MiB)
    t.unlink("seg")  # still mapped: the pages live on while t maps them
    assert stat(k2, "/A")["shmem"] == 2 * MiB
    free_before = k2.debugfs()["nr_free_pages"]
    t.exit()  # last unmap: the inode is evicted and its pages freed
    s = stat(k2, "/A")
    assert s["shmem"] == 0 and s["cache"] == 0
    # ... and the 9 radix_tree_node objects of its i_pages (8 leaves + the top node),
    # whose 2-page slab then goes back too
    assert k2.debugfs()["nr_free_pages"] == free_before + 2 * MiB // PAGE + 2
