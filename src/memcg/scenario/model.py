"""The data model of a scenario: the machine, groups, tasks, events and the timeline.

`memcg.scenario.loader` makes these from a TOML file (every value checked, repeats
expanded); `memcg.scenario.runner` plays them on a `Kernel`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import parse

__all__ = ["ScenarioError", "Machine", "GroupSpec", "TaskSpec", "EventSpec", "Expectation", "Step",
           "Scenario", "SOCKET_FIELDS", "is_reference"]


class ScenarioError(Exception):
    """A scenario that cannot be loaded or set up; the message is one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split("\n")))


SOCKET_FIELDS = ("sent", "read", "buffered", "drops", "window", "pressure", "sndbuf", "rcvbuf")
"""The figures of a connection: `socket:NAME:FIELD` targets and the run's "sockets".
sent/read/buffered come from what send() and recv() returned; the others from the
socket's info() (None where the kernel does not show one)."""


def is_reference(operand: str) -> bool:
    """Whether an expectation's operand names another target ("$name", a file, ...)
    rather than being a value."""
    return operand.startswith(("$", "/", "task:", "event:", "debugfs:", "socket:"))


@dataclass
class Machine:
    """The `[machine]` table: what SimKernel is built with (sizes as written)."""

    memory: str = "1G"
    cpus: int = 1
    swap: str = "0"
    semantics: str = "6.18"  # SimKernel(semantics=...): "6.18" or "3.8"
    kmemcg_id_policy: str = "reparent"  # SimKernel(kmemcg_id_policy=...)
    hierarchy: str = "v1"  # SimKernel(hierarchy=...): the cgroup version the scenario is for

    @property
    def memory_bytes(self) -> int:
        """The machine's memory in bytes."""
        return parse.parse_size(self.memory)

    @property
    def swap_bytes(self) -> int:
        """The machine's swap in bytes."""
        return parse.parse_size(self.swap)

    def sim_kwargs(self) -> dict:
        """The keyword arguments of SimKernel for this machine (the era and the kmemcg id
        policy only when they are not the defaults)."""
        kw = {"memory": self.memory, "cpus": self.cpus, "swap": self.swap}
        if self.semantics != "6.18":
            kw["semantics"] = self.semantics
        if self.kmemcg_id_policy != "reparent":
            kw["kmemcg_id_policy"] = self.kmemcg_id_policy
        if self.hierarchy != "v1":
            kw["hierarchy"] = self.hierarchy
        return kw


@dataclass
class GroupSpec:
    """A `[[group]]`: a cgroup created at start, with files written in order."""

    path: str
    files: dict[str, str] = field(default_factory=dict)
    key: str = ""


@dataclass
class TaskSpec:
    """A `[[task]]`: a process spawned at start in `group`."""

    name: str
    group: str
    key: str = ""


@dataclass
class EventSpec:
    """An `[[event]]`: `k.event(path, args)` registered at start, counted every tick."""

    path: str
    args: str = ""
    key: str = ""
    # cgroup file writes made each time the event is counted after a tick, as a program
    # blocked in poll() on it would make them (a userspace OOM killer: cgroup.kill)
    on_fire: list[tuple[str, str]] = field(default_factory=list)

    @property
    def label(self) -> str:
        """The key of this event in a run's JSON: `"<path>/<file> <args>"`."""
        return f"{self.path} {self.args}".rstrip()


@dataclass
class Expectation:
    """One check: `target` compared with `operand` by `op` (or `contains`)."""

    target: str
    condition: str
    op: str
    operand: str


@dataclass
class Step:
    """One action of the timeline at tick `at` (repeats are already expanded)."""

    at: int
    action: str
    key: str
    task: str | None = None
    arg: Any = None
    size: int | None = None
    locked: bool = False
    chunk: int | None = None
    shrinker: bool = True
    fs: str | None = None  # mkdirs / create_files: the file system ("ext4", "tmpfs")
    peer: str | None = None  # connect_tcp: the task that accepts the connection


@dataclass
class Scenario:
    """A parsed, checked scenario, ready for `run_scenario`."""

    name: str
    description: str
    file: str
    machine: Machine
    params: dict[str, str]
    groups: list[GroupSpec]
    tasks: list[TaskSpec]
    events: list[EventSpec]
    steps: list[Step]
    ticks: int
    # "v1": written with v1 file names and run on a v2 kernel through scenario.v2map
    mapped_from: str = ""

    def group_paths(self) -> list[str]:
        """The paths of the declared groups, in declaration order."""
        return [g.path for g in self.groups]
