"""Anonymous memory: mappings, faults, unmapping and swap-out (mm/memory.c, mm/rmap.c).

Each touch_anon() is one private anonymous mapping (a VMA).  Its pages are faulted in
one by one in the kernel - each fault charges one page to the memcg of the mm's owner
(4 KiB pages: THP is "madvise" on the reference machine) - which the model does in
steps of FAULT_BATCH pages with the same outcome (the fast path, fastpath/fault.py, sets
up many steps at once where nothing can happen between them).  New anon pages go to the
inactive anon list (5.9+), or to the unevictable list when the mapping is mlocked.

Page tables and the mapping's own objects are kernel memory of the faulting task's group
(6.18 rules; under the 3.8 rules neither is charged: 3.8 had __GFP_KMEMCG on kernel stacks,
not on page tables, and the model leaves its slab charging of these objects out).  A PTE page maps
one 2 MiB region; it is allocated at the first fault in its region (mm/memory.c:
__pte_alloc with GFP_PGTABLE_USER, include/linux/gfp.h: GFP_PGTABLE_KERNEL | __GFP_ACCOUNT)
and freed when the region is unmapped (free_pgtables).  Placement, with no address-space
layout modelled:
- a mapping whose length is a multiple of 2 MiB is 2 MiB-aligned (mm/mmap.c:
  __get_unmapped_area -> thp_get_unmapped_area_vmflags): it needs len / 2 MiB PTE pages
  of its own, and a vm_area_struct (at mmap), an anon_vma and an anon_vma_chain (at the
  first fault: anon_vma_prepare), all from accounted caches;
- any other mapping goes right below the process's previous one (top-down mmap), with
  which it merges (vma_merge: no new vm_area_struct, the neighbour's anon_vma) and whose
  2 MiB region its lowest pages share: only its whole 2 MiB regions above that get new
  PTE pages.  On the real kernel a warm worker's 1-, 64- and 65-page mappings charged no
  objects and 0 or 1 PTE page (tests/data/kernel_v1_behaviour.json "b").
PMD pages (one per 1 GiB) are not charged.

Fork (kernel/fork.c: dup_mmap) gives the child a copy of every mapping that shares the
parent's pages copy-on-write: copy_page_range() allocates the child's PTE pages (kmem of
the forking task's group) and write-protects the pages' entries on both sides
(copy_present_pte).  The pages stay charged to the group that faulted them in.  A write
to a write-protected entry is a fault (do_wp_page): a page mapped by one mapping only is
written in place (wp_page_reuse), charging nothing; a page still mapped by another gets
a copy of its own, charged to the writer's group (wp_page_copy -> mem_cgroup_charge on
the faulting mm).  Unmapping a shared page frees it only with its last mapping, and it
stays charged where it was until then (no recharge, v1 or v2).  Every mapper's rss
counts it (get_mm_rss).  A mapping's copies share one anon_vma tree (mm/rmap.c), which
is how the model finds a page's mappers: a shared page sits at the same index in each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import fastpath, filemap, memcontrol, page_alloc, slab, swap, swapfile
from .filemap import HOLE, AddressSpace, add_to_swap, nr_pages_of
from .memcontrol import (CHARGE_KILLED, CHARGE_NOMEM, NR_ANON_MAPPED, NR_LRU_BASE, PGFAULT,
                         KmemPages)
from .mmzone import (LRU_INACTIVE_ANON, LRU_UNEVICTABLE, PG_anon, PG_mapped, PG_mlocked,
                     PG_swapbacked, PG_young)
from .swapfile import swp_offset

if TYPE_CHECKING:
    from ..system import System
    from ..tasks import Task

# Faults handled per step: a threshold check, a reclaim or an OOM kill can happen between
# steps, as between the kernel's single-page faults.
FAULT_BATCH = 128
# arch/x86: PTRS_PER_PTE, PTRS_PER_PMD - one page-table page maps 512 entries
PTRS_PER_PTE = 512


class AnonVma(AddressSpace):
    """A private anonymous mapping of one mm (vma + anon_vma for the rmap)."""

    kind = "anon"

    def __init__(self, sys: System, mm, nr_pages: int, locked: bool):
        super().__init__(sys, "[anon]")
        self.mm = mm
        self.nr_pages = nr_pages
        self.locked = locked
        self.nr_faulted = 0
        # kernel memory of the mapping: its PTE pages by 2 MiB region (KmemPages), the
        # vm_area_struct (None until mmap ran) and [anon_vma_chain, anon_vma] (None until
        # the first fault)
        self.ptes: list = []
        self.vm_area = None
        self.anon_vma: list | None = None
        # since a fork: the mappings of this one's anon_vma tree (this one, its parent's
        # and its children's copies: rmap_walk_anon), and which entries are
        # write-protected (copy_present_pte); None for a mapping never forked
        self.anon_vma_tree: list[AnonVma] | None = None
        self.wrprotect: np.ndarray | None = None
        # where page 0 sits in its 2 MiB region: 0 for a 2 MiB-aligned mapping; else the
        # mapping ends on a region boundary and its first region is the neighbour's
        self.thp_aligned = nr_pages % PTRS_PER_PTE == 0
        self.pgoff = -nr_pages % PTRS_PER_PTE
        self.ensure(nr_pages)

    def ensure(self, nr: int) -> None:
        """The page table of the mapping, 4 bytes an entry: a PFN (MemMap keeps them below
        2**31), HOLE or a swap entry."""
        if nr > len(self.slots):
            grown = np.full(max(nr, 2 * len(self.slots)), HOLE, np.int32)
            grown[:len(self.slots)] = self.slots
            self.slots = grown

    def evict(self, sys: System, pfns: np.ndarray, batches: list[int] | None = None) -> np.ndarray:
        """pageout() + try_to_unmap(): move pages to swap while slots last.  A page
        shared with other mappings of the anon_vma tree leaves the same swap entry in
        each (try_to_unmap_one per mapper, swap_duplicate).  batches: the pages are
        several reclaim batches' in a row (release_pages)."""
        pfns, idx, ids = add_to_swap(sys, self, pfns)
        if len(pfns):
            sys.stats.mod_many(ids, NR_ANON_MAPPED, -1)
            self.mm.anon_rss -= len(pfns)
            self.mm.swapents += len(pfns)
            if self.anon_vma_tree is not None:
                entries = self.slots[idx]
                for v in self.anon_vma_tree:
                    hit = maps_at(v, idx, pfns) if v is not self else None
                    if hit is None or not hit.any():
                        continue
                    v.slots[idx[hit]] = entries[hit]
                    n = int(np.count_nonzero(hit))
                    v.mm.anon_rss -= n
                    v.mm.swapents += n
                    swapfile.swap_duplicate(sys, swp_offset(entries[hit]))
            swap.release_pages(sys, pfns, memsw=False, batches=batches)
        return pfns


