"""Running a scenario: the deterministic player and the expectations it checks.

`run_scenario` plays a loaded `Scenario` on any `Kernel`, through the public
interface only (memcg.kernel): groups and their files, tasks, eventfds, then the
timeline tick by tick, sampling every group; the result is the run's JSON.
"""

from __future__ import annotations

import errno as _errno
from typing import Any, Callable

from .. import parse
from ..cache import ChunkCache
from ..kernel import Event, Kernel, Socket, Task
from .loader import quote_key
from .model import SOCKET_FIELDS, Expectation, Scenario, ScenarioError, Step, is_reference

__all__ = ["run_scenario", "REPORTED_FILES", "REPORTED_FILES_V2", "MEMSW_FILES", "SWAP_FILES_V2",
           "TCP_FILES", "TCP_SERIES"]


REPORTED_FILES = (
    "memory.usage_in_bytes",
    "memory.max_usage_in_bytes",
    "memory.limit_in_bytes",
    "memory.failcnt",
    "memory.stat",
    "memory.oom_control",
)
"""The files of every group that a run's JSON reports."""

MEMSW_FILES = ("memory.memsw.usage_in_bytes", "memory.memsw.max_usage_in_bytes")
"""Reported as well when the machine has swap."""

REPORTED_FILES_V2 = (
    "memory.current",
    "memory.peak",
    "memory.max",
    "memory.high",
    "memory.events",
    "memory.stat",
)
"""The files of every group that a run's JSON reports on cgroup v2."""

SWAP_FILES_V2 = ("memory.swap.current", "memory.swap.max")
"""Reported as well on cgroup v2 when the machine has swap."""

TCP_FILES = ("memory.kmem.tcp.usage_in_bytes", "memory.kmem.tcp.max_usage_in_bytes",
             "memory.kmem.tcp.limit_in_bytes", "memory.kmem.tcp.failcnt")
"""Reported as well when the scenario opens TCP connections."""

TCP_SERIES = ("tcp_usage", "tcp_sent", "tcp_buffered", "tcp_drops", "tcp_window", "tcp_pressure")
"""Per-group series of a scenario with connections, sampled every tick."""


def _join(group: str, fname: str) -> str:
    return ("" if group == "/" else group) + "/" + fname


def _oserror_text(e: OSError) -> str:
    name = _errno.errorcode.get(e.errno, "") if e.errno is not None else ""
    msg = e.strerror or str(e)
    return f"{name}: {msg}" if name else msg


