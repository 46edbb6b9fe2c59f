"""Slab caches with per-group copies, and the per-group ids that find them.

mm/slab_common.c and the kmemcg part of mm/memcontrol.c, 3.8-5.17 (document 004):
each group that accounts kernel memory has a small integer, its kmemcg_id.  Every root
cache has an array memcg_caches[] indexed by it, holding the group's own copy of the
cache, made on the group's first allocation from it; every memcg-aware list_lru has
per-group lists in an array indexed the same way (list_lru.py).  The arrays are
memcg_nr_cache_ids long and grow, all of them at once, when a new id does not fit:
to 2 * (id + 1), at least MEMCG_CACHES_MIN_SIZE, at most MEMCG_CACHES_MAX_SIZE.

Which ids are in use depends on the policy (SimKernel(kmemcg_id_policy=...)):
  "keep"     a removed group keeps its id until it is freed (3.8-3.19);
  "reclaim"  like keep, but before the arrays grow, removed groups are shrunk in the
             hope that some of them go and give their ids back (document 004, option 1);
  "reparent" at removal, list_lru items move to the parent and the id is freed at once
             (document 004, option 2; what 4.0 chose and today's kernel still does).

Charging differs by era (memcontrol.py):
  3.8   objects come from the group's copy of the cache, which is charged by whole
        slab pages as it grows (memcg_charge_slab) and uncharged as slabs empty.  The
        copy is created on the group's first allocation; that allocation itself is
        served, uncharged, from the root cache (the copy was made by a worker).
  6.18  there are no per-group copies (5.9+): each object is charged in bytes to the
        group's obj_cgroup, its size plus the objcg pointer (obj_full_size()).  The
        memcg_caches[] slots stay empty; the ids still index the list_lrus.

Object sizes are those of the reference machine's caches (/proc/slabinfo, Linux 6.18,
SLUB, x86-64): object size, objects per slab and pages per slab.  The 3.8 rules use
them too; the caches of 2012 were of similar, not equal, sizes.
"""

from __future__ import annotations

import errno
import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from . import list_lru, page_alloc, shrinker, vmscan
from .memcontrol import (CHARGE_KILLED, CHARGE_NOMEM, NR_SLAB_RECLAIMABLE_B, NR_SLAB_UNRECLAIMABLE_B,
                         OBJCG_POINTER_SIZE, ObjCgroup, get_obj_cgroup_from_current,
                         maybe_free_dying, memcg_can_account_kmem, memcg_charge_kmem,
                         memcg_uncharge_kmem, mod_objcg_state, obj_cgroup_charge,
                         obj_cgroup_uncharge)

if TYPE_CHECKING:
    from .memcontrol import MemCgroup
    from ..system import System
    from ..tasks import Task

# mm/memcontrol.c (3.8-5.17): MEMCG_CACHES_MIN_SIZE, MEMCG_CACHES_MAX_SIZE (= MEM_CGROUP_ID_MAX)
MEMCG_CACHES_MIN_SIZE = 4
MEMCG_CACHES_MAX_SIZE = 65535

