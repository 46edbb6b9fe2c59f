"""Socket memory accounting: struct sock's buffers, the protocol's global memory and the
memory cgroup's socket hooks.

Follows Linux 6.18: net/core/sock.c (__sk_mem_raise_allocated, __sk_mem_schedule,
__sk_mem_reduce_allocated), include/net/sock.h (sk_wmem_schedule, sk_rmem_schedule,
sk_mem_charge/uncharge/reclaim, sk_stream_moderate_sndbuf, the per-CPU reserve of
memory_allocated), mm/memcontrol.c (mem_cgroup_sk_alloc, mem_cgroup_charge_skmem,
memcg_sockets_enabled_key) and mm/memcontrol-v1.c (memcg1_charge_skmem,
memcg_update_tcp_max).  Under semantics="3.8" the memcg side follows that era's
net/ipv4/tcp_memcontrol.c (struct cg_proto: a res_counter charged "nofail", a per-group
copy of tcp_mem and a per-group pressure flag, memcg_socket_limit_enabled).

Memory is counted the kernel's way: every socket keeps a forward allocation
(sk_forward_alloc, in bytes) taken from the protocol's memory_allocated (in pages) and,
when the socket belongs to an accounting group, from that group's tcpmem counter
(memory.kmem.tcp.*).  v1 TCP memory is not part of memory.usage_in_bytes.

The model does no I/O; the TCP state machine that uses these helpers is in tcp.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..kernel import PAGE_SIZE
from ..mm import memcontrol
from ..mm.page_counter import PAGE_COUNTER_MAX, PageCounter
from ..static_key import StaticKey

if TYPE_CHECKING:
    from ..mm.memcontrol import MemCgroup
    from ..system import System

PAGE_SHIFT = 12  # arch/x86/include/asm/page_types.h
# include/net/sock.h: SK_MEM_SEND / SK_MEM_RECV (the kind of a memory schedule)
SK_MEM_SEND = 0
SK_MEM_RECV = 1
# include/net/sock.h: SK_MEMORY_PCPU_RESERVE = 1 << (20 - PAGE_SHIFT): pages a CPU may
# add to or take from memory_allocated before the global counter is updated (6.0+)
SK_MEMORY_PCPU_RESERVE = 1 << (20 - PAGE_SHIFT)
# include/linux/skbuff.h: SKB_DATA_ALIGN(sizeof(struct sk_buff)) and
# SKB_DATA_ALIGN(sizeof(struct skb_shared_info)) on x86-64 (64-byte cache lines)
SKB_DATA_ALIGN_SK_BUFF = 256
SKB_DATA_ALIGN_SHINFO = 320
# include/net/sock.h: TCP_SKB_MIN_TRUESIZE, SOCK_MIN_SNDBUF, SOCK_MIN_RCVBUF
TCP_SKB_MIN_TRUESIZE = 2048 + SKB_DATA_ALIGN_SK_BUFF
SOCK_MIN_SNDBUF = TCP_SKB_MIN_TRUESIZE * 2
SOCK_MIN_RCVBUF = TCP_SKB_MIN_TRUESIZE
# include/net/sock.h: sk_userlocks bits set by SO_SNDBUF / SO_RCVBUF
SOCK_SNDBUF_LOCK = 1
SOCK_RCVBUF_LOCK = 2


def sk_mem_pages(amt: int) -> int:
    """include/net/sock.h: sk_mem_pages() - bytes to whole pages, rounding up."""
    return (amt + PAGE_SIZE - 1) >> PAGE_SHIFT


# --- per-group socket state --------------------------------------------------------------

@dataclass(eq=False)
class MemcgSock:
    """The socket fields of struct mem_cgroup (6.18: tcpmem_active, tcpmem_pressure).

    Under semantics="3.8" the same object stands for the group's struct cg_proto:
    `active` is MEMCG_SOCK_ACTIVE, `activated` MEMCG_SOCK_ACTIVATED, `pressure` the
    cg_proto's memory_pressure and `sysctl_mem` its copy of tcp_mem.
    """

    active: bool = False
    pressure: int = 0
    activated: bool = False  # 3.8: the static key was taken for this group
    sysctl_mem: list = field(default_factory=list)  # 3.8: per-group tcp_mem (pages)
    nr_sockets: int = 0  # sockets holding a css reference (sk->sk_memcg)
    sock_pages: int = 0  # v2: MEMCG_SOCK, the pages the group's sockets have charged


class Proto:
    """struct proto for TCP (tcp_prot): the protocol's global memory state.

    memory_allocated counts pages; each CPU keeps up to SK_MEMORY_PCPU_RESERVE pages
    of it (per_cpu_fw_alloc) before they reach the global counter, which is what the
    tcp_mem thresholds are compared with and what /proc/net/sockstat prints.
    """

    def __init__(self, cpus: int, sysctl_mem: list[int]):
        self.memory_allocated = 0  # tcp_memory_allocated (pages)
        self.per_cpu_fw_alloc = [0] * cpus  # tcp_memory_per_cpu_fw_alloc
        self.sockets_allocated = 0  # tcp_sockets_allocated
        self.memory_pressure = 0  # tcp_memory_pressure: 0, or the jiffies it started
        self.sysctl_mem = sysctl_mem  # sysctl_tcp_mem[3] (pages)


class Net:
    """The network state of the simulated machine: init_net's TCP sysctls, tcp_prot,
    the socket static key and the per-group socket state.

    The protocols fill in their part at boot (net/ipv4/af_inet.c: inet_init() ->
    tcp_init()).  `mib` holds the TcpExt counters the model moves (names as in
    /proc/net/netstat).
    """

    def __init__(self, sys: System):
        self.sys = sys
        self.semantics = getattr(sys, "semantics", "6.18")
        # mm/memcontrol.c: memcg_sockets_enabled_key (4.5+); 3.8's tcp_memcontrol.c
        # called it memcg_socket_limit_enabled
        self.memcg_sockets_enabled_key = StaticKey(
            "memcg_socket_limit_enabled" if self.semantics == "3.8" else "memcg_sockets_enabled_key")
        keys = getattr(sys, "static_keys", None)
        if isinstance(keys, dict):
            keys[self.memcg_sockets_enabled_key.name] = self.memcg_sockets_enabled_key
        self.memcg_sock: dict = {}  # MemCgroup -> MemcgSock
        self.mib: dict[str, int] = {}
        self.sockets: list = []  # every open struct sock (tcp.TcpSock)
        self.last_ino = 0  # get_next_ino(): the number of the last socket made
        self.connections: list = []  # the connecting ends of open connections, in order made
        self.in_rx = False  # the loopback softirq is running (its packets: sched.NET_RX)
        self.tcp_timer_us = None  # TCP's clock while a TCP timer runs (tcp.tcp_clock_us)

    def mib_inc(self, name: str, n: int = 1) -> None:
        """NET_INC_STATS()/NET_ADD_STATS() of a TcpExt counter."""
        self.mib[name] = self.mib.get(name, 0) + n

    def state(self, memcg: MemCgroup) -> MemcgSock:
        st = self.memcg_sock.get(memcg)
        if st is None:
            st = self.memcg_sock[memcg] = MemcgSock()
        return st


# --- the memory cgroup's socket hooks (mm/memcontrol.c, mm/memcontrol-v1.c) ------------

def memcg_update_tcp_max(sys: System, memcg: MemCgroup, nr_pages: int) -> int:
    """A write of memory.kmem.tcp.limit_in_bytes (memcg_update_tcp_max, 6.18).

    page_counter_set_max() first (-EBUSY when usage is already above); then, on the
    group's first successful write of any value, -1 included, the static key gets a
    reference and the group's sockets start being accounted (tcpmem_active).  Under
    semantics="3.8" this is tcp_update_limit(): writing the unlimited value switches
    accounting off for sockets made afterwards, any other value switches it on, and
    only the first such write takes the static key.
    """
    net = sys.net
    counter: PageCounter = memcg.tcpmem
    if net.semantics == "3.8":
        nr_pages = min(nr_pages, PAGE_COUNTER_MAX)
        ret = counter.set_max(nr_pages)
        if ret:
            return ret
        st = net.state(memcg)
        # tcp_update_limit(): sysctl_mem[i] = min(val, sysctl_tcp_mem[i]) in pages
        st.sysctl_mem = [min(nr_pages, m) for m in net.tcp_prot.sysctl_mem]
        if nr_pages == PAGE_COUNTER_MAX:
            st.active = False
        else:
            if not st.activated:
                st.activated = True
                net.memcg_sockets_enabled_key.static_key_slow_inc()
            st.active = True
        return 0
    ret = counter.set_max(nr_pages)
    if ret:
        return ret
    st = net.state(memcg)
    if not st.active:
        # The key is taken before the flag goes up, so no socket is associated with a
        # group before the accounting hooks run (mm/memcontrol-v1.c).
        net.memcg_sockets_enabled_key.static_key_slow_inc()
        st.active = True
    return 0


def memcg_sock_free(sys: System, memcg: MemCgroup) -> None:
    """mem_cgroup_css_free() (6.18) / tcp_destroy_cgroup() (3.8): an accounting group
    gives its static key reference back when it is freed."""
    net = getattr(sys, "net", None)
    if net is None:
        return
    st = net.memcg_sock.pop(memcg, None)
    if sys.cgroup_dfl:
        # mm/memcontrol.c: mem_cgroup_css_free() - on v2 every group held a reference
        net.memcg_sockets_enabled_key.static_key_slow_dec()
        return
    if st is None:
        return
    if (st.activated if net.semantics == "3.8" else st.active):
        net.memcg_sockets_enabled_key.static_key_slow_dec()


def memcg_has_sockets(sys: System, memcg: MemCgroup) -> bool:
    """Sockets hold a css reference: a dying group with open sockets is not freed."""
    net = getattr(sys, "net", None)
    if net is None:
        return False
    st = net.memcg_sock.get(memcg)
    return bool(st and (st.nr_sockets or st.sock_pages or memcg.tcpmem.usage))


def memcg_sockets_online(sys: System, memcg: MemCgroup) -> None:
    """mem_cgroup_css_alloc() on v2: every new group takes a reference on
    memcg_sockets_enabled_key (unless cgroup.memory=nosocket): its sockets are accounted
    from the start, with no limit file to write."""
    if sys.cgroup_dfl and memcg.parent is not None:
        sys.net.memcg_sockets_enabled_key.static_key_slow_inc()


def memcg_sock_pages(sys: System, memcg: MemCgroup) -> int:
    """memcg_page_state(memcg, MEMCG_SOCK): the socket pages of the group's subtree (v2)."""
    net = getattr(sys, "net", None)
    if net is None:
        return 0
    return sum(st.sock_pages for m in memcg.subtree() if (st := net.memcg_sock.get(m)))


