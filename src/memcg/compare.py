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
from dataclasses import dataclass, replace
from typing import Any, Callable

from .kernel import PAGE_SIZE, Kernel
from .parse import parse_int, parse_size, parse_stat
from .report import human_size
from .scenario import Scenario, ScenarioError, run_scenario
from .scenario.model import Machine

__all__ = ["Tolerance", "TOLERANCES", "tolerance_for", "compare_results", "count_rows", "run_compare",
           "format_table", "header", "describe_machine", "shaped_machines", "environment_notes",
           "write_json", "COMPARED", "MODEL_ONLY", "NOT_COMPARABLE"]

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
# cgroup v2's reclaim counters (memory.stat, counts of pages, mm/vmscan.c).  pgsteal is
# the pages reclaim took, which the limits decide: the pages of 512 (2M of large folios,
# as CACHE allows) and 5% (low-protect: 45312 and 45285 on 6.1; high-throttle: 24675 and
# 24805).  Scans, refills, activations and deactivations follow the LRU's aging
# (rotations, referenced folios, which list reclaim finds low) as the active/inactive
# split does, so they get its 25% (high-throttle's pgscan: 40803 and 49442).
RECLAIMED = Tolerance("near", 512, 0.05, "pages reclaimed: the limits decide, folio sizes")
AGING = Tolerance("near", 512, 0.25, "LRU aging: rotations, activations, folio batches")

