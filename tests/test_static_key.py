"""Static keys: a reference-counted switch that each hook site tests inline
(include/linux/jump_label.h); a hook whose key is off does nothing, whatever other
kernels in the process have switched on."""

from __future__ import annotations

import memcg
from memcg.static_key import StaticKey


def test_hook_sites_follow_the_keys_of_their_own_kernel():
    old = memcg.SimKernel(memory="1G", semantics="3.8")
    old.mkdir("/a")
    old.spawn("/a").mkdirs(10, fs="tmpfs")           # key off: nothing accounted
    assert old.read("/a/memory.kmem.usage_in_bytes") == "0\n"
    new = memcg.SimKernel(memory="1G")
    new.mkdir("/b")                                   # memcg_kmem_online_key on
    assert new.debugfs()["static_keys"]["memcg_kmem_online_key"] == "on"
    new.spawn("/b").mkdirs(10, fs="tmpfs")
    old.spawn("/a").mkdirs(10, fs="tmpfs")            # the 3.8 kernel's key is still off
    assert int(new.read("/b/memory.kmem.usage_in_bytes")) > 0
    assert old.read("/a/memory.kmem.usage_in_bytes") == "0\n"
    assert new.debugfs()["static_keys"]["memcg_sockets_enabled_key"] == "off"
    new.write("/b/memory.kmem.tcp.limit_in_bytes", "1M")   # the socket key goes on
    assert new.debugfs()["static_keys"]["memcg_sockets_enabled_key"] == "on"
    assert old.debugfs()["static_keys"]["memcg_socket_limit_enabled"] == "off"


def test_a_key_switched_off_takes_its_sites_out_again():
    calls = []
    key = StaticKey("test_key")

    def site(x):
        if key.enabled:  # static_branch_unlikely(&test_key)
            key.hits += 1
            calls.append(("on", x))
            return
        calls.append(("off", x))

    assert not key                                   # no user yet
    key.static_key_slow_inc()
    key.static_key_slow_inc()
    assert key.enabled == 2
    site(1)
    key.static_key_slow_dec()
    assert key                                       # one user left
    key.static_key_slow_dec()
    assert not key
    site(2)
    key.static_branch_enable()
    assert key
    key.static_branch_enable()                       # one-way: no second user
    assert key.enabled == 1
    assert calls == [("on", 1), ("off", 2)]
    assert key.hits == 1
    assert memcg