def _sk_alloc_memcg(net: Net, sk, memcg: MemCgroup) -> None:
    if memcg.is_root() or not memcg.online:
        return  # mem_cgroup_is_root(), or css_tryget() of a dying group failed
    st = net.memcg_sock.get(memcg)
    if net.sys.cgroup_dfl:
        st = net.state(memcg)  # v2: every group accounts its sockets
    elif st is None or not st.active:
        return  # v1: !memcg1_tcpmem_active(memcg); 3.8: !memcg_proto_active()
    sk.sk_memcg = memcg
    st.nr_sockets += 1


def mem_cgroup_sk_alloc(net: Net, sk, task) -> None:
    """mem_cgroup_sk_alloc() (sock_update_memcg() in 3.8): a new socket belongs to its
    creator's group if that group accounts sockets.  Sockets made before the group's
    first tcp limit write stay unaccounted for good.  Costs nothing while the static
    key is off."""
    key = net.memcg_sockets_enabled_key
    if key.enabled:  # static_branch_unlikely(&memcg_sockets_enabled_key)
        key.hits += 1
        _sk_alloc_memcg(net, sk, task.memcg)


def mem_cgroup_sk_free(net: Net, sk) -> None:
    """mem_cgroup_sk_free(): the socket's css reference goes."""
    memcg = sk.sk_memcg
    if memcg is None:
        return
    st = net.memcg_sock.get(memcg)
    if st is not None:
        st.nr_sockets -= 1
    sk.sk_memcg = None
    if not memcg.online:
        memcontrol.maybe_free_dying(net.sys, memcg)


