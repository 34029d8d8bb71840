"""The run directory's lock (standard library only, so ``jmf-train`` can refuse a held directory before
it loads JAX and Hydra: :func:`held_by_another`)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from jmf.errors import RunDirError

# How long a lock whose recorded holder has exited, or is exiting, is waited for.  A process killed with
# ``kill -9`` keeps its files, the lock with them, until its last thread is gone (milliseconds; a large
# JAX process the longest), and a child it forked keeps them until the child exits too.
DEAD_HOLDER_WAIT_SECONDS = 10.0
_PF_EXITING = 0x4       # the kernel's task flag "exiting", field 9 of /proc/<pid>/stat
_SIGKILL_BIT = 1 << 8   # SIGKILL (9) in /proc/<pid>/status's pending-signal masks


def in_use(directory: Path, holder: str) -> RunDirError:
    return RunDirError(f"run directory {directory} is in use by another jmf run (pid {holder}); wait for it to "
                       "finish, or give this run another hydra.run.dir")


def _still_held(directory: Path, holder: str) -> RunDirError:
    return RunDirError(f"run directory {directory} is still locked {DEAD_HOLDER_WAIT_SECONDS:g} s after the run "
                       f"that took it (pid {holder}) ended: a process that run started holds the lock; wait for it "
                       f"to exit (`fuser {directory / '.lock'}` names it), or give this run another hydra.run.dir")


def _has_exited(holder: str) -> bool:
    """Whether the process ``holder`` (a pid) is gone, a zombie, or exiting (a ``kill -9`` has landed)."""
    try:
        pid = int(holder)
        os.kill(pid, 0)
    except ValueError:
        return False                    # "unknown": the holder is between taking the lock and writing its pid
    except ProcessLookupError:
        return True
    except PermissionError:
        pass                            # another user's process: it exists
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X", "x") or int(fields[6]) & _PF_EXITING:
            return True
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if line.startswith(("SigPnd:", "ShdPnd:")))
        return any(int(mask, 16) & _SIGKILL_BIT for mask in status.values())   # sent, not yet acted on
    except (OSError, IndexError, ValueError):
        return False                    # no /proc (not Linux): alive, as far as we can tell


def _lock(handle, directory: Path) -> RunDirError | None:
    """Take ``handle``'s lock without blocking, or return the error naming its holder.  A holder that has
    exited or is exiting is waited for, up to :data:`DEAD_HOLDER_WAIT_SECONDS`: its lock goes a moment later."""
    deadline = time.monotonic() + DEAD_HOLDER_WAIT_SECONDS
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
        if not _has_exited(holder):
            return in_use(directory, holder)
        if time.monotonic() > deadline:
            return _still_held(directory, holder)
        time.sleep(0.02)


def held_by_another(directory: str | Path) -> RunDirError | None:
    """The error a run on ``directory`` would meet because another process holds its lock, else ``None``
    (a quick probe: the run still takes the lock itself, :class:`RunDirLock`)."""
    path = Path(directory) / ".lock"
    if not path.is_file():
        return None
    try:
        with open(path) as handle:
            err = _lock(handle, Path(directory))
            if err is not None:
                return err
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return None                     # unreadable: RunDirLock reports it with the run's own checks
    return None


class RunDirLock:
    """The run directory, owned by this process for the run: ``<dir>/.lock`` under ``fcntl.flock``.

    A second process on the same directory is refused at once, naming the holder's pid; the lock dies
    with its process (``kill -9`` included), so a stale lock never blocks a rerun: a holder that has
    exited or is exiting is waited for until the kernel has released its lock (:func:`_lock`).  With
    several JAX processes (multi-host) each takes its own ``.lock.<process index>``.
    """

    def __init__(self, directory: str | Path, process_index: int = 0):
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunDirError(f"run directory {self.directory} cannot be created ({err.strerror}); set "
                              "hydra.run.dir to a writable place") from None
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise RunDirError(f"run directory {self.directory} is not writable; set hydra.run.dir to a writable place")
        name = ".lock" if process_index == 0 else f".lock.{process_index}"
        self.path = self.directory / name
        self.handle = open(self.path, "a+")
        err = _lock(self.handle, self.directory)
        if err is not None:
            self.handle.close()
            raise err
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()

    def release(self) -> None:
        if not self.handle.closed:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
