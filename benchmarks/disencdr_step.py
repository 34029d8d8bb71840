"""DisenCDR's training step on Amazon phone_electronic and its parts, timed (run it on an idle machine).

    python benchmarks/disencdr_step.py            # experiment=amazon_phone_electronic_authors; extra overrides follow

An epoch is ``n_steps`` steps (163 here); the authors' code took 3.9 min per epoch on the same 2 cores.
"""
import sys, time
import jax, jax.numpy as jnp, numpy as np
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from jmf.config import CONF_DIR, register_configs
from jmf.run import build_split, load_data
from jmf.models.protocols import RunContext
register_configs()
with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
    cfg = compose("train", overrides=["experiment=amazon_phone_electronic_authors", "trainer.progress=false"] + sys.argv[1:])
data = load_data(cfg.data, 0)
split = build_split(data, cfg.partition, cfg.split, 0)
model = instantiate(cfg.model)
plan = model.setup(split, RunContext(seed=0, devices=1))
state = plan.state
phase = plan.phases[0]
ep = phase.plan(0)
def t(name, f, n=5):
    out = f(); jax.block_until_ready(out)
    s = time.perf_counter()
    for _ in range(n):
        out = f()
    jax.block_until_ready(out)
    print(f"{name}: {(time.perf_counter()-s)/n*1e3:.1f} ms", flush=True)
    return out
b = ep.batch(0)
st = [state]
def step():
    st[0], m = phase.step(st[0], b)
    return m
t("step (warmup, cond off)", step)
b2 = dict(b); b2["step"] = jnp.int32(10 * model.n_steps)
def step2():
    st[0], m = phase.step(st[0], b2)
    return m
t("step (shared on)", step2)
p, d = st[0]["params"], model.data
seed = jnp.uint32(3)
t("specific t fwd", (lambda f=jax.jit(lambda p: model.specific(p, d, "t", seed)): f(p)))
t("specific s fwd", (lambda f=jax.jit(lambda p: model.specific(p, d, "s", seed)): f(p)))
t("shared fwd", (lambda f=jax.jit(lambda p: model.shared(p, d, seed)): f(p)))
t("prior s fwd", (lambda f=jax.jit(lambda p: model.share_prior(p, d, "s", seed)): f(p)))
g = jax.jit(jax.grad(lambda p: sum(jnp.sum(x) for x in model.specific(p, d, "s", seed))))
t("specific s grad", lambda: g(p))
print("n_steps", model.n_steps, "items", model.n_items, "users", model.n_users)
