"""The simulated machine: the state the kernel keeps in globals, in one object.

The model's functions take it as their first argument (`sys`), where the kernel reads
its globals: the node's page frames and watermarks, the memcg id table and statistics,
the per-CPU stocks, swap, files, tasks, the registered shrinkers, and the clock with its
event queue (sched.py).  `System(...)` is the state as declared, empty; `boot()` wires a
machine together: watermarks, kernel-memory state, the mounts, the root group, the network
and the flusher's timer.
"""

from __future__ import annotations

import random

import numpy as np

from . import sched
from .kernel import PAGE_SIZE
from .fs import dcache
from .mm import memcontrol, page_alloc, page_writeback
from .mm.filemap import AddressSpace, ShmemObject
from .mm.memcontrol import ListHead, MemCgroup, MemcgStock, ObjStock, StatTable
from .mm.mmzone import MemMap
from .mm.slab import SlabAllocator
from .mm.swapfile import SwapInfo
from .mm.vmpressure import Vmpressure
from .net import sock, tcp
from .profile import default_profile
from .static_key import StaticKey


class System:
    """Everything the simulated kernel knows about memory (see boot() for a running one)."""

    def __init__(self, memory_pages: int, cpus: int, swap_pages: int, seed: int = 0,
                 semantics: str = "6.18", kmemcg_id_policy: str = "reparent",
                 hierarchy: str = "v1", mount_options: tuple = ()):
        self.cpus = cpus
        self.semantics = semantics
        # cgroup_subsys_on_dfl(memory_cgrp_subsys): the memory controller is on cgroup v2
        self.cgroup_dfl = hierarchy == "v2"
        # the cgroup2 mount options (kernel/cgroup/cgroup.c: cgroup2_parse_param):
        # CGRP_ROOT_MEMORY_LOCAL_EVENTS and CGRP_ROOT_MEMORY_RECURSIVE_PROT
        self.memory_localevents = "memory_localevents" in mount_options
        self.memory_recursiveprot = "memory_recursiveprot" in mount_options
        # kernel/sched/psi.c: psi_system, the root cgroup's pressure (v2 only: psi.py)
        self.psi_system = None
        # (memcg id, file name) -> eventfds woken by cgroup_file_notify()
        self.file_watchers: dict = {}
        # group -> cgroup.Cgroup: the default hierarchy's per-group state (subtree_control, ...)
        self.cgroups: dict = {}
        self.kmemcg_id_policy = kmemcg_id_policy
        self.mem = MemMap(memory_pages)
        self.swap = SwapInfo(swap_pages)
        self.rng = random.Random(seed)
        self.stock = [MemcgStock() for _ in range(cpus)]
        self.stats = StatTable()
        self.dead_stats = StatTable()  # events of freed groups, kept for their ancestors
        self.root: MemCgroup | None = None
        self.memcgs: dict[int, MemCgroup] = {}
        self._free_ids: list[int] = []  # mem_cgroup_idr: ids given back, lowest first
        self._next_id = 1
        self.dying = ListHead()  # removed groups not freed yet, in removal order
        self.mappings: dict[int, AddressSpace] = {}  # mapping id -> address space or vma
        self._next_mapping = 1
        self.files: dict[str, AddressSpace] = {}
        self.shmem: dict[str, ShmemObject] = {}
        self.tasks: dict = {}
        self._next_pid = 1000
        self.clock = sched.Clock()  # the time, the timers and the work waiting to run
        self.user_shrinkers: dict = {}  # memcg id -> [UserShrinker] (mempressure.py)
        self.shrinker_debt: dict[int, int] = {}
        self.soft_limit_tree: dict[int, tuple[int, int]] = {}
        self.soft_limit_seq = 0
        self._vmpressure: dict[int, Vmpressure] = {}  # memcg id -> memcg_to_vmpressure()
        self.pressure_history: list = []
        self.global_oom_kills = 0
        # Reclaim-side events of the current read batch, recorded while vmscan's streaming
        # steady-state detector watches (None otherwise): see vmscan.StreamReclaim.
        self.reclaim_trace: list | None = None
        # the span of file writes whose page side waits (fastpath.writespan), if one is
        # under way: the clean episodes of its group are planned on its view of the list
        self.write_span = None
        self.current = None
        # include/linux/sched/mm.h: set_active_memcg() - the group kernel allocations are
        # charged to instead of the current task's (current->active_memcg), or None
        self.active_memcg = None
        # mm/page_alloc.c: the zone watermarks (setup_per_zone_wmarks at boot)
        self.wmark_min = self.wmark_low = self.wmark_high = 0
        # frames the kernel holds for itself (page_alloc.alloc_kernel_pages), by meminfo item
        self.kernel_pages = dict.fromkeys(page_alloc.KERNEL_PAGE_ITEMS, 0)
        # mm/percpu.c: bytes of the dynamic per-CPU chunks in use, all CPUs' copies
        self.pcpu_bytes = 0
        self.pcpu_pfns = np.empty(0, np.int32)
        # kernel memory: the era's static key, the per-CPU object stocks, the slab caches
        # with their kmemcg ids, the memcg-aware list_lrus (memcg_list_lru_register), the
        # registered shrinkers (mm/shrinker.c: shrinker_list) and the mounted file systems
        self.profile: dict | None = None  # the calibration profile (SimKernel(profile=FILE))
        self.kmem_key: StaticKey | None = None
        self.static_keys: dict[str, StaticKey] = {}
        self.obj_stock: list[ObjStock] = []
        self.slab: SlabAllocator | None = None
        self.list_lrus: list = []
        self.shrinkers: list = []
        self.fork_carry = 0.0
        self.super_blocks: dict[str, dcache.SuperBlock] = {}
        self.net: sock.Net | None = None  # TCP: tcp_mem from this machine's memory, the socket key
        self.wb_dwork: sched.Timer | None = None  # the flusher's delayed work (boot arms it)
        self.stats_flush_dwork: sched.Timer | None = None  # the periodic statistics flush
        self.stats_flushes = 0  # statistics flushes so far, periodic or of one subtree
        self.stats_periodic_flush = 0  # the number of the last periodic one

    @property
    def cpu(self) -> int:
        """The CPU the current task runs on (0 outside any task)."""
        return self.current.cpu if self.current is not None else 0


