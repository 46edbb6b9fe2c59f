"""The page cache of files and of shmem/tmpfs objects (mm/filemap.c, mm/shmem.c).

A page-cache page is charged at insertion to the memcg of the task that brings it in
(filemap_add_folio -> mem_cgroup_charge) and stays charged there while it is cached,
whoever reads it later; once reclaimed, the next reader pays.  Reads mark pages accessed
(a second read activates); writes dirty them.  Shmem pages are swap-backed: they live on
the anon LRU lists and count as cache and shmem, not rss.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

import numpy as np

from ..kernel import PAGE_SIZE
from . import fastpath, memcontrol, page_alloc, page_writeback, readahead, slab, swap, swapfile
from .memcontrol import (NR_FILE_DIRTY, NR_FILE_MAPPED, NR_FILE_PAGES, NR_SHMEM, MEMCG_SWAP,
                         WORKINGSET_REFAULT_FILE, PGFAULT)
from .mmzone import (LRU_INACTIVE_ANON, LRU_INACTIVE_FILE, PG_dirty, PG_mapped, PG_swapbacked,
                     PG_young)
from .swapfile import swp_entry, swp_offset

if TYPE_CHECKING:
    from ..system import System
    from ..tasks import Task

HOLE = -1
SHADOW = -2  # workingset shadow entry left by an evicted file page (mm/workingset.c)
# Pages handled per step of a read or write: a threshold check and a reclaim can run
# between steps, as they would between the kernel's per-folio charges.
FILEMAP_BATCH = 64
# include/linux/xarray.h: XA_CHUNK_SHIFT - each node of the page-cache xarray has 64 slots
XA_CHUNK_SHIFT = 6


def nr_pages_of(nbytes: int) -> int:
    return -(-int(nbytes) // PAGE_SIZE)


class AddressSpace:
    """struct address_space: index -> page frame, or a hole / shadow / swap entry."""

    kind = "file"

    def __init__(self, sys: System, name: str):
        self.id = register_mapping(sys, self)
        self.name = name
        self.slots = np.full(0, HOLE, np.int64)
        self.buffers = np.zeros(0, bool)  # folio_buffers(): the page has buffer heads
        self.dirtied_when: int | None = None  # inode->dirtied_when, in ticks
        self.i_size = 0  # i_size_read(), in pages: readahead stops at the end of the file
        self.ra_marks: set[int] = set()  # head indices of the folios with PG_readahead

    def ensure(self, nr: int) -> None:
        if nr > len(self.slots):
            grown = np.full(max(nr, 2 * len(self.slots)), HOLE, np.int64)
            grown[:len(self.slots)] = self.slots
            self.slots = grown
            buffers = np.zeros(len(grown), bool)
            buffers[:len(self.buffers)] = self.buffers
            self.buffers = buffers

    def release_buffers(self, sys: System, idx: np.ndarray, pfns: np.ndarray) -> None:
        """filemap_release_folio() -> try_to_free_buffers(): the pages' buffer heads go."""
        if not self.buffers.any():
            return
        has = self.buffers[idx]
        if has.any():
            from ..fs import buffer  # late: fs builds on the page cache
            buffer.try_to_free_buffers(sys, pfns[has], sys.cpu)
            self.buffers[idx[has]] = False

    def resident(self) -> np.ndarray:
        """PFNs of the pages in the cache."""
        s = self.slots
        return s[s >= 0]

    def evict(self, sys: System, pfns: np.ndarray) -> np.ndarray:
        """__remove_mapping() for clean file pages: leave shadows, uncharge, free."""
        idx = sys.mem.index[pfns].astype(np.int64)
        self.release_buffers(sys, idx, pfns)
        self.slots[idx] = SHADOW
        if self.ra_marks:
            self.ra_marks.difference_update(idx.tolist())
        ids = sys.mem.memcg[pfns]
        sys.stats.mod_many(ids, NR_FILE_PAGES, -1)
        swap.release_pages(sys, pfns)
        return pfns


