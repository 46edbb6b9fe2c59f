"""Random workloads on a small machine, with the model's bookkeeping checked after
every step.

A Hypothesis state machine creates and removes groups, starts tasks that touch and free
anonymous memory, read, write and unlink files, map shared memory, move between groups
and exit, and writes limits.  After each step:

* every page frame in use has exactly one owner memcg id, and that memcg exists; free
  frames have none and are on no LRU list;
* for every non-root group, online or dying: memory usage = pages charged to it + its
  children's usage + pages pre-charged in the per-CPU stocks + its own kernel memory
  (kmem usage minus its children's: forks charge stacks and task structures); memsw
  usage = the same +
  swap entries recorded for it; usage never exceeds the limit (the model makes no forced
  charges for user pages); max_usage >= usage;
* the statistics (rss, cache, shmem, mapped_file, dirty, swap, LRU sizes) equal the pages
  the model holds, and each LRU list's size equals the pages that say they are on it;
* each task's rss counters equal the pages its mappings hold.

At the end all tasks exit, files are unlinked and every group is emptied: every counter
and statistic returns to zero and every frame is free.
"""

from __future__ import annotations

import errno
import os

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import memcg
from memcg.cgroup import cgroup_get_from_path
from memcg.mm import memcontrol as mc
from memcg.mm.memcontrol import OBJCG_POINTER_SIZE
from memcg.mm.memcontrol import (MEMCG_SWAP, NR_ANON_MAPPED, NR_FILE_DIRTY, NR_FILE_MAPPED,
                              NR_FILE_PAGES, NR_LRU_BASE, NR_SHMEM, stock_pages)
from memcg.mm.page_counter import PAGE_COUNTER_MAX
from memcg.mm.percpu import pcpu_obj_full_size
from memcg.mm.slab import kmalloc_slab
from memcg.mm.mmzone import LRU_NONE, NR_LRU_LISTS, PG_anon, PG_dirty, PG_mapped, PG_swapbacked