TOLERANCES: dict[str, Tolerance] = {
    "limit": EXACT, "oom": EXACT, "state": EXACT, "error": EXACT, "expect": EXACT,
    "anon": ANON, "cache": CACHE, "lru": LRU, "events": EVENTS, "failcnt": FAILCNT,
    "pressure": PRESSURE, "kmem": KMEM, "tcpmem": TCPMEM,
    "socket_bytes": SOCKET_BYTES, "socket_size": SOCKET_SIZE,
    "notified": NOTIFIED, "psi_trigger": PSI_TRIGGER, "reclaim_passes": RECLAIM_PASSES,
    "low_breached": LOW_BREACHED, "reclaimed": RECLAIMED, "aging": AGING,
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
    "file_thp": "cache", "shmem_thp": "anon", "sock": "tcpmem",
    "kernel": "kmem", "kernel_stack": "kmem", "pagetables": "kmem", "sec_pagetables": "kmem",
    "percpu": "kmem", "vmalloc": "kmem", "slab": "kmem", "slab_reclaimable": "kmem",
    "slab_unreclaimable": "kmem",
    "pgsteal": "reclaimed", "pgsteal_direct": "reclaimed", "pgsteal_kswapd": "reclaimed",
    "pgscan": "aging", "pgscan_direct": "aging", "pgscan_kswapd": "aging",
    "pgrefill": "aging", "pgactivate": "aging", "pgdeactivate": "aging",
    "pglazyfree": "events", "pglazyfreed": "events", "thp_fault_alloc": "events",
    "thp_collapse_alloc": "events", "zswpin": "events", "zswpout": "events",
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


MODEL_ONLY, NOT_COMPARABLE, COMPARED = "model-only", "not comparable", "compared"


def _group_rows(path: str, sim: dict, linux: dict, nested: bool,
                v2: bool = False) -> list[tuple]:
    """The rows of one group's files, (what, sim, linux, class, why).

    A file or a memory.stat line the model prints and the real kernel does not (the group
    is there, with other files) is model-only.  On cgroup v2 (`v2`; the guest is another
    kernel version, 6.1) a line only the real kernel prints is not comparable: 6.18
    prints lines 6.1 has not (pswpin, pgscan_proactive, pgdemote_*, ...) and the other
    way round (zswap lines, with CONFIG_ZSWAP); on v1, against
    this machine's kernel, it counts: the model lacks a line the kernel prints."""
    rows = []
    for fname in sorted(set(sim) | set(linux)):
        s, l = sim.get(fname), linux.get(fname)
        if fname in ("memory.stat", "memory.oom_control", "memory.events"):
            ps, pl = parse_stat(s or ""), parse_stat(l or "")
            keys = set(ps) | set(pl)
            # 6.18's memory.events has sock_throttled, 6.1's has not
            one_version = not (v2 or fname == "memory.events")
            for key in sorted(keys, key=lambda k: (k.startswith("total_"), k)):
                if key.startswith("total_") and not nested:
                    continue   # a leaf group's total_* lines repeat its own lines
                what = f"{path} {fname} {key}"
                cls, why = COMPARED, ""
                if l is None and linux and s is not None:
                    cls, why = MODEL_ONLY, f"the real kernel has no {fname} here"
                elif s is not None and l is not None and key not in pl:
                    cls, why = MODEL_ONLY, f"the real kernel's {fname} has no {key} line"
                elif s is not None and l is not None and key not in ps and not one_version:
                    cls, why = NOT_COMPARABLE, f"only the real kernel's version prints {key}"
                rows.append((what, ps.get(key), pl.get(key), cls, why))
        else:
            cls, why = COMPARED, ""
            if l is None and linux and s is not None:
                cls, why = MODEL_ONLY, f"the real kernel has no {fname} here"
            rows.append((f"{path} {fname}", parse_int(s), parse_int(l), cls, why))
    return rows


def _model_only_ref(ref: str, linux: dict) -> str:
    """Why a figure a scenario reads has no real-kernel counterpart ("" if it has one): a
    debugfs key the real kernel's debugfs() does not show (the kernel keeps it internal:
    kmemcg ids, dying groups), or a connection figure it reports as None
    (memcg->tcpmem_pressure is not visible from user space)."""
    if ref.startswith("debugfs:"):
        if ref[8:] not in (linux.get("debugfs") or {}):
            return f"the real kernel does not show {ref}"
    elif ref.startswith("socket:"):
        name, _, fld = ref[7:].partition(":")
        sock = (linux.get("sockets") or {}).get(name)
        if sock is not None and fld in sock and sock[fld] is None:
            return f"the real kernel does not show {fld} of a connection"
    return ""


def _raw_rows(sim: dict, linux: dict) -> list[tuple]:
    """Every figure of two runs, (what, sim, linux, class, why); the class is COMPARED, or
    MODEL_ONLY for a figure the real kernel has no counterpart of (decided from what the
    real kernel shows, never from whether the values agree)."""
    raw: list[tuple] = []
    groups = list(dict.fromkeys(list(sim.get("groups", {})) + list(linux.get("groups", {}))))
    v2 = sim.get("hierarchy") == "v2"
    for g in groups:
        nested = any(o != g and o.startswith(g.rstrip("/") + "/") for o in groups)
        raw += _group_rows(g, sim.get("groups", {}).get(g, {}), linux.get("groups", {}).get(g, {}),
                           nested, v2)
    for name in dict.fromkeys(list(sim.get("tasks", {})) + list(linux.get("tasks", {}))):
        raw.append((f"task {name} state", sim.get("tasks", {}).get(name, {}).get("state"),
                    linux.get("tasks", {}).get(name, {}).get("state"), COMPARED, ""))
    for label in dict.fromkeys(list(sim.get("events", {})) + list(linux.get("events", {}))):
        raw.append((f"event {label}", sim.get("events", {}).get(label),
                    linux.get("events", {}).get(label), COMPARED, ""))
    for name in dict.fromkeys(list(sim.get("sockets", {})) + list(linux.get("sockets", {}))):
        ss, ls = sim.get("sockets", {}).get(name, {}), linux.get("sockets", {}).get(name, {})
        for fld in dict.fromkeys(list(ss) + list(ls)):
            why = _model_only_ref(f"socket:{name}:{fld}", linux) if ss.get(fld) is not None else ""
            raw.append((f"socket {name} {fld}", ss.get(fld), ls.get(fld),
                        MODEL_ONLY if why else COMPARED, why))
    errs: dict[str, list] = {}
    for side, res in ((0, sim), (1, linux)):
        for e in res.get("errors", []):
            entry = errs.setdefault(_error_key(e), [None, None, []])
            entry[side] = _error_value(e)
            if side == 1:
                entry[2].append([_model_only_ref(r, linux) for r in e.get("refs", [])] or [""])
    for key in sorted(errs, key=lambda k: (int(k.split()[2]), k)):
        s, l, whys = errs[key]
        # a step that failed on the real kernel only because it read what it does not show
        why = whys[0][0] if s is None and whys and all(w and all(w) for w in whys) else ""
        raw.append((key, s, l, MODEL_ONLY if why else COMPARED, why))
    exps: dict[str, list] = {}
    for side, res in ((0, sim), (1, linux)):
        for e in res.get("expectations", []):
            key = f"expect tick {e['tick']} {e['target']} {e['condition']}"
            entry = exps.setdefault(key, [None, None, ""])
            entry[side] = bool(e["ok"])
            if side == 1:
                entry[2] = next((w for w in (_model_only_ref(r, linux) for r in e.get("refs", [])) if w), "")
    for key, (s, l, why) in exps.items():
        raw.append((key, s, l, MODEL_ONLY if why else COMPARED, why))
    return raw


def compare_results(sim: dict, linux: dict, cpus: int = 1, machine_bytes: int | None = None,
                    as_written: dict | None = None, as_written_why: str = "") -> dict:
    """The comparison of two run results (the JSON of `memcg run`) of one scenario.

    Each row has a class: "compared" (counted in the agreement), "model-only" (the real
    kernel has no counterpart: a debugfs figure, a figure it does not show; listed, not
    counted) or "not comparable" (listed, not counted).  `as_written`: the model's run on
    the scenario's own machine where the real side lacks some of it (its swap, its
    memory; `sim` is then the run on the real side's machine): a figure whose value
    there differs from `sim` (beyond its tolerance) is one the scenario's machine
    changes, which this machine cannot show, so it is not comparable (`as_written_why`
    says why).  Classes come from what each kernel shows and from the model's two runs,
    never from the real values, so no disagreement can be classed away."""
    raw = _raw_rows(sim, linux)
    v2 = sim.get("hierarchy") == "v2"
    if as_written is not None:
        written = {r[0]: r[2] for r in _raw_rows(sim, as_written)}
        seen = {r[0] for r in raw}
        out_raw = []
        for what, s, l, cls, why in raw:
            tol = tolerance_for(what, cpus, machine_bytes, v2)
            w = written.get(what)
            if cls == COMPARED and not tol.agree(s, w):
                cls = NOT_COMPARABLE
                why = f"{as_written_why}: there the model gives {_show(w, _is_bytes(what))}"
            out_raw.append((what, s, l, cls, why))
        # figures only the run on the scenario's machine has (a step, a task, a line)
        for what, s, w, _, _ in _raw_rows(as_written, {}):
            if what not in seen:
                out_raw.append((what, None, None, NOT_COMPARABLE,
                                f"{as_written_why}: there the model gives {_show(s, _is_bytes(what))}"))
        raw = out_raw

    rows = []
    for what, s, l, cls, why in raw:
        tol = tolerance_for(what, cpus, machine_bytes, v2)
        row = {"what": what, "sim": s, "linux": l, "agree": tol.agree(s, l),
               "tolerance": tol.describe(_is_bytes(what)), "class": cls}
        if why:
            row["why"] = why
        rows.append(row)
    counts = count_rows(rows)
    return {"scenario": sim.get("scenario") or linux.get("scenario"), "rows": rows,
            "counts": counts,
            "agreement": counts["agreeing"] / counts["compared"] if counts["compared"] else 1.0}


def count_rows(rows: list[dict]) -> dict:
    """rows: every row; compared and agreeing: the rows counted in the agreement;
    model_only, not_comparable: the rows listed and not counted."""
    compared = [r for r in rows if r.get("class", COMPARED) == COMPARED]
    return {"rows": len(rows), "compared": len(compared),
            "agreeing": sum(1 for r in compared if r["agree"]),
            "model_only": sum(1 for r in rows if r.get("class") == MODEL_ONLY),
            "not_comparable": sum(1 for r in rows if r.get("class") == NOT_COMPARABLE)}


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


MARKS = {MODEL_ONLY: "model-only", NOT_COMPARABLE: "n/c"}


def format_table(result: dict, header: str = "") -> str:
    """The side-by-side table: what, sim, linux, mark, tolerance; then the agreement.

    The mark is ok or DIFF for a compared row, "model-only" or "n/c" (not comparable)
    for a row listed and not counted, whose last column says why."""
    rows = [["what", "sim", "linux", "", "tolerance"]]
    for r in result["rows"]:
        b = _is_bytes(r["what"])
        cls = r.get("class", COMPARED)
        mark = MARKS.get(cls) or ("ok" if r["agree"] else "DIFF")
        rows.append([r["what"], _show(r["sim"], b), _show(r["linux"], b), mark,
                     r.get("why", "") if cls != COMPARED else r.get("tolerance", "")])
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [header.rstrip("\n")] if header else []
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].rjust(widths[2]),
                 row[3].ljust(widths[3]), row[4]]
        lines.append(("  " + "  ".join(cells)).rstrip())
    c = result.get("counts") or count_rows(result["rows"])
    lines.append("")
    lines.append(f"agreement: {c['agreeing']} of {c['compared']} compared figures "
                 f"({result['agreement']:.1%})")
    if c["model_only"] or c["not_comparable"]:
        lines.append(f"not counted: {c['model_only']} model-only, {c['not_comparable']} not "
                     f"comparable; {c['rows']} figures in all")
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines) + "\n"