class ShmemObject(AddressSpace):
    """A shmem/tmpfs object: swap-backed page cache, mapped by the tasks that touch it."""

    kind = "shmem"

    def __init__(self, sys: System, name: str):
        super().__init__(sys, name)
        self.mappers: dict = {}  # mm -> pages of the object it maps (from offset 0)
        self.unlinked = False  # deleted while mapped: freed when the last mapping goes
        self.xa_extent = 0  # indices [0, xa_extent) hold entries (pages or swap entries)
        self.xa_nodes: list = []  # the radix_tree_node objects of i_pages, as allocated

    def mapped_extent(self) -> int:
        return max(self.mappers.values(), default=0)

    def evict(self, sys: System, pfns: np.ndarray, batches: list[int] | None = None) -> np.ndarray:
        """shmem_writeout(): move pages to swap while slots last; the rest stay.  batches:
        the pages are several reclaim batches' in a row (release_pages)."""
        pfns = self.swap_out(sys, pfns)
        if len(pfns):
            swap.release_pages(sys, pfns, memsw=False, batches=batches)
        return pfns

    def swap_out(self, sys: System, pfns: np.ndarray) -> np.ndarray:
        """The first half of shmem_writeout(): the pages that get a swap slot leave the
        object (their entries take their slots) and its mappers' counts; returns them,
        still charged and not yet freed."""
        pfns, idx, ids = add_to_swap(sys, self, pfns)
        if len(pfns):
            mapped = (sys.mem.flags[pfns] & PG_mapped) != 0
            sys.stats.mod_many(ids, NR_FILE_PAGES, -1)
            sys.stats.mod_many(ids, NR_SHMEM, -1)
            sys.stats.mod_many(ids[mapped], NR_FILE_MAPPED, -1)
            for mm, extent in self.mappers.items():
                mm.shmem_rss -= int(np.count_nonzero(idx < extent))
        return pfns


def register_mapping(sys: System, obj: AddressSpace) -> int:
    """A new address space (or anon mapping) gets the id its pages record (page->mapping)."""
    mid = sys._next_mapping
    sys._next_mapping += 1
    sys.mappings[mid] = obj
    return mid


def unregister_mapping(sys: System, obj: AddressSpace) -> None:
    """The address space is gone: no page records its id any more."""
    sys.mappings.pop(obj.id, None)


def file_mapping(sys: System, name: str) -> AddressSpace:
    """The page cache of the named file, made at its first use."""
    f = sys.files.get(name)
    if f is None:
        f = sys.files[name] = AddressSpace(sys, name)
    return f


def shmem_object(sys: System, name: str) -> ShmemObject:
    """The named shmem/tmpfs object (shmem_file_setup() at its first use)."""
    o = sys.shmem.get(name)
    if o is None:
        o = sys.shmem[name] = ShmemObject(sys, name)
    return o


