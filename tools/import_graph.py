#!/usr/bin/env python3
"""The package's import graph: cycles, late imports, module sizes and what a backend loads.

    python3 tools/import_graph.py [--src src/memcg] [--json OUT]

Reads every module of the package with `ast` (nothing of the package is imported for
the graph), and prints:
- the modules and their sizes in lines, the largest first;
- the import cycles among modules (strongly connected components of the graph of
  module-level imports, and of all imports);
- every import made inside a function ("late"), with the comment on its line or the
  line above, which should say why it is late;
- the largest class (by methods) of the package;
- what `import memcg.<backend>` loads, measured in a fresh interpreter: the number of
  the package's modules and whether NumPy comes with it.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
from collections import defaultdict


def module_name(root: str, path: str, package: str) -> str:
    rel = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
    if rel.endswith("__init__"):
        rel = rel[: -len("__init__")].rstrip(".")
    return f"{package}.{rel}" if rel else package


def resolve(current: str, is_pkg: bool, node: ast.ImportFrom | ast.Import, package: str,
            modules: set[str]) -> list[str]:
    """The package's modules one import statement names."""
    out = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = current.split(".") if is_pkg else current.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        # "from pkg import mod" names the module; "from mod import name" the module
        names = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
    for name in names:
        if not name.startswith(package):
            continue
        # the longest prefix that is a module of the package
        parts = name.split(".")
        while parts and ".".join(parts) not in modules:
            parts.pop()
        if parts and ".".join(parts) != current:
            out.append(".".join(parts))
    return out


def scc(nodes, edges) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one member."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def analyse(src: str) -> dict:
    package = os.path.basename(os.path.normpath(src))
    files = {}
    for dirpath, _, names in os.walk(src):
        for n in names:
            if n.endswith(".py"):
                p = os.path.join(dirpath, n)
                files[module_name(src, p, package)] = p
    modules = set(files)
    top, every = defaultdict(set), defaultdict(set)
    late = []
    sizes = {}
    classes = []
    for mod, path in files.items():
        text = open(path, encoding="utf-8").read()
        lines = text.splitlines()
        sizes[mod] = len(lines)
        tree = ast.parse(text)
        is_pkg = path.endswith("__init__.py")

        def walk(node, in_func, in_type_checking):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    walk(child, True, in_type_checking)
                elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    walk(child, in_func, True)
                elif isinstance(child, (ast.Import, ast.ImportFrom)):
                    targets = resolve(mod, is_pkg, child, package, modules)
                    if not targets:
                        continue
                    if in_type_checking:
                        continue  # names for annotations only: no import at run time
                    for t in targets:
                        every[mod].add(t)
                        if not in_func:
                            top[mod].add(t)
                    if in_func:
                        line = lines[child.lineno - 1]
                        why = line.split("#", 1)[1].strip() if "#" in line else ""
                        above = lines[child.lineno - 2].strip() if child.lineno > 1 else ""
                        if not why and above.startswith("#"):
                            why = above.lstrip("# ")
                        late.append({"module": mod, "line": child.lineno,
                                     "imports": sorted(set(targets)), "why": why})
                else:
                    walk(child, in_func, in_type_checking)
                if isinstance(child, ast.ClassDef):
                    methods = [b for b in child.body
                               if isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef))]
                    classes.append((len(methods), f"{mod}.{child.name}"))

        walk(tree, False, False)
    return {
        "package": package,
        "modules": len(modules),
        "sizes": dict(sorted(sizes.items(), key=lambda kv: -kv[1])),
        "cycles_top_level": scc(modules, top),
        "cycles_all_imports": scc(modules, every),
        "late_imports": late,
        "edges": {m: sorted(every[m]) for m in sorted(every)},
        "largest_classes": [{"class": c, "methods": n} for n, c in sorted(classes, reverse=True)[:5]],
    }


def loads(src: str, module: str) -> dict:
    """What importing one module brings along, in a fresh interpreter."""
    code = ("import sys, json; import importlib; importlib.import_module(%r); "
            "print(json.dumps({'package_modules': sorted(m for m in sys.modules "
            "if m == 'memcg' or m.startswith('memcg.')), 'numpy': 'numpy' in sys.modules}))"
            % module)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(src)))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if r.returncode:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"}
    return json.loads(r.stdout)


def main(argv=None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default=os.path.join(here, "..", "src", "memcg"))
    ap.add_argument("--json", help="write the figures as JSON to this file")
    ap.add_argument("--load", action="append", default=[],
                    help="a module whose import cost to measure (repeatable); default: the "
                         "real-cgroup backend and its worker")
    args = ap.parse_args(argv)
    src = os.path.normpath(args.src)
    res = analyse(src)
    pkg = res["package"]
    targets = args.load or [m for m in (f"{pkg}.linux", f"{pkg}.worker",
                                        f"{pkg}.backends.linux", f"{pkg}.backends.worker")
                            if m in res["sizes"]]
    res["loads"] = {m: loads(src, m) for m in targets}

    print(f"{res['modules']} modules; largest:")
    for mod, n in list(res["sizes"].items())[:8]:
        print(f"  {n:6d}  {mod}")
    for c in res["largest_classes"][:3]:
        print(f"largest class: {c['class']} ({c['methods']} methods)")
    for title, key in (("module-level import cycles", "cycles_top_level"),
                       ("import cycles counting late imports", "cycles_all_imports")):
        cycles = res[key]
        print(f"{title}: {len(cycles)}" + (f" (largest {max(map(len, cycles))} modules)" if cycles else ""))
        for comp in cycles:
            print("  " + " <-> ".join(m.removeprefix(pkg + ".") for m in comp))
    late = res["late_imports"]
    unexplained = [x for x in late if not x["why"]]
    print(f"late imports (inside functions): {len(late)}, {len(unexplained)} without a comment")
    for x in late:
        print(f"  {x['module']}:{x['line']} {', '.join(x['imports'])}"
              + (f"  # {x['why']}" if x["why"] else ""))
    for m, info in res["loads"].items():
        if "error" in info:
            print(f"import {m}: {info['error']}")
        else:
            print(f"import {m}: {len(info['package_modules'])} package modules, "
                  f"numpy {'loaded' if info['numpy'] else 'not loaded'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
