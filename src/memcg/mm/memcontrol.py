"""Memory cgroups: the groups, charging and uncharging, the per-CPU charge stock.

Follows mm/memcontrol.c as of Linux 6.18 (cgroup v1 files: mm/memcontrol-v1.c).
Charges are counted in pages on page counters (mm/page_counter.c); every group's
counters are children of its parent's (always hierarchical since 5.11).  The root
group's counters are never charged by the fast path (`mem_cgroup_is_root`), so its
memory.usage_in_bytes is computed from statistics, as the kernel does.
"""

from __future__ import annotations

import errno
import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .. import cgroup, psi, sched
from ..kernel import PAGE_SIZE
from ..net import sock
from . import fastpath, list_lru
from .mmzone import Lruvec, NR_LRU_LISTS, run_slice
from .page_counter import PAGE_COUNTER_MAX, PageCounter, page_counter_calculate_protection

if TYPE_CHECKING:
    from ..system import System
    from ..tasks import Task

# arch/x86/include/asm/page_types.h: PAGE_SHIFT
PAGE_SHIFT = 12
# include/linux/memcontrol.h: MEMCG_CHARGE_BATCH (32 until 6.0, 64 since 6.1)
MEMCG_CHARGE_BATCH = 64
# mm/memcontrol.c: NR_MEMCG_STOCK - memcgs cached per CPU (6.16+)
NR_MEMCG_STOCK = 7
# mm/internal.h: MAX_RECLAIM_RETRIES (memcg uses it since 5.9)
MAX_RECLAIM_RETRIES = 16
# include/linux/mmzone.h: PAGE_ALLOC_COSTLY_ORDER
PAGE_ALLOC_COSTLY_ORDER = 3
# include/linux/memcontrol.h: MEM_CGROUP_ID_MAX
MEM_CGROUP_ID_MAX = 65535
# mm/memcontrol-v1.c: THRESHOLDS_EVENTS_TARGET, SOFTLIMIT_EVENTS_TARGET
THRESHOLDS_EVENTS_TARGET = 128
SOFTLIMIT_EVENTS_TARGET = 1024

# Statistics items, named after enum node_stat_item / memcg_stat_item / vm_event_item.
(NR_FILE_PAGES, NR_ANON_MAPPED, NR_ANON_THPS, NR_SHMEM, NR_FILE_MAPPED, NR_FILE_DIRTY,
 NR_WRITEBACK, WORKINGSET_REFAULT_ANON, WORKINGSET_REFAULT_FILE, MEMCG_SWAP, NR_SWAPCACHE,
 PGPGIN, PGPGOUT, PGFAULT, PGMAJFAULT, NR_LRU_BASE) = range(16)
(WORKINGSET_ACTIVATE_ANON, WORKINGSET_ACTIVATE_FILE, PGSCAN, PGSTEAL, PGREFILL,
 PGACTIVATE, PGDEACTIVATE) = range(NR_LRU_BASE + NR_LRU_LISTS, NR_LRU_BASE + NR_LRU_LISTS + 7)
# the kernel's own memory by kind (cgroup v2's memory.stat): slab bytes (mod_objcg_state),
# kernel stacks in KiB (kernel/fork.c: account_kernel_stack), page-table pages
# (include/linux/mm.h: __pagetable_ctor), per-CPU bytes (mm/percpu.c:
# pcpu_memcg_post_alloc_hook)
(NR_SLAB_RECLAIMABLE_B, NR_SLAB_UNRECLAIMABLE_B, NR_KERNEL_STACK_KB, NR_PAGETABLE,
 MEMCG_PERCPU_B) = range(NR_LRU_BASE + NR_LRU_LISTS + 7, NR_LRU_BASE + NR_LRU_LISTS + 12)
NR_STAT_ITEMS = NR_LRU_BASE + NR_LRU_LISTS + 12

# include/linux/memcontrol.h: enum memcg_memory_event - the counts of memory.events,
# memory.events.local and memory.swap.events (v2), and of oom_control's oom_kill (v1)
(MEMCG_LOW, MEMCG_HIGH, MEMCG_MAX, MEMCG_OOM, MEMCG_OOM_KILL, MEMCG_OOM_GROUP_KILL,
 MEMCG_SWAP_HIGH, MEMCG_SWAP_MAX, MEMCG_SWAP_FAIL, MEMCG_SOCK_THROTTLED,
 MEMCG_NR_MEMORY_EVENTS) = range(11)


# A table of up to this many rows is summed whole: cheaper than gathering the used rows.
STAT_ROWS_SUMMED = 512


class StatTable:
    """Per-memcg statistics: one row of counters per memcg id (local values only).

    Every change goes through mod(), mod_many(), add_table(), add_row() or clear_row(),
    which note the row: `updated` holds the rows changed since the last flush of every
    group (the kernel's rstat updated tree, css_rstat_updated(), which css_rstat_flush()
    walks instead of every cgroup), `used` every row ever changed.  The other rows are all
    zeros, so a machine-wide total sums the used rows alone: the cost of a flush or a
    total grows with the groups that did something, not with the groups that exist.
    """

    def __init__(self, rows: int = 64):
        self.a = np.zeros((rows, NR_STAT_ITEMS), np.int64)
        # the LRU sizes (local) as the last periodic flush saw them: flush_memcg_stats_dwork
        self.flushed = np.zeros((rows, NR_LRU_LISTS), np.int64)
        self.updated: set[int] = set()
        self.used: set[int] = set()
        self._used_rows = np.zeros(0, np.intp)  # `used` as an index, made when asked for

    def ensure(self, memcg_id: int) -> None:
        if memcg_id >= len(self.a):
            rows = max(memcg_id + 1, 2 * len(self.a))
            grown = np.zeros((rows, NR_STAT_ITEMS), np.int64)
            grown[:len(self.a)] = self.a
            self.a = grown
            flushed = np.zeros((rows, NR_LRU_LISTS), np.int64)
            flushed[:len(self.flushed)] = self.flushed
            self.flushed = flushed

    def mod(self, memcg_id: int, item: int, delta: int) -> None:
        self.a[memcg_id, item] += delta
        self.updated.add(memcg_id)

    def mod_many(self, ids: np.ndarray, item: int, delta: int = 1) -> None:
        """Add delta per page to item of each page's memcg (ids may repeat)."""
        if not len(ids):
            return
        first = ids[0]
        if (ids == first).all():  # the common case, pages of one group: one add
            self.a[first, item] += delta * len(ids)
            self.updated.add(int(first))
        else:
            np.add.at(self.a[:, item], ids, delta)
            self.updated.update(np.unique(ids).tolist())

    def add_table(self, delta: np.ndarray) -> None:
        """Add a whole table of changes (rows as in `a`)."""
        self.a += delta
        self.updated.update(np.flatnonzero(delta.any(axis=1)).tolist())

    def add_row(self, memcg_id: int, row: np.ndarray) -> None:
        """Add a row of counts to a group's (a freed child's, mem_cgroup_free)."""
        self.a[memcg_id] += row
        self.updated.add(memcg_id)

    def clear_row(self, memcg_id: int) -> None:
        """Zero the row of a group that goes (mem_cgroup_free)."""
        self.a[memcg_id] = 0
        self.updated.add(memcg_id)

    def take_updated(self) -> np.ndarray:
        """The rows changed since the last call, as an index, and none left pending
        (css_rstat_flush of the root: the updated tree emptied)."""
        rows = np.fromiter(sorted(self.updated), np.intp, len(self.updated))
        self.used |= self.updated
        self.updated.clear()
        return rows

    def total(self, item: int) -> int:
        """item summed over every row: the machine-wide count (global_node_page_state()
        in the kernel, a node counter kept beside the memcg ones)."""
        if len(self.a) <= STAT_ROWS_SUMMED or \
                8 * (len(self.used) + len(self.updated)) >= len(self.a):
            return int(self.a[:, item].sum())  # few rows, or most of them in use
        self.used |= self.updated
        if len(self._used_rows) != len(self.used):  # `used` only grows
            self._used_rows = np.fromiter(sorted(self.used), np.intp, len(self.used))
        return int(self.a[self._used_rows, item].sum())


class ListHead(dict):
    """A struct list_head of groups: insertion order, O(1) add and delete.

    Iterates, tests and counts like a list; `append` is list_add_tail, `remove` list_del.
    """

    def append(self, item) -> None:
        self[item] = None

    def remove(self, item) -> None:
        del self[item]


