"""SimKernel(shrinker="shrinkerd"): the model predicting a real kernel served by memcg shrinkerd.

The requests come from the daemon's policy (usage thresholds under the limit, pressure
levels, memcg.mm.shrink_plan), not from document 002's hook inside limit reclaim.
"""

from __future__ import annotations

import errno

import pytest

import memcg
from memcg.cache import ChunkCache
from memcg.mm.shrink_plan import shrink_plan, usage_shortfall, usage_thresholds

MiB = 1 << 20
MARGIN = 12 * MiB
LIMIT = 64 * MiB


@pytest.fixture
def k():
    kernel = memcg.SimKernel(memory="1G", shrinker="shrinkerd", shrinkerd_margin=MARGIN)
    kernel.mkdir("/app")
    kernel.write("/app/memory.limit_in_bytes", "64M")
    yield kernel
    kernel.close()


def errno_of(fn, *args):
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


def usage(k, g="/app"):
    return int(k.read(f"{g}/memory.usage_in_bytes"))


@pytest.mark.parametrize("kw", [{"shrinker": "daemon"}, {"shrinkerd_margin": MiB},
                                {"shrinker": "shrinkerd", "shrinkerd_margin": 0},
                                {"shrinker": "shrinkerd", "hierarchy": "v2"}])
def test_bad_options(kw):
    with pytest.raises(ValueError):
        memcg.SimKernel(memory="1G", **kw)


def test_errno_as_on_linux_kernel(k):
    """As LinuxKernel serves the file through its daemon: EINVAL for a bad chunk size or
    line, EBADF for an fd that is no registration of the group, ENOENT for no group."""
    for bad in ("", "0", "abc", "-1"):
        assert errno_of(k.event, "/app/mempressure.shrinker", bad) == errno.EINVAL
    assert errno_of(k.event, "/nope/mempressure.shrinker", "4096") == errno.ENOENT
    assert errno_of(k.write, "/app/mempressure.shrinker", "5 +1") == errno.EBADF
    ev = k.event("/app/mempressure.shrinker", str(MiB))
    fd = ev.fileno()
    for bad in (f"{fd}", f"{fd} 1 2", "x 1", f"{fd} y"):
        assert errno_of(k.write, "/app/mempressure.shrinker", bad) == errno.EINVAL
    k.mkdir("/other")
    assert errno_of(k.write, "/other/mempressure.shrinker", f"{fd} +1") == errno.EBADF
    k.write("/app/mempressure.shrinker", f"{fd} +3")
    k.write("/app/mempressure.shrinker", f"{fd} -10")    # clamped at 0
    assert k.shrinkerd.clients[0].chunks == 0
    assert errno_of(k.read, "/app/mempressure.shrinker") == errno.EINVAL
    assert "mempressure.shrinker" in k.listdir("/app")
    # the kernel itself holds no registration: nothing asks from inside reclaim
    assert not any(k.sys.user_shrinkers.values())
    ev.close()
    assert errno_of(k.write, "/app/mempressure.shrinker", f"{fd} +1") == errno.EBADF


