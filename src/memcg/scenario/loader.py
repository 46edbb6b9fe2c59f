"""Loading scenarios: the TOML description of a workload, parsed and checked.

A scenario names a machine, the groups to create (and the cgroup files to write in
them), the tasks to start, the eventfds to register and a timeline of steps.  The
format is documented in docs/scenarios.md; in short::

    name = "hog"
    description = "A task touching anonymous memory beyond its limit is OOM-killed."

    [machine]
    memory = "512M"
    cpus = 2
    swap = "0"

    [params]
    limit = "64M"

    [[group]]
    path = "/hog"
    files = { "memory.limit_in_bytes" = "{limit}" }

    [[task]]
    name = "hog"
    group = "/hog"

    [[step]]
    at = 0
    task = "hog"
    touch_anon = "16M"
    repeat = 8          # ticks 0, 1, ..., 7
    every = 1

    [[step]]
    at = 10
    expect = { "/hog/memory.oom_control:oom_kill" = "== 1", "task:hog" = "oom_killed" }

`load_scenario` parses and checks a scenario completely: every mistake is a
`ScenarioError` with a one-line message naming the file and the key.
"""

from __future__ import annotations

import importlib.resources
import os
import re
import stat
import tomllib
from typing import Any

from .. import parse
from .model import (SOCKET_FIELDS, EventSpec, Expectation, GroupSpec, Machine, Scenario, ScenarioError,
                    Step, TaskSpec, is_reference)

__all__ = ["ACTIONS", "builtin_names", "load_scenario", "parse_scenario", "quote_key"]


# The largest scenario file read: the built-ins are a few KiB; this leaves room for
# recorded workloads while refusing /dev/zero or a log file passed by mistake.
MAX_SCENARIO_BYTES = 4 << 20

# Bounds on what a scenario may ask of the simulated machine, checked where the value is
# read, so that a mistyped size or count is one line at load time rather than a run that
# cannot finish or an allocation the model cannot hold (docs/scenarios.md, "Limits").
# The machine: SimKernel keeps 16 bytes of metadata per page of memory and of swap, so
# 256G + 64G is 1.25 GiB of arrays (resident where pages were touched); per-CPU stocks
# and counters are kept per group.
MIN_MEMORY = 4 << 20
MAX_MEMORY = 256 << 30
MAX_SWAP = 64 << 30
MAX_CPUS = 256
# A file one step reads or writes: its page-cache index is 4 bytes a page in the model.
MAX_FILE_BYTES = 64 << 30
# Simulated time: the timeline's ticks (each one is sampled), and all advances together.
MAX_TICKS = 100_000
# Steps after `repeat` is expanded, and the objects (directories, files, chunks) that all
# count steps together create.
MAX_STEPS = 100_000
MAX_OBJECTS = 1_000_000
# include/linux/memcontrol.h: MEM_CGROUP_ID_MAX - no more groups can exist at once;
# include/linux/threads.h: PID_MAX_DEFAULT - no more tasks at once on a default system.
MAX_GROUPS = 65535
MAX_TASKS = 0x8000
# Events: each is a registration in the model (a real eventfd only once user space asks
# for its descriptor: fs/eventfd.py).
MAX_EVENTS = 1_000_000
# Task actions whose size is bounded by the machine's memory + swap: mm/util.c:
# __vm_enough_memory() (OVERCOMMIT_GUESS) refuses a mapping larger than totalram_pages()
# + total_swap_pages, and no more can be mapped, cached in a task or queued on a socket.
_MAPPED_SIZES = ("touch_anon", "free_anon", "write_anon", "touch_shm", "send", "recv", "chunk")
_FILE_SIZES = ("read_file", "write_file")

_TOP_KEYS = ("name", "description", "ticks", "machine", "params", "group", "task", "event", "step")
_MACHINE_KEYS = ("memory", "cpus", "swap", "semantics", "kmemcg_id_policy", "hierarchy")
_MACHINE_CHOICES = {"semantics": ("6.18", "3.8"), "kmemcg_id_policy": ("reparent", "keep", "reclaim"),
                    "hierarchy": ("v1", "v2")}
_GROUP_KEYS = ("path", "files")
_TASK_KEYS = ("name", "group")
_EVENT_KEYS = ("path", "args", "on_fire")

