"""memcg: the Linux memory cgroup controller as an executable, kernel-faithful model.

`SimKernel` is the model; both it and the real-cgroup backend implement `Kernel`.
The backends are imported on first use (PEP 562), so that importing the real-cgroup
backend or its worker does not bring in the model and NumPy.
"""

import importlib

from .kernel import PAGE_SIZE, Event, Kernel, Socket, Task

__all__ = ["PAGE_SIZE", "Event", "Kernel", "LinuxKernel", "SimKernel", "Socket", "Task", "VMKernel"]
__version__ = "0.1.0"

# name -> the module that defines it, imported when the name is first asked for
_BACKENDS = {
    "SimKernel": ".backends.sim",        # the model: NumPy and every mechanism
    "LinuxKernel": ".backends.linux",    # standard library only; touches no cgroup until constructed
    "VMKernel": ".backends.vmkernel",    # a QEMU guest, booted on first use
}


def __getattr__(name: str):
    """memcg.SimKernel, memcg.LinuxKernel and memcg.VMKernel, imported when first used."""
    if name not in _BACKENDS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_BACKENDS[name], __name__), name)
    globals()[name] = value      # later look-ups find it without this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
