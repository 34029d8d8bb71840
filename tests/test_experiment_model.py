"""``experiment=<task> model=<name>``: the row ``experiment=<task>/<name>`` (jmf.experiments.experiment_overrides)."""

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from jmf.config import CONF_DIR
from jmf.experiments import _requested_rows, experiment_catalogue, experiment_overrides, register_configs
from jmf.errors import USER_ERROR, ConfigError

ROOT = Path(__file__).resolve().parent.parent
TASKS = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))
MODELS = ["pop", "mf", "jmf"]


@pytest.fixture(scope="module")
def compose_cfg():
    """``compose_cfg(overrides)``: Hydra's compose, with the experiments of a command line naming every
    ``experiment=<task>/<model>`` checked here, cut to the task composed (Hydra deep-copies the whole store
    for every config it composes: ~1.5 s with all ~280 rows, ~0.3 s with one task's).  The same overrides
    compose once (Hydra is deterministic)."""
    store = ConfigStore.instance().repo
    saved = store.pop("experiment", None)
    register_configs(["experiment=" + ",".join(f"{task}/{model}" for task in TASKS for model in MODELS)])
    registered = store["experiment"]
    GlobalHydra.instance().clear()

    @functools.lru_cache(maxsize=None)
    def _compose(overrides):
        task = next(o for o in overrides if o.startswith("experiment=")).split("=")[1].split("/")[0]
        store["experiment"] = {k: v for k, v in registered.items() if k in (task, f"{task}.yaml")}
        return compose(config_name="train", overrides=list(overrides))

    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            yield lambda overrides: _compose(tuple(overrides))
    finally:
        store.pop("experiment", None)
        if saved is not None:
            store["experiment"] = saved


def test_every_task_has_the_rows_checked():
    assert len(TASKS) >= 10 and set(TASKS) == set(experiment_catalogue())
    assert all(set(MODELS) <= set(rows) for rows in experiment_catalogue().values())


@pytest.mark.parametrize("task", TASKS)
def test_model_beside_a_task_composes_as_the_row(compose_cfg, task):
    """``experiment=<task> model=<m>`` and ``experiment=<task>/<m>`` compose the same config, for every task."""
    for model in MODELS:
        overrides = experiment_overrides([f"experiment={task}", f"model={model}", "seed=3"])
        assert overrides == [f"experiment={task}/{model}", "seed=3"]
        cfg = compose_cfg(overrides)
        assert cfg == compose_cfg([f"experiment={task}/{model}", "seed=3"]), (task, model, overrides)
        assert cfg.model._target_ == OmegaConf.load(CONF_DIR / "model" / f"{model}.yaml")._target_
        assert cfg.seed == 3 and cfg.data._target_


def test_overrides_compose_on_top_of_the_model_form(compose_cfg):
    task = "ciao_cold_start"
    extra = ["model/encoder=transformer", "model.dim=24", "split.beta=0.5"]
    cfg = compose_cfg(experiment_overrides([f"experiment={task}", "model=jmf", *extra]))
    assert cfg == compose_cfg([f"experiment={task}/jmf", *extra])
    assert "transformer" in cfg.model.encoder._target_.lower() and cfg.model.dim == 24 and cfg.split.beta == 0.5


def test_sweeps_expand_to_rows():
    """``-m experiment=X model=a,b`` is ``-m experiment=X/a,X/b``; lists, choice() and glob() over both."""
    assert experiment_overrides(["-m", "experiment=ciao_cold_start", "model=pop,mf", "seed=0,1"]) == \
        ["-m", "experiment=ciao_cold_start/pop,ciao_cold_start/mf", "seed=0,1"]
    assert experiment_overrides(["experiment=quickstart,lm_ciao", "model=choice(mf,jmf)", "--cfg", "job"]) == \
        ["experiment=quickstart/mf,quickstart/jmf,lm_ciao/mf,lm_ciao/jmf", "--cfg", "job"]
    assert experiment_overrides(["model=mf", "experiment=synthetic_cold_start,ciao_cold_start"]) == \
        ["experiment=synthetic_cold_start/mf,ciao_cold_start/mf"]
    jmf_rows = [r for r in experiment_catalogue()["ciao_cold_start"] if r.startswith("jmf")]
    assert len(jmf_rows) >= 3
    assert experiment_overrides(["experiment=ciao_cold_start", "model=glob(jmf*)"]) == \
        ["experiment=" + ",".join(f"ciao_cold_start/{r}" for r in jmf_rows)]
    # the sweep registers its rows only (all ~280 would cost ~1.5 s per job's compose)
    assert _requested_rows(["-m", "experiment=ciao_cold_start/pop,quickstart/mf"]) == {"ciao_cold_start/pop",
                                                                                        "quickstart/mf"}
    with pytest.raises(ConfigError, match=r"model=a,b"):
        experiment_overrides(["experiment=quickstart", "model=range(1,3)"])


