#!/usr/bin/env python3
"""Measure the cgroup v1 memory controller's file formats and write/errno rules.

Runs against the live kernel (needs root and a mounted cgroup v1 memory
hierarchy).  Every group it creates is a child of the caller's own memory
cgroup (read from /proc/self/cgroup), named memcg-measure-<pid>; everything is
removed again at the end, also on failure.  No process other than the ones this
script starts is ever moved, and nothing is charged: the groups stay empty
except for short-lived `sleep` children used for the cgroup.procs/rmdir cases.

Output: JSON on stdout, or in the file given with --out.  The JSON contains no
path of the measuring machine: every file is named relative to its group.

    sudo python3 tools/measure_v1_table.py --out tests/data/kernel_v1_table.json
"""

from __future__ import annotations

import argparse
import datetime
import errno
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time

# The package's own sources, so that the tool runs from a checkout (as root too).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "src"))
from memcg.backends.linux import LinuxUnavailable, v1_memory_cgroup  # noqa: E402

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Files the memory controller (and cgroup v1 core) create in every group on an
# upstream kernel.  Anything else found in a group directory is reported under
# "not_upstream" and left out of the recorded contents.
UPSTREAM_FILES = {
    "cgroup.clone_children", "cgroup.event_control", "cgroup.procs",
    "notify_on_release", "tasks",
    "memory.failcnt", "memory.force_empty", "memory.limit_in_bytes",
    "memory.max_usage_in_bytes", "memory.move_charge_at_immigrate",
    "memory.numa_stat", "memory.oom_control", "memory.pressure_level",
    "memory.soft_limit_in_bytes", "memory.stat", "memory.swappiness",
    "memory.usage_in_bytes", "memory.use_hierarchy",
    "memory.memsw.failcnt", "memory.memsw.limit_in_bytes",
    "memory.memsw.max_usage_in_bytes", "memory.memsw.usage_in_bytes",
    "memory.kmem.failcnt", "memory.kmem.limit_in_bytes",
    "memory.kmem.max_usage_in_bytes", "memory.kmem.slabinfo",
    "memory.kmem.usage_in_bytes",
    "memory.kmem.tcp.failcnt", "memory.kmem.tcp.limit_in_bytes",
    "memory.kmem.tcp.max_usage_in_bytes", "memory.kmem.tcp.usage_in_bytes",
}

LIMIT_FILES = [
    "memory.limit_in_bytes",
    "memory.soft_limit_in_bytes",
    "memory.memsw.limit_in_bytes",
    "memory.kmem.limit_in_bytes",
    "memory.kmem.tcp.limit_in_bytes",
]

LIMIT_INPUTS = [
    "0", "1", "4095", "4096", "4097", "8192\n", "  8192  ", "\t8192\n\n",
    "100M", "100m", "1k", "1K", "1g", "1G", "1t", "1T", "1p", "1P", "1e", "1E",
    "7E", "8E", "15E", "16E", "17E",
    "0x1000", "0X1000", "0x1E", "0x1k", "0x", "010", "08", "0b1", "1e3",
    "-1", "-1\n", " -1 ", "-2", "-1k", "-0", "-4096", "--1",
    "", " ", "\n", "abc", "12abc", "1KB", "1kb", "1KiB", "1 K", "1.5M", "1,024",
    "4096 8192", "+4096", "max", "unlimited", "infinity",
    "8192\x00junk",
    "9223372036854771712", "9223372036854771713", "9223372036854775807",
    "9223372036854775808", "18446744073709551615", "18446744073709551616",
    "18446744073709555712", "99999999999999999999999",
    # kernfs hands at most one page to the handler, larger writes are refused
    "8192" + " " * (PAGE_SIZE - 4),
    "8192" + " " * (PAGE_SIZE - 3),
]

# memsw can't go below the memory limit; in a fresh group the memory limit is
# "unlimited", so the full list is measured after lowering it to 0 first, and
# a short list in the fresh state.
MEMSW_FRESH_INPUTS = ["0", "4096", "8M", "-1", "max", "abc", "",
                      "9223372036854771712", "9223372036854775807",
                      "18446744073709551615"]

