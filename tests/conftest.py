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
