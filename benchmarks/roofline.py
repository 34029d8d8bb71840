"""Compiled steps against this machine's roofline: XLA's flops and bytes, the measured time, and how close it gets.

    python benchmarks/roofline.py                          # every row (graph steps, JMF steps, full-ranking evaluation)
    python benchmarks/roofline.py --quick                  # 3 repeats, JMF at 10^4 users (~7 min on 2 cores)
    python benchmarks/roofline.py --rows lightgcn "eval full 1e5 d64"
    python benchmarks/roofline.py --quick --ref a279dc0    # also the graph steps at an older commit, same run

The machine's two rates are measured first and again at the end, in the same process, and the larger of the
two is used (a slow moment must not flatter the fractions): the float32 matmul rate (a jitted 2048² @ 2048²,
median of the repeats; the models' tall shapes are reported beside it, for information) and the streaming
bandwidth (a jitted ``x * a + b`` over 64 MB, donated so XLA writes in place; bytes = read + write).

A row is one compiled program: a graph model's training step built as ``benchmarks/graph_step.py`` builds it
(DisenCDR with its shared encoder on; huge pages as there; the ``bf16`` rows: DisenCDR's and CDRIB's with
``model.matmul_dtype=bfloat16``, their fractions still against the float32 roofline), the JMF-CNN / JMF-Transformer
joint step on the synthetic data of ``benchmarks/engine_speed.py`` (its model; 10^5 users, ``--quick`` 10^4), or
one batch of the full-ranking evaluator as it runs for a dot-product model (MF, iALS, SVD, the CDR and graph models):
``jmf.evaluate.protocols._full_batch_dot``, ``U[users] @ V.T`` masked, ranked (top-k) and summed into the
metrics at the default ``ks`` in one program, random tables, at the batch ``evaluate_full`` uses there.  Columns:

* ``GFLOP``, ``GB accessed``: XLA's ``cost_analysis()`` of the compiled program (its own estimate).
* ``measured ms``: median wall time of a call, each blocked, after one warm-up call (the step's state carried),
  over ``--repeats`` calls (more for short ones: at least 0.5 s of calls).
* ``roofline ms``: ``max(flops / matmul rate, bytes / bandwidth)``, the time the machine's own rates allow.
* ``fraction``: roofline ms / measured ms (1 = at the roofline); ``bound``: which of the two terms is larger.
* ``products alone ms``: the program's dense products (``dot_general`` and convolutions in its jaxpr, both branches
  of a ``cond``), each timed alone at its shape and summed: the float32 arithmetic at the rate this machine gives
  those tall, thin shapes, below which no float32 step can go; ``products share``: that over measured ms (near 1:
  the step is its products, and only fewer or faster products, bfloat16, make it faster).
* ``sparse alone ms``, ``sparse share``: the same for the step's sparse products (graph propagation, each
  ``BCSR`` product timed alone on the model's own graph): random rows gathered, bound by memory latency rather
  than streaming bandwidth, which is why a propagation-bound step (LightGCN, BiTGCF) sits below the streaming
  roofline.
* ``note``: the evaluator's batch of users, or the JMF data's users.
* ``below 0.5: where the time goes``: for a row below half its roofline, the measured split of its time (dense
  products, sparse products, the rest), the reason it is not faster: products timed alone at their own shapes run
  below the 2048² rate, sparse products gather random rows, and the rest is the program's other work.

Rows named ``<row> @<commit>`` come from ``--ref``: the same step timed by a subprocess importing the old
``jmf`` from a git worktree, its fractions computed with this run's rates.  The last line printed is
``min_roofline_fraction=<x>``: the smallest fraction over the four graph steps and ``eval full 1e5 d64``
present.  Writes ``benchmarks/results/<name>.{md,csv,json}`` (default ``roofline``, ``roofline_quick``).
"""

from __future__ import annotations

import argparse
import functools
import gc
import importlib
import json
import os
import pickle
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import ROOT, markdown_table, write_results

