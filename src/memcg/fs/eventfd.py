"""eventfds the simulated kernel signals: real, pollable Linux eventfds (fs/eventfd.c).

The kernel side calls signal(); user space polls fileno(), reads count(), or watches:
a watcher stands for a thread blocked in read() - it runs when the simulated kernel
next lets user space run (sched.cond_resched), reading and resetting the counter.

The real eventfd is made when user space first asks for its descriptor (fileno());
until then the counter is kept here, so a program with many events that only count()
them holds no descriptors (a scenario may register up to a million), and the counter
moves into the eventfd when it is made.  close() releases it.
"""

from __future__ import annotations

import errno
import os
from typing import Callable

from .. import sched
from ..kernel import Event
from ..mm import memcontrol_v1


class EventFd(Event):
    """One eventfd, shared by every registration made with it."""

    def __init__(self, sys, label: str):
        self._sys = sys
        self.label = label  # "<path>/<file> <args>", for reports
        self._fd: int | None = None  # the real eventfd, made by the first fileno()
        self._pending = 0  # the counter while there is no real eventfd
        self._watchers: list[Callable[[int], None]] = []
        self.signals = 0  # how often the kernel signalled it (never reset)
        self.closed = False

    # kernel side
    def signal(self, n: int = 1) -> None:
        """eventfd_signal(): add n to the counter and wake readers."""
        if self.closed:
            return
        self.signals += n
        if self._fd is None:
            self._pending += n
        else:
            os.eventfd_write(self._fd, n)
        if self._watchers:
            sched.queue_work(self._sys.clock, sched.USER, self._run_watchers)  # the reader wakes

    def _run_watchers(self) -> None:
        n = self.count()
        if n:
            for cb in list(self._watchers):
                cb(n)

    def has_watchers(self) -> bool:
        """Whether a signal wakes a reader (queues user-space work) besides counting."""
        return bool(self._watchers)

    # user side
    def fileno(self) -> int:
        """The real, pollable eventfd (made on the first call; OSError EMFILE when the
        process has no descriptor left, as eventfd(2) fails)."""
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if self._fd is None:
            self._fd = os.eventfd(self._pending, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._pending = 0
        return self._fd

    def is_fd(self, fd: int) -> bool:
        """Whether fd is this event's real eventfd (without making one)."""
        return self._fd is not None and self._fd == fd

    def peek(self) -> int:
        """The counter without reading it (fs/eventfd.c: eventfd_show_fdinfo, as
        another holder of the eventfd sees it)."""
        if self.closed:
            return 0
        if self._fd is None:
            return self._pending
        with open(f"/proc/self/fdinfo/{self._fd}") as f:
            for line in f:
                if line.startswith("eventfd-count:"):
                    return int(line.split()[1], 16)
        return 0

    def count(self) -> int:
        if self.closed:
            return 0
        if self._fd is None:
            n, self._pending = self._pending, 0
            return n
        try:
            return os.eventfd_read(self._fd)
        except BlockingIOError:
            return 0

    def watch(self, callback: Callable[[int], None]) -> None:
        self._watchers.append(callback)
        sched.queue_work(self._sys.clock, sched.USER, self._run_watchers)

    def release(self) -> None:
        """Give the real eventfd back when the whole machine goes away (SimKernel.close):
        no group is left to unregister from."""
        self.closed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """Closing the eventfd unregisters every event made with it (POLLHUP)."""
        if self.closed:
            return
        memcontrol_v1.memcg_event_remove(self._sys, self)
        self.closed = True
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
