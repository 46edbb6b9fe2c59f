"""`memcg fuzz`: seeded random workloads on the model and on a real kernel, op by op.

A workload is a list of ops generated from a seed (`generate`), so a seed is its own
reproduction.  `run_ops` applies each op to one kernel through the `Kernel` interface
and records what it observed after it: the op's errno, every task's state, each
group's OOM kills, whether failcnt (memory and memsw) is zero, whether each registered
event fired, and the byte figures (usage, rss, cache).  `classify` sets the model's
record against the real one and calls every outcome agree, disagree, or - when the
real side was run twice and the two real runs differ - unstable.

Discrete outcomes are compared exactly.  Byte figures agree within a tolerance that
comes from the kernel (byte_tolerances): each side may hold up to MEMCG_CHARGE_BATCH
pages per CPU precharged in its stock, memory.stat is flushed from per-CPU caches
lazily (up to a batch per CPU behind), and on 6.18 ext4 page-cache reads are charged
in readahead folios of up to 2 MiB (mm/readahead.c, filemap_add_folio).
"""

from __future__ import annotations

import errno
import json
import random
import select
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .kernel import PAGE_SIZE, Kernel

__all__ = ["Op", "Outcome", "SeedResult", "byte_tolerances", "generate", "run_ops",
           "classify", "fuzz_seed", "summarize", "format_ops", "format_result",
           "format_summary", "replay_command", "write_json", "byte_tolerances"]

KiB, MiB = 1 << 10, 1 << 20
MEMCG_CHARGE_BATCH = 64   # include/linux/memcontrol.h: pages per CPU stock refill (6.1+)
FOLIO_MAX = 2 * MiB       # mm/readahead.c: the largest readahead folio (PMD order) on ext4, 6.18

# What `memcg fuzz` accepts: each seed is a few seconds on real cgroups, so 100,000 seeds
# are days of work; a workload of 10,000 ops is minutes on each kernel.  The seed is
# handed to random.Random, any integer works; 2^63 - 1 keeps it a C long.
MAX_SEEDS = 100_000
MAX_OPS = 10_000
MAX_START = 2**63 - 1

GROUPS = ["/a", "/b", "/a/c"]
FILES = ["f0", "f1", "f2"]
SHMS = ["s0", "s1"]
LIMITS = ["8M", "16M", "24M", "32M", "64M", "-1"]
PRESSURE_ARGS = ["low", "medium", "critical", "low,hierarchy", "low,local"]
THRESHOLDS = ["4M", "8M", "16M", "32M"]

# op kind -> weight in the generator
KINDS = {"limit": 3, "memsw": 1, "spawn": 3, "anon": 5, "free": 2, "shm": 2, "read": 4,
         "write": 2, "fork": 1, "mkdirs": 1, "move": 2, "exit": 1, "mkdir": 1, "rmdir": 1,
         "threshold": 1, "pressure": 1, "advance": 2}

# write_anon comes from a stream of its own (random.Random(f"write_anon {seed}")), drawn
# after each op once some task has forked: with this chance a parent or a child writes
# part of the range it shares copy-on-write (mm/memory.c: do_wp_page), so the copies are
# charged to the writer's group.  The other ops keep the draws they had before it existed.
WRITE_ANON_CHANCE = 0.3
WRITE_ANON_SIZES = [1, 2, 4, 8]


@dataclass(frozen=True)
class Op:
    """One step of a workload.  task: the number of the spawn (or fork) that made the
    task it acts on; group, size (bytes or a limit text), name, arg as the kind needs."""

    kind: str
    task: int = -1
    group: str = ""
    size: int = 0
    text: str = ""

    def describe(self) -> str:
        parts = [self.kind]
        if self.task >= 0:
            parts.append(f"t{self.task}")
        if self.group:
            parts.append(self.group)
        if self.kind == "fork":
            parts.append(f"-> t{self.size}")
        elif self.kind in ("mkdirs", "advance"):
            parts.append(str(self.size))
        elif self.size:
            parts.append(f"{self.size // KiB}K" if self.size % MiB else f"{self.size // MiB}M")
        if self.text:
            parts.append(self.text)
        return " ".join(parts)


