"""The steady state of a read streaming through a full group, fast-forwarded.

A task reading a file much larger than its group's limit settles into a cycle: every
read batch fails its charge at the limit (mm/memcontrol.c: try_charge_memcg), reclaims
the oldest pages of the group's inactive file list (mm/vmscan.c: shrink_inactive_list
-> shrink_folio_list -> __remove_mapping, leaving shadow entries, mm/workingset.c) and
charges the new pages (mm/filemap.c: filemap_add_folio).  Once P consecutive batches
have had exactly the effects of the P batches before them, the next N*P batches have
them too, and StreamReclaim applies them at once.

While it watches a batch, sys.reclaim_trace records what the batch's reclaim reported
(vmpressure windows: trace_vmpressure_prio, trace_vmpressure) and the page events its
charges and uncharges counted (System._traced_events).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ... import sched
from .. import memcontrol, memcontrol_v1, mempressure, vmpressure
from ..filemap import FILEMAP_BATCH, HOLE, SHADOW, AddressSpace
from ..memcontrol import (PGPGIN, PGPGOUT, PGSCAN, PGSTEAL, SOFTLIMIT_EVENTS_TARGET,
                          THRESHOLDS_EVENTS_TARGET, WORKINGSET_REFAULT_FILE, MemCgroup,
                          hierarchy_margin)
from ..mmzone import LRU_INACTIVE_FILE, PG_referenced

if TYPE_CHECKING:
    from ...system import System
    from ...tasks import Task

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


def _queue_lengths(sys: System) -> tuple:
    """How much background work and how many sleepers are queued: a cycle leaves them be."""
    return (sched.nr_queued(sys.clock, (sched.TASK, sched.USER, sched.NOMEM_RETRY)),
            len(sys.clock.sleeping))


def _stream_snapshot(sys: System, kind: str) -> _StreamSnap:
    memcgs = sorted(sys.memcgs.items())
    phase = [sys.mem.nr_free, sys.swap.nr_free, sys.rng.getstate(), _queue_lengths(sys),
             len(sys.dying),
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
        # memory.events (memcg_memory_event: MEMCG_MAX at every reclaim attempt, on v1 too)
        linear.extend(m.memory_events + m.memory_events_local)
        v = sys._vmpressure.get(mid)
        acc[("v", mid)] = (v.tree_scanned, v.tree_reclaimed) if v is not None else (0, 0)
        for cpu in range(sys.cpus):
            acc[("e", mid, cpu)] = (m.nr_page_events[cpu], m.thresh_target[cpu],
                                    m.softlimit_target[cpu])
    return _StreamSnap(tuple(phase), tuple(linear), sys.stats.a.copy(), acc,
                       len(sys.pressure_history), kind, sys.mem.nr_free)


def trace_vmpressure_prio(sys: System, memcg: MemCgroup, prio: int) -> None:
    """Record what vmpressure_prio() will account (mm/vmscan.c: do_try_to_free_pages)."""
    if prio <= vmpressure.vmpressure_level_critical_prio:
        sys.reclaim_trace.append(("v", memcg.id, vmpressure.vmpressure_win, 0))


def trace_vmpressure(sys: System, memcg: MemCgroup, scanned: int, reclaimed: int) -> None:
    """Record what vmpressure() will account (mm/vmscan.c: shrink_node)."""
    if scanned:
        sys.reclaim_trace.append(("v", memcg.id, scanned, reclaimed))


def threshold_usages(sys: System, memcg: MemCgroup) -> tuple:
    """The usages mem_cgroup_threshold() would compare now, for a check of memcg's events:
    (group id, memsw, usage) of every ancestor with thresholds of that kind."""
    return tuple((m.id, memsw, memcontrol.mem_cgroup_usage(sys, m, memsw))
                 for m in memcg.ancestors()
                 for memsw in (False, True)
                 if (m.memsw_thresholds if memsw else m.thresholds))


def thresholds_quiet(sys: System, trace: list, memcg_id: int) -> bool:
    """Whether every threshold check a cycle can make for memcg's events finds nothing to do.

    mm/memcontrol-v1.c: __mem_cgroup_threshold() signals the thresholds between the
    current one and usage, and moves the current index.  A cycle's checks come at some of
    its page-event steps, which ones depending on the ratelimit counters (they drift from
    cycle to cycle); the usages at each step come back every cycle.  If at every step each
    ancestor's usage lies between its current threshold (inclusive) and the next one
    (exclusive), no check of any cycle signals or moves an index.
    """
    for e in trace:
        if e[0] != "e" or e[1] != memcg_id:
            continue
        usages = e[4]
        if usages is None:
            return False  # uncharged with other groups: the usage at the check is unknown
        for mid, memsw, usage in usages:
            m = sys.memcgs[mid]
            lst = m.memsw_thresholds if memsw else m.thresholds
            i = m.memsw_current_threshold if memsw else m.current_threshold
            if i >= 0 and lst[i][0] > usage:
                return False
            if i + 1 < len(lst) and lst[i + 1][0] <= usage:
                return False
    return True


def pressure_quiet(sys: System, memcg: MemCgroup) -> bool:
    """Whether a vmpressure window of memcg does nothing but count and signal eventfds.

    mm/vmpressure.c: vmpressure_work_fn() -> vmpressure_event() signals listeners from
    memcg up; a signal that wakes a reader (user-space work queued) or a user-space
    shrinker holding chunks (mempressure.shrinker_request) would change what follows.
    """
    for x in memcg.ancestors():
        v = sys._vmpressure.get(x.id)
        if v is not None and any(ev.efd.has_watchers() for ev in v.events):
            return False
    return not any(s.chunks > 0 for x in memcg.subtree() for s in sys.user_shrinkers.get(x.id, ()))


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
        st = [list(x) for x in state]
        fired = []
        for is_v, i, a, b in self.steps:
            x = st[i]
            x[0] += a
            x[1] += a if not is_v else b
            if is_v:
                if x[0] >= vmpressure.vmpressure_win:  # vmpressure_work_fn()
                    fired.append(("v", i, vmpressure.vmpressure_calc_level(x[0], x[1])))
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
      iterator, free and swap pages, the RNG, soft-limit tree, queues), failcnt,
      memory.events and sys.stats grew by the same amounts, and the traces (vmpressure reports, page-event
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
      (_Accumulators), each window delivered to the listeners as vmpressure_work_fn()
      delivers it; a cycle whose threshold check could signal or move an index (a usage
      seen at one of its page-event steps outside the current threshold interval,
      thresholds_quiet), whose soft-limit update could re-key the tree, or whose
      vmpressure window could wake a reader or ask a user-space shrinker (pressure_quiet)
      is not skipped;
    - the batches skipped are whole and their slots all holes (or all shadows) as in the
      cycles watched; the read goes on in the slow path after them;
    - each batch of the two cycles reclaimed the same number of pages as its counterpart
      and the frames can be replayed from those numbers (stream_frames_ok): the skipped
      cycles leave every frame, the free stack and the list as the batches would.
    """

    def __init__(self, sys: System, task, mapping):
        self.sys, self.task, self.mapping = sys, task, mapping
        self.memcg = task.memcg
        self.snaps: list[_StreamSnap] = []
        self.watched = 0

    def _at_limit(self) -> bool:
        # Not on cgroup v2: memory.high penalties, protection and PSI times are not in
        # the cycles it replays.
        return not self.memcg.is_root() and not self.sys.cgroup_dfl \
            and hierarchy_margin(self.memcg) < FILEMAP_BATCH

    def begin(self, start: int, nr: int) -> int:
        """Called before the read batch at start runs in the slow path.

        Returns start, or the start of the first batch after the cycles it skipped.
        """
        sys = self.sys
        sys.reclaim_trace = None
        if self.watched >= STREAM_MAX_WATCH or not self._at_limit():
            self.snaps.clear()
            return start
        s = self.mapping.slots[start:min(nr, start + FILEMAP_BATCH)]
        kind = ("h" if (s == HOLE).all() else
                "s" if (s == SHADOW).all() else "x")
        self.snaps.append(_stream_snapshot(sys, kind))
        if len(self.snaps) >= 3:
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
        steals = _batch_steals(memcg, snaps[last - period:last + 1])
        if steals != _batch_steals(memcg, snaps[last - 2 * period:last - period + 1]) or \
                not stream_frames_ok(sys, memcg, self.mapping, steals):
            return 0
        n, state, fired = acc.run(acc.state_of(c.acc), n, self._forbidden(acc, trace))
        if n < 1:
            return 0
        self._apply_counters(acc, c, b, n, state, fired, grow)
        filemap_stream_cycles(sys, self.task, self.mapping, start, n * pages, steals)
        return n * pages

    def _replay_matches(self, acc: _Accumulators, b: _StreamSnap, c: _StreamSnap) -> bool:
        """The replay of the second cycle from its start gives what the slow path did."""
        sys = self.sys
        state, fired = acc.step(acc.state_of(b.acc))
        if state != acc.state_of(c.acc):
            return False
        for mid, cpu in acc.ekeys:
            if c.acc[("e", mid, cpu)][0] - b.acc[("e", mid, cpu)][0] != \
                    acc.events_per_cycle[(mid, cpu)]:
                return False
        history = [(sys.memcgs[acc.vkeys[i]].path, vmpressure.LEVEL_NAMES[lvl])
                   for kind, i, lvl in fired if kind == "v"]
        return sys.pressure_history[b.history:c.history] == history and \
            len(sys.pressure_history) == c.history

    def _forbidden(self, acc: _Accumulators, trace: list) -> set:
        """The checks that could do more than move their own accumulator or signal an
        eventfd nobody waits on."""
        sys = self.sys
        forbidden = set()
        for mid, _ in acc.ekeys:
            m = sys.memcgs[mid]
            if not thresholds_quiet(sys, trace, mid):
                forbidden.add("t")  # mem_cgroup_threshold() could signal
            for x in m.ancestors():
                if x.id in sys.soft_limit_tree or memcontrol_v1.soft_limit_excess(x) or \
                        (not x.is_root() and x.soft_limit < x.memory.max):
                    forbidden.add("s")  # memcg1_update_tree() could re-key
        for mid in acc.vkeys:
            if not pressure_quiet(sys, sys.memcgs[mid]):
                forbidden.add("v")  # a signal would wake a reader, or a shrinker be asked
        return forbidden

    def _apply_counters(self, acc: _Accumulators, c: _StreamSnap, b: _StreamSnap, n: int,
                        state: tuple, fired: list, grow: np.ndarray) -> None:
        """n cycles of counter growth, accumulators and pressure levels."""
        sys = self.sys
        sys.stats.add_table(n * grow)
        i = 0
        lin = [y - x for x, y in zip(b.linear, c.linear)]
        for _, m in sorted(sys.memcgs.items()):
            for counter in _counters(m):
                counter.failcnt += n * lin[i]
                i += 1
            for events in (m.memory_events, m.memory_events_local):
                for j in range(len(events)):
                    events[j] += n * lin[i]
                    i += 1
        for j, mid in enumerate(acc.vkeys):
            v = vmpressure.memcg_to_vmpressure(sys, sys.memcgs[mid])
            v.tree_scanned, v.tree_reclaimed = state[j]
        for j, (mid, cpu) in enumerate(acc.ekeys):
            m = sys.memcgs[mid]
            val = m.nr_page_events[cpu] + n * acc.events_per_cycle[(mid, cpu)]
            dt, ds = state[len(acc.vkeys) + j]
            m.nr_page_events[cpu] = val
            m.thresh_target[cpu] = val - dt
            m.softlimit_target[cpu] = val - ds
        # vmpressure_work_fn() of every window of the n cycles, in order: the level is
        # recorded, no shrinker holds chunks (the debt is forgotten), the listeners from
        # the group up are signalled (pressure_quiet: nobody waits on them)
        for kind, i, lvl in fired:
            if kind != "v":
                continue
            m = sys.memcgs[acc.vkeys[i]]
            sys.pressure_history.append((m.path, vmpressure.LEVEL_NAMES[lvl]))
            mempressure.shrinker_request(sys, m, 0)
            vmpressure.vmpressure_signal(sys, m, lvl)


