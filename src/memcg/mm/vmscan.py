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

from .. import sched
from .list_lru import shrink_slab
from .memcontrol import (NR_LRU_BASE, PGACTIVATE, PGDEACTIVATE, PGREFILL, PGSCAN, PGSTEAL,
                         MemCgroup, memcg_page_state)
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


def cgroup_reclaim(sc: ScanControl) -> bool:
    return sc.target is not None


def try_to_free_mem_cgroup_pages(sys: System, memcg: MemCgroup, nr_pages: int,
                                 may_swap: bool = True) -> int:
    """try_to_free_mem_cgroup_pages(): limit reclaim of memcg's subtree; pages reclaimed."""
    sc = ScanControl(nr_to_reclaim=max(nr_pages, SWAP_CLUSTER_MAX), target=memcg,
                     may_swap=may_swap)
    return do_try_to_free_pages(sys, sc)


def do_try_to_free_pages(sys: System, sc: ScanControl) -> int:
    """do_try_to_free_pages(): priority loop, then the no-progress retries."""
    from .vmpressure import vmpressure_prio

    initial_priority = sc.priority
    while True:
        while True:
            _trace_vmpressure_prio(sys, sc.target or sys.root, sc.priority)
            vmpressure_prio(sys, sc.target or sys.root, sc.priority)
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
        if not sc.total_scanned:
            # Nothing was scannable (anon without swap): vmpressure never saw a window,
            # so the unmet target goes to the userspace shrinkers directly.
            from .mempressure import shrinker_request
            shrinker_request(sys, sc.target or sys.root, sc.nr_to_reclaim - sc.nr_reclaimed)
        return 0


def inactive_is_low(inactive: int, active: int) -> bool:
    """inactive_is_low(): inactive * int_sqrt(10 * size_in_GB) < active (ratio 1 below 1 GB)."""
    gb = (inactive + active) >> (30 - 12)
    ratio = math.isqrt(10 * gb) if gb else 1
    return inactive * ratio < active


def lru_size(sys: System, memcg: MemCgroup, lru: int, hierarchical: bool) -> int:
    return memcg_page_state(sys, memcg, NR_LRU_BASE + lru, hierarchical)


def prepare_scan_control(sys: System, sc: ScanControl) -> None:
    """prepare_scan_control(): decide deactivation and cache-trim mode on the target's lruvec.

    The workingset refault trigger is not modelled: deactivation follows the list ratio.
    """
    target = sc.target or sys.root
    if sc.force_deactivate:
        sc.may_deactivate = DEACTIVATE_ANON | DEACTIVATE_FILE
    else:
        sc.may_deactivate = 0
        if inactive_is_low(lru_size(sys, target, LRU_INACTIVE_ANON, True),
                           lru_size(sys, target, LRU_ACTIVE_ANON, True)):
            sc.may_deactivate |= DEACTIVATE_ANON
        if inactive_is_low(lru_size(sys, target, LRU_INACTIVE_FILE, True),
                           lru_size(sys, target, LRU_ACTIVE_FILE, True)):
            sc.may_deactivate |= DEACTIVATE_FILE
    file = lru_size(sys, target, LRU_INACTIVE_FILE, True)
    sc.cache_trim_mode = bool(file >> sc.priority) and not (sc.may_deactivate & DEACTIVATE_FILE)


def shrink_node(sys: System, sc: ScanControl) -> None:
    """shrink_node(): one pass over the target's subtree at sc.priority, then vmpressure."""
    from .vmpressure import vmpressure

    nr_reclaimed, nr_scanned = sc.nr_reclaimed, sc.nr_scanned
    prepare_scan_control(sys, sc)
    shrink_node_memcgs(sys, sc)
    sc.total_scanned += sc.nr_scanned - nr_scanned
    memcg, scanned, reclaimed = (sc.target or sys.root, sc.nr_scanned - nr_scanned,
                                 sc.nr_reclaimed - nr_reclaimed)
    if sys.reclaim_trace is not None and scanned:
        sys.reclaim_trace.append(("v", memcg.id, scanned, reclaimed))
    vmpressure(sys, memcg, True, scanned, reclaimed)