def add_to_swap(sys: System, mapping: AddressSpace, pfns: np.ndarray):
    """add_to_swap() + mem_cgroup_swapout(): give pages swap slots while slots last.

    The swap entry records the memcg (swap_cgroup) and replaces the page in the mapping;
    the caller uncharges memory only - the memsw charge stays with the entry.
    Returns the pages that got a slot, their indices and their memcg ids.
    """
    slots = sys.swap.alloc(len(pfns))
    if sys.cgroup_dfl and len(slots) < len(pfns):
        # folio_alloc_swap() found no entry: v2 counts MEMCG_SWAP_FAIL per folio
        left = sys.mem.memcg[pfns[len(slots):]]
        for memcg_id, n in zip(*np.unique(left, return_counts=True)):
            memcontrol.mem_cgroup_swap_fail(sys, sys.memcgs[int(memcg_id)], int(n))
    pfns = pfns[:len(slots)]
    if sys.cgroup_dfl and len(pfns):
        pfns, slots = _try_charge_swap(sys, pfns, slots)
    idx = sys.mem.index[pfns].astype(np.int64)
    ids = sys.mem.memcg[pfns]
    swap_ids = ids.copy()
    first = ids[0] if len(ids) else 0
    one = len(ids) and ids[-1] == first and (ids == first).all()
    for memcg_id in [int(first)] if one else np.unique(ids).tolist():  # one group: no sort
        memcg = sys.memcgs[memcg_id]
        if memcg.online or sys.stats.a[memcg_id, MEMCG_SWAP]:
            continue
        # memcg1_swapout(): mem_cgroup_id_get_online() - an offline group whose id no
        # swap entry holds any more gives the entry, and the memsw charge, to the
        # nearest online ancestor.
        owner = next(m for m in memcg.ancestors() if m.online)
        n = int(np.count_nonzero(ids == memcg_id))
        swap_ids[ids == memcg_id] = owner.id
        if not owner.is_root():
            owner.memsw.charge(n)
        memcg.memsw.uncharge(n)
    sys.swap.swap_cgroup[slots] = swap_ids
    mapping.slots[idx] = swp_entry(slots)
    sys.stats.mod_many(swap_ids, MEMCG_SWAP, 1)
    return pfns, idx, ids


def _swap_owner(sys: System, memcg):
    """mem_cgroup_id_get_online(): the group whose id a new swap entry records - memcg, or
    for an offline group whose id no entry holds any more, its nearest online ancestor."""
    if memcg.online or sys.stats.a[memcg.id, MEMCG_SWAP]:
        return memcg
    return next(m for m in memcg.ancestors() if m.online)


def _try_charge_swap(sys: System, pfns: np.ndarray, slots: np.ndarray):
    """mem_cgroup_try_charge_swap() (v2) for pages that got a swap slot: each group charges
    its swap counter; pages beyond swap.max give their slot back and stay in memory."""
    ids = sys.mem.memcg[pfns]
    keep = np.ones(len(pfns), bool)
    for memcg_id in np.unique(ids).tolist():
        sel = np.flatnonzero(ids == memcg_id)
        owner = _swap_owner(sys, sys.memcgs[memcg_id])
        ok = memcontrol.mem_cgroup_try_charge_swap(sys, owner, len(sel))
        keep[sel[ok:]] = False
    if not keep.all():
        sys.swap.free(slots[~keep])  # put_swap_folio()
    return pfns[keep], slots[keep]


def filemap_read(sys: System, task: Task, mapping: AddressSpace, nbytes: int) -> None:
    """filemap_read(): bring the first nbytes into the cache and mark every page accessed.

    Batches run one by one: a charge may reclaim between them.  The fast paths
    (fastpath/read.py) take many at once where nothing can happen between them.
    """
    nr = nr_pages_of(nbytes)
    mapping.ensure(nr)
    mapping.i_size = max(mapping.i_size, nr)
    if large_folios(sys, mapping):
        filemap_read_folios(sys, task, mapping, nr)
        return
    fast = None
    if fastpath.ENABLED:
        from .fastpath import read  # the fast path builds on this module: a cycle
        fast = read.FastRead(sys, task, mapping, nr)
    start = 0
    try:
        while start < nr:
            # If the fast path can take a run of batches from here at once, let it.
            taken = fast.take(start) if fast is not None else 0
            if taken:
                start += taken
                continue
            _filemap_read_batch(sys, task, mapping, start, min(nr, start + FILEMAP_BATCH))
            start += FILEMAP_BATCH
    finally:
        if fast is not None:
            fast.close()


