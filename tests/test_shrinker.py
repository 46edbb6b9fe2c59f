"""The userspace shrinker (mempressure.shrinker) and the ChunkCache helper."""

from __future__ import annotations

import errno

import pytest

import memcg
from memcg.cgroup import cgroup_get_from_path
from memcg.cache import ChunkCache

MiB = 1 << 20


@pytest.fixture
def k():
    kernel = memcg.SimKernel(memory="1G")
    kernel.mkdir("/app")
    kernel.write("/app/memory.limit_in_bytes", "64M")
    yield kernel
    kernel.close()


def errno_of(fn, *args):
    with pytest.raises(OSError) as info:
        fn(*args)
    return info.value.errno


@pytest.mark.parametrize("args", ["", "0", "abc", "-1", "1M", " 4096"])
def test_registration_needs_a_chunk_size(k, args):
    assert errno_of(k.event, "/app/mempressure.shrinker", args) == errno.EINVAL


def test_report_format(k):
    ev = k.event("/app/mempressure.shrinker", str(MiB))
    fd = ev.fileno()
    k.write("/app/mempressure.shrinker", f"{fd} +3")
    k.write("/app/mempressure.shrinker", f"{fd} -1\n")
    assert k.sys.user_shrinkers[cgroup_get_from_path(k.sys, "/app").id][0].chunks == 2
    k.write("/app/mempressure.shrinker", f"{fd} -10")      # clamped at 0
    assert k.sys.user_shrinkers[cgroup_get_from_path(k.sys, "/app").id][0].chunks == 0
    for bad in (f"{fd}", f"{fd} 1 2", "x 1", f"{fd} y"):
        assert errno_of(k.write, "/app/mempressure.shrinker", bad) == errno.EINVAL
    assert errno_of(k.write, "/app/mempressure.shrinker", f"{fd + 1000} +1") == errno.EBADF
    assert errno_of(k.read, "/app/mempressure.shrinker") == errno.EINVAL


def test_request_is_the_shortfall_in_chunks(k):
    """Anon at the limit with no swap: nothing is scannable, so the unmet reclaim targets
    add up to whole chunks, requested on the eventfd; the held count drops by as much."""
    ev = k.event("/app/mempressure.shrinker", str(MiB))
    k.write("/app/mempressure.shrinker", f"{ev.fileno()} +100")
    t = k.spawn("/app")
    # up to the limit, page tables included as on the real kernel (docs/kmem.md): 16353
    # pages not 2 MiB-aligned take 31 PTE pages of their own, 16384 in all
    t.touch_anon(64 * MiB - 31 * 4096)
    assert ev.count() == 0                 # no reclaim yet
    t.touch_anon(1 * MiB)                  # nobody frees: requests, then an OOM kill
    asked = ev.count()
    assert asked >= 1
    held = k.sys.user_shrinkers[cgroup_get_from_path(k.sys, "/app").id][0].chunks
    assert held == 100 - asked
    assert t.state == "oom_killed"


def test_requests_never_exceed_the_chunks_held(k):
    ev = k.event("/app/mempressure.shrinker", str(MiB))
    k.write("/app/mempressure.shrinker", f"{ev.fileno()} +2")
    t = k.spawn("/app")
    t.touch_anon(80 * MiB)
    assert ev.count() == 2


def test_window_shortfall_goes_to_the_shrinker():
    """With reclaimable cache the request comes from vmpressure windows: scanned - reclaimed."""
    from memcg.mm.mempressure import shrinker_request
    k = memcg.SimKernel(memory="1G")
    k.mkdir("/g")
    ev = k.event("/g/mempressure.shrinker", str(MiB))
    k.write("/g/mempressure.shrinker", f"{ev.fileno()} +8")
    memcg_ = cgroup_get_from_path(k.sys, "/g")
    shrinker_request(k.sys, memcg_, 512)            # one window, nothing reclaimed: 2 MiB
    assert ev.count() == 2
    for _ in range(7):
        shrinker_request(k.sys, memcg_, 32)         # 224 pages: not yet a chunk
    assert ev.count() == 0
    shrinker_request(k.sys, memcg_, 32)             # 256 pages: one chunk
    assert ev.count() == 1


def test_chunk_cache_gives_memory_back_and_nobody_dies(k):
    t = k.spawn("/app")
    oom = k.event("/app/memory.oom_control")
    cache = ChunkCache(k, t, "/app", MiB)
    for i in range(512):                   # 8 times the limit
        assert cache.put(i)
    assert t.state == "running"
    assert oom.count() == 0
    assert "oom_kill 0" in k.read("/app/memory.oom_control")
    assert int(k.read("/app/memory.max_usage_in_bytes")) <= 64 * MiB
    assert cache.requested == cache.freed > 0
    assert len(cache) == 512 - cache.freed
    # What the cache holds is what the group is charged for (plus the stock).
    rss = int(k.read("/app/memory.stat").split("rss ")[1].split()[0])
    assert rss == len(cache) * MiB


def test_chunk_cache_keeps_its_recently_used_entries(k):
    t = k.spawn("/app")
    cache = ChunkCache(k, t, "/app", MiB)
    for i in range(60):
        cache.put(i)
    cache.get(0)                           # entry 0 becomes the most recently used
    for i in range(60, 70):                # past the limit: a few requests
        cache.put(i)
    assert 0 < cache.freed < 60
    assert 0 in cache.entries and 1 not in cache.entries
    assert list(cache.entries)[:2] == [cache.freed + 1, cache.freed + 2]


def test_without_the_shrinker_the_allocator_is_oom_killed(k):
    t = k.spawn("/app")
    cache = ChunkCache(k, t, "/app", MiB, shrinker=False)
    done = sum(1 for i in range(512) if cache.put(i))
    assert t.state == "oom_killed"
    assert done <= 64                      # the limit is 64 chunks: the 65th is fatal
    assert "oom_kill 1" in k.read("/app/memory.oom_control")


def test_rmdir_signals_the_shrinker_eventfd_once(k):
    ev = k.event("/app/mempressure.shrinker", str(MiB))
    k.rmdir("/app")
    assert ev.count() == 1


def test_closing_the_eventfd_unregisters(k):
    ev = k.event("/app/mempressure.shrinker", str(MiB))
    fd = ev.fileno()
    ev.close()
    assert errno_of(k.write, "/app/mempressure.shrinker", f"{fd} +1") == errno.EBADF


@pytest.mark.parametrize("shrinker,kills", [("true", 0), ("false", 1)])
def test_shrinker_stress_scenario(shrinker, kills):
    from memcg.scenario import load_scenario, run_scenario
    sc = load_scenario("shrinker-stress", {"shrinker": shrinker})
    res = run_scenario(sc, memcg.SimKernel(memory=sc.machine.memory, cpus=sc.machine.cpus,
                                           swap=sc.machine.swap))
    assert f"oom_kill {kills}" in res["groups"]["/stress"]["memory.oom_control"]
    assert all(e["ok"] for e in res["expectations"])
