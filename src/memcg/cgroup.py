"""The cgroup core the memory controller needs: path lookup and task migration
(kernel/cgroup/cgroup.c).

Apart from tasks.py because both are the cgroup core's, used by the cgroup files and
the backend as much as by tasks, and neither touches a task's memory.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from . import psi

if TYPE_CHECKING:
    from .mm.memcontrol import MemCgroup
    from .system import System


def cgroup_get_from_path(sys: System, path: str) -> MemCgroup:
    """cgroup_get_from_path(): resolve "/a/b" to an online group; ENOENT if there is none."""
    memcg = sys.root
    for name in [p for p in path.split("/") if p]:
        child = memcg.online_children.get(name)
        if child is None:
            raise FileNotFoundError(errno.ENOENT, f"No such file or directory: {path}")
        memcg = child
    return memcg


def cgroup_attach_task(sys: System, task, memcg: MemCgroup) -> None:
    """cgroup_attach_task(): the task changes group; its charges stay where they were
    (charge moving at immigration is gone from today's kernel)."""
    if task.memcg is memcg:
        return
    old = task.memcg
    old.tasks.remove(task)
    memcg.tasks.append(task)
    task.memcg = memcg
    if getattr(task, "psi_flags", 0):
        psi.cgroup_move_task(sys, task, old, memcg)  # its stall states move with it


def cgroup_file_notify(sys: System, memcg: MemCgroup, name: str) -> None:
    """kernel/cgroup/cgroup.c: cgroup_file_notify() - wake whoever polls the group's file
    (kernfs_notify: POLLPRI and an inotify IN_MODIFY); the eventfds registered on it
    through Kernel.event() are signalled."""
    for efd in sys.file_watchers.get((memcg.id, name), ()):
        efd.signal()
