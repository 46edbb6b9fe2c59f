"""The cgroup core the memory controller needs: path lookup, task migration and, on
cgroup v2, the default hierarchy's rules (kernel/cgroup/cgroup.c).

Apart from tasks.py because both are the cgroup core's, used by the cgroup files and
the backend as much as by tasks, and neither touches a task's memory.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .mm.page_counter import PAGE_COUNTER_MAX
from . import parse, psi

if TYPE_CHECKING:
    from .mm.memcontrol import MemCgroup
    from .system import System


def cgroup_get_from_path(sys: System, path: str) -> MemCgroup:
    """cgroup_get_from_path(): resolve "/a/b" to an online group; ENOENT if there is none
    (the path read as path lookup reads it: parse.resolve_path)."""
    memcg = sys.root
    for name in parse.resolve_path(path):
        child = memcg.online_children.get(name)
        if child is None:
            raise FileNotFoundError(errno.ENOENT, f"No such file or directory: {path}")
        memcg = child
    return memcg


def cgroup_attach_task(sys: System, task, memcg: MemCgroup) -> None:
    """cgroup_attach_task(): the task changes group; its charges stay where they were
    (charge moving at immigration is gone from today's kernel).  Its new css_set holds the
    memory css new charges go to (task_css)."""
    if task.cgroup is memcg:
        return
    old = task.cgroup
    cgroup_update_populated(sys, old, -1)
    old.tasks.remove(task)
    memcg.tasks.append(task)
    task.cgroup = memcg
    task.memcg = task_css(sys, task)
    cgroup_update_populated(sys, memcg, 1)
    if getattr(task, "psi_flags", 0):
        psi.cgroup_move_task(sys, task, old, memcg)  # its stall states move with it


def cgroup_file_notify(sys: System, memcg: MemCgroup, name: str) -> None:
    """kernel/cgroup/cgroup.c: cgroup_file_notify() - wake whoever polls the group's file
    (kernfs_notify: POLLPRI and an inotify IN_MODIFY); the eventfds registered on it
    through Kernel.event() are signalled."""
    for efd in sys.file_watchers.get((memcg.id, name), ()):
        efd.signal()


# --- cgroup v2: the default hierarchy's core rules (kernel/cgroup/cgroup.c, 6.18) -------------
#
# The model has one controller, memory, so a subsystem mask is the set {"memory"} or empty.
# Each group is one MemCgroup.  A task has two: task.cgroup, the group it is a member of
# (cgroup.procs, cgroup.events populated, PSI, cgroup.kill), and task.memcg, the memory css
# its css_set holds, which every charge and memcg event of the task goes to.  They differ
# where the group's parent does not enable memory: the group has no memory css and its
# tasks charge the nearest ancestor that has one (task_css).  task.memcg is resolved again
# whenever the task migrates and whenever a subtree_control write adds or removes memory
# css below (cgroup_apply_control -> cgroup_update_dfl_csses moves the css_sets).
# Not modelled: the css of a group whose memory is disabled is killed in the kernel and a
# later enable makes a new one starting at 0; here the group keeps its one MemCgroup, so
# pages it charged before the disable stay on its counters (as they stay on the dying
# css, counted in the parent's) and show again in its memory.current after a re-enable.

# the controllers of this kernel on the default hierarchy (cgroup_subsys[]); the model's
# machine has the memory controller only
CGROUP_SUBSYS = ("memory",)
# the other controllers the kernel knows (include/linux/cgroup_subsys.h, 6.18): none is
# available on this machine's default hierarchy, so enabling one is ENOENT, not EINVAL
OTHER_SUBSYS = ("cpuset", "cpu", "io", "hugetlb", "pids", "rdma", "misc", "dmem")
# include/linux/limits.h / kernel/cgroup/cgroup.c: max.depth and max.descendants start at INT_MAX
INT_MAX = 2**31 - 1


@dataclass
class Cgroup:
    """The struct cgroup fields of the default hierarchy that memcg's group lacks."""

    subtree_control: set = field(default_factory=set)  # cgrp->subtree_control
    max_depth: int = INT_MAX  # cgrp->max_depth (cgroup.max.depth)
    max_descendants: int = INT_MAX  # cgrp->max_descendants (cgroup.max.descendants)
    nr_populated: int = 0  # tasks in the subtree (nr_populated_csets + children, folded)


def cgrp(sys: System, memcg: MemCgroup) -> Cgroup:
    """The cgroup of memcg (made on first use; the root starts with +memory, as systemd
    leaves it)."""
    c = sys.cgroups.get(memcg)
    if c is None:
        c = sys.cgroups[memcg] = Cgroup()
        if memcg.is_root():
            c.subtree_control = set(CGROUP_SUBSYS)
    return c


def cgroup_control(sys: System, memcg: MemCgroup) -> set:
    """cgroup_control(): the controllers a group may enable for its children - those its
    parent enables for it (cgroup.controllers); all of them at the root."""
    if memcg.is_root():
        return set(CGROUP_SUBSYS)
    return set(cgrp(sys, memcg.parent).subtree_control)


def cgroup_css_online(sys: System, memcg: MemCgroup, ss: str = "memory") -> bool:
    """Whether the group has a css of ss (its parent enables ss; the root always)."""
    if not sys.cgroup_dfl:
        return True
    return memcg.is_root() or ss in cgrp(sys, memcg.parent).subtree_control


def task_css(sys: System, task) -> MemCgroup:
    """task_css(task, memory_cgrp_id), as mem_cgroup_from_task() reads it: the group whose
    memory css the task's css_set holds - its own group, or, where its parent does not
    enable memory, the nearest ancestor that has a memory css (cgroup_apply_control()
    moves the css_sets there).  Resolved into task.memcg at fork, migration and
    subtree_control writes; charges and memcg events go there."""
    memcg = task.cgroup
    while not cgroup_css_online(sys, memcg):
        memcg = memcg.parent
    return memcg


def cgroup_is_populated(sys: System, memcg: MemCgroup) -> bool:
    """cgroup_is_populated(): a task lives in the group or below it."""
    return cgrp(sys, memcg).nr_populated > 0


def cgroup_update_populated(sys: System, memcg: MemCgroup, delta: int) -> None:
    """cgroup_update_populated(): a task joined (+1) or left (-1) memcg; each ancestor whose
    populated state flips has its cgroup.events notified (cgroup_file_notify)."""
    if not sys.cgroup_dfl:
        return
    for m in memcg.ancestors():
        c = cgrp(sys, m)
        was = c.nr_populated > 0
        c.nr_populated += delta
        if (c.nr_populated > 0) != was and not m.is_root():
            cgroup_file_notify(sys, m, "cgroup.events")


def cgroup_migrate_vet_dst(sys: System, dst: MemCgroup) -> None:
    """cgroup_migrate_vet_dst(): the no-internal-process rule - a non-root group that
    enables a controller for its children cannot take tasks (EBUSY); v1 has no rule.
    (The model has no threaded mode: cgroup_can_be_thread_root() is false for a group
    that enables memory, a domain controller.)"""
    if not sys.cgroup_dfl or dst.is_root():  # cgroup_is_mixable()
        return
    if cgrp(sys, dst).subtree_control:
        raise OSError(errno.EBUSY, "Device or resource busy")


def cgroup_procs_write(sys: System, task, dst: MemCgroup) -> None:
    """__cgroup_procs_write() for one task: vet the destination, then migrate."""
    cgroup_migrate_vet_dst(sys, dst)
    cgroup_attach_task(sys, task, dst)


def cgroup_subtree_control_write(sys: System, memcg: MemCgroup, text: str) -> None:
    """cgroup_subtree_control_write(): "+memory" / "-memory" tokens separated by spaces.

    A token naming no controller is EINVAL, as is one without '+' or '-'; the later of
    "+x" and "-x" wins.  Enabling what the parent does not enable is ENOENT; disabling
    while a child still enables it for its own children is EBUSY; enabling in a group
    with tasks of its own is EBUSY (cgroup_vet_subtree_control_enable), except at the root.
    """
    enable: set = set()
    disable: set = set()
    for tok in text.strip(" \t\n\v\f\r").split(" "):
        if not tok:
            continue
        ss = tok[1:]
        if ss not in CGROUP_SUBSYS + OTHER_SUBSYS:
            raise OSError(errno.EINVAL, "Invalid argument")
        if tok[0] == "+":
            enable.add(ss)
            disable.discard(ss)
        elif tok[0] == "-":
            disable.add(ss)
            enable.discard(ss)
        else:
            raise OSError(errno.EINVAL, "Invalid argument")
    c = cgrp(sys, memcg)
    for ss in CGROUP_SUBSYS + OTHER_SUBSYS:
        if ss in enable:
            if ss in c.subtree_control:
                enable.discard(ss)
                continue
            if ss not in cgroup_control(sys, memcg):
                raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        elif ss in disable:
            if ss not in c.subtree_control:
                disable.discard(ss)
                continue
            for child in memcg.online_children.values():
                if ss in cgrp(sys, child).subtree_control:
                    raise OSError(errno.EBUSY, "Device or resource busy")
    if not enable and not disable:
        return
    # cgroup_vet_subtree_control_enable(): controllers can't be enabled for a cgroup with
    # tasks, to avoid child cgroups competing against tasks (the root is mixable)
    if enable and not memcg.is_root() and memcg.tasks:
        raise OSError(errno.EBUSY, "Device or resource busy")
    c.subtree_control |= enable
    c.subtree_control -= disable
    # cgroup_apply_control(): the children's memory css go (css_killed) or come back new;
    # a new css starts with the default knobs (mem_cgroup_css_alloc)
    if "memory" in disable or "memory" in enable:
        for child in memcg.online_children.values():
            mem_cgroup_css_reset(child)
        cgroup_update_dfl_csses(sys, memcg)


def cgroup_update_dfl_csses(sys: System, memcg: MemCgroup) -> None:
    """cgroup_update_dfl_csses(): the tasks below memcg move to css_sets holding the memory
    css they now resolve to; what they charged stays with the css it was charged to
    (folio->memcg_data is not rewritten), only new charges go to the new css."""
    for m in memcg.subtree():
        for task in m.tasks:
            task.memcg = task_css(sys, task)


def mem_cgroup_css_reset(memcg: MemCgroup) -> None:
    """mm/memcontrol.c: mem_cgroup_css_reset() - the knobs of a group whose memory css goes
    away or comes back return to their defaults."""
    for counter in (memcg.memory, memcg.swap):
        counter.max = PAGE_COUNTER_MAX
        counter.high = PAGE_COUNTER_MAX
    memcg.memory.min = memcg.memory.low = 0
    memcg.oom_group = False


def cgroup_check_hierarchy_limits(sys: System, parent: MemCgroup) -> None:
    """cgroup_check_hierarchy_limits(): cgroup_mkdir() is EAGAIN when an ancestor-or-self of
    the new group's parent has as many live descendants as its cgroup.max.descendants,
    or the new group would lie deeper below it than its cgroup.max.depth."""
    if not sys.cgroup_dfl:
        return
    depth = 1
    for m in parent.ancestors():
        c = cgrp(sys, m)
        if cgroup_nr_descendants(m) >= c.max_descendants or depth > c.max_depth:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        depth += 1


def cgroup_nr_descendants(memcg: MemCgroup) -> int:
    """cgrp->nr_descendants: live groups below memcg."""
    return sum(1 + cgroup_nr_descendants(c) for c in memcg.online_children.values())


def cgroup_nr_dying_descendants(memcg: MemCgroup) -> int:
    """cgrp->nr_dying_descendants: removed groups below memcg not freed yet."""
    return sum((0 if c.online else 1) + cgroup_nr_dying_descendants(c) for c in memcg.children)


def cgroup_kill(sys: System, memcg: MemCgroup) -> None:
    """cgroup_kill(): SIGKILL every task of the group and its descendants."""
    for m in list(memcg.subtree()):
        for task in list(m.tasks):
            if task.state not in ("exited", "oom_killed"):
                task.do_exit("exited")
