"""Tasks of the simulated kernel: processes, their mm, fork, exit and cgroup moves.

A task's memory operations run to completion, unless a fault in a group with
oom_kill_disable=1 puts it to sleep (state "blocked", as a task in
mem_cgroup_oom_synchronize()); its remaining work then resumes when the OOM is
recovered.  Operations asked of a blocked task wait behind it, in order.
"""

from __future__ import annotations

import errno
from collections import deque
from typing import TYPE_CHECKING

from . import kernel
from .filemap import ShmemObject, filemap_read, filemap_write, shmem_fault, shmem_unmap
from .memcontrol import CHARGE_KILLED, CHARGE_NOMEM, CHARGE_OOM_WAIT
from .memory import (AnonVma, do_anonymous_faults, munmap_anon, nr_pages_of, pgtables_pages,
                     zap_anon)

if TYPE_CHECKING:
    from .system import System


class MmStruct:
    """struct mm_struct: the task's mappings and its rss counters (in pages)."""

    def __init__(self):
        self.vmas: list[AnonVma] = []
        self.shm_objects: list[ShmemObject] = []
        self.anon_rss = 0  # MM_ANONPAGES
        self.file_rss = 0  # MM_FILEPAGES
        self.shmem_rss = 0  # MM_SHMEMPAGES
        self.swapents = 0  # MM_SWAPENTS

    def get_mm_rss(self) -> int:
        return self.anon_rss + self.file_rss + self.shmem_rss

    def pgtables_pages(self) -> int:
        return pgtables_pages(self)


