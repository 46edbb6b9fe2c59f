"""cgroup v2: the interface and the semantics of the memory controller on the default
hierarchy, after the kernel's own selftests (tools/testing/selftests/cgroup/
test_memcontrol.c) retold, on the model and on a real kernel.

Every case runs on SimKernel(hierarchy="v2") (Linux 6.18 rules) and on a VM guest booted
to cgroup v2 (Debian's 6.1 kernel); where the two kernels differ the test says so and
asserts each one's own answer.  The guest's "/" is a delegated group (the guest's
LinuxKernel makes it, and a mkdir enables +memory in the parent first), so the cases work
below a top group of their own, "/t", never at "/", and write subtree_control explicitly.
"""

from __future__ import annotations

import errno
import random

import pytest

import memcg
from conftest import GuestCase, guest_fixture, vm_unavailable

MiB = 1 << 20
VM = pytest.param("vm", marks=pytest.mark.vm)
BOTH = ["sim", VM]


# One cgroup v2 guest for the module's "vm" cases (reset between them).
v2_guest = guest_fixture(hierarchy="v2", memory="1G", cpus=2)


@pytest.fixture
def k(request):
    """A fresh cgroup v2 kernel of the parametrized kind."""
    if request.param == "sim":
        kern = memcg.SimKernel(memory="1G", cpus=2, hierarchy="v2")
        kern.release = "6.18"
    else:
        kern = GuestCase(request.getfixturevalue("v2_guest"))
    yield kern
    kern.close()


def is_618(k) -> bool:
    """The model follows 6.18; the guest runs 6.1."""
    return k.release == "6.18"


def values_close(a: int, b: int, err: int) -> bool:
    """test_memcontrol.c: values_close() - within err percent of their mean."""
    return abs(a - b) <= (a + b) / 100 * err


def events(k, path: str) -> dict:
    return {key: int(v) for key, v in (ln.split() for ln in k.read(path).splitlines())}


def errno_of(fn, *args):
    try:
        fn(*args)
    except OSError as e:
        return errno.errorcode[e.errno]
    return None


def top(k, name: str = "/t", memory: bool = True) -> str:
    """A top group for the case; memory enabled for its children unless memory=False."""
    k.mkdir(name)
    if memory:
        k.write(f"{name}/cgroup.subtree_control", "+memory")
    return name


# --- the tree rules -------------------------------------------------------------------------

@pytest.mark.parametrize("k", BOTH, indirect=True)
def test_subtree_control_decides_who_has_memory(k):
    """test_memcg_subtree_control: a child sees memory in cgroup.controllers only when its
    parent enables it in cgroup.subtree_control; without it the memory files are absent."""
    top(k, "/p")
    k.mkdir("/p/c")
    assert k.read("/p/c/cgroup.controllers").split() == ["memory"]
    assert "memory.current" in k.listdir("/p/c")
    top(k, "/q", memory=False)
    k.mkdir("/q/c")
    k.write("/q/cgroup.subtree_control", "-memory")   # the guest's mkdir enabled it
    assert k.read("/q/cgroup.subtree_control") == ""
    assert "memory" not in k.read("/q/c/cgroup.controllers").split()
    assert not [f for f in k.listdir("/q/c") if f.startswith("memory.") and f != "memory.pressure"]
    assert errno_of(k.read, "/q/c/memory.current") == "ENOENT"
    assert errno_of(k.write, "/q/c/memory.max", "1M") == "ENOENT"
    # enabling what the parent does not enable: ENOENT; no '+'/'-' or no such controller: EINVAL
    assert errno_of(k.write, "/q/c/cgroup.subtree_control", "+memory") == "ENOENT"
    assert errno_of(k.write, "/p/cgroup.subtree_control", "memory") == "EINVAL"
    assert errno_of(k.write, "/p/cgroup.subtree_control", "+nosuch") == "EINVAL"
    # a controller the kernel has but does not offer here: ENOENT
    assert errno_of(k.write, "/p/cgroup.subtree_control", "+cpu") == "ENOENT"
    # the later of "+x" and "-x" wins; the same state again is no error
    k.write("/q/cgroup.subtree_control", "+memory -memory")
    assert k.read("/q/cgroup.subtree_control") == ""
    k.write("/p/cgroup.subtree_control", "+memory")
    assert k.read("/p/cgroup.subtree_control") == "memory\n"


@pytest.mark.parametrize("k", BOTH, indirect=True)
def test_no_internal_processes(k):
    """A non-root group cannot both hold tasks and enable memory for its children."""
    top(k, "/t")
    k.mkdir("/t/a")
    # a group that enables memory takes no task: EBUSY (cgroup_migrate_vet_dst)
    assert errno_of(k.spawn, "/t") == "EBUSY"
    t = k.spawn("/t/a")
    assert errno_of(t.move, "/t") == "EBUSY"
    assert k.read("/t/a/cgroup.procs") == f"{t.pid}\n"
    # enabling while tasks are inside: EBUSY
    assert errno_of(k.write, "/t/a/cgroup.subtree_control", "+memory") == "EBUSY"
    k.mkdir("/t/b")
    k.write("/t/b/cgroup.subtree_control", "+memory")
    k.mkdir("/t/b/c")
    # disabling while a child still enables it for its own children: EBUSY
    assert errno_of(k.write, "/t/cgroup.subtree_control", "-memory") == "EBUSY"
    t.move("/t/b/c")
    assert k.read("/t/b/c/cgroup.procs") == f"{t.pid}\n"
    assert k.read("/t/a/cgroup.procs") == ""
    # rmdir: EBUSY with children or tasks
    assert errno_of(k.rmdir, "/t/b") == "EBUSY"
    assert errno_of(k.rmdir, "/t/b/c") == "EBUSY"
    t.exit()
    k.rmdir("/t/b/c")
    k.rmdir("/t/b")


