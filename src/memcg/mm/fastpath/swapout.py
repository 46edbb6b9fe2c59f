"""One isolated batch of swap-backed pages through shrink_folio_list, page by page in
plain integers (mm/vmscan.c).

Anon and shmem reclaim into swap runs limit reclaim for nearly every fault: each
try_to_free_mem_cgroup_pages() call reclaims SWAP_CLUSTER_MAX pages in a handful of
small batches (a few to 32 pages each, one per priority).  For batches that small,
vmscan.shrink_inactive_list()'s whole-array classification costs more in NumPy's
per-call overhead than in work.  shrink_swapbacked() decides the same outcome for each
page of a batch in which every page is swap-backed, clean and evictable, the common
batch of an anon or shmem workload, and applies it with one write per array.  Pages go
to swap through the same vmscan.reclaim_pages(), and back onto the lists in the same
order: the result is the slow path's, step for step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

# vmscan imports this module for its seam; each needs the other only inside functions
from .. import vmscan
from ..memcontrol import PGACTIVATE, PGSTEAL, mem_cgroup_get_nr_swap_pages
from ..mmzone import PG_dirty, PG_mlocked, PG_referenced, PG_swapbacked, PG_young

if TYPE_CHECKING:
    from ...system import System
    from ..memcontrol import MemCgroup

# The batches this path takes: every page swap-backed, clean and not mlocked.
_CLASS_MASK = PG_swapbacked | PG_dirty | PG_mlocked
# The largest batch worth deciding in plain integers (an isolation of SWAP_CLUSTER_MAX
# pages; a large folio's tail may add a few).
MAX_BATCH = 64
_CLEAR = ~(PG_young | PG_referenced) & 0xFF


def shrink_swapbacked(sys: System, memcg: MemCgroup, pfns: np.ndarray, lru: int,
                      sc) -> int | None:
    """The rest of shrink_inactive_list() for an isolated batch of swap-backed pages:
    the pages evicted, or None (nothing done) when the batch is not of this class.

    mm/vmscan.c: folio_check_references() - young ptes and the referenced flag activate,
    young ptes alone mark the folio referenced and keep it; an unreferenced anon or
    shmem folio goes to swap (add_to_swap, pageout, __remove_mapping), or is activated
    when there is no swap to go to.
    """
    if len(pfns) > MAX_BATCH:
        return None
    mem = sys.mem
    flags = mem.flags[pfns].tolist()
    kinds = set(flags)
    for f in kinds:
        if f & _CLASS_MASK != PG_swapbacked:
            return None
    n = len(flags)
    every = range(n)
    if len(kinds) == 1:  # one kind of page (the common batch): one outcome for all
        f = flags[0]
        g = f & _CLEAR
        activate, keep, evict = [], [], []
        if not f & PG_young:
            evict = every
        elif f & PG_referenced:
            activate = every
        else:
            g |= PG_referenced
            keep = every
        new = g
    else:
        new = []
        activate = []
        keep = []
        evict = []
        for i, f in enumerate(flags):
            g = f & _CLEAR  # folio_referenced() clears the young bits, tests the flag
            if f & PG_young:
                if f & PG_referenced:
                    activate.append(i)  # FOLIOREF_ACTIVATE
                else:
                    g |= PG_referenced  # FOLIOREF_KEEP: one more trip around the list
                    keep.append(i)
            else:
                evict.append(i)  # FOLIOREF_RECLAIM
            new.append(g)
    # Anon and shmem go to swap, or back to the active list when there is none.
    if evict and not (sc.may_swap and mem_cgroup_get_nr_swap_pages(sys, memcg) > 0):
        activate = sorted([*activate, *evict])
        evict = []
    mem.flags[pfns] = new
    evicted = 0
    if evict:
        victims = _take(pfns, evict, n)
        freed = vmscan.reclaim_pages(sys, victims)  # pageout / __remove_mapping / free
        evicted = len(freed)
        if evicted < len(victims):
            # swap ran out part-way: the rest are activated
            back = set(np.setdiff1d(victims, freed, assume_unique=True).tolist())
            activate = sorted([*activate, *(i for i in evict if int(pfns[i]) in back)])
    sys.stats.mod(memcg.id, PGSTEAL, evicted)
    if activate:
        sys.stats.mod(memcg.id, PGACTIVATE, len(activate))
        vmscan._lru_move(sys, memcg, _take(pfns, activate, n), lru + 1)
    if keep:
        vmscan._lru_move(sys, memcg, _take(pfns, keep, n), lru)
    return evicted


def _take(pfns: np.ndarray, which, n: int) -> np.ndarray:
    """The pages at the positions `which` (in batch order) of a batch of n."""
    if len(which) == n:
        return pfns.copy()  # all of them: no index array
    return pfns[list(which)]
