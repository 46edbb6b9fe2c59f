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


# --- sizes, counts and times against the simulated machine (issue 17, item 5)

_HOG = '[machine]\nmemory = "512M"\nswap = "64M"\n[[group]]\npath = "/a"\n[[task]]\nname = "t"\ngroup = "/a"\n'


@pytest.mark.parametrize("extra, key, expected", [
    ('[[step]]\nat = 0\ntask = "t"\ntouch_anon = "8E"\n', "step[0].touch_anon", "at most 576M"),
    ('[[step]]\nat = 0\ntask = "t"\ntouch_anon = "577M"\n', "step[0].touch_anon", "at most 576M"),
    ('[[step]]\nat = 0\ntask = "t"\nfree_anon = "1E"\n', "step[0].free_anon", "at most 576M"),
    ('[[step]]\nat = 0\ntask = "t"\ntouch_shm = "s"\nsize = "1P"\n', "step[0].size", "at most 576M"),
    ('[[step]]\nat = 0\ntask = "t"\nread_file = "f"\nsize = "1P"\n', "step[0].size", "at most 64G"),
    ('[[step]]\nat = 0\ntask = "t"\nwrite_file = "f"\nsize = "65G"\n', "step[0].size", "at most 64G"),
    ('[[step]]\nat = 0\ntask = "t"\ncache_put = 1\nchunk = "1E"\n', "step[0].chunk", "at most 576M"),
    ('[[step]]\nat = 0\ntask = "t"\nmkdirs = 1000000000\n', "step[0].mkdirs", ">= 1 and <= 1000000"),
    ('[[step]]\nat = 0\ntask = "t"\nmkdirs = 600000\n[[step]]\nat = 1\ntask = "t"\n'
     'create_files = 600000\n', "step[1].create_files", "at most 1000000 objects"),
    ('[[step]]\nat = 0\ntask = "t"\nmkdirs = 1\nrepeat = 1000000000\n', "step[0].repeat", ">= 1 and <= 100000"),
    ('[[step]]\nat = 0\ntask = "t"\nmkdirs = 1\nrepeat = 60000\n[[step]]\nat = 0\ntask = "t"\n'
     'mkdirs = 1\nrepeat = 60000\n', "step[1].repeat", "at most 100000 steps"),
    ('[[step]]\nat = 1000000000000\nadvance = 1\n', "step[0].at", ">= 0 and <= 99999"),
    ('[[step]]\nat = 0\ntask = "t"\nmkdirs = 1\nrepeat = 100\nevery = 10000\n', "step[0].every",
     "tick 99999 or before"),
    ('ticks = 1000000000\n', "ticks", ">= 1 and <= 100000"),
    ('[[step]]\nat = 0\nadvance = 1000000000\n', "step[0].advance", ">= 1 and <= 100000"),
    ('[[step]]\nat = 0\nadvance = 60000\n[[step]]\nat = 1\nadvance = 60000\n', "step[1].advance",
     "at most 100000 ticks"),
])
def test_sizes_counts_and_times_beyond_the_limits_are_refused(extra, key, expected):
    msg = _scenario_error(extra + _HOG if extra.startswith("ticks") else _HOG + extra)
    assert msg.startswith(f"test.toml: {key}: expected "), msg
    assert expected in msg, msg


@pytest.mark.parametrize("machine, key, expected", [
    ('memory = "1P"', "machine.memory", "at most 256G"),
    ('memory = "1M"', "machine.memory", "at least 4M"),
    ('swap = "1P"', "machine.swap", "at most 64G"),
    ("cpus = 100000000000000000000", "machine.cpus", ">= 1 and <= 256"),
])
def test_machine_beyond_what_the_model_holds_is_refused(machine, key, expected):
    msg = _scenario_error(f"[machine]\n{machine}\n[[group]]\npath = \"/a\"\n")
    assert msg.startswith(f"test.toml: {key}: expected ") and expected in msg, msg


def test_limits_at_the_bounds_load():
    """The largest legal values still load (the bounds are inclusive)."""
    parse_scenario(_HOG + '[[step]]\nat = 99999\ntask = "t"\ntouch_anon = "576M"\n'
                   '[[step]]\nat = 0\ntask = "t"\nmkdirs = 1000000\n'
                   '[[step]]\nat = 0\nadvance = 100000\n', "test.toml")
    parse_scenario('[machine]\nmemory = "256G"\nswap = "64G"\ncpus = 256\n[[group]]\npath = "/a"\n', "t.toml")


