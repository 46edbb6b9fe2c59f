"""Per-group slab caches, kmemcg ids, the arrays they index and list_lru (document 004).

The three policies of SimKernel(kmemcg_id_policy=...): "keep" (a removed group keeps
its id until it is freed), "reclaim" (removed groups are shrunk before the arrays
grow) and "reparent" (list_lru items go to the parent and the id is freed at removal,
the kernel's choice).
"""

from __future__ import annotations

import errno

import pytest

import memcg
from memcg.cgroup import cgroup_get_from_path
from memcg.mm.list_lru import list_lru_count_one
from memcg.scenario import load_scenario, run_scenario
from memcg.mm.slab import (MEMCG_CACHES_MAX_SIZE, MEMCG_CACHES_MIN_SIZE, MemcgCacheIds,
                        memcg_caches_array_size)

PAGE = 4096


def churn(k, n, files=4, fs="ext4", parent="/churn"):
    """n rounds of: make a group, create files in it from a task, remove the group."""
    if parent.strip("/") not in k.sys.root.online_children:
        k.mkdir(parent)
        k.write(f"{parent}/memory.kmem.limit_in_bytes", "1G")  # 3.8: children account
    t = k.spawn(parent)
    for i in range(n):
        path = f"{parent}/g{i}"
        k.mkdir(path)
        t.move(path)
        t.create_files(files, fs=fs)
        t.move(parent)
        k.rmdir(path)
    return t


def debugfs(k):
    d = k.debugfs()
    return d["kmemcg_id_array_size"], d["kmemcg_ids_in_use"], d["dying_groups"]


# --------------------------------------------------------------------------- ids and array sizes

def test_array_size_rule():
    assert MEMCG_CACHES_MIN_SIZE == 4 and MEMCG_CACHES_MAX_SIZE == 65535
    assert [memcg_caches_array_size(n) for n in (0, 1, 2, 3, 5, 11, 40000)] == \
        [0, 4, 4, 6, 10, 22, 65535]


def test_ida_gives_the_lowest_free_id_and_runs_out():
    ids = MemcgCacheIds()
    got = [ids.ida_get() for _ in range(5)]
    assert got == [0, 1, 2, 3, 4]
    ids.ida_put(1)
    ids.ida_put(3)
    assert ids.ida_get() == 1 and ids.in_use == 4
    ids._next = MEMCG_CACHES_MAX_SIZE
    ids._free.clear()
    with pytest.raises(OSError) as e:
        ids.ida_get()
    assert e.value.errno == errno.ENOSPC


def test_arrays_grow_together_as_ids_grow():
    k = memcg.SimKernel(memory="1G", kmemcg_id_policy="keep")
    sizes = []
    for i in range(12):
        k.mkdir(f"/g{i}")
        sizes.append(k.debugfs()["kmemcg_id_array_size"])
    # ids 0..11: 4 while they fit, then 2 * (id + 1)
    assert sizes == [4, 4, 4, 4, 10, 10, 10, 10, 10, 10, 22, 22]
    sys = k.sys
    assert all(len(c.memcg_caches) == 22 for c in sys.slab.caches.values())
    assert all(len(lru.memcg_lrus) == 22 for lru in sys.list_lrus)
    assert k.debugfs()["kmemcg_ids_in_use"] == 12


def test_38_only_accounting_groups_take_ids():
    k = memcg.SimKernel(memory="1G", semantics="3.8")
    k.mkdir("/plain")
    assert debugfs(k)[:2] == (0, 0)
    k.mkdir("/limited")
    k.write("/limited/memory.kmem.limit_in_bytes", "64M")
    k.mkdir("/limited/child")  # accounted because its parent is
    assert debugfs(k)[:2] == (4, 2)
    assert cgroup_get_from_path(k.sys, "/limited/child").kmemcg_id == 1


# --------------------------------------------------------------------------- per-group caches (3.8)

