"""The documentation cannot rot: it builds strictly, its generated tables match the results, its tutorials
run, and README's commands are the ones CI uses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from docs_runner import run_page

ROOT = Path(__file__).resolve().parent.parent


def test_the_site_builds_with_warnings_as_errors(tmp_path):
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "docs" / "mkdocs.yml"),
                          "-d", str(tmp_path / "site")], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    assert (tmp_path / "site" / "api" / "index.html").exists()


def test_generated_benchmark_pages_and_readme_table_match_the_results():
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "render_docs.py"), "--check"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("page", ["own-data.md", "sweep-to-table.md", "cold-start.md"])
def test_tutorial_runs_as_written(page, tmp_path):
    run_page(ROOT / "docs" / "pages" / "tutorials" / page, tmp_path)


def test_readme_is_a_front_page_with_the_commands_ci_uses():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme.count("\n") <= 250
    setup = re.search(r"^(python3 -m venv .*?)\s+#", readme, re.M).group(1)
    assert 'pip install -e ".[dev]"' in setup and 'pip install -e ".[dev]"' in ci and "python3 -m venv .venv" in ci
    assert re.search(r"^jmf-train\s+#", readme, re.M)                  # the main job: no arguments
    assert re.search(r"```bash\npytest\n```", readme) and re.search(r"^pytest\s*$", ci, re.M)


def test_help_lists_every_option_and_no_internal_entries():
    res = subprocess.run([sys.executable, "-m", "jmf", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    text = res.stdout
    for group in ("model", "data", "split", "eval"):
        for option in sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml")):
            assert re.search(rf"\b{re.escape(option)}\b", text), (group, option)
    for experiment in sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml")):
        assert experiment in text, experiment
    assert "schema" not in text and "powered by Hydra" not in text
