"""``jmf-train`` / ``python -m jmf``: the Hydra entry point (thin, design.md#conventions).

User errors (:mod:`jmf.errors`) are printed as one paragraph with exit code 2, Hydra's config errors
(an unknown group option or key) exit with 2 too, Ctrl-C stops with exit code 130 and says how to
resume; the traceback of a user error is shown only with ``JMF_TRACEBACK=1``.
"""

from __future__ import annotations

import logging
import math
import os
import sys
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
from jmf.errors import INTERRUPTED, JmfError, show_traceback, user_error  # noqa: E402
from jmf.experiments import experiment_overrides, register_configs  # noqa: E402

log = logging.getLogger("jmf")
logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)   # "Unable to initialize backend 'tpu'" on CPUs
_started = False     # the task function ran: a SystemExit(1) before it is Hydra's config error


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
    from jmf.train.observe import record_failure

    log.setLevel(cfg.trainer.log_level)
    hydra_cfg = HydraConfig.get()
    try:
        metrics = run(cfg, hydra_cfg.runtime.output_dir)
    except KeyboardInterrupt:
        from jmf.train.engine import last_step

        print(f"jmf-train: interrupted at step {last_step()}; rerun the same command to resume "
              f"(run directory {hydra_cfg.runtime.output_dir})", file=sys.stderr)
        # The checkpoint is written and the run's files are closed (the interrupt unwound through them).  A
        # normal interpreter exit here can crash (SIGSEGV) in XLA's or orbax's threads interrupted mid-call,
        # so the process leaves at once with the documented code.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(INTERRUPTED)
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
    return float(metrics.get(cfg.trainer.optimized_metric, math.nan))


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
    except JmfError as err:
        if show_traceback():
            raise
        print(paragraph(err, "jmf-train"), file=sys.stderr)
        sys.exit(USER_ERROR)
    try:
        main()
    except SystemExit as exit_:
        if exit_.code == 1 and not _started:     # Hydra printed a config error (unknown option, bad override)
            sys.exit(USER_ERROR)
        raise


if __name__ == "__main__":
    cli()
