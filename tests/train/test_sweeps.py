"""Sweeps: every launcher and search-space config composes; an Optuna sweep and a basic sweep run,
a failing trial is recorded without ending the sweep, and ``jmf-report`` aggregates a sweep."""

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from jmf.config import CONF_DIR
from jmf.experiments import register_configs

TINY = ["data.n_users=200", "data.n_items=100", "data.n_categories=4", "data.interactions_per_user=10"]
LAUNCHERS = sorted(p.stem for p in (CONF_DIR / "hydra" / "launcher").glob("*.yaml"))
SEARCHES = sorted(p.stem for p in (CONF_DIR / "hparams_search").glob("*.yaml"))


def _compose(*overrides: str):
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_config_composes(name):
    cfg = _compose(f"hydra/launcher={name}")
    target = cfg.hydra.launcher._target_
    assert target.startswith("hydra_plugins.hydra_"), target
    assert {"local": "joblib", "slurm": "SlurmLauncher", "slurm_local": "LocalLauncher"}[name] in target


@pytest.mark.parametrize("name", SEARCHES)
def test_search_space_composes(name):
    cfg = _compose(f"hparams_search={name}")
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.hydra.sweeper.params and cfg.hydra.sweeper.max_failure_rate == 1.0
    defaults = OmegaConf.load(CONF_DIR / "hparams_search" / f"{name}.yaml").defaults
    model = next(d["override /model"] for d in defaults if "override /model" in d)   # the model the space tunes
    assert cfg.model._target_ == OmegaConf.load(CONF_DIR / "model" / f"{model}.yaml")._target_
    assert cfg.trainer.optimized_metric.startswith("valid/")       # selection on validation only
    for key in cfg.hydra.sweeper.params:                           # every searched key exists
        assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", key