def test_other_command_lines_pass_unchanged():
    for argv in (["model=mf", "seed=1"], ["experiment=ciao_cold_start/jmf_transformer", "seed=1"],
                 ["experiment=lm_ciao", "model/encoder=cnn"], ["experiment=nosuch", "model=mf"],
                 ["-m", "experiment=ciao_cold_start/pop,ciao_cold_start/mf", "model.dim=8,16"], []):
        assert experiment_overrides(argv) == argv
    # a row with the model it already runs: the row (what this command composed before)
    assert experiment_overrides(["experiment=ciao_cold_start/mf_tuned", "model=mf"]) == \
        ["experiment=ciao_cold_start/mf_tuned"]


@pytest.mark.parametrize("argv, pattern", [
    (["experiment=ciao_cold_start", "model=nosuch"],
     r"model=nosuch: experiment=ciao_cold_start has no row nosuch; .*experiment=ciao_cold_start/<row> .*"
     r"<row> one of .*jmf_cnn.*, pop"),
    (["experiment=ciao_cold_start/jmf_cnn", "model=mf"],
     r"the row jmf_cnn already picks its model \(jmf\); run experiment=ciao_cold_start/mf .*"
     r"or experiment=ciao_cold_start/jmf_cnn alone"),
    (["experiment=amazon_phone_electronic_authors", "model/encoder=cnn"],
     r"runs model=disencdr, which has no model/encoder .*experiment=amazon_phone_electronic_authors/<row> "
     r"model/encoder=cnn, <row> one of jmf, jmf_map$"),
    (["experiment=ciao_cold_start/jmf_cnnn"], r"ciao_cold_start has no row jmf_cnnn; .*<row> one of .*jmf_cnn, "),
    (["-m", "experiment=synthetic_cold_start/jmf_cnn,synthetic_cold_start/mf", "model/head=mlp"],
     r"experiment=synthetic_cold_start/mf runs model=mf, .*<row> one of jmf_cnn, jmf_graph, jmf_transformer, jmf, "
     r"jmf_map$"),
])
def test_a_wrong_combination_names_the_row_form(argv, pattern):
    with pytest.raises(ConfigError, match=pattern):
        experiment_overrides(argv)


def _jmf_train(*args):
    env = {**os.environ, "XLA_FLAGS": ""}
    return subprocess.Popen([sys.executable, "-m", "jmf", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_cli_prints_the_rows_config(compose_cfg):
    """``jmf-train experiment=X model=m [model/encoder=...] --cfg job`` prints the row's config (the processes run
    side by side: each takes seconds to start)."""
    runs = {name: _jmf_train(*args, "--cfg", "job") for name, args in {
        "model": ["experiment=synthetic_cold_start", "model=mf"],
        "row": ["experiment=synthetic_cold_start/mf"],
        "model+encoder": ["experiment=synthetic_cold_start", "model=jmf", "model/encoder=transformer"],
    }.items()}
    out = {name: p.communicate(timeout=300) + (p.returncode,) for name, p in runs.items()}
    for name, (stdout, stderr, code) in out.items():
        assert code == 0 and stdout, (name, stderr[-2000:])
    assert out["model"][0] == out["row"][0] and "MatrixFactorization" in out["row"][0]
    assert "n_users: 10000" in out["row"][0]                                            # the task's data
    row_encoder = compose_cfg(["experiment=synthetic_cold_start/jmf", "model/encoder=transformer"])
    assert out["model+encoder"][0] == OmegaConf.to_yaml(row_encoder) and "Transformer" in out["model+encoder"][0]


@pytest.mark.parametrize("argv, culprit", [
    (["experiment=ciao_cold_start", "model=nosuch"], "runs the row experiment=ciao_cold_start/<row>"),
    (["experiment=ciao_cold_start/jmf_cnn", "model=mf"], "run experiment=ciao_cold_start/mf"),
    (["experiment=ciao_cold_start/jmf_cnnn", "seed=1"], "experiment=ciao_cold_start/<row> runs"),
    (["experiment=ciao_cold_start", "model/encoder=cnn", "model=mf"],
     "experiment=ciao_cold_start/<row> model/encoder=cnn, <row> one of jmf_best, jmf_cnn"),
])
def test_cli_refuses_a_wrong_combination_in_one_paragraph(monkeypatch, capsys, argv, culprit):
    """Exit code 2, one paragraph naming the row form, no traceback nor Hydra's message, before Hydra runs."""
    from jmf.__main__ import cli

    monkeypatch.setattr(sys, "argv", ["jmf-train", *argv])
    for name in ("JMF_TRACEBACK", "HYDRA_FULL_ERROR"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as exit_:
        cli()
    out, err = capsys.readouterr()
    assert exit_.value.code == USER_ERROR and out == "", (exit_.value.code, out)
    assert err.startswith("jmf-train: error: ") and len(err.strip().splitlines()) == 2, err
    assert culprit in err and "Traceback" not in err and "Could not override" not in err, err
