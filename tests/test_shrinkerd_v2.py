"""memcg shrinkerd's cgroup v2 sources.

This host has cgroup v1, so the v2 sources are tested in two halves:
- the decisions, against a fake v2 directory tree (regular files for memory.current,
  memory.max, memory.high and memory.events) with a real client on a real socket and
  eventfd; regular files cannot be polled, so the sources are driven by calling the
  daemon's handlers, as its loop does when a file fires;
- the polling, against a real PSI trigger: /proc/pressure/memory takes the same
  triggers as a group's memory.pressure (kernel/sched/psi.c), and a real memory stall
  made in a group of our own fires it through the daemon's loop.
"""

from __future__ import annotations

import array
import io
import json
import os
import select
import socket
import time

import pytest

import memcg
from memcg.mm.shrink_plan import (VMPRESSURE_LEVEL_CRITICAL, VMPRESSURE_LEVEL_MED, VMPRESSURE_WIN,
                                  shrink_plan)
from memcg.shrinkerd import EVENT_PRI, PAGE_SIZE, Daemon, DaemonError, EpollLoop

MiB = 1 << 20
EVENTS = "low 0\nhigh {high}\nmax {max}\noom {oom}\noom_kill 0\noom_group_kill 0\n"


def _put(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _group(d: str, current: int, mx: str = "max", high: str = "max") -> None:
    os.makedirs(d, exist_ok=True)
    _put(os.path.join(d, "cgroup.controllers"), "memory\n")
    _put(os.path.join(d, "cgroup.procs"), "")
    _put(os.path.join(d, "memory.current"), f"{current}\n")
    _put(os.path.join(d, "memory.max"), f"{mx}\n")
    _put(os.path.join(d, "memory.high"), f"{high}\n")
    _put(os.path.join(d, "memory.events"), EVENTS.format(high=0, max=0, oom=0))
    _put(os.path.join(d, "memory.pressure"), "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")


@pytest.fixture
def v2(tmp_path):
    root = str(tmp_path / "cg")
    _group(root, 100 * MiB)
    _group(os.path.join(root, "a"), 10 * MiB, mx=str(64 * MiB))
    _group(os.path.join(root, "b"), 10 * MiB)
    log = io.StringIO()
    d = Daemon(root, str(tmp_path / "run"), margin=8 * MiB, log=log, json_log=True)
    d.start()
    yield d, root, log
    d.close()


def _client(d: Daemon, rel: str, chunks: int):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.path.join(d.run, rel, "shrinker.sock"))
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    s.sendmsg([b"register %d\n+%d\n?\n" % (MiB, chunks)],
              [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [efd]))])
    s.setblocking(False)
    deadline = time.monotonic() + 5
    buf = b""
    while not buf.endswith(b"\n") and time.monotonic() < deadline:
        d.run_once(0.02)
        try:
            buf += s.recv(100)
        except BlockingIOError:
            pass
    assert buf == b"held %d\n" % chunks
    return s, efd


def _asked(efd: int) -> int:
    try:
        return os.eventfd_read(efd)
    except BlockingIOError:
        return 0


def test_v2_tree_is_served_and_v1_names_are_not_needed(v2):
    d, root, log = v2
    assert d.version == 2 and set(d.groups) == {"", "a", "b"}
    for rel in ("a", "b"):
        assert os.path.exists(os.path.join(d.run, rel, "shrinker.sock"))
        assert os.path.exists(os.path.join(d.run, rel, "pressure.sock"))
    # a regular file cannot be polled: the fake's sources are refused, and said so
    lines = [json.loads(x) for x in log.getvalue().splitlines()]
    assert any(e["what"] == "register-failed" and e["file"] == "memory.pressure" for e in lines)


def test_no_memory_controller_is_one_line(tmp_path):
    os.makedirs(tmp_path / "cg")
    _put(str(tmp_path / "cg" / "cgroup.controllers"), "cpu\n")
    with pytest.raises(DaemonError, match="memory.current"):
        Daemon(str(tmp_path / "cg"), str(tmp_path / "run"))


