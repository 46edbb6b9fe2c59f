#!/usr/bin/env python3
"""Signals x phases for `memcg run SCENARIO --backend linux`: exit status and leftovers.

A child `python -m memcg run` plays a scenario on real cgroups (groups with a limit,
workers, data files, shared memory, a userspace shrinker daemon, an OOM kill).  Each
run is stopped at one phase by one signal (or two sent back to back):

    started   right after the process is made (before any group exists)
    groups    its root group and the scenario's groups exist
    workers   worker processes are in the groups
    workload  the limited group is charged (its usage is 4M or more)
    oom       the limited group's task has been OOM-killed
    cleanup   the run is over and its kernel is stopping the workers

and then counted: the exit status, and what is left of it - groups below the
caller's own memory cgroup, worker processes (each known by pid and start time),
its file directories in the temporary directory and /dev/shm, and the shrinker's
runtime directory.  A run whose leftovers are not all gone is followed by a new
LinuxKernel below the same parent (what the next run does first); what that sweep
removes is counted too.

    sudo python3 tools/signal_matrix.py [--phases oom,cleanup] [--signals SIGTERM]

Needs root and cgroup v1; everything is made below the caller's own memory cgroup
and everything is removed at the end.
"""

from __future__ import annotations

import argparse
import glob
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, os.pardir, "src"))
sys.path.insert(0, SRC)

PREFIX = "memcg-linux-"
PHASES = ["started", "groups", "workers", "workload", "oom", "cleanup"]
SIGNALS = {
    "SIGINT": [signal.SIGINT],
    "SIGTERM": [signal.SIGTERM],
    "SIGHUP": [signal.SIGHUP],
    "SIGKILL": [signal.SIGKILL],
    "SIGTERM+SIGTERM": [signal.SIGTERM, signal.SIGTERM],
    "SIGINT+SIGHUP": [signal.SIGINT, signal.SIGHUP],
}
EXIT_TIMEOUT = 20.0
PHASE_TIMEOUT = 30.0

