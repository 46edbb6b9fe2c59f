"""Anon and shmem reclaim into swap is the same with and without the fast paths.

fastpath.swapout decides small isolated batches of swap-backed pages in plain integers
(mm/vmscan.c shrink_folio_list: folio_check_references, add_to_swap, pageout), takes
whole limit-reclaim episodes of a leaf group's inactive anon list at once
(do_try_to_free_pages: every priority's batches evicted in one go, each batch's
uncharge and event check in its turn) and runs of batches that keep every page they
scan (shrink_lruvec), and mmzone.split_runs cuts short frame lists
without NumPy.  Every workload runs both ways
and everything must come out the same, frames included: every file of every group,
memory.stat, event counts, task states, the RNG state, every per-page array, each LRU
in order, the free stack frame by frame, every swap slot and its owner.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

import memcg
from memcg.mm import mmzone
from memcg.mm.memcontrol import MEMCG_MAX
from memcg.mm.fastpath import folio, shmem, stream, swaprotate, swapout, swapspan

from test_reclaim_fastpath import observe, run_both

MiB = 1 << 20


def observe_exact(k, tasks=(), events=()):
    """observe() and the frame-level state: which frame holds which page, the order of
    the free stack, the swap slots."""
    sys = k.sys
    mem = sys.mem
    out = observe(k, tasks, events)
    out["mem"] = [a.tolist() for a in (mem.memcg, mem.lru, mem.flags, mem.seq, mem.mapping,
                                       mem.index, mem.order)]
    out["free"] = mem.free_pfns().tolist()
    out["lru_order"] = {
        (m.path, lru): mem_lru_order(sys, m, lru)
        for m in sys.memcgs.values() for lru in range(mmzone.NR_LRU_LISTS)}
    out["mapping_slots"] = {mid: mp.slots.tolist() for mid, mp in sorted(sys.mappings.items())}
    out["swap"] = (sys.swap.nr_free, sys.swap._free[:sys.swap.nr_free].tolist(),
                   sys.swap.swap_cgroup.tolist(), sys.swap.swap_map.tolist())
    out["rng"] = sys.rng.getstate()
    out["mm"] = [(t.mm.anon_rss, t.mm.swapents, t.mm.shmem_rss)
                 for t in tasks if t.mm is not None]
    return out


def mem_lru_order(sys, m, lru):
    """The frames of one list, tail first."""
    mem = sys.mem
    on = np.flatnonzero((mem.memcg == m.id) & (mem.lru == lru))
    return on[np.argsort(mem.seq[on], kind="stable")].tolist()


@pytest.fixture
def taken(monkeypatch):
    """Counts the batches fastpath.swapout decided, and those of the episodes
    fastpath.swaprotate took at once."""
    count = [0]
    real_rotate = swaprotate.rotate

    def counting_rotate(sys, sc, plan):
        count[0] += sum(k for _, batches in plan[0] for *_, k in batches)
        return real_rotate(sys, sc, plan)
    monkeypatch.setattr(swaprotate, "rotate", counting_rotate)
    real = swapout.shrink_swapbacked

    def counting(*args):
        r = real(*args)
        count[0] += r is not None
        return r
    monkeypatch.setattr(swapout, "shrink_swapbacked", counting)
    return count


@pytest.fixture
def episodes(monkeypatch):
    """Counts the limit-reclaim episodes fastpath.swapout took at once, alone or in runs
    of charges."""
    count = [0]
    real = swapout.reclaim_swap_episode

    def counting(*args):
        r = real(*args)
        count[0] += r
        return r
    monkeypatch.setattr(swapout, "reclaim_swap_episode", counting)
    real_plan = swapout._plan_charge_episodes

    def counting_plan(*args):  # the episodes of runs of charges (charge_swap_episodes)
        r = real_plan(*args)
        count[0] += len(r or ())
        return r
    monkeypatch.setattr(swapout, "_plan_charge_episodes", counting_plan)
    _count_span_episodes(monkeypatch, count)
    return count


def _count_span_episodes(monkeypatch, count):
    """Add the episodes of the fault spans fastpath.swapspan took, and those of the
    spans of shmem faults fastpath.shmem took, to count[0]."""
    real_span = swapspan.swap_span
    real_shmem = shmem._apply_span

    def counting_span(sys, task, memcg, vma, flags, span):
        count[0] += span.episodes
        return real_span(sys, task, memcg, vma, flags, span)

    def counting_shmem(sys, task, obj, start, plan):
        count[0] += plan.episodes
        real_shmem(sys, task, obj, start, plan)
    monkeypatch.setattr(swapspan, "swap_span", counting_span)
    monkeypatch.setattr(shmem, "_apply_span", counting_shmem)


@pytest.fixture
def runs(monkeypatch):
    """Counts the episodes fastpath.swapout took in runs of one-page charges
    (charge_swap_episodes), and those of the fault spans of such charges
    (fastpath.swapspan)."""
    count = [0]
    real = swapout.charge_swap_episodes

    def counting(sys, memcg, nr_pages, task):
        before = memcg.memory_events_local[MEMCG_MAX]
        r = real(sys, memcg, nr_pages, task)
        count[0] += memcg.memory_events_local[MEMCG_MAX] - before
        return r
    monkeypatch.setattr(swapout, "charge_swap_episodes", counting)
    _count_span_episodes(monkeypatch, count)
    return count


@pytest.fixture
def spans(monkeypatch):
    """Counts the fault steps fastpath.swapspan took in spans at the limit, and the spans."""
    count = [0, 0]
    real = swapspan.swap_span

    def counting(sys, task, memcg, vma, flags, span):
        count[0] += len(span.steps)
        count[1] += 1
        return real(sys, task, memcg, vma, flags, span)
    monkeypatch.setattr(swapspan, "swap_span", counting)
    return count


@pytest.fixture
def rotations(monkeypatch):
    """Counts the episodes fastpath.swaprotate took at once and those the fault spans of
    fastpath.swapspan began with, and the pages they kept."""
    count = [0, 0]
    real = swaprotate.rotate

    def counting(sys, sc, plan):
        count[0] += 1
        count[1] += int(plan[1].sum())
        return real(sys, sc, plan)
    monkeypatch.setattr(swaprotate, "rotate", counting)
    real_span = swapspan.swap_span

    def counting_span(sys, task, memcg, vma, flags, span):
        count[0] += span.rotated > 0
        count[1] += span.rotated
        return real_span(sys, task, memcg, vma, flags, span)
    monkeypatch.setattr(swapspan, "swap_span", counting_span)
    return count


@pytest.fixture
def span_rotations(monkeypatch):
    """Counts the fault spans of fastpath.swapspan whose first episode kept the young
    rest of the list."""
    count = [0]
    real = swapspan.swap_span

    def counting(sys, task, memcg, vma, flags, span):
        count[0] += span.rotated > 0
        return real(sys, task, memcg, vma, flags, span)
    monkeypatch.setattr(swapspan, "swap_span", counting)
    return count


@pytest.fixture
def kept_batches(monkeypatch):
    """Counts the pages of the runs of keeping batches fastpath.swapout took at once."""
    count = [0]
    real = swapout.keep_batches

    def counting(*args):
        r = real(*args)
        count[0] += r
        return r
    monkeypatch.setattr(swapout, "keep_batches", counting)
    return count


@pytest.fixture
def shm_spans(monkeypatch):
    """Counts the steps of shmem faults fastpath.shmem took in spans."""
    count = [0]
    real = shmem.take_span

    def counting(sys, task, obj, start, nr):
        r = real(sys, task, obj, start, nr)
        count[0] += r // 64
        return r
    monkeypatch.setattr(shmem, "take_span", counting)
    return count


@pytest.fixture
def kept(monkeypatch):
    """Counts the pages of the runs of keeping batches fastpath.swapout took at once,
    those kept by the episodes fastpath.swaprotate took at once, and those kept by the
    first episodes of fastpath.shmem's and fastpath.swapspan's spans."""
    count = [0]
    real_rotate = swaprotate.rotate

    def counting_rotate(sys, sc, plan):
        count[0] += int(plan[1].sum())
        return real_rotate(sys, sc, plan)
    monkeypatch.setattr(swaprotate, "rotate", counting_rotate)
    real_shmem = shmem._apply_span

    def counting_shmem(sys, task, obj, start, plan):
        count[0] += plan.rotated
        real_shmem(sys, task, obj, start, plan)
    monkeypatch.setattr(shmem, "_apply_span", counting_shmem)
    real_span = swapspan.swap_span

    def counting_span(sys, task, memcg, vma, flags, span):
        count[0] += span.rotated
        return real_span(sys, task, memcg, vma, flags, span)
    monkeypatch.setattr(swapspan, "swap_span", counting_span)
    real = swapout.keep_batches

    def counting(*args):
        r = real(*args)
        count[0] += r
        return r
    monkeypatch.setattr(swapout, "keep_batches", counting)
    return count


def _swap_workload(ops, limit="8M", swap="64M", memsw=None, listener=None, threshold=None,
                   semantics="6.18", parent_limit=False, memory="1G", swappiness=None,
                   soft_limit=None, watch=None):
    def workload():
        k = memcg.SimKernel(memory=memory, cpus=2, swap=swap, semantics=semantics)
        k.mkdir("/p")
        k.mkdir("/p/g")
        where = "/p" if parent_limit else "/p/g"
        k.write(f"{where}/memory.limit_in_bytes", limit)
        if memsw:
            k.write(f"{where}/memory.memsw.limit_in_bytes", memsw)
        if swappiness is not None:
            k.write("/p/g/memory.swappiness", str(swappiness))
        if soft_limit:
            k.write("/p/g/memory.soft_limit_in_bytes", soft_limit)
        events = []
        if listener:
            events.append(k.event(f"{where}/memory.pressure_level", listener))
        if threshold:
            events.append(k.event(f"{where}/memory.usage_in_bytes", threshold))
        tasks = [k.spawn("/p/g"), k.spawn("/p/g")]
        woken = []
        if watch and events:
            # a user-space reader of the first eventfd, woken by each signal; "free" also
            # gives back some of the second task's anon memory when it runs
            def reader(n):
                woken.append((n, k.sys.mem.nr_free))
                if watch == "free" and tasks[1].state == "running":
                    tasks[1].free_anon(64 * 4096)
            events[0].watch(reader)
        for i, (op, who, pages) in enumerate(ops):
            t = tasks[who]
            if t.state != "running":
                continue
            n = pages * 4096
            if op == "fork":
                tasks.append(t.fork())
                continue
            {"anon": lambda: t.touch_anon(n), "cow": lambda: t.write_anon(n),
             "exit": lambda: t.exit(), "mlock": lambda: t.touch_anon(n, locked=True),
             "shm": lambda: t.touch_shm(f"s{i % 3}", n), "free": lambda: t.free_anon(n),
             "read": lambda: t.read_file("f", n), "write": lambda: t.write_file(f"w{i}", n)}[op]()
        out = observe_exact(k, tasks, events)
        out["woken"] = woken
        return out
    return workload


def _drawn_swap_workload(ops, limit_kb, swap_mb, memsw_extra_kb, threshold_kb=None,
                         soft_limit_kb=None, **kwargs):
    """_swap_workload() of sizes drawn in KiB (MiB of swap; the memsw limit as the extra
    over the limit); None draws no such limit."""
    memsw = None if memsw_extra_kb is None else f"{limit_kb + memsw_extra_kb}K"
    threshold = None if threshold_kb is None else f"{threshold_kb}K"
    soft_limit = None if soft_limit_kb is None else f"{soft_limit_kb}K"
    return _swap_workload(ops, limit=f"{limit_kb}K", swap=f"{swap_mb}M", memsw=memsw,
                          threshold=threshold, soft_limit=soft_limit, **kwargs)


@pytest.mark.parametrize("semantics", ["6.18", "3.8"])
def test_shared_anon_swaps_out_the_same_both_ways(semantics, monkeypatch):
    """Pages a fork shares copy-on-write go to swap from every mapper at once (one entry,
    one reference each); copies, reuses and exits in between come out the same."""
    obs = run_both(_swap_workload([("anon", 0, 6 * 256), ("fork", 0, 0), ("cow", 2, 2 * 256),
                                   ("anon", 1, 6 * 256), ("cow", 0, 3 * 256), ("exit", 0, 0),
                                   ("anon", 2, 4 * 256), ("cow", 2, 6 * 256)],
                                  semantics=semantics), monkeypatch)
    assert obs["swap"][0] < 64 * 256          # reclaim did swap (64M of slots)


@pytest.mark.parametrize("semantics", ["6.18", "3.8"])
@pytest.mark.parametrize("kind", ["anon", "shm"])
def test_swap_stream_same_both_ways(kind, semantics, monkeypatch, taken, episodes,
                                   shm_rotations, span_rotations):
    run_both(_swap_workload([(kind, 0, 40 * 256)], semantics=semantics), monkeypatch)
    # single batches or the episodes that keep the young list, and whole episodes
    assert (taken[0] > 0 or shm_rotations[0] > 0 or span_rotations[0] > 0) \
        and episodes[0] > 100


def test_memsw_listener_same_both_ways(monkeypatch, taken):
    obs = run_both(_swap_workload([("anon", 0, 24 * 256)], memsw="40M", listener="low"),
                   monkeypatch)
    assert obs["events"][0] > 0 and taken[0]


def test_memsw_limit_hit_same_both_ways(monkeypatch, taken):
    """The memsw limit is hit: reclaim without swap, anon activated, then OOM."""
    run_both(_swap_workload([("anon", 0, 20 * 256), ("shm", 1, 8 * 256)], memsw="16M"),
             monkeypatch)


def test_swap_runs_out_same_both_ways(monkeypatch, taken):
    """Swap fills part-way through a batch: the pages left are activated, then the
    anon task is OOM-killed and its swap entries go back."""
    obs = run_both(_swap_workload([("anon", 0, 12 * 256 + 7), ("shm", 1, 6 * 256)], swap="5M"),
                   monkeypatch)
    assert taken[0] and obs["tasks"] == ["oom_killed", "running"]


def test_mixed_batches_fall_back_same_both_ways(monkeypatch, taken):
    """mlocked, dirty and file pages beside swap-backed ones: batches of other pages
    go through the slow path, the rest through the fast one."""
    run_both(_swap_workload([("mlock", 0, 256), ("write", 1, 4 * 256), ("anon", 0, 12 * 256),
                             ("read", 1, 8 * 256), ("shm", 0, 6 * 256)]), monkeypatch)
    assert taken[0]


def test_parent_limit_threshold_same_both_ways(monkeypatch, taken):
    run_both(_swap_workload([("anon", 0, 6 * 256), ("shm", 1, 6 * 256), ("anon", 1, 256)],
                            limit="6M", parent_limit=True, threshold="5M"), monkeypatch)
    assert taken[0]


def test_swapin_and_free_same_both_ways(monkeypatch, taken):
    """shmem touched again (swap-in), anon freed and faulted again."""
    run_both(_swap_workload([("shm", 0, 10 * 256), ("shm", 0, 10 * 256), ("anon", 1, 10 * 256),
                             ("free", 1, 5 * 256), ("anon", 1, 6 * 256), ("shm", 1, 10 * 256)]),
             monkeypatch)
    assert taken[0]


@pytest.mark.parametrize("semantics", ["6.18", "3.8"])
@pytest.mark.parametrize("kind", ["anon", "shm"])
@pytest.mark.parametrize("limit,pages", [("4M", 24 * 256), ("6500K", 30 * 256 + 77),
                                         ("16M", 48 * 256)])
def test_swap_episodes_same_both_ways(kind, limit, pages, semantics, monkeypatch, episodes,
                                     kept, runs):
    """Whole limit-reclaim episodes of a leaf group's anon list at once (6c, 6d), alone
    and in runs of one-page charges, and the first reclaims' runs of batches that keep
    every freshly faulted (young) page."""
    run_both(_swap_workload([(kind, 0, pages)], limit=limit, semantics=semantics), monkeypatch)
    assert episodes[0] > 50 and kept[0] > 0 and runs[0] > 50


@pytest.mark.parametrize("semantics", ["6.18", "3.8"])
@pytest.mark.parametrize("watch", ["count", "free"])
def test_swap_episodes_woken_reader_same_both_ways(watch, semantics, monkeypatch, runs):
    """A pressure listener whose reader thread wakes on each signal (and, "free", frees
    memory when it runs): cond_resched() after a reclaim runs it, so no run of charges
    goes past a signal; the reader sees the same signals at the same free memory."""
    obs = run_both(_swap_workload([("anon", 0, 24 * 256), ("shm", 1, 8 * 256),
                                   ("anon", 1, 8 * 256)], limit="6M", listener="low",
                                  watch=watch, semantics=semantics), monkeypatch)
    assert obs["events"][0] > 5 and len(obs["woken"]) > 5


@pytest.mark.parametrize("semantics", ["6.18", "3.8"])
def test_swap_episodes_listener_without_reader_same_both_ways(semantics, monkeypatch, runs):
    """A pressure listener nobody reads (6e): its signals only count, and runs of charges
    take the windows' signals in their order."""
    obs = run_both(_swap_workload([("anon", 0, 32 * 256)], limit="6M", memsw="200M",
                                  listener="low", semantics=semantics), monkeypatch)
    assert obs["events"][0] > 5 and runs[0] > 50