def _jmf(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XLA_FLAGS": ""}
    return subprocess.run([sys.executable, "-m", "jmf", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_optuna_sweep_with_a_failing_trial(tmp_path):
    """3 TPE trials over svd's rank in {0, 2, 4} (seeded); dim=0 fails: recorded, and the sweep goes on.
    The search finishes its trials and, as a basic sweep does, exits 2 (the failure was a user error); its last
    line counts the failed trials.

    (A repeated value would reuse its job folder: ``hydra.sweep.subdir`` is the overrides.)"""
    res = _jmf("-m", "hparams_search=svd_optuna", f"hydra.sweep.dir={tmp_path}/sweep", *TINY,
               "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=2", "model.dim=choice(0,2,4)", cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.strip().splitlines()[-1].startswith("jmf-train: 1 of 3 trials failed (listed under")
    sweep = tmp_path / "sweep"
    done, failures = list(sweep.rglob("metrics.json")), list(sweep.rglob("failure.json"))
    assert len(done) == 2 and len(failures) == 1   # seed 2's random start-up draws ranks 4, 0, 2
    assert "model.dim" in json.loads(failures[0].read_text())["message"]
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_params"]["model.dim"] in (2, 4) and 0 < best["best_value"] <= 1


def test_an_optuna_sweep_cut_short_and_run_again_ends_as_one_run_straight_through(tmp_path):
    """How ``benchmarks/search.py`` resumes a search a session cut short: the same command again.  The seeded
    sampler asks the same trials in the same order, each trial's folder (its overrides) resumes from its
    checkpoints, so the values and the chosen trial are those of a sweep that ran straight through."""
    args = ["-m", "hparams_search=jmf_optuna", "experiment=quickstart", *TINY, "model.epochs=2",
            "hydra.sweeper.n_jobs=1", "hydra.sweeper.sampler.n_startup_trials=2", "hydra/launcher=local"]

    def sweep(folder: str, trials: int):
        res = _jmf(*args, f"hydra.sweep.dir={tmp_path / folder}", f"hydra.sweeper.n_trials={trials}", cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-3000:]
        return {p.parent.name: json.loads(p.read_text())["valid/ndcg@10"]
                for p in (tmp_path / folder).rglob("metrics.json")}

    straight = sweep("straight", 3)
    assert len(straight) == 3
    cut = sweep("cut", 1)                            # the session ended after the first trial
    assert set(cut) < set(straight)
    again = sweep("cut", 3)                          # the same command, its full budget
    assert again == straight
    best = [yaml.safe_load((tmp_path / f / "optimization_results.yaml").read_text()) for f in ("straight", "cut")]
    assert best[0] == best[1]


def test_basic_sweep_over_seeds_and_report(tmp_path):
    """svd ranks over 2 seeds, one failing rank; jmf-report writes tables, CSV and plots.  The failed jobs
    set the exit code: 2, each failure being a user error (a single run's code for one)."""
    res = _jmf("-m", f"hydra.sweep.dir={tmp_path}/sweep", "model=svd", "model.dim=0,4,8", "seed=0,1", *TINY,
               cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-3000:]
    assert res.stderr.strip().splitlines()[-1].startswith("jmf-train: 2 of 6 jobs failed (listed under")
    assert len(list((tmp_path / "sweep").rglob("failure.json"))) == 2      # dim=0, every seed
    from jmf.report import main

    main([str(tmp_path / "sweep")])
    md = (tmp_path / "sweep" / "report.md").read_text()
    assert "model.dim=4" in md and "model.dim=8" in md and " ± " in md
    assert "Failed jobs" in md and "Best config per model" in md
    assert (tmp_path / "sweep" / "plot_model.dim.png").stat().st_size > 1000
    rows = (tmp_path / "sweep" / "report.csv").read_text().splitlines()
    assert len(rows) == 3  # header + the two working configs


@pytest.mark.slow  # ~20 s each: a real local launch through joblib and through submitit's local mode
@pytest.mark.parametrize("launcher", ["local", "slurm_local"])
def test_launcher_runs_jobs(tmp_path, launcher):
    res = _jmf("-m", f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path}/sweep", "model=pop", "seed=0,1",
               *TINY, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list((tmp_path / "sweep").rglob("metrics.json"))) == 2


EXPERIMENTS = CONF_DIR.parent / "experiments"
ROW_FILES = sorted(f"{p.parent.name}/{p.stem}" for p in EXPERIMENTS.glob("*/*.yaml"))


def test_every_experiment_row_file_composes():
    """Each ``experiments/<task>/<row>.yaml`` composes to a model with a target; a tuned row
    (``<row>_tuned.yaml``, written by benchmarks/search.py) holds what its header says was searched."""
    GlobalHydra.instance().clear()
    store = ConfigStore.instance()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"), _full_store_after():
        for name in ROW_FILES:
            # the store holds this row alone (and every task's default row), as jmf-train's would: Hydra copies
            # the whole store for every composition (~1 s with every row of every task registered)
            store.repo.pop("experiment", None)
            register_configs([f"experiment={name}"])
            cfg = compose(config_name="train", overrides=[f"experiment={name}"])
            assert cfg.model._target_.startswith("jmf."), name
            if name.endswith("_tuned"):
                tuned = OmegaConf.to_container(OmegaConf.load(EXPERIMENTS / f"{name}.yaml"))
                tuned.pop("defaults")
                for key, value in _leaves(tuned):
                    assert OmegaConf.select(cfg, key) == value, (name, key)


@contextlib.contextmanager
def _full_store_after():
    try:
        yield
    finally:
        register_configs()          # every row again, for the tests after this one


def _leaves(node: dict, prefix: str = ""):
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def test_long_override_names_get_a_bounded_job_folder():
    """A search over many keys names its job folders by every override; a name over the file system's
    255 bytes is cut and ended by a hash (distinct overrides, distinct folders; short names unchanged)."""
    from jmf.jobdir import MAX_NAME_BYTES, job_subdir

    short = "experiment=amazon_phone_electronic/cmf,model.dim=64,seed=0"
    assert job_subdir(short) == short
    long_a = "jmf_cnn,hparams_search=jmf_optuna," + ",".join(f"model.weights.w{i}=0.43758721126{i}" for i in range(12))
    long_b = long_a.replace("w11=", "w11=9")
    a, b = job_subdir("experiment=x/" + long_a), job_subdir("experiment=x/" + long_b)
    assert a != b and a.startswith("experiment=x/jmf_cnn,hparams_search=jmf_optuna,")
    assert all(len(part.encode()) <= MAX_NAME_BYTES for part in a.split("/"))
    assert job_subdir("experiment=x/" + long_a) == a          # the same overrides, the same folder
    cfg = _compose()
    assert "jmf_job_subdir" in OmegaConf.to_yaml(cfg.hydra.sweep, resolve=False)


def test_a_task_searched_on_its_own_keeps_its_rows_from_the_broader_familys_apply(tmp_path, monkeypatch):
    """``benchmarks/search.py --apply`` of a family writes a tuned row into every experiment of it but one whose
    task has its own search of that row (family amazon-bitgcf: BiTGCF's pair, searched on its own validation)."""
    sys.path.insert(0, str(EXPERIMENTS.parent / "benchmarks"))
    import search

    monkeypatch.setattr(search, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(search, "EXPERIMENTS", tmp_path / "experiments")
    (tmp_path / "results").mkdir()
    for e in search.FAMILIES["amazon"][1]:
        (tmp_path / "experiments" / e).mkdir(parents=True)
    found = {"row": "jmf_graph_items", "family": "amazon", "task": "amazon-phone", "best_value": 0.2,
             "best_params": {"model.dim": 64}, "trials": []}
    everything = search.FAMILIES["amazon"][1]
    own = search.FAMILIES["amazon-bitgcf"][1]
    assert len(search.apply(found)) == len(everything)              # no search of its own yet: every experiment
    (tmp_path / "results" / "search_amazon-bitgcf.json").write_text(
        json.dumps({"searches": [{**found, "family": "amazon-bitgcf", "best_params": {"model.dim": 256}}]}))
    for path in (tmp_path / "experiments" / e / "jmf_graph_items_tuned.yaml" for e in own):
        path.write_text("its own\n")
    written = search.apply({**found, "best_params": {"model.dim": 32}})
    assert sorted(p.parent.name for p in written) == sorted(e for e in everything if e not in own)
    assert all((tmp_path / "experiments" / e / "jmf_graph_items_tuned.yaml").read_text() == "its own\n" for e in own)
    assert search.space_of("amazon-bitgcf", "jmf_graph_items") == "jmf_graph_items_wide"
    assert search.space_of("amazon", "jmf_graph_items") == "jmf_graph_items"


def test_apply_recorded_writes_the_rows_of_a_search_known_only_from_its_results_file(tmp_path, monkeypatch):
    """A search whose sweep folders are gone is read from ``search_<family>.json``; ``--apply`` leaves its rows
    alone (written when it ran), ``--apply --apply-recorded`` writes them (a search never applied)."""
    sys.path.insert(0, str(EXPERIMENTS.parent / "benchmarks"))
    import common
    import search

    for module in (search, common):
        monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(search, "EXPERIMENTS", tmp_path / "experiments")
    monkeypatch.setattr(search, "ROOT", tmp_path)              # the paths it prints
    (tmp_path / "results").mkdir()
    for e in search.FAMILIES["cdrib"][1]:
        (tmp_path / "experiments" / e).mkdir(parents=True)
    recorded = {"row": "cmf", "family": "cdrib", "task": "cdrib-sport", "best_value": 0.1, "seconds": 1.0,
                "best_params": {"model.dim": 64}, "command": "jmf-train ...",
                "trials": [{"params": {"model.dim": "64"}, "valid/ndcg@10": 0.1, "failed": False}]}
    (tmp_path / "results" / "search_cdrib.json").write_text(json.dumps({"searches": [recorded]}))
    tuned = [tmp_path / "experiments" / e / "cmf_tuned.yaml" for e in search.FAMILIES["cdrib"][1]]
    base = ["search.py", "--family", "cdrib", "--out", str(tmp_path / "sweeps"), "--apply"]
    monkeypatch.setattr(sys, "argv", base)
    search.main()
    assert not any(p.exists() for p in tuned)
    monkeypatch.setattr(sys, "argv", [*base, "--apply-recorded"])
    search.main()
    assert all(yaml.safe_load(p.read_text())["model"]["dim"] == 64 for p in tuned)
