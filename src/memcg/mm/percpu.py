"""Per-CPU allocations and how they are charged (mm/percpu.c, 5.9+ with obj_cgroup).

An accounted per-CPU allocation (alloc_percpu_gfp(..., GFP_KERNEL_ACCOUNT)) is one
object of `size` bytes on every possible CPU.  pcpu_memcg_pre_alloc_hook() charges the
current object cgroup for all the copies at once, plus one objcg pointer per
PCPU_MIN_ALLOC_SIZE bytes (the chunk's obj_exts, pcpu_obj_full_size()); free_percpu()
gives the same bytes back through the per-CPU object stock (pcpu_memcg_free_hook()).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import page_alloc
from ..kernel import PAGE_SIZE
from .memcontrol import (CHARGE_NOMEM, MEMCG_PERCPU_B, OBJCG_POINTER_SIZE, ObjCgroup,
                         get_obj_cgroup_from_current, mod_objcg_state, obj_cgroup_charge,
                         obj_cgroup_uncharge)

if TYPE_CHECKING:
    from ..system import System
    from ..tasks import Task

# mm/percpu-internal.h: PCPU_MIN_ALLOC_SHIFT 2, PCPU_MIN_ALLOC_SIZE = 1 << PCPU_MIN_ALLOC_SHIFT
PCPU_MIN_ALLOC_SIZE = 4


@dataclass(eq=False)
class PcpuObject:
    """A per-CPU allocation: who pays for it (None: unaccounted) and how many bytes."""

    objcg: ObjCgroup | None
    charged: int = 0
    size: int = 0  # bytes of the chunks it takes: its size on every CPU


def pcpu_populate(sys: System, nr_bytes: int, task: Task | None) -> bool:
    """pcpu_populate_chunk() -> pcpu_alloc_pages(): the chunk pages that nr_bytes more
    per-CPU memory (all CPUs' copies) needs, from the page allocator; False when they
    cannot be had (pcpu_alloc() fails: ENOMEM).  The model packs the dynamic area into
    whole pages; the first chunk's boot-time space is not modelled."""
    need = -(-(sys.pcpu_bytes + nr_bytes) // PAGE_SIZE) - len(sys.pcpu_pfns)
    if need > 0:
        pfns = page_alloc.alloc_kernel_pages(sys, need, task, "Percpu")
        if pfns is None:
            return False
        sys.pcpu_pfns = np.concatenate([sys.pcpu_pfns, pfns])
    sys.pcpu_bytes += nr_bytes
    return True


def pcpu_depopulate(sys: System, nr_bytes: int) -> None:
    """free_percpu() -> pcpu_balance_workfn(): chunk pages left empty go back."""
    sys.pcpu_bytes -= nr_bytes
    keep = -(-sys.pcpu_bytes // PAGE_SIZE)
    if keep < len(sys.pcpu_pfns):
        page_alloc.free_kernel_pages(sys, sys.pcpu_pfns[keep:][::-1].copy(), "Percpu")
        sys.pcpu_pfns = sys.pcpu_pfns[:keep].copy()


def pcpu_obj_full_size(sys: System, size: int) -> int:
    """pcpu_obj_full_size(): size on each possible CPU, plus the objcg pointers."""
    return size * sys.cpus + size // PCPU_MIN_ALLOC_SIZE * OBJCG_POINTER_SIZE


def pcpu_alloc(sys: System, size: int, task: Task | None) -> PcpuObject | int:
    """pcpu_alloc() of an accounted object: charged before it is carved out of a chunk.

    Returns the object, or the failed charge's result.  Behind the kmem static key
    (memcg_kmem_online()), like the slab hook.
    """
    # mm/percpu.c: pcpu_alloc() rounds the size up to PCPU_MIN_ALLOC_SIZE first
    size = -(-max(size, PCPU_MIN_ALLOC_SIZE) // PCPU_MIN_ALLOC_SIZE) * PCPU_MIN_ALLOC_SIZE
    key = sys.kmem_key
    objcg = None
    if key.enabled:
        key.hits += 1
        objcg = get_obj_cgroup_from_current(sys, task)
    full = 0
    if objcg is not None:
        full = pcpu_obj_full_size(sys, size)
        ret = obj_cgroup_charge(sys, objcg, full, task)  # pcpu_memcg_pre_alloc_hook()
        if ret:
            return ret
    if not pcpu_populate(sys, size * sys.cpus, task):
        if objcg is not None:
            obj_cgroup_uncharge(sys, objcg, full, task.cpu if task is not None else 0)
        return CHARGE_NOMEM
    if objcg is not None:
        mod_objcg_state(sys, objcg, MEMCG_PERCPU_B, full)  # pcpu_memcg_post_alloc_hook()
    return PcpuObject(objcg, full, size * sys.cpus)


def free_percpu(sys: System, obj: PcpuObject, cpu: int = 0) -> None:
    """free_percpu(): pcpu_memcg_free_hook() uncharges what the allocation was charged,
    and the chunk space goes back."""
    objcg, obj.objcg = obj.objcg, None
    if objcg is not None:
        mod_objcg_state(sys, objcg, MEMCG_PERCPU_B, -obj.charged)
        obj_cgroup_uncharge(sys, objcg, obj.charged, cpu)
    size, obj.size = obj.size, 0
    if size:
        pcpu_depopulate(sys, size)
