"""The cgroup v2 built-in scenarios that retell what v2 users ask: memory.high throttling
(high-throttle), memory.low protection (low-protect), a PSI-driven userspace OOM killer
(psi-oomd) and a container taken whole (oom-group).  Each one's expectations hold on the
model; each one compared with the 6.1 guest agrees on every discrete figure (task
outcomes, expectations, memory.events counts of rare events) and on >= 95% of all.
"""

from __future__ import annotations

import json

import pytest

import memcg
from conftest import GuestCase, guest_fixture
from memcg.cli import main
from memcg.compare import run_compare
from memcg.scenario import ScenarioError, load_scenario, parse_scenario, run_scenario

V2_BUILTINS = ("high-throttle", "low-protect", "psi-oomd", "oom-group")
# memory.events lines that count rare outcomes, compared exactly
DISCRETE_EVENTS = ("oom", "oom_kill", "oom_group_kill")


def _run(name: str) -> dict:
    sc = load_scenario(name)
    assert sc.machine.hierarchy == "v2"
    return run_scenario(sc, memcg.SimKernel(**sc.machine.sim_kwargs()))


@pytest.mark.parametrize("name", V2_BUILTINS)
def test_builtin_expectations_hold_on_the_model(name):
    result = _run(name)
    failed = [e for e in result["expectations"] if not e["ok"]]
    assert result["expectations"] and not failed, failed


def test_high_throttle_reclaims_to_swap_and_never_ooms():
    result = _run("high-throttle")
    job = result["groups"]["/job"]
    assert "memory.swap.current" in job
    events = memcg.parse.parse_stat(job["memory.events"])
    assert events["high"] > 0 and events["max"] == 0 and events["oom_kill"] == 0


def test_psi_oomd_kills_through_cgroup_kill():
    """The trigger fired and the on_fire write killed the job: no kernel OOM kill."""
    result = _run("psi-oomd")
    assert [a["write"] for a in result["actions"]] == ["/job/cgroup.kill"]
    assert result["tasks"]["leaker"]["state"] != "running"
    assert memcg.parse.parse_stat(result["groups"]["/job"]["memory.events"])["oom_kill"] == 0


def test_psi_oomd_without_the_policy_keeps_running():
    """Without its policy the leaker only stalls: throttled, not killed."""
    sc = load_scenario("psi-oomd")
    sc.events[0].on_fire = []
    result = run_scenario(sc, memcg.SimKernel(**sc.machine.sim_kwargs()))
    assert result["tasks"]["leaker"]["state"] in ("running", "blocked")   # in its penalty sleep
    assert result["events"][sc.events[0].label] >= 1


def test_on_fire_errors_name_the_key(tmp_path):
    base = ('[machine]\nhierarchy = "v2"\n[[group]]\npath = "/a"\n'
            '[[event]]\npath = "/a/memory.pressure"\nargs = "some 150000 1000000"\n')
    for bad, what in (('on_fire = "kill"\n', r"event\[0\]\.on_fire"),
                      ('on_fire = { "/b/cgroup.kill" = "1" }\n', r"event\[0\]\.on_fire.*unknown group '/b'"),
                      ('on_fire = { "/a/cgroup.kill" = true }\n', r"event\[0\]\.on_fire.*text to write")):
        f = tmp_path / "s.toml"
        f.write_text(base + bad)
        with pytest.raises(ScenarioError, match=what):
            load_scenario(str(f))


def test_a_failing_on_fire_write_is_an_outcome():
    text = ('[machine]\nhierarchy = "v2"\n[[group]]\npath = "/a"\nfiles = { "memory.high" = "1M", "memory.swap.max" = "0" }\n'
            '[[task]]\nname = "t"\ngroup = "/a"\n'
            '[[event]]\npath = "/a/memory.events"\non_fire = { "/a/cgroup.kill" = "2" }\n'
            '[[step]]\nat = 0\ntask = "t"\ntouch_anon = "4M"\n')
    sc = parse_scenario(text)
    result = run_scenario(sc, memcg.SimKernel(**sc.machine.sim_kwargs()))
    errs = [e for e in result["errors"] if e["step"] == "event[0].on_fire"]
    assert errs and "ERANGE" in errs[0]["error"]


