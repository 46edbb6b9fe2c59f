"""Regressions for issue 17 (reliability): defects found by hostile but careful use."""

import pytest

import memcg
from memcg.parse import parse_size, simple_strtoul
from memcg.scenario import ScenarioError, builtin_names, load_scenario, parse_scenario
from memcg.scenario.loader import MAX_SCENARIO_BYTES


def test_dying_group_freed_during_reclaim_walk():
    """A removed group still holding page cache is freed while machine-wide reclaim walks
    the tree (mem_cgroup_iter skips a freed css); the walk must not crash."""
    k = memcg.SimKernel(memory="1G")
    k.mkdir("/g")
    t = k.spawn("/g")
    t.read_file("f", 1 << 20)
    t.exit()
    k.rmdir("/g")
    k.spawn("/").read_file("big", 4 << 30)
    # the dying group's cache was reclaimed and the group freed (css_free)
    assert k.sys.dying == [] or len(k.sys.dying) == 0
    assert len(k.sys.memcgs) == 1


# --- bad bytes and empty files (issue 17, item 6)

def _scenario_error(text: str) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, "test.toml")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("test.toml: ")
    return msg


def test_sizes_take_ascii_digits_only():
    """memparse() reads '0'-'9'; Arabic-Indic digits are not a size."""
    for bad in ("\u0661\u0666M", "\uff11\uff16M", "16\u00a0M"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert parse_size("16M") == 16 << 20
    assert simple_strtoul("\u0661\u0666") == (0, "\u0661\u0666")
    assert simple_strtoul("16x") == (16, "x")
    msg = _scenario_error('[machine]\nmemory = "1G"\n[[group]]\npath = "/a"\nlimit = "\u0661\u0666M"\n')
    assert "limit" in msg


def test_empty_scenario_is_an_error():
    assert "empty scenario" in _scenario_error("")
    assert "empty scenario" in _scenario_error("# only a comment\n")


def test_group_path_with_nul_is_refused():
    msg = _scenario_error('[[group]]\npath = "/a\\u0000b"\n')
    assert "NUL" in msg


def test_rmdir_of_undeclared_group_is_refused_at_load():
    msg = _scenario_error('[[group]]\npath = "/a"\n[[step]]\nat = 1\nrmdir = "/b"\n')
    assert "unknown group '/b'" in msg
    # a group made by an earlier step may be removed
    parse_scenario('[[step]]\nat = 1\nmkdir = "/b"\n[[step]]\nat = 2\nrmdir = "/b"\n', "test.toml")


def test_builtins_still_load():
    for name in builtin_names():
        load_scenario(name)


# --- bounds on scenario files (issue 17, item 5)

def _load_error(path) -> str:
    with pytest.raises(ScenarioError) as info:
        load_scenario(str(path))
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_scenario_that_is_not_a_regular_file_is_refused():
    assert "not a regular file" in _load_error("/dev/zero")


def test_scenario_file_too_large_is_refused(tmp_path):
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (MAX_SCENARIO_BYTES + 1))
    assert f"larger than {MAX_SCENARIO_BYTES} bytes" in _load_error(big)


def test_deeply_nested_toml_is_one_line(tmp_path):
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested too deeply" in _load_error(deep)
