"""Clean-up of real cgroups: the registry of open kernels, its exit and signal hooks,
and the sweep of what a killed controller left behind.

Every LinuxKernel registers here when it is made and leaves when close() is done.
Whatever is still open is closed at interpreter exit (atexit) and on SIGTERM/SIGHUP
(the handler cleans up, then dies of the signal); Ctrl-C unwinds into close() as a
KeyboardInterrupt.  Clean-up runs once, to the end: while it runs, stop signals
(SIGTERM, SIGHUP, SIGINT) are only noted, and the first one is delivered when it is
done - a second signal neither re-enters it nor cuts it short.  A controller killed by SIGKILL runs none of this: its workers die
with it (PR_SET_PDEATHSIG), and the next LinuxKernel made below the same parent
removes its groups and file directories, recognised by their names.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import sys
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING

from . import files

if TYPE_CHECKING:
    from .kernel import LinuxKernel

# Roots and file directories are named ROOT_PREFIX + "<owner pid>-<n>", so that the
# sweep knows them and their owner.
ROOT_PREFIX = "memcg-linux-"

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


def _stale(names: list[str]) -> list[str]:
    """Names of our scheme whose owner process is gone."""
    out = []
    for name in names:
        if not name.startswith(ROOT_PREFIX):
            continue
        owner = name[len(ROOT_PREFIX):].split("-", 1)[0]
        if owner.isdigit() and int(owner) != os.getpid() and not os.path.exists(f"/proc/{owner}"):
            out.append(name)
    return out


def sweep_stale(parent: str, file_bases: list[str]) -> None:
    """Remove what a LinuxKernel whose process was killed (SIGKILL: no clean-up ran)
    left behind: empty groups and file directories of our own naming scheme whose
    owner process is gone.  Its workers died with it (PR_SET_PDEATHSIG)."""
    try:
        for name in _stale(os.listdir(parent)):
            _remove_tree_quietly(os.path.join(parent, name))
    except OSError:
        pass
    for base in file_bases:
        try:
            for name in _stale(os.listdir(base)):
                shutil.rmtree(os.path.join(base, name), ignore_errors=True)
        except OSError:
            pass


def _remove_tree_quietly(top: str) -> None:
    dirs = [top]
    for here, subdirs, _ in os.walk(top):
        dirs.extend(os.path.join(here, d) for d in subdirs)
    for d in sorted(dirs, key=lambda p: p.count("/"), reverse=True):
        try:
            files.remove_group_dir(d)
        except OSError:
            return
