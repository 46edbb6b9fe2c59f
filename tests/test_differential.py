"""Differential tests: the same cases on the simulated kernel and on real cgroups.

Every test is parametrized over both kernels and asserts the same real outcomes on
each: values read back, errno values, who was OOM-killed, event counts.  The "linux"
cases run where the cgroup v1 memory controller is writable (root, own memory cgroup;
they skip with the reason elsewhere) and leave no group behind (the real_memcg fixture
checks).

Workers on real cgroups start in the caller's group and are moved in, so groups are
charged only for what the tasks do; where the Python worker's own activity shows in a
figure (a few pages of heap, a few faults) the assertion says so and allows for it.
"""

from __future__ import annotations

import errno
import json
import select
import time

import pytest

import memcg
from memcg.cache import ChunkCache
from conftest import GuestCase, guest_fixture
from memcg.profile import PROFILE_KEYS

KiB, MiB = 1 << 10, 1 << 20
UNLIMITED = 9223372036854771712

LINUX = pytest.param("linux", marks=pytest.mark.linux)
VM = pytest.param("vm", marks=pytest.mark.vm)
BOTH = ["sim", LINUX, VM]


# One cgroup v1 guest for the module's "vm" cases (reset between them).
vm_guest = guest_fixture(hierarchy="v1", memory="1G", cpus=2)


@pytest.fixture
def kernel(request, tmp_path):
    """A fresh kernel of the parametrized kind; "linux" needs writable real cgroups."""
    if request.param == "sim":
        # this machine's costs for a Python worker (`memcg calibrate`), so the model's
        # kernel-memory figures are those of the workers the real side runs
        costs = {"kmem_fork_bytes": 130048, "kmem_mkdir_bytes_ext4": 1444,
                 "kmem_mkdir_bytes_tmpfs": 963, "kmem_socket_bytes": 6656,
                 "fork_child_faults": 1}
        profile = tmp_path / "profile.json"
        profile.write_text(json.dumps({key: v for key, v in costs.items() if key in PROFILE_KEYS}))
        k = memcg.SimKernel(memory="4G", cpus=2, profile=str(profile))
    elif request.param == "vm":
        k = GuestCase(request.getfixturevalue("vm_guest"))
    else:
        request.getfixturevalue("real_memcg")   # skips with the reason; checks nothing is left
        k = memcg.LinuxKernel()
    yield k
    k.close()


def num(k, path: str) -> int:
    return int(k.read(path))


def stat(k, group: str) -> dict[str, int]:
    out = {}
    for line in k.read(f"{group}/memory.stat").splitlines():
        key, _, value = line.partition(" ")
        out[key] = int(value)
    return out


def oom(k, group: str) -> dict[str, int]:
    return {a: int(b) for a, b in (ln.split() for ln in k.read(f"{group}/memory.oom_control").splitlines())}


def errno_of(fn) -> int | None:
    try:
        fn()
    except OSError as e:
        return e.errno
    return None


def counts(k, evs: dict) -> dict[str, int]:
    """Event counts after an action.  The simulated kernel has signalled everything by
    now; the real one signals some events from work items (vmpressure_work_fn, the
    removal work of rmdir), so there the counts are collected until none has changed
    for 100 ms (bounded by 3 s)."""
    got = {name: ev.count() for name, ev in evs.items()}
    if k.backend != "linux":
        return got
    deadline = time.monotonic() + 3
    quiet_since = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - quiet_since < 0.1:
        select.select([ev.fileno() for ev in evs.values()], [], [], 0.02)
        for name, ev in evs.items():
            n = ev.count()
            if n:
                got[name] += n
                quiet_since = time.monotonic()
    return got


def near(k, got: int, want: int, pages: int = 8) -> bool:
    """got == want on the simulated kernel; on real cgroups the Python worker's own heap
    and stack pages (faulted while it runs a command) may add a few pages of rss."""
    if k.backend not in ("linux", "vm"):     # the guest runs the same Python workers
        return got == want
    return want <= got <= want + pages * 4096


def cache_near(k, got: int, want: int) -> bool:
    """got == want, but on the guest's freshly made ext4 disk the first files made also
    read its metadata (inode-table and directory blocks: page cache of the block
    device, charged to the group that caused the read): a page or two more."""
    if k.backend != "vm":
        return got == want
    return want <= got <= want + 2 * 4096


def needs_disk(k) -> None:
    """Skip on a guest without a disk: its files would be on tmpfs (shmem, charged
    when made), not page cache of a disk file system (docs/vm-backend.md)."""
    if k.backend == "vm" and k.working_fs != "ext4":
        pytest.skip("this VM guest has no disk: its files are tmpfs, not page cache")


def group_with_task(k, path: str = "/g", limit: str | None = None):
    k.mkdir(path)
    if limit is not None:
        k.write(f"{path}/memory.limit_in_bytes", limit)
    return k.spawn(path)


# --------------------------------------------------------------------------- files and errno

LIMIT_WRITES = [
    ("32M", 32 * MiB), ("4097", 4096), ("0x1000", 4096), (" 8192\n", 8192), ("-1", UNLIMITED),
    ("1k", 0), ("1.5M", errno.EINVAL), ("-2", errno.EINVAL), ("1KB", errno.EINVAL),
    ("max", errno.EINVAL), ("x" * 4097, errno.E2BIG),
]


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_limit_write_parsing_and_errno(kernel):
    k = kernel
    k.mkdir("/g")
    for text, want in LIMIT_WRITES:
        k.write("/g/memory.limit_in_bytes", "64M")
        got = errno_of(lambda: k.write("/g/memory.limit_in_bytes", text))
        if want in (errno.EINVAL, errno.E2BIG):
            assert got == want, text[:16]
            assert num(k, "/g/memory.limit_in_bytes") == 64 * MiB, text[:16]
        else:
            assert got is None, text
            assert num(k, "/g/memory.limit_in_bytes") == want, text


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_other_files_errno(kernel):
    k = kernel
    k.mkdir("/g")
    # memsw may not go below the memory limit, which is unlimited in a fresh group
    assert errno_of(lambda: k.write("/g/memory.memsw.limit_in_bytes", "64M")) == errno.EINVAL
    assert errno_of(lambda: k.write("/g/memory.oom_control", "2")) == errno.EINVAL
    assert errno_of(lambda: k.write("/g/memory.swappiness", "201")) == errno.EINVAL  # > MAX_SWAPPINESS
    assert errno_of(lambda: k.read("/g/memory.nonexistent")) == errno.ENOENT
    assert errno_of(lambda: k.mkdir("/g")) == errno.EEXIST
    assert errno_of(lambda: k.rmdir("/nope")) == errno.ENOENT
    assert errno_of(lambda: k.write("/g/cgroup.procs", "abc")) == errno.EINVAL
    k.spawn("/g")
    assert errno_of(lambda: k.rmdir("/g")) == errno.EBUSY


