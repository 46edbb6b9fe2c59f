"""PageCounter and size parsing (mm/page_counter.c, lib/cmdline.c).

The counters are hierarchical: a charge walks from a counter up to the top and stops at
the first level that would go over its max.  Only that level's failcnt is bumped and the
levels below it are uncharged again.  Sizes written to limit files go through
page_counter_memparse(): "-1" is unlimited, otherwise memparse() with C base prefixes and
K/M/G/T/P/E suffixes, rounded down to whole pages.
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import memcg
from memcg.mm.page_counter import PAGE_COUNTER_MAX, PageCounter, page_counter_memparse
from memcg.parse import memparse

PAGE = 4096
U64 = 2**64


def chain(*maxes):
    """Counters top first: chain(100, 50, None) -> [top, mid, leaf]; None = unlimited."""
    out = []
    parent = None
    for m in maxes:
        c = PageCounter(parent=parent)
        if m is not None:
            c.max = m
        out.append(c)
        parent = c
    return out


# --- try_charge ----------------------------------------------------------------------


def test_try_charge_success_charges_every_level():
    top, mid, leaf = chain(None, None, None)
    assert leaf.try_charge(7) is None
    assert (top.usage, mid.usage, leaf.usage) == (7, 7, 7)
    assert (top.watermark, mid.watermark, leaf.watermark) == (7, 7, 7)
    assert (top.failcnt, mid.failcnt, leaf.failcnt) == (0, 0, 0)


def test_try_charge_stops_at_first_ancestor_over_max():
    top, mid, leaf = chain(100, 50, None)
    assert leaf.try_charge(30) is None
    fail = leaf.try_charge(30)
    assert fail is mid
    # the failed charge left no trace below, at, or above the failing level
    assert (top.usage, mid.usage, leaf.usage) == (30, 30, 30)
    assert mid.failcnt == 1
    assert leaf.failcnt == 0 and top.failcnt == 0


def test_try_charge_failing_at_the_top_undoes_lower_levels():
    top, mid, leaf = chain(40, 1000, None)
    assert leaf.try_charge(41) is top
    assert (top.usage, mid.usage, leaf.usage) == (0, 0, 0)
    assert (top.failcnt, mid.failcnt, leaf.failcnt) == (1, 0, 0)
    # The levels below were charged speculatively before the top refused, and
    # page_counter_try_charge() raised their watermarks on the way; the top's stays.
    assert (top.watermark, mid.watermark, leaf.watermark) == (0, 41, 41)
    assert leaf.try_charge(40) is None
    assert (top.usage, mid.usage, leaf.usage) == (40, 40, 40)


def test_failcnt_only_at_the_lowest_failing_level():
    # both the leaf and the top would be over: the walk stops at the leaf
    top, leaf = chain(10, 5)
    assert leaf.try_charge(20) is leaf
    assert leaf.failcnt == 1 and top.failcnt == 0


def test_usage_may_equal_max():
    (c,) = chain(10)
    assert c.try_charge(10) is None
    assert c.usage == 10
    assert c.try_charge(1) is c
    assert c.usage == 10 and c.failcnt == 1


def test_sibling_charges_share_the_parent_limit():
    parent = PageCounter()
    parent.max = 10
    a, b = PageCounter(parent=parent), PageCounter(parent=parent)
    assert a.try_charge(6) is None
    assert b.try_charge(5) is parent
    assert b.usage == 0 and parent.usage == 6
    assert b.try_charge(4) is None
    assert parent.usage == 10


def test_charge_forces_over_max_and_updates_watermark():
    top, leaf = chain(5, 3)
    leaf.charge(8)
    assert leaf.usage == 8 > leaf.max
    assert top.usage == 8 > top.max
    assert leaf.watermark == 8 and top.watermark == 8
    assert leaf.failcnt == 0 and top.failcnt == 0
    # a later try_charge fails at the leaf
    assert leaf.try_charge(1) is leaf


def test_uncharge_every_level_and_clamps_at_zero():
    top, leaf = chain(None, None)
    leaf.try_charge(5)
    top.try_charge(2)  # charged at the top only
    leaf.uncharge(5)
    assert leaf.usage == 0 and top.usage == 2
    leaf.uncharge(3)  # underflow: WARN and reset to 0 at every level
    assert leaf.usage == 0 and top.usage == 0


def test_watermark_is_high_water_mark_and_resets_to_usage():
    (c,) = chain(None)
    c.try_charge(10)
    c.uncharge(6)
    assert c.usage == 4 and c.watermark == 10
    c.try_charge(3)
    assert c.watermark == 10
    c.reset_watermark()
    assert c.watermark == 7
    c.try_charge(5)
    assert c.watermark == 12


def test_set_max_ebusy_below_usage():
    (c,) = chain(None)
    c.try_charge(10)
    assert c.set_max(9) == -errno.EBUSY
    assert c.max == PAGE_COUNTER_MAX
    assert c.set_max(10) == 0  # equal to usage is fine
    assert c.max == 10
    assert c.set_max(100) == 0 and c.max == 100


def test_margin():
    (c,) = chain(10)
    c.try_charge(4)
    assert c.margin() == 6
    c.charge(10)
    assert c.margin() == 0


# --- memparse / page_counter_memparse ----------------------------------------------------


@pytest.mark.parametrize("text, value, rest", [
    ("0", 0, ""),
    ("4096", 4096, ""),
    ("1k", 1024, ""),
    ("1K", 1024, ""),
    ("3m", 3 << 20, ""),
    ("2M", 2 << 20, ""),
    ("1G", 1 << 30, ""),
    ("1g", 1 << 30, ""),
    ("5T", 5 << 40, ""),
    ("1P", 1 << 50, ""),
    ("1E", 1 << 60, ""),
    ("0x10", 16, ""),
    ("0X10", 16, ""),
    ("0x10k", 16 << 10, ""),
    ("0x1E", 0x1E, ""),  # E is a hex digit here, not the exa suffix
    ("010", 8, ""),  # leading 0: octal
    ("010M", 8 << 20, ""),
    ("08", 0, "8"),  # 8 is no octal digit
    ("12abc", 12, "abc"),
    ("1KB", 1024, "B"),  # one suffix only
    ("1 K", 1, " K"),
    ("16E", 0, ""),  # 2^64 wraps to 0
    ("18446744073709551616", 0, ""),  # 2^64: digits wrap like simple_strtoull
    ("18446744073709551617", 1, ""),
    ("18446744073709551615", U64 - 1, ""),
    ("17E", 1 << 60, ""),  # (17 << 60) mod 2^64
    ("k", 0, ""),  # no digits: simple_strtoull gives 0 and memparse still takes the suffix
    ("M", 0, ""),
    ("Mx", 0, "x"),
    ("1\u212a", 1, "\u212a"),  # KELVIN SIGN lowers to "k" in Python, not in the kernel
    ("0x1\u212a", 1, "\u212a"),
])
def test_memparse(text, value, rest):
    assert memparse(text) == (value, rest)


@pytest.mark.parametrize("text", ["", "x", "-", "-2", "-1K", "+1"])
def test_memparse_no_digits_leaves_text(text):
    value, rest = memparse(text)
    if text:
        assert value == 0 and rest == text


@pytest.mark.parametrize("text, pages", [
    ("-1", PAGE_COUNTER_MAX),
    ("0", 0),
    ("4095", 0),  # rounds down
    ("4096", 1),
    ("8191", 1),
    ("8192", 2),
    ("1K", 0),
    ("4K", 1),
    ("1M", 256),
    ("1G", 262144),
    ("0x1000", 1),
    ("010000", 1),  # octal 4096
    ("8E", PAGE_COUNTER_MAX),  # 2^63 bytes -> clamped
    ("18446744073709551615", PAGE_COUNTER_MAX),
    ("16E", 0),  # wraps to 0
    ("9223372036854771712", PAGE_COUNTER_MAX),  # what an unlimited file reads back
])
def test_page_counter_memparse(text, pages):
    assert page_counter_memparse(text, "-1") == pages


@pytest.mark.parametrize("text", ["-2", "-1K", "-0", "1KB", "1 ", " 1", "abc", "08", "1.5M",
                                  "0x", "--1", "max", "1\u212a", "\uff11"])
def test_page_counter_memparse_einval(text):
    with pytest.raises(OSError) as e:
        page_counter_memparse(text, "-1")
    assert e.value.errno == errno.EINVAL


def test_page_counter_memparse_max_token_is_exact():
    assert page_counter_memparse("max", "max") == PAGE_COUNTER_MAX
    with pytest.raises(OSError):
        page_counter_memparse("-1", "max")


@pytest.mark.parametrize("text, value", [
    ("4095", 0), ("4097", 4096), (" 8K\n", 8192), ("-1", PAGE_COUNTER_MAX * PAGE),
    ("0x2000", 8192), ("16E", 0),
])
def test_limit_file_parses_like_page_counter_memparse(text, value):
    with memcg.SimKernel(memory="64M") as k:
        k.mkdir("/g")
        k.write("/g/memory.memsw.limit_in_bytes", "-1")
        k.write("/g/memory.limit_in_bytes", text)
        assert k.read("/g/memory.limit_in_bytes") == f"{value}\n"


@pytest.mark.parametrize("text", ["-2", "1KB", "abc", "1 2"])
def test_limit_file_rejects_garbage(text):
    with memcg.SimKernel(memory="64M") as k:
        k.mkdir("/g")
        with pytest.raises(OSError) as e:
            k.write("/g/memory.limit_in_bytes", text)
        assert e.value.errno == errno.EINVAL
        assert k.read("/g/memory.limit_in_bytes") == f"{PAGE_COUNTER_MAX * PAGE}\n"


# --- property: a random tree under random charges -----------------------------------------


@st.composite
def trees_and_ops(draw):
    n = draw(st.integers(1, 8))
    parents = [None] + [draw(st.integers(0, i - 1)) for i in range(1, n)]
    maxes = [draw(st.one_of(st.none(), st.integers(0, 60))) for _ in range(n)]
    ops = draw(st.lists(
        st.tuples(st.sampled_from(["charge", "uncharge"]), st.integers(0, n - 1),
                  st.integers(1, 20), st.integers(0, 10**6)),
        max_size=60))
    return parents, maxes, ops


@settings(max_examples=200, deadline=None)
@given(trees_and_ops())
def test_random_trees_keep_usage_equal_to_successful_charges(case):
    parents, maxes, ops = case
    n = len(parents)
    counters = []
    for i in range(n):
        c = PageCounter(parent=counters[parents[i]] if parents[i] is not None else None)
        if maxes[i] is not None:
            c.max = maxes[i]
        counters.append(c)

    def path(i):
        while i is not None:
            yield i
            i = parents[i]

    expected = [0] * n
    failcnt = [0] * n
    peak = [0] * n
    live: list[tuple[int, int]] = []  # successful charges: (counter index, pages)
    for op, i, nr, pick in ops:
        if op == "charge":
            # reference: the first level on the path whose usage would exceed its max
            want_fail = next((j for j in path(i)
                              if maxes[j] is not None and expected[j] + nr > maxes[j]), None)
            fail = counters[i].try_charge(nr)
            if want_fail is None:
                assert fail is None
                for j in path(i):
                    expected[j] += nr
                    peak[j] = max(peak[j], expected[j])
                live.append((i, nr))
            else:
                assert fail is counters[want_fail]
                failcnt[want_fail] += 1
                # levels below the failing one were charged (and their watermark
                # raised) before being cancelled
                for j in path(i):
                    if j == want_fail:
                        break
                    peak[j] = max(peak[j], expected[j] + nr)
        elif live:
            i, nr = live.pop(pick % len(live))
            counters[i].uncharge(nr)
            for j in path(i):
                expected[j] -= nr
        for j, c in enumerate(counters):
            assert c.usage == expected[j]
            assert c.usage <= c.max
            assert c.watermark >= c.usage
            assert c.watermark == peak[j]
            assert c.failcnt == failcnt[j]
