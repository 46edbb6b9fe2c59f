"""memcg shrinkerd on real cgroups: both socket protocols, safety, the 2013 stress test.

The clients here (tests/data/chunk_client.py and the socket code below) are written from
the protocol as docs/shrinker.md describes it, not from the daemon's code.  They need
root and a writable v1 memory controller; the real_memcg fixture skips them elsewhere.
"""

from __future__ import annotations

import array
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from memcg.shrinkerd import parse_trigger

MiB = 1 << 20
HERE = Path(__file__).resolve().parent
SRC = str(HERE.parent / "src")
CLIENT = str(HERE / "data" / "chunk_client.py")
LIMIT = 64 * MiB


def _poll(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def _rmdir_tree(top: str) -> None:
    dirs = [h for h, _, _ in os.walk(top)]
    for d in sorted(dirs, key=lambda p: -p.count("/")):
        # A killed task leaves the group a moment after it is reaped.
        _poll(lambda: _try_rmdir(d), 5.0)


def _try_rmdir(d: str) -> bool:
    try:
        os.rmdir(d)
        return True
    except FileNotFoundError:
        return True
    except OSError:
        return False


@pytest.fixture
def tree(real_memcg):
    """BASE, BASE/a (limit 64M), BASE/a/x and BASE/b, removed afterwards."""
    base = os.path.join(real_memcg, f"memcg-shrinkerd-test-{os.getpid()}")
    os.mkdir(base)
    try:
        for g in ("a", "a/x", "b"):
            os.mkdir(os.path.join(base, g))
        with open(os.path.join(base, "a", "memory.limit_in_bytes"), "w") as f:
            f.write(str(LIMIT))
        yield base
    finally:
        _rmdir_tree(base)


class Daemon:
    def __init__(self, base: str, run: str, log: str, proc: subprocess.Popen):
        self.base, self.run, self.logpath, self.proc = base, run, log, proc

    def log(self) -> list[dict]:
        with open(self.logpath) as f:
            return [json.loads(line) for line in f if line.startswith("{")]


@pytest.fixture
def daemon_args():
    """Extra command-line options of the daemon (a test overrides this fixture)."""
    return ()


@pytest.fixture
def daemon(tree, daemon_args):
    tmp = tempfile.mkdtemp(prefix="memcg-shrinkerd-")
    run = os.path.join(tmp, "run")
    logpath = os.path.join(tmp, "log")
    with open(logpath, "w") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "memcg", "shrinkerd", "--cgroup", tree,
                                 "--runtime-dir", run, "--json-log", *daemon_args],
                                stderr=logf, env=dict(os.environ, PYTHONPATH=SRC))
    d = Daemon(tree, run, logpath, proc)
    try:
        assert _poll(lambda: os.path.exists(os.path.join(run, "b", "pressure.sock"))), \
            open(logpath).read()
        yield d
        assert proc.poll() is None, "the daemon died: " + open(logpath).read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not os.path.exists(run), "SIGTERM left the runtime directory"
        for here, _, _ in os.walk(tree):   # the OOM guard is given back
            assert "oom_kill_disable 0" in _read(here, "memory.oom_control"), here
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for name in os.listdir(tmp):
            if os.path.isfile(os.path.join(tmp, name)):
                os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    return s


def _line(s: socket.socket) -> str:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(256)
        if not chunk:
            break
        buf += chunk
    return buf.decode()


def _run_client(sock: str, group: str, chunks: int, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, CLIENT, sock, group, str(chunks), *extra],
                          capture_output=True, text=True, timeout=120)


def _read(group: str, name: str) -> str:
    with open(os.path.join(group, name)) as f:
        return f.read()


def _oom_kills(group: str) -> int:
    return int(_read(group, "memory.oom_control").split("oom_kill ")[1].split()[0])


def test_parse_trigger_follows_psi():
    assert parse_trigger("some 200000 2000000\0") == ("some", 200000, 2000000)
    assert parse_trigger("full 100000 1000000\n") == ("full", 100000, 1000000)
    for bad in ("some 1 100", "some 0 1000000", "some 2000000 1000000", "most 1 1000000", ""):
        with pytest.raises(ValueError):
            parse_trigger(bad)


@pytest.mark.linux
def test_sockets_follow_groups_and_their_owner(daemon):
    run, base = daemon.run, daemon.base
    for g in ("", "a", "a/x", "b"):
        for name in ("shrinker.sock", "pressure.sock"):
            st = os.stat(os.path.join(run, g, name))
            gst = os.stat(os.path.join(base, g))
            assert (st.st_uid, st.st_gid) == (gst.st_uid, gst.st_gid)
            assert st.st_mode & 0o777 == (0o660 if gst.st_mode & 0o020 else 0o600)
    os.mkdir(os.path.join(base, "b", "new"))
    assert _poll(lambda: os.path.exists(os.path.join(run, "b", "new", "shrinker.sock")))
    os.rmdir(os.path.join(base, "b", "new"))
    assert _poll(lambda: not os.path.exists(os.path.join(run, "b", "new")))


