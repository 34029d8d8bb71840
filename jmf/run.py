"""One experiment, as plain Python: load -> preprocess -> partition -> split -> fit -> evaluate -> write.

``run(cfg)`` is what ``jmf-train`` calls; it is importable and testable without Hydra's
app machinery (design.md#conventions).  Below this function nothing reads ``cfg``.

A run directory holds ``metrics.json`` (deterministic: the same config and seed give the
same file on CPU), ``timing.json`` (wall-clock seconds, kept apart for that reason),
``config.yaml``, ``run_info.json`` (seeds, versions, devices, data fingerprint),
``metrics.jsonl`` + ``tb/`` (training curves) and ``checkpoints/`` (models on the engine).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from jmf import audit, compile_cache, distributed, threads
from jmf.config import TrainerConfig, check_target, to_dataclass
from jmf.errors import ConfigError, RunDirError, disk_full_cause, disk_full_error, user_error
from jmf.evaluate import registry
from jmf.evaluate.protocols import EvalConfig
from jmf.models.base import BothSides, HasInterest, Model, MultiTarget, RunContext
from jmf.outputs import run_title, write_outputs, write_per_user
from jmf.pipeline import baseline_metrics, build_split, eval_config, evaluate, load_data
from jmf.preflight import RunDirLock, check_model_sizes, check_split, clamp_dim
from jmf.train.observe import status, write_run_info
from jmf.transfer_map import interest_lift, planted_agreement, transfer_map, write_transfer_map

log = logging.getLogger("jmf")

# trainer knobs that change how a run executes, not what it computes: a checkpoint stays valid across them
EXECUTION_KEYS = ("optimized_metric", "top_n", "interest", "save_model", "baseline", "log_level", "devices", "max_inflight", "cpu_threads", "checkpoint",
                  "checkpoint_every", "keep_checkpoints", "resume", "progress", "tensorboard", "log_every",
                  "nan_check", "distributed")


def run(cfg: DictConfig, out_dir: str | Path | None = None) -> dict[str, float]:
    """Run the experiment ``cfg`` in ``out_dir`` (see the module docstring for what it writes); the
    directory is locked for the run (:class:`jmf.preflight.RunDirLock`)."""
    import jax

    compile_cache.enable()      # before anything compiles (jmf/compile_cache.py: where, and how to switch it off)
    out = Path(out_dir or ".")
    trainer = to_dataclass(TrainerConfig, cfg.get("trainer"), "trainer")
    eval_cfg = eval_config(cfg.get("eval"))
    registry.load_plugins(eval_cfg.plugins)     # a project's own metrics, before a model checks its monitor
    check_target(cfg.model, "model")
    from hydra.utils import get_method

    threads.apply(trainer.cpu_threads, get_method(cfg.model._target_), trainer.devices)   # before JAX's CPU backend starts
    distributed.initialize(distributed.DistributedConfig(**trainer.distributed)
                           if isinstance(trainer.distributed, dict) else trainer.distributed)
    with RunDirLock(out, jax.process_index()):
        _quiet_full_log_files()
        try:
            return _run(cfg, out, trainer, eval_cfg)
        except Exception as err:
            full = _disk_full(err, out)
            if full is None or full is err:
                raise
            if full.__cause__ is not None:       # the checkpointer's, under an error of the clean-up after it
                raise full                       # noqa: B904 -- its own cause is the failed write
            raise full from err


def _disk_full(err: BaseException, out: Path) -> RunDirError | None:
    """A full disk behind ``err``, anywhere in the run directory (checkpoint, model, metrics, logs), as one
    paragraph: the checkpointer's own, else one naming the file written and the checkpoint a rerun resumes from."""
    if disk_full_cause(err) is None:
        return None
    known = user_error(err)
    if isinstance(known, RunDirError):
        return known
    latest = out / "checkpoints" / "latest"
    last = max((int(p.name) for p in latest.glob("*") if p.name.isdigit()), default=None)
    return disk_full_error(err, out, "then rerun the same command" + (
        f": it resumes from the last checkpoint, step {last}" if last is not None else ""))


