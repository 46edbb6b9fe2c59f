"""Static keys: branches that cost nothing while they are off (include/linux/jump_label.h).

The kernel patches a static branch into a no-op jump while its key is off, so a hook
site on a hot path (every slab allocation, every socket) costs nothing until the
feature is used.  A key counts its users: static_key_slow_inc() turns it on at the
first, static_key_slow_dec() off after the last; static_branch_enable() is the one-way
switch of later kernels.

In the model a hook function is registered with its key-off body:

    @hook_site("kmem", _kmem_cache_alloc_off)
    def kmem_cache_alloc(...):
        if not sys.kmem_key.enabled:    # static_branch_unlikely(&key)
            ...                          # the key-off body
        key.branch(fn, *args)            # the hook itself

While no key of that kind is on in the process, the function's names in the package's
modules are bound to the key-off body, which does not test anything: the model's no-op
jump, so unused accounting costs the hot path nothing.  The first key of the kind to go
on rebinds them to the hook (the kernel's text patching, arch_jump_label_transform), the
last to go off binds them back.  Several simulated kernels may share one process, each
with its own keys, so while any of them has a key on every kernel runs the hook, whose
inline test keeps each one exact.  `key.branch(fn, *args)` takes the branch: it calls fn
and counts the call in `hits`, so tests can see that an off key did no work.
"""

from __future__ import annotations

import sys as _sys

# Hook sites by the kind of key that guards them ("kmem", "sockets"), and how many keys of
# that kind are on in the whole process.  The kernel rewrites its text when a key flips;
# the model rebinds the names of the hook functions in its modules (arch_jump_label_transform
# in spirit): while no key of a kind is on anywhere, every name of a hook of that kind is
# bound to the hook's key-off body, which does not even test the key.  Several kernels may
# live in one process, each with its own keys, so the patch follows the count of keys on
# in all of them: a site is patched in while any is on, and the inline test at the site
# keeps each kernel exact.
_SITES: dict[str, list] = {}
_ON: dict[str, int] = {}


def hook_site(kind: str, off):
    """Decorator for a hook function guarded by keys of `kind`: `off` is its body with the
    key off (same signature, no key test).  The module-level name gets `off` while no key
    of that kind is on in the process, and the decorated function once one is."""
    def register(fn):
        _SITES.setdefault(kind, []).append((fn, off))
        _ON.setdefault(kind, 0)
        return fn if _ON[kind] else off
    return register


def _patch(kind: str, on: bool) -> None:
    """Rebind every name of the hook functions of `kind` in the package's modules."""
    swap = {id(off if on else fn): (fn if on else off) for fn, off in _SITES.get(kind, ())}
    package = __name__.rpartition(".")[0]
    for name, mod in list(_sys.modules.items()):
        if mod is None or not (name == package or name.startswith(package + ".")):
            continue
        ns = vars(mod)
        for attr, value in list(ns.items()):
            new = swap.get(id(value))
            if new is not None:
                ns[attr] = new


def _key_on(kind: str | None) -> None:
    if kind is None:
        return
    _ON[kind] = _ON.get(kind, 0) + 1
    if _ON[kind] == 1:
        _patch(kind, True)


def _key_off(kind: str | None) -> None:
    if kind is None:
        return
    _ON[kind] -= 1
    if _ON[kind] == 0:
        _patch(kind, False)


class StaticKey:
    """struct static_key: a reference-counted on/off switch for hook sites."""

    __slots__ = ("name", "enabled", "hits", "kind")

    def __init__(self, name: str, enabled: int = 0, kind: str | None = None):
        self.name = name
        self.kind = kind  # which hook sites it guards (hook_site); None: inline tests only
        # static_key->enabled: the number of users; hook sites test it inline
        self.enabled = enabled
        if enabled > 0:
            _key_on(kind)
        self.hits = 0  # calls that took the branch (a model figure, not a kernel one)

    def __bool__(self) -> bool:
        """static_key_enabled()."""
        return self.enabled > 0

    def static_key_slow_inc(self) -> None:
        """static_key_slow_inc(): one more user; the branch is patched in at the first."""
        self.enabled += 1
        if self.enabled == 1:
            _key_on(self.kind)

    def static_key_slow_dec(self) -> None:
        """static_key_slow_dec(): one user fewer; the branch goes away after the last."""
        if self.enabled > 0:
            self.enabled -= 1
            if self.enabled == 0:
                _key_off(self.kind)

    def static_branch_enable(self) -> None:
        """static_branch_enable(): switch on for good (memcg_kmem_online_key, 5.x+)."""
        if self.enabled <= 0:
            self.static_key_slow_inc()

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