SWAPPINESS_INPUTS = ["0", "60", "100", "101", "200", "201", "-1", "abc", " 30 ",
                     "30 ", " 30", "30\n", "30\n\n", "0x10", "010", "08", "+30",
                     "1e2", "", "\n", "18446744073709551615",
                     "18446744073709551616"]
USE_HIERARCHY_INPUTS = ["0", "1", "2", "-1", "abc", " 1", "1\n", "+1", "01", "0x1", ""]
MOVE_CHARGE_INPUTS = ["0", "1", "2", "3", "4", "7", "abc", "-1", " 1", "1\n", ""]
OOM_CONTROL_INPUTS = ["0", "1", "2", "-1", "abc", " 1 ", "1\n", "+1", "0x1", ""]
FORCE_EMPTY_INPUTS = ["", "0", "1", "abc", "\n"]
RESET_FILES = [
    "memory.max_usage_in_bytes", "memory.failcnt",
    "memory.memsw.max_usage_in_bytes", "memory.memsw.failcnt",
    "memory.kmem.max_usage_in_bytes", "memory.kmem.failcnt",
    "memory.kmem.tcp.max_usage_in_bytes", "memory.kmem.tcp.failcnt",
]
RESET_INPUTS = ["0", "abc", "", "5", "-1"]

READ_ONLY_FILES = [
    "memory.usage_in_bytes", "memory.stat", "memory.numa_stat",
    "memory.memsw.usage_in_bytes", "memory.kmem.usage_in_bytes",
    "memory.kmem.tcp.usage_in_bytes", "memory.kmem.slabinfo",
    "memory.pressure_level",
]
WRITE_ONLY_FILES = ["memory.force_empty", "cgroup.event_control", "memory.pressure_level"]

PRESSURE_ARGS = [
    "low", "medium", "critical", "low,hierarchy", "medium,local",
    "critical,default", "low,", "Low", "LOW", "low,foo", "foo", "",
    "low,hierarchy,x", "low,local,", "lowhierarchy", "low,Hierarchy",
    "low ", "low\n", " low", "low ,local", "low, local", "low,,local",
    ",low", "critical,hierarchy", "critical,hierarchyX",
    "low,hierarchy," + "x" * 1000,
    "medium" + "x" * 1000,
    "low," + "x" * (PAGE_SIZE + 16),
]
USAGE_ARGS = ["4M", "", "abc", "-1", "-2", "0", "1", "4097", "1G", "16E",
              "4M ", " 4M", "4M abc", "max", "0x1000"]
OOM_ARGS = ["", "foo", "1", "x y z"]


