"""Reclaim: limit reclaim of a group's subtree, swap, limit lowering, global reclaim and
the v1 soft limit.

Kernel references: mm/vmscan.c try_to_free_mem_cgroup_pages(), shrink_node_memcgs(),
get_scan_count() (no swap or may_swap=0 -> file only; memcg reclaim with swappiness 0 ->
file only), folio_check_references(); mm/memcontrol-v1.c mem_cgroup_resize_max() (EBUSY
when reclaim makes no progress), memcg1_soft_limit_reclaim(); mm/page_alloc.c watermarks.
"""

from __future__ import annotations

import errno

import numpy as np
import pytest

import memcg

PAGE = 4096
MiB = 1 << 20


def stat(k, group):
    return {ln.split()[0]: int(ln.split()[1]) for ln in k.read(f"{group}/memory.stat").splitlines()}


def num(k, path):
    return int(k.read(path))


def oom_kills(k, group):
    lines = dict(ln.split() for ln in k.read(f"{group}/memory.oom_control").splitlines())
    return int(lines["oom_kill"])


def cached_folios(k, path: str) -> int:
    """The folios charged to the group: each of its pages is 1/(1 << order) of one."""
    gid = next(m.id for m in k.sys.memcgs.values() if m.path == path)
    orders = k.sys.mem.order[k.sys.mem.memcg == gid].astype(np.int64)
    return int(round((1.0 / (1 << orders)).sum()))


# --- limit reclaim of page cache -----------------------------------------------------------


def test_streaming_read_stays_within_limit():
    with memcg.SimKernel(memory="1G") as k:
        k.mkdir("/g")
        k.write("/g/memory.limit_in_bytes", "8M")
        t = k.spawn("/g")
        t.read_file("big", 64 * MiB)
        assert t.state == "running"
        assert oom_kills(k, "/g") == 0
        assert num(k, "/g/memory.usage_in_bytes") <= 8 * MiB
        assert num(k, "/g/memory.max_usage_in_bytes") <= 8 * MiB
        assert num(k, "/g/memory.failcnt") > 0
        s = stat(k, "/g")
        # the cache fills the limit (minus what the last reclaim round freed)
        assert 6 * MiB <= s["cache"] <= 8 * MiB
        # pgpgin/pgpgout count folios (6.18 reads ext4 files in readahead folios,
        # mm/readahead.c page_cache_ra_order): fewer events than pages, and the folios
        # charged less those uncharged are the folios still cached
        assert s["pgpgin"] < 64 * MiB // PAGE
        assert s["pgpgin"] - s["pgpgout"] == cached_folios(k, "/g")
        assert s["rss"] == 0


def test_second_read_activates_pages():
    with memcg.SimKernel(memory="1G") as k:
        k.mkdir("/g")
        t = k.spawn("/g")
        t.read_file("small", 1 * MiB)
        s = stat(k, "/g")
        assert s["inactive_file"] == 1 * MiB and s["active_file"] == 0
        # first access sets PG_referenced only; the second promotes (folio_mark_accessed)
        t.read_file("small", 1 * MiB)
        s = stat(k, "/g")
        assert s["active_file"] == 1 * MiB and s["inactive_file"] == 0
        assert s["cache"] == 1 * MiB


def test_limit_reclaim_spares_siblings_and_takes_from_children():
    with memcg.SimKernel(memory="2G") as k:
        for g in ("/s", "/p", "/p/c"):
            k.mkdir(g)
        k.spawn("/s").read_file("sibling", 4 * MiB)
        k.spawn("/p/c").read_file("child", 4 * MiB)
        k.write("/p/memory.limit_in_bytes", "8M")
        t = k.spawn("/p")
        t.read_file("big", 32 * MiB)
        assert t.state == "running"
        assert stat(k, "/s")["cache"] == 4 * MiB  # the sibling is outside the subtree
        assert stat(k, "/p/c")["cache"] < 4 * MiB  # the child's pages were reclaimed
        assert stat(k, "/p/c")["pgpgout"] > 0
        assert num(k, "/p/memory.usage_in_bytes") <= 8 * MiB
        assert num(k, "/p/memory.failcnt") > 0
        assert num(k, "/p/c/memory.failcnt") == 0  # the limit was hit at /p, not at /p/c


