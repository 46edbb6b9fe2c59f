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
    order    uint8   order of the folio the page belongs to (folio_order(); 0: a small
                     page).  A large folio's pages are the 2**order consecutive indices
                     from its naturally aligned head in one mapping; they are charged,
                     put on an LRU list, isolated and freed together.

All but `lru` start as np.zeros, whose memory the host does not make resident until a
page is first written: a machine costs what its touched pages cost.

The free frames are a stack, as the old free list of single PFNs was, kept as runs of
consecutive PFNs (first, last): freeing pushes an array of frames in its order, and an
allocation pops from the top, so that allocating a and then b frames gives the same
frames, in the same order, as allocating a + b.  Runs cost 8 bytes each instead of 4
per free frame, and an allocation from one run is a contiguous `range` of frames.

An LRU list is a deque of PFN chunks with the head on the right; a chunk is an array
of PFNs or a `range` of consecutive ones.  Removing a page from the middle of a list
only changes its `lru`/`seq`; the entry left behind is stale and is dropped when
reclaim reaches it or when the list is compacted.
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

# PFNs are int32 in the model's arrays (8 TiB of 4 KiB pages).
MAX_NR_PAGES = (1 << 31) - 1
# A list is compacted once its stale entries outnumber its live ones by this much.
LRU_COMPACT_SLACK = 4096
# Frames whose `lru` is set to LRU_NONE at a time, ahead of their first allocation
# (MemMap: a machine costs what its touched pages cost; 1 GiB of frames, 256 KiB).
LRU_LAZY_CHUNK = 1 << 18


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


# --- runs of consecutive frames -------------------------------------------------------------

def run_slice(run: range) -> slice:
    """The ascending slice of the per-page arrays that a run (step +1 or -1) covers."""
    if run.step > 0 or len(run) <= 1:
        return slice(run.start, run.start + len(run))
    return slice(run.start - len(run) + 1, run.start + 1)


def put_in_run_order(arr: np.ndarray, run: range, values: np.ndarray) -> None:
    """arr[pfn] = values[i] for the i-th frame of the run, without an index array."""
    if run.step > 0 or len(run) <= 1:
        arr[run_slice(run)] = values
    else:
        arr[run_slice(run)] = values[::-1]


def run_pfns(run: range) -> np.ndarray:
    """The frames of a run as an int32 array, in run order."""
    return np.arange(run.start, run.stop, run.step, dtype=np.int32)