def _trace_vmpressure_prio(sys: System, memcg: MemCgroup, prio: int) -> None:
    """Record what vmpressure_prio() will account, for the streaming detector."""
    from .vmpressure import vmpressure_level_critical_prio, vmpressure_win

    if sys.reclaim_trace is not None and prio <= vmpressure_level_critical_prio:
        sys.reclaim_trace.append(("v", memcg.id, vmpressure_win, 0))


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
        shrink_lruvec(sys, memcg, sc)
        shrink_slab(sys, memcg, sc.priority, not cgroup_reclaim(sc))  # dentries, inodes
        if partial and sc.nr_reclaimed >= sc.nr_to_reclaim:
            break


def get_scan_count(sys: System, memcg: MemCgroup, sc: ScanControl) -> list[int]:
    """get_scan_count(): how many pages of each evictable list to scan at this priority.

    Scan balance (6.x order): no swap -> file only; memcg reclaim with swappiness 0 ->
    file only; priority 0 -> equal; cache-trim mode -> file only; else by swappiness.
    The reclaim-cost feedback (anon_cost/file_cost) is not modelled: SCAN_FRACT uses the
    plain swappiness split.
    """
    swappiness = memcg.swappiness
    if not sc.may_swap or sys.swap.nr_free <= 0:
        balance = SCAN_FILE
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
    for lru in EVICTABLE_LRUS:
        file = is_file_lru(lru)
        size = memcg.lruvec.size(lru)
        scan = size >> sc.priority
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


def shrink_lruvec(sys: System, memcg: MemCgroup, sc: ScanControl) -> None:
    """shrink_lruvec(): scan the lists in SWAP_CLUSTER_MAX batches, proportionally."""
    nr = get_scan_count(sys, memcg, sc)
    targets = list(nr)
    nr_to_reclaim = sc.nr_to_reclaim
    nr_reclaimed = 0
    scan_adjusted = False
    while nr[LRU_INACTIVE_ANON] or nr[LRU_ACTIVE_FILE] or nr[LRU_INACTIVE_FILE]:
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
    # Even if we did not try to evict anon pages at all, age the active anon list.
    if sys.swap.nr_free > 0 and sc.may_swap and inactive_is_low(
            memcg.lruvec.size(LRU_INACTIVE_ANON), memcg.lruvec.size(LRU_ACTIVE_ANON)):
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
    lst = memcg.lruvec.lists[lru]
    pfns = lst.isolate(sys.mem, nr)
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
    # FOLIOREF_RECLAIM_CLEAN: a referenced dirty file folio stays on the inactive list.
    keep |= rest & ~swapbacked & dirty & referenced
    # Dirty file folios in direct reclaim: PG_reclaim, wake the flushers, activate.  The
    # flusher's writeback completes at once in the model: the folio comes back clean.
    to_flush = rest & ~swapbacked & dirty & ~referenced
    f[to_flush] = (f[to_flush] | PG_reclaim) & np.uint8(~PG_dirty & 0xFF)
    activate |= to_flush
    evict = rest & ~dirty
    # Anon and shmem go to swap, or back to the active list when there is none.
    if swapbacked.any():
        can_swap = sc.may_swap and sys.swap.nr_free > 0
        if not can_swap:
            activate |= evict & swapbacked
            evict &= ~swapbacked
    mem.flags[pfns] = f
    evicted = 0
    if evict.any():
        victims = pfns[evict]
        freed = sys.reclaim_pages(victims)  # pageout / __remove_mapping / free
        evicted = len(freed)
        if evicted < len(victims):
            # swap ran out part-way: the rest are activated
            back = np.setdiff1d(victims, freed, assume_unique=True)
            activate[np.isin(pfns, back)] = True
        if to_flush.any():
            sys.writeback_done(pfns[to_flush])
    elif to_flush.any():
        sys.writeback_done(pfns[to_flush])
    sys.stats.mod(memcg.id, PGSTEAL, evicted)
    act = pfns[activate]
    if len(act):
        sys.stats.mod(memcg.id, PGACTIVATE, len(act))
        _lru_move(sys, memcg, act, lru + 1)
    _lru_move(sys, memcg, pfns[keep], lru)
    _lru_move(sys, memcg, pfns[unevictable], LRU_UNEVICTABLE)
    return evicted


