"""Scenario format and runner: parsing, every kind of bad input, and runs.

Runs use `FakeKernel`, a tiny stand-in for the `Kernel` interface defined here (first
charger pays, cache reclaimed within a group at its limit, OOM kill when anonymous
memory cannot fit), and the real `memcg.SimKernel` when it is importable.
"""

from __future__ import annotations

import errno
import json

import pytest

from memcg.kernel import Event, Kernel, Task
from memcg.parse import parse_size, parse_stat
from memcg.scenario import (
    ScenarioError,
    builtin_names,
    load_scenario,
    parse_scenario,
    run_scenario,
)

BUILTINS = ("backup", "hog", "shared-pages")
ALL_BUILTINS = sorted(set(BUILTINS) | set(builtin_names()))  # others' built-ins are checked too
DESIGN_KEYS = {"scenario", "backend", "groups", "tasks", "events", "series"}
UNLIMITED = 9223372036854771712  # PAGE_COUNTER_MAX * PAGE_SIZE, what the kernel prints


# --------------------------------------------------------------------------- a fake kernel


class FakeEvent(Event):
    def __init__(self):
        self.n = 0
        self.closed = False

    def fileno(self) -> int:
        return 99

    def count(self) -> int:
        n, self.n = self.n, 0
        return n

    def watch(self, callback) -> None:  # pragma: no cover - not used by the runner
        pass

    def close(self) -> None:
        self.closed = True


class FakeGroup:
    def __init__(self):
        self.limit = UNLIMITED
        self.cache = 0
        self.rss = 0
        self.max = 0
        self.failcnt = 0
        self.oom_kill = 0

    @property
    def usage(self) -> int:
        return self.cache + self.rss


class FakeTask(Task):
    def __init__(self, kernel: "FakeKernel", pid: int, group: str):
        self.k = kernel
        self.pid = pid
        self.group = group
        self.anon = 0
        self._state = "running"

    @property
    def state(self) -> str:
        return self._state

    def touch_anon(self, nbytes: int, locked: bool = False) -> None:
        if self.k.charge(self.group, nbytes):
            self.anon += nbytes
            self.k.groups[self.group].rss += nbytes
        else:
            self.k.oom_kill(self)

    def free_anon(self, nbytes: int) -> None:
        n = min(nbytes, self.anon)
        self.anon -= n
        self.k.groups[self.group].rss -= n

    def touch_shm(self, name: str, nbytes: int) -> None:
        self.read_file("shm:" + name, nbytes)

    def read_file(self, name: str, nbytes: int) -> None:
        owner, size = self.k.files.get(name, (None, 0))
        if owner is not None and size >= nbytes:
            return
        more = nbytes - size if owner is not None else nbytes
        if owner is not None and owner != self.group:
            more = nbytes  # simplification: the whole file moves to the new reader
            self.k.drop(name)
        if not self.k.charge(self.group, more, keep=name):
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        self.k.groups[self.group].cache += more
        self.k.files.pop(name, None)
        self.k.files[name] = (self.group, (size if owner == self.group else 0) + more)

    def write_file(self, name: str, nbytes: int) -> None:
        self.read_file(name, nbytes)

    def unlink(self, name: str) -> None:
        self.k.drop(name)

    def fork(self) -> "FakeTask":
        if self.k.refuse_fork:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        return self.k.spawn(self.group)

    def mkdirs(self, n: int) -> None:
        pass

    def move(self, path: str) -> None:
        self.k.groups[self.group].rss -= self.anon
        self.group = path
        self.k.groups[path].rss += self.anon

    def connect_tcp(self, peer):  # pragma: no cover - not used
        raise OSError(errno.EOPNOTSUPP, "not in the fake")

    def exit(self) -> None:
        self.free_anon(self.anon)
        self._state = "exited"


