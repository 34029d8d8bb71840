"""``jmf_best``: each task family's best JMF variant, chosen on validation only (benchmarks/jmf_best.py), and the
rows it writes compose for every experiment of the family."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _rows(task: str) -> list[dict]:
    """Validation prefers jmf-items (0.30 > 0.25); test would prefer jmf-cnn -- the choice must not read it."""
    rows = []
    for seed in (0, 1, 2):
        rows += [{"task": task, "model": "jmf-cnn", "seed": seed, "valid/ndcg@10": 0.25, "test/ndcg@10": 0.9},
                 {"task": task, "model": "jmf-items", "seed": seed, "valid/ndcg@10": 0.30, "test/ndcg@10": 0.1},
                 {"task": task, "model": "cooc", "seed": seed, "valid/ndcg@10": 0.99, "test/ndcg@10": 0.99},
                 {"task": "other", "model": "jmf-graph", "seed": seed, "valid/ndcg@10": 0.99}]
    rows.append({"task": task, "model": "jmf-graph", "seed": 0, "valid/ndcg@10": 0.5})   # one seed only
    return rows


def test_jmf_best_is_chosen_on_validation_and_written_for_the_family(tmp_path, monkeypatch):
    import jmf_best

    family, (task, everything) = "amazon", jmf_best.FAMILIES["amazon"]
    own = jmf_best.FAMILIES["amazon-bitgcf"][1]          # BiTGCF's pair is chosen on its own task
    experiments = [e for e in everything if e not in own]
    assert own and set(own) <= set(everything) and experiments
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "t.json").write_text(json.dumps({"rows": _rows(task)}))
    monkeypatch.setattr(jmf_best, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(jmf_best, "EXPERIMENTS", tmp_path / "experiments")
    for experiment in everything:
        (tmp_path / "experiments" / experiment).mkdir(parents=True)
        (tmp_path / "experiments" / experiment / "jmf_items.yaml").write_text("# row\n")
    assert jmf_best.write_best(family, "t") == "jmf-items"
    for experiment in experiments:
        text = (tmp_path / "experiments" / experiment / "jmf_best.yaml").read_text()
        assert text.endswith("defaults:\n  - jmf_items\n") and "jmf-cnn: 0.2500 (3 seeds)" in text
        assert "jmf-graph" not in text and "cooc" not in text
    assert not any((tmp_path / "experiments" / e / "jmf_best.yaml").exists() for e in own)
    (tmp_path / "experiments" / experiments[-1] / "jmf_items.yaml").unlink()
    with pytest.raises(SystemExit, match=f"missing from experiments .*{experiments[-1]}"):
        jmf_best.write_best(family, "t")


@pytest.mark.parametrize("best", sorted(ROOT.glob("experiments/*/jmf_best.yaml")), ids=lambda p: p.parent.name)
def test_every_jmf_best_row_composes_as_the_row_it_names(best):
    from hydra import compose, initialize_config_dir

    from jmf.config import CONF_DIR
    from jmf.experiments import register_configs

    row = best.read_text().rsplit("  - ", 1)[1].strip()
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        chosen = compose("train", overrides=[f"experiment={best.parent.name}/jmf_best"])
        named = compose("train", overrides=[f"experiment={best.parent.name}/{row}"])
    assert chosen.model == named.model and chosen.model._target_.startswith("jmf.models.joint")
