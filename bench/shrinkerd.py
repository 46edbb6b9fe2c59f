#!/usr/bin/env python3
"""memcg shrinkerd on real cgroups: the stress test's outcome and the daemon's reaction time.

A new child of this process's own v1 memory cgroup gets a 64 MiB limit; `memcg
shrinkerd` serves it, and the protocol-only client of the tests (tests/data/
chunk_client.py) allocates 4x the limit in 1 MiB chunks while its shrinker thread frees
what it is asked.  Per run: OOM kills, memory.max_usage_in_bytes, requests, and two
times per request:
- reaction: the daemon's own, from reading the cgroup eventfd (usage threshold or
  pressure level) to writing the client's eventfd (its --json-log "latency_us");
- delivery: from that write to the client's shrinker thread returning from read()
  (both on CLOCK_REALTIME).
Then the same client without the daemon, which the kernel OOM-kills.  Needs root.

    python3 bench/shrinkerd.py [--runs 5] [--limit 64M] [--oom-guard]
"""

from __future__ import annotations

import argparse
from collections import Counter
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = str(ROOT / "src")
CLIENT = str(ROOT / "tests" / "data" / "chunk_client.py")
sys.path.insert(0, SRC)

from memcg.backends.linux.host import v1_memory_cgroup  # noqa: E402
from memcg.parse import parse_size  # noqa: E402

MiB = 1 << 20


def _read(group: str, name: str) -> str:
    with open(os.path.join(group, name)) as f:
        return f.read()


def _oom_kills(group: str) -> int:
    return int(_read(group, "memory.oom_control").split("oom_kill ")[1].split()[0])


def _wait(cond, timeout=10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def one_run(parent: str, limit: int, daemon: bool, extra: tuple = ()) -> dict:
    group = os.path.join(parent, f"memcg-shrinkerd-bench-{os.getpid()}")
    os.mkdir(group)
    tmp = tempfile.mkdtemp(prefix="memcg-shrinkerd-bench-")
    run, logpath = os.path.join(tmp, "run"), os.path.join(tmp, "log")
    proc = None
    try:
        with open(os.path.join(group, "memory.limit_in_bytes"), "w") as f:
            f.write(str(limit))
        sock = "-"
        if daemon:
            with open(logpath, "w") as logf:
                proc = subprocess.Popen([sys.executable, "-m", "memcg", "shrinkerd", "--cgroup", group,
                                         "--runtime-dir", run, "--json-log", *extra],
                                        stderr=logf, env=dict(os.environ, PYTHONPATH=SRC))
            sock = os.path.join(run, "shrinker.sock")
            if not _wait(lambda: os.path.exists(sock)):
                raise SystemExit("bench: the daemon did not start: " + open(logpath).read())
        t0 = time.monotonic()
        r = subprocess.run([sys.executable, CLIENT, sock, group, str(4 * limit // MiB)],
                           capture_output=True, text=True, timeout=300)
        out = {"seconds": round(time.monotonic() - t0, 2), "rc": r.returncode,
               "oom_kill": _oom_kills(group),
               "max_usage": int(_read(group, "memory.max_usage_in_bytes"))}
        if daemon and r.returncode == 0:
            client = json.loads(r.stdout)
            asks = [json.loads(x) for x in open(logpath) if '"what": "ask"' in x]
            out["allocated"], out["requests"] = client["allocated"], len(asks)
            out["reasons"] = dict(Counter(a["reason"] for a in asks))
            out["reaction_us"] = [a["latency_us"] for a in asks if a["reason"] != "tick"]
            out["delivery_us"] = [round((t - a["t"]) * 1e6)
                                  for (t, _), a in zip(client["requests"], asks)]
        return out
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        for name in ("log",):
            if os.path.exists(os.path.join(tmp, name)):
                os.unlink(os.path.join(tmp, name))
        os.rmdir(tmp)
        _wait(lambda: _try_rmdir(group))


def _try_rmdir(d: str) -> bool:
    try:
        os.rmdir(d)
        return True
    except OSError:
        return False


def _pct(xs: list[int], q: float) -> int:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--limit", default="64M")
    ap.add_argument("--oom-guard", action="store_true", help="run the daemon with --oom-guard")
    args = ap.parse_args()
    limit = parse_size(args.limit)
    parent = v1_memory_cgroup()
    extra = ("--oom-guard",) if args.oom_guard else ()
    runs = [one_run(parent, limit, True, extra) for _ in range(args.runs)]
    without = one_run(parent, limit, False)
    react = [x for r in runs for x in r.get("reaction_us", [])]
    deliver = [x for r in runs for x in r.get("delivery_us", [])]
    for i, r in enumerate(runs):
        print(f"with daemon, run {i + 1}: rc {r['rc']}, oom_kill {r['oom_kill']}, "
              f"max_usage {r['max_usage'] / MiB:.1f} MiB of {limit / MiB:.0f}, "
              f"{r.get('allocated', '?')} chunks allocated, {r.get('requests', '?')} requests "
              f"{r.get('reasons', {})}, "
              f"{r['seconds']} s")
    print(f"without daemon: rc {without['rc']}, oom_kill {without['oom_kill']}, "
          f"max_usage {without['max_usage'] / MiB:.1f} MiB")
    if react:
        print(f"reaction (cgroup eventfd read -> client eventfd written), {len(react)} requests: "
              f"median {statistics.median(react):.0f} us, p95 {_pct(react, 0.95)} us, max {max(react)} us")
    if deliver:
        print(f"delivery (eventfd written -> client thread woken), {len(deliver)} requests: "
              f"median {statistics.median(deliver):.0f} us, p95 {_pct(deliver, 0.95)} us, "
              f"max {max(deliver)} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