@pytest.mark.parametrize("k", BOTH, indirect=True)
def test_populated_and_kill(k):
    """cgroup.events says populated while a task lives in the subtree; cgroup.kill takes
    only "1" (ERANGE otherwise) and kills the whole subtree; it cannot be read."""
    top(k, "/t")
    k.mkdir("/t/a")
    assert k.read("/t/cgroup.events") == "populated 0\nfrozen 0\n"
    t1 = k.spawn("/t/a")
    t2 = t1.fork()
    assert k.read("/t/cgroup.events") == "populated 1\nfrozen 0\n"
    assert k.read("/t/a/cgroup.events") == "populated 1\nfrozen 0\n"
    assert errno_of(k.write, "/t/cgroup.kill", "2") == "ERANGE"
    assert errno_of(k.read, "/t/cgroup.kill") == "EINVAL"
    k.write("/t/cgroup.kill", "1")
    k.settle()
    assert t1.state == "exited" and t2.state == "exited"
    assert k.read("/t/cgroup.events") == "populated 0\nfrozen 0\n"
    assert k.read("/t/a/cgroup.procs") == ""


@pytest.mark.parametrize("k", BOTH, indirect=True)
def test_hierarchy_limits_and_stat(k):
    """cgroup.max.depth and cgroup.max.descendants make mkdir EAGAIN; cgroup.stat counts."""
    top(k, "/t")
    assert k.read("/t/cgroup.max.depth") == "max\n"
    k.mkdir("/t/a")
    k.write("/t/a/cgroup.subtree_control", "+memory")
    k.write("/t/cgroup.max.depth", "1")
    assert k.read("/t/cgroup.max.depth") == "1\n"
    assert errno_of(k.mkdir, "/t/a/b") == "EAGAIN"
    k.write("/t/cgroup.max.depth", "max")
    k.mkdir("/t/a/b")
    k.write("/t/cgroup.max.descendants", "2")
    assert errno_of(k.mkdir, "/t/c") == "EAGAIN"
    assert errno_of(k.write, "/t/cgroup.max.descendants", "-1") == "ERANGE"
    stat = events(k, "/t/cgroup.stat")
    assert stat["nr_descendants"] == 2 and stat["nr_dying_descendants"] == 0
    if is_618(k):
        assert stat["nr_subsys_memory"] == 3  # 6.11+: the memory css here and below
    assert k.read("/t/cgroup.type") == "domain\n"


# --- memory.current, memory.peak, memory.max -------------------------------------------------

@pytest.mark.parametrize("k", BOTH, indirect=True)
def test_current_and_peak(k):
    """test_memcg_current_peak: a new group reads 0; 50M of anon shows in current and in
    memory.stat anon; peak keeps the high-water mark after the memory goes."""
    top(k)
    k.mkdir("/t/a")
    assert k.read("/t/a/memory.current") == "0\n"
    assert k.read("/t/a/memory.peak") == "0\n"
    t = k.spawn("/t/a")
    t.touch_anon(50 * MiB)
    current = int(k.read("/t/a/memory.current"))
    anon = events(k, "/t/a/memory.stat")["anon"]
    assert values_close(current, 50 * MiB, 3) and values_close(anon, current, 3)
    t.free_anon(50 * MiB)
    assert int(k.read("/t/a/memory.peak")) >= 50 * MiB
    assert int(k.read("/t/a/memory.current")) < 10 * MiB
    # the parent's figures are hierarchical
    assert int(k.read("/t/memory.peak")) >= 50 * MiB
    # 6.12+ resets the peak seen through the writer's own open file (any write is taken);
    # 6.1's memory.peak is read-only
    if is_618(k):
        k.write("/t/a/memory.peak", "reset")
        assert int(k.read("/t/a/memory.peak")) >= 50 * MiB   # a new open: the group's peak
    else:
        assert errno_of(k.write, "/t/a/memory.peak", "reset") == "EINVAL"
    t.exit()


@pytest.mark.parametrize("k", BOTH, indirect=True)
def test_kernel_memory_lines_of_memory_stat(k):
    """memory.stat's kernel memory by kind: a page-table page per 512 pages of anon
    (__pagetable_ctor), a child's 16 KiB kernel stack (account_kernel_stack), its task
    objects as unreclaimable slab (mod_objcg_state), a child group's per-CPU data in its
    parent (MEMCG_PERCPU_B); all of it gone again with the child and the memory."""
    top(k)
    k.mkdir("/t/a")
    t = k.spawn("/t/a")
    t.touch_anon(64 * MiB)
    stat = events(k, "/t/a/memory.stat")
    assert 32 <= stat["pagetables"] // 4096 <= 34          # 64M / (512 * 4 KiB), and a PMD page
    assert stat["kernel_stack"] == 0                       # spawned elsewhere, moved in
    assert stat["slab"] == stat["slab_reclaimable"] + stat["slab_unreclaimable"]
    c = t.fork()
    stat = events(k, "/t/a/memory.stat")
    assert stat["kernel_stack"] == 16384                   # THREAD_SIZE (x86-64, no KASAN)
    assert stat["slab_unreclaimable"] >= 4288              # the task_struct at least
    assert stat["kernel"] >= stat["kernel_stack"] + stat["pagetables"] + stat["slab"]
    c.exit()
    t.free_anon(64 * MiB)
    t.exit()
    k.write("/t/a/cgroup.subtree_control", "+memory")
    k.mkdir("/t/a/b")
    stat = events(k, "/t/a/memory.stat")
    assert stat["kernel_stack"] == 0 and stat["pagetables"] == 0
    assert stat["percpu"] > 0                              # /t/a/b's, charged to its parent