GRAPH = ("disencdr", "cdrib", "bitgcf", "lightgcn")
# the same steps with model.matmul_dtype=bfloat16 (dense products in bfloat16, float32 accumulation), beside float32
BF16 = {"disencdr bf16": "disencdr", "cdrib bf16": "cdrib"}
JMF = ("jmf-cnn", "jmf-transformer")
EVAL = {f"eval full {n} d{d}": (int(float(n)), d) for n in ("1e4", "1e5") for d in (64, 256)}
ROWS = (*GRAPH, *BF16, *JMF, *EVAL)
FLOOR = (*GRAPH, "eval full 1e5 d64")           # the rows min_roofline_fraction is taken over
MATMUL, STREAM = "matmul GFLOP/s 2048²", "stream GB/s"     # the two rates the roofline uses
TALL = {"[38706,128]@[128,128]": ((38706, 128), (128, 128), False),
        "[3325,128]@[128,128]": ((3325, 128), (128, 128), False),
        "[38706,128]ᵀ@[38706,128]": ((38706, 128), (38706, 128), True)}


# ------------------------------------------------------------------ timing and XLA's cost
def median_ms(call: Callable[[], Any], repeats: int, min_s: float = 0.5) -> float:
    """Median ms of ``call()`` (blocked) after one warm-up call: ``repeats`` calls, more (up to 200) for short ones."""
    import jax

    jax.block_until_ready(call())
    times: list[float] = []
    while len(times) < repeats or (sum(times) < min_s and len(times) < 200):
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def xla_cost(compiled) -> dict[str, float]:
    """``{"flops", "bytes"}`` of a compiled program (``cost_analysis()`` is a dict, or a list of one)."""
    cost = compiled.cost_analysis()
    cost = (cost[0] if cost else {}) if isinstance(cost, (list, tuple)) else (cost or {})
    return {"flops": float(cost.get("flops", 0.0)), "bytes": float(cost.get("bytes accessed", 0.0))}


def compiled_step(phase) -> tuple[Callable, dict[str, float]]:
    """``(step, cost)``: ``phase.step`` running its jitted function's compiled program, lowered at the first call's
    arguments (before the state is donated), ``cost`` filled then.  The jitted function is the closure cell of
    ``phase.step`` that has ``.lower``; without one, ``phase.step`` itself and an empty cost."""
    cell = next((c for c in getattr(phase.step, "__closure__", None) or () if hasattr(_contents(c), "lower")), None)
    cost: dict[str, float] = {}
    if cell is None:
        return phase.step, cost
    jitted, compiled = cell.cell_contents, []

    def run(*args):
        if not compiled:
            compiled.append(jitted.lower(*args).compile())
            cost.update(xla_cost(compiled[0]))
            cost["products"] = dot_products(jitted, *args)
        return compiled[0](*args)

    def step(state, batch):
        cell.cell_contents = run
        try:
            return phase.step(state, batch)
        finally:
            cell.cell_contents = jitted
    return step, cost


def dot_products(jitted, *args) -> dict[tuple, int]:
    """The dense products of ``jitted(*args)`` (its jaxpr, control flow included): ``{(lhs shape, rhs shape, lhs
    dtype, dimension numbers): count}``."""
    import jax

    found: dict[tuple, int] = {}

    def walk(jaxpr) -> None:
        for eqn in jaxpr.eqns:
            for value in eqn.params.values():
                for sub in value if isinstance(value, (list, tuple)) else [value]:
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner)
            if eqn.primitive.name == "dot_general":
                a, b = (v.aval for v in eqn.invars[:2])
                key = (tuple(a.shape), tuple(b.shape), str(a.dtype), repr(eqn.params["dimension_numbers"]))
                found[key] = found.get(key, 0) + 1
            elif eqn.primitive.name == "conv_general_dilated":
                a, b = (v.aval for v in eqn.invars[:2])
                key = ("conv", tuple(a.shape), tuple(b.shape), str(a.dtype), tuple(sorted(eqn.params.items())))
                found[key] = found.get(key, 0) + 1
            elif eqn.primitive.name == "bcsr_dot_general":      # (data, indices, indptr, dense)
                nnz, rows, dense = eqn.invars[0].aval.shape[0], eqn.invars[2].aval.shape[0] - 1, eqn.invars[3].aval
                key = ("sparse", nnz, rows, tuple(dense.shape))
                found[key] = found.get(key, 0) + 1
    walk(jax.make_jaxpr(jitted)(*args).jaxpr)
    return found


