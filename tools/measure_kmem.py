#!/usr/bin/env python3
"""Measure how much kernel memory (memory.kmem.usage_in_bytes) one fork, one directory
and one empty file cost on the live cgroup v1 memory controller.

Needs root, a C compiler and a mounted cgroup v1 memory hierarchy.  Every group is a
child of a container group memcg-kmem-<pid> made below the caller's own memory cgroup
(read from /proc/self/cgroup); only the worker this script starts (and the children
it forks) are ever moved; every group, process and directory is removed at the end,
also on failure.

Method (the figures are in docs/kmem.md):
- The worker is a small C program (embedded below, compiled into a temporary
  directory) driven over a pipe and pinned to CPU 0.  It starts in the caller's
  group, warms every code path up there (one fork, one mkdir, one file on each file
  system), and only then moves into a fresh group.  So the group is charged only
  for what the measured commands do.
- "fork N": the worker forks N children that block in read() on a pipe; "reap" lets
  them exit and waits for them.  "mkdir DIR N" makes N sibling directories,
  "create DIR N" N empty files (open O_CREAT, close), "nest DIR N" the loop of the
  kmem controller's cover letter (mkdir x; cd x) N times.  "sock N" opens N connected
  loopback TCP pairs (connect + accept, both ends kept open).
- Each figure is (kmem after - kmem before) / N with N = 1000 (fork: 200), so the
  page granularity of the counter (objects are charged in bytes through a per-CPU
  stock, the counter moves in whole pages) adds at most 4096 / N bytes.  memory.stat
  "cache" is read after the 2 s statistics flush (ext4 directories add page cache:
  directory blocks and inode-table blocks of the block device).
- tmpfs is /dev/shm; ext4 is a temporary directory on the root file system.

    python3 tools/measure_kmem.py            # JSON on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time

# The package's own sources, so that the tool runs from a checkout (as root too).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src"))
from memcg.backends.linux import LinuxUnavailable, v1_memory_cgroup  # noqa: E402

FLUSH_WAIT = 2.5  # memcg statistics are flushed every 2 s
RCU_WAIT = 1.0  # task structs and stacks are freed after an RCU grace period
N_FS = 1000
N_FORK = 200
N_SOCK = 200

WORKER_C = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

static pid_t kids[4096];
static int nkids, gate[2] = {-1, -1};

static int do_fork(int n) {
    if (gate[0] < 0 && pipe(gate)) return -errno;
    for (int i = 0; i < n; i++) {
        pid_t p = fork();
        if (p < 0) return -errno;
        if (p == 0) {
            char c;
            close(gate[1]);
            while (read(gate[0], &c, 1) < 0 && errno == EINTR) ;
            _exit(0);
        }
        kids[nkids++] = p;
    }
    return nkids;
}

static int do_reap(void) {
    if (gate[1] >= 0) { close(gate[1]); close(gate[0]); gate[0] = gate[1] = -1; }
    while (nkids) waitpid(kids[--nkids], NULL, 0);
    return 0;
}

static int do_names(const char *dir, int n, int what) {
    char path[4096];
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/%c%d", dir, what == 'd' ? 'd' : 'f', i);
        if (what == 'd') {
            if (mkdir(path, 0755)) return -errno;
        } else {
            int fd = open(path, O_CREAT | O_WRONLY | O_EXCL, 0644);
            if (fd < 0) return -errno;
            close(fd);
        }
    }
    return n;
}

static int lfd = -1, socks[8192], nsocks;

static int do_sock(int n) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (lfd < 0) {
        lfd = socket(AF_INET, SOCK_STREAM, 0);
        if (lfd < 0 || bind(lfd, (void *)&a, sizeof a) || listen(lfd, 4096)) return -errno;
    }
    if (getsockname(lfd, (void *)&a, &len)) return -errno;
    for (int i = 0; i < n; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        if (c < 0 || connect(c, (void *)&a, sizeof a)) return -errno;
        int s = accept(lfd, NULL, NULL);
        if (s < 0) return -errno;
        socks[nsocks++] = c;
        socks[nsocks++] = s;
    }
    return n;
}

static int do_nest(const char *dir, int n) {
    int here = open(".", O_RDONLY | O_DIRECTORY);
    if (chdir(dir)) return -errno;
    for (int i = 0; i < n; i++)
        if (mkdir("x", 0755) || chdir("x")) { int e = errno; fchdir(here); return -e; }
    fchdir(here);
    close(here);
    return n;
}

int main(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    sched_setaffinity(0, sizeof set, &set);
    char line[8192], a[4096];
    int n;
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        int r = 0;
        if (sscanf(line, "fork %d", &n) == 1) r = do_fork(n);
        else if (!strncmp(line, "reap", 4)) r = do_reap();
        else if (sscanf(line, "mkdir %4095s %d", a, &n) == 2) r = do_names(a, n, 'd');
        else if (sscanf(line, "create %4095s %d", a, &n) == 2) r = do_names(a, n, 'f');
        else if (sscanf(line, "nest %4095s %d", a, &n) == 2) r = do_nest(a, n);
        else if (sscanf(line, "sock %d", &n) == 1) r = do_sock(n);
        else if (!strncmp(line, "exit", 4)) break;
        printf("%d\n", r);
    }
    do_reap();
    return 0;
}
"""


def read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read())