def _filemap_read_batch(sys: System, task: Task, mapping: AddressSpace, start: int,
                        end: int) -> None:
    """One batch of filemap_read(): charge and insert the missing pages, mark all accessed."""
    idx = np.arange(start, end, dtype=np.int64)
    slots = mapping.slots[idx]
    missing = idx[slots < 0]
    if len(missing):
        refaults = int(np.count_nonzero(mapping.slots[missing] == SHADOW))
        pfns, ret = page_alloc.alloc_and_charge(sys, task, task.memcg, len(missing),
                                                user_fault=False)
        if len(pfns):
            got = missing[:len(pfns)]
            mapping.slots[got] = pfns
            swap.folio_add_lru(sys, task, task.memcg, mapping, got, pfns, 0, LRU_INACTIVE_FILE,
                               (NR_FILE_PAGES,))
            if refaults:
                sys.stats.mod(task.memcg.id, WORKINGSET_REFAULT_FILE,
                              min(refaults, len(pfns)))
        if ret:
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
    swap.folio_mark_accessed(sys, mapping.slots[idx])


EEXIST = -errno.EEXIST


def large_folios(sys: System, mapping: AddressSpace) -> bool:
    """mapping_large_folio_support(): ext4 regular files since 6.16 (ext4_set_inode_mapping_order);
    never under the 3.8 rules, which predate folios."""
    return sys.semantics != "3.8" and mapping.kind == "file"


def filemap_read_folios(sys: System, task: Task, mapping: AddressSpace, nr: int) -> None:
    """filemap_read() of a file with large folios: nr pages from the start, in read() calls
    of READ_CHUNK pages, through one open file's readahead state.

    Per call, filemap_get_pages() looks up the folios from the position: a miss starts
    synchronous readahead there (page_cache_sync_ra, asking for the rest of the call);
    reaching a folio marked PG_readahead starts the next window (page_cache_async_ra);
    the folios found are marked accessed, each once per read_file (filemap_read: "only
    mark it as accessed the first time").  The loop jumps from one such event to the
    next; in between every page is cached and only marked.
    """
    ra = readahead.file_ra_state_init(sys)
    chunk = readahead.READ_CHUNK
    fast = None
    if fastpath.ENABLED:
        from .fastpath import folio  # the fast path builds on this module: a cycle
        fast = folio.FolioStream(sys, task, mapping, ra)
    try:
        _filemap_read_folios(sys, task, mapping, nr, ra, chunk, fast)
    finally:
        if fast is not None:
            fast.close()


def _filemap_read_folios(sys: System, task: Task, mapping: AddressSpace, nr: int, ra,
                         chunk: int, fast) -> None:
    pos = 0
    while pos < nr:
        q = _next_event(mapping, pos, nr)
        if q > pos:
            _mark_folios_accessed(sys, mapping, pos, q, nr)
            pos = q
            if pos >= nr:
                break
        if fast is not None:
            # The step watched since the last marked folio ends here; from a marked
            # folio the fast path may skip whole windows of the steady state.
            fast.end()
            if mapping.slots[pos] >= 0:
                new = fast.begin_window(pos, nr)
                if new != pos:
                    pos = new
                    continue
            else:
                fast.snaps.clear()
        call = pos // chunk * chunk  # the read() call that reaches index pos
        end = min(nr, call + chunk)
        ra.prev_pos = call if call else -1  # ra->prev_pos: where the last call ended
        if mapping.slots[pos] < 0:
            err = readahead.page_cache_sync_ra(sys, task, mapping, ra, pos, end - pos)
            if not err and mapping.slots[pos] < 0:
                # filemap_create_folio(): readahead left the index out; one small folio
                err = ra_alloc_run(sys, task, mapping, pos, 1, -1)
            if err and err != EEXIST:
                raise OSError(errno.ENOMEM, "Cannot allocate memory")
        else:
            nrp = 1 << int(sys.mem.order[mapping.slots[pos]])
            err = readahead.page_cache_async_ra(sys, task, mapping, ra, pos, nrp, end - pos)
            if err and err != EEXIST:
                raise OSError(errno.ENOMEM, "Cannot allocate memory")


