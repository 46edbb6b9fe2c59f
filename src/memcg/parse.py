"""Kernel string parsing: the number grammars the kernel reads and the tables it prints.

Every layer reads numbers through this module: the v1 cgroup files (cgroupfs/v1.py)
and the page counter (mm/page_counter.py) as the kernel reads its writes, the real
backend the same way, and the scenario runner, the report and the comparison the
"key value" lines the kernel prints.

- memparse: lib/cmdline.c memparse() - C base prefixes, K/M/G/T/P/E suffixes;
- kstrtoull, kstrtoint: lib/kstrtox.c, as cgroup files use them (base 0);
- simple_strtoul: lib/vsprintf.c, decimal, the rest left to the caller;
- parse_memopt: a machine size given as a boot option would be (mem=2G);
- parse_size: the size grammar of scenario files (decimal digits, kernel suffixes);
- key_values, parse_stat: the "key value" lines of memory.stat, memory.oom_control,
  /proc/vmstat and /proc/zoneinfo;
- parse_int: a one-number file (memory.usage_in_bytes prints "%llu\\n");
- lookup_path, resolve_path: a group path of the Kernel interface as path lookup
  (fs/namei.c) reads it, for both backends.

Standard library only.
"""

from __future__ import annotations

import errno
import re
from typing import Iterator

__all__ = [
    "memparse",
    "kstrtoull",
    "kstrtoint",
    "simple_strtoul",
    "parse_memopt",
    "parse_size",
    "key_values",
    "parse_stat",
    "parse_int",
    "lookup_path",
    "resolve_path",
]

U64_MAX = 2**64 - 1
# lib/cmdline.c: memparse() suffixes, each a power of 1024
_SUFFIX_SHIFT = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
_SUFFIX_SHIFT.update({c.upper(): v for c, v in _SUFFIX_SHIFT.items()})
# the digits of each base, ASCII only (lib/kstrtox.c: _parse_integer_limit(), isxdigit())
_DIGITS = {8: "01234567", 10: "0123456789", 16: "0123456789abcdefABCDEF"}


def _einval() -> OSError:
    return OSError(errno.EINVAL, "Invalid argument")


def memparse(text: str) -> tuple[int, str]:
    """lib/cmdline.c: memparse() - a number in any C base with an optional K/M/G/T/P/E suffix.

    Returns (value, rest).  Like simple_strtoull, digits that overflow 64 bits wrap.
    With no digits at all simple_strtoull gives 0 and leaves the pointer where it was,
    and memparse() still takes a suffix there: "k" alone is 0 with nothing left, "x" is
    0 with "x" left.  Only ASCII digits and suffix letters count (the kernel reads bytes).
    """
    s = text
    i = 0
    base = 10
    # lib/kstrtox.c: _parse_integer_fixup_radix() - "0x" counts only before a hex digit
    if s[:2] in ("0x", "0X") and len(s) > 2 and s[2] in _DIGITS[16]:
        base, i = 16, 2
    elif s[:1] == "0":
        base = 8
    digits = _DIGITS[base]
    value = 0
    while i < len(s) and s[i] in digits:
        value = (value * base + int(s[i], 16)) & U64_MAX
        i += 1
    shift = _SUFFIX_SHIFT.get(s[i:i + 1])
    if shift is not None:
        value = (value << shift) & U64_MAX
        i += 1
    return value, s[i:]


def kstrtoull(text: str) -> int:
    """lib/kstrtox.c: kstrtoull(s, 0) - optional '+', C base prefix, digits, one optional
    trailing newline.

    EINVAL for anything else, ERANGE beyond 64 bits.
    """
    s = text[:-1] if text.endswith("\n") else text
    if s.startswith("+"):
        s = s[1:]
    base = 10
    if s[:2] in ("0x", "0X"):
        base, s = 16, s[2:]
    elif s.startswith("0") and len(s) > 1:
        base, s = 8, s[1:]
    digits = _DIGITS[base]
    if not s or any(c not in digits for c in s):
        raise _einval()
    v = int(s, base)
    if v > U64_MAX:
        raise OSError(errno.ERANGE, "Numerical result out of range")
    return v


def kstrtoint(text: str) -> int:
    """lib/kstrtox.c: kstrtoint(s, 0) - as kstrtoull with an optional '-', ERANGE outside int."""
    neg = text.startswith("-")
    v = kstrtoull(text[1:] if neg else text)
    v = -v if neg else v
    if not -2**31 <= v < 2**31:
        raise OSError(errno.ERANGE, "Numerical result out of range")
    return v


def simple_strtoul(s: str) -> tuple[int, str]:
    """lib/vsprintf.c: simple_strtoul(s, &end, 10) - leading decimal digits and the rest."""
    i = 0
    while i < len(s) and s[i] in "0123456789":  # ASCII only, as the kernel's isdigit()
        i += 1
    return (int(s[:i]) if i else 0), s[i:]