def generate(seed: int, n: int) -> list[Op]:
    """A workload of n ops, the same for the same seed (random.Random(seed) alone).

    It starts with /a and /b made and one task in /a; task numbers refer to the
    spawns and forks generated before the op (whether they succeed is the kernels'
    business).  Forked children are only moved, exited or made to write_anon: on a real
    kernel the child of a Python worker copies-on-write its interpreter's heap when it
    runs Python code, and write_anon it does without.  The write_anon ops are drawn from
    a second stream, so the other ops of a seed are those it had without them, in the
    same order (the list is cut at n, so the last few fall off)."""
    rng = random.Random(seed)
    wrng = random.Random(f"write_anon {seed}")
    sharers: list[int] = []     # forked, and forks: they share anonymous pages
    ops = [Op("mkdir", group="/a"), Op("mkdir", group="/b"), Op("spawn", group="/a", task=0)]
    tasks = [0]                 # task numbers that may run commands
    children: list[int] = []    # forked: move and exit only
    next_task = 1
    kinds = list(KINDS)
    weights = [KINDS[k] for k in kinds]
    while len(ops) < n:
        kind = rng.choices(kinds, weights)[0]
        g = rng.choice(GROUPS)
        t = rng.choice(tasks)
        if kind == "limit":
            ops.append(Op(kind, group=g, text=rng.choice(LIMITS)))
        elif kind == "memsw":
            ops.append(Op(kind, group=g, text=rng.choice(LIMITS)))
        elif kind == "spawn":
            ops.append(Op(kind, group=g, task=next_task))
            tasks.append(next_task)
            next_task += 1
        elif kind == "anon":
            ops.append(Op(kind, task=t, size=rng.choice([1, 2, 4, 8, 12, 16]) * MiB))
        elif kind == "free":
            ops.append(Op(kind, task=t, size=rng.choice([1, 4, 8]) * MiB))
        elif kind == "shm":
            ops.append(Op(kind, task=t, text=rng.choice(SHMS), size=rng.choice([1, 4, 8]) * MiB))
        elif kind in ("read", "write"):
            ops.append(Op(kind, task=t, text=rng.choice(FILES), size=rng.choice([1, 4, 8, 16, 32]) * MiB))
        elif kind == "fork":
            ops.append(Op(kind, task=t, size=next_task))
            children.append(next_task)
            sharers += [n for n in (t, next_task) if n not in sharers]
            next_task += 1
        elif kind == "mkdirs":
            ops.append(Op(kind, task=t, size=rng.choice([16, 64, 256])))
        elif kind in ("move", "exit"):
            who = rng.choice(tasks + children)
            ops.append(Op(kind, task=who, group=g if kind == "move" else ""))
        elif kind in ("mkdir", "rmdir"):
            ops.append(Op(kind, group=g))
        elif kind == "threshold":
            ops.append(Op(kind, group=g, text=rng.choice(THRESHOLDS)))
        elif kind == "pressure":
            ops.append(Op(kind, group=g, text=rng.choice(PRESSURE_ARGS)))
        else:
            ops.append(Op("advance", size=rng.choice([1, 2, 5])))
        if sharers and len(ops) < n and wrng.random() < WRITE_ANON_CHANCE:
            ops.append(Op("write_anon", task=wrng.choice(sharers), size=wrng.choice(WRITE_ANON_SIZES) * MiB))
    return ops


@dataclass
class Outcome:
    """What one kernel showed after one op: discrete figures and byte figures by name."""

    discrete: dict[str, Any] = field(default_factory=dict)
    bytes: dict[str, int | None] = field(default_factory=dict)


def _errname(e: OSError) -> str:
    return errno.errorcode.get(e.errno or 0, str(e.errno))


def _stat(k: Kernel, g: str) -> dict[str, int]:
    out = {}
    for line in k.read(f"{g}/memory.stat").splitlines():
        key, _, v = line.partition(" ")
        out[key] = int(v)
    return out


def _drain(k: Kernel, events: list) -> list[int]:
    """Each event's count since the last op.  The model has signalled everything by
    now; a real kernel signals vmpressure from a work item (vmpressure_work_fn) and a
    removed group's events from its offline work, so there the counts are collected
    until none has changed for 50 ms (at most 1 s)."""
    got = [ev.count() for ev in events]
    if k.backend == "sim" or not events:
        return got
    deadline = time.monotonic() + 1.0
    quiet = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet < 0.05:
        select.select([ev.fileno() for ev in events], [], [], 0.01)
        for i, ev in enumerate(events):
            n = ev.count()
            if n:
                got[i] += n
                quiet = time.monotonic()
    return got


