"""The machine's clock and its one event queue: timers, softirq work, woken tasks and the
user-space threads the simulated kernel lets run.

The kernel spreads this over kernel/time/timer.c (timers: mod_timer, del_timer,
__run_timers), kernel/softirq.c (raised softirqs), kernel/workqueue.c (delayed work),
kernel/sched (woken tasks) and kernel/entry/common.c (what runs before a system call
returns to user space).  The model keeps them in one module, named for what it does -
decide what runs next - because they share one order: every piece of deferred work is
an event on one heap, keyed by

    (simulated time, priority, order, sequence number)

so that what runs next is decided by the key alone, the same on every run.  Work for
"when the current operation returns to user space" is an event at the current time;
a timer is an event at its expiry.  The priority says which kind of event goes first
within one instant (the order of a tick's work: softirq packets, the flusher, fault
retries, TCP's timers, then user-space threads and woken tasks); `order` ranks timers
of one kind by their owner (a socket's number, as the sockets were made) - TCP's by
their timeout first (the real delay before they fire, all armed in the tick before:
a loss probe of a few milliseconds before a 40 ms delayed ACK before a 200 ms
retransmission), then by kind and socket; the sequence number keeps everything else
first-queued, first-run.  Each scheduling point runs the due events of its own kinds
only: the loopback softirq its packets, a tick its timers, cond_resched() the user
threads, the return to user space the threads and then the woken tasks - so a thread
made runnable before a tick still runs after that tick's timers.

The state is a plain `Clock` (System.clock); the functions receive it.  Time is in
ticks of one second (`Clock.now`, the model's jiffies).

Beside the ticks the clock keeps a monotonic time in nanoseconds (`Clock.ns`, the
kernel's sched_clock()/ktime_get()) for what the kernel times finer than a tick: the
memory.high penalty sleeps and PSI's stall times, averaging periods and trigger windows
(kernel/sched/psi.c).  It never runs behind the ticks: each tick sets it to at least
`now` seconds.  Sleeps and PSI's workers are high-resolution timers (`HrTimer`) on a
second heap keyed by (nanoseconds, sequence number); `run_until` runs those that expire
before a tick (and at it) first, each followed by a return to user space, then the
tick.  Nothing on cgroup v1 arms one, so v1 runs see exactly the ticks they always saw.
Kernel code that counts in jiffies does so at HZ (below), not in the model's ticks.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush

# Priorities of the kinds of events within one instant, first first.
NET_RX = 0  # net/core/dev.c: net_rx_action(), the loopback softirq's packets
WRITEBACK = 1  # fs/fs-writeback.c: wb_workfn(), the flusher's periodic wakeup
NOMEM_RETRY = 2  # a fault that found nobody to OOM-kill is retried (tasks.py)
TCP_TIMER = 3  # net/ipv4/tcp_timer.c: a socket's delayed ACK, retransmit and probe timers
USER = 4  # a user-space thread became runnable (an eventfd reader woken by a signal)
TASK = 5  # a woken task resumes the operations it was blocked in
# The kinds of TCP timers, which rank timers with the same timeout (below)
TCP_DELACK = 0  # tcp_delack_timer()
TCP_RETRANSMIT = 1  # tcp_retransmit_timer() (ICSK_TIME_RETRANS, ICSK_TIME_LOSS_PROBE)
TCP_PROBE = 2  # tcp_probe_timer() (ICSK_TIME_PROBE0)

# What the timer softirq of a tick runs (__run_timers)
TIMERS = (WRITEBACK, NOMEM_RETRY, TCP_TIMER)

# include/vdso/time64.h
NSEC_PER_SEC = 1_000_000_000
NSEC_PER_MSEC = 1_000_000
NSEC_PER_USEC = 1_000
# CONFIG_HZ of the kernel code the model follows where it counts in jiffies (memory.high
# penalties, PSI_FREQ, timer slack): 250, Debian's and most distributions' setting, the
# VM guest's included.  The model's own tick (Clock.now) is one second, not a jiffy.
HZ = 250
TICK_NSEC = NSEC_PER_SEC // HZ


def jiffies_to_nsecs(j: int) -> int:
    """include/linux/jiffies.h: jiffies_to_nsecs()."""
    return j * TICK_NSEC


def nsecs_to_jiffies(n: int) -> int:
    """kernel/time/time.c: nsecs_to_jiffies() (HZ divides NSEC_PER_SEC)."""
    return n // TICK_NSEC


# A heap entry: [time, priority, order, sequence number, fn, args]; fn is None once
# the event was cancelled (it is dropped when it comes to the top).
_TIME, _PRIO, _ORDER, _FN, _ARGS = 0, 1, 2, 4, 5


class Clock:
    """The clock and everything waiting on it."""

    def __init__(self):
        self.now = 0  # ticks since boot
        self.queue: list = []  # the event heap
        self.seq = 0  # events queued so far: the last tie-breaker of the key
        self.sleeping: list = []  # blocked tasks (tasks.py), in the order they slept
        self.in_resched = False  # user-space threads are running (cond_resched)
        self.in_exit = False  # the return to user space is running (exit_to_user_mode)
        self.ns = 0  # nanoseconds since boot (sched_clock()); never behind now seconds
        self.hrtimers: list = []  # the high-resolution timer heap: [ns, seq, fn, args]


class Timer:
    """struct timer_list: one timer of an owner (a socket's, a task's, the flusher's).

    fn(*args) runs when the clock reaches the expiry; `order` ranks the timers of one
    kind that expire in the same tick (the owner may change it before mod_timer()).
    """

    __slots__ = ("prio", "order", "fn", "args", "entry")

    def __init__(self, prio: int, order: int, fn, *args):
        self.prio = prio
        self.order = order
        self.fn = fn
        self.args = args
        self.entry = None  # the pending heap entry, or None


def _push(clock: Clock, time: int, prio: int, order: int, fn, args: tuple) -> list:
    clock.seq += 1
    entry = [time, prio, order, clock.seq, fn, args]
    heappush(clock.queue, entry)
    return entry


def queue_work(clock: Clock, prio: int, fn, *args) -> None:
    """Queue fn(*args) at the current time, to run when a scheduling point runs events
    of kind prio (a packet at the softirq, a woken task at the return to user space)."""
    _push(clock, clock.now, prio, 0, fn, args)


def _expire(timer: Timer) -> None:
    timer.entry = None
    timer.fn(*timer.args)


def mod_timer(clock: Clock, timer: Timer, expires: int) -> None:
    """mod_timer(): the timer fires at tick expires (and only then, if it was pending),
    ranked by its current order."""
    entry = timer.entry
    if entry is not None:
        if entry[_TIME] == expires and entry[_ORDER] == timer.order:
            return
        entry[_FN] = None
    timer.entry = _push(clock, expires, timer.prio, timer.order, _expire, (timer,))


def del_timer(timer: Timer) -> None:
    """del_timer(): a pending timer will not fire."""
    if timer.entry is not None:
        timer.entry[_FN] = None
        timer.entry = None


def timer_pending(timer: Timer) -> bool:
    return timer.entry is not None


def _pop(clock: Clock, kinds: tuple) -> list | None:
    """The first due event of one of kinds (by key), taken off the queue; None if none."""
    q = clock.queue
    while q:
        head = q[0]
        if head[_FN] is None:
            heappop(q)  # cancelled
            continue
        if head[_TIME] > clock.now:
            return None  # nothing at all is due
        if head[_PRIO] in kinds:
            return heappop(q)
        break
    else:
        return None
    # The first due event is of another kind: work left for the next return to user
    # space while the tick's timers run, or threads a nested scheduling point may not
    # run.  Rare, and the queue is short: look through it.
    now = clock.now
    best = None
    for e in q:
        if e[_FN] is not None and e[_TIME] <= now and e[_PRIO] in kinds \
                and (best is None or e < best):
            best = e
    if best is None:
        return None
    for i, e in enumerate(q):
        if e is best:
            q[i] = q[-1]
            q.pop()
            heapify(q)
            break
    return best


def run(clock: Clock, kinds: tuple) -> None:
    """Run the due events of kinds in key order, those they queue included, until none
    is left."""
    while True:
        e = _pop(clock, kinds)
        if e is None:
            return
        e[_FN](*e[_ARGS])


def nr_queued(clock: Clock, kinds: tuple) -> tuple:
    """How many live events of each of kinds are queued (due or not)."""
    counts = dict.fromkeys(kinds, 0)
    for e in clock.queue:
        if e[_FN] is not None and e[_PRIO] in counts:
            counts[e[_PRIO]] += 1
    return tuple(counts.values())


_USER = (USER,)
_TASK = (TASK,)


def user_work_due(clock: Clock) -> bool:
    """Would cond_resched() run anything now: a due user-space thread's event?"""
    now = clock.now
    return any(e[_FN] is not None and e[_TIME] <= now and e[_PRIO] == USER for e in clock.queue)


def cond_resched(clock: Clock) -> None:
    """Let the runnable user-space threads run: at every return to user space, and while
    a charging task waits in reclaim (they run concurrently with it on a real machine).
    Not re-entered: a thread that enters the kernel and waits does not run the others."""
    if clock.in_resched:
        return
    clock.in_resched = True
    try:
        run(clock, _USER)
    finally:
        clock.in_resched = False


def exit_to_user_mode(clock: Clock) -> None:
    """The current operation returns to user space: runnable threads run, then each woken
    task resumes its operations, the threads it made runnable running after it.  Not
    re-entered: an operation of a woken task or of a thread returns to this loop."""
    if clock.in_exit:
        return
    clock.in_exit = True
    try:
        cond_resched(clock)
        while True:
            e = _pop(clock, _TASK)
            if e is None:
                break
            e[_FN](*e[_ARGS])
            cond_resched(clock)
    finally:
        clock.in_exit = False


class HrTimer:
    """struct hrtimer: fn(*args) runs when Clock.ns reaches the expiry (nanoseconds)."""

    __slots__ = ("fn", "args", "entry")

    def __init__(self, fn, *args):
        self.fn = fn
        self.args = args
        self.entry = None  # the pending heap entry, or None


def ktime_get(clock: Clock) -> int:
    """ktime_get() / sched_clock(): nanoseconds since boot."""
    return clock.ns


def _hrtimer_expire(timer: HrTimer) -> None:
    timer.entry = None
    timer.fn(*timer.args)


def hrtimer_start(clock: Clock, timer: HrTimer, expires_ns: int) -> None:
    """hrtimer_start(): (re)arm the timer for expires_ns (never before now)."""
    hrtimer_cancel(timer)
    clock.seq += 1
    timer.entry = [max(expires_ns, clock.ns), clock.seq, _hrtimer_expire, (timer,)]
    heappush(clock.hrtimers, timer.entry)


def hrtimer_cancel(timer: HrTimer) -> None:
    """hrtimer_cancel(): a pending timer will not fire."""
    if timer.entry is not None:
        timer.entry[2] = None
        timer.entry = None


def hrtimer_active(timer: HrTimer) -> bool:
    return timer.entry is not None


def run_hrtimers(clock: Clock, until_ns: int) -> None:
    """Let time pass to until_ns: each high-resolution timer expiring by then runs at its
    expiry (hrtimer_interrupt), then the machine returns to user space."""
    q = clock.hrtimers
    while q and q[0][0] <= until_ns:
        entry = heappop(q)
        if entry[2] is None:
            continue  # cancelled
        if entry[0] > clock.ns:
            clock.ns = entry[0]
        entry[2](*entry[3])
        exit_to_user_mode(clock)
    if clock.ns < until_ns:
        clock.ns = until_ns


def run_until(clock: Clock, end: int) -> None:
    """Let time pass to tick end: at each tick the expired timers run (the timer
    softirq, in key order), then the machine returns to user space.  High-resolution
    timers expiring before a tick (or at it) run first, at their own time."""
    while clock.now < end:
        if clock.hrtimers:
            run_hrtimers(clock, (clock.now + 1) * NSEC_PER_SEC)
        clock.now += 1
        if clock.ns < clock.now * NSEC_PER_SEC:
            clock.ns = clock.now * NSEC_PER_SEC
        run(clock, TIMERS)
        exit_to_user_mode(clock)
