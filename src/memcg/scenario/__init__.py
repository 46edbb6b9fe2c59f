"""Scenarios: a TOML description of a workload, and the deterministic runner.

The format is documented in docs/scenarios.md.  `model` holds the parsed scenario
(`Scenario` and its parts), `loader` reads and checks TOML into it (`load_scenario`,
`parse_scenario`; every mistake is a one-line `ScenarioError`), and `runner` plays it on
any `Kernel` through the public interface only (`run_scenario`).
"""

from .loader import ACTIONS, builtin_names, load_scenario, parse_scenario
from .model import (SOCKET_FIELDS, EventSpec, Expectation, GroupSpec, Machine, Scenario, ScenarioError,
                    Step, TaskSpec)
from .runner import MEMSW_FILES, REPORTED_FILES, TCP_FILES, TCP_SERIES, run_scenario

__all__ = [
    "ScenarioError",
    "Scenario",
    "Machine",
    "GroupSpec",
    "TaskSpec",
    "EventSpec",
    "Step",
    "Expectation",
    "ACTIONS",
    "builtin_names",
    "load_scenario",
    "parse_scenario",
    "run_scenario",
    "REPORTED_FILES",
    "MEMSW_FILES",
    "TCP_FILES",
    "TCP_SERIES",
    "SOCKET_FIELDS",
]
