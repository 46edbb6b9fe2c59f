"""Anonymous faults at the limit in spans: many FAULT_BATCH steps, each charging its
pages through limit-reclaim episodes into swap, taken at once (mm/memory.c,
mm/memcontrol.c try_charge_memcg, mm/vmscan.c do_try_to_free_pages).

A task faulting anon memory through a v1 group's limit into swap repeats one pattern:
each step (do_anonymous_faults) allocates FAULT_BATCH frames, charges them one page at a
time - each charge at no margin fails, reclaims an episode of the list's oldest pages
into swap and charges (charge_swap_episodes) - and puts them on the inactive anon list;
every PTRS_PER_PTE faults a page-table page is charged the same way first (pte_alloc).
While the span evicts fewer pages than were on the list when it started, every
episode's pages are pages from before the span, the list's oldest in order, so the
whole span's evictions are isolated and sent to swap at once.  The span is planned in
plain integers step by step - each episode from the list size it sees
(swapout._plan_passes), the margins, the failures, the memsw watermark - and its effects
are applied at once, in the order the steps have them where anything can tell:

- frames: each step's allocation pops the free stack after the frees of the episodes
  before it, so the frames are replayed through a stack of slices of the evicted pages
  (the pre-span stack below them), exactly as free() and alloc() would hand them out;
- the event ratelimit sees each uncharged batch and each step's commit in turn
  (mm/memcontrol-v1.c: memcg1_check_events, with nothing to check but the targets);
- vmpressure sees every priority's pass in turn (mm/vmpressure.c), its windows
  computed and signalled as they fill (a listener without readers is only counted).

What could see the usage between an uncharge and the charges after it is ruled out as
for charge_swap_episodes(): no thresholds, no soft limit, no watcher to wake.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ...kernel import PAGE_SIZE
from .. import vmpressure
from ..filemap import add_to_swap
from ..memcontrol import (MEMCG_CHARGE_BATCH, MEMCG_MAX, NR_ANON_MAPPED, NR_LRU_BASE,
                          NR_PAGETABLE, PGFAULT, PGPGIN, PGPGOUT,
                          SOFTLIMIT_EVENTS_TARGET, THRESHOLDS_EVENTS_TARGET, KmemPages,
                          hierarchy_margin, mem_cgroup_get_nr_swap_pages)
from ..memory import FAULT_BATCH, own_ptes, pgtables_accounted
from ..mmzone import LRU_INACTIVE_ANON, PG_swapbacked, PG_young
from ..vmscan import SWAP_CLUSTER_MAX
from .fault import FAULT_SPAN_PAGES
from .shmem import _plan_rotation
from .swapout import (_CLASS_MASK, _episode_setup, _peek, _plan_passes, batch_events,
                      charges_unobserved, fill_windows, isolate_oldest, level_rooms,
                      pass_windows, put_back_kept, replay_windows)
from .swaprotate import _KEEP, _KEEP_MASK

if TYPE_CHECKING:
    from ...system import System
    from ...tasks import Task
    from ..memcontrol import MemCgroup
    from ..memory import AnonVma


def take_swap_span(sys: System, task: Task, memcg: MemCgroup, vma: AnonVma, flags: int,
                   lru: int) -> bool:
    """Fault in a span of vma's next steps at the limit at once if it has more than one
    step; True if it did."""
    span = plan_swap_span(sys, task, memcg, vma, lru)
    if span is None:
        return False
    swap_span(sys, task, memcg, vma, flags, span)
    return True


def plan_swap_span(sys: System, task: Task, memcg: MemCgroup, vma: AnonVma, lru: int):
    """The span of steps that can be taken at once (a SwapSpan), or None when fewer
    than two steps can be."""
    if (lru != LRU_INACTIVE_ANON or vma.anon_vma is None or sys.cpu != task.cpu
            or sys.active_memcg is not None or vma.nr_pages - vma.nr_faulted < 2 * FAULT_BATCH):
        return None
    counter = memcg.memory
    margin = counter.max - counter.usage
    # no charge batch fits anywhere in the span: every charge is a one-page charge
    if not 0 <= margin < MEMCG_CHARGE_BATCH or hierarchy_margin(memcg) != margin:
        return None
    setup = _episode_setup(sys, memcg)
    if setup is None:
        return None
    stock = sys.stock[task.cpu]
    if any(c is memcg and n for c, n in zip(stock.cached, stock.nr_pages)):
        return None  # consume_stock() would take pages
    # (no memory.low protection either: _episode_setup() takes v1 groups alone)
    if not charges_unobserved(sys, memcg, task):
        return None
    accounted = pgtables_accounted(sys, task)
    if accounted:
        objcg = memcg.objcg
        if objcg is None or objcg.memcg is not memcg:
            return None
    mem = sys.mem
    lst = memcg.lruvec.lists[LRU_INACTIVE_ANON]
    size0 = lst.nr
    # The span's allocations, frames and charges all bounded up front: free memory stays
    # above the low watermark at every allocation (no frees counted), the frames the
    # span takes from the bottom run's two ends do not meet, every level above the
    # group's memory counter has room for every charge and a batch.
    k = min(vma.nr_pages - vma.nr_faulted, FAULT_SPAN_PAGES, size0) // FAULT_BATCH
    most = k * FAULT_BATCH + own_ptes(vma, vma.nr_faulted + k * FAULT_BATCH) - len(vma.ptes) + 1
    bottom = abs(int(mem._last[0]) - int(mem._first[0])) + 1 if mem.nr_free_runs else 0
    if mem.nr_free - most - FAULT_BATCH < sys.wmark_low or bottom <= 2 * most:
        return None
    if min(level_rooms(memcg)) < most + MEMCG_CHARGE_BATCH:
        return None
    # the episodes evict the list's oldest pages while they are evictable, and only
    # pages from before the span
    look = min(size0, 2 * most + 4 * MEMCG_CHARGE_BATCH)
    reach = evictable_prefix(sys, lst, look)
    # The pages from `reach` on freshly faulted ones (young ptes, no referenced flag):
    # the first step's episode that meets them keeps them all (FOLIOREF_KEEP, one more
    # trip around the list) and evicts what it meets again (shmem._plan_rotation);
    # after it, every page from before the span is evictable.
    rotatable = reach < look and young_rest(sys, lst, reach)
    if not reach and not rotatable:
        return None
    swap_free = mem_cgroup_get_nr_swap_pages(sys, memcg)
    # the episodes evict only pages from before the span, and leave swap a slot
    ev_max = min(reach, swap_free - 1)
    cpu = task.cpu
    # The state after the steps planned so far: the ratelimit's counter as the pages
    # to go to each target (page_events() of each episode's uncharged batches, then of
    # the step's commit: the counter itself is the span's evicted and faulted pages
    # more), the pressure window and the windows that fill (vmpressure_prio(),
    # vmpressure() per pass); a step that cannot be taken puts back what it changed.
    vmpr = sys._vmpressure.get(memcg.id)
    scanned, reclaimed = (vmpr.tree_scanned, vmpr.tree_reclaimed) if vmpr is not None \
        else (0, 0)
    val0 = memcg.nr_page_events[cpu]
    to_thresh = memcg.thresh_target[cpu] - val0
    to_soft = memcg.softlimit_target[cpu] - val0
    win = vmpressure.vmpressure_win
    windows = []  # (scanned, reclaimed) of each window that fills, in order
    steps = []  # per step: the pages evicted for its page-table charges, for its pages
    evicted = 0  # pages evicted by the steps planned
    charges = 0  # one-page charges of the steps planned
    nr_eps = 0
    last = 0  # the pages of the last episode
    rotated = 0  # the young pages the rotation kept
    ptes = 0
    faulted = vma.nr_faulted
    first_ptes = len(vma.ptes)
    # the episodes' shapes by list size, those the span can take (false: not)
    plans = _span_shapes(memcg, setup, counter.max)
    for j in range(k):
        # pte_alloc(): the page-table pages this step's faults reach, then its pages
        p = max(0, own_ptes(vma, faulted + FAULT_BATCH) - first_ptes - ptes)
        size = size0 + j * FAULT_BATCH - evicted
        at = size  # the list at the next episode
        floor = size - (ev_max - evicted)  # the list below which the step cannot go
        m = margin
        saved = (to_thresh, to_soft, scanned, reclaimed, nr_eps, last)
        n_windows = len(windows)
        step = []
        ok = True
        for want in (p if accounted else 0, FAULT_BATCH):
            left = want
            at_before = at
            while left:
                if m:  # _charge_singles() of as many as the margin takes
                    if m >= left:
                        m -= left
                        break
                    left -= m
                    m = 0
                shape = plans.get(at)
                if shape is None:
                    shape = plans[at] = _span_shape(memcg, setup, at, counter.max)
                # the episode evicts what it scans, pages from before the span; its
                # margin takes the charges to one-page charges (no batch fits)
                if not shape or at - shape[0] < floor:
                    old = reach - (size0 - at)  # the old pages left (step 0: evicted 0)
                    if not rotatable or j or rotated or (shape and shape[0] <= old):
                        ok = False
                        break
                    rotation = _plan_rotation(memcg, setup, at, old)
                    if rotation is None:
                        ok = False
                        break
                    total, batches, wins, rotated = rotation
                    if not total or total >= counter.max or total - 1 >= MEMCG_CHARGE_BATCH \
                            or size0 - at + total > swap_free - 1:
                        ok = False
                        break
                    reach = size0  # the kept pages are the list now, evictable
                    ev_max = min(reach, swap_free - 1)
                    floor = size0 - ev_max
                    quiet = False  # its passes scan more than they reclaim
                else:
                    total, batches, wins, quiet = shape
                at -= total
                nr_eps += 1
                last = total
                m = total - 1  # the page charged after the episode
                left -= 1
                if total < to_thresh:
                    to_thresh -= total  # no batch's uncharge reaches an event check
                    to_soft -= total
                else:  # page_events() of each batch's uncharge (the counter from 0 here)
                    val, thresh, soft = batch_events(0, to_thresh, to_soft, batches)
                    to_thresh, to_soft = thresh - val, soft - val
                if quiet and scanned + total < win:
                    scanned += total  # no pass fills the window
                    reclaimed += total
                    continue
                # vmpressure_prio(), vmpressure() per pass
                scanned, reclaimed = fill_windows(windows, scanned, reclaimed, wins)
            if not ok:
                break
            step.append(at_before - at)
        if not ok:
            to_thresh, to_soft, scanned, reclaimed, nr_eps, last = saved
            del windows[n_windows:]
            break
        to_thresh -= FAULT_BATCH  # commit_charge() of the step's pages
        to_soft -= FAULT_BATCH
        if to_thresh <= 0:
            to_thresh = THRESHOLDS_EVENTS_TARGET
            if to_soft <= 0:
                to_soft = SOFTLIMIT_EVENTS_TARGET
        steps.append(step)
        margin = m
        evicted += size - at
        charges += FAULT_BATCH + (p if accounted else 0)
        ptes += p
        faulted += FAULT_BATCH
    if len(steps) < 2:
        return None
    val = val0 + evicted + len(steps) * FAULT_BATCH
    span = SwapSpan()
    span.steps = steps
    span.ptes = ptes
    span.charges = charges
    span.evicted = evicted
    span.accounted = accounted
    span.episodes = nr_eps
    span.last_total = last
    span.events = (val, val + to_thresh, val + to_soft)
    span.windows = windows
    span.pressure = (scanned, reclaimed)
    span.rotated = rotated
    return span


class SwapSpan:
    """A span planned in integers (plan_swap_span): per step the pages its page-table
    charges' episodes and its pages' episodes evict; the span's page-table pages,
    one-page charges, pages evicted, episodes and the last one's pages; the ratelimit's
    counter and targets after it, the pressure windows it fills in order and the
    window's counts after it; the young pages its first episode kept (0: none)."""

    __slots__ = ("steps", "ptes", "charges", "evicted", "accounted", "episodes",
                 "last_total", "events", "windows", "pressure", "rotated")


