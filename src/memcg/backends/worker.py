"""The worker: one real process that `LinuxKernel` drives over a socket.

Run as ``python -m memcg.backends.worker FD [PARENT_PID]`` or as a script (``LinuxKernel`` runs
the file directly, so the worker does not import the package and its NumPy-based
model: a smaller process starts faster and costs less memory).  FD is one end of a
Unix stream socket pair; PARENT_PID, when given, is the controller: the worker dies
with it (PR_SET_PDEATHSIG) so no worker outlives a controller that was killed.

Protocol: one JSON object per line each way.  Every command gets exactly one reply,
``{"ok": ...}`` or ``{"err": errno, "msg": text}``; a forked child first says
``{"ready": pid}`` on its own channel, which comes along with the fork command
(SCM_RIGHTS).  Commands run in order; a command the kernel blocks (a fault waiting in
mem_cgroup_oom_synchronize) simply has no reply yet.

What each command does is what the `Task` interface asks, with real system calls:
anonymous memory is mmap(MAP_PRIVATE|MAP_ANONYMOUS) written one byte per page from
user space, so every page is a user fault charged by the kernel's fault path
(Python's mmap.mmap(-1, n) would be MAP_SHARED, i.e. shmem); shared memory is a
MAP_SHARED mapping of a tmpfs file; files are read with read() and written with
pwrite(); fork is fork(); directories are mkdir(); TCP is a loopback connection.
Only the standard library is used, and every buffer is allocated at start-up, so
the commands charge their group for what they do and little else.
"""

from __future__ import annotations

import array
import ctypes
import errno
import fcntl
import json
import os
import signal
import socket
import struct
import sys

PAGE = 4096
PROT_RW = 0x1 | 0x2                    # PROT_READ | PROT_WRITE
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS = 0x01, 0x02, 0x20
MADV_COLD = 20                         # include/uapi/asm-generic/mman-common.h
MADV_DONTFORK = 10                     # the same file: the mapping is not copied at fork
PROT_EXEC = 0x4
PR_SET_PDEATHSIG = 1                   # include/uapi/linux/prctl.h
IO_CHUNK = 256 * 1024
TIOCOUTQ, FIONREAD = 0x5411, 0x541B    # SIOCOUTQ / SIOCINQ (include/uapi/asm-generic/ioctls.h)
SO_MEMINFO, SK_MEMINFO_VARS, SK_MEMINFO_DROPS = 55, 9, 8   # include/uapi/linux/sock_diag.h
# byte offsets in struct tcp_info (include/uapi/linux/tcp.h); tcpi_rcv_wnd since 6.2
TCP_INFO_FIELDS = {"rcv_ssthresh": 64, "cwnd": 80, "retransmits": 100, "window": 232}

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                       ctypes.c_ulong]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
MAP_FAILED = ctypes.c_void_p(-1).value

