"""benchmarks/ablation.py: the 2 x 2 design's main effects, by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_main_effects_by_hand():
    import ablation

    # seed 0: nb 0.10, items 0.14, graph 0.12, both 0.18 -> items (0.14+0.18-0.10-0.12)/2 = 0.05, graph 0.03
    # seed 1: every row + 0.01 except both (+0.03) -> items 0.06, graph 0.04
    base = {"jmf-nb": 0.10, "jmf-items": 0.14, "jmf-graph-nb": 0.12, "jmf-graph-items": 0.18}
    rows = [{"task": "amazon-phone", "model": m, "seed": 0, "test/sampled/ndcg@10": v} for m, v in base.items()]
    rows += [{"task": "amazon-phone", "model": m, "seed": 1, "test/sampled/ndcg@10": v + (0.03 if m == "jmf-graph-items"
                                                                                          else 0.01)}
             for m, v in base.items()]
    rows.append({"task": "amazon-phone", "model": "cooc", "seed": 0, "test/sampled/ndcg@10": 0.9})
    effects = ablation.main_effects(ablation.per_seed(rows, "amazon-phone", "test/sampled/ndcg@10"))
    assert effects["item-level transfer"][0] == pytest.approx(0.055) and effects["item-level transfer"][2] == 2
    assert effects["graph CF side"][0] == pytest.approx(0.035)
    assert effects["graph CF side"][1] == pytest.approx(0.01 / 2 ** 0.5)   # sample std, as the tables' (ddof 1)
    markdown, flat = ablation.tables(rows)
    assert "### amazon-phone" in markdown and "+0.0550 ± 0.0071" in markdown and "cooc" not in markdown
    assert {r["task"] for r in flat} == {"amazon-phone"}
