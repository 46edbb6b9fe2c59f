#!/usr/bin/env python3
"""Measure TCP socket memory accounting (memory.kmem.tcp.*) on the live cgroup v1
memory controller, with loopback connections only.

Needs root and a mounted cgroup v1 memory hierarchy; uses the standard library only.
Every group is a child of a container group memcg-tcp-<pid> made below the caller's own
memory cgroup (read from /proc/self/cgroup); only the worker processes this script
forks are ever moved; every group is removed at the end, also on failure, and the
script checks that nothing is left.

Method (the figures are in docs/tcp.md; the JSON is tests/data/kernel_tcp.json):
- Each case runs in a forked worker moved into the case's group.  A connection's
  sending end is made in one group and its receiving end accepted in another (often
  the same): the worker moves itself between the session's groups, since a socket
  belongs to the group of the task that creates (or accepts) it.
- "fill": the sending end is non-blocking; the worker sends 64 KiB chunks until
  send() fails with EAGAIN, waits 50 ms and tries again, until 12 rounds in a row
  (600 ms, past the 200 ms zero-window probe) accept nothing; at most 200 rounds and
  256 MiB.  "first_burst" is what was accepted before the first EAGAIN, "accepted"
  the settled total.  The receiving end does not read.
- Then the group's memory.kmem.tcp.* files, SIOCOUTQ/SIOCINQ, SO_SNDBUF/SO_RCVBUF,
  TCP_INFO, and the deltas of the TcpExt counters of /proc/net/netstat (machine-wide:
  run it on an idle machine).
- Cases: no limit written; -1; 1M (with EBUSY writes, a neighbour group filling
  meanwhile, a drain and a refill); 1M on the sending end only, on the receiving end
  only; a receiving end that first reads as fast as data comes (its buffer grows by
  autotuning) then stops, in a 1M and a 256K group; sockets made before the limit is
  written; a reader taking 64 KiB every 50 ms, in a 1M and an unlimited group.
- Every loop is bounded; each worker has a 60 s alarm.

    python3 tools/measure_tcp.py            # JSON on stdout
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import struct
import sys
import termios
import time

# The package's own sources, so that the tool runs from a checkout (as root too).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src"))
from memcg.backends.linux import LinuxUnavailable, v1_memory_cgroup  # noqa: E402

CHUNK = 64 << 10
ROUND_WAIT = 0.05
IDLE_ROUNDS = 12  # 600 ms without progress: past the 200 ms zero-window probe
MAX_ROUNDS = 200
MAX_BYTES = 256 << 20
SIOCINQ = termios.FIONREAD
SIOCOUTQ = termios.TIOCOUTQ
TCP_FILES = ("usage_in_bytes", "max_usage_in_bytes", "failcnt", "limit_in_bytes")
NETSTAT_KEYS = ("PruneCalled", "RcvPruned", "OfoPruned", "TCPRcvQDrop", "TCPMemoryPressures",
                "TCPMemoryPressuresChrono", "TCPZeroWindowDrop", "TCPBacklogDrop",
                "TCPRcvCollapsed", "TCPWantZeroWindowAdv", "TCPToZeroWindowAdv")


def read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read().split()[0])


def write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def tcp_counters(group: str) -> dict:
    return {name: read_int(os.path.join(group, "memory.kmem.tcp." + name)) for name in TCP_FILES}


def netstat() -> dict:
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    out = {}
    for head, vals in zip(lines[::2], lines[1::2]):
        if head.startswith("TcpExt:"):
            out.update(zip(head.split()[1:], (int(v) for v in vals.split()[1:])))
    return {k: out.get(k, 0) for k in NETSTAT_KEYS}


def sockstat_tcp_mem() -> int:
    """Global tcp_memory_allocated in pages (the "mem" field of /proc/net/sockstat)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                parts = line.split()
                return int(parts[parts.index("mem") + 1])
    return -1


def queued(sock: socket.socket, req: int) -> int:
    buf = fcntl.ioctl(sock.fileno(), req, struct.pack("i", 0))
    return struct.unpack("i", buf)[0]


