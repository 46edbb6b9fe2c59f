"""A userspace-shrinker client written from the protocol description alone.

    python chunk_client.py SOCKET|- GROUP_DIR CHUNKS [--hold] [--linger SECONDS]

Moves itself into GROUP_DIR (after start-up, so the interpreter is not charged there),
then an allocator thread maps and writes CHUNKS chunks of 1 MiB one after another while
a shrinker thread frees the oldest chunks the daemon asks for.  With SOCKET "-" there is
no shrinker.  With --hold the shrinker frees nothing and hands every chunk back ("+N").
With --linger it stays that long after allocating.
Prints one JSON line at the end: chunks allocated, asked, freed, request times.
"""

import array
import json
import mmap
import os
import socket
import sys
import threading
import time
from collections import deque

CHUNK = 1 << 20
sock_path, group, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
hold = "--hold" in sys.argv
linger = float(sys.argv[sys.argv.index("--linger") + 1]) if "--linger" in sys.argv else 0.0
sys.setswitchinterval(0.0002)   # let the shrinker thread in between two page writes

chunks = deque()
lock = threading.Lock()
stats = {"allocated": 0, "asked": 0, "freed": 0, "requests": [], "alloc_times": []}
sock = efd = None
if sock_path != "-":
    efd = os.eventfd(0, os.EFD_CLOEXEC)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(sock_path)
    sock.sendmsg([b"register %d\n" % CHUNK],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [efd]))])
    sock.sendall(b"?\n")
    assert sock.recv(100).startswith(b"held 0"), "registration not answered"

with open(os.path.join(group, "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))


def shrinker():
    while True:
        n = os.eventfd_read(efd)            # blocks until the daemon asks
        stats["requests"].append((time.time(), n))
        stats["asked"] += n
        if hold:
            sock.sendall(b"+%d\n" % n)
            continue
        freed = 0
        with lock:
            for _ in range(min(n, len(chunks))):
                chunks.popleft().close()    # munmap: the pages go back at once
                freed += 1
        stats["freed"] += freed
        if n > freed:
            sock.sendall(b"+%d\n" % (n - freed))


if sock is not None:
    threading.Thread(target=shrinker, daemon=True).start()
page = b"x" * CHUNK
for i in range(total):
    m = mmap.mmap(-1, CHUNK)
    m.write(page)
    with lock:
        chunks.append(m)
    stats["allocated"] += 1
    stats["alloc_times"].append(time.monotonic())
    if sock is not None:
        sock.sendall(b"+1\n")
time.sleep(linger)
if sock is not None:
    sock.sendall(b"?\n")
    stats["held_reply"] = sock.recv(100).decode().strip()
print(json.dumps(stats), flush=True)
