"""Pressure stall information for memory (kernel/sched/psi.c, include/linux/psi_types.h, 6.18).

Every cgroup of the default hierarchy has a `PsiGroup` (cgroup->psi; the root's is the
system's, psi_system).  A group keeps, per CPU, how many of its tasks are in each PSI task
state (TSK_RUNNING, TSK_MEMSTALL, TSK_MEMSTALL_RUNNING, ...), the resource states those
counts imply (test_state: SOME while a task stalls on memory, FULL while every runnable
task does, NONIDLE while any task is busy) and the time spent in each
(record_times).  Aggregation folds the per-CPU times, weighted by each CPU's non-idle
jiffies, into the cumulative totals (collect_percpu_times); the averaging worker turns
them into the avg10/avg60/avg300 running averages every PSI_FREQ (update_averages,
calc_avgs, with the fixed-point calc_load of include/linux/sched/loadavg.h); the
real-time poll worker watches the triggers written to memory.pressure and signals them
at most once per window (psi_rtpoll_work, update_triggers, window_update).

The model tracks memory only (the memory.pressure file): the I/O and CPU states are
never entered, and TSK_ONCPU is not tracked (the model has no context switches; a task
reclaiming is FULL through the task counts, as a task alone on its CPU is).  Tasks are
TSK_RUNNING while they run operations; between operations they are idle (they wait on
the caller), and a task in the memory.high penalty sleep is TSK_MEMSTALL alone.  Times
come from the clock's nanoseconds (sched.Clock.ns); the workers are high-resolution
timers at the jiffies the kernel schedules them at.  PSI is accounted on cgroup v2 only:
on v1 a task's group would be psi_system, which has no file in the model.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from . import sched
from .sched import HZ, NSEC_PER_USEC, jiffies_to_nsecs, nsecs_to_jiffies

# include/linux/psi_types.h: enum psi_task_count
NR_IOWAIT, NR_MEMSTALL, NR_RUNNING, NR_MEMSTALL_RUNNING = range(4)
NR_PSI_TASK_COUNTS = 4
# the task state bits (psi_flags)
TSK_IOWAIT = 1 << NR_IOWAIT
TSK_MEMSTALL = 1 << NR_MEMSTALL
TSK_RUNNING = 1 << NR_RUNNING
TSK_MEMSTALL_RUNNING = 1 << NR_MEMSTALL_RUNNING
TSK_ONCPU = 1 << NR_PSI_TASK_COUNTS

# enum psi_res
PSI_IO, PSI_MEM, PSI_CPU = range(3)
# enum psi_states (CONFIG_IRQ_TIME_ACCOUNTING off: no PSI_IRQ_FULL)
(PSI_IO_SOME, PSI_IO_FULL, PSI_MEM_SOME, PSI_MEM_FULL, PSI_CPU_SOME, PSI_CPU_FULL,
 PSI_NONIDLE) = range(7)
NR_PSI_STATES = 7
# PSI_STATE_RESCHEDULE: the changed-states bit asking the averaging worker to run again
PSI_STATE_RESCHEDULE = 1 << (PSI_NONIDLE + 1)
# enum psi_aggregators
PSI_AVGS, PSI_POLL = range(2)
NR_PSI_AGGREGATORS = 2

# kernel/sched/psi.c: running averages, 2 s intervals
PSI_FREQ = 2 * HZ + 1
EXP_10s = 1677  # 1/exp(2s/10s) as fixed-point
EXP_60s = 1981  # 1/exp(2s/60s)
EXP_300s = 2034  # 1/exp(2s/300s)
# PSI trigger definitions
WINDOW_MIN_US = 500000  # min window size is 500ms
WINDOW_MAX_US = 10000000  # max window size is 10s
UPDATES_PER_WINDOW = 10  # 10 updates per window
# psi_init(): psi_period = jiffies_to_nsecs(PSI_FREQ)
psi_period = jiffies_to_nsecs(PSI_FREQ)

# include/linux/sched/loadavg.h
FSHIFT = 11
FIXED_1 = 1 << FSHIFT

U32 = 0xFFFFFFFF
ULLONG_MAX = 2**64 - 1


def calc_load(load: int, exp: int, active: int) -> int:
    """include/linux/sched/loadavg.h: calc_load() - one step of the decaying average."""
    newload = load * exp + active * (FIXED_1 - exp)
    if active >= load:
        newload += FIXED_1 - 1
    return newload // FIXED_1


def fixed_power_int(x: int, frac_bits: int, n: int) -> int:
    """kernel/sched/loadavg.c: fixed_power_int() - x**n in fixed point, rounding each step."""
    result = 1 << frac_bits
    if n:
        while True:
            if n & 1:
                result = (result * x + (1 << (frac_bits - 1))) >> frac_bits
            n >>= 1
            if not n:
                break
            x = (x * x + (1 << (frac_bits - 1))) >> frac_bits
    return result


def calc_load_n(load: int, exp: int, active: int, n: int) -> int:
    """kernel/sched/loadavg.c: calc_load_n() - n steps at once."""
    return calc_load(load, fixed_power_int(exp, FSHIFT, n), active)


def LOAD_INT(x: int) -> int:
    return x >> FSHIFT


def LOAD_FRAC(x: int) -> int:
    return LOAD_INT((x & (FIXED_1 - 1)) * 100)


@dataclass(eq=False)
class PsiGroupCpu:
    """struct psi_group_cpu: one CPU's task counts, state and state times (u32 ns)."""

    tasks: list = field(default_factory=lambda: [0] * NR_PSI_TASK_COUNTS)
    state_mask: int = 0
    times: list = field(default_factory=lambda: [0] * NR_PSI_STATES)
    state_start: int = 0
    times_prev: list = field(default_factory=lambda: [[0] * NR_PSI_STATES
                                                      for _ in range(NR_PSI_AGGREGATORS)])


