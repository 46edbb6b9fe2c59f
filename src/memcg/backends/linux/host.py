"""The host: where this process's memory cgroup is, and whether it can be used.

Everything is read from /proc/self/cgroup and /proc/self/mountinfo, so the answers
hold for any mount point and either cgroup version.
"""

from __future__ import annotations

import errno
import os

from . import files


class LinuxUnavailable(OSError):
    """Real cgroups cannot be used here; str() is one line saying why."""


def _mountpoints() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) of every mount, from /proc/self/mountinfo."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, rfields = left.split(), right.split()
                if len(fields) >= 5 and len(rfields) >= 3:
                    out.append((fields[4].replace("\\040", " "), rfields[0], rfields[2]))
    except OSError:
        pass
    return out


def fs_type(path: str) -> str:
    """The file system type of the mount that holds path (longest mount-point prefix)."""
    path = os.path.realpath(path)
    best, kind = "", "unknown"
    for point, fstype, _ in _mountpoints():
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fstype
    return kind


def find_memory_cgroup() -> tuple[str, int]:
    """The caller's own memory cgroup directory and the cgroup version that holds it.

    Prefers the v1 memory controller; falls back to a v2 group whose children can have
    the memory controller.  Raises LinuxUnavailable with a one-line reason.
    """
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise LinuxUnavailable(errno.ENOENT, f"cannot read /proc/self/cgroup: {e.strerror}") from None
    mounts = _mountpoints()
    v2_rel = None
    for line in lines:
        _, ctrls, rel = line.split(":", 2)
        if "memory" in ctrls.split(","):
            for point, fstype, opts in mounts:
                if fstype == "cgroup" and "memory" in opts.split(","):
                    return os.path.join(point, rel.lstrip("/")), 1
            raise LinuxUnavailable(errno.ENOENT, "the cgroup v1 memory controller is not mounted")
        if ctrls == "":
            v2_rel = rel
    if v2_rel is not None:
        for point, fstype, _ in mounts:
            if fstype == "cgroup2":
                path = os.path.join(point, v2_rel.lstrip("/"))
                if "memory" in files.read_quiet(os.path.join(path, "cgroup.controllers")).split():
                    return path, 2
    raise LinuxUnavailable(errno.ENOENT, "no memory cgroup controller (neither v1 nor v2) "
                                         "for this process")


def v1_memory_cgroup() -> str:
    """The caller's own group of the cgroup v1 memory controller (the measuring tools
    need v1's files); LinuxUnavailable with a one-line reason where there is none."""
    path, version = find_memory_cgroup()
    if version != 1:
        raise LinuxUnavailable(errno.ENOENT, "no cgroup v1 memory controller for this process")
    return os.path.normpath(path)


def check_usable(parent: str, version: int) -> None:
    """Raise LinuxUnavailable (one line) unless new groups can be made below parent."""
    if not os.path.isdir(parent):
        raise LinuxUnavailable(errno.ENOENT, f"no memory cgroup at {parent}")
    if not os.access(parent, os.W_OK):
        raise LinuxUnavailable(errno.EACCES, f"the memory cgroup {parent} is not writable "
                                             "(needs root or a delegated group)")
    if version == 1 and not os.path.exists(os.path.join(parent, "memory.limit_in_bytes")):
        raise LinuxUnavailable(errno.ENOENT, f"{parent} is not a cgroup v1 memory group")
    if version == 2 and "memory" not in files.read_quiet(os.path.join(parent, "cgroup.subtree_control")).split():
        raise LinuxUnavailable(errno.ENOENT, f"the memory controller is not enabled for the "
                                             f"children of {parent} (cgroup.subtree_control)")



def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes (its "kB" figures times 1024)."""
    out = {}
    for line in files.read_quiet("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        f = rest.split()
        if f and f[0].isdigit():
            out[key] = int(f[0]) * (1024 if f[1:] == ["kB"] else 1)
    return out


def _v2_limit_above(group_dir: str, name: str) -> int | None:
    """The least of `name` (memory.max, memory.swap.max) over group_dir and its ancestors
    up to the cgroup2 mount (None: no limit anywhere).  On v2 a group's effective limit
    is the least on its path (mm/page_counter.c: page_counter_try_charge walks them all)."""
    best = None
    d = os.path.normpath(group_dir)
    while os.path.exists(os.path.join(d, name)):
        text = files.read_quiet(os.path.join(d, name)).strip()
        if text.isdigit():
            best = int(text) if best is None else min(best, int(text))
        up = os.path.dirname(d)
        if up == d:
            break
        d = up
    return best


def machine_shape(group_dir: str, version: int, cpus: int) -> dict:
    """What the group's tasks can have, as the kernel sees it: "memory" (bytes: the least
    of the group's limit, its ancestors' limits and the memory the kernel manages,
    MemTotal), "swap" (bytes of swap it can use: SwapTotal, less where a memsw or swap
    limit above it leaves less), "cpus", and where the memory figure came from
    ("memory_limit", "memory_total").

    cgroup v1 prints the least limit of the group and its ancestors itself, as memory.stat
    hierarchical_memory_limit and hierarchical_memsw_limit (mm/memcontrol-v1.c:
    memcg1_stat_format); hierarchical_memsw_limit is there only with swap accounting."""
    info = meminfo()
    total, swap_total = info.get("MemTotal", 0), info.get("SwapTotal", 0)
    if version == 1:
        stat = files.read_quiet(os.path.join(group_dir, "memory.stat"))
        vals = dict(line.split(" ", 1) for line in stat.splitlines() if " " in line)
        limit = int(vals["hierarchical_memory_limit"]) if "hierarchical_memory_limit" in vals else None
        memsw = int(vals["hierarchical_memsw_limit"]) if "hierarchical_memsw_limit" in vals else None
        swap_limit = None if memsw is None or limit is None else max(0, memsw - limit)
    else:
        limit = _v2_limit_above(group_dir, "memory.max")
        swap_limit = _v2_limit_above(group_dir, "memory.swap.max")
    memory = min(limit, total) if limit is not None and total else (limit or total)
    swap = swap_total if swap_limit is None else min(swap_total, swap_limit)
    return {"memory": memory, "swap": swap, "cpus": cpus,
            "memory_limit": limit, "memory_total": total}
