"""Hierarchical page counters, as mm/page_counter.c (3.19+) keeps them.

A counter counts pages.  Charging walks from a counter up through its parents and
stops at the first level that would go over its max: that level's failcnt is bumped
(and only that one) and the levels below it are uncharged again.  v1's
max_usage_in_bytes is the counter's watermark; failcnt is its failcnt.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from .. import parse
from ..kernel import PAGE_SIZE

# include/linux/page_counter.h: PAGE_COUNTER_MAX = LONG_MAX / PAGE_SIZE (64-bit)
PAGE_COUNTER_MAX = (2**63 - 1) // PAGE_SIZE


@dataclass(eq=False)
class PageCounter:
    """struct page_counter: usage, max, watermark and failcnt, in pages."""

    parent: PageCounter | None = None
    usage: int = 0
    max: int = PAGE_COUNTER_MAX
    watermark: int = 0
    failcnt: int = 0
    # page_counter->track_failcnt (6.13+): v1's tcpmem counter leaves failcnt at 0
    track_failcnt: bool = True
    # cgroup v2 (include/linux/page_counter.h): memory.min, memory.low and memory.high (the
    # swap counter's high is memory.swap.high), the effective protection computed by
    # page_counter_calculate_protection() (emin, elow), the protected usage propagated up the
    # tree (min_usage, low_usage and the parents' children_*_usage), and the watermark that
    # a write to memory.peak resets (local_watermark)
    min: int = 0
    low: int = 0
    high: int = PAGE_COUNTER_MAX
    emin: int = 0
    elow: int = 0
    min_usage: int = 0
    low_usage: int = 0
    children_min_usage: int = 0
    children_low_usage: int = 0
    local_watermark: int = 0
    # page_counter->protection_support: only memcg->memory tracks protected usage (v2)
    protection_support: bool = False
    # container_of(counter, struct mem_cgroup, memory): the group that owns this counter
    owner: object = None

    def ancestors(self):
        """This counter and every parent up to the top."""
        c = self
        while c is not None:
            yield c
            c = c.parent

    def try_charge(self, nr_pages: int) -> PageCounter | None:
        """page_counter_try_charge(): charge every level or none.

        Returns None on success, or the counter whose max would have been exceeded.
        The check is `new > max`, so usage may reach max exactly.
        """
        # (the walks up the levels are plain loops: these run for every charge)
        c = self
        while c is not None:
            new = c.usage + nr_pages
            if new > c.max:
                # mm/page_counter.c: failcnt is bumped only at the failing level
                if c.track_failcnt:
                    c.failcnt += 1
                d = self
                while d is not c:  # undo the levels below it
                    d.usage -= nr_pages
                    if d.protection_support:
                        propagate_protected_usage(d, d.usage)
                    d = d.parent
                return c
            c.usage = new
            if c.protection_support:
                propagate_protected_usage(c, new)
            if new > c.watermark:
                c.watermark = new
            c = c.parent
        return None

    def charge(self, nr_pages: int) -> None:
        """page_counter_charge(): charge unconditionally; usage may exceed max."""
        c = self
        while c is not None:
            c.usage += nr_pages
            if c.protection_support:
                propagate_protected_usage(c, c.usage)
            if c.usage > c.watermark:
                c.watermark = c.usage
            c = c.parent

    def uncharge(self, nr_pages: int) -> None:
        """page_counter_uncharge(): page_counter_cancel() at every level."""
        c = self
        while c is not None:
            c.usage -= nr_pages
            # mm/page_counter.c: page_counter_cancel WARNs on underflow and resets to 0
            if c.usage < 0:
                c.usage = 0
            if c.protection_support:
                propagate_protected_usage(c, c.usage)
            c = c.parent

    def set_max(self, nr_pages: int) -> int:
        """page_counter_set_max(): 0, or -EBUSY when usage is already above nr_pages."""
        if self.usage > nr_pages:
            return -errno.EBUSY
        self.max = nr_pages
        return 0

    def set_min(self, nr_pages: int) -> None:
        """page_counter_set_min(): memory.min; the protected usage follows."""
        self.min = nr_pages
        for c in self.ancestors():
            propagate_protected_usage(c, c.usage)

    def set_low(self, nr_pages: int) -> None:
        """page_counter_set_low(): memory.low; the protected usage follows."""
        self.low = nr_pages
        for c in self.ancestors():
            propagate_protected_usage(c, c.usage)

    def reset_watermark(self) -> None:
        """memory.max_usage_in_bytes write: the watermark becomes the current usage."""
        self.watermark = self.usage

    def margin(self) -> int:
        """Pages left below max (0 when at or over it)."""
        return max(0, self.max - self.usage)


def propagate_protected_usage(c: PageCounter, usage: int) -> None:
    """mm/page_counter.c: propagate_protected_usage() - the part of usage under min
    (under low) is this counter's min_usage (low_usage); the parent's
    children_min_usage (children_low_usage) is the sum of its children's."""
    parent = c.parent
    if parent is None:
        return
    protected = min(usage, c.min)
    if protected != c.min_usage:
        parent.children_min_usage += protected - c.min_usage
        c.min_usage = protected
    protected = min(usage, c.low)
    if protected != c.low_usage:
        parent.children_low_usage += protected - c.low_usage
        c.low_usage = protected


