"""memcg record: a real command recorded in a real memory cgroup, replayed on the model.

The real tests run commands written here (python -c snippets that touch anonymous
memory, read a file that is not in the page cache, fork) and hold the replay to the
kernel: the peak at the recorded setting, the verdict (OOM or not, failcnt zero or not)
at three other limits, each a real run of the same command by `memcg record --limit`.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memcg import cli, parse, record, sweep
from memcg.backends.sim import SimKernel
from memcg.scenario import load_scenario, run_scenario

from test_linux import gone

PY = sys.executable
SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

# 40M of anonymous memory, a 64M file read through the page cache, then a child that
# touches 20M of its own; everything held a little so the samples see it.
MIXED = """
import os, time
b = bytearray(40 << 20)
for i in range(0, len(b), 4096): b[i] = 1
with open("data.bin", "rb") as f:
    while f.read(1 << 20): time.sleep(0.004)
pid = os.fork()
if pid == 0:
    c = bytearray(20 << 20)
    for i in range(0, len(c), 4096): c[i] = 1
    time.sleep(0.3)
    os._exit(0)
os.waitpid(pid, 0)
time.sleep(0.2)
"""


def _cold_file(path, size):
    """A file of real blocks that is not in the page cache: the command's read charges it."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        chunk = b"\1" * (1 << 20)
        for _ in range(size >> 20):
            os.write(fd, chunk)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _record(tmp_path, code, *opts):
    """memcg record in-process; (status, scenario path, real JSON)."""
    out, js = str(tmp_path / "rec.toml"), str(tmp_path / "rec.json")
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        status = cli.main(["record", *opts, "--out", out, "--json", js, "--", PY, "-c", code])
    finally:
        os.chdir(old)
    return status, out, (json.load(open(js)) if os.path.exists(js) else None)


def _replay(path, **params):
    sc = load_scenario(path, params)
    return run_scenario(sc, SimKernel(**sc.machine.sim_kwargs()), settle=True)


def _peak(run):
    return int(run["groups"]["/job"]["memory.max_usage_in_bytes"])


def _verdict(run):
    files = run["groups"]["/job"]
    oom = parse.parse_stat(files["memory.oom_control"])["oom_kill"]
    return {"oom": oom > 0, "failcnt": int(files["memory.failcnt"]) > 0}


@pytest.fixture
def mixed(real_memcg, tmp_path):
    _cold_file(str(tmp_path / "data.bin"), 64 << 20)
    status, toml, real = _record(tmp_path, MIXED)
    assert status == 0
    return toml, real


def test_replay_at_the_recorded_setting_gives_the_real_peak(mixed):
    toml, real = mixed
    assert set(real) >= {"scenario", "backend", "groups", "tasks", "events", "series"}
    assert real["backend"] == "linux" and real["params"] == {"limit": "-1"}
    stat = parse.parse_stat(real["groups"]["/job"]["memory.stat"])
    assert stat["cache"] >= 60 << 20          # the file's pages stayed charged to the group
    assert max(real["series"]["groups"]["/job"]["rss"]) >= 40 << 20
    # the main process and its child, both exited
    assert {n: t["state"] for n, t in real["tasks"].items()} == {"cmd": "exited", "cmd-1": "exited"}
    sim = _replay(toml)
    assert sim["errors"] == []
    assert {n: t["state"] for n, t in sim["tasks"].items()} == {"cmd": "exited", "cmd-1": "exited"}
    assert abs(_peak(sim) - _peak(real)) <= 0.10 * _peak(real), (_peak(sim), _peak(real))
    sim_stat = parse.parse_stat(sim["groups"]["/job"]["memory.stat"])
    assert abs(sim_stat["cache"] - stat["cache"]) <= 0.10 * stat["cache"]


def test_what_if_verdicts_at_three_limits_equal_real_runs(mixed, tmp_path):
    """At 32M the 40M of anon cannot fit (OOM); at 96M it does and the file's cache is
    reclaimed (failcnt > 0, no OOM); at 256M everything fits (failcnt 0)."""
    toml, _ = mixed
    seen = {}
    for limit in ("32M", "96M", "256M"):
        _cold_file(str(tmp_path / "data.bin"), 64 << 20)
        run_dir = tmp_path / f"at-{limit}"
        run_dir.mkdir()
        os.rename(tmp_path / "data.bin", run_dir / "data.bin")
        status, _, real = _record(run_dir, MIXED, "--limit", limit)
        assert real is not None and real["params"] == {"limit": limit}
        sim = _replay(toml, limit=limit)
        assert _verdict(sim) == _verdict(real), (limit, _verdict(sim), _verdict(real))
        assert (status == 1) == _verdict(real)["oom"]
        assert (real["tasks"]["cmd"]["state"] == "oom_killed") == _verdict(real)["oom"]
        assert sim["tasks"]["cmd"]["state"] == real["tasks"]["cmd"]["state"]
        seen[limit] = _verdict(real)
    assert seen == {"32M": {"oom": True, "failcnt": True}, "96M": {"oom": False, "failcnt": True},
                    "256M": {"oom": False, "failcnt": False}}
    # the recipe: the recorded scenario sweeps like any other, each point its single run
    points = sweep.run_sweep(toml, sweep.parse_grid(["limit=32M,96M,256M"]), jobs=1)
    assert {p["params"]["limit"]: _verdict(p["run"]) for p in points} == seen