@pytest.mark.parametrize("k", BOTH, indirect=True)
def test_knobs_read_back_and_bad_writes(k):
    """memory.min/low/high/max and swap.max/high: "max" or bytes, rounded down to pages;
    bad text is EINVAL; read-only files refuse writes with EINVAL."""
    top(k)
    k.mkdir("/t/a")
    for f in ("memory.high", "memory.max", "memory.swap.max", "memory.swap.high"):
        assert k.read(f"/t/a/{f}") == "max\n"
    for f in ("memory.min", "memory.low"):
        assert k.read(f"/t/a/{f}") == "0\n"
    for f in ("memory.min", "memory.low", "memory.high", "memory.max", "memory.swap.max",
              "memory.swap.high"):
        k.write(f"/t/a/{f}", " 2M\n")
        assert k.read(f"/t/a/{f}") == "2097152\n", f
        k.write(f"/t/a/{f}", "5000")
        assert k.read(f"/t/a/{f}") == "4096\n", f
        k.write(f"/t/a/{f}", "max")
        assert k.read(f"/t/a/{f}") == "max\n", f
        assert errno_of(k.write, f"/t/a/{f}", "-1") == "EINVAL"
        assert errno_of(k.write, f"/t/a/{f}", "lots") == "EINVAL"
    assert errno_of(k.write, "/t/a/memory.current", "1") == "EINVAL"
    assert errno_of(k.write, "/t/a/memory.events", "1") == "EINVAL"
    assert errno_of(k.read, "/t/a/memory.reclaim") == "EINVAL"
    for text, want in (("1", None), ("0", None), ("2", "EINVAL"), ("-1", "EINVAL"), ("x", "EINVAL")):
        assert errno_of(k.write, "/t/a/memory.oom.group", text) == want, text
    assert k.read("/t/a/memory.oom.group") == "0\n"


@pytest.mark.parametrize("k", BOTH, indirect=True)
def test_events_files(k):
    """memory.events and .local list low high max oom oom_kill oom_group_kill (6.18 adds
    sock_throttled); memory.swap.events lists high max fail."""
    top(k)
    k.mkdir("/t/a")
    keys = ["low", "high", "max", "oom", "oom_kill", "oom_group_kill"]
    if is_618(k):
        keys.append("sock_throttled")
    for f in ("memory.events", "memory.events.local"):
        assert list(events(k, f"/t/a/{f}")) == keys
        assert set(events(k, f"/t/a/{f}").values()) == {0}
    assert list(events(k, "/t/a/memory.swap.events")) == ["high", "max", "fail"]
    # memory.stat: v2 keys, in the kernel's order; 6.18 prints every key 6.1 does, in the
    # same order, and a few more
    stat = list(events(k, "/t/a/memory.stat"))
    assert stat[:3] == ["anon", "file", "kernel"]
    for key in ("sock", "shmem", "file_mapped", "file_dirty", "file_writeback", "anon_thp",
                "inactive_anon", "active_file", "unevictable", "slab", "workingset_refault_anon",
                "pgscan", "pgsteal", "pgfault", "pgmajfault"):
        assert key in stat
    assert "pgpgin" not in stat
    guest_61 = ["anon", "file", "kernel", "kernel_stack", "pagetables", "sec_pagetables", "percpu",
                "sock", "vmalloc", "shmem", "file_mapped", "file_dirty", "file_writeback",
                "swapcached", "anon_thp", "file_thp", "shmem_thp", "inactive_anon", "active_anon",
                "inactive_file", "active_file", "unevictable", "slab_reclaimable",
                "slab_unreclaimable", "slab", "workingset_refault_anon", "workingset_refault_file",
                "workingset_activate_anon", "workingset_activate_file", "workingset_restore_anon",
                "workingset_restore_file", "workingset_nodereclaim", "pgscan", "pgsteal",
                "pgscan_kswapd", "pgscan_direct", "pgsteal_kswapd", "pgsteal_direct", "pgfault",
                "pgmajfault", "pgrefill", "pgactivate", "pgdeactivate", "pglazyfree",
                "pglazyfreed", "thp_fault_alloc", "thp_collapse_alloc"]
    assert [key for key in stat if key in guest_61] == guest_61
    if not is_618(k):
        assert stat == guest_61    # the guest shows the kernel's own v2 keys, no others


@pytest.mark.parametrize("k", BOTH, indirect=True)
def test_max_oom_kills_and_counts(k):
    """test_memcg_max / test_memcg_oom_events: 100M of anon in a 30M group without swap is
    OOM-killed; max events were raised, one oom and one oom_kill; usage stays below max."""
    top(k)
    k.mkdir("/t/a")
    k.write("/t/a/memory.max", "30M")
    k.write("/t/a/memory.swap.max", "0")
    assert k.read("/t/a/memory.max") == str(30 * MiB) + "\n"
    t = k.spawn("/t/a")
    t.touch_anon(100 * MiB)
    assert t.state == "oom_killed"
    assert k.read("/t/a/cgroup.procs") == ""
    ev = events(k, "/t/a/memory.events")
    assert ev["max"] > 0 and ev["oom"] == 1 and ev["oom_kill"] == 1
    assert ev == events(k, "/t/a/memory.events.local")
    assert int(k.read("/t/a/memory.current")) <= 30 * MiB
    assert 29 * MiB <= int(k.read("/t/a/memory.peak")) <= 30 * MiB
    # hierarchical: the parent counts its child's events, its local file does not
    assert events(k, "/t/memory.events")["oom_kill"] == 1
    assert events(k, "/t/memory.events.local")["oom_kill"] == 0


@pytest.mark.parametrize("k", BOTH, indirect=True)
def test_a_group_without_memory_counts_in_its_nearest_ancestor(k):
    """A group whose parent does not enable memory has no memory css: its tasks' css is
    the nearest ancestor's (task_css), so their pages count in that ancestor's figures and
    an OOM kill in its memory.events.local (memcg_memory_event_mm: mem_cgroup_from_task)."""
    top(k)
    k.mkdir("/t/a")
    k.mkdir("/t/a/b")
    if "memory" in k.read("/t/a/cgroup.subtree_control").split():
        k.write("/t/a/cgroup.subtree_control", "-memory")   # the real backend enables it
    assert "memory.current" not in k.listdir("/t/a/b")
    k.write("/t/a/memory.max", "30M")
    k.write("/t/a/memory.swap.max", "0")
    t = k.spawn("/t/a/b")
    t.touch_anon(16 * MiB)
    assert values_close(events(k, "/t/a/memory.stat")["anon"], 16 * MiB, 3)
    assert 16 * MiB <= int(k.read("/t/a/memory.current")) <= 20 * MiB
    t.touch_anon(100 * MiB)
    assert t.state == "oom_killed"
    assert events(k, "/t/a/memory.events.local")["oom_kill"] == 1
    assert events(k, "/t/memory.events")["oom_kill"] == 1
    assert events(k, "/t/memory.events.local")["oom_kill"] == 0


