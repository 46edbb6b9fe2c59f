"""LinuxKernel: the `Kernel` interface on real memory cgroups.

Groups live under a root this object creates and owns: by default a new child of the
memory cgroup the calling process is in, so everything stays inside any limit the
caller lives under.  Paths are relative to that root.  Tasks are worker processes
(client.LinuxTask), events are eventfds (events.LinuxEvent); files are named by their
v1 names on either cgroup version (v2names).
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from ... import parse
from ...kernel import PAGE_SIZE, Kernel
from . import cleanup, command, files, host, procfs, scratchfs, v2names
from .client import LinuxTask
from .events import LinuxEvent, Notifier, V2Event, open_v2_event
from .shrinker import SHRINKER_MARGIN, LinuxShrinkerEvent, ShrinkerDaemon, parse_report

# The worker runs as a file of its own, so it imports nothing of the package.
WORKER_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "worker.py")
# mm/memcontrol.c: FLUSH_TIME (2 * HZ): the periodic memcg statistics flush.  memory.stat
# is exact once one such flush has run after the last change.
STAT_FLUSH_WAIT = 2.1
# The longest advance() waits for the signals rmdir sends to the removed group's events
# (the offline work of an emulated guest on a loaded machine can take seconds).
REMOVAL_SIGNAL_WAIT = 5.0
START_TIMEOUT = 30.0
# forks a worker makes in its warm-up: the heap pages its fork path settles into
WARM_FORKS = 8
OUTSIDE = "(outside)"   # the group of a worker still starting in the caller's own group
# The userspace shrinker's file (docs/shrinker.md), served by shrinkerd on real kernels.
SHRINKER_FILE = "mempressure.shrinker"


def _procs_pid(text: str) -> int | None:
    """The pid a cgroup.procs write names, as kernel/cgroup/cgroup-v1.c
    __cgroup1_procs_write() reads it: kstrtoint(strstrip(buf)) of the text up to its
    first NUL; None where the kernel refuses the text."""
    try:
        return parse.kstrtoint(text.split("\0", 1)[0].strip(" \t\n\v\f\r"))
    except OSError:
        return None


def worker_env() -> dict:
    """The workers' environment: the caller's, with glibc's rseq registration off (a
    forked child of a worker runs without its parent's memory: worker.py, FORK_CODE)."""
    env = dict(os.environ)
    tunables = env.get("GLIBC_TUNABLES")
    env["GLIBC_TUNABLES"] = f"{tunables}:glibc.pthread.rseq=0" if tunables else "glibc.pthread.rseq=0"
    return env


