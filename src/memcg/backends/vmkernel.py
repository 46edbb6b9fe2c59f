"""VMKernel: the `Kernel` interface on a real kernel booted in a QEMU guest.

The guest is the one memcg/backends/vm.py boots (Debian's 6.1 cloud kernel, KVM or TCG),
with the host's Python and the real-cgroup backend in its initramfs
(memcg/backends/vmimage.py).  Its /init mounts the memory controller (cgroup v1
`memory`, or cgroup2 with `+memory` in the root's subtree_control) and starts the
guest agent (memcg/backends/vmagent.py): a LinuxKernel on the guest's cgroups, with
the same worker processes, driven over the guest's second serial port (ttyS1, a
Unix socket on the host).  Every Kernel, Task, Socket and Event call here is one
command to the agent; the agent's reply carries the guest kernel's errno.

One guest per VMKernel, booted on first use; close() powers it off (and kills QEMU
if it does not stop), and QEMU dies with this process whatever kills it
(PR_SET_PDEATHSIG).  Errors about the guest itself are vm.GuestError, one line.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import deque

from .. import parse
from ..kernel import Kernel, Socket, Task
from . import vm, vmimage
from .linux.events import LinuxEvent

__all__ = ["VMKernel", "VMTask", "VMSocket", "VMEvent"]

BOOT_TIMEOUT = 120.0      # a TCG boot with Python takes 10-20 s on a shared machine
CALL_TIMEOUT = 600.0      # one command; an OOM in an emulated guest can take minutes
CLOSE_TIMEOUT = 60.0
ROOTFS_SLACK_MIB = 256    # guest RAM added for the initramfs, which stays in guest memory
# Debian's kernels default to transparent_hugepage=always (CONFIG_TRANSPARENT_HUGEPAGE_ALWAYS),
# most hosts and the model fault anonymous memory in 4 KiB pages: the guest is booted with
# "madvise" (mm/huge_memory.c: setup_transparent_hugepage), as the workers never madvise.
GUEST_THP = "madvise"
_EXCEPTIONS = {"ValueError": ValueError, "TypeError": TypeError, "KeyError": KeyError,
               "NotImplementedError": NotImplementedError, "LookupError": LookupError}


# The guest's disk and swap (virtio-blk, in the order QEMU is given them) and where
# the disk is mounted: the guest LinuxKernel's working directory, so the workers'
# files are page cache of a real ext4 file system.
GUEST_DISK_MOUNT = "/disk"
DEFAULT_DISK = "2G"        # sparse on the host: only what the guest writes takes space


def _init_script(python: str, modules: list[str]) -> str:
    """/init: the memory controller, /dev/shm, the disk and swap asked for on the
    kernel command line (memcg.hierarchy=, memcg.disk=, memcg.swap=: dotted
    parameters, which init/main.c leaves to modules and does not pass to init), then
    the agent on ttyS1; power off after.  One image serves every configuration."""
    v1 = ("mount -t tmpfs cgroup /sys/fs/cgroup; mkdir /sys/fs/cgroup/memory; "
          "mount -t cgroup -o memory memory /sys/fs/cgroup/memory")
    v2 = ("mount -t cgroup2 none /sys/fs/cgroup; "
          "echo +memory > /sys/fs/cgroup/cgroup.subtree_control")
    mods = " ".join(modules)
    return "\n".join([
        "#!/bin/busybox sh", "/bin/busybox --install -s /bin",
        "mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev",
        "mount -t tmpfs tmp /tmp; mkdir -p /dev/shm; mount -t tmpfs shm /dev/shm",
        "H=v2; DISK=; SWAP=; FATAL=; WORK=/tmp",
        "for a in $(cat /proc/cmdline); do case \"$a\" in memcg.hierarchy=*) H=\"${a#*=}\";; "
        "memcg.disk=*) DISK=\"${a#*=}\";; memcg.swap=*) SWAP=\"${a#*=}\";; esac; done",
        f"if [ \"$H\" = v1 ]; then {v1}; else {v2}; fi",
        "ip link set lo up",        # loopback TCP between workers
        f"if [ -n \"$DISK$SWAP\" ]; then for m in {mods}; do "
        "err=$(insmod $m 2>&1) || FATAL=\"insmod $m: $err\"; done; fi",
        # virtio_blk's probe adds the disk (device_add_disk); devtmpfs makes its node
        "for d in $DISK $SWAP; do n=0; while [ ! -b /dev/$d ] && [ $n -lt 200 ]; do "
        "sleep 0.05; n=$((n+1)); done; [ -b /dev/$d ] || FATAL=\"no /dev/$d in the guest\"; done",
        f"if [ -n \"$DISK\" ] && [ -z \"$FATAL\" ]; then mkdir -p {GUEST_DISK_MOUNT}; "
        f"if err=$(mount -t ext4 -o noinit_itable /dev/$DISK {GUEST_DISK_MOUNT} 2>&1); "
        f"then WORK={GUEST_DISK_MOUNT}; else FATAL=\"cannot mount the guest's disk: $err\"; fi; fi",
        "if [ -n \"$SWAP\" ] && [ -z \"$FATAL\" ]; then "
        "err=$(swapon /dev/$SWAP 2>&1) || FATAL=\"swapon in the guest: $err\"; fi",
        "echo memcg-guest $(uname -r) $H",
        f"PYTHONPATH={vmimage.GUEST_ROOT} {python} -S -m {vmimage.AGENT_MODULE} /dev/ttyS1 $H $WORK \"$FATAL\"",
        "echo memcg-agent-exit $?", "poweroff -f", ""])


def guest_image() -> tuple[str, str]:
    """(initramfs path, interpreter) of the cached image, built if missing."""
    kernel, busybox = vm.find_images()
    _, python = vmimage.image_files()
    mods_root = vmimage.modules_dir(kernel)
    modules = vmimage.disk_modules(kernel)
    guest_mods = ["/lib/modules/" + os.path.relpath(m, os.path.dirname(mods_root)) for m in modules]
    init = _init_script(python, guest_mods)
    return vmimage.build(busybox, init, extra=list(zip(guest_mods, modules))), python


def _mib(size, what: str) -> int:
    """MiB from a size such as "1G" or a byte count (as the kernel's mem= option reads it)."""
    return max(1, parse.parse_memopt(size, what) >> 20)


class Guest:
    """A QEMU guest running the agent: the process, the channel and the console."""

    def __init__(self, hierarchy: str, memory_mib: int, cpus: int, timeout: float = BOOT_TIMEOUT,
                 disk_bytes: int = 0, swap_bytes: int = 0, accel: str = "auto"):
        qemu = vm._qemu()
        kernel, _ = vm.find_images()
        start = time.monotonic()
        initrd, _ = guest_image()
        self.image_seconds = time.monotonic() - start
        self.accel = vm.choose_accel(accel)
        # the disks: unnamed sparse files, open here until QEMU has its own descriptors
        fds = []
        try:
            if disk_bytes:
                fds.append(vm.make_ext4_image(disk_bytes))
            if swap_bytes:
                fds.append(vm.make_swap_image(swap_bytes))
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise
        drives, params, names = [], [f"memcg.hierarchy={hierarchy}"], iter("abcd")
        for fd, what in zip(fds, (["disk"] if disk_bytes else []) + (["swap"] if swap_bytes else [])):
            # cache=unsafe: the guest's flushes need not reach the host's disk, the image
            # dies with QEMU
            drives += ["-drive", f"file=/proc/self/fd/{fd},if=virtio,format=raw,cache=unsafe"]
            params.append(f"memcg.{what}=vd{next(names)}")
        self.disk_bytes, self.swap_bytes = disk_bytes, swap_bytes
        self.console: deque[str] = deque(maxlen=40)
        self.replies: queue.Queue = queue.Queue()
        self.events: dict[int, int] = {}       # event id -> the host eventfd that mirrors it
        self.dead = threading.Event()
        self.tmp = tempfile.mkdtemp(prefix="memcg-vm-")
        self.lock = threading.Lock()
        sock_path = os.path.join(self.tmp, "agent.sock")
        argv = [qemu, *vm.qemu_accel_args(self.accel), "-m", str(memory_mib), "-smp", str(cpus),
                "-nographic", "-no-reboot", "-nic", "none", "-monitor", "none",
                "-chardev", f"socket,id=agent,path={sock_path},server=on,wait=on",
                "-serial", "stdio", "-serial", "chardev:agent", *drives,
                "-kernel", kernel, "-initrd", initrd,
                "-append", f"console=ttyS0 quiet panic=-1 rdinit=/init "
                           f"transparent_hugepage={GUEST_THP} {' '.join(params)}"]
        start = time.monotonic()
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, preexec_fn=vm._die_with_parent,
                                         pass_fds=fds)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        finally:
            for fd in fds:          # QEMU holds the images now; they go when it exits
                os.close(fd)
        try:
            self.chan = self._connect(sock_path, start + 10)
            shutil.rmtree(self.tmp, ignore_errors=True)     # QEMU has what it needs
            threading.Thread(target=self._pump_console, daemon=True).start()
            threading.Thread(target=self._pump_channel, daemon=True).start()
            ready = self._reply(max(1.0, timeout - (time.monotonic() - start)), "boot")
        except BaseException:
            self.kill()
            raise
        if "fatal" in ready:
            self.kill()
            raise vm.GuestError(f"the guest cannot be used: {ready['fatal']}")
        self.release = ready["ready"]
        self.boot_seconds = time.monotonic() - start

    def _connect(self, path: str, deadline: float) -> socket.socket:
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(path)
                return s
            except OSError:
                s.close()
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise vm.GuestError(f"qemu did not start: {self._last_words()}") from None
                time.sleep(0.05)   # waiting for QEMU to create its socket: a file, not the model

    def _pump_console(self) -> None:
        for line in iter(self.proc.stdout.readline, b""):
            text = line.decode(errors="replace").strip()
            if text:
                self.console.append(text)

    def _pump_channel(self) -> None:
        buf = b""
        try:
            while True:
                data = self.chan.recv(65536)
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    line, _, buf = buf.partition(b"\n")
                    msg = json.loads(line)
                    if "event" in msg:
                        efd = self.events.get(msg["event"])
                        if efd is not None:
                            os.eventfd_write(efd, int(msg["n"]))
                    else:
                        self.replies.put(msg)
        except (OSError, ValueError):
            pass
        self.dead.set()
        self.replies.put(None)

    def _last_words(self) -> str:
        lines = [line for line in self.console if not line.startswith("memcg-")]
        return lines[-1] if lines else "no output"

    def _reply(self, timeout: float, what: str) -> dict:
        try:
            msg = self.replies.get(timeout=timeout)
        except queue.Empty:
            raise vm.GuestError(f"the guest did not answer {what} within {timeout:g} s") from None
        if msg is None:
            raise vm.GuestError(f"the guest stopped ({what}): {self._last_words()}")
        return msg

    def call(self, cmd: dict, timeout: float = CALL_TIMEOUT):
        """Send one command and wait for its reply; the reply's value, or the guest's error."""
        with self.lock:
            if self.dead.is_set():
                raise vm.GuestError(f"the guest has stopped: {self._last_words()}")
            try:
                self.chan.sendall(json.dumps(cmd, separators=(",", ":")).encode() + b"\n")
            except OSError:
                raise vm.GuestError(f"the guest has stopped: {self._last_words()}") from None
            msg = self._reply(timeout, cmd.get("op", "?"))
        if "err" in msg:
            err = msg["err"]
            if msg.get("file") is not None:
                raise OSError(err, msg.get("msg") or os.strerror(err), msg["file"])
            raise OSError(err, msg.get("msg") or os.strerror(err))
        if "exc" in msg:
            raise _EXCEPTIONS.get(msg["exc"], RuntimeError)(msg.get("msg", ""))
        return msg.get("ok")

    def shutdown(self) -> None:
        """Ask the agent to clean up and the guest to power off; kill QEMU if it does not."""
        if self.proc.poll() is None and not self.dead.is_set():
            try:
                self.call({"op": "close"}, timeout=CLOSE_TIMEOUT)
                self.proc.wait(10)
            except (vm.GuestError, OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (getattr(self, "chan", None), self.proc.stdout):
            if f is not None:
                f.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class VMKernel(Kernel):
    """The Kernel interface on a real Linux kernel in a QEMU guest (v1 or v2).

    hierarchy: "v1" (the memory controller on its own mount) or "v2" (cgroup2, +memory);
    memory: the guest's RAM for the workload ("1G"; the initramfs gets ROOTFS_SLACK_MIB
    on top); cpus: guest CPUs; swap: a swap area of this size on a virtio disk of its
    own, swapped on inside the guest only ("0": none); disk: the size of the guest's
    ext4 disk, mounted as the workers' working directory, so their files are page
    cache of a real file system ("0": no disk, files on tmpfs); accel: "auto" (KVM
    where a probe boot succeeds, else TCG), "kvm" or "tcg".
    Paths, file names and texts are those of the guest's hierarchy; on v2 the v1 names
    a scenario uses are mapped as LinuxKernel maps them (linux/v2names.py), and
    memory.stat is the guest kernel's own v2 text (LinuxKernel(v2_stat=True)): a v1
    scenario run on v2 reads it through scenario/v2map.py, as the model's.
    The guest boots on first use (boot()); close() powers it off.
    """

    backend = "vm"

    def __init__(self, hierarchy: str = "v2", memory="1G", cpus: int = 2, swap="0",
                 boot_timeout: float = BOOT_TIMEOUT, *, disk=DEFAULT_DISK, accel: str = "auto"):
        if hierarchy not in ("v1", "v2"):
            raise ValueError(f"hierarchy: expected 'v1' or 'v2', got {hierarchy!r}")
        if accel not in vm.ACCELS:
            raise ValueError(f"accel: expected one of {', '.join(vm.ACCELS)}, got {accel!r}")
        self.swap_bytes = parse.parse_memopt(swap, "swap")
        self.disk_bytes = parse.parse_memopt(disk, "disk")
        if self.swap_bytes and self.swap_bytes < 10 * vm.PAGE_SIZE:
            raise ValueError(f"swap: {swap!r} is too small for a swap area (10 pages at least)")
        if self.disk_bytes and self.disk_bytes < 64 << 20:
            raise ValueError(f"disk: {disk!r} is too small for the guest's ext4 disk (64M at least)")
        self.accel_wanted = accel
        self.hierarchy = hierarchy
        self.memory_mib = _mib(memory, "memory")
        self.cpus = int(cpus)
        self.boot_timeout = boot_timeout
        self._guest: Guest | None = None
        self._tasks: dict[int, VMTask] = {}
        self._events: list[VMEvent] = []
        self._closed = False
        self._release: str | None = None
        self._accel: str | None = None
        atexit.register(self.close)

    # --- the guest ------------------------------------------------------------------------

    def boot(self) -> Guest:
        """The running guest, booted now if it is not yet."""
        if self._closed:
            raise vm.GuestError("this VMKernel is closed")
        if self._guest is None:
            self._guest = Guest(self.hierarchy, self.memory_mib + ROOTFS_SLACK_MIB, self.cpus,
                                self.boot_timeout, disk_bytes=self.disk_bytes,
                                swap_bytes=self.swap_bytes, accel=self.accel_wanted)
            self._accel = self._guest.accel
            self._release = self._guest.release
        return self._guest

    @property
    def kernel_release(self) -> str:
        """The guest kernel's release (uname -r), booting the guest if needed; still
        known after close()."""
        if self._release is None:
            self._release = self.boot().release
        return self._release

    @property
    def working_fs(self) -> str:
        """The file system of the workers' working directory: the guest's ext4 disk,
        or tmpfs without one."""
        return "ext4" if self.disk_bytes else "tmpfs"

    @property
    def accel(self) -> str:
        """"kvm" or "tcg": how QEMU runs the guest (booting it if needed)."""
        if self._accel is None:
            self.boot()
        return self._accel

    @property
    def qemu_pid(self) -> int | None:
        """QEMU's process id while the guest runs."""
        return self._guest.proc.pid if self._guest is not None else None

    def _call(self, op: str, *args, **extra):
        return self.boot().call({"op": op, "args": list(args), **extra})

    # --- the cgroup filesystem ------------------------------------------------------------

    def mkdir(self, path: str) -> None:
        self._call("mkdir", path)

    def rmdir(self, path: str) -> None:
        self._call("rmdir", path)

    def listdir(self, path: str) -> list[str]:
        return self._call("listdir", path)

    def read(self, path: str) -> str:
        return self._call("read", path)

    def write(self, path: str, text: str) -> None:
        fields = text.split()
        if path.rstrip("/").endswith("/mempressure.shrinker") and len(fields) == 2 \
                and fields[0].lstrip("+").isdigit():
            # "<eventfd> <N>": the eventfd is this side's mirror of the guest's; the
            # guest's LinuxKernel knows its own descriptor (None: no event of ours)
            fd = int(fields[0])
            eid = next((ev._id for ev in self._events if not ev.closed and ev.fileno() == fd), None)
            self._call("shrinker_report", path, fields[1], id=eid)
            return
        self._call("write", path, text)
        for task in self._tasks.values():     # a cgroup.procs write moves a task
            task._group = None

    def run_python(self, code: str, *argv, timeout: float = 300.0) -> dict:
        """Run a Python program inside the guest: `python -S -c code ROOT WORKDIR *argv`,
        ROOT the guest's directory of this kernel's root group, WORKDIR a scratch directory
        of it (removed on close).  {"rc": status (None on timeout), "out": ..., "err": ...}."""
        return self.boot().call({"op": "python", "args": [code, list(argv), timeout]},
                                timeout=timeout + 60)

    # --- processes and events ----------------------------------------------------------------

    def spawn(self, path: str = "/", *, start_inside: bool = False) -> "VMTask":
        """A worker process in the guest, in the group at path (see LinuxKernel.spawn)."""
        return self._task(self._call("spawn", path, start_inside=start_inside))

    def _task(self, info: dict) -> "VMTask":
        task = self._tasks.get(info["pid"])
        if task is None:
            task = self._tasks[info["pid"]] = VMTask(self, info["pid"])
        task._update(info)
        return task

    def task(self, pid: int) -> "VMTask":
        """The task with this guest pid (exited ones included)."""
        return self._tasks[pid]

    def event(self, path: str, args: str = "") -> "VMEvent":
        """An eventfd registered in the guest; its counts are mirrored into a host eventfd."""
        guest = self.boot()
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            eid = self._call("event", path, args)
        except BaseException:
            os.close(efd)
            raise
        guest.events[eid] = efd
        ev = VMEvent(self, f"{path} {args}".rstrip(), efd, eid)
        self._events.append(ev)
        return ev

    def advance(self, ticks: int = 1) -> None:
        self._call("advance", int(ticks))

    def settle(self) -> None:
        self._call("settle")

    def machine(self) -> dict:
        """The guest as it was booted: the machine's memory (its root group's limit, which
        the command line sets), CPUs and swap."""
        return {"memory": self.memory_mib << 20, "cpus": self.cpus, "swap": self.swap_bytes}

    def debugfs(self) -> dict:
        out = self._call("debugfs")
        out["kernel_release"] = self.kernel_release
        out["accel"] = self.accel
        out["disk"] = "ext4" if self.disk_bytes else "none"
        out["swap_bytes"] = self.swap_bytes
        return out

    def scratch_dir(self, fs: str = "disk") -> str:
        """A directory in the guest that the guest's kernel object removes on close."""
        return self._call("scratch_dir", fs)

    def reset(self) -> None:
        """Remove every group, task, event and file made in the guest, keeping the guest:
        one boot serves many cases (the guest's LinuxKernel is made anew)."""
        if self._guest is not None:
            for ev in list(self._events):
                ev.close()
            self._call("reset")
        self._tasks.clear()

    def close(self) -> None:
        """Remove everything in the guest, power it off, and leave no QEMU behind."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        guest, self._guest = self._guest, None
        if guest is not None:
            guest.shutdown()
        for ev in self._events:
            ev.close()


class VMTask(Task):
    """A worker process in the guest (a LinuxTask there), known here by its guest pid."""

    def __init__(self, kernel: VMKernel, pid: int):
        self._k = kernel
        self.pid = pid
        self._group: str | None = None
        self._info: dict = {}

    def __repr__(self) -> str:
        return f"<VMTask {self.pid}>"

    def _update(self, info: dict) -> None:
        self._info = info
        self._group = info.get("group")

    def _do(self, call: str, *args):
        info = self._k._call("task", *args, pid=self.pid, call=call)
        if isinstance(info, dict):
            self._update(info)
        return info

    @property
    def state(self) -> str:
        return self._do("info")["state"]

    @property
    def group(self) -> str:
        if self._group is None:
            self._do("info")
        return self._group

    @property
    def cpu(self) -> int | None:
        return self._info.get("cpu")

    @property
    def exit_signal(self) -> int | None:
        return self._do("info")["exit_signal"]

    @property
    def exit_code(self) -> int | None:
        return self._do("info")["exit_code"]

    @property
    def late_errors(self) -> list[str]:
        return self._do("info")["late_errors"]

    @property
    def oom_score_adj(self) -> int:
        """The guest task's /proc/PID/oom_score_adj."""
        return self._do("info")["oom_score_adj"]

    @oom_score_adj.setter
    def oom_score_adj(self, value: int) -> None:
        self._do("set_oom_score_adj", int(value))

    def touch_anon(self, nbytes: int, locked: bool = False) -> None:
        self._do("touch_anon", int(nbytes), bool(locked))

    def free_anon(self, nbytes: int, oldest_first: bool = False) -> None:
        self._do("free_anon", int(nbytes), bool(oldest_first))

    def write_anon(self, nbytes: int) -> None:
        self._do("write_anon", int(nbytes))

    def touch_shm(self, name: str, nbytes: int) -> None:
        self._do("touch_shm", name, int(nbytes))

    def read_file(self, name: str, nbytes: int) -> None:
        self._do("read_file", name, int(nbytes))

    def write_file(self, name: str, nbytes: int) -> None:
        self._do("write_file", name, int(nbytes))

    def unlink(self, name: str) -> None:
        self._do("unlink", name)

    def fork(self) -> "VMTask":
        return self._k._task(self._do("fork"))

    def mkdirs(self, n: int, fs: str = "ext4", where: str | None = None) -> None:
        self._do("mkdirs", int(n), self._fs(fs), where)

    def create_files(self, n: int, fs: str = "ext4", where: str | None = None) -> None:
        self._do("create_files", int(n), self._fs(fs), where)

    def _fs(self, fs: str) -> str:
        # Without a disk the guest's working directory is on tmpfs: "ext4" means it.
        if fs not in ("tmpfs", "disk") and not self._k.disk_bytes:
            return "disk"
        return fs

    def move(self, path: str) -> None:
        self._do("move", path)

    def connect_tcp(self, peer: Task) -> "VMSocket":
        if not isinstance(peer, VMTask) or peer._k is not self._k:
            raise ValueError("connect_tcp: the peer must be a task of the same VMKernel")
        sid = self._k._call("task", peer.pid, pid=self.pid, call="connect_tcp")
        return VMSocket(self, peer, sid)

    def exit(self) -> None:
        self._do("exit")


class VMSocket(Socket):
    """A loopback TCP connection between two workers in the guest."""

    def __init__(self, task: VMTask, peer: VMTask, sid: int):
        self.task, self.peer, self._id = task, peer, sid
        self.sender_group, self.receiver_group = task.group, peer.group
        self.closed = False

    def _do(self, call: str, *args):
        return self.task._k._call("socket", *args, id=self._id, call=call)

    def send(self, nbytes: int) -> int:
        return self._do("send", int(nbytes))

    def recv(self, nbytes: int) -> int:
        return self._do("recv", int(nbytes))

    def info(self) -> dict:
        return self._do("info")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._do("close")


class VMEvent(LinuxEvent):
    """An eventfd in the guest, mirrored into a host eventfd: fileno() is pollable here,
    watch() runs a host thread, count() first asks the guest for what it has seen."""

    def __init__(self, kernel: VMKernel, label: str, efd: int, eid: int):
        super().__init__(kernel, label, efd)
        self._id = eid

    def count(self) -> int:
        if not self.closed and self._k._guest is not None and not self._k._guest.dead.is_set():
            self._k._call("ping")     # every count the guest read comes before the reply
        return super().count()

    def close(self) -> None:
        if self.closed:
            return
        guest = self._k._guest
        if guest is not None and not guest.dead.is_set():
            try:
                self._k._call("event_close", id=self._id)
            except (OSError, vm.GuestError):
                pass
            guest.events.pop(self._id, None)
        if self in self._k._events:
            self._k._events.remove(self)
        super().close()

