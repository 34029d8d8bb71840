"""Training in stages: each stage a run of passes on its own engine, in its own folder of the run directory.

A staged model (:class:`jmf.models.base.StagedModel`: CMF, EMCDR, PTUPCDR) runs each stage through
:func:`train_passes`: one engine step is one pass over the stage's data (a ``lax.scan`` in one
``jax.jit`` call, the batch axis sharded over the ``data`` mesh axis), an engine epoch is ``eval_every``
passes followed by a validation, and the engine brings checkpoints, exact resume, early stopping on the
best validated state, NaN checks, metric logs and the bound on steps in flight.  A model with several
stages gives each its own folder under the run directory (``tables/``, ``mapping/``, ``meta/``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jmf.evaluate.registry import lower_is_better
from jmf.train.engine import Engine
from jmf.train.plan import EpochPlan, Phase, RunContext


def stage_engine(ctx: RunContext | None, name: str, seed: int, folder: str | None = None) -> Engine:
    """The engine of one training stage.

    ``ctx`` (from ``jmf.run``): checkpoints, logs and the mesh of the run, in ``ctx.out_dir/folder``
    when ``folder`` is given (one folder holds one stage's checkpoints).  Without ``ctx`` the stage
    trains in memory, and with ``ctx.devices=None`` on one device: like MF's, these small-batch
    row-sparse scans are communication-bound when sharded over forced CPU devices.
    """
    ctx = ctx or RunContext()
    if ctx.devices is None:
        ctx = dataclasses.replace(ctx, devices=1)
    if folder is not None and ctx.out_dir is not None:
        ctx = dataclasses.replace(ctx, out_dir=ctx.out_dir / folder)
    return Engine(ctx, name=name, seed=seed)


@dataclass
class StageResult:
    """What :func:`train_passes` returns: the state kept (best validated, else last) and the book."""

    state: Any
    loss: float                   # mean loss of the last pass run
    history: list                 # validation values, one per engine epoch
    best_value: float             # the best validation value (nan without validation)
    monitor: str

    def stats(self) -> dict[str, float]:
        return {"train/validations": float(len(self.history)), f"train/best_valid_{self.monitor}": self.best_value}


def train_passes(engine: Engine, stage: str, state: Any, sharding: Any, step: Callable, batch_of: Callable[[int, Any], dict],
                 *, passes: int, eval_every: int = 1, validate: Callable[[Any], float] | None = None,
                 monitor: str = "valid", patience: int = 0, examples_per_pass: int = 1) -> StageResult:
    """Run ``passes`` passes of ``step`` on ``engine``, validating every ``eval_every`` passes and after the last.

    Args:
      stage: phase name (logs, metric names, the epoch RNG key).
      state: the placed initial state; sharding: its shardings (:meth:`Engine.state_shardings`).
      step: ``(state, batch) -> (state, {"loss": scalar})``, one whole pass (jitted here, traced once).
      batch_of: ``(pass index, numpy Generator keyed by (sampling seed, stage, pass)) -> device batch``.
      validate: ``state -> metric``; ``None`` keeps the last state.
      monitor: the validated metric (``rmse``/``mae`` are minimised, the rest maximised).
      patience: validations without improvement before the stage stops (0: run every pass).
    """
    jitted = engine.jit_step(step, sharding, name=stage)

    def plan(epoch: int) -> EpochPlan:
        first = epoch * eval_every
        n = min(eval_every, passes - first)
        return EpochPlan(n, lambda i: batch_of(first + i, engine.epoch_rng(stage, first + i)), examples_per_pass)

    phase = Phase(stage, -(-passes // eval_every) if passes > 0 else 0, plan, jitted, validate=validate,
                  mode="min" if lower_is_better(monitor) else "max", patience=patience, metric=monitor)
    result = engine.fit([phase], state)
    summary = result.phases[stage]
    kept = result.best_state if result.best_state is not None else result.state
    best = summary.history[summary.best_epoch] if validate is not None and summary.best_epoch >= 0 else math.nan
    return StageResult(kept, summary.losses[-1] if summary.losses else math.nan, summary.history, float(best),
                       monitor)
