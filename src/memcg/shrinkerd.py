"""memcg shrinkerd: the userspace shrinker and pressure sockets on a real memory cgroup.

For a memory group DIR (cgroup v1 or v2) and every group below it (found again on every tick),
the daemon serves, in a runtime directory RUN, for each group G (relative to DIR):

- RUN/G/shrinker.sock: the 2013 proposal's chunk protocol.  A client sends
  "register CHUNK_SIZE\\n" with an eventfd as SCM_RIGHTS, then "+N\\n" / "-N\\n" as its
  reclaimable chunks come and go ("?\\n" is answered "held N\\n").  The daemon writes N
  to the eventfd to ask for N chunks, takes them off the client's count, and never asks
  for more than the count.  A bad line is answered "error: ...\\n".  A "+N" is also a
  usage check of G and the groups above it (below).
- RUN/G/pressure.sock: systemd's memory pressure protocol.  A client writes a PSI-style
  trigger ("some 200000 2000000"), then reads one byte (POLLIN) each time G or one of
  its ancestors is under pressure, at most once per trigger window.

The pressure sources are the kernel's own (mm/memcontrol-v1.c): memory.pressure_level
at every level, registered "local" on each group so an event names the group whose
limit is reclaimed, and usage thresholds (memory.usage_in_bytes) just under each
limit.  A threshold's event can come late: memcg1_check_events looks at the thresholds
only every THRESHOLDS_EVENTS_TARGET (128) page events of a CPU, against a usage that
the per-CPU charge stock (MEMCG_CHARGE_BATCH, 64 pages, drained when another group
charges on that CPU) keeps ahead of the pages by a varying amount: with the threshold
alone a 1 MiB-chunk allocator was asked one chunk late in 5-14 of 38 requests (three
runs), even when it waited for the daemon before each chunk.  So a client's "+N"
(memory it has just allocated) is a usage check too, read when usage as last read plus
the bytes reported since reaches the high mark; it asks at a new crossing only (usage
was under the high mark since the last request).  On v2: PSI triggers on memory.pressure and changes of memory.events (both
polled for POLLPRI) and the headroom under memory.high / memory.max on the tick.  An
event in group A concerns the clients of A's subtree only.  How much to ask
of whom is memcg.mm.shrink_plan, the code the model's mempressure.shrinker uses.

One selector loop; every socket is nonblocking; a client is a small state record.
"""

from __future__ import annotations

import errno
import json
import os
import re
import select
import selectors
import signal
import socket
import stat
import struct
import sys
import time
from dataclasses import dataclass, field

from .mm.shrink_plan import (PAGE_SIZE, SETTLE, backoff_seconds, default_margin, level_shortfall,
                             over_high_mark, report_may_cross, request_settled, shrink_plan,
                             usage_shortfall, usage_thresholds)

__all__ = ["Daemon", "DaemonError", "parse_trigger", "serve"]

LEVELS = ("low", "medium", "critical")
# kernel/sched/psi.c: psi_trigger_create - window 500 ms .. 10 s, threshold <= window.
WINDOW_MIN_US = 500_000
WINDOW_MAX_US = 10_000_000

TICK = 0.05            # seconds between checks: new and vanished groups, limits, deferrals
MAX_LINE = 256         # longest request line
MAX_OUTBUF = 4096      # a client that does not read its replies is dropped past this
MAX_FDS = 4            # eventfds accepted with one message
EVENTFD_SANE = 1 << 62 # an eventfd counter above this could block our write: drop it
OOM_GRACE = 0.2        # an OOM the asked clients did not end in this time goes to the kernel
OOM_GUARD_PAUSE = 1.0  # then the guard stays off this long
SUN_PATH_MAX = 107     # include/uapi/linux/un.h: sun_path[108], NUL included
# cgroup v2: the daemon's own PSI triggers on each group's memory.pressure - a stall of
# 50 ms in a 500 ms window (the smallest window kernel/sched/psi.c accepts) for "some"
# (medium) and "full" (critical), as the vmpressure levels are used on v1.
V2_TRIGGERS = (("some", "some 50000 500000"), ("full", "full 50000 500000"))
PAGE_COUNTER_MAX = 1 << 60   # a limit at or above this is none ("max")


EVENT_PRI = 4   # an exceptional condition (EPOLLPRI): PSI triggers, kernfs notifications


