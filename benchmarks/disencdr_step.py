"""DisenCDR's training step on Amazon phone_electronic, and its parts, timed (run it on an idle machine).

    python benchmarks/disencdr_step.py            # experiment=amazon_phone_electronic_authors; overrides follow

An epoch is ``n_steps`` steps (163 here); the authors' code took 3.9 min per epoch on the same 2 cores.
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


def main() -> None:
    import jax
    import jax.numpy as jnp
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from jmf.config import CONF_DIR, register_configs
    from jmf.models.protocols import RunContext
    from jmf.run import build_split, load_data

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=amazon_phone_electronic_authors", "trainer.progress=false",
                                          *sys.argv[1:]])
    split = build_split(load_data(cfg.data, 0), cfg.partition, cfg.split, 0)
    model = instantiate(cfg.model)
    plan = model.setup(split, RunContext(seed=0, devices=1))
    phase, state = plan.phases[0], [plan.state]
    warm = phase.plan(0).batch(0)
    shared_on = {**warm, "step": jnp.int32(model.warmup_epochs * model.n_steps)}

    def step(batch):
        state[0], metrics = phase.step(state[0], batch)
        return metrics

    rows = [{"part": "training step, warm-up (specific encoders only)", "ms": timed(lambda: step(warm))},
            {"part": "training step, shared encoder on", "ms": timed(lambda: step(shared_on))}]
    params, data, seed = state[0]["params"], model.data, jnp.uint32(3)
    parts = {"specific VBGE, target, forward": lambda p: model.specific(p, data, "t", seed),
             "specific VBGE, source, forward": lambda p: model.specific(p, data, "s", seed),
             "shared VBGE, forward": lambda p: model.shared(p, data, seed),
             "share prior, source, forward": lambda p: model.share_prior(p, data, "s", seed),
             "specific VBGE, source, gradient": jax.grad(
                 lambda p: sum(x.sum() for x in model.specific(p, data, "s", seed)))}
    for name, fn in parts.items():
        compiled = jax.jit(fn)
        rows.append({"part": name, "ms": timed(lambda: compiled(params))})
    epoch_s = rows[1]["ms"] * model.n_steps / 1e3
    note = (f"\n\n{model.n_steps} steps per epoch ({model.n_users} users, items {model.n_items}): ~{epoch_s:.0f} s "
            f"per epoch with the shared encoder on, against the authors' {AUTHORS_EPOCH_S:.0f} s "
            f"({AUTHORS_EPOCH_S / epoch_s:.2f}x).")
    write_results("disencdr_step", markdown_table(rows, digits=1) + note, rows)


if __name__ == "__main__":
    main()