def mem_cgroup_sk_enabled(sk) -> bool:
    """mem_cgroup_sk_enabled(): `mem_cgroup_sockets_enabled && sk->sk_memcg`; the
    static branch is tested first, so an unaccounted machine pays nothing."""
    key = sk.net.memcg_sockets_enabled_key
    if not key.enabled:  # static_branch_unlikely(): off, the test is jumped over
        return False
    key.hits += 1
    return sk.sk_memcg is not None


def memcg1_charge_skmem(net: Net, memcg: MemCgroup, nr_pages: int, nofail: bool = False) -> bool:
    """memcg1_charge_skmem() (6.18): try the tcpmem counter and every ancestor's.

    Success clears the group's socket pressure.  Failure sets it and, unless the caller
    insists (__GFP_NOFAIL), charges nothing and returns False.  The v1 tcpmem counter
    does not track failcnt in 6.18 (page_counter_init(&memcg->tcpmem, ..., false)), so
    memory.kmem.tcp.failcnt stays 0.
    """
    st = net.state(memcg)
    if memcg.tcpmem.try_charge(nr_pages) is None:
        st.pressure = 0
        return True
    st.pressure = 1
    if nofail:
        memcg.tcpmem.charge(nr_pages)
        return True
    return False


def mem_cgroup_sk_charge(sk, nr_pages: int, nofail: bool = False) -> bool:
    """mem_cgroup_sk_charge(): memcg1_charge_skmem() on v1; on v2 the group's memory
    counter itself (try_charge_memcg with gfp_memcg_charge(): GFP_KERNEL in a task, which
    may reclaim and OOM-kill, GFP_NOWAIT in the receive softirq, which may not), and
    MEMCG_SOCK counts the pages."""
    net = sk.net
    if not net.sys.cgroup_dfl:
        return memcg1_charge_skmem(net, sk.sk_memcg, nr_pages, nofail)
    sys, memcg = net.sys, sk.sk_memcg
    if nofail:
        # __GFP_NOFAIL: try_charge_memcg()'s force path
        memcg.memory.charge(nr_pages)
        memcg.memsw.charge(nr_pages)
    elif net.in_rx:
        # GFP_NOWAIT: no reclaim (!gfpflags_allow_blocking: nomem, no max event)
        if memcg.memsw.try_charge(nr_pages) is not None:
            return False
        if memcg.memory.try_charge(nr_pages) is not None:
            memcg.memsw.uncharge(nr_pages)
            return False
    elif memcontrol.try_charge_memcg(sys, memcg, nr_pages, None):
        return False
    net.state(memcg).sock_pages += nr_pages
    return True