class EpollLoop:
    """The selectors interface on epoll, plus EVENT_PRI.

    selectors has no way to wait for POLLPRI alone, and a nested epoll does not do:
    the outer readiness check polls the inner items, and psi_trigger_poll consumes its
    event as it reports it (kernel/sched/psi.c: cmpxchg(&t->event, 1, 0); fs/eventpoll.c
    __ep_eventpoll_poll), so the inner epoll would never see it."""

    def __init__(self):
        self._ep = select.epoll()
        self._keys: dict[int, selectors.SelectorKey] = {}

    @staticmethod
    def _fd(fileobj) -> int:
        return fileobj if isinstance(fileobj, int) else fileobj.fileno()

    @staticmethod
    def _mask(events: int) -> int:
        if events & EVENT_PRI:
            return select.EPOLLPRI
        return ((select.EPOLLIN if events & selectors.EVENT_READ else 0)
                | (select.EPOLLOUT if events & selectors.EVENT_WRITE else 0))

    def register(self, fileobj, events: int, data=None) -> selectors.SelectorKey:
        fd = self._fd(fileobj)
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._ep.register(fd, self._mask(events))
        self._keys[fd] = key
        return key

    def modify(self, fileobj, events: int, data=None) -> selectors.SelectorKey:
        fd = self._fd(fileobj)
        key = selectors.SelectorKey(fileobj, fd, events, data)
        self._ep.modify(fd, self._mask(events))
        self._keys[fd] = key
        return key

    def unregister(self, fileobj) -> None:
        fd = self._fd(fileobj)
        self._keys.pop(fd, None)
        try:
            self._ep.unregister(fd)
        except (OSError, ValueError):
            pass

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        try:
            ready = self._ep.poll(-1 if timeout is None else timeout, max(1, len(self._keys)))
        except InterruptedError:
            return []
        out = []
        for fd, ev in ready:
            key = self._keys.get(fd)
            if key is None:
                continue
            if key.events & EVENT_PRI:
                mask = EVENT_PRI if ev & (select.EPOLLPRI | select.EPOLLERR) else 0
            else:
                mask = ((selectors.EVENT_READ if ev & ~select.EPOLLOUT else 0)
                        | (selectors.EVENT_WRITE if ev & ~select.EPOLLIN else 0))
            if mask:
                out.append((key, mask))
        return out

    def close(self) -> None:
        self._keys.clear()
        self._ep.close()


class DaemonError(Exception):
    """A reason the daemon cannot start, in one line."""


def parse_trigger(text: str) -> tuple[str, int, int]:
    """A PSI trigger "some|full STALL_US WINDOW_US" as kernel/sched/psi.c accepts it."""
    m = re.fullmatch(r"(some|full) (\d{1,12}) (\d{1,12})", text.strip("\0\n "))
    if not m:
        raise ValueError("expected 'some|full STALL_US WINDOW_US'")
    kind, stall, window = m.group(1), int(m.group(2)), int(m.group(3))
    if not WINDOW_MIN_US <= window <= WINDOW_MAX_US or not 0 < stall <= window:
        raise ValueError(f"window must be {WINDOW_MIN_US}..{WINDOW_MAX_US} us and stall 1..window")
    return kind, stall, window


@dataclass(eq=False)
class ShrinkerClient:
    """One connection to a shrinker.sock."""
    sock: socket.socket
    group: "Group"
    pid: int
    efd: int = -1
    chunk_size: int = 0
    chunks: int = 0
    inbuf: bytes = b""
    outbuf: bytes = b""
    fds: list[int] = field(default_factory=list)
    strikes: int = 0
    backoff_until: float = 0.0


@dataclass(eq=False)
class PressureClient:
    """One connection to a pressure.sock."""
    sock: socket.socket
    group: "Group"
    pid: int
    trigger: tuple[str, int, int] | None = None
    inbuf: bytes = b""
    last_sent: float = -1e9
    deferred: bool = False
    psi_fd: int = -1       # v2: the client's own trigger on its group's memory.pressure


@dataclass(eq=False)
class Group:
    """A memory cgroup served: its directory, its runtime directory and registrations."""
    rel: str
    path: str
    run: str
    limit: int = -1
    listeners: dict[int, tuple[socket.socket, str]] = field(default_factory=dict)
    efds: dict[int, str] = field(default_factory=dict)   # eventfd -> "threshold" | level
    pri: dict[int, str] = field(default_factory=dict)    # v2: fd polled for POLLPRI -> "some" | "full" | "events"
    events_seen: dict[str, int] = field(default_factory=dict)   # v2: memory.events as last read
    shrinkers: list[ShrinkerClient] = field(default_factory=list)
    pressure: list[PressureClient] = field(default_factory=list)
    # requests in flight: [time, bytes, client, usage when asked, lowest usage read since]
    in_flight: list[list] = field(default_factory=list)
    asked_round: list[ShrinkerClient] = field(default_factory=list)   # asked at the last ask
    dropped: bool = True       # usage went under the high mark since the last ask
    last_ask: float = -1e9     # when the last request of a usage check was made
    usage_read: int = -1       # usage as last read, and the bytes reported ("+N") since
    reported: int = 0
    made_run: bool = False
    guard: bool = False        # the daemon set oom_kill_disable (it was 0)
    guard_off_until: float = 0.0
    oom_since: float = -1.0


def _read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read().split()[0])


