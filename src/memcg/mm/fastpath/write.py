"""The steady state of a write streaming through a full group, fast-forwarded.

A task writing a file much larger than its group's limit settles into a cycle: every
write batch fails its charge at the limit (mm/memcontrol.c: try_charge_memcg) and
reclaims from the group (mm/vmscan.c: shrink_lruvec).  shrink_folio_list() sends the
dirty file folios it meets to writeback (PG_reclaim; folio_end_writeback cleans them)
and activates them, evicts the clean ones (__remove_mapping, a shadow entry left,
try_to_free_buffers uncharging their buffer heads), and shrink_active_list() ages the
active list into the inactive one; the new pages come in dirty (filemap_write) with
their buffer heads, kernel memory charged in bytes through the group's objcg stock
(fs/buffer.c: folio_alloc_buffers).

Unlike a read stream's, the group's lists hold pages in several states (dirty, written
back, referenced, on either list), so the cycle is recognised by the page state itself:
the lists as seen from the write position - each page's offset from it, its flags and
buffers, in LRU order - come back exactly after P batches, together with everything
StreamReclaim compares (usages, watermarks, stocks, slab caches, the RNG, queues), with
the same growth of the statistics and failure counters and the same trace.  The next
N*P batches then do exactly what those P did, shifted along the file: StreamWrite
applies them at once.  The pages of the lists stay where they are and only move along
the file (each keeps its frame, flags and LRU position); everything the skipped
batches wrote and evicted is left as a shadow entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..filemap import FILEMAP_BATCH, SHADOW, AddressSpace
from ..memcontrol import (MEMCG_SWAP, NR_ANON_MAPPED, NR_ANON_THPS, NR_FILE_DIRTY,
                          NR_FILE_MAPPED, NR_FILE_PAGES, NR_LRU_BASE, NR_SHMEM,
                          NR_SWAPCACHE, NR_WRITEBACK)
from ..mmzone import NR_LRU_LISTS
from .stream import StreamReclaim, _Accumulators, _stream_snapshot

if TYPE_CHECKING:
    from ...system import System
    from ...tasks import Task

# Whether filemap_write() takes the fast path.  Off for now: the skipped cycles leave
# each cached page in the frame it had, where the batch-by-batch path would have moved
# it to another (everything but frame numbers is the same); fastpath.stream gives every
# page the frame the slow path gives it, and this one must too before it is on.
STREAM_WRITES = False

# The longest cycle looked for, in write batches.  A cycle must bring back the slab
# pages of the buffer heads and the objcg stock's bytes too (64 pages of buffer heads
# are 7168 bytes: 1.75 pages), and the written-back pages' way through the active list,
# so it is longer than a read stream's.
WRITE_MAX_PERIOD = 256
# Batches watched without a skip before the detector gives up for this write.
WRITE_MAX_WATCH = 8 * WRITE_MAX_PERIOD
# Statistics that are state, not events: a cycle must bring them back.
STATE_ITEMS = [NR_FILE_PAGES, NR_ANON_MAPPED, NR_ANON_THPS, NR_SHMEM, NR_FILE_MAPPED,
               NR_FILE_DIRTY, NR_WRITEBACK, MEMCG_SWAP, NR_SWAPCACHE] + \
    list(range(NR_LRU_BASE, NR_LRU_BASE + NR_LRU_LISTS))
# The files whose watchers memcg_memory_event() notifies (cgroup_file_notify).
EVENT_FILES = ("memory.events", "memory.events.local", "memory.swap.events")


def _objcg_state(objcg) -> tuple:
    if objcg is None:
        return ()
    return (id(objcg), objcg.nr_charged_bytes, objcg.nr_pages, objcg.nr_live_bytes)


def _kmem_state(sys: System) -> tuple:
    """The slab side a cycle must bring back: every cache's objects and slabs, each
    group's buffer heads and objcgs, and the statistics as last flushed."""
    caches = [(c.nr_objects, c.nr_slabs, c.nr_pfns) for c in sys.slab.caches.values()]
    groups = []
    for mid, m in sorted(sys.memcgs.items()):
        groups.append((mid, m.buffer_heads, m.kmem_active, m.high_work_pending,
                       _objcg_state(m.objcg), _objcg_state(m.orig_objcg),
                       tuple(_objcg_state(o) for o in m.objcg_list),
                       tuple((c.nr_objects, c.nr_slabs, c.nr_pfns) for c in m.memcg_slab_caches)))
    return (tuple(caches), tuple(groups), sys.stats.flushed.tobytes())


