"""Render every results table into the docs, and README's headline table, from ``benchmarks/results/``.

    python benchmarks/render_docs.py            # rewrite docs/pages/benchmarks/results-*.md and README's block
    python benchmarks/render_docs.py --check    # exit 1 if a page differs from what would be written

Every ``results/<name>.json`` (written by a benchmark script through ``common.write_results``) becomes
one section of a generated page: its table (the ``.md`` beside it) with a caption naming the command,
the machine and the code commit the benchmark ran at (recorded in the file by ``common.write_results``).  ``tests/test_docs.py`` fails when a
page differs from what this script writes, so no number in the docs is typed by hand.

README's headline table (between ``<!-- headline:begin -->`` and ``<!-- headline:end -->``) is the
best JMF row against the strongest other model per task, read from the ``cold_start_*`` results.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PAGES = ROOT / "docs" / "pages" / "benchmarks"
README = ROOT / "README.md"
# generated page -> (title, result-name prefixes, in order)
GROUPS = {
    "results-cold-start.md": ("Cross-category and cross-domain tables, and the searches behind the tuned rows",
                              ("cold_start_", "search_", "ablation_")),
    "results-cf.md": ("The CF core: accuracy and speed", ("mf_ml100k", "speed_cf", "engine_speed", "recommend_speed")),
    "results-lm.md": ("LM encoder", ("lm_",)),
    "results-analyses.md": ("Analyses: signals, validation noise, score parts, refactor checks",
                            ("ciao_signal", "valid_noise", "ciao_rank_parts", "disencdr_", "graph_step",
                             "authors_protocol", "cross_listed", "same_metrics", "verify_")),
    "results-probes.md": ("Probe runs (read on validation or test, named in the notes)", ("probe_",)),
    "results-transfer-map.md": ("The category transfer map: the planted graph, one run against one per target, "
                                "Ciao's and MovieLens' maps", ("transfer_map",)),
    "results-speed.md": ("Speed against the machine: roofline, and the bfloat16 check", ("roofline", "bf16_check")),
    "results-peers.md": ("Speed against the peers: the JMF step against PyTorch, iALS at scale, the first result, "
                         "compilation, the README tour",
                         ("peers", "jmf_peer", "ials_scale", "first_result", "compile_cold_warm", "readme_tour")),
}
# task -> (main metric, label) for the headline
HEADLINE = {"synthetic": "ndcg@10", "ciao-0.2": "ndcg@10", "ciao-0.5": "ndcg@10", "ciao-0.8": "ndcg@10",
            "amazon-phone": "sampled/ndcg@10", "amazon-elec": "sampled/ndcg@10", "amazon-cloth": "sampled/ndcg@10",
            "amazon-sport": "sampled/ndcg@10", "amazon-phone-bitgcf": "ndcg@10", "cdrib-sport": "ndcg@10",
            "cdrib-cloth": "ndcg@10"}
NOT_BASELINES = ("oracle",)


def _section(name: str) -> str:
    payload = json.loads((RESULTS / f"{name}.json").read_text())
    table = (RESULTS / f"{name}.md").read_text() if (RESULTS / f"{name}.md").exists() else ""
    table = re.sub(r"^<!--.*?-->\s*", "", table, flags=re.S).strip()
    m = payload.get("machine", {})
    machine = f"{m.get('processor', '?')}, {m.get('cpus', '?')} CPUs, jax {m.get('jax', '?')}" + "".join(
        f", {k} {m[k]}" for k in ("flax", "optax", "orbax-checkpoint", "torch") if k in m)
    caption = f"*Command:* `{payload.get('command', '?')}` · *machine:* {machine} · *code at:* {_code_at(payload)}"
    earlier = [h for h in payload.get("history", [])[:-1] if h.get("command")]
    if earlier:
        caption += "\n\n*Earlier commands whose rows the file keeps:* " + "; ".join(
            f"`{h['command']}` (at {h.get('commit') or 'unknown'})" for h in earlier)
    return f"## {name}\n\n{caption}\n\n{table}\n"


def _code_at(payload: dict) -> str:
    """The commit(s) the file's rows ran at: the rows' own ``commit`` where they carry one (a ``--resume``'d
    benchmark keeps rows of several sessions), with how many rows each; a dirty or unknown one is marked."""
    per_row = Counter(r["commit"] for r in payload.get("rows", []) if isinstance(r, dict) and r.get("commit"))
    commits = [f"{c} ({n} rows)" for c, n in per_row.items()] if len(per_row) > 1 else [payload.get("commit")]
    if not commits[0] or commits[0] == "unknown":
        return "not recorded (written before result files recorded it): **provenance unknown**"
    text = ", ".join(commits)
    if "+dirty" in text:
        text += " (**written from a tree with uncommitted changes**: the commit alone does not reproduce it)"
    return text


def pages() -> dict[Path, str]:
    """Every generated page and its text."""
    names = sorted(p.stem for p in RESULTS.glob("*.json"))
    out, taken = {}, set()
    for page, (title, prefixes) in GROUPS.items():
        picked = [n for n in names if n.startswith(prefixes) and n not in taken]
        taken |= set(picked)
        body = "\n".join(_section(n) for n in picked) or "No results yet.\n"
        out[PAGES / page] = (f"# {title}\n\n<!-- generated by `python benchmarks/render_docs.py`: do not edit -->\n\n"
                             + body)
    left = [n for n in names if n not in taken]
    if left:
        raise SystemExit(f"results not placed on any page: {left} (add a prefix to GROUPS)")
    return out


def _rows(task: str, split: str = "test") -> dict[str, float]:
    """Mean of the headline metric per model (see ``_seeded_rows``)."""
    return {model: mean for model, (_, mean) in _seeded_rows(task, split).items()}


def _seeded_rows(task: str, split: str = "test") -> dict[str, tuple[int, float]]:
    """Seed count and mean of the headline metric (``split``'s: ``test`` or ``valid``) per model for ``task``, from the result file
    holding the most seeds of the model (the later file by name among equals): a table's seeds still running in
    another file do not replace its finished mean."""
    metric = f"{split}/" + (HEADLINE[task] if split == "test" else HEADLINE[task].split("/")[-1])
    best: dict[str, tuple[int, float]] = {}
    for path in sorted(RESULTS.glob("cold_start_*.json")):      # a merged file and its slices agree per run
        runs: dict[str, list[float]] = {}
        for row in json.loads(path.read_text())["rows"]:
            if row.get("task") == task and "error" not in row and row.get(metric) is not None:
                runs.setdefault(row["model"], []).append(float(row[metric]))
        best.update({model: (len(v), sum(v) / len(v)) for model, v in runs.items()
                     if len(v) >= best.get(model, (0, 0.0))[0]})
    return best


def _cell(model: str, seeded: dict[str, tuple[int, float]]) -> str:
    """``model mean``, with the seed count where fewer than the tables' 3 stand behind the mean."""
    n, mean = seeded[model]
    return f"{model} {mean:.4f}" + (f" ({n} seed{'s' if n > 1 else ''})" if n < 3 else "")


def headline() -> str:
    """Per task: the JMF row best on *validation* (its test figure shown) against the strongest other model on
    *test* (the comparison least flattering to JMF)."""
    lines = ["| task | metric | JMF (chosen on validation) | strongest other model | JMF / it |",
             "| --- | --- | --- | --- | --- |"]
    for task in HEADLINE:
        seeded, valid = _seeded_rows(task), _rows(task, "valid")
        rows = {model: mean for model, (_, mean) in seeded.items()}
        jmf = {m: v for m, v in rows.items() if m.startswith("jmf")}
        other = {m: v for m, v in rows.items() if not m.startswith("jmf") and m not in NOT_BASELINES}
        if not jmf or not other:
            continue
        chosen = {m: valid[m] for m in jmf if m in valid and valid[m] == valid[m]}
        j, o = max(chosen or jmf, key=(chosen or jmf).get), max(other, key=other.get)
        lines.append(f"| {task} | {HEADLINE[task]} | {_cell(j, seeded)} | {_cell(o, seeded)} | {jmf[j] / other[o]:.2f} |")
    return "\n".join(lines)


def readme(text: str) -> str:
    block = f"<!-- headline:begin (python benchmarks/render_docs.py) -->\n{headline()}\n<!-- headline:end -->"
    return re.sub(r"<!-- headline:begin.*?<!-- headline:end -->", block, text, flags=re.S)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a generated text differs from the file")
    args = parser.parse_args()
    wanted = pages()
    wanted[README] = readme(README.read_text())
    stale = [p for p, text in wanted.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)} (run python benchmarks/render_docs.py)")
        return 1 if stale else 0
    PAGES.mkdir(parents=True, exist_ok=True)
    for p in stale:
        p.write_text(wanted[p])
        print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
