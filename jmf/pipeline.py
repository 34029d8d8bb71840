"""The steps every run shares, below ``run``, ``outputs`` and ``artifact``: load the data, build the split,
evaluate a fitted model.

``jmf.run.run`` chains them with the fit and the files; ``jmf.artifact`` rebuilds a saved run's split
with :func:`build_split`; ``jmf.recommend`` scores a loaded model with :func:`evaluate`.  Nothing here
writes files.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from jmf.config import EvalSchema, PartitionConfig, SplitConfig, check_target, to_dataclass
from jmf.data.interactions import Interactions
from jmf.data.preprocess import PreprocessConfig, preprocess
from jmf.data.holdout import make_holdout_split
from jmf.data.split import SplitData, make_split, partition_categories
from jmf.errors import ConfigError
from jmf.evaluate.protocols import EvalConfig, evaluate_split, evaluate_test_extras
from jmf.evaluate.slices import slice_metrics
from jmf.models.base import BothSides, RunContext
from jmf.models.cf.popularity import Popularity
from jmf.preflight import check_values
from jmf.train.observe import array_fingerprint, file_fingerprint, progress

log = logging.getLogger("jmf")

DATA_META_KEYS = ("preprocess", "name", "rating_range")
BASELINES = ("pop",)


def eval_config(eval_node: DictConfig | None) -> EvalConfig:
    """The run's ``eval`` group as an :class:`EvalConfig` (typed: a wrong key or type names ``eval.<key>``)."""
    schema = to_dataclass(EvalSchema, eval_node, "eval")
    return EvalConfig(**{**vars(schema), "ks": tuple(schema.ks),
                         "test_sampling_seeds": tuple(schema.test_sampling_seeds or ()),
                         "plugins": tuple(schema.plugins or ())})


def load_data(data_cfg: DictConfig, seed: int, fingerprint: dict | None = None) -> Interactions:
    """Instantiate the ``data`` loader and apply ``data.preprocess``.

    ``fingerprint``, when given, receives the data's file hashes, content hash and row counts.
    """
    check_target(data_cfg, "data", skip=DATA_META_KEYS)
    pre = to_dataclass(PreprocessConfig, data_cfg.get("preprocess"), "data.preprocess")
    loader = {k: v for k, v in OmegaConf.to_container(data_cfg, resolve=True).items() if k not in DATA_META_KEYS}
    data = instantiate(loader, _convert_="all")
    log.info("loaded %s: %s", data.name, data.stats())
    rating_range = data_cfg.get("rating_range")
    check_values(data, None if rating_range is None else list(rating_range), str(loader.get("path") or data.name))
    clean = preprocess(data, pre, seed=seed)
    if fingerprint is not None:
        paths = [Path(v) for v in loader.values() if isinstance(v, str) and v and Path(v).exists()]
        fingerprint.update(
            files=file_fingerprint(paths), loaded=_counts(data), preprocessed=_counts(clean),
            content_sha256=array_fingerprint(clean.user, clean.item, clean.value, clean.timestamp,
                                             clean.item_category))
    return clean


def _counts(data: Interactions) -> dict:
    return {"rows": len(data), "users": data.n_users, "items": len(data.item_ids),
            "categories": len(data.category_names)}


def build_split(data: Interactions, partition_cfg: DictConfig, split_cfg: DictConfig, seed: int) -> SplitData:
    part = to_dataclass(PartitionConfig, partition_cfg, "partition")
    spl = to_dataclass(SplitConfig, split_cfg, "split")
    split_seed = seed if spl.seed is None else spl.seed
    if spl.method == "category_holdout":
        return holdout_split(data, part, spl, split_seed)
    if spl.targets is not None or spl.target is not None:
        raise ConfigError(f"split.targets / split.target: only split=category_holdout has targets, not "
                          f"split.method={spl.method!r}")
    partition = partition_categories(data, k=part.k, cf_categories=part.cf_categories)
    kwargs = {k: v for k, v in vars(spl).items() if k not in ("method", "seed", "targets", "target")}
    return make_split(data, partition, spl.method, seed=split_seed, **kwargs)


