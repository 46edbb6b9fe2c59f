"""`memcg record`: run a real command in a new real memory cgroup, sample what the
kernel says of it, and write a scenario that replays it on the model.

The command runs in the group /job of a LinuxKernel (a new child of the caller's own
memory cgroup, removed afterwards on every exit path: normal end, error, Ctrl-C,
SIGTERM; see backends/linux/cleanup.py).  Every `interval` seconds a sample reads the
group's memory.stat (rss, cache, shmem, mapped_file, dirty), memory.usage_in_bytes,
memory.kmem.usage_in_bytes, memory.oom_control, its cgroup.procs, and for each process
/proc/PID/status (PPid, RssAnon, RssShmem) and /proc/PID/io (read_bytes, write_bytes,
rchar).  replay_steps() turns the samples into scenario steps: forks and exits of the
process tree, anonymous memory touched and freed per process, data read and written
through the page cache, shared memory mapped.  docs/record.md says what a sample
cannot see and how the replay stands in for it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import time
from dataclasses import dataclass, field

from . import parse
from .backends.linux import LinuxKernel, LinuxUnavailable
from .backends.linux.kernel import STAT_FLUSH_WAIT
from .scenario.loader import MAX_CPUS, MAX_MEMORY, MAX_SWAP
from .scenario.runner import REPORTED_FILES

__all__ = ["RecordError", "ProcSample", "Sample", "Recording", "record", "replay_steps",
           "scenario_toml", "run_json", "GROUP", "MIN_STEP"]

GROUP = "/job"
"""The group the command runs in, in the recording and in its replay."""

MIN_STEP = 64 << 10
"""Changes smaller than this (16 pages) wait for the next sample: the kernel's own
figures move by up to 64 pages per CPU between flushes (mm/memcontrol.c: MEMCG_CHARGE_BATCH,
the per-CPU stat batch), so smaller steps would replay noise."""

EXTRA_FILES = ("memory.kmem.usage_in_bytes", "memory.kmem.max_usage_in_bytes")
"""Reported besides runner.REPORTED_FILES: the kernel memory the command's tree used."""


class RecordError(Exception):
    """The recording could not be made; str() is one line.  Nothing is left behind."""


@dataclass
class ProcSample:
    """One process as /proc showed it in a sample."""
    ppid: int
    rss_anon: int
    rss_shmem: int
    read_bytes: int
    write_bytes: int
    rchar: int


@dataclass
class Sample:
    """What the kernel said of the group at `time` seconds after the start."""
    time: float
    stat: dict[str, int]
    usage: int
    kmem: int
    oom_kill: int
    procs: dict[int, ProcSample]


@dataclass
class Recording:
    """A finished recording: the samples, the final files and how the command ended."""
    argv: list[str]
    limit: str | None
    interval: float
    samples: list[Sample]
    files: dict[str, str]
    pid: int
    exit_status: int
    oom_killed: bool
    events: dict[str, int] = field(default_factory=dict)
    machine: dict[str, object] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The scenario's name: record-<command>, letters, digits, '-' and '_' only."""
        base = re.sub(r"[^A-Za-z0-9_-]+", "-", os.path.basename(self.argv[0])).strip("-")
        return f"record-{base or 'command'}"

    @property
    def peak(self) -> int:
        """memory.max_usage_in_bytes of the group at the end."""
        return parse.parse_int(self.files.get("memory.max_usage_in_bytes")) or 0


# --- sampling ------------------------------------------------------------------------------

def _kb_fields(text: str, names: tuple[str, ...]) -> dict[str, int]:
    """'Name:   123 kB' lines of /proc/PID/status, in bytes (plain numbers as they are)."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in names:
            f = rest.split()
            if f and f[0].isdigit():
                out[key] = int(f[0]) * (1024 if f[1:2] == ["kB"] else 1)
    return out


def _proc(pid: int) -> ProcSample | None:
    """The process's figures, None if it is gone (or went while it was read)."""
    status = _kb_fields(_read(f"/proc/{pid}/status"), ("PPid", "RssAnon", "RssShmem"))
    io = parse.parse_stat(_read(f"/proc/{pid}/io").replace(":", ""))
    if "PPid" not in status or "read_bytes" not in io:
        return None
    return ProcSample(status["PPid"], status.get("RssAnon", 0), status.get("RssShmem", 0),
                      io["read_bytes"], io["write_bytes"], io.get("rchar", 0))


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _sample(k: LinuxKernel, pids: list[int], start: float) -> Sample:
    now = time.monotonic() - start
    procs = {}
    for pid in pids:
        p = _proc(pid)
        if p is not None:
            procs[pid] = p

    def number(f: str) -> int:
        try:
            return parse.parse_int(k.read(f"{GROUP}/{f}")) or 0
        except OSError:
            return 0
    stat = parse.parse_stat(k.read(f"{GROUP}/memory.stat"))
    oom = parse.parse_stat(k.read(f"{GROUP}/memory.oom_control")).get("oom_kill", 0)
    return Sample(now, stat, number("memory.usage_in_bytes"), number("memory.kmem.usage_in_bytes"),
                  oom, procs)


