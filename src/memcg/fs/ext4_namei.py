"""ext4 directory entries: the blocks of the directory a name is added to (fs/ext4/namei.c).

mkdir and creat add an entry to the parent directory (ext4_add_entry).  A directory
starts with one block; when it is full it becomes an htree (make_indexed_dir: block 0
becomes the index root and the entries move to two new leaf blocks, split at the median
hash), and a full leaf is split in two the same way (ext4_dx_add_entry -> do_split,
the upper half of the hashes going to a new block appended to the directory:
ext4_append).  Each insertion reads the leaf its name hashes to (ext4_read_dirblock ->
ext4_bread -> fs/buffer.c bdev_getblk, which marks the page accessed) and dirties it.
A leaf block whose page reclaim took is read back from the disk: a new page of the
block device's page cache charged to the task's group, and a refault where its shadow
entry is still there (mm/filemap.c: filemap_add_folio -> workingset_refault).

Measured on 6.18 (a fresh ext4, a 16M group making 20000 directories d0..d19999 in
one directory): pgpgin 21393 - 21544 against the model's 21250 without directory
blocks (one directory block each and an inode-table block per 16 inodes), so 150-300
pages more, and workingset_refault_file 7 - 218 in twenty runs, never 0.  A trace of
the block device's page cache (filemap:mm_filemap_add_to_page_cache) showed what
refaults: in four runs every page the loop read back after its group's reclaim had
evicted it was a leaf of this directory (7, 84, 33, 103: the runs' refaults exactly),
none an inode-table block or a bitmap; the directory had 126 leaves at the end.

An entry takes EXT4_DIR_REC_LEN(name length) bytes: 12 for names of up to 4
characters, 16 for 5 to 8; with metadata_csum (mke2fs's default) a leaf ends in a
12-byte ext4_dir_entry_tail, so it holds 340 or 255 of them, the first, linear block
two fewer after "." and "..".  Measured on a fresh ext4: 1000 files or directories in
one directory cost 3 blocks of it (cache 270336 bytes for 1000 empty files: 63
inode-table blocks and 3; 4366336 for 1000 directories: 1000 + 63 + 3).  The
name hash is ext4's half-MD4 with the file system's random seed; the model uses CRC-32
of the name, as evenly spread and, like the seed, unrelated to the name's order.  The
directory itself (its first block) is made outside the group, as the real backend
makes it; the blocks it gains are the group's.
"""

from __future__ import annotations

import bisect
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..mm import page_writeback, swap
from ..mm.filemap import SHADOW
from . import buffer

if TYPE_CHECKING:
    from ..system import System
    from ..tasks import Task
    from .dcache import SuperBlock

# a leaf block's room for entries: 4096 bytes less the 12-byte struct
# ext4_dir_entry_tail (metadata_csum)
DX_LEAF_BYTES = 4096 - 12
# the first block before make_indexed_dir: "." and ".." take 12 bytes each
LINEAR_BYTES = DX_LEAF_BYTES - 24


def ext4_dir_rec_len(name_len: int) -> int:
    """fs/ext4/ext4.h: EXT4_DIR_REC_LEN(): 8 bytes of header and the name, to 4 bytes."""
    return (name_len + 8 + 3) & ~3


@dataclass(eq=False)
class Ext4Dir:
    """One directory's entries: (name hash, record length) of each leaf's entries, the
    first hash of each leaf (htree order), and each leaf's block (its index in the block
    device's cache; -1: the first block, made outside the group)."""

    leaves: list = field(default_factory=lambda: [[]])
    starts: list = field(default_factory=lambda: [0])
    blocks: list = field(default_factory=lambda: [-1])
    used: list = field(default_factory=lambda: [0])  # bytes of entries in each leaf
    indexed: bool = False
    nr_names: int = 0


def ext4fs_dirhash(name: str) -> int:
    """The name's 32-bit hash (see the module docstring)."""
    return zlib.crc32(name.encode())