# --- global reclaim -------------------------------------------------------------------

def mem_cgroup_soft_reclaim(sys: System, root: MemCgroup) -> int:
    """mem_cgroup_soft_reclaim(): shrink root's subtree at priority 0 until the excess is gone."""
    from .memcontrol_v1 import MEM_CGROUP_MAX_RECLAIM_LOOPS, soft_limit_excess

    excess = soft_limit_excess(root)
    total = 0
    loop = 0
    while True:
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
            if not soft_limit_excess(root):
                return total
        if loop >= 2 and (not total or total >= (excess >> 2)):
            return total
        if loop > MEM_CGROUP_MAX_RECLAIM_LOOPS or not reclaimed_this_walk:
            return total


def balance_pgdat(sys: System, high: int) -> int:
    """kswapd's balance_pgdat(): global reclaim until free pages reach `high`.

    Run inline by the allocating task in the model.  Soft-limit reclaim comes first at
    every priority; then every group is scanned (kswapd walks the whole tree).
    """
    from .memcontrol_v1 import memcg1_soft_limit_reclaim

    sc = ScanControl(nr_to_reclaim=0, target=None, may_swap=True, kswapd=True)
    reclaimed = 0
    while sc.priority >= 0 and sys.mem.nr_free < high:
        reclaimed += memcg1_soft_limit_reclaim(sys)
        if sys.mem.nr_free >= high:
            break
        sc.nr_to_reclaim = max(SWAP_CLUSTER_MAX, high - sys.mem.nr_free)
        sc.nr_reclaimed = 0
        shrink_node(sys, sc)
        reclaimed += sc.nr_reclaimed
        if sc.nr_reclaimed < sc.nr_to_reclaim:
            sc.priority -= 1
    return reclaimed


# --- streaming page cache: the steady state of limit reclaim ----------------------------
#
# A task reading a file much larger than its group's limit settles into a cycle: every
# read batch fails its charge at the limit (mm/memcontrol.c: try_charge_memcg), reclaims
# the oldest pages of the group's inactive file list (mm/vmscan.c: shrink_inactive_list
# -> shrink_folio_list -> __remove_mapping, leaving shadow entries, mm/workingset.c) and
# charges the new pages (mm/filemap.c: filemap_add_folio).  Once P consecutive batches
# have had exactly the effects of the P batches before them, the next N*P batches have
# them too, and StreamReclaim applies them at once.

# Run the exact slow path for every batch when False (the tests compare both ways).
STREAM_FAST_FORWARD = True
# The longest cycle looked for, in read batches (a cycle evicts what it charges, so its
# length is reclaim-size / gcd(reclaim-size, batch) batches).
STREAM_MAX_PERIOD = 64
# Batches watched without finding a cycle before the detector gives up for this read.
STREAM_MAX_WATCH = 4 * STREAM_MAX_PERIOD


@dataclass
class _StreamSnap:
    """The machine at the start of one read batch, split by how a cycle may change it."""

    phase: tuple  # must come back exactly after a cycle
    linear: tuple  # failure counters: must grow by the same amount every cycle
    stats: np.ndarray  # sys.stats: the same growth every cycle, in the reader's row only
    acc: dict  # ratelimit and vmpressure accumulators: replayed from the trace
    history: int  # len(sys.pressure_history)
    kind: str  # the batch's slots: "h" all holes, "s" all shadows, else "x"
    nr_free: int
    trace: list = None  # what the batch did (filled in when it ends)


def _counters(m: MemCgroup):
    return (m.memory, m.memsw, m.kmem, m.tcpmem)


