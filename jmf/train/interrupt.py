"""Stopping a run with a signal, and what a rerun of the same command resumes from.

Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` in the main thread; :func:`watch` makes SIGTERM -- what
``timeout``, SLURM and ``kill`` send -- raise :class:`Terminated`, a ``KeyboardInterrupt``, so both unwind
a run the same way: the engine checkpoints where it can and ``jmf-train`` prints :func:`stopped`'s line
and exits with 128 + the signal's number (``jmf.errors``: ``INTERRUPTED`` 130, ``TERMINATED`` 143).

That line names the step a rerun resumes from: the newest checkpoint complete on disk once the run has
unwound (orbax renames a step's temporary folder to ``<step>`` when its write has finished).  It can be
older than the step reached -- a signal inside a step or during a save saves nothing -- and without one
the line says that a rerun starts over.  While an engine fit runs, its checkpoint folder holds
``attempt.json`` (removed when the fit ends; a signal records where it stopped), so a rerun that finds
it beside no complete checkpoint says that it starts over, and why (:func:`starting_over`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
from pathlib import Path

log = logging.getLogger("jmf")

ATTEMPT = "attempt.json"     # in a fit's checkpoint folder while the fit runs
_fit: dict = {"step": 0, "checkpointer": None, "owner": False}   # the engine fit a signal would stop
_previous: list = []        # SIGTERM's handler before watch()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C raises ``KeyboardInterrupt``."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def watch() -> None:
    """Start a run (a multirun's job): forget the last fit, and make SIGTERM stop the run as Ctrl-C does
    (only the main thread may set a handler; a launcher's worker thread keeps the default)."""
    _fit.update(step=0, checkpointer=None, owner=False)
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
        _previous.append(signal.SIG_DFL if previous is None else previous)   # None: set outside Python


def unwatch() -> None:
    """The run is over: SIGTERM's handler of before :func:`watch` again (between a sweep's jobs, nothing to save)."""
    if _previous and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _previous.pop())


def fit_started(checkpointer, step: int, owner: bool) -> None:
    """Called by the engine when a fit starts (resumed at ``step``), ``checkpointer`` None without checkpoints;
    the ``owner`` (JAX process 0) writes ``attempt.json``."""
    _fit.update(step=step, checkpointer=checkpointer, owner=owner)
    if checkpointer is not None and owner:
        _write(checkpointer.directory, {"pid": os.getpid(), "stopped": None})


def step_done(step: int) -> None:
    _fit["step"] = step


def last_step() -> int:
    """The global step the last engine fit of this process finished."""
    return _fit["step"]


def fit_finished() -> None:
    """Called by the engine when a fit has returned: nothing left to redo."""
    checkpointer = _fit["checkpointer"]
    if checkpointer is not None and _fit["owner"]:
        (checkpointer.directory / ATTEMPT).unlink(missing_ok=True)


def stopped(stop: BaseException, run_dir: str | Path) -> str:
    """The line ``jmf-train`` prints after ``stop``: the step reached, and the step a rerun resumes from (the
    newest complete checkpoint of the fit stopped) or that it starts over; recorded in ``attempt.json``.
    Before any engine fit has started, the checkpoints an earlier attempt left in ``run_dir`` decide."""
    how = "stopped by SIGTERM" if isinstance(stop, Terminated) else "interrupted"
    step, checkpointer = _fit["step"], _fit["checkpointer"]
    at = f"{how} at step {step}" if step else how
    if checkpointer is None:
        if not any(p.name.isdigit() for p in Path(run_dir).glob("**/checkpoints/latest/*")):
            return f"{at}, before any checkpoint was written; rerunning the same command starts over"
        return f"{at}, before training went on; rerun the same command to resume from its checkpoints in {run_dir}"
    with contextlib.suppress(BaseException):    # a save still finishing (a second Ctrl-C cuts it short)
        checkpointer.wait()
    done = checkpointer.finished_steps()
    if _fit["owner"]:
        _write(checkpointer.directory, {"pid": os.getpid(), "stopped": how, "step": step,
                                        "resume_from": done[0] if done else None})
    if not done:
        return f"{at}, before any checkpoint was complete; rerunning the same command starts over"
    return f"{at}; rerun the same command to resume from step {done[0]}"


def starting_over(directory: Path) -> None:
    """Say so when a fit finds no complete checkpoint in ``directory`` but an earlier attempt's ``attempt.json``."""
    try:
        info = json.loads((directory / ATTEMPT).read_text())
    except (OSError, ValueError):
        return
    how = (f"was {info['stopped']} at step {info.get('step', '?')}" if info.get("stopped")
           else "did not finish (killed?)")
    log.warning("the previous attempt of this fit %s before any checkpoint in %s was complete: starting over "
                "from step 0", how, directory)


def _write(directory: Path, info: dict) -> None:
    with contextlib.suppress(OSError):      # a read-only or vanished folder: the message still goes out
        (directory / ATTEMPT).write_text(json.dumps(info))
