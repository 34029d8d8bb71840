"""Orbax checkpoints of a training state pytree plus the loop's bookkeeping (JSON).

Layout under a run directory::

    checkpoints/latest/<step>/{state, meta}   # periodic; the newest ``keep`` are kept
    checkpoints/best/<step>/{state, meta}     # the best validation epoch so far (one kept)

``state`` is any pytree of ``jax.Array`` (typed PRNG keys included: they are stored as
their raw key data and re-wrapped on restore).  ``meta`` is a JSON dict: the loop's
:class:`~jmf.train.engine.Progress`, and ``compat``, the config that must match for the
checkpoint to be reused.  A checkpoint that cannot be read, or was written by a different
config, raises :class:`CheckpointError` naming the path and what differs; a run never
silently starts fresh over an existing checkpoint (``trainer.resume=false`` does that on
purpose).  A save interrupted by ``kill -9`` leaves only a temporary folder, which orbax
ignores and removes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import sys
from pathlib import Path

import jax
import orbax.checkpoint as ocp

from jmf.errors import NO_SPACE_TEXT, JmfError, bytes_text, disk_full_cause, disk_full_error

log = logging.getLogger("jmf")

FORMAT = 1  # bump when the meta layout changes incompatibly


class CheckpointError(JmfError, RuntimeError):
    """A checkpoint exists but cannot be used (corrupt, or written by a different config)."""


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _unwrap_keys(tree):
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _rewrap_keys(tree, template):
    return jax.tree.map(lambda x, t: jax.random.wrap_key_data(x, impl=jax.random.key_impl(t)) if _is_key(t) else x,
                        tree, template)


def _abstract(tree):
    def spec(x):
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        return x
    return jax.tree.map(spec, tree)


def _not_an_interrupt(record: logging.LogRecord) -> bool:
    """Drop orbax's "Save Finalize thread failed" traceback when the failure is a Ctrl-C landing while
    the main thread waits for the previous save: the run reports the interrupt itself, in one line."""
    return not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))


def _not_a_full_disk(record: logging.LogRecord) -> bool:
    """Drop orbax's tracebacks of a save that ran out of disk space (several per failed save, from its
    threads): :meth:`Checkpointer.save` / :meth:`Checkpointer.wait` raise one :class:`RunDirError` instead."""
    exc = record.exc_info[1] if record.exc_info else None
    return disk_full_cause(exc) is None and not any(text in record.getMessage() for text in NO_SPACE_TEXT)


def _quiet_closed_loop(hook):
    """``sys.unraisablehook`` less "Event loop is closed": after a failed save (a full disk) TensorStore's writes
    still in flight finish into orbax's closed event loop, each printing that error; the save's own is raised."""
    def unraisable(info) -> None:
        if not (isinstance(info.exc_value, RuntimeError) and str(info.exc_value) == "Event loop is closed"):
            hook(info)
    unraisable.jmf_closed_loop = True
    return unraisable


class Checkpointer:
    """Save and restore ``(state, meta)`` at integer steps; ``latest`` and ``best`` series (and ``best_<name>``
    for a phase's further :class:`~jmf.train.plan.Selection`).

    Args:
      directory: the ``checkpoints`` folder of a run.
      keep: how many periodic checkpoints to keep.
      async_save: write in a background thread (the device-to-host copy is still synchronous,
        so the next step may donate the state's buffers).
    """

    def __init__(self, directory: str | Path, keep: int = 2, async_save: bool = True):
        absl = logging.getLogger("absl")
        absl.setLevel(logging.WARNING)  # orbax logs every save/restore step at INFO
        absl.addFilter(_not_an_interrupt)  # a no-op when already there
        absl.addFilter(_not_a_full_disk)
        if not getattr(sys.unraisablehook, "jmf_closed_loop", False):
            sys.unraisablehook = _quiet_closed_loop(sys.unraisablehook)
        self.directory = Path(directory).absolute()
        self._managers, self._async = {}, async_save
        self._add("latest", max(1, keep))
        self._add("best", 1)
        # the best checkpoints of a phase's further selections (``best_<name>``), already on disk
        if self.directory.is_dir():
            for sub in sorted(self.directory.iterdir()):
                if sub.is_dir() and sub.name.startswith("best_"):
                    self._add(sub.name, 1)

    def _add(self, series: str, keep: int) -> ocp.CheckpointManager:
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True,
                                               enable_async_checkpointing=self._async)
        self._managers[series] = ocp.CheckpointManager(self.directory / series, options=options,
                                                       handler_registry=_registry(self.directory))
        return self._managers[series]

    def _manager(self, series: str) -> ocp.CheckpointManager:
        """The manager of ``series``: ``latest``, ``best``, or ``best_<name>`` (made on first use, keeping one)."""
        if series not in self._managers:
            if not series.startswith("best_"):
                raise CheckpointError(f"unknown checkpoint series {series!r} (latest, best, best_<name>)")
            self._add(series, 1)
        return self._managers[series]

    def latest_step(self, series: str = "latest") -> int | None:
        return self._manager(series).latest_step()

    def all_steps(self, series: str = "latest") -> list[int]:
        """The saved steps of ``series``, newest first."""
        return sorted(self._manager(series).all_steps(), reverse=True)

    def finished_steps(self, series: str = "latest") -> list[int]:
        """The steps of ``series`` whose write has finished, newest first, read from the disk: orbax writes a
        step into ``<step>.orbax-checkpoint-tmp-*`` and renames it to ``<step>`` once all of it is written."""
        folder = self.directory / series
        steps = [int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir()] if folder.is_dir() else []
        return sorted(steps, reverse=True)

    def discard_after(self, step: int) -> None:
        """Delete every checkpoint of either series newer than ``step`` (a fallback below them redoes their steps)."""
        for manager in self._managers.values():
            for later in [s for s in manager.all_steps() if s > step]:
                manager.delete(later)

    def path(self, step: int, series: str = "latest") -> Path:
        return self.directory / series / str(step)

    def save(self, step: int, state, meta: dict, series: str = "latest") -> None:
        meta = {"format": FORMAT, **meta}
        plain = _unwrap_keys(state)
        self._check_room(plain, self.path(step, series))
        args = ocp.args.Composite(state=ocp.args.StandardSave(plain), meta=ocp.args.JsonSave(meta))
        self._replace(step, series)
        try:
            self._manager(series).save(step, args=args, force=True)   # also reports the previous save's failure
        except Exception as err:
            self._raise_if_full(err)
            raise
        log.debug("checkpoint %s step %d", series, step)

    def _replace(self, step: int, series: str) -> None:
        """Make room for a second save of ``step``: a run stopped by a signal after an epoch's last step saves
        there, and its rerun saves the same step again at the epoch's end, with the epoch's bookkeeping done
        (orbax refuses a step that exists).  The previous checkpoint stays meanwhile (``keep_checkpoints``)."""
        manager = self._manager(series)
        if step in manager.all_steps():
            manager.wait_until_finished()
            manager.delete(step)

    def _check_room(self, plain, path: Path) -> None:
        """Refuse a save whose arrays cannot fit on the disk before orbax starts writing it: a save that runs
        out of space half-way leaves a temporary folder and a burst of tracebacks from orbax's threads."""
        needs = sum(int(getattr(leaf, "nbytes", 0)) for leaf in jax.tree.leaves(plain))
        if shutil.disk_usage(self.directory).free < needs:
            self._raise_if_full(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)), needs)

    def _raise_if_full(self, err: BaseException, needs: int = 0) -> None:
        """Raise a one-paragraph :class:`~jmf.errors.RunDirError` if ``err`` is a full disk, after removing the
        unfinished save's temporary folders (the checkpoints before it stay, and a rerun resumes from them)."""
        if disk_full_cause(err) is None:
            return
        for manager in self._managers.values():   # a save still in flight finishes (or fails) before the clean-up
            with contextlib.suppress(Exception):
                manager.wait_until_finished()
        if jax.process_index() == 0:
            for tmp in self.directory.glob("*/*.orbax-checkpoint-tmp*"):
                shutil.rmtree(tmp, ignore_errors=True)
        done = self.finished_steps()           # finished saves only (orbax's own list may hold the failed one)
        last = done[0] if done else None
        then = "then rerun the same command" + (f": it resumes from the last checkpoint, step {last}"
                                                if last is not None else "")
        if needs:
            then = f"{then} (a checkpoint needs about {bytes_text(needs)})"
        raise disk_full_error(err, self.directory, then) from err

    def read_meta(self, step: int, series: str = "latest") -> dict:
        try:
            meta = self._manager(series).restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        except Exception as err:
            raise CheckpointError(f"checkpoint {self.path(step, series)} is corrupt or unreadable "
                                  f"({type(err).__name__}: {err}); delete it or run with trainer.resume=false") from err
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise CheckpointError(f"checkpoint {self.path(step, series)}: meta format {meta.get('format')!r}, "
                                  f"this jmf writes {FORMAT}; run with trainer.resume=false to start fresh")
        return meta

    def restore(self, step: int, template, series: str = "latest"):
        """The state at ``step``, shaped, typed and sharded like ``template``."""
        plain = _unwrap_keys(template)
        try:
            out = self._manager(series).restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(plain))))["state"]
        except Exception as err:
            raise CheckpointError(
                f"checkpoint {self.path(step, series)} does not match this model's state or is corrupt "
                f"({type(err).__name__}: {str(err)[:500]}); delete it or run with trainer.resume=false") from err
        shapes = jax.tree.map(lambda a, b: a.shape == b.shape and a.dtype == b.dtype, out, plain)
        if not all(jax.tree.leaves(shapes)):
            raise CheckpointError(f"checkpoint {self.path(step, series)}: array shapes/dtypes differ from this "
                                  "model's state; run with trainer.resume=false to start fresh")
        return _rewrap_keys(out, template)

    def wait(self) -> None:
        try:
            for manager in self._managers.values():
                manager.wait_until_finished()
        except Exception as err:
            self._raise_if_full(err)
            raise

    def close(self) -> None:
        for manager in self._managers.values():
            manager.close()


GLOB_CHARACTERS = "[]*?"


def _registry(directory: Path) -> ocp.handlers.DefaultCheckpointHandlerRegistry | None:
    """The handlers of a run's checkpoints: orbax's defaults (OCDBT), except in a folder whose path holds
    glob characters (a sweep's job folder ``...,partition.cf_categories=[phone],...``).  There orbax
    finds OCDBT's per-process files with a glob over the path itself, finds none, skips the merge, and the
    checkpoint cannot be read back; without OCDBT (one zarr folder per array) no glob is made."""
    if not any(c in str(directory) for c in GLOB_CHARACTERS):
        return None
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    plain = ocp.StandardCheckpointHandler(use_ocdbt=False)
    registry.add("state", ocp.args.StandardSave, plain)
    registry.add("state", ocp.args.StandardRestore, plain)
    meta = ocp.JsonCheckpointHandler()
    registry.add("meta", ocp.args.JsonSave, meta)
    registry.add("meta", ocp.args.JsonRestore, meta)
    return registry