def _oom_killed(k: LinuxKernel, rc: int) -> bool:
    """The command's first process died of SIGKILL and the group's OOM killer killed
    someone (v1 raises the victim's group's oom_kill: mm/memcontrol.c memcg_memory_event)."""
    if rc != -signal.SIGKILL:
        return False
    # the counter is raised just after the kill is sent (mm/oom_kill.c: __oom_kill_process),
    # so the death can be seen first: look again for a moment
    deadline = time.monotonic() + 0.2
    while parse.parse_stat(k.read(f"{GROUP}/memory.oom_control")).get("oom_kill", 0) == 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _host_machine() -> dict[str, object]:
    """This machine as a [machine] table: its RAM and swap in MiB, the CPUs it may use."""
    mem = _kb_fields(_read("/proc/meminfo"), ("MemTotal", "SwapTotal"))
    # within the largest machine the model holds (docs/scenarios.md, "Limits")
    memory = min(mem.get("MemTotal", 1 << 30), MAX_MEMORY)
    swap = min(mem.get("SwapTotal", 0), MAX_SWAP)
    return {"memory": f"{memory >> 20}M", "cpus": min(len(os.sched_getaffinity(0)), MAX_CPUS),
            "swap": f"{swap >> 20}M" if swap else "0"}


def record(argv: list[str], *, limit: str | None = None, interval: float = 0.02,
           timeout: float | None = None, stdin=None, stdout=None, stderr=None) -> Recording:
    """Run argv in a new real memory cgroup (limit: its memory.limit_in_bytes) and sample
    it every `interval` seconds until its whole process tree is gone.  The group, the
    processes and every file the backend made are removed before this returns or raises.
    Raises RecordError (one line): real cgroups unavailable, a limit the kernel refuses,
    a command that cannot start, is killed by a signal (other than the group's OOM
    killer) or runs longer than `timeout` seconds."""
    if not argv:
        raise RecordError("record: expected a command after --")
    try:
        k = LinuxKernel()
    except LinuxUnavailable as e:
        raise RecordError(f"cannot use real cgroups: {' '.join(str(e.strerror or e).split())}") from None
    try:
        return _record(k, argv, limit, interval, timeout, dict(stdin=stdin, stdout=stdout, stderr=stderr))
    finally:
        k.close()


def _record(k: LinuxKernel, argv, limit, interval, timeout, streams) -> Recording:
    k.mkdir(GROUP)
    if limit is not None:
        try:
            k.write(f"{GROUP}/memory.limit_in_bytes", limit)
        except OSError as e:
            raise RecordError(f"--limit {limit}: the kernel refused it "
                              f"({os.strerror(e.errno or 0)})") from None
    oom_event = k.event(f"{GROUP}/memory.oom_control")
    try:
        cmd = k.start_command(GROUP, argv, **streams)
    except OSError as e:
        raise RecordError(f"cannot start {argv[0]}: {e.strerror or e}") from None
    start = time.monotonic()
    samples = []
    events = 0
    while True:
        samples.append(_sample(k, cmd.pids(), start))
        events += oom_event.count()
        rc = cmd.poll()
        if rc is not None and rc < 0 and not _oom_killed(k, rc):
            cmd.kill()   # killed from outside: the recording is not the command's behaviour
            raise RecordError(f"{argv[0]} was killed by {_signal_name(-rc)}")
        if rc is not None and not cmd.pids():
            break
        if timeout is not None and time.monotonic() - start > timeout:
            cmd.kill()
            raise RecordError(f"{argv[0]} ran longer than --timeout {timeout:g} s: killed")
        time.sleep(interval)   # the sampling pace, in real time
    samples.append(_sample(k, [], start))
    oom_killed = _oom_killed(k, rc)
    # memory.stat is exact once one periodic flush has run after the command's last
    # change (mm/memcontrol.c: flush_memcg_stats_dwork, every FLUSH_TIME = 2 s)
    time.sleep(STAT_FLUSH_WAIT)
    files = {}
    for f in REPORTED_FILES + EXTRA_FILES:
        try:
            files[f] = k.read(f"{GROUP}/{f}")
        except OSError:
            continue
    events += oom_event.count()
    return Recording(list(argv), limit, interval, samples, files, cmd.pid, rc, oom_killed,
                     {f"{GROUP}/memory.oom_control": events}, _host_machine())