@dataclass(eq=False)
class PsiTrigger:
    """struct psi_trigger: a "some|full <threshold_us> <window_us>" watch on a group."""

    group: PsiGroup
    state: int
    threshold: int  # ns
    win_size: int  # ns (struct psi_window)
    efd: object  # the eventfd signalled like POLLPRI on the file (Kernel.event)
    win_start_time: int = 0
    win_start_value: int = 0
    win_prev_growth: int = 0
    event: int = 0
    last_event_time: int = 0
    pending_event: bool = False
    events: int = 0  # events generated so far (the model's count; never reset)


@dataclass(eq=False)
class PsiGroup:
    """struct psi_group: per-CPU state, the totals, the averages and the triggers."""

    parent: PsiGroup | None
    pcpu: list
    enabled: bool = True
    total: list = field(default_factory=lambda: [[0] * (NR_PSI_STATES - 1)
                                                 for _ in range(NR_PSI_AGGREGATORS)])
    avg_total: list = field(default_factory=lambda: [0] * (NR_PSI_STATES - 1))
    avg: list = field(default_factory=lambda: [[0, 0, 0] for _ in range(NR_PSI_STATES - 1)])
    avg_last_update: int = 0
    avg_next_update: int = 0
    avgs_work: sched.HrTimer | None = None  # the averaging worker (a delayed work)
    # the real-time poll worker (psimon) and its triggers
    triggers: list = field(default_factory=list)
    nr_triggers: list = field(default_factory=lambda: [0] * NR_PSI_STATES)
    rtpoll_states: int = 0
    rtpoll_min_period: int = U32
    rtpoll_total: list = field(default_factory=lambda: [0] * (NR_PSI_STATES - 1))
    rtpoll_next_update: int = ULLONG_MAX
    rtpoll_until: int = 0
    rtpoll_scheduled: bool = False
    rtpoll_timer: sched.HrTimer | None = None


def group_init(sys, parent: PsiGroup | None) -> PsiGroup:
    """group_init() (psi_cgroup_alloc for a cgroup's group: its parent is the parent's)."""
    clock = sys.clock
    group = PsiGroup(parent=parent, pcpu=[PsiGroupCpu() for _ in range(sys.cpus)])
    group.avg_last_update = sched.ktime_get(clock)
    group.avg_next_update = group.avg_last_update + psi_period
    group.avgs_work = sched.HrTimer(psi_avgs_work, sys, group)
    group.rtpoll_timer = sched.HrTimer(psi_rtpoll_work, sys, group)
    return group


def cgroup_psi(sys, memcg) -> PsiGroup:
    """cgroup_psi(): the group's psi_group (the root's is psi_system)."""
    if memcg.parent is None:
        return sys.psi_system
    return memcg.psi


def psi_cgroup_alloc(sys, memcg) -> None:
    """psi_cgroup_alloc(): a new cgroup's psi_group under its parent's (v2 only)."""
    if not sys.cgroup_dfl:
        return
    if memcg.parent is None:
        if sys.psi_system is None:
            sys.psi_system = group_init(sys, None)  # psi_init()
        return
    memcg.psi = group_init(sys, cgroup_psi(sys, memcg.parent))