def mem_cgroup_sk_uncharge(sk, nr_pages: int) -> None:
    """mem_cgroup_sk_uncharge(): v1 memcg1_uncharge_skmem() (page_counter_uncharge); v2
    MEMCG_SOCK down and the pages to this CPU's stock (refill_stock)."""
    if sk.net.sys.cgroup_dfl:
        sys, memcg = sk.net.sys, sk.sk_memcg
        sk.net.state(memcg).sock_pages -= nr_pages
        if memcg.online:
            memcontrol.refill_stock(sys, memcg, nr_pages, sys.cpu)
        else:
            memcg.memory.uncharge(nr_pages)
            memcg.memsw.uncharge(nr_pages)
            memcontrol.maybe_free_dying(sys, memcg)
        return
    sk.sk_memcg.tcpmem.uncharge(nr_pages)
    if not sk.sk_memcg.online:
        memcontrol.maybe_free_dying(sk.net.sys, sk.sk_memcg)


def mem_cgroup_under_socket_pressure(net: Net, memcg: MemCgroup) -> bool:
    """v1: the group's own tcpmem_pressure flag (ancestors are not looked at)."""
    st = net.memcg_sock.get(memcg)
    return bool(st and st.pressure)


# --- 3.8: struct cg_proto (net/ipv4/tcp_memcontrol.c, include/net/sock.h) --------------

