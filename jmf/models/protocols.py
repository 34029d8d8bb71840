"""The model contract: what every model in jmf is, and how a model hands its training to the engine.

Every model -- baseline or joint -- is a class with three methods, and ``jmf.run`` calls every
model the same way (``model.fit(split, ctx)``, then the evaluators call ``score``/``predict``):

* ``fit(split, ctx=None) -> dict``: fit on ``split.train`` (O1) and ``split.dl`` (O2); returns
  training statistics for the log (``train/epochs``, ``train/best_valid_ndcg@10``, ...).  ``ctx``
  (:class:`RunContext`) carries the seed, the run directory (checkpoints, logs), the device count
  and the validation protocol; ``None`` is library use: seed 0, in memory, no files.
* ``score(users) -> [B, I_T]``: scores of every CF-side item for ``[B] int32`` users (higher is
  better); the ranking evaluators call it in fixed-size padded batches.
* ``predict(users, items) -> [N]``: ratings of paired users and CF-side items (RMSE/MAE).  A model
  without a rating scale raises ``ValueError`` and sets the class attribute ``rates = False``, so
  the evaluators report no RMSE/MAE for it on explicit data.
* optionally ``interest(users) -> [B, K]``: the interest distribution over the K CF-side
  categories (:class:`HasInterest`; ``trainer.interest=true`` writes it);
* optionally ``fitted_state()`` / ``load_fitted(split, saved)`` (:class:`Saveable`): the run writes
  the fitted model to ``<run dir>/model/`` and ``jmf.load`` reads it back; and ``score_new(history)``
  (:class:`FoldsIn`): scores for users who were not in training, from their raw history.

A model trained by gradient steps hands the loop to :class:`jmf.train.engine.Engine`, which
brings jitted steps on every device, checkpoints, exact resume, early stopping, NaN checks and
logs.  The hand-off is :class:`EngineModel`: the model writes ``setup(split, ctx)``, which returns
a :class:`TrainPlan` -- the engine, the placed initial *state* (one pytree), and a list of
:class:`Phase` (a *pure step* ``(state, batch) -> (state, {"loss": ...})``, the *batches* of each
epoch as an :class:`EpochPlan`, and optional *validation*) -- and ``finish(split, result)``, which
keeps the fitted state.  :meth:`EngineModel.fit` runs ``setup -> Engine.fit -> finish``.  A model
with several stages (EMCDR: two MFs, then a mapping) runs each stage on its own engine
(:func:`jmf.models.cdr.common.train_passes`) inside its own ``fit``.

Worked example -- a complete engine-trained model (item biases trained by SGD on a softmax over
each user's items); ``tests/models/test_model_contract.py`` runs this very code through the
contract test; docs/pages/tutorials/new-*.md plug models, heads and score terms in from outside::

    import jax, jax.numpy as jnp, numpy as np, optax
    from jmf.models.protocols import EngineModel, EpochPlan, Phase, RunContext, TrainPlan
    from jmf.train.engine import Engine

    class ItemBias(EngineModel):
        name = "item_bias"

        def __init__(self, epochs: int = 3, lr: float = 0.1, batch_size: int = 64):
            self.epochs, self.lr, self.batch_size = epochs, lr, batch_size

        def setup(self, split, ctx: RunContext | None = None) -> TrainPlan:
            ctx = ctx or RunContext()
            engine = Engine(ctx, name=self.name)
            tx = optax.sgd(self.lr)
            bias = jnp.zeros(split.train.shape[1])
            state = {"bias": bias, "opt": tx.init(bias)}                 # one pytree
            sharding = engine.state_shardings(state)
            state = engine.put_state(state, sharding)
            coo = split.train.tocoo()
            n_steps = max(1, -(-coo.nnz // self.batch_size))

            def step(state, batch):                                      # pure, jitted once
                def loss_fn(bias):
                    return -(jax.nn.log_softmax(bias)[batch["items"]]).mean()
                loss, grad = jax.value_and_grad(loss_fn)(state["bias"])
                update, opt = tx.update(grad, state["opt"])
                return {"bias": state["bias"] + update, "opt": opt}, {"loss": loss}

            def plan(epoch: int) -> EpochPlan:                           # batches: a pure function
                rng = engine.epoch_rng(0, epoch)                         # of (seed, phase, epoch)
                order = rng.integers(0, max(coo.nnz, 1), n_steps * self.batch_size)
                items = coo.col[order].astype(np.int32).reshape(n_steps, self.batch_size)
                return EpochPlan(n_steps, lambda i: engine.put_batch({"items": items[i]}))

            phase = Phase("train", self.epochs, plan, engine.jit_step(step, sharding))
            return TrainPlan(engine, state, [phase])

        def finish(self, split, result) -> dict[str, float]:
            self.bias = result.state["bias"]
            return {"train/epochs": float(len(result.phases["train"].losses))}

        def score(self, users):
            return jnp.broadcast_to(self.bias, (users.shape[0], self.bias.shape[0]))

        def predict(self, users, items):
            raise ValueError("model=item_bias ranks items; it has no rating scale")

Config: one YAML with ``_target_`` (``conf/model/<name>.yaml``, or any folder added with
``hydra.searchpath``); ``jmf-train model=<name>`` then runs it with checkpoints, resume, devices,
sweeps and tables.  Every ``conf/model/*.yaml`` is run through this contract by
``tests/models/test_model_contract.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import jax
import numpy as np

from jmf.data.split import SplitData

if TYPE_CHECKING:
    from jmf.evaluate.protocols import EvalConfig
    from jmf.train.engine import Engine, FitResult


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
        validate with its ``valid_protocol`` (:func:`jmf.evaluate.protocols.validation_config`).
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
    """

    name: str
    epochs: int
    plan: Callable[[int], EpochPlan]
    step: Callable
    validate: Callable[[Any], float] | None = None
    mode: str = "max"
    patience: int = 0
    metric: str = "valid"


