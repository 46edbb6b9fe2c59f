"""LinuxKernel: the `Kernel` interface on real memory cgroups.

Groups live under a root this object creates and owns: by default a new child of the
memory cgroup the calling process is in (read from /proc/self/cgroup), so everything
stays inside any limit the caller lives under.  Paths are relative to that root.  Tasks
are real processes (`memcg/backends/worker.py`) driven over a socket pair; they really map and
write memory, read and write files, fork, create directories and talk TCP.  Events
are real eventfds registered through cgroup.event_control.

Safety rules, enforced here:
- groups are created only under the owned root, and a path that leaves it is refused;
- only processes this object started (and their forks) are ever moved or killed;
- everything - processes, groups, files - is removed by close(), at interpreter exit
  (atexit), on SIGTERM/SIGHUP (the handler cleans up, then dies of the signal) and on
  Ctrl-C (KeyboardInterrupt unwinds into close()); a worker that is killed leaves
  nothing behind, and workers die with their controller (PR_SET_PDEATHSIG).

The cgroup v1 memory controller is used where it is mounted.  Where only a cgroup v2
memory controller is available, the v1 names a scenario uses are mapped to v2 files
where an equivalent exists (see V2_MAP); the others raise OSError(EOPNOTSUPP) naming
the missing equivalent.  docs/linux-backend.md describes all of it.
"""

from __future__ import annotations

import atexit
import errno
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable

from .. import parse
from ..kernel import PAGE_SIZE, Event, Kernel, Socket, Task

__all__ = ["LinuxKernel", "LinuxUnavailable", "LinuxTask", "LinuxEvent", "LinuxSocket",
           "find_memory_cgroup", "V2_MAP"]

ROOT_PREFIX = "memcg-linux-"
WORKER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
UNLIMITED = "9223372036854771712"   # PAGE_COUNTER_MAX * PAGE_SIZE, how v1 prints "no limit"
# mm/memcontrol.c: FLUSH_TIME (2 * HZ): the periodic memcg statistics flush.  memory.stat
# is exact once one such flush has run after the last change.
STAT_FLUSH_WAIT = 2.1
COMMAND_TIMEOUT = 120.0
START_TIMEOUT = 30.0
# A task waiting for a memcg OOM to be resolved (v1 oom_kill_disable, or an OOM being
# handled by another task) sleeps in mm/memcontrol-v1.c: mem_cgroup_oom_synchronize().
OOM_WAIT_WCHANS = ("mem_cgroup_oom_synchronize", "memcg1_oom_synchronize")
OUTSIDE = "(outside)"   # the group of a worker still starting in the caller's own group


class LinuxUnavailable(OSError):
    """Real cgroups cannot be used here; str() is one line saying why."""


# ----------------------------------------------------------------------------- discovery