# name: (object size, objects per slab, pages per slab) - /proc/slabinfo of the reference
# machine (Linux 6.18, x86-64, SLUB); "kmalloc-cg" stands for the small accounted
# allocations the model does not name one by one (one "object" = one byte).
ROOT_CACHES = {
    "task_struct": (4288, 7, 8),  # kernel/fork.c: task_struct_cachep
    "mm_struct": (1600, 20, 8),  # kernel/fork.c: mm_cachep
    "signal_cache": (1152, 14, 4),  # kernel/fork.c: signal_cachep
    "sighand_cache": (2112, 15, 8),  # kernel/fork.c: sighand_cachep
    "files_cache": (704, 23, 4),  # kernel/fork.c: files_cachep
    "pid": (192, 21, 1),  # kernel/pid.c: pid_cachep (init_struct_pid size)
    "dentry": (192, 21, 1),  # fs/dcache.c: dentry_cache
    "shmem_inode_cache": (752, 21, 4),  # mm/shmem.c: shmem_inode_cachep
    "radix_tree_node": (584, 14, 2),  # lib/radix-tree.c: radix_tree_node_cachep (xa_node)
    "ext4_inode_cache": (1128, 14, 4),  # fs/ext4/super.c: ext4_inode_cachep
    "buffer_head": (104, 39, 1),  # fs/buffer.c: bh_cachep
    "vm_area_struct": (192, 21, 1),  # mm/vma_init.c: vm_area_cachep
    "anon_vma": (104, 39, 1),  # mm/rmap.c: anon_vma_cachep
    "anon_vma_chain": (64, 64, 1),  # mm/rmap.c: anon_vma_chain_cachep
    "kmalloc-cg": (1, 4096, 1),
}
# The caches created with SLAB_RECLAIM_ACCOUNT, whose objects count as slab_reclaimable
# (mm/slab.h: cache_vmstat_idx): fs/dcache.c dentry_cache, fs/ext4/super.c
# ext4_inode_cache, fs/buffer.c bh_cachep; every other cache here is unreclaimable.
SLAB_RECLAIM_ACCOUNT = frozenset({"dentry", "ext4_inode_cache", "buffer_head"})
# mm/slab_common.c: kmalloc_info[] - the accounted kmalloc caches (KMALLOC_CGROUP,
# "kmalloc-cg-<size>"), as /proc/slabinfo of the reference machine lists them
KMALLOC_CG_CACHES = {
    8: (512, 1), 16: (256, 1), 32: (128, 1), 64: (64, 1), 96: (42, 1), 128: (32, 1),
    192: (21, 1), 256: (16, 1), 512: (16, 2), 1024: (16, 4), 2048: (16, 8), 4096: (8, 8),
    8192: (4, 8),
}
# include/linux/slab.h: KMALLOC_MAX_CACHE_SIZE (SLUB: 1 << (PAGE_SHIFT + 1))
KMALLOC_MAX_CACHE_SIZE = 8192
for _size, (_objs, _pages) in KMALLOC_CG_CACHES.items():
    ROOT_CACHES[f"kmalloc-cg-{_size}"] = (_size, _objs, _pages)


@dataclass(eq=False)
class KmemCache:
    """struct kmem_cache with its memcg_cache_params: a root cache or a group's copy."""

    name: str
    object_size: int  # s->size
    objs_per_slab: int
    pages_per_slab: int  # 1 << order
    root_cache: KmemCache | None = None  # copies: the cache they copy
    memcg: MemCgroup | None = None  # copies: the owning group
    memcg_caches: list = field(default_factory=list)  # root caches: copies by kmemcg_id
    nr_objects: int = 0
    nr_slabs: int = 0  # 3.8 copies: the slabs charged to the group
    dead: bool = False  # the owning group was removed
    # the frames of the cache's slabs (allocate_slab), a stack: the newest slab on top
    pfns: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    nr_pfns: int = 0

    def is_root_cache(self) -> bool:
        return self.root_cache is None


@dataclass(eq=False)
class SlabObject:
    """An allocated object (or `count` of them): where it came from and who pays."""

    cache: KmemCache  # the root cache, or (3.8) the group's copy it was taken from
    count: int
    objcg: ObjCgroup | None = None  # 6.18: who pays
    charged: int = 0  # 6.18: bytes charged to objcg


class MemcgCacheIds:
    """memcg_cache_ida and memcg_nr_cache_ids (3.8: kmem_limited_groups and
    memcg_limited_groups_array_size): the kmemcg id allocator and the arrays' size."""

    def __init__(self):
        self._free: list[int] = []
        self._next = 0
        self.in_use = 0
        self.nr_cache_ids = 0  # memcg_nr_cache_ids

    def ida_get(self) -> int:
        """ida_simple_get(&memcg_cache_ida, 0, MEMCG_CACHES_MAX_SIZE): lowest free id."""
        if self._free:
            i = heapq.heappop(self._free)
        elif self._next < MEMCG_CACHES_MAX_SIZE:
            i = self._next
            self._next += 1
        else:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.in_use += 1
        return i

    def ida_put(self, i: int) -> None:
        heapq.heappush(self._free, i)
        self.in_use -= 1


def memcg_caches_array_size(num_groups: int) -> int:
    """memcg_caches_array_size(): 2 * num_groups within [MIN_SIZE, MAX_SIZE]."""
    if num_groups <= 0:
        return 0
    return max(MEMCG_CACHES_MIN_SIZE, min(2 * num_groups, MEMCG_CACHES_MAX_SIZE))


