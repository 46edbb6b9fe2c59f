"""Limit-reclaim episodes that evict only clean page cache, taken at once (mm/vmscan.c).

A write streaming through a full group (or a read without large folios) charges page
after page at the limit, and each charge that fails reclaims: try_to_free_mem_cgroup_pages()
-> do_try_to_free_pages() runs shrink_node() at priority 12, 11, ... until
SWAP_CLUSTER_MAX pages came back.  For a group without children whose lruvec holds
no anon pages, with no swap to scan for (or swappiness 0), each pass is
plain arithmetic: get_scan_count() scans the file lists only (size >> priority),
shrink_lruvec() isolates SWAP_CLUSTER_MAX pages at a time from the inactive file tail,
and when those pages are clean, unmapped by any young pte and not mlocked,
shrink_folio_list() evicts them all (__remove_mapping leaves shadows, the buffer heads
go with try_to_free_buffers); the active file list is only noted as skipped while
prepare_scan_control() does not let it be deactivated.

reclaim_clean_episode() works the passes out in plain integers from the list sizes
(as the kernel's heuristics read them: the flushed statistics on 6.18, the exact ones
on 3.8), checks that every page they reach is such a page, and applies them: the page
side (isolation, shadows, frame state) for the whole episode at once, and in the slow
path's order, batch by batch, everything that other state can see in between - the
buffer heads' uncharge and the slabs it empties, the file pages' count, the uncharge
and its page events, the frames going back to the free stack, vmpressure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

# vmscan imports this module for its seam; each needs the other only inside functions
from .. import memcontrol_v1, slab, vmpressure, vmscan
from ...fs import buffer
from ..memcontrol import (NR_FILE_PAGES, NR_LRU_BASE, OBJCG_POINTER_SIZE, PAGE_SHIFT, PGPGOUT,
                          PGSCAN, PGSTEAL, lruvec_page_state_lru, maybe_free_dying,
                          mem_cgroup_get_nr_swap_pages, mod_objcg_state,
                          obj_cgroup_uncharge_pages, page_events)
from ...kernel import PAGE_SIZE
from ..mmzone import (LRU_ACTIVE_ANON, LRU_ACTIVE_FILE, LRU_INACTIVE_ANON, LRU_INACTIVE_FILE,
                      PG_dirty, PG_mlocked, PG_swapbacked, PG_young, _chunk_pfns)

if TYPE_CHECKING:
    from ...system import System

# include/linux/swap.h: SWAP_CLUSTER_MAX (the most shrink_lruvec() scans of a list per
# round)
SWAP_CLUSTER_MAX = 32
# Pages whose isolation shrink_folio_list() would not end with their eviction.
_NOT_CLEAN = PG_young | PG_mlocked | PG_dirty | PG_swapbacked

def _tail(lst, n: int) -> np.ndarray:
    """The n oldest pages of a list without stale entries, oldest first (not isolated)."""
    out = []
    need = n
    for pfns, _, start in lst.chunks:
        if not need:
            break
        stop = min(len(pfns), start + need)
        out.append(_chunk_pfns(pfns, start, stop))
        need -= stop - start
    if len(out) == 1:
        return out[0]
    return np.concatenate(out) if out else np.empty(0, np.int32)


def _plan(sys: System, sc, memcg, lst) -> list | None:
    """The passes of do_try_to_free_pages() for this episode: [(priority, batch sizes)],
    with sc updated as the slow path leaves it; None when some pass would do more than
    evict pages from the inactive file list's tail or note the active list skipped."""
    DEACTIVATE_ANON, DEACTIVATE_FILE = vmscan.DEACTIVATE_ANON, vmscan.DEACTIVATE_FILE
    inactive_is_low = vmscan.inactive_is_low
    v38 = sys.semantics == "3.8"
    # prepare_scan_control()'s view of the lists: the flushed statistics (6.18) do not
    # move during the episode; 3.8's exact counters lose each pass's isolated pages
    ia = lruvec_page_state_lru(sys, memcg, LRU_INACTIVE_ANON)
    aa = lruvec_page_state_lru(sys, memcg, LRU_ACTIVE_ANON)
    inactive = lruvec_page_state_lru(sys, memcg, LRU_INACTIVE_FILE)
    active = lruvec_page_state_lru(sys, memcg, LRU_ACTIVE_FILE)
    anon_low = inactive_is_low(ia, aa)
    live, active_size = lst.nr, memcg.lruvec.size(LRU_ACTIVE_FILE)
    goal = sc.nr_to_reclaim
    evicted = 0
    passes = []
    while True:
        # prepare_scan_control()
        if sc.force_deactivate:
            sc.may_deactivate = DEACTIVATE_ANON | DEACTIVATE_FILE
        else:
            sc.may_deactivate = DEACTIVATE_ANON if anon_low else 0
            if inactive_is_low(inactive - evicted if v38 else inactive, active):
                sc.may_deactivate |= DEACTIVATE_FILE
        file = inactive - evicted if v38 else inactive
        sc.cache_trim_mode = bool(file >> sc.priority) and not (sc.may_deactivate & DEACTIVATE_FILE)
        # get_scan_count(): SCAN_FILE (the caller checked), the file lists by priority
        nr_if = (live - evicted) >> sc.priority
        nr_af = active_size >> sc.priority
        # shrink_lruvec()
        batches = []
        reclaimed = 0
        while nr_if or nr_af:
            if reclaimed < goal and not nr_if:
                # lruvec.skip_idle_rounds(): only the active list left
                if sc.may_deactivate & DEACTIVATE_FILE:
                    return None
                sc.skipped_deactivate = True
                break
            if nr_if:
                n = min(nr_if, SWAP_CLUSTER_MAX)
                nr_if -= n
                if n > live - evicted - 1:
                    return None  # the list would run out (or the group's usage)
                batches.append(n)
                evicted += n
                reclaimed += n
            if nr_af:
                nr_af -= min(nr_af, SWAP_CLUSTER_MAX)
                if sc.may_deactivate & DEACTIVATE_FILE:
                    return None  # shrink_active_list() would move pages
                sc.skipped_deactivate = True
            if reclaimed < goal:
                continue
            break  # reclaimed enough, and no anon to keep the scan's ratio with
        sc.nr_reclaimed += reclaimed
        scanned = sum(batches)
        sc.nr_scanned = scanned
        sc.total_scanned += scanned
        passes.append((sc.priority, batches))
        if sc.nr_reclaimed >= goal:
            break
        sc.priority -= 1
        if sc.priority < 0:
            break
    if not sc.nr_reclaimed:
        return None
    return passes


