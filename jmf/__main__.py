"""``jmf-train`` / ``python -m jmf``: the Hydra entry point (thin, design.md#conventions).

User errors (:mod:`jmf.errors`) are printed as one paragraph with exit code 2, Hydra's config errors
(an unknown group option or key) exit with 2 too, Ctrl-C stops with exit code 130 and SIGTERM with 143,
each saying the step a rerun resumes from (:mod:`jmf.train.interrupt`); a multirun with failed jobs exits
with 2 when each was a user error, else 1 (:func:`jmf.report.sweep_verdict`); the traceback of a user
error is shown only with ``JMF_TRACEBACK=1``.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

from jmf import hugepages
from jmf.errors import USER_ERROR, paragraph
from jmf.runlock import held_by_another


def _refuse_if_in_use(argv: list[str]) -> None:
    """Exit 2 at once, before JAX and Hydra load, when ``hydra.run.dir=`` names a directory another run holds."""
    for arg in argv:
        if arg.startswith("hydra.run.dir="):
            err = held_by_another(arg.split("=", 1)[1])
            if err is not None:
                print(paragraph(err, "jmf-train"), file=sys.stderr)
                sys.exit(USER_ERROR)


def _is_the_command() -> bool:
    """Whether this process is ``jmf-train`` / ``python -m jmf`` (not a program that imports this module)."""
    program = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path()
    return program.name == "jmf-train" or (program.suffix == ".py" and program.resolve() == Path(__file__).resolve())


_refuse_if_in_use(sys.argv[1:])
if _is_the_command():     # not when a program (pytest, a notebook) imports this module
    hugepages.ensure()     # once, before JAX loads: XLA's per-step buffers in huge pages (jmf/hugepages.py)

import hydra  # noqa: E402 -- after the run-directory probe: a refused run never pays for loading them
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from jmf.config import CONF_DIR  # noqa: E402
from jmf.errors import (INTERRUPTED, JmfError, RunDirError, disk_full_error, show_traceback,  # noqa: E402
                        user_error)
from jmf.experiments import experiment_overrides, register_configs  # noqa: E402

log = logging.getLogger("jmf")
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)   # "Unable to initialize backend 'tpu'" on CPUs
_started = False     # the task function ran: a SystemExit(1) before it is Hydra's config error
MIN_FREE_BYTES = 2**20   # less free space than this under the run directory: refused before the run starts


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    """Run one experiment in Hydra's run directory; return the optimised validation metric.

    A failing job writes ``failure.json``.  A single run then stops (a user error as one paragraph,
    exit code 2); in a basic multirun the job returns NaN so the sweep goes on; under the Optuna sweeper
    it raises, which the sweeper records as a failed trial (``max_failure_rate: 1.0`` in
    ``conf/hparams_search``) -- a NaN return would crash hydra-optuna-sweeper 1.3.0 with optuna 2.10.
    """
    global _started
    _started = True
    from jmf.run import run
    from jmf.train import interrupt
    from jmf.train.observe import record_failure

    log.setLevel(cfg.trainer.log_level)
    hydra_cfg = HydraConfig.get()
    interrupt.watch()       # SIGTERM (timeout, SLURM, kill) stops the run as Ctrl-C does
    try:
        metrics = run(cfg, hydra_cfg.runtime.output_dir)
    except KeyboardInterrupt as stop:      # Ctrl-C, or SIGTERM (interrupt.Terminated)
        from jmf.errors import TERMINATED

        # the step a rerun resumes from: the newest checkpoint complete on disk, or that it starts over
        out_dir = hydra_cfg.runtime.output_dir
        print(f"jmf-train: {interrupt.stopped(stop, out_dir)} (run directory {out_dir})", file=sys.stderr)
        # The checkpoint is written and the run's files are closed (the interrupt unwound through them).  A
        # normal interpreter exit here can crash (SIGSEGV) in XLA's or orbax's threads interrupted mid-call,
        # so the process leaves at once with the documented code.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(TERMINATED if isinstance(stop, interrupt.Terminated) else INTERRUPTED)
    except Exception as err:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            path = record_failure(hydra_cfg.runtime.output_dir, err, list(hydra_cfg.overrides.task))
            log.error("job %s failed (recorded in %s): %s; the sweep goes on", hydra_cfg.job.num, path, err)
            if "optuna" in str(hydra_cfg.sweeper.get("_target_", "")).lower():
                raise
            return math.nan
        problem = user_error(err)
        if problem is None or show_traceback():
            raise
        print(paragraph(problem, "jmf-train"), file=sys.stderr)
        sys.exit(USER_ERROR)
    finally:
        interrupt.unwatch()     # SIGTERM's handler of before again: between a sweep's jobs, after the run
    return float(metrics.get(cfg.trainer.optimized_metric, math.nan))


SYSTEM_FOLDERS = ("/proc", "/sys", "/dev")


def _check_run_dir(argv: list[str]) -> None:
    """Raise :class:`RunDirError` naming ``hydra.run.dir`` when the run directory cannot be made or written
    (a read-only file system, an existing file, ``/proc/x``, a full disk): Hydra would fail in ``pathlib``
    with a traceback.  A single run only (a sweep's folder is ``hydra.sweep.dir``)."""
    if any(a in ("-m", "--multirun") for a in argv):
        return
    given = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith("hydra.run.dir=")]
    if given and "${" in given[-1]:
        return                                   # an interpolation: Hydra resolves it, then RunDirLock checks
    path = Path(given[-1] if given else "outputs").absolute()
    key = "hydra.run.dir" if given else "hydra.run.dir (default outputs/<date>/<time> in the current directory)"
    existing = next(p for p in (path, *path.parents) if os.path.lexists(p))
    if not existing.is_dir():
        where = "" if existing == path else f" (in {path})"
        raise RunDirError(f"{key}: {existing}{where} exists and is a file, not a directory; "
                          "set hydra.run.dir to a directory")
    made = [p for p in (path, *path.parents) if p != existing and existing in p.parents]
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):   # writable? (the real errno: a read-only file system, ...)
            pass
    except OSError as err:
        system = next((f"; {s} is a system folder, not a place for files" for s in SYSTEM_FOLDERS
                       if str(path).startswith(s + "/")), "")
        raise RunDirError(f"{key}: the run directory {path} cannot be created or written ({err.strerror}"
                          f"{system}); set hydra.run.dir to a writable directory") from None
    finally:
        for p in made:                           # leave no empty folders: Hydra makes them again for the run
            with contextlib.suppress(OSError):
                p.rmdir()
    if shutil.disk_usage(existing).free < MIN_FREE_BYTES:
        raise disk_full_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)), path)