def _stats_pages(sys) -> int:
    """The most pages a group's statistics can hold at its parent: each object charged
    on its own rounds up to whole pages (memcontrol.mem_cgroup_alloc_stats)."""
    kmalloc = [int(kmalloc_slab(size).rsplit("-", 1)[1]) + OBJCG_POINTER_SIZE
               for size in (mc.SIZEOF_MEMCG_VMSTATS, mc.SIZEOF_LRUVEC_STATS)]
    percpu = [pcpu_obj_full_size(sys, size) for size in (
        mc.SIZEOF_MEMCG_VMSTATS_PERCPU, mc.SIZEOF_MEMCG1_EVENTS_PERCPU,
        mc.SIZEOF_LRUVEC_STATS_PERCPU)]
    return sum(-(-n // PAGE) for n in kmalloc + percpu)


def _buffer_head_pages(sys, memcg) -> int:
    """Pages the buffer heads charged in memcg's subtree can take."""
    cache = sys.slab.caches["buffer_head"]
    n = sum(m.buffer_heads for m in memcg.subtree())
    return -(-n * (cache.object_size + OBJCG_POINTER_SIZE) // PAGE) + (1 if n else 0)


PAGE = 4096
NAMES = ("a", "b", "c")
FILES = ("f0", "f1", "f2", "f3")
SHM = ("s0", "s1")
UNLIMITED = PAGE_COUNTER_MAX * PAGE
LIMITS = (1 << 20, 2 << 20, 4 << 20, 8 << 20, 16 << 20, 32 << 20, -1)

pages = st.integers(min_value=1, max_value=1024)  # a few pages to 4 MiB
index = st.integers(min_value=0, max_value=10**6)


class MemcgMachine(RuleBasedStateMachine):
    MEMORY = "256M"
    SWAP = "0"
    CPUS = 2

    def __init__(self):
        super().__init__()
        self.k = memcg.SimKernel(memory=self.MEMORY, cpus=self.CPUS, swap=self.SWAP)
        self.sys = self.k.sys
        self.groups = ["/"]  # online groups
        self.tasks = []  # every task ever started

    # --- helpers ----------------------------------------------------------------------

    def alive(self):
        return [t for t in self.tasks if t.state in ("running", "blocked")]

    def pick(self, seq, i):
        return seq[i % len(seq)]

    def shm_mapped(self, name):
        obj = self.sys.shmem.get(name)
        return obj is not None and bool(obj.mappers)

    def expect_oserror(self, fn, *allowed):
        try:
            fn()
        except OSError as e:
            assert e.errno in allowed, f"unexpected {errno.errorcode.get(e.errno)}: {e}"

    # --- groups -----------------------------------------------------------------------

    @rule(parent=index, name=st.sampled_from(NAMES))
    def mkdir(self, parent, name):
        p = self.pick(self.groups, parent)
        if p.count("/") >= 3 and p != "/":
            return
        path = (p if p != "/" else "") + "/" + name
        if path in self.groups:
            try:
                self.k.mkdir(path)
            except FileExistsError:
                return
            raise AssertionError("mkdir of an existing group succeeded")
        try:
            self.k.mkdir(path)
        except OSError as e:
            # the parent pays for the new group's statistics (mem_cgroup_css_alloc under
            # set_active_memcg): ENOMEM when it cannot, and no group is left behind
            assert e.errno == errno.ENOMEM and p != "/"
            assert name not in self.k.listdir(p)
            return
        self.groups.append(path)

    @rule(i=index)
    def rmdir(self, i):
        if len(self.groups) == 1:
            return
        path = self.pick(self.groups[1:], i)
        busy = any(g.startswith(path + "/") for g in self.groups) or any(
            t.cgroup.path == path for t in self.alive())
        if busy:
            try:
                self.k.rmdir(path)
            except OSError as e:
                assert e.errno == errno.EBUSY
                return
            raise AssertionError(f"rmdir {path} with tasks or children succeeded")
        self.k.rmdir(path)
        self.groups.remove(path)

    @rule(i=index, limit=st.sampled_from(LIMITS))
    def write_limit(self, i, limit):
        if len(self.groups) == 1:
            return
        path = self.pick(self.groups[1:], i)
        old = self.k.read(f"{path}/memory.limit_in_bytes")
        try:
            self.k.write(f"{path}/memory.limit_in_bytes", str(limit))
        except OSError as e:
            assert e.errno in (errno.EBUSY, errno.EINVAL)
            assert self.k.read(f"{path}/memory.limit_in_bytes") == old
            if e.errno == errno.EINVAL:  # above the memsw limit
                want = limit if limit >= 0 else UNLIMITED
                assert want > int(self.k.read(f"{path}/memory.memsw.limit_in_bytes"))
        else:
            want = limit if limit >= 0 else UNLIMITED
            assert int(self.k.read(f"{path}/memory.limit_in_bytes")) == want
            assert int(self.k.read(f"{path}/memory.usage_in_bytes")) <= want

    @rule(i=index, limit=st.sampled_from(LIMITS))
    def write_memsw_limit(self, i, limit):
        if len(self.groups) == 1:
            return
        path = self.pick(self.groups[1:], i)
        old = self.k.read(f"{path}/memory.memsw.limit_in_bytes")
        try:
            self.k.write(f"{path}/memory.memsw.limit_in_bytes", str(limit))
        except OSError as e:
            assert e.errno in (errno.EBUSY, errno.EINVAL)
            assert self.k.read(f"{path}/memory.memsw.limit_in_bytes") == old
            if e.errno == errno.EINVAL:  # below the memory limit
                assert 0 <= limit < int(self.k.read(f"{path}/memory.limit_in_bytes"))
        else:
            want = limit if limit >= 0 else UNLIMITED
            assert int(self.k.read(f"{path}/memory.memsw.limit_in_bytes")) == want
            assert int(self.k.read(f"{path}/memory.limit_in_bytes")) <= want

    @rule(i=index)
    def force_empty(self, i):
        if len(self.groups) == 1:
            return
        self.k.write(f"{self.pick(self.groups[1:], i)}/memory.force_empty", "0")

    @rule(i=index, value=st.sampled_from(("0", "1")))
    def oom_kill_disable(self, i, value):
        if len(self.groups) == 1:
            return
        self.k.write(f"{self.pick(self.groups[1:], i)}/memory.oom_control", value)

    @rule(ticks=st.integers(1, 3))
    def advance(self, ticks):
        self.k.advance(ticks)

    # --- tasks ------------------------------------------------------------------------

    @rule(i=index)
    def spawn(self, i):
        if len(self.alive()) >= 12:
            return
        self.tasks.append(self.k.spawn(self.pick(self.groups, i)))

    @precondition(lambda self: self.alive())
    @rule(i=index)
    def fork(self, i):
        if len(self.alive()) >= 12:
            return
        t = self.pick(self.alive(), i)
        if t.state == "running":
            # the new process's kernel memory may not fit under the group's limit
            self.expect_oserror(lambda: self.tasks.append(t.fork()), errno.ENOMEM)

    @precondition(lambda self: self.alive())
    @rule(i=index, n=pages, locked=st.booleans())
    def touch_anon(self, i, n, locked):
        self.pick(self.alive(), i).touch_anon(n * PAGE, locked=locked and n <= 64)

    @precondition(lambda self: self.alive())
    @rule(i=index, n=pages)
    def write_anon(self, i, n):
        """A write to the task's anonymous memory: copy-on-write faults after a fork."""
        self.pick(self.alive(), i).write_anon(n * PAGE)

    @precondition(lambda self: self.alive())
    @rule(i=index, n=pages)
    def free_anon(self, i, n):
        self.pick(self.alive(), i).free_anon(n * PAGE)

    @precondition(lambda self: self.alive())
    @rule(i=index, name=st.sampled_from(FILES), n=pages)
    def read_file(self, i, name, n):
        t = self.pick(self.alive(), i)
        self.expect_oserror(lambda: t.read_file(name, n * PAGE), errno.ENOMEM, errno.ESRCH)

    @precondition(lambda self: self.alive())
    @rule(i=index, name=st.sampled_from(FILES), n=pages)
    def write_file(self, i, name, n):
        t = self.pick(self.alive(), i)
        self.expect_oserror(lambda: t.write_file(name, n * PAGE), errno.ENOMEM, errno.ESRCH)

    @precondition(lambda self: self.alive())
    @rule(i=index, name=st.sampled_from(SHM), n=pages)
    def touch_shm(self, i, name, n):
        self.pick(self.alive(), i).touch_shm(name, n * PAGE)

    @precondition(lambda self: self.alive())
    @rule(i=index, name=st.sampled_from(FILES + SHM))
    def unlink(self, i, name):
        # An unlinked shmem object that is still mapped is never freed by the model
        # (see test_charge.py::test_unlinked_shm_is_freed_at_last_unmap): avoid it here.
        if self.shm_mapped(name):
            return
        t = self.pick(self.alive(), i)
        if t.state != "running":
            return
        exists = name in self.sys.files or name in self.sys.shmem
        try:
            t.unlink(name)
        except FileNotFoundError:
            assert not exists
        else:
            assert exists

    @precondition(lambda self: self.alive())
    @rule(i=index, g=index)
    def move(self, i, g):
        t = self.pick(self.alive(), i)
        path = self.pick(self.groups, g)
        t.move(path)
        assert str(t.pid) in self.k.read(f"{path}/cgroup.procs").split()

    @precondition(lambda self: self.alive())
    @rule(i=index)
    def exit(self, i):
        t = self.pick(self.alive(), i)
        t.exit()
        assert t.state == "exited"

    @precondition(lambda self: len(self.groups) > 1)
    @rule(i=index, name=st.sampled_from(FILES), n=pages)
    def retire(self, i, name, n):
        """A leaf group's task reads a file and exits, and the group is removed while
        its page cache is still charged: a dying group, for later reclaim to free."""
        leaves = [g for g in self.groups[1:]
                  if not any(o.startswith(g + "/") for o in self.groups)]
        if not leaves:
            return
        path = self.pick(leaves, i)
        t = self.k.spawn(path)
        self.tasks.append(t)
        self.expect_oserror(lambda: t.read_file(name, n * PAGE), errno.ENOMEM)
        for u in self.alive():
            if u.cgroup.path == path:
                u.exit()
        self.k.rmdir(path)
        self.groups.remove(path)

    # --- invariants ------------------------------------------------------------------------

    def used_mask(self):
        mem = self.sys.mem
        used = np.ones(mem.nr_pages, bool)
        used[mem._free[:mem.nr_free]] = False
        return used

    @invariant()
    def bookkeeping_is_consistent(self):
        sys = self.sys
        mem = sys.mem
        used = self.used_mask()
        ids = mem.memcg.astype(np.int64)
        # every frame in use has one owner that exists; free frames have none
        assert (ids[~used] == 0).all()
        assert (mem.lru[~used] == LRU_NONE).all()
        # the kernel's own frames (slab, stacks, page tables, per-CPU chunks) are in use
        # without an owner group and off the LRU; with the free and the user frames they
        # make up the machine
        kernel = used & (ids == 0)
        assert int(kernel.sum()) == sum(sys.kernel_pages.values())
        assert (mem.lru[kernel] == LRU_NONE).all()
        assert mem.nr_free + int((used & ~kernel).sum()) + int(kernel.sum()) == mem.nr_pages
        used = used & ~kernel
        owners = np.unique(ids[used])
        assert 0 not in owners
        assert set(owners.tolist()) <= set(sys.memcgs)
        # every page in use sits on an LRU list of its owner
        assert (mem.lru[used] != LRU_NONE).all()

        nrows = max(sys.memcgs) + 1
        charged = np.bincount(ids[used], minlength=nrows)
        flags = mem.flags
        u = used

        def count(mask):
            return np.bincount(ids[u & mask], minlength=nrows)

        anon = count((flags & PG_anon) != 0)
        cache = count((flags & PG_anon) == 0)
        shmem = count(((flags & PG_swapbacked) != 0) & ((flags & PG_anon) == 0))
        mapped_file = count(((flags & PG_mapped) != 0) & ((flags & PG_anon) == 0))
        dirty = count((flags & PG_dirty) != 0)
        lru = [count(mem.lru == i) for i in range(NR_LRU_LISTS)]
        sw = sys.swap
        if sw.nr_pages:
            used_slots = np.ones(sw.nr_pages, bool)
            used_slots[sw._free[:sw.nr_free]] = False
            swap = np.bincount(sw.swap_cgroup[:sw.nr_pages][used_slots].astype(np.int64),
                               minlength=nrows)
            assert 0 not in sw.swap_cgroup[:sw.nr_pages][used_slots]
        else:
            swap = np.zeros(nrows, np.int64)
        assert len(swap) <= nrows

        a = sys.stats.a
        online = {cgroup_get_from_path(sys, p) for p in self.groups}
        all_groups = list(sys.root.subtree())
        assert set(all_groups) == set(sys.memcgs.values())
        assert len(sys.dying) == len(all_groups) - len(online)
        for m in all_groups:
            i = m.id
            assert m.online == (m in online)
            # statistics against the pages the model holds
            assert a[i, NR_ANON_MAPPED] == anon[i], m.path
            assert a[i, NR_FILE_PAGES] == cache[i], m.path
            assert a[i, NR_SHMEM] == shmem[i], m.path
            assert a[i, NR_FILE_MAPPED] == mapped_file[i], m.path
            assert a[i, NR_FILE_DIRTY] == dirty[i], m.path
            assert a[i, MEMCG_SWAP] == swap[i], m.path
            for lru_id in range(NR_LRU_LISTS):
                assert m.lruvec.lists[lru_id].nr == a[i, NR_LRU_BASE + lru_id] == lru[lru_id][i], \
                    (m.path, lru_id)
            if m.is_root():
                continue
            # hierarchical counters
            kids = sum(c.memory.usage for c in m.children)
            kids_sw = sum(c.memsw.usage for c in m.children)
            kmem = m.kmem.usage - sum(c.kmem.usage for c in m.children)
            stock = stock_pages(sys, m)
            assert kmem >= 0, m.path
            assert m.memory.usage == charged[i] + kids + stock + kmem, m.path
            assert m.memsw.usage == charged[i] + swap[i] + kids_sw + stock + kmem, m.path
            # buffer heads are __GFP_NOFAIL (fs/buffer.c): their charge may go past the
            # limit (try_charge_memcg: force), by the pages they take at most
            forced = _buffer_head_pages(sys, m)
            assert m.memory.usage <= m.memory.max + forced, m.path
            assert m.memsw.usage <= m.memsw.max + forced, m.path
            assert m.memory.watermark >= m.memory.usage
            assert m.memsw.watermark >= m.memsw.usage
        # dying groups hold no stock
        for m in sys.dying:
            assert stock_pages(sys, m) == 0
        # the cgroup files show the same figures
        for path in self.groups:
            m = cgroup_get_from_path(sys, path)
            st_ = dict(ln.split() for ln in self.k.read(f"{path}/memory.stat").splitlines())
            assert int(st_["rss"]) == anon[m.id] * PAGE
            assert int(st_["cache"]) == cache[m.id] * PAGE
            if path != "/":
                assert int(self.k.read(f"{path}/memory.usage_in_bytes")) == m.memory.usage * PAGE
                assert int(self.k.read(f"{path}/memory.max_usage_in_bytes")) >= m.memory.usage * PAGE
        # root usage: every page in use (cache + rss) plus, for memsw, swap in use
        assert int(self.k.read("/memory.usage_in_bytes")) == int(used.sum()) * PAGE
        assert int(self.k.read("/memory.memsw.usage_in_bytes")) == \
            (int(used.sum()) + sw.nr_used) * PAGE

    @invariant()
    def stat_rows_noted(self):
        """StatTable: every row that differs from its flushed LRU sizes waits in `updated`,
        every nonzero row is noted, and the totals are the sums over every row."""
        lrus = slice(NR_LRU_BASE, NR_LRU_BASE + NR_LRU_LISTS)
        for table in (self.sys.stats, self.sys.dead_stats):
            noted = table.used | table.updated
            assert set(np.flatnonzero(table.a.any(axis=1)).tolist()) <= noted
            for item in (0, NR_FILE_DIRTY, NR_FILE_PAGES, NR_ANON_MAPPED):
                assert table.total(item) == int(table.a[:, item].sum())
        st = self.sys.stats
        differ = np.flatnonzero((st.a[:, lrus] != st.flushed).any(axis=1)).tolist()
        assert set(differ) <= st.updated

    @invariant()
    def task_rss_matches_mappings(self):
        for t in self.alive():
            mm = t.mm
            resident = sum(int(np.count_nonzero(v.slots[:v.nr_faulted] >= 0)) for v in mm.vmas)
            swapped = sum(int(np.count_nonzero(v.slots[:v.nr_faulted] <= -2)) for v in mm.vmas)
            assert mm.anon_rss == resident
            assert mm.swapents == swapped
            if not self.sys.swap.nr_pages:
                # Exact only without swap: a shmem page swapped back in is not counted
                # again (test_oom.py::test_shmem_swapped_back_in_counts_for_oom_badness).
                shm = sum(int(np.count_nonzero(o.slots[:o.mappers.get(mm, 0)] >= 0))
                          for o in mm.shm_objects)
                assert mm.shmem_rss == shm
        for t in self.tasks:
            if t.state in ("exited", "oom_killed"):
                assert t.mm.anon_rss == 0 and t.mm.swapents == 0
                assert t not in t.cgroup.tasks

    @invariant()
    def swap_references_match_mappings(self):
        """swap_map: one reference per mapping slot that holds the entry (a page swapped
        out while shared copy-on-write is one entry in each mapper)."""
        sw = self.sys.swap
        if not sw.nr_pages:
            return
        refs = np.zeros(sw.nr_pages, np.int64)
        for mapping in self.sys.mappings.values():
            if mapping.kind == "file":
                continue  # its entries below HOLE are shadows, not swap
            s = mapping.slots
            np.add.at(refs, -s[s <= -2] - 2, 1)
        assert (sw.swap_map[:sw.nr_pages] == refs).all()

    @invariant()
    def task_states(self):
        for t in self.tasks:
            assert t.state in ("running", "blocked", "exited", "oom_killed")
            if t.state == "blocked":
                assert t in self.sys.clock.sleeping
        listed = {int(p) for g in self.groups for p in self.k.read(f"{g}/cgroup.procs").split()}
        assert listed == {t.pid for t in self.alive()}

    # --- teardown: everything returns to zero ---------------------------------------------------

    def teardown(self):
        try:
            self.drain_everything()
        finally:
            self.k.close()

    def drain_everything(self):
        k, sys = self.k, self.sys
        for t in self.alive():
            t.exit()
        assert not self.alive()
        assert not sys.clock.sleeping
        cleaner = k.spawn("/")
        for name in list(sys.files) + list(sys.shmem):
            cleaner.unlink(name)
        cleaner.exit()
        # deepest first, so that the parents see empty children
        for path in sorted(self.groups[1:], key=lambda p: -p.count("/")):
            k.write(f"{path}/memory.force_empty", "0")
        self.bookkeeping_is_consistent()
        # what is left in use is the kernel's: the groups' own statistics and the slabs
        assert sys.mem.nr_free + sum(sys.kernel_pages.values()) == sys.mem.nr_pages
        assert sys.swap.nr_free == sys.swap.nr_pages
        assert not sys.dying
        assert k.debugfs()["dying_groups"] == 0
        for path in self.groups:
            m = cgroup_get_from_path(sys, path)
            for item in (NR_ANON_MAPPED, NR_FILE_PAGES, NR_SHMEM, NR_FILE_MAPPED, NR_FILE_DIRTY,
                         MEMCG_SWAP):
                assert sys.stats.a[m.id, item] == 0
            for lru_id in range(NR_LRU_LISTS):
                assert m.lruvec.lists[lru_id].nr == 0
            if path == "/":
                assert k.read("/memory.usage_in_bytes") == "0\n"
                continue
            # What stays is kernel memory: the sub-page rest of the bytes charged to each
            # group's obj_cgroup (a page at most each), which goes when the group does,
            # and the statistics of every group below, which its parent pays for
            # (mem_cgroup_css_alloc under set_active_memcg: whole pages at most each)
            assert m.memory.usage == m.memsw.usage == m.kmem.usage, path
            below = len(list(m.subtree())) - 1
            assert m.kmem.usage <= below + 1 + below * _stats_pages(sys), path
            assert k.read(f"{path}/memory.usage_in_bytes") == f"{m.kmem.usage * PAGE}\n"
            st_ = dict(ln.split() for ln in k.read(f"{path}/memory.stat").splitlines())
            for key in ("total_rss", "total_cache", "total_shmem", "total_swap",
                        "total_mapped_file", "total_dirty", "total_unevictable"):
                assert st_[key] == "0", (path, key)
        # and every group can now be removed without leaving a dying one behind
        for path in sorted(self.groups[1:], key=lambda p: -p.count("/")):
            k.rmdir(path)
        assert k.debugfs()["dying_groups"] == 0
        assert k.debugfs()["memcg_ids_in_use"] == 1


# MEMCG_STATEFUL_STEPS=100000 runs the long profile: that many steps in all, in runs of
# 100 steps (the default profile: 40 runs of 50 steps per machine).
_LONG = int(os.environ.get("MEMCG_STATEFUL_STEPS", "0"))
SETTINGS = settings(max_examples=max(40, _LONG // 100) if _LONG else 40,
                    stateful_step_count=100 if _LONG else 50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


class NoSwap(MemcgMachine):
    MEMORY = "256M"
    SWAP = "0"


class WithSwap(MemcgMachine):
    MEMORY = "256M"
    SWAP = "64M"


class TightWithSwap(MemcgMachine):
    """A machine small enough for global reclaim, swap and global OOM to happen."""

    MEMORY = "16M"
    SWAP = "8M"


class TinyWithSwap(MemcgMachine):
    """So tight that one file read reclaims machine-wide, with removed groups still
    holding cache (the retire rule): dying groups under global reclaim and swap."""

    MEMORY = "4M"
    SWAP = "2M"


TestNoSwap = NoSwap.TestCase
TestNoSwap.settings = SETTINGS
TestWithSwap = WithSwap.TestCase
TestWithSwap.settings = SETTINGS
TestTightWithSwap = TightWithSwap.TestCase
TestTightWithSwap.settings = SETTINGS
TestTinyWithSwap = TinyWithSwap.TestCase
TestTinyWithSwap.settings = SETTINGS


def _check(m):
    m.bookkeeping_is_consistent()
    m.swap_references_match_mappings()
    m.task_rss_matches_mappings()
    m.task_states()


def _replay(m, steps, *checks) -> None:
    """Run a shrunk sequence of the machine's rules, checking the invariants (and any
    extra checks, given the kernel's System) before the first and after every step."""
    _check(m)
    for name, kwargs in steps:
        getattr(m, name)(**kwargs)
        _check(m)
        for check in checks:
            check(m.sys)


def test_cow_copy_after_its_page_was_swapped_out_keeps_the_swap_reference():
    """A write fault on a page shared copy-on-write allocates the copy; that allocation
    reclaims and swaps the shared page out of both mappers.  wp_page_copy() re-checks
    the entry (pte_same): it is a swap entry now, so the copy goes back and the swap
    entry keeps its references - none is lost, and at the end every slot is free."""
    m = TinyWithSwap()
    steps = [
        ("advance", dict(ticks=1)),
        ("advance", dict(ticks=1)),
        ("advance", dict(ticks=1)),
        ("advance", dict(ticks=1)),
        ("advance", dict(ticks=1)),
        ("spawn", dict(i=74546)),
        ("spawn", dict(i=1000000)),
        ("mkdir", dict(name='a', parent=457)),
        ("touch_anon", dict(i=173, locked=True, n=713)),
        ("write_memsw_limit", dict(i=4970, limit=1048576)),
        ("advance", dict(ticks=2)),
        ("touch_anon", dict(i=1383, locked=True, n=425)),
        ("fork", dict(i=62242)),
        ("rmdir", dict(i=25)),
        ("spawn", dict(i=28882)),
        ("mkdir", dict(name='a', parent=28272)),
        ("read_file", dict(i=682, n=66, name='f3')),
        ("mkdir", dict(name='c', parent=410863)),
        ("touch_anon", dict(i=999999, locked=False, n=214)),
        ("retire", dict(i=155343, n=964, name='f3')),
        ("rmdir", dict(i=15345)),
        ("rmdir", dict(i=41650)),
        ("read_file", dict(i=22373, n=670, name='f3')),
        ("rmdir", dict(i=6562)),
        ("touch_anon", dict(i=5, locked=True, n=155)),
        ("fork", dict(i=4031)),
        ("advance", dict(ticks=1)),
        ("unlink", dict(i=735679, name='s0')),
        ("force_empty", dict(i=1493)),
        ("read_file", dict(i=178, n=77, name='f1')),
        ("force_empty", dict(i=157)),
        ("touch_anon", dict(i=169, locked=False, n=320)),
        ("mkdir", dict(name='c', parent=754)),
        ("write_anon", dict(i=566689, n=59)),
        ("spawn", dict(i=19908)),
        ("mkdir", dict(name='b', parent=452)),
        ("mkdir", dict(name='b', parent=481742)),
        ("rmdir", dict(i=461)),
        ("read_file", dict(i=120064, n=439, name='f3')),
        ("rmdir", dict(i=17)),
        ("fork", dict(i=2916)),
        ("write_anon", dict(i=36477, n=224)),
    ]
    try:
        _replay(m, steps)
        m.drain_everything()
        assert m.sys.swap.nr_free == m.sys.swap.nr_pages
        assert not m.sys.swap.swap_map[:m.sys.swap.nr_pages].any()
    finally:
        m.k.close()


def _buffer_heads_match_pages(sys):
    """Each group's buffer heads: one per page of the file cache with buffers charged to it."""
    want = {}
    for mapping in sys.mappings.values():
        if mapping.kind != "file" or not len(mapping.buffers):
            continue
        s = mapping.slots[:len(mapping.buffers)]
        assert not (mapping.buffers & (s < 0)).any(), mapping.name  # buffers of no page
        for memcg_id in sys.mem.memcg[s[mapping.buffers & (s >= 0)]].tolist():
            want[memcg_id] = want.get(memcg_id, 0) + 1
    for m in sys.memcgs.values():
        if not m.is_root():
            assert m.buffer_heads <= want.get(m.id, 0), m.path


def test_write_whose_buffer_heads_reclaim_keeps_its_new_pages():
    """A buffered write near the limit: the charge of the new pages' buffer heads
    reclaims.  The new folios are locked until their buffers are attached, so that
    reclaim takes other pages, never them: no buffer head outlives its page, and once
    everything is gone no kernel memory is left in the groups beyond their statistics."""
    m = TinyWithSwap()
    steps = [
        ("advance", dict(ticks=1)),
        ("advance", dict(ticks=1)),
        ("advance", dict(ticks=1)),
        ("advance", dict(ticks=1)),
        ("advance", dict(ticks=1)),
        ("spawn", dict(i=74546)),
        ("spawn", dict(i=1000000)),
        ("mkdir", dict(name='a', parent=457)),
        ("touch_anon", dict(i=173, locked=True, n=713)),
        ("write_memsw_limit", dict(i=4970, limit=1048576)),
        ("advance", dict(ticks=2)),
        ("touch_anon", dict(i=1383, locked=True, n=425)),
        ("move", dict(g=317, i=2605)),
        ("rmdir", dict(i=463)),
        ("advance", dict(ticks=1)),
        ("advance", dict(ticks=1)),
        ("advance", dict(ticks=1)),
        ("spawn", dict(i=297)),
        ("spawn", dict(i=214)),
        ("spawn", dict(i=506)),
        ("spawn", dict(i=74546)),
        ("touch_anon", dict(i=2502, locked=True, n=178)),
        ("mkdir", dict(name='a', parent=56705)),
        ("oom_kill_disable", dict(i=16881, value='0')),
        ("mkdir", dict(name='a', parent=182070)),
        ("write_limit", dict(i=26, limit=16777216)),
        ("spawn", dict(i=214)),
        ("mkdir", dict(name='c', parent=4202)),
        ("read_file", dict(i=23507, n=1, name='f3')),
        ("rmdir", dict(i=60594)),
        ("mkdir", dict(name='b', parent=16458)),
        ("rmdir", dict(i=5054)),
        ("rmdir", dict(i=2454)),
        ("move", dict(g=7443, i=757)),
        ("advance", dict(ticks=2)),
        ("write_limit", dict(i=42009, limit=1048576)),
        ("move", dict(g=362880, i=6894)),
        ("write_memsw_limit", dict(i=2065, limit=33554432)),
        ("oom_kill_disable", dict(i=951, value='0')),
        ("write_file", dict(i=4096, n=479, name='f0')),
        ("touch_anon", dict(i=3364, locked=True, n=79)),
        ("spawn", dict(i=365)),
        ("oom_kill_disable", dict(i=113484, value='1')),
        ("oom_kill_disable", dict(i=16384, value='1')),
        ("mkdir", dict(name='b', parent=448)),
        ("rmdir", dict(i=90)),
        ("spawn", dict(i=374)),
        ("write_memsw_limit", dict(i=5714, limit=33554432)),
        ("spawn", dict(i=427)),
        ("touch_anon", dict(i=458, locked=True, n=211)),
    ]
    try:
        _replay(m, steps, _buffer_heads_match_pages)
        m.drain_everything()
        assert all(g.buffer_heads == 0 for g in m.sys.memcgs.values())
    finally:
        m.k.close()


def test_oom_kill_of_a_mapper_whose_tree_has_a_shorter_copy():
    """A mapping loses its tail (free_anon) and is forked again: its anon_vma tree holds
    copies of different lengths.  Unmapping the longer one (an OOM kill's exit_mmap)
    counts the mappers of its pages past the shorter copy's end without indexing it."""
    m = TinyWithSwap()
    steps = [
        ("advance", dict(ticks=1)),
        ("mkdir", dict(name='a', parent=0)),
        ("spawn", dict(i=13523)),
        ("oom_kill_disable", dict(i=0, value='1')),
        ("write_memsw_limit", dict(i=0, limit=2097152)),
        ("touch_shm", dict(i=0, n=334, name='s1')),
        ("write_limit", dict(i=0, limit=1048576)),
        ("touch_shm", dict(i=0, n=1, name='s0')),
        ("touch_shm", dict(i=0, n=384, name='s0')),
        ("exit", dict(i=0)),
        ("advance", dict(ticks=3)),
        ("advance", dict(ticks=3)),
        ("rmdir", dict(i=277)),
        ("force_empty", dict(i=19593)),
        ("force_empty", dict(i=4961)),
        ("force_empty", dict(i=1740)),
        ("rmdir", dict(i=323463)),
        ("spawn", dict(i=39379)),
        ("force_empty", dict(i=366609)),
        ("touch_anon", dict(i=163301, locked=False, n=208)),
        ("fork", dict(i=8240)),
        ("touch_anon", dict(i=482, locked=True, n=1020)),
        ("move", dict(g=1223, i=5454)),
        ("mkdir", dict(name='a', parent=20546)),
        ("mkdir", dict(name='a', parent=486)),
        ("fork", dict(i=22722)),
        ("write_file", dict(i=22553, n=56, name='f0')),
        ("touch_anon", dict(i=880, locked=True, n=267)),
        ("retire", dict(i=60882, n=288, name='f3')),
        ("advance", dict(ticks=2)),
        ("free_anon", dict(i=25, n=10)),
        ("fork", dict(i=1000000)),
        ("write_anon", dict(i=7724, n=995)),
        ("move", dict(g=4185, i=4648)),
        ("read_file", dict(i=95172, n=36, name='f2')),
        ("fork", dict(i=2887)),
        ("touch_anon", dict(i=836411, locked=False, n=525)),
    ]
    try:
        _replay(m, steps)
        m.drain_everything()
        assert m.sys.mem.nr_free + sum(m.sys.kernel_pages.values()) == m.sys.mem.nr_pages
    finally:
        m.k.close()