def young_rest(sys: System, lst, reach: int) -> bool:
    """Are the pages of a list without stale entries from `reach` on freshly faulted
    ones (swap-backed, clean, not mlocked, young, not referenced), and every page of the
    list of order 0 and of one anonymous mapping that no fork shares?"""
    pfns = _peek(lst, lst.nr)
    mem = sys.mem
    mapping = mem.mapping[pfns]
    owner = sys.mappings[int(mapping[0])]
    if getattr(owner, "kind", None) != "anon" or owner.anon_vma_tree is not None:
        return False
    if (mapping != mapping[0]).any() or (mem.large and mem.order[pfns].any()):
        return False
    rest = mem.flags[pfns[reach:]]
    return bool(((rest & _KEEP_MASK) == _KEEP).all())


def evictable_prefix(sys: System, lst, n: int) -> int:
    """How many of the n oldest pages of a list without stale entries an episode would
    evict one after the other (swapout._pages_evictable of each prefix): clean,
    swap-backed, not mlocked, not young, of order 0 and of one anonymous mapping that no
    fork shares."""
    if not n:
        return 0
    pfns = _peek(lst, n)
    mem = sys.mem
    mapping = mem.mapping[pfns]
    owner = sys.mappings[int(mapping[0])]
    if getattr(owner, "kind", None) != "anon" or owner.anon_vma_tree is not None:
        # shmem pages (their object's own counters), or each mapper's swap entry
        # duplicated batch by batch: the slow path
        return 0
    bad = ((mem.flags[pfns] & (_CLASS_MASK | PG_young)) != PG_swapbacked) | (mapping != mapping[0])
    if mem.large:
        bad |= mem.order[pfns] != 0
    hit = np.flatnonzero(bad)
    return int(hit[0]) if len(hit) else n


