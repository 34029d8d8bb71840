"""PTUPCDR (Zhu et al., WSDM 2022): a personalised bridge written by a meta network.

1. **Embedding**: biased MF on each side, as EMCDR (source ``P_s``, ``b_s``, ``Q_s``; target
   ``P_t``, ``b_t``, ``Q_t``, ``b_i``; :mod:`jmf.models.cdr.tables`), then frozen.
2. **Characteristic encoder**: user u's DL-side items (their last ``max_len``), embedded by ``Q_s``,
   pooled by attention: ``c_u = Σ_j a_j Q_s,j`` with ``a = softmax_j(w₂ᵀ ReLU(W₁ Q_s,j + b₁))``.
3. **Meta network**: ``W_u = reshape(W₄ ReLU(W₃ c_u + b₃) + b₄) ∈ R^{d×d}``, the personalised
   bridge; ``P̂_u = P_s,u W_u``.  On ratings a user bias is transferred too:
   ``b̂_u = wᵀ[c_u, b_s,u] + b``.
4. **Task-oriented training**: only the meta network learns, on the overlapping users' CF-side training
   rows, with the *target* loss of the mapped factor (``μ + b̂_u + b_i + P̂_u·Q_i`` against the
   rating, or BPR / sampled softmax against uniform negatives), not a factor regression.
   Batches are user-centric (``B`` users x ``m`` of their CF-side items), so the meta network runs once
   per user and the loss is a mean over a user's items, then over users (design.md#the-cf-side).  ``W₄``
   starts at zero and ``b₄`` at the least-squares map ``P_s → P_t`` of the overlapping users
   (``bridge_init: lstsq``) or the identity, so training starts from a shared linear bridge.
5. **Inference**: warm users keep ``P_t,u``; cold-start users get ``P̂_u``.

Both stages run on the training engine, in the run directory's ``tables/`` and ``meta/``.
"""

from __future__ import annotations

import functools
import logging
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jmf import losses
from jmf.data.batches import dl_sequences
from jmf.data.split import SplitData
from jmf.models.base import RunContext, stage_engine, train_passes
from jmf.models.cdr.common import TwoStageTransfer, check_positive
from jmf.train import parallel
from jmf.errors import ConfigError

log = logging.getLogger(__name__)


