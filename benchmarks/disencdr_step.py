"""DisenCDR's training step on Amazon phone_electronic, and its parts, timed (run it on an idle machine).

    python benchmarks/disencdr_step.py            # experiment=amazon_phone_electronic_authors[/disencdr_batch8192]

An epoch is ``n_steps`` steps (163 at the authors' batch of 1024, 21 at 8192: ``ROWS``); the authors' code took
3.9 min per epoch on the same 2 cores.  Extra command-line arguments are overrides for both settings.
The parts: each domain's specific VBGE, the shared (cross) VBGE and a share prior, forward, and the
gradient of the source-domain specific VBGE (the largest item table).
"""

from __future__ import annotations

import sys

from authors_protocol import AUTHORS_EPOCH_S
from common import markdown_table, write_results
from graph_step import build, shared_on, stepper, timed


ROWS = {"authors' batch (1024)": "amazon_phone_electronic_authors",
        "batch 8192": "amazon_phone_electronic_authors/disencdr_batch8192"}


def step_rows(label: str, model, phase, state: dict) -> tuple[list[dict], float]:
    """The warm-up and shared-on training steps of one setting, and its epoch (shared on) in seconds."""
    warm = phase.plan(0).batch(0)
    step, on = stepper(phase, state), shared_on(model, warm)
    rows = [{"part": f"training step, warm-up (specific encoders only), {label}", "ms": timed(lambda: step(warm))},
            {"part": f"training step, shared encoder on, {label}", "ms": timed(lambda: step(on))}]
    return rows, rows[1]["ms"] * model.n_steps / 1e3


def part_rows(model, params: dict) -> list[dict]:
    """The encoders' forward passes and the source specific encoder's gradient, each compiled alone."""
    import jax
    import jax.numpy as jnp

    data, seed = model.data, jnp.uint32(3)
    parts = {"specific VBGE, target, forward": lambda p: model.specific(p, data, "t", seed),
             "specific VBGE, source, forward": lambda p: model.specific(p, data, "s", seed),
             "shared VBGE, forward": lambda p: model.shared(p, data, seed),
             "share prior, source, forward": lambda p: model.share_prior(p, data, "s", seed),
             "specific VBGE, source, gradient": jax.grad(
                 lambda p: sum(x.sum() for x in model.specific(p, data, "s", seed)))}
    rows = []
    for name, fn in parts.items():
        compiled = jax.jit(fn)
        rows.append({"part": name, "ms": timed(lambda: compiled(params))})
    return rows


def main() -> None:
    rows, parts, notes = [], [], []
    for label, experiment in ROWS.items():
        model, phase, state, _ = build([f"experiment={experiment}", *sys.argv[1:]])
        if not parts:             # the authors' setting, before its steps donate the parameters
            parts = part_rows(model, state["params"])
        step, epoch_s = step_rows(label, model, phase, state)
        rows += step
        notes.append(f"{label}: {model.n_steps} steps per epoch, ~{epoch_s:.0f} s per epoch with the shared encoder "
                     f"on ({AUTHORS_EPOCH_S / epoch_s:.1f}x faster than the authors' {AUTHORS_EPOCH_S:.0f} s)")
    note = (f"\n\n{model.n_users} users, items {model.n_items}; " + "; ".join(notes) + ". The encoders run over "
            "the whole graph once per step whatever the batch, so an epoch costs its number of steps.")
    write_results("disencdr_step", markdown_table(rows + parts, digits=1) + note, rows + parts)


if __name__ == "__main__":
    main()