def psi_cgroup_free(sys, memcg) -> None:
    """psi_cgroup_free(): its workers stop (triggers were destroyed with their files)."""
    group = memcg.psi
    if group is None:
        return
    sched.hrtimer_cancel(group.avgs_work)
    sched.hrtimer_cancel(group.rtpoll_timer)
    for t in list(group.triggers):
        psi_trigger_destroy(sys, t)


# --- state changes ----------------------------------------------------------------

def test_state(tasks: list, state: int) -> bool:
    """test_state() for the memory states and NONIDLE (TSK_ONCPU is not tracked)."""
    if state == PSI_MEM_SOME:
        return bool(tasks[NR_MEMSTALL])
    if state == PSI_MEM_FULL:
        return bool(tasks[NR_MEMSTALL]) and tasks[NR_RUNNING] == tasks[NR_MEMSTALL_RUNNING]
    if state == PSI_NONIDLE:
        return bool(tasks[NR_IOWAIT] or tasks[NR_MEMSTALL] or tasks[NR_RUNNING])
    return False


def record_times(groupc: PsiGroupCpu, now: int) -> None:
    """record_times(): charge the time since the last change to the states then active."""
    delta = (now - groupc.state_start) & U32
    groupc.state_start = now
    mask = groupc.state_mask
    times = groupc.times
    if mask & (1 << PSI_MEM_SOME):
        times[PSI_MEM_SOME] = (times[PSI_MEM_SOME] + delta) & U32
        if mask & (1 << PSI_MEM_FULL):
            times[PSI_MEM_FULL] = (times[PSI_MEM_FULL] + delta) & U32
    if mask & (1 << PSI_NONIDLE):
        times[PSI_NONIDLE] = (times[PSI_NONIDLE] + delta) & U32


def psi_group_change(sys, group: PsiGroup, cpu: int, clear: int, set_: int, now: int,
                     wake_clock: bool) -> None:
    """psi_group_change(): update one CPU's task counts, conclude the time of the old
    states and enter the new ones; wake the poll worker for a watched state and the
    averaging worker when it sleeps."""
    groupc = group.pcpu[cpu]
    tasks = groupc.tasks
    t = 0
    m = clear
    while m:
        if m & 1:
            if tasks[t]:
                tasks[t] -= 1
            # else: "psi: task underflow!" - printed once, the count stays 0
        m >>= 1
        t += 1
    t = 0
    m = set_
    while m:
        if m & 1:
            tasks[t] += 1
        m >>= 1
        t += 1
    state_mask = 0
    for s in (PSI_MEM_SOME, PSI_MEM_FULL, PSI_NONIDLE):
        if test_state(tasks, s):
            state_mask |= 1 << s
    record_times(groupc, now)
    groupc.state_mask = state_mask
    if state_mask & group.rtpoll_states:
        psi_schedule_rtpoll_work(sys, group, 1, False)
    if wake_clock and not sched.hrtimer_active(group.avgs_work):
        schedule_delayed_work(sys, group.avgs_work, PSI_FREQ)


def task_psi_group(sys, task) -> PsiGroup:
    """task_psi_group(): the psi_group of the task's cgroup on the default hierarchy."""
    return cgroup_psi(sys, task.cgroup)


def psi_task_change(sys, task, clear: int, set_: int) -> None:
    """psi_task_change(): the task's state bits change; every ancestor group sees it."""
    if not sys.cgroup_dfl:
        return
    task.psi_flags = (task.psi_flags & ~clear) | set_
    now = sched.ktime_get(sys.clock)
    group = task_psi_group(sys, task)
    while group is not None:
        psi_group_change(sys, group, task.cpu, clear, set_, now, True)
        group = group.parent


def psi_enqueue(sys, task) -> None:
    """kernel/sched/stats.h: psi_enqueue() - the task becomes runnable (it runs
    operations now): TSK_RUNNING, and TSK_MEMSTALL_RUNNING if it stalls on memory."""
    if not sys.cgroup_dfl or task.psi_flags & TSK_RUNNING:
        return
    set_ = TSK_RUNNING
    if task.in_memstall:
        set_ |= TSK_MEMSTALL_RUNNING
    psi_task_change(sys, task, 0, set_)


