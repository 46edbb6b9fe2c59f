"""memcg shrinkerd: the userspace shrinker and pressure sockets on a real memory cgroup.

For a cgroup v1 memory group DIR and every group below it (found again on every tick),
the daemon serves, in a runtime directory RUN, for each group G (relative to DIR):

- RUN/G/shrinker.sock: the 2013 proposal's chunk protocol.  A client sends
  "register CHUNK_SIZE\\n" with an eventfd as SCM_RIGHTS, then "+N\\n" / "-N\\n" as its
  reclaimable chunks come and go ("?\\n" is answered "held N\\n").  The daemon writes N
  to the eventfd to ask for N chunks, takes them off the client's count, and never asks
  for more than the count.  A bad line is answered "error: ...\\n".
- RUN/G/pressure.sock: systemd's memory pressure protocol.  A client writes a PSI-style
  trigger ("some 200000 2000000"), then reads one byte (POLLIN) each time G or one of
  its ancestors is under pressure, at most once per trigger window.

The pressure sources are the kernel's own (mm/memcontrol-v1.c): memory.pressure_level
at every level, registered "local" on each group so an event names the group whose
limit is reclaimed, and usage thresholds (memory.usage_in_bytes) just under each
limit.  An event in group A concerns the clients of A's subtree only.  How much to ask
of whom is memcg.mm.shrink_plan, the code the model's mempressure.shrinker uses.

One selector loop; every socket is nonblocking; a client is a small state record.
"""

from __future__ import annotations

import errno
import json
import os
import re
import selectors
import signal
import socket
import stat
import struct
import sys
import time
from dataclasses import dataclass, field

from .mm.shrink_plan import PAGE_SIZE, shrink_plan

__all__ = ["Daemon", "DaemonError", "parse_trigger", "serve"]

# mm/vmpressure.c: vmpressure_win (SWAP_CLUSTER_MAX * 16 pages), vmpressure_level_med
# (60) and vmpressure_level_critical (95): a window's shortfall is at least this share
# of it when the level is reported.
VMPRESSURE_WIN = 512
VMPRESSURE_LEVEL_MED = 60
VMPRESSURE_LEVEL_CRITICAL = 95
LEVELS = ("low", "medium", "critical")
# kernel/sched/psi.c: psi_trigger_create - window 500 ms .. 10 s, threshold <= window.
WINDOW_MIN_US = 500_000
WINDOW_MAX_US = 10_000_000

TICK = 0.05            # seconds between checks: new and vanished groups, limits, deferrals
SETTLE = 0.2           # a request counts as in flight (its memory not yet freed) this long
TAKEN = 0.005          # ... or this long once the client has read it from its eventfd
BACKOFF_BASE = 0.05    # first back-off of a client that did not free; doubles per strike
BACKOFF_MAX = 5.0
MAX_LINE = 256         # longest request line
MAX_OUTBUF = 4096      # a client that does not read its replies is dropped past this
MAX_FDS = 4            # eventfds accepted with one message
EVENTFD_SANE = 1 << 62 # an eventfd counter above this could block our write: drop it
OOM_GRACE = 0.2        # an OOM the asked clients did not end in this time goes to the kernel
OOM_GUARD_PAUSE = 1.0  # then the guard stays off this long
SUN_PATH_MAX = 107     # include/uapi/linux/un.h: sun_path[108], NUL included


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


