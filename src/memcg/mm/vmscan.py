"""Page reclaim: per-memcg LRU scanning, limit reclaim and global reclaim (mm/vmscan.c, 6.18).

Classic two-list LRU (no multi-gen LRU, as on kernels built without CONFIG_LRU_GEN).
Limit reclaim (try_to_free_mem_cgroup_pages) walks only the subtree of the group whose
limit was hit, at priorities DEF_PRIORITY..0, scanning each lruvec in SWAP_CLUSTER_MAX
batches; since 6.10 direct reclaimers resume a shared partial walk of the subtree and
stop once they reclaimed enough.  File pages are reclaimable; anon and shmem pages only
to swap.  Global reclaim walks every group, after v1 soft-limit reclaim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import fastpath, memcontrol, memcontrol_v1, mempressure, page_writeback, shrinker, vmpressure
from .memcontrol import (MEMCG_LOW, NR_LRU_BASE, PGACTIVATE, PGDEACTIVATE, PGREFILL, PGSCAN,
                         PGSTEAL, MemCgroup, lruvec_page_state_lru, mem_cgroup_get_nr_swap_pages)
# the swap-out fast path reaches back into this module only inside its functions
from .fastpath import cleanfile, lruvec, swapout
from .mmzone import (LRU_ACTIVE_ANON, LRU_ACTIVE_FILE, LRU_INACTIVE_ANON, LRU_INACTIVE_FILE,
                     LRU_UNEVICTABLE, PG_dirty, PG_mlocked, PG_reclaim, PG_referenced,
                     PG_swapbacked, PG_young, is_active_lru, is_file_lru)

if TYPE_CHECKING:
    from ..system import System

# include/linux/swap.h: SWAP_CLUSTER_MAX
SWAP_CLUSTER_MAX = 32
# include/linux/mmzone.h: DEF_PRIORITY
DEF_PRIORITY = 12
# include/linux/swap.h: MAX_SWAPPINESS (the anon + file priority sum in get_scan_count)
MAX_SWAPPINESS = 200
# include/linux/swap.h: MIN_SWAPPINESS, and SWAPPINESS_ANON_ONLY - memory.reclaim's
# "swappiness=max" (6.13+): reclaim anon only
MIN_SWAPPINESS = 0
SWAPPINESS_ANON_ONLY = MAX_SWAPPINESS + 1
# mm/vmscan.c: enum scan_balance
SCAN_EQUAL, SCAN_FRACT, SCAN_ANON, SCAN_FILE = range(4)
DEACTIVATE_ANON, DEACTIVATE_FILE = 1, 2
EVICTABLE_LRUS = (LRU_INACTIVE_ANON, LRU_ACTIVE_ANON, LRU_INACTIVE_FILE, LRU_ACTIVE_FILE)


@dataclass
class ScanControl:
    """struct scan_control (the fields the model uses)."""

    nr_to_reclaim: int
    target: MemCgroup | None  # target_mem_cgroup: None for global reclaim
    may_swap: bool = True
    priority: int = DEF_PRIORITY
    nr_scanned: int = 0
    total_scanned: int = 0
    nr_reclaimed: int = 0
    may_deactivate: int = 0
    force_deactivate: bool = False
    skipped_deactivate: bool = False
    cache_trim_mode: bool = False
    memcg_full_walk: bool = False
    kswapd: bool = False
    # the swappiness memory.reclaim asked for (sc->proactive_swappiness), or None
    proactive_swappiness: int | None = None
    # cgroup v2 protection: reclaim below memory.low is allowed (the retry when everything
    # reclaimable was protected), and some group was skipped or spared for its low
    memcg_low_reclaim: bool = False
    memcg_low_skipped: bool = False


def cgroup_reclaim(sc: ScanControl) -> bool:
    return sc.target is not None


def try_to_free_mem_cgroup_pages(sys: System, memcg: MemCgroup, nr_pages: int,
                                 may_swap: bool = True, swappiness: int | None = None) -> int:
    """try_to_free_mem_cgroup_pages(): limit reclaim of memcg's subtree; pages reclaimed.
    swappiness: memory.reclaim's swappiness= (else each group's own)."""
    sc = ScanControl(nr_to_reclaim=max(nr_pages, SWAP_CLUSTER_MAX), target=memcg,
                     may_swap=may_swap, proactive_swappiness=swappiness)
    return do_try_to_free_pages(sys, sc)


def do_try_to_free_pages(sys: System, sc: ScanControl) -> int:
    """do_try_to_free_pages(): priority loop, then the no-progress retries."""
    if fastpath.ENABLED:
        from .fastpath import swaprotate  # late: it builds on swapout, which imports this
        # A leaf group's anon pages into swap: if the fast path can take the episode at
        # once (or one that first keeps the young pages at the tail), let it.  (A span
        # of writes through the group - fastpath.writespan - has no anon pages to swap.)
        span = sys.write_span
        if (span is None or span.memcg is not sc.target) and \
                (swapout.reclaim_swap_episode(sys, sc) or swaprotate.rotate_swap_episode(sys, sc)):
            return sc.nr_reclaimed
        # Only clean page cache to evict from a leaf group's inactive file list: if the
        # fast path can take the episode at once, let it.
        if cleanfile.reclaim_clean_episode(sys, sc):
            return sc.nr_reclaimed
    initial_priority = sc.priority
    while True:
        while True:
            if sys.reclaim_trace is not None:  # the streaming fast path watches this reclaim
                # (only fastpath.stream sets the trace, so it is imported by now)
                fastpath.stream.trace_vmpressure_prio(sys, sc.target or sys.root, sc.priority)
            vmpressure.vmpressure_prio(sys, sc.target or sys.root, sc.priority)
            sc.nr_scanned = 0
            shrink_node(sys, sc)
            if sc.nr_reclaimed >= sc.nr_to_reclaim:
                break
            sc.priority -= 1
            if sc.priority < 0:
                break
        if sc.nr_reclaimed:
            return sc.nr_reclaimed
        # A partial walk may have missed reclaimable groups: rescan the whole tree.
        if not sc.memcg_full_walk:
            sc.priority = initial_priority
            sc.memcg_full_walk = True
            continue
        # Untapped active lists: retry, deactivating regardless of the ratio.
        if sc.skipped_deactivate:
            sc.priority = initial_priority
            sc.force_deactivate = True
            sc.skipped_deactivate = False
            continue
        # Untapped cgroup reserves?  Don't OOM, retry - into memory.low this time.
        if sc.memcg_low_skipped:
            sc.priority = initial_priority
            sc.force_deactivate = False
            sc.memcg_low_reclaim = True
            sc.memcg_low_skipped = False
            continue
        if not sc.total_scanned:
            # Nothing was scannable (anon without swap): vmpressure never saw a window,
            # so the unmet target goes to the userspace shrinkers directly.
            mempressure.shrinker_request(sys, sc.target or sys.root,
                                         sc.nr_to_reclaim - sc.nr_reclaimed)
        return 0


def inactive_is_low(inactive: int, active: int) -> bool:
    """inactive_is_low(): inactive * int_sqrt(10 * size_in_GB) < active (ratio 1 below 1 GB)."""
    gb = (inactive + active) >> (30 - 12)
    ratio = math.isqrt(10 * gb) if gb else 1
    return inactive * ratio < active


def prepare_scan_control(sys: System, sc: ScanControl) -> None:
    """prepare_scan_control(): decide deactivation and cache-trim mode on the target's lruvec,
    from its statistics as last flushed (lruvec_page_state, 6.12+: at most FLUSH_TIME old).

    The workingset refault trigger is not modelled: deactivation follows the list ratio.
    """
    target = sc.target or sys.root
    if sc.force_deactivate:
        sc.may_deactivate = DEACTIVATE_ANON | DEACTIVATE_FILE
    else:
        sc.may_deactivate = 0
        if inactive_is_low(lruvec_page_state_lru(sys, target, LRU_INACTIVE_ANON),
                           lruvec_page_state_lru(sys, target, LRU_ACTIVE_ANON)):
            sc.may_deactivate |= DEACTIVATE_ANON
        if inactive_is_low(lruvec_page_state_lru(sys, target, LRU_INACTIVE_FILE),
                           lruvec_page_state_lru(sys, target, LRU_ACTIVE_FILE)):
            sc.may_deactivate |= DEACTIVATE_FILE
    file = lruvec_page_state_lru(sys, target, LRU_INACTIVE_FILE)
    sc.cache_trim_mode = bool(file >> sc.priority) and not (sc.may_deactivate & DEACTIVATE_FILE)


def shrink_node(sys: System, sc: ScanControl) -> None:
    """shrink_node(): one pass over the target's subtree at sc.priority, then vmpressure."""
    nr_reclaimed, nr_scanned = sc.nr_reclaimed, sc.nr_scanned
    prepare_scan_control(sys, sc)
    shrink_node_memcgs(sys, sc)
    sc.total_scanned += sc.nr_scanned - nr_scanned
    memcg, scanned, reclaimed = (sc.target or sys.root, sc.nr_scanned - nr_scanned,
                                 sc.nr_reclaimed - nr_reclaimed)
    if sys.reclaim_trace is not None:  # the streaming fast path watches this reclaim
        fastpath.stream.trace_vmpressure(sys, memcg, scanned, reclaimed)
    vmpressure.vmpressure(sys, memcg, True, scanned, reclaimed)


