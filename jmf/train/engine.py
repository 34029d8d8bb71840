"""The training engine: phases of epochs of jitted steps, bounded in flight, checkpointed, resumable.

A model keeps its own logic (state pytree, pure step, how an epoch's batches are drawn, how
it validates) and hands the loop to :class:`Engine`::

    engine = Engine(ctx, name="jmf")                  # ctx: RunContext from jmf.run (or None)
    sharding = engine.state_shardings(state)           # P() everywhere (or row-sharded tables)
    state = engine.put_state(state, sharding)
    step = engine.jit_step(train_step, sharding)       # jit, donate, pinned out_shardings, traced once
    result = engine.fit([
        Phase("pretrain", epochs=1, plan=lambda epoch: EpochPlan(n, batch_at), step=step),
        Phase("joint", epochs=20, plan=..., step=step, validate=lambda s: ndcg(s), patience=3),
    ], state)
    result.state, result.best_state, result.phases["joint"].history

* ``step(state, batch) -> (state, metrics)``; ``metrics["loss"]`` is the scalar the engine
  sums, checks for NaN/inf (naming the step and the first non-finite term), and logs.
* ``EpochPlan.batch(i)`` returns the *device* batch of step ``i`` of that epoch.  Plans must
  be pure functions of ``(sampling seed, phase, epoch)`` (:meth:`Engine.epoch_rng`): a
  resumed run regenerates the epoch and skips the steps already done, and the device count
  never changes what is sampled.
* At most ``max_inflight`` steps are dispatched and not yet waited for (the oldest is
  waited for before another is dispatched): this bounds host memory and avoids XLA's CPU
  all-reduce rendezvous deadlock with many forced host devices on few cores.
* Checkpoints (``ctx.out_dir/checkpoints``): every ``checkpoint_every`` steps, at epoch ends (after
  validation: the first of the fit, the last of a phase, an early stop, a new best, else at most every
  :data:`EPOCH_CHECKPOINT_SECONDS`, so MF's 0.1 s epochs do not pay an orbax write each) and the best
  validation epoch.  They hold the state pytree and :class:`Progress` (phase, epoch, step in epoch, loss
  so far, early-stopping book), so a killed run resumes exactly (redoing what it had not saved); a run
  with an unusable checkpoint stops with :class:`~jmf.train.checkpoint.CheckpointError`.
* A model that runs a whole epoch in one call (a ``lax.scan``) uses one-step epochs.

The model side of this hand-off -- ``setup(split, ctx) -> TrainPlan`` and ``finish`` -- is the
contract in :mod:`jmf.models.base` (:class:`~jmf.models.base.EngineModel`, with a worked example);
:class:`RunContext`, :class:`Phase` and :class:`EpochPlan` are defined in :mod:`jmf.train.plan`.  Place
batches with ``engine.put_batch`` (sharded over ``data``, each process its own rows) and draw them
from ``engine.epoch_rng(phase, epoch)``.  A model that fits sub-models (EMCDR's two MFs) gives each
its own folder, ``dataclasses.replace(ctx, out_dir=ctx.out_dir / "source")``: one folder holds one
run's checkpoints.
Other model families (CDR baselines, ...) use the same API; nothing here knows about JMF.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jmf.pytrees import changed_settings, flat_dict
from jmf.train.plan import EpochPlan, Phase, RunContext, Selection  # noqa: F401  (re-exported: the engine's API)
from jmf.errors import JmfError
from jmf.train import interrupt, parallel
from jmf.train.checkpoint import Checkpointer, CheckpointError
from jmf.train.interrupt import last_step  # noqa: F401  (re-exported: the last finished step of this process)
from jmf.train.observe import MetricLogger, progress

log = logging.getLogger("jmf")

# The most training (wall seconds) an epoch-end checkpoint may be skipped for; see the module docstring.
EPOCH_CHECKPOINT_SECONDS = 10.0


class NonFiniteLossError(JmfError, FloatingPointError):
    """The loss became NaN/inf; the message names the step and the term."""


def copy_state(state):
    """A copy of ``state``'s arrays that outlives the next (buffer-donating) step."""
    return jax.tree.map(lambda x: x.copy() if isinstance(x, jax.Array) else x, state)

