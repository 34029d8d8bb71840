"""The model contract and the three model families: pick a family here, subclass its base.

Every model -- baseline or joint -- is a class with three methods, and ``jmf.run`` calls every
model the same way (``model.fit(split, ctx)``, then the evaluators call ``score``/``predict``):

* ``fit(split, ctx=None) -> dict``: fit on ``split.train`` (the CF side's training fold) and ``split.dl``
  (the DL side); returns training statistics for the log (``train/epochs``, ``train/best_valid_ndcg@10``,
  ...).  ``ctx`` (:class:`RunContext`) carries the seed, the run directory (checkpoints, logs), the device
  count and the run's ``eval`` group; ``None`` is library use: seed 0, in memory, no files.
* ``score(users) -> [B, I_CF]``: scores of every CF-side item for ``[B] int32`` users (higher is
  better); the ranking evaluators call it in fixed-size padded batches.
* ``predict(users, items) -> [N]``: ratings of paired users and CF-side items (RMSE/MAE).  A model
  without a rating scale raises ``ValueError`` and sets the class attribute ``rates = False``, so
  the evaluators report no RMSE/MAE for it on explicit data.

Every model subclasses exactly one family base (``tests/models/test_model_contract.py`` checks it):

* :class:`EngineModel` -- **engine-trained**: gradient steps on :class:`jmf.train.engine.Engine`, which
  brings jitted steps on every device, checkpoints, exact resume, early stopping, NaN checks and logs.
  The model writes ``setup(split, ctx) -> TrainPlan`` (the engine, the placed initial *state* pytree, a
  list of :class:`Phase`: a pure step ``(state, batch) -> (state, {"loss": ...})``, each epoch's batches
  as an :class:`EpochPlan`, optional validation) and ``finish(split, result)``, which keeps the fitted
  state; ``fit`` is ``setup -> Engine.fit -> finish``.  MF, LightGCN, BiTGCF, DisenCDR, CDRIB, JMF (and JMF over
  every target, ``jmf_map``).
* :class:`StagedModel` -- **staged**: ``fit`` chains several training stages, each on its own engine
  in its own folder of the run directory (:func:`stage_engine`, :func:`train_passes`), e.g. two
  per-side MFs and then a mapping; the fitted result is a set of attributes.  CMF, EMCDR, PTUPCDR.
* :class:`ClosedFormModel` -- **closed-form**: ``fit`` computes the model directly (counts, an SVD,
  alternating least squares), no gradient steps; the fitted result is a set of attributes.
  Popularity, SVD, iALS, co-occurrence, the planted oracle.

Staged and closed-form models list their fitted attributes in ``fitted`` and are saved and loaded by
:class:`AttributeState`; engine models write ``fitted_state``/``load_fitted`` themselves.  Models
validate while they fit through :class:`jmf.evaluate.validator.Validator` (built from ``ctx`` and the
split: the run's validation protocol, the metric registry's names); none reads the ``eval`` group itself.

Optional capabilities are named protocols, checked with ``isinstance``: :class:`HasInterest`
(``interest(users)``: ``trainer.interest=true`` writes it), :class:`FoldsIn` (``score_new(history)``:
users who were not in training, from their raw history), :class:`NewUserInterest` (``interest_new``),
:class:`Saveable` (``fitted_state()``/``load_fitted(split, saved)``: the run writes ``<run dir>/model/``
and ``jmf.load`` reads it back), and the evaluator's :class:`DotScores` (``score_tables()``: full ranking in one
program) and :class:`ScoresCandidates` (``score_candidates(users, items)``: the sampled protocols score the
candidates only).  The design behind the families: ``docs/pages/design.md``.

Worked example -- a complete engine-trained model (item biases trained by SGD on a softmax over
each user's items); ``tests/models/test_model_contract.py`` runs this very code through the
contract test; docs/pages/tutorials/new-*.md plug models, heads and score terms in from outside::

    import jax, jax.numpy as jnp, numpy as np, optax
    from jmf.models.base import EngineModel, EpochPlan, Phase, RunContext, TrainPlan
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
``tests/models/test_model_contract.py``, which also checks that its class subclasses exactly one family.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax
import numpy as np

from jmf.data.split import SplitData
from jmf.evaluate.protocols import DotScores, ScoresCandidates  # noqa: F401 -- the evaluator's, named beside the others
from jmf.pytrees import nested
from jmf.train.engine import Engine, FitResult
from jmf.train.plan import EpochPlan, Phase, RunContext
from jmf.train.stages import StageResult, stage_engine, train_passes

__all__ = ["AttributeState", "BothSides", "ClosedFormModel", "EngineModel", "EpochPlan", "FAMILIES", "FoldsIn", "HasInterest",
           "Model", "NewUserInterest", "Phase", "RunContext", "Saveable", "StageResult", "StagedModel", "TrainPlan",
           "family_of", "stage_engine", "train_passes"]


class TrainPlan(NamedTuple):
    """What :meth:`EngineModel.setup` returns: everything before the loop."""

    engine: Engine
    state: Any                 # the placed initial state pytree
    phases: list[Phase]


# ------------------------------------------------------------------ the contract and the capabilities
@runtime_checkable
class Model(Protocol):
    """Every model (see the module docstring)."""

    def fit(self, split: SplitData, ctx: RunContext | None = None) -> dict[str, float]:
        """Fit on ``split``; returns training statistics for the log."""
        ...

    def score(self, users: jax.Array) -> jax.Array:
        """``[B] int32`` users -> ``[B, I_CF]`` scores of the CF-side items (higher is better)."""
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
class FoldsIn(Protocol):
    """A model that scores users who were not in training from their raw history (``Recommender.recommend_new``)."""

    def score_new(self, hist) -> tuple[Any, np.ndarray]:
        """``hist`` (:class:`jmf.recommend.History`) -> ``([B, I_CF] scores, [B] bool: the user had usable rows)``."""
        ...


@runtime_checkable
class NewUserInterest(Protocol):
    """A model with an interest vector for users who were not in training (``Recommender.interest``)."""

    def interest_new(self, hist) -> Any:
        """``hist`` -> ``[B, K]`` distribution over the CF-side categories."""
        ...


@runtime_checkable
class BothSides(Protocol):
    """A model that trains the DL side as a second target and ranks its items (DisenCDR, CDRIB, BiTGCF): with
    ``split.dl_folds=true`` one run is validated and tested on both sides (``dl/...`` metrics)."""

    def dl_view(self) -> Any:
        """The fitted model as a :class:`Model` of the DL side (at the DL side's own best epoch), to evaluate on
        ``split.mirrored()``; ``None`` when the split has no DL folds."""
        ...


@runtime_checkable
class MultiTarget(Protocol):
    """A model trained over every target category of ``split=category_holdout`` in one run (``model=jmf_map``),
    evaluated target by target."""

    def target_view(self, k: int, hide_source: int | None = None) -> Any:
        """The fitted model as a :class:`Model` of the ``k``-th target (its split: ``jmf.data.holdout.view_at``),
        with the category ``hide_source`` also hidden from every user's input when given."""
        ...


@runtime_checkable
class Saveable(Protocol):
    """A model that can be written to a run directory and read back (``jmf.artifact``, ``jmf.load``).

    ``fitted_state()`` returns a pytree of arrays and JSON scalars -- what the fit produced;
    ``load_fitted(split, saved)`` puts it back into a model built from the same config, given the same
    split (``saved``: ``{"arrays": path -> array, "scalars": path -> value}``, paths as
    ``jax.tree_util.keystr``; :func:`jmf.pytrees.fill` puts arrays back into a rebuilt skeleton).
    """

    def fitted_state(self) -> Any: ...

    def load_fitted(self, split: SplitData, saved: dict) -> None: ...


class AttributeState:
    """``fitted_state``/``load_fitted`` for models whose fit leaves plain attributes (``fitted``: their
    names; arrays, dicts of arrays, scalars), saved as they are and set back on load.  Anything else
    (an NNX module's state) goes in :meth:`extra_state` and is put back by :meth:`restored`."""

    fitted: tuple[str, ...] = ()

    def fitted_state(self) -> dict:
        return {**{name: getattr(self, name) for name in self.fitted}, **self.extra_state()}

    def extra_state(self) -> dict:
        return {}

    def load_fitted(self, split: SplitData, saved: dict) -> None:
        def mine(flat):
            return {k: v for k, v in flat.items() if k.split("]")[0][2:-1] in self.fitted}
        for name, value in nested(mine(saved["arrays"]), mine(saved["scalars"])).items():
            setattr(self, name, jax.tree.map(lambda x: jax.numpy.asarray(x) if isinstance(x, np.ndarray) else x,
                                             value))
        self.restored(split, saved)

    def restored(self, split: SplitData, saved: dict) -> None:
        """Rebuild what the attributes imply (derived tables, modules from ``extra_state``); nothing by default."""


# ------------------------------------------------------------------ the three families
class EngineModel:
    """Engine-trained: ``fit`` = ``setup`` -> ``Engine.fit`` -> ``finish``.

    Subclasses write :meth:`setup` and :meth:`finish` (and ``score``/``predict``); see the worked
    example in the module docstring.
    """

    name: str = "model"
    family = "engine"

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


class StagedModel(AttributeState):
    """Staged: ``fit(split, ctx)`` runs its stages in order, each on its own engine and folder.

    A stage is ``engine = stage_engine(ctx, name, seed, folder)`` and ``train_passes(engine, ...)``
    (:mod:`jmf.train.stages`): checkpoints and exact resume per stage, validation-based selection.
    The subclass writes ``fit``, ``score``, ``predict`` and lists its fitted attributes in ``fitted``.
    """

    name: str = "model"
    family = "staged"

    def fit(self, split: SplitData, ctx: RunContext | None = None) -> dict[str, float]:
        raise NotImplementedError


class ClosedFormModel(AttributeState):
    """Closed-form: ``fit(split, ctx)`` computes the model directly; no gradient steps, no engine.

    The subclass writes ``fit``, ``score``, ``predict`` and lists its fitted attributes in ``fitted``.
    """

    name: str = "model"
    family = "closed-form"

    def fit(self, split: SplitData, ctx: RunContext | None = None) -> dict[str, float]:
        raise NotImplementedError


FAMILIES = (EngineModel, StagedModel, ClosedFormModel)


def family_of(cls: type) -> type | None:
    """The one family base ``cls`` subclasses (``None`` for none; a ``TypeError`` for several)."""
    bases = [f for f in FAMILIES if issubclass(cls, f)]
    if len(bases) > 1:
        raise TypeError(f"{cls.__name__} subclasses several model families: {[b.__name__ for b in bases]}")
    return bases[0] if bases else None
