#!/usr/bin/env python3
"""A seeded corpus of cgroup v1 file writes, measured on the live kernel and on SimKernel.

Every writable memory.* file of a v1 group (and the two cgroup v1 core flags,
notify_on_release and cgroup.clone_children) gets the same corpus of values:
numbers, size suffixes, signs, whitespace, overflow, -1, garbage and non-ASCII
text, a fixed hand-picked part and a part drawn from a seeded generator.  Each
value is written, in a freshly created group, as one write(2) of its UTF-8 bytes;
the errno and the text of the file read back afterwards are recorded.

    sudo python3 tools/write_fuzz.py measure --out tests/data/kernel_v1_write_fuzz.json
    python3 tools/write_fuzz.py table tests/data/kernel_v1_write_fuzz.json

`measure` needs root and a cgroup v1 memory hierarchy.  Its groups are children of
the caller's own memory cgroup (memcg-fuzz-<pid>), all removed again at the end,
also on failure; no process is moved and nothing is charged.  `table` replays the
stored answers on SimKernel and prints the agreement per file as a Markdown table
(the one in docs/real-kernel-table.md); `--diff` lists every disagreement.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, os.pardir, "src"))
sys.path.insert(0, HERE)

SEED = 17
PAGE_SIZE = 4096

# Writable memory.* files of a v1 group (mode 0644 or 0200 in a fresh group on 6.18),
# then the cgroup v1 core flags.  cgroup.procs, tasks and cgroup.event_control take
# pids and descriptors and are measured by tools/measure_v1_table.py.
FILES = [
    "memory.limit_in_bytes",
    "memory.soft_limit_in_bytes",
    "memory.memsw.limit_in_bytes",
    "memory.kmem.limit_in_bytes",
    "memory.kmem.tcp.limit_in_bytes",
    "memory.swappiness",
    "memory.use_hierarchy",
    "memory.move_charge_at_immigrate",
    "memory.oom_control",
    "memory.force_empty",
    "memory.max_usage_in_bytes",
    "memory.failcnt",
    "memory.memsw.max_usage_in_bytes",
    "memory.memsw.failcnt",
    "memory.kmem.max_usage_in_bytes",
    "memory.kmem.failcnt",
    "memory.kmem.tcp.max_usage_in_bytes",
    "memory.kmem.tcp.failcnt",
    "notify_on_release",
    "cgroup.clone_children",
]

# The memsw limit can't be set above an unlimited memory limit: its values are
# written after the memory limit was lowered to 0, so that the parser is what decides.
SETUP = {"memory.memsw.limit_in_bytes": [["memory.limit_in_bytes", "0"]]}

# Files read back after the write (the file itself, when it is readable, comes first).
ALSO_READ = {
    "memory.memsw.limit_in_bytes": ["memory.limit_in_bytes"],
    "memory.force_empty": ["memory.usage_in_bytes"],
}
WRITE_ONLY = {"memory.force_empty"}

HAND = [
    # plain numbers, page boundaries, bases
    "0", "1", "2", "3", "7", "30", "60", "100", "200", "201", "4095", "4096", "4097",
    "8192\n", "010", "08", "0x10", "0X1F", "0x", "0xg", "0b1", "1e3", "1.5", "00", "0x0",
    # signs
    "-1", "-0", "-2", "+1", "+0", "--1", "+-1", "-+1", "-", "+", " -1", "-1 ", "-1\n",
    # suffixes, alone and odd
    "1k", "1K", "4m", "4M", "1g", "1G", "1t", "1T", "1p", "1P", "1e", "1E", "8E", "16E",
    "17E", "k", "M", "E", "1KB", "1Ki", "1 K", "1kk", "0x1k", "4M\n", "4M ",
    # whitespace
    "", " ", "\n", "\n\n", "\t", "\r", "\v", "\f", " 1", "1 ", "1\n", "1\n\n", "\t1\t",
    "1\r", " 4M ",
    # overflow
    "9223372036854771712", "9223372036854775807", "9223372036854775808",
    "18446744073709551615", "18446744073709551616", "18446744073709551617",
    "99999999999999999999999", "0xffffffffffffffff", "0x10000000000000000",
    "4294967296", "2147483648",
    # garbage
    "abc", "max", "unlimited", "1,024", "1 2", "1_000", "0o10", "1\x00junk", "\x00",
    "\x01", "\x7f", "1;", "1#", "nan", "inf", "True",
    # non-ASCII: other digits, look-alike letters and spaces, marks
    "\u0661\u0666M", "\uff11\uff16M", "1\u212a", "\u00b2", "\u2167", "1\u00a0",
    "\u00a0" + "1", "1\u2003", "\u200b1", "\ufeff1", "1\u2028", "\u00e9", "\U0001F642",
    "\u0661", "1\u0301",
    # one page, and one byte more
    "1" + " " * (PAGE_SIZE - 1), "1" + " " * PAGE_SIZE,
]

_DIGITS = ["0", "1", "4", "7", "64", "100", "4096", "65536", "1024", "12345678901234567890"]
_SIGNS = ["", "", "", "-", "+"]
_PREFIX = ["", "", "", "0", "0x", "0X"]
_SUFFIX = ["", "", "", "k", "K", "m", "M", "g", "G", "t", "p", "e", "E", "b", "KB", "\u212a"]
_SPACE = ["", "", "", " ", "\n", "\t", "\n\n", "\r", "\u00a0"]


def corpus(seed: int = SEED, extra: int = 40) -> list[str]:
    """The hand-picked values, then `extra` composed ones from a seeded generator."""
    rng = random.Random(seed)
    out = list(dict.fromkeys(HAND))
    seen = set(out)
    while len(out) < len(dict.fromkeys(HAND)) + extra:
        v = (rng.choice(_SPACE) + rng.choice(_SIGNS) + rng.choice(_PREFIX)
             + rng.choice(_DIGITS) + rng.choice(_SUFFIX) + rng.choice(_SPACE))
        if v not in seen:
            seen.add(v)
            out.append(v)
    return out


def case_list(seed: int = SEED) -> list[dict]:
    values = corpus(seed)
    return [{"file": f, "input": v, "setup": SETUP.get(f, [])} for f in FILES for v in values]


def reads_of(file: str) -> list[str]:
    return ([] if file in WRITE_ONLY else [file]) + ALSO_READ.get(file, [])


# ----------------------------------------------------------------- the real kernel


def measure(seed: int) -> dict:
    from memcg.backends.linux import LinuxUnavailable, v1_memory_cgroup
    from measure_v1_table import Measure

    try:
        parent = v1_memory_cgroup()
    except LinuxUnavailable as e:
        raise SystemExit(e.strerror) from None
    if not os.path.isfile(os.path.join(parent, "memory.limit_in_bytes")):
        raise SystemExit("no cgroup v1 memory controller for this process")
    base = os.path.join(parent, f"memcg-fuzz-{os.getpid()}")
    os.mkdir(base)
    m = Measure(base)
    out = []
    try:
        for case in case_list(seed):
            rel = m.fresh("f")
            try:
                g = m.p(rel)
                setup_err = [m.write(os.path.join(g, f), t) for f, t in case["setup"]]
                err = m.write(os.path.join(g, case["file"]), case["input"])
                reads = {}
                for name in reads_of(case["file"]):
                    value, rerr = m.read(os.path.join(g, name))
                    reads[name] = value if rerr is None else {"errno": rerr}
                rec = dict(case, errno=err, read=reads)
                if any(setup_err):
                    rec["setup_errno"] = setup_err
                out.append(rec)
            finally:
                m.rmtree(rel)
    finally:
        m.cleanup()
        m.rmtree("")
    return {"kernel": os.uname().release, "seed": seed, "page_size": PAGE_SIZE, "cases": out}


# ----------------------------------------------------------------- SimKernel


def sim_answers(cases: list[dict]) -> list[dict]:
    """The same writes on SimKernel: each case in a new group of one simulated machine."""
    import memcg

    k = memcg.SimKernel(memory="2G", cpus=2)
    out = []
    try:
        for i, case in enumerate(cases):
            g = f"/f{i}"
            k.mkdir(g)
            try:
                setup_err = []
                for f, t in case["setup"]:
                    setup_err.append(_sim_write(k, f"{g}/{f}", t))
                err = _sim_write(k, f"{g}/{case['file']}", case["input"])
                reads = {}
                for name in reads_of(case["file"]):
                    try:
                        reads[name] = k.read(f"{g}/{name}")
                    except OSError as e:
                        reads[name] = {"errno": errno.errorcode[e.errno]}
                rec = dict(case, errno=err, read=reads)
                if any(setup_err):
                    rec["setup_errno"] = setup_err
                out.append(rec)
            finally:
                k.rmdir(g)
    finally:
        k.close()
    return out


def _sim_write(k, path: str, text: str) -> str | None:
    try:
        k.write(path, text)
    except OSError as e:
        return errno.errorcode[e.errno]
    return None


def agree(real: dict, sim: dict) -> tuple[bool, bool]:
    """(errno agrees, read-back agrees)."""
    return (real["errno"] == sim["errno"] and real.get("setup_errno") == sim.get("setup_errno"),
            real["read"] == sim["read"])


def table(stored: dict) -> tuple[str, list[tuple[dict, dict]]]:
    cases = stored["cases"]
    sim = sim_answers(cases)
    per: dict[str, list[int]] = {}
    diffs = []
    for r, s in zip(cases, sim):
        e_ok, r_ok = agree(r, s)
        row = per.setdefault(r["file"], [0, 0, 0, 0])
        row[0] += 1
        row[1] += e_ok
        row[2] += r_ok
        row[3] += e_ok and r_ok
        if not (e_ok and r_ok):
            diffs.append((r, s))
    lines = ["| file | writes | same errno | same read-back | both |", "|---|---:|---:|---:|---:|"]
    tot = [0, 0, 0, 0]
    for f in FILES:
        if f not in per:
            continue
        n, e, rb, both = per[f]
        tot = [a + b for a, b in zip(tot, per[f])]
        lines.append(f"| `{f}` | {n} | {e} | {rb} | {both} |")
    lines.append(f"| all | {tot[0]} | {tot[1]} | {tot[2]} | {tot[3]} |")
    return "\n".join(lines) + "\n", diffs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure", help="measure the corpus on the live kernel")
    m.add_argument("--out", help="write the JSON here instead of stdout")
    m.add_argument("--seed", type=int, default=SEED)
    m.add_argument("--measured", default=datetime.date.today().isoformat())
    t = sub.add_parser("table", help="replay stored answers on SimKernel, print the agreement")
    t.add_argument("json")
    t.add_argument("--diff", action="store_true", help="list every disagreement")
    opts = ap.parse_args()
    if opts.cmd == "measure":
        data = measure(opts.seed)
        data["measured"] = opts.measured
        data["method"] = (
            "tools/write_fuzz.py: for each case a new child group, the 'setup' writes, then "
            "os.open(O_WRONLY), one os.write of the UTF-8 bytes of 'input', os.close; 'errno' "
            "is the error name or null; 'read' maps each file read afterwards to its text "
            "(or to {\"errno\": name} when the read failed).")
        cases = data.pop("cases")
        head = json.dumps(data, indent=1, ensure_ascii=True)[:-2]
        text = (head + ',\n "cases": [\n'
                + ",\n".join(json.dumps(c, ensure_ascii=True) for c in cases) + "\n ]\n}\n")
        if opts.out:
            with open(opts.out, "w") as f:
                f.write(text)
        else:
            sys.stdout.write(text)
        return 0
    stored = json.load(open(opts.json))
    md, diffs = table(stored)
    sys.stdout.write(md)
    if opts.diff:
        for r, s in diffs:
            print(f"{r['file']} {r['input']!r}: kernel {r['errno']} {r['read']!r}"
                  f" / model {s['errno']} {s['read']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