@dataclass
class Progress:
    """Where a run is; saved as JSON beside the state in every checkpoint."""

    phase: int = 0
    epoch: int = 0                 # epochs finished in this phase
    step_in_epoch: int = 0
    global_step: int = 0
    loss_sum: float = 0.0          # this epoch's step losses so far, summed in step order
    best: float | None = None      # best validation score of this phase (higher is better)
    best_epoch: int = -1
    best_step: int = -1            # global step of the best checkpoint
    bad_epochs: int = 0
    stopped: bool = False          # early stopping ended this phase
    history: list = field(default_factory=list)       # validation values per epoch
    losses: list = field(default_factory=list)        # mean training loss per epoch
    done: dict = field(default_factory=dict)          # summaries of finished phases
    selected: dict = field(default_factory=dict)      # the phase's further selections: name -> book (_select_more)


@dataclass
class PhaseSummary:
    epochs: int
    losses: list
    history: list
    best: float | None
    best_epoch: int
    selected: dict = field(default_factory=dict)   # a further selection's name -> {history, best, best_epoch,
    #                                                best_metrics}


@dataclass
class FitResult:
    state: Any                 # the state after the last step
    best_state: Any            # the best-validated state (None when no phase validates)
    phases: dict[str, PhaseSummary]
    resumed_from: int | None
    global_step: int
    selected: dict = field(default_factory=dict)   # a Selection's name -> its best state (phases in order)


