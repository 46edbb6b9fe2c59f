"""Static keys patch their hook sites: while no key of a kind is on anywhere in the
process, the names of its hook functions are bound to their key-off bodies."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import memcg
from memcg.static_key import StaticKey, hook_site, _ON


def test_hook_sites_are_patched_in_and_out_with_the_keys():
    # A fresh interpreter: the patch state is the whole process's.
    code = textwrap.dedent("""
        import memcg
        from memcg.fs import dcache as fs
        from memcg.mm import memcontrol, memory, slab
        from memcg.net import sock, tcp
        names = lambda: sorted({slab.kmem_cache_alloc.__name__, fs.kmem_cache_alloc.__name__,
                                memcontrol.memcg_kmem_charge_page.__name__,
                                memory.memcg_kmem_charge_page.__name__})
        assert names() == ["_kmem_cache_alloc_off", "_memcg_kmem_charge_page_off"], names()
        assert tcp.mem_cgroup_sk_alloc.__name__ == "_mem_cgroup_sk_alloc_off"
        old = memcg.SimKernel(memory="1G", semantics="3.8")
        old.mkdir("/a")
        old.spawn("/a").mkdirs(10, fs="tmpfs")           # key off: nothing accounted
        assert old.read("/a/memory.kmem.usage_in_bytes") == "0\\n"
        new = memcg.SimKernel(memory="1G")
        new.mkdir("/b")                                   # memcg_kmem_online_key on
        assert names() == ["kmem_cache_alloc", "memcg_kmem_charge_page"], names()
        new.spawn("/b").mkdirs(10, fs="tmpfs")
        old.spawn("/a").mkdirs(10, fs="tmpfs")            # the 3.8 kernel's key is still off
        assert int(new.read("/b/memory.kmem.usage_in_bytes")) > 0
        assert old.read("/a/memory.kmem.usage_in_bytes") == "0\\n"
        assert tcp.mem_cgroup_sk_alloc.__name__ == "_mem_cgroup_sk_alloc_off"
        new.write("/b/memory.kmem.tcp.limit_in_bytes", "1M")   # the socket key goes on
        assert tcp.mem_cgroup_sk_alloc.__name__ == "mem_cgroup_sk_alloc"
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_a_key_switched_off_patches_its_sites_out_again():
    calls = []

    def off(x):
        calls.append(("off", x))

    @hook_site("test-kind", off)
    def site(x):
        calls.append(("on", x))

    import types
    mod = types.ModuleType("memcg._static_key_test")
    mod.site = site
    sys.modules[mod.__name__] = mod
    try:
        assert mod.site is off                       # no key of the kind is on
        key = StaticKey("test_key", kind="test-kind")
        key.static_key_slow_inc()
        key.static_key_slow_inc()
        assert _ON["test-kind"] == 1 and mod.site.__name__ == "site"
        mod.site(1)
        key.static_key_slow_dec()
        assert mod.site.__name__ == "site"           # one user left
        key.static_key_slow_dec()
        assert mod.site is off and _ON["test-kind"] == 0
        mod.site(2)
        key.static_branch_enable()
        assert mod.site.__name__ == "site"
        key.static_branch_enable()                   # one-way: no second user
        assert key.enabled == 1
    finally:
        del sys.modules[mod.__name__]
    assert calls == [("on", 1), ("off", 2)]
    assert memcg  # the package is imported: its modules are the ones patched
