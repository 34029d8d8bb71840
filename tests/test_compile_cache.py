"""The persistent compilation cache: where it lives, the switch, hits across processes' worth of compiles."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from jax.experimental.compilation_cache import compilation_cache as jax_cache

from jmf import compile_cache

SMALL = ["data.n_users=300", "data.n_items=200", "model=mf", "model.epochs=1", "model.dim=8"]


@pytest.fixture
def fresh_jax_cache():
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    saved = {n: jax.config.values[n] for n in names}
    jax.config.update("jax_compilation_cache_dir", None)
    yield
    for n, v in saved.items():
        jax.config.update(n, v)
    jax_cache.reset_cache()


def test_location_rules(monkeypatch, tmp_path, fresh_jax_cache):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(compile_cache.ENV, raising=False)
    default = compile_cache.location()
    assert default.parent == tmp_path / "xdg" / "jmf" / "xla" and jax.__version__ in default.name
    for off in ("0", "off", "False"):
        monkeypatch.setenv(compile_cache.ENV, off)
        assert compile_cache.location() is None and compile_cache.enable() is None
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "mine"))
    assert compile_cache.location() == tmp_path / "mine"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "jax"))     # JAX's own variable wins
    assert compile_cache.location() == tmp_path / "jax"


def test_a_cleared_process_cache_is_served_from_disk(monkeypatch, tmp_path, fresh_jax_cache):
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "xla"))
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    assert compile_cache.enable() == tmp_path / "xla"

    def f(x):
        return jnp.tanh(x @ x.T).sum() * 3.0 + 0.123456
    before = compile_cache.seconds()
    jax.jit(f)(jnp.ones((17, 5))).block_until_ready()
    mid = compile_cache.seconds()
    assert mid["misses"] > before["misses"] and mid["seconds"] > before["seconds"]
    assert any((tmp_path / "xla").iterdir())          # on disk: another process would read it
    jax.clear_caches()                                 # as a new process: nothing compiled in memory
    jax.jit(f)(jnp.ones((17, 5))).block_until_ready()
    assert compile_cache.seconds()["hits"] > mid["hits"]


def test_jmf_train_fills_the_cache_jax_names_and_reports_compile_time(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "", "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "cache"),
           "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    env.pop("PJRT_NPROC", None)
    res = subprocess.run([sys.executable, "-m", "jmf", f"hydra.run.dir={tmp_path}/run", *SMALL], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list((tmp_path / "cache").iterdir())) >= 2 and not (tmp_path / "xdg").exists()
    timing = json.loads((tmp_path / "run" / "timing.json").read_text())
    assert timing["train/fit_seconds"] > timing["train/compile_seconds"] > 0
    assert timing["run/seconds"] > timing["train/fit_seconds"]
    # trainer.cpu_threads=auto: MF asks for one XLA thread (jmf/threads.py), before the backend started
    assert json.loads((tmp_path / "run" / "run_info.json").read_text())["devices"]["cpu_threads"] == "1"
    env[compile_cache.ENV] = "off"
    del env["JAX_COMPILATION_CACHE_DIR"]
    res = subprocess.run([sys.executable, "-m", "jmf", f"hydra.run.dir={tmp_path}/off", *SMALL, "trainer.cpu_threads=all"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0 and not (tmp_path / "xdg").exists()
    assert json.loads((tmp_path / "off" / "run_info.json").read_text())["devices"]["cpu_threads"] == "all"


def test_fit_seconds_is_the_fit_wall_clock_when_the_model_times_itself(tmp_path):
    """iALS reports the time of its epochs after its set-up; timing.json keeps it as train/seconds, and
    train/fit_seconds stays model.fit's wall clock (set-up and compilation included), as for every model."""
    from hydra import compose, initialize_config_dir

    from jmf.config import CONF_DIR
    from jmf.experiments import register_configs
    from jmf.run import run

    register_configs([])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["data.n_users=300", "data.n_items=200", "model=ials", "model.epochs=1",
                                          "model.dim=8", "trainer.progress=false"])
    run(cfg, tmp_path)
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing["run/seconds"] > timing["train/fit_seconds"] > timing["train/seconds"] > 0
