#!/usr/bin/env python3
"""A corpus of broken inputs for the `memcg` command, and a classifier of its answers.

Every case is something a careless or hostile user may hand the command: malformed
TOML, values of the wrong type, unknown and missing keys, values out of range, NUL
and odd Unicode in names and sizes, deep nesting, an empty file, /dev/zero, a FIFO,
undeclared groups, bad command lines for every subcommand and bad sweep grids.  None
of them is valid, so each must end with exit status 2 and one line on stderr,
`memcg: ...`, that names the file (for a scenario) and the key or flag at fault.
Each answer is classified as

- clean: exit 2, one line, naming what the case requires;
- traceback: a Python traceback, or a multi-line or unnamed error;
- hang: still running at the timeout;
- accepted: exit 0 (or 1, an expectation report), as if the input were fine.

    python3 tools/hostile_input.py                 # every case, each in a new process
    python3 tools/hostile_input.py --in-process    # faster: cli.main() in this process
    python3 tools/hostile_input.py --list          # the cases
    python3 tools/hostile_input.py -v hog-step-1E  # one case, with its output

No case reaches real cgroups: the ones that name `--backend linux`, `compare`,
`calibrate`, `fuzz`, `record` or `shrinkerd` are refused while the command line or
the scenario is read, before a kernel is made.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, os.pardir, "src")

# A small valid scenario the broken ones start from.
BASE = """\
[machine]
memory = "64M"

[[group]]
path = "/a"

[[task]]
name = "t"
group = "/a"

[[step]]
at = 0
task = "t"
touch_anon = "1M"
"""

MACHINE_GROUP_TASK = BASE.rsplit("[[step]]", 1)[0]


def step(body: str) -> str:
    """BASE's machine, group and task with one step of this body."""
    return MACHINE_GROUP_TASK + "[[step]]\n" + body + "\n"


@dataclass
class Case:
    id: str
    argv: list[str]               # after `memcg`; "{file}" is the scenario file, "{tmp}" a work dir
    text: str | bytes | None = None   # the scenario file's content
    names: list[str] = field(default_factory=list)   # each must appear in the error line
    special: str | None = None    # "fifo", "dir", "missing", "devzero": what {file} is


def toml(id: str, text: str | bytes, *names: str) -> Case:
    return Case(id, ["run", "{file}"], text, [f"{id}.toml", *names])


def cli(id: str, argv: list[str], *names: str) -> Case:
    return Case(id, argv, None, list(names))


