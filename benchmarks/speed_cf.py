"""CF speed against peers on the same matrices: iALS vs ``implicit``, randomized SVD vs ``svds``, evaluation vs NumPy.

    python benchmarks/speed_cf.py                       # Ciao + 2M synthetic, ~10 min on 2 CPU cores
    python benchmarks/speed_cf.py --datasets ciao       # Ciao only, ~2 min
    python benchmarks/speed_cf.py --parts ials          # one part: ials | svd | eval

Matrices.  ``ciao``: Ciao's ``rating_with_timestamp.mat`` from ``$JMF_DATA_DIR/ciao``, one row
per (user, product), every rating binarised to 1.  ``synthetic``: ``jmf.data.synthetic`` with
50 000 users x 20 000 items and 60 sampled interactions per user, 2.04·10^6 after merging
repeats.
Both are split per user, 20% of each user's interactions held out at random (seed 0); every
model trains on the same 80% CSR and is scored on the same 20%.

a. iALS.  ``jmf.models.cf.ials.ImplicitALS`` and ``implicit.cpu.als.AlternatingLeastSquares``
   with the same d=64, λ, α, 3 CG steps, epochs and the *same initial factors* (jmf's init is
   copied into ``implicit`` before ``fit``).  Both use ``c_ui = α r_ui`` on observed pairs
   (``implicit`` multiplies the CSR by ``alpha`` in ``fit``) and solve
   ``(YᵀY + λI + Σ (c-1) y yᵀ) x = Σ c y`` with warm-started CG.  Per-epoch seconds are the
   median over epochs 2..N (jmf's first epoch includes XLA compilation, reported apart).
   Threads: ``implicit`` runs ``num_threads=2`` OpenMP threads with BLAS limited to one
   thread (its own advice).  jmf runs its iALS the way ``jmf/models/cf/ials.py`` advises on a
   CPU: one XLA CPU device per core, each walking its share of the chunks on its own thread
   (``--ials-xla-flags``, default ``--xla_force_host_platform_device_count=<cores>
   --xla_cpu_multi_thread_eigen=false``); both use the same 2 cores.  This part runs in its
   own process with those flags; SVD and evaluation run in another with XLA's defaults.
   Recall@20 of both is computed by the same ``evaluate_full`` on ``X[u] @ Yᵀ``.
b. SVD.  ``randomized_svd(rank=64)`` vs ``scipy.sparse.linalg.svds(k=64)`` (ARPACK) on the same
   float32 training CSR; median of 3 timed runs after a warm-up; relative error of the top-64
   singular values against ``svds`` for several ``n_iter``.
c. Evaluation.  ``evaluate_full`` (jitted, batched, ``top_k`` on device) vs a per-user NumPy
   loop (``P[u] @ Q.T``, training items masked, ``argpartition`` top-20, recall/NDCG@20) on
   the iALS factors of part a and the same users; users/s of each, and the metrics compared.
Isolation.  Each matrix is measured in fresh Python processes (the script re-runs itself with
``--datasets <name>``: one process for iALS, one for SVD and evaluation, which reads the iALS
factors from a file), as benchmark harnesses such as ``pyperf`` do, so no state of one run
(XLA executables, allocations, thread pools) can touch the next.  Epoch times still move with
the load on a shared VM; compare ratios from one run, and repeat the run (``--out`` keeps each).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.io
import scipy.sparse as sp
import scipy.sparse.linalg
from threadpoolctl import threadpool_limits

from common import data_dir, markdown_table, median_time, write_results
from jmf.data.interactions import Interactions, from_columns
from jmf.data.preprocess import PreprocessConfig, preprocess
from jmf.data.split import make_split, partition_categories
from jmf.data.synthetic import synthetic
from jmf.evaluate.protocols import evaluate_full
from jmf.models.cf.ials import ImplicitALS
from jmf.models.cf.svd import randomized_svd

# ----------------------------------------------------------------------------- data


def load_ciao_implicit() -> Interactions:
    """Ciao as one implicit interaction per (user, product)."""
    root = data_dir() / "ciao"
    try:  # the library loader, once it exists
        from jmf.data.ciao import load_ciao

        data = load_ciao(root)
    except ImportError:
        path = root / "rating_with_timestamp.mat"
        rating = scipy.io.loadmat(path)["rating"]  # user, product, category, rating, helpfulness, time
        data = from_columns(rating[:, 0], rating[:, 1], np.ones(len(rating)), category=rating[:, 2],
                            timestamp=rating[:, 5], source=str(path))
    data = dataclasses.replace(data, value=np.ones(len(data), np.float32), implicit=True, name="ciao")
    return preprocess(data, PreprocessConfig(duplicates="first", order="time"))


def load_matrix(name: str):
    """``name`` -> (train CSR, test CSR), binary float32, per-user random 80/20."""
    if name == "ciao":
        data = load_ciao_implicit()
    elif name == "synthetic":
        data = synthetic(n_users=50_000, n_items=20_000, n_categories=8, interactions_per_user=60.0, seed=0)
    else:
        raise ValueError(f"--datasets: unknown dataset {name!r} (ciao|synthetic)")
    split = make_split(data, partition_categories(data), "ratio", by="user", order="random", test_ratio=0.2,
                       valid_ratio=0.0, seed=0)
    train, test = split.train.astype(np.float32), split.test.astype(np.float32)
    train.data[:] = 1.0
    test.data[:] = 1.0
    return train, test


def factor_score_fn(user_factors, item_factors) -> Callable[[jax.Array], jax.Array]:
    P, Q = jnp.asarray(user_factors, jnp.float32), jnp.asarray(item_factors, jnp.float32)
    return jax.jit(lambda users: P[users] @ Q.T)


# ----------------------------------------------------------------------------- a. iALS


class _JmfALS:
    """jmf's iALS driven one epoch at a time."""

    def __init__(self, train, args, X0, Y0):
        self.model = ImplicitALS(dim=args.dim, reg=args.reg, alpha=args.alpha, cg_steps=args.cg_steps)
        start = time.perf_counter()
        self.side = self.model.prepare(train)
        jax.block_until_ready(self.side)
        self.setup_s = time.perf_counter() - start
        self.W = self.model.place([X0, Y0], len(X0) + len(Y0))  # W = [X; Y], a copy: the half-epochs donate it

    def epoch(self) -> float:
        start = time.perf_counter()
        self.W = self.model.epoch(self.W, self.side)
        jax.block_until_ready(self.W)
        return time.perf_counter() - start

    def factors(self):
        W = np.asarray(self.W)
        return W[:self.side.n_users], W[self.side.n_users:]