# The largest machine the model holds: 16 bytes of page metadata per page of memory and
# of swap (256G + 64G is 1.25 GiB of arrays, resident only where pages were touched but
# for one byte a page of `lru`), and per-CPU stocks and counters in every group.
# Scenario files are held to the same bounds where they are read (scenario/loader.py).
MAX_MEMORY_PAGES = (256 << 30) // PAGE_SIZE
MAX_SWAP_PAGES = (64 << 30) // PAGE_SIZE
MAX_CPUS = 256


def check_machine(memory_pages: int, cpus: int, swap_pages: int) -> None:
    """ValueError for a machine the model cannot hold (see MAX_MEMORY_PAGES)."""
    if memory_pages > MAX_MEMORY_PAGES:
        raise ValueError(f"memory: expected at most {MAX_MEMORY_PAGES * PAGE_SIZE >> 30}G, "
                         "the largest machine the model holds")
    if swap_pages > MAX_SWAP_PAGES:
        raise ValueError(f"swap: expected at most {MAX_SWAP_PAGES * PAGE_SIZE >> 30}G, "
                         "the most swap the model holds")
    if cpus > MAX_CPUS:
        raise ValueError(f"cpus: expected at most {MAX_CPUS}, the most CPUs the model holds")


def boot(memory_pages: int, cpus: int, swap_pages: int, seed: int = 0,
         semantics: str = "6.18", kmemcg_id_policy: str = "reparent",
         hierarchy: str = "v1", mount_options: tuple = ()) -> System:
    """A running machine: the watermarks, the kernel-memory state of the era, the two
    mounts (ext4, tmpfs) with their shrinkers, the root group, the network and the
    flusher.  ValueError for a machine larger than the model holds (check_machine)."""
    check_machine(memory_pages, cpus, swap_pages)
    sys = System(memory_pages, cpus, swap_pages, seed, semantics, kmemcg_id_policy,
                 hierarchy, mount_options)
    page_alloc.setup_per_zone_wmarks(sys)
    sys.profile = default_profile()
    # 6.18: memcg_kmem_online_key, switched on for good by the first non-root group;
    # 3.8: memcg_kmem_enabled_key, one reference per accounting group
    sys.kmem_key = StaticKey("memcg_kmem_enabled_key" if semantics == "3.8"
                             else "memcg_kmem_online_key")
    sys.static_keys[sys.kmem_key.name] = sys.kmem_key
    sys.obj_stock = [ObjStock() for _ in range(cpus)]
    sys.slab = SlabAllocator()
    for fs_type in ("ext4", "tmpfs"):
        dcache.kern_mount(sys, fs_type)
    sys.root = memcontrol.mem_cgroup_alloc(sys, None, "")
    sys.net = sock.Net(sys)
    tcp.tcp_init(sys.net)  # net/ipv4/af_inet.c: inet_init(): tcp_mem from this memory
    # mm/backing-dev.c: wb_init(): the flusher's delayed work (wb->dwork); the kernel arms
    # it when an inode is first dirtied, the model's flusher wakes every tick
    sys.wb_dwork = sched.Timer(sched.WRITEBACK, 0, page_writeback.wb_workfn, sys)
    sched.mod_timer(sys.clock, sys.wb_dwork, page_writeback.DIRTY_WRITEBACK_TICKS)
    # mm/memcontrol.c: mem_cgroup_init() queues stats_flush_dwork FLUSH_TIME after boot
    sys.stats_flush_dwork = sched.Timer(sched.WRITEBACK, 1, memcontrol.flush_memcg_stats_dwork, sys)
    sched.mod_timer(sys.clock, sys.stats_flush_dwork, memcontrol.FLUSH_TIME)
    return sys