class _Run:
    """The state of one run: tasks by name, event totals, recorded values, outcomes."""

    def __init__(self, scenario: Scenario, kernel: Kernel):
        self.sc = scenario
        self.k = kernel
        self.tasks: dict[str, Task] = {}
        self.events: dict[str, Event] = {}
        self.event_totals: dict[str, int] = {}
        self.recorded: dict[str, str] = {}
        self.recorded_from: dict[str, str] = {}   # $name -> the target it was recorded from
        self.caches: dict[str, ChunkCache] = {}
        self.cache_keys = 0  # keys of the chunks put so far
        self.task_groups: dict[str, str] = {t.name: t.group for t in scenario.tasks}
        self.expectations: list[dict] = []
        self.errors: list[dict] = []
        self.fired: set[str] = set()  # events counted since the last tick's on_fire writes
        self.actions: list[dict] = []  # the on_fire writes made
        self.series: dict[str, Any] = {
            "tick": [],
            "groups": {g.path: {"usage": [], "cache": [], "rss": []} for g in scenario.groups},
            "events": {e.label: [] for e in scenario.events},
        }
        # loopback TCP: connections by name, the group of the task that opened each,
        # and the bytes send() accepted and recv() returned on it
        self.sockets: dict[str, Socket] = {}
        self.socket_groups: dict[str, str] = {}
        self.socket_bytes: dict[str, list[int]] = {}
        self.has_sockets = any(st.action == "connect_tcp" for st in scenario.steps)
        # the TCP figures at the end of the last tick, taken before the kernel settles
        self.tcp_final: tuple[dict, dict] | None = None
        if self.has_sockets:
            for g in scenario.groups:
                self.series["groups"][g.path].update({name: [] for name in TCP_SERIES})

    def fail(self, key: str, msg: str) -> ScenarioError:
        return ScenarioError(f"{self.sc.file}: {key}: {msg}")

    # -- set-up

    def setup(self) -> None:
        k = self.k
        for g in self.sc.groups:
            if g.path != "/":
                try:
                    if self.sc.machine.hierarchy == "v2":
                        self.enable_memory(g.path.rsplit("/", 1)[0] or "/")
                    k.mkdir(g.path)
                except OSError as e:
                    raise self.fail(f"{g.key}.path", f"mkdir {g.path} failed: {_oserror_text(e)}") from None
            for fname, text in g.files.items():
                path = _join(g.path, fname)
                try:
                    k.write(path, text)
                except OSError as e:
                    raise self.fail(f"{g.key}.files.{quote_key(fname)}",
                                    f"writing {text!r} to {path} failed: {_oserror_text(e)}") from None
        for t in self.sc.tasks:
            try:
                self.tasks[t.name] = k.spawn(t.group)
            except OSError as e:
                raise self.fail(t.key, f"spawning a task in {t.group} failed: {_oserror_text(e)}") from None
        for ev in self.sc.events:
            try:
                self.events[ev.label] = k.event(ev.path, ev.args)
            except OSError as e:
                raise self.fail(ev.key, f"registering {ev.label!r} failed: {_oserror_text(e)}") from None
            except NotImplementedError as e:
                raise self.fail(ev.key, f"not supported by the {self.k.backend} kernel: {e}") from None
            self.event_totals[ev.label] = 0

    def enable_memory(self, parent: str) -> None:
        """cgroup v2: a group has memory files only if its parent enables the controller
        for its children (cgroup.subtree_control), so the parent of each declared group
        gets "+memory" first (a no-op where it is on already, as on the root)."""
        path = _join(parent, "cgroup.subtree_control")
        if "memory" not in self.k.read(path).split():
            self.k.write(path, "+memory")

    # -- the timeline

    def play(self, settle: bool) -> None:
        """Every tick: its steps in order, then one tick of time, then a sample.  With
        `settle`, the kernel settles after the last tick, before the last sample.

        The TCP figures (the connections' and the groups' memory.kmem.tcp.* files) are
        taken before the settle: they never lag (sock_getsockopt, tcp_get_info and the
        tcpmem page counter are read as they are), and while a real kernel settles
        (seconds of real time) its TCP timers go on retransmitting, probing and
        acknowledging, whereas the simulated kernel settles without time passing."""
        steps = self.sc.steps
        pos = 0
        for tick in range(self.sc.ticks):
            while pos < len(steps) and steps[pos].at == tick:
                self.do(steps[pos])
                pos += 1
            self.k.advance(1)
            if settle and tick == self.sc.ticks - 1:
                if self.has_sockets:
                    self.tcp_final = self.tcp_files(), self.final_sockets()
                self.k.settle()
            self.sample(tick)
            self.fire_events(tick)

    def poll_events(self) -> None:
        """Add every event's count to its total; the events counted now are remembered
        for fire_events."""
        for label, ev in self.events.items():
            n = ev.count()
            self.event_totals[label] += n
            if n:
                self.fired.add(label)

    def fire_events(self, tick: int) -> None:
        """The `on_fire` writes of each event counted since the last tick: user space woken
        by the notification acts on it (kernel errors are outcomes, as a step's)."""
        for spec in self.sc.events:
            if spec.label not in self.fired or not spec.on_fire:
                continue
            for path, text in spec.on_fire:
                try:
                    self.k.write(path, text)
                    self.actions.append({"tick": tick, "event": spec.label, "write": path, "text": text})
                except OSError as e:
                    self.errors.append({"tick": tick, "step": f"{spec.key}.on_fire", "action": "write",
                                        "task": None, "error": f"write {text!r} to {path}: {_oserror_text(e)}"})
        self.fired.clear()

    def sample(self, tick: int) -> None:
        self.poll_events()
        s = self.series
        s["tick"].append(tick)
        for g in self.sc.groups:
            row = s["groups"][g.path]
            v2 = self.sc.machine.hierarchy == "v2"
            try:
                usage = int(self.k.read(_join(g.path, "memory.current" if v2 else "memory.usage_in_bytes")))
                stat = parse.parse_stat(self.k.read(_join(g.path, "memory.stat")))
            except (OSError, ValueError):
                usage, stat = 0, {}
            row["usage"].append(usage)
            # v2's memory.stat names them file and anon (VMKernel shows v1's keys)
            row["cache"].append(stat.get("cache", stat.get("file", 0)))
            row["rss"].append(stat.get("rss", stat.get("anon", 0)))
        for label in self.events:
            s["events"][label].append(self.event_totals[label])
        if self.has_sockets:
            self.sample_tcp()

    def socket_figures(self, name: str) -> dict[str, Any]:
        """SOCKET_FIELDS of a connection; None where the kernel object cannot tell."""
        sent, read = self.socket_bytes[name]
        out: dict[str, Any] = {f: None for f in SOCKET_FIELDS}
        out.update(sent=sent, read=read, buffered=sent - read)
        figures = self.sockets[name].info()
        for f in ("drops", "window", "sndbuf", "rcvbuf"):
            out[f] = figures.get(f)
        if "pressure" in figures:
            out["pressure"] = 1 if figures["pressure"] else 0
        return out

    def sample_tcp(self) -> None:
        """Per group: its TCP counter (memory.kmem.tcp.usage_in_bytes) and the sums over
        the connections its tasks opened: bytes sent, bytes buffered (sent, not yet
        read), drops, the receivers' windows, and 1 while any of them is under memory
        pressure.  None where the kernel object cannot tell."""
        figures = {name: self.socket_figures(name) for name in self.sockets}
        for g in self.sc.groups:
            row = self.series["groups"][g.path]
            try:
                usage = int(self.k.read(_join(g.path, "memory.kmem.tcp.usage_in_bytes")))
            except (OSError, ValueError):
                usage = None
            mine = [f for name, f in figures.items() if self.socket_groups[name] == g.path]

            def total(field: str):
                vals = [f[field] for f in mine]
                return None if any(v is None for v in vals) else sum(vals)
            pressure = total("pressure")
            row["tcp_usage"].append(usage)
            row["tcp_sent"].append(total("sent"))
            row["tcp_buffered"].append(total("buffered"))
            row["tcp_drops"].append(total("drops"))
            row["tcp_window"].append(total("window"))
            row["tcp_pressure"].append(None if pressure is None else min(1, pressure))

    def note(self, step: Step, msg: str, refs: list[str] | None = None) -> None:
        entry = {"tick": step.at, "step": step.key, "action": step.action,
                 "task": step.task, "error": msg}
        if refs:
            entry["refs"] = refs   # the figures the failed step read
        self.errors.append(entry)

    def refs(self, *targets: str) -> list[str]:
        """The figures behind targets: a "$name" stands for the target it was recorded from."""
        return [self.recorded_from.get(t[1:], t) if t.startswith("$") else t for t in targets]

    def do(self, step: Step) -> None:
        a = step.action
        try:
            if a == "advance":
                self.k.advance(step.arg)
            elif a == "write":
                for path, text in step.arg:
                    try:
                        self.k.write(path, text)
                    except OSError as e:
                        self.note(step, f"write {text!r} to {path}: {_oserror_text(e)}")
            elif a == "expect":
                self.poll_events()
                for ex in step.arg:
                    self.check(step, ex)
            elif a == "record":
                self.poll_events()
                for var, target in step.arg:
                    self.recorded_from[var] = self.refs(target)[0]
                    try:
                        self.recorded[var] = self.value(target)
                    except LookupError as e:
                        self.note(step, f"record {var}: {e}", self.refs(target))
            elif a == "mkdir":
                self.k.mkdir(step.arg)
            elif a == "rmdir":
                self.k.rmdir(step.arg)
            else:
                self.task_action(step)
        except OSError as e:
            self.note(step, _oserror_text(e))
        except NotImplementedError as e:
            self.note(step, f"not supported by the {self.k.backend} kernel: {e}")

    def task_action(self, step: Step) -> None:
        t = self.tasks[step.task] if step.task in self.tasks else None
        if t is None:
            self.note(step, f"skipped: task {step.task} does not exist (its fork failed)")
            return
        state = t.state
        if state in ("exited", "oom_killed"):
            self.note(step, f"skipped: task {step.task} is {state}")
            return
        a = step.action
        if a == "touch_anon":
            t.touch_anon(step.size, locked=step.locked)
        elif a == "free_anon":
            t.free_anon(step.size)
        elif a == "write_anon":
            t.write_anon(step.size)
        elif a == "touch_shm":
            t.touch_shm(step.arg, step.size)
        elif a == "read_file":
            t.read_file(step.arg, step.size)
        elif a == "write_file":
            t.write_file(step.arg, step.size)
        elif a == "unlink":
            t.unlink(step.arg)
        elif a == "fork":
            self.tasks[step.arg] = t.fork()
            self.task_groups[step.arg] = self.task_groups[step.task]
        elif a == "mkdirs":
            if step.fs is None:
                t.mkdirs(step.arg)
            else:
                t.mkdirs(step.arg, fs=step.fs)
        elif a == "create_files":
            t.create_files(step.arg, fs=step.fs or "ext4")
        elif a == "move":
            t.move(step.arg)
            self.task_groups[step.task] = step.arg
        elif a == "cache_put":
            cache = self.caches.get(step.task)
            if cache is None:
                cache = self.caches[step.task] = ChunkCache(
                    self.k, t, self.task_groups[step.task], step.chunk or (1 << 20), step.shrinker)
            for _ in range(step.arg):
                if not cache.put(self.cache_keys):
                    break
                self.cache_keys += 1
        elif a == "connect_tcp":
            peer = self.tasks.get(step.peer)
            if peer is None or peer.state in ("exited", "oom_killed"):
                why = "does not exist" if peer is None else f"is {peer.state}"
                self.note(step, f"skipped: peer {step.peer} {why}")
                return
            self.sockets[step.arg] = t.connect_tcp(peer)
            self.socket_groups[step.arg] = self.task_groups[step.task]
            self.socket_bytes[step.arg] = [0, 0]
        elif a in ("send", "recv"):
            sock = self.sockets.get(step.arg)
            if sock is None:
                self.note(step, f"skipped: connection {step.arg} was not opened")
            elif a == "send":
                self.socket_bytes[step.arg][0] += sock.send(step.size)
            else:
                self.socket_bytes[step.arg][1] += sock.recv(step.size)
        elif a == "exit":
            t.exit()

    # -- expectations

    def value(self, target: str) -> str:
        """The current text of a target (raises OSError for an unreadable file)."""
        if target.startswith("$"):
            return self.recorded[target[1:]]
        if target.startswith("task:"):
            t = self.tasks.get(target[5:])
            return t.state if t is not None else "missing"
        if target.startswith("event:"):
            return str(self.event_totals[target[6:]])
        if target.startswith("socket:"):
            name, _, fld = target[7:].partition(":")
            if name not in self.sockets:
                raise LookupError(f"connection {name!r} was not opened")
            value = self.socket_figures(name)[fld]
            if value is None:
                raise LookupError(f"the {self.k.backend} kernel does not show {fld} of a connection")
            return str(value)
        if target.startswith("debugfs:"):
            value = self.k.debugfs().get(target[8:])
            if value is None:
                raise LookupError(f"no {target[8:]!r} in debugfs")
            return str(value)
        path, _, key = target.partition(":")
        text = self.k.read(path)
        if not key:
            return text.strip()
        for name, value in parse.key_values(text):
            if name == key:
                return value
        raise LookupError(f"no {key!r} line in {path}")

    def check(self, step: Step, ex: Expectation) -> None:
        operand = ex.operand
        why = ""
        try:
            actual = self.value(ex.target)
            if ex.op != "contains" and is_reference(ex.operand):
                operand = self.value(ex.operand)
            ok, why = _compare(actual, ex.op, operand)
        except OSError as e:
            actual, ok = f"<{_oserror_text(e)}>", False
        except LookupError as e:
            actual, ok = f"<{e}>", False
        entry = {"tick": step.at, "step": step.key, "target": ex.target, "condition": ex.condition,
                 "actual": actual, "ok": ok,
                 # the figures it reads, a "$name" by the target it was recorded from
                 "refs": self.refs(ex.target, *([ex.operand] if ex.op != "contains"
                                               and is_reference(ex.operand) else []))}
        if operand != ex.operand:
            entry["operand"] = operand
        if why:
            entry["note"] = why
        self.expectations.append(entry)

    # -- the result

    def tcp_files(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for g in self.sc.groups:
            out[g.path] = {}
            for fname in TCP_FILES:
                try:
                    out[g.path][fname] = self.k.read(_join(g.path, fname))
                except OSError:
                    continue
        return out

    def final_sockets(self) -> dict[str, dict]:
        return {name: {"group": self.socket_groups[name], **self.socket_figures(name)}
                for name in self.sockets}

    def group_files(self) -> dict[str, dict[str, str]]:
        if self.sc.machine.hierarchy == "v2" and not self.sc.mapped_from:
            names = REPORTED_FILES_V2 + (SWAP_FILES_V2 if self.sc.machine.swap_bytes > 0 else ())
        else:
            names = REPORTED_FILES + (MEMSW_FILES if self.sc.machine.swap_bytes > 0 else ())
        names += TCP_FILES if self.has_sockets else ()
        out: dict[str, dict[str, str]] = {}
        for g in self.sc.groups:
            files: dict[str, str] = {}
            for fname in names:
                try:
                    files[fname] = self.k.read(_join(g.path, fname))
                except OSError:
                    continue
            out[g.path] = files
        if self.tcp_final is not None:
            for path, files in self.tcp_final[0].items():
                out[path].update(files)
        return out

    def debugfs(self) -> dict:
        """The kernel's internal figures at the end (static keys, kmemcg ids, dying groups)."""
        try:
            return self.k.debugfs()
        except (OSError, NotImplementedError):
            return {}

    def result(self) -> dict:
        self.poll_events()
        return {
            "scenario": self.sc.name,
            "backend": self.k.backend,
            "hierarchy": self.sc.machine.hierarchy,
            **({"mapped": dict(self.k.mapped)} if self.sc.mapped_from else {}),
            "groups": self.group_files(),
            "tasks": {name: {"pid": int(t.pid), "state": t.state} for name, t in self.tasks.items()},
            "events": dict(self.event_totals),
            "series": self.series,
            "expectations": self.expectations,
            "errors": self.errors,
            **({"actions": self.actions} if any(e.on_fire for e in self.sc.events) else {}),
            "params": dict(self.sc.params),
            "ticks": self.sc.ticks,
            "debugfs": self.debugfs(),
            **({"sockets": self.tcp_final[1] if self.tcp_final is not None else self.final_sockets()}
               if self.has_sockets else {}),
        }


def _compare(actual: str, op: str, operand: str) -> tuple[bool, str]:
    if op == "contains":
        return operand in actual, ""
    try:
        a, b = parse.parse_size(actual.strip()), parse.parse_size(operand.strip())
    except ValueError:
        if op in ("==", "!="):
            return (actual.strip() == operand.strip()) == (op == "=="), ""
        return False, f"not a number: {actual!r} {op} {operand!r}"
    result = {"==": a == b, "!=": a != b, "<=": a <= b, ">=": a >= b, "<": a < b, ">": a > b}[op]
    return result, ""


def run_scenario(scenario: Scenario, kernel: Kernel, *, settle: bool = False,
                 inspect: Callable[[Kernel], None] | None = None) -> dict:
    """Play `scenario` on `kernel` and return the run's JSON-able result.

    Set-up (groups, their files, tasks, events) happens first: a rejected write there is a
    ScenarioError naming the key.  Then, for every tick, the steps of that tick run in
    order, time passes (`kernel.advance(1)`) and the groups are sampled.  A kernel error
    during the timeline is an outcome, recorded in `errors`.  `settle`: after the last
    tick the kernel settles (`kernel.settle()`), so the final figures the run reports are
    exact on a kernel whose statistics lag.  `inspect(kernel)`, if given, runs after the
    result is taken and before the kernel is closed.  The kernel is always closed.
    """
    if scenario.mapped_from == "v1":
        from .v2map import V1NamesOnV2  # late: v2map imports the model, as this module does
        kernel = V1NamesOnV2(kernel)
    try:
        run = _Run(scenario, kernel)
        run.setup()
        run.play(settle)
        result = run.result()
        if inspect is not None:
            inspect(kernel)
        return result
    finally:
        kernel.close()