class MetaBridge(nnx.Module):
    """Characteristic encoder + meta network of PTUPCDR (see module docstring).

    Args:
      dim: factor size ``d`` (both sides); meta_dim: hidden size of the meta network.
    """

    def __init__(self, dim: int, meta_dim: int = 50, *, rngs: nnx.Rngs):
        self.attention_hidden = nnx.Linear(dim, dim, rngs=rngs)
        self.attention_out = nnx.Linear(dim, 1, use_bias=False, rngs=rngs)
        self.meta_hidden = nnx.Linear(dim, meta_dim, rngs=rngs)
        self.meta_out = nnx.Linear(meta_dim, dim * dim, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)
        self.bias_out = nnx.Linear(dim + 1, 1, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)
        self.dim = dim

    def characteristic(self, history: jax.Array, mask: jax.Array) -> jax.Array:
        """``[B, L, d]`` embedded DL-side items, ``[B, L]`` mask -> ``[B, d]`` ``c_u`` (0 for an empty history)."""
        logits = self.attention_out(nnx.relu(self.attention_hidden(history)))[..., 0]       # [B, L]
        weights = jax.nn.softmax(jnp.where(mask, logits, -1e9), axis=-1) * mask
        return jnp.einsum("bl,bld->bd", weights, history)

    def bridge(self, c: jax.Array) -> jax.Array:
        """``[B, d]`` ``c_u`` -> ``[B, d, d]`` ``W_u``."""
        return self.meta_out(nnx.relu(self.meta_hidden(c))).reshape(-1, self.dim, self.dim)

    def __call__(self, source_factor: jax.Array, source_bias: jax.Array, history: jax.Array,
                 mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``P_s,u [B, d]``, ``b_s,u [B]``, DL-side items
        ``[B, L, d]`` + mask ``[B, L]`` -> ``P̂_u [B, d]``, ``b̂_u [B]``."""
        c = self.characteristic(history, mask)
        p_hat = jnp.einsum("bd,bde->be", source_factor, self.bridge(c))
        b_hat = self.bias_out(jnp.concatenate([c, source_bias[:, None]], -1))[:, 0]
        return p_hat, b_hat


def _mapped(net: MetaBridge, frozen: dict, users: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``P̂_u``, ``b̂_u`` of ``users [B]`` from the frozen source tables and DL-side histories."""
    hist = frozen["history"][users]                                      # [B, L] DL-side item + 1, 0 = pad
    embedded = frozen["source_items"][jnp.maximum(hist - 1, 0)]          # [B, L, d]
    return net(frozen["source_users"][users], frozen["source_bias"][users], embedded, hist > 0)


@functools.partial(jax.jit, static_argnums=0)
def _map_users(graphdef, params, rest, frozen, users):
    return _mapped(nnx.merge(graphdef, params, rest), frozen, users)


@functools.partial(jax.jit, static_argnums=0)
def _map_new(graphdef, params, rest, source_items, p_s, b_s, history):
    """``P̂_u, b̂_u`` of users given as arrays (not rows of the training tables): new users."""
    embedded = source_items[jnp.maximum(history - 1, 0)]
    return nnx.merge(graphdef, params, rest)(p_s, b_s, embedded, history > 0)


def make_meta_epoch(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, kind: str, mean: float,
                    n_items: int, n_negatives: int):
    """``epoch(params, opt_state, rest, frozen, batches [S, ...], key) -> (params, opt_state, mean loss)``.

    ``batches``: ``users [S, B]``, ``items, values [S, B, m]``; ``frozen``: ``source_users [U, d]``,
    ``source_bias [U]``, ``source_items [I_DL, d]``, ``history [U, L]``, ``items [I_CF, d]``, ``item_bias [I_CF]``.
    """

    def step_loss(params, rest, frozen, batch, key):
        net = nnx.merge(graphdef, params, rest)
        users, items = batch["users"], batch["items"]
        B, m = items.shape
        p_hat, b_hat = _mapped(net, frozen, users)                       # [B, d], [B]
        pos = jnp.einsum("bd,bmd->bm", p_hat, frozen["items"][items]) + frozen["item_bias"][items]   # [B, m]
        ones = jnp.ones(B * m)
        if kind == "mse":
            return losses.mse((mean + b_hat[:, None] + pos).reshape(-1), batch["values"].reshape(-1), ones)
        neg = jax.random.randint(key, (n_negatives,), 0, n_items)       # shared by the batch
        neg_scores = p_hat @ frozen["items"][neg].T + frozen["item_bias"][neg][None, :]   # [B, N]
        neg_scores = jnp.broadcast_to(neg_scores[:, None, :], (B, m, n_negatives)).reshape(B * m, n_negatives)
        if kind == "softmax":
            neg_scores = jnp.where(neg[None, :] == items.reshape(-1, 1), -1e9, neg_scores)
            return losses.sampled_softmax(pos.reshape(-1), neg_scores, ones)
        return losses.bpr(pos.reshape(-1), neg_scores, ones)

    def epoch(params, opt_state, rest, frozen, batches, key):
        keys = jax.random.split(key, batches["users"].shape[0])

        def step(carry, xs):
            params, opt_state = carry
            batch, k = xs
            loss, grads = jax.value_and_grad(step_loss)(params, rest, frozen, batch, k)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), loss = jax.lax.scan(step, (params, opt_state), (batches, keys))
        return params, opt_state, loss.mean()

    return epoch