def stream_pages_ok(sys: System, memcg) -> bool:
    """Every page charged to memcg is a clean, unmapped, not young page of a file on its
    inactive file list: shrink_folio_list() would evict any of them it scans."""
    mem = sys.mem
    lists = memcg.lruvec.lists
    if any(lists[lru].nr for lru in range(len(lists)) if lru != LRU_INACTIVE_FILE):
        return False
    pfns = np.flatnonzero(mem.memcg == memcg.id)
    if len(pfns) != lists[LRU_INACTIVE_FILE].nr:
        return False
    if (mem.lru[pfns] != LRU_INACTIVE_FILE).any() or (mem.flags[pfns] & np.uint8(~PG_referenced & 0xFF)).any():
        return False
    mids = np.unique(mem.mapping[pfns]).tolist()
    return all(sys.mappings.get(mid) is not None and sys.mappings[mid].kind == "file"
               for mid in mids)


def _batch_steals(memcg: MemCgroup, snaps: list) -> tuple:
    """The pages each batch between consecutive snapshots reclaimed from memcg (PGSTEAL)."""
    return tuple(int(y.stats[memcg.id, PGSTEAL] - x.stats[memcg.id, PGSTEAL])
                 for x, y in zip(snaps, snaps[1:]))


def _stack_depth(steals: tuple, unit: int = FILEMAP_BATCH) -> int:
    """How deep into the free stack a cycle reaches: each step takes `unit` frames from
    its top (mm/filemap.c: __page_cache_alloc / filemap_alloc_folio, before the charge)
    and its reclaim then gives back `steal` (mm/vmscan.c: shrink_folio_list ->
    free_unref_folios)."""
    need, net = 0, 0
    for steal in steals:
        need = max(need, unit - net)
        net += steal - unit
    return need


