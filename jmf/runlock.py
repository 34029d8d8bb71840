"""The run directory's lock (standard library only, so ``jmf-train`` can refuse a held directory before
it loads JAX and Hydra: :func:`held_by_another`)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from jmf.errors import RunDirError


def in_use(directory: Path, holder: str) -> RunDirError:
    return RunDirError(f"run directory {directory} is in use by another jmf run (pid {holder}); wait for it to "
                       "finish, or give this run another hydra.run.dir")


def held_by_another(directory: str | Path) -> RunDirError | None:
    """The error a run on ``directory`` would meet because another process holds its lock, else ``None``
    (a quick probe: the run still takes the lock itself, :class:`RunDirLock`)."""
    path = Path(directory) / ".lock"
    if not path.is_file():
        return None
    try:
        with open(path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return in_use(Path(directory), handle.read().strip() or "unknown")
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return None                     # unreadable: RunDirLock reports it with the run's own checks
    return None


class RunDirLock:
    """The run directory, owned by this process for the run: ``<dir>/.lock`` under ``fcntl.flock``.

    A second process on the same directory is refused at once, naming the holder's pid; the lock dies
    with its process (``kill -9`` included), so a stale lock never blocks a rerun.  With several JAX
    processes (multi-host) each takes its own ``.lock.<process index>``.
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
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "unknown"
            self.handle.close()
            raise in_use(self.directory, holder)
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
