"""A few cells of the signal matrix (tools/signal_matrix.py) as tests.

`memcg run SCENARIO --backend linux` is stopped by signals at a phase of its run; it
must exit promptly, leave no live worker, and leave nothing behind unless it was
SIGKILLed - and then the next LinuxKernel below the same parent removes it all.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "tools", "signal_matrix.py")
_spec = importlib.util.spec_from_file_location("signal_matrix", SCRIPT)
matrix = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(matrix)

pytestmark = pytest.mark.linux


@pytest.mark.parametrize("phase,signame", [
    ("workers", "SIGTERM+SIGTERM"),
    ("oom", "SIGINT+SIGHUP"),
    ("workload", "SIGKILL"),
])
def test_stopped_run_leaves_nothing(real_memcg, tmp_path, phase, signame):
    scenario = tmp_path / "matrix.toml"
    scenario.write_text(matrix.SCENARIO)
    r = matrix.one(real_memcg, str(scenario), str(tmp_path), phase, signame)
    assert r["reached"], f"the run ended before the {phase} phase"
    assert r["status"] != "hang"
    assert r["workers"] == 0
    if signame == "SIGKILL":
        assert r["status"] == -9
        assert r["swept"] is not None and r["swept"]["left"] == 0
        assert r["swept"]["groups"] >= 1
    else:
        assert r["status"] != 0
        assert (r["groups"], r["dirs"], r["runtime"]) == (0, 0, 0)
