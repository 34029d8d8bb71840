"""benchmarks/jmf_peer.py: the PyTorch peer takes the same step as jmf's JMF step (same losses, same parameters
after an optimiser step) from the same parameters, batch and random draws."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
pytest.importorskip("torch")

import jmf_peer  # noqa: E402


# the CNN with a full DL-side softmax (as at 10^5 users), the Transformer with sampled DL-side negatives (10^6)
@pytest.mark.parametrize("model,items", [("jmf-cnn", 2_000), ("jmf-transformer", 30_000)])
def test_peer_matches_jmf_step(model, items):
    out = jmf_peer.parity(model, users=200, items=items)
    assert (out["dl_items"] > jmf_peer.FULL_SOFTMAX_MAX) == (items > 10_000)
    assert out["loss0_torch"] == pytest.approx(out["loss0_jmf"], rel=1e-5)
    assert out["loss1_torch"] == pytest.approx(out["loss1_jmf"], rel=1e-5)
    assert out["loss1_jmf"] < out["loss0_jmf"] - 0.01          # the step moved the loss, so step 1 tests the update
    assert out["parts_rel"] < 1e-4
    # Adam's first step is ±lr per element: 1e-4 is a tenth of one; the symmetric directions are bounded by 2 lr
    assert out["param_abs"] < 1e-4, out["param_where"]
    assert out["update_abs"] > 1e-3
    assert out["invariant_abs"] <= 2e-3 + 1e-6
