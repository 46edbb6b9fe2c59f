"""`memcg calibrate`: measure this machine's kernel-memory costs on real cgroups.

Each figure is the growth of a group's memory.kmem.usage_in_bytes (or, for the worker
baseline, memory.usage_in_bytes) over many repetitions of one operation by a worker
that was moved into a fresh group, divided by the number of repetitions:

- kmem_fork_bytes: fork() of a worker's child (kernel stack, task_struct, mm, the VMAs
  and page tables of the fork code's two pages: the interpreter's own mappings are not
  copied, worker.py FORK_CODE), which is what a `fork` step costs on the Linux backend;
- fork_child_faults: the minor faults of such a child by the time it waits for its first
  command (/proc/PID/stat minflt: the fork code's shared data page, not copied at fork);
- kmem_mkdir_bytes_<fs>, kmem_file_bytes_<fs>: mkdir() and creat() of an empty file on
  tmpfs (/dev/shm) and on the working file system (ext4 where it is one);
- kmem_socket_bytes: one connected loopback TCP socket pair (both ends, plus the
  listening socket's share);
- worker_baseline_bytes: memory.usage_in_bytes of a group in which an idle worker was
  started (its whole start-up, per-CPU charge stock included);
- worker_rss_bytes, worker_pgtables_bytes: an idle worker's resident set and page tables
  (/proc/PID/status VmRSS, VmPTE), charged where it started, counted by the OOM killer;
- read_ahead_kb, max_sectors_kb: read from sysfs for the block device holding the
  working directory (the bdi's ra_pages and io_pages that mm/readahead.c sizes its
  windows and folios by); left out where the files are on no block device.

The result has the keys of memcg.profile.PROFILE_KEYS (a key whose file system is not
available is left out, so its default applies) plus descriptive "kernel", "measured"
and "machine" fields; `SimKernel(profile=FILE)` loads it.

Besides the Kernel interface it uses what only real cgroups have, LinuxKernel's own
public calls: spawn(start_inside=True) (a worker's start-up charged to its group),
scratch_dir() and mkdirs()/create_files() with where= (a fresh directory per
measurement) and working_fs (the working directory's file system).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from typing import Callable

from .backends.linux import LinuxKernel, procfs
from .profile import PROFILE_KEYS

__all__ = ["calibrate", "profile_json", "summary", "measure_fork", "measure_fork_faults", "measure_fs", "measure_sockets",
           "measure_baseline", "measure_worker_mm", "measure_disk"]

FORKS = 8
FS_OBJECTS = 400
SOCKETS = 32


def _kmem(k: LinuxKernel, group: str) -> int:
    return int(k.read(f"{group}/memory.kmem.usage_in_bytes"))


def _group_with_worker(k: LinuxKernel, group: str):
    k.mkdir(group)
    return k.spawn(group)


def measure_fork(k: LinuxKernel, n: int = FORKS) -> float:
    """kmem per fork() of an idle worker."""
    t = _group_with_worker(k, "/fork")
    t.fork()                      # the first fork also sets up shared state: not counted
    before = _kmem(k, "/fork")
    for _ in range(n):
        t.fork()
    return (_kmem(k, "/fork") - before) / n


def measure_fork_faults(k: LinuxKernel, n: int = FORKS) -> float:
    """Minor faults per forked child of an idle worker, once fork() has returned (the
    child has written its ready message: it waits for a command)."""
    t = _group_with_worker(k, "/forkfault")
    faults = [procfs.min_flt(t.fork().pid) or 0 for _ in range(n)]
    return sum(faults) / n


def measure_fs(k: LinuxKernel, fs: str, n: int = FS_OBJECTS) -> tuple[float, float]:
    """kmem per mkdir() and per empty file on the "tmpfs" or "disk" scratch space."""
    group = f"/fs-{fs}"
    t = _group_with_worker(k, group)
    out = []
    for make in (t.mkdirs, t.create_files):
        base = k.scratch_dir(fs)
        make(8, where=base)                                  # warm the directory up
        before = _kmem(k, group)
        make(n, where=base)
        out.append((_kmem(k, group) - before) / n)
    return out[0], out[1]


def measure_sockets(k: LinuxKernel, n: int = SOCKETS) -> float:
    """kmem per connected loopback TCP socket pair (both ends in the group)."""
    k.mkdir("/tcp")
    a, b = k.spawn("/tcp"), k.spawn("/tcp")
    a.connect_tcp(b)                                          # warm-up
    before = _kmem(k, "/tcp")
    for _ in range(n):
        a.connect_tcp(b)
    return (_kmem(k, "/tcp") - before) / n


def measure_worker_mm(k: LinuxKernel) -> dict:
    """An idle worker's rss and page tables, moved into a group as spawn() does."""
    t = _group_with_worker(k, "/mm")
    st = t.mm_status() or {}
    return {"worker_rss_bytes": st.get("rss", 0), "worker_pgtables_bytes": st.get("pgtables", 0)}


