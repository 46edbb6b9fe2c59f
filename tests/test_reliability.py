"""Regressions for issue 17 (reliability): defects found by hostile but careful use."""

import memcg


def test_dying_group_freed_during_reclaim_walk():
    """A removed group still holding page cache is freed while machine-wide reclaim walks
    the tree (mem_cgroup_iter skips a freed css); the walk must not crash."""
    k = memcg.SimKernel(memory="1G")
    k.mkdir("/g")
    t = k.spawn("/g")
    t.read_file("f", 1 << 20)
    t.exit()
    k.rmdir("/g")
    k.spawn("/").read_file("big", 4 << 30)
    # the dying group's cache was reclaimed and the group freed (css_free)
    assert k.sys.dying == [] or len(k.sys.dying) == 0
    assert len(k.sys.memcgs) == 1