@dataclass(eq=False)
class MemCgroup:
    """struct mem_cgroup, with the v1 state that memcontrol-v1.c keeps beside it."""

    id: int
    name: str
    parent: MemCgroup | None
    memory: PageCounter
    memsw: PageCounter
    kmem: PageCounter
    tcpmem: PageCounter
    lruvec: Lruvec = field(default_factory=Lruvec)
    children: ListHead = field(default_factory=ListHead)  # online and dying, in creation order
    tasks: list = field(default_factory=list)  # tasks in the order they joined
    soft_limit: int = PAGE_COUNTER_MAX
    swappiness: int = 60  # mm/vmscan.c: vm_swappiness default
    oom_kill_disable: int = 0
    under_oom: int = 0
    oom_lock: bool = False
    online: bool = True
    move_charge_at_immigrate: int = 0
    # the subtree's LRU sizes as this group's own last statistics flush left them (a
    # memory.stat read: mem_cgroup_flush_stats), and that flush's number (System.stats_flushes)
    lru_flushed: object = None
    lru_flush_seq: int = 0
    # memory.usage_in_bytes / memsw thresholds: sorted [(pages, eventfd)], and the index
    # of the last threshold at or below usage (mem_cgroup_threshold_ary.current_threshold)
    thresholds: list = field(default_factory=list)
    current_threshold: int = -1
    memsw_thresholds: list = field(default_factory=list)
    memsw_current_threshold: int = -1
    oom_notify: list = field(default_factory=list)  # eventfds on memory.oom_control
    event_list: list = field(default_factory=list)  # every cgroup.event_control registration
    # per-CPU nr_page_events and ratelimit targets (mem_cgroup_event_ratelimit)
    nr_page_events: list = field(default_factory=list)
    thresh_target: list = field(default_factory=list)
    softlimit_target: list = field(default_factory=list)
    reclaim_iter: MemCgroup | None = None  # mem_cgroup_reclaim_iter position
    online_children: dict = field(default_factory=dict)  # name -> online child (the cgroup dir)
    # kernel memory (see the kmem section below and slab.py)
    kmemcg_id: int = -1  # memcg_cache_id(): index into the per-group arrays, -1: none
    kmem_active: bool = False  # 3.8: KMEM_ACCOUNTED_ACTIVE (accounting was switched on)
    kmem_dead: bool = False  # 3.8: KMEM_ACCOUNTED_DEAD (offline with kmem charges left)
    kmem_independent: int | None = None  # 3.8 + the 2011 proposal: memory.independent_kmem_limit
    objcg: ObjCgroup | None = None  # 5.9+: memcg->objcg, the current object cgroup
    orig_objcg: ObjCgroup | None = None  # 6.x: memcg->orig_objcg, the group's first objcg
    buffer_heads: int = 0  # buffer heads of pages charged here (fs/buffer.py)
    objcg_list: list = field(default_factory=list)  # 5.9+: objcgs reparented to this memcg
    memcg_slab_caches: list = field(default_factory=list)  # 3.8: this group's cache copies
    stats_objs: list = field(default_factory=list)  # 6.18: its statistics, charged to the parent
    # cgroup v2: memcg->swap (memory.swap.*; v1 uses memsw instead), the memory events
    # counted here and below (memory_events) and here only (memory_events_local), and
    # memory.oom.group
    swap: PageCounter = field(default_factory=PageCounter)
    memory_events: list = field(default_factory=lambda: [0] * MEMCG_NR_MEMORY_EVENTS)
    memory_events_local: list = field(default_factory=lambda: [0] * MEMCG_NR_MEMORY_EVENTS)
    oom_group: bool = False
    # cgroup->psi: the group's pressure stall state (psi.py; v2 only)
    psi: object = None
    # memcg->high_work queued (an over-high charge outside any task, try_charge_memcg)
    high_work_pending: bool = False

    @property
    def path(self) -> str:
        if self.parent is None:
            return "/"
        p = self.parent.path
        return (p if p != "/" else "") + "/" + self.name

    def is_root(self) -> bool:
        return self.parent is None

    def ancestors(self):
        """This memcg and its parents up to the root."""
        m = self
        while m is not None:
            yield m
            m = m.parent

    def subtree(self):
        """mem_cgroup_iter() order: this memcg, then descendants in pre-order (dying too)."""
        yield self
        # mm/memcontrol.c: mem_cgroup_iter() walks with css references and skips a css
        # that was freed meanwhile (css_tryget fails); a dying child can be freed while
        # the caller reclaims from it, so walk a snapshot and skip what has gone.
        for c in list(self.children):
            if c in self.children:
                yield from c.subtree()

    def is_descendant(self, root: MemCgroup) -> bool:
        """mem_cgroup_is_descendant()."""
        return any(m is root for m in self.ancestors())


def mem_cgroup_alloc(sys: System, parent: MemCgroup | None, name: str) -> MemCgroup:
    """mem_cgroup_css_alloc() + css_online(): a new group linked below parent.

    swappiness and oom_kill_disable are inherited; move_charge_at_immigrate starts at 0.
    """
    memcg_id = mem_cgroup_alloc_id(sys)
    stats = []
    if parent is not None and sys.semantics != "3.8":
        # mm/memcontrol.c: mem_cgroup_css_alloc() allocates the new group's statistics
        # under set_active_memcg(parent) (5.13+): the parent pays for them
        old_memcg = set_active_memcg(sys, parent)
        try:
            stats = mem_cgroup_alloc_stats(sys)
        finally:
            set_active_memcg(sys, old_memcg)
        if isinstance(stats, int):
            mem_cgroup_id_remove(sys, memcg_id)
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
    pc = (lambda p: PageCounter(parent=p))
    memcg = MemCgroup(
        id=memcg_id, name=name, parent=parent,
        memory=pc(parent.memory if parent else None),
        memsw=pc(parent.memsw if parent else None),
        kmem=pc(parent.kmem if parent else None),
        # mm/memcontrol.c: page_counter_init(&memcg->tcpmem, ..., false)
        tcpmem=PageCounter(parent=parent.tcpmem if parent else None, track_failcnt=False),
        swap=pc(parent.swap if parent else None),
    )
    # mm/memcontrol.c: mem_cgroup_css_alloc() - on the default hierarchy memory tracks
    # protected usage and failcnt is v1's alone (page_counter_init(..., protection_support))
    memcg.memory.protection_support = sys.cgroup_dfl
    memcg.stats_objs = stats
    if parent is not None:
        try:
            memcg_online_kmem(sys, memcg)  # may fail with ENOSPC: the kmemcg ids are gone
        except OSError:
            mem_cgroup_id_remove(sys, memcg_id)
            mem_cgroup_free_stats(sys, stats)
            raise
    for c in (memcg.memory, memcg.memsw, memcg.kmem, memcg.tcpmem, memcg.swap):
        c.owner = memcg  # container_of(counter, struct mem_cgroup, memory)
    if parent is not None:
        memcg.swappiness = parent.swappiness
        memcg.oom_kill_disable = parent.oom_kill_disable
        parent.children.append(memcg)
        parent.online_children[name] = memcg
    if parent is not None:
        sock.memcg_sockets_online(sys, memcg)
    memcg.nr_page_events = [0] * sys.cpus
    memcg.thresh_target = [0] * sys.cpus
    memcg.softlimit_target = [0] * sys.cpus
    sys.memcgs[memcg_id] = memcg
    sys.stats.ensure(memcg_id)
    sys.stats.flushed[memcg_id] = 0  # a new group: nothing of it was flushed yet
    psi.psi_cgroup_alloc(sys, memcg)  # kernel/cgroup/cgroup.c: cgroup_create()
    return memcg


# Sizes of the statistics a group allocates with GFP_KERNEL_ACCOUNT, from the BTF of the
# reference machine's kernel (/sys/kernel/btf/vmlinux, Linux 6.18, x86-64): they depend
# on the configuration (the number of stat items and events).
SIZEOF_MEMCG_VMSTATS = 1712  # struct memcg_vmstats (kzalloc)
SIZEOF_MEMCG_VMSTATS_PERCPU = 1216  # struct memcg_vmstats_percpu (alloc_percpu_gfp)
SIZEOF_MEMCG1_EVENTS_PERCPU = 24  # struct memcg1_events_percpu (mm/memcontrol-v1.c)
SIZEOF_LRUVEC_STATS = 792  # struct lruvec_stats (kzalloc_node, per node)
SIZEOF_LRUVEC_STATS_PERCPU = 528  # struct lruvec_stats_percpu (alloc_percpu_gfp, per node)
# include/linux/nodemask.h: nr_node_ids - the model has one NUMA node
NR_NODE_IDS = 1


def mem_cgroup_alloc_stats(sys: System) -> list | int:
    """The accounted allocations of mem_cgroup_alloc(), in its order: memcg->vmstats,
    vmstats_percpu, memcg1_alloc_events() and, per node, alloc_mem_cgroup_per_node_info()'s
    lruvec_stats and lruvec_stats_percpu.  The struct mem_cgroup and mem_cgroup_per_node
    themselves are GFP_KERNEL: not charged.

    Returns the objects in the order __mem_cgroup_free() frees them, or the failed
    charge's result once what was charged before it has been freed again (the fail: path).
    """
    from . import percpu, slab  # late: both import names from here at load

    steps = [("vmstats", slab.kmalloc, SIZEOF_MEMCG_VMSTATS),
             ("vmstats_percpu", percpu.pcpu_alloc, SIZEOF_MEMCG_VMSTATS_PERCPU),
             ("events_percpu", percpu.pcpu_alloc, SIZEOF_MEMCG1_EVENTS_PERCPU)]
    for node in range(NR_NODE_IDS):
        steps += [(("lruvec_stats", node), slab.kmalloc, SIZEOF_LRUVEC_STATS),
                  (("lruvec_stats_percpu", node), percpu.pcpu_alloc, SIZEOF_LRUVEC_STATS_PERCPU)]
    made = {}
    for what, alloc, size in steps:
        obj = alloc(sys, size, None)
        if isinstance(obj, int):
            mem_cgroup_free_stats(sys, _free_order(made))
            return obj
        made[what] = obj
    return _free_order(made)


def _free_order(made: dict) -> list:
    """__mem_cgroup_free(): per node free_mem_cgroup_per_node_info() (lruvec_stats_percpu,
    then lruvec_stats), then memcg1_free_events(), kfree(vmstats), free_percpu(vmstats_percpu)."""
    order = []
    for node in range(NR_NODE_IDS):
        order += [("lruvec_stats_percpu", node), ("lruvec_stats", node)]
    order += ["events_percpu", "vmstats", "vmstats_percpu"]
    return [made[w] for w in order if w in made]


def mem_cgroup_free_stats(sys: System, objs: list) -> None:
    """Free the statistics' objects (kfree / free_percpu), which uncharges whoever pays."""
    from . import percpu, slab  # late: both import names from here at load

    for obj in objs:
        if isinstance(obj, percpu.PcpuObject):
            percpu.free_percpu(sys, obj)
        else:
            slab.kmem_cache_free(sys, obj)


def mem_cgroup_alloc_id(sys: System) -> int:
    """mem_cgroup_alloc_id(): the lowest free id in 1..MEM_CGROUP_ID_MAX, else ENOSPC."""
    if sys._free_ids:
        return heapq.heappop(sys._free_ids)
    if sys._next_id > MEM_CGROUP_ID_MAX:
        raise OSError(errno.ENOSPC, "No space left on device")
    sys._next_id += 1
    return sys._next_id - 1


def mem_cgroup_id_remove(sys: System, memcg_id: int) -> None:
    """mem_cgroup_id_remove() (idr_remove): give back an id that no group got after all."""
    heapq.heappush(sys._free_ids, memcg_id)