def measure_baseline(k: LinuxKernel) -> int:
    """memory.usage_in_bytes of a group with one idle worker started inside it."""
    k.mkdir("/baseline")
    k.spawn("/baseline", start_inside=True)
    return int(k.read("/baseline/memory.usage_in_bytes"))


def measure_disk(path: str) -> dict:
    """read_ahead_kb and max_sectors_kb of the block device holding path, from
    /sys/dev/block/MAJ:MIN/queue (a partition's queue is its disk's); {} when path is on
    no block device (tmpfs, overlay)."""
    dev = os.stat(path).st_dev
    sysdir = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}"
    for queue in (os.path.join(sysdir, "queue"), os.path.join(sysdir, "..", "queue")):
        out = {}
        for key in ("read_ahead_kb", "max_sectors_kb"):
            try:
                with open(os.path.join(queue, key), encoding="ascii") as f:
                    out[key] = int(f.read().strip())
            except (OSError, ValueError):
                break
        else:
            return out
    return {}


def calibrate(kernel: LinuxKernel | None = None,
              progress: Callable[[str], None] | None = None) -> dict:
    """Measure every profile key on real cgroups; a dict ready for profile_json().

    Uses (and closes) `kernel`, or a new LinuxKernel; raises LinuxUnavailable (an
    OSError) where real cgroups cannot be used.
    """
    say = progress or (lambda msg: None)
    k = kernel if kernel is not None else LinuxKernel(tick=0)
    prof: dict = {}
    fs_of = {"tmpfs": "tmpfs", "disk": k.working_fs}
    try:
        say("measuring kmem per fork")
        prof["kmem_fork_bytes"] = measure_fork(k)
        say("measuring faults per forked child")
        prof["fork_child_faults"] = measure_fork_faults(k)
        for space, fstype in fs_of.items():
            key = "tmpfs" if space == "tmpfs" else fstype
            if f"kmem_mkdir_bytes_{key}" not in PROFILE_KEYS:
                say(f"skipping directories and files: the working file system is {fstype}")
                continue
            say(f"measuring kmem per directory and per file on {key}")
            prof[f"kmem_mkdir_bytes_{key}"], prof[f"kmem_file_bytes_{key}"] = measure_fs(k, space)
        say("measuring kmem per TCP socket pair")
        prof["kmem_socket_bytes"] = measure_sockets(k)
        say("measuring an idle worker's footprint")
        prof["worker_baseline_bytes"] = measure_baseline(k)
        prof.update(measure_worker_mm(k))
        say("reading the readahead limits of the working directory's disk")
        prof.update(measure_disk(k.scratch_dir("disk")))
    finally:
        k.close()
    prof = {key: round(max(0.0, v)) for key, v in prof.items()}
    prof["kernel"] = platform.release()
    prof["measured"] = datetime.date.today().isoformat()
    prof["machine"] = {"cpus": os.cpu_count(), "working_fs": fs_of["disk"],
                       "method": "memcg calibrate: kmem growth of a fresh group per operation "
                                 "of a worker moved into it"}
    return prof


def profile_json(profile: dict) -> str:
    """The profile file's text."""
    return json.dumps(profile, indent=2) + "\n"


def summary(profile: dict) -> str:
    """One line per measured key, with what it is."""
    lines = [f"calibration on Linux {profile.get('kernel', '?')}"]
    width = max(len(k) for k in PROFILE_KEYS)
    for key, (_, what) in PROFILE_KEYS.items():
        value = profile.get(key)
        unit = "KiB" if key.endswith("_kb") else "faults" if key.endswith("_faults") else "bytes"
        shown = "not measured (default applies)" if value is None else f"{value} {unit}"
        lines.append(f"  {key.ljust(width)}  {shown:>12}  {what}")
    return "\n".join(lines) + "\n"
