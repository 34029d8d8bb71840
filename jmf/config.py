"""Typed config schemas (STYLE R3) and start-up validation with the offending key named.

Hydra composes; these dataclasses type.  Fixed-shape groups (``partition``, ``split``,
``eval``, ``trainer``, ``optim``) are registered as structured-config schemas, so a
mistyped key or a wrong type fails while Hydra composes.  ``_target_`` groups (``data``,
``model``) are checked against the target's signature by :func:`check_target` before
anything runs.  Experiments under ``experiments/`` are registered as the ``experiment``
group (STYLE §A: a root search path breaks ``experiment=glob(*)`` in Hydra 1.3.8).
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from jmf.data.preprocess import PreprocessConfig
from jmf.distributed import DistributedConfig
from jmf.optim import OptimConfig

ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = ROOT / "conf"
EXPERIMENTS_DIR = ROOT / "experiments"


@dataclass
class PartitionConfig:
    """O1/O2 partition: ``k`` largest categories or an explicit ``cf_categories`` list (ids or names)."""

    k: int | None = None
    cf_categories: list[Any] | None = None


@dataclass
class SplitConfig:
    """Hold-out (see :func:`jmf.data.split.make_split`)."""

    method: str = "ratio"
    test_ratio: float = 0.2
    valid_ratio: float = 0.1
    by: str = "user"
    order: str = "time"
    beta: float = 0.2
    cold_valid_fraction: float = 0.1
    min_train: int = 1
    seed: int | None = None   # default: the run's seed


@dataclass
class EvalSchema:
    """The ``eval`` group (mirrors :class:`jmf.evaluate.protocols.EvalConfig`)."""

    protocol: str = "full"
    ks: list[int] = field(default_factory=lambda: [10, 20])
    negatives: int = 999
    candidates: str | None = None
    sampling_seed: int = 0
    batch_size: int = 512
    ratings: bool = True
    test_sampling_seeds: list[int] = field(default_factory=list)
    test_full: bool = False
    valid_protocol: str = "full"    # full | test: models validate (select epochs) with the test's protocol


@dataclass
class TrainerConfig:
    """Run-level knobs, and the training engine's (:class:`jmf.train.engine.RunContext`).

    Attributes:
      optimized_metric: the metric ``jmf-train`` returns (for Optuna); a validation metric.
      top_n: write each evaluated user's top-N CF-side items to ``topn.json`` (0 = off).
      interest: write each evaluated user's interest distribution over the K CF-side categories to
        ``interest.csv`` (models with an ``interest(users)`` method: ``model=jmf``).
      log_level: Python logging level of the run.
      devices: size of the ``data`` mesh axis (0 = every device, all hosts).
      max_inflight: steps dispatched before the host waits for the oldest (0 = 8 on CPU, 64 else).
      shard_tables: shard user/item embedding tables by rows over the mesh (catalogues too big for one device).
      checkpoint: write orbax checkpoints into ``<run dir>/checkpoints``.
      checkpoint_every: steps between mid-epoch checkpoints (0 = at epoch ends only).
      keep_checkpoints: periodic checkpoints kept (the best-validation one is kept apart).
      resume: resume from the run directory's last checkpoint; ``false`` starts fresh on purpose.
      progress: progress bar (on a terminal).
      tensorboard: TensorBoard event files in ``<run dir>/tb`` (JSONL is always written).
      log_every: steps between step-level metric points.
      nan_check: stop at a NaN/inf loss, naming the step and the loss term.
      init_seed: seed of parameter initialisation (null = ``seed``).
      sampling_seed: seed of batch and negative sampling (null = ``seed``).
      distributed: multi-host start-up (:class:`jmf.distributed.DistributedConfig`).
    """

    optimized_metric: str = "valid/ndcg@10"
    top_n: int = 0
    interest: bool = False
    log_level: str = "INFO"
    devices: int = 0
    max_inflight: int = 0
    shard_tables: bool = False
    checkpoint: bool = True
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    resume: bool = True
    progress: bool = True
    tensorboard: bool = True
    log_every: int = 50
    nan_check: bool = True
    init_seed: int | None = None
    sampling_seed: int | None = None
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


def register_configs() -> None:
    """Register schemas and experiments in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(group="partition", name="schema", node=PartitionConfig)
    cs.store(group="split", name="schema", node=SplitConfig)
    cs.store(group="eval", name="schema", node=EvalSchema)
    cs.store(group="trainer", name="schema", node=TrainerConfig)
    cs.store(group="optim", name="schema", node=OptimConfig)
    for path in sorted(EXPERIMENTS_DIR.glob("*.yaml")):
        cs.store(group="experiment", name=path.stem, node=OmegaConf.load(path), package="_global_")


def to_dataclass(cls, node: DictConfig | dict | None, key: str):
    """Build dataclass ``cls`` from ``node``; unknown keys and wrong types raise naming ``key.<field>``."""
    node = OmegaConf.create({}) if node is None else node
    if isinstance(node, DictConfig):  # resolve interpolations (${oc.env:...}, ${data.root}) in the full config
        try:
            node = OmegaConf.to_container(node, resolve=True)
        except Exception as err:
            raise ValueError(f"config '{key}': {err}") from None
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), node)
    except Exception as err:  # omegaconf's errors carry the field name; add the group
        raise ValueError(f"config '{key}': {err}") from None
    return cls(**OmegaConf.to_container(merged))


def check_target(node: DictConfig, key: str, skip: tuple[str, ...] = ()) -> None:
    """Check a ``_target_`` node against its callable's signature: unknown keys and basic types."""
    from hydra.utils import get_method

    target = node.get("_target_")
    if target is None:
        raise ValueError(f"config '{key}': no _target_")
    try:
        fn = get_method(target)
    except Exception as err:
        raise ValueError(f"config '{key}._target_': cannot import {target!r}: {err}") from None
    sig = inspect.signature(fn)
    params = sig.parameters
    accepts_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    try:
        hints = typing.get_type_hints(fn.__init__ if inspect.isclass(fn) else fn)
    except Exception:
        hints = {}
    for name in node:
        if name.startswith("_") or name in skip:
            continue
        if name not in params:
            if accepts_kwargs:
                continue
            raise ValueError(f"config '{key}.{name}': unknown key for {target} (accepts: {sorted(params)})")
        value = node[name]
        if isinstance(value, DictConfig) and "_target_" in value:
            check_target(value, f"{key}.{name}")
            continue
        if name in hints and not OmegaConf.is_missing(node, name) and not _type_ok(value, hints[name]):
            raise ValueError(f"config '{key}.{name}': {value!r} is not of type {hints[name]}")


def _type_ok(value: Any, hint: Any) -> bool:
    if isinstance(value, (DictConfig, ListConfig)):
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool):
        return isinstance(value, hint)
    return True
