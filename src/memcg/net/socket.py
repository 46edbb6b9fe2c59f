"""The system-call face of a socket (net/socket.c: sock_sendmsg, sock_recvmsg): the
Socket of the Kernel interface that the simulated kernel's tasks hand out (connect_tcp).

A loopback TCP connection of the simulated kernel: send() by the connecting task, recv()
by the peer, both through the TCP engine (net/tcp.py); each call returns to user space
as a system call does.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from .. import kernel, sched
from . import tcp
from .sock import tcp_under_memory_pressure

if TYPE_CHECKING:
    from .sock import Net
    from .tcp import TcpSock


class SimSocket(kernel.Socket):
    """A loopback TCP connection of the simulated kernel: send() from the connecting
    task, recv() by the peer."""

    def __init__(self, net: Net, client: TcpSock):
        self.net = net
        self.client = client  # the connecting end
        self.server = client.peer  # the accepted end

    @property
    def closed(self) -> bool:
        return self.client.closed

    def send(self, nbytes: int) -> int:
        """Non-blocking send: the bytes accepted now (0 when it would block)."""
        if self.closed:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        if nbytes <= 0:
            return 0
        n = tcp.tcp_sendmsg(self.client, int(nbytes))
        sched.exit_to_user_mode(self.net.sys.clock)
        return n

    def recv(self, nbytes: int) -> int:
        """The peer reads up to nbytes; returns how many it got (0 when none is queued)."""
        if self.closed or nbytes <= 0:
            return 0
        n = tcp.tcp_recvmsg(self.server, int(nbytes))
        sched.exit_to_user_mode(self.net.sys.clock)
        return n

    def close(self) -> None:
        tcp.tcp_close_pair(self.client)

    def info(self) -> dict:
        """The connection's figures, as TCP_INFO, SIOCOUTQ/SIOCINQ and SO_SNDBUF/SO_RCVBUF
        show them (plus whether either end is under memory pressure)."""
        c, s = self.client, self.server
        return {
            "sent": c.sent_bytes,  # bytes send() accepted
            "read": s.read_bytes,  # bytes recv() returned
            "outq": c.write_seq - c.snd_una,  # SIOCOUTQ of the sender
            "inq": s.rcv_nxt - s.copied_seq,  # SIOCINQ of the receiver
            "sndbuf": c.sk_sndbuf,
            "rcvbuf": s.sk_rcvbuf,
            "window": s.rcv_wnd,  # the receiver's last advertised window (tcpi_rcv_wnd)
            "rcv_ssthresh": s.rcv_ssthresh,
            "cwnd": c.snd_cwnd,
            "drops": s.drops,
            "retransmits": c.retransmits,
            "pressure": bool(not self.closed and (tcp_under_memory_pressure(c)
                                                  or tcp_under_memory_pressure(s))),
            "sender_memcg": c.sk_memcg.path if c.sk_memcg is not None else None,
            "receiver_memcg": s.sk_memcg.path if s.sk_memcg is not None else None,
        }
