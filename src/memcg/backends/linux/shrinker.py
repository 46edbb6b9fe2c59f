"""mempressure.shrinker on real cgroups: a client of the kernel's own memcg shrinkerd.

Mainline has no mempressure.shrinker (the 2013 proposal never merged), so a LinuxKernel
serves the file through the daemon of memcg.shrinkerd: the first registration starts
one daemon for the kernel's root group, with its runtime directory inside the kernel's
private working directory, and every registration on group G is a connection to
RUN/G/shrinker.sock ("register CHUNK_SIZE" with the eventfd as SCM_RIGHTS), every
"<efd> +N" / "<efd> -N" write one "+N" / "-N" line on it (docs/shrinker.md).

The daemon dies with the kernel: it holds the read end of a pipe whose write end only
this process has, and stops (removing its runtime directory) when the pipe reports
hang-up - close(), an exception, SIGTERM or SIGKILL of the caller alike; it also has
PR_SET_PDEATHSIG when started from the main thread.  What a SIGKILLed daemon leaves
is in the working directory, which close() and the next kernel's sweep remove.

Requests arrive on the eventfd.  A watcher (Event.watch) runs its callback where the
simulated kernel runs it, between two operations of the tasks: at the start of each
task command of this kernel (the callback may unmap memory of the very task that
allocates), and from a thread when the caller is idle; one lock keeps a task's
channel to one user at a time.  Before a task command the daemon is given time to
react (LinuxShrinkerEvent.sync): a request the last command's charges called for is
served before the task goes on, as the simulated daemon's watcher is.  Without that,
where in its sawtooth a cache ends depended on how quickly the daemon woke (one to
three chunks late, at random, in each of some 38 requests of shrinker-stress).
"""

from __future__ import annotations

import array
import ctypes
import errno
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Callable

from ... import parse
from .events import LinuxEvent

if TYPE_CHECKING:
    from .kernel import LinuxKernel

PR_SET_PDEATHSIG = 1      # include/uapi/linux/prctl.h
# The daemon's margin under a limit (shrinkerd --margin).  This kernel's own watchers
# serve a request before the task's next command, so a task allocates at most one
# command's memory past the high mark before it is served, plus the usage thresholds'
# 128-page granularity (mm/memcontrol-v1.c THRESHOLDS_EVENTS_TARGET) and the wake-ups
# of a loaded machine: a 1-MiB-chunk allocator at a 64M limit overran 4 MiB and, once in
# three runs, 8 MiB; 12 MiB held in every run.
SHRINKER_MARGIN = 12 << 20
SOCKET_WAIT = 5.0         # a new group is served on the daemon's next 50 ms tick
REPLY_WAIT = 5.0
# The package directory's parent: the daemon imports this very copy of memcg.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
_libc = ctypes.CDLL(None, use_errno=True)


def parse_report(text: str) -> tuple[int, int]:
    """A "<eventfd> <N>" write as the model's cgroupfs parses it: two fields, an fd and
    a signed count, else EINVAL."""
    fields = text.split()
    if len(fields) != 2:
        raise OSError(errno.EINVAL, "Invalid argument")
    try:
        return parse.kstrtoint(fields[0]), parse.kstrtoint(fields[1])
    except OSError:
        raise OSError(errno.EINVAL, "Invalid argument") from None


class ShrinkerDaemon:
    """The shrinkerd child of one LinuxKernel: started once, on first use."""

    def __init__(self, cgroup: str, run: str, margin: int | None = None):
        self.cgroup = cgroup
        self.run = run
        self.margin = margin
        self.proc: subprocess.Popen | None = None
        self._life_w = -1

    def start(self) -> None:
        """Start the daemon if it is not running (a daemon that died is restarted)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self.stop()
        life_r, life_w = os.pipe2(os.O_CLOEXEC)
        parent = os.getpid()
        main = threading.current_thread() is threading.main_thread()

        def arm() -> None:   # in the child, between fork and exec
            if main:
                # PR_SET_PDEATHSIG follows the forking thread: only the main thread's
                # death is the caller's.  The pipe covers every case anyway.
                _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent:
                os._exit(0)

        env = dict(os.environ)
        env["PYTHONPATH"] = PACKAGE_PARENT
        code = ("import sys; from memcg import shrinkerd; "
                "sys.exit(shrinkerd.serve(sys.argv[1], sys.argv[2], foreground=False, "
                "parent_fd=int(sys.argv[3]), margin=int(sys.argv[4]) if sys.argv[4] else None))")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, self.cgroup, self.run, str(life_r),
                 "" if self.margin is None else str(self.margin)],
                pass_fds=[life_r], preexec_fn=arm, start_new_session=True, close_fds=True,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env=env)
        except BaseException:
            os.close(life_w)
            raise
        finally:
            os.close(life_r)
        self._life_w = life_w

    def socket_path(self, rel: str) -> str:
        """RUN/G/shrinker.sock for group rel ("" for the root), once the daemon serves it."""
        path = os.path.join(self.run, rel, "shrinker.sock") if rel else os.path.join(self.run, "shrinker.sock")
        deadline = time.monotonic() + SOCKET_WAIT
        while not os.path.exists(path):
            if self.proc is None or self.proc.poll() is not None:
                err = b""
                if self.proc is not None and self.proc.stderr is not None:
                    err = self.proc.stderr.read() or b""
                line = err.decode(errors="replace").strip().splitlines()[-1:] or ["exited"]
                raise OSError(errno.ENOENT, f"shrinkerd: {line[0]}")
            if time.monotonic() > deadline:
                raise OSError(errno.ETIMEDOUT, "shrinkerd does not serve the group")
            time.sleep(0.005)
        return path

    def stop(self) -> None:
        """Close the daemon's life pipe and wait for it (SIGKILL after 5 s)."""
        if self._life_w >= 0:
            os.close(self._life_w)
            self._life_w = -1
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            self.proc = None