# The shapes of the episodes planned, by list size and what else swapout._plan_passes
# depends on: a group swapping through its limit meets the same list sizes again.
_shapes: dict = {}
_SHAPES_KEPT = 64


def _span_shapes(memcg: MemCgroup, setup, limit: int) -> dict:
    """The episodes' shapes (_span_shape) for memcg's reclaim setup and limit, by size."""
    key = (setup[0], setup[1], tuple(setup[2]), memcg.swappiness, memcg.online, limit)
    shapes = _shapes.get(key)
    if shapes is None or len(shapes) >= 4096:
        if len(_shapes) >= _SHAPES_KEPT:
            _shapes.clear()
        shapes = _shapes[key] = {}
    return shapes


def _span_shape(memcg: MemCgroup, setup, size: int, limit: int):
    """The episode over a list of `size` pages (swapout._plan_passes) as a span takes it:
    its pages, its batches in order, its passes' pressure windows (pass_windows) and
    whether every pass is above the critical priority (vmpressure_prio does nothing);
    False when a span cannot take it (a shrinker would scan, nothing or the whole limit
    would be reclaimed, or a charge batch would fit in the margin it leaves)."""
    plan = _plan_passes(memcg, setup, size, SWAP_CLUSTER_MAX)
    if plan is None:
        return False
    passes, total = plan
    if not total or total >= limit or total - 1 >= MEMCG_CHARGE_BATCH:
        return False
    return (total, tuple(b for _, prio_batches in passes for b in prio_batches),
            pass_windows(passes),
            all(prio > vmpressure.vmpressure_level_critical_prio for prio, _ in passes))


