"""Buffer heads of file pages (fs/buffer.c).

A buffered write to ext4 attaches one struct buffer_head per file-system block to each
page it dirties (__block_write_begin -> create_empty_buffers -> folio_alloc_buffers).
folio_alloc_buffers() allocates them under set_active_memcg(folio_memcg(folio)) with
__GFP_ACCOUNT (4.15+; 3.8 did not account them), so they are kernel memory of the group
the page is charged to: with 4 KiB blocks, one 104-byte object per page, 112 bytes with
its objcg pointer - 2.7% of the data written.  __GFP_NOFAIL: when the charge cannot be
met it is forced past the limit.  The buffers go when the page leaves the page cache
(try_to_free_buffers at reclaim, truncation at unlink).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..mm import memcontrol, slab

if TYPE_CHECKING:
    from ..mm.memcontrol import MemCgroup
    from ..system import System
    from ..tasks import Task

# the ext4 block size of the reference machine's file systems (mke2fs default: 4096)
EXT4_BLOCK_SIZE = 4096
# include/linux/mm.h: PAGE_SIZE / blocksize buffer heads per page
BH_PER_PAGE = 4096 // EXT4_BLOCK_SIZE


def folio_alloc_buffers(sys: System, task: Task | None, memcg: MemCgroup, nr_pages: int) -> None:
    """Buffer heads for nr_pages new pages charged to memcg (create_empty_buffers)."""
    if sys.semantics == "3.8" or memcg.is_root() or not nr_pages:
        return
    count = nr_pages * BH_PER_PAGE
    old = memcontrol.set_active_memcg(sys, memcg)
    try:
        obj = slab.kmem_cache_alloc(sys, "buffer_head", task, count, nofail=True)
    finally:
        memcontrol.set_active_memcg(sys, old)
    if isinstance(obj, slab.SlabObject) and obj.objcg is not None:
        memcg.buffer_heads += count


def try_to_free_buffers(sys: System, pfns: np.ndarray, cpu: int = 0) -> None:
    """free_buffer_head() for the buffers of pages leaving the page cache: each group's
    objects are uncharged from the objcg that paid for them (memcg->orig_objcg, which
    after the group's removal charges an ancestor)."""
    if not len(pfns):
        return
    owners = sys.mem.memcg[pfns]
    first = owners[0]
    if owners[-1] == first and (owners == first).all():  # one group (the usual case)
        ids, counts = [int(first)], [len(pfns)]
    else:
        ids, counts = (x.tolist() for x in np.unique(owners, return_counts=True))
    for memcg_id, n in zip(ids, counts):
        memcg = sys.memcgs.get(memcg_id)
        if memcg is not None:
            free_buffer_heads(sys, memcg, n, cpu)


def free_buffer_heads(sys: System, memcg: MemCgroup, nr_pages: int, cpu: int = 0) -> None:
    """try_to_free_buffers() of nr_pages pages charged to memcg: their buffer heads are
    freed and uncharged from memcg's orig_objcg, and the slabs left empty go."""
    if memcg.orig_objcg is None or not memcg.buffer_heads:
        return
    cache = sys.slab.caches["buffer_head"]
    count = min(nr_pages * BH_PER_PAGE, memcg.buffer_heads)
    memcg.buffer_heads -= count
    cache.nr_objects -= count
    size = count * (cache.object_size + memcontrol.OBJCG_POINTER_SIZE)
    memcontrol.mod_objcg_state(sys, memcg.orig_objcg, slab.cache_vmstat_idx("buffer_head"), -size)
    memcontrol.obj_cgroup_uncharge(sys, memcg.orig_objcg, size, cpu)
    slab.discard_slabs(sys, cache)
