"""What a run tells the outside: metrics (JSONL + TensorBoard), a progress bar, and its record.

* :class:`MetricLogger` appends one JSON object per logged point to ``metrics.jsonl`` and
  mirrors every scalar to TensorBoard event files under ``tb/`` (tensorboardX: a small,
  maintained writer that needs no TensorFlow).  On resume it drops the points logged after
  the checkpoint (``truncate_after``; TensorBoard's ``purge_step`` does the same for events),
  so a resumed run's log reads as if it had never stopped.
* :func:`progress` is a ``rich`` progress bar with examples/s and ETA; it draws only on a
  terminal (batch logs get one line per epoch from the engine instead).
* :func:`write_run_info` records what is needed to reproduce a run: resolved config, seeds,
  package versions, devices, and a fingerprint of the data (file hashes, content hash,
  counts before and after preprocessing).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import logging
import math
import platform
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np

from jmf.errors import disk_full_cause

log = logging.getLogger("jmf")

PACKAGES = ("jmf", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy", "hydra-core",
            "omegaconf", "optuna", "hydra-optuna-sweeper", "tensorboardX", "rich")


class MetricLogger:
    """Scalars to ``<dir>/metrics.jsonl`` and ``<dir>/tb`` (only on JAX process 0).

    Args:
      directory: run directory; ``None`` logs nowhere (library use).
      tensorboard: also write TensorBoard event files.
      resume_step: on resume, the checkpoint's step: later points are dropped from the JSONL
        and purged from TensorBoard, so they are not logged twice.
    """

    def __init__(self, directory: str | Path | None, tensorboard: bool = True, resume_step: int | None = None):
        import jax

        self.directory = None if directory is None or jax.process_index() != 0 else Path(directory)
        self._file = self._tb = None
        if self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "metrics.jsonl"
        if resume_step is None:
            path.unlink(missing_ok=True)
        else:
            _truncate_jsonl(path, resume_step)
        self._file = open(path, "a")
        if tensorboard:
            self._tb = _summary_writer()(str(self.directory / "tb"), purge_step=resume_step,
                                     flush_secs=10)

    def log(self, step: int, metrics: dict[str, float], **tags) -> None:
        """Log ``metrics`` (names like ``train/loss``) at global ``step``; ``tags`` go to the JSONL only."""
        if self._file is None:
            return
        record = {"step": int(step), "time": round(time.time(), 3), **tags,
                  **{k: _jsonable(v) for k, v in metrics.items()}}
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as err:      # name the file (a full disk's message says what was being written)
            raise OSError(err.errno, err.strerror, self._file.name) from err
        if self._tb is not None:
            for name, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self._tb.add_scalar(tensorboard_tag(name), float(value), int(step))

    def close(self) -> None:
        """Close both files; on a full disk the TensorBoard writer is shut down without its last flush (or its
        exit hook and thread would print the same error twice more) and the error is raised once."""
        file, tb, self._file, self._tb = self._file, self._tb, None, None
        try:
            if file is not None:
                file.close()
        finally:
            if tb is not None:
                try:
                    tb.close()
                except OSError as err:
                    if disk_full_cause(err) is None:
                        raise
                    for writer in tb.all_writers.values():     # tensorboardX's own close, less the flush
                        events = writer.event_writer
                        events._closed = True
                        events._worker.stop()
                        with contextlib.suppress(OSError):
                            events._ev_writer.close()
                    raise


def _summary_writer():
    """``tensorboardX.SummaryWriter``, imported without torch.

    tensorboardX tries ``import torch`` at import time only to accept torch tensors; with torch
    installed (the ``lm`` extra) that costs ~6 s per run here.  We log Python floats, so the
    import is blocked while tensorboardX loads (unless torch is already loaded) and then unblocked.
    """
    import sys

    if "torch" in sys.modules or "tensorboardX" in sys.modules:
        from tensorboardX import SummaryWriter
        return SummaryWriter
    sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]
    return SummaryWriter


def _jsonable(value):
    value = float(value) if isinstance(value, (np.floating, np.integer)) else value
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # JSON has no nan/inf; keep the fact readable
    return value


def _truncate_jsonl(path: Path, step: int) -> None:
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


@contextlib.contextmanager
def progress(total: int | None, description: str, examples_per_step: int = 1, enabled: bool = True) -> Iterator:
    """A rich progress bar (steps, examples/s, ETA); yields ``advance(n_steps=1)``.

    ``total=None`` draws an open-ended bar until ``advance.set_total(n)`` says how long the loop
    is (the evaluators call it once they know their user count), then the ETA shows.  Draws only
    when stderr is a terminal and ``enabled``; otherwise ``advance`` is a no-op.
    """
    from rich.console import Console

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        def noop(n: int = 1) -> None:
            return None

        noop.set_total = lambda n: None
        yield noop
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]} ex/s"), TimeRemainingColumn(), console=console, transient=True)
    with bar:
        task = bar.add_task(description, total=total, rate="—")
        start = time.perf_counter()
        done = [0]

        def advance(n: int = 1) -> None:
            done[0] += n
            rate = done[0] * examples_per_step / max(time.perf_counter() - start, 1e-9)
            bar.update(task, advance=n, rate=f"{rate:,.0f}")

        advance.set_total = lambda n: bar.update(task, total=n)
        yield advance


@contextlib.contextmanager
def status(message: str, enabled: bool = True) -> Iterator:
    """A spinner with ``message`` for a step with no countable progress (data loading), on a terminal."""
    from rich.console import Console

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield
        return
    with console.status(message):
        yield


# ---------------------------------------------------------------------- run record
def package_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def device_info() -> dict:
    import jax

    return {"backend": jax.default_backend(), "process_index": jax.process_index(),
            "process_count": jax.process_count(), "local_devices": [str(d) for d in jax.local_devices()],
            "devices": [str(d) for d in jax.devices()], "host": platform.node(),
            "cpu_threads": os.environ.get("PJRT_NPROC", "all")}


def file_fingerprint(paths: list[Path], max_bytes: int = 4 << 30) -> dict[str, str]:
    """``{path: sha256}`` for files, and for each folder ``{folder: sha256 of (name, size) of its files}``."""
    out: dict[str, str] = {}
    for path in paths:
        if path.is_file() and path.stat().st_size <= max_bytes:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            out[str(path)] = digest.hexdigest()
        elif path.is_dir():  # folders can be large: fingerprint the listing, the content hash covers the rest
            listing = sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*") if p.is_file())
            out[f"{path}/"] = "listing:" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    return out


def array_fingerprint(*arrays: np.ndarray | None) -> str:
    """sha256 over the bytes of ``arrays`` (``None`` skipped): the loaded table's content hash."""
    digest = hashlib.sha256()
    for arr in arrays:
        if arr is not None:
            digest.update(np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()


def write_run_info(directory: str | Path, **sections) -> dict:
    """Write ``run_info.json``: the given sections plus package versions and devices (process 0 only)."""
    import jax

    info = {"versions": package_versions(), "devices": device_info(), "argv": sys.argv, **sections}
    if jax.process_index() == 0:
        Path(directory, "run_info.json").write_text(json.dumps(info, indent=2, sort_keys=True, default=str))
    return info


def record_failure(directory: str | Path, err: BaseException, overrides: list[str] | None = None) -> Path:
    """Write ``failure.json`` (type, message, whether a user error, traceback, overrides) for a failed sweep job."""
    import traceback

    from jmf.errors import user_error

    path = Path(directory, "failure.json")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"type": type(err).__name__, "message": str(err), "overrides": overrides or [],
                                    "user_error": user_error(err) is not None,
                                    "traceback": "".join(traceback.format_exception(err))}, indent=2))
    except OSError as write_err:    # a full disk failed the job and fails this file too: the job's error stays
        log.warning("%s could not be written (%s); the job failed with: %s", path,
                    write_err.strerror or write_err, err)
    return path


def tensorboard_tag(name: str) -> str:
    """A metric name as a valid TensorBoard tag (``train/ndcg@10`` -> ``train/ndcg_at_10``): tensorboardX
    would otherwise rename it itself and log a warning for every point."""
    import re

    return re.sub(r"[^A-Za-z0-9_./-]", "_", name.replace("@", "_at_"))
