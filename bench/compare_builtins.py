#!/usr/bin/env python3
"""Every built-in scenario compared with a real kernel: the agreement table.

Runs `memcg compare NAME` for each built-in (cgroup v1 ones against this machine's real
cgroups, `--against linux`; cgroup v2 ones against the VM guest with `--vm`), and prints
a Markdown table: compared figures agreeing, the discrete figures (task states, OOM
kills, event fired or not, expectations) agreeing, the figures listed but not counted
(model-only, not comparable), every row, and the compared figures that differ.  With --write FILE
the table replaces the part of FILE between the two marker lines (or FILE is made).

    python3 bench/compare_builtins.py                    # v1 built-ins on real cgroups
    python3 bench/compare_builtins.py --vm --write docs/compare-table.md
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time

from memcg.cli import main
from memcg.scenario.loader import builtin_names, load_scenario

BEGIN = "<!-- compare-table: begin (bench/compare_builtins.py --write) -->"
END = "<!-- compare-table: end -->"


def discrete(row: dict) -> bool:
    """A state or a yes/no rather than an amount: exact rows (task states, OOM kills,
    errors, limits, expectations) and "both 0 or both > 0" rows (failcnt)."""
    return row.get("tolerance") in ("exact", "both 0 or both >0")


def compare_one(name: str, against: str) -> dict:
    """One compare through the command line; its JSON, wall time and exit status."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cmp.json")
        start = time.monotonic()
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(["compare", name, "--against", against, "--json", out])
        took = time.monotonic() - start
        doc = json.load(open(out)) if os.path.exists(out) else {"rows": []}
    doc["seconds"], doc["rc"] = took, rc
    return doc


def _release(release: str) -> str:
    """The kernel's version, "6.18", without the build's suffixes."""
    return ".".join(release.split(".")[:2])


def table(results: dict[str, dict]) -> str:
    """One line per built-in.  Only compared rows are counted; model-only rows (no
    real-kernel counterpart) and not comparable ones (the real side lacks the scenario's
    swap or memory) are listed beside, so "rows" is every figure either run showed."""
    lines = ["| scenario | against | compared figures agreeing | discrete figures agreeing "
             "| model-only | not comparable | rows | differing |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, doc in results.items():
        rows = doc["rows"]
        compared = [r for r in rows if r.get("class", "compared") == "compared"]
        agree = sum(r["agree"] for r in compared)
        disc = [r for r in compared if discrete(r)]
        dagree = sum(r["agree"] for r in disc)
        differ = [r["what"] for r in compared if not r["agree"]]
        shown = ", ".join(differ[:6]) + (f", ... ({len(differ) - 6} more)" if len(differ) > 6 else "")
        pct = f"{100 * agree / len(compared):.1f}%" if compared else "-"
        mo = sum(r.get("class") == "model-only" for r in rows)
        nc = sum(r.get("class") == "not comparable" for r in rows)
        lines.append(f"| `{name}` | {doc['against']} {_release(doc.get('kernel', ''))} "
                     f"| {agree}/{len(compared)} ({pct}) | {dagree}/{len(disc)} | {mo} | {nc} "
                     f"| {len(rows)} | {shown or '-'} |")
    return "\n".join(lines) + "\n"


def write(path: str, text: str) -> None:
    block = f"{BEGIN}\n{text}{END}\n"
    old = open(path).read() if os.path.exists(path) else ""
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + block + old[old.index(END) + len(END) + 1:]
    else:
        new = old + ("\n" if old else "") + block
    with open(path, "w") as f:
        f.write(new)


def run(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vm", action="store_true", help="also compare the cgroup v2 built-ins against the VM guest")
    ap.add_argument("--only", nargs="*", help="these built-ins only")
    ap.add_argument("--write", metavar="FILE", help="put the table into FILE between its markers")
    args = ap.parse_args(argv)
    results: dict[str, dict] = {}
    for name in args.only or builtin_names():
        v2 = load_scenario(name).machine.hierarchy == "v2"
        if v2 and not args.vm:
            continue
        against = "vm" if v2 else "linux"
        print(f"compare {name} --against {against} ...", file=sys.stderr, flush=True)
        doc = compare_one(name, against)
        doc["against"] = against
        results[name] = doc
        c = doc.get("counts") or {"agreeing": 0, "compared": 0, "rows": 0}
        print(f"  {c['agreeing']}/{c['compared']} compared ({c['rows']} rows) in {doc['seconds']:.0f} s",
              file=sys.stderr, flush=True)
    text = (f"Measured {time.strftime('%Y-%m-%d')} on Linux {_release(platform.release())} "
            f"({os.cpu_count()} CPUs) with `python3 bench/compare_builtins.py"
            f"{' --vm' if args.vm else ''}`.\n\n" + table(results))
    sys.stdout.write(text)
    if args.write:
        write(args.write, text)
    return 0


if __name__ == "__main__":
    sys.exit(run())
