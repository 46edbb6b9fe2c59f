"""Anonymous memory: mappings, faults, unmapping and swap-out (mm/memory.c, mm/rmap.c).

Each touch_anon() is one private anonymous mapping (a VMA).  Its pages are faulted in
one by one in the kernel - each fault charges one page to the memcg of the mm's owner
(4 KiB pages: THP is "madvise" on the reference machine) - which the model does in
steps of FAULT_BATCH pages with the same outcome.  While nothing can happen between
steps (no watermark or limit is near, no event check has work to do), a span of many
steps is set up at once, with the outcome of taking them one by one.  New anon pages go
to the inactive anon list (5.9+), or to the unevictable list when the mapping is mlocked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .filemap import HOLE, AddressSpace, add_to_swap, nr_pages_of
from .memcontrol import (MEMCG_CHARGE_BATCH, NR_ANON_MAPPED, NR_LRU_BASE, PGFAULT,
                         charge_pages, commit_charge, hierarchy_margin, page_events_quiet_steps)
from .mmzone import (LRU_INACTIVE_ANON, LRU_UNEVICTABLE, PG_anon, PG_mapped, PG_mlocked,
                     PG_swapbacked, PG_young, put_in_run_order, run_pfns, run_slice)
from .swapfile import swp_offset

if TYPE_CHECKING:
    from .system import System
    from .tasks import Task

# Faults handled per step: a threshold check, a reclaim or an OOM kill can happen between
# steps, as between the kernel's single-page faults.
FAULT_BATCH = 128
# The most pages set up in one span of steps: bounds the span's temporary arrays.
FAULT_SPAN_PAGES = 1 << 16
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

    def ensure(self, nr: int) -> None:
        """The page table of the mapping, 4 bytes an entry: a PFN (MemMap keeps them below
        2**31), HOLE or a swap entry."""
        if nr > len(self.slots):
            grown = np.full(max(nr, 2 * len(self.slots)), HOLE, np.int32)
            grown[:len(self.slots)] = self.slots
            self.slots = grown

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
        steps = quiet_fault_steps(sys, task, memcg, vma)
        if steps > 1:
            fault_span(sys, task, memcg, vma, steps, flags, lru)
            continue
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


def quiet_fault_steps(sys: System, task: Task, memcg, vma: AnonVma) -> int:
    """How many whole FAULT_BATCH steps of vma's faults can be taken at once (1: one step).

    Steps can be merged while none of them could do anything but allocate, charge and
    map: each finds free memory above the low watermark after its allocation (no kswapd
    work, mm/page_alloc.c: __alloc_pages), every level of the hierarchy has room for the
    whole span plus a charge batch, and the event checks have nothing to do before the
    last step (page_events_quiet_steps).  With room, each step's charge is the bulk
    charge of charge_pages(): the stock (at most MEMCG_CHARGE_BATCH pages) is consumed
    and the rest charged in whole batches, leaving the stock as it found it modulo a
    batch; FAULT_BATCH being a multiple of the batch, one charge of the whole span leaves
    the counters, watermarks and stock exactly as its steps would.
    """
    k = min(vma.nr_pages - vma.nr_faulted, FAULT_SPAN_PAGES) // FAULT_BATCH
    # A reclaim trace (vmscan's streaming detector) records every commit's events.
    if k < 2 or task.oom_victim or getattr(sys, "reclaim_trace", None) is not None:
        return 1
    mem = sys.mem
    k = min(k, (mem.nr_free - sys.wmark_low) // FAULT_BATCH)
    if not memcg.is_root():
        k = min(k, (hierarchy_margin(memcg) - MEMCG_CHARGE_BATCH) // FAULT_BATCH)
    if k < 2:
        return 1
    return page_events_quiet_steps(sys, memcg, FAULT_BATCH, k, task.cpu)


def fault_span(sys: System, task: Task, memcg, vma: AnonVma, steps: int, flags: int,
               lru: int) -> None:
    """Take `steps` FAULT_BATCH steps of vma's faults at once (quiet_fault_steps said so).

    The frames are the ones the steps would have popped from the free stack, in the same
    order; when they are one run of it, every per-page array is written by slice.
    """
    n = steps * FAULT_BATCH
    mem = sys.mem
    pfns = mem.alloc_run(n) if mem.top_run() >= n else mem.alloc(n)
    charged, ret = charge_pages(sys, memcg, n, task, user_fault=True)
    assert charged == n and not ret
    start = vma.nr_faulted
    idx = np.arange(start, start + n, dtype=np.uint32)
    # System.add_new_pages(), by slice for a run of frames
    if isinstance(pfns, range):
        vma.slots[start:start + n] = run_pfns(pfns)
        frames = run_slice(pfns)
        put_in_run_order(mem.index, pfns, idx)
    else:
        vma.slots[start:start + n] = pfns
        frames = pfns
        mem.index[pfns] = idx
    vma.nr_faulted += n
    task.mm.anon_rss += n
    mem.flags[frames] = flags
    mem.mapping[frames] = vma.id
    memcg.lruvec.lists[lru].add(mem, pfns)
    for item in (NR_LRU_BASE + lru, NR_ANON_MAPPED, PGFAULT):
        sys.stats.mod(memcg.id, item, n)
    commit_charge(sys, memcg, pfns, task.cpu, step=FAULT_BATCH)


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
