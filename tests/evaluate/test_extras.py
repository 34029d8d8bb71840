"""The test fold under extra protocols: several negative samplers and full ranking beside sampled."""

import dataclasses

import numpy as np
import pytest
from omegaconf import OmegaConf

from jmf.config import EvalSchema, to_dataclass
from jmf.data.split import make_split, partition_categories
from jmf.data.synthetic import synthetic
from jmf.evaluate.protocols import EvalConfig, evaluate_split, evaluate_test_extras
from jmf.models.cf.popularity import Popularity


def test_extras_repeat_the_main_protocols():
    data = synthetic(n_users=300, n_items=200, n_categories=4, seed=0)
    split = make_split(data, partition_categories(data, k=2), "loo", seed=0)
    pop = Popularity()
    pop.fit(split)
    cfg = EvalConfig(protocol="sampled", ks=(10,), negatives=50, sampling_seed=0, test_sampling_seeds=(0, 1),
                     test_full=True)
    main = evaluate_split(pop, split, "test", cfg)
    extra = evaluate_test_extras(pop, split, cfg)
    # the sampler seed of the main protocol gives the main numbers; another seed draws other negatives
    assert all(np.isclose(extra[f"s0/{k}"], v) for k, v in main.items())
    assert extra["s1/ndcg@10"] != extra["s0/ndcg@10"]
    full = evaluate_split(pop, split, "test", dataclasses.replace(cfg, protocol="full"))
    assert all(np.isclose(extra[f"full/{k}"], v) for k, v in full.items())
    assert extra["full/ndcg@10"] < main["ndcg@10"]   # 50 negatives flatter a ranker against all items
    # nothing extra unless asked; a fixed candidate file has no sampler seed to vary
    assert evaluate_test_extras(pop, split, dataclasses.replace(cfg, test_sampling_seeds=(), test_full=False)) == {}


def test_eval_group_resolves_interpolations_in_the_whole_config(monkeypatch):
    monkeypatch.setenv("JMF_TEST_ROOT", "/data/here")
    cfg = OmegaConf.create({"root": "/r", "eval": {"candidates": "${oc.env:JMF_TEST_ROOT,x}/neg.txt",
                                                   "protocol": "sampled", "test_sampling_seeds": [0, 1]}})
    schema = to_dataclass(EvalSchema, cfg.eval, "eval")
    assert schema.candidates == "/data/here/neg.txt" and schema.test_sampling_seeds == [0, 1]


def test_valid_protocol_test_validates_with_the_tests_sampled_protocol():
    """``eval.valid_protocol=test``: the validator a model gets validates with the test's sampled protocol,
    its negatives and sampler seed; ``full`` (the default) ranks every item."""
    from jmf.evaluate.validator import Validator
    from jmf.models.base import RunContext

    data = synthetic(n_users=300, n_items=200, n_categories=4, seed=0)
    split = make_split(data, partition_categories(data, k=2), "loo", seed=0)
    pop = Popularity()
    pop.fit(split)
    run_cfg = EvalConfig(protocol="sampled", ks=(10, 20), negatives=50, sampling_seed=3, valid_protocol="test")
    assert EvalConfig().for_validation((10,), 64, False) == EvalConfig(ks=(10,), batch_size=64, ratings=False)
    cfg = run_cfg.for_validation((10,), 64, False)
    assert (cfg.protocol, cfg.negatives, cfg.sampling_seed, cfg.ks, cfg.batch_size) == ("sampled", 50, 3, (10,), 64)
    sampled = evaluate_split(pop, split, "valid", cfg)["ndcg@10"]
    validator = Validator.of(RunContext(eval_config=run_cfg), split, batch_size=64)   # the run's eval group
    assert validator(pop, "ndcg@10") == sampled
    assert Validator.of(None, split)(pop, "ndcg@10") == evaluate_split(pop, split, "valid", EvalConfig(ks=(10,),
                                                                                                        ratings=False))["ndcg@10"]
    full = evaluate_split(pop, split, "valid", dataclasses.replace(run_cfg, valid_protocol="full")
                          .for_validation((10,), 64, False))["ndcg@10"]
    assert sampled > full   # 50 negatives flatter popularity against all items
    with pytest.raises(ValueError, match="eval.valid_protocol"):
        EvalConfig(valid_protocol="sampled")
    schema = to_dataclass(EvalSchema, OmegaConf.create({"valid_protocol": "test"}), "eval")
    assert schema.valid_protocol == "test"
