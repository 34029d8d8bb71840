"""iALS at scale against ``implicit``: seconds per epoch and peak memory at 10M and 30M interactions.

    python benchmarks/ials_scale.py --quick                      # 2M interactions, k=64: ~2 min on 2 CPU cores
    python benchmarks/ials_scale.py --scales 10M --dims 64       # one 10M point: ~12 min (its matrix: once, ~45 s)
    python benchmarks/ials_scale.py                              # 10M and 30M, k in {32, 64, 128, 256}: hours
    python benchmarks/ials_scale.py --scales 30M --name ials_scale_30M   # one scale into its own file

Matrices (synthetic, binary, generated once per scale and cached as ``--cache/ials_<scale>.npz``):
each user's activity is log-normal (σ=1), each of their draws an item with Zipf popularity
``p_i ∝ rank^-0.8`` (item ids shuffled, so popularity is not id order); repeats are merged and
the matrix trimmed at random to exactly the stated count.  ``2M``: 100 000 users x 20 000
items; ``10M``: 500 000 x 100 000 (density 2·10^-4); ``30M``: 1 500 000 x 300 000 (density
6.7·10^-5); 20 interactions per user on average at every scale.

Peers, as in ``benchmarks/speed_cf.py`` (whose jmf driver this script imports): the same λ,
α, CG steps and *the same initial factors* (``init_scale`` x a seeded normal draw, made in
NumPy in each child), ``implicit`` with ``num_threads=2`` and BLAS at one thread, jmf with one
XLA CPU device per core (``--xla_force_host_platform_device_count=<cores>
--xla_cpu_multi_thread_eigen=false``).  Seconds per epoch: the median over epochs 2..N (jmf's
first epoch includes XLA compilation, reported apart; ``implicit``'s ``fit`` set-up -- α-scaling
and the transpose, redone by every one-epoch ``fit`` call -- is excluded from its epoch).

Memory.  Each (scale, k, peer) runs in its own fresh process and reports its own peak RSS
(``VmHWM``; nothing subtracted), and also its RSS once its imports are done and the matrix is
loaded (``load RSS``), so the model's own share is visible: jmf's imports (JAX, XLA's CPU
client) are about 190 MB more than ``implicit``'s.  The ``implicit`` child does not import
JAX (``speed_cf``'s driver would), so its figures are its own.  jmf's child also reports the
RSS after each stage (buckets built, factors placed, first epoch).  The two children of a
point run one after the other (alternating which goes first per point), so a ratio comes from
one run on the same machine; timings still move with other load on a shared VM.
Rows also give the factor agreement after the last epoch: ``max |X_jmf - X_implicit|``
relative to ``max |X_implicit|`` over the first 2000 users and items.
Writes ``benchmarks/results/<--name>.{md,csv,json}`` (default ``ials_scale``, ``ials_scale_quick``) after every point.
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
import scipy.sparse as sp

SCALES = {"2M": (100_000, 20_000, 2_000_000), "10M": (500_000, 100_000, 10_000_000),
          "30M": (1_500_000, 300_000, 30_000_000)}   # name -> (users, items, interactions)
ZIPF, ACTIVITY_SIGMA, FINGERPRINT = 0.8, 1.0, 2000


def synthetic_matrix(n_users: int, n_items: int, nnz: int, seed: int = 0) -> sp.csr_matrix:
    """A binary ``[n_users, n_items]`` float32 CSR with exactly ``nnz`` ones (module docstring)."""
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, ACTIVITY_SIGMA, n_users)
    cdf = np.cumsum(np.arange(1, n_items + 1, dtype=np.float64) ** -ZIPF)
    cdf /= cdf[-1]
    item_ids = rng.permutation(n_items).astype(np.int64)
    draws = 1.1 * nnz
    for _ in range(4):   # repeats merge away: draw more until the target is reached, then trim
        counts = rng.poisson(activity * (draws / activity.sum()))
        users = np.repeat(np.arange(n_users, dtype=np.int64), counts)
        items = item_ids[np.searchsorted(cdf, rng.random(len(users)))]
        keys = np.unique(users * n_items + items)
        del users, items
        if len(keys) >= nnz:
            break
        draws *= 1.05 * nnz / len(keys)
    keys = np.sort(rng.choice(keys, nnz, replace=False))
    rows = keys // n_items
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_users))])
    return sp.csr_matrix((np.ones(nnz, np.float32), (keys % n_items).astype(np.int32), indptr),
                         shape=(n_users, n_items))


def cached_matrix(scale: str, cache: Path) -> Path:
    path = cache / f"ials_{scale}.npz"
    if not path.exists():
        start = time.perf_counter()
        mat = synthetic_matrix(*SCALES[scale])
        cache.mkdir(parents=True, exist_ok=True)
        sp.save_npz(path, mat, compressed=False)
        print(f"[{scale}] generated {mat.shape} nnz {mat.nnz:,} in {time.perf_counter() - start:.0f}s -> {path}",
              flush=True)
    return path


def _rss_mb() -> tuple[float, float]:
    """(current, peak) resident set of this process in MB (``/proc/self/status``)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def _initial_factors(n_users: int, n_items: int, args, block: int | None = None):
    """The initial ``X`` then ``Y`` (float32, one seeded stream), in blocks of ``block`` rows (None: whole):
    a caller may place and free each block before the next is drawn."""
    rng = np.random.default_rng(0)
    for n in (n_users, n_items):
        for start in range(0, n, block or n):
            yield args.init_scale * rng.standard_normal((min(block or n, n - start), args.dim), np.float32)