def _semantics_note(scenario: Scenario, release: str) -> list[str]:
    semantics = scenario.machine.semantics
    if semantics == "6.18":
        return []
    return [f"the scenario asks the simulated kernel for the rules of Linux {semantics}; "
            f"this kernel is {release}"]


def environment_notes(scenario: Scenario, guest_release: str = "") -> list[str]:
    """Differences between the scenario's kernel and the real one that show in the
    figures and that the model's machine cannot take up: the era of the rules the
    scenario asks for.  (Memory, CPUs and swap: the model runs with the real side's,
    see shaped_machines.)"""
    return _semantics_note(scenario, guest_release or os.uname().release)


def _size(n: int) -> str:
    return "no" if n == 0 else human_size(n)


def shaped_machines(machine: Machine, real: dict) -> tuple[Machine, Machine | None, str]:
    """The machine the model runs with, the real side's (`real`: Kernel.machine(); the
    scenario's where it says nothing): its memory, CPUs and swap; and, where the real side
    lacks some of the scenario's memory or swap, the machine the model also runs with to
    find the figures the lack changes (the scenario's memory and swap on the real side's
    CPUs), with the reason; (machine, None, "") where it lacks nothing."""
    memory = real.get("memory") or machine.memory_bytes
    swap = real.get("swap", machine.swap_bytes)
    cpus = real.get("cpus") or machine.cpus
    shaped = replace(machine, memory=str(memory), swap=str(swap), cpus=int(cpus))
    lacks = []
    if swap < machine.swap_bytes:
        lacks.append(f"the scenario's machine has {machine.swap} of swap and this one "
                     f"{'none' if swap == 0 else human_size(swap)}")
    if memory < machine.memory_bytes:
        lacks.append(f"the scenario's machine has {machine.memory} of memory and the real "
                     f"root can have {human_size(memory)}")
    if not lacks:
        return shaped, None, ""
    written = replace(shaped, memory=machine.memory, swap=machine.swap)
    return shaped, written, "; ".join(lacks)


