"""The VM guest: a real 6.1 kernel under QEMU, booted to cgroup v1 or v2.

Guest runs skip, saying why, where qemu or the guest kernel is unavailable
(`apt-get install qemu-system-x86`, `memcg vm fetch`).
"""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from memcg.backends import vm, vmimage
from memcg.backends.vmkernel import VMKernel
from memcg.cli import main

from conftest import guest_fixture


def _guest_available() -> str:
    if shutil.which("qemu-system-x86_64") is None:
        return "qemu-system-x86_64 not installed (apt-get install qemu-system-x86)"
    try:
        vm.find_images()
    except vm.GuestError as e:
        return str(e)
    return ""


_WHY = _guest_available()
needs_guest = pytest.mark.skipif(bool(_WHY), reason=_WHY or "guest available")

# A 64 MiB buffer in a group limited to 16 MiB, no swap in the guest: the OOM killer.
_OOM_V2 = """mkdir /sys/fs/cgroup/a; echo 16M > /sys/fs/cgroup/a/memory.max
sh -c 'echo $$ > /sys/fs/cgroup/a/cgroup.procs; exec dd if=/dev/zero of=/dev/null bs=64M count=1' 2>/dev/null
echo rc=$?
cat /sys/fs/cgroup/a/memory.events; echo current $(cat /sys/fs/cgroup/a/memory.current)"""

_OOM_V1 = """G=/sys/fs/cgroup/memory/a; mkdir $G; echo 16M > $G/memory.limit_in_bytes
sh -c "echo \\$\\$ > $G/cgroup.procs; exec dd if=/dev/zero of=/dev/null bs=64M count=1" 2>/dev/null
echo rc=$?
cat $G/memory.oom_control; echo failcnt $(cat $G/memory.failcnt)
echo max_usage $(cat $G/memory.max_usage_in_bytes)"""