@pytest.mark.parametrize("k", BOTH, indirect=True)
def test_charges_follow_the_memory_css_as_memory_is_enabled_and_disabled(k):
    """A css-less group's tasks charge the nearest ancestor's css (mem_cgroup_from_task):
    the ancestor's memory.current grows, the group has none.  Enabling memory in the
    parent gives the group a new css starting at 0 (cgroup_apply_control): the pages
    charged before stay where they are, only new charges go to the new css.  Disabling it
    again sends new charges back up; what the group's css holds still counts in the
    parent's memory.current (the dying css's counters stay children of the parent's)."""
    top(k)
    k.mkdir("/t/a")
    k.mkdir("/t/a/b")
    if "memory" in k.read("/t/a/cgroup.subtree_control").split():
        k.write("/t/a/cgroup.subtree_control", "-memory")   # the real backend enables it
    t = k.spawn("/t/a/b")
    base = int(k.read("/t/a/memory.current"))   # the task's own kernel memory
    t.touch_anon(16 * MiB)
    assert "memory.current" not in k.listdir("/t/a/b")
    assert values_close(int(k.read("/t/a/memory.current")) - base, 16 * MiB, 3)
    k.write("/t/a/cgroup.subtree_control", "+memory")
    assert int(k.read("/t/a/b/memory.current")) < 1 * MiB   # a new css: nothing yet
    assert values_close(int(k.read("/t/a/memory.current")) - base, 16 * MiB, 3)
    t.touch_anon(8 * MiB)
    assert values_close(int(k.read("/t/a/b/memory.current")), 8 * MiB, 5)
    assert values_close(int(k.read("/t/a/memory.current")) - base, 24 * MiB, 3)
    assert values_close(events(k, "/t/a/b/memory.stat")["anon"], 8 * MiB, 3)
    k.write("/t/a/cgroup.subtree_control", "-memory")
    assert "memory.current" not in k.listdir("/t/a/b")
    assert values_close(int(k.read("/t/a/memory.current")) - base, 24 * MiB, 3)
    t.touch_anon(4 * MiB)
    assert values_close(int(k.read("/t/a/memory.current")) - base, 28 * MiB, 3)
    assert values_close(events(k, "/t/a/memory.stat")["anon"], 28 * MiB, 3)
    assert k.read("/t/a/b/cgroup.procs") == f"{t.pid}\n"   # membership did not move
    assert "populated 1" in k.read("/t/a/b/cgroup.events")


@pytest.mark.parametrize("k", BOTH, indirect=True)
def test_max_write_sets_the_limit_first_then_oom_kills(k):
    """memory_max_write: unlike v1's limit_in_bytes (EBUSY when usage cannot come down),
    the limit is set at once, reclaim fails (no swap), and the OOM killer makes room."""
    top(k)
    k.mkdir("/t/a")
    k.write("/t/a/memory.swap.max", "0")
    t = k.spawn("/t/a")
    t.touch_anon(40 * MiB)
    k.write("/t/a/memory.max", "20M")
    k.settle()
    assert k.read("/t/a/memory.max") == str(20 * MiB) + "\n"
    assert t.state == "oom_killed"
    ev = events(k, "/t/a/memory.events")
    # memory_max_write counts MEMCG_OOM on every round of its loop: on a real kernel the
    # OOM killer finds its victim still exiting (it aborts, returning true) and the loop
    # goes round until the victim's memory is gone - hundreds of oom events for one kill
    # (1540 on the guest once); the model's victim frees its memory at once: one round
    assert ev["oom_kill"] == 1 and ev["oom"] >= 1
    if is_618(k):
        assert ev["oom"] == 1
    assert int(k.read("/t/a/memory.current")) <= 20 * MiB


@pytest.mark.parametrize("k", BOTH, indirect=True)
def test_reclaim_parsing_and_eagain(k):
    """test_memcg_reclaim's interface: memory.reclaim takes a size; an empty group cannot
    give 1M back (EAGAIN); 0 succeeds; trailing words other than swappiness= are EINVAL."""
    top(k)
    k.mkdir("/t/a")
    assert errno_of(k.write, "/t/a/memory.reclaim", "1M") == "EAGAIN"
    assert errno_of(k.write, "/t/a/memory.reclaim", "0") is None
    assert errno_of(k.write, "/t/a/memory.reclaim", "abc") == "EINVAL"
    assert errno_of(k.write, "/t/a/memory.reclaim", "1M foo") == "EINVAL"
    if is_618(k):
        # 6.13+: swappiness=N (0..200) or swappiness=max; 6.18 parses the size with
        # memparse, so an empty line is EINVAL
        assert errno_of(k.write, "/t/a/memory.reclaim", "0 swappiness=10") is None
        assert errno_of(k.write, "/t/a/memory.reclaim", "0 swappiness=max") is None
        assert errno_of(k.write, "/t/a/memory.reclaim", "0 swappiness=201") == "EINVAL"
        assert errno_of(k.write, "/t/a/memory.reclaim", "\n") == "EINVAL"
    else:
        # 6.1 knows no keys, and reads an empty size as "max" (page_counter_memparse)
        assert errno_of(k.write, "/t/a/memory.reclaim", "1M swappiness=10") == "EINVAL"
        assert errno_of(k.write, "/t/a/memory.reclaim", "\n") == "EAGAIN"


