"""The documentation cannot rot: it builds strictly, its generated tables match the results, its tutorials
run, and README's commands are the ones CI uses."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from docs_runner import run_page

ROOT = Path(__file__).resolve().parent.parent


def _load_script(name: str):
    """A script of benchmarks/ as a module, without putting benchmarks/ on sys.path."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
    """The site, built once for this file's tests: ``(mkdocs' result, site folder)``."""
    site = tmp_path_factory.mktemp("docs") / "site"
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "docs" / "mkdocs.yml"),
                          "-d", str(site)], capture_output=True, text=True, timeout=600)
    return res, site


def test_the_site_builds_with_warnings_as_errors(built_site):
    res, site = built_site
    assert res.returncode == 0, res.stderr[-4000:]
    assert (site / "api.html").exists()


def test_the_site_loads_nothing_from_the_internet(built_site):
    """Offline, the site reads as online: no page or stylesheet loads a script, stylesheet, font or image from
    elsewhere; the maths, its fonts and the code colours are shipped and used."""
    res, site = built_site
    assert res.returncode == 0, res.stderr[-4000:]
    screenshots = _load_script("docs_screenshots")
    assert screenshots.external_references(site) == []
    concepts = (site / "concepts.html").read_text()
    assert 'class="arithmatex"' in concepts and "assets/katex/katex.min.js" in concepts and "highlight.js" not in concepts
    assert '<span class="k">def</span>' in (site / "tutorials" / "new-head.html").read_text()   # Pygments, at build
    css = (site / "assets" / "katex" / "katex.min.css").read_text()
    fonts = re.findall(r"url\((fonts/[^)]+)\)", css)
    assert fonts and all((site / "assets" / "katex" / f).is_file() for f in fonts)
    assert 'src="assets/dataflow.svg"' in (site / "index.html").read_text() and (site / "assets" / "dataflow.svg").is_file()


def test_the_external_reference_check_finds_what_a_page_would_load(tmp_path):
    screenshots = _load_script("docs_screenshots")
    (tmp_path / "a.html").write_text(
        '<link rel="stylesheet" href="https://cdn.example.com/x.css"><script src="//cdn.example.com/x.js"></script>'
        '<a href="https://example.com/page">a link is not a load</a><img src="local.png"><img src=http://x.org/i.png>')
    (tmp_path / "b.css").write_text("@font-face{src:url(https://fonts.example.com/f.woff2)} .x{background:url(ok.png)}")
    assert screenshots.external_references(tmp_path) == [
        ("a.html", "//cdn.example.com/x.js"), ("a.html", "http://x.org/i.png"),
        ("a.html", "https://cdn.example.com/x.css"), ("b.css", "https://fonts.example.com/f.woff2")]


def test_the_screenshot_script_says_how_to_get_chromium_when_there_is_none(tmp_path, monkeypatch, capsys):
    screenshots = _load_script("docs_screenshots")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CHROMIUM", raising=False)
    assert screenshots.main(["--out", str(tmp_path / "shots")]) == 2
    assert "apt-get install -y chromium" in capsys.readouterr().err


