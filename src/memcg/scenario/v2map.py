"""Running a scenario written for cgroup v1 on a cgroup v2 kernel.

Where a v1 knob has a v2 counterpart (Documentation/admin-guide/cgroup-v2.rst, "Deprecated
v1 Core Features" and the memory section's notes on v1), the v1 file a scenario names is
served by the v2 file: limit_in_bytes -> memory.max, soft_limit_in_bytes -> memory.low,
failcnt -> memory.events max, max_usage_in_bytes -> memory.peak, force_empty ->
memory.reclaim, usage_in_bytes -> memory.current, oom_control -> memory.events.  A name
without a counterpart is EOPNOTSUPP, saying why.  The run reports which names were mapped.
"""

from __future__ import annotations

import dataclasses
import errno

from .. import parse
from ..backends.linux.v2names import V2_STAT_KEYS
from ..kernel import Kernel
from .model import Scenario

__all__ = ["V1_TO_V2", "V1NamesOnV2", "on_hierarchy"]

# v1's "no limit" (PAGE_COUNTER_MAX * PAGE_SIZE), where v2 prints "max"
UNLIMITED = "9223372036854771712"

# v1 file -> the v2 file that serves it, or the reason there is none
V1_TO_V2: dict[str, str] = {
    "memory.limit_in_bytes": "memory.max",
    "memory.soft_limit_in_bytes": "memory.low",
    "memory.failcnt": "memory.events",
    "memory.max_usage_in_bytes": "memory.peak",
    "memory.force_empty": "memory.reclaim",
    "memory.usage_in_bytes": "memory.current",
    "memory.oom_control": "memory.events",
    "memory.stat": "memory.stat",
    "memory.memsw.usage_in_bytes": "memory.current",
    "tasks": "cgroup.threads",
}
NO_V2: dict[str, str] = {
    "memory.memsw.limit_in_bytes": "v2 limits swap alone (memory.swap.max), not memory+swap",
    "memory.kmem.limit_in_bytes": "v2 has no kernel memory limit (it is in memory.max)",
    "memory.kmem.tcp.limit_in_bytes": "v2 has no socket memory limit (it is in memory.max)",
    "memory.pressure_level": "v2 has no vmpressure events (memory.pressure has PSI triggers)",
    "memory.swappiness": "v2 has no per-group swappiness",
    "memory.move_charge_at_immigrate": "v2 never moves charges",
    "mempressure.shrinker": "the userspace shrinker is served on v1 only",
}
# v1 memory.stat key -> v2 key (both in bytes, or both counts): the keys LinuxKernel on v2
# shows a v1 scenario (backends/linux/v2names.py: V2_STAT_KEYS) and swapcached, which
# 6.1 and 6.18 both print, so a mapped run reads the same memory.stat lines on the model
# as on a real v2 kernel (VMKernel shows the v2 text and is mapped here)
STAT_V1_TO_V2 = {**V2_STAT_KEYS, "swapcached": "swapcached"}


def on_hierarchy(scenario: Scenario, hierarchy: str) -> Scenario:
    """The scenario for a kernel of the given cgroup version: unchanged for its own; a v1
    scenario runs on v2 through V1NamesOnV2; a v2 scenario has no v1 form (ValueError)."""
    if hierarchy == scenario.machine.hierarchy:
        return scenario
    if scenario.machine.hierarchy == "v2":
        raise ValueError(f"{scenario.file}: the scenario is written for cgroup v2 and has no v1 form")
    machine = dataclasses.replace(scenario.machine, hierarchy=hierarchy)
    return dataclasses.replace(scenario, machine=machine, mapped_from="v1")


def _unsupported(name: str, why: str) -> OSError:
    return OSError(errno.EOPNOTSUPP, f"{name}: no cgroup v2 counterpart: {why}")


