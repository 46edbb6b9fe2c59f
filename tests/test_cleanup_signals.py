"""Two stop signals back to back: the clean-up they start runs once, to the end.

A child process opens a LinuxKernel, makes groups, workers and files, and is sent two
stop signals (SIGTERM, SIGHUP or SIGINT) in a row: right after it is set up, while its
workers are being killed, and while it leaves the registry of open kernels (under its
lock).  The child must exit promptly and leave no group, no worker and no file
directory behind.  The child widens each window on purpose by wrapping a step of the
clean-up in a short sleep that announces itself on stdout.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import memcg
from test_linux import gone  # the process has exited (a zombie counts as gone)

SRC = str(Path(__file__).resolve().parents[1] / "src")
EXIT_TIMEOUT = 10.0

CHILD = textwrap.dedent("""
    import sys, time
    import memcg
    from memcg.backends.linux import cleanup
    from memcg.backends.linux.client import LinuxTask

    phase = sys.argv[1]
    if phase == "killing":
        wait_death = LinuxTask._wait_death
        announced = []
        def slow_wait_death(self, *a, **kw):
            if not announced:
                announced.append(1)
                print("cleaning", flush=True)
                time.sleep(0.5)
            return wait_death(self, *a, **kw)
        LinuxTask._wait_death = slow_wait_death
    elif phase == "unregister":
        class SlowSet(set):
            def discard(self, item):
                print("cleaning", flush=True)
                time.sleep(0.5)
                super().discard(item)
        cleanup._OPEN = SlowSet(cleanup._OPEN)

    k = memcg.LinuxKernel()
    k.mkdir("/a")
    k.mkdir("/a/b")
    tasks = [k.spawn("/a"), k.spawn("/a/b"), k.spawn("/a/b")]
    tasks.append(tasks[0].fork())
    for i, t in enumerate(tasks[:3]):
        t.read_file(f"data{i}", 256 << 10)
        t.touch_shm(f"seg{i}", 256 << 10)
    print(k.root_dir, k._workdir, k._shmdir or "-", *[t.pid for t in tasks], flush=True)
    time.sleep(60)
""")


def read_line(p: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([p.stdout], [], [], timeout)
    return p.stdout.readline() if ready else ""


PAIRS = [(signal.SIGTERM, signal.SIGTERM), (signal.SIGTERM, signal.SIGHUP),
         (signal.SIGINT, signal.SIGTERM)]


@pytest.mark.linux
@pytest.mark.parametrize("phase", ["spawned", "killing", "unregister"])
@pytest.mark.parametrize("first,second", PAIRS, ids=lambda s: signal.Signals(s).name)
def test_two_stop_signals_clean_up_once_and_exit(real_memcg, phase, first, second):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    p = subprocess.Popen([sys.executable, "-c", CHILD, phase], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = read_line(p, 30).split()
        assert line, p.stderr.read()
        root, work, shm = line[:3]
        pids = [int(x) for x in line[3:]]
        p.send_signal(first)
        if phase != "spawned":
            assert read_line(p, EXIT_TIMEOUT).strip() == "cleaning", "clean-up did not start"
        p.send_signal(second)
        try:
            p.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"hung in clean-up after {first.name} then {second.name} ({phase})")
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
            memcg.LinuxKernel().close()     # sweep what the hung child left, for the next test
        p.stdout.close()
        p.stderr.close()
    if first != signal.SIGINT and phase == "spawned":
        # sent back to back, both may be pending before either is handled; then the
        # kernel (and CPython's handler loop) takes the lower number first
        assert p.returncode in (-first, -second), p.returncode
    elif first != signal.SIGINT:
        assert p.returncode == -first, p.returncode   # it dies of the first signal
    else:
        assert p.returncode != 0
    assert not os.path.exists(root)
    assert not os.path.exists(work)
    assert shm == "-" or not os.path.exists(shm)
    deadline = time.monotonic() + 5
    while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert all(gone(pid) for pid in pids)
