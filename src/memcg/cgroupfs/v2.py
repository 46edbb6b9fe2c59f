"""The cgroup v2 memory controller's files: the only place that parses and prints them.

File names, read formats, write parsing and errno values follow Linux 6.18
(mm/memcontrol.c: memory_files[] and swap_files[], kernel/cgroup/cgroup.c:
cgroup_base_files[], Documentation/admin-guide/cgroup-v2.rst).  The module has the same
surface as cgroupfs.v1 (files_of, lookup, read_file, write_file, EVENT_FILES, MAX_WRITE)
so that the backend picks one by the hierarchy; files_of and lookup also take the
machine, whose cgroup state decides which files a group shows.

The model's kernel configuration: CONFIG_SWAP, CONFIG_TRANSPARENT_HUGEPAGE, CONFIG_NUMA
(one node), CONFIG_MEMCG_V1; no CONFIG_ZSWAP (no memory.zswap.* files or zswap lines),
no CONFIG_NUMA_BALANCING, no hugetlb accounting (the memory_hugetlb_accounting mount
option).  Only the memory controller exists; of the cgroup core's files, those of
freezing, threads' domains and the cpu and io controllers are not modelled.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass
from typing import Callable

from .. import cgroup, parse, psi
from ..kernel import PAGE_SIZE
from ..mm import memcontrol
from ..mm.memcontrol import (MEMCG_HIGH, MEMCG_LOW, MEMCG_MAX, MEMCG_OOM, MEMCG_OOM_GROUP_KILL,
                             MEMCG_OOM_KILL, MEMCG_SOCK_THROTTLED, MEMCG_SWAP_FAIL,
                             MEMCG_SWAP_HIGH, MEMCG_SWAP_MAX, MEMCG_PERCPU_B, NR_ANON_MAPPED,
                             NR_ANON_THPS, NR_FILE_DIRTY, NR_FILE_MAPPED, NR_FILE_PAGES,
                             NR_KERNEL_STACK_KB, NR_LRU_BASE, NR_PAGETABLE, NR_SHMEM,
                             NR_SLAB_RECLAIMABLE_B, NR_SLAB_UNRECLAIMABLE_B, NR_SWAPCACHE,
                             NR_WRITEBACK, PGACTIVATE, PGDEACTIVATE, PGFAULT,
                             PGMAJFAULT, PGREFILL, PGSCAN, PGSTEAL, WORKINGSET_ACTIVATE_ANON,
                             WORKINGSET_ACTIVATE_FILE, WORKINGSET_REFAULT_ANON,
                             WORKINGSET_REFAULT_FILE, MemCgroup)
from ..mm.mmzone import NR_LRU_LISTS
from ..mm.page_counter import PAGE_COUNTER_MAX, page_counter_memparse
from ..net import sock
from ..mm.vmscan import MAX_SWAPPINESS, MIN_SWAPPINESS, SWAPPINESS_ANON_ONLY
from .v1 import MAX_WRITE, einval, writer_is_not_a_task

__all__ = ["EVENT_FILES", "FILES", "MAX_WRITE", "files_of", "lookup", "read_file", "write_file"]

WHITESPACE = " \t\n\v\f\r"  # lib/string.c: strstrip() (isspace)


@dataclass(frozen=True)
class CFType:
    """struct cftype of the default hierarchy: a file name with its handlers.

    subsys: the controller whose css the file belongs to ("memory": shown only where the
    parent enables memory, and always at the root), or None for the cgroup core's files.
    not_on_root: CFTYPE_NOT_ON_ROOT; only_root: CFTYPE_ONLY_ON_ROOT.
    """

    name: str
    read: Callable | None = None  # (kernel, memcg) -> str
    write: Callable | None = None  # (kernel, memcg, text) -> None
    subsys: str | None = None
    not_on_root: bool = False
    only_root: bool = False


def _strstrip(text: str) -> str:
    return text.strip(WHITESPACE)


# --- the cgroup core (kernel/cgroup/cgroup.c) ------------------------------------------------

def _print_ss_mask(mask) -> str:
    """cgroup_print_ss_mask(): names separated by spaces and a newline; nothing if empty."""
    names = [ss for ss in cgroup.CGROUP_SUBSYS if ss in mask]
    return " ".join(names) + "\n" if names else ""


def _controllers(k, memcg: MemCgroup) -> str:
    """cgroup_controllers_show(): what the parent enables for this group (cgroup_control)."""
    return _print_ss_mask(cgroup.cgroup_control(k.sys, memcg))


def _subtree_control(k, memcg: MemCgroup) -> str:
    return _print_ss_mask(cgroup.cgrp(k.sys, memcg).subtree_control)


def _subtree_control_write(k, memcg: MemCgroup, text: str) -> None:
    cgroup.cgroup_subtree_control_write(k.sys, memcg, text)


def _procs(k, memcg: MemCgroup) -> str:
    """cgroup_procs_show(): the group's own processes (not its descendants')."""
    return "".join(f"{t.pid}\n" for t in sorted(memcg.tasks, key=lambda t: t.pid))


def _task_of(k, text: str):
    """cgroup_procs_write_start(): kstrtoint(strstrip(buf)); negative EINVAL; unknown ESRCH."""
    pid = parse.kstrtoint(_strstrip(text))
    if pid < 0:
        raise einval()
    if pid == 0:
        raise writer_is_not_a_task()
    task = k.sys.tasks.get(pid)
    if task is None or task.state in ("exited", "oom_killed"):
        raise OSError(errno.ESRCH, "No such process")
    return task


def _procs_write(k, memcg: MemCgroup, text: str) -> None:
    """cgroup_procs_write(): move the process; the no-internal-process rule applies."""
    cgroup.cgroup_procs_write(k.sys, _task_of(k, text), memcg)


def _threads_write(k, memcg: MemCgroup, text: str) -> None:
    """cgroup_threads_write(): a thread may only move within its domain - every group of the
    model is a domain of its own, so a move to another group is EOPNOTSUPP."""
    task = _task_of(k, text)
    if task.cgroup is not memcg:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")


def _events(k, memcg: MemCgroup) -> str:
    """cgroup_events_show(): populated (a task here or below) and frozen (never)."""
    return f"populated {int(cgroup.cgroup_is_populated(k.sys, memcg))}\nfrozen 0\n"


def _kill_write(k, memcg: MemCgroup, text: str) -> None:
    """cgroup_kill_write(): only "1" (ERANGE for other numbers) kills the subtree."""
    if parse.kstrtoint(_strstrip(text)) != 1:
        raise OSError(errno.ERANGE, "Numerical result out of range")
    cgroup.cgroup_kill(k.sys, memcg)


def _type(k, memcg: MemCgroup) -> str:
    return "domain\n"


def _type_write(k, memcg: MemCgroup, text: str) -> None:
    """cgroup_type_write(): only "threaded" is accepted; the model has no threaded mode."""
    if _strstrip(text) != "threaded":
        raise einval()
    raise OSError(errno.EOPNOTSUPP, "Operation not supported")


def _limit(attr: str):
    """cgroup_max_depth_show/write and cgroup_max_descendants_show/write: "max" or a number."""
    def read(k, memcg):
        v = getattr(cgroup.cgrp(k.sys, memcg), attr)
        return "max\n" if v == cgroup.INT_MAX else f"{v}\n"

    def write(k, memcg, text):
        buf = _strstrip(text)
        if buf == "max":
            v = cgroup.INT_MAX
        else:
            v = parse.kstrtoint(buf)
            if v < 0:
                raise OSError(errno.ERANGE, "Numerical result out of range")
        setattr(cgroup.cgrp(k.sys, memcg), attr, v)
    return read, write


def _stat(k, memcg: MemCgroup) -> str:
    """cgroup_stat_show() (6.18): descendants, the memory css below and here, dying ones."""
    sys = k.sys
    live = [m for m in memcg.subtree() if m.online]
    nr_subsys = sum(1 for m in live if cgroup.cgroup_css_online(sys, m))
    dying = cgroup.cgroup_nr_dying_descendants(memcg)
    return (f"nr_descendants {cgroup.cgroup_nr_descendants(memcg)}\n"
            f"nr_subsys_memory {nr_subsys}\n"
            f"nr_dying_descendants {dying}\n"
            f"nr_dying_subsys_memory {dying}\n")


# --- memory_files[] and swap_files[] (mm/memcontrol.c) ---------------------------------------

def _tunable(pages: int) -> str:
    """seq_puts_memcg_tunable(): "max" or bytes."""
    return "max\n" if pages == PAGE_COUNTER_MAX else f"{pages * PAGE_SIZE}\n"


def _memparse(text: str) -> int:
    """strstrip() then page_counter_memparse(buf, "max")."""
    return page_counter_memparse(_strstrip(text), "max")


def _current(k, memcg: MemCgroup) -> str:
    """memory_current_read(): page_counter_read(&memcg->memory) in bytes."""
    return f"{memcg.memory.usage * PAGE_SIZE}\n"


def _peak(attr: str):
    """peak_show() / peak_write() (6.12+): a read on a fresh file shows the watermark; a
    write sets the counter's local_watermark and the writer's own file's peak, which only
    a later read on that same open file would show (the Kernel interface opens a file per
    call, so every read shows the group's watermark)."""
    def read(k, memcg):
        return f"{getattr(memcg, attr).watermark * PAGE_SIZE}\n"

    def write(k, memcg, text):
        counter = getattr(memcg, attr)
        counter.local_watermark = counter.usage
    return read, write


def _knob(attr: str, field: str):
    def read(k, memcg):
        return _tunable(getattr(getattr(memcg, attr), field))
    return read


def _min_write(k, memcg: MemCgroup, text: str) -> None:
    """memory_min_write(): page_counter_set_min()."""
    memcg.memory.set_min(_memparse(text))


def _low_write(k, memcg: MemCgroup, text: str) -> None:
    """memory_low_write(): page_counter_set_low()."""
    memcg.memory.set_low(_memparse(text))


def _high_write(k, memcg: MemCgroup, text: str) -> None:
    memcontrol.memory_high_write(k.sys, memcg, _memparse(text))


def _max_write(k, memcg: MemCgroup, text: str) -> None:
    memcontrol.memory_max_write(k.sys, memcg, _memparse(text))


def _events_show(events: list) -> str:
    """__memory_events_show() (6.18: with sock_throttled, 6.1 has no such line)."""
    return (f"low {events[MEMCG_LOW]}\nhigh {events[MEMCG_HIGH]}\nmax {events[MEMCG_MAX]}\n"
            f"oom {events[MEMCG_OOM]}\noom_kill {events[MEMCG_OOM_KILL]}\n"
            f"oom_group_kill {events[MEMCG_OOM_GROUP_KILL]}\n"
            f"sock_throttled {events[MEMCG_SOCK_THROTTLED]}\n")


def _memory_state(sys, memcg: MemCgroup, item: int) -> int:
    """memcg_page_state(): the subtree's figure, freed descendants' events included."""
    ids = [m.id for m in memcg.subtree()]
    total = int(sys.stats.a[ids, item].sum())
    d = sys.dead_stats.a
    total += int(d[[i for i in ids if i < len(d)], item].sum())
    return max(0, total)


# memory_stats[] (6.18) in order: (name, the model's item or a function of (sys, memcg) in
# pages, or None where the model does not keep the figure (printed as 0), output unit)
def _kernel_pages(sys, memcg):
    return memcg.kmem.usage  # MEMCG_KMEM: the group's charged kernel pages


def _sock_pages(sys, memcg):
    return sock.memcg_sock_pages(sys, memcg)  # MEMCG_SOCK


_LRU = {name: NR_LRU_BASE + i for i, name in enumerate(
    ("inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable"))}
assert len(_LRU) == NR_LRU_LISTS
MEMORY_STATS = [
    ("anon", NR_ANON_MAPPED, PAGE_SIZE),
    ("file", NR_FILE_PAGES, PAGE_SIZE),
    ("kernel", _kernel_pages, PAGE_SIZE),
    ("kernel_stack", NR_KERNEL_STACK_KB, 1024),
    ("pagetables", NR_PAGETABLE, PAGE_SIZE),
    ("sec_pagetables", None, PAGE_SIZE),
    ("percpu", MEMCG_PERCPU_B, 1),
    ("sock", _sock_pages, PAGE_SIZE),
    ("vmalloc", None, PAGE_SIZE),
    ("shmem", NR_SHMEM, PAGE_SIZE),
    ("file_mapped", NR_FILE_MAPPED, PAGE_SIZE),
    ("file_dirty", NR_FILE_DIRTY, PAGE_SIZE),
    ("file_writeback", NR_WRITEBACK, PAGE_SIZE),
    ("swapcached", NR_SWAPCACHE, PAGE_SIZE),
    ("anon_thp", NR_ANON_THPS, PAGE_SIZE),
    ("file_thp", None, PAGE_SIZE),
    ("shmem_thp", None, PAGE_SIZE),
    ("inactive_anon", _LRU["inactive_anon"], PAGE_SIZE),
    ("active_anon", _LRU["active_anon"], PAGE_SIZE),
    ("inactive_file", _LRU["inactive_file"], PAGE_SIZE),
    ("active_file", _LRU["active_file"], PAGE_SIZE),
    ("unevictable", _LRU["unevictable"], PAGE_SIZE),
    ("slab_reclaimable", NR_SLAB_RECLAIMABLE_B, 1),
    ("slab_unreclaimable", NR_SLAB_UNRECLAIMABLE_B, 1),
    # the memory events (counts, not pages: memcg_page_state_output_unit)
    ("workingset_refault_anon", WORKINGSET_REFAULT_ANON, 1),
    ("workingset_refault_file", WORKINGSET_REFAULT_FILE, 1),
    ("workingset_activate_anon", WORKINGSET_ACTIVATE_ANON, 1),
    ("workingset_activate_file", WORKINGSET_ACTIVATE_FILE, 1),
    ("workingset_restore_anon", None, 1),
    ("workingset_restore_file", None, 1),
    ("workingset_nodereclaim", None, 1),
    ("pgdemote_kswapd", None, 1),
    ("pgdemote_direct", None, 1),
    ("pgdemote_khugepaged", None, 1),
    ("pgdemote_proactive", None, 1),
]
# memory_stats[] entries that are node statistics (idx < NR_VM_NODE_STAT_ITEMS): the
# lines of memory.numa_stat
NUMA_STATS = [name for name, _, _ in MEMORY_STATS
              if name not in ("kernel", "percpu", "sock", "vmalloc") and not name.startswith("pgdemote")]
# memcg_vm_event_stat[] (6.18; PGPGIN and PGPGOUT are left out with CONFIG_MEMCG_V1).
# The model counts every scan and steal as direct reclaim.
VM_EVENTS = [
    ("pswpin", None), ("pswpout", None),
    ("pgscan_kswapd", None), ("pgscan_direct", PGSCAN), ("pgscan_khugepaged", None),
    ("pgscan_proactive", None),
    ("pgsteal_kswapd", None), ("pgsteal_direct", PGSTEAL), ("pgsteal_khugepaged", None),
    ("pgsteal_proactive", None),
    ("pgfault", PGFAULT), ("pgmajfault", PGMAJFAULT), ("pgrefill", PGREFILL),
    ("pgactivate", PGACTIVATE), ("pgdeactivate", PGDEACTIVATE),
    ("pglazyfree", None), ("pglazyfreed", None),
    ("swpin_zero", None), ("swpout_zero", None),
    ("thp_fault_alloc", None), ("thp_collapse_alloc", None), ("thp_swpout", None),
    ("thp_swpout_fallback", None),
]


def _stat_value(sys, memcg: MemCgroup, item) -> int:
    if item is None:
        return 0
    if callable(item):
        return item(sys, memcg)
    return _memory_state(sys, memcg, item)


def _memory_stat(k, memcg: MemCgroup) -> str:
    """memcg_stat_format(): memory_stats[] (slab after slab_unreclaimable), pgscan and
    pgsteal summed over their sources, then the vm events; hierarchical figures."""
    sys = k.sys
    memcontrol.mem_cgroup_flush_stats(sys, memcg)  # memory_stat_format() flushes first
    out = []
    for name, item, unit in MEMORY_STATS:
        out.append(f"{name} {_stat_value(sys, memcg, item) * unit}")
        if name == "slab_unreclaimable":  # memcg_stat_format(): the two slab lines' sum
            slab = (_memory_state(sys, memcg, NR_SLAB_RECLAIMABLE_B)
                    + _memory_state(sys, memcg, NR_SLAB_UNRECLAIMABLE_B))
            out.append(f"slab {slab}")
    out.append(f"pgscan {_memory_state(sys, memcg, PGSCAN)}")
    out.append(f"pgsteal {_memory_state(sys, memcg, PGSTEAL)}")
    for name, item in VM_EVENTS:
        out.append(f"{name} {_stat_value(sys, memcg, item)}")
    return "\n".join(out) + "\n"


def _numa_stat(k, memcg: MemCgroup) -> str:
    """memory_numa_stat_show(): the node statistics of memory_stats[], one node (N0)."""
    sys = k.sys
    memcontrol.mem_cgroup_flush_stats(sys, memcg)
    by_name = {name: (item, unit) for name, item, unit in MEMORY_STATS}
    out = []
    for name in NUMA_STATS:
        item, unit = by_name[name]
        out.append(f"{name} N0={_stat_value(sys, memcg, item) * unit}")
    return "\n".join(out) + "\n"


def _oom_group(k, memcg: MemCgroup) -> str:
    return f"{int(memcg.oom_group)}\n"


def _oom_group_write(k, memcg: MemCgroup, text: str) -> None:
    """memory_oom_group_write(): kstrtoint(strstrip(buf), 0); only 0 or 1."""
    val = parse.kstrtoint(_strstrip(text))
    if val not in (0, 1):
        raise einval()
    memcg.oom_group = bool(val)


def _reclaim_write(k, memcg: MemCgroup, text: str) -> None:
    """user_proactive_reclaim() (mm/vmscan.c, 6.18): "<size> [swappiness=N|max]".

    The size must start the buffer (memparse consuming nothing is EINVAL; 6.1 read an
    empty buffer as "max" and answered EAGAIN); each further space-separated token must be
    swappiness=N with N in MIN_SWAPPINESS..MAX_SWAPPINESS or swappiness=max (anon only).
    """
    buf = _strstrip(text)
    value, rest = parse.memparse(buf)
    if rest == buf:
        raise einval()
    nr_to_reclaim = value // PAGE_SIZE
    swappiness = None
    for tok in _strstrip(rest).split(" "):
        if not tok:
            continue
        if tok == "swappiness=max":
            swappiness = SWAPPINESS_ANON_ONLY
        elif tok.startswith("swappiness="):
            try:
                swappiness = parse.kstrtoint(tok[len("swappiness="):])
            except OSError:
                raise einval() from None
            if not MIN_SWAPPINESS <= swappiness <= MAX_SWAPPINESS:
                raise einval()
        else:
            raise einval()
    memcontrol.user_proactive_reclaim(k.sys, memcg, nr_to_reclaim, swappiness)


def _swap_current(k, memcg: MemCgroup) -> str:
    return f"{memcg.swap.usage * PAGE_SIZE}\n"


def _swap_high_write(k, memcg: MemCgroup, text: str) -> None:
    """swap_high_write(): page_counter_set_high(&memcg->swap) - stored; the throttling is
    at charge time."""
    memcg.swap.high = _memparse(text)


def _swap_max_write(k, memcg: MemCgroup, text: str) -> None:
    """swap_max_write(): xchg(&memcg->swap.max) - nothing is reclaimed or swapped in."""
    memcg.swap.max = _memparse(text)


def _swap_events(k, memcg: MemCgroup) -> str:
    e = memcg.memory_events
    return f"high {e[MEMCG_SWAP_HIGH]}\nmax {e[MEMCG_SWAP_MAX]}\nfail {e[MEMCG_SWAP_FAIL]}\n"


_depth_read, _depth_write = _limit("max_depth")
_desc_read, _desc_write = _limit("max_descendants")
_peak_read, _peak_write = _peak("memory")
_swap_peak_read, _swap_peak_write = _peak("swap")

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


# In `ls` order of a cgroup2 directory.
FILES = [
    CFType("cgroup.controllers", _controllers),
    CFType("cgroup.events", _events, not_on_root=True),
    CFType("cgroup.kill", None, _kill_write, not_on_root=True),
    CFType("cgroup.max.depth", _depth_read, _depth_write),
    CFType("cgroup.max.descendants", _desc_read, _desc_write),
    CFType("cgroup.procs", _procs, _procs_write),
    CFType("cgroup.stat", _stat),
    CFType("cgroup.subtree_control", _subtree_control, _subtree_control_write),
    CFType("cgroup.threads", _procs, _threads_write),
    CFType("cgroup.type", _type, _type_write, not_on_root=True),
    CFType("memory.current", _current, subsys="memory", not_on_root=True),
    CFType("memory.events", lambda k, m: _events_show(m.memory_events), subsys="memory",
           not_on_root=True),
    CFType("memory.events.local", lambda k, m: _events_show(m.memory_events_local),
           subsys="memory", not_on_root=True),
    CFType("memory.high", _knob("memory", "high"), _high_write, subsys="memory", not_on_root=True),
    CFType("memory.low", _knob("memory", "low"), _low_write, subsys="memory", not_on_root=True),
    CFType("memory.max", _knob("memory", "max"), _max_write, subsys="memory", not_on_root=True),
    CFType("memory.min", _knob("memory", "min"), _min_write, subsys="memory", not_on_root=True),
    CFType("memory.numa_stat", _numa_stat, subsys="memory"),
    CFType("memory.oom.group", _oom_group, _oom_group_write, subsys="memory", not_on_root=True),
    CFType("memory.peak", _peak_read, _peak_write, subsys="memory", not_on_root=True),
    # kernel/cgroup/cgroup.c: cgroup_psi_files[] - in every group, the root too (psi_system)
    CFType("memory.pressure", _pressure_read, _pressure_write),
    CFType("memory.reclaim", None, _reclaim_write, subsys="memory"),
    CFType("memory.stat", _memory_stat, subsys="memory"),
    CFType("memory.swap.current", _swap_current, subsys="memory", not_on_root=True),
    CFType("memory.swap.events", _swap_events, subsys="memory", not_on_root=True),
    CFType("memory.swap.high", _knob("swap", "high"), _swap_high_write, subsys="memory",
           not_on_root=True),
    CFType("memory.swap.max", _knob("swap", "max"), _swap_max_write, subsys="memory",
           not_on_root=True),
    CFType("memory.swap.peak", _swap_peak_read, _swap_peak_write, subsys="memory",
           not_on_root=True),
]
BY_NAME = {cft.name: cft for cft in FILES}
# the files Kernel.event() watches for cgroup_file_notify() (poll POLLPRI / inotify)
EVENT_FILES = ("memory.events", "memory.events.local", "memory.swap.events", "cgroup.events",
               "memory.pressure")


def _present(cft: CFType, memcg: MemCgroup, sys) -> bool:
    """css_populate_dir() / cgroup_addrm_files(): the flags, and a controller's files only
    where the group has that controller's css."""
    if cft.not_on_root and memcg.is_root():
        return False
    if cft.only_root and not memcg.is_root():
        return False
    if cft.subsys is not None and sys is not None and not cgroup.cgroup_css_online(sys, memcg, cft.subsys):
        return False
    return True


def files_of(memcg: MemCgroup, semantics: str = "6.18", sys=None) -> list[str]:
    """The file names in memcg's directory."""
    return [c.name for c in FILES if _present(c, memcg, sys)]


def lookup(memcg: MemCgroup, name: str, semantics: str = "6.18", sys=None) -> CFType:
    cft = BY_NAME.get(name)
    if cft is None or not _present(cft, memcg, sys):
        raise FileNotFoundError(errno.ENOENT, f"No such file or directory: {name}")
    return cft


def read_file(k, memcg: MemCgroup, name: str) -> str:
    """read(2) of a cgroup file: a write-only file gives EINVAL."""
    cft = lookup(memcg, name, sys=k.sys)
    if cft.read is None:
        raise einval()
    return cft.read(k, memcg)


def write_file(k, memcg: MemCgroup, name: str, text: str) -> None:
    """write(2) of a cgroup file, with kernfs's rules around the handler (as in v1): an
    empty write does nothing, more than a page is E2BIG, a read-only file EINVAL."""
    cft = lookup(memcg, name, sys=k.sys)
    if len(text.encode()) > MAX_WRITE:
        raise OSError(errno.E2BIG, "Argument list too long")
    if not text:
        return
    if cft.write is None:
        raise einval()
    cft.write(k, memcg, text.split("\0", 1)[0])
