"""DisenCDR's training step on Amazon phone_electronic, and its parts, timed (run it on an idle machine).

    python benchmarks/disencdr_step.py            # experiment=amazon_phone_electronic_authors[/disencdr_batch8192]

An epoch is ``n_steps`` steps (163 at the authors' batch of 1024, 21 at 8192: ``ROWS``); the authors' code took
3.9 min per epoch on the same 2 cores.  Extra command-line arguments are overrides for both settings.
The parts: each domain's specific VBGE, the shared (cross) VBGE and a share prior, forward, and the
gradient of the source-domain specific VBGE (the largest item table).
"""

from __future__ import annotations

import sys
import time

from common import markdown_table, write_results

AUTHORS_EPOCH_S = 3.9 * 60


def timed(fn, repeats: int = 5) -> float:
    """Milliseconds per call of ``fn`` (after one compiling call)."""
    import jax

    jax.block_until_ready(fn())
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats * 1e3


ROWS = {"authors' batch (1024)": "amazon_phone_electronic_authors",
        "batch 8192": "amazon_phone_electronic_authors/disencdr_batch8192"}


def build(experiment: str):
    """``(model, phase, state)`` of DisenCDR set up on ``experiment=<experiment>`` (plus ``sys.argv`` overrides)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from jmf.config import CONF_DIR, register_configs
    from jmf.models.protocols import RunContext
    from jmf.run import build_split, load_data

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", "trainer.progress=false", *sys.argv[1:]])
    split = build_split(load_data(cfg.data, 0), cfg.partition, cfg.split, 0)
    model = instantiate(cfg.model)
    plan = model.setup(split, RunContext(seed=0, devices=1))
    return model, plan.phases[0], plan.state


def step_rows(label: str, model, phase, state: list) -> tuple[list[dict], float]:
    """The warm-up and shared-on training steps of one setting, and its epoch (shared on) in seconds."""
    import jax.numpy as jnp

    warm = phase.plan(0).batch(0)
    shared_on = {**warm, "step": jnp.int32(model.warmup_epochs * model.n_steps)}

    def step(batch):
        state[0], metrics = phase.step(state[0], batch)
        return metrics

    rows = [{"part": f"training step, warm-up (specific encoders only), {label}", "ms": timed(lambda: step(warm))},
            {"part": f"training step, shared encoder on, {label}", "ms": timed(lambda: step(shared_on))}]
    return rows, rows[1]["ms"] * model.n_steps / 1e3


def main() -> None:
    import jax
    import jax.numpy as jnp

    rows, notes = [], []
    for label, experiment in ROWS.items():
        model, phase, state = build(experiment)
        step, epoch_s = step_rows(label, model, phase, [state])
        rows += step
        notes.append(f"{label}: {model.n_steps} steps per epoch, ~{epoch_s:.0f} s per epoch with the shared encoder "
                     f"on ({AUTHORS_EPOCH_S / epoch_s:.1f}x faster than the authors' {AUTHORS_EPOCH_S:.0f} s)")
    model, phase, state = build(ROWS["authors' batch (1024)"])
    params, data, seed = state["params"], model.data, jnp.uint32(3)
    parts = {"specific VBGE, target, forward": lambda p: model.specific(p, data, "t", seed),
             "specific VBGE, source, forward": lambda p: model.specific(p, data, "s", seed),
             "shared VBGE, forward": lambda p: model.shared(p, data, seed),
             "share prior, source, forward": lambda p: model.share_prior(p, data, "s", seed),
             "specific VBGE, source, gradient": jax.grad(
                 lambda p: sum(x.sum() for x in model.specific(p, data, "s", seed)))}
    for name, fn in parts.items():
        compiled = jax.jit(fn)
        rows.append({"part": name, "ms": timed(lambda: compiled(params))})
    note = (f"\n\n{model.n_users} users, items {model.n_items}; " + "; ".join(notes) + ". The encoders run over "
            "the whole graph once per step whatever the batch, so an epoch costs its number of steps.")
    write_results("disencdr_step", markdown_table(rows, digits=1) + note, rows)


if __name__ == "__main__":
    main()