def _mountpoints() -> list[tuple[str, str, str]]:
    """(mount point, fs type, super options) of every mount, from /proc/self/mountinfo."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, rfields = left.split(), right.split()
                if len(fields) >= 5 and len(rfields) >= 3:
                    out.append((fields[4].replace("\\040", " "), rfields[0], rfields[2]))
    except OSError:
        pass
    return out


def fs_type(path: str) -> str:
    """The file system type of the mount that holds path (longest mount-point prefix)."""
    path = os.path.realpath(path)
    best, kind = "", "unknown"
    for point, fstype, _ in _mountpoints():
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fstype
    return kind


def find_memory_cgroup() -> tuple[str, int]:
    """The caller's own memory cgroup directory and the cgroup version that holds it.

    Prefers the v1 memory controller; falls back to a v2 group whose children can have
    the memory controller.  Raises LinuxUnavailable with a one-line reason.
    """
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise LinuxUnavailable(errno.ENOENT, f"cannot read /proc/self/cgroup: {e.strerror}") from None
    mounts = _mountpoints()
    v2_rel = None
    for line in lines:
        _, ctrls, rel = line.split(":", 2)
        if "memory" in ctrls.split(","):
            for point, fstype, opts in mounts:
                if fstype == "cgroup" and "memory" in opts.split(","):
                    return os.path.join(point, rel.lstrip("/")), 1
            raise LinuxUnavailable(errno.ENOENT, "the cgroup v1 memory controller is not mounted")
        if ctrls == "":
            v2_rel = rel
    if v2_rel is not None:
        for point, fstype, _ in mounts:
            if fstype == "cgroup2":
                path = os.path.join(point, v2_rel.lstrip("/"))
                if "memory" in _read_quiet(os.path.join(path, "cgroup.controllers")).split():
                    return path, 2
    raise LinuxUnavailable(errno.ENOENT, "no memory cgroup controller (neither v1 nor v2) "
                                         "for this process")


def _read_quiet(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _check_usable(parent: str, version: int) -> None:
    if not os.path.isdir(parent):
        raise LinuxUnavailable(errno.ENOENT, f"no memory cgroup at {parent}")
    if not os.access(parent, os.W_OK):
        raise LinuxUnavailable(errno.EACCES, f"the memory cgroup {parent} is not writable "
                                             "(needs root or a delegated group)")
    if version == 1 and not os.path.exists(os.path.join(parent, "memory.limit_in_bytes")):
        raise LinuxUnavailable(errno.ENOENT, f"{parent} is not a cgroup v1 memory group")
    if version == 2 and "memory" not in _read_quiet(os.path.join(parent, "cgroup.subtree_control")).split():
        raise LinuxUnavailable(errno.ENOENT, f"the memory controller is not enabled for the "
                                             f"children of {parent} (cgroup.subtree_control)")


# Hooks for creating and removing a group directory (tests replace them with a fake
# cgroup tree).
def _make_group_dir(path: str) -> None:
    os.mkdir(path)


def _remove_group_dir(path: str) -> None:
    os.rmdir(path)


# ----------------------------------------------------------------------------- cgroup v2 names

# v1 file -> (v2 file, how) or None with the reason there is no equivalent.
#   "same": the same text both ways; "limit": "-1" <-> "max"; "stat:KEY": one value of
#   memory.stat; "events:KEY": one value of memory.events; the rest are built by _V2.
V2_MAP: dict[str, tuple[str, str] | str] = {
    "cgroup.procs": ("cgroup.procs", "same"),
    "tasks": ("cgroup.threads", "same"),
    "memory.limit_in_bytes": ("memory.max", "limit"),
    "memory.usage_in_bytes": ("memory.current", "same"),
    "memory.max_usage_in_bytes": ("memory.peak", "same"),
    "memory.failcnt": ("memory.events", "events:max"),
    "memory.stat": ("memory.stat", "stat"),
    "memory.oom_control": ("memory.events", "oom_control"),
    "memory.memsw.usage_in_bytes": ("memory.current", "memsw"),
    "memory.kmem.usage_in_bytes": ("memory.stat", "stat:kernel"),
    "memory.kmem.tcp.usage_in_bytes": ("memory.stat", "stat:sock"),
    "memory.force_empty": ("memory.reclaim", "force_empty"),
    "memory.use_hierarchy": ("", "use_hierarchy"),
    "memory.numa_stat": ("memory.numa_stat", "same"),
    "memory.soft_limit_in_bytes": "v2 has no soft limit (memory.low protects, it does not limit)",
    "memory.memsw.limit_in_bytes": "v2 limits swap alone (memory.swap.max), not memory+swap",
    "memory.memsw.max_usage_in_bytes": "v2 has no memory+swap high-water mark",
    "memory.memsw.failcnt": "v2 has no memory+swap failure counter",
    "memory.kmem.limit_in_bytes": "v2 has no separate kernel memory limit",
    "memory.kmem.max_usage_in_bytes": "v2 has no kernel memory high-water mark",
    "memory.kmem.failcnt": "v2 has no kernel memory failure counter",
    "memory.kmem.tcp.limit_in_bytes": "v2 has no TCP buffer limit (socket memory counts in memory.max)",
    "memory.kmem.tcp.max_usage_in_bytes": "v2 has no TCP buffer high-water mark",
    "memory.kmem.tcp.failcnt": "v2 has no TCP buffer failure counter",
    "memory.kmem.slabinfo": "v2 has no per-group slabinfo",
    "memory.shown_ram_in_bytes": "this kernel's own v1 extension has no v2 counterpart",
    "memory.swappiness": "v2 has no per-group swappiness",
    "memory.move_charge_at_immigrate": "v2 never moves charges",
    "memory.pressure_level": "v2 has no vmpressure events (PSI memory.pressure triggers instead)",
    "cgroup.event_control": "v2 has no cgroup.event_control (memory.events is polled instead)",
    "cgroup.clone_children": "v2 has no cgroup.clone_children",
    "notify_on_release": "v2 has no notify_on_release (cgroup.events populated instead)",
}
# v1 memory.stat key <- v2 memory.stat key (both in bytes, or both counts)
V2_STAT_KEYS = {
    "cache": "file", "rss": "anon", "rss_huge": "anon_thp", "shmem": "shmem",
    "mapped_file": "file_mapped", "dirty": "file_dirty", "writeback": "file_writeback",
    "pgfault": "pgfault", "pgmajfault": "pgmajfault",
    "inactive_anon": "inactive_anon", "active_anon": "active_anon",
    "inactive_file": "inactive_file", "active_file": "active_file",
    "unevictable": "unevictable", "workingset_refault_anon": "workingset_refault_anon",
    "workingset_refault_file": "workingset_refault_file",
    "workingset_activate_anon": "workingset_activate_anon",
    "workingset_activate_file": "workingset_activate_file",
    "workingset_restore_anon": "workingset_restore_anon",
    "workingset_restore_file": "workingset_restore_file",
}


def _not_in_v2(name: str, why: str) -> OSError:
    return OSError(errno.EOPNOTSUPP, f"{name}: no cgroup v2 equivalent: {why}")


class _V1:
    """cgroup v1 files: names and texts are the kernel's own."""

    version = 1

    def read(self, gdir: str, name: str) -> str:
        return _read_file(os.path.join(gdir, name))

    def write(self, gdir: str, name: str, text: str) -> None:
        _write_file(os.path.join(gdir, name), text)

    def procs_file(self) -> str:
        return "cgroup.procs"

    def event_names(self, name: str) -> str:
        return name

    def setup_root(self, root: str, memory: str | None) -> None:
        if memory is not None:
            self.write(root, "memory.limit_in_bytes", str(memory))

    def before_child(self, gdir: str) -> None:
        pass