# --------------------------------------------------------------------------- accounting


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_anon_accounting(kernel):
    k = kernel
    t = group_with_task(k)
    t.touch_anon(4 * MiB)
    s = stat(k, "/g")
    assert near(k, s["rss"], 4 * MiB)
    assert near(k, s["inactive_anon"], 4 * MiB) and s["active_anon"] == 0
    assert s["cache"] == 0 and s["shmem"] == 0          # private anonymous, not shmem
    # one charge per page; on real cgroups the worker's own pages that rss allows for
    # were charged too
    assert near(k, s["pgpgin"] * 4096, 4 * MiB)
    assert 1024 <= s["pgfault"] <= 1024 + 16             # + the worker's own faults
    assert 4 * MiB <= num(k, "/g/memory.usage_in_bytes") <= 4 * MiB + 2 * 64 * 4096 + 64 * KiB
    t.free_anon(4 * MiB)
    t.touch_anon(1 * MiB)  # enough charges after the free for the statistics to flush
    s = stat(k, "/g")
    assert near(k, s["rss"], 1 * MiB) and s["pgpgout"] == 1024


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_locked_anon_is_unevictable(kernel):
    k = kernel
    t = group_with_task(k)
    t.touch_anon(4 * MiB, locked=True)
    s = stat(k, "/g")
    assert near(k, s["rss"], 4 * MiB) and s["unevictable"] == 4 * MiB


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_shm_is_cache_and_shmem_not_rss(kernel):
    k = kernel
    t = group_with_task(k)
    t.touch_shm("seg", 8 * MiB)
    s = stat(k, "/g")
    assert s["cache"] == s["shmem"] == s["mapped_file"] == 8 * MiB
    assert near(k, s["rss"], 0)
    assert near(k, s["inactive_anon"] + s["active_anon"], 8 * MiB)   # shmem sits on the anon LRU


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_shm_index_nodes_stay_charged_after_the_task_exits(kernel):
    # fs/inode.c: __address_space_init_once makes i_pages with XA_FLAGS_ACCOUNT, so each
    # radix_tree_node of a shmem object is charged to the faulting task's group (lib/xarray.c:
    # xas_alloc / xas_nomem): 8 MiB of 4 KiB pages are 33 nodes of 584 + 8 bytes, 5 pages of
    # kmem.  Measured on Linux 6.18: kmem 36-40 KiB while mapped (with the mapping's 4 PTE pages,
    # which the model does not charge for shmem), 20 KiB once the task's exit has finished;
    # lowering the limit to the 8 MiB of shmem is EBUSY, there being no swap to reclaim to
    # (seed 11 of `memcg fuzz`).
    k = kernel
    if k.backend == "vm":
        pytest.skip("measured on the host's kernel only")
    t = group_with_task(k)
    t.touch_shm("seg", 8 * MiB)
    assert 5 * 4096 <= num(k, "/g/memory.kmem.usage_in_bytes") <= 12 * 4096
    t.exit()
    assert errno_of(lambda: k.write("/g/memory.limit_in_bytes", "8M")) == errno.EBUSY
    assert stat(k, "/g")["shmem"] == 8 * MiB
    if k.backend == "sim":
        assert num(k, "/g/memory.kmem.usage_in_bytes") == 5 * 4096
        assert num(k, "/g/memory.usage_in_bytes") == 8 * MiB + 5 * 4096   # the stock drained


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_page_cache_read_write_unlink(kernel):
    k = kernel
    needs_disk(k)
    t = group_with_task(k)
    t.read_file("data", 8 * MiB)
    s = stat(k, "/g")
    assert s["cache"] == 8 * MiB and near(k, s["rss"], 0) and s["dirty"] == 0
    t.write_file("log", 4 * MiB)
    s = stat(k, "/g")
    assert cache_near(k, s["cache"], 12 * MiB) and s["dirty"] == 4 * MiB
    t.unlink("log")
    t.read_file("data2", 1 * MiB)   # more charges, so the statistics flush
    assert cache_near(k, stat(k, "/g")["cache"], 9 * MiB)


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_charges_stay_when_a_task_moves(kernel):
    k = kernel
    t = group_with_task(k, "/a")
    k.mkdir("/b")
    t.touch_anon(4 * MiB)
    t.move("/b")
    t.touch_anon(2 * MiB)
    assert near(k, stat(k, "/a")["rss"], 4 * MiB)
    assert near(k, stat(k, "/b")["rss"], 2 * MiB)
    assert str(t.pid) in k.read("/b/cgroup.procs").split()


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_fork_shares_anon_copy_on_write(kernel):
    """A forked child shares its parent's anonymous pages; a write to a shared page (by
    either) is a copy-on-write fault charged to the writer's group (mm/memory.c:
    wp_page_copy); a page left with one mapper is written in place (wp_page_reuse), a
    fault that charges nothing; a shared page stays charged where it was faulted in
    until its last mapper unmaps it."""
    k = kernel
    parent = group_with_task(k, "/a")
    k.mkdir("/b")
    parent.touch_anon(8 * MiB)
    child = parent.fork()
    child.move("/b")
    child.write_anon(3 * MiB)
    a, b = stat(k, "/a"), stat(k, "/b")
    assert near(k, a["rss"], 8 * MiB) and b["rss"] == 3 * MiB
    assert b["pgfault"] == 768 and b["pgpgin"] == 768       # one COW fault and charge a page
    assert 3 * MiB <= num(k, "/b/memory.usage_in_bytes") <= 3 * MiB + 64 * 4096
    child.write_anon(3 * MiB)                                 # its own pages now: no fault
    assert stat(k, "/b")["pgfault"] == 768
    faults = stat(k, "/a")["pgfault"]
    parent.write_anon(5 * MiB)    # 3 MiB only it maps now (reused), 2 MiB still shared (copied)
    a = stat(k, "/a")
    assert near(k, a["rss"], 10 * MiB)
    assert 1280 <= a["pgfault"] - faults <= 1280 + 16         # + the worker's own faults
    parent.exit()
    a, b = stat(k, "/a"), stat(k, "/b")
    # what the child still maps stays charged to /a: the 5 MiB it never wrote
    assert a["rss"] == 5 * MiB and b["rss"] == 3 * MiB
    child.write_anon(8 * MiB)     # the pages it shared are its alone: faults, no charges
    b = stat(k, "/b")
    assert b["rss"] == 3 * MiB and b["pgfault"] == 768 + 1280 and b["pgpgin"] == 768
    assert stat(k, "/a")["rss"] == 5 * MiB
    child.exit()
    assert stat(k, "/a")["rss"] == 0 and stat(k, "/b")["rss"] == 0


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_copy_on_write_blocks_at_the_childs_limit(kernel):
    """A COW fault is a user fault like any other: with oom_kill_disable the child
    waits in mem_cgroup_oom_synchronize at its group's limit, and goes on once the limit
    is raised; the parent's group is not touched."""
    k = kernel
    parent = group_with_task(k, "/a")
    k.mkdir("/b")
    k.write("/b/memory.limit_in_bytes", "2M")
    k.write("/b/memory.oom_control", "1")
    parent.touch_anon(8 * MiB)
    child = parent.fork()
    child.move("/b")
    child.write_anon(4 * MiB)
    assert child.state == "blocked"
    assert oom(k, "/b")["under_oom"] == 1 and num(k, "/b/memory.usage_in_bytes") == 2 * MiB
    k.write("/b/memory.limit_in_bytes", "16M")
    assert child.state == "running"
    assert stat(k, "/b")["rss"] == 4 * MiB and near(k, stat(k, "/a")["rss"], 8 * MiB)
    assert oom(k, "/b")["oom_kill"] == 0


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_fork_copies_page_tables_as_kmem(kernel):
    """copy_page_range(): the child gets a PTE page for each 2 MiB region the parent has
    one for (kmem of the forking task's group), besides the copied vma objects."""
    k = kernel
    per_fork = {}
    for mib in (0, 8):
        g = f"/g{mib}"
        t = group_with_task(k, g)
        if mib:
            t.touch_anon(mib * MiB)
        before = num(k, f"{g}/memory.kmem.usage_in_bytes")
        children = [t.fork() for _ in range(4)]
        per_fork[mib] = (num(k, f"{g}/memory.kmem.usage_in_bytes") - before) / 4
        assert all(c.state == "running" for c in children)
    # four PTE pages (8 MiB, 2 MiB-aligned) and a vm_area_struct, anon_vma and two
    # anon_vma_chains; slab objects reach the kmem counter a page at a time
    assert 3 * 4096 <= per_fork[8] - per_fork[0] <= 5 * 4096


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_oom_counts_shared_pages_for_the_child(kernel):
    """get_mm_rss() counts every page a task maps: a child that inherited its exited
    parent's 48 MiB is the largest task of the group and the OOM killer's victim."""
    k = kernel
    parent = group_with_task(k, limit="64M")
    parent.touch_anon(48 * MiB)
    child = parent.fork()
    parent.exit()
    assert near(k, stat(k, "/g")["rss"], 48 * MiB)              # still mapped by the child
    other = k.spawn("/g")
    other.touch_anon(24 * MiB)                               # over the limit: someone must go
    assert child.state == "oom_killed" and other.state == "running"
    assert oom(k, "/g")["oom_kill"] == 1
    assert near(k, stat(k, "/g")["rss"], 24 * MiB)


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_exit_frees_anon_keeps_cache(kernel):
    k = kernel
    needs_disk(k)
    t = group_with_task(k)
    t.read_file("data", 8 * MiB)
    t.touch_anon(4 * MiB)
    t.exit()
    assert t.state == "exited"
    k.spawn("/g").touch_anon(1 * MiB)   # flush the statistics
    s = stat(k, "/g")
    assert near(k, s["rss"], 1 * MiB) and cache_near(k, s["cache"], 8 * MiB)


