"""memcg shrinkerd on a real cgroup v2 group: the 6.1 VM guest.

The daemon runs in the guest on the guest kernel's own v2 groups.  The clients are
written from the protocol of docs/shrinker.md (tests/data/chunk_client.py for
shrinker.sock, the socket code below for pressure.sock), not from the daemon's code.
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from conftest import guest_fixture

pytestmark = pytest.mark.vm

MiB = 1 << 20
CLIENT = (Path(__file__).resolve().parent / "data" / "chunk_client.py").read_text()


# One cgroup v2 guest without swap for the module.
v2 = guest_fixture(hierarchy="v2", memory="512M", cpus=2, swap="0")


# Runs in the guest: argv = ROOT WORKDIR CLIENT_SOURCE.  Starts the daemon on ROOT, then
# the 4x-limit stress test with and without it in /g (memory.max 64M), and pressure.sock
# clients on /p (memory.high 16M, an allocator throttled there) and on its idle sibling /q.
GUEST_PROGRAM = r'''
import json, os, select, signal, socket, subprocess, sys, time
root, work, src = sys.argv[1], sys.argv[2], sys.argv[3]
client = os.path.join(work, "chunk_client.py")
with open(client, "w") as f:
    f.write(src)
run = os.path.join(work, "run")
log = open(os.path.join(work, "daemon.log"), "w")
daemon = subprocess.Popen([sys.executable, "-S", "-c",
    "import sys; from memcg import shrinkerd; "
    "sys.exit(shrinkerd.serve(sys.argv[1], sys.argv[2], json_log=True, margin=12 << 20))",
    root, run], stderr=log)
out = {}
def wait_for(path):
    for _ in range(500):
        if os.path.exists(path):
            return True
        time.sleep(0.01)
    return False
def events(g):
    return dict(l.split() for l in open(os.path.join(root, g, "memory.events")))
try:
    out["sockets"] = all(wait_for(os.path.join(run, g, n)) for g in ("g", "p", "q")
                         for n in ("shrinker.sock", "pressure.sock"))
    r = subprocess.run([sys.executable, "-S", client, os.path.join(run, "g", "shrinker.sock"),
                        os.path.join(root, "g"), "256"], capture_output=True, text=True, timeout=240)
    out["with"] = {"rc": r.returncode, "stats": json.loads(r.stdout or "null"),
                   "events": events("g"), "err": r.stderr[-500:]}
    r = subprocess.run([sys.executable, "-S", client, "-", os.path.join(root, "g"), "256"],
                       capture_output=True, text=True, timeout=240)
    out["without"] = {"rc": r.returncode, "events": events("g")}
    # pressure.sock: a trigger each, systemd's way (one write, NUL-terminated)
    socks = {}
    for g in ("p", "q"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(os.path.join(run, g, "pressure.sock"))
        s.sendall(b"some 100000 1000000\0")
        socks[g] = s
    bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bad.connect(os.path.join(run, "p", "pressure.sock"))
    bad.sendall(b"some 100000 100000\0")          # a window under 500 ms
    bad.settimeout(5)
    out["bad_trigger"] = bad.recv(200).decode()
    time.sleep(0.3)
    hog = subprocess.Popen([sys.executable, "-S", client, "-", os.path.join(root, "p"), "48"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    heard, deadline = set(), time.monotonic() + 20
    while time.monotonic() < deadline and "p" not in heard:
        r, _, _ = select.select(list(socks.values()), [], [], 0.5)
        for g, s in socks.items():
            if s in r and s.recv(16):
                heard.add(g)
    r, _, _ = select.select([socks["q"]], [], [], 0)
    if r:
        heard.add("q")
    hog.kill()
    hog.wait()
    out["heard"] = sorted(heard)
    out["p_pressure"] = open(os.path.join(root, "p", "memory.pressure")).read().split("\n")[0]
finally:
    daemon.send_signal(signal.SIGTERM)
    out["daemon_rc"] = daemon.wait(timeout=30)
    out["run_left"] = os.path.exists(run)
    log.close()
    asks = [json.loads(l) for l in open(os.path.join(work, "daemon.log")) if l.startswith("{")]
    out["asks"] = [a for a in asks if a.get("what") == "ask"]
print(json.dumps(out))
'''


def test_both_protocols_on_a_real_v2_group(v2):
    for g in ("/g", "/p", "/q"):
        v2.mkdir(g)
    v2.write("/g/memory.max", "64M")
    v2.write("/p/memory.high", "16M")
    res = v2.run_python(GUEST_PROGRAM, CLIENT, timeout=600)
    assert res["rc"] == 0, res["err"][-2000:]
    out = json.loads(res["out"].splitlines()[-1])
    assert out["sockets"]
    # shrinker.sock: 4x the limit in 1 MiB chunks, never OOM-killed, never at the limit
    w = out["with"]
    if "libgcc_s.so.1 must be installed" in w["err"]:
        # glibc loads libgcc_s when a thread exits; a guest image built without it cannot
        # run the threaded client
        pytest.skip("the guest image has no libgcc_s.so.1 for the threaded chunk client")
    assert w["rc"] == 0, w["err"]
    assert w["stats"]["allocated"] == 256 and w["stats"]["freed"] > 0
    assert w["events"]["oom_kill"] == "0" and w["events"]["max"] == "0"
    assert out["asks"] and {a["group"] for a in out["asks"]} <= {"g"}
    # ... and the same allocator without the daemon is OOM-killed
    assert out["without"]["rc"] == -9
    assert int(out["without"]["events"]["oom_kill"]) >= 1
    # pressure.sock: the throttled group's client hears it, its idle sibling does not
    assert out["bad_trigger"].startswith("error:")
    assert out["heard"] == ["p"], out["p_pressure"]
    # SIGTERM removes the runtime directory
    assert out["daemon_rc"] == 0 and not out["run_left"]
    for g in ("/g", "/p", "/q"):
        v2.rmdir(g)


def test_mempressure_shrinker_through_the_daemon_on_v2(v2):
    """LinuxKernel on v2 serves mempressure.shrinker through its daemon (in the guest):
    the model's errno, and requests once usage passes the high mark under memory.max."""
    v2.mkdir("/s")
    v2.write("/s/memory.max", "64M")
    for bad in ("0", "abc"):
        with pytest.raises(OSError) as e:
            v2.event("/s/mempressure.shrinker", bad)
        assert e.value.errno == errno.EINVAL
    ev = v2.event("/s/mempressure.shrinker", str(MiB))
    v2.write("/s/mempressure.shrinker", f"{ev.fileno()} +40")
    for bad, err in (("999 +1", errno.EBADF), (f"{ev.fileno()} y", errno.EINVAL)):
        with pytest.raises(OSError) as e:
            v2.write("/s/mempressure.shrinker", bad)
        assert e.value.errno == err
    t = v2.spawn("/s")
    t.touch_anon(56 * MiB)          # over the high mark (64M - 12M), under memory.max
    asked = 0
    for _ in range(20):
        v2.advance(1)
        asked += ev.count()
        if asked:
            break
    assert 1 <= asked <= 40        # never more than the 40 held
    assert t.state == "running"
    t.exit()
    ev.close()
    v2.rmdir("/s")
