"""Events on real cgroups.

cgroup v1: an eventfd registered through the group's cgroup.event_control; the
kernel signals it (mm/memcontrol.c: memcg_event_wake, mem_cgroup_oom_notify, ...).

cgroup v2 has no cgroup.event_control; the kernel offers two kinds of events, both
as poll() on an open cgroup file, and V2Event turns each into an eventfd count:
- file notifications: memory.events, memory.events.local, memory.swap.events and
  cgroup.events are notified when a counter or state in them changes
  (kernel/cgroup/cgroup.c: cgroup_file_notify -> fs/kernfs/file.c: kernfs_notify,
  which bumps the open node's event count and wakes its pollers); poll() then
  reports POLLPRI|POLLERR until the file is read again (kernfs_generic_poll).  Each
  observed notification counts one; notifications between two wake-ups of the
  watcher coalesce, as they do for any poller of the file.
- PSI triggers: "some|full STALL_US WINDOW_US" written to an open memory.pressure
  (or cpu./io.pressure) creates a trigger on that descriptor (kernel/sched/psi.c:
  psi_trigger_create: the window between 500 ms and 10 s, the threshold above 0
  and not above the window; EINVAL otherwise); poll() reports POLLPRI once per window
  in which the stall time passed the threshold (psi_trigger_poll).  Each counts one.
One watcher thread per kernel object polls every such descriptor; count() also looks
at its own descriptor first, so a notification the kernel has already made is
counted even before the watcher has run.
"""

from __future__ import annotations

import errno
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
        self.group: str | None = None       # the group path the event is registered on (v1)
        # rmdir of that group will signal it (memcg_event_remove); cleared by the
        # signal's arrival: the first non-zero count after the rmdir, or advance()
        self.removal_pending = False

    def fileno(self) -> int:
        return self._efd

    def count(self) -> int:
        if self.closed:
            return 0
        try:
            n = os.eventfd_read(self._efd)
        except BlockingIOError:
            return 0
        self.removal_pending = False
        return n

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



# Files the kernel notifies with cgroup_file_notify (mm/memcontrol.c: memory_events,
# memory_events_local, swap_events; kernel/cgroup/cgroup.c: cgroup_events).
NOTIFIED_FILES = ("memory.events", "memory.events.local", "memory.swap.events", "cgroup.events")
PRESSURE_FILES = ("memory.pressure", "cpu.pressure", "io.pressure")


def open_v2_event(path: str, name: str, args: str) -> tuple[int, str]:
    """(descriptor, kind) of a v2 event on the cgroup file at path: "notify" for a
    notified file (args must be empty), "psi" for a pressure file with its trigger
    written (args: "some|full STALL_US WINDOW_US").  OSError with the kernel's errno."""
    if name in NOTIFIED_FILES:
        if args.strip():
            raise OSError(errno.EINVAL, f"{name} takes no arguments: its changes are the events")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            os.pread(fd, 65536, 0)      # the state this descriptor has seen (of->event)
        except OSError:
            os.close(fd)
            raise
        return fd, "notify"
    if name in PRESSURE_FILES:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            # the trailing NUL: /proc/pressure/* writes end the string at the last byte
            # written (kernel/sched/psi.c: psi_write); cgroup files accept it as well
            os.write(fd, args.encode() + b"\0")
        except OSError:
            os.close(fd)
            raise
        return fd, "psi"
    raise OSError(errno.EOPNOTSUPP, f"{name}: cgroup v2 has no cgroup.event_control; its events "
                                    f"are {', '.join(NOTIFIED_FILES)} changes and PSI triggers "
                                    f"on {', '.join(PRESSURE_FILES)}")


class Notifier:
    """The watcher thread of one kernel object: poll() on every v2 event's descriptor,
    one eventfd count per POLLPRI."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: dict[int, "V2Event"] = {}     # cgroup file descriptor -> event
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread: threading.Thread | None = None
        self._stopped = False

    def add(self, ev: "V2Event") -> None:
        with self.lock:
            self.events[ev.cgroup_fd] = ev
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="memcg-v2-events")
                self._thread.start()
        self._wake()

    def remove(self, ev: "V2Event") -> None:
        with self.lock:
            self.events.pop(ev.cgroup_fd, None)
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass

    def check(self, ev: "V2Event", revents: int | None = None) -> None:
        """Count what the kernel has reported on ev's descriptor (revents from poll(),
        or polled now without waiting).  Called with the lock held."""
        if ev.cgroup_fd not in self.events:
            return
        if revents is None:
            p = select.poll()
            p.register(ev.cgroup_fd, select.POLLPRI | select.POLLERR)
            got = p.poll(0)
            revents = got[0][1] if got else 0
        if not revents & (select.POLLPRI | select.POLLERR | select.POLLHUP | select.POLLNVAL):
            return
        if revents & select.POLLNVAL:
            self.events.pop(ev.cgroup_fd, None)
            return
        try:
            # a notified file is read again, so that poll waits for the next change; a
            # removed group's file reads ENODEV (fs/kernfs/file.c: kernfs_get_active
            # fails, and poll reports POLLERR|POLLPRI for ever): it is not watched further
            os.pread(ev.cgroup_fd, 65536, 0)
        except OSError:
            self.events.pop(ev.cgroup_fd, None)
            return
        if ev.kind == "psi" and revents & select.POLLERR:
            # no trigger on this descriptor (kernel/sched/psi.c: psi_trigger_poll
            # returns POLLERR|POLLPRI when PSI is off or the trigger is gone)
            self.events.pop(ev.cgroup_fd, None)
            return
        os.eventfd_write(ev.fileno(), 1)

    def _loop(self) -> None:
        while not self._stopped:
            p = select.poll()
            p.register(self._wake_r, select.POLLIN)
            with self.lock:
                for fd in self.events:
                    p.register(fd, select.POLLPRI | select.POLLERR)
            try:
                ready = p.poll()
            except (OSError, ValueError):
                return
            with self.lock:
                for fd, revents in ready:
                    if fd == self._wake_r:
                        try:
                            os.read(self._wake_r, 4096)
                        except OSError:
                            pass
                    elif fd in self.events:
                        self.check(self.events[fd], revents)

    def close(self) -> None:
        self._stopped = True
        self._wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass


class V2Event(LinuxEvent):
    """A cgroup v2 event (a notified file or a PSI trigger) counted into an eventfd:
    fileno() is that eventfd, count() reads and resets it."""

    def __init__(self, kernel: "LinuxKernel", label: str, efd: int, cgroup_fd: int, kind: str,
                 notifier: Notifier):
        super().__init__(kernel, label, efd)
        self.cgroup_fd = cgroup_fd
        self.kind = kind
        self._notifier = notifier

    def count(self) -> int:
        if self.closed:
            return 0
        with self._notifier.lock:
            self._notifier.check(self)
        return super().count()

    def close(self) -> None:
        """Closing the cgroup file's descriptor ends the notification or destroys the
        trigger (kernel/sched/psi.c: psi_trigger_destroy from the file's release)."""
        if self.closed:
            return
        self._notifier.remove(self)
        super().close()
        with self._notifier.lock:
            try:
                os.close(self.cgroup_fd)
            except OSError:
                pass
