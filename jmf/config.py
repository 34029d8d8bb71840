"""Typed config schemas (design.md#conventions) and start-up validation with the offending key named.

Hydra composes; these dataclasses type.  Fixed-shape groups (``partition``, ``split``,
``eval``, ``trainer``, ``optim``) are registered as structured-config schemas, so a
mistyped key or a wrong type fails while Hydra composes.  ``_target_`` groups (``data``,
``model``) are checked against the target's signature by :func:`check_target` before
anything runs.  The schemas and the ``experiment`` group are put in Hydra's ConfigStore by
:func:`jmf.experiments.register_configs`.
"""

from __future__ import annotations

import inspect
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from jmf.distributed import DistributedConfig
from jmf.errors import ConfigError
from jmf.jobdir import job_subdir

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
    valid_is_test: bool = False   # select epochs on the test fold (the DisenCDR/CDRIB authors' protocol)
    dl_folds: bool = False        # predefined: the DL side keeps its test fold and gets a validation fold
    targets: Any = None           # category_holdout: null (every category) | k (the k largest) | [names]
    target: Any = None            # category_holdout: one target's cold-start split (a name), for a single-target model
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
    plugins: list[str] = field(default_factory=list)   # modules that register a project's own metrics
    select_on_test: bool = False    # also report test figures at the test-best validation epoch (authors')


@dataclass
class TrainerConfig:
    """Run-level knobs, and the training engine's (:class:`jmf.train.engine.RunContext`).

    Attributes:
      optimized_metric: the metric ``jmf-train`` returns (for Optuna); a validation metric.
      top_n: write each evaluated user's top-N CF-side items to ``topn.json`` (0 = off).
      interest: write each evaluated user's interest distribution over the K CF-side categories to
        ``interest.csv`` (models with an ``interest(users)`` method: ``model=jmf``).
      save_model: write the fitted model to ``<run dir>/model/`` (``jmf.load``, ``jmf-recommend``).
      baseline: ``pop`` also scores popularity on the same folds (``baseline/...``; the table shows the lift).
      allow_leaks: run even when the data audit finds held-out rows in what the model reads (:mod:`jmf.audit`).
      log_level: Python logging level of the run.
      devices: size of the ``data`` mesh axis (0 = every device, all hosts).
      max_inflight: steps dispatched before the host waits for the oldest (0 = 8 on CPU, 64 else).
      cpu_threads: XLA CPU threads: ``auto`` (the model's choice: 1 for MF, else every core), ``all`` or a
        number (:mod:`jmf.threads`).
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
    save_model: bool = True
    baseline: str | None = None
    allow_leaks: bool = False
    log_level: str = "INFO"
    devices: int = 0
    max_inflight: int = 0
    cpu_threads: Any = "auto"
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


def data_dir() -> str:
    """The datasets' folder: ``$JMF_DATA_DIR``, or ``data`` (relative to the working directory) when it is
    unset or empty (an empty variable must not become ``/``)."""
    return os.environ.get("JMF_DATA_DIR", "").strip() or "data"


def register_resolvers() -> None:
    """The ``${jmf_data_dir:}`` and ``${jmf_job_subdir:...}`` resolvers the configs use (idempotent)."""
    if not OmegaConf.has_resolver("jmf_data_dir"):
        OmegaConf.register_new_resolver("jmf_data_dir", data_dir)
    if not OmegaConf.has_resolver("jmf_job_subdir"):
        OmegaConf.register_new_resolver("jmf_job_subdir", job_subdir)


def to_dataclass(cls, node: DictConfig | dict | None, key: str):
    """Build dataclass ``cls`` from ``node``; unknown keys and wrong types raise naming ``key.<field>``."""
    node = OmegaConf.create({}) if node is None else node
    if isinstance(node, DictConfig):  # resolve interpolations (${oc.env:...}, ${data.root}) in the full config
        try:
            node = OmegaConf.to_container(node, resolve=True)
        except Exception as err:
            raise ConfigError(f"config '{key}': {err}") from None
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), node)
    except Exception as err:  # omegaconf's errors carry the field name; add the group
        raise ConfigError(f"config '{key}': {err}") from None
    return cls(**OmegaConf.to_container(merged))


def check_target(node: DictConfig, key: str, skip: tuple[str, ...] = ()) -> None:
    """Check a ``_target_`` node against its callable's signature: unknown keys and basic types."""
    from hydra.utils import get_method

    target = node.get("_target_")
    if target is None:
        raise ConfigError(f"config '{key}': no _target_")
    try:
        fn = get_method(target)
    except Exception as err:
        raise ConfigError(f"config '{key}._target_': cannot import {target!r}: {err}") from None
    try:
        _check_keys(node, key, fn, target, skip)
    except ConfigError:
        raise
    except Exception as err:   # omegaconf: a missing interpolation (``${data.n_users}`` on another dataset), ...
        raise ConfigError(f"config '{key}': {' '.join(str(err).split())}") from None


def _check_keys(node: DictConfig, key: str, fn, target: str, skip: tuple[str, ...]) -> None:
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
            raise ConfigError(f"config '{key}.{name}': unknown key for {target} (accepts: {sorted(params)})")
        value = node[name]
        if isinstance(value, DictConfig) and "_target_" in value:
            check_target(value, f"{key}.{name}")
            continue
        if isinstance(value, DictConfig) and value and all(isinstance(v, DictConfig) and "_target_" in v
                                                           for v in value.values()):
            for sub in value:          # a keyed collection of parts (model.terms.<name>)
                check_target(value[sub], f"{key}.{name}.{sub}")
            continue
        if name in hints and not OmegaConf.is_missing(node, name) and not _type_ok(value, hints[name]):
            raise ConfigError(f"config '{key}.{name}': {value!r} is not of type {hints[name]}")


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


register_resolvers()   # at import too: a launcher's worker process resolves hydra.sweep.subdir