def maybe_free_dying(sys: System, memcg: MemCgroup | None = None) -> None:
    """css_free(): a dying group goes once nothing is charged to it any more.

    With memcg, only that group (and then its dying parents) is looked at: the
    cheap check after one group's charge went, for machines with many dying groups.
    """
    if not sys.dying:
        return
    for memcg in ([memcg] if memcg is not None else list(sys.dying)):
        if memcg.online or sys.memcgs.get(memcg.id) is not memcg:
            continue  # online, or freed already
        if memcg.memory.usage or memcg.memsw.usage or memcg.kmem.usage or memcg.children:
            continue
        if sock.memcg_has_sockets(sys, memcg):  # sockets hold a css reference
            continue
        sys.dying.remove(memcg)
        mem_cgroup_free(sys, memcg)


def mem_cgroup_free(sys: System, memcg: MemCgroup) -> None:
    """mem_cgroup_css_free() + mem_cgroup_free(): the group's events go to its parent's
    record, its stocks and kmem state and id go, then a dying parent may go too."""
    parent = memcg.parent
    parent.children.remove(memcg)
    sys.dead_stats.ensure(parent.id)
    sys.dead_stats.ensure(memcg.id)
    sys.dead_stats.add_row(parent.id, sys.stats.a[memcg.id] + sys.dead_stats.a[memcg.id])
    sys.stats.clear_row(memcg.id)
    sys.dead_stats.clear_row(memcg.id)
    sys.soft_limit_tree.pop(memcg.id, None)
    sys._vmpressure.pop(memcg.id, None)
    for s in sys.stock:
        for i, c in enumerate(s.cached):
            if c is memcg:
                s.cached[i] = None
                s.nr_pages[i] = 0
    memcg_free_kmem(sys, memcg)
    psi.psi_cgroup_free(sys, memcg)
    sock.memcg_sock_free(sys, memcg)  # the socket static key reference goes
    del sys.memcgs[memcg.id]
    heapq.heappush(sys._free_ids, memcg.id)
    # __mem_cgroup_free(): the statistics go, uncharged from the parent's objcg (now
    # perhaps a further ancestor's: memcg_reparent_objcgs); last, since what that gives
    # back may let a dying ancestor go too
    stats, memcg.stats_objs = memcg.stats_objs, []
    mem_cgroup_free_stats(sys, stats)
    if not parent.online:
        maybe_free_dying(sys, parent)


# --- the per-CPU charge stock (mm/memcontrol.c: memcg_stock_pcp, 6.16+) -------------

@dataclass
class MemcgStock:
    """struct memcg_stock_pcp: up to NR_MEMCG_STOCK memcgs with pre-charged pages."""

    cached: list = field(default_factory=lambda: [None] * NR_MEMCG_STOCK)
    nr_pages: list = field(default_factory=lambda: [0] * NR_MEMCG_STOCK)


def consume_stock(sys: System, memcg: MemCgroup, nr_pages: int, cpu: int) -> int:
    """consume_stock(): take up to nr_pages of this CPU's stock for memcg.

    The kernel takes a single charge from the stock only when the stock covers all of it;
    a bulk of n one-page charges therefore takes min(stock, n) pages.  Returns pages taken.
    """
    stock = sys.stock[cpu]
    for i, cached in enumerate(stock.cached):
        if cached is memcg:
            taken = min(stock.nr_pages[i], nr_pages)
            stock.nr_pages[i] -= taken
            return taken
    return 0


def drain_stock(stock: MemcgStock, i: int) -> None:
    """drain_stock(): give one slot's pre-charged pages back to its counters."""
    memcg = stock.cached[i]
    if memcg is None:
        return
    n = stock.nr_pages[i]
    if n:
        memcg.memory.uncharge(n)
        memcg.memsw.uncharge(n)  # do_memsw_account(): always on v1
    stock.nr_pages[i] = 0
    stock.cached[i] = None


def refill_stock(sys: System, memcg: MemCgroup, nr_pages: int, cpu: int) -> None:
    """refill_stock(): park pre-charged pages in this CPU's stock.

    A slot holding more than MEMCG_CHARGE_BATCH pages is drained; with every slot taken
    by other memcgs a random one is evicted (get_random_u32_below(NR_MEMCG_STOCK)).
    """
    stock = sys.stock[cpu]
    empty = -1
    for i, cached in enumerate(stock.cached):
        if cached is None and empty == -1:
            empty = i
        if cached is memcg:
            stock.nr_pages[i] += nr_pages
            if stock.nr_pages[i] > MEMCG_CHARGE_BATCH:
                drain_stock(stock, i)
            return
    i = empty
    if i == -1:
        i = sys.rng.randrange(NR_MEMCG_STOCK)
        drain_stock(stock, i)
    stock.cached[i] = memcg
    stock.nr_pages[i] = nr_pages
    if nr_pages > MEMCG_CHARGE_BATCH:
        drain_stock(stock, i)


def drain_all_stock(sys: System, root_memcg: MemCgroup) -> None:
    """drain_all_stock(): drain every CPU whose stock caches root_memcg or a descendant.

    As in 6.16+, such a CPU's whole stock is drained, other memcgs' slots included.
    The object stocks go first (obj_stock_flush_required): their whole pages come back
    through the memcg stock.
    """
    for cpu, ostock in enumerate(getattr(sys, "obj_stock", ())):
        objcg = ostock.cached_objcg
        if objcg is not None and objcg.memcg.is_descendant(root_memcg):
            drain_obj_stock(sys, ostock, cpu)
    for stock in sys.stock:
        if any(c is not None and c.is_descendant(root_memcg) for c in stock.cached):
            for i in range(NR_MEMCG_STOCK):
                drain_stock(stock, i)


def stock_pages(sys: System, memcg: MemCgroup) -> int:
    """Pages pre-charged to memcg itself in all CPUs' stocks."""
    return sum(n for s in sys.stock for c, n in zip(s.cached, s.nr_pages) if c is memcg)


# --- charging -------------------------------------------------------------------------

def mem_cgroup_margin(memcg: MemCgroup) -> int:
    """mem_cgroup_margin(): room below the memory and memsw limits of memcg itself."""
    return min(memcg.memory.margin(), memcg.memsw.margin())


def hierarchy_margin(memcg: MemCgroup) -> int:
    """The most pages that could be charged right now without any level failing - or,
    on v2, going over its memory.high (a charge past it takes try_charge_memcg()'s
    over-high path): 0 while any level's swap is over its swap.high."""
    m = PAGE_COUNTER_MAX
    c = memcg.memory
    while c is not None:  # (plain walks up the levels: this runs at every charge batch)
        u = c.usage
        if c.max - u < m:
            m = c.max - u
        if c.high - u < m:
            m = c.high - u
        c = c.parent
    c = memcg.memsw
    while c is not None:
        if c.max - c.usage < m:
            m = c.max - c.usage
        c = c.parent
    c = memcg.swap
    while c is not None:
        if c.usage > c.high:
            return 0
        c = c.parent
    return m if m > 0 else 0


def high_limited(memcg: MemCgroup) -> bool:
    """hierarchy_margin() is bound by a memory.high (or a swap.high breached), not by a
    max: a charge batch would pass, over the high."""
    if any(c.usage > c.high for c in memcg.swap.ancestors()):
        return True
    to_high = min(c.high - c.usage for c in memcg.memory.ancestors())
    to_max = min(min(c.max - c.usage for c in memcg.memory.ancestors()),
                 min(c.max - c.usage for c in memcg.memsw.ancestors()))
    return to_high < to_max


# Results of try_charge_memcg() besides 0.
CHARGE_NOMEM = -errno.ENOMEM
CHARGE_OOM_WAIT = 1  # v1 oom_kill_disable: the faulting task sleeps (memcg_in_oom)
CHARGE_KILLED = 2  # the charging task itself was chosen by the OOM killer
# v2: a synchronous memory.high reclaim in a user fault left a penalty; the fault stops
# here and the task sleeps it (mem_cgroup_handle_over_high), then goes on where it stopped
CHARGE_THROTTLED = 3


def try_charge_memcg(sys: System, memcg: MemCgroup, nr_pages: int, task: Task | None,
                     user_fault: bool = False) -> int:
    """try_charge_memcg() (mm/memcontrol.c, 6.x): charge nr_pages or reclaim, retry, OOM.

    Returns 0 on success, CHARGE_NOMEM, CHARGE_OOM_WAIT (v1 oom_kill_disable in a user
    fault: the caller puts the task to sleep) or CHARGE_KILLED.
    """
    from . import memcontrol_v1, vmscan  # late: both import names from here at load

    if memcg.is_root():
        return 0
    cpu = task.cpu if task is not None else 0
    batch = max(MEMCG_CHARGE_BATCH, nr_pages)
    nr_retries = MAX_RECLAIM_RETRIES
    drained = False
    passed_oom = False
    while True:
        if nr_pages <= MEMCG_CHARGE_BATCH and _stock_covers(sys, memcg, nr_pages, cpu):
            consume_stock(sys, memcg, nr_pages, cpu)
            return 0
        may_swap = True
        fail = memcg.memsw.try_charge(batch)  # do_memsw_account(): memsw first
        if fail is None:
            fail = memcg.memory.try_charge(batch)
            if fail is None:
                if batch > nr_pages:
                    refill_stock(sys, memcg, batch - nr_pages, cpu)
                if sys.cgroup_dfl:
                    charge_over_high(sys, memcg, batch, task)
                return 0
            memcg.memsw.uncharge(batch)
            mem_over_limit = fail.owner
        else:
            mem_over_limit = fail.owner
            may_swap = False  # the memsw limit was hit: swapping cannot help
        if batch > nr_pages:
            batch = nr_pages
            continue
        # mm/memcontrol.c: try_charge_memcg() raises MEMCG_MAX on every reclaim attempt
        memcg_memory_event(sys, mem_over_limit, MEMCG_MAX)
        # mm/memcontrol.c: direct reclaim is a memory stall (psi_memstall_enter/leave)
        pflags = psi.psi_memstall_enter(sys, task)
        nr_reclaimed = vmscan.try_to_free_mem_cgroup_pages(sys, mem_over_limit, nr_pages, may_swap)
        psi.psi_memstall_leave(sys, task, pflags)
        # User-space threads woken by reclaim (pressure listeners, userspace shrinkers) run
        # while this task retries; memory they free lets the charge succeed.
        sched.cond_resched(sys.clock)
        if mem_cgroup_margin(mem_over_limit) >= nr_pages:
            continue
        if not drained:
            drain_all_stock(sys, mem_over_limit)
            drained = True
            continue
        if nr_reclaimed and nr_pages <= (1 << PAGE_ALLOC_COSTLY_ORDER):
            continue
        if nr_retries:
            nr_retries -= 1
            continue
        # Avoid endless loop for tasks bypassed by the oom killer: a task chosen as the
        # victim goes round once more (its memory is not reaped yet) and then fails.
        if passed_oom and task is not None and task.oom_victim:
            return CHARGE_KILLED
        # mm/memcontrol.c: mem_cgroup_oom() counts the event before it kills
        memcg_memory_event(sys, mem_over_limit, MEMCG_OOM)
        ret = memcontrol_v1.mem_cgroup_oom(sys, mem_over_limit, nr_pages, task, user_fault)
        if ret is True:
            passed_oom = True
            nr_retries = MAX_RECLAIM_RETRIES
            continue
        return ret