# --------------------------------------------------------------------------- limits, reclaim, OOM


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_page_cache_is_reclaimed_within_the_limit_without_oom(kernel):
    k = kernel
    needs_disk(k)
    t = group_with_task(k, limit="32M")
    t.read_file("big", 128 * MiB)
    assert t.state == "running"
    assert oom(k, "/g")["oom_kill"] == 0
    assert num(k, "/g/memory.max_usage_in_bytes") <= 32 * MiB
    assert num(k, "/g/memory.failcnt") > 0
    assert 16 * MiB <= stat(k, "/g")["cache"] <= 32 * MiB


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_oom_kills_the_largest_task_not_the_one_that_asked(kernel):
    k = kernel
    big = group_with_task(k, limit="64M")
    small = k.spawn("/g")
    big.touch_anon(40 * MiB)
    small.touch_anon(8 * MiB)
    small.touch_anon(24 * MiB)       # over the limit: someone must go
    assert big.state == "oom_killed"
    assert small.state == "running"
    o = oom(k, "/g")
    assert o["oom_kill"] == 1 and o["under_oom"] == 0
    assert num(k, "/g/memory.max_usage_in_bytes") <= 64 * MiB
    assert 32 * MiB <= stat(k, "/g")["rss"] <= 33 * MiB


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_oom_score_adj_min_spares_the_largest_task(kernel):
    """oom_badness() skips a task with oom_score_adj -1000 (OOM_SCORE_ADJ_MIN): the
    largest task survives and the next largest is killed (mm/oom_kill.c)."""
    k = kernel
    big = group_with_task(k, limit="64M")
    try:
        big.oom_score_adj = -1000
    except PermissionError:
        pytest.skip("lowering oom_score_adj needs CAP_SYS_RESOURCE, which this process lacks")
    assert big.oom_score_adj == -1000
    small = k.spawn("/g")
    big.touch_anon(40 * MiB)
    small.touch_anon(8 * MiB)
    small.touch_anon(24 * MiB)       # over the limit: big would score highest
    assert big.state == "running"
    assert small.state == "oom_killed"
    assert oom(k, "/g")["oom_kill"] == 1


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_oom_score_adj_max_is_chosen_first(kernel):
    """oom_score_adj 1000 adds totalpages (the limit's pages) to the badness, so a small
    task with it goes before a big one (mm/oom_kill.c: oom_badness)."""
    k = kernel
    big = group_with_task(k, limit="64M")
    big.touch_anon(40 * MiB)
    tiny = k.spawn("/g")
    tiny.oom_score_adj = 1000
    tiny.touch_anon(8 * MiB)
    charger = k.spawn("/g")
    charger.touch_anon(20 * MiB)     # 68M, over the limit: one kill is enough
    assert tiny.state == "oom_killed"
    assert big.state == "running" and charger.state == "running"
    assert oom(k, "/g")["oom_kill"] == 1


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
@pytest.mark.parametrize("value", [-1001, 1001])
def test_oom_score_adj_out_of_range_is_einval(kernel, value):
    """fs/proc/base.c: oom_score_adj_write() takes -1000..1000 only."""
    t = group_with_task(kernel)
    assert errno_of(lambda: setattr(t, "oom_score_adj", value)) == errno.EINVAL
    assert t.oom_score_adj == 0


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
@pytest.mark.parametrize("efd", [0, 1, 2])
def test_event_control_with_a_standard_descriptor_is_einval(kernel, efd):
    """memcg_write_event_control(): descriptors 0-2 are open in every process but are
    not eventfds, so eventfd_ctx_fileget() refuses them (EINVAL, not EBADF)."""
    kernel.mkdir("/g")
    assert errno_of(lambda: kernel.write("/g/cgroup.event_control", f"{efd} 987 1M")) == errno.EINVAL
    assert errno_of(lambda: kernel.write("/g/cgroup.event_control", "987 986 1M")) == errno.EBADF


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_oom_victim_faulting_shm_is_the_only_kill(kernel):
    """A task faulting in shared memory past the limit is the victim (its mapped shmem
    pages count in oom_badness as they are faulted), and the kill ends it: the shmem it
    charged stays, and its failing charge kills nobody else (task_is_dying())."""
    k = kernel
    k.mkdir("/G")
    k.write("/G/memory.limit_in_bytes", "4M")
    k.mkdir("/G/a")
    a = k.spawn("/G/a")
    a.touch_anon(71 * 4096)
    b = k.spawn("/G")
    b.touch_shm("seg", 8 * MiB + 200 * KiB)
    assert b.state == "oom_killed"
    assert a.state == "running"
    assert oom(k, "/G")["oom_kill"] == 1
    assert oom(k, "/G/a")["oom_kill"] == 0


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_oom_kill_disable_blocks_until_the_limit_is_raised(kernel):
    k = kernel
    k.mkdir("/g")
    k.write("/g/memory.limit_in_bytes", "16M")
    k.write("/g/memory.oom_control", "1")
    ev = k.event("/g/memory.oom_control")
    t = k.spawn("/g")
    t.touch_anon(32 * MiB)
    assert t.state == "blocked"
    o = oom(k, "/g")
    assert o == {"oom_kill_disable": 1, "under_oom": 1, "oom_kill": 0}
    assert num(k, "/g/memory.usage_in_bytes") == 16 * MiB
    assert ev.count() == 1
    k.write("/g/memory.limit_in_bytes", "64M")
    assert t.state == "running"
    assert oom(k, "/g")["under_oom"] == 0
    assert near(k, stat(k, "/g")["rss"], 32 * MiB)
    assert ev.count() == 0                    # leaving the OOM sends nothing