def describe_machine(result: dict) -> list[str]:
    """The header lines that say which machine the model ran with and what is not
    counted, and why."""
    m = result.get("machine") or {}
    real, model = m.get("real") or {}, m.get("model") or {}
    lines = []
    if model:
        if real:
            where = []
            if real.get("memory_limit") is not None and real.get("memory_total"):
                lim, tot = real["memory_limit"], real["memory_total"]
                where.append("the real root's limit" if lim <= tot else "the memory the kernel manages")
                if lim <= tot:
                    where.append(f"the host has {human_size(tot)}")
            how = f" ({'; '.join(where)})" if where else ""
            lines.append(f"the model runs with the real side's machine: {human_size(model['memory'])} "
                         f"of memory{how}, {model['cpus']} CPUs, {_size(model['swap'])} swap"
                         f" (the scenario's: {m['scenario']['memory']}, {m['scenario']['cpus']} CPUs, "
                         f"{_size(parse_size(m['scenario']['swap']))} swap)")
        else:
            lines.append(f"the model runs with the scenario's machine: {human_size(model['memory'])} of "
                         f"memory, {model['cpus']} CPUs, {_size(model['swap'])} swap (the real side "
                         "does not say its own)")
    c = result.get("counts") or count_rows(result["rows"])
    if c["not_comparable"]:
        nc = [r for r in result["rows"] if r.get("class") == NOT_COMPARABLE]
        if m.get("lacks"):
            lines.append(f"not comparable: {m['lacks']}, so the model runs without it as well; "
                         f"{len(nc)} figures that it changes in the model (listed n/c) are not "
                         f"counted (on this machine both kernels agree on {sum(r['agree'] for r in nc)} "
                         "of them)")
        else:
            lines.append(f"not comparable: {len(nc)} figures only the real kernel's version "
                         "prints (listed n/c), not counted")
    if c["model_only"]:
        lines.append(f"model-only: {c['model_only']} figures have no counterpart on the real kernel "
                     "(debugfs, figures it does not show); listed, not counted")
    return lines