def _stream_snapshot(sys: System, kind: str) -> _StreamSnap:
    memcgs = sorted(sys.memcgs.items())
    phase = [sys.mem.nr_free, sys.swap.nr_free, sys.rng.getstate(),
             sched.nr_queued(sys.clock, (sched.TASK, sched.USER, sched.NOMEM_RETRY)),
             len(sys.clock.sleeping), len(sys.dying),
             tuple(sorted(sys.shrinker_debt.items())), tuple(sorted(sys.soft_limit_tree.items())),
             sys.soft_limit_seq, sys.global_oom_kills, sys.clock.now,
             sys.dead_stats.a.tobytes(), sum(lru.nr_items() for lru in sys.list_lrus)]
    for st in sys.stock:
        phase.append(tuple((c.id if c is not None else 0, n) for c, n in zip(st.cached, st.nr_pages)))
    for st in getattr(sys, "obj_stock", ()):
        phase.append((id(st.cached_objcg), st.nr_bytes))
    linear = []
    acc = {}
    for mid, m in memcgs:
        phase.append((mid, m.online, m.under_oom, m.oom_lock, m.current_threshold,
                       m.memsw_current_threshold, len(m.thresholds), len(m.memsw_thresholds),
                       m.reclaim_iter.id if m.reclaim_iter is not None else 0,
                       tuple(lst.nr for lst in m.lruvec.lists),
                       tuple((c.usage, c.max, c.watermark) for c in _counters(m))))
        linear.extend(c.failcnt for c in _counters(m))
        v = sys._vmpressure.get(mid)
        acc[("v", mid)] = (v.tree_scanned, v.tree_reclaimed) if v is not None else (0, 0)
        for cpu in range(sys.cpus):
            acc[("e", mid, cpu)] = (m.nr_page_events[cpu], m.thresh_target[cpu],
                                    m.softlimit_target[cpu])
    return _StreamSnap(tuple(phase), tuple(linear), sys.stats.a.copy(), acc,
                       len(sys.pressure_history), kind, sys.mem.nr_free)


class _Accumulators:
    """The reset-on-threshold accumulators a cycle drives, as the kernel updates them.

    mm/memcontrol-v1.c: mem_cgroup_event_ratelimit() - per memcg and CPU, a threshold
    check every THRESHOLDS_EVENTS_TARGET page events and a soft-limit update every
    SOFTLIMIT_EVENTS_TARGET; mm/vmpressure.c: vmpressure() - a level every vmpressure_win
    scanned pages.  State: (scanned, reclaimed) per vmpressure key, (events - thresh
    target, events - softlimit target) per ratelimit key.
    """

    def __init__(self, trace: list):
        self.vkeys = sorted({e[1] for e in trace if e[0] == "v"})
        self.ekeys = sorted({(e[1], e[2]) for e in trace if e[0] == "e"})
        vi = {k: i for i, k in enumerate(self.vkeys)}
        ei = {k: len(self.vkeys) + i for i, k in enumerate(self.ekeys)}
        self.steps = [(True, vi[e[1]], e[2], e[3]) if e[0] == "v" else
                      (False, ei[(e[1], e[2])], e[3], 0) for e in trace]
        self.events_per_cycle = {k: sum(e[3] for e in trace if e[0] == "e" and (e[1], e[2]) == k)
                                 for k in self.ekeys}

    def state_of(self, acc: dict) -> tuple:
        st = [acc.get(("v", k), (0, 0)) for k in self.vkeys]
        for mid, cpu in self.ekeys:
            val, thresh, soft = acc[("e", mid, cpu)]
            st.append((val - thresh, val - soft))
        return tuple(st)

    def step(self, state: tuple) -> tuple[tuple, list]:
        """One cycle: the new state and the checks that fired, in order."""
        from .memcontrol import SOFTLIMIT_EVENTS_TARGET, THRESHOLDS_EVENTS_TARGET
        from .vmpressure import vmpressure_calc_level, vmpressure_win

        st = [list(x) for x in state]
        fired = []
        for is_v, i, a, b in self.steps:
            x = st[i]
            x[0] += a
            x[1] += a if not is_v else b
            if is_v:
                if x[0] >= vmpressure_win:  # vmpressure_work_fn()
                    fired.append(("v", i, vmpressure_calc_level(x[0], x[1])))
                    x[0] = x[1] = 0
            elif x[0] >= 0:  # memcg1_check_events()
                x[0] = -THRESHOLDS_EVENTS_TARGET
                fired.append(("t", i, 0))
                if x[1] >= 0:
                    x[1] = -SOFTLIMIT_EVENTS_TARGET
                    fired.append(("s", i, 0))
        return tuple(tuple(x) for x in st), fired

    def run(self, state: tuple, n: int, forbidden: set) -> tuple[int, tuple, list]:
        """Up to n cycles from state, stopping before one that fires a forbidden kind.

        Returns (cycles, final state, fired checks of every cycle).  The state space is
        small, so the walk soon repeats and the rest of the cycles follow the loop.
        """
        seen: dict = {}
        states, fires = [], []
        while len(states) < n and state not in seen:
            nxt, fired = self.step(state)
            if any(f[0] in forbidden for f in fired):
                return len(states), state, [x for f in fires for x in f]
            seen[state] = len(states)
            states.append(state)
            fires.append(fired)
            state = nxt
        done = len(states)
        if done == n:
            return n, state, [x for f in fires for x in f]
        loop = seen[state]
        length = done - loop
        reps, rest = divmod(n - done, length)
        cyc = fires[loop:]
        out = [x for f in fires + cyc * reps + cyc[:rest] for x in f]
        return n, states[loop + rest], out


