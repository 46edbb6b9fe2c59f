"""Real files as the backend touches them: cgroup files, group directories, data files.

A cgroup file is read whole and written with one write() of the exact bytes, as a
shell's echo does it, so the kernel parses exactly the text a scenario gives.
"""

from __future__ import annotations

import os

from ...kernel import PAGE_SIZE


def read_file(path: str) -> str:
    """The whole text of a file."""
    with open(path) as f:
        return f.read()


def read_quiet(path: str) -> str:
    """The whole text of a file, "" if it cannot be read (a process or file gone)."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def write_file(path: str, text: str) -> None:
    """One write() of the exact bytes, as a shell's echo would do it."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


# Hooks for creating and removing a group directory (tests replace them with a fake
# cgroup tree).
def make_group_dir(path: str) -> None:
    """mkdir() of a group: the kernel creates its files."""
    os.mkdir(path)


def remove_group_dir(path: str) -> None:
    """rmdir() of a group: EBUSY while it has tasks or children."""
    os.rmdir(path)


_FILL = bytes(range(256)) * 4096   # 1 MiB of file data


def fill(fd: int, start: int, end: int) -> None:
    """Write [start, end) of a file, sync it and drop the new pages from the page cache
    (pages cached before, charged to some group, stay where they are)."""
    off = start
    while off < end:
        off += os.pwrite(fd, _FILL[:min(len(_FILL), end - off)], off)
    os.fdatasync(fd)
    first = -(-start // PAGE_SIZE) * PAGE_SIZE
    os.posix_fadvise(fd, first, end - first, os.POSIX_FADV_DONTNEED)