def test_38_per_group_cache_copies_are_made_on_first_charge():
    k = memcg.SimKernel(memory="1G", semantics="3.8")
    k.mkdir("/g")
    k.write("/g/memory.kmem.limit_in_bytes", "64M")
    t = k.spawn("/")
    t.move("/g")
    k.mkdir("/plain")
    with pytest.raises(OSError) as e:  # a group that does not account: EIO
        k.read("/plain/memory.kmem.slabinfo")
    assert e.value.errno == errno.EIO
    dentry = k.sys.slab.caches["dentry"]
    g = cgroup_get_from_path(k.sys, "/g")
    assert dentry.memcg_caches[g.kmemcg_id] is None
    t.mkdirs(1, fs="tmpfs")
    copy = dentry.memcg_caches[g.kmemcg_id]
    assert copy is not None and copy.name == f"dentry({g.kmemcg_id}:g)" and copy.memcg is g
    # the first allocation came from the root cache, uncharged, while the copy was made
    assert copy.nr_objects == 0 and dentry.nr_objects == 1
    t.mkdirs(30, fs="tmpfs")
    assert copy.nr_objects == 30 and copy.nr_slabs == 2  # 21 dentries a slab page
    info = k.read("/g/memory.kmem.slabinfo").splitlines()
    assert info[0] == "slabinfo - version: 2.1"
    row = next(ln for ln in info if ln.startswith(f"dentry({g.kmemcg_id}:g)")).split()
    assert row[1:6] == ["30", "42", "192", "21", "1"]


def test_38_slab_pages_are_charged_whole_and_freed_when_empty():
    k = memcg.SimKernel(memory="1G", semantics="3.8")
    k.mkdir("/g")
    k.write("/g/memory.kmem.limit_in_bytes", "64M")
    t = k.spawn("/")
    t.move("/g")
    t.fork()  # makes the copies (its own objects come from the root caches)
    base = int(k.read("/g/memory.kmem.usage_in_bytes"))
    child = t.fork()
    task_struct = k.sys.slab.caches["task_struct"].memcg_caches[cgroup_get_from_path(k.sys, "/g").kmemcg_id]
    assert task_struct.nr_slabs == 1  # a slab of 8 pages for 7 task_structs
    grown = int(k.read("/g/memory.kmem.usage_in_bytes")) - base
    assert grown % PAGE == 0 and grown >= 8 * PAGE + 8192  # the slab and the 8K stack
    child.exit()
    assert task_struct.nr_slabs == 0
    assert int(k.read("/g/memory.kmem.usage_in_bytes")) == base


def test_today_has_no_per_group_copies():
    k = memcg.SimKernel(memory="1G")
    k.mkdir("/g")
    t = k.spawn("/")
    t.move("/g")
    t.mkdirs(100, fs="tmpfs")
    assert all(c is None for cache in k.sys.slab.caches.values() for c in cache.memcg_caches)
    assert int(k.read("/g/memory.kmem.usage_in_bytes")) >= 100 * 960  # charged per byte


# --------------------------------------------------------------------------- list_lru

def test_unused_ext4_dentries_wait_on_their_groups_list_tmpfs_ones_are_pinned():
    k = memcg.SimKernel(memory="1G")
    k.mkdir("/g")
    t = k.spawn("/")
    t.move("/g")
    t.mkdirs(10, fs="ext4")
    t.mkdirs(10, fs="tmpfs")
    g = cgroup_get_from_path(k.sys, "/g")
    assert list_lru_count_one(k.sys.super_blocks["ext4"].s_dentry_lru, g) == 10
    assert list_lru_count_one(k.sys.super_blocks["tmpfs"].s_dentry_lru, g) == 0


def test_reclaim_of_a_group_shrinks_its_dentries():
    k = memcg.SimKernel(memory="1G")
    k.mkdir("/g")
    t = k.spawn("/")
    t.move("/g")
    t.create_files(2000, fs="ext4")
    before = int(k.read("/g/memory.kmem.usage_in_bytes"))
    k.write("/g/memory.force_empty", "0")
    g = cgroup_get_from_path(k.sys, "/g")
    assert list_lru_count_one(k.sys.super_blocks["ext4"].s_dentry_lru, g) == 0
    assert int(k.read("/g/memory.kmem.usage_in_bytes")) < before // 10


@pytest.mark.parametrize("semantics", ["6.18", "3.8"])
def test_reparent_moves_list_lru_items_and_frees_the_id_at_once(semantics):
    k = memcg.SimKernel(memory="1G", semantics=semantics)
    k.mkdir("/p")
    k.write("/p/memory.kmem.limit_in_bytes", "1G")
    k.mkdir("/p/c")
    t = k.spawn("/p")
    t.move("/p/c")
    t.create_files(8, fs="ext4")
    p, c = cgroup_get_from_path(k.sys, "/p"), cgroup_get_from_path(k.sys, "/p/c")
    lru = k.sys.super_blocks["ext4"].s_dentry_lru
    # 3.8: the group's first dentry came from the root cache, uncharged: on the root list
    mine = 8 - (semantics == "3.8")
    assert list_lru_count_one(lru, c) == mine and list_lru_count_one(lru, p) == 0
    c_id = c.kmemcg_id
    t.move("/p")
    k.rmdir("/p/c")
    assert list_lru_count_one(lru, p) == mine
    assert lru.memcg_lrus[c_id] is None
    assert c.kmemcg_id == p.kmemcg_id  # a dying child looks its lists up as the parent's
    assert k.debugfs()["kmemcg_ids_in_use"] == 1
    # today the parent's reclaim now reaches the child's dentries; 3.8 shrank slab only
    # in global reclaim
    k.write("/p/memory.force_empty", "0")
    assert list_lru_count_one(lru, p) == (mine if semantics == "3.8" else 0)