def products_alone_ms(products: dict[tuple, int], repeats: int, matrices: list | None = None) -> dict[str, float]:
    """The time of ``products`` (:func:`dot_products`) each run alone at its shape, summed over their counts:
    ``{"dense": ms, "sparse": ms}``, the step's dense arithmetic at the rate this machine gives those shapes (a
    floor no float32 step goes below) and its sparse products (graph propagation: ``matrices``, the model's
    ``BCSR`` graphs, matched to each product by its number of entries and rows)."""
    import ast

    import jax
    import jax.numpy as jnp

    total = {"dense": 0.0, "sparse": 0.0}
    for key, count in products.items():
        if key[0] == "sparse":
            _, nnz, rows, dense_shape = key
            matrix = next((m for m in matrices or [] if m.nse == nnz and m.shape[0] == rows), None)
            if matrix is None:
                continue
            x = jnp.ones(dense_shape, jnp.float32)
            f = jax.jit(lambda m, y: m @ y)
            total["sparse"] += count * median_ms(lambda: f(matrix, x), max(3, repeats), min_s=0.2)
            continue
        if key[0] == "conv":
            _, a_shape, b_shape, dtype, params = key
            a, b = jnp.ones(a_shape, dtype), jnp.ones(b_shape, dtype)
            f = jax.jit(lambda x, y, p=dict(params): jax.lax.conv_general_dilated_p.bind(x, y, **p))
            total["dense"] += count * median_ms(lambda: f(a, b), max(3, repeats), min_s=0.2)
            continue
        a_shape, b_shape, dtype, dims = key
        numbers = ast.literal_eval(dims)
        a, b = jnp.ones(a_shape, dtype), jnp.ones(b_shape, dtype)
        f = jax.jit(lambda x, y, n=numbers: jax.lax.dot_general(x, y, n, preferred_element_type=jnp.float32))
        total["dense"] += count * median_ms(lambda: f(a, b), max(3, repeats), min_s=0.2)
    return total


def sparse_matrices(tree) -> list:
    """The ``BCSR`` matrices in a model's device data (its graphs)."""
    import jax
    from jax.experimental import sparse as jsparse

    return [x for x in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, jsparse.BCSR))
            if isinstance(x, jsparse.BCSR)]


def _contents(cell) -> object:
    try:
        return cell.cell_contents
    except ValueError:      # an empty cell
        return None


def time_step(phase, state, batch, repeats: int, matrices: list | None = None) -> dict[str, float]:
    """``{"ms", "flops", "bytes", "products ms", "sparse ms"}`` of one training step, its (donated) state carried
    from call to call (``matrices``: the model's graphs, for its sparse products)."""
    step, cost = compiled_step(phase)
    box = [state]

    def call():
        box[0], metrics = step(box[0], batch)
        return metrics
    ms = median_ms(call, repeats)
    products = cost.pop("products", None)
    out = {"ms": ms, **cost, "_call": call}          # "_call": the step again, for interleaved timings (--ref)
    if products:
        alone = products_alone_ms(products, repeats, matrices)
        out.update({**({"products ms": alone["dense"]} if alone["dense"] else {}),
                    **({"sparse ms": alone["sparse"]} if alone["sparse"] else {})})
    return out


# ------------------------------------------------------------------ the machine's rates
def machine_rates(repeats: int) -> dict[str, float]:
    """Matmul GFLOP/s (2048² square, and the tall shapes for information) and in-place streaming GB/s."""
    import jax
    import jax.numpy as jnp

    rates = {}
    key = jax.random.key(0)
    for name, (a_shape, b_shape, transposed) in {"2048²": ((2048, 2048), (2048, 2048), False), **TALL}.items():
        a, b = jax.random.normal(key, a_shape), jax.random.normal(key, b_shape)
        f = jax.jit((lambda x, y: x.T @ y) if transposed else (lambda x, y: x @ y))
        m, k = (a_shape[1], a_shape[0]) if transposed else a_shape
        ms = median_ms(lambda: f(a, b), repeats)
        rates[f"matmul GFLOP/s {name}"] = 2 * m * k * b_shape[1] / ms / 1e6
    n = 64 * 2**20 // 4
    stream = jax.jit(lambda x, s, t: x * s + t, donate_argnums=0)
    box = [jnp.ones(n, jnp.float32)]
    scale, shift = jnp.float32(1.0), jnp.float32(0.0)

    def call():
        box[0] = stream(box[0], scale, shift)
        return box[0]
    rates[STREAM] = 2 * 4 * n / median_ms(call, repeats) / 1e6
    return rates


