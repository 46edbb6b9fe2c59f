"""The statistics table's noted rows: flushes and machine-wide totals that look only at
the groups that changed, against the whole-table copy and sums they replace.

mem_cgroup_flush_root() copies the rows changed since the last flush (the rstat
updated tree) and wb_writeback() and the root's usage sum the rows ever changed; the
reference below copies and sums every row.  Workloads run both ways give the same
observations, a Hypothesis property over random workloads among many idle groups
included, and a counting check shows the flushes really copied only a few rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import memcg
from memcg.mm import memcontrol as mc
from memcg.mm import page_writeback
from memcg.mm.memcontrol import NR_FILE_DIRTY, NR_LRU_BASE
from memcg.mm.mmzone import NR_LRU_LISTS
from memcg.scenario import load_scenario, run_scenario

from test_reclaim_fastpath import observe

MiB = 1 << 20
LRUS = slice(NR_LRU_BASE, NR_LRU_BASE + NR_LRU_LISTS)


def full_flush_root(sys) -> None:
    """The reference: every group's row copied."""
    sys.stats.flushed[:] = sys.stats.a[:, LRUS]
    sys.stats_flushes += 1
    sys.stats_periodic_flush = sys.stats_flushes


def full_total(table, item: int) -> int:
    """The reference StatTable.total: the sum over every row."""
    return int(table.a[:, item].sum())


@pytest.fixture
def copied(monkeypatch):
    """The rows each flush of the root copied, and a check after each: the flushed
    figures of every row equal the current ones, as the whole-table copy leaves them."""
    real = mc.StatTable.take_updated
    counts = []

    def take_updated(self):
        rows = real(self)
        counts.append(len(rows))
        return rows
    monkeypatch.setattr(mc.StatTable, "take_updated", take_updated)

    real_flush = mc.mem_cgroup_flush_root

    def flush(sys):
        real_flush(sys)
        assert (sys.stats.flushed == sys.stats.a[:, LRUS]).all()
    monkeypatch.setattr(mc, "mem_cgroup_flush_root", flush)
    return counts


def both_ways(workload, monkeypatch):
    """workload() with the noted rows (totals over the used rows even of a small
    table), then with the whole-table reference; equal."""
    with monkeypatch.context() as m:
        m.setattr(mc, "STAT_ROWS_SUMMED", 0)
        fast = workload()
    with monkeypatch.context() as m:
        m.setattr(mc, "mem_cgroup_flush_root", full_flush_root)
        m.setattr(mc.StatTable, "total", full_total)
        slow = workload()
    assert fast.keys() == slow.keys()
    for key in slow:
        assert fast[key] == slow[key], key
    return fast


def _hog(groups: int, gathered: list):
    def workload():
        scenario = load_scenario("hog", {})
        k = memcg.SimKernel(**dict(scenario.machine.sim_kwargs(), memory="1G"))
        for i in range(groups):
            k.mkdir(f"/extra{i}")
        seen = {}

        def inspect(kernel):
            seen.update(observe(kernel))
            seen["flushed"] = kernel.sys.stats.flushed.tolist()
            gathered.append(len(kernel.sys.stats._used_rows))
        result = run_scenario(scenario, k, settle=True, inspect=inspect)
        seen["result"] = result
        return seen
    return workload


def test_hog_among_idle_groups_both_ways(copied, monkeypatch):
    gathered = []
    out = both_ways(_hog(300, gathered), monkeypatch)
    assert all(e["ok"] for e in out["result"]["expectations"])
    # the totals of the run with the noted rows summed a few used rows, not 300
    assert 0 < gathered[0] < 20 and gathered[1] == 0, gathered
    # the run's periodic flushes found a few groups updated, not the 300 idle ones
    assert copied and max(copied) < 20, copied


def _workload(ops, idle: int):
    def workload():
        k = memcg.SimKernel(memory="256M", cpus=2, swap="64M")
        for i in range(idle):
            k.mkdir(f"/idle{i}")
        names = ["/a", "/b", "/a/c"]
        for n in names:
            k.mkdir(n)
        k.write("/a/memory.limit_in_bytes", "8M")
        tasks = {n: k.spawn(n) for n in names}
        out = []
        for op, g, n in ops:
            name = names[g]
            t = tasks.get(name)
            if op == "tick":
                k.advance(n)
            elif op == "rmdir" and t is not None and name != "/a":
                t.exit()
                del tasks[name]
                k.rmdir(name)
                k.mkdir(name)  # the id is taken again
                tasks[name] = k.spawn(name)
            elif t is None or t.state != "running":
                continue
            elif op == "anon":
                t.touch_anon(n * MiB)
            elif op == "read":
                t.read_file(f"f{g}", n * MiB)
            elif op == "write":
                t.write_file(f"w{g}", n * MiB)
            out.append(k.read(f"{name}/memory.stat"))
        k.settle()
        seen = observe(k, list(tasks.values()))
        seen["reads"] = out
        seen["flushed"] = k.sys.stats.flushed.tolist()
        seen["dead"] = k.sys.dead_stats.a.tolist()
        seen["dirty_total"] = int(k.sys.stats.a[:, NR_FILE_DIRTY].sum())
        k.close()
        return seen
    return workload


OPS = st.lists(st.tuples(st.sampled_from(["tick", "anon", "read", "write", "rmdir"]),
                         st.integers(0, 2), st.integers(1, 12)), min_size=1, max_size=12)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_random_workloads_both_ways(ops, monkeypatch):
    both_ways(_workload(ops, idle=40), monkeypatch)


def test_writeback_and_rmdir_both_ways(copied, monkeypatch):
    ops = [("write", 0, 12), ("tick", 0, 3), ("read", 1, 6), ("rmdir", 2, 1),
           ("anon", 2, 4), ("tick", 0, 5), ("write", 1, 8), ("tick", 0, 31)]
    calls = []
    real = page_writeback.wb_writeback
    monkeypatch.setattr(page_writeback, "wb_writeback",
                        lambda sys, *a, **kw: (calls.append(1), real(sys, *a, **kw))[1])
    both_ways(_workload(ops, idle=100), monkeypatch)
    assert calls and copied and max(copied) < 10, copied


def test_totals_and_flush_rows():
    t = mc.StatTable(rows=4 * mc.STAT_ROWS_SUMMED)
    t.mod(3, NR_FILE_DIRTY, 5)
    t.mod_many(np.array([7, 7, 9], np.uint16), NR_FILE_DIRTY, 2)
    assert t.total(NR_FILE_DIRTY) == 11 == int(t.a[:, NR_FILE_DIRTY].sum())
    assert t.take_updated().tolist() == [3, 7, 9]
    assert t.take_updated().tolist() == []
    delta = np.zeros_like(t.a)
    delta[12, NR_FILE_DIRTY] = 4
    t.add_table(delta)
    t.clear_row(3)
    assert t.take_updated().tolist() == [3, 12]
    assert t.total(NR_FILE_DIRTY) == 10 == int(t.a[:, NR_FILE_DIRTY].sum())
    assert len(t._used_rows) == 4  # summed over the used rows
    # most rows in use: the whole column
    for i in range(len(t.a)):
        t.mod(i, 0, 1)
    assert t.total(0) == len(t.a)
