"""The page allocator: watermarks, free frames and the slow path (mm/page_alloc.c).

The node's free frames are sys.mem's free lists (mmzone.MemMap).  An allocation that
would leave free memory below the low watermark wakes kswapd (run inline by the
allocating task), then reclaims directly and calls the OOM killer while free memory
stays below the min watermark.

alloc_and_charge() is here rather than beside the charge code: it is the allocating
side of every page-cache insertion and fault (alloc, then mem_cgroup_charge, then the
frames that could not be charged go back to the free lists).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..kernel import PAGE_SIZE
from . import memcontrol, oom_kill, vmscan
from .memcontrol import CHARGE_KILLED, CHARGE_NOMEM

if TYPE_CHECKING:
    from .memcontrol import MemCgroup
    from ..system import System

# mm/page_alloc.c: watermark_scale_factor default (10 = 0.1% of memory)
WATERMARK_SCALE_FACTOR = 10


def min_free_kbytes(nr_pages: int) -> int:
    """mm/page_alloc.c: calculate_min_free_kbytes() = int_sqrt(lowmem_kbytes * 16), clamped."""
    kbytes = nr_pages * 4
    return min(max(math.isqrt(kbytes * 16), 128), 262144)


def setup_per_zone_wmarks(sys: System) -> None:
    """__setup_per_zone_wmarks(): min from min_free_kbytes, low and high a distance above
    (the larger of min / 4 and watermark_scale_factor of memory)."""
    memory_pages = sys.mem.nr_pages
    wmin = min_free_kbytes(memory_pages) // 4
    dist = max(wmin // 4, memory_pages * WATERMARK_SCALE_FACTOR // 10000)
    sys.wmark_min, sys.wmark_low, sys.wmark_high = wmin, wmin + dist, wmin + 2 * dist


def alloc_pages(sys: System, n: int, task) -> np.ndarray:
    """__alloc_pages(): free frames, after global reclaim and OOM below the watermarks."""
    mem = sys.mem
    if mem.nr_free - n < sys.wmark_low:
        alloc_pages_slowpath(sys, n, task)
    if task is not None and task.oom_victim:
        return np.empty(0, np.int32)
    return mem.alloc(min(n, mem.nr_free))


def alloc_pages_slowpath(sys: System, n: int, task) -> None:
    """__alloc_pages_slowpath(): wake kswapd (run inline), then direct reclaim and the
    OOM killer while free memory stays under the min watermark."""
    mem = sys.mem
    dying = (lambda: task is not None and task.oom_victim)
    vmscan.balance_pgdat(sys, sys.wmark_high + n)
    while mem.nr_free - n < sys.wmark_min and not dying():
        if vmscan.balance_pgdat(sys, sys.wmark_min + n):
            continue
        if not oom_kill.out_of_memory(sys, task):
            break


# --- the kernel's own pages --------------------------------------------------------------
#
# Slab pages (mm/slub.c: allocate_slab -> alloc_slab_page), kernel stacks (kernel/fork.c:
# alloc_thread_stack_node -> __vmalloc_node), page tables (mm/memory.c: __pte_alloc ->
# pagetable_alloc) and per-CPU chunks (mm/percpu-vm.c: pcpu_alloc_pages) come from the
# same free pages as user memory: they lower the free count, wake kswapd and reclaim
# below the watermarks, can call the OOM killer, and go back to the free lists when freed.
# They are on no LRU list, so reclaim frees them only through their owners (shrinkers,
# exits).  The counts are the node's, as /proc/meminfo names them.
KERNEL_PAGE_ITEMS = ("Slab", "KernelStack", "PageTables", "Percpu")


def alloc_kernel_pages(sys: System, n: int, task, item: str) -> np.ndarray | None:
    """__alloc_pages(GFP_KERNEL) of n frames for the kernel's own use: the watermarks,
    kswapd, direct reclaim and the OOM killer as for any allocation; None when the n
    frames cannot be had (or the OOM killer chose the allocating task).  The frames are
    unmovable (MemMap.alloc_unmovable) and counted under `item` (KERNEL_PAGE_ITEMS)."""
    if n <= 0:
        return np.empty(0, np.int32)
    mem = sys.mem
    prev, sys.current = sys.current, task
    try:
        if mem.nr_free - n < sys.wmark_low:
            alloc_pages_slowpath(sys, n, task)
    finally:
        sys.current = prev
    if (task is not None and task.oom_victim) or mem.nr_free < n:
        return None
    sys.kernel_pages[item] += n
    return mem.alloc_unmovable(n)


def free_kernel_pages(sys: System, pfns, item: str) -> None:
    """__free_pages() of frames alloc_kernel_pages() gave: back to the free lists."""
    if pfns is None or not len(pfns):
        return
    sys.kernel_pages[item] -= len(pfns)
    sys.mem.free(np.asarray(pfns, np.int32))


def alloc_kmem_pages(sys: System, task, nr_pages: int, item: str,
                     user_fault: bool = False):
    """alloc_pages(GFP_KERNEL_ACCOUNT) of nr_pages: the frames first, then the charge
    (mm/page_alloc.c: __alloc_frozen_pages_noprof -> __memcg_kmem_charge_page; a kernel
    stack's pages are charged after __vmalloc_node, kernel/fork.c:
    memcg_charge_kernel_stack).  Returns the KmemPages, or the failure: CHARGE_KILLED when
    the OOM killer chose the task, CHARGE_NOMEM when the frames cannot be had, or the
    failed charge's result (the frames then go back)."""
    pfns = alloc_kernel_pages(sys, nr_pages, task, item)
    if pfns is None:
        return CHARGE_KILLED if task is not None and task.oom_victim else CHARGE_NOMEM
    prev, sys.current = sys.current, task  # the OOM killer tells the charging task by it
    try:
        pages = memcontrol.memcg_kmem_charge_page(sys, task, nr_pages, user_fault)
    finally:
        sys.current = prev
    if isinstance(pages, int):
        free_kernel_pages(sys, pfns, item)
        return pages
    pages.pfns, pages.item = pfns, item
    mod_kmem_page_state(sys, pages, 1)
    return pages


