"""Multi-host start-up: ``jax.distributed.initialize`` from config, environment, or the cluster.

One JAX process per host (or per SLURM task); after initialisation ``jax.devices()`` lists
every process's devices, the engine's mesh spans them, and each process places only its
own devices' rows of every batch (:func:`jmf.train.parallel.put_batch`).

Where the coordinator comes from, first match wins:

1. ``trainer.distributed.{coordinator_address, num_processes, process_id}``;
2. the environment: ``JMF_COORDINATOR_ADDRESS``, ``JMF_NUM_PROCESSES``, ``JMF_PROCESS_ID``;
3. ``enabled=auto`` on a detected cluster: a SLURM job step with more than one task
   (``SLURM_STEP_NUM_TASKS``/``SLURM_NTASKS`` > 1) or a multi-host TPU slice
   (``TPU_WORKER_HOSTNAMES`` with several hosts, or ``MEGASCALE_COORDINATOR_ADDRESS``):
   ``jax.distributed.initialize()`` then reads everything from the cluster itself.

A single process with none of these does nothing.  Must run before any JAX computation.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from jmf.errors import ConfigError

log = logging.getLogger("jmf")

_done = False


@dataclass
class DistributedConfig:
    """``trainer.distributed``.

    Attributes:
      enabled: ``auto`` (initialise when a coordinator is configured or a cluster is detected),
        ``true`` (always: fails when nothing says where the coordinator is), ``false``.
      coordinator_address: ``host:port`` of process 0.
      num_processes: processes in the job.
      process_id: this process's index, ``0..num_processes-1``.
      local_device_ids: devices this process uses (default: all it sees).
      timeout_s: how long to wait for the other processes.
    """

    enabled: str = "auto"
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: list[int] | None = None
    timeout_s: int = 300


def detect_cluster(env: dict | None = None) -> str | None:
    """``slurm``, ``tpu`` or ``None``: a multi-process cluster JAX can initialise from by itself."""
    env = os.environ if env is None else env
    tasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS")
    if env.get("SLURM_JOB_ID") and tasks and int(tasks) > 1:
        return "slurm"
    hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]
    if len(hosts) > 1 or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
        return "tpu"
    return None


def initialize(cfg: DistributedConfig | None = None, env: dict | None = None) -> bool:
    """Initialise ``jax.distributed`` if config, environment or cluster asks for it; True if it did."""
    global _done
    cfg = cfg or DistributedConfig()
    env = os.environ if env is None else env
    if cfg.enabled not in ("auto", "true", "false"):
        raise ConfigError(f"trainer.distributed.enabled: {cfg.enabled!r} is not auto|true|false")
    if cfg.enabled == "false" or _done:
        return _done
    address = cfg.coordinator_address or env.get("JMF_COORDINATOR_ADDRESS")
    n = cfg.num_processes if cfg.num_processes is not None else _int(env.get("JMF_NUM_PROCESSES"))
    pid = cfg.process_id if cfg.process_id is not None else _int(env.get("JMF_PROCESS_ID"))
    cluster = detect_cluster(env)
    if address is None and cluster is None:
        if cfg.enabled == "true":
            raise ConfigError("trainer.distributed.enabled=true but no coordinator: set "
                             "trainer.distributed.coordinator_address/num_processes/process_id or JMF_COORDINATOR_"
                             "ADDRESS/JMF_NUM_PROCESSES/JMF_PROCESS_ID, or run under SLURM or on a TPU pod")
        return False
    if address is not None and (n is None or pid is None):
        raise ConfigError("trainer.distributed: coordinator_address given without num_processes and process_id")
    import jax

    kwargs = {"initialization_timeout": cfg.timeout_s}
    if cfg.local_device_ids is not None:
        kwargs["local_device_ids"] = list(cfg.local_device_ids)
    if address is not None:
        kwargs.update(coordinator_address=address, num_processes=n, process_id=pid)
    try:  # CPU collectives across processes go through gloo (the default CPU client has none)
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError):  # an older/newer jax without the option
        pass
    jax.distributed.initialize(**kwargs)
    _done = True
    log.info("jax.distributed: process %d of %d (%s), %d local / %d global devices", jax.process_index(),
             jax.process_count(), cluster or address, jax.local_device_count(), jax.device_count())
    return True


def _int(value: str | None) -> int | None:
    return None if value in (None, "") else int(value)
