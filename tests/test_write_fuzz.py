"""The seeded corpus of cgroup v1 file writes (tools/write_fuzz.py) on both kernels.

tests/data/kernel_v1_write_fuzz.json holds the real kernel's answer to every write of
the corpus: each writable memory.* file (and notify_on_release, cgroup.clone_children)
times every value, one write(2) in a fresh group, the errno and the text read back.
SimKernel must give the same answer to each; where real cgroups exist the corpus is
measured again and must still match the stored answers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys

import pytest

HERE = os.path.dirname(__file__)
DATA = os.path.join(HERE, "data", "kernel_v1_write_fuzz.json")
SCRIPT = os.path.join(HERE, os.pardir, "tools", "write_fuzz.py")

_spec = importlib.util.spec_from_file_location("write_fuzz", SCRIPT)
write_fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(write_fuzz)

STORED = json.load(open(DATA))


def test_stored_answers_are_the_corpus():
    """The stored cases are exactly the tool's corpus for the stored seed."""
    want = write_fuzz.case_list(STORED["seed"])
    got = [{k: c[k] for k in ("file", "input", "setup")} for c in STORED["cases"]]
    assert got == want
    per_file = {}
    for c in STORED["cases"]:
        per_file[c["file"]] = per_file.get(c["file"], 0) + 1
    assert set(per_file) == set(write_fuzz.FILES)
    assert min(per_file.values()) >= 100


def test_simkernel_answers_every_write_as_the_kernel():
    sim = write_fuzz.sim_answers(STORED["cases"])
    differ = [(r["file"], r["input"], r["errno"], r["read"], s["errno"], s["read"])
              for r, s in zip(STORED["cases"], sim) if write_fuzz.agree(r, s) != (True, True)]
    assert not differ, f"{len(differ)} of {len(sim)} writes differ, first: {differ[:3]}"


@pytest.mark.linux
def test_real_kernel_still_answers_as_stored(real_memcg, tmp_path):
    if not platform.release().startswith(STORED["kernel"].split(".")[0] + "."):
        pytest.skip(f"corpus measured on {STORED['kernel']}, this is {platform.release()}")
    out = tmp_path / "fuzz.json"
    subprocess.run([sys.executable, SCRIPT, "measure", "--seed", str(STORED["seed"]),
                    "--out", str(out)], check=True, timeout=300)
    live = json.load(open(out))["cases"]
    assert len(live) == len(STORED["cases"])
    differ = [(w["file"], w["input"]) for w, g in zip(STORED["cases"], live)
              if (w["errno"], w["read"], w.get("setup_errno"))
              != (g["errno"], g["read"], g.get("setup_errno"))]
    assert not differ, f"the kernel now answers differently for {differ[:5]}"
