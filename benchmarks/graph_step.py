"""The graph models' training step and epoch on their own tasks, timed (run it on an otherwise idle machine).

    python benchmarks/graph_step.py                   # every model of SETTINGS
    python benchmarks/graph_step.py --models cdrib    # a subset

Each graph model encodes its whole graph at every step, so an epoch costs ``steps per epoch`` encodings
whatever else the step does.  A row is one ``jmf-train experiment=<experiment>`` setting (the model at its
conf defaults, the authors'), its compiled step timed over ``--repeats`` calls after one warm-up call, with
the DisenCDR shared encoder switched on (its costlier phase).  ``authors s/epoch`` is the authors' own code
on the same 2 cores where it was measured (DisenCDR: median epoch; CDRIB: its first epoch had not ended
after 8 minutes, so the figure is a lower bound).
"""

from __future__ import annotations

import argparse
import time

from authors_protocol import AUTHORS_EPOCH_S
from jmf import hugepages
from common import markdown_table, write_results

# label -> (experiment overrides, the authors' seconds per epoch on the same cores or None, a lower bound?)
SETTINGS = {
    "lightgcn": (["experiment=amazon_phone_electronic/lightgcn", "partition.cf_categories=[phone]"], None, False),
    "bitgcf": (["experiment=amazon_phone_electronic_bitgcf/bitgcf"], None, False),
    "disencdr": (["experiment=amazon_phone_electronic_authors"], AUTHORS_EPOCH_S, False),
    "cdrib": (["experiment=cdrib_sport_cloth/cdrib"], 8 * 60, True),
}


def build(overrides: list[str]):
    """``(model, phase, state, split)``: the model of ``jmf-train <overrides>`` set up on one device."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from jmf.config import CONF_DIR
    from jmf.experiments import register_configs
    from jmf.models.base import RunContext
    from jmf.pipeline import build_split, load_data

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "trainer.progress=false"])
    split = build_split(load_data(cfg.data, 0), cfg.partition, cfg.split, 0)
    model = instantiate(cfg.model)
    plan = model.setup(split, RunContext(seed=0, devices=1))
    return model, plan.phases[0], plan.state, split


def timed(fn, repeats: int = 5) -> float:
    """Milliseconds per call of ``fn`` (after one compiling call)."""
    import jax

    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats * 1e3


def stepper(phase, state: dict):
    """``step(batch) -> metrics``: the phase's training step, carrying the (donated) state along."""
    box = [state]

    def step(batch):
        box[0], metrics = phase.step(box[0], batch)
        return metrics
    return step


def shared_on(model, batch: dict) -> dict:
    """``batch`` at DisenCDR's first step after the warm-up (its costlier phase); other models: unchanged."""
    import jax.numpy as jnp

    if not hasattr(model, "warmup_epochs"):
        return batch
    return {**batch, "step": jnp.int32(model.warmup_epochs * model.steps_per_epoch())}


def time_step(overrides: list[str], repeats: int) -> dict:
    """One setting's step in ms, its steps per epoch and the sizes of its graphs."""
    import jax

    model, phase, state, split = build(overrides)
    n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
    step, batch = stepper(phase, state), shared_on(model, phase.plan(0).batch(0))
    return {"ms/step": timed(lambda: step(batch), repeats), "steps/epoch": model.steps_per_epoch(),
            "batch": model.batch_size, "edges": split.train.nnz + split.dl.nnz, "parameters": n_params}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    hugepages.ensure()     # XLA's per-step buffers in huge pages (jmf/hugepages.py), before JAX loads
    rows = []
    for name in args.models:
        overrides, authors, lower_bound = SETTINGS[name]
        row = {"model": name, "setting": " ".join(overrides), **time_step(overrides, args.repeats)}
        row["s/epoch"] = row["ms/step"] * row["steps/epoch"] / 1e3
        row["authors s/epoch"] = "" if authors is None else (">" if lower_bound else "") + f"{authors:.0f}"
        row["speed-up"] = "" if authors is None else (">" if lower_bound else "") + f"{authors / row['s/epoch']:.2f}x"
        rows.append(row)
        print(row, flush=True)
    write_results("graph_step", markdown_table(rows, digits=1), rows)


if __name__ == "__main__":
    main()
