"""The project's error types for what a *user* can get wrong, and how the command line reports them.

Every error a user can cause -- a config key or value, a data file or row, a size that does not fit, a
checkpoint or run directory that cannot be used -- is a :class:`JmfError` whose message names the
culprit (the config key, the file and line, the path) and the remedy.  ``jmf-train`` and
``jmf-recommend`` print such an error as one paragraph on stderr and exit with :data:`USER_ERROR`; the
traceback is shown only with ``JMF_TRACEBACK=1`` (or Hydra's ``HYDRA_FULL_ERROR=1``).  Anything else is
a bug in jmf and is reported with its traceback.

The types also subclass the built-in exception a caller would expect (``ValueError``,
``FileNotFoundError``, ``RuntimeError``), so library code may catch either.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path

USER_ERROR = 2          # exit code of jmf-train / jmf-recommend for a user error (documented in README)
INTERRUPTED = 130       # exit code after Ctrl-C (128 + SIGINT), as shells report it
TERMINATED = 143        # exit code after SIGTERM (128 + SIGTERM: timeout, SLURM, kill), handled as Ctrl-C


class JmfError(Exception):
    """A user error: the message names what is wrong and what to do."""


class ConfigError(JmfError, ValueError):
    """A config key or value that cannot be used (the message names the key)."""


class DataError(JmfError, ValueError):
    """Data that cannot be used: a file, a field, a row (the message names them)."""


class DataFileError(JmfError, FileNotFoundError):
    """A data file or folder that does not exist or is not a file."""


class RunDirError(JmfError, RuntimeError):
    """A run directory that cannot be used: not writable, or in use by another process."""


class ArtifactError(JmfError, ValueError):
    """A run directory whose model cannot be loaded (missing, corrupt, or written by another version/config)."""


def show_traceback() -> bool:
    """Whether a user error is printed with its traceback (``JMF_TRACEBACK=1`` or ``HYDRA_FULL_ERROR=1``)."""
    return any(os.environ.get(k, "") not in ("", "0") for k in ("JMF_TRACEBACK", "HYDRA_FULL_ERROR"))


def user_error(err: BaseException) -> JmfError | None:
    """The user error behind ``err`` (Hydra wraps exceptions raised while instantiating), or None."""
    from omegaconf.errors import OmegaConfBaseException

    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, JmfError):
            return err
        if isinstance(err, OmegaConfBaseException):     # a bad interpolation or key in the composed config
            return ConfigError(f"config: {' '.join(str(err).split())}")
        err = err.__cause__ or err.__context__
        seen += 1
    return None


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
NO_SPACE_TEXT = ("No space left on device", "Disk quota exceeded")   # strerror, inside orbax's / TensorStore's errors


def disk_full_cause(err: BaseException | None) -> BaseException | None:
    """The exception in ``err``'s chain that says a disk (or quota) is full: an ``OSError`` with errno
    ENOSPC / EDQUOT, or an error wrapping one by message (orbax and TensorStore raise ``ValueError``
    "RESOURCE_EXHAUSTED: ... No space left on device [os_error_code='28']"); ``None`` if there is none."""
    seen = 0
    while err is not None and seen < 20:
        if (isinstance(err, OSError) and err.errno in NO_SPACE) or any(t in str(err) for t in NO_SPACE_TEXT):
            return err
        err = err.__cause__ or err.__context__
        seen += 1
    return None


def disk_full_error(err: BaseException, directory: str | Path, then: str = "") -> RunDirError | None:
    """The :class:`RunDirError` for a full disk behind ``err`` (see :func:`disk_full_cause`), naming the path
    being written (else ``directory``), the space left on its file system and ``hydra.run.dir``; ``then``
    ends the message (what a rerun does).  ``None`` when ``err`` is not a full disk."""
    cause = disk_full_cause(err)
    if cause is None:
        return None
    path = _written_path(cause) or Path(directory)
    try:
        usage = shutil.disk_usage(next((p for p in (path, *path.parents) if p.exists()), Path("/")))
        room = f"{bytes_text(usage.free)} free of {bytes_text(usage.total)} on its file system"
    except OSError:
        room = "its file system cannot be inspected"
    quota = (isinstance(cause, OSError) and cause.errno == errno.EDQUOT) or NO_SPACE_TEXT[1] in str(cause)
    what = "the disk quota is exhausted" if quota else "no space left on device"
    return RunDirError(f"{what} writing {path}: {room}; free some space there or set hydra.run.dir to a disk with "
                       "room" + (f", {then}" if then else ""))


def _written_path(cause: BaseException) -> Path | None:
    """The file an error was writing: ``OSError.filename``, or the last quoted absolute path of its message;
    a path inside an unfinished orbax checkpoint (``<step>.orbax-checkpoint-tmp/...``) is cut to the checkpoint."""
    name = getattr(cause, "filename", None)
    if not name:
        quoted = re.findall(r"""["'](/[^"']+)["']""", str(cause))
        name = quoted[-1] if quoted else None
    if not name:
        return None
    parts = Path(str(name)).parts
    for at, part in enumerate(parts):
        if part.endswith(".orbax-checkpoint-tmp"):
            return Path(*parts[:at], part.removesuffix(".orbax-checkpoint-tmp"))
    return Path(*parts)


def bytes_text(n: float) -> str:
    """``n`` bytes, readable: 812 bytes, 3.4 MiB."""
    if n < 1024:
        return f"{n:.0f} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} TiB"


def paragraph(err: BaseException, program: str) -> str:
    """One paragraph: ``<program>: <message>`` and the hint to see the traceback."""
    message = " ".join(str(err).split())
    return (f"{program}: error: {message}\n(exit code {USER_ERROR}: a problem with the input, not a crash; "
            "set JMF_TRACEBACK=1 to see where it was raised)")
