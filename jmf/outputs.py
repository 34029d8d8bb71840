"""What a run writes after the fit, and the table it prints.

* ``metrics.json`` (deterministic) and ``timing.json`` (wall-clock keys), the results table;
* ``model/`` (``trainer.save_model``): the fitted model, for ``jmf.load`` and ``jmf-recommend``;
* ``topn.json`` (``trainer.top_n``), ``interest.csv`` (``trainer.interest``);
* ``per_user.npz``: every evaluated user's (or, sampled, every pair's) value of each ranking metric on the valid and
  test folds (``<fold>/users``: user ids as in the data, ``<fold>/items``: the held-out items of sampled pairs,
  ``<fold>/<metric>``), what ``jmf-report``'s per-user significance tests pair across runs (:func:`read_per_user`).

With ``trainer.baseline=pop`` the run also scores the training popularity on the same folds
(``baseline/<fold>/<metric>``) and the table shows the model's lift over it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from jmf.artifact import save_model
from jmf.config import TrainerConfig
from jmf.data.interactions import Interactions
from jmf.data.split import SplitData
from jmf.errors import ConfigError, disk_full_cause
from jmf.models.base import HasInterest, Saveable

log = logging.getLogger("jmf")


def write_outputs(out: Path, model, data: Interactions, split: SplitData, cfg: DictConfig, trainer: TrainerConfig,
                  metrics: dict[str, float], timing: dict[str, float], title: str, seed: int) -> list[str]:
    """Write the run's files (see the module docstring); returns their names."""
    with _writing(out / "metrics.json"):
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    with _writing(out / "timing.json"):
        (out / "timing.json").write_text(json.dumps(timing, indent=2, sort_keys=True))
    print_table(metrics, timing, title, trainer.baseline)
    written = ["metrics.json", "timing.json", "config.yaml", "run_info.json"]
    if trainer.save_model:
        if isinstance(model, Saveable):
            with _writing(out / "model"):
                save_model(out, model, data, split, cfg, seed)
            written.append("model/")
        else:
            log.info("%s has no fitted_state(): no model/ written (see jmf.models.base)", type(model).__name__)
    if trainer.top_n > 0:
        with _writing(out / "topn.json"):
            _write_top_n(model, split, trainer.top_n, out / "topn.json")
        written.append("topn.json")
    if trainer.interest:
        with _writing(out / "interest.csv"):
            _write_interest(model, split, out / "interest.csv")
        written.append("interest.csv")
    if (out / "metrics.jsonl").exists():
        written.append("metrics.jsonl")
    if (out / "tb").exists():
        written.append("tb/")
    if (out / "checkpoints").exists():
        written.append("checkpoints/")
    return written


def write_per_user(path: Path, split: SplitData, details: dict[str, dict]) -> list[str]:
    """``per_user.npz`` (module docstring) from :func:`jmf.pipeline.evaluate`'s ``details``; nothing without them
    (a ``split=category_holdout`` run evaluates target by target)."""
    arrays: dict[str, np.ndarray] = {}
    for fold, detail in details.items():
        if not detail.get("per_user"):
            continue
        arrays[f"{fold}/users"] = np.asarray([str(u) for u in split.data.user_ids[detail["users"]]])
        if "items" in detail:
            arrays[f"{fold}/items"] = np.asarray([str(i) for i in split.data.item_ids[split.cf_items[detail["items"]]]])
        arrays.update({f"{fold}/{name}": np.asarray(v, np.float32) for name, v in detail["per_user"].items()})
    if not arrays:
        return []
    with _writing(path):
        np.savez_compressed(path, **arrays)
    return [path.name]


def read_per_user(path: Path, fold: str = "test") -> tuple[list[str], dict[str, np.ndarray]]:
    """``per_user.npz``'s ``fold``: the keys that pair values across runs (``user`` or ``user item`` strings) and
    ``{metric: values}``."""
    with np.load(path, allow_pickle=False) as z:
        users = z[f"{fold}/users"]
        keys = ([f"{u} {i}" for u, i in zip(users, z[f"{fold}/items"])] if f"{fold}/items" in z.files
                else [str(u) for u in users])
        values = {name.split("/", 1)[1]: z[name] for name in z.files
                  if name.startswith(f"{fold}/") and name.split("/", 1)[1] not in ("users", "items")}
    return keys, values


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Name ``path`` in the error of a disk that fills while it is written (a failed ``write`` names no file)."""
    try:
        yield
    except Exception as err:
        cause = disk_full_cause(err)
        if cause is None or getattr(cause, "filename", None):
            raise
        code = cause.errno if isinstance(cause, OSError) and cause.errno else errno.ENOSPC
        raise OSError(code, os.strerror(code), str(path)) from err


def run_title(cfg: DictConfig, model_name: str, seed: int) -> str:
    """The results table's title: the experiment row (``experiment=<task>/<row>``) or the dataset, the model with
    its encoder, the seed and, in a sweep, the job's other overrides, so the rows of one task (JMF-CNN and
    JMF-Transformer are both ``JMF``) and the jobs of one sweep never share a title."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    target = str(OmegaConf.select(cfg, "model.encoder._target_", default="") or "")
    encoder = target.rsplit(".", 2)[-2] if target.count(".") >= 2 else ""      # jmf.models.encoders.cnn.X -> cnn
    parts, overrides = [str(cfg.data.get("name", "data"))], []
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        choices = hydra_cfg.runtime.choices
        if choices.get("experiment"):
            parts.insert(0, f"experiment={choices['experiment']}")
        encoder = choices.get("model/encoder") or encoder
        if hydra_cfg.mode == RunMode.MULTIRUN:
            overrides = [o for o in hydra_cfg.overrides.task
                         if not o.lstrip("+~").startswith(("experiment=", "seed=", "hydra.", "hydra/"))]
    parts += [f"{model_name} ({encoder} encoder)" if encoder else model_name, f"seed {seed}"]
    extra = " ".join(overrides)
    return " · ".join(parts + ([extra if len(extra) <= 100 else extra[:99] + "…"] if extra else []))


def print_table(metrics: dict[str, float], timing: dict[str, float], title: str, baseline: str | None = None
                ) -> None:
    """The results table: valid and test per metric (and, with a baseline, its test value and the lift)."""
    from rich.console import Console
    from rich.table import Table

    names = sorted({k.split("/", 1)[1] for k in metrics if k.startswith(("valid/", "test/")) and "/slice/" not in k})
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