def do_anonymous_faults(sys: System, task: Task, vma: AnonVma) -> int:
    """Fault in the rest of vma (do_anonymous_page() per page); 0 or the failed charge.

    Each step first charges the PTE pages of the 2 MiB regions it reaches into
    (pte_alloc), and the first step the mapping's anon_vma (anon_vma_prepare), then its
    pages.  Run again after a failed charge, it goes on where it stopped.
    """
    from .fastpath import fault, swapspan  # the fast paths build on this module: a cycle

    if not vma.nr_pages:
        return 0  # unmapped before the task got to it
    ret = vm_area_alloc(sys, task, vma)
    if ret:
        return ret
    memcg = task.memcg
    flags = PG_anon | PG_swapbacked | PG_mapped | PG_young
    lru = LRU_INACTIVE_ANON
    if vma.locked:
        flags |= PG_mlocked
        lru = LRU_UNEVICTABLE
    # mlock() populates the range in one system call (mm_populate): no return to user
    # space between its pages, unlike faults (the task clears it when the call returns)
    task.mm_populate = vma.locked
    while vma.nr_faulted < vma.nr_pages:
        # If a fast path can take a span of steps from here at once - with room, or
        # each step reclaiming into swap at the limit - let it.
        if fastpath.ENABLED and (fault.take_span(sys, task, memcg, vma, flags, lru) or
                                 swapspan.take_swap_span(sys, task, memcg, vma, flags, lru)):
            continue
        n = min(FAULT_BATCH, vma.nr_pages - vma.nr_faulted)
        ret = pte_alloc(sys, task, vma, n) or anon_vma_prepare(sys, task, vma)
        if ret:
            return ret
        pfns, ret = page_alloc.alloc_and_charge(sys, task, memcg, n, user_fault=True)
        if len(pfns):
            idx = np.arange(vma.nr_faulted, vma.nr_faulted + len(pfns), dtype=np.int64)
            vma.slots[idx] = pfns
            vma.nr_faulted += len(pfns)
            task.mm.anon_rss += len(pfns)
            swap.folio_add_lru(sys, task, memcg, vma, idx, pfns, flags, lru,
                               (NR_ANON_MAPPED, PGFAULT))
        if ret:
            return ret
    return 0


