"""Shared test fixtures: access to real cgroups for the tests that need them."""

from __future__ import annotations

import os

import pytest

V1_MEMORY = "/sys/fs/cgroup/memory"


def own_memory_cgroup() -> tuple[str | None, str]:
    """The caller's own v1 memory cgroup directory, or None and the reason it is unusable."""
    if os.geteuid() != 0:
        return None, "needs root to create memory cgroups"
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError as e:
        return None, f"cannot read /proc/self/cgroup: {e}"
    rel = next((ln.split(":", 2)[2] for ln in lines if ln.split(":")[1:2] == ["memory"]), None)
    if rel is None:
        return None, "no cgroup v1 memory controller in /proc/self/cgroup"
    path = V1_MEMORY + rel
    if not os.access(path, os.W_OK) or not os.path.exists(os.path.join(path, "memory.limit_in_bytes")):
        return None, f"the memory cgroup {rel} is not writable"
    return path, ""


@pytest.fixture
def real_memcg():
    """Path of the caller's own v1 memory cgroup; the test is skipped where there is none."""
    path, why = own_memory_cgroup()
    if path is None:
        pytest.skip(f"real cgroups unavailable: {why}")
    before = set(os.listdir(path))
    yield path
    left = {d for d in set(os.listdir(path)) - before if os.path.isdir(os.path.join(path, d))}
    assert not left, f"groups left behind: {sorted(left)}"


# --- the VM guest -------------------------------------------------------------------------

def vm_unavailable() -> str:
    """Why no VM guest can be booted here (no qemu, no guest kernel image), or ""."""
    from memcg.backends import vm
    try:
        vm.find_images()
        vm._qemu()
    except vm.GuestError as e:
        return str(e)
    return ""


def guest_fixture(**shape):
    """A module-scoped fixture giving one booted VMKernel of this shape, closed after the
    module; skipped, saying why, where no guest can be booted.  Booting costs tens of
    seconds, so a module boots one guest and resets it between cases (GuestCase)."""
    @pytest.fixture(scope="module")
    def guest():
        import memcg
        why = vm_unavailable()
        if why:
            pytest.skip(f"no VM guest: {why}")
        k = memcg.VMKernel(**shape)
        try:
            k.boot()
        except BaseException:
            k.close()
            raise
        yield k
        k.close()
    return guest


class GuestCase:
    """A module's guest as a fresh kernel: close() resets it instead of powering off."""

    def __init__(self, guest):
        self._guest = guest

    @property
    def release(self) -> str:
        return self._guest.kernel_release

    def __getattr__(self, name):
        return getattr(self._guest, name)

    def close(self) -> None:
        self._guest.reset()