# ------------------------------------------------------------------ the rows
def graph_row(name: str, repeats: int) -> dict[str, float]:
    """One graph model's training step, built and batched as ``graph_step.py`` does (a ``BF16`` row: with
    ``model.matmul_dtype=bfloat16``)."""
    from graph_step import SETTINGS, build, shared_on

    extra = ["model.matmul_dtype=bfloat16"] if name in BF16 else []
    model, phase, state, _ = build([*SETTINGS[BF16.get(name, name)][0], *extra])
    return time_step(phase, state, shared_on(model, phase.plan(0).batch(0)), repeats, sparse_matrices(model.data))


def build_any(overrides: list[str]):
    """``graph_step.build`` for the ``--ref`` worker, which cannot import ``graph_step`` (it may import jmf
    modules an older commit lacks): each name is looked up where jmf keeps it now, then where it was (a279dc0:
    ``register_configs`` in ``jmf.config``, ``RunContext`` in ``jmf.models.protocols``, the data in ``jmf.run``)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    def first(name: str, *modules: str):
        for module in modules:
            try:
                return getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                continue
        raise ImportError(f"{name} is in none of {modules}")

    first("register_configs", "jmf.experiments", "jmf.config")()
    RunContext = first("RunContext", "jmf.models.base", "jmf.train.plan", "jmf.models.protocols")
    build_split, load_data = (first(n, "jmf.pipeline", "jmf.run") for n in ("build_split", "load_data"))
    with initialize_config_dir(config_dir=str(first("CONF_DIR", "jmf.config")), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "trainer.progress=false"])
    split = build_split(load_data(cfg.data, 0), cfg.partition, cfg.split, 0)
    model = instantiate(cfg.model)
    plan = model.setup(split, RunContext(seed=0, devices=1))
    return model, plan.phases[0], plan.state


def worker(settings: dict[str, list[str]], repeats: int) -> None:
    """``--worker``: print where ``jmf`` comes from and one JSON line ``{row: {ms, flops, bytes}}``, then time the row
    named on each line of stdin again (one JSON line ``{"ms": ...}`` each) until ``quit``."""
    import jax.numpy as jnp

    import jmf

    print(f"jmf: {jmf.__file__}", flush=True)
    out, calls = {}, {}
    for name, overrides in settings.items():
        model, phase, state = build_any(overrides)
        batch = phase.plan(0).batch(0)
        if hasattr(model, "warmup_epochs"):        # graph_step.shared_on: DisenCDR past its warm-up
            batch = {**batch, "step": jnp.int32(model.warmup_epochs * model.steps_per_epoch())}
        out[name] = time_step(phase, state, batch, repeats)
        calls[name] = out[name].pop("_call")
        print(f"{name}: {out[name]}", flush=True)
    print(json.dumps(out), flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            break
        print(json.dumps({"ms": median_ms(calls[line.strip()], repeats)}), flush=True)


def jmf_row(name: str, repeats: int, quick: bool) -> dict[str, float]:
    """The JMF joint step on ``engine_speed.py``'s synthetic split (its model; 10^4 users with ``quick``)."""
    from functools import partial

    from engine_speed import make_split

    from jmf.models.base import RunContext
    from jmf.models.encoders.cnn import CNNEncoder
    from jmf.models.encoders.transformer import TransformerEncoder
    from jmf.models.heads.linear import LinearHead
    from jmf.models.joint import JMF
    from jmf.models.joint.start import NormalFactors

    users, items = (10_000, 1_000) if quick else (100_000, 10_000)
    with open(make_split(users, items, 30.0, Path("/tmp/jmf_bench")), "rb") as f:
        split = pickle.load(f)
    encoder = CNNEncoder if name == "jmf-cnn" else TransformerEncoder
    model = JMF(partial(encoder, embed_dim=64, out_dim=64), partial(LinearHead), dim=64, batch_size=1024,
                items_per_user=8, max_len=50, init=NormalFactors(), negatives=64)
    plan = model.setup(split, RunContext(devices=1, checkpoint=False, progress=False))
    joint = plan.phases[1]
    return {**time_step(joint, plan.state, joint.plan(0).batch(0), repeats), "users": users}