def psi_dequeue(sys, task) -> None:
    """psi_dequeue() / psi_task_switch(sleep): the task stops running (it sleeps, waits
    on the caller, or exits): TSK_RUNNING and TSK_MEMSTALL_RUNNING go; an exiting task
    takes all its states with it (psi_task_change(task, task->psi_flags, 0))."""
    if not sys.cgroup_dfl or not task.psi_flags:
        return
    if task.state in ("exited", "oom_killed"):
        task.in_memstall = False
        psi_task_change(sys, task, task.psi_flags, 0)
        return
    if not task.psi_flags & TSK_RUNNING:
        return
    clear = TSK_RUNNING
    if task.in_memstall:
        clear |= TSK_MEMSTALL_RUNNING
    psi_task_change(sys, task, clear, 0)


def psi_memstall_enter(sys, task) -> bool:
    """psi_memstall_enter(): the task stalls on memory (reclaim, throttling, a
    refault).  Returns the flag for psi_memstall_leave(): True when nested."""
    if task is None or not sys.cgroup_dfl:
        return True
    if task.in_memstall:
        return True
    task.in_memstall = True
    psi_task_change(sys, task, 0, TSK_MEMSTALL | TSK_MEMSTALL_RUNNING)
    return False


def psi_memstall_leave(sys, task, pflags: bool) -> None:
    """psi_memstall_leave(): the stall section ends (unless it was nested)."""
    if pflags or task is None or not sys.cgroup_dfl:
        return
    task.in_memstall = False
    clear = TSK_MEMSTALL
    if task.psi_flags & TSK_MEMSTALL_RUNNING:
        clear |= TSK_MEMSTALL_RUNNING
    psi_task_change(sys, task, clear, 0)


def cgroup_move_task(sys, task, old_memcg, new_memcg) -> None:
    """cgroup_move_task(): the task's state bits move from the old groups to the new."""
    flags = task.psi_flags if sys.cgroup_dfl else 0
    if not flags:
        return
    task.cgroup = old_memcg
    psi_task_change(sys, task, flags, 0)
    task.cgroup = new_memcg
    psi_task_change(sys, task, 0, flags)


# --- aggregation ------------------------------------------------------------------

def get_recent_times(group: PsiGroup, cpu: int, aggregator: int, now: int) -> tuple:
    """get_recent_times(): one CPU's state times since the aggregator last looked (the
    live state's time included), and which changed."""
    groupc = group.pcpu[cpu]
    times = list(groupc.times)
    changed = 0
    prev = groupc.times_prev[aggregator]
    for s in range(NR_PSI_STATES):
        if groupc.state_mask & (1 << s):
            times[s] = (times[s] + now - groupc.state_start) & U32
        delta = (times[s] - prev[s]) & U32
        prev[s] = times[s]
        times[s] = delta
        if delta:
            changed |= 1 << s
    return times, changed


def collect_percpu_times(group: PsiGroup, aggregator: int, now: int) -> int:
    """collect_percpu_times(): fold the CPUs' recent times into the totals, each CPU
    weighted by its non-idle jiffies; returns the changed states (with
    PSI_STATE_RESCHEDULE when the averaging worker should run again)."""
    deltas = [0] * (NR_PSI_STATES - 1)
    nonidle_total = 0
    changed_states = 0
    for cpu in range(len(group.pcpu)):
        times, cpu_changed = get_recent_times(group, cpu, aggregator, now)
        # the worker's reschedule rule for the other CPUs: their non-idle time moved
        if cpu_changed & (1 << PSI_NONIDLE):
            cpu_changed |= PSI_STATE_RESCHEDULE
        changed_states |= cpu_changed
        nonidle = nsecs_to_jiffies(times[PSI_NONIDLE])
        nonidle_total += nonidle
        for s in range(PSI_NONIDLE):
            deltas[s] += times[s] * nonidle
    total = group.total[aggregator]
    for s in range(NR_PSI_STATES - 1):
        total[s] += deltas[s] // max(nonidle_total, 1)
    return changed_states


