"""The `memcg` command: run scenarios, list the built-ins, look at a run's cgroup files.

    memcg run NAME|FILE [--backend sim|linux|vm] [--json OUT] [--plot OUT.png] [--param k=v ...]
    memcg list
    memcg fs NAME|FILE [--param k=v ...] [PATH ...]
    memcg compare NAME|FILE [--against linux|vm] [--json OUT] [--profile FILE] [--param k=v ...]
    memcg calibrate [--out FILE]
    memcg sweep NAME|FILE --param KEY=V1,V2,...|KEY=LOW..HIGH:STEP [...] [--jobs N]
                [--engine local|ray] [--address ADDR] [--json OUT] [--csv OUT] [--plot OUT.png]
    memcg record [--limit SIZE] [--interval S] [--timeout S] --out FILE.toml [--json REAL.json]
                 -- CMD [ARGS...]
    memcg vm fetch | memcg vm probe [--hierarchy v1|v2]
    memcg fuzz --seeds N [--start S] [--ops K] [--against linux] [--repeat-real] [--json FILE]

Exit status: 0 on success, 1 when a scenario's expectations do not hold (or a `fs` path
cannot be read, or a recorded command failed or was OOM-killed), 2 for bad input (unknown scenario, bad file, bad parameter) or an
unavailable backend.  Errors are one line on stderr, `memcg: <message>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
from typing import Sequence

from . import calibrate, compare, fuzz, parse, record, report, shrinkerd, sweep
from .backends import vm
from .backends.linux import LinuxKernel
from .backends.sim import SimKernel
from .backends.vmkernel import VMKernel
from .kernel import Kernel
from .parse import parse_size
from .profile import load_profile, worker_profile
from .scenario import (
    Scenario,
    ScenarioError,
    builtin_names,
    load_scenario,
    run_scenario,
)
from .scenario.v2map import on_hierarchy

__all__ = ["KERNELS", "main", "make_kernel"]

KERNELS: dict[str, type[Kernel]] = {"sim": SimKernel, "linux": LinuxKernel, "vm": VMKernel}
"""The kernels `--backend` chooses from."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as every other bad input: one line, exit status 2."""

    def error(self, message: str):
        print(f"memcg: {self.prog.removeprefix('memcg').strip() or 'memcg'}: "
              f"{' '.join(message.split())} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


class _Fatal(Exception):
    """A one-line error that ends the command with a given exit status."""

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


def _check_writable(*paths: str | None) -> None:
    """An output file that cannot be written is bad input, found before the work is done."""
    for path in paths:
        if not path or path == "-":
            continue
        where = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            raise _Fatal(f"cannot write {path}: it is a directory")
        if not (os.path.isdir(where) and os.access(where, os.W_OK)):
            raise _Fatal(f"cannot write {path}: no writable directory {os.path.dirname(path) or '.'}")


def _params(pairs: Sequence[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in pairs or ():
        key, sep, value = p.partition("=")
        if not sep or not key.strip():
            raise _Fatal(f"--param expects KEY=VALUE, got {p!r}")
        out[key.strip()] = value
    return out


def make_kernel(scenario: Scenario, backend: str = "sim", profile: str | dict | None = None,
                predict: Kernel | None = None) -> Kernel:
    """A fresh kernel for `scenario`: SimKernel built from `[machine]`, or LinuxKernel.

    On real cgroups the machine's memory becomes the limit of the kernel's root group,
    so the scenario meets the same memory pressure on a bigger machine.  `profile` is a
    calibration file (or a profile dict) for the simulated kernel.  `predict`: the real
    kernel the simulated one is to predict; one that serves mempressure.shrinker through a
    shrinkerd (LinuxKernel on v1) gets a simulated kernel whose requests come from the
    same daemon's policy instead of the in-kernel hook.
    Raises _Fatal (exit 2) for a backend not in KERNELS or one that cannot start.
    """
    cls = KERNELS.get(backend)
    if cls is None:
        raise _Fatal(f"the {backend} backend is not available (backends: {', '.join(KERNELS)})")
    if backend == "linux":
        try:
            # a v2 scenario reads memory.stat with v2 keys (a mapped v1 one converts it)
            kernel = cls(memory=scenario.machine.memory, swap=scenario.machine.swap,
                         v2_stat=scenario.machine.hierarchy == "v2")
        except Exception as e:  # the boundary to the real system: report it in one line
            msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            msg = " ".join(msg.split()) or type(e).__name__
            raise _Fatal(f"cannot use real cgroups: {msg}") from None
        if scenario.machine.hierarchy == "v2" and getattr(kernel, "version", 2) != 2:
            kernel.close()
            raise _Fatal(f"{scenario.file}: the scenario is for cgroup v2 and this host's memory "
                         "controller is cgroup v1 (use --backend sim or vm)")
        return kernel
    m = scenario.machine
    if backend == "vm":
        return _boot_vm(cls, m)
    kw = m.sim_kwargs()
    margin = getattr(predict, "shrinkerd_margin", None)
    if margin is not None and m.hierarchy == "v1":
        kw.update(shrinker="shrinkerd", shrinkerd_margin=margin)
    try:
        if profile is not None:
            return cls(**kw, profile=profile)
        return cls(**kw)
    except (ValueError, TypeError, OSError) as e:
        msg = " ".join(str(e).split())
        raise _Fatal(f"{scenario.file}: machine: the simulated kernel refused it: {msg}") from None


def _boot_vm(cls, m) -> Kernel:
    """A VM guest with the scenario's machine (RAM, CPUs) and cgroup version, booted now
    so that a missing qemu or kernel is reported first."""
    try:
        kernel = cls(hierarchy=m.hierarchy, memory=m.memory, cpus=m.cpus, swap=m.swap)
    except (ValueError, NotImplementedError) as e:
        raise _Fatal(f"{m.memory} machine: the VM backend refused it: {e}") from None
    try:
        kernel.boot()
        # as on real cgroups, the kernel's root group is limited to the machine's memory
        kernel.write("/memory.max" if m.hierarchy == "v2" else "/memory.limit_in_bytes", m.memory)
    except (vm.GuestError, OSError) as e:
        kernel.close()
        raise _Fatal(f"cannot use the VM guest: {e}") from None
    return kernel


def _cmd_run(args: argparse.Namespace) -> int:
    scenario = _hierarchy(load_scenario(args.scenario, _params(args.param)), args.hierarchy)
    kernel = make_kernel(scenario, args.backend)
    result = run_scenario(scenario, kernel, settle=True)   # exact final memory.stat on real cgroups
    if args.backend == "vm":        # which kernel ran it, and how QEMU ran the guest
        result["kernel"], result["accel"] = kernel.kernel_release, kernel.accel
    if args.json != "-":
        sys.stdout.write(report.summary(result, scenario.description))
    if args.json:
        try:
            if args.json == "-":
                report.write_json(result, sys.stdout)
            else:
                with open(args.json, "w", encoding="utf-8") as f:
                    report.write_json(result, f)
        except OSError as e:
            raise _Fatal(f"cannot write {args.json}: {e.strerror or e}") from None
    if args.plot:
        try:
            report.plot(result, args.plot)
        except ImportError:
            raise _Fatal("--plot needs matplotlib (pip install matplotlib)") from None
        except OSError as e:
            raise _Fatal(f"cannot write {args.plot}: {e.strerror or e}") from None
    return 0 if all(e["ok"] for e in result.get("expectations", [])) else 1


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def _cmd_list(args: argparse.Namespace) -> int:
    rows = []
    for name in builtin_names():
        try:
            desc = load_scenario(name).description
        except ScenarioError as e:
            desc = f"(broken: {e})"
        rows.append((name, _first_sentence(desc)))
    width = max((len(n) for n, _ in rows), default=0)
    for name, desc in rows:
        print(f"{name.ljust(width)}  {desc}".rstrip())
    return 0


def _group_files(kernel, group: str, groups: set[str]) -> list[str]:
    """The readable-looking files of a group, sorted (child groups left out)."""
    prefix = "" if group == "/" else group
    out = []
    for entry in sorted(kernel.listdir(group)):
        full = f"{prefix}/{entry}"
        if full not in groups:
            out.append(full)
    return out


def _cmd_fs(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario, _params(args.param))
    kernel = make_kernel(scenario, "sim")
    groups = set(scenario.group_paths())
    chunks: list[tuple[str, str]] = []
    missing: list[str] = []

    def look(k) -> None:
        wanted = list(args.paths)
        explicit = bool(wanted)
        if not wanted:
            wanted = scenario.group_paths()
        for path in wanted:
            if path in groups or path == "/":
                files = _group_files(k, path, groups)
                quiet = True
            else:
                files, quiet = [path], not explicit
            for f in files:
                try:
                    chunks.append((f, k.read(f)))
                except OSError as e:
                    if not quiet:
                        missing.append(f"{f}: {e.strerror or e}")

    run_scenario(scenario, kernel, inspect=look)
    for i, (path, text) in enumerate(chunks):
        if len(chunks) > 1:
            sys.stdout.write(("\n" if i else "") + f"==> {path} <==\n")
        sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    for m in missing:
        print(f"memcg: cannot read {m}", file=sys.stderr)
    return 1 if missing else 0


def _check_profile(path: str | None) -> None:
    if path is None:
        return
    try:
        load_profile(path)
    except ValueError as e:
        raise _Fatal(str(e)) from None


def _hierarchy(scenario, hierarchy: str | None):
    """--hierarchy: a v1 scenario on cgroup v2 (its knobs mapped, scenario.v2map)."""
    if hierarchy is None:
        return scenario
    try:
        return on_hierarchy(scenario, hierarchy)
    except ValueError as e:
        raise _Fatal(str(e)) from None


def _cmd_compare(args: argparse.Namespace) -> int:
    scenario = _hierarchy(load_scenario(args.scenario, _params(args.param)), args.hierarchy)
    _check_profile(args.profile)
    real = make_kernel(scenario, args.against)   # fail early, before the simulated run
    try:
        # the model runs with the real side's machine (Kernel.machine()) and the real
        # backend's process costs unless a profile is given
        prof = args.profile if args.profile is not None else worker_profile()
        result = compare.run_compare(
            scenario, lambda m: make_kernel(dataclasses.replace(scenario, machine=m), "sim", prof,
                                            predict=real),
            lambda: real)
    finally:
        real.close()
    if args.against == "vm":
        result["kernel"], result["accel"] = real.kernel_release, real.accel
        result["notes"] = compare.environment_notes(scenario, real.kernel_release)
    else:
        result["kernel"] = platform.release()
    result["against"] = args.against
    sys.stdout.write(compare.format_table(result, compare.header(result, scenario)))
    if args.json:
        try:
            compare.write_json(result, args.json)
        except OSError as e:
            raise _Fatal(f"cannot write {args.json}: {e.strerror or e}") from None
    return 0


def _cmd_calibrate(args: argparse.Namespace) -> int:
    _check_writable(args.out)
    try:
        profile = calibrate.calibrate(progress=lambda msg: print(f"memcg: {msg}", file=sys.stderr))
    except OSError as e:
        msg = " ".join((e.strerror or str(e)).split())
        raise _Fatal(f"cannot use real cgroups: {msg}") from None
    text = calibrate.profile_json(profile)
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            raise _Fatal(f"cannot write {args.out}: {e.strerror or e}") from None
        sys.stdout.write(calibrate.summary(profile))
    else:
        sys.stdout.write(text)
    return 0


# -- sweep

def _progress(done: int, total: int) -> None:
    width = 30
    fill = width * done // total if total else width
    sys.stderr.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {done}/{total}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _write_out(path: str, write) -> None:
    try:
        if path == "-":
            write(sys.stdout)
        else:
            with open(path, "w", encoding="utf-8", newline="") as f:
                write(f)
    except OSError as e:
        raise _Fatal(f"cannot write {path}: {e.strerror or e}") from None


def _cmd_sweep(args: argparse.Namespace) -> int:
    try:
        points = sweep.parse_grid(args.param or [])
        if not args.param:
            raise sweep.GridError("--param: expected at least one KEY=V1,V2,...")
        if args.jobs is not None and args.jobs < 1:
            raise sweep.GridError(f"--jobs {args.jobs}: expected a number of workers of 1 or more")
        cache = None if args.no_cache else sweep.ResultCache(args.cache_dir or sweep.default_cache_dir())
        if cache is not None:
            try:
                os.makedirs(cache.directory, exist_ok=True)
            except OSError as e:
                raise _Fatal(f"--cache-dir {cache.directory}: cannot make the directory: "
                             f"{e.strerror or e}") from None
        progress = _progress if sys.stderr.isatty() else None
        results = sweep.run_sweep(args.scenario, points, engine=args.engine, jobs=args.jobs,
                                  address=args.address, cache=cache, progress=progress)
    except sweep.GridError as e:
        raise _Fatal(str(e)) from None
    doc = sweep.sweep_json(args.scenario, args.engine, results)
    if args.json:
        _write_out(args.json, lambda f: report.write_json(doc, f))
    if args.csv:
        _write_out(args.csv, lambda f: sweep.write_csv(results, f))
    if args.plot:
        key = (args.param[0].partition("=")[0]).strip()
        try:
            sweep.plot_sweep(results, key, args.plot)
        except ImportError:
            raise _Fatal("--plot needs matplotlib (pip install matplotlib)") from None
        except OSError as e:
            raise _Fatal(f"cannot write {args.plot}: {e.strerror or e}") from None
    if args.json != "-" and args.csv != "-":
        sweep.write_csv(results, sys.stdout)
    return 0


# -- record

def _cmd_record(args: argparse.Namespace) -> int:
    argv = list(args.command)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise _Fatal("record: expected a command after --, e.g. memcg record --out job.toml -- ./job")
    for opt, value in (("--interval", args.interval), ("--timeout", args.timeout)):
        if value is not None and not value > 0:
            raise _Fatal(f"record: {opt} {value:g}: expected seconds above zero")
    if args.limit is not None:
        try:
            parse.parse_size(args.limit)
        except ValueError:
            if args.limit.strip() != "-1":
                raise _Fatal(f"record: --limit {args.limit}: expected a size such as 64M, or -1") from None
    _check_writable(args.out, args.json)
    try:
        rec = record.record(argv, limit=args.limit, interval=args.interval, timeout=args.timeout)
    except record.RecordError as e:
        raise _Fatal(str(e)) from None
    _write_out(args.out, lambda f: f.write(record.scenario_toml(rec)))
    if args.json:
        _write_out(args.json, lambda f: report.write_json(record.run_json(rec), f))
    how = ("was OOM-killed" if rec.oom_killed else
           f"exited with status {rec.exit_status}" if rec.exit_status else "exited")
    print(f"memcg: {argv[0]} {how}; {len(rec.samples)} samples, peak {rec.peak} bytes; "
          f"replay: memcg run {args.out}", file=sys.stderr)
    return 0 if rec.exit_status == 0 else 1


# --- the VM guest (a real kernel under QEMU) ---
def _cmd_vm(args: argparse.Namespace) -> int:
    try:
        if args.action == "fetch":
            kernel, _ = vm.fetch()
            print(f"guest kernel: {kernel}")
            return 0
        accel = vm.choose_accel("auto")
        r = vm.run_script("", hierarchy=args.hierarchy, accel=accel)
    except vm.GuestError as e:
        raise _Fatal(str(e)) from None
    print(f"guest kernel {r.kernel_release} under {accel.upper()}: booted to cgroup "
          f"{args.hierarchy} and powered off in {r.seconds:.1f} s")
    return 0


def _cmd_shrinkerd(args: argparse.Namespace) -> int:
    margin = None
    if args.margin is not None:
        try:
            margin = parse_size(args.margin)
        except (OSError, ValueError):
            raise _Fatal(f"--margin: expected a size such as 8M, got {args.margin!r}") from None
    try:
        return shrinkerd.serve(args.cgroup, args.runtime_dir, foreground=args.foreground,
                               json_log=args.json_log, margin=margin,
                               oom_guard=args.oom_guard)
    except shrinkerd.DaemonError as e:
        raise _Fatal(str(e)) from None
    except OSError as e:
        raise _Fatal(f"shrinkerd: {e.filename or args.runtime_dir}: {e.strerror or e}") from None


def _cmd_fuzz(args: argparse.Namespace) -> int:
    for name, attr, low, high in (("--seeds", "seeds", 1, fuzz.MAX_SEEDS),
                                  ("--start", "start", 0, fuzz.MAX_START),
                                  ("--ops", "ops", 4, fuzz.MAX_OPS)):
        text = getattr(args, attr).strip()
        # ASCII digits only: str.isdigit() and int() take other scripts' digits too
        if not (text.isascii() and text.isdigit()) or not low <= int(text) <= high:
            raise _Fatal(f"fuzz: {name} {getattr(args, attr)!r}: expected an integer from {low} to {high}")
        setattr(args, attr, int(text))
    _check_writable(args.json)
    try:
        LinuxKernel(memory="1G").close()     # fail early, in one line
    except OSError as e:
        raise _Fatal(f"cannot use real cgroups: {e.strerror or e}") from None
    cpus = len(os.sched_getaffinity(0))
    results = []
    for seed in range(args.start, args.start + args.seeds):
        r = fuzz.fuzz_seed(seed, args.ops, lambda: SimKernel(memory="4G", cpus=cpus, swap="0"),
                           lambda: LinuxKernel(memory="1G"), args.repeat_real, cpus)
        results.append(r)
        sys.stdout.write(fuzz.format_result(r, args.against))
        sys.stdout.flush()
    summary = fuzz.summarize(results)
    sys.stdout.write(fuzz.format_summary(summary))
    if args.json:
        try:
            fuzz.write_json(results, summary, args.json)
        except OSError as e:
            raise _Fatal(f"cannot write {args.json}: {e.strerror or e}") from None
    return 0


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="memcg",
        description="The Linux memory cgroup (v1) controller as an executable model.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run a scenario and print a summary")
    r.add_argument("scenario", metavar="NAME|FILE", help="a built-in scenario name or a scenario file")
    r.add_argument("--backend", choices=("sim", "linux", "vm"), default="sim",
                   help="the simulated kernel (default), real cgroups or a QEMU guest's kernel")
    r.add_argument("--json", metavar="OUT", help="write the JSON of the run to OUT ('-': to stdout, instead of the summary)")
    r.add_argument("--plot", metavar="OUT.png", help="plot usage, cache and rss per group")
    r.add_argument("--param", action="append", metavar="KEY=VALUE", help="override a [params] value")
    r.add_argument("--hierarchy", choices=("v1", "v2"),
                   help="the cgroup version to run on (a v1 scenario on v2: its knobs mapped)")
    r.set_defaults(func=_cmd_run)

    ls = sub.add_parser("list", help="list the built-in scenarios")
    ls.set_defaults(func=_cmd_list)

    f = sub.add_parser("fs", help="run a scenario on the simulated kernel, then print cgroup files")
    f.add_argument("scenario", metavar="NAME|FILE", help="a built-in scenario name or a scenario file")
    f.add_argument("paths", nargs="*", metavar="PATH",
                   help="cgroup files or groups to print (default: every file of every group)")
    f.add_argument("--param", action="append", metavar="KEY=VALUE", help="override a [params] value")
    f.set_defaults(func=_cmd_fs)

    c = sub.add_parser("compare", help="run a scenario on the simulated kernel and on real cgroups, "
                                       "print every figure side by side")
    c.add_argument("scenario", metavar="NAME|FILE", help="a built-in scenario name or a scenario file")
    c.add_argument("--against", choices=("linux", "vm"), default="linux",
                   help="the real kernel: the host's cgroups (default) or a QEMU guest's")
    c.add_argument("--json", metavar="OUT", help="write the comparison as JSON to OUT")
    c.add_argument("--profile", metavar="FILE", help="a calibration profile for the simulated kernel")
    c.add_argument("--param", action="append", metavar="KEY=VALUE", help="override a [params] value")
    c.add_argument("--hierarchy", choices=("v1", "v2"),
                   help="the cgroup version to run on (a v1 scenario on v2: its knobs mapped)")
    c.set_defaults(func=_cmd_compare)

    cal = sub.add_parser("calibrate", help="measure this kernel's per-object memory costs on real "
                                           "cgroups and write a profile")
    cal.add_argument("--out", metavar="FILE", help="write the profile here (default: print it)")
    cal.set_defaults(func=_cmd_calibrate)

    sw = sub.add_parser("sweep", help="run a scenario over a grid of params, print one CSV row per point")
    sw.add_argument("scenario", metavar="NAME|FILE", help="a built-in scenario name or a scenario file")
    sw.add_argument("--param", action="append", metavar="KEY=V1,V2,...",
                    help="values of a [params] key: a list, or sizes as LOW..HIGH:STEP (repeatable)")
    sw.add_argument("--jobs", type=int, metavar="N", help="workers (default: the CPUs)")
    sw.add_argument("--engine", default="local", help="local (a process pool, default) or ray")
    sw.add_argument("--address", metavar="ADDR", help="the Ray cluster to join (default: a local one)")
    sw.add_argument("--json", metavar="OUT", help="write the sweep's JSON to OUT ('-': stdout)")
    sw.add_argument("--csv", metavar="OUT", help="write one CSV row per point to OUT ('-': stdout)")
    sw.add_argument("--plot", metavar="OUT.png", help="plot the figures against the first swept key")
    sw.add_argument("--cache-dir", metavar="DIR", help="where finished points are kept "
                    "(default: $XDG_CACHE_HOME/memcg/sweep or ~/.cache/memcg/sweep)")
    sw.add_argument("--no-cache", action="store_true", help="run every point, keep nothing")
    sw.set_defaults(func=_cmd_sweep)

    rc = sub.add_parser("record", help="run a command in a new real memory cgroup, sample it, "
                                        "write a scenario that replays it")
    rc.add_argument("--limit", metavar="SIZE", help="the group's memory.limit_in_bytes (default: none); "
                    "the scenario's `limit` param defaults to it")
    rc.add_argument("--interval", type=float, default=0.02, metavar="S",
                    help="seconds between samples (default 0.02)")
    rc.add_argument("--timeout", type=float, metavar="S", help="kill the command after S seconds (exit 2)")
    rc.add_argument("--out", required=True, metavar="FILE.toml", help="the scenario to write")
    rc.add_argument("--json", metavar="REAL.json", help="the real run as the JSON of memcg run ('-': stdout)")
    rc.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    rc.set_defaults(func=_cmd_record)

    v = sub.add_parser("vm", help="fetch the guest kernel, or boot a guest once to check it")
    v.add_argument("action", choices=("fetch", "probe"))
    v.add_argument("--hierarchy", choices=("v1", "v2"), default="v2")
    v.set_defaults(func=_cmd_vm)
    sd = sub.add_parser("shrinkerd", help="serve the userspace shrinker and pressure sockets "
                                          "for a real memory cgroup and the groups below it")
    sd.add_argument("--cgroup", required=True, metavar="DIR", help="the cgroup v1 memory group to serve")
    sd.add_argument("--runtime-dir", default="/run/memcg-shrinkerd", metavar="RUN",
                    help="where RUN/<group>/shrinker.sock and pressure.sock go "
                         "(default: /run/memcg-shrinkerd)")
    sd.add_argument("--foreground", action="store_true", help="log what is asked of whom to stderr")
    sd.add_argument("--json-log", action="store_true", help="log as one JSON object a line")
    sd.add_argument("--margin", metavar="SIZE",
                    help="ask for memory when usage is this close to the limit (default: limit/4, at least 4M)")
    sd.add_argument("--oom-guard", action="store_true",
                    help="set oom_kill_disable on a limited group while its clients hold chunks, "
                         "ask at once on its OOM event, give the OOM back to the kernel after 0.2 s")
    sd.set_defaults(func=_cmd_shrinkerd)
    fz = sub.add_parser("fuzz", help="seeded random workloads on the simulated kernel and on real "
                                     "cgroups, compared op by op")
    fz.add_argument("--seeds", required=True, metavar="N", help="how many seeds to run")
    fz.add_argument("--start", default="0", metavar="S", help="the first seed (default 0)")
    fz.add_argument("--ops", default="30", metavar="K", help="ops per workload (default 30)")
    fz.add_argument("--against", choices=("linux",), default="linux", help="the real kernel: the host's cgroups")
    fz.add_argument("--repeat-real", action="store_true",
                    help="run the real side twice; figures that differ between the two are unstable")
    fz.add_argument("--json", metavar="FILE", help="write every seed's rows and the summary as JSON")
    fz.set_defaults(func=_cmd_fuzz)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `memcg` command; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except ScenarioError as e:
        print(f"memcg: {e}", file=sys.stderr)
        return 2
    except _Fatal as e:
        print(f"memcg: {e}", file=sys.stderr)
        return e.status
    except vm.GuestError as e:      # the VM guest stopped or stopped answering mid-run
        print(f"memcg: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("memcg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