def mem_cgroup_iter_partial(sys: System, root: MemCgroup):
    """mem_cgroup_iter() with a reclaim cookie: resume after the shared position.

    The walk ends at the end of the pre-order; a walk that starts there restarts from the
    top so that it sees at least one group.
    """
    order = list(root.subtree())
    pos = root.reclaim_iter
    start = order.index(pos) + 1 if pos in order else 0
    if start >= len(order):
        start = 0
    for memcg in order[start:]:
        root.reclaim_iter = memcg
        yield memcg
    root.reclaim_iter = None


def shrink_node_memcgs(sys: System, sc: ScanControl) -> None:
    """shrink_node_memcgs(): shrink each memcg of the subtree; partial walks stop at the goal."""
    target = sc.target or sys.root
    partial = not (sc.kswapd or sc.memcg_full_walk)
    walk = mem_cgroup_iter_partial(sys, target) if partial else target.subtree()
    for memcg in walk:
        # Skip memcg with no usage (the root's own pages are charged to no counter).
        if not memcg.is_root() and not memcg.memory.usage:
            continue
        if sys.cgroup_dfl:
            memcontrol.mem_cgroup_calculate_protection(sys, sc.target, memcg)
            if memcontrol.mem_cgroup_below_min(sc.target, memcg):
                continue  # hard protection: this group cannot be reclaimed
            if memcontrol.mem_cgroup_below_low(sc.target, memcg):
                # soft protection: respected unless nothing else is reclaimable
                if not sc.memcg_low_reclaim:
                    sc.memcg_low_skipped = True
                    continue
                memcontrol.memcg_memory_event(sys, memcg, MEMCG_LOW)
        shrink_lruvec(sys, memcg, sc)
        shrinker.shrink_slab(sys, memcg, sc.priority, not cgroup_reclaim(sc))  # dentries, inodes
        if partial and sc.nr_reclaimed >= sc.nr_to_reclaim:
            break


