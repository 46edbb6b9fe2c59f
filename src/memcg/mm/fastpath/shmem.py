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
pressure windows move as the steps would have moved them.  Steps with room take
whole charge batches and the per-CPU stock as charge_pages() does, so a span also
fills a group up to its limit.  When the list's oldest pages are freshly faulted ones
(young), the first episode of a span keeps them all and evicts what it meets again
(_plan_rotation), as each trip of reclaim around such a list does.  Nothing may look
between steps: no usage threshold or soft limit (the uncharges and charges of the span are
applied as totals), no reader of a pressure level or memory.events that could run, no
user-space shrinker, no memory.high (v1 only), free memory above the watermarks, room
for all the charges at every level but the group's own, and no swap or memsw limit near.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ...kernel import PAGE_SIZE
from .. import vmpressure, vmscan
from ..filemap import FILEMAP_BATCH, HOLE, ShmemObject, xa_nr_nodes
from ..memcontrol import (MEMCG_CHARGE_BATCH, MEMCG_MAX, NR_FILE_MAPPED, NR_FILE_PAGES,
                          NR_LRU_BASE, NR_SHMEM, OBJCG_POINTER_SIZE,
                          PGFAULT, PGPGIN, PGPGOUT, SOFTLIMIT_EVENTS_TARGET,
                          THRESHOLDS_EVENTS_TARGET, mem_cgroup_get_nr_swap_pages)
from ..mmzone import (LRU_INACTIVE_ANON, LRU_LAZY_CHUNK, PG_dirty, PG_mapped, PG_mlocked,
                      PG_referenced, PG_swapbacked, PG_young)
from ..slab import SlabObject, cache_vmstat_idx
from . import swapout

if TYPE_CHECKING:
    from ...system import System
    from ...tasks import Task

# The most steps in one span: bounds the pages looked at ahead (the list's oldest) and
# the span's temporary arrays.
SPAN_STEPS_MAX = 256
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

    __slots__ = ("steps", "evicted", "ops", "usage", "usage_peak", "memsw", "memsw_peak",
                 "failcnt", "episodes", "last_total", "stock", "events", "windows",
                 "pressure", "kmem", "slab_pages", "nodes", "xa_extent", "ostock_bytes",
                 "hits", "mapping", "rotated")


def _charge_context_ok(sys: System, task: Task, memcg) -> bool:
    """Nothing can look between the steps' charges (swapout.charges_unobserved), and
    the task is not to be stopped between faults."""
    if (memcg.is_root() or memcg.under_oom or sys.reclaim_trace is not None
            or sys.cgroup_dfl):
        return False
    return swapout.charges_unobserved(sys, memcg, task)


# The episodes planned, by the group's reclaim setup and then by list size:
# (pages, reclaim batches, (priority, pages) per pass, a pass at or below the critical
# priority) - a group swapping through its limit meets the same list sizes again.
_episodes: dict = {}
_EPISODES_KEPT = 4096


