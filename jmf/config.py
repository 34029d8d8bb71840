"""Typed config schemas (design.md#conventions) and start-up validation with the offending key named.

Hydra composes; these dataclasses type.  Fixed-shape groups (``partition``, ``split``,
``eval``, ``trainer``, ``optim``) are registered as structured-config schemas, so a
mistyped key or a wrong type fails while Hydra composes.  ``_target_`` groups (``data``,
``model``) are checked against the target's signature by :func:`check_target` before
anything runs.  Experiments under ``experiments/`` are registered as the ``experiment``
group (design.md#conventions: a root search path breaks ``experiment=glob(*)`` in Hydra 1.3.8).
"""

from __future__ import annotations

import functools
import inspect
import os
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
    save_model: bool = True
    baseline: str | None = None
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


def data_dir() -> str:
    """The datasets' folder: ``$JMF_DATA_DIR``, or ``data`` (relative to the working directory) when it is
    unset or empty (an empty variable must not become ``/``)."""
    return os.environ.get("JMF_DATA_DIR", "").strip() or "data"


def _register_resolvers() -> None:
    if not OmegaConf.has_resolver("jmf_data_dir"):
        OmegaConf.register_new_resolver("jmf_data_dir", data_dir)
    if not OmegaConf.has_resolver("jmf_job_subdir"):
        OmegaConf.register_new_resolver("jmf_job_subdir", job_subdir)


def register_configs(argv: list[str] | None = None) -> None:
    """Register schemas and experiments in Hydra's ConfigStore (idempotent), and the ``${jmf_data_dir:}``
    resolver the dataset configs' ``root`` uses.

    ``argv`` (a command line's overrides) registers the rows ``experiment=<task>/<row>`` of the tasks it
    names only (every task's default row is always registered): Hydra deep-copies the whole store for
    every config it composes, ~1 s with all ~240 rows.  ``None`` (library use) or a sweep over
    experiments registers every row."""
    _register_resolvers()
    cs = ConfigStore.instance()
    cs.store(group="partition", name="schema", node=PartitionConfig)
    cs.store(group="split", name="schema", node=SplitConfig)
    cs.store(group="eval", name="schema", node=EvalSchema)
    cs.store(group="trainer", name="schema", node=TrainerConfig)
    cs.store(group="optim", name="schema", node=OptimConfig)
    tasks = None if argv is None else _requested_tasks(argv)
    for name, rows in experiment_catalogue().items():
        cs.store(group="experiment", name=name, node=_experiment_node(name), package="_global_")
        for row in rows if tasks is None or name in tasks else ():
            cs.store(group=f"experiment/{name}", name=row, node=_experiment_node(name, row), package="_global_")


def _requested_tasks(argv: list[str]) -> set[str] | None:
    """The tasks ``experiment=<task>[/<row>]`` overrides name; ``None`` (all) for a sweep over them."""
    tasks = set()
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key == "experiment":
            if any(c in value for c in ",()[]*"):
                return None
            tasks.add(value.split("/", 1)[0].strip())
    return tasks


def experiment_catalogue() -> dict[str, list[str]]:
    """``experiments/<task>.yaml`` -> the rows ``experiment=<task>/<row>`` it offers: one per file in
    ``experiments/<task>/`` (a model with a table's settings) and one per ``conf/model/*.yaml`` with no
    such file (that model at its conf defaults)."""
    models = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
    out = {}
    for path in sorted(EXPERIMENTS_DIR.glob("*.yaml")):
        files = sorted(_row_files(path.stem))
        out[path.stem] = files + [m for m in models if m not in files]
    return out


def _includes(task: str) -> list[str]:
    """The experiments ``experiments/<task>.yaml`` includes (plain ``- <other experiment>`` entries)."""
    defaults = _parsed(EXPERIMENTS_DIR / f"{task}.yaml").get("defaults") or []
    return [e for e in defaults if isinstance(e, str) and "/" not in e]


def _row_files(task: str) -> set[str]:
    """The rows of ``experiments/<task>/`` and of the experiments it includes (which it inherits)."""
    rows = {p.stem for p in (EXPERIMENTS_DIR / task).glob("*.yaml")}
    for include in _includes(task):
        rows |= _row_files(include)
    return rows


