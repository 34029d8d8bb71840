"""Engine throughput: examples/s of the joint step (CNN, Transformer encoders) and of the MF epoch scan,
compile time, peak RSS, and examples/s with 1, 2 and 4 forced CPU devices, on synthetic data.

    python benchmarks/engine_speed.py                                  # 10^5 users, devices 1,2,4 (~10 min here)
    python benchmarks/engine_speed.py --users 1000000 --items 100000 --per-user 31 --devices 1   # 10^6 x 10^5 x 3·10^7

Each (model, device count) runs in its own process (``XLA_FLAGS`` must be set before JAX
starts); the split is generated once per scale and pickled under ``--cache``.  A JMF
"example" is one (user, CF-side item) pair of a step (``batch_size x items_per_user``); an MF
example is one interaction.  Steps go through the same jitted step and batch plans as
``fit`` (``model.setup``), with at most ``max_inflight`` steps in flight.  Writes
``benchmarks/results/engine_speed{_<users>}.{md,csv,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = ("jmf-cnn", "jmf-transformer", "mf")


def make_split(users: int, items: int, per_user: float, cache: Path) -> Path:
    path = cache / f"engine_split_{users}_{items}_{per_user}.pkl"
    if path.exists():
        return path
    from jmf.data.split import make_split as split_fn, partition_categories
    from jmf.data.synthetic import synthetic

    start = time.perf_counter()
    data = synthetic(n_users=users, n_items=items, n_categories=8, interactions_per_user=per_user, seed=0)
    split = split_fn(data, partition_categories(data, k=4), "ratio", seed=0, valid_ratio=0.0)
    print(f"data: {len(data):,} interactions, split {split.counts()} in {time.perf_counter() - start:.0f}s",
          flush=True)
    cache.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(split, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def child(split_path: str, model_name: str, devices: int, steps: int, batch: int) -> dict:
    """Runs in a fresh process with ``devices`` forced CPU devices; returns one result row."""
    from functools import partial

    import jax

    from jmf.models.joint.start import NormalFactors
    from jmf.models.base import RunContext

    with open(split_path, "rb") as f:
        split = pickle.load(f)
    ctx = RunContext(devices=devices, checkpoint=False, progress=False)
    t0 = time.perf_counter()
    if model_name == "mf":
        from jmf.models.cf.mf import MatrixFactorization

        model = MatrixFactorization(dim=64, loss="bpr", batch_size=batch, optimizer="adagrad", lr=0.05)
        engine, state, phases = model.setup(split, ctx)
        full = phases[0].plan(0).batch(0)
        n_batches = min(steps, full["rows"]["users"].shape[0])
        batch_in = {"rows": jax.tree.map(lambda x: x[:n_batches], full["rows"]), "key": full["key"]}
        examples = n_batches * batch
        setup_s = time.perf_counter() - t0
        t = time.perf_counter()
        state, m = phases[0].step(state, batch_in)          # compile + one scan of n_batches steps
        jax.block_until_ready(m)
        first = time.perf_counter() - t
        t = time.perf_counter()
        state, m = phases[0].step(state, batch_in)
        jax.block_until_ready(m)
        run_s = time.perf_counter() - t
        compile_s = max(first - run_s, 0.0)
    else:
        from jmf.models.encoders.cnn import CNNEncoder
        from jmf.models.encoders.transformer import TransformerEncoder
        from jmf.models.heads.linear import LinearHead
        from jmf.models.joint import JMF

        encoder = (partial(CNNEncoder, embed_dim=64, out_dim=64) if model_name == "jmf-cnn"
                   else partial(TransformerEncoder, embed_dim=64, out_dim=64))
        m_items = 8
        model = JMF(encoder, partial(LinearHead), dim=64, batch_size=batch, items_per_user=m_items, max_len=50,
                    init=NormalFactors(), negatives=64)
        engine, state, phases = model.setup(split, ctx)
        plan = phases[1].plan(0)
        setup_s = time.perf_counter() - t0
        t = time.perf_counter()
        state, m = phases[1].step(state, plan.batch(0))
        jax.block_until_ready(m)
        compile_s = time.perf_counter() - t
        n = min(steps, plan.n_steps - 1)
        pending = []
        t = time.perf_counter()
        for i in range(1, n + 1):
            state, m = phases[1].step(state, plan.batch(i))
            pending.append(m["loss"])
            if len(pending) >= engine.max_inflight:
                jax.block_until_ready(pending.pop(0))
        jax.block_until_ready(pending)
        run_s = time.perf_counter() - t
        examples = n * batch * m_items
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"model": model_name, "devices": devices, "users": split.train.shape[0],
            "cf_items": split.train.shape[1], "train_rows": int(split.train.nnz),
            "examples/s": round(examples / run_s), "compile_s": round(compile_s, 2), "setup_s": round(setup_s, 1),
            "peak_rss_gb": round(rss_gb, 2), "batch": batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--per-user", type=float, default=30.0)
    parser.add_argument("--devices", default="1,2,4")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--steps", type=int, default=40, help="timed JMF steps")
    parser.add_argument("--mf-steps", type=int, default=200, help="MF: batches in the timed scan")
    parser.add_argument("--batch", type=int, default=1024, help="global batch (JMF: users; MF: interactions)")
    parser.add_argument("--cache", default="/tmp/jmf_bench")
    parser.add_argument("--child", nargs=4, metavar=("SPLIT", "MODEL", "DEVICES", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        split_path, model_name, devices, out = args.child
        Path(out).write_text(json.dumps(child(split_path, model_name, int(devices), args.steps, args.batch)))
        return

    from common import markdown_table, write_results

    split_path = make_split(args.users, args.items, args.per_user, Path(args.cache))
    rows = []
    for model_name in args.models.split(","):
        for devices in (int(d) for d in args.devices.split(",")):
            out = Path(args.cache) / f"row_{model_name}_{devices}.json"
            out.unlink(missing_ok=True)
            env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
            steps = args.mf_steps if model_name == "mf" else args.steps
            cmd = [sys.executable, __file__, "--steps", str(steps), "--batch", str(args.batch),
                   "--child", str(split_path), model_name, str(devices), str(out)]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if res.returncode != 0:
                print(res.stderr[-3000:], file=sys.stderr)
                rows.append({"model": model_name, "devices": devices, "examples/s": "failed"})
                continue
            rows.append(json.loads(out.read_text()))
            print(rows[-1], flush=True)
    columns = ["model", "devices", "users", "cf_items", "train_rows", "batch", "examples/s", "compile_s", "setup_s",
               "peak_rss_gb"]
    suffix = "" if args.users == 100_000 else f"_{args.users}"
    write_results(f"engine_speed{suffix}", markdown_table(rows, columns), rows,
                  {"cores": os.cpu_count(), "note": "forced CPU devices share the machine's cores"})


if __name__ == "__main__":
    main()
