"""The controller's side of a worker: a task and its sockets, driven over a socket pair.

The worker process (memcg/backends/worker.py) reads one JSON command per line and
answers each with one line, {"ok": ...} or {"err": errno, "msg": text}; a command the
kernel blocks (a fault waiting in mem_cgroup_oom_synchronize) has no reply until the
task wakes up.  The task's state is read from the kernel (procfs), never assumed.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import select
import signal
import socket
import struct
import subprocess
import time
from typing import TYPE_CHECKING

from ...kernel import PAGE_SIZE, Socket, Task
from . import procfs

if TYPE_CHECKING:
    from .kernel import LinuxKernel

COMMAND_TIMEOUT = 120.0


def _locked(method):
    """Run under the kernel's task lock: a shrinker watcher's thread may use the channel
    too (backends/linux/shrinker.py)."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        with self._k._task_lock:
            return method(self, *args, **kwargs)
    return run


class TaskGone(Exception):
    """The worker died while a command was outstanding."""


class LinuxTask(Task):
    """A real process in a memory cgroup, driven over a socket by its LinuxKernel."""

    def __init__(self, kernel: "LinuxKernel", pid: int, chan: socket.socket, group: str,
                 popen: subprocess.Popen | None = None):
        self._k = kernel
        self.pid = pid
        self.group = group
        self._chan = chan
        self._popen = popen
        self._buf = b""
        self._pending = 0        # commands sent whose reply has not come
        self.late_errors: list[str] = []   # errors of commands that ran after a block
        self._pidfd = os.pidfd_open(pid)
        self._exit_asked = False
        self._final: str | None = None
        self._closed_fds = False
        self.cpu: int | None = None
        self.exit_signal: int | None = None
        self.exit_code: int | None = None
        # a forked child that runs no Python yet (worker.py: FORK_CODE), and the
        # [address, length] of the anonymous mappings it shares with its parent
        self.light = False
        self.inherited: list[list[int]] = []
        self._oom_score_adj = 0

    def __repr__(self) -> str:
        return f"<LinuxTask {self.pid} {self.group} {self.state}>"

    # --- kernel-side state -------------------------------------------------------------

    def _dead(self) -> bool:
        if self._final is not None or self._closed_fds:
            return True
        r, _, _ = select.select([self._pidfd], [], [], 0)
        return bool(r)

    @property
    def state(self) -> str:
        """From the kernel: the exit signal and oom_control's oom_kill for dead tasks,
        /proc/PID/stat state D + wchan mem_cgroup_oom_synchronize for blocked ones."""
        if self._final is None:
            self._collect(0)
        if self._final is not None:
            return self._final
        if self._dead() or (procfs.dying(self.pid) and self._wait_death(5)):
            return self._classify()
        if self._pending and procfs.in_oom_wait(self.pid):
            return "blocked"
        return "running"

    def _exit_status(self) -> None:
        if self._popen is not None:
            rc = self._popen.poll()
            if rc is None:
                try:
                    rc = self._popen.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    return
            if rc < 0:
                self.exit_signal = -rc
            else:
                self.exit_code = rc
            return
        st = procfs.proc_stat(self.pid)          # a zombie child of a live worker keeps its status
        if st is not None and st[0] == "Z":
            code = st[1]
            if code & 0x7F:
                self.exit_signal = code & 0x7F
            else:
                self.exit_code = code >> 8

    def _classify(self) -> str:
        """A dead task is "oom_killed" when it died of SIGKILL (or of an unknown cause)
        that we did not send and its group's oom_kill counter accounts for it: in v1 the
        counter of the victim's own group is raised (mm/memcontrol.c memcg_memory_event,
        called from mm/oom_kill.c __oom_kill_process)."""
        self._exit_status()
        state = "exited"
        if not self._exit_asked and self.exit_signal in (None, signal.SIGKILL):
            if self._k._claim_oom_kill(self.group):
                state = "oom_killed"
        self._final = state
        self._close_channel()
        return state

    def _close_channel(self) -> None:
        if self._closed_fds:
            return
        self._closed_fds = True
        self._chan.close()
        os.close(self._pidfd)

    # --- the channel ---------------------------------------------------------------------

    @_locked
    def _send(self, cmd: dict, fds: list[int] | None = None) -> None:
        data = json.dumps(cmd, separators=(",", ":")).encode() + b"\n"
        try:
            if fds:
                socket.send_fds(self._chan, [data], fds)
            else:
                self._chan.sendall(data)
        except OSError:
            raise TaskGone() from None
        self._pending += 1
        self._k._touched()

    def _read_line(self, timeout: float) -> dict | None:
        """One message within timeout, None if none came; TaskGone on EOF."""
        while b"\n" not in self._buf:
            r, _, _ = select.select([self._chan], [], [], timeout)
            if not r:
                return None
            try:
                data = self._chan.recv(65536)
            except OSError:
                data = b""
            if not data:
                raise TaskGone()
            self._buf += data
            timeout = 0
        line, _, self._buf = self._buf.partition(b"\n")
        return json.loads(line)

    @_locked
    def _collect(self, timeout: float) -> dict | None:
        """Take the replies that have arrived (waiting up to timeout for one); the last."""
        last = None
        try:
            while self._pending:
                msg = self._read_line(timeout)
                if msg is None:
                    break
                self._pending -= 1
                last = msg
                if self._pending and "err" in msg:
                    self.late_errors.append(msg.get("msg", ""))
                timeout = 0
        except TaskGone:
            self._pending = 0
            if self._final is None:
                self._wait_death(5)      # EOF comes as the process exits
                self._classify()
        return last

    @_locked
    def _wait(self, timeout: float = COMMAND_TIMEOUT, grace: float = 0.0) -> dict | None:
        """Wait until every sent command has its reply (the last reply is returned), the
        task blocks in the charge path (None) or dies (None).  Polls with a bounded
        timeout; a blocked state must persist for `grace` seconds to count."""
        start = time.monotonic()
        delay = 0.0005
        last = None
        blocked_since = None
        while self._pending and self._final is None:
            got = self._collect(delay)
            if got is not None:
                last = got
                continue
            if self._final is not None or not self._pending:
                break
            now = time.monotonic()
            if procfs.in_oom_wait(self.pid):
                blocked_since = blocked_since or now
                if now - blocked_since >= grace:
                    return None
            else:
                blocked_since = None
            if now - start > timeout:
                raise TimeoutError(errno.ETIMEDOUT, f"task {self.pid} did not answer within {timeout:.0f} s")
            delay = min(delay * 2, 0.02)
        return last if self._final is None else None

    def _alive(self) -> None:
        if self.state in ("exited", "oom_killed"):
            raise ProcessLookupError(errno.ESRCH, f"task {self.pid} has {self._final}")

    @_locked
    def _send_light(self, data: bytes) -> None:
        """A command to a forked child that runs FORK_CODE: raw bytes, not JSON."""
        try:
            self._chan.sendall(data)
        except OSError:
            raise TaskGone() from None
        self._pending += 1
        self._k._touched()

    @_locked
    def _call_light(self, addr: int, length: int) -> None:
        """FORK_CODE's "w": the child writes [addr, addr + length) from user space; its
        reply comes once it is done (none while it is blocked in the charge path)."""
        self._k._dispatch_shrinkers(sync=True)
        self._alive()
        if self._pending:
            self._wait(grace=0.05)
            self._alive()
        try:
            self._send_light(b"w" + bytes(7) + struct.pack("<QQ", addr, length))
        except TaskGone:
            self._collect(0)
            return
        self._wait()

    @_locked
    def _call(self, cmd: dict, fds: list[int] | None = None, queue: bool = True) -> dict | None:
        """Run one command.  A blocked task queues it (the reply comes when it wakes up,
        as the simulated kernel queues work behind a sleep) when `queue`; commands that
        need an answer refuse instead.  None when the task blocked or died meanwhile.
        Shrinker requests waiting are served first, as the simulated kernel runs their
        watchers before the task goes on."""
        self._k._dispatch_shrinkers(sync=True)
        self._alive()
        if self.light and cmd.get("op") != "exit":
            if self._pending:   # a write_anon ("w") still running: its reply comes first
                self._wait(grace=0.05)
                self._alive()
                if self._pending:
                    raise OSError(errno.EAGAIN, f"task {self.pid} is blocked in the kernel "
                                                "(mem_cgroup_oom_synchronize)")
            self._k._become_worker(self)
            self._alive()
        if self._pending:
            self._wait(grace=0.05)
            self._alive()
            if self._pending:
                if not queue:
                    raise OSError(errno.EAGAIN, f"task {self.pid} is blocked in the kernel "
                                                "(mem_cgroup_oom_synchronize)")
                self._send(cmd, fds)
                return None
        try:
            self._send(cmd, fds)
        except TaskGone:
            self._collect(0)
            return None
        reply = self._wait()
        if reply is not None and "err" in reply:
            raise OSError(reply["err"], reply.get("msg", os.strerror(reply["err"])))
        return reply

    # --- the Task interface ----------------------------------------------------------------

    def touch_anon(self, nbytes: int, locked: bool = False) -> None:
        self._call({"op": "touch_anon", "n": int(nbytes), "locked": bool(locked)})

    def free_anon(self, nbytes: int, oldest_first: bool = False) -> None:
        """Unmap nbytes, newest mappings first (oldest first with oldest_first)."""
        self._call({"op": "free_anon", "n": int(nbytes), "oldest": bool(oldest_first)})

    def write_anon(self, nbytes: int) -> None:
        """Write the first nbytes of the anonymous memory, oldest mapping first.  A
        forked child that runs no Python writes its share of the parent's mappings
        itself (FORK_CODE "w"), staying the same process."""
        if not self.light:
            self._call({"op": "write_anon", "n": int(nbytes)})
            return
        left = -(-max(0, int(nbytes)) // PAGE_SIZE) * PAGE_SIZE
        for addr, length in self.inherited:
            if left <= 0 or self._final is not None:
                break
            cut = min(left, length)
            self._call_light(addr, cut)
            left -= cut

    def touch_shm(self, name: str, nbytes: int) -> None:
        self._alive()
        self._call({"op": "touch_shm", "path": self._k._shm_path(name, int(nbytes)), "n": int(nbytes)})

    def read_file(self, name: str, nbytes: int) -> None:
        self._alive()
        self._call({"op": "read_file", "path": self._k._data_path(name, int(nbytes)), "n": int(nbytes)})

    def write_file(self, name: str, nbytes: int) -> None:
        self._alive()
        self._call({"op": "write_file", "path": self._k._data_path(name, 0), "n": int(nbytes)})

    def unlink(self, name: str) -> None:
        self._alive()
        self._call({"op": "unlink", "path": self._k._existing_path(name)})

    def fork(self) -> "LinuxTask":
        """fork() in the worker: the child starts in the same group, with its own channel."""
        self._alive()
        mine, theirs = socket.socketpair()
        try:
            reply = self._call({"op": "fork"}, fds=[theirs.fileno()], queue=False)
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        if reply is None:
            mine.close()
            raise ProcessLookupError(errno.ESRCH, f"task {self.pid} died while forking")
        child = self._k._adopt(reply["pid"], mine, self.group)
        child.inherited = [list(m) for m in reply.get("anon", [])]
        return child

    def mkdirs(self, n: int, fs: str = "ext4", where: str | None = None) -> None:
        """n new directories on fs ("ext4": the working file system, "tmpfs": /dev/shm),
        in a directory of the task's own, or in `where`, a scratch directory of this
        kernel (LinuxKernel.scratch_dir).  OSError(ENOMEM) if the kernel refuses."""
        self._alive()
        self._call({"op": "mkdirs", "base": self._k._base_dir(self.pid, fs, where), "n": int(n)})

    def create_files(self, n: int, fs: str = "ext4", where: str | None = None) -> None:
        """n new empty files (a dentry and an inode each), placed as mkdirs() places them."""
        self._alive()
        self._call({"op": "mkfiles", "base": self._k._base_dir(self.pid, fs, where), "n": int(n)})

    @property
    def oom_score_adj(self) -> int:
        """The task's /proc/PID/oom_score_adj (the last value set once it is dead)."""
        if not self._dead():
            value = procfs.oom_score_adj(self.pid)
            if value is not None:
                self._oom_score_adj = value
        return self._oom_score_adj

    @oom_score_adj.setter
    def oom_score_adj(self, value: int) -> None:
        # A dead task's pid may be anybody's: only a live task of ours is written.
        if self._dead():
            raise OSError(errno.ESRCH, f"oom_score_adj: task {self.pid} has exited")
        procfs.set_oom_score_adj(self.pid, int(value))
        self._oom_score_adj = int(value)

    def move(self, path: str) -> None:
        self._alive()
        self._k._move(self, path)

    def connect_tcp(self, peer: Task) -> "LinuxSocket":
        """A loopback TCP connection: peer listens and accepts, this task connects."""
        if not isinstance(peer, LinuxTask) or peer._k is not self._k:
            raise ValueError("connect_tcp: the peer must be a task of the same LinuxKernel")
        self._alive()
        peer._alive()
        listening = peer._call({"op": "listen"}, queue=False)
        if listening is None:
            raise ProcessLookupError(errno.ESRCH, f"task {peer.pid} is gone")
        try:
            client = self._call({"op": "connect", "port": listening["port"]}, queue=False)
            if client is None:
                raise ProcessLookupError(errno.ESRCH, f"task {self.pid} is gone")
            server = peer._call({"op": "accept", "sock": listening["sock"]}, queue=False)
            if server is None:
                raise ProcessLookupError(errno.ESRCH, f"task {peer.pid} is gone")
        finally:
            if peer.state not in ("exited", "oom_killed"):
                peer._call({"op": "close_sock", "sock": listening["sock"]}, queue=False)
        return LinuxSocket(self, client["sock"], peer, server["sock"])

    def exit(self) -> None:
        """exit(): asked of an idle task, killed (SIGKILL) if it is blocked or busy."""
        self._alive()
        self._exit_asked = True
        if self._pending:
            self._kill()
        else:
            try:
                self._send({"op": "exit"})
            except TaskGone:
                pass
        self._wait_death(10)
        self._collect(0)
        if self._final is None:
            self._classify()

    def mm_status(self) -> dict[str, int] | None:
        """The task's rss, swap and page tables in bytes, as /proc/PID/status shows them
        (what mm/oom_kill.c: oom_badness() counts); None once it is gone."""
        return procfs.mm_status(self.pid)

    # --- used by the kernel ------------------------------------------------------------------

    def _kill(self) -> None:
        if self._final is None and not self._dead():
            try:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            except OSError:
                pass

    def _wait_death(self, timeout: float) -> bool:
        if self._final is not None:
            return True
        r, _, _ = select.select([self._pidfd], [], [], timeout)
        return bool(r)


class LinuxSocket(Socket):
    """A loopback TCP connection between two workers.

    Each end is charged to the group its task was in when the socket was made (the
    connecting task's, the accepting task's: mm/memcontrol.c mem_cgroup_sk_alloc)."""

    def __init__(self, task: LinuxTask, sock: int, peer: LinuxTask, peer_sock: int):
        self.task, self.sock, self.peer, self.peer_sock = task, sock, peer, peer_sock
        self.sender_group, self.receiver_group = task.group, peer.group
        self.sent = 0
        self.read = 0
        self.closed = False

    def send(self, nbytes: int) -> int:
        reply = self.task._call({"op": "send", "sock": self.sock, "n": int(nbytes)}, queue=False)
        n = int(reply["bytes"]) if reply else 0
        self.sent += n
        return n

    def recv(self, nbytes: int) -> int:
        reply = self.peer._call({"op": "recv", "sock": self.peer_sock, "n": int(nbytes)}, queue=False)
        n = int(reply["bytes"]) if reply else 0
        self.read += n
        return n

    def _end(self, task: LinuxTask, sock: int) -> dict:
        if self.closed or task.state != "running":
            return {}
        try:
            return task._call({"op": "sockinfo", "sock": sock}, queue=False) or {}
        except OSError:
            return {}

    def info(self) -> dict:
        """The connection as the kernel shows it: the sender's SO_SNDBUF, SIOCOUTQ, cwnd
        and retransmissions, the receiver's SO_RCVBUF, SIOCINQ, advertised window
        (tcpi_rcv_wnd), rcv_ssthresh and drops.  Whether a group's sockets are under
        memory pressure (memcg->tcpmem_pressure) is not visible from user space: no
        "pressure" key."""
        c, s = self._end(self.task, self.sock), self._end(self.peer, self.peer_sock)
        return {
            "sent": self.sent, "read": self.read,
            "outq": c.get("outq"), "inq": s.get("inq"),
            "sndbuf": c.get("sndbuf"), "rcvbuf": s.get("rcvbuf"),
            "window": s.get("window"), "rcv_ssthresh": s.get("rcv_ssthresh"),
            "cwnd": c.get("cwnd"), "drops": s.get("drops"), "retransmits": c.get("retransmits"),
            "sender_memcg": self.sender_group, "receiver_memcg": self.receiver_group,
        }

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for t, s in ((self.task, self.sock), (self.peer, self.peer_sock)):
            if t.state == "running":
                t._call({"op": "close_sock", "sock": s}, queue=False)

