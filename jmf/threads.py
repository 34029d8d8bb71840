"""How many threads XLA's CPU client runs a run's programs on (``trainer.cpu_threads``).

XLA's CPU runtime executes a program's independent operations concurrently on a pool with one thread
per core.  That pays off for programs of large operations (matmuls, propagation over whole tables) and
costs for programs made of many tiny ones: MF's epoch, a ``lax.scan`` of 1,250 steps of two gathers and
two scatter-adds of 64 rows, hands each step's small operations between the threads; on one thread per
device (with its YNNPACK fusions off, :mod:`jmf.models.cf.mf`) the warm ML-100k fit went from 1.81 s to 1.39 s
(``python benchmarks/first_result.py --ref c327728``; on two threads the epoch's time also varied from
process to process with where the threads landed).

``trainer.cpu_threads``:

* ``auto`` (default): the model's ``cpu_threads`` class attribute (threads per device; MF: 1) times the
  CPU devices the run uses, for a model that has one; else every core;
* a positive integer: that many threads;
* ``all``: every core (XLA's default).

The pool is made when JAX's CPU backend starts, so the setting is applied through XLA's ``PJRT_NPROC``
variable before that (:func:`apply`, called first thing by :func:`jmf.run.run`); a variable set by the user
wins, and a backend already started (a notebook, the second job of a sweep in one process) keeps its pool
(logged).  Results do not depend on it: only how the work is spread over the cores does.
"""

from __future__ import annotations

import logging
import os
import re

log = logging.getLogger(__name__)

ENV = "PJRT_NPROC"
KEY = "trainer.cpu_threads"


def cpu_devices() -> int:
    """The CPU devices JAX will make, read from the environment before it starts (forced host devices)."""
    counts = [int(n) for n in re.findall(r"--xla_force_host_platform_device_count=(\d+)", os.environ.get("XLA_FLAGS", ""))]
    counts.append(int(os.environ.get("JAX_NUM_CPU_DEVICES", "0") or 0))
    return max(1, *counts)


def requested(setting, model_class: type | None, devices: int = 0) -> int | None:
    """The thread count ``setting`` asks for with ``model_class`` on ``devices`` (``trainer.devices``: 0 = all)
    CPU devices; ``None``: every core."""
    if isinstance(setting, str) and setting.strip().lower() in ("auto", "all"):
        per_device = getattr(model_class, "cpu_threads", None)
        if setting.strip().lower() == "all" or per_device is None:
            return None
        n_devices = cpu_devices() if devices <= 0 else min(devices, cpu_devices())
        return per_device * n_devices
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
        from jmf.errors import ConfigError

        raise ConfigError(f"{KEY}: {setting!r} is not auto, all or a positive number of threads")
    return setting


def backend_started() -> bool:
    """Whether JAX has made its backends (after which a thread count no longer applies)."""
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge._backends)
    except (ImportError, AttributeError):       # a JAX without the attribute: assume started, change nothing
        return True


def apply(setting, model_class: type | None = None, devices: int = 0) -> int | None:
    """Set :data:`ENV` for the CPU backend about to start; returns the count in force (``None``: every core)."""
    in_force = int(os.environ[ENV]) if os.environ.get(ENV, "").strip().isdigit() else None
    if ENV in os.environ and os.environ.get("_JMF_SET_NPROC") != os.environ[ENV]:
        return in_force                                              # the user's own setting
    want = requested(setting, model_class, devices)
    if backend_started():
        if want is not None and os.environ.get(ENV) != str(want):
            log.info("%s=%s: JAX's CPU backend has already started in this process; its thread pool stays",
                     KEY, setting)
        return in_force
    if want is None:
        os.environ.pop(ENV, None)
        os.environ.pop("_JMF_SET_NPROC", None)
    else:
        os.environ[ENV] = os.environ["_JMF_SET_NPROC"] = str(want)
    return want
