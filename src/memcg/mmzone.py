"""Page frames, page flags and LRU lists: the model's struct page and lruvec.

Per-page state lives in compact NumPy arrays indexed by page frame number (PFN), not
one Python object per page (the 2007 controller's meta_page cost five pointers and an
atomic_t per page; today's kernel keeps one memcg pointer in struct page).  Per page:

    memcg    uint16  id of the memcg the page is charged to (0: not charged)
    lru      int8    which LRU list it is on (enum lru_list), -1 when off the LRU
    flags    uint8   PG_* bits below
    seq      uint32  stamp of its entry in its LRU list (stale entries are skipped)
    mapping  int32   id of the address space that owns it (file, shmem object, anon vma)
    index    uint32  offset in that address space, in pages

An LRU list is a deque of PFN chunks with the head on the right.  Removing a page
from the middle of a list only changes its `lru`/`seq`; the entry left behind is
stale and is dropped when reclaim reaches it (or when the list is compacted).
"""

from __future__ import annotations

from collections import deque

import numpy as np

# include/linux/mmzone.h: enum lru_list
LRU_INACTIVE_ANON = 0
LRU_ACTIVE_ANON = 1
LRU_INACTIVE_FILE = 2
LRU_ACTIVE_FILE = 3
LRU_UNEVICTABLE = 4
NR_LRU_LISTS = 5
LRU_NONE = -1
LRU_NAMES = ("inactive_anon", "active_anon", "inactive_file", "active_file", "unevictable")


def is_file_lru(lru: int) -> bool:
    """include/linux/mmzone.h: is_file_lru()."""
    return lru in (LRU_INACTIVE_FILE, LRU_ACTIVE_FILE)


def is_active_lru(lru: int) -> bool:
    """include/linux/mmzone.h: is_active_lru()."""
    return lru in (LRU_ACTIVE_ANON, LRU_ACTIVE_FILE)


# include/linux/page-flags.h (a subset; "young" stands for the pte accessed bit that
# folio_referenced() reads and clears through the rmap).
PG_referenced = 1 << 0
PG_dirty = 1 << 1
PG_swapbacked = 1 << 2  # anon and shmem: reclaimable only to swap, lives on the anon LRU
PG_mlocked = 1 << 3
PG_young = 1 << 4
PG_reclaim = 1 << 5
PG_mapped = 1 << 6  # page_mapped(): some page table maps it
PG_anon = 1 << 7  # folio_test_anon(): private anonymous memory


class MemMap:
    """mem_map: the per-page arrays of one node plus its free list."""

    def __init__(self, nr_pages: int):
        self.nr_pages = nr_pages
        self.memcg = np.zeros(nr_pages, np.uint16)
        self.lru = np.full(nr_pages, LRU_NONE, np.int8)
        self.flags = np.zeros(nr_pages, np.uint8)
        self.seq = np.zeros(nr_pages, np.uint32)
        self.mapping = np.zeros(nr_pages, np.int32)
        self.index = np.zeros(nr_pages, np.uint32)
        # The buddy allocator's free lists, flattened to a stack of PFNs.
        self._free = np.arange(nr_pages - 1, -1, -1, dtype=np.int32)
        self.nr_free = nr_pages
        self._seq = 0

    def alloc(self, n: int) -> np.ndarray:
        """Take n free frames (the caller has checked nr_free)."""
        assert n <= self.nr_free
        top = self.nr_free
        pfns = self._free[top - n:top][::-1].copy()
        self.nr_free -= n
        return pfns

    def free(self, pfns: np.ndarray) -> None:
        """Return frames to the free lists and clear their state."""
        n = len(pfns)
        if not n:
            return
        self.memcg[pfns] = 0
        self.lru[pfns] = LRU_NONE
        self.flags[pfns] = 0
        self.mapping[pfns] = 0
        self._free[self.nr_free:self.nr_free + n] = pfns
        self.nr_free += n

    def next_seq(self, n: int) -> int:
        """A block of n fresh LRU stamps; returns the first."""
        base = self._seq
        self._seq = (self._seq + n) & 0xFFFFFFFF
        return base

    def bytes_used(self) -> int:
        """Bytes of simulator memory spent on per-page state."""
        return sum(a.nbytes for a in (self.memcg, self.lru, self.flags, self.seq,
                                      self.mapping, self.index, self._free))


class LruList:
    """One LRU list of one lruvec: head on the right, tail (oldest) on the left."""

    __slots__ = ("lru", "chunks", "nr", "entries")

    def __init__(self, lru: int):
        self.lru = lru
        self.chunks: deque = deque()  # [pfns, base_seq, start]
        self.nr = 0  # live pages
        self.entries = 0  # live + stale entries

    def add(self, mem: MemMap, pfns: np.ndarray) -> None:
        """Put pages at the head of the list, oldest of them first."""
        n = len(pfns)
        if not n:
            return
        base = mem.next_seq(n)
        mem.seq[pfns] = (base + np.arange(n, dtype=np.uint64)).astype(np.uint32)
        mem.lru[pfns] = self.lru
        self.chunks.append([pfns, base, 0])
        self.nr += n
        self.entries += n

    def isolate(self, mem: MemMap, nr: int) -> np.ndarray:
        """isolate_lru_folios(): take up to nr pages from the tail, oldest first.

        The pages are left with lru = LRU_NONE; the caller puts them back or frees them.
        """
        out = []
        need = nr
        while need and self.chunks:
            chunk = self.chunks[0]
            pfns, base, start = chunk
            end = min(len(pfns), start + 4 * need + 64)
            window = pfns[start:end]
            seqs = ((base + np.arange(start, end, dtype=np.uint64)) & 0xFFFFFFFF).astype(np.uint32)
            live = np.flatnonzero((mem.seq[window] == seqs) & (mem.lru[window] == self.lru))
            if len(live) > need:
                live = live[:need]
                stop = start + int(live[-1]) + 1
            else:
                stop = end
            got = window[live]
            self.entries -= stop - start
            if stop >= len(pfns):
                self.chunks.popleft()
            else:
                chunk[2] = stop
            if len(got):
                out.append(got)
                need -= len(got)
        if not out:
            return np.empty(0, np.int32)
        taken = np.concatenate(out) if len(out) > 1 else out[0]
        mem.lru[taken] = LRU_NONE
        self.nr -= len(taken)
        return taken

    def forget(self, n: int) -> None:
        """n pages left this list from the middle (freed or moved): their entries go stale."""
        self.nr -= n

    def maybe_compact(self, mem: MemMap) -> None:
        """Drop stale entries once they outnumber the live ones."""
        if self.entries < 2 * self.nr + 4096:
            return
        parts = []
        for pfns, base, start in self.chunks:
            window = pfns[start:]
            seqs = ((base + np.arange(start, len(pfns), dtype=np.uint64)) & 0xFFFFFFFF).astype(np.uint32)
            parts.append(window[(mem.seq[window] == seqs) & (mem.lru[window] == self.lru)])
        self.chunks.clear()
        self.nr = 0
        self.entries = 0
        if parts:
            live = np.concatenate(parts)
            self.add(mem, live)


class Lruvec:
    """struct lruvec: the five LRU lists of one memcg on the (single) node."""

    __slots__ = ("lists",)

    def __init__(self):
        self.lists = [LruList(lru) for lru in range(NR_LRU_LISTS)]

    def size(self, lru: int) -> int:
        """lruvec_lru_size(): pages on one list."""
        return self.lists[lru].nr
