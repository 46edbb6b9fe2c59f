"""Static keys: branches that cost nothing while they are off (include/linux/jump_label.h).

The kernel patches a static branch into a no-op jump while its key is off, so a hook
site on a hot path (every slab allocation, every socket) costs nothing until the
feature is used.  A key counts its users: static_key_slow_inc() turns it on at the
first, static_key_slow_dec() off after the last; static_branch_enable() is the one-way
switch of later kernels.

In the model a hook site tests its key inline, the test standing for the patched jump:

    if sys.kmem_key.enabled:  # static_branch_unlikely(&memcg_kmem_online_key)
        sys.kmem_key.hits += 1
        ...                   # the hook

One attribute test is what an unused hook costs (bench/perf.py measures it).  Each
simulated kernel has its own keys, so several kernels in one process do not see each
other's.  `hits` counts the times a hook site took its branch, so tests can see that a
key that is off did no work.
"""

from __future__ import annotations


class StaticKey:
    """struct static_key: a reference-counted on/off switch for hook sites."""

    __slots__ = ("name", "enabled", "hits")

    def __init__(self, name: str, enabled: int = 0):
        self.name = name
        # static_key->enabled: the number of users; hook sites test it inline
        self.enabled = enabled
        self.hits = 0  # times a hook site took the branch (a model figure, not a kernel one)

    def __bool__(self) -> bool:
        """static_key_enabled()."""
        return self.enabled > 0

    def static_key_slow_inc(self) -> None:
        """static_key_slow_inc(): one more user; the branch is patched in at the first."""
        self.enabled += 1

    def static_key_slow_dec(self) -> None:
        """static_key_slow_dec(): one user fewer; the branch goes away after the last."""
        if self.enabled > 0:
            self.enabled -= 1

    def static_branch_enable(self) -> None:
        """static_branch_enable(): switch on for good (memcg_kmem_online_key, 5.x+)."""
        if self.enabled <= 0:
            self.enabled = 1


def static_keys_state(keys) -> dict[str, str]:
    """The keys by name, "on" or "off" (the debugfs view)."""
    return {k.name: ("on" if k else "off") for k in keys}
