"""The cgroup v1 memory controller's files: the only place that parses and prints.

File names, read formats, write parsing and errno values follow Linux 6.18
(mm/memcontrol-v1.c: mem_cgroup_legacy_files[], kernel/cgroup/cgroup-v1.c, fs/kernfs)
and were checked against the real kernel (tests/data/kernel_v1_table.json).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Callable

from .. import cgroup, parse
from ..mm import memcontrol, memcontrol_v1, mempressure, slab
from ..net import sock
from ..kernel import PAGE_SIZE
from ..mm.memcontrol import (MEMCG_OOM_KILL, MEMCG_SWAP, NR_ANON_MAPPED, NR_ANON_THPS, NR_FILE_DIRTY,
                         NR_FILE_MAPPED, NR_FILE_PAGES, NR_LRU_BASE, NR_SHMEM, NR_SWAPCACHE,
                         NR_WRITEBACK, PGFAULT, PGMAJFAULT, PGPGIN, PGPGOUT,
                         WORKINGSET_REFAULT_ANON, WORKINGSET_REFAULT_FILE, MemCgroup,
                         mem_cgroup_resize_max, mem_cgroup_usage)
from ..mm.mmzone import (LRU_ACTIVE_ANON, LRU_ACTIVE_FILE, LRU_INACTIVE_ANON, LRU_INACTIVE_FILE,
                     LRU_NAMES, LRU_UNEVICTABLE, NR_LRU_LISTS)
from ..mm.page_counter import PAGE_COUNTER_MAX, page_counter_memparse

# include/linux/kernfs.h / fs/kernfs/file.c: a write is at most one page
MAX_WRITE = PAGE_SIZE
# mm/memcontrol-v1.c: MAX_SWAPPINESS since 2024 (memcg file cap 200)
MAX_SWAPPINESS = 200


def einval() -> OSError:
    return OSError(errno.EINVAL, "Invalid argument")


# --- file table ------------------------------------------------------------------------

@dataclass(frozen=True)
class CFType:
    """struct cftype: a file name with its read and write handlers."""

    name: str
    read: Callable | None = None  # (kernel, memcg) -> str
    write: Callable | None = None  # (kernel, memcg, text) -> None
    only_root: bool = False
    semantics: str | None = None  # the file exists only under these rules ("3.8")


def _pages(n: int) -> str:
    return f"{n * PAGE_SIZE}\n"


def _counter(attr: str, field: str):
    def read(k, memcg):
        return _pages(getattr(getattr(memcg, attr), field))
    return read


def _usage(swap: bool):
    def read(k, memcg):
        return _pages(mem_cgroup_usage(k.sys, memcg, swap))
    return read


def _reset(attr: str, field: str):
    """mem_cgroup_reset(): any write resets max_usage to usage, or failcnt to 0."""
    def write(k, memcg, text):
        counter = getattr(memcg, attr)
        if field == "watermark":
            counter.reset_watermark()
        else:
            counter.failcnt = 0
    return write


def _limit(kind: str):
    """mem_cgroup_write() RES_LIMIT / RES_SOFT_LIMIT: parse, then the per-type rules."""
    def write(k, memcg, text):
        # mem_cgroup_write(): strstrip() the buffer, then page_counter_memparse()
        nr_pages = page_counter_memparse(text.strip(" \t\n\v\f\r"), "-1")
        if kind == "soft":
            memcg.soft_limit = nr_pages
            return
        if memcg.is_root():
            raise einval()  # Can't set limit on root
        if kind == "memory":
            mem_cgroup_resize_max(k.sys, memcg, nr_pages, memsw=False)
        elif kind == "memsw":
            mem_cgroup_resize_max(k.sys, memcg, nr_pages, memsw=True)
        elif kind == "kmem":
            if k.sys.semantics == "3.8":
                memcontrol.memcg_activate_kmem(k.sys, memcg, nr_pages)  # memcg_update_kmem_limit
            # 6.x: kmem.limit_in_bytes is deprecated; writing it has no effect
        elif kind == "tcp":
            # memcg_update_tcp_max(): EBUSY below usage; the first write starts accounting
            if sock.memcg_update_tcp_max(k.sys, memcg, nr_pages):
                raise OSError(errno.EBUSY, "Device or resource busy")
    return write


def _tcp_usage(k, memcg: MemCgroup) -> str:
    """memory.kmem.tcp.usage_in_bytes: the group's tcpmem counter (at the root, the sum
    of the accounting groups); 3.8's root has no cg_proto and shows the machine's
    tcp_memory_allocated (tcp_read_usage())."""
    if k.sys.semantics == "3.8" and memcg.is_root():
        return _pages(k.sys.net.tcp_prot.memory_allocated)
    return _pages(memcg.tcpmem.usage)


def _read_stat(k, memcg: MemCgroup) -> str:
    """memcg1_stat_format(): local values, limits, then total_* over the subtree."""
    sys = k.sys
    memcontrol.mem_cgroup_flush_stats(sys, memcg)  # memcg1_stat_format() flushes first
    out = []

    def state(item, hier):
        a = sys.stats.a
        if not hier:
            return int(a[memcg.id, item])
        ids = [m.id for m in memcg.subtree()]
        total = int(a[ids, item].sum())
        d = sys.dead_stats.a
        total += int(d[[i for i in ids if i < len(d)], item].sum())
        return total

    stats = ((("cache", NR_FILE_PAGES), ("rss", NR_ANON_MAPPED), ("rss_huge", NR_ANON_THPS),
              ("shmem", NR_SHMEM), ("mapped_file", NR_FILE_MAPPED), ("dirty", NR_FILE_DIRTY),
              ("writeback", NR_WRITEBACK)),
             (("workingset_refault_anon", WORKINGSET_REFAULT_ANON),
              ("workingset_refault_file", WORKINGSET_REFAULT_FILE)),
             (("swap", MEMCG_SWAP), ("swapcached", NR_SWAPCACHE)))
    events = (("pgpgin", PGPGIN), ("pgpgout", PGPGOUT), ("pgfault", PGFAULT),
              ("pgmajfault", PGMAJFAULT))

    def block(prefix, hier):
        # memcg_page_state_output_unit(): workingset counts are events, the rest pages
        for group_no, group in enumerate(stats):
            unit = 1 if group_no == 1 else PAGE_SIZE
            for name, item in group:
                out.append(f"{prefix}{name} {state(item, hier) * unit}")
        for name, item in events:
            out.append(f"{prefix}{name} {state(item, hier)}")
        for lru in range(NR_LRU_LISTS):
            out.append(f"{prefix}{LRU_NAMES[lru]} {state(NR_LRU_BASE + lru, hier) * PAGE_SIZE}")

    block("", False)
    memory = memsw = PAGE_COUNTER_MAX
    for m in memcg.ancestors():
        memory = min(memory, m.memory.max)
        memsw = min(memsw, m.memsw.max)
    out.append(f"hierarchical_memory_limit {memory * PAGE_SIZE}")
    out.append(f"hierarchical_memsw_limit {memsw * PAGE_SIZE}")
    block("total_", True)
    return "\n".join(out) + "\n"


def _read_numa_stat(k, memcg: MemCgroup) -> str:
    """memcg_numa_stat_show(): page counts per LRU mask, one node (N0)."""
    sys = k.sys
    masks = (("total", range(NR_LRU_LISTS)),
             ("file", (LRU_INACTIVE_FILE, LRU_ACTIVE_FILE)),
             ("anon", (LRU_INACTIVE_ANON, LRU_ACTIVE_ANON)),
             ("unevictable", (LRU_UNEVICTABLE,)))
    out = []
    for prefix, hier in (("", False), ("hierarchical_", True)):
        ids = [m.id for m in memcg.subtree()] if hier else [memcg.id]
        for name, lrus in masks:
            n = int(sum(sys.stats.a[ids, NR_LRU_BASE + lru].sum() for lru in lrus))
            out.append(f"{prefix}{name}={n} N0={n}")
    return "\n".join(out) + "\n"


def _read_oom_control(k, memcg: MemCgroup) -> str:
    """mem_cgroup_oom_control_read()."""
    oom_kill = memcg.memory_events[MEMCG_OOM_KILL]
    return (f"oom_kill_disable {memcg.oom_kill_disable}\n"
            f"under_oom {1 if memcg.under_oom else 0}\noom_kill {oom_kill}\n")


def _write_u64(fn):
    """cgroup_file_write() for a write_u64 handler: kstrtoull on the raw buffer."""
    def write(k, memcg, text):
        fn(k, memcg, parse.kstrtoull(text))
    return write


def _swappiness(k, memcg, val):
    """mem_cgroup_swappiness_write(): 0..MAX_SWAPPINESS; the root sets vm_swappiness."""
    if val > MAX_SWAPPINESS:
        raise einval()
    memcg.swappiness = val


def _use_hierarchy(k, memcg, val):
    """mem_cgroup_hierarchy_write() (5.11+): only 1 is accepted."""
    if val != 1:
        raise einval()


def _move_charge(k, memcg, val):
    """mem_cgroup_move_charge_write(): charge moving was removed; only 0 is accepted."""
    if val != 0:
        raise einval()


def _oom_control(k, memcg, val):
    memcontrol_v1.mem_cgroup_oom_control_write(k.sys, memcg, val)


def _force_empty(k, memcg, text):
    memcontrol_v1.mem_cgroup_force_empty(k.sys, memcg)


def _flag(attr):
    """kernel/cgroup/cgroup-v1.c: notify_on_release and cgroup.clone_children, bits of
    cgrp->flags.  Kept per group object, not per memcg id: a removed group's id is
    handed to the next mkdir (mm/memcontrol.c: mem_cgroup_alloc, xa_alloc of
    mem_cgroup_ids), its flags are not."""
    def read(k, memcg):
        return f"{k.flags.get((memcg, attr), 0)}\n"

    def write(k, memcg, val):
        k.flags[(memcg, attr)] = 1 if val else 0
    return read, _write_u64(write)


def writer_is_not_a_task() -> OSError:
    """A write of pid 0 to cgroup.procs or tasks.

    The kernel moves the writing task itself (kernel/cgroup/cgroup-v1.c:
    __cgroup1_procs_write and kernel/cgroup/cgroup.c: cgroup_procs_write_start, "if (pid)
    ... else tsk = current").  Through the Kernel interface the writer is the program that
    calls k.write(), which is no task of the kernel object and may not be moved: both
    backends refuse with EPERM, as for any process the kernel object did not start."""
    return PermissionError(errno.EPERM, "pid 0 is the writing process, not a task of this kernel")


def _procs(threads: bool):
    def read(k, memcg):
        return "".join(f"{t.pid}\n" for t in sorted(memcg.tasks, key=lambda t: t.pid))

    def write(k, memcg, text):
        """__cgroup1_procs_write(): kstrtoint(strstrip(buf)); negative EINVAL; unknown ESRCH."""
        try:
            pid = parse.kstrtoint(text.strip(" \t\n\v\f\r"))
        except OSError:
            raise einval() from None
        if pid < 0:
            raise einval()
        if pid == 0:
            raise writer_is_not_a_task()
        task = k.sys.tasks.get(pid)
        if task is None or task.state in ("exited", "oom_killed"):
            raise OSError(errno.ESRCH, "No such process")
        cgroup.cgroup_attach_task(k.sys, task, memcg)
    return read, write


def _event_control(k, memcg, text):
    """memcg_write_event_control(): "<event_fd> <control_fd> <args>".

    The writer is a process with only its standard descriptors open: an event_fd of 0-2
    is an open file that is not an eventfd (eventfd_ctx_fileget(): EINVAL), any other
    names nothing (fdget(): EBADF).  Register events with Kernel.event().
    """
    buf = text.strip(" \t\n\v\f\r")
    _efd, rest = parse.simple_strtoul(buf)
    if not rest.startswith(" "):
        raise einval()
    _cfd, rest = parse.simple_strtoul(rest[1:])
    if rest and not rest.startswith(" "):
        raise einval()
    if _efd in (0, 1, 2):  # stdin, stdout, stderr: open in every process
        raise einval()
    raise OSError(errno.EBADF, "Bad file descriptor")


def _shrinker_write(k, memcg, text):
    """mempressure.shrinker: "<eventfd> <N>" - two fields, an fd and a signed chunk count.

    Anything else is EINVAL; an eventfd not registered on this group is EBADF.
    """
    fields = text.split()
    if len(fields) != 2:
        raise einval()
    try:
        efd = parse.kstrtoint(fields[0])
        delta = parse.kstrtoint(fields[1])
    except OSError:
        raise einval() from None
    mempressure.shrinker_report(k.sys, memcg, efd, delta)


def _pressure_level_read(k, memcg):
    """mem_cgroup_dummy_seq_show(): readable only so events can be registered."""
    raise einval()


def _slabinfo(k, memcg):
    """memcg_slab_show(): the group's own slab caches in /proc/slabinfo format (3.8 rules);
    per-memcg caches are gone since 5.9, and today's kernel prints nothing."""
    if k.sys.semantics != "3.8":
        return ""
    if not memcg.kmem_active:
        raise OSError(errno.EIO, "Input/output error")  # !memcg_can_account_kmem()
    out = ["slabinfo - version: 2.1",
           "# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab>"
           " : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs>"
           " <sharedavail>"]
    for name, active, objs, size, per_slab, pages, slabs in slab.slabinfo_rows(memcg):
        # mm/slab_common.c: cache_show() (SLUB: no tunables)
        out.append(f"{name:<17} {active:6} {objs:6} {size:6} {per_slab:4} {pages:4}"
                   f" : tunables {0:4} {0:4} {0:4} : slabdata {slabs:6} {slabs:6} {0:6}")
    return "\n".join(out) + "\n"


def _independent_kmem_limit(k, memcg, val):
    """memory.independent_kmem_limit (the 2011 proposal, under the 3.8 rules): 0 keeps kernel
    memory in the user usage and ignores the kmem limit; 1 limits and reports it on its own.

    Like the proposal: any non-zero value is 1, and a group with children refuses (EBUSY).
    The model also refuses while kmem is charged, which would be in the wrong counters.
    """
    if memcg.online_children or memcg.kmem.usage:
        raise OSError(errno.EBUSY, "Device or resource busy")
    memcg.kmem_independent = 1 if val else 0


_procs_read, _procs_write = _procs(False)
_tasks_read, _tasks_write = _procs(True)
_clone_read, _clone_write = _flag("clone_children")
_notify_read, _notify_write = _flag("notify_on_release")

# In `ls` order of a v1 memory cgroup directory on 6.18.
FILES = [
    CFType("cgroup.clone_children", _clone_read, _clone_write),
    CFType("cgroup.event_control", None, _event_control),
    CFType("cgroup.procs", _procs_read, _procs_write),
    CFType("cgroup.sane_behavior", lambda k, m: "0\n", None, only_root=True),
    CFType("memory.failcnt", lambda k, m: f"{m.memory.failcnt}\n", _reset("memory", "failcnt")),
    CFType("memory.force_empty", None, _force_empty),
    CFType("memory.independent_kmem_limit", lambda k, m: f"{m.kmem_independent or 0}\n",
           _write_u64(_independent_kmem_limit), semantics="3.8"),
    CFType("memory.kmem.failcnt", lambda k, m: f"{m.kmem.failcnt}\n", _reset("kmem", "failcnt")),
    CFType("memory.kmem.limit_in_bytes", _counter("kmem", "max"), _limit("kmem")),
    CFType("memory.kmem.max_usage_in_bytes", _counter("kmem", "watermark"),
           _reset("kmem", "watermark")),
    CFType("memory.kmem.slabinfo", _slabinfo, None),
    CFType("memory.kmem.tcp.failcnt", lambda k, m: f"{m.tcpmem.failcnt}\n",
           _reset("tcpmem", "failcnt")),
    CFType("memory.kmem.tcp.limit_in_bytes", _counter("tcpmem", "max"), _limit("tcp")),
    CFType("memory.kmem.tcp.max_usage_in_bytes", _counter("tcpmem", "watermark"),
           _reset("tcpmem", "watermark")),
    CFType("memory.kmem.tcp.usage_in_bytes", lambda k, m: _tcp_usage(k, m), None),
    CFType("memory.kmem.usage_in_bytes", _counter("kmem", "usage"), None),
    CFType("memory.limit_in_bytes", _counter("memory", "max"), _limit("memory")),
    CFType("memory.max_usage_in_bytes", _counter("memory", "watermark"),
           _reset("memory", "watermark")),
    CFType("memory.memsw.failcnt", lambda k, m: f"{m.memsw.failcnt}\n", _reset("memsw", "failcnt")),
    CFType("memory.memsw.limit_in_bytes", _counter("memsw", "max"), _limit("memsw")),
    CFType("memory.memsw.max_usage_in_bytes", _counter("memsw", "watermark"),
           _reset("memsw", "watermark")),
    CFType("memory.memsw.usage_in_bytes", _usage(True), None),
    CFType("memory.move_charge_at_immigrate", lambda k, m: "0\n", _write_u64(_move_charge)),
    CFType("memory.numa_stat", _read_numa_stat, None),
    CFType("memory.oom_control", _read_oom_control, _write_u64(_oom_control)),
    CFType("memory.pressure_level", _pressure_level_read, None),
    CFType("memory.soft_limit_in_bytes", lambda k, m: _pages(m.soft_limit), _limit("soft")),
    CFType("memory.stat", _read_stat, None),
    CFType("memory.swappiness", lambda k, m: f"{m.swappiness}\n", _write_u64(_swappiness)),
    CFType("memory.usage_in_bytes", _usage(False), None),
    CFType("memory.use_hierarchy", lambda k, m: "1\n", _write_u64(_use_hierarchy)),
    # memcg's own: the userspace shrinker of the 2013 mempressure proposal (mempressure.py)
    CFType("mempressure.shrinker", None, _shrinker_write),
    CFType("notify_on_release", _notify_read, _notify_write),
    CFType("release_agent", lambda k, m: "\n", lambda k, m, t: None, only_root=True),
    CFType("tasks", _tasks_read, _tasks_write),
]
BY_NAME = {cft.name: cft for cft in FILES}
# cgroup.event_control accepts these control files (memcg_write_event_control)
EVENT_FILES = ("memory.usage_in_bytes", "memory.oom_control", "memory.pressure_level",
               "memory.memsw.usage_in_bytes", "mempressure.shrinker")


def files_of(memcg: MemCgroup, semantics: str = "6.18") -> list[str]:
    """The file names in memcg's directory (under the given era's rules)."""
    return [c.name for c in FILES if (not c.only_root or memcg.is_root())
            and c.semantics in (None, semantics)]


def lookup(memcg: MemCgroup, name: str, semantics: str = "6.18") -> CFType:
    cft = BY_NAME.get(name)
    if (cft is None or (cft.only_root and not memcg.is_root())
            or cft.semantics not in (None, semantics)):
        raise FileNotFoundError(errno.ENOENT, f"No such file or directory: {name}")
    return cft


def read_file(k, memcg: MemCgroup, name: str) -> str:
    """read(2) of a cgroup file: a write-only file gives EINVAL."""
    cft = lookup(memcg, name, getattr(k, "semantics", "6.18"))
    if cft.read is None:
        raise einval()
    return cft.read(k, memcg)


def write_file(k, memcg: MemCgroup, name: str, text: str) -> None:
    """write(2) of a cgroup file, with kernfs's rules around the handler.

    An empty write does nothing; more than a page is E2BIG; the buffer is a C string
    (it ends at the first NUL); a read-only file gives EINVAL.
    """
    cft = lookup(memcg, name, getattr(k, "semantics", "6.18"))
    if len(text.encode()) > MAX_WRITE:
        raise OSError(errno.E2BIG, "Argument list too long")
    if not text:
        return
    if cft.write is None:
        raise einval()
    text = text.split("\0", 1)[0]
    cft.write(k, memcg, text)