def _qualifies(sys: System, sc, memcg) -> bool:
    """The group and the scan control are of the kind the module's docstring names."""
    # (cgroup v2: the reclaim target itself is never protected - mem_cgroup_unprotected -
    # so memory.min and memory.low change nothing here)
    if sys.reclaim_trace is not None or sc.kswapd or sc.target is not memcg:
        return False
    if memcg.is_root() or memcg.children or not memcg.online or sc.memcg_full_walk:
        return False
    if sc.proactive_swappiness is not None:
        return False
    lists = memcg.lruvec.lists
    if lists[LRU_INACTIVE_ANON].nr or lists[LRU_ACTIVE_ANON].nr:
        return False
    lst = lists[LRU_INACTIVE_FILE]
    if lst.nr < 2 or lst.entries != lst.nr:  # stale entries: isolation skips over them
        return False
    # get_scan_count(): SCAN_FILE - no swap to reclaim anon into, or swappiness 0
    if sc.may_swap and mem_cgroup_get_nr_swap_pages(sys, memcg) > 0 and memcg.swappiness:
        return False
    # shrink_lruvec() ages the active anon list when swap is left and the flushed
    # statistics say it is large
    if sys.swap.nr_free > 0 and sc.may_swap:
        if vmscan.inactive_is_low(lruvec_page_state_lru(sys, memcg, LRU_INACTIVE_ANON),
                           lruvec_page_state_lru(sys, memcg, LRU_ACTIVE_ANON)):
            return False
    # shrink_slab(): 6.18 asks every shrinker of the group; with nothing to count it
    # does nothing (3.8 shrinks slab in global reclaim only)
    if sys.semantics != "3.8":
        for shrinker in sys.shrinkers:
            if shrinker.count_objects(sys, shrinker, memcg):
                return False
    return True