# --- the replay ------------------------------------------------------------------------------

@dataclass
class _Task:
    """A process of the recording as the replay sees it."""
    name: str
    pid: int
    last: ProcSample
    anon: int = 0             # anonymous memory the replay has touched for it
    # of the anonymous memory other tasks' `anon` counts, what it maps too: what its
    # parent mapped when it forked it (shared copy-on-write)
    shared: int = 0
    children: list = field(default_factory=list)
    state: str = "running"
    read_io: int = 0          # read_bytes / write_bytes not yet replayed
    write_io: int = 0


def _page_down(n: int) -> int:
    return n // 4096 * 4096


def _split(amount: int, weights: dict[str, int]) -> dict[str, int]:
    """amount in whole pages over the names, proportionally to the weights; the
    remainder to the heaviest."""
    total = sum(weights.values())
    if amount <= 0 or total <= 0:
        return {}
    out = {n: _page_down(amount * w // total) for n, w in weights.items() if w > 0}
    heaviest = max(weights, key=lambda n: weights[n])
    out[heaviest] = out.get(heaviest, 0) + _page_down(amount) - sum(out.values())
    return {n: v for n, v in out.items() if v > 0}


def _hand_down(t: _Task, alive: list[_Task]) -> None:
    """t exits in the replay: the pages it touched that a live child still maps stay
    mapped (and charged) there, so the child with the largest share now counts them."""
    heirs = [c for c in t.children if c in alive and c.shared]
    if not heirs or not t.anon:
        return
    c = max(heirs, key=lambda c: c.shared)
    kept = min(t.anon, c.shared)
    c.anon += kept
    c.shared -= kept
    t.anon -= kept


def replay_steps(rec: Recording) -> tuple[list[dict], dict[str, dict]]:
    """The [[step]] tables that replay the recording (in order, `at` in seconds, one
    model tick being one second) and its tasks, {name: {"pid", "state"}} with the state
    the kernel showed."""
    steps: list[dict] = []
    tasks: dict[int, _Task] = {}
    order: list[_Task] = []
    alive: list[_Task] = []
    file_emitted = io_total = file_high = shm_emitted = 0
    seq = {"r": 0, "w": 0, "s": 0}
    matched = 0
    orphans: set[int] = set()

    def add(at: int, **step) -> None:
        steps.append({"at": at, **step})

    def heir(ppid: int) -> _Task | None:
        p = tasks.get(ppid)
        if p is not None and p in alive:
            return p
        return alive[0] if alive else None

    for index, s in enumerate(rec.samples):
        at = int(s.time)
        # forks: a new process is a child of its parent (or of the oldest live one)
        live = {t.pid for t in alive}
        for pid in sorted(s.procs):
            if pid in live:
                continue
            p = s.procs[pid]
            # /proc/PID/io starts at 0 in a new process; its RssAnon counts the pages
            # it shares copy-on-write with its parent, which are charged once
            if not order:
                t = _Task("cmd", pid, ProcSample(p.ppid, 0, 0, 0, 0, 0))
            else:
                if pid in orphans:
                    continue
                parent = heir(p.ppid)
                if parent is None:
                    orphans.add(pid)   # no live process to fork it from: the replay cannot make it
                    continue
                t = _Task(f"cmd-{len(order)}", pid,
                          ProcSample(p.ppid, min(p.rss_anon, parent.last.rss_anon), 0, 0, 0, 0),
                          shared=parent.anon + parent.shared)
                parent.children.append(t)
                add(at, task=parent.name, fork=t.name)
            tasks[pid] = t
            order.append(t)
            alive.append(t)
        # exits: the model frees an exiting task's memory
        gone = [t for t in alive if t.pid not in s.procs]
        # OOM kills: the counter can be read raised in the sample before its victim
        # is gone from cgroup.procs, so a process gone now may be matched to kills
        # counted up to the next sample; one stays for the first process while it
        # lives, if it was a victim
        main = tasks.get(rec.pid)
        if rec.oom_killed and main in gone:
            main.state = "oom_killed"
            matched += 1
        reserve = 1 if rec.oom_killed and main is not None and main not in gone and main.state == "running" else 0
        counted = rec.samples[min(index + 1, len(rec.samples) - 1)].oom_kill
        for t in sorted(gone, key=lambda t: -t.last.rss_anon):
            if t is main:
                t.state = "oom_killed" if rec.oom_killed else "exited"
            elif counted - matched - reserve > 0:
                t.state = "oom_killed"
                matched += 1
            else:
                t.state = "exited"
        for t in gone:
            alive.remove(t)
            add(at, task=t.name, exit=True)
            _hand_down(t, alive)
        # page cache: what was brought in is at least what io says and what is cached
        for t in alive:
            p = s.procs[t.pid]
            t.read_io += max(0, p.read_bytes - t.last.read_bytes)
            t.write_io += max(0, p.write_bytes - t.last.write_bytes)
            io_total += max(0, p.read_bytes - t.last.read_bytes) + max(0, p.write_bytes - t.last.write_bytes)
        file_now = s.stat.get("cache", 0) - s.stat.get("shmem", 0)
        file_high = max(file_high, file_now)
        todo = max(io_total, file_high) - file_emitted
        if todo >= MIN_STEP and alive:
            weights = {}
            for t in alive:
                weights[t.name + " r"] = t.read_io
                weights[t.name + " w"] = t.write_io
            if not any(weights.values()):
                busiest = max(alive, key=lambda t: s.procs[t.pid].rchar - t.last.rchar)
                weights = {busiest.name + " r": 1}
            for key, n in _split(todo, weights).items():
                name, kind = key.split(" ")
                verb = "read_file" if kind == "r" else "write_file"
                add(at, task=name, **{verb: f"{kind}{seq[kind]}"}, size=n)
                seq[kind] += 1
                file_emitted += n
            for t in alive:
                t.read_io = t.write_io = 0
        # shared memory: each growth is a new tmpfs object mapped by the task whose
        # RssShmem grew most
        shm = s.stat.get("shmem", 0)
        if shm - shm_emitted >= MIN_STEP and alive:
            t = max(alive, key=lambda t: s.procs[t.pid].rss_shmem - t.last.rss_shmem)
            n = _page_down(shm - shm_emitted)
            add(at, task=t.name, touch_shm=f"s{seq['s']}", size=n)
            seq["s"] += 1
            shm_emitted += n
        # anonymous memory: the group's rss, spread over the processes whose RssAnon moved
        d = s.stat.get("rss", 0) - sum(t.anon for t in alive)
        if d >= MIN_STEP and alive:
            w = {t.name: max(0, s.procs[t.pid].rss_anon - t.last.rss_anon) for t in alive}
            if not any(w.values()):
                w = {max(alive, key=lambda t: s.procs[t.pid].rss_anon).name: 1}
            for name, n in _split(d, w).items():
                add(at, task=name, touch_anon=n)
                next(t for t in alive if t.name == name).anon += n
        elif d <= -MIN_STEP and alive:
            # from the processes whose RssAnon shrank first, then from the largest
            w = {t.name: min(t.anon, max(0, t.last.rss_anon - s.procs[t.pid].rss_anon)) for t in alive}
            shares = _split(-d, w)
            order_free = sorted(alive, key=lambda t: (t.name not in shares, -t.anon))
            for t in order_free + sorted(alive, key=lambda t: -t.anon):
                n = min(t.anon, shares.pop(t.name, 0) or -d, _page_down(-d))
                if n > 0:
                    add(at, task=t.name, free_anon=n)
                    t.anon -= n
                    d += n
        for t in alive:
            t.last = s.procs[t.pid]
    return _coalesce(steps), {t.name: {"pid": t.pid, "state": t.state} for t in order}


_SIZED = {"touch_anon": None, "free_anon": None, "read_file": "size", "write_file": "size",
          "touch_shm": "size"}


def _coalesce(steps: list[dict]) -> list[dict]:
    """Adjacent steps of one task in one tick doing the same kind of thing become one:
    the model runs a tick's steps back to back, so the sum is the same work, and a long
    recording stays a file the scenario loader takes (at most 4 MiB)."""
    out: list[dict] = []
    for st in steps:
        verb = next((v for v in _SIZED if v in st), None)
        prev = out[-1] if out else None
        if (verb is not None and prev is not None and verb in prev
                and prev["at"] == st["at"] and prev["task"] == st["task"]):
            size_key = _SIZED[verb] or verb
            prev[size_key] += st[size_key]
            continue
        out.append(dict(st))
    return out


# --- output ---------------------------------------------------------------------------------

def _toml_string(text: str) -> str:
    """A TOML basic string whose braces are literal in a scenario ({{ and }})."""
    return json.dumps(text.replace("{", "{{").replace("}", "}}"))


def _toml_value(v) -> str:
    if v is True:
        return "true"
    if isinstance(v, int):
        return str(v)
    return _toml_string(v)


def scenario_toml(rec: Recording) -> str:
    """The scenario that replays the recording, `limit` a [params] entry whose default is
    the recorded setting ("-1": none)."""
    steps, _ = replay_steps(rec)
    last = max((s["at"] for s in steps), default=0)
    duration = rec.samples[-1].time if rec.samples else 0.0
    lines = [
        f"name = {_toml_string(rec.name)}",
        "description = " + _toml_string(
            f"Recorded on real cgroups: {shlex.join(rec.argv)}. {len(rec.samples)} samples "
            f"every {rec.interval:g} s over {duration:.2f} s, peak {rec.peak} bytes, replayed as "
            "steps of its processes (one tick per second)."),
        f"ticks = {last + 1}",
        "",
        "[machine]",
        f"memory = {_toml_string(str(rec.machine.get('memory', '1G')))}",
        f"cpus = {int(rec.machine.get('cpus', 1))}",
        f"swap = {_toml_string(str(rec.machine.get('swap', '0')))}",
        "",
        "[params]",
        f"limit = {_toml_string(rec.limit if rec.limit is not None else '-1')}   "
        "# the recorded memory.limit_in_bytes",
        "",
        "[[group]]",
        f"path = {_toml_string(GROUP)}",
        'files = { "memory.limit_in_bytes" = "{limit}" }',
        "",
        "[[task]]",
        'name = "cmd"',
        f"group = {_toml_string(GROUP)}",
        "",
        "[[event]]",
        f"path = {_toml_string(GROUP + '/memory.oom_control')}",
    ]
    for st in steps:
        lines += ["", "[[step]]"] + [f"{k} = {_toml_value(v)}" for k, v in st.items()]
    return "\n".join(lines) + "\n"


def run_json(rec: Recording) -> dict:
    """The real run in the JSON shape of `memcg run` (backend "linux"), the task names
    those of the replay, plus the recording's own figures under "recording"."""
    _, tasks = replay_steps(rec)
    series_names = ("usage", "cache", "rss", "shmem", "mapped_file", "dirty", "kmem")

    def figure(s: Sample, name: str) -> int:
        return s.usage if name == "usage" else s.kmem if name == "kmem" else s.stat.get(name, 0)
    return {
        "scenario": rec.name,
        "backend": "linux",
        "groups": {GROUP: dict(rec.files)},
        "tasks": tasks,
        "events": dict(rec.events),
        "series": {
            "tick": [int(s.time) for s in rec.samples],
            "time": [round(s.time, 4) for s in rec.samples],
            "groups": {GROUP: {n: [figure(s, n) for s in rec.samples] for n in series_names}},
            "events": {},
        },
        "expectations": [],
        "errors": [],
        "params": {"limit": rec.limit if rec.limit is not None else "-1"},
        "ticks": max((int(s.time) for s in rec.samples), default=0) + 1,
        "recording": {"command": list(rec.argv), "interval": rec.interval,
                      "samples": len(rec.samples), "exit_status": rec.exit_status,
                      "oom_killed": rec.oom_killed},
    }
