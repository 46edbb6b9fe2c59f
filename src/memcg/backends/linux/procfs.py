"""What /proc shows of a worker: its state, pending signals and where it sleeps.

A task's state comes from the kernel, not from the controller's bookkeeping: dead,
dying (an OOM victim being reaped) or blocked in the memcg charge path.
"""

from __future__ import annotations

import errno
import signal

from . import files

# A task waiting for a memcg OOM to be resolved (v1 oom_kill_disable, or an OOM being
# handled by another task) sleeps in mm/memcontrol-v1.c: mem_cgroup_oom_synchronize().
OOM_WAIT_WCHANS = ("mem_cgroup_oom_synchronize", "memcg1_oom_synchronize")


def stat_fields(text: str) -> list[str]:
    """The fields of a /proc/PID/stat line after comm, field 3 (state) first.  comm is
    printed inside parentheses as the task named itself, so it may hold spaces and
    parentheses of its own: the fields start after the last ')' (fs/proc/array.c:
    do_task_stat prints "%d (%s) %c ...")."""
    return text[text.rindex(")") + 2:].split()


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat, starttime: when the task started, in clock ticks after
    boot (fs/proc/array.c: do_task_stat, nsec_to_clock_t(task->start_boottime)).  With
    the pid it names one task: a pid reused by a newer task has a later start time.
    None if there is no such process."""
    text = files.read_quiet(f"/proc/{pid}/stat")
    if not text:
        return None
    fields = stat_fields(text)
    return int(fields[19]) if len(fields) > 19 else None


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, exit_code field) of /proc/PID/stat, None if the process is gone."""
    text = files.read_quiet(f"/proc/{pid}/stat")
    if not text:
        return None
    fields = stat_fields(text)
    code = int(fields[49]) if len(fields) > 49 else 0   # field 52: exit_code (waitpid format)
    return fields[0], code


def min_flt(pid: int) -> int | None:
    """Field 10 of /proc/PID/stat, minflt: the task's minor faults so far (fs/proc/array.c:
    do_task_stat, task->min_flt, counted by mm/memory.c: mm_account_fault).  None if
    there is no such process."""
    text = files.read_quiet(f"/proc/{pid}/stat")
    if not text:
        return None
    fields = stat_fields(text)
    return int(fields[7]) if len(fields) > 7 else None


# include/uapi/linux/oom.h
OOM_SCORE_ADJ_MIN = -1000
OOM_SCORE_ADJ_MAX = 1000


def oom_score_adj(pid: int) -> int | None:
    """/proc/PID/oom_score_adj, what the OOM killer adds to the task's badness
    (fs/proc/base.c: oom_score_adj_read).  None if there is no such process."""
    text = files.read_quiet(f"/proc/{pid}/oom_score_adj")
    return int(text) if text.strip() else None


def set_oom_score_adj(pid: int, value: int) -> None:
    """Write /proc/PID/oom_score_adj.  Outside -1000..1000 is EINVAL, as
    fs/proc/base.c: oom_score_adj_write returns it; lowering it needs CAP_SYS_RESOURCE."""
    if not OOM_SCORE_ADJ_MIN <= value <= OOM_SCORE_ADJ_MAX:
        raise OSError(errno.EINVAL, f"oom_score_adj {value}: expected -1000 to 1000")
    files.write_file(f"/proc/{pid}/oom_score_adj", f"{value}\n")


PF_EXITING = 0x4          # include/linux/sched.h
SIGKILL_BIT = 1 << (signal.SIGKILL - 1)


def dying(pid: int) -> bool:
    """SIGKILL pending or already exiting.  An OOM victim is in this state for a while:
    the OOM reaper (mm/oom_kill.c) frees its memory before the task itself has exited,
    so others' charges can succeed before the victim is gone."""
    text = files.read_quiet(f"/proc/{pid}/stat")
    if not text:
        return False
    fields = stat_fields(text)
    if len(fields) > 6 and int(fields[6]) & PF_EXITING:
        return True
    for line in files.read_quiet(f"/proc/{pid}/status").splitlines():
        if line.startswith(("SigPnd:", "ShdPnd:")) and int(line.split()[1], 16) & SIGKILL_BIT:
            return True
    return False


def in_oom_wait(pid: int) -> bool:
    """Blocked in the memcg charge path: state D with wchan mem_cgroup_oom_synchronize."""
    st = proc_stat(pid)
    if st is None or st[0] != "D":
        return False
    wchan = files.read_quiet(f"/proc/{pid}/wchan").strip()
    return any(w in wchan for w in OOM_WAIT_WCHANS)


def mm_status(pid: int) -> dict[str, int] | None:
    """What the OOM killer counts of a task's mm, in bytes, from /proc/PID/status
    (fs/proc/task_mmu.c: task_mem): "rss" (VmRSS: MM_ANONPAGES + MM_FILEPAGES +
    MM_SHMEMPAGES, get_mm_rss), "swap" (VmSwap: MM_SWAPENTS) and "pgtables" (VmPTE:
    mm_pgtables_bytes); None if the process is gone."""
    text = files.read_quiet(f"/proc/{pid}/status")
    if not text:
        return None
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        name = {"VmRSS": "rss", "VmSwap": "swap", "VmPTE": "pgtables"}.get(key)
        if name:
            out[name] = int(value.split()[0]) * 1024
    return out
