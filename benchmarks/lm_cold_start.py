"""LM encoder (issue 5): cross-category cold start against the sequence encoders, and encode throughput.

    python benchmarks/lm_cold_start.py                         # throughput + both datasets, 3 seeds
    python benchmarks/lm_cold_start.py --only throughput       # ~2 min
    python benchmarks/lm_cold_start.py --datasets ml100k --models "LM frozen" CNN

Cold start.  ``experiments/lm_ml100k.yaml`` and ``experiments/lm_ciao.yaml`` fix the data, the
O1/O2 partition, the split (β = 0.2 of the users active on both sides lose their O1 rows and
are scored from O2 alone) and the joint model's schedule, identical for every encoder: the
LM encoder (all-MiniLM-L6-v2; frozen, LoRA r=8 on query/value, full fine-tuning at lr 3e-5),
the CNN, Transformer and bag encoders, and target-only MF (``conf/model/mf.yaml`` on O1 alone:
what a recommender without the DL side gives a cold user).  Metrics on the cold test users:
RMSE/MAE of their held-out O1 ratings and full ranking over the O1 items (NDCG@10, Recall@20).
Mean ± std over seeds (the split and the initialisation both change with the seed).
Budget (2 shared CPU cores): the LM's text is ``--max-tokens`` (32) tokens; Ciao is
subsampled to ``--ciao-users`` (1,000) users drawn once with seed 0.

Throughput.  Users/s of our jitted Flax encoder against ``transformers.AutoModel`` (PyTorch,
CPU, inference mode) on the same batch: 64 MovieLens users' histories as 64-token texts;
the two are timed interleaved (``--repeats`` rounds of 3 calls each) and the median per-call
time is kept, so load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import RESULTS, ROOT, data_dir, mean_std, markdown_table, write_results  # noqa: E402

MODELS = {
    "LM frozen": ["model.encoder.finetune=frozen"],
    "LM LoRA": ["model.encoder.finetune=lora"],
    "LM full": ["model.encoder.finetune=full", "model.encoder.lr=3e-5"],
    "CNN": ["model/encoder=cnn"],
    "Transformer": ["model/encoder=transformer"],
    "Bag": ["model/encoder=bag"],
    "MF (target only)": None,
}
EXPERIMENTS = {"ml100k": "lm_ml100k", "ciao": "lm_ciao"}
METRICS = ("rmse", "mae", "ndcg@10", "recall@20")


def compose(experiment: str, overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from jmf.experiments import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=[f"experiment={experiment}", *overrides])


def load_split(dataset: str, seed: int, ciao_users: int):
    from jmf.pipeline import build_split, load_data

    cfg = compose(EXPERIMENTS[dataset], [])
    data = load_data(cfg.data, 0)
    if dataset == "ciao" and ciao_users:
        chosen = np.random.default_rng(0).choice(data.n_users, ciao_users, replace=False)
        data = data.subset(np.isin(data.user, chosen)).compact()
    return build_split(data, cfg.partition, cfg.split, seed)


def build_model(dataset: str, name: str, max_tokens: int, extra: tuple[str, ...] = ()):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if MODELS[name] is None:  # target-only MF: conf/model/mf.yaml with its sgd optimiser, on O1 alone
        from jmf.models.cf.mf import MatrixFactorization

        hp = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "mf.yaml"))
        optim = OmegaConf.load(ROOT / "conf" / "optim" / "sgd.yaml")
        hp.pop("_target_")
        hp.update(optimizer=optim.name, lr=optim.lr)
        return MatrixFactorization(**hp)
    overrides = list(MODELS[name])
    if name.startswith("LM"):
        overrides.append(f"model.encoder.max_tokens={max_tokens}")
    return instantiate(compose(EXPERIMENTS[dataset], [*overrides, *extra]).model, _convert_="all")


def _table(runs: list[dict]) -> list[dict]:
    rows = []
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        for name in MODELS:
            per_seed = [r for r in runs if r["dataset"] == dataset and r["model"] == name]
            if not per_seed:
                continue
            row = {"dataset": dataset, "model": name, "seeds": len(per_seed)}
            for m in METRICS:
                mean, std = mean_std([r[m] for r in per_seed])
                row[m] = f"{mean:.4f} ± {std:.4f}"
            row["fit s/seed"] = f"{np.mean([r['fit_seconds'] for r in per_seed]):.0f}"
            rows.append(row)
    return rows


def cold_start(args) -> None:
    from jmf.evaluate.protocols import EvalConfig, evaluate_split
    from jmf.models.base import RunContext

    runs: list[dict] = []
    for name in ([args.out] if args.resume else []) + args.merge_from:
        previous = RESULTS / f"{name}.json"  # keep finished (dataset, model, seed) runs of the same protocol
        if previous.exists():
            saved = json.loads(previous.read_text())
            if (saved.get("max_tokens"), saved.get("ciao_users")) == (args.max_tokens, args.ciao_users):
                done = {(r["dataset"], r["model"], r["seed"]) for r in runs}
                runs += [r for r in saved["runs"] if (r["dataset"], r["model"], r["seed"]) not in done]
    extra = {"max_tokens": args.max_tokens, "ciao_users": args.ciao_users}
    for dataset in args.datasets:
        splits = {}
        for name in args.models:
            for seed in args.seeds:
                if any((r["dataset"], r["model"], r["seed"]) == (dataset, name, seed) for r in runs):
                    continue
                if seed not in splits:
                    splits[seed] = load_split(dataset, seed, args.ciao_users)
                split = splits[seed]
                model = build_model(dataset, name, args.max_tokens, tuple(args.override))
                start = time.perf_counter()
                model.fit(split, RunContext(seed=seed))
                seconds = time.perf_counter() - start
                out = evaluate_split(model, split, "test", EvalConfig(ks=(10, 20), ratings=True))
                run = {"dataset": dataset, "model": name, "seed": seed, "fit_seconds": seconds,
                       "cold_test_users": int(len(split.cold_test_users)), **{m: out[m] for m in METRICS}}
                print(run, flush=True)
                runs.append(run)
                rows = _table(runs)
                # written after every run, so a cut-short benchmark still leaves its table
                write_results(args.out, markdown_table(rows), rows, {"runs": runs, **extra})
    if runs:
        rows = _table(runs)
        write_results(args.out, markdown_table(rows), rows, {"runs": runs, **extra})


def throughput(args) -> None:
    import jax.numpy as jnp
    import torch
    from transformers import AutoModel

    from jmf.data.batches import dl_sequences
    from jmf.data.text import TextTemplate, behaviour_texts
    from jmf.models.encoders.lm import default_folder, jit_encode, load_bert, load_tokenizer

    folder = default_folder()
    split = load_split("ml100k", 0, 0)
    seqs = dl_sequences(split, 50)
    texts = behaviour_texts(split, seqs, TextTemplate())
    users = np.argsort(-seqs.mask.sum(1), kind="stable")[:64]       # 64 users whose text fills 64 tokens
    batch = load_tokenizer(folder)([texts[u] for u in users], truncation=True, max_length=64, padding="max_length",
                                   return_tensors="np")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert mask.all(), "every benchmark text should fill 64 tokens"
    encode = jit_encode(load_bert(folder))
    jax_ids, jax_mask = jnp.asarray(ids), jnp.asarray(mask)
    reference = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    torch_in = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask),
                "token_type_ids": torch.zeros_like(torch.tensor(ids))}

    def ours():
        return encode(jax_ids, jax_mask)[1].block_until_ready()

    def theirs():
        with torch.inference_mode():
            states = reference(**torch_in).last_hidden_state
            m = torch_in["attention_mask"][..., None].float()
            return (states * m).sum(1) / m.sum(1)

    diff = float(np.abs(np.asarray(ours()) - theirs().numpy()).max())
    t_ours, t_theirs = [], []
    for _ in range(args.repeats):
        for fn, times in ((ours, t_ours), (theirs, t_theirs)):
            for _ in range(3):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
    ours_s, theirs_s = float(np.median(t_ours)), float(np.median(t_theirs))
    rows = [{"encoder": "jmf Flax NNX (jax.jit)", "users/s": 64 / ours_s, "ms/batch": 1e3 * ours_s},
            {"encoder": "transformers AutoModel (PyTorch)", "users/s": 64 / theirs_s, "ms/batch": 1e3 * theirs_s}]
    md = markdown_table(rows, digits=1) + (
        f"\n\nBatch 64 users x 64 tokens, float32, CPU ({os.cpu_count()} cores; torch threads "
        f"{torch.get_num_threads()}). Ratio ours/PyTorch: **{theirs_s / ours_s:.2f}x**. "
        f"Max |pooled difference|: {diff:.1e}.")
    write_results("lm_throughput", md, rows, {"ratio": theirs_s / ours_s, "pooled_max_abs_diff": diff,
                                              "times_ours": t_ours, "times_torch": t_theirs})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["throughput", "cold_start"], default=None)
    parser.add_argument("--datasets", nargs="+", default=["ml100k", "ciao"], choices=sorted(EXPERIMENTS))
    parser.add_argument("--models", nargs="+", default=list(MODELS)[3:] + list(MODELS)[:3], choices=list(MODELS),
                        help="run order (the table keeps MODELS' order); cheap models first")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--ciao-users", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--resume", action="store_true", help="keep finished runs of results/<out>.json")
    parser.add_argument("--out", default="lm_cold_start", help="results name (benchmarks/results/<out>.*)")
    parser.add_argument("--merge-from", nargs="*", default=[], help="more results names whose runs are kept")
    parser.add_argument("--override", nargs="*", default=[],
                        help="extra Hydra overrides of the JMF models (e.g. model.user_offset=false)")
    args = parser.parse_args()
    os.environ["JMF_DATA_DIR"] = str(data_dir())  # the configs read ${oc.env:JMF_DATA_DIR}
    if args.only in (None, "throughput"):
        throughput(args)
    if args.only in (None, "cold_start"):
        cold_start(args)


if __name__ == "__main__":
    main()