def stream_frames_ok(sys: System, memcg: MemCgroup, mapping: AddressSpace, steals: tuple,
                     unit: int = FILEMAP_BATCH) -> bool:
    """Whether filemap_stream_cycles() can give each page the frame the batch-by-batch
    path gives it, from the pages each step (a read batch, or a folio: `unit` pages) of a
    cycle reclaims:
    - the cycle evicts what it adds, and no step reclaims pages not yet on the list;
    - the group's inactive file list has no stale entries: one isolation of many pages
      leaves it as the reclaim's isolations of SWAP_CLUSTER_MAX pages do;
    - along the list, oldest first, the pages' address spaces never go down and end at
      the read's: reclaim_pages() frees the pages of one isolation grouped by address
      space in ascending order (__remove_mapping of each), which is then list order;
    - no page there has buffer heads (their freeing is kernel memory, not in the cycle).
    """
    lst = memcg.lruvec.lists[LRU_INACTIVE_FILE]
    if sum(steals) != unit * len(steals) or lst.entries != lst.nr or \
            _stack_depth(steals, unit) > sys.mem.nr_free:
        return False
    freed = 0
    for b, steal in enumerate(steals):
        freed += steal
        if steal < 0 or freed > lst.nr + b * unit:
            return False
    mids = sys.mem.mapping[lst.pages(sys.mem)]
    if len(mids) and (mids[-1] > mapping.id or (np.diff(mids) < 0).any()):
        return False
    return not any(sys.mappings[mid].buffers.any() for mid in np.unique(mids).tolist())