@pytest.mark.parametrize("extra_kb", [40, 400, 1000, 4000])
def test_swap_episodes_memsw_limit_near_same_both_ways(extra_kb, monkeypatch, runs):
    """The memsw limit comes near while the group swaps: the runs stop where a batch
    attempt could fail at memsw, and the slow path goes on into the memsw reclaim."""
    obs = run_both(_swap_workload([("anon", 0, 12 * 256), ("anon", 1, 6 * 256)], limit="4M",
                                  memsw=f"{4096 + extra_kb}K"), monkeypatch)
    assert runs[0] > 0 or extra_kb < 1000
    assert "oom_killed" in obs["tasks"]


@pytest.mark.parametrize("nested", [False, True])
def test_swap_episodes_limited_parent_room_same_both_ways(nested, monkeypatch, runs):
    """A limit on the parent too, a little above the group's: the runs need room there
    for all their charges and a batch."""
    def workload():
        k = memcg.SimKernel(memory="1G", cpus=2, swap="64M")
        k.mkdir("/p")
        k.mkdir("/p/g")
        k.write("/p/memory.limit_in_bytes", "4200K")
        k.write("/p/g/memory.limit_in_bytes", "4M")
        tasks = [k.spawn("/p/g")]
        if nested:
            k.mkdir("/p/h")
            tasks.append(k.spawn("/p/h"))
            tasks[1].touch_anon(20 * 4096)
        tasks[0].touch_anon(12 * MiB)
        if nested:
            tasks[1].touch_anon(40 * 4096)
        return observe_exact(k, tasks)
    run_both(workload, monkeypatch)