def _push_slices(segs: list, nr: int, pos: int) -> int:
    """The frames of nr pages evicted pushed: the next slice of victims from pos on, one
    with the top slice when nothing was popped from it since; the end of it."""
    if not nr:
        return pos
    end = pos + nr
    if segs and segs[-1][1] == pos:
        segs[-1][1] = end
    else:
        segs.append([pos, end])
    return end


def _popped(victims: np.ndarray, older: list, tops: list, n: int) -> np.ndarray:
    """The n frames of the pieces `tops` in order: a slice of victims ending at `end`
    popped from its end, or (end < 0) the next frames of `older` as they came."""
    source = np.concatenate([victims, *older]) if older else victims
    ends = np.array([e for e, _ in tops], np.int64)
    lens = np.array([k for _, k in tops], np.int64)
    starts = np.cumsum(lens) - lens  # where each piece begins in the result
    fwd = ends < 0  # the older frames come in their order
    base = np.where(fwd, len(victims) + (-1 - ends) - starts, ends - 1 + starts)
    sign = np.where(fwd, 1, -1)
    at = np.arange(n, dtype=np.int64)
    return source[np.repeat(base, lens) + np.repeat(sign, lens) * at]


def swap_span(sys: System, task: Task, memcg: MemCgroup, vma: AnonVma, flags: int,
              span) -> None:
    """Take the planned span of steps at once (plan_swap_span)."""
    steps, ptes, charges, evicted, accounted = (span.steps, span.ptes, span.charges,
                                                span.evicted, span.accounted)
    mem = sys.mem
    cpu = task.cpu
    lst = memcg.lruvec.lists[LRU_INACTIVE_ANON]
    stats = sys.stats
    n = len(steps) * FAULT_BATCH
    counter = memcg.memory
    usage0 = counter.usage
    # --- the evictions: the list's oldest pages, to swap (AnonVma.evict) and uncharged
    # (uncharge_pages: the ratelimit below sees each batch)
    if evicted:
        victims = isolate_oldest(sys, memcg, evicted)
        owner = sys.mappings[int(mem.mapping[victims[0]])]
        swapped, _, _ = add_to_swap(sys, owner, victims)
        assert len(swapped) == evicted
        stats.mod(memcg.id, NR_ANON_MAPPED, -evicted)
        owner.mm.anon_rss -= evicted
        owner.mm.swapents += evicted
        stats.mod(memcg.id, PGPGOUT, evicted)  # one per folio: order-0 pages
        mem._clear(victims)
    else:
        victims = np.empty(0, np.int32)
    if span.rotated:
        put_back_kept(sys, memcg, victims, span.rotated)
    # --- the frames: each step pops the free stack after the frees before it.  The
    # pops are cut into pieces: the top of a pushed slice of victims (popped in
    # reverse), or frames of the stack from before the span (taken as they are popped).
    segs = []  # slices [lo, hi) of victims pushed and not yet popped, in push order
    tops = []  # the pieces: (end, length) of a popped slice of victims (end < 0: older)
    older = []  # frames popped from the stack from before the span, in order
    nr_older = 0
    pos = 0
    for pte_ev, page_ev in steps:
        pos = _push_slices(segs, pte_ev, pos)  # release_pages(): the episodes' frames
        need = FAULT_BATCH  # alloc_pages() of the step's pages
        while need:
            if segs:
                s = segs[-1]
                take = min(need, s[1] - s[0])
                tops.append((s[1], take))
                s[1] -= take
                if s[1] == s[0]:
                    segs.pop()
            else:
                take = need
                older.append(mem.alloc(need))
                tops.append((-1 - nr_older, take))
                nr_older += take
            need -= take
        pos = _push_slices(segs, page_ev, pos)
    left = [victims[lo:hi] for lo, hi in segs if hi > lo]
    if left:
        back = np.concatenate(left) if len(left) > 1 else left[0]
        mem._push(back)
        mem.nr_free += len(back)
    pfns = _popped(victims, older, tops, n)
    # --- the pages: mapped, set up, on the list (folio_add_lru), committed
    start = vma.nr_faulted
    vma.slots[start:start + n] = pfns
    mem.flags[pfns] = flags
    mem.mapping[pfns] = vma.id
    mem.index[pfns] = np.arange(start, start + n, dtype=np.uint32)
    mem.memcg[pfns] = memcg.id
    lst.add(mem, pfns)
    vma.nr_faulted += n
    task.mm.anon_rss += n
    for item in (NR_LRU_BASE + LRU_INACTIVE_ANON, NR_ANON_MAPPED, PGFAULT, PGPGIN):
        stats.mod(memcg.id, item, n)
    # --- the page-table pages (pte_alloc_one), from the unmovable end of the stack
    if ptes:
        frames = mem.alloc_unmovable(ptes)
        sys.kernel_pages["PageTables"] += ptes
        objcg = memcg.objcg if accounted else None
        if accounted:
            sys.kmem_key.hits += ptes
            memcg.kmem.charge(ptes)  # memcg1_account_kmem()
            objcg.nr_pages += ptes
            objcg.nr_live_bytes += ptes * PAGE_SIZE
            stats.mod(memcg.id, NR_PAGETABLE, ptes)
        vma.ptes.extend(KmemPages(objcg, 1, frames[j:j + 1], "PageTables")
                        for j in range(ptes))
    # --- the charges: every one a one-page charge whose batch attempt passes every memsw
    # level (raising its watermark) and fails at the group; one more failure and a
    # MEMCG_MAX per episode
    nr_eps = span.episodes
    memsw_peak = charges - 1 + MEMCG_CHARGE_BATCH
    for c in memcg.memsw.ancestors():
        if c.usage + memsw_peak > c.watermark:
            c.watermark = c.usage + memsw_peak
    memcg.memsw.charge(charges)
    # the group's usage is at its limit at each episode: its levels' highest usage then
    peak = counter.max if nr_eps else usage0 + charges
    marks = [max(c.watermark, c.usage + peak - usage0) for c in counter.ancestors()]
    counter.charge(charges)
    counter.uncharge(evicted)
    for c, w in zip(counter.ancestors(), marks):
        c.watermark = w
    if counter.track_failcnt:
        counter.failcnt += charges + nr_eps
    memcg.memory_events_local[MEMCG_MAX] += nr_eps  # memcg_memory_event(), v1: here only
    memcg.memory_events[MEMCG_MAX] += nr_eps
    # --- the ratelimit as the steps left it; the pressure windows that filled, each
    # computed and signalled in turn (vmpressure_work_fn)
    memcg.nr_page_events[cpu], memcg.thresh_target[cpu], memcg.softlimit_target[cpu] = \
        span.events
    replay_windows(sys, memcg, span.windows, span.pressure)
    if nr_eps:
        # mem_cgroup_iter_partial(): the last walk, stopped at its goal, keeps its position
        memcg.reclaim_iter = memcg if span.last_total >= SWAP_CLUSTER_MAX else None