def cases() -> list[Case]:
    out: list[Case] = []
    add = out.append

    # --- malformed TOML ---------------------------------------------------------
    add(toml("toml-bare-value", "x =\n"))
    add(toml("toml-open-table", "[machine\nmemory = \"1G\"\n"))
    add(toml("toml-open-array-table", "[[group]\npath = \"/a\"\n"))
    add(toml("toml-unterminated-string", 'name = "hog\n'))
    add(toml("toml-unterminated-multiline", 'description = """\nno end\n'))
    add(toml("toml-bare-size", "[machine]\nmemory = 64M\n"))
    add(toml("toml-duplicate-key", 'name = "a"\nname = "b"\n'))
    add(toml("toml-duplicate-table", "[machine]\ncpus = 1\n[machine]\ncpus = 2\n"))
    add(toml("toml-bad-escape", 'name = "a\\qb"\n'))
    add(toml("toml-surrogate-escape", 'name = "\\uD800"\n'))
    add(toml("toml-no-key", "= 1\n"))
    add(toml("toml-invalid-utf8", b'name = "\xff\xfe"\n'))
    add(toml("toml-nul-byte", b'name = "a"\x00\n'))
    add(toml("toml-bom", "\ufeff" + BASE))
    add(toml("toml-binary", bytes(range(256)) * 4))
    add(toml("toml-array-not-closed", "[params]\nv = [1, 2\n"))
    add(toml("toml-inline-table-newline", "[machine]\nx = { a = 1,\n b = 2 }\n"))
    # --- nesting, size, not a file -----------------------------------------------
    add(toml("deep-array", "x = " + "[" * 5000 + "]" * 5000 + "\n"))
    add(toml("deep-inline-table", "x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n"))
    add(toml("deep-dotted-key", "x" + ".x" * 5000 + " = 1\n"))
    add(toml("too-large", "# " + "x" * (5 << 20) + "\n", "bytes"))
    add(toml("empty", "", "empty"))
    add(toml("only-comment", "# nothing here\n", "empty"))
    add(toml("only-blank", "\n\n   \n\t\n", "empty"))
    add(Case("dev-zero", ["run", "/dev/zero"], names=["/dev/zero"]))
    add(Case("dev-null", ["run", "/dev/null"], names=["/dev/null"]))
    add(Case("fifo", ["run", "{file}"], special="fifo", names=["fifo.toml"]))
    add(Case("directory", ["run", "{file}"], special="dir", names=["directory.toml"]))
    add(Case("missing-file", ["run", "{file}"], special="missing", names=["missing-file.toml"]))
    add(Case("unknown-builtin", ["run", "no-such-scenario"], names=["no-such-scenario"]))
    # --- wrong types -------------------------------------------------------------
    add(toml("type-name", "name = 1\n" + BASE, "name"))
    add(toml("type-description", "description = []\n" + BASE, "description"))
    add(toml("type-ticks-string", 'ticks = "x"\n' + BASE, "ticks"))
    add(toml("type-ticks-float", "ticks = 1.5\n" + BASE, "ticks"))
    add(toml("type-ticks-bool", "ticks = true\n" + BASE, "ticks"))
    add(toml("type-machine", 'machine = "big"\n[[group]]\npath = "/a"\n', "machine"))
    add(toml("type-memory-list", BASE.replace('memory = "64M"', "memory = [1]"), "machine.memory"))
    add(toml("type-memory-float", BASE.replace('memory = "64M"', "memory = 1.5e9"), "machine.memory"))
    add(toml("type-memory-bool", BASE.replace('memory = "64M"', "memory = true"), "machine.memory"))
    add(toml("type-cpus-string", BASE.replace('memory = "64M"', 'memory = "64M"\ncpus = "two"'),
             "machine.cpus"))
    add(toml("type-semantics-float", BASE.replace('memory = "64M"', 'memory = "64M"\nsemantics = 6.18'),
             "machine.semantics"))
    add(toml("type-group", 'group = "a"\n', "group"))
    add(toml("type-group-entry", "group = [1]\n", "group"))
    add(toml("type-group-path", "[[group]]\npath = 1\n", "group[0].path"))
    add(toml("type-files", '[[group]]\npath = "/a"\nfiles = "x"\n', "group[0].files"))
    add(toml("type-file-value", '[[group]]\npath = "/a"\nfiles = { "memory.limit_in_bytes" = [] }\n',
             "memory.limit_in_bytes"))
    add(toml("type-task-name", BASE.replace('name = "t"', "name = 1"), "task[0].name"))
    add(toml("type-event-args", BASE + '[[event]]\npath = "/a/memory.oom_control"\nargs = 1\n',
             "event[0].args"))
    add(toml("type-on-fire", BASE + '[[event]]\npath = "/a/memory.oom_control"\non_fire = "kill"\n',
             "event[0].on_fire"))
    add(toml("type-at-string", step('at = "soon"\ntask = "t"\nexit = true'), "step[0].at"))
    add(toml("type-at-float", step('at = 1.5\ntask = "t"\nexit = true'), "step[0].at"))
    add(toml("type-repeat", step('at = 0\ntask = "t"\ntouch_anon = "1M"\nrepeat = "many"'),
             "step[0].repeat"))
    add(toml("type-when", step('at = 0\ntask = "t"\nexit = true\nwhen = 1'), "step[0].when"))
    add(toml("type-touch-anon-list", step('at = 0\ntask = "t"\ntouch_anon = []'), "step[0].touch_anon"))
    add(toml("type-touch-anon-decimal", step('at = 0\ntask = "t"\ntouch_anon = "1.5M"'),
             "step[0].touch_anon"))
    add(toml("type-locked", step('at = 0\ntask = "t"\ntouch_anon = "1M"\nlocked = "yes"'),
             "step[0].locked"))
    add(toml("type-exit-false", step('at = 0\ntask = "t"\nexit = false'), "step[0].exit"))
    add(toml("type-exit-int", step('at = 0\ntask = "t"\nexit = 1'), "step[0].exit"))
    add(toml("type-shrinker", step('at = 0\ntask = "t"\ncache_put = 1\nshrinker = "yes"'),
             "step[0].shrinker"))
    add(toml("type-expect", step('at = "end"\nexpect = "all good"'), "step[0].expect"))
    add(toml("type-expect-condition", step('at = "end"\nexpect = { "task:t" = 1 }'), "step[0].expect"))
    add(toml("type-record", step('at = 0\nrecord = { a = 1 }'), "step[0].record"))
    add(toml("type-write-value", step('at = 0\nwrite = { "/a/memory.limit_in_bytes" = [] }'),
             "step[0].write"))
    add(toml("type-params-value", "[params]\nlimit = []\n" + BASE, "params.limit"))
    # --- unknown keys ------------------------------------------------------------
    add(toml("unknown-top", 'nmae = "x"\n' + BASE, "nmae"))
    add(toml("unknown-machine", BASE.replace('memory = "64M"', 'memory = "64M"\nram = "1G"'), "ram"))
    add(toml("unknown-group", BASE.replace('path = "/a"', 'path = "/a"\nlimit = "1M"'), "limit"))
    add(toml("unknown-task", BASE.replace('group = "/a"', 'group = "/a"\ncgroup = "/a"'), "cgroup"))
    add(toml("unknown-event", BASE + '[[event]]\npath = "/a/memory.oom_control"\narg = ""\n', "arg"))
    add(toml("unknown-step-key", step('at = 0\ntsak = "t"\nexit = true'), "tsak"))
    add(toml("unknown-step-action", step('at = 0\ntask = "t"\nexplode = true'), "step[0]"))
    add(toml("two-actions", step('at = 0\ntask = "t"\nexit = true\ntouch_anon = "1M"'), "step[0]"))
    add(toml("no-action", step('at = 0\ntask = "t"'), "step[0]"))
    add(toml("unknown-machine-choice", BASE.replace('memory = "64M"', 'memory = "64M"\nsemantics = "2.6"'),
             "machine.semantics"))
    add(toml("unknown-fs", step('at = 0\ntask = "t"\nmkdirs = 1\nfs = "xfs"'), "step[0].fs"))
    add(toml("unknown-cgroup-file", '[[group]]\npath = "/a"\nfiles = { "memory.foo" = "1" }\n',
             "memory.foo"))
    add(toml("unknown-target", step('at = "end"\nexpect = { "foo:bar" = "== 1" }'), "foo:bar"))
    add(toml("unknown-placeholder", step('at = 0\ntask = "t"\ntouch_anon = "{nope}"'), "nope"))
    add(toml("placeholder-i-outside-repeat", step('at = 0\ntask = "t"\nread_file = "f{i}"\nsize = "1M"'),
             "step[0].read_file"))
    add(toml("unbalanced-brace", step('at = 0\ntask = "t"\nread_file = "f{i"\nsize = "1M"'),
             "step[0].read_file"))
    add(toml("param-named-i", "[params]\ni = 1\n" + BASE, "params"))
    add(toml("param-bad-name", '[params]\n"a b" = 1\n' + BASE, "params"))
    # --- missing keys ------------------------------------------------------------
    add(toml("missing-group-path", "[[group]]\nfiles = {}\n", "group[0].path"))
    add(toml("missing-task-name", BASE.replace('name = "t"\n', ""), "task[0].name"))
    add(toml("missing-task-group", BASE.replace('group = "/a"\n', ""), "task[0].group"))
    add(toml("missing-event-path", BASE + "[[event]]\nargs = \"\"\n", "event[0].path"))
    add(toml("missing-at", step('task = "t"\nexit = true'), "step[0].at"))
    add(toml("missing-task-of-action", step('at = 0\ntouch_anon = "1M"'), "step[0].task"))
    add(toml("missing-size", step('at = 0\ntask = "t"\nread_file = "f"'), "step[0].size"))
    add(toml("missing-peer", step('at = 0\ntask = "t"\nconnect_tcp = "c"'), "step[0].peer"))
    # --- out of range ------------------------------------------------------------
    add(toml("memory-too-small", BASE.replace('"64M"', '"1K"'), "machine.memory"))
    add(toml("memory-1P", BASE.replace('"64M"', '"1P"'), "machine.memory"))
    add(toml("memory-zero", BASE.replace('"64M"', '"0"'), "machine.memory"))
    add(toml("memory-negative", BASE.replace('"64M"', "-1"), "machine.memory"))
    add(toml("swap-1P", BASE.replace('memory = "64M"', 'memory = "64M"\nswap = "1P"'), "machine.swap"))
    add(toml("cpus-zero", BASE.replace('memory = "64M"', 'memory = "64M"\ncpus = 0'), "machine.cpus"))
    add(toml("cpus-huge", BASE.replace('memory = "64M"', 'memory = "64M"\ncpus = 9223372036854775807'),
             "machine.cpus"))
    add(toml("ticks-huge", "ticks = 1000000000\n" + BASE, "ticks"))
    add(toml("ticks-zero", "ticks = 0\n" + BASE, "ticks"))
    add(toml("at-huge", step('at = 1000000000000\ntask = "t"\nexit = true'), "step[0].at"))
    add(toml("at-negative", step('at = -1\ntask = "t"\nexit = true'), "step[0].at"))
    add(toml("repeat-huge", step('at = 0\ntask = "t"\ntouch_anon = "1M"\nrepeat = 1000000000'),
             "step[0].repeat"))
    add(toml("repeat-zero", step('at = 0\ntask = "t"\ntouch_anon = "1M"\nrepeat = 0'), "step[0].repeat"))
    add(toml("every-negative", step('at = 0\ntask = "t"\ntouch_anon = "1M"\nrepeat = 2\nevery = -1'),
             "step[0].every"))
    add(toml("advance-huge", step("at = 0\nadvance = 1000000000"), "step[0].advance"))
    add(toml("advance-zero", step("at = 0\nadvance = 0"), "step[0].advance"))
    add(toml("mkdirs-huge", step('at = 0\ntask = "t"\nmkdirs = 1000000000'), "step[0].mkdirs"))
    add(toml("touch-anon-8E", step('at = 0\ntask = "t"\ntouch_anon = "8E"'), "step[0].touch_anon"))
    add(toml("touch-anon-negative", step('at = 0\ntask = "t"\ntouch_anon = -1'), "step[0].touch_anon"))
    add(toml("read-file-1P", step('at = 0\ntask = "t"\nread_file = "f"\nsize = "1P"'), "step[0].size"))
    add(toml("cache-put-zero", step('at = 0\ntask = "t"\ncache_put = 0'), "step[0].cache_put"))
    add(toml("limit-rejected-by-kernel", '[[group]]\npath = "/a"\nfiles = { "memory.limit_in_bytes" = "lots" }\n',
             "memory.limit_in_bytes"))
    add(toml("too-many-groups", "".join(f'[[group]]\npath = "/g{i}"\n' for i in range(65536)), "group"))
    # --- NUL and odd Unicode in names and sizes ------------------------------------
    add(toml("path-nul", '[[group]]\npath = "/a\\u0000b"\n', "group[0].path"))
    add(toml("path-newline", '[[group]]\npath = "/a\\nb"\n', "group[0].path"))
    add(toml("path-dotdot", '[[group]]\npath = "/a/../b"\n', "group[0].path"))
    add(toml("path-relative", '[[group]]\npath = "a"\n', "group[0].path"))
    add(toml("path-double-slash", '[[group]]\npath = "//a"\n', "group[0].path"))
    add(toml("path-no-parent", '[[group]]\npath = "/x/y"\n', "group[0].path"))
    add(toml("task-name-nul", BASE.replace('name = "t"', 'name = "t\\u0000"'), "task[0].name"))
    add(toml("task-name-unicode", BASE.replace('name = "t"', 'name = "\u0442"'), "task[0].name"))
    add(toml("size-arabic-digits", step('at = 0\ntask = "t"\ntouch_anon = "\u0661\u0666M"'),
             "step[0].touch_anon"))
    add(toml("size-fullwidth", step('at = 0\ntask = "t"\ntouch_anon = "\uff11\uff16M"'),
             "step[0].touch_anon"))
    add(toml("size-nbsp", step('at = 0\ntask = "t"\ntouch_anon = "16\u00a0M"'), "step[0].touch_anon"))
    add(toml("size-kelvin", step('at = 0\ntask = "t"\ntouch_anon = "1\u212a"'), "step[0].touch_anon"))
    add(toml("size-nul", step('at = 0\ntask = "t"\ntouch_anon = "16M\\u0000"'), "step[0].touch_anon"))
    add(toml("memory-superscript", BASE.replace('"64M"', '"\u00b2G"'), "machine.memory"))
    add(toml("file-name-dotdot", step('at = 0\ntask = "t"\nread_file = "../etc/passwd"\nsize = "1M"'),
             "step[0].read_file"))
    add(toml("file-name-absolute", step('at = 0\ntask = "t"\nread_file = "/etc/passwd"\nsize = "1M"'),
             "step[0].read_file"))
    add(toml("file-name-empty-part", step('at = 0\ntask = "t"\nwrite_file = "a//b"\nsize = "1M"'),
             "step[0].write_file"))
    add(toml("shm-name-dotdot", step('at = 0\ntask = "t"\ntouch_shm = "../x"\nsize = "1M"'),
             "step[0].touch_shm"))
    add(toml("file-name-empty", step('at = 0\ntask = "t"\nread_file = ""\nsize = "1M"'),
             "step[0].read_file"))
    add(toml("file-name-nul", step('at = 0\ntask = "t"\nread_file = "a\\u0000"\nsize = "1M"'),
             "step[0].read_file"))
    # --- undeclared groups, tasks, connections --------------------------------------
    add(toml("undeclared-task-group", BASE.replace('group = "/a"', 'group = "/b"'), "/b"))
    add(toml("undeclared-move", step('at = 0\ntask = "t"\nmove = "/b"'), "/b"))
    add(toml("undeclared-rmdir", step('at = 0\nrmdir = "/b"'), "/b"))
    add(toml("undeclared-write", step('at = 0\nwrite = { "/b/memory.limit_in_bytes" = "1M" }'), "/b"))
    add(toml("undeclared-event", BASE + '[[event]]\npath = "/b/memory.oom_control"\n', "/b"))
    add(toml("undeclared-expect", step('at = "end"\nexpect = { "/b/memory.usage_in_bytes" = "== 0" }'),
             "/b"))
    add(toml("undeclared-on-fire", BASE + '[[event]]\npath = "/a/memory.oom_control"\n'
             'on_fire = { "/b/memory.force_empty" = "1" }\n', "/b"))
    add(toml("undeclared-task", step('at = 0\ntask = "u"\nexit = true'), "step[0].task"))
    add(toml("undeclared-connection", step('at = 0\ntask = "t"\nsend = "c"\nsize = "1K"'), "step[0]"))
    add(toml("undeclared-record", step('at = "end"\nexpect = { "task:t" = "== $nope" }'), "nope"))
    add(toml("duplicate-group", BASE + '[[group]]\npath = "/a"\n', "group[1].path"))
    add(toml("duplicate-task", BASE + '[[task]]\nname = "t"\ngroup = "/a"\n', "task[1].name"))
    # --- bad command lines -------------------------------------------------------
    add(cli("argv-none", []))
    add(cli("argv-unknown-command", ["explode"], "explode"))
    add(cli("run-no-scenario", ["run"], "NAME|FILE"))
    add(cli("run-unknown-flag", ["run", "hog", "--bogus"], "--bogus"))
    add(cli("run-bad-backend", ["run", "hog", "--backend", "vax"], "--backend"))
    add(cli("run-bad-hierarchy", ["run", "hog", "--hierarchy", "v3"], "--hierarchy"))
    add(cli("run-param-no-value", ["run", "hog", "--param"], "--param"))
    add(cli("run-param-no-equals", ["run", "hog", "--param", "limit"], "--param"))
    add(cli("run-param-empty-key", ["run", "hog", "--param", "=1"], "--param"))
    add(cli("run-param-unknown", ["run", "hog", "--param", "limt=1M"], "limt"))
    add(cli("run-param-bad-limit", ["run", "hog", "--param", "limit=lots"], "limit"))
    add(cli("run-param-step-1E", ["run", "hog", "--param", "step=1E"], "touch_anon"))
    add(cli("run-param-steps-huge", ["run", "hog", "--param", "steps=1000000000"], "repeat"))
    add(cli("run-param-unicode", ["run", "hog", "--param", "limit=\u0661\u0666M"], "limit"))
    add(cli("run-json-bad-dir", ["run", "hog", "--json", "{tmp}/no/such/dir/out.json"], "out.json"))
    add(cli("run-linux-broken-file", ["run", "{tmp}/no-such.toml", "--backend", "linux"], "no-such.toml"))
    add(cli("run-linux-bad-param", ["run", "hog", "--backend", "linux", "--param", "limit=lots"], "limit"))
    add(cli("list-extra-arg", ["list", "hog"], "hog"))
    add(cli("fs-unknown-builtin", ["fs", "no-such-scenario"], "no-such-scenario"))
    add(cli("compare-no-scenario", ["compare"], "NAME|FILE"))
    add(cli("compare-bad-against", ["compare", "hog", "--against", "vax"], "--against"))
    add(cli("compare-unknown-param", ["compare", "hog", "--param", "nope=1"], "nope"))
    add(cli("compare-missing-profile", ["compare", "hog", "--profile", "{tmp}/no-profile.json"],
            "no-profile.json"))
    add(cli("compare-broken-file", ["compare", "{tmp}/no-such.toml"], "no-such.toml"))
    add(cli("calibrate-out-no-value", ["calibrate", "--out"], "--out"))
    add(cli("calibrate-unknown-flag", ["calibrate", "--bogus"], "--bogus"))
    add(cli("calibrate-out-bad-dir", ["calibrate", "--out", "{tmp}/no/such/dir/p.json"], "p.json"))
    add(cli("fuzz-no-seeds", ["fuzz"], "--seeds"))
    add(cli("fuzz-seeds-word", ["fuzz", "--seeds", "many"], "--seeds"))
    add(cli("fuzz-seeds-zero", ["fuzz", "--seeds", "0"], "--seeds"))
    add(cli("fuzz-seeds-negative", ["fuzz", "--seeds", "-1"], "--seeds"))
    add(cli("fuzz-seeds-arabic", ["fuzz", "--seeds", "\u0661"], "--seeds"))
    add(cli("fuzz-seeds-huge", ["fuzz", "--seeds", "10" * 20], "--seeds"))
    add(cli("fuzz-ops-small", ["fuzz", "--seeds", "1", "--ops", "1"], "--ops"))
    add(cli("fuzz-start-negative", ["fuzz", "--seeds", "1", "--start", "-5"], "--start"))
    add(cli("fuzz-bad-against", ["fuzz", "--seeds", "1", "--against", "sim"], "--against"))
    add(cli("shrinkerd-no-cgroup", ["shrinkerd"], "--cgroup"))
    add(cli("shrinkerd-missing-cgroup", ["shrinkerd", "--cgroup", "{tmp}/no-such-group",
                                         "--runtime-dir", "{tmp}/run"], "no-such-group"))
    add(cli("shrinkerd-not-a-cgroup", ["shrinkerd", "--cgroup", "{tmp}", "--runtime-dir", "{tmp}/run"],
            "not a memory cgroup"))
    add(cli("shrinkerd-bad-margin", ["shrinkerd", "--cgroup", "{tmp}", "--runtime-dir", "{tmp}/run",
                                     "--margin", "lots"], "--margin"))
    add(cli("shrinkerd-negative-margin", ["shrinkerd", "--cgroup", "{tmp}", "--runtime-dir", "{tmp}/run",
                                          "--margin", "-1"], "--margin"))
    add(cli("record-no-out", ["record", "--", "true"], "--out"))
    add(cli("record-no-command", ["record", "--out", "{tmp}/r.toml"], "command"))
    add(cli("record-zero-interval", ["record", "--interval", "0", "--out", "{tmp}/r.toml", "--", "true"],
            "--interval"))
    add(cli("record-word-interval", ["record", "--interval", "fast", "--out", "{tmp}/r.toml", "--", "true"],
            "--interval"))
    add(cli("record-negative-timeout", ["record", "--timeout", "-1", "--out", "{tmp}/r.toml", "--", "true"],
            "--timeout"))
    add(cli("record-nan-interval", ["record", "--interval", "nan", "--out", "{tmp}/r.toml", "--", "true"],
            "--interval"))
    add(cli("record-bad-limit", ["record", "--limit", "lots", "--out", "{tmp}/r.toml", "--", "true"],
            "--limit"))
    add(cli("vm-bad-action", ["vm", "explode"], "explode"))
    # --- bad sweep grids ----------------------------------------------------------
    add(cli("sweep-no-param", ["sweep", "hog", "--no-cache"], "--param"))
    add(cli("sweep-empty-value", ["sweep", "hog", "--no-cache", "--param", "limit="], "limit"))
    add(cli("sweep-empty-item", ["sweep", "hog", "--no-cache", "--param", "limit=32M,,64M"], "limit"))
    add(cli("sweep-no-equals", ["sweep", "hog", "--no-cache", "--param", "limit"], "--param"))
    add(cli("sweep-twice", ["sweep", "hog", "--no-cache", "--param", "limit=32M", "--param", "limit=64M"],
            "limit"))
    add(cli("sweep-reverse-range", ["sweep", "hog", "--no-cache", "--param", "limit=64M..32M:8M"], "limit"))
    add(cli("sweep-zero-step", ["sweep", "hog", "--no-cache", "--param", "limit=32M..64M:0"], "limit"))
    add(cli("sweep-no-step", ["sweep", "hog", "--no-cache", "--param", "limit=32M..64M"], "limit"))
    add(cli("sweep-word-range", ["sweep", "hog", "--no-cache", "--param", "limit=a..b:c"], "limit"))
    add(cli("sweep-huge-range", ["sweep", "hog", "--no-cache", "--param", "limit=1..1000000000:1"], "limit"))
    add(cli("sweep-huge-product", ["sweep", "hog", "--no-cache", "--param", "limit=1M..100000M:1M",
                                   "--param", "step=1M..100000M:1M"], "points"))
    add(cli("sweep-unknown-key", ["sweep", "hog", "--no-cache", "--param", "nope=1,2"], "nope"))
    add(cli("sweep-bad-value", ["sweep", "hog", "--no-cache", "--param", "limit=32M,lots"], "lots"))
    add(cli("sweep-jobs-zero", ["sweep", "hog", "--no-cache", "--param", "limit=32M", "--jobs", "0"],
            "--jobs"))
    add(cli("sweep-jobs-word", ["sweep", "hog", "--no-cache", "--param", "limit=32M", "--jobs", "x"],
            "--jobs"))
    add(cli("sweep-bad-engine", ["sweep", "hog", "--no-cache", "--param", "limit=32M", "--engine", "vax"],
            "--engine"))
    add(cli("sweep-unknown-scenario", ["sweep", "no-such-scenario", "--no-cache", "--param", "limit=32M"],
            "no-such-scenario"))
    add(cli("sweep-cache-dir-is-file", ["sweep", "hog", "--param", "limit=32M", "--cache-dir", "/dev/null"],
            "/dev/null"))
    add(cli("sweep-unicode-range", ["sweep", "hog", "--no-cache", "--param", "limit=\u0661M..2M:1M"],
            "limit"))
    return out