def test_reclaim_takes_page_cache_down():
    """test_memcg_reclaim: 50M of page cache, memory.reclaim of the excess over 30M brings
    current to about 30M (the guest has no disk yet: model only)."""
    k = memcg.SimKernel(memory="1G", hierarchy="v2")
    top(k)
    k.mkdir("/t/a")
    t = k.spawn("/t/a")
    t.read_file("data", 50 * MiB)
    current = int(k.read("/t/a/memory.current"))
    assert values_close(current, 50 * MiB, 3)
    k.write("/t/a/memory.reclaim", str(current - 30 * MiB))
    assert values_close(int(k.read("/t/a/memory.current")), 30 * MiB, 5)
    assert events(k, "/t/a/memory.stat")["pgsteal"] > 0
    # swappiness=max asks for anon only, but get_scan_count() looks at the swap space
    # first: with none, page cache is reclaimed all the same
    before = int(k.read("/t/a/memory.current"))
    k.write("/t/a/memory.reclaim", "4M swappiness=max")
    assert int(k.read("/t/a/memory.current")) <= before - 4 * MiB
    # with swap and no anon, anon-only reclaim finds nothing: EAGAIN
    k2 = memcg.SimKernel(memory="1G", swap="256M", hierarchy="v2")
    top(k2)
    k2.mkdir("/t/a")
    k2.spawn("/t/a").read_file("data", 8 * MiB)
    assert errno_of(k2.write, "/t/a/memory.reclaim", "1M swappiness=max") == "EAGAIN"
    k2.write("/t/a/memory.reclaim", "1M swappiness=0")


def test_high_write_reclaims_without_oom():
    """memory_high_write: setting memory.high below usage reclaims down to it, and never
    OOM-kills - anon without swap stays above high and the task lives."""
    k = memcg.SimKernel(memory="1G", hierarchy="v2")
    top(k)
    k.mkdir("/t/a")
    t = k.spawn("/t/a")
    t.read_file("data", 40 * MiB)
    t.touch_anon(20 * MiB)
    k.write("/t/a/memory.high", "30M")
    assert int(k.read("/t/a/memory.current")) <= 30 * MiB
    k.write("/t/a/memory.high", "10M")
    assert t.state == "running"
    assert int(k.read("/t/a/memory.current")) >= 20 * MiB
    assert events(k, "/t/a/memory.events")["oom"] == 0


# --- memory.oom.group ------------------------------------------------------------------------

@pytest.mark.parametrize("k", BOTH, indirect=True)
def test_oom_group_leaf_events(k):
    """test_memcg_oom_group_leaf_events: an OOM in a child with memory.oom.group kills all
    of the child's tasks and none of the parent's; the parent counts the child's kills."""
    top(k, "/t")
    k.mkdir("/t/p")
    k.write("/t/p/cgroup.subtree_control", "+memory")
    k.mkdir("/t/p/c")
    k.mkdir("/t/p/other")
    k.write("/t/p/c/memory.max", "50M")
    k.write("/t/p/c/memory.swap.max", "0")
    k.write("/t/p/c/memory.oom.group", "1")
    bystander = k.spawn("/t/p/other")
    bystander.touch_anon(60 * MiB)
    small = [k.spawn("/t/p/c"), k.spawn("/t/p/c")]
    for t in small:
        t.touch_anon(1 * MiB)
    big = k.spawn("/t/p/c")
    big.touch_anon(100 * MiB)
    k.settle()
    assert big.state == "oom_killed"
    assert [t.state for t in small] == ["oom_killed", "oom_killed"]
    assert bystander.state == "running"
    assert k.read("/t/p/c/cgroup.procs") == ""
    ev = events(k, "/t/p/c/memory.events")
    # the victim is counted twice: as the victim and as a member of the group
    assert ev["oom_group_kill"] == 1 and ev["oom_kill"] == 4
    parent = events(k, "/t/p/memory.events")
    assert parent["oom_kill"] == 4 and parent["oom_group_kill"] == 1
    assert events(k, "/t/p/memory.events.local")["oom_kill"] == 0
    bystander.exit()


@pytest.mark.parametrize("k", BOTH, indirect=True)
def test_oom_group_parent_events(k):
    """test_memcg_oom_group_parent_events: memory.oom.group on the group whose limit is hit
    kills its tasks and those of a child group below it (with no memory controller of its
    own, the child's tasks are charged to the parent)."""
    top(k, "/t")
    k.mkdir("/t/p")
    k.mkdir("/t/p/c")
    k.write("/t/p/cgroup.subtree_control", "-memory")   # the guest's mkdir enabled it
    k.write("/t/p/memory.max", "80M")
    k.write("/t/p/memory.swap.max", "0")
    k.write("/t/p/memory.oom.group", "1")
    parent_task = k.spawn("/t/p")
    parent_task.touch_anon(60 * MiB)
    small = [k.spawn("/t/p/c"), k.spawn("/t/p/c")]
    for t in small:
        t.touch_anon(1 * MiB)
    big = k.spawn("/t/p/c")
    big.touch_anon(100 * MiB)
    k.settle()
    # VMKernel calls a SIGKILLed task "oom_killed" when its own group's memory.events
    # counts the kill; the child has no memory controller, so its tasks read "exited"
    child_dead = ("oom_killed",) if is_618(k) else ("oom_killed", "exited")
    assert big.state in child_dead
    assert [t.state for t in small] in ([s, s] for s in child_dead)
    assert parent_task.state == "oom_killed"
    assert k.read("/t/p/cgroup.procs") == "" and k.read("/t/p/c/cgroup.procs") == ""
    ev = events(k, "/t/p/memory.events")
    # four tasks, the victim twice: the group kill (mm/oom_kill.c: oom_kill_memcg_member)
    # reaches the victim again and counts it once more, unless the victim has already
    # dropped its mm (__oom_kill_process: find_lock_task_mm fails, "already exiting",
    # nothing counted) - a race the real kernel sometimes loses, the model never
    assert ev["oom_group_kill"] == 1
    assert ev["oom_kill"] == 5 if is_618(k) else ev["oom_kill"] in (4, 5)


@pytest.mark.parametrize("k", BOTH, indirect=True)
def test_oom_group_score_events(k):
    """test_memcg_oom_group_score_events: a task with oom_score_adj -1000 survives its
    group's OOM; the others die, and oom_kill is 3 for two dead tasks (the victim counts
    twice)."""
    top(k)
    k.mkdir("/t/a")
    k.write("/t/a/memory.max", "50M")
    k.write("/t/a/memory.swap.max", "0")
    k.write("/t/a/memory.oom.group", "1")
    safe = k.spawn("/t/a")
    safe.oom_score_adj = -1000
    safe.touch_anon(1 * MiB)
    other = k.spawn("/t/a")
    other.touch_anon(1 * MiB)
    big = k.spawn("/t/a")
    big.touch_anon(100 * MiB)
    k.settle()
    assert big.state == "oom_killed" and other.state == "oom_killed"
    assert safe.state == "running" and safe.oom_score_adj == -1000
    ev = events(k, "/t/a/memory.events")
    assert ev["oom_kill"] == 3 and ev["oom_group_kill"] == 1
    safe.exit()