def calc_avgs(avg: list, missed_periods: int, time: int, period: int) -> None:
    """calc_avgs(): zeroes for the periods of no activity, then the latest sample."""
    if missed_periods:
        avg[0] = calc_load_n(avg[0], EXP_10s, 0, missed_periods)
        avg[1] = calc_load_n(avg[1], EXP_60s, 0, missed_periods)
        avg[2] = calc_load_n(avg[2], EXP_300s, 0, missed_periods)
    pct = (time * 100 // period) * FIXED_1
    avg[0] = calc_load(avg[0], EXP_10s, pct)
    avg[1] = calc_load(avg[1], EXP_60s, pct)
    avg[2] = calc_load(avg[2], EXP_300s, pct)


def update_averages(group: PsiGroup, now: int) -> int:
    """update_averages(): feed the period's stall share into the running averages;
    returns the next update time (fixed psi_period steps, missed periods skipped)."""
    missed_periods = 0
    expires = group.avg_next_update
    if now - expires >= psi_period:
        missed_periods = (now - expires) // psi_period
    avg_next_update = expires + (1 + missed_periods) * psi_period
    period = now - (group.avg_last_update + missed_periods * psi_period)
    group.avg_last_update = now
    for s in range(NR_PSI_STATES - 1):
        sample = (group.total[PSI_AVGS][s] - group.avg_total[s]) & U32
        # punt any overage into the future until pressure subsides
        if sample > period:
            sample = period
        group.avg_total[s] += sample
        calc_avgs(group.avg[s], missed_periods, sample, period)
    return avg_next_update


def schedule_delayed_work(sys, timer: sched.HrTimer, delay: int) -> None:
    """schedule_delayed_work(): run after `delay` jiffies, at a jiffy boundary."""
    now = sched.ktime_get(sys.clock)
    sched.hrtimer_start(sys.clock, timer, jiffies_to_nsecs(nsecs_to_jiffies(now) + delay))


def psi_avgs_work(sys, group: PsiGroup) -> None:
    """psi_avgs_work(): the periodic averaging; it stops while the group is idle and
    psi_group_change() restarts it (missed periods are caught up in one go)."""
    now = sched.ktime_get(sys.clock)
    changed_states = collect_percpu_times(group, PSI_AVGS, now)
    if now >= group.avg_next_update:
        group.avg_next_update = update_averages(group, now)
    if changed_states & PSI_STATE_RESCHEDULE:
        schedule_delayed_work(sys, group.avgs_work,
                              nsecs_to_jiffies(group.avg_next_update - now) + 1)


def psi_show(sys, group: PsiGroup, res: int = PSI_MEM) -> list:
    """psi_show(): bring the averages up to date and return the "some" and "full" rows
    as (avg10, avg60, avg300, total_us), the averages in FIXED_1 fixed point."""
    now = sched.ktime_get(sys.clock)
    collect_percpu_times(group, PSI_AVGS, now)
    if now >= group.avg_next_update:
        group.avg_next_update = update_averages(group, now)
    rows = []
    for full in (0, 1):
        s = res * 2 + full
        avg = group.avg[s]
        rows.append((avg[0], avg[1], avg[2], group.total[PSI_AVGS][s] // NSEC_PER_USEC))
    return rows


# --- triggers ---------------------------------------------------------------------

def window_reset(t: PsiTrigger, now: int, value: int, prev_growth: int) -> None:
    t.win_start_time = now
    t.win_start_value = value
    t.win_prev_growth = prev_growth


def window_update(t: PsiTrigger, now: int, value: int) -> int:
    """window_update(): the growth over the last window, the part of it before the
    current window's start interpolated from the previous window's growth."""
    elapsed = now - t.win_start_time
    growth = value - t.win_start_value
    if elapsed > t.win_size:
        window_reset(t, now, value, growth)
    else:
        remaining = t.win_size - elapsed
        growth += t.win_prev_growth * remaining // t.win_size
    return growth


def init_rtpoll_triggers(group: PsiGroup, now: int) -> None:
    for t in group.triggers:
        window_reset(t, now, group.total[PSI_POLL][t.state], 0)
    group.rtpoll_total = list(group.total[PSI_POLL])
    group.rtpoll_next_update = now + group.rtpoll_min_period


def update_triggers(group: PsiGroup, now: int) -> int:
    """update_triggers(): signal each trigger whose stall growth within its window
    reached the threshold - at most once per window, deferring (not dropping) a breach
    that comes while the trigger is rate-limited."""
    total = group.total[PSI_POLL]
    update_total = False
    for t in group.triggers:
        new_stall = group.rtpoll_total[t.state] != total[t.state]
        if not new_stall and not t.pending_event:
            continue
        if new_stall:
            update_total = True
            growth = window_update(t, now, total[t.state])
            if not t.pending_event:
                if growth < t.threshold:
                    continue
                t.pending_event = True
        # limit event signaling to once per window
        if now < t.last_event_time + t.win_size:
            continue
        if t.event == 0:
            t.event = 1
            t.events += 1
            if t.efd is not None:
                # wake_up_interruptible(&t->event_wait): the poller sees POLLPRI and
                # psi_trigger_poll() takes the event (t->event back to 0) - the eventfd
                # stands for a poller always waiting in poll()
                t.efd.signal()
                t.event = 0
        t.last_event_time = now
        t.pending_event = False
    if update_total:
        group.rtpoll_total = list(total)
    return now + group.rtpoll_min_period


def psi_schedule_rtpoll_work(sys, group: PsiGroup, delay: int, force: bool) -> None:
    """psi_schedule_rtpoll_work(): wake the poll worker in `delay` jiffies unless it is
    scheduled already (or forced)."""
    was = group.rtpoll_scheduled
    group.rtpoll_scheduled = True
    if was and not force:
        return
    if not group.triggers:
        group.rtpoll_scheduled = False
        return
    schedule_delayed_work(sys, group.rtpoll_timer, delay)


def psi_rtpoll_work(sys, group: PsiGroup) -> None:
    """psi_rtpoll_work(): while the watched states change, poll every rtpoll_min_period
    (a tenth of the shortest window) for at least UPDATES_PER_WINDOW periods."""
    force_reschedule = False
    now = sched.ktime_get(sys.clock)
    if now > group.rtpoll_until:
        group.rtpoll_scheduled = False
    else:
        force_reschedule = True
    changed_states = collect_percpu_times(group, PSI_POLL, now)
    if changed_states & group.rtpoll_states:
        if now > group.rtpoll_until:
            init_rtpoll_triggers(group, now)
        group.rtpoll_until = now + group.rtpoll_min_period * UPDATES_PER_WINDOW
    if now > group.rtpoll_until:
        group.rtpoll_next_update = ULLONG_MAX
        return
    if now >= group.rtpoll_next_update:
        group.rtpoll_next_update = update_triggers(group, now)
    psi_schedule_rtpoll_work(sys, group, nsecs_to_jiffies(group.rtpoll_next_update - now) + 1,
                             force_reschedule)


def psi_trigger_create(sys, group: PsiGroup, state_name: str, threshold_us: int,
                       window_us: int, efd, res: int = PSI_MEM) -> PsiTrigger:
    """psi_trigger_create(): a trigger on "some" or "full" stall time; OSError(EINVAL)
    for a window outside 500ms..10s or a threshold of 0 or above the window."""
    if state_name == "some":
        state = PSI_IO_SOME + res * 2
    elif state_name == "full":
        state = PSI_IO_FULL + res * 2
    else:
        raise OSError(errno.EINVAL, "Invalid argument")
    if state >= PSI_NONIDLE:
        raise OSError(errno.EINVAL, "Invalid argument")
    if window_us < WINDOW_MIN_US or window_us > WINDOW_MAX_US:
        raise OSError(errno.EINVAL, "Invalid argument")
    if threshold_us == 0 or threshold_us > window_us:
        raise OSError(errno.EINVAL, "Invalid argument")
    t = PsiTrigger(group=group, state=state, threshold=threshold_us * NSEC_PER_USEC,
                   win_size=window_us * NSEC_PER_USEC, efd=efd)
    window_reset(t, sched.ktime_get(sys.clock), group.total[PSI_POLL][t.state], 0)
    group.triggers.append(t)
    group.rtpoll_min_period = min(group.rtpoll_min_period, t.win_size // UPDATES_PER_WINDOW)
    group.nr_triggers[t.state] += 1
    group.rtpoll_states |= 1 << t.state
    return t


def psi_trigger_destroy(sys, t: PsiTrigger) -> None:
    """psi_trigger_destroy(): the trigger's file was closed."""
    group = t.group
    if t not in group.triggers:
        return
    group.triggers.remove(t)
    group.nr_triggers[t.state] -= 1
    if not group.nr_triggers[t.state]:
        group.rtpoll_states &= ~(1 << t.state)
    period = U32 if not group.triggers else min(x.win_size // UPDATES_PER_WINDOW
                                                for x in group.triggers)
    group.rtpoll_min_period = period
    if group.rtpoll_states == 0:
        group.rtpoll_until = 0
        sched.hrtimer_cancel(group.rtpoll_timer)
        group.rtpoll_scheduled = False
