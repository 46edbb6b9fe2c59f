"""TCP over loopback: connections, segments, windows, buffer autotuning and timers.

Follows Linux 6.18's net/ipv4/tcp.c (tcp_init, tcp_sendmsg_locked, tcp_recvmsg,
tcp_cleanup_rbuf), tcp_input.c (tcp_data_queue, tcp_try_rmem_schedule, tcp_prune_queue,
tcp_clamp_window, tcp_grow_window, tcp_measure_rcv_mss, tcp_rcv_space_adjust,
tcp_rcvbuf_grow, tcp_sndbuf_expand, tcp_new_space, tcp_ack) and tcp_output.c
(tcp_write_xmit, __tcp_select_window, tcp_select_window, tcp_write_wakeup,
tcp_fragment, tcp_schedule_loss_probe, tcp_send_loss_probe) and tcp_timer.c (the delayed
ACK, retransmission - and tail loss probe - and zero-window probe timers, armed on the
machine's clock: sched.py).  Memory accounting is in sock.py; the
Socket of the Kernel interface is the system-call face in socket.py.

What the model keeps and what it leaves out (docs/tcp.md):
- One loopback interface (MTU 64 KiB): a transmitted segment reaches the peer at once,
  in the same call, as the loopback device's softirq runs inline.  A socket busy in a
  system call (send or recv) queues arriving segments on its backlog, processed when
  the call returns (release_sock).
- Each skb carries at most one segment (size_goal = mss_now on loopback, as the half
  window bounds it); its truesize is the payload plus one skb head.  The receiver
  merges a segment into the tail of its queue (tcp_try_coalesce) once the sender has
  freed its copy of the tail.
- Out-of-order segments (after a drop) are dropped, not queued; losses are repaired by
  the retransmission timer.  No SACK blocks, no fast retransmit, no collapse of queues;
  a D-SACK reports old data received again (what a tail loss probe needs).
- Time is in ticks (one second).  A delayed ACK goes at the next tick; a
  retransmission, loss probe or zero-window probe timer armed in one tick fires at the
  next (40 ms, 200 ms and 2 * srtt + 2 ms on a real machine); the timers of a tick run
  in the order of their timeouts, and TCP's clock (tcp_clock_us) reads the tick before
  plus the timeout while one runs, which gives the RTT samples of the estimator
  (tcp_rtt_estimator).  The RTO has no backoff.  Receive autotuning measures once per
  tick: reads in the same tick count as one round trip.
- Congestion control: slow start (cwnd grows by the segments each ACK covers);
  tcp_congestion_control only selects the send buffer factor of tcp_sndbuf_expand()
  (2, or 3 for bbr).
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

from .. import sched
from .sock import (PAGE_SHIFT, SKB_DATA_ALIGN_SHINFO, SKB_DATA_ALIGN_SK_BUFF, SOCK_MIN_RCVBUF,
                   SOCK_RCVBUF_LOCK, SOCK_SNDBUF_LOCK, Proto, __sk_mem_reclaim, mem_cgroup_sk_alloc,
                   mem_cgroup_sk_free, sk_forced_mem_schedule, sk_mem_charge, sk_mem_reclaim,
                   sk_mem_uncharge, sk_memory_allocated, sk_prot_mem_limits, sk_rmem_schedule,
                   sk_wmem_schedule, tcp_under_memory_pressure)

if TYPE_CHECKING:
    from .sock import Net
    from ..system import System

# include/net/tcp.h
TCP_INIT_CWND = 10
TCP_MSS_DEFAULT = 536
TCP_MIN_MSS = 88
TCP_MAX_QUICKACKS = 16
TCP_MAX_WSCALE = 14
TCP_RMEM_TO_WIN_SCALE = 8
TCP_DEFAULT_SCALING_RATIO = 1 << (TCP_RMEM_TO_WIN_SCALE - 1)  # 50% len/truesize
TCPOLEN_TSTAMP_ALIGNED = 12
# include/net/tcp.h: MAX_TCP_HEADER = L1_CACHE_ALIGN(128 + MAX_HEADER).  MAX_HEADER is
# LL_MAX_HEADER (include/linux/netdevice.h: 32 without WLAN, AX25, Hyper-V or IP
# tunnels, as on the reference machine's kernel config), so 192 bytes.
L1_CACHE_BYTES = 64
MAX_HEADER = 32
MAX_TCP_HEADER = -(-(128 + MAX_HEADER) // L1_CACHE_BYTES) * L1_CACHE_BYTES
# net/core/skbuff.c: tcp_stream_alloc_skb() heads come from skb_small_head_cache (6.3+):
# SKB_SMALL_HEAD_SIZE = SKB_HEAD_ALIGN(MAX_TCP_HEADER), one cache line more when that is
# a power of two (to keep it apart from kmalloc-512); the usable end offset is what is
# left after struct skb_shared_info.
SKB_SMALL_HEAD_SIZE = MAX_TCP_HEADER + SKB_DATA_ALIGN_SHINFO
SKB_SMALL_HEAD_CACHE_SIZE = SKB_SMALL_HEAD_SIZE + (
    L1_CACHE_BYTES if SKB_SMALL_HEAD_SIZE & (SKB_SMALL_HEAD_SIZE - 1) == 0 else 0)
SKB_HEAD_END_OFFSET = SKB_SMALL_HEAD_CACHE_SIZE - SKB_DATA_ALIGN_SHINFO
# include/linux/skbuff.h: SKB_TRUESIZE(X) = X + SKB_DATA_ALIGN(sizeof(struct sk_buff))
#                                             + SKB_DATA_ALIGN(sizeof(struct skb_shared_info))
SKB_HEAD_TRUESIZE = SKB_HEAD_END_OFFSET + SKB_DATA_ALIGN_SK_BUFF + SKB_DATA_ALIGN_SHINFO
# drivers/net/loopback.c: LOOPBACK_MTU (64 * 1024); include/net/ip.h: IPV4_MAX_PMTU
LOOPBACK_MTU = 64 * 1024
IPV4_MAX_PMTU = 65535
# IPv4 + TCP headers (sizeof(struct iphdr) + sizeof(struct tcphdr))
TCP_IP_HEADERS = 40
# include/linux/netdevice.h: GSO_LEGACY_MAX_SIZE, the loopback device's gso_max_size
GSO_LEGACY_MAX_SIZE = 65536
# include/linux/skbuff.h: MAX_SKB_FRAGS (CONFIG_MAX_SKB_FRAGS default)
MAX_SKB_FRAGS = 17
# net/core/sock.c: SKB_FRAG_PAGE_ORDER = get_order(32768): sendmsg copies into 32 KiB
# page fragments
SK_PAGE_FRAG_SIZE = 32768
# net/core/sock.c: SK_RMEM_MAX, the net.core.rmem_max default (SKB_TRUESIZE(256) * 256)
SYSCTL_RMEM_MAX = 212992
# net/ipv4/tcp_ipv4.c: sysctl_tcp_app_win default
SYSCTL_TCP_APP_WIN = 31
# tcp_sndbuf_expand(): ca_ops->sndbuf_expand() or 2 (net/ipv4/tcp_bbr.c: bbr_sndbuf_expand 3)
SNDBUF_EXPAND = {"cubic": 2, "reno": 2, "bbr": 3}
# The congestion control of the machine the figures of docs/tcp.md were measured on
# (net.ipv4.tcp_congestion_control = bbr).  The kernel's built-in default is cubic
# (CONFIG_DEFAULT_TCP_CONG); set Net.tcp_congestion_control to compare with one.
REFERENCE_CONGESTION_CONTROL = "bbr"

# include/net/tcp.h: timer constants, in jiffies (sched.HZ) unless named _US
TCP_RTO_MAX = 120 * sched.HZ
TCP_RTO_MIN = sched.HZ // 5
TCP_TIMEOUT_MIN_US = 2 * 1000  # 2 ms
TCP_TIMEOUT_INIT = 1 * sched.HZ
TCP_ATO_MIN = sched.HZ // 25  # = TCP_DELACK_MIN: the delayed ACK timeout (40 ms)
TCP_TS_HZ = 1000  # TCP timestamps count milliseconds
USEC_PER_SEC = 1_000_000
USEC_PER_JIFFY = USEC_PER_SEC // sched.HZ
# include/net/inet_connection_sock.h: what icsk_retransmit_timer is armed for
ICSK_TIME_RETRANS = 1
ICSK_TIME_LOSS_PROBE = 5
# include/net/tcp.h: enum tcp_ca_state (those the model enters)
TCP_CA_Open = 0
TCP_CA_Loss = 4

# inet_connection_sock icsk_ack.pending bits (include/net/inet_connection_sock.h)
ICSK_ACK_SCHED = 1
ICSK_ACK_TIMER = 2
ICSK_ACK_PUSHED = 4
ICSK_ACK_NOW = 16
ICSK_ACK_NOMEM = 32


def roundup_pow_of_two(n: int) -> int:
    return 1 << (n - 1).bit_length()


def usecs_to_jiffies(us: int) -> int:
    """include/linux/jiffies.h: usecs_to_jiffies(), rounding up."""
    return -(-us // USEC_PER_JIFFY)


def jiffies_to_usecs(j: int) -> int:
    return j * USEC_PER_JIFFY


# --- boot-time sysctls (net/ipv4/tcp.c) --------------------------------------------------

def nr_free_buffer_pages(sys: System) -> int:
    """nr_free_buffer_pages(): pages of the low zones above their high watermark."""
    return max(0, sys.mem.nr_pages - sys.wmark_high)


def tcp_init(net: Net) -> None:
    """tcp_init() + tcp_init_mem(): tcp_mem from the machine's memory, per-socket limits
    no larger than 1/128 of the pressure threshold (at boot: inet_init())."""
    pages = nr_free_buffer_pages(net.sys)
    limit = max(pages // 16, 128)
    tcp_mem = [limit // 4 * 3, limit, limit // 4 * 3 * 2]  # 4.68%, 6.25%, 9.37%
    net.tcp_prot = Proto(net.sys.cpus, tcp_mem)
    limit_bytes = pages << (PAGE_SHIFT - 7)
    max_wshare = min(4 * 1024 * 1024, limit_bytes)
    max_rshare = min(32 * 1024 * 1024, limit_bytes)
    net.tcp_wmem = [4096, 16 * 1024, max(64 * 1024, max_wshare)]  # PAGE_SIZE, 16K, ...
    net.tcp_rmem = [4096, 131072, max(131072, max_rshare)]
    net.tcp_congestion_control = REFERENCE_CONGESTION_CONTROL
    net.tcp_moderate_rcvbuf = 1
    net.rmem_max = SYSCTL_RMEM_MAX


# --- skbs and sockets ---------------------------------------------------------------------

class Skb:
    """struct sk_buff of one TCP segment: sequence range, truesize, and pcount."""

    __slots__ = ("seq", "end_seq", "truesize", "pcount", "nr_frags", "ack_clocked", "mstamp",
                 "tsval", "retrans")

    def __init__(self, seq: int, truesize: int):
        self.seq = seq
        self.end_seq = seq
        self.truesize = truesize
        self.pcount = 1
        self.nr_frags = 0  # page fragments holding the payload
        self.ack_clocked = False  # sent as an ACK's window let it go (a model figure)
        self.mstamp = 0  # skb_mstamp_ns: when it was last sent (tcp_clock_us())
        self.tsval = 0  # the timestamp option it was last sent with (ms)
        self.retrans = False  # TCPCB_RETRANS: sent more than once

    @property
    def len(self) -> int:
        return self.end_seq - self.seq

    def clone(self) -> Skb:
        """skb_clone() as tcp_transmit_skb() sends it: the peer's copy has the same truesize."""
        c = Skb(self.seq, self.truesize)
        c.end_seq = self.end_seq
        c.nr_frags = self.nr_frags
        c.ack_clocked = self.ack_clocked
        c.mstamp = self.mstamp
        c.tsval = self.tsval
        c.retrans = self.retrans
        return c


