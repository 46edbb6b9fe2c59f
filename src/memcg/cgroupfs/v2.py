"""The cgroup v2 memory controller's files: the only place that parses and prints them.

File names, read formats, write parsing and errno values follow Linux 6.18
(mm/memcontrol.c: memory_files[] and swap_files[], kernel/cgroup/cgroup.c:
cgroup_base_files[], Documentation/admin-guide/cgroup-v2.rst).  The module has the same
surface as cgroupfs.v1 (files_of, lookup, read_file, write_file, EVENT_FILES, MAX_WRITE)
so that the backend picks one by the hierarchy.
"""

from __future__ import annotations

import errno
import re

from .. import psi
from ..kernel import PAGE_SIZE
from ..mm.memcontrol import MemCgroup
from .v1 import CFType, MAX_WRITE, einval

__all__ = ["EVENT_FILES", "FILES", "MAX_WRITE", "files_of", "lookup", "read_file", "write_file"]


def _current(k, memcg: MemCgroup) -> str:
    """memory_current_read(): page_counter_read(&memcg->memory) in bytes."""
    return f"{memcg.memory.usage * PAGE_SIZE}\n"


def _pressure_read(k, memcg: MemCgroup) -> str:
    """kernel/sched/psi.c: psi_show() of the group's memory pressure (cgroup_psi: the
    root's is the system's) - "some" and "full", each with avg10/avg60/avg300 in percent
    (two decimals) and the total stall time in microseconds."""
    rows = psi.psi_show(k.sys, psi.cgroup_psi(k.sys, memcg), psi.PSI_MEM)
    out = []
    for name, (a10, a60, a300, total) in zip(("some", "full"), rows):
        out.append(f"{name} avg10={psi.LOAD_INT(a10)}.{psi.LOAD_FRAC(a10):02d} "
                   f"avg60={psi.LOAD_INT(a60)}.{psi.LOAD_FRAC(a60):02d} "
                   f"avg300={psi.LOAD_INT(a300)}.{psi.LOAD_FRAC(a300):02d} total={total}\n")
    return "".join(out)


_TRIGGER_NUMBER = re.compile(r"\s*(\d+)")


def parse_pressure_trigger(text: str) -> tuple[str, int, int]:
    """psi_trigger_create()'s sscanf(buf, "some %u %u") / "full %u %u": the state and
    the two numbers (each cut to 32 bits as %u stores it); OSError(EINVAL) otherwise."""
    for name in ("some", "full"):
        if not text.startswith(name):
            continue
        rest, nums = text[len(name):], []
        for _ in range(2):
            m = _TRIGGER_NUMBER.match(rest)
            if m is None:
                break
            nums.append(int(m.group(1)) & 0xFFFFFFFF)
            rest = rest[m.end():]
        if len(nums) == 2:
            return name, nums[0], nums[1]
    raise einval()


def pressure_trigger(k, memcg: MemCgroup, efd, text: str) -> psi.PsiTrigger:
    """A trigger written to an open memory.pressure (cgroup_pressure_write): poll()
    reports POLLPRI when it fires; here the eventfd is signalled."""
    name, threshold_us, window_us = parse_pressure_trigger(text)
    return psi.psi_trigger_create(k.sys, psi.cgroup_psi(k.sys, memcg), name, threshold_us,
                                  window_us, efd, psi.PSI_MEM)


def _pressure_write(k, memcg: MemCgroup, text: str) -> None:
    """A write(2) that closes the file at once: the trigger is made (or EINVAL) and
    destroyed with the file (psi_trigger_destroy)."""
    t = pressure_trigger(k, memcg, None, text)
    psi.psi_trigger_destroy(k.sys, t)


FILES = [
    CFType("memory.current", _current),
    # kernel/cgroup/cgroup.c: cgroup_psi_files[] (the root too: psi_system)
    CFType("memory.pressure", _pressure_read, _pressure_write),
]
BY_NAME = {cft.name: cft for cft in FILES}
# the files Kernel.event() watches for cgroup_file_notify() (poll POLLPRI / inotify)
EVENT_FILES = ("memory.events", "memory.events.local", "memory.swap.events", "cgroup.events",
               "memory.pressure")


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