class FakeKernel(Kernel):
    """Byte-granular toy accounting, enough to exercise the runner and the CLI."""

    backend = "fake"
    instances: list["FakeKernel"] = []

    def __init__(self, memory="1G", cpus=1, swap="0"):
        self.machine = (memory, cpus, swap)
        self.groups = {"/": FakeGroup()}
        self.files: dict[str, tuple[str, int]] = {}  # name -> (owner group, bytes), oldest first
        self.events: dict[str, list[FakeEvent]] = {}
        self.next_pid = 100
        self.ticks = 0
        self.closed = False
        self.refuse_fork = False
        FakeKernel.instances.append(self)

    # accounting
    def charge(self, group: str, nbytes: int, keep: str | None = None) -> bool:
        g = self.groups[group]
        if g.usage + nbytes > g.limit:
            g.failcnt += 1
            for name in [n for n, (o, _) in self.files.items() if o == group and n != keep]:
                self.drop(name)
                if g.usage + nbytes <= g.limit:
                    break
        if g.usage + nbytes > g.limit:
            return False
        g.max = max(g.max, g.usage + nbytes)
        return True

    def drop(self, name: str) -> None:
        owner, size = self.files.pop(name, (None, 0))
        if owner is not None:
            self.groups[owner].cache -= size

    def oom_kill(self, task: FakeTask) -> None:
        g = self.groups[task.group]
        g.oom_kill += 1
        for ev in self.events.get(task.group + "/memory.oom_control", []):
            ev.n += 1
        task.free_anon(task.anon)
        task._state = "oom_killed"

    # the interface
    def mkdir(self, path: str) -> None:
        if path in self.groups:
            raise FileExistsError(errno.EEXIST, "File exists")
        self.groups[path] = FakeGroup()

    def rmdir(self, path: str) -> None:
        del self.groups[path]

    def listdir(self, path: str) -> list[str]:
        names = ["memory.usage_in_bytes", "memory.max_usage_in_bytes", "memory.limit_in_bytes",
                 "memory.failcnt", "memory.stat", "memory.oom_control", "memory.force_empty"]
        kids = [p.rsplit("/", 1)[1] for p in self.groups if p != "/" and (p.rsplit("/", 1)[0] or "/") == path]
        return names + kids

    def _split(self, path: str) -> tuple[FakeGroup, str]:
        group, _, name = path.rpartition("/")
        g = self.groups.get(group or "/")
        if g is None:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        return g, name

    def read(self, path: str) -> str:
        g, name = self._split(path)
        values = {
            "memory.usage_in_bytes": g.usage,
            "memory.max_usage_in_bytes": g.max,
            "memory.limit_in_bytes": g.limit,
            "memory.failcnt": g.failcnt,
        }
        if name in values:
            return f"{values[name]}\n"
        if name == "memory.stat":
            return f"cache {g.cache}\nrss {g.rss}\n"
        if name == "memory.oom_control":
            return f"oom_kill_disable 0\nunder_oom 0\noom_kill {g.oom_kill}\n"
        if name == "memory.force_empty":
            raise PermissionError(errno.EACCES, "Permission denied")
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    def write(self, path: str, text: str) -> None:
        g, name = self._split(path)
        if name == "memory.limit_in_bytes":
            try:
                g.limit = parse_size(text.strip())
            except ValueError:
                raise OSError(errno.EINVAL, "Invalid argument") from None
        elif name == "memory.force_empty":
            group = path.rpartition("/")[0]
            for n in [n for n, (o, _) in self.files.items() if o == group]:
                self.drop(n)
        elif name == "memory.failcnt":
            g.failcnt = 0
        else:
            raise OSError(errno.EINVAL, "Invalid argument")

    def spawn(self, path: str = "/") -> FakeTask:
        self.next_pid += 1
        return FakeTask(self, self.next_pid, path)

    def event(self, path: str, args: str = "") -> FakeEvent:
        if not path.endswith(("memory.oom_control", "memory.usage_in_bytes")):
            raise OSError(errno.EINVAL, "Invalid argument")
        ev = FakeEvent()
        self.events.setdefault(path.rpartition("/")[0], [])
        self.events.setdefault(path, []).append(ev)
        return ev

    def advance(self, ticks: int = 1) -> None:
        self.ticks += ticks

    def debugfs(self) -> dict:
        return {}

    def close(self) -> None:
        self.closed = True


def sim_kernel_or_skip(scenario):
    memcg = pytest.importorskip("memcg")
    cls = getattr(memcg, "SimKernel", None)
    if cls is None:
        pytest.skip("memcg.SimKernel is not available yet")
    return cls(**scenario.machine.sim_kwargs())