# Experiments (design.md#conventions).  ``experiments/<task>.yaml`` holds a task (data, partition, split, eval) and
# its default row, either inline (``override /model: ...`` and ``model:`` keys) or as a reference
# ``- <task>/<row>`` to ``experiments/<task>/<row>.yaml``; a row file holds one model's settings and may
# start from a sibling row (``- <row>``).  ``experiment=<task>`` composes the task with its default row,
# ``experiment=<task>/<row>`` the task with that row instead.  Plain includes (``- <other experiment>``)
# bring the other experiment's task and, unless overridden, its default row.  The composition is done
# here, so that a row can replace the model of its task (Hydra merges, it cannot remove keys).


def _entries(node: DictConfig) -> list:
    return list(node.get("defaults") or [])


def _entry_key(entry) -> str:
    """``{'override /model/encoder': 'cnn'}`` -> ``/model/encoder``; ``'task/row'`` -> ``task/row``."""
    key = entry if isinstance(entry, str) else next(iter(entry))
    return key.removeprefix("override ").strip()


def _is_model(entry) -> bool:
    key = _entry_key(entry)
    return not isinstance(entry, str) and (key == "/model" or key.startswith("/model/"))


def _load(path: Path) -> DictConfig:
    return OmegaConf.create(_parsed(path))      # a new config: the cached containers are copied, not shared


def _parsed(path: Path) -> dict:
    """An experiment file as plain containers, parsed once per version of the file (read-only)."""
    if not path.exists():
        raise ConfigError(f"experiment: {path} does not exist (referenced from experiments/)")
    return _parse(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=None)
def _parse(path: Path, mtime_ns: int) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path))


def _task_part(name: str) -> tuple[list, dict]:
    """The task of ``experiments/<name>.yaml`` (and of its includes): everything but the model."""
    node = _load(EXPERIMENTS_DIR / f"{name}.yaml")
    defaults, body = [], {}
    for entry in _entries(node):
        if isinstance(entry, str) and "/" not in entry:          # include another experiment
            inc_defaults, inc_body = _task_part(entry)
            defaults += inc_defaults
            body = OmegaConf.merge(body, inc_body)
        elif not isinstance(entry, str) and not _is_model(entry):
            defaults.append(entry)
    own = {k: v for k, v in node.items() if k not in ("defaults", "model")}
    return defaults, OmegaConf.merge(body, own)


def _model_part(name: str) -> tuple[list, dict]:
    """The default row of ``experiments/<name>.yaml``: inline, a ``<task>/<row>`` reference, or inherited."""
    node = _load(EXPERIMENTS_DIR / f"{name}.yaml")
    entries = _entries(node)
    refs = [e for e in entries if isinstance(e, str) and "/" in e]
    inline = [e for e in entries if _is_model(e)]
    if not refs and not inline and "model" not in node:
        for include in (e for e in entries if isinstance(e, str)):
            return _model_part(include)
        return [], {}
    defaults, body = [], {}
    for ref in refs:
        task, row = ref.split("/", 1)
        ref_defaults, ref_body = _row_part(task, row)
        defaults += ref_defaults
        body = OmegaConf.merge(body, ref_body)
    return defaults + inline, OmegaConf.merge(body, {"model": node.get("model", {})})


def _row_part(task: str, row: str) -> tuple[list, dict]:
    """``experiments/<task>/<row>.yaml`` (its sibling rows first), or ``model=<row>`` at its conf defaults."""
    path = EXPERIMENTS_DIR / task / f"{row}.yaml"
    if not path.exists():
        for include in _includes(task):               # a row of an included experiment
            if row in _row_files(include):
                return _row_part(include, row)
        return [{"override /model": row}], {}
    node = _load(path)
    defaults, body = [], {}
    for entry in _entries(node):
        if isinstance(entry, str):
            sib_defaults, sib_body = _row_part(task, entry)
            defaults += sib_defaults
            body = OmegaConf.merge(body, sib_body)
        else:
            defaults.append(entry)
    return defaults, OmegaConf.merge(body, {k: v for k, v in node.items() if k != "defaults"})


def _experiment_node(name: str, row: str | None = None) -> DictConfig:
    """``experiment=<name>`` (row ``None``) or ``experiment=<name>/<row>``, composed (see above)."""
    task_defaults, task_body = _task_part(name)
    model_defaults, model_body = _model_part(name) if row is None else _row_part(name, row)
    defaults: dict[str, Any] = {}
    for entry in task_defaults + model_defaults:          # a later override of a group replaces an earlier one
        defaults.pop(_entry_key(entry), None)
        defaults[_entry_key(entry)] = entry
    node = OmegaConf.merge(task_body, model_body)
    node.defaults = list(defaults.values())
    return node


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


_register_resolvers()   # at import too: a launcher's worker process resolves hydra.sweep.subdir
