"""Test set-up: 4 forced CPU devices (set before jax initialises) and the shared data path."""

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
# unoptimised XLA for the tests and the jmf-train processes they start: the tests' programs are small and
# compiled once each, so LLVM's optimisation cost more than it saved (two heavy test files: 347 s -> 287 s);
# JAX_DISABLE_MOST_OPTIMIZATIONS=0 in the environment runs them as users do
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))   # helpers shared by test files (docs_runner)
os.environ.setdefault("JMF_DATA_DIR", str((ROOT.parent / "shared" / "data").resolve()))
# one persistent compilation cache for the whole session, in a temporary folder removed at exit: the tests and
# the jmf-train processes they start compile each distinct program once (JAX's key covers the program, the
# options and the devices), and nothing is written under the user's cache folder.  JMF_COMPILE_CACHE=off in the
# environment runs every test as a cold process would.
if "JMF_COMPILE_CACHE" not in os.environ:
    _SESSION_CACHE = tempfile.mkdtemp(prefix="jmf-test-xla-")
    atexit.register(shutil.rmtree, _SESSION_CACHE, ignore_errors=True)
    os.environ["JMF_COMPILE_CACHE"] = _SESSION_CACHE

import pytest  # noqa: E402


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (pyproject's addopts): one worker per core, at most 4.  A test process keeps about one core
    busy (compilation and Python are single-threaded), so two workers on two cores take about half the time;
    each worker holds its own JAX runtime (4 forced devices) and a few GB.  ``-n 0`` runs in one process."""
    return max(1, min(4, len(os.sched_getaffinity(0))))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``$JMF_DATA_DIR``: the real datasets (CI: ../shared/data). Missing -> the test fails, loudly."""
    path = Path(os.environ["JMF_DATA_DIR"])
    assert path.is_dir(), f"JMF_DATA_DIR={path} does not exist: point it at the shared datasets"
    return path


@pytest.fixture(scope="session", autouse=True)
def _session_compile_cache():
    """This process uses the session's compilation cache too (jmf.compile_cache's rules: off stays off)."""
    from jmf import compile_cache

    compile_cache.enable()
    yield


@pytest.fixture(scope="module")
def quick_compiles(tmp_path_factory):
    """Unoptimised XLA and a persistent compilation cache in a temporary folder for one test module (the graph
    models' steps are large programs: ~30 s of LLVM optimisation against ~9 s without), restored afterwards."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    names = ("jax_disable_most_optimizations", "jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")
    saved = {name: jax.config.values[name] for name in names}
    jax.config.update("jax_disable_most_optimizations", True)
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    compilation_cache.reset_cache()
    yield
    for name, value in saved.items():
        jax.config.update(name, value)
    compilation_cache.reset_cache()


@pytest.fixture(scope="module")
def optimised_compiles():
    """XLA's optimisations on for one module (the session runs without them): for modules that train long
    enough for the optimised programs to pay for their compilation (the transfer controls: 219 + 161 s
    unoptimised against 118 + 98 s optimised)."""
    import jax

    saved = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", False)
    yield
    jax.config.update("jax_disable_most_optimizations", saved)

