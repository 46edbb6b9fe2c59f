"""list_lru: LRU lists of reclaimable kernel objects, one list per group (mm/list_lru.c).

Unused dentries and inodes wait on their superblock's list_lru until a shrinker frees
them.  A memcg-aware list_lru (4.0+) keeps one list per group that owns objects on it,
in an array indexed by the group's kmemcg_id (4.0-5.17; an xarray keyed by the same
id since 5.18) plus a list for objects nobody is charged for (the root's, id -1).
The arrays are as long as memcg_nr_cache_ids and grow with it (slab.py).

At a group's removal under the "reparent" policy its lists are spliced onto the
parent's (memcg_drain_all_list_lrus, 4.0-5.17; memcg_reparent_list_lrus, 5.18+); the
objects stay charged where they were.  The superblock shrinkers (super_cache_scan,
registered at mount: shrinker.py) walk one group's list at a time during that group's
reclaim (shrink_slab).
"""

from __future__ import annotations

from itertools import islice
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .memcontrol import MemCgroup
    from ..system import System


class ListLruOne:
    """struct list_lru_one: the objects of one group, oldest first."""

    __slots__ = ("items",)

    def __init__(self):
        self.items: dict = {}  # insertion-ordered: list_add_tail, walked from the head

    @property
    def nr_items(self) -> int:
        return len(self.items)


class ListLru:
    """struct list_lru (one node): a root list and per-group lists by kmemcg_id."""

    def __init__(self, sys: System, name: str, memcg_aware: bool = True):
        self.name = name
        self.memcg_aware = memcg_aware
        self.lru = ListLruOne()
        self.memcg_lrus: list = []  # list_lru_memcg: kmemcg_id -> ListLruOne or None
        if memcg_aware:
            self.memcg_lrus = [None] * sys.slab.ids.nr_cache_ids
            sys.list_lrus.append(self)  # memcg_list_lru_register()

    def nr_items(self) -> int:
        return self.lru.nr_items + sum(one.nr_items for one in self.memcg_lrus if one)


def list_lru_from_memcg_idx(lru: ListLru, idx: int, create: bool = False) -> ListLruOne | None:
    """list_lru_from_memcg_idx(): the list of kmemcg_id idx (the root list for -1)."""
    if idx < 0 or not lru.memcg_aware:
        return lru.lru
    one = lru.memcg_lrus[idx]
    if one is None and create:
        one = lru.memcg_lrus[idx] = ListLruOne()
    return one


def list_lru_add(lru: ListLru, item, memcg: MemCgroup | None) -> bool:
    """list_lru_add(): put item at the tail of memcg's list (False if already on one)."""
    one = list_lru_from_memcg_idx(lru, memcg.kmemcg_id if memcg is not None else -1, create=True)
    if item in one.items:
        return False
    one.items[item] = None
    return True


def list_lru_del(lru: ListLru, item, memcg: MemCgroup | None) -> bool:
    """list_lru_del(): take item off memcg's list (False if it was not on it)."""
    one = list_lru_from_memcg_idx(lru, memcg.kmemcg_id if memcg is not None else -1)
    if one is None or item not in one.items:
        return False
    del one.items[item]
    return True


def list_lru_count_one(lru: ListLru, memcg: MemCgroup | None) -> int:
    """list_lru_shrink_count() for one group."""
    one = list_lru_from_memcg_idx(lru, memcg.kmemcg_id if memcg is not None else -1)
    return one.nr_items if one is not None else 0


def list_lru_walk_one(lru: ListLru, memcg: MemCgroup | None, nr_to_walk: int,
                      isolate: Callable) -> int:
    """list_lru_walk_one(): isolate up to nr_to_walk items from the head; number freed.

    isolate(item) frees the item (LRU_REMOVED); the item is off the list before it runs.
    """
    one = list_lru_from_memcg_idx(lru, memcg.kmemcg_id if memcg is not None else -1)
    if one is None:
        return 0
    freed = 0
    for item in list(islice(one.items, nr_to_walk)):
        if item not in one.items:
            continue
        del one.items[item]
        isolate(item)
        freed += 1
    return freed


def memcg_update_list_lru(lru: ListLru, new_size: int) -> None:
    """memcg_update_list_lru(): the per-group array to new_size (existing lists kept)."""
    lru.memcg_lrus.extend([None] * (new_size - len(lru.memcg_lrus)))


def memcg_update_all_list_lrus(sys: System, new_size: int) -> None:
    """memcg_update_all_list_lrus(): every memcg-aware list_lru to the new array size."""
    for lru in sys.list_lrus:
        memcg_update_list_lru(lru, new_size)


def memcg_drain_list_lru(lru: ListLru, src_idx: int, dst: MemCgroup) -> None:
    """memcg_drain_list_lru_node(): splice the src list onto dst's, and forget src's."""
    if not lru.memcg_aware or src_idx < 0 or lru.memcg_lrus[src_idx] is None:
        return
    src = lru.memcg_lrus[src_idx]
    lru.memcg_lrus[src_idx] = None
    if src.nr_items:
        list_lru_from_memcg_idx(lru, dst.kmemcg_id, create=True).items.update(src.items)


def memcg_drain_all_list_lrus(sys: System, src_idx: int, dst: MemCgroup) -> None:
    """memcg_drain_all_list_lrus(): a removed group's lists go to its parent."""
    for lru in sys.list_lrus:
        memcg_drain_list_lru(lru, src_idx, dst)