class LinuxShrinkerEvent(LinuxEvent):
    """A mempressure.shrinker registration: an eventfd and a connection to shrinkerd."""

    def __init__(self, kernel: "LinuxKernel", label: str, sock_path: str, chunk_size: int):
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        super().__init__(kernel, label, efd)
        self._callbacks: list[Callable[[int], None]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.settimeout(REPLY_WAIT)
            deadline = time.monotonic() + SOCKET_WAIT
            while True:
                try:
                    self._sock.connect(sock_path)
                    break
                except ConnectionRefusedError:
                    # bound but not listening yet: the daemon is setting the group up
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.005)
            self._sock.sendmsg([b"register %d\n?\n" % chunk_size],
                               [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [efd]))])
            reply = self._line()
            if not reply.startswith("held "):
                raise OSError(errno.EINVAL, f"shrinkerd: {reply}")
        except BaseException:
            self._sock.close()
            super().close()
            raise

    def _line(self) -> str:
        buf = b""
        while not buf.endswith(b"\n"):
            data = self._sock.recv(256)
            if not data:
                raise OSError(errno.ECONNRESET, "shrinkerd closed the connection")
            buf += data
        return buf.decode(errors="replace").strip()

    def report(self, delta: int) -> None:
        """N chunks more (or fewer) are reclaimable: one "+N" / "-N" line."""
        if self.closed:
            raise OSError(errno.EBADF, "Bad file descriptor")
        if delta == 0:
            return
        try:
            self._sock.sendall(b"%+d\n" % delta)
        except OSError as e:
            raise OSError(e.errno or errno.EPIPE, "shrinkerd: " + (e.strerror or str(e))) from None

    def held(self) -> int:
        """The count the daemon keeps for this registration ("?")."""
        self._sock.sendall(b"?\n")
        reply = self._line()
        return int(reply.split()[1])

    def sync(self) -> None:
        """Return once the daemon has handled every notification the kernel gave it
        before this call: its usage thresholds are signalled by the charging task itself
        (mm/memcontrol-v1.c: memcg1_check_events -> mem_cgroup_threshold, in the charge
        path), so a task command that crossed one has signalled it before it returned.
        The daemon handles each batch its poll returns in full before polling again, so
        the reply to a second "?" (sent once the first is answered, hence seen by a
        later poll) comes after the batch that saw the threshold, request included."""
        self.held()
        self.held()

    def watch(self, callback: Callable[[int], None]) -> None:
        """callback(n) for each request of n chunks, run between two task operations of
        the kernel (or from a thread while it is idle)."""
        self._callbacks.append(callback)
        self._k._shrinker_watch(self)
        t = threading.Thread(target=self._idle_loop, daemon=True, name=f"memcg-shrinker {self.label}")
        self._threads.append(t)
        t.start()

    def dispatch(self) -> None:
        """Run the callbacks for a request waiting on the eventfd (the caller holds the
        kernel's task lock)."""
        n = self.count()
        if n:
            for cb in self._callbacks:
                cb(n)

    def _idle_loop(self) -> None:
        while not self.closed:
            try:
                r, _, _ = select.select([self._efd, self._stop_r], [], [])
            except (OSError, ValueError):
                return
            if self._stop_r in r or self.closed:
                return
            with self._k._task_lock:
                if not self.closed:
                    self._k._dispatch_shrinkers()

    def close(self) -> None:
        """Close the connection (the daemon forgets the registration) and the eventfd."""
        if self.closed:
            return
        try:
            self._sock.close()
        finally:
            super().close()