def test_oom_group_is_v2_only():
    """mem_cgroup_get_oom_group() is NULL on v1: there is no memory.oom.group file."""
    k = memcg.SimKernel(memory="1G")
    k.mkdir("/a")
    assert errno_of(k.read, "/a/memory.oom.group") == "ENOENT"


# --- swap ------------------------------------------------------------------------------------

@pytest.fixture
def swap_k(request):
    """A v2 kernel with swap: the model with 512M, or a guest with a swap disk."""
    if request.param == "sim":
        kern = memcg.SimKernel(memory="1G", swap="512M", hierarchy="v2")
        kern.release = "6.18"
    else:
        why = vm_unavailable()
        if why:
            pytest.skip(why)
        try:
            kern = memcg.VMKernel(hierarchy="v2", memory="1G", swap="512M")
        except NotImplementedError as e:
            pytest.skip(f"VMKernel: {e}")
        kern.boot()
        kern.release = kern.kernel_release
    yield kern
    kern.close()


@pytest.mark.parametrize("swap_k", BOTH, indirect=True)
def test_swap_max_and_peak(swap_k):
    """test_memcg_swap_max_peak: with memory.max and memory.swap.max at 30M, 100M of anon is
    OOM-killed once both are full; 50M fits as 30M in memory and 20M in swap; swap events
    count the refused swap-outs."""
    k = swap_k
    top(k)
    k.mkdir("/t/a")
    assert k.read("/t/a/memory.swap.current") == "0\n"
    k.write("/t/a/memory.swap.max", "30M")
    k.write("/t/a/memory.max", "30M")
    t = k.spawn("/t/a")
    t.touch_anon(100 * MiB)
    assert t.state == "oom_killed"
    ev = events(k, "/t/a/memory.events")
    assert ev["oom"] == 1 and ev["oom_kill"] == 1
    assert int(k.read("/t/a/memory.peak")) >= 29 * MiB
    swap_events = events(k, "/t/a/memory.swap.events")
    assert swap_events["max"] > 0 and swap_events["fail"] >= swap_events["max"]
    if is_618(k):
        assert int(k.read("/t/a/memory.swap.peak")) >= 29 * MiB   # 6.5+
    assert swap_left(k, "/t/a") == 0
    t2 = k.spawn("/t/a")
    t2.touch_anon(50 * MiB)
    assert t2.state == "running"
    mem, swp = int(k.read("/t/a/memory.current")), int(k.read("/t/a/memory.swap.current"))
    assert values_close(mem, 30 * MiB, 3)
    assert values_close(mem + swp, 50 * MiB, 3)
    t2.exit()
    assert swap_left(k, "/t/a") == 0


def swap_left(k, group: str) -> int:
    """memory.swap.current after the group's tasks died, less what the real kernel may
    keep a while: an exiting task's swap entry whose folio is in the swap cache and
    locked at that moment stays (mm/swapfile.c: free_swap_and_cache() only trylocks the
    folio) until reclaim drops the folio - a few pages, seen on the guest."""
    left = int(k.read(f"{group}/memory.swap.current"))
    return left if is_618(k) or left > 1 * MiB else 0


def test_swap_is_limited_alone_and_not_in_current():
    """v2 has no memory+swap counter: swapped-out pages leave memory.current and count in
    memory.swap.current only, and reclaim does not swap past swap.max."""
    k = memcg.SimKernel(memory="1G", swap="512M", hierarchy="v2")
    top(k)
    k.mkdir("/t/a")
    k.write("/t/a/memory.swap.max", "8M")
    t = k.spawn("/t/a")
    t.touch_anon(40 * MiB)
    k.write("/t/a/memory.high", "24M")
    assert int(k.read("/t/a/memory.swap.current")) == 8 * MiB
    assert int(k.read("/t/a/memory.current")) > 24 * MiB
    assert t.state == "running"


# --- notifications and mount options ---------------------------------------------------------

@pytest.mark.parametrize("k", BOTH, indirect=True)
def test_events_are_notified(k):
    """memory.events and cgroup.events changes wake their pollers (cgroup_file_notify)."""
    top(k)
    k.mkdir("/t/a")
    k.write("/t/a/memory.max", "8M")
    k.write("/t/a/memory.swap.max", "0")
    try:
        ev = k.event("/t/a/memory.events")
        pop = k.event("/t/cgroup.events")
    except OSError as e:
        pytest.skip(f"no v2 events on this kernel object: {e}")
    t = k.spawn("/t/a")
    k.advance(1)
    assert pop.count() >= 1
    t.touch_anon(32 * MiB)
    k.advance(1)
    assert t.state == "oom_killed"
    assert ev.count() >= 1
    assert pop.count() >= 1   # populated went back to 0
    ev.close()
    pop.close()


def test_memory_localevents_keeps_events_in_their_group():
    """The memory_localevents mount option: memory.events no longer counts descendants'."""
    k = memcg.SimKernel(memory="1G", hierarchy="v2", mount_options=("memory_localevents",))
    top(k)
    k.mkdir("/t/a")
    k.write("/t/a/memory.max", "8M")
    t = k.spawn("/t/a")
    t.touch_anon(32 * MiB)
    assert t.state == "oom_killed"
    assert events(k, "/t/a/memory.events")["oom_kill"] == 1
    assert events(k, "/t/memory.events")["oom_kill"] == 0