def parse_memopt(value, what: str) -> int:
    """A machine size, read as the kernel reads its mem= boot option (arch/x86/kernel/e820.c:
    parse_memopt(), memparse() of the whole text): an int of bytes or a string with the
    kernel's K/M/G/T suffixes.  ValueError naming `what` otherwise."""
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        n, rest = memparse(value.strip())
        if not rest and value.strip():
            return n
    raise ValueError(f"{what}: expected a size such as 2G, 512M or a byte count, got {value!r}")


# ASCII digits and blanks only: the kernel's memparse() knows no other digits
_SIZE_RE = re.compile(r"^\s*([0-9]+)\s*([kKmMgGtTpPeE]?)\s*$", re.ASCII)


def parse_size(text: str | int) -> int:
    """Bytes from an integer or a size string with the kernel's suffixes (K, M, G, T, P, E).

    Like the kernel's memparse() each suffix multiplies by 1024 and may be upper or lower
    case; unlike it, only decimal numbers are accepted.  Raises ValueError otherwise.
    """
    if isinstance(text, bool):
        raise ValueError(f"not a size: {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"negative size: {text}")
        return text
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(m.group(1)) << _SUFFIX_SHIFT.get(m.group(2).lower(), 0)


def key_values(text: str) -> Iterator[tuple[str, str]]:
    """The (key, value) texts of the two-field lines of a table the kernel prints
    ("cache 4096" in memory.stat, "oom_kill 1" in memory.oom_control, "min 1234" in
    /proc/zoneinfo); other lines are skipped."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            yield parts[0], parts[1]


def parse_stat(text: str) -> dict[str, int]:
    """The `name value` lines of memory.stat (or memory.oom_control) as a dict of ints."""
    out: dict[str, int] = {}
    for key, value in key_values(text):
        try:
            out[key] = int(value)
        except ValueError:
            pass
    return out


def parse_int(text: str | None) -> int | None:
    """The number of a one-number file ("%llu\\n"); None for no text or not a number."""
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


# include/uapi/linux/limits.h: PATH_MAX - a path's bytes with the terminating NUL
PATH_MAX = 4096


def lookup_path(path) -> tuple[list[str], str]:
    """A group path ("/a/b", relative to the kernel object's root) as path lookup walks it:
    (the resolved components of the parent, the last component as written).

    fs/namei.c: getname_flags() copies a C string, so a NUL cannot be part of a path:
    Python refuses it before any system call (ValueError "embedded null byte"), and so do
    both backends, with ValueError; a path of PATH_MAX bytes or more is ENAMETOOLONG.
    link_path_walk(): empty components (repeated or trailing slashes) and "." are skipped
    and ".." goes up - PermissionError (EACCES) where it would leave the root.  The last
    component is "" for the root itself (LAST_ROOT), "." (LAST_DOT), ".." (LAST_DOTDOT)
    or a name (LAST_NORM; kernfs has no NAME_MAX of its own: only PATH_MAX bounds it).
    """
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise ValueError(f"expected a group path like '/a/b', got {path!r}")
    if len(path.encode("utf-8", "surrogateescape")) >= PATH_MAX:
        raise OSError(errno.ENAMETOOLONG, "File name too long")
    comps = [c for c in path.split("/") if c]
    if not comps:
        return [], ""
    parent: list[str] = []
    for c in comps[:-1]:
        if c == ".":
            continue
        if c == "..":
            if not parent:
                raise PermissionError(errno.EACCES, f"{path}: leaves the kernel's root group")
            parent.pop()
            continue
        parent.append(c)
    return parent, comps[-1]


def resolve_path(path) -> list[str]:
    """The components of the group or file a path names (lookup_path(), last included)."""
    parent, last = lookup_path(path)
    if last in ("", "."):
        return parent
    if last == "..":
        if not parent:
            raise PermissionError(errno.EACCES, f"{path}: leaves the kernel's root group")
        return parent[:-1]
    return parent + [last]


def mkdir_last_errno(last: str) -> int:
    """fs/namei.c: filename_create() - mkdir of "/", "." or ".." (type != LAST_NORM) is
    EEXIST; 0 for a name."""
    return errno.EEXIST if last in ("", ".", "..") else 0


def rmdir_last_errno(last: str) -> int:
    """fs/namei.c: do_rmdir() - LAST_DOTDOT ENOTEMPTY, LAST_DOT EINVAL, LAST_ROOT EBUSY;
    0 for a name."""
    return {"..": errno.ENOTEMPTY, ".": errno.EINVAL, "": errno.EBUSY}.get(last, 0)