# action -> (kind of its value, extra keys it allows, extra keys it needs)
_TASK_ACTIONS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "touch_anon": ("size", ("locked",), ()),
    "free_anon": ("size", (), ()),
    "write_anon": ("size", (), ()),
    "touch_shm": ("name", ("size",), ("size",)),
    "read_file": ("name", ("size",), ("size",)),
    "write_file": ("name", ("size",), ("size",)),
    "unlink": ("name", (), ()),
    "fork": ("name", (), ()),
    "mkdirs": ("count", ("fs",), ()),
    "create_files": ("count", ("fs",), ()),
    "move": ("group", (), ()),
    "exit": ("true", (), ()),
    # put N chunks into the task's ChunkCache (memcg.cache), made on first use
    "cache_put": ("count", ("chunk", "shrinker"), ()),
    # loopback TCP: `connect_tcp` opens a connection named by its value to the task
    # `peer`; `send` (by the connecting task) and `recv` (by the peer) use it
    "connect_tcp": ("socket", ("peer",), ("peer",)),
    "send": ("socket", ("size",), ("size",)),
    "recv": ("socket", ("size",), ("size",)),
}
_PLAIN_ACTIONS = ("write", "advance", "expect", "record", "mkdir", "rmdir")
ACTIONS = tuple(_TASK_ACTIONS) + _PLAIN_ACTIONS
_STEP_COMMON = ("at", "task", "repeat", "every", "when")

_OPS = ("==", "!=", "<=", ">=", "<", ">")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_FILE_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


def _scenarios_dir():
    return importlib.resources.files("memcg").joinpath("scenarios")