# ----------------------------------------------------------------- running a case


@dataclass
class Answer:
    status: int | None     # None: hung
    stdout: str
    stderr: str
    seconds: float


def prepare(case: Case, tmp: str) -> list[str]:
    """Write the case's file into tmp and return its argv with the placeholders filled."""
    path = os.path.join(tmp, f"{case.id}.toml")
    if case.special == "fifo":
        path = os.path.join(tmp, "fifo.toml")
        if not os.path.exists(path):
            os.mkfifo(path)
    elif case.special == "dir":
        path = os.path.join(tmp, "directory.toml")
        os.makedirs(path, exist_ok=True)
    elif case.special == "missing":
        path = os.path.join(tmp, "missing-file.toml")
    elif case.text is not None:
        data = case.text.encode("utf-8") if isinstance(case.text, str) else case.text
        with open(path, "wb") as f:
            f.write(data)
    return [a.replace("{file}", path).replace("{tmp}", tmp) for a in case.argv]


def run_subprocess(argv: list[str], timeout: float, cwd: str) -> Answer:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(SRC))
    env.pop("DISPLAY", None)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "memcg", *argv], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        status = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)     # lets a real-cgroup kernel clean up
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        status = None
    return Answer(status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                  time.monotonic() - t0)


class _Timeout(BaseException):
    pass


