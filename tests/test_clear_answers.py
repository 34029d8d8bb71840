"""Clear answers (issue 32): a run directory that cannot be used, a seed that is not a number, a report of a
folder that does not exist, a misspelled group, the docs ``--help`` names, and results tables whose titles tell
two rows of one task apart."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import tempfile
from collections import namedtuple
from pathlib import Path

import pytest

import jmf.__main__ as entry
from jmf.errors import USER_ERROR, ConfigError, RunDirError

ROOT = Path(__file__).resolve().parent.parent


def _jmf_train(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jmf", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "XLA_FLAGS": ""})


def test_an_unusable_run_directory_names_it_and_the_key(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("x")
    cases = {f"{tmp_path}/a_file": rf"hydra\.run\.dir: {tmp_path}/a_file exists and is a file, not a directory",
             f"{tmp_path}/a_file/run": rf"hydra\.run\.dir: {tmp_path}/a_file \(in {tmp_path}/a_file/run\) exists "
                                       "and is a file",
             "/proc/x": r"hydra\.run\.dir: the run directory /proc/x cannot be created or written \(.*; /proc is a "
                        "system folder"}
    for run_dir, message in cases.items():
        with pytest.raises(RunDirError, match=message):
            entry._check_run_dir(["model=pop", f"hydra.run.dir={run_dir}"])
    entry._check_run_dir([f"hydra.run.dir={tmp_path}/new/deep/run"])    # a usable one: probed, and left as it was
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    with pytest.raises(RunDirError, match=rf"hydra\.run\.dir: the run directory {tmp_path} cannot be created or "
                                          r"written \(Read-only file system\); set hydra\.run\.dir"):
        entry._check_run_dir([f"hydra.run.dir={tmp_path}"])
    monkeypatch.undo()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("shutil.disk_usage", lambda path: usage(2**30, 2**30 - 10, 10))
    with pytest.raises(RunDirError, match=rf"no space left on device writing {tmp_path}: 10 bytes free of 1\.0 GiB"):
        entry._check_run_dir([f"hydra.run.dir={tmp_path}"])


def test_a_file_as_run_directory_is_one_paragraph_from_the_command(tmp_path):
    (tmp_path / "a_file").write_text("x")
    res = _jmf_train(f"hydra.run.dir={tmp_path}/a_file", "model=pop", cwd=tmp_path)
    assert res.returncode == USER_ERROR, res.stderr[-2000:]
    assert "hydra.run.dir" in res.stderr and "a_file exists and is a file" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_a_misspelled_group_gets_a_suggestion(tmp_path):
    assert entry._did_you_mean(["modle=jmf"]) == ("did you mean model=jmf? ('modle' is not a config group or key "
                                                  "of jmf-train)")
    assert entry._did_you_mean(["model/encodr=cnn"]).startswith("did you mean model/encoder=cnn?")
    assert entry._did_you_mean(["sed=3"]).startswith("did you mean seed=3?")
    assert entry._did_you_mean(["modle.dim=8"]).startswith("did you mean model.dim=8?")
    assert entry._did_you_mean(["model=jmf", "model.dimm=3", "+foo=1", "hydra.verbose=true"]) is None
    res = _jmf_train(f"hydra.run.dir={tmp_path}/run", "modle=jmf", cwd=tmp_path)
    assert res.returncode == USER_ERROR and "jmf-train: did you mean model=jmf?" in res.stderr, res.stderr[-2000:]


def test_a_seed_that_is_not_an_integer_names_seed(tmp_path):
    from hydra import compose, initialize_config_dir

    from jmf.config import CONF_DIR
    from jmf.experiments import register_configs
    from jmf.run import run

    register_configs()
    for seed in ("abc", "1.5"):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[f"seed={seed}", "model=pop", "trainer.progress=false"])
        with pytest.raises(ConfigError, match=rf"^seed: '?{seed}'? is not an integer"):
            run(cfg, tmp_path / seed)


def test_report_of_a_missing_folder_is_one_paragraph(tmp_path, capsys):
    from jmf.report import main

    with pytest.raises(SystemExit) as exit_:
        main([str(tmp_path / "nonexistent")])
    err = capsys.readouterr().err
    assert exit_.value.code == USER_ERROR
    assert err.startswith(f"jmf-report: error: {tmp_path}/nonexistent: no such folder") and "Traceback" not in err
    assert not (tmp_path / "nonexistent").exists()         # not created by the attempt


def test_help_points_at_pages_that_exist(capsys):
    entry._print_help()
    text = capsys.readouterr().out
    named = re.findall(r"\bdocs/[\w/.-]+\.(?:md|yml)", text)
    assert named and all((ROOT / path).is_file() for path in named), named


def test_two_rows_of_one_task_have_different_titles():
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from jmf.config import CONF_DIR
    from jmf.experiments import register_configs
    from jmf.outputs import run_title

    rows = ["ciao_cold_start", "ciao_cold_start/jmf_transformer", "ciao_cold_start/jmf_graph"]
    register_configs([f"experiment={','.join(rows)}"])
    titles = []
    try:
        for row in rows:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose("train", overrides=[f"experiment={row}"], return_hydra_config=True)
                HydraConfig.instance().set_config(cfg)
                titles.append(run_title(cfg, "JMF", 0))
    finally:
        HydraConfig.instance().cfg = None
    assert titles[1] == "experiment=ciao_cold_start/jmf_transformer · ciao · JMF (transformer encoder) · seed 0"
    assert len(set(titles)) == len(rows), titles