def test_param_from_the_command_line_is_named(capsys):
    """`memcg run hog --param step=1E`: one line naming the file, the key and the --param."""
    from memcg.cli import main
    assert main(["run", "hog", "--param", "step=1E"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "hog.toml: step[3].touch_anon: expected at most 512M" in err
    assert "(from --param step)" in err


def test_loader_bounds_are_the_models():
    from memcg import system
    from memcg.kernel import PAGE_SIZE
    from memcg.scenario import loader
    assert loader.MAX_MEMORY == system.MAX_MEMORY_PAGES * PAGE_SIZE
    assert loader.MAX_SWAP == system.MAX_SWAP_PAGES * PAGE_SIZE
    assert loader.MAX_CPUS == system.MAX_CPUS


@pytest.mark.parametrize("kw", [{"memory": "1P"}, {"swap": "1P"}, {"cpus": 10 ** 20}])
def test_simkernel_refuses_a_machine_it_cannot_hold(kw):
    with pytest.raises(ValueError) as info:
        memcg.SimKernel(**kw)
    assert "the model holds" in str(info.value)


def test_mapping_larger_than_ram_plus_swap_is_enomem():
    """mm/util.c __vm_enough_memory (OVERCOMMIT_GUESS): one mmap of more pages than
    RAM + swap fails at once, and nothing is charged or allocated for it."""
    k = memcg.SimKernel(memory="64M", swap="16M")
    k.mkdir("/a")
    t = k.spawn("/a")
    for n in (8 << 60, 4 << 40, (80 << 20) + 4096):
        with pytest.raises(OSError) as info:
            t.touch_anon(n)
        assert info.value.errno == errno.ENOMEM
    assert t.state == "running"
    assert k.read("/a/memory.usage_in_bytes") == "0\n"
    t.touch_anon(80 << 20)  # exactly RAM + swap may be mapped (then the group reclaims/OOMs)


def test_huge_mapping_is_enomem_on_the_real_kernel_too(real_memcg):
    """The same 8 EiB mapping on real cgroups (the host's default overcommit mode)."""
    with open("/proc/sys/vm/overcommit_memory") as f:
        if f.read().strip() != "0":
            pytest.skip("the host does not use the default overcommit mode (0)")
    k = memcg.LinuxKernel()
    try:
        k.mkdir("/a")
        t = k.spawn("/a")
        with pytest.raises(OSError) as info:
            t.touch_anon(8 << 60)
        assert info.value.errno == errno.ENOMEM
        assert t.state == "running"
        t.exit()
    finally:
        k.close()


def test_100000_events_hold_no_descriptors():
    """Each simulated event is a registration; a real eventfd exists only once its
    descriptor is asked for, and every one is given back by close()."""
    before = len(os.listdir("/proc/self/fd"))
    k = memcg.SimKernel(memory="1G")
    k.mkdir("/g")
    t = k.spawn("/g")
    evs = [k.event("/g/memory.usage_in_bytes", str((i + 1) * 4096)) for i in range(100_000)]
    assert len(os.listdir("/proc/self/fd")) <= before + 1
    t.touch_anon(64 << 20)
    k.advance(1)
    # a descriptor asked for is real and carries what was signalled before it existed
    fd = evs[0].fileno()
    assert os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]"
    assert len(os.listdir("/proc/self/fd")) == before + 1
    assert evs[0].count() == 1
    usage = int(k.read("/g/memory.usage_in_bytes")) // 4096
    crossed = 1 + sum(e.count() for e in evs)
    assert usage - 128 <= crossed <= usage  # the threshold check is rate-limited
    k.close()
    assert len(os.listdir("/proc/self/fd")) == before


# --- found by the write fuzz (tools/write_fuzz.py, tests/data/kernel_v1_write_fuzz.json)

@pytest.mark.parametrize("name", ["notify_on_release", "cgroup.clone_children"])
def test_cgroup_flags_do_not_outlive_their_group(name):
    """cgrp->flags belong to the group: a new group that is handed a removed group's memcg
    id starts with the flag clear (kernel/cgroup/cgroup.c: cgroup_create)."""
    with memcg.SimKernel(memory="64M") as k:
        k.mkdir("/a")
        k.write(f"/a/{name}", "1")
        assert k.read(f"/a/{name}") == "1\n"
        old = k.sys.memcgs and memcg.cgroup.cgroup_get_from_path(k.sys, "/a").id
        k.rmdir("/a")
        k.mkdir("/b")
        assert memcg.cgroup.cgroup_get_from_path(k.sys, "/b").id == old
        assert k.read(f"/b/{name}") == "0\n"


@pytest.mark.parametrize("text, limit", [
    ("k", "0\n"), ("M", "0\n"), ("E", "0\n"),  # memparse: no digits is 0, the suffix is taken
    ("1\u212a", None),  # KELVIN SIGN is no K: EINVAL
])
def test_limit_write_suffix_without_digits_and_kelvin_sign(text, limit):
    with memcg.SimKernel(memory="64M") as k:
        k.mkdir("/g")
        if limit is None:
            with pytest.raises(OSError) as info:
                k.write("/g/memory.limit_in_bytes", text)
            assert info.value.errno == errno.EINVAL
            assert k.read("/g/memory.limit_in_bytes") == "9223372036854771712\n"
        else:
            k.write("/g/memory.limit_in_bytes", text)
            assert k.read("/g/memory.limit_in_bytes") == limit