def _next_event(mapping: AddressSpace, pos: int, nr: int) -> int:
    """The first index from pos that is a hole or the head of a PG_readahead folio (nr if
    none before it)."""
    mark = min((m for m in mapping.ra_marks if m >= pos), default=nr)
    stop = min(mark, nr)
    step = 4096
    i = pos
    while i < stop:
        j = min(stop, i + step)
        holes = np.flatnonzero(mapping.slots[i:j] < 0)
        if len(holes):
            return i + int(holes[0])
        i = j
        step *= 4
    return stop


def _mark_folios_accessed(sys: System, mapping: AddressSpace, start: int, end: int,
                          nr: int) -> None:
    """folio_mark_accessed() of the folios of [start, end), all cached; a folio that
    goes past the read's last page (end == nr) is marked whole."""
    if end >= nr:
        last = int(mapping.slots[nr - 1])
        size = 1 << int(sys.mem.order[last])
        end = (nr - 1) // size * size + size
    swap.folio_mark_accessed(sys, mapping.slots[start:end])


def ra_alloc_folio(sys: System, task: Task, mapping: AddressSpace, index: int, mark: int,
                   order: int) -> int:
    """ra_alloc_folio() + filemap_add_folio() for a folio of 2**order pages at index.

    The charge comes first (mem_cgroup_charge), then the insertion into the cache; an
    index of the range already cached makes the insertion fail with -EEXIST and the
    folio is uncharged again (mm/filemap.c: __filemap_add_folio, xas_for_each_conflict),
    so the attempt still counts once in pgpgin and pgpgout.  A workingset shadow in the
    range makes the folio a refault of all its pages (workingset_refault: nr_pages).
    Returns 0, EEXIST or the charge's result.
    """
    if not order:
        return ra_alloc_run(sys, task, mapping, index, 1, mark)
    nr = 1 << order
    memcg = task.memcg
    pfns, ret = page_alloc.alloc_and_charge_folio(sys, task, memcg, order)
    if ret:
        return ret
    idx = np.arange(index, index + nr, dtype=np.int64)
    slots = mapping.slots[idx]
    if (slots >= 0).any():
        sys.mem.large = True
        sys.mem.order[pfns] = order
        memcontrol.commit_charge(sys, memcg, pfns, task.cpu, order)
        swap.release_pages(sys, pfns)
        return EEXIST
    refault = bool((slots == SHADOW).any())
    mapping.slots[idx] = pfns
    swap.folio_add_lru(sys, task, memcg, mapping, idx, pfns, 0, LRU_INACTIVE_FILE,
                       (NR_FILE_PAGES,), order=order)
    if refault:
        sys.stats.mod(memcg.id, WORKINGSET_REFAULT_FILE, nr)
    if index == mark // nr * nr:
        mapping.ra_marks.add(index)  # folio_set_readahead()
    return 0


def ra_alloc_run(sys: System, task: Task, mapping: AddressSpace, index: int, n: int,
                 mark: int) -> int:
    """n single-page folios at index.. (all missing), each charged and committed on its
    own, added to the LRU together (as the per-CPU lru_add batch would); the one at
    mark gets PG_readahead.  Returns 0 or the result of the charge that failed."""
    memcg = task.memcg
    idx = np.arange(index, index + n, dtype=np.int64)
    refaults = int(np.count_nonzero(mapping.slots[idx] == SHADOW))
    pfns, ret = page_alloc.alloc_and_charge(sys, task, memcg, n, user_fault=False)
    if len(pfns):
        got = idx[:len(pfns)]
        mapping.slots[got] = pfns
        swap.folio_add_lru(sys, task, memcg, mapping, got, pfns, 0, LRU_INACTIVE_FILE,
                           (NR_FILE_PAGES,), events_batch=1)
        if refaults:
            sys.stats.mod(memcg.id, WORKINGSET_REFAULT_FILE, min(refaults, len(pfns)))
        if index <= mark < index + len(pfns):
            mapping.ra_marks.add(mark)
    return ret


