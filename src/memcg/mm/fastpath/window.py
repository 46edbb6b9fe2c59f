"""The large folios of a readahead window with room for them, added at once
(mm/readahead.c page_cache_ra_order).

page_cache_ra_order() cuts a window into aligned folios and adds them one by one
(filemap.ra_alloc_folio: __alloc_pages, mem_cgroup_charge, filemap_add_folio and the
lru_add).  For as many of them as leave free memory at the low watermark or above (no
kswapd, no direct reclaim, mm/page_alloc.c), leave every level of the group room for a
charge batch more (try_charge_memcg never reclaims) and cannot take a level's usage
across a usage threshold, nothing can happen between two of them but the charges and
their page events: ra_alloc_folios() takes the frames of all of them at once (the free
stack hands out the same frames, in the same order, as one allocation per folio),
charges and commits folio by folio (the per-CPU stock and the event ratelimit, which
may re-key the soft-limit tree, see each one as the slow path has them), then sets up
the pages and adds them to the LRU together.  The slow path adds the folio after them;
once it has (its allocation may have woken kswapd), the rest of the window is offered
here again.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

import numpy as np

from ..filemap import SHADOW
from ..memcontrol import (MEMCG_CHARGE_BATCH, NR_FILE_PAGES, NR_LRU_BASE, PGPGIN,
                          SOFTLIMIT_EVENTS_TARGET, THRESHOLDS_EVENTS_TARGET,
                          WORKINGSET_REFAULT_FILE, hierarchy_margin, mem_cgroup_usage,
                          refill_stock)
from ..memcontrol_v1 import memcg1_update_tree
from ..mmzone import LRU_COMPACT_SLACK, LRU_INACTIVE_FILE, put_in_run_order, run_slice
from ..readahead import ra_folio_order

if TYPE_CHECKING:
    from ...system import System
    from ...tasks import Task
    from ..filemap import AddressSpace


def _window_folios(index: int, limit: int, new_order: int, room: int) -> list[tuple[int, int]]:
    """The (index, order) of the large folios page_cache_ra_order() adds from index, up
    to the first single page (its loop's order rules), as many as room pages hold."""
    out = []
    while index <= limit:
        order = ra_folio_order(index, limit, new_order)
        if not order or 1 << order > room:
            break
        out.append((index, order))
        index += 1 << order
        room -= 1 << order
    return out


def ra_alloc_folios(sys: System, task: Task, mapping: AddressSpace, index: int, limit: int,
                    new_order: int, mark: int) -> int:
    """Add the window's large folios from index at once, as many of them as nothing can
    happen between (see the module); returns the index after them (index: none taken)."""
    memcg = task.memcg
    mem = sys.mem
    if task.oom_victim or sys.cgroup_dfl or sys.reclaim_trace is not None:
        return index
    # The folios whose allocations leave free memory at the low watermark or above (no
    # slow path), with room at every level for them plus a charge batch
    room = mem.nr_free - sys.wmark_low
    if not memcg.is_root():
        room = min(room, hierarchy_margin(memcg) - MEMCG_CHARGE_BATCH)
    room = _threshold_room(sys, memcg, room)
    if room < 2:
        return index
    folios = _window_folios(index, limit, new_order, room)
    if not folios:
        return index
    end = folios[-1][0] + (1 << folios[-1][1])
    cached = np.flatnonzero(mapping.slots[index:end] >= 0)
    if len(cached):  # the folio with a cached page fails with -EEXIST: the slow path's
        stop = index + int(cached[0])
        folios = [(i, o) for i, o in folios if i + (1 << o) <= stop]
        if not folios:
            return index
        end = folios[-1][0] + (1 << folios[-1][1])
    lst = memcg.lruvec.lists[LRU_INACTIVE_FILE]
    first = 1 << folios[0][1]
    if lst.entries + first >= 2 * (lst.nr + first) + LRU_COMPACT_SLACK:
        return index  # the first folio's lru_add compacts the list (LruList.add)
    total = end - index
    prev, sys.current = sys.current, task
    try:
        # __alloc_pages() of each folio in turn: the same frames, in the same order, as
        # one allocation of all of them (a range when they are one run of the free stack)
        pfns = mem.alloc_run(total) if total <= mem.top_run() else mem.alloc(total)
        _charge_folios(sys, memcg, folios, task.cpu)
    finally:
        sys.current = prev
    _add_folios(sys, memcg, mapping, index, end, pfns, folios, mark)
    return end


def _threshold_room(sys: System, memcg, room: int) -> int:
    """room, or less: the pages that can be charged while no usage threshold of the
    group or an ancestor can be crossed, so that mem_cgroup_threshold() at the event
    checks finds nothing (0: none; the root's usage is read from statistics the folios
    change after their charges here).

    During the charges a level's usage stays within a few charge batches below its
    present usage (the per-CPU stock's pages given back: this group's, and one other
    group's slot evicted at a refill) and a charge batch above it plus the pages
    charged."""
    for m in memcg.ancestors():
        for memsw in (False, True):
            lst = m.memsw_thresholds if memsw else m.thresholds
            if not lst:
                continue
            if m.is_root():
                return 0
            usage = mem_cgroup_usage(sys, m, memsw)
            i = m.memsw_current_threshold if memsw else m.current_threshold
            if i >= 0 and lst[i][0] > usage - 4 * MEMCG_CHARGE_BATCH:
                return 0  # a crossing downwards is pending, or a drain could make one
            if i + 1 < len(lst):
                room = min(room, lst[i + 1][0] - usage - MEMCG_CHARGE_BATCH - 1)
    return room


def _charge_folios(sys: System, memcg, folios: list, cpu: int) -> None:
    """mem_cgroup_charge() of each folio, then commit_charge()'s page events, in turn
    (memcontrol.try_charge_memcg, page_events), where every charge passes at once.

    A folio of at most a charge batch takes it from the per-CPU stock if the stock
    covers it, else charges a batch and parks the rest (refill_stock); a larger one
    charges itself.  Nothing looks at the counters in between but refill_stock (a
    drain uncharges) and the soft-limit update of an event check (the tree is keyed
    with the usage then; mem_cgroup_threshold() finds nothing, _threshold_room): the
    charges before either are made together, just before it.
    The root's folios are not charged, only counted.
    """
    stock = sys.stock[cpu]
    events, target, soft = memcg.nr_page_events, memcg.thresh_target, memcg.softlimit_target
    val, thresh, soft_at = events[cpu], target[cpu], soft[cpu]
    slot = _stock_slot(stock, memcg)
    root = memcg.is_root()  # try_charge_memcg() charges nothing to the root
    held = 0
    for _, order in folios:
        nr = 1 << order
        if root:
            pass
        elif nr > MEMCG_CHARGE_BATCH:
            held += nr
        elif slot >= 0 and stock.nr_pages[slot] >= nr:
            stock.nr_pages[slot] -= nr  # consume_stock()
        else:
            held += MEMCG_CHARGE_BATCH
            if nr < MEMCG_CHARGE_BATCH:
                _charge(memcg, held)
                held = 0
                refill_stock(sys, memcg, MEMCG_CHARGE_BATCH - nr, cpu)
                slot = _stock_slot(stock, memcg)
        # mm/memcontrol-v1.c: memcg1_check_events - mem_cgroup_event_ratelimit
        val += nr
        if val - thresh < 0:
            continue
        thresh = val + THRESHOLDS_EVENTS_TARGET
        if val - soft_at >= 0:
            soft_at = val + SOFTLIMIT_EVENTS_TARGET
            _charge(memcg, held)
            held = 0
            events[cpu], target[cpu], soft[cpu] = val, thresh, soft_at
            memcg1_update_tree(sys, memcg)
    events[cpu], target[cpu], soft[cpu] = val, thresh, soft_at
    _charge(memcg, held)


def _stock_slot(stock, memcg) -> int:
    """The slot of this CPU's stock that caches memcg, or -1."""
    for i, cached in enumerate(stock.cached):
        if cached is memcg:
            return i
    return -1


def _charge(memcg, n: int) -> None:
    """The counters' side of successful charges of n pages (page_counter_try_charge of
    memsw, then of memory, every level passing)."""
    if n:
        memcg.memsw.charge(n)
        memcg.memory.charge(n)


def _add_folios(sys: System, memcg, mapping: AddressSpace, index: int, end: int,
                pfns, folios: list, mark: int) -> None:
    """filemap_add_folio() + folio_add_lru() of the folios (swap.folio_add_lru's page
    side), their refaults (workingset_refault: a shadow in a folio's range makes all its
    pages refaults) and the PG_readahead mark.  pfns: an array, or a range of frames."""
    mem = sys.mem
    n = end - index
    orders = [o for _, o in folios]
    order = orders[0] if orders.count(orders[0]) == len(orders) else -1
    shadow = mapping.slots[index:end] == SHADOW
    refaults = 0
    if shadow.any():
        if order >= 0:  # folios of one size, one after the other from index
            refaults = int(np.count_nonzero(shadow.reshape(-1, 1 << order).any(axis=1))) << order
        else:
            sizes = np.array([1 << o for o in orders], np.int64)
            starts = np.array([i - index for i, _ in folios], np.int64)
            refaults = int(sizes[np.add.reduceat(shadow, starts) > 0].sum())
    mem.large = True
    if isinstance(pfns, range):  # one run of frames: slices of the per-page arrays
        at = run_slice(pfns)
        mapping.slots[index:end] = np.arange(pfns.start, pfns.stop, pfns.step)
        mem.flags[at] = 0
        mem.mapping[at] = mapping.id
        put_in_run_order(mem.index, pfns, np.arange(index, end, dtype=np.uint32))
        if order >= 0:
            mem.order[at] = order
        else:
            put_in_run_order(mem.order, pfns,
                             np.repeat(np.array(orders, np.uint8), [1 << o for o in orders]))
        memcg.lruvec.lists[LRU_INACTIVE_FILE].add(mem, pfns)
        mem.memcg[at] = memcg.id
    else:
        at = pfns.astype(np.intp)  # indexed many times: NumPy takes np.intp as it is
        mapping.slots[index:end] = pfns
        mem.flags[at] = 0
        mem.mapping[at] = mapping.id
        mem.index[at] = np.arange(index, end, dtype=np.uint32)
        mem.order[at] = order if order >= 0 else \
            np.repeat(np.array(orders, np.uint8), [1 << o for o in orders])
        memcg.lruvec.lists[LRU_INACTIVE_FILE].add(mem, pfns)
        mem.memcg[at] = memcg.id
    stats = sys.stats
    stats.mod(memcg.id, NR_LRU_BASE + LRU_INACTIVE_FILE, n)
    stats.mod(memcg.id, NR_FILE_PAGES, n)
    stats.mod(memcg.id, PGPGIN, len(folios))  # one per folio (memcg1_charge_statistics)
    if refaults:
        stats.mod(memcg.id, WORKINGSET_REFAULT_FILE, refaults)
    if index <= mark < end:  # folio_set_readahead() of the (aligned) folio that holds it
        heads = [i for i, _ in folios]
        mapping.ra_marks.add(heads[bisect.bisect_right(heads, mark) - 1])
