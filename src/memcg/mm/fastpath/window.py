"""The large folios of a readahead window with room for all of them, added at once
(mm/readahead.c page_cache_ra_order).

page_cache_ra_order() cuts a window into aligned folios and adds them one by one
(filemap.ra_alloc_folio: __alloc_pages, mem_cgroup_charge, filemap_add_folio and the
lru_add).  While free memory stays above the low watermark after all of them (no kswapd,
no direct reclaim, mm/page_alloc.c) and every level of the group has room for them plus
a charge batch (try_charge_memcg never reclaims), nothing can happen between two of
them but the charges and their page events: ra_alloc_folios() takes the frames of all
of them at once (the free stack hands out the same frames, in the same order, as one
allocation per folio), charges and commits folio by folio (the per-CPU stock and the
event ratelimit, which may re-key the soft-limit tree, see each one as the slow path has
them), then sets up the pages and adds them to the LRU together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..filemap import SHADOW
from ..memcontrol import (MEMCG_CHARGE_BATCH, NR_FILE_PAGES, NR_LRU_BASE, PGPGIN,
                          WORKINGSET_REFAULT_FILE, hierarchy_margin, page_events,
                          try_charge_memcg)
from ..mmzone import LRU_COMPACT_SLACK, LRU_INACTIVE_FILE
from ..readahead import ra_folio_order

if TYPE_CHECKING:
    from ...system import System
    from ...tasks import Task
    from ..filemap import AddressSpace


def _window_folios(index: int, limit: int, new_order: int) -> list[tuple[int, int]]:
    """The (index, order) of the large folios page_cache_ra_order() adds from index, up
    to the first single page (its loop's order rules)."""
    out = []
    while index <= limit:
        order = ra_folio_order(index, limit, new_order)
        if not order:
            break
        out.append((index, order))
        index += 1 << order
    return out


def ra_alloc_folios(sys: System, task: Task, mapping: AddressSpace, index: int, limit: int,
                    new_order: int, mark: int) -> int:
    """Add the window's large folios from index at once where nothing can happen between
    them (see the module); returns the index after them (index: none taken)."""
    folios = _window_folios(index, limit, new_order)
    if len(folios) < 2:
        return index
    end = folios[-1][0] + (1 << folios[-1][1])
    cached = np.flatnonzero(mapping.slots[index:end] >= 0)
    if len(cached):  # the folio with a cached page fails with -EEXIST: the slow path's
        stop = index + int(cached[0])
        folios = [(i, o) for i, o in folios if i + (1 << o) <= stop]
        if len(folios) < 2:
            return index
        end = folios[-1][0] + (1 << folios[-1][1])
    total = end - index
    memcg = task.memcg
    mem = sys.mem
    if task.oom_victim or sys.cgroup_dfl or sys.reclaim_trace is not None or \
            mem.nr_free - total < sys.wmark_low:
        return index
    if not memcg.is_root() and hierarchy_margin(memcg) < total + MEMCG_CHARGE_BATCH:
        return index
    if any(m.thresholds or m.memsw_thresholds for m in memcg.ancestors()):
        return index  # mem_cgroup_threshold() at a page event could signal
    lst = memcg.lruvec.lists[LRU_INACTIVE_FILE]
    first = 1 << folios[0][1]
    if lst.entries + first >= 2 * (lst.nr + first) + LRU_COMPACT_SLACK:
        return index  # the first folio's lru_add compacts the list (LruList.add)
    prev, sys.current = sys.current, task
    try:
        pfns = mem.alloc(total)  # __alloc_pages() of each folio in turn
        cpu = task.cpu
        for _, order in folios:  # mem_cgroup_charge(), then commit_charge() at the lru_add
            ret = try_charge_memcg(sys, memcg, 1 << order, task, False)
            assert not ret, "a window's charge failed despite the margin"
            page_events(sys, memcg, 1 << order, cpu)
    finally:
        sys.current = prev
    _add_folios(sys, memcg, mapping, index, end, pfns, folios, mark)
    return end


def _add_folios(sys: System, memcg, mapping: AddressSpace, index: int, end: int,
                pfns: np.ndarray, folios: list, mark: int) -> None:
    """filemap_add_folio() + folio_add_lru() of the folios (swap.folio_add_lru's page
    side), their refaults (workingset_refault: a shadow in a folio's range makes all its
    pages refaults) and the PG_readahead mark."""
    mem = sys.mem
    n = end - index
    sizes = np.array([1 << o for _, o in folios], np.int64)
    starts = np.array([i - index for i, _ in folios], np.int64)
    shadows = np.add.reduceat((mapping.slots[index:end] == SHADOW).astype(np.int64), starts)
    refaults = int(sizes[shadows > 0].sum())
    mapping.slots[index:end] = pfns
    mem.flags[pfns] = 0
    mem.mapping[pfns] = mapping.id
    mem.index[pfns] = np.arange(index, end, dtype=np.int64)
    mem.large = True
    mem.order[pfns] = np.repeat(np.array([o for _, o in folios], np.uint8), sizes)
    memcg.lruvec.lists[LRU_INACTIVE_FILE].add(mem, pfns)
    mem.memcg[pfns] = memcg.id
    stats = sys.stats
    stats.mod(memcg.id, NR_LRU_BASE + LRU_INACTIVE_FILE, n)
    stats.mod(memcg.id, NR_FILE_PAGES, n)
    stats.mod(memcg.id, PGPGIN, len(folios))  # one per folio (memcg1_charge_statistics)
    if refaults:
        stats.mod(memcg.id, WORKINGSET_REFAULT_FILE, refaults)
    for i, order in folios:
        if i == mark >> order << order:
            mapping.ra_marks.add(i)  # folio_set_readahead()
