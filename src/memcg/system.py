"""The simulated machine: the state the kernel keeps in globals, in one object.

The model's functions take it as their first argument (`sys`), where the kernel reads
its globals: the node's page frames and watermarks, the memcg id table and statistics,
the per-CPU stocks, swap, files, tasks, and the clock with its event queue (sched.py).
"""

from __future__ import annotations

import errno
import heapq
import math
import random

import numpy as np

from . import sched
from .mm.filemap import AddressSpace, ShmemObject, truncate_inode_pages
from .mm.memcontrol import (MEM_CGROUP_ID_MAX, MEMCG_SWAP, NR_FILE_DIRTY, NR_LRU_BASE, PGACTIVATE,
                         CHARGE_KILLED, CHARGE_NOMEM, ListHead, MemCgroup, MemcgStock, StatTable,
                         charge_pages, commit_charge, mem_cgroup_alloc, uncharge_pages)
from .mm.mmzone import (LRU_INACTIVE_ANON, LRU_INACTIVE_FILE,
                     LRU_NONE, MemMap, PG_dirty, PG_referenced)
from .mm.swapfile import SwapInfo
from .mm.vmpressure import Vmpressure
from .net import sock, tcp

# mm/page-writeback.c: dirty_expire_interval (3000 centisecs) and dirty_background_ratio (10)
DIRTY_EXPIRE_TICKS = 30  # one tick is one second of simulated time
DIRTY_BACKGROUND_RATIO = 10
# mm/page-writeback.c: dirty_writeback_interval is 500 centisecs; the model's flusher
# wakes every tick
DIRTY_WRITEBACK_TICKS = 1
# mm/page_alloc.c: watermark_scale_factor default (10 = 0.1% of memory)
WATERMARK_SCALE_FACTOR = 10


def min_free_kbytes(nr_pages: int) -> int:
    """mm/page_alloc.c: calculate_min_free_kbytes() = int_sqrt(lowmem_kbytes * 16), clamped."""
    kbytes = nr_pages * 4
    return min(max(math.isqrt(kbytes * 16), 128), 262144)