def _did_you_mean(argv: list[str]) -> str | None:
    """A hint for an override whose group or top-level key is misspelled, ``modle=jmf`` -> ``model=jmf``: the
    closest config group under ``conf/`` (or key) by :mod:`difflib`; Hydra itself only offers ``+modle=jmf``."""
    import difflib

    groups = sorted({p.relative_to(CONF_DIR).as_posix() for p in CONF_DIR.rglob("*") if p.is_dir()} | {"experiment"})
    top = [g for g in groups if "/" not in g] + ["seed"]
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key.startswith(("+", "~", "-")) or key in groups or key.split(".")[0] in top:
            continue
        head, dot, rest = key.partition(".")
        match = difflib.get_close_matches(key if "/" in key else head, groups if "/" in key else top, n=1)
        if match:
            fixed = match[0] if "/" in key else f"{match[0]}{dot}{rest}"
            return f"did you mean {fixed}={value}? ({key!r} is not a config group or key of jmf-train)"
    return None


def _print_help() -> None:
    """``jmf-train --help`` from ``conf/hydra/help/jmf.yaml``, without Hydra's app help, which lists every
    config group eagerly (200 config-repository copies: 90 s here) even when the template never shows them."""
    import string

    from omegaconf import OmegaConf

    help_cfg = OmegaConf.load(CONF_DIR / "hydra" / "help" / "jmf.yaml")
    text = OmegaConf.create({"hydra": {"help": help_cfg}}).hydra.help.template
    print(string.Template(text).safe_substitute())


def cli() -> None:
    """The ``jmf-train`` console script: :func:`main`, with Hydra's config errors mapped to exit code 2, and
    ``experiment=<task> model=<name>`` read as the row ``experiment=<task>/<name>`` (:func:`experiment_overrides`).

    With no arguments at all it runs ``experiment=quickstart``: JMF on a synthetic cross-category cold start,
    compared with popularity (every other command keeps ``conf/train.yaml``'s defaults)."""
    if len(sys.argv) == 1:
        print("jmf-train: no arguments -- running experiment=quickstart (JMF on a synthetic cross-category cold "
              "start; see jmf-train --help)", flush=True)
        sys.argv.append("experiment=quickstart")
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        _print_help()
        return
    try:
        sys.argv[1:] = experiment_overrides(sys.argv[1:])   # experiment=<task> model=<name>: the row <task>/<name>
        register_configs(sys.argv[1:])        # the tasks, and the rows this command line names
        _check_run_dir(sys.argv[1:])
    except JmfError as err:
        if show_traceback():
            raise
        print(paragraph(err, "jmf-train"), file=sys.stderr)
        sys.exit(USER_ERROR)
    try:
        main()
    except SystemExit as exit_:
        if exit_.code == 1 and not _started:     # Hydra printed a config error (unknown option, bad override)
            hint = _did_you_mean(sys.argv[1:])
            if hint:
                print(f"jmf-train: {hint}", file=sys.stderr)
            sys.exit(USER_ERROR)
        raise
    _exit_if_jobs_failed()


def _exit_if_jobs_failed() -> None:
    """End a multirun whose report lists failed jobs with exit code 1, or 2 when each failed on a user error
    (an Optuna search too, after finishing its trials), its last line counting them and naming the report
    (:func:`jmf.report.sweep_verdict`)."""
    from jmf.report import sweep_verdict

    verdict = sweep_verdict()
    if verdict is None:
        return
    code, line = verdict
    sys.stdout.flush()          # the report's tables first: this is the last line
    print(f"jmf-train: {line}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    cli()
