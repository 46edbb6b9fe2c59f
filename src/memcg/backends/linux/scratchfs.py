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
charges nobody) and removes it at close.  Like the machine's root file system it has no
journal (metadata buffers are marked dirty at once, fs/ext4/ext4_jbd2.c:
__ext4_handle_dirty_metadata without a journal calls mark_buffer_dirty: the root file
system's dirty pages grew within 0.1 s of the first mkdir, well before a 5 s journal
commit).

The host's mount table is never changed: the file system is mounted in a mount
namespace of its own, held by a small holder process (unshare(CLONE_NEWNS), every mount
made private so nothing propagates back, then mount(8) of the loop device; it waits on a
pipe from the controller and dies with it, PR_SET_PDEATHSIG).  The controller and its
workers reach the file system through /proc/HOLDER/root/<mount point>: path lookup
through that link walks the holder's mount namespace (fs/proc/base.c:
proc_root_link; fs/namei.c: nd_jump_link).  Once mounted, the loop device is detached
(lazily: a busy loop device is only marked LO_FLAGS_AUTOCLEAR, drivers/block/loop.c:
loop_clr_fd), so when the holder dies its namespace, the mount and the loop device go
with it (fs/namespace.c: put_mnt_ns; drivers/block/loop.c: lo_release).  Needs root,
mkfs.ext4, losetup and mount; without them (or if any step fails) the directories stay
in the working directory.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

from .command import PR_SET_PDEATHSIG, _libc

# sparse: only the blocks written take room (20000 directories: about 85M)
IMAGE_SIZE = 4 << 30
IMAGE = "ext4.img"
MOUNT = "ext4"
HOLDER_PID = "ext4.holder"      # the holder's pid, for the sweep of a killed controller
MARKER = "memcg-scratchfs-holder"   # in the holder's command line: how the sweep knows it
RELEASE_WAIT = 10.0             # seconds a loop device may take to go after its last user

# The holder: a private mount namespace with the ext4 mounted in it, kept while the
# controller's end of stdin is open.  argv: MARKER loop-device mount-point.
_HOLDER = """
import ctypes, os, subprocess, sys
CLONE_NEWNS, MS_REC, MS_PRIVATE = 0x00020000, 0x4000, 0x40000  # include/uapi/linux/sched.h, mount.h
libc = ctypes.CDLL(None, use_errno=True)
_, marker, loop, point = sys.argv
if libc.unshare(CLONE_NEWNS) != 0 or libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
    sys.exit("holder: " + os.strerror(ctypes.get_errno()))
# noinit_itable: no background zeroing of inode tables while groups are measured
subprocess.run(["mount", "-t", "ext4", "-o", "noinit_itable", loop, point],
               check=True, stdout=subprocess.DEVNULL)
print("ready", flush=True)
sys.stdin.buffer.read()
"""


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60).stdout


def _backing_file(name: str) -> str | None:
    """The file behind /dev/NAME, None when it has none (detached)."""
    try:
        with open(f"/sys/block/{name}/loop/backing_file") as f:
            return f.read().strip()
    except OSError:
        return None


def _wait_released(name: str) -> bool:
    """Wait for loop device NAME to lose its backing file (its autoclear runs when the last
    opener, the dying namespace's ext4, lets go); True when it did."""
    deadline = time.monotonic() + RELEASE_WAIT
    while _backing_file(name) is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _detach(name: str, ours) -> None:
    """Detach loop device NAME while its backing file is ours(backing): at once if nobody
    has it open, else when its last opener lets go (loop_clr_fd marks it autoclear)."""
    backing = _backing_file(name)
    if backing is not None and ours(backing):
        subprocess.run(["losetup", "-d", f"/dev/{name}"], capture_output=True, timeout=60)
        _wait_released(name)