def split_runs(pfns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut a sequence of frames into runs of step +1 or -1, in order: (first, last) arrays.

    Greedy from the left, except that an element after a step change starts a new run
    even when it could have ended the previous one (each cut is decided locally, so the
    whole split is vectorised); the runs are valid, and as long as the input's are.
    """
    n = len(pfns)
    if 1 < n <= SPLIT_RUNS_SMALL:
        return _split_runs_small(pfns.tolist())
    p = np.asarray(pfns, dtype=np.int64)
    if n <= 1:
        return p.copy(), p.copy()
    d = np.diff(p)
    unit = (d == 1) | (d == -1)
    cont = np.empty(n, bool)  # element i extends the run of element i-1
    cont[0] = False
    cont[1] = unit[0]
    cont[2:] = unit[1:] & ((d[1:] == d[:-1]) | ~unit[:-1])
    starts = np.flatnonzero(~cont)
    ends = np.empty_like(starts)
    ends[:-1] = starts[1:] - 1
    ends[-1] = n - 1
    return p[starts], p[ends]


# Up to this many frames split_runs() cuts in plain integers: for a batch of a few
# dozen pages (a reclaim batch being freed) that is cheaper than a dozen NumPy calls.
SPLIT_RUNS_SMALL = 64


def _split_runs_small(p: list) -> tuple[np.ndarray, np.ndarray]:
    """split_runs() of a short list of frames (len >= 2), the same cuts one by one:
    element i extends the run of element i-1 when their step is +1 or -1 and either the
    step before was the same or was not a unit step."""
    firsts, lasts = _runs_of_list(p)
    return np.array(firsts, np.int64), np.array(lasts, np.int64)


def _runs_of_list(p: list) -> tuple[list, list]:
    """_split_runs_small() as lists of plain integers (len(p) >= 2)."""
    d = p[1] - p[0]
    if (d == 1 or d == -1) and p[-1] - p[0] == d * (len(p) - 1) and \
            p == list(range(p[0], p[-1] + d, d)):
        return p[:1], p[-1:]  # one run
    firsts = [p[0]]
    lasts = []
    prev = None  # the step from element i-2 to i-1
    a = p[0]  # element i-1
    for b in p[1:]:
        d = b - a
        if (d == 1 or d == -1) and (prev is None or d == prev or (prev != 1 and prev != -1)):
            pass  # continues the run
        else:
            lasts.append(a)
            firsts.append(b)
        prev = d
        a = b
    lasts.append(p[-1])
    return firsts, lasts


class MemMap:
    """mem_map: the per-page arrays of one node plus its free list."""

    def __init__(self, nr_pages: int):
        if not 0 < nr_pages <= MAX_NR_PAGES:
            raise ValueError(f"nr_pages: expected 1..{MAX_NR_PAGES}, got {nr_pages}")
        self.nr_pages = nr_pages
        self.memcg = np.zeros(nr_pages, np.uint16)
        # `lru` is LRU_NONE for every free frame.  Zeros are not resident until written,
        # LRU_NONE is: the frames never handed out yet, a stretch [_lru_lo, _lru_hi) of
        # the bottom run, hold zeros that stand for LRU_NONE, and get it written in
        # LRU_LAZY_CHUNK steps just before the allocator first hands them out.  A machine
        # up to LRU_LAZY_CHUNK pages is written at once.
        self.lru = np.zeros(nr_pages, np.int8)
        self._lru_lo, self._lru_hi = 0, nr_pages
        if nr_pages <= LRU_LAZY_CHUNK:
            self._lru_ready(0, nr_pages)
        self.flags = np.zeros(nr_pages, np.uint8)
        self.seq = np.zeros(nr_pages, np.uint32)
        self.mapping = np.zeros(nr_pages, np.int32)
        self.index = np.zeros(nr_pages, np.uint32)
        self.order = np.zeros(nr_pages, np.uint8)
        # Set once a large folio was made: until then `order` is all zeros, untouched (not
        # resident), and freeing frames need not clear it.
        self.large = False
        # The buddy allocator's free lists, flattened to a stack of runs; the bottom run is
        # the whole of memory, popped from PFN 0 upwards.
        self._first = np.empty(64, np.int32)
        self._last = np.empty(64, np.int32)
        self._first[0], self._last[0] = nr_pages - 1, 0
        self._nr_runs = 1
        self.nr_free = nr_pages
        self._seq = 0

    # --- the free stack -----------------------------------------------------------------

    def _lru_ready(self, a: int, b: int) -> None:
        """Frames a..b-1 are about to be handed out: write LRU_NONE into those of them
        (and a chunk beyond, on the same side) that were never handed out."""
        lo, hi = self._lru_lo, self._lru_hi
        if a >= hi or b <= lo:
            return
        if a <= lo and b < hi:  # user allocations pop the bottom run upwards from lo
            new = min(hi, max(b, lo + LRU_LAZY_CHUNK))
            self.lru[lo:new] = LRU_NONE
            self._lru_lo = new
        elif b >= hi and a > lo:  # unmovable ones take its far end downwards from hi
            new = max(lo, min(a, hi - LRU_LAZY_CHUNK))
            self.lru[new:hi] = LRU_NONE
            self._lru_hi = new
        else:
            self.lru[lo:hi] = LRU_NONE
            self._lru_lo = self._lru_hi = lo

    def _lru_ready_bottom(self, n: int) -> None:
        """An allocation of n frames from the top of the stack: those it takes from the
        bottom run, from its `last` end, get their `lru` ready (_lru_ready)."""
        if self._lru_lo >= self._lru_hi or not self._nr_runs:
            return
        first, last = int(self._first[0]), int(self._last[0])
        size = abs(last - first) + 1
        k = n - (self.nr_free - size)  # the frames above the bottom run come first
        if k <= 0:
            return
        k = min(k, size)
        if last <= first:
            self._lru_ready(last, last + k)
        else:
            self._lru_ready(last - k + 1, last + 1)

    def top_run(self) -> int:
        """Frames the next allocation can take as one contiguous run."""
        r = self._nr_runs
        if not r:
            return 0
        return abs(int(self._last[r - 1]) - int(self._first[r - 1])) + 1

    def alloc_run(self, n: int) -> range:
        """Take n free frames from the top run (n <= top_run()), as a range in pop order."""
        r = self._nr_runs
        if r == 1:
            self._lru_ready_bottom(n)
        first, last = int(self._first[r - 1]), int(self._last[r - 1])
        step = -1 if last >= first else 1  # popping walks from last back to first
        size = abs(last - first) + 1
        assert 0 < n <= size
        if n == size:
            self._nr_runs = r - 1
        else:
            self._last[r - 1] = last + step * n
        self.nr_free -= n
        return range(last, last + step * n, step)

    def alloc(self, n: int) -> np.ndarray:
        """Take n free frames (the caller has checked nr_free), top of the stack first."""
        assert n <= self.nr_free
        if n <= 0:
            return np.empty(0, np.int32)
        if n <= self.top_run():
            return run_pfns(self.alloc_run(n))
        self._lru_ready_bottom(n)
        if n <= SPLIT_RUNS_SMALL:
            return self._alloc_small(n)
        r = self._nr_runs
        m = min(r, n)  # every run holds a frame at least
        firsts = self._first[r - m:r][::-1].astype(np.int64)
        lasts = self._last[r - m:r][::-1].astype(np.int64)
        steps = np.where(lasts >= firsts, -1, 1)
        sizes = np.abs(lasts - firsts) + 1
        cum = np.cumsum(sizes)
        j = int(np.searchsorted(cum, n))  # the run where the n-th frame is
        counts = sizes[:j + 1].copy()
        counts[j] = n - (int(cum[j - 1]) if j else 0)
        seg = np.repeat(np.arange(j + 1), counts)
        within = np.arange(n) - np.repeat(cum[:j + 1] - sizes[:j + 1], counts)
        pfns = (lasts[seg] + steps[seg] * within).astype(np.int32)
        if counts[j] == sizes[j]:
            self._nr_runs = r - (j + 1)
        else:
            self._nr_runs = r - j
            self._last[r - 1 - j] = lasts[j] + steps[j] * counts[j]
        self.nr_free -= n
        return pfns

    def _alloc_small(self, n: int) -> np.ndarray:
        """alloc() of a few frames from several runs, run by run in plain integers (for a
        batch of a few dozen, cheaper than the cumulative sums): the same frames."""
        out = []
        r = self._nr_runs
        m = min(r, n)  # every run holds a frame at least
        firsts = self._first[r - m:r].tolist()
        lasts = self._last[r - m:r].tolist()
        need = n
        while need:
            first, last = firsts.pop(), lasts.pop()
            step = -1 if last >= first else 1  # popping walks from last back to first
            size = abs(last - first) + 1
            k = min(need, size)
            out.extend(range(last, last + step * k, step))
            need -= k
            r -= 1
            if k < size:
                self._last[r] = last + step * k
                r += 1
        self._nr_runs = r
        self.nr_free -= n
        return np.array(out, np.int32)

    def alloc_unmovable(self, n: int) -> np.ndarray:
        """Take n free frames for the kernel's own use from the bottom of the stack.

        mm/page_alloc.c: gfp_migratetype() - kernel allocations (slab pages, kernel
        stacks, page tables, per-CPU chunks) are MIGRATE_UNMOVABLE and come from other
        pageblocks than user pages (MIGRATE_MOVABLE); the model takes them from the far
        end of the free stack, so that they do not change which frames user allocations
        get while the two ends have not met.  The caller has checked nr_free.
        """
        assert n <= self.nr_free
        out = np.empty(max(n, 0), np.int32)
        got = 0
        while got < n:
            first, last = int(self._first[0]), int(self._last[0])
            step = -1 if last >= first else 1  # popping walks from last back to first
            size = abs(last - first) + 1
            k = min(n - got, size)
            if last >= first:
                self._lru_ready(first, first + k)
            else:
                self._lru_ready(first - k + 1, first + 1)
            # the bottom run's far end is `first`: take from there, towards `last`
            out[got:got + k] = np.arange(first, first - step * k, -step, dtype=np.int32)
            got += k
            if k == size:
                r = self._nr_runs
                self._first[:r - 1] = self._first[1:r]
                self._last[:r - 1] = self._last[1:r]
                self._nr_runs = r - 1
            else:
                self._first[0] = first - step * k
        self.nr_free -= n
        return out

    def free(self, pfns: np.ndarray) -> None:
        """Return frames to the free lists and clear their state."""
        n = len(pfns)
        if not n:
            return
        if n == 1:  # one frame (a slab page): a run of one, no arrays to cut
            pfn = int(pfns[0])
            self._clear(pfn)
            self._push_run(pfn, pfn)
            self.nr_free += 1
            return
        self._clear(pfns)
        self._push(pfns)
        self.nr_free += n

    def _clear(self, pfns) -> None:
        """A freed frame's state: no group, no list, no flags, no address space (pfns:
        an array of frames, or one frame)."""
        self.memcg[pfns] = 0
        self.lru[pfns] = LRU_NONE
        self.flags[pfns] = 0
        self.mapping[pfns] = 0
        if self.large:
            self.order[pfns] = 0

    def free_each(self, pfns: np.ndarray, bounds) -> None:
        """free() of the slices of pfns cut at bounds, one after the other: the same
        free stack (runs included) as that many free() calls."""
        n = len(pfns)
        if not n:
            return
        self._clear(pfns)
        # A slice that is one run of consecutive frames (a folio, as allocated) is pushed
        # as that run; split_runs() of it would give the same single run.
        p = np.asarray(pfns, np.int64)
        d = np.diff(p)
        unit = np.concatenate([[0], np.cumsum((d == 1) | (d == -1))])
        turn = np.concatenate([[0, 0], np.cumsum(d[1:] != d[:-1])]) if n > 1 else np.zeros(2, np.int64)
        starts = np.concatenate([[0], np.asarray(bounds, np.int64)])
        ends = np.concatenate([starts[1:], [n]])
        keep = ends > starts
        starts, ends = starts[keep], ends[keep]
        last = ends - 1
        second = np.minimum(starts + 1, n - 1)
        single = (last == starts) | ((unit[last] - unit[starts] == last - starts) &
                                     (turn[last] == turn[second]))
        for a, b, one, first_pfn, last_pfn in zip(starts.tolist(), ends.tolist(), single.tolist(),
                                                  p[starts].tolist(), p[last].tolist()):
            if one:
                self._push_run(first_pfn, last_pfn)
            else:
                self._push(pfns[a:b])
        self.nr_free += n

    def _push_run(self, first: int, last: int) -> None:
        """_push() of one run of consecutive frames, first to last."""
        r = self._nr_runs
        if r and self._extends_top(first, last):
            self._last[r - 1] = last
            return
        if r + 1 > len(self._first):
            cap = 2 * len(self._first)
            for name in ("_first", "_last"):
                grown = np.empty(cap, np.int32)
                grown[:r] = getattr(self, name)[:r]
                setattr(self, name, grown)
        self._first[r] = first
        self._last[r] = last
        self._nr_runs = r + 1

    def _push(self, pfns: np.ndarray) -> None:
        firsts, lasts = split_runs(pfns)
        if len(firsts) == 1:  # one run (frames freed in the order they were taken)
            self._push_run(int(firsts[0]), int(lasts[0]))
            return
        r = self._nr_runs
        if r and self._extends_top(int(firsts[0]), int(lasts[0])):
            self._last[r - 1] = lasts[0]
            firsts, lasts = firsts[1:], lasts[1:]
        k = len(firsts)
        if r + k > len(self._first):
            cap = max(2 * len(self._first), r + k)
            for name in ("_first", "_last"):
                grown = np.empty(cap, np.int32)
                grown[:r] = getattr(self, name)[:r]
                setattr(self, name, grown)
        self._first[r:r + k] = firsts
        self._last[r:r + k] = lasts
        self._nr_runs = r + k

    def push_list(self, p: list) -> None:
        """_push() of a few frames given as a list of plain integers (a reclaim batch's,
        len(p) <= SPLIT_RUNS_SMALL): the same runs, without arrays for the cut."""
        if len(p) == 1:
            self._push_run(p[0], p[0])
            return
        firsts, lasts = _runs_of_list(p)
        k = len(firsts)
        r = self._nr_runs
        if r and self._extends_top(firsts[0], lasts[0]):
            if k == 1:
                self._last[r - 1] = lasts[0]
                return
            self._last[r - 1] = lasts[0]
            firsts, lasts = firsts[1:], lasts[1:]
            k -= 1
        elif k == 1:
            self._push_run(firsts[0], lasts[0])
            return
        if r + k > len(self._first):
            cap = max(2 * len(self._first), r + k)
            for name in ("_first", "_last"):
                grown = np.empty(cap, np.int32)
                grown[:r] = getattr(self, name)[:r]
                setattr(self, name, grown)
        self._first[r:r + k] = firsts
        self._last[r:r + k] = lasts
        self._nr_runs = r + k

    def _extends_top(self, first: int, last: int) -> bool:
        """Would the run first..last continue the top run with the same step?"""
        r = self._nr_runs
        tf, tl = int(self._first[r - 1]), int(self._last[r - 1])
        step = first - tl
        if step not in (1, -1):
            return False
        if tl != tf and step != (1 if tl > tf else -1):
            return False
        return first == last or step == (1 if last > first else -1)

    def free_pfns(self) -> np.ndarray:
        """Every free frame, from the bottom of the stack to the top (for checks)."""
        r = self._nr_runs
        if not r:
            return np.empty(0, np.int32)
        firsts = self._first[:r].astype(np.int64)
        lasts = self._last[:r].astype(np.int64)
        steps = np.where(lasts >= firsts, 1, -1)
        sizes = np.abs(lasts - firsts) + 1
        seg = np.repeat(np.arange(r), sizes)
        within = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        return (firsts[seg] + steps[seg] * within).astype(np.int32)

    # The old flat stack, for consistency checks that read it as mem._free[:mem.nr_free].
    _free = property(free_pfns)

    @property
    def nr_free_runs(self) -> int:
        """Runs the free stack is made of."""
        return self._nr_runs

    # --- LRU stamps and bookkeeping ----------------------------------------------------------

    def next_seq(self, n: int) -> int:
        """A block of n fresh LRU stamps; returns the first."""
        base = self._seq
        self._seq = (self._seq + n) & 0xFFFFFFFF
        return base

    def bytes_used(self) -> int:
        """Bytes of simulator memory spent on per-page state: the per-page arrays.

        The free stack is not per-page state any more: it costs 8 bytes per run of free
        frames (free_stack_bytes()), which depends on the order frames were freed in.
        """
        return sum(a.nbytes for a in (self.memcg, self.lru, self.flags, self.seq,
                                      self.mapping, self.index, self.order))

    def folio_tail_missing(self, pfns: np.ndarray) -> int:
        """Pages of the last folio of pfns (an isolation, oldest first) that are not in
        it: the rest of that folio, next on its LRU list."""
        last = int(pfns[-1])
        order = int(self.order[last])
        if not order:
            return 0
        nr = 1 << order
        tail = pfns[-nr:]
        same = (self.mapping[tail] == self.mapping[last]) & \
            ((self.index[tail] >> order) == (self.index[last] >> order))
        # the folio's pages are the trailing run of `same`
        run = len(tail) - (int(np.flatnonzero(~same)[-1]) + 1 if not same.all() else 0)
        return nr - run

    def free_stack_bytes(self) -> int:
        """Bytes of simulator memory spent on the free stack (its run arrays)."""
        return self._first.nbytes + self._last.nbytes


def _stamps(base: int, start: int, end: int) -> np.ndarray:
    """The LRU stamps of entries start..end of a chunk stamped from base (mod 2**32)."""
    return np.arange(start, end, dtype=np.uint32) + np.uint32(base & 0xFFFFFFFF)


def _chunk_pfns(pfns, start: int, end: int) -> np.ndarray:
    """Entries start..end of a chunk as an array of frames."""
    if isinstance(pfns, range):
        return run_pfns(pfns[start:end])
    return pfns[start:end]


_NO_CHUNKS = ()  # the chunks of a list never added to: no deque until the first page


class LruList:
    """One LRU list of one lruvec: head on the right, tail (oldest) on the left.

    Stale entries are bounded: a list is compacted when its entries reach twice its
    live pages plus LRU_COMPACT_SLACK, after isolation (maybe_compact) and after adds.

    An entry is live when its page is on a list of this kind (`lru`) with the entry's
    stamp.  Stamps come from one counter for all lists, since `lru` does not say whose
    list of that kind a page is on: a stale entry could pass for live only after 2**32
    further stamps while it stays on its list, hence 32-bit stamps.  The pages that leave
    a list from the middle (lru_del, activation) are not named to it, only counted
    (forget), so there is no per-page generation to bump that would allow fewer bits.
    """

    __slots__ = ("lru", "chunks", "nr", "entries")

    def __init__(self, lru: int):
        self.lru = lru
        self.chunks = _NO_CHUNKS  # deque of [pfns (array or range), base_seq, start]
        self.nr = 0  # live pages
        self.entries = 0  # live + stale entries

    def add(self, mem: MemMap, pfns) -> None:
        """Put pages at the head of the list, oldest of them first.

        pfns is an array of frames or a range of consecutive ones (step +1 or -1).
        """
        n = len(pfns)
        if not n:
            return
        base = mem.next_seq(n)
        stamps = _stamps(base, 0, n)
        if isinstance(pfns, range):
            put_in_run_order(mem.seq, pfns, stamps)
            mem.lru[run_slice(pfns)] = self.lru
        else:
            mem.seq[pfns] = stamps
            mem.lru[pfns] = self.lru
        if self.chunks is _NO_CHUNKS:
            self.chunks = deque()
        self.chunks.append([pfns, base, 0])
        self.nr += n
        self.entries += n
        if self.entries >= 2 * self.nr + LRU_COMPACT_SLACK:
            self.compact(mem)

    def isolate(self, mem: MemMap, nr: int) -> np.ndarray:
        """isolate_lru_folios(): take up to nr pages from the tail, oldest first.

        The pages are left with lru = LRU_NONE; the caller puts them back or frees them.
        """
        if self.entries == self.nr:
            return self._isolate_live(mem, nr)
        out = []
        need = nr
        while need and self.chunks:
            chunk = self.chunks[0]
            pfns, base, start = chunk
            end = min(len(pfns), start + 4 * need + 64)
            window = _chunk_pfns(pfns, start, end)
            live = np.flatnonzero((mem.seq[window] == _stamps(base, start, end))
                                  & (mem.lru[window] == self.lru))
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

    def _isolate_live(self, mem: MemMap, nr: int) -> np.ndarray:
        """isolate() of a list without stale entries (as many entries as live pages):
        the first nr entries are the pages, no stamp to check."""
        out = []
        need = nr
        while need and self.chunks:
            chunk = self.chunks[0]
            pfns, _, start = chunk
            stop = min(len(pfns), start + need)
            got = _chunk_pfns(pfns, start, stop)
            self.entries -= stop - start
            if stop >= len(pfns):
                self.chunks.popleft()
            else:
                chunk[2] = stop
            out.append(got)
            need -= stop - start
        if not out:
            return np.empty(0, np.int32)
        taken = np.concatenate(out) if len(out) > 1 else out[0].copy()
        mem.lru[taken] = LRU_NONE
        self.nr -= len(taken)
        return taken

    def pages(self, mem: MemMap) -> np.ndarray:
        """The live pages of the list, oldest first (the list is left as it is)."""
        parts = []
        for pfns, base, start in self.chunks:
            window = _chunk_pfns(pfns, start, len(pfns))
            if self.entries != self.nr:
                window = window[(mem.seq[window] == _stamps(base, start, len(pfns)))
                                & (mem.lru[window] == self.lru)]
            parts.append(window)
        return np.concatenate(parts) if parts else np.empty(0, np.int32)

    def forget(self, n: int) -> None:
        """n pages left this list from the middle (freed or moved): their entries go stale."""
        self.nr -= n

    def maybe_compact(self, mem: MemMap) -> None:
        """Drop stale entries once they outnumber the live ones."""
        if self.entries < 2 * self.nr + LRU_COMPACT_SLACK:
            return
        self.compact(mem)

    def compact(self, mem: MemMap) -> None:
        """Keep the live entries only, in their order, freshly stamped."""
        parts = []
        for pfns, base, start in self.chunks:
            window = _chunk_pfns(pfns, start, len(pfns))
            parts.append(window[(mem.seq[window] == _stamps(base, start, len(pfns)))
                                & (mem.lru[window] == self.lru)])
        self.chunks = _NO_CHUNKS
        self.nr = 0
        self.entries = 0
        live = np.concatenate(parts) if parts else np.empty(0, np.int32)
        if not len(live):
            return
        firsts, lasts = split_runs(live)
        if len(firsts) * 16 > len(live):
            self.add(mem, live)  # scattered: one array
            return
        for first, last in zip(firsts.tolist(), lasts.tolist()):  # mostly runs: ranges
            step = 1 if last >= first else -1
            self.add(mem, range(first, last + step, step))


class Lruvec:
    """struct lruvec: the five LRU lists of one memcg on the (single) node."""

    __slots__ = ("lists",)

    def __init__(self):
        self.lists = [LruList(lru) for lru in range(NR_LRU_LISTS)]

    def size(self, lru: int) -> int:
        """lruvec_lru_size(): pages on one list."""
        return self.lists[lru].nr