@pytest.mark.parametrize("semantics", ["6.18", "3.8"])
def test_swap_episodes_listener_threshold_same_both_ways(semantics, monkeypatch, episodes):
    """A pressure listener and a usage threshold the episodes' uncharges cross (6e): each
    reclaim batch's uncharge checks the threshold at its own usage."""
    obs = run_both(_swap_workload([("anon", 0, 24 * 256), ("shm", 1, 8 * 256)], limit="6M",
                                  memsw="64M", listener="low", threshold="6140K",
                                  semantics=semantics), monkeypatch)
    assert episodes[0] > 50 and obs["events"][0] > 0 and obs["events"][1] > 2


@pytest.mark.parametrize("swappiness", [0, 1, 100, 200])
def test_swap_episodes_swappiness_same_both_ways(swappiness, monkeypatch, episodes):
    """Other scan splits of get_scan_count (swappiness 0: no anon scan but at priority 0)."""
    run_both(_swap_workload([("anon", 0, 16 * 256), ("shm", 1, 4 * 256)], limit="4M",
                            swappiness=swappiness, soft_limit="2M"), monkeypatch)
    assert episodes[0] > 0 or swappiness == 0


def test_swap_episodes_swap_nearly_full_same_both_ways(monkeypatch, episodes):
    """Swap runs out during the run: the episodes stop short of it, the slow path goes on."""
    obs = run_both(_swap_workload([("anon", 0, 12 * 256), ("anon", 1, 8 * 256)], limit="4M",
                                  swap="6M"), monkeypatch)
    assert episodes[0] > 0 and "oom_killed" in obs["tasks"]


