"""benchmarks/cold_start.py's tables carry per-user significance marks, beyond-accuracy columns and a slice table
(benchmarks/evidence.py), from the per-user values each run keeps under benchmarks/results/per_user/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_a_table_marks_models_below_the_best_per_user(tmp_path, monkeypatch):
    import cold_start
    import common
    import evidence

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(evidence, "PER_USER", tmp_path / "per_user")
    rng = np.random.default_rng(0)
    raw = []
    for seed in (0, 1):
        users = np.array([f"u{i}" for i in range(400)])
        base = rng.random(400)
        for model, shift, valid in (("jmf-cnn", 0.1, 0.30), ("mf (target-only)", 0.0, 0.20),
                                    ("pop", 0.1 + rng.normal(0, 1e-3, 400), 0.25)):
            values = base + shift
            file = evidence.PER_USER / "ciao-0.2" / f"{cold_start.MODELS[model]}_s{seed}.npz"
            file.parent.mkdir(parents=True, exist_ok=True)
            np.savez(file, **{"test/users": users, "test/ndcg@10": values.astype(np.float32)})
            raw.append({"task": "ciao-0.2", "model": model, "seed": seed, "test/rmse": 1.0, "test/mae": 0.8,
                        "test/ndcg@10": float(values.mean()), "test/recall@20": 0.1, "valid/ndcg@10": valid,
                        "test/coverage@10": 0.5, "test/gini@10": 0.4, "test/slice/o2_q1/ndcg@10": 0.2,
                        "test/slice/o2_q1/n": 100.0, "seconds": 1.0, "overrides": "",
                        **({"test_selected/ndcg@10": 0.33, "test/s0/ndcg@10": 0.30} if model == "pop" else {})})
    cold_start._write("t", ["ciao-0.2"], raw)
    text = (tmp_path / "t.md").read_text()
    assert "| mf (target-only) * |" in text and "| pop |" in text and "| jmf-cnn |" in text
    assert "Per-user paired tests, Holm-corrected" in text and "| mf (target-only) | jmf-cnn | 800 |" in text
    assert "coverage@10" in text and "gini@10" in text
    assert "NDCG@10 per slice (ciao-0.2" in text and "o2_q1" in text
    # the authors' selection on test beside jmf's on validation: +10 %
    assert "inflation ndcg@10" in text and "+10.0%" in text


def test_a_probe_with_overrides_keeps_its_per_user_values_beside_the_row_s(tmp_path, monkeypatch):
    import evidence

    monkeypatch.setattr(evidence, "PER_USER", tmp_path / "per_user")
    for overrides, value in (("", 0.25), ("model.dim=128", 0.5)):
        run = tmp_path / f"run{value}"
        run.mkdir()
        np.savez(run / "per_user.npz", **{"test/users": np.array(["a", "b"]), "test/ndcg@10": np.full(2, value)})
        evidence.keep_per_user(run, "amazon-phone", "jmf_items", 0, overrides=overrides)
    rows = {o: {"seed": 0, "overrides": o} for o in ("", "model.dim=128")}
    plain, probe = (evidence.per_user_files("amazon-phone", "jmf_items", [rows[o]]) for o in rows)
    assert plain[0][1].name == "jmf_items_s0.npz" and probe[0][1].name.startswith("jmf_items+")
    assert np.load(plain[0][1])["test/ndcg@10"][0] == 0.25 and np.load(probe[0][1])["test/ndcg@10"][0] == 0.5
    # a row whose seed kept nothing is left out, not an error
    assert evidence.per_user_files("amazon-phone", "jmf_items", [{"seed": 1, "overrides": ""}]) == []


def test_a_finished_table_run_drops_its_checkpoints_unless_asked_to_keep_them(tmp_path, monkeypatch):
    """A table of 23 rows x 3 seeds kept ~50 GB of resume points and filled the disk mid-queue: a finished run keeps
    its metrics, per-user values and saved model, and its checkpoints only with ``--keep-checkpoints``."""
    import cold_start
    import evidence

    monkeypatch.setattr(evidence, "PER_USER", tmp_path / "per_user")
    fast = ["model.epochs=1", "trainer.progress=false"]
    for keep in (False, True):
        out = tmp_path / f"runs_{keep}"
        metrics = cold_start.run_one("synthetic", "mf (target-only)", 0, fast, out, keep_checkpoints=keep)
        run = out / "synthetic" / cold_start.MODELS["mf (target-only)"] / "seed0"
        assert metrics and (run / "metrics.json").exists() and (run / "model").is_dir()
        assert (run / "checkpoints").is_dir() == keep
        assert (tmp_path / "per_user" / "synthetic").is_dir()


def test_resume_takes_a_finished_run_whose_checkpoints_are_gone(tmp_path, monkeypatch):
    """The results file is written after each model's seeds: a queue killed between two seeds resumes, and the seed
    that had finished (its checkpoints removed) is taken from its run folder, not trained again from scratch."""
    import cold_start
    import evidence
    import jmf.run

    monkeypatch.setattr(evidence, "PER_USER", tmp_path / "per_user")
    fast = ["model.epochs=1", "trainer.progress=false"]
    first = cold_start.run_one("synthetic", "mf (target-only)", 0, fast, tmp_path)
    run = tmp_path / "synthetic" / cold_start.MODELS["mf (target-only)"] / "seed0"
    assert not (run / "checkpoints").exists()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(jmf.run, "run", no_training)
    again = cold_start.run_one("synthetic", "mf (target-only)", 0, fast, tmp_path, resume=True)
    assert again["test/ndcg@10"] == first["test/ndcg@10"]
    with pytest.raises(AssertionError, match="trained again"):     # other overrides: a different run
        cold_start.run_one("synthetic", "mf (target-only)", 0, [*fast, "model.dim=8"], tmp_path, resume=True)
    # the same overrides, but the experiment they name was edited since the run (here: its composed config differs)
    composed = run / cold_start.COMPOSED
    text = composed.read_text()
    assert "epochs: 1\n" in text
    composed.write_text(text.replace("epochs: 1\n", "epochs: 2\n", 1))
    with pytest.raises(AssertionError, match="trained again"):
        cold_start.run_one("synthetic", "mf (target-only)", 0, fast, tmp_path, resume=True)
    composed.write_text(text)
    assert cold_start.run_one("synthetic", "mf (target-only)", 0, fast, tmp_path, resume=True) == again
    later = (run / "metrics.json").stat().st_mtime + 10
    os.utime(run / "config.yaml", (later, later))  # a run started over the folder after this one finished
    with pytest.raises(AssertionError, match="trained again"):
        cold_start.run_one("synthetic", "mf (target-only)", 0, fast, tmp_path, resume=True)


def test_a_benchmark_killed_between_the_seeds_of_a_model_keeps_its_finished_seeds(tmp_path, monkeypatch):
    """Each finished run is written at once: a benchmark killed after seed 0 of a model (its run folders lost with
    the machine) resumes from seed 1, not from seed 0 again."""
    import cold_start
    import common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(cold_start, "RESULTS", tmp_path, raising=False)
    calls = []

    def run_one(task, model, seed, *args, **kwargs):
        calls.append(seed)
        if seed == 1:
            raise KeyboardInterrupt        # the session's end: not a failed run, nothing after it runs
        return {"test/ndcg@10": 0.5, "test/recall@20": 0.1, "test/rmse": 1.0, "test/mae": 0.8, "bench/seconds": 1.0}

    monkeypatch.setattr(cold_start, "run_one", run_one)
    argv = ["cold_start.py", "--tasks", "synthetic", "--models", "pop", "--seeds", "0", "1", "--name", "t",
            "--resume", "--out", str(tmp_path / "runs")]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(cold_start, "data_dir", lambda: tmp_path)
    monkeypatch.setattr(cold_start.hugepages, "ensure", lambda: None)     # no re-execution inside pytest
    with pytest.raises(KeyboardInterrupt):
        cold_start.main()
    import json
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [(r["model"], r["seed"]) for r in rows] == [("pop", 0)]
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        cold_start.main()
    assert calls == [1]                    # seed 0 kept, not run again
    calls.clear()                          # merging finished runs into another file runs nothing and writes it
    monkeypatch.setattr(sys, "argv", [*argv[:6], "0", "--name", "merged", "--merge-from", "t"])
    cold_start.main()
    assert calls == [] and [r["seed"] for r in json.loads((tmp_path / "merged.json").read_text())["rows"]] == [0]
