"""The cgroup v1 parts of the memory controller (mm/memcontrol-v1.c, 6.11+).

Usage thresholds and OOM notifications through cgroup.event_control, memory.oom_control
(oom_kill_disable, under_oom and the sleeping of tasks whose fault hit the limit),
the soft-limit tree and its reclaim, and memory.force_empty.
"""

from __future__ import annotations

import bisect
import errno
from typing import TYPE_CHECKING

from . import mempressure, oom_kill, vmpressure, vmscan
from .memcontrol import (CHARGE_NOMEM, CHARGE_OOM_WAIT, MAX_RECLAIM_RETRIES,
                         PAGE_ALLOC_COSTLY_ORDER, MemCgroup, drain_all_stock, mem_cgroup_usage)
from .page_counter import page_counter_memparse

if TYPE_CHECKING:
    from ..fs.eventfd import EventFd
    from ..system import System
    from ..tasks import Task

# mm/memcontrol-v1.c: MEM_CGROUP_MAX_SOFT_LIMIT_RECLAIM_LOOPS, MEM_CGROUP_MAX_RECLAIM_LOOPS
MEM_CGROUP_MAX_SOFT_LIMIT_RECLAIM_LOOPS = 2
MEM_CGROUP_MAX_RECLAIM_LOOPS = 100


# --- usage thresholds ---------------------------------------------------------------

def _threshold_of(entry: tuple) -> int:
    return entry[0]


def mem_cgroup_usage_register_event(sys: System, memcg: MemCgroup, efd: EventFd, args: str,
                                    memsw: bool) -> None:
    """__mem_cgroup_usage_register_event(): args is one size (page_counter_memparse, "-1")."""
    threshold = page_counter_memparse(args, "-1")
    # Check the existing thresholds first, so the new current index is consistent.
    _threshold(sys, memcg, memsw)
    lst = memcg.memsw_thresholds if memsw else memcg.thresholds
    # the kernel copies the sorted array into one a slot longer; a bisection finds the
    # same place, and the new current index (the last threshold at or below usage)
    lst.insert(bisect.bisect_right(lst, threshold, key=_threshold_of), (threshold, efd))
    usage = mem_cgroup_usage(sys, memcg, memsw)
    current = bisect.bisect_right(lst, usage, key=_threshold_of) - 1
    if memsw:
        memcg.memsw_current_threshold = current
    else:
        memcg.current_threshold = current
    memcg.event_list.append((efd, "memsw" if memsw else "usage"))


def mem_cgroup_threshold(sys: System, memcg: MemCgroup) -> None:
    """mem_cgroup_threshold(): check this memcg's and every ancestor's thresholds."""
    for m in memcg.ancestors():
        _threshold(sys, m, False)
        _threshold(sys, m, True)  # do_memsw_account(): always on v1


def _threshold(sys: System, memcg: MemCgroup, memsw: bool) -> None:
    """__mem_cgroup_threshold(): signal every threshold crossed since the last check."""
    lst = memcg.memsw_thresholds if memsw else memcg.thresholds
    if not lst:
        return
    usage = mem_cgroup_usage(sys, memcg, memsw)
    i = memcg.memsw_current_threshold if memsw else memcg.current_threshold
    # Crossed downwards: thresholds at or below the old index that are now above usage.
    while i >= 0 and lst[i][0] > usage:
        lst[i][1].signal(1)
        i -= 1
    # Crossed upwards: thresholds after the index that are now at or below usage.
    i += 1
    while i < len(lst) and lst[i][0] <= usage:
        lst[i][1].signal(1)
        i += 1
    if memsw:
        memcg.memsw_current_threshold = i - 1
    else:
        memcg.current_threshold = i - 1


# --- OOM control ----------------------------------------------------------------------

def mem_cgroup_oom_register_event(sys: System, memcg: MemCgroup, efd: EventFd) -> None:
    """mem_cgroup_oom_register_event(): already under OOM means one event at once."""
    memcg.oom_notify.append(efd)
    memcg.event_list.append((efd, "oom"))
    if memcg.under_oom:
        efd.signal(1)


def mem_cgroup_oom_notify(memcg: MemCgroup) -> None:
    """mem_cgroup_oom_notify(): signal the OOM listeners of memcg and all its descendants."""
    for m in memcg.subtree():
        for efd in m.oom_notify:
            efd.signal(1)


def mem_cgroup_mark_under_oom(memcg: MemCgroup) -> None:
    for m in memcg.subtree():
        m.under_oom += 1


def mem_cgroup_unmark_under_oom(memcg: MemCgroup) -> None:
    for m in memcg.subtree():
        if m.under_oom > 0:
            m.under_oom -= 1


