"""File systems: the dentries and inodes that mkdir and file creation allocate.

Two superblocks, as on the reference machine: "tmpfs" (mm/shmem.c) and "ext4" (the
root file system, fs/ext4).  Creating a directory or a file allocates a dentry
(fs/dcache.c: d_alloc) and an inode (alloc_inode_sb) from accounted caches, charged
to the creating task's group, plus small accounted allocations the model does not
name (tmpfs: the directory's offset map; ext4: journal and extent bookkeeping).  How
much all of it costs is the calibration profile's kmem_{mkdir,file}_bytes_{tmpfs,ext4},
measured on the real kernel (tools/measure_kmem.py, docs/kmem.md); the named objects
are the kernel's cache sizes and the rest is charged as small kmalloc()s.

ext4 directories and inodes also live in blocks of the block device: a new directory
gets a directory block, and every EXT4_INODES_PER_BLOCK-th inode starts a new
inode-table block.  Each new block is a dirty page of the block device's page cache
(charged to the group as cache) with a buffer_head (kmem).

The new name also goes into the task's directory (ext4_namei.py): an htree whose leaf
blocks, added as it grows, are pages of the block device charged to the group.

tmpfs dentries are pinned for as long as the file exists: tmpfs has nowhere else to
keep them.  ext4's unused dentries wait on the superblock's memcg-aware dentry list_lru
until the superblock's shrinker, registered at mount, frees them (super_cache_scan);
a freed dentry's inode then waits on the inode list_lru for a later scan.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..kernel import PAGE_SIZE
from ..mm import page_alloc, shrinker, swap
from ..mm.filemap import AddressSpace
from ..mm.list_lru import ListLru, list_lru_add, list_lru_count_one, list_lru_walk_one
from ..mm.memcontrol import NR_FILE_DIRTY, NR_FILE_PAGES, OBJCG_POINTER_SIZE, WORKINGSET_REFAULT_FILE
from ..mm.mmzone import LRU_ACTIVE_FILE, PG_dirty
from ..mm.slab import SlabObject, charge_failed, kmem_cache_alloc, kmem_cache_free
from . import ext4_namei

if TYPE_CHECKING:
    from ..mm.memcontrol import MemCgroup
    from ..system import System
    from ..tasks import Task

# fs/ext4: 4 KiB blocks holding 256-byte inodes (mke2fs's default inode_size)
EXT4_INODES_PER_BLOCK = PAGE_SIZE // 256

# fs type -> (inode cache, dentries pinned, has block-device metadata)
FS_TYPES = {
    "tmpfs": ("shmem_inode_cache", True, False),  # mm/shmem.c: shmem_mknod() keeps a dget()
    "ext4": ("ext4_inode_cache", False, True),
}


@dataclass(eq=False)
class Inode:
    """A directory or file: its dentry, inode and other accounted objects (the dentry
    first).  dentry_killed: the dentry is gone and the inode waits on the inode LRU."""

    objs: list = field(default_factory=list)
    dentry_killed: bool = False


class SuperBlock:
    """struct super_block of one mounted file system, with its dentry list_lru and the
    shrinker that prunes it (alloc_super(); registered by kern_mount)."""

    def __init__(self, sys: System, fs_type: str):
        self.name = fs_type
        self.inode_cache, self.pinned, self.metadata = FS_TYPES[fs_type]
        self.s_shrink = shrinker.shrinker_alloc(shrinker.SHRINKER_MEMCG_AWARE, f"sb-{fs_type}")
        self.s_shrink.scan_objects = super_cache_scan
        self.s_shrink.batch = 1024  # fs/super.c: alloc_super()
        self.s_shrink.count_objects = super_cache_count
        self.s_shrink.private_data = self
        self.s_dentry_lru = ListLru(sys, f"{fs_type}-dentries")
        self.s_inode_lru = ListLru(sys, f"{fs_type}-inodes")
        self.nr_inodes = 0
        self.carry = 0.0  # the fractional bytes of the unnamed allocations
        self.bdev: AddressSpace | None = None
        self.bdev_pages = 0  # metadata blocks in use
        self.dirs: dict[int, ext4_namei.Ext4Dir] = {}  # pid -> the directory it fills
        if self.metadata:
            self.bdev = AddressSpace(sys, f"[{fs_type} metadata]")
            sys.files[self.bdev.name] = self.bdev  # so that the flusher writes it back


def kern_mount(sys: System, fs_type: str) -> SuperBlock:
    """kern_mount(): a new superblock of fs_type, its shrinker registered (sget_fc ->
    shrinker_register)."""
    sb = SuperBlock(sys, fs_type)
    shrinker.shrinker_register(sys, sb.s_shrink)
    sys.super_blocks[fs_type] = sb
    return sb


def get_fs_type(sys: System, fs_type: str) -> SuperBlock:
    """The mounted superblock of fs_type ("ext4" or "tmpfs"); ValueError if none is."""
    sb = sys.super_blocks.get(fs_type)
    if sb is None:
        raise ValueError(f"fs: expected one of {', '.join(sys.super_blocks)}, got {fs_type!r}")
    return sb


def obj_memcg(obj: SlabObject) -> MemCgroup | None:
    """mem_cgroup_from_slab_obj(): who an object is charged to now (None: nobody)."""
    if obj.objcg is not None:
        return obj.objcg.memcg
    if not obj.cache.is_root_cache():
        return obj.cache.memcg
    return None


def named_bytes(sys: System, sb: SuperBlock, is_dir: bool) -> int:
    """Bytes of the named objects behind one new inode, as the charge counts them."""
    caches = sys.slab.caches

    def full(name):
        return caches[name].object_size + OBJCG_POINTER_SIZE

    n = full("dentry") + full(sb.inode_cache)
    if sb.metadata:
        bh = full("buffer_head")
        n += bh / EXT4_INODES_PER_BLOCK + (bh if is_dir else 0)
    return n


def unnamed_bytes(sys: System, sb: SuperBlock, is_dir: bool) -> int:
    """This inode's share of the unnamed allocations (profile total - named objects)."""
    key = f"kmem_{'mkdir' if is_dir else 'file'}_bytes_{sb.name}"
    sb.carry += max(0.0, float(sys.profile[key]) - named_bytes(sys, sb, is_dir))
    n = int(sb.carry)
    sb.carry -= n
    return n


