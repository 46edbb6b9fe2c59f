"""Calibration profiles: the per-object costs of one machine's kernel, in bytes.

`memcg calibrate` measures them on real cgroups and writes a JSON profile;
`SimKernel(profile=FILE)` loads it, so the model's kernel-memory and socket figures
match the machine they are compared with.  Without a profile the defaults below apply;
each says where it was measured.
"""

from __future__ import annotations

import json

# key -> (default, what it is).  Defaults are filled in from measurements on the
# reference machine (Linux 6.18, x86-64); None means "not measured yet".
# The kmem_* defaults: tools/measure_kmem.py, 2026-11-22, kernel 6.18.44, 2 CPUs -
# memory.kmem.usage_in_bytes growth over 200 forks / 200 socket pairs / 1000 mkdirs or
# creats, divided by the count (tests/data/kernel_kmem.json; docs/kmem.md has every run).
PROFILE_KEYS: dict[str, tuple[float | None, str]] = {
    # a C program forking children that block in read(): 83640.32 in 7 of 11 runs
    # (79544.32 and 87736.32, one page-table page less or more, in the others)
    "kmem_fork_bytes": (83640.32, "kmem.usage_in_bytes growth per fork() of a small process"),
    # dentry 192 + shmem_inode_cache 752, 8 bytes each for the objcg pointer, + 2.56: every run
    "kmem_mkdir_bytes_tmpfs": (962.56, "kmem growth per mkdir on tmpfs"),
    # dentry + ext4_inode_cache 1128 + a buffer_head for the new directory block: the median
    # of 9 runs on blocks new to the page cache (1445.888 - 1474.56; down to 1347.584 when
    # the blocks were in the page cache already)
    "kmem_mkdir_bytes_ext4": (1466.368, "kmem growth per mkdir on ext4"),
    "kmem_file_bytes_tmpfs": (962.56, "kmem growth per empty file created on tmpfs"),
    # 1347.584 in 6 of 8 runs, 1343.488 in the others
    "kmem_file_bytes_ext4": (1347.584, "kmem growth per empty file created on ext4"),
    # connect() + accept() on 127.0.0.1, both ends kept open: every run
    "kmem_socket_bytes": (5160.96, "kmem growth per connected loopback TCP socket pair"),
    # the ext4 disk of the reference machine: /sys/block/vda/queue/read_ahead_kb and
    # max_sectors_kb (the bdi's ra_pages and io_pages, mm/readahead.c), 2026-12-03
    "read_ahead_kb": (8192, "readahead window limit of the disk holding the files, in KiB"),
    "max_sectors_kb": (4096, "largest request of that disk, in KiB (bdi io_pages)"),
    "worker_baseline_bytes": (None, "memory.usage_in_bytes of an idle worker process"),
    # a spawned task stands for a process started elsewhere and moved in: its resident set
    # and page tables were charged where it started, but mm/oom_kill.c: oom_badness()
    # counts them.  The real backend's idle worker (/proc/PID/status VmRSS, VmPTE,
    # `memcg calibrate` 2026-12-03, Python 3.11): 12.5-12.6 MiB, 64-72 KiB.
    "worker_rss_bytes": (13164544, "resident set of a spawned task, charged where it started"),
    "worker_pgtables_bytes": (69632, "page tables of a spawned task"),
    # A child's faults on its way from fork() to where it first blocks: the entries fork
    # did not copy (mm/memory.c: vma_needs_copy - a shared mapping's "page fault will
    # fill them"; a private one's copies are write-protected, copy_present_pte), each a
    # handle_mm_fault() counted in the child's group.  Not measured for a C program.
    "fork_child_faults": (None, "page faults a forked child takes before it first blocks"),
}


# What differs for the real backend's own processes (LinuxKernel): its workers fork
# children that run no Python and map only the two pages of the fork code and the task's
# own mappings (backends/worker.py FORK_CODE).  `memcg calibrate`, 2026-12-03, Linux
# 6.18, 2 CPUs: 45547.52 bytes per fork in every run (3 x 100 forks, and 8 runs of 25):
# the C program's libc mappings, their VMAs and page tables, are what it saves.
# Its child takes one fault before it blocks in read(): its first write(2) reads the
# ready message from the fork code's shared data page, whose entry fork did not copy
# (mm/memory.c: vma_needs_copy, no anon_vma), so copy_from_user faults it in
# (/proc/PID/stat minflt 1 for every child, memory.stat pgfault +1 per fork, pgpgin 0:
# the page is in the page cache already; 2026-12-04, 1 + 10 + 50 forks).
WORKER_FIGURES = {"kmem_fork_bytes": 45547.52, "fork_child_faults": 1}


def default_profile() -> dict:
    """The built-in profile: every key with its default."""
    return {k: v for k, (v, _) in PROFILE_KEYS.items()}


def worker_profile() -> dict:
    """The built-in profile of the real backend's processes: the defaults with
    WORKER_FIGURES (what `memcg compare` runs the model with unless given a profile)."""
    return {**default_profile(), **WORKER_FIGURES}


def load_profile(path: str) -> dict:
    """A profile file merged over the defaults.

    Raises ValueError naming the file and key for anything that is not a known key
    with a non-negative number.
    """
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise ValueError(f"{path}: cannot read profile: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of costs")
    prof = default_profile()
    for key, value in data.items():
        if key in ("kernel", "measured", "machine"):
            continue  # descriptive fields
        if key not in PROFILE_KEYS:
            raise ValueError(f"{path}: {key}: unknown profile key "
                             f"(expected one of {', '.join(PROFILE_KEYS)})")
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{path}: {key}: expected a non-negative number, got {value!r}")
        prof[key] = value
    return prof
