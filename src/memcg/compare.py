"""`memcg compare`: one scenario on the simulated kernel and on real cgroups, side by side.

Every figure of both runs becomes a row - each group's final file values (every line
of memory.stat and memory.oom_control), each task's outcome, each event count, each
kernel error and skipped step, each expectation - with the value on both kernels and
whether they agree within a tolerance suited to the figure (TOLERANCES says which and
why).  The JSON is the design document's::

    {"rows": [{"what": str, "sim": v, "linux": v, "agree": bool, "tolerance": str}],
     "agreement": fraction}

Real workers are Python processes.  Their start-up footprint is kept out of the groups
(they start in the caller's group and are moved in once warm, see LinuxKernel.spawn),
so byte figures are compared directly; what the interpreter itself still touches after
the move (a few pages of heap, a few page faults) is inside the tolerances below.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable

from .kernel import PAGE_SIZE, Kernel
from .parse import parse_int, parse_stat
from .report import human_size
from .backends.linux.v2names import V2_STAT_KEYS
from .scenario import Scenario, ScenarioError, run_scenario

__all__ = ["Tolerance", "TOLERANCES", "tolerance_for", "compare_results", "run_compare",
           "format_table", "environment_notes", "write_json"]

MEMCG_CHARGE_BATCH = 64   # mm/memcontrol.c: pages precharged per CPU stock refill
KiB, MiB = 1 << 10, 1 << 20


@dataclass(frozen=True)
class Tolerance:
    """How close two values must be to agree.

    kind "exact": equal; "near": |sim - linux| <= abs + rel * max(|sim|, |linux|);
    "both": both zero or both non-zero; "order": both zero, or both non-zero within a
    factor of `rel`; "machine": equal, or both at least `abs` (the machine's memory: a
    limit that large is no limit on that machine).
    """

    kind: str
    abs: int = 0
    rel: float = 0.0
    why: str = ""

    def agree(self, a: Any, b: Any) -> bool:
        if self.kind == "exact" or not (isinstance(a, int) and isinstance(b, int)) \
                or isinstance(a, bool) or isinstance(b, bool):
            return type(a) is type(b) and a == b
        if self.kind == "both":
            return (a == 0) == (b == 0)
        if self.kind == "machine":
            return a == b or (a >= self.abs and b >= self.abs)
        if self.kind == "order":
            if a == 0 or b == 0:
                return a == b
            return max(a, b) <= self.rel * min(a, b)
        return abs(a - b) <= self.abs + self.rel * max(abs(a), abs(b))

    def describe(self, in_bytes: bool) -> str:
        if self.kind == "exact":
            return "exact"
        if self.kind == "both":
            return "both 0 or both >0"
        if self.kind == "machine":
            return f"exact (>= {human_size(self.abs)}: no limit)"
        if self.kind == "order":
            return f"within x{self.rel:g}"
        a = human_size(self.abs) if in_bytes else str(self.abs)
        return f"±{a}+{self.rel:.0%}" if self.rel else f"±{a}"


def _stock_slack(cpus: int) -> int:
    """Per-CPU charge stocks: each kernel may hold up to a batch per CPU precharged."""
    return MEMCG_CHARGE_BATCH * PAGE_SIZE * max(1, cpus)


EXACT = Tolerance("exact", why="a setting, a counter of rare events, or an outcome")
# Figures of anonymous and shmem memory: exact in pages, except for the interpreter's
# own heap pages touched after the move and pages still in a per-CPU LRU batch.
ANON = Tolerance("near", 512 * KiB, 0.02, "the worker's own heap pages after the move")
# Page cache: the real kernel charges and reclaims file pages in large folios
# (readahead), so a group under its limit stops up to a folio short and reclaim frees
# whole folios.
CACHE = Tolerance("near", 2 * MiB, 0.05, "file pages come and go in large folios")
# Active/inactive splits depend on the LRU's aging details (folio batches, refault
# activation); only the order of magnitude is compared.
LRU = Tolerance("near", 2 * MiB, 0.25, "aging details: folio batches, activation")
# Counters of charge events and faults: pages for anon/shmem; the interpreter adds a
# few faults of its own.
EVENTS = Tolerance("near", 256, 0.05, "the worker's own faults")
# failcnt counts failed charge attempts, including 64-page batch attempts and whole
# folios, so only whether the limit was ever hit is comparable.
FAILCNT = Tolerance("both", why="counts batch and folio attempts, not pages")
# vmpressure counts depend on how reclaim was batched (one event per 512 scanned pages
# window, mm/vmpressure.c vmpressure_win).
PRESSURE = Tolerance("order", rel=2.0, why="one event per reclaim window")

# Kernel memory: slab objects share pages and the counter moves in pages; the worker
# is a Python process (its page tables, its forks) where the model's task is abstract.
KMEM = Tolerance("near", 1 * MiB, 0.25, "slab page sharing, the worker's own page tables")
# TCP buffers: autotuning and the moment the reader ran.
TCPMEM = Tolerance("near", 128 * KiB, 0.10, "buffer autotuning, timing of reads")
SOCKET_BYTES = Tolerance("near", 128 * KiB, 0.25, "buffer autotuning, timing of reads")
SOCKET_SIZE = Tolerance("order", rel=2.0, why="buffer and window autotuning")

# cgroup v2 file notifications (a v1 scenario's oom_control is memory.events on v2): a
# poller is woken once per kernfs_notify() until it reads the file again, and
# cgroup_file_notify() notifies at most once per CGROUP_FILE_NOTIFY_MIN_INTV (10 ms) and
# defers the rest to a timer (kernel/cgroup/cgroup.c), so how many wake-ups a burst of
# events makes depends on real time: only whether the file was notified is compared.
NOTIFIED_FILES = ("memory.events", "memory.events.local", "memory.swap.events", "cgroup.events")
NOTIFIED = Tolerance("both", why="wake-ups of a burst coalesce in real time")
# PSI triggers fire at most once per window (kernel/sched/psi.c: window_update); a run of
# N windows fires between 0 and N times depending on where the stalls fall.
PSI_TRIGGER = Tolerance("both", why="one event per window, where the stall falls in real time")

# memory.events "high" counts one per reclaim_high() pass over the group (each return to
# user space with reclaim owed, and each retry of mem_cgroup_handle_over_high): how many
# passes depends on how the charges were batched (per-CPU stock, readahead folio sizes,
# the worker's faults), so the order of magnitude is compared (psi-oomd: 69 and 69;
# high-throttle: 278 and 250 on 6.1).
RECLAIM_PASSES = Tolerance("order", rel=1.5, why="one per reclaim pass: charge batches, folios")
# "low" counts one per priority level of do_try_to_free_pages()'s memcg_low_reclaim retry
# in which shrink_node_memcgs() reclaims a group below its memory.low (mm/vmscan.c): how
# many levels a reclaim call needs to meet its 32 pages depends on how much each level
# frees.  low-protect counts 194 on the model and 506 on 6.1 for the same 17M taken from
# the service: the model (6.18) reads ext4 files into large readahead folios (ext4 has had
# large folios since 6.16), so the few folios a high priority scans free the 32 pages,
# where 6.1's 4 KiB pages need more levels.  Only whether it was breached is compared.
LOW_BREACHED = Tolerance("both", why="one per priority level of the breaching reclaim")

TOLERANCES: dict[str, Tolerance] = {
    "limit": EXACT, "oom": EXACT, "state": EXACT, "error": EXACT, "expect": EXACT,
    "anon": ANON, "cache": CACHE, "lru": LRU, "events": EVENTS, "failcnt": FAILCNT,
    "pressure": PRESSURE, "kmem": KMEM, "tcpmem": TCPMEM,
    "socket_bytes": SOCKET_BYTES, "socket_size": SOCKET_SIZE,
    "notified": NOTIFIED, "psi_trigger": PSI_TRIGGER, "reclaim_passes": RECLAIM_PASSES,
    "low_breached": LOW_BREACHED,
}
"""Named tolerance classes (usage figures get a per-machine one from tolerance_for)."""

_STAT_CLASS = {
    "cache": "cache", "rss": "anon", "rss_huge": "anon", "shmem": "anon", "mapped_file": "anon",
    "dirty": "cache", "writeback": "cache", "swap": "anon", "unevictable": "anon",
    "inactive_anon": "anon", "active_anon": "lru", "inactive_file": "lru", "active_file": "lru",
    "pgpgin": "events", "pgpgout": "events", "pgfault": "events", "pgmajfault": "events",
    "hierarchical_memory_limit": "limit", "hierarchical_memsw_limit": "limit",
    # cgroup v2's names (mm/memcontrol.c: memory_stats[])
    "anon": "anon", "file": "cache", "anon_thp": "anon", "file_mapped": "anon",
    "file_dirty": "cache", "file_writeback": "cache", "swapcached": "cache",
}


def tolerance_for(what: str, cpus: int = 1, machine_bytes: int | None = None,
                  v2: bool = False) -> Tolerance:
    """The tolerance of a row, from its name ("<group> <file>[ <key>]", "task ...", ...).

    v2: the runs were on cgroup v2, where a v1 scenario's memory.oom_control event is a
    poller of memory.events (scenario/v2map.py).
    machine_bytes: the scenario's machine memory.  The real kernel runs the scenario
    under a root limited to it, so a hierarchical limit of that size means "no limit",
    as the simulated machine's unlimited root does.
    """
    kind, _, rest = what.partition(" ")
    if kind == "task":
        return EXACT
    if kind == "socket":
        fld = rest.rpartition(" ")[2]
        if fld in ("sent", "read", "buffered"):
            return SOCKET_BYTES
        if fld in ("sndbuf", "rcvbuf", "window"):
            return SOCKET_SIZE
        if fld == "drops":
            return Tolerance("both", why="drops depend on timing")
        return EXACT
    if kind in ("error", "expect"):
        return EXACT
    if kind == "event":
        if "memory.pressure_level" in rest:
            return PRESSURE
        fname = rest.split(" ")[0].rpartition("/")[2]
        if fname in NOTIFIED_FILES or (v2 and fname == "memory.oom_control"):
            return NOTIFIED
        if rest.split(" ")[0].endswith("/memory.pressure"):
            return PSI_TRIGGER
        return EXACT
    fname, _, key = rest.partition(" ")
    if fname in ("memory.usage_in_bytes", "memory.max_usage_in_bytes",
                 "memory.memsw.usage_in_bytes", "memory.memsw.max_usage_in_bytes",
                 "memory.current", "memory.peak", "memory.swap.current"):
        # Stock on both kernels, plus kernel memory the model may not charge (page
        # tables, file system metadata), plus the page-cache folio slack.
        return Tolerance("near", 2 * _stock_slack(cpus) + 2 * MiB, 0.05,
                         "per-CPU charge stock, kmem, folios")
    if fname.endswith("failcnt"):
        return FAILCNT
    if fname.endswith("limit_in_bytes") or fname == "memory.oom_control":
        return EXACT
    if fname in ("memory.events", "memory.events.local"):
        # v2's "max" counts reclaim attempts at the limit, as failcnt counts failed charges
        if key == "max":
            return FAILCNT
        if key == "high":
            return RECLAIM_PASSES
        if key == "low":
            return LOW_BREACHED
        return EXACT
    if fname in ("memory.kmem.usage_in_bytes", "memory.kmem.max_usage_in_bytes"):
        return KMEM
    if fname in ("memory.kmem.tcp.usage_in_bytes", "memory.kmem.tcp.max_usage_in_bytes"):
        return TCPMEM
    if fname == "memory.stat":
        base = key[6:] if key.startswith("total_") else key
        if base.startswith("hierarchical_") and machine_bytes:
            return Tolerance("machine", machine_bytes, why="the machine's size is its limit")
        if base.startswith("workingset_"):
            return Tolerance("both", why="refaults depend on eviction order")
        return TOLERANCES[_STAT_CLASS.get(base, "lru")]
    return EXACT


def _error_key(e: dict) -> str:
    who = f" ({e['task']})" if e.get("task") else ""
    return f"error tick {e['tick']} {e['step']} {e['action']}{who}"


def _error_value(e: dict) -> str:
    """The comparable part of a step error: the errno name, or "skipped: <state>"."""
    msg = e.get("error", "")
    if msg.startswith("skipped:"):
        return msg.split(" is ")[-1].strip() if " is " in msg else msg
    return msg.split(":", 1)[0].strip()


def _v2_stat_keys(ps: dict, pl: dict) -> tuple[dict, dict, bool]:
    """A v2 memory.stat (the model's) against one a real kernel object showed with v1 keys
    (VMKernel and LinuxKernel on v2 read it through backends/linux/v2names.py): the v1
    side's keys are named back to v2 and only the keys both show are compared."""
    if "anon" in ps and "rss" in pl:
        back = {v1: v2 for v1, v2 in V2_STAT_KEYS.items()}
        pl = {back.get(key, key): v for key, v in pl.items() if not key.startswith("total_")}
        return ps, pl, True
    return ps, pl, False


def _group_rows(path: str, sim: dict, linux: dict, nested: bool,
                v2: bool = False) -> list[tuple[str, Any, Any]]:
    """The rows of one group's files; on cgroup v2 (`v2`) only the memory.stat keys both
    kernels print are compared: 6.18 prints lines 6.1 has not (swapcached, 6.6)."""
    rows = []
    for fname in sorted(set(sim) | set(linux)):
        s, l = sim.get(fname), linux.get(fname)
        if fname in ("memory.stat", "memory.oom_control", "memory.events"):
            ps, pl = parse_stat(s or ""), parse_stat(l or "")
            ps, pl, both_only = _v2_stat_keys(ps, pl) if fname == "memory.stat" else (ps, pl, False)
            keys = set(ps) | set(pl)
            if both_only or v2 or fname == "memory.events":
                # 6.18's memory.events has sock_throttled, 6.1's has not
                keys = set(ps) & set(pl) if s is not None and l is not None else keys
            for key in sorted(keys, key=lambda k: (k.startswith("total_"), k)):
                if key.startswith("total_") and not nested:
                    continue   # a leaf group's total_* lines repeat its own lines
                rows.append((f"{path} {fname} {key}", ps.get(key), pl.get(key)))
        else:
            rows.append((f"{path} {fname}", parse_int(s), parse_int(l)))
    return rows


def compare_results(sim: dict, linux: dict, cpus: int = 1, machine_bytes: int | None = None) -> dict:
    """The comparison of two run results (the JSON of `memcg run`) of one scenario."""
    raw: list[tuple[str, Any, Any]] = []
    groups = list(dict.fromkeys(list(sim.get("groups", {})) + list(linux.get("groups", {}))))
    v2 = sim.get("hierarchy") == "v2"
    for g in groups:
        nested = any(o != g and o.startswith(g.rstrip("/") + "/") for o in groups)
        raw += _group_rows(g, sim.get("groups", {}).get(g, {}), linux.get("groups", {}).get(g, {}),
                           nested, v2)
    for name in dict.fromkeys(list(sim.get("tasks", {})) + list(linux.get("tasks", {}))):
        raw.append((f"task {name} state", sim.get("tasks", {}).get(name, {}).get("state"),
                    linux.get("tasks", {}).get(name, {}).get("state")))
    for label in dict.fromkeys(list(sim.get("events", {})) + list(linux.get("events", {}))):
        raw.append((f"event {label}", sim.get("events", {}).get(label),
                    linux.get("events", {}).get(label)))
    for name in dict.fromkeys(list(sim.get("sockets", {})) + list(linux.get("sockets", {}))):
        ss, ls = sim.get("sockets", {}).get(name, {}), linux.get("sockets", {}).get(name, {})
        for fld in dict.fromkeys(list(ss) + list(ls)):
            raw.append((f"socket {name} {fld}", ss.get(fld), ls.get(fld)))
    errs: dict[str, list] = {}
    for side, res in ((0, sim), (1, linux)):
        for e in res.get("errors", []):
            errs.setdefault(_error_key(e), [None, None])[side] = _error_value(e)
    for key in sorted(errs, key=lambda k: (int(k.split()[2]), k)):
        raw.append((key, errs[key][0], errs[key][1]))
    exps: dict[str, list] = {}
    for side, res in ((0, sim), (1, linux)):
        for e in res.get("expectations", []):
            key = f"expect tick {e['tick']} {e['target']} {e['condition']}"
            exps.setdefault(key, [None, None])[side] = bool(e["ok"])
    for key, (s, l) in exps.items():
        raw.append((key, s, l))

    rows = []
    for what, s, l in raw:
        tol = tolerance_for(what, cpus, machine_bytes, v2)
        in_bytes = _is_bytes(what)
        rows.append({"what": what, "sim": s, "linux": l, "agree": tol.agree(s, l),
                     "tolerance": tol.describe(in_bytes)})
    agreed = sum(1 for r in rows if r["agree"])
    return {"scenario": sim.get("scenario") or linux.get("scenario"),
            "rows": rows, "agreement": agreed / len(rows) if rows else 1.0}


def _is_bytes(what: str) -> bool:
    parts = what.split(" ")
    if parts[0] == "socket":
        return parts[-1] in ("sent", "read", "buffered", "sndbuf", "rcvbuf", "window")
    if len(parts) < 2 or parts[0] in ("task", "event", "error", "expect"):
        return False
    fname = parts[1]
    if fname == "memory.stat":
        key = parts[2][6:] if parts[2].startswith("total_") else parts[2]
        return not key.startswith(("pg", "workingset_"))
    return fname.endswith("_in_bytes")


def _show(v: Any, in_bytes: bool) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "holds" if v else "fails"
    if in_bytes and isinstance(v, int):
        return human_size(v) if abs(v) >= 1 << 20 or v >= 1 << 62 else str(v)
    return str(v)


def format_table(result: dict, header: str = "") -> str:
    """The side-by-side table: what, sim, linux, mark, tolerance; then the agreement."""
    rows = [["what", "sim", "linux", "", "tolerance"]]
    for r in result["rows"]:
        b = _is_bytes(r["what"])
        rows.append([r["what"], _show(r["sim"], b), _show(r["linux"], b),
                     "ok" if r["agree"] else "DIFF", r.get("tolerance", "")])
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [header] if header else []
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2]),
                 row[3].ljust(widths[3]), row[4]]
        lines.append(("  " + "  ".join(cells)).rstrip())
    n = len(result["rows"])
    agreed = sum(1 for r in result["rows"] if r["agree"])
    lines.append("")
    lines.append(f"agreement: {agreed} of {n} figures ({result['agreement']:.1%})")
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