def filemap_write(sys: System, task: Task, mapping: AddressSpace, nbytes: int) -> None:
    """generic_perform_write(): write the first nbytes; new pages are added dirty."""
    nr = nr_pages_of(nbytes)
    mapping.ensure(nr)
    fast = None
    if fastpath.ENABLED:
        from .fastpath import writespan as fast  # the fast path builds on this module: a cycle
    start = 0
    while start < nr:
        # If the fast path can take a span of batches from here at once, let it.
        taken = fast.take_span(sys, task, mapping, start, nr) if fast is not None else 0
        if taken:
            start += taken
            continue
        idx = np.arange(start, min(nr, start + FILEMAP_BATCH), dtype=np.int64)
        slots = mapping.slots[idx]
        present = slots[slots >= 0]
        if len(present):
            page_writeback.folio_mark_dirty(sys, present)
        missing = idx[slots < 0]
        if len(missing):
            pfns, ret = page_alloc.alloc_and_charge(sys, task, task.memcg, len(missing),
                                                    user_fault=False)
            write_new_pages(sys, task, mapping, missing, pfns, ret)
        mapping.dirtied_when = sys.clock.now if mapping.dirtied_when is None else mapping.dirtied_when
        start += FILEMAP_BATCH


def write_new_pages(sys: System, task: Task, mapping: AddressSpace, missing: np.ndarray,
                    pfns: np.ndarray, ret: int) -> None:
    """The pages a write's batch allocated and charged for the indices `missing` (the
    first len(pfns) of them): into the page cache with their buffers, on the LRU dirty;
    then OSError(ENOMEM) if the charge failed (ret)."""
    from ..fs import buffer  # late: fs builds on the page cache
    if len(pfns):
        got = missing[:len(pfns)]
        mapping.slots[got] = pfns
        if mapping.kind == "file":  # ext4: __block_write_begin attaches buffers
            # The new folios stay locked from write_begin to write_end, so the reclaim
            # the buffer heads' charge may run cannot take them (mm/vmscan.c:
            # shrink_folio_list - folio_trylock fails, keep): they go on the LRU once
            # their buffers are attached, or that reclaim would free them and their
            # buffers would be charged for no page.
            buffer.folio_alloc_buffers(sys, task, task.memcg, len(pfns))
            mapping.buffers[got] = True
        swap.folio_add_lru(sys, task, task.memcg, mapping, got, pfns, PG_dirty,
                           LRU_INACTIVE_FILE, (NR_FILE_PAGES, NR_FILE_DIRTY))
    if ret:
        raise OSError(errno.ENOMEM, "Cannot allocate memory")


def truncate_inode_pages(sys: System, mapping: AddressSpace) -> None:
    """truncate_inode_pages() at unlink: drop every cached page and swap entry."""
    s = mapping.slots
    pfns = s[s >= 0]
    if len(pfns):
        mapping.release_buffers(sys, np.flatnonzero(s >= 0), pfns)
        ids = sys.mem.memcg[pfns]
        flags = sys.mem.flags[pfns]
        sys.stats.mod_many(ids, NR_FILE_PAGES, -1)
        sys.stats.mod_many(ids[(flags & PG_dirty) != 0], NR_FILE_DIRTY, -1)
        if mapping.kind == "shmem":
            sys.stats.mod_many(ids, NR_SHMEM, -1)
            sys.stats.mod_many(ids[(flags & PG_mapped) != 0], NR_FILE_MAPPED, -1)
        swap.lruvec_del_folio(sys, pfns)
        swap.release_pages(sys, pfns)
    swapped = s[s <= SHADOW] if mapping.kind == "shmem" else s[:0]
    if len(swapped):
        swapfile.swap_free(sys, swp_offset(swapped))
    if mapping.kind == "shmem":
        shmem_xa_free(sys, mapping)
    mapping.slots = np.full(0, HOLE, np.int64)
    mapping.ra_marks.clear()
    mapping.i_size = 0