class SimTask(kernel.Task):
    """A process of the simulated kernel."""

    def __init__(self, sys: System, pid: int, memcg, cpu: int):
        self._sys = sys
        self.pid = pid
        self.memcg = memcg
        self.cpu = cpu
        self.mm = MmStruct()
        self.oom_score_adj = 0
        self.oom_victim = False
        self.memcg_in_oom = None
        self.oom_wait = None
        self._state = "running"
        self._work: deque = deque()  # operations waiting behind a sleep
        self._in_op = False  # an operation of this task is running now
        self.children: list[SimTask] = []
        memcg.tasks.append(self)

    @property
    def state(self) -> str:
        return self._state

    def __repr__(self):
        return f"<task {self.pid} {self.memcg.path} {self._state}>"

    # --- scheduling -----------------------------------------------------------------

    def sleep(self) -> None:
        self._state = "blocked"
        self._sys.sleeping.append(self)

    def wake(self) -> None:
        if self in self._sys.sleeping:
            self._sys.sleeping.remove(self)
        if self._state == "blocked":
            self._state = "running"
            self._sys.defer(self._run)

    def _alive(self) -> None:
        if self._state in ("exited", "oom_killed"):
            raise ProcessLookupError(errno.ESRCH, f"task {self.pid} has {self._state}")

    def _submit(self, op) -> None:
        """Run op now, or queue it behind the sleep that blocks this task."""
        self._alive()
        self._work.append(op)
        if self._state == "running" and len(self._work) == 1:
            self._run()
        self._sys.run_deferred()

    def _run(self) -> None:
        while self._work and self._state == "running":
            op = self._work[0]
            self._in_op = True
            try:
                ret = op()
            finally:
                self._in_op = False
            if self.oom_victim and self._state == "running":
                self.do_exit("oom_killed")  # the pending SIGKILL, on return to user space
            if self._state != "running":
                if self._state != "blocked":
                    self._work.clear()
                return
            if ret == CHARGE_OOM_WAIT:
                from .memcontrol_v1 import mem_cgroup_oom_synchronize
                mem_cgroup_oom_synchronize(self._sys, self)
                return
            if ret == CHARGE_NOMEM:
                # An OOM with nobody to kill: the fault is retried until memory comes back.
                self.sleep()
                self.oom_wait = (self.memcg, False)
                self._sys.nomem_sleepers[self] = None
                return
            if ret == CHARGE_KILLED:
                return
            self._work.popleft()

    # --- memory -----------------------------------------------------------------------

    def touch_anon(self, nbytes: int, locked: bool = False) -> None:
        self._alive()
        vma = AnonVma(self._sys, self.mm, nr_pages_of(nbytes), locked)
        self.mm.vmas.append(vma)
        self._submit(lambda: do_anonymous_faults(self._sys, self, vma))

    def free_anon(self, nbytes: int, oldest_first: bool = False) -> None:
        """Unmap nbytes, newest mappings first (oldest_first: the oldest mappings first).

        Called while this task is in the middle of an operation (from an eventfd watcher,
        say) it acts as another thread of the same process: munmap needs no memory, so
        it runs at once instead of waiting behind the operation.
        """
        if self._in_op:
            self._alive()
            munmap_anon(self._sys, self.mm, nbytes, oldest_first)
            return
        self._submit(lambda: munmap_anon(self._sys, self.mm, nbytes, oldest_first) or 0)

    def touch_shm(self, name: str, nbytes: int) -> None:
        obj = self._sys.shmem_object(name)
        if obj not in self.mm.shm_objects:
            self.mm.shm_objects.append(obj)
        self._submit(lambda: shmem_fault(self._sys, self, obj, nbytes))

    def read_file(self, name: str, nbytes: int) -> None:
        mapping = self._sys.file(name)
        self._syscall(lambda: filemap_read(self._sys, self, mapping, nbytes))

    def write_file(self, name: str, nbytes: int) -> None:
        mapping = self._sys.file(name)
        self._syscall(lambda: filemap_write(self._sys, self, mapping, nbytes))

    def unlink(self, name: str) -> None:
        self._syscall(lambda: self._sys.unlink(name))

    def _syscall(self, fn) -> None:
        """A system call: ENOMEM and the like come back to the caller as OSError."""
        err = []

        def op():
            try:
                fn()
            except OSError as e:
                err.append(e)
            return 0
        self._submit(op)
        if err and self._state != "oom_killed":
            raise err[0]

    # --- processes --------------------------------------------------------------------

    def fork(self) -> SimTask:
        """copy_process(): a child in the same group with a fresh, empty mm.

        The child's share of the parent's pages (copy-on-write) is not modelled.
        """
        self._alive()
        child = self._sys.spawn_task(self.memcg)
        self.children.append(child)
        self._sys.run_deferred()
        return child

    def mkdirs(self, n: int) -> None:
        self._alive()
        self._sys.mkdirs(self, n)

    def move(self, path: str) -> None:
        self._alive()
        self._sys.attach_task(self, self._sys.lookup_memcg(path))

    def connect_tcp(self, peer):
        raise NotImplementedError("TCP sockets are not modelled yet")

    def exit(self) -> None:
        self._alive()
        self.do_exit("exited")
        self._sys.run_deferred()

    def do_exit(self, state: str) -> None:
        """do_exit() -> exit_mm(): unmap everything; page cache stays charged."""
        sys = self._sys
        if self in sys.sleeping:
            if self.oom_wait is not None and self not in sys.nomem_sleepers:
                from .memcontrol_v1 import mem_cgroup_oom_wake
                mem_cgroup_oom_wake(sys, self)
            else:
                sys.sleeping.remove(self)
        sys.nomem_sleepers.pop(self, None)
        self._state = state
        self._work.clear()
        while self.mm.vmas:
            vma = self.mm.vmas[-1]
            zap_anon(sys, vma, 0)
            self.mm.vmas.pop()
            sys.unregister_mapping(vma)
        for obj in self.mm.shm_objects:
            shmem_unmap(sys, obj, self.mm)
        self.mm.shm_objects.clear()
        if self in self.memcg.tasks:
            self.memcg.tasks.remove(self)
        sys.maybe_free_dying()
