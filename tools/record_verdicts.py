"""Hold a recorded replay to the real kernel over several limits.

    python3 tools/record_verdicts.py --limits 32M,64M,96M,128M,160M [--data SIZE] -- CMD [ARGS...]

Records CMD once without a limit (`memcg record`), then, for each limit, replays the
recording on the model (`--param limit=L`) and runs CMD again on real cgroups at that
limit (`memcg record --limit L`), and prints a Markdown table: peak, failcnt and OOM
kills of both.  With --data SIZE a file data.bin of that size, not in the page cache, is
made in the working directory before every run, for commands that read it.  Needs root
and a writable cgroup v1 memory controller.
"""

import argparse
import json
import os
import sys
import tempfile

from memcg import cli, parse
from memcg.backends.sim import SimKernel
from memcg.scenario import load_scenario, run_scenario


def cold_file(path: str, size: int) -> None:
    """A file of real blocks, dropped from the page cache."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        for _ in range(size >> 20):
            os.write(fd, b"\1" * (1 << 20))
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def figures(run: dict) -> tuple[int, int, int]:
    f = run["groups"]["/job"]
    return (int(f["memory.max_usage_in_bytes"]), int(f["memory.failcnt"]),
            parse.parse_stat(f["memory.oom_control"])["oom_kill"])


def real_run(argv: list[str], limit: str | None, data: int, where: str) -> tuple[str, dict]:
    if data:
        cold_file(os.path.join(where, "data.bin"), data)
    out, js = os.path.join(where, "rec.toml"), os.path.join(where, "rec.json")
    opts = ["--limit", limit] if limit else []
    cli.main(["record", *opts, "--out", out, "--json", js, "--", *argv])
    with open(js) as f:
        return out, json.load(f)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limits", required=True)
    ap.add_argument("--data", default="0")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    argv = args.command[1:] if args.command[:1] == ["--"] else args.command
    data = parse.parse_size(args.data)
    with tempfile.TemporaryDirectory() as d:
        os.chdir(d)
        toml, real = real_run(argv, None, data, d)
        keep = os.path.join(d, "recorded.toml")
        os.replace(toml, keep)
        sc = load_scenario(keep)
        sim = run_scenario(sc, SimKernel(**sc.machine.sim_kwargs()), settle=True)
        print("| limit | real peak | model peak | real failcnt | model failcnt | real OOM kills "
              "| model OOM kills | verdict agrees |")
        print("|---|---|---|---|---|---|---|---|")
        rows = [("none (recorded)", real, sim)]
        for limit in args.limits.split(","):
            _, r = real_run(argv, limit, data, d)
            sc = load_scenario(keep, {"limit": limit})
            rows.append((limit, r, run_scenario(sc, SimKernel(**sc.machine.sim_kwargs()), settle=True)))
        for limit, r, s in rows:
            rp, rf, ro = figures(r)
            sp, sf, so = figures(s)
            agree = (ro > 0) == (so > 0) and (rf > 0) == (sf > 0)
            print(f"| {limit} | {rp / (1 << 20):.1f}M | {sp / (1 << 20):.1f}M | {rf} | {sf} | {ro} | {so} "
                  f"| {'yes' if agree else 'no'} |")
        os.chdir("/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
