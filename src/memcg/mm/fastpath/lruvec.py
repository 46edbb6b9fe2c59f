"""The idle rounds of shrink_lruvec()'s scan loop, taken at once (mm/vmscan.c).

shrink_lruvec() scans the evictable lists round by round, SWAP_CLUSTER_MAX pages of
each per round.  Once nothing is left to scan on the inactive lists, a round only
passes the active lists to shrink_list(), which - while the scan control does not let
it deactivate them (sc->may_deactivate) - does nothing but note skipped_deactivate.
With the reclaim goal not met (or the scan already adjusted), every further round is
such a round until the active counts run out; at low priorities against a long active
list (a write stream's written-back pages) they are hundreds per call.
"""

from __future__ import annotations

from ..mmzone import LRU_ACTIVE_ANON, LRU_ACTIVE_FILE, LRU_INACTIVE_ANON, LRU_INACTIVE_FILE


def skip_idle_rounds(nr: list, may_deactivate: int, deactivate_anon: int,
                     deactivate_file: int) -> bool:
    """Whether every round left of shrink_lruvec()'s loop is idle: no inactive pages to
    scan and no active list that may be deactivated.  If so, the rounds are taken: the
    active counts are used up (the caller notes skipped_deactivate and leaves the loop).
    The caller has checked that no round could adjust the scan (the goal is not met, or
    it was adjusted already)."""
    if nr[LRU_INACTIVE_ANON] or nr[LRU_INACTIVE_FILE] or not nr[LRU_ACTIVE_FILE]:
        return False
    if nr[LRU_ACTIVE_FILE] and may_deactivate & deactivate_file:
        return False
    if nr[LRU_ACTIVE_ANON] and may_deactivate & deactivate_anon:
        return False
    nr[LRU_ACTIVE_ANON] = nr[LRU_ACTIVE_FILE] = 0
    return True