def shmem_fault(sys: System, task: Task, obj: ShmemObject, nbytes: int) -> int:
    """Map the first nbytes of a shmem object into task and write them (shmem_fault()).

    New pages are charged to the faulting task's memcg; a page found in swap is charged
    to the memcg recorded for its swap entry if that one is still online.  Returns 0 or
    the charge result that stopped the faults (the caller sleeps or fails the task).
    """
    nr = nr_pages_of(nbytes)
    obj.ensure(nr)
    mm = task.mm
    already = obj.mappers.get(mm, 0)
    fast = None
    if fastpath.ENABLED:
        from .fastpath import shmem as fast  # the fast path builds on this module: a cycle
    start = 0
    while start < nr:
        # If the fast path can take a run of steps from here at once, let it.
        taken = fast.take_span(sys, task, obj, start, nr) if fast is not None else 0
        if taken:
            start += taken
            continue
        idx = np.arange(start, min(nr, start + FILEMAP_BATCH), dtype=np.int64)
        slots = obj.slots[idx]
        swapped = idx[slots <= SHADOW]
        if len(swapped):
            ret = _shmem_swapin(sys, task, obj, swapped)
            if ret:
                return ret
        missing = idx[obj.slots[idx] == HOLE]
        if len(missing):
            pfns, ret = page_alloc.alloc_and_charge(sys, task, task.memcg, len(missing),
                                                    user_fault=True)
            if len(pfns):
                got = missing[:len(pfns)]
                obj.slots[got] = pfns
                swap.folio_add_lru(sys, task, task.memcg, obj, got, pfns,
                                   PG_swapbacked | PG_mapped | PG_young, LRU_INACTIVE_ANON,
                                   (NR_FILE_PAGES, NR_SHMEM, NR_FILE_MAPPED, PGFAULT))
                ret = ret or shmem_xa_grow(sys, task, obj, int(got[-1]) + 1)
            if ret:
                _shmem_map(sys, obj, mm, max(already, int(missing[0])))
                return ret
        present = obj.slots[idx]
        present = present[present >= 0]
        # Writing through the mapping sets the accessed bit; pages newly mapped count in
        # mapped_file once (page_add_file_rmap on the first mapping).
        newly = present[(sys.mem.flags[present] & PG_mapped) == 0]
        sys.mem.flags[present] |= PG_young
        if len(newly):
            sys.mem.flags[newly] |= PG_mapped
            sys.stats.mod_many(sys.mem.memcg[newly], NR_FILE_MAPPED, 1)
        # finish_fault() maps each page as it is faulted: MM_SHMEMPAGES grows fault by
        # fault, so an OOM kill later in this same call sees the pages already mapped
        # (oom_badness() counts them) - not a task with no rss.
        _shmem_map(sys, obj, mm, max(already, int(idx[-1]) + 1))
        start += FILEMAP_BATCH
    return 0