def test_keep_holds_the_id_until_the_group_is_freed():
    k = memcg.SimKernel(memory="1G", kmemcg_id_policy="keep")
    churn(k, 10, fs="tmpfs")
    assert debugfs(k) == (22, 11, 10)  # every removed group is dying with its id
    # tmpfs dentries cannot be reclaimed: the groups stay until the files are deleted
    k.write("/churn/memory.force_empty", "0")
    assert debugfs(k) == (22, 11, 10)


def test_keep_grows_the_arrays_reparent_does_not():
    sizes = {}
    for policy in ("keep", "reclaim", "reparent"):
        k = memcg.SimKernel(memory="1G", kmemcg_id_policy=policy)
        churn(k, 300)
        sizes[policy] = debugfs(k)
    assert sizes["keep"] == (382, 301, 300)
    assert sizes["reclaim"][0] == 4 and sizes["reclaim"][1] <= 4
    assert sizes["reparent"][:2] == (4, 1)


def test_reclaim_frees_removed_groups_before_growing():
    k = memcg.SimKernel(memory="1G", kmemcg_id_policy="reclaim")
    churn(k, 3, fs="ext4", files=1)
    dying_before = debugfs(k)[2]
    assert dying_before >= 2  # ids 1-3 held by removed groups: the array is full
    k.mkdir("/churn/next")  # id 4 would not fit: the removed groups are shrunk first
    assert debugfs(k)[0] == 4
    assert debugfs(k)[2] < dying_before


def test_reclaim_cannot_free_what_cannot_be_reclaimed():
    k = memcg.SimKernel(memory="1G", kmemcg_id_policy="reclaim")
    churn(k, 10, fs="tmpfs")  # pinned dentries: shrinking frees nothing
    assert debugfs(k) == (22, 11, 10)


def test_today_reparenting_lets_a_group_with_only_kernel_objects_go():
    k = memcg.SimKernel(memory="1G")
    churn(k, 20, fs="tmpfs")
    assert debugfs(k) == (4, 1, 0)
    assert int(k.read("/churn/memory.kmem.usage_in_bytes")) >= 20 * 4 * 960


def test_38_reparent_frees_ids_but_kernel_memory_keeps_the_groups():
    """4.0-5.8: list_lru items and ids move at once, but slab pages still charge the dead
    group (document 004's option 2: "it doesn't move charges, only list_lru elements")."""
    k = memcg.SimKernel(memory="1G", semantics="3.8")
    churn(k, 20, fs="tmpfs")
    assert debugfs(k) == (4, 1, 20)


def test_keep_runs_out_of_ids():
    k = memcg.SimKernel(memory="1G", kmemcg_id_policy="keep")
    k.sys.slab.ids._next = MEMCG_CACHES_MAX_SIZE - 2  # as if 65533 ids were taken
    k.sys.slab.ids.in_use = MEMCG_CACHES_MAX_SIZE - 2
    k.mkdir("/a")
    k.mkdir("/b")
    with pytest.raises(OSError) as e:
        k.mkdir("/c")
    assert e.value.errno == errno.ENOSPC
    assert "c" not in k.listdir("/")
    k.rmdir("/b")  # nothing charged: freed, and its id with it
    k.mkdir("/c")


# --------------------------------------------------------------------------- the built-in scenario

@pytest.mark.parametrize("semantics", ["6.18", "3.8"])
@pytest.mark.parametrize("policy", ["reparent", "keep", "reclaim"])
def test_cgroup_churn_scenario(policy, semantics):
    sc = load_scenario("cgroup-churn", {"policy": policy, "semantics": semantics, "groups": "60"})
    result = run_scenario(sc, memcg.SimKernel(**sc.machine.sim_kwargs()))
    failed = [e for e in result["expectations"] if not e["ok"]]
    assert not failed, failed
    # keep: ids 0-60 (/churn and 60 removed groups): 4, 10, 22, 46, then 94
    assert result["debugfs"]["kmemcg_id_array_size"] == (94 if policy == "keep" else 4)
    assert not result["errors"]
