"""memcg shrinkerd on the simulated kernel: the daemon's policy as user space of the model.

Mainline has no mempressure.shrinker: on a real kernel the protocol is served by a
daemon (memcg.shrinkerd) that asks from the notifications the kernel gives user space
- usage thresholds just under each limit and memory.pressure_level - and no request
comes from inside limit reclaim.  To predict such a kernel, SimKernel(shrinker=
"shrinkerd") runs this instead of document 002's in-kernel hook: a program on the
simulated machine that registers the same eventfds through the Kernel interface (k.event
of memory.usage_in_bytes at limit - margin and limit - margin/2, memory.pressure_level
low/medium/critical in local mode), wakes when the model signals them (a watcher, run
when the model lets user space run, as the daemon's loop wakes on a real machine) and
at each "+N" report (a usage check, as the daemon makes one), and
decides with the daemon's own arithmetic (memcg.mm.shrink_plan: the shortfall above the
high mark, the level's share of a vmpressure window, the in-flight rule, the back-off,
and shrink_plan's split).  Its 50 ms tick is the model's tick (SimKernel.advance).

What it does not model: pressure.sock clients (not part of the Kernel interface) and
--oom-guard (off by default in the daemon and in LinuxKernel's).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import sched
from ..kernel import PAGE_SIZE
from ..mm.shrink_plan import (SETTLE, backoff_seconds, default_margin, level_shortfall,
                              over_high_mark, report_may_cross, request_settled, shrink_plan,
                              usage_shortfall, usage_thresholds)

if TYPE_CHECKING:
    from ..fs.eventfd import EventFd
    from .sim import SimKernel

LEVELS = ("low", "medium", "critical")
UNLIMITED = 1 << 60   # a limit at or above this is none (PAGE_COUNTER_MAX pages), as the daemon reads it


@dataclass(eq=False)
class Client:
    """One registration: the eventfd the daemon writes requests to, and its count."""
    efd: "EventFd"
    group: str
    chunk_size: int
    chunks: int = 0
    strikes: int = 0
    backoff_until: float = 0.0


@dataclass(eq=False)
class Group:
    """A served group: its limit and the daemon's own eventfds on it."""
    path: str
    limit: int = -1
    thresholds: list = field(default_factory=list)
    levels: list = field(default_factory=list)
    # requests in flight: [time, bytes, client, usage when asked, lowest usage read since]
    in_flight: list = field(default_factory=list)
    asked_round: list = field(default_factory=list)
    dropped: bool = True
    last_ask: float = -1e9
    usage_read: int = -1   # usage as last read, and the bytes reported ("+N") since
    reported: int = 0