def environment_notes(scenario: Scenario, guest_release: str = "") -> list[str]:
    """Differences between the scenario's machine and this one that show in the figures.
    `guest_release`: the real kernel is a VM guest of that release, booted with the
    scenario's memory, CPUs and swap, so only the era of the rules can differ."""
    notes = []
    if guest_release:
        return _semantics_note(scenario, guest_release)
    swap_total = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("SwapTotal:"):
                    swap_total = int(line.split()[1]) * KiB
    except OSError:
        pass
    if scenario.machine.swap_bytes > 0 and swap_total == 0:
        notes.append(f"the scenario's machine has {scenario.machine.swap} of swap and this one has "
                     "none: on the real kernel anonymous memory cannot be swapped out")
    notes += _semantics_note(scenario, os.uname().release)
    cpus = len(os.sched_getaffinity(0))
    if scenario.machine.cpus != cpus:
        notes.append(f"the scenario's machine has {scenario.machine.cpus} CPUs and this one {cpus}: "
                     "per-CPU charge stocks and LRU batches differ")
    return notes


def _semantics_note(scenario: Scenario, release: str) -> list[str]:
    semantics = scenario.machine.semantics
    if semantics == "6.18":
        return []
    return [f"the scenario asks the simulated kernel for the rules of Linux {semantics}; "
            f"this kernel is {release}"]


def run_compare(scenario: Scenario, make_sim: Callable[[], Kernel], make_linux: Callable[[], Kernel],
                cpus: int | None = None) -> dict:
    """Run the scenario on both kernels and compare; ScenarioError names the kernel.

    Both runs settle after their last tick (Kernel.settle): the real kernel's final
    memory.stat is then exact rather than up to 64 pages per CPU behind."""
    results = {}
    for backend, make in (("sim", make_sim), ("linux", make_linux)):
        kernel = make()
        try:
            results[backend] = run_scenario(scenario, kernel, settle=True)
        except ScenarioError as e:
            raise ScenarioError(f"{e} (on the {backend} kernel)") from None
    out = compare_results(results["sim"], results["linux"],
                          cpus or scenario.machine.cpus or os.cpu_count() or 1,
                          scenario.machine.memory_bytes)
    out["runs"] = results
    out["notes"] = environment_notes(scenario)
    return out


def write_json(result: dict, path: str) -> None:
    """The comparison as the design document's JSON (rows and agreement, plus context)."""
    doc = {"scenario": result.get("scenario"), "rows": result["rows"],
           "agreement": result["agreement"], "notes": result.get("notes", [])}
    if "kernel" in result:
        doc["kernel"] = result["kernel"]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")