# --------------------------------------------------------------------------- events


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_usage_thresholds_fire_once_per_crossing(kernel):
    k = kernel
    k.mkdir("/g")
    e8 = k.event("/g/memory.usage_in_bytes", "8M")
    e24 = k.event("/g/memory.usage_in_bytes", "24M")
    t = k.spawn("/g")
    t.touch_anon(16 * MiB)
    assert (e8.count(), e24.count()) == (1, 0)
    t.touch_anon(16 * MiB)
    assert (e8.count(), e24.count()) == (0, 1)
    t.free_anon(32 * MiB)
    assert (e8.count(), e24.count()) == (1, 1)   # downward crossings too


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_pressure_events_per_mode(kernel):
    """mm/vmpressure.c: a listener in the default mode does not hear what a listener
    below it already heard; "hierarchy" always does; "local" only its own group's."""
    k = kernel
    needs_disk(k)
    k.mkdir("/p")
    k.mkdir("/p/c")
    k.write("/p/c/memory.limit_in_bytes", "32M")
    evs = {"c low": k.event("/p/c/memory.pressure_level", "low"),
           "c medium": k.event("/p/c/memory.pressure_level", "medium"),
           "c critical": k.event("/p/c/memory.pressure_level", "critical"),
           "p low": k.event("/p/memory.pressure_level", "low"),
           "p low,hierarchy": k.event("/p/memory.pressure_level", "low,hierarchy"),
           "p low,local": k.event("/p/memory.pressure_level", "low,local")}
    t = k.spawn("/p/c")
    t.read_file("big", 128 * MiB)
    k.advance(1)
    got = counts(k, evs)
    assert got["c low"] > 0
    assert got["c medium"] == 0 and got["c critical"] == 0   # clean cache is easy
    assert got["p low,hierarchy"] == got["c low"]
    assert got["p low"] == 0 and got["p low,local"] == 0


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_rmdir_signals_registered_events(kernel):
    # the removal signals come from a work item after rmdir returns; advance() waits
    # for them on the real kernels (and the guest's reply carries them)
    k = kernel
    k.mkdir("/g")
    evs = {"usage 8M": k.event("/g/memory.usage_in_bytes", "8M"),
           "oom_control": k.event("/g/memory.oom_control"),
           "pressure low": k.event("/g/memory.pressure_level", "low")}
    k.rmdir("/g")
    k.advance(1)
    assert counts(k, evs) == {"usage 8M": 1, "oom_control": 1, "pressure low": 1}