class Engine:
    """Runs :class:`Phase` lists for one model fit; see the module docstring."""

    def __init__(self, ctx: RunContext | None = None, name: str = "model", seed: int | None = None):
        self.ctx = ctx or RunContext(checkpoint=False)
        self.name = name
        seed = self.ctx.seed if seed is None else seed
        self.sampling_seed = seed if self.ctx.sampling_seed is None else self.ctx.sampling_seed
        self.mesh = parallel.make_mesh(self.ctx.devices or None)
        self.max_inflight = max(1, self.ctx.max_inflight or parallel.default_max_inflight())
        self.traces: Counter = Counter()
        self.max_pending = 0           # largest number of un-waited steps seen (tests)
        out = self.ctx.out_dir
        self.checkpointer = (Checkpointer(Path(out) / "checkpoints", self.ctx.keep_checkpoints,
                                          self.ctx.async_checkpoints)
                             if out is not None and self.ctx.checkpoint else None)

    # ------------------------------------------------------------------ placement
    @property
    def n_devices(self) -> int:
        return self.mesh.shape["data"]

    def state_shardings(self, state, row_sharded: Callable[[tuple, jax.Array], bool] | None = None):
        """Shardings for ``state``: replicated, or row-sharded where ``row_sharded`` and ``ctx.shard_tables``."""
        return parallel.state_shardings(state, self.mesh, row_sharded if self.ctx.shard_tables else None)

    def put_state(self, state, sharding):
        """Place the initial state with ``sharding`` (from :meth:`state_shardings`), on every process."""
        return parallel.put_global(state, sharding)

    def put_batch(self, batch: dict, axis: int = 0) -> dict:
        return parallel.put_batch(batch, self.mesh, axis)

    def jit_step(self, fn: Callable, state_sharding, name: str = "step", **jit_kwargs) -> Callable:
        """``jax.jit(fn, donate_argnums=0, out_shardings=(state_sharding, replicated))``, trace-counted.

        Pinning ``out_shardings`` keeps the returned state's sharding equal to the input's, so
        the step compiles once per batch shape (``self.traces[name]`` counts the traces).
        """
        def counted(*args):
            self.traces[name] += 1   # runs only while tracing
            return fn(*args)
        return jax.jit(counted, donate_argnums=0, out_shardings=(state_sharding, parallel.replicated(self.mesh)),
                       **jit_kwargs)

    def epoch_rng(self, phase: int | str, epoch: int) -> np.random.Generator:
        """The host RNG of one epoch's batch plan, keyed by (sampling seed, phase, epoch)."""
        tag = phase if isinstance(phase, int) else int.from_bytes(phase.encode()[:8].ljust(8, b"\0"), "little")
        return np.random.default_rng([self.sampling_seed, tag, epoch])

    # ------------------------------------------------------------------ the loop
    def fit(self, phases: list[Phase], state) -> FitResult:
        """Run ``phases`` from ``state`` (or from the run's checkpoint); see the module docstring."""
        ck, prog, best_state, resumed = self.checkpointer, Progress(), None, None
        selected: dict = {}         # a Selection's name -> its best state
        if ck is not None:
            state, prog, resumed = self._maybe_resume(ck, state)
            ck = self.checkpointer   # resume=false replaces it
        logger = MetricLogger(self.ctx.out_dir if jax.process_index() == 0 else None, self.ctx.tensorboard,
                              resume_step=resumed)
        interrupt.fit_started(ck, prog.global_step, jax.process_index() == 0)   # what a signal's message reports
        try:
            for index, phase in enumerate(phases):
                if index < prog.phase:
                    continue
                state, best_state = self._run_phase(phase, state, prog, ck, logger, best_state, selected)
                prog.done[phase.name] = dataclasses.asdict(PhaseSummary(
                    prog.epoch, prog.losses, prog.history, prog.best, prog.best_epoch,
                    {k: {n: book[n] for n in ("history", "best", "best_epoch", "best_metrics")}
                     for k, book in prog.selected.items()}))
                if phase.validate is not None and prog.best_step >= 0 and ck is not None:
                    ck.wait()
                    best_state = ck.restore(prog.best_step, state, "best")
                for name, book in prog.selected.items():
                    if book["best_step"] >= 0 and ck is not None:
                        ck.wait()
                        selected[name] = ck.restore(book["best_step"], state, f"best_{name}")
                prog = Progress(phase=index + 1, global_step=prog.global_step, done=prog.done)
        finally:
            logger.close()
            if ck is not None:
                ck.wait()
        interrupt.fit_finished()
        summaries = {name: PhaseSummary(**s) for name, s in prog.done.items()}
        return FitResult(state, best_state, summaries, resumed, prog.global_step, selected)

    def _maybe_resume(self, ck: Checkpointer, state):
        step = ck.latest_step()
        if step is None:
            interrupt.starting_over(ck.directory)      # says so when an earlier attempt left no checkpoint
            return state, Progress(), None
        if not self.ctx.resume:
            log.info("trainer.resume=false: starting fresh over the checkpoints in %s", ck.directory)
            ck.close()
            if jax.process_index() == 0:
                shutil.rmtree(ck.directory, ignore_errors=True)
            self.checkpointer = Checkpointer(ck.directory, self.ctx.keep_checkpoints, self.ctx.async_checkpoints)
            return state, Progress(), None
        broken = []
        for step in ck.all_steps():        # newest first; a corrupt or partial one falls back to the next
            try:
                meta = ck.read_meta(step)
            except CheckpointError as err:
                broken.append(f"step {step}: {_short(err)}")
                continue
            self._check_compat(meta.get("compat", {}), ck.path(step))   # another config: an error, not a fallback
            if meta.get("name") != self.name:
                raise CheckpointError(f"checkpoint {ck.path(step)} was written by {meta.get('name')!r}, "
                                      f"this run fits {self.name!r}; run with trainer.resume=false to start fresh")
            try:
                restored = ck.restore(step, state)
            except CheckpointError as err:
                broken.append(f"step {step}: {_short(err)}")
                continue
            if broken:
                log.warning("checkpoint(s) in %s unusable (%s); resumed from the newest intact one, step %d",
                            ck.directory, "; ".join(broken), step)
            if jax.process_index() == 0:
                # a best checkpoint newer than the resumed step (killed between it and its epoch's latest
                # one) is redone with its epoch, at the same step
                ck.discard_after(step)
            log.info("resumed from step %d (%s)", step, ck.path(step))
            return restored, Progress(**meta["progress"]), step
        raise CheckpointError(f"no intact checkpoint in {ck.directory}: every one is corrupt or partial "
                              f"({'; '.join(broken)}); delete the folder or run with trainer.resume=false to start fresh")

    def _check_compat(self, saved: dict, path: Path) -> None:
        now, old = flat_dict(self.ctx.compat), flat_dict({k: v for k, v in saved.items() if k in self.ctx.compat})
        diff = changed_settings(now, old)   # only the sections this run checks (an older checkpoint's optim is not)
        if diff:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {now.get(k)!r}" for k in diff[:8])
            raise CheckpointError(f"checkpoint {path} was written by a different config ({shown}); "
                                  "use another hydra.run.dir, or trainer.resume=false to start fresh")

    def _meta(self, prog: Progress) -> dict:
        return {"name": self.name, "progress": dataclasses.asdict(prog), "compat": self.ctx.compat}

    def _run_phase(self, phase: Phase, state, prog: Progress, ck, logger: MetricLogger, best_state,
                   selected: dict):
        every = self.ctx.checkpoint_every
        last_save = None            # when this phase last wrote a periodic checkpoint (None: not yet)
        while prog.epoch < phase.epochs and not prog.stopped:
            plan = phase.plan(prog.epoch)
            start, first = time.perf_counter(), prog.step_in_epoch
            pending: list = []
            busy = [False]
            with progress(plan.n_steps - first, f"{self.name} {phase.name} {prog.epoch}", plan.examples_per_step,
                          self.ctx.progress) as advance, self._checkpoint_on_interrupt(pending, prog, phase, logger, ck,
                                                                                       lambda: state, busy):
                for i in range(first, plan.n_steps):
                    busy[0] = True          # between here and the bookkeeping, state and counters disagree
                    state, metrics = phase.step(state, plan.batch(i))
                    prog.global_step += 1
                    pending.append((prog.global_step, i, metrics))
                    prog.step_in_epoch = i + 1
                    busy[0] = False
                    self.max_pending = max(self.max_pending, len(pending))
                    if len(pending) >= self.max_inflight:
                        self._drain(pending, 1, prog, phase, logger)
                    advance()
                    if every and prog.global_step % every == 0 and i + 1 < plan.n_steps and ck is not None:
                        self._drain(pending, len(pending), prog, phase, logger)
                        prog.step_in_epoch = i + 1
                        ck.save(prog.global_step, state, self._meta(prog))
                        last_save = time.perf_counter()
                self._drain(pending, len(pending), prog, phase, logger)
            seconds = time.perf_counter() - start
            n_run = plan.n_steps - first
            loss = prog.loss_sum / max(plan.n_steps, 1)
            record = {f"{phase.name}/loss": loss, f"{phase.name}/examples_per_s": n_run * plan.examples_per_step /
                      max(seconds, 1e-9)}
            improved, better = self._validate(phase, state, prog, record)
            prog.losses.append(loss)
            prog.epoch += 1
            prog.step_in_epoch, prog.loss_sum = 0, 0.0
            logger.log(prog.global_step, record, phase=phase.name, epoch=prog.epoch - 1)
            remaining = (phase.epochs - prog.epoch) * seconds if not prog.stopped else 0.0
            log.info("%s %s epoch %d: %s  (%.1fs, ETA %.0fs%s)", self.name, phase.name, prog.epoch - 1,
                     "  ".join(f"{k.split('/', 1)[1]} {v:,.4g}" for k, v in record.items()), seconds, remaining,
                     ", early stop" if prog.stopped else "")
            for name in (["best"] if improved else []) + [f"best_{n}" for n in better]:
                if ck is not None:
                    ck.save(prog.global_step, state, self._meta(prog), series=name)
                elif name == "best":
                    best_state = copy_state(state)
                else:
                    selected[name.removeprefix("best_")] = copy_state(state)
            if ck is not None and (last_save is None or improved or better or prog.stopped
                                   or prog.epoch >= phase.epochs
                                   or time.perf_counter() - last_save >= EPOCH_CHECKPOINT_SECONDS):
                ck.save(prog.global_step, state, self._meta(prog))
                last_save = time.perf_counter()
        return state, best_state

    @staticmethod
    def _validate(phase: Phase, state, prog: Progress, record: dict) -> tuple[bool, list[str]]:
        """Validate after an epoch (``record`` gets the values; ``prog`` the early-stopping book); returns
        whether the phase's best improved and the names of the ``selections`` whose best did."""
        improved, better = False, []
        if phase.validate is not None:
            value = float(phase.validate(state))
            score = value if phase.mode == "max" else -value
            prog.history.append(value)
            record[f"{phase.name}/{phase.metric}"] = value
            if math.isfinite(score) and (prog.best is None or score > prog.best):
                prog.best, prog.best_epoch, prog.bad_epochs, improved = score, prog.epoch, 0, True
                prog.best_step = prog.global_step
            else:
                prog.bad_epochs += 1
                prog.stopped = bool(phase.patience and prog.bad_epochs >= phase.patience)
        for sel in phase.selections:
            book = prog.selected.setdefault(sel.name, {"history": [], "best": None, "best_epoch": -1,
                                                       "best_step": -1, "best_metrics": {}})
            out = sel.validate(state)
            value, figures = (out if isinstance(out, tuple) else (out, {}))
            value = float(value)
            score = value if sel.mode == "max" else -value
            book["history"].append(value)
            record[f"{phase.name}/{sel.name}"] = value
            if math.isfinite(score) and (book["best"] is None or score > book["best"]):
                book["best"], book["best_epoch"] = score, prog.epoch
                book["best_metrics"] = {k: float(v) for k, v in figures.items()}
                if sel.keep_state:
                    book["best_step"] = prog.global_step
                    better.append(sel.name)
        return improved, better

    @contextlib.contextmanager
    def _checkpoint_on_interrupt(self, pending: list, prog: Progress, phase: Phase, logger: MetricLogger, ck,
                                 current_state: Callable, busy: list):
        """Ctrl-C or SIGTERM between two steps: finish the steps in flight and checkpoint where the loop is,
        so the same command resumes from there.  Caught inside a step (its input buffers donated, the counters
        not yet advanced) nothing is saved and the last complete checkpoint stays the resume point, which
        ``jmf-train``'s message names (:mod:`jmf.train.interrupt`)."""
        try:
            yield
        except KeyboardInterrupt:
            if ck is not None and prog.step_in_epoch > 0 and not busy[0]:
                try:
                    self._drain(pending, len(pending), prog, phase, logger)
                    ck.save(prog.global_step, current_state(), self._meta(prog))
                    ck.wait()
                    log.warning("interrupted: checkpoint at step %d in %s", prog.global_step, ck.directory)
                except Exception as err:      # noqa: BLE001 -- the interrupt wins; the older checkpoint stays
                    log.warning("interrupted: no checkpoint written (%s); the last one stays", err)
            raise

    def _drain(self, pending: list, n: int, prog: Progress, phase: Phase, logger: MetricLogger) -> None:
        """Wait for the ``n`` oldest pending steps; add their losses in step order; NaN check; log."""
        every = self.ctx.log_every
        for _ in range(min(n, len(pending))):
            global_step, i, metrics = pending[0]   # left pending until counted: a signal in the wait leaves it
            values = jax.device_get(metrics)        # to the interrupt's drain (_checkpoint_on_interrupt)
            loss = float(values["loss"])
            if self.ctx.nan_check and not math.isfinite(loss):
                bad = [k for k, v in values.items() if k != "loss" and not np.all(np.isfinite(v))]
                term = bad[0] if bad else "loss"
                last = self.checkpointer.latest_step() if self.checkpointer is not None else None
                where = (f"; the last good checkpoint is step {last} in {self.checkpointer.directory}"
                         if last is not None else "")
                raise NonFiniteLossError(
                    f"{self.name}: non-finite loss at step {global_step} (phase {phase.name}, epoch {prog.epoch}, "
                    f"step {i} of the epoch): term '{term}' = {float(np.asarray(values[term]).mean())}{where}; "
                    "lower the learning rate or check the data")
            pending.pop(0)
            prog.loss_sum += loss
            interrupt.step_done(global_step)
            if every and global_step % every == 0:
                logger.log(global_step, {f"{phase.name}/step_{k}": float(np.asarray(v).mean())
                                         for k, v in values.items()}, phase=phase.name, epoch=prog.epoch)


def _short(err: Exception) -> str:
    """The first line of a checkpoint error's cause, for a one-paragraph report."""
    cause = err.__cause__ or err
    return f"{type(cause).__name__}: {str(cause).splitlines()[0][:160] if str(cause) else ''}"