def _apply(k: Kernel, op: Op, tasks: dict, events: list, labels: list) -> str | None:
    """Run one op; its result: None, an errno name, or "skip: <why>"."""
    if op.kind in ("anon", "free", "write_anon", "shm", "read", "write", "fork", "mkdirs", "move",
                   "exit"):
        t = tasks.get(op.task)
        if t is None:
            return "skip: no task"
        if t.state != "running":
            return f"skip: {t.state}"
    try:
        if op.kind == "limit":
            k.write(f"{op.group}/memory.limit_in_bytes", op.text)
        elif op.kind == "memsw":
            k.write(f"{op.group}/memory.memsw.limit_in_bytes", op.text)
        elif op.kind == "spawn":
            tasks[op.task] = k.spawn(op.group)
        elif op.kind == "anon":
            t.touch_anon(op.size)
        elif op.kind == "free":
            t.free_anon(op.size)
        elif op.kind == "write_anon":
            t.write_anon(op.size)
        elif op.kind == "shm":
            t.touch_shm(op.text, op.size)
        elif op.kind == "read":
            t.read_file(op.text, op.size)
        elif op.kind == "write":
            t.write_file(op.text, op.size)
        elif op.kind == "fork":
            tasks[op.size] = t.fork()
        elif op.kind == "mkdirs":
            t.mkdirs(op.size)
        elif op.kind == "move":
            t.move(op.group)
        elif op.kind == "exit":
            t.exit()
        elif op.kind == "mkdir":
            k.mkdir(op.group)
        elif op.kind == "rmdir":
            k.rmdir(op.group)
        elif op.kind == "threshold":
            events.append(k.event(f"{op.group}/memory.usage_in_bytes", op.text))
            labels.append(f"{op.group} usage {op.text}")
        elif op.kind == "pressure":
            events.append(k.event(f"{op.group}/memory.pressure_level", op.text))
            labels.append(f"{op.group} pressure {op.text}")
        elif op.kind == "advance":
            k.advance(op.size)
    except OSError as e:
        return _errname(e)
    return None


def _observe(k: Kernel, result: str | None, tasks: dict, events: list, labels: list) -> Outcome:
    out = Outcome()
    out.discrete["result"] = result
    for n in sorted(tasks):
        out.discrete[f"t{n} state"] = tasks[n].state
    for label, n in zip(labels, _drain(k, events)):
        out.discrete[f"event {label} fired"] = n > 0
    for g in GROUPS:
        try:
            oom = dict(ln.split() for ln in k.read(f"{g}/memory.oom_control").splitlines())
        except OSError as e:
            out.discrete[f"{g} exists"] = _errname(e)
            continue
        out.discrete[f"{g} oom_kill"] = int(oom["oom_kill"])
        out.discrete[f"{g} under_oom"] = int(oom["under_oom"])
        out.discrete[f"{g} failcnt>0"] = int(k.read(f"{g}/memory.failcnt")) > 0
        out.discrete[f"{g} memsw.failcnt>0"] = int(k.read(f"{g}/memory.memsw.failcnt")) > 0
        s = _stat(k, g)
        out.bytes[f"{g} usage"] = int(k.read(f"{g}/memory.usage_in_bytes"))
        out.bytes[f"{g} rss"] = s["rss"]
        out.bytes[f"{g} cache"] = s["cache"]
    return out


def run_ops(k: Kernel, ops: list[Op]) -> list[Outcome]:
    """Apply the ops to k in order; one Outcome per op.  Leaves the kernel to the caller
    to close (its tasks and events go with it)."""
    tasks: dict[int, Any] = {}
    events: list = []
    labels: list[str] = []
    return [_observe(k, _apply(k, op, tasks, events, labels), tasks, events, labels) for op in ops]


def _usage_slack(cpus: int) -> int:
    # both kernels may hold a stock of MEMCG_CHARGE_BATCH pages per CPU (mm/memcontrol.c:
    # consume_stock / refill_stock), plus one readahead folio at the limit
    return 2 * MEMCG_CHARGE_BATCH * cpus * PAGE_SIZE + FOLIO_MAX


