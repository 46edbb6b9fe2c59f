"""The package's layers: imports go one way (CLI -> scenario -> Kernel -> model), and the
real-cgroup backend imports with the standard library alone (docs/design.md)."""

import importlib.util
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "src", "memcg")


def _graph():
    spec = importlib.util.spec_from_file_location(
        "import_graph", os.path.join(HERE, "..", "tools", "import_graph.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.analyse(os.path.normpath(SRC))


GRAPH = _graph()
EDGES = GRAPH["edges"]

# The model: mechanisms and the state they receive.  It knows nothing of the layers above.
MODEL = ("memcg.mm", "memcg.fs", "memcg.net", "memcg.system", "memcg.sched", "memcg.tasks",
         "memcg.static_key")
ABOVE_MODEL = ("memcg.cgroupfs", "memcg.backends", "memcg.scenario", "memcg.cli",
               "memcg.compare", "memcg.calibrate", "memcg.report", "memcg.cache", "memcg.sweep", "memcg.record")
# Above the Kernel interface: they reach backends through it, never into the model.
CLIENTS = ("memcg.scenario", "memcg.compare", "memcg.calibrate", "memcg.report", "memcg.cache",
           "memcg.cli", "memcg.sweep", "memcg.record")


def _in(mod: str, prefixes) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def test_the_model_imports_nothing_above_it():
    bad = [(m, t) for m, ts in EDGES.items() if _in(m, MODEL) for t in ts if _in(t, ABOVE_MODEL)]
    assert bad == []


def test_clients_of_the_interface_do_not_reach_into_the_model():
    bad = [(m, t) for m, ts in EDGES.items() if _in(m, CLIENTS) for t in ts
           if _in(t, MODEL + ("memcg.cgroupfs",))]
    assert bad == []


def test_late_imports_say_why():
    assert [x for x in GRAPH["late_imports"] if not x["why"]] == []


@pytest.mark.parametrize("module", ["memcg.backends.linux", "memcg.backends.worker"])
def test_the_real_backend_imports_with_the_standard_library_alone(module):
    code = (f"import sys, importlib; importlib.import_module({module!r}); "
            "print('numpy' in sys.modules, sorted(m for m in sys.modules if m.startswith('memcg.')))")
    env = dict(os.environ, PYTHONPATH=os.path.normpath(os.path.join(SRC, "..")))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout
    numpy_loaded, modules = out.split(" ", 1)
    assert numpy_loaded == "False", modules
    assert "memcg.mm" not in modules and "memcg.system" not in modules


def _model_modules():
    root = os.path.normpath(os.path.join(SRC, ".."))
    out = []
    for sub in ("mm", "fs", "net"):
        for dirpath, _, names in os.walk(os.path.join(SRC, sub)):
            for name in sorted(names):
                if name.endswith(".py"):
                    rel = os.path.relpath(os.path.join(dirpath, name[:-3]), root)
                    out.append(rel.replace(os.sep, ".").removesuffix(".__init__"))
    return sorted(out)


def test_every_model_module_imports_first():
    """Whichever model module a program imports first, its imports resolve (no cycle
    that only an import order elsewhere hides): one fresh interpreter per module."""
    env = dict(os.environ, PYTHONPATH=os.path.normpath(os.path.join(SRC, "..")))
    failed = {}
    for module in _model_modules():
        r = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                           text=True, env=env)
        if r.returncode:
            failed[module] = r.stderr.strip().splitlines()[-1]
    assert failed == {}
