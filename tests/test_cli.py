"""The Hydra app end to end: default run, real data, sweeps, and start-up errors that name the key."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["data.n_users=300", "data.n_items=200", "model.epochs=2"]


def jmf_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XLA_FLAGS": ""}  # one device: the CLI path, not the sharding tests
    return subprocess.run([sys.executable, "-m", "jmf", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_first_run_shows_the_mission_and_names_its_files(tmp_path):
    """``jmf-train`` with no arguments: JMF on the quickstart cold start, its lift over popularity, the run
    directory and its files named, and none of libtpu's or tensorboardX's noise."""
    env = {**os.environ, "XLA_FLAGS": ""}
    res = subprocess.run([sys.executable, "-m", "jmf"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout + res.stderr
    assert "experiment=quickstart" in out and "JMF" in out and "lift" in out
    line = [l for l in out.splitlines() if l.startswith("run directory ")][-1]
    run = Path(line.split("run directory ", 1)[1].split(":", 1)[0])
    assert "metrics.json" in line and "model/" in line and (run / "model" / "state.safetensors").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    for key in ("valid/ndcg@10", "test/ndcg@10", "test/recall@20", "test/hr@10", "rows/train", "rows/test"):
        assert key in metrics, key
    assert metrics["test/ndcg@10"] > 1.5 * metrics["baseline/test/ndcg@10"]      # the planted transfer shows
    assert metrics["train/seconds"] > 0 and "train/seconds" in json.loads((run / "timing.json").read_text())
    assert "libtpu" not in out and "is illegal" not in out and "Traceback" not in out


def test_ml100k_mf_reports_ratings(tmp_path):
    res = jmf_train(f"hydra.run.dir={tmp_path}/run", "data=ml100k", "model=mf", "model.epochs=2", "model.dim=16",
                    cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.8 < metrics["test/rmse"] < 1.2 and "test/mae" in metrics


def test_multirun_sweep(tmp_path):
    res = jmf_train("-m", f"hydra.sweep.dir={tmp_path}/sweep", "model=pop,svd", "seed=0,1", *SMALL[:2], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    runs = sorted((tmp_path / "sweep").rglob("metrics.json"))
    assert len(runs) == 4


def test_a_sweep_with_a_failed_job_exits_2_and_its_last_line_names_the_report(tmp_path):
    """A multirun exited 0 even when every job failed (issue 32).  Exit code 2 here: each failure is a user
    error (``model.dim=0``); the last line counts the failed jobs and names the report that lists them."""
    res = jmf_train("-m", f"hydra.sweep.dir={tmp_path}/sweep", "model=svd", "model.dim=0,4", *SMALL[:2], cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-3000:]
    report = tmp_path / "sweep" / "report.md"
    assert res.stderr.strip().splitlines()[-1] == (f'jmf-train: 1 of 2 jobs failed (listed under "Failed jobs" in '
                                                   f"{report}); exit code 2")
    assert "## Failed jobs" in report.read_text() and "model.dim: 0 must be >= 1" in report.read_text()


def _sweep_folder(root: Path, jobs: dict) -> Path:
    """A multirun folder: job name -> its ``failure.json`` (``None``: the job finished; ``"killed"``: neither file)."""
    for name, failure in jobs.items():
        (root / name / ".hydra").mkdir(parents=True)
        (root / name / ".hydra" / "overrides.yaml").write_text(f"- model.dim={name}\n")
        if failure is None:
            (root / name / "metrics.json").write_text(json.dumps({"valid/ndcg@10": 0.1 * int(name)}))
        elif failure != "killed":
            (root / name / "failure.json").write_text(json.dumps({"type": "E", "message": "m", **failure}))
    return root


USER, CRASH = {"user_error": True}, {"user_error": False}


@pytest.mark.parametrize("jobs, search, code", [
    ({"1": None, "2": None}, False, None),
    ({"1": None, "2": USER}, False, 2),
    ({"1": USER, "2": CRASH}, False, 1),
    ({"1": None, "2": "killed"}, False, 1),
    ({"1": None, "2": {}}, False, 1),              # a failure.json from before the field: not known to be the user's
    ({"1": None, "2": USER, "3": CRASH}, True, 1),  # an Optuna search goes on past failed trials, and says so
    ({"1": None, "2": USER}, True, 2),
    ({"1": USER, "2": USER}, True, 2),
])
def test_a_multiruns_exit_code_follows_its_failed_jobs(tmp_path, jobs, search, code):
    from omegaconf import OmegaConf

    from jmf.report import SweepSummary, sweep_verdict

    sweep = _sweep_folder(tmp_path / "sweep", jobs)
    sweeper = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper" if search else "BasicSweeper"
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)},
                                                                "sweeper": {"_target_": sweeper}}}))
    verdict = sweep_verdict()
    assert (None if verdict is None else verdict[0]) == code, verdict
    if verdict is not None:
        failed = sum(f is not None for f in jobs.values())
        noun = "trials" if search else "jobs"
        assert verdict[1] == (f'{failed} of {len(jobs)} {noun} failed (listed under "Failed jobs" in '
                              f"{sweep / 'report.md'}); exit code {code}")
    assert sweep_verdict() is None          # read once: a later run in the same process starts clean


def test_the_lock_probe_right_after_kill_9_of_a_run_waits_for_the_lock_to_go(tmp_path):
    """Right after ``kill -9`` of a run's process group its lock lives on for a moment (the kernel closes the
    files of a killed process when its last thread has gone): a rerun was refused then, naming the dead pid."""
    import signal
    import time

    from jmf.runlock import RunDirLock, held_by_another

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "jmf", f"hydra.run.dir={run}", "model=mf", "model.epochs=400",
                             *SMALL[:2], "trainer.progress=false"], env={**os.environ, "XLA_FLAGS": ""},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        start = time.time()
        while not (run / "checkpoints" / "latest").is_dir():      # locked, and training on its threads
            assert proc.poll() is None and time.time() - start < 240
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
    assert held_by_another(run) is None     # at once: the killed run is not even reaped yet
    RunDirLock(run).release()
    proc.wait()


def test_a_lock_outliving_its_recorded_holder_is_refused_after_the_wait(tmp_path, monkeypatch):
    """The pid in ``.lock`` has exited but another process (one the run started) holds the lock: waited for,
    then refused naming the lock; a live holder is refused at once, as before."""
    import time

    import jmf.runlock as runlock

    monkeypatch.setattr(runlock, "DEAD_HOLDER_WAIT_SECONDS", 0.5)
    lock = tmp_path / ".lock"
    lock.write_text("")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1]); "
                               "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)", str(lock)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        gone = subprocess.Popen(["true"])
        gone.wait()
        lock.write_text(str(gone.pid))
        start = time.time()
        err = runlock.held_by_another(tmp_path)
        assert 0.5 <= time.time() - start < 5 and f"(pid {gone.pid}) ended" in str(err), err
        assert "still locked" in str(err) and "fuser" in str(err)
        lock.write_text(str(holder.pid))
        start = time.time()
        err = runlock.held_by_another(tmp_path)
        assert time.time() - start < 0.5 and f"in use by another jmf run (pid {holder.pid})" in str(err), err
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("override, message", [
    ("trainer.optimized_metrc=x", "optimized_metrc"),
    ("split.test_ratio=abc", "test_ratio"),
    ("model=nonexistent", "nonexistent"),
    ("data=nonexistent", "nonexistent"),
    ("model.dimm=3", "dimm"),
    ("+model.dimm=3", "model.dimm"),
    ("model.dim=abc", "model.dim"),
    ("partition.k=8", "partition.k"),
    ("data.preprocess.kcor=3", "kcor"),
])
def test_bad_config_fails_at_startup_naming_the_key(tmp_path, override, message):
    res = jmf_train(f"hydra.run.dir={tmp_path}/run", override, cwd=tmp_path)
    assert res.returncode != 0
    assert message in res.stderr + res.stdout
    assert not (tmp_path / "run" / "metrics.json").exists()


EXTERNAL_HEAD = '''
import os
from pathlib import Path

import jax.numpy as jnp
from flax import nnx


class GatedHead(nnx.Module):
    """P̂_u = scale * tanh(W h_u) * sigmoid(V h_u): a mapping head written outside the jmf package."""

    def __init__(self, d_in, d_out, scale=1.0, *, rngs):
        self.w = nnx.Linear(d_in, d_out, rngs=rngs)
        self.v = nnx.Linear(d_in, d_out, rngs=rngs)
        self.scale = scale
        Path(os.environ["GATED_HEAD_MARKER"]).write_text(f"{d_in} {d_out} {scale}")

    def __call__(self, h):
        return self.scale * jnp.tanh(self.w(h)) * nnx.sigmoid(self.v(h))
'''


def test_external_head_through_target_writes_interest_and_top_n(tmp_path):
    """A new head is one module plus one config file under ``model/head``: here both live outside the
    package (the module on PYTHONPATH, the config on ``hydra.searchpath``)."""
    (tmp_path / "my_heads.py").write_text(EXTERNAL_HEAD)
    head_dir = tmp_path / "conf" / "model" / "head"
    head_dir.mkdir(parents=True)
    (head_dir / "gated.yaml").write_text("_target_: my_heads.GatedHead\n_partial_: true\nscale: 2.0\n")
    marker = tmp_path / "marker.txt"
    env = {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "GATED_HEAD_MARKER": str(marker)}
    run = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "jmf", f"hydra.run.dir={run}", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
         "model=jmf", "model/head=gated", "model.dim=8", "partition.k=4", "split=cold_start", *SMALL,
         "trainer.top_n=5", "trainer.interest=true"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert marker.read_text().split() == ["64", "8", "2.0"]       # built with h_u's and P̂_u's sizes
    assert "my_heads.GatedHead" in (run / "config.yaml").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 < metrics["test/ndcg@10"] <= 1.0
    # per-user interest vectors over the 4 CF-side categories, and top-5 lists
    import pandas as pd

    interest = pd.read_csv(run / "interest.csv", dtype={"user": str})
    assert interest.shape[1] == 1 + 4 and len(interest) > 0
    assert abs(interest.iloc[:, 1:].sum(axis=1) - 1.0).max() < 1e-4
    top = json.loads((run / "topn.json").read_text())
    assert set(interest["user"]) <= set(top) and all(len(v) == 5 for v in top.values())