class SimShrinkerd:
    """The daemon of one SimKernel, serving its root group and every group below."""

    def __init__(self, k: "SimKernel", margin: int | None = None):
        self.k = k
        self.margin_opt = margin
        self.groups: dict[str, Group] = {}
        self.clients: list[Client] = []
        self.asks: list[tuple[str, int, str]] = []   # (group, chunks, reason), as the daemon logs them
        self._stale = True

    # --- the clock and the files, through the Kernel interface ----------------------
    def now(self) -> float:
        return sched.ktime_get(self.k.sys.clock) / 1e9

    def margin(self, limit: int) -> int:
        return self.margin_opt if self.margin_opt is not None else default_margin(limit)

    def usage(self, g: Group) -> int:
        try:
            g.usage_read, g.reported = int(self.k.read(_join(g.path, "memory.usage_in_bytes"))), 0
        except OSError:
            g.usage_read = -1
        return g.usage_read

    # --- clients ---------------------------------------------------------------------
    def register(self, group: str, efd: "EventFd", chunk_size: int) -> None:
        self.clients.append(Client(efd, group, chunk_size))
        self.changed()

    def report(self, group: str, fd: int, delta: int) -> None:
        """A "+N" / "-N" line of the registration whose eventfd is fd (EBADF if none)."""
        for c in self.clients:
            if c.group == group and not c.efd.closed and c.efd.is_fd(fd):
                c.chunks = max(0, c.chunks + delta)
                if delta > 0:   # the daemon's usage check at a "+N" (shrinkerd.py)
                    for g in self.ancestors(group):
                        g.reported += delta * c.chunk_size
                        if 0 <= g.limit < UNLIMITED and report_may_cross(
                                g.usage_read, g.reported, g.limit, self.margin(g.limit)):
                            self.reclaim_check(g, "report")
                return
        raise OSError(errno.EBADF, "Bad file descriptor")

    def live(self) -> list[Client]:
        """The clients still connected (a closed eventfd is a closed connection)."""
        self.clients = [c for c in self.clients if not c.efd.closed]
        return self.clients

    # --- groups ----------------------------------------------------------------------
    def changed(self) -> None:
        """Groups or limits may have changed: look again now, or at the next point where
        user space runs by itself (never from inside a watcher: registering an event
        returns to user space)."""
        self._stale = True
        clock = self.k.sys.clock
        if not (clock.in_resched or clock.in_exit):
            self.scan()

    def scan(self) -> None:
        """Serve new groups, drop vanished ones, follow limit changes (the daemon's tick)."""
        self._stale = False
        seen = []
        stack = ["/"]
        while stack:
            path = stack.pop()
            try:
                names = self.k.listdir(path)
            except OSError:
                continue
            seen.append(path)
            files = set(self.k._files_of(self.k._split(_join(path, "x"))[0]))
            stack.extend(sorted((_join(path, n) for n in names if n not in files), reverse=True))
        for path in seen:
            if path not in self.groups:
                self.add_group(path)
        for path in [p for p in self.groups if p not in seen]:
            self.drop_group(path)
        for path in seen:
            self.check_limit(self.groups[path])

    def add_group(self, path: str) -> None:
        g = self.groups[path] = Group(path)
        # "local": an event names the group whose reclaim it is (mm/vmpressure.c).
        for level in LEVELS:
            ev = self.k.event(_join(path, "memory.pressure_level"), f"{level},local")
            ev.watch(lambda n, g=g, level=level: self.on_level(g, level))
            g.levels.append(ev)

    def drop_group(self, path: str) -> None:
        g = self.groups.pop(path)
        for ev in g.thresholds + g.levels:
            ev.close()
        for c in self.clients:
            if c.group == path:
                c.chunks = 0   # the daemon closes the connections of a removed group
        self.clients = [c for c in self.clients if c.group != path]

    def check_limit(self, g: Group) -> None:
        """Usage thresholds at limit - margin and limit - margin/2, moved with the limit."""
        try:
            limit = int(self.k.read(_join(g.path, "memory.limit_in_bytes")))
        except (OSError, ValueError):
            return
        if limit == g.limit:
            return
        g.limit = limit
        for ev in g.thresholds:
            ev.close()
        g.thresholds = []
        if limit >= UNLIMITED:
            return   # unlimited: the ancestors' limits apply
        for t in usage_thresholds(limit, self.margin(limit)):
            ev = self.k.event(_join(g.path, "memory.usage_in_bytes"), str(t))
            ev.watch(lambda n, g=g: self.reclaim_check(g, "threshold"))
            g.thresholds.append(ev)

    def ancestors(self, path: str) -> list[Group]:
        """The served group at path and those above it: whose limits its memory counts
        against."""
        out, p = [], path.rstrip("/") or "/"
        while True:
            if p in self.groups:
                out.append(self.groups[p])
            if p == "/":
                return out[::-1]
            p = p.rsplit("/", 1)[0] or "/"

    def subtree(self, g: Group) -> list[Client]:
        pre = g.path.rstrip("/") + "/"
        return [c for c in self.live() if c.group == g.path or c.group.startswith(pre)]

    # --- decisions (shrinkerd.Daemon's, on the model's clock) ------------------------
    def on_level(self, g: Group, level: str) -> None:
        if g.path not in self.groups:
            return
        pending = self.pending(g, self.now()) // PAGE_SIZE
        self.ask(g, level_shortfall(level, pending), level)

    def pending(self, g: Group, now: float, usage: int = -1) -> int:
        """Bytes asked of g's subtree whose freeing cannot show in usage yet.  A watcher
        of the model reads and frees in one go, so once read and shown a request has
        settled: no wait for the free to follow the read (the daemon's TAKEN)."""
        keep = []
        for e in g.in_flight:
            t, c, asked_at = e[0], e[2], e[3]
            if usage >= 0:
                e[4] = min(e[4], usage)
            if c.efd.closed or request_settled(now - t, c.efd.peek() == 0, e[4] < asked_at, taken=0.0):
                continue
            keep.append(e)
        g.in_flight = keep
        return sum(e[1] for e in keep)

    def reclaim_check(self, g: Group, reason: str) -> None:
        """Usage above limit - margin: ask for what brings it to limit - 2 * margin."""
        if g.path not in self.groups or g.limit < 0:
            return
        usage = self.usage(g)
        if usage < 0:
            return
        m = self.margin(g.limit)
        now = self.now()
        pending = self.pending(g, now, usage)
        if not over_high_mark(usage, g.limit, m):
            g.in_flight.clear()
            g.dropped = True
            return
        if reason == "tick" and (pending or now - g.last_ask < SETTLE):
            return   # the tick only re-asks once a request has settled
        if reason == "report" and not g.dropped:
            return   # a report asks at a crossing only: re-asking is the tick's
        short = usage_shortfall(usage, g.limit, m, pending)
        if short <= 0:
            return
        if not g.dropped and now - g.last_ask >= SETTLE and g.asked_round:
            for c in g.asked_round:   # the last request settled unmet: back off
                c.strikes += 1
                c.backoff_until = now + backoff_seconds(c.strikes)
            g.asked_round = []
        asked = self.ask(g, -(-short // PAGE_SIZE), reason, usage)
        if asked:
            g.dropped, g.asked_round, g.last_ask = False, asked, now

    def ask(self, g: Group, debt_pages: int, reason: str, usage: int = -1) -> list[Client]:
        """Split debt_pages over the clients of g's subtree (shrink_plan) and ask."""
        if debt_pages <= 0:
            return []
        now = self.now()
        clients = [c for c in self.subtree(g) if c.chunks > 0 and c.backoff_until <= now]
        if not clients:
            return []
        plan = shrink_plan(debt_pages, [(c.chunks, c.chunk_size) for c in clients], PAGE_SIZE)
        asked = []
        for c, n in zip(clients, plan.requests):
            if n <= 0:
                continue
            c.efd.signal(n)   # write(2) of n to the client's eventfd
            if g.dropped:
                c.strikes = 0
            c.chunks -= n
            asked.append(c)
            if usage < 0:
                usage = self.usage(g)
            g.in_flight.append([now, n * c.chunk_size, c, usage, usage])
            self.asks.append((g.path, n, reason))
        return asked

    def tick(self) -> None:
        """The daemon's tick: groups and limits again, and a usage check of each group
        whose subtree has clients."""
        self.scan()
        for g in list(self.groups.values()):
            if self.subtree(g):
                self.reclaim_check(g, "tick")


def _join(group: str, name: str) -> str:
    return group.rstrip("/") + "/" + name
