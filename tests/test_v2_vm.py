"""The v2 mechanisms' expectations on a real kernel: the 6.1 guest (VMKernel, cgroup v2).

The same checks as tests/test_v2_mechanisms.py (the model) run here on the guest, each in
its own group that is removed afterwards.  Where 6.1 differs from the 6.18 the model
follows, the test says so.  Skipped, saying why, where qemu or the guest kernel is missing.
"""

import errno
import time

import pytest

from conftest import guest_fixture
from test_v2_mechanisms import (MB, _pressure, check_memcg_high, check_memcg_high_sync,
                                check_memcg_low, check_memcg_min, check_throttled_pressure)

guest = guest_fixture(hierarchy="v2", memory="1G", cpus=2)


# The guest has no disk yet: its files are on tmpfs (shmem, charged when they are made),
# so there is no reclaimable page cache for the protection tests to reclaim
NO_PAGE_CACHE = "the VM guest has no disk yet: its files are tmpfs, not reclaimable page cache"


def _remove(k, top):
    """Kill what is left in top (cgroup.kill) and remove it, deepest groups first."""
    try:
        names = k.listdir(top)
    except FileNotFoundError:
        return
    k.write(f"{top}/cgroup.kill", "1")
    for name in names:
        if name.startswith(("cgroup.", "memory.", "cpu.", "io.", "pids.")):
            continue
        _remove(k, f"{top}/{name}")
    for _ in range(50):
        try:
            k.rmdir(top)
            return
        except OSError as e:
            if e.errno != errno.EBUSY:
                raise
            time.sleep(0.1)  # the killed tasks are still exiting
    k.rmdir(top)


@pytest.fixture
def group(guest, request):
    top = "/" + request.node.name.replace("[", "_").replace("]", "").replace("test_", "")[:40]
    yield top
    _remove(guest, top)


def test_guest_memory_high_throttles_without_oom(guest, group):
    check_memcg_high(guest, group, page_cache=False)  # the page-cache half: NO_PAGE_CACHE


def test_guest_memory_high_throttles_one_mlock_inside_the_kernel(guest, group):
    # 6.1 has the synchronous over-high reclaim (5.17+); 36M keeps the run short: the
    # selftest's 200M sleeps 2 s per batch for many minutes
    check_memcg_high_sync(guest, group, 36 * MB)


@pytest.mark.skip(reason=NO_PAGE_CACHE)
def test_guest_memory_min(guest, group):
    guest.mkdir(group)
    readers = check_memcg_min(guest, group)
    for t in readers:
        t.exit()


@pytest.mark.skip(reason=NO_PAGE_CACHE)
def test_guest_memory_low(guest, group):
    # the guest's cgroup2 is mounted without memory_recursiveprot
    guest.mkdir(group)
    readers = check_memcg_low(guest, group, False)
    for t in readers:
        t.exit()


def test_guest_memory_pressure_and_a_trigger(guest, group):
    guest.mkdir(group)
    check_throttled_pressure(guest, group)


@pytest.mark.parametrize("text", ["some 0 1000000", "some 1000001 1000000", "some 1000 499999",
                                  "some 1000 10000001", "none 1000 1000000", "some 1000"])
def test_guest_bad_triggers_are_einval(guest, group, text):
    guest.mkdir(group)
    _pressure(guest, group)
    with pytest.raises(OSError) as e:
        guest.event(f"{group}/memory.pressure", text)
    assert e.value.errno == errno.EINVAL
