"""Regressions for issue 17 (reliability): defects found by hostile but careful use."""

import errno
import os
import subprocess

import pytest

import memcg
from memcg.backends.linux import procfs
from memcg.parse import parse_size, simple_strtoul
from memcg.scenario import ScenarioError, builtin_names, load_scenario, parse_scenario
from memcg.scenario.loader import MAX_SCENARIO_BYTES


def test_dying_group_freed_during_reclaim_walk():
    """A removed group still holding page cache is freed while machine-wide reclaim walks
    the tree (mem_cgroup_iter skips a freed css); the walk must not crash."""
    k = memcg.SimKernel(memory="1G")
    k.mkdir("/g")
    t = k.spawn("/g")
    t.read_file("f", 1 << 20)
    t.exit()
    k.rmdir("/g")
    k.spawn("/").read_file("big", 4 << 30)
    # the dying group's cache was reclaimed and the group freed (css_free)
    assert k.sys.dying == [] or len(k.sys.dying) == 0
    assert len(k.sys.memcgs) == 1


# --- bad bytes and empty files (issue 17, item 6)

def _scenario_error(text: str) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "test.toml")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("test.toml: ")
    return msg


def test_sizes_take_ascii_digits_only():
    """memparse() reads '0'-'9'; Arabic-Indic digits are not a size."""
    for bad in ("\u0661\u0666M", "\uff11\uff16M", "16\u00a0M"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert parse_size("16M") == 16 << 20
    assert simple_strtoul("\u0661\u0666") == (0, "\u0661\u0666")
    assert simple_strtoul("16x") == (16, "x")
    msg = _scenario_error('[machine]\nmemory = "1G"\n[[group]]\npath = "/a"\nlimit = "\u0661\u0666M"\n')
    assert "limit" in msg


def test_empty_scenario_is_an_error():
    assert "empty scenario" in _scenario_error("")
    assert "empty scenario" in _scenario_error("# only a comment\n")


def test_group_path_with_nul_is_refused():
    msg = _scenario_error('[[group]]\npath = "/a\\u0000b"\n')
    assert "NUL" in msg


def test_rmdir_of_undeclared_group_is_refused_at_load():
    msg = _scenario_error('[[group]]\npath = "/a"\n[[step]]\nat = 1\nrmdir = "/b"\n')
    assert "unknown group '/b'" in msg
    # a group made by an earlier step may be removed
    parse_scenario('[[step]]\nat = 1\nmkdir = "/b"\n[[step]]\nat = 2\nrmdir = "/b"\n', "test.toml")


def test_builtins_still_load():
    for name in builtin_names():
        load_scenario(name)


# --- bounds on scenario files (issue 17, item 5)

def _load_error(path) -> str:
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(path))
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_scenario_that_is_not_a_regular_file_is_refused():
    assert "not a regular file" in _load_error("/dev/zero")


def test_scenario_file_too_large_is_refused(tmp_path):
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (MAX_SCENARIO_BYTES + 1))
    assert f"larger than {MAX_SCENARIO_BYTES} bytes" in _load_error(big)


def test_deeply_nested_toml_is_one_line(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested too deeply" in _load_error(deep)


# --- pid reuse (issue 17, item 3)

def test_stat_fields_start_after_the_last_parenthesis():
    """comm may hold spaces and parentheses; fields are counted after the last ')'."""
    rest = " ".join(str(n) for n in range(3, 53))          # fields 3..52
    line = f"4242 (a) (b) {rest}\n"
    fields = procfs.stat_fields(line)
    assert fields[0] == "3" and fields[19] == "22"         # field 22: starttime
    assert procfs.start_time(os.getpid()) == int(procfs.stat_fields(
        open(f"/proc/{os.getpid()}/stat").read())[19])
    assert procfs.start_time(-1) is None


def _memory_cgroup(pid: int) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        return next(line for line in f if ":memory:" in line or line.startswith("0::"))


def _file_as(k, pid: int, task, start_time: int) -> None:
    """File pid in k's bookkeeping as task's, with this start time: a reused pid."""
    k._tasks[pid] = task
    vars(k).setdefault("_start_times", {})[pid] = start_time


@pytest.fixture
def newcomer():
    """A process this kernel object did not start, in the caller's own group."""
    p = subprocess.Popen(["sleep", "60"], stdin=subprocess.DEVNULL)
    yield p
    if p.poll() is None:
        p.kill()
        p.wait()


@pytest.mark.linux
def test_reused_pid_of_an_exited_worker_is_not_moved(real_memcg, newcomer):
    """A dead worker's pid taken by a newcomer: the write is refused with EPERM and the
    newcomer stays where it was.  The reuse is made deterministic by filing the
    newcomer's pid in the bookkeeping as the dead worker's."""
    k = memcg.LinuxKernel()
    try:
        k.mkdir("/a")
        t = k.spawn("/a")
        t.exit()
        assert t.state == "exited"
        # even with the newcomer's own start time on file (a reuse within one clock
        # tick), the task it is filed as has exited
        _file_as(k, newcomer.pid, t, procfs.start_time(newcomer.pid))
        before = _memory_cgroup(newcomer.pid)
        with pytest.raises(PermissionError) as info:
            k.write("/a/cgroup.procs", str(newcomer.pid))
        assert info.value.errno == errno.EPERM
        assert _memory_cgroup(newcomer.pid) == before
        # the exited worker itself is refused too; a live one is still moved
        with pytest.raises(OSError) as info:
            k.write("/a/cgroup.procs", str(t.pid))
        assert info.value.errno in (errno.EPERM, errno.ESRCH)
        k.mkdir("/b")
        u = k.spawn("/a")
        k.write("/b/cgroup.procs", str(u.pid))
        assert u.group == "/b" and k.read("/b/cgroup.procs").split() == [str(u.pid)]
    finally:
        newcomer.kill()           # so that a wrongly moved newcomer cannot keep /a busy
        newcomer.wait()
        k.close()


@pytest.mark.linux
def test_pid_whose_start_time_differs_is_not_moved(real_memcg, newcomer):
    """A live task's pid with a start time other than the one recorded is another process."""
    k = memcg.LinuxKernel()
    try:
        k.mkdir("/a")
        t = k.spawn("/")
        # as if t had had the newcomer's pid; start times are in clock ticks and two
        # processes may share one, so the recorded one is made to differ, not left to timing
        _file_as(k, newcomer.pid, t, procfs.start_time(newcomer.pid) - 1)
        before = _memory_cgroup(newcomer.pid)
        with pytest.raises(PermissionError) as info:
            k.write("/a/cgroup.procs", str(newcomer.pid))
        assert info.value.errno == errno.EPERM
        assert _memory_cgroup(newcomer.pid) == before
        del k._tasks[newcomer.pid], k._start_times[newcomer.pid]
        # a pid that no process has goes to the kernel: ESRCH
        newcomer.kill()
        newcomer.wait()
        with pytest.raises(ProcessLookupError):
            k.write("/a/cgroup.procs", str(newcomer.pid))
    finally:
        newcomer.kill()           # so that a wrongly moved newcomer cannot keep /a busy
        newcomer.wait()
        k.close()