def get_scan_count(sys: System, memcg: MemCgroup, sc: ScanControl) -> list[int]:
    """get_scan_count(): how many pages of each evictable list to scan at this priority.

    Scan balance (6.x order): no swap -> file only; memcg reclaim with swappiness 0 ->
    file only; priority 0 -> equal; cache-trim mode -> file only; else by swappiness.
    The reclaim-cost feedback (anon_cost/file_cost) is not modelled: SCAN_FRACT uses the
    plain swappiness split.
    """
    swappiness = memcg.swappiness if sc.proactive_swappiness is None else sc.proactive_swappiness
    # can_reclaim_anon_pages(): free swap, within swap.max on v2 (mem_cgroup_get_nr_swap_pages)
    if not sc.may_swap or mem_cgroup_get_nr_swap_pages(sys, memcg) <= 0:
        balance = SCAN_FILE
    elif swappiness == SWAPPINESS_ANON_ONLY:
        balance = SCAN_ANON  # proactive reclaim asked for anon only
    elif cgroup_reclaim(sc) and not swappiness:
        balance = SCAN_FILE
    elif not sc.priority and swappiness:
        balance = SCAN_EQUAL
    elif sc.cache_trim_mode:
        balance = SCAN_FILE
    else:
        balance = SCAN_FRACT
    ap, fp = swappiness, MAX_SWAPPINESS - swappiness
    denominator = ap + fp
    nr = [0] * 5
    protection = apply_proportional_protection(memcg, sc) if sys.cgroup_dfl else None
    for lru in EVICTABLE_LRUS:
        file = is_file_lru(lru)
        size = memcg.lruvec.size(lru)
        scan = size
        if protection is not None:
            # memory.low scaling: reclaim above the protection in proportion to the overage
            protected, cgroup_size = protection
            scan -= scan * protected // (cgroup_size + 1)
            # minimally target SWAP_CLUSTER_MAX pages to keep reclaim moving forwards
            scan = max(scan, SWAP_CLUSTER_MAX)
        scan >>= sc.priority
        if not scan and not memcg.online:
            # If the cgroup's already been deleted, scrape out the remaining cache.
            scan = min(size, SWAP_CLUSTER_MAX)
        if balance == SCAN_FRACT:
            frac = fp if file else ap
            scan = scan * frac // denominator if memcg.online else -(-scan * frac // denominator)
        elif balance in (SCAN_FILE, SCAN_ANON):
            if (balance == SCAN_FILE) != file:
                scan = 0
        nr[lru] = scan
    return nr


