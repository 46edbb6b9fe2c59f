"""The path-name system calls: mkdir, creat and unlink (fs/namei.c).

mkdir and creat make dentries and inodes (dcache.py), charged to the calling task's
group; unlink truncates the file's page cache, unless a shm mapping still holds it.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from ..mm import filemap
from . import dcache

if TYPE_CHECKING:
    from ..system import System
    from ..tasks import Task


def do_mkdirat(sys: System, task: Task, n: int, fs: str = "ext4") -> None:
    """n mkdir()s on fs by task: dentries, inodes (and ext4 blocks) charged to its group."""
    dcache.vfs_create_many(sys, task, fs, n, is_dir=True)


def do_creat(sys: System, task: Task, n: int, fs: str = "ext4") -> None:
    """n creat()s of empty files on fs by task (do_sys_open with O_CREAT -> path_openat)."""
    dcache.vfs_create_many(sys, task, fs, n, is_dir=False)


def do_unlinkat(sys: System, name: str) -> None:
    """unlink(): the file's page cache is truncated (an open shm mapping keeps it)."""
    f = sys.files.pop(name, None) or sys.shmem.pop(name, None)
    if f is None:
        raise FileNotFoundError(errno.ENOENT, f"no such file: {name}")
    if getattr(f, "mappers", None):
        f.unlinked = True  # still mapped: shmem_evict_inode() at the last unmap
        return
    filemap.truncate_inode_pages(sys, f)
    filemap.unregister_mapping(sys, f)
