#!/usr/bin/env python3
"""cgroup churn: create and remove many groups, each charging a few kernel objects.

Document 004's question: do the per-group arrays (indexed by kmemcg_id) stay bounded
when groups come and go?  Each round makes /churn/gN, moves a task in, creates a few
empty files on ext4 (dentries and inodes charged to the group, left unused on its
list_lru), moves the task out and removes the group.  Reported per kmemcg_id policy
(and era): the arrays' size, the ids in use, the dying groups, the mkdirs refused
(ENOSPC once all 65535 ids are taken) and the wall-clock time of the simulation.

    python3 bench/churn.py                      # 100000 groups, every policy, both eras
    python3 bench/churn.py --groups 10000 --policy keep --semantics 6.18
"""

from __future__ import annotations

import argparse
import errno
import json
import resource
import sys
import time

import memcg

POLICIES = ("reparent", "keep", "reclaim")
SEMANTICS = ("6.18", "3.8")


def churn(groups: int, files: int, policy: str, semantics: str, memory: str = "4G") -> dict:
    """One run; the figures debugfs shows at the end, and how long it took."""
    k = memcg.SimKernel(memory=memory, cpus=2, semantics=semantics, kmemcg_id_policy=policy)
    k.mkdir("/churn")
    # 3.8 rules: children of a kmem-limited group account kernel memory (today: a no-op)
    k.write("/churn/memory.kmem.limit_in_bytes", "2G")
    t = k.spawn("/churn")
    refused = 0
    peak_array = 0
    start = time.perf_counter()
    for i in range(groups):
        path = f"/churn/g{i}"
        try:
            k.mkdir(path)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            refused += 1
            continue
        t.move(path)
        t.create_files(files, fs="ext4")
        t.move("/churn")
        k.rmdir(path)
        peak_array = max(peak_array, k.debugfs()["kmemcg_id_array_size"])
    seconds = time.perf_counter() - start
    d = k.debugfs()
    return {"policy": policy, "semantics": semantics, "groups": groups, "files": files,
            "kmemcg_id_array_size": d["kmemcg_id_array_size"],
            "kmemcg_ids_in_use": d["kmemcg_ids_in_use"], "dying_groups": d["dying_groups"],
            "mkdir_enospc": refused, "seconds": round(seconds, 1),
            "us_per_group": round(1e6 * seconds / groups, 1),
            "kmem_usage": int(k.read("/churn/memory.kmem.usage_in_bytes"))}


def table(rows: list[dict]) -> str:
    """A markdown table of the runs."""
    head = ("semantics", "policy", "groups", "kmemcg_id_array_size", "kmemcg_ids_in_use",
            "dying_groups", "mkdir_enospc", "seconds", "us_per_group")
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--groups", type=int, default=100_000)
    ap.add_argument("--files", type=int, default=4, help="empty files per group")
    ap.add_argument("--policy", choices=POLICIES, action="append")
    ap.add_argument("--semantics", choices=SEMANTICS, action="append")
    ap.add_argument("--json", help="also write the rows as JSON to this file")
    args = ap.parse_args(argv)
    rows = []
    for semantics in args.semantics or SEMANTICS:
        for policy in args.policy or POLICIES:
            rows.append(churn(args.groups, args.files, policy, semantics))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(table(rows))
    print(f"\npeak RSS of the simulation: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
