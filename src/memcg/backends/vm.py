"""A real Linux kernel in a QEMU guest: fetch it, boot it, run a script in it.

The foundation of the VM backend: a guest kernel from the distribution's package
(unpacked into a cache folder, never installed on the host), a busybox initramfs
built here, and a guest that mounts the memory controller (cgroup v1 `memory` or
cgroup2 with `+memory` in the root's subtree_control), runs one shell script and
powers off.  The serial console is the channel: the script's output comes back
between markers.  Nothing needs host root, networking or the host's cgroups.

QEMU runs with `-accel kvm` where a short probe boot under KVM succeeds (probe_kvm,
its answer cached per host boot) and with `-accel tcg` (software emulation)
otherwise; it is started with PR_SET_PDEATHSIG so it dies with its parent, and every
temporary file lives in one temporary directory removed when the run ends.  Disks
for the guest (an ext4 file system, a swap area) are unnamed sparse files
(O_TMPFILE) handed to QEMU as open descriptors: they never have a name to leave
behind.
"""

from __future__ import annotations

import ctypes
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

__all__ = ["GuestError", "GuestResult", "cache_dir", "choose_accel", "fetch", "find_images",
           "make_ext4_image", "make_swap_image", "probe_kvm", "run_script"]

_KERNEL_META = "linux-image-cloud-amd64"  # Debian's cloud kernel: memcg, PSI, 8250 console built in
_BUSYBOX = "busybox-static"
_BEGIN, _END = "@@memcg-begin@@", "@@memcg-end@@"
_PR_SET_PDEATHSIG = 1  # include/uapi/linux/prctl.h: PR_SET_PDEATHSIG
PAGE_SIZE = 4096
# A KVM guest prints its first line in well under a second; where /dev/kvm exists
# but does not run guests, QEMU hangs after "Booting from ROM": the probe gives up
# after this long and the guest runs under TCG.
KVM_PROBE_TIMEOUT = 8.0
ACCELS = ("auto", "kvm", "tcg")


class GuestError(RuntimeError):
    """The guest cannot be used; str() is one line saying what is missing and how to get it."""


@dataclass
class GuestResult:
    """What one guest run printed and how long it took."""

    kernel_release: str
    output: str
    seconds: float


