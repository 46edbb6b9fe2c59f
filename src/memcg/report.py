"""Reports of a run: the plain-text summary, the JSON, and plots.

All of it works on the result dictionary that `memcg.scenario.run_scenario` returns
(the JSON of a run), so a saved JSON can be reported again.  matplotlib is imported
only by `plot`, with the Agg backend.
"""

from __future__ import annotations

import json
from typing import IO, Any

from .parse import parse_int, parse_stat

__all__ = ["human_size", "group_row", "summary", "tcp_summary", "write_json", "plot", "GROUP_COLUMNS"]

UNLIMITED_FROM = 1 << 62
"""Limits at or above this are printed as "max" (the kernel prints PAGE_COUNTER_MAX * PAGE_SIZE)."""

GROUP_COLUMNS = ("group", "limit", "usage", "max usage", "failcnt", "cache", "rss", "oom_kill")


def human_size(n: int | None) -> str:
    """Bytes as a short text: 0, 512K, 63.9M, 2G; "max" for an unlimited value; "-" for None."""
    if n is None:
        return "-"
    if n >= UNLIMITED_FROM:
        return "max"
    for shift, suffix in ((30, "G"), (20, "M"), (10, "K")):
        unit = 1 << shift
        if n >= unit:
            if n % unit == 0:
                return f"{n >> shift}{suffix}"
            return f"{n / unit:.1f}{suffix}"
    return str(n)


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        out.append((indent + "  ".join(cells)).rstrip())
    return out


def group_row(path: str, files: dict[str, str], swap: bool = False) -> list[str]:
    """One row of the group table from the final texts of a group's files."""
    stat = parse_stat(files.get("memory.stat", ""))
    oom = parse_stat(files.get("memory.oom_control", ""))
    extra = [human_size(stat.get("swap"))] if swap else []
    if "memory.current" in files:
        # cgroup v2: max, current, peak, events max (v1's failcnt), file, anon, oom_kill
        ev = parse_stat(files.get("memory.events", ""))
        limit = files.get("memory.max", "").strip()
        return [
            path,
            "max" if limit == "max" else human_size(parse_int(limit)),
            human_size(parse_int(files.get("memory.current"))),
            human_size(parse_int(files.get("memory.peak"))),
            str(ev["max"]) if "max" in ev else "-",
            human_size(stat.get("file", stat.get("cache"))),
            human_size(stat.get("anon", stat.get("rss"))),
            str(ev["oom_kill"]) if "oom_kill" in ev else "-",
        ] + ([human_size(parse_int(files.get("memory.swap.current")))] if swap else [])
    return [
        path,
        human_size(parse_int(files.get("memory.limit_in_bytes"))),
        human_size(parse_int(files.get("memory.usage_in_bytes"))),
        human_size(parse_int(files.get("memory.max_usage_in_bytes"))),
        str(parse_int(files.get("memory.failcnt")) if "memory.failcnt" in files else "-"),
        human_size(stat.get("cache")),
        human_size(stat.get("rss")),
        str(oom["oom_kill"]) if "oom_kill" in oom else "-",
    ] + extra