UNDER_LIMIT, SOFT_LIMIT, OVER_LIMIT = 0, 1, 2  # include/net/sock.h (3.3 - 4.4)


def memcg_memory_allocated_add(sk, amt: int) -> tuple[int, int]:
    """3.8 memcg_memory_allocated_add(): res_counter_charge_nofail() of the group's TCP
    counter and its ancestors' (failcnt counted at every level that goes over; usage
    always added), plus the global counter.  Returns (the group's usage in pages,
    parent_status)."""
    status = UNDER_LIMIT
    for c in sk.sk_memcg.tcpmem.ancestors():
        if c.usage + amt > c.max:
            c.failcnt += 1
            status = OVER_LIMIT
        c.usage += amt
        if c.usage > c.watermark:
            c.watermark = c.usage
    proto_memory_allocated_add(sk, amt)
    return sk.sk_memcg.tcpmem.usage, status


def memcg_memory_allocated_sub(sk, amt: int) -> None:
    """3.8 memcg_memory_allocated_sub(): res_counter_uncharge() and the global counter."""
    sk.sk_memcg.tcpmem.uncharge(amt)
    proto_memory_allocated_sub(sk, amt)
    if not sk.sk_memcg.online:
        memcontrol.maybe_free_dying(sk.net.sys, sk.sk_memcg)


def _cg_proto_of(sk) -> MemcgSock | None:
    """3.8: `mem_cgroup_sockets_enabled && sk->sk_cgrp`, the socket's cg_proto."""
    key = sk.net.memcg_sockets_enabled_key
    if not key.enabled:  # static_branch_unlikely(): off, the lookup is jumped over
        return None
    key.hits += 1
    return sk.net.memcg_sock.get(sk.sk_memcg) if sk.sk_memcg is not None else None


# --- the protocol's memory_allocated (include/net/sock.h) ------------------------------

def proto_memory_pcpu_drain(proto: Proto, cpu: int) -> None:
    """proto_memory_pcpu_drain(): move a CPU's reserve into the global counter."""
    proto.memory_allocated += proto.per_cpu_fw_alloc[cpu]
    proto.per_cpu_fw_alloc[cpu] = 0


def proto_memory_allocated_add(sk, val: int) -> None:
    proto = sk.net.tcp_prot
    cpu = sk.cpu % len(proto.per_cpu_fw_alloc)
    proto.per_cpu_fw_alloc[cpu] += val
    if proto.per_cpu_fw_alloc[cpu] >= SK_MEMORY_PCPU_RESERVE:
        proto_memory_pcpu_drain(proto, cpu)


def proto_memory_allocated_sub(sk, val: int) -> None:
    proto = sk.net.tcp_prot
    cpu = sk.cpu % len(proto.per_cpu_fw_alloc)
    proto.per_cpu_fw_alloc[cpu] -= val
    if proto.per_cpu_fw_alloc[cpu] <= -SK_MEMORY_PCPU_RESERVE:
        proto_memory_pcpu_drain(proto, cpu)


def sk_memory_allocated_add(sk, amt: int) -> None:
    """sk_memory_allocated_add(): this CPU's reserve, drained past SK_MEMORY_PCPU_RESERVE."""
    proto_memory_allocated_add(sk, amt)


def sk_memory_allocated_sub(sk, amt: int) -> None:
    proto_memory_allocated_sub(sk, amt)


def sk_memory_allocated(sk) -> int:
    """sk_memory_allocated(): the global counter (per-CPU reserves not included).

    3.8: a socket of an accounting group sees its group's usage instead."""
    if sk.net.semantics == "3.8" and _cg_proto_of(sk) is not None:
        return sk.sk_memcg.tcpmem.usage
    return sk.net.tcp_prot.memory_allocated


def sk_prot_mem_limits(sk, index: int) -> int:
    """sk_prot_mem_limits(): tcp_mem[index] (3.8: the group's copy for its sockets)."""
    if sk.net.semantics == "3.8":
        cg = _cg_proto_of(sk)
        if cg is not None and cg.sysctl_mem:
            return cg.sysctl_mem[index]
    return sk.net.tcp_prot.sysctl_mem[index]