def apply_proportional_protection(memcg: MemCgroup, sc: ScanControl) -> tuple[int, int] | None:
    """mm/vmscan.c: apply_proportional_protection() - the protection get_scan_count()
    discounts from each list's size (memory.low unless this is the memory.low retry,
    memory.min then), with the group's size; None for an unprotected group."""
    emin, elow = memcontrol.mem_cgroup_protection(sc.target, memcg)
    if not emin and not elow:
        return None
    if not sc.memcg_low_reclaim and elow > emin:
        protection = elow
        sc.memcg_low_skipped = True  # make sure we retry before OOM
    else:
        protection = emin
    # avoid TOCTOU with the earlier protection check
    return protection, max(memcg.memory.usage, protection)


def shrink_lruvec(sys: System, memcg: MemCgroup, sc: ScanControl) -> None:
    """shrink_lruvec(): scan the lists in SWAP_CLUSTER_MAX batches, proportionally."""
    nr = get_scan_count(sys, memcg, sc)
    targets = list(nr)
    nr_to_reclaim = sc.nr_to_reclaim
    nr_reclaimed = 0
    scan_adjusted = False
    while nr[LRU_INACTIVE_ANON] or nr[LRU_ACTIVE_FILE] or nr[LRU_INACTIVE_FILE]:
        # Only the inactive anon list to scan, nothing reclaimed yet to stop at: if the
        # fast path can take a run of batches that keep every page at once, let it.
        if (fastpath.ENABLED and nr_reclaimed < nr_to_reclaim and not scan_adjusted
                and not (nr[LRU_ACTIVE_ANON] or nr[LRU_INACTIVE_FILE] or nr[LRU_ACTIVE_FILE])
                and nr[LRU_INACTIVE_ANON] >= 2 * SWAP_CLUSTER_MAX):
            taken = swapout.keep_batches(sys, memcg, nr[LRU_INACTIVE_ANON], sc)
            if taken:
                nr[LRU_INACTIVE_ANON] -= taken
                continue
        if fastpath.ENABLED and (nr_reclaimed < nr_to_reclaim or scan_adjusted) and \
                lruvec.skip_idle_rounds(nr, sc.may_deactivate, DEACTIVATE_ANON, DEACTIVATE_FILE):
            sc.skipped_deactivate = True  # what each idle round's shrink_list() noted
            break
        for lru in EVICTABLE_LRUS:
            if nr[lru]:
                nr_to_scan = min(nr[lru], SWAP_CLUSTER_MAX)
                nr[lru] -= nr_to_scan
                nr_reclaimed += shrink_list(sys, memcg, lru, nr_to_scan, sc)
        if nr_reclaimed < nr_to_reclaim or scan_adjusted:
            continue
        # Reclaimed enough: scale the remaining scan so anon/file keep their ratio, or stop.
        nr_file = nr[LRU_INACTIVE_FILE] + nr[LRU_ACTIVE_FILE]
        nr_anon = nr[LRU_INACTIVE_ANON] + nr[LRU_ACTIVE_ANON]
        if not nr_file or not nr_anon:
            break
        if nr_file > nr_anon:
            scan_target = targets[LRU_INACTIVE_ANON] + targets[LRU_ACTIVE_ANON] + 1
            percentage = nr_anon * 100 // scan_target
            lru_pair = (LRU_INACTIVE_ANON, LRU_ACTIVE_ANON)
            other = (LRU_INACTIVE_FILE, LRU_ACTIVE_FILE)
        else:
            scan_target = targets[LRU_INACTIVE_FILE] + targets[LRU_ACTIVE_FILE] + 1
            percentage = nr_file * 100 // scan_target
            lru_pair = (LRU_INACTIVE_FILE, LRU_ACTIVE_FILE)
            other = (LRU_INACTIVE_ANON, LRU_ACTIVE_ANON)
        for lru in lru_pair:
            nr[lru] = 0
        for lru in other:
            done = targets[lru] - nr[lru]
            nr[lru] = max(0, targets[lru] * (100 - percentage) // 100 - done)
        scan_adjusted = True
    sc.nr_reclaimed += nr_reclaimed
    # Even if we did not try to evict anon pages at all, age the active anon list
    # (inactive_is_low() of this lruvec: its statistics as last flushed, like the target's)
    if sys.swap.nr_free > 0 and sc.may_swap and inactive_is_low(
            lruvec_page_state_lru(sys, memcg, LRU_INACTIVE_ANON),
            lruvec_page_state_lru(sys, memcg, LRU_ACTIVE_ANON)):
        shrink_active_list(sys, memcg, SWAP_CLUSTER_MAX, LRU_ACTIVE_ANON, sc)


def shrink_list(sys: System, memcg: MemCgroup, lru: int, nr_to_scan: int,
                sc: ScanControl) -> int:
    """shrink_list(): age an active list (if allowed) or reclaim from an inactive one."""
    if is_active_lru(lru):
        if sc.may_deactivate & (DEACTIVATE_FILE if is_file_lru(lru) else DEACTIVATE_ANON):
            shrink_active_list(sys, memcg, nr_to_scan, lru, sc)
        else:
            sc.skipped_deactivate = True
        return 0
    return shrink_inactive_list(sys, memcg, nr_to_scan, lru, sc)


def _lru_move(sys: System, memcg: MemCgroup, pfns: np.ndarray, lru: int) -> None:
    """Put isolated pages back on a list of memcg's lruvec (move_folios_to_lru)."""
    if len(pfns):
        memcg.lruvec.lists[lru].add(sys.mem, pfns)
        sys.stats.mod(memcg.id, NR_LRU_BASE + lru, len(pfns))


def _isolate(sys: System, memcg: MemCgroup, lru: int, nr: int) -> np.ndarray:
    """isolate_lru_folios(): whole folios from the tail until nr pages are scanned.

    The kernel counts a folio's pages towards nr_to_scan (`scan += nr_pages`), so the last
    folio taken may go past nr: its remaining pages, next on the list, come too.
    """
    lst = memcg.lruvec.lists[lru]
    pfns = lst.isolate(sys.mem, nr)
    if sys.mem.large and len(pfns):
        more = sys.mem.folio_tail_missing(pfns)
        if more:
            pfns = np.concatenate([pfns, lst.isolate(sys.mem, more)])
    sys.stats.mod(memcg.id, NR_LRU_BASE + lru, -len(pfns))
    lst.maybe_compact(sys.mem)
    return pfns


def shrink_active_list(sys: System, memcg: MemCgroup, nr_to_scan: int, lru: int,
                       sc: ScanControl) -> None:
    """shrink_active_list(): move pages from the active tail to the inactive head.

    folio_referenced() clears the young bits; without VM_EXEC mappings in the model
    every scanned page is deactivated.  Not counted in sc.nr_scanned (PGREFILL only).
    """
    pfns = _isolate(sys, memcg, lru, nr_to_scan)
    if not len(pfns):
        return
    flags = sys.mem.flags
    flags[pfns] &= np.uint8(~PG_young & 0xFF)
    sys.stats.mod(memcg.id, PGREFILL, len(pfns))
    sys.stats.mod(memcg.id, PGDEACTIVATE, len(pfns))
    _lru_move(sys, memcg, pfns, lru - 1)  # the inactive list of the same type


def shrink_inactive_list(sys: System, memcg: MemCgroup, nr_to_scan: int, lru: int,
                         sc: ScanControl) -> int:
    """shrink_inactive_list() + shrink_folio_list(): reclaim from the inactive tail."""
    pfns = _isolate(sys, memcg, lru, nr_to_scan)
    n = len(pfns)
    if not n:
        return 0
    sc.nr_scanned += n
    sys.stats.mod(memcg.id, PGSCAN, n)
    if fastpath.ENABLED:  # a small batch of anon or shmem pages, decided page by page
        evicted = swapout.shrink_swapbacked(sys, memcg, pfns, lru, sc)
        if evicted is not None:
            return evicted
    mem = sys.mem
    f = mem.flags[pfns]
    young = (f & PG_young) != 0
    referenced = (f & PG_referenced) != 0
    # folio_referenced() clears the young bits, folio_test_clear_referenced() the flag.
    f &= np.uint8(~(PG_young | PG_referenced) & 0xFF)
    unevictable = (f & PG_mlocked) != 0
    swapbacked = (f & PG_swapbacked) != 0
    dirty = (f & PG_dirty) != 0
    # folio_check_references(): referenced ptes -> ACTIVATE if the flag was set too, else KEEP
    activate = young & referenced & ~unevictable
    keep = young & ~referenced & ~unevictable
    f[keep] |= PG_referenced
    rest = ~young & ~unevictable
    # Dirty file folios, referenced or not: PG_reclaim, wake the flushers, activate
    # (shrink_folio_list: a dirty file folio goes to activate_locked before the
    # FOLIOREF_RECLAIM_CLEAN test, which only keeps dirty folios reclaim could write
    # itself).  The flusher's writeback completes at once in the model: the folio
    # comes back clean.
    to_flush = rest & ~swapbacked & dirty
    f[to_flush] = (f[to_flush] | PG_reclaim) & np.uint8(~PG_dirty & 0xFF)
    activate |= to_flush
    evict = rest & ~dirty
    # Anon and shmem go to swap, or back to the active list when there is none.
    if swapbacked.any():
        can_swap = sc.may_swap and mem_cgroup_get_nr_swap_pages(sys, memcg) > 0
        if not can_swap:
            activate |= evict & swapbacked
            evict &= ~swapbacked
    mem.flags[pfns] = f
    evicted = 0
    if evict.any():
        victims = pfns[evict]
        freed = reclaim_pages(sys, victims)  # pageout / __remove_mapping / free
        evicted = len(freed)
        if evicted < len(victims):
            # swap ran out part-way: the rest are activated
            back = np.setdiff1d(victims, freed, assume_unique=True)
            activate[np.isin(pfns, back)] = True
        if to_flush.any():
            page_writeback.folio_end_writeback(sys, pfns[to_flush])
    elif to_flush.any():
        page_writeback.folio_end_writeback(sys, pfns[to_flush])
    # mm/vmscan.c: shrink_inactive_list() - every folio taken was dirty and not queued
    # for writeback (nr_unqueued_dirty == nr_taken): nudge the flushers
    if to_flush.any() and int(np.count_nonzero(dirty & ~swapbacked)) == n:
        page_writeback.wakeup_flusher_threads(sys)
    sys.stats.mod(memcg.id, PGSTEAL, evicted)
    act = pfns[activate]
    if len(act):
        sys.stats.mod(memcg.id, PGACTIVATE, len(act))
        _lru_move(sys, memcg, act, lru + 1)
    _lru_move(sys, memcg, pfns[keep], lru)
    _lru_move(sys, memcg, pfns[unevictable], LRU_UNEVICTABLE)
    return evicted


def reclaim_pages(sys: System, pfns: np.ndarray) -> np.ndarray:
    """shrink_folio_list()'s pageout / __remove_mapping / free for isolated pages, through
    each page's address space (its evict()); returns the pages freed."""
    mids = sys.mem.mapping[pfns]
    if len(mids) and (mids == mids[0]).all():  # pages of one address space (the common case)
        return sys.mappings[int(mids[0])].evict(sys, pfns)
    freed = []
    for mid in np.unique(mids).tolist():
        part = pfns[mids == mid]
        freed.append(sys.mappings[mid].evict(sys, part))
    return np.concatenate(freed) if freed else pfns[:0]


# --- global reclaim -------------------------------------------------------------------

def mem_cgroup_soft_reclaim(sys: System, root: MemCgroup) -> int:
    """mem_cgroup_soft_reclaim(): shrink root's subtree at priority 0 until the excess is gone."""
    excess = memcontrol_v1.soft_limit_excess(root)
    total = 0
    loop = 0
    if fastpath.ENABLED:
        from .fastpath import softlimit  # the fast path builds on the page cache: a cycle
    while True:
        if fastpath.ENABLED:  # walks that only evict clean page cache, taken at once
            loop, total, finished = softlimit.soft_reclaim_walks(sys, root, excess, total, loop)
            if finished:
                return total
        loop += 1
        reclaimed_this_walk = 0
        for victim in list(root.subtree()):
            if not victim.memory.usage:
                continue
            sc = ScanControl(nr_to_reclaim=SWAP_CLUSTER_MAX, target=victim, priority=0,
                             may_swap=True, memcg_full_walk=True)
            prepare_scan_control(sys, sc)
            shrink_lruvec(sys, victim, sc)  # mem_cgroup_shrink_node(): the victim's own lruvec
            total += sc.nr_reclaimed
            reclaimed_this_walk += sc.nr_reclaimed
            if not memcontrol_v1.soft_limit_excess(root):
                return total
        if loop >= 2 and (not total or total >= (excess >> 2)):
            return total
        if loop > memcontrol_v1.MEM_CGROUP_MAX_RECLAIM_LOOPS or not reclaimed_this_walk:
            return total


def balance_pgdat(sys: System, high: int) -> int:
    """kswapd's balance_pgdat(): global reclaim until free pages reach `high`.

    Run inline by the allocating task in the model.  Soft-limit reclaim comes first at
    every priority; then every group is scanned (kswapd walks the whole tree).
    """
    sc = ScanControl(nr_to_reclaim=0, target=None, may_swap=True, kswapd=True)
    reclaimed = 0
    while sc.priority >= 0 and sys.mem.nr_free < high:
        reclaimed += memcontrol_v1.memcg1_soft_limit_reclaim(sys)
        if sys.mem.nr_free >= high:
            break
        sc.nr_to_reclaim = max(SWAP_CLUSTER_MAX, high - sys.mem.nr_free)
        sc.nr_reclaimed = 0
        shrink_node(sys, sc)
        reclaimed += sc.nr_reclaimed
        if sc.nr_reclaimed < sc.nr_to_reclaim:
            sc.priority -= 1
    return reclaimed
