"""Readahead: the windows and folio orders of a sequential file read (mm/readahead.c, 6.18).

A read that misses the page cache starts a readahead window (page_cache_sync_ra); the
folio at the window's mark carries PG_readahead, and the read reaching it starts the
next window (page_cache_async_ra), larger and in folios four times as large, up to the
window's size and MAX_PAGECACHE_ORDER.  page_cache_ra_order() cuts a window into
naturally aligned folios; each is charged as one unit when it is added to the page cache
(filemap_add_folio -> mem_cgroup_charge), so failcnt, pgpgin and pgpgout count folios.

On the reference machine (read_ahead_kb 8192 on its ext4 disk) a 128 MiB read in
256 KiB read() calls comes in as 256 single pages, 128 folios of 4 pages, 64 of 16, 32
of 64, 9 of 256 and 52 of 512: 541 folios (measured with /proc/kpageflags).

The state of one open file (struct file_ra_state) lives as long as one read_file(): the
model opens the file, reads it from the start in read() calls of READ_CHUNK pages and
closes it, as the real backend's worker does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import fastpath

if TYPE_CHECKING:
    from ..system import System
    from ..tasks import Task
    from .filemap import AddressSpace

# include/linux/pagemap.h: MAX_PAGECACHE_ORDER = min(MAX_XAS_ORDER,
# PREFERRED_MAX_PAGECACHE_ORDER), the latter HPAGE_PMD_ORDER (9 with 4 KiB pages on x86-64)
MAX_PAGECACHE_ORDER = 9
# include/linux/mm.h: VM_READAHEAD_PAGES = SZ_128K / PAGE_SIZE, a new bdi's ra_pages
VM_READAHEAD_PAGES = 32
# The size of one read() of a read_file(): the real backend's worker reads 256 KiB at a
# time (backends/worker.py IO_CHUNK)
READ_CHUNK = 64
# Single-page folios charged one by one reach the LRU together, as the per-CPU lru_add
# batch takes them (mm/swap.c: folio_batch of PAGEVEC_SIZE); the model's batches are
# those of its other page-cache paths (filemap.FILEMAP_BATCH).
FOLIO_BATCH = 64


@dataclass
class FileRaState:
    """struct file_ra_state (include/linux/fs.h) of one open file."""

    ra_pages: int  # file_ra_state_init(): the bdi's ra_pages
    io_pages: int  # bdi->io_pages: the device's max_sectors_kb in pages
    start: int = 0
    size: int = 0
    async_size: int = 0
    order: int = 0
    prev_pos: int = -1  # file_ra_state_init(): prev_pos = -1 (in pages here)


def file_ra_state_init(sys: System) -> FileRaState:
    """file_ra_state_init(): the window limits of the file's backing device.

    The device's read_ahead_kb and max_sectors_kb come from the machine's profile
    (block/blk-settings.c: blk_apply_bdi_limits sets bdi->ra_pages and io_pages).
    """
    prof = sys.profile or {}
    ra_pages = int(prof.get("read_ahead_kb", VM_READAHEAD_PAGES * 4)) // 4
    io_pages = int(prof.get("max_sectors_kb", 1280)) // 4
    return FileRaState(ra_pages=ra_pages, io_pages=io_pages)


def roundup_pow_of_two(n: int) -> int:
    return 1 << (max(int(n), 1) - 1).bit_length()


def ilog2(n: int) -> int:
    return int(n).bit_length() - 1


def ffs0(n: int) -> int:
    """__ffs(): the index of the lowest set bit."""
    return (n & -n).bit_length() - 1


def ra_folio_order(index: int, limit: int, new_order: int) -> int:
    """The order of the folio page_cache_ra_order() adds at index: new_order, smaller
    where index is not aligned to it, and none that reaches past limit."""
    order = new_order
    if index & ((1 << order) - 1):  # align with smaller pages if needed
        order = ffs0(index)
    while order > 0 and index + (1 << order) - 1 > limit:  # nothing past EOF
        order -= 1
    return order


def get_init_ra_size(size: int, max_pages: int) -> int:
    """get_init_ra_size(): the first window, 4x or 2x the request, at most max_pages."""
    newsize = roundup_pow_of_two(size)
    if newsize <= max_pages // 32:
        newsize = newsize * 4
    elif newsize <= max_pages // 4:
        newsize = newsize * 2
    else:
        newsize = max_pages
    return newsize


def get_next_ra_size(ra: FileRaState, max_pages: int) -> int:
    """get_next_ra_size(): the next window, 4x while small, then 2x, up to max_pages."""
    cur = ra.size
    if cur < max_pages // 16:
        return 4 * cur
    if cur <= max_pages // 2:
        return 2 * cur
    return max_pages


def ractl_max_pages(ra: FileRaState, req_size: int) -> int:
    """ractl_max_pages(): a request larger than the window may use the device's io size."""
    max_pages = ra.ra_pages
    if req_size > max_pages and ra.io_pages > max_pages:
        max_pages = min(req_size, ra.io_pages)
    return max_pages


