"""Anonymous faults in spans: many FAULT_BATCH steps set up at once.

do_anonymous_faults() (mm/memory.c: do_anonymous_page, per page in the kernel) takes a
mapping's faults in steps of FAULT_BATCH pages, between which a threshold check, a
reclaim or an OOM kill can happen as between the kernel's single-page faults.  While
nothing can happen between steps (no watermark or limit is near, no event check has work
to do), a span of many steps is set up at once, with the outcome of taking them one by
one: the same frames in the same order, the same counters, stock, events and LRU order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import memory
from ...kernel import PAGE_SIZE
from ..memcontrol import (MEMCG_CHARGE_BATCH, NR_ANON_MAPPED, NR_LRU_BASE, NR_PAGETABLE, PGFAULT,
                          KmemPages, charge_pages, hierarchy_margin)
from ..memory import (FAULT_BATCH, PTRS_PER_PTE, AnonVma, anon_vma_prepare, pgtables_accounted,
                      ptes_needed)
from ..mmzone import put_in_run_order, run_pfns, run_slice
from .ratelimit import commit_charge_steps, page_events_quiet_steps

if TYPE_CHECKING:
    from ...system import System
    from ...tasks import Task

# The most pages set up in one span of steps: bounds the span's temporary arrays.
FAULT_SPAN_PAGES = 1 << 16


def take_span(sys: System, task: Task, memcg, vma: AnonVma, flags: int, lru: int) -> bool:
    """Fault in a span of vma's next steps at once if it has more than one; True if it did."""
    steps = quiet_fault_steps(sys, task, memcg, vma)
    if steps < 2:
        return False
    fault_span(sys, task, memcg, vma, steps, flags, lru)
    return True


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

    The PTE pages of the span are one-page charges that do go through the stock: each
    takes a page of it, or (stock empty) charges a batch and parks the rest.  While
    memcg has a slot in this CPU's stock neither evicts a slot, and a stock of a whole
    batch acts as an empty one under both kinds of charge; so charging the span's PTE
    pages before its pages leaves the same stock, and - usage only growing - the same
    counters and watermarks as charging them step by step.  Without a slot the span
    ends before the first step that needs a PTE page (its charge may evict at random).
    A mapping's first step is taken alone when it charges the anon_vma.
    """
    k = min(vma.nr_pages - vma.nr_faulted, FAULT_SPAN_PAGES) // FAULT_BATCH
    # A reclaim trace (the streaming fast path, stream.py) records every commit's events.
    if k < 2 or task.oom_victim or getattr(sys, "reclaim_trace", None) is not None:
        return 1
    accounted = pgtables_accounted(sys, task)
    if vma.anon_vma is None and accounted and vma.thp_aligned:
        return 1
    mem = sys.mem
    k = min(k, (mem.nr_free - sys.wmark_low) // FAULT_BATCH)
    # the span's PTE pages come from the free pages too, charged or not: with them every
    # step still leaves free memory above the low watermark
    k = min(k, (mem.nr_free - sys.wmark_low - ptes_needed(vma, k * FAULT_BATCH)) // FAULT_BATCH)
    ptes = 0
    if accounted:
        if memcg not in sys.stock[task.cpu].cached:
            k = min(k, steps_without_pte_alloc(vma))
        ptes = ptes_needed(vma, k * FAULT_BATCH)  # the most the span can need
    if not memcg.is_root():
        k = min(k, (hierarchy_margin(memcg) - MEMCG_CHARGE_BATCH - ptes) // FAULT_BATCH)
    if k < 2:
        return 1
    return page_events_quiet_steps(sys, memcg, FAULT_BATCH, k, task.cpu, extra=ptes)


def fault_span(sys: System, task: Task, memcg, vma: AnonVma, steps: int, flags: int,
               lru: int) -> None:
    """Take `steps` FAULT_BATCH steps of vma's faults at once (quiet_fault_steps said so).

    The frames are the ones the steps would have popped from the free stack, in the same
    order; when they are one run of it, every per-page array is written by slice.
    """
    n = steps * FAULT_BATCH
    # all the span's PTE pages first (quiet_fault_steps); an anon_vma that charges nothing
    pte_alloc_span(sys, task, vma, n)
    assert not anon_vma_prepare(sys, task, vma)
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
    commit_charge_steps(sys, memcg, pfns, task.cpu, FAULT_BATCH)


def steps_without_pte_alloc(vma: AnonVma) -> int:
    """How many FAULT_BATCH steps from vma.nr_faulted stay inside regions with a PTE page."""
    first = (len(vma.ptes) + (1 if vma.pgoff else 0)) * PTRS_PER_PTE - vma.pgoff
    return max(0, (first - vma.nr_faulted) // FAULT_BATCH)


def pte_alloc_span(sys: System, task: Task, vma: AnonVma, n: int) -> None:
    """pte_alloc() for a fault span of n pages, its one-page charges in closed form.

    quiet_fault_steps() made sure that the task's memcg has a slot in this CPU's stock
    and room for them all: each charge takes a page of the slot (consume_stock), or, the
    slot empty, charges a MEMCG_CHARGE_BATCH and parks the rest there (refill_stock).
    """
    p = ptes_needed(vma, n)
    if not p or not pgtables_accounted(sys, task):
        assert not memory.pte_alloc(sys, task, vma, n)  # nothing charged: as the steps do it
        return
    memcg = task.memcg
    objcg = memcg.objcg
    stock = sys.stock[task.cpu]
    i = next(j for j, c in enumerate(stock.cached) if c is memcg)
    s = stock.nr_pages[i]
    refills = 0 if p <= s else -(-(p - s) // MEMCG_CHARGE_BATCH)
    stock.nr_pages[i] = s - p + refills * MEMCG_CHARGE_BATCH
    if refills:
        memcg.memsw.charge(refills * MEMCG_CHARGE_BATCH)  # try_charge_memcg: memsw first
        memcg.memory.charge(refills * MEMCG_CHARGE_BATCH)
    memcg.kmem.charge(p)  # memcg1_account_kmem()
    objcg.nr_pages += p
    objcg.nr_live_bytes += p * PAGE_SIZE
    sys.kmem_key.hits += p  # p passes through the hook of memcg_kmem_charge_page()
    # the frames, taken before each charge (page_alloc.alloc_kmem_pages): one at a time
    # from the unmovable end of the free stack gives the same frames as all at once
    pfns = sys.mem.alloc_unmovable(p)
    sys.kernel_pages["PageTables"] += p
    vma.ptes.extend(KmemPages(objcg, 1, pfns[j:j + 1], "PageTables") for j in range(p))
    sys.stats.mod(memcg.id, NR_PAGETABLE, p)  # page_alloc.mod_kmem_page_state() of each

