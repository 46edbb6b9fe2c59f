"""Shmem faults through a full group into swap, many FILEMAP_BATCH steps at once
(mm/shmem.c shmem_fault, mm/memcontrol.c try_charge_memcg, mm/vmscan.c).

shmem_fault() takes an object's pages in steps of FILEMAP_BATCH: allocate the frames,
charge them one page at a time (charge_pages), put them on the LRU and commit them, and
under 6.18 charge the radix_tree_node of i_pages that the new entries need
(shmem_xa_grow).  With the group at its limit, each step's charges reclaim episodes of
the list's oldest pages into swap (fastpath.swapout.charge_swap_episodes), and every
seventh or so node charge needs a page, which reclaims an episode of its own.

While nothing can look between the steps, a span of many steps is taken at once
(take_span): their one-page charges and episodes are planned in plain integers, step
after step, with the planning swapout uses; the episodes' pages, the oldest of the list
episode after episode, are isolated and sent to swap in one go; the frames of the steps
are the ones the free stack would have given each of them in turn (its pops and pushes
replayed on the pushed arrays); the new pages go on the list in one add, with the LRU
stamps the steps' adds would have; and the counters, events, ratelimit targets and
pressure windows move as the steps would have moved them.  Nothing may look between
steps: no usage threshold or soft limit (the uncharges and charges of the span are
applied as totals), no reader of a pressure level or memory.events that could run, no
user-space shrinker, no memory.high (v1 only), free memory above the watermarks, room
for all the charges at every level but the group's own, and no swap or memsw limit near.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ... import sched
from .. import vmpressure, vmscan
from ..filemap import FILEMAP_BATCH, HOLE, ShmemObject, xa_nr_nodes
from ..memcontrol import (MEMCG_CHARGE_BATCH, MEMCG_MAX, NR_FILE_MAPPED, NR_FILE_PAGES,
                          NR_LRU_BASE, NR_SHMEM, OBJCG_POINTER_SIZE,
                          PGFAULT, PGPGIN, PGPGOUT, PGSCAN, PGSTEAL, SOFTLIMIT_EVENTS_TARGET,
                          THRESHOLDS_EVENTS_TARGET, mem_cgroup_get_nr_swap_pages)
from ..mmzone import (LRU_INACTIVE_ANON, LRU_LAZY_CHUNK, PG_dirty, PG_mapped, PG_mlocked,
                      PG_swapbacked, PG_young)
from ..page_counter import PAGE_COUNTER_MAX
from ..slab import SlabObject, _slabs_for, cache_vmstat_idx
from . import swapout

if TYPE_CHECKING:
    from ...system import System
    from ...tasks import Task

# The most steps in one span: bounds the pages looked at ahead (the list's oldest) and
# the span's temporary arrays.
SPAN_STEPS_MAX = 256
PAGE_SIZE = 4096
# The flags of a freshly faulted shmem page (shmem_fault: written through the mapping)
_FAULT_FLAGS = PG_swapbacked | PG_mapped | PG_young
# What an evictable page of an episode must show (swapout._pages_evictable)
_EVICT_MASK = PG_swapbacked | PG_dirty | PG_mlocked | PG_young


def take_span(sys: System, task: Task, obj: ShmemObject, start: int, nr: int) -> int:
    """Fault in a span of obj's next steps from index start at once; the pages taken
    (0: none, nothing done)."""
    plan = _plan_span(sys, task, obj, start, nr)
    if plan is None:
        return 0
    _apply_span(sys, task, obj, start, plan)
    return plan.steps * FILEMAP_BATCH


class _Span:
    """What the planned steps do, in integers."""

    __slots__ = ("steps", "evicted", "ops", "charged", "failcnt", "episodes", "usage",
                 "last_total", "events", "windows", "pressure", "kmem", "slab_pages",
                 "nodes", "xa_extent", "ostock_bytes", "hits", "mapping", "peek")


def _charge_context_ok(sys: System, task: Task, memcg) -> bool:
    """Nothing can look between the steps' charges (as _plan_charge_episodes requires of
    one run of them), and the task is not to be stopped between faults."""
    if (task.oom_victim or sys.reclaim_trace is not None or sys.cgroup_dfl
            or sys.clock.in_resched or sys.dying or task.memcg_high_penalty
            or task.memcg_nr_pages_over_high):
        return False
    stock = sys.stock[task.cpu]
    if any(c is memcg and n for c, n in zip(stock.cached, stock.nr_pages)):
        return False  # consume_stock() would take pages
    for m in memcg.ancestors():
        if m.thresholds or m.memsw_thresholds or m.id in sys.soft_limit_tree \
                or m.soft_limit != PAGE_COUNTER_MAX:
            return False
    if sched.user_work_due(sys.clock) or sys.user_shrinkers:
        return False
    for m in memcg.ancestors():
        vmpr = sys._vmpressure.get(m.id)
        if vmpr is not None and any(ev.efd.has_watchers() for ev in vmpr.events):
            return False
    for name in ("memory.events", "memory.events.local"):
        if sys.file_watchers.get((memcg.id, name)):
            return False
    return True


def _plan_span(sys: System, task: Task, obj: ShmemObject, start: int, nr: int):
    """The span of steps from index start that can be taken at once (at least two), or
    None."""
    k_max = min((nr - start) // FILEMAP_BATCH, SPAN_STEPS_MAX)
    if k_max < 2:
        return None
    memcg = task.memcg
    mm = task.mm
    extent0 = obj.mappers.get(mm, 0)
    if extent0 > start or not _charge_context_ok(sys, task, memcg):
        return None
    setup = swapout._episode_setup(sys, memcg)
    if setup is None:
        return None
    counter = memcg.memory
    limit = counter.max
    usage = counter.usage
    if not 0 <= limit - usage < MEMCG_CHARGE_BATCH:
        return None  # not at the limit: charge_pages() charges whole batches
    # every level but the group has room for all the charges and a batch: only the
    # group's memory counter fails (the memsw counter keeps each swapped page's charge);
    # the ancestors' memory usage rises by less than a batch over the span
    room = k_max * (FILEMAP_BATCH + 1) + MEMCG_CHARGE_BATCH
    if any(c.max - c.usage < room for c in memcg.memsw.ancestors()):
        return None
    if any(c.max - c.usage < 2 * MEMCG_CHARGE_BATCH for c in counter.ancestors()
           if c is not counter):
        return None
    # every step faults all its pages in: none cached or in swap yet
    ahead = obj.slots[start:start + k_max * FILEMAP_BATCH]
    other = np.flatnonzero(ahead != HOLE)
    if len(other):
        k_max = min(k_max, int(other[0]) // FILEMAP_BATCH)
        if k_max < 2:
            return None
    kmem = sys.semantics != "3.8"
    if kmem:
        objcg = memcg.objcg
        ostock = sys.obj_stock[task.cpu]
        if (not sys.kmem_key.enabled or sys.active_memcg is not None or objcg is None
                or ostock.cached_objcg is not objcg):
            return None
        cache = sys.slab.caches["radix_tree_node"]
        node_size = cache.object_size + OBJCG_POINTER_SIZE  # obj_full_size()
    lst = memcg.lruvec.lists[LRU_INACTIVE_ANON]
    size0 = lst.nr
    # The episodes' pages: the list's oldest, each clean, swap-backed, not young, of
    # order 0 and of one shmem object (swapout._pages_evictable); the steps stop before
    # an episode that would reach past them.
    look = min(size0, k_max * (FILEMAP_BATCH + 1) + MEMCG_CHARGE_BATCH)
    if not look:
        return None
    peek = swapout._peek(lst, look)
    mem = sys.mem
    mapping_id = int(mem.mapping[peek[0]])
    mapping = sys.mappings.get(mapping_id)
    if not isinstance(mapping, ShmemObject):
        return None
    bad = ((mem.flags[peek] & _EVICT_MASK) != PG_swapbacked) | (mem.mapping[peek] != mapping_id)
    if mem.large:
        bad |= mem.order[peek] != 0
    if mapping is obj:
        # their offsets are mapped by this task already (shmem_rss counts them all)
        bad |= mem.index[peek] >= extent0
    first_bad = np.flatnonzero(bad)
    reach = int(first_bad[0]) if len(first_bad) else look

    swap_free = mem_cgroup_get_nr_swap_pages(sys, memcg)
    wmark_low = sys.wmark_low
    nr_free = mem.nr_free
    nr_to_reclaim = vmscan.SWAP_CLUSTER_MAX  # try_to_free_mem_cgroup_pages(1 page)
    plans: dict = {}

    def episode(size: int, evicted: int):
        """The episode a one-page charge at the limit reclaims (its plan, as
        _plan_charge_episodes checks it), or None when the span must stop."""
        p = plans.get(size)
        if p is None:
            plan = swapout._plan_passes(memcg, setup, size, nr_to_reclaim)
            if plan is None:
                return None
            passes, total = plan
            batches = tuple(b for _, prio_batches in passes for b in prio_batches)
            windows = tuple((prio, sum(prio_batches)) for prio, prio_batches in passes)
            deep = any(prio <= vmpressure.vmpressure_level_critical_prio for prio, _ in passes)
            p = plans[size] = (total, batches, windows, deep)
        total = p[0]
        if (not total or total >= limit or total >= swap_free - evicted
                or total - 1 >= MEMCG_CHARGE_BATCH or evicted + total > reach):
            return None
        return p

    # Per CPU [nr_page_events, thresh_target, softlimit_target]: the event ratelimit
    events = {}

    def ev(cpu: int):
        e = events.get(cpu)
        if e is None:
            e = events[cpu] = [memcg.nr_page_events[cpu], memcg.thresh_target[cpu],
                               memcg.softlimit_target[cpu]]
        return e

    vmpr = sys._vmpressure.get(memcg.id)
    press = [vmpr.tree_scanned, vmpr.tree_reclaimed] if vmpr is not None else [0, 0]

    # The state after the steps accepted so far, and the state during the step being
    # planned (committed to the former when the step completes).
    size = size0
    evicted = 0
    charged = failcnt = n_ep = 0
    last_total = 0
    ops: list = []  # per step: its eviction pushes, in order
    windows: list = []  # (scanned, reclaimed) of each pressure window that fires
    kmem_pages = 0
    slab_pages: list = []  # the slab allocations' page counts, in order
    nodes: list = []  # per node allocation: (count, bytes charged)
    xa_extent = obj.xa_extent
    ostock_bytes = ostock.nr_bytes if kmem else 0
    hits = 0
    nr_objects = cache.nr_objects if kmem else 0
    nr_pfns = cache.nr_pfns if kmem else 0
    # the uncharges run inside the task's charges (alloc_and_charge, shmem_xa_grow make
    # it current): their events count on its CPU, as its commits do
    cpu_ev = cpu_commit = task.cpu
    steps = 0
    for i in range(k_max):
        # --- one step, on copies of the state --------------------------------------
        s_usage, s_size, s_evicted = usage, size, evicted
        s_charged, s_failcnt, s_n_ep, s_last = charged, failcnt, n_ep, last_total
        s_nr_free = nr_free
        e_ev = list(ev(cpu_ev))
        e_commit = list(ev(cpu_commit)) if cpu_commit != cpu_ev else e_ev
        s_press = list(press)
        s_windows: list = []
        step_ops: list = []
        s_kmem, s_slab, s_node = 0, 0, None
        s_xa, s_ostock, s_hits, s_nobj, s_npfns = xa_extent, ostock_bytes, hits, nr_objects, nr_pfns
        # alloc_pages(): no kswapd work for this allocation
        if s_nr_free - FILEMAP_BATCH < wmark_low:
            break
        s_nr_free -= FILEMAP_BATCH

        def one_page_charges(n: int):
            """n one-page charges at or near the limit; their episodes' pushes (None
            when the span must stop)."""
            nonlocal s_usage, s_size, s_evicted, s_charged, s_failcnt, s_n_ep, s_last, s_nr_free
            pushed = 0
            done = 0
            margin = limit - s_usage
            if margin:
                k = min(margin, n)  # _charge_singles(): each batch attempt fails here
                s_failcnt += k
                s_usage += k
                s_charged += k
                done = k
            while done < n:
                p = episode(s_size, s_evicted)
                if p is None:
                    return None
                total, batches, wins, deep = p
                s_n_ep += 1
                s_last = total
                s_evicted += total
                s_size -= total
                s_nr_free += total
                pushed += total
                s_usage -= total  # the episode's uncharges, batch by batch
                for b in batches:
                    _event(e_ev, b)
                _pressure(s_press, s_windows, wins, deep)
                c = min(total, n - done)
                # the page fails twice (batch and single) and reclaims; the rest of
                # the episode's margin is one-page charges failing their batch once
                s_failcnt += 1 + c
                s_usage += c
                s_charged += c
                done += c
            return pushed

        pushed = one_page_charges(FILEMAP_BATCH)
        if pushed is None:
            break
        step_ops.append(pushed)
        # folio_add_lru(): on the list, committed (one commit of the step's pages)
        s_size += FILEMAP_BATCH
        _event(e_commit, FILEMAP_BATCH)
        extent = start + (i + 1) * FILEMAP_BATCH
        if kmem and extent > s_xa:
            need = xa_nr_nodes(extent) - xa_nr_nodes(s_xa)
            s_xa = extent
            if need > 0:
                # kmem_cache_alloc(): the slab first (allocate_slab), then the charge
                s_hits += 1
                slab_need = _slabs_for(cache, s_nobj + need) * cache.pages_per_slab - s_npfns
                if slab_need > 0:
                    if s_nr_free - slab_need < wmark_low:
                        break
                    s_nr_free -= slab_need
                    s_npfns += slab_need
                    s_slab = slab_need
                s_nobj += need
                nbytes = need * node_size
                if s_ostock >= nbytes:
                    s_ostock -= nbytes  # consume_obj_stock()
                else:
                    if nbytes > PAGE_SIZE:
                        break  # more than a page at once: the slow path
                    # obj_cgroup_charge_pages(): one page through try_charge_memcg(),
                    # the rest of it parked in the object stock
                    pushed = one_page_charges(1)
                    if pushed is None:
                        break
                    step_ops.append(pushed)
                    s_kmem = 1
                    if nbytes & (PAGE_SIZE - 1):
                        s_ostock += PAGE_SIZE - (nbytes & (PAGE_SIZE - 1))
                s_node = (need, nbytes)
        # --- the step is taken -------------------------------------------------------
        usage, size, evicted = s_usage, s_size, s_evicted
        charged, failcnt, n_ep, last_total = s_charged, s_failcnt, s_n_ep, s_last
        nr_free = s_nr_free
        events[cpu_ev] = e_ev
        events[cpu_commit] = e_commit
        press = s_press
        windows.extend(s_windows)
        ops.append(step_ops)
        kmem_pages += s_kmem
        if s_slab:
            slab_pages.append(s_slab)
        if s_node is not None:
            nodes.append(s_node)
        xa_extent, ostock_bytes, hits, nr_objects, nr_pfns = s_xa, s_ostock, s_hits, s_nobj, s_npfns
        steps += 1
    if steps < 2:
        return None
    plan = _Span()
    plan.steps = steps
    plan.evicted = evicted
    plan.ops = ops
    plan.charged = charged
    plan.failcnt = failcnt
    plan.episodes = n_ep
    plan.usage = usage
    plan.last_total = last_total
    plan.events = events
    plan.windows = windows
    plan.pressure = press
    plan.kmem = kmem_pages
    plan.slab_pages = slab_pages
    plan.nodes = nodes
    plan.xa_extent = xa_extent
    plan.ostock_bytes = ostock_bytes
    plan.hits = hits
    plan.mapping = mapping
    plan.peek = peek
    if not _frames_plan(sys, plan):
        return None
    return plan


def _event(e: list, n: int) -> None:
    """page_events() of n pages on one CPU's [nr_page_events, thresh, soft]: the checks
    at the ratelimit targets find nothing to do (no threshold, no soft limit), so only
    the targets move (mm/memcontrol-v1.c: mem_cgroup_event_ratelimit)."""
    val = e[0] + n
    e[0] = val
    if val - e[1] >= 0:
        e[1] = val + THRESHOLDS_EVENTS_TARGET
        if val - e[2] >= 0:
            e[2] = val + SOFTLIMIT_EVENTS_TARGET


def _pressure(press: list, fired: list, wins, deep: bool) -> None:
    """An episode's vmpressure_prio() and vmpressure() calls on the group's window
    [scanned, reclaimed]; the windows that fill (vmpressure_work_fn) go to fired."""
    win = vmpressure.vmpressure_win
    if not deep:
        total = sum(s for _, s in wins)
        if press[0] + total < win:  # no window fills: one add
            press[0] += total
            press[1] += total
            return
    for prio, scanned in wins:
        if prio <= vmpressure.vmpressure_level_critical_prio:
            _press(press, fired, win, 0)
        if scanned:
            _press(press, fired, scanned, scanned)


def _press(press: list, fired: list, scanned: int, reclaimed: int) -> None:
    press[0] += scanned
    press[1] += reclaimed
    if press[0] >= vmpressure.vmpressure_win:
        fired.append((press[0], press[1]))
        press[0] = press[1] = 0


def _frames_plan(sys: System, plan: _Span) -> bool:
    """The free stack's pops and pushes of the span, replayed: which frames each step
    gets (from the pushed episodes' pages or the stack as it was), and which pushes
    are still on the stack at the end.  False when the replay cannot be applied as
    totals (the span's pops reach the bottom run that the slab's pages come from, or
    the frames never handed out yet)."""
    stack: list = []  # [offset in the evicted pages, length left], bottom to top
    pieces: list = []  # (offset, end) of evicted pages taken (reversed), or (-1, depth a, b)
    depth = 0  # frames taken from the stack as it was
    offset = 0
    for step_ops in plan.ops:
        need = FILEMAP_BATCH  # alloc_pages() of the step, before its charges
        while need:
            if stack:
                seg = stack[-1]
                t = min(need, seg[1])
                seg[1] -= t
                pieces.append((seg[0] + seg[1], seg[0] + seg[1] + t))
                if not seg[1]:
                    stack.pop()
                need -= t
            else:
                pieces.append((-1, depth, depth + need))
                depth += need
                need = 0
        for n in step_ops:  # each eviction frees its pages in one release_pages()
            if n:
                stack.append([offset, n])
                offset += n
    mem = sys.mem
    r = mem.nr_free_runs
    if depth:
        if not r or depth > mem.nr_free:
            return False
        bottom = abs(int(mem._last[0]) - int(mem._first[0])) + 1
        above = mem.nr_free - bottom
        into = depth - above  # frames the pops take from the bottom run
        if into > 0:
            if plan.slab_pages and into + sum(plan.slab_pages) >= bottom:
                return False
            if mem._lru_lo < mem._lru_hi and \
                    mem._lru_hi - mem._lru_lo <= depth + LRU_LAZY_CHUNK + sum(plan.slab_pages):
                return False
    plan.ops = (pieces, stack, depth)
    return True


def _apply_span(sys: System, task: Task, obj: ShmemObject, start: int, plan: _Span) -> None:
    """Take the planned steps: the outcome of shmem_fault()'s steps one by one."""
    mem = sys.mem
    memcg = task.memcg
    stats = sys.stats
    lst = memcg.lruvec.lists[LRU_INACTIVE_ANON]
    n = plan.steps * FILEMAP_BATCH
    end = start + n
    pieces, survivors, depth = plan.ops
    e = plan.evicted
    # The episodes, one after another: the list's oldest pages to swap
    victims = lst.isolate(mem, e)
    stats.mod(memcg.id, NR_LRU_BASE + LRU_INACTIVE_ANON, -e)
    stats.mod(memcg.id, PGSCAN, e)
    stats.mod(memcg.id, PGSTEAL, e)
    out = plan.mapping.swap_out(sys, victims)
    assert len(out) == e
    # release_pages() of each eviction: uncharged (the counters below), frames freed
    stats.mod(memcg.id, PGPGOUT, e)
    mem._clear(victims)
    # The steps' frames, from the pushes and the stack as it was, in pop order
    base = mem.alloc(depth) if depth else None
    parts = []
    for piece in pieces:
        if piece[0] < 0:
            parts.append(base[piece[1]:piece[2]])
        else:
            parts.append(victims[piece[0]:piece[1]][::-1])
    pfns = np.concatenate(parts).astype(np.int32, copy=False)
    for off, length in survivors:  # the pushes still on the stack, bottom to top
        mem._push(victims[off:off + length])
        mem.nr_free += length
    # the slab pages, from the far end of the free stack (alloc_kernel_pages)
    if plan.slab_pages:
        cache = sys.slab.caches["radix_tree_node"]
        for k in plan.slab_pages:
            sys.kernel_pages["Slab"] += k
            got = mem.alloc_unmovable(k)
            nf = cache.nr_pfns
            if nf + k > len(cache.pfns):
                grown = np.empty(max(nf + k, 2 * len(cache.pfns)), np.int32)
                grown[:nf] = cache.pfns[:nf]
                cache.pfns = grown
            cache.pfns[nf:nf + k] = got
            cache.nr_pfns = nf + k
    # folio_add_lru() of every step: set up, on the list in step order, committed
    idx = np.arange(start, end, dtype=np.int64)
    mem.flags[pfns] = _FAULT_FLAGS
    mem.mapping[pfns] = obj.id
    mem.index[pfns] = idx
    mem.memcg[pfns] = memcg.id
    lst.add(mem, pfns)
    obj.slots[start:end] = pfns
    for item in (NR_LRU_BASE + LRU_INACTIVE_ANON, NR_FILE_PAGES, NR_SHMEM, NR_FILE_MAPPED,
                 PGFAULT, PGPGIN):
        stats.mod(memcg.id, item, n)
    # The counters: memory went up to the limit and ends at the planned usage; every
    # charge's batch attempt passed memsw, the last one reaching highest
    counter = memcg.memory
    rise = counter.max - counter.usage
    if rise:
        counter.charge(rise)
    counter.uncharge(counter.max - plan.usage)
    counter.failcnt += plan.failcnt if counter.track_failcnt else 0
    c = plan.charged
    memcg.memsw.charge(c - 1 + MEMCG_CHARGE_BATCH)
    memcg.memsw.uncharge(MEMCG_CHARGE_BATCH - 1)
    memcg.memory_events_local[MEMCG_MAX] += plan.episodes
    memcg.memory_events[MEMCG_MAX] += plan.episodes
    memcg.reclaim_iter = memcg if plan.last_total >= vmscan.SWAP_CLUSTER_MAX else None
    for cpu, (val, thresh, soft) in plan.events.items():
        memcg.nr_page_events[cpu] = val
        memcg.thresh_target[cpu] = thresh
        memcg.softlimit_target[cpu] = soft
    if plan.episodes:
        vmpr = vmpressure.memcg_to_vmpressure(sys, memcg)
        for scanned, reclaimed in plan.windows:
            vmpr.tree_scanned, vmpr.tree_reclaimed = scanned, reclaimed
            vmpressure.vmpressure_work_fn(sys, memcg)
        vmpr.tree_scanned, vmpr.tree_reclaimed = plan.pressure
    # shmem_xa_grow() of every step: the nodes, charged to the object cgroup
    if plan.nodes or plan.hits:
        objcg = memcg.objcg
        cache = sys.slab.caches["radix_tree_node"]
        sys.kmem_key.hits += plan.hits
        if plan.kmem:
            memcg.kmem.charge(plan.kmem)
            objcg.nr_pages += plan.kmem
        sys.obj_stock[task.cpu].nr_bytes = plan.ostock_bytes
        item = cache_vmstat_idx(cache.name)
        for count, nbytes in plan.nodes:
            cache.nr_objects += count
            objcg.nr_live_bytes += nbytes
            stats.mod(memcg.id, item, nbytes)
            obj.xa_nodes.append(SlabObject(cache, count, objcg, nbytes))
    if sys.semantics != "3.8":
        obj.xa_extent = plan.xa_extent
    # finish_fault(): the task maps the steps' pages
    task.mm.shmem_rss += n
    obj.mappers[task.mm] = end