def test_headroom_under_memory_max_and_memory_high(v2):
    d, root, _ = v2
    s, efd = _client(d, "a", 40)
    a = os.path.join(root, "a")
    _put(os.path.join(a, "memory.current"), f"{60 * MiB}\n")
    d.tick()
    # limit 64M, margin 8M: above 56M ask what brings usage to 48M, 12 chunks
    assert d.groups["a"].limit == 64 * MiB
    assert _asked(efd) == 12
    # memory.high below memory.max is the limit that counts (reclaim starts there)
    _put(os.path.join(a, "memory.high"), f"{40 * MiB}\n")
    _put(os.path.join(a, "memory.current"), f"{30 * MiB}\n")
    time.sleep(0.21)                        # the first request settles ...
    d.tick()                                # ... and was met: usage under the mark
    assert _asked(efd) == 0
    _put(os.path.join(a, "memory.current"), f"{36 * MiB}\n")
    d.tick()
    assert d.groups["a"].limit == 40 * MiB
    assert _asked(efd) == 12                # 36M down to 40M - 16M
    s.close()


def test_memory_events_high_max_and_oom(v2):
    d, root, _ = v2
    s, efd = _client(d, "a", 40)
    g = d.groups["a"]
    a = os.path.join(root, "a")
    d.check_limit(g)
    _put(os.path.join(a, "memory.current"), f"{62 * MiB}\n")
    fd = os.open(os.path.join(a, "memory.events"), os.O_RDONLY)
    try:
        assert d.read_events(g, fd) == {}
        _put(os.path.join(a, "memory.events"), EVENTS.format(high=0, max=3, oom=0))
        grew = d.read_events(g, fd)
        assert grew == {"max": 3}
        d.on_events(g, grew, time.monotonic())
        assert _asked(efd) == 14            # 62M down to 48M
        # an OOM asks at once, a margin's worth, even of a client backed off
        for c in g.shrinkers:
            c.backoff_until = time.monotonic() + 60
        _put(os.path.join(a, "memory.events"), EVENTS.format(high=0, max=3, oom=1))
        d.on_events(g, d.read_events(g, fd), time.monotonic())
        assert _asked(efd) == 8
        # nothing that matters grew: nothing asked
        d.on_events(g, {"low": 1}, time.monotonic())
        assert _asked(efd) == 0
    finally:
        os.close(fd)
    s.close()


def test_psi_asks_like_the_vmpressure_levels_and_only_its_subtree(v2):
    d, root, _ = v2
    sa, ea = _client(d, "a", 40)
    sb, eb = _client(d, "b", 40)
    g = d.groups["a"]
    d.check_limit(g)                        # usage 10M: far from the limit
    d.on_psi(g, "some", time.monotonic())
    want = shrink_plan(VMPRESSURE_WIN * VMPRESSURE_LEVEL_MED // 100, [(40, MiB)], PAGE_SIZE)
    assert _asked(ea) == want.requests[0] == 1
    time.sleep(0.21)
    d.on_psi(g, "full", time.monotonic())
    want = shrink_plan(VMPRESSURE_WIN * VMPRESSURE_LEVEL_CRITICAL // 100, [(39, MiB)], PAGE_SIZE)
    assert _asked(ea) == want.requests[0]
    assert _asked(eb) == 0                  # a sibling hears nothing of a's pressure
    sa.close()
    sb.close()


@pytest.mark.linux
def test_a_real_psi_trigger_fires_through_the_loop(real_memcg):
    """A PSI trigger written as the daemon writes it, polled by its loop (EVENT_PRI):
    a group of ours thrashing its page cache under a 16M limit stalls on memory."""
    if not os.path.exists("/proc/pressure/memory"):
        pytest.skip("no PSI (/proc/pressure/memory)")
    fd = os.open("/proc/pressure/memory", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    loop = EpollLoop()
    k = memcg.LinuxKernel()
    try:
        # 1 ms of stall in a 2 s window (without CAP_SYS_RESOURCE a window must be a
        # multiple of 2 s, kernel/sched/psi.c psi_trigger_create)
        os.write(fd, b"some 1000 2000000\0")
        loop.register(fd, EVENT_PRI, "psi")
        # nothing yet: the trigger's own poll is not ready without a stall ...
        k.mkdir("/t")
        k.write("/t/memory.limit_in_bytes", str(16 * MiB))
        t = k.spawn("/t")
        fired = []
        deadline = time.monotonic() + 20
        while not fired and time.monotonic() < deadline:
            t.read_file("thrash.dat", 64 * MiB)   # limit reclaim: psi_memstall_enter
            fired = [m for key, m in loop.select(0.1) if key.data == "psi"]
        assert fired and fired[0] == EVENT_PRI
        # ... and once reported it is consumed (psi_trigger_poll), until the next one
        r = select.poll()
        r.register(fd, select.POLLPRI)
        assert all(not ev & select.POLLPRI for _, ev in r.poll(0))
    finally:
        loop.close()
        os.close(fd)
        k.close()