class _Jmf:
    """jmf's iALS one epoch per call: its device CSR first, then its factors ``W = [X; Y]`` placed from host
    blocks of 2^15 rows, each freed before the next is drawn (the same stream as ``implicit``'s two draws)."""

    def __init__(self, train, args):
        import jax

        from jmf.models.cf.ials import ImplicitALS

        self.model = ImplicitALS(dim=args.dim, reg=args.reg, alpha=args.alpha, cg_steps=args.cg_steps,
                                 devices=args.jmf_devices)
        start = time.perf_counter()
        self.side = jax.block_until_ready(self.model.prepare(train))
        self.setup_s = time.perf_counter() - start
        self.W = self.model.place(_initial_factors(*train.shape, args, block=1 << 15), sum(train.shape))

    def epoch(self) -> float:
        import jax

        start = time.perf_counter()
        self.W = jax.block_until_ready(self.model.epoch(self.W, self.side))
        return time.perf_counter() - start

    def factors(self):
        """The first ``FINGERPRINT`` rows of ``X`` and of ``Y`` (not a host copy of the whole ``W``)."""
        n = self.side.n_users
        return np.asarray(self.W[:FINGERPRINT]), np.asarray(self.W[n:n + FINGERPRINT])


class _Implicit:
    """``implicit``'s CPU ALS one epoch per ``fit`` call (``speed_cf._ImplicitALS``, without importing JAX)."""

    def __init__(self, train, args, X0, Y0):
        from implicit.cpu.als import AlternatingLeastSquares

        self.model = AlternatingLeastSquares(factors=args.dim, regularization=args.reg, alpha=args.alpha,
                                             use_cg=True, iterations=1, num_threads=args.threads, random_state=0)
        self.model.cg_steps = args.cg_steps
        self.model.user_factors, self.model.item_factors = X0, Y0
        self.train = train

    def epoch(self) -> float:
        from threadpoolctl import threadpool_limits

        times: list[float] = []
        with threadpool_limits(limits=1, user_api="blas"):
            self.model.fit(self.train, show_progress=False, callback=lambda it, elapsed, loss: times.append(elapsed))
        return times[0]

    def factors(self):
        return self.model.user_factors, self.model.item_factors


def child(args) -> dict:
    """One peer on one matrix in this (fresh) process; returns its timings and memory."""
    stages = {"start": _rss_mb()[0]}
    if args.child == "jmf":
        import jax

        import jmf.models.cf.ials  # noqa: F401

        jax.numpy.zeros(1).block_until_ready()   # XLA's CPU client up before the matrix is measured
    else:
        import implicit.cpu.als  # noqa: F401
        import threadpoolctl  # noqa: F401
    train = sp.load_npz(args.matrix).tocsr()
    stages["load"] = _rss_mb()[0]
    if args.child == "jmf":
        peer = _Jmf(train, args)
        stages["buckets+factors"] = _rss_mb()[0]
        setup_s = peer.setup_s
    else:
        peer, setup_s = _Implicit(train, args, *_initial_factors(*train.shape, args)), 0.0   # owns the draws
    times = []
    for epoch in range(args.epochs):
        times.append(peer.epoch())
        stages[f"epoch {epoch + 1}"] = _rss_mb()[0]
        print(f"  [{args.child} k={args.dim}] epoch {epoch + 1}: {times[-1]:.2f}s, "
              f"RSS {stages[f'epoch {epoch + 1}']:.0f} MB (peak {_rss_mb()[1]:.0f})", flush=True)
    X, Y = peer.factors()
    np.savez(args.fingerprint, X=np.asarray(X[:FINGERPRINT]), Y=np.asarray(Y[:FINGERPRINT]))
    return {"epoch_s": float(np.median(times[1:])) if len(times) > 1 else times[0], "first_s": times[0],
            "times": times, "setup_s": setup_s, "load_mb": stages["load"], "peak_mb": _rss_mb()[1], "stages": stages}


