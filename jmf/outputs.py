"""What a run writes after the fit, and the table it prints.

* ``metrics.json`` (deterministic) and ``timing.json`` (wall-clock keys), the results table;
* ``model/`` (``trainer.save_model``): the fitted model, for ``jmf.load`` and ``jmf-recommend``;
* ``topn.json`` (``trainer.top_n``), ``interest.csv`` (``trainer.interest``).

With ``trainer.baseline=pop`` the run also scores the training popularity on the same folds
(``baseline/<fold>/<metric>``) and the table shows the model's lift over it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from jmf.artifact import save_model
from jmf.config import TrainerConfig
from jmf.data.interactions import Interactions
from jmf.data.split import SplitData
from jmf.errors import ConfigError
from jmf.models.base import HasInterest, Saveable

log = logging.getLogger("jmf")


def write_outputs(out: Path, model, data: Interactions, split: SplitData, cfg: DictConfig, trainer: TrainerConfig,
                  metrics: dict[str, float], timing: dict[str, float], title: str, seed: int) -> list[str]:
    """Write the run's files (see the module docstring); returns their names."""
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (out / "timing.json").write_text(json.dumps(timing, indent=2, sort_keys=True))
    print_table(metrics, timing, title, trainer.baseline)
    written = ["metrics.json", "timing.json", "config.yaml", "run_info.json"]
    if trainer.save_model:
        if isinstance(model, Saveable):
            save_model(out, model, data, split, cfg, seed)
            written.append("model/")
        else:
            log.info("%s has no fitted_state(): no model/ written (see jmf.models.base)", type(model).__name__)
    if trainer.top_n > 0:
        _write_top_n(model, split, trainer.top_n, out / "topn.json")
        written.append("topn.json")
    if trainer.interest:
        _write_interest(model, split, out / "interest.csv")
        written.append("interest.csv")
    if (out / "metrics.jsonl").exists():
        written.append("metrics.jsonl")
    if (out / "tb").exists():
        written.append("tb/")
    if (out / "checkpoints").exists():
        written.append("checkpoints/")
    return written


def print_table(metrics: dict[str, float], timing: dict[str, float], title: str, baseline: str | None = None
                ) -> None:
    """The results table: valid and test per metric (and, with a baseline, its test value and the lift)."""
    from rich.console import Console
    from rich.table import Table

    names = sorted({k.split("/", 1)[1] for k in metrics if k.startswith(("valid/", "test/"))})
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("valid", justify="right")
    table.add_column("test", justify="right")
    if baseline:
        table.add_column(f"test, {baseline}", justify="right")
        table.add_column("lift", justify="right")
    for name in names:
        row = [f"{metrics[f'{f}/{name}']:.4f}" if f"{f}/{name}" in metrics else "—" for f in ("valid", "test")]
        if baseline:
            base, own = metrics.get(f"baseline/test/{name}"), metrics.get(f"test/{name}")
            row.append("—" if base is None else f"{base:.4f}")
            row.append("—" if base is None or own is None or base == 0 else f"{own / base:.2f}x")
        table.add_row(name, *row)
    console = Console()
    console.print(table)
    console.print(f"train {timing['train/seconds']:.2f}s · rows " +
                  ", ".join(f"{k.split('/')[1]} {v:.0f}" for k, v in metrics.items() if k.startswith("rows/")))


def _output_users(split: SplitData) -> np.ndarray:
    """The users whose lists a run writes: the cold test users and every user with test rows (at most 10^5)."""
    users = np.concatenate([split.cold_test_users, np.flatnonzero(np.diff(split.test.indptr) > 0)])
    return np.unique(users)[:100_000]


def _write_interest(model, split: SplitData, path: Path) -> None:
    """``interest.csv``: a row per output user, ``user`` then one column per CF-side category (``I_u``)."""
    import jax.numpy as jnp
    import pandas as pd

    if not isinstance(model, HasInterest):
        raise ConfigError(f"trainer.interest: {type(model).__name__} has no interest vector (use model=jmf)")
    users = _output_users(split)
    names = [str(split.data.category_names[c]) for c in split.partition.cf_categories]
    parts = []
    for start in range(0, len(users), 1024):
        chunk = np.zeros(1024, np.int32)   # fixed-size batches: one compilation
        n = len(users[start:start + 1024])
        chunk[:n] = users[start:start + n]
        parts.append(np.asarray(model.interest(jnp.asarray(chunk)))[:n])
    frame = pd.DataFrame(np.concatenate(parts) if parts else np.zeros((0, len(names))), columns=names)
    frame.insert(0, "user", [str(split.data.user_ids[u]) for u in users])
    frame.to_csv(path, index=False, float_format="%.6g")


def _write_top_n(model, split: SplitData, n: int, path: Path) -> None:
    import jax.numpy as jnp

    users = _output_users(split)
    result = {}
    for start in range(0, len(users), 1024):
        chunk = users[start:start + 1024]
        scores = np.array(model.score(jnp.asarray(chunk, jnp.int32)))  # a writable copy
        train = split.train[chunk].toarray() > 0
        scores[train] = -np.inf
        top = np.argsort(-scores, axis=1)[:, :n]
        for u, row in zip(chunk, top):
            result[str(split.data.user_ids[u])] = [str(split.data.item_ids[split.cf_items[j]]) for j in row]
    path.write_text(json.dumps(result))
