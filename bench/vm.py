#!/usr/bin/env python3
"""VMKernel speed: the image, the boot, one call of each kind, a whole compare of hog.

Figures (wall seconds): building the initramfs with the host's Python (cold, then
cached), booting the guest until its agent answers (without a disk, with its ext4
disk, with the disk and swap), one cgroup file read, one write, one task operation
(touch_anon of one page; the same on the host's LinuxKernel for scale where real
cgroups are usable), reading a 16 MiB file on the guest's ext4 disk, and `memcg
compare hog --against vm`.  Every report names the guest kernel and the accelerator.

    python3 bench/vm.py                 # every figure, v2 guest
    python3 bench/vm.py --hierarchy v1 --calls 100 --no-compare
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import memcg
from memcg.backends import vm, vmimage, vmkernel
from memcg.cli import main as memcg_main


def _each(fn, n: int) -> float:
    """Median wall seconds of one call of fn, over n calls."""
    times = []
    for _ in range(n):
        t = time.monotonic()
        fn()
        times.append(time.monotonic() - t)
    return statistics.median(times)


def image_figures() -> dict:
    kernel, busybox = vm.find_images()
    _, python = vmimage.image_files()
    modules = vmimage.disk_modules(kernel)
    guest = ["/lib/modules/" + os.path.relpath(m, os.path.dirname(vmimage.modules_dir(kernel)))
             for m in modules]
    init = vmkernel._init_script(python, guest)
    extra = list(zip(guest, modules))
    with tempfile.TemporaryDirectory(prefix="memcg-bench-") as root:
        t = time.monotonic()
        path = vmimage.build(busybox, init, root=root, extra=extra)
        cold = time.monotonic() - t
        size = os.path.getsize(path)
        t = time.monotonic()
        vmimage.build(busybox, init, root=root, extra=extra)
        cached = time.monotonic() - t
    return {"image_build_s": round(cold, 2), "image_cached_s": round(cached, 3),
            "image_mib": round(size / (1 << 20), 1)}


def boot_figure(hierarchy: str, key: str, **kw) -> dict:
    """Boot until the agent answers, then close, for one disk/swap configuration."""
    k = memcg.VMKernel(hierarchy=hierarchy, memory="512M", cpus=2, **kw)
    try:
        t = time.monotonic()
        k.boot()
        return {key: round(time.monotonic() - t, 2)}
    finally:
        k.close()


def guest_figures(hierarchy: str, calls: int) -> dict:
    k = memcg.VMKernel(hierarchy=hierarchy, memory="512M", cpus=2)
    try:
        t = time.monotonic()
        k.boot()
        boot = time.monotonic() - t
        k.mkdir("/b")
        limit = "memory.max" if hierarchy == "v2" else "memory.limit_in_bytes"
        usage = "memory.current" if hierarchy == "v2" else "memory.usage_in_bytes"
        t = time.monotonic()
        task = k.spawn("/b")
        spawn = time.monotonic() - t
        out = {"kernel": k.kernel_release, "accel": k.accel, "hierarchy": hierarchy,
               "boot_disk_s": round(boot, 2),
               "spawn_s": round(spawn, 3),
               "read_s": _each(lambda: k.read(f"/b/{usage}"), calls),
               "write_s": _each(lambda: k.write(f"/b/{limit}", "64M"), calls),
               "touch_anon_page_s": _each(lambda: task.touch_anon(4096), calls)}
        t = time.monotonic()
        task.touch_anon(16 << 20)
        out["touch_anon_16M_s"] = round(time.monotonic() - t, 3)
        t = time.monotonic()
        task.read_file("data", 16 << 20)          # page cache of a file on the guest's ext4
        out["read_file_16M_ext4_s"] = round(time.monotonic() - t, 3)
        task.exit()
    finally:
        t = time.monotonic()
        k.close()
        out["close_s"] = round(time.monotonic() - t, 2)
    return out


def host_figures(calls: int) -> dict:
    try:
        k = memcg.LinuxKernel()
    except OSError as e:
        return {"host": f"not measured: {e}"}
    try:
        task = k.spawn("/")
        return {"host_touch_anon_page_s": _each(lambda: task.touch_anon(4096), calls),
                "host_read_s": _each(lambda: k.read("/memory.usage_in_bytes"), calls)}
    finally:
        k.close()


def compare_figure() -> dict:
    with tempfile.TemporaryDirectory(prefix="memcg-bench-") as d:
        out = os.path.join(d, "cmp.json")
        t = time.monotonic()
        with open(os.devnull, "w") as null:
            saved, sys.stdout = sys.stdout, null
            try:
                rc = memcg_main(["compare", "hog", "--against", "vm", "--json", out])
            finally:
                sys.stdout = saved
        seconds = time.monotonic() - t
        agreement = json.load(open(out))["agreement"] if rc == 0 else None
    return {"compare_hog_s": round(seconds, 1), "compare_hog_agreement": agreement}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hierarchy", choices=("v1", "v2"), default="v2")
    p.add_argument("--calls", type=int, default=50, help="calls per median")
    p.add_argument("--no-compare", action="store_true", help="skip the whole compare of hog")
    args = p.parse_args()
    try:
        fig = image_figures()
        fig |= guest_figures(args.hierarchy, args.calls)
        fig |= boot_figure(args.hierarchy, "boot_no_disk_s", disk="0")
        fig |= boot_figure(args.hierarchy, "boot_disk_swap_s", swap="256M")
    except vm.GuestError as e:
        print(f"bench/vm.py: {e}", file=sys.stderr)
        return 2
    fig |= host_figures(args.calls)
    if not args.no_compare:
        fig |= compare_figure()
    for key, value in fig.items():
        if key.endswith("_s") and isinstance(value, float) and value < 1:
            value = f"{value * 1000:.2f} ms"
        print(f"{key:26} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