class SlabAllocator:
    """The machine's root caches (slab_caches) and its kmemcg id space."""

    def __init__(self):
        self.caches = {name: KmemCache(name, *geom) for name, geom in ROOT_CACHES.items()}
        self.ids = MemcgCacheIds()


def memcg_alloc_cache_id(sys: System) -> int:
    """memcg_alloc_cache_id(): a new kmemcg id, growing every per-group array if needed.

    With the "reclaim" policy, removed groups are shrunk first in the hope that one of
    them is freed and gives its id back.  ENOSPC when all MEMCG_CACHES_MAX_SIZE are taken.
    """
    ids = sys.slab.ids
    if ids.in_use >= MEMCG_CACHES_MAX_SIZE and sys.kmemcg_id_policy == "reclaim":
        memcg_reclaim_offline(sys)
    i = ids.ida_get()
    if i < ids.nr_cache_ids:
        return i
    if sys.kmemcg_id_policy == "reclaim":
        ids.ida_put(i)
        memcg_reclaim_offline(sys)
        i = ids.ida_get()
        if i < ids.nr_cache_ids:
            return i
    size = memcg_caches_array_size(i + 1)
    memcg_update_all_caches(sys, size)
    list_lru.memcg_update_all_list_lrus(sys, size)
    ids.nr_cache_ids = size
    return i


def memcg_free_cache_id(sys: System, i: int) -> None:
    """memcg_free_cache_id(): the id goes back; the arrays never shrink."""
    sys.slab.ids.ida_put(i)


def memcg_update_all_caches(sys: System, size: int) -> None:
    """memcg_update_all_caches(): every root cache's memcg_caches[] to the new size."""
    for cache in sys.slab.caches.values():
        cache.memcg_caches.extend([None] * (size - len(cache.memcg_caches)))


def memcg_reclaim_offline(sys: System) -> None:
    """Document 004, option 1: reclaim from every removed group that still holds an id -
    shrink its list_lrus and its page cache - and free the ones left with no charges."""
    for memcg in list(sys.dying):
        if memcg.kmemcg_id < 0 or memcg not in sys.dying:
            continue
        shrinker.drop_slab_memcg(sys, memcg)
        if memcg.memory.usage and memcg in sys.dying:
            vmscan.try_to_free_mem_cgroup_pages(sys, memcg, memcg.memory.usage)
    maybe_free_dying(sys)


# --- allocation --------------------------------------------------------------------------

def memcg_create_kmem_cache(sys: System, memcg: MemCgroup, root: KmemCache) -> KmemCache:
    """memcg_create_kmem_cache(): the group's copy, named "<root>(<id>:<group>)"."""
    copy = KmemCache(f"{root.name}({memcg.kmemcg_id}:{memcg.name})", root.object_size,
                     root.objs_per_slab, root.pages_per_slab, root_cache=root, memcg=memcg)
    root.memcg_caches[memcg.kmemcg_id] = copy
    memcg.memcg_slab_caches.append(copy)
    return copy


def memcg_kmem_get_cache(sys: System, root: KmemCache, memcg: MemCgroup) -> KmemCache:
    """__memcg_kmem_get_cache() (3.8): the group's copy, or - on its first allocation -
    the root cache while the copy is made (by a worker; in the model at once)."""
    copy = root.memcg_caches[memcg.kmemcg_id]
    if copy is not None:
        return copy
    memcg_create_kmem_cache(sys, memcg, root)
    return root