def _stat_slack(cpus: int) -> int:
    # memory.stat on the real side is up to a batch per CPU behind (mm/memcontrol.c:
    # memcg_rstat_updated flushes when MEMCG_CHARGE_BATCH * cpus updates are pending)
    return MEMCG_CHARGE_BATCH * cpus * PAGE_SIZE


@dataclass(frozen=True)
class ByteTolerance:
    """|a - b| <= abs + rel * max(a, b)."""

    abs: int
    rel: float
    why: str

    def agree(self, a: int | None, b: int | None) -> bool:
        if a is None or b is None:
            return a == b
        return abs(a - b) <= self.abs + self.rel * max(abs(a), abs(b))


def byte_tolerances(cpus: int = 2) -> dict[str, ByteTolerance]:
    """The tolerance of each byte figure on a machine of `cpus` CPUs."""
    return {
        "usage": ByteTolerance(_usage_slack(cpus) + 1 * MiB, 0.05,
                               "per-CPU stocks on both sides, a 2 MiB folio, kmem the model "
                               "does not charge (page tables, ext4 metadata)"),
        "rss": ByteTolerance(_stat_slack(cpus) + 512 * KiB, 0.02,
                             "per-CPU statistics, the worker's own heap pages"),
        "cache": ByteTolerance(_stat_slack(cpus) + FOLIO_MAX, 0.05,
                               "per-CPU statistics, readahead folios of up to 2 MiB"),
    }


@dataclass
class SeedResult:
    """One seed's comparison: rows of (op index, figure, sim, real, verdict)."""

    seed: int
    ops: list[Op]
    rows: list[tuple[int, str, Any, Any, str]] = field(default_factory=list)

    def counts(self, discrete: bool = True) -> dict[str, int]:
        """agree / disagree / unstable counts of the discrete (or byte) rows."""
        out = {"agree": 0, "disagree": 0, "unstable": 0}
        for _, what, _, _, verdict in self.rows:
            if _is_discrete(what) == discrete:
                out[verdict] += 1
        return out


def _is_discrete(what: str) -> bool:
    return not what.startswith("bytes ")


def classify(seed: int, ops: list[Op], sim: list[Outcome], real: list[Outcome],
             real2: list[Outcome] | None = None, cpus: int = 2) -> SeedResult:
    """Set the model's outcomes against the real ones, op by op.  A figure both real runs
    did not show alike (real2, when given) is unstable whatever the model says."""
    tol = byte_tolerances(cpus)
    res = SeedResult(seed, ops)
    for i, (s, r) in enumerate(zip(sim, real)):
        r2 = real2[i] if real2 is not None else None
        for key in dict.fromkeys(list(s.discrete) + list(r.discrete)):
            a, b = s.discrete.get(key), r.discrete.get(key)
            if r2 is not None and r2.discrete.get(key) != b:
                verdict = "unstable"
            else:
                verdict = "agree" if a == b else "disagree"
            res.rows.append((i, key, a, b, verdict))
        for key in dict.fromkeys(list(s.bytes) + list(r.bytes)):
            t = tol[key.rpartition(" ")[2]]
            a, b = s.bytes.get(key), r.bytes.get(key)
            if r2 is not None and not t.agree(b, r2.bytes.get(key)):
                verdict = "unstable"
            else:
                verdict = "agree" if t.agree(a, b) else "disagree"
            res.rows.append((i, f"bytes {key}", a, b, verdict))
    return res


def fuzz_seed(seed: int, n_ops: int, make_sim: Callable[[], Kernel], make_real: Callable[[], Kernel],
              repeat_real: bool = False, cpus: int = 2) -> SeedResult:
    """Generate seed's workload, run it on a fresh model and a fresh real kernel (twice
    with repeat_real), and classify.  Every kernel is closed before this returns."""
    ops = generate(seed, n_ops)
    runs = []
    for make in [make_sim, make_real] + ([make_real] if repeat_real else []):
        k = make()
        try:
            runs.append(run_ops(k, ops))
        finally:
            k.close()
    return classify(seed, ops, runs[0], runs[1], runs[2] if repeat_real else None, cpus)


def format_ops(ops: list[Op]) -> str:
    """The op list, one numbered op a line."""
    return "\n".join(f"  {i:3d}  {op.describe()}" for i, op in enumerate(ops))


