#!/usr/bin/env python3
"""Measure the accounting outcomes of small workloads on the live cgroup v1 memory controller.

Needs root and a mounted cgroup v1 memory hierarchy.  Every group is created as
a child of the caller's own memory cgroup (read from /proc/self/cgroup), under
a container group named memcg-behaviour-<pid>.  Only worker processes this
script starts are ever moved; every group, worker, eventfd and file is removed
again at the end, also on failure.

Method (see docs/real-kernel-behaviour.md):
- A worker is a child Python process driven over a pipe (commands below).  It
  is pinned to CPU 0 (this script pins itself to another CPU), warmed up in the
  caller's group and only then moved into the target group, so the group is
  charged only for what the commands do.
- Anonymous memory is mmap(MAP_PRIVATE|MAP_ANONYMOUS) with one byte written
  per 4096-byte page (Python's mmap.mmap(-1, n) alone would be MAP_SHARED,
  i.e. shmem).
- Data files live in a temporary directory on the root filesystem; they are
  written, fsync()ed and dropped from the page cache with
  posix_fadvise(POSIX_FADV_DONTNEED) before the measured read (mincore()
  confirms 0 resident pages).
- A snapshot drains the worker's per-CPU LRU batch (madvise(MADV_COLD) on an
  empty mapping calls lru_add_drain() on CPU 0), waits 2.5 s for the periodic
  memcg stat flush, then reads the files.

Output: JSON on stdout, or in the file given with --out.

    python3 tools/measure_behaviour.py --out tests/data/kernel_v1_behaviour.json
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import mmap
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# The package's own sources, so that the tool runs from a checkout (as root too).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src"))
from memcg.backends.linux import LinuxUnavailable, v1_memory_cgroup  # noqa: E402

PAGE = 4096
KiB = 1024
MiB = 1024 * 1024
FLUSH_WAIT = 2.5   # the memcg stats are flushed every 2 s
WORKER_CPU = 0

# ---------------------------------------------------------------------------------------------
# The worker: a line protocol on stdin/stdout.
#   touch_anon N [locked] | free_anon N | read_file PATH N | write_file PATH N
#   touch_shm NAME N | drain | ping | exit
# ---------------------------------------------------------------------------------------------
WORKER = r'''
import mmap, os, sys, ctypes
os.sched_setaffinity(0, {%(cpu)d})
PAGE = 4096
FLAGS = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
MADV_COLD = 20
libc = ctypes.CDLL(None, use_errno=True)
libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
maps = []          # anonymous mappings, newest last
shms = []          # shared mappings of tmpfs files
buf = bytearray(256 * 1024)
for i in range(0, len(buf), PAGE):
    buf[i] = 1
mv = memoryview(buf)
wbuf = memoryview(bytes(range(256)) * 1024)
drainmap = mmap.mmap(-1, PAGE, flags=FLAGS)   # never touched: madvise walks no pages

def touch(m, n):
    for off in range(0, n, PAGE):
        m[off] = 1

def address(m):
    c = ctypes.c_char.from_buffer(m)
    a = ctypes.addressof(c)
    del c
    return a

def run(argv):
    op = argv[0]
    if op == "ping":
        return "ok"
    if op == "touch_anon":
        n = int(argv[1])
        m = mmap.mmap(-1, n, flags=FLAGS)
        if len(argv) > 2 and argv[2] == "locked":
            if libc.mlock(address(m), n) != 0:
                return "err mlock %%d" %% ctypes.get_errno()
        touch(m, n)
        maps.append(m)
        return "ok"
    if op == "free_anon":
        left = int(argv[1])
        while left > 0 and maps:
            m = maps.pop()
            left -= len(m)
            m.close()
        return "ok"
    if op == "read_file":
        n = int(argv[2])
        fd = os.open(argv[1], os.O_RDONLY)
        try:
            got = 0
            while got < n:
                k = os.readv(fd, [mv[:min(len(buf), n - got)]])
                if k <= 0:
                    break
                got += k
        finally:
            os.close(fd)
        return "ok %%d" %% got
    if op == "write_file":
        n = int(argv[2])
        fd = os.open(argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            done = 0
            while done < n:
                done += os.write(fd, wbuf[:min(len(wbuf), n - done)])
        finally:
            os.close(fd)
        return "ok %%d" %% done
    if op == "touch_shm":
        name, n = argv[1], int(argv[2])
        path = name if name.startswith("/") else "/dev/shm/" + name
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.ftruncate(fd, n)
            m = mmap.mmap(fd, n, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)
        touch(m, n)
        shms.append(m)
        return "ok"
    if op == "drain":
        drainmap.madvise(MADV_COLD)
        return "ok"
    return "err unknown command"

while True:
    line = sys.stdin.readline()
    if not line or line.strip() == "exit":
        break
    try:
        r = run(line.split())
    except Exception as e:
        r = "err %%s: %%s" %% (type(e).__name__, e)
    sys.stdout.write(r + "\n")
    sys.stdout.flush()
''' % {"cpu": WORKER_CPU}


class WorkerDied(Exception):
    pass


class Worker:
    def __init__(self, warm_file: str | None = None):
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.pid = self.proc.pid
        self.pending = False
        self.last = None
        # warm every code path up in the caller's group
        self.cmd("ping")
        self.cmd(f"touch_anon {PAGE}")
        self.cmd(f"free_anon {PAGE}")
        if warm_file:
            self.cmd(f"read_file {warm_file} {64 * KiB}")
        self.cmd("drain")

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        self.pending = True

    def wait_reply(self, timeout: float = 120.0) -> str | None:
        """The reply, None on timeout; WorkerDied if the worker is gone."""
        fd = self.proc.stdout.fileno()
        r, _, _ = select.select([fd], [], [], timeout)
        if not r:
            return None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.pending = False
            raise WorkerDied(self.proc.returncode)
        self.pending = False
        self.last = line.strip()
        if self.last.startswith("err"):
            raise RuntimeError(f"worker: {self.last}")
        return self.last

    def cmd(self, line: str, timeout: float = 120.0) -> str | None:
        self.send(line)
        return self.wait_reply(timeout)

    def try_cmd(self, line: str, timeout: float = 120.0) -> str:
        """Run a command that may get the worker killed: "ok", "timeout" or "killed"."""
        try:
            r = self.cmd(line, timeout)
        except WorkerDied:
            return "killed"
        return "timeout" if r is None else "ok"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def status(self) -> str:
        rc = self.proc.poll()
        if rc is None:
            return "alive"
        if rc < 0:
            return f"killed by {signal.Signals(-rc).name}"
        return f"exited {rc}"

    def proc_state(self) -> dict:
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                stat = f.read()
            with open(f"/proc/{self.pid}/wchan") as f:
                wchan = f.read().strip()
        except OSError:
            return {"state": None, "wchan": None}
        return {"state": stat[stat.rindex(")") + 2], "wchan": wchan}

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


class Event:
    def __init__(self, group: "Group", name: str, args: str = ""):
        self.efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.cfd = os.open(group.p(name), os.O_RDONLY | os.O_CLOEXEC)
        line = f"{self.efd} {self.cfd} {args}".rstrip()
        with open(group.p("cgroup.event_control"), "w") as f:
            f.write(line)
        self.name = name
        self.args = args

    def count(self) -> int:
        try:
            return os.eventfd_read(self.efd)
        except BlockingIOError:
            return 0

    def close(self) -> None:
        for fd in (self.efd, self.cfd):
            try:
                os.close(fd)
            except OSError:
                pass


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def parse_kv(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        out[k] = int(v)
    return out


class Group:
    def __init__(self, path: str, rel: str):
        self.path = path
        self.rel = rel

    def p(self, name: str) -> str:
        return os.path.join(self.path, name)

    def read(self, name: str) -> str:
        return _read(self.p(name))

    def num(self, name: str) -> int:
        return int(self.read(name))

    def write(self, name: str, text: str) -> None:
        _write(self.p(name), text)

    def add(self, w: Worker) -> None:
        self.write("cgroup.procs", str(w.pid))

    def files(self) -> dict:
        out = {}
        for name in ("usage_in_bytes", "max_usage_in_bytes", "failcnt",
                     "memsw.usage_in_bytes", "memsw.max_usage_in_bytes", "memsw.failcnt",
                     "kmem.usage_in_bytes", "kmem.max_usage_in_bytes"):
            out[name] = self.num("memory." + name)
        out["oom_control"] = parse_kv(self.read("memory.oom_control"))
        stat = parse_kv(self.read("memory.stat"))
        out["stat"] = {k: v for k, v in stat.items()
                       if not k.startswith("total_") and not k.startswith("hierarchical_")}
        return out


class Measure:
    def __init__(self, base: str, tmpdir: str):
        self.base = base
        self.tmpdir = tmpdir
        self.top = os.path.join(base, f"memcg-behaviour-{os.getpid()}")
        os.mkdir(self.top)
        self.groups: list[Group] = []
        self.workers: list[Worker] = []
        self.events: list[Event] = []
        self.shm_files: list[str] = []
        self.warm = self.datafile("warm", 64 * KiB)
        self.results: dict = {}

    # ----- resources ------------------------------------------------------------------------
    def group(self, name: str, limit: str | None = None) -> Group:
        g = Group(os.path.join(self.top, name), name)
        os.mkdir(g.path)
        self.groups.append(g)
        if limit:
            g.write("memory.limit_in_bytes", limit)
        return g

    def worker(self, g: Group | None) -> Worker:
        w = Worker(self.warm)
        self.workers.append(w)
        if g is not None:
            g.add(w)
        return w

    def event(self, g: Group, name: str, args: str = "") -> Event:
        e = Event(g, name, args)
        self.events.append(e)
        return e

    def datafile(self, name: str, size: int) -> str:
        """A file of `size` bytes, on disk and not in the page cache."""
        path = os.path.join(self.tmpdir, name)
        chunk = bytes(range(256)) * 4096
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            done = 0
            while done < size:
                done += os.write(fd, chunk[:min(len(chunk), size - done)])
            os.fsync(fd)
        finally:
            os.close(fd)
        self.drop_cache(path)
        return path

    @staticmethod
    def drop_cache(path: str) -> int:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
        return resident_pages(path)

    def finish_worker(self, w: Worker) -> None:
        w.kill()

    def snapshot(self, g: Group, *workers: Worker, wait: float = FLUSH_WAIT) -> dict:
        for w in workers:
            if w.alive and not w.pending:
                try:
                    w.cmd("drain", timeout=10)
                except WorkerDied:
                    pass
        time.sleep(wait)
        snap = g.files()
        if workers:
            snap["worker"] = workers[0].status() if len(workers) == 1 else [w.status() for w in workers]
        return snap

    # ----- cleanup -------------------------------------------------------------------------
    def cleanup(self) -> None:
        errors = []
        for w in self.workers:
            try:
                w.kill()
            except Exception as e:  # noqa: BLE001
                errors.append(f"kill {w.pid}: {e}")
        for e in self.events:
            e.close()
        for path in self.shm_files:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        for g in reversed(self.groups):
            if not os.path.isdir(g.path):
                continue
            try:
                g.write("memory.force_empty", "0")
            except OSError:
                pass
            for attempt in range(200):
                try:
                    os.rmdir(g.path)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or attempt == 199:
                        errors.append(f"rmdir {g.rel}: {e}")
                        break
                    time.sleep(0.05)
        for attempt in range(200):
            try:
                os.rmdir(self.top)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or attempt == 199:
                    errors.append(f"rmdir top: {e}")
                    break
                time.sleep(0.05)
        if errors:
            print("cleanup problems: " + "; ".join(errors), file=sys.stderr)

    # ----- workloads -------------------------------------------------------------------------
    def run(self, only: set[str] | None = None) -> dict:
        for name in ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m"]:
            if only and name not in only:
                continue
            print(f"workload {name}", file=sys.stderr)
            getattr(self, "w_" + name)()
        return self.results

    def w_a(self):
        g = self.group("a")
        w = self.worker(g)
        w.cmd(f"touch_anon {4 * MiB}")
        self.results["a"] = {
            "note": "no limit; touch_anon 4 MiB (1024 pages, one mmap)",
            "after_touch": self.snapshot(g, w),
        }
        w.kill()

    def w_b(self):
        out = {"note": "three fresh groups, no limit; touch_anon of 1, 64 and 65 pages in one mmap each"}
        for pages in (1, 64, 65):
            g = self.group(f"b{pages}")
            w = self.worker(g)
            w.cmd(f"touch_anon {pages * PAGE}")
            out[f"pages_{pages}"] = self.snapshot(g, w)
            w.kill()
        self.results["b"] = out

    def w_c(self):
        g = self.group("c", "16M")
        w = self.worker(g)
        w.cmd(f"touch_anon {8 * MiB}")
        after_touch = self.snapshot(g, w)
        w.cmd(f"free_anon {8 * MiB}")
        self.results["c"] = {
            "note": "limit 16M; touch_anon 8 MiB then free_anon 8 MiB (munmap)",
            "after_touch": after_touch,
            "after_free": self.snapshot(g, w),
        }
        w.kill()

    def w_d(self):
        out = {}
        for key, limit_text, limit in (("limit_16M", "16M", 16 * MiB),
                                       ("limit_16M_minus_100K", "16284K", 16284 * KiB)):
            g = self.group("d" + key[5:].replace("_", ""), limit_text)
            w = self.worker(g)
            for _ in range(15):
                w.cmd(f"touch_anon {MiB}")
            at_15m = {"usage_in_bytes": g.num("memory.usage_in_bytes"),
                      "failcnt": g.num("memory.failcnt"),
                      "max_usage_in_bytes": g.num("memory.max_usage_in_bytes")}
            trace = []   # [extra pages, usage, failcnt, max_usage, worker]
            extra = 0
            at_limit = None
            outcome = "gave up after 1024 pages"
            while extra < 1024:
                r = w.try_cmd(f"touch_anon {PAGE}", timeout=30)
                extra += 1
                usage = g.num("memory.usage_in_bytes")
                trace.append([extra, usage, g.num("memory.failcnt"),
                              g.num("memory.max_usage_in_bytes"), r])
                if r != "ok":
                    outcome = f"worker {r} at extra page {extra}"
                    break
                if at_limit is None and usage >= limit:
                    at_limit = {"extra_pages": extra, **self.snapshot(g, w)}
            at_end = self.snapshot(g, w)
            fails = [t for t in trace if t[2] > at_15m["failcnt"] and t[4] == "ok"]
            out[key] = {
                "limit_in_bytes": limit,
                "outcome": outcome,
                "at_15M": at_15m,
                "at_limit": at_limit,
                "pages_charged_with_a_failure": len(fails),
                "failcnt_before_oom": fails[-1][2] if fails else at_15m["failcnt"],
                "at_end": at_end,
                "trace": trace,
            }
            w.kill()
        out["note"] = ("touch_anon 1 MiB x15 (15 mmaps), then touch_anon 1 page (own mmap) at a time "
                       "until the worker is OOM-killed; at_limit is the snapshot when usage_in_bytes "
                       "first reached the limit; trace rows are [extra pages, usage_in_bytes, failcnt, "
                       "max_usage_in_bytes, command result] after each page; done with limit 16M and "
                       "with a limit that is not a multiple of 64 pages (16M - 100K = 4071 pages)")
        self.results["d"] = out

    def w_e(self):
        g = self.group("e", "16M")
        w = self.worker(g)
        r = w.try_cmd(f"touch_anon {32 * MiB}", timeout=60)
        self.results["e"] = {
            "note": "limit 16M, no swap; touch_anon 32 MiB in one mmap",
            "command": r,
            "after": self.snapshot(g, w),
        }
        g.write("memory.force_empty", "1")
        self.results["e"]["after_force_empty"] = {
            "usage_in_bytes": g.num("memory.usage_in_bytes"),
            "kmem.usage_in_bytes": g.num("memory.kmem.usage_in_bytes")}
        w.kill()

    def w_f(self):
        g = self.group("f", "16M")
        g.write("memory.oom_control", "1")
        ev = self.event(g, "memory.oom_control")
        w = self.worker(g)
        w.send(f"touch_anon {32 * MiB}")
        reply = w.wait_reply(timeout=2.0)
        blocked = {"reply_within_2s": reply, **w.proc_state(),
                   "oom_control": parse_kv(g.read("memory.oom_control")),
                   "usage_in_bytes": g.num("memory.usage_in_bytes"),
                   "failcnt": g.num("memory.failcnt"),
                   "eventfd": ev.count()}
        time.sleep(1.0)
        blocked["proc_after_3s"] = w.proc_state()
        blocked["eventfd_after_3s"] = ev.count()
        g.write("memory.limit_in_bytes", "64M")
        try:
            reply = w.wait_reply(timeout=30) if w.pending else reply
            completed = reply is not None
        except WorkerDied:
            completed = False
        time.sleep(0.2)
        after = {"worker_completed": completed, "eventfd": ev.count()}
        after.update(self.snapshot(g, w))
        self.results["f"] = {
            "note": ("limit 16M, oom_kill_disable 1, eventfd on memory.oom_control; touch_anon 32 MiB; "
                     "then the limit is raised to 64M"),
            "blocked": blocked,
            "after_raise": after,
        }
        w.kill()

    def w_g(self):
        path = self.datafile("g.dat", 128 * MiB)
        resident = resident_pages(path)
        g = self.group("g", "32M")
        w = self.worker(g)
        w.cmd(f"read_file {path} {128 * MiB}")
        once = self.snapshot(g, w)
        w.cmd(f"read_file {path} {8 * MiB}")
        head1 = self.snapshot(g, w)
        w.cmd(f"read_file {path} {8 * MiB}")
        head2 = self.snapshot(g, w)
        self.results["g"] = {
            "note": ("limit 32M; a 128 MiB file (not in the page cache: resident pages before = "
                     f"{resident}) read once in 256 KiB read()s, then its first 8 MiB read twice"),
            "after_read_128M": once,
            "after_first_head_read": head1,
            "after_second_head_read": head2,
        }
        w.kill()
        os.unlink(path)

    def w_h(self):
        path = self.datafile("h.dat", 16 * MiB)
        ga, gb = self.group("hA"), self.group("hB")
        wa, wb = self.worker(ga), self.worker(gb)
        wa.cmd(f"read_file {path} {16 * MiB}")
        a1 = self.snapshot(ga, wa)
        wb.cmd(f"read_file {path} {16 * MiB}")
        b1 = self.snapshot(gb, wb)
        a2 = self.snapshot(ga, wa, wait=0)
        ga.write("memory.force_empty", "1")
        a3 = self.snapshot(ga, wa)
        wb.cmd(f"read_file {path} {16 * MiB}")
        b2 = self.snapshot(gb, wb)
        self.results["h"] = {
            "note": ("siblings A and B, no limit, one worker each; A reads a 16 MiB file, B reads the "
                     "same file; force_empty on A; B reads it again"),
            "A_after_A_read": a1,
            "B_after_B_read": b1,
            "A_after_B_read": a2,
            "A_after_force_empty": a3,
            "B_after_second_read": b2,
        }
        wa.kill()
        wb.kill()
        os.unlink(path)

    def w_i(self):
        path = os.path.join(self.tmpdir, "i.dat")
        open(path, "wb").close()
        g = self.group("i")
        w = self.worker(g)
        w.cmd(f"write_file {path} {8 * MiB}")
        self.results["i"] = {
            "note": "no limit; write() 8 MiB into an existing empty ext4 file (no fsync)",
            "after_write": self.snapshot(g, w),
        }
        w.kill()
        os.unlink(path)

    def w_j(self):
        name = f"memcg-behaviour-{os.getpid()}-j"
        path = "/dev/shm/" + name
        open(path, "wb").close()
        self.shm_files.append(path)
        g = self.group("j")
        w = self.worker(g)
        w.cmd(f"touch_shm {name} {8 * MiB}")
        self.results["j"] = {
            "note": "no limit; a /dev/shm file (created empty beforehand) truncated to 8 MiB, mmap(MAP_SHARED), one byte written per page",
            "after_touch": self.snapshot(g, w),
        }
        w.kill()
        time.sleep(0.2)
        self.results["j"]["after_worker_exit"] = self.snapshot(g)
        os.unlink(path)
        self.shm_files.remove(path)

    def w_k(self):
        g = self.group("k")
        e8 = self.event(g, "memory.usage_in_bytes", "8M")
        e24 = self.event(g, "memory.usage_in_bytes", "24M")
        w = self.worker(g)
        out = {"note": ("no limit; eventfds on memory.usage_in_bytes at 8M and 24M; touch_anon 16 MiB, "
                        "touch_anon 16 MiB, free_anon 32 MiB; counts read 0.1 s after each step")}
        for step, line in (("touch_16M", f"touch_anon {16 * MiB}"),
                           ("touch_16M_more", f"touch_anon {16 * MiB}"),
                           ("free_32M", f"free_anon {32 * MiB}")):
            w.cmd(line)
            time.sleep(0.1)
            out[step] = {"eventfd_8M": e8.count(), "eventfd_24M": e24.count(),
                         "usage_in_bytes": g.num("memory.usage_in_bytes")}
        self.results["k"] = out
        w.kill()

    def w_l(self):
        g = self.group("l")
        evs = {"usage_8M": self.event(g, "memory.usage_in_bytes", "8M"),
               "oom_control": self.event(g, "memory.oom_control"),
               "pressure_low": self.event(g, "memory.pressure_level", "low")}
        before = {k: e.count() for k, e in evs.items()}
        os.rmdir(g.path)
        time.sleep(0.1)
        after = {k: e.count() for k, e in evs.items()}
        time.sleep(0.5)
        later = {k: e.count() for k, e in evs.items()}
        self.results["l"] = {
            "note": "empty group with three eventfds registered; rmdir; counts 0.1 s and 0.6 s after",
            "before_rmdir": before,
            "after_rmdir_100ms": after,
            "after_rmdir_600ms_more": later,
        }

    def w_m(self):
        path = self.datafile("m.dat", 128 * MiB)
        runs = []
        for rep in (1, 2):
            self.drop_cache(path)
            resident = resident_pages(path)
            g = self.group(f"m{rep}", "32M")
            evs = {a: self.event(g, "memory.pressure_level", a)
                   for a in ("low", "medium", "critical", "low,local", "low,hierarchy")}
            w = self.worker(g)
            w.cmd(f"read_file {path} {128 * MiB}")
            time.sleep(0.3)
            counts = {a: e.count() for a, e in evs.items()}
            snap = self.snapshot(g, w)
            runs.append({"resident_pages_before": resident, "eventfd": counts,
                         "after_read": snap})
            w.kill()
        self.results["m"] = {
            "note": ("limit 32M; five memory.pressure_level eventfds on the group (low, medium, critical, "
                     "low,local, low,hierarchy); a 128 MiB uncached file read once; done twice in "
                     "fresh groups"),
            "runs": runs,
        }
        os.unlink(path)


def resident_pages(path: str) -> int:
    """Pages of the file in the page cache (mincore)."""
    size = os.path.getsize(path)
    if size == 0:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap")
        try:
            n = (size + PAGE - 1) // PAGE
            vec = ctypes.create_string_buffer(n)
            if libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore")
            return sum(b & 1 for b in vec.raw[:n])
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="write the JSON here instead of stdout")
    ap.add_argument("--only", help="comma-separated workload ids (a..m)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root")
    cpus = sorted(os.sched_getaffinity(0))
    others = [c for c in cpus if c != WORKER_CPU]
    if others:
        os.sched_setaffinity(0, {others[0]})
    try:
        base = v1_memory_cgroup()
    except LinuxUnavailable as e:
        raise SystemExit(e.strerror) from None
    tmpdir = tempfile.mkdtemp(prefix="memcg-behaviour-")
    m = None
    try:
        m = Measure(base, tmpdir)
        results = m.run(set(args.only.split(",")) if args.only else None)
    finally:
        if m is not None:
            m.cleanup()
        shutil.rmtree(tmpdir, ignore_errors=True)
    doc = {
        "kernel": os.uname().release,
        "measured": "2026-11-22",
        "page_size": PAGE,
        "machine": {"cpus": os.cpu_count(), "swap": "none (memsw files present, swap accounting on)",
                    "transparent_hugepage": _read("/sys/kernel/mm/transparent_hugepage/enabled").strip()},
        "method": ("tools/measure_behaviour.py: each workload in a fresh child group of the caller's "
                   "memory cgroup (use_hierarchy 1); the worker (a Python child pinned to CPU 0, "
                   "driven over a pipe) starts and warms up in the caller's group and is then moved "
                   "into the group; snapshots drain the worker's LRU batch, wait 2.5 s for the stat "
                   "flush and read memory.{usage_in_bytes,max_usage_in_bytes,failcnt,memsw.*,kmem.*,"
                   "oom_control,stat}; stat omits total_* and hierarchical_* lines. Anonymous memory is "
                   "mmap(MAP_PRIVATE|MAP_ANONYMOUS), one byte written per page. Files are on ext4, "
                   "fsync()ed and dropped with POSIX_FADV_DONTNEED before the measured read."),
        "workloads": results,
    }
    text = json.dumps(doc, indent=1) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