def test_child_limit_reclaims_only_the_child():
    with memcg.SimKernel(memory="2G") as k:
        for g in ("/p", "/p/a", "/p/b"):
            k.mkdir(g)
        k.spawn("/p").read_file("parent-own", 4 * MiB)
        k.spawn("/p/b").read_file("b", 4 * MiB)
        k.write("/p/a/memory.limit_in_bytes", "4M")
        k.spawn("/p/a").read_file("a", 32 * MiB)
        assert stat(k, "/p")["cache"] == 4 * MiB
        assert stat(k, "/p/b")["cache"] == 4 * MiB
        assert stat(k, "/p/a")["cache"] <= 4 * MiB
        assert num(k, "/p/memory.failcnt") == 0


# --- anon, swap, memsw ------------------------------------------------------------------------


def test_anon_without_swap_is_not_reclaimed_oom_instead():
    with memcg.SimKernel(memory="1G") as k:
        k.mkdir("/g")
        k.write("/g/memory.limit_in_bytes", "8M")
        t = k.spawn("/g")
        t.touch_anon(16 * MiB)
        assert t.state == "oom_killed"
        assert oom_kills(k, "/g") == 1
        s = stat(k, "/g")
        assert s["swap"] == 0
        assert s["rss"] == 0  # the victim's memory is gone


def test_anon_goes_to_swap_when_there_is_swap():
    with memcg.SimKernel(memory="1G", swap="1G") as k:
        k.mkdir("/g")
        k.write("/g/memory.limit_in_bytes", "8M")
        t = k.spawn("/g")
        t.touch_anon(16 * MiB)
        assert t.state == "running"
        assert oom_kills(k, "/g") == 0
        usage = num(k, "/g/memory.usage_in_bytes")
        memsw = num(k, "/g/memory.memsw.usage_in_bytes")
        s = stat(k, "/g")
        assert usage <= 8 * MiB
        assert memsw > usage
        assert s["swap"] > 0
        assert s["rss"] + s["swap"] == 16 * MiB
        # memsw counts exactly the swapped pages on top of memory usage
        assert memsw - usage == s["swap"]
        # freeing the mapping frees swap entries too
        t.free_anon(16 * MiB)
        s = stat(k, "/g")
        assert s["swap"] == 0 and s["rss"] == 0
        assert num(k, "/g/memory.memsw.usage_in_bytes") == num(k, "/g/memory.usage_in_bytes")


def test_memsw_limit_equal_to_memory_limit_means_oom_not_swap():
    with memcg.SimKernel(memory="1G", swap="1G") as k:
        k.mkdir("/g")
        k.write("/g/memory.limit_in_bytes", "8M")
        k.write("/g/memory.memsw.limit_in_bytes", "8M")
        t = k.spawn("/g")
        t.touch_anon(16 * MiB)
        assert t.state == "oom_killed"
        assert oom_kills(k, "/g") == 1
        assert stat(k, "/g")["swap"] == 0
        assert num(k, "/g/memory.memsw.failcnt") > 0


def test_memsw_limit_caps_swap_use():
    with memcg.SimKernel(memory="1G", swap="1G") as k:
        k.mkdir("/g")
        k.write("/g/memory.limit_in_bytes", "8M")
        k.write("/g/memory.memsw.limit_in_bytes", "12M")
        t = k.spawn("/g")
        t.touch_anon(10 * MiB)
        assert t.state == "running"
        assert num(k, "/g/memory.memsw.usage_in_bytes") <= 12 * MiB
        assert stat(k, "/g")["swap"] > 0
        t2 = k.spawn("/g")
        t2.touch_anon(8 * MiB)  # 18M of anon cannot fit in 12M memsw
        assert "oom_killed" in (t.state, t2.state)
        assert num(k, "/g/memory.memsw.usage_in_bytes") <= 12 * MiB


