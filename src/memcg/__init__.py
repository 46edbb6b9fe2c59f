"""memcg: the Linux memory cgroup controller as an executable, kernel-faithful model.

`SimKernel` is the model; both it and the real-cgroup backend implement `Kernel`.
"""

from .kernel import PAGE_SIZE, Event, Kernel, Socket, Task
from .backends.linux import LinuxKernel  # standard library only; touches no cgroup until constructed
from .backends.sim import SimKernel

__all__ = ["PAGE_SIZE", "Event", "Kernel", "LinuxKernel", "SimKernel", "Socket", "Task"]
__version__ = "0.1.0"
