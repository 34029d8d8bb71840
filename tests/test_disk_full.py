"""A full disk anywhere in a run directory is one paragraph (issue 32): it names the path being written, the
free space and ``hydra.run.dir``; the run lock is released, no unfinished checkpoint is left behind, and the
last intact checkpoint resumes.  No real full disk is needed: the writes are made to fail as a full disk
makes them fail (orbax wraps the ``OSError`` into a ``ValueError`` "... No space left on device")."""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
from collections import namedtuple
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from jmf.config import CONF_DIR
from jmf.errors import RunDirError, disk_full_error
from jmf.experiments import register_configs
from jmf.runlock import RunDirLock, held_by_another

TINY = ["data.n_users=200", "data.n_items=100", "data.n_categories=4", "data.interactions_per_user=12",
        "trainer.progress=false", "trainer.devices=1"]
ORBAX_FULL = ('RESOURCE_EXHAUSTED: Error writing "params.P/0.0" in OCDBT database at local file "{tmp}/ocdbt.process_0/": '
              'Failed writing: "{tmp}/ocdbt.process_0/d/5d17c05c": Failed to write 69596 bytes to file 20: No space '
              "left on device [os_error_code='28']")


def _cfg(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[*overrides, *TINY])


def _unlocked(run_dir: Path) -> bool:
    """The run's lock was released: another run could take the directory at once."""
    if held_by_another(run_dir) is not None:
        return False
    RunDirLock(run_dir).release()
    return True


def test_the_message_names_the_checkpoint_and_the_free_space(tmp_path):
    tmp = tmp_path / "checkpoints" / "latest" / "4.orbax-checkpoint-tmp" / "state.orbax-checkpoint-tmp"
    err = disk_full_error(ValueError(ORBAX_FULL.format(tmp=tmp)), tmp_path, "then rerun")
    free = shutil.disk_usage(tmp_path)
    assert isinstance(err, RunDirError)
    assert re.fullmatch(rf"no space left on device writing {tmp_path}/checkpoints/latest/4: [\d.]+ \w+ free of "
                        r"[\d.]+ \w+ on its file system; free some space there or set hydra\.run\.dir to a disk with "
                        r"room, then rerun", str(err)), str(err)
    assert free.total and disk_full_error(ValueError("some other failure"), tmp_path) is None
    quota = disk_full_error(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(tmp_path / "x")), tmp_path)
    assert str(quota).startswith(f"the disk quota is exhausted writing {tmp_path}/x")


def test_a_checkpoint_that_cannot_fit_is_refused_before_orbax_writes(tmp_path, monkeypatch):
    import jax.numpy as jnp

    from jmf.train.checkpoint import Checkpointer

    ck = Checkpointer(tmp_path / "checkpoints", async_save=False)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**20, 10 * 2**20 - 1000, 1000))
    with pytest.raises(RunDirError, match=rf"no space left on device writing {tmp_path}/checkpoints/latest/1: 1000 "
                                          r"bytes free of 10\.0 MiB .*hydra\.run\.dir.*needs about 39\.1 KiB"):
        ck.save(1, {"w": jnp.zeros(10_000)}, {})
    assert not list((tmp_path / "checkpoints").rglob("1*"))      # nothing written, not even a temporary folder
    ck.close()


def test_a_full_disk_at_a_checkpoint_keeps_the_last_one_to_resume(tmp_path, monkeypatch, caplog):
    """The second periodic checkpoint hits a full disk, as orbax reports it: one RunDirError naming that
    checkpoint and the one a rerun resumes from; no temporary folder; the lock released; the rerun resumes."""
    import orbax.checkpoint as ocp

    from jmf.run import run

    real, latest = ocp.CheckpointManager.save, []

    def save(self, step, *args, **kwargs):
        if Path(self.directory).name == "latest":
            latest.append(step)
            if len(latest) == 2:
                tmp = Path(self.directory) / f"{step}.orbax-checkpoint-tmp" / "state.orbax-checkpoint-tmp"
                tmp.mkdir(parents=True)          # what a save cut off by a full disk leaves
                raise ValueError(ORBAX_FULL.format(tmp=tmp))
        return real(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    cfg = _cfg(["model=mf", "model.epochs=4", "model.dim=8"])
    out = tmp_path / "run"
    with pytest.raises(RunDirError) as failed:
        run(cfg, out)
    assert re.search(rf"no space left on device writing {out}/checkpoints/latest/{latest[1]}: .* free of .*"
                     rf"hydra\.run\.dir.*resumes from the last checkpoint, step {latest[0]}$", str(failed.value))
    assert not list(out.rglob("*orbax-checkpoint-tmp*")) and _unlocked(out)
    monkeypatch.undo()
    with caplog.at_level("INFO", logger="jmf"):
        metrics = run(cfg, out)
    assert f"resumed from step {latest[0]}" in caplog.text and "test/ndcg@10" in metrics


def test_a_full_disk_writing_the_model_names_it(tmp_path, monkeypatch):
    import jmf.outputs
    from jmf.run import run

    def save_model(out, *args):
        (out / "model").mkdir()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))      # a failed write names no file

    monkeypatch.setattr(jmf.outputs, "save_model", save_model)
    out = tmp_path / "run"
    with pytest.raises(RunDirError, match=rf"^no space left on device writing {out}/model: .* hydra\.run\.dir"):
        run(_cfg(["model=pop", "trainer.checkpoint=false"]), out)
    assert _unlocked(out)