# --- memory pressure ---------------------------------------------------------------------

def tcp_enter_memory_pressure(sk) -> None:
    """tcp_enter_memory_pressure(): the global flag records when pressure began."""
    proto = sk.net.tcp_prot
    if proto.memory_pressure:
        return
    proto.memory_pressure = max(1, sk.net.sys.clock.now)
    sk.net.mib_inc("TCPMemoryPressures")


def tcp_leave_memory_pressure(sk) -> None:
    """tcp_leave_memory_pressure(): clear the global flag, account its duration."""
    proto = sk.net.tcp_prot
    if not proto.memory_pressure:
        return
    sk.net.mib_inc("TCPMemoryPressuresChrono", max(0, sk.net.sys.clock.now - proto.memory_pressure))
    proto.memory_pressure = 0


def sk_enter_memory_pressure(sk) -> None:
    """sk_enter_memory_pressure(); 3.8 also raised the flag of the socket's cg_proto and
    every ancestor's (memcg_memory_pressure_enter... via cg_proto->enter_memory_pressure)."""
    if sk.net.semantics == "3.8" and _cg_proto_of(sk) is not None:
        for m in sk.sk_memcg.ancestors():
            st = sk.net.memcg_sock.get(m)
            if st is not None and st.active:
                st.pressure = 1
    tcp_enter_memory_pressure(sk)


def sk_leave_memory_pressure(sk) -> None:
    """sk_leave_memory_pressure(): the global flag (3.8: and the cg_proto chain's)."""
    if sk.net.semantics == "3.8" and _cg_proto_of(sk) is not None:
        for m in sk.sk_memcg.ancestors():
            st = sk.net.memcg_sock.get(m)
            if st is not None:
                st.pressure = 0
    tcp_leave_memory_pressure(sk)


def sk_under_global_memory_pressure(sk) -> bool:
    return bool(sk.net.tcp_prot.memory_pressure)


def sk_under_memory_pressure(sk) -> bool:
    """sk_under_memory_pressure() / tcp_under_memory_pressure().

    6.18: the group's socket pressure or the global flag.  3.8: a socket of an
    accounting group looks only at its cg_proto's flag.
    """
    if sk.net.semantics == "3.8":
        cg = _cg_proto_of(sk)
        if cg is not None:
            return bool(cg.pressure)
        return bool(sk.net.tcp_prot.memory_pressure)
    if mem_cgroup_sk_enabled(sk) and mem_cgroup_under_socket_pressure(sk.net, sk.sk_memcg):
        return True
    return bool(sk.net.tcp_prot.memory_pressure)


tcp_under_memory_pressure = sk_under_memory_pressure


# --- scheduling memory for a socket (net/core/sock.c) ----------------------------------

def sk_get_wmem0(sk) -> int:
    return sk.net.tcp_wmem[0]


def sk_get_rmem0(sk) -> int:
    return sk.net.tcp_rmem[0]


def sk_stream_moderate_sndbuf(sk) -> None:
    """sk_stream_moderate_sndbuf(): under memory pressure the send buffer shrinks to half
    of what is queued (at least SOCK_MIN_SNDBUF), so the writer blocks rather than fails."""
    if sk.sk_userlocks & SOCK_SNDBUF_LOCK:
        return
    val = min(sk.sk_sndbuf, sk.sk_wmem_queued >> 1)
    sk.sk_sndbuf = max(val, SOCK_MIN_SNDBUF)


