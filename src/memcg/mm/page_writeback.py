"""Dirty pages and their writeback (mm/page-writeback.c, fs/fs-writeback.c).

Writes dirty page-cache pages (NR_FILE_DIRTY); the flusher cleans the inodes dirty for
longer than the expire interval, and the oldest ones while dirty pages exceed the
background ratio.  Dirty pages reclaim meets are written back by it too and counted
clean when their writeback ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import sched
from .memcontrol import NR_FILE_DIRTY
from .mmzone import PG_dirty

if TYPE_CHECKING:
    from ..system import System

# mm/page-writeback.c: dirty_expire_interval (3000 centisecs) and dirty_background_ratio (10)
DIRTY_EXPIRE_TICKS = 30  # one tick is one second of simulated time
DIRTY_BACKGROUND_RATIO = 10
# mm/page-writeback.c: dirty_writeback_interval is 500 centisecs; the model's flusher
# wakes every tick
DIRTY_WRITEBACK_TICKS = 1


def folio_mark_dirty(sys: System, pfns: np.ndarray) -> None:
    """folio_mark_dirty(): count newly dirtied pages in NR_FILE_DIRTY."""
    clean = pfns[(sys.mem.flags[pfns] & PG_dirty) == 0]
    if len(clean):
        sys.mem.flags[clean] |= PG_dirty
        sys.stats.mod_many(sys.mem.memcg[clean], NR_FILE_DIRTY, 1)


def folio_end_writeback(sys: System, pfns: np.ndarray) -> None:
    """folio_end_writeback() for pages vmscan sent to the flusher (already cleaned)."""
    sys.stats.mod_many(sys.mem.memcg[pfns], NR_FILE_DIRTY, -1)


def wb_workfn(sys: System) -> None:
    """fs/fs-writeback.c: wb_workfn(): the flusher writes back, then re-arms itself for
    the next dirty_writeback_interval (the timer `sys.wb_dwork`, armed at boot)."""
    wb_writeback(sys)
    sched.mod_timer(sys.clock, sys.wb_dwork, sys.clock.now + DIRTY_WRITEBACK_TICKS)


def wakeup_flusher_threads(sys: System) -> None:
    """fs/fs-writeback.c: wakeup_flusher_threads(WB_REASON_VMSCAN), as reclaim calls it
    when every folio it took was dirty and not under writeback (mm/vmscan.c:
    shrink_inactive_list, stat.nr_unqueued_dirty == nr_taken).  wb_start_writeback()
    sets WB_start_all, and wb_check_start_all() writes back get_nr_dirty_pages(): every
    dirty page of every inode, expired or not.  The model's writeback completes at once.

    Measured on 6.18 (a fresh ext4 without a journal, as the machine's root file system
    is; a 16M group making 20000 directories): dirty 8.5M at the limit's first hit
    (2900 directories), 100K a moment later with 6.8M under writeback."""
    wb_writeback(sys, start_all=True)


def wb_writeback(sys: System, start_all: bool = False) -> None:
    """fs/fs-writeback.c: wb_writeback(): write back inodes dirty for longer than the
    expire interval, and the oldest ones while dirty pages exceed the background ratio;
    every dirty inode when `start_all` (wb_check_start_all)."""
    dirty_total = sys.stats.total(NR_FILE_DIRTY)
    if not dirty_total:
        return
    limit = (sys.mem.nr_free + sys.stats.total(0)) * DIRTY_BACKGROUND_RATIO // 100
    files = sorted((f for f in sys.files.values() if f.dirtied_when is not None),
                   key=lambda f: f.dirtied_when)
    for f in files:
        expired = sys.clock.now - f.dirtied_when >= DIRTY_EXPIRE_TICKS
        if not expired and dirty_total <= limit and not start_all:
            continue
        s = f.slots
        pfns = s[s >= 0]
        pfns = pfns[(sys.mem.flags[pfns] & PG_dirty) != 0]
        sys.mem.flags[pfns] &= np.uint8(~PG_dirty & 0xFF)
        sys.stats.mod_many(sys.mem.memcg[pfns], NR_FILE_DIRTY, -1)
        dirty_total -= len(pfns)
        f.dirtied_when = None
