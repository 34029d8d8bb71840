"""The one validator: how every model scores itself on the validation fold while it fits.

A model builds one from its run context and split (``Validator.of(ctx, split, batch_size)``) and asks it
for metrics by name (``validator.metrics(model, ["ndcg@10", "rmse"])``, one evaluation pass for all of
them, or ``validator(model, "ndcg@10")`` for one).  The validator reads the run's ``eval`` group (its
``valid_protocol``: rank every CF-side item, or the test fold's protocol) and the metric registry
(which names exist, which are rating metrics, which way is better); no model reads the ``eval`` group
itself.  Library use (no context) validates with the full protocol.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from jmf.data.split import SplitData
from jmf.errors import ConfigError
from jmf.evaluate import registry
from jmf.evaluate.protocols import EvalConfig, evaluate_split, evaluation_users
from jmf.train.plan import RunContext


class Validator:
    """Validation metrics of a model on ``split``'s valid fold (cold valid users in a cold-start split).

    Args:
      split: the run's split.
      eval_config: the run's ``eval`` group (``None``: the full protocol).
      batch_size: users per evaluation batch (the model's ``eval_batch_size``).
    """

    def __init__(self, split: SplitData, eval_config: EvalConfig | None = None, batch_size: int = 512):
        self.split, self.eval_config, self.batch_size = split, eval_config, batch_size

    @classmethod
    def of(cls, ctx: RunContext | None, split: SplitData, batch_size: int = 512) -> Validator:
        """The validator of a fit: ``ctx`` from ``jmf.run`` (or ``None``: library use)."""
        return cls(split, None if ctx is None else ctx.eval_config, batch_size)

    @property
    def has_data(self) -> bool:
        """Whether the split has a valid fold to select on."""
        return len(evaluation_users(self.split, "valid")[0]) > 0

    @staticmethod
    def mode(metric: str) -> str:
        """``min`` or ``max``: the direction of a selection on ``metric`` (the engine's ``Phase.mode``)."""
        return "min" if registry.lower_is_better(metric) else "max"

    def metrics(self, model, names: Sequence[str], keys: Sequence[str] | None = None) -> dict[str, float]:
        """``{name: value}`` of ``names`` in one evaluation of ``model``; ``{}`` without validation data.

        ``keys``: the config key each name came from (``model.monitor``), for the error naming a
        metric the evaluation did not produce.  ``<name>`` of a whole-list metric (``mrr``) is, under the
        full protocol, ``<name>@<number of CF-side items>``.
        """
        keys = list(keys) if keys is not None else ["model.monitor"] * len(names)
        ks = {int(n.split("@")[1]) for n in names if "@" in n}
        whole = [n for n in names if "@" not in n and not registry.is_rating(n)]
        cfg = (self.eval_config or EvalConfig()).for_validation(
            tuple(sorted(ks or {10})), self.batch_size, ratings=any(registry.is_rating(n) for n in names))
        n_items = self.split.train.shape[1]
        if whole and cfg.protocol == "full":      # a whole-list metric ranks to the end of the list
            cfg = dataclasses.replace(cfg, ks=tuple(sorted(ks | {n_items})))
        out = evaluate_split(model, self.split, "valid", cfg)
        if not out:
            return {}
        found = {}
        for name, key in zip(names, keys):
            value = out.get(name, out.get(f"{name}@{n_items}") if name in whole else None)
            if value is None:
                raise ConfigError(f"{key}: {name!r} not among validation metrics {sorted(out)}")
            found[name] = value
        return found

    def __call__(self, model, metric: str, key: str = "model.monitor") -> float | None:
        """``metric`` of ``model`` on the valid fold; ``None`` without validation data."""
        return self.metrics(model, [metric], [key]).get(metric)