SCENARIO = textwrap.dedent("""\
    name = "signal-matrix"
    description = "Groups, workers, files, shared memory, a shrinker daemon and an OOM kill."
    ticks = 60

    [machine]
    memory = "256M"

    [[group]]
    path = "/a"
    files = { "memory.limit_in_bytes" = "32M" }

    [[group]]
    path = "/b"

    [[task]]
    name = "t"
    group = "/a"

    [[task]]
    name = "u"
    group = "/b"

    [[step]]
    at = 0
    task = "u"
    cache_put = 4

    [[step]]
    at = 0
    task = "u"
    touch_shm = "seg"
    size = "4M"

    [[step]]
    at = 1
    task = "t"
    read_file = "data-{i}"
    size = "2M"
    repeat = 10

    [[step]]
    at = 12
    task = "t"
    touch_anon = "8M"
    repeat = 8

    [[step]]
    at = 22
    task = "u"
    touch_anon = "1M"
    repeat = 30
""")


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (None: gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2:].split()
    return None if rest[0] in "ZX" else rest[19]


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                text = f.read()
        except OSError:
            continue
        ppid = int(text[text.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = set(), [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def group_procs(top: str) -> set[int]:
    pids = set()
    for here, _dirs, _files in os.walk(top):
        try:
            with open(os.path.join(here, "cgroup.procs")) as f:
                pids.update(int(x) for x in f.read().split())
        except OSError:
            pass
    return pids


def read_int(path: str, key: str | None = None) -> int:
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return 0
    if key is None:
        return int(text.strip() or 0)
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            return int(v)
    return 0


class Run:
    def __init__(self, parent: str, scenario: str, tmpdir: str):
        self.parent = parent
        # unbuffered: the summary is seen when it is printed, before the clean-up at exit
        env = dict(os.environ, PYTHONPATH=SRC, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "memcg", "run", scenario, "--backend",
                                      "linux"], cwd=tmpdir, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self.stdout = b""
        self.stderr = b""
        self.workers: dict[int, str] = {}    # pid -> start time
        threading.Thread(target=self._drain, args=("stdout",), daemon=True).start()
        threading.Thread(target=self._drain, args=("stderr",), daemon=True).start()

    def _drain(self, name: str) -> None:
        stream = getattr(self.proc, name)
        for chunk in iter(lambda: stream.read1(4096), b""):
            setattr(self, name, getattr(self, name) + chunk)

    def names(self) -> list[str]:
        tag = f"{PREFIX}{self.proc.pid}-"
        return sorted({os.path.basename(p) for base in (self.parent, tempfile.gettempdir(), "/dev/shm")
                       for p in glob.glob(os.path.join(base, tag + "*"))})

    def root(self) -> str | None:
        for n in self.names():
            if os.path.isdir(os.path.join(self.parent, n)):
                return os.path.join(self.parent, n)
        return None

    def note_workers(self) -> set[int]:
        root = self.root()
        pids = descendants(self.proc.pid) | (group_procs(root) if root else set())
        for pid in pids:
            st = start_time(pid)
            if st is not None:
                self.workers.setdefault(pid, st)
        return pids

    def reached(self, phase: str, state: dict) -> bool:
        root = self.root()
        if phase == "started":
            return True
        if phase == "groups":
            return root is not None and os.path.isdir(os.path.join(root, "a"))
        pids = self.note_workers()
        if root is None:
            return False
        if phase == "workers":
            return bool(group_procs(root))
        if phase == "workload":
            return read_int(os.path.join(root, "a", "memory.usage_in_bytes")) >= 4 << 20
        if phase == "oom":
            return read_int(os.path.join(root, "a", "memory.oom_control"), "oom_kill") >= 1
        if phase == "cleanup":
            # the run closes its kernel before the summary: the first worker to go a
            # while after the OOM kill is the clean-up stopping them
            now = time.monotonic()
            if "oom" not in state:
                if read_int(os.path.join(root, "a", "memory.oom_control"), "oom_kill") >= 1:
                    state["oom"] = now
                return False
            if now - state["oom"] < 1.0:
                state["live"] = pids
                return False
            gone = bool(state["live"] - pids)
            state["live"] = pids
            return gone
        raise ValueError(phase)


def leftovers(run: Run) -> dict:
    names = run.names()
    groups = []
    for n in names:
        top = os.path.join(run.parent, n)
        if os.path.isdir(top):
            groups += [d for d, _s, _f in os.walk(top)]
    files = [os.path.join(b, n) for n in names for b in (tempfile.gettempdir(), "/dev/shm")
             if os.path.isdir(os.path.join(b, n))]
    runtime = [os.path.join(f, "run") for f in files if os.path.isdir(os.path.join(f, "run"))]
    workers = [pid for pid, st in run.workers.items() if start_time(pid) == st]
    return {"groups": len(groups), "workers": len(workers), "dirs": len(files),
            "runtime": len(runtime), "_pids": workers}


def sweep_next_run() -> None:
    """What the next run does first: a LinuxKernel below the same parent, closed again."""
    code = "import memcg; memcg.LinuxKernel().close()"
    subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=SRC),
                   check=True, timeout=60)


def one(parent: str, scenario: str, tmpdir: str, phase: str, signame: str) -> dict:
    run = Run(parent, scenario, tmpdir)
    state: dict = {}
    deadline = time.monotonic() + PHASE_TIMEOUT
    hit = False
    while time.monotonic() < deadline and run.proc.poll() is None:
        if run.reached(phase, state):
            hit = True
            break
        time.sleep(0.005)
    if hit:
        for sig in SIGNALS[signame]:
            run.proc.send_signal(sig)
    t0 = time.monotonic()
    try:
        run.proc.wait(timeout=EXIT_TIMEOUT if hit else PHASE_TIMEOUT)
        status = run.proc.returncode
    except subprocess.TimeoutExpired:
        status = "hang"
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.wait()
    exit_s = time.monotonic() - t0
    time.sleep(0.3)          # a worker killed by PR_SET_PDEATHSIG is reaped by then
    left = leftovers(run)
    swept = None
    if left["groups"] or left["dirs"] or left["workers"]:
        for pid in left["_pids"]:     # a live worker would keep its group: not ours to wait for
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        sweep_next_run()
        after = leftovers(run)
        swept = {k: left[k] - after[k] for k in ("groups", "dirs", "runtime")}
        swept["left"] = after["groups"] + after["dirs"]
    return {"phase": phase, "signal": signame, "reached": hit, "status": status,
            "exit_s": round(exit_s, 2), **{k: v for k, v in left.items() if not k.startswith("_")},
            "swept": swept}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phases", default=",".join(PHASES))
    ap.add_argument("--signals", default=",".join(SIGNALS))
    opts = ap.parse_args()
    from memcg.backends.linux import v1_memory_cgroup
    parent = v1_memory_cgroup()
    rows = []
    with tempfile.TemporaryDirectory(prefix="memcg-signals-") as tmpdir:
        scenario = os.path.join(tmpdir, "matrix.toml")
        with open(scenario, "w") as f:
            f.write(SCENARIO)
        print("| phase | signal | reached | exit | s to exit | groups | workers | file dirs "
              "| runtime dirs | removed by the next run's sweep |")
        print("|---|---|---|---|---:|---:|---:|---:|---:|---|")
        for phase in opts.phases.split(","):
            for signame in opts.signals.split(","):
                r = one(parent, scenario, tmpdir, phase, signame)
                rows.append(r)
                st = r["status"]
                st = st if st == "hang" or st >= 0 else f"-{signal.Signals(-st).name}"
                sw = ("-" if r["swept"] is None else
                      f"{r['swept']['groups']} groups, {r['swept']['dirs']} dirs, "
                      f"{r['swept']['left']} left")
                print(f"| {phase} | {signame} | {'yes' if r['reached'] else 'no'} | {st} "
                      f"| {r['exit_s']} | {r['groups']} | {r['workers']} | {r['dirs']} "
                      f"| {r['runtime']} | {sw} |", flush=True)
    bad = [r for r in rows if r["status"] == "hang" or r["workers"]
           or (r["swept"] and r["swept"]["left"])
           or (r["signal"] != "SIGKILL" and (r["groups"] or r["dirs"]))]
    reached = sum(r["reached"] for r in rows)
    print(f"\n{len(rows)} runs, {reached} stopped at their phase; {len(bad)} with a hang, a live "
          f"worker, or leftovers that a clean exit or the next sweep did not remove")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
