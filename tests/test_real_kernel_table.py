"""The stored real-kernel table still describes the kernel these tests run on.

tests/test_v1_table.py replays the stored table against the simulated kernel; this test
measures the table again on real cgroups (children of the caller's own memory cgroup,
all removed afterwards) and requires the same answers, so the model is checked against
the live kernel wherever the tests run with a writable memory controller.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

HERE = os.path.dirname(__file__)
TABLE = os.path.join(HERE, "data", "kernel_v1_table.json")
SCRIPT = os.path.join(HERE, os.pardir, "tools", "measure_v1_table.py")

pytestmark = pytest.mark.linux


def _cases(table: dict, section: str) -> dict:
    return {c["id"]: c for c in table[section]}


def test_real_kernel_matches_stored_table(real_memcg, tmp_path):
    stored = json.load(open(TABLE))
    if not platform.release().startswith(stored["kernel"].split(".")[0] + "."):
        pytest.skip(f"table measured on {stored['kernel']}, this is {platform.release()}")
    out = tmp_path / "table.json"
    subprocess.run([sys.executable, SCRIPT, "--out", str(out)], check=True, timeout=120)
    live = json.load(open(out))
    assert live["defaults"]["files"] == stored["defaults"]["files"]
    assert sorted(live["defaults"]["listing"]) == sorted(stored["defaults"]["listing"])
    for section in ("writes", "access", "event_control", "procs", "dirs"):
        want, got = _cases(stored, section), _cases(live, section)
        assert set(got) == set(want), section
        differ = [i for i in want if {k: v for k, v in want[i].items() if k != "pid"}
                  != {k: v for k, v in got[i].items() if k != "pid"}]
        assert not differ, f"{section}: the kernel now answers differently for {differ[:5]}"