def test_memsw_limit_below_memory_limit_is_einval():
    with memcg.SimKernel(memory="1G", swap="1G") as k:
        k.mkdir("/g")
        k.write("/g/memory.limit_in_bytes", "8M")
        with pytest.raises(OSError) as e:
            k.write("/g/memory.memsw.limit_in_bytes", "4M")
        assert e.value.errno == errno.EINVAL
        k.write("/g/memory.memsw.limit_in_bytes", "16M")
        with pytest.raises(OSError) as e:
            k.write("/g/memory.limit_in_bytes", "32M")
        assert e.value.errno == errno.EINVAL
        assert num(k, "/g/memory.limit_in_bytes") == 8 * MiB


# --- lowering the limit ----------------------------------------------------------------------


def test_lowering_limit_below_usage_reclaims_page_cache():
    with memcg.SimKernel(memory="1G") as k:
        k.mkdir("/g")
        t = k.spawn("/g")
        t.read_file("f", 16 * MiB)
        assert stat(k, "/g")["cache"] == 16 * MiB
        k.write("/g/memory.limit_in_bytes", "4M")
        assert num(k, "/g/memory.limit_in_bytes") == 4 * MiB
        assert num(k, "/g/memory.usage_in_bytes") <= 4 * MiB
        assert stat(k, "/g")["cache"] <= 4 * MiB


def test_lowering_limit_below_unreclaimable_anon_is_ebusy():
    with memcg.SimKernel(memory="1G") as k:
        k.mkdir("/g")
        k.write("/g/memory.limit_in_bytes", "64M")
        t = k.spawn("/g")
        t.touch_anon(8 * MiB)
        t.read_file("f", 8 * MiB)
        with pytest.raises(OSError) as e:
            k.write("/g/memory.limit_in_bytes", "4M")
        assert e.value.errno == errno.EBUSY
        assert num(k, "/g/memory.limit_in_bytes") == 64 * MiB
        s = stat(k, "/g")
        assert s["rss"] == 8 * MiB  # anon untouched
        assert s["cache"] == 0  # the attempt did reclaim all the cache it could
        assert t.state == "running"  # a limit write never OOM-kills


def test_swappiness_zero_means_no_anon_reclaim_in_limit_reclaim():
    with memcg.SimKernel(memory="1G", swap="1G") as k:
        k.mkdir("/g")
        k.write("/g/memory.swappiness", "0")
        t = k.spawn("/g")
        t.touch_anon(4 * MiB)
        t.read_file("f", 4 * MiB)
        k.write("/g/memory.limit_in_bytes", "5M")  # reachable by dropping cache alone
        s = stat(k, "/g")
        assert s["swap"] == 0
        assert s["rss"] == 4 * MiB
        assert s["cache"] <= 1 * MiB
        with pytest.raises(OSError) as e:
            k.write("/g/memory.limit_in_bytes", "2M")  # would need swapping
        assert e.value.errno == errno.EBUSY
        assert stat(k, "/g")["swap"] == 0


def test_swappiness_zero_group_ooms_rather_than_swapping():
    with memcg.SimKernel(memory="1G", swap="1G") as k:
        k.mkdir("/g")
        k.write("/g/memory.swappiness", "0")
        k.write("/g/memory.limit_in_bytes", "8M")
        t = k.spawn("/g")
        t.touch_anon(16 * MiB)
        assert t.state == "oom_killed"
        assert stat(k, "/g")["swap"] == 0
        # the same workload with the default swappiness swaps instead
        k.mkdir("/h")
        k.write("/h/memory.limit_in_bytes", "8M")
        u = k.spawn("/h")
        u.touch_anon(16 * MiB)
        assert u.state == "running"
        assert stat(k, "/h")["swap"] > 0


