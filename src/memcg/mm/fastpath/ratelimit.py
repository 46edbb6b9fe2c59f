"""The event ratelimit over many commits at once, in closed form (mm/memcontrol-v1.c).

Every commit_charge() counts its pages as page events of the group on its CPU, and
mem_cgroup_event_ratelimit() runs the threshold check every THRESHOLDS_EVENTS_TARGET
events and the soft-limit update every SOFTLIMIT_EVENTS_TARGET.  A fault span (fault.py)
stands for many commits whose checks, but the last one's, find nothing to do: their
targets move in closed form.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..memcontrol import (MEMCG_CHARGE_BATCH, PGPGIN, SOFTLIMIT_EVENTS_TARGET,
                          THRESHOLDS_EVENTS_TARGET, MemCgroup, mem_cgroup_usage, page_events)
from ..mmzone import run_slice

if TYPE_CHECKING:
    from ...system import System


def ratelimit_after(val: int, thresh: int, soft: int, step: int, k: int):
    """mem_cgroup_event_ratelimit() over k commits of step events each, in closed form.

    val, thresh and soft are one CPU's nr_page_events and its THRESHOLDS and SOFTLIMIT
    targets.  A commit checks when val reaches the thresholds target, which then moves
    THRESHOLDS_EVENTS_TARGET past val: after the first check, every `period`-th commit
    checks.  A check also does the soft-limit work when val reached that target, which
    then moves SOFTLIMIT_EVENTS_TARGET past val.  Returns (val, thresh, soft, the first
    commit, 1-based, that does the soft-limit work or 0 if none does).
    """
    end = val + step * k
    first = max(1, -(-(thresh - val) // step))
    if first > k:
        return end, thresh, soft, 0
    period = -(-THRESHOLDS_EVENTS_TARGET // step)
    last = first + (k - first) // period * period
    new_thresh = val + step * last + THRESHOLDS_EVENTS_TARGET
    lag = soft - (val + step * first)
    soft_first = first + max(0, -(-lag // (step * period))) * period
    if soft_first > k:
        return end, new_thresh, soft, 0
    soft_period = period * max(1, -(-SOFTLIMIT_EVENTS_TARGET // (step * period)))
    soft_last = soft_first + (k - soft_first) // soft_period * soft_period
    return end, new_thresh, val + step * soft_last + SOFTLIMIT_EVENTS_TARGET, soft_first


def page_events_quiet_steps(sys: System, memcg: MemCgroup, step: int, k: int, cpu: int,
                            extra: int = 0) -> int:
    """How many of the next k commits of step pages to memcg can be counted at once.

    That is allowed while the event checks of all of them but the last would find
    nothing to do: no usage threshold of memcg or an ancestor is crossed (usage only
    grows while pages are charged, by at most step pages per commit plus a charge batch
    parked in the stock), and the soft-limit tree has nothing to re-key - or its first
    re-keying comes with the last commit, which page_events_steps() runs for real.
    extra: pages charged besides the commits' own (page tables of the faults), which
    raise usage without commits of their own.  Returns at least 1.
    """
    reach = MEMCG_CHARGE_BATCH + extra
    for m in memcg.ancestors():
        for memsw in (False, True):
            lst = m.memsw_thresholds if memsw else m.thresholds
            if not lst:
                continue
            usage = mem_cgroup_usage(sys, m, memsw)
            i = m.memsw_current_threshold if memsw else m.current_threshold
            if i >= 0 and lst[i][0] > usage:
                return 1  # a crossing downwards is pending: the next check signals it
            if i + 1 < len(lst):
                # the checks of commits 1..j stay below the next threshold up
                j = (lst[i + 1][0] - usage - reach - 1) // step
                k = min(k, j + 1)
        if k <= 1:
            return 1
    tree = sys.soft_limit_tree
    if any(m.id in tree or m.memory.usage + k * step + reach > m.soft_limit
           for m in memcg.ancestors()):
        soft_first = ratelimit_after(memcg.nr_page_events[cpu], memcg.thresh_target[cpu],
                                     memcg.softlimit_target[cpu], step, k)[3]
        if soft_first:
            k = soft_first
    return max(1, k)


def page_events_steps(sys: System, memcg: MemCgroup, step: int, k: int, cpu: int) -> None:
    """page_events() of k commits of step pages each, the checks of all but the last of
    which find nothing to do (page_events_quiet_steps): their ratelimit targets move in
    closed form, and the last commit is counted as usual."""
    if k > 1:
        val, thresh, soft, _ = ratelimit_after(memcg.nr_page_events[cpu],
                                               memcg.thresh_target[cpu],
                                               memcg.softlimit_target[cpu], step, k - 1)
        memcg.nr_page_events[cpu] = val
        memcg.thresh_target[cpu] = thresh
        memcg.softlimit_target[cpu] = soft
    page_events(sys, memcg, step, cpu)


def commit_charge_steps(sys: System, memcg: MemCgroup, pfns, cpu: int, step: int) -> None:
    """commit_charge() of len(pfns) / step commits of step pages each, the event checks of
    all but the last of which are known to find nothing to do (page_events_quiet_steps).

    pfns is an array of frames or a range of consecutive ones.
    """
    n = len(pfns)
    assert n % step == 0
    if isinstance(pfns, range):
        sys.mem.memcg[run_slice(pfns)] = memcg.id
    else:
        sys.mem.memcg[pfns] = memcg.id
    # mm/memcontrol-v1.c: memcg1_charge_statistics - one PGPGIN per folio
    sys.stats.mod(memcg.id, PGPGIN, n)
    page_events_steps(sys, memcg, step, n // step, cpu)
