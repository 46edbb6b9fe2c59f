"""The OOM killer: victim choice and the kill (mm/oom_kill.c, 5.9+ scoring).

badness = rss (anon + file + shmem pages mapped) + swap entries + page-table pages,
plus oom_score_adj scaled by totalpages / 1000.  A memcg OOM looks only at tasks in
the subtree of the group whose limit was hit; a global OOM at every task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .memcontrol import (MEMCG_OOM_GROUP_KILL, MEMCG_OOM_KILL, MemCgroup, mem_cgroup_margin,
                         memcg_memory_event)

if TYPE_CHECKING:
    from ..system import System
    from ..tasks import Task

# include/uapi/linux/oom.h
OOM_SCORE_ADJ_MIN = -1000
OOM_SCORE_ADJ_MAX = 1000


def oom_badness(task: Task, totalpages: int) -> int | None:
    """oom_badness(): the task's points, or None when it may not be killed (LONG_MIN)."""
    if task.state in ("exited", "oom_killed") or task.oom_score_adj == OOM_SCORE_ADJ_MIN:
        return None
    mm = task.mm
    points = mm.get_mm_rss() + mm.swapents + mm.pgtables_pages()
    # what a spawned task brought with it: mapped and counted, charged where it started
    # (tasks.spawned_image)
    points += mm.image_rss + mm.image_pgtables
    # mm/oom_kill.c: adj *= totalpages / 1000 (integer division first)
    points += task.oom_score_adj * (totalpages // 1000)
    return points


def mem_cgroup_get_max(sys: System, memcg: MemCgroup) -> int:
    """mem_cgroup_get_max(): memory max, plus the swap memsw allows (v1) or swap.max (v2,
    !do_memsw_account()) if swappiness > 0."""
    max_pages = memcg.memory.max
    if sys.cgroup_dfl:
        if memcg.swappiness:
            max_pages += min(memcg.swap.max, sys.swap.nr_pages)
        return max_pages
    if memcg.swappiness:
        memsw_max = memcg.memsw.max
        swap = max(0, memsw_max - max_pages)
        max_pages += min(swap, sys.swap.nr_pages)
    return max_pages


def select_bad_process(tasks, totalpages: int) -> Task | None:
    """select_bad_process(): highest points; on a tie the task scanned later wins."""
    chosen = None
    chosen_points = None
    for task in tasks:
        points = oom_badness(task, totalpages)
        if points is None:
            continue
        if chosen_points is None or points >= chosen_points:
            chosen, chosen_points = task, points
    return chosen


def mem_cgroup_scan_tasks(memcg: MemCgroup):
    """mem_cgroup_scan_tasks(): tasks of memcg and its descendants, group by group."""
    for m in memcg.subtree():
        yield from list(m.tasks)


def mem_cgroup_get_oom_group(sys: System, victim: Task, oom_domain: MemCgroup | None):
    """mm/memcontrol.c: mem_cgroup_get_oom_group() - the highest group with memory.oom.group
    set from the victim's group up to the OOM domain (the group whose limit was hit, or the
    root for a global OOM); None on v1, for a victim in the root, or with none set."""
    if not sys.cgroup_dfl:
        return None
    if oom_domain is None:
        oom_domain = sys.root
    memcg = victim.memcg  # mem_cgroup_from_task(victim)
    if memcg.is_root() or not memcg.is_descendant(oom_domain):
        return None
    oom_group = None
    for m in memcg.ancestors():
        if m.oom_group:
            oom_group = m
        if m is oom_domain:
            break
    return oom_group


def oom_kill_process(sys: System, victim: Task, oom_domain: MemCgroup | None = None) -> None:
    """oom_kill_process(): kill the victim, then (v2) every task of its memory.oom.group
    group except those with oom_score_adj -1000 (oom_kill_memcg_member), counting
    MEMCG_OOM_GROUP_KILL in that group.

    The group's tasks are walked after the victim's SIGKILL, while the victim is still
    listed (it exits asynchronously): __oom_kill_process() finds its mm and counts
    MEMCG_OOM_KILL for it a second time, as the kernel does.
    """
    oom_group = mem_cgroup_get_oom_group(sys, victim, oom_domain)
    members = list(mem_cgroup_scan_tasks(oom_group)) if oom_group is not None else []
    __oom_kill_process(sys, victim)
    if oom_group is not None:
        memcg_memory_event(sys, oom_group, MEMCG_OOM_GROUP_KILL)
        for task in members:
            if task.oom_score_adj != OOM_SCORE_ADJ_MIN:
                __oom_kill_process(sys, task)


def __oom_kill_process(sys: System, victim: Task) -> None:
    """__oom_kill_process(): SIGKILL the victim; its memory goes.

    MEMCG_OOM_KILL counts in the victim's own group (memcg_memory_event_mm), not
    necessarily the group whose limit was hit.
    """
    # memcg_memory_event_mm() -> mem_cgroup_from_task(): the victim's memory css
    memcg_memory_event(sys, victim.memcg, MEMCG_OOM_KILL)
    if victim.oom_victim or victim.state in ("exited", "oom_killed"):
        return  # SIGKILL already pending
    victim.oom_victim = True
    if victim is sys.current:
        return  # SIGKILL is pending: it dies when its charge gives up and returns
    victim.do_exit("oom_killed")  # the oom_reaper frees its memory at once in the model


def mem_cgroup_out_of_memory(sys: System, memcg: MemCgroup, nr_pages: int,
                             task: Task | None) -> bool:
    """mem_cgroup_out_of_memory(): kill in memcg's subtree; False when nobody can be killed.

    Under oom_lock the margin is checked again: if memory came back meanwhile, nobody dies.
    """
    if mem_cgroup_margin(memcg) >= nr_pages:
        return True
    if task is not None and task.oom_victim:
        return True  # task_is_dying()
    totalpages = max(1, mem_cgroup_get_max(sys, memcg))
    victim = select_bad_process(mem_cgroup_scan_tasks(memcg), totalpages)
    if victim is None:
        return False
    oom_kill_process(sys, victim, memcg)
    return True


def out_of_memory(sys: System, task: Task | None) -> bool:
    """out_of_memory() for the whole machine: totalpages = RAM + swap."""
    totalpages = sys.mem.nr_pages + sys.swap.nr_pages
    victim = select_bad_process(mem_cgroup_scan_tasks(sys.root), totalpages)
    if victim is None:
        return False
    sys.global_oom_kills += 1
    oom_kill_process(sys, victim)
    return True