def ename(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def short_id(text: str) -> str:
    if len(text) > 40:
        return f"{text[:12]!r}+{len(text) - 12} more chars"
    return repr(text)


class Measure:
    def __init__(self, base: str):
        self.base = base  # absolute directory of the measuring group
        self.counter = 0
        self.children: list[subprocess.Popen] = []
        self.fds: list[int] = []

    # ----- helpers -------------------------------------------------------
    def p(self, rel: str) -> str:
        return os.path.join(self.base, rel) if rel else self.base

    def fresh(self, prefix: str = "c") -> str:
        self.counter += 1
        rel = f"{prefix}{self.counter}"
        os.mkdir(self.p(rel))
        return rel

    def rmtree(self, rel: str) -> None:
        top = self.p(rel)
        if not os.path.isdir(top):
            return
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            for attempt in range(200):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY or attempt == 199:
                        raise
                    time.sleep(0.02)

    @staticmethod
    def write(path: str, data: str | bytes) -> str | None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        try:
            fd = os.open(path, os.O_WRONLY)
        except OSError as e:
            return ename(e.errno)
        try:
            os.write(fd, data)
        except OSError as e:
            return ename(e.errno)
        finally:
            os.close(fd)
        return None

    @staticmethod
    def read(path: str) -> tuple[str | None, str | None]:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as e:
            return None, ename(e.errno)
        try:
            chunks = []
            while True:
                b = os.read(fd, 65536)
                if not b:
                    break
                chunks.append(b)
            return b"".join(chunks).decode("utf-8"), None
        except OSError as e:
            return None, ename(e.errno)
        finally:
            os.close(fd)

    def start_sleeper(self) -> subprocess.Popen:
        proc = subprocess.Popen(["sleep", "30"], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.children.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()

    def cleanup(self) -> None:
        for proc in self.children:
            try:
                self.stop(proc)
            except Exception:
                pass
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()

    # ----- defaults ------------------------------------------------------
    def defaults(self) -> dict:
        rel = self.fresh("defaults")
        try:
            names = sorted(os.listdir(self.p(rel)))
            files, read_errnos, modes = {}, {}, {}
            for name in names:
                if name not in UPSTREAM_FILES:
                    continue
                full = os.path.join(self.p(rel), name)
                modes[name] = format(stat.S_IMODE(os.stat(full).st_mode), "04o")
                text, err = self.read(full)
                if err is None:
                    files[name] = text
                else:
                    read_errnos[name] = err
            return {
                "listing": names,
                "not_upstream": [n for n in names if n not in UPSTREAM_FILES],
                "files": files,
                "read_errno": read_errnos,
                "modes": modes,
            }
        finally:
            self.rmtree(rel)

    # ----- plain writes ----------------------------------------------------
    def write_case(self, file: str, text: str, setup=(), also_read=(), note=None) -> dict:
        rel = self.fresh("w")
        try:
            g = self.p(rel)
            setup_errnos = []
            for sfile, stext in setup:
                setup_errnos.append(self.write(os.path.join(g, sfile), stext))
            err = self.write(os.path.join(g, file), text)
            reads = {}
            for name in [file, *also_read]:
                value, rerr = self.read(os.path.join(g, name))
                if rerr is None:
                    reads[name] = value
            case = {
                "id": file + "=" + short_id(text)
                + ("".join(f" after {s}={short_id(t)}" for s, t in setup)),
                "file": file,
                "input": text,
                "setup": [[s, t] for s, t in setup],
                "errno": err,
                "read": reads,
            }
            if any(setup_errnos):
                case["setup_errno"] = setup_errnos
            if note:
                case["note"] = note
            return case
        finally:
            self.rmtree(rel)

    def writes(self) -> list[dict]:
        cases = []
        for file in LIMIT_FILES:
            if file == "memory.memsw.limit_in_bytes":
                for text in MEMSW_FRESH_INPUTS:
                    cases.append(self.write_case(file, text, also_read=["memory.limit_in_bytes"]))
                for text in LIMIT_INPUTS:
                    cases.append(self.write_case(file, text, setup=[("memory.limit_in_bytes", "0")],
                                                 also_read=["memory.limit_in_bytes"]))
            else:
                for text in LIMIT_INPUTS:
                    cases.append(self.write_case(file, text))
        # memory <= memsw ordering
        M, S = "memory.limit_in_bytes", "memory.memsw.limit_in_bytes"
        both = [M, S]
        order = [
            ([(M, "4M"), (S, "8M")], M, "16M"),
            ([(M, "4M"), (S, "8M")], M, "8M"),
            ([(M, "4M"), (S, "8M")], M, "8388609"),
            ([(M, "4M"), (S, "8M")], M, "8392704"),
            ([(M, "4M"), (S, "8M")], M, "-1"),
            ([(M, "4M"), (S, "8M")], S, "-1"),
            ([(M, "4M"), (S, "8M")], S, "4M"),
            ([(M, "4M"), (S, "8M")], S, "4194303"),
            ([(M, "16M"), (S, "32M")], S, "8M"),
            ([(M, "16M"), (S, "32M")], S, "16M"),
            ([(M, "16M"), (S, "32M")], S, "16777215"),
            ([(M, "16M"), (S, "32M")], M, "32M"),
            ([(M, "16M"), (S, "32M")], M, "0"),
            ([(M, "4M")], S, "4M"),
            ([(M, "4M")], S, "2M"),
            ([(M, "4M")], M, "-1"),
            ([(M, "4M")], "memory.soft_limit_in_bytes", "8M"),
            ([(M, "0"), (S, "0")], M, "4096"),
            ([(M, "0"), (S, "0")], S, "-1"),
        ]
        for setup, file, text in order:
            also = [f for f in both if f != file]
            if file == "memory.soft_limit_in_bytes":
                also = [M]
            cases.append(self.write_case(file, text, setup=setup, also_read=also))
        # writes to kmem.limit_in_bytes after a memory limit is in place
        cases.append(self.write_case("memory.kmem.limit_in_bytes", "4M",
                                     setup=[(M, "8M")], also_read=[M]))
        for text in SWAPPINESS_INPUTS:
            cases.append(self.write_case("memory.swappiness", text))
        for text in USE_HIERARCHY_INPUTS:
            cases.append(self.write_case("memory.use_hierarchy", text))
        for text in MOVE_CHARGE_INPUTS:
            cases.append(self.write_case("memory.move_charge_at_immigrate", text))
        for text in OOM_CONTROL_INPUTS:
            cases.append(self.write_case("memory.oom_control", text))
        cases.append(self.write_case("memory.oom_control", "0", setup=[("memory.oom_control", "1")]))
        for text in FORCE_EMPTY_INPUTS:
            cases.append(self.write_case("memory.force_empty", text,
                                         also_read=["memory.usage_in_bytes"]))
        for file in RESET_FILES:
            for text in RESET_INPUTS:
                cases.append(self.write_case(file, text))
        return cases

    # ----- read-only / write-only ----------------------------------------
    def access(self) -> list[dict]:
        out = []
        rel = self.fresh("a")
        try:
            g = self.p(rel)
            for name in READ_ONLY_FILES:
                case = {"id": f"write {name}", "file": name, "op": "write", "input": "0",
                        "open_errno": None, "io_errno": None}
                try:
                    fd = os.open(os.path.join(g, name), os.O_WRONLY)
                except OSError as e:
                    case["open_errno"] = ename(e.errno)
                else:
                    try:
                        os.write(fd, b"0")
                    except OSError as e:
                        case["io_errno"] = ename(e.errno)
                    finally:
                        os.close(fd)
                out.append(case)
            for name in WRITE_ONLY_FILES:
                case = {"id": f"read {name}", "file": name, "op": "read",
                        "open_errno": None, "io_errno": None}
                try:
                    fd = os.open(os.path.join(g, name), os.O_RDONLY)
                except OSError as e:
                    case["open_errno"] = ename(e.errno)
                else:
                    try:
                        os.read(fd, 4096)
                    except OSError as e:
                        case["io_errno"] = ename(e.errno)
                    finally:
                        os.close(fd)
                out.append(case)
        finally:
            self.rmtree(rel)
        return out

    # ----- cgroup.event_control ----------------------------------------------
    def event_case(self, ident, template, *, kind, control="memory.usage_in_bytes",
                   args=None, efd_kind="eventfd", cfd_kind="same", note=None) -> dict:
        """kind: "event" = k.event(control, args) expresses it,
        "text" = the rejection happens while parsing, before any fd is looked up,
        "fd" = the outcome depends on what the fd numbers refer to."""
        rel = self.fresh("e")
        sib = None
        opened = []
        try:
            g = self.p(rel)
            if efd_kind == "eventfd":
                efd = os.eventfd(0)
                opened.append(efd)
            elif efd_kind == "regular_file":
                tf = tempfile.TemporaryFile()
                efd = os.dup(tf.fileno())
                tf.close()
                opened.append(efd)
            elif efd_kind == "closed":
                efd = unused_fd()
            else:
                raise ValueError(efd_kind)
            if cfd_kind == "same":
                cfd = os.open(os.path.join(g, control), os.O_RDONLY)
                opened.append(cfd)
            elif cfd_kind == "sibling":
                sib = self.fresh("e")
                cfd = os.open(os.path.join(self.p(sib), control), os.O_RDONLY)
                opened.append(cfd)
            elif cfd_kind == "closed":
                cfd = unused_fd()
            elif cfd_kind == "regular_file":
                tf = tempfile.TemporaryFile()
                cfd = os.dup(tf.fileno())
                tf.close()
                opened.append(cfd)
            elif cfd_kind == "eventfd":
                cfd = os.eventfd(0)
                opened.append(cfd)
            else:
                raise ValueError(cfd_kind)
            text = template.replace("{efd}", str(efd)).replace("{cfd}", str(cfd))
            err = self.write(os.path.join(g, "cgroup.event_control"), text)
            case = {
                "id": ident,
                "kind": kind,
                "input": template,
                "control": control if cfd_kind in ("same", "sibling") else None,
                "args": args,
                "efd": efd_kind,
                "cfd": cfd_kind,
                "errno": err,
            }
            if note:
                case["note"] = note
            return case
        finally:
            for fd in opened:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.rmtree(rel)
            if sib:
                self.rmtree(sib)

    def events(self) -> list[dict]:
        out = []
        U = "memory.usage_in_bytes"
        for a in USAGE_ARGS:
            t = "{efd} {cfd}" + (" " + a if a else "")
            out.append(self.event_case(f"{U} args={short_id(a)}", t, kind="event", control=U, args=a))
        out.append(self.event_case(f"{U} args='4M' trailing newline", "{efd} {cfd} 4M\n",
                                   kind="event", control=U, args="4M\n"))
        out.append(self.event_case(f"{U} no args, trailing space", "{efd} {cfd} ",
                                   kind="event", control=U, args=""))
        out.append(self.event_case("memory.memsw.usage_in_bytes args='4M'", "{efd} {cfd} 4M",
                                   kind="event", control="memory.memsw.usage_in_bytes", args="4M"))
        out.append(self.event_case("memory.memsw.usage_in_bytes args='abc'", "{efd} {cfd} abc",
                                   kind="event", control="memory.memsw.usage_in_bytes", args="abc"))
        for a in OOM_ARGS:
            t = "{efd} {cfd}" + (" " + a if a else "")
            out.append(self.event_case(f"memory.oom_control args={short_id(a)}", t, kind="event",
                                       control="memory.oom_control", args=a))
        for a in PRESSURE_ARGS:
            t = "{efd} {cfd}" + (" " + a if a else "")
            out.append(self.event_case(f"memory.pressure_level args={short_id(a)}", t,
                                       kind="event", control="memory.pressure_level", args=a))
        for ctl in ["memory.stat", "memory.limit_in_bytes", "memory.max_usage_in_bytes",
                    "memory.kmem.usage_in_bytes", "memory.swappiness", "cgroup.procs"]:
            out.append(self.event_case(f"control {ctl}", "{efd} {cfd}", kind="event",
                                       control=ctl, args=""))
            out.append(self.event_case(f"control {ctl} args='4M'", "{efd} {cfd} 4M", kind="event",
                                       control=ctl, args="4M"))
        # malformed lines: rejected while parsing the numbers
        for t in ["{efd}", "{efd} ", "", " ", "\n", "x y", "x y 4M", "{efd} {cfd}x 4M",
                  "{efd}x {cfd} 4M", "{efd},{cfd} 4M", "-1 {cfd} 4M", "{efd}\t{cfd} 4M"]:
            out.append(self.event_case(f"line {short_id(t)}", t, kind="text"))
        out.append(self.event_case("line with leading/trailing blanks", "  {efd} {cfd} 4M  \n",
                                   kind="event", control=U, args="4M",
                                   note="the whole line is stripped before parsing"))
        out.append(self.event_case("pressure_level args after two spaces", "{efd} {cfd}  low",
                                   kind="event", control="memory.pressure_level", args=" low"))
        # fd semantics
        out.append(self.event_case("efd is a regular file", "{efd} {cfd} 4M", kind="fd",
                                   args="4M", efd_kind="regular_file"))
        out.append(self.event_case("efd is closed", "{efd} {cfd} 4M", kind="fd",
                                   args="4M", efd_kind="closed"))
        out.append(self.event_case("cfd is closed", "{efd} {cfd} 4M", kind="fd",
                                   args="4M", cfd_kind="closed"))
        out.append(self.event_case("cfd is a regular file", "{efd} {cfd} 4M", kind="fd",
                                   control=None, args="4M", cfd_kind="regular_file"))
        out.append(self.event_case("cfd is an eventfd", "{efd} {cfd} 4M", kind="fd",
                                   control=None, args="4M", cfd_kind="eventfd"))
        out.append(self.event_case("cfd is a sibling group's memory.usage_in_bytes",
                                   "{efd} {cfd} 4M", kind="fd", args="4M", cfd_kind="sibling"))
        out.append(self.event_case("cfd is a sibling group's memory.pressure_level",
                                   "{efd} {cfd} low", kind="fd", control="memory.pressure_level",
                                   args="low", cfd_kind="sibling"))
        out.append(self.event_case("efd closed and cfd is memory.stat", "{efd} {cfd}", kind="fd",
                                   control="memory.stat", args="", efd_kind="closed"))
        out.append(self.event_case("efd regular file and cfd bad args", "{efd} {cfd} abc",
                                   kind="fd", args="abc", efd_kind="regular_file"))
        out.append(self.event_case("whole line longer than a page",
                                   "{efd} {cfd} " + "4" * (PAGE_SIZE + 8), kind="event",
                                   args="4" * (PAGE_SIZE + 8)))
        return out

    # ----- cgroup.procs / tasks --------------------------------------------
    SELF_MOVE = (
        "import errno, os, sys\n"
        "try:\n"
        "    fd = os.open(sys.argv[1], os.O_WRONLY)\n"
        "    try:\n"
        "        os.write(fd, b'0')\n"
        "    finally:\n"
        "        os.close(fd)\n"
        "    r = 'OK'\n"
        "except OSError as e:\n"
        "    r = errno.errorcode[e.errno]\n"
        "print(r)\n"
        "print(str(os.getpid()) in open(sys.argv[1]).read().split())\n"
    )

    def procs(self) -> list[dict]:
        out = []
        for file in ["cgroup.procs", "tasks"]:
            for text in ["abc", "-1", "", " ", "999999999", "2147483647", "2147483648",
                         "4294967296", "1.5", "12abc", "1 2"]:
                rel = self.fresh("p")
                try:
                    g = self.p(rel)
                    err = self.write(os.path.join(g, file), text)
                    val, _ = self.read(os.path.join(g, file))
                    out.append({"id": f"{file}={short_id(text)}", "file": file, "input": text,
                                "errno": err, "read": val})
                finally:
                    self.rmtree(rel)
            for tmpl in ["{pid}", " {pid} \n", "{pid}\n", "+{pid}", "0x{pidhex}", "0{pidoct}"]:
                rel = self.fresh("p")
                proc = self.start_sleeper()
                try:
                    g = self.p(rel)
                    text = (tmpl.replace("{pidhex}", format(proc.pid, "x"))
                            .replace("{pidoct}", format(proc.pid, "o"))
                            .replace("{pid}", str(proc.pid)))
                    err = self.write(os.path.join(g, file), text)
                    val, _ = self.read(os.path.join(g, file))
                    if val is not None:
                        val = val.replace(str(proc.pid), "{pid}")
                    out.append({"id": f"{file}={tmpl!r} (a started child)", "file": file,
                                "input": tmpl, "errno": err, "read": val})
                finally:
                    self.stop(proc)
                    self.rmtree(rel)
            # "0": the writer moves itself
            rel = self.fresh("p")
            try:
                g = self.p(rel)
                res = subprocess.run([sys.executable, "-c", self.SELF_MOVE, os.path.join(g, file)],
                                     capture_output=True, text=True, timeout=30)
                lines = res.stdout.split("\n")
                out.append({"id": f"{file}='0' (written by the moving process itself)",
                            "file": file, "input": "0",
                            "errno": None if lines[0] == "OK" else lines[0],
                            "writer_moved_into_group": lines[1] == "True",
                            "read": None})
            finally:
                self.rmtree(rel)
        return out

    # ----- mkdir / rmdir ----------------------------------------------------
    def run_ops(self, rel: str, ops: list) -> list:
        results = []
        for op in ops:
            kind, arg = op[0], op[1]
            path = os.path.join(self.p(rel), arg)
            try:
                if kind == "mkdir":
                    os.mkdir(path)
                elif kind == "rmdir":
                    os.rmdir(path)
                elif kind == "spawn":
                    proc = self.start_sleeper()
                    err = self.write(os.path.join(path, "cgroup.procs"), str(proc.pid))
                    if err:
                        raise OSError(getattr(errno, err), err)
                else:
                    raise ValueError(kind)
                results.append(None)
            except OSError as e:
                results.append(ename(e.errno))
        return results

    def dirs(self) -> list[dict]:
        specs = [
            ("mkdir of an existing group", [["mkdir", "c"], ["mkdir", "c"]]),
            ("mkdir below a missing parent", [["mkdir", "nope/c"]]),
            ("mkdir named like a control file", [["mkdir", "memory.stat"]]),
            ("mkdir named like a missing control file", [["mkdir", "memory.foo"]]),
            ("mkdir with a newline in the name", [["mkdir", "a\nb"]]),
            ("mkdir with a 255-byte name", [["mkdir", "x" * 255]]),
            ("mkdir with a 256-byte name", [["mkdir", "x" * 256]]),
            ("mkdir of a grandchild", [["mkdir", "c"], ["mkdir", "c/d"]]),
            ("rmdir of an empty group", [["mkdir", "c"], ["rmdir", "c"]]),
            ("rmdir of a group with a task", [["mkdir", "c"], ["spawn", "c"], ["rmdir", "c"]]),
            ("rmdir of a group with a child group",
             [["mkdir", "c"], ["mkdir", "c/d"], ["rmdir", "c"]]),
            ("rmdir of a missing group", [["rmdir", "nope"]]),
            ("rmdir of a control file", [["rmdir", "memory.stat"]]),
            ("rmdir twice", [["mkdir", "c"], ["rmdir", "c"], ["rmdir", "c"]]),
        ]
        out = []
        for ident, ops in specs:
            rel = self.fresh("d")
            try:
                results = self.run_ops(rel, ops)
                out.append({"id": ident, "ops": ops, "errno": results})
            finally:
                for proc in list(self.children):
                    self.stop(proc)
                self.rmtree(rel)
        return out

    # ----- other measurements ----------------------------------------------
    def hierarchy(self) -> list[dict]:
        """Parent settings and what a child created afterwards shows."""
        specs = [
            ("child of a limited parent",
             [["memory.limit_in_bytes", "64M"], ["memory.memsw.limit_in_bytes", "128M"]],
             [],
             ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.stat"]),
            ("child limit above the parent's",
             [["memory.limit_in_bytes", "64M"], ["memory.memsw.limit_in_bytes", "128M"]],
             [["memory.limit_in_bytes", "256M"], ["memory.memsw.limit_in_bytes", "512M"]],
             ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "memory.stat"]),
            ("child limit below the parent's",
             [["memory.limit_in_bytes", "64M"]],
             [["memory.limit_in_bytes", "16M"]],
             ["memory.limit_in_bytes", "memory.stat"]),
            ("settings inherited at mkdir",
             [["memory.swappiness", "30"], ["memory.oom_control", "1"],
              ["memory.soft_limit_in_bytes", "8M"], ["memory.move_charge_at_immigrate", "3"],
              ["memory.kmem.tcp.limit_in_bytes", "8M"]],
             [],
             ["memory.swappiness", "memory.oom_control", "memory.soft_limit_in_bytes",
              "memory.move_charge_at_immigrate", "memory.use_hierarchy",
              "memory.kmem.tcp.limit_in_bytes"]),
        ]
        out = []
        for ident, parent_writes, child_writes, reads in specs:
            rel = self.fresh("h")
            try:
                g = self.p(rel)
                perr = [self.write(os.path.join(g, f), t) for f, t in parent_writes]
                os.mkdir(os.path.join(g, "c"))
                cerr = [self.write(os.path.join(g, "c", f), t) for f, t in child_writes]
                got = {f: self.read(os.path.join(g, "c", f))[0] for f in reads}
                out.append({"id": ident, "child_first": False, "parent_writes": parent_writes,
                            "parent_errno": perr, "child_writes": child_writes,
                            "child_errno": cerr, "child_read": got})
            finally:
                self.rmtree(rel)
        return out

    def parent_changed_after_child(self) -> list[dict]:
        """Limit changes on a parent after the child exists: the child's stat follows."""
        rel = self.fresh("h")
        try:
            g = self.p(rel)
            os.mkdir(os.path.join(g, "c"))
            parent_writes = [["memory.limit_in_bytes", "32M"], ["memory.memsw.limit_in_bytes", "48M"]]
            perr = [self.write(os.path.join(g, f), t) for f, t in parent_writes]
            got = {"memory.stat": self.read(os.path.join(g, "c", "memory.stat"))[0],
                   "memory.limit_in_bytes": self.read(os.path.join(g, "c", "memory.limit_in_bytes"))[0]}
            return [{"id": "parent limited after the child was created", "child_first": True,
                     "parent_writes": parent_writes, "parent_errno": perr,
                     "child_writes": [], "child_errno": [], "child_read": got}]
        finally:
            self.rmtree(rel)


def unused_fd() -> int:
    """A descriptor number that is not open in this process (and stays so for a while)."""
    for fd in range(900, 1000):
        try:
            os.fstat(fd)
        except OSError as e:
            if e.errno == errno.EBADF:
                return fd
    raise RuntimeError("no unused descriptor number found")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="write the JSON here instead of stdout")
    ap.add_argument("--measured", default=datetime.date.today().isoformat(),
                    help="date recorded in the table (default: today)")
    opts = ap.parse_args()

    try:
        parent = v1_memory_cgroup()
    except LinuxUnavailable as e:
        raise SystemExit(e.strerror) from None
    if not os.path.isfile(os.path.join(parent, "memory.limit_in_bytes")):
        raise SystemExit("no cgroup v1 memory controller for this process")
    base = os.path.join(parent, f"memcg-measure-{os.getpid()}")
    os.mkdir(base)
    m = Measure(base)
    try:
        table = {
            "kernel": os.uname().release,
            "measured": opts.measured,
            "group": "a child of the caller's memory cgroup (a fresh group per case)",
            "notes": (
                "defaults.listing is the directory as found; names in defaults.not_upstream are "
                "not created by the upstream memory controller or cgroup v1 core and are left "
                "out of defaults.files. hierarchy cases: the parent is a fresh child of the "
                "caller's memory cgroup, the child is named 'c' below it."
            ),
            "page_size": PAGE_SIZE,
            "method": (
                "tools/measure_v1_table.py: each write is os.open(O_WRONLY), one os.write of the "
                "exact UTF-8 bytes of 'input', os.close, in a freshly created group after the "
                "'setup' writes; 'errno' is the error name or null for success; 'read' maps each "
                "readable file to its full text afterwards. Event-control inputs use the "
                "placeholders {efd} and {cfd} for the eventfd and control-file descriptor numbers."
            ),
            "defaults": m.defaults(),
            "writes": m.writes(),
            "access": m.access(),
            "event_control": m.events(),
            "procs": m.procs(),
            "dirs": m.dirs(),
            "measurements": {
                "hierarchy": m.hierarchy() + m.parent_changed_after_child(),
            },
        }
    finally:
        m.cleanup()
        m.rmtree("")
    ids = [c["id"] for section in ("writes", "access", "event_control", "procs", "dirs")
           for c in table[section]]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise SystemExit(f"duplicate case ids: {sorted(dup)}")
    text = json.dumps(table, indent=2, ensure_ascii=True) + "\n"
    if opts.out:
        with open(opts.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
