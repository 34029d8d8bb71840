"""Stopping ``jmf-train`` with a signal (jmf/train/interrupt.py, issue 32): SIGTERM is handled as Ctrl-C,
and the line printed names the step a rerun of the same command really resumes from -- the newest
checkpoint complete on disk -- or says that it starts over, which the rerun says too."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from jmf.errors import INTERRUPTED, TERMINATED

# MF trains one engine step per epoch and checkpoints the first epoch, then at most every 10 s, and the last
SLOW = ["model=mf", "model.epochs=250", "data.n_users=200", "data.n_items=100", "trainer.progress=false"]
SHORT = ["model=mf", "model.epochs=4", "data.n_users=200", "data.n_items=100", "trainer.progress=false"]

# ``jmf-train`` that sends itself SIGINT inside its n-th checkpoint save (n: $SIGINT_AT_SAVE), before it writes
SIGINT_IN_SAVE = """
import os, signal, time
import jmf.train.checkpoint as checkpoint
n, calls, save = int(os.environ["SIGINT_AT_SAVE"]), [0], checkpoint.Checkpointer.save
def interrupted_save(self, *args, **kwargs):
    calls[0] += 1
    if calls[0] == n:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(60)       # the KeyboardInterrupt lands here
    return save(self, *args, **kwargs)
checkpoint.Checkpointer.save = interrupted_save
from jmf.__main__ import cli
cli()
"""


def _env() -> dict:
    return {**os.environ, "XLA_FLAGS": ""}


def _default_sigint() -> None:
    # a shell without job control starts background commands with SIGINT ignored, and children inherit it
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _jmf(run_dir: Path, *args: str, sigint_at_save: int | None = None) -> subprocess.CompletedProcess:
    """``jmf-train hydra.run.dir=<run_dir> *args``; with ``sigint_at_save``, Ctrl-C'd in that save."""
    prefix = ["-m", "jmf"] if sigint_at_save is None else ["-c", SIGINT_IN_SAVE]
    env = {**_env(), "SIGINT_AT_SAVE": str(sigint_at_save)}
    res = subprocess.run([sys.executable, *prefix, f"hydra.run.dir={run_dir}", *args], env=env, capture_output=True,
                         text=True, timeout=300, preexec_fn=_default_sigint)
    res.out = res.stdout + res.stderr
    return res


def _finished_checkpoint(run_dir: Path) -> bool:
    latest = run_dir / "checkpoints" / "latest"
    return latest.is_dir() and any(p.name.isdigit() for p in latest.iterdir())


def test_sigterm_checkpoints_says_where_a_rerun_resumes_and_exits_143(tmp_path):
    """What ``timeout`` and SLURM send: before, the run died silently (-15) with no checkpoint of its own."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "jmf", f"hydra.run.dir={run}", *SLOW], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    start = time.time()
    while not _finished_checkpoint(run):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() - start < 240, "no checkpoint was written"
        time.sleep(0.05)
    time.sleep(0.2)         # some epochs after the first checkpoint (~50 ms each under the tests' unoptimised XLA)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == TERMINATED, out[-3000:]
    lines = [line for line in out.splitlines() if line.startswith("jmf-train:")]
    assert len(lines) == 1 and "Traceback" not in out, out[-3000:]
    said = re.fullmatch(r"jmf-train: stopped by SIGTERM at step (\d+); rerun the same command to resume from "
                        rf"step (\d+) \(run directory {re.escape(str(run))}\)", lines[0])
    assert said and 1 <= int(said[2]) <= int(said[1]), lines[0]
    rerun = _jmf(run, *SLOW)
    assert rerun.returncode == 0, rerun.out[-3000:]
    assert f"resumed from step {said[2]} " in rerun.out


def test_ctrl_c_in_the_first_save_says_that_the_rerun_starts_over(tmp_path):
    """Nothing was saved: the line says so (it said "rerun to resume"), and so does the rerun, which starts over."""
    run = tmp_path / "run"
    first = _jmf(run, *SHORT, sigint_at_save=1)
    assert first.returncode == INTERRUPTED, first.out[-3000:]
    assert ("jmf-train: interrupted at step 1, before any checkpoint was complete; rerunning the same command "
            "starts over") in first.out and "Traceback" not in first.out
    rerun = _jmf(run, *SHORT)
    assert rerun.returncode == 0, rerun.out[-3000:]
    assert re.search(r"previous attempt of this fit was interrupted at step 1 before any checkpoint in \S+ was "
                     r"complete: starting over from step 0", rerun.out), rerun.out[-3000:]
    assert "resumed from" not in rerun.out


def test_ctrl_c_in_a_later_save_names_the_older_checkpoint_the_rerun_resumes_from(tmp_path):
    """Interrupted in the save of step 4, the last epoch's: step 1's checkpoint is the newest complete one."""
    run = tmp_path / "run"
    first = _jmf(run, *SHORT, sigint_at_save=2)
    assert first.returncode == INTERRUPTED, first.out[-3000:]
    assert "jmf-train: interrupted at step 4; rerun the same command to resume from step 1 " in first.out
    rerun = _jmf(run, *SHORT)
    assert rerun.returncode == 0, rerun.out[-3000:]
    assert "resumed from step 1 " in rerun.out and "starting over" not in rerun.out


def test_a_step_saved_again_replaces_its_first_checkpoint(tmp_path):
    """A signal after an epoch's last step checkpoints there; the rerun resumes there and saves the same step
    again at the epoch's end, with the epoch's bookkeeping done (orbax refused that: StepAlreadyExistsError)."""
    import jax.numpy as jnp

    from jmf.train.checkpoint import Checkpointer

    ck = Checkpointer(tmp_path / "checkpoints", keep=2, async_save=False)
    ck.save(1, {"w": jnp.zeros(3)}, {"progress": {"epoch": 0}})
    ck.save(5, {"w": jnp.ones(3)}, {"progress": {"epoch": 4, "step_in_epoch": 1}})    # the signal's
    ck.save(5, {"w": jnp.full(3, 2.0)}, {"progress": {"epoch": 5, "step_in_epoch": 0}})  # the rerun's, at the end
    assert ck.finished_steps() == [5, 1]
    assert ck.read_meta(5)["progress"]["epoch"] == 5
    assert float(ck.restore(5, {"w": jnp.zeros(3)})["w"][0]) == 2.0