@dataclass(eq=False)
class Group:
    """A memory cgroup served: its directory, its runtime directory and registrations."""
    rel: str
    path: str
    run: str
    limit: int = -1
    listeners: dict[int, tuple[socket.socket, str]] = field(default_factory=dict)
    efds: dict[int, str] = field(default_factory=dict)   # eventfd -> "threshold" | level
    shrinkers: list[ShrinkerClient] = field(default_factory=list)
    pressure: list[PressureClient] = field(default_factory=list)
    in_flight: list[tuple[float, int, "ShrinkerClient"]] = field(default_factory=list)  # (time, bytes, whom)
    asked_round: list[ShrinkerClient] = field(default_factory=list)   # asked at the last ask
    dropped: bool = True       # usage went under the high mark since the last ask
    last_ask: float = -1e9     # when the last request of a usage check was made
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
        self.sel = selectors.DefaultSelector()
        self.groups: dict[str, Group] = {}
        self.stopping = False
        self.made_run = False
        if os.path.exists(os.path.join(self.root, "cgroup.controllers")):
            raise DaemonError(f"{self.root}: cgroup v2 is not served yet (v1 memory only)")
        if not os.path.exists(os.path.join(self.root, "memory.limit_in_bytes")):
            raise DaemonError(f"{self.root}: not a cgroup v1 memory group (no memory.limit_in_bytes)")
        if not os.access(os.path.join(self.root, "cgroup.event_control"), os.W_OK):
            raise DaemonError(f"{self.root}/cgroup.event_control: not writable")

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
            if "memory.limit_in_bytes" not in names:
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

    def register_levels(self, g: Group) -> None:
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
        return max(limit // 4, 4 << 20)

    def check_limit(self, g: Group) -> None:
        """Usage thresholds at limit - margin and limit - margin/2, moved with the limit."""
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
        for t in (limit - m, limit - m // 2):
            if t > 0:
                self.register_event(g, "memory.usage_in_bytes", str(t), "threshold")
        self.log("limit", group=g.rel, limit=limit, high=limit - m)

    def close_event(self, g: Group, efd: int) -> None:
        self.sel.unregister(efd)
        os.close(efd)
        del g.efds[efd]

    def release_group(self, g: Group) -> None:
        """Close everything of g and remove what was made for it in RUN."""
        self.set_guard(g, False, "release")
        for efd in list(g.efds):
            self.close_event(g, efd)
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
            win = {"low": 0, "medium": VMPRESSURE_LEVEL_MED,
                   "critical": VMPRESSURE_LEVEL_CRITICAL}[kind]
            # A window reported at this level fell short by at least this share of it.
            # Requests still in flight count against it, as for thresholds.
            now = time.monotonic()
            pending = self.pending(g, now) // PAGE_SIZE
            self.ask(g, VMPRESSURE_WIN * win // 100 - pending, seen, kind)

    def pending(self, g: Group, now: float) -> int:
        """Bytes asked of g's subtree whose freeing cannot show in usage yet.

        A request is in flight until its client has read it from the eventfd (the
        counter we share with it is back to 0) and TAKEN has passed since, or for
        SETTLE at most: a client that frees at once is not charged its old requests
        while it allocates again."""
        keep = []
        for t, b, c in g.in_flight:
            if now - t >= SETTLE or c.efd < 0:
                continue
            if now - t >= TAKEN and not _eventfd_count(c.efd):
                continue
            keep.append((t, b, c))
        g.in_flight = keep
        return sum(b for _, b, _ in keep)

    def reclaim_check(self, g: Group, seen: float, reason: str) -> None:
        """Usage above limit - margin: ask for what brings it to limit - 2 * margin."""
        if g.limit < 0 or g.limit >= 1 << 60:
            return
        try:
            usage = _read_int(os.path.join(g.path, "memory.usage_in_bytes"))
        except (OSError, ValueError):
            return
        m = self.margin(g.limit)
        now = time.monotonic()
        pending = self.pending(g, now)
        if usage <= g.limit - m:
            g.in_flight.clear()
            g.dropped = True
            return
        self.notify_pressure(g, "some", seen)
        if reason == "tick" and (pending or now - g.last_ask < SETTLE):
            return   # the tick only re-asks once a request has settled
        short = usage - (g.limit - 2 * m) - pending
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
            c.backoff_until = now + min(BACKOFF_MAX, BACKOFF_BASE * 2 ** c.strikes)
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
            g.in_flight.append((done, n * c.chunk_size, c))
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
        if not self.oom_guard or g.limit < 0 or g.limit >= 1 << 60:
            return
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
                if p.trigger is None or (p.trigger[0] == "full" and kind != "full"):
                    continue
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
                if c.chunks == n:   # chunks to give again: guard the limits above
                    now = time.monotonic()
                    for h in self.ancestors(c.group):
                        self.update_guard(h, now)
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
        self.log("trigger", group=p.group.rel, pid=p.pid, trigger=" ".join(map(str, p.trigger)))

    def drop_pressure(self, p: PressureClient) -> None:
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
                self.reclaim_check(g, now, "tick")
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
            timeout = max(0.0, next_tick - time.monotonic())
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
                elif what == "wakeup":
                    try:
                        os.read(key.fd, 64)
                    except BlockingIOError:
                        pass
            if time.monotonic() >= next_tick:
                self.tick()
                next_tick = time.monotonic() + TICK

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