@pytest.fixture
def shm_rotations(monkeypatch):
    """Counts the spans of fastpath.shmem whose first episode kept the young rest of
    the list (_plan_rotation)."""
    count = [0]
    real = shmem._apply_span

    def counting(sys, task, obj, start, plan):
        count[0] += plan.rotated > 0
        real(sys, task, obj, start, plan)
    monkeypatch.setattr(shmem, "_apply_span", counting)
    return count


@pytest.mark.parametrize("semantics", ["6.18", "3.8"])
@pytest.mark.parametrize("limit,pages", [("4M", 24 * 256), ("6500K", 30 * 256 + 77),
                                         ("16M", 80 * 256), ("8M", 40 * 256)])
def test_shmem_spans_same_both_ways(limit, pages, semantics, monkeypatch, shm_spans,
                                    shm_rotations):
    """Shmem faults through the limit into swap in spans of many steps (6d): the steps'
    charges, episodes, frames, node charges and events as step by step, the fill up to
    the limit included, and each trip of reclaim through the freshly faulted pages
    (the episode that keeps them all) at the start of a span."""
    run_both(_swap_workload([("shm", 0, pages)], limit=limit, semantics=semantics),
             monkeypatch)
    assert shm_spans[0] > pages // 64 * 9 // 10 and shm_rotations[0] >= 2