@pytest.mark.linux
def test_bad_lines_get_an_error_line_and_counts_are_kept(daemon):
    s = _connect(os.path.join(daemon.run, "a", "shrinker.sock"))
    s.sendall(b"hello\n")
    assert _line(s).startswith("error: ")
    s.sendall(b"+1\n")
    assert _line(s) == "error: not registered\n"
    s.sendall(b"register 4096\n")
    assert "SCM_RIGHTS" in _line(s)
    efd = os.eventfd(0)
    pipe_r, pipe_w = os.pipe()
    s.sendmsg([b"register 4096\n"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [pipe_r]))])
    assert _line(s).startswith("error: ")       # not an eventfd
    s.sendmsg([b"register 0\n"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [efd]))])
    assert _line(s).startswith("error: ")       # chunk size 0
    s.sendmsg([b"register 4096\n"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [efd]))])
    s.sendall(b"?\n")
    assert _line(s) == "held 0\n"
    s.sendall(b"+5\n-2\n?\n")
    assert _line(s) == "held 3\n"
    s.sendall(b"-9\n?\n")
    assert _line(s) == "held 0\n"
    s.sendall(b"x" * 400)
    assert _line(s).startswith("error: line too long")
    assert s.recv(10) == b""                    # and the connection is closed
    s.close()
    for fd in (efd, pipe_r, pipe_w):
        os.close(fd)
    assert _poll(lambda: any(e["what"] == "disconnect" for e in daemon.log()))
    assert daemon.proc.poll() is None