def page_cache_sync_ra(sys: System, task: Task, mapping: AddressSpace, ra: FileRaState,
                       index: int, req_count: int) -> int:
    """page_cache_sync_ra(): a cache miss at index; returns 0 or the charge's error.

    The model's reads are sequential from the start of the file, so only the first branch
    ("start of file, oversized read, or sequential cache miss") and the random-read
    fallback are reached.
    """
    if not ra.ra_pages:
        return do_page_cache_ra(sys, task, mapping, ra, index, 1, 0)  # force_page_cache_ra
    max_pages = ractl_max_pages(ra, req_count)
    prev_index = ra.prev_pos
    if not index or req_count > max_pages or index - prev_index <= 1:
        ra.start = index
        ra.size = get_init_ra_size(req_count, max_pages)
        ra.async_size = ra.size - req_count if ra.size > req_count else ra.size >> 1
    else:
        # Standalone, small random read: read as is (page_cache_prev_miss() history is
        # not looked up: the model's reads never land here with a cached history).
        return do_page_cache_ra(sys, task, mapping, ra, index, req_count, 0)
    ra.order = 0
    return page_cache_ra_order(sys, task, mapping, ra, ra.start)


def page_cache_async_ra(sys: System, task: Task, mapping: AddressSpace, ra: FileRaState,
                        head: int, nr: int, req_count: int) -> int:
    """page_cache_async_ra(): the read reached the PG_readahead folio at head (nr pages)."""
    mapping.ra_marks.discard(head)  # folio_clear_readahead()
    if not ra.ra_pages:
        return 0
    max_pages = ractl_max_pages(ra, req_count)
    # It's the expected callback index: ramp up sizes, push forward the window.
    expected = (ra.start + ra.size - ra.async_size) // nr * nr
    if head == expected:
        ra.start += ra.size
        ra.size = max(ra.size, get_next_ra_size(ra, max_pages))
        ra.async_size = ra.size
    else:
        # Hit a marked folio without valid readahead state (page_cache_next_miss()).
        start = head + 1
        while start < head + 1 + max_pages and start < mapping.i_size and mapping.slots[start] >= 0:
            start += 1
        if not start or start - head > max_pages:
            return 0
        ra.start = start
        ra.size = start - head + req_count
        ra.size = get_next_ra_size(ra, max_pages)
        ra.async_size = ra.size
    ra.order += 2
    # 6.18: the window ends on a boundary of the folios it will be cut into, so that the
    # next window starts aligned (a 2048-page window at 5888 becomes 5888..7679: one
    # folio of 256 pages and three of 512, then only 512s; measured with /proc/kpageflags)
    order = min(MAX_PAGECACHE_ORDER, ra.order, ilog2(ra.size))
    end = ra.start + ra.size
    aligned_end = end >> order << order
    if aligned_end > ra.start:
        ra.size -= end - aligned_end
    ra.async_size = ra.size
    return page_cache_ra_order(sys, task, mapping, ra, ra.start)


