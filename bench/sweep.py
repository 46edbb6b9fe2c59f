"""Sweep throughput: points per second on the local engine and on Ray, and the backup
scenario run N times with different limits in one process and in a fresh process each.

    python3 bench/sweep.py [--points N]
    python3 bench/sweep.py --scenario FILE.toml --grid limit=32M..512M:32M

Prints Markdown rows for BENCHMARKS.md's sweep section.  The cache is off throughout.
With --scenario, only the points per second of that scenario's grid, local and Ray
(a recorded job, say).
"""

import argparse
import importlib.util
import os
import subprocess
import sys
import time

from memcg import sweep


def _limits(n: int) -> list[str]:
    return [f"{16 * (i + 1)}M" for i in range(n)]


def points_per_second(engine: str, n: int, jobs: int) -> float:
    pts = sweep.parse_grid(["limit=" + ",".join(_limits(n))])
    t = time.perf_counter()
    sweep.run_sweep("backup", pts, engine=engine, jobs=jobs)
    return n / (time.perf_counter() - t)


def grid_points_per_second(engine: str, scenario: str, grid: str, jobs: int) -> tuple[int, float]:
    pts = sweep.parse_grid([grid])
    t = time.perf_counter()
    sweep.run_sweep(scenario, pts, engine=engine, jobs=jobs)
    return len(pts), len(pts) / (time.perf_counter() - t)


def in_process(n: int) -> float:
    t = time.perf_counter()
    for lim in _limits(n):
        sweep.run_point("backup", {"limit": lim})
    return (time.perf_counter() - t) / n


def fresh_process(n: int) -> float:
    t = time.perf_counter()
    for lim in _limits(n):
        subprocess.run([sys.executable, "-m", "memcg", "run", "backup", "--param", f"limit={lim}"],
                       check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--scenario", metavar="NAME|FILE")
    ap.add_argument("--grid", default="limit=32M..512M:32M")
    args = ap.parse_args()
    n = args.points
    jobs = os.cpu_count() or 1
    if args.scenario:
        for engine in ("local", "ray"):
            if engine == "ray" and importlib.util.find_spec("ray") is None:
                print(f"| {args.scenario}, Ray engine | ray not installed |")
                continue
            count, pps = grid_points_per_second(engine, args.scenario, args.grid, jobs)
            print(f"| {os.path.basename(args.scenario)}, {count} points ({args.grid}), {engine} engine, "
                  f"{jobs} {'jobs' if engine == 'local' else 'CPUs'} | {pps:.2f} points/s |")
        return
    print(f"| backup, {n} limits, local engine, {jobs} jobs | {points_per_second('local', n, jobs):.2f} points/s |")
    if importlib.util.find_spec("ray") is not None:   # the optional extra
        ray_pps = f"{points_per_second('ray', n, jobs):.2f} points/s (a local Ray started by the sweep)"
    else:
        ray_pps = "ray not installed"
    print(f"| backup, {n} limits, Ray engine, {jobs} CPUs | {ray_pps} |")
    print(f"| backup, {n} limits one after another, one process | {in_process(n):.2f} s per run |")
    print(f"| backup, {n} limits, a fresh `memcg run` process each | {fresh_process(n):.2f} s per run |")


if __name__ == "__main__":
    main()