def tcp_info(sock: socket.socket) -> dict:
    """A few fields of struct tcp_info (include/uapi/linux/tcp.h)."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 240)
    u32 = lambda off: struct.unpack_from("I", raw, off)[0]  # noqa: E731
    base = 8
    out = {"snd_mss": u32(base + 8), "rcv_mss": u32(base + 12), "rcv_ssthresh": u32(base + 56),
           "snd_cwnd": u32(base + 72), "advmss": u32(base + 76), "rcv_space": u32(base + 88),
           "snd_wscale": raw[6] & 0xF, "rcv_wscale": raw[6] >> 4}
    if len(raw) >= 236:
        out["snd_wnd"] = u32(228)
        out["rcv_wnd"] = u32(232)
    return out


def sock_figures(snd: socket.socket, rcv: socket.socket) -> dict:
    return {
        "sender_outq": queued(snd, SIOCOUTQ),
        "receiver_inq": queued(rcv, SIOCINQ),
        "sender_sndbuf": snd.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        "receiver_rcvbuf": rcv.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        "sender_info": tcp_info(snd),
        "receiver_info": tcp_info(rcv),
    }


def fill(snd: socket.socket, rcv: socket.socket | None = None) -> dict:
    """Send until nothing more is accepted; bounded in rounds and bytes.

    "first_burst" is what was accepted before the first EAGAIN (and "first_burst_inq"
    what the peer held then); "accepted" is the total once the connection has settled
    (timers included); "steps" lists each round that accepted something, with the
    socket's send buffer after it.
    """
    data = b"x" * CHUNK
    total = rounds = idle = 0
    first_burst = None
    steps = []
    while idle < IDLE_ROUNDS and rounds < MAX_ROUNDS and total < MAX_BYTES:
        rounds += 1
        got = 0
        while total + got < MAX_BYTES:
            try:
                n = snd.send(data)
            except BlockingIOError:
                break
            got += n
            if n < len(data):
                break
        total += got
        if first_burst is None:
            first_burst = total
            first_inq = queued(rcv, SIOCINQ) if rcv is not None else None
        if got:
            steps.append({"round": rounds, "accepted": total,
                          "sndbuf": snd.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)})
        idle = idle + 1 if got == 0 else 0
        time.sleep(ROUND_WAIT)
    return {"accepted": total, "first_burst": first_burst, "first_burst_inq": first_inq,
            "rounds": rounds, "steps": steps}


def drain(rcv: socket.socket, limit: int) -> int:
    """Read until limit bytes came or nothing came for 25 rounds of 20 ms (long enough
    for a retransmission timeout)."""
    got = idle = 0
    for _ in range(100000):
        try:
            b = rcv.recv(1 << 20)
        except BlockingIOError:
            idle += 1
            if idle >= 25:
                break
            time.sleep(0.02)
            continue
        if not b:
            break
        idle = 0
        got += len(b)
        if got >= limit:
            break
    return got


# --- cases (each runs in a worker process; the worker may move itself between the
# groups of the session, so each end of a connection is created in the group the
# case names) -------------------------------------------------------------------------

def move_self(group: str) -> None:
    write(os.path.join(group, "cgroup.procs"), str(os.getpid()))


def pair_in(snd_group: str, rcv_group: str) -> tuple[socket.socket, socket.socket]:
    """A connection whose sending end is created in snd_group and whose receiving end
    is accepted in rcv_group (an accepted socket belongs to the accepting task's group)."""
    move_self(rcv_group)
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    move_self(snd_group)
    snd = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    snd.connect(lst.getsockname())
    move_self(rcv_group)
    rcv, _ = lst.accept()
    lst.close()
    move_self(snd_group)
    snd.setblocking(False)
    rcv.setblocking(False)
    return snd, rcv


def settled_fill(snd: socket.socket, group: str | None, rcv: socket.socket | None = None) -> dict:
    """fill(), with the group's TCP counters after it."""
    out = fill(snd, rcv)
    if group is not None:
        out["tcp"] = tcp_counters(group)
    return out


def case_fill(group: str, rcv_group: str | None = None, drain_after: bool = False) -> dict:
    """A sender to a peer that never reads; optionally the peer then reads everything."""
    snd, rcv = pair_in(group, rcv_group or group)
    mem0 = read_int(os.path.join(group, "memory.usage_in_bytes"))
    ns0 = netstat()
    out = settled_fill(snd, group, rcv)
    out["memory_usage_delta"] = read_int(os.path.join(group, "memory.usage_in_bytes")) - mem0
    if rcv_group:
        out["tcp_peer_group"] = tcp_counters(rcv_group)
    out["global_tcp_mem_pages"] = sockstat_tcp_mem()
    out.update(sock_figures(snd, rcv))
    ns1 = netstat()
    out["netstat"] = {k: ns1[k] - ns0[k] for k in NETSTAT_KEYS}
    if drain_after:
        out["drained"] = drain(rcv, out["accepted"])
        time.sleep(0.2)
        out["tcp_after_drain"] = tcp_counters(group)
        out["after_drain"] = sock_figures(snd, rcv)
        out["refill"] = settled_fill(snd, group)
    snd.close()
    rcv.close()
    return out


def case_limited(group: str, free_group: str) -> dict:
    """1M group: fill, the EBUSY write, a neighbour filling meanwhile, then drain + refill."""
    snd, rcv = pair_in(group, group)
    out = settled_fill(snd, group, rcv)
    out.update(sock_figures(snd, rcv))
    limit_file = os.path.join(group, "memory.kmem.tcp.limit_in_bytes")
    for text in ("512K", str(out["tcp"]["usage_in_bytes"] - 4096)):
        try:
            write(limit_file, text)
            out[f"write_{text}"] = "ok"
        except OSError as e:
            out[f"write_{text}"] = errno.errorcode.get(e.errno, str(e.errno))
    out["limit_after_writes"] = read_int(limit_file)
    # The neighbour: another group's connection while this one is under pressure.
    nsnd, nrcv = pair_in(free_group, free_group)
    out["neighbour"] = settled_fill(nsnd, free_group)
    nsnd.close()
    nrcv.close()
    move_self(group)
    ns0 = netstat()
    out["drained"] = drain(rcv, out["accepted"])
    ns1 = netstat()
    out["netstat_drain"] = {k: ns1[k] - ns0[k] for k in NETSTAT_KEYS}
    time.sleep(0.2)
    out["tcp_after_drain"] = tcp_counters(group)
    out["after_drain"] = sock_figures(snd, rcv)
    out["refill"] = settled_fill(snd, group)
    snd.close()
    rcv.close()
    return out


def case_created_before(group: str) -> dict:
    """Sockets made before the first tcp limit write stay unaccounted."""
    snd, rcv = pair_in(group, group)
    write(os.path.join(group, "memory.kmem.tcp.limit_in_bytes"), "1M")
    out = {"old": settled_fill(snd, group)}
    snd2, rcv2 = pair_in(group, group)
    out["new"] = settled_fill(snd2, group)
    for s in (snd, rcv, snd2, rcv2):
        s.close()
    return out


def case_receiver_grown(snd_group: str, rcv_group: str) -> dict:
    """The receiving end is in rcv_group.  It first reads as fast as data comes (its
    receive buffer grows by autotuning), then stops reading while the sender goes on."""
    snd, rcv = pair_in(snd_group, rcv_group)
    data = b"x" * CHUNK
    ns0 = netstat()
    moved = 0
    for _ in range(200):  # lockstep: 64 KiB out, everything in
        try:
            moved += snd.send(data)
        except BlockingIOError:
            pass
        while True:
            try:
                if not rcv.recv(1 << 20):
                    break
            except BlockingIOError:
                break
    grown = {"moved": moved, "rcvbuf": rcv.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
             "tcp": tcp_counters(rcv_group)}
    ns1 = netstat()
    out = {"grown": grown, "netstat_grow": {k: ns1[k] - ns0[k] for k in NETSTAT_KEYS}}
    out.update(settled_fill(snd, rcv_group))
    out.update(sock_figures(snd, rcv))
    ns2 = netstat()
    out["netstat"] = {k: ns2[k] - ns1[k] for k in NETSTAT_KEYS}
    snd.close()
    rcv.close()
    return out


def case_slow_reader(group: str, rounds: int = 40, read: int = 64 << 10) -> dict:
    """Each round the sender sends until EAGAIN and the peer reads `read` bytes."""
    snd, rcv = pair_in(group, group)
    data = b"x" * CHUNK
    ns0 = netstat()
    series = []
    total = got = 0
    for _ in range(rounds):
        for _ in range(1000):
            try:
                n = snd.send(data)
            except BlockingIOError:
                break
            total += n
        try:
            got += len(rcv.recv(read))
        except BlockingIOError:
            pass
        info = tcp_info(rcv)
        series.append({"accepted": total, "read": got,
                       "tcp_usage": read_int(os.path.join(group, "memory.kmem.tcp.usage_in_bytes")),
                       "outq": queued(snd, SIOCOUTQ), "inq": queued(rcv, SIOCINQ),
                       "sndbuf": snd.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                       "rcvbuf": rcv.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
                       "rcv_wnd": info.get("rcv_wnd"), "rcv_ssthresh": info["rcv_ssthresh"]})
        time.sleep(ROUND_WAIT)
    ns1 = netstat()
    snd.close()
    rcv.close()
    return {"series": series, "tcp": tcp_counters(group),
            "netstat": {k: ns1[k] - ns0[k] for k in NETSTAT_KEYS}}


class Session:
    """The container group and everything made below it; removed on close."""

    def __init__(self):
        try:
            self.base = v1_memory_cgroup()
        except LinuxUnavailable as e:
            raise SystemExit(f"measure_tcp: {e.strerror}") from None
        self.container = os.path.join(self.base, f"memcg-tcp-{os.getpid()}")
        os.mkdir(self.container)
        self.groups: list[str] = []
        self.pids: list[int] = []

    def group(self, name: str) -> str:
        g = os.path.join(self.container, name)
        os.mkdir(g)
        self.groups.append(g)
        return g

    def spawn(self, group: str, fn, *args, before_move=None) -> dict:
        """Run fn(*args) in a forked worker moved into group; returns its JSON result.

        before_move(child_ready): optional; runs in the worker before it is moved.
        """
        r, w = os.pipe()
        go_r, go_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(r)
            os.close(go_w)
            signal.alarm(60)
            try:
                os.read(go_r, 1)  # moved
                res = fn(*args)
                payload = json.dumps(res).encode()
            except BaseException as e:  # report any failure to the parent
                payload = json.dumps({"error": repr(e)}).encode()
            os.write(w, payload)
            os.close(w)
            os._exit(0)
        self.pids.append(pid)
        os.close(w)
        os.close(go_r)
        try:
            write(os.path.join(group, "cgroup.procs"), str(pid))
            os.write(go_w, b"g")
            chunks = []
            while True:
                b = os.read(r, 1 << 16)
                if not b:
                    break
                chunks.append(b)
        finally:
            os.close(go_w)
            os.close(r)
            os.waitpid(pid, 0)
            self.pids.remove(pid)
        return json.loads(b"".join(chunks) or b'{"error": "no result"}')

    def close(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        time.sleep(0.5)  # sockets of exited workers go away
        for g in reversed(self.groups):
            for _ in range(20):
                try:
                    os.rmdir(g)
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        raise
                    time.sleep(0.1)
        os.rmdir(self.container)
        left = [d for d in os.listdir(self.base) if d.startswith("memcg-tcp-")]
        if left:
            raise SystemExit(f"measure_tcp: groups left behind: {left}")


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("measure_tcp: needs root")
    out: dict = {"kernel": os.uname().release, "page_size": os.sysconf("SC_PAGE_SIZE"),
                 "cpus": os.cpu_count(), "measured": time.strftime("%Y-%m-%d")}
    for name in ("tcp_mem", "tcp_wmem", "tcp_rmem", "tcp_congestion_control"):
        with open(f"/proc/sys/net/ipv4/{name}") as f:
            text = f.read().split()
            out[name] = [int(x) for x in text] if name != "tcp_congestion_control" else text[0]
    with open("/proc/meminfo") as f:
        out["mem_total_kb"] = int(f.readline().split()[1])
    s = Session()
    try:
        g = s.group("plain")
        out["no_limit_written"] = s.spawn(g, case_fill, g)
        g = s.group("minus1")
        write(os.path.join(g, "memory.kmem.tcp.limit_in_bytes"), "-1")
        out["limit_minus1"] = s.spawn(g, case_fill, g, None, True)
        g, free = s.group("lim1m"), s.group("free")
        write(os.path.join(g, "memory.kmem.tcp.limit_in_bytes"), "1M")
        write(os.path.join(free, "memory.kmem.tcp.limit_in_bytes"), "-1")
        out["limit_1m"] = s.spawn(g, case_limited, g, free)
        g, peer = s.group("lim1m_snd"), s.group("peer")
        write(os.path.join(g, "memory.kmem.tcp.limit_in_bytes"), "1M")
        out["limit_1m_sender_only"] = s.spawn(g, case_fill, g, peer)
        g, rg = s.group("peer2"), s.group("lim1m_rcv")
        write(os.path.join(rg, "memory.kmem.tcp.limit_in_bytes"), "1M")
        out["limit_1m_receiver_only"] = s.spawn(g, case_fill, g, rg)
        for lim in ("1M", "256K"):
            g, rg = s.group(f"peer_{lim}"), s.group(f"grown_{lim}")
            write(os.path.join(rg, "memory.kmem.tcp.limit_in_bytes"), lim)
            out[f"limit_{lim.lower()}_receiver_grown"] = s.spawn(g, case_receiver_grown, g, rg)
        g = s.group("before")
        out["created_before_limit"] = s.spawn(g, case_created_before, g)
        for name, lim in (("slow_1m", "1M"), ("slow_free", "-1")):
            g = s.group(name)
            write(os.path.join(g, "memory.kmem.tcp.limit_in_bytes"), lim)
            out[f"slow_reader_{name[5:]}"] = s.spawn(g, case_slow_reader, g)
    finally:
        s.close()
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