def _replay_frames(old: np.ndarray, stack: np.ndarray, n: int, steals: tuple,
                   unit: int) -> tuple[int, np.ndarray, list, int]:
    """stream_frames() step by step: (first_k, the frames of pages start + first_k .. in
    order, the free stack's top at the end bottom to top, pages of the stream evicted)."""
    # The list, oldest first: the old pages, then each step's frames as they are added.
    # queue[i] is entry head + i; entries more than `keep` before the list's tail are
    # dropped: every frame left on the stack at the end was pushed in the last cycle
    # (each cycle pops down to its deepest point, taking every frame above it), so the
    # last page any frame held is among the kept entries.
    period = len(steals)
    keep = 2 * unit * period + unit
    queue = old.tolist()
    stack = stack.tolist()
    head = freed = 0
    for b in range(n // unit):
        got = stack[-unit:]
        del stack[-unit:]
        got.reverse()  # popped top first
        steal = steals[b % period]
        stack.extend(queue[freed - head:freed - head + steal])
        freed += steal
        queue.extend(got)
        if freed - head > keep + len(queue) // 2:
            del queue[:freed - head - keep]
            head = freed - keep
    nr_old = len(old)
    gone = freed - nr_old  # pages of the stream evicted again within the n
    # entries from the kept ones on that are pages of the stream: page start + k in frame
    first_k = max(head, nr_old) - nr_old
    ins = np.array(queue[first_k + nr_old - head:], np.int32)  # pages start + first_k ..
    return first_k, ins, stack, gone


def _steady_frames(old: np.ndarray, top: np.ndarray, steps: int, blocks: int,
                   unit: int) -> tuple[int, np.ndarray, np.ndarray]:
    """stream_frames() when every step reclaims exactly its own size (a folio's charge
    reclaims one folio) and the list holds `blocks` whole steps: each step takes the
    frames the step before it freed, so the list's blocks repeat every blocks + 1 steps,
    reversed.  Block i of the list (the old blocks, then one per step) is block i - blocks
    - 1 reversed, and block -1 is the free stack's top before the first step."""
    def block(i: int) -> np.ndarray:
        t, r = divmod(i + 1, blocks + 1)
        b = top if r == 0 else old[(r - 1) * unit:r * unit]
        return b[::-1] if t % 2 else b
    first = max(0, steps - blocks - 1)
    ins = np.concatenate([block(blocks + j) for j in range(first, steps)]).astype(np.int32)
    return first * unit, ins, block(steps - 1)


def stream_frames(sys: System, memcg: MemCgroup, start: int, n: int, steals: tuple,
                  unit: int = FILEMAP_BATCH) -> tuple[np.ndarray, int]:
    """The frames of n pages streamed through memcg's inactive file list, as the steps
    would leave them: each step of `unit` pages (a read batch, a folio) takes the frames at
    the top of the free stack (mm/filemap.c: __page_cache_alloc / filemap_alloc_folio,
    before the charge); its charge's reclaim isolates the oldest pages of the list, leaves
    shadow entries and frees their frames onto the stack in list order (mm/vmscan.c:
    shrink_folio_list -> __remove_mapping, mm/workingset.c); then the step's pages go to
    the head of the list in the order of their frames, one list chunk per step
    (folio_add_lru).  steals: the pages each step of one cycle reclaims, in order
    (stream_frames_ok holds).  A freed frame keeps the index and LRU stamp of the last page
    it held.  The pages are start .. start + n of the reader's mapping.

    Returns (the frames of the pages still cached, pages start + gone .. start + n, in
    order; gone, how many of the first pages were evicted again).  The caller fills the
    mapping's slots and the pages' flags, mapping and group.
    """
    mem = sys.mem
    lst = memcg.lruvec.lists[LRU_INACTIVE_FILE]
    stack = mem.alloc(_stack_depth(steals, unit))[::-1]  # bottom to top
    nr_lru = lst.nr
    old = lst.isolate(mem, min(n, nr_lru))
    mids = mem.mapping[old]
    index = mem.index[old].astype(np.int64)
    for mid in np.unique(mids).tolist():
        evicted = sys.mappings[mid]
        idx = index[mids == mid]
        evicted.slots[idx] = SHADOW
        if evicted.ra_marks:
            evicted.ra_marks.difference_update(idx.tolist())
    nr_old = len(old)
    if set(steals) == {unit} and nr_lru % unit == 0:
        first_k, ins, stack = _steady_frames(old, np.asarray(stack, np.int32), n // unit,
                                             nr_lru // unit, unit)
        gone = n - nr_old
    else:
        first_k, ins, stack, gone = _replay_frames(old, stack, n, steals, unit)
    base = mem.next_seq(0)
    frames, first = np.unique(ins[::-1], return_index=True)
    k = first_k + len(ins) - 1 - first  # the last page each frame held
    mem.index[frames] = start + k
    mem.seq[frames] = ((k + base) & 0xFFFFFFFF).astype(np.uint32)
    mem.free(np.asarray(stack, np.int32))
    # The steps' list entries: each step's pages were added as one chunk, stamped in
    # turn; the first step still on the list has lost its oldest pages to reclaim.
    b = gone // unit
    assert b * unit >= first_k, "the first step still on the list was not kept"
    mem.next_seq(b * unit)
    for j in range(b, n // unit):
        lst.add(mem, ins[j * unit - first_k:(j + 1) * unit - first_k])
        if j == b and gone > b * unit:
            lst.isolate(mem, gone - b * unit)
    return ins[gone - first_k:], gone


def filemap_stream_cycles(sys: System, task: Task, mapping: AddressSpace, start: int,
                          n: int, steals: tuple) -> None:
    """The page side of n streamed pages (StreamReclaim) from start, frame by frame as
    the read batches would leave it (stream_frames): the oldest pages of the group's
    inactive file list are evicted (shadow entries left), pages [start, start + n) are
    inserted at the head of the list, referenced, in file order; those of them that the
    evictions reach are evicted in turn.  steals: the pages each batch of one cycle
    reclaims.

    Counters and statistics are the caller's: it adds the growth of the cycles it skips.
    """
    mem = sys.mem
    live, gone = stream_frames(sys, task.memcg, start, n, steals)
    mapping.slots[start:start + gone] = SHADOW
    mapping.slots[start + gone:start + n] = live
    mem.flags[live] = PG_referenced
    mem.mapping[live] = mapping.id
    mem.memcg[live] = task.memcg.id
