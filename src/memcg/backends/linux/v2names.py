"""The cgroup files a scenario names, on cgroup v1 as they are and on v2 through V2_MAP.

Scenarios are written with the v1 names and texts.  Where only a cgroup v2 memory
controller is available, each v1 name maps to the v2 file that holds the same figure
and the text is converted both ways; a name without an equivalent raises
OSError(EOPNOTSUPP) saying what is missing.
"""

from __future__ import annotations

import errno
import os

from ... import parse
from . import files

UNLIMITED = "9223372036854771712"   # PAGE_COUNTER_MAX * PAGE_SIZE, how v1 prints "no limit"

# v1 file -> (v2 file, how) or None with the reason there is no equivalent.
#   "same": the same text both ways; "limit": "-1" <-> "max"; "stat:KEY": one value of
#   memory.stat; "events:KEY": one value of memory.events; the rest are built by V2Files.
V2_MAP: dict[str, tuple[str, str] | str] = {
    "cgroup.procs": ("cgroup.procs", "same"),
    "tasks": ("cgroup.threads", "same"),
    "memory.limit_in_bytes": ("memory.max", "limit"),
    "memory.usage_in_bytes": ("memory.current", "same"),
    "memory.max_usage_in_bytes": ("memory.peak", "same"),
    "memory.failcnt": ("memory.events", "events:max"),
    "memory.stat": ("memory.stat", "stat"),
    "memory.oom_control": ("memory.events", "oom_control"),
    "memory.memsw.usage_in_bytes": ("memory.current", "memsw"),
    "memory.kmem.usage_in_bytes": ("memory.stat", "stat:kernel"),
    "memory.kmem.tcp.usage_in_bytes": ("memory.stat", "stat:sock"),
    "memory.force_empty": ("memory.reclaim", "force_empty"),
    "memory.use_hierarchy": ("", "use_hierarchy"),
    "memory.numa_stat": ("memory.numa_stat", "same"),
    "memory.soft_limit_in_bytes": "v2 has no soft limit (memory.low protects, it does not limit)",
    "memory.memsw.limit_in_bytes": "v2 limits swap alone (memory.swap.max), not memory+swap",
    "memory.memsw.max_usage_in_bytes": "v2 has no memory+swap high-water mark",
    "memory.memsw.failcnt": "v2 has no memory+swap failure counter",
    "memory.kmem.limit_in_bytes": "v2 has no separate kernel memory limit",
    "memory.kmem.max_usage_in_bytes": "v2 has no kernel memory high-water mark",
    "memory.kmem.failcnt": "v2 has no kernel memory failure counter",
    "memory.kmem.tcp.limit_in_bytes": "v2 has no TCP buffer limit (socket memory counts in memory.max)",
    "memory.kmem.tcp.max_usage_in_bytes": "v2 has no TCP buffer high-water mark",
    "memory.kmem.tcp.failcnt": "v2 has no TCP buffer failure counter",
    "memory.kmem.slabinfo": "v2 has no per-group slabinfo",
    "memory.shown_ram_in_bytes": "this kernel's own v1 extension has no v2 counterpart",
    "memory.swappiness": "v2 has no per-group swappiness",
    "memory.move_charge_at_immigrate": "v2 never moves charges",
    "memory.pressure_level": "v2 has no vmpressure events (PSI memory.pressure triggers instead)",
    "cgroup.event_control": "v2 has no cgroup.event_control (memory.events is polled instead)",
    "cgroup.clone_children": "v2 has no cgroup.clone_children",
    "notify_on_release": "v2 has no notify_on_release (cgroup.events populated instead)",
}
# v1 memory.stat key <- v2 memory.stat key (both in bytes, or both counts)
V2_STAT_KEYS = {
    "cache": "file", "rss": "anon", "rss_huge": "anon_thp", "shmem": "shmem",
    "mapped_file": "file_mapped", "dirty": "file_dirty", "writeback": "file_writeback",
    "pgfault": "pgfault", "pgmajfault": "pgmajfault",
    "inactive_anon": "inactive_anon", "active_anon": "active_anon",
    "inactive_file": "inactive_file", "active_file": "active_file",
    "unevictable": "unevictable", "workingset_refault_anon": "workingset_refault_anon",
    "workingset_refault_file": "workingset_refault_file",
    "workingset_activate_anon": "workingset_activate_anon",
    "workingset_activate_file": "workingset_activate_file",
    "workingset_restore_anon": "workingset_restore_anon",
    "workingset_restore_file": "workingset_restore_file",
}


def _not_in_v2(name: str, why: str) -> OSError:
    return OSError(errno.EOPNOTSUPP, f"{name}: no cgroup v2 equivalent: {why}")


