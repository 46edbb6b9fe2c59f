#!/usr/bin/env python3
"""Follow tcp-bloat's limited connection tick by tick on real cgroups (or the model).

Needs root and a writable memory controller for "linux" (the package's LinuxKernel
makes its groups below the caller's own memory cgroup and removes them).  The
timeline is the scenario's: a 1M group and a -1 neighbour, each with a sender
offering 1M a tick to a reader taking 64K a tick; at tick 25 the limited reader reads
8M forty times (the drain).  After every step the limited connection's figures
(SO_SNDBUF, SIOCOUTQ, SIOCINQ, SO_RCVBUF, tcpi_rcv_wnd, rcv_ssthresh, cwnd, sk_drops,
tcpi_total_retrans) and the group's memory.kmem.tcp.usage_in_bytes are printed as
one JSON object a line.  docs/tcp.md says what Linux 6.18.44 showed.

    python3 tools/measure_tcp_drain.py linux      # real cgroups, 20 ms ticks
    python3 tools/measure_tcp_drain.py sim        # the model
    python3 tools/measure_tcp_drain.py linux --no-neighbour --no-read-before-drain
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src"))
import memcg  # noqa: E402

MiB, KiB = 1 << 20, 1 << 10
FIELDS = ("outq", "inq", "sndbuf", "rcvbuf", "window", "rcv_ssthresh", "cwnd", "drops",
          "retransmits")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kernel", choices=("linux", "sim"))
    p.add_argument("--ticks", type=int, default=40)
    p.add_argument("--drain-at", type=int, default=25)
    p.add_argument("--no-neighbour", action="store_true", help="no -1 group beside it")
    p.add_argument("--no-read-before-drain", action="store_true",
                   help="the drain tick's 64K read is left out")
    args = p.parse_args()
    k = memcg.LinuxKernel() if args.kernel == "linux" else memcg.SimKernel(memory="2G", cpus=2)
    try:
        k.mkdir("/limited")
        k.write("/limited/memory.kmem.tcp.limit_in_bytes", "1M")
        lim = k.spawn("/limited").connect_tcp(k.spawn("/limited"))
        free = None
        if not args.no_neighbour:
            k.mkdir("/free")
            k.write("/free/memory.kmem.tcp.limit_in_bytes", "-1")
            free = k.spawn("/free").connect_tcp(k.spawn("/free"))

        def show(tick: int, step: str, n: int) -> None:
            info = lim.info()
            row = {"tick": tick, "step": step, "bytes": n,
                   "tcp_usage": int(k.read("/limited/memory.kmem.tcp.usage_in_bytes")),
                   **{f: info.get(f) for f in FIELDS}}
            print(json.dumps(row), flush=True)

        for tick in range(args.ticks):
            show(tick, "send", lim.send(MiB))
            if free is not None:
                free.send(MiB)
            drain = tick == args.drain_at
            if tick >= 1 and not (drain and args.no_read_before_drain):
                show(tick, "recv", lim.recv(64 * KiB))
                if free is not None:
                    free.recv(64 * KiB)
            if drain:
                show(tick, "drain", sum(lim.recv(8 * MiB) for _ in range(40)))
            k.advance(1)
        show(args.ticks, "end", 0)
    finally:
        k.close()


if __name__ == "__main__":
    main()
