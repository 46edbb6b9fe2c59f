"""The clock and its event queue (sched.py): the order events run in is the key's."""

from memcg import sched


def test_timers_of_one_tick_run_by_kind_then_owner_then_arming_order():
    c = sched.Clock()
    ran = []
    # TCP's timers rank by (timeout in jiffies, kind, socket): a loss probe of 1 jiffy
    # before the 40 ms delayed ACKs (by socket), before a 200 ms zero-window probe
    probe = sched.Timer(sched.TCP_TIMER, (50, sched.TCP_PROBE, 1), ran.append, "probe1")
    delack2 = sched.Timer(sched.TCP_TIMER, (10, sched.TCP_DELACK, 2), ran.append, "delack2")
    delack1 = sched.Timer(sched.TCP_TIMER, (10, sched.TCP_DELACK, 1), ran.append, "delack1")
    tlp3 = sched.Timer(sched.TCP_TIMER, (1, sched.TCP_RETRANSMIT, 3), ran.append, "tlp3")
    retry_a = sched.Timer(sched.NOMEM_RETRY, 0, ran.append, "retry_a")
    retry_b = sched.Timer(sched.NOMEM_RETRY, 0, ran.append, "retry_b")
    for t in (probe, delack2, tlp3, delack1, retry_b, retry_a):
        sched.mod_timer(c, t, 1)
    sched.run_until(c, 1)
    assert ran == ["retry_b", "retry_a", "tlp3", "delack1", "delack2", "probe1"]
    assert not any(sched.timer_pending(t) for t in (probe, delack1, retry_a, tlp3))


def test_mod_timer_with_a_new_order_moves_the_timer_within_its_tick():
    c = sched.Clock()
    ran = []
    rto = sched.Timer(sched.TCP_TIMER, (51, sched.TCP_RETRANSMIT, 1), ran.append, "rto")
    delack = sched.Timer(sched.TCP_TIMER, (10, sched.TCP_DELACK, 2), ran.append, "delack")
    sched.mod_timer(c, rto, 1)
    sched.mod_timer(c, delack, 1)
    rto.order = (2, sched.TCP_RETRANSMIT, 1)  # re-armed as a loss probe, same tick
    sched.mod_timer(c, rto, 1)
    sched.run_until(c, 1)
    assert ran == ["rto", "delack"]


def test_mod_timer_moves_a_pending_timer_and_del_timer_stops_it():
    c = sched.Clock()
    ran = []
    t = sched.Timer(sched.TCP_TIMER, (51, sched.TCP_RETRANSMIT, 0), lambda: ran.append(c.now))
    sched.mod_timer(c, t, 1)
    sched.mod_timer(c, t, 3)
    sched.run_until(c, 2)
    assert ran == [] and sched.timer_pending(t)
    sched.run_until(c, 3)
    assert ran == [3]
    sched.mod_timer(c, t, 5)
    sched.del_timer(t)
    sched.run_until(c, 6)
    assert ran == [3] and not sched.timer_pending(t)


def test_return_to_user_space_runs_threads_before_and_after_each_woken_task():
    c = sched.Clock()
    ran = []

    def task(name):
        ran.append(name)
        sched.queue_work(c, sched.USER, ran.append, "thread of " + name)

    sched.queue_work(c, sched.TASK, task, "t1")
    sched.queue_work(c, sched.TASK, task, "t2")
    sched.queue_work(c, sched.USER, ran.append, "thread")
    sched.exit_to_user_mode(c)
    assert ran == ["thread", "t1", "thread of t1", "t2", "thread of t2"]


def test_a_thread_returning_to_user_space_runs_woken_tasks_but_not_other_threads():
    c = sched.Clock()
    ran = []

    def thread():
        ran.append("thread")
        sched.queue_work(c, sched.USER, ran.append, "second thread")
        sched.queue_work(c, sched.TASK, ran.append, "task")
        sched.exit_to_user_mode(c)  # e.g. the thread frees memory: a system call
        ran.append("thread returns")

    sched.queue_work(c, sched.USER, thread)
    sched.cond_resched(c)
    assert ran == ["thread", "task", "thread returns", "second thread"]


def test_a_tick_runs_its_timers_before_the_threads_left_from_before():
    c = sched.Clock()
    ran = []
    sched.queue_work(c, sched.USER, ran.append, "thread")
    sched.mod_timer(c, sched.Timer(sched.WRITEBACK, 0, ran.append, "flusher"), 1)
    sched.run_until(c, 1)
    assert ran == ["flusher", "thread"]
    assert sched.nr_queued(c, (sched.USER, sched.TASK)) == (0, 0)
