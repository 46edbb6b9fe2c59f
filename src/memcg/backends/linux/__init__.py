"""The real-cgroup backend: the `Kernel` interface on the Linux memory cgroup controller.

Groups live under a root a LinuxKernel creates and owns: by default a new child of the
memory cgroup the calling process is in (read from /proc/self/cgroup), so everything
stays inside any limit the caller lives under.  Paths are relative to that root.  Tasks
are real processes (`memcg/backends/worker.py`) driven over a socket pair; they really map and
write memory, read and write files, fork, create directories and talk TCP.  Events
are real eventfds registered through cgroup.event_control.

Safety rules, enforced here:
- groups are created only under the owned root, and a path that leaves it is refused;
- only processes this object started (and their forks) are ever moved or killed;
- everything - processes, groups, files - is removed by close(), at interpreter exit
  (atexit), on SIGTERM/SIGHUP (the handler cleans up, then dies of the signal) and on
  Ctrl-C (KeyboardInterrupt unwinds into close()); a worker that is killed leaves
  nothing behind, and workers die with their controller (PR_SET_PDEATHSIG).

The cgroup v1 memory controller is used where it is mounted.  Where only a cgroup v2
memory controller is available, the v1 names a scenario uses are mapped to v2 files
where an equivalent exists (see V2_MAP); the others raise OSError(EOPNOTSUPP) naming
the missing equivalent.  docs/linux-backend.md describes all of it.

The modules, one concept each: host (where the caller's memory cgroup is), files (how
cgroup and data files are read and written), v2names (the v1 names on cgroup v2),
procfs (a worker's state from /proc), client (the task behind a worker process),
command (a real command run in a group, for `memcg record`),
events (eventfds), cleanup (closing at exit and on signals, sweeping leftovers) and
kernel (LinuxKernel).  Only the standard library is imported.
"""

from .cleanup import ROOT_PREFIX
from .client import LinuxSocket, LinuxTask
from .command import LinuxCommand
from .events import LinuxEvent
from .host import LinuxUnavailable, find_memory_cgroup, fs_type, v1_memory_cgroup
from .kernel import LinuxKernel
from .v2names import UNLIMITED, V2_MAP

__all__ = ["LinuxKernel", "LinuxUnavailable", "LinuxTask", "LinuxCommand", "LinuxEvent", "LinuxSocket",
           "find_memory_cgroup", "fs_type", "v1_memory_cgroup", "V2_MAP", "UNLIMITED", "ROOT_PREFIX"]