class _ImplicitALS:
    """``implicit``'s CPU ALS driven one epoch at a time (``fit`` with one iteration continues from
    the current factors; its per-call set-up — scaling by alpha, the transpose — is timed apart)."""

    def __init__(self, train, args, X0, Y0):
        from implicit.cpu.als import AlternatingLeastSquares

        self.model = AlternatingLeastSquares(factors=args.dim, regularization=args.reg, alpha=args.alpha,
                                             use_cg=True, iterations=1, num_threads=args.threads, random_state=0)
        self.model.cg_steps = args.cg_steps  # an attribute in implicit 0.7, not a constructor argument
        self.model.user_factors, self.model.item_factors = np.array(X0, np.float32), np.array(Y0, np.float32)
        self.train, self.setup_s = train, 0.0

    def epoch(self) -> float:
        times: list[float] = []
        with threadpool_limits(limits=1, user_api="blas"):
            start = time.perf_counter()
            self.model.fit(self.train, show_progress=False, callback=lambda it, elapsed, loss: times.append(elapsed))
            total = time.perf_counter() - start
        self.setup_s = total - times[0]
        return times[0]

    def factors(self):
        return self.model.user_factors, self.model.item_factors


def bench_ials(name: str, train, test, args, rows: list, factors: dict) -> None:
    W0 = np.asarray(ImplicitALS(dim=args.dim).init_factors(*train.shape, seed=0))   # [X; Y]
    X0, Y0 = W0[:train.shape[0]], W0[train.shape[0]:]
    peers = {"implicit": _ImplicitALS(train, args, X0, Y0), "jmf": _JmfALS(train, args, X0, Y0)}
    times: dict[str, list[float]] = {k: [] for k in peers}
    for epoch in range(args.epochs):  # interleaved, alternating who goes first: both see the same machine
        for key in (list(peers) if epoch % 2 == 0 else list(peers)[::-1]):
            times[key].append(peers[key].epoch())
    out = {}
    for key, peer in peers.items():
        X, Y = peer.factors()
        metrics = evaluate_full(factor_score_fn(X, Y), train, test, ks=(20,))
        out[key] = {"epoch": float(np.median(times[key][1:])), "first": times[key][0], "metrics": metrics,
                    "total": peer.setup_s + sum(times[key])}
        print(f"[ials/{name}] {key}: epoch {out[key]['epoch']:.3f}s (first {times[key][0]:.3f}s, all "
              f"{[round(t, 3) for t in times[key]]}) recall@20 {metrics['recall@20']:.4f}", flush=True)
    factors[name] = peers["jmf"].factors()
    jmf, imp = out["jmf"], out["implicit"]
    rows.append({
        "data": name, "users x items": f"{train.shape[0]}x{train.shape[1]}", "train nnz": train.nnz,
        "jmf devices": peers["jmf"].model.mesh.size, "jmf s/epoch": jmf["epoch"], "implicit s/epoch": imp["epoch"], "ratio jmf/implicit": jmf["epoch"] / imp["epoch"],
        "jmf compile s": jmf["first"] - jmf["epoch"], "jmf fit s": jmf["total"], "implicit fit s": imp["total"],
        "jmf recall@20": jmf["metrics"]["recall@20"], "implicit recall@20": imp["metrics"]["recall@20"],
        "recall rel. diff": jmf["metrics"]["recall@20"] / imp["metrics"]["recall@20"] - 1.0,
        "jmf ndcg@20": jmf["metrics"]["ndcg@20"], "implicit ndcg@20": imp["metrics"]["ndcg@20"],
    })


