"""Reads of many whole batches at once: with room in the group, or streaming through it.

filemap_read() (mm/filemap.c) brings a file in batch by batch, each charged on its own
(a charge may reclaim between them).  Where nothing can happen between the batches the
fast path takes a run of them at once: with room for all of them in the group
(filemap_read_bulk), or as whole reclaim cycles of a read streaming through a full group
(stream.StreamReclaim).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import page_alloc, swap
from ..filemap import FILEMAP_BATCH, SHADOW, AddressSpace
from ..memcontrol import NR_FILE_PAGES, WORKINGSET_REFAULT_FILE, hierarchy_margin
from ..mmzone import LRU_INACTIVE_FILE
from .stream import StreamReclaim

if TYPE_CHECKING:
    from ...system import System
    from ...tasks import Task


class FastRead:
    """The fast paths of one filemap_read(): asked before each batch, they take a run of
    whole batches from there, or leave the batch to the slow path and watch it."""

    def __init__(self, sys: System, task: Task, mapping: AddressSpace, nr: int):
        self.sys, self.task, self.mapping, self.nr = sys, task, mapping, nr
        self.stream = StreamReclaim(sys, task, mapping)
        self.watching = False  # the stream detector watches the batch the slow path runs

    def take(self, start: int) -> int:
        """Pages read from start on (whole batches), or 0: the slow path reads the batch."""
        if self.watching:
            self.stream.end()
            self.watching = False
        sys, task, mapping, nr = self.sys, self.task, self.mapping, self.nr
        skipped = filemap_read_bulk(sys, task, mapping, start, nr)
        if skipped:
            return skipped
        new = self.stream.begin(start, nr)
        if new != start:
            return new - start
        self.watching = True
        return 0

    def close(self) -> None:
        """The read is over (or failed): tracing stops."""
        self.stream.close()


def filemap_read_bulk(sys: System, task: Task, mapping: AddressSpace, start: int,
                      nr: int) -> int:
    """Run many whole read batches at once while nothing can happen between them.

    Conditions (each batch would otherwise charge, insert and mark its pages alone):
    every page of the batches is missing from the cache; free pages stay above the low
    watermark after all of them (mm/page_alloc.c: no kswapd work, and the free list hands
    out the same frames in the same order); every level of the group has room for all
    of them plus a charge batch (mm/memcontrol.c: try_charge_memcg never fails, so the
    charges equal one bulk charge_pages()); no usage threshold on the group or an
    ancestor and no soft-limit excess to re-key (mm/memcontrol-v1.c: the ratelimited
    checks, still made once per batch through the per-batch commits, find nothing to do
    whatever the usage).  Returns the pages read, 0 when fewer than two batches qualify.
    """
    memcg = task.memcg
    limit = (nr - start) // FILEMAP_BATCH
    limit = min(limit, (sys.mem.nr_free - sys.wmark_low) // FILEMAP_BATCH)
    if not memcg.is_root():
        limit = min(limit, hierarchy_margin(memcg) // FILEMAP_BATCH - 1)
    if limit < 2 or task.oom_victim:
        return 0
    for m in memcg.ancestors():
        if m.thresholds or m.memsw_thresholds or m.id in sys.soft_limit_tree or \
                m.soft_limit < m.memory.usage + (limit + 1) * FILEMAP_BATCH:
            return 0
    slots = mapping.slots[start:start + limit * FILEMAP_BATCH]
    present = np.flatnonzero(slots >= 0)
    if len(present):
        limit = int(present[0]) // FILEMAP_BATCH
        if limit < 2:
            return 0
    n = limit * FILEMAP_BATCH
    idx = np.arange(start, start + n, dtype=np.int64)
    refaults = int(np.count_nonzero(mapping.slots[idx] == SHADOW))
    pfns, ret = page_alloc.alloc_and_charge(sys, task, memcg, n, user_fault=False)
    assert len(pfns) == n and not ret, "bulk read charge failed despite the margin"
    mapping.slots[idx] = pfns
    swap.folio_add_lru(sys, task, memcg, mapping, idx, pfns, 0, LRU_INACTIVE_FILE,
                      (NR_FILE_PAGES,), events_batch=FILEMAP_BATCH)
    if refaults:
        sys.stats.mod(memcg.id, WORKINGSET_REFAULT_FILE, refaults)
    swap.folio_mark_accessed(sys, pfns)
    return n