def eval_row(n_items: int, dim: int, repeats: int) -> dict[str, float]:
    """One batch of the full-ranking evaluator as it runs for the dot-product models (MF, iALS, SVD, the CDR and
    graph models): ``protocols._full_batch_dot``, scoring, masking, top-k and metrics in one program."""
    import jax.numpy as jnp
    import numpy as np

    from jmf.evaluate import protocols

    config = protocols.EvalConfig()
    # evaluate_full's batch with score tables: the config's, capped so one [B, I] block stays ~2 SCORE_BLOCK_ELEMENTS
    cap = 1 << max(4, int(2 * protocols.SCORE_BLOCK_ELEMENTS // n_items).bit_length() - 1)
    batch, ks = min(config.batch_size, cap), tuple(config.ks)
    rng = np.random.default_rng(0)
    U, V = (jnp.asarray(rng.standard_normal((n, dim), np.float32)) for n in (10_000, n_items))
    users = jnp.asarray(rng.integers(0, 10_000, batch), jnp.int32)
    rel, excl = (jnp.asarray(rng.integers(0, n_items, (batch, w)), jnp.int32) for w in (8, 64))
    weight = jnp.ones(batch, jnp.float32)
    compiled = protocols._full_batch_dot.lower(U, V, None, users, rel, excl, weight, ks).compile()
    ms = median_ms(lambda: compiled(U, V, None, users, rel, excl, weight), repeats)
    program = functools.partial(protocols._full_batch_dot, ks=ks)
    alone = products_alone_ms(dot_products(program, U, V, None, users, rel, excl, weight), repeats)
    return {"ms": ms, **xla_cost(compiled), "batch": batch, "products ms": alone["dense"]}


def measure(name: str, repeats: int, quick: bool) -> dict[str, float]:
    """``{"ms", "flops", "bytes", ...}`` of one row."""
    if name in GRAPH or name in BF16:
        out = graph_row(name, repeats)
    elif name in JMF:
        out = jmf_row(name, repeats, quick)
    else:
        out = eval_row(*EVAL[name], repeats)
    gc.collect()
    return out


def ref_rows(commit: str, rows: list[str], repeats: int, results: dict[str, dict], rounds: int) -> dict[str, dict]:
    """The graph ``rows`` at ``commit``, timed in a subprocess importing ``jmf`` from a worktree of it (as that code
    ran: without this run's huge pages), interleaved with this run's own steps ``rounds`` more times, so a machine
    that speeds up or slows down during the run moves both alike; each side keeps its fastest median."""
    from graph_step import SETTINGS

    short = subprocess.run(["git", "rev-parse", "--short", commit], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.strip()
    tree = Path(f"/tmp/jmf-ref-{short}")
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=ROOT, check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "_JMF_HUGEPAGES_SET")}
    env.update({"JMF_HUGEPAGES": "0", "PYTHONPATH": os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])})
    settings = json.dumps({row: SETTINGS[row][0] for row in rows})
    cmd = [sys.executable, str(Path(__file__).resolve()), "--repeats", str(repeats), "--worker", settings]
    proc = subprocess.Popen(cmd, cwd=tree, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:
        print(f"  [@{short}] {line.rstrip()[:300]}", flush=True)
        lines.append(line)
        if line.startswith("{"):
            break
    if not lines or not lines[-1].startswith("{"):
        raise RuntimeError(f"--ref {commit}: the worker failed (exit {proc.wait()})")
    if not any(line.startswith("jmf: " + str(tree)) for line in lines):
        raise RuntimeError(f"--ref {commit}: the worker did not import jmf from {tree}")
    ref = json.loads(lines[-1])
    for round_ in range(rounds):
        for row in rows:
            results[row]["ms"] = min(results[row]["ms"], median_ms(results[row]["_call"], repeats))
            proc.stdin.write(row + "\n")
            proc.stdin.flush()
            ref[row]["ms"] = min(ref[row]["ms"], json.loads(proc.stdout.readline())["ms"])
            print(f"round {round_ + 1}: {row} {results[row]['ms']:.1f} ms now, {ref[row]['ms']:.1f} ms @{short}",
                  flush=True)
    proc.stdin.write("quit\n")
    proc.stdin.close()
    proc.wait()
    return {f"{row} @{short}": v for row, v in ref.items()}


def _huge_pages() -> None:
    """As ``graph_step.py`` does: XLA's per-step buffers in huge pages, before JAX loads (``jmf.hugepages``
    re-executes the command once), where this jmf has it; a ``--ref`` worker inherits the setting."""
    try:
        from jmf import hugepages
    except ImportError:
        return
    hugepages.ensure()


# ------------------------------------------------------------------ the table
def table_row(name: str, r: dict, matmul: float, stream: float) -> dict:
    """A result row: the cost, the measured and roofline ms, the fraction and what bounds it."""
    t_flops, t_bytes = r.get("flops", 0.0) / matmul / 1e6, r.get("bytes", 0.0) / stream / 1e6   # ms
    roof = max(t_flops, t_bytes)
    note = f"batch {r['batch']}" if "batch" in r else f"{r['users']:,} users" if "users" in r else ""
    alone, sparse = r.get("products ms"), r.get("sparse ms")
    return {"row": name, "GFLOP": round(r.get("flops", 0.0) / 1e9, 3),
            "GB accessed": round(r.get("bytes", 0.0) / 1e9, 3),
            "measured ms": round(r["ms"], 2), "roofline ms": round(roof, 2), "fraction": round(roof / r["ms"], 3),
            "bound": "matmul" if t_flops >= t_bytes else "memory",
            "products alone ms": "" if alone is None else round(alone, 2),
            "products share": "" if alone is None else round(alone / r["ms"], 3),
            "sparse alone ms": "" if sparse is None else round(sparse, 2),
            "sparse share": "" if sparse is None else round(sparse / r["ms"], 3), "note": note,
            "below 0.5: where the time goes": where_time_goes(name, roof / r["ms"], alone, sparse, r["ms"])}


def where_time_goes(name: str, fraction: float, dense_ms: float | None, sparse_ms: float | None, ms: float) -> str:
    """For a row below half its roofline, the measured split of its time: its dense products (timed alone at their
    shapes), its sparse products (timed alone on its graphs) and the rest, named by what the rest is in that
    program; empty for a row at or above half."""
    if fraction >= 0.5:
        return ""
    rest = {"eval": "top-k and masking", "jmf": "gathers, elementwise work and the optimiser update"}.get(
        name.split()[0].split("-")[0], "elementwise work, gathers and the optimiser update")
    parts = [f"dense products {dense_ms / ms:.0%} (at their shapes)"] if dense_ms else []
    parts += [f"sparse products {sparse_ms / ms:.0%} (random rows: memory latency)"] if sparse_ms else []
    outside = max(0.0, 1.0 - ((dense_ms or 0.0) + (sparse_ms or 0.0)) / ms)
    return "; ".join(parts + [f"{rest} {outside:.0%}"])


def speedups(results: dict[str, dict]) -> list[str]:
    """One sentence per graph step timed at ``--ref`` too: its speed-up, and the most a float32 step can reach
    (the ref step's time over the current step's dense products alone)."""
    lines = []
    for name, r in results.items():
        if "@" in name:
            continue
        base = BF16.get(name, name)           # a bfloat16 step against the reference's float32 one
        ref = next((v for k, v in results.items() if k.startswith(f"{base} @")), None)
        if ref is None:
            continue
        tag = next(k for k in results if k.startswith(f"{base} @")).split("@", 1)[1]
        line = f"* **{name}**: {ref['ms']:.0f} ms at {tag}, {r['ms']:.0f} ms now: {ref['ms'] / r['ms']:.2f}x"
        if name in BF16:
            line += " (float32 there, bfloat16 products here)"
        elif r.get("products ms"):
            line += (f"; its dense products alone take {r['products ms']:.0f} ms here, so no float32 step passes "
                     f"{ref['ms'] / r['products ms']:.2f}x over {tag} on this machine")
        lines.append(line + ".")
    return lines


def markdown(rows: list[dict]) -> str:
    """The table, each column at its own precision."""
    digits = {"GFLOP": 3, "GB accessed": 3, "measured ms": 1, "roofline ms": 1, "fraction": 3,
              "products alone ms": 1, "products share": 2, "sparse alone ms": 1, "sparse share": 2}
    return markdown_table([{k: f"{v:.{digits[k]}f}" if k in digits and v != "" else v for k, v in r.items()}
                           for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--quick", action="store_true", help="3 repeats, JMF rows at 10^4 users")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per row (default 5, --quick 3)")
    parser.add_argument("--name", default=None, help="result file stem (default roofline, --quick roofline_quick)")
    parser.add_argument("--ref", default=None, metavar="COMMIT", help="also time the graph steps at this commit")
    parser.add_argument("--rounds", type=int, default=2,
                        help="with --ref: times each graph step and its ref again, alternately, this many rounds")
    parser.add_argument("--worker", metavar="SETTINGS", help=argparse.SUPPRESS)   # JSON {row: overrides}
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 5)
    _huge_pages()
    if args.worker:
        return worker(json.loads(args.worker), repeats)
    import jax

    rates = [machine_rates(max(repeats, 5))]
    print("rates at the start: " + ", ".join(f"{k} {v:.1f}" for k, v in rates[0].items()), flush=True)
    results: dict[str, dict] = {}
    for name in args.rows:
        start = time.perf_counter()
        results[name] = measure(name, repeats, args.quick)
        r = results[name]
        print(f"{name}: {r['ms']:.1f} ms, {r.get('flops', 0) / 1e9:.3f} GFLOP, {r.get('bytes', 0) / 1e9:.3f} GB "
              f"({time.perf_counter() - start:.0f}s with building and compiling)", flush=True)
    graph = [r for r in args.rows if r in GRAPH]
    if args.ref and graph:
        results.update(ref_rows(args.ref, graph, repeats, results, args.rounds))
    elif args.ref:
        print(f"--ref {args.ref}: no graph step among --rows, nothing timed there", flush=True)
    rates.append(machine_rates(max(repeats, 5)))
    print("rates at the end: " + ", ".join(f"{k} {v:.1f}" for k, v in rates[-1].items()), flush=True)
    used = {k: max(r[k] for r in rates) for k in rates[0]}
    rows = [table_row(name, r, used[MATMUL], used[STREAM]) for name, r in results.items()]
    device = jax.devices()[0].device_kind
    first, last = rates
    header = (f"Machine ({device}): float32 matmul {used[MATMUL]:.1f} GFLOP/s (2048², the larger of "
              f"{first[MATMUL]:.1f} at the start and {last[MATMUL]:.1f} at the end), in-place streaming "
              f"{used[STREAM]:.1f} GB/s ({first[STREAM]:.1f}, {last[STREAM]:.1f}); tall matmuls (information only) "
              + ", ".join(f"{k} {used['matmul GFLOP/s ' + k]:.1f}" for k in TALL) + " GFLOP/s.\n\n")
    if args.ref and speedups(results):
        header += "\n".join(speedups(results)) + "\n\n"
    for r in results.values():
        r.pop("_call", None)
    extra = {"device_kind": device, "rates_start": rates[0], "rates_end": rates[1], "rates_used": used,
             "ref": args.ref, "repeats": repeats, "raw": results}
    write_results(args.name or ("roofline_quick" if args.quick else "roofline"), header + markdown(rows), rows, extra)
    floor = [r["fraction"] for r in rows if r["row"] in FLOOR] or [r["fraction"] for r in rows if "@" not in r["row"]]
    print(f"min_roofline_fraction={min(floor, default=float('nan')):.3f}")


if __name__ == "__main__":
    main()
