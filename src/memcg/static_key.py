"""Static keys: branches that cost nothing while they are off (include/linux/jump_label.h).

The kernel patches a static branch into a no-op jump while its key is off, so a hook
site on a hot path (every slab allocation, every socket) costs nothing until the
feature is used.  A key counts its users: static_key_slow_inc() turns it on at the
first, static_key_slow_dec() off after the last; static_branch_enable() is the one-way
switch of later kernels.

In the model a hook site is

    if key.enabled:                 # static_branch_unlikely(&key)
        ret = key.branch(fn, *args)

The test is written inline at the site: it is the model's patched jump, one attribute
load, so an off key costs the hot path no call, no argument tuple and no closure (a
call into the key would make every slab allocation and every socket pay for the hook,
which the kernel's jump label does not).  `key.branch(fn, *args)` takes the branch: it
calls fn and counts the call in `hits`, so tests can see that an off key did no work;
it tests the key again, so a site that calls it alone is still correct, only slower.
"""

from __future__ import annotations


class StaticKey:
    """struct static_key: a reference-counted on/off switch for hook sites."""

    __slots__ = ("name", "enabled", "hits")

    def __init__(self, name: str, enabled: int = 0):
        self.name = name
        # static_key->enabled: the number of users; hook sites test it inline
        self.enabled = enabled
        self.hits = 0  # calls that took the branch (a model figure, not a kernel one)

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
        self.enabled = max(self.enabled, 1)

    def branch(self, fn, *args):
        """The hook's body behind `if (static_branch_unlikely(&key))`: fn runs (and is
        counted) only while the key is on."""
        if self.enabled <= 0:
            return None
        self.hits += 1
        return fn(*args)


def static_keys_state(keys) -> dict[str, str]:
    """The keys by name, "on" or "off" (the debugfs view)."""
    return {k.name: ("on" if k else "off") for k in keys}
