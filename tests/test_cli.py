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