# --------------------------------------------------------------------------- helpers

MINIMAL = """
name = "mini"
description = "two groups"

[machine]
memory = "1G"
cpus = 2

[params]
limit = "64M"
n = 3

[[group]]
path = "/a"
files = { "memory.limit_in_bytes" = "{limit}" }

[[group]]
path = "/a/b"

[[task]]
name = "t"
group = "/a"

[[step]]
at = 0
task = "t"
touch_anon = "1M"

[[step]]
at = 2
task = "t"
read_file = "f{i}"
size = "1M"
repeat = "{n}"
every = 2
"""


def parse(text: str, **params) -> object:
    return parse_scenario(text, "test.toml", {k: str(v) for k, v in params.items()})


def error_of(text: str, **params) -> str:
    with pytest.raises(ScenarioError) as info:
        parse(text, **params)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("test.toml: ")
    return msg


# --------------------------------------------------------------------------- parsing


def test_parse_size_accepts_kernel_suffixes():
    assert parse_size("0") == 0
    assert parse_size("4096") == 4096
    assert parse_size("4k") == 4096
    assert parse_size("64M") == 64 << 20
    assert parse_size("2G") == 2 << 30
    assert parse_size(" 1T ") == 1 << 40
    assert parse_size(123) == 123
    for bad in ("", "M", "1.5G", "12Q", "-1", "1MB", "0x10", True, -5):
        with pytest.raises(ValueError):
            parse_size(bad)


def test_parse_stat_reads_name_value_lines():
    assert parse_stat("cache 4096\nrss 0\nbogus\nx y\n") == {"cache": 4096, "rss": 0}


def test_minimal_scenario_parses():
    sc = parse(MINIMAL)
    assert sc.name == "mini" and sc.description == "two groups"
    assert (sc.machine.memory, sc.machine.cpus, sc.machine.swap) == ("1G", 2, "0")
    assert [g.path for g in sc.groups] == ["/a", "/a/b"]
    assert sc.groups[0].files == {"memory.limit_in_bytes": "64M"}
    assert [(t.name, t.group) for t in sc.tasks] == [("t", "/a")]
    assert [(s.at, s.action, s.arg, s.size) for s in sc.steps] == [
        (0, "touch_anon", None, 1 << 20),
        (2, "read_file", "f0", 1 << 20),
        (4, "read_file", "f1", 1 << 20),
        (6, "read_file", "f2", 1 << 20),
    ]
    assert sc.ticks == 7
    assert sc.params == {"limit": "64M", "n": "3"}


def test_params_override_and_substitution():
    sc = parse(MINIMAL, limit="32M", n=1)
    assert sc.groups[0].files["memory.limit_in_bytes"] == "32M"
    assert [s.arg for s in sc.steps if s.action == "read_file"] == ["f0"]
    assert sc.params["limit"] == "32M"


def test_unknown_param_override_is_an_error():
    msg = error_of(MINIMAL, nope="1")
    assert "--param nope" in msg and "unknown parameter" in msg and "limit" in msg


def test_steps_run_in_tick_order_and_end_is_last():
    sc = parse("""
[[task]]
name = "t"
group = "/"
[[step]]
at = "end"
expect = { "task:t" = "running" }
[[step]]
at = 5
task = "t"
touch_anon = "4K"
[[step]]
at = 1
advance = 3
[[step]]
at = 5
write = { "/memory.failcnt" = "0" }
""")
    assert [(s.at, s.action) for s in sc.steps] == [(1, "advance"), (5, "touch_anon"), (5, "write"), (5, "expect")]
    assert sc.ticks == 6
    sc = parse("ticks = 10\n" + "[[step]]\nat = \"end\"\nadvance = 1\n")
    assert sc.steps[0].at == 9 and sc.ticks == 10


def test_inline_step_array_is_the_same_as_tables():
    sc = parse('step = [ { at = 0, advance = 1 }, { at = 1, write = { "/memory.failcnt" = 0 } } ]')
    assert [(s.action, s.arg) for s in sc.steps] == [("advance", 1), ("write", [("/memory.failcnt", "0")])]