def bdev_add_page(sys: System, task: Task, sb: SuperBlock, index: int, refault: bool = False) -> int:
    """bdev_getblk() of a block not in the cache: a new page of the block device's cache
    at index, charged to the task's group, dirty (the caller writes to it), on the active
    file list; `refault`: its shadow entry was there (workingset_refault).

    The page goes on the active file list: fs/buffer.c bdev_getblk() -> __getblk_slow()
    creates the folio in grow_dev_folio() with FGP_ACCESSED (PG_referenced), then finds
    the buffer again through __find_get_block() -> __find_get_block_slow(), whose
    __filemap_get_folio(..., FGP_ACCESSED) marks the referenced folio accessed a second
    time, which activates it and clears PG_referenced (mm/swap.c: folio_mark_accessed).  Measured on 6.18: after
    20000 mkdirs every page of the group's cache is active_file."""
    memcg = task.memcg
    mapping = sb.bdev
    pfns, ret = page_alloc.alloc_and_charge(sys, task, memcg, 1, user_fault=False)
    if not len(pfns):
        return ret or -errno.ENOMEM
    idx = np.array([index], dtype=np.int64)
    mapping.ensure(index + 1)
    mapping.slots[idx] = pfns
    swap.folio_add_lru(sys, task, memcg, mapping, idx, pfns, PG_dirty, LRU_ACTIVE_FILE,
                       (NR_FILE_PAGES, NR_FILE_DIRTY))
    if refault:
        sys.stats.mod(memcg.id, WORKINGSET_REFAULT_FILE, 1)
    if mapping.dirtied_when is None:
        mapping.dirtied_when = sys.clock.now
    return 0


def bdev_new_block(sys: System, task: Task, sb: SuperBlock, inode: Inode) -> int:
    """sb_getblk() of a new metadata block: a dirty page-cache page (bdev_add_page) and
    its buffer_head, kept with the inode (freed with it)."""
    ret = bdev_add_page(sys, task, sb, sb.bdev_pages)
    if ret:
        return ret
    sb.bdev_pages += 1
    bh = kmem_cache_alloc(sys, "buffer_head", task)  # folio_alloc_buffers(), charged
    if charge_failed(bh):
        return bh
    inode.objs.append(bh)
    return 0