# the group statistic of a kind of accounted kernel page, and its unit per page
KMEM_PAGE_STAT = {"KernelStack": (memcontrol.NR_KERNEL_STACK_KB, PAGE_SIZE // 1024),
                  "PageTables": (memcontrol.NR_PAGETABLE, 1)}


def mod_kmem_page_state(sys: System, pages, sign: int) -> None:
    """mod_lruvec_page_state() of charged kernel pages: a kernel stack's pages in KiB
    (kernel/fork.c: account_kernel_stack), a page table's page (include/linux/mm.h:
    __pagetable_ctor / pagetable_dtor), in the group that pays for them."""
    stat = KMEM_PAGE_STAT.get(pages.item)
    if stat is not None and pages.owner is not None:
        item, unit = stat
        memcontrol.mod_objcg_state(sys, pages.owner, item, sign * pages.nr_pages * unit)


def free_kmem_pages(sys: System, pages, cpu: int = 0) -> None:
    """__free_pages() of accounted pages: the uncharge, then the frames go back."""
    mod_kmem_page_state(sys, pages, -1)
    memcontrol.memcg_kmem_uncharge_page(sys, pages, cpu)
    pfns, pages.pfns = pages.pfns, None
    free_kernel_pages(sys, pfns, pages.item)


def alloc_and_charge(sys: System, task, memcg: MemCgroup, n: int, user_fault: bool):
    """Allocate n frames and charge them to memcg one page at a time.

    Returns (pfns charged, 0 or the result of the charge that failed).  Frames that
    could not be charged go back to the free lists.
    """
    prev, sys.current = sys.current, task
    try:
        pfns = alloc_pages(sys, n, task)
        charged, ret = memcontrol.charge_pages(sys, memcg, len(pfns), task, user_fault)
        if charged < len(pfns):
            sys.mem.free(pfns[charged:])
            pfns = pfns[:charged]
        if task is not None and task.oom_victim:
            # The OOM killer chose the charging task: the pages of this step were
            # charged but never mapped, and go with it.
            if len(pfns) and not memcg.is_root():
                memcg.memory.uncharge(len(pfns))
                memcg.memsw.uncharge(len(pfns))
            sys.mem.free(pfns)
            return pfns[:0], CHARGE_KILLED
        if not ret and len(pfns) < n:
            ret = CHARGE_NOMEM
        return pfns, ret
    finally:
        sys.current = prev


def alloc_and_charge_folio(sys: System, task, memcg: MemCgroup, order: int):
    """filemap_alloc_folio() + mem_cgroup_charge(): one folio of 2**order frames, charged
    as one unit (mm/memcontrol.c: charge_memcg -> try_charge_memcg(folio_nr_pages)).

    One failed attempt counts once in failcnt however large the folio; reclaim is asked
    for the whole folio.  Returns (pfns, 0) or (empty, the charge's result).
    """
    nr = 1 << order
    prev, sys.current = sys.current, task
    try:
        pfns = alloc_pages(sys, nr, task)
        if len(pfns) < nr:
            sys.mem.free(pfns)
            return pfns[:0], CHARGE_KILLED if task is not None and task.oom_victim else CHARGE_NOMEM
        ret = memcontrol.try_charge_memcg(sys, memcg, nr, task, False)
        if ret:
            sys.mem.free(pfns)
            return pfns[:0], ret
        if task is not None and task.oom_victim:
            # the OOM killer chose the charging task: the folio goes with it
            if not memcg.is_root():
                memcg.memory.uncharge(nr)
                memcg.memsw.uncharge(nr)
            sys.mem.free(pfns)
            return pfns[:0], CHARGE_KILLED
        return pfns, 0
    finally:
        sys.current = prev