@pytest.mark.parametrize("semantics", ["6.18", "3.8"])
def test_shmem_spans_between_other_work_same_both_ways(semantics, monkeypatch, shm_spans):
    """Spans after other objects' pages, anon pages and swap-ins at the list's tail, on
    two CPUs, with a pressure listener nobody reads and a memsw limit far off."""
    obs = run_both(_swap_workload([("shm", 0, 12 * 256), ("anon", 1, 6 * 256),
                                   ("shm", 1, 20 * 256), ("shm", 0, 16 * 256),
                                   ("shm", 0, 30 * 256)], limit="6M", memsw="300M",
                                  listener="low", semantics=semantics), monkeypatch)
    assert shm_spans[0] > 50 and obs["events"][0] > 5


# What the swap properties draw alike: the group's limit, a pressure listener, a usage
# threshold, swappiness (None: the default) and the rules modelled.
_LIMIT_KB = st.integers(2048, 12 * 1024)
_LISTENER = st.one_of(st.none(), st.sampled_from(["low", "medium"]))
_THRESHOLD_KB = st.one_of(st.none(), st.integers(1024, 12 * 1024))
_SWAPPINESS = st.one_of(st.none(), st.integers(0, 200))
_SEMANTICS = st.sampled_from(["6.18", "3.8"])
_SWAP_PROPERTY = settings(max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])

_LEAF_OPS = st.lists(st.tuples(st.sampled_from(["anon", "shm", "free", "anon", "shm", "read"]),
                               st.integers(0, 1), st.integers(1, 16 * 256)),
                     min_size=1, max_size=4)


@_SWAP_PROPERTY
@given(ops=_LEAF_OPS, limit_kb=_LIMIT_KB, swap_mb=st.sampled_from([4, 16, 64]),
       memsw_extra_kb=st.one_of(st.none(), st.integers(0, 32 * 1024)),
       listener=_LISTENER, threshold_kb=_THRESHOLD_KB, swappiness=_SWAPPINESS,
       semantics=_SEMANTICS, soft_limit_kb=st.one_of(st.none(), st.integers(512, 8 * 1024)),
       watch=st.sampled_from([None, None, "count", "free"]))
@example(ops=[("anon", 0, 4000), ("shm", 1, 3000)], limit_kb=4096, swap_mb=16,
         memsw_extra_kb=None, listener="low", threshold_kb=4000, swappiness=None,
         semantics="3.8", soft_limit_kb=None, watch=None)
@example(ops=[("read", 0, 2048)], limit_kb=2048, swap_mb=4, memsw_extra_kb=None,
         listener=None, threshold_kb=None, swappiness=None, semantics="3.8",
         soft_limit_kb=None, watch=None)
@example(ops=[("anon", 0, 4000), ("anon", 1, 2000)], limit_kb=4096, swap_mb=16,
         memsw_extra_kb=200, listener="low", threshold_kb=None, swappiness=None,
         semantics="6.18", soft_limit_kb=None, watch="free")
@example(ops=[("anon", 0, 16 * 256), ("anon", 1, 12 * 256)], limit_kb=3000, swap_mb=64,
         memsw_extra_kb=30000, listener="low", threshold_kb=None, swappiness=None,
         semantics="6.18", soft_limit_kb=None, watch=None)
@example(ops=[("anon", 0, 16 * 256), ("shm", 1, 2000), ("anon", 1, 9 * 256)], limit_kb=5000,
         swap_mb=16, memsw_extra_kb=None, listener="medium", threshold_kb=None,
         swappiness=100, semantics="3.8", soft_limit_kb=None, watch=None)
@example(ops=[("shm", 1, 3000), ("anon", 0, 16 * 256), ("anon", 1, 2000)], limit_kb=4096,
         swap_mb=16, memsw_extra_kb=None, listener="low", threshold_kb=None, swappiness=None,
         semantics="3.8", soft_limit_kb=None, watch=None)
def test_hypothesis_swap_episodes(ops, limit_kb, swap_mb, memsw_extra_kb, listener,
                                  threshold_kb, swappiness, semantics, soft_limit_kb, watch,
                                  monkeypatch):
    """Random anon/shmem workloads through a leaf group's limit (where whole reclaim
    episodes are taken at once, alone, in runs of one-page charges or in spans of fault
    steps) give identical traces both ways."""
    run_both(_drawn_swap_workload(ops, limit_kb, swap_mb, memsw_extra_kb, threshold_kb,
                                  soft_limit_kb, listener=listener, swappiness=swappiness,
                                  semantics=semantics, watch=watch), monkeypatch)


_SHM_OPS = st.lists(st.tuples(st.sampled_from(["shm", "shm", "shm", "anon", "free", "read"]),
                              st.integers(0, 1), st.integers(1, 40 * 256)),
                    min_size=1, max_size=4)


@_SWAP_PROPERTY
@given(ops=_SHM_OPS, limit_kb=_LIMIT_KB, swap_mb=st.sampled_from([8, 32, 128]),
       memsw_extra_kb=st.one_of(st.none(), st.integers(0, 64 * 1024)),
       listener=_LISTENER, threshold_kb=_THRESHOLD_KB, swappiness=_SWAPPINESS,
       semantics=_SEMANTICS, watch=st.sampled_from([None, None, None, "count"]))
