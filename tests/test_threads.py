"""``trainer.cpu_threads``: what each setting asks XLA's CPU client for, and when it can still apply."""

import pytest

from jmf import threads
from jmf.errors import ConfigError
from jmf.models.cf.mf import MatrixFactorization
from jmf.models.cf.svd import TruncatedSVD


def test_auto_is_the_models_choice_and_all_is_every_core(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    monkeypatch.delenv("JAX_NUM_CPU_DEVICES", raising=False)
    assert threads.requested("auto", MatrixFactorization) == 1
    assert threads.requested("auto", TruncatedSVD) is None and threads.requested("auto", None) is None
    assert threads.requested("all", MatrixFactorization) is None
    assert threads.requested(3, MatrixFactorization) == 3
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_foo=1 --xla_force_host_platform_device_count=4")   # one per device
    assert threads.requested("auto", MatrixFactorization) == 4 and threads.requested("auto", MatrixFactorization, 2) == 2


@pytest.mark.parametrize("bad", [0, -2, True, "two", 1.5])
def test_a_bad_setting_names_the_key(bad):
    with pytest.raises(ConfigError, match="trainer.cpu_threads"):
        threads.requested(bad, None)


def test_apply_sets_the_variable_only_before_the_backend_starts(monkeypatch):
    monkeypatch.setattr(threads, "cpu_devices", lambda: 1)
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.delenv("_JMF_SET_NPROC", raising=False)
    monkeypatch.setattr(threads, "backend_started", lambda: False)
    assert threads.apply("auto", MatrixFactorization) == 1 and threads.os.environ[threads.ENV] == "1"
    assert threads.apply("all", MatrixFactorization) is None and threads.ENV not in threads.os.environ  # ours: replaced
    monkeypatch.setenv(threads.ENV, "2")                       # the user's own variable wins
    assert threads.apply("auto", MatrixFactorization) == 2 and threads.os.environ[threads.ENV] == "2"
    monkeypatch.delenv(threads.ENV)
    monkeypatch.setattr(threads, "backend_started", lambda: True)   # too late: nothing changes
    assert threads.apply(1, None) is None and threads.ENV not in threads.os.environ


def test_this_jax_exposes_whether_its_backends_started():
    import jax

    jax.devices()
    assert threads.backend_started()
