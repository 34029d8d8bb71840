"""A refactor keeps results identical: the same commands at two revisions, ``metrics.json`` compared key by key.

Each case is one ``jmf-train`` command (an experiment row, at its settings in ``experiments/``), run at the
``--before`` and ``--after`` revisions, each in a git worktree of its own (``--after .`` is the working
tree), one after the other on this machine.  Every key of ``metrics.json`` must be equal except the
wall-clock ones (``*seconds``), so ``max abs delta`` is 0 for an identical refactor.

    python benchmarks/same_metrics.py --before a279dc0 --after .

writes ``benchmarks/results/same_metrics.{md,csv,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, data_dir, markdown_table, write_results  # noqa: E402

# one case per model family and task kind: the quickstart (JMF, engine), an Amazon row (MF, engine), two CDR
# rows (CMF, EMCDR: staged), a graph-model row (LightGCN, 4 epochs of its defaults), closed-form models
CASES = {
    "quickstart": ["experiment=quickstart"],
    "amazon_mf": ["experiment=amazon_phone_electronic/mf_tuned"],
    "amazon_cmf": ["experiment=amazon_phone_electronic/cmf_tuned"],
    "amazon_emcdr": ["experiment=amazon_phone_electronic/emcdr_tuned"],
    "amazon_lightgcn": ["experiment=amazon_phone_electronic/lightgcn", "model.epochs=4"],
    "amazon_cooc": ["experiment=amazon_phone_electronic/cooc"],
    "ml100k_svd": ["data=ml100k", "model=svd"],
    "ciao_pop": ["experiment=ciao_cold_start/pop"],
    # MF on ratings at a table row's settings (mse + sgd: the written-out gradient), iALS at its defaults
    "ciao_mf": ["experiment=ciao_cold_start/mf", "split.beta=0.2"],
    "ml100k_ials": ["data=ml100k", "model=ials"],
    # the other graph models, short: BiTGCF 2 epochs; DisenCDR and CDRIB at batch 8192 (21 and 43 steps an epoch),
    # DisenCDR's shared encoder on from its second epoch
    "amazon_bitgcf": ["experiment=amazon_phone_electronic_bitgcf/bitgcf", "model.epochs=2"],
    "amazon_disencdr": ["experiment=amazon_phone_electronic/disencdr", "partition.cf_categories=[phone]",
                        "model.batch_size=8192", "model.epochs=2", "model.warmup_epochs=1", "model.eval_every=1"],
    "cdrib_sport": ["experiment=cdrib_sport_cloth/cdrib", "model.batch_size=8192", "model.epochs=1",
                    "model.eval_every=1"],
    # the joint model with item-level transfer and the score term (sampled validation, three test samplers, full)
    "amazon_jmf_items": ["experiment=amazon_phone_electronic/jmf_items", "partition.cf_categories=[phone]",
                         "model.epochs=6"],
}
CLI = "import sys; from jmf.__main__ import cli; sys.argv = ['jmf-train', *sys.argv[1:]]; cli()"


def tree(revision: str, workdir: Path) -> Path:
    """The source tree of ``revision`` (``.``: this working tree) as a folder."""
    if revision == ".":
        return ROOT
    folder = workdir / revision
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(folder), revision], check=True,
                   capture_output=True)
    return folder


def run_case(source: Path, overrides: list[str], out: Path) -> tuple[dict, float]:
    """``metrics.json`` of one ``jmf-train`` run of the code in ``source``, and its wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(source), "JMF_DATA_DIR": str(data_dir())}
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", CLI, *overrides, "trainer.progress=false", f"hydra.run.dir={out}"],
                         cwd=source, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(overrides)} failed in {source}:\n{res.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text()), time.perf_counter() - start


def _main_metric(metrics: dict) -> float:
    """The run's test NDCG@10 under its table's protocol (sampled mean, fixed candidates, or full ranking)."""
    for key in ("test/s0/ndcg@10", "test/ndcg@10", "test/full/ndcg@10"):
        if key in metrics:
            return metrics[key]
    return float("nan")


def compare(before: dict, after: dict) -> dict:
    keys = sorted(set(before) | set(after))
    timed = [k for k in keys if k.endswith("seconds")]
    compared = [k for k in keys if k not in timed]
    missing = [k for k in compared if k not in before or k not in after]
    deltas = [abs(before[k] - after[k]) for k in compared if k not in missing]
    return {"keys": len(compared), "differing": sum(before.get(k) != after.get(k) for k in compared),
            "missing": len(missing), "max abs delta": max(deltas) if deltas else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", required=True, help="git revision of the reference")
    parser.add_argument("--after", default=".", help="git revision to check ('.': the working tree)")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--name", default="same_metrics", help="result file stem")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sources = {"before": tree(args.before, work), "after": tree(args.after, work)}
        try:
            for name in args.cases:
                runs = {side: run_case(src, CASES[name], work / side / name) for side, src in sources.items()}
                row = {"case": name, "command": "jmf-train " + " ".join(CASES[name]),
                       **compare(runs["before"][0], runs["after"][0]),
                       "test/ndcg@10 before": _main_metric(runs["before"][0]),
                       "test/ndcg@10 after": _main_metric(runs["after"][0]),
                       "before s": runs["before"][1], "after s": runs["after"][1]}
                print(row, flush=True)
                rows.append(row)
        finally:
            for side, src in sources.items():
                if src != ROOT:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(src)],
                                   capture_output=True)
    shown = [{**r, "max abs delta": f"{r['max abs delta']:.2e}"} for r in rows]
    md = (f"# Same config, same seed, same metrics: {args.before} vs {args.after}\n\n"
          f"`python benchmarks/same_metrics.py --before {args.before} --after {args.after}`; every key of "
          "metrics.json but the wall-clock ones compared.\n\n" + markdown_table(shown, digits=4))
    write_results(args.name, md, rows, {"before": args.before, "after": args.after})
    print(md)


if __name__ == "__main__":
    main()
