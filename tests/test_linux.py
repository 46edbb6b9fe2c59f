"""LinuxKernel: real cgroups, real workers, safety and clean-up, compare and calibrate.

Tests marked `linux` need root and a writable v1 memory controller (the real_memcg
fixture skips them with the reason elsewhere, and checks afterwards that no group was
left under the caller's memory cgroup).  The others - cgroup v2 name mapping on a fake
tree, the one-line errors when real cgroups are unavailable, the comparison table -
run everywhere.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import dataclasses
import textwrap
import time
from pathlib import Path

import pytest

import memcg
from memcg import compare
from memcg.backends import linux
from memcg.cli import main, make_kernel
from memcg.profile import PROFILE_KEYS, load_profile
from memcg.scenario import builtin_names, load_scenario

MiB = 1 << 20
SRC = str(Path(__file__).resolve().parents[1] / "src")
BUILTINS_CHECKED = {"hog": 0.9, "backup": 0.9, "shared-pages": 0.9}
from test_compare import ROWS_BEFORE  # noqa: E402


@pytest.fixture
def k(real_memcg):
    kernel = memcg.LinuxKernel()
    yield kernel
    kernel.close()


def gone(pid: int) -> bool:
    """The process has exited (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return True
    return text[text.rindex(")") + 2] in "ZX"


def wait_gone(pids, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(gone(p) for p in pids):
            return True
        time.sleep(0.02)
    return False


def one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("memcg: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --------------------------------------------------------------------------- placement and safety


@pytest.mark.linux
def test_root_is_a_new_child_of_the_callers_own_group(k, real_memcg):
    assert os.path.dirname(k.root_dir) == real_memcg
    assert os.path.basename(k.root_dir).startswith(linux.ROOT_PREFIX)
    k.mkdir("/a")
    k.mkdir("/a/b")
    assert os.path.isdir(os.path.join(k.root_dir, "a", "b"))
    assert "memory.limit_in_bytes" in k.listdir("/a") and "b" in k.listdir("/a")
    # the delegated root is an ordinary group: it takes a limit
    k.write("/memory.limit_in_bytes", "1G")
    assert k.read("/memory.limit_in_bytes") == f"{1 << 30}\n"
    assert k.read("/a/memory.stat").startswith("cache ")


@pytest.mark.linux
@pytest.mark.parametrize("path", ["/..", "/../memory.limit_in_bytes", "/a/../../x",
                                  "/../" + "sibling/memory.limit_in_bytes"])
def test_paths_leaving_the_root_are_refused(k, real_memcg, path):
    k.mkdir("/a")
    before = sorted(os.listdir(real_memcg))
    for call in (lambda: k.read(path), lambda: k.write(path, "1M"), lambda: k.mkdir(path + "/x"),
                 lambda: k.listdir(path), lambda: k.spawn(path)):
        with pytest.raises(PermissionError, match="leaves the kernel's root"):
            call()
    assert sorted(os.listdir(real_memcg)) == before


@pytest.mark.linux
def test_only_its_own_processes_are_moved(k):
    k.mkdir("/a")
    t = k.spawn("/")
    with pytest.raises(PermissionError):
        k.write("/a/cgroup.procs", str(os.getpid()))    # the caller itself
    with pytest.raises(PermissionError):
        k.write("/a/cgroup.procs", "0")                 # "the writing task" = the caller
    with pytest.raises(PermissionError):
        k.write("/a/tasks", "1")
    with pytest.raises(OSError) as e:
        k.write("/a/cgroup.procs", "not-a-pid")
    assert e.value.errno == errno.EINVAL                  # the kernel's own answer
    k.write("/a/cgroup.procs", f"{t.pid}\n")
    assert k.read("/a/cgroup.procs").split() == [str(t.pid)] and t.group == "/a"
    assert str(os.getpid()) not in k.read("/a/cgroup.procs").split()


@pytest.mark.linux
def test_workers_start_outside_and_are_moved_in(k):
    k.mkdir("/a")
    t = k.spawn("/a")
    assert int(k.read("/a/memory.usage_in_bytes")) <= 64 * 4096   # no interpreter start-up
    with open(f"/proc/{t.pid}/cgroup") as f:
        assert any(line.endswith(os.path.basename(k.root_dir) + "/a") for line in f.read().splitlines())
    k.mkdir("/in")
    inside = k.spawn("/in", start_inside=True)
    assert inside.state == "running"
    assert int(k.read("/in/memory.usage_in_bytes")) > 2 * MiB       # the whole start-up


@pytest.mark.linux
def test_anonymous_memory_is_private_not_shmem(k):
    k.mkdir("/a")
    t = k.spawn("/a")
    t.touch_anon(8 * MiB)
    with open(f"/proc/{t.pid}/status") as f:
        status = dict(line.split(":", 1) for line in f.read().splitlines())
    assert int(status["RssAnon"].split()[0]) >= 8 * 1024
    # shmem: only the fork code's shared data page (worker.py, FORK_CODE)
    assert int(status["RssShmem"].split()[0]) <= 4


# --------------------------------------------------------------------------- task state from the kernel


@pytest.mark.linux
def test_blocked_is_state_d_in_mem_cgroup_oom_synchronize(k):
    k.mkdir("/a")
    k.write("/a/memory.limit_in_bytes", "8M")
    k.write("/a/memory.oom_control", "1")
    t = k.spawn("/a")
    t.touch_anon(16 * MiB)
    assert t.state == "blocked"
    with open(f"/proc/{t.pid}/wchan") as f:
        assert "oom_synchronize" in f.read()
    t.touch_anon(1 * MiB)              # queued behind the sleep
    k.write("/a/memory.limit_in_bytes", "32M")
    assert t.state == "running"
    # 17 MiB, plus at most 8 pages of the Python worker's own heap and stack faulted while
    # it runs the commands (the tolerance of tests/test_differential.py: near())
    rss = int(k.read("/a/memory.stat").split("\nrss ")[1].split()[0])
    assert 17 * MiB <= rss <= 17 * MiB + 8 * 4096


@pytest.mark.linux
def test_oom_killed_means_sigkill_and_the_groups_counter(k):
    k.mkdir("/a")
    k.write("/a/memory.limit_in_bytes", "16M")
    t = k.spawn("/a")
    t.touch_anon(32 * MiB)
    assert t.state == "oom_killed" and t.exit_signal == signal.SIGKILL
    assert "oom_kill 1" in k.read("/a/memory.oom_control")
    with pytest.raises(ProcessLookupError):
        t.touch_anon(1)


@pytest.mark.linux
def test_a_task_killed_from_outside_is_exited_not_oom_killed(k):
    k.mkdir("/a")
    t = k.spawn("/a")
    child = t.fork()
    os.kill(t.pid, signal.SIGKILL)
    assert wait_gone([t.pid])
    assert t.state == "exited" and t.exit_signal == signal.SIGKILL
    assert child.state == "running"    # orphaned, still ours, still in the group
    child.touch_anon(1 * MiB)
    child.exit()
    assert child.state == "exited"


@pytest.mark.linux
def test_a_start_up_oom_kill_is_reported(k):
    """A worker started inside a group whose limit cannot hold it dies while starting."""
    k.mkdir("/tiny")
    k.write("/tiny/memory.limit_in_bytes", "256K")
    t = k.spawn("/tiny", start_inside=True)
    assert t.state == "oom_killed"
    assert int(k.read("/tiny/memory.oom_control").split("oom_kill ")[1]) >= 1


# --------------------------------------------------------------------------- events


@pytest.mark.linux
def test_events_are_real_eventfds_and_watch_uses_a_thread(k):
    k.mkdir("/a")
    ev = k.event("/a/memory.usage_in_bytes", "4M")
    seen = []
    watched = k.event("/a/memory.usage_in_bytes", "2M")
    watched.watch(seen.append)
    t = k.spawn("/a")
    t.touch_anon(8 * MiB)
    r, _, _ = select.select([ev.fileno()], [], [], 2)
    assert r and ev.count() == 1 and ev.count() == 0
    deadline = time.monotonic() + 2
    while not seen and time.monotonic() < deadline:
        time.sleep(0.005)
    assert seen == [1]
    with pytest.raises(OSError) as e:
        k.event("/a/memory.stat")
    assert e.value.errno == errno.EINVAL
    # not in the mainline kernel: served by the kernel's own shrinkerd
    # (tests/test_linux_shrinker.py)
    sh = k.event("/a/mempressure.shrinker", "1048576")
    assert os.readlink(f"/proc/self/fd/{sh.fileno()}") == "anon_inode:[eventfd]"


# --------------------------------------------------------------------------- clean-up


@pytest.mark.linux
def test_close_removes_groups_processes_and_files(real_memcg):
    k = memcg.LinuxKernel()
    k.mkdir("/a")
    k.mkdir("/a/b")
    k.write("/a/b/memory.limit_in_bytes", "8M")
    k.write("/a/b/memory.oom_control", "1")
    t = k.spawn("/a/b")
    child = t.fork()
    t.touch_shm("seg", 1 * MiB)
    t.read_file("data", 1 * MiB)
    t.touch_anon(16 * MiB)             # blocked in the kernel
    assert t.state == "blocked"
    k.event("/a/memory.oom_control")
    shm, work = k._shmdir, k._workdir
    k.close()
    k.close()                          # again: nothing to do
    assert not os.path.exists(k.root_dir)
    assert not os.path.exists(shm) and not os.path.exists(work)
    assert wait_gone([t.pid, child.pid])


SCRIPT = textwrap.dedent("""
    import sys, time
    import memcg
    k = memcg.LinuxKernel()
    k.mkdir("/a")
    k.mkdir("/a/b")
    k.write("/a/b/memory.limit_in_bytes", "8M")
    k.write("/a/b/memory.oom_control", "1")
    t = k.spawn("/a/b")
    child = t.fork()
    other = k.spawn("/a")
    other.touch_anon(4 << 20)
    t.touch_anon(16 << 20)          # blocked: clean-up must still kill it
    assert t.state == "blocked", t.state
    print(k.root_dir, t.pid, child.pid, other.pid, flush=True)
    if sys.argv[1] == "crash":
        raise RuntimeError("a crash in the middle of a run")
    time.sleep(60)
""")


def run_script(mode: str):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    p = subprocess.Popen([sys.executable, "-c", SCRIPT, mode], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    line = p.stdout.readline().split()
    assert line, p.stderr.read()
    return p, line[0], [int(x) for x in line[1:]]


@pytest.mark.linux
@pytest.mark.parametrize("mode,sig", [("wait", signal.SIGINT), ("wait", signal.SIGTERM), ("crash", None)])
def test_ctrl_c_sigterm_and_a_crash_leave_no_group(real_memcg, mode, sig):
    p, root, pids = run_script(mode)
    if sig is not None:
        p.send_signal(sig)
    p.communicate(timeout=30)
    assert p.returncode != 0
    assert not os.path.exists(root)
    assert wait_gone(pids)


@pytest.mark.linux
def test_a_killed_controller_takes_its_workers_along_and_its_root_is_swept(real_memcg):
    p, root, pids = run_script("wait")
    p.kill()
    p.communicate(timeout=30)
    assert wait_gone(pids)              # PR_SET_PDEATHSIG, and EOF on the forked child's channel
    name = os.path.basename(root)
    files = [os.path.join(tempfile.gettempdir(), name), os.path.join("/dev/shm", name)]
    assert os.path.isdir(root) and os.path.isdir(files[0])   # nobody could remove them ...
    memcg.LinuxKernel().close()         # ... so the next LinuxKernel does
    assert not os.path.exists(root)
    assert not any(os.path.exists(f) for f in files)


# --------------------------------------------------------------------------- unavailable


def test_unavailable_is_one_clear_line(tmp_path, monkeypatch, capsys):
    with pytest.raises(linux.LinuxUnavailable) as e:
        memcg.LinuxKernel(parent=str(tmp_path / "missing"))
    assert "\n" not in str(e.value) and "no memory cgroup" in str(e.value)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(linux.LinuxUnavailable, match="need root"):
        memcg.LinuxKernel()
    for argv in (["run", "hog", "--backend", "linux"], ["compare", "hog"], ["calibrate"]):
        err = one_line_error(capsys, argv)
        assert "cannot use real cgroups" in err and "root" in err


def test_bad_compare_input_is_one_line(capsys, tmp_path):
    assert "no such built-in scenario" in one_line_error(capsys, ["compare", "nope"])
    bad = tmp_path / "p.json"
    bad.write_text('{"kmem_fork_bytes": -1}')
    assert "kmem_fork_bytes" in one_line_error(capsys, ["compare", "hog", "--profile", str(bad)])


# --------------------------------------------------------------------------- cgroup v2 names


V2_FILES = {
    "cgroup.procs": "", "cgroup.threads": "", "cgroup.controllers": "memory\n",
    "cgroup.subtree_control": "", "memory.max": "max\n", "memory.current": "12288\n",
    "memory.peak": "16384\n", "memory.swap.current": "0\n", "memory.reclaim": "",
    "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
    "memory.stat": "anon 4096\nfile 8192\nkernel 12288\nsock 4096\nshmem 0\nfile_mapped 0\n"
                   "file_dirty 0\nfile_writeback 0\nanon_thp 0\ninactive_anon 4096\n"
                   "active_anon 0\ninactive_file 8192\nactive_file 0\nunevictable 0\n"
                   "pgfault 7\npgmajfault 0\n",
}


@pytest.fixture
def fake_v2(tmp_path, monkeypatch):
    """A fake cgroup2 tree: directories get the v2 memory files when created."""
    def populate(path):
        os.mkdir(path)
        for name, text in V2_FILES.items():
            Path(path, name).write_text(text)

    def remove(path):
        for name in os.listdir(path):
            full = os.path.join(path, name)
            if os.path.isfile(full):
                os.unlink(full)
        os.rmdir(path)

    parent = tmp_path / "cg2"
    parent.mkdir()
    (parent / "cgroup.controllers").write_text("memory\n")
    (parent / "cgroup.subtree_control").write_text("memory\n")
    monkeypatch.setattr(linux.files, "make_group_dir", populate)
    monkeypatch.setattr(linux.files, "remove_group_dir", remove)
    return parent


def test_v2_names_map_to_v2_files(fake_v2):
    k = memcg.LinuxKernel(parent=str(fake_v2), version=2)
    try:
        assert k.version == 2
        k.mkdir("/a")
        a = Path(k.root_dir, "a")
        assert Path(k.root_dir, "cgroup.subtree_control").read_text() == "+memory"
        k.write("/a/memory.limit_in_bytes", "32M")
        assert (a / "memory.max").read_text().strip() == "32M"
        k.write("/a/memory.limit_in_bytes", "-1")
        assert (a / "memory.max").read_text().strip() == "max"
        (a / "memory.max").write_text("max\n")
        assert k.read("/a/memory.limit_in_bytes") == linux.UNLIMITED + "\n"
        (a / "memory.max").write_text("33554432\n")
        assert k.read("/a/memory.limit_in_bytes") == "33554432\n"
        assert k.read("/a/memory.usage_in_bytes") == "12288\n"
        assert k.read("/a/memory.max_usage_in_bytes") == "16384\n"
        assert k.read("/a/memory.failcnt") == "3\n"
        assert k.read("/a/memory.oom_control") == "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"
        stat = dict(line.split() for line in k.read("/a/memory.stat").splitlines())
        assert stat["rss"] == "4096" and stat["cache"] == "8192" and stat["pgfault"] == "7"
        assert k.read("/a/memory.kmem.usage_in_bytes") == "12288\n"
        assert k.read("/a/memory.kmem.tcp.usage_in_bytes") == "4096\n"
        assert k.read("/a/memory.use_hierarchy") == "1\n"
        k.write("/a/memory.force_empty", "0")
        assert (a / "memory.reclaim").read_text().strip() == "12288"
        assert k.read("/a/memory.events") == V2_FILES["memory.events"]   # v2 names pass through
        with pytest.raises(FileNotFoundError):
            k.read("/a/memory.high")
    finally:
        k.close()
    assert not os.path.exists(k.root_dir)


@pytest.mark.parametrize("name", ["memory.soft_limit_in_bytes", "memory.memsw.limit_in_bytes",
                                  "memory.kmem.limit_in_bytes", "memory.kmem.tcp.limit_in_bytes",
                                  "memory.swappiness", "memory.move_charge_at_immigrate"])
def test_v2_names_without_an_equivalent_say_so(fake_v2, name):
    k = memcg.LinuxKernel(parent=str(fake_v2), version=2)
    try:
        k.mkdir("/a")
        for call in (lambda: k.read(f"/a/{name}"), lambda: k.write(f"/a/{name}", "1M")):
            with pytest.raises(OSError) as e:
                call()
            assert e.value.errno == errno.EOPNOTSUPP
            assert f"{name}: no cgroup v2 equivalent" in str(e.value)
        for ev in ("memory.oom_control", "memory.pressure_level", "memory.usage_in_bytes"):
            # v2 events are file notifications and PSI triggers (backends/linux/events.py)
            with pytest.raises(OSError, match="cgroup v2 has no cgroup.event_control") as e:
                k.event(f"/a/{ev}")
            assert e.value.errno == errno.EOPNOTSUPP
    finally:
        k.close()


def test_every_v1_name_is_mapped_or_explained():
    """Every file of a real v1 memory group (as measured) has a v2 target or a reason."""
    table = json.load(open(Path(__file__).parent / "data" / "kernel_v1_table.json"))
    v1_names = set(table["defaults"]["listing"])
    assert "memory.limit_in_bytes" in v1_names
    assert v1_names <= set(linux.V2_MAP)


# --------------------------------------------------------------------------- the comparison


def _result(**over):
    base = {"scenario": "x", "backend": "sim",
            "groups": {"/a": {"memory.limit_in_bytes": "67108864\n", "memory.usage_in_bytes": "4194304\n",
                              "memory.failcnt": "0\n",
                              "memory.stat": "cache 0\nrss 4194304\npgpgin 1024\n"
                                             "hierarchical_memory_limit 67108864\n",
                              "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"}},
            "tasks": {"t": {"pid": 1000, "state": "running"}},
            "events": {"/a/memory.oom_control": 0},
            "errors": [], "expectations": [{"tick": 3, "step": "step[1]", "target": "task:t",
                                            "condition": "== running", "actual": "running", "ok": True}]}
    base.update(over)
    return base


def test_compare_rows_tolerances_and_agreement():
    sim = _result()
    lin = _result(backend="linux")
    lin["groups"] = json.loads(json.dumps(sim["groups"]))
    lin["groups"]["/a"]["memory.usage_in_bytes"] = "4456448\n"          # + stock and kmem: agrees
    lin["groups"]["/a"]["memory.stat"] = "cache 0\nrss 4194304\npgpgin 500\nhierarchical_memory_limit 67108864\n"
    lin["tasks"] = {"t": {"pid": 4242, "state": "oom_killed"}}
    lin["errors"] = [{"tick": 5, "step": "step[2]", "action": "fork", "task": "t",
                      "error": "EAGAIN: Resource temporarily unavailable"}]
    out = compare.compare_results(sim, lin, cpus=2)
    rows = {r["what"]: r for r in out["rows"]}
    assert set(rows["/a memory.usage_in_bytes"]) >= {"what", "sim", "linux", "agree"}
    assert rows["/a memory.usage_in_bytes"]["agree"]
    assert rows["/a memory.limit_in_bytes"] == {"what": "/a memory.limit_in_bytes", "sim": 67108864,
                                                "linux": 67108864, "agree": True, "tolerance": "exact",
                                                "class": "compared"}
    assert not rows["/a memory.stat pgpgin"]["agree"]
    assert not rows["task t state"]["agree"]
    assert rows["error tick 5 step[2] fork (t)"] == {"what": "error tick 5 step[2] fork (t)", "sim": None,
                                                     "linux": "EAGAIN", "agree": False, "tolerance": "exact",
                                                     "class": "compared"}
    bad = sum(1 for r in out["rows"] if not r["agree"])
    assert out["agreement"] == pytest.approx(1 - bad / len(out["rows"]))
    assert "DIFF" in compare.format_table(out) and "agreement:" in compare.format_table(out)


def test_tolerance_kinds():
    assert compare.Tolerance("both").agree(36, 47000) and not compare.Tolerance("both").agree(0, 3)
    assert compare.Tolerance("order", rel=2).agree(40, 46) and not compare.Tolerance("order", rel=2).agree(10, 46)
    assert compare.Tolerance("machine", 512 * MiB).agree(9223372036854771712, 512 * MiB)
    assert not compare.Tolerance("machine", 512 * MiB).agree(64 * MiB, 512 * MiB)
    near = compare.Tolerance("near", 100, 0.1)
    assert near.agree(1000, 1190) and not near.agree(1000, 1300)
    assert compare.EXACT.agree("running", "running") and not compare.EXACT.agree(True, 1)


# --------------------------------------------------------------------------- compare and calibrate on this machine


@pytest.mark.linux
@pytest.mark.parametrize("name", builtin_names())
def test_compare_every_builtin(real_memcg, name):
    scenario = load_scenario(name)
    m = scenario.machine
    if m.hierarchy != "v1":
        pytest.skip(f"{name} is a cgroup {m.hierarchy} scenario and this machine's real cgroups are v1 "
                    "(it is compared against the guest in test_v2 and test_v2_scenarios)")
    real = memcg.LinuxKernel(memory=m.memory, swap=m.swap)
    try:
        # as `memcg compare` does: the model predicts the real side's shrinkerd
        out = compare.run_compare(
            scenario, lambda shaped: make_kernel(dataclasses.replace(scenario, machine=shaped),
                                                 "sim", predict=real),
            lambda: real)
    finally:
        real.close()
    assert out["rows"] and 0.0 <= out["agreement"] <= 1.0
    # figures are classed, never dropped: no built-in lists fewer rows than before
    assert out["counts"]["rows"] >= ROWS_BEFORE.get(name, 0), compare.format_table(out)
    whats = [r["what"] for r in out["rows"]]
    assert any(w.startswith("task ") for w in whats) and any(w.endswith("memory.usage_in_bytes") for w in whats)
    if name in BUILTINS_CHECKED:
        # the scenario's expectations are rows too: a real-kernel outcome that differs
        # shows here
        assert out["agreement"] >= BUILTINS_CHECKED[name], compare.format_table(out)


@pytest.mark.linux
def test_cli_compare_writes_the_designed_json(real_memcg, tmp_path, capsys):
    out = tmp_path / "cmp.json"
    assert main(["compare", "hog", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "task hog state" in text and "agreement:" in text
    doc = json.loads(out.read_text())
    assert set(doc) >= {"rows", "agreement"}
    assert all(set(r) >= {"what", "sim", "linux", "agree"} for r in doc["rows"])
    compared = [r for r in doc["rows"] if r["class"] == "compared"]
    assert doc["agreement"] == sum(r["agree"] for r in compared) / len(compared)
    assert doc["counts"]["rows"] == len(doc["rows"])
    assert "the model runs with the real side's machine: 512M of memory (the real root's limit" in text
    hog = next(r for r in doc["rows"] if r["what"] == "task hog state")
    assert hog == {**hog, "sim": "oom_killed", "linux": "oom_killed", "agree": True}


@pytest.mark.linux
def test_cli_run_on_linux(real_memcg, capsys):
    assert main(["run", "hog", "--backend", "linux"]) == 0
    out = capsys.readouterr().out
    assert "on the linux kernel" in out and "oom_killed" in out


@pytest.mark.linux
def test_calibrate_writes_a_profile_the_simulator_loads(real_memcg, tmp_path, capsys):
    out = tmp_path / "profile.json"
    assert main(["calibrate", "--out", str(out)]) == 0
    assert "kmem_fork_bytes" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert set(PROFILE_KEYS) <= set(doc)                    # this machine has tmpfs and ext4
    assert 16 * 1024 <= doc["kmem_fork_bytes"] <= 4 * MiB
    assert 0 < doc["kmem_mkdir_bytes_tmpfs"] < 16 * 1024
    assert 0 < doc["kmem_socket_bytes"] < 64 * 1024
    assert doc["worker_baseline_bytes"] > 1 * MiB
    prof = load_profile(str(out))
    assert prof["kmem_fork_bytes"] == doc["kmem_fork_bytes"]
    k = memcg.SimKernel(profile=str(out))
    k.close()


# --------------------------------------------------------------------------- leftovers and pid namespaces

HOLD = textwrap.dedent("""
    import sys, time
    import memcg
    k = memcg.LinuxKernel()
    k.mkdir("/a")
    print(k.root_dir, k._workdir, k._shmdir or "-", flush=True)
    time.sleep(60)
""")


def _unshare_pid() -> list[str]:
    """`unshare --pid --fork --mount-proc` (a new pid namespace with its own /proc, in a
    private mount namespace, as in a container) as a command prefix, or skip."""
    cmd = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
    try:
        ok = subprocess.run(cmd + ["true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        pytest.skip("unshare --pid --fork --mount-proc is not usable here")
    return cmd


def _python(prefix: list[str], code: str, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    return subprocess.Popen(prefix + [sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.linux
def test_a_sweep_from_a_pid_namespace_keeps_a_live_controllers_groups(real_memcg):
    """A controller started in a new pid namespace cannot see this one's pid; its sweep
    must still leave this live controller's groups and file directories alone."""
    prefix = _unshare_pid()
    k = memcg.LinuxKernel()
    try:
        k.mkdir("/a")
        p = _python(prefix, "import memcg, os; k = memcg.LinuxKernel(); "
                            f"print(os.getpid(), os.path.exists('/proc/{os.getpid()}')); k.close()")
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert out.split() == ["1", "False"]            # pid 1, and this controller's pid unseen
        assert os.path.isdir(os.path.join(k.root_dir, "a"))
        assert os.path.isdir(k._workdir) and (k._shmdir is None or os.path.isdir(k._shmdir))
        k.write("/a/memory.limit_in_bytes", "8M")       # and it still works
    finally:
        k.close()


@pytest.mark.linux
def test_a_killed_pid_1_controllers_leftovers_are_swept(real_memcg):
    """kill -9 of a controller that was pid 1 in its namespace: the next one (pid 1
    again) starts, and sweeps what the first left, because nobody holds its lock."""
    prefix = _unshare_pid()
    p = _python(prefix, HOLD)
    line = p.stdout.readline().split()
    assert line, p.stderr.read()
    root, workdir, shmdir = line
    os.kill(p.pid, signal.SIGKILL)      # unshare --kill-child takes the pid-1 child with it
    p.communicate(timeout=30)
    leftovers = [root, workdir] + ([shmdir] if shmdir != "-" else [])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the pid-1 child dies after its parent
        q = _python(prefix, "import memcg; memcg.LinuxKernel().close()")
        out, err = q.communicate(timeout=60)
        assert q.returncode == 0, err
        if not any(os.path.exists(d) for d in leftovers):
            break
        time.sleep(0.1)
    assert not any(os.path.exists(d) for d in leftovers)