class V1Files:
    """cgroup v1 files: names and texts are the kernel's own."""

    version = 1

    def read(self, gdir: str, name: str) -> str:
        return files.read_file(os.path.join(gdir, name))

    def write(self, gdir: str, name: str, text: str) -> None:
        files.write_file(os.path.join(gdir, name), text)

    def procs_file(self) -> str:
        return "cgroup.procs"

    def event_names(self, name: str) -> str:
        return name

    def setup_root(self, root: str, memory: str | None) -> None:
        if memory is not None:
            self.write(root, "memory.limit_in_bytes", str(memory))

    def limit_swap(self, root: str, memory: int, swap: int) -> None:
        """Let the root's groups swap out at most `swap` bytes: memory + swap is its memsw
        limit (mm/memcontrol-v1.c: mem_cgroup_get_nr_swap_pages() is the memsw margin, so
        get_scan_count() scans no anon once it is used).  Without swap accounting there
        is no memsw file and nothing to limit."""
        if os.path.exists(os.path.join(root, "memory.memsw.limit_in_bytes")):
            self.write(root, "memory.memsw.limit_in_bytes", str(memory + swap))

    def before_child(self, gdir: str) -> None:
        pass

class V2Files(V1Files):
    """cgroup v2 files behind the v1 names a scenario uses (V2_MAP).

    memory.stat has the same name on both versions: with v2_stat it is the kernel's own
    text (v2 keys, for a v2 scenario), else its lines under their v1 keys (V2_STAT_KEYS).
    """

    version = 2

    def __init__(self, v2_stat: bool = False):
        self.v2_stat = v2_stat

    def _target(self, name: str) -> tuple[str, str]:
        entry = V2_MAP.get(name)
        if isinstance(entry, str):
            raise _not_in_v2(name, entry)
        return entry if entry is not None else (name, "same")   # v2 names pass through

    def read(self, gdir: str, name: str) -> str:
        v2, how = self._target(name)
        if how == "use_hierarchy":
            return "1\n"
        text = files.read_file(os.path.join(gdir, v2))
        if how == "same":
            return text
        if how == "limit":
            return UNLIMITED + "\n" if text.strip() == "max" else text
        if how.startswith("events:") or how.startswith("stat:"):
            return f"{parse.parse_stat(text).get(how.split(':', 1)[1], 0)}\n"
        if how == "oom_control":
            return f"oom_kill_disable 0\nunder_oom 0\noom_kill {parse.parse_stat(text).get('oom_kill', 0)}\n"
        if how == "memsw":
            swap = files.read_quiet(os.path.join(gdir, "memory.swap.current")).strip() or "0"
            return f"{int(text) + int(swap)}\n"
        if how == "stat" and self.v2_stat:
            return text
        if how == "stat":
            v2stat = parse.parse_stat(text)
            lines = [f"{k1} {v2stat[k2]}" for k1, k2 in V2_STAT_KEYS.items() if k2 in v2stat]
            swap = files.read_quiet(os.path.join(gdir, "memory.swap.current")).strip()
            if swap.isdigit():
                lines.append(f"swap {swap}")
            return "\n".join(lines) + "\n"
        raise OSError(errno.EINVAL, f"{name}: not readable")

    def write(self, gdir: str, name: str, text: str) -> None:
        v2, how = self._target(name)
        if how == "same":
            files.write_file(os.path.join(gdir, v2), text)
        elif how == "limit":
            value = text.split("\0", 1)[0].strip()
            files.write_file(os.path.join(gdir, v2), "max" if value == "-1" else text)
        elif how == "force_empty":
            # v1 force_empty reclaims everything it can; v2 memory.reclaim takes an amount.
            current = files.read_file(os.path.join(gdir, "memory.current")).strip()
            if int(current) > 0:
                try:
                    files.write_file(os.path.join(gdir, v2), current)
                except OSError as e:
                    if e.errno != errno.EAGAIN:   # "could not reclaim all of it" is fine
                        raise
        elif how == "use_hierarchy":
            if text.strip() != "1":
                raise OSError(errno.EINVAL, "v2 is always hierarchical")
        else:
            raise _not_in_v2(name, "read-only in v2" if how else "")

    def procs_file(self) -> str:
        return "cgroup.procs"

    def event_names(self, name: str) -> str:
        raise _not_in_v2(name, V2_MAP["cgroup.event_control"])  # type: ignore[arg-type]

    def setup_root(self, root: str, memory: str | None) -> None:
        if memory is not None:
            self.write(root, "memory.limit_in_bytes", str(memory))

    def limit_swap(self, root: str, memory: int, swap: int) -> None:
        """memory.swap.max of the root (v2 limits swap on its own counter)."""
        if os.path.exists(os.path.join(root, "memory.swap.max")):
            files.write_file(os.path.join(root, "memory.swap.max"), str(swap))

    def before_child(self, gdir: str) -> None:
        """Children of a v2 group get memory files only if its subtree_control says so."""
        if "memory" not in files.read_quiet(os.path.join(gdir, "cgroup.subtree_control")).split():
            files.write_file(os.path.join(gdir, "cgroup.subtree_control"), "+memory")