def __sk_mem_raise_allocated(sk, size: int, amt: int, kind: int) -> bool:
    """__sk_mem_raise_allocated() (6.18): may the socket have amt more pages?

    The group is charged first: a refused group charge goes straight to
    suppress_allocation (no minimum-buffer guarantee for a group over its limit).  Then
    the global memory_allocated against tcp_mem: at or below tcp_mem[0] pressure ends;
    above tcp_mem[1] it begins; above tcp_mem[2] allocations are refused; in between a
    socket below tcp_wmem[0]/tcp_rmem[0] is always allowed, and under global pressure a
    socket using no more than its share of tcp_mem[2] is too.  A refused send on a
    stream socket shrinks its send buffer and still succeeds (force-charging the group)
    when the writer has reached its send buffer: the writer will block, not fail.
    """
    if sk.net.semantics == "3.8":
        return _sk_mem_schedule_38(sk, size, amt, kind)
    memcg_enabled = charged = False
    allocated = 0
    if mem_cgroup_sk_enabled(sk):
        memcg_enabled = True
        charged = mem_cgroup_sk_charge(sk, amt)
        if not charged:
            sk_memory_allocated_add(sk, amt)
            allocated = sk_memory_allocated(sk)
            return _suppress_allocation(sk, size, amt, kind, memcg_enabled, charged)
    sk_memory_allocated_add(sk, amt)
    allocated = sk_memory_allocated(sk)
    if allocated <= sk_prot_mem_limits(sk, 0):
        sk_leave_memory_pressure(sk)
        return True
    if allocated > sk_prot_mem_limits(sk, 1):
        sk_enter_memory_pressure(sk)
    if allocated > sk_prot_mem_limits(sk, 2):
        return _suppress_allocation(sk, size, amt, kind, memcg_enabled, charged)
    # Guarantee minimum buffer size under pressure (RFC 7323 features keep working).
    if kind == SK_MEM_RECV:
        if sk.sk_rmem_alloc < sk_get_rmem0(sk):
            return True
    elif sk.sk_wmem_queued < sk_get_wmem0(sk):
        return True
    if not sk_under_global_memory_pressure(sk):
        return True
    # Fair share under global pressure: below-average sockets may still grow.
    alloc = max(1, sk.net.tcp_prot.sockets_allocated)
    if sk_prot_mem_limits(sk, 2) > alloc * sk_mem_pages(sk.sk_wmem_queued + sk.sk_rmem_alloc
                                                         + sk.sk_forward_alloc):
        return True
    return _suppress_allocation(sk, size, amt, kind, memcg_enabled, charged)


def _suppress_allocation(sk, size: int, amt: int, kind: int, memcg_enabled: bool,
                         charged: bool) -> bool:
    if kind == SK_MEM_SEND:
        sk_stream_moderate_sndbuf(sk)
        # Fail only if socket is _under_ its sndbuf: here it cannot block, so it fails.
        if sk.sk_wmem_queued + size >= sk.sk_sndbuf:
            if memcg_enabled and not charged:
                mem_cgroup_sk_charge(sk, amt, nofail=True)  # __GFP_NOFAIL
            return True
    sk_memory_allocated_sub(sk, amt)
    if charged:
        mem_cgroup_sk_uncharge(sk, amt)
    return False


def _sk_mem_schedule_38(sk, size: int, amt: int, kind: int) -> bool:
    """__sk_mem_schedule() as in 3.8 (net/core/sock.c with struct cg_proto)."""
    cg = _cg_proto_of(sk)
    if cg is not None:
        allocated, parent_status = memcg_memory_allocated_add(sk, amt)
    else:
        sk_memory_allocated_add(sk, amt)
        allocated, parent_status = sk.net.tcp_prot.memory_allocated, UNDER_LIMIT
    if parent_status == UNDER_LIMIT and allocated <= sk_prot_mem_limits(sk, 0):
        sk_leave_memory_pressure(sk)
        return True
    if parent_status > SOFT_LIMIT or allocated > sk_prot_mem_limits(sk, 1):
        sk_enter_memory_pressure(sk)
    if parent_status != OVER_LIMIT and allocated <= sk_prot_mem_limits(sk, 2):
        if kind == SK_MEM_RECV:
            if sk.sk_rmem_alloc < sk_get_rmem0(sk):
                return True
        elif sk.sk_wmem_queued < sk_get_wmem0(sk):
            return True
        if not sk_under_memory_pressure(sk):
            return True
        alloc = max(1, sk.net.tcp_prot.sockets_allocated)
        if sk_prot_mem_limits(sk, 2) > alloc * sk_mem_pages(
                sk.sk_wmem_queued + sk.sk_rmem_alloc + sk.sk_forward_alloc):
            return True
    # suppress_allocation:
    if kind == SK_MEM_SEND:
        sk_stream_moderate_sndbuf(sk)
        if sk.sk_wmem_queued + size >= sk.sk_sndbuf:
            return True
    if cg is not None:
        memcg_memory_allocated_sub(sk, amt)
    else:
        sk_memory_allocated_sub(sk, amt)
    return False