def _pids_of(path):
    with open(path) as f:
        return [int(p) for p in f.read().split()]


SLEEPER = """
import os, sys, time
child = os.fork()
if child == 0:
    time.sleep(60); os._exit(0)
with open("pids", "w") as f:
    f.write(f"{os.getpid()} {child}")
time.sleep(60)
"""


KILLED = """
import os, time
child = os.fork()
if child == 0:
    time.sleep(60); os._exit(0)
with open("pids", "w") as f:
    f.write(f"{os.getpid()} {child}")
os.kill(os.getpid(), 15)
"""


def test_timeout_kills_the_tree_exit_2_one_line(real_memcg, tmp_path, capsys):
    status, toml, real = _record(tmp_path, SLEEPER, "--timeout", "1")
    assert status == 2 and real is None and not os.path.exists(toml)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--timeout 1 s" in err
    pids = _pids_of(tmp_path / "pids")
    assert len(pids) == 2 and all(gone(p) for p in pids)


def test_killed_command_exit_2_one_line_nothing_left(real_memcg, tmp_path, capsys):
    status, toml, real = _record(tmp_path, KILLED, "--timeout", "20")
    assert status == 2 and real is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "killed by SIGTERM" in err
    assert all(gone(p) for p in _pids_of(tmp_path / "pids"))