# --- memory.high (cgroup v2) -------------------------------------------------------------

# mm/memcontrol.c: the clamp of the penalty sleep per allocation batch (2 seconds)
MEMCG_MAX_HIGH_DELAY_JIFFIES = 2 * sched.HZ
# mm/memcontrol.c: precision bits of the overage ratio, and the scaling of its square
# down to jiffies (with a high of 100M: 101M sleeps 6 ms, 110M 639 ms, 118M+ 2000 ms)
MEMCG_DELAY_PRECISION_SHIFT = 20
MEMCG_DELAY_SCALING_SHIFT = 14


def charge_over_high(sys: System, memcg: MemCgroup, batch: int, task: Task | None) -> None:
    """try_charge_memcg()'s tail on the default hierarchy (6.18): if memcg or an
    ancestor is over its memory.high or swap.high, the charging task owes reclaim and
    a penalty on its return to user space (memcg_nr_pages_over_high += batch,
    set_notify_resume); outside a task memcg->high_work is queued instead.  A task that
    owes more than a batch pays part of it now, synchronously (5.17+: "avoid excessive
    overrun while the task is still inside the kernel")."""
    m = memcg
    while m is not None:
        mem_high = m.memory.usage > m.memory.high
        swap_high = m.swap.usage > m.swap.high
        if task is None:  # !in_task(): don't bother a random interrupted task
            if mem_high:
                if not m.high_work_pending:
                    m.high_work_pending = True
                    sched.queue_work(sys.clock, sched.TASK, high_work_func, sys, m)
                break
        elif mem_high or swap_high:
            task.memcg_nr_pages_over_high += batch
            break
        m = m.parent
    if task is not None and task.memcg_nr_pages_over_high > MEMCG_CHARGE_BATCH:
        # the sleep of this call is taken when the operation returns to user space
        task.memcg_high_penalty += mem_cgroup_handle_over_high(sys, task)


def high_work_func(sys: System, memcg: MemCgroup) -> None:
    """high_work_func(): the worker's reclaim for a charge made outside any task."""
    memcg.high_work_pending = False
    reclaim_high(sys, memcg, MEMCG_CHARGE_BATCH, None)


def reclaim_high(sys: System, memcg: MemCgroup, nr_pages: int, task: Task | None) -> int:
    """reclaim_high(): reclaim nr_pages from memcg and each ancestor below the root that
    is over its memory.high, counting a MEMCG_HIGH event at each; pages reclaimed."""
    from . import vmscan  # late: vmscan imports names from here at load

    nr_reclaimed = 0
    while memcg is not None and not memcg.is_root():
        if memcg.memory.usage > memcg.memory.high:
            memcg_memory_event(sys, memcg, MEMCG_HIGH)
            pflags = psi.psi_memstall_enter(sys, task)
            nr_reclaimed += vmscan.try_to_free_mem_cgroup_pages(sys, memcg, nr_pages, True)
            psi.psi_memstall_leave(sys, task, pflags)
        memcg = memcg.parent
    return nr_reclaimed


def calculate_overage(usage: int, high: int) -> int:
    """calculate_overage(): how far usage is over high, as a fraction of high in
    MEMCG_DELAY_PRECISION_SHIFT fixed point (a high of 0 acts as 1 page)."""
    if usage <= high:
        return 0
    high = max(high, 1)
    return ((usage - high) << MEMCG_DELAY_PRECISION_SHIFT) // high


def mem_find_max_overage(memcg: MemCgroup) -> int:
    """mem_find_max_overage(): the largest memory.high overage of memcg and its ancestors
    below the root."""
    max_overage = 0
    while True:
        max_overage = max(max_overage, calculate_overage(memcg.memory.usage, memcg.memory.high))
        memcg = memcg.parent
        if memcg is None or memcg.is_root():
            return max_overage


def swap_find_max_overage(sys: System, memcg: MemCgroup) -> int:
    """swap_find_max_overage(): the same for memory.swap.high, counting a MEMCG_SWAP_HIGH
    event at each level over it."""
    max_overage = 0
    while True:
        overage = calculate_overage(memcg.swap.usage, memcg.swap.high)
        if overage:
            memcg_memory_event(sys, memcg, MEMCG_SWAP_HIGH)
        max_overage = max(max_overage, overage)
        memcg = memcg.parent
        if memcg is None or memcg.is_root():
            return max_overage


def calculate_high_delay(memcg: MemCgroup, nr_pages: int, max_overage: int) -> int:
    """calculate_high_delay(): the penalty in jiffies - the overage squared, scaled
    down, in proportion to the task's own part of the overage (nr_pages against
    MEMCG_CHARGE_BATCH)."""
    if not max_overage:
        return 0
    penalty_jiffies = max_overage * max_overage * sched.HZ
    penalty_jiffies >>= MEMCG_DELAY_PRECISION_SHIFT
    penalty_jiffies >>= MEMCG_DELAY_SCALING_SHIFT
    return penalty_jiffies * nr_pages // MEMCG_CHARGE_BATCH


def mem_cgroup_handle_over_high(sys: System, task: Task) -> int:
    """mem_cgroup_handle_over_high() (6.18): reclaim what the task owes, retrying while
    reclaim makes progress (or MAX_RECLAIM_RETRIES times), then - memory.high breached
    and reclaim unable to keep up - return the penalty in jiffies the task must sleep
    (at most MEMCG_MAX_HIGH_DELAY_JIFFIES; 0 when it is HZ/100 or less).  The caller
    sleeps it (SimTask.throttle: schedule_timeout_killable() in a memory stall).
    Never an OOM kill."""
    from .vmscan import SWAP_CLUSTER_MAX  # late: vmscan imports names from here at load

    nr_pages = task.memcg_nr_pages_over_high
    if not nr_pages:
        return 0
    memcg = task.memcg  # get_mem_cgroup_from_mm(current->mm)
    task.memcg_nr_pages_over_high = 0
    nr_retries = MAX_RECLAIM_RETRIES
    in_retry = False
    while True:
        # 6.18: bail if the task is already exiting (task_is_dying)
        if task.oom_victim or task.state in ("exited", "oom_killed"):
            return 0
        nr_reclaimed = reclaim_high(sys, memcg, SWAP_CLUSTER_MAX if in_retry else nr_pages, task)
        penalty_jiffies = calculate_high_delay(memcg, nr_pages, mem_find_max_overage(memcg))
        penalty_jiffies += calculate_high_delay(memcg, nr_pages, swap_find_max_overage(sys, memcg))
        penalty_jiffies = min(penalty_jiffies, MEMCG_MAX_HIGH_DELAY_JIFFIES)
        # not worth a sleep: the group may not have been reclaimed aggressively enough yet
        if penalty_jiffies <= sched.HZ // 100:
            return 0
        # reclaim is making progress: encourage it rather than throttle
        if nr_reclaimed:
            in_retry = True
            continue
        if nr_retries:
            nr_retries -= 1
            in_retry = True
            continue
        return penalty_jiffies


def _stock_covers(sys: System, memcg: MemCgroup, nr_pages: int, cpu: int) -> bool:
    stock = sys.stock[cpu]
    for c, n in zip(stock.cached, stock.nr_pages):
        if c is memcg:
            return n >= nr_pages
    return False


