"""A new engine-trained model: matrix factorisation trained by BPR, with validation and early stopping.

It implements the contract of :mod:`jmf.models.protocols` (``setup`` -> ``TrainPlan``, ``finish``,
``score``, ``predict``), so ``jmf-train model=bpr_mf`` gets checkpoints, exact resume, devices,
logs, sweeps and tables from the engine.
"""

import jax
import numpy as np
import optax

from jmf.evaluate.protocols import evaluate_split, validation_config
from jmf.models.protocols import EngineModel, EpochPlan, Phase, RunContext, TrainPlan
from jmf.train.engine import Engine


class BPRMF(EngineModel):
    name = "bpr_mf"

    def __init__(self, dim: int = 16, epochs: int = 5, lr: float = 0.05, batch_size: int = 256, patience: int = 2):
        self.dim, self.epochs, self.lr, self.batch_size, self.patience = dim, epochs, lr, batch_size, patience

    def setup(self, split, ctx: RunContext | None = None) -> TrainPlan:
        ctx = ctx or RunContext()
        self.eval_config = ctx.eval_config
        engine = Engine(ctx, name=self.name)
        n_users, n_items = split.train.shape
        key_u, key_i = jax.random.split(jax.random.key(ctx.seed))
        params = {"P": 0.1 * jax.random.normal(key_u, (n_users, self.dim)),
                  "Q": 0.1 * jax.random.normal(key_i, (n_items, self.dim))}
        tx = optax.adagrad(self.lr)
        state = {"params": params, "opt": tx.init(params)}
        sharding = engine.state_shardings(state)
        state = engine.put_state(state, sharding)
        coo = split.train.tocoo()
        B = self.batch_size
        n_steps = max(1, coo.nnz // B)

        def step(state, batch):
            def loss_fn(p):
                u, i, j = p["P"][batch["users"]], p["Q"][batch["items"]], p["Q"][batch["negatives"]]
                return -jax.nn.log_sigmoid((u * i).sum(-1) - (u * j).sum(-1)).mean()
            loss, grads = jax.value_and_grad(loss_fn)(state["params"])
            updates, opt = tx.update(grads, state["opt"])
            return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, {"loss": loss}

        def plan(epoch: int) -> EpochPlan:
            rng = engine.epoch_rng(0, epoch)
            order = rng.permutation(coo.nnz)[:n_steps * B].reshape(n_steps, B)
            negatives = rng.integers(0, n_items, (n_steps, B))
            return EpochPlan(n_steps, lambda s: engine.put_batch(
                {"users": coo.row[order[s]].astype(np.int32), "items": coo.col[order[s]].astype(np.int32),
                 "negatives": negatives[s].astype(np.int32)}), examples_per_step=B)

        def validate(state) -> float:
            self.params = state["params"]
            cfg = validation_config(self.eval_config, (10,), 512, ratings=False)
            return evaluate_split(self, split, "valid", cfg).get("ndcg@10", float("nan"))

        phase = Phase("train", self.epochs, plan, engine.jit_step(step, sharding), validate=validate,
                      patience=self.patience, metric="ndcg@10")
        return TrainPlan(engine, state, [phase])

    def finish(self, split, result) -> dict:
        self.params = (result.state if result.best_state is None else result.best_state)["params"]
        summary = result.phases["train"]
        return {"train/epochs": float(len(summary.losses)), "train/best_epoch": float(summary.best_epoch)}

    def score(self, users):
        return self.params["P"][users] @ self.params["Q"].T

    def predict(self, users, items):
        raise ValueError("model=bpr_mf ranks items; it has no rating scale")
