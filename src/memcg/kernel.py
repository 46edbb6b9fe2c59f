"""The `Kernel` interface: what a program sees of the kernel's memory controller.

Two implementations share it: `SimKernel` (the model, in-process and deterministic)
and `LinuxKernel` (real cgroups).  Scenarios, tests and the CLI are written against
these names only, which are fixed (names may be added, not renamed); docs/design.md
describes the layers.  Methods with a body are optional for a kernel: their default is
what a kernel that needs nothing there does.

Paths are relative to the root of the memory hierarchy the kernel object manages:
"/" is its root group, "/a/b" a grandchild.  File contents are the exact text the
kernel prints; a rejected write raises OSError with the kernel's errno.
"""

from __future__ import annotations

import abc
from typing import Callable

__all__ = ["PAGE_SIZE", "Event", "Kernel", "Socket", "Task"]

PAGE_SIZE = 4096  # arch/x86/include/asm/page_types.h: PAGE_SIZE (4 KiB pages on x86-64)


class Event(abc.ABC):
    """An event a kernel signals, counted like an eventfd.

    cgroup v1: an eventfd registered through cgroup.event_control (or the userspace
    shrinker); each signal the kernel sends counts.
    cgroup v2 (no cgroup.event_control), two forms, from Kernel.event:
    - `event("/a/memory.events", "")` (also memory.events.local, cgroup.events,
      memory.swap.events): signalled each time the kernel notifies the file
      (cgroup_file_notify -> kernfs_notify: poll() reports POLLPRI|POLLERR, inotify
      IN_MODIFY); notifications the kernel makes before the file is read again
      coalesce into one.
    - `event("/a/memory.pressure", "some 150000 1000000")`: a PSI trigger (the text
      written to an open descriptor of memory.pressure, "some|full STALL_US
      WINDOW_US"; kernel/sched/psi.c: psi_trigger_create, the window 500 ms..10 s,
      the threshold above 0 and not above the window); each POLLPRI, at most one per
      window, counts one.
    """

    @abc.abstractmethod
    def fileno(self) -> int:
        """The eventfd's file descriptor: pollable, readable as the kernel's eventfd is."""

    @abc.abstractmethod
    def count(self) -> int:
        """Read and reset the eventfd counter (0 when nothing was signalled)."""

    @abc.abstractmethod
    def watch(self, callback: Callable[[int], None]) -> None:
        """Run callback(n) each time the eventfd is signalled, like a thread blocked in read()."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the eventfd: the kernel unregisters the event (POLLHUP)."""


class Socket(abc.ABC):
    """A loopback TCP connection from one task to another."""

    @abc.abstractmethod
    def send(self, nbytes: int) -> int:
        """Non-blocking send: the number of bytes accepted now (0 when it would block)."""

    @abc.abstractmethod
    def recv(self, nbytes: int) -> int:
        """The peer reads up to nbytes; returns how many it got."""

    @abc.abstractmethod
    def info(self) -> dict:
        """The connection as the kernel shows it (TCP_INFO, SIOCOUTQ/SIOCINQ, SO_SNDBUF/
        SO_RCVBUF): "sent" and "read" (bytes send() accepted and recv() returned), "outq",
        "inq", "sndbuf", "rcvbuf", "window" (the receiver's advertised window),
        "rcv_ssthresh", "cwnd", "drops", "retransmits", "sender_memcg", "receiver_memcg",
        and "pressure" (either end under memory pressure) where the kernel can tell.  A
        figure the kernel cannot show is None or left out."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close both ends."""