def zap_anon(sys: System, vma: AnonVma, start: int, cpu: int | None = None) -> None:
    """zap_pte_range() over [start, end of vma): free pages and swap entries.

    Then free_pgtables(): the PTE pages of the 2 MiB regions left with nothing mapped go
    back (their charge to the stock of `cpu`, the unmapping task's); start 0 unmaps the
    whole mapping, whose anon_vma and vm_area_struct go too (unlink_anon_vmas,
    remove_vma -> vm_area_free).
    """
    cpu = sys.cpu if cpu is None else cpu
    s = vma.slots[start:vma.nr_faulted]
    pfns = s[s >= 0]
    swapped = s[s <= -2]
    if len(pfns) and vma.anon_vma_tree is not None:
        # folio_remove_rmap_ptes(): a page another mapping still maps stays, charged
        # where it is; only a page's last unmap frees it
        pos = np.flatnonzero(s >= 0) + start
        shared = folio_mapcount(vma, pos, pfns) > 1
        if shared.any():
            rmap_move_mapping(sys, vma, pos[shared], pfns[shared])
            if vma.locked:
                munlock_folios(sys, pfns[shared])
            vma.mm.anon_rss -= int(np.count_nonzero(shared))
            pfns = pfns[~shared]
    if len(pfns):
        sys.stats.mod_many(sys.mem.memcg[pfns], NR_ANON_MAPPED, -1)
        swap.lruvec_del_folio(sys, pfns)
        swap.release_pages(sys, pfns)
        vma.mm.anon_rss -= len(pfns)
    if len(swapped):
        swapfile.swap_free(sys, swp_offset(swapped))
        vma.mm.swapents -= len(swapped)
    vma.slots[start:] = HOLE
    vma.nr_faulted = min(vma.nr_faulted, start)
    vma.nr_pages = start
    if not start:
        if vma.anon_vma_tree is not None:
            vma.anon_vma_tree.remove(vma)
        unlink_anon_vmas(sys, vma, cpu)
    free_pte_range(sys, vma, own_ptes(vma, start), cpu)
    if not start:
        vm_area_free(sys, vma, cpu)


def munmap_anon(sys: System, mm, nbytes: int, oldest_first: bool = False,
                cpu: int | None = None) -> None:
    """Unmap nbytes of mm's anonymous memory, newest mapping first (or oldest first);
    a mapping only partly unmapped loses its tail.  cpu: the unmapping task's."""
    left = nr_pages_of(nbytes)
    while left and mm.vmas:
        vma = mm.vmas[0] if oldest_first else mm.vmas[-1]
        cut = min(left, vma.nr_pages)
        zap_anon(sys, vma, vma.nr_pages - cut, cpu)
        left -= cut
        if vma.nr_pages == 0:
            mm.vmas.remove(vma)
            filemap.unregister_mapping(sys, vma)


def exit_mmap(sys: System, mm, cpu: int) -> None:
    """exit_mmap(): unmap every anonymous mapping of mm, newest first."""
    while mm.vmas:
        vma = mm.vmas[-1]
        zap_anon(sys, vma, 0, cpu)
        mm.vmas.pop()
        filemap.unregister_mapping(sys, vma)


# --- fork and copy-on-write -------------------------------------------------------------

def maps_at(v: AnonVma, pos: np.ndarray, pfns: np.ndarray) -> np.ndarray:
    """Whether mapping v maps pfns at indices pos.  The copies of a tree can differ in
    length (one forked after the mapping lost its tail: vm_area_dup of the shorter
    vma): an index past a copy's end is not mapped by it."""
    inside = pos < len(v.slots)
    hit = np.zeros(len(pos), bool)
    hit[inside] = v.slots[pos[inside]] == pfns[inside]
    return hit


