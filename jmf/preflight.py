"""Checks before any training: the run directory, the data, the folds, the sizes.

Everything here runs between loading the data and fitting the model, so a run that cannot succeed
stops in seconds with a :class:`~jmf.errors.JmfError` naming the key or row, instead of failing (or
producing a meaningless number) after the fit.  One rule for sizes, for every model: a ``model.dim``
larger than the CF side allows (``min(users, CF-side items, DL-side items)``) is clamped to it, with a
log line; a cut-off in ``eval.ks`` larger than the candidate list is an error.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, open_dict

from jmf.data.interactions import Interactions
from jmf.data.split import SplitData
from jmf.errors import ConfigError, DataError
from jmf.evaluate.protocols import EvalConfig, evaluation_users
from jmf.runlock import RunDirLock  # noqa: F401 -- re-exported: the run directory is checked here

log = logging.getLogger("jmf")
FLOAT32_SAFE = 1e18        # |value| above this overflows float32 once squared (RMSE, MSE losses)
VALIDATING = ("monitor", "patience")   # model keys of models that select epochs on the validation fold


def check_values(data: Interactions, rating_range: list | None, path: str) -> None:
    """Ratings: finite, float32-safe, and inside ``data.rating_range`` -- inferred and logged when unset."""
    if data.implicit or len(data) == 0:
        return
    value = data.value.astype(np.float64)
    big = np.abs(value) > FLOAT32_SAFE
    if big.any():
        row = int(np.flatnonzero(big)[0])
        raise DataError(f"{path}: rating {value[row]:g} at row {row} overflows float32 arithmetic (squared errors "
                        f"exceed 3.4e38); fix the row or rescale data.value_col")
    if rating_range is None:
        lo, hi = np.quantile(value, [0.005, 0.995])
        rating_range = [float(np.floor(lo)), float(np.ceil(hi))]
        how = "inferred from the data's 0.5-99.5 % quantiles; set data.rating_range to fix it"
    else:
        if len(rating_range) != 2 or rating_range[0] > rating_range[1]:
            raise ConfigError(f"data.rating_range: {rating_range!r} is not [low, high]")
        how = "data.rating_range"
    out = (value < rating_range[0]) | (value > rating_range[1])
    log.info("ratings in [%g, %g] (%s)", rating_range[0], rating_range[1], how)
    if out.any():
        row = int(np.flatnonzero(out)[0])
        raise DataError(f"{path}: {int(out.sum())} rating(s) outside [{rating_range[0]:g}, {rating_range[1]:g}] "
                        f"({how}), the first {value[row]:g} at row {row}; fix the data or set data.rating_range")


def check_split(split: SplitData, model_cfg: DictConfig, eval_cfg: EvalConfig) -> None:
    """Folds the run needs are non-empty; the cut-offs fit the candidate lists; ``model.dim`` fits (clamped).
    ``split=category_holdout``: every target's split (each message names the target)."""
    if split.holdout is not None:
        from jmf.data.holdout import view_at

        names = [str(n) for n in split.data.category_names]
        for k, t in enumerate(split.holdout.targets):
            try:
                check_split(view_at(split, k), model_cfg, eval_cfg)
            except (ConfigError, DataError) as err:
                raise type(err)(f"split=category_holdout, target {names[t]!r}: {err} (or leave {names[t]!r} out of "
                                "split.targets)") from None
        return
    if split.train.nnz == 0:
        raise DataError(f"{split.data.name}: the split leaves no CF-side training interactions (check partition.k / "
                        "partition.cf_categories and the split's fractions)")
    if len(evaluation_users(split, "test")[0]) == 0:
        raise DataError(f"{split.data.name}: the test fold is empty (split.method, split.test_ratio / split.beta, "
                        "or the dataset's own test file)")
    if len(evaluation_users(split, "valid")[0]) == 0:
        if any(key in model_cfg for key in VALIDATING):
            raise ConfigError(f"{split.data.name}: the validation fold is empty, and model {model_cfg.get('_target_')} "
                              "selects epochs on it (raise split.valid_ratio / split.cold_valid_fraction)")
        log.warning("the validation fold is empty: no valid/ metrics (trainer.optimized_metric will be NaN)")
    n_items = split.train.shape[1]
    if eval_cfg.protocol == "sampled":
        if eval_cfg.candidates:
            if not Path(eval_cfg.candidates).is_file():
                raise ConfigError(f"eval.candidates: {eval_cfg.candidates} is not a file")
        else:
            pool = int((np.diff(split.train.tocsc().indptr) > 0).sum())
            if eval_cfg.negatives >= pool:
                raise ConfigError(f"eval.negatives: {eval_cfg.negatives} negatives per item, but only {pool} CF-side "
                                  "items occur in training; use fewer")
    limit = n_items if eval_cfg.protocol == "full" else eval_cfg.negatives + 1
    too_big = [k for k in eval_cfg.ks if k > limit]
    if too_big:
        what = f"the {n_items} CF-side items" if eval_cfg.protocol == "full" else f"{limit} candidates per item"
        raise ConfigError(f"eval.ks: cut-off(s) {too_big} exceed {what}; use smaller eval.ks")


POSITIVE = ("dim", "batch_size", "eval_batch_size", "negatives", "max_len", "items_per_user")
NON_NEGATIVE = ("epochs", "pretrain_epochs", "patience", "reg", "weight_decay", "decay")


def check_model_sizes(model_cfg: DictConfig) -> None:
    """The common size and rate knobs of any model (where it has them): the key named in the error."""
    for key in POSITIVE + NON_NEGATIVE + ("lr",):
        value = model_cfg.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if (key in POSITIVE and value < 1) or (key in NON_NEGATIVE and value < 0) or (key == "lr" and value <= 0):
            need = ">= 1" if key in POSITIVE else "> 0" if key == "lr" else ">= 0"
            raise ConfigError(f"model.{key}: {value} must be {need}")


def clamp_dim(cfg: DictConfig, split: SplitData) -> DictConfig:
    """``cfg`` with ``model.dim`` above ``min(users, CF-side items, DL-side items)`` clamped to that minimum,
    logged (every model); a copy when it changes, ``cfg`` itself when it does not."""
    model_cfg = cfg.model
    if "dim" not in model_cfg or not isinstance(model_cfg.get("dim"), int):
        return cfg
    sizes = [split.n_users, split.train.shape[1]] + ([split.dl.shape[1]] if split.dl.shape[1] else [])
    limit = max(1, min(sizes))
    if model_cfg.dim <= limit:
        return cfg
    log.warning("model.dim=%d exceeds min(users %d, CF items %d%s) = %d: clamped to %d", model_cfg.dim,
                split.n_users, split.train.shape[1], f", DL items {split.dl.shape[1]}" if split.dl.shape[1] else "",
                limit, limit)
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg.model):
        cfg.model.dim = limit
    return cfg