def test_first_request_at_the_high_mark_is_the_daemons(k):
    """Usage reaching limit - margin fires the daemon's threshold; it asks what brings
    usage to limit - 2 * margin, split by shrink_plan - before the group meets its limit."""
    t = k.spawn("/app")
    cache = ChunkCache(k, t, "/app", MiB)
    asked = []
    high = usage_thresholds(LIMIT, MARGIN)[0]
    while not asked:
        before = usage(k)
        cache.put(len(cache.entries) + cache.freed)
        asked = list(k.shrinkerd.asks)
        if not asked:
            assert usage(k) < high
    at = before + MiB   # the usage the daemon read: the chunk that crossed the mark is in
    assert at >= high
    want = shrink_plan(-(-usage_shortfall(at, LIMIT, MARGIN, 0) // 4096),
                       [(len(cache.entries) + cache.requested, MiB)])
    assert asked == [("/app", want.requests[0], "threshold")]
    assert cache.requested == want.requests[0] and cache.freed == want.requests[0]
    assert usage(k) == at - want.requests[0] * MiB
    assert k.read("/app/memory.failcnt").strip() == "0"


def test_a_report_over_the_high_mark_asks_when_no_threshold_did(k):
    """Usage the threshold's event did not report (here: the high mark already passed
    when the daemon started serving the group) is caught by the next "+N"."""
    t = k.spawn("/app")
    t.touch_anon(53 * MiB)              # over the 52 MiB high mark, nobody registered yet
    cache = ChunkCache(k, t, "/app", MiB)
    assert not k.shrinkerd.asks
    cache.put(0)                        # reported: a usage check, over the high mark
    assert k.shrinkerd.asks == [("/app", 1, "report")] and cache.requested == 1
    cache.put(1)                        # still over it, no new crossing: re-asking is
    cache.put(2)                        # the tick's, not a report's
    assert len(k.shrinkerd.asks) == 1


def test_four_times_the_limit_never_meets_it(k):
    t = k.spawn("/app")
    cache = ChunkCache(k, t, "/app", MiB)
    for i in range(256):
        assert cache.put(i)
        if i % 64 == 63:
            k.advance(1)   # the daemon's tick
    assert t.state == "running"
    assert "oom_kill 0" in k.read("/app/memory.oom_control")
    assert k.read("/app/memory.failcnt").strip() == "0"
    assert int(k.read("/app/memory.max_usage_in_bytes")) <= LIMIT - MARGIN + MiB
    assert cache.freed == cache.requested > 0
    assert {reason for _, _, reason in k.shrinkerd.asks} == {"threshold"}


def test_without_a_limit_nothing_is_asked():
    k = memcg.SimKernel(memory="1G", shrinker="shrinkerd")
    k.mkdir("/free")
    t = k.spawn("/free")
    cache = ChunkCache(k, t, "/free", MiB)
    for i in range(64):
        cache.put(i)
    k.advance(1)
    assert cache.requested == 0 and k.shrinkerd.asks == []
    k.close()


def test_a_child_group_is_asked_for_its_parents_limit_and_removed_groups_dropped(k):
    """Groups made later are served; a client in a child is asked when the parent's
    limit is near (the child's subtree is in the parent's); rmdir drops the group."""
    k.mkdir("/app/child")
    t = k.spawn("/app/child")
    cache = ChunkCache(k, t, "/app/child", MiB)
    for i in range(60):
        cache.put(i)
    assert "/app/child" in k.shrinkerd.groups
    assert cache.requested > 0 and {g for g, _, _ in k.shrinkerd.asks} == {"/app"}
    assert int(k.read("/app/memory.max_usage_in_bytes")) < LIMIT
    t.exit()
    cache.close()
    k.rmdir("/app/child")
    assert "/app/child" not in k.shrinkerd.groups


def test_a_limit_change_moves_the_thresholds(k):
    t = k.spawn("/app")
    cache = ChunkCache(k, t, "/app", MiB)
    k.write("/app/memory.limit_in_bytes", "128M")
    for i in range(100):
        cache.put(i)
    assert cache.requested == 0      # 100 MiB is under the new high mark (116M)
    for i in range(100, 130):
        cache.put(i)
    assert cache.requested > 0
    assert int(k.read("/app/memory.max_usage_in_bytes")) <= 128 * MiB - MARGIN + MiB


@pytest.mark.parametrize("shrinker,kills", [("true", 0), ("false", 1)])
def test_shrinker_stress_holds_with_either_shrinker(shrinker, kills):
    """The scenario's expectations hold with the in-kernel hook and with the daemon."""
    from memcg.scenario import load_scenario, run_scenario
    sc = load_scenario("shrinker-stress", {"shrinker": shrinker})
    for mode in ({}, {"shrinker": "shrinkerd", "shrinkerd_margin": MARGIN}):
        res = run_scenario(sc, memcg.SimKernel(**sc.machine.sim_kwargs(), **mode))
        assert f"oom_kill {kills}" in res["groups"]["/stress"]["memory.oom_control"]
        assert all(e["ok"] for e in res["expectations"]), (mode, res["expectations"])


def test_compare_predicts_a_kernel_served_by_shrinkerd():
    """make_kernel for a comparison builds the model with the daemon a LinuxKernel on v1
    runs, at its margin; a kernel without one gets the in-kernel hook."""
    from memcg.cli import make_kernel
    from memcg.scenario import load_scenario

    class Real:
        shrinkerd_margin = MARGIN

    sc = load_scenario("shrinker-stress")
    sim = make_kernel(sc, "sim", predict=Real())
    assert sim.shrinker == "shrinkerd" and sim._shrinkerd_margin == MARGIN
    sim.close()
    sim = make_kernel(sc, "sim", predict=object())
    assert sim.shrinker == "kernel"
    sim.close()