def folio_mapcount(vma: AnonVma, pos: np.ndarray, pfns: np.ndarray) -> np.ndarray:
    """folio_mapcount() of the pages pfns at indices pos of vma: how many mappings of its
    anon_vma tree map each (a shared page sits at the same index in every copy)."""
    count = np.zeros(len(pfns), np.int32)
    for v in vma.anon_vma_tree or (vma,):
        count += maps_at(v, pos, pfns)
    return count


def rmap_move_mapping(sys: System, vma: AnonVma, pos: np.ndarray, pfns: np.ndarray) -> None:
    """vma stops mapping the shared pages pfns (at indices pos): those that record it as
    their address space record another mapping of the tree that maps them (the kernel's
    folio->mapping is the anon_vma they all share; the model's is one mapping of it)."""
    need = sys.mem.mapping[pfns] == vma.id
    for v in vma.anon_vma_tree:
        if not need.any():
            return
        if v is vma:
            continue
        hit = need & maps_at(v, pos, pfns)
        sys.mem.mapping[pfns[hit]] = v.id
        need &= ~hit


def munlock_folios(sys: System, pfns: np.ndarray) -> None:
    """mm/mlock.c: munlock_folio() as a VM_LOCKED mapping unmaps pages others still map
    (their copies are never VM_LOCKED: fork does not inherit mlock): PG_mlocked is
    cleared and each goes from the unevictable list to its group's inactive anon list."""
    mem = sys.mem
    pfns = pfns[(mem.flags[pfns] & PG_mlocked) != 0]
    if not len(pfns):
        return
    swap.lruvec_del_folio(sys, pfns)
    mem.flags[pfns] &= np.uint8(~PG_mlocked & 0xFF)
    for memcg_id in np.unique(mem.memcg[pfns]).tolist():
        part = pfns[mem.memcg[pfns] == memcg_id]
        memcg = sys.memcgs[memcg_id]
        memcg.lruvec.lists[LRU_INACTIVE_ANON].add(mem, part)
        sys.stats.mod(memcg_id, NR_LRU_BASE + LRU_INACTIVE_ANON, len(part))


def dup_mmap(sys: System, parent: Task, mm) -> int:
    """dup_mmap(): copy each of parent's anonymous mappings into mm (the child's); 0 or
    the failed charge (the caller unmaps what was copied).  The objects and page tables
    are charged to the forking task's group (current)."""
    for vma in parent.mm.vmas:
        if not vma.nr_pages:
            continue
        # vm_area_dup(): the copy is not VM_LOCKED (mlock is not inherited)
        child = AnonVma(sys, mm, vma.nr_pages, False)
        mm.vmas.append(child)
        ret = (vm_area_dup(sys, parent, vma, child) or anon_vma_fork(sys, parent, vma, child)
               or copy_page_range(sys, parent, vma, child))
        if ret:
            return ret
    return 0


def vm_area_dup(sys: System, task: Task, src: AnonVma, dst: AnonVma) -> int:
    """vm_area_dup() (kernel/fork.c, vm_area_cachep SLAB_ACCOUNT): the child's
    vm_area_struct - where the parent's mapping has one of its own (not merged)."""
    if src.vm_area is None:
        return 0
    obj = _charged_as(sys, task, slab.kmem_cache_alloc, sys, "vm_area_struct", task)
    if slab.charge_failed(obj):
        return obj
    dst.vm_area = obj
    return 0


def anon_vma_fork(sys: System, task: Task, src: AnonVma, dst: AnonVma) -> int:
    """anon_vma_fork() (mm/rmap.c): anon_vma_clone() links the copy to every anon_vma of
    the parent's chain (an anon_vma_chain each), then the copy gets an anon_vma of its
    own and the chain to it.  Nothing where the parent's has no accounted anon_vma."""
    if not src.anon_vma:
        dst.anon_vma = None if src.anon_vma is None else []
        return 0
    got: list = []
    for name in ["anon_vma_chain"] * (len(src.anon_vma) - 1) + ["anon_vma", "anon_vma_chain"]:
        obj = _charged_as(sys, task, slab.kmem_cache_alloc, sys, name, task)
        if slab.charge_failed(obj):
            for o in got:
                slab.kmem_cache_free(sys, o, task.cpu)
            return obj
        got.append(obj)
    dst.anon_vma = got
    return 0


