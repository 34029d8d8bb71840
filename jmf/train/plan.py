"""What the engine and a model hand each other: the run's context, an epoch's plan, a phase.

These are the engine's vocabulary (:mod:`jmf.train.engine` runs :class:`Phase` lists of
:class:`EpochPlan` epochs under a :class:`RunContext`); the model families in
:mod:`jmf.models.base` build them.  They sit below both, so that neither imports the other's
module to name them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jmf.evaluate.protocols import EvalConfig


@dataclass
class RunContext:
    """What ``fit`` gets from its caller: the seed, where to write, the engine's knobs, how to validate.

    ``jmf.run`` builds one from the run's config (``trainer`` group, ``eval`` group, seeds);
    ``RunContext(seed=s)`` or no context at all is library use: in memory, no files, no progress bar.

    Attributes:
      seed: the initialisation seed (``trainer.init_seed``, default the run's ``seed``).
      out_dir: the run directory (checkpoints, ``metrics.jsonl``, ``tb/``); ``None``: no files.
      devices: size of the ``data`` mesh axis; 0 = every device; ``None`` = the model's own default
        (MF and the CDR baselines train on one device: their small row-sparse scans are
        communication-bound on forced CPU devices; JMF on every device).
      eval_config: the run's ``eval`` group (:class:`jmf.evaluate.protocols.EvalConfig`); models
        validate through :class:`jmf.evaluate.validator.Validator`, which reads it.
      sampling_seed: seed of batches and negatives (``None``: ``seed``).
      compat: the config a checkpoint must have been written with to be resumed.
      The other fields mirror :class:`jmf.config.TrainerConfig`.
    """

    seed: int = 0
    out_dir: Path | None = None
    devices: int | None = None
    max_inflight: int = 0          # 0 = parallel.default_max_inflight()
    shard_tables: bool = False     # row-shard embedding tables over the data axis
    checkpoint: bool = True        # needs out_dir
    checkpoint_every: int = 0      # steps between mid-epoch checkpoints (0: epoch ends only)
    keep_checkpoints: int = 2
    async_checkpoints: bool = True
    resume: bool = True
    progress: bool = False
    tensorboard: bool = True
    log_every: int = 50            # steps between step-level metric points
    nan_check: bool = True
    sampling_seed: int | None = None
    eval_config: EvalConfig | None = None
    compat: dict = field(default_factory=dict)


@dataclass
class EpochPlan:
    """One epoch: ``n_steps`` steps; ``batch(i)`` is the device batch of step ``i``.

    Plans are pure functions of ``(sampling seed, phase, epoch)`` (draw them from
    :meth:`jmf.train.engine.Engine.epoch_rng`): a resumed run regenerates the epoch and skips the
    steps already done, and the device count never changes what is sampled.
    """

    n_steps: int
    batch: Callable[[int], Any]
    examples_per_step: int = 1


@dataclass
class Phase:
    """A stretch of training with one step function.

    Args:
      name: used in logs, metric names and checkpoints.
      epochs: maximum number of epochs.
      plan: ``epoch -> EpochPlan``.
      step: jitted ``(state, batch) -> (state, metrics)``; ``metrics["loss"]`` is the scalar the
        engine sums, checks for NaN/inf and logs (``Engine.jit_step`` jits it once).
      validate: ``state -> float`` after each epoch (enables best checkpoints and early stopping).
      mode: ``max`` or ``min``: which direction of ``validate`` is better.
      patience: epochs without improvement before the phase stops (0: never early).
      metric: name of the validated metric in logs.
      selections: more selections over the same epochs, each with its own validated metric, best epoch
        and best checkpoint (:class:`Selection`; e.g. the DL side of a model that trains both sides);
        early stopping follows ``validate`` alone.
    """

    name: str
    epochs: int
    plan: Callable[[int], EpochPlan]
    step: Callable
    validate: Callable[[Any], float] | None = None
    mode: str = "max"
    patience: int = 0
    metric: str = "valid"
    selections: tuple["Selection", ...] = ()


@dataclass(frozen=True)
class Selection:
    """A second best-epoch choice inside a :class:`Phase`: ``validate(state) -> float`` (or ``(float, {name:
    float})``: more figures of that epoch) after each epoch (after the phase's own validation), ``mode``
    ``max`` or ``min``.  The engine logs it as ``<phase>/<name>``, keeps the figures of its best epoch in
    the phase summary (``best_metrics``) and, with ``keep_state``, its best state (a ``best_<name>``
    checkpoint series on the engine, restored on resume like the others), returned in
    :attr:`FitResult.selected <jmf.train.engine.FitResult>`."""

    name: str
    validate: Callable[[Any], Any]
    mode: str = "max"
    keep_state: bool = True

    def __post_init__(self):
        if not self.name.isidentifier():
            raise ValueError(f"Selection name {self.name!r} must be an identifier (it names a checkpoint series)")
        if self.mode not in ("max", "min"):
            raise ValueError(f"Selection {self.name!r}: mode {self.mode!r} is not max|min")
