"""The userspace shrinker: mempressure.shrinker (Anton Vorontsov's proposal, January 2013).

Mainline never merged it; memcg implements it on top of memory cgroups as the proposal
describes (see docs/shrinker.md for the protocol).  An application registers an eventfd
with a chunk size through cgroup.event_control, then reports how many chunks it holds
by writing "<eventfd> +N" / "<eventfd> -N" to mempressure.shrinker.  When its group
reclaims and falls short, the kernel asks it - through the eventfd - to free a number
of chunks, and assumes they will be freed: the count it holds drops by what was asked.

The shortfall is scanned - reclaimed of each vmpressure window, as in the proposal, or
the unmet reclaim target when reclaim found nothing it could scan (anonymous memory
without swap).  It accumulates per group like the vmpressure window does, so shortfalls
smaller than a chunk add up to a request.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..kernel import PAGE_SIZE
from .shrink_plan import shrink_plan

if TYPE_CHECKING:
    from ..fs.eventfd import EventFd
    from .memcontrol import MemCgroup
    from ..system import System


@dataclass
class UserShrinker:
    """One registration: the application's eventfd, its chunk size and the chunks it holds."""

    efd: EventFd
    chunk_size: int
    chunks: int = 0


def shrinker_register_event(sys: System, memcg: MemCgroup, efd: EventFd, args: str) -> None:
    """Registration: args is the chunk size in bytes (an unsigned decimal, not 0)."""
    if not args.isdigit() or int(args) == 0:
        raise OSError(errno.EINVAL, "Invalid argument")
    sys.user_shrinkers.setdefault(memcg.id, []).append(UserShrinker(efd, int(args)))
    memcg.event_list.append((efd, "shrinker"))


def shrinker_unregister_event(sys: System, memcg: MemCgroup, efd: EventFd) -> None:
    lst = sys.user_shrinkers.get(memcg.id)
    if lst:
        sys.user_shrinkers[memcg.id] = [s for s in lst if s.efd is not efd]


def shrinker_report(sys: System, memcg: MemCgroup, efd_fileno: int, delta: int) -> None:
    """A "<eventfd> <N>" write: N chunks more (or fewer) are reclaimable; clamped at 0."""
    for s in sys.user_shrinkers.get(memcg.id, ()):
        if s.efd.is_fd(efd_fileno):
            s.chunks = max(0, s.chunks + delta)
            return
    raise OSError(errno.EBADF, "Bad file descriptor")


def shrinker_request(sys: System, memcg: MemCgroup, shortfall_pages: int) -> None:
    """Ask the shrinkers of memcg's subtree to free chunks covering the shortfall.

    The accumulated shortfall is split across them by the chunks each holds
    (shrink_plan, do_shrink_slab's proportional scan); each gets its share on its
    eventfd.  With no chunks left anywhere the shortfall is forgotten.
    """
    shrinkers = [s for m in memcg.subtree() for s in sys.user_shrinkers.get(m.id, ())
                 if s.chunks > 0]
    if not shrinkers:
        sys.shrinker_debt.pop(memcg.id, None)
        return
    debt = sys.shrinker_debt.get(memcg.id, 0) + shortfall_pages
    plan = shrink_plan(debt, [(s.chunks, s.chunk_size) for s in shrinkers], PAGE_SIZE)
    for s, n in zip(shrinkers, plan.requests):
        if n:
            s.chunks -= n
            s.efd.signal(n)
    sys.shrinker_debt[memcg.id] = plan.debt_pages
