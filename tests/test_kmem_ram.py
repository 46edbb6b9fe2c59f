"""Kernel memory takes machine memory: slab pages, kernel stacks, page tables and per-CPU
chunks come from the same free pages as user memory (mm/slub.c: allocate_slab,
kernel/fork.c: alloc_thread_stack_node, mm/memory.c: __pte_alloc, mm/percpu-vm.c), so
they lower the free count, wake reclaim, can call the global OOM killer and go back when
they are freed."""

import memcg

PAGE = 4096


def kernel_pages(k):
    return sum(k.sys.kernel_pages.values())


def test_fork_bomb_in_an_unlimited_group_cannot_exceed_the_machine():
    # a shell with no resident image of its own (profile worker_rss_bytes 0), so the
    # OOM killer's badness ties on the children
    k = memcg.SimKernel(memory="32M", cpus=2, swap="0",
                        profile={"worker_rss_bytes": 0, "worker_pgtables_bytes": 0})
    total = k.sys.mem.nr_pages
    k.mkdir("/g")
    shell = k.spawn("/g")
    free0, kernel0 = k.debugfs()["nr_free_pages"], kernel_pages(k)
    children, refused = [], 0
    for _ in range(600):  # 600 forks of ~83 KiB each: half as much again as the machine
        try:
            children.append(shell.fork())
        except OSError:
            refused += 1
    kmem = int(k.read("/g/memory.kmem.usage_in_bytes"))
    # every charged kernel page is a page of the machine
    assert kmem <= total * PAGE
    assert kmem > total * PAGE * 3 // 4
    dbg = k.debugfs()
    assert dbg["nr_free_pages"] < dbg["watermarks"]["low"]
    assert dbg["nr_free_pages"] + kernel_pages(k) == total  # nothing else is in use
    # the kernel's answer to a full machine: the global OOM killer, here the newest
    # children (all of badness 0: mm/oom_kill.c select_bad_process keeps the last tie)
    assert dbg["global_oom_kills"] > 150
    killed = [c for c in children if c.state == "oom_killed"]
    assert len(killed) == dbg["global_oom_kills"]
    assert shell.state == "running"
    # freeing gives every page back
    for c in children:
        if c.state == "running":
            c.exit()
    shell.exit()
    assert int(k.read("/g/memory.kmem.usage_in_bytes")) < 64 * PAGE  # the stock's rest
    k.write("/g/memory.force_empty", "0")
    assert k.debugfs()["nr_free_pages"] == free0
    assert kernel_pages(k) == kernel0


def test_each_fork_takes_its_kernel_memory_from_the_free_pages():
    k = memcg.SimKernel(memory="256M", cpus=2, swap="0")
    k.mkdir("/g")
    t = k.spawn("/g")
    t.fork()  # warm: the caches' first slabs
    free0 = k.debugfs()["nr_free_pages"]
    stacks0 = k.sys.kernel_pages["KernelStack"]
    kids = [t.fork() for _ in range(100)]
    used = free0 - k.debugfs()["nr_free_pages"]
    # 100 forks of 83640 bytes (docs/kmem.md), packed into slab pages, plus 4 stack pages each
    assert 100 * 83640 // PAGE <= used <= 100 * 83640 // PAGE + 40
    assert k.sys.kernel_pages["KernelStack"] - stacks0 == 100 * 4
    for c in kids:
        c.exit()
    assert k.debugfs()["nr_free_pages"] >= free0 - 2  # a slab left partly used


def test_kernel_memory_makes_global_reclaim_take_page_cache():
    k = memcg.SimKernel(memory="64M", cpus=2, swap="0")
    reader = k.spawn("/")
    reader.read_file("big", 48 << 20)
    k.mkdir("/g")
    shell = k.spawn("/g")
    for _ in range(400):  # ~32M of kernel memory: more than is free
        shell.fork()
    dbg = k.debugfs()
    assert dbg["global_oom_kills"] == 0  # the page cache made room
    assert dbg["nr_free_pages"] >= dbg["watermarks"]["min"]
    assert int(k.read("/g/memory.kmem.usage_in_bytes")) > 30 << 20
    cache = int(dict(line.split() for line in k.read("/memory.stat").splitlines())["total_cache"])
    assert cache < 40 << 20


def test_page_tables_take_frames_and_give_them_back():
    k = memcg.SimKernel(memory="256M", cpus=2, swap="0")
    k.mkdir("/g")
    t = k.spawn("/g")
    before = k.sys.kernel_pages["PageTables"]
    t.touch_anon(32 << 20)  # 2 MiB-aligned: 16 PTE pages
    assert k.sys.kernel_pages["PageTables"] - before == 16
    t.free_anon(32 << 20)
    assert k.sys.kernel_pages["PageTables"] == before