def summary(result: dict[str, Any], description: str = "") -> str:
    """The readable summary of a run: groups, tasks, events, step errors, expectations."""
    lines = [f"scenario {result['scenario']} on the {result['backend']} kernel"
             + (f" (Linux {result['kernel']}" + (f", {result['accel'].upper()}" if "accel" in result else "")
                + ")" if "kernel" in result else "")
             + (f", {result['ticks']} ticks" if "ticks" in result else "")]
    if description:
        lines.append("  " + " ".join(description.split()))
    params = result.get("params") or {}
    if params:
        lines.append("  params: " + ", ".join(f"{k}={v}" for k, v in params.items()))
    if result.get("mapped"):
        lines.append("  on cgroup v2, the v1 files were served by: "
                     + ", ".join(f"{v1} -> {v2}" for v1, v2 in result["mapped"].items()))

    groups = result.get("groups", {})
    if groups:
        lines += ["", "groups"]
        swap = any("memory.memsw.usage_in_bytes" in f for f in groups.values())
        header = list(GROUP_COLUMNS) + (["swap"] if swap else [])
        rows = [header] + [group_row(p, f, swap) for p, f in groups.items()]
        lines += _table(rows)

    tasks = result.get("tasks", {})
    if tasks:
        lines += ["", "tasks"]
        rows = [["task", "pid", "state"]] + [[n, str(t["pid"]), t["state"]] for n, t in tasks.items()]
        lines += _table(rows)

    events = result.get("events", {})
    if events:
        lines += ["", "events"]
        rows = [["event", "count"]] + [[label, str(n)] for label, n in events.items()]
        lines += _table(rows)

    lines += tcp_summary(result)

    errors = result.get("errors", [])
    if errors:
        lines += ["", "kernel errors and skipped steps"]
        for e in errors:
            who = f" ({e['task']})" if e.get("task") else ""
            lines.append(f"  tick {e['tick']:>4}  {e['step']} {e['action']}{who}: {e['error']}")

    exps = result.get("expectations", [])
    if exps:
        held = sum(1 for e in exps if e["ok"])
        lines += ["", f"expectations ({held} of {len(exps)} hold)"]
        for e in exps:
            mark = "ok  " if e["ok"] else "FAIL"
            extra = f" [{e['operand']}]" if "operand" in e else ""
            note = f"; {e['note']}" if e.get("note") else ""
            lines.append(f"  {mark}  tick {e['tick']:>4}  {e['target']} {e['condition']}{extra}"
                         f"  (actual: {e['actual']}{note})")
    return "\n".join(lines) + "\n"


TCP_COLUMNS = ("tick", "group", "tcp usage", "sent", "buffered", "drops", "window", "pressure")
TCP_ROWS = 10
"""At most this many sampled ticks per group in the summary's TCP table (last one included)."""


def _tcp_groups(result: dict[str, Any]) -> dict[str, dict]:
    groups = result.get("series", {}).get("groups", {})
    return {g: s for g, s in groups.items() if "tcp_usage" in s}


