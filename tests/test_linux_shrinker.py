"""mempressure.shrinker on LinuxKernel: the model's protocol on real cgroups through shrinkerd.

The kernel starts a daemon of its own on first use; these tests check what a caller sees
(registration, reports, requests, errno) and that nothing is left behind however the
caller ends.  They need root and a v1 memory controller (the real_memcg fixture).
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

import memcg
from memcg.cache import ChunkCache

MiB = 1 << 20
SRC = str(Path(__file__).resolve().parent.parent / "src")


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] in "ZX"
    except (FileNotFoundError, IndexError):
        return True


def _wait(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def k(real_memcg):
    kernel = memcg.LinuxKernel()
    yield kernel
    kernel.close()


@pytest.mark.linux
def test_the_file_is_listed_write_only_and_checks_its_input(k):
    k.mkdir("/g")
    assert "mempressure.shrinker" in k.listdir("/g") and "mempressure.shrinker" in k.listdir("/")
    with pytest.raises(OSError) as e:
        k.read("/g/mempressure.shrinker")
    assert e.value.errno == errno.EINVAL
    for bad in ("", "0", "-1", "1M", "x"):
        with pytest.raises(OSError) as e:
            k.event("/g/mempressure.shrinker", bad)
        assert e.value.errno == errno.EINVAL, bad
    with pytest.raises(OSError) as e:
        k.event("/nope/mempressure.shrinker", "4096")
    assert e.value.errno == errno.ENOENT
    ev = k.event("/g/mempressure.shrinker", "4096")
    for bad in ("", "1", f"{ev.fileno()}", f"{ev.fileno()} +1 2", f"{ev.fileno()} x", "x +1"):
        with pytest.raises(OSError) as e:
            k.write("/g/mempressure.shrinker", bad)
        assert e.value.errno == errno.EINVAL, bad
    with pytest.raises(OSError) as e:      # not a registration of this group
        k.write("/g/mempressure.shrinker", f"{ev.fileno() + 100} +1")
    assert e.value.errno == errno.EBADF
    k.mkdir("/h")
    with pytest.raises(OSError) as e:
        k.write("/h/mempressure.shrinker", f"{ev.fileno()} +1")
    assert e.value.errno == errno.EBADF
    k.write("/g/mempressure.shrinker", f"{ev.fileno()} +5")
    k.write("/g/mempressure.shrinker", f"{ev.fileno()} -2")
    assert ev.held() == 3                  # the daemon's count of this registration
    k.write("/g/mempressure.shrinker", f"{ev.fileno()} -9")
    assert ev.held() == 0                  # never below 0
    ev.close()
    with pytest.raises(OSError) as e:
        k.write("/g/mempressure.shrinker", f"{ev.fileno()} +1")
    assert e.value.errno == errno.EBADF


@pytest.mark.linux
def test_chunk_cache_is_asked_and_never_oom_killed(k):
    k.mkdir("/stress")
    k.write("/stress/memory.limit_in_bytes", str(64 * MiB))
    t = k.spawn("/stress")
    cache = ChunkCache(k, t, "/stress", chunk_size=MiB)
    for i in range(256):                   # 4x the limit
        assert cache.put(i), f"put {i}: task {t.state}"
    assert t.state == "running"
    assert "oom_kill 0" in k.read("/stress/memory.oom_control")
    assert int(k.read("/stress/memory.max_usage_in_bytes")) <= 64 * MiB
    k.advance(0)   # the request the last chunk called for is served (no command follows)
    assert cache.requested >= 256 - 64 and cache.freed == cache.requested, (
        f"requested {cache.requested}, freed {cache.freed}, held {len(cache)}, "
        f"errors {k.shrinker_errors}")
    assert cache.event.held() == len(cache)
    assert not k.shrinker_errors


@pytest.mark.linux
def test_requests_go_to_the_group_under_pressure_only(k):
    k.mkdir("/a")
    k.write("/a/memory.limit_in_bytes", str(64 * MiB))
    k.mkdir("/b")
    ta, tb = k.spawn("/a"), k.spawn("/b")
    other = ChunkCache(k, tb, "/b", chunk_size=MiB)
    for i in range(16):
        other.put(i)
    cache = ChunkCache(k, ta, "/a", chunk_size=MiB)
    for i in range(128):
        assert cache.put(i)
    assert cache.requested > 0 and other.requested == 0
    assert other.event.held() == 16


@pytest.mark.linux
def test_close_stops_the_daemon_and_removes_its_directory(real_memcg):
    k = memcg.LinuxKernel()
    k.mkdir("/g")
    ev = k.event("/g/mempressure.shrinker", "4096")
    assert ev.fileno() >= 0
    proc, run = k._shrinkerd.proc, k._shrinkerd.run
    assert os.path.exists(os.path.join(run, "g", "shrinker.sock"))
    k.close()
    assert proc.poll() is not None and not os.path.exists(run)
    assert not os.path.exists(k.root_dir)


SCRIPT = textwrap.dedent("""
    import os, sys, time
    import memcg
    k = memcg.LinuxKernel()
    k.mkdir("/g")
    ev = k.event("/g/mempressure.shrinker", "4096")
    print(k.root_dir, k._shrinkerd.run, k._shrinkerd.proc.pid, flush=True)
    time.sleep(60)
""")


@pytest.mark.linux
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_the_daemon_dies_with_its_caller(real_memcg, sig):
    env = dict(os.environ, PYTHONPATH=SRC)
    p = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    line = p.stdout.readline().split()
    assert line, p.stderr.read()
    root, run, pid = line[0], line[1], int(line[2])
    p.send_signal(sig)
    p.communicate(timeout=30)
    assert _wait(lambda: _gone(pid)), "shrinkerd outlived its caller"
    assert _wait(lambda: not os.path.exists(run)), "runtime directory left behind"
    if sig == signal.SIGKILL:
        memcg.LinuxKernel().close()        # the next kernel sweeps the groups
        name = os.path.basename(root)
        assert not os.path.exists(os.path.join(tempfile.gettempdir(), name))
    assert not os.path.exists(root)
