"""shrink_plan: the userspace shrinker's decision, shared by the model's mempressure.shrinker."""

from hypothesis import given, strategies as st

from memcg.mm import mempressure
from memcg.mm.shrink_plan import PAGE_SIZE, report_may_cross, shrink_plan

MiB = 1 << 20

holdings_st = st.lists(st.tuples(st.integers(0, 200), st.sampled_from([4096, 65536, MiB, 3 * MiB])),
                       min_size=1, max_size=6)


def test_proportional_to_what_each_holds():
    # 64 MiB owed; one holds 96 MiB, one 32 MiB: asked 48 and 16 chunks of 1 MiB.
    plan = shrink_plan(64 * MiB // PAGE_SIZE, [(96, MiB), (32, MiB)])
    assert plan.requests == (48, 16)
    assert plan.debt_pages == 0


def test_small_debt_accumulates_then_goes_to_the_largest_holder():
    plan = shrink_plan(10, [(5, MiB), (7, MiB)])
    assert plan.requests == (0, 0) and plan.debt_pages == 10
    plan = shrink_plan(256, [(5, MiB), (7, MiB)])
    assert plan.requests == (0, 1) and plan.debt_pages == 0


def test_nothing_held_forgets_the_debt():
    assert shrink_plan(1000, [(0, MiB)]) == shrink_plan(1000, [(0, MiB)])
    assert shrink_plan(1000, [(0, MiB)]).debt_pages == 0


@given(st.integers(0, 1 << 20), holdings_st)
def test_never_asks_for_more_than_held_nor_more_than_owed_plus_a_chunk(debt, holdings):
    plan = shrink_plan(debt, holdings)
    assert len(plan.requests) == len(holdings)
    for n, (chunks, _) in zip(plan.requests, holdings):
        assert 0 <= n <= chunks
    asked = sum(n * size for n, (_, size) in zip(plan.requests, holdings))
    assert asked <= debt * PAGE_SIZE
    assert 0 <= plan.debt_pages <= debt


class _Efd:
    def __init__(self, fd):
        self.fd, self.asked = fd, []

    def fileno(self):
        return self.fd

    def signal(self, n=1):
        self.asked.append(n)


class _Memcg:
    id = 1

    def subtree(self):
        return [self]


class _Sys:
    def __init__(self):
        self.user_shrinkers, self.shrinker_debt = {}, {}


@given(st.lists(st.integers(0, 1 << 16), min_size=1, max_size=5), holdings_st)
def test_the_model_asks_what_the_plan_says(shortfalls, holdings):
    """mempressure.shrinker_request makes exactly the requests shrink_plan computes, so
    a daemon using shrink_plan on a real kernel asks what the model predicts."""
    sys, memcg = _Sys(), _Memcg()
    efds = [_Efd(i) for i in range(len(holdings))]
    sys.user_shrinkers[1] = [mempressure.UserShrinker(e, size, chunks)
                             for e, (chunks, size) in zip(efds, holdings)]
    state = list(holdings)
    debt = 0
    for short in shortfalls:
        live = [i for i, (c, _) in enumerate(state) if c > 0]
        before = [len(e.asked) for e in efds]
        mempressure.shrinker_request(sys, memcg, short)
        if not live:
            debt = 0
            continue
        plan = shrink_plan(debt + short, [state[i] for i in live])
        for i, n in zip(live, plan.requests):
            got = efds[i].asked[before[i]:]
            assert got == ([n] if n else [])
            state[i] = (state[i][0] - n, state[i][1])
        debt = plan.debt_pages
        assert sys.shrinker_debt[1] == debt


def test_a_report_is_checked_once_it_may_reach_the_high_mark():
    """A "+N" is a usage check once usage as last read plus what was reported since
    reaches limit - margin (or usage was never read); short of that it is not read."""
    MiB = 1 << 20
    limit, margin = 64 * MiB, 12 * MiB
    assert report_may_cross(-1, 0, limit, margin)
    assert not report_may_cross(40 * MiB, 11 * MiB, limit, margin)
    assert report_may_cross(40 * MiB, 12 * MiB, limit, margin)
    assert report_may_cross(53 * MiB, 0, limit, margin)