def tcp_summary(result: dict[str, Any]) -> list[str]:
    """Lines of the TCP table (empty without connections): per group over time, its TCP
    counter, and over the connections its tasks opened the bytes sent and still
    buffered (sent, not yet read), drops, the receivers' windows and memory pressure."""
    groups = _tcp_groups(result)
    ticks = result.get("series", {}).get("tick", [])
    if not groups or not ticks:
        return []
    n = len(ticks)
    picks = sorted({round(i * (n - 1) / (TCP_ROWS - 1)) for i in range(TCP_ROWS)}) if n > TCP_ROWS \
        else list(range(n))

    def cell(v, size=True):
        if v is None:
            return "-"
        return human_size(v) if size else str(v)

    rows = [list(TCP_COLUMNS)]
    for i in picks:
        for g, s in groups.items():
            pressure = s["tcp_pressure"][i]
            rows.append([str(ticks[i]), g, cell(s["tcp_usage"][i]), cell(s["tcp_sent"][i]),
                         cell(s["tcp_buffered"][i]), cell(s["tcp_drops"][i], False),
                         cell(s["tcp_window"][i]), "-" if pressure is None else ("yes" if pressure else "no")])
    lines = ["", "tcp (the group's memory.kmem.tcp.usage_in_bytes; bytes sent, still buffered, drops, "
                 "receive window and pressure of the connections its tasks opened)"]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [c.ljust(w) if i == 1 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append(("  " + "  ".join(cells)).rstrip())
    return lines


def write_json(result: dict[str, Any], out: IO[str]) -> None:
    """Write the JSON of a run (indented, keys in the run's order)."""
    json.dump(result, out, indent=2)
    out.write("\n")


def plot(result: dict[str, Any], path: str) -> None:
    """Plot usage, cache and rss of every group over the ticks into a PNG file.

    Raises ImportError when matplotlib is missing.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = result.get("series", {})
    ticks = series.get("tick", [])
    groups = series.get("groups", {})
    events = {label: counts for label, counts in series.get("events", {}).items() if any(counts)}
    tcp = _tcp_groups(result)
    if tcp:
        # Groups that never held user memory (TCP buffers are not in memory.usage_in_bytes)
        # get no panel of their own: the TCP panels show them.
        groups = {g: s for g, s in groups.items()
                  if any(any(s.get(key, ())) for key in ("usage", "cache", "rss"))}
    n = max(1, len(groups) + (1 if events else 0) + (2 if tcp else 0))
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.6 * n + 0.6), sharex=True, squeeze=False)
    mib = float(1 << 20)
    for ax, (group, s) in zip(axes[:, 0], groups.items()):
        ax.plot(ticks, [v / mib for v in s.get("usage", [])], label="usage", color="black")
        ax.plot(ticks, [v / mib for v in s.get("cache", [])], label="cache", color="tab:blue")
        ax.plot(ticks, [v / mib for v in s.get("rss", [])], label="rss", color="tab:red")
        limit = parse_int(result.get("groups", {}).get(group, {}).get("memory.limit_in_bytes"))
        if limit is not None and limit < UNLIMITED_FROM:
            ax.axhline(limit / mib, linestyle="--", color="grey", label="limit")
        ax.set_title(group, loc="left", fontsize=10)
        ax.set_ylabel("MiB")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    if events:
        # Cumulative eventfd counts: pressure levels, thresholds, OOM notifications.
        ax = axes[len(groups), 0]
        for label, counts in events.items():
            ax.plot(ticks, counts, label=label, drawstyle="steps-post")
        ax.set_title("events (cumulative)", loc="left", fontsize=10)
        ax.set_ylabel("count")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=7)
    if tcp:
        _plot_tcp(result, ticks, tcp, axes[len(groups) + (1 if events else 0):, 0])
    axes[-1, 0].set_xlabel("tick")
    fig.suptitle(f"{result.get('scenario', '')} ({result.get('backend', '')})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_tcp(result: dict[str, Any], ticks: list, tcp: dict[str, dict], axes) -> None:
    """Two panels: bytes buffered (sent, not yet read) with each group's TCP counter and
    limit, shaded while the group's connections are under memory pressure; and bytes
    sent, cumulative."""
    mib = float(1 << 20)
    colors = ("tab:red", "tab:blue", "tab:green", "tab:purple", "tab:orange", "tab:brown")
    buf_ax, sent_ax = axes[0], axes[1]
    for (group, s), color in zip(tcp.items(), colors):
        mb = [None if v is None else v / mib for v in s["tcp_buffered"]]
        buf_ax.plot(ticks, mb, color=color, label=f"{group} buffered")
        usage = [None if v is None else v / mib for v in s["tcp_usage"]]
        buf_ax.plot(ticks, usage, color=color, linestyle=":", label=f"{group} tcp usage")
        limit = parse_int(result.get("groups", {}).get(group, {}).get("memory.kmem.tcp.limit_in_bytes"))
        if limit is not None and limit < UNLIMITED_FROM:
            buf_ax.axhline(limit / mib, linestyle="--", color=color, alpha=0.6, label=f"{group} tcp limit")
        top = max([v for v in mb if v is not None] or [0])
        pressed = [bool(p) for p in s["tcp_pressure"]]
        if any(pressed):
            buf_ax.fill_between(ticks, 0, max(top, 0.1), where=pressed, step="post", color=color,
                                alpha=0.12, label=f"{group} under pressure")
        sent = [None if v is None else v / mib for v in s["tcp_sent"]]
        sent_ax.plot(ticks, sent, color=color, label=f"{group} sent")
    buf_ax.set_title("TCP: bytes buffered (sent, not yet read)", loc="left", fontsize=10)
    buf_ax.set_ylabel("MiB")
    buf_ax.grid(True, alpha=0.3)
    buf_ax.legend(loc="upper left", fontsize=7)
    sent_ax.set_title("TCP: bytes sent (cumulative)", loc="left", fontsize=10)
    sent_ax.set_ylabel("MiB")
    sent_ax.grid(True, alpha=0.3)
    sent_ax.legend(loc="upper left", fontsize=7)