def new_inode(sys: System, task: Task, sb: SuperBlock, is_dir: bool) -> Inode | int:
    """d_alloc() + the file system's new inode (+ its blocks): the object, or the failure."""
    inode = Inode()
    steps = [("dentry", 1), (sb.inode_cache, 1)]
    extra = unnamed_bytes(sys, sb, is_dir)
    if extra:
        steps.append(("kmalloc-cg", extra))
    for name, count in steps:
        obj = kmem_cache_alloc(sys, name, task, count)
        if charge_failed(obj):
            free_inode(sys, inode)
            return obj
        inode.objs.append(obj)
    if sb.metadata:
        blocks = int(is_dir) + int(sb.nr_inodes % EXT4_INODES_PER_BLOCK == 0)
        for _ in range(blocks):
            ret = bdev_new_block(sys, task, sb, inode)
            if ret:
                free_inode(sys, inode)
                return ret
        # the entry in the task's directory (the real backend's: one per task)
        d = sb.dirs.setdefault(task.pid, ext4_namei.Ext4Dir())
        ret = ext4_namei.ext4_add_entry(sys, task, sb, d, f"{'d' if is_dir else 'f'}{d.nr_names}")
        if ret:
            free_inode(sys, inode)
            return ret
    sb.nr_inodes += 1
    if not sb.pinned:
        # dput() of a fresh, unused dentry: onto the LRU of the group that owns it
        list_lru_add(sb.s_dentry_lru, inode, obj_memcg(inode.objs[0]))
    return inode


def free_inode(sys: System, inode: Inode) -> None:
    """__dentry_kill() + evict(): every object of the inode goes back to its cache."""
    cpu = sys.cpu
    for obj in inode.objs:
        kmem_cache_free(sys, obj, cpu)
    inode.objs.clear()


def super_cache_count(sys: System, shrink: shrinker.Shrinker, memcg: MemCgroup | None) -> int:
    """super_cache_count(): one group's unused dentries and unused inodes."""
    sb = shrink.private_data
    return list_lru_count_one(sb.s_dentry_lru, memcg) + list_lru_count_one(sb.s_inode_lru, memcg)


def dentry_kill(sys: System, sb: SuperBlock, inode: Inode) -> None:
    """__dentry_kill() of an unused dentry: the dentry is freed and its inode, still
    linked, goes onto the inode LRU (fs/inode.c: iput_final -> __inode_add_lru), where a
    later pass of the shrinker finds it: the dentry pinned it until now."""
    kmem_cache_free(sys, inode.objs.pop(0), sys.cpu)
    inode.dentry_killed = True
    if inode.objs:
        list_lru_add(sb.s_inode_lru, inode, obj_memcg(inode.objs[0]))


def super_cache_scan(sys: System, shrink: shrinker.Shrinker, memcg: MemCgroup | None,
                     nr_to_scan: int) -> int:
    """super_cache_scan(): the scan split between one group's dentry and inode lists in
    proportion to their sizes, at least one object each: prune_dcache_sb first (the
    dentries pin the inodes), then prune_icache_sb (evict).  Dirty inodes are not
    waited for."""
    sb = shrink.private_data
    dentries = list_lru_count_one(sb.s_dentry_lru, memcg)
    inodes = list_lru_count_one(sb.s_inode_lru, memcg)
    total_objects = dentries + inodes + 1
    # mult_frac(sc->nr_to_scan, dentries, total_objects)
    dentries = nr_to_scan * dentries // total_objects
    inodes = nr_to_scan * inodes // total_objects
    freed = list_lru_walk_one(sb.s_dentry_lru, memcg, dentries + 1,
                              lambda inode: dentry_kill(sys, sb, inode))
    freed += list_lru_walk_one(sb.s_inode_lru, memcg, inodes + 1,
                               lambda inode: free_inode(sys, inode))
    return freed


def vfs_create_many(sys: System, task: Task, fs_type: str, n: int, is_dir: bool) -> int:
    """mkdir() or creat() n times in the task's group; the number made before a failure.

    Raises OSError(ENOMEM) when a charge fails (ENOSPC is not modelled: disks are big).
    """
    sb = get_fs_type(sys, fs_type)
    made = 0
    prev, sys.current = sys.current, task
    try:
        for _ in range(n):
            ret = new_inode(sys, task, sb, is_dir)
            if charge_failed(ret):
                raise OSError(errno.ENOMEM, "Cannot allocate memory")
            made += 1
            if task.oom_victim:
                break
    finally:
        sys.current = prev
    return made