def xa_nr_nodes(nr: int) -> int:
    """The nodes of an xarray with entries at indices [0, nr): none while index 0 alone
    is used (the entry sits in xa_head), else per level one node for each chunk of 64
    slots the range reaches, up to the single top node (lib/xarray.c: xas_expand grows
    the tree until it holds the largest index, xas_create makes the missing nodes on
    the way down)."""
    nodes, span = 0, 1
    while span < nr:
        span <<= XA_CHUNK_SHIFT
        nodes += -(-nr // span)
    return nodes


def shmem_xa_grow(sys: System, task: Task, obj: ShmemObject, extent: int) -> int:
    """The i_pages nodes that storing entries up to index extent - 1 allocates; 0 or the
    failed charge.

    The page cache's xarray is made with XA_FLAGS_ACCOUNT (fs/inode.c:
    __address_space_init_once), so lib/xarray.c xas_alloc / xas_nomem add __GFP_ACCOUNT
    and each radix_tree_node is charged to the current task's group - the task that
    faults the page in (mm/shmem.c: shmem_add_to_page_cache -> xas_store, xas_nomem).
    The nodes stay while the object's entries do (a swapped-out page leaves a swap entry
    in its slot) and go with them at truncation.  Under the 3.8 rules (before 4.6
    radix_tree_node was not __GFP_ACCOUNT) none is charged.  The kernel allocates a
    folio's node after charging the folio, and a failed node charge fails that folio's
    fault; here a batch's nodes follow its pages, and a failed charge stops the faults.
    """
    if sys.semantics == "3.8" or extent <= obj.xa_extent:
        return 0
    need = xa_nr_nodes(extent) - xa_nr_nodes(obj.xa_extent)
    obj.xa_extent = extent
    if need <= 0:
        return 0
    prev, sys.current = sys.current, task  # current: the task the OOM killer sees charging
    try:
        node = slab.kmem_cache_alloc(sys, "radix_tree_node", task, need, user_fault=True)
    finally:
        sys.current = prev
    if slab.charge_failed(node):
        return node
    obj.xa_nodes.append(node)
    return 0


def shmem_xa_free(sys: System, obj: ShmemObject) -> None:
    """truncate_inode_pages() of a shmem object: with its last entry every node of
    i_pages is freed (lib/xarray.c: xas_delete_node), uncharged from the group that
    allocated it."""
    for node in obj.xa_nodes:
        slab.kmem_cache_free(sys, node)
    obj.xa_nodes = []
    obj.xa_extent = 0


def _shmem_map(sys: System, obj: ShmemObject, mm, extent: int) -> None:
    old = obj.mappers.get(mm, 0)
    if extent > old:
        s = obj.slots[old:extent]
        mm.shmem_rss += int(np.count_nonzero(s >= 0))
        obj.mappers[mm] = extent


def shmem_unmap(sys: System, obj: ShmemObject, mm) -> None:
    """Unmap obj from mm (munmap / exit): pages no task maps leave mapped_file."""
    extent = obj.mappers.pop(mm, 0)
    mm.shmem_rss -= int(np.count_nonzero(obj.slots[:extent] >= 0))
    still = obj.mapped_extent()
    if extent > still:
        s = obj.slots[still:extent]
        pfns = s[s >= 0]
        pfns = pfns[(sys.mem.flags[pfns] & PG_mapped) != 0]
        if len(pfns):
            sys.mem.flags[pfns] &= np.uint8(~(PG_mapped | PG_young) & 0xFF)
            sys.stats.mod_many(sys.mem.memcg[pfns], NR_FILE_MAPPED, -1)
    if obj.unlinked and not obj.mappers:
        # mm/shmem.c: shmem_evict_inode() - the last reference to a deleted object
        truncate_inode_pages(sys, obj)
        unregister_mapping(sys, obj)


def _shmem_swapin(sys: System, task: Task, obj: ShmemObject, idx: np.ndarray) -> int:
    """shmem_swapin_folio(): charge the recorded memcg if online, else the faulting task's."""
    for i in idx.tolist():
        slot = int(swp_offset(obj.slots[i:i + 1])[0])
        rec = sys.memcgs.get(int(sys.swap.swap_cgroup[slot]))
        memcg = rec if rec is not None and rec.online else task.memcg
        pfns, ret = page_alloc.alloc_and_charge(sys, task, memcg, 1, user_fault=True)
        if not len(pfns):
            return ret
        swapfile.swap_free(sys, np.array([slot]))
        obj.slots[i] = pfns[0]
        # finish_fault(): mapped again in every mm that maps this offset (the faulting
        # mm's new range is counted when the range is mapped, in _shmem_map)
        for mm, extent in obj.mappers.items():
            if i < extent:
                mm.shmem_rss += 1
        swap.folio_add_lru(sys, task, memcg, obj, np.array([i]), pfns,
                           PG_swapbacked | PG_mapped | PG_young, LRU_INACTIVE_ANON,
                           (NR_FILE_PAGES, NR_SHMEM, NR_FILE_MAPPED, PGFAULT))
    return 0