def _evictable(sys: System, memcg, pfns: np.ndarray):
    """The one address space of pfns, if shrink_folio_list() would evict every one of
    them as a clean small file page of it charged to memcg; else None."""
    from ..filemap import AddressSpace  # late: the page cache builds on vmscan
    mem = sys.mem
    f = mem.flags[pfns]
    if (np.bitwise_or.reduce(f) & _NOT_CLEAN) != 0:
        return None
    mids = mem.mapping[pfns]
    mid = mids[0]
    if mids[-1] != mid or not (mids == mid).all():
        return None
    mapping = sys.mappings.get(int(mid))
    if mapping is None or type(mapping) is not AddressSpace or mapping.kind != "file":
        return None
    owners = mem.memcg[pfns]
    if not (owners == memcg.id).all():
        return None
    if mem.large and mem.order[pfns].any():
        return None  # isolate_lru_folios() would take whole large folios
    return mapping


def reclaim_clean_episode(sys: System, sc) -> bool:
    """do_try_to_free_pages(sc) taken at once when its every pass only evicts clean file
    pages of the target's inactive list (see the module); False: nothing done."""
    memcg = sc.target
    span = sys.write_span
    if span is not None:
        # A span of writes keeps the page side of its batches for later: the episode is
        # planned on its view of the list, or the page side is done before the slow path.
        if span.memcg is memcg and span.nr >= 2 and _qualifies(sys, sc, memcg) \
                and _deferred_episode(sys, sc, memcg, span):
            return True
        span.flush()
    if memcg is None or not _qualifies(sys, sc, memcg):
        return False
    lst = memcg.lruvec.lists[LRU_INACTIVE_FILE]
    saved = (sc.priority, sc.nr_scanned, sc.total_scanned, sc.nr_reclaimed, sc.may_deactivate,
             sc.cache_trim_mode, sc.skipped_deactivate)
    passes = _plan(sys, sc, memcg, lst)
    total = sc.nr_reclaimed - saved[3] if passes is not None else 0
    mapping = _evictable(sys, memcg, _tail(lst, total)) if passes is not None else None
    if mapping is None:
        (sc.priority, sc.nr_scanned, sc.total_scanned, sc.nr_reclaimed, sc.may_deactivate,
         sc.cache_trim_mode, sc.skipped_deactivate) = saved
        return False
    _apply(sys, memcg, lst, mapping, total, passes, sc.nr_reclaimed >= sc.nr_to_reclaim)
    return True


def _apply(sys: System, memcg, lst, mapping, total: int, passes: list, met: bool) -> None:
    """The effects of the episode's passes (see the module's docstring)."""
    _count_scanned(sys, memcg, total)
    pfns, has = evict_tail(sys, lst, mapping, total)
    _apply_batches(sys, memcg, pfns.tolist(), has, passes, met)


def _count_scanned(sys: System, memcg, total: int) -> None:
    """isolate_lru_folios() of every batch, as the statistics count it: the list's size,
    the pages scanned and stolen."""
    stats = sys.stats
    stats.mod(memcg.id, NR_LRU_BASE + LRU_INACTIVE_FILE, -total)
    stats.mod(memcg.id, PGSCAN, total)
    stats.mod(memcg.id, PGSTEAL, total)


def buffers_of(mapping, pfns: np.ndarray, mem):
    """Which of the pages (of mapping) have buffer heads (None: no page of it has)."""
    if not mapping.buffers.any():
        return None
    return mapping.buffers[mem.index[pfns].astype(np.int64)]


def evict_tail(sys: System, lst, mapping, total: int):
    """The page side of an episode evicting the total oldest pages of lst, all of
    mapping: their isolation, shadow entries, buffers flags and frame state; the pages
    (oldest first) and which had buffers (None: none of mapping's pages had)."""
    from ..filemap import SHADOW  # late: the page cache builds on vmscan
    mem = sys.mem
    # isolate_lru_folios() of every batch: the list's tail
    pfns = lst.isolate(mem, total)
    lst.maybe_compact(mem)
    # __remove_mapping(): shadow entries, readahead marks; the frames' state is cleared
    # as free_unref_folios() clears it
    idx = mem.index[pfns].astype(np.int64)
    mapping.slots[idx] = SHADOW
    if mapping.ra_marks:
        mapping.ra_marks.difference_update(idx.tolist())
    has = mapping.buffers[idx] if mapping.buffers.any() else None
    if has is not None:
        mapping.buffers[idx] = False
    mem._clear(pfns)
    return pfns, has


