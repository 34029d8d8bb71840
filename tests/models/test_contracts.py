"""Contract tests over every encoder and head config (timm-style: new plugins are tested automatically)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hydra.utils import instantiate
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"
# the LM encoder reads the history as text (pretrained weights): its contract is tests/models/test_lm.py
ENCODERS = sorted(p.stem for p in (CONF / "encoder").glob("*.yaml") if p.stem != "lm")
HEADS = sorted(p.stem for p in (CONF / "head").glob("*.yaml"))


def _seq(B=6, L=8, n_items=30, n_cats=4, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, L + 1, B)
    lengths[0] = 0  # an empty history must work
    mask = np.arange(L)[None, :] < lengths[:, None]
    items = np.where(mask, rng.integers(1, n_items + 1, (B, L)), 0)
    cats = np.where(mask, rng.integers(1, n_cats + 1, (B, L)), 0)
    values = np.where(mask, rng.normal(size=(B, L)), 0.0).astype(np.float32)
    return jnp.asarray(items), jnp.asarray(cats), jnp.asarray(mask), jnp.asarray(values)


def _shared_inputs(enc) -> dict:
    """Whole-graph inputs of an encoder with ``shared_keys`` (the graph encoder): a random O2 graph."""
    if not getattr(enc, "shared_keys", ()):
        return {}
    import scipy.sparse as sp

    o2 = sp.random(12, 30, density=0.3, random_state=0, format="csr")
    return type(enc).graph_inputs(o2, np.random.default_rng(0).integers(1, 5, 30))


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_contract(name):
    build = instantiate(OmegaConf.load(CONF / "encoder" / f"{name}.yaml"))
    enc = build(n_items=30, n_categories=4, max_len=8, rngs=nnx.Rngs(0))
    items, cats, mask, values = _seq()
    assert set(enc.input_keys) <= {"values"}
    shared = _shared_inputs(enc)
    kw = {"values": values} if "values" in enc.input_keys else {}
    h = enc(items, cats, mask, **kw, **shared)
    assert h.shape == (6, enc.out_dim) and bool(jnp.isfinite(h).all())
    # padding positions do not matter
    pad_kw = {"values": jnp.where(mask, values, 9.0)} if kw else {}
    h2 = enc(jnp.where(mask, items, 7), jnp.where(mask, cats, 2), mask, **pad_kw, **shared)
    np.testing.assert_allclose(h, h2, atol=1e-5)
    # the gradient reaches the item embeddings (and the rating direction, when the encoder reads values)
    graphdef, params, rest = nnx.split(enc, nnx.Param, ...)
    grads = jax.grad(lambda p: (nnx.merge(graphdef, p, rest)(items, cats, mask, **kw, **shared) ** 2).sum())(params)
    table = grads["embed"]["items"] if "embed" in grads else grads["items"]
    assert float(jnp.abs(table["embedding"][...]).sum()) > 0
    if kw:
        assert float(jnp.abs(grads["embed"]["rating"][...]).sum()) > 0
        # once w_r is non-zero, the same items rated differently give a different h_u
        enc.embed.rating[...] = jnp.linspace(-1.0, 1.0, enc.embed.rating.shape[0])  # not constant: LayerNorm removes that
        assert float(jnp.abs(enc(items, cats, mask, values=values) - enc(items, cats, mask, values=-values))[1:].max()) > 1e-4


@pytest.mark.parametrize("name", HEADS)
def test_head_contract_and_recovers_a_planted_linear_map(name):
    build = instantiate(OmegaConf.load(CONF / "head" / f"{name}.yaml"))
    head = build(d_in=12, d_out=5, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    h = jnp.asarray(rng.normal(size=(512, 12)), jnp.float32)
    W = jnp.asarray(rng.normal(size=(12, 5)) / np.sqrt(12), jnp.float32)
    target = h @ W + 0.3
    out = head(h)
    assert out.shape == (512, 5) and bool(jnp.isfinite(out).all())
    graphdef, params, rest = nnx.split(head, nnx.Param, ...)
    tx = optax.adam(1e-2)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt):
        loss, g = jax.value_and_grad(lambda p: ((nnx.merge(graphdef, p, rest)(h) - target) ** 2).mean())(params)
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt, loss

    start = float(((out - target) ** 2).mean())
    for _ in range(600):
        params, opt, loss = step(params, opt)
    assert float(loss) < 0.02 * start, (name, start, float(loss))