def _episode_plans(memcg, setup) -> dict:
    """The episodes planned for memcg's reclaim setup (swapout._episode_setup), by size."""
    key = (setup[0], setup[1], tuple(setup[2]), memcg.swappiness, memcg.online)
    plans = _episodes.get(key)
    if plans is None or len(plans) >= _EPISODES_KEPT:
        if len(_episodes) >= 64:
            _episodes.clear()
        plans = _episodes[key] = {}
    return plans


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
    counter = memcg.memory
    limit = counter.max
    usage0 = counter.usage
    margin0 = limit - usage0
    if margin0 < 0:
        return None
    # Every level but the group keeps room for a batch more than the group has, and
    # memsw for all the charges and a batch: only the group's memory counter fails (the
    # memsw counter keeps each swapped page's charge); the ancestors' memory usage
    # rises as the group's does.  A step charges at most two batches (its pages, a
    # node's page with room).
    memsw_room, upper_room = swapout.level_rooms(memcg)
    k_max = min(k_max, (memsw_room - MEMCG_CHARGE_BATCH) // (2 * FILEMAP_BATCH))
    if k_max < 2 or upper_room < margin0 + 2 * MEMCG_CHARGE_BATCH:
        return None
    # every step faults all its pages in: none cached or in swap yet
    ahead = obj.slots[start:start + k_max * FILEMAP_BATCH]
    other = np.flatnonzero(ahead != HOLE)
    if len(other):
        k_max = min(k_max, int(other[0]) // FILEMAP_BATCH)
        if k_max < 2:
            return None
    cpu = task.cpu
    kmem = sys.semantics != "3.8"
    if kmem:
        objcg = memcg.objcg
        ostock = sys.obj_stock[cpu]
        if (not sys.kmem_key.enabled or sys.active_memcg is not None or objcg is None
                or ostock.cached_objcg is not objcg):
            return None
        cache = sys.slab.caches["radix_tree_node"]
        node_size = cache.object_size + OBJCG_POINTER_SIZE  # obj_full_size()
        objs_per_slab, pages_per_slab = cache.objs_per_slab, cache.pages_per_slab
    stock = sys.stock[cpu]
    st_idx = next((i for i, c in enumerate(stock.cached) if c is memcg), None)
    st_pages = stock.nr_pages[st_idx] if st_idx is not None else 0
    st_empty = next((i for i, c in enumerate(stock.cached) if c is None), None)

    lst = memcg.lruvec.lists[LRU_INACTIVE_ANON]
    mem = sys.mem
    # The episodes' pages: the list's oldest, each clean, swap-backed, not young, of
    # order 0 and of one shmem object (swapout._pages_evictable); the steps stop before
    # an episode that would reach past them.
    reach = 0
    mapping = None
    rotation = None  # the plan of the episode that keeps the young rest of the list
    rotatable = False
    setup = swapout._episode_setup(sys, memcg) if lst.nr else None
    if setup is not None:
        look = min(lst.nr, k_max * (FILEMAP_BATCH + 1) + MEMCG_CHARGE_BATCH)
        while True:
            peek = swapout._peek(lst, look)
            mapping_id = int(mem.mapping[peek[0]])
            mapping = sys.mappings.get(mapping_id)
            if isinstance(mapping, ShmemObject):
                flags = mem.flags[peek]
                bad = (mem.mapping[peek] != mapping_id)
                if mem.large:
                    bad |= mem.order[peek] != 0
                if mapping is obj:
                    # their offsets are mapped by this task already (shmem_rss counts them)
                    bad |= mem.index[peek] >= extent0
                young = (flags & _EVICT_MASK) != PG_swapbacked
                first_bad = np.flatnonzero(bad | young)
                reach = int(first_bad[0]) if len(first_bad) else look
                if reach < look and look == lst.nr and margin0 < FILEMAP_BATCH:
                    # The list's pages from `reach` on are freshly faulted (young ptes, no
                    # referenced flag): an episode of the first step that meets them keeps
                    # them all (FOLIOREF_KEEP, one more trip around the list) and evicts
                    # what it meets again (_plan_rotation).
                    rest = flags[reach:]
                    rotatable = not bad[reach:].any() and \
                        ((rest & (_EVICT_MASK | PG_referenced)) == _FAULT_FLAGS & _EVICT_MASK).all()
            if reach < look < lst.nr and margin0 < FILEMAP_BATCH and \
                    isinstance(mapping, ShmemObject):
                # a short span that meets pages it cannot evict: if they are the
                # young rest of the list, its first step turns them around too
                look = lst.nr
                continue
            break
        plans = _episode_plans(memcg, setup)

    swap_free = mem_cgroup_get_nr_swap_pages(sys, memcg)
    wmark_low = sys.wmark_low
    nr_to_reclaim = vmscan.SWAP_CLUSTER_MAX  # try_to_free_mem_cgroup_pages(1 page)
    win = vmpressure.vmpressure_win
    crit = vmpressure.vmpressure_level_critical_prio

    # The state after the steps planned so far, in locals: a step that cannot be taken
    # puts back what it changed (saved at its start).
    vmpr = sys._vmpressure.get(memcg.id)
    usage, peak, memsw, memsw_peak = usage0, usage0, 0, 0
    size, evicted, failcnt, n_ep, last = lst.nr, 0, 0, 0, 0
    nr_free = mem.nr_free
    ev_val, ev_thresh, ev_soft = (memcg.nr_page_events[cpu], memcg.thresh_target[cpu],
                                  memcg.softlimit_target[cpu])
    scanned_w, reclaimed_w = (vmpr.tree_scanned, vmpr.tree_reclaimed) if vmpr is not None \
        else (0, 0)
    xa = obj.xa_extent
    xa_nodes = xa_nr_nodes(xa)
    ostock_bytes = ostock.nr_bytes if kmem else 0
    hits = kmem_pages = 0
    nobj = cache.nr_objects if kmem else 0
    npfns = cache.nr_pfns if kmem else 0
    ops: list = []  # per step: its evictions' pushes, in order
    windows: list = []  # (scanned, reclaimed) of each pressure window that fires
    slab_pages: list = []  # the slab allocations' page counts, in order
    nodes: list = []  # per node allocation: (count, bytes charged)
    steps = 0
    batch = MEMCG_CHARGE_BATCH
    for i in range(k_max):
        saved = (usage, peak, memsw, memsw_peak, size, evicted, failcnt, n_ep, last, nr_free,
                 st_idx, st_pages, ev_val, ev_thresh, ev_soft, scanned_w, reclaimed_w, xa,
                 xa_nodes, ostock_bytes, hits, kmem_pages, nobj, npfns)
        n_windows = len(windows)
        pushes: list = []
        # alloc_pages(): no kswapd work for this allocation
        if nr_free - FILEMAP_BATCH < wmark_low:
            break
        nr_free -= FILEMAP_BATCH
        want = FILEMAP_BATCH  # charge_pages() of the step's pages
        node = None
        ok = True
        while True:
            # `want` one-page charges, as charge_pages() takes them (a node's page
            # through try_charge_memcg() is the same single charge)
            done = 0
            while done < want:
                if st_idx is not None:  # consume_stock()
                    t = min(st_pages, want - done)
                    st_pages -= t
                    done += t
                    if done == want:
                        break
                margin = limit - usage
                rest = want - done
                if margin >= batch:  # whole batches, the rest to the stock
                    total = min(margin // batch, -(-rest // batch)) * batch
                    usage += total
                    memsw += total
                    if usage > peak:
                        peak = usage
                    if memsw > memsw_peak:
                        memsw_peak = memsw
                    used = min(total, rest)
                    done += used
                    if total > used:  # refill_stock(): the group's slot or the first empty
                        if st_idx is None:
                            if st_empty is None:
                                ok = False  # a random slot would be evicted
                                break
                            st_idx, st_pages = st_empty, 0
                        st_pages += total - used
                        if st_pages > batch:
                            ok = False  # the slot would be drained
                            break
                    continue
                if margin:  # _charge_singles(): each batch attempt fails at the group
                    k = min(margin, rest)
                    failcnt += k
                    if memsw + k - 1 + batch > memsw_peak:
                        memsw_peak = memsw + k - 1 + batch
                    usage += k
                    memsw += k
                    done += k
                    if usage > peak:
                        peak = usage
                    continue
                # at the limit: each charge that finds no margin reclaims an episode
                # (charge_swap_episodes, or try_charge_memcg -> reclaim_swap_episode)
                if setup is None:
                    ok = False
                    break
                peak = limit
                while done < want:
                    p = plans.get(size)
                    if p is None:
                        plan = swapout._plan_passes(memcg, setup, size, nr_to_reclaim)
                        if plan is None:
                            ok = False
                            break
                        passes, total = plan
                        p = plans[size] = (
                            total, tuple(b for _, bs in passes for b in bs),
                            swapout.pass_windows(passes), any(prio <= crit for prio, _ in passes))
                    total, batches, wins, deep = p
                    if evicted + total > reach and rotatable and not i and node is None \
                            and rotation is None:
                        # the young rest of the list is met: the episode keeps it (an
                        # episode of the step's node charge would meet the step's own
                        # pages too, on the list by then: the slow path takes that one)
                        rotation = _plan_rotation(memcg, setup, size, reach - evicted)
                        if rotation is None:
                            ok = False
                            break
                        total, batches, wins, _ = rotation
                        if not total or total >= limit or total >= swap_free - evicted:
                            ok = False
                            break
                        reach = look
                        deep = True  # its passes scan more than they reclaim
                        pushes.extend(batches)  # each batch's victims freed in its turn
                    elif (not total or total >= limit or total >= swap_free - evicted
                            or evicted + total > reach):
                        ok = False
                        break
                    else:
                        pushes.append(total)
                    n_ep += 1
                    last = total
                    evicted += total
                    size -= total
                    nr_free += total
                    usage -= total  # the episode's uncharges, batch by batch
                    if ev_val + total - ev_thresh < 0:
                        ev_val += total  # no ratelimit target reached
                    else:
                        ev_val, ev_thresh, ev_soft = swapout.batch_events(ev_val, ev_thresh,
                                                                          ev_soft, batches)
                    if not deep and scanned_w + total < win:
                        scanned_w += total  # no pressure window fills
                        reclaimed_w += total
                    else:  # vmpressure_prio() and vmpressure() of each pass
                        scanned_w, reclaimed_w = swapout.fill_windows(windows, scanned_w,
                                                                      reclaimed_w, wins)
                    # the page fails twice (batch and single) and reclaims; the rest of
                    # the episode's margin is one-page charges failing their batch once
                    # (a margin of a batch or more: charge_pages() takes batches again);
                    # each batch attempt passed memsw
                    c = 1 if total - 1 >= batch else min(total, want - done)
                    failcnt += 1 + c
                    if memsw + c - 1 + batch > memsw_peak:
                        memsw_peak = memsw + c - 1 + batch
                    usage += c
                    memsw += c
                    done += c
                    if total - 1 >= batch:
                        break
                if not ok:
                    break
            if not ok or node is not None:
                break
            # folio_add_lru(): on the list, committed (one commit of the step's pages)
            size += FILEMAP_BATCH
            ev_val += FILEMAP_BATCH
            if ev_val - ev_thresh >= 0:
                ev_thresh = ev_val + THRESHOLDS_EVENTS_TARGET
                if ev_val - ev_soft >= 0:
                    ev_soft = ev_val + SOFTLIMIT_EVENTS_TARGET
            extent = start + (i + 1) * FILEMAP_BATCH
            if not kmem or extent <= xa:
                break
            # shmem_xa_grow(): the nodes the new entries need - past the first two
            # chunks, one leaf more for each chunk of 64 entries, and the upper levels
            # change only where a leaf starts a new chunk of theirs
            if xa == extent - FILEMAP_BATCH and extent > 2 * FILEMAP_BATCH and \
                    (extent - FILEMAP_BATCH) % (FILEMAP_BATCH * FILEMAP_BATCH):
                need = 1
            else:
                need = xa_nr_nodes(extent) - xa_nodes
            xa, xa_nodes = extent, xa_nodes + need
            if need <= 0:
                break
            # kmem_cache_alloc(): the slab first (allocate_slab), then the charge
            hits += 1
            slab = -(-(nobj + need) // objs_per_slab) * pages_per_slab - npfns  # _slabs_for()
            if slab > 0:
                if nr_free - slab < wmark_low:
                    ok = False
                    break
                nr_free -= slab
                npfns += slab
            nobj += need
            nbytes = need * node_size
            node = (need, nbytes, slab)
            if ostock_bytes >= nbytes:
                ostock_bytes -= nbytes  # consume_obj_stock()
                break
            if nbytes > PAGE_SIZE:
                ok = False  # more than a page at once: the slow path
                break
            # obj_cgroup_charge_pages(): one page, the rest of it parked in the stock
            kmem_pages += 1
            if nbytes & (PAGE_SIZE - 1):
                ostock_bytes += PAGE_SIZE - (nbytes & (PAGE_SIZE - 1))
            want = 1
        if not ok:
            (usage, peak, memsw, memsw_peak, size, evicted, failcnt, n_ep, last, nr_free,
             st_idx, st_pages, ev_val, ev_thresh, ev_soft, scanned_w, reclaimed_w, xa,
             xa_nodes, ostock_bytes, hits, kmem_pages, nobj, npfns) = saved
            del windows[n_windows:]
            break
        # the step is taken
        ops.append(pushes)
        if node is not None:
            nodes.append(node[:2])
            if node[2] > 0:
                slab_pages.append(node[2])
        steps += 1
    if steps < 2:
        return None
    plan = _Span()
    plan.steps = steps
    plan.evicted = evicted
    plan.ops = ops
    plan.usage = usage - usage0
    plan.usage_peak = peak - usage0
    plan.memsw = memsw
    plan.memsw_peak = memsw_peak
    plan.failcnt = failcnt
    plan.episodes = n_ep
    plan.last_total = last
    plan.stock = (st_idx, st_pages)
    plan.events = (ev_val, ev_thresh, ev_soft)
    plan.windows = windows
    plan.pressure = (scanned_w, reclaimed_w)
    plan.kmem = kmem_pages
    plan.slab_pages = slab_pages
    plan.nodes = nodes
    plan.xa_extent = xa
    plan.ostock_bytes = ostock_bytes
    plan.hits = hits
    plan.rotated = rotation[3] if rotation is not None else 0
    plan.mapping = mapping
    if not _frames_plan(sys, plan):
        return None
    return plan


def _plan_rotation(memcg, setup, size: int, old: int):
    """do_try_to_free_pages() of a limit reclaim over an inactive anon list of `size`
    pages whose `old` oldest are evicted when scanned and whose others are young (kept
    when first scanned, evicted when met again), the list on its own (_episode_setup):
    (pages evicted, the evicting batches' pages in order, the vmpressure calls'
    (scanned, reclaimed) in order, the young pages kept), or None when a shrinker
    would scan.

    mm/vmscan.c: each priority's get_scan_count() sees the list less what was evicted
    (kept pages go back on it), shrink_lruvec() scans it in SWAP_CLUSTER_MAX batches
    until that lruvec reclaimed nr_to_reclaim, the loop ends at the goal or priority 0;
    the batches' pages are the list's in order, each young one put back at the head,
    where the scan meets it again after all the others (folio_check_references).
    """
    file, deactivate_file, counts, = setup
    swappiness, online = memcg.swappiness, memcg.online
    nr_to_reclaim = vmscan.SWAP_CLUSTER_MAX
    pos = 0  # pages scanned so far, in list order (past `size`: the kept ones again)
    total = 0
    batches: list = []
    wins: list = []
    prio = vmscan.DEF_PRIORITY
    while True:
        if counts and swapout.shrinkers_scan(counts, prio):
            return None
        if prio <= vmpressure.vmpressure_level_critical_prio:
            wins.append((vmpressure.vmpressure_win, 0))  # vmpressure_prio()
        scan = swapout.anon_scan_count(size - total, prio, file, deactivate_file, swappiness,
                                       online)
        reclaimed = scanned = 0
        while scan:
            if old <= pos < size and scan >= 2 * vmscan.SWAP_CLUSTER_MAX:
                # whole batches of young pages alone: all kept, nothing reclaimed
                k = min(scan, size - pos) // vmscan.SWAP_CLUSTER_MAX
                if k:
                    pos += k * vmscan.SWAP_CLUSTER_MAX
                    scanned += k * vmscan.SWAP_CLUSTER_MAX
                    scan -= k * vmscan.SWAP_CLUSTER_MAX
                    continue
            b = min(scan, vmscan.SWAP_CLUSTER_MAX)
            scan -= b
            # pages [pos, pos + b): the old ones and those met a second time go
            evict = max(0, min(pos + b, old) - pos) + max(0, pos + b - max(pos, size))
            pos += b
            scanned += b
            if evict:
                batches.append(evict)
                reclaimed += evict
            if reclaimed >= nr_to_reclaim:
                break
        total += reclaimed
        if scanned:
            wins.append((scanned, reclaimed))
        if total >= nr_to_reclaim or not prio:
            break
        prio -= 1
    if pos < size or pos > 2 * size - old:
        return None  # not every young page met once, or some met a third time
    return total, tuple(batches), tuple(wins), pos - total


def _frames_plan(sys: System, plan: _Span) -> bool:
    """The free stack's pops and pushes of the span, replayed: which frames each step
    gets (from the pushed episodes' pages or the stack as it was), and which pushes
    are still on the stack at the end.  False when the replay cannot be applied as
    totals (the span's pops reach the bottom run that the slab's pages come from, or
    the frames never handed out yet)."""
    stack: list = []  # [offset in the evicted pages, length left], bottom to top
    # the pieces the pops take, in order: where each starts in the evicted pages
    # followed by the stack as it was, its length, and whether it runs backwards (a
    # push is popped top first)
    firsts: list = []
    lens: list = []
    backwards: list = []
    depth = 0  # frames taken from the stack as it was
    offset = 0
    e = plan.evicted
    for step_ops in plan.ops:
        need = FILEMAP_BATCH  # alloc_pages() of the step, before its charges
        while need:
            if stack:
                seg = stack[-1]
                t = min(need, seg[1])
                seg[1] -= t
                firsts.append(seg[0] + seg[1] + t - 1)
                lens.append(t)
                backwards.append(True)
                if not seg[1]:
                    stack.pop()
                need -= t
            else:
                firsts.append(e + depth)
                lens.append(need)
                backwards.append(False)
                depth += need
                need = 0
        for n in step_ops:  # each eviction frees its pages in one release_pages()
            if n:
                stack.append([offset, n])
                offset += n
    pieces = (firsts, lens, backwards)
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
    if e:
        # The episodes, one after another: the list's oldest pages to swap
        victims = swapout.isolate_oldest(sys, memcg, e)
        out = plan.mapping.swap_out(sys, victims)
        assert len(out) == e
        # release_pages() of each eviction: uncharged (the counters below), frames freed
        stats.mod(memcg.id, PGPGOUT, e)
        mem._clear(victims)
    if plan.rotated:
        swapout.put_back_kept(sys, memcg, victims, plan.rotated)
    # The steps' frames, from the pushes and the stack as it was, in pop order
    base = mem.alloc(depth) if depth else np.empty(0, np.int32)
    if not e:
        pfns = base
    else:
        # each piece is a stretch of the pushed pages taken top first (backwards), or
        # of the stack as it was (in pop order, after the pushed pages here)
        both = np.concatenate([victims, base])
        firsts, lens, backwards = pieces
        first = np.array(firsts, np.int64)
        lens = np.array(lens, np.int64)
        step = np.where(np.array(backwards, bool), -1, 1)
        ends = np.cumsum(lens)
        within = np.arange(n, dtype=np.int64) - np.repeat(ends - lens, lens)
        pfns = both[np.repeat(first, lens) + np.repeat(step, lens) * within]
    for off, length in survivors:  # the pushes still on the stack, bottom to top
        mem._push(victims[off:off + length])
        mem.nr_free += length
    # the slab pages, from the far end of the free stack (alloc_kernel_pages)
    if plan.slab_pages:
        # one allocation after another from the far end: the frames of all at once, in
        # order, each slab's pages on top of the cache's stack of them (allocate_slab)
        cache = sys.slab.caches["radix_tree_node"]
        k = sum(plan.slab_pages)
        sys.kernel_pages["Slab"] += k
        got = mem.alloc_unmovable(k)
        nf = cache.nr_pfns
        cap, end_pfns = len(cache.pfns), nf
        for j in plan.slab_pages:  # the array grows as each allocation would grow it
            if end_pfns + j > cap:
                cap = max(end_pfns + j, 2 * cap)
            end_pfns += j
        if cap > len(cache.pfns):
            grown = np.empty(cap, np.int32)
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
    # The counters: usage at every level moved as the group's did, its highest is the
    # watermark; every charge's batch attempt passed memsw, the last one reaching highest
    for c in memcg.memory.ancestors():
        c.watermark = max(c.watermark, c.usage + plan.usage_peak)
        c.usage += plan.usage
    for c in memcg.memsw.ancestors():
        c.watermark = max(c.watermark, c.usage + plan.memsw_peak)
        c.usage += plan.memsw
    counter = memcg.memory
    counter.failcnt += plan.failcnt if counter.track_failcnt else 0
    st_idx, st_pages = plan.stock
    if st_idx is not None:
        stock = sys.stock[task.cpu]
        stock.cached[st_idx] = memcg
        stock.nr_pages[st_idx] = st_pages
    if plan.episodes:
        memcg.memory_events_local[MEMCG_MAX] += plan.episodes
        memcg.memory_events[MEMCG_MAX] += plan.episodes
        memcg.reclaim_iter = memcg if plan.last_total >= vmscan.SWAP_CLUSTER_MAX else None
    cpu = task.cpu
    memcg.nr_page_events[cpu], memcg.thresh_target[cpu], memcg.softlimit_target[cpu] = \
        plan.events
    if plan.episodes:
        swapout.replay_windows(sys, memcg, plan.windows, plan.pressure)
    # shmem_xa_grow() of every step: the nodes, charged to the object cgroup
    if plan.nodes or plan.hits:
        objcg = memcg.objcg
        cache = sys.slab.caches["radix_tree_node"]
        sys.kmem_key.hits += plan.hits
        if plan.kmem:
            memcg.kmem.charge(plan.kmem)
            objcg.nr_pages += plan.kmem
        sys.obj_stock[task.cpu].nr_bytes = plan.ostock_bytes
        cache.nr_objects += sum(count for count, _ in plan.nodes)
        nbytes = sum(b for _, b in plan.nodes)
        objcg.nr_live_bytes += nbytes
        stats.mod(memcg.id, cache_vmstat_idx(cache.name), nbytes)
        obj.xa_nodes.extend([SlabObject(cache, count, objcg, b) for count, b in plan.nodes])
    if sys.semantics != "3.8":
        obj.xa_extent = plan.xa_extent
    # finish_fault(): the task maps the steps' pages
    task.mm.shmem_rss += n
    obj.mappers[task.mm] = end
