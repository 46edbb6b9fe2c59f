"""The guest agent: a LinuxKernel inside the VM guest, driven over a serial port.

Run in the guest as ``python -S -m memcg.backends.vmagent /dev/ttyS1 v1|v2 WORKDIR FATAL``
by the initramfs's /init (memcg/backends/vmkernel.py): WORKDIR is where the workers'
files live (the guest's ext4 disk, or /tmp without one), FATAL what /init could not
set up (the disk, swap), empty when all is well.  It makes one LinuxKernel on the guest's
memory controller (the real backend: its groups, worker processes and eventfds) and
answers the host's VMKernel.

Protocol: the worker protocol's framing (memcg/backends/worker.py), one JSON object
per line each way, every command exactly one reply, ``{"ok": value}`` or
``{"err": errno, "msg": text, "file": path}``; a refusal that is not an OSError is
``{"exc": type name, "msg": text}``.  ``{"op": "reset"}`` removes everything and starts
a fresh LinuxKernel (one guest serves many test cases).  Commands name a kernel method (``{"op":
"write", "args": [path, text]}``), or a task, socket or event by its number
(``{"op": "task", "pid": 12, "call": "touch_anon", "args": [...]}``).  Events flow
the other way without being asked: each time a registered eventfd is signalled the
agent sends ``{"event": id, "n": count}``, and it reads every eventfd once more
before each reply, so the host has every count the guest saw before the reply.
The first line is ``{"ready": kernel release}`` (or ``{"fatal": text}`` when the
guest's cgroups cannot be used).
"""

from __future__ import annotations

import errno
import json
import os
import select
import subprocess
import sys
import tty

from .linux import LinuxKernel

# What the host may call on a task, a socket and the kernel; nothing else is reachable.
TASK_CALLS = {"touch_anon", "free_anon", "write_anon", "touch_shm", "read_file", "write_file", "unlink",
              "mkdirs", "create_files", "move", "exit", "fork", "connect_tcp", "info",
              "set_oom_score_adj"}
SOCKET_CALLS = {"send", "recv", "info", "close"}
KERNEL_CALLS = {"mkdir", "rmdir", "listdir", "read", "write", "advance", "settle", "debugfs",
                "scratch_dir"}
TASK_INFO = ("state", "group", "cpu", "exit_signal", "exit_code", "late_errors", "oom_score_adj")
PYTHON_TIMEOUT = 300.0   # one "python" command (a program of the host's, run in the guest)