# A forked child runs no Python: it is made by this x86-64 code, called as
# long fork_light(void *data, int chan, void *slot), which takes only raw system calls.
# The parent returns fork()'s result.  The child keeps to registers (its stack is not
# copied) and to its slot of the shared data page for the commands it reads:
#   dup2(chan, 0); close_range(3, ~0U, 0); write(0, data + 16, 12)   - {"ready":0}
#   loop: n = read(0, slot, 24), again on EINTR
#   if n == 24 and slot[0] == 'w': write a byte to every page of [slot[8..16], + slot[16..24])
#     from user space (its inherited anonymous memory: copy-on-write faults), then
#     madvise(data, PAGE, MADV_COLD) for the lru_add_drain() and write(0, data + 32, 12)
#     - {"ok":true} - and read again
#   if n == 1 and slot[0] == 'e': execve(argv[0], argv, envp) with argv at data + 64 and
#     envp at data + 128 (the worker, on fd 0), exit_group(127) if that fails
#   else exit_group(0): the channel closed, or any other command
# Assembled from this listing (GNU as, .intel_syntax noprefix):
#   mov r8, rdi; mov r9, rsi; mov r10, rdx; mov eax, 57; syscall; test rax, rax; jz 1f; ret
#   1: mov rdi, r9; xor esi, esi; mov eax, 33; syscall
#      mov edi, 3; mov esi, -1; xor edx, edx; mov eax, 436; syscall
#      xor edi, edi; lea rsi, [r8+16]; mov edx, 12; mov eax, 1; syscall
#   2: xor edi, edi; mov rsi, r10; mov edx, 24; xor eax, eax; syscall
#      cmp rax, -4; je 2b; xor edi, edi; cmp rax, 24; jne 5f
#      cmp byte ptr [r10], 0x77; jne 3f
#      mov rsi, [r10+8]; mov rdx, [r10+16]; test rdx, rdx; jz 7f
#   6: mov byte ptr [rsi], 2; add rsi, 4096; sub rdx, 4096; ja 6b
#   7: mov rdi, r8; mov esi, 4096; mov edx, 20; mov eax, 28; syscall
#      xor edi, edi; lea rsi, [r8+32]; mov edx, 12; mov eax, 1; syscall; jmp 2b
#   5: cmp rax, 1; jne 3f; cmp byte ptr [r10], 0x65; jne 3f
#      mov rdi, [r8+64]; lea rsi, [r8+64]; lea rdx, [r8+128]; mov eax, 59; syscall
#      mov edi, 127
#   3: mov eax, 231; syscall; jmp 3b
FORK_CODE = bytes.fromhex(
    "4989f84989f14989d2b8390000000f054885c07401c34c89cf31f6b8210000000f05bf03000000beff"
    "ffffff31d2b8b40100000f0531ff498d7010ba0c000000b8010000000f0531ff4c89d6ba1800000031"
    "c00f054883f8fc74ec31ff4883f818754e41803a77756f498b7208498b52104885d27413c606024881"
    "c6001000004881ea0010000077ed4c89c7be00100000ba14000000b81c0000000f0531ff498d7020ba"
    "0c000000b8010000000f05eb964883f801752141803a65751b498b7840498d7040498d908000000"
    "0b83b0000000f05bf7f000000b8e70000000f05ebf7")
FORK_READY = b'{"ready":0}\n'
FORK_OK = b'{"ok":true}\n'             # a child's reply to "w", at data + 32
# The children's command slots in the data page: each child reads its commands into a
# slot of its own (the n-th fork of a worker gets slot n % FORK_SLOTS).
FORK_SLOT_BASE, FORK_SLOT_SIZE = 1024, 32
FORK_SLOTS = (PAGE - FORK_SLOT_BASE) // FORK_SLOT_SIZE
# The child's return from fork() must not touch the parent's memory: glibc registers the
# thread's rseq area (in its TLS, which the child does not get), and the kernel would
# update it on the way out (kernel/rseq.c: rseq_handle_notify_resume, SIGSEGV on a
# fault).  Workers run without rseq registration (LinuxKernel starts them so).
RSEQ_OFF = "glibc.pthread.rseq=0"