def _slabs_for(cache: KmemCache, nr_objects: int) -> int:
    return -(-nr_objects // cache.objs_per_slab)


def allocate_slab(sys: System, cache: KmemCache, count: int, task: Task | None) -> int:
    """new_slab() -> allocate_slab() for the slabs `count` more objects need: their pages
    from the page allocator (mm/slub.c: alloc_slab_page), with its watermarks, reclaim and
    OOM killer.  0, or CHARGE_NOMEM / CHARGE_KILLED when the pages cannot be had.  Objects
    are packed into the cache's slabs (no partial or per-CPU slabs: docs/kmem.md)."""
    need = _slabs_for(cache, cache.nr_objects + count) * cache.pages_per_slab - cache.nr_pfns
    if need <= 0:
        return 0
    pfns = page_alloc.alloc_kernel_pages(sys, need, task, "Slab")
    if pfns is None:
        return CHARGE_KILLED if task is not None and task.oom_victim else CHARGE_NOMEM
    n = cache.nr_pfns
    if n + need > len(cache.pfns):
        grown = np.empty(max(n + need, 2 * len(cache.pfns)), np.int32)
        grown[:n] = cache.pfns[:n]
        cache.pfns = grown
    cache.pfns[n:n + need] = pfns
    cache.nr_pfns = n + need
    return 0


def discard_slabs(sys: System, cache: KmemCache) -> None:
    """discard_slab() -> __free_slab() of the slabs left empty: their pages go back to the
    page allocator (the newest slab first)."""
    surplus = cache.nr_pfns - _slabs_for(cache, cache.nr_objects) * cache.pages_per_slab
    if surplus <= 0:
        return
    cache.nr_pfns -= surplus
    n = cache.nr_pfns
    # (one slab page, the usual case as objects go a few at a time: no reversed copy)
    pfns = cache.pfns[n:n + 1] if surplus == 1 else cache.pfns[n:n + surplus][::-1].copy()
    page_alloc.free_kernel_pages(sys, pfns, "Slab")


def kmem_cache_alloc(sys: System, name: str, task: Task | None, count: int = 1,
                     user_fault: bool = False, nofail: bool = False) -> SlabObject | int:
    """kmem_cache_alloc() of `count` objects charged to the task's group.

    Returns the object, or the failed charge's result (CHARGE_NOMEM and friends).  The
    accounting hook sits behind the kmem static key.  user_fault: allocated inside a
    page fault (the anon_vma of a mapping's first fault).  The objects take slab pages
    from the free memory (allocate_slab), the group's charged or not: 6.18 takes them
    from the slab first and charges after (mm/slub.c: slab_alloc_node ->
    memcg_slab_post_alloc_hook, which frees the objects again if the charge fails);
    3.8 charged a group's copy of the cache for its new slabs before it allocated them.
    """
    root = sys.slab.caches[name]
    key = sys.kmem_key
    if key.enabled:  # static_branch_unlikely(): off, the hook is jumped over
        key.hits += 1
        obj = _memcg_slab_alloc(sys, root, task, count, user_fault, nofail)
        if obj is not None:
            if isinstance(obj, SlabObject):
                obj.cache.nr_objects += count
            return obj
    ret = allocate_slab(sys, root, count, task)
    if ret:
        return ret
    root.nr_objects += count
    return SlabObject(root, count)


def _memcg_slab_alloc(sys: System, root: KmemCache, task: Task | None, count: int,
                      user_fault: bool = False, nofail: bool = False):
    if sys.semantics == "3.8":
        if task is None or task.memcg.is_root() or not memcg_can_account_kmem(task.memcg):
            return None
        cache = memcg_kmem_get_cache(sys, root, task.memcg)
        if cache.is_root_cache():
            return None
        need = _slabs_for(cache, cache.nr_objects + count) - cache.nr_slabs
        if need > 0:  # memcg_charge_slab(): the new slabs' pages
            ret = memcg_charge_kmem(sys, cache.memcg, need * cache.pages_per_slab, task)
            if ret:
                return ret
            cache.nr_slabs += need
        ret = allocate_slab(sys, cache, count, task)
        if ret:
            _uncharge_empty_slabs(sys, cache)
            return ret
        return SlabObject(cache, count)
    objcg = get_obj_cgroup_from_current(sys, task)
    if objcg is None:
        return None
    ret = allocate_slab(sys, root, count, task)
    if ret:
        return ret
    size = count * root.object_size
    if root.name != "kmalloc-cg":
        size += count * OBJCG_POINTER_SIZE  # obj_full_size()
    ret = obj_cgroup_charge(sys, objcg, size, task, user_fault, nofail)
    if ret:
        discard_slabs(sys, root)  # memcg_alloc_abort_single(): the objects go back
        return ret
    mod_objcg_state(sys, objcg, cache_vmstat_idx(root.name), size)  # __memcg_slab_post_alloc_hook
    return SlabObject(root, count, objcg, size)


def cache_vmstat_idx(name: str) -> int:
    """cache_vmstat_idx(): the statistic a cache's objects count under."""
    return NR_SLAB_RECLAIMABLE_B if name in SLAB_RECLAIM_ACCOUNT else NR_SLAB_UNRECLAIMABLE_B


def _uncharge_empty_slabs(sys: System, cache: KmemCache) -> None:
    """3.8: the slabs of a group's copy left empty are uncharged (memcg_uncharge_slab)."""
    surplus = cache.nr_slabs - _slabs_for(cache, cache.nr_objects)
    if surplus > 0:
        cache.nr_slabs -= surplus
        memcg_uncharge_kmem(sys, cache.memcg, surplus * cache.pages_per_slab)


def kmalloc_slab(size: int) -> str:
    """kmalloc_slab() for a __GFP_ACCOUNT request: the smallest kmalloc-cg cache that holds size."""
    if size > KMALLOC_MAX_CACHE_SIZE:
        raise ValueError(f"kmalloc of {size} bytes: larger than KMALLOC_MAX_CACHE_SIZE")
    return f"kmalloc-cg-{min(s for s in KMALLOC_CG_CACHES if s >= size)}"


def kmalloc(sys: System, size: int, task: Task | None) -> SlabObject | int:
    """kmalloc(size, GFP_KERNEL_ACCOUNT): one object of the kmalloc-cg cache that fits
    size, charged as that cache's object size plus the objcg pointer (obj_full_size())."""
    return kmem_cache_alloc(sys, kmalloc_slab(size), task)


def kmem_cache_free(sys: System, obj: SlabObject, cpu: int = 0) -> None:
    """kmem_cache_free(): the object goes back to the cache it came from."""
    cache = obj.cache
    cache.nr_objects -= obj.count
    if obj.objcg is not None:
        objcg, obj.objcg = obj.objcg, None
        # __memcg_slab_free_hook(): the statistic, then the uncharge
        mod_objcg_state(sys, objcg, cache_vmstat_idx(cache.name), -obj.charged)
        obj_cgroup_uncharge(sys, objcg, obj.charged, cpu)
    discard_slabs(sys, cache)  # empty slabs go back to the page allocator
    if cache.is_root_cache():
        return
    _uncharge_empty_slabs(sys, cache)  # empty slabs are freed: memcg_uncharge_slab()
    if cache.dead and not cache.nr_objects:
        kmem_cache_destroy(sys, cache)


def kmem_cache_destroy(sys: System, cache: KmemCache) -> None:
    """Destroy an empty copy: off its group's list and out of the root's array."""
    memcg = cache.memcg
    if cache in memcg.memcg_slab_caches:
        memcg.memcg_slab_caches.remove(cache)
    root = cache.root_cache
    for i, c in enumerate(root.memcg_caches):
        if c is cache:
            root.memcg_caches[i] = None


def memcg_deactivate_kmem_caches(sys: System, memcg: MemCgroup) -> None:
    """memcg_deactivate_kmem_caches() (4.x, at offline under "reparent"): the group's
    copies leave the arrays - its id is about to be reused - and live on, dead, until
    their last object is freed."""
    for cache in list(memcg.memcg_slab_caches):
        cache.dead = True
        root = cache.root_cache
        if root.memcg_caches[memcg.kmemcg_id] is cache:
            root.memcg_caches[memcg.kmemcg_id] = None
        if not cache.nr_objects:
            kmem_cache_destroy(sys, cache)


def memcg_destroy_kmem_caches(sys: System, memcg: MemCgroup) -> None:
    """mem_cgroup_destroy_all_caches(): the copies of a group being freed (all empty)."""
    for cache in list(memcg.memcg_slab_caches):
        kmem_cache_destroy(sys, cache)


def slabinfo_rows(memcg: MemCgroup) -> list[tuple]:
    """memcg_slab_show() rows: (name, active objs, objs, objsize, objs/slab, pages/slab, slabs)."""
    return [(c.name, c.nr_objects, c.nr_slabs * c.objs_per_slab, c.object_size, c.objs_per_slab,
             c.pages_per_slab, c.nr_slabs) for c in memcg.memcg_slab_caches]


def charge_failed(ret) -> bool:
    """True when kmem_cache_alloc()/memcg_kmem_charge_page() returned a failed charge."""
    return isinstance(ret, int)