class V1NamesOnV2(Kernel):
    """A v2 kernel behind the v1 file names a scenario uses (see the module's docstring).

    `mapped` collects each v1 name used and the v2 file that served it.
    """

    def __init__(self, kernel: Kernel):
        self.k = kernel
        self.backend = kernel.backend
        self.mapped: dict[str, str] = {}

    def _split(self, path: str) -> tuple[str, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        return head, name

    def _v2(self, path: str) -> tuple[str, str, str]:
        """(group, v1 name, v2 path) for a path; EOPNOTSUPP for a name with no counterpart."""
        head, name = self._split(path)
        if name in NO_V2:
            raise _unsupported(name, NO_V2[name])
        target = V1_TO_V2.get(name)
        if target is None:
            return head, name, path
        self.mapped[name] = target
        return head, name, f"{head}/{target}"

    def read(self, path: str) -> str:
        head, name, v2 = self._v2(path)
        text = self.k.read(v2)
        if name in ("memory.limit_in_bytes", "memory.soft_limit_in_bytes"):
            return UNLIMITED + "\n" if text.strip() == "max" else text
        if name == "memory.failcnt":
            return f"{parse.parse_stat(text).get('max', 0)}\n"
        if name == "memory.oom_control":
            return f"oom_kill_disable 0\nunder_oom 0\noom_kill {parse.parse_stat(text).get('oom_kill', 0)}\n"
        if name == "memory.memsw.usage_in_bytes":
            swap = self.k.read(f"{head}/memory.swap.current")
            return f"{int(text) + int(swap)}\n"
        if name == "memory.stat":
            return self._stat(head, text)
        return text

    def _stat(self, head: str, text: str) -> str:
        """v2's memory.stat with v1's keys, as a real v2 kernel object shows it to a v1
        scenario (backends/linux/v2names.py: V2Files): the v2 lines under their v1 names and
        `swap` from memory.swap.current (a kernel object that already shows v1 keys passes
        through)."""
        v2 = parse.parse_stat(text)
        if "rss" in v2 or "cache" in v2:
            return text
        lines = [f"{k1} {v2[k2]}" for k1, k2 in STAT_V1_TO_V2.items() if k2 in v2]
        try:
            lines.append(f"swap {int(self.k.read(f'{head}/memory.swap.current'))}")
        except (OSError, ValueError):
            pass
        return "\n".join(lines) + "\n"

    def write(self, path: str, text: str) -> None:
        head, name, v2 = self._v2(path)
        if name in ("memory.failcnt", "memory.oom_control"):
            raise _unsupported(name, "memory.events counters cannot be reset or set")
        if name in ("memory.limit_in_bytes", "memory.soft_limit_in_bytes"):
            text = "max" if text.strip() == "-1" else text
        if name == "memory.force_empty":
            # force_empty reclaims all it can and succeeds even if pages stay
            current = self.k.read(f"{head}/memory.current").strip()
            try:
                self.k.write(v2, current)
            except OSError as e:
                if e.errno != errno.EAGAIN:
                    raise
            return
        self.k.write(v2, text)

    def event(self, path: str, args: str = ""):
        head, name = self._split(path)
        if name == "memory.oom_control":
            self.mapped[name] = "memory.events"
            return self.k.event(f"{head}/memory.events")
        if name in NO_V2:
            raise _unsupported(name, NO_V2[name])
        if name in V1_TO_V2:
            raise _unsupported(name, "v2 has no usage thresholds (poll memory.events instead)")
        return self.k.event(path, args)

    # the rest is the kernel's own
    def mkdir(self, path: str) -> None:
        self.k.mkdir(path)

    def rmdir(self, path: str) -> None:
        self.k.rmdir(path)

    def listdir(self, path: str) -> list[str]:
        return self.k.listdir(path)

    def spawn(self, path: str = "/"):
        return self.k.spawn(path)

    def advance(self, ticks: int = 1) -> None:
        self.k.advance(ticks)

    def settle(self) -> None:
        self.k.settle()

    def debugfs(self) -> dict:
        return self.k.debugfs()

    def close(self) -> None:
        self.k.close()
