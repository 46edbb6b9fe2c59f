"""The `memcg` command: run, list, fs, errors as one line and exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import memcg
from memcg import cli
from memcg.cli import main
from test_scenario import BUILTINS, DESIGN_KEYS, MINIMAL, FakeKernel

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture
def fake(monkeypatch):
    """Make the CLI's simulated kernel the fake kernel for the duration of a test."""
    FakeKernel.instances.clear()
    monkeypatch.setitem(cli.KERNELS, "sim", FakeKernel)
    return FakeKernel


def has_sim() -> bool:
    try:
        memcg.SimKernel  # noqa: B018
    except AttributeError:
        return False
    return memcg.SimKernel is not FakeKernel


def one_line_error(capsys, argv, status=2) -> str:
    assert main(argv) == status
    out, err = capsys.readouterr()
    assert err.startswith("memcg: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


# --------------------------------------------------------------------------- list


def test_list_shows_the_builtins_with_descriptions(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == sorted(names) and set(BUILTINS) <= set(names)
    assert all(len(line.split()) > 3 for line in lines)


# --------------------------------------------------------------------------- bad input -> exit 2


def test_unknown_scenario_name(capsys):
    err = one_line_error(capsys, ["run", "nope"])
    assert "nope" in err and "no such built-in scenario" in err


def test_missing_file(capsys, tmp_path):
    path = str(tmp_path / "missing.toml")
    err = one_line_error(capsys, ["run", path])
    assert path in err and "no such scenario file" in err


def test_bad_toml(capsys, tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("name = [\n")
    err = one_line_error(capsys, ["run", str(f)])
    assert f"{f}: invalid TOML" in err


def test_bad_key_names_file_and_key(capsys, tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text(MINIMAL.replace('read_file = "f{i}"', 'read_file = 3'))
    err = one_line_error(capsys, ["run", str(f)])
    assert f"{f}: step[1].read_file: expected a file name" in err


def test_unknown_task_in_step(capsys, tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text(MINIMAL.replace('task = "t"\nread_file', 'task = "u"\nread_file'))
    err = one_line_error(capsys, ["fs", str(f)])
    assert "step[1].task: unknown task 'u'" in err


def test_unknown_param(capsys):
    err = one_line_error(capsys, ["run", "hog", "--param", "nope=1"])
    assert "hog.toml: --param nope: unknown parameter" in err


def test_param_without_equals(capsys):
    err = one_line_error(capsys, ["run", "hog", "--param", "limit"])
    assert "KEY=VALUE" in err


def test_bad_param_value_names_the_key(capsys):
    err = one_line_error(capsys, ["run", "hog", "--param", "steps=many"])
    assert "hog.toml: step[" in err and ".repeat" in err and "'many'" in err


def test_setup_write_rejected_is_exit_2(capsys, fake):
    err = one_line_error(capsys, ["run", "hog", "--param", "limit=lots"])
    assert 'hog.toml: group[0].files."memory.limit_in_bytes"' in err and "EINVAL" in err
    assert all(k.closed for k in fake.instances)


def test_linux_backend_missing(capsys, monkeypatch):
    monkeypatch.delitem(cli.KERNELS, "linux")
    err = one_line_error(capsys, ["run", "hog", "--backend", "linux"])
    assert "linux backend" in err


def test_linux_backend_cannot_start(capsys, monkeypatch):
    def refuse():
        raise PermissionError(13, "no writable memory cgroup v1 controller\n(try as root)")

    monkeypatch.setitem(cli.KERNELS, "linux", refuse)
    err = one_line_error(capsys, ["run", "hog", "--backend", "linux"])
    assert "cannot use real cgroups" in err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "hog", "--backend", "vax"])
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


# --------------------------------------------------------------------------- run on the fake kernel


def test_run_prints_summary_and_writes_json(capsys, tmp_path, fake):
    out_json = tmp_path / "run.json"
    assert main(["run", "hog", "--json", str(out_json), "--param", "limit=32M"]) == 0
    out = capsys.readouterr().out
    assert "scenario hog on the fake kernel" in out
    assert "params: limit=32M" in out
    for word in ("group", "limit", "usage", "max usage", "failcnt", "cache", "rss", "oom_kill",
                 "/hog", "/neighbour", "oom_killed", "running", "/hog/memory.oom_control", "expectations"):
        assert word in out, word
    assert "32M" in out
    data = json.loads(out_json.read_text())
    assert DESIGN_KEYS <= set(data)
    assert data["scenario"] == "hog" and data["backend"] == "fake"
    assert data["tasks"]["hog"]["state"] == "oom_killed"
    assert data["tasks"]["neighbour"]["state"] == "running"
    assert isinstance(data["tasks"]["hog"]["pid"], int)
    assert data["events"]["/hog/memory.oom_control"] >= 1
    assert "oom_kill 1" in data["groups"]["/hog"]["memory.oom_control"]
    # the kernel was built from [machine]
    assert fake.instances[-1].machine == ("512M", 2, "0")


def test_json_to_stdout(capsys, fake):
    assert main(["run", "shared-pages", "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scenario"] == "shared-pages"


def test_failed_expectation_exits_1(capsys, tmp_path, fake):
    f = tmp_path / "x.toml"
    f.write_text('[[step]]\nat = 0\nexpect = { "/memory.failcnt" = "> 0" }\n')
    assert main(["run", str(f)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "0 of 1 hold" in out


def test_plot_writes_a_png(capsys, tmp_path, fake):
    pytest.importorskip("matplotlib")
    png = tmp_path / "hog.png"
    assert main(["run", "hog", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fs_prints_named_files(capsys, fake):
    assert main(["fs", "hog", "/hog/memory.oom_control"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == ["oom_kill_disable 0", "under_oom 0", "oom_kill 1"]


def test_fs_prints_all_files_of_all_groups(capsys, fake):
    assert main(["fs", "shared-pages"]) == 0
    out = capsys.readouterr().out
    assert "==> /a/memory.stat <==" in out and "==> /b/memory.oom_control <==" in out
    assert "force_empty" not in out  # write-only files are left out


def test_fs_unreadable_path(capsys, fake):
    assert main(["fs", "hog", "/hog/memory.nope"]) == 1
    assert "memcg: cannot read /hog/memory.nope" in capsys.readouterr().err


# --------------------------------------------------------------------------- as a process


def run_module(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "memcg", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_python_m_memcg_bad_input_exits_2_without_traceback(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[machine]\nmemory = '12Q'\n")
    p = run_module("run", str(f))
    assert p.returncode == 2
    assert p.stderr == f"memcg: {f}: machine.memory: expected a size (bytes, or a string like \"64M\" " \
                       "with suffix K, M or G), got '12Q'\n"
    p = run_module("run", "nope")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "Traceback" not in p.stderr


def test_python_m_memcg_list():
    p = run_module("list")
    assert p.returncode == 0, p.stderr
    assert "hog" in p.stdout


# --------------------------------------------------------------------------- the simulated kernel


@pytest.mark.parametrize("name", BUILTINS)
def test_builtins_pass_on_the_simulated_kernel(capsys, name, tmp_path):
    if not has_sim():
        pytest.skip("memcg.SimKernel is not available yet")
    out_json = tmp_path / "run.json"
    status = main(["run", name, "--json", str(out_json)])
    out = capsys.readouterr().out
    assert status == 0, out
    data = json.loads(out_json.read_text())
    assert data["backend"] == "sim"
    assert all(e["ok"] for e in data["expectations"])