def header(result: dict, scenario: Scenario) -> str:
    """The first lines of `memcg compare`: the scenario, the real kernel, the machine the
    model ran with, and what is not counted and why."""
    m = scenario.machine
    if result.get("against") == "vm":
        first = (f"scenario {scenario.name}: simulated kernel vs Linux {result.get('kernel', '')} "
                 f"(a QEMU guest under {str(result.get('accel', '')).upper()}, cgroup {m.hierarchy}, "
                 f"root limited to the machine's {m.memory})")
    else:
        first = (f"scenario {scenario.name}: simulated kernel vs Linux {result.get('kernel', '')} "
                 f"(real cgroups, root limited to the machine's {m.memory})")
    return "\n".join([first] + describe_machine(result)) + "\n"


def run_compare(scenario: Scenario, make_sim: Callable[[Machine], Kernel],
                make_linux: Callable[[], Kernel], cpus: int | None = None) -> dict:
    """Run the scenario on both kernels and compare; ScenarioError names the kernel.

    The real kernel is made first and says what machine its groups have
    (Kernel.machine()); the model is made by make_sim(machine) with that machine's
    memory, CPUs and swap (shaped_machines).  Where the real side lacks the scenario's
    swap or memory the model runs a second time on the scenario's own, to find the
    figures that lack changes (not comparable, compare_results).  Both kernels run the
    scenario as written (the files it reports are the same).  Both runs settle after
    their last tick (Kernel.settle): the real kernel's final memory.stat is then exact
    rather than up to 64 pages per CPU behind."""
    real = make_linux()
    try:
        try:
            shape = real.machine() or {}
        except (OSError, NotImplementedError):
            shape = {}
        model_m, written_m, lacks = shaped_machines(scenario.machine, shape)
        results = {}
        runs = [("sim", lambda: make_sim(model_m))]
        if written_m is not None:
            runs.append(("as_written", lambda: make_sim(written_m)))
        for backend, make in runs:
            try:
                results[backend] = run_scenario(scenario, make(), settle=True)
            except ScenarioError as e:
                raise ScenarioError(f"{e} (on the simulated kernel)") from None
    except BaseException:
        real.close()
        raise
    try:
        results["linux"] = run_scenario(scenario, real, settle=True)
    except ScenarioError as e:
        raise ScenarioError(f"{e} (on the {real.backend} kernel)") from None
    out = compare_results(results["sim"], results["linux"],
                          cpus or model_m.cpus or os.cpu_count() or 1,
                          min(model_m.memory_bytes, scenario.machine.memory_bytes),
                          results.get("as_written"), lacks)
    out["runs"] = results
    out["machine"] = {"scenario": {"memory": scenario.machine.memory, "cpus": scenario.machine.cpus,
                                   "swap": scenario.machine.swap},
                      "real": shape,
                      "model": {"memory": model_m.memory_bytes, "cpus": model_m.cpus,
                                "swap": model_m.swap_bytes},
                      **({"lacks": lacks} if lacks else {})}
    out["notes"] = environment_notes(scenario)
    return out


def write_json(result: dict, path: str) -> None:
    """The comparison as the design document's JSON (rows and agreement, plus context)."""
    doc = {"scenario": result.get("scenario"), "rows": result["rows"],
           "agreement": result["agreement"], "notes": result.get("notes", []),
           "counts": result.get("counts") or count_rows(result["rows"])}
    if "machine" in result:
        doc["machine"] = result["machine"]
    if "kernel" in result:
        doc["kernel"] = result["kernel"]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")