def test_literal_braces():
    sc = parse('[[group]]\npath = "/a"\nfiles = { "memory.x" = "{{x}}" }\n')
    assert sc.groups[0].files["memory.x"] == "{x}"


BAD = [
    # (toml text, substrings the one-line message must contain)
    ("name = [", ["invalid TOML"]),
    ("nmae = 'x'", ["nmae", "unknown key"]),
    ("[machine]\nmemroy = '1G'", ["machine.memroy", "unknown key"]),
    ("[machine]\ncpus = 'two'", ["machine.cpus", "integer"]),
    ("[machine]\ncpus = 0", ["machine.cpus", "integer >= 1"]),
    ("[machine]\nmemory = '12Q'", ["machine.memory", "size", "'12Q'"]),
    ("[machine]\nswap = 1.5", ["machine.swap", "size", "1.5"]),
    ("machine = 3", ["machine", "expected a table"]),
    ("[params]\nx = [1]", ["params.x", "string or an integer"]),
    ("[params]\ni = 1", ["params.i"]),
    ("name = 5", ["name", "expected a string"]),
    ("group = 5", ["group", "array of tables"]),
    ("[[group]]\nfiles = {}", ["group[0].path", "missing"]),
    ("[[group]]\npath = 'a'", ["group[0].path", "group path"]),
    ("[[group]]\npath = '/a/b'", ["group[0].path", "parent group '/a'"]),
    ("[[group]]\npath = '/a'\n[[group]]\npath = '/a'", ["group[1].path", "twice"]),
    ("[[group]]\npath = '/a'\nfiles = { 'memory.limit_in_bytes' = true }",
     ['group[0].files."memory.limit_in_bytes"', "text to write"]),
    ("[[group]]\npath = '/a'\nfiles = { 'memory.limit_in_bytes' = '{lim}' }",
     ['group[0].files."memory.limit_in_bytes"', "unknown parameter {lim}"]),
    ("[[group]]\npath = '/a'\nlimit = '1M'", ["group[0].limit", "unknown key"]),
    ("[[task]]\nname = 't'", ["task[0].group", "missing"]),
    ("[[task]]\nname = 't'\ngroup = '/nope'", ["task[0].group", "unknown group '/nope'"]),
    ("[[task]]\nname = 'a b'\ngroup = '/'", ["task[0].name", "task name"]),
    ("[[event]]\npath = '/x/memory.oom_control'", ["event[0].path", "unknown group '/x'"]),
    ("[[event]]\npath = '/memory.oom_control'\nargs = 3", ["event[0].args", "string"]),
    ("[[step]]\nat = 0\ntask = 'ghost'\ntouch_anon = '1M'", ["step[0].task", "unknown task 'ghost'"]),
    ("[[step]]\nat = 0\nadvance = 1\nwrite = { '/memory.failcnt' = '0' }", ["step[0]", "exactly one action"]),
    ("[[step]]\nat = 0", ["step[0]", "exactly one action", "none"]),
    ("[[step]]\nat = 0\nsleep = 1", ["step[0]", "exactly one action"]),
    ("[[step]]\nadvance = 1", ["step[0].at", "missing"]),
    ("[[step]]\nat = -1\nadvance = 1", ["step[0].at", "integer >= 0"]),
    ("[[step]]\nat = 'soon'\nadvance = 1", ["step[0].at", "'soon'"]),
    ("[[step]]\nat = 0\nadvance = 1\nrepeat = 0", ["step[0].repeat", "integer >= 1"]),
    ("[[step]]\nat = 0\nadvance = 1\nsize = '1M'", ["step[0].size", "unknown key"]),
    ("[[step]]\nat = 0\nadvance = 1\ntask = 't'", ["step[0].task", "not allowed"]),
    ("[[task]]\nname = 't'\ngroup = '/'\n[[step]]\nat = 0\ntouch_anon = '1M'", ["step[0].task", "missing"]),
    ("[[task]]\nname = 't'\ngroup = '/'\n[[step]]\nat = 0\ntask = 't'\nread_file = 'f'",
     ["step[0].size", "missing"]),
    ("[[task]]\nname = 't'\ngroup = '/'\n[[step]]\nat = 0\ntask = 't'\nread_file = 'f'\nsize = 'lots'",
     ["step[0].size", "size", "'lots'"]),
    ("[[task]]\nname = 't'\ngroup = '/'\n[[step]]\nat = 0\ntask = 't'\nread_file = 7\nsize = '1M'",
     ["step[0].read_file", "file name"]),
    ("[[task]]\nname = 't'\ngroup = '/'\n[[step]]\nat = 0\ntask = 't'\ntouch_anon = '1X'",
     ["step[0].touch_anon", "size"]),
    ("[[task]]\nname = 't'\ngroup = '/'\n[[step]]\nat = 0\ntask = 't'\nmove = '/nowhere'",
     ["step[0].move", "unknown group '/nowhere'"]),
    ("[[task]]\nname = 't'\ngroup = '/'\n[[step]]\nat = 0\ntask = 't'\nexit = false", ["step[0].exit", "true"]),
    ("[[task]]\nname = 't'\ngroup = '/'\n[[step]]\nat = 0\ntask = 't'\nfork = 't'", ["step[0].fork", "already exists"]),
    ("[[task]]\nname = 't'\ngroup = '/'\n[[step]]\nat = 2\ntask = 't'\nfork = 'c'\n"
     "[[step]]\nat = 1\ntask = 'c'\nexit = true", ["step[1].task", "unknown task 'c' at tick 1"]),
    ("[[step]]\nat = 0\nwrite = { '/x/memory.limit_in_bytes' = '1M' }",
     ['step[0].write."/x/memory.limit_in_bytes"', "unknown group '/x'"]),
    ("[[step]]\nat = 0\nwrite = {}", ["step[0].write", "at least one"]),
    ("[[step]]\nat = 0\nexpect = { 'nothing' = '1' }", ['step[0].expect.nothing', "expected a target"]),
    ("[[step]]\nat = 0\nexpect = { 'task:ghost' = 'running' }", ['step[0].expect."task:ghost"', "unknown task"]),
    ("[[step]]\nat = 0\nexpect = { '/memory.failcnt' = '> lots' }", ['step[0].expect."/memory.failcnt"', "'lots'"]),
    ("[[step]]\nat = 0\nexpect = { '/memory.failcnt' = '== $base' }", ["$base is not recorded"]),
    ("[[step]]\nat = 0\nexpect = { 'event:/memory.oom_control' = '>= 1' }", ["unknown event"]),
    ("[[step]]\nat = 0\nexpect = { '/memory.failcnt' = 3 }", ['step[0].expect."/memory.failcnt"', "condition"]),
    ("[[step]]\nat = 0\nrecord = { x = '$y' }", ["step[0].record.x", "target"]),
    ("ticks = 2\n[[step]]\nat = 5\nadvance = 1", ["ticks", "at least 6"]),
    ("[[step]]\nat = 'end'\nadvance = 1\nrepeat = 2", ["step[0].repeat", "end"]),
]


