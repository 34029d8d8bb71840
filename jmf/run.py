"""One experiment, as plain Python: load -> preprocess -> partition -> split -> fit -> evaluate -> write.

``run(cfg)`` is what ``jmf-train`` calls; it is importable and testable without Hydra's
app machinery (STYLE R2).  Below this function nothing reads ``cfg``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from jmf.config import EvalSchema, PartitionConfig, SplitConfig, TrainerConfig, check_target, to_dataclass
from jmf.data.interactions import Interactions
from jmf.data.preprocess import PreprocessConfig, preprocess
from jmf.data.split import SplitData, make_split, partition_categories
from jmf.evaluate.protocols import EvalConfig, evaluate_split

log = logging.getLogger("jmf")

DATA_META_KEYS = ("preprocess", "name")


def load_data(data_cfg: DictConfig, seed: int) -> Interactions:
    """Instantiate the ``data`` loader and apply ``data.preprocess``."""
    check_target(data_cfg, "data", skip=DATA_META_KEYS)
    pre = to_dataclass(PreprocessConfig, data_cfg.get("preprocess"), "data.preprocess")
    loader = {k: v for k, v in OmegaConf.to_container(data_cfg, resolve=True).items() if k not in DATA_META_KEYS}
    data = instantiate(loader, _convert_="all")
    log.info("loaded %s: %s", data.name, data.stats())
    return preprocess(data, pre, seed=seed)


def build_split(data: Interactions, partition_cfg: DictConfig, split_cfg: DictConfig, seed: int) -> SplitData:
    part = to_dataclass(PartitionConfig, partition_cfg, "partition")
    spl = to_dataclass(SplitConfig, split_cfg, "split")
    partition = partition_categories(data, k=part.k, cf_categories=part.cf_categories)
    kwargs = {k: v for k, v in vars(spl).items() if k not in ("method", "seed")}
    return make_split(data, partition, spl.method, seed=seed if spl.seed is None else spl.seed, **kwargs)


def run(cfg: DictConfig, out_dir: str | Path | None = None) -> dict[str, float]:
    """Run the experiment ``cfg``; write ``metrics.json`` and ``config.yaml`` into ``out_dir``."""
    out = Path(out_dir or ".")
    out.mkdir(parents=True, exist_ok=True)
    trainer = to_dataclass(TrainerConfig, cfg.get("trainer"), "trainer")
    eval_cfg = EvalConfig(**{**vars(to_dataclass(EvalSchema, cfg.get("eval"), "eval")),
                             "ks": tuple(cfg.eval.ks)})
    check_target(cfg.model, "model")
    seed = int(cfg.seed)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    data = load_data(cfg.data, seed)
    split = build_split(data, cfg.partition, cfg.split, seed)
    log.info("split %s: %s", cfg.split.method, split.counts())
    model = instantiate(cfg.model, _convert_="all")
    start = time.perf_counter()
    fit_info = model.fit(split, seed=seed)
    seconds = time.perf_counter() - start

    metrics: dict[str, float] = {"train/seconds": seconds, **split.counts()}
    metrics.update({k if "/" in k else f"train/{k}": float(v) for k, v in (fit_info or {}).items()})
    for fold in ("valid", "test"):
        for name, value in evaluate_split(model, split, fold, eval_cfg).items():
            metrics[f"{fold}/{name}"] = value
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    _print_table(metrics, f"{cfg.data.get('name', 'data')} · {type(model).__name__} · seed {seed}")
    if trainer.top_n > 0:
        _write_top_n(model, split, trainer.top_n, out / "topn.json")
    return metrics


def _print_table(metrics: dict[str, float], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    names = sorted({k.split("/", 1)[1] for k in metrics if k.startswith(("valid/", "test/"))})
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("valid", justify="right")
    table.add_column("test", justify="right")
    for name in names:
        table.add_row(name, *(f"{metrics[f'{f}/{name}']:.4f}" if f"{f}/{name}" in metrics else "—"
                              for f in ("valid", "test")))
    Console().print(table)
    Console().print(f"train {metrics['train/seconds']:.2f}s · rows " +
                    ", ".join(f"{k.split('/')[1]} {v:.0f}" for k, v in metrics.items() if k.startswith("rows/")))


def _write_top_n(model, split: SplitData, n: int, path: Path) -> None:
    import jax.numpy as jnp

    users = np.concatenate([split.cold_test_users, np.flatnonzero(np.diff(split.test.indptr) > 0)])
    users = np.unique(users)[:100_000]
    result = {}
    for start in range(0, len(users), 1024):
        chunk = users[start:start + 1024]
        scores = np.asarray(model.score(jnp.asarray(chunk, jnp.int32)))
        train = split.train[chunk].toarray() > 0
        scores[train] = -np.inf
        top = np.argsort(-scores, axis=1)[:, :n]
        for u, row in zip(chunk, top):
            result[str(split.data.user_ids[u])] = [str(split.data.item_ids[split.cf_items[j]]) for j in row]
    path.write_text(json.dumps(result))
