"""A limit-reclaim episode that first turns the freshly faulted pages at the tail of a
leaf group's inactive anon list around and then evicts the pages behind them into swap,
taken at once (mm/vmscan.c: do_try_to_free_pages, shrink_folio_list).

Anon faulted through a limit into swap ages its list in turns: the pages faulted since
the last turn are young (their ptes accessed), so once the older pages are gone the
tail is young pages, each of which the reclaim keeps for one more trip around the list
(folio_check_references: FOLIOREF_KEEP - young cleared, referenced set, back at the
head).  The episode finds nothing to reclaim at the first priorities, and scans more at
each lower one (get_scan_count: size >> priority), until its batches get past the young
pages to the pages kept at the last turn, which it evicts.  While everything it scans
is young-and-unreferenced pages followed by evictable ones (swapout._pages_evictable's
kind), its batches are planned in integers, and the pages isolated at once: the kept
ones back at the head in scan order, the rest to swap with their batches uncharged in
turn; vmpressure sees each priority's pass with its own scanned and reclaimed counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import vmpressure, vmscan
from ..memcontrol import NR_LRU_BASE, PGSCAN, PGSTEAL, mem_cgroup_get_nr_swap_pages
from ..mmzone import LRU_INACTIVE_ANON, PG_referenced, PG_swapbacked, PG_young
from .swapout import (_CLASS_MASK, _CLEAR, _episode_setup, _peek, anon_scan_count,
                      shrinkers_scan)

if TYPE_CHECKING:
    from ...system import System

# The kind of page the episode keeps: swap-backed, clean, young, not referenced.
_KEEP = PG_swapbacked | PG_young
_KEEP_MASK = _CLASS_MASK | PG_young | PG_referenced


def rotate_swap_episode(sys: System, sc) -> bool:
    """do_try_to_free_pages() for a limit reclaim of a leaf group whose inactive anon list
    starts with young pages to keep and goes on with pages to evict, taken at once; False
    (nothing done) when the episode is not of that kind."""
    plan = plan_rotation(sys, sc)
    if plan is None:
        return False
    rotate(sys, sc, plan)
    return True


def plan_rotation(sys: System, sc):
    """The episode's passes [(priority, [(scanned, kept, evicted, how many such batches in
    a row)])], which of
    the pages it scans on the list it keeps, how many it scans, and evicts; or None."""
    memcg = sc.target
    if (memcg is None or sc.priority != vmscan.DEF_PRIORITY or sc.force_deactivate
            or sc.memcg_full_walk or sc.kswapd or not sc.may_swap
            or sc.proactive_swappiness is not None):
        return None
    lst = memcg.lruvec.lists[LRU_INACTIVE_ANON]
    if not lst.nr or lst.entries != lst.nr:
        return None
    mem = sys.mem
    if int(mem.flags[_peek(lst, 1)[0]]) & _CLASS_MASK != PG_swapbacked:
        return None
    setup = _episode_setup(sys, memcg)
    if setup is None:
        return None
    # nothing to see the uncharges before the passes' signals: no threshold anywhere
    if any(m.thresholds or m.memsw_thresholds for m in memcg.ancestors()):
        return None
    # The pages the episode may scan, looked at up to a bound first (most episodes stop
    # early), then the whole list if the bound was in the way.
    size = lst.nr
    n = min(size, _FIRST_LOOK)
    while True:
        plan = _plan(sys, memcg, setup, lst, n, sc.nr_to_reclaim)
        if plan is not False or n == size:
            return plan or None
        n = size


# The pages plan_rotation() looks at first.
_FIRST_LOOK = 2048


def _plan(sys: System, memcg, setup, lst, n: int, nr_to_reclaim: int):
    """plan_rotation() with the n oldest pages looked at: the plan, None, or False when
    the episode would scan past them (n less than the list)."""
    mem = sys.mem
    size = lst.nr
    pfns = _peek(lst, n)
    flags = mem.flags[pfns]
    mapping = mem.mapping[pfns]
    keep = (flags & _KEEP_MASK) == _KEEP
    ok = keep | ((flags & (_CLASS_MASK | PG_young)) == PG_swapbacked)
    ok &= mapping == mapping[0]
    if mem.large:
        ok &= mem.order[pfns] == 0
    if getattr(sys.mappings[int(mapping[0])], "anon_vma_tree", None) is not None:
        return None
    bad = np.flatnonzero(~ok)
    reach = int(bad[0]) if len(bad) else n  # the pages of the two kinds from the tail
    if not reach:
        return None
    # the runs of one kind of page, and those of young pages among them
    change = np.flatnonzero(keep[1:reach] != keep[:reach - 1]) + 1
    bounds = [0, *change.tolist(), reach]
    young_runs = [(bounds[i], bounds[i + 1])
                  for i in range(0 if keep[0] else 1, len(bounds) - 1, 2)]
    if not young_runs:
        return None  # nothing to keep: another kind of episode
    # the pages kept among the first i: one run of young pages (the common list), or more
    lo, hi = young_runs[0] if len(young_runs) == 1 else (0, 0)
    if len(young_runs) == 1:

        def kept_upto(i: int) -> int:
            return min(max(i - lo, 0), hi - lo)
    else:
        kept_upto = np.concatenate([[0], np.cumsum(keep[:reach])]).tolist().__getitem__
    file, deactivate_file, counts = setup
    swappiness = memcg.swappiness
    online = memcg.online
    passes = []
    evicted = 0
    pos = 0  # pages scanned from the tail
    prio = vmscan.DEF_PRIORITY
    while True:
        if counts and shrinkers_scan(counts, prio):
            return None
        # the kept pages stay on the list
        scan = anon_scan_count(size - evicted, prio, file, deactivate_file, swappiness, online)
        # shrink_lruvec(): SWAP_CLUSTER_MAX batches until this lruvec reclaimed enough
        batches = []
        reclaimed = 0
        while scan:
            b = min(scan, vmscan.SWAP_CLUSTER_MAX)
            if lo <= pos and pos + 2 * b <= hi:
                # whole batches inside the run of young pages: all kept, nothing reclaimed
                k = min(scan, hi - pos) // b
                batches.append((b, b, 0, k))
                pos += k * b
                scan -= k * b
                continue
            scan -= b
            end = pos + b
            if end > reach:
                if reach < n:
                    return None  # the batch would reach a page of another kind
                if n < size:
                    return False  # past the pages looked at
                # past the list's end come the pages kept by this episode, their ptes no
                # longer young: evicted in turn (those kept before this batch only)
                if end - size > kept_upto(min(pos, size)):
                    return None
            kept = kept_upto(min(end, size)) - kept_upto(min(pos, size))
            pos = end
            batches.append((b, kept, b - kept, 1))
            reclaimed += b - kept
            if reclaimed >= nr_to_reclaim:
                break
        evicted += reclaimed
        passes.append((prio, batches))
        if evicted >= nr_to_reclaim or not prio:
            break
        prio -= 1
    if not evicted or evicted >= memcg.memory.usage \
            or evicted >= mem_cgroup_get_nr_swap_pages(sys, memcg):
        return None
    return passes, keep[:min(pos, size)], pos, evicted


def rotate(sys: System, sc, plan) -> None:
    """Take the planned episode (plan_rotation) at once."""
    passes, kept, scanned, evicted = plan
    memcg = sc.target
    mem = sys.mem
    lst = memcg.lruvec.lists[LRU_INACTIVE_ANON]
    stats = sys.stats
    pfns = lst.isolate(mem, min(scanned, lst.nr))  # the batches' pages, oldest first
    stats.mod(memcg.id, PGSCAN, scanned)
    # FOLIOREF_KEEP: young cleared, referenced set, back at the head in scan order
    back = pfns[kept]
    mem.flags[back] = (mem.flags[back] & _CLEAR) | PG_referenced
    lst.add(mem, back)
    victims = pfns[~kept]
    if scanned > len(pfns):
        # the last batches got round to the pages kept first: oldest on the list now
        victims = np.concatenate([victims, lst.isolate(mem, scanned - len(pfns))])
    stats.mod(memcg.id, NR_LRU_BASE + LRU_INACTIVE_ANON, -evicted)
    batches = [ev for _, prio_batches in passes for _, _, ev, k in prio_batches if ev
               for _ in range(k)]
    freed = sys.mappings[int(mem.mapping[victims[0]])].evict(sys, victims, batches)
    assert len(freed) == evicted
    stats.mod(memcg.id, PGSTEAL, evicted)
    # vmpressure_prio() before each priority's pass, vmpressure() after it (shrink_node)
    for prio, prio_batches in passes:
        vmpressure.vmpressure_prio(sys, memcg, prio)
        vmpressure.vmpressure(sys, memcg, True, sum(b * k for b, _, _, k in prio_batches),
                              sum(ev * k for _, _, ev, k in prio_batches))
    sc.nr_reclaimed = evicted
    sc.priority = passes[-1][0]
    # mem_cgroup_iter_partial(): a walk that stopped at the goal keeps its position
    memcg.reclaim_iter = memcg if evicted >= sc.nr_to_reclaim else None
