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
