"""Two processes on localhost form one JAX distributed job over CPU devices; cluster detection."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jmf.distributed import DistributedConfig, detect_cluster, initialize

WORKER = Path(__file__).with_name("dist_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_as_one_job(tmp_path):
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(pid), "2", str(port), str(tmp_path / f"{pid}.json")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for pid in (0, 1)]
    env4 = {**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    ref = subprocess.run([sys.executable, str(WORKER), "-1", "1", "0", str(tmp_path / "ref.json")], env=env4,
                         capture_output=True, text=True, timeout=120)
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=120)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("the distributed job hung")
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outs)
    assert ref.returncode == 0, ref.stderr[-2000:]
    r0, r1, single = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("0", "1", "ref"))
    assert (r0["process_count"], r0["devices"], r0["local_devices"], r0["mesh"]) == (2, 4, 2, 4)
    assert {r0["process_index"], r1["process_index"]} == {0, 1}
    assert r0["w"] == r1["w"] and r0["losses"] == r1["losses"]
    np.testing.assert_allclose(r0["w"], single["w"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r0["w"], [1.0, -2.0, 3.0, 0.5], atol=0.2)


def test_cluster_detection_and_config_errors():
    assert detect_cluster({}) is None
    assert detect_cluster({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None
    assert detect_cluster({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}) == "slurm"
    assert detect_cluster({"TPU_WORKER_HOSTNAMES": "a,b"}) == "tpu"
    assert initialize(DistributedConfig(), env={}) is False          # a single process: nothing to do
    with pytest.raises(ValueError, match="no coordinator"):
        initialize(DistributedConfig(enabled="true"), env={})
    with pytest.raises(ValueError, match="num_processes"):
        initialize(DistributedConfig(coordinator_address="127.0.0.1:1"), env={})
    with pytest.raises(ValueError, match="enabled"):
        initialize(DistributedConfig(enabled="yes"), env={})


@pytest.mark.slow  # ~90 s here: cross-process CPU collectives (gloo) on every step
def test_two_process_cli_run_matches_one_process(tmp_path):
    """``jmf-train`` as a 2-process job (2 CPU devices each) gives the 1-process metrics."""
    tiny = ["model=jmf", "model/encoder=bag", "data.n_users=240", "data.n_items=120", "data.n_categories=4",
            "data.interactions_per_user=12", "partition.k=2", "model.dim=8", "model.batch_size=16",
            "model.items_per_user=4", "model.epochs=2", "model.pretrain_epochs=1", "model.patience=0",
            "model.max_len=8", "model.negatives=8", "eval.ks=[10]"]
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    dist = [f"trainer.distributed.coordinator_address=127.0.0.1:{port}", "trainer.distributed.num_processes=2"]
    procs = [subprocess.Popen([sys.executable, "-m", "jmf", f"hydra.run.dir={tmp_path}/d", *tiny, *dist,
                               f"trainer.distributed.process_id={pid}"], env=env, cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for pid in (0, 1)]
    errs = [p.communicate(timeout=400)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(e[-2000:] for e in errs)
    one = subprocess.run([sys.executable, "-m", "jmf", f"hydra.run.dir={tmp_path}/one", *tiny],
                         env={**os.environ, "XLA_FLAGS": ""}, cwd=tmp_path, capture_output=True, text=True,
                         timeout=400)
    assert one.returncode == 0, one.stderr[-2000:]
    a = json.loads((tmp_path / "d" / "metrics.json").read_text())
    b = json.loads((tmp_path / "one" / "metrics.json").read_text())
    for key in b:
        if not key.endswith("seconds"):  # wall clock
            np.testing.assert_allclose(a[key], b[key], rtol=2e-3, atol=2e-3, err_msg=key)