class StreamReclaim:
    """Watches the batches of one filemap_read() and fast-forwards its steady state.

    Conditions checked before N cycles of P batches are applied at once:
    - the last 2P batches ran at the group's limit (mm/memcontrol.c: try_charge_memcg
      reclaims for every batch) and formed two cycles with equal effects: everything in
      _StreamSnap.phase came back (usages, watermarks, stocks, LRU sizes, the reclaim
      iterator, free and swap pages, the RNG, soft-limit tree, queues), failcnt and
      sys.stats grew by the same amounts, and the traces (vmpressure reports, page-event
      counts) were identical;
    - the growth of sys.stats is exactly that of clean file pages evicted and inserted
      one for one in the reader's group only: pgpgin = pgpgout = pgscan = pgsteal =
      64P, workingset_refault_file 0 or 64P as the slots are holes or shadows, nothing
      else (no activation, no anon, no dirty pages, no other group touched);
    - free pages never went below the low watermark at an allocation (no kswapd work,
      mm/page_alloc.c: __alloc_pages), so the node is not reclaimed globally;
    - every page charged to the group is on its inactive file list, clean, unmapped and
      not young, in a file (not shmem) mapping: shrink_folio_list() evicts each one it
      scans, oldest first (mm/vmscan.c: folio_check_references -> FOLIOREF_RECLAIM);
    - the ratelimited checks and vmpressure windows crossed on the way are replayed
      (_Accumulators); a cycle whose threshold check could signal (thresholds on the
      group or an ancestor), whose soft-limit update could re-key the tree, or whose
      vmpressure window could reach a listener or a user-space shrinker is not skipped;
    - the batches skipped are whole and their slots all holes (or all shadows) as in the
      cycles watched; the read goes on in the slow path after them.
    """

    def __init__(self, sys: System, task, mapping):
        self.sys, self.task, self.mapping = sys, task, mapping
        self.memcg = task.memcg
        self.snaps: list[_StreamSnap] = []
        self.watched = 0

    def _at_limit(self) -> bool:
        from .memcontrol import hierarchy_margin
        from .filemap import FILEMAP_BATCH

        return not self.memcg.is_root() and hierarchy_margin(self.memcg) < FILEMAP_BATCH

    def begin(self, start: int, nr: int) -> int:
        """Called before the read batch at start runs in the slow path.

        Returns start, or the start of the first batch after the cycles it skipped.
        """
        from .filemap import FILEMAP_BATCH, HOLE, SHADOW

        sys = self.sys
        sys.reclaim_trace = None
        if self.watched >= STREAM_MAX_WATCH or not self._at_limit():
            self.snaps.clear()
            return start
        s = self.mapping.slots[start:min(nr, start + FILEMAP_BATCH)]
        kind = "h" if (s == HOLE).all() else "s" if (s == SHADOW).all() else "x"
        self.snaps.append(_stream_snapshot(sys, kind))
        if STREAM_FAST_FORWARD and len(self.snaps) >= 3:
            skipped = self._search(start, nr)
            if skipped:
                self.snaps.clear()
                self.watched = 0
                return start + skipped
        if len(self.snaps) > 2 * STREAM_MAX_PERIOD + 1:
            del self.snaps[0]
        sys.reclaim_trace = []
        return start

    def end(self) -> None:
        """Called after the batch: keep what it did."""
        sys = self.sys
        if sys.reclaim_trace is not None and self.snaps:
            self.snaps[-1].trace = sys.reclaim_trace
            self.watched += 1
        sys.reclaim_trace = None

    def close(self) -> None:
        self.sys.reclaim_trace = None

    def _search(self, start: int, nr: int) -> int:
        """Look for a cycle of P batches repeated twice up to now; pages skipped or 0."""
        snaps = self.snaps
        last = len(snaps) - 1
        now = snaps[last].phase
        for period in range(1, min(STREAM_MAX_PERIOD, last // 2) + 1):
            if snaps[last - period].phase == now and snaps[last - 2 * period].phase == now:
                done = self._try(snaps, period, start, nr)
                if done:
                    return done
        return 0

    def _try(self, snaps: list, period: int, start: int, nr: int) -> int:
        from .filemap import (FILEMAP_BATCH, HOLE, SHADOW, filemap_stream_cycles,
                              stream_pages_ok)
        from .memcontrol import (PGPGIN, PGPGOUT, WORKINGSET_REFAULT_FILE)

        sys, memcg = self.sys, self.memcg
        last = len(snaps) - 1
        a, b, c = snaps[last - 2 * period], snaps[last - period], snaps[last]
        first, second = snaps[last - 2 * period:last - period], snaps[last - period:last]
        kinds = {s.kind for s in first + second}
        if len(kinds) != 1 or kinds == {"x"}:
            return 0
        trace = [e for s in second for e in s.trace]
        if trace != [e for s in first for e in s.trace]:
            return 0
        if any(s.nr_free - FILEMAP_BATCH < sys.wmark_low for s in first + second):
            return 0
        if tuple(y - x for x, y in zip(b.linear, c.linear)) != \
                tuple(y - x for x, y in zip(a.linear, b.linear)):
            return 0
        grow = c.stats - b.stats
        if not np.array_equal(grow, b.stats - a.stats):
            return 0
        pages = period * FILEMAP_BATCH
        want = np.zeros(grow.shape[1], np.int64)
        want[[PGPGIN, PGPGOUT, PGSCAN, PGSTEAL]] = pages
        if kinds == {"s"}:
            want[WORKINGSET_REFAULT_FILE] = pages
        if not np.array_equal(grow[memcg.id], want) or \
                np.count_nonzero(grow) != np.count_nonzero(want):
            return 0
        acc = _Accumulators(trace)
        if not self._replay_matches(acc, b, c):
            return 0
        # How many cycles: whole batches of the same kind of slots, before the read ends.
        slots = self.mapping.slots[start:(nr // FILEMAP_BATCH) * FILEMAP_BATCH]
        match = (slots == HOLE) if kinds == {"h"} else (slots == SHADOW)
        bad = np.flatnonzero(~match)
        span = int(bad[0]) if len(bad) else len(slots)
        n = span // pages
        if n < 1 or not stream_pages_ok(sys, memcg):
            return 0
        n, state, fired = acc.run(acc.state_of(c.acc), n, self._forbidden(acc))
        if n < 1:
            return 0
        self._apply_counters(acc, c, b, n, state, fired, grow)
        filemap_stream_cycles(sys, self.task, self.mapping, start, n * pages)
        return n * pages

    def _replay_matches(self, acc: _Accumulators, b: _StreamSnap, c: _StreamSnap) -> bool:
        """The replay of the second cycle from its start gives what the slow path did."""
        from .vmpressure import LEVEL_NAMES

        sys = self.sys
        state, fired = acc.step(acc.state_of(b.acc))
        if state != acc.state_of(c.acc):
            return False
        for mid, cpu in acc.ekeys:
            if c.acc[("e", mid, cpu)][0] - b.acc[("e", mid, cpu)][0] != \
                    acc.events_per_cycle[(mid, cpu)]:
                return False
        history = [(sys.memcgs[acc.vkeys[i]].path, LEVEL_NAMES[lvl])
                   for kind, i, lvl in fired if kind == "v"]
        return sys.pressure_history[b.history:c.history] == history and \
            len(sys.pressure_history) == c.history

    def _forbidden(self, acc: _Accumulators) -> set:
        """The checks that could do more than move their own accumulator."""
        from .memcontrol_v1 import soft_limit_excess

        sys = self.sys
        forbidden = set()
        for mid, _ in acc.ekeys:
            m = sys.memcgs[mid]
            for x in m.ancestors():
                if x.thresholds or x.memsw_thresholds:
                    forbidden.add("t")  # mem_cgroup_threshold() could signal
                if x.id in sys.soft_limit_tree or soft_limit_excess(x) or \
                        (not x.is_root() and x.soft_limit < x.memory.max):
                    forbidden.add("s")  # memcg1_update_tree() could re-key
        for mid in acc.vkeys:
            m = sys.memcgs[mid]
            if any(sys._vmpressure.get(x.id) is not None and sys._vmpressure[x.id].events
                   for x in m.ancestors()) or \
                    any(s.chunks > 0 for x in m.subtree() for s in sys.user_shrinkers.get(x.id, ())):
                forbidden.add("v")  # vmpressure_event() / shrinker_request() would signal
        return forbidden

    def _apply_counters(self, acc: _Accumulators, c: _StreamSnap, b: _StreamSnap, n: int,
                        state: tuple, fired: list, grow: np.ndarray) -> None:
        """n cycles of counter growth, accumulators and pressure levels."""
        from .mempressure import shrinker_request
        from .vmpressure import LEVEL_NAMES

        sys = self.sys
        sys.stats.a += n * grow
        i = 0
        lin = [y - x for x, y in zip(b.linear, c.linear)]
        for _, m in sorted(sys.memcgs.items()):
            for counter in _counters(m):
                counter.failcnt += n * lin[i]
                i += 1
        for j, mid in enumerate(acc.vkeys):
            v = sys.vmpressure_of(sys.memcgs[mid])
            v.tree_scanned, v.tree_reclaimed = state[j]
        for j, (mid, cpu) in enumerate(acc.ekeys):
            m = sys.memcgs[mid]
            val = m.nr_page_events[cpu] + n * acc.events_per_cycle[(mid, cpu)]
            dt, ds = state[len(acc.vkeys) + j]
            m.nr_page_events[cpu] = val
            m.thresh_target[cpu] = val - dt
            m.softlimit_target[cpu] = val - ds
        windows = [(acc.vkeys[i], lvl) for kind, i, lvl in fired if kind == "v"]
        sys.pressure_history.extend((sys.memcgs[mid].path, LEVEL_NAMES[lvl]) for mid, lvl in windows)
        for mid in sorted({mid for mid, _ in windows}):
            shrinker_request(sys, sys.memcgs[mid], 0)  # no shrinker holds chunks: forgets the debt
            for m in sys.memcgs[mid].ancestors():
                sys.vmpressure_of(m)  # vmpressure_work_fn() walks up, finding no listener
