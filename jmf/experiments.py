"""Experiments as Hydra configs: the ``experiment`` group, its rows, and ``experiment=<task> model=<name>``.

``experiments/<task>.yaml`` is a task (data, partition, split, eval) and its default row;
``experiments/<task>/<row>.yaml`` a model with a table's settings.  :func:`register_configs` puts the
typed schemas (:mod:`jmf.config`) and the experiments in Hydra's ConfigStore; :func:`experiment_overrides`
turns Hydra's habit ``experiment=<task> model=<name>`` into the row it means.  (A root search path breaks
``experiment=glob(*)`` in Hydra 1.3.8, so experiments are registered here rather than found on a path.)
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from jmf.config import (CONF_DIR, EXPERIMENTS_DIR, EvalSchema, PartitionConfig, SplitConfig, TrainerConfig,
                        register_resolvers)
from jmf.errors import ConfigError
from jmf.optim import OptimConfig


def register_configs(argv: list[str] | None = None) -> None:
    """Register schemas and experiments in Hydra's ConfigStore (idempotent), and the ``${jmf_data_dir:}``
    resolver the dataset configs' ``root`` uses.

    ``argv`` (a command line's overrides) registers the rows ``experiment=<task>/<row>`` it names only
    (every task's default row is always registered): Hydra deep-copies the whole store for every config
    it composes, ~1 s with all ~280 rows.  ``None`` (library use) or ``glob(...)``/``choice(...)`` over
    experiments registers every row."""
    register_resolvers()
    cs = ConfigStore.instance()
    cs.store(group="partition", name="schema", node=PartitionConfig)
    cs.store(group="split", name="schema", node=SplitConfig)
    cs.store(group="eval", name="schema", node=EvalSchema)
    cs.store(group="trainer", name="schema", node=TrainerConfig)
    cs.store(group="optim", name="schema", node=OptimConfig)
    named = None if argv is None else _requested_rows(argv)
    for name, rows in experiment_catalogue().items():
        cs.store(group="experiment", name=name, node=_experiment_node(name), package="_global_")
        for row in rows if named is None else [r for r in rows if f"{name}/{r}" in named]:
            cs.store(group=f"experiment/{name}", name=row, node=_experiment_node(name, row), package="_global_")


def _requested_rows(argv: list[str]) -> set[str] | None:
    """The rows ``experiment=<task>/<row>`` overrides name (``a,b`` lists too); ``None`` (all) for
    ``glob(...)``, ``choice(...)``."""
    rows = set()
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        if key == "experiment":
            if any(c in value for c in "()[]*"):
                return None
            rows |= {name.strip() for name in value.split(",")}
    return rows


def experiment_overrides(argv: list[str]) -> list[str]:
    """A command line with Hydra's habit ``experiment=<task> model=<name>`` rewritten to the row it means,
    ``experiment=<task>/<name>`` (a file ``experiments/<task>/<name>.yaml``, or ``conf/model/<name>.yaml`` at
    its defaults; the task's default row would keep its own model's parts, ``model/encoder``, and Hydra could
    not compose).  Lists and ``glob(...)`` expand over both: ``experiment=X,Y model=a,b`` ->
    ``experiment=X/a,X/b,Y/a,Y/b``.  Anything else passes unchanged, for Hydra to compose or report.

    Raises :class:`ConfigError`, naming the row form, for a model the task has no row of, for ``model=``
    beside a row of another model (``experiment=<task>/<row>``), and for ``model/<part>=`` where the
    experiment's model has no such part (Hydra's "Could not override 'model/<part>'")."""
    argv = list(argv)
    at = {arg.partition("=")[0].strip(): i for i, arg in enumerate(argv) if "=" in arg}
    catalogue = experiment_catalogue()
    names = _options(argv[at["experiment"]], list(catalogue)) if "experiment" in at else None
    if not names or any(name.partition("/")[0] not in catalogue for name in names):
        return argv                                 # no experiment, null, or an unknown one: Hydra says so
    for task, _, row in (name.partition("/") for name in names):
        if row and row not in catalogue[task]:      # Hydra would list the rows registered: the named
            raise ConfigError(f"experiment={task}/{row}: {task} has no row {row}; experiment={task}/<row> runs "
                              f"a row file of the task or a conf/model at its defaults, <row> one of "
                              f"{', '.join(catalogue[task])}")
    if "model" in at:
        names = [row for name in names for row in _model_rows(name, argv[at["model"]], catalogue)]
        argv[at["experiment"]] = "experiment=" + ",".join(dict.fromkeys(names))
        del argv[at["model"]]
    # model/<part>= on an experiment whose model has no such part (Hydra: a bare "Could not override"); left to
    # Hydra where configs come from elsewhere (a search path) or hparams_search picks the model
    elsewhere = any(arg.startswith(("hydra.searchpath=", "hparams_search=", "--config", "-cd", "-cp")) for arg in argv)
    for arg in argv if not elsewhere else ():
        key = arg.partition("=")[0].strip() if "=" in arg else ""
        if key.startswith("model/"):
            _check_part(names, key.split("/")[1], arg, catalogue)
    return argv


def _options(arg: str, names: list[str]) -> list[str] | None:
    """What ``key=value`` picks: one option, a list (``a,b``, ``choice(a,b)``) or those of ``names`` a
    ``glob(...)`` matches; None for ``null`` and what Hydra cannot parse (Hydra reports it)."""
    try:
        override = OverridesParser.create().parse_override(arg)
    except HydraException:
        return None
    value = override.value()
    if isinstance(value, Glob):
        return value.filter(names)
    if override.is_choice_sweep():
        return [str(v) for v in value.list]
    if override.is_sweep_override():
        raise ConfigError(f"{arg}: a sweep over {override.key_or_group} names its options: "
                          f"{override.key_or_group}=a,b or glob(...)")
    return None if value is None else [str(value)]


def _model_rows(name: str, model_arg: str, catalogue: dict[str, list[str]]) -> list[str]:
    """The rows ``experiment=<name> model=...`` means: ``<task>/<model>`` for each model it names."""
    task, _, row = name.partition("/")
    rows = catalogue[task]
    models = _options(model_arg, rows)
    if not models:
        raise ConfigError(f"{model_arg} names no row of experiment={task}: experiment={task} model=<row> runs "
                          f"the row experiment={task}/<row>, <row> one of {', '.join(rows)}")
    for model in models:
        if row and model != _row_model(task, row):
            instead = (f"experiment={task}/{model} for {model} at its defaults on the task" if model in rows else
                       f"experiment={task}/<row>, <row> one of {', '.join(rows)}")
            raise ConfigError(f"experiment={name} {model_arg}: the row {row} already picks its model "
                              f"({_row_model(task, row)}); run {instead}, or experiment={name} alone for the "
                              f"row (model.<key>=... changes its settings)")
        if not row and model not in rows:
            raise ConfigError(f"{model_arg}: experiment={task} has no row {model}; experiment={task} model=<row> "
                              f"runs the row experiment={task}/<row> (a row file of the task, or a conf/model at "
                              f"its defaults), <row> one of {', '.join(rows)}")
    return [name] if row else [f"{task}/{model}" for model in models]


def _check_part(names: list[str], part: str, arg: str, catalogue: dict[str, list[str]]) -> None:
    """Refuse ``model/<part>=...`` on an experiment whose model has no such part."""
    for name in names:
        task, _, row = name.partition("/")
        model = _row_model(task, row or None)
        if (CONF_DIR / "model" / f"{model}.yaml").exists() and part not in _model_parts(model):
            fits = [r for r in catalogue[task] if part in _model_parts(_row_model(task, r))]
            raise ConfigError(f"{arg}: experiment={name} runs model={model}, which has no model/{part} (Hydra: "
                              f"could not override 'model/{part}'); name a row whose model has it: "
                              f"experiment={task}/<row> {arg}, <row> one of {', '.join(fits)}")


def _row_model(task: str, row: str | None) -> str:
    """The model ``experiment=<task>[/<row>]`` runs: its ``/model`` choice, else ``conf/train.yaml``'s."""
    for entry in reversed(_experiment_node(task, row).defaults):
        if _entry_key(entry) == "/model":
            return next(iter(entry.values()))
    defaults = _parsed(CONF_DIR / "train.yaml")["defaults"]
    return next(entry["model"] for entry in defaults if isinstance(entry, dict) and "model" in entry)


def _model_parts(model: str) -> set[str]:
    """The groups ``conf/model/<model>.yaml`` composes (``encoder``, ``head``, ...): ``model/<part>=`` options."""
    parts = set()
    for entry in _parsed(CONF_DIR / "model" / f"{model}.yaml").get("defaults") or []:
        if isinstance(entry, str):                  # a model it extends (lightgcn_merged: lightgcn)
            parts |= _model_parts(entry) if entry != "_self_" else set()
        else:
            parts.add(_entry_key(entry).removeprefix("/model/"))
    return parts


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
# here, so that a row can replace the model of its task (Hydra merges, it cannot remove keys).  Hydra's
# habit ``experiment=<task> model=<name>`` is read as the row ``experiment=<task>/<name>`` (experiment_overrides).


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
