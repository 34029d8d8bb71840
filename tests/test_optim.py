"""jmf.optim: the torch-style Adam whose per-parameter state starts at the parameter's first gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jmf.optim import adam_from_first_gradient


def _grads(step: int, late: int) -> dict[str, np.ndarray]:
    """Deterministic gradients; ``late`` gets none (zeros) before step 3."""
    rng = np.random.default_rng(step)
    g = {"early": rng.standard_normal((3, 2)).astype(np.float32),
         "late": rng.standard_normal(4).astype(np.float32)}
    if step < late:
        g["late"] = np.zeros(4, np.float32)
    return g


@pytest.mark.parametrize("weight_decay", [0.0, 5e-4])
def test_matches_torch_adam_for_a_parameter_that_joins_late(weight_decay):
    torch = pytest.importorskip("torch")
    init = {"early": np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2), "late": np.arange(4, dtype=np.float32)}
    ref = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in init.items()}
    opt = torch.optim.Adam(list(ref.values()), lr=1e-2, weight_decay=weight_decay)
    tx = adam_from_first_gradient(1e-2, weight_decay)
    params = {k: jnp.asarray(v) for k, v in init.items()}
    state = tx.init(params)
    update = jax.jit(tx.update)
    for step in range(8):
        g = _grads(step, late=3)
        opt.zero_grad(set_to_none=True)
        for k, p in ref.items():
            if g[k].any():                      # a parameter outside the loss has no .grad in torch
                p.grad = torch.tensor(g[k])
        opt.step()
        updates, state = update({k: jnp.asarray(v) for k, v in g.items()}, state, params)
        params = optax.apply_updates(params, updates)
    for k in init:
        np.testing.assert_allclose(np.asarray(params[k]), ref[k].detach().numpy(), rtol=1e-5, atol=1e-6)
    assert int(state.count["late"]) == 5 and int(state.count["early"]) == 8


def test_equals_optax_adam_when_every_parameter_always_has_a_gradient():
    params = {"a": jnp.arange(6.0).reshape(2, 3), "layer": (jnp.ones(4), jnp.zeros(2) + 0.5)}   # (W, b) pairs
    tx, ref = adam_from_first_gradient(1e-2), optax.adam(1e-2)
    s, r, p, q = tx.init(params), ref.init(params), params, params
    for step in range(5):
        g = jax.tree.map(lambda x: jnp.sin(x + step), p)
        u, s = tx.update(g, s, p)
        v, r = ref.update(jax.tree.map(lambda x: jnp.sin(x + step), q), r, q)
        p, q = optax.apply_updates(p, u), optax.apply_updates(q, v)
    for x, y in zip(jax.tree.leaves(p), jax.tree.leaves(q), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6)


def test_late_parameters_take_a_full_first_step():
    """optax.adam's global count shrinks nothing at a late first gradient (bias corrections ~1, moments
    at (1 - b1) g and (1 - b2) g²): ~2.9 lr after 2000 steps; torch's fresh state takes exactly lr (sign of g)."""
    params = {"w": jnp.zeros(3)}
    tx, ref = adam_from_first_gradient(1e-3), optax.adam(1e-3)
    s, r = tx.init(params), ref.init(params)
    zero = {"w": jnp.zeros(3)}
    for _ in range(2000):
        _, s = tx.update(zero, s, params)
        _, r = ref.update(zero, r, params)
    g = {"w": jnp.array([0.5, -2.0, 1e-3])}
    ours, theirs = tx.update(g, s, params)[0]["w"], ref.update(g, r, params)[0]["w"]
    np.testing.assert_allclose(np.asarray(ours), -1e-3 * np.sign(g["w"]), rtol=1e-3)
    assert float(jnp.abs(theirs).min()) > 2.5e-3         # 0.1 / sqrt(0.001 / (1 - 0.999^2001)) = 2.94 lr


def test_disencdr_adam_state_knob():
    from jmf.errors import ConfigError
    from jmf.models.graph.disencdr import DisenCDR

    state = DisenCDR(adam_state="first_gradient").optimizer().init({"w": jnp.zeros(2)})
    assert int(state.count["w"]) == 0                      # per-parameter counts: torch's state
    assert isinstance(DisenCDR().optimizer().init({"w": jnp.zeros(2)})[0], optax.ScaleByAdamState)  # optax's
    with pytest.raises(ConfigError, match="model.adam_state"):
        DisenCDR(adam_state="torch")
