"""Walks of soft-limit reclaim that evict clean page cache, taken at once (mm/vmscan.c).

mem_cgroup_soft_reclaim() (memcg1_soft_limit_reclaim -> mm/memcontrol-v1.c) shrinks the
group furthest over its soft limit walk after walk, each walk one mem_cgroup_shrink_node()
of SWAP_CLUSTER_MAX pages at priority 0, until the excess is gone or a quarter of it was
reclaimed (MEM_CGROUP_MAX_RECLAIM_LOOPS walks at most).  For a group without children
whose lruvec holds only inactive file pages that are clean, unmapped by any young pte and
not mlocked, every walk is the same: get_scan_count() scans the whole inactive file list,
shrink_lruvec() isolates SWAP_CLUSTER_MAX pages from its tail and the rest of the last
folio (isolate_lru_folios), shrink_folio_list() evicts them all (FOLIOREF_RECLAIM_CLEAN,
__remove_mapping leaves shadows) and the reclaimed-enough check ends the lruvec's scan.

soft_reclaim_walks() works out the pages of each walk from the list's tail (where each
folio's run of pages starts, found for the whole tail at once), the walk at which the
loop ends, and applies them: the uncharges and their page events walk by walk in plain
integers (the event ratelimit may re-key the soft-limit tree between walks, as the slow
path does, and only that looks at the counters), the page side for all walks at once,
the frames freed walk by walk in the order the slow path frees them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..filemap import SHADOW, AddressSpace
from ..memcontrol import (NR_FILE_PAGES, NR_LRU_BASE, PGPGOUT, PGSCAN, PGSTEAL,
                          SOFTLIMIT_EVENTS_TARGET, THRESHOLDS_EVENTS_TARGET,
                          lruvec_page_state_lru, maybe_free_dying, page_events)
from ..memcontrol_v1 import MEM_CGROUP_MAX_RECLAIM_LOOPS, memcg1_update_tree
from ..mmzone import (LRU_ACTIVE_ANON, LRU_INACTIVE_ANON, LRU_INACTIVE_FILE, PG_dirty,
                      PG_mlocked, PG_swapbacked, PG_young, _chunk_pfns)

if TYPE_CHECKING:
    from ...system import System
    from ..memcontrol import MemCgroup

# include/linux/swap.h: SWAP_CLUSTER_MAX (mem_cgroup_shrink_node's nr_to_reclaim, and
# the most shrink_lruvec() scans of a list per batch)
SWAP_CLUSTER_MAX = 32
# Pages whose isolation the slow path would not end with their eviction.
_NOT_CLEAN = PG_young | PG_mlocked | PG_dirty | PG_swapbacked


def _walkable(sys: System, victim: MemCgroup) -> bool:
    """The group is one every walk treats alike (see the module's docstring)."""
    if sys.reclaim_trace is not None or sys.cgroup_dfl or victim.is_root() or \
            victim.children or not victim.online or victim.under_oom:
        return False
    lists = victim.lruvec.lists
    if any(lists[lru].nr for lru in range(len(lists)) if lru != LRU_INACTIVE_FILE):
        return False
    lst = lists[LRU_INACTIVE_FILE]
    if not lst.nr or lst.entries != lst.nr:  # stale entries: isolation skips over them
        return False
    for m in victim.ancestors():
        if m.thresholds or m.memsw_thresholds:
            return False  # mem_cgroup_threshold() at the page events could signal
    # shrink_lruvec() ages the active anon list when swap is left and the flushed
    # statistics say it is large (shrink_active_list of an empty list may compact it)
    if sys.swap.nr_free > 0 and _anon_inactive_is_low(sys, victim):
        return False
    return True


def _anon_inactive_is_low(sys: System, memcg: MemCgroup) -> bool:
    from ..vmscan import inactive_is_low  # late: vmscan reaches this module at its seam
    return inactive_is_low(lruvec_page_state_lru(sys, memcg, LRU_INACTIVE_ANON),
                           lruvec_page_state_lru(sys, memcg, LRU_ACTIVE_ANON))


def _distinct(ids: np.ndarray) -> list[int]:
    """The distinct values of ids, ascending (one comparison when they are all one)."""
    if not len(ids):
        return []
    first = ids[0]
    if ids[-1] == first and (ids == first).all():
        return [int(first)]
    return np.unique(ids).tolist()


def _tail(lst, n: int) -> np.ndarray:
    """The n oldest pages of a list without stale entries, oldest first (not isolated),
    as np.intp: the per-page arrays are indexed with them many times, and NumPy would
    convert narrower indices at each of those."""
    out = []
    need = n
    for pfns, _, start in lst.chunks:
        if not need:
            break
        stop = min(len(pfns), start + need)
        out.append(_chunk_pfns(pfns, start, stop))
        need -= stop - start
    if not out:
        return np.empty(0, np.intp)
    return np.concatenate(out).astype(np.intp, copy=False)


class _Tail:
    """The oldest pages of the list, with what the walks need to know of them: each
    page's address space and folio order, looked up once; where the run of pages of a
    folio that ends at a page starts, when first needed."""

    def __init__(self, sys: System, pfns: np.ndarray):
        mem = sys.mem
        self.mem = mem
        self.pfns = pfns
        self.mids = mem.mapping[pfns]
        self.large = mem.large
        self.orders = mem.order[pfns] if self.large else None

    def run_starts(self) -> np.ndarray | None:
        """For each page, the first of the pages before it, in the tail's order, that
        are in its folio without a page of another folio between them: where
        MemMap.folio_tail_missing()'s trailing run of an isolation ending at that page
        starts, if the isolation starts no later.

        That trailing run takes the pages before the last one while their address
        space and index >> (the last one's order) are the last one's; neighbours with
        the same address space, order and index >> order are in one folio.  The two
        agree unless some neighbour of another order passes the first test (no folio of
        the page cache overlaps another): None then, the walks are sized one by one.
        """
        mids, orders = self.mids, self.orders
        index = self.mem.index[self.pfns]
        key = index >> orders
        same_mid = mids[1:] == mids[:-1]
        same_order = orders[1:] == orders[:-1]
        if (same_mid & ~same_order & ((index[:-1] >> orders[1:]) == key[1:])).any():
            return None
        cut = np.flatnonzero(~(same_mid & same_order & (key[1:] == key[:-1]))) + 1
        starts = np.zeros(len(mids), np.intp)
        starts[cut] = cut
        return np.maximum.accumulate(starts)

    def trailing_run(self, pos: int, last: int, size: int) -> int:
        """MemMap.folio_tail_missing()'s run: of the isolated pages pos..last, how many
        at the end are in the folio of the last one (at most its size)."""
        lo = max(pos, last + 1 - size)
        pfns = self.pfns[lo:last + 1]
        order = int(self.orders[last])
        mids = self.mids[lo:last + 1]
        folio = self.mem.index[pfns] >> order
        same = (mids == mids[-1]) & (folio == folio[-1])
        if same.all():
            return len(same)
        return len(same) - (int(np.flatnonzero(~same)[-1]) + 1)

    def folio_counts(self, bounds: np.ndarray) -> np.ndarray:
        """memcontrol.nr_folios() of the pages between each two of bounds (positions in
        the tail, ascending): per order, the pages of that order >> order."""
        sizes = np.diff(bounds)
        if not self.large:
            return sizes
        o = self.orders[:bounds[-1]]
        first = o[0]
        if o[-1] == first and (o == first).all():
            return sizes >> int(first)
        out = np.zeros(len(sizes), np.int64)
        for k in np.flatnonzero(np.bincount(o)).tolist():
            cum = np.zeros(len(o) + 1, np.int64)
            np.cumsum(o == k, out=cum[1:])
            out += (cum[bounds[1:]] - cum[bounds[:-1]]) >> k
        return out


def _evictable(sys: System, tail: _Tail) -> int:
    """How many of the tail's pages, from the first, shrink_folio_list() would evict as
    clean file pages of an address space without buffer heads."""
    mem = sys.mem
    pfns = tail.pfns
    bad = (mem.flags[pfns] & _NOT_CLEAN) != 0
    mids = tail.mids
    for mid in _distinct(mids):
        mapping = sys.mappings.get(mid)
        if mapping is None or type(mapping) is not AddressSpace or mapping.kind != "file":
            bad |= mids == mid
        elif mapping.buffers.any():  # filemap_release_folio() would free buffer heads
            sel = mids == mid
            bad |= sel & mapping.buffers[np.where(sel, mem.index[pfns], 0)]
    first = np.flatnonzero(bad)
    return int(first[0]) if len(first) else len(pfns)


def _walk_sizes(tail: _Tail, nr: int, usable: int) -> list[int]:
    """The pages each walk isolates and evicts, for as many walks as the first `usable`
    pages of the tail serve (a walk that would reach past them is not counted).

    shrink_lruvec(): nr_to_scan = min(list size, SWAP_CLUSTER_MAX); isolate_lru_folios()
    counts whole folios, so the rest of the last folio comes too (MemMap.folio_tail_missing:
    the pages of that folio among the isolated ones are their trailing run).
    """
    starts = tail.run_starts() if tail.large else None
    orders = tail.orders
    sizes = []
    pos = 0
    while pos < usable:
        left = nr - pos
        s = min(left, SWAP_CLUSTER_MAX)
        if pos + s > usable:
            break
        n = s
        if tail.large:
            last = pos + s - 1
            order = int(orders[last])
            if order:
                size = 1 << order
                if starts is not None:
                    run = last + 1 - max(pos, last + 1 - size, int(starts[last]))
                else:
                    run = tail.trailing_run(pos, last, size)
                n = s + min(size - run, left - s)
        if pos + n > usable:
            break
        sizes.append(n)
        pos += n
    return sizes


def _parts(sys: System, tail: _Tail, sizes: list[int]) -> list[list[tuple]]:
    """Per walk, what reclaim_pages() hands each address space's evict(), in its order
    (mapping ids ascending): (positions in the tail, pages, folios)."""
    mem = sys.mem
    bounds = np.zeros(len(sizes) + 1, np.intp)
    np.cumsum(sizes, out=bounds[1:])
    taken = int(bounds[-1])
    mids = tail.mids[:taken]
    if mids[-1] == mids[0] and (mids == mids[0]).all():
        one = [True] * len(sizes)
    else:  # a walk is of one address space when no change of mapping falls inside it
        change = np.zeros(taken, np.int64)
        np.cumsum(mids[1:] != mids[:-1], out=change[1:])
        one = (change[bounds[1:] - 1] == change[bounds[:-1]]).tolist()
    folios = tail.folio_counts(bounds).tolist()
    out = []
    for w, (pos, n) in enumerate(zip(bounds.tolist(), sizes)):
        if one[w]:
            out.append([(slice(pos, pos + n), n, folios[w])])
        else:
            seg = mids[pos:pos + n]
            walk = []
            for mid in np.unique(seg).tolist():
                where = pos + np.flatnonzero(seg == mid)
                walk.append((where, len(where), _nr_folios(mem, tail.pfns[where])))
            out.append(walk)
    return out


def _nr_folios(mem, pfns: np.ndarray) -> int:
    """memcontrol.nr_folios() of these pages."""
    if not mem.large:
        return len(pfns)
    orders = mem.order[pfns]
    if not orders.any():
        return len(pfns)
    counts = np.bincount(orders)
    return int(sum(int(c) >> k for k, c in enumerate(counts.tolist())))


def soft_reclaim_walks(sys: System, root: MemCgroup, excess: int, total: int,
                       loop: int) -> tuple[int, int, bool]:
    """Walks of mem_cgroup_soft_reclaim(root) taken at once from its state (loop walks
    done, total pages reclaimed, the excess it started with).

    Returns (loop, total, finished): finished when a walk taken ended the loop; else the
    slow path goes on with the next walk (none taken when the group does not qualify).
    """
    if not _walkable(sys, root):
        return loop, total, False
    lst = root.lruvec.lists[LRU_INACTIVE_FILE]
    nr = lst.nr
    # Enough of the tail for the walks up to a quarter of the excess and a few more
    want = min(nr, (excess >> 2) + 4 * SWAP_CLUSTER_MAX + 2 * (1 << 10))
    while True:
        tail = _Tail(sys, _tail(lst, want))
        usable = _evictable(sys, tail)
        sizes = _walk_sizes(tail, nr, usable)
        # The walks the loop makes: each reclaims its pages; the loop ends after a walk
        # once the excess is gone, once a quarter of it came back (from the second walk
        # on), or after MEM_CGROUP_MAX_RECLAIM_LOOPS walks.
        usage = root.memory.usage
        k, got, finished = 0, total, False
        for n in sizes:
            k += 1
            got += n
            walk = loop + k
            if usage - got <= root.soft_limit or (walk >= 2 and got >= excess >> 2) or \
                    walk > MEM_CGROUP_MAX_RECLAIM_LOOPS:
                finished = True
                break
        if finished or usable < len(tail.pfns) or want >= nr:
            break
        want = min(nr, 2 * want)
    if not k:
        return loop, total, False
    sizes = sizes[:k]
    parts = _parts(sys, tail, sizes)
    _evict(sys, root, lst, tail, sum(sizes), parts)
    return loop + k, got, finished


def _evict(sys: System, memcg: MemCgroup, lst, tail: _Tail, n: int, parts: list) -> None:
    """The effects of the walks: isolation, eviction, uncharge, freeing (see the module)."""
    mem = sys.mem
    isolated = lst.isolate(mem, n)
    assert len(isolated) == n, "the list's tail changed under the soft-limit walks"
    lst.maybe_compact(mem)
    pfns = tail.pfns[:n]  # the pages isolated, as np.intp
    stats = sys.stats
    # _isolate(), shrink_inactive_list(): the list's size, pages scanned and stolen
    stats.mod(memcg.id, NR_LRU_BASE + LRU_INACTIVE_FILE, -n)
    stats.mod(memcg.id, PGSCAN, n)
    stats.mod(memcg.id, PGSTEAL, n)
    # AddressSpace.evict(): shadow entries, readahead marks, the file pages' count
    idx = mem.index[pfns].astype(np.int64)
    mids = tail.mids[:n]
    distinct = _distinct(mids)
    for mid in distinct:
        _leave_shadows(sys.mappings[mid], idx if len(distinct) == 1 else idx[mids == mid])
    stats.mod(memcg.id, NR_FILE_PAGES, -n)
    # release_pages() -> uncharge_pages(), walk by walk and address space by address
    # space: the event ratelimit sees each uncharge (and may re-key the tree)
    _uncharge_walks(sys, memcg, parts)
    # free_unref_folios(): the frames go back in the order each evict() gave them (the
    # group's id with the rest of their state: MemMap.free_each)
    cuts = [k for walk in parts for _, k, _ in walk]
    if all(len(walk) == 1 for walk in parts):  # one address space a walk: isolation order
        freed = pfns
    else:
        freed = pfns[np.concatenate([np.arange(n)[where] for walk in parts
                                     for where, _, _ in walk])]
    mem.free_each(freed, np.cumsum(cuts)[:-1])


def _leave_shadows(mapping: AddressSpace, idx: np.ndarray) -> None:
    """AddressSpace.evict()'s page cache side: shadows at idx, and the PG_readahead marks
    of the folios there go (a mark names a cached folio's head: it goes when the slot
    turns from a page into a shadow; a few marks are looked up one by one)."""
    slots = mapping.slots
    marks = mapping.ra_marks
    if not marks or len(marks) > 64:
        slots[idx] = SHADOW
        if marks:
            marks.difference_update(idx.tolist())
        return
    cached = [m for m in marks if m < len(slots) and slots[m] >= 0]
    slots[idx] = SHADOW
    marks.difference_update([m for m in cached if slots[m] == SHADOW])


def _uncharge_walks(sys: System, memcg: MemCgroup, parts: list) -> None:
    """uncharge_pages() of each walk's pages, address space by address space, in turn.

    Their event checks (memcontrol.page_events, mm/memcontrol-v1.c:
    memcg1_check_events) run at the same uncharges as in the slow path.  With no usage
    threshold in the hierarchy (_walkable) mem_cgroup_threshold() finds nothing; only
    the soft-limit update looks at the counters (it re-keys the tree with the usage
    then), so the uncharges before one are made together with its own.
    maybe_free_dying() finds nothing while no group is dying (an uncharge here does not
    make one go); with one, walk by walk.
    """
    cpu = sys.cpu
    stats = sys.stats
    if sys.dying:
        for walk in parts:
            for _, k, folios in walk:
                memcg.memory.uncharge(k)
                memcg.memsw.uncharge(k)
                stats.mod(memcg.id, PGPGOUT, folios)
                page_events(sys, memcg, k, cpu)
                maybe_free_dying(sys)
        return
    events, target, soft = memcg.nr_page_events, memcg.thresh_target, memcg.softlimit_target
    val, thresh, soft_at = events[cpu], target[cpu], soft[cpu]
    held = pgpgout = 0
    for walk in parts:
        for _, k, folios in walk:
            held += k
            pgpgout += folios
            val += k
            # mm/memcontrol-v1.c: mem_cgroup_event_ratelimit
            if val - thresh < 0:
                continue
            thresh = val + THRESHOLDS_EVENTS_TARGET
            if val - soft_at >= 0:
                soft_at = val + SOFTLIMIT_EVENTS_TARGET
                memcg.memory.uncharge(held)
                memcg.memsw.uncharge(held)
                held = 0
                events[cpu], target[cpu], soft[cpu] = val, thresh, soft_at
                memcg1_update_tree(sys, memcg)
    events[cpu], target[cpu], soft[cpu] = val, thresh, soft_at
    if held:
        memcg.memory.uncharge(held)
        memcg.memsw.uncharge(held)
    stats.mod(memcg.id, PGPGOUT, pgpgout)