def copy_page_range(sys: System, task: Task, src: AnonVma, dst: AnonVma) -> int:
    """copy_page_range(): a PTE page for the child in each 2 MiB region where the parent
    has one (copy_pte_range -> pte_alloc_map_lock), then the entries: present pages are
    mapped by both (their rss counts in the child's mm too) and write-protected on both
    sides (copy_present_pte, a COW mapping); swap entries gain a reference
    (copy_nonpresent_pte -> swap_duplicate)."""
    for _ in range(len(src.ptes)):
        pages = pte_alloc_one(sys, task, user_fault=False)
        if isinstance(pages, int):
            return pages
        dst.ptes.append(pages)
    n = src.nr_faulted
    s = src.slots[:n]
    dst.slots[:n] = s
    dst.nr_faulted = n
    present = s >= 0
    swapped = s <= -2
    dst.mm.anon_rss += int(np.count_nonzero(present))
    dst.mm.swapents += int(np.count_nonzero(swapped))
    if swapped.any():
        swapfile.swap_duplicate(sys, swp_offset(s[swapped]))
    if src.wrprotect is None:
        src.wrprotect = np.zeros(len(src.slots), bool)
    src.wrprotect[:n] |= present
    dst.wrprotect = np.zeros(len(dst.slots), bool)
    dst.wrprotect[:n] = present
    if src.anon_vma_tree is None:
        src.anon_vma_tree = [src]
    dst.anon_vma_tree = src.anon_vma_tree
    dst.anon_vma_tree.append(dst)
    return 0


def do_wp_faults(sys: System, task: Task, nbytes: int) -> int:
    """A write from user space to the first nbytes of task's anonymous memory, oldest
    mapping first; 0 or the failed charge.

    Each write-protected entry it meets is a write fault (do_wp_page), page by page in
    address order, in steps of FAULT_BATCH: a page no other mapping maps is written in
    place (wp_page_reuse); a shared one is copied (wp_page_copy) - a new page charged to
    task's group as an anonymous fault's, put on its LRU, mapped here instead; the old
    page stays with its other mappers, charged where it was.  Each fault counts in
    pgfault of task's group; a written page is young.  Run again after a failed charge,
    it goes on where it stopped (the pages done are writable).  Pages not faulted in yet
    (a mapping still being populated) and swapped-out ones are left: the model swaps
    anonymous pages in nowhere.
    """
    left = nr_pages_of(nbytes)
    for vma in list(task.mm.vmas):
        if left <= 0:
            break
        cut = min(left, vma.nr_pages)
        left -= cut
        end = min(cut, vma.nr_faulted)
        s = vma.slots[:end]
        sys.mem.flags[s[s >= 0]] |= PG_young
        if vma.wrprotect is None:
            continue
        for i in range(0, end, FAULT_BATCH):
            ret = wp_fault_step(sys, task, vma, i, min(end, i + FAULT_BATCH))
            if ret:
                return ret
    return 0


def wp_fault_step(sys: System, task: Task, vma: AnonVma, i: int, j: int) -> int:
    """The write faults of vma's pages [i, j) (do_wp_faults)."""
    s = vma.slots[i:j]
    pos = np.flatnonzero(vma.wrprotect[i:j] & (s >= 0)) + i
    if not len(pos):
        return 0
    old = vma.slots[pos]
    shared = folio_mapcount(vma, pos, old) > 1
    reuse, copy = pos[~shared], pos[shared]
    ret = 0
    if len(copy):
        memcg = task.memcg
        pfns, ret = page_alloc.alloc_and_charge(sys, task, memcg, len(copy), user_fault=True)
        if len(pfns) < len(copy):
            # the fault whose charge failed stops the walk: later reuses wait too
            reuse = reuse[reuse < copy[len(pfns)]]
        done, gone = copy[:len(pfns)], old[shared][:len(pfns)]
        if len(pfns):
            done, gone, pfns = wp_recheck_pte(sys, task, vma, done, gone, pfns)
        if len(pfns):
            vma.slots[done] = pfns
            vma.wrprotect[done] = False
            rmap_move_mapping(sys, vma, done, gone)
            flags = PG_anon | PG_swapbacked | PG_mapped | PG_young
            lru = LRU_INACTIVE_ANON
            if vma.locked:
                flags |= PG_mlocked  # folio_add_lru_vma(): mlocked in a VM_LOCKED mapping
                lru = LRU_UNEVICTABLE
            swap.folio_add_lru(sys, task, memcg, vma, done.astype(np.int64), pfns, flags, lru,
                               (NR_ANON_MAPPED, PGFAULT))
            free_unmapped_folios(sys, vma, done, gone)
    if len(reuse):
        vma.wrprotect[reuse] = False
        # handle_mm_fault(): count_memcg_event_mm(vma->vm_mm, PGFAULT)
        sys.stats.mod(task.memcg.id, PGFAULT, len(reuse))
    return ret


