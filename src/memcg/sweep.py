"""Sweeps: one scenario run over the cartesian grid of parameter values.

Each point of a sweep is exactly `memcg run NAME --param K=V ...` on the simulated
kernel (deterministic), so a point's result is the JSON of that run.  Results are
cached by the scenario's content, the point's params and the package version, so a
widened sweep runs only its new points.  Engines: `local` (a process pool) and
`ray` (the optional extra, `pip install 'memcg[ray]'`); both return the same points.
"""

from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import importlib.resources
import itertools
import json
import os
from dataclasses import dataclass
from typing import IO, Any, Callable, Iterable, Sequence

from . import __version__, parse
from .backends.sim import SimKernel
from .scenario import ScenarioError, load_scenario, run_scenario

__all__ = ["GridError", "Point", "parse_grid", "expand_range", "scenario_source", "point_key",
           "run_point", "ResultCache", "default_cache_dir", "run_sweep", "ENGINES",
           "CSV_COLUMNS", "csv_rows", "write_csv", "plot_sweep", "sweep_json"]

ENGINES = ("local", "ray")
"""The engines a sweep runs its points on."""


class GridError(ValueError):
    """A bad --param grid: the message names the key, the value and what was expected."""


@dataclass(frozen=True)
class Point:
    """One point of a grid: the params it overrides, in the grid's key order."""
    params: tuple[tuple[str, str], ...]

    def as_dict(self) -> dict[str, str]:
        return dict(self.params)


# The most points a grid may have (and values one range may give): each point is one run.
MAX_POINTS = 100_000


def expand_range(key: str, text: str) -> list[str]:
    """`16M..256M:16M` -> ['16M', '32M', ... '256M'] (sizes in bytes when not a whole
    number of MiB); both ends included.  Raises GridError."""
    lo_text, _, rest = text.partition("..")
    hi_text, sep, step_text = rest.partition(":")
    if not sep:
        raise GridError(f"--param {key}: range {text!r}: expected LOW..HIGH:STEP, e.g. 16M..256M:16M")
    try:
        lo, hi, step = (parse.parse_size(t.strip()) for t in (lo_text, hi_text, step_text))
    except ValueError:
        raise GridError(f"--param {key}: range {text!r}: expected sizes such as 16M, 1G or a byte "
                        "count at both ends and as the step") from None
    if step <= 0:
        raise GridError(f"--param {key}: range {text!r}: expected a step above zero")
    if hi < lo:
        raise GridError(f"--param {key}: range {text!r}: expected LOW <= HIGH")
    if (hi - lo) // step + 1 > MAX_POINTS:
        raise GridError(f"--param {key}: range {text!r}: expected at most {MAX_POINTS} values")
    return [_size_text(v) for v in range(lo, hi + 1, step)]


def _size_text(n: int) -> str:
    for suffix, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{suffix}"
    return str(n)


def parse_grid(pairs: Sequence[str]) -> list[Point]:
    """The cartesian grid of `KEY=V1,V2,...` / `KEY=LOW..HIGH:STEP` pairs, in order (the
    last key varies fastest; duplicates within a key dropped).  Raises GridError."""
    keys: list[str] = []
    values: list[list[str]] = []
    for p in pairs:
        key, sep, text = p.partition("=")
        key = key.strip()
        if not sep or not key:
            raise GridError(f"--param {p!r}: expected KEY=V1,V2,... or KEY=LOW..HIGH:STEP")
        if key in keys:
            raise GridError(f"--param {key}: given twice; expected each key once")
        vals: dict[str, None] = {}   # in order, each once
        for item in text.split(","):
            item = item.strip()
            if not item:
                raise GridError(f"--param {key}={text}: empty value; expected V1,V2,...")
            vals.update(dict.fromkeys(expand_range(key, item) if ".." in item else [item]))
            if len(vals) > MAX_POINTS:
                raise GridError(f"--param {key}: expected at most {MAX_POINTS} values")
        keys.append(key)
        values.append(list(vals))
    total = 1
    for vals in values:
        total *= len(vals)
    if total > MAX_POINTS:
        sizes = " x ".join(str(len(v)) for v in values)
        raise GridError(f"--param: {sizes} = {total} points; expected at most {MAX_POINTS} points "
                        "in the grid")
    return [Point(tuple(zip(keys, combo))) for combo in itertools.product(*values)]


def scenario_source(name_or_path: str) -> bytes:
    """The bytes of a scenario file or built-in (what the cache key is taken from)."""
    if "/" in name_or_path or os.sep in name_or_path or name_or_path.endswith(".toml"):
        try:
            with open(name_or_path, "rb") as f:
                return f.read()
        except OSError:
            return b""   # load_scenario reports it
    try:
        return importlib.resources.files("memcg").joinpath("scenarios", f"{name_or_path}.toml").read_bytes()
    except OSError:
        return b""