def builtin_names() -> list[str]:
    """Names of the built-in scenarios (the package's scenarios/*.toml), sorted."""
    try:
        entries = list(_scenarios_dir().iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(e.name[:-5] for e in entries if e.name.endswith(".toml"))


def _looks_like_path(name: str) -> bool:
    return "/" in name or os.sep in name or name.endswith(".toml")


def load_scenario(name_or_path: str, params: dict[str, str] | None = None) -> Scenario:
    """Load a built-in scenario by name, or a scenario file by path.

    A name without a path separator and without a `.toml` suffix is a built-in name;
    anything else is a file path.  `params` override the scenario's `[params]`
    defaults (an unknown key is an error).  Raises ScenarioError.
    """
    if _looks_like_path(name_or_path):
        label = name_or_path
        try:
            # O_NONBLOCK: opening a FIFO for reading would wait for a writer
            fd = os.open(name_or_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with open(fd, "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise ScenarioError(f"{label}: not a regular file")
                # read one byte past the limit: a longer file (or one still growing) is refused
                data = f.read(MAX_SCENARIO_BYTES + 1)
        except FileNotFoundError:
            raise ScenarioError(f"{label}: no such scenario file") from None
        except OSError as e:
            raise ScenarioError(f"{label}: cannot read: {e.strerror or e}") from None
        if len(data) > MAX_SCENARIO_BYTES:
            raise ScenarioError(f"{label}: larger than {MAX_SCENARIO_BYTES} bytes, the most a "
                                "scenario file may hold")
    else:
        names = builtin_names()
        if name_or_path not in names:
            known = ", ".join(names) or "none"
            raise ScenarioError(
                f"{name_or_path}: no such built-in scenario (built-ins: {known}; "
                "a file path needs a '/' or a .toml suffix)"
            )
        label = f"{name_or_path}.toml"
        data = _scenarios_dir().joinpath(label).read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{label}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    return parse_scenario(text, label, params)


def parse_scenario(text: str, file: str = "<scenario>", params: dict[str, str] | None = None) -> Scenario:
    """Parse and check scenario TOML text; `file` names it in error messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{file}: invalid TOML: {e}") from None
    except RecursionError:
        raise ScenarioError(f"{file}: invalid TOML: arrays or tables nested too deeply") from None
    return _Parser(file, doc, params or {}).parse()


def quote_key(key: str) -> str:
    """A TOML key as it is written in a dotted key path (quoted unless it is bare)."""
    return key if _NAME_RE.match(key) else '"' + key.replace('"', '\\"') + '"'


def _size_text(n: int) -> str:
    """Bytes as the shortest exact size text: 64M, 1G, 4096."""
    for suffix, shift in (("E", 60), ("P", 50), ("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{suffix}"
    return str(n)


def _typename(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a float"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        return "an array"
    return type(v).__name__


def _show(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return _typename(v)
    return repr(v)


class _Parser:
    """Turns the TOML document into a `Scenario`, checking everything on the way."""

    def __init__(self, file: str, doc: dict, overrides: dict[str, str]):
        self.file = file
        self.doc = doc
        self.overrides = overrides
        self.params: dict[str, str] = {}
        self.connections: dict[str, tuple[str, str]] = {}  # name -> (connecting task, peer)
        self.mappable = MAX_MEMORY + MAX_SWAP  # the machine's memory + swap, once read
        self.advanced = 0  # ticks of all advance steps so far
        self.objects = 0  # objects of all count steps so far

    # -- helpers

    def err(self, key: str, msg: str) -> ScenarioError:
        return ScenarioError(f"{self.file}: {key}: {msg}" if key else f"{self.file}: {msg}")

    def check_keys(self, table: dict, allowed: tuple[str, ...], where: str) -> None:
        for k in table:
            if k not in allowed:
                path = f"{where}.{quote_key(k)}" if where else quote_key(k)
                raise self.err(path, f"unknown key (expected one of: {', '.join(allowed)})")

    def table(self, v: Any, key: str) -> dict:
        if not isinstance(v, dict):
            raise self.err(key, f"expected a table, got {_show(v)}")
        return v

    def tables(self, v: Any, key: str) -> list[dict]:
        if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
            raise self.err(key, f"expected an array of tables ([[{key}]]), got {_show(v)}")
        return v

    def subst(self, text: str, key: str, extra: dict[str, str] | None = None) -> str:
        """Replace `{param}` placeholders; `{{` and `}}` stand for literal braces."""
        values = self.params if not extra else {**self.params, **extra}

        def repl(m: re.Match) -> str:
            whole = m.group(0)
            if whole == "{{":
                return "{"
            if whole == "}}":
                return "}"
            if whole in "{}":
                raise self.err(key, f"a lone {whole!r} in {text!r}; expected {{name}} for a parameter, "
                                    "or {{ and }} for literal braces")
            name = m.group(1)
            if name not in values:
                known = ", ".join(sorted(values)) or "none"
                raise self.err(key, f"unknown parameter {{{name}}} (known: {known})")
            return values[name]

        return _PLACEHOLDER.sub(repl, text)

    def string(self, v: Any, key: str, extra: dict[str, str] | None = None, what: str = "a string") -> str:
        if not isinstance(v, str):
            raise self.err(key, f"expected {what}, got {_show(v)}")
        return self.subst(v, key, extra)

    def origin(self, v: Any) -> str:
        """" (from --param K)" when a placeholder in v was set on the command line."""
        if not isinstance(v, str):
            return ""
        names = [m.group(1) for m in _PLACEHOLDER.finditer(v) if m.group(1) in self.overrides]
        return f" (from --param {names[0]})" if names else ""

    def size(self, v: Any, key: str, extra: dict[str, str] | None = None,
             maximum: int | None = None, why: str = "") -> int:
        what = 'a size (bytes, or a string like "64M" with suffix K, M or G)'
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise self.err(key, f"expected {what}, got {_show(v)}")
        raw = self.subst(v, key, extra) if isinstance(v, str) else v
        try:
            n = parse.parse_size(raw)
        except ValueError:
            raise self.err(key, f"expected {what}, got {raw!r}{self.origin(v)}") from None
        if maximum is not None and n > maximum:
            raise self.err(key, f"expected at most {_size_text(maximum)}{why}, got {raw!r}{self.origin(v)}")
        return n

    def integer(self, v: Any, key: str, minimum: int = 0, extra: dict[str, str] | None = None,
                maximum: int | None = None, why: str = "") -> int:
        what = f"an integer >= {minimum}"
        if maximum is not None:
            what = f"an integer >= {minimum} and <= {maximum}{why}"
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise self.err(key, f"expected {what}, got {_show(v)}")
        raw = self.subst(v, key, extra) if isinstance(v, str) else v
        # at most 20 digits: int() of a longer text is refused before it is converted
        n = raw if isinstance(raw, int) else (int(raw) if re.fullmatch(r"\s*-?\d{1,20}\s*", raw, re.ASCII)
                                              else None)
        if n is None or n < minimum or (maximum is not None and n > maximum):
            raise self.err(key, f"expected {what}, got {raw!r}{self.origin(v)}")
        return n

    def step_size(self, v: Any, key: str, action: str, extra: dict[str, str] | None) -> int:
        """A step's size, bounded by what the machine can map (memory + swap) or, for a
        file, by the largest file the model holds."""
        if action in _FILE_SIZES:
            return self.size(v, key, extra, MAX_FILE_BYTES, " (the largest file the model holds)")
        return self.size(v, key, extra, self.mappable,
                         " (the machine's memory + swap: mm/util.c __vm_enough_memory)")

    def count(self, v: Any, key: str, extra: dict[str, str] | None) -> int:
        """A step's object count; all count steps together make at most MAX_OBJECTS."""
        n = self.integer(v, key, minimum=1, extra=extra, maximum=MAX_OBJECTS)
        self.objects += n
        if self.objects > MAX_OBJECTS:
            raise self.err(key, f"expected at most {MAX_OBJECTS} objects made by all steps together, "
                                f"got {self.objects} by this one{self.origin(v)}")
        return n

    def group_path(self, v: Any, key: str, extra: dict[str, str] | None = None) -> str:
        p = self.string(v, key, extra, 'a group path like "/a/b"')
        parts = p.split("/")
        if not p.startswith("/") or (p != "/" and any(x in ("", ".", "..") for x in parts[1:])):
            raise self.err(key, f'expected a group path like "/a/b", got {p!r}')
        # A path reaches the kernel as a C string: a NUL ends it (fs/namei.c: getname
        # copies up to the first NUL), so a name holding one cannot name a group.
        if "\0" in p:
            raise self.err(key, f"expected a group path without NUL bytes, got {p!r}")
        # include/uapi/linux/limits.h: PATH_MAX - a longer path is ENAMETOOLONG on any kernel
        if len(p.encode("utf-8", "surrogateescape")) >= parse.PATH_MAX:
            raise self.err(key, f"expected a group path shorter than {parse.PATH_MAX} bytes, "
                                f"got {len(p.encode('utf-8', 'surrogateescape'))}")
        return p

    # -- sections

    def parse(self) -> Scenario:
        doc = self.doc
        if not doc:
            raise ScenarioError(f"{self.file}: empty scenario: expected at least a [[group]], "
                                "[[task]] or [[step]]")
        self.check_keys(doc, _TOP_KEYS, "")
        stem = os.path.basename(self.file)
        stem = stem[:-5] if stem.endswith(".toml") else stem
        self.parse_params(doc.get("params", {}))
        name = self.string(doc.get("name", stem), "name")
        description = self.string(doc.get("description", ""), "description")
        machine = self.parse_machine(doc.get("machine", {}))
        for section, top in (("group", MAX_GROUPS), ("task", MAX_TASKS), ("event", MAX_EVENTS)):
            if isinstance(doc.get(section), list) and len(doc[section]) > top:
                raise self.err(section, f"expected at most {top} [[{section}]] tables, got {len(doc[section])}")
        groups = self.parse_groups(doc.get("group", []))
        known_groups = {"/"} | {g.path for g in groups}
        tasks = self.parse_tasks(doc.get("task", []), known_groups)
        events = self.parse_events(doc.get("event", []), known_groups)
        given = (self.integer(doc["ticks"], "ticks", minimum=1, maximum=MAX_TICKS) if "ticks" in doc
                 else None)
        steps, ticks = self.parse_steps(doc.get("step", []), known_groups, tasks, events, given)
        return Scenario(name, description, self.file, machine, dict(self.params), groups, tasks, events, steps, ticks)

    def parse_params(self, raw: Any) -> None:
        raw = self.table(raw, "params")
        for k, v in raw.items():
            key = f"params.{quote_key(k)}"
            if not _NAME_RE.match(k) or k == "i":
                raise self.err(key, "expected a parameter name of letters, digits, '_' or '-' "
                                    "(and not 'i', the repeat index)")
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise self.err(key, f"expected a string or an integer, got {_show(v)}")
            self.params[k] = str(v)
        for k, v in self.overrides.items():
            if k not in self.params:
                known = ", ".join(sorted(self.params)) or "none"
                raise self.err(f"--param {k}", f"unknown parameter (known: {known})")
            self.params[k] = str(v)

    def parse_machine(self, raw: Any) -> Machine:
        raw = self.table(raw, "machine")
        self.check_keys(raw, _MACHINE_KEYS, "machine")
        m = Machine()
        for k, top in (("memory", MAX_MEMORY), ("swap", MAX_SWAP)):
            if k in raw:
                v = raw[k]
                n = self.size(v, f"machine.{k}", maximum=top, why=" (the largest machine the model holds)")
                if k == "memory" and n < MIN_MEMORY:
                    raise self.err("machine.memory", f"expected at least {_size_text(MIN_MEMORY)}, "
                                                     f"got {self.subst(v, 'machine.memory') if isinstance(v, str) else v!r}"
                                                     f"{self.origin(v)}")
                setattr(m, k, self.subst(v, f"machine.{k}") if isinstance(v, str) else str(n))
        if "cpus" in raw:
            m.cpus = self.integer(raw["cpus"], "machine.cpus", minimum=1, maximum=MAX_CPUS)
        self.mappable = m.memory_bytes + m.swap_bytes
        for k, choices in _MACHINE_CHOICES.items():
            if k in raw:
                v = self.string(raw[k], f"machine.{k}", what=f"one of {', '.join(choices)}")
                if v not in choices:
                    raise self.err(f"machine.{k}", f"expected one of {', '.join(choices)}, got {v!r}")
                setattr(m, k, v)
        return m

    def parse_groups(self, raw: Any) -> list[GroupSpec]:
        out: list[GroupSpec] = []
        seen = {"/"}
        for i, g in enumerate(self.tables(raw, "group")):
            where = f"group[{i}]"
            self.check_keys(g, _GROUP_KEYS, where)
            if "path" not in g:
                raise self.err(f"{where}.path", "missing (expected a group path)")
            path = self.group_path(g["path"], f"{where}.path")
            if path in {x.path for x in out}:
                raise self.err(f"{where}.path", f"group {path!r} is declared twice")
            parent = path.rsplit("/", 1)[0] or "/"
            if path != "/" and parent not in seen:
                raise self.err(f"{where}.path", f"expected the parent group {parent!r} to be declared before {path!r}")
            seen.add(path)
            files: dict[str, str] = {}
            for fname, text in self.table(g.get("files", {}), f"{where}.files").items():
                fkey = f"{where}.files.{quote_key(fname)}"
                if not _FILE_RE.match(fname):
                    raise self.err(fkey, "expected a cgroup file name like memory.limit_in_bytes")
                if isinstance(text, bool) or not isinstance(text, (str, int)):
                    raise self.err(fkey, f"expected the text to write (a string or an integer), got {_show(text)}")
                files[fname] = self.subst(text, fkey) if isinstance(text, str) else str(text)
            out.append(GroupSpec(path, files, where))
        return out

    def parse_tasks(self, raw: Any, groups: set[str]) -> list[TaskSpec]:
        out: list[TaskSpec] = []
        for i, t in enumerate(self.tables(raw, "task")):
            where = f"task[{i}]"
            self.check_keys(t, _TASK_KEYS, where)
            for k in _TASK_KEYS:
                if k not in t:
                    raise self.err(f"{where}.{k}", "missing")
            name = self.task_name(t["name"], f"{where}.name")
            if name in {x.name for x in out}:
                raise self.err(f"{where}.name", f"task {name!r} is declared twice")
            group = self.known_group(t["group"], f"{where}.group", groups)
            out.append(TaskSpec(name, group, where))
        return out

    def condition(self, v: Any, key: str) -> bool:
        """A step's `when`: true/false, or "true"/"false"/"not true"/"not false" after
        substitution (e.g. "not {shrinker}"), or "A == B" / "A != B", which compares the
        two texts (e.g. "{semantics} == 3.8")."""
        if isinstance(v, str):
            text = self.subst(v, key).strip().lower()
            for op in ("==", "!="):
                if op in text:
                    left, _, right = text.partition(op)
                    return (left.strip() == right.strip()) == (op == "==")
            if text.startswith("not "):
                return not self.boolean(text[4:], key)
            return self.boolean(text, key)
        return self.boolean(v, key)

    def boolean(self, v: Any, key: str, extra: dict[str, str] | None = None) -> bool:
        """true/false, or a string that becomes "true"/"false" after substitution."""
        if isinstance(v, bool):
            return v
        text = self.string(v, key, extra, "true or false").strip().lower()
        if text not in ("true", "false"):
            raise self.err(key, f"expected true or false, got {text!r}")
        return text == "true"

    def task_name(self, v: Any, key: str, extra: dict[str, str] | None = None) -> str:
        name = self.string(v, key, extra, "a task name")
        if not _NAME_RE.match(name):
            raise self.err(key, f"expected a task name of letters, digits, '_' or '-', got {name!r}")
        return name

    def file_name(self, name: str, key: str) -> None:
        """A task's file: a relative path that stays inside the run's directory (the
        real-cgroup backend makes it below its own working directory), without NUL."""
        parts = name.split("/")
        if (not name or "\0" in name or name.startswith("/") or ".." in parts
                or not all(parts)):
            raise self.err(key, f"expected a file name (a relative path without '..', empty parts "
                                f"or NUL), got {name!r}")

    def known_group(self, v: Any, key: str, groups: set[str], extra: dict[str, str] | None = None) -> str:
        path = self.group_path(v, key, extra)
        if path not in groups:
            raise self.err(key, f"unknown group {path!r} (declared: {', '.join(sorted(groups))})")
        return path

    def file_in_group(self, path: str, key: str, groups: set[str]) -> None:
        parent, _, fname = path.rpartition("/")
        parent = parent or "/"
        if not path.startswith("/") or not fname or not _FILE_RE.match(fname):
            raise self.err(key, f'expected a cgroup file path like "/a/memory.usage_in_bytes", got {path!r}')
        if parent not in groups:
            raise self.err(key, f"unknown group {parent!r} (declared: {', '.join(sorted(groups))})")

    def writes(self, v: Any, key: str, groups: set[str], extra: dict | None = None) -> list[tuple[str, str]]:
        """A table of cgroup file writes `{ "/a/memory.max" = "32M", ... }`, in order."""
        table = self.table(v, key)
        if not table:
            raise self.err(key, "expected at least one file: text pair")
        writes: list[tuple[str, str]] = []
        for path, text in table.items():
            wkey = f"{key}.{quote_key(path)}"
            self.file_in_group(path, wkey, groups)
            if isinstance(text, bool) or not isinstance(text, (str, int)):
                raise self.err(wkey, f"expected the text to write (a string or an integer), got {_show(text)}")
            writes.append((path, self.subst(text, wkey, extra) if isinstance(text, str) else str(text)))
        return writes

    def parse_events(self, raw: Any, groups: set[str]) -> list[EventSpec]:
        out: list[EventSpec] = []
        for i, e in enumerate(self.tables(raw, "event")):
            where = f"event[{i}]"
            self.check_keys(e, _EVENT_KEYS, where)
            if "path" not in e:
                raise self.err(f"{where}.path", "missing (expected a cgroup file path)")
            path = self.string(e["path"], f"{where}.path")
            self.file_in_group(path, f"{where}.path", groups)
            args = self.string(e.get("args", ""), f"{where}.args")
            ev = EventSpec(path, args, where)
            if "on_fire" in e:
                # user space acting on the notification (a userspace OOM killer writing
                # cgroup.kill when its PSI trigger fires)
                ev.on_fire = self.writes(e["on_fire"], f"{where}.on_fire", groups)
            if ev.label in {x.label for x in out}:
                raise self.err(where, f"event {ev.label!r} is registered twice")
            out.append(ev)
        return out

    # -- steps

    def parse_steps(self, raw: Any, groups: set[str], tasks: list[TaskSpec], events: list[EventSpec],
                    ticks: int | None) -> tuple[list[Step], int]:
        """The expanded timeline in run order, and the number of ticks to run."""
        expanded: list[tuple[int, int, int, int, Step]] = []
        for i, s in enumerate(self.tables(raw, "step")):
            where = f"step[{i}]"
            actions = [k for k in s if k in ACTIONS]
            if len(actions) != 1:
                got = ", ".join(actions) if actions else "none"
                raise self.err(where, f"expected exactly one action ({', '.join(ACTIONS)}), got {got}")
            action = actions[0]
            if "when" in s and not self.condition(s["when"], f"{where}.when"):
                continue
            extra_ok: tuple[str, ...] = ()
            needs: tuple[str, ...] = ()
            if action in _TASK_ACTIONS:
                _, extra_ok, needs = _TASK_ACTIONS[action]
            self.check_keys(s, _STEP_COMMON + (action,) + extra_ok, where)
            for k in needs:
                if k not in s:
                    raise self.err(f"{where}.{k}", f"missing (needed by {action})")
            if "at" not in s:
                raise self.err(f"{where}.at", 'missing (expected the tick of this step, or "end")')
            if action in _TASK_ACTIONS and "task" not in s:
                raise self.err(f"{where}.task", f"missing (needed by {action})")
            if action not in _TASK_ACTIONS and "task" in s:
                raise self.err(f"{where}.task", f"not allowed with {action}")
            at_end = isinstance(s["at"], str) and self.subst(s["at"], f"{where}.at").strip() == "end"
            at = -1 if at_end else self.integer(s["at"], f"{where}.at", maximum=MAX_TICKS - 1)
            repeat = self.integer(s.get("repeat", 1), f"{where}.repeat", minimum=1, maximum=MAX_STEPS)
            every = self.integer(s.get("every", 1), f"{where}.every", maximum=MAX_TICKS - 1)
            if at_end and ("repeat" in s or "every" in s):
                raise self.err(f"{where}.repeat" if "repeat" in s else f"{where}.every",
                               'not allowed with at = "end"')
            if len(expanded) + repeat > MAX_STEPS:
                raise self.err(f"{where}.repeat" if "repeat" in s else where,
                               f"expected at most {MAX_STEPS} steps in all after repeats, got "
                               f"{len(expanded) + repeat} with this one{self.origin(s.get('repeat'))}")
            if at + (repeat - 1) * every > MAX_TICKS - 1:
                raise self.err(f"{where}.every" if "every" in s else f"{where}.repeat",
                               f"expected the last repeat at tick {MAX_TICKS - 1} or before, got tick "
                               f"{at + (repeat - 1) * every}")
            for n in range(repeat):
                extra = {"i": str(n)} if "repeat" in s else None
                step = self.parse_step(s, where, action, at + n * every, groups, extra)
                expanded.append((step.at, int(at_end), i, n, step))
        last = max((x[0] for x in expanded if not x[1]), default=0)
        if ticks is not None:
            if ticks <= last:
                raise self.err("ticks", f"expected at least {last + 1} (a step is at tick {last}), got {ticks}")
            last = ticks - 1
        for x in expanded:
            if x[1]:
                x[4].at = last
        expanded.sort(key=lambda x: (x[4].at,) + x[1:4])
        steps = [x[4] for x in expanded]
        self.check_order(steps, tasks, events, groups)
        return steps, last + 1

    def parse_step(self, s: dict, where: str, action: str, at: int, groups: set[str], extra) -> Step:
        key = f"{where}.{action}"
        step = Step(at=at, action=action, key=where)
        v = s[action]
        if action in _TASK_ACTIONS:
            step.task = self.task_name(s["task"], f"{where}.task", extra)
            kind = _TASK_ACTIONS[action][0]
            if kind == "size":
                step.size = self.step_size(v, key, action, extra)
            elif kind == "name":
                if action == "fork":
                    step.arg = self.task_name(v, key, extra)
                else:
                    step.arg = self.string(v, key, extra, "a file name")
                    self.file_name(step.arg, key)
            elif kind == "count":
                step.arg = self.count(v, key, extra)
            elif kind == "socket":
                step.arg = self.string(v, key, extra, "a connection name")
                if not _NAME_RE.match(step.arg):
                    raise self.err(key, f"expected a connection name of letters, digits, '_' or '-', "
                                        f"got {step.arg!r}")
                if "peer" in s:
                    step.peer = self.task_name(s["peer"], f"{where}.peer", extra)
            elif kind == "group":
                step.arg = self.known_group(v, key, groups, extra)
            elif kind == "true":
                if v is not True:
                    raise self.err(key, f"expected true, got {_show(v)}")
            if "size" in s:
                step.size = self.step_size(s["size"], f"{where}.size", action, extra)
            if "locked" in s:
                if not isinstance(s["locked"], bool):
                    raise self.err(f"{where}.locked", f"expected true or false, got {_show(s['locked'])}")
                step.locked = s["locked"]
            if "chunk" in s:
                step.chunk = self.step_size(s["chunk"], f"{where}.chunk", "chunk", extra)
            if "shrinker" in s:
                step.shrinker = self.boolean(s["shrinker"], f"{where}.shrinker", extra)
            if "fs" in s:
                step.fs = self.string(s["fs"], f"{where}.fs", extra, 'a file system ("ext4" or "tmpfs")')
                if step.fs not in ("ext4", "tmpfs"):
                    raise self.err(f"{where}.fs", f'expected "ext4" or "tmpfs", got {step.fs!r}')
        elif action == "advance":
            step.arg = self.integer(v, key, minimum=1, extra=extra, maximum=MAX_TICKS)
            self.advanced += step.arg
            if self.advanced > MAX_TICKS:
                raise self.err(key, f"expected at most {MAX_TICKS} ticks advanced by all steps together, "
                                    f"got {self.advanced} with this one{self.origin(v)}")
        elif action in ("mkdir", "rmdir"):
            # rmdir names a group declared or made by an earlier step, as move and write do
            step.arg = (self.group_path(v, key, extra) if action == "mkdir"
                        else self.known_group(v, key, groups, extra))
            if step.arg == "/":
                raise self.err(key, "expected a group below the root")
            if action == "mkdir":
                groups.add(step.arg)  # later steps may move tasks there or read its files
        elif action == "write":
            step.arg = self.writes(v, key, groups, extra)
        elif action == "expect":
            table = self.table(v, key)
            if not table:
                raise self.err(key, "expected at least one target = condition pair")
            step.arg = [self.expectation(t, c, f"{key}.{quote_key(t)}", extra) for t, c in table.items()]
        elif action == "record":
            table = self.table(v, key)
            if not table:
                raise self.err(key, "expected at least one name = target pair")
            recs: list[tuple[str, str]] = []
            for var, target in table.items():
                rkey = f"{key}.{quote_key(var)}"
                if not _NAME_RE.match(var):
                    raise self.err(rkey, "expected a name of letters, digits, '_' or '-'")
                recs.append((var, self.string(target, rkey, extra, "a target")))
            step.arg = recs
        return step

    def expectation(self, target: str, cond: Any, key: str, extra) -> Expectation:
        target = self.subst(target, key, extra)
        cond_s = self.string(cond, key, extra, 'a condition such as ">= 64M", "== $name" or text to find')
        text = cond_s.strip()
        for op in _OPS:
            if text.startswith(op):
                operand = text[len(op):].strip()
                if not operand:
                    raise self.err(key, f"expected an operand after {op!r}")
                if op not in ("==", "!=") and not is_reference(operand):
                    try:
                        parse.parse_size(operand)
                    except ValueError:
                        raise self.err(key, f'expected a size, a "$name" or a target after {op!r}, '
                                            f"got {operand!r}") from None
                return Expectation(target, cond_s, op, operand)
        return Expectation(target, cond_s, "contains", text)

    def check_target(self, target: str, key: str, groups: set[str], alive: set[str],
                     events: list[EventSpec], recorded: set[str]) -> None:
        if target.startswith("$"):
            if target[1:] not in recorded:
                raise self.err(key, f"{target} is not recorded by an earlier step")
        elif target.startswith("task:"):
            if target[5:] not in alive:
                known = ", ".join(sorted(alive)) or "none"
                raise self.err(key, f"unknown task {target[5:]!r} (known by then: {known})")
        elif target.startswith("socket:"):
            name, _, fld = target[7:].partition(":")
            if name not in self.connections:
                known = ", ".join(sorted(self.connections)) or "none"
                raise self.err(key, f"unknown connection {name!r} (opened by then: {known})")
            if fld not in SOCKET_FIELDS:
                raise self.err(key, f"expected socket:{name}:FIELD with FIELD one of "
                                    f"{', '.join(SOCKET_FIELDS)}, got {fld!r}")
        elif target.startswith("debugfs:"):
            if not target[8:]:
                raise self.err(key, 'expected a key after "debugfs:", like "debugfs:dying_groups"')
        elif target.startswith("event:"):
            labels = [e.label for e in events]
            if target[6:] not in labels:
                raise self.err(key, f"unknown event {target[6:]!r} (registered: {', '.join(labels) or 'none'})")
        elif target.startswith("/"):
            self.file_in_group(target.split(":", 1)[0], key, groups)
        else:
            raise self.err(key, 'expected a target ("/group/file", "/group/file:key", "task:NAME", '
                                f'"event:PATH ARGS" or "$name"), got {target!r}')

    def check_order(self, steps: list[Step], tasks: list[TaskSpec], events: list[EventSpec], groups: set[str]) -> None:
        """Tasks must exist before they act; `$names` must be recorded before use."""
        alive = {t.name for t in tasks}
        recorded: set[str] = set()
        for st in steps:
            if st.task is not None and st.task not in alive:
                known = ", ".join(sorted(alive)) or "none"
                raise self.err(f"{st.key}.task", f"unknown task {st.task!r} at tick {st.at} (known by then: {known})")
            if st.action in ("connect_tcp", "send", "recv"):
                self.check_connection(st, alive)
            elif st.action == "fork":
                if st.arg in alive:
                    raise self.err(f"{st.key}.fork", f"task {st.arg!r} already exists")
                alive.add(st.arg)
            elif st.action == "expect":
                for ex in st.arg:
                    ekey = f"{st.key}.expect.{quote_key(ex.target)}"
                    self.check_target(ex.target, ekey, groups, alive, events, recorded)
                    if ex.op != "contains" and is_reference(ex.operand):
                        self.check_target(ex.operand, ekey, groups, alive, events, recorded)
            elif st.action == "record":
                for var, target in st.arg:
                    rkey = f"{st.key}.record.{quote_key(var)}"
                    if target.startswith("$"):
                        raise self.err(rkey, "expected a target, not a $name")
                    self.check_target(target, rkey, groups, alive, events, recorded)
                    recorded.add(var)


    def check_connection(self, st: Step, alive: set[str]) -> None:
        """A connection is opened once, before use; `send` is the connecting task's,
        `recv` the peer's."""
        key = f"{st.key}.{st.action}"
        known = ", ".join(sorted(self.connections)) or "none"
        if st.action == "connect_tcp":
            if st.arg in self.connections:
                raise self.err(key, f"connection {st.arg!r} is opened twice")
            if st.peer not in alive:
                raise self.err(f"{st.key}.peer", f"unknown task {st.peer!r} at tick {st.at} "
                                                 f"(known by then: {', '.join(sorted(alive)) or 'none'})")
            if st.peer == st.task:
                raise self.err(f"{st.key}.peer", "expected another task than the one connecting")
            self.connections[st.arg] = (st.task, st.peer)
            return
        if st.arg not in self.connections:
            raise self.err(key, f"unknown connection {st.arg!r} at tick {st.at} (opened by then: {known})")
        owner, peer = self.connections[st.arg]
        who = owner if st.action == "send" else peer
        if st.task != who:
            role = "connecting task" if st.action == "send" else "peer"
            raise self.err(f"{st.key}.task", f"{st.action} on {st.arg!r} is done by its {role} {who!r}, "
                                             f"not {st.task!r}")