def test_root_files():
    """The root has cgroup.controllers, .procs, .stat, .subtree_control, .threads,
    .max.* and memory.stat/numa_stat/reclaim, but none of the CFTYPE_NOT_ON_ROOT files;
    its subtree_control starts with memory, and tasks may live in it."""
    k = memcg.SimKernel(memory="1G", hierarchy="v2")
    files = k.listdir("/")
    for f in ("memory.stat", "memory.numa_stat", "memory.reclaim", "cgroup.procs",
              "cgroup.subtree_control", "cgroup.controllers", "cgroup.stat"):
        assert f in files
    for f in ("memory.current", "memory.max", "memory.events", "memory.oom.group",
              "cgroup.events", "cgroup.kill", "cgroup.type", "memory.swap.max"):
        assert f not in files and errno_of(k.read, f"/{f}") == "ENOENT"
    assert k.read("/cgroup.subtree_control") == "memory\n"
    k.mkdir("/a")
    t = k.spawn("/")   # the root is mixable: no internal-process rule
    assert k.read("/cgroup.procs") == f"{t.pid}\n"
    assert errno_of(k.rmdir, "/") == "EBUSY"


def test_v1_is_unchanged():
    """On v1 the v2 rules do not apply: a parent's tasks and children coexist."""
    k = memcg.SimKernel(memory="1G")
    k.mkdir("/a")
    k.spawn("/a")
    k.mkdir("/a/b")
    assert errno_of(k.read, "/a/cgroup.subtree_control") == "ENOENT"
    assert "memory.limit_in_bytes" in k.listdir("/a/b")


# --- a seeded random differential: the model against the guest --------------------------------

GROUPS = ["/t/a", "/t/b", "/t/a/c", "/t/a/d", "/t/b/e"]


def _random_ops(seed: int, n: int) -> list:
    rng = random.Random(seed)
    ops = []
    for _ in range(n):
        kind = rng.choice(["mkdir", "mkdir", "enable", "disable", "spawn", "spawn", "move", "exit",
                           "max", "touch", "touch", "rmdir", "kill", "oomgroup"])
        ops.append((kind, rng.choice(GROUPS), rng.choice(GROUPS), rng.choice([4, 8, 16, 64]),
                    rng.choice([1, 2, 24])))
    return ops


def _observe(k, tasks: dict) -> dict:
    """What both kernels must agree on: which groups exist, which have memory files, their
    subtree_control and controllers, how many tasks, populated, memory.max, memory.oom.group,
    the OOM kill counts, and which tasks still run."""
    seen = {}
    for g in ["/t"] + GROUPS:
        try:
            names = k.listdir(g)
        except OSError as e:
            seen[g] = errno.errorcode[e.errno]
            continue
        row = {"memory": "memory.current" in names,
               "subtree": k.read(f"{g}/cgroup.subtree_control"),
               "controllers": k.read(f"{g}/cgroup.controllers"),
               "procs": len(k.read(f"{g}/cgroup.procs").split()),
               "events": k.read(f"{g}/cgroup.events")}
        if row["memory"]:
            ev = events(k, f"{g}/memory.events")
            row.update(max=k.read(f"{g}/memory.max"), oom_group=k.read(f"{g}/memory.oom.group"),
                       oom_kill=ev["oom_kill"], oom_group_kill=ev["oom_group_kill"])
        seen[g] = row
    seen["running"] = [t.state == "running" for t, _ in tasks.values()]
    return seen


def _run_ops(k, ops) -> list:
    """Run the operations; the log has each one's errno (or None) and the observed state."""
    top(k)
    tasks = {}
    log = []
    for i, (kind, g, h, mib, size) in enumerate(ops):
        err = None
        if kind == "mkdir":
            # the guest's mkdir enables +memory in the parent first: do it in the open
            parent = g.rsplit("/", 1)[0]
            err = errno_of(k.write, f"{parent}/cgroup.subtree_control", "+memory")
            if err is None:
                err = errno_of(k.mkdir, g)
        elif kind == "enable":
            err = errno_of(k.write, f"{g}/cgroup.subtree_control", "+memory")
        elif kind == "disable":
            err = errno_of(k.write, f"{g}/cgroup.subtree_control", "-memory")
        elif kind == "spawn":
            try:
                tasks[i] = (k.spawn(g), g)
            except OSError as e:
                err = errno.errorcode[e.errno]
        elif kind in ("move", "exit", "touch"):
            live = sorted(x for x in tasks if tasks[x][0].state == "running")
            if not live:
                err = "skip"
            else:
                t = tasks[live[mib % len(live)]][0]
                if kind == "move":
                    err = errno_of(t.move, h)
                elif kind == "exit":
                    t.exit()
                else:
                    t.touch_anon(size * MiB)   # 24M past a small memory.max: the OOM killer
        elif kind == "max":
            err = errno_of(k.write, f"{g}/memory.max", f"{mib}M")
        elif kind == "rmdir":
            err = errno_of(k.rmdir, g)
        elif kind == "kill":
            err = errno_of(k.write, f"{g}/cgroup.kill", "1")
        elif kind == "oomgroup":
            err = errno_of(k.write, f"{g}/memory.oom.group", "1")
        log.append((i, kind, g, h, err))
    k.settle()
    log.append(_observe(k, tasks))
    for t, _ in tasks.values():
        if t.state == "running":
            t.exit()
    return log


@pytest.mark.vm
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_tree_operations_agree_with_the_guest(seed, v2_guest):
    """Random mkdir/rmdir, +memory/-memory, spawn/move/exit, memory.max, touches (some past
    the limit), cgroup.kill and memory.oom.group: every errno and the final tree (memory
    files, subtree_control, controllers, tasks, populated, memory.max, oom.group, oom_kill
    and oom_group_kill counts, which tasks live) are the same on the model and the guest."""
    ops = _random_ops(seed, 40)
    sim = memcg.SimKernel(memory="1G", hierarchy="v2")
    want = _run_ops(sim, ops)
    guest = GuestCase(v2_guest)
    try:
        got = _run_ops(guest, ops)
    finally:
        guest.close()
    assert got == want