def wp_recheck_pte(sys: System, task: Task, vma: AnonVma, done: np.ndarray,
                   gone: np.ndarray, pfns: np.ndarray):
    """wp_page_copy() after the new folio is charged: the page table lock was dropped
    for the allocation, whose reclaim may have swapped the old page out of every
    mapper (try_to_unmap).  "Re-check the pte": only an entry that still maps the old
    page (pte_same) takes the copy; for any other the fault is over, the new folio
    goes back (folio_put -> mem_cgroup_uncharge, after its charge was committed by
    mem_cgroup_charge) and the swap entry stays, with its reference.  Returns the
    indices, old pages and new pages that go on."""
    same = vma.slots[done] == gone
    if same.all():
        return done, gone, pfns
    stale = pfns[~same]
    memcontrol.commit_charge(sys, task.memcg, stale, task.cpu)
    swap.release_pages(sys, stale)
    return done[same], gone[same], pfns[same]


def free_unmapped_folios(sys: System, vma: AnonVma, pos: np.ndarray, old: np.ndarray) -> None:
    """wp_page_copy(): folio_remove_rmap_pte() on the old page, then folio_put(): a
    page no mapping of the tree maps any more (its other mappers unmapped it while the
    copy was being allocated: an OOM kill, an exit) is freed with its last reference,
    as zap_pte_range() would have freed it."""
    gone = old[folio_mapcount(vma, pos, old) == 0]
    if not len(gone):
        return
    sys.stats.mod_many(sys.mem.memcg[gone], NR_ANON_MAPPED, -1)
    swap.lruvec_del_folio(sys, gone)
    swap.release_pages(sys, gone)