# ----------------------------------------------------------------------------- b. SVD


def bench_svd(name: str, train, args, rows: list) -> None:
    mat = train.astype(np.float32)
    svds_s, _ = median_time(lambda: scipy.sparse.linalg.svds(mat, k=args.rank, random_state=0), args.repeats)
    ref = np.sort(scipy.sparse.linalg.svds(mat, k=args.rank, random_state=0, return_singular_vectors=False))[::-1]
    for n_iter in args.svd_iters:
        jmf_s, _ = median_time(lambda: randomized_svd(mat, args.rank, n_iter=n_iter), args.repeats)
        _, s, _ = randomized_svd(mat, args.rank, n_iter=n_iter)
        rel = np.abs(s.astype(np.float64) - ref) / ref
        rows.append({"data": name, "shape": f"{mat.shape[0]}x{mat.shape[1]}", "nnz": mat.nnz, "n_iter": n_iter,
                     "jmf s": jmf_s, "svds s": svds_s, "ratio jmf/svds": jmf_s / svds_s,
                     "max rel. err σ": float(rel.max()), "mean rel. err σ": float(rel.mean()),
                     "rel. err σ_1": float(rel[0])})
        print(f"[svd/{name}] n_iter={n_iter}: jmf {jmf_s:.3f}s svds {svds_s:.3f}s max rel err {rel.max():.2e}",
              flush=True)


# ----------------------------------------------------------------------------- c. evaluation