class Worker:
    """The worker's state: its mappings, sockets and the channel to the controller."""

    def __init__(self, chan: socket.socket):
        self.chan = chan
        self.inbuf = b""
        self.fds: list[int] = []          # descriptors received with commands, in order
        self.anon: list[list[int]] = []   # [address, length] of anonymous mappings, oldest first
        self.shm: dict[str, tuple[int, int]] = {}   # path -> (address, length)
        self.socks: dict[int, socket.socket] = {}
        self.next_sock = 1
        self.dirs = 0
        # Buffers used by read_file / write_file / send / recv, allocated now (before the
        # controller moves this process into its group) so commands allocate nothing.
        self.iobuf = bytearray(IO_CHUNK)
        self.iomv = memoryview(self.iobuf)
        self.wbuf = memoryview(bytes(range(256)) * (IO_CHUNK // 256))
        self.drainmap = _mmap(PAGE, MAP_PRIVATE | MAP_ANONYMOUS, -1)   # never touched
        base = _fork_region()
        self.fork_light = _fork_code(base)
        self.fork_data = _fork_data(base + PAGE)
        self.forks = 0

    # --- the channel ----------------------------------------------------------------

    def reply(self, obj: dict) -> None:
        self.chan.sendall(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    def next_command(self) -> dict | None:
        while b"\n" not in self.inbuf:
            try:
                data, fds, _flags, _addr = socket.recv_fds(self.chan, 65536, 8)
            except InterruptedError:
                continue
            if not data:
                return None
            self.fds.extend(fds)
            self.inbuf += data
        line, _, self.inbuf = self.inbuf.partition(b"\n")
        return json.loads(line)

    def serve(self) -> None:
        while True:
            cmd = self.next_command()
            if cmd is None:
                os._exit(0)   # the controller is gone
            op = cmd.get("op")
            try:
                handler = getattr(self, "op_" + str(op))
            except AttributeError:
                self.reply({"err": errno.EINVAL, "msg": f"unknown command {op!r}"})
                continue
            try:
                result = handler(cmd)
            except OSError as e:
                self.reply({"err": e.errno or errno.EIO, "msg": e.strerror or str(e)})
                continue
            except Exception as e:  # noqa: BLE001 - reported to the controller, not lost
                self.reply({"err": errno.EIO, "msg": f"{type(e).__name__}: {e}"})
                continue
            if op == "exit":
                self.reply({"ok": True})
                os._exit(0)
            self.reply({"ok": True, **(result or {})})

    # --- memory -----------------------------------------------------------------------

    def drain(self) -> None:
        """lru_add_drain() on this CPU: madvise(MADV_COLD) starts with it (mm/madvise.c),
        so pages still in this CPU's LRU batches reach the lists the stat files count."""
        libc.madvise(self.drainmap, PAGE, MADV_COLD)

    def op_ping(self, cmd):
        return {"pid": os.getpid()}

    def op_drain(self, cmd):
        self.drain()

    def op_touch_anon(self, cmd):
        n = _pages(int(cmd["n"])) * PAGE
        if n == 0:
            return None
        addr = _mmap(n, MAP_PRIVATE | MAP_ANONYMOUS, -1)
        self.anon.append([addr, n])
        _touch(addr, n)
        if cmd.get("locked"):
            # The pages are already faulted in from user space; mlock() now only moves
            # them to the unevictable list (mm/mlock.c).
            if libc.mlock(addr, n) != 0:
                _raise_errno("mlock")
        self.drain()

    def op_free_anon(self, cmd):
        """Unmap n bytes: the newest mappings first, or the oldest with "oldest"."""
        left = _pages(int(cmd["n"])) * PAGE
        oldest = bool(cmd.get("oldest"))
        while left > 0 and self.anon:
            i = 0 if oldest else -1
            addr, length = self.anon[i]
            cut = min(left, length)
            start = addr if oldest else addr + length - cut
            if libc.munmap(start, cut) != 0:
                _raise_errno("munmap")
            left -= cut
            if cut == length:
                self.anon.pop(i)
            elif oldest:
                self.anon[0] = [addr + cut, length - cut]
            else:
                self.anon[-1][1] = length - cut
        self.drain()

    def op_write_anon(self, cmd):
        """Write a byte to every page of the first n bytes of the anonymous mappings,
        oldest first: a page shared copy-on-write with a child (or parent) gets a copy
        of its own (mm/memory.c: do_wp_page -> wp_page_copy), any other is written in
        place."""
        for addr, length in _ranges(self.anon, _pages(int(cmd["n"])) * PAGE):
            _touch(addr, length)
        self.drain()

    def op_touch_shm(self, cmd):
        path, n = cmd["path"], _pages(int(cmd["n"])) * PAGE
        old = self.shm.get(path)
        if n == 0 or (old is not None and old[1] >= n):
            if old is not None and n:
                _touch(old[0], n)
            return None
        fd = os.open(path, os.O_RDWR)
        try:
            if os.fstat(fd).st_size < n:
                os.ftruncate(fd, n)
            addr = _mmap(n, MAP_SHARED, fd)
        finally:
            os.close(fd)
        self.shm[path] = (addr, n)
        _touch(addr, n)
        if old is not None:
            libc.munmap(old[0], old[1])
        self.drain()

    # --- files ------------------------------------------------------------------------

    def op_read_file(self, cmd):
        n = int(cmd["n"])
        fd = os.open(cmd["path"], os.O_RDONLY)
        got = 0
        try:
            while got < n:
                k = os.readv(fd, [self.iomv[:min(IO_CHUNK, n - got)]])
                if k <= 0:
                    break
                got += k
        finally:
            os.close(fd)
        self.drain()
        return {"bytes": got}

    def op_write_file(self, cmd):
        n = int(cmd["n"])
        fd = os.open(cmd["path"], os.O_WRONLY | os.O_CREAT, 0o644)
        done = 0
        try:
            while done < n:
                done += os.pwrite(fd, self.wbuf[:min(IO_CHUNK, n - done)], done)
        finally:
            os.close(fd)
        self.drain()
        return {"bytes": done}

    def op_unlink(self, cmd):
        os.unlink(cmd["path"])

    def op_mkdirs(self, cmd):
        """n new directories under base: each a dentry and an inode (kmem)."""
        base, n = cmd["base"], int(cmd["n"])
        for _ in range(n):
            os.mkdir(f"{base}/d{self.dirs}")
            self.dirs += 1
        return {"made": n}

    def op_mkfiles(self, cmd):
        """n new empty files under base (calibration: kmem per inode)."""
        base, n = cmd["base"], int(cmd["n"])
        for _ in range(n):
            os.close(os.open(f"{base}/f{self.dirs}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            self.dirs += 1
        return {"made": n}

    # --- processes --------------------------------------------------------------------

    def op_fork(self, cmd):
        """fork() of a child that runs no Python (FORK_CODE): it waits on its channel
        until told to exit, or to exec a worker of its own ("e").  Every mapping of the
        interpreter is marked MADV_DONTFORK first, so the child's mm holds only the
        task's own mappings (anonymous ones shared copy-on-write, shared ones shared) and
        the fork code: its cost is the kernel's fork of a small process, and the
        parent's heap stays its own (no copy-on-write pages for either).  The reply
        lists the anonymous mappings the child shares, oldest first (what it writes
        when told "w")."""
        if not self.fds:
            raise OSError(errno.EBADF, "fork needs a channel descriptor")
        fd = self.fds.pop(0)
        try:
            self.dontfork()
            slot = self.fork_data + FORK_SLOT_BASE + FORK_SLOT_SIZE * (self.forks % FORK_SLOTS)
            pid = self.fork_light(self.fork_data, fd, slot)
        finally:
            os.close(fd)
        if pid < 0:
            raise OSError(-pid, os.strerror(-pid))
        self.forks += 1
        return {"pid": pid, "anon": [list(m) for m in self.anon]}

    def dontfork(self) -> None:
        """madvise(MADV_DONTFORK) on every mapping but the task's own and the fork code's
        (mm/madvise.c: VM_DONTCOPY, so dup_mmap() skips them); mappings the kernel
        refuses it for (VM_IO, [vsyscall]) are left as they are."""
        keep = sorted([(self.fork_light.addr, PAGE), (self.fork_data, PAGE)]
                      + [(a, n) for a, n in self.anon] + list(self.shm.values()))
        with open("/proc/self/maps", "rb") as f:
            maps = f.read().splitlines()
        for line in maps:
            start, _, end = line.split(b" ", 1)[0].partition(b"-")
            lo, hi = int(start, 16), int(end, 16)
            for a, n in keep:
                if a + n <= lo or a >= hi:
                    continue
                if a > lo:
                    libc.madvise(lo, a - lo, MADV_DONTFORK)
                lo = max(lo, a + n)
            if lo < hi:
                libc.madvise(lo, hi - lo, MADV_DONTFORK)

    def op_exit(self, cmd):
        return None

    # --- TCP --------------------------------------------------------------------------

    def _add_sock(self, s: socket.socket) -> int:
        sid = self.next_sock
        self.next_sock += 1
        self.socks[sid] = s
        return sid

    def op_listen(self, cmd):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        return {"sock": self._add_sock(s), "port": s.getsockname()[1]}

    def op_connect(self, cmd):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect(("127.0.0.1", int(cmd["port"])))
        s.setblocking(False)
        return {"sock": self._add_sock(s)}

    def op_accept(self, cmd):
        lsock = self.socks[int(cmd["sock"])]
        conn, _ = lsock.accept()
        conn.setblocking(False)
        return {"sock": self._add_sock(conn)}

    def op_send(self, cmd):
        """One non-blocking send() of n bytes, in buffer-sized pieces: a piece that is
        not taken whole is where the single call would have stopped."""
        s, n = self.socks[int(cmd["sock"])], int(cmd["n"])
        sent = 0
        while sent < n:
            want = min(IO_CHUNK, n - sent)
            try:
                k = s.send(self.wbuf[:want])
            except BlockingIOError:
                break
            sent += max(k, 0)
            if k < want:
                break
        return {"bytes": sent}

    def op_recv(self, cmd):
        """One non-blocking recv() of up to n bytes: what the receive queue holds now
        (tcp_recvmsg() returns once the queue is empty), read in buffer-sized pieces."""
        s, n = self.socks[int(cmd["sock"])], int(cmd["n"])
        got = 0
        while got < n:
            want = min(IO_CHUNK, n - got)
            try:
                k = s.recv_into(self.iomv[:want])
            except BlockingIOError:
                break
            got += max(k, 0)
            if k < want:
                break
        return {"bytes": got}

    def op_sockinfo(self, cmd):
        """What the kernel shows of one socket: SO_SNDBUF/SO_RCVBUF, SIOCOUTQ/SIOCINQ,
        SO_MEMINFO's drop count and a few TCP_INFO fields (include/uapi/linux/tcp.h)."""
        s = self.socks[int(cmd["sock"])]
        out = {"sndbuf": s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
               "rcvbuf": s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)}
        for key, req in (("outq", TIOCOUTQ), ("inq", FIONREAD)):
            buf = array.array("i", [0])
            fcntl.ioctl(s.fileno(), req, buf)
            out[key] = buf[0]
        meminfo = s.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * SK_MEMINFO_VARS)
        out["drops"] = struct.unpack_from("I", meminfo, 4 * SK_MEMINFO_DROPS)[0]
        info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 512)
        for key, off in TCP_INFO_FIELDS.items():
            out[key] = struct.unpack_from("I", info, off)[0] if len(info) >= off + 4 else None
        return out

    def op_close_sock(self, cmd):
        s = self.socks.pop(int(cmd["sock"]), None)
        if s is not None:
            s.close()


MAP_FIXED = 0x10
PMD_SIZE = 2 << 20                     # one page-table page maps 2 MiB (x86-64)


def _fork_region() -> int:
    """The start of a 2 MiB-aligned region for the fork code's two pages: a child's page
    tables are then one PTE page (and one PMD and PUD page), wherever the interpreter's
    mappings were placed (measured: 12 KiB of VmPTE in every child; unaligned, 16 KiB
    in about half the runs)."""
    span = _mmap(2 * PMD_SIZE, MAP_PRIVATE | MAP_ANONYMOUS, -1)
    base = (span + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    if base > span:
        libc.munmap(span, base - span)
    libc.munmap(base + 2 * PAGE, span + 2 * PMD_SIZE - base - 2 * PAGE)
    return base


def _fork_code(at: int):
    """FORK_CODE in a page of its own at `at`, made executable: the function to call."""
    addr = _mmap(PAGE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, at)
    ctypes.memmove(addr, FORK_CODE, len(FORK_CODE))
    if libc.mprotect(addr, PAGE, 0x1 | PROT_EXEC) != 0:
        _raise_errno("mprotect")
    fn = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)(addr)
    fn.addr = addr
    return fn


def _fork_data(at: int) -> int:
    """The fork code's data: a shared page (children read their commands into their
    slots of it without a copy-on-write fault), the ready and ok messages, the argv
    and envp of the worker a child execs on fd 0, and the slots."""
    addr = _mmap(PAGE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, at)
    page = (ctypes.c_char * PAGE).from_address(addr)
    page[16:16 + len(FORK_READY)] = FORK_READY
    page[32:32 + len(FORK_OK)] = FORK_OK
    strings = [os.fsencode(sys.executable), b"-I", b"-S", os.fsencode(os.path.abspath(__file__)), b"0"]
    off = 256
    ptrs = []
    for arg in strings:
        page[off:off + len(arg) + 1] = arg + b"\0"
        ptrs.append(addr + off)
        off += len(arg) + 1
    env = os.fsencode(f"GLIBC_TUNABLES={RSEQ_OFF}") + b"\0"
    page[off:off + len(env)] = env
    envp = [addr + off, None]
    off += len(env)
    if off > FORK_SLOT_BASE:
        raise OSError(errno.ENAMETOOLONG, "the worker's path does not fit the fork page")
    ctypes.memmove(addr + 64, (ctypes.c_void_p * (len(ptrs) + 1))(*ptrs), 8 * (len(ptrs) + 1))
    ctypes.memmove(addr + 128, (ctypes.c_void_p * 2)(*envp), 16)
    return addr


def _ranges(maps, n: int):
    """[address, length] pieces of the first n bytes of maps ([address, length], oldest
    first): the pages write_anon() writes."""
    for addr, length in maps:
        if n <= 0:
            return
        cut = min(n, length)
        yield addr, cut
        n -= cut


def _pages(n: int) -> int:
    return -(-max(0, n) // PAGE)


def _raise_errno(what: str):
    e = ctypes.get_errno()
    raise OSError(e, f"{what}: {os.strerror(e)}")


def _mmap(n: int, flags: int, fd: int, at: int | None = None) -> int:
    addr = libc.mmap(at, n, PROT_RW, flags, fd, 0)
    if addr in (None, MAP_FAILED):
        _raise_errno("mmap")
    return addr


_CHUNK = 1 << 20
_CHUNK_T = ctypes.c_char * _CHUNK
_ONES = bytes([1]) * (_CHUNK // PAGE)


def _touch(addr: int, n: int) -> None:
    """Write one byte to every page from user space: each first write is a user page
    fault, charged to the memcg of this process (mm/memory.c: do_anonymous_page,
    or shmem_fault for a shared mapping)."""
    off = 0
    while off + _CHUNK <= n:
        memoryview(_CHUNK_T.from_address(addr + off)).cast("B")[::PAGE] = _ONES
        off += _CHUNK
    for off in range(off, n, PAGE):
        ctypes.memset(addr + off, 1, 1)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m memcg.backends.worker FD [PARENT_PID]", file=sys.stderr)
        return 2
    chan = socket.socket(fileno=int(argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is for the controller
    if len(argv) > 2:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != int(argv[2]):
            return 0   # the controller died before the death signal was armed
    w = Worker(chan)
    w.reply({"ready": os.getpid()})
    w.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