def pgtables_pages(mm) -> int:
    """mm_pgtables_bytes() / PAGE_SIZE: PTE pages for the mapped ranges plus their PMDs.

    An anonymous mapping's count is the 2 MiB regions it spans, the PTE pages
    do_anonymous_faults() charges once it is faulted in (own_ptes) plus, for a mapping
    that is not 2 MiB-aligned, the one it shares with its neighbour.
    """
    ptes = sum(-(-v.nr_pages // PTRS_PER_PTE) for v in mm.vmas)
    ptes += sum(-(-o.mappers.get(mm, 0) // PTRS_PER_PTE) for o in mm.shm_objects)
    return ptes + -(-ptes // PTRS_PER_PTE)


# --- kernel memory of a mapping: page tables and objects ----------------------------------

def pgtables_accounted(sys: System, task: Task) -> bool:
    """Whether task's page-table pages are charged (GFP_PGTABLE_USER has __GFP_ACCOUNT,
    5.11+; 3.8 did not account them), to a group that accounts: not the root."""
    return sys.semantics != "3.8" and sys.kmem_key.enabled and not task.memcg.is_root()


def own_ptes(vma: AnonVma, nr_pages: int) -> int:
    """The PTE pages of vma's own covering its first nr_pages: the 2 MiB regions they
    reach into, but a region shared with the neighbour (vma.pgoff > 0)."""
    if not nr_pages:
        return 0
    regions = (vma.pgoff + nr_pages - 1) // PTRS_PER_PTE + 1
    return regions - (1 if vma.pgoff else 0)


def ptes_needed(vma: AnonVma, n: int) -> int:
    """PTE pages that faulting the next n pages of vma allocates."""
    return max(0, own_ptes(vma, vma.nr_faulted + n) - len(vma.ptes))


def _charged_as(sys: System, task: Task, fn, *args, **kwargs):
    """Run a kmem charge with task as current (the OOM killer tells the charging task by it)."""
    prev, sys.current = sys.current, task
    try:
        return fn(*args, **kwargs)
    finally:
        sys.current = prev


def pte_alloc(sys: System, task: Task, vma: AnonVma, n: int) -> int:
    """pte_alloc() -> __pte_alloc() -> pte_alloc_one(): a PTE page for each 2 MiB region
    the next n pages of vma reach into that has none yet; 0 or the failed charge.

    Each is a one-page GFP_PGTABLE_USER allocation charged to the faulting task's group
    (__memcg_kmem_charge_page -> obj_cgroup_charge_pages -> try_charge_memcg: stock,
    reclaim, OOM like any charge; then the kmem counter).  Under the 3.8 rules the pages
    exist (the OOM badness counts them) but are not charged.
    """
    for _ in range(ptes_needed(vma, n)):
        pages = pte_alloc_one(sys, task, user_fault=True)
        if isinstance(pages, int):
            return pages
        vma.ptes.append(pages)
    return 0


def pte_alloc_one(sys: System, task: Task, user_fault: bool):
    """pte_alloc_one(): one page-table page, charged to task's group (uncharged under
    the 3.8 rules); the KmemPages or the failed charge's result."""
    if sys.semantics == "3.8":
        pfns = page_alloc.alloc_kernel_pages(sys, 1, task, "PageTables")
        if pfns is None:
            return CHARGE_KILLED if task.oom_victim else CHARGE_NOMEM
        return KmemPages(None, 1, pfns, "PageTables")
    return page_alloc.alloc_kmem_pages(sys, task, 1, "PageTables", user_fault=user_fault)


def free_pte_range(sys: System, vma: AnonVma, keep: int, cpu: int) -> None:
    """free_pgtables() -> free_pgd_range(): PTE pages past the first `keep` go back, in
    address order (pte_free_tlb -> __memcg_kmem_uncharge_page)."""
    for pages in vma.ptes[keep:]:
        page_alloc.free_kmem_pages(sys, pages, cpu)
    del vma.ptes[keep:]


def vm_area_alloc(sys: System, task: Task, vma: AnonVma) -> int:
    """mmap(): the mapping's vm_area_struct (mm/vma_init.c: vm_area_alloc, SLAB_ACCOUNT)."""
    if vma.vm_area is not None or sys.semantics == "3.8" or not vma.thp_aligned:
        return 0  # not charged under the 3.8 rules; an unaligned mapping merges (vma_merge)
    obj = _charged_as(sys, task, slab.kmem_cache_alloc, sys, "vm_area_struct", task)
    if slab.charge_failed(obj):
        return obj
    vma.vm_area = obj
    return 0


def anon_vma_prepare(sys: System, task: Task, vma: AnonVma) -> int:
    """__anon_vma_prepare() at the mapping's first fault: an anon_vma_chain, then the
    anon_vma (mm/rmap.c, both caches SLAB_ACCOUNT); the chain goes back if the anon_vma
    cannot be had."""
    if vma.anon_vma is not None:
        return 0
    if sys.semantics == "3.8" or not vma.thp_aligned:
        vma.anon_vma = []  # not accounted (3.8), or the neighbour's (vma_merge)
        return 0
    avc = _charged_as(sys, task, slab.kmem_cache_alloc, sys, "anon_vma_chain", task,
                      user_fault=True)
    if slab.charge_failed(avc):
        return avc
    anon_vma = _charged_as(sys, task, slab.kmem_cache_alloc, sys, "anon_vma", task, user_fault=True)
    if slab.charge_failed(anon_vma):
        slab.kmem_cache_free(sys, avc, task.cpu)
        return anon_vma
    vma.anon_vma = [avc, anon_vma]
    return 0


def unlink_anon_vmas(sys: System, vma: AnonVma, cpu: int) -> None:
    """unlink_anon_vmas(): the chain, then the anon_vma (its last user is gone)."""
    for obj in vma.anon_vma or ():
        slab.kmem_cache_free(sys, obj, cpu)
    vma.anon_vma = []


def vm_area_free(sys: System, vma: AnonVma, cpu: int) -> None:
    """remove_vma() -> vm_area_free()."""
    if vma.vm_area is not None:
        slab.kmem_cache_free(sys, vma.vm_area, cpu)
        vma.vm_area = None