def numpy_full_ranking(P: np.ndarray, Q: np.ndarray, exclude: sp.csr_matrix, truth: sp.csr_matrix,
                       users: np.ndarray, k: int = 20) -> dict[str, float]:
    """The straightforward loop: one user at a time, ``argpartition`` for the top ``k``."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    recall = ndcg = 0.0
    for u in users:
        scores = P[u] @ Q.T
        scores[exclude.indices[exclude.indptr[u]:exclude.indptr[u + 1]]] = -np.inf
        top = np.argpartition(-scores, k)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        relevant = truth.indices[truth.indptr[u]:truth.indptr[u + 1]]
        hits = np.isin(top, relevant)
        recall += hits.sum() / len(relevant)
        ndcg += (hits * discounts).sum() / discounts[:min(len(relevant), k)].sum()
    return {"recall@20": recall / len(users), "ndcg@20": ndcg / len(users)}


def bench_eval(name: str, train, test, factors, args, rows: list) -> None:
    P, Q = (np.ascontiguousarray(a, dtype=np.float32) for a in factors)
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    score_fn = factor_score_fn(P, Q)
    run_jmf = lambda: evaluate_full(score_fn, train, test, users, ks=(20,))  # noqa: E731
    jmf_s, _ = median_time(run_jmf, args.repeats)
    np_users = users[:args.numpy_users] if args.numpy_users else users
    run_np = lambda: numpy_full_ranking(P, Q, train, test, np_users)  # noqa: E731
    np_s, _ = median_time(run_np, repeats=1 if len(np_users) > 5000 else args.repeats, warmup=0)
    ours, ref = run_jmf(), run_np()
    same = evaluate_full(score_fn, train, test, np_users, ks=(20,))
    rows.append({"data": name, "users": len(users), "items": Q.shape[0],
                 "jmf users/s": len(users) / jmf_s, "numpy users/s": len(np_users) / np_s,
                 "speed-up": (len(users) / jmf_s) / (len(np_users) / np_s),
                 "jmf recall@20": ours["recall@20"], "numpy recall@20": ref["recall@20"],
                 "max abs diff": max(abs(same["recall@20"] - ref["recall@20"]), abs(same["ndcg@20"] - ref["ndcg@20"]))})
    print(f"[eval/{name}] jmf {len(users) / jmf_s:.0f} users/s, numpy {len(np_users) / np_s:.0f} users/s", flush=True)


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["ciao", "synthetic"])
    parser.add_argument("--parts", nargs="+", default=["ials", "svd", "eval"])
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--reg", type=float, default=0.1)
    parser.add_argument("--alpha", type=float, default=10.0)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--cg-steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="implicit's OpenMP threads")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--svd-iters", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--numpy-users", type=int, default=0, help="time the NumPy loop on the first N users only")
    parser.add_argument("--ials-xla-flags", default=f"--xla_force_host_platform_device_count={os.cpu_count()} "
                        "--xla_cpu_multi_thread_eigen=false", help="XLA_FLAGS of the iALS process ('' = XLA's defaults)")
    parser.add_argument("--out", default="speed_cf", help="results name (benchmarks/results/<out>.*)")
    parser.add_argument("--rows-out", help=argparse.SUPPRESS)     # internal: a child process writes its rows here
    parser.add_argument("--factors-file", help=argparse.SUPPRESS)  # internal: iALS factors, from one child to the next
    args = parser.parse_args()

    ials_rows, svd_rows, eval_rows, factors = [], [], [], {}
    if not args.rows_out:  # the parent: fresh processes per matrix and stage (module docstring, "Isolation")
        for name in args.datasets:
            with tempfile.TemporaryDirectory() as tmp:
                stages = [(["ials"], {"XLA_FLAGS": args.ials_xla_flags})] if "ials" in args.parts else []
                rest = [p for p in args.parts if p != "ials"]
                if rest:
                    stages.append((rest, {}))
                for i, (parts, env) in enumerate(stages):
                    out = Path(tmp) / f"rows{i}.json"
                    # a repeated option overrides the first (argparse keeps the last)
                    subprocess.run([sys.executable, __file__, *sys.argv[1:], "--datasets", name, "--parts", *parts,
                                    "--rows-out", str(out), "--factors-file", str(Path(tmp) / "factors.npz")],
                                   check=True, env={**os.environ, **env})
                    child = json.loads(out.read_text())
                    ials_rows += child["ials"]
                    svd_rows += child["svd"]
                    eval_rows += child["eval"]
    else:
        name = args.datasets[0]
        start = time.perf_counter()
        train, test = load_matrix(name)
        print(f"[{name}] {train.shape} train nnz {train.nnz} test nnz {test.nnz} "
              f"({time.perf_counter() - start:.1f}s)", flush=True)
        if "ials" in args.parts:
            bench_ials(name, train, test, args, ials_rows, factors)
            np.savez(args.factors_file, *factors[name])
        if "svd" in args.parts:
            bench_svd(name, train, args, svd_rows)
        if "eval" in args.parts:
            if name not in factors:
                if not Path(args.factors_file).exists():
                    parser.error("--parts eval needs ials (it ranks with the iALS factors)")
                saved = np.load(args.factors_file)
                factors[name] = (saved["arr_0"], saved["arr_1"])
            bench_eval(name, train, test, factors[name], args, eval_rows)
        Path(args.rows_out).write_text(json.dumps({"ials": ials_rows, "svd": svd_rows, "eval": eval_rows}))
        return

    text = ["## CF speed vs peers (CPU)"]
    if ials_rows:
        text += ["", f"### a. iALS, d={args.dim}, λ={args.reg}, α={args.alpha}, {args.cg_steps} CG steps, "
                 f"{args.epochs} epochs, same init (goal: ratio ≤ 1.0, recall within ±2%)", "",
                 f"jmf: `XLA_FLAGS={args.ials_xla_flags!r}`; implicit: {args.threads} OpenMP threads.", "",
                 markdown_table(ials_rows)]
    if svd_rows:
        text += ["", f"### b. truncated SVD, rank {args.rank} (goal: ratio ≤ 1.0, small σ error)", "",
                 markdown_table(svd_rows, digits=5)]
    if eval_rows:
        text += ["", "### c. full-ranking evaluation, recall/NDCG@20 (goal: speed-up ≥ 3)", "",
                 markdown_table(eval_rows, digits=6)]
    write_results(args.out, "\n".join(text), ials_rows + svd_rows + eval_rows,
                  {"args": vars(args), "ials": ials_rows, "svd": svd_rows, "eval": eval_rows})


if __name__ == "__main__":
    main()
