"""Memory cgroups: the groups, charging and uncharging, the per-CPU charge stock.

Follows mm/memcontrol.c as of Linux 6.18 (cgroup v1 files: mm/memcontrol-v1.c).
Charges are counted in pages on page counters (mm/page_counter.c); every group's
counters are children of its parent's (always hierarchical since 5.11).  The root
group's counters are never charged by the fast path (`mem_cgroup_is_root`), so its
memory.usage_in_bytes is computed from statistics, as the kernel does.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .mmzone import Lruvec, NR_LRU_LISTS
from .page_counter import PAGE_COUNTER_MAX, PageCounter

if TYPE_CHECKING:
    from .system import System
    from .tasks import Task

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
 PGACTIVATE, PGDEACTIVATE, MEMCG_OOM, MEMCG_OOM_KILL) = range(NR_LRU_BASE + NR_LRU_LISTS,
                                                              NR_LRU_BASE + NR_LRU_LISTS + 9)
NR_STAT_ITEMS = NR_LRU_BASE + NR_LRU_LISTS + 9


class StatTable:
    """Per-memcg statistics: one row of counters per memcg id (local values only)."""

    def __init__(self, rows: int = 64):
        self.a = np.zeros((rows, NR_STAT_ITEMS), np.int64)

    def ensure(self, memcg_id: int) -> None:
        if memcg_id >= len(self.a):
            grown = np.zeros((max(memcg_id + 1, 2 * len(self.a)), NR_STAT_ITEMS), np.int64)
            grown[:len(self.a)] = self.a
            self.a = grown

    def mod(self, memcg_id: int, item: int, delta: int) -> None:
        self.a[memcg_id, item] += delta

    def mod_many(self, ids: np.ndarray, item: int, delta: int = 1) -> None:
        """Add delta per page to item of each page's memcg (ids may repeat)."""
        if len(ids):
            np.add.at(self.a[:, item], ids, delta)


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
    children: list = field(default_factory=list)
    tasks: list = field(default_factory=list)  # tasks in the order they joined
    soft_limit: int = PAGE_COUNTER_MAX
    swappiness: int = 60  # mm/vmscan.c: vm_swappiness default
    oom_kill_disable: int = 0
    under_oom: int = 0
    oom_lock: bool = False
    online: bool = True
    move_charge_at_immigrate: int = 0
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
        for c in self.children:
            yield from c.subtree()

    def is_descendant(self, root: MemCgroup) -> bool:
        """mem_cgroup_is_descendant()."""
        return any(m is root for m in self.ancestors())


