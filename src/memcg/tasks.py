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

from . import cgroup, kernel, psi, sched
from .fs import dcache, namei
from .kernel import PAGE_SIZE
from .mm import filemap, memcontrol, memcontrol_v1, oom_kill, page_alloc, slab
from .mm.filemap import ShmemObject, filemap_read, filemap_write, shmem_fault, shmem_unmap
from .mm.memcontrol import (CHARGE_KILLED, CHARGE_NOMEM, CHARGE_OOM_WAIT, CHARGE_THROTTLED,
                         OBJCG_POINTER_SIZE,
                         THREAD_SIZE, KmemPages)
from .mm.memory import (AnonVma, do_anonymous_faults, do_wp_faults, dup_mmap, exit_mmap,
                        munmap_anon, nr_pages_of, pgtables_pages)
from .net import tcp
from .net.socket import SimSocket

if TYPE_CHECKING:
    from .system import System

# kernel/fork.c: the objects of a new process the model names; the rest of what a fork
# costs (vm_area_structs, anon_vmas, page tables and the pgd, creds, fs_struct, ...) is
# the unnamed remainder of the calibrated kmem_fork_bytes.
FORK_CACHES = ("task_struct", "mm_struct", "signal_cache", "sighand_cache", "files_cache", "pid")
# The reference machine whose fork cost was measured (tools/measure_kmem.py) ran 6.18.
MEASURED_THREAD_SIZE = THREAD_SIZE["6.18"]


def copy_process_kmem(sys: System, parent: SimTask) -> list | int:
    """The kernel memory copy_process() allocates, charged to the forking task's group.

    dup_task_struct(): the task_struct, then the kernel stack (THREAD_SIZE, charged page
    by page: memcg_charge_kernel_stack(), or 3.8's __GFP_KMEMCG); then the mm, signal,
    file tables and pid, and the rest.  Returns what to free at exit, or the failed
    charge's result (everything taken so far is given back).
    """
    caches = sys.slab.caches
    named = sum(caches[name].object_size + OBJCG_POINTER_SIZE for name in FORK_CACHES)
    sys.fork_carry += max(0.0, float(sys.profile["kmem_fork_bytes"]) - MEASURED_THREAD_SIZE - named)
    rest = int(sys.fork_carry)
    sys.fork_carry -= rest
    stack_pages = THREAD_SIZE[sys.semantics] // PAGE_SIZE
    if sys.semantics == "3.8":
        stack = [("stack", stack_pages)]  # one THREAD_SIZE_ORDER allocation, __GFP_KMEMCG
    else:
        stack = [("stack", 1)] * stack_pages  # vmalloc'ed: memcg_charge_kernel_stack() per page
    plan = [("task_struct", 1)] + stack + [(name, 1) for name in FORK_CACHES[1:]]
    # the rest comes in allocations of a page or less (small objects and page tables)
    plan += [("kmalloc-cg", min(PAGE_SIZE, rest - i)) for i in range(0, rest, PAGE_SIZE)]
    got: list = []
    prev, sys.current = sys.current, parent
    try:
        for name, count in plan:
            if name == "stack":
                item = page_alloc.alloc_kmem_pages(sys, parent, count, "KernelStack")
            else:
                item = slab.kmem_cache_alloc(sys, name, parent, count)
            if slab.charge_failed(item):
                release_task_kmem(sys, got, parent.cpu)
                return item
            got.append(item)
    finally:
        sys.current = prev
    return got


def release_task_kmem(sys: System, kmem: list, cpu: int) -> None:
    """free_task(): the stack (exit_task_stack_account) and the task's objects go back."""
    for item in kmem:
        if isinstance(item, KmemPages):
            page_alloc.free_kmem_pages(sys, item, cpu)
        else:
            slab.kmem_cache_free(sys, item, cpu)
    kmem.clear()


def kernel_clone(sys: System, memcg) -> SimTask:
    """kernel_clone() of a new process into memcg: its pid, and a CPU handed out
    round-robin (the kernel memory it costs is copy_process_kmem()'s)."""
    pid = sys._next_pid
    sys._next_pid += 1
    task = SimTask(sys, pid, memcg, cpu=(pid - 1000) % sys.cpus)
    sys.tasks[pid] = task
    cgroup.cgroup_update_populated(sys, memcg, 1)
    return task


def ret_from_fork_faults(sys: System, child: SimTask) -> None:
    """The faults the new child takes on its way to where it first blocks (the profile's
    fork_child_faults): first touches of pages in the mappings fork left to fill
    (mm/memory.c: vma_needs_copy is false for a shared mapping without an anon_vma).
    Each is a minor fault on a page already in the page cache - no charge - counted
    in the child's group: handle_mm_fault() -> count_memcg_event_mm(vma->vm_mm,
    PGFAULT), the mm's owner being the child."""
    faults = int(sys.profile.get("fork_child_faults") or 0)
    if faults:
        sys.stats.mod(child.memcg.id, memcontrol.PGFAULT, faults)