def test_bad_on_fire_exits_2(tmp_path, capsys):
    f = tmp_path / "bad.toml"
    f.write_text('[machine]\nhierarchy = "v2"\n[[group]]\npath = "/a"\n'
                 '[[event]]\npath = "/a/memory.events"\non_fire = 3\n')
    assert main(["run", str(f)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "event[0].on_fire" in err


# --- against the guest -----------------------------------------------------------------------

# One cgroup v2 guest with swap for the module's comparisons (reset between them); a
# scenario without swap sets memory.swap.max 0 where it matters.
v2_swap_guest = guest_fixture(hierarchy="v2", memory="512M", cpus=2, swap="256M")


def _discrete(row: dict) -> bool:
    what = row["what"]
    if what.startswith(("task ", "expect ", "error ")):
        return True
    parts = what.split(" ")
    return len(parts) == 3 and parts[1] == "memory.events" and parts[2] in DISCRETE_EVENTS


# compared figures of each v2 built-in once the guest's memory.stat is read in v2 keys
# (before: 80, 102, 78, 80 with the v1-name view)
COMPARED_V2 = {"high-throttle": 134, "low-protect": 183, "oom-group": 132, "psi-oomd": 134}


@pytest.mark.vm
@pytest.mark.parametrize("name", V2_BUILTINS)
def test_builtin_agrees_with_the_guest(name, v2_swap_guest):
    sc = load_scenario(name)
    result = run_compare(sc, lambda m: memcg.SimKernel(**m.sim_kwargs()),
                         lambda: GuestCase(v2_swap_guest))
    rows = result["rows"]
    bad = [r for r in rows if r["class"] == "compared" and _discrete(r) and not r["agree"]]
    assert not bad, bad
    assert result["agreement"] >= 0.95, [r for r in rows if not r["agree"]]
    assert result["counts"]["compared"] >= COMPARED_V2.get(name, 0)


def test_compare_json_of_a_builtin_is_written(tmp_path):
    """The JSON of a model-only comparison (the model on both sides) agrees fully."""
    sc = load_scenario("high-throttle")
    result = run_compare(sc, lambda m: memcg.SimKernel(**m.sim_kwargs()),
                         lambda: memcg.SimKernel(**sc.machine.sim_kwargs()))
    assert result["agreement"] == 1.0
    out = tmp_path / "c.json"
    memcg.compare.write_json(result, str(out))
    assert json.loads(out.read_text())["agreement"] == 1.0


# --- how the comparison counts v2 figures ----------------------------------------------------

def test_v2_tolerances_say_why():
    from memcg.compare import tolerance_for
    assert tolerance_for("/a memory.events oom_kill").kind == "exact"
    assert tolerance_for("/a memory.events high").agree(278, 250)
    assert not tolerance_for("/a memory.events high").agree(278, 0)
    assert tolerance_for("/a memory.events low").agree(194, 506)
    assert not tolerance_for("/a memory.events low").agree(0, 506)
    assert tolerance_for("event /a/memory.pressure some 150000 1000000").agree(1, 2)
    assert tolerance_for("event /a/memory.events").agree(37, 5)
    # v1's oom_control eventfd counts OOMs exactly; on v2 it is a memory.events poller
    assert tolerance_for("event /hog/memory.oom_control").kind == "exact"
    assert tolerance_for("event /hog/memory.oom_control", v2=True).agree(37, 5)
    assert tolerance_for("/a memory.stat anon").abs < tolerance_for("/a memory.stat active_anon").abs


def test_a_mapped_run_shows_memory_stat_as_a_v2_kernel_object_does():
    """hog --hierarchy v2: the model's memory.stat under v1 names has the lines
    LinuxKernel on v2 shows (backends/linux/v2names.py), swapcached, and swap; the guest's
    v2 text is mapped the same way (scenario/v2map.py)."""
    from memcg.backends.linux.v2names import V2_STAT_KEYS
    from memcg.scenario.v2map import on_hierarchy
    sc = on_hierarchy(load_scenario("hog"), "v2")
    result = run_scenario(sc, memcg.SimKernel(**sc.machine.sim_kwargs()))
    keys = set(memcg.parse.parse_stat(result["groups"]["/hog"]["memory.stat"]))
    assert keys == set(V2_STAT_KEYS) | {"swapcached", "swap"}


def test_v2_stat_rows_are_the_lines_both_kernels_print():
    from memcg.compare import compare_results
    sim = {"hierarchy": "v2", "groups": {"/a": {"memory.stat": "cache 1\nswapcached 0\n"}}}
    real = {"hierarchy": "v2", "groups": {"/a": {"memory.stat": "cache 1\nswap 0\n"}}}
    rows = compare_results(sim, real)["rows"]
    # the lines both print are compared; the others are listed, not counted: the one only
    # the model (6.18) prints is model-only, the one only the guest's 6.1 prints not comparable
    assert [(r["what"], r["class"]) for r in rows] == [("/a memory.stat cache", "compared"),
                                                       ("/a memory.stat swap", "not comparable"),
                                                       ("/a memory.stat swapcached", "model-only")]


def test_a_v2_kernel_object_shows_memory_stat_with_v2_keys_when_asked(tmp_path):
    """LinuxKernel(v2_stat=True), as the VM guest's agent makes it: memory.stat is the
    kernel's own text; without it, its lines under the v1 keys a v1 scenario reads."""
    from memcg.backends.linux.v2names import V2Files
    text = "anon 8192\nfile 4096\nkernel 0\nswapcached 0\npgsteal 3\n"
    (tmp_path / "memory.stat").write_text(text)
    (tmp_path / "memory.swap.current").write_text("0\n")
    assert V2Files(v2_stat=True).read(str(tmp_path), "memory.stat") == text
    assert V2Files().read(str(tmp_path), "memory.stat") == "cache 4096\nrss 8192\nswap 0\n"


def test_v2_stat_counters_have_tolerances_of_their_own():
    """v2's reclaim counters are pages: pgsteal within 512 + 5% (the limits decide), the
    aging counters within 512 + 25%; the kernel memory lines are kmem's."""
    from memcg.compare import AGING, KMEM, RECLAIMED, tolerance_for
    assert tolerance_for("/a memory.stat pgsteal", v2=True) is RECLAIMED
    for key in ("pgscan", "pgscan_direct", "pgrefill", "pgactivate", "pgdeactivate"):
        assert tolerance_for(f"/a memory.stat {key}", v2=True) is AGING
    for key in ("kernel", "kernel_stack", "pagetables", "percpu", "slab", "slab_reclaimable"):
        assert tolerance_for(f"/a memory.stat {key}", v2=True) is KMEM
    assert RECLAIMED.agree(45312, 45285) and not RECLAIMED.agree(4864, 8292)
    assert AGING.agree(40803, 49442) and not AGING.agree(4864, 8292)
