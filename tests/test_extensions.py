"""Extending jmf from outside the package, with config only: the three tutorials, run as written.

``docs/pages/tutorials/new-head.md``, ``new-score-term.md`` and ``new-model.md`` each write a module into a
project folder of their own (on ``PYTHONPATH``) and a YAML into its config folder (``hydra.searchpath``),
run ``jmf-train`` and check the result (the term's choice on validation, the model's checkpoints and
exact resume).  No file under ``jmf/`` is edited.
"""

from pathlib import Path

import pytest

from docs_runner import run_page

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = ROOT / "docs" / "pages" / "tutorials"


@pytest.mark.parametrize("page", ["new-head.md", "new-score-term.md", "new-model.md", "new-metric.md"])
def test_an_extension_from_outside_the_package_runs_through_jmf_train(page, tmp_path):
    outputs = run_page(TUTORIALS / page, tmp_path)
    assert outputs and "Traceback" not in outputs[-1]


def test_no_extension_lives_in_the_package():
    text = " ".join(p.read_text() for p in (ROOT / "jmf").rglob("*.py"))
    assert "myext" not in text and "GatedHead" not in text and "BPRMF" not in text and "nprecision" not in text