@example(ops=[("shm", 0, 30 * 256), ("anon", 1, 2000), ("shm", 1, 20 * 256)], limit_kb=4096,
         swap_mb=32, memsw_extra_kb=None, listener="low", threshold_kb=None,
         swappiness=None, semantics="6.18", watch=None)
@example(ops=[("shm", 0, 40 * 256), ("shm", 0, 10 * 256)], limit_kb=3000, swap_mb=8,
         memsw_extra_kb=20000, listener=None, threshold_kb=None, swappiness=30,
         semantics="3.8", watch=None)
@example(ops=[("shm", 0, 1344)], limit_kb=5132, swap_mb=8, memsw_extra_kb=None,
         listener=None, threshold_kb=None, swappiness=None, semantics="6.18", watch=None)
def test_hypothesis_shmem_spans(ops, limit_kb, swap_mb, memsw_extra_kb, listener,
                                threshold_kb, swappiness, semantics, watch, monkeypatch):
    """Random shmem-heavy workloads of two tasks (where fastpath.shmem takes spans of
    faults through the limit, and declines near a threshold, the memsw limit, full swap
    or a woken reader) give identical traces both ways."""
    run_both(_drawn_swap_workload(ops, limit_kb, swap_mb, memsw_extra_kb, threshold_kb,
                                  listener=listener, swappiness=swappiness,
                                  semantics=semantics, watch=watch), monkeypatch)


_OPS = st.lists(st.tuples(st.sampled_from(["anon", "shm", "free", "mlock", "read", "write"]),
                          st.integers(0, 1), st.integers(1, 12 * 256)), min_size=1, max_size=5)


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS, limit_kb=st.integers(1024, 8 * 1024), swap_mb=st.sampled_from([0, 2, 8, 64]),
       memsw_extra_kb=st.one_of(st.none(), st.integers(0, 16 * 1024)),
       listener=st.one_of(st.none(), st.sampled_from(["low", "medium,hierarchy"])),
       parent_limit=st.booleans(), semantics=st.sampled_from(["6.18", "3.8"]))
@example(ops=[("anon", 0, 3000), ("shm", 1, 3000)], limit_kb=4096, swap_mb=8,
         memsw_extra_kb=None, listener="low", parent_limit=False, semantics="6.18")
@example(ops=[("read", 0, 1280)], limit_kb=1024, swap_mb=0, memsw_extra_kb=None,
         listener=None, parent_limit=False, semantics="3.8")
@example(ops=[("anon", 1, 200), ("read", 0, 3000), ("read", 1, 2000)], limit_kb=1500,
         swap_mb=8, memsw_extra_kb=None, listener="low", parent_limit=True, semantics="3.8")
def test_hypothesis_swap_workloads(ops, limit_kb, swap_mb, memsw_extra_kb, listener,
                                   parent_limit, semantics, monkeypatch):
    """Random anon/shmem/swap workloads of two tasks give identical traces both ways."""
    run_both(_drawn_swap_workload(ops, limit_kb, swap_mb, memsw_extra_kb, listener=listener,
                                  parent_limit=parent_limit, semantics=semantics),
             monkeypatch)


@pytest.fixture
def streamed(monkeypatch):
    """Counts the pages fastpath.stream skipped (whole reclaim cycles of a 3.8 read)."""
    count = [0]
    real = stream.filemap_stream_cycles

    def counting(sys, task, mapping, start, n, steals):
        count[0] += n
        real(sys, task, mapping, start, n, steals)
    monkeypatch.setattr(stream, "filemap_stream_cycles", counting)
    return count


def test_stream_read_under_3_8_at_1m_limit(monkeypatch, streamed):
    """A read through a 1M limit under 3.8 rules: each batch's reclaim frees its pages
    in pieces of 1, 3, 7, ... (the priority levels), the cycle is 3 batches long, and the
    cycles skipped leave every frame, the free stack and the LRU as the batches do."""
    run_both(_swap_workload([("read", 0, 1280)], limit="1024K", swap="0M", semantics="3.8"),
             monkeypatch)
    assert streamed[0] > 0


@pytest.mark.parametrize("limit,size,reads", [("8M", 64 * MiB, 1), ("4M", 40 * MiB + 12288, 1),
                                              ("3000K", 30 * MiB, 1), ("16M", 96 * MiB, 1),
                                              ("4M", 32 * MiB, 2)])
def test_stream_reads_exact_under_3_8(limit, size, reads, monkeypatch, streamed):
    """test_reclaim_fastpath's streaming reads (and a re-read that refaults), frame for frame."""
    def workload():
        k = memcg.SimKernel(memory="1G", cpus=2, swap="0", semantics="3.8")
        k.mkdir("/b")
        k.write("/b/memory.limit_in_bytes", limit)
        t = k.spawn("/b")
        for _ in range(reads):
            t.read_file("big", size)
        return observe_exact(k, [t])
    run_both(workload, monkeypatch)
    assert streamed[0] > 0


@pytest.mark.parametrize("limit,size,reads", [("32M", 512 * MiB, 1), ("24M", 512 * MiB, 1),
                                              ("32M", 512 * MiB, 2)])
