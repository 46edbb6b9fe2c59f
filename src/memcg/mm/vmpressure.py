"""Memory pressure levels (mm/vmpressure.c, 4.13+ modes).

Reclaim reports scanned and reclaimed pages to the group it reclaims for (the root for
global reclaim).  Every vmpressure_win scanned pages the level is computed once and
delivered to listeners from that group up to the root.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import mempressure

if TYPE_CHECKING:
    from ..fs.eventfd import EventFd
    from .memcontrol import MemCgroup
    from ..system import System

# mm/vmpressure.c: vmpressure_win = SWAP_CLUSTER_MAX * 16
vmpressure_win = 32 * 16
# mm/vmpressure.c: vmpressure_level_med, vmpressure_level_critical (percent)
vmpressure_level_med = 60
vmpressure_level_critical = 95
# mm/vmpressure.c: vmpressure_level_critical_prio = ilog2(100 / 10)
vmpressure_level_critical_prio = 3
# mm/vmpressure.c: MAX_VMPRESSURE_ARGS_LEN = strlen("critical") + strlen("hierarchy") + 2
MAX_VMPRESSURE_ARGS_LEN = 19

VMPRESSURE_LOW, VMPRESSURE_MEDIUM, VMPRESSURE_CRITICAL = range(3)
LEVEL_NAMES = ("low", "medium", "critical")
VMPRESSURE_NO_PASSTHROUGH, VMPRESSURE_HIERARCHY, VMPRESSURE_LOCAL = range(3)
MODE_NAMES = ("default", "hierarchy", "local")


@dataclass
class VmpressureEvent:
    efd: EventFd
    level: int
    mode: int


@dataclass
class Vmpressure:
    """struct vmpressure: the tree window and the listeners of one memcg."""

    tree_scanned: int = 0
    tree_reclaimed: int = 0
    events: list = field(default_factory=list)


def memcg_to_vmpressure(sys: System, memcg: MemCgroup) -> Vmpressure:
    """memcg_to_vmpressure(): the group's vmpressure state, made at first use."""
    v = sys._vmpressure.get(memcg.id)
    if v is None:
        v = sys._vmpressure[memcg.id] = Vmpressure()
    return v


def vmpressure_calc_level(scanned: int, reclaimed: int) -> int:
    """vmpressure_calc_level(): pressure = (1 - reclaimed/scanned) in percent, truncated."""
    if reclaimed >= scanned:
        return VMPRESSURE_LOW
    scale = scanned + reclaimed
    pressure = scale - (reclaimed * scale // scanned)
    pressure = pressure * 100 // scale
    if pressure >= vmpressure_level_critical:
        return VMPRESSURE_CRITICAL
    if pressure >= vmpressure_level_med:
        return VMPRESSURE_MEDIUM
    return VMPRESSURE_LOW


def vmpressure(sys: System, memcg: MemCgroup, tree: bool, scanned: int, reclaimed: int) -> None:
    """vmpressure(): account a reclaim pass to memcg; a full window fires the work."""
    if not tree or not scanned:
        return  # tree=false only feeds socket pressure (v2 / tcp: later)
    vmpr = memcg_to_vmpressure(sys, memcg)
    vmpr.tree_scanned += scanned
    vmpr.tree_reclaimed += reclaimed
    if vmpr.tree_scanned < vmpressure_win:
        return
    vmpressure_work_fn(sys, memcg)


def vmpressure_prio(sys: System, memcg: MemCgroup, prio: int) -> None:
    """vmpressure_prio(): priority at or below 3 counts as a window with nothing reclaimed."""
    if prio > vmpressure_level_critical_prio:
        return
    vmpressure(sys, memcg, True, vmpressure_win, 0)


def vmpressure_work_fn(sys: System, memcg: MemCgroup) -> None:
    """vmpressure_work_fn(): compute the level once and walk up to the root."""
    vmpr = memcg_to_vmpressure(sys, memcg)
    scanned, reclaimed = vmpr.tree_scanned, vmpr.tree_reclaimed
    vmpr.tree_scanned = vmpr.tree_reclaimed = 0
    if not scanned:
        return
    level = vmpressure_calc_level(scanned, reclaimed)
    sys.pressure_history.append((memcg.path, LEVEL_NAMES[level]))
    # mempressure.shrinker: the pages this window failed to reclaim are asked of user space
    mempressure.shrinker_request(sys, memcg, scanned - reclaimed)
    vmpressure_signal(sys, memcg, level)


def vmpressure_signal(sys: System, memcg: MemCgroup, level: int) -> None:
    """The walk of vmpressure_work_fn(): deliver one window's level from memcg up to the
    root, each group's listeners seeing whether one below was signalled."""
    ancestor = False
    signalled = False
    m = memcg
    while m is not None:
        if _vmpressure_event(memcg_to_vmpressure(sys, m), level, ancestor, signalled):
            signalled = True
        ancestor = True
        m = m.parent


def _vmpressure_event(vmpr: Vmpressure, level: int, ancestor: bool, signalled: bool) -> bool:
    """vmpressure_event(): signal the listeners of one memcg; all see the same state."""
    ret = False
    for ev in vmpr.events:
        if ancestor and ev.mode == VMPRESSURE_LOCAL:
            continue
        if signalled and ev.mode == VMPRESSURE_NO_PASSTHROUGH:
            continue
        if level < ev.level:
            continue
        ev.efd.signal(1)
        ret = True
    return ret


def vmpressure_register_event(sys: System, memcg: MemCgroup, efd: EventFd, args: str) -> None:
    """vmpressure_register_event(): args "level[,mode]"; unknown names are EINVAL.

    The arguments are copied into a MAX_VMPRESSURE_ARGS_LEN buffer (longer input is cut)
    and split at commas: the first token is the level, the second (optional) the mode;
    anything after a second comma is ignored.
    """
    spec = args[:MAX_VMPRESSURE_ARGS_LEN]
    parts = spec.split(",")
    if parts[0] not in LEVEL_NAMES:
        raise OSError(errno.EINVAL, "Invalid argument")
    level = LEVEL_NAMES.index(parts[0])
    mode = VMPRESSURE_NO_PASSTHROUGH
    if len(parts) > 1:
        if parts[1] not in MODE_NAMES:
            raise OSError(errno.EINVAL, "Invalid argument")
        mode = MODE_NAMES.index(parts[1])
    memcg_to_vmpressure(sys, memcg).events.append(VmpressureEvent(efd, level, mode))
    memcg.event_list.append((efd, "pressure"))


def vmpressure_unregister_event(sys: System, memcg: MemCgroup, efd: EventFd) -> None:
    vmpr = memcg_to_vmpressure(sys, memcg)
    vmpr.events = [e for e in vmpr.events if e.efd is not efd]