def spawned_image(sys: System, task: SimTask) -> None:
    """A spawned task stands for a process started elsewhere and then moved in (as the
    real backend's workers are): its own resident set and page tables were charged where
    it started, so no group pays for them here, but mm/oom_kill.c: oom_badness() counts
    them (get_mm_rss + mm_pgtables_bytes) like any other.  The sizes are the profile's
    (worker_rss_bytes, worker_pgtables_bytes).  They are mappings the process keeps to
    itself - the real worker marks them MADV_DONTFORK - so its forked children do not
    share them."""
    task.mm.image_rss = int(sys.profile.get("worker_rss_bytes") or 0) // PAGE_SIZE
    task.mm.image_pgtables = int(sys.profile.get("worker_pgtables_bytes") or 0) // PAGE_SIZE


class MmStruct:
    """struct mm_struct: the task's mappings and its rss counters (in pages)."""

    def __init__(self):
        # what a spawned task brought with it (spawned_image): counted, never charged here
        self.image_rss = 0
        self.image_pgtables = 0
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
        # the group the task is a member of, and the memory css it charges (cgroup.py)
        self.cgroup = memcg
        self.memcg = cgroup.task_css(sys, self)
        self.cpu = cpu
        self.mm = MmStruct()
        self._oom_score_adj = 0
        self.oom_victim = False
        self.memcg_in_oom = None
        self.oom_wait = None
        # the retry of a fault that found nobody to OOM-kill, at the next tick
        self.nomem_retry = sched.Timer(sched.NOMEM_RETRY, 0, SimTask._nomem_retry, self)
        self._state = "running"
        self._work: deque = deque()  # operations waiting behind a sleep
        self._in_op = False  # an operation of this task is running now
        self.children: list[SimTask] = []
        self.kmem: list = []  # kernel memory charged at fork, freed at exit
        # cgroup v2: task->psi_flags and task->in_memstall (psi.py), the pages charged over
        # memory.high not paid for yet (current->memcg_nr_pages_over_high), the penalty
        # jiffies a synchronous mem_cgroup_handle_over_high() left for the return to user
        # space, and the penalty sleep's timer with its psi_memstall_enter() flag
        self.psi_flags = 0
        self.in_memstall = False
        self.memcg_nr_pages_over_high = 0
        self.memcg_high_penalty = 0
        self.mm_populate = False  # faulting pages in inside one system call (mlock)
        self.throttle_timer = sched.HrTimer(SimTask._throttle_end, self)
        self._throttle_pflags = None
        memcg.tasks.append(self)

    @property
    def state(self) -> str:
        return self._state

    @property
    def oom_score_adj(self) -> int:
        """What oom_badness() adds, in thousandths of the OOM domain's pages."""
        return self._oom_score_adj

    @oom_score_adj.setter
    def oom_score_adj(self, value: int) -> None:
        # fs/proc/base.c: oom_score_adj_write() refuses values out of range with EINVAL
        if not oom_kill.OOM_SCORE_ADJ_MIN <= value <= oom_kill.OOM_SCORE_ADJ_MAX:
            raise OSError(errno.EINVAL, f"oom_score_adj {value}: expected -1000 to 1000")
        self._oom_score_adj = int(value)

    def __repr__(self):
        return f"<task {self.pid} {self.cgroup.path} {self._state}>"

    # --- scheduling -----------------------------------------------------------------

    def sleep(self) -> None:
        self._state = "blocked"
        self._sys.clock.sleeping.append(self)

    def wake(self) -> None:
        """The task is runnable again: it resumes at the next return to user space."""
        clock = self._sys.clock
        if self in clock.sleeping:
            clock.sleeping.remove(self)
        if self._state == "blocked":
            self._state = "running"
            sched.queue_work(clock, sched.TASK, self._run)

    def _nomem_retry(self) -> None:
        """The fault that found nobody to kill is tried again (memory may be back)."""
        self.oom_wait = None
        self.wake()

    def _alive(self) -> None:
        if self._state in ("exited", "oom_killed"):
            raise ProcessLookupError(errno.ESRCH, f"task {self.pid} has {self._state}")

    def _submit(self, op) -> None:
        """Run op now, or queue it behind the sleep that blocks this task."""
        self._alive()
        self._work.append(op)
        if self._state == "running" and len(self._work) == 1:
            self._run()
        sched.exit_to_user_mode(self._sys.clock)

    def throttle(self, penalty_jiffies: int) -> None:
        """mem_cgroup_handle_over_high()'s penalty: psi_memstall_enter(), then
        schedule_timeout_killable(penalty_jiffies) - the task is blocked (other tasks and
        timers run) until its high-resolution timer ends the sleep."""
        sys = self._sys
        self._throttle_pflags = psi.psi_memstall_enter(sys, self)
        self.sleep()
        clock = sys.clock
        sched.hrtimer_start(clock, self.throttle_timer,
                            sched.ktime_get(clock) + sched.jiffies_to_nsecs(penalty_jiffies))

    def _throttle_end(self) -> None:
        self.wake()

    def _resume_user_mode_work(self) -> None:
        """kernel/entry/common.c: exit_to_user_mode_loop() -> resume_user_mode_work(): the
        memory.high reclaim and penalty the operation's charges left (set_notify_resume)."""
        penalty = self.memcg_high_penalty
        self.memcg_high_penalty = 0
        self.mm_populate = False  # faulting pages in inside one system call (mlock)
        if self.memcg_nr_pages_over_high:
            penalty += memcontrol.mem_cgroup_handle_over_high(self._sys, self)
        if penalty and self._state == "running":
            self.throttle(penalty)

    def _run(self) -> None:
        sys = self._sys
        if not sys.cgroup_dfl:
            self._run_ops()
            return
        # kernel/sched/psi.c: the task is runnable while it runs operations (psi_enqueue);
        # woken from the penalty sleep, its memory stall ends (psi_memstall_leave)
        psi.psi_enqueue(sys, self)
        if self._throttle_pflags is not None:
            psi.psi_memstall_leave(sys, self, self._throttle_pflags)
            self._throttle_pflags = None
        try:
            self._run_ops()
        finally:
            psi.psi_dequeue(sys, self)

    def _run_ops(self) -> None:
        while self._work and self._state == "running":
            op = self._work[0]
            self._in_op = True
            try:
                ret = op()
            finally:
                self._in_op = False
                self.mm_populate = False
            if self.oom_victim and self._state == "running":
                self.do_exit("oom_killed")  # the pending SIGKILL, on return to user space
            if self._state != "running":
                if self._state != "blocked":
                    self._work.clear()
                return
            if ret == CHARGE_OOM_WAIT:
                memcontrol_v1.mem_cgroup_oom_synchronize(self._sys, self)
                return
            if ret == CHARGE_NOMEM:
                # An OOM with nobody to kill: the fault is retried until memory comes back.
                self.sleep()
                self.oom_wait = (self.memcg, False)
                if not sched.timer_pending(self.nomem_retry):
                    clock = self._sys.clock
                    sched.mod_timer(clock, self.nomem_retry, clock.now + 1)
                return
            if ret == CHARGE_KILLED:
                return
            if ret == CHARGE_THROTTLED:
                # mem_cgroup_handle_over_high() called from try_charge_memcg() sleeps in
                # the fault; the fault goes on after the penalty
                penalty, self.memcg_high_penalty = self.memcg_high_penalty, 0
                self.throttle(penalty)
                return
            self._work.popleft()
            if self.memcg_nr_pages_over_high or self.memcg_high_penalty:
                self._resume_user_mode_work()

    # --- memory -----------------------------------------------------------------------

    def touch_anon(self, nbytes: int, locked: bool = False) -> None:
        self._alive()
        # mm/util.c: __vm_enough_memory() - under the default OVERCOMMIT_GUESS, mmap of
        # more pages than totalram_pages() + total_swap_pages fails with ENOMEM
        sys = self._sys
        if nr_pages_of(nbytes) > sys.mem.nr_pages + sys.swap.nr_pages:
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
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
            munmap_anon(self._sys, self.mm, nbytes, oldest_first, self.cpu)
            return
        self._submit(lambda: munmap_anon(self._sys, self.mm, nbytes, oldest_first, self.cpu) or 0)

    def write_anon(self, nbytes: int) -> None:
        """Write to the first nbytes of the anonymous memory, oldest mapping first: write
        faults on the entries a fork write-protected (mm/memory.py: do_wp_faults)."""
        self._alive()
        self._submit(lambda: do_wp_faults(self._sys, self, int(nbytes)))

    def touch_shm(self, name: str, nbytes: int) -> None:
        obj = filemap.shmem_object(self._sys, name)
        if obj not in self.mm.shm_objects:
            self.mm.shm_objects.append(obj)
        self._submit(lambda: shmem_fault(self._sys, self, obj, nbytes))

    def read_file(self, name: str, nbytes: int) -> None:
        mapping = filemap.file_mapping(self._sys, name)
        self._syscall(lambda: filemap_read(self._sys, self, mapping, nbytes))

    def write_file(self, name: str, nbytes: int) -> None:
        mapping = filemap.file_mapping(self._sys, name)
        self._syscall(lambda: filemap_write(self._sys, self, mapping, nbytes))

    def unlink(self, name: str) -> None:
        self._syscall(lambda: namei.do_unlinkat(self._sys, name))

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
        """copy_process(): a child in the same group.

        The new process's kernel memory (stack, task_struct, mm, tables: calibrated
        kmem_fork_bytes) is charged to the group; OSError(ENOMEM) when a charge fails -
        at a 3.8 kmem limit at once, at today's memory limit once reclaim and the OOM
        killer found nothing.  Its mm is a copy of the parent's anonymous mappings
        (dup_mmap: their objects and page tables charged too), sharing their pages
        copy-on-write; shared tmpfs mappings it maps afresh when it touches them.
        """
        self._alive()
        sys = self._sys
        kmem = copy_process_kmem(sys, self)
        mm = MmStruct()
        if not slab.charge_failed(kmem):
            ret = dup_mmap(sys, self, mm)  # copy_mm(), after the task structures
            if not ret and self.oom_victim:
                ret = CHARGE_KILLED  # fatal_signal_pending(): fork fails
            if ret:
                exit_mmap(sys, mm, self.cpu)
                release_task_kmem(sys, kmem, self.cpu)
                kmem = ret
        if slab.charge_failed(kmem):
            if self.oom_victim and self._state == "running":
                self.do_exit("oom_killed")
            sched.exit_to_user_mode(sys.clock)
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        child = kernel_clone(sys, self.cgroup)
        child.mm = mm
        child.kmem = kmem
        child._oom_score_adj = self._oom_score_adj   # kernel/fork.c: copy_signal()
        self.children.append(child)
        ret_from_fork_faults(sys, child)
        sched.exit_to_user_mode(sys.clock)
        return child

    def mkdirs(self, n: int, fs: str = "ext4") -> None:
        """mkdir() n new directories on fs ("ext4" or "tmpfs"): dentries, inodes and (ext4)
        directory blocks charged to the group; OSError(ENOMEM) when a charge fails."""
        self._alive()
        dcache.get_fs_type(self._sys, fs)
        self._syscall(lambda: namei.do_mkdirat(self._sys, self, n, fs))

    def create_files(self, n: int, fs: str = "ext4") -> None:
        """creat() n new empty files on fs: a dentry and an inode each, charged to the group."""
        self._alive()
        dcache.get_fs_type(self._sys, fs)
        self._syscall(lambda: namei.do_creat(self._sys, self, n, fs))

    def move(self, path: str) -> None:
        self._alive()
        # the same as writing the pid to the group's cgroup.procs (v2: its rules apply)
        cgroup.cgroup_procs_write(self._sys, self, cgroup.cgroup_get_from_path(self._sys, path))

    def connect_tcp(self, peer):
        """A loopback TCP connection to peer (net/tcp.py): this task's socket is charged
        to its group, the accepted one to the peer's, if those groups account sockets."""
        if not isinstance(peer, SimTask) or peer._sys is not self._sys:
            raise ValueError("connect_tcp: the peer must be a task of the same SimKernel")
        self._alive()
        peer._alive()
        client = tcp.tcp_connect(self._sys, self, peer)
        return SimSocket(self._sys.net, client)

    def exit(self) -> None:
        self._alive()
        self.do_exit("exited")
        sched.exit_to_user_mode(self._sys.clock)

    def do_exit(self, state: str) -> None:
        """do_exit() -> exit_mm(): unmap everything; page cache stays charged."""
        sys = self._sys
        if self in sys.clock.sleeping:
            if self.oom_wait is not None and not sched.timer_pending(self.nomem_retry):
                memcontrol_v1.mem_cgroup_oom_wake(sys, self)
            else:
                sys.clock.sleeping.remove(self)
        sched.del_timer(self.nomem_retry)
        sched.hrtimer_cancel(self.throttle_timer)
        self._state = state
        self._work.clear()
        exit_mmap(sys, self.mm, self.cpu)
        for obj in self.mm.shm_objects:
            shmem_unmap(sys, obj, self.mm)
        self.mm.shm_objects.clear()
        if self in self.cgroup.tasks:
            self.cgroup.tasks.remove(self)
            cgroup.cgroup_update_populated(sys, self.cgroup, -1)
        release_task_kmem(sys, self.kmem, self.cpu)  # the stack and task structures go back
        tcp.tcp_task_exit(sys, self)  # exit_files(): its connections are closed
        psi.psi_dequeue(sys, self)  # its PSI states go with it
        memcontrol.maybe_free_dying(sys)
