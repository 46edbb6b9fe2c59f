"""The guest's root file system for VMKernel: busybox, the host's Python and the backend.

The initramfs holds busybox (the shell that mounts the memory controller), the host's
own Python interpreter with the part of its standard library a controller and its
workers import, the shared libraries `ldd` lists for them, and the few modules of
this package that run in the guest (the real-cgroup backend, its worker and the
guest agent).  Files keep their host paths, so the interpreter finds its prefix as
it does on the host, and their modification times, so the host's compiled modules
are used as they are (compiling in an emulated CPU costs seconds).

For a disk in the guest the image also holds the kernel modules of its block
device: the cloud kernel builds ext4, jbd2, crc16 and crc32c in, but virtio-pci and
virtio-blk are modules.  They come from the fetched kernel package's
/lib/modules/RELEASE, with the modules each names in its `depends=` (the package
ships no modules.dep: Debian's depmod writes it at install), loaded dependencies
first by busybox insmod.

Building reads about a thousand files; the image is cached in the package's cache
folder under a key made of every file's path, size and modification time and of the
init script, and rebuilt only when one of them changes.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import subprocess
import sys
import sysconfig

from . import vm

__all__ = ["AGENT_MODULE", "DISK_MODULES", "GUEST_SOURCES", "build", "disk_modules", "image_files"]

AGENT_MODULE = "memcg.backends.vmagent"
GUEST_ROOT = "/memcg"       # where the package's guest modules are put in the guest
# The package modules the guest imports (relative to the package's parent directory).
GUEST_SOURCES = ("memcg/__init__.py", "memcg/kernel.py", "memcg/parse.py",
                 "memcg/backends/__init__.py", "memcg/backends/worker.py",
                 "memcg/backends/vmagent.py", "memcg/backends/linux/*.py",
                 # memcg shrinkerd, which the guest's LinuxKernel starts for mempressure.shrinker
                 "memcg/shrinkerd.py", "memcg/mm/__init__.py", "memcg/mm/shrink_plan.py")
# The virtio transport and block driver (drivers/virtio/virtio_pci_common.c,
# drivers/block/virtio_blk.c): modules in Debian's cloud kernel.
DISK_MODULES = ("virtio_pci", "virtio_blk")
# Standard-library folders no controller or worker imports: left out to keep the image
# (which stays in guest memory) small.
_SKIP_DIRS = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "distutils",
              "site-packages", "pydoc_data", "unittest", "sqlite3", "asyncio", "multiprocessing",
              "xml", "email", "http", "xmlrpc", "wsgiref", "venv", "curses", "dbm", "html",
              "urllib", "zoneinfo", "tomllib", "lib-dynload"}
# Extension modules that need libraries the guest has no use for (Tk, OpenSSL, ...).
_SKIP_EXT = ("_test", "_tkinter", "_ctypes_test", "_xxtest", "xxlimited", "_curses", "readline",
             "nis", "ossaudiodev", "_sqlite3", "_ssl", "_hashlib", "_dbm", "_gdbm", "_uuid")


def _package_parent() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _ldd(path: str) -> list[str]:
    """The shared libraries the dynamic loader maps for path (absolute paths)."""
    try:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, check=False).stdout
    except OSError:
        return []
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) > parts.index("=>") + 1:
            target = parts[parts.index("=>") + 1]
            if target.startswith("/"):
                libs.append(target)
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])      # the loader itself
    return libs


def _stdlib_files(stdlib: str) -> list[str]:
    files = []
    for name in sorted(os.listdir(stdlib)):
        path = os.path.join(stdlib, name)
        if name in _SKIP_DIRS or name.startswith("config-"):
            continue
        if os.path.isdir(path):
            for here, dirs, names in os.walk(path):
                dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
                files += [os.path.join(here, n) for n in names if _wanted_module(n)]
        elif _wanted_module(name):
            files.append(path)
    return files


def _wanted_module(name: str) -> bool:
    # The sources (for tracebacks) and the plain compiled modules; not the -O variants.
    return name.endswith(".py") or (name.endswith(".pyc") and ".opt-" not in name)


def image_files() -> tuple[list[tuple[str, str]], str]:
    """(guest path, host path) of every file of the Python part of the image, and the
    interpreter's path."""
    python = os.path.realpath(getattr(sys, "_base_executable", sys.executable) or sys.executable)
    stdlib = sysconfig.get_paths()["stdlib"]
    dynload = sysconfig.get_config_var("DESTSHARED") or os.path.join(stdlib, "lib-dynload")
    pairs = [(python, python)] + [(f, f) for f in _stdlib_files(stdlib)]
    natives = [python]
    for ext in sorted(glob.glob(os.path.join(dynload, "*.so"))):
        if not os.path.basename(ext).startswith(_SKIP_EXT):
            pairs.append((ext, ext))
            natives.append(ext)
    libs = set()
    for path in natives:
        libs.update(_ldd(path))
    pairs += [(lib, os.path.realpath(lib)) for lib in sorted(libs)]
    parent = _package_parent()
    for pattern in GUEST_SOURCES:
        for src in sorted(glob.glob(os.path.join(parent, pattern))):
            for host in (src, importlib.util.cache_from_source(src)):
                if os.path.exists(host):    # a stale compiled module is recompiled by the guest
                    pairs.append((os.path.join(GUEST_ROOT, os.path.relpath(host, parent)), host))
    return pairs, python


