"""JAX's persistent compilation cache for every jmf command, and what compiling cost a run.

Where the cache lives, first match wins:

* ``JAX_COMPILATION_CACHE_DIR`` (JAX's own variable; JAX reads it at import): so two runs with a fresh
  directory there are a cold and a warm run;
* ``JMF_COMPILE_CACHE``: a folder, or ``0`` / ``off`` / ``false`` to switch the cache off;
* ``$XDG_CACHE_HOME/jmf/xla/jax-<version>-jaxlib-<version>`` (``~/.cache`` when ``XDG_CACHE_HOME`` is unset).
  One folder per JAX version: an upgrade starts an empty cache rather than leaving the old one's entries
  beside it (JAX's own key covers the program, the compile options, the devices and the versions, so an
  entry is never used by a program it was not compiled for).

Every compilation is cached (no minimum compile time): the jobs of a sweep -- in one process with Hydra's
basic launcher, or in several with a parallel one -- compile each distinct step once.
:func:`enable` is called by ``jmf-train``, ``jmf-recommend`` and :func:`jmf.run.run`; it leaves a cache
directory that is already configured (by the environment, a test or the caller) as it is.

:func:`seconds` is this process's time spent compiling so far (tracing, lowering and XLA's backend
compile, from JAX's monitoring events) and its cache hits and misses: ``jmf.run`` writes the fit's share to
``timing.json`` (``train/compile_seconds``).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "JMF_COMPILE_CACHE"
OFF = ("0", "off", "false", "no")
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_counts = {"seconds": 0.0, "hits": 0, "misses": 0}
_lock = threading.Lock()
_listening = [False]


def location() -> Path | None:
    """The folder the cache uses by the rules of the module docstring, or ``None`` when it is switched off."""
    import jax
    import jaxlib

    configured = jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR")
    if configured:
        return Path(configured)
    setting = os.environ.get(ENV, "").strip()
    if setting.lower() in OFF:
        return None
    if setting:
        return Path(setting).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "jmf" / "xla" / f"jax-{jax.__version__}-jaxlib-{jaxlib.__version__}"


def enable() -> Path | None:
    """Switch the persistent cache on at :func:`location` (idempotent); returns the folder, or ``None`` when
    it is off or the folder cannot be made (a warning: the run goes on, compiling as without a cache)."""
    import jax

    _listen()
    where = location()
    if where is None:
        return None
    if jax.config.jax_compilation_cache_dir != str(where):
        try:
            where.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            log.warning("compilation cache %s cannot be created (%s); compiling without it (%s=off hides this)",
                        where, err, ENV)
            return None
        jax.config.update("jax_compilation_cache_dir", str(where))
        from jax.experimental.compilation_cache import compilation_cache

        compilation_cache.reset_cache()     # JAX set its cache up once, maybe before there was a folder
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return where


def seconds() -> dict[str, float]:
    """``{"seconds": time compiling, "hits": cache hits, "misses": cache misses}`` of this process so far
    (counted from the first :func:`enable`)."""
    with _lock:
        return dict(_counts)


def _listen() -> None:
    """Count compile time and cache hits from JAX's monitoring events (registered once per process)."""
    if _listening[0]:
        return
    from jax import monitoring

    def duration(event: str, secs: float, **_) -> None:
        if event in _COMPILE_EVENTS:
            with _lock:
                _counts["seconds"] += secs

    def count(event: str, **_) -> None:
        key = {"/jax/compilation_cache/cache_hits": "hits", "/jax/compilation_cache/cache_misses": "misses"}.get(event)
        if key:
            with _lock:
                _counts[key] += 1

    monitoring.register_event_duration_secs_listener(duration)
    monitoring.register_event_listener(count)
    _listening[0] = True