def _apply_batches(sys: System, memcg, plist: list, has, passes: list, met: bool,
                   every: bool | None = None) -> None:
    """Everything of the episode's passes but the page side, batch by batch in the slow
    path's order: the buffer heads, the counts, the uncharges and their events, the
    frames going back to the free stack, vmpressure; plist: the pages, oldest first;
    has: which of them had buffers (buffers_of); every: all of them had (if known)."""
    mem = sys.mem
    cpu = sys.cpu
    target = memcg
    if every is None:
        every = has is not None and bool(has.all())
    # The batches' file-page counts, PGPGOUT and uncharges are added up while nothing
    # can read them: only the event check (a root threshold reads the statistics, the
    # others the usage), the OOM wake-up, a dying group's release and a vmpressure
    # window that fires look, and before each of them the pages so far are counted.
    pending = 0
    defer = not sys.dying
    vmpr = vmpressure.memcg_to_vmpressure(sys, target)
    events, thresh = memcg.nr_page_events, memcg.thresh_target
    # The buffer heads of the batches so far wait likewise, for their slab to empty
    # or for something to look at the stocks: see _free_buffers().
    buffers: list = []
    cache = sys.slab.caches.get("buffer_head")
    pos = 0
    for priority, batches in passes:
        if priority <= vmpressure.vmpressure_level_critical_prio:
            _free_buffers(sys, memcg, buffers, cpu)
            pending = _count_freed(sys, memcg, pending)
            vmpressure.vmpressure_prio(sys, target, priority)
        for n in batches:
            # AddressSpace.evict() of the batch: buffer heads, the file pages' count,
            # release_pages() -> uncharge_pages(), free_unref_folios()
            if has is not None:
                with_buffers = n if every else int(np.count_nonzero(has[pos:pos + n]))
                if with_buffers:
                    buffers.append(with_buffers)
                    # a slab these frees empty goes onto the free stack before the batch
                    if not defer or _empties_slab(cache, buffers):
                        _free_buffers(sys, memcg, buffers, cpu)
            pending += n
            val = events[cpu] + n
            if val - thresh[cpu] >= 0 or not defer:  # page_events() checks the events
                _free_buffers(sys, memcg, buffers, cpu)
                pending = _count_freed(sys, memcg, pending)
                page_events(sys, memcg, n, cpu)
            else:
                events[cpu] = val
            if memcg.under_oom:
                _free_buffers(sys, memcg, buffers, cpu)
                pending = _count_freed(sys, memcg, pending)
                memcontrol_v1.memcg1_oom_recover(sys, memcg)
            if not defer:
                maybe_free_dying(sys)
            mem.push_list(plist[pos:pos + n])
            mem.nr_free += n
            pos += n
        scanned = sum(batches)
        if vmpr.tree_scanned + scanned >= vmpressure.vmpressure_win:
            _free_buffers(sys, memcg, buffers, cpu)
            pending = _count_freed(sys, memcg, pending)
            vmpressure.vmpressure(sys, target, True, scanned, scanned)
        elif scanned:
            vmpr.tree_scanned += scanned
            vmpr.tree_reclaimed += scanned
    _free_buffers(sys, memcg, buffers, cpu)
    _count_freed(sys, memcg, pending)
    # mem_cgroup_iter_partial(): the last pass's walk stopped at the group if it
    # reached the goal, else went on to the end of the subtree
    target.reclaim_iter = target if met else None


