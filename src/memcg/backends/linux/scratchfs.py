"""A fresh ext4 file system for the directories and empty files tasks make.

A scenario's `mkdirs` on ext4 means what the kmem controller's mkdir loop does on a
file system: every new directory takes a new directory block, a new page of the block
device's page cache charged to the task's group (fs/ext4/namei.c: ext4_mkdir ->
ext4_init_new_dir -> ext4_append -> ext4_bread -> sb_getblk -> fs/buffer.c:
bdev_getblk).  On a file system that has been in use that is not what happens: ext4
hands out blocks freed by earlier runs (the allocator prefers the free space near the
parent's group), and the block device keeps the pages of freed blocks cached
(ext4_free_blocks -> bforget leaves the page in the bdev's page cache).  A new
directory on such a block charges nothing new, or refaults the page when its shadow is
still there (mm/filemap.c: filemap_add_folio -> workingset_refault).  Measured on this
machine's root file system, 20000 directories by a 16M group right after an earlier run
had freed 20000: pgpgin 1711 (21466 on a fresh file system), workingset_refault_file
1407, page cache 3.3M (4.5M); two runs of `memcg compare dentry-bomb` gave
workingset_refault_file 4460 and 3064, pgpgin 21186 and 3250: the figures measure the
disk's history, not the scenario.

So each controller makes its own ext4 on a loop device (a sparse image file in its
working directory; the loop device uses direct I/O, so the image file's own page cache
charges nobody), mounted in its working directory, and removes it at close.  Like the
machine's root file system it has no journal (metadata buffers are marked dirty at
once, fs/ext4/ext4_jbd2.c: __ext4_handle_dirty_metadata without a journal calls
mark_buffer_dirty: the root file system's dirty pages grew within 0.1 s of the first
mkdir, well before a 5 s journal commit).  Needs root, mkfs.ext4 and losetup; without
them (or if any step fails) the directories stay in the working directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess

# sparse: only the blocks written take room (20000 directories: about 85M)
IMAGE_SIZE = 4 << 30
IMAGE = "ext4.img"
MOUNT = "ext4"


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


class ScratchExt4:
    """An ext4 made by mkfs on a loop device and mounted at `path`."""

    def __init__(self, image: str, loop: str, path: str):
        self.image = image
        self.loop = loop
        self.path = path

    def close(self) -> None:
        """Unmount, detach the loop device, remove the image (each step at most once)."""
        if self.path:
            subprocess.run(["umount", self.path], capture_output=True, timeout=60)
            try:
                os.rmdir(self.path)
            except OSError:
                subprocess.run(["umount", "-l", self.path], capture_output=True, timeout=60)
            self.path = ""
        if self.loop:
            subprocess.run(["losetup", "-d", self.loop], capture_output=True, timeout=60)
            self.loop = ""
        if self.image:
            try:
                os.unlink(self.image)
            except OSError:
                pass
            self.image = ""


def make(workdir: str) -> ScratchExt4 | None:
    """A fresh ext4 mounted at workdir/ext4, or None where one cannot be made."""
    if os.geteuid() != 0 or not (shutil.which("mkfs.ext4") and shutil.which("losetup")
                                 and shutil.which("mount")):
        return None
    image, path = os.path.join(workdir, IMAGE), os.path.join(workdir, MOUNT)
    fs = ScratchExt4(image, "", "")
    try:
        with open(image, "wb") as f:
            f.truncate(IMAGE_SIZE)
        _run("mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0",
             "-E", "lazy_itable_init=1", image)
        fs.loop = _run("losetup", "--show", "-f", "--direct-io=on", image).strip()
        os.mkdir(path, 0o755)
        fs.path = path
        # noinit_itable: no background zeroing of inode tables while groups are measured
        _run("mount", "-t", "ext4", "-o", "noinit_itable", fs.loop, path)
    except (OSError, subprocess.SubprocessError):
        fs.close()
        return None
    return fs


def release_under(top: str) -> None:
    """What a killed controller left in its directory top: unmount its file system and
    detach the loop devices whose image lies in it (before the directory is removed)."""
    top = os.path.realpath(top)
    try:
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
    except OSError:
        points = []
    for point in sorted(points, key=len, reverse=True):
        if point.startswith(top + os.sep):
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=60)
    try:
        loops = [n for n in os.listdir("/sys/block") if n.startswith("loop")]
    except OSError:
        loops = []
    for name in loops:
        try:
            with open(f"/sys/block/{name}/loop/backing_file") as f:
                backing = f.read().strip()
        except OSError:
            continue
        if backing.startswith(top + os.sep):
            subprocess.run(["losetup", "-d", f"/dev/{name}"], capture_output=True, timeout=60)