def write_page_state(sys: System, mapping: AddressSpace, pos: int):
    """Every group's LRU lists in order as seen from write position pos: for each page
    its address space, its index (for mapping's pages, the offset from pos), flags,
    order and (mapping's pages) buffers.  None when a page of mapping lies at or beyond
    pos, or off the LRU lists: a cycle could not be a shift of the lists then."""
    mem = sys.mem
    out = []
    ours_total = 0
    for mid, m in sorted(sys.memcgs.items()):
        for lst in m.lruvec.lists:
            if not lst.nr:
                out.append(None)
                continue
            pfns = lst.pages(mem)
            mids = mem.mapping[pfns]
            idx = mem.index[pfns].astype(np.int64)
            ours = mids == mapping.id
            nr_ours = int(np.count_nonzero(ours))
            bufs = b""
            if nr_ours:
                if int(idx[ours].max()) >= pos:
                    return None
                bufs = mapping.buffers[idx[ours]].tobytes()
                idx = np.where(ours, idx - pos, idx)
                ours_total += nr_ours
            out.append((mids.tobytes(), idx.tobytes(), mem.flags[pfns].tobytes(),
                        mem.order[pfns].tobytes() if mem.large else b"", bufs))
    if ours_total != int(np.count_nonzero(mapping.slots >= 0)):
        return None
    return tuple(out)