@pytest.mark.linux
@pytest.mark.parametrize("daemon_args", [("--margin", "24M")])
def test_stress_with_daemon_never_oom_never_above_limit(daemon):
    """Document 002's test: 4x the limit in 1 MiB chunks, a shrinker freeing what is asked.

    A 24M margin (the default is limit/4, 16M): on a loaded 2-core machine the client's
    thread has been seen to wake 18 ms late, long enough for the allocator to run 16M."""
    a = os.path.join(daemon.base, "a")
    r = _run_client(os.path.join(daemon.run, "a", "shrinker.sock"), a, 4 * LIMIT // MiB)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["allocated"] == 4 * LIMIT // MiB
    # a request written while the allocator makes its last chunk can still be in flight
    # when the client reports (seen: 216 freed of 240 asked on a loaded machine)
    assert out["asked"] >= out["freed"] >= 3 * LIMIT // MiB
    # The daemon never asked for more than was reported: its count is what is left,
    # less a request it wrote that the client had not read yet when it asked (seen on
    # a loaded machine: held 15 where the client counted 39 left)
    held = int(out["held_reply"].split()[1])
    assert out["held_reply"].startswith("held ") and 0 <= held <= out["allocated"] - out["asked"]
    assert _oom_kills(a) == 0
    assert int(_read(a, "memory.max_usage_in_bytes")) <= LIMIT
    asks = [e for e in daemon.log() if e["what"] == "ask"]
    assert asks and all(e["group"] == "a" and e["chunks"] > 0 for e in asks)


@pytest.mark.linux
@pytest.mark.parametrize("daemon_args", [("--margin", "4K", "--oom-guard")])
def test_oom_guard_asks_on_oom_and_never_leaves_the_group_hung(daemon):
    """With no room before the limit (margin 4K) the allocator meets the limit while
    the guard holds the OOM (oom_kill_disable 1): the daemon asks on the OOM event, and
    whatever the client does, the group does not stay under OOM - the guard is given
    back and the kernel decides."""
    a = os.path.join(daemon.base, "a")
    r = _run_client(os.path.join(daemon.run, "a", "shrinker.sock"), a, 2 * LIMIT // MiB)
    assert r.returncode in (0, -signal.SIGKILL), r.stderr
    log = daemon.log()
    assert any(e["what"] == "guard" and e["on"] for e in log)
    assert any(e["what"] == "ask" and e["reason"] == "oom" for e in log)
    assert _poll(lambda: "under_oom 0" in _read(a, "memory.oom_control"))
    assert int(_read(a, "memory.max_usage_in_bytes")) <= LIMIT


@pytest.mark.linux
def test_stress_without_daemon_is_oom_killed(tree):
    a = os.path.join(tree, "a")
    r = _run_client("-", a, 4 * LIMIT // MiB)
    assert r.returncode == -signal.SIGKILL
    assert _oom_kills(a) == 1


@pytest.mark.linux
def test_client_elsewhere_is_not_asked_and_holder_backs_off(daemon):
    """A shrinker in b holds chunks while a is pressed: it is never asked.  A client in
    a that hands everything back is asked less and less often (back-off)."""
    b_sock = _connect(os.path.join(daemon.run, "b", "shrinker.sock"))
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    b_sock.sendmsg([b"register 1048576\n+100\n?\n"],
                   [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [efd]))])
    assert _line(b_sock) == "held 100\n"
    a = os.path.join(daemon.base, "a")
    # 56 chunks: above the high mark (limit - limit/4), under the limit; held 3 s.
    r = _run_client(os.path.join(daemon.run, "a", "shrinker.sock"), a, 56, "--hold", "--linger", "3")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    # While it lingers 3 s: without back-off a request every 0.25 s (settle time and a
    # tick), about 10 in 2.5 s; with it 0.1, 0.2, 0.4, 0.8, 1.6 s between them.
    times = [t for t, _ in out["requests"]]
    assert len(times) >= 3
    gaps = [y - x for x, y in zip(times, times[1:])]
    assert gaps[-1] > 2 * min(gaps)              # the requests thin out
    late = [t for t in times if t >= times[-1] - 2.5]
    assert len(late) <= 6, (len(late), gaps)
    assert any(e["what"] == "backoff" for e in daemon.log())
    with pytest.raises(BlockingIOError):
        os.eventfd_read(efd)
    b_sock.sendall(b"?\n")
    assert _line(b_sock) == "held 100\n"
    b_sock.close()
    os.close(efd)


def _pressure_client(path: str, trigger: bytes = b"some 100000 1000000\0") -> socket.socket:
    s = _connect(path)
    s.sendall(trigger)
    return s


@pytest.mark.linux
def test_pressure_protocol_own_group_and_ancestors_only(daemon):
    run, base = daemon.run, daemon.base
    near = _pressure_client(os.path.join(run, "a", "x", "pressure.sock"))
    own = _pressure_client(os.path.join(run, "a", "pressure.sock"))
    sibling = _pressure_client(os.path.join(run, "b", "pressure.sock"))
    above = _pressure_client(os.path.join(run, "pressure.sock"))
    bad = _pressure_client(os.path.join(run, "a", "pressure.sock"), b"some 10 100\0")
    assert _line(bad).startswith("error: ")
    bad.close()
    assert _poll(lambda: sum(e["what"] == "trigger" for e in daemon.log()) == 4)
    # Page cache twice the limit read in a/x: a's limit reclaim is pressure for a and a/x.
    fd, name = tempfile.mkstemp(prefix="memcg-shrinkerd-", dir="/var/tmp")
    try:
        block = b"y" * MiB
        for _ in range(2 * LIMIT // MiB):
            os.write(fd, block)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        x = os.path.join(base, "a", "x")
        start = time.monotonic()
        reader = subprocess.run(["sh", "-c", f'echo $$ > {x}/cgroup.procs; '
                                 f'for i in 1 2 3; do cat {name} > /dev/null; done'], timeout=120)
        assert reader.returncode == 0
        # Deferred notifications arrive at the end of the window.
        elapsed = time.monotonic() - start + 1.2
        time.sleep(1.2)
    finally:
        os.close(fd)
        os.unlink(name)
    got = {}
    for label, s in (("near", near), ("own", own), ("sibling", sibling), ("above", above)):
        s.setblocking(False)
        data = b""
        while select.select([s], [], [], 0)[0]:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        got[label] = len(data)
        s.close()
    assert got["near"] >= 1 and got["own"] >= 1, got
    assert got["sibling"] == 0 and got["above"] == 0, got
    # At most once per 1 s window (plus the one at the window's end).
    assert got["near"] <= elapsed / 1.0 + 1, (got, elapsed)


def test_cli_errors_are_one_line(capsys):
    from memcg.cli import main
    assert main(["shrinkerd", "--cgroup", "/nonexistent-group"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "memory.limit_in_bytes" in err


def _docs_client():
    """The 20-line client of docs/shrinker.md, taken from the document itself."""
    text = (HERE.parent / "docs" / "shrinker.md").read_text()
    block = text.split("A client in 20 lines of Python")[1].split("```python\n")[1].split("```")[0]
    assert len(block.strip().splitlines()) <= 22
    ns = {}
    exec(block, ns)
    return ns["shrinker_client"]


@pytest.mark.linux
def test_docs_client_is_asked_for_its_ancestor_s_pressure(daemon):
    """The documented client in a/x reports 40 chunks; an allocator without a shrinker
    takes a (limit 64M) over its high mark: the client below is asked, never for more
    than it reported."""
    asked = []

    def free_chunks(n):
        asked.append(n)
        return n

    report = _docs_client()(os.path.join(daemon.run, "a", "x", "shrinker.sock"), MiB, free_chunks)
    report(+40)
    assert _poll(lambda: any(e["what"] == "register" for e in daemon.log()))
    a = os.path.join(daemon.base, "a")
    # 56 chunks: over the high mark (48M), under the limit; nothing is freed, so the
    # daemon keeps asking until the client's 40 are all asked for.
    r = _run_client("-", a, 56, "--linger", "1")
    assert r.returncode == 0, r.stderr
    assert _poll(lambda: sum(asked) == 40, 5.0), asked
    assert all(e["client"] == "a/x" for e in daemon.log() if e["what"] == "ask")