# --------------------------------------------------------------------------- kernel memory, TCP


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_kmem_per_fork(kernel):
    k = kernel
    t = group_with_task(k)
    before = num(k, "/g/memory.kmem.usage_in_bytes")
    children = [t.fork() for _ in range(4)]
    per_fork = (num(k, "/g/memory.kmem.usage_in_bytes") - before) / 4
    assert all(c.state == "running" for c in children)
    assert str(children[0].pid) in k.read("/g/cgroup.procs").split()
    # at least the kernel stack (THREAD_SIZE, 16 KiB on x86-64) plus task_struct and mm
    assert 16 * KiB <= per_fork <= 1 * MiB


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_forked_children_fault_in_their_own_group(kernel):
    """Each child faults once on its way to its first wait (the real worker's child
    reads its ready message from a shared page fork did not copy: mm/memory.c
    vma_needs_copy), counted in the group of the child's mm (handle_mm_fault ->
    count_memcg_event_mm); a minor fault on a page already charged: no pgpgin.  The
    forking worker's own heap may fault a page or two while it forks."""
    k = kernel
    t = group_with_task(k)
    k.settle()
    before = stat(k, "/g")
    children = [t.fork() for _ in range(20)]
    k.settle()
    after = stat(k, "/g")
    faults, charged = after["pgfault"] - before["pgfault"], after["pgpgin"] - before["pgpgin"]
    if k.backend == "sim":
        assert faults == 20 and charged == 0
    else:
        assert 20 <= faults <= 20 + 4 and charged <= 4
    for c in children:
        c.exit()


@pytest.mark.parametrize("fs", ["ext4", "tmpfs"])
@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_kmem_per_mkdir(kernel, fs):
    k = kernel
    if k.backend == "linux" and fs != "tmpfs" and k.working_fs != fs:
        pytest.skip(f"the working directory is on {k.working_fs}, not {fs}")
    t = group_with_task(k)
    t.mkdirs(8, fs=fs)
    before = num(k, "/g/memory.kmem.usage_in_bytes")
    t.mkdirs(256, fs=fs)
    per_dir = (num(k, "/g/memory.kmem.usage_in_bytes") - before) / 256
    assert 256 <= per_dir <= 8 * KiB           # a dentry and an inode, some slab slack


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_tcp_limit_holds_the_sender_back(kernel):
    k = kernel
    k.mkdir("/g")
    k.write("/g/memory.kmem.tcp.limit_in_bytes", "1M")   # also switches TCP accounting on
    a, b = k.spawn("/g"), k.spawn("/g")
    s = a.connect_tcp(b)
    sent = 0
    for _ in range(256):
        n = s.send(64 * KiB)
        sent += n
        if n == 0:
            break
    assert 256 * KiB <= sent <= 1 * MiB + 64 * KiB
    usage = num(k, "/g/memory.kmem.tcp.usage_in_bytes")
    assert 0 < usage <= 1 * MiB + 64 * KiB               # forced charges may pass the limit a little
    first = s.recv(16 * MiB)           # one read: what the receive queue holds now
    assert 0 < first < sent
    got = first
    idle = 0
    # The rest follows as the reader makes room. On a real kernel a segment dropped while the
    # group was over its limit comes back only when the retransmit timer fires, and the
    # timer backs off (net/ipv4/tcp_timer.c: tcp_retransmit_timer): a loaded guest can need
    # several seconds, so an empty read is retried for a while before the stream is judged short.
    while got < sent and idle < 40:
        n = s.recv(16 * MiB)
        if n == 0:
            idle += 1
            k.advance(1)
            continue
        got += n
    assert got == sent
    assert num(k, "/g/memory.kmem.tcp.usage_in_bytes") < usage