class TrainPlan(NamedTuple):
    """What :meth:`EngineModel.setup` returns: everything before the loop."""

    engine: Engine
    state: Any                 # the placed initial state pytree
    phases: list[Phase]


@runtime_checkable
class Model(Protocol):
    """Every model (see the module docstring)."""

    def fit(self, split: SplitData, ctx: RunContext | None = None) -> dict[str, float]:
        """Fit on ``split``; returns training statistics for the log."""
        ...

    def score(self, users: jax.Array) -> jax.Array:
        """``[B] int32`` users -> ``[B, I_T]`` scores of the CF-side items (higher is better)."""
        ...

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Paired ``[N]`` users and CF-side items -> ``[N]`` predicted ratings."""
        ...


@runtime_checkable
class HasInterest(Protocol):
    """A model with an interest vector ``I_u`` over the K CF-side categories (``model=jmf``)."""

    def interest(self, users: jax.Array) -> jax.Array:
        """``[B]`` users -> ``[B, K]`` distribution over the CF-side categories."""
        ...


@runtime_checkable
class Saveable(Protocol):
    """A model that can be written to a run directory and read back (``jmf.artifact``, ``jmf.load``).

    ``fitted_state()`` returns a pytree of arrays and JSON scalars -- what the fit produced;
    ``load_fitted(split, saved)`` puts it back into a model built from the same config, given the same
    split (``saved``: ``{"arrays": path -> array, "scalars": path -> value}``, paths as
    ``jax.tree_util.keystr``; :func:`jmf.artifact.fill` puts arrays back into a rebuilt skeleton).
    """

    def fitted_state(self) -> Any: ...

    def load_fitted(self, split: SplitData, saved: dict) -> None: ...


class EngineModel:
    """Base of a model trained on the engine: ``fit`` = ``setup`` -> ``Engine.fit`` -> ``finish``.

    Subclasses write :meth:`setup` and :meth:`finish` (and ``score``/``predict``); see the worked
    example in the module docstring.
    """

    name: str = "model"

    def setup(self, split: SplitData, ctx: RunContext | None = None) -> TrainPlan:
        """Build the engine, the placed initial state and the phases (no training yet)."""
        raise NotImplementedError

    def finish(self, split: SplitData, result: FitResult) -> dict[str, float]:
        """Keep the fitted state of ``result`` (``result.best_state`` when a phase validated)."""
        raise NotImplementedError

    def fit(self, split: SplitData, ctx: RunContext | None = None) -> dict[str, float]:
        start = time.perf_counter()
        plan = self.setup(split, ctx)
        result = plan.engine.fit(plan.phases, plan.state)
        info = dict(self.finish(split, result))
        info.setdefault("train/fit_seconds", time.perf_counter() - start)
        return info