def run_point(matrix: Path, scale: str, dim: int, args, order: tuple[str, str], tmp: Path) -> dict:
    out = {}
    for peer in order:
        env = dict(os.environ)
        if peer == "jmf":
            env["XLA_FLAGS"] = args.xla_flags
        result = tmp / f"{peer}.json"
        cmd = [sys.executable, __file__, "--child", peer, "--matrix", str(matrix), "--dims", str(dim),
               "--epochs", str(args.epochs), "--reg", str(args.reg), "--alpha", str(args.alpha),
               "--cg-steps", str(args.cg_steps), "--threads", str(args.threads), "--init-scale", str(args.init_scale),
               "--jmf-devices", str(args.jmf_devices),
               "--result", str(result), "--fingerprint", str(tmp / f"{peer}.npz")]
        subprocess.run(cmd, check=True, env=env)
        out[peer] = json.loads(result.read_text())
    jmf, imp = out["jmf"], out["implicit"]
    fp_j, fp_i = np.load(tmp / "jmf.npz"), np.load(tmp / "implicit.npz")
    rel = {s: float(np.abs(fp_j[s] - fp_i[s]).max() / np.abs(fp_i[s]).max()) for s in ("X", "Y")}
    n_users, n_items, nnz = SCALES[scale]
    row = {"scale": scale, "users x items": f"{n_users}x{n_items}", "nnz": nnz, "k": dim,
           "jmf s/epoch": jmf["epoch_s"], "implicit s/epoch": imp["epoch_s"],
           "time ratio": jmf["epoch_s"] / imp["epoch_s"], "jmf compile s": jmf["first_s"] - jmf["epoch_s"],
           "jmf peak MB": jmf["peak_mb"], "implicit peak MB": imp["peak_mb"],
           "RSS ratio": jmf["peak_mb"] / imp["peak_mb"],
           "jmf load MB": jmf["load_mb"], "implicit load MB": imp["load_mb"],
           "jmf peak-load MB": jmf["peak_mb"] - jmf["load_mb"],
           "implicit peak-load MB": imp["peak_mb"] - imp["load_mb"],
           "factor rel. diff X": rel["X"], "factor rel. diff Y": rel["Y"]}
    print(f"[{scale} k={dim}] " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                            for k, v in row.items()), flush=True)
    return {"row": row, "jmf": jmf, "implicit": imp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", nargs="+", default=["10M", "30M"], choices=list(SCALES))
    parser.add_argument("--dims", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--quick", action="store_true", help="2M interactions, k=64, 4 epochs")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--reg", type=float, default=0.1)
    parser.add_argument("--alpha", type=float, default=10.0)
    parser.add_argument("--cg-steps", type=int, default=3)
    parser.add_argument("--init-scale", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=2, help="implicit's OpenMP threads")
    parser.add_argument("--xla-flags", default=f"--xla_force_host_platform_device_count={os.cpu_count()} "
                        "--xla_cpu_multi_thread_eigen=false", help="XLA_FLAGS of jmf's process")
    parser.add_argument("--jmf-devices", type=int, default=1,
                        help="jmf's model.devices (0: all; each holds a replica of the factors)")
    parser.add_argument("--cache", default="/tmp/jmf_bench", help="folder of the generated matrices")
    parser.add_argument("--name", help="results file name (default ials_scale, ials_scale_quick with --quick)")
    parser.add_argument("--child", choices=["jmf", "implicit"], help=argparse.SUPPRESS)
    parser.add_argument("--matrix", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--fingerprint", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        args.dim = args.dims[0]
        result = child(args)
        Path(args.result).write_text(json.dumps(result))
        return
    if args.quick:
        args.scales, args.dims, args.epochs = ["2M"], [64], 4

    from common import markdown_table, write_results

    name = args.name or ("ials_scale_quick" if args.quick else "ials_scale")
    points = []
    with tempfile.TemporaryDirectory() as tmp:
        for scale in args.scales:
            matrix = cached_matrix(scale, Path(args.cache))
            for dim in args.dims:
                order = ("jmf", "implicit") if len(points) % 2 == 0 else ("implicit", "jmf")
                points.append(run_point(matrix, scale, dim, args, order, Path(tmp)))
                _write(name, args, points, write_results, markdown_table)    # after every point: a cut run keeps its rows


def _write(name: str, args, points: list[dict], write_results, markdown_table) -> None:
    rows = [p["row"] for p in points]
    text = ["## iALS at scale vs implicit (CPU)", "",
            f"λ={args.reg}, α={args.alpha}, {args.cg_steps} CG steps, {args.epochs} epochs, same initial factors; "
            f"goal: time ratio ≤ 1.0 and RSS ratio ≤ 1.5.", "",
            f"jmf: model.devices={args.jmf_devices}, `XLA_FLAGS={args.xla_flags!r}`; "
            f"implicit: {args.threads} OpenMP threads, BLAS at 1.", "",
            markdown_table(rows)]
    write_results(name, "\n".join(text), rows, {"args": vars(args), "points": points})

if __name__ == "__main__":
    main()
