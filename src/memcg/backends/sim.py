"""SimKernel: the model behind the `Kernel` interface.

Deterministic and in-process: the same calls in the same order give the same files,
events and OOM victims.  One tick of `advance()` is one second of simulated time.
"""

from __future__ import annotations

import errno
from os import strerror as os_strerror

from .. import cgroup, parse, sched, system, tasks
from ..cgroupfs import v1 as cgroupfs_v1, v2 as cgroupfs_v2
from ..mm import memcontrol, memcontrol_v1
from ..fs.eventfd import EventFd
from ..kernel import PAGE_SIZE, Kernel
from ..mm.memcontrol import drain_all_stock, mem_cgroup_alloc, memcg_offline_kmem
from ..profile import default_profile, load_profile
from ..static_key import static_keys_state
from ..net.tcp import tcp_debugfs
from ..mm.mempressure import shrinker_register_event
from ..mm.vmpressure import memcg_to_vmpressure, vmpressure_register_event
from .sim_shrinkerd import SimShrinkerd

# "6.18": today's v1 rules; "3.8": the kmem controller as merged in 3.8 (docs/kmem.md)
SEMANTICS = ("6.18", "3.8")
KMEMCG_ID_POLICIES = ("reparent", "keep", "reclaim")
HIERARCHIES = ("v1", "v2")
# Who serves mempressure.shrinker: "kernel", document 002's in-kernel hook (requests from
# reclaim that falls short); "shrinkerd", the daemon a real kernel needs (requests from
# usage thresholds and pressure levels, backends/sim_shrinkerd.py), to predict it.
SHRINKERS = ("kernel", "shrinkerd")
# kernel/cgroup/cgroup.c: cgroup2_parse_param() - the memory controller's mount options
MOUNT_OPTIONS = ("memory_localevents", "memory_recursiveprot")


