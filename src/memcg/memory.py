"""Anonymous memory: mappings, faults, unmapping and swap-out (mm/memory.c, mm/rmap.c).

Each touch_anon() is one private anonymous mapping (a VMA).  Its pages are faulted in
one by one in the kernel - each fault charges one page to the memcg of the mm's owner
(4 KiB pages: THP is "madvise" on the reference machine) - which the model does in
batches with the same outcome.  New anon pages go to the inactive anon list (5.9+), or
to the unevictable list when the mapping is mlocked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .filemap import HOLE, AddressSpace, add_to_swap, nr_pages_of
from .memcontrol import NR_ANON_MAPPED, PGFAULT
from .mmzone import (LRU_INACTIVE_ANON, LRU_UNEVICTABLE, PG_anon, PG_mapped, PG_mlocked,
                     PG_swapbacked, PG_young)
from .swapfile import swp_offset

if TYPE_CHECKING:
    from .system import System
    from .tasks import Task

# Faults handled per step: a threshold check, a reclaim or an OOM kill can happen between
# steps, as between the kernel's single-page faults.
FAULT_BATCH = 128
# arch/x86: PTRS_PER_PTE, PTRS_PER_PMD - one page-table page maps 512 entries
PTRS_PER_PTE = 512


class AnonVma(AddressSpace):
    """A private anonymous mapping of one mm (vma + anon_vma for the rmap)."""

    kind = "anon"

    def __init__(self, sys: System, mm, nr_pages: int, locked: bool):
        super().__init__(sys, "[anon]")
        self.mm = mm
        self.nr_pages = nr_pages
        self.locked = locked
        self.nr_faulted = 0
        self.ensure(nr_pages)

    def evict(self, sys: System, pfns: np.ndarray) -> np.ndarray:
        """pageout() + try_to_unmap(): move pages to swap while slots last."""
        pfns, idx, ids = add_to_swap(sys, self, pfns)
        if len(pfns):
            sys.stats.mod_many(ids, NR_ANON_MAPPED, -1)
            self.mm.anon_rss -= len(pfns)
            self.mm.swapents += len(pfns)
            sys.free_user_pages(pfns, memsw=False)
        return pfns


def do_anonymous_faults(sys: System, task: Task, vma: AnonVma) -> int:
    """Fault in the rest of vma (do_anonymous_page() per page); 0 or the failed charge."""
    memcg = task.memcg
    flags = PG_anon | PG_swapbacked | PG_mapped | PG_young
    lru = LRU_INACTIVE_ANON
    if vma.locked:
        flags |= PG_mlocked
        lru = LRU_UNEVICTABLE
    while vma.nr_faulted < vma.nr_pages:
        n = min(FAULT_BATCH, vma.nr_pages - vma.nr_faulted)
        pfns, ret = sys.alloc_and_charge(task, memcg, n, user_fault=True)
        if len(pfns):
            idx = np.arange(vma.nr_faulted, vma.nr_faulted + len(pfns), dtype=np.int64)
            vma.slots[idx] = pfns
            vma.nr_faulted += len(pfns)
            task.mm.anon_rss += len(pfns)
            sys.add_new_pages(task, memcg, vma, idx, pfns, flags, lru,
                              (NR_ANON_MAPPED, PGFAULT))
        if ret:
            return ret
    return 0


def zap_anon(sys: System, vma: AnonVma, start: int) -> None:
    """zap_pte_range() over [start, end of vma): free pages and swap entries."""
    s = vma.slots[start:vma.nr_faulted]
    pfns = s[s >= 0]
    swapped = s[s <= -2]
    if len(pfns):
        sys.stats.mod_many(sys.mem.memcg[pfns], NR_ANON_MAPPED, -1)
        sys.lru_del(pfns)
        sys.free_user_pages(pfns)
        vma.mm.anon_rss -= len(pfns)
    if len(swapped):
        sys.free_swap(swp_offset(swapped))
        vma.mm.swapents -= len(swapped)
    vma.slots[start:] = HOLE
    vma.nr_faulted = min(vma.nr_faulted, start)
    vma.nr_pages = start


def munmap_anon(sys: System, mm, nbytes: int, oldest_first: bool = False) -> None:
    """Unmap nbytes of mm's anonymous memory, newest mapping first (or oldest first);
    a mapping only partly unmapped loses its tail."""
    left = nr_pages_of(nbytes)
    while left and mm.vmas:
        vma = mm.vmas[0] if oldest_first else mm.vmas[-1]
        cut = min(left, vma.nr_pages)
        zap_anon(sys, vma, vma.nr_pages - cut)
        left -= cut
        if vma.nr_pages == 0:
            mm.vmas.remove(vma)
            sys.unregister_mapping(vma)


def pgtables_pages(mm) -> int:
    """mm_pgtables_bytes() / PAGE_SIZE: PTE pages for the mapped ranges plus their PMDs."""
    ptes = sum(-(-v.nr_pages // PTRS_PER_PTE) for v in mm.vmas)
    ptes += sum(-(-o.mappers.get(mm, 0) // PTRS_PER_PTE) for o in mm.shm_objects)
    return ptes + -(-ptes // PTRS_PER_PTE)