def mem_cgroup_alloc(sys: System, parent: MemCgroup | None, name: str) -> MemCgroup:
    """mem_cgroup_css_alloc() + css_online(): a new group linked below parent.

    swappiness and oom_kill_disable are inherited; move_charge_at_immigrate starts at 0.
    """
    memcg_id = sys.idr_alloc()
    pc = (lambda p: PageCounter(parent=p))
    memcg = MemCgroup(
        id=memcg_id, name=name, parent=parent,
        memory=pc(parent.memory if parent else None),
        memsw=pc(parent.memsw if parent else None),
        kmem=pc(parent.kmem if parent else None),
        tcpmem=pc(parent.tcpmem if parent else None),
    )
    for c in (memcg.memory, memcg.memsw, memcg.kmem, memcg.tcpmem):
        c.owner = memcg  # container_of(counter, struct mem_cgroup, memory)
    if parent is not None:
        memcg.swappiness = parent.swappiness
        memcg.oom_kill_disable = parent.oom_kill_disable
        parent.children.append(memcg)
    memcg.nr_page_events = [0] * sys.cpus
    memcg.thresh_target = [0] * sys.cpus
    memcg.softlimit_target = [0] * sys.cpus
    sys.memcgs[memcg_id] = memcg
    sys.stats.ensure(memcg_id)
    return memcg


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
    """
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
    """The most pages that could be charged right now without any level failing."""
    m = PAGE_COUNTER_MAX
    for c in memcg.memory.ancestors():
        m = min(m, c.max - c.usage)
    for c in memcg.memsw.ancestors():
        m = min(m, c.max - c.usage)
    return max(0, m)


# Results of try_charge_memcg() besides 0.
CHARGE_NOMEM = -errno.ENOMEM
CHARGE_OOM_WAIT = 1  # v1 oom_kill_disable: the faulting task sleeps (memcg_in_oom)
CHARGE_KILLED = 2  # the charging task itself was chosen by the OOM killer


def try_charge_memcg(sys: System, memcg: MemCgroup, nr_pages: int, task: Task | None,
                     user_fault: bool = False) -> int:
    """try_charge_memcg() (mm/memcontrol.c, 6.x): charge nr_pages or reclaim, retry, OOM.

    Returns 0 on success, CHARGE_NOMEM, CHARGE_OOM_WAIT (v1 oom_kill_disable in a user
    fault: the caller puts the task to sleep) or CHARGE_KILLED.
    """
    from . import memcontrol_v1, vmscan  # the mechanisms charge calls into

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
                return 0
            memcg.memsw.uncharge(batch)
            mem_over_limit = fail.owner
        else:
            mem_over_limit = fail.owner
            may_swap = False  # the memsw limit was hit: swapping cannot help
        if batch > nr_pages:
            batch = nr_pages
            continue
        nr_reclaimed = vmscan.try_to_free_mem_cgroup_pages(sys, mem_over_limit, nr_pages, may_swap)
        # User-space threads woken by reclaim (pressure listeners, userspace shrinkers) run
        # while this task retries; memory they free lets the charge succeed.
        sys.run_watchers()
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
        sys.stats.mod(mem_over_limit.id, MEMCG_OOM, 1)
        ret = memcontrol_v1.mem_cgroup_oom(sys, mem_over_limit, nr_pages, task, user_fault)
        if ret is True:
            passed_oom = True
            nr_retries = MAX_RECLAIM_RETRIES
            continue
        return ret


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
        done += consume_stock(sys, memcg, n - done, cpu)
        if done == n:
            break
        margin = hierarchy_margin(memcg)
        room = margin // MEMCG_CHARGE_BATCH
        if not room and margin:
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
    for c in list(memcg.memsw.ancestors()) + list(memcg.memory.ancestors()):
        start = max(0, c.max - c.usage - (MEMCG_CHARGE_BATCH - 1))
        passed = min(bound, start)
        if passed:
            c.watermark = max(c.watermark, c.usage + passed - 1 + MEMCG_CHARGE_BATCH)
        if start < bound:
            c.failcnt += bound - start
            bound = start
        if not bound:
            break
    memcg.memsw.charge(k)
    memcg.memory.charge(k)


def commit_charge(sys: System, memcg: MemCgroup, pfns: np.ndarray, cpu: int) -> None:
    """commit_charge() + memcg1_commit_charge(): the pages now belong to memcg."""
    n = len(pfns)
    sys.mem.memcg[pfns] = memcg.id
    # mm/memcontrol-v1.c: memcg1_charge_statistics - one PGPGIN per folio
    sys.stats.mod(memcg.id, PGPGIN, n)
    page_events(sys, memcg, n, cpu)


def uncharge_pages(sys: System, pfns: np.ndarray, cpu: int = 0, memsw: bool = True) -> None:
    """mem_cgroup_uncharge_folios(): drop the charges of pages being freed.

    memsw=False is the swap-out case: the memsw charge stays with the swap entry.
    """
    if not len(pfns):
        return
    ids, counts = np.unique(sys.mem.memcg[pfns], return_counts=True)
    for memcg_id, n in zip(ids.tolist(), counts.tolist()):
        if memcg_id == 0:
            continue
        memcg = sys.memcgs[memcg_id]
        if not memcg.is_root():
            memcg.memory.uncharge(n)
            if memsw:
                memcg.memsw.uncharge(n)
        sys.stats.mod(memcg_id, PGPGOUT, n)
        page_events(sys, memcg, n, cpu)
        if memcg.under_oom:
            from .memcontrol_v1 import memcg1_oom_recover
            memcg1_oom_recover(sys, memcg)
    sys.mem.memcg[pfns] = 0
    sys.maybe_free_dying()


def page_events(sys: System, memcg: MemCgroup, n: int, cpu: int) -> None:
    """nr_page_events accounting and memcg1_check_events() at the ratelimit targets."""
    from .memcontrol_v1 import mem_cgroup_threshold, memcg1_update_tree

    val = memcg.nr_page_events[cpu] + n
    memcg.nr_page_events[cpu] = val
    # mm/memcontrol-v1.c: mem_cgroup_event_ratelimit
    if val - memcg.thresh_target[cpu] >= 0:
        memcg.thresh_target[cpu] = val + THRESHOLDS_EVENTS_TARGET
        do_softlimit = val - memcg.softlimit_target[cpu] >= 0
        if do_softlimit:
            memcg.softlimit_target[cpu] = val + SOFTLIMIT_EVENTS_TARGET
        mem_cgroup_threshold(sys, memcg)
        if do_softlimit:
            memcg1_update_tree(sys, memcg)


def mem_cgroup_usage(sys: System, memcg: MemCgroup, swap: bool = False) -> int:
    """mem_cgroup_usage(): the counter, or for the root an estimate from global state."""
    if memcg.is_root():
        val = int(sys.stats.a[:, NR_FILE_PAGES].sum() + sys.stats.a[:, NR_ANON_MAPPED].sum())
        if swap:
            val += sys.swap.nr_used
        return val
    return (memcg.memsw if swap else memcg.memory).usage


def memcg_page_state(sys: System, memcg: MemCgroup, item: int, hierarchical: bool) -> int:
    """memcg_page_state() (subtree, dying groups included) or _local()."""
    if not hierarchical:
        return int(sys.stats.a[memcg.id, item])
    ids = [m.id for m in memcg.subtree()]
    return int(sys.stats.a[ids, item].sum())


def mem_cgroup_resize_max(sys: System, memcg: MemCgroup, max_pages: int, memsw: bool) -> None:
    """mem_cgroup_resize_max() (memcontrol-v1.c): set a limit, reclaiming down to it first.

    memory.limit must stay <= memsw.limit (EINVAL).  Below usage: drain the stocks once,
    then reclaim; a round that frees nothing gives up with EBUSY.
    """
    from .memcontrol_v1 import memcg1_oom_recover
    from .vmscan import try_to_free_mem_cgroup_pages

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
        if not try_to_free_mem_cgroup_pages(sys, memcg, 1, may_swap=not memsw):
            raise OSError(errno.EBUSY, "Device or resource busy")
    if enlarge:
        memcg1_oom_recover(sys, memcg)