class LinuxKernel(Kernel):
    """Real memory cgroups under a root this object creates, owns and removes.

    parent: the group to create the root in (default: the caller's own memory cgroup);
    version: 1 or 2 (default: what `parent` is, or what find_memory_cgroup() finds);
    memory: if given, the root's limit - a scenario's machine size on a bigger machine;
    swap: if given (with memory) and the host has swap, the most the root's groups may
    swap out (its memsw limit is memory + swap on v1, memory.swap.max on v2);
    workdir: where files and directories are made (default: a new temporary directory,
    on a disk file system so page cache behaves as it does for real files);
    tick: real seconds one advance() tick waits (default 0.02);
    pin: pin tasks to CPUs round-robin, the way the simulated kernel places them;
    sparse_files: make data files as holes (fast) instead of real blocks;
    v2_stat: on cgroup v2, show memory.stat as the kernel prints it (v2 keys: a v2
    scenario's view) instead of under the v1 keys a v1 scenario reads (v2names.V2Files).
    Raises LinuxUnavailable (one line) when real cgroups cannot be used.
    """

    backend = "linux"

    def __init__(self, parent: str | None = None, *, version: int | None = None,
                 memory: str | None = None, workdir: str | None = None, tick: float = 0.02,
                 pin: bool = True, sparse_files: bool = False, swap: str | None = None,
                 v2_stat: bool = False):
        if parent is None:
            if os.geteuid() != 0:
                raise host.LinuxUnavailable(errno.EPERM, "real cgroups need root (run as root, or "
                                                         "pass parent= a delegated memory cgroup)")
            parent, found = host.find_memory_cgroup()
            version = version or found
        version = version or (2 if os.path.exists(os.path.join(parent, "cgroup.controllers")) else 1)
        if version not in (1, 2):
            raise ValueError(f"version: expected 1 or 2, got {version!r}")
        host.check_usable(parent, version)
        self.version = version
        self._fs = v2names.V1Files() if version == 1 else v2names.V2Files(v2_stat)
        self.tick = float(tick)
        self.pin = pin
        self.sparse_files = sparse_files
        self._owner = os.getpid()
        self._closed = False
        self._dirfs: scratchfs.ScratchExt4 | None = None
        self._closing = False
        self._tasks: dict[int, LinuxTask] = {}
        # pid -> /proc/PID/stat starttime when the task was learned: a pid alone may be
        # reused by another process once the task has exited and been reaped.
        self._start_times: dict[int, int | None] = {}
        self._events: list[LinuxEvent] = []
        # mempressure.shrinker: the daemon (started on first use), the watched
        # registrations, and the lock a task's channel is used under.
        self._shrinkerd: ShrinkerDaemon | None = None
        # The margin of that daemon (None where mempressure.shrinker is not served): what
        # a simulated kernel that predicts this one runs (SimKernel(shrinker="shrinkerd")).
        self.shrinkerd_margin: int | None = SHRINKER_MARGIN
        self._watched: list[LinuxShrinkerEvent] = []
        self._task_lock = threading.RLock()
        self._dispatching = False
        self.shrinker_errors: list[str] = []
        self._notifier: Notifier | None = None      # the v2 events' watcher thread
        self._commands: list[command.LinuxCommand] = []
        self._oom_claimed: dict[str, int] = {}
        self._last_activity = time.monotonic()
        self._cpus = sorted(os.sched_getaffinity(0))
        self._next_cpu = 0
        self.root_name = cleanup.new_name()
        self.parent_dir = parent
        self.root_dir = os.path.join(parent, self.root_name)
        # Files live in directories named like the root, each holding the lock this
        # controller keeps for its life, so that what a killed controller leaves behind
        # is recognised and swept by the next one (cleanup.sweep_stale).
        file_bases = [workdir or tempfile.gettempdir()] + (["/dev/shm"] if os.path.isdir("/dev/shm") else [])
        cleanup.sweep_stale(parent, file_bases)
        cleanup.install_handlers()
        self._locks: list[int] = []
        self._workdir = self._make_private_dir(file_bases[0])
        self._shmdir = self._make_private_dir(file_bases[1]) if len(file_bases) > 1 else None
        self.working_fs = host.fs_type(self._workdir)
        # directories and empty files on ext4 go to a fresh ext4 of this kernel's own,
        # so that each takes new blocks, as the scenario means (scratchfs)
        self._dirfs = scratchfs.make(self._workdir) if self.working_fs == "ext4" else None
        cleanup.register(self)
        try:
            files.make_group_dir(self.root_dir)
            self._fs.setup_root(self.root_dir, memory)
            if memory is not None and swap is not None and host.meminfo().get("SwapTotal", 0) > 0:
                self._fs.limit_swap(self.root_dir, parse.parse_size(str(memory)), parse.parse_size(str(swap)))
            self._warm = os.path.join(self._workdir, ".warm")
            with open(self._warm, "wb") as f:
                f.write(b"\1" * 65536)
        except OSError as e:
            self.close()
            raise host.LinuxUnavailable(e.errno or errno.EIO,
                                        f"cannot set up a group under {parent}: {e.strerror or e}") from None

    # --- paths ------------------------------------------------------------------------------

    def _group_dir(self, path: str) -> str:
        """The directory of a group path; PermissionError for a path leaving the root,
        ValueError for a NUL (parse.resolve_path, as the simulated kernel reads paths)."""
        return os.path.join(self.root_dir, *parse.resolve_path(path))

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
        parents, last = parse.lookup_path(path)
        if parse.mkdir_last_errno(last):
            # "/", "." and "..": the kernel's EEXIST (fs/namei.c: filename_create), without
            # touching the directory the path resolves to
            if not os.path.isdir(os.path.join(self.root_dir, *parents)):
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
            raise FileExistsError(errno.EEXIST, "File exists", path)
        try:
            self._fs.before_child(os.path.dirname(gdir))
            files.make_group_dir(gdir)
        except OSError as e:
            raise self._oserror(e, path) from None

    def rmdir(self, path: str) -> None:
        gdir = self._group_dir(path)
        parents, last = parse.lookup_path(path)
        err = parse.rmdir_last_errno(last)
        if err:
            # fs/namei.c: do_rmdir() - "/" EBUSY, "." EINVAL, ".." ENOTEMPTY: never the
            # directory the path resolves to
            if not os.path.isdir(os.path.join(self.root_dir, *parents)):
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
            raise OSError(err, os.strerror(err), path)
        try:
            files.remove_group_dir(gdir)
        except OSError as e:
            raise self._oserror(e, path) from None
        if self.version == 1:
            # mm/memcontrol.c: mem_cgroup_css_offline schedules memcg_event_remove for
            # every event registered on the group, which signals its eventfd once; the
            # offline runs after rmdir returns (kill_css waits for an RCU grace period,
            # then a work item), so advance() waits for those signals
            group = os.path.normpath(path)
            for ev in self._events:
                if not ev.closed and ev.group == group:
                    ev.removal_pending = True

    def listdir(self, path: str) -> list[str]:
        """The group's directory; on v1 with mempressure.shrinker, which every group has
        here as in the model (the daemon serves it; the real directory has no such file)."""
        try:
            names = os.listdir(self._group_dir(path))
        except OSError as e:
            raise self._oserror(e, path) from None
        if self.version == 1 and "cgroup.event_control" in names:
            names.append(SHRINKER_FILE)
        return sorted(names)

    def read(self, path: str) -> str:
        gdir, name = self._split(path)
        if name == SHRINKER_FILE:
            self._shrinker_group(gdir, path)
            raise OSError(errno.EINVAL, "Invalid argument", path)   # write-only, as in the model
        self._quiesce()       # a task woken meanwhile finishes what it was asked first
        try:
            return self._fs.read(gdir, name)
        except OSError as e:
            raise self._oserror(e, path) from None

    def write(self, path: str, text: str) -> None:
        gdir, name = self._split(path)
        if name in ("cgroup.procs", "tasks"):
            self._check_pid_write(text, path)
        if name == SHRINKER_FILE:
            return self._shrinker_report(gdir, path, text)
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
        """Only live processes this kernel started may be moved; the kernel parses the rest.

        A task is its pid and its start time: an exited task's pid may already belong to
        a newcomer, which has the same pid but a later start time."""
        pid = _procs_pid(text)
        if pid is None or pid < 0:
            return          # the kernel answers EINVAL
        if pid == 0:
            raise PermissionError(errno.EPERM, f"{path}: pid {pid} is not a task of this kernel")
        now = procfs.start_time(pid)
        if now is None:
            return          # no such process: the kernel answers ESRCH
        if not self._is_own_live_task(pid, now):
            raise PermissionError(errno.EPERM, f"{path}: pid {pid} is not a task of this kernel")

    def _is_own_live_task(self, pid: int, start_time: int) -> bool:
        """pid is a task this kernel started, not exited, and still the same process."""
        task = self._tasks.get(pid)
        if task is None or self._start_times.get(pid) != start_time:
            return False
        return task.state not in ("exited", "oom_killed")

    def _learn(self, task: LinuxTask) -> None:
        """Record a new task with its start time, read while it cannot have been reaped
        (a child not yet waited for keeps its /proc entry, a zombie included)."""
        self._tasks[task.pid] = task
        self._start_times[task.pid] = procfs.start_time(task.pid)

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
                                     env=worker_env(),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, close_fds=True)
        finally:
            theirs.close()
        task = LinuxTask(self, popen.pid, mine, path if start_inside else OUTSIDE, popen)
        self._learn(task)
        self._pin(task)
        task._pending = 1                          # the "ready" message
        task._wait(START_TIMEOUT)
        if task.state in ("exited", "oom_killed"):
            return task
        if not start_inside:
            self._warm_up(task)
            self._move(task, path)
        return task

    def start_command(self, path: str, argv: list[str], **popen_kwargs) -> command.LinuxCommand:
        """Run a real command (argv) in the group at path, its whole process tree charged
        there from its first instruction; close() kills what is left of it.  popen_kwargs
        go to subprocess.Popen (stdin, stdout, stderr, cwd, env).  Raises OSError when
        it cannot be started."""
        gdir = self._group_dir(path)
        if gdir == self.root_dir or not os.path.isdir(gdir):
            raise FileNotFoundError(errno.ENOENT, "a command needs a group of its own", path)
        procs = os.path.join(gdir, self._fs.procs_file())
        # should this process die without its clean-up (SIGKILL), the command's
        # watchdog empties and removes the group, the root if nothing else is left, and
        # the kernel's file directories
        cmd = command.start(list(argv), self._relative(gdir), procs,
                            remove=(gdir, self.root_dir),
                            remove_trees=tuple(d for d in (self._workdir, self._shmdir) if d),
                            **popen_kwargs)
        self._commands.append(cmd)
        self._touched()
        return cmd

    def _warm_up(self, task: LinuxTask) -> None:
        """Run every code path once in the caller's group, so that the interpreter's own
        allocations for them are charged there, not to the task's group."""
        task._call({"op": "touch_anon", "n": PAGE_SIZE})
        task._call({"op": "free_anon", "n": PAGE_SIZE})
        task._call({"op": "read_file", "path": self._warm, "n": 65536})
        for _ in range(WARM_FORKS):            # forks whose children exit at once (EOF)
            mine, theirs = socket.socketpair()
            try:
                task._call({"op": "fork"}, fds=[theirs.fileno()], queue=False)
            finally:
                theirs.close()
                mine.close()
        task._call({"op": "ping"})

    def _adopt(self, pid: int, chan: socket.socket, group: str) -> LinuxTask:
        """A forked child: it runs no Python until a command needs a worker
        (LinuxTask._become_worker)."""
        task = LinuxTask(self, pid, chan, group)
        task.light = True
        self._learn(task)
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
            files.write_file(os.path.join(gdir, self._fs.procs_file()), str(task.pid))
        except OSError as e:
            raise self._oserror(e, path + "/" + self._fs.procs_file()) from None
        task.group = self._relative(gdir)
        self._touched()

    def _become_worker(self, task: LinuxTask) -> None:
        """A forked child execs a worker of its own: it does so in the caller's group,
        warms up there and comes back, so that its group is charged only for what the
        task does, as for spawn().  What it mapped before (its share of the parent's
        anonymous memory) goes with the exec."""
        group = task.group
        try:
            files.write_file(os.path.join(self.parent_dir, self._fs.procs_file()), str(task.pid))
        except OSError as e:
            raise self._oserror(e, group) from None
        task.group = OUTSIDE
        task.light = False
        try:
            task._chan.sendall(b"e")
        except OSError:
            task._collect(0)
            return
        task._pending = 1                          # the new worker's "ready" message
        task._wait(START_TIMEOUT)
        if task.state in ("exited", "oom_killed"):
            return
        self._warm_up(task)
        self._move(task, group)

    def task(self, pid: int) -> LinuxTask:
        """The task with this pid (exited ones included)."""
        return self._tasks[pid]

    def _claim_oom_kill(self, group: str) -> bool:
        """Count one OOM kill of `group` for a task found dead of SIGKILL, if the group's
        oom_kill counter has one that no task has claimed yet.  The counter is raised
        right after the signal is sent, so a short bounded wait covers that window."""
        if group == OUTSIDE:
            return False
        group = self._memory_css_group(group)
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

    def _memory_css_group(self, group: str) -> str:
        """The group whose memory css a task of `group` has: on v2, where the parent does
        not enable memory (no memory files), the nearest ancestor that has them, which
        counts the task's OOM kill (mm/memcontrol.c: memcg_memory_event_mm)."""
        while (self.version == 2 and group.strip("/")
               and not os.path.exists(os.path.join(self._group_dir(group), "memory.events"))):
            group = "/" + group.strip("/").rpartition("/")[0]
        return group

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
                        files.fill(fd, have, size)
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
            base = self._dirfs.path if self._dirfs is not None else self._workdir
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
        """An event on the control file at path (see Kernel.event).

        cgroup v1: an eventfd registered with "<efd> <cfd> <args>" in the group's
        cgroup.event_control.  cgroup v2: a notified file (memory.events, ...; args
        "") or a PSI trigger (memory.pressure, args "some 150000 1000000"), counted
        into an eventfd by this kernel's watcher thread (events.V2Event).

        mempressure.shrinker (args: the chunk size in bytes) is a registration with
        this kernel's shrinkerd instead (backends/linux/shrinker.py)."""
        gdir, name = self._split(path)
        if name == SHRINKER_FILE:
            return self._shrinker_event(gdir, path, args)
        if self.version == 2:
            return self._v2_event(path, args)
        name = self._fs.event_names(name)
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            cfd = os.open(os.path.join(gdir, name), os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            os.close(efd)
            raise self._oserror(e, path) from None
        try:
            files.write_file(os.path.join(gdir, "cgroup.event_control"), f"{efd} {cfd} {args}")
        except OSError as e:
            os.close(efd)
            raise self._oserror(e, path) from None
        finally:
            os.close(cfd)   # the registration holds what it needs; only the eventfd matters
        ev = LinuxEvent(self, f"{path} {args}".rstrip(), efd)
        ev.group = os.path.dirname(os.path.normpath(path))
        self._events.append(ev)
        return ev

    def _v2_event(self, path: str, args: str) -> V2Event:
        gdir, name = self._split(path)
        try:
            cfd, kind = open_v2_event(os.path.join(gdir, name), name, args)
        except OSError as e:
            raise self._oserror(e, path) from None
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        if self._notifier is None:
            self._notifier = Notifier()
        ev = V2Event(self, f"{path} {args}".rstrip(), efd, cfd, kind, self._notifier)
        self._notifier.add(ev)
        self._events.append(ev)
        return ev

    # --- the userspace shrinker (mempressure.shrinker through shrinkerd) ---------------------------------

    def _shrinker_group(self, gdir: str, path: str) -> None:
        """ENOENT for a group that does not exist (v1 and v2 alike: the daemon serves
        both, from the sources of docs/shrinker.md)."""
        if not os.path.isdir(gdir):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)

    def _shrinker_event(self, gdir: str, path: str, args: str) -> LinuxShrinkerEvent:
        self._shrinker_group(gdir, path)
        size = args.rstrip(" \t\n\v\f\r")
        # mm/mempressure.py shrinker_register_event: an unsigned decimal, not 0
        if not size.isdigit() or int(size) == 0:
            raise OSError(errno.EINVAL, "Invalid argument", path)
        if self._shrinkerd is None:
            self._shrinkerd = ShrinkerDaemon(self.root_dir, os.path.join(self._workdir, "run"),
                                             margin=SHRINKER_MARGIN)
        self._shrinkerd.start()
        rel = os.path.relpath(gdir, self.root_dir)
        try:
            sock = self._shrinkerd.socket_path("" if rel == "." else rel)
            ev = LinuxShrinkerEvent(self, f"{path} {size}", sock, int(size))
        except OSError as e:
            raise self._oserror(e, path) from None
        self._events.append(ev)
        return ev

    def _shrinker_report(self, gdir: str, path: str, text: str) -> None:
        """"<eventfd> <N>": N more (or fewer) chunks of that registration of this group."""
        self._shrinker_group(gdir, path)
        try:
            efd, delta = parse_report(text)
        except OSError as e:
            raise self._oserror(e, path) from None
        rel = self._relative(gdir)
        for ev in self._events:
            if (isinstance(ev, LinuxShrinkerEvent) and not ev.closed and ev.fileno() == efd
                    and ev.label.rsplit(" ", 1)[0] == rel.rstrip("/") + "/" + SHRINKER_FILE):
                try:
                    ev.report(delta)
                except OSError as e:
                    raise self._oserror(e, path) from None
                self._touched()
                return
        raise OSError(errno.EBADF, "Bad file descriptor", path)

    def _shrinker_watch(self, ev: LinuxShrinkerEvent) -> None:
        if ev not in self._watched:
            self._watched.append(ev)

    def _dispatch_shrinkers(self, sync: bool = False) -> None:
        """Run the callbacks of the shrinker requests waiting (under the task lock; a
        callback's own task commands do not dispatch again).  `sync` (before a task
        command): first wait until the daemon has reacted to what the kernel signalled
        it (LinuxShrinkerEvent.sync)."""
        if self._dispatching or not self._watched:
            return
        with self._task_lock:
            self._dispatching = True
            try:
                for ev in list(self._watched):
                    if ev.closed:
                        self._watched.remove(ev)
                        continue
                    try:
                        if sync:
                            ev.sync()
                        ev.dispatch()
                    except OSError as e:   # e.g. the task to free memory of has died
                        self.shrinker_errors.append(f"{ev.label}: {e.strerror or e}")
            finally:
                self._dispatching = False

    # --- time -----------------------------------------------------------------------------------------

    def advance(self, ticks: int = 1) -> None:
        """Let real time pass: tasks finish what they were asked, then `tick` seconds per
        tick go by (event work items, writeback, the kernel's own pace)."""
        self._quiesce()
        self._dispatch_shrinkers(sync=True)
        if ticks > 0 and self.tick > 0:
            time.sleep(self.tick * ticks)
        self._quiesce()
        self._dispatch_shrinkers()
        self._wait_removal_signals()

    def _wait_removal_signals(self) -> None:
        """Wait (at most REMOVAL_SIGNAL_WAIT seconds) until every event of a removed
        group has had the signal its removal sends (rmdir)."""
        deadline = time.monotonic() + REMOVAL_SIGNAL_WAIT
        while True:
            pending = [ev for ev in self._events if ev.removal_pending and not ev.closed]
            if not pending:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                for ev in pending:
                    ev.removal_pending = False
                return
            ready, _, _ = select.select([ev.fileno() for ev in pending], [], [], left)
            for ev in pending:
                if ev.fileno() in ready:
                    ev.removal_pending = False

    def settle(self) -> None:
        """Wait until memory.stat is exact: tasks are idle and one periodic statistics
        flush (every 2 s, mm/memcontrol.c flush_memcg_stats_dwork) has run since the last
        change.  Until then memory.stat can lag by up to 64 pages per CPU."""
        self._quiesce()
        wait = self._last_activity + STAT_FLUSH_WAIT - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def machine(self) -> dict:
        """The machine the root's groups run on, as the kernel sees it: the memory they
        can have (the least of the root's and its ancestors' limits and MemTotal), the
        swap they can use and the CPUs the tasks run on (host.machine_shape)."""
        return host.machine_shape(self.root_dir, self.version, len(self._cpus))

    def debugfs(self) -> dict:
        """What the real kernel shows of its internals without debugfs: machine-wide figures."""
        out: dict = {"static_keys": {}}
        for line in files.read_quiet("/proc/cgroups").splitlines():
            f = line.split()
            if f and f[0] == "memory" and len(f) >= 3:
                out["memcg_ids_in_use"] = int(f[2])
        vm = parse.parse_stat(files.read_quiet("/proc/vmstat"))
        if "nr_free_pages" in vm:
            out["nr_free_pages"] = vm["nr_free_pages"]
        if "oom_kill" in vm:
            out["global_oom_kills"] = vm["oom_kill"]
        marks = {"min": 0, "low": 0, "high": 0}
        for key, value in parse.key_values(files.read_quiet("/proc/zoneinfo")):
            if key in marks and value.isdigit():
                marks[key] += int(value)
        out["watermarks"] = marks
        return out

    # --- clean-up ---------------------------------------------------------------------------------------

    def close(self) -> None:
        """Kill every task, close every event, remove every group and file made.

        Safe to call again (after an interruption it carries on).  Raises OSError at the
        end if a group could not be removed."""
        if self._closed or self._closing:
            # Closed already, or close() is running already (re-entered from a handler
            # of the caller's own): the call under way finishes the work.
            return
        self._closing = True
        try:
            with cleanup.cleaning():
                self._close()
        finally:
            self._closing = False

    def _close(self) -> None:
        for ev in self._events:
            ev.close()
        if self._shrinkerd is not None:
            self._shrinkerd.stop()   # it removes its runtime directory
        if self._notifier is not None:
            self._notifier.close()
            self._notifier = None
        for cmd in self._commands:
            cmd.kill()
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
        if self._dirfs is not None:
            self._dirfs.close()
        for d in (self._workdir, self._shmdir):
            if d:
                shutil.rmtree(d, ignore_errors=True)
        for fd in self._locks:
            os.close(fd)
        self._locks.clear()
        self._closed = True
        cleanup.unregister(self)
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
                    files.remove_group_dir(d)
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
        path, lock = cleanup.make_owned_dir(base, self.root_name)
        self._locks.append(lock)
        return path