def point_key(source: bytes, point: Point) -> str:
    """The cache key of a point: scenario content, its params, the package version.  The
    model is deterministic (its only seed is in the scenario), so these fix the result."""
    h = hashlib.sha256()
    h.update(__version__.encode() + b"\0" + source + b"\0")
    h.update(json.dumps(sorted(point.params)).encode())
    return h.hexdigest()


def run_point(name_or_path: str, params: dict[str, str]) -> dict:
    """The JSON of `memcg run NAME --param ...` (simulated kernel) for one point."""
    scenario = load_scenario(name_or_path, params)
    kernel = SimKernel(**scenario.machine.sim_kwargs())
    # round-trip through JSON so a cached, a pooled and a fresh point compare equal
    return json.loads(json.dumps(run_scenario(scenario, kernel, settle=True)))


def check_points(name_or_path: str, points: Sequence[Point]) -> None:
    """Load the scenario once per distinct value so a bad value fails before any run:
    raises GridError naming the key and the value."""
    load_scenario(name_or_path)   # the file itself (ScenarioError)
    seen: set[tuple[str, str]] = set()
    for pt in points:
        for k, v in pt.params:
            if (k, v) in seen:
                continue
            seen.add((k, v))
            try:
                load_scenario(name_or_path, {k: v})
            except ScenarioError as e:
                raise GridError(f"--param {k}={v}: {e}") from None


def default_cache_dir() -> str:
    """$MEMCG_CACHE_DIR, else $XDG_CACHE_HOME/memcg, else ~/.cache/memcg."""
    if os.environ.get("MEMCG_CACHE_DIR"):
        return os.environ["MEMCG_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "memcg", "sweep")


@dataclass
class ResultCache:
    """Finished points on disk, one JSON file per key (written atomically)."""
    directory: str
    hits: int = 0
    misses: int = 0

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, key[:2], key + ".json")

    def get(self, key: str) -> dict | None:
        try:
            with open(self._path(key), encoding="utf-8") as f:
                out = json.load(f)
        except (OSError, ValueError):
            self.misses += 1
            return None
        self.hits += 1
        return out

    def put(self, key: str, result: dict) -> None:
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(result, f)
        os.replace(tmp, path)


def _local(name: str, todo: list[tuple[int, Point]], jobs: int,
           done: Callable[[int, dict], None]) -> None:
    if jobs <= 1:
        for i, pt in todo:
            done(i, run_point(name, pt.as_dict()))
        return
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_point, name, pt.as_dict()): i for i, pt in todo}
        try:
            for fut in concurrent.futures.as_completed(futures):
                done(futures[fut], fut.result())
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise


def _ray(name: str, todo: list[tuple[int, Point]], jobs: int, address: str | None,
         done: Callable[[int, dict], None]) -> None:
    try:
        import ray  # the optional extra: only a ray sweep needs it
    except ImportError:
        raise GridError("--engine ray needs Ray: pip install 'memcg[ray]'") from None
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, num_cpus=jobs,
                     log_to_driver=False)
        started = True
    try:
        remote = ray.remote(run_point)
        refs = {remote.remote(name, pt.as_dict()): i for i, pt in todo}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for r in ready:
                done(refs[r], ray.get(r))
    finally:
        if started:
            ray.shutdown()