def _mounted_below(top: str, mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points at or below top in the mount table mountinfo."""
    try:
        with open(mountinfo) as f:
            points = [line.split()[4] for line in f]
    except OSError:
        return []
    return [p for p in points if p == top or p.startswith(top + os.sep)]


class ScratchExt4:
    """An ext4 made by mkfs on a loop device, mounted at `point` in the holder's private
    mount namespace and reached through `path` (/proc/HOLDER/root/point)."""

    def __init__(self, image: str, point: str):
        self.image = image
        self.point = point
        self.loop = ""
        self.holder: subprocess.Popen | None = None
        self.path = ""

    def close(self) -> None:
        """End the holder (its namespace takes the mount and the loop device with it),
        detach the loop device if still attached, remove the image (each at most once)."""
        self.path = ""
        if self.holder is not None:
            holder, self.holder = self.holder, None
            holder.stdin.close()        # the holder's wait ends
            try:
                holder.wait(timeout=10)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait()
            holder.stdout.close()
            try:
                os.unlink(os.path.join(os.path.dirname(self.point), HOLDER_PID))
            except OSError:
                pass
        if self.loop:
            name, self.loop = os.path.basename(self.loop), ""
            _detach(name, lambda backing: backing.split(" ")[0] == self.image)
        if self.image:
            try:
                os.unlink(self.image)
            except OSError:
                pass
            self.image = ""

    def _start_holder(self) -> None:
        parent = os.getpid()
        main = threading.current_thread() is threading.main_thread()

        def arm() -> None:   # in the child, between fork and exec
            if main:
                # PR_SET_PDEATHSIG follows the forking thread; the pipe covers every case
                _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:
                os._exit(1)

        self.holder = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _HOLDER, MARKER, self.loop, self.point],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            preexec_fn=arm, close_fds=True, start_new_session=True)
        with open(os.path.join(os.path.dirname(self.point), HOLDER_PID), "w") as f:
            f.write(f"{self.holder.pid}\n")
        ready, _, _ = select.select([self.holder.stdout], [], [], 60)
        if not ready or self.holder.stdout.readline() != b"ready\n":
            raise OSError("scratchfs: the holder did not mount the file system")
        self.path = f"/proc/{self.holder.pid}/root{self.point}"

    def _check(self, workdir: str) -> None:
        """The host's mount table has not changed, and path is the new ext4."""
        if _mounted_below(os.path.realpath(workdir)):
            raise OSError("scratchfs: the mount is visible in the controller's namespace")
        st, fs = os.stat(self.path), os.statvfs(self.path)
        if st.st_dev == os.stat(workdir).st_dev or not (
                IMAGE_SIZE // 2 < fs.f_blocks * fs.f_frsize <= IMAGE_SIZE):
            raise OSError("scratchfs: the path does not reach the new file system")
        with open(f"/sys/block/{os.path.basename(self.loop)}/loop/autoclear") as f:
            if f.read().strip() != "1":
                raise OSError("scratchfs: the loop device would outlive its mount")


def make(workdir: str) -> ScratchExt4 | None:
    """A fresh ext4 for workdir's kernel object, or None where one cannot be made."""
    if os.geteuid() != 0 or not (shutil.which("mkfs.ext4") and shutil.which("losetup")
                                 and shutil.which("mount") and sys.executable):
        return None
    workdir = os.path.realpath(workdir)
    fs = ScratchExt4(os.path.join(workdir, IMAGE), os.path.join(workdir, MOUNT))
    try:
        with open(fs.image, "wb") as f:
            f.truncate(IMAGE_SIZE)
        _run("mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-m", "0",
             "-E", "lazy_itable_init=1", fs.image)
        fs.loop = _run("losetup", "--show", "-f", "--direct-io=on", fs.image).strip()
        os.mkdir(fs.point, 0o755)
        fs._start_holder()
        # mounted, so this only marks it LO_FLAGS_AUTOCLEAR (drivers/block/loop.c: loop_clr_fd)
        _run("losetup", "-d", fs.loop)
        fs._check(workdir)
    except (OSError, ValueError, subprocess.SubprocessError):
        fs.close()
        return None
    return fs


def _holder_of(top: str) -> int | None:
    """The pid of the holder a killed controller left for its directory top: the pid in
    its pid file, if that process's command line is a holder's for a mount point in top."""
    try:
        with open(os.path.join(top, HOLDER_PID)) as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().rstrip(b"\0").decode(errors="replace").split("\0")
    except (OSError, ValueError):
        return None
    if MARKER in argv and argv[-1].startswith(top + os.sep):   # holder argv ends in point
        return pid
    return None


def release_under(top: str) -> None:
    """What a killed controller left in its directory top: its holder (if it still runs)
    and the loop devices whose image lies in it (before the directory is removed)."""
    top = os.path.realpath(top)
    pid = _holder_of(top)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        deadline = time.monotonic() + RELEASE_WAIT
        while os.path.exists(f"/proc/{pid}/root") and time.monotonic() < deadline:
            time.sleep(0.02)    # until its parent (init) reaps it
    try:
        loops = [n for n in os.listdir("/sys/block") if n.startswith("loop")]
    except OSError:
        loops = []
    for name in loops:
        _detach(name, lambda backing: backing.startswith(top + os.sep))