def holdout_split(data: Interactions, part: PartitionConfig, spl: SplitConfig, seed: int) -> SplitData:
    """``split=category_holdout`` (:mod:`jmf.data.holdout`): every category is in turn a target, so the
    ``partition`` group has nothing to choose, and the ratio split's keys nothing to set."""
    if part.k is not None or part.cf_categories is not None:
        raise ConfigError("partition.k / partition.cf_categories: split=category_holdout makes every category in turn "
                          "the target (the CF side) and the others its input; choose targets with split.targets, "
                          "and one target's cold-start split with split.target")
    if spl.valid_is_test or spl.dl_folds:
        raise ConfigError("split.valid_is_test / split.dl_folds: not with split=category_holdout")
    return make_holdout_split(data, seed=seed, beta=spl.beta, cold_valid_fraction=spl.cold_valid_fraction,
                              targets=spl.targets, target=spl.target)


def evaluate(model, split: SplitData, eval_cfg: EvalConfig, show_progress: bool = False,
             details: dict | None = None) -> dict[str, float]:
    """``valid/<metric>`` and ``test/<metric>`` of a fitted model under the run's ``eval`` group (and the
    test fold's extra protocols: ``test/s<seed>/...``, ``test/full/...``); with ``split.dl_folds`` and a
    model that trains both sides, the DL side's as ``dl/valid/...``, ``dl/test/...``.  ``details``: filled per
    fold with the main protocol's per-user values (:func:`~jmf.evaluate.protocols.evaluate_split`)."""
    if split.holdout is not None:        # split=category_holdout: target by target, and their mean
        from jmf.transfer_map import evaluate_targets

        return evaluate_targets(model.target_view, split, eval_cfg,
                                lambda m, view, cfg: evaluate(m, view, cfg, show_progress))
    metrics: dict[str, float] = {}
    results: dict[str, dict[str, float]] = {}
    for fold in ("valid", "test"):
        with progress(None, f"evaluating {fold}", enabled=show_progress) as advance:
            detail = None if details is None else details.setdefault(fold, {})
            results[fold] = evaluate_split(model, split, fold, eval_cfg, progress=advance, detail=detail)
        metrics.update({f"{fold}/{name}": value for name, value in results[fold].items()})
    if details is not None and details.get("test"):     # test/slice/<slice>/<metric> (jmf.evaluate.slices)
        metrics.update({f"test/{k}": v for k, v in slice_metrics(split, split.test, details["test"]).items()})
    if eval_cfg.test_sampling_seeds or eval_cfg.test_full:
        with progress(None, "evaluating test (extra protocols)", enabled=show_progress) as advance:
            for name, value in evaluate_test_extras(model, split, eval_cfg, progress=advance,
                                                    main=results["test"]).items():
                metrics[f"test/{name}"] = value
    if split.has_dl_folds and isinstance(model, BothSides) and (view := model.dl_view()) is not None:
        metrics.update({f"dl/{k}": v for k, v in evaluate(view, split.mirrored(), eval_cfg, show_progress).items()})
    return metrics


def baseline_metrics(name: str, split: SplitData, eval_cfg: EvalConfig, seed: int) -> dict[str, float]:
    """``baseline/<fold>/<metric>`` of the reference model ``name`` on the run's folds (``pop``)."""
    if name not in BASELINES:
        raise ConfigError(f"trainer.baseline: {name!r} is not one of {BASELINES} (or null)")
    if split.holdout is not None:        # one popularity per target, from that target's training rows
        from jmf.data.holdout import view_at
        from jmf.transfer_map import evaluate_targets

        def fitted(k: int) -> Popularity:
            pop = Popularity()
            pop.fit(view_at(split, k), RunContext(seed=seed))
            return pop
        return {f"baseline/{k}": v for k, v in evaluate_targets(fitted, split, eval_cfg, evaluate).items()}
    model = Popularity()
    model.fit(split, RunContext(seed=seed))
    return {f"baseline/{k}": v for k, v in evaluate(model, split, eval_cfg).items()}