def test_a_full_quota_writing_the_metrics_is_one_paragraph(tmp_path, monkeypatch):
    from jmf.run import run
    from jmf.train.observe import MetricLogger

    def log(self, *args, **kwargs):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(MetricLogger, "log", log)
    out = tmp_path / "run"
    with pytest.raises(RunDirError, match=rf"^the disk quota is exhausted writing {out}: .*hydra\.run\.dir.*rerun"):
        run(_cfg(["model=mf", "model.epochs=1", "model.dim=8", "trainer.checkpoint=false"]), out)
    assert _unlocked(out)


def test_tensorboard_on_a_full_disk_is_closed_once(tmp_path):
    """TensorBoard's last flush fails: the error is raised once, and the writer is marked closed so its exit hook
    and thread do not print it again."""
    from jmf.train.observe import MetricLogger

    logger = MetricLogger(tmp_path, tensorboard=True)
    logger.log(1, {"train/loss": 1.0})
    writer = next(iter(logger._tb.all_writers.values())).event_writer

    def flush():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    writer._ev_writer.flush = flush
    with pytest.raises(OSError, match="No space left on device"):
        logger.close()
    assert writer._closed and writer.close() is None     # tensorboardX's exit hook: now a no-op


def test_orbax_and_log_file_noise_of_a_full_disk_is_dropped(tmp_path, caplog, capsys):
    """What used to print ~2,000 lines: orbax's tracebacks of the failed save (absl), TensorStore's writes finishing
    into orbax's closed event loop (``sys.unraisablehook``), and Hydra's log file failing on every record."""
    import logging
    import types

    from absl import logging as absl_logging

    from jmf.run import _quiet_full_log_files
    from jmf.train.checkpoint import Checkpointer, _quiet_closed_loop

    Checkpointer(tmp_path / "checkpoints")
    for err in (ValueError(ORBAX_FULL.format(tmp=tmp_path)), ValueError("another failure")):
        try:
            raise err
        except ValueError:
            absl_logging.exception("[process=0] _SignalingThread.run() raised an exception: %s", err)
    failed = [r for r in caplog.records if "_SignalingThread" in r.getMessage()]
    assert [str(r.exc_info[1]) for r in failed] == ["another failure"]
    reported = []
    hook = _quiet_closed_loop(lambda info: reported.append(str(info.exc_value)))
    for message in ("Event loop is closed", "something else"):
        hook(types.SimpleNamespace(exc_type=RuntimeError, exc_value=RuntimeError(message), exc_traceback=None))
    assert reported == ["something else"] and sys.unraisablehook.jmf_closed_loop      # installed by Checkpointer

    class FullDisk:
        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self):
            pass

    handler = logging.FileHandler(tmp_path / "job.log")
    handler.stream.close()
    handler.stream = FullDisk()
    logging.getLogger().addHandler(handler)
    try:
        _quiet_full_log_files()
        for _ in range(3):
            logging.getLogger("jmf").warning("a record for a full disk")
    finally:
        logging.getLogger().removeHandler(handler)
    assert "Logging error" not in capsys.readouterr().err and handler.level > logging.CRITICAL


def test_a_full_disk_writing_metrics_names_the_file_and_a_failed_job_still_reports(tmp_path, monkeypatch, caplog):
    """The JSONL write names ``metrics.jsonl`` (what a full disk's paragraph shows); ``failure.json`` that cannot
    be written on the same full disk leaves a warning, not a second error hiding the job's own."""
    from jmf.train.observe import MetricLogger, record_failure

    logger = MetricLogger(tmp_path, tensorboard=False)

    class Full:
        name = str(tmp_path / "metrics.jsonl")

        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(logger, "_file", Full())
    with pytest.raises(OSError) as info:
        logger.log(1, {"train/loss": 1.0})
    assert info.value.filename == str(tmp_path / "metrics.jsonl")
    assert str(disk_full_error(info.value, tmp_path)).startswith(f"no space left on device writing {tmp_path}/metrics.jsonl")
    monkeypatch.setattr(Path, "write_text", lambda self, text: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
    record_failure(tmp_path / "job", RuntimeError("the job's own error"))
    assert "failure.json could not be written" in caplog.text and "the job's own error" in caplog.text