def _quiet_full_log_files() -> None:
    """Let a log file (Hydra's ``<job>.log`` in the run directory) stop quietly when its disk is full, instead of
    printing a traceback for every later record; the run ends with one paragraph saying the disk is full."""
    for handler in {*logging.getLogger().handlers, *log.handlers}:
        if not isinstance(handler, logging.FileHandler) or getattr(handler, "_jmf_quiet_when_full", False):
            continue

        def handle_error(record: logging.LogRecord, handler=handler, report=handler.handleError) -> None:
            if disk_full_cause(sys.exc_info()[1]) is None:
                report(record)
            else:
                handler.setLevel(logging.CRITICAL + 1)     # nothing more to this file
        handler.handleError = handle_error   # type: ignore[method-assign]
        handler._jmf_quiet_when_full = True  # type: ignore[attr-defined]


def _run(cfg: DictConfig, out: Path, trainer: TrainerConfig, eval_cfg: EvalConfig) -> dict[str, float]:
    run_start = time.perf_counter()
    seeds = _seeds(cfg, trainer)
    seed = seeds["run"]
    fingerprint: dict = {}
    with status(f"preparing {cfg.data.get('name', 'data')} ...", trainer.progress):
        data = load_data(cfg.data, seed, fingerprint)
        split = build_split(data, cfg.partition, cfg.split, seed)
    fingerprint["split"] = split.counts()
    log.info("split %s: %s", cfg.split.method, split.counts())
    check_split(split, cfg.model, eval_cfg)
    _audit(split, cfg, trainer, out)
    check_model_sizes(cfg.model)
    cfg = clamp_dim(cfg, split)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    write_run_info(out, seeds=seeds, data=fingerprint, config=OmegaConf.to_container(cfg, resolve=True))
    model = instantiate(cfg.model, _convert_="all")
    _check_model(model, split, eval_cfg, trainer)
    start, compiled = time.perf_counter(), compile_cache.seconds()["seconds"]
    fit_info = model.fit(split, _context(cfg, trainer, eval_cfg, out, seeds))
    fit_seconds = time.perf_counter() - start
    # train/fit_seconds: model.fit's wall clock, compilation included; train/seconds too, unless the model
    # times its own training (its train/fit_seconds, e.g. iALS's epochs after set-up, goes there);
    # train/compile_seconds: the part of the fit spent tracing, lowering and compiling
    timing = {"train/seconds": fit_seconds, "train/compile_seconds": compile_cache.seconds()["seconds"] - compiled}

    metrics: dict[str, float] = dict(split.counts())
    for key, value in (fit_info or {}).items():
        key = {"train/fit_seconds": "train/seconds"}.get(key, key if "/" in key else f"train/{key}")
        (timing if key.endswith("seconds") else metrics)[key] = float(value)
    timing["train/fit_seconds"] = fit_seconds
    details: dict = {}
    metrics.update(evaluate(model, split, eval_cfg, trainer.progress, details))
    if trainer.baseline:
        metrics.update(baseline_metrics(trainer.baseline, split, eval_cfg, seeds["init"]))
    # wall-clock keys (``*/seconds``) are part of metrics.json's contract (issue 2) and its only
    # non-deterministic entries; timing.json holds them alone, for comparisons of the rest
    timing["run/seconds"] = time.perf_counter() - run_start     # data, split, fit and evaluation
    metrics.update(timing)
    tmap = _transfer_map(model, split, eval_cfg, metrics, timing)
    if _main_process():
        title = run_title(cfg, type(model).__name__, seed)
        written = write_outputs(out, model, data, split, cfg, trainer, metrics, timing, title, seed)
        written += write_per_user(out / "per_user.npz", split, details)
        if tmap is not None:
            written += write_transfer_map(out, tmap[0], data.planted, split.holdout.targets, title, tmap[1])
        print(f"run directory {out.resolve()}: wrote {', '.join(written)}", flush=True)
    return metrics


def _audit(split, cfg: DictConfig, trainer: TrainerConfig, out: Path) -> None:
    """``audit.json`` and its summary line (:mod:`jmf.audit`); a leak stops the run unless ``trainer.allow_leaks``."""
    spl = cfg.split
    time_ordered = (spl.get("method") in ("ratio", "loo") and spl.get("order") == "time" and spl.get("by") == "user"
                    and split.data.timestamp is not None)
    report = audit.audit(split, time_ordered)
    if _main_process():
        (out / "audit.json").write_text(json.dumps(report, indent=2))
    log.info(audit.summary(report))
    audit.check(report, trainer.allow_leaks, str(out / "audit.json"))