class StreamWrite(StreamReclaim):
    """Watches the batches of one filemap_write() and fast-forwards its steady state.

    Conditions checked before N cycles of P batches are applied at once:
    - the last 2P batches ran at the group's limit and formed two cycles with equal
      effects, as StreamReclaim requires (everything in its snapshot came back, failcnt,
      memory.events and sys.stats grew by the same amounts, the traces were identical,
      free pages stayed above the low watermark), and the slab caches, buffer heads,
      objcgs and flushed statistics came back too (_kmem_state);
    - the statistics that are state (page counts, LRU sizes, dirty pages) came back:
      only event counts grow;
    - every batch of the two cycles wrote pages that were not cached (holes or shadow
      entries: filemap_write treats both alike), and so do the batches skipped;
    - the page state seen from the write position (write_page_state) at the start of
      the second cycle was that at its end (or, when it was not kept then, at the end of
      a further cycle): every page of every group's LRU
      lists in the same order, with the same flags, the written file's pages at the
      same offsets behind the write position with the same buffers, none ahead of it;
    - the ratelimited checks and vmpressure windows of the skipped cycles are replayed
      and forbidden where they could do more than count (StreamReclaim._forbidden), and
      nobody watches the memory.events files;
    - the written file has no PG_readahead marks (from an earlier read) for the
      evictions to drop.
    """

    def __init__(self, sys: System, task: Task, mapping: AddressSpace):
        super().__init__(sys, task, mapping)
        self.batch = 0  # batches begun
        # period -> (batch, page state at its start) of a cycle being confirmed
        self.pending: dict = {}

    def begin(self, start: int, nr: int) -> int:
        """Called before the write batch at start runs in the slow path.

        Returns start, or the start of the first batch after the cycles it skipped.
        """
        sys = self.sys
        sys.reclaim_trace = None
        self.batch += 1
        if self.watched >= WRITE_MAX_WATCH or not self._at_limit():
            self.snaps.clear()
            self.pending.clear()
            return start
        s = self.mapping.slots[start:min(nr, start + FILEMAP_BATCH)]
        snap = _stream_snapshot(sys, "h" if (s < 0).all() else "x")
        snap.phase = snap.phase + (_kmem_state(sys),)
        snap.batch = self.batch
        self.snaps.append(snap)
        if len(self.snaps) >= 3:
            skipped = self._search(start, nr)
            if skipped:
                self.snaps.clear()
                self.pending.clear()
                self.watched = 0
                return start + skipped
        if len(self.snaps) > 2 * WRITE_MAX_PERIOD + 1:
            del self.snaps[0]
        sys.reclaim_trace = []
        return start

    def _search(self, start: int, nr: int) -> int:
        """Look for a cycle of P batches repeated twice up to now; pages skipped or 0."""
        snaps = self.snaps
        last = len(snaps) - 1
        now = snaps[last].phase
        for period in range(1, min(WRITE_MAX_PERIOD, last) + 1):
            if snaps[last - period].phase != now:
                continue
            if period <= last // 2 and snaps[last - 2 * period].phase == now:
                found = self._cycle(snaps, period, start, nr)
                if found is not None:
                    return found
            else:
                self._propose(period, snaps[last].batch, start)
        return 0

    def _propose(self, period: int, batch: int, start: int) -> None:
        """The phase came back after period batches once: keep the page state now, so
        that the cycle can be confirmed when the phase comes back a second time."""
        p = self.pending.get(period)
        if p is not None and batch - p[0] < period:
            return  # a cycle from p[0] is being confirmed
        state = write_page_state(self.sys, self.mapping, start)
        if state is not None:
            self.pending[period] = (batch, state)

    def _cycle(self, snaps: list, period: int, start: int, nr: int) -> int | None:
        """Check a cycle of period batches; None if it is not one, else the pages skipped
        (0 while the page state is being confirmed over one more cycle)."""
        sys = self.sys
        last = len(snaps) - 1
        a, b, c = snaps[last - 2 * period], snaps[last - period], snaps[last]
        first, second = snaps[last - 2 * period:last - period], snaps[last - period:last]
        if any(s.kind != "h" for s in first + second):
            return None
        trace = [e for s in second for e in s.trace]
        if trace != [e for s in first for e in s.trace]:
            return None
        if any(s.nr_free - FILEMAP_BATCH < sys.wmark_low for s in first + second):
            return None
        if tuple(y - x for x, y in zip(b.linear, c.linear)) != \
                tuple(y - x for x, y in zip(a.linear, b.linear)):
            return None
        grow = c.stats - b.stats
        if not np.array_equal(grow, b.stats - a.stats) or grow[:, STATE_ITEMS].any():
            return None
        acc = _Accumulators(trace)
        if not self._replay_matches(acc, b, c):
            return None
        if any(sys.file_watchers.get((mid, name)) for mid in sys.memcgs for name in EVENT_FILES):
            return None
        if self.mapping.ra_marks:
            return None  # evictions would drop PG_readahead marks (filemap.AddressSpace.evict)
        pages = period * FILEMAP_BATCH
        p = self.pending.get(period)
        if p is not None and c.batch - p[0] < period:
            return 0  # a cycle from p[0] is being confirmed
        state = write_page_state(sys, self.mapping, start)
        if state is None:
            return None
        if p is None or p[0] != c.batch - period or p[1] != state:
            # confirm over the next cycle that the page state comes back
            self.pending[period] = (c.batch, state)
            return 0
        # How many cycles: whole batches of uncached slots, before the write ends.
        slots = self.mapping.slots[start:(nr // FILEMAP_BATCH) * FILEMAP_BATCH]
        bad = np.flatnonzero(slots >= 0)
        span = int(bad[0]) if len(bad) else len(slots)
        n = span // pages
        if n < 1:
            return None
        n, acc_state, fired = acc.run(acc.state_of(c.acc), n, self._forbidden(acc, trace))
        if n < 1:
            return None
        self._apply_counters(acc, c, b, n, acc_state, fired, grow)
        filemap_write_cycles(sys, self.mapping, start, n * pages)
        return n * pages


def filemap_write_cycles(sys: System, mapping: AddressSpace, start: int, n: int) -> None:
    """The page side of n streamed pages written from start (StreamWrite): every cached
    page of mapping moves n pages along the file, keeping its frame, flags, buffers and
    LRU position; the pages it leaves and the pages [start, start + n) that it does not
    reach were written and evicted on the way, and hold shadow entries.

    Counters and statistics are the caller's: it adds the growth of the cycles it skips.
    """
    slots = mapping.slots
    idx = np.flatnonzero(slots >= 0)
    pfns = slots[idx]
    bufs = mapping.buffers[idx]
    slots[idx] = SHADOW
    mapping.buffers[idx] = False
    slots[start:start + n] = SHADOW
    new = idx + n
    slots[new] = pfns
    mapping.buffers[new] = bufs
    sys.mem.index[pfns] = new
