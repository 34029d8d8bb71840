"""Whole runs through the CLI: exact resume after ``kill -9``, determinism, 1 vs 4 devices."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
# a tiny joint-model run: 1 pretrain + 3 joint epochs of 10 steps; checkpoints at epoch ends and at step 15
TINY = ["model=jmf", "model/encoder=bag", "data.n_users=240", "data.n_items=120", "data.n_categories=4",
        "data.interactions_per_user=12", "partition.k=2", "model.dim=8", "model.batch_size=16",
        "model.items_per_user=4", "model.epochs=3", "model.pretrain_epochs=1", "model.patience=0", "model.max_len=8",
        "model.negatives=8", "eval.ks=[10]", "trainer.checkpoint_every=15", "trainer.log_every=1"]


def _cmd(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "jmf", f"hydra.run.dir={run_dir}", *TINY, *extra]


CACHE: dict = {}


def _env(devices: int = 1) -> dict:
    """One (or ``devices`` forced) CPU devices; a persistent XLA cache shared by this module's runs
    (it returns the same executables, so results are unchanged; it saves ~10 s of compiling per run)."""
    flags = f"--xla_force_host_platform_device_count={devices}" if devices > 1 else ""
    return {**os.environ, "XLA_FLAGS": flags, "JAX_COMPILATION_CACHE_DIR": CACHE["dir"],
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def _run(run_dir: Path, *extra: str, devices: int = 1) -> subprocess.CompletedProcess:
    res = subprocess.run(_cmd(run_dir, *extra), cwd=run_dir.parent, env=_env(devices), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted run on one device."""
    CACHE["dir"] = str(tmp_path_factory.mktemp("xla_cache"))
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    _run(run_dir)
    return run_dir


def _metrics(run_dir: Path) -> dict:
    """metrics.json without its wall-clock keys (``*/seconds``, also in timing.json)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    timing = json.loads((run_dir / "timing.json").read_text())
    assert "train/seconds" in metrics and set(timing) <= set(metrics)
    return {k: v for k, v in metrics.items() if k not in timing}


def test_reference_run_records_itself(reference):
    info = json.loads((reference / "run_info.json").read_text())
    assert info["seeds"] == {"run": 0, "data": 0, "split": 0, "init": 0, "sampling": 0}
    assert info["data"]["preprocessed"]["rows"] > 0 and len(info["data"]["content_sha256"]) == 64
    assert "jax" in info["versions"] and info["devices"]["backend"] == "cpu"
    lines = [json.loads(x) for x in (reference / "metrics.jsonl").read_text().splitlines()]
    assert any("joint/valid" in r or "joint/ndcg@10" in r for r in lines)
    assert list((reference / "tb").iterdir())
    assert "train/seconds" in json.loads((reference / "metrics.json").read_text())


def test_killed_run_resumes_to_identical_metrics(reference, tmp_path):
    """kill -9 after the first mid-epoch checkpoint, rerun the same command: metrics.json is identical.

    This is also CI's determinism check: two processes, same config and seed, identical metrics."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(_cmd(run_dir), cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    latest = run_dir / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:   # the first mid-epoch checkpoint (step 15)
        if latest.exists() and any(p.name.isdigit() and int(p.name) % 10 for p in latest.iterdir()):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed: make TINY longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "metrics.json").exists()
    res = _run(run_dir)
    assert "resumed from step 15" in res.stdout + res.stderr
    assert _metrics(run_dir) == _metrics(reference)


@pytest.mark.slow  # the engine's test_corrupt_or_incompatible_checkpoint_is_a_clear_error runs in CI
def test_incompatible_checkpoint_is_an_error_not_a_fresh_start(reference, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    (run_dir / "metrics.json").unlink()
    res = subprocess.run(_cmd(run_dir, "model.dim=4"), cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode != 0 and "model.dim: 8 -> 4" in res.stderr and "trainer.resume=false" in res.stderr
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.slow  # CI: the resume test compares two processes of one config and seed exactly
def test_same_seed_same_metrics(reference, tmp_path):
    _run(tmp_path / "again")
    assert _metrics(tmp_path / "again") == _metrics(reference)


@pytest.mark.slow  # ~45 s of compiling for 4 devices; CI runs the in-process twin in test_jmf_engine.py
def test_4_devices_match_1(reference, tmp_path):
    """The same job on 4 forced CPU devices (XLA_FLAGS): the same metrics to float tolerance."""
    _run(tmp_path / "a", devices=4)
    a, ref = _metrics(tmp_path / "a"), _metrics(reference)
    assert a.keys() == ref.keys()
    for key in ref:
        np.testing.assert_allclose(a[key], ref[key], rtol=2e-3, atol=2e-3, err_msg=key)
    info = json.loads((tmp_path / "a" / "run_info.json").read_text())
    assert len(info["devices"]["devices"]) == 4