def run_sweep(name_or_path: str, points: Sequence[Point], *, engine: str = "local",
              jobs: int | None = None, address: str | None = None,
              cache: ResultCache | None = None,
              progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Run every point (those not in `cache` on `engine`) and return, in grid order,
    `{"params": ..., "run": <JSON of memcg run>}`.  Each finished point goes into the
    cache at once, so an interrupted sweep keeps what it finished.  Raises GridError
    for a bad value or engine, ScenarioError for a bad scenario."""
    if engine not in ENGINES:
        raise GridError(f"--engine {engine}: expected one of {', '.join(ENGINES)}")
    check_points(name_or_path, points)
    source = scenario_source(name_or_path)
    keys = [point_key(source, pt) for pt in points]
    results: list[dict | None] = [None] * len(points)
    todo = []
    for i, (pt, key) in enumerate(zip(points, keys)):
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            results[i] = hit
        else:
            todo.append((i, pt))
    finished = len(points) - len(todo)
    if progress:
        progress(finished, len(points))

    def done(i: int, result: dict) -> None:
        nonlocal finished
        results[i] = result
        if cache is not None:
            cache.put(keys[i], result)
        finished += 1
        if progress:
            progress(finished, len(points))

    jobs = jobs or os.cpu_count() or 1
    if todo:
        if engine == "local":
            _local(name_or_path, todo, jobs, done)
        else:
            _ray(name_or_path, todo, jobs, address, done)
    return [{"params": pt.as_dict(), "run": r} for pt, r in zip(points, results)]


def sweep_json(scenario: str, engine: str, points: list[dict]) -> dict:
    """The JSON of a sweep."""
    return {"scenario": scenario, "engine": engine, "points": points}


# -- figures per point

CSV_COLUMNS = ("peak", "failcnt", "oom_kills", "tasks_running", "tasks_exited", "tasks_oom_killed",
               "events", "errors", "pressure_low", "pressure_medium", "pressure_critical",
               "ticks_to_finish")
"""The figures of a point after its params: summed over the scenario's groups, except the
peak (the highest memory.max_usage_in_bytes of a non-root group, else root's)."""


def _figures(run: dict) -> dict[str, int]:
    groups = run.get("groups", {})
    peaks = {g: parse.parse_int(f.get("memory.max_usage_in_bytes")) or 0 for g, f in groups.items()}
    non_root = [v for g, v in peaks.items() if g != "/"]
    failcnt = sum(parse.parse_int(f.get("memory.failcnt")) or 0 for f in groups.values())
    oom = sum(parse.parse_stat(f.get("memory.oom_control", "")).get("oom_kill", 0)
              for f in groups.values())
    states = [t["state"] for t in run.get("tasks", {}).values()]
    events = run.get("events", {})
    level = {lv: sum(n for label, n in events.items() if lv in label)
             for lv in ("low", "medium", "critical")}
    # time to finish: the first tick after which no group's usage changes again
    ticks = run.get("series", {}).get("tick", [])
    last = 0
    for row in run.get("series", {}).get("groups", {}).values():
        u = row.get("usage", [])
        for i in range(len(u) - 1, 0, -1):
            if u[i] != u[i - 1]:
                last = max(last, i)
                break
    return {
        "peak": max(non_root) if non_root else peaks.get("/", 0),
        "failcnt": failcnt,
        "oom_kills": oom,
        "tasks_running": sum(s not in ("exited", "oom_killed") for s in states),
        "tasks_exited": states.count("exited"),
        "tasks_oom_killed": states.count("oom_killed"),
        "events": sum(events.values()),
        "errors": len(run.get("errors", [])),
        "pressure_low": level["low"],
        "pressure_medium": level["medium"],
        "pressure_critical": level["critical"],
        "ticks_to_finish": (ticks[last] + 1) if ticks else 0,
    }


def csv_rows(points: Iterable[dict]) -> tuple[list[str], list[list[Any]]]:
    """The CSV header and one row per point: its params, then CSV_COLUMNS."""
    points = list(points)
    keys: list[str] = []
    for p in points:
        keys += [k for k in p["params"] if k not in keys]
    rows = []
    for p in points:
        f = _figures(p["run"])
        rows.append([p["params"].get(k, "") for k in keys] + [f[c] for c in CSV_COLUMNS])
    return keys + list(CSV_COLUMNS), rows


def write_csv(points: Iterable[dict], out: IO[str]) -> None:
    """Write csv_rows() as CSV."""
    header, rows = csv_rows(points)
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)


def _axis_value(v: str) -> float | str:
    try:
        return float(parse.parse_size(v))
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def plot_sweep(points: list[dict], key: str, path: str) -> None:
    """Plot peak, failcnt, OOM kills and pressure events against the swept `key` (other
    keys at their first value) into a PNG.  Raises ImportError without matplotlib."""
    import matplotlib  # optional: only a plot needs it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = points[0]["params"] if points else {}
    line = [p for p in points if all(v == first[k] for k, v in p["params"].items() if k != key)]
    xs_raw = [p["params"][key] for p in line]
    xs = [_axis_value(v) for v in xs_raw]
    sizes = all(isinstance(x, float) for x in xs) and all(
        _is_size(v) for v in xs_raw)
    x_plot = [x / (1 << 20) for x in xs] if sizes else (xs if all(isinstance(x, float) for x in xs)
                                                         else list(range(len(xs))))
    figs = [_figures(p["run"]) for p in line]
    fig, axes = plt.subplots(3, 1, figsize=(7, 7), sharex=True)
    axes[0].plot(x_plot, [f["peak"] / (1 << 20) for f in figs], "o-", label="peak")
    if sizes:
        axes[0].plot(x_plot, x_plot, ":", color="grey", label=key)
    axes[0].set_ylabel("MiB")
    axes[0].legend(loc="best")
    axes[1].plot(x_plot, [f["oom_kills"] for f in figs], "o-", color="tab:red", label="OOM kills")
    axes[1].plot(x_plot, [f["tasks_oom_killed"] for f in figs], "x--", color="tab:orange",
                 label="tasks OOM-killed")
    axes[1].set_ylabel("count")
    axes[1].legend(loc="best")
    axes[2].plot(x_plot, [f["failcnt"] for f in figs], "o-", color="tab:purple", label="failcnt")
    axes[2].plot(x_plot, [f["events"] for f in figs], "s--", color="tab:green", label="events")
    axes[2].set_ylabel("count")
    axes[2].legend(loc="best")
    axes[2].set_xlabel(f"{key} (MiB)" if sizes else key)
    if not all(isinstance(x, float) for x in xs):
        axes[2].set_xticks(x_plot, xs_raw)
    name = points[0]["run"].get("scenario", "") if points else ""
    fig.suptitle(f"{name}: sweep over {key}")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _is_size(v: str) -> bool:
    return v.strip()[-1:].lower() in "kmgtpe" and v.strip()[-1:].isalpha()