def _quiet(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _peer_pid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[0]


def _eventfd_count(fd: int) -> int | None:
    """The counter of an eventfd we hold (fs/eventfd.c: eventfd_show_fdinfo), None if
    the descriptor is not an eventfd."""
    try:
        if os.readlink(f"/proc/self/fd/{fd}") != "anon_inode:[eventfd]":
            return None
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("eventfd-count:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        return None
    return None


class Daemon:
    """The selector loop over every group's sockets and cgroup eventfds."""

    def __init__(self, cgroup: str, run: str, margin: int | None = None,
                 log=None, json_log: bool = False, oom_guard: bool = False):
        self.root = os.path.abspath(cgroup)
        self.run = os.path.abspath(run)
        self.margin_opt = margin
        self.oom_guard = oom_guard
        self.log_file = log
        self.json_log = json_log
        self.sel = EpollLoop()
        self.groups: dict[str, Group] = {}
        self.stopping = False
        self.made_run = False
        self.pri_clients: dict[int, PressureClient] = {}
        if os.path.exists(os.path.join(self.root, "cgroup.controllers")):
            self.version = 2
            if not os.path.exists(os.path.join(self.root, "memory.current")):
                raise DaemonError(f"{self.root}: not a cgroup v2 group with the memory controller "
                                  "(no memory.current: enable +memory in the parent's cgroup.subtree_control)")
        else:
            self.version = 1
            if not os.path.exists(os.path.join(self.root, "memory.limit_in_bytes")):
                raise DaemonError(f"{self.root}: not a memory cgroup (no memory.limit_in_bytes "
                                  "or memory.current)")
            if not os.access(os.path.join(self.root, "cgroup.event_control"), os.W_OK):
                raise DaemonError(f"{self.root}/cgroup.event_control: not writable")
        self.marker = "memory.limit_in_bytes" if self.version == 1 else "memory.current"
        self.usage_file = "memory.usage_in_bytes" if self.version == 1 else "memory.current"

    # --- logging -------------------------------------------------------------------
    def log(self, what: str, **kw) -> None:
        """One line of what the daemon did, as text or JSON."""
        if self.log_file is None:
            return
        if self.json_log:
            line = json.dumps({"t": round(time.time(), 6), "what": what, **kw})
        else:
            line = what + " " + " ".join(f"{k}={v}" for k, v in kw.items())
        print(line, file=self.log_file, flush=True)

    # --- groups --------------------------------------------------------------------
    def scan(self) -> None:
        """Serve new groups below DIR, drop vanished ones, follow limit changes."""
        seen = set()
        for here, dirs, names in os.walk(self.root):
            if self.marker not in names:
                dirs[:] = []
                continue
            rel = os.path.relpath(here, self.root)
            rel = "" if rel == "." else rel
            seen.add(rel)
            if rel not in self.groups:
                self.add_group(rel, here)
        for rel in sorted(set(self.groups) - seen, key=lambda r: -r.count("/")):
            self.drop_group(self.groups[rel], "vanished")
        for g in list(self.groups.values()):
            self.check_limit(g)

    def add_group(self, rel: str, path: str) -> None:
        """Runtime directory and both sockets for a group, owned like its directory."""
        run = os.path.join(self.run, rel) if rel else self.run
        g = Group(rel, path, run)
        try:
            st = os.stat(path)
            if not os.path.isdir(run):
                os.mkdir(run, 0o755)
                g.made_run = True
            for name in ("shrinker.sock", "pressure.sock"):
                sp = os.path.join(run, name)
                if len(sp) > SUN_PATH_MAX:
                    raise OSError(errno.ENAMETOOLONG, "socket path too long", sp)
                if os.path.exists(sp):
                    os.unlink(sp)
                ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
                                   | socket.SOCK_CLOEXEC)
                ls.bind(sp)
                # Who may connect follows who owns the group directory.
                os.chown(sp, st.st_uid, st.st_gid)
                os.chmod(sp, 0o660 if st.st_mode & stat.S_IWGRP else 0o600)
                ls.listen(64)
                g.listeners[ls.fileno()] = (ls, name)
                self.sel.register(ls, selectors.EVENT_READ, ("listen", g, name))
        except OSError as e:
            self.log("skip-group", group=rel, error=str(e))
            self.release_group(g)
            return
        self.groups[rel] = g
        self.register_levels(g)
        self.log("group", group=rel)

    def register_event(self, g: Group, file: str, args: str, kind: str) -> None:
        """One eventfd through g's cgroup.event_control (mm/memcontrol-v1.c)."""
        efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            cfd = os.open(os.path.join(g.path, file), os.O_RDONLY | os.O_CLOEXEC)
            try:
                with open(os.path.join(g.path, "cgroup.event_control"), "w") as f:
                    f.write(f"{efd} {cfd} {args}")
            finally:
                os.close(cfd)
        except OSError as e:
            os.close(efd)
            self.log("register-failed", group=g.rel, file=file, args=args, error=str(e))
            return
        g.efds[efd] = kind
        self.sel.register(efd, selectors.EVENT_READ, ("event", g, kind))

    def register_pri(self, g: Group, file: str, trigger: str | None, kind: str) -> None:
        """cgroup v2: a file polled for POLLPRI - memory.pressure with a PSI trigger
        written to it (kernel/sched/psi.c psi_trigger_create; psi_trigger_poll raises
        EPOLLPRI when the stall passes the threshold in the window), or memory.events,
        whose changes kernfs announces as EPOLLPRI (cgroup_file_notify ->
        kernfs_notify; kernfs_generic_poll)."""
        try:
            fd = os.open(os.path.join(g.path, file),
                         (os.O_RDWR if trigger else os.O_RDONLY) | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            self.log("register-failed", group=g.rel, file=file, error=str(e))
            return
        try:
            if trigger:
                try:
                    os.write(fd, trigger.encode() + b"\0")
                except OSError as e:
                    # kernel/sched/psi.c psi_trigger_create: without CAP_SYS_RESOURCE a
                    # trigger's window must be a multiple of 2 s; the daemon's own
                    # triggers fall back to one 2 s window.
                    if e.errno != errno.EINVAL or kind == "client":
                        raise
                    f = trigger.split()
                    trigger = f"{f[0]} {f[1]} 2000000"
                    os.write(fd, trigger.encode() + b"\0")
            else:
                self.read_events(g, fd)   # reading arms kernfs' event counter
            self.sel.register(fd, EVENT_PRI, ("pri", g, kind))
        except OSError as e:
            os.close(fd)
            self.log("register-failed", group=g.rel, file=file, args=trigger, error=str(e))
            return
        g.pri[fd] = kind

    def read_events(self, g: Group, fd: int) -> dict[str, int]:
        """memory.events now; returns what grew since the last read."""
        os.lseek(fd, 0, os.SEEK_SET)
        now = {}
        for line in os.read(fd, 4096).decode(errors="replace").splitlines():
            f = line.split()
            if len(f) == 2 and f[1].isdigit():
                now[f[0]] = int(f[1])
        grew = {k: v - g.events_seen.get(k, 0) for k, v in now.items() if v > g.events_seen.get(k, 0)}
        g.events_seen = now
        return grew

    def register_levels(self, g: Group) -> None:
        if self.version == 2:
            for kind, trigger in V2_TRIGGERS:
                self.register_pri(g, "memory.pressure", trigger, kind)
            self.register_pri(g, "memory.events", None, "events")
            return
        # "local": an event names the group whose reclaim it is (mm/vmpressure.c
        # vmpressure_event, VMPRESSURE_LOCAL), so it goes to that group's subtree only.
        for level in LEVELS:
            self.register_event(g, "memory.pressure_level", f"{level},local", level)
        # mm/memcontrol-v1.c: mem_cgroup_oom_register_event - signalled on entering OOM.
        self.register_event(g, "memory.oom_control", "", "oom")

    def margin(self, limit: int) -> int:
        if self.margin_opt is not None:
            return self.margin_opt
        # A quarter of the limit: room for the allocator to run on while the request
        # travels (usage thresholds are checked every 128 page events, and the client
        # thread must wake); with an eighth a 1-MiB-chunk allocator came within 1 MiB.
        return default_margin(limit)

    def check_limit(self, g: Group) -> None:
        """Usage thresholds at limit - margin and limit - margin/2, moved with the limit."""
        if self.version == 2:
            return self.check_limit_v2(g)
        try:
            limit = _read_int(os.path.join(g.path, "memory.limit_in_bytes"))
        except (OSError, ValueError):
            return
        if limit == g.limit:
            return
        g.limit = limit
        for efd, kind in list(g.efds.items()):
            if kind == "threshold":
                self.close_event(g, efd)
        if limit >= 1 << 60:   # unlimited (PAGE_COUNTER_MAX): ancestors' limits apply
            return
        m = self.margin(limit)
        for t in usage_thresholds(limit, m):
            self.register_event(g, "memory.usage_in_bytes", str(t), "threshold")
        self.log("limit", group=g.rel, limit=limit, high=limit - m)

    def check_limit_v2(self, g: Group) -> None:
        """v2: the group's limit is the lower of memory.high (reclaim and throttling
        start there, mm/memcontrol.c mem_cgroup_handle_over_high) and memory.max."""
        limit = PAGE_COUNTER_MAX
        for name in ("memory.high", "memory.max"):
            text = _quiet(os.path.join(g.path, name)).strip()
            if text.isdigit():
                limit = min(limit, int(text))
        if limit != g.limit:
            g.limit = limit
            if limit < PAGE_COUNTER_MAX:
                self.log("limit", group=g.rel, limit=limit, high=limit - self.margin(limit))

    def on_pri(self, g: Group, fd: int, kind: str) -> None:
        """v2: a POLLPRI file fired (a PSI trigger, a memory.events change)."""
        seen = time.monotonic()
        if kind == "client":
            p = self.pri_clients.get(fd)
            if p is not None:
                self.send_pressure(p, seen)
        elif kind == "events":
            try:
                grew = self.read_events(g, fd)
            except OSError:
                return
            self.on_events(g, grew, seen)
        else:
            self.on_psi(g, kind, seen)

    def on_psi(self, g: Group, kind: str, seen: float) -> None:
        """A PSI trigger of g fired: tasks of g stalled on memory for the threshold
        within the window.  Asked as a vmpressure level on v1: medium for "some",
        critical for "full" - or, near the limit, what brings usage under it."""
        self.notify_pressure(g, kind, seen)
        if 0 <= g.limit < PAGE_COUNTER_MAX and self.usage(g) > g.limit - self.margin(g.limit):
            return self.reclaim_check(g, seen, f"psi-{kind}")
        pending = self.pending(g, time.monotonic()) // PAGE_SIZE
        level = "critical" if kind == "full" else "medium"
        self.ask(g, level_shortfall(level, pending), seen, f"psi-{kind}")

    def on_events(self, g: Group, grew: dict[str, int], seen: float) -> None:
        """memory.events of g changed: "high" (usage went over memory.high and g was
        reclaimed, mm/memcontrol.c reclaim_high) and "max" (a charge met memory.max)
        ask for what brings usage back under the margin, at once; "oom" asks urgently."""
        if not any(grew.get(k) for k in ("high", "max", "oom")):
            return
        self.notify_pressure(g, "full" if grew.get("oom") else "some", seen)
        if grew.get("oom") and 0 <= g.limit < PAGE_COUNTER_MAX:
            want = max([self.margin(g.limit)] + [c.chunk_size for h in self.subtree(g)
                                                 for c in h.shrinkers if c.chunks > 0])
            self.ask(g, -(-want // PAGE_SIZE), seen, "oom", urgent=True)
            return
        self.reclaim_check(g, seen, "max" if grew.get("max") else "high")

    def usage(self, g: Group) -> int:
        try:
            g.usage_read, g.reported = _read_int(os.path.join(g.path, self.usage_file)), 0
        except (OSError, ValueError):
            g.usage_read = -1
        return g.usage_read

    def close_pri(self, g: Group, fd: int) -> None:
        self.sel.unregister(fd)
        os.close(fd)
        del g.pri[fd]

    def close_event(self, g: Group, efd: int) -> None:
        self.sel.unregister(efd)
        os.close(efd)
        del g.efds[efd]

    def release_group(self, g: Group) -> None:
        """Close everything of g and remove what was made for it in RUN."""
        self.set_guard(g, False, "release")
        for efd in list(g.efds):
            self.close_event(g, efd)
        for fd in list(g.pri):
            self.close_pri(g, fd)
        for c in list(g.shrinkers):
            self.drop_shrinker(c, None)
        for p in list(g.pressure):
            self.drop_pressure(p)
        for fd, (ls, name) in list(g.listeners.items()):
            self.sel.unregister(ls)
            ls.close()
            try:
                os.unlink(os.path.join(g.run, name))
            except OSError:
                pass
        g.listeners.clear()
        if g.made_run and g.run != self.run:
            try:
                os.rmdir(g.run)
            except OSError:
                pass

    def drop_group(self, g: Group, why: str) -> None:
        self.release_group(g)
        self.groups.pop(g.rel, None)
        self.log("drop-group", group=g.rel, why=why)

    def ancestors(self, g: Group) -> list[Group]:
        """g and the served groups above it: whose limits g's memory counts against."""
        parts = g.rel.split("/") if g.rel else []
        rels = ["/".join(parts[:i]) for i in range(len(parts) + 1)]
        return [self.groups[r] for r in rels if r in self.groups]

    def subtree(self, g: Group) -> list[Group]:
        """g and the groups below it: who is reclaimed when g's limit is."""
        pre = g.rel + "/" if g.rel else ""
        return [h for h in self.groups.values() if h is g or h.rel.startswith(pre)]

    # --- pressure events -----------------------------------------------------------
    def on_event(self, g: Group, efd: int, kind: str) -> None:
        seen = time.monotonic()
        try:
            os.eventfd_read(efd)
        except BlockingIOError:
            return
        if not os.path.isdir(g.path):   # rmdir signals every registered eventfd once
            self.drop_group(g, "removed")
            return
        if kind == "threshold":
            self.reclaim_check(g, seen, "threshold")
        elif kind == "oom":
            self.on_oom(g, seen)
        else:
            self.notify_pressure(g, "full" if kind == "critical" else "some", seen)
            # A window reported at this level fell short by at least this share of it.
            # Requests still in flight count against it, as for thresholds.
            now = time.monotonic()
            pending = self.pending(g, now) // PAGE_SIZE
            self.ask(g, level_shortfall(kind, pending), seen, kind)

    def pending(self, g: Group, now: float, usage: int = -1) -> int:
        """Bytes asked of g's subtree whose freeing cannot show in usage yet.

        A request is in flight for SETTLE at most, and less once it has shown: its
        client has read it from the eventfd (the counter we share with it is back to
        0), TAKEN has passed, and usage has been read lower than when it was asked.  A
        client that frees at once and allocates again is not charged with requests it
        has met; one that hands them back ("+N") is, until they settle."""
        keep = []
        for e in g.in_flight:
            t, c, asked_at = e[0], e[2], e[3]
            if usage >= 0:
                e[4] = min(e[4], usage)
            if c.efd < 0 or request_settled(now - t, not _eventfd_count(c.efd), e[4] < asked_at):
                continue
            keep.append(e)
        g.in_flight = keep
        return sum(e[1] for e in keep)

    def reclaim_check(self, g: Group, seen: float, reason: str) -> None:
        """Usage above limit - margin: ask for what brings it to limit - 2 * margin."""
        if g.limit < 0 or g.limit >= PAGE_COUNTER_MAX:
            return
        usage = self.usage(g)
        if usage < 0:
            return
        m = self.margin(g.limit)
        now = time.monotonic()
        pending = self.pending(g, now, usage)
        if not over_high_mark(usage, g.limit, m):
            g.in_flight.clear()
            g.dropped = True
            return
        self.notify_pressure(g, "some", seen)
        if reason == "tick" and (pending or now - g.last_ask < SETTLE):
            return   # the tick only re-asks once a request has settled
        if reason == "report" and not g.dropped:
            return   # a report asks at a crossing only: re-asking is the tick's
        short = usage_shortfall(usage, g.limit, m, pending)
        if short <= 0:
            return
        if not g.dropped and now - g.last_ask >= SETTLE and g.asked_round:
            self.back_off(g, now)
            g.asked_round = []   # one strike per request
        asked = self.ask(g, -(-short // PAGE_SIZE), seen, reason, usage=usage)
        if asked:
            g.dropped, g.asked_round, g.last_ask = False, asked, now

    def back_off(self, g: Group, now: float) -> None:
        """The last request settled and usage never went under the high mark: the
        clients asked then did not free.  Ask each of them less often (doubling)."""
        for c in g.asked_round:
            c.strikes += 1
            c.backoff_until = now + backoff_seconds(c.strikes)
            self.log("backoff", group=c.group.rel, pid=c.pid, strikes=c.strikes,
                     seconds=round(c.backoff_until - now, 3))

    def ask(self, g: Group, debt_pages: int, seen: float, reason: str,
            usage: int = -1, urgent: bool = False) -> list[ShrinkerClient]:
        """Split debt_pages over the shrinkers of g's subtree (shrink_plan) and ask;
        returns the clients asked.  Urgent (an OOM) asks those backed off too."""
        if debt_pages <= 0:
            return []
        now = time.monotonic()
        clients = [c for h in self.subtree(g) for c in h.shrinkers
                   if c.efd >= 0 and c.chunks > 0 and (urgent or c.backoff_until <= now)]
        if not clients:
            return []
        asked = []
        plan = shrink_plan(debt_pages, [(c.chunks, c.chunk_size) for c in clients], PAGE_SIZE)
        for c, n in zip(clients, plan.requests):
            if n <= 0:
                continue
            count = _eventfd_count(c.efd)
            if count is None or count > EVENTFD_SANE:
                self.drop_shrinker(c, "eventfd unusable")
                continue
            os.eventfd_write(c.efd, n)
            done = time.monotonic()
            if g.dropped:
                c.strikes = 0   # its last request was met
            c.chunks -= n
            asked.append(c)
            if usage < 0:
                usage = self.usage(g)
            g.in_flight.append([done, n * c.chunk_size, c, usage, usage])
            self.log("ask", group=g.rel, client=c.group.rel, pid=c.pid, chunks=n,
                     held=c.chunks, reason=reason, usage=usage,
                     latency_us=round((done - seen) * 1e6))
        return asked

    # --- the OOM guard -------------------------------------------------------------
    def set_guard(self, g: Group, on: bool, why: str) -> None:
        """Hold an OOM of g for the shrinkers (memory.oom_control oom_kill_disable 1:
        the charging task waits in mem_cgroup_oom_synchronize, and the uncharge of
        the chunks freed wakes it, uncharge_batch -> memcg1_oom_recover), or give the
        kernel its OOM killer back.  Only a 0 the daemon found is ever changed."""
        if on == g.guard:
            return
        path = os.path.join(g.path, "memory.oom_control")
        try:
            if on:
                if "oom_kill_disable 0" not in open(path).read():
                    return   # the administrator's own setting: left alone
            with open(path, "w") as f:
                f.write("1" if on else "0")
        except OSError as e:
            self.log("guard-failed", group=g.rel, error=str(e))
            return
        g.guard = on
        self.log("guard", group=g.rel, on=on, why=why)

    def update_guard(self, g: Group, now: float) -> None:
        """The guard is on while a limited group's subtree has chunks to give."""
        if not self.oom_guard or self.version != 1 or g.limit < 0 or g.limit >= 1 << 60:
            return   # v2 has no oom_kill_disable
        holding = any(c.chunks > 0 and c.efd >= 0 for h in self.subtree(g) for c in h.shrinkers)
        if g.guard and g.oom_since >= 0 and now - g.oom_since > OOM_GRACE:
            # Still under OOM after the clients were asked: the kernel decides.
            if "under_oom 1" in _quiet(os.path.join(g.path, "memory.oom_control")):
                g.guard_off_until = now + OOM_GUARD_PAUSE
                self.set_guard(g, False, "oom not resolved")
            g.oom_since = -1.0
            return
        self.set_guard(g, holding and now >= g.guard_off_until, "clients" if holding else "no chunks")

    def on_oom(self, g: Group, seen: float) -> None:
        """g entered OOM: ask for what brings it back under the high mark, now."""
        if not g.guard:
            return
        # At least one chunk of the largest, so that a margin under a chunk still frees.
        want = max([self.margin(g.limit)] + [c.chunk_size for h in self.subtree(g)
                                             for c in h.shrinkers if c.chunks > 0])
        g.oom_since = time.monotonic()
        asked = self.ask(g, -(-want // PAGE_SIZE), seen, "oom", urgent=True)
        if not asked:
            g.guard_off_until = g.oom_since + OOM_GUARD_PAUSE
            self.set_guard(g, False, "nothing to ask")

    def notify_pressure(self, g: Group, kind: str, now: float) -> None:
        """POLLIN for the pressure clients of g's subtree, at most once per window."""
        for h in self.subtree(g):
            for p in list(h.pressure):
                if p.trigger is None or p.psi_fd >= 0 or (p.trigger[0] == "full" and kind != "full"):
                    continue   # (a client with a trigger of its own hears the kernel)
                if now - p.last_sent < p.trigger[2] / 1e6:
                    p.deferred = True
                    continue
                self.send_pressure(p, now)

    def send_pressure(self, p: PressureClient, now: float) -> None:
        p.deferred = False
        p.last_sent = now
        try:
            p.sock.send(b"\n")
        except BlockingIOError:
            pass   # unread data is already waiting: POLLIN holds
        except OSError:
            self.drop_pressure(p)
            return
        self.log("pressure", group=p.group.rel, pid=p.pid)

    # --- clients -------------------------------------------------------------------
    def accept(self, g: Group, ls: socket.socket, name: str) -> None:
        try:
            s, _ = ls.accept()
        except (BlockingIOError, InterruptedError):
            return
        s.setblocking(False)
        pid = _peer_pid(s)
        if name == "shrinker.sock":
            c = ShrinkerClient(s, g, pid)
            g.shrinkers.append(c)
            self.sel.register(s, selectors.EVENT_READ, ("shrinker", c))
        else:
            p = PressureClient(s, g, pid)
            g.pressure.append(p)
            self.sel.register(s, selectors.EVENT_READ, ("pressure", p))

    def read_shrinker(self, c: ShrinkerClient) -> None:
        try:
            data, anc, _, _ = c.sock.recvmsg(4096, socket.CMSG_SPACE(MAX_FDS * 4))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, anc = b"", []
        for level, typ, payload in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                fds = list(struct.unpack(f"{len(payload) // 4}i", payload[:len(payload) // 4 * 4]))
                for fd in fds:
                    os.set_inheritable(fd, False)
                c.fds.extend(fds)
        if not data:
            self.drop_shrinker(c, None)
            return
        c.inbuf += data
        while b"\n" in c.inbuf and c.sock.fileno() >= 0:
            line, c.inbuf = c.inbuf.split(b"\n", 1)
            self.shrinker_line(c, line.decode("ascii", "replace").strip())
        if len(c.inbuf) > MAX_LINE and c.sock.fileno() >= 0:
            self.reply(c, "error: line too long")
            self.drop_shrinker(c, "line too long")

    def shrinker_line(self, c: ShrinkerClient, line: str) -> None:
        """One request line of the chunk protocol."""
        m = re.fullmatch(r"register (\d{1,19})", line)
        if m:
            size = int(m.group(1))
            if c.efd >= 0:
                return self.reply(c, "error: already registered")
            if not c.fds:
                return self.reply(c, "error: register needs an eventfd passed as SCM_RIGHTS")
            efd = c.fds.pop(0)
            if size == 0 or _eventfd_count(efd) is None:
                os.close(efd)
                return self.reply(c, "error: register CHUNK_SIZE: a positive size and an eventfd")
            c.efd, c.chunk_size = efd, size
            self.log("register", group=c.group.rel, pid=c.pid, chunk_size=size)
            return
        m = re.fullmatch(r"([+-])(\d{1,19})", line)
        if m:
            if c.efd < 0:
                return self.reply(c, "error: not registered")
            n = int(m.group(2))
            if m.group(1) == "+":
                c.chunks += n
                now = time.monotonic()
                if c.chunks == n:   # chunks to give again: guard the limits above
                    for h in self.ancestors(c.group):
                        self.update_guard(h, now)
                for h in self.ancestors(c.group):
                    h.reported += n * c.chunk_size
                    if 0 <= h.limit < PAGE_COUNTER_MAX and report_may_cross(
                            h.usage_read, h.reported, h.limit, self.margin(h.limit)):
                        self.reclaim_check(h, now, "report")
            else:
                c.chunks = max(0, c.chunks - n)
            return
        if line == "?":
            return self.reply(c, f"held {c.chunks}")
        self.reply(c, "error: expected 'register CHUNK_SIZE', '+N', '-N' or '?'")

    def reply(self, c: ShrinkerClient, text: str) -> None:
        """Queue a line for the client; never block, drop a client that never reads."""
        c.outbuf += text.encode() + b"\n"
        if len(c.outbuf) > MAX_OUTBUF:
            self.drop_shrinker(c, "not reading")
            return
        self.flush(c)

    def flush(self, c: ShrinkerClient) -> None:
        try:
            n = c.sock.send(c.outbuf)
            c.outbuf = c.outbuf[n:]
        except BlockingIOError:
            pass
        except OSError:
            self.drop_shrinker(c, None)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.outbuf else 0)
        self.sel.modify(c.sock, events, ("shrinker", c))

    def drop_shrinker(self, c: ShrinkerClient, why: str | None) -> None:
        """Forget a client: its eventfd, its count, its connection."""
        if c.sock.fileno() >= 0:
            self.sel.unregister(c.sock)
            c.sock.close()
        for fd in c.fds + ([c.efd] if c.efd >= 0 else []):
            os.close(fd)
        c.fds, c.efd = [], -1
        if c in c.group.shrinkers:
            c.group.shrinkers.remove(c)
        self.log("disconnect", group=c.group.rel, pid=c.pid, why=why or "closed")

    def read_pressure(self, p: PressureClient) -> None:
        try:
            data = p.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.drop_pressure(p)
            return
        if p.trigger is not None:
            return   # anything after the trigger is ignored, as by the kernel's psi file
        p.inbuf += data
        text = p.inbuf.decode("ascii", "replace")
        try:
            p.trigger = parse_trigger(text)
        except ValueError as e:
            # systemd writes the trigger in one write(); a partial one is waited for
            # only while it still looks like the start of one.
            if text.endswith(("\0", "\n")) or len(p.inbuf) > 64:
                try:
                    p.sock.send(f"error: {e}\n".encode())
                except OSError:
                    pass
                self.drop_pressure(p)
            return
        if self.version == 2:
            self.psi_client(p)
        self.log("trigger", group=p.group.rel, pid=p.pid, trigger=" ".join(map(str, p.trigger)))

    def psi_client(self, p: PressureClient) -> None:
        """v2: the client's trigger goes to the kernel as systemd writes it, on its
        group's memory.pressure; each POLLPRI becomes POLLIN on the client's socket
        (the kernel already limits it to one per window)."""
        before = set(p.group.pri)
        self.register_pri(p.group, "memory.pressure", " ".join(map(str, p.trigger)), "client")
        new = set(p.group.pri) - before
        if new:
            p.psi_fd = new.pop()
            self.pri_clients[p.psi_fd] = p

    def drop_pressure(self, p: PressureClient) -> None:
        if p.psi_fd >= 0:
            self.pri_clients.pop(p.psi_fd, None)
            if p.psi_fd in p.group.pri:
                self.close_pri(p.group, p.psi_fd)
            p.psi_fd = -1
        if p.sock.fileno() >= 0:
            self.sel.unregister(p.sock)
            p.sock.close()
        if p in p.group.pressure:
            p.group.pressure.remove(p)

    # --- the loop ------------------------------------------------------------------
    def tick(self) -> None:
        now = time.monotonic()
        self.scan()
        for g in list(self.groups.values()):
            for p in list(g.pressure):
                if p.deferred and p.trigger and now - p.last_sent >= p.trigger[2] / 1e6:
                    self.send_pressure(p, now)
            if any(g2.shrinkers for g2 in self.subtree(g)):
                # v2 has no usage thresholds: the tick is the headroom check under
                # memory.high / memory.max, and asks at once like a threshold.
                self.reclaim_check(g, now, "tick" if self.version == 1 else "headroom")
            self.update_guard(g, now)

    def start(self) -> None:
        """Make RUN and serve the groups there are now."""
        if not os.path.isdir(self.run):
            os.makedirs(self.run, 0o755)
            self.made_run = True
        self.scan()

    def serve_forever(self) -> None:
        """The selector loop, until stop()."""
        next_tick = time.monotonic() + TICK
        while not self.stopping:
            self.run_once(max(0.0, next_tick - time.monotonic()))
            if time.monotonic() >= next_tick:
                self.tick()
                next_tick = time.monotonic() + TICK

    def run_once(self, timeout: float) -> None:
        """Wait up to timeout for what is ready, and handle it (no tick)."""
        for key, mask in self.sel.select(timeout):
            what = key.data[0]
            if what == "event":
                _, g, kind = key.data
                if key.fd in g.efds:
                    self.on_event(g, key.fd, kind)
            elif what == "listen":
                _, g, name = key.data
                self.accept(g, key.fileobj, name)
            elif what == "shrinker":
                c = key.data[1]
                if mask & selectors.EVENT_WRITE and c.sock.fileno() >= 0:
                    self.flush(c)
                if mask & selectors.EVENT_READ and c.sock.fileno() >= 0:
                    self.read_shrinker(c)
            elif what == "pressure":
                self.read_pressure(key.data[1])
            elif what == "parent":
                self.stop()   # the parent's end of the life pipe is closed
            elif what == "pri":
                _, g, kind = key.data
                if key.fd in g.pri:
                    self.on_pri(g, key.fd, kind)
            elif what == "wakeup":
                try:
                    os.read(key.fd, 64)
                except BlockingIOError:
                    pass

    def stop(self) -> None:
        self.stopping = True

    def close(self) -> None:
        """Close everything and remove the runtime directory (what this daemon made)."""
        for g in sorted(self.groups.values(), key=lambda g: -g.rel.count("/")):
            self.release_group(g)
        self.groups.clear()
        if self.made_run:
            try:
                os.rmdir(self.run)
            except OSError:
                pass
        self.sel.close()


def serve(cgroup: str, run: str, foreground: bool = True, json_log: bool = False,
          margin: int | None = None, oom_guard: bool = False, parent_fd: int = -1) -> int:
    """Run the daemon until SIGTERM/SIGINT/SIGHUP; returns the exit status.

    parent_fd: the read end of a pipe whose write end only the parent holds; the daemon
    stops when it reports hang-up (the parent closed it or died), as with SIGTERM."""
    log = sys.stderr if foreground or json_log else None
    d = Daemon(cgroup, run, margin=margin, log=log, json_log=json_log, oom_guard=oom_guard)
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def _stop(signum, frame):
        d.stop()

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    old_fd = signal.set_wakeup_fd(w)
    try:
        d.sel.register(r, selectors.EVENT_READ, ("wakeup",))
        if parent_fd >= 0:
            d.sel.register(parent_fd, selectors.EVENT_READ, ("parent",))
        d.start()
        d.log("ready", cgroup=d.root, run=d.run)
        d.serve_forever()
    finally:
        d.close()
        signal.set_wakeup_fd(old_fd)
        for s, h in old.items():
            signal.signal(s, h)
        os.close(r)
        os.close(w)
    return 0
