"""eventfds the simulated kernel signals: real, pollable Linux eventfds (fs/eventfd.c).

The kernel side calls signal(); user space polls fileno(), reads count(), or watches:
a watcher stands for a thread blocked in read() - it runs when the simulated kernel
next lets user space run (sched.cond_resched), reading and resetting the counter.
"""

from __future__ import annotations

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
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._watchers: list[Callable[[int], None]] = []
        self.signals = 0  # how often the kernel signalled it (never reset)
        self.closed = False

    # kernel side
    def signal(self, n: int = 1) -> None:
        """eventfd_signal(): add n to the counter and wake readers."""
        if self.closed:
            return
        self.signals += n
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
        return self._fd

    def count(self) -> int:
        if self.closed:
            return 0
        try:
            return os.eventfd_read(self._fd)
        except BlockingIOError:
            return 0

    def watch(self, callback: Callable[[int], None]) -> None:
        self._watchers.append(callback)
        sched.queue_work(self._sys.clock, sched.USER, self._run_watchers)

    def close(self) -> None:
        """Closing the eventfd unregisters every event made with it (POLLHUP)."""
        if self.closed:
            return
        memcontrol_v1.memcg_event_remove(self._sys, self)
        self.closed = True
        os.close(self._fd)