class TcpSock:
    """struct tcp_sock (with its struct sock and inet_connection_sock) of one end."""

    def __init__(self, net: Net, task):
        self.net = net
        self.task = task
        self.peer: TcpSock | None = None
        self.closed = False
        # get_next_ino(): the socket's number orders its timers among those of other
        # sockets that expire in the same tick (the order the sockets were made in)
        net.last_ino += 1
        self.ino = net.last_ino
        # inet_csk_init_xmit_timers(): the delayed ACK, retransmission (and loss probe)
        # and zero-window probe timers; their order within a tick is set as they are
        # armed (tcp_reset_xmit_timer)
        self.delack_timer = sched.Timer(sched.TCP_TIMER, None, tcp_timer_expire,
                                        self, sched.TCP_DELACK)
        self.retransmit_timer = sched.Timer(sched.TCP_TIMER, None, tcp_timer_expire,
                                            self, sched.TCP_RETRANSMIT)
        self.probe_timer = sched.Timer(sched.TCP_TIMER, None, tcp_timer_expire,
                                       self, sched.TCP_PROBE)
        self.icsk_pending = 0  # what the retransmission timer is armed for (ICSK_TIME_*)
        self.icsk_rto = TCP_TIMEOUT_INIT
        self.icsk_ca_state = TCP_CA_Open
        self.high_seq = 0  # snd_nxt when loss recovery began
        # the RTT estimator (tcp_rtt_estimator): all in microseconds, srtt << 3
        self.srtt_us = self.mdev_us = self.mdev_max_us = self.rttvar_us = 0
        self.rtt_seq = 0
        # tail loss probe: snd_nxt when one was sent (0: none out), and whether it was
        # a retransmission
        self.tlp_high_seq = 0
        self.tlp_retrans = False
        self.ts_recent = 0  # the peer's timestamp this end echoes (rx_opt.ts_recent)
        self.dsack = None  # (seq, end_seq) of old data the next ACK reports (D-SACK)
        # struct sock
        self.sk_memcg = None
        self.sk_sndbuf = net.tcp_wmem[1]
        self.sk_rcvbuf = net.tcp_rmem[1]
        self.sk_wmem_queued = 0
        self.sk_rmem_alloc = 0
        self.sk_forward_alloc = 0
        self.sk_userlocks = 0
        self.nospace = False  # SOCK_NOSPACE
        self.owned = False  # sock_owned_by_user(): in a system call
        self.backlog: deque = deque()
        # send side
        self.write_seq = self.snd_una = self.snd_nxt = self.pushed_seq = 0
        self.snd_sml = 0
        self.snd_wnd = 0
        self.max_window = 0
        self.mss_clamp = min(LOOPBACK_MTU, IPV4_MAX_PMTU) - TCP_IP_HEADERS
        self.mss_cache = self.mss_clamp - TCPOLEN_TSTAMP_ALIGNED
        self.snd_cwnd = TCP_INIT_CWND
        self.rtx_queue: deque = deque()  # sent, not yet acknowledged
        self.write_queue: deque = deque()  # not yet sent
        self.packets_out = 0
        self.pfrag_left = 0
        self.sent_bytes = 0  # bytes send() accepted (a model figure)
        self.retransmits = 0
        # receive side
        self.advmss = self.mss_clamp - TCPOLEN_TSTAMP_ALIGNED
        self.rcv_nxt = self.copied_seq = self.rcv_wup = 0
        self.rcv_wnd = 0
        self.rcv_ssthresh = 0
        self.window_clamp = 0
        self.scaling_ratio = TCP_DEFAULT_SCALING_RATIO
        self.rcv_wscale = 0
        self.snd_wscale = 0
        self.rcv_mss = TCP_MSS_DEFAULT
        self.quick = 0
        self.ato = 0
        self.lrcvtime = 0
        self.ack_pending = 0
        self.receive_queue: deque = deque()
        self.rcvq_space = 0
        self.rcvq_seq = 0
        self.rcvq_time = None  # tick of the last autotuning measurement
        self.rcvq_round_trip = False  # ACK-clocked data arrived since that measurement
        self.in_ack = False  # tcp_ack() is sending what the peer's window lets go
        self.rcv_rtt_valid = False
        self.read_bytes = 0
        self.drops = 0  # segments this end dropped for want of memory or window

    @property
    def cpu(self) -> int:
        return self.task.cpu

    # --- send-side figures ---------------------------------------------------------------

    def tcp_wnd_end(self) -> int:
        return self.snd_una + self.snd_wnd

    def tcp_receive_window(self) -> int:
        """tcp_receive_window(): what is left of the window last advertised."""
        return max(0, self.rcv_wup + self.rcv_wnd - self.rcv_nxt)

    def tcp_win_from_space(self, space: int) -> int:
        """tcp_win_from_space(): bytes of window for space bytes of memory (scaling_ratio)."""
        return (max(0, space) * self.scaling_ratio) >> TCP_RMEM_TO_WIN_SCALE

    def tcp_space_from_win(self, win: int) -> int:
        return (win << TCP_RMEM_TO_WIN_SCALE) // self.scaling_ratio

    def tcp_space(self) -> int:
        """tcp_space(): window the free part of the receive buffer is worth."""
        return self.tcp_win_from_space(self.sk_rcvbuf - self.sk_rmem_alloc)

    def tcp_full_space(self) -> int:
        return self.tcp_win_from_space(self.sk_rcvbuf)


# --- connection set-up --------------------------------------------------------------------