def write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def cache_of(group: str) -> int:
    with open(os.path.join(group, "memory.stat")) as f:
        for line in f:
            key, val = line.split()
            if key == "cache":
                return int(val)
    return 0


class Worker:
    """The C worker, one line per command, one number per reply."""

    def __init__(self, binary: str):
        self.proc = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)

    def cmd(self, line: str, timeout: float = 60.0) -> int:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            raise RuntimeError(f"worker: no reply to {line!r}")
        reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError(f"worker died on {line!r}")
        val = int(reply)
        if val < 0:
            raise OSError(-val, f"worker: {line}: {os.strerror(-val)}")
        return val

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.cmd("reap")
                self.proc.stdin.write("exit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except Exception:
                self.proc.kill()
                self.proc.wait()


class Session:
    """Groups below a container of the caller's group, and their cleanup."""

    def __init__(self):
        try:
            self.base = v1_memory_cgroup()
        except LinuxUnavailable as e:
            raise SystemExit(e.strerror) from None
        self.container = os.path.join(self.base, f"memcg-kmem-{os.getpid()}")
        os.mkdir(self.container)
        self.groups: list[str] = []
        self.workers: list[Worker] = []
        self.tmp = tempfile.mkdtemp(prefix="memcg-kmem-")  # ext4 (root file system)
        self.shm = tempfile.mkdtemp(prefix="memcg-kmem-", dir="/dev/shm")  # tmpfs
        self.bin = os.path.join(self.tmp, "worker")
        src = self.bin + ".c"
        with open(src, "w") as f:
            f.write(WORKER_C)
        subprocess.run(["cc", "-O2", "-o", self.bin, src], check=True)

    def group(self, name: str) -> str:
        g = os.path.join(self.container, name)
        os.mkdir(g)
        self.groups.append(g)
        return g

    def worker(self) -> Worker:
        """A worker started in the caller's group and warmed up there."""
        w = Worker(self.bin)
        self.workers.append(w)
        w.cmd("fork 1")
        w.cmd("reap")
        for fs in (self.tmp, self.shm):
            d = tempfile.mkdtemp(dir=fs)
            w.cmd(f"mkdir {d} 1")
            w.cmd(f"create {d} 1")
            w.cmd(f"nest {d} 1")
        w.cmd("sock 1")
        return w

    def cleanup(self) -> None:
        for w in self.workers:
            w.close()
        # rm -rf: the nested trees are deeper than Python's recursion limit
        subprocess.run(["rm", "-rf", "--one-file-system", self.tmp, self.shm], check=False)
        for g in reversed(self.groups):
            try:
                os.rmdir(g)
            except OSError as e:
                print(f"cannot remove {g}: {e}", file=sys.stderr)
        try:
            os.rmdir(self.container)
        except OSError as e:
            print(f"cannot remove {self.container}: {e}", file=sys.stderr)


def measure(s: Session, name: str, op: str, n: int, settle: float = 0.0) -> dict:
    """Run op in a fresh group and report the kmem (and cache) growth per item."""
    g = s.group(name)
    w = s.worker()
    write(os.path.join(g, "cgroup.procs"), str(w.proc.pid))
    k0, c0 = read_int(os.path.join(g, "memory.kmem.usage_in_bytes")), cache_of(g)
    w.cmd(op)
    if settle:
        time.sleep(settle)
    time.sleep(FLUSH_WAIT)
    k1, c1 = read_int(os.path.join(g, "memory.kmem.usage_in_bytes")), cache_of(g)
    out = {"op": op.split()[0], "n": n, "kmem_delta": k1 - k0, "kmem_per_item": (k1 - k0) / n,
           "cache_delta": c1 - c0, "usage_after": read_int(os.path.join(g, "memory.usage_in_bytes"))}
    if op.startswith("fork"):
        w.cmd("reap")
        time.sleep(RCU_WAIT)
        out["kmem_after_reap"] = read_int(os.path.join(g, "memory.kmem.usage_in_bytes")) - k0
    # move the worker out again so the group can go
    write(os.path.join(s.base, "cgroup.procs"), str(w.proc.pid))
    w.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated: fork,mkdir,create,nest,sock")
    ap.add_argument("--repeat", type=int, default=1, help="measure each figure this many times")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(","))) or {"fork", "mkdir", "create", "nest", "sock"}
    s = Session()
    try:
        res = {"kernel": os.uname().release, "page_size": os.sysconf("SC_PAGE_SIZE"),
               "cpus": os.cpu_count(), "measured": time.strftime("%Y-%m-%d")}
        for i in range(args.repeat):
            sfx = f"_{i}" if args.repeat > 1 else ""
            if "fork" in only:
                res["fork" + sfx] = measure(s, "fork" + sfx, f"fork {N_FORK}", N_FORK)
            if "sock" in only:
                res["sock" + sfx] = measure(s, "sock" + sfx, f"sock {N_SOCK}", N_SOCK)
            for fs, root in (("tmpfs", s.shm), ("ext4", s.tmp)):
                for op in ("mkdir", "create", "nest"):
                    if op in only:
                        d = tempfile.mkdtemp(dir=root)
                        res[f"{op}_{fs}{sfx}"] = measure(s, f"{op}-{fs}{sfx}",
                                                         f"{op} {d} {N_FS}", N_FS)
        json.dump(res, sys.stdout, indent=1)
        print()
    finally:
        s.cleanup()


if __name__ == "__main__":
    main()