@pytest.mark.parametrize("kernel", ["sim", LINUX], indirect=True)
def test_tcp_drain_at_the_limit_grows_the_receive_buffer_and_the_limit_bites_again(kernel):
    """The tcp-bloat drain: a 1M group whose sender offers 1M a tick to a reader taking
    64K, then the reader reads in a burst (40 reads, one tick).  Linux 6.18.44 (real
    cgroups, 20 ms ticks; in this order beside a -1 neighbour, and once without the
    64K read before the burst): the burst grew the receive buffer 131072 -> 1615485
    (tcp_rcv_space_adjust, once per round trip) and read 399683 / 429379 bytes; the
    window it opened let through more than the group holds, so segments were dropped
    and 571392 bytes stayed at the sender (usage 581632, both runs); the sender's buffer
    grew again (4194304: pressure lifted).  Next tick send() took 232183 / 261932 bytes
    and the buffer was moderated again (148336 / 163627); usage 811008 / 843776.  The
    model: 2976535, 389120 read, 535040 left (usage 544768), 3939840; then 327415 taken,
    buffer 152103, usage 876544.  (Without the 64K read first the model lets less
    through the burst: usage 843776 after it.)"""
    k = kernel
    k.mkdir("/g")
    k.write("/g/memory.kmem.tcp.limit_in_bytes", "1M")
    s = k.spawn("/g").connect_tcp(k.spawn("/g"))
    for tick in range(25):
        s.send(1 * MiB)
        if tick:
            s.recv(64 * KiB)
        k.advance(1)
    s.send(1 * MiB)
    # moderated: the send found the group at its limit.  (After the tick's 64K read the
    # buffer may be grown again: on the real kernel it was 4194304 after every other
    # tick's read - the read lifted pressure or not - and moderated after every send.)
    assert s.info()["sndbuf"] < 1 * MiB
    s.recv(64 * KiB)               # tcp-bloat's order: the tick's read, then the drain
    before = s.info()
    assert before["rcvbuf"] == 131072
    drained = sum(s.recv(8 * MiB) for _ in range(40))
    after = s.info()
    usage = num(k, "/g/memory.kmem.tcp.usage_in_bytes")
    # (the real reader sometimes got everything, sometimes the burst ended before the
    # segments repaired by fast retransmission arrived: then they wait in its queue)
    assert drained > 0
    # grown by autotuning in the burst: 1615485 on the real kernel; the model measures a
    # round trip per read that ACK-clocked data reached (tcp.py: tcp_rcv_space_adjust)
    # and grows more in larger steps (2976535, here as in tcp-bloat)
    assert 3 * 131072 < after["rcvbuf"] < 4 * MiB
    assert usage < 768 * KiB
    assert after["sndbuf"] >= 3 * MiB                     # tcp_new_space(): pressure lifted
    k.advance(1)
    taken = s.send(1 * MiB)
    assert 0 < taken < 1 * MiB
    assert s.info()["sndbuf"] < 1 * MiB                   # sk_stream_moderate_sndbuf() again
    assert num(k, "/g/memory.kmem.tcp.usage_in_bytes") >= 512 * KiB


# --------------------------------------------------------------------------- group creation


def _possible_cpus() -> int:
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    return sum(int(b) - int(a) + 1 if b else 1
               for a, _, b in (part.partition("-") for part in text.split(",")))


def _wait_kmem(k, group: str, want: int) -> int:
    """The real kernel frees a removed group's statistics from an RCU work item (about
    35 ms after rmdir here); the model at once.  Polls for up to 2 s."""
    deadline = time.monotonic() + 2
    while True:
        got = num(k, f"{group}/memory.kmem.usage_in_bytes")
        if got == want or time.monotonic() > deadline:
            return got
        time.sleep(0.01)


def _write_when_drained(k, path: str, value: str) -> None:
    """A limit write that the freed pages can meet.  The uncharged statistics go to a
    per-CPU stock first, and the limit write's drain_all_stock() only schedules the
    other CPUs' drain work without waiting for it (mm/memcontrol.c), so on a loaded
    real machine the write can give EBUSY before that work ran; the model drains at
    once.  Retries for up to 2 s."""
    deadline = time.monotonic() + 2
    while True:
        try:
            k.write(path, value)
            return
        except OSError as e:
            if e.errno != errno.EBUSY or k.backend == "sim" or time.monotonic() > deadline:
                raise
        time.sleep(0.05)


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_mkdir_charges_the_parent_for_the_childs_statistics(kernel):
    # mm/memcontrol.c: mem_cgroup_css_alloc() allocates the child's vmstats, per-CPU
    # statistics and per-node lruvec statistics under set_active_memcg(parent): 10160
    # bytes with 2 possible CPUs, 3 pages through the object stock, taken from a
    # 64-page charge batch whose other 61 pages stay in the parent's per-CPU stock
    k = kernel
    if k.backend == "vm":
        # the 6.1 guest's struct memcg_vmstats and lruvec_stats are smaller: it charges
        # 2 pages where 6.18 charges 3 (measured: kmem 8192)
        pytest.skip("the figures are 6.18's; the VM guest runs 6.1")
    if k.backend == "linux" and _possible_cpus() != 2:
        pytest.skip("the figures are those of a machine with 2 possible CPUs")
    k.mkdir("/G")
    assert num(k, "/G/memory.usage_in_bytes") == 0
    k.mkdir("/G/a")
    assert num(k, "/G/memory.kmem.usage_in_bytes") == 12288
    # 64 pages, or 3 once another group's charge on the same CPU took the stock slot
    assert num(k, "/G/memory.usage_in_bytes") in (262144, 12288)
    assert num(k, "/G/memory.failcnt") == 0
    # the statistics are not reclaimable: a limit of 0 cannot be met while /G/a exists
    assert errno_of(lambda: k.write("/G/memory.limit_in_bytes", "0")) == errno.EBUSY
    assert num(k, "/G/memory.usage_in_bytes") == 12288   # the stock was drained
    k.rmdir("/G/a")
    assert _wait_kmem(k, "/G", 0) == 0                   # freed with the child
    _write_when_drained(k, "/G/memory.limit_in_bytes", "0")
    assert num(k, "/G/memory.usage_in_bytes") == 0


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_mkdir_below_a_full_parent_is_enomem(kernel):
    k = kernel
    if k.backend == "vm":
        # the 6.1 guest's struct memcg_vmstats and lruvec_stats are smaller: it charges
        # 2 pages where 6.18 charges 3 (measured: kmem 8192)
        pytest.skip("the figures are 6.18's; the VM guest runs 6.1")
    if k.backend == "linux" and _possible_cpus() != 2:
        pytest.skip("the figures are those of a machine with 2 possible CPUs")
    k.mkdir("/G")
    k.write("/G/memory.limit_in_bytes", "12K")           # room for the 3 pages exactly
    k.mkdir("/G/a")
    assert num(k, "/G/memory.usage_in_bytes") == 12288
    # two failed batch attempts (one per page-sized charge), then each charge fits
    assert num(k, "/G/memory.failcnt") == 2
    k.mkdir("/H")
    k.write("/H/memory.limit_in_bytes", "0")
    assert errno_of(lambda: k.mkdir("/H/a")) == errno.ENOMEM
    assert "a" not in k.listdir("/H")
    # try_charge_memcg: batch, single page, after draining the stock, 16 retries; no
    # task to OOM-kill
    assert num(k, "/H/memory.failcnt") == 19
    assert oom(k, "/H")["oom_kill"] == 0


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_file_writes_charge_buffer_heads_as_kmem(kernel):
    # fs/buffer.c: folio_alloc_buffers() attaches a buffer_head per 4 KiB ext4 block of
    # each page written, under set_active_memcg(folio_memcg(folio)) with __GFP_ACCOUNT:
    # 104 + 8 bytes per page, 56 pages of kmem for 8 MiB (the real kernel: 57, with
    # some ext4 metadata); unlink frees them with the pages
    k = kernel
    if k.backend in ("linux", "vm") and k.working_fs != "ext4":
        pytest.skip(f"the working directory is on {k.working_fs}, not ext4")
    # the 6.1 guest charges more per page written: 62 pages for 8 MiB, 487 for 64 MiB
    # (measured; 6.18: 57 and 450-470)
    small, big = ((56, 66), (448, 500)) if k.backend == "vm" else ((56, 60), (448, 470))
    t = group_with_task(k)
    t.write_file("log", 8 * MiB)
    assert small[0] * 4096 <= num(k, "/g/memory.kmem.usage_in_bytes") <= small[1] * 4096
    t.unlink("log")
    # what stays: a page or two of ext4 metadata (three to six seen on the 6.1 guest)
    assert num(k, "/g/memory.kmem.usage_in_bytes") <= (6 if k.backend == "vm" else 2) * 4096
    t.write_file("big", 64 * MiB)
    assert big[0] * 4096 <= num(k, "/g/memory.kmem.usage_in_bytes") <= big[1] * 4096