def charge_pages(sys: System, memcg: MemCgroup, n: int, task: Task | None,
                 user_fault: bool = False) -> tuple[int, int]:
    """Charge n single-page folios one after another, as n faults or page-cache inserts would.

    Equivalent to n calls of try_charge_memcg(memcg, 1) but done in bulk while every level
    has room for whole batches.  Returns (pages charged, result of the failing call or 0).
    """
    if memcg.is_root():
        return n, 0
    cpu = task.cpu if task is not None else 0
    done = 0
    while done < n:
        if user_fault and task is not None and (task.memcg_high_penalty or (
                task.memcg_nr_pages_over_high and not task.mm_populate)):
            # Between two faults: the last one returned to user space and paid its
            # memory.high debt (resume_user_mode_work) - or, inside one system call that
            # populates many pages (mlock), the synchronous reclaim left a penalty.  The
            # fault stops here; the task sleeps and then goes on with the next page.
            if not task.mm_populate:
                task.memcg_high_penalty += mem_cgroup_handle_over_high(sys, task)
            if task.memcg_high_penalty:
                return done, CHARGE_THROTTLED
        done += consume_stock(sys, memcg, n - done, cpu)
        if done == n:
            break
        margin = hierarchy_margin(memcg)
        room = margin // MEMCG_CHARGE_BATCH
        if not room and margin and not (sys.cgroup_dfl and high_limited(memcg)):
            k = min(margin, n - done)
            _charge_singles(memcg, k)
            done += k
            continue
        if room:
            want = n - done
            batches = min(room, -(-want // MEMCG_CHARGE_BATCH))
            total = batches * MEMCG_CHARGE_BATCH
            memcg.memsw.charge(total)
            memcg.memory.charge(total)
            used = min(total, want)
            done += used
            if total > used:
                refill_stock(sys, memcg, total - used, cpu)
            continue
        # At the limit, each page reclaiming an episode into swap: if the fast path can
        # take a run of these charges and their episodes at once, let it.
        if fastpath.ENABLED:
            from .fastpath import swapout  # late: the fast path builds on this module
            k = swapout.charge_swap_episodes(sys, memcg, n - done, task)
            if k:
                done += k
                continue
        ret = try_charge_memcg(sys, memcg, 1, task, user_fault)
        if ret != 0:
            return done, ret
        done += 1
    return done, 0


def _charge_singles(memcg: MemCgroup, k: int) -> None:
    """k one-page charges while some level has room for fewer than a batch, but for all k.

    Each of them first tries a whole batch (try_charge_memcg): memsw levels, then memory
    levels, bottom up.  The lowest level without room for the batch fails and bumps its
    failcnt; the levels below it were charged the batch for a moment, which raised their
    watermark.  Then the single page is charged.  Page j of the k sees every margin j
    pages smaller, so level c passes the batch for j < margin(c) - (batch - 1).
    """
    bound = k  # pages whose batch attempt reaches the current level
    c = memcg.memsw
    memory = memcg.memory
    while c is not None:  # the memsw levels bottom up, then the memory levels
        start = c.max - c.usage - (MEMCG_CHARGE_BATCH - 1)
        if start < 0:
            start = 0
        passed = bound if bound < start else start
        if passed:
            top = c.usage + passed - 1 + MEMCG_CHARGE_BATCH
            if top > c.watermark:
                c.watermark = top
        if start < bound:
            c.failcnt += bound - start
            bound = start
        if not bound:
            break
        c = c.parent
        if c is None and memory is not None:
            c, memory = memory, None
    memcg.memsw.charge(k)
    memcg.memory.charge(k)


def commit_charge(sys: System, memcg: MemCgroup, pfns, cpu: int, order: int = 0) -> None:
    """commit_charge() + memcg1_commit_charge(): the pages now belong to memcg.

    pfns is an array of frames or a range of consecutive ones, folios of 2**order pages
    each; one commit.
    """
    n = len(pfns)
    if isinstance(pfns, range):
        sys.mem.memcg[run_slice(pfns)] = memcg.id
    else:
        sys.mem.memcg[pfns] = memcg.id
    # mm/memcontrol-v1.c: memcg1_charge_statistics - one PGPGIN per folio, and the
    # folio's pages to nr_page_events
    sys.stats.mod(memcg.id, PGPGIN, n >> order)
    page_events(sys, memcg, n, cpu)


def nr_folios(sys: System, pfns: np.ndarray) -> int:
    """How many folios the pages make (whole folios: a large one counts once)."""
    if not sys.mem.large:
        return len(pfns)
    orders = sys.mem.order[pfns]
    if not orders.any():
        return len(pfns)
    counts = np.bincount(orders)
    return int(sum(int(c) >> k for k, c in enumerate(counts.tolist())))


def uncharge_pages(sys: System, pfns: np.ndarray, cpu: int = 0, memsw: bool = True,
                   batches: list[int] | None = None) -> None:
    """mem_cgroup_uncharge_folios(): drop the charges of pages being freed.

    memsw=False is the swap-out case: the memsw charge stays with the swap entry.
    batches: the pages are the frees of several calls in a row (reclaim batches of
    single-page folios of one group taken at once): each batch is uncharged and counted
    in the event ratelimit in its turn, as its own call would.
    """
    if not len(pfns):
        return
    owners = sys.mem.memcg[pfns]
    first = owners[0]
    if owners[-1] == first and (owners == first).all():  # one group (the usual case)
        ids, counts = [int(first)], [len(pfns)]
    else:
        ids, counts = (x.tolist() for x in np.unique(owners, return_counts=True))
    for memcg_id, n in zip(ids, counts):
        if memcg_id == 0:
            continue
        memcg = sys.memcgs[memcg_id]
        # mm/memcontrol.c: uncharge_folio() - one PGPGOUT per folio (ug->pgpgout++)
        folios = n if not sys.mem.large else \
            nr_folios(sys, pfns if len(ids) == 1 else pfns[owners == memcg_id])
        sys.stats.mod(memcg_id, PGPGOUT, folios)
        # Each batch is uncharged and counted in its turn; a batch whose count reaches no
        # ratelimit target has no event check, and nothing sees its uncharge before the
        # next check: it is uncharged together with the next batch that has one.
        held = 0
        for part in (batches or (n,)):
            held += part
            if memcg.nr_page_events[cpu] + part - memcg.thresh_target[cpu] < 0:
                memcg.nr_page_events[cpu] += part  # page_events() without an event check
                continue
            _uncharge_memcg(memcg, held, memsw)
            held = 0
            page_events(sys, memcg, part, cpu)
        if held:
            _uncharge_memcg(memcg, held, memsw)
        if memcg.under_oom:
            from . import memcontrol_v1  # late: memcontrol_v1 imports names from here at load
            memcontrol_v1.memcg1_oom_recover(sys, memcg)
    sys.mem.memcg[pfns] = 0
    maybe_free_dying(sys)


def _uncharge_memcg(memcg: MemCgroup, n: int, memsw: bool) -> None:
    """uncharge_batch(): the memory (and memsw) counters of memcg give back n pages."""
    if not memcg.is_root():
        memcg.memory.uncharge(n)
        if memsw:
            memcg.memsw.uncharge(n)


def page_events(sys: System, memcg: MemCgroup, n: int, cpu: int) -> None:
    """nr_page_events accounting and memcg1_check_events() at the ratelimit targets."""
    val = memcg.nr_page_events[cpu] + n
    memcg.nr_page_events[cpu] = val
    # mm/memcontrol-v1.c: mem_cgroup_event_ratelimit
    if val - memcg.thresh_target[cpu] >= 0:
        from . import memcontrol_v1  # late: memcontrol_v1 imports names from here at load
        memcg.thresh_target[cpu] = val + THRESHOLDS_EVENTS_TARGET
        do_softlimit = val - memcg.softlimit_target[cpu] >= 0
        if do_softlimit:
            memcg.softlimit_target[cpu] = val + SOFTLIMIT_EVENTS_TARGET
        memcontrol_v1.mem_cgroup_threshold(sys, memcg)
        if do_softlimit:
            memcontrol_v1.memcg1_update_tree(sys, memcg)


def memcg_memory_event(sys: System, memcg: MemCgroup, event: int) -> None:
    """include/linux/memcontrol.h: memcg_memory_event() - count an event here and, on the
    default hierarchy, in every ancestor below the root (only here with the
    memory_localevents mount option, and always only here on v1), and notify the files
    that show it (cgroup_file_notify)."""
    swap_event = event in (MEMCG_SWAP_HIGH, MEMCG_SWAP_MAX, MEMCG_SWAP_FAIL)
    memcg.memory_events_local[event] += 1
    if not swap_event:
        cgroup.cgroup_file_notify(sys, memcg, "memory.events.local")
    while True:
        memcg.memory_events[event] += 1
        cgroup.cgroup_file_notify(sys, memcg, "memory.swap.events" if swap_event else "memory.events")
        if not sys.cgroup_dfl or sys.memory_localevents:
            break
        memcg = memcg.parent
        if memcg is None or memcg.is_root():
            break


# --- memory.min and memory.low (cgroup v2) --------------------------------------------

def mem_cgroup_calculate_protection(sys: System, root: MemCgroup | None, memcg: MemCgroup) -> None:
    """mem_cgroup_calculate_protection(): memcg's effective min and low for reclaim of
    root's subtree (None: global reclaim, the root group), memory_recursiveprot from the
    cgroup2 mount (CGRP_ROOT_MEMORY_RECURSIVE_PROT)."""
    if root is None:
        root = sys.root
    page_counter_calculate_protection(root.memory, memcg.memory, sys.memory_recursiveprot)


def mem_cgroup_unprotected(target: MemCgroup | None, memcg: MemCgroup) -> bool:
    """mem_cgroup_unprotected(): the root and the reclaim target itself are never
    protected (6.2+; 6.1 used the target's possibly stale effective values)."""
    return memcg.is_root() or memcg is target


def mem_cgroup_below_min(target: MemCgroup | None, memcg: MemCgroup) -> bool:
    """mem_cgroup_below_min(): usage within the effective memory.min."""
    if mem_cgroup_unprotected(target, memcg):
        return False
    return memcg.memory.emin >= memcg.memory.usage


def mem_cgroup_below_low(target: MemCgroup | None, memcg: MemCgroup) -> bool:
    """mem_cgroup_below_low(): usage within the effective memory.low."""
    if mem_cgroup_unprotected(target, memcg):
        return False
    return memcg.memory.elow >= memcg.memory.usage


def mem_cgroup_protection(target: MemCgroup | None, memcg: MemCgroup) -> tuple[int, int]:
    """mem_cgroup_protection(): (emin, elow) for proportional reclaim; none for the
    target of the reclaim itself."""
    if memcg is target or memcg.is_root():
        return 0, 0
    return memcg.memory.emin, memcg.memory.elow


def mem_cgroup_usage(sys: System, memcg: MemCgroup, swap: bool = False) -> int:
    """mem_cgroup_usage(): the counter, or for the root an estimate from global state."""
    if memcg.is_root():
        val = sys.stats.total(NR_FILE_PAGES) + sys.stats.total(NR_ANON_MAPPED)
        if swap:
            val += sys.swap.nr_used
        return val
    return (memcg.memsw if swap else memcg.memory).usage


# mm/memcontrol.c: FLUSH_TIME (2UL*HZ) - the period of flush_memcg_stats_dwork(), in the
# model's one-second ticks
FLUSH_TIME = 2


def mem_cgroup_flush_root(sys: System) -> None:
    """__mem_cgroup_flush_stats(root_mem_cgroup, true): every group's statistics flushed,
    the groups updated since the last such flush copied (css_rstat_flush walks the
    updated tree; every other group's flushed figures are its current ones already)."""
    lrus = slice(NR_LRU_BASE, NR_LRU_BASE + NR_LRU_LISTS)
    rows = sys.stats.take_updated()
    sys.stats.flushed[rows] = sys.stats.a[rows, lrus]
    sys.stats_flushes += 1
    sys.stats_periodic_flush = sys.stats_flushes


def flush_memcg_stats_dwork(sys: System) -> None:
    """flush_memcg_stats_dwork(): every FLUSH_TIME the statistics of every group are
    flushed; the work re-arms itself for the next."""
    mem_cgroup_flush_root(sys)
    sched.mod_timer(sys.clock, sys.stats_flush_dwork, sys.clock.now + FLUSH_TIME)


def mem_cgroup_flush_stats(sys: System, memcg: MemCgroup) -> None:
    """mem_cgroup_flush_stats(memcg), as a memory.stat read calls it: css_rstat_flush()
    brings each group of memcg's subtree up to date; the ancestors' own figures catch up
    only when they are flushed themselves (the deltas wait in their state_pending).

    The kernel skips the flush while the subtree has fewer than MEMCG_CHARGE_BATCH *
    num_online_cpus() updates pending (memcg_vmstats_needs_flush); the model does not
    count updates and always flushes, so a view it keeps may be that many pages fresher.
    """
    if sys.semantics == "3.8":
        return  # 3.8 read the per-CPU counters directly: nothing is held back
    sys.stats_flushes += 1
    lrus = slice(NR_LRU_BASE, NR_LRU_BASE + NR_LRU_LISTS)
    for m in memcg.subtree():
        ids = [d.id for d in m.subtree()]
        m.lru_flushed = sys.stats.a[ids, lrus].sum(axis=0)
        m.lru_flush_seq = sys.stats_flushes


def lruvec_page_state_lru(sys: System, memcg: MemCgroup, lru: int) -> int:
    """lruvec_page_state(lruvec, NR_LRU_BASE + lru) of memcg's lruvec: the subtree's list
    size as of the group's last statistics flush, which is what reclaim's heuristics read.
    Since 6.12 reclaim flushes only when the periodic flush is late (prepare_scan_control:
    mem_cgroup_flush_stats_ratelimited, "memcg: use ratelimited stats flush in the reclaim"), so a burst of work within
    one FLUSH_TIME is judged by the lists as they were before it.  3.8 summed the per-CPU
    counters: exact."""
    if sys.semantics == "3.8":
        return memcg_page_state(sys, memcg, NR_LRU_BASE + lru, True)
    if memcg.lru_flush_seq > sys.stats_periodic_flush:
        return int(memcg.lru_flushed[lru])
    if not memcg.children:
        return int(sys.stats.flushed[memcg.id, lru])
    ids = [m.id for m in memcg.subtree()]
    return int(sys.stats.flushed[ids, lru].sum())


def memcg_page_state(sys: System, memcg: MemCgroup, item: int, hierarchical: bool) -> int:
    """memcg_page_state() (subtree, dying groups included) or _local()."""
    if not hierarchical or not memcg.children:
        return int(sys.stats.a[memcg.id, item])
    ids = [m.id for m in memcg.subtree()]
    return int(sys.stats.a[ids, item].sum())


def mem_cgroup_resize_max(sys: System, memcg: MemCgroup, max_pages: int, memsw: bool) -> None:
    """mem_cgroup_resize_max() (memcontrol-v1.c): set a limit, reclaiming down to it first.

    memory.limit must stay <= memsw.limit (EINVAL).  Below usage: drain the stocks once,
    then reclaim; a round that frees nothing gives up with EBUSY.
    """
    from . import memcontrol_v1, vmscan  # late: both import names from here at load

    counter = memcg.memsw if memsw else memcg.memory
    enlarge = False
    drained = False
    while True:
        if memsw and max_pages < memcg.memory.max:
            raise OSError(errno.EINVAL, "memsw limit below memory limit")
        if not memsw and max_pages > memcg.memsw.max:
            raise OSError(errno.EINVAL, "memory limit above memsw limit")
        if max_pages > counter.max:
            enlarge = True
        if counter.set_max(max_pages) == 0:
            break
        if not drained:
            drain_all_stock(sys, memcg)
            drained = True
            continue
        # memsw limit reclaim does not swap: swapping cannot lower memsw usage
        if not vmscan.try_to_free_mem_cgroup_pages(sys, memcg, 1, may_swap=not memsw):
            raise OSError(errno.EBUSY, "Device or resource busy")
    if enlarge:
        memcontrol_v1.memcg1_oom_recover(sys, memcg)


# --- cgroup v2: the memory.* knobs that act (mm/memcontrol.c, 6.18) -------------------------

def memory_max_write(sys: System, memcg: MemCgroup, max_pages: int) -> None:
    """memory_max_write(): the new limit is set first (xchg), then usage is driven under
    it - the stocks drained once, up to MAX_RECLAIM_RETRIES reclaim rounds that free
    nothing, then the OOM killer (MEMCG_OOM each time) until nobody is left to kill.
    The write itself never fails."""
    from . import oom_kill, vmscan  # late: both import names from here at load

    memcg.memory.max = max_pages
    nr_reclaims = MAX_RECLAIM_RETRIES
    drained = False
    while True:
        nr_pages = memcg.memory.usage
        if nr_pages <= max_pages:
            break
        if not drained:
            drain_all_stock(sys, memcg)
            drained = True
            continue
        if nr_reclaims:
            if not vmscan.try_to_free_mem_cgroup_pages(sys, memcg, nr_pages - max_pages, True):
                nr_reclaims -= 1
            continue
        memcg_memory_event(sys, memcg, MEMCG_OOM)
        if not oom_kill.mem_cgroup_out_of_memory(sys, memcg, 1, None):
            break
        sched.cond_resched(sys.clock)


def memory_high_write(sys: System, memcg: MemCgroup, high: int) -> None:
    """memory_high_write(): set memory.high, then reclaim down to it - stocks drained once,
    and it gives up after MAX_RECLAIM_RETRIES rounds that free nothing; never an OOM."""
    from . import vmscan  # late: vmscan imports names from here at load

    memcg.memory.high = high
    nr_retries = MAX_RECLAIM_RETRIES
    drained = False
    while True:
        nr_pages = memcg.memory.usage
        if nr_pages <= high:
            break
        if not drained:
            drain_all_stock(sys, memcg)
            drained = True
            continue
        reclaimed = vmscan.try_to_free_mem_cgroup_pages(sys, memcg, nr_pages - high, True)
        if not reclaimed:
            if not nr_retries:
                break
            nr_retries -= 1


def user_proactive_reclaim(sys: System, memcg: MemCgroup, nr_to_reclaim: int,
                           swappiness: int | None) -> None:
    """mm/vmscan.c: user_proactive_reclaim() (memory.reclaim, 6.18), after parsing: reclaim
    in batches of a quarter of what is left (reclaim enforces its minimum), with
    MAX_RECLAIM_RETRIES rounds that free nothing allowed; then EAGAIN."""
    from . import vmscan  # late: vmscan imports names from here at load

    nr_retries = MAX_RECLAIM_RETRIES
    nr_reclaimed = 0
    while nr_reclaimed < nr_to_reclaim:
        batch_size = (nr_to_reclaim - nr_reclaimed) // 4
        reclaimed = vmscan.try_to_free_mem_cgroup_pages(sys, memcg, batch_size, True,
                                                        swappiness=swappiness)
        if not reclaimed:
            if not nr_retries:
                raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
            nr_retries -= 1
        nr_reclaimed += reclaimed


def mem_cgroup_get_nr_swap_pages(sys: System, memcg: MemCgroup) -> int:
    """mem_cgroup_get_nr_swap_pages(): free swap, and on v2 no more than any ancestor's
    swap.max leaves (v1 counts swap in memsw instead)."""
    nr_swap_pages = sys.swap.nr_free
    if not sys.cgroup_dfl:
        return nr_swap_pages
    for m in memcg.ancestors():
        if m.is_root():
            break
        nr_swap_pages = min(nr_swap_pages, m.swap.max - m.swap.usage)
    return nr_swap_pages


def mem_cgroup_try_charge_swap(sys: System, memcg: MemCgroup, nr_pages: int) -> int:
    """__mem_cgroup_try_charge_swap() for nr_pages one-page folios of memcg (the online
    group that will own the entries): v2 only - each folio charges memcg->swap, and one
    that does not fit counts MEMCG_SWAP_MAX and MEMCG_SWAP_FAIL and stays in memory.
    Returns how many were charged (they come first)."""
    if not sys.cgroup_dfl or memcg.is_root():
        return nr_pages
    room = min(c.max - c.usage for c in memcg.swap.ancestors())
    ok = max(0, min(nr_pages, room))
    if ok:
        memcg.swap.charge(ok)
    for _ in range(nr_pages - ok):
        memcg_memory_event(sys, memcg, MEMCG_SWAP_MAX)
        memcg_memory_event(sys, memcg, MEMCG_SWAP_FAIL)
    return ok


def mem_cgroup_swap_fail(sys: System, memcg: MemCgroup, nr_pages: int) -> None:
    """__mem_cgroup_try_charge_swap() with no swap entry (the device is full): v2 counts
    MEMCG_SWAP_FAIL for each folio."""
    if sys.cgroup_dfl:
        for _ in range(nr_pages):
            memcg_memory_event(sys, memcg, MEMCG_SWAP_FAIL)


# --- kernel memory (kmem) ---------------------------------------------------------------
#
# Two eras (kernel-facts 6.1-6.4):
# - 3.8 (Glauber Costa's kmem controller, 3.8-4.5): a group accounts kernel memory only
#   once its memory.kmem.limit_in_bytes was written (or its parent's was).  A charge goes
#   to the kmem counter first - which fails at its limit without reclaim - and then to
#   the memory and memsw counters (memcg_charge_kmem).  Slab objects live in per-group
#   copies of the caches and are charged by whole slab pages (memcg_charge_slab).
# - 6.18 (obj_cgroup, 5.9+; always on for v1 since 4.6): every non-root group accounts.
#   Pages (kernel stacks, page tables) are charged whole, objects byte by byte through a
#   per-CPU object stock; both go to the memory counter (try_charge_memcg: reclaim, OOM)
#   and then, v1 only, to a kmem counter that has no limit any more.

# arch/x86/include/asm/page_64_types.h: THREAD_SIZE (no KASAN): 8 KiB until 3.14, 16 KiB
# from 3.15 (THREAD_SIZE_ORDER 1 -> 2)
THREAD_SIZE = {"3.8": 8192, "6.18": 16384}
# mm/slab.h: obj_full_size() - each accounted object also pays for its objcg pointer
OBJCG_POINTER_SIZE = 8


@dataclass(eq=False)
class ObjCgroup:
    """struct obj_cgroup (5.9+): what accounted objects point to instead of the memcg.

    At offline its memcg becomes the parent (memcg_reparent_objcgs), so objects charged
    to a removed group are then the parent's and do not keep the group alive.
    """

    memcg: MemCgroup
    nr_charged_bytes: int = 0  # a sub-page remainder flushed from a per-CPU stock
    # model bookkeeping: pages charged through this objcg and not given back yet, and the
    # bytes of live objects - the kernel's percpu refcount stands for both
    nr_pages: int = 0
    nr_live_bytes: int = 0


@dataclass
class ObjStock:
    """The object part of struct obj_stock_pcp: one cached objcg and its pre-charged bytes."""

    cached_objcg: ObjCgroup | None = None
    nr_bytes: int = 0


def memcg_kmem_online(sys: System) -> bool:
    """memcg_kmem_online() (6.x) / memcg_kmem_enabled() (3.8): the static branch."""
    return bool(sys.kmem_key)


def memcg_can_account_kmem(memcg: MemCgroup) -> bool:
    """3.8: memcg_can_account_kmem() - not the root, and accounting switched on for it."""
    return not memcg.is_root() and memcg.kmem_active


def memcg_kmem_independent(memcg: MemCgroup) -> bool:
    """memory.independent_kmem_limit = 1 (3.8 rules): kernel memory is not user memory."""
    return memcg.kmem_independent == 1


def memcg_online_kmem(sys: System, memcg: MemCgroup) -> None:
    """Kernel-memory set-up of a new group.

    6.18: memcg_online_kmem() - a kmemcg id, an objcg, and the one-way static branch
    memcg_kmem_online_key.  3.8: memcg_propagate_kmem() - a child of an accounting group
    accounts too (unlimited), with its own id and one more reference on the static key;
    the memory.independent_kmem_limit setting is inherited.
    """
    from . import slab  # late: slab imports names from here at load

    parent = memcg.parent
    if sys.semantics == "3.8":
        memcg.kmem_independent = parent.kmem_independent if not parent.is_root() else None
        if not parent.kmem_active:
            return
        memcg.kmemcg_id = slab.memcg_alloc_cache_id(sys)
        memcg.kmem_active = True
        sys.kmem_key.static_key_slow_inc()
        return
    memcg.kmemcg_id = slab.memcg_alloc_cache_id(sys)
    memcg.objcg = memcg.orig_objcg = ObjCgroup(memcg)
    sys.kmem_key.static_branch_enable()


def memcg_activate_kmem(sys: System, memcg: MemCgroup, nr_pages: int) -> None:
    """3.8: memcg_update_kmem_limit() - the write of memory.kmem.limit_in_bytes.

    The first write of a limit (not "-1") switches accounting on for good: refused with
    EBUSY while the group has tasks or children, since charges made before could not be
    told apart.  Later writes only move the limit (EBUSY below usage, no reclaim); "-1"
    lifts it but accounting stays on.
    """
    from . import slab  # late: slab imports names from here at load

    if not memcg.kmem_active and nr_pages != PAGE_COUNTER_MAX:
        if memcg.tasks or memcg.online_children:
            raise OSError(errno.EBUSY, "Device or resource busy")
        memcg.kmem.max = nr_pages
        try:
            memcg.kmemcg_id = slab.memcg_alloc_cache_id(sys)  # memcg_update_cache_sizes()
        except OSError:
            memcg.kmem.max = PAGE_COUNTER_MAX
            raise
        sys.kmem_key.static_key_slow_inc()
        memcg.kmem_active = True  # set after the key: nobody accounts before it is patched
        return
    if memcg.kmem.set_max(nr_pages):
        raise OSError(errno.EBUSY, "Device or resource busy")


# -- 3.8: memcg_charge_kmem / memcg_uncharge_kmem ----------------------------------------

def memcg_charge_kmem(sys: System, memcg: MemCgroup, nr_pages: int, task: Task | None) -> int:
    """memcg_charge_kmem() (3.8-4.5): the kmem counter first, then memory and memsw.

    A kmem limit below the memory limit fails the charge at once (kmem failcnt, no
    reclaim); the memory charge may reclaim and OOM-kill like a user page.  An OOM kill
    of the charging task itself bypasses (res_counter_charge_nofail): the charge stands.
    With memory.independent_kmem_limit written: 0 ignores the kmem limit, 1 charges the
    kmem counter only.
    """
    if memcg.kmem_independent == 0:
        memcg.kmem.charge(nr_pages)
    elif memcg.kmem.try_charge(nr_pages) is not None:
        return CHARGE_NOMEM
    if memcg_kmem_independent(memcg):
        return 0
    ret = try_charge_memcg(sys, memcg, nr_pages, task)
    if ret == CHARGE_KILLED:
        memcg.memory.charge(nr_pages)
        memcg.memsw.charge(nr_pages)
        return 0
    if ret:
        memcg.kmem.uncharge(nr_pages)
    return ret


def memcg_uncharge_kmem(sys: System, memcg: MemCgroup, nr_pages: int) -> None:
    """memcg_uncharge_kmem() (3.8): memory and memsw, then kmem; the last kmem page of a
    removed group lets it be freed (memcg_kmem_test_and_clear_dead)."""
    if not memcg_kmem_independent(memcg):
        memcg.memory.uncharge(nr_pages)
        memcg.memsw.uncharge(nr_pages)
    memcg.kmem.uncharge(nr_pages)
    if memcg.kmem_dead and not memcg.kmem.usage:
        maybe_free_dying(sys, memcg)


# -- 6.18: obj_cgroup charging ----------------------------------------------------------

def set_active_memcg(sys: System, memcg: MemCgroup | None) -> MemCgroup | None:
    """set_active_memcg() (include/linux/sched/mm.h): charge the kernel allocations that
    follow to memcg instead of the current task's group; returns the old one to restore."""
    old, sys.active_memcg = sys.active_memcg, memcg
    return old


def get_obj_cgroup_from_current(sys: System, task: Task | None) -> ObjCgroup | None:
    """current_obj_cgroup(): the objcg of the active memcg (set_active_memcg) or else of
    the task's group; None for the root (unaccounted).  From an active memcg the nearest
    ancestor with an objcg is taken, as the kernel walks up to the root."""
    memcg = sys.active_memcg
    if memcg is not None:
        for m in memcg.ancestors():
            if m.is_root():
                return None
            if m.objcg is not None:
                return m.objcg
        return None
    if task is None or task.memcg.is_root():
        return None
    return task.memcg.objcg


def obj_cgroup_charge_pages(sys: System, objcg: ObjCgroup, nr_pages: int, task: Task | None,
                            user_fault: bool = False, nofail: bool = False) -> int:
    """obj_cgroup_charge_pages(): try_charge_memcg(), then the v1 kmem counter (no limit).

    No PGPGIN and no event check: memcg1_charge_statistics() and memcg1_check_events()
    belong to the commit of user folios.  user_fault: the allocation is part of a page
    fault (current->in_user_fault), which oom_kill_disable turns into a sleep.
    """
    memcg = objcg.memcg
    ret = try_charge_memcg(sys, memcg, nr_pages, task, user_fault)
    if ret and nofail:
        # try_charge_memcg(): __GFP_NOFAIL - "force:" the charge goes past the limit
        memcg.memory.charge(nr_pages)
        memcg.memsw.charge(nr_pages)
        ret = 0
    if ret:
        return ret
    memcg.kmem.charge(nr_pages)  # memcg1_account_kmem()
    objcg.nr_pages += nr_pages
    return 0


def obj_cgroup_uncharge_pages(sys: System, objcg: ObjCgroup, nr_pages: int, cpu: int) -> None:
    """obj_cgroup_uncharge_pages(): kmem counter down; the memory charge goes to the
    per-CPU stock (refill_stock), as freed page tables do on the real kernel.  A removed
    group's pages are uncharged at once, so that nothing keeps it alive in a stock."""
    memcg = objcg.memcg
    objcg.nr_pages -= nr_pages
    memcg.kmem.uncharge(nr_pages)
    if memcg.is_root():
        return
    if memcg.online:
        refill_stock(sys, memcg, nr_pages, cpu)
    else:
        memcg.memory.uncharge(nr_pages)
        memcg.memsw.uncharge(nr_pages)
        maybe_free_dying(sys, memcg)


def drain_obj_stock(sys: System, stock: ObjStock, cpu: int) -> None:
    """drain_obj_stock(): whole pages go back; the sub-page rest stays with the objcg."""
    old = stock.cached_objcg
    if old is None:
        return
    if stock.nr_bytes:
        nr_pages = stock.nr_bytes >> PAGE_SHIFT
        if nr_pages:
            obj_cgroup_uncharge_pages(sys, old, nr_pages, cpu)
        old.nr_charged_bytes += stock.nr_bytes & (PAGE_SIZE - 1)
        stock.nr_bytes = 0
    stock.cached_objcg = None
    obj_cgroup_maybe_release(sys, old)


def consume_obj_stock(sys: System, objcg: ObjCgroup, nr_bytes: int, cpu: int) -> bool:
    """consume_obj_stock(): take nr_bytes pre-charged to objcg on this CPU."""
    stock = sys.obj_stock[cpu]
    if stock.cached_objcg is objcg and stock.nr_bytes >= nr_bytes:
        stock.nr_bytes -= nr_bytes
        return True
    return False


def refill_obj_stock(sys: System, objcg: ObjCgroup, nr_bytes: int, allow_uncharge: bool,
                     cpu: int) -> None:
    """refill_obj_stock(): park bytes on this CPU; more than a page goes back as pages."""
    stock = sys.obj_stock[cpu]
    if stock.cached_objcg is not objcg:
        drain_obj_stock(sys, stock, cpu)
        stock.cached_objcg = objcg
        stock.nr_bytes = objcg.nr_charged_bytes
        objcg.nr_charged_bytes = 0
        allow_uncharge = True  # allow uncharge when objcg changes
    stock.nr_bytes += nr_bytes
    nr_pages = 0
    if allow_uncharge and stock.nr_bytes > PAGE_SIZE:
        nr_pages = stock.nr_bytes >> PAGE_SHIFT
        stock.nr_bytes &= PAGE_SIZE - 1
    if nr_pages:
        obj_cgroup_uncharge_pages(sys, objcg, nr_pages, cpu)


def obj_cgroup_charge(sys: System, objcg: ObjCgroup, size: int, task: Task | None,
                      user_fault: bool = False, nofail: bool = False) -> int:
    """obj_cgroup_charge(): size bytes from the stock, or whole pages with the rest parked."""
    cpu = task.cpu if task is not None else 0
    if consume_obj_stock(sys, objcg, size, cpu):
        objcg.nr_live_bytes += size
        return 0
    nr_pages, nr_bytes = size >> PAGE_SHIFT, size & (PAGE_SIZE - 1)
    if nr_bytes:
        nr_pages += 1
    ret = obj_cgroup_charge_pages(sys, objcg, nr_pages, task, user_fault, nofail)
    if ret:
        return ret
    objcg.nr_live_bytes += size
    if nr_bytes:
        refill_obj_stock(sys, objcg, PAGE_SIZE - nr_bytes, False, cpu)
    return 0


def obj_cgroup_uncharge(sys: System, objcg: ObjCgroup, size: int, cpu: int) -> None:
    """obj_cgroup_uncharge(): the bytes go back to this CPU's stock."""
    objcg.nr_live_bytes -= size
    refill_obj_stock(sys, objcg, size, True, cpu)
    obj_cgroup_maybe_release(sys, objcg)


def obj_cgroup_maybe_release(sys: System, objcg: ObjCgroup) -> None:
    """obj_cgroup_release(): a reparented objcg whose objects are all gone gives back the
    page its flushed remainder was part of."""
    if objcg.nr_live_bytes or objcg is objcg.memcg.objcg:
        return
    if any(s.cached_objcg is objcg for s in sys.obj_stock):
        return
    nr_pages = objcg.nr_charged_bytes >> PAGE_SHIFT
    objcg.nr_charged_bytes = 0
    if nr_pages:
        obj_cgroup_uncharge_pages(sys, objcg, nr_pages, 0)


def memcg_reparent_objcgs(sys: System, memcg: MemCgroup, parent: MemCgroup) -> None:
    """memcg_reparent_objcgs(): memcg's objcgs now charge the parent.

    The pages they hold were charged at memcg and every ancestor; from now on they are
    uncharged at the parent, so memcg's own counters let go of them here - the kernel
    leaves them in the dying memcg's counters, which nobody reads again.
    """
    objcgs = ([memcg.objcg] if memcg.objcg is not None else []) + memcg.objcg_list
    memcg.objcg = None
    memcg.objcg_list = []
    for objcg in objcgs:
        n = objcg.nr_pages
        if n:
            for counter in (memcg.memory, memcg.memsw, memcg.kmem):
                counter.usage = max(0, counter.usage - n)
        objcg.memcg = parent
        parent.objcg_list.append(objcg)


# -- page-sized kernel allocations (kernel stacks, page tables) -------------------------

@dataclass(eq=False)
class KmemPages:
    """Pages charged as kernel memory: who pays for them (an objcg or, 3.8, a memcg)."""

    owner: object
    nr_pages: int
    # the frames (page_alloc.alloc_kmem_pages) and the node counter they are under
    pfns: object = None
    item: str = ""


def memcg_kmem_charge_page(sys: System, task: Task | None, nr_pages: int,
                           user_fault: bool = False) -> KmemPages | int:
    """__memcg_kmem_charge_page(): charge nr_pages of kernel memory to the task's group.

    Returns what to uncharge later, or the failed charge's result.  Behind the kmem
    static key: while it is off nothing is looked at.  user_fault: allocated inside a
    page fault (a page table, mm/memory.c: __pte_alloc).
    """
    key = sys.kmem_key
    if key.enabled:  # static_branch_unlikely(): off, the hook is jumped over
        key.hits += 1
        return _memcg_kmem_charge_page(sys, task, nr_pages, user_fault)
    return KmemPages(None, nr_pages)


def _memcg_kmem_charge_page(sys: System, task: Task | None, nr_pages: int,
                            user_fault: bool) -> KmemPages | int:
    if sys.semantics == "3.8":
        # __memcg_kmem_newpage_charge(): pages allocated with __GFP_KMEMCG
        if task is None or not memcg_can_account_kmem(task.memcg):
            return KmemPages(None, nr_pages)
        ret = memcg_charge_kmem(sys, task.memcg, nr_pages, task)
        return ret if ret else KmemPages(task.memcg, nr_pages)
    objcg = get_obj_cgroup_from_current(sys, task)
    if objcg is None:
        return KmemPages(None, nr_pages)
    ret = obj_cgroup_charge_pages(sys, objcg, nr_pages, task, user_fault)
    if ret:
        return ret
    objcg.nr_live_bytes += nr_pages * PAGE_SIZE
    return KmemPages(objcg, nr_pages)


def obj_cgroup_memcg(objcg) -> MemCgroup | None:
    """obj_cgroup_memcg(): the group an objcg charges now (an ancestor once reparented)."""
    return objcg.memcg if isinstance(objcg, ObjCgroup) else objcg


def mod_objcg_state(sys: System, objcg, item: int, delta: int) -> None:
    """mod_objcg_state() / mod_lruvec_page_state() of a kernel page or object: the
    statistic moves in the group its objcg charges at that moment, so what a removed
    group's objects give back later comes off the ancestor that took them over
    (whose subtree sum still holds the removed group's share, mem_cgroup_css_free)."""
    memcg = obj_cgroup_memcg(objcg)
    if memcg is not None:
        sys.stats.mod(memcg.id, item, delta)


def memcg_kmem_uncharge_page(sys: System, pages: KmemPages, cpu: int = 0) -> None:
    """__memcg_kmem_uncharge_page(): give the pages back to whoever pays for them now."""
    owner, pages.owner = pages.owner, None
    if owner is None:
        return
    if isinstance(owner, ObjCgroup):
        owner.nr_live_bytes -= pages.nr_pages * PAGE_SIZE
        obj_cgroup_uncharge_pages(sys, owner, pages.nr_pages, cpu)
        obj_cgroup_maybe_release(sys, owner)
    else:
        memcg_uncharge_kmem(sys, owner, pages.nr_pages)


def drain_all_obj_stock(sys: System, memcg: MemCgroup) -> None:
    """The object half of drain_all_stock(): flush every CPU stock caching an objcg of memcg."""
    for cpu, stock in enumerate(sys.obj_stock):
        objcg = stock.cached_objcg
        if objcg is not None and objcg.memcg is memcg:
            drain_obj_stock(sys, stock, cpu)


def memcg_offline_kmem(sys: System, memcg: MemCgroup) -> None:
    """memcg_offline_kmem() at rmdir, as the kmemcg id policy says (document 004).

    "reparent" (4.0+, the kernel's choice): list_lru items move to the parent, the id
    is freed at once, and (6.18) the objcgs are reparented, so kernel objects no longer
    keep the group alive.  "keep" and "reclaim": the group keeps its id and its charges
    until it is freed (3.8-3.19).  3.8 rules mark the group dead
    (memcg_kmem_mark_dead): it is freed when its last kmem page is uncharged.
    """
    from . import slab  # late: slab imports names from here at load

    parent = memcg.parent
    if sys.semantics == "3.8":
        if not memcg.kmem_active:
            return
        memcg.kmem_dead = True
    reparent = sys.kmemcg_id_policy == "reparent"
    if sys.semantics != "3.8":
        if reparent:
            memcg_reparent_objcgs(sys, memcg, parent)
        elif memcg.objcg is not None:
            memcg.objcg_list.append(memcg.objcg)  # no longer the group's current objcg
            memcg.objcg = None
        drain_all_obj_stock(sys, memcg)
    if not reparent or memcg.kmemcg_id < 0:
        return
    kmemcg_id = memcg.kmemcg_id
    slab.memcg_deactivate_kmem_caches(sys, memcg)
    for m in memcg.subtree():  # descendants went offline first and carry this id too
        if m.kmemcg_id == kmemcg_id:
            m.kmemcg_id = parent.kmemcg_id
    list_lru.memcg_drain_all_list_lrus(sys, kmemcg_id, parent)
    slab.memcg_free_cache_id(sys, kmemcg_id)


def memcg_free_kmem(sys: System, memcg: MemCgroup) -> None:
    """The kmem part of mem_cgroup_css_free(): "keep"/"reclaim" free the id only now;
    3.8 drops the group's reference on the static key (disarm_kmem_keys)."""
    from . import slab  # late: slab imports names from here at load

    slab.memcg_destroy_kmem_caches(sys, memcg)
    if sys.kmemcg_id_policy != "reparent" and memcg.kmemcg_id >= 0:
        slab.memcg_free_cache_id(sys, memcg.kmemcg_id)
        memcg.kmemcg_id = -1
    if sys.semantics == "3.8" and memcg.kmem_active:
        sys.kmem_key.static_key_slow_dec()
