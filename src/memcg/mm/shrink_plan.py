"""How much to ask of whom: the userspace shrinker's decision, as a pure function.

The 2013 mempressure proposal's kernel side scales the reclaim target across the
registered shrinkers by how much each holds, as mm/shrinker.c do_shrink_slab scales a
scan by each shrinker's freeable count ("delta = freeable >> priority ... total_scan").
This module holds that arithmetic alone - no state, no I/O - so the model's
mempressure.shrinker and a daemon serving the same protocol on a real kernel make the
same requests from the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

PAGE_SIZE = 4096  # include/asm-generic/page.h (x86-64: 4 KiB)


@dataclass(frozen=True)
class ShrinkPlan:
    """The chunks to ask of each shrinker (in input order) and the shortfall still owed."""

    requests: tuple[int, ...]
    debt_pages: int


def shrink_plan(debt_pages: int, holdings: list[tuple[int, int]],
                page_size: int = PAGE_SIZE) -> ShrinkPlan:
    """Split a shortfall of debt_pages across shrinkers holding (chunks, chunk_size) each.

    Each shrinker's share of the target is proportional to the bytes it holds
    (do_shrink_slab: the scan is scaled by freeable / total), rounded down to whole
    chunks and never more than it holds.  The pages the requests cover are taken off
    the debt; what is left accumulates until it covers a chunk.  With nothing held the
    debt is forgotten.
    """
    held = [c * size for c, size in holdings]
    total = sum(held)
    if total <= 0 or debt_pages <= 0:
        return ShrinkPlan(tuple(0 for _ in holdings), 0 if total <= 0 else max(0, debt_pages))
    target = min(debt_pages * page_size, total)
    requests = []
    for (chunks, size), b in zip(holdings, held):
        share = target * b // total  # do_shrink_slab: total_scan scaled by freeable
        requests.append(min(chunks, share // size))
    # Rounding down may leave the whole target unasked when every share is under a
    # chunk; then the largest holder covers it, as a single shrinker would.
    if not any(requests):
        i = max(range(len(holdings)), key=lambda j: (held[j], -j))
        chunks, size = holdings[i]
        requests[i] = min(chunks, target // size)
    covered = sum(-(-n * size // page_size) for n, (_, size) in zip(requests, holdings))
    return ShrinkPlan(tuple(requests), max(0, debt_pages - covered))


# --- when to ask: the policy of memcg shrinkerd, for a kernel without the in-kernel hook ---
#
# Mainline has no mempressure.shrinker, so on a real kernel a daemon asks instead
# (memcg.shrinkerd), from the notifications mm/memcontrol-v1.c gives user space.  The
# simulated kernel runs the same policy when it predicts such a kernel
# (SimKernel(shrinker="shrinkerd")), so both ask from the same arithmetic below.

# mm/vmpressure.c: vmpressure_win (SWAP_CLUSTER_MAX * 16 pages), vmpressure_level_med
# (60) and vmpressure_level_critical (95): a window's shortfall is at least this share
# of it when the level is reported.
VMPRESSURE_WIN = 512
VMPRESSURE_LEVEL_MED = 60
VMPRESSURE_LEVEL_CRITICAL = 95
LEVEL_SHARE = {"low": 0, "medium": VMPRESSURE_LEVEL_MED, "critical": VMPRESSURE_LEVEL_CRITICAL}
MARGIN_MIN = 4 << 20
# A request counts as in flight (its memory not yet freed) this long at most (seconds) ...
SETTLE = 0.2
# ... or this long once its client has read it from its eventfd and usage has gone down.
TAKEN = 0.005
BACKOFF_BASE = 0.05    # first back-off of a client that did not free; doubles per strike
BACKOFF_MAX = 5.0


def default_margin(limit: int) -> int:
    """The margin under a limit where asking starts: a quarter of the limit, at least
    4 MiB (room for the allocator to run on while a request travels)."""
    return max(limit // 4, MARGIN_MIN)


def usage_thresholds(limit: int, margin: int) -> tuple[int, ...]:
    """The usage thresholds registered under a limit: the high mark (limit - margin)
    and limit - margin / 2 (memory.usage_in_bytes events, mm/memcontrol-v1.c)."""
    return tuple(t for t in (limit - margin, limit - margin // 2) if t > 0)


def over_high_mark(usage: int, limit: int, margin: int) -> bool:
    """Usage at or above the high mark, where its threshold event fires
    (mm/memcontrol-v1.c __mem_cgroup_threshold: a threshold is crossed once
    threshold <= usage)."""
    return usage >= limit - margin


def report_may_cross(usage_read: int, reported: int, limit: int, margin: int) -> bool:
    """Whether a client's "+N" is worth a usage check: usage as last read plus the bytes
    reported since reaches the high mark (or usage was never read).  Memory nobody
    reports is left to the usage threshold's own event."""
    return usage_read < 0 or over_high_mark(usage_read + reported, limit, margin)


def usage_shortfall(usage: int, limit: int, margin: int, pending: int) -> int:
    """Bytes to ask for at a usage check above the high mark: what brings usage to
    limit - 2 * margin, less what is asked and cannot show in usage yet."""
    return usage - (limit - 2 * margin) - pending


def level_shortfall(level: str, pending_pages: int) -> int:
    """Pages to ask for at a memory.pressure_level event: a window reported at this
    level fell short by at least this share of it (low: reclaim keeps up)."""
    return VMPRESSURE_WIN * LEVEL_SHARE[level] // 100 - pending_pages


def request_settled(age: float, read: bool, shown: bool, taken: float = TAKEN) -> bool:
    """Whether a request stops counting as in flight: SETTLE has passed, or its client
    has read it (the eventfd counter is 0 again), `taken` has passed and usage has been
    read lower than when it was asked."""
    return age >= SETTLE or (read and shown and age >= taken)


def backoff_seconds(strikes: int) -> float:
    """How long a client with this many unmet requests is not asked (doubling)."""
    return min(BACKOFF_MAX, BACKOFF_BASE * 2 ** strikes)
