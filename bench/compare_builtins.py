#!/usr/bin/env python3
"""Every built-in scenario compared with a real kernel: the agreement table.

Runs `memcg compare NAME` for each built-in and prints a Markdown table: compared
figures agreeing, the discrete figures (task states, OOM kills, event fired or not,
expectations) agreeing, the figures listed but not counted (model-only, not comparable),
every row, and the compared figures that differ.  Two parts: the cgroup v1 built-ins
against this machine's real cgroups (`--against linux`, the default), and with --vm the
cgroup v2 part against the VM guest (`--against vm`): the v2 built-ins and the v1
built-ins of V2_MAPPED run on v2 with their knobs mapped (`--hierarchy v2`).  With
--write FILE the part's table replaces what is between that part's two marker lines in
FILE (or is added to FILE); the other part is left as it is.

    python3 bench/compare_builtins.py --write docs/compare-table.md       # v1 part
    python3 bench/compare_builtins.py --vm --write docs/compare-table.md  # v2 part
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
BEGIN_V2 = "<!-- compare-table v2: begin (bench/compare_builtins.py --vm --write) -->"
END_V2 = "<!-- compare-table v2: end -->"
# v1 built-ins also compared on cgroup v2 (docs/cgroup-v2.md: a v1 scenario on v2)
V2_MAPPED = ("hog",)


def discrete(row: dict) -> bool:
    """A state or a yes/no rather than an amount: exact rows (task states, OOM kills,
    errors, limits, expectations) and "both 0 or both > 0" rows (failcnt)."""
    return row.get("tolerance") in ("exact", "both 0 or both >0")


def compare_one(name: str, against: str, hierarchy: str | None = None) -> dict:
    """One compare through the command line; its JSON, wall time and exit status."""
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "cmp.json")
        start = time.monotonic()
        argv = ["compare", name, "--against", against, "--json", out]
        if hierarchy:
            argv += ["--hierarchy", hierarchy]
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
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


def write(path: str, text: str, begin: str = BEGIN, end: str = END) -> None:
    block = f"{begin}\n{text}{end}\n"
    old = open(path).read() if os.path.exists(path) else ""
    if begin in old and end in old:
        new = old[:old.index(begin)] + block + old[old.index(end) + len(end) + 1:]
    else:
        new = old + ("\n" if old else "") + block
    with open(path, "w") as f:
        f.write(new)


def runs(names: list[str], vm: bool) -> list[tuple[str, str, str | None]]:
    """(label, built-in, hierarchy to map it onto) of one part: v1 or, with vm, v2."""
    out = []
    for name in names:
        v2 = load_scenario(name).machine.hierarchy == "v2"
        if v2 == vm:
            out.append((name, name, None))
        elif vm and name in V2_MAPPED:
            out.append((f"{name} --hierarchy v2", name, "v2"))
    return out


def run(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vm", action="store_true",
                    help="the cgroup v2 part: the v2 built-ins (and V2_MAPPED on v2) against the VM guest")
    ap.add_argument("--only", nargs="*", help="these built-ins only")
    ap.add_argument("--write", metavar="FILE", help="put the part's table into FILE between its markers")
    args = ap.parse_args(argv)
    against = "vm" if args.vm else "linux"
    results: dict[str, dict] = {}
    for label, name, hierarchy in runs(args.only or builtin_names(), args.vm):
        print(f"compare {label} --against {against} ...", file=sys.stderr, flush=True)
        doc = compare_one(name, against, hierarchy)
        doc["against"] = against
        results[label] = doc
        c = doc.get("counts") or {"agreeing": 0, "compared": 0, "rows": 0}
        print(f"  {c['agreeing']}/{c['compared']} compared ({c['rows']} rows) in {doc['seconds']:.0f} s",
              file=sys.stderr, flush=True)
    if args.vm:
        kernels = sorted({doc.get("kernel", "") for doc in results.values()} - {""})
        where = f"the VM guest (Linux {', '.join(kernels) or '?'}, QEMU)"
    else:
        where = f"Linux {_release(platform.release())} ({os.cpu_count()} CPUs)"
    text = (f"Measured {time.strftime('%Y-%m-%d')} on {where} with `python3 bench/compare_builtins.py"
            f"{' --vm' if args.vm else ''}`.\n\n" + table(results))
    sys.stdout.write(text)
    if args.write:
        write(args.write, text, *((BEGIN_V2, END_V2) if args.vm else (BEGIN, END)))
    return 0


if __name__ == "__main__":
    sys.exit(run())