def test_generated_benchmark_pages_and_readme_table_match_the_results():
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "render_docs.py"), "--check"], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_table_says_where_it_came_from(tmp_path, monkeypatch):
    """A results file's caption names its command, machine, package versions and commit; a table written from a
    tree with uncommitted changes, or with no commit recorded, is marked as such."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    render = _load_script("render_docs")
    monkeypatch.setattr(render, "RESULTS", tmp_path)
    machine = {"processor": "cpu", "cpus": 2, "jax": "0.10.2", "flax": "0.12.8"}
    for name, commit in (("clean", "abc1234"), ("dirty", "abc1234+dirty"), ("old", None)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"command": "python benchmarks/x.py", "machine": machine,
                                                           **({"commit": commit} if commit else {}), "rows": []}))
    clean, dirty, old = (render._section(n) for n in ("clean", "dirty", "old"))
    assert "*code at:* abc1234\n" in clean and "flax 0.12.8" in clean and "`python benchmarks/x.py`" in clean
    assert "uncommitted changes" in dirty and "provenance unknown" in old


def test_a_resumed_table_names_every_commit_and_command_its_rows_came_from(tmp_path, monkeypatch):
    """Rows kept from earlier sessions (``--resume``) are credited to their own commits and commands, not to the
    last command's; a command whose rows are all gone drops out of the history."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    common, render = _load_script("common"), _load_script("render_docs")
    for module in (common, render):
        monkeypatch.setattr(module, "RESULTS", tmp_path)
    monkeypatch.setattr(sys, "argv", ["benchmarks/run.py", "--first"])
    monkeypatch.setattr(common, "STARTED_AT", "aaa1111")
    common.write_results("t", "| x |", [{"model": "a", "commit": "aaa1111"}])
    monkeypatch.setattr(sys, "argv", ["benchmarks/run.py", "--second"])
    monkeypatch.setattr(common, "STARTED_AT", "bbb2222+dirty")
    common.write_results("t", "| x |", [{"model": "a", "commit": "aaa1111"}, {"model": "b", "commit": "bbb2222+dirty"}])
    history = json.loads((tmp_path / "t.json").read_text())["history"]
    assert [(h["command"], h["commit"]) for h in history] == [
        ("python benchmarks/run.py --first", "aaa1111"), ("python benchmarks/run.py --second", "bbb2222+dirty")]
    caption = render._section("t")
    assert "aaa1111 (1 rows), bbb2222+dirty (1 rows)" in caption and "uncommitted changes" in caption
    assert "`python benchmarks/run.py --first` (at aaa1111)" in caption
    monkeypatch.setattr(sys, "argv", ["benchmarks/run.py", "--third"])
    monkeypatch.setattr(common, "STARTED_AT", "ccc3333")
    common.write_results("t", "| x |", [{"model": "b", "commit": "ccc3333"}])      # every earlier row replaced
    assert [h["command"] for h in json.loads((tmp_path / "t.json").read_text())["history"]] == [
        "python benchmarks/run.py --third"]
    assert "*code at:* ccc3333\n" in render._section("t") and "Earlier commands" not in render._section("t")


def test_the_headline_keeps_a_models_finished_seeds_over_a_newer_file_with_fewer(tmp_path, monkeypatch):
    """A table's three finished seeds stay the README's figure while a later file holds the model's first new seed;
    once the newer file has as many seeds, it is the figure."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    render = _load_script("render_docs")
    monkeypatch.setattr(render, "RESULTS", tmp_path)

    def write(name: str, values: list[float]) -> None:
        rows = [{"task": "cdrib-sport", "model": "bitgcf", "seed": s, "test/ndcg@10": v} for s, v in enumerate(values)]
        (tmp_path / f"{name}.json").write_text(json.dumps({"rows": rows}))

    write("cold_start_a", [0.3, 0.4, 0.5])
    write("cold_start_b", [0.9])
    assert render._rows("cdrib-sport") == {"bitgcf": pytest.approx(0.4)}
    write("cold_start_b", [0.9, 0.6, 0.6])
    assert render._rows("cdrib-sport") == {"bitgcf": pytest.approx(0.7)}


def test_a_headline_figure_from_fewer_than_three_seeds_says_how_many(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    render = _load_script("render_docs")
    monkeypatch.setattr(render, "RESULTS", tmp_path)
    monkeypatch.setattr(render, "HEADLINE", {"cdrib-sport": "ndcg@10"})
    rows = [{"task": "cdrib-sport", "model": "jmf-cnn", "seed": s, "test/ndcg@10": 0.2, "valid/ndcg@10": 0.1}
            for s in range(3)] + [{"task": "cdrib-sport", "model": "bitgcf", "seed": 0, "test/ndcg@10": 0.4}]
    (tmp_path / "cold_start_a.json").write_text(json.dumps({"rows": rows}))
    assert "| jmf-cnn 0.2000 | bitgcf 0.4000 (1 seed) | 0.50 |" in render.headline()


@pytest.mark.parametrize("page", ["own-data.md", "sweep-to-table.md", "cold-start.md", "map-your-catalogue.md"])
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
