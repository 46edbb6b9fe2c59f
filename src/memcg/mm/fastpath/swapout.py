"""One isolated batch of swap-backed pages through shrink_folio_list, page by page in
plain integers (mm/vmscan.c).

Anon and shmem reclaim into swap runs limit reclaim for nearly every fault: each
try_to_free_mem_cgroup_pages() call reclaims SWAP_CLUSTER_MAX pages in a handful of
small batches (a few to 32 pages each, one per priority).  For batches that small,
vmscan.shrink_inactive_list()'s whole-array classification costs more in NumPy's
per-call overhead than in work.  shrink_swapbacked() decides the same outcome for each
page of a batch in which every page is swap-backed, clean and evictable, the common
batch of an anon or shmem workload, and applies it with one write per array.  Pages go
to swap through the same vmscan.reclaim_pages(), and back onto the lists in the same
order: the result is the slow path's, step for step.

reclaim_swap_episode() goes one level up: a whole do_try_to_free_pages() of a leaf
group whose every scanned page goes to swap, all its priorities' batches planned in
integers and evicted in one go.  charge_swap_episodes() goes one more level up: the
one-page charges of a charge_pages() call at the limit, each of which fails, reclaims
such an episode and charges, taken together with all their episodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

# vmscan imports this module for its seam; each needs the other only inside functions
from ... import sched
from .. import memcontrol, vmpressure, vmscan
from ..memcontrol import (MEMCG_CHARGE_BATCH, NR_LRU_BASE, PGACTIVATE, PGSCAN, PGSTEAL,
                          SOFTLIMIT_EVENTS_TARGET, THRESHOLDS_EVENTS_TARGET,
                          lruvec_page_state_lru, mem_cgroup_get_nr_swap_pages)
from ..page_counter import PAGE_COUNTER_MAX
from ..mmzone import (LRU_ACTIVE_ANON, LRU_ACTIVE_FILE, LRU_INACTIVE_ANON, LRU_INACTIVE_FILE,
                      PG_dirty, PG_mlocked, PG_referenced, PG_swapbacked, PG_young, _chunk_pfns)

if TYPE_CHECKING:
    from ...system import System
    from ..memcontrol import MemCgroup

# The batches this path takes: every page swap-backed, clean and not mlocked.
_CLASS_MASK = PG_swapbacked | PG_dirty | PG_mlocked
# The largest batch worth deciding in plain integers (an isolation of SWAP_CLUSTER_MAX
# pages; a large folio's tail may add a few).
MAX_BATCH = 64
_CLEAR = ~(PG_young | PG_referenced) & 0xFF


def shrink_swapbacked(sys: System, memcg: MemCgroup, pfns: np.ndarray, lru: int,
                      sc) -> int | None:
    """The rest of shrink_inactive_list() for an isolated batch of swap-backed pages:
    the pages evicted, or None (nothing done) when the batch is not of this class.

    mm/vmscan.c: folio_check_references() - young ptes and the referenced flag activate,
    young ptes alone mark the folio referenced and keep it; an unreferenced anon or
    shmem folio goes to swap (add_to_swap, pageout, __remove_mapping), or is activated
    when there is no swap to go to.
    """
    if len(pfns) > MAX_BATCH:
        return None
    mem = sys.mem
    flags = mem.flags[pfns].tolist()
    kinds = set(flags)
    for f in kinds:
        if f & _CLASS_MASK != PG_swapbacked:
            return None
    n = len(flags)
    every = range(n)
    if len(kinds) == 1:  # one kind of page (the common batch): one outcome for all
        f = flags[0]
        g = f & _CLEAR
        activate, keep, evict = [], [], []
        if not f & PG_young:
            evict = every
        elif f & PG_referenced:
            activate = every
        else:
            g |= PG_referenced
            keep = every
        new = g
    else:
        new = []
        activate = []
        keep = []
        evict = []
        for i, f in enumerate(flags):
            g = f & _CLEAR  # folio_referenced() clears the young bits, tests the flag
            if f & PG_young:
                if f & PG_referenced:
                    activate.append(i)  # FOLIOREF_ACTIVATE
                else:
                    g |= PG_referenced  # FOLIOREF_KEEP: one more trip around the list
                    keep.append(i)
            else:
                evict.append(i)  # FOLIOREF_RECLAIM
            new.append(g)
    # Anon and shmem go to swap, or back to the active list when there is none.
    if evict and not (sc.may_swap and mem_cgroup_get_nr_swap_pages(sys, memcg) > 0):
        activate = sorted([*activate, *evict])
        evict = []
    mem.flags[pfns] = new
    evicted = 0
    if evict:
        victims = _take(pfns, evict, n)
        freed = vmscan.reclaim_pages(sys, victims)  # pageout / __remove_mapping / free
        evicted = len(freed)
        if evicted < len(victims):
            # swap ran out part-way: the rest are activated
            back = set(np.setdiff1d(victims, freed, assume_unique=True).tolist())
            activate = sorted([*activate, *(i for i in evict if int(pfns[i]) in back)])
    sys.stats.mod(memcg.id, PGSTEAL, evicted)
    if activate:
        sys.stats.mod(memcg.id, PGACTIVATE, len(activate))
        vmscan._lru_move(sys, memcg, _take(pfns, activate, n), lru + 1)
    if keep:
        vmscan._lru_move(sys, memcg, _take(pfns, keep, n), lru)
    return evicted


def _take(pfns: np.ndarray, which, n: int) -> np.ndarray:
    """The pages at the positions `which` (in batch order) of a batch of n."""
    if len(which) == n:
        return pfns.copy()  # all of them: no index array
    return pfns[list(which)]


# --- whole limit-reclaim episodes of one group's anon LRU --------------------------------

def reclaim_swap_episode(sys: System, sc) -> bool:
    """do_try_to_free_pages() for a limit reclaim of a leaf group whose only evictable
    pages are on its inactive anon list, taken at once; False (nothing done) when the
    episode is not of that kind.

    Anon or shmem pushed through a limit into swap reclaims for nearly every fault: each
    episode walks priorities DEF_PRIORITY down (mm/vmscan.c: get_scan_count() scans
    size >> priority, split by swappiness) in SWAP_CLUSTER_MAX batches until it has
    reclaimed nr_to_reclaim.  When every page those batches reach is an unreferenced,
    clean, swap-backed page of one address space (folio_check_references:
    FOLIOREF_RECLAIM), every batch evicts all it scans, so the batch sizes follow from
    the list size alone and the pages are the list's oldest, in order.  They go to
    swap in one eviction whose slots and freed frames come in the order of the batches
    one after another; the uncharges keep their batches, so the event ratelimit and the
    thresholds it checks see each batch's usage (mm/memcontrol-v1.c:
    memcg1_check_events); vmpressure sees each priority's pass (mm/vmpressure.c).
    """
    plan = _plan_episode(sys, sc)
    if plan is None:
        return False
    memcg = sc.target
    passes, total = plan
    _evict_oldest(sys, memcg, total, [b for _, prio_batches in passes for b in prio_batches])
    _passes_pressure(sys, memcg, passes)
    sc.nr_reclaimed = total
    sc.priority = passes[-1][0]
    # mem_cgroup_iter_partial(): a walk that stopped at the goal keeps its position
    memcg.reclaim_iter = memcg if total >= sc.nr_to_reclaim else None
    return True


def _evict_oldest(sys: System, memcg: MemCgroup, nr: int, batches: list) -> None:
    """The nr oldest pages of memcg's inactive anon list (isolate_oldest) to swap in one
    eviction, the frees and uncharges in `batches` (pages each) one after another."""
    pfns = isolate_oldest(sys, memcg, nr)
    freed = sys.mappings[int(sys.mem.mapping[pfns[0]])].evict(sys, pfns, batches)
    assert len(freed) == nr


def _passes_pressure(sys: System, memcg: MemCgroup, passes) -> None:
    """vmpressure_prio() before each priority's pass [(priority, batches)], vmpressure()
    after it (shrink_node), every page scanned reclaimed; a pass that scanned nothing
    adds nothing (vmpressure)."""
    for prio, prio_batches in passes:
        vmpressure.vmpressure_prio(sys, memcg, prio)
        if prio_batches:
            scanned = sum(prio_batches)
            vmpressure.vmpressure(sys, memcg, True, scanned, scanned)


def _plan_episode(sys: System, sc):
    """The episode's passes [(priority, [batch sizes])] and its pages in all, or None
    when some step of it could do anything but evict every page it scans."""
    memcg = sc.target
    if (memcg is None or sc.priority != vmscan.DEF_PRIORITY or sc.force_deactivate
            or sc.memcg_full_walk or sc.kswapd or not sc.may_swap
            or sc.proactive_swappiness is not None):
        return None
    setup = _episode_setup(sys, memcg)
    if setup is None:
        return None
    inactive = memcg.lruvec.lists[LRU_INACTIVE_ANON]
    plan = _plan_passes(memcg, setup, inactive.nr, sc.nr_to_reclaim)
    if plan is None:
        return None
    passes, total = plan
    if not total or total >= memcg.memory.usage or total >= mem_cgroup_get_nr_swap_pages(sys, memcg):
        return None
    if _signals_may_interleave(sys, memcg, passes, total):
        return None
    if not _pages_evictable(sys, inactive, total):
        return None
    return passes, total


def _episode_setup(sys: System, memcg: MemCgroup):
    """What every episode of memcg's limit reclaim plans with while nothing but its
    inactive anon list changes - (file, deactivate_file, shrinker counts) - or None when
    the group or its lists are not of the kind the episodes take."""
    if (memcg.is_root() or memcg.children or sys.cgroup_dfl
            or sys.reclaim_trace is not None or memcg.under_oom
            or sys.root.thresholds or sys.root.memsw_thresholds):
        return None
    lists = memcg.lruvec.lists
    inactive = lists[LRU_INACTIVE_ANON]
    # the other lists empty, with no stale entries that an isolation would walk past
    for lru in (LRU_ACTIVE_ANON, LRU_INACTIVE_FILE, LRU_ACTIVE_FILE):
        if lists[lru].entries:
            return None
    if not inactive.nr or inactive.entries != inactive.nr:
        return None
    swappiness = memcg.swappiness
    if not swappiness or swappiness > vmscan.MAX_SWAPPINESS:
        return None
    # prepare_scan_control(): cache-trim mode from the file lists as last flushed
    # (under 3.8 exact: empty); the file lists being empty, nothing else of it counts
    file = lruvec_page_state_lru(sys, memcg, LRU_INACTIVE_FILE)
    deactivate_file = vmscan.inactive_is_low(file, lruvec_page_state_lru(sys, memcg,
                                                                          LRU_ACTIVE_FILE))
    counts = []
    if sys.semantics != "3.8" and memcg.online:
        counts = [(s.count_objects(sys, s, memcg), s.seeks) for s in sys.shrinkers]
    return file, deactivate_file, counts


# The plans made, by everything they depend on: a group swapping through its limit
# plans the same few list sizes over and over.
_plans: dict = {}
_PLANS_KEPT = 4096


def _plan_passes(memcg: MemCgroup, setup, size: int, nr_to_reclaim: int):
    """do_try_to_free_pages()'s priority loop over an inactive anon list of `size` pages
    of which every page scanned is evicted: ((priority, (batch sizes)), ...) and the
    pages in all, or None when a shrinker would scan at some priority."""
    file, deactivate_file, counts = setup
    key = (size, nr_to_reclaim, file, deactivate_file, tuple(counts), memcg.swappiness,
           memcg.online)
    plan = _plans.get(key, False)
    if plan is False:
        if len(_plans) >= _PLANS_KEPT:
            _plans.clear()
        plan = _plans[key] = _make_plan(key)
    return plan


def _make_plan(key):
    size, nr_to_reclaim, file, deactivate_file, counts, swappiness, online = key
    passes = []
    total = 0
    prio = vmscan.DEF_PRIORITY
    while True:
        if counts and shrinkers_scan(counts, prio):
            return None
        # swap free all along: checked by the caller
        scan = anon_scan_count(size - total, prio, file, deactivate_file, swappiness, online)
        # shrink_lruvec(): SWAP_CLUSTER_MAX batches until this lruvec reclaimed enough
        prio_batches = []
        reclaimed = 0
        while scan:
            b = min(scan, vmscan.SWAP_CLUSTER_MAX)
            scan -= b
            prio_batches.append(b)
            reclaimed += b
            if reclaimed >= nr_to_reclaim:
                break  # no file pages to keep in proportion
        total += reclaimed
        passes.append((prio, tuple(prio_batches)))
        if total >= nr_to_reclaim or not prio:
            break
        prio -= 1
    return tuple(passes), total


def shrinkers_scan(counts, prio: int) -> bool:
    """Would shrink_slab() at this priority scan anything of the shrinkers' counts
    [(freeable, seeks)]?  (mm/shrinker.c: do_shrink_slab)"""
    for freeable, seeks in counts:
        if freeable and min((freeable >> prio) * 4 // seeks, 2 * freeable):
            return True
    return False


def anon_scan_count(left: int, prio: int, file: int, deactivate_file: bool, swappiness: int,
                    online: bool) -> int:
    """get_scan_count() of an inactive anon list of `left` pages, the only list with
    pages, swap free (mm/vmscan.c): SCAN_EQUAL at priority 0, SCAN_FILE in cache-trim
    mode (file pages as last flushed at this priority, the inactive file list not low),
    else size >> priority - at least a batch for an offline group - scaled by
    swappiness (rounded up for an offline group: DIV64_U64_ROUND_UP)."""
    if not prio:
        return left  # SCAN_EQUAL
    if file >> prio and not deactivate_file:
        return 0  # SCAN_FILE
    scan = left >> prio
    if online:
        return scan * swappiness // vmscan.MAX_SWAPPINESS
    if not scan:
        scan = min(left, vmscan.SWAP_CLUSTER_MAX)
    return -(-scan * swappiness // vmscan.MAX_SWAPPINESS)


def _pages_evictable(sys: System, inactive, total: int) -> bool:
    """Are the `total` oldest pages of the list clean, swap-backed, not mlocked, not
    young, of order 0 and of one address space that no fork shares?"""
    pfns = _peek(inactive, total)
    mem = sys.mem
    flags = mem.flags[pfns]
    mapping = mem.mapping[pfns]
    if ((flags & (_CLASS_MASK | PG_young)) != PG_swapbacked).any() or (mapping != mapping[0]).any():
        return False
    if mem.large and mem.order[pfns].any():
        return False
    # pages shared copy-on-write with a forked mm (one anon_vma tree): each mapper's swap
    # entry is duplicated batch by batch - the slow path
    return getattr(sys.mappings[int(mapping[0])], "anon_vma_tree", None) is None


def _signals_may_interleave(sys: System, memcg: MemCgroup, passes, total: int) -> bool:
    """Could the episode signal both a pressure level and a threshold?  The episode
    checks thresholds (its uncharges' event checks) before it counts the priorities'
    vmpressure passes; each signal queues its readers' wakeup (eventfd_signal), so
    while both kinds can come the slow path keeps their order."""
    vmpr = sys._vmpressure.get(memcg.id)
    scanned = vmpr.tree_scanned if vmpr is not None else 0
    window = scanned + total >= vmpressure.vmpressure_win or \
        passes[-1][0] <= vmpressure.vmpressure_level_critical_prio
    if not window:
        return False
    cpu = sys.cpu
    if memcg.nr_page_events[cpu] + total - memcg.thresh_target[cpu] < 0:
        return False  # no event check: no threshold signal
    return any(m.thresholds or m.memsw_thresholds for m in memcg.ancestors())


def _peek(lst, n: int) -> np.ndarray:
    """The n oldest pages of a list without stale entries, without isolating them."""
    out = []
    for pfns, _, start in lst.chunks:
        stop = min(len(pfns), start + n)
        out.append(_chunk_pfns(pfns, start, stop))
        n -= stop - start
        if not n:
            break
    return np.concatenate(out) if len(out) > 1 else out[0]


# --- runs of batches that keep every page they scan ---------------------------------------

def keep_batches(sys: System, memcg: MemCgroup, nr_to_scan: int, sc) -> int:
    """Whole SWAP_CLUSTER_MAX batches of memcg's inactive anon list in which every page
    is kept (young ptes, no referenced flag: FOLIOREF_KEEP, one more trip around the
    list), taken at once; the pages scanned (0: none taken).

    mm/vmscan.c: shrink_lruvec() with only this list to scan, and nothing reclaimed
    between its batches: each batch is isolated from the tail, marked referenced, and
    put back at the head.  While the batches together reach no further than the pages
    on the list, none of them meets a page put back by an earlier one, so their pages
    are the list's oldest, in order, and they go back at the head in that order with
    the same LRU stamps as batch after batch.
    """
    lst = memcg.lruvec.lists[LRU_INACTIVE_ANON]
    if lst.entries != lst.nr or sys.reclaim_trace is not None:
        return 0
    k = min(nr_to_scan, lst.nr) // vmscan.SWAP_CLUSTER_MAX
    if k < 2:
        return 0
    mem = sys.mem
    n = k * vmscan.SWAP_CLUSTER_MAX
    pfns = _peek(lst, n)
    flags = mem.flags[pfns]
    other = np.flatnonzero((flags & (_CLASS_MASK | PG_young | PG_referenced))
                           != (PG_swapbacked | PG_young))
    if mem.large:
        other = np.union1d(other, np.flatnonzero(mem.order[pfns]))
    if len(other):
        k = int(other[0]) // vmscan.SWAP_CLUSTER_MAX  # the batches before the first other page
        if k < 2:
            return 0
        n = k * vmscan.SWAP_CLUSTER_MAX
        flags = flags[:n]
    pfns = lst.isolate(mem, n)
    sc.nr_scanned += n
    sys.stats.mod(memcg.id, PGSCAN, n)
    # folio_referenced() clears the young bits; FOLIOREF_KEEP sets the referenced flag
    mem.flags[pfns] = (flags & _CLEAR) | PG_referenced
    lst.add(mem, pfns)  # NR_LRU unchanged: off the list and back on
    return n


# --- runs of one-page charges, each through a limit-reclaim episode -----------------------

def charge_swap_episodes(sys: System, memcg: MemCgroup, nr_pages: int, task) -> int:
    """The next one-page charges of charge_pages() for a group at its limit, each
    try_charge_memcg() failing and reclaiming an episode into swap (reclaim_swap_episode),
    taken together; the pages charged (0: none, nothing done).

    mm/memcontrol.c: try_charge_memcg() of one page with no margin - the batch attempt
    fails at the group (failcnt), the single page fails too (failcnt), MEMCG_MAX is
    counted, try_to_free_mem_cgroup_pages() reclaims an episode of r pages, cond_resched()
    has nothing to run, and the page is charged; charge_pages() then takes the next r - 1
    pages one by one (_charge_singles: each batch attempt fails at the group), and the
    margin gone, the next page repeats it.  The episodes' pages are the list's oldest,
    episode after episode, so they are isolated and evicted at once, with their batches
    uncharged in turn (uncharge_pages); the charge side is then counted in plain integers.
    The uncharges coming before the charges between them is seen by nothing: there is no
    usage threshold and no soft limit to look at usage at an event check, the group's
    usage never goes over its limit either way and its ancestors' never over where it
    started, and memsw (swap-out keeps it) sees the charges in their order.
    """
    episodes = _plan_charge_episodes(sys, memcg, nr_pages, task)
    if not episodes:
        return 0
    _evict_oldest(sys, memcg, sum(total for _, total in episodes),
                  [b for passes, _ in episodes for _, prio_batches in passes for b in prio_batches])
    charged = 0
    peak = 0  # the most the memsw levels saw charged above their usage at the start
    failcnt = memcg.memory.track_failcnt
    for passes, total in episodes:
        # try_charge_memcg(): the batch attempt passes every memsw level (its watermark
        # sees it) and fails at the group, then the page alone fails there too
        peak = charged + MEMCG_CHARGE_BATCH
        if failcnt:
            memcg.memory.failcnt += 2
        memcontrol.memcg_memory_event(sys, memcg, memcontrol.MEMCG_MAX)
        _passes_pressure(sys, memcg, passes)  # do_try_to_free_pages()
        # the page charged, then the rest one by one (_charge_singles): each batch
        # attempt passes memsw, raising its watermark, and fails at the group
        singles = min(total, nr_pages - charged) - 1
        if singles:
            peak = charged + singles + MEMCG_CHARGE_BATCH
            if failcnt:
                memcg.memory.failcnt += singles
        charged += singles + 1
    # memsw usage only grows through the run: the last episode's attempts reach highest
    for c in memcg.memsw.ancestors():
        if c.usage + peak > c.watermark:
            c.watermark = c.usage + peak
    memcg.memsw.charge(charged)
    memcg.memory.charge(charged)
    # mem_cgroup_iter_partial(): the last walk, stopped at its goal, keeps its position
    memcg.reclaim_iter = memcg if episodes[-1][1] >= vmscan.SWAP_CLUSTER_MAX else None
    return charged


def _plan_charge_episodes(sys: System, memcg: MemCgroup, nr_pages: int, task):
    """The episodes [(passes, pages)] that charge_swap_episodes() can take for the next
    nr_pages one-page charges, or None."""
    if not nr_pages or task is None or memcg.memory.usage != memcg.memory.max:
        return None
    setup = _episode_setup(sys, memcg)
    if setup is None:
        return None
    cpu = task.cpu
    stock = sys.stock[cpu]
    if any(c is memcg and n for c, n in zip(stock.cached, stock.nr_pages)):
        return None  # consume_stock() would take pages
    # every level but the group has room for all the charges and a batch: only the
    # group's memory counter fails (the memsw counter keeps each swapped page's charge)
    room = nr_pages + MEMCG_CHARGE_BATCH
    if min(level_rooms(memcg)) < room or not charges_unobserved(sys, memcg):
        return None
    size = memcg.lruvec.lists[LRU_INACTIVE_ANON].nr
    usage = memcg.memory.usage  # at each episode: the limit, all charged back
    swap_free = mem_cgroup_get_nr_swap_pages(sys, memcg)
    nr_to_reclaim = vmscan.SWAP_CLUSTER_MAX  # try_to_free_mem_cgroup_pages(1 page)
    episodes = []
    evicted = charged = 0
    while charged < nr_pages:
        plan = _plan_passes(memcg, setup, size - evicted, nr_to_reclaim)
        if plan is None:
            break
        total = plan[1]
        # the episode evicts what it scans; its margin takes charge_pages() to one-page
        # charges (no batch fits)
        if not total or total >= usage or total >= swap_free - evicted \
                or total - 1 >= MEMCG_CHARGE_BATCH:
            break
        episodes.append(plan)
        evicted += total
        charged += min(total, nr_pages - charged)
    if not episodes or not _pages_evictable(sys, memcg.lruvec.lists[LRU_INACTIVE_ANON], evicted):
        return None
    return episodes


# --- what the runs taken at once require of the world around them ---------------------

def charges_unobserved(sys: System, memcg: MemCgroup, task=None) -> bool:
    """Can nothing see memcg's usage between a run's uncharges and its charges, nor run
    between its reclaims?  No usage threshold and no soft limit at any level
    (mem_cgroup_threshold, memcg1_update_tree at the event checks); cond_resched() after
    each reclaim runs nothing: not called from within it, no user-space thread due, and
    no signal of the run wakes one (a pressure level's reader, MEMCG_MAX's
    memory.events notification, a user-space shrinker's request).  With the task whose
    faults the run takes: it is not to be stopped between them (an OOM victim, owing
    memory.high reclaim or a penalty, the system going down)."""
    if sys.clock.in_resched or sys.user_shrinkers:
        return False
    if task is not None and (task.oom_victim or task.memcg_high_penalty
                             or task.memcg_nr_pages_over_high or sys.dying):
        return False
    for m in memcg.ancestors():
        if m.thresholds or m.memsw_thresholds or m.id in sys.soft_limit_tree \
                or m.soft_limit != PAGE_COUNTER_MAX:
            return False
        vmpr = sys._vmpressure.get(m.id)
        if vmpr is not None and any(ev.efd.has_watchers() for ev in vmpr.events):
            return False
    for name in ("memory.events", "memory.events.local"):
        if sys.file_watchers.get((memcg.id, name)):
            return False
    return not sched.user_work_due(sys.clock)


def level_rooms(memcg: MemCgroup) -> tuple[int, int]:
    """The least room for charges at memcg's memsw levels, and at its memory levels
    above its own (to their limit or memory.high, whichever is lower): where a run's
    charges must never fail but at the group's own memory counter."""
    memsw = min(c.max - c.usage for c in memcg.memsw.ancestors())
    counter = memcg.memory
    upper = min((min(c.max, c.high) - c.usage for c in counter.ancestors()
                 if c is not counter), default=PAGE_COUNTER_MAX)
    return memsw, upper


# --- what the runs taken at once apply alike ----------------------------------------------

def isolate_oldest(sys: System, memcg: MemCgroup, nr: int) -> np.ndarray:
    """The nr oldest pages of memcg's inactive anon list, isolated by episodes that evict
    every page they scan: off the list, counted scanned and stolen (mm/vmscan.c:
    isolate_lru_folios, shrink_folio_list)."""
    pfns = memcg.lruvec.lists[LRU_INACTIVE_ANON].isolate(sys.mem, nr)
    stats = sys.stats
    stats.mod(memcg.id, NR_LRU_BASE + LRU_INACTIVE_ANON, -nr)
    stats.mod(memcg.id, PGSCAN, nr)
    stats.mod(memcg.id, PGSTEAL, nr)
    return pfns


def put_back_kept(sys: System, memcg: MemCgroup, victims: np.ndarray, rotated: int) -> None:
    """A run's first episode kept the `rotated` young pages of memcg's inactive anon
    list (folio_check_references: FOLIOREF_KEEP, the young bits cleared, the referenced
    flag set) and put them back at the head in list order; the run's later episodes
    evicted the first of them again, the last of its `victims`.  The rest are the list
    now, stamped as they were put back; the frames evicted again keep their stamps."""
    mem = sys.mem
    lst = memcg.lruvec.lists[LRU_INACTIVE_ANON]
    sys.stats.mod(memcg.id, PGSCAN, rotated)
    rest = lst.isolate(mem, lst.nr)
    mem.flags[rest] = (mem.flags[rest] & _CLEAR) | PG_referenced
    again = rotated - len(rest)  # kept, then evicted
    base = mem.next_seq(again)
    mem.seq[victims[len(victims) - again:]] = np.arange(again, dtype=np.uint32) + np.uint32(base)
    lst.add(mem, rest)


def replay_windows(sys: System, memcg: MemCgroup, windows, pressure) -> None:
    """The pressure windows a run filled, (scanned, reclaimed) each, computed and
    signalled in turn (mm/vmpressure.c: vmpressure_work_fn), then memcg's window as the
    run left it (`pressure`)."""
    vmpr = vmpressure.memcg_to_vmpressure(sys, memcg)
    quiet = False
    for scanned, reclaimed in windows:
        if quiet:
            # vmpressure_work_fn() with no listener up the tree and no user-space
            # shrinker: the level goes to the history, the shrinker debt is already
            # dropped (mempressure.shrinker_request), nobody is signalled
            level = vmpressure.vmpressure_calc_level(scanned, reclaimed)
            sys.pressure_history.append((memcg.path, vmpressure.LEVEL_NAMES[level]))
            continue
        vmpr.tree_scanned, vmpr.tree_reclaimed = scanned, reclaimed
        vmpressure.vmpressure_work_fn(sys, memcg)
        # the first window's walk made every ancestor's state: are there listeners?
        quiet = not sys.user_shrinkers and not any(
            sys._vmpressure[m.id].events for m in memcg.ancestors())
    vmpr.tree_scanned, vmpr.tree_reclaimed = pressure


# --- what the runs taken at once plan alike -----------------------------------------------

def batch_events(val: int, thresh: int, soft: int, batches) -> tuple[int, int, int]:
    """The event ratelimit's counter and targets after the uncharges of `batches` (pages
    each), one after another (mm/memcontrol-v1.c: memcg1_check_events,
    mem_cgroup_event_ratelimit; with nothing to check at the targets but the targets)."""
    for b in batches:
        val += b
        if val - thresh >= 0:
            thresh = val + THRESHOLDS_EVENTS_TARGET
            if val - soft >= 0:
                soft = val + SOFTLIMIT_EVENTS_TARGET
    return val, thresh, soft


def pass_windows(passes) -> tuple:
    """What an episode's passes [(priority, batches)] add to the pressure window, in
    order, (scanned, reclaimed) each: vmpressure_prio() a window of its own at or below
    the critical priority, vmpressure() of each pass that scanned pages, all reclaimed."""
    out = []
    for prio, prio_batches in passes:
        if prio <= vmpressure.vmpressure_level_critical_prio:
            out.append((vmpressure.vmpressure_win, 0))
        scanned = sum(prio_batches)
        if scanned:
            out.append((scanned, scanned))
    return tuple(out)


def fill_windows(windows: list, scanned: int, reclaimed: int, wins) -> tuple[int, int]:
    """The pressure window after an episode's additions `wins` [(scanned, reclaimed)],
    each window that fills on the way appended to `windows` (mm/vmpressure.c:
    vmpressure, vmpressure_prio)."""
    win = vmpressure.vmpressure_win
    for sc, rc in wins:
        scanned += sc
        reclaimed += rc
        if scanned >= win:
            windows.append((scanned, reclaimed))
            scanned = reclaimed = 0
    return scanned, reclaimed
