"""Correctness controls of cross-category transfer on synthetic data (issue 3).

Both run the experiment files' data (``experiments/synthetic_cold_start.yaml`` and
``synthetic_no_shared.yaml``: 10 000 users x 300 items, 4 categories, O1 = the 2 largest,
30% of the two-sided users cold on O1), seed 0, with the joint model at the experiment's own settings
(``experiments/synthetic_cold_start/jmf_cnn.yaml``, the table's row), with a bag encoder for CI time.  At the
experiment's size (10 000 users) they are slow tests (``pytest -m slow``, ~100 s); CI runs the same controls on the
first 3 000 users' worth of the generator (``data.n_users=3000``), with the oracle bound at 85 % (3 000 users give
the model less to learn the mapping from: 89 % of the oracle there, seed 0).

* With planted shared structure (every planted taste shared across categories), the joint
  model's cold-start NDCG@10 is within 10% of the planted oracle (the generator's own
  ranker, which knows every user's true factors) and far above popularity, which is what
  target-only MF can offer a user with no O1 history.
* With *no* shared structure (``shared_dim=0``: O2 says nothing about O1 beyond
  popularity), transfer must not help: a gain there would mean a leak of held-out O1
  information into training or evaluation.  That holds for the item-neighbourhood term
  too (the ``neighbour`` score term), at its validation choice and forced on at weight 1.
"""

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from jmf.config import CONF_DIR
from jmf.experiments import register_configs
from jmf.evaluate.protocols import EvalConfig, evaluate_split
from jmf.models.cf.popularity import Popularity
from jmf.models.oracle import PlantedOracle
from jmf.models.base import RunContext
from jmf.pipeline import build_split, load_data

EVAL = EvalConfig(ks=(10,))
pytestmark = pytest.mark.usefixtures("optimised_compiles")
BAG = ["model/encoder=bag", "model.encoder.embed_dim=32", "model.encoder.out_dim=32"]


def _config(experiment: str, users: int | None):
    register_configs()
    size = [f"data.n_users={users}"] if users else []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"experiment={experiment}", "seed=0", *BAG, *size])


def _cold(experiment: str, users: int | None = None):
    cfg = _config(experiment, users)
    split = build_split(load_data(cfg.data, 0), cfg.partition, cfg.split, 0)
    return split, OmegaConf.to_container(cfg.data, resolve=True), cfg


def _ndcg(model, split, seed=0):
    model.fit(split, RunContext(seed=seed))
    return evaluate_split(model, split, "test", EVAL)["ndcg@10"]


def _jmf(cfg):
    """The experiment's JMF row (its settings and score terms), with a bag encoder."""
    model = instantiate(cfg.model, _convert_="all")
    assert model.dim == 16 and list(model.terms) == ["neighbour"] and len(model.terms["neighbour"].weights) == 6
    return model


# (users: None = the experiment's 10 000; the share of the oracle JMF must reach)
SIZES = [pytest.param(None, 0.9, marks=pytest.mark.slow, id="experiment-size"), pytest.param(3000, 0.85, id="3000")]


@pytest.mark.parametrize("users, share", SIZES)
def test_transfer_reaches_90_percent_of_the_planted_oracle(users, share):
    split, data_cfg, cfg = _cold("synthetic_cold_start", users)
    pop = _ndcg(Popularity(), split)
    jmf = _ndcg(_jmf(cfg), split)
    oracle = _ndcg(PlantedOracle(data_cfg), split)
    assert jmf >= share * oracle, (jmf, oracle, pop)
    assert jmf > pop + 0.3, (jmf, pop)


@pytest.mark.parametrize("users", [pytest.param(None, marks=pytest.mark.slow, id="experiment-size"), 3000])
def test_no_shared_structure_no_transfer(users):
    split, _, cfg = _cold("synthetic_no_shared", users)
    assert cfg.data.shared_dim == 0
    model = _jmf(cfg)
    pop, jmf = _ndcg(Popularity(), split), _ndcg(model, split)
    assert jmf < 1.05 * pop + 0.01, (jmf, pop, model.terms["neighbour"].weight)
    model.terms["neighbour"].weight = 1.0   # the neighbourhood term forced on: co-occurrence must not leak either
    forced = evaluate_split(model, split, "test", EVAL)["ndcg@10"]
    assert forced < 1.05 * pop + 0.01, (forced, pop)


def test_oracle_needs_synthetic_data():
    with pytest.raises(ValueError, match="model=oracle needs data=synthetic"):
        PlantedOracle({"_target_": "jmf.data.ciao.load_ciao"})