def _fields(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        key, _, value = line.replace("=", " ").partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def _qemu_children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmd = f.read()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            if ppid == pid and b"qemu-system" in cmd:
                found.append(int(entry))
    return found


def _memcg_tmpdirs() -> set:
    root = tempfile.gettempdir()
    return {d for d in os.listdir(root) if d.startswith("memcg-vm-")}


def test_bad_hierarchy_is_refused():
    with pytest.raises(ValueError):
        vm.run_script("", hierarchy="v3")


def test_no_qemu_says_how_to_install(monkeypatch):
    monkeypatch.setattr(vm.shutil, "which", lambda name: None)
    with pytest.raises(vm.GuestError, match="apt-get install qemu-system-x86"):
        vm.run_script("")


def test_no_kernel_says_how_to_fetch(tmp_path, capsys, monkeypatch):
    with pytest.raises(vm.GuestError, match="memcg vm fetch"):
        vm.find_images(str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(vm.shutil, "which", lambda name: "/bin/true")
    assert main(["vm", "probe"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "memcg vm fetch" in err


def test_initramfs_is_newc_with_a_trailer(tmp_path):
    bb = tmp_path / "busybox"
    bb.write_bytes(b"\x7fELF")
    data = vm._initramfs(str(bb), "v2", "echo hi")
    assert data.startswith(b"070701") and b"TRAILER!!!" in data and len(data) % 4 == 0
    assert b"+memory" in data and b"echo hi" in data


@needs_guest
def test_v2_memory_max_oom_kills_and_counts_events():
    r = vm.run_script(_OOM_V2, hierarchy="v2", memory=512)
    assert r.kernel_release.startswith("6.1.")
    f = _fields(r.output)
    assert f["rc"] == 128 + signal.SIGKILL
    assert f["oom_kill"] == 1 and f["oom"] >= 1 and f["max"] >= 1
    assert f["current"] <= 16 << 20


@needs_guest
def test_v1_limit_oom_kills_and_counts_failcnt():
    r = vm.run_script(_OOM_V1, hierarchy="v1", memory=512)
    f = _fields(r.output)
    assert f["rc"] == 128 + signal.SIGKILL
    assert f["oom_kill"] == 1 and f["under_oom"] == 0 and f["failcnt"] >= 1
    assert f["max_usage"] == 16 << 20


@needs_guest
def test_a_guest_past_its_time_limit_is_killed_and_leaves_nothing():
    before = _memcg_tmpdirs()
    with pytest.raises(vm.GuestError, match="did not finish within 2 s"):
        vm.run_script("sleep 600", timeout=2)
    assert _qemu_children(os.getpid()) == []
    assert _memcg_tmpdirs() - before == set()


@needs_guest
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_the_guest_dies_with_its_caller(sig):
    before = _memcg_tmpdirs()
    code = "from memcg.backends import vm; vm.run_script('sleep 600', timeout=600)"
    caller = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ))
    try:
        deadline = time.monotonic() + 30
        while not (qemu := _qemu_children(caller.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert qemu, "the guest did not start"
        time.sleep(3)  # the guest has printed: its initramfs is already removed
        caller.send_signal(sig)
        caller.wait(10)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{qemu[0]}") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{qemu[0]}")
        assert _memcg_tmpdirs() - before == set()
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()


# --- VMKernel: the Kernel interface on the guest kernel ---------------------------------

def test_vmkernel_refuses_bad_sizes_and_unknown_hierarchies():
    with pytest.raises(ValueError, match="swap"):
        VMKernel(swap="4K")
    with pytest.raises(ValueError, match="disk"):
        VMKernel(disk="1M")
    with pytest.raises(ValueError, match="hierarchy"):
        VMKernel(hierarchy="v3")
    with pytest.raises(ValueError, match="memory"):
        VMKernel(memory="lots")
    with pytest.raises(ValueError, match="accel"):
        VMKernel(accel="xen")


def test_the_swap_area_is_what_mkswap_writes():
    fd = vm.make_swap_image(1 << 20)
    try:
        head = os.pread(fd, 4096, 0)
        assert os.fstat(fd).st_size == 1 << 20 and os.fstat(fd).st_nlink == 0   # no name
    finally:
        os.close(fd)
    assert head[-10:] == b"SWAPSPACE2"
    assert int.from_bytes(head[1024:1028], "little") == 1          # version
    assert int.from_bytes(head[1028:1032], "little") == 255        # last_page


@pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="mkfs.ext4 not installed (e2fsprogs)")
def test_the_disk_is_an_unnamed_sparse_ext4_image():
    fd = vm.make_ext4_image(256 << 20)
    try:
        st = os.fstat(fd)
        sb = os.pread(fd, 1024, 1024)          # fs/ext4/ext4.h: struct ext4_super_block
    finally:
        os.close(fd)
    assert st.st_nlink == 0 and st.st_size == 256 << 20
    assert st.st_blocks * 512 < 16 << 20               # sparse: only the metadata
    assert sb[0x38:0x3a] == b"\x53\xef"                # s_magic EXT4_SUPER_MAGIC


def test_no_mkfs_is_one_line_saying_what_to_install(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(vm.shutil, "which",
                        lambda name, **kw: None if name == "mkfs.ext4" else real_which(name, **kw))
    with pytest.raises(vm.GuestError, match="apt-get install e2fsprogs") as e:
        vm.make_ext4_image(64 << 20)
    assert "\n" not in str(e.value)


@needs_guest
def test_the_vm_backend_without_mkfs_is_one_line_exit_2_and_leaves_nothing(capsys, monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(vm.shutil, "which",
                        lambda name, **kw: None if name == "mkfs.ext4" else real_which(name, **kw))
    before, guests = _memcg_tmpdirs(), set(_qemu_children(os.getpid()))
    assert main(["run", "hog", "--backend", "vm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "apt-get install e2fsprogs" in err
    assert set(_qemu_children(os.getpid())) == guests and _memcg_tmpdirs() - before == set()


def test_no_modules_says_how_to_fetch(tmp_path):
    boot = tmp_path / "kernel" / "boot"
    boot.mkdir(parents=True)
    (boot / "vmlinuz-6.1.0-0-cloud-amd64").write_bytes(b"")
    with pytest.raises(vm.GuestError, match="memcg vm fetch") as e:
        vmimage.disk_modules(str(boot / "vmlinuz-6.1.0-0-cloud-amd64"))
    assert "virtio" in str(e.value) and "\n" not in str(e.value)


@needs_guest
def test_the_disk_modules_come_with_their_dependencies_first():
    kernel, _ = vm.find_images()
    names = [os.path.basename(m)[:-3] for m in vmimage.disk_modules(kernel)]
    assert names[-1] == "virtio_blk" and "virtio_pci" in names
    for dep in ("virtio", "virtio_ring"):
        assert names.index(dep) < names.index("virtio_blk")
    assert names.index("virtio_ring") < names.index("virtio")


def test_the_kvm_probe_falls_back_to_tcg_and_is_remembered(tmp_path, monkeypatch):
    monkeypatch.delenv("MEMCG_VM_ACCEL", raising=False)
    monkeypatch.setattr(vm, "_kvm_usable", lambda: True)
    monkeypatch.setattr(vm, "_probe_key", lambda: "this boot")
    probes = []
    monkeypatch.setattr(vm, "probe_kvm", lambda **kw: probes.append(1) or False)
    assert vm.choose_accel("auto", root=str(tmp_path)) == "tcg"
    assert vm.choose_accel("auto", root=str(tmp_path)) == "tcg" and len(probes) == 1
    assert json.loads((tmp_path / "accel.json").read_text())["accel"] == "tcg"
    monkeypatch.setattr(vm, "_probe_key", lambda: "the next boot")
    monkeypatch.setattr(vm, "probe_kvm", lambda **kw: True)
    assert vm.choose_accel("auto", root=str(tmp_path)) == "kvm"       # probed again
    assert vm.choose_accel("tcg", root=str(tmp_path)) == "tcg"
    monkeypatch.setenv("MEMCG_VM_ACCEL", "tcg")
    assert vm.choose_accel("auto", root=str(tmp_path)) == "tcg"
    monkeypatch.setenv("MEMCG_VM_ACCEL", "xen")
    with pytest.raises(vm.GuestError, match="MEMCG_VM_ACCEL"):
        vm.choose_accel("auto", root=str(tmp_path))
    monkeypatch.setattr(vm, "_kvm_usable", lambda: False)
    monkeypatch.delenv("MEMCG_VM_ACCEL")
    assert vm.choose_accel("auto", root=str(tmp_path / "none")) == "tcg"   # no /dev/kvm: no probe


@needs_guest
def test_a_kvm_probe_that_does_not_boot_in_time_is_false_and_leaves_nothing():
    before, guests = _memcg_tmpdirs(), set(_qemu_children(os.getpid()))
    start = time.monotonic()
    # 0.5 s: no guest answers that fast under TCG, and a hanging KVM is given up on
    ok = vm.probe_kvm(timeout=0.5)
    assert isinstance(ok, bool) and time.monotonic() - start < 15
    if not vm._kvm_usable():
        assert ok is False
    assert set(_qemu_children(os.getpid())) == guests and _memcg_tmpdirs() - before == set()


def test_vm_backend_without_qemu_is_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.setattr(vm.shutil, "which", lambda name: None)
    assert main(["run", "hog", "--backend", "vm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "apt-get install qemu-system-x86" in err
    assert main(["compare", "hog", "--against", "vm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "apt-get install qemu-system-x86" in err


def test_the_image_holds_the_interpreter_and_the_agent_and_is_cached(tmp_path):
    pairs, python = vmimage.image_files()
    guest_paths = {g for g, _ in pairs}
    assert python in guest_paths
    assert "/memcg/memcg/backends/vmagent.py" in guest_paths
    assert "/memcg/memcg/backends/linux/kernel.py" in guest_paths
    assert not any("/site-packages/" in g for g in guest_paths)   # no NumPy, no model
    bb = tmp_path / "busybox"
    bb.write_bytes(b"\x7fELF")
    first = vmimage.build(str(bb), "#!/bin/sh\n", root=str(tmp_path))
    stamp = os.stat(first).st_mtime_ns
    assert vmimage.build(str(bb), "#!/bin/sh\n", root=str(tmp_path)) == first
    assert os.stat(first).st_mtime_ns == stamp            # not rebuilt
    other = vmimage.build(str(bb), "#!/bin/sh\necho\n", root=str(tmp_path))
    assert other != first and not os.path.exists(first)   # one image kept


v2 = guest_fixture(hierarchy="v2", memory="512M", cpus=2, swap="256M")
v1 = guest_fixture(hierarchy="v1", memory="512M", cpus=2)


def test_v2_memory_max_is_read_back_as_the_guest_prints_it(v2):
    assert v2.kernel_release.startswith("6.1.")
    v2.mkdir("/a")
    v2.write("/a/memory.max", "16M")
    assert v2.read("/a/memory.max") == "16777216\n"
    v2.write("/a/memory.max", "max")
    assert v2.read("/a/memory.max") == "max\n"
    assert "memory.events" in v2.listdir("/a")
    v2.rmdir("/a")
    with pytest.raises(FileNotFoundError):
        v2.read("/a/memory.max")


def test_v2_bad_writes_carry_the_guest_kernels_errno(v2):
    v2.mkdir("/e")
    try:
        with pytest.raises(OSError) as e:
            v2.write("/e/memory.max", "lots")
        assert e.value.errno == errno.EINVAL
        with pytest.raises(OSError) as e:
            v2.mkdir("/e")
        assert e.value.errno == errno.EEXIST
        t = v2.spawn("/e")
        with pytest.raises(OSError) as e:
            v2.rmdir("/e")
        assert e.value.errno == errno.EBUSY
        t.exit()
        assert t.state == "exited"
    finally:
        v2.rmdir("/e")


def test_v2_anon_past_memory_max_is_oom_killed_and_counted(v2):
    v2.mkdir("/hog")
    v2.write("/hog/memory.max", "16M")
    v2.write("/hog/memory.swap.max", "0")       # the guest has swap; this group may not use it
    notified = v2.event("/hog/memory.events")
    populated = v2.event("/hog/cgroup.events")
    t = v2.spawn("/hog")
    assert t.group == "/hog"
    t.touch_anon(64 << 20)
    assert t.state == "oom_killed"
    events = dict(line.split() for line in v2.read("/hog/memory.events").splitlines())
    assert events["oom_kill"] == "1" and int(events["max"]) >= 1
    assert int(v2.read("/hog/memory.peak")) <= 16 << 20
    # cgroup_file_notify on each max/oom/oom_kill event; populated 0 -> 1 -> 0
    assert notified.count() >= 1 and notified.count() == 0
    assert populated.count() >= 1
    assert dict(line.split() for line in v2.read("/hog/cgroup.events").splitlines())["populated"] == "0"
    notified.close()
    populated.close()


def test_v2_debugfs_reports_the_kernel_the_accelerator_and_the_disk(v2):
    d = v2.debugfs()
    assert d["kernel_release"] == v2.kernel_release and d["kernel_release"].startswith("6.1.")
    assert d["accel"] in ("kvm", "tcg") and d["disk"] == "ext4" and d["swap_bytes"] == 256 << 20
    assert v2.working_fs == "ext4"


def test_v2_page_cache_of_an_ext4_file_is_charged_and_reclaimed(v2):
    v2.mkdir("/pc")
    t = v2.spawn("/pc")
    t.read_file("data", 16 << 20)
    stat = dict(line.split() for line in v2.read("/pc/memory.stat").splitlines())
    assert int(stat["file"]) >= 16 << 20 and int(stat["shmem"]) == 0    # not tmpfs
    v2.write("/pc/memory.max", "8M")               # reclaims the clean cache to fit
    t.read_file("big", 64 << 20)
    assert t.state == "running" and int(v2.read("/pc/memory.current")) <= 8 << 20
    events = dict(line.split() for line in v2.read("/pc/memory.events").splitlines())
    assert events["oom_kill"] == "0" and int(events["max"]) >= 1
    t.exit()


def test_v2_swap_in_the_guest_only_and_a_psi_trigger(v2):
    with open("/proc/swaps") as f:
        host_swaps = f.read()
    v2.mkdir("/bad")
    # kernel/sched/psi.c: psi_trigger_create: a window under 500 ms or over 10 s, a
    # threshold of 0 or above the window (equal to it is accepted), an unknown type
    for bad in ("some 150000 100000", "some 150000 10000001", "some 0 1000000",
                "some 1000001 1000000", "most 1 1000000"):
        with pytest.raises(OSError) as e:
            v2.event("/bad/memory.pressure", bad)
        assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        v2.event("/bad/memory.max")
    assert e.value.errno == errno.EOPNOTSUPP
    v2.event("/bad/memory.pressure", "full 1000000 1000000").close()
    v2.rmdir("/bad")
    v2.mkdir("/sw")
    v2.write("/sw/memory.max", "16M")
    psi = v2.event("/sw/memory.pressure", "some 10000 1000000")
    t = v2.spawn("/sw")
    t.touch_anon(40 << 20)                         # 24M and more into the guest's swap
    assert t.state == "running"
    assert int(v2.read("/sw/memory.swap.current")) >= 16 << 20
    events = dict(line.split() for line in v2.read("/sw/memory.events").splitlines())
    assert events["oom_kill"] == "0"
    v2.advance(1)
    assert psi.count() >= 1                        # swapping out stalls the task on memory
    with open("/proc/swaps") as f:
        assert f.read() == host_swaps              # the host's swap is untouched
    psi.close()
    t.exit()


def test_v1_oom_is_signalled_on_an_eventfd_and_failcnt_counts(v1):
    v1.mkdir("/g")
    v1.write("/g/memory.limit_in_bytes", "16M")
    assert v1.read("/g/memory.limit_in_bytes") == "16777216\n"
    ev = v1.event("/g/memory.oom_control")
    t = v1.spawn("/g")
    t.touch_anon(64 << 20)
    assert t.state == "oom_killed"
    assert ev.count() == 1 and ev.count() == 0
    oom = dict(line.split() for line in v1.read("/g/memory.oom_control").splitlines())
    assert oom["oom_kill"] == "1"
    assert int(v1.read("/g/memory.failcnt")) >= 1
    assert v1.read("/g/memory.max_usage_in_bytes") == "16777216\n"
    ev.close()


def test_v1_fork_and_move_between_groups(v1):
    v1.mkdir("/p")
    v1.mkdir("/q")
    t = v1.spawn("/p")
    c = t.fork()
    assert c.pid != t.pid and c.group == "/p" and c.state == "running"
    c.move("/q")
    assert c.group == "/q"
    assert str(c.pid) in v1.read("/q/cgroup.procs").split()
    c.touch_anon(4 << 20)
    assert int(v1.read("/q/memory.usage_in_bytes")) >= 4 << 20
    c.exit()
    t.exit()


@needs_guest
def test_close_leaves_no_qemu_and_a_dead_guest_is_one_line():
    before, guests = _memcg_tmpdirs(), set(_qemu_children(os.getpid()))   # the module's guests
    k = VMKernel(hierarchy="v2", memory="512M")
    assert k.qemu_pid is None            # booted on first use only
    k.mkdir("/x")
    pid = k.qemu_pid
    assert pid in _qemu_children(os.getpid())
    k.close()
    assert not os.path.exists(f"/proc/{pid}") and set(_qemu_children(os.getpid())) == guests
    assert _memcg_tmpdirs() - before == set()
    with pytest.raises(vm.GuestError, match="closed"):
        k.read("/x/memory.max")


@needs_guest
def test_a_guest_that_dies_is_a_guest_error():
    guests = set(_qemu_children(os.getpid()))
    k = VMKernel(hierarchy="v1", memory="512M")
    try:
        k.boot()
        os.kill(k.qemu_pid, signal.SIGKILL)
        with pytest.raises(vm.GuestError, match="stopped") as e:
            k.read("/memory.usage_in_bytes")
        assert "\n" not in str(e.value)
    finally:
        k.close()
    assert set(_qemu_children(os.getpid())) == guests


@needs_guest
def test_a_vmkernel_dies_with_its_caller():
    code = ("import memcg, sys; k = memcg.VMKernel(hierarchy='v2', memory='512M'); "
            "k.mkdir('/a'); print(k.qemu_pid, flush=True); sys.stdin.read()")
    caller = subprocess.Popen([sys.executable, "-c", code], env=dict(os.environ),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        qemu = int(caller.stdout.readline())
        assert os.path.exists(f"/proc/{qemu}")
        caller.kill()
        caller.wait(10)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{qemu}") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not os.path.exists(f"/proc/{qemu}")
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()


@needs_guest
def test_run_hog_on_the_vm_backend(tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main(["run", "hog", "--backend", "vm", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["backend"] == "vm"
    assert data["tasks"]["hog"]["state"] == "oom_killed"
    assert data["tasks"]["neighbour"]["state"] == "running"
    assert data["groups"]["/hog"]["memory.oom_control"].split()[-1] == "1"
