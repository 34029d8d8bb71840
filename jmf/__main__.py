"""``jmf-train`` / ``python -m jmf``: the Hydra entry point (thin, STYLE R2)."""

from __future__ import annotations

import logging
import math

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from jmf.config import CONF_DIR, register_configs

register_configs()
log = logging.getLogger("jmf")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    """Run one experiment in Hydra's run directory; return the optimised validation metric.

    A failing job writes ``failure.json``.  A single run then raises; in a basic multirun the
    job returns NaN so the sweep goes on; under the Optuna sweeper it raises, which the sweeper
    records as a failed trial (``max_failure_rate: 1.0`` in ``conf/hparams_search``) -- a NaN
    return would crash hydra-optuna-sweeper 1.3.0 with optuna 2.10 instead.
    """
    from jmf.run import run
    from jmf.train.observe import record_failure

    log.setLevel(cfg.trainer.log_level)
    hydra_cfg = HydraConfig.get()
    try:
        metrics = run(cfg, hydra_cfg.runtime.output_dir)
    except Exception as err:
        if hydra_cfg.mode != RunMode.MULTIRUN:
            raise
        path = record_failure(hydra_cfg.runtime.output_dir, err, list(hydra_cfg.overrides.task))
        log.exception("job %s failed (recorded in %s); the sweep goes on", hydra_cfg.job.num, path)
        if "optuna" in str(hydra_cfg.sweeper.get("_target_", "")).lower():
            raise
        return math.nan
    return float(metrics.get(cfg.trainer.optimized_metric, math.nan))


if __name__ == "__main__":
    main()