class Agent:
    """One LinuxKernel and the numbers the host knows its tasks, sockets and events by."""

    def __init__(self, fd: int, version: int, workdir: str | None = None):
        self.fd = fd
        self.inbuf = b""
        self.workdir = workdir
        # v2: a VMKernel shows the v2 files as they are (v1 scenarios are mapped on the host)
        self.kernel = LinuxKernel(version=version, workdir=workdir, v2_stat=version == 2)
        self.sockets: dict[int, object] = {}
        self.events: dict[int, object] = {}
        self.next_id = 1

    # --- the channel ------------------------------------------------------------------

    def send(self, msg: dict) -> None:
        data = json.dumps(msg, separators=(",", ":")).encode() + b"\n"
        while data:
            n = os.write(self.fd, data)
            data = data[n:]

    def forward_events(self, ready: list[int] | None = None) -> None:
        """Send the count of every signalled eventfd (every eventfd when ready is None)."""
        for eid, ev in list(self.events.items()):
            if ready is None or ev.fileno() in ready:
                n = ev.count()
                if n:
                    self.send({"event": eid, "n": n})

    def next_command(self) -> dict | None:
        """The next command; events are forwarded while waiting.  None at end of input."""
        while b"\n" not in self.inbuf:
            fds = [self.fd] + [ev.fileno() for ev in self.events.values()]
            ready, _, _ = select.select(fds, [], [])
            self.forward_events([f for f in ready if f != self.fd])
            if self.fd in ready:
                data = os.read(self.fd, 65536)
                if not data:
                    return None
                self.inbuf += data
        line, _, self.inbuf = self.inbuf.partition(b"\n")
        return json.loads(line)

    # --- commands ---------------------------------------------------------------------

    def _number(self, table: dict, obj: object) -> int:
        n = self.next_id
        self.next_id += 1
        table[n] = obj
        return n

    def task_info(self, task) -> dict:
        return {k: getattr(task, k) for k in TASK_INFO} | {"pid": task.pid}

    def run(self, cmd: dict):
        op, args = cmd.get("op"), cmd.get("args", [])
        k = self.kernel
        if op == "ping":
            return None
        if op == "reset":
            return self.reset()
        if op in KERNEL_CALLS:
            return getattr(k, op)(*args)
        if op == "spawn":
            return self.task_info(k.spawn(args[0], start_inside=bool(cmd.get("start_inside"))))
        if op == "event":
            ev = k.event(*args)
            return self._number(self.events, ev)
        if op == "shrinker_report":
            # "<eventfd> <N>" on mempressure.shrinker: the host names the eventfd by the
            # event's number; an fd that is no event of this agent is no registration
            ev = self.events.get(cmd.get("id"))
            return k.write(args[0], f"{ev.fileno() if ev is not None else -1} {args[1]}")
        if op == "python":
            return self.python(*args)
        if op == "event_close":
            ev = self.events.pop(cmd["id"], None)
            if ev is not None:
                ev.close()
            return None
        if op == "task":
            return self.task_call(k.task(cmd["pid"]), cmd["call"], args)
        if op == "socket":
            if cmd["call"] not in SOCKET_CALLS:
                raise ValueError(f"socket: no call {cmd['call']!r}")
            return getattr(self.sockets[cmd["id"]], cmd["call"])(*args)
        raise ValueError(f"unknown command {op!r}")

    def python(self, code: str, argv: list, timeout: float = PYTHON_TIMEOUT) -> dict:
        """Run a Python program in the guest (the guest's interpreter, this package on
        its path), with the guest kernel's root group directory and working directory
        as its first two arguments; its status and output."""
        try:
            r = subprocess.run([sys.executable, "-S", "-c", code, self.kernel.root_dir,
                                self.kernel.scratch_dir(), *map(str, argv)],
                               capture_output=True, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            return {"rc": None, "out": e.stdout or "", "err": e.stderr or ""}
        return {"rc": r.returncode, "out": r.stdout, "err": r.stderr}

    def reset(self) -> None:
        """A fresh LinuxKernel: everything of the old one removed, numbering kept."""
        for ev in self.events.values():
            ev.close()
        self.events.clear()
        self.sockets.clear()
        self.kernel.close()
        self.kernel = LinuxKernel(version=self.kernel.version, workdir=self.workdir,
                                  v2_stat=self.kernel.version == 2)

    def task_call(self, task, call: str, args: list):
        if call not in TASK_CALLS:
            raise ValueError(f"task: no call {call!r}")
        if call == "info":
            return self.task_info(task)
        if call == "fork":
            return self.task_info(task.fork())
        if call == "connect_tcp":
            return self._number(self.sockets, task.connect_tcp(self.kernel.task(args[0])))
        if call == "set_oom_score_adj":
            task.oom_score_adj = int(args[0])
            return self.task_info(task)
        getattr(task, call)(*args)
        return self.task_info(task)

    def serve(self) -> None:
        while True:
            cmd = self.next_command()
            if cmd is None or cmd.get("op") == "close":
                break
            try:
                reply = {"ok": self.run(cmd)}
            except OSError as e:
                reply = {"err": e.errno or errno.EIO, "msg": e.strerror or str(e),
                         "file": e.filename if isinstance(e.filename, str) else None}
            except Exception as e:  # the host re-raises it by name
                reply = {"exc": type(e).__name__, "msg": str(e)}
            self.forward_events()
            self.send(reply)
        for ev in self.events.values():
            ev.close()
        self.kernel.close()
        self.send({"ok": "closed"})


def main(argv: list[str]) -> int:
    fd = os.open(argv[1], os.O_RDWR | os.O_NOCTTY)
    tty.setraw(fd)               # bytes as they are: no echo, no line editing, no CR/LF
    version = 2 if argv[2] == "v2" else 1
    workdir = argv[3] if len(argv) > 3 else None
    if len(argv) > 4 and argv[4]:
        os.write(fd, (json.dumps({"fatal": argv[4]}) + "\n").encode())
        return 1
    try:
        agent = Agent(fd, version, workdir)
    except OSError as e:
        os.write(fd, (json.dumps({"fatal": str(e)}) + "\n").encode())
        return 1
    agent.send({"ready": os.uname().release})
    agent.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