def cache_dir() -> str:
    """Where the kernel and busybox packages are unpacked: $XDG_CACHE_HOME/memcg/vm."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "memcg", "vm")


def _qemu() -> str:
    path = shutil.which("qemu-system-x86_64")
    if path is None:
        raise GuestError("qemu-system-x86_64 not found: apt-get install qemu-system-x86")
    return path


def qemu_accel_args(accel: str) -> list[str]:
    """QEMU's accelerator options: KVM with the host's CPU, or TCG emulating every feature."""
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg", "-cpu", "max"]


def _kvm_usable() -> bool:
    return os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)


def probe_kvm(timeout: float = KVM_PROBE_TIMEOUT, root: str | None = None) -> bool:
    """Whether a guest boots under KVM here: a busybox guest that runs nothing must
    finish within timeout seconds with `-accel kvm`."""
    if not _kvm_usable():
        return False
    try:
        run_script(":", hierarchy="v2", memory=256, cpus=1, timeout=timeout, root=root,
                   accel="kvm")
    except GuestError:
        return False
    return True


def _probe_key() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = "?"
    st = os.stat(_qemu())
    return f"{boot} {st.st_size} {st.st_mtime_ns}"


def choose_accel(accel: str = "auto", root: str | None = None) -> str:
    """"kvm" or "tcg".  "auto" asks probe_kvm once per host boot and QEMU build (the
    answer is kept in the cache folder); the environment's MEMCG_VM_ACCEL (kvm or tcg)
    overrides "auto"."""
    if accel not in ACCELS:
        raise ValueError(f"accel: expected one of {', '.join(ACCELS)}, got {accel!r}")
    if accel == "auto":
        accel = os.environ.get("MEMCG_VM_ACCEL", "auto")
        if accel not in ACCELS:
            raise GuestError(f"MEMCG_VM_ACCEL: expected kvm or tcg, got {accel!r}")
    if accel != "auto":
        return accel
    if not _kvm_usable():
        return "tcg"
    path = os.path.join(root or cache_dir(), "accel.json")
    key = _probe_key()
    try:
        with open(path) as f:
            known = json.load(f)
        if known.get("key") == key and known.get("accel") in ("kvm", "tcg"):
            return known["accel"]
    except (OSError, ValueError, AttributeError):
        pass
    found = "kvm" if probe_kvm(root=root) else "tcg"
    try:
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"key": key, "accel": found}, f)
        os.replace(tmp, path)
    except OSError:
        pass
    return found


def _unnamed_file(size: int) -> int:
    """A sparse file of size bytes with no name (O_TMPFILE), open read-write."""
    where = tempfile.gettempdir()
    try:
        fd = os.open(where, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:     # a file system without O_TMPFILE: a name for an instant
        fd, name = tempfile.mkstemp(prefix="memcg-vm-disk-")
        os.unlink(name)
    os.ftruncate(fd, size)
    return fd


def make_ext4_image(size: int) -> int:
    """An open descriptor of an unnamed sparse file holding an empty ext4 file system
    (mkfs.ext4 from e2fsprogs, run on the host as any user)."""
    mkfs = shutil.which("mkfs.ext4") or shutil.which("mkfs.ext4", path="/sbin:/usr/sbin")
    if mkfs is None:
        raise GuestError("mkfs.ext4 not found (the guest's disk needs it): apt-get install e2fsprogs")
    fd = _unnamed_file(size)
    # lazy_itable_init/lazy_journal_init: the sparse file reads as zeros already, so
    # nothing needs writing but the metadata (fs/ext4/super.c skips the lazy init
    # thread with noinit_itable, which the guest mounts with).
    r = subprocess.run([mkfs, "-F", "-q", "-E", "lazy_itable_init=1,lazy_journal_init=1",
                        f"/proc/{os.getpid()}/fd/{fd}"], capture_output=True, text=True)
    if r.returncode != 0:
        os.close(fd)
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise GuestError(f"mkfs.ext4 failed for the guest's disk: {last}")
    return fd


def make_swap_image(size: int) -> int:
    """An open descriptor of an unnamed sparse file holding a swap area, as mkswap
    writes it: include/linux/swap.h union swap_header (version 1, last_page, no bad
    pages) and "SWAPSPACE2" in the last 10 bytes of the first page (mm/swapfile.c:
    read_swap_header checks both)."""
    pages = size // PAGE_SIZE
    if pages < 10:
        raise ValueError(f"swap: {size} bytes is too small for a swap area")
    fd = _unnamed_file(pages * PAGE_SIZE)
    header = bytearray(PAGE_SIZE)
    header[1024:1036] = (1).to_bytes(4, "little") + (pages - 1).to_bytes(4, "little") + bytes(4)
    header[1036:1052] = os.urandom(16)        # uuid
    header[PAGE_SIZE - 10:] = b"SWAPSPACE2"
    os.pwrite(fd, bytes(header), 0)
    return fd


def find_images(root: str | None = None) -> tuple[str, str]:
    """(vmlinuz, busybox) from the cache; GuestError saying how to fetch them if absent."""
    root = root or cache_dir()
    kernels = sorted(glob.glob(os.path.join(root, "kernel", "boot", "vmlinuz-*")))
    busybox = os.path.join(root, "busybox", "bin", "busybox")
    if not kernels or not os.path.exists(busybox):
        raise GuestError(f"no guest kernel in {root}: run `memcg vm fetch` (needs apt-get)")
    return kernels[-1], busybox


def _download(package: str, into: str) -> str:
    subprocess.run(["apt-get", "download", "-q", package], cwd=into, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return sorted(glob.glob(os.path.join(into, package.split("=")[0] + "_*.deb")))[-1]


def _depends(package: str) -> str:
    out = subprocess.run(["apt-cache", "depends", package], check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        name = line.strip().removeprefix("Depends:").strip()
        if line.strip().startswith("Depends:") and name.startswith("linux-image-"):
            return name
    raise GuestError(f"{package} names no linux-image package it depends on")


def fetch(root: str | None = None) -> tuple[str, str]:
    """Download the cloud kernel and busybox-static with apt-get and unpack them (dpkg-deb -x)."""
    root = root or cache_dir()
    os.makedirs(root, exist_ok=True)
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise GuestError("fetching the guest kernel needs apt-get and dpkg-deb (a Debian host)")
    try:
        for package, folder in ((_depends(_KERNEL_META), "kernel"), (_BUSYBOX, "busybox")):
            deb = _download(package, root)
            subprocess.run(["dpkg-deb", "-x", deb, os.path.join(root, folder)], check=True)
            os.unlink(deb)
    except subprocess.CalledProcessError as e:
        raise GuestError(f"fetching the guest kernel failed: {' '.join(e.cmd)}") from None
    return find_images(root)


def _cpio_newc(entries: list[tuple]) -> bytes:
    """An initramfs archive (the kernel's "newc" cpio format, usr/gen_init_cpio.c).

    Each entry is (name, mode, data) or (name, mode, data, mtime): a file keeps its
    modification time, so the compiled modules beside Python sources stay valid."""
    out = bytearray()
    for ino, entry in enumerate(entries + [("TRAILER!!!", 0, b"")], start=1):
        name, mode, data = entry[:3]
        mtime = entry[3] if len(entry) > 3 else 0
        raw = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, mtime, len(data), 0, 0, 0, 0, len(raw), 0]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + raw
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def _init_script(hierarchy: str, script: str) -> str:
    if hierarchy == "v1":
        mount = ("mount -t tmpfs cgroup /sys/fs/cgroup; mkdir /sys/fs/cgroup/memory; "
                 "mount -t cgroup -o memory memory /sys/fs/cgroup/memory")
    else:
        mount = ("mount -t cgroup2 none /sys/fs/cgroup; "
                 "echo +memory > /sys/fs/cgroup/cgroup.subtree_control")
    return "\n".join([
        "#!/bin/busybox sh", "/bin/busybox --install -s /bin",
        "mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev",
        "mount -t tmpfs tmp /tmp", mount,
        f"echo {_BEGIN} $(uname -r)", script, f"echo {_END}",
        "poweroff -f", ""])


def _initramfs(busybox: str, hierarchy: str, script: str) -> bytes:
    with open(busybox, "rb") as f:
        bb = f.read()
    dirs = ["bin", "proc", "sys", "dev", "tmp", "sys/fs", "sys/fs/cgroup"]
    entries = [(d, 0o40755, b"") for d in dirs]
    entries += [("bin/busybox", 0o100755, bb),
                ("init", 0o100755, _init_script(hierarchy, script).encode())]
    return _cpio_newc(entries)


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _read_until_exit(proc: subprocess.Popen, tmp: str, timeout: float) -> bytes:
    """The guest's console output until QEMU exits; GuestError after timeout seconds.

    QEMU has loaded the kernel and the initramfs into guest memory before the guest
    prints anything, so the temporary directory is removed at the first output: a
    caller killed later (SIGKILL, SIGTERM) leaves no image behind, and the guest dies
    with it through PR_SET_PDEATHSIG.
    """
    start = time.monotonic()
    chunks: list[bytes] = []
    first = threading.Event()

    def pump() -> None:
        for chunk in iter(lambda: proc.stdout.read1(4096), b""):
            chunks.append(chunk)
            first.set()
    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    if first.wait(timeout):
        shutil.rmtree(tmp, ignore_errors=True)
    try:
        proc.wait(max(0.0, timeout - (time.monotonic() - start)))
    except subprocess.TimeoutExpired:
        raise GuestError(f"the guest did not finish within {timeout:g} s") from None
    reader.join(5)
    return b"".join(chunks)


def run_script(script: str, hierarchy: str = "v2", memory: int = 1024, cpus: int = 2,
               timeout: float = 60.0, root: str | None = None, accel: str = "tcg") -> GuestResult:
    """Boot a guest, run a shell script after the memory controller is mounted, power off.

    memory is the guest's RAM in MiB.  Raises GuestError when qemu or the kernel is
    missing or the guest does not finish within timeout seconds.  accel: "tcg",
    "kvm" or "auto" (choose_accel).
    """
    if hierarchy not in ("v1", "v2"):
        raise ValueError(f"hierarchy must be 'v1' or 'v2', not {hierarchy!r}")
    qemu = _qemu()
    kernel, busybox = find_images(root)
    tmp = tempfile.mkdtemp(prefix="memcg-vm-")
    try:
        initrd = os.path.join(tmp, "initrd")
        with open(initrd, "wb") as f:
            f.write(_initramfs(busybox, hierarchy, script))
        cmdline = "console=ttyS0 quiet panic=-1 rdinit=/init"
        argv = [qemu, *qemu_accel_args(choose_accel(accel, root)), "-m", str(memory), "-smp", str(cpus),
                "-nographic", "-no-reboot", "-nic", "none", "-monitor", "none",
                "-serial", "stdio", "-kernel", kernel, "-initrd", initrd, "-append", cmdline]
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        try:
            out = _read_until_exit(proc, tmp, timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        seconds = time.monotonic() - start
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = out.decode(errors="replace").replace("\r\n", "\n")
    head, sep, rest = text.partition(_BEGIN)
    body, end, _ = rest.partition(_END)
    if not sep or not end:
        last = (text.strip().splitlines() or ["no output"])[-1]
        raise GuestError(f"the guest stopped before the script finished: {last}")
    release, _, output = body.partition("\n")
    return GuestResult(release.strip(), output.strip("\n"), seconds)