# --- global reclaim ---------------------------------------------------------------------------


def test_global_reclaim_keeps_free_pages_above_min_watermark():
    with memcg.SimKernel(memory="64M") as k:
        k.mkdir("/a")
        k.mkdir("/b")
        ta, tb = k.spawn("/a"), k.spawn("/b")
        wm = k.debugfs()["watermarks"]
        assert 0 < wm["min"] < wm["low"] < wm["high"]
        for size in (32 * MiB, 64 * MiB, 96 * MiB):  # the files end up larger than RAM
            ta.read_file("fa", size)
            assert k.debugfs()["nr_free_pages"] >= wm["min"]
            tb.read_file("fb", size)
            assert k.debugfs()["nr_free_pages"] >= wm["min"]
        assert ta.state == tb.state == "running"
        assert k.debugfs()["global_oom_kills"] == 0
        assert oom_kills(k, "/a") == oom_kills(k, "/b") == 0
        # no group limit was involved: all of it was global reclaim
        assert num(k, "/a/memory.failcnt") == num(k, "/b/memory.failcnt") == 0
        total = stat(k, "/a")["cache"] + stat(k, "/b")["cache"]
        assert total < 64 * MiB
        assert stat(k, "/a")["pgpgout"] > 0 and stat(k, "/b")["pgpgout"] > 0


def test_soft_limit_group_loses_pages_first_under_global_pressure():
    with memcg.SimKernel(memory="64M") as k:
        for g in "ABC":
            k.mkdir(f"/{g}")
        k.write("/A/memory.soft_limit_in_bytes", "4M")
        k.spawn("/A").read_file("a", 20 * MiB)
        k.spawn("/B").read_file("b", 20 * MiB)
        assert stat(k, "/A")["cache"] == stat(k, "/B")["cache"] == 20 * MiB
        tc = k.spawn("/C")
        tc.read_file("c", 32 * MiB)  # the machine runs short: global reclaim
        a, b = stat(k, "/A")["cache"], stat(k, "/B")["cache"]
        assert a < 20 * MiB
        assert b == 20 * MiB  # within its (unlimited) soft limit: not touched yet
        assert a >= 4 * MiB  # soft reclaim stops near the soft limit


def test_without_soft_limits_global_reclaim_takes_from_everyone():
    """Control for the test above: with no soft limit both groups lose pages."""
    with memcg.SimKernel(memory="64M") as k:
        for g in "ABC":
            k.mkdir(f"/{g}")
        k.spawn("/A").read_file("a", 20 * MiB)
        k.spawn("/B").read_file("b", 20 * MiB)
        k.spawn("/C").read_file("c", 40 * MiB)
        assert stat(k, "/A")["cache"] < 20 * MiB
        assert stat(k, "/B")["cache"] < 20 * MiB


def test_reclaim_uses_the_swappiness_of_the_scanned_group():
    """3.17+: get_scan_count() takes the swappiness of the memcg whose lruvec is scanned,
    not the one whose limit was hit."""
    with memcg.SimKernel(memory="1G", swap="1G") as k:
        for g in ("/p", "/p/noswap", "/p/swap"):
            k.mkdir(g)
        k.write("/p/noswap/memory.swappiness", "0")
        assert k.read("/p/memory.swappiness") == "60\n"
        k.write("/p/memory.limit_in_bytes", "16M")
        keep = k.spawn("/p/noswap")
        keep.touch_anon(8 * MiB)
        other = k.spawn("/p/swap")
        other.touch_anon(16 * MiB)  # /p's limit: only /p/swap's anon may go to swap
        assert keep.state == other.state == "running"
        assert stat(k, "/p/noswap")["swap"] == 0
        assert stat(k, "/p/noswap")["rss"] == 8 * MiB
        assert stat(k, "/p/swap")["swap"] > 0
