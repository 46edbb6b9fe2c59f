"""The steady state of a large-folio read streaming through a full group, fast-forwarded.

With large folios (mm/readahead.c, 6.18) a long sequential read settles into windows of
ra_pages pages, each cut into folios of MAX_PAGECACHE_ORDER.  Reaching the PG_readahead
folio at a window's start reads the next window (page_cache_async_ra): at the group's
limit each of its folios fails its charge once, reclaims one folio from the tail of the
group's inactive file list (mm/vmscan.c: isolate_lru_folios counts the folio's pages) and
is added to the page cache; the read then marks the window's folios accessed.  Once P
consecutive windows had exactly the effects of the P before them, FolioStream applies
the next N*P at once, with the same checks as stream.StreamReclaim for a page-sized read
(equal phase, linear failure counts, identical reclaim and event traces, replayed
vmpressure windows and ratelimits, nothing that could signal), plus: every page of the
group is in a folio of the window's order, the windows skipped are whole, inside the
file and all holes (or all shadows), and the readahead state is in phase.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..filemap import HOLE, SHADOW
from ..memcontrol import PGPGIN, PGPGOUT, PGSCAN, PGSTEAL, WORKINGSET_REFAULT_FILE, hierarchy_margin
from ..mmzone import PG_referenced
from ..readahead import MAX_PAGECACHE_ORDER, ilog2
from ..vmscan import SWAP_CLUSTER_MAX
from .stream import (STREAM_MAX_PERIOD, StreamReclaim, _Accumulators, _stream_snapshot, stream_frames,
                     stream_frames_ok, stream_pages_ok)

if TYPE_CHECKING:
    from ...system import System
    from ...tasks import Task
    from ..filemap import AddressSpace
    from ..readahead import FileRaState


class FolioStream(StreamReclaim):
    """Watches the readahead windows of one large-folio filemap_read() (one step is the
    read from one PG_readahead folio to the next) and skips whole cycles of them."""

    def __init__(self, sys: System, task, mapping, ra: FileRaState):
        super().__init__(sys, task, mapping)
        self.ra = ra

    def _window(self) -> tuple[int, int] | None:
        """(pages, order) of the steady window, or None while the windows still ramp up."""
        ra = self.ra
        w = ra.size
        order = min(MAX_PAGECACHE_ORDER, ilog2(w)) if w else 0
        if not order or ra.async_size != w or ra.order != order or w % (1 << order) or \
                ra.start % (1 << order):
            return None
        return w, order

    def begin_window(self, q: int, nr: int) -> int:
        """Called when the read reaches the PG_readahead folio at q, before the next
        window is read.  Returns q, or the index of the marked folio after the skipped
        windows."""
        sys = self.sys
        sys.reclaim_trace = None
        win = self._window()
        if win is None or self.ra.start != q or self.watched >= 4 * STREAM_MAX_PERIOD or \
                self.memcg.is_root() or hierarchy_margin(self.memcg) >= 1 << win[1]:
            self.snaps.clear()
            return q
        w, order = win
        s = self.mapping.slots[q + w:q + 2 * w]
        kind = ("x" if len(s) < w else "h" if (s == HOLE).all() else
                "s" if (s == SHADOW).all() else "x")
        self.snaps.append(_stream_snapshot(sys, kind))
        if len(self.snaps) >= 3:
            skipped = self._search_windows(q, nr, w, order)
            if skipped:
                self.snaps.clear()
                self.watched = 0
                return q + skipped
        if len(self.snaps) > 2 * STREAM_MAX_PERIOD + 1:
            del self.snaps[0]
        sys.reclaim_trace = []
        return q

    def _search_windows(self, q: int, nr: int, w: int, order: int) -> int:
        snaps = self.snaps
        last = len(snaps) - 1
        now = snaps[last].phase
        for period in range(1, min(STREAM_MAX_PERIOD, last // 2) + 1):
            if snaps[last - period].phase == now and snaps[last - 2 * period].phase == now:
                done = self._try_windows(period, q, nr, w, order)
                if done:
                    return done
        return 0

    def _try_windows(self, period: int, q: int, nr: int, w: int, order: int) -> int:
        sys, memcg, mapping = self.sys, self.memcg, self.mapping
        snaps = self.snaps
        last = len(snaps) - 1
        a, b, c = snaps[last - 2 * period], snaps[last - period], snaps[last]
        first, second = snaps[last - 2 * period:last - period], snaps[last - period:last]
        kinds = {s.kind for s in first + second} | {c.kind}
        if len(kinds) != 1 or kinds == {"x"}:
            return 0
        trace = [e for s in second for e in s.trace]
        if trace != [e for s in first for e in s.trace]:
            return 0
        if any(s.nr_free - w < sys.wmark_low for s in first + second):
            return 0
        if tuple(y - x for x, y in zip(b.linear, c.linear)) != \
                tuple(y - x for x, y in zip(a.linear, b.linear)):
            return 0
        grow = c.stats - b.stats
        if not np.array_equal(grow, b.stats - a.stats):
            return 0
        pages = period * w
        want = np.zeros(grow.shape[1], np.int64)
        want[[PGPGIN, PGPGOUT]] = pages >> order  # one event per folio
        want[[PGSCAN, PGSTEAL]] = pages
        if kinds == {"s"}:
            want[WORKINGSET_REFAULT_FILE] = pages
        if not np.array_equal(grow[memcg.id], want) or \
                np.count_nonzero(grow) != np.count_nonzero(want):
            return 0
        acc = _Accumulators(trace)
        if not self._replay_matches(acc, b, c):
            return 0
        # Windows q + w .. of the same kind, whole and inside the file; each skipped step
        # ends at a marked folio the read still reaches (before nr).
        hi = min(mapping.i_size, len(mapping.slots))
        slots = mapping.slots[q + w:hi]
        match = (slots == HOLE) if kinds == {"h"} else (slots == SHADOW)
        bad = np.flatnonzero(~match)
        span = int(bad[0]) if len(bad) else len(slots)
        steps = min(span // w - 1, (nr - 1 - q) // w)
        n = steps // period
        if n < 1 or not stream_pages_ok(sys, memcg) or not self._uniform(order):
            return 0
        # Each folio's charge reclaims one folio from the tail (nr_to_reclaim is the
        # folio, at least SWAP_CLUSTER_MAX: mm/vmscan.c try_to_free_mem_cgroup_pages),
        # whose frames the next folio takes: replayable frame by frame.
        nr = 1 << order
        if nr < SWAP_CLUSTER_MAX or not stream_frames_ok(sys, memcg, mapping, (nr,), nr):
            return 0
        if any(m != q and q < m < q + (n * period + 2) * w for m in mapping.ra_marks):
            return 0
        n, state, fired = acc.run(acc.state_of(c.acc), n, self._forbidden(acc, trace))
        if n < 1:
            return 0
        self._apply_counters(acc, c, b, n, state, fired, grow)
        folio_stream_cycles(sys, self.task, mapping, q, w, n * period, order)
        self.ra.start = q + n * pages
        return n * pages

    def _uniform(self, order: int) -> bool:
        """Every page of the group is in a folio of this order: each charge at the limit
        reclaims exactly one folio from the tail."""
        mem = self.sys.mem
        pfns = np.flatnonzero(mem.memcg == self.memcg.id)
        return bool(len(pfns)) and bool((mem.order[pfns] == order).all())


def folio_stream_cycles(sys: System, task: Task, mapping: AddressSpace, q: int, w: int,
                        steps: int, order: int) -> None:
    """The page side of `steps` windows (FolioStream) read from the marked folio at q.

    Windows q + w .. q + (steps + 1) * w are added in folios of 2**order pages, at the head
    of the group's inactive file list in file order; the same number of the oldest pages
    of that list are evicted (shadow entries left), first the old ones, then those of the
    new windows the evictions reach; each folio takes the frames the folio its charge
    reclaimed gave back (stream.stream_frames, one folio per step).  Folios from q to
    q + steps * w that are still cached were read: PG_referenced.  The PG_readahead mark
    moves from q to q + steps * w.

    Counters and statistics are the caller's (FolioStream._apply_counters).
    """
    mem = sys.mem
    memcg = task.memcg
    total = steps * w
    end = q + steps * w  # the next marked folio
    nr = 1 << order
    # the old pages leave shadows (and their PG_readahead marks) in stream_frames
    pfns, gone = stream_frames(sys, memcg, q + w, total, (nr,), nr)
    mapping.slots[q + w:q + w + gone] = SHADOW
    keep = np.arange(q + w + gone, q + w + total, dtype=np.int64)
    mapping.slots[keep] = pfns
    mem.mapping[pfns] = mapping.id
    mem.memcg[pfns] = memcg.id
    mem.order[pfns] = order
    mem.flags[pfns] = np.where(keep < end, PG_referenced, 0).astype(np.uint8)
    first = mapping.slots[q:q + w]
    first = first[first >= 0]
    mem.flags[first] |= PG_referenced
    mapping.ra_marks.discard(q)
    mapping.ra_marks.add(end)
