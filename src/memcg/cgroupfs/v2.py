"""The cgroup v2 memory controller's files: the only place that parses and prints them.

File names, read formats, write parsing and errno values follow Linux 6.18
(mm/memcontrol.c: memory_files[] and swap_files[], kernel/cgroup/cgroup.c:
cgroup_base_files[], Documentation/admin-guide/cgroup-v2.rst).  The module has the same
surface as cgroupfs.v1 (files_of, lookup, read_file, write_file, EVENT_FILES, MAX_WRITE)
so that the backend picks one by the hierarchy.
"""

from __future__ import annotations

import errno

from ..kernel import PAGE_SIZE
from ..mm.memcontrol import MemCgroup
from .v1 import CFType, MAX_WRITE, einval

__all__ = ["EVENT_FILES", "FILES", "MAX_WRITE", "files_of", "lookup", "read_file", "write_file"]


def _current(k, memcg: MemCgroup) -> str:
    """memory_current_read(): page_counter_read(&memcg->memory) in bytes."""
    return f"{memcg.memory.usage * PAGE_SIZE}\n"


FILES = [
    CFType("memory.current", _current),
]
BY_NAME = {cft.name: cft for cft in FILES}
# the files Kernel.event() watches for cgroup_file_notify() (poll POLLPRI / inotify)
EVENT_FILES = ("memory.events", "memory.events.local", "memory.swap.events", "cgroup.events")


def files_of(memcg: MemCgroup, semantics: str = "6.18") -> list[str]:
    """The file names in memcg's directory."""
    return [c.name for c in FILES if not c.only_root or memcg.is_root()]


def lookup(memcg: MemCgroup, name: str, semantics: str = "6.18") -> CFType:
    cft = BY_NAME.get(name)
    if cft is None or (cft.only_root and not memcg.is_root()):
        raise FileNotFoundError(errno.ENOENT, f"No such file or directory: {name}")
    return cft


def read_file(k, memcg: MemCgroup, name: str) -> str:
    """read(2) of a cgroup file: a write-only file gives EINVAL."""
    cft = lookup(memcg, name)
    if cft.read is None:
        raise einval()
    return cft.read(k, memcg)


def write_file(k, memcg: MemCgroup, name: str, text: str) -> None:
    """write(2) of a cgroup file, with kernfs's rules around the handler (as in v1)."""
    cft = lookup(memcg, name)
    if len(text.encode()) > MAX_WRITE:
        raise OSError(errno.E2BIG, "Argument list too long")
    if not text:
        return
    if cft.write is None:
        raise einval()
    cft.write(k, memcg, text.split("\0", 1)[0])