def _deferred_episode(sys: System, sc, memcg, span) -> bool:
    """reclaim_clean_episode() inside a span of writes whose list is `span`'s view of
    lst (its page side kept for later): the episode taken, its page side left to the
    span; False: nothing done."""
    saved = (sc.priority, sc.nr_scanned, sc.total_scanned, sc.nr_reclaimed, sc.may_deactivate,
             sc.cache_trim_mode, sc.skipped_deactivate)
    # the same list sizes (and statistics, on 3.8) give the same passes
    key = (span.nr, memcg.lruvec.size(LRU_ACTIVE_FILE), sc.nr_to_reclaim,
           sc.force_deactivate, lruvec_page_state_lru(sys, memcg, LRU_INACTIVE_ANON),
           lruvec_page_state_lru(sys, memcg, LRU_ACTIVE_ANON),
           lruvec_page_state_lru(sys, memcg, LRU_INACTIVE_FILE),
           lruvec_page_state_lru(sys, memcg, LRU_ACTIVE_FILE)) + saved
    plan = span.plans.get(key)
    if plan is None:
        passes = _plan(sys, sc, memcg, span)
        span.plans[key] = plan = (passes, (sc.priority, sc.nr_scanned, sc.total_scanned,
                                           sc.nr_reclaimed, sc.may_deactivate,
                                           sc.cache_trim_mode, sc.skipped_deactivate))
    else:
        passes = plan[0]
        (sc.priority, sc.nr_scanned, sc.total_scanned, sc.nr_reclaimed, sc.may_deactivate,
         sc.cache_trim_mode, sc.skipped_deactivate) = plan[1]
    total = sc.nr_reclaimed - saved[3] if passes is not None else 0
    if span.clean is None:
        span.scan_tail()
    if passes is not None and span.gone + total <= span.clean:
        # within the list's clean tail of one file, checked once for the span
        gone = span.gone
        has = span.has[gone:gone + total] if span.has is not None else None
        _count_scanned(sys, memcg, total)
        mapping = span.clean_mapping
        span.evicted(mapping, total)
        _apply_batches(sys, memcg, span.clean_list[gone:gone + total], has, passes,
                       sc.nr_reclaimed >= sc.nr_to_reclaim,
                       span.all_buffers if has is None or span.all_buffers else None)
        return True
    pfns = span.tail(total) if passes is not None else None
    mapping = _evictable(sys, memcg, pfns) if pfns is not None else None
    if mapping is None:
        (sc.priority, sc.nr_scanned, sc.total_scanned, sc.nr_reclaimed, sc.may_deactivate,
         sc.cache_trim_mode, sc.skipped_deactivate) = saved
        return False
    _count_scanned(sys, memcg, total)
    has = buffers_of(mapping, pfns, sys.mem)
    span.evicted(mapping, total)
    _apply_batches(sys, memcg, pfns.tolist(), has, passes, sc.nr_reclaimed >= sc.nr_to_reclaim)
    return True


def _count_freed(sys: System, memcg, n: int) -> int:
    """The file-page count, PGPGOUT and uncharge of n evicted pages (0: what is left)."""
    if n:
        stats = sys.stats
        stats.mod(memcg.id, NR_FILE_PAGES, -n)
        stats.mod(memcg.id, PGPGOUT, n)
        memcg.memory.uncharge(n)
        memcg.memsw.uncharge(n)
    return 0


def _empties_slab(cache, buffers: list) -> bool:
    """Would freeing the buffer heads of these pages leave a slab of the cache empty
    (discard_slabs)?"""
    if cache is None:
        return True
    objects = cache.nr_objects - sum(buffers) * buffer.BH_PER_PAGE
    return cache.nr_pfns > -(-objects // cache.objs_per_slab) * cache.pages_per_slab


def _free_buffers(sys: System, memcg, buffers: list, cpu: int) -> None:
    """free_buffer_heads() of each batch's pages with buffers in `buffers`, one after the
    other, at once (and the list emptied): the slab statistic and the objects in one
    sum, and the per-CPU object stock's bytes batch by batch in integers, with its
    pages going back (obj_cgroup_uncharge_pages) when and as they did.  Only the last
    of them may empty a slab, and the objcg must be the stock's (else one by one)."""
    if not buffers:
        return
    objcg = memcg.orig_objcg
    stock = sys.obj_stock[cpu]
    count = sum(buffers) * buffer.BH_PER_PAGE
    if len(buffers) == 1 or objcg is None or stock.cached_objcg is not objcg or \
            memcg.buffer_heads < count:
        for n in buffers:
            buffer.free_buffer_heads(sys, memcg, n, cpu)
        buffers.clear()
        return
    # fs/buffer.c: free_buffer_head() -> kmem_cache_free() -> memcg_slab_free_hook():
    # mod_objcg_state() and obj_cgroup_uncharge() -> refill_obj_stock(allow_uncharge)
    cache = sys.slab.caches["buffer_head"]
    per = cache.object_size + OBJCG_POINTER_SIZE
    memcg.buffer_heads -= count
    cache.nr_objects -= count
    mod_objcg_state(sys, objcg, slab.cache_vmstat_idx("buffer_head"), -count * per)
    objcg.nr_live_bytes -= count * per
    nr_bytes = stock.nr_bytes
    for n in buffers:
        nr_bytes += n * buffer.BH_PER_PAGE * per
        if nr_bytes > PAGE_SIZE:
            nr_pages = nr_bytes >> PAGE_SHIFT
            nr_bytes &= PAGE_SIZE - 1
            stock.nr_bytes = nr_bytes
            obj_cgroup_uncharge_pages(sys, objcg, nr_pages, cpu)
    stock.nr_bytes = nr_bytes
    buffers.clear()
    slab.discard_slabs(sys, cache)