def page_cache_ra_order(sys: System, task: Task, mapping: AddressSpace, ra: FileRaState,
                        start: int) -> int:
    """page_cache_ra_order(): the window [ra.start, ra.start + ra.size) in aligned folios.

    The order is ra.order, at most MAX_PAGECACHE_ORDER and ilog2(ra.size); a folio whose
    index is not aligned to it takes the alignment's order, and none goes past the end of
    the window or of the file.  An index already cached (-EEXIST) or a failed charge
    ends the large folios; the rest of the window is read in single pages
    (do_page_cache_ra), which skip what is cached.
    """
    from . import filemap  # late: filemap calls this module from its read loop
    index = start
    limit = mapping.i_size - 1
    if index > limit:
        return 0
    mark = index + ra.size - ra.async_size
    limit = min(limit, index + ra.size - 1)
    new_order = min(MAX_PAGECACHE_ORDER, ra.order)
    new_order = min(new_order, ilog2(ra.size))
    ra.order = new_order
    err = 0
    if fastpath.ENABLED and new_order:  # folios with room for all of them, at once
        from .fastpath import window  # the fast path builds on filemap: a cycle
        index = window.ra_alloc_folios(sys, task, mapping, index, limit, new_order, mark)
    while index <= limit:
        order = ra_folio_order(index, limit, new_order)
        if order:
            err = filemap.ra_alloc_folio(sys, task, mapping, index, mark, order)
            if err:
                break
            index += 1 << order
            if fastpath.ENABLED:  # the reclaim this folio ran may have left room for the rest
                index = window.ra_alloc_folios(sys, task, mapping, index, limit, new_order, mark)
            continue
        # A run of single pages (order 0 until the next aligned index or the end),
        # added in lru_add batches: the first cached one is -EEXIST.
        n = 1
        while new_order == 0 and index + n <= limit and n < FOLIO_BATCH:
            n += 1
        cached = np.flatnonzero(mapping.slots[index:index + n] >= 0)
        if len(cached):
            n = int(cached[0])
            err = filemap.EEXIST
        if n:
            got = filemap.ra_alloc_run(sys, task, mapping, index, n, mark)
            if got:
                err = got
        if err:
            break
        index += n
    if not err:
        return 0
    if err != filemap.EEXIST:
        return err
    if ra.size > index - start:  # fallback
        return do_page_cache_ra(sys, task, mapping, ra, index, ra.size - (index - start),
                                ra.async_size)
    return 0


def do_page_cache_ra(sys: System, task: Task, mapping: AddressSpace, ra: FileRaState,
                     index: int, nr_to_read: int, lookahead_size: int) -> int:
    """do_page_cache_ra() -> page_cache_ra_unbounded(): single pages, cached ones skipped,
    the one at nr_to_read - lookahead_size marked PG_readahead; nothing past EOF."""
    from . import filemap  # late: filemap calls this module from its read loop
    end_index = mapping.i_size - 1
    if index > end_index:
        return 0
    nr_to_read = min(nr_to_read, end_index - index + 1)
    mark = index + nr_to_read - lookahead_size
    missing = np.flatnonzero(mapping.slots[index:index + nr_to_read] < 0) + index
    if not len(missing):
        return 0
    # runs of consecutive missing indices, cut into lru_add batches
    cuts = np.flatnonzero(np.diff(missing) != 1) + 1
    for run in np.split(missing, cuts):
        first, n = int(run[0]), len(run)
        for i in range(first, first + n, FOLIO_BATCH):
            err = filemap.ra_alloc_run(sys, task, mapping, i, min(FOLIO_BATCH, first + n - i), mark)
            if err:
                return err
    return 0