def test_command_that_cannot_start_exit_2_one_line(real_memcg, tmp_path, capsys):
    out = str(tmp_path / "x.toml")
    assert cli.main(["record", "--out", out, "--", str(tmp_path / "no-such-program")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot start" in err and "No such file" in err
    assert not os.path.exists(out)


def test_a_limit_the_kernel_refuses_is_one_line(real_memcg, tmp_path, capsys):
    assert cli.main(["record", "--limit", "-1", "--out", str(tmp_path / "x.toml"), "--", "true"]) == 0
    capsys.readouterr()
    assert cli.main(["record", "--limit", "12Q", "--out", str(tmp_path / "x.toml"), "--", "true"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_the_recorder_stopped_by_a_signal_leaves_nothing(real_memcg, tmp_path, sig):
    env = dict(os.environ, PYTHONPATH=os.path.normpath(SRC))
    p = subprocess.Popen([PY, "-m", "memcg", "record", "--out", "x.toml", "--", PY, "-c", SLEEPER],
                         cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not (tmp_path / "pids").exists() or len(_pids_of(tmp_path / "pids")) < 2:
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.05)
    p.send_signal(sig)
    p.wait(timeout=30)
    p.stderr.read()
    p.stderr.close()
    assert p.returncode != 0 and not (tmp_path / "x.toml").exists()
    assert all(gone(q) for q in _pids_of(tmp_path / "pids"))


@pytest.mark.parametrize("args, words", [
    (["--out", "x.toml"], "expected a command"),
    (["--out", "x.toml", "--interval", "0", "--", "true"], "--interval 0"),
    (["--out", "x.toml", "--timeout", "-1", "--", "true"], "--timeout -1"),
    (["--out", "x.toml", "--limit", "lots", "--", "true"], "--limit lots"),
    (["--out", "no/such/dir/x.toml", "--", "true"], "cannot write no/such/dir/x.toml"),
])
def test_bad_options_are_one_line_exit_2(args, words, capsys):
    assert cli.main(["record", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err


# --- the replay, from samples made up here (no real cgroups needed) -----------------------

M = 1 << 20


def _s(t, rss=0, cache=0, shmem=0, oom=0, procs=None):
    return record.Sample(t, {"rss": rss, "cache": cache, "shmem": shmem}, rss + cache, 0, oom,
                         procs or {})


def _p(ppid, anon, rb=0, wb=0, shm=0):
    return record.ProcSample(ppid, anon, shm, rb, wb, rb)


def _rec(samples, **kw):
    return record.Recording(["python3", "-c", "print({1: 2})"], kw.pop("limit", None), 0.05, samples,
                            {"memory.max_usage_in_bytes": "0\n"}, 10, kw.pop("rc", 0),
                            kw.pop("oom", False), machine={"memory": "1G", "cpus": 2, "swap": "0"})


def test_replay_of_a_fork_charges_the_child_only_its_own_anon():
    rec = _rec([
        _s(0.0, rss=8 * M, procs={10: _p(1, 8 * M)}),
        # the child's RssAnon counts 8M shared copy-on-write with its parent: not charged again
        _s(0.5, rss=12 * M, procs={10: _p(1, 8 * M), 11: _p(10, 12 * M)}),
        _s(1.2, rss=8 * M, procs={10: _p(1, 8 * M)}),
        _s(1.3, procs={}),
    ])
    steps, tasks = record.replay_steps(rec)
    assert steps == [
        {"at": 0, "task": "cmd", "touch_anon": 8 * M},
        {"at": 0, "task": "cmd", "fork": "cmd-1"},
        {"at": 0, "task": "cmd-1", "touch_anon": 4 * M},
        {"at": 1, "task": "cmd-1", "exit": True},
        {"at": 1, "task": "cmd", "exit": True},
    ]
    assert tasks == {"cmd": {"pid": 10, "state": "exited"}, "cmd-1": {"pid": 11, "state": "exited"}}


def test_replay_of_a_parent_exit_leaves_the_shared_pages_to_the_child():
    rec = _rec([
        _s(0.0, rss=8 * M, procs={10: _p(1, 8 * M)}),
        _s(0.5, rss=8 * M, procs={10: _p(1, 8 * M), 11: _p(10, 8 * M)}),
        # the parent is gone; its pages stay, mapped (copy-on-write) by the child
        _s(1.2, rss=8 * M, procs={11: _p(10, 8 * M)}),
        _s(2.5, procs={}),
    ])
    steps, _ = record.replay_steps(rec)
    assert steps == [
        {"at": 0, "task": "cmd", "touch_anon": 8 * M},
        {"at": 0, "task": "cmd", "fork": "cmd-1"},
        {"at": 1, "task": "cmd", "exit": True},
        {"at": 2, "task": "cmd-1", "exit": True},
    ]


def test_replay_reads_what_io_says_even_when_the_cache_was_reclaimed():
    rec = _rec([
        _s(0.0, procs={10: _p(1, 0)}),
        _s(0.1, cache=8 * M, procs={10: _p(1, 0, rb=8 * M)}),
        _s(0.2, cache=8 * M, procs={10: _p(1, 0, rb=16 * M, wb=4 * M)}),   # under a limit
        _s(0.3, cache=8 * M, shmem=2 * M, procs={10: _p(1, 0, rb=16 * M, wb=4 * M, shm=2 * M)}),
    ], limit="8M")
    steps, _ = record.replay_steps(rec)
    assert steps == [
        {"at": 0, "task": "cmd", "read_file": "r0", "size": 16 * M},   # two samples, one tick
        {"at": 0, "task": "cmd", "write_file": "w0", "size": 4 * M},
        {"at": 0, "task": "cmd", "touch_shm": "s0", "size": 2 * M},
    ]


def test_an_oom_kill_is_the_victims_state_and_the_scenario_loads(tmp_path):
    rec = _rec([
        _s(0.0, rss=30 * M, procs={10: _p(1, 30 * M)}),
        _s(0.1, oom=1, procs={}),
    ], limit="32M", rc=-9, oom=True)
    _, tasks = record.replay_steps(rec)
    assert tasks["cmd"]["state"] == "oom_killed"
    path = tmp_path / "r.toml"
    path.write_text(record.scenario_toml(rec))
    sc = load_scenario(str(path))
    assert sc.params["limit"] == "32M" and "{1: 2}" in sc.description   # braces kept literal
    assert run_scenario(sc, SimKernel(**sc.machine.sim_kwargs()))["tasks"]["cmd"]["state"] == "exited"
    assert run_scenario(load_scenario(str(path), {"limit": "16M"}),
                        SimKernel(memory="1G"))["tasks"]["cmd"]["state"] == "oom_killed"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 64), st.integers(0, 64), st.booleans()), min_size=1, max_size=12))
def test_replayed_anon_follows_the_group_rss(moves):
    """Whatever the samples, after each one the anon the replay has touched for the live
    processes is the group's rss, to within MIN_STEP, and never negative per task."""
    samples, t = [], 0.0
    for parent_mb, child_mb, child in moves:
        procs = {10: _p(1, parent_mb * M)}
        if child:
            procs[11] = _p(10, child_mb * M)
        samples.append(_s(t, rss=(parent_mb + (child_mb if child else 0)) * M, procs=procs))
        t += 0.05
    steps, _ = record.replay_steps(_rec(samples))
    anon: dict[str, int] = {}
    for s in steps:
        if "touch_anon" in s:
            anon[s["task"]] = anon.get(s["task"], 0) + s["touch_anon"]
        elif "free_anon" in s:
            anon[s["task"]] -= s["free_anon"]
            assert anon[s["task"]] >= 0
        elif "exit" in s:
            anon.pop(s["task"], None)
    last = samples[-1]
    assert abs(sum(anon.values()) - last.stat["rss"]) < record.MIN_STEP


def test_an_oom_kill_counted_before_its_victim_is_gone_is_matched_later():
    """The counter can rise in the sample before the victim leaves cgroup.procs; the
    first process, a victim too, keeps its own kill."""
    rec = _rec([
        _s(0.0, rss=30 * M, procs={10: _p(1, 20 * M), 11: _p(10, 10 * M)}),
        _s(0.1, rss=30 * M, oom=1, procs={10: _p(1, 20 * M), 11: _p(10, 10 * M)}),
        _s(0.2, rss=20 * M, oom=1, procs={10: _p(1, 20 * M)}),
        _s(0.3, oom=2, procs={}),
    ], limit="24M", rc=-9, oom=True)
    _, tasks = record.replay_steps(rec)
    assert {n: t["state"] for n, t in tasks.items()} == {"cmd": "oom_killed", "cmd-1": "oom_killed"}
    rec2 = _rec(rec.samples[:1] + [_s(0.1, rss=20 * M, oom=1, procs={10: _p(1, 20 * M)}),
                                   _s(0.2, oom=1, procs={})], limit="24M", rc=-9, oom=True)
    _, tasks = record.replay_steps(rec2)
    # one kill, the first process's: the child exited by itself
    assert {n: t["state"] for n, t in tasks.items()} == {"cmd": "oom_killed", "cmd-1": "exited"}


def test_a_long_recording_is_a_scenario_the_loader_takes(tmp_path):
    """10 minutes at 20 ms: 30000 samples of a job that streams a file and grows and
    shrinks its heap; each tick's run of like steps is one step."""
    samples = []
    for i in range(30000):
        anon = (8 + (i % 7)) * M
        samples.append(_s(i * 0.02, rss=anon, cache=min(i, 512) * 256 << 10,
                          procs={10: _p(1, anon, rb=i * (256 << 10))}))
    samples.append(_s(600.0, cache=128 * M, procs={}))
    rec = _rec(samples)
    text = record.scenario_toml(rec)
    assert len(text) < 4 << 20
    path = tmp_path / "long.toml"
    path.write_text(text)
    sc = load_scenario(str(path))
    steps, _ = record.replay_steps(rec)
    reads = sum(s.get("size", 0) for s in steps if "read_file" in s)
    assert abs(reads - 29999 * (256 << 10)) < record.MIN_STEP * 2
    assert sc.ticks == 601


def test_the_recorder_killed_by_sigkill_leaves_nothing(real_memcg, tmp_path):
    """No clean-up runs in a SIGKILLed recorder: the command's first process dies with
    it (the death signal), and the watchdog kills the child and removes the groups."""
    env = dict(os.environ, PYTHONPATH=os.path.normpath(SRC))
    p = subprocess.Popen([PY, "-m", "memcg", "record", "--out", "x.toml", "--", PY, "-c", SLEEPER],
                         cwd=tmp_path, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not (tmp_path / "pids").exists() or len(_pids_of(tmp_path / "pids")) < 2:
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.05)
    before = [d for d in os.listdir(real_memcg) if d.startswith(f"memcg-linux-{p.pid}-")]
    files = [os.path.join(base, d) for base in ("/dev/shm", tempfile.gettempdir())
             if os.path.isdir(base) for d in before]
    assert before and any(os.path.isdir(f) for f in files)
    p.kill()
    p.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [d for d in os.listdir(real_memcg) if d in before]
        if (not left and all(gone(q) for q in _pids_of(tmp_path / "pids"))
                and not any(os.path.exists(f) for f in files)):
            break
        time.sleep(0.05)
    assert all(gone(q) for q in _pids_of(tmp_path / "pids"))
    assert [d for d in os.listdir(real_memcg) if d in before] == []
    assert not any(os.path.exists(f) for f in files)