@pytest.mark.parametrize("text,needles", BAD, ids=[b[1][0] for b in BAD])
def test_bad_input_is_one_line_naming_file_and_key(text, needles):
    msg = error_of(text)
    for needle in needles:
        assert needle in msg, msg


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(ScenarioError, match=r"no such scenario file"):
        load_scenario(str(tmp_path / "nope.toml"), {})
    with pytest.raises(ScenarioError, match=r"^nope: no such built-in scenario .*hog"):
        load_scenario("nope", {})


def test_file_path_loading(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text(MINIMAL.replace('name = "mini"\n', ""))
    sc = load_scenario(str(f), {"limit": "8M"})
    assert sc.name == "mine"  # defaults to the file's stem
    assert sc.groups[0].files["memory.limit_in_bytes"] == "8M"
    f.write_bytes(b"\xff\xfe")
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_scenario(str(f), {})


@pytest.mark.parametrize("name", ALL_BUILTINS)
def test_builtins_load(name):
    assert name in builtin_names()
    sc = load_scenario(name, {})
    assert sc.name == name
    assert sc.description
    if name in BUILTINS:  # the article's built-ins carry parameters and check themselves
        assert sc.params
        assert any(s.action == "expect" for s in sc.steps)
    # every parameter can be overridden
    for key, value in sc.params.items():
        assert load_scenario(name, {key: value}).params[key] == value


# --------------------------------------------------------------------------- runs on the fake


def run_fake(text_or_name, **params):
    if "\n" in text_or_name:
        sc = parse(text_or_name, **params)
    else:
        sc = load_scenario(text_or_name, {k: str(v) for k, v in params.items()})
    k = FakeKernel(sc.machine.memory, sc.machine.cpus, sc.machine.swap)
    return run_scenario(sc, k), k


def test_run_result_has_the_design_keys():
    result, k = run_fake(MINIMAL)
    assert DESIGN_KEYS <= set(result)
    assert result["scenario"] == "mini"
    assert result["backend"] == "fake"
    assert set(result["groups"]) == {"/a", "/a/b"}
    assert set(result["groups"]["/a"]) == {
        "memory.usage_in_bytes", "memory.max_usage_in_bytes", "memory.limit_in_bytes",
        "memory.failcnt", "memory.stat", "memory.oom_control",
    }
    assert result["groups"]["/a"]["memory.limit_in_bytes"] == f"{64 << 20}\n"
    assert result["tasks"] == {"t": {"pid": 101, "state": "running"}}
    assert result["events"] == {}
    s = result["series"]
    assert s["tick"] == list(range(7))
    assert s["groups"]["/a"]["usage"][-1] == 4 << 20
    assert s["groups"]["/a"]["cache"][-1] == 3 << 20
    assert s["groups"]["/a"]["rss"] == [1 << 20] * 7
    assert k.closed and k.ticks == 7
    json.dumps(result)  # JSON-able


def test_runtime_kernel_errors_are_outcomes():
    text = """
[[group]]
path = "/a"
[[task]]
name = "t"
group = "/a"
[[step]]
at = 0
write = { "/a/memory.limit_in_bytes" = "bogus" }
[[step]]
at = 1
task = "t"
fork = "child"
[[step]]
at = 2
task = "child"
exit = true
"""
    sc = parse(text)
    k = FakeKernel()
    k.refuse_fork = True
    result = run_scenario(sc, k)
    errs = result["errors"]
    assert [e["step"] for e in errs] == ["step[0]", "step[1]", "step[2]"]
    assert "EINVAL" in errs[0]["error"] and "bogus" in errs[0]["error"]
    assert "EAGAIN" in errs[1]["error"]
    assert "skipped" in errs[2]["error"]
    assert k.closed


def test_setup_write_error_is_a_scenario_error_and_kernel_is_closed():
    sc = parse('[[group]]\npath = "/a"\nfiles = { "memory.limit_in_bytes" = "lots" }\n')
    k = FakeKernel()
    with pytest.raises(ScenarioError) as info:
        run_scenario(sc, k)
    msg = str(info.value)
    assert msg.startswith('test.toml: group[0].files."memory.limit_in_bytes": ')
    assert "EINVAL" in msg and "\n" not in msg
    assert k.closed


def test_setup_event_error_names_the_event():
    sc = parse('[[event]]\npath = "/memory.pressure_level"\nargs = "low"\n')
    with pytest.raises(ScenarioError, match=r"^test.toml: event\[0\]: .*EINVAL"):
        run_scenario(sc, FakeKernel())


def test_expectations_record_and_events():
    text = """
[[group]]
path = "/a"
files = { "memory.limit_in_bytes" = "4M" }
[[task]]
name = "t"
group = "/a"
[[event]]
path = "/a/memory.oom_control"
[[step]]
at = 0
task = "t"
touch_anon = "1M"
[[step]]
at = 1
record = { before = "/a/memory.usage_in_bytes" }
[[step]]
at = 2
task = "t"
touch_anon = "8M"
[[step]]
at = 3
task = "t"
touch_anon = "1M"
[[step]]
at = 3
expect = { "/a/memory.oom_control" = "oom_kill 1", "/a/memory.oom_control:oom_kill" = "== 1", "task:t" = "oom_killed", "event:/a/memory.oom_control" = "== 1", "/a/memory.max_usage_in_bytes" = "<= /a/memory.limit_in_bytes", "/a/memory.usage_in_bytes" = "< $before" }
[[step]]
at = 3
expect = { "/a/memory.failcnt" = "== 0", "/a/memory.stat:nothing" = "== 0", "task:t" = "== running" }
"""
    result, _ = run_fake(text)
    exps = result["expectations"]
    assert [e["ok"] for e in exps] == [True] * 6 + [False] * 3
    by_target = {(e["target"], e["ok"]): e for e in exps}
    assert by_target[("/a/memory.max_usage_in_bytes", True)]["operand"] == str(4 << 20)
    assert "no 'nothing' line" in by_target[("/a/memory.stat:nothing", False)]["actual"]
    assert result["events"] == {"/a/memory.oom_control": 1}
    assert result["series"]["events"]["/a/memory.oom_control"] == [0, 0, 1, 1]
    assert result["tasks"]["t"]["state"] == "oom_killed"
    assert [e["error"] for e in result["errors"]] == ["skipped: task t is oom_killed"]


@pytest.mark.parametrize("name", BUILTINS)
def test_builtins_hold_on_the_fake_kernel(name):
    result, _ = run_fake(name)
    failed = [e for e in result["expectations"] if not e["ok"]]
    assert not failed, failed


def test_hog_outcome_on_the_fake_kernel():
    result, _ = run_fake("hog")
    assert result["tasks"]["hog"]["state"] == "oom_killed"
    assert result["tasks"]["neighbour"]["state"] == "running"


# --------------------------------------------------------------------------- runs on SimKernel


@pytest.mark.parametrize("name", ALL_BUILTINS)
def test_builtins_hold_on_the_simulated_kernel(name):
    sc = load_scenario(name, {})
    result = run_scenario(sc, sim_kernel_or_skip(sc))
    assert DESIGN_KEYS <= set(result)
    assert result["backend"] == "sim"
    failed = [e for e in result["expectations"] if not e["ok"]]
    assert not failed, failed
    assert result["expectations"]


def test_hog_outcome_on_the_simulated_kernel():
    sc = load_scenario("hog", {})
    result = run_scenario(sc, sim_kernel_or_skip(sc))
    assert result["tasks"]["hog"]["state"] == "oom_killed"
    assert result["tasks"]["neighbour"]["state"] == "running"
    assert "oom_kill 1" in result["groups"]["/hog"]["memory.oom_control"]


def test_backup_outcome_on_the_simulated_kernel():
    sc = load_scenario("backup", {})
    result = run_scenario(sc, sim_kernel_or_skip(sc))
    files = result["groups"]["/backup"]
    assert int(files["memory.max_usage_in_bytes"]) <= int(files["memory.limit_in_bytes"]) == 64 << 20
    assert int(files["memory.failcnt"]) > 0
    assert result["tasks"]["backup"]["state"] == "running"


def test_runs_are_deterministic_on_the_simulated_kernel():
    sc = load_scenario("shared-pages", {})
    one = run_scenario(sc, sim_kernel_or_skip(sc))
    two = run_scenario(sc, sim_kernel_or_skip(sc))
    assert one == two


def test_operation_the_kernel_does_not_model_is_an_outcome(monkeypatch):
    def unmodelled(self, n):
        raise NotImplementedError("dentries are not modelled")

    monkeypatch.setattr(FakeTask, "mkdirs", unmodelled)
    result, k = run_fake('[[task]]\nname = "t"\ngroup = "/"\n[[step]]\nat = 0\ntask = "t"\nmkdirs = 10\n')
    assert result["errors"][0]["error"] == "not supported by the fake kernel: dentries are not modelled"
    assert k.closed


def test_swap_machine_reports_memsw_files():
    class SwapFake(FakeKernel):
        def read(self, path):
            if path.endswith("memory.memsw.usage_in_bytes") or path.endswith("memory.memsw.max_usage_in_bytes"):
                return "0\n"
            return super().read(path)

    sc = parse('[machine]\nswap = "1G"\n[[group]]\npath = "/a"\n')
    result = run_scenario(sc, SwapFake())
    assert "memory.memsw.usage_in_bytes" in result["groups"]["/a"]
    from memcg.report import summary

    assert "swap" in summary(result).splitlines()[3]
