"""A real command run inside a group of a LinuxKernel: its whole process tree, from its
first instruction on, is charged to that group, and it dies with the kernel object.

The command is forked, writes its own pid into the group's cgroup.procs and arms
PR_SET_PDEATHSIG before it execs, so nothing it does is charged elsewhere and a
controller killed by SIGKILL takes it along.  Its children are in the group because
fork() puts a child in its parent's cgroup (kernel/cgroup/cgroup.c: cgroup_post_fork);
kill() sends SIGKILL to every process the group lists until it lists none.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time

from . import files

PR_SET_PDEATHSIG = 1   # include/uapi/linux/prctl.h
_libc = ctypes.CDLL(None, use_errno=True)


class LinuxCommand:
    """A command started by LinuxKernel.start_command(); `pid` is its first process."""

    def __init__(self, popen: subprocess.Popen, group: str, procs_path: str):
        self.popen = popen
        self.pid = popen.pid
        self.group = group
        self._procs = procs_path
        self._killed = False

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


def start(argv: list[str], group: str, procs_path: str, **popen_kwargs) -> LinuxCommand:
    """Fork, join the group at procs_path, arm the death signal, exec argv.  Raises
    OSError when the command cannot be started (not found, not executable)."""
    parent = os.getpid()

    def join_group() -> None:   # runs in the child, between fork and exec
        fd = os.open(procs_path, os.O_WRONLY)
        try:
            os.write(fd, b"0")   # "0" is the writing process (cgroup-v1.c: __cgroup1_procs_write)
        finally:
            os.close(fd)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(137)   # the controller died before the death signal was armed

    popen = subprocess.Popen(argv, preexec_fn=join_group, start_new_session=True,
                             close_fds=True, **popen_kwargs)
    return LinuxCommand(popen, group, procs_path)
