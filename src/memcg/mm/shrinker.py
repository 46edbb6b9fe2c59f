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
# mm/shrinker.c: SHRINK_BATCH, the scan batch of a shrinker that sets none of its own
SHRINK_BATCH = 128
# include/linux/shrinker.h: the shrinker's objects are on memcg-aware list_lrus
SHRINKER_MEMCG_AWARE = 1 << 3


class Shrinker:
    """struct shrinker: count_objects(sys, shrinker, memcg) -> objects freeable, and
    scan_objects(sys, shrinker, memcg, nr_to_scan) -> objects freed; private_data is the
    cache's own (the superblock).  batch: objects per scan_objects() call (0:
    SHRINK_BATCH); nr_deferred: the scan work left over, per group for a memcg-aware
    shrinker (memcg->nodeinfo[nid]->shrinker_info->unit[]->nr_deferred; key None: the
    shrinker's own, for the root and global reclaim)."""

    def __init__(self, name: str, flags: int):
        self.name = name
        self.flags = flags
        self.seeks = DEFAULT_SEEKS
        self.batch = 0
        self.nr_deferred: dict[int | None, int] = {}
        self.count_objects: Callable | None = None
        self.scan_objects: Callable | None = None
        self.private_data = None


def shrinker_alloc(flags: int, name: str) -> Shrinker:
    """shrinker_alloc(): a shrinker the caller fills in before registering it."""
    return Shrinker(name, flags)


def shrinker_register(sys: System, shrinker: Shrinker) -> None:
    """shrinker_register(): onto shrinker_list, walked by every shrink_slab()."""
    sys.shrinkers.append(shrinker)


def _deferred_key(shrinker: Shrinker, memcg: MemCgroup | None) -> int | None:
    """Whose nr_deferred a scan uses (xchg_nr_deferred / add_nr_deferred)."""
    if memcg is not None and shrinker.flags & SHRINKER_MEMCG_AWARE and not memcg.is_root():
        return memcg.id
    return None


def do_shrink_slab(sys: System, shrinker: Shrinker, memcg: MemCgroup | None,
                   priority: int) -> int:
    """do_shrink_slab(): the number of objects freed.

    The scan target is (freeable >> priority) * 4 / seeks plus the work deferred by
    earlier calls (nr_deferred >> priority), at most twice the freeable objects, and
    the shrinker is called in batches of `batch` objects: a target below one batch is
    not scanned at all (unless it is at least every freeable object) but deferred to
    the next call.  So a superblock's dentries (batch 1024, fs/super.c alloc_super)
    are left alone by reclaim at high priorities: measured on 6.18, a 16M group making
    20000 directories on ext4 kept 7-11M of kernel memory (the dentries and inodes)
    and 5-9M of page cache at its limit."""
    freeable = shrinker.count_objects(sys, shrinker, memcg)
    if not freeable:
        return 0
    key = _deferred_key(shrinker, memcg)
    nr = shrinker.nr_deferred.pop(key, 0)          # xchg_nr_deferred()
    delta = (freeable >> priority) * 4 // shrinker.seeks
    total_scan = min((nr >> priority) + delta, 2 * freeable)
    batch_size = shrinker.batch or SHRINK_BATCH
    freed = scanned = 0
    while total_scan >= batch_size or total_scan >= freeable:
        nr_to_scan = min(batch_size, total_scan)
        freed += shrinker.scan_objects(sys, shrinker, memcg, nr_to_scan)
        total_scan -= nr_to_scan
        scanned += nr_to_scan
    # the new work not done is deferred, the old work done is taken off; at most
    # twice the freeable objects (add_nr_deferred)
    next_deferred = min(max(nr + delta - scanned, 0), 2 * freeable)
    if next_deferred:
        shrinker.nr_deferred[key] = shrinker.nr_deferred.get(key, 0) + next_deferred
    return freed


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
    while True:  # mm/vmscan.c drop_slab_node(): again while the pass frees something
        this = 0
        for shrinker in sys.shrinkers:
            nr = shrinker.count_objects(sys, shrinker, memcg)
            if nr:
                this += shrinker.scan_objects(sys, shrinker, memcg, nr)
        freed += this
        if not this:
            return freed