def test_folio_stream_exact(limit, size, reads, monkeypatch):
    """A 6.18 read in large folios whose readahead windows reach their full size: the
    windows fastpath.folio skips leave every frame as the folio-by-folio path does."""
    count = [0]
    real = folio.folio_stream_cycles

    def counting(sys, task, mapping, q, w, steps, order):
        count[0] += w * steps
        real(sys, task, mapping, q, w, steps, order)
    monkeypatch.setattr(folio, "folio_stream_cycles", counting)

    def workload():
        k = memcg.SimKernel(memory="1G", cpus=2, swap="0", semantics="6.18")
        k.mkdir("/b")
        k.write("/b/memory.limit_in_bytes", limit)
        t = k.spawn("/b")
        for _ in range(reads):
            t.read_file("big", size)
        return observe_exact(k, [t])
    run_both(workload, monkeypatch)
    assert count[0] > 0


def _stream_workload(reads, limit_kb, parent_limit, swap_mb, anon):
    def workload():
        k = memcg.SimKernel(memory="1G", cpus=2, swap=f"{swap_mb}M", semantics="3.8")
        k.mkdir("/p")
        k.mkdir("/p/g")
        k.write(f"{'/p' if parent_limit else '/p/g'}/memory.limit_in_bytes", f"{limit_kb}K")
        tasks = [k.spawn("/p/g"), k.spawn("/p/g")]
        if anon:
            tasks[1].touch_anon(anon * 4096)
        for name, who, pages in reads:
            if tasks[who].state == "running":
                tasks[who].read_file(name, pages * 4096)
        return observe_exact(k, tasks)
    return workload


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reads=st.lists(st.tuples(st.sampled_from(["x", "y", "z"]), st.integers(0, 1),
                                st.integers(1, 16 * 256)), min_size=1, max_size=4),
       limit_kb=st.integers(1024, 4 * 1024), parent_limit=st.booleans(),
       swap_mb=st.sampled_from([0, 8]), anon=st.sampled_from([0, 64, 300]))
@example(reads=[("x", 0, 1280)], limit_kb=1024, parent_limit=False, swap_mb=0, anon=0)
@example(reads=[("y", 0, 600), ("x", 1, 4000), ("y", 0, 4000)], limit_kb=1024,
         parent_limit=True, swap_mb=0, anon=0)
@example(reads=[("z", 0, 2000), ("x", 0, 2000), ("z", 1, 4096)], limit_kb=2048,
         parent_limit=False, swap_mb=8, anon=64)
def test_hypothesis_stream_reads_3_8_small_limits(reads, limit_kb, parent_limit, swap_mb, anon,
                                                  monkeypatch):
    """Reads of a few files through a limit of 1-4M under 3.8 rules (page by page, the
    stream fast path skipping whole reclaim cycles): frame for frame the same both ways,
    including files read after others (the old pages of other address spaces at the
    tail of the list) and an anon neighbour."""
    run_both(_stream_workload(reads, limit_kb, parent_limit, swap_mb, anon), monkeypatch)


def _split_runs_numpy(pfns):
    saved = mmzone.SPLIT_RUNS_SMALL
    mmzone.SPLIT_RUNS_SMALL = 0
    try:
        return mmzone.split_runs(pfns)
    finally:
        mmzone.SPLIT_RUNS_SMALL = saved


@settings(max_examples=300, deadline=None)
@given(start=st.integers(0, 1 << 20),
       steps=st.lists(st.sampled_from([1, -1, 1, -1, 2, -2, 0, 7]), min_size=1, max_size=70))
def test_split_runs_small_same_as_numpy(start, steps):
    """The short lists' cuts are the vectorised ones."""
    pfns = np.array(np.cumsum([start + 64] + steps), np.int32)
    firsts, lasts = mmzone.split_runs(pfns)
    ref_firsts, ref_lasts = _split_runs_numpy(pfns)
    assert firsts.dtype == ref_firsts.dtype and lasts.dtype == ref_lasts.dtype
    assert firsts.tolist() == ref_firsts.tolist() and lasts.tolist() == ref_lasts.tolist()


# --- spans of fault steps at the limit (fastpath.swapspan) --------------------------------

@pytest.mark.parametrize("semantics", ["6.18", "3.8"])
@pytest.mark.parametrize("limit,pages", [("4M", 24 * 256), ("6500K", 30 * 256 + 77),
                                         ("16M", 64 * 256)])
def test_swap_spans_same_both_ways(limit, pages, semantics, monkeypatch, spans):
    """Spans of fault steps whose charges each reclaim episodes into swap (6c), their
    page-table pages charged on the way (6.18), taken at once."""
    run_both(_swap_workload([("anon", 0, pages)], limit=limit, semantics=semantics),
             monkeypatch)
    assert spans[0] > 20 and spans[1] > 2


@pytest.mark.parametrize("semantics", ["6.18", "3.8"])
@pytest.mark.parametrize("limit,pages,listener", [("8M", 64 * 256, None),
                                                  ("16M", 96 * 256 + 77, "low"),
                                                  ("8M", 64 * 256, "critical")])
def test_swap_span_rotations_same_both_ways(limit, pages, listener, semantics, monkeypatch,
                                            spans, span_rotations):
    """Spans whose first step's episode meets the freshly faulted rest of the list:
    it keeps every young page and evicts what it meets again, and the span goes on
    evicting the kept pages (their stamps and flags as the rotation left them)."""
    run_both(_swap_workload([("anon", 0, pages)], limit=limit, listener=listener,
                            semantics=semantics), monkeypatch)
    assert span_rotations[0] >= 2 and spans[0] > 100


