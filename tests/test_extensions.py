"""Extending jmf from outside the package, with config only (README, "Extending jmf").

A researcher's own module (``tests/extensions/myext``, on ``PYTHONPATH``) and a config folder
(``tests/extensions/conf``, added with ``hydra.searchpath``) add (a) a mapping head, (b) a score term
and (c) an engine-trained model; each runs through ``jmf-train`` with no edit under ``jmf/``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path


HERE = Path(__file__).resolve().parent / "extensions"
SMALL = ["data.n_users=300", "data.n_items=160", "data.n_categories=4", "data.interactions_per_user=16",
         "partition.k=2", "split=cold_start", "trainer.progress=false"]


def jmf_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XLA_FLAGS": "", "PYTHONPATH": str(HERE)}
    return subprocess.run([sys.executable, "-m", "jmf", f"hydra.searchpath=[file://{HERE / 'conf'}]", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_a_new_head_and_a_new_score_term_from_outside(tmp_path):
    run = tmp_path / "run"
    res = jmf_train(f"hydra.run.dir={run}", *SMALL, "model=jmf", "model/encoder=bag", "model/head=gated",
                    "model/terms=[popularity]", "model.epochs=2", "model.dim=8", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    config = (run / "config.yaml").read_text()
    assert "myext.gated_head.GatedHead" in config and "myext.popularity_term.PopularityTerm" in config
    metrics = json.loads((run / "metrics.json").read_text())
    # the term's weight list [0, 1] was scored on validation and one was kept
    assert metrics["train/popularity_score"] in (0.0, 1.0)
    scored = [metrics[f"train/valid_ndcg@10@popularity_score={w}"] for w in (0, 1)]
    assert metrics["train/popularity_score"] == float(scored.index(max(scored)))
    assert 0 < metrics["test/ndcg@10"] <= 1


def test_a_new_engine_model_from_outside_trains_checkpoints_and_resumes(tmp_path):
    run = tmp_path / "run"
    args = (f"hydra.run.dir={run}", *SMALL, "model=bpr_mf")
    first = jmf_train(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert (run / "checkpoints" / "best").is_dir() and metrics["train/epochs"] >= 1
    assert 0 < metrics["valid/ndcg@10"] <= 1
    again = jmf_train(*args, cwd=tmp_path)            # the same command: the engine resumes, nothing retrains
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from step" in again.stderr + again.stdout
    resumed = json.loads((run / "metrics.json").read_text())
    assert {k: v for k, v in resumed.items() if "seconds" not in k} == {k: v for k, v in metrics.items()
                                                                        if "seconds" not in k}


def test_no_extension_lives_in_the_package():
    root = Path(__file__).resolve().parent.parent / "jmf"
    text = " ".join(p.read_text() for p in root.rglob("*.py"))
    assert "myext" not in text and "GatedHead" not in text and "BPRMF" not in text
