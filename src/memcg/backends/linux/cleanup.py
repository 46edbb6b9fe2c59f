"""Clean-up of real cgroups: the registry of open kernels, its exit and signal hooks,
and the sweep of what a killed controller left behind.

Every LinuxKernel registers here when it is made and leaves when close() is done.
Whatever is still open is closed at interpreter exit (atexit) and on SIGTERM/SIGHUP
(the handler cleans up, then dies of the signal); Ctrl-C unwinds into close() as a
KeyboardInterrupt.  Clean-up runs once, to the end: while it runs, stop signals
(SIGTERM, SIGHUP, SIGINT) are only noted, and the first one is delivered when it is
done - a second signal neither re-enters it nor cuts it short.  A controller killed by
SIGKILL runs none of this: its workers die with it (PR_SET_PDEATHSIG), and the next
LinuxKernel made below the same parent removes its groups and file directories.

What a run owns is recognised by a marker the run holds, never by its pid: each of its
file directories holds a lock file (LOCK_FILE) on which it keeps an exclusive flock(2)
for its whole life.  The kernel drops the lock when the process dies, however it dies,
so a name whose lock can be taken is a leftover, and one whose lock is held belongs to
a live controller - whatever pid namespace either of them runs in (a pid seen from a
container says nothing about the host's processes).  A name with no lock file anywhere
is left alone: nothing shows it is ours to remove.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import os
import secrets
import shutil
import signal
import sys
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING

from . import files, scratchfs

if TYPE_CHECKING:
    from .kernel import LinuxKernel

# Roots and file directories are named ROOT_PREFIX + "<pid>-<n>-<random>": the pid for
# people reading the tree, the random part so that two controllers that are both pid 1
# (in two pid namespaces) never pick the same name.  The owner is the lock, not the pid.
ROOT_PREFIX = "memcg-linux-"
LOCK_FILE = ".owner.lock"
_STAGING = ".staging-"   # a private directory before its lock is held: never swept

_OPEN: set["LinuxKernel"] = set()
# Re-entrant: a signal handler runs in the main thread between two bytecodes, possibly
# while that thread holds the lock in register()/unregister().
_OPEN_LOCK = threading.RLock()
_HANDLERS_INSTALLED = False

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
_cleaning = 0                  # depth of clean-up sections running (close, close_all)
_deferred: int | None = None   # the first stop signal that arrived during clean-up
_dying: int | None = None      # the fatal signal being acted on: die of it when clean
_saved: dict[int, object] = {} # the handlers replaced while clean-up runs


def register(kernel: "LinuxKernel") -> None:
    """Close `kernel` at exit or on a fatal signal unless it is closed before."""
    with _OPEN_LOCK:
        _OPEN.add(kernel)


def unregister(kernel: "LinuxKernel") -> None:
    """`kernel` is closed: nothing left to do for it."""
    with _OPEN_LOCK:
        _OPEN.discard(kernel)


def close_all() -> None:
    """Close every LinuxKernel this process opened (atexit and signal handlers)."""
    with cleaning():
        with _OPEN_LOCK:
            kernels = [k for k in _OPEN if k._owner == os.getpid()]
        for k in kernels:
            try:
                k.close()
            except Exception as e:  # noqa: BLE001 - at exit: report in one line, go on
                print(f"memcg: cleaning up {k.root_name}: {e}", file=sys.stderr)


def _defer(signum, frame) -> None:
    """Stand-in handler while clean-up runs: note the first stop signal, nothing else."""
    global _deferred
    if _deferred is None:
        _deferred = signum


@contextmanager
def cleaning():
    """A clean-up section: stop signals arriving inside it are held back, and the
    first of them is delivered, to the handler it would have met, when the outermost
    section ends.  Sections nest; handlers are swapped from the main thread only
    (elsewhere the depth alone makes _on_fatal_signal hold the signal back)."""
    global _cleaning, _deferred
    with _OPEN_LOCK:
        _cleaning += 1
        if _cleaning == 1 and threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                _saved[sig] = signal.signal(sig, _defer)
    try:
        yield
    finally:
        with _OPEN_LOCK:
            _cleaning -= 1
            pending = None
            if _cleaning == 0:
                for sig, handler in _saved.items():
                    signal.signal(sig, handler)
                _saved.clear()
                pending, _deferred = _deferred, None
        if pending is not None and _dying is None:
            signal.raise_signal(pending)


def _on_fatal_signal(signum, frame) -> None:
    """SIGTERM/SIGHUP: close everything, then die of the signal (default action)."""
    global _dying
    if _cleaning or _dying is not None:
        # Clean-up is already running (signal raced the handler swap) or we are about
        # to die: hold it back rather than re-enter.
        _defer(signum, frame)
        return
    _dying = signum
    close_all()
    for sig in STOP_SIGNALS:
        if sig != signum:
            signal.signal(sig, signal.SIG_IGN)   # die of the first signal, not a later one
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install_handlers() -> None:
    """atexit and, from the main thread, SIGTERM/SIGHUP handlers where none is set; once."""
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    atexit.register(close_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _on_fatal_signal)


_SEQ = 0


def new_name() -> str:
    """A fresh root name of our scheme."""
    global _SEQ
    _SEQ += 1
    return f"{ROOT_PREFIX}{os.getpid()}-{_SEQ}-{secrets.token_hex(4)}"


def make_owned_dir(base: str, name: str) -> tuple[str, int]:
    """Make the private directory base/name holding its lock file, locked: (path, the
    lock's descriptor, to keep open for the controller's life).  The directory is made
    and locked under a staging name and then renamed, so a sweep never sees it
    unlocked (flock belongs to the open file, which the rename does not touch)."""
    staging = os.path.join(base, _STAGING + name)
    path = os.path.join(base, name)
    os.mkdir(staging, 0o700)
    try:
        fd = os.open(os.path.join(staging, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path, fd


def _take_lock(path: str) -> int | None:
    """The lock of a private directory if nobody holds it (its owner is dead), else None."""
    try:
        fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise
        return None
    return fd


def _names(top: str) -> list[str]:
    try:
        return [n for n in os.listdir(top) if n.startswith(ROOT_PREFIX)]
    except OSError:
        return []


def sweep_stale(parent: str, file_bases: list[str]) -> None:
    """Remove what a LinuxKernel whose process was killed (SIGKILL: no clean-up ran)
    left behind: its groups below parent and its file directories in file_bases, for
    every name of our scheme whose lock files exist and can all be taken.  A lock held
    by anyone, or no lock file at all, keeps the name.  Its workers died with it
    (PR_SET_PDEATHSIG), so its groups are empty."""
    names = set(_names(parent))
    for base in file_bases:
        names.update(_names(base))
    for name in sorted(names):
        dirs = [os.path.join(base, name) for base in file_bases
                if os.path.isfile(os.path.join(base, name, LOCK_FILE))]
        if not dirs:
            continue
        held = []
        try:
            for d in dirs:
                fd = _take_lock(d)
                if fd is None:
                    break
                held.append(fd)
            else:
                _remove_tree_quietly(os.path.join(parent, name))
                for d in dirs:
                    scratchfs.release_under(d)  # its fresh ext4, if it made one
                    shutil.rmtree(d, ignore_errors=True)
        finally:
            for fd in held:
                os.close(fd)


def _remove_tree_quietly(top: str) -> None:
    dirs = [top]
    for here, subdirs, _ in os.walk(top):
        dirs.extend(os.path.join(here, d) for d in subdirs)
    for d in sorted(dirs, key=lambda p: p.count("/"), reverse=True):
        try:
            files.remove_group_dir(d)
        except OSError:
            return