@pytest.mark.parametrize("seed", range(20))
def test_random_tree_operations_keep_the_rules(seed):
    """The same random operations on the model alone: the v2 invariants hold throughout -
    no non-root group both holds tasks and enables memory, a group shows memory files
    exactly when its parent enables memory, populated matches the tasks below."""
    k = memcg.SimKernel(memory="1G", hierarchy="v2")
    _run_ops(k, _random_ops(seed, 60))
    sys = k.sys
    from memcg import cgroup
    for m in list(sys.root.subtree()):
        if not m.online or m.is_root():
            continue
        c = cgroup.cgrp(sys, m)
        assert not (m.tasks and c.subtree_control), m.path
        assert ("memory.current" in k.listdir(m.path)) == ("memory" in cgroup.cgrp(sys, m.parent).subtree_control)
        assert cgroup.cgroup_is_populated(sys, m) == any(x.tasks for x in m.subtree())


# --- sockets ---------------------------------------------------------------------------------

def sock_bytes(k, group: str) -> int:
    """memory.stat sock (mm/memcontrol.c: MEMCG_SOCK)."""
    return events(k, f"{group}/memory.stat")["sock"]


@pytest.mark.parametrize("k", BOTH, indirect=True)
def test_sock_memory_is_in_current(k):
    """test_memcg_sock: a v2 group's socket buffers are charged to memory.current with no
    limit file written (mem_cgroup_sk_charge on the memory counter) and shown as memory.stat
    sock; once the connection is gone, sock is 0 again."""
    top(k)
    k.mkdir("/t/srv")
    k.mkdir("/t/cli")
    server = k.spawn("/t/srv")
    client = k.spawn("/t/cli")
    base = int(k.read("/t/srv/memory.current"))
    conn = server.connect_tcp(client)
    sent = 0
    for _ in range(64):
        n = conn.send(1 * MiB)
        sent += n
        if not n:
            break
    k.settle()
    current = int(k.read("/t/srv/memory.current")) - base
    sock = sock_bytes(k, "/t/srv") + sock_bytes(k, "/t/cli")
    assert sent > 1 * MiB and sock > 1 * MiB
    assert values_close(current + int(k.read("/t/cli/memory.current")), sock, 25)
    conn.close()
    server.exit()
    client.exit()
    k.advance(2)
    k.settle()
    assert sock_bytes(k, "/t") == 0


# --- scenarios -------------------------------------------------------------------------------

def test_oom_group_scenario_holds_on_the_model():
    """The oom-group built-in (hierarchy = "v2"): the job's three processes die together,
    the neighbour lives, and every expectation holds."""
    from memcg.scenario import load_scenario, run_scenario
    sc = load_scenario("oom-group")
    assert sc.machine.hierarchy == "v2"
    result = run_scenario(sc, memcg.SimKernel(**sc.machine.sim_kwargs()))
    assert result["hierarchy"] == "v2"
    assert all(e["ok"] for e in result["expectations"]), result["expectations"]
    assert set(result["groups"]["/job"]) >= {"memory.current", "memory.peak", "memory.events"}
    assert "memory.usage_in_bytes" not in result["groups"]["/job"]


def test_a_bad_hierarchy_names_the_key(tmp_path):
    from memcg.scenario import ScenarioError, load_scenario
    f = tmp_path / "s.toml"
    f.write_text('[machine]\nhierarchy = "v3"\n[[group]]\npath = "/a"\n')
    with pytest.raises(ScenarioError, match=r"machine\.hierarchy.*v1, v2"):
        load_scenario(str(f))


@pytest.mark.vm
def test_compare_oom_group_against_the_guest(tmp_path, capsys):
    """`memcg compare oom-group --against vm`: every discrete figure (task outcomes, event
    counts, expectations) agrees with the 6.1 guest."""
    import json
    from memcg.cli import main
    why = vm_unavailable()
    if why:
        pytest.skip(why)
    out = tmp_path / "cmp.json"
    assert main(["compare", "oom-group", "--against", "vm", "--json", str(out)]) in (0, 1)
    rows = json.loads(out.read_text())["rows"]
    discrete = [r for r in rows if r["what"].startswith(("task ", "expect ", "/job memory.events oom"))
                and r["class"] == "compared"]
    assert discrete and all(r["agree"] for r in discrete), [r for r in discrete if not r["agree"]]


def test_a_v1_scenario_runs_on_v2_with_its_knobs_mapped():
    """`--hierarchy v2` on a v1 scenario: limit -> memory.max, max_usage -> memory.peak,
    failcnt -> memory.events max, oom_control -> memory.events, soft limit -> memory.low,
    force_empty -> memory.reclaim; the run reports the mapping and the hog outcome holds."""
    from memcg.scenario import load_scenario, parse_scenario, run_scenario
    from memcg.scenario.v2map import on_hierarchy
    sc = on_hierarchy(load_scenario("hog"), "v2")
    result = run_scenario(sc, memcg.SimKernel(**sc.machine.sim_kwargs()))
    assert all(e["ok"] for e in result["expectations"]), result["expectations"]
    assert result["mapped"]["memory.limit_in_bytes"] == "memory.max"
    assert result["mapped"]["memory.oom_control"] == "memory.events"
    assert result["groups"]["/hog"]["memory.limit_in_bytes"] == str(64 * MiB) + "\n"
    text = ('[machine]\nmemory = "256M"\n[[group]]\npath = "/a"\nfiles = { "memory.soft_limit_in_bytes" = "8M" }\n'
            '[[task]]\nname = "t"\ngroup = "/a"\n'
            '[[step]]\nat = 0\ntask = "t"\nread_file = "f"\nsize = "16M"\n'
            '[[step]]\nat = 1\nwrite = { "/a/memory.force_empty" = "0" }\n'
            '[[step]]\nat = 2\nexpect = { "/a/memory.usage_in_bytes" = "< 1M", "/a/memory.soft_limit_in_bytes" = "== 8M" }\n')
    sc = on_hierarchy(parse_scenario(text), "v2")
    k = memcg.SimKernel(**sc.machine.sim_kwargs())
    result = run_scenario(sc, k)
    assert all(e["ok"] for e in result["expectations"]), result["expectations"]
    assert result["mapped"]["memory.soft_limit_in_bytes"] == "memory.low"
    assert result["mapped"]["memory.force_empty"] == "memory.reclaim"
    with pytest.raises(ValueError, match="written for cgroup v2"):
        on_hierarchy(load_scenario("oom-group"), "v1")