def __sk_mem_schedule(sk, size: int, kind: int) -> bool:
    """__sk_mem_schedule(): raise sk_forward_alloc by whole pages for size bytes."""
    amt = sk_mem_pages(size)
    sk.sk_forward_alloc += amt << PAGE_SHIFT
    if not __sk_mem_raise_allocated(sk, size, amt, kind):
        sk.sk_forward_alloc -= amt << PAGE_SHIFT
        return False
    return True


def sk_wmem_schedule(sk, size: int) -> bool:
    """sk_wmem_schedule(): is there forward allocation for size more bytes to send?"""
    delta = size - sk.sk_forward_alloc
    return delta <= 0 or __sk_mem_schedule(sk, delta, SK_MEM_SEND)


def sk_rmem_schedule(sk, size: int) -> bool:
    """sk_rmem_schedule(): the same for a received skb's truesize."""
    delta = size - sk.sk_forward_alloc
    return delta <= 0 or __sk_mem_schedule(sk, delta, SK_MEM_RECV)


def sk_forced_mem_schedule(sk, size: int) -> None:
    """sk_forced_mem_schedule() (net/ipv4/tcp_output.c): take the pages whatever the
    limits say (the first skb of a write queue, an skb into an empty receive queue)."""
    delta = size - sk.sk_forward_alloc
    if delta <= 0:
        return
    amt = sk_mem_pages(delta)
    sk.sk_forward_alloc += amt << PAGE_SHIFT
    if sk.net.semantics == "3.8":
        if _cg_proto_of(sk) is not None:
            memcg_memory_allocated_add(sk, amt)
        else:
            sk_memory_allocated_add(sk, amt)
        return
    sk_memory_allocated_add(sk, amt)
    if mem_cgroup_sk_enabled(sk):
        mem_cgroup_sk_charge(sk, amt, nofail=True)


def sk_mem_charge(sk, size: int) -> None:
    """sk_mem_charge(): size bytes of the forward allocation are used."""
    sk.sk_forward_alloc -= size


def sk_mem_uncharge(sk, size: int) -> None:
    """sk_mem_uncharge(): size bytes come back, and whole pages are reclaimed at once."""
    sk.sk_forward_alloc += size
    sk_mem_reclaim(sk)


def sk_mem_reclaim(sk) -> None:
    """sk_mem_reclaim() (6.0+): keep less than a page of forward allocation."""
    if sk.sk_forward_alloc >= PAGE_SIZE:
        __sk_mem_reclaim(sk, sk.sk_forward_alloc)


def __sk_mem_reclaim(sk, amount: int) -> None:
    amount >>= PAGE_SHIFT
    sk.sk_forward_alloc -= amount << PAGE_SHIFT
    __sk_mem_reduce_allocated(sk, amount)


def __sk_mem_reduce_allocated(sk, amount: int) -> None:
    """__sk_mem_reduce_allocated(): give pages back to the protocol (and the group).

    Global pressure ends once memory_allocated is below tcp_mem[0] again: the
    hysteresis between entering above tcp_mem[1] and leaving below tcp_mem[0].
    """
    if not amount:
        return
    if sk.net.semantics == "3.8":
        if _cg_proto_of(sk) is not None:
            memcg_memory_allocated_sub(sk, amount)
        else:
            sk_memory_allocated_sub(sk, amount)
        if sk_under_memory_pressure(sk) and sk_memory_allocated(sk) < sk_prot_mem_limits(sk, 0):
            sk_leave_memory_pressure(sk)
        return
    sk_memory_allocated_sub(sk, amount)
    if mem_cgroup_sk_enabled(sk):
        mem_cgroup_sk_uncharge(sk, amount)
    if sk_under_global_memory_pressure(sk) and sk_memory_allocated(sk) < sk_prot_mem_limits(sk, 0):
        sk_leave_memory_pressure(sk)