def mem_cgroup_oom_trylock(memcg: MemCgroup) -> bool:
    """mem_cgroup_oom_trylock(): one OOM handler per subtree at a time."""
    if any(m.oom_lock for m in memcg.subtree()):
        return False
    for m in memcg.subtree():
        m.oom_lock = True
    return True


def mem_cgroup_oom_unlock(memcg: MemCgroup) -> None:
    for m in memcg.subtree():
        m.oom_lock = False


def mem_cgroup_oom(sys: System, memcg: MemCgroup, nr_pages: int, task: Task | None,
                   user_fault: bool):
    """mem_cgroup_oom() + memcg1_oom_prepare()/finish() (6.x).

    True: the OOM killer freed memory (or found the margin back), retry the charge.
    CHARGE_OOM_WAIT: oom_kill_disable and a user fault - the task sleeps at fault end.
    CHARGE_NOMEM: no OOM for this charge (costly order, oom_kill_disable outside a
    fault, or no killable task).
    """
    if nr_pages > (1 << PAGE_ALLOC_COSTLY_ORDER):
        return CHARGE_NOMEM
    if memcg.oom_kill_disable:
        if user_fault and task is not None:
            task.memcg_in_oom = memcg
            return CHARGE_OOM_WAIT
        return CHARGE_NOMEM
    mem_cgroup_mark_under_oom(memcg)
    locked = mem_cgroup_oom_trylock(memcg)
    if locked:
        mem_cgroup_oom_notify(memcg)
    mem_cgroup_unmark_under_oom(memcg)
    ret = oom_kill.mem_cgroup_out_of_memory(sys, memcg, nr_pages, task)
    if locked:
        mem_cgroup_oom_unlock(memcg)
    return True if ret else CHARGE_NOMEM


def mem_cgroup_oom_synchronize(sys: System, task: Task) -> None:
    """mem_cgroup_oom_synchronize(true): the faulting task sleeps until memcg_oom_recover().

    It stays marked under OOM while it sleeps; the first sleeper of a subtree takes the
    OOM lock and notifies the listeners.
    """
    memcg = task.memcg_in_oom
    mem_cgroup_mark_under_oom(memcg)
    locked = mem_cgroup_oom_trylock(memcg)
    if locked:
        mem_cgroup_oom_notify(memcg)
    task.oom_wait = (memcg, locked)
    task.sleep()


def memcg1_oom_recover(sys: System, memcg: MemCgroup) -> None:
    """memcg1_oom_recover(): wake sleepers whose OOM memcg is related to memcg.

    memcg_oom_wake_function() wakes a waiter when either memcg is a descendant of the other.
    """
    if not memcg.under_oom:
        return
    for task in list(sys.clock.sleeping):
        oom_memcg, locked = task.oom_wait
        if oom_memcg.is_descendant(memcg) or memcg.is_descendant(oom_memcg):
            mem_cgroup_oom_wake(sys, task)


def mem_cgroup_oom_wake(sys: System, task: Task) -> None:
    """The sleeper returns from mem_cgroup_oom_synchronize() and retries its fault."""
    memcg, locked = task.oom_wait
    mem_cgroup_unmark_under_oom(memcg)
    if locked:
        mem_cgroup_oom_unlock(memcg)
    task.oom_wait = None
    task.memcg_in_oom = None
    task.wake()


def mem_cgroup_oom_control_write(sys: System, memcg: MemCgroup, val: int) -> None:
    """mem_cgroup_oom_control_write(): 0 or 1, never on the root (EINVAL)."""
    if memcg.is_root() or val not in (0, 1):
        raise OSError(errno.EINVAL, "Invalid argument")
    memcg.oom_kill_disable = val
    if not val:
        memcg1_oom_recover(sys, memcg)


# --- soft limit ---------------------------------------------------------------------

def soft_limit_excess(memcg: MemCgroup) -> int:
    """soft_limit_excess(): pages of usage above the soft limit."""
    return max(0, memcg.memory.usage - memcg.soft_limit)


def memcg1_update_tree(sys: System, memcg: MemCgroup) -> None:
    """memcg1_update_tree(): re-key memcg and its ancestors in the soft-limit tree."""
    tree = sys.soft_limit_tree
    for m in memcg.ancestors():
        excess = soft_limit_excess(m)
        if excess or m.id in tree:
            tree.pop(m.id, None)
            if excess:
                sys.soft_limit_seq += 1
                tree[m.id] = (excess, sys.soft_limit_seq)


def memcg1_remove_from_trees(sys: System, memcg: MemCgroup) -> None:
    sys.soft_limit_tree.pop(memcg.id, None)


