"""The broken-input corpus (tools/hostile_input.py): every case is refused cleanly.

Each case is a broken scenario file or command line; `memcg` must answer it with exit
status 2 and one line on stderr naming the file and the key or flag at fault: no
traceback, no hang, no run.  The corpus runs through cli.main() in this process; a few
cases that depend on what a process sees (stdin, a FIFO, /dev/zero, bytes that are not
UTF-8) run as a real `python -m memcg` too.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "tools", "hostile_input.py")
_spec = importlib.util.spec_from_file_location("hostile_input", SCRIPT)
hostile = importlib.util.module_from_spec(_spec)
sys.modules["hostile_input"] = hostile   # dataclasses look their module up there
_spec.loader.exec_module(hostile)

CASES = hostile.cases()
BY_ID = {c.id: c for c in CASES}
SUBPROCESS = ["dev-zero", "fifo", "toml-invalid-utf8", "deep-array", "argv-unknown-command",
              "run-param-step-1E", "sweep-huge-product"]


def test_corpus_is_large_and_named_once():
    assert len(CASES) >= 100
    assert len(BY_ID) == len(CASES)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hostile"))


@pytest.mark.parametrize("case_id", [c.id for c in CASES])
def test_refused_cleanly(case_id, workdir):
    case = BY_ID[case_id]
    ans = hostile.run_in_process(hostile.prepare(case, workdir), timeout=30)
    kind, why = hostile.classify(case, ans)
    assert kind == "clean", f"{kind}: {why}"


@pytest.mark.parametrize("case_id", SUBPROCESS)
def test_refused_cleanly_by_the_command(case_id, workdir):
    case = BY_ID[case_id]
    ans = hostile.run_subprocess(hostile.prepare(case, workdir), timeout=60, cwd=workdir)
    kind, why = hostile.classify(case, ans)
    assert kind == "clean", f"{kind}: {why}"
