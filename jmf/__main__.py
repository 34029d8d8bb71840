"""``jmf-train`` / ``python -m jmf``: the Hydra entry point (thin, STYLE R2)."""

from __future__ import annotations

import logging
import math

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from jmf.config import CONF_DIR, register_configs

register_configs()


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float:
    """Run one experiment in Hydra's run directory; return the optimised validation metric."""
    from jmf.run import run

    logging.getLogger("jmf").setLevel(cfg.trainer.log_level)
    metrics = run(cfg, HydraConfig.get().runtime.output_dir)
    value = metrics.get(cfg.trainer.optimized_metric, math.nan)
    return float(value)


if __name__ == "__main__":
    main()