class _V2(_V1):
    """cgroup v2 files behind the v1 names a scenario uses (V2_MAP)."""

    version = 2

    def _target(self, name: str) -> tuple[str, str]:
        entry = V2_MAP.get(name)
        if isinstance(entry, str):
            raise _not_in_v2(name, entry)
        return entry if entry is not None else (name, "same")   # v2 names pass through

    def read(self, gdir: str, name: str) -> str:
        v2, how = self._target(name)
        if how == "use_hierarchy":
            return "1\n"
        text = _read_file(os.path.join(gdir, v2))
        if how == "same":
            return text
        if how == "limit":
            return UNLIMITED + "\n" if text.strip() == "max" else text
        if how.startswith("events:") or how.startswith("stat:"):
            return f"{parse.parse_stat(text).get(how.split(':', 1)[1], 0)}\n"
        if how == "oom_control":
            return f"oom_kill_disable 0\nunder_oom 0\noom_kill {parse.parse_stat(text).get('oom_kill', 0)}\n"
        if how == "memsw":
            swap = _read_quiet(os.path.join(gdir, "memory.swap.current")).strip() or "0"
            return f"{int(text) + int(swap)}\n"
        if how == "stat":
            v2stat = parse.parse_stat(text)
            lines = [f"{k1} {v2stat[k2]}" for k1, k2 in V2_STAT_KEYS.items() if k2 in v2stat]
            swap = _read_quiet(os.path.join(gdir, "memory.swap.current")).strip()
            if swap.isdigit():
                lines.append(f"swap {swap}")
            return "\n".join(lines) + "\n"
        raise OSError(errno.EINVAL, f"{name}: not readable")

    def write(self, gdir: str, name: str, text: str) -> None:
        v2, how = self._target(name)
        if how == "same":
            _write_file(os.path.join(gdir, v2), text)
        elif how == "limit":
            value = text.split("\0", 1)[0].strip()
            _write_file(os.path.join(gdir, v2), "max" if value == "-1" else text)
        elif how == "force_empty":
            # v1 force_empty reclaims everything it can; v2 memory.reclaim takes an amount.
            current = _read_file(os.path.join(gdir, "memory.current")).strip()
            if int(current) > 0:
                try:
                    _write_file(os.path.join(gdir, v2), current)
                except OSError as e:
                    if e.errno != errno.EAGAIN:   # "could not reclaim all of it" is fine
                        raise
        elif how == "use_hierarchy":
            if text.strip() != "1":
                raise OSError(errno.EINVAL, "v2 is always hierarchical")
        else:
            raise _not_in_v2(name, "read-only in v2" if how else "")

    def procs_file(self) -> str:
        return "cgroup.procs"

    def event_names(self, name: str) -> str:
        raise _not_in_v2(name, V2_MAP["cgroup.event_control"])  # type: ignore[arg-type]

    def setup_root(self, root: str, memory: str | None) -> None:
        if memory is not None:
            self.write(root, "memory.limit_in_bytes", str(memory))

    def before_child(self, gdir: str) -> None:
        """Children of a v2 group get memory files only if its subtree_control says so."""
        if "memory" not in _read_quiet(os.path.join(gdir, "cgroup.subtree_control")).split():
            _write_file(os.path.join(gdir, "cgroup.subtree_control"), "+memory")