def effective_protection(usage: int, parent_usage: int, setting: int, parent_effective: int,
                         siblings_protected: int, recursive_protection: bool) -> int:
    """mm/page_counter.c: effective_protection() - a child's share of its parent's
    effective protection: what it claims and uses (min(usage, setting)); when the
    children together claim more than the parent has, shares in proportion to their
    protected usage; with memory_recursiveprot, the protection the children leave
    unclaimed goes to them in proportion to their unprotected usage."""
    protected = min(usage, setting)
    if siblings_protected > parent_effective:
        return protected * parent_effective // siblings_protected
    ep = protected
    if not recursive_protection:
        return ep
    if parent_effective > siblings_protected and parent_usage > siblings_protected \
            and usage > protected:
        unclaimed = parent_effective - siblings_protected
        unclaimed *= usage - protected
        unclaimed //= parent_usage - siblings_protected
        ep += unclaimed
    return ep


def page_counter_calculate_protection(root: PageCounter, counter: PageCounter,
                                      recursive_protection: bool) -> None:
    """mm/page_counter.c: page_counter_calculate_protection() (6.10+; before, the same in
    mm/memcontrol.c) - counter's emin and elow for reclaim of root's subtree.  The
    reclaim target's own values are not computed (they may be stale, and are ignored:
    mem_cgroup_unprotected); the target's children get their settings as they are."""
    if root is counter:
        return
    usage = counter.usage
    if not usage:
        return
    parent = counter.parent
    if parent is root:
        counter.emin = counter.min
        counter.elow = counter.low
        return
    parent_usage = parent.usage
    counter.emin = effective_protection(usage, parent_usage, counter.min, parent.emin,
                                        parent.children_min_usage, recursive_protection)
    counter.elow = effective_protection(usage, parent_usage, counter.low, parent.elow,
                                        parent.children_low_usage, recursive_protection)


def page_counter_memparse(text: str, max_token: str = "-1") -> int:
    """mm/page_counter.c: page_counter_memparse() - a size in bytes to whole pages.

    The exact max_token means PAGE_COUNTER_MAX; otherwise memparse() must consume the
    whole string, and bytes are divided by PAGE_SIZE (rounding down) and clamped to
    PAGE_COUNTER_MAX.  Raises OSError(EINVAL) for anything else.
    """
    if text == max_token:
        return PAGE_COUNTER_MAX
    value, rest = parse.memparse(text)
    if rest:
        raise OSError(errno.EINVAL, "Invalid argument")
    return min(value // PAGE_SIZE, PAGE_COUNTER_MAX)