def _check_model(model, split, eval_cfg: EvalConfig, trainer: TrainerConfig) -> None:
    """The model can do what the split, the ``eval`` group and the trainer ask of it."""
    if not isinstance(model, Model):
        raise ConfigError(f"model._target_: {type(model).__name__} is not a model (fit(split, ctx), score(users), "
                         "predict(users, items): see jmf.models.base)")
    if split.has_dl_folds and not isinstance(model, BothSides):
        raise ConfigError(f"split.dl_folds=true: {type(model).__name__} does not rank the DL side's items "
                          "(a model that trains both sides does: model=disencdr, cdrib, bitgcf)")
    if split.has_dl_folds and eval_cfg.candidates:
        raise ConfigError(f"split.dl_folds=true with eval.candidates={eval_cfg.candidates!r}: the candidate file "
                          "lists CF-side items only; evaluate the DL side with drawn negatives (eval.candidates=null)")
    if eval_cfg.select_on_test and not getattr(model, "selects_on_test", False):
        raise ConfigError(f"eval.select_on_test=true: {type(model).__name__} does not validate on the engine "
                          "epoch by epoch (the graph models do: lightgcn, bitgcf, disencdr, cdrib)")
    if split.holdout is not None and not isinstance(model, MultiTarget):
        raise ConfigError(f"split=category_holdout: {type(model).__name__} has one fixed target; model=jmf_map trains "
                          "every target in one run, and split.target=<category name> gives one target's "
                          "cold-start split for any other model")
    if trainer.interest and not isinstance(model, HasInterest):
        raise ConfigError(f"trainer.interest: {type(model).__name__} has no interest vector (use model=jmf)")


def _transfer_map(model, split, eval_cfg: EvalConfig, metrics: dict, timing: dict):
    """``split=category_holdout``: the category transfer map and the interest lift table (jmf/transfer_map.py), the
    map's time in ``timing``, and on data with a planted category graph how well it recovers it (``map/...`` in
    ``metrics``)."""
    if split.holdout is None:
        return None
    start = time.perf_counter()
    with status("drawing the category transfer map ...", True):
        tmap = transfer_map(model, split, eval_cfg)
    timing["eval/map_seconds"] = time.perf_counter() - start
    metrics["eval/map_seconds"] = timing["eval/map_seconds"]
    if split.data.planted is not None:
        metrics.update(planted_agreement(tmap.matrix, np.asarray(split.data.planted, float)[split.holdout.targets]))
    return tmap, interest_lift(model, split)


def _main_process() -> bool:
    import jax

    return jax.process_index() == 0


def _seeds(cfg: DictConfig, trainer: TrainerConfig) -> dict:
    """The run's separate seeds: data generation, split, initialisation, sampling (null -> ``seed``)."""
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, (int, str)) or not str(cfg.seed).lstrip("-").isdigit():
        raise ConfigError(f"seed: {cfg.seed!r} is not an integer (e.g. seed=0, or -m seed=0,1,2 for several)")
    seed = int(cfg.seed)
    return {"run": seed, "data": cfg.data.get("seed"), "split": seed if cfg.split.get("seed") is None else
            int(cfg.split.seed), "init": seed if trainer.init_seed is None else trainer.init_seed,
            "sampling": seed if trainer.sampling_seed is None else trainer.sampling_seed}


def _context(cfg: DictConfig, trainer: TrainerConfig, eval_cfg: EvalConfig, out: Path, seeds: dict) -> RunContext:
    """What ``fit`` gets: the seeds, the run directory, the trainer's engine knobs and the ``eval`` group
    (the validation protocol); ``compat``: what a checkpoint must have been written with."""
    knobs = {f.name: getattr(trainer, f.name) for f in dataclasses.fields(RunContext)
             if hasattr(trainer, f.name) and f.name not in ("sampling_seed", "compat")}
    resolved = OmegaConf.to_container(cfg, resolve=True)
    # no ``optim``: the group reaches a model only through its resolved ``model`` section (MF's ``lr: ${optim.lr}``)
    compat = {k: resolved.get(k) for k in ("data", "partition", "split", "model", "seed")}
    compat["trainer"] = {k: v for k, v in resolved.get("trainer", {}).items() if k not in EXECUTION_KEYS}
    return RunContext(seed=seeds["init"], out_dir=out, sampling_seed=seeds["sampling"], eval_config=eval_cfg,
                      compat=compat, **knobs)