def ext4_bread(sys: System, task: Task, sb: SuperBlock, index: int) -> int:
    """ext4_bread() of a directory block that exists: its page accessed if cached, else
    read back (a new page charged to the task's group, a refault if the shadow is
    there); then dirtied by the insertion (mark_buffer_dirty).  0 or the charge's error."""
    if index < 0:
        return 0
    mapping = sb.bdev
    slot = int(mapping.slots[index])
    if slot >= 0:
        pfns = np.array([slot], dtype=np.int64)
        swap.folio_mark_accessed(sys, pfns)
        page_writeback.folio_mark_dirty(sys, pfns)
        if mapping.dirtied_when is None:
            mapping.dirtied_when = sys.clock.now
        return 0
    return bdev_read_page(sys, task, sb, index, refault=slot == SHADOW)


def ext4_append(sys: System, task: Task, sb: SuperBlock, d: Ext4Dir) -> int:
    """ext4_append(): a new block of the directory (a new block-device page, dirty, with
    its buffer head); its index, or the charge's error (negative)."""
    index = sb.bdev_pages
    ret = bdev_read_page(sys, task, sb, index, refault=False)
    if ret:
        return ret
    sb.bdev_pages += 1
    return index


def bdev_read_page(sys: System, task: Task, sb: SuperBlock, index: int, refault: bool) -> int:
    """A directory block's page into the block device's cache (bdev_add_page) with its
    buffer head, which goes with the page when reclaim takes it (folio_alloc_buffers;
    try_to_free_buffers)."""
    from .dcache import bdev_add_page  # the block device's cache lives with the superblock
    ret = bdev_add_page(sys, task, sb, index, refault=refault)
    if ret:
        return ret
    buffer.folio_alloc_buffers(sys, task, task.memcg, 1)
    sb.bdev.buffers[index] = True
    return 0


def do_split(sys: System, task: Task, sb: SuperBlock, d: Ext4Dir, leaf: int) -> int:
    """do_split(): the upper half of a full leaf's hashes go to a new block; 0 or error."""
    index = ext4_append(sys, task, sb, d)
    if index < 0:
        return index
    entries = sorted(d.leaves[leaf])
    # dx_make_map + the split "in the middle, size-wise": the upper entries that fill
    # up to half a block move
    size, move = 0, 0
    for _, rec_len in reversed(entries):
        if size + rec_len // 2 > 4096 // 2:
            break
        size += rec_len
        move += 1
    split = len(entries) - move
    d.leaves[leaf] = entries[:split]
    d.leaves.insert(leaf + 1, entries[split:])
    d.used[leaf] -= size
    d.used.insert(leaf + 1, size)
    d.starts.insert(leaf + 1, entries[split][0])
    d.blocks.insert(leaf + 1, index)
    return 0


def make_indexed_dir(sys: System, task: Task, sb: SuperBlock, d: Ext4Dir) -> int:
    """make_indexed_dir(): block 0 becomes the htree root, its entries move to a new
    block that is split at once into two leaves; 0 or error."""
    index = ext4_append(sys, task, sb, d)
    if index < 0:
        return index
    d.blocks[0] = index
    d.indexed = True
    return do_split(sys, task, sb, d, 0)


def ext4_add_entry(sys: System, task: Task, sb: SuperBlock, d: Ext4Dir, name: str) -> int:
    """ext4_add_entry(): name into directory d; 0 or the error of a block's charge."""
    h = ext4fs_dirhash(name)
    rec_len = ext4_dir_rec_len(len(name))
    if not d.indexed and d.used[0] + rec_len > LINEAR_BYTES:
        ret = make_indexed_dir(sys, task, sb, d)
        if ret:
            return ret
    leaf = bisect.bisect_right(d.starts, h) - 1 if d.indexed else 0
    ret = ext4_bread(sys, task, sb, d.blocks[leaf])  # dx_probe + the leaf's block
    if ret:
        return ret
    if d.indexed and d.used[leaf] + rec_len > DX_LEAF_BYTES:
        ret = do_split(sys, task, sb, d, leaf)
        if ret:
            return ret
        leaf = bisect.bisect_right(d.starts, h) - 1
    d.leaves[leaf].append((h, rec_len))
    d.used[leaf] += rec_len
    d.nr_names += 1
    return 0
