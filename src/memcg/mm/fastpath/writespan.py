"""File writes through a full group, many FILEMAP_BATCH batches at once
(mm/filemap.c generic_perform_write, mm/memcontrol.c try_charge_memcg, mm/vmscan.c).

filemap_write() takes a file's new pages in batches of FILEMAP_BATCH: allocate the
frames, charge them one page at a time, attach buffer heads (whose charge may reclaim
too), and put them on the inactive file list, dirty.  With the group at its limit, the
charges reclaim episodes of the list's oldest pages, clean page cache written earlier
(fastpath.cleanfile).  Most of what a batch costs is its page side: the episodes'
isolation, shadow entries and frame state, and the new pages' state and list add.

While nothing but those episodes looks at the list and the frames' page state, a span
of batches is taken with the page side kept for later (WriteSpan): everything else -
the charges, stocks, object stocks and slabs, the events, vmpressure, the free stack -
runs as the slow path runs it, batch by batch; each episode is planned on the span's
view of the list (its size: the pages added less the pages evicted; its tail: the
oldest pages of the list as it was, after those evicted) and its page side noted; and
at the end (or when anything else is about to look: an episode the fast path declines,
a charge that fails) the evictions are done in one go and then the adds, which is the
page state the batches one by one leave, since the episodes never reach the pages the
span added.  The statistics move when the slow path moves them.

Declined (nothing done): a group with thresholds, a soft limit, pressure listeners,
memory.events watchers, user-space shrinkers or work due, the root, v2, a dying group
or OOM in reach, an active memcg, free memory near the watermarks, a write over
pages already cached.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import page_alloc, slab
from ..filemap import FILEMAP_BATCH, AddressSpace, write_new_pages
from ..memcontrol import (NR_FILE_DIRTY, NR_FILE_PAGES, NR_LRU_BASE, OBJCG_POINTER_SIZE, PGPGIN,
                          mod_objcg_state, page_events, set_active_memcg)
from ..mmzone import LRU_ACTIVE_ANON, LRU_INACTIVE_ANON, LRU_INACTIVE_FILE, PG_dirty
from ...fs import buffer
from . import cleanfile, swapout

if TYPE_CHECKING:
    from ...system import System
    from ...tasks import Task

# The most batches in one span (bounds the span's frames kept for later)
SPAN_BATCHES_MAX = 256
# Free frames a batch may take at most besides its pages (the buffer heads' slab pages)
_SLAB_PAGES_PER_BATCH = 8


class WriteSpan:
    """The page side of a span of write batches kept for later: the episodes' evictions
    (mapping, pages) and the new pages (mapping, indices, frames), in their order.  Its
    `nr` is the size of the inactive file list as the batches leave it."""

    __slots__ = ("sys", "memcg", "lst", "gone", "added", "evictions", "adds", "plans",
                 "clean", "clean_mapping", "clean_list", "has", "all_buffers")

    def __init__(self, sys: System, memcg) -> None:
        self.sys = sys
        self.memcg = memcg
        self.lst = memcg.lruvec.lists[LRU_INACTIVE_FILE]
        self.gone = 0  # pages of the list evicted, not yet isolated
        self.added = 0  # pages added, not yet on the list
        self.evictions: list = []
        self.adds: list = []
        self.plans: dict = {}  # the episodes' plans by what they read (cleanfile)
        self.clean = None

    def scan_tail(self) -> None:
        """The list's oldest pages that an episode would evict as they are (clean, not
        young, not mlocked, small, of one file, charged to the group: cleanfile._evictable),
        checked at once: `clean` of them, as a list of frames, and their buffers."""
        sys, lst = self.sys, self.lst
        self.clean = 0
        self.clean_mapping = None
        self.clean_list = []
        self.has = None
        self.all_buffers = False
        n = lst.nr - 1
        if n <= 0:
            return
        mem = sys.mem
        pfns = cleanfile._tail(lst, n)
        mids = mem.mapping[pfns]
        mapping = sys.mappings.get(int(mids[0]))
        if type(mapping) is not AddressSpace or mapping.kind != "file":
            return
        bad = (mem.flags[pfns] & cleanfile._NOT_CLEAN) != 0
        bad |= mids != mids[0]
        bad |= mem.memcg[pfns] != self.memcg.id
        if mem.large:
            bad |= mem.order[pfns] != 0
        first = np.flatnonzero(bad)
        clean = int(first[0]) if len(first) else n
        pfns = pfns[:clean]
        self.clean = clean
        self.clean_mapping = mapping
        self.clean_list = pfns.tolist()
        has = cleanfile.buffers_of(mapping, pfns, mem)
        self.has = has
        self.all_buffers = has is not None and bool(has.all())

    @property
    def nr(self) -> int:
        """lst.nr as the batches so far leave it."""
        return self.lst.nr - self.gone + self.added

    def tail(self, total: int):
        """The total oldest pages of the list after those evicted (None: they would
        reach pages the span added)."""
        lst = self.lst
        if self.gone + total > lst.nr - 1:
            return None
        return cleanfile._tail(lst, self.gone + total)[self.gone:]

    def evicted(self, mapping, total: int) -> None:
        """An episode evicted the total oldest pages (all of mapping)."""
        ev = self.evictions
        if ev and ev[-1][0] is mapping:
            ev[-1][1] += total
        else:
            ev.append([mapping, total])
        self.gone += total

    def add(self, mapping, idx: np.ndarray, pfns: np.ndarray) -> None:
        """folio_add_lru() of new dirty file pages: the page side kept for later."""
        self.adds.append((mapping, idx, pfns))
        self.added += len(pfns)

    def flush(self) -> None:
        """Do the page side kept so far: the evictions, then the adds."""
        sys, lst = self.sys, self.lst
        for mapping, total in self.evictions:
            cleanfile.evict_tail(sys, lst, mapping, total)
        self.evictions.clear()
        self.gone = 0
        if self.adds:
            mem = sys.mem
            mid = self.memcg.id
            for mapping, idx, pfns in self.adds:
                mem.flags[pfns] = PG_dirty
                mem.mapping[pfns] = mapping.id
                mem.index[pfns] = idx
                mem.memcg[pfns] = mid
            pfns = (self.adds[0][2] if len(self.adds) == 1
                    else np.concatenate([p for _, _, p in self.adds]))
            lst.add(mem, pfns)
            self.adds.clear()
            self.added = 0
        # the slow path may move pages now: the tail is looked at again when needed
        self.clean = None


def _context_ok(sys: System, task: Task, memcg) -> bool:
    """Nothing but the episodes can look at the list or the frames during the span."""
    if (memcg.is_root() or not memcg.online or sys.reclaim_trace is not None
            or sys.cgroup_dfl or sys.active_memcg is not None or sys.write_span is not None):
        return False
    if not swapout.charges_unobserved(sys, memcg, task) or \
            any(m.under_oom for m in memcg.ancestors()):
        return False
    lists = memcg.lruvec.lists
    lst = lists[LRU_INACTIVE_FILE]
    # anon pages would take other reclaim (the active file list only counts: nothing
    # in a span moves pages to or from it); stale entries other isolation
    if lists[LRU_INACTIVE_ANON].nr or lists[LRU_ACTIVE_ANON].nr:
        return False
    return lst.entries == lst.nr


def take_span(sys: System, task: Task, mapping: AddressSpace, start: int, nr: int) -> int:
    """Write a span of mapping's next batches from index start (new pages only) with
    their page side done at once; the pages taken (0: none, nothing done).  Raises
    OSError as filemap_write() does when a charge fails."""
    k_max = min((nr - start) // FILEMAP_BATCH, SPAN_BATCHES_MAX)
    if k_max < 2 or type(mapping) is not AddressSpace or mapping.kind != "file":
        return 0
    memcg = task.memcg
    if not _context_ok(sys, task, memcg):
        return 0
    mem = sys.mem
    ahead = mapping.slots[start:start + k_max * FILEMAP_BATCH]
    cached = np.flatnonzero(ahead >= 0)
    if len(cached):
        k_max = min(k_max, int(cached[0]) // FILEMAP_BATCH)
        if k_max < 2:
            return 0
    # free memory stays above the low watermark: no kswapd, no direct reclaim
    room = (mem.nr_free - sys.wmark_low) // (FILEMAP_BATCH + _SLAB_PAGES_PER_BATCH) - 1
    k_max = min(k_max, room)
    if k_max < 2:
        return 0
    span = WriteSpan(sys, memcg)
    sys.write_span = span
    stats = sys.stats
    cpu = task.cpu
    mid = memcg.id
    done = 0
    try:
        for b in range(k_max):
            if mem.nr_free - (FILEMAP_BATCH + _SLAB_PAGES_PER_BATCH) < sys.wmark_low:
                break
            lo = start + b * FILEMAP_BATCH
            idx = np.arange(lo, lo + FILEMAP_BATCH, dtype=np.int64)
            pfns, ret = page_alloc.alloc_and_charge(sys, task, memcg, FILEMAP_BATCH,
                                                    user_fault=False)
            if ret or len(pfns) < FILEMAP_BATCH:
                # the slow path's end of this batch, on the page state made whole
                span.flush()
                sys.write_span = None
                _finish_batch(sys, task, mapping, idx, pfns, ret)
                return done + FILEMAP_BATCH  # (not reached when ret: it raises)
            mapping.slots[lo:lo + FILEMAP_BATCH] = pfns
            # the new folios stay locked while their buffers are attached (filemap_write)
            if not _alloc_buffers_from_stock(sys, task, memcg, FILEMAP_BATCH):
                buffer.folio_alloc_buffers(sys, task, memcg, FILEMAP_BATCH)
            mapping.buffers[lo:lo + FILEMAP_BATCH] = True
            # folio_add_lru(): the statistics and the commit's events now, the page side
            # with the span's
            n = FILEMAP_BATCH
            stats.mod(mid, NR_LRU_BASE + LRU_INACTIVE_FILE, n)
            stats.mod(mid, NR_FILE_PAGES, n)
            stats.mod(mid, NR_FILE_DIRTY, n)
            stats.mod(mid, PGPGIN, n)
            span.add(mapping, idx, pfns)
            page_events(sys, memcg, n, cpu)
            if mapping.dirtied_when is None:  # the flusher finds the inode dirty
                mapping.dirtied_when = sys.clock.now
            done += FILEMAP_BATCH
    finally:
        if sys.write_span is span:
            span.flush()
            sys.write_span = None
    return done


def _alloc_buffers_from_stock(sys: System, task: Task, memcg, nr_pages: int) -> bool:
    """fs/buffer.c: folio_alloc_buffers() of nr_pages new pages when the CPU's object
    stock holds the objects' bytes for the group's objcg (obj_cgroup_charge ->
    consume_obj_stock); False: nothing done (the caller takes the whole path)."""
    if sys.semantics == "3.8" or not sys.kmem_key.enabled:
        return False
    objcg = memcg.objcg
    stock = sys.obj_stock[task.cpu]
    cache = sys.slab.caches["buffer_head"]
    count = nr_pages * buffer.BH_PER_PAGE
    size = count * (cache.object_size + OBJCG_POINTER_SIZE)  # obj_full_size()
    if objcg is None or stock.cached_objcg is not objcg or stock.nr_bytes < size:
        return False
    # kmem_cache_alloc() -> slab_alloc_node(): the slab pages first (free memory is
    # far above the watermarks in a span), then memcg_slab_post_alloc_hook()
    sys.kmem_key.hits += 1
    old = set_active_memcg(sys, memcg)
    try:
        ret = slab.allocate_slab(sys, cache, count, task)
    finally:
        set_active_memcg(sys, old)
    assert not ret
    stock.nr_bytes -= size
    objcg.nr_live_bytes += size
    mod_objcg_state(sys, objcg, slab.cache_vmstat_idx("buffer_head"), size)
    cache.nr_objects += count
    memcg.buffer_heads += count
    return True


def _finish_batch(sys: System, task: Task, mapping, idx, pfns, ret: int) -> None:
    """The rest of filemap_write()'s batch after a charge that failed (or came short)."""
    write_new_pages(sys, task, mapping, idx, pfns, ret)
    mapping.dirtied_when = sys.clock.now if mapping.dirtied_when is None else mapping.dirtied_when