def run_in_process(argv: list[str], timeout: float) -> Answer:
    """cli.main(argv) here, with stdout and stderr captured and SIGALRM as the timeout."""
    if os.path.abspath(SRC) not in sys.path:
        sys.path.insert(0, os.path.abspath(SRC))
    from memcg import cli

    out, err = io.StringIO(), io.StringIO()

    def alarm(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    t0 = time.monotonic()
    status: int | None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = cli.main(argv)
            except SystemExit as e:
                status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if not isinstance(e.code, int) and e.code is not None:
                    err.write(f"{e.code}\n")
            except _Timeout:
                status = None
            except BaseException:   # what a process would print as a traceback
                import traceback
                err.write(traceback.format_exc())
                status = 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return Answer(status, out.getvalue(), err.getvalue(), time.monotonic() - t0)


def classify(case: Case, ans: Answer) -> tuple[str, str]:
    """(class, why): clean, traceback, hang or accepted."""
    if ans.status is None:
        return "hang", f"still running after {ans.seconds:.0f} s"
    if "Traceback (most recent call last)" in ans.stderr:
        return "traceback", ans.stderr.strip().splitlines()[-1]
    if ans.status in (0, 1):
        return "accepted", f"exit {ans.status}"
    lines = [ln for ln in ans.stderr.splitlines() if ln.strip()]
    if ans.status != 2:
        return "traceback", f"exit {ans.status}: {lines[-1] if lines else ''}"
    if len(lines) != 1 or not lines[0].startswith("memcg: "):
        return "traceback", f"{len(lines)} lines on stderr: {lines[:2]}"
    missing = [n for n in case.names if n not in lines[0]]
    if missing:
        return "traceback", f"does not name {missing}: {lines[0]}"
    return "clean", lines[0]


def run_all(selected: list[Case], in_process: bool, timeout: float, verbose: bool) -> dict[str, list]:
    results: dict[str, list] = {"clean": [], "traceback": [], "hang": [], "accepted": []}
    with tempfile.TemporaryDirectory(prefix="memcg-hostile-") as tmp:
        for case in selected:
            argv = prepare(case, tmp)
            ans = (run_in_process(argv, timeout) if in_process
                   else run_subprocess(argv, timeout, tmp))
            kind, why = classify(case, ans)
            results[kind].append((case.id, why))
            if verbose or kind != "clean":
                print(f"{kind:9} {case.id}: {why[:300]}")
                if verbose:
                    print(ans.stderr[-2000:])
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("ids", nargs="*", help="run only these cases")
    ap.add_argument("--in-process", action="store_true", help="call cli.main() in this process")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per case (default 20)")
    ap.add_argument("--list", action="store_true", help="list the cases")
    ap.add_argument("--src", help="the package sources to test (default: this checkout's src)")
    ap.add_argument("-v", "--verbose", action="store_true")
    opts = ap.parse_args()
    if opts.src:
        global SRC
        SRC = opts.src
    all_cases = cases()
    if opts.list:
        for c in all_cases:
            print(c.id, c.argv)
        return 0
    selected = [c for c in all_cases if not opts.ids or c.id in opts.ids]
    results = run_all(selected, opts.in_process, opts.timeout, opts.verbose)
    print(f"{len(selected)} cases: " + ", ".join(f"{len(v)} {k}" for k, v in results.items()))
    return 0 if len(results["clean"]) == len(selected) else 1


if __name__ == "__main__":
    sys.exit(main())
