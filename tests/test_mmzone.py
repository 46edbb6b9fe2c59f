"""Page frames, the free stack and the LRU lists against plain Python models, and the
anonymous-fault spans against the step-by-step faults they stand for.

* The free stack (MemMap.alloc / alloc_run / free) behaves as a Python list of PFNs used
  as a stack: frames are pushed in the order given and popped from the top, so that
  allocating a and then b frames gives what allocating a + b gives.
* An LRU list (LruList.add / isolate / forget / compact) behaves as a Python list of
  pages in age order: isolation takes the oldest live pages; a page that left the list
  from the middle (its entry goes stale) is never taken for a live one, even when it
  comes back to the same list, or is freed and reused; and stale entries stay bounded.
* mem_cgroup_event_ratelimit() in closed form matches the commit-by-commit counters.
* A fault span sets up the same state as its FAULT_BATCH steps one at a time: every
  cgroup file, event, counter, per-CPU stock, per-page array, the LRU order and the free
  stack itself, and the page tables (PTE pages charged as kernel memory, through the
  per-CPU stock, before the step that needs them).

Kernel references: mm/page_alloc.c (free lists), mm/vmscan.c isolate_lru_folios(),
mm/memcontrol-v1.c mem_cgroup_event_ratelimit(), mm/memory.c do_anonymous_page().
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memcg
from memcg.cgroupfs import v1 as cgroupfs
from memcg.mm import fastpath, memory
from memcg.mm.fastpath import fault
from memcg.mm.fastpath.ratelimit import ratelimit_after
from memcg.mm.memcontrol import SOFTLIMIT_EVENTS_TARGET, THRESHOLDS_EVENTS_TARGET
from memcg.mm.mmzone import (LRU_COMPACT_SLACK, LRU_INACTIVE_ANON, LRU_INACTIVE_FILE, LRU_NONE,
                          NR_LRU_LISTS, LruList, MemMap, split_runs)

MiB = 1 << 20
NR_PAGES = 4096


# --- the free stack -------------------------------------------------------------------------

def check_runs(pfns):
    firsts, lasts = split_runs(np.asarray(pfns))
    out = []
    for f, l in zip(firsts.tolist(), lasts.tolist()):
        step = 1 if l >= f else -1
        out += list(range(f, l + step, step))
    assert out == list(pfns)


@given(st.lists(st.integers(0, 40), max_size=60))
def test_split_runs_cover_the_sequence_in_order(pfns):
    check_runs(pfns)


def test_split_runs_of_long_runs():
    seq = list(range(10, 100)) + list(range(5, -1, -1)) + [7, 9, 8, 7, 200]
    firsts, lasts = split_runs(np.array(seq))
    check_runs(seq)
    assert len(firsts) <= 6


free_ops = st.lists(st.one_of(
    st.tuples(st.just("alloc"), st.integers(0, 700)),
    st.tuples(st.just("run"), st.integers(1, 700)),
    st.tuples(st.just("free"), st.integers(0, 10**6), st.booleans())), max_size=40)


@settings(max_examples=150, deadline=None)
@given(free_ops)
def test_free_stack_is_a_stack_of_frames(ops):
    mem = MemMap(NR_PAGES)
    model = list(range(NR_PAGES - 1, -1, -1))  # the old flat stack: top at the end
    held: list[int] = []
    for op in ops:
        if op[0] == "alloc":
            n = min(op[1], len(model))
            got = mem.alloc(n).tolist()
            want = model[len(model) - n:][::-1]
            del model[len(model) - n:]
            assert got == want
            held += got
        elif op[0] == "run":
            n = min(op[1], mem.top_run())
            if not n:
                continue
            run = mem.alloc_run(n)
            want = model[len(model) - n:][::-1]
            del model[len(model) - n:]
            assert list(run) == want and abs(run.step) == 1
            held += want
        else:
            if not held:
                continue
            # free a random slice of what is held, in held order or reversed, or shuffled
            rng = np.random.default_rng(op[1])
            k = int(rng.integers(1, len(held) + 1))
            start = int(rng.integers(0, len(held) - k + 1))
            part = held[start:start + k]
            if op[2]:
                part = part[::-1] if rng.integers(2) else rng.permutation(part).tolist()
            del held[start:start + k]
            mem.free(np.array(part, np.int32))
            model += part
        assert mem.nr_free == len(model)
        assert mem._free[:mem.nr_free].tolist() == model
        assert mem.top_run() >= (1 if model else 0)
    assert sorted(held + model) == list(range(NR_PAGES))


@settings(max_examples=100, deadline=None)
@given(free_ops)
def test_small_batches_in_plain_integers_give_the_vectorised_stack(ops):
    """alloc() and free() of a few dozen frames (split_runs, alloc from several runs in
    plain integers) leave the same runs, not only the same frames, as the NumPy paths."""
    from memcg.mm import mmzone
    stacks = []
    for small in (mmzone.SPLIT_RUNS_SMALL, 0):
        real, mmzone.SPLIT_RUNS_SMALL = mmzone.SPLIT_RUNS_SMALL, small
        try:
            mem = MemMap(NR_PAGES)
            held: list[int] = []
            trace = []
            for op in ops:
                if op[0] in ("alloc", "run"):
                    got = mem.alloc(min(op[1] % 70, mem.nr_free)).tolist()
                    held += got
                    trace.append(got)
                elif held:
                    rng = np.random.default_rng(op[1])
                    k = int(rng.integers(1, min(len(held), 70) + 1))
                    part = held[:k][::-1] if op[2] else rng.permutation(held[:k]).tolist()
                    del held[:k]
                    mem.free(np.array(part, np.int32))
                r = mem.nr_free_runs
                trace.append((mem._first[:r].tolist(), mem._last[:r].tolist()))
            stacks.append(trace)
        finally:
            mmzone.SPLIT_RUNS_SMALL = real
    assert stacks[0] == stacks[1]


@settings(max_examples=100, deadline=None)
@given(free_ops)
def test_push_list_gives_the_runs_of_free(ops):
    """push_list() of a list of frames (what a reclaim batch frees) leaves the same runs
    as free() of them as an array."""
    stacks = []
    for as_list in (True, False):
        mem = MemMap(NR_PAGES)
        held: list[int] = []
        trace = []
        for op in ops:
            if op[0] in ("alloc", "run"):
                held += mem.alloc(min(op[1] % 70, mem.nr_free)).tolist()
            elif held:
                rng = np.random.default_rng(op[1])
                k = int(rng.integers(1, min(len(held), 70) + 1))
                part = held[:k][::-1] if op[2] else rng.permutation(held[:k]).tolist()
                del held[:k]
                if as_list:
                    mem._clear(np.array(part, np.int32))
                    mem.push_list(part)
                    mem.nr_free += len(part)
                else:
                    mem.free(np.array(part, np.int32))
            r = mem.nr_free_runs
            trace.append((mem._first[:r].tolist(), mem._last[:r].tolist(), mem.nr_free))
        stacks.append(trace)
    assert stacks[0] == stacks[1]


def test_free_stack_of_whole_mappings_stays_a_few_runs():
    """Freeing what was allocated run by run, in whatever direction, keeps runs long."""
    mem = MemMap(1 << 16)
    a, b = mem.alloc(10000), mem.alloc(20000)
    mem.free(a)
    mem.free(b[::-1])
    assert mem.nr_free_runs == 3  # the untouched rest, a, b backwards
    mem.free(mem.alloc(30000))  # b's frames, then a's, in pop order
    assert mem.nr_free_runs == 3
    assert mem.top_run() == 10000


def test_untouched_per_page_arrays_start_at_zero():
    """Every per-page array but lru is np.zeros: untouched pages cost no resident memory."""
    mem = MemMap(NR_PAGES)
    for a in (mem.memcg, mem.flags, mem.seq, mem.mapping, mem.index, mem.order):
        assert not a.any()
    assert (mem.lru == LRU_NONE).all()
    assert mem.bytes_used() == NR_PAGES * 17


# --- LRU lists ----------------------------------------------------------------------------

lru_ops = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(1, 300), st.integers(0, 2)),
    st.tuples(st.just("isolate"), st.integers(0, 200)),
    st.tuples(st.just("forget"), st.integers(0, 10**6), st.integers(1, 100)),
    st.tuples(st.just("readd"), st.integers(0, 10**6), st.integers(1, 100)),
    st.tuples(st.just("free"), st.integers(0, 10**6), st.integers(1, 100)),
    st.tuples(st.just("compact"),)), max_size=50)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lru_ops)
def test_lru_list_matches_a_list_model(ops):
    """Two lists of the same kind (two memcgs' inactive anon lists) and one of another
    share the frames; each must behave as a Python list of its pages in age order."""
    mem = MemMap(NR_PAGES)
    lists = [LruList(LRU_INACTIVE_ANON), LruList(LRU_INACTIVE_ANON), LruList(LRU_INACTIVE_FILE)]
    models: list[list[int]] = [[], [], []]
    off: list[int] = []  # allocated, on no list
    turn = 0

    def take(seed, n, pool):
        rng = np.random.default_rng(seed)
        n = min(n, len(pool))
        idx = sorted(rng.choice(len(pool), n, replace=False).tolist()) if n else []
        return [pool[i] for i in idx]

    def leave(pages):
        """lru_del(): pages leave their lists from the middle."""
        for p in pages:
            i = next(i for i, m in enumerate(models) if p in m)
            models[i].remove(p)
            lists[i].forget(1)
            mem.lru[p] = LRU_NONE
        off.extend(pages)

    for op in ops:
        turn = (turn + 1) % 3
        lst, model = lists[turn], models[turn]
        if op[0] == "add":
            n = min(op[1], mem.nr_free)
            if not n:
                continue
            if op[2] == 0 and mem.top_run() >= n:
                run = mem.alloc_run(n)
                lst.add(mem, run)
                pages = list(run)
            else:
                pfns = mem.alloc(n)
                if op[2] == 2:
                    pfns = pfns[::-1].copy()
                lst.add(mem, pfns)
                pages = pfns.tolist()
            model.extend(pages)
        elif op[0] == "isolate":
            got = lst.isolate(mem, op[1]).tolist()
            assert got == model[:len(got)]
            assert len(got) == min(op[1], len(model))
            del model[:len(got)]
            off.extend(got)
            lst.maybe_compact(mem)
        elif op[0] == "forget":
            leave(take(op[1], op[2], [p for m in models for p in m]))
        elif op[0] == "readd":
            # pages come back, to this list or another one of the same kind
            pages = take(op[1], op[2], off)
            for p in pages:
                off.remove(p)
            if pages:
                lst.add(mem, np.array(pages, np.int32))
                model.extend(pages)
        elif op[0] == "free":
            pages = take(op[1], op[2], off)
            for p in pages:
                off.remove(p)
            mem.free(np.array(pages, np.int32))
        else:
            lst.compact(mem)
        for lst_, model_ in zip(lists, models):
            assert lst_.nr == len(model_)
            assert lst_.entries < 2 * lst_.nr + LRU_COMPACT_SLACK + 300
    # drain: everything comes out in order, nothing stale is taken
    for lst, model in zip(lists, models):
        assert lst.isolate(mem, NR_PAGES).tolist() == model
        assert lst.nr == 0


def test_stale_entries_are_compacted_without_reclaim():
    """A list that is only added to and left (touch, then unmap, over and over) keeps
    its stale entries bounded: adds compact it too, not only isolation."""
    mem = MemMap(1 << 14)
    lst = LruList(LRU_INACTIVE_ANON)
    for _ in range(200):
        pfns = mem.alloc(1000)
        lst.add(mem, pfns)
        lst.forget(len(pfns))
        mem.free(pfns)
    assert lst.nr == 0
    assert lst.entries < LRU_COMPACT_SLACK + 1000
    assert sum(len(c[0]) - c[2] for c in lst.chunks) == lst.entries


def test_compaction_keeps_runs_as_ranges():
    mem = MemMap(1 << 14)
    lst = LruList(LRU_INACTIVE_ANON)
    run = mem.alloc_run(8000)
    lst.add(mem, run)
    scattered = mem.alloc(100)
    lst.add(mem, scattered)
    mem.lru[list(run)[100:200]] = LRU_NONE
    lst.forget(100)
    lst.compact(mem)
    assert all(isinstance(c[0], range) for c in lst.chunks)
    want = list(run)[:100] + list(run)[200:] + scattered.tolist()
    assert lst.isolate(mem, 10**6).tolist() == want


# --- the event ratelimit in closed form ---------------------------------------------------------

def ratelimit_by_steps(val, thresh, soft, step, k):
    first_soft = 0
    for i in range(1, k + 1):
        val += step
        if val - thresh >= 0:
            thresh = val + THRESHOLDS_EVENTS_TARGET
            if val - soft >= 0:
                soft = val + SOFTLIMIT_EVENTS_TARGET
                first_soft = first_soft or i
    return val, thresh, soft, first_soft


@given(st.integers(0, 10**6), st.integers(-200, 200), st.integers(-2000, 2000),
       st.sampled_from([1, 32, 64, 100, 128, 256, 1000, 2048]), st.integers(0, 300))
def test_ratelimit_closed_form(val, dthresh, dsoft, step, k):
    thresh = val + min(dthresh, THRESHOLDS_EVENTS_TARGET)
    soft = val + min(dsoft, SOFTLIMIT_EVENTS_TARGET)
    assert ratelimit_after(val, thresh, soft, step, k) == \
        ratelimit_by_steps(val, thresh, soft, step, k)


# --- fault spans ------------------------------------------------------------------------------

def observe(k, tasks, events):
    """Everything the model holds, frame numbers included (spans keep them)."""
    sys = k.sys
    mem = sys.mem
    files = {}
    for m in sorted(sys.memcgs.values(), key=lambda m: m.path):
        if m.online:
            for name in cgroupfs.files_of(m, k.semantics):
                path = m.path.rstrip("/") + "/" + name
                try:
                    files[path] = k.read(path)
                except OSError as e:
                    files[path] = f"errno {e.errno}"
    lrus = {}
    for memcg_id, m in sorted(sys.memcgs.items()):
        for lru in range(NR_LRU_LISTS):
            pfns = np.flatnonzero((mem.memcg == memcg_id) & (mem.lru == lru))
            lrus[(m.path, lru)] = pfns[np.argsort(mem.seq[pfns], kind="stable")].tolist()
            assert m.lruvec.size(lru) == len(pfns)
    internal = {m.path: (list(m.nr_page_events), list(m.thresh_target),
                         list(m.softlimit_target),
                         [(c.usage, c.watermark, c.failcnt) for c in (m.memory, m.memsw, m.kmem)])
                for m in sys.memcgs.values()}
    return {
        "files": files, "debugfs": k.debugfs(), "stats": sys.stats.a.tolist(),
        "internal": internal, "tree": dict(sys.soft_limit_tree), "lrus": lrus,
        "stock": [[(c.path if c else None, n) for c, n in zip(s.cached, s.nr_pages)]
                  for s in sys.stock],
        "arrays": [a.tolist() for a in (mem.memcg, mem.lru, mem.flags, mem.mapping, mem.index)],
        "free": mem._free[:mem.nr_free].tolist(),
        "slots": [v.slots[:v.nr_faulted].tolist() for t in tasks for v in t.mm.vmas],
        # page tables: each mapping's PTE pages and who pays for them
        "ptes": [[p.owner.memcg.path if p.owner else None for p in v.ptes]
                 for t in tasks for v in t.mm.vmas],
        "objcgs": [(m.path, m.objcg.nr_pages, m.objcg.nr_live_bytes)
                   for m in sys.memcgs.values() if m.objcg is not None],
        "kmem_hook_calls": sys.kmem_key.hits,
        "tasks": [(t.state, t.mm.anon_rss, t.mm.swapents) for t in tasks],
        "events": [e.signals for e in events], "rng": sys.rng.getstate(),
    }


def run_both(workload, monkeypatch):
    """workload() with fault spans and with every fault step taken alone: the same."""
    results = []
    for fast in (fastpath.ENABLED, False):
        monkeypatch.setattr(fastpath, "ENABLED", fast)
        spans = []
        real = fault.fault_span

        def counting(sys, task, memcg, vma, steps, flags, lru):
            spans.append(steps)
            real(sys, task, memcg, vma, steps, flags, lru)
        monkeypatch.setattr(fault, "fault_span", counting)
        results.append((workload(), spans))
    (fast, spans), (slow, none) = results
    assert not none
    for key in slow:
        assert fast[key] == slow[key], key
    return spans


def test_spans_in_an_unlimited_group(monkeypatch):
    def workload():
        k = memcg.SimKernel(memory="256M", cpus=2, swap="0")
        k.mkdir("/a")
        ts = [k.spawn("/a"), k.spawn("/a"), k.spawn("/")]
        for i, t in enumerate(ts):
            t.touch_anon((5 + 7 * i) * MiB + 4096 * (i * 37 % 128))
        ts[0].free_anon(3 * MiB)
        ts[1].touch_anon(9 * MiB + 12288, locked=True)
        ts[0].touch_anon(4 * MiB)
        return observe(k, ts, [])
    assert max(run_both(workload, monkeypatch)) >= 8


def test_spans_over_a_fragmented_free_stack(monkeypatch):
    """Frames freed in pieces: a span takes them from many runs, as its steps would."""
    tops = []

    def workload():
        k = memcg.SimKernel(memory="256M", cpus=2, swap="0")
        k.mkdir("/a")
        t, u, v = k.spawn("/a"), k.spawn("/a"), k.spawn("/")
        for i in range(60):  # interleaved small mappings
            (t if i % 2 else u).touch_anon((40 + i) * 4096)
        u.exit()
        t.free_anon(300 * 4096, oldest_first=True)
        tops.append(k.sys.mem.top_run())
        v.touch_anon(6 * MiB)
        return observe(k, [t, v], [])
    assert max(run_both(workload, monkeypatch)) >= 8
    assert tops[0] < 2 * memory.FAULT_BATCH


def test_spans_up_to_the_limit_and_the_oom_kill(monkeypatch):
    def workload():
        k = memcg.SimKernel(memory="256M", cpus=2, swap="0")
        k.mkdir("/p")
        k.write("/p/memory.limit_in_bytes", "40M")
        k.mkdir("/p/c")
        k.write("/p/c/memory.limit_in_bytes", "24M")
        ts = [k.spawn("/p/c"), k.spawn("/p"), k.spawn("/p/c")]
        ts[0].touch_anon(10 * MiB)
        ts[1].touch_anon(20 * MiB)
        ts[2].touch_anon(30 * MiB)  # over /p/c's limit: OOM
        return observe(k, ts, [])
    assert run_both(workload, monkeypatch)


def test_spans_with_swap_and_reclaim(monkeypatch):
    def workload():
        k = memcg.SimKernel(memory="128M", cpus=2, swap="64M")
        k.mkdir("/a")
        k.write("/a/memory.limit_in_bytes", "16M")
        t = k.spawn("/a")
        t.touch_anon(10 * MiB)
        t.read_file("f", 4 * MiB)
        t.touch_anon(20 * MiB)
        t.free_anon(5 * MiB, oldest_first=True)
        t.touch_anon(6 * MiB)
        return observe(k, [t], [])
    assert run_both(workload, monkeypatch)


def test_spans_stop_at_thresholds_and_the_soft_limit(monkeypatch):
    def workload():
        k = memcg.SimKernel(memory="256M", cpus=2, swap="0")
        k.mkdir("/a")
        k.mkdir("/a/b")
        k.write("/a/memory.soft_limit_in_bytes", "12M")
        # crossed in this order by one mapping: the parent's, then the child's
        evs = [k.event("/a/memory.usage_in_bytes", "6M"),
               k.event("/a/b/memory.memsw.usage_in_bytes", "7M"),
               k.event("/a/b/memory.usage_in_bytes", "30M"),
               k.event("/memory.usage_in_bytes", "20M")]
        seen = []
        for i, ev in enumerate(evs):
            ev.watch(lambda n, i=i: seen.append((i, n)))
        ts = [k.spawn("/a/b"), k.spawn("/a")]
        ts[0].touch_anon(8 * MiB)
        ts[1].touch_anon(16 * MiB)
        ts[0].free_anon(6 * MiB)
        ts[0].touch_anon(12 * MiB)
        out = observe(k, ts, evs)
        out["seen"] = seen
        return out
    assert run_both(workload, monkeypatch)


def test_spans_near_the_watermarks(monkeypatch):
    def workload():
        k = memcg.SimKernel(memory="64M", cpus=2, swap="0")
        k.mkdir("/a")
        ts = [k.spawn("/a") for _ in range(3)]
        ts[0].read_file("f", 20 * MiB)
        ts[1].touch_anon(30 * MiB)
        ts[2].touch_anon(30 * MiB)  # global reclaim, then the global OOM killer
        return observe(k, ts, [])
    assert run_both(workload, monkeypatch)


def test_spans_with_oom_kill_disabled(monkeypatch):
    def workload():
        k = memcg.SimKernel(memory="128M", cpus=2, swap="0")
        k.mkdir("/a")
        k.write("/a/memory.limit_in_bytes", "8M")
        k.write("/a/memory.oom_control", "1")
        ev = k.event("/a/memory.oom_control")
        t, u = k.spawn("/a"), k.spawn("/a")
        t.touch_anon(5 * MiB)
        u.touch_anon(5 * MiB)  # sleeps at the limit
        t.free_anon(5 * MiB)  # u wakes up and finishes
        return observe(k, [t, u], [ev])
    assert run_both(workload, monkeypatch)


def test_spans_with_page_tables_and_a_crowded_stock(monkeypatch):
    """More groups than stock slots fault on one CPU: a PTE charge of a group without a
    slot evicts one at random, so spans stop before it; groups with a slot charge their
    PTE pages in the span.  /g0's task sleeps in the middle of a 2 MiB region (OOM with
    oom_kill_disable) while the others take its slot, and goes on without one."""
    def workload():
        k = memcg.SimKernel(memory="1G", cpus=1, swap="0")
        ts = []
        for i in range(10):
            k.mkdir(f"/g{i}")
            ts.append(k.spawn(f"/g{i}"))
        k.write("/g0/memory.limit_in_bytes", "6M")
        k.write("/g0/memory.oom_control", "1")
        ts[0].touch_anon(3 * MiB)
        ts[0].touch_anon(9 * MiB + 5 * 4096)
        assert ts[0].state == "blocked"
        for rnd in range(3):
            for i, t in enumerate(ts[1:], 1):
                t.touch_anon((3 + i + rnd) * MiB + 4096 * (i * 53 % 300))
                if i % 3 == rnd:
                    t.free_anon((1 + i % 2) * MiB + 4096 * i)
        k.write("/g0/memory.limit_in_bytes", "64M")
        assert ts[0].state == "running"
        ts[1].touch_anon(300 * MiB)  # 150 PTE pages, more than a batch in one span
        return observe(k, ts, [])
    assert max(run_both(workload, monkeypatch)) >= 8


OPS = st.lists(st.one_of(
    st.tuples(st.just("touch"), st.integers(0, 3), st.integers(1, 3000), st.booleans()),
    st.tuples(st.just("free"), st.integers(0, 3), st.integers(1, 3000), st.booleans()),
    st.tuples(st.just("limit"), st.integers(0, 2), st.sampled_from([4, 8, 16, 24, -1])),
    st.tuples(st.just("soft"), st.integers(0, 2), st.sampled_from([2, 6, 12, -1])),
    st.tuples(st.just("threshold"), st.integers(0, 3), st.integers(1, 40)),
    st.tuples(st.just("read"), st.integers(0, 3), st.integers(1, 3000)),
    st.tuples(st.just("exit"), st.integers(0, 3))), min_size=1, max_size=14)
GROUPS = ("/a", "/a/b", "/c")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(OPS, st.sampled_from(["0", "8M"]))
def test_spans_match_steps_on_random_workloads(monkeypatch, ops, swap):
    def workload():
        k = memcg.SimKernel(memory="64M", cpus=2, swap=swap)
        for g in GROUPS:
            k.mkdir(g)
        paths = ("/a", "/a/b", "/c", "/")
        tasks = [k.spawn(p) for p in paths]
        events = []
        for op in ops:
            try:
                if op[0] in ("touch", "free", "read", "exit"):
                    t = tasks[op[1]]
                    if t.state in ("exited", "oom_killed"):
                        continue
                    if op[0] == "touch":
                        t.touch_anon(op[2] * 4096, locked=op[3])
                    elif op[0] == "free":
                        t.free_anon(op[2] * 4096, oldest_first=op[3])
                    elif op[0] == "read":
                        t.read_file(f"f{op[1]}", op[2] * 4096)
                    else:
                        t.exit()
                elif op[0] == "limit":
                    value = "-1" if op[2] < 0 else f"{op[2]}M"
                    k.write(f"{GROUPS[op[1]]}/memory.limit_in_bytes", value)
                elif op[0] == "soft":
                    value = "-1" if op[2] < 0 else f"{op[2]}M"
                    k.write(f"{GROUPS[op[1]]}/memory.soft_limit_in_bytes", value)
                else:
                    events.append(k.event(f"{paths[op[1]]}/memory.usage_in_bytes", f"{op[2]}M"))
            except OSError as e:
                events.append(e.errno)  # an errno is part of the outcome too
        return observe(k, tasks, [e for e in events if not isinstance(e, int)]) | {
            "errnos": [e for e in events if isinstance(e, int)]}
    run_both(workload, monkeypatch)


def test_lru_of_frames_written_only_when_first_handed_out():
    """A machine larger than LRU_LAZY_CHUNK writes LRU_NONE into `lru` only ahead of the
    frames the allocator hands out (the zeros of the rest stay unwritten, not resident);
    every frame handed out, from either end, is LRU_NONE, and so is every free frame once
    all were handed out."""
    from memcg.mm.mmzone import LRU_LAZY_CHUNK
    nr = 3 * LRU_LAZY_CHUNK + 5
    mem = MemMap(nr)
    assert mem._lru_hi - mem._lru_lo == nr  # nothing written at boot
    rng = np.random.default_rng(7)
    held = []
    first = mem.alloc(100)
    assert (mem.lru[first] == LRU_NONE).all()
    assert mem._lru_hi - mem._lru_lo >= nr - LRU_LAZY_CHUNK  # one chunk written
    held.append(first)
    while mem.nr_free:
        n = int(min(mem.nr_free, rng.integers(1, 60_000)))
        pfns = mem.alloc_unmovable(n) if rng.random() < 0.3 else mem.alloc(n)
        assert (mem.lru[pfns] == LRU_NONE).all()
        mem.lru[pfns] = LRU_INACTIVE_FILE  # in use
        held.append(pfns)
        if rng.random() < 0.3:
            back = held.pop(int(rng.integers(len(held))))
            mem.free(back)
            assert (mem.lru[back] == LRU_NONE).all()
    assert (mem.lru == LRU_INACTIVE_FILE).all()
    for pfns in held:
        mem.free(pfns)
    assert (mem.lru == LRU_NONE).all() and mem.nr_free == nr