def _read_file(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write_file(path: str, text: str) -> None:
    """One write() of the exact bytes, as a shell's echo would do it."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


_FILL = bytes(range(256)) * 4096   # 1 MiB of file data


def _fill(fd: int, start: int, end: int) -> None:
    """Write [start, end) of a file, sync it and drop the new pages from the page cache
    (pages cached before, charged to some group, stay where they are)."""
    off = start
    while off < end:
        off += os.pwrite(fd, _FILL[:min(len(_FILL), end - off)], off)
    os.fdatasync(fd)
    first = -(-start // PAGE_SIZE) * PAGE_SIZE
    os.posix_fadvise(fd, first, end - first, os.POSIX_FADV_DONTNEED)


def _procs_pid(text: str) -> int | None:
    """The pid a cgroup.procs write names, as kernel/cgroup/cgroup-v1.c
    __cgroup1_procs_write() reads it: kstrtoint(strstrip(buf)) of the text up to its
    first NUL; None where the kernel refuses the text."""
    try:
        return parse.kstrtoint(text.split("\0", 1)[0].strip(" \t\n\v\f\r"))
    except OSError:
        return None


# ----------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, exit_code field) of /proc/PID/stat, None if the process is gone."""
    text = _read_quiet(f"/proc/{pid}/stat")
    if not text:
        return None
    fields = text[text.rindex(")") + 2:].split()
    code = int(fields[49]) if len(fields) > 49 else 0   # field 52: exit_code (waitpid format)
    return fields[0], code


PF_EXITING = 0x4          # include/linux/sched.h
SIGKILL_BIT = 1 << (signal.SIGKILL - 1)


def _dying(pid: int) -> bool:
    """SIGKILL pending or already exiting.  An OOM victim is in this state for a while:
    the OOM reaper (mm/oom_kill.c) frees its memory before the task itself has exited,
    so others' charges can succeed before the victim is gone."""
    text = _read_quiet(f"/proc/{pid}/stat")
    if not text:
        return False
    fields = text[text.rindex(")") + 2:].split()
    if len(fields) > 6 and int(fields[6]) & PF_EXITING:
        return True
    for line in _read_quiet(f"/proc/{pid}/status").splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & SIGKILL_BIT:
            return True
    return False


def _in_oom_wait(pid: int) -> bool:
    """Blocked in the memcg charge path: state D with wchan mem_cgroup_oom_synchronize."""
    st = _proc_stat(pid)
    if st is None or st[0] != "D":
        return False
    wchan = _read_quiet(f"/proc/{pid}/wchan").strip()
    return any(w in wchan for w in OOM_WAIT_WCHANS)


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
        if self._dead() or (_dying(self.pid) and self._wait_death(5)):
            return self._classify()
        if self._pending and _in_oom_wait(self.pid):
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
        st = _proc_stat(self.pid)          # a zombie child of a live worker keeps its status
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
            if _in_oom_wait(self.pid):
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

    def _call(self, cmd: dict, fds: list[int] | None = None, queue: bool = True) -> dict | None:
        """Run one command.  A blocked task queues it (the reply comes when it wakes up,
        as the simulated kernel queues work behind a sleep) when `queue`; commands that
        need an answer refuse instead.  None when the task blocked or died meanwhile."""
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
        """Unmap nbytes, newest mappings first; the worker has no oldest-first order."""
        if oldest_first:
            raise NotImplementedError("free_anon oldest first")
        self._call({"op": "free_anon", "n": int(nbytes)})

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
        return self._k._adopt(reply["pid"], mine, self.group)

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


# ----------------------------------------------------------------------------- events


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


# ----------------------------------------------------------------------------- the kernel

_OPEN: set["LinuxKernel"] = set()
_OPEN_LOCK = threading.Lock()
_HANDLERS_INSTALLED = False
_SEQ = 0


def _close_all() -> None:
    """Close every LinuxKernel this process opened (atexit and signal handlers)."""
    with _OPEN_LOCK:
        kernels = [k for k in _OPEN if k._owner == os.getpid()]
    for k in kernels:
        try:
            k.close()
        except Exception as e:  # noqa: BLE001 - at exit: report in one line, go on
            print(f"memcg: cleaning up {k.root_name}: {e}", file=sys.stderr)


def _on_fatal_signal(signum, frame) -> None:
    _close_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    atexit.register(_close_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _on_fatal_signal)


class LinuxKernel(Kernel):
    """Real memory cgroups under a root this object creates, owns and removes.

    parent: the group to create the root in (default: the caller's own memory cgroup);
    version: 1 or 2 (default: what `parent` is, or what find_memory_cgroup() finds);
    memory: if given, the root's limit - a scenario's machine size on a bigger machine;
    workdir: where files and directories are made (default: a new temporary directory,
    on a disk file system so page cache behaves as it does for real files);
    tick: real seconds one advance() tick waits (default 0.02);
    pin: pin tasks to CPUs round-robin, the way the simulated kernel places them;
    sparse_files: make data files as holes (fast) instead of real blocks.
    Raises LinuxUnavailable (one line) when real cgroups cannot be used.
    """

    backend = "linux"

    def __init__(self, parent: str | None = None, *, version: int | None = None,
                 memory: str | None = None, workdir: str | None = None, tick: float = 0.02,
                 pin: bool = True, sparse_files: bool = False):
        global _SEQ
        if parent is None:
            if os.geteuid() != 0:
                raise LinuxUnavailable(errno.EPERM, "real cgroups need root (run as root, or pass "
                                                    "parent= a delegated memory cgroup)")
            parent, found = find_memory_cgroup()
            version = version or found
        version = version or (2 if os.path.exists(os.path.join(parent, "cgroup.controllers")) else 1)
        if version not in (1, 2):
            raise ValueError(f"version: expected 1 or 2, got {version!r}")
        _check_usable(parent, version)
        self.version = version
        self._fs = _V1() if version == 1 else _V2()
        self.tick = float(tick)
        self.pin = pin
        self.sparse_files = sparse_files
        self._owner = os.getpid()
        self._closed = False
        self._tasks: dict[int, LinuxTask] = {}
        self._events: list[LinuxEvent] = []
        self._oom_claimed: dict[str, int] = {}
        self._last_activity = time.monotonic()
        self._cpus = sorted(os.sched_getaffinity(0))
        self._next_cpu = 0
        _SEQ += 1
        self.root_name = f"{ROOT_PREFIX}{os.getpid()}-{_SEQ}"
        self.parent_dir = parent
        self.root_dir = os.path.join(parent, self.root_name)
        # Files live in directories named like the root, so that what a killed
        # controller leaves behind can be recognised and swept by the next one.
        file_bases = [workdir or tempfile.gettempdir()] + (["/dev/shm"] if os.path.isdir("/dev/shm") else [])
        self._sweep_stale(parent, file_bases)
        _install_handlers()
        self._workdir = self._make_private_dir(file_bases[0])
        self._shmdir = self._make_private_dir(file_bases[1]) if len(file_bases) > 1 else None
        self.working_fs = fs_type(self._workdir)
        with _OPEN_LOCK:
            _OPEN.add(self)
        try:
            _make_group_dir(self.root_dir)
            self._fs.setup_root(self.root_dir, memory)
            self._warm = os.path.join(self._workdir, ".warm")
            with open(self._warm, "wb") as f:
                f.write(b"\1" * 65536)
        except OSError as e:
            self.close()
            raise LinuxUnavailable(e.errno or errno.EIO,
                                   f"cannot set up a group under {parent}: {e.strerror or e}") from None

    # --- paths ------------------------------------------------------------------------------

    def _group_dir(self, path: str) -> str:
        """The directory of a group path; PermissionError for a path leaving the root."""
        if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
            raise ValueError(f"expected a group path like '/a/b', got {path!r}")
        parts: list[str] = []
        for p in path.split("/"):
            if p in ("", "."):
                continue
            if p == "..":
                if not parts:
                    raise PermissionError(errno.EACCES, f"{path}: leaves the kernel's root group")
                parts.pop()
                continue
            parts.append(p)
        return os.path.join(self.root_dir, *parts)

    def _split(self, path: str) -> tuple[str, str]:
        """(group directory, file name) of a file path."""
        full = self._group_dir(path)
        if full == self.root_dir:
            raise IsADirectoryError(errno.EISDIR, "Is a directory", path)
        return os.path.dirname(full), os.path.basename(full)

    @staticmethod
    def _oserror(e: OSError, path: str) -> OSError:
        """The kernel's errno with the kernel-relative path (no machine paths in messages)."""
        return type(e)(e.errno, e.strerror or os.strerror(e.errno or 0), path)

    # --- the cgroup filesystem ------------------------------------------------------------------

    def mkdir(self, path: str) -> None:
        gdir = self._group_dir(path)
        if gdir == self.root_dir:
            raise FileExistsError(errno.EEXIST, "File exists", path)
        try:
            self._fs.before_child(os.path.dirname(gdir))
            _make_group_dir(gdir)
        except OSError as e:
            raise self._oserror(e, path) from None

    def rmdir(self, path: str) -> None:
        gdir = self._group_dir(path)
        if gdir == self.root_dir:
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        try:
            _remove_group_dir(gdir)
        except OSError as e:
            raise self._oserror(e, path) from None

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(self._group_dir(path)))
        except OSError as e:
            raise self._oserror(e, path) from None

    def read(self, path: str) -> str:
        gdir, name = self._split(path)
        self._quiesce()       # a task woken meanwhile finishes what it was asked first
        try:
            return self._fs.read(gdir, name)
        except OSError as e:
            raise self._oserror(e, path) from None

    def write(self, path: str, text: str) -> None:
        gdir, name = self._split(path)
        if name in ("cgroup.procs", "tasks"):
            self._check_pid_write(text, path)
        try:
            self._fs.write(gdir, name, text)
        except OSError as e:
            raise self._oserror(e, path) from None
        finally:
            self._touched()
            self._quiesce(grace=0.05)
        if name in ("cgroup.procs", "tasks"):
            pid = _procs_pid(text)
            if pid in self._tasks:
                self._tasks[pid].group = self._relative(gdir)

    def _check_pid_write(self, text: str, path: str) -> None:
        """Only processes this kernel started may be moved; the kernel parses the rest."""
        pid = _procs_pid(text)
        if pid is None or pid < 0:
            return          # the kernel answers EINVAL
        if pid == 0 or (pid not in self._tasks and os.path.exists(f"/proc/{pid}")):
            raise PermissionError(errno.EPERM, f"{path}: pid {pid} is not a task of this kernel")

    def _relative(self, gdir: str) -> str:
        rel = os.path.relpath(gdir, self.root_dir)
        return "/" if rel == "." else "/" + rel

    # --- processes ------------------------------------------------------------------------------

    def spawn(self, path: str = "/", *, start_inside: bool = False) -> LinuxTask:
        """A new worker process in the group at path.

        It starts in the caller's own group, warms up, and is then moved in (charges stay
        where they were made), so the group is charged only for what the task does.
        start_inside=True starts it in the group instead, start-up memory included.
        """
        gdir = self._group_dir(path)
        if not os.path.isdir(gdir):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        mine, theirs = socket.socketpair()
        argv = [sys.executable, "-I", "-S", WORKER_FILE, str(theirs.fileno()), str(os.getpid())]
        if start_inside:
            procs = os.path.join(gdir, self._fs.procs_file())
            argv = ["/bin/sh", "-c", 'p=$1; shift; echo $$ > "$p" || exit 111; exec "$@"',
                    "sh", procs] + argv
        try:
            popen = subprocess.Popen(argv, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, close_fds=True)
        finally:
            theirs.close()
        task = LinuxTask(self, popen.pid, mine, path if start_inside else OUTSIDE, popen)
        self._tasks[task.pid] = task
        self._pin(task)
        task._pending = 1                          # the "ready" message
        task._wait(START_TIMEOUT)
        if task.state in ("exited", "oom_killed"):
            return task
        if not start_inside:
            self._warm_up(task)
            self._move(task, path)
        return task

    def _warm_up(self, task: LinuxTask) -> None:
        """Run every code path once in the caller's group, so that the interpreter's own
        allocations for them are charged there, not to the task's group."""
        task._call({"op": "touch_anon", "n": PAGE_SIZE})
        task._call({"op": "free_anon", "n": PAGE_SIZE})
        task._call({"op": "read_file", "path": self._warm, "n": 65536})
        task._call({"op": "ping"})

    def _adopt(self, pid: int, chan: socket.socket, group: str) -> LinuxTask:
        task = LinuxTask(self, pid, chan, group)
        self._tasks[pid] = task
        task._pending = 1                          # the child's "ready" message
        task._wait(START_TIMEOUT)
        self._pin(task)
        return task

    def _pin(self, task: LinuxTask) -> None:
        """CPU n % ncpus for the n-th task, as the simulated kernel places its tasks."""
        cpu = self._cpus[self._next_cpu % len(self._cpus)]
        self._next_cpu += 1
        task.cpu = cpu
        if self.pin:
            try:
                os.sched_setaffinity(task.pid, {cpu})
            except OSError:
                pass

    def _move(self, task: LinuxTask, path: str) -> None:
        gdir = self._group_dir(path)
        try:
            _write_file(os.path.join(gdir, self._fs.procs_file()), str(task.pid))
        except OSError as e:
            raise self._oserror(e, path + "/" + self._fs.procs_file()) from None
        task.group = self._relative(gdir)
        self._touched()

    def task(self, pid: int) -> LinuxTask:
        """The task with this pid (exited ones included)."""
        return self._tasks[pid]

    def _claim_oom_kill(self, group: str) -> bool:
        """Count one OOM kill of `group` for a task found dead of SIGKILL, if the group's
        oom_kill counter has one that no task has claimed yet.  The counter is raised
        right after the signal is sent, so a short bounded wait covers that window."""
        if group == OUTSIDE:
            return False
        deadline = time.monotonic() + 0.2
        while True:
            try:
                oom_control = self.read(group.rstrip("/") + "/memory.oom_control")
                kills = parse.parse_stat(oom_control).get("oom_kill", 0)
            except OSError:
                return False
            if kills > self._oom_claimed.get(group, 0):
                self._oom_claimed[group] = self._oom_claimed.get(group, 0) + 1
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)

    def _touched(self) -> None:
        self._last_activity = time.monotonic()

    def _quiesce(self, grace: float = 0.0) -> None:
        """Wait (bounded) until every task has answered what it was asked, is blocked in
        the charge path, or is gone: the state the simulated kernel is always in."""
        for task in list(self._tasks.values()):
            if task._pending and task._final is None:
                task._wait(grace=grace)

    # --- files -------------------------------------------------------------------------------------

    def _safe(self, base: str, name: str) -> str:
        parts = [p for p in str(name).split("/") if p not in ("", ".")]
        if not parts or ".." in parts:
            raise OSError(errno.EINVAL, f"{name!r}: a file name must stay inside the working directory")
        path = os.path.join(base, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def _data_path(self, name: str, size: int) -> str:
        """A data file at least `size` bytes long.  This process writes what is missing
        (outside the groups), syncs it and drops it from the page cache, so only the
        task's own read charges its group.  Real data, not holes: ext4 reads real blocks
        in large readahead folios, the way a real workload's files are read."""
        path = self._safe(os.path.join(self._workdir, "files"), name)
        if size:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                have = os.fstat(fd).st_size
                if have < size:
                    if self.sparse_files:
                        os.ftruncate(fd, size)
                    else:
                        _fill(fd, have, size)
            finally:
                os.close(fd)
        return path

    def _shm_path(self, name: str, size: int) -> str:
        if self._shmdir is None:
            raise OSError(errno.ENOENT, "no tmpfs at /dev/shm for shared memory")
        path = self._safe(self._shmdir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
        finally:
            os.close(fd)
        return path

    def _existing_path(self, name: str) -> str:
        data = self._safe(os.path.join(self._workdir, "files"), name)
        if os.path.lexists(data) or self._shmdir is None:
            return data
        shm = self._safe(self._shmdir, name)
        return shm if os.path.lexists(shm) else data

    def _base_dir(self, pid: int, fs: str, where: str | None) -> str:
        """Where a task makes directories and files: its own directory on fs, or a
        scratch directory of this kernel."""
        if where is not None:
            real = os.path.realpath(where)
            if not any(real.startswith(d + os.sep) for d in (self._workdir, self._shmdir) if d):
                raise PermissionError(errno.EACCES, f"{where}: not a scratch directory of this kernel")
            return real
        if fs == "tmpfs":
            base = self._shmdir
        elif fs == self.working_fs or fs == "disk":
            base = self._workdir
        else:
            raise ValueError(f"fs: this kernel has tmpfs and {self.working_fs} (the working "
                             f"directory's file system), not {fs!r}")
        if base is None:
            raise OSError(errno.ENOENT, "no tmpfs at /dev/shm")
        path = os.path.join(base, "dirs", str(pid))
        os.makedirs(path, exist_ok=True)
        return path

    def scratch_dir(self, fs: str = "disk") -> str:
        """A directory this kernel removes on close: on the working file system ("disk")
        or on tmpfs ("tmpfs")."""
        base = self._workdir if fs == "disk" else self._shmdir
        if base is None:
            raise OSError(errno.ENOENT, f"no {fs} scratch space")
        return tempfile.mkdtemp(prefix="scratch-", dir=base)

    # --- events ---------------------------------------------------------------------------------------

    def event(self, path: str, args: str = "") -> LinuxEvent:
        """An eventfd registered with "<efd> <cfd> <args>" in the group's cgroup.event_control."""
        gdir, name = self._split(path)
        name = self._fs.event_names(name)
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            cfd = os.open(os.path.join(gdir, name), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            os.close(efd)
            raise self._oserror(e, path) from None
        try:
            _write_file(os.path.join(gdir, "cgroup.event_control"), f"{efd} {cfd} {args}")
        except OSError as e:
            os.close(efd)
            raise self._oserror(e, path) from None
        finally:
            os.close(cfd)   # the registration holds what it needs; only the eventfd matters
        ev = LinuxEvent(self, f"{path} {args}".rstrip(), efd)
        self._events.append(ev)
        return ev

    # --- time -----------------------------------------------------------------------------------------

    def advance(self, ticks: int = 1) -> None:
        """Let real time pass: tasks finish what they were asked, then `tick` seconds per
        tick go by (event work items, writeback, the kernel's own pace)."""
        self._quiesce()
        if ticks > 0 and self.tick > 0:
            time.sleep(self.tick * ticks)
        self._quiesce()

    def settle(self) -> None:
        """Wait until memory.stat is exact: tasks are idle and one periodic statistics
        flush (every 2 s, mm/memcontrol.c flush_memcg_stats_dwork) has run since the last
        change.  Until then memory.stat can lag by up to 64 pages per CPU."""
        self._quiesce()
        wait = self._last_activity + STAT_FLUSH_WAIT - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def debugfs(self) -> dict:
        """What the real kernel shows of its internals without debugfs: machine-wide figures."""
        out: dict = {"static_keys": {}}
        for line in _read_quiet("/proc/cgroups").splitlines():
            f = line.split()
            if f and f[0] == "memory" and len(f) >= 3:
                out["memcg_ids_in_use"] = int(f[2])
        vm = parse.parse_stat(_read_quiet("/proc/vmstat"))
        if "nr_free_pages" in vm:
            out["nr_free_pages"] = vm["nr_free_pages"]
        if "oom_kill" in vm:
            out["global_oom_kills"] = vm["oom_kill"]
        marks = {"min": 0, "low": 0, "high": 0}
        for key, value in parse.key_values(_read_quiet("/proc/zoneinfo")):
            if key in marks and value.isdigit():
                marks[key] += int(value)
        out["watermarks"] = marks
        return out

    # --- clean-up ---------------------------------------------------------------------------------------

    def close(self) -> None:
        """Kill every task, close every event, remove every group and file made.

        Safe to call again (after an interruption it carries on).  Raises OSError at the
        end if a group could not be removed."""
        if self._closed:
            return
        for ev in self._events:
            ev.close()
        tasks = list(self._tasks.values())
        for t in tasks:
            t._kill()
        for t in tasks:
            t._wait_death(10)
            if t._popen is not None:
                try:
                    t._popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
            if t._final is None:
                t._final = "exited"
            t._close_channel()
        problems = self._remove_tree(self.root_dir)
        for d in (self._workdir, self._shmdir):
            if d:
                shutil.rmtree(d, ignore_errors=True)
        self._closed = True
        with _OPEN_LOCK:
            _OPEN.discard(self)
        if problems:
            raise OSError(errno.EBUSY, "could not remove " + "; ".join(problems))

    def _remove_tree(self, top: str) -> list[str]:
        """rmdir every group below and including top, deepest first; a group whose last
        tasks are still exiting answers EBUSY for a moment, so retry (bounded)."""
        if not os.path.isdir(top):
            return []
        dirs = [top]
        for here, subdirs, _ in os.walk(top):
            dirs.extend(os.path.join(here, d) for d in subdirs)
        problems = []
        for d in sorted(dirs, key=lambda p: p.count("/"), reverse=True):
            deadline = time.monotonic() + 10
            while True:
                try:
                    _remove_group_dir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or time.monotonic() > deadline:
                        problems.append(f"{self._relative(d)}: {e.strerror}")
                        break
                    time.sleep(0.01)
        return problems

    def _make_private_dir(self, base: str) -> str:
        path = os.path.join(base, self.root_name)
        os.mkdir(path, 0o700)
        return path

    @staticmethod
    def _stale(names: list[str]) -> list[str]:
        """Names of our scheme whose owner process is gone."""
        out = []
        for name in names:
            if not name.startswith(ROOT_PREFIX):
                continue
            owner = name[len(ROOT_PREFIX):].split("-", 1)[0]
            if owner.isdigit() and int(owner) != os.getpid() and not os.path.exists(f"/proc/{owner}"):
                out.append(name)
        return out

    def _sweep_stale(self, parent: str, file_bases: list[str]) -> None:
        """Remove what a LinuxKernel whose process was killed (SIGKILL: no clean-up ran)
        left behind: empty groups and file directories of our own naming scheme whose
        owner process is gone.  Its workers died with it (PR_SET_PDEATHSIG)."""
        try:
            for name in self._stale(os.listdir(parent)):
                self._remove_tree_quietly(os.path.join(parent, name))
        except OSError:
            pass
        for base in file_bases:
            try:
                for name in self._stale(os.listdir(base)):
                    shutil.rmtree(os.path.join(base, name), ignore_errors=True)
            except OSError:
                pass

    def _remove_tree_quietly(self, top: str) -> None:
        dirs = [top]
        for here, subdirs, _ in os.walk(top):
            dirs.extend(os.path.join(here, d) for d in subdirs)
        for d in sorted(dirs, key=lambda p: p.count("/"), reverse=True):
            try:
                _remove_group_dir(d)
            except OSError:
                return
