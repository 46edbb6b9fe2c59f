"""The OOM killer: victim choice and the kill (mm/oom_kill.c, 5.9+ scoring).

badness = rss (anon + file + shmem pages mapped) + swap entries + page-table pages,
plus oom_score_adj scaled by totalpages / 1000.  A memcg OOM looks only at tasks in
the subtree of the group whose limit was hit; a global OOM at every task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .memcontrol import MEMCG_OOM_KILL, MemCgroup, mem_cgroup_margin, memcg_memory_event

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
    # mm/oom_kill.c: adj *= totalpages / 1000 (integer division first)
    points += task.oom_score_adj * (totalpages // 1000)
    return points


def mem_cgroup_get_max(sys: System, memcg: MemCgroup) -> int:
    """mem_cgroup_get_max() (v1): memory max, plus the swap memsw allows if swappiness > 0."""
    max_pages = memcg.memory.max
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


def oom_kill_process(sys: System, victim: Task) -> None:
    """oom_kill_process() -> __oom_kill_process(): SIGKILL the victim; its memory goes.

    MEMCG_OOM_KILL counts in the victim's own group (memcg_memory_event_mm), not
    necessarily the group whose limit was hit.
    """
    memcg_memory_event(sys, victim.memcg, MEMCG_OOM_KILL)
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
    oom_kill_process(sys, victim)
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
