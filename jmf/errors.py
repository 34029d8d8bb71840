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

import os

USER_ERROR = 2          # exit code of jmf-train / jmf-recommend for a user error (documented in README)
INTERRUPTED = 130       # exit code after Ctrl-C (128 + SIGINT), as shells report it


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


def paragraph(err: BaseException, program: str) -> str:
    """One paragraph: ``<program>: <message>`` and the hint to see the traceback."""
    message = " ".join(str(err).split())
    return (f"{program}: error: {message}\n(exit code {USER_ERROR}: a problem with the input, not a crash; "
            "set JMF_TRACEBACK=1 to see where it was raised)")
