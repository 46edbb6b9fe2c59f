"""Sweeps: each point equals its single run, the cache, the CSV and plot, bad grids."""

import csv
import json

import pytest

from memcg import cli, sweep
from memcg.backends.sim import SimKernel
from memcg.scenario import load_scenario, run_scenario

TINY = """
name = "tiny"
ticks = 4
[machine]
memory = "256M"
[params]
limit = "32M"
size = "24M"
[[group]]
path = "/job"
files = { "memory.limit_in_bytes" = "{limit}" }
[[task]]
name = "job"
group = "/job"
[[step]]
at = 0
task = "job"
touch_anon = "{size}"
"""


@pytest.fixture
def tiny(tmp_path):
    p = tmp_path / "tiny.toml"
    p.write_text(TINY)
    return str(p)


def _single(path, params):
    sc = load_scenario(path, params)
    return json.loads(json.dumps(run_scenario(sc, SimKernel(**sc.machine.sim_kwargs()), settle=True)))


def test_grid_is_cartesian_with_ranges():
    pts = sweep.parse_grid(["limit=16M..48M:16M", "size=1M,2M"])
    assert [p.as_dict() for p in pts][:2] == [{"limit": "16M", "size": "1M"}, {"limit": "16M", "size": "2M"}]
    assert len(pts) == 6 and pts[-1].as_dict() == {"limit": "48M", "size": "2M"}


@pytest.mark.parametrize("arg, words", [
    ("limit", "KEY=V1"), ("limit=16M..8M:1M", "LOW <= HIGH"), ("limit=1M..8M:0", "step above zero"),
    ("limit=1M..8M", "LOW..HIGH:STEP"), ("limit=a..b:c", "sizes"), ("limit=1M,,2M", "empty value")])
def test_bad_grid_names_key_and_expectation(arg, words):
    with pytest.raises(sweep.GridError, match=words):
        sweep.parse_grid([arg])


def test_bad_grid_cli_exits_2_with_one_line(tiny, capsys):
    assert cli.main(["sweep", tiny, "--param", "nosuch=1", "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nosuch" in err
    assert cli.main(["sweep", tiny, "--param", "limit=4M..2M:1M", "--no-cache"]) == 2


def test_each_point_equals_its_single_run_and_the_cache(tiny, tmp_path):
    cache = sweep.ResultCache(str(tmp_path / "c"))
    pts = sweep.parse_grid(["limit=8M,16M,32M"])
    out = sweep.run_sweep(tiny, pts, jobs=2, cache=cache)
    for p in out:
        assert p["run"] == _single(tiny, p["params"])
    assert cache.hits == 0
    # widened: only the new point runs
    cache2 = sweep.ResultCache(str(tmp_path / "c"))
    out2 = sweep.run_sweep(tiny, sweep.parse_grid(["limit=8M,16M,32M,64M"]), jobs=1, cache=cache2)
    assert cache2.hits == 3 and cache2.misses == 1
    assert out2[:3] == out
    # a changed scenario is a different key
    with open(tiny, "a") as f:
        f.write("# changed\n")
    cache3 = sweep.ResultCache(str(tmp_path / "c"))
    sweep.run_sweep(tiny, pts, jobs=1, cache=cache3)
    assert cache3.hits == 0


def test_csv_and_plot_show_the_knee(tiny, tmp_path):
    js, cs, png = (str(tmp_path / n) for n in ("s.json", "s.csv", "s.png"))
    assert cli.main(["sweep", tiny, "--param", "limit=8M..32M:8M", "--jobs", "1",
                     "--cache-dir", str(tmp_path / "c"), "--json", js, "--csv", cs, "--plot", png]) == 0
    doc = json.load(open(js))
    assert doc["engine"] == "local" and [p["params"]["limit"] for p in doc["points"]] == ["8M", "16M", "24M", "32M"]
    rows = list(csv.DictReader(open(cs)))
    oom = [int(r["oom_kills"]) for r in rows]
    # 24M of anon plus the task's own pages: killed up to 24M, fits at 32M (the knee)
    assert oom == [1, 1, 1, 0]
    assert [r["tasks_oom_killed"] for r in rows] == ["1", "1", "1", "0"]
    assert int(rows[-1]["peak"]) >= 24 << 20 and int(rows[-1]["failcnt"]) == 0
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_ray_engine_gives_the_same_points(tiny):
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'memcg[ray]')")
    pts = sweep.parse_grid(["limit=8M,32M"])
    local = sweep.run_sweep(tiny, pts, jobs=1)
    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=1, log_to_driver=False)
    try:
        remote = sweep.run_sweep(tiny, pts, engine="ray", jobs=1)
    finally:
        ray.shutdown()
    assert json.dumps(remote) == json.dumps(local)


def test_ctrl_c_keeps_the_finished_points(tiny, tmp_path):
    """A KeyboardInterrupt after two points: those two are in the cache, and the rerun
    runs only the rest."""
    cache = sweep.ResultCache(str(tmp_path / "c"))
    pts = sweep.parse_grid(["limit=8M,16M,32M,64M"])

    def interrupt(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep.run_sweep(tiny, pts, jobs=1, cache=cache, progress=interrupt)
    again = sweep.ResultCache(str(tmp_path / "c"))
    out = sweep.run_sweep(tiny, pts, jobs=1, cache=again)
    assert again.hits == 2 and again.misses == 2
    assert [p["run"] for p in out[:2]] == [_single(tiny, {"limit": v}) for v in ("8M", "16M")]


def test_ctrl_c_on_the_command_line_exits_130_with_one_line(tiny, tmp_path, monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(sweep, "run_point", interrupted)
    assert cli.main(["sweep", tiny, "--param", "limit=8M,16M", "--jobs", "1",
                     "--cache-dir", str(tmp_path / "c")]) == 130
    assert capsys.readouterr().err == "memcg: interrupted\n"
