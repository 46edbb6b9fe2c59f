"""A real command run inside a group of a LinuxKernel: its whole process tree, from its
first instruction on, is charged to that group, and it dies with the kernel object.

The command is forked, writes its own pid into the group's cgroup.procs and arms
PR_SET_PDEATHSIG before it execs, so nothing it does is charged elsewhere and a
controller killed by SIGKILL takes it along.  Its children are in the group because
fork() puts a child in its parent's cgroup (kernel/cgroup/cgroup.c: cgroup_post_fork);
kill() sends SIGKILL to every process the group lists until it lists none.

The death signal reaches the command's first process only (a fork clears it), so a
watchdog process, outside the group, holds the read end of a pipe whose write end is
the controller's: when the pipe ends without the word to stand down - the controller
died, SIGKILL included - it kills what the group lists and removes the group and the
kernel's root.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time

from . import files

PR_SET_PDEATHSIG = 1   # include/uapi/linux/prctl.h
_libc = ctypes.CDLL(None, use_errno=True)


# The watchdog: standard library only, run with -I -S so it imports nothing of ours.
WATCHDOG = r"""
import os, shutil, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
procs, rest = sys.argv[1], sys.argv[2:]
dirs, trees = rest[:rest.index("--")], rest[rest.index("--") + 1:]
if os.read(0, 1) == b"q":
    sys.exit(0)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        with open(procs) as f:
            pids = [int(p) for p in f.read().split()]
    except OSError:
        break
    if not pids:
        break
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.01)
for d in dirs:
    for _ in range(100):
        try:
            os.rmdir(d)
            break
        except FileNotFoundError:
            break
        except OSError:
            time.sleep(0.01)
for t in trees:
    shutil.rmtree(t, ignore_errors=True)
"""


class LinuxCommand:
    """A command started by LinuxKernel.start_command(); `pid` is its first process."""

    def __init__(self, popen: subprocess.Popen, group: str, procs_path: str,
                 watchdog: subprocess.Popen | None = None, watch_fd: int | None = None):
        self.popen = popen
        self.pid = popen.pid
        self.group = group
        self._procs = procs_path
        self._killed = False
        self._watchdog = watchdog
        self._watch_fd = watch_fd

    def pids(self) -> list[int]:
        """The processes of the command's group now (cgroup.procs), in the kernel's order."""
        return [int(p) for p in files.read_quiet(self._procs).split() if p.isdigit()]

    def poll(self) -> int | None:
        """The first process's exit status (negative: the signal), None while it runs."""
        return self.popen.poll()

    @property
    def killed(self) -> bool:
        """kill() was called: a death by SIGKILL after it is ours, not the kernel's."""
        return self._killed

    def kill(self, timeout: float = 10.0) -> None:
        """SIGKILL every process in the group, until it is empty (bounded), and reap the
        first one.  Only the command's own tree is there: the group was made for it."""
        self._killed = True
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if self.popen.poll() is None and self.pid not in pids:
                pids.append(self.pid)   # not yet in the group: it has not exec'd
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.popen.poll()
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        try:
            self.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        self._stand_down()

    def _stand_down(self) -> None:
        """The controller did the clean-up itself: the watchdog exits doing nothing."""
        if self._watch_fd is None:
            return
        try:
            os.write(self._watch_fd, b"q")
        except OSError:
            pass
        os.close(self._watch_fd)
        self._watch_fd = None
        if self._watchdog is not None:
            try:
                self._watchdog.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()


def start(argv: list[str], group: str, procs_path: str, remove: tuple[str, ...] = (),
          remove_trees: tuple[str, ...] = (), **popen_kwargs) -> LinuxCommand:
    """Fork, join the group at procs_path, arm the death signal, exec argv; with a
    watchdog that, should this process die first, kills the group's processes, removes
    the group directories in `remove` (deepest first) and the file trees in
    `remove_trees`.  Raises OSError when the command cannot be started (not found,
    not executable)."""
    parent = os.getpid()
    r, w = os.pipe()
    os.set_inheritable(w, False)
    try:
        watchdog = subprocess.Popen([sys.executable, "-I", "-S", "-c", WATCHDOG, procs_path, *remove, "--",
                                     *remove_trees],
                                    stdin=r, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True, close_fds=True)
    except BaseException:
        os.close(w)
        raise
    finally:
        os.close(r)
    try:
        popen = _exec(argv, procs_path, parent, popen_kwargs)
    except BaseException:
        _quit(w, watchdog)
        raise
    return LinuxCommand(popen, group, procs_path, watchdog, w)


def _quit(fd: int, watchdog: subprocess.Popen) -> None:
    try:
        os.write(fd, b"q")
    finally:
        os.close(fd)
        watchdog.wait()


def _exec(argv: list[str], procs_path: str, parent: int, popen_kwargs: dict) -> subprocess.Popen:
    """The command, joined to the group and armed with the death signal before exec."""

    def join_group() -> None:   # runs in the child, between fork and exec
        fd = os.open(procs_path, os.O_WRONLY)
        try:
            os.write(fd, b"0")   # "0" is the writing process (cgroup-v1.c: __cgroup1_procs_write)
        finally:
            os.close(fd)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(137)   # the controller died before the death signal was armed

    # close_fds keeps the watchdog's pipe out of the command
    return subprocess.Popen(argv, preexec_fn=join_group, start_new_session=True,
                            close_fds=True, **popen_kwargs)