class SimKernel(Kernel):
    """The simulated memory controller: cgroup v1 files as Linux 6.18 has them, or the
    cgroup v2 interface with hierarchy="v2"."""

    backend = "sim"

    def __init__(self, memory="2G", cpus: int = 2, swap="0", semantics: str = "6.18",
                 kmemcg_id_policy: str = "reparent", profile=None, seed: int = 0,
                 hierarchy: str = "v1", mount_options=(), shrinker: str = "kernel",
                 shrinkerd_margin: int | None = None):
        if semantics not in SEMANTICS:
            raise ValueError(f"semantics: expected one of {', '.join(SEMANTICS)}, got {semantics!r}")
        if kmemcg_id_policy not in KMEMCG_ID_POLICIES:
            raise ValueError(f"kmemcg_id_policy: expected one of {', '.join(KMEMCG_ID_POLICIES)}, "
                             f"got {kmemcg_id_policy!r}")
        if hierarchy not in HIERARCHIES:
            raise ValueError(f"hierarchy: expected one of {', '.join(HIERARCHIES)}, got {hierarchy!r}")
        if shrinker not in SHRINKERS:
            raise ValueError(f"shrinker: expected one of {', '.join(SHRINKERS)}, got {shrinker!r}")
        if shrinker == "shrinkerd" and hierarchy != "v1":
            raise ValueError("shrinker: the modelled shrinkerd serves cgroup v1 only")
        if shrinkerd_margin is not None and (shrinker != "shrinkerd" or shrinkerd_margin <= 0):
            raise ValueError(f"shrinkerd_margin: a positive size with shrinker=\"shrinkerd\", "
                             f"got {shrinkerd_margin!r}")
        if hierarchy == "v2" and semantics != "6.18":
            raise ValueError("hierarchy: cgroup v2 is modelled with semantics=\"6.18\" only")
        mount_options = tuple(mount_options)
        for opt in mount_options:
            if opt not in MOUNT_OPTIONS or hierarchy != "v2":
                raise ValueError(f"mount_options: expected cgroup2 options from "
                                 f"{', '.join(MOUNT_OPTIONS)}, got {opt!r}")
        if not isinstance(cpus, int) or cpus < 1:
            raise ValueError(f"cpus: expected a positive number, got {cpus!r}")
        memory_pages = parse.parse_memopt(memory, "memory") // PAGE_SIZE
        if memory_pages < 1024:
            raise ValueError("memory: expected at least 4M")
        self.semantics = semantics
        self.kmemcg_id_policy = kmemcg_id_policy
        self.hierarchy = hierarchy
        # the cgroupfs layer of the hierarchy: the only code that parses and prints files
        self.cgroupfs = cgroupfs_v2 if hierarchy == "v2" else cgroupfs_v1
        self.sys = system.boot(memory_pages, cpus, parse.parse_memopt(swap, "swap") // PAGE_SIZE,
                               seed, semantics=semantics, kmemcg_id_policy=kmemcg_id_policy,
                               hierarchy=hierarchy, mount_options=mount_options)
        if isinstance(profile, dict):
            self.sys.profile = {**default_profile(), **profile}
        else:
            self.sys.profile = load_profile(profile) if profile is not None else default_profile()
        self._machine = {"memory": memory_pages * PAGE_SIZE, "cpus": cpus,
                         "swap": parse.parse_memopt(swap, "swap") // PAGE_SIZE * PAGE_SIZE}
        self.flags: dict = {}
        self._events: list[EventFd] = []
        self.shrinker = shrinker
        self._shrinkerd_margin = shrinkerd_margin
        self.shrinkerd: SimShrinkerd | None = None   # started by the first registration

    # --- the cgroup filesystem ---------------------------------------------------------------

    def _files_of(self, memcg) -> list[str]:
        """The names of memcg's files (on v2 they depend on the parent's subtree_control)."""
        if self.hierarchy == "v2":
            return self.cgroupfs.files_of(memcg, self.semantics, self.sys)
        return self.cgroupfs.files_of(memcg, self.semantics)

    def _group_of(self, parts: list[str]):
        return cgroup.cgroup_get_from_path(self.sys, "/" + "/".join(parts))

    def _split(self, path: str):
        """(group, file name) for "/a/b/memory.stat" (parse.resolve_path: NUL ValueError,
        ENAMETOOLONG, "." and ".." as path lookup takes them)."""
        parts = parse.resolve_path(path)
        if not parts:
            raise IsADirectoryError(errno.EISDIR, f"Is a directory: {path}")
        return self._group_of(parts[:-1]), parts[-1]

    def mkdir(self, path: str) -> None:
        parents, name = parse.lookup_path(path)
        if parse.mkdir_last_errno(name):
            # filename_create(): "/", "." and "..": the parent must exist, then EEXIST
            parse.resolve_path(path)  # a ".." may not leave the root
            self._group_of(parents)
            raise FileExistsError(errno.EEXIST, f"File exists: {path}")
        parent = self._group_of(parents)
        if "\n" in name:
            raise OSError(errno.EINVAL, "Invalid argument")
        taken = name in parent.online_children or name in self._files_of(parent)
        if taken:
            raise FileExistsError(errno.EEXIST, f"File exists: {path}")
        cgroup.cgroup_check_hierarchy_limits(self.sys, parent)  # v2: cgroup.max.depth/descendants
        mem_cgroup_alloc(self.sys, parent, name)
        if self.shrinkerd is not None:
            self.shrinkerd.changed()

    def rmdir(self, path: str) -> None:
        """cgroup_rmdir(): EBUSY with tasks or children; charges make the group dying."""
        parse.resolve_path(path)  # a ".." may not leave the root
        parents, name = parse.lookup_path(path)
        parent = self._group_of(parents)
        err = parse.rmdir_last_errno(name)
        if err:
            # do_rmdir(): "/" EBUSY, "." EINVAL, ".." ENOTEMPTY once the parent is found
            raise OSError(err, os_strerror(err), path)
        if name in self._files_of(parent):
            raise NotADirectoryError(errno.ENOTDIR, f"Not a directory: {path}")
        memcg = self._group_of(parents + [name])
        if memcg.tasks or any(c.online for c in memcg.children):
            raise OSError(errno.EBUSY, "Device or resource busy")
        self._offline(memcg)
        if self.shrinkerd is not None:
            self.shrinkerd.changed()   # rmdir signals its eventfds: the group is dropped
        sched.exit_to_user_mode(self.sys.clock)

    def _offline(self, memcg) -> None:
        """mem_cgroup_css_offline(): events removed (each signalled once), stocks drained."""
        sys = self.sys
        memcg.online = False
        memcg.parent.online_children.pop(memcg.name, None)
        memcontrol_v1.memcg_offline_events(memcg)
        memcg_to_vmpressure(sys, memcg).events.clear()
        sys.user_shrinkers.pop(memcg.id, None)
        sys.shrinker_debt.pop(memcg.id, None)
        memcg_offline_kmem(sys, memcg)
        drain_all_stock(sys, memcg)
        memcontrol_v1.memcg1_remove_from_trees(sys, memcg)
        sys.dying.append(memcg)
        memcontrol.maybe_free_dying(sys, memcg)

    def listdir(self, path: str) -> list[str]:
        memcg = cgroup.cgroup_get_from_path(self.sys, path)
        return self._files_of(memcg) + [c.name for c in memcg.children if c.online]

    def read(self, path: str) -> str:
        memcg, name = self._split(path)
        return self.cgroupfs.read_file(self, memcg, name)

    def write(self, path: str, text: str) -> None:
        memcg, name = self._split(path)
        try:
            if self.shrinker == "shrinkerd" and name == "mempressure.shrinker":
                self._shrinkerd_report(memcg, path, text)
            else:
                self.cgroupfs.write_file(self, memcg, name, text)
                if self.shrinkerd is not None and name.endswith("limit_in_bytes"):
                    self.shrinkerd.changed()
        finally:
            sched.exit_to_user_mode(self.sys.clock)

    def _shrinkerd_report(self, memcg, path: str, text: str) -> None:
        """A "<eventfd> <N>" write, as LinuxKernel sends it to its daemon: EINVAL as the
        file parses it, EBADF for an eventfd that is not a registration of this group."""
        self.cgroupfs.lookup(memcg, "mempressure.shrinker", self.semantics)
        fields = text.split()
        if len(fields) != 2:
            raise OSError(errno.EINVAL, "Invalid argument")
        try:
            efd, delta = parse.kstrtoint(fields[0]), parse.kstrtoint(fields[1])
        except OSError:
            raise OSError(errno.EINVAL, "Invalid argument") from None
        if self.shrinkerd is None:
            raise OSError(errno.EBADF, "Bad file descriptor")
        self.shrinkerd.report(path.rstrip("/").rpartition("/")[0] or "/", efd, delta)

    # --- processes and events -------------------------------------------------------------------

    def spawn(self, path: str = "/"):
        """A new process in the group (forked, then written to the group's cgroup.procs:
        on v2 EBUSY for a group that enables memory for its children)."""
        memcg = cgroup.cgroup_get_from_path(self.sys, path)
        cgroup.cgroup_migrate_vet_dst(self.sys, memcg)
        task = tasks.kernel_clone(self.sys, memcg)
        tasks.spawned_image(self.sys, task)
        sched.exit_to_user_mode(self.sys.clock)
        return task

    def task(self, pid: int):
        """The task with this pid (exited ones included)."""
        return self.sys.tasks[pid]

    def event(self, path: str, args: str = "") -> EventFd:
        """cgroup.event_control registration of a new eventfd on a control file."""
        memcg, name = self._split(path)
        if self.hierarchy == "v2":
            self.cgroupfs.lookup(memcg, name, self.semantics, self.sys)
        else:
            self.cgroupfs.lookup(memcg, name, self.semantics)
        # The line "<efd> <cfd> <args>" is one write (at most a page) and is strstrip()ed.
        if len(f"0 0 {args}".encode()) > self.cgroupfs.MAX_WRITE:
            raise OSError(errno.E2BIG, "Argument list too long")
        args = args.rstrip(" \t\n\v\f\r")
        if name not in self.cgroupfs.EVENT_FILES:
            raise OSError(errno.EINVAL, "Invalid argument")
        efd = EventFd(self.sys, f"{path} {args}".rstrip())
        if name == "mempressure.shrinker" and self.shrinker == "shrinkerd":
            return self._shrinkerd_register(path, efd, args)
        try:
            if self.hierarchy == "v2" and name == "memory.pressure":
                # a PSI trigger ("some|full <threshold_us> <window_us>") on the open file;
                # its POLLPRI is the eventfd's signal
                self.cgroupfs.pressure_trigger(self, memcg, efd, args)
            elif self.hierarchy == "v2":
                # cgroup_file_notify() wakes pollers of the file (no cgroup.event_control)
                self.sys.file_watchers.setdefault((memcg.id, name), []).append(efd)
            elif name == "memory.usage_in_bytes":
                memcontrol_v1.mem_cgroup_usage_register_event(self.sys, memcg, efd, args, False)
            elif name == "memory.memsw.usage_in_bytes":
                memcontrol_v1.mem_cgroup_usage_register_event(self.sys, memcg, efd, args, True)
            elif name == "memory.oom_control":
                memcontrol_v1.mem_cgroup_oom_register_event(self.sys, memcg, efd)
            elif name == "mempressure.shrinker":
                shrinker_register_event(self.sys, memcg, efd, args)
            else:
                vmpressure_register_event(self.sys, memcg, efd, args)
        except OSError:
            efd.close()
            raise
        self._events.append(efd)
        sched.exit_to_user_mode(self.sys.clock)
        return efd

    def _shrinkerd_register(self, path: str, efd: EventFd, args: str) -> EventFd:
        """A registration with the machine's shrinkerd (started on first use), as
        LinuxKernel makes one: EINVAL for a chunk size that is not an unsigned decimal
        or is 0."""
        if not args.isdigit() or int(args) == 0:
            raise OSError(errno.EINVAL, "Invalid argument")
        self._events.append(efd)
        if self.shrinkerd is None:
            self.shrinkerd = SimShrinkerd(self, self._shrinkerd_margin)
        self.shrinkerd.register(path.rstrip("/").rpartition("/")[0] or "/", efd, int(args))
        sched.exit_to_user_mode(self.sys.clock)
        return efd

    def advance(self, ticks: int = 1) -> None:
        """Let simulated time pass: the timers that expire run tick by tick (the flusher
        writes back, stuck faults are retried, TCP's delayed ACKs, retransmissions and
        zero-window probes go), and user space runs after each tick."""
        clock = self.sys.clock
        if self.shrinkerd is None:
            sched.run_until(clock, clock.now + int(ticks))
            return
        for _ in range(int(ticks)):   # the daemon's tick, once per tick of the machine
            sched.run_until(clock, clock.now + 1)
            self.shrinkerd.tick()
            sched.exit_to_user_mode(clock)

    def machine(self) -> dict:
        """The simulated machine: its memory, CPUs and swap, as it was built."""
        return dict(self._machine)

    def settle(self) -> None:
        """As if the periodic statistics flush had just run (LinuxKernel.settle() waits
        for it): what reclaim reads of the LRU lists is then exact.  Simulated time does
        not move."""
        memcontrol.mem_cgroup_flush_root(self.sys)

    def debugfs(self) -> dict:
        sys = self.sys
        return {
            "static_keys": static_keys_state(sys.static_keys.values()),
            "kmemcg_id_array_size": sys.slab.ids.nr_cache_ids,  # memcg_nr_cache_ids
            "kmemcg_ids_in_use": sys.slab.ids.in_use,
            "memcg_ids_in_use": len(sys.memcgs),
            "dying_groups": len(sys.dying),
            "nr_free_pages": sys.mem.nr_free,
            # the kernel's own pages, as /proc/meminfo names them (page_alloc.alloc_kernel_pages)
            "kernel_pages": dict(sys.kernel_pages),
            "watermarks": {"min": sys.wmark_min, "low": sys.wmark_low, "high": sys.wmark_high},
            "page_metadata_bytes_per_page": sys.mem.bytes_used() / sys.mem.nr_pages,
            "global_oom_kills": sys.global_oom_kills,
            "tcp": tcp_debugfs(sys),
        }

    def close(self) -> None:
        for efd in self._events:
            efd.release()
        self._events.clear()