def tcp_select_initial_window(net: Net, tp: TcpSock, space: int, mss: int) -> None:
    """tcp_select_initial_window(): the SYN's window (at most 64K-1, a multiple of the
    MSS) and the window scale that lets tcp_rmem[2] be advertised later."""
    space = max(0, space)
    if space > mss:
        space = (space // mss) * mss
    tp.rcv_wnd = min(space, 65535)
    big = max(net.rmem_max, net.tcp_rmem[2])
    tp.rcv_wscale = max(0, min(int(math.log2(big)) - 15, TCP_MAX_WSCALE))
    tp.window_clamp = 65535 << TCP_MAX_WSCALE
    tp.rcv_ssthresh = tp.rcv_wnd


def tcp_sync_mss(tp: TcpSock) -> None:
    """tcp_sync_mss(): the path MSS less options, bounded to half the largest window."""
    mss = tp.mss_clamp - TCPOLEN_TSTAMP_ALIGNED
    tp.mss_cache = tcp_bound_to_half_wnd(tp, mss)


def tcp_bound_to_half_wnd(tp: TcpSock, pktsize: int) -> int:
    """tcp_bound_to_half_wnd(): no segment larger than half the peer's largest window."""
    cutoff = tp.max_window >> 1 if tp.max_window > TCP_MSS_DEFAULT else tp.max_window
    if cutoff and pktsize > cutoff:
        return max(cutoff, 68 - TCP_IP_HEADERS // 2 - TCPOLEN_TSTAMP_ALIGNED)
    return pktsize


def tcp_sndbuf_expand(tp: TcpSock) -> None:
    """tcp_sndbuf_expand(): room for two (bbr: three) congestion windows of worst-case
    skbs, each a power-of-two head for one MSS plus struct sk_buff."""
    per_mss = max(tp.mss_clamp, tp.mss_cache) + MAX_TCP_HEADER + SKB_DATA_ALIGN_SHINFO
    per_mss = roundup_pow_of_two(per_mss) + SKB_DATA_ALIGN_SK_BUFF
    nr_segs = max(TCP_INIT_CWND, tp.snd_cwnd)
    sndmem = SNDBUF_EXPAND.get(tp.net.tcp_congestion_control, 2) * nr_segs * per_mss
    if tp.sk_sndbuf < sndmem:
        tp.sk_sndbuf = min(sndmem, tp.net.tcp_wmem[2])


def tcp_init_buffer_space(tp: TcpSock) -> None:
    """tcp_init_buffer_space(): at ESTABLISHED, the send buffer for the initial window
    and a window clamp that leaves part of the receive buffer to the application."""
    if not tp.sk_userlocks & SOCK_SNDBUF_LOCK:
        tcp_sndbuf_expand(tp)
    maxwin = tp.tcp_full_space()
    if tp.window_clamp >= maxwin:
        tp.window_clamp = maxwin
        if SYSCTL_TCP_APP_WIN and maxwin > 4 * tp.advmss:
            tp.window_clamp = max(maxwin - (maxwin >> SYSCTL_TCP_APP_WIN), 4 * tp.advmss)
    if SYSCTL_TCP_APP_WIN and tp.window_clamp > 2 * tp.advmss and \
            tp.window_clamp + tp.advmss > maxwin:
        tp.window_clamp = max(2 * tp.advmss, maxwin - tp.advmss)
    tp.rcv_ssthresh = min(tp.rcv_ssthresh, tp.window_clamp)
    tp.rcvq_space = min(tp.rcv_ssthresh, tp.rcv_wnd, TCP_INIT_CWND * tp.advmss)
    tp.rcvq_seq = tp.copied_seq


def tcp_initialize_rcv_mss(tp: TcpSock) -> None:
    hint = min(tp.advmss, tp.mss_cache, tp.rcv_wnd // 2, TCP_MSS_DEFAULT)
    tp.rcv_mss = max(hint, TCP_MIN_MSS)


def tcp_connect(sys: System, task, peer) -> TcpSock:
    """connect() from task to a listener of peer, and peer's accept(); returns the
    connecting socket (its peer is the accepted one).

    The connecting socket is made by task (sk_alloc -> mem_cgroup_sk_alloc): it belongs
    to task's group if that group accounts sockets.  The accepted socket is associated
    with the group of the task that accepts it (inet_csk_accept, 5.9+).
    """
    net = sys.net
    client, server = TcpSock(net, task), TcpSock(net, peer)
    mem_cgroup_sk_alloc(net, client, task)
    mem_cgroup_sk_alloc(net, server, peer)
    net.tcp_prot.sockets_allocated += 2
    client.peer, server.peer = server, client
    for tp in (client, server):
        tcp_select_initial_window(net, tp, tp.tcp_full_space(), tp.advmss)
    for tp in (client, server):
        other = tp.peer
        # tcp_ack_update_rtt() of the SYN-ACK / the handshake's last ACK: on loopback
        # the answer comes in the same instant
        tcp_ack_update_rtt(tp, 0, None)
        tp.snd_wscale = other.rcv_wscale
        tp.snd_wnd = tp.max_window = other.rcv_wnd  # the SYN's window is not scaled
        tcp_sync_mss(tp)
        tcp_initialize_rcv_mss(tp)
        tcp_init_buffer_space(tp)
    net.sockets += [client, server]
    net.connections.append(client)
    return client


def tcp_close_pair(client: TcpSock) -> None:
    """close() of both ends of client's connection: queued data is discarded, timers
    stop, memory and references go back."""
    net = client.net
    for tp in (client, client.peer):
        if tp.closed:
            continue
        tp.closed = True
        for timer in (tp.delack_timer, tp.retransmit_timer, tp.probe_timer):
            sched.del_timer(timer)  # inet_csk_clear_xmit_timers()
        for q in (tp.rtx_queue, tp.write_queue):
            while q:
                tcp_wmem_free_skb(tp, q.popleft())
        while tp.receive_queue:
            tcp_rmem_free_skb(tp, tp.receive_queue.popleft())
        tp.backlog.clear()
        tp.packets_out = 0
        sk_mem_reclaim(tp)
        if tp.sk_forward_alloc > 0:  # sk_mem_reclaim_final()
            __sk_mem_reclaim(tp, tp.sk_forward_alloc)
        net.tcp_prot.sockets_allocated -= 1
        mem_cgroup_sk_free(net, tp)
        if tp in net.sockets:
            net.sockets.remove(tp)
    if client in net.connections:
        net.connections.remove(client)


def tcp_task_exit(sys: System, task) -> None:
    """An exiting task's files are closed: its connections go (both ends)."""
    net = getattr(sys, "net", None)
    if net is None:
        return
    for client in list(net.connections):
        if client.task is task or client.peer.task is task:
            tcp_close_pair(client)


# --- the loopback "softirq": segments and ACKs reach their socket -------------------------

def deliver(tp: TcpSock, pkt: tuple) -> None:
    """netif_rx() on loopback: the packet is queued for the softirq, which runs at once
    (and processes it at the end of the queue if it is running already)."""
    sched.queue_work(tp.net.sys.clock, sched.NET_RX, tcp_v4_rcv, tp, pkt)
    net_rx_action(tp.net)


_NET_RX = (sched.NET_RX,)


def net_rx_action(net: Net) -> None:
    """The loopback softirq: process queued packets in order (not re-entered)."""
    if net.in_rx:
        return
    net.in_rx = True
    try:
        sched.run(net.sys.clock, _NET_RX)
    finally:
        net.in_rx = False


def tcp_v4_rcv(tp: TcpSock, pkt: tuple) -> None:
    """tcp_v4_rcv(): a packet for a closed socket is dropped; one for a socket inside a
    system call waits on its backlog."""
    if tp.closed:
        return
    if tp.owned:
        tp.backlog.append(pkt)
    else:
        tcp_v4_do_rcv(tp, pkt)


def tcp_v4_do_rcv(tp: TcpSock, pkt: tuple) -> None:
    kind = pkt[0]
    if kind == "data":
        tcp_rcv_data(tp, pkt[1])
    elif kind == "ack":
        tcp_ack(tp, pkt[1], pkt[2], pkt[3], pkt[4])
    elif kind == "probe":
        tcp_send_ack(tp)  # an old-sequence probe is answered with the current window


def lock_sock(tp: TcpSock) -> None:
    tp.owned = True


def release_sock(tp: TcpSock) -> None:
    """release_sock(): the backlog is processed before the call returns."""
    while tp.backlog:
        tcp_v4_do_rcv(tp, tp.backlog.popleft())
    tp.owned = False
    net_rx_action(tp.net)


# --- sending (net/ipv4/tcp.c, tcp_output.c) ----------------------------------------------

def tcp_xmit_size_goal(tp: TcpSock, mss_now: int) -> int:
    """tcp_xmit_size_goal(): GSO-sized skbs, bounded to half the peer's window."""
    gso_max = GSO_LEGACY_MAX_SIZE - (MAX_TCP_HEADER + 1)  # sk_setup_caps()
    new_size_goal = tcp_bound_to_half_wnd(tp, gso_max)
    return max(mss_now, (new_size_goal // mss_now) * mss_now)


def sk_stream_memory_free(tp: TcpSock) -> bool:
    """sk_stream_memory_free(): the writer may queue more while under its send buffer."""
    return tp.sk_wmem_queued < tp.sk_sndbuf


def tcp_stream_alloc_skb(tp: TcpSock, force_schedule: bool) -> Skb | None:
    """tcp_stream_alloc_skb(): an skb head, its truesize scheduled (forced for the first
    skb of an empty queue, so a socket can always send something)."""
    skb = Skb(tp.write_seq, SKB_HEAD_TRUESIZE)
    if force_schedule:
        sk_forced_mem_schedule(tp, skb.truesize)
    elif not sk_wmem_schedule(tp, skb.truesize):
        return None
    return skb


def tcp_skb_entail(tp: TcpSock, skb: Skb) -> None:
    tp.write_queue.append(skb)
    tp.sk_wmem_queued += skb.truesize
    sk_mem_charge(tp, skb.truesize)


def tcp_sendmsg(tp: TcpSock, size: int) -> int:
    """tcp_sendmsg_locked() for a non-blocking socket: copy into skbs while the send
    buffer and the memory accounting allow; the bytes accepted (0 for EAGAIN)."""
    lock_sock(tp)
    try:
        copied = 0
        mss_now = tp.mss_cache
        size_goal = tcp_xmit_size_goal(tp, mss_now)
        while copied < size:
            skb = tp.write_queue[-1] if tp.write_queue else None
            copy = size_goal - skb.len if skb is not None else 0
            if copy <= 0:
                if not sk_stream_memory_free(tp):
                    break  # wait_for_space
                first_skb = not tp.rtx_queue and not tp.write_queue
                skb = tcp_stream_alloc_skb(tp, first_skb)
                if skb is None:
                    break
                tcp_skb_entail(tp, skb)
                copy = size_goal
            copy = min(copy, size - copied)
            if tp.pfrag_left <= 0 or not skb.len:
                if tp.pfrag_left <= 0:
                    tp.pfrag_left = SK_PAGE_FRAG_SIZE  # sk_page_frag_refill()
                skb.nr_frags += 1  # !skb_can_coalesce(): a new fragment
            copy = min(copy, tp.pfrag_left)
            if not sk_wmem_schedule(tp, copy):
                break  # wait_for_space
            skb.end_seq += copy
            skb.truesize += copy
            tp.sk_wmem_queued += copy
            sk_mem_charge(tp, copy)
            tp.write_seq += copy
            tp.pfrag_left -= copy
            copied += copy
            if copied >= size or skb.len < size_goal:
                continue
            if tp.write_seq > tp.pushed_seq + (tp.max_window >> 1):  # forced_push()
                tp.pushed_seq = tp.write_seq
                tcp_write_xmit(tp, nonagle=True)
            elif skb is tp.write_queue[0]:
                tcp_write_xmit(tp, push_one=True)
        if copied < size:
            tp.nospace = True  # wait_for_space: set_bit(SOCK_NOSPACE)
        if copied:
            tp.pushed_seq = tp.write_seq
            tcp_write_xmit(tp, nonagle=copied < size)  # wait_for_space pushes TCP_NAGLE_PUSH
            tcp_check_probe_timer(tp)
        tp.sent_bytes += copied
        return copied
    finally:
        release_sock(tp)


def tcp_snd_wnd_test(tp: TcpSock, skb: Skb, cur_mss: int) -> bool:
    end_seq = skb.end_seq if skb.len <= cur_mss else skb.seq + cur_mss
    return end_seq <= tp.tcp_wnd_end()


def tcp_nagle_test(tp: TcpSock, skb: Skb, cur_mss: int, nonagle: bool) -> bool:
    """Nagle: a small last segment waits while an earlier small one is unacknowledged."""
    if nonagle or skb is not tp.write_queue[-1]:
        return True
    partial = skb.len < cur_mss
    return not (partial and tp.packets_out and tp.snd_una < tp.snd_sml <= tp.snd_nxt)


def tcp_write_xmit(tp: TcpSock, nonagle: bool = False, push_one: int = 0) -> None:
    """tcp_write_xmit(): send queued segments while the congestion and receive windows
    allow; each goes to the peer at once (loopback).  push_one: 1 sends one segment,
    2 one segment as a loss probe; otherwise a loss probe is scheduled after sending."""
    if tp.closed:
        return
    mss_now = tp.mss_cache
    sent_pkts = 0
    while tp.write_queue:
        skb = tp.write_queue[0]
        skb.pcount = max(1, -(-skb.len // mss_now))
        if tp.packets_out >= tp.snd_cwnd:
            break
        if not tcp_snd_wnd_test(tp, skb, mss_now):
            break
        if not tcp_nagle_test(tp, skb, mss_now, nonagle):
            break
        if skb.len > mss_now:
            limit = tcp_mss_split_point(tp, skb, mss_now)
            if skb.len > limit:
                tcp_fragment(tp, skb, limit)
        tcp_transmit(tp, skb)
        sent_pkts += skb.pcount
        if push_one:
            break
    # Send one loss probe per tail loss episode (not for what a probe itself sent)
    if sent_pkts and push_one != 2:
        tcp_schedule_loss_probe(tp, False)


def tcp_mss_split_point(tp: TcpSock, skb: Skb, mss_now: int) -> int:
    window = tp.tcp_wnd_end() - skb.seq
    max_len = mss_now * max(1, tp.snd_cwnd - tp.packets_out)
    needed = min(skb.len, window)
    if max_len <= needed:
        return max_len
    return needed - needed % mss_now or needed


def tcp_fragment(tp: TcpSock, skb: Skb, length: int, queue: deque | None = None) -> Skb:
    """tcp_fragment(): split skb at length; the second part gets a new head, charged.
    queue: the one skb is on (the write queue, or the retransmission queue:
    TCP_FRAG_IN_RTX_QUEUE)."""
    buff = Skb(skb.seq + length, SKB_HEAD_TRUESIZE)
    sk_forced_mem_schedule(tp, buff.truesize)
    tp.sk_wmem_queued += buff.truesize
    sk_mem_charge(tp, buff.truesize)
    nlen = skb.len - length
    buff.end_seq = skb.end_seq
    buff.truesize += nlen
    skb.truesize -= nlen
    skb.end_seq = skb.seq + length
    buff.mstamp, buff.tsval, buff.retrans = skb.mstamp, skb.tsval, skb.retrans
    queue = tp.write_queue if queue is None else queue
    idx = queue.index(skb)
    queue.insert(idx + 1, buff)
    return buff


def tcp_transmit(tp: TcpSock, skb: Skb) -> None:
    """tcp_transmit_skb() + tcp_event_new_data_sent(): the skb moves to the
    retransmission queue and a clone goes to the peer."""
    tp.write_queue.popleft()
    tp.rtx_queue.append(skb)
    tp.snd_nxt = max(tp.snd_nxt, skb.end_seq)
    prior_packets = tp.packets_out
    tp.packets_out += skb.pcount
    if not prior_packets or tp.icsk_pending == ICSK_TIME_LOSS_PROBE:
        tcp_rearm_rto(tp)
    sched.del_timer(tp.probe_timer)
    if skb.len < tp.mss_cache:
        tp.snd_sml = skb.end_seq
    skb.ack_clocked = tp.in_ack
    tcp_transmit_skb(tp, skb)


def tcp_transmit_skb(tp: TcpSock, skb: Skb) -> None:
    """tcp_transmit_skb(): stamp the skb (skb_mstamp_ns, the timestamp option) and
    send a clone to the peer."""
    skb.mstamp = tcp_clock_us(tp.net)
    skb.tsval = tcp_time_stamp_ts(tp.net)
    deliver(tp.peer, ("data", skb.clone()))


def tcp_wmem_free_skb(tp: TcpSock, skb: Skb) -> None:
    """tcp_wmem_free_skb(): an acknowledged (or discarded) skb gives its memory back."""
    tp.sk_wmem_queued -= skb.truesize
    sk_mem_uncharge(tp, skb.truesize)


def tcp_should_expand_sndbuf(tp: TcpSock) -> bool:
    """tcp_should_expand_sndbuf(): not if the user set SO_SNDBUF, not under memory
    pressure (the group's or the machine's), not above tcp_mem[0], not when the
    congestion window is full."""
    if tp.sk_userlocks & SOCK_SNDBUF_LOCK:
        return False
    if tcp_under_memory_pressure(tp):
        return False
    if sk_memory_allocated(tp) >= sk_prot_mem_limits(tp, 0):
        return False
    if tp.packets_out >= tp.snd_cwnd:
        return False
    return True


def tcp_check_space(tp: TcpSock) -> None:
    """tcp_check_space() -> tcp_new_space(): a writer that ran out of room gets a larger
    send buffer if it may, and is woken once a third of the buffer is free."""
    if not tp.nospace:
        return
    if tcp_should_expand_sndbuf(tp):
        tcp_sndbuf_expand(tp)
    # sk_stream_write_space(): writeable when free space >= half of what is queued
    if tp.sk_sndbuf - tp.sk_wmem_queued >= tp.sk_wmem_queued >> 1:
        tp.nospace = False


def tcp_ack(tp: TcpSock, ack_seq: int, window: int, tsecr: int | None = None,
            dsack: tuple | None = None) -> None:
    """tcp_ack(): the peer acknowledged up to ack_seq and offers window bytes; tsecr is
    the timestamp it echoes, dsack the old data it reports having received twice."""
    prior_una = tp.snd_una
    if ack_seq > tp.snd_nxt:
        return
    dsack_tlp = dsack is not None and tcp_check_dsack(tp, dsack)
    # tcp_ack_update_window() / tcp_may_update_window()
    if ack_seq > prior_una or window > tp.snd_wnd or window == 0:
        tp.snd_wnd = window
        if window > tp.max_window:
            tp.max_window = window
            tcp_sync_mss(tp)
    # tcp_clean_rtx_queue(): free what is acknowledged; an RTT sample from the first
    # skb sent once, none if a retransmitted one is among them (Karn)
    acked = 0
    first_ackt = None
    retrans_acked = False
    while tp.rtx_queue and tp.rtx_queue[0].end_seq <= ack_seq:
        skb = tp.rtx_queue.popleft()
        acked += skb.pcount
        if skb.retrans:
            retrans_acked = True  # FLAG_RETRANS_DATA_ACKED
        elif first_ackt is None:
            first_ackt = skb.mstamp
        tcp_wmem_free_skb(tp, skb)
    if ack_seq > tp.snd_una:
        tp.snd_una = ack_seq
    tp.packets_out = sum(s.pcount for s in tp.rtx_queue)
    if acked:
        seq_rtt_us = -1
        if first_ackt is not None and not retrans_acked:
            seq_rtt_us = max(0, tcp_clock_us(tp.net) - first_ackt)
        tcp_ack_update_rtt(tp, seq_rtt_us, tsecr)
        tp.snd_cwnd += acked  # slow start: one segment more per segment acknowledged
    if tp.tlp_high_seq:
        tcp_process_tlp_ack(tp, ack_seq, ack_seq > prior_una, dsack_tlp)
    if acked:
        tcp_set_xmit_timer(tp)  # FLAG_SET_XMIT_TIMER
    # tcp_fastretrans_alert() -> tcp_process_loss(): loss recovery ends once
    # everything sent before the timeout is acknowledged
    if tp.icsk_ca_state == TCP_CA_Loss and tp.snd_una >= tp.high_seq:
        tp.icsk_ca_state = TCP_CA_Open
    # tcp_data_snd_check(): what goes now is clocked by the peer's ACK (a round trip)
    tp.in_ack = True
    try:
        tcp_write_xmit(tp)
    finally:
        tp.in_ack = False
    tcp_check_space(tp)
    tcp_check_probe_timer(tp)


def tcp_check_probe_timer(tp: TcpSock) -> None:
    """tcp_check_probe_timer(): nothing in flight but data waiting for window."""
    if not tp.packets_out and tp.write_queue and not sched.timer_pending(tp.probe_timer):
        tcp_reset_xmit_timer(tp, tp.probe_timer, sched.TCP_PROBE, tp.icsk_rto)


# --- receiving (net/ipv4/tcp_input.c, tcp.c) ----------------------------------------------

def tcp_rmem_free_skb(tp: TcpSock, skb: Skb) -> None:
    """sock_rfree(): a consumed (or dropped) skb leaves the receive memory."""
    tp.sk_rmem_alloc -= skb.truesize
    sk_mem_uncharge(tp, skb.truesize)


def tcp_can_ingest(tp: TcpSock, skb: Skb) -> bool:
    """tcp_can_ingest() (6.18.y): receive memory is not over the receive buffer.  (6.17
    also counted the incoming skb; the stable kernels went back to this check.)"""
    return tp.sk_rmem_alloc <= tp.sk_rcvbuf


def tcp_adjust_rcv_ssthresh(tp: TcpSock) -> None:
    """tcp_adjust_rcv_ssthresh(): under memory pressure the window threshold drops to
    four segments."""
    tp.rcv_ssthresh = min(tp.rcv_ssthresh, 4 * tp.advmss)


def tcp_clamp_window(tp: TcpSock) -> None:
    """tcp_clamp_window(): receive memory went over the receive buffer.  Raise the buffer
    to what is used, up to tcp_rmem[2], if nothing stands against it (no SO_RCVBUF, no
    memory pressure, the machine below tcp_mem[0]); if still over, clamp the window
    threshold to two segments."""
    tp.quick = 0
    rmem2 = tp.net.tcp_rmem[2]
    if tp.sk_rcvbuf < rmem2 and not tp.sk_userlocks & SOCK_RCVBUF_LOCK and \
            not tcp_under_memory_pressure(tp) and \
            sk_memory_allocated(tp) < sk_prot_mem_limits(tp, 0):
        tp.sk_rcvbuf = min(tp.sk_rmem_alloc, rmem2)
    if tp.sk_rmem_alloc > tp.sk_rcvbuf:
        tp.rcv_ssthresh = min(tp.window_clamp, 2 * tp.advmss)


def tcp_prune_queue(tp: TcpSock, skb: Skb) -> int:
    """tcp_prune_queue(): make room for skb.  Queues are not collapsed in the model;
    -1 means the segment has to be dropped (RcvPruned)."""
    tp.net.mib_inc("PruneCalled")
    if not tcp_can_ingest(tp, skb):
        tcp_clamp_window(tp)
    elif tcp_under_memory_pressure(tp):
        tcp_adjust_rcv_ssthresh(tp)
    if tcp_can_ingest(tp, skb):
        return 0
    tp.net.mib_inc("RcvPruned")
    return -1


def tcp_try_rmem_schedule(tp: TcpSock, skb: Skb) -> int:
    """tcp_try_rmem_schedule(): receive buffer room and memory (the group's tcpmem,
    tcp_mem) for the segment, pruning if needed; -1 when there is none."""
    if not tcp_can_ingest(tp, skb) or not sk_rmem_schedule(tp, skb.truesize):
        if tcp_prune_queue(tp, skb) < 0:
            return -1
        if not sk_rmem_schedule(tp, skb.truesize):
            return -1  # tcp_prune_ofo_queue() finds no out-of-order queue to drop
    return 0


def tcp_measure_rcv_mss(tp: TcpSock, skb: Skb) -> None:
    """tcp_measure_rcv_mss(): learn the peer's segment size and the payload/truesize
    ratio of its skbs, which converts between window and buffer memory."""
    length = skb.len
    if length >= tp.rcv_mss:
        if length != tp.rcv_mss:
            old = tp.scaling_ratio
            tp.scaling_ratio = max(1, (skb.len << TCP_RMEM_TO_WIN_SCALE) // skb.truesize)
            if old != tp.scaling_ratio:
                tcp_set_window_clamp(tp, tp.tcp_win_from_space(tp.sk_rcvbuf))
                if tp.window_clamp < tp.rcvq_space:
                    tp.rcvq_space = tp.window_clamp
        tp.rcv_mss = min(length, tp.advmss)


def tcp_set_window_clamp(tp: TcpSock, val: int) -> None:
    new = max(SOCK_MIN_RCVBUF // 2, val)
    old = tp.window_clamp
    if new == old:
        return
    tp.window_clamp = new
    if new < old:
        tp.rcv_ssthresh = min(tp.rcv_ssthresh, new)
    else:
        tp.rcv_ssthresh = max(min(tp.rcv_wnd, new), tp.rcv_ssthresh)


def tcp_grow_window(tp: TcpSock, skb: Skb) -> None:
    """tcp_grow_window(): open the window threshold by two segments per segment, up to
    the clamp and the free buffer; under memory pressure clamp it instead."""
    room = min(tp.window_clamp, tp.tcp_space()) - tp.rcv_ssthresh
    if room <= 0:
        return
    if tcp_under_memory_pressure(tp):
        tcp_adjust_rcv_ssthresh(tp)
        return
    truesize = skb.truesize - SKB_HEAD_TRUESIZE  # truesize_adjust(): frags only
    if truesize < skb.len:
        truesize = skb.truesize
    if tp.tcp_win_from_space(truesize) <= skb.len:
        incr = 2 * tp.advmss
    else:
        incr = __tcp_grow_window(tp, skb, truesize)
    if incr:
        incr = max(incr, 2 * skb.len)
        tp.rcv_ssthresh += min(room, incr)
        tp.quick |= 1


def __tcp_grow_window(tp: TcpSock, skb: Skb, skbtruesize: int) -> int:
    truesize = tp.tcp_win_from_space(skbtruesize) >> 1
    window = tp.tcp_win_from_space(tp.net.tcp_rmem[2]) >> 1
    while tp.rcv_ssthresh <= window:
        if truesize <= skb.len:
            return 2 * tp.rcv_mss
        truesize >>= 1
        window >>= 1
    return 0


def tcp_incr_quickack(tp: TcpSock, max_quickacks: int) -> None:
    quickacks = tp.rcv_wnd // (2 * tp.rcv_mss) or 2
    quickacks = min(quickacks, max_quickacks)
    if quickacks > tp.quick:
        tp.quick = quickacks


def tcp_event_data_recv(tp: TcpSock, skb: Skb) -> None:
    """tcp_event_data_recv(): schedule an ACK, measure the segment, grow the window."""
    tp.ack_pending |= ICSK_ACK_SCHED
    tcp_measure_rcv_mss(tp, skb)
    tp.rcv_rtt_valid = True
    if skb.ack_clocked:
        tp.rcvq_round_trip = True
    now = tp.net.sys.clock.now
    if not tp.ato:
        tcp_incr_quickack(tp, TCP_MAX_QUICKACKS)
        tp.ato = 1
    elif now > tp.lrcvtime:
        tcp_incr_quickack(tp, TCP_MAX_QUICKACKS)  # a gap longer than the RTO
    tp.lrcvtime = now
    if skb.len >= 128:
        tcp_grow_window(tp, skb)


def tcp_rcv_data(tp: TcpSock, skb: Skb) -> None:
    """tcp_data_queue() and the ACK decision that follows (tcp_ack_snd_check)."""
    net = tp.net
    # tcp_replace_ts_recent(): echo the timestamp of the segment at the left edge of
    # the window last advertised (RFC 7323)
    if skb.seq <= tp.rcv_wup:
        tp.ts_recent = skb.tsval
    if skb.seq == tp.rcv_nxt and skb.len:
        if tp.tcp_receive_window() == 0:
            net.mib_inc("TCPZeroWindowDrop")
            tp.drops += 1
            tcp_enter_quickack_mode(tp)
            tcp_send_ack(tp)
            return
        if tcp_try_rmem_schedule(tp, skb) < 0:
            tp.ack_pending |= ICSK_ACK_NOMEM | ICSK_ACK_NOW
            if tp.receive_queue:
                net.mib_inc("TCPRcvQDrop")
                tp.drops += 1
                tcp_send_ack(tp)
                return
            sk_forced_mem_schedule(tp, skb.truesize)
        tcp_queue_rcv(tp, skb)
        tcp_event_data_recv(tp, skb)
        tcp_ack_snd_check(tp)
        return
    # Either way the segment is freed by tcp_drop_reason(), which counts it in sk_drops
    # (SO_MEMINFO's drops): a retransmission of data already here (SKB_DROP_REASON_
    # TCP_OLD_DATA) as well as one out of order after a drop.
    if skb.end_seq <= tp.rcv_nxt:
        # a retransmission of data already here: tcp_rcv_spurious_retrans(), and
        # tcp_dsack_set() reports it in the ACK that follows
        net.mib_inc("DelayedACKLost")
        net.mib_inc("TCPDSACKOldSent")
        tp.dsack = (skb.seq, skb.end_seq)
    else:
        net.mib_inc("TCPOFODrop")  # out of order after a drop: not queued in the model
    tp.drops += 1
    tcp_enter_quickack_mode(tp)
    tcp_send_ack(tp)


def tcp_queue_rcv(tp: TcpSock, skb: Skb) -> None:
    """tcp_queue_rcv(): append to the receive queue, or merge the payload into the tail
    skb (tcp_try_coalesce()), which adds only the fragments' truesize."""
    tail = tp.receive_queue[-1] if tp.receive_queue else None
    # skb_try_coalesce(): the tail must not be shared with the sender any more (its
    # copy is freed once acknowledged) and the fragments must fit MAX_SKB_FRAGS.
    if tail is not None and tail.end_seq == skb.seq and tp.peer.snd_una >= tail.end_seq \
            and tail.nr_frags + skb.nr_frags <= MAX_SKB_FRAGS:
        delta = skb.truesize - SKB_HEAD_TRUESIZE
        tail.truesize += delta
        tail.end_seq = skb.end_seq
        tail.nr_frags += skb.nr_frags
        tp.sk_rmem_alloc += delta
        sk_mem_charge(tp, delta)
        tp.net.mib_inc("TCPRcvCoalesce")
    else:
        tp.receive_queue.append(skb)
        tp.sk_rmem_alloc += skb.truesize
        sk_mem_charge(tp, skb.truesize)
    tp.rcv_nxt = skb.end_seq


def tcp_enter_quickack_mode(tp: TcpSock) -> None:
    tcp_incr_quickack(tp, TCP_MAX_QUICKACKS)
    tp.ato = 1


def tcp_ack_snd_check(tp: TcpSock) -> None:
    """__tcp_ack_snd_check(): ACK now after more than one full segment when the window
    does not shrink, in quickack mode, or when asked to; otherwise a delayed ACK."""
    if not tp.ack_pending & ICSK_ACK_SCHED:
        return
    if ((tp.rcv_nxt - tp.rcv_wup > tp.rcv_mss
         and (tp.rcv_nxt - tp.copied_seq < 1 or __tcp_select_window(tp) >= tp.rcv_wnd))
            or tp.quick or tp.ack_pending & ICSK_ACK_NOW):
        tcp_send_ack(tp)
    else:
        tp.ack_pending |= ICSK_ACK_TIMER  # tcp_send_delayed_ack(): the next tick
        if not sched.timer_pending(tp.delack_timer):  # an older timeout stays
            tcp_reset_xmit_timer(tp, tp.delack_timer, sched.TCP_DELACK, TCP_ATO_MIN)


def __tcp_select_window(tp: TcpSock) -> int:
    """__tcp_select_window(): the window the free receive buffer allows, at most
    rcv_ssthresh; zero once free space is below an MSS or 1/16 of the buffer."""
    mss = tp.rcv_mss
    free_space = tp.tcp_space()
    allowed_space = tp.tcp_full_space()
    full_space = min(tp.window_clamp, allowed_space)
    if mss > full_space:
        mss = full_space
        if mss <= 0:
            return 0
    if free_space < (full_space >> 1):
        tp.quick = 0
        if tcp_under_memory_pressure(tp):
            tcp_adjust_rcv_ssthresh(tp)
        free_space = (free_space >> tp.rcv_wscale) << tp.rcv_wscale
        if free_space < (allowed_space >> 4) or free_space < mss:
            return 0
    if free_space > tp.rcv_ssthresh:
        free_space = tp.rcv_ssthresh
    if tp.rcv_wscale:
        unit = 1 << tp.rcv_wscale
        return (free_space + unit - 1) // unit * unit
    window = tp.rcv_wnd
    if window <= free_space - mss or window > free_space:
        window = (free_space // mss) * mss
    return window


def tcp_select_window(tp: TcpSock) -> int:
    """tcp_select_window(): the window of an outgoing ACK; never shrinks an offered one."""
    if tp.ack_pending & ICSK_ACK_NOMEM:
        tp.rcv_wnd = 0
        tp.rcv_wup = tp.rcv_nxt
        return 0
    old_win = tp.rcv_wnd
    cur_win = tp.tcp_receive_window()
    new_win = __tcp_select_window(tp)
    if new_win < cur_win:
        if new_win == 0:
            tp.net.mib_inc("TCPWantZeroWindowAdv")
        unit = 1 << tp.rcv_wscale
        new_win = (cur_win + unit - 1) // unit * unit
    tp.rcv_wnd = new_win
    tp.rcv_wup = tp.rcv_nxt
    new_win = min(new_win, 65535 << tp.rcv_wscale) >> tp.rcv_wscale
    if new_win == 0 and old_win:
        tp.net.mib_inc("TCPToZeroWindowAdv")
    return new_win << tp.rcv_wscale


def tcp_send_ack(tp: TcpSock) -> None:
    """tcp_send_ack(): cumulative ACK with the current window; leaves quickack mode by
    one ACK's worth."""
    if tp.closed:
        return
    if tp.quick:
        pkts = 1 if tp.ack_pending & ICSK_ACK_SCHED else 0
        tp.quick = 0 if pkts >= tp.quick else tp.quick - pkts
    window = tcp_select_window(tp)
    tp.ack_pending = 0
    sched.del_timer(tp.delack_timer)  # tcp_event_ack_sent(): inet_csk_clear_xmit_timer
    dsack, tp.dsack = tp.dsack, None
    deliver(tp.peer, ("ack", tp.rcv_nxt, window, tp.ts_recent, dsack))


def tcp_rcv_space_adjust(tp: TcpSock) -> None:
    """tcp_rcv_space_adjust(): receive buffer autotuning (DRS).  When the application
    read more in the last round trip than the buffer was sized for, grow it.

    The kernel measures once per receive round trip (time since the last measurement
    at least rcv_rtt_est.rtt_us, about a millisecond on loopback).  The model has no
    time within a tick: a measurement ends at the next read in a later tick, or at a
    read in the same tick once data has arrived that the sender sent in answer to this
    end's ACKs (the window update of an earlier read let it go: a round trip has
    passed).  A reader draining its queue in a burst of reads thus grows the buffer
    step by step, as the real one did (6.18.44: 131072 -> 1615485 in the 40-read
    drain of tcp-bloat), not once for everything read in the tick; data the sender's
    own send() calls push (a sender and reader in lockstep) is not a round trip.
    """
    now = tp.net.sys.clock.now
    if not tp.rcv_rtt_valid or (tp.rcvq_time == now and not tp.rcvq_round_trip):
        return
    tp.rcvq_time = now
    tp.rcvq_round_trip = False
    copied = tp.copied_seq - tp.rcvq_seq
    inq = tp.rcv_nxt - tp.copied_seq
    copied -= inq
    if copied > tp.rcvq_space:
        tcp_rcvbuf_grow(tp, copied)
    tp.rcvq_seq = tp.copied_seq


def tcp_rcvbuf_grow(tp: TcpSock, newval: int) -> None:
    """tcp_rcvbuf_grow() (6.18): room for twice what was read, plus slow-start growth,
    capped at tcp_rmem[2]; the window clamp follows."""
    oldval = tp.rcvq_space
    tp.rcvq_space = newval
    if not tp.net.tcp_moderate_rcvbuf or tp.sk_userlocks & SOCK_RCVBUF_LOCK:
        return
    rcvwin = newval << 1
    grow = rcvwin * (newval - oldval) // max(1, oldval)
    rcvwin += grow << 1
    rcvbuf = min(tp.tcp_space_from_win(rcvwin), tp.net.tcp_rmem[2])
    if rcvbuf > tp.sk_rcvbuf:
        tp.sk_rcvbuf = rcvbuf
        tp.window_clamp = tp.tcp_win_from_space(rcvbuf)


def tcp_cleanup_rbuf(tp: TcpSock, copied: int) -> None:
    """tcp_cleanup_rbuf(): after a read, ACK pending data, or advertise a window that
    the read at least doubled."""
    time_to_ack = False
    if tp.ack_pending & ICSK_ACK_SCHED and tp.rcv_nxt - tp.rcv_wup > tp.rcv_mss:
        time_to_ack = True
    if copied > 0 and not time_to_ack:
        now = tp.tcp_receive_window()
        if 2 * now <= tp.window_clamp:
            new_window = __tcp_select_window(tp)
            if new_window and new_window >= 2 * now:
                time_to_ack = True
    if time_to_ack:
        tcp_send_ack(tp)


def tcp_recvmsg(tp: TcpSock, size: int) -> int:
    """tcp_recvmsg(): copy up to size queued bytes to the reader; freed skbs give their
    memory back; autotuning and a window update follow."""
    lock_sock(tp)
    try:
        copied = 0
        while copied < size and tp.receive_queue:
            skb = tp.receive_queue[0]
            take = min(skb.end_seq - tp.copied_seq, size - copied)
            tp.copied_seq += take
            copied += take
            if tp.copied_seq >= skb.end_seq:
                tp.receive_queue.popleft()
                tcp_rmem_free_skb(tp, skb)
        tp.read_bytes += copied
        if copied:
            tcp_rcv_space_adjust(tp)
            tcp_cleanup_rbuf(tp, copied)
        return copied
    finally:
        release_sock(tp)


# --- timers (net/ipv4/tcp_timer.c) ---------------------------------------------------------

def tcp_clock_us(net: Net) -> int:
    """tcp_clock_us(): TCP's microsecond clock (skb_mstamp_ns, tcp_mstamp).  The model's
    tick is a second; what runs in a tick's user-space work is at the tick.  A TCP timer
    armed in one tick fires at the next, yet as TCP's clock goes it fires after its
    timeout (a delayed ACK 40 ms, a loss probe a few ms after the segments sent in the
    tick before), so while it runs the clock reads the tick before plus that timeout:
    an ACK the delayed ACK timer sends measures 40 ms of RTT, one sent at once none."""
    timer_us = net.tcp_timer_us
    if timer_us is not None:
        return timer_us
    return net.sys.clock.now * USEC_PER_SEC


def tcp_time_stamp_ts(net: Net) -> int:
    """tcp_time_stamp_ts(): the timestamp option's clock (milliseconds, TCP_TS_HZ)."""
    return tcp_clock_us(net) // (USEC_PER_SEC // TCP_TS_HZ)


def tcp_timer_expire(tp: TcpSock, kind: int) -> None:
    """One of the socket's timers fires: tcp_delack_timer(), tcp_write_timer() or
    tcp_probe_timer() (its timeout is timer.order[0], in jiffies)."""
    net = tp.net
    if kind == sched.TCP_DELACK:
        timer, handler = tp.delack_timer, tcp_delack_timer
    elif kind == sched.TCP_RETRANSMIT:
        timer, handler = tp.retransmit_timer, tcp_write_timer_handler
    else:
        timer, handler = tp.probe_timer, tcp_probe_timer
    # No timer waits longer than the tick it fires in
    offset = min(jiffies_to_usecs(timer.order[0]), USEC_PER_SEC - 1)
    net.tcp_timer_us = (net.sys.clock.now - 1) * USEC_PER_SEC + offset
    try:
        handler(tp)
    finally:
        net.tcp_timer_us = None


def tcp_reset_xmit_timer(tp: TcpSock, timer: sched.Timer, kind: int, timeout: int,
                         this_tick: bool = False) -> None:
    """inet_csk_reset_xmit_timer() -> sk_reset_timer(): the timer fires at the next tick
    (the model's delayed ACK timeout, RTO and probe interval all end within one);
    among the timers of that tick it ranks by its timeout (jiffies), then by kind and
    socket.  this_tick: it fires later in the timer run going on (what is left of an
    RTO a loss probe took the place of)."""
    timer.order = (timeout, kind, tp.ino)
    clock = tp.net.sys.clock
    sched.mod_timer(clock, timer, clock.now if this_tick else clock.now + 1)


def tcp_reset_retransmit_timer(tp: TcpSock, what: int, timeout: int,
                               this_tick: bool = False) -> None:
    """tcp_reset_xmit_timer() of icsk_retransmit_timer: armed for an RTO or a probe."""
    tp.icsk_pending = what
    tcp_reset_xmit_timer(tp, tp.retransmit_timer, sched.TCP_RETRANSMIT, timeout, this_tick)


def tcp_rearm_rto(tp: TcpSock) -> None:
    """tcp_rearm_rto(): a new RTO while data is in flight, none once everything is acked.
    A timer armed for a loss probe keeps the time the RTO had: in a timer run, the RTO
    still fires in it (tcp_rto_delta_us())."""
    if tp.packets_out:
        in_timer = tp.icsk_pending == ICSK_TIME_LOSS_PROBE and tp.net.tcp_timer_us is not None
        timeout = tp.icsk_rto
        if in_timer:
            timeout = max(timeout, tp.retransmit_timer.order[0])
        tcp_reset_retransmit_timer(tp, ICSK_TIME_RETRANS, timeout, in_timer)
    else:
        tp.icsk_pending = 0
        sched.del_timer(tp.retransmit_timer)


def tcp_set_xmit_timer(tp: TcpSock) -> None:
    """tcp_set_xmit_timer(): after an ACK that acknowledged data, a loss probe if one
    may be sent, else the RTO."""
    if not tcp_schedule_loss_probe(tp, True):
        tcp_rearm_rto(tp)


# --- RTT (net/ipv4/tcp_input.c) -----------------------------------------------------------

def tcp_rtt_estimator(tp: TcpSock, mrtt_us: int) -> None:
    """tcp_rtt_estimator(): Jacobson's smoothed RTT (srtt_us holds 8 times it) and mean
    deviation, from one sample."""
    m = mrtt_us
    srtt = tp.srtt_us
    if srtt:
        m -= srtt >> 3
        srtt += m
        if m < 0:
            m = -m
            m -= tp.mdev_us >> 2
            if m > 0:
                m >>= 3
        else:
            m -= tp.mdev_us >> 2
        tp.mdev_us += m
        if tp.mdev_us > tp.mdev_max_us:
            tp.mdev_max_us = tp.mdev_us
            if tp.mdev_max_us > tp.rttvar_us:
                tp.rttvar_us = tp.mdev_max_us
        if tp.snd_una > tp.rtt_seq:
            if tp.mdev_max_us < tp.rttvar_us:
                tp.rttvar_us -= (tp.rttvar_us - tp.mdev_max_us) >> 2
            tp.rtt_seq = tp.snd_nxt
            tp.mdev_max_us = jiffies_to_usecs(TCP_RTO_MIN)
    else:
        srtt = m << 3
        tp.mdev_us = m << 1
        tp.rttvar_us = max(tp.mdev_us, jiffies_to_usecs(TCP_RTO_MIN))
        tp.mdev_max_us = tp.rttvar_us
        tp.rtt_seq = tp.snd_nxt
    tp.srtt_us = max(1, srtt)


def tcp_set_rto(tp: TcpSock) -> None:
    """tcp_set_rto(): RTO = srtt + 4 * rttvar (at least TCP_RTO_MIN through rttvar),
    at most TCP_RTO_MAX."""
    tp.icsk_rto = min(usecs_to_jiffies((tp.srtt_us >> 3) + tp.rttvar_us), TCP_RTO_MAX)


def tcp_rtt_tsopt_us(tp: TcpSock, tsecr: int, min_ms: int) -> int:
    """tcp_rtt_tsopt_us(): an RTT from the echoed timestamp, in whole milliseconds (at
    least min_ms)."""
    delta = tcp_time_stamp_ts(tp.net) - tsecr
    if delta < 0:
        return -1
    return (delta or min_ms) * (USEC_PER_SEC // TCP_TS_HZ)


def tcp_ack_update_rtt(tp: TcpSock, seq_rtt_us: int, tsecr: int | None) -> None:
    """tcp_ack_update_rtt(): an ACK that acknowledged data gives an RTT sample, from the
    skbs' send times or, if a retransmission was among them, from the echoed
    timestamp (RFC 7323)."""
    if seq_rtt_us < 0 and tsecr:
        seq_rtt_us = tcp_rtt_tsopt_us(tp, tsecr, 1)
    if seq_rtt_us < 0:
        return
    tcp_rtt_estimator(tp, seq_rtt_us)
    tcp_set_rto(tp)


# --- tail loss probe (net/ipv4/tcp_output.c, tcp_input.c) -------------------------------

def tcp_schedule_loss_probe(tp: TcpSock, advancing_rto: bool) -> bool:
    """tcp_schedule_loss_probe(): with data in flight and not in loss recovery, probe
    after 2 * srtt plus 2 ms (plus TCP_RTO_MIN with one packet out, for the peer's
    delayed ACK), or after the RTO if that comes first.  Linux 3.10+
    (net.ipv4.tcp_early_retrans = 3; SACK is on, as on loopback)."""
    if tp.net.semantics == "3.8" or not tp.packets_out or tp.icsk_ca_state != TCP_CA_Open:
        return False
    if tp.srtt_us:
        timeout_us = tp.srtt_us >> 2
        timeout_us += jiffies_to_usecs(TCP_RTO_MIN) if tp.packets_out == 1 else TCP_TIMEOUT_MIN_US
        timeout = usecs_to_jiffies(timeout_us)
    else:
        timeout = TCP_TIMEOUT_INIT
    # advancing_rto: the RTO would be re-armed from now; otherwise it runs from the
    # first skb in flight, which in the model went in this tick or the one before
    timeout = min(timeout, tp.icsk_rto)
    tcp_reset_retransmit_timer(tp, ICSK_TIME_LOSS_PROBE, timeout)
    return True


def tcp_send_loss_probe(tp: TcpSock) -> None:
    """tcp_send_loss_probe(): the ACK did not come in time.  Send new data if the
    window allows, else the last segment again (the peer, if it has it, drops the copy
    as old data and reports it with a D-SACK); then the RTO, from now."""
    sent = False
    if not tp.tlp_high_seq:
        tp.tlp_retrans = False
        mss = tp.mss_cache
        skb = tp.write_queue[0] if tp.write_queue else None
        if skb is not None and tcp_snd_wnd_test(tp, skb, mss):
            pcount = tp.packets_out
            tcp_write_xmit(tp, nonagle=True, push_one=2)
            sent = tp.packets_out > pcount
        elif tp.rtx_queue:
            skb = tp.rtx_queue[-1]
            if skb.pcount > 1 and skb.len > (skb.pcount - 1) * mss:
                skb = tcp_fragment(tp, skb, (skb.pcount - 1) * mss, tp.rtx_queue)
                skb.pcount = 1
                tp.rtx_queue[-2].pcount -= 1
            __tcp_retransmit_skb(tp, skb)
            tp.tlp_retrans = sent = True
    if sent:
        tp.tlp_high_seq = tp.snd_nxt
        tp.net.mib_inc("TCPLossProbes")
    # The kernel restarts the RTO from the probe (icsk_pending = 0 first): PTO + RTO
    # after the segments, a few ms more than the RTO alone.  The model's RTO ends
    # within the tick after the segments, so it still fires in this timer run, where
    # the RTO the probe took the place of would have.
    tcp_rearm_rto(tp)


def __tcp_retransmit_skb(tp: TcpSock, skb: Skb) -> None:
    """__tcp_retransmit_skb(): send a segment of the retransmission queue again."""
    skb.retrans = True
    tp.retransmits += 1  # tcpi_total_retrans
    tcp_transmit_skb(tp, skb)


def tcp_check_dsack(tp: TcpSock, dsack: tuple) -> bool:
    """tcp_check_dsack(): the peer got data twice (TCPDSACKRecv); True when that was
    the loss probe's retransmission (FLAG_DSACK_TLP)."""
    tp.net.mib_inc("TCPDSACKRecv")
    return bool(tp.tlp_high_seq and tp.tlp_retrans and dsack[1] == tp.tlp_high_seq)


def tcp_process_tlp_ack(tp: TcpSock, ack: int, una_advanced: bool, dsack_tlp: bool) -> None:
    """tcp_process_tlp_ack(): the ACK covers the probe.  A D-SACK of it (or a pure
    duplicate ACK) says the original arrived too: no loss.  An ACK beyond it without
    one says the probe repaired a loss: the congestion window would be reduced
    (TCPLossProbeRecovery; bbr, the reference machine's, does its own cwnd control and
    keeps it)."""
    if ack < tp.tlp_high_seq:
        return
    if not tp.tlp_retrans or dsack_tlp:
        tp.tlp_high_seq = 0
    elif ack > tp.tlp_high_seq:
        tp.tlp_high_seq = 0
        tp.net.mib_inc("TCPLossProbeRecovery")
    elif not una_advanced:
        tp.tlp_high_seq = 0


def tcp_delack_timer(tp: TcpSock) -> None:
    """tcp_delack_timer(): the delayed ACK is sent (unless an ACK went since)."""
    if tp.ack_pending & ICSK_ACK_TIMER and tp.ack_pending & ICSK_ACK_SCHED:
        tp.net.mib_inc("DelayedACKs")
        tcp_send_ack(tp)


def tcp_write_timer_handler(tp: TcpSock) -> None:
    """tcp_write_timer_handler(): the retransmission timer fired for a loss probe or
    an RTO."""
    event = tp.icsk_pending
    if event == ICSK_TIME_LOSS_PROBE:
        tcp_send_loss_probe(tp)
    elif event == ICSK_TIME_RETRANS:
        tp.icsk_pending = 0
        tcp_retransmit_timer(tp)


def tcp_retransmit_timer(tp: TcpSock) -> None:
    """tcp_retransmit_timer() -> tcp_enter_loss(): everything outstanding is resent,
    starting again from a congestion window of one; loss recovery lasts until all of
    it is acknowledged (no loss probes meanwhile)."""
    if not tp.packets_out or not tp.rtx_queue:
        return
    tp.net.mib_inc("TCPTimeouts")
    tp.icsk_ca_state = TCP_CA_Loss
    tp.high_seq = tp.snd_nxt
    tp.tlp_high_seq = 0
    while tp.rtx_queue:
        skb = tp.rtx_queue.pop()
        skb.retrans = True
        tp.write_queue.appendleft(skb)
    tp.retransmits += 1
    tp.snd_nxt = tp.snd_una
    tp.packets_out = 0
    tp.snd_cwnd = 1
    tcp_write_xmit(tp, nonagle=True)


def tcp_probe_timer(tp: TcpSock) -> None:
    """tcp_probe_timer() -> tcp_write_wakeup(): a sender with data but no window sends
    what the window has room for, or a zero-window probe that the peer answers."""
    if tp.packets_out or not tp.write_queue:
        return
    # ICSK_TIME_PROBE0: again at the next tick
    tcp_reset_xmit_timer(tp, tp.probe_timer, sched.TCP_PROBE, tp.icsk_rto)
    skb = tp.write_queue[0]
    if tcp_snd_wnd_test(tp, skb, tp.mss_cache):
        tcp_write_xmit(tp, nonagle=True)
        return
    wnd_end = tp.tcp_wnd_end()
    if skb.seq < wnd_end:
        seg_size = min(wnd_end - skb.seq, tp.mss_cache)
        if seg_size < skb.len:
            tcp_fragment(tp, skb, seg_size)
        skb.pcount = 1
        tcp_transmit(tp, skb)
    else:
        deliver(tp.peer, ("probe",))


def tcp_debugfs(sys: System) -> dict:
    """The TCP figures of k.debugfs(): tcp_mem, the global memory and pressure state
    (as /proc/net/sockstat and /proc/sys/net/ipv4 show them), the TcpExt counters the
    model moves, and how many times the socket hooks ran behind the static key."""
    net = getattr(sys, "net", None)
    if net is None:
        return {}
    proto = net.tcp_prot
    return {
        "tcp_mem": list(proto.sysctl_mem),
        "tcp_wmem": list(net.tcp_wmem),
        "tcp_rmem": list(net.tcp_rmem),
        "tcp_congestion_control": net.tcp_congestion_control,
        "memory_allocated": proto.memory_allocated,
        "memory_pressure": 1 if proto.memory_pressure else 0,
        "sockets_allocated": proto.sockets_allocated,
        "socket_hook_calls": net.memcg_sockets_enabled_key.hits,
        "mib": dict(net.mib),
    }
