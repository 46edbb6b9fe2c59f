"""Calibration profiles: the per-object costs of one machine's kernel, in bytes.

`memcg calibrate` measures them on real cgroups and writes a JSON profile;
`SimKernel(profile=FILE)` loads it, so the model's kernel-memory and socket figures
match the machine they are compared with.  Without a profile the defaults below apply;
each says where it was measured.
"""

from __future__ import annotations

import json

# key -> (default, what it is).  Defaults are filled in from measurements on the
# reference machine (Linux 6.18, x86-64); None means "not measured yet".
PROFILE_KEYS: dict[str, tuple[float | None, str]] = {
    "kmem_fork_bytes": (None, "kmem.usage_in_bytes growth per fork() of a small process"),
    "kmem_mkdir_bytes_tmpfs": (None, "kmem growth per mkdir on tmpfs"),
    "kmem_mkdir_bytes_ext4": (None, "kmem growth per mkdir on ext4"),
    "kmem_file_bytes_tmpfs": (None, "kmem growth per empty file created on tmpfs"),
    "kmem_file_bytes_ext4": (None, "kmem growth per empty file created on ext4"),
    "kmem_socket_bytes": (None, "kmem growth per connected loopback TCP socket pair"),
    "worker_baseline_bytes": (None, "memory.usage_in_bytes of an idle worker process"),
}


def default_profile() -> dict:
    """The built-in profile: every key with its default."""
    return {k: v for k, (v, _) in PROFILE_KEYS.items()}


def load_profile(path: str) -> dict:
    """A profile file merged over the defaults.

    Raises ValueError naming the file and key for anything that is not a known key
    with a non-negative number.
    """
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise ValueError(f"{path}: cannot read profile: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not JSON: {e.msg} at line {e.lineno}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of costs")
    prof = default_profile()
    for key, value in data.items():
        if key in ("kernel", "measured", "machine"):
            continue  # descriptive fields
        if key not in PROFILE_KEYS:
            raise ValueError(f"{path}: {key}: unknown profile key "
                             f"(expected one of {', '.join(PROFILE_KEYS)})")
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{path}: {key}: expected a non-negative number, got {value!r}")
        prof[key] = value
    return prof