def _modinfo(path: str) -> dict[str, str]:
    """A module's .modinfo strings ("name=virtio_blk", "depends=virtio,virtio_ring", ...):
    NUL-separated key=value pairs (include/linux/moduleparam.h: __MODULE_INFO)."""
    with open(path, "rb") as f:
        data = f.read()
    out: dict[str, str] = {}
    for key in (b"name", b"depends"):
        at = data.find(b"\0" + key + b"=")
        if at >= 0:
            end = data.find(b"\0", at + 1)
            out[key.decode()] = data[at + len(key) + 2:end].decode(errors="replace")
    return out


def modules_dir(kernel: str) -> str:
    """/lib/modules/RELEASE of the fetched package that holds this vmlinuz."""
    release = os.path.basename(kernel).removeprefix("vmlinuz-")
    return os.path.join(os.path.dirname(os.path.dirname(kernel)), "lib", "modules", release)


def disk_modules(kernel: str, wanted: tuple[str, ...] = DISK_MODULES) -> list[str]:
    """Host paths of the modules wanted and all they depend on, dependencies first
    (the order insmod needs); vm.GuestError when the package has none of them."""
    root = modules_dir(kernel)
    index: dict[str, str] = {}
    for here, _, names in os.walk(os.path.join(root, "kernel")):
        for n in names:
            if n.endswith(".ko"):
                index[n[:-3].replace("-", "_")] = os.path.join(here, n)
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order:
            return
        if name not in index:
            raise vm.GuestError(f"the guest kernel has no module {name} in {root}: run `memcg vm fetch`")
        if name in path:
            raise vm.GuestError(f"module {name} depends on itself through {' -> '.join(path)}")
        for dep in filter(None, _modinfo(index[name]).get("depends", "").split(",")):
            visit(dep.replace("-", "_"), path + (name,))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return [index[n] for n in order]


def _dirs_of(paths: list[str]) -> list[str]:
    out: set[str] = set()
    for p in paths:
        d = os.path.dirname(p.lstrip("/"))
        while d:
            out.add(d)
            d = os.path.dirname(d)
    return sorted(out, key=lambda d: (d.count("/"), d))


def _key(pairs: list[tuple[str, str]], extra: list[str]) -> str:
    h = hashlib.sha256()
    for guest, host in pairs + [(e, e) for e in extra]:
        st = os.stat(host)
        h.update(f"{guest}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def build(busybox: str, init: str, root: str | None = None,
          extra: list[tuple[str, str]] = ()) -> str:
    """The path of the cached initramfs for this init script, built if it is missing;
    extra: more (guest path, host path) files (the kernel modules)."""
    pairs, _ = image_files()
    pairs = pairs + list(extra)
    folder = os.path.join(root or vm.cache_dir(), "initramfs")
    os.makedirs(folder, exist_ok=True)
    key = _key(pairs, [busybox]) + hashlib.sha256(init.encode()).hexdigest()[:8]
    path = os.path.join(folder, f"{key}.cpio")
    if os.path.exists(path):
        return path
    with open(busybox, "rb") as f:
        bb = f.read()
    base = ["bin", "proc", "sys", "dev", "tmp", "sys/fs", "sys/fs/cgroup"]
    entries: list[tuple] = [(d, 0o40755, b"") for d in base]
    entries += [(d, 0o40755, b"") for d in _dirs_of([g for g, _ in pairs]) if d not in base]
    entries += [("bin/busybox", 0o100755, bb), ("init", 0o100755, init.encode())]
    for guest, host in pairs:
        st = os.stat(host)
        with open(host, "rb") as f:
            entries.append((guest.lstrip("/"), 0o100000 | (st.st_mode & 0o777), f.read(),
                            int(st.st_mtime)))
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(vm._cpio_newc(entries))
    os.replace(tmp, path)
    for old in glob.glob(os.path.join(folder, "*.cpio")):   # one image at a time in the cache
        if old != path:
            os.unlink(old)
    return path