class PTUPCDR(TwoStageTransfer):
    """Personalised transfer of user preferences.

    Args:
      dim: factor size ``d`` of both sides' MF.
      loss: MF and task loss: ``auto`` (mse on ratings, bpr on implicit data) | ``mse`` | ``bpr`` | ``softmax``.
      epochs, batch_size, optimizer, lr, reg, init_scale, negatives: per-side MF, as in :class:`EMCDR`.
      meta_dim: hidden size of the meta network; max_len: DL-side items read per user (the latest).
      meta_epochs: task-oriented epochs (an epoch = as many pairs as the overlapping users' CF-side rows).
      meta_batch_size: users per step; items_per_user: CF-side items drawn per user and step (``m``).
      meta_lr, meta_weight_decay: AdamW of the meta network.
      meta_negatives: uniform negatives shared by a step (ranking losses).
      bridge_init: ``lstsq`` (least-squares ``P_s → P_t`` map of the overlapping users) or ``identity``.
      patience: validations without improvement before stopping (0 = run all meta_epochs).
      eval_every: meta epochs between validations (the best validated epoch is kept).
      monitor: validation metric (``auto``: rmse for mse, ndcg@10 otherwise).
      eval_batch_size: users per validation batch.
    """

    name = "ptupcdr"

    def __init__(self, dim: int = 32, loss: str = "auto", epochs: int = 20, batch_size: int = 256,
                 optimizer: str = "adam", lr: float = 0.01, reg: float = 0.001, init_scale: float = 0.1,
                 negatives: int = 4, meta_dim: int = 50, max_len: int = 50, meta_epochs: int = 20,
                 meta_batch_size: int = 128, items_per_user: int = 8, meta_lr: float = 3e-3,
                 meta_weight_decay: float = 0.0, meta_negatives: int = 64, bridge_init: str = "lstsq",
                 patience: int = 3, eval_every: int = 1, monitor: str = "auto", eval_batch_size: int = 512):
        self._init_common(dim, loss, epochs, batch_size, optimizer, lr, reg, init_scale, negatives, patience,
                          eval_every, monitor, eval_batch_size)
        check_positive(meta_dim=meta_dim, max_len=max_len, meta_batch_size=meta_batch_size,
                       items_per_user=items_per_user, meta_negatives=meta_negatives)
        if bridge_init not in ("lstsq", "identity"):
            raise ConfigError(f"model.bridge_init: {bridge_init!r} is not lstsq|identity")
        self.meta_dim, self.max_len, self.meta_epochs = meta_dim, max_len, meta_epochs
        self.meta_batch_size, self.items_per_user = meta_batch_size, items_per_user
        self.meta_lr, self.meta_weight_decay, self.meta_negatives = meta_lr, meta_weight_decay, meta_negatives
        self.bridge_init = bridge_init

    def fit(self, split: SplitData, ctx: RunContext | None = None) -> dict[str, float]:
        """Both stages on the engine (``ctx`` from ``jmf.run``: checkpoints and resume per stage)."""
        start = time.perf_counter()
        seed = ctx.seed if ctx is not None else 0
        overlap, cold = self._fit_sides(split, seed, ctx)
        src, tgt = self.source, self.target
        engine = self.meta_engine = stage_engine(ctx, "ptupcdr-meta", seed, "meta")
        parallel.check_batch_size(self.meta_batch_size, engine.mesh, "model.meta_batch_size")
        self.frozen = parallel.put_replicated(
            {"source_users": src["P"], "source_bias": src["user_bias"], "source_items": src["Q"],
             "history": jnp.asarray(dl_sequences(split, self.max_len).items),
             "items": tgt["Q"], "item_bias": tgt["item_bias"]}, engine.mesh)

        net = MetaBridge(self.dim, self.meta_dim, rngs=nnx.Rngs(seed))
        net.meta_out.bias[...] = jnp.asarray(self._initial_bridge(overlap).reshape(-1))
        net.bias_out.bias[...] = jnp.full((1,), np.asarray(tgt["user_bias"])[overlap].mean(), jnp.float32)
        self.graphdef, self.params, self.rest = nnx.split(net, nnx.Param, ...)
        tx = optax.adamw(self.meta_lr, weight_decay=self.meta_weight_decay)
        state = {"params": self.params, "opt_state": tx.init(self.params)}
        sharding = engine.state_shardings(state)
        state = engine.put_state(state, sharding)
        epoch_fn = make_meta_epoch(self.graphdef, tx, self.kind, tgt["mean"], split.train.shape[1],
                                   self.meta_negatives)
        rest = self.rest

        def step(state, batch):
            params, opt_state, loss = epoch_fn(state["params"], state["opt_state"], rest, batch["frozen"],
                                               batch["rows"], batch["key"])
            return {"params": params, "opt_state": opt_state}, {"loss": loss}

        csr = split.train.tocsr()
        n_pairs = int(np.diff(csr.indptr)[overlap].sum())
        n_steps = max(1, -(-n_pairs // (self.meta_batch_size * self.items_per_user)))
        log.info("ptupcdr: meta network on %d overlapping users (%d steps/epoch); %d cold users",
                 len(overlap), n_steps, len(cold))
        base_key = jax.random.key(engine.sampling_seed)

        def batch_of(epoch: int, rng: np.random.Generator) -> dict:
            return {"rows": engine.put_batch(self._batches(csr, overlap, n_steps, rng), axis=1),
                    "frozen": self.frozen,
                    "key": parallel.put_replicated(jax.random.fold_in(base_key, epoch), engine.mesh)}

        def check(state) -> float:
            self.params = state["params"]
            self._publish_mapped(cold)
            return self.validator(self, self.monitor_name)

        result = train_passes(engine, "meta", state, sharding, step, batch_of, passes=self.meta_epochs,
                              eval_every=self.eval_every, validate=check if self.validator.has_data else None,
                              monitor=self.monitor_name, patience=self.patience,
                              examples_per_pass=n_steps * self.meta_batch_size * self.items_per_user)
        self.params = result.state["params"]
        self._publish_mapped(cold)
        return {"train/meta_loss": result.loss, "train/fit_seconds": time.perf_counter() - start, **result.stats()}

    def _initial_bridge(self, overlap: np.ndarray) -> np.ndarray:
        """``[d, d]`` starting bridge: the least-squares map ``P_s A ≈ P_t`` on ``overlap``, or ``I``."""
        if self.bridge_init == "identity":
            return np.eye(self.dim, dtype=np.float32)
        source = np.asarray(self.source["P"])[overlap]
        target = np.asarray(self.target["P"])[overlap]
        return np.linalg.lstsq(source, target, rcond=None)[0].astype(np.float32)

    def _batches(self, csr, overlap: np.ndarray, n_steps: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """``n_steps`` user-centric batches: ``users [S, B]``, ``items, values [S, B, m]`` (uniform draws)."""
        B, m = self.meta_batch_size, self.items_per_user
        reps = -(-n_steps * B // len(overlap))
        users = np.concatenate([rng.permutation(overlap) for _ in range(reps)])[:n_steps * B]
        degree = np.diff(csr.indptr)[users]
        picks = csr.indptr[users][:, None] + np.floor(rng.random((len(users), m)) * degree[:, None]).astype(np.int64)
        return {"users": users.reshape(n_steps, B).astype(np.int32),
                "items": csr.indices[picks].reshape(n_steps, B, m).astype(np.int32),
                "values": csr.data[picks].reshape(n_steps, B, m).astype(np.float32)}

    def extra_state(self) -> dict:
        return {"meta": {"params": self.params, "rest": self.rest}, "frozen": self.frozen}

    def restored(self, split: SplitData, saved: dict) -> None:
        from jmf.pytrees import fill, nested

        self.graphdef, params, rest = nnx.split(MetaBridge(self.dim, self.meta_dim, rngs=nnx.Rngs(0)), nnx.Param, ...)
        self.params = fill(params, saved["arrays"], prefix="['meta']['params']")
        self.rest = fill(rest, saved["arrays"], prefix="['meta']['rest']")
        frozen = {k: v for k, v in saved["arrays"].items() if k.startswith("['frozen']")}
        self.frozen = jax.tree.map(jnp.asarray, nested(frozen, {})["frozen"])

    def score_new(self, hist):
        """Through PTUPCDR's own bridge: source factors folded in from the DL-side rows, the characteristic
        vector from the user's last ``max_len`` DL-side items, ``P̂_u = P_s,u W_u``."""
        from jmf.models.foldin import rows_present

        p_s, b_s = self.source_fold_in(hist)
        history = np.zeros((len(hist.users), self.max_len), np.int32)
        for b, order in enumerate(hist.dl_order):
            order = order[-self.max_len:]
            history[b, :len(order)] = order + 1
        p_hat, _ = _map_new(self.graphdef, self.params, self.rest, self.frozen["source_items"], jnp.asarray(p_s),
                            jnp.asarray(b_s), jnp.asarray(history))
        t = {k: np.asarray(v) for k, v in self.tables.items()}
        return np.asarray(p_hat) @ t["items"].T + t["item_bias"][None, :], rows_present(hist.dl)

    def _publish_mapped(self, cold: np.ndarray) -> None:
        self._publish(cold, self.mapped)

    def mapped(self, users: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``[B]`` users -> the transferred ``P̂_u [B, d]`` and ``b̂_u [B]`` (whatever their CF-side history)."""
        return _map_users(self.graphdef, self.params, self.rest, self.frozen, jnp.asarray(users))
