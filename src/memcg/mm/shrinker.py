"""Shrinkers: caches that give objects back under memory pressure (mm/shrinker.c).

A cache allocates its shrinker (shrinker_alloc) with count and scan callbacks and puts
it on the machine's shrinker list (shrinker_register): each superblock does at mount,
for its dentries and inodes (fs/super.c: alloc_super + sget_fc).  Reclaim walks the
registered shrinkers in registration order (shrink_slab -> do_shrink_slab).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .memcontrol import MemCgroup
    from ..system import System

# include/linux/shrinker.h: DEFAULT_SEEKS
DEFAULT_SEEKS = 2
# include/linux/shrinker.h: the shrinker's objects are on memcg-aware list_lrus
SHRINKER_MEMCG_AWARE = 1 << 3


class Shrinker:
    """struct shrinker: count_objects(sys, shrinker, memcg) -> objects freeable, and
    scan_objects(sys, shrinker, memcg, nr_to_scan) -> objects freed; private_data is the
    cache's own (the superblock)."""

    def __init__(self, name: str, flags: int):
        self.name = name
        self.flags = flags
        self.seeks = DEFAULT_SEEKS
        self.count_objects: Callable | None = None
        self.scan_objects: Callable | None = None
        self.private_data = None


def shrinker_alloc(flags: int, name: str) -> Shrinker:
    """shrinker_alloc(): a shrinker the caller fills in before registering it."""
    return Shrinker(name, flags)


def shrinker_register(sys: System, shrinker: Shrinker) -> None:
    """shrinker_register(): onto shrinker_list, walked by every shrink_slab()."""
    sys.shrinkers.append(shrinker)


def do_shrink_slab(sys: System, shrinker: Shrinker, memcg: MemCgroup | None,
                   priority: int) -> int:
    """do_shrink_slab(): scan (freeable >> priority) * 4 / seeks objects, at most twice
    the freeable ones; the number freed."""
    freeable = shrinker.count_objects(sys, shrinker, memcg)
    if not freeable:
        return 0
    delta = (freeable >> priority) * 4 // shrinker.seeks
    total_scan = min(delta, 2 * freeable)
    if not total_scan:
        return 0
    return shrinker.scan_objects(sys, shrinker, memcg, total_scan)


def shrink_slab(sys: System, memcg: MemCgroup | None, priority: int, global_reclaim: bool) -> int:
    """shrink_slab(): the registered shrinkers for one group of a reclaim walk; objects freed.

    6.18 (4.0+): memcg-aware, for online groups only (shrink_slab_memcg); a removed
    group's objects are reached through its parent once reparented, or not at all.  The
    pages freed do not count as reclaimed for a group's limit reclaim (the kernel cannot
    tell whose they were); the group's usage drops when its stock drains.
    3.8: slab is shrunk by global reclaim only, whoever owns the objects.
    """
    if sys.semantics == "3.8":
        if not global_reclaim:
            return 0
    elif memcg is not None and not memcg.is_root() and not memcg.online:
        return 0
    return sum(do_shrink_slab(sys, shrinker, memcg, priority) for shrinker in sys.shrinkers)


def drop_slab_memcg(sys: System, memcg: MemCgroup) -> int:
    """Free everything of memcg's that every shrinker holds (the "reclaim" kmemcg id
    policy), as drop_slab() does for the whole machine; objects freed."""
    freed = 0
    for shrinker in sys.shrinkers:
        nr = shrinker.count_objects(sys, shrinker, memcg)
        freed += shrinker.scan_objects(sys, shrinker, memcg, nr)
    return freed
