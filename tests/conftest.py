"""Test set-up: 4 forced CPU devices (set before jax initialises) and the shared data path."""

import os
import sys
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))   # helpers shared by test files (docs_runner)
os.environ.setdefault("JMF_DATA_DIR", str((ROOT.parent / "shared" / "data").resolve()))
# no persistent compilation cache unless a test asks for one (tests/test_compile_cache.py): every test compiles
# as a fresh process would, and nothing is written under the user's cache folder
os.environ.setdefault("JMF_COMPILE_CACHE", "off")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """``$JMF_DATA_DIR``: the real datasets (CI: ../shared/data). Missing -> the test fails, loudly."""
    path = Path(os.environ["JMF_DATA_DIR"])
    assert path.is_dir(), f"JMF_DATA_DIR={path} does not exist: point it at the shared datasets"
    return path


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