class Task(abc.ABC):
    """A process placed in a memory cgroup.

    Every backend's task also has ``oom_score_adj``, read and set as an int (-1000..1000,
    OSError(EINVAL) otherwise; mm/oom_kill.c: oom_badness adds it, -1000 is never chosen)."""

    pid: int

    @property
    @abc.abstractmethod
    def state(self) -> str:
        """"running", "blocked", "exited" or "oom_killed"."""

    @abc.abstractmethod
    def touch_anon(self, nbytes: int, locked: bool = False) -> None:
        """Map and write nbytes of anonymous memory (mlocked if locked)."""

    @abc.abstractmethod
    def free_anon(self, nbytes: int, oldest_first: bool = False) -> None:
        """Unmap nbytes of the anonymous memory this task mapped, newest first (oldest
        first with oldest_first; NotImplementedError where the kernel cannot)."""

    def write_anon(self, nbytes: int) -> None:
        """Write to the first nbytes of the anonymous memory this task maps, oldest
        mapping first.  A page it shares copy-on-write since a fork (a child's share of
        its parent's memory, or the parent's of its child's) gets a copy of its own,
        charged to this task's group (mm/memory.c: do_wp_page -> wp_page_copy); a page
        it maps alone is written in place, charging nothing.  NotImplementedError where
        the kernel cannot."""
        raise NotImplementedError("write_anon")

    @abc.abstractmethod
    def touch_shm(self, name: str, nbytes: int) -> None:
        """Map and write a shared tmpfs/shmem object (charged as cache and shmem)."""

    @abc.abstractmethod
    def read_file(self, name: str, nbytes: int) -> None:
        """Read the first nbytes of a file through the page cache (created on first use)."""

    @abc.abstractmethod
    def write_file(self, name: str, nbytes: int) -> None:
        """Write nbytes to a file: dirty page cache."""

    @abc.abstractmethod
    def unlink(self, name: str) -> None:
        """Delete a file; its page cache is freed."""

    @abc.abstractmethod
    def fork(self) -> "Task":
        """A child in the same group; OSError(EAGAIN/ENOMEM) if the kernel refuses."""

    @abc.abstractmethod
    def mkdirs(self, n: int, fs: str = "ext4") -> None:
        """Create n directories (dentries and inodes) on fs ("ext4": the working file
        system, or "tmpfs"); OSError(ENOMEM) if refused."""

    def create_files(self, n: int, fs: str = "ext4") -> None:
        """Create n empty files (a dentry and an inode each) on fs, as mkdirs() places
        directories; OSError(ENOMEM) if refused.  NotImplementedError where the kernel
        does not model files as objects."""
        raise NotImplementedError(f"create_files on {fs}")

    @abc.abstractmethod
    def move(self, path: str) -> None:
        """Move to the group at path (same as writing the pid to its cgroup.procs)."""

    @abc.abstractmethod
    def connect_tcp(self, peer: "Task") -> Socket:
        """Open a loopback TCP connection from this task to peer."""

    @abc.abstractmethod
    def exit(self) -> None:
        """Exit; anonymous memory is freed, page cache stays charged."""


class Kernel(abc.ABC):
    """The cgroup filesystem of the memory controller plus the calls that make memory move."""

    backend: str  # "sim" or "linux"

    @abc.abstractmethod
    def mkdir(self, path: str) -> None:
        """Create the group at path (cgroup_mkdir); FileExistsError if it exists."""

    @abc.abstractmethod
    def rmdir(self, path: str) -> None:
        """Remove the group at path (cgroup_rmdir); OSError(EBUSY) with tasks or children.
        A group still charged goes on as a dying group until its charges are gone."""

    @abc.abstractmethod
    def listdir(self, path: str) -> list[str]:
        """The names in the group's directory: its control files and its child groups."""

    @abc.abstractmethod
    def read(self, path: str) -> str:
        """The text of a control file ("/a/memory.stat"), exactly as the kernel prints it."""

    @abc.abstractmethod
    def write(self, path: str, text: str) -> None:
        """One write() of text to a control file; OSError with the kernel's errno if refused."""

    @abc.abstractmethod
    def spawn(self, path: str = "/") -> Task:
        """A new task in the group at path."""

    @abc.abstractmethod
    def event(self, path: str, args: str = "") -> Event:
        """An event on the control file at path; OSError with the kernel's errno if
        the kernel refuses.

        cgroup v1: an eventfd registered through the group's cgroup.event_control
        ("<efd> <cfd> <args>").
        cgroup v2: `event("/a/memory.events", "")` (and memory.events.local,
        cgroup.events, memory.swap.events) is signalled each time the kernel
        notifies the file (cgroup_file_notify -> kernfs_notify: poll() POLLPRI|POLLERR,
        or inotify IN_MODIFY); args must be empty (EINVAL otherwise).
        `event("/a/memory.pressure", "some 150000 1000000")` creates a PSI trigger
        (the trigger written to an open descriptor of memory.pressure, then poll()
        for POLLPRI; kernel/sched/psi.c: psi_trigger_create, window 500 ms..10 s,
        0 < threshold <= window, EINVAL otherwise) and counts its events.  Any other
        file: EOPNOTSUPP."""

    @abc.abstractmethod
    def advance(self, ticks: int = 1) -> None:
        """Let ticks of time pass (a second each on the simulated kernel, the kernel's
        tick length on real cgroups): writeback, retried faults, timers and deferred
        work run."""

    def settle(self) -> None:
        """Wait until the figures the kernel shows are exact (statistics flushed); a
        kernel whose files are always exact does nothing."""

    def machine(self) -> dict:
        """The machine this kernel's groups run on: "memory" (bytes its root group can
        have), "cpus" (the CPUs its tasks run on) and "swap" (bytes of swap its groups can
        use), as the kernel sees them; {} where the kernel cannot tell."""
        return {}

    @abc.abstractmethod
    def debugfs(self) -> dict:
        """The kernel's internal figures (static keys, kmemcg ids, dying groups, free pages,
        watermarks, TCP memory, ...), as far as this kernel can show them."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release everything this kernel object made (events, tasks, groups)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
