"""Accuracy of ``model.matmul_dtype=bfloat16`` against float32: the same runs (task, model, seed, overrides)
trained twice, once per dtype, and their metrics side by side.

    python benchmarks/bf16_check.py --tasks amazon-phone --models disencdr \\
        --override model.epochs=10 model.eval_every=10 --resume   # DisenCDR, the authors' batch (~1 h a dtype here)
    python benchmarks/bf16_check.py --tasks cdrib-sport --models cdrib --override model.epochs=5

Train long enough for the metrics to mean something: DisenCDR at batch 8192 after 4 epochs is still at chance
(sampled HR@10 0.011 for 1 positive among 1,000), where any two runs agree and the check proves nothing.

A run is ``benchmarks/cold_start.py``'s table cell (``experiment=<experiment>/<row> <task overrides> seed=<s>``)
plus ``--override`` and ``model.matmul_dtype=<dtype>``; only the encoders' dense products change (bfloat16
inputs, float32 accumulation: :func:`jmf.models.graph.common.dense`).  The check holds when every metric of
the bfloat16 run lies within the float32 run's seed noise (``--seeds`` several: the table gives both dtypes'
mean ± std).  ``s/run`` is each run's own training time on this machine: bfloat16 is a speed option only
where the hardware has a bfloat16 rate (AVX512_BF16 or AMX CPUs, GPUs); ``benchmarks/roofline.py`` prints
this machine's.  Writes ``benchmarks/results/bf16_check[_<name>].{md,csv,json}``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from common import ROOT, markdown_table, mean_std, write_results

from jmf import hugepages

DTYPES = ("float32", "bfloat16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", required=True)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every run")
    parser.add_argument("--name", default=None, help="result stem suffix: bf16_check_<name>")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "runs" / "bf16_check"))
    parser.add_argument("--resume", action="store_true",
                        help="take finished runs from their folders and continue killed ones from their checkpoints")
    args = parser.parse_args()
    hugepages.ensure()
    from cold_start import TASKS, run_one

    rows = []
    for task in args.tasks:
        metric_names = TASKS[task][2]
        for model in args.models:
            per_dtype = {}
            for dtype in DTYPES:
                runs = [run_one(task, model, seed, [*args.override, f"model.matmul_dtype={dtype}"],
                                Path(args.out) / dtype, reuse=args.resume, resume=args.resume) for seed in args.seeds]
                per_dtype[dtype] = runs
                row = {"task": task, "model": model, "matmul_dtype": dtype, "seeds": len(runs)}
                for k in metric_names:
                    mean, std = mean_std([r.get(k, math.nan) for r in runs])
                    row[k.split("/", 1)[1]] = f"{mean:.4f} ± {std:.4f}"
                row["s/run"] = f"{mean_std([r['bench/seconds'] for r in runs])[0]:.0f}"
                rows.append(row)
                print(row, flush=True)
            diff = {"task": task, "model": model, "matmul_dtype": "bfloat16 - float32", "seeds": len(args.seeds)}
            for k in metric_names:
                a = [r.get(k, math.nan) for r in per_dtype["float32"]]
                b = [r.get(k, math.nan) for r in per_dtype["bfloat16"]]
                diff[k.split("/", 1)[1]] = f"{sum(b) / len(b) - sum(a) / len(a):+.4f}"
            rows.append(diff)
    stem = "bf16_check" + (f"_{args.name}" if args.name else "")
    write_results(stem, markdown_table(rows), rows)


if __name__ == "__main__":
    main()
