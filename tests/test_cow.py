"""Fork and copy-on-write in the model (mm/memory.c: copy_page_range, do_wp_page).

The figures the real kernel gives are held in tests/test_differential.py (the same
workloads on both kernels); these check the model's own bookkeeping: every mapper's
rss, the anon_vma tree, swap entries shared by the mappers, and a fork that fails.
"""

from __future__ import annotations

import errno

import pytest

import memcg
from memcg import parse
from memcg.mm.oom_kill import oom_badness

MiB = 1 << 20


def rss(k, group):
    return parse.parse_stat(k.read(f"{group}/memory.stat"))["rss"]


def test_every_mapper_counts_the_shared_pages():
    k = memcg.SimKernel(memory="1G")
    k.mkdir("/a")
    parent = k.spawn("/a")
    parent.touch_anon(8 * MiB)
    children = [parent.fork() for _ in range(3)]
    assert all(c.mm.anon_rss == 2048 for c in children)
    assert rss(k, "/a") == 8 * MiB                    # NR_ANON_MAPPED: once per page
    # get_mm_rss() + page tables: the same for each child as for the parent's anon
    assert oom_badness(children[0], 1 << 20) == 2048 + children[0].mm.pgtables_pages()
    children[0].write_anon(1 * MiB)
    assert children[0].mm.anon_rss == 2048 and rss(k, "/a") == 9 * MiB
    parent.exit()
    children[1].exit()
    assert rss(k, "/a") == 9 * MiB                    # the last two still map them
    children[2].exit()
    assert rss(k, "/a") == 8 * MiB                    # children[0]'s: 7 MiB shared, its copy
    children[0].exit()
    assert rss(k, "/a") == 0 and int(k.read("/a/memory.usage_in_bytes")) <= 64 * 4096
    assert not any(m.kind == "anon" for m in k.sys.mappings.values())


def test_a_page_unmapped_by_its_first_mapper_stays_reclaimable():
    """The page records another mapper once its first one unmaps it: reclaim swaps it out
    from there, and the swap entry is referenced once per mapper."""
    k = memcg.SimKernel(memory="1G", swap="64M")
    k.mkdir("/a")
    k.write("/a/memory.limit_in_bytes", "12M")
    parent = k.spawn("/a")
    parent.touch_anon(4 * MiB)
    child = parent.fork()
    grandchild = child.fork()
    parent.exit()
    sys = k.sys
    vma = child.mm.vmas[0]
    pfns = vma.slots[:1024]
    assert (pfns >= 0).all() and (sys.mem.mapping[pfns] == vma.id).all()
    child.touch_anon(12 * MiB)                        # over the limit: the old pages swap
    swapped = vma.slots[:1024] <= -2
    assert swapped.any()
    entries = vma.slots[:1024][swapped]
    assert (grandchild.mm.vmas[0].slots[:1024][swapped] == entries).all()
    slots = -entries - 2
    assert (sys.swap.swap_map[slots] == 2).all()
    assert grandchild.mm.swapents == len(entries) <= child.mm.swapents   # + its own pages
    child.exit()
    assert (sys.swap.swap_map[slots] == 1).all()      # the grandchild's references
    grandchild.exit()
    assert sys.swap.nr_used == 0


def test_parent_write_copies_and_the_child_keeps_the_old_page():
    k = memcg.SimKernel(memory="1G")
    k.mkdir("/a")
    k.mkdir("/b")
    parent = k.spawn("/a")
    parent.touch_anon(2 * MiB)
    child = parent.fork()
    child.move("/b")
    old = parent.mm.vmas[0].slots[:512].copy()
    parent.write_anon(2 * MiB)
    assert not (parent.mm.vmas[0].slots[:512] == old).any()
    assert (child.mm.vmas[0].slots[:512] == old).all()
    assert rss(k, "/a") == 4 * MiB and rss(k, "/b") == 0
    child.write_anon(2 * MiB)                         # alone with its pages: reused
    assert (child.mm.vmas[0].slots[:512] == old).all() and rss(k, "/b") == 0


def test_a_fork_that_fails_leaves_nothing_behind():
    """The parent is the only task to kill: the OOM killer takes it while its fork copies
    the page tables, and the fork fails with everything it took given back."""
    k = memcg.SimKernel(memory="1G")
    k.mkdir("/g")
    k.write("/g/memory.limit_in_bytes", "8400K")
    parent = k.spawn("/g")
    parent.touch_anon(8 * MiB)
    with pytest.raises(OSError) as e:
        for _ in range(8):
            parent.fork()
    assert e.value.errno == errno.ENOMEM
    assert parent.state == "oom_killed"
    for c in parent.children:
        c.exit()
    assert rss(k, "/g") == 0
    assert not any(m.kind == "anon" for m in k.sys.mappings.values())


def test_an_mlocked_parent_leaves_its_shared_pages_evictable():
    """mlock is not inherited: when the locked parent goes, the pages its child still
    maps leave the unevictable list (munlock_folio) for the inactive anon list."""
    k = memcg.SimKernel(memory="1G")
    k.mkdir("/a")
    parent = k.spawn("/a")
    parent.touch_anon(2 * MiB, locked=True)
    child = parent.fork()
    st = parse.parse_stat(k.read("/a/memory.stat"))
    assert st["unevictable"] == 2 * MiB
    child.write_anon(1 * MiB)                         # its copies: not locked
    st = parse.parse_stat(k.read("/a/memory.stat"))
    assert st["unevictable"] == 2 * MiB and st["inactive_anon"] == 1 * MiB
    parent.exit()
    st = parse.parse_stat(k.read("/a/memory.stat"))
    assert st["unevictable"] == 0 and st["inactive_anon"] == 2 * MiB and st["rss"] == 2 * MiB