@pytest.mark.parametrize("semantics", ["6.18", "3.8"])
def test_swap_spans_listener_memsw_same_both_ways(semantics, monkeypatch, spans):
    """A pressure listener nobody reads and a memsw limit (6e): the windows' signals
    counted in their order inside the spans, the memsw watermark of the last batch."""
    obs = run_both(_swap_workload([("anon", 0, 40 * 256), ("anon", 1, 8 * 256)], limit="6M",
                                  memsw="120M", listener="low", semantics=semantics),
                   monkeypatch)
    assert obs["events"][0] > 5 and spans[0] > 20


@pytest.mark.parametrize("semantics", ["6.18", "3.8"])
def test_swap_spans_stop_before_swap_full_same_both_ways(semantics, monkeypatch, spans):
    """Swap runs out during the faults: the spans end before the step that would find
    it full, the rest go step by step (and to the OOM killer)."""
    run_both(_swap_workload([("anon", 0, 20 * 256), ("anon", 1, 4 * 256)], limit="4M",
                            swap="12M", semantics=semantics), monkeypatch)
    assert spans[0] > 5


# --- episodes that keep the young pages at the tail first (fastpath.swaprotate) -----------

@pytest.mark.parametrize("semantics", ["6.18", "3.8"])
@pytest.mark.parametrize("limit,pages,swappiness", [("4M", 24 * 256, None),
                                                    ("6500K", 30 * 256 + 77, None),
                                                    ("3M", 20 * 256, 150), ("5M", 20 * 256, 10)])
def test_swap_rotations_same_both_ways(limit, pages, swappiness, semantics, monkeypatch,
                                       rotations):
    """The episodes that turn the young pages at the tail around before they evict -
    down to priority 0, where they get round to the pages they kept - taken at once."""
    run_both(_swap_workload([("anon", 0, pages), ("anon", 1, 4 * 256)], limit=limit,
                            swappiness=swappiness, semantics=semantics), monkeypatch)
    assert rotations[0] > 2 and rotations[1] > 1000


@pytest.mark.parametrize("semantics", ["6.18", "3.8"])
def test_swap_rotations_listener_same_both_ways(semantics, monkeypatch, rotations):
    """A pressure listener sees the rotations' passes, scanned more than reclaimed, and the
    critical windows of their lowest priorities."""
    obs = run_both(_swap_workload([("anon", 0, 24 * 256), ("shm", 1, 4 * 256)], limit="5M",
                                  memsw="64M", listener="medium", semantics=semantics),
                   monkeypatch)
    assert rotations[0] > 2 and obs["events"][0] > 0


def test_keep_batches_with_threshold_same_both_ways(monkeypatch, kept_batches, rotations):
    """With a usage threshold the rotations go batch by batch (their uncharges check it in
    turn): the runs of keeping batches at once, the small batches in plain integers."""
    decided = [0]
    real = swapout.shrink_swapbacked

    def counting(*args):
        r = real(*args)
        decided[0] += r is not None
        return r
    monkeypatch.setattr(swapout, "shrink_swapbacked", counting)
    run_both(_swap_workload([("anon", 0, 24 * 256)], limit="4M", threshold="3M"), monkeypatch)
    assert kept_batches[0] > 1000 and decided[0] > 20 and not rotations[0]


@pytest.mark.parametrize("semantics", ["6.18", "3.8"])
def test_swap_spans_after_shmem_same_both_ways(semantics, monkeypatch, spans, rotations):
    """Another task's shmem pages are the oldest on the group's list: the spans take no
    episode of them (their object keeps its own counters); the rotations do, through
    the object's own eviction."""
    run_both(_swap_workload([("shm", 1, 12 * 256), ("anon", 0, 24 * 256),
                             ("shm", 1, 6 * 256), ("anon", 0, 8 * 256)], limit="4M",
                            semantics=semantics), monkeypatch)
    assert spans[0] > 5 and rotations[0] > 0


_SPAN_OPS = st.lists(st.tuples(st.sampled_from(["anon", "anon", "anon", "shm", "free"]),
                               st.integers(0, 1), st.integers(256, 24 * 256)),
                     min_size=1, max_size=4)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_SPAN_OPS, limit_kb=st.integers(2048, 8 * 1024), swap_mb=st.sampled_from([6, 16, 64]),
       memsw_extra_kb=st.one_of(st.none(), st.integers(0, 48 * 1024)),
       listener=st.one_of(st.none(), st.sampled_from(["low", "medium", "critical"])),
       swappiness=st.one_of(st.none(), st.integers(1, 200)),
       semantics=st.sampled_from(["6.18", "3.8"]))
@example(ops=[("anon", 0, 24 * 256), ("anon", 1, 12 * 256)], limit_kb=3000, swap_mb=64,
         memsw_extra_kb=20000, listener="critical", swappiness=None, semantics="6.18")
def test_hypothesis_swap_spans(ops, limit_kb, swap_mb, memsw_extra_kb, listener, swappiness,
                               semantics, monkeypatch, spans, rotations, span_rotations):
    """Random anon-heavy workloads through a leaf group's limit, where spans of fault
    steps and rotations (alone or as a span's first episode) are taken at once, give
    identical traces both ways."""
    spans[:] = [0, 0]  # the fixtures count across examples: this one's alone
    rotations[:] = [0, 0]
    span_rotations[:] = [0]
    run_both(_drawn_swap_workload(ops, limit_kb, swap_mb, memsw_extra_kb, listener=listener,
                                  swappiness=swappiness, semantics=semantics), monkeypatch)
    event(f"spans taken: {spans[0] > 0}, rotations taken: {rotations[0] > 0}")
    event(f"spans begun with a rotation: {span_rotations[0] > 0}")
