"""Events on real cgroups: an eventfd registered through the group's cgroup.event_control."""

from __future__ import annotations

import os
import select
import threading
from typing import TYPE_CHECKING, Callable

from ...kernel import Event

if TYPE_CHECKING:
    from .kernel import LinuxKernel


class LinuxEvent(Event):
    """An eventfd registered through the group's cgroup.event_control."""

    def __init__(self, kernel: "LinuxKernel", label: str, efd: int):
        self._k = kernel
        self.label = label
        self._efd = efd
        self._threads: list[threading.Thread] = []
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.closed = False

    def fileno(self) -> int:
        return self._efd

    def count(self) -> int:
        if self.closed:
            return 0
        try:
            return os.eventfd_read(self._efd)
        except BlockingIOError:
            return 0

    def watch(self, callback: Callable[[int], None]) -> None:
        """A thread blocked in poll() on the eventfd runs callback(n) after each signal."""
        t = threading.Thread(target=self._watch_loop, args=(callback,), daemon=True,
                             name=f"memcg-watch {self.label}")
        self._threads.append(t)
        t.start()

    def _watch_loop(self, callback: Callable[[int], None]) -> None:
        while not self.closed:
            try:
                r, _, _ = select.select([self._efd, self._stop_r], [], [])
            except (OSError, ValueError):
                return
            if self._stop_r in r or self.closed:
                return
            n = self.count()
            if n:
                callback(n)

    def close(self) -> None:
        """Closing the eventfd makes the kernel drop the registration (POLLHUP)."""
        if self.closed:
            return
        self.closed = True
        os.write(self._stop_w, b"x")
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=5)
        for fd in (self._efd, self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass


class PsiTriggerEvent(LinuxEvent):
    """A PSI trigger on cgroup v2 (Documentation/accounting/psi.rst): "some|full
    <threshold_us> <window_us>" written to an open memory.pressure; a thread blocked in
    poll() on that file signals the eventfd once per POLLPRI (each poll takes the event,
    kernel/sched/psi.c: psi_trigger_poll).  Closing the file destroys the trigger."""

    def __init__(self, kernel: "LinuxKernel", label: str, efd: int, pfd: int):
        super().__init__(kernel, label, efd)
        self._pfd = pfd
        t = threading.Thread(target=self._poll_loop, daemon=True, name=f"memcg-psi {label}")
        self._threads.append(t)
        t.start()

    def _poll_loop(self) -> None:
        p = select.poll()
        p.register(self._pfd, select.POLLPRI)
        p.register(self._stop_r, select.POLLIN)
        while not self.closed:
            try:
                ready = p.poll()
            except (OSError, ValueError):
                return
            if self.closed or any(fd == self._stop_r for fd, _ in ready):
                return
            for fd, mask in ready:
                if fd == self._pfd:
                    if mask & (select.POLLERR | select.POLLNVAL):
                        return
                    if mask & select.POLLPRI:
                        os.eventfd_write(self._efd, 1)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        try:
            os.close(self._pfd)
        except OSError:
            pass