class System:
    """Everything the simulated kernel knows about memory."""

    def __init__(self, memory_pages: int, cpus: int, swap_pages: int, seed: int = 0,
                 semantics: str = "6.18", kmemcg_id_policy: str = "reparent"):
        self.cpus = cpus
        self.mem = MemMap(memory_pages)
        self.swap = SwapInfo(swap_pages)
        self.rng = random.Random(seed)
        self.stock = [MemcgStock() for _ in range(cpus)]
        self.stats = StatTable()
        self.dead_stats = StatTable()  # events of freed groups, kept for their ancestors
        self.memcgs: dict[int, MemCgroup] = {}
        self._free_ids: list[int] = []
        self._next_id = 1
        self.dying = ListHead()  # removed groups not freed yet, in removal order
        self.mappings: dict[int, AddressSpace] = {}
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
        self._vmpressure: dict[int, Vmpressure] = {}
        self.pressure_history: list = []
        self.global_oom_kills = 0
        # Reclaim-side events of the current read batch, recorded while vmscan's streaming
        # steady-state detector watches (None otherwise): see vmscan.StreamReclaim.
        self.reclaim_trace: list | None = None
        self.current = None
        # mm/page_alloc.c: __setup_per_zone_wmarks()
        wmin = min_free_kbytes(memory_pages) // 4
        dist = max(wmin // 4, memory_pages * WATERMARK_SCALE_FACTOR // 10000)
        self.wmark_min, self.wmark_low, self.wmark_high = wmin, wmin + dist, wmin + 2 * dist
        self._init_kmem(semantics, kmemcg_id_policy)
        self.root = mem_cgroup_alloc(self, None, "")
        self.net = sock.Net(self)  # the socket static key, the per-group socket state
        tcp.tcp_init(self.net)  # net/ipv4/af_inet.c: inet_init(): tcp_mem from this memory
        # mm/backing-dev.c: wb_init(): the flusher's delayed work (wb->dwork); the kernel
        # arms it when an inode is first dirtied, the model's flusher wakes every tick
        self.wb_dwork = sched.Timer(sched.WRITEBACK, 0, wb_workfn, self)
        sched.mod_timer(self.clock, self.wb_dwork, DIRTY_WRITEBACK_TICKS)

    def _init_kmem(self, semantics: str, kmemcg_id_policy: str) -> None:
        """Kernel-memory state: the era's rules, the static key, the per-CPU object stocks,
        the slab caches with their kmemcg ids, the list_lrus and the file systems."""
        from .fs.dcache import SuperBlock
        from .mm.memcontrol import ObjStock
        from .profile import default_profile
        from .mm.slab import SlabAllocator
        from .static_key import StaticKey

        self.semantics = semantics
        self.kmemcg_id_policy = kmemcg_id_policy
        self.profile = default_profile()  # SimKernel(profile=FILE) replaces it
        # 6.18: memcg_kmem_online_key, switched on for good by the first non-root group;
        # 3.8: memcg_kmem_enabled_key, one reference per accounting group
        self.kmem_key = StaticKey("memcg_kmem_enabled_key" if semantics == "3.8"
                                  else "memcg_kmem_online_key", kind="kmem")
        self.static_keys = {self.kmem_key.name: self.kmem_key}
        self.obj_stock = [ObjStock() for _ in range(self.cpus)]
        self.slab = SlabAllocator()
        self.list_lrus: list = []
        self.fork_carry = 0.0
        self.super_blocks = {name: SuperBlock(self, name) for name in ("ext4", "tmpfs")}

    # --- ids and groups -----------------------------------------------------------------

    def idr_alloc(self) -> int:
        """mem_cgroup_alloc_id(): the lowest free id in 1..MEM_CGROUP_ID_MAX, else ENOSPC."""
        if self._free_ids:
            return heapq.heappop(self._free_ids)
        if self._next_id > MEM_CGROUP_ID_MAX:
            raise OSError(errno.ENOSPC, "No space left on device")
        self._next_id += 1
        return self._next_id - 1

    def idr_remove(self, memcg_id: int) -> None:
        """idr_remove(): give back an id that no group got after all."""
        heapq.heappush(self._free_ids, memcg_id)

    def vmpressure_of(self, memcg: MemCgroup) -> Vmpressure:
        v = self._vmpressure.get(memcg.id)
        if v is None:
            v = self._vmpressure[memcg.id] = Vmpressure()
        return v

    def maybe_free_dying(self, memcg: MemCgroup | None = None) -> None:
        """css_free(): a dying group goes once nothing is charged to it any more.

        With memcg, only that group (and then its dying parents) is looked at: the
        cheap check after one group's charge went, for machines with many dying groups.
        """
        if not self.dying:
            return
        for memcg in ([memcg] if memcg is not None else list(self.dying)):
            if memcg.online or self.memcgs.get(memcg.id) is not memcg:
                continue  # online, or freed already
            if memcg.memory.usage or memcg.memsw.usage or memcg.kmem.usage or memcg.children:
                continue
            from .net.sock import memcg_has_sockets
            if memcg_has_sockets(self, memcg):  # sockets hold a css reference
                continue
            self.dying.remove(memcg)
            self.mem_cgroup_free(memcg)

    def mem_cgroup_free(self, memcg: MemCgroup) -> None:
        parent = memcg.parent
        parent.children.remove(memcg)
        self.dead_stats.ensure(parent.id)
        self.dead_stats.ensure(memcg.id)
        self.dead_stats.a[parent.id] += self.stats.a[memcg.id] + self.dead_stats.a[memcg.id]
        self.stats.a[memcg.id] = 0
        self.dead_stats.a[memcg.id] = 0
        self.soft_limit_tree.pop(memcg.id, None)
        self._vmpressure.pop(memcg.id, None)
        for s in self.stock:
            for i, c in enumerate(s.cached):
                if c is memcg:
                    s.cached[i] = None
                    s.nr_pages[i] = 0
        from .mm.memcontrol import memcg_free_kmem
        memcg_free_kmem(self, memcg)
        from .net.sock import memcg_sock_free
        memcg_sock_free(self, memcg)  # the socket static key reference goes
        del self.memcgs[memcg.id]
        heapq.heappush(self._free_ids, memcg.id)
        if not parent.online:
            self.maybe_free_dying(parent)

    # --- mappings and files ---------------------------------------------------------------

    def register_mapping(self, obj: AddressSpace) -> int:
        mid = self._next_mapping
        self._next_mapping += 1
        self.mappings[mid] = obj
        return mid

    def unregister_mapping(self, obj: AddressSpace) -> None:
        self.mappings.pop(obj.id, None)

    def file(self, name: str) -> AddressSpace:
        f = self.files.get(name)
        if f is None:
            f = self.files[name] = AddressSpace(self, name)
        return f

    def shmem_object(self, name: str) -> ShmemObject:
        o = self.shmem.get(name)
        if o is None:
            o = self.shmem[name] = ShmemObject(self, name)
        return o

    def unlink(self, name: str) -> None:
        """unlink(): the file's page cache is truncated (an open shm mapping keeps it)."""
        f = self.files.pop(name, None) or self.shmem.pop(name, None)
        if f is None:
            raise FileNotFoundError(errno.ENOENT, f"no such file: {name}")
        if getattr(f, "mappers", None):
            f.unlinked = True  # still mapped: shmem_evict_inode() at the last unmap
            return
        truncate_inode_pages(self, f)
        self.unregister_mapping(f)

    # --- pages ----------------------------------------------------------------------------

    @property
    def cpu(self) -> int:
        return self.current.cpu if self.current is not None else 0

    def alloc_pages(self, n: int, task) -> np.ndarray:
        """__alloc_pages(): free frames, after global reclaim and OOM below the watermarks."""
        mem = self.mem
        if mem.nr_free - n < self.wmark_low:
            self._alloc_slowpath(n, task)
        if task is not None and task.oom_victim:
            return np.empty(0, np.int32)
        return mem.alloc(min(n, mem.nr_free))

    def _alloc_slowpath(self, n: int, task) -> None:
        """__alloc_pages_slowpath(): wake kswapd (run inline), then direct reclaim and the
        OOM killer while free memory stays under the min watermark."""
        from .mm.oom_kill import out_of_memory
        from .mm.vmscan import balance_pgdat

        mem = self.mem
        dying = (lambda: task is not None and task.oom_victim)
        balance_pgdat(self, self.wmark_high + n)
        while mem.nr_free - n < self.wmark_min and not dying():
            if balance_pgdat(self, self.wmark_min + n):
                continue
            if not out_of_memory(self, task):
                break

    def alloc_and_charge(self, task, memcg: MemCgroup, n: int, user_fault: bool):
        """Allocate n frames and charge them to memcg one page at a time.

        Returns (pfns charged, 0 or the result of the charge that failed).  Frames that
        could not be charged go back to the free lists.
        """
        prev, self.current = self.current, task
        try:
            pfns = self.alloc_pages(n, task)
            charged, ret = charge_pages(self, memcg, len(pfns), task, user_fault)
            if charged < len(pfns):
                self.mem.free(pfns[charged:])
                pfns = pfns[:charged]
            if task is not None and task.oom_victim:
                # The OOM killer chose the charging task: the pages of this step were
                # charged but never mapped, and go with it.
                if len(pfns) and not memcg.is_root():
                    memcg.memory.uncharge(len(pfns))
                    memcg.memsw.uncharge(len(pfns))
                self.mem.free(pfns)
                return pfns[:0], CHARGE_KILLED
            if not ret and len(pfns) < n:
                ret = CHARGE_NOMEM
            return pfns, ret
        finally:
            self.current = prev

    def add_new_pages(self, task, memcg: MemCgroup, mapping: AddressSpace, idx, pfns,
                      flags: int, lru: int, items, events_batch: int | None = None) -> None:
        """Set up freshly charged pages, put them on memcg's LRU, count and commit them.

        events_batch: commit in slices of that many pages, as that many separate
        insertions would (the bulk read path); by default one commit for all.
        """
        mem = self.mem
        n = len(pfns)
        mem.flags[pfns] = flags
        mem.mapping[pfns] = mapping.id
        mem.index[pfns] = idx
        memcg.lruvec.lists[lru].add(mem, pfns)
        self.stats.mod(memcg.id, NR_LRU_BASE + lru, n)
        for item in items:
            self.stats.mod(memcg.id, item, n)
        cpu = task.cpu if task is not None else 0
        step = events_batch or max(n, 1)
        for i in range(0, max(n, 1), step):
            # one commit per folio batch of the caller: the event ratelimit sees each
            self._traced_events([memcg], cpu, commit_charge, self, memcg, pfns[i:i + step], cpu)

    def _by_memcg_lru(self, pfns: np.ndarray):
        """Group pages by (memcg id, lru); yields (memcg, lru, pfns)."""
        mem = self.mem
        key = mem.memcg[pfns].astype(np.int64) * 8 + mem.lru[pfns].astype(np.int64) + 1
        order = np.argsort(key, kind="stable")
        keys = key[order]
        bounds = np.flatnonzero(np.diff(keys)) + 1
        for part in np.split(order, bounds):
            if not len(part):
                continue
            k = int(key[part[0]])
            memcg_id, lru = k // 8, (k % 8) - 1
            yield self.memcgs[memcg_id], lru, pfns[part]

    def lru_del(self, pfns: np.ndarray) -> None:
        """folio_del_from_lru_list() for pages being freed or moved."""
        on = pfns[self.mem.lru[pfns] != LRU_NONE]
        if not len(on):
            return
        for memcg, lru, part in self._by_memcg_lru(on):
            memcg.lruvec.lists[lru].forget(len(part))
            self.stats.mod(memcg.id, NR_LRU_BASE + lru, -len(part))
        self.mem.lru[on] = LRU_NONE

    def mark_page_accessed(self, pfns: np.ndarray) -> None:
        """folio_mark_accessed(): inactive,unreferenced -> referenced -> active."""
        mem = self.mem
        pfns = pfns[pfns >= 0]
        if not len(pfns):
            return
        f = mem.flags[pfns]
        unref = (f & PG_referenced) == 0
        mem.flags[pfns[unref]] |= PG_referenced
        lru = mem.lru[pfns]
        promote = pfns[~unref & ((lru == LRU_INACTIVE_ANON) | (lru == LRU_INACTIVE_FILE))]
        if not len(promote):
            return
        for memcg, lru_id, part in self._by_memcg_lru(promote):
            memcg.lruvec.lists[lru_id].forget(len(part))
            self.stats.mod(memcg.id, NR_LRU_BASE + lru_id, -len(part))
            memcg.lruvec.lists[lru_id + 1].add(mem, part)
            self.stats.mod(memcg.id, NR_LRU_BASE + lru_id + 1, len(part))
            self.stats.mod(memcg.id, PGACTIVATE, len(part))
        mem.flags[promote] &= np.uint8(~PG_referenced & 0xFF)

    def set_page_dirty(self, pfns: np.ndarray) -> None:
        """folio_mark_dirty(): count newly dirtied pages in NR_FILE_DIRTY."""
        clean = pfns[(self.mem.flags[pfns] & PG_dirty) == 0]
        if len(clean):
            self.mem.flags[clean] |= PG_dirty
            self.stats.mod_many(self.mem.memcg[clean], NR_FILE_DIRTY, 1)

    def writeback_done(self, pfns: np.ndarray) -> None:
        """folio_end_writeback() for pages vmscan sent to the flusher (already cleaned)."""
        self.stats.mod_many(self.mem.memcg[pfns], NR_FILE_DIRTY, -1)

    def free_user_pages(self, pfns: np.ndarray, memsw: bool = True) -> None:
        """Uncharge pages (already off the LRU) and give the frames back."""
        if self.reclaim_trace is not None and len(pfns):
            memcgs = [self.memcgs[i] for i in np.unique(self.mem.memcg[pfns]).tolist() if i]
            self._traced_events(memcgs, self.cpu, uncharge_pages, self, pfns, self.cpu,
                                memsw=memsw)
        else:
            uncharge_pages(self, pfns, self.cpu, memsw=memsw)
        self.mem.free(pfns)

    def _traced_events(self, memcgs: list, cpu: int, fn, *args, **kwargs) -> None:
        """Run fn; while a reclaim trace is kept, record the page events it counted."""
        trace = self.reclaim_trace
        if trace is None:
            fn(*args, **kwargs)
            return
        before = [m.nr_page_events[cpu] for m in memcgs]
        fn(*args, **kwargs)
        for m, b in zip(memcgs, before):
            if m.nr_page_events[cpu] != b:
                trace.append(("e", m.id, cpu, m.nr_page_events[cpu] - b))

    def free_swap(self, slots: np.ndarray) -> None:
        """swap_free() + mem_cgroup_uncharge_swap(): memsw goes back to the recorded memcg."""
        ids = self.swap.swap_cgroup[slots]
        uids, counts = np.unique(ids, return_counts=True)
        for memcg_id, n in zip(uids.tolist(), counts.tolist()):
            memcg = self.memcgs.get(memcg_id)
            if memcg is None:
                continue
            if not memcg.is_root():
                memcg.memsw.uncharge(n)
            self.stats.mod(memcg_id, MEMCG_SWAP, -n)
        self.swap.free(slots)
        self.maybe_free_dying()

    def reclaim_pages(self, pfns: np.ndarray) -> np.ndarray:
        """Evict isolated pages through their address space; returns the pages freed."""
        mids = self.mem.mapping[pfns]
        freed = []
        for mid in np.unique(mids).tolist():
            part = pfns[mids == mid]
            freed.append(self.mappings[mid].evict(self, part))
        return np.concatenate(freed) if freed else pfns[:0]

    # --- background work ------------------------------------------------------------------

    def flush_dirty(self) -> None:
        """The flusher (wb_workfn): write back inodes dirty for longer than the expire
        interval, and the oldest ones while dirty pages exceed the background ratio."""
        dirty_total = int(self.stats.a[:, NR_FILE_DIRTY].sum())
        if not dirty_total:
            return
        limit = (self.mem.nr_free + int(self.stats.a[:, 0].sum())) * DIRTY_BACKGROUND_RATIO // 100
        files = sorted((f for f in self.files.values() if f.dirtied_when is not None),
                       key=lambda f: f.dirtied_when)
        for f in files:
            expired = self.clock.now - f.dirtied_when >= DIRTY_EXPIRE_TICKS
            if not expired and dirty_total <= limit:
                continue
            s = f.slots
            pfns = s[s >= 0]
            pfns = pfns[(self.mem.flags[pfns] & PG_dirty) != 0]
            self.mem.flags[pfns] &= np.uint8(~PG_dirty & 0xFF)
            self.stats.mod_many(self.mem.memcg[pfns], NR_FILE_DIRTY, -1)
            dirty_total -= len(pfns)
            f.dirtied_when = None

    # --- events -----------------------------------------------------------------------------

    def unregister_eventfd(self, efd) -> None:
        """Closing an eventfd removes its registrations everywhere (memcg_event_wake)."""
        from .mm.memcontrol_v1 import memcg_unregister_event
        from .mm.mempressure import shrinker_unregister_event
        from .mm.vmpressure import vmpressure_unregister_event

        for memcg in list(self.memcgs.values()):
            if memcg_unregister_event(self, memcg, efd):
                vmpressure_unregister_event(self, memcg, efd)
                shrinker_unregister_event(self, memcg, efd)

    # --- tasks ----------------------------------------------------------------------------

    def spawn_task(self, memcg: MemCgroup):
        """fork() of a new process into memcg; CPUs are handed out round-robin."""
        from .tasks import SimTask

        pid = self._next_pid
        self._next_pid += 1
        task = SimTask(self, pid, memcg, cpu=(pid - 1000) % self.cpus)
        self.tasks[pid] = task
        return task

    def attach_task(self, task, memcg: MemCgroup) -> None:
        """cgroup_attach_task(): the task changes group; its charges stay where they were
        (charge moving at immigration is gone from today's kernel)."""
        if task.memcg is memcg:
            return
        task.memcg.tasks.remove(task)
        memcg.tasks.append(task)
        task.memcg = memcg

    def lookup_memcg(self, path: str) -> MemCgroup:
        """Resolve "/a/b" to an online group; ENOENT if there is none."""
        memcg = self.root
        for name in [p for p in path.split("/") if p]:
            child = memcg.online_children.get(name)
            if child is None:
                raise FileNotFoundError(errno.ENOENT, f"No such file or directory: {path}")
            memcg = child
        return memcg

    def check_fs(self, fs: str) -> None:
        """ValueError unless fs names a mounted file system ("ext4" or "tmpfs")."""
        if fs not in self.super_blocks:
            raise ValueError(f"fs: expected one of {', '.join(self.super_blocks)}, got {fs!r}")

    def mkdirs(self, task, n: int, fs: str = "ext4") -> None:
        """n mkdir()s on fs by task: dentries, inodes (and ext4 blocks) charged to its group."""
        from .fs.dcache import vfs_create_many
        vfs_create_many(self, task, fs, n, is_dir=True)

    def create_files(self, task, n: int, fs: str = "ext4") -> None:
        """n creat()s of empty files on fs by task."""
        from .fs.dcache import vfs_create_many
        vfs_create_many(self, task, fs, n, is_dir=False)


def wb_workfn(sys: System) -> None:
    """fs/fs-writeback.c: wb_workfn(): the flusher writes back, then re-arms itself for
    the next dirty_writeback_interval."""
    sys.flush_dirty()
    sched.mod_timer(sys.clock, sys.wb_dwork, sys.clock.now + DIRTY_WRITEBACK_TICKS)