def mem_cgroup_largest_soft_limit_node(sys: System) -> MemCgroup | None:
    """__mem_cgroup_largest_soft_limit_node(): the rightmost node, dropping empty ones.

    Equal keys go right in the rb-tree, so among equal excesses the latest inserted wins.
    """
    tree = sys.soft_limit_tree
    while tree:
        memcg_id = max(tree, key=lambda i: tree[i])
        memcg = sys.memcgs.get(memcg_id)
        if memcg is not None and soft_limit_excess(memcg) and memcg.online:
            return memcg
        del tree[memcg_id]  # excess gone since it was keyed: remove, take the next
    return None


def memcg1_soft_limit_reclaim(sys: System) -> int:
    """memcg1_soft_limit_reclaim(): reclaim from the groups furthest over their soft limit.

    Ends as soon as something was reclaimed; otherwise tries the next-largest group,
    giving up after MEM_CGROUP_MAX_SOFT_LIMIT_RECLAIM_LOOPS rounds.
    """
    nr_reclaimed = 0
    loop = 0
    tree = sys.soft_limit_tree
    next_mz = None
    while True:
        mz = next_mz if next_mz is not None else mem_cgroup_largest_soft_limit_node(sys)
        next_mz = None
        if mz is None:
            break
        reclaimed = vmscan.mem_cgroup_soft_reclaim(sys, mz)
        nr_reclaimed += reclaimed
        tree.pop(mz.id, None)
        if not reclaimed:
            next_mz = mem_cgroup_largest_soft_limit_node(sys)
            if next_mz is mz:
                next_mz = None
        excess = soft_limit_excess(mz)
        if excess:
            sys.soft_limit_seq += 1
            tree[mz.id] = (excess, sys.soft_limit_seq)
        if nr_reclaimed:
            break
        loop += 1
        if loop > MEM_CGROUP_MAX_SOFT_LIMIT_RECLAIM_LOOPS:
            break
    return nr_reclaimed


# --- force_empty ----------------------------------------------------------------------

def mem_cgroup_force_empty(sys: System, memcg: MemCgroup) -> None:
    """mem_cgroup_force_empty(): reclaim everything reclaimable; success even if pages stay."""
    if memcg.is_root():
        raise OSError(errno.EINVAL, "Invalid argument")
    nr_retries = MAX_RECLAIM_RETRIES
    drain_all_stock(sys, memcg)
    while nr_retries and memcg.memory.usage:
        if not vmscan.try_to_free_mem_cgroup_pages(sys, memcg, 1, may_swap=True):
            nr_retries -= 1


# --- event removal --------------------------------------------------------------------

def memcg_unregister_event(sys: System, memcg: MemCgroup, efd: EventFd) -> bool:
    """Drop every registration of efd on memcg; True if there was one."""
    found = any(e is efd for e, _ in memcg.event_list)
    if not found:
        return False
    memcg.event_list = [(e, k) for e, k in memcg.event_list if e is not efd]
    memcg.oom_notify = [e for e in memcg.oom_notify if e is not efd]
    for memsw in (False, True):
        lst = memcg.memsw_thresholds if memsw else memcg.thresholds
        if not any(e is efd for _, e in lst):
            continue
        # __mem_cgroup_usage_unregister_event(): "Check if a threshold crossed before
        # removing", then rebuild the array with the current index from usage.
        _threshold(sys, memcg, memsw)
        keep = [(t, e) for t, e in lst if e is not efd]
        usage = mem_cgroup_usage(sys, memcg, memsw)
        current = max((i for i, (t, _) in enumerate(keep) if t <= usage), default=-1)
        if memsw:
            memcg.memsw_thresholds, memcg.memsw_current_threshold = keep, current
        else:
            memcg.thresholds, memcg.current_threshold = keep, current
    return True


def memcg_event_remove(sys: System, efd: EventFd) -> None:
    """memcg_event_wake(EPOLLHUP) -> memcg_event_remove(): closing an eventfd removes its
    registrations on every group, each type's unregister_event (usage, oom, vmpressure,
    and mempressure.shrinker)."""
    for memcg in list(sys.memcgs.values()):
        if memcg_unregister_event(sys, memcg, efd):
            vmpressure.vmpressure_unregister_event(sys, memcg, efd)
            mempressure.shrinker_unregister_event(sys, memcg, efd)


def memcg_offline_events(memcg: MemCgroup) -> None:
    """mem_cgroup_css_offline(): every registered event is removed, its eventfd signalled once."""
    for efd, _kind in list(memcg.event_list):
        efd.signal(1)
    memcg.event_list.clear()
    memcg.oom_notify.clear()
    memcg.thresholds.clear()
    memcg.memsw_thresholds.clear()
    memcg.current_threshold = memcg.memsw_current_threshold = -1
