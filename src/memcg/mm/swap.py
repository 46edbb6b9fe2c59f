"""LRU insertion and activation, and the freeing of user pages (mm/swap.c).

Freshly charged folios go onto their group's LRU (folio_add_lru); a second access
activates them (folio_mark_accessed); freed pages leave the LRU (lruvec_del_folio) and
are uncharged before their frames go back (release_pages -> mem_cgroup_uncharge_folios
-> free_unref_folios).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import fastpath, memcontrol
from .memcontrol import NR_LRU_BASE, PGACTIVATE
from .mmzone import LRU_INACTIVE_ANON, LRU_INACTIVE_FILE, LRU_NONE, PG_referenced

if TYPE_CHECKING:
    from .filemap import AddressSpace
    from .memcontrol import MemCgroup
    from ..system import System


def _traced_events(sys: System, memcgs: list, cpu: int, fn, *args, **kwargs) -> None:
    """Run fn; while a reclaim trace is kept, record the page events it counted (the
    streaming steady-state detector of vmscan.StreamReclaim replays them)."""
    trace = sys.reclaim_trace
    if trace is None:
        fn(*args, **kwargs)
        return
    before = [m.nr_page_events[cpu] for m in memcgs]
    fn(*args, **kwargs)
    for m, b in zip(memcgs, before):
        if m.nr_page_events[cpu] != b:
            # with the usages a threshold check of these events saw (one group: after fn)
            usages = fastpath.stream.threshold_usages(sys, m) if len(memcgs) == 1 else None
            trace.append(("e", m.id, cpu, m.nr_page_events[cpu] - b, usages))


def folio_add_lru(sys: System, task, memcg: MemCgroup, mapping: AddressSpace, idx, pfns,
                  flags: int, lru: int, items, events_batch: int | None = None,
                  order: int = 0) -> None:
    """Set up freshly charged pages, put them on memcg's LRU, count and commit them.

    events_batch: commit in slices of that many pages, as that many separate
    insertions would (the bulk read path); by default one commit for all.  order: the
    pages are one folio of 2**order pages (include/linux/mm.h: folio_order()).
    """
    mem = sys.mem
    n = len(pfns)
    mem.flags[pfns] = flags
    mem.mapping[pfns] = mapping.id
    mem.index[pfns] = idx
    if order:
        mem.large = True
        mem.order[pfns] = order
    memcg.lruvec.lists[lru].add(mem, pfns)
    sys.stats.mod(memcg.id, NR_LRU_BASE + lru, n)
    for item in items:
        sys.stats.mod(memcg.id, item, n)
    cpu = task.cpu if task is not None else 0
    step = events_batch or max(n, 1)
    i = 0
    while i < max(n, 1):
        if fastpath.ENABLED and n - i >= 4 * step and not order and sys.reclaim_trace is None:
            # If the event checks of a run of these commits find nothing, count them at once.
            from .fastpath import ratelimit  # late: the fast path builds on memcontrol
            k = ratelimit.page_events_quiet_steps(sys, memcg, step, (n - i) // step, cpu)
            if k > 1:
                ratelimit.commit_charge_steps(sys, memcg, pfns[i:i + k * step], cpu, step)
                i += k * step
                continue
        # one commit per folio batch of the caller: the event ratelimit sees each
        _traced_events(sys, [memcg], cpu, memcontrol.commit_charge, sys, memcg,
                       pfns[i:i + step], cpu, order)
        i += step


def _by_memcg_lru(sys: System, pfns: np.ndarray):
    """Group pages by (memcg id, lru); yields (memcg, lru, pfns)."""
    mem = sys.mem
    key = mem.memcg[pfns].astype(np.int64) * 8 + mem.lru[pfns].astype(np.int64) + 1
    order = np.argsort(key, kind="stable")
    keys = key[order]
    bounds = np.flatnonzero(np.diff(keys)) + 1
    for part in np.split(order, bounds):
        if not len(part):
            continue
        k = int(key[part[0]])
        memcg_id, lru = k // 8, (k % 8) - 1
        yield sys.memcgs[memcg_id], lru, pfns[part]


def lruvec_del_folio(sys: System, pfns: np.ndarray) -> None:
    """lruvec_del_folio() for pages being freed or moved (those on no LRU are skipped)."""
    on = pfns[sys.mem.lru[pfns] != LRU_NONE]
    if not len(on):
        return
    for memcg, lru, part in _by_memcg_lru(sys, on):
        memcg.lruvec.lists[lru].forget(len(part))
        sys.stats.mod(memcg.id, NR_LRU_BASE + lru, -len(part))
    sys.mem.lru[on] = LRU_NONE


def folio_mark_accessed(sys: System, pfns: np.ndarray) -> None:
    """folio_mark_accessed(): inactive,unreferenced -> referenced -> active."""
    mem = sys.mem
    pfns = pfns[pfns >= 0]
    if not len(pfns):
        return
    f = mem.flags[pfns]
    unref = (f & PG_referenced) == 0
    if unref.all():  # a first access to all of them (a read's): none is activated
        mem.flags[pfns] = f | PG_referenced
        return
    mem.flags[pfns[unref]] |= PG_referenced
    lru = mem.lru[pfns]
    promote = pfns[~unref & ((lru == LRU_INACTIVE_ANON) | (lru == LRU_INACTIVE_FILE))]
    if not len(promote):
        return
    for memcg, lru_id, part in _by_memcg_lru(sys, promote):
        memcg.lruvec.lists[lru_id].forget(len(part))
        sys.stats.mod(memcg.id, NR_LRU_BASE + lru_id, -len(part))
        memcg.lruvec.lists[lru_id + 1].add(mem, part)
        sys.stats.mod(memcg.id, NR_LRU_BASE + lru_id + 1, len(part))
        sys.stats.mod(memcg.id, PGACTIVATE, len(part))
    mem.flags[promote] &= np.uint8(~PG_referenced & 0xFF)


def release_pages(sys: System, pfns: np.ndarray, memsw: bool = True,
                  batches: list[int] | None = None) -> None:
    """release_pages(): uncharge pages (mem_cgroup_uncharge_folios) and give the frames
    back (free_unref_folios).  The pages are off the LRU already: the caller took them
    off (lruvec_del_folio) or reclaim isolated them.  memsw=False: the memsw charge
    stays with the swap entry the page went to.  batches: the pages are the frees of
    several calls in a row, of one group (uncharge_pages)."""
    cpu = sys.cpu
    if sys.reclaim_trace is not None and len(pfns):
        memcgs = [sys.memcgs[i] for i in np.unique(sys.mem.memcg[pfns]).tolist() if i]
        _traced_events(sys, memcgs, cpu, memcontrol.uncharge_pages, sys, pfns, cpu,
                       memsw=memsw)
    else:
        memcontrol.uncharge_pages(sys, pfns, cpu, memsw=memsw, batches=batches)
    sys.mem.free(pfns)