@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_page_cache_is_charged_in_readahead_folios(kernel):
    """mm/readahead.c (6.18): a 128 MiB read in 256 KiB read() calls comes in as 541
    folios (256 single pages, then 4, 16, 64, 256 and 512 pages as the windows grow, on a
    disk with read_ahead_kb 8192), each charged as one unit (filemap_add_folio ->
    mem_cgroup_charge): pgpgin counts folios, failcnt one failure per 2 MiB folio that
    meets the 32M limit, the memsw watermark passes the limit by one folio, and every
    reclaim episode reports one "low" vmpressure window (docs/real-kernel-behaviour.md,
    sections g and m)."""
    k = kernel
    if k.backend == "vm":
        pytest.skip("the guest runs 6.1, whose ext4 has no large folios (ext4_set_inode_mapping_order, 6.16)")
    if k.backend == "linux" and k.working_fs != "ext4":
        pytest.skip(f"the working directory is on {k.working_fs}, not ext4")
    k.mkdir("/g")
    k.write("/g/memory.limit_in_bytes", "32M")
    low = k.event("/g/memory.pressure_level", "low")
    t = k.spawn("/g")
    t.read_file("big", 128 * MiB)
    k.advance(1)
    s = stat(k, "/g")
    failcnt = num(k, "/g/memory.failcnt")
    got = counts(k, {"low": low})["low"]
    # the real worker's own heap pages are charged too: a few more charge events
    assert 541 <= s["pgpgin"] <= 541 + 40, s["pgpgin"]
    assert 520 <= s["pgpgout"] <= 541, s["pgpgout"]
    assert 44 <= failcnt <= 48, failcnt
    assert num(k, "/g/memory.memsw.max_usage_in_bytes") == 32 * MiB + 2 * MiB
    assert 28 * MiB <= s["cache"] <= 32 * MiB and s["active_file"] == 0
    # one window per episode; the real kernel reports them from a work item
    # (vmpressure_work_fn), which sums the windows that came before it ran: fewer
    # events when the reader outruns it (27 to 46 seen here)
    assert got <= failcnt + 1 and got >= (failcnt - 1 if k.backend == "sim" else 1), (got, failcnt)
    t.read_file("big", 8 * MiB)    # evicted: refaults, in smaller folios again
    s = stat(k, "/g")
    assert s["workingset_refault_file"] == 5888
    assert 1029 <= s["pgpgin"] <= 1029 + 48 and s["active_file"] == 0
    t.read_file("big", 8 * MiB)    # the second access activates
    assert stat(k, "/g")["active_file"] == 8 * MiB


# --------------------------------------------------------------------------- fork bomb victims


@pytest.mark.linux
def test_forkbomb_victims_agree(real_memcg):
    """The built-in forkbomb on the model (with the real backend's per-child cost, as
    `memcg compare` runs it) and on real cgroups: the OOM killer takes the shell on both
    (its resident set and page tables dwarf its children's: mm/oom_kill.c oom_badness),
    once; every child it made keeps running, and both make the same number of children
    give or take one - the real worker's own heap takes 3-6 pages of the group while it
    forks, and the model's last child fits with 15 KiB to spare."""
    from memcg.profile import worker_profile
    from memcg.scenario import load_scenario, run_scenario
    sc = load_scenario("forkbomb", {})
    sim = run_scenario(sc, memcg.SimKernel(**sc.machine.sim_kwargs(), profile=worker_profile()))
    k = memcg.LinuxKernel(memory=sc.machine.memory)
    try:
        real = run_scenario(sc, k)
    finally:
        k.close()
    for res in (sim, real):
        tasks = res["tasks"]
        assert tasks["shell"]["state"] == "oom_killed"
        assert tasks["neighbour"]["state"] == "running"
        children = [n for n in tasks if n.startswith("child-")]
        assert all(tasks[n]["state"] == "running" for n in children)
        assert "oom_kill 1" in res["groups"]["/bomb"]["memory.oom_control"]
        assert not [e for e in res["expectations"] if not e["ok"]]
    count = {name: sum(n.startswith("child-") for n in res["tasks"]) for name, res in
             (("sim", sim), ("linux", real))}
    assert abs(count["sim"] - count["linux"]) <= 1, count
    assert 300 <= count["sim"] <= 400