def replay_command(seed: int, n_ops: int, against: str = "linux") -> str:
    """The command that replays one seed."""
    return f"memcg fuzz --seeds 1 --start {seed} --ops {n_ops} --against {against}"


def summarize(results: list[SeedResult]) -> dict:
    """Totals over seeds: discrete and byte agree/disagree/unstable, the agreement
    fraction of discrete outcomes (unstable ones left out of both sides), and the
    disagreements by figure class ("<op kind>: <figure>")."""
    total = {"discrete": {"agree": 0, "disagree": 0, "unstable": 0},
             "bytes": {"agree": 0, "disagree": 0, "unstable": 0}}
    classes: dict[str, int] = {}
    for r in results:
        for part, discrete in (("discrete", True), ("bytes", False)):
            for key, n in r.counts(discrete).items():
                total[part][key] += n
        for i, what, _, _, verdict in r.rows:
            if verdict == "disagree":
                c = f"{r.ops[i].kind}: {_figure_class(what)}"
                classes[c] = classes.get(c, 0) + 1
    d = total["discrete"]
    b = total["bytes"]
    out = {"seeds": len(results), "discrete": d, "bytes": b, "classes": classes,
           "agreement": d["agree"] / max(1, d["agree"] + d["disagree"]),
           "byte_agreement": b["agree"] / max(1, b["agree"] + b["disagree"])}
    return out


def _figure_class(what: str) -> str:
    """A figure's name without the group or task it is of ("oom_kill", "state", ...)."""
    words = what.split(" ")
    if words[0] == "bytes":
        return "bytes " + words[-1]
    if words[0] == "event":
        return "event " + words[2]
    if words[0].startswith("/"):
        return " ".join(words[1:])
    if words[0].startswith("t") and words[-1] == "state":
        return "task state"
    return what


def format_result(r: SeedResult, against: str = "linux") -> str:
    """One seed: a line of counts; for a seed with disagreements, each one, the op list
    and the command that replays it."""
    d, b = r.counts(True), r.counts(False)
    lines = [f"seed {r.seed}: discrete {d['agree']}/{d['agree'] + d['disagree']} agree"
             f"{', %d unstable' % d['unstable'] if d['unstable'] else ''}; "
             f"bytes {b['agree']}/{b['agree'] + b['disagree']} agree"
             f"{', %d unstable' % b['unstable'] if b['unstable'] else ''}"]
    bad = [row for row in r.rows if row[4] != "agree"]
    for i, what, a, c, verdict in bad:
        lines.append(f"  {verdict:9s} op {i} ({r.ops[i].describe()}): {what}: sim {a!r}, {against} {c!r}")
    if any(row[4] == "disagree" for row in bad):
        lines.append(f"  replay: {replay_command(r.seed, len(r.ops), against)}")
        lines.append(format_ops(r.ops))
    return "\n".join(lines) + "\n"


def format_summary(summary: dict) -> str:
    """The totals: discrete outcomes agreeing / total and percent, bytes likewise, and
    the disagreements by class."""
    d, b = summary["discrete"], summary["bytes"]
    lines = ["", f"seeds: {summary['seeds']}",
             f"discrete outcomes: {d['agree']} of {d['agree'] + d['disagree']} agree "
             f"({summary['agreement']:.2%}), {d['unstable']} unstable",
             f"byte figures: {b['agree']} of {b['agree'] + b['disagree']} agree "
             f"({summary['byte_agreement']:.2%}), {b['unstable']} unstable"]
    if summary["classes"]:
        lines.append("disagreements by class (op: figure):")
        for c, n in sorted(summary["classes"].items(), key=lambda kv: -kv[1]):
            lines.append(f"  {n:5d}  {c}")
    return "\n".join(lines) + "\n"


def write_json(results: list[SeedResult], summary: dict, path: str) -> None:
    """{"summary": ..., "seeds": [{"seed", "ops", "rows": [{"op", "what", "sim", "real",
    "verdict"}]}]} - rows other than "agree" only."""
    doc = {"summary": summary, "seeds": [
        {"seed": r.seed, "ops": [op.describe() for op in r.ops],
         "rows": [{"op": i, "what": w, "sim": a, "real": c, "verdict": v}
                  for i, w, a, c, v in r.rows if v != "agree"]} for r in results]}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
