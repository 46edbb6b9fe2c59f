"""Swap space and the per-entry memcg record (mm/swapfile.c, mm/swap_cgroup.c).

With cgroup v1 swap accounting (memsw), a page swapped out stops counting in
memory.usage but its memsw charge stays, recorded against the memcg id in swap_cgroup,
until the swap entry is freed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from . import memcontrol
from .memcontrol import MEMCG_SWAP

if TYPE_CHECKING:
    from ..system import System


class SwapInfo:
    """One swap device: free slots, swap_cgroup (the memcg id of each used slot) and
    swap_map (how many page-table entries and caches refer to each used slot:
    include/linux/swap.h, si->swap_map - an anonymous page swapped out while shared
    copy-on-write after a fork is one entry in every mapper's page table)."""

    def __init__(self, nr_pages: int):
        self.nr_pages = nr_pages
        self.swap_cgroup = np.zeros(max(nr_pages, 1), np.uint16)
        self.swap_map = np.zeros(max(nr_pages, 1), np.uint16)
        self._free = np.arange(nr_pages - 1, -1, -1, dtype=np.int64)
        self.nr_free = nr_pages

    @property
    def nr_used(self) -> int:
        return self.nr_pages - self.nr_free

    def alloc(self, n: int) -> np.ndarray:
        """get_swap_pages(): up to n free slots."""
        n = min(n, self.nr_free)
        top = self.nr_free
        slots = self._free[top - n:top][::-1].copy()
        self.nr_free -= n
        self.swap_map[slots] = 1
        return slots

    def free(self, slots: np.ndarray) -> None:
        """swap_free(): the slots return; the caller uncharges memsw from swap_cgroup first."""
        n = len(slots)
        if not n:
            return
        self.swap_cgroup[slots] = 0
        self.swap_map[slots] = 0
        self._free[self.nr_free:self.nr_free + n] = slots
        self.nr_free += n


def swap_duplicate(sys: System, slots: np.ndarray) -> None:
    """swap_duplicate(): one more reference to each slot (copy_nonpresent_pte() at fork);
    slots holds each one once."""
    sys.swap.swap_map[slots] += 1


def swap_free(sys: System, slots: np.ndarray) -> None:
    """swap_free() -> swap_entry_free() -> mem_cgroup_uncharge_swap(): one reference to
    each slot (each given once) goes; for the slots left with none memsw goes back to the
    memcg recorded in swap_cgroup, then the slots are free."""
    swap_map = sys.swap.swap_map
    swap_map[slots] -= 1
    slots = slots[swap_map[slots] == 0]
    ids = sys.swap.swap_cgroup[slots]
    uids, counts = np.unique(ids, return_counts=True)
    for memcg_id, n in zip(uids.tolist(), counts.tolist()):
        memcg = sys.memcgs.get(memcg_id)
        if memcg is None:
            continue
        if not memcg.is_root():
            memcg.memsw.uncharge(n)
            if sys.cgroup_dfl:
                memcg.swap.uncharge(n)  # !do_memsw_account(): memcg->swap
        sys.stats.mod(memcg_id, MEMCG_SWAP, -n)
    sys.swap.free(slots)
    memcontrol.maybe_free_dying(sys)


def swp_entry(slots: np.ndarray) -> np.ndarray:
    """Encode swap slots in an address space's slot array (values <= -2)."""
    return -(slots.astype(np.int64) + 2)


def swp_offset(entries: np.ndarray) -> np.ndarray:
    return -(entries.astype(np.int64)) - 2