# --------------------------------------------------------------------------- shrinkerd's sawtooth


class LoggedCache(ChunkCache):
    """A ChunkCache that keeps the requests it was asked, in order."""

    def __init__(self, *args, **kwargs):
        self.asked: list[int] = []
        super().__init__(*args, **kwargs)

    def shrink(self, n: int) -> None:
        self.asked.append(n)
        super().shrink(n)


@pytest.mark.parametrize("backend", ["sim", LINUX])
def test_shrinkerd_sawtooth_ends_where_the_model_says(backend, request):
    """A 1 MiB-chunk cache allocating eight times its 64M limit, served by memcg
    shrinkerd at a 12 MiB margin (the model running the daemon's policy): every request
    comes at the chunk that takes usage over the 52 MiB high mark - the daemon checks
    usage at each report and the real backend lets it react before the task goes on,
    rather than waiting for the threshold event that mm/memcontrol-v1.c memcg1_check_events
    ratelimits - and asks for the 12 chunks that bring usage back to 40 MiB; so both
    kernels end with 44 chunks (512 = 52 + 38 * 12 + 4) and 44 MiB of rss."""
    from memcg.backends.linux.shrinker import SHRINKER_MARGIN
    if backend == "sim":
        k = memcg.SimKernel(memory="1G", cpus=2, swap="0", shrinker="shrinkerd",
                            shrinkerd_margin=SHRINKER_MARGIN)
    else:
        request.getfixturevalue("real_memcg")
        k = memcg.LinuxKernel(memory="1G", swap="0")
    try:
        k.mkdir("/stress")
        k.write("/stress/memory.limit_in_bytes", "64M")
        t = k.spawn("/stress")
        cache = LoggedCache(k, t, "/stress", MiB)
        for i in range(8 * 64):
            assert cache.put(i)
            if i % 64 == 63:
                k.advance(1)
        k.settle()
        st = stat(k, "/stress")
        assert cache.asked == [12] * 39
        assert len(cache.entries) == 44
        assert near(k, st["rss"], 44 * MiB, pages=16) and st["inactive_anon"] == st["rss"]
        assert 52 * MiB <= num(k, "/stress/memory.max_usage_in_bytes") < 53 * MiB
        assert num(k, "/stress/memory.failcnt") == 0
        cache.close()
        t.exit()
        k.rmdir("/stress")
    finally:
        k.close()


# /P limited to 64M; /P/A reads a file twice (all of it active), then /P/B reads 256 MiB.
# Reclaim judges P's inactive:active ratio by P's statistics as last flushed
# (prepare_scan_control, 6.12+: mem_cgroup_flush_stats_ratelimited), so whether A's active
# pages are deactivated depends on whether a flush ran after A's reads.  Measured through
# LinuxKernel on 6.18 (A active / inactive, B's cache, P's failcnt):
SIBLING_CASES = {
    (16, False): (16 * MiB, 0, 46 * MiB, 103),  # P looked empty: nothing deactivated
    (16, True): (12.5 * MiB, 3.28125 * MiB, 46 * MiB, 103),  # 16 active, 0 inactive: low
    (40, False): (40 * MiB, 0, 22 * MiB, 115),
    (40, True): (0, 14 * MiB, 48 * MiB, 105),
}


def _sibling_run(k, size_mib: int, flushed: bool) -> tuple:
    k.mkdir("/P")
    k.write("/P/memory.limit_in_bytes", "64M")
    k.mkdir("/P/A")
    k.mkdir("/P/B")
    a, b = k.spawn("/P/A"), k.spawn("/P/B")
    a.read_file("fa", size_mib * MiB)
    a.read_file("fa", size_mib * MiB)
    if flushed:
        k.settle()   # the periodic statistics flush runs
    b.read_file("fb", 256 * MiB)
    sa, sb = stat(k, "/P/A"), stat(k, "/P/B")
    got = (sa["active_file"], sa["inactive_file"], sb["cache"], num(k, "/P/memory.failcnt"))
    for t, name in ((a, "fa"), (b, "fb")):
        t.unlink(name)   # a repeated run starts with no page cache
        t.exit()
    for g in ("/P/A", "/P/B", "/P"):
        k.rmdir(g)
    return got


def _sibling_close(got: tuple, want: tuple) -> bool:
    # a large folio (2 MiB) either way, one reclaim episode more or less
    return all(abs(g - w) <= 2 * MiB for g, w in zip(got[:3], want[:3])) and \
        abs(got[3] - want[3]) <= 1


@pytest.mark.parametrize("size_mib,flushed", sorted(SIBLING_CASES))
@pytest.mark.parametrize("kernel", BOTH, indirect=True)
def test_sibling_active_cache_under_a_parent_limit(kernel, size_mib, flushed):
    k = kernel
    if k.backend == "vm":
        pytest.skip("6.1 flushes the statistics in reclaim itself (mem_cgroup_flush_stats)")
    if k.backend == "linux" and k.working_fs != "ext4":
        pytest.skip(f"the working directory is on {k.working_fs}, not ext4")
    want = SIBLING_CASES[size_mib, flushed]
    got = _sibling_run(k, size_mib, flushed)
    if k.backend == "linux":
        # the real flusher runs every 2 s at a phase user space cannot see: one run in a
        # few has it land during B's read and deactivate more; such a run is repeated
        for _ in range(2):
            if _sibling_close(got, want):
                break
            got = _sibling_run(k, size_mib, flushed)
    if k.backend == "sim":
        assert got == want   # the model has no phase: the figures of the runs above
    assert _sibling_close(got, want), (got, want)
