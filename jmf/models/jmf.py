"""The joint model (DESIGN 2): CF factors on O1 + a DL encoder on O2 + a mapping head.

Parameters live in two places, on purpose:

* the CF tables ``P [U, d]``, ``Q [I_T, d]``, ``b_u``, ``b_i`` are plain arrays in the train
  state, updated row-sparsely (a batch touches a few hundred rows of tables that can hold
  10^6 users);
* everything dense (encoder ``f_θ``, head, interest layer ``W3``, the O2 prediction heads
  of ``L_DL``) is the NNX module :class:`JMFNet`, updated by a dense optax optimiser.

``JMFNet.map(x_u)`` gives ``h_u``, ``P̂_u``, ``b̂_u`` and ``I_u``; :func:`joint_losses` turns a
batch into the named loss terms of ``L_JMF = L_CF + α L_DL + β L_map + γ L_transfer + δ L_interest
(+ ρ L_rank on ratings)``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jmf import losses


class Mapped(NamedTuple):
    h: jax.Array         # [B, d_h]  encoder output
    p_hat: jax.Array     # [B, d]    P̂_u
    bias_hat: jax.Array  # [B]       b̂_u (the user bias predicted from O2)
    interest: jax.Array  # [B, K]    I_u (logits over the CF-side categories)


class JMFNet(nnx.Module):
    """Encoder + head + interest layer + O2 prediction heads.

    Args:
      encoder: an encoder module (``out_dim`` attribute; ``(items, categories, mask) -> h``).
      head_fn: ``head_fn(d_in, d_out, rngs=...)`` builds the mapping head.
      dim: CF factor size ``d``.
      n_cf_categories: ``K``; n_cf_items: ``I_T`` (for the literal head).
      n_dl_items, n_dl_categories: O2 sizes (for the ``L_DL`` prediction heads).
    """

    def __init__(self, encoder: nnx.Module, head_fn, dim: int, n_cf_categories: int, n_cf_items: int,
                 n_dl_items: int, n_dl_categories: int, *, rngs: nnx.Rngs):
        d_h = encoder.out_dim
        self.encoder = encoder
        self.head = head_fn(d_h, dim, rngs=rngs)
        self.bias = nnx.Linear(d_h, 1, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)
        self.interest = nnx.Linear(dim, n_cf_categories, rngs=rngs)        # I_u = W3 P̂_u + b3
        self.dl_items = nnx.Embed(n_dl_items + 1, d_h, embedding_init=nnx.initializers.normal(0.05), rngs=rngs)
        self.dl_categories = nnx.Linear(d_h, n_dl_categories + 1, rngs=rngs)
        # b̂_u's O2 rating offset: a · (the user's damped mean O2 residual), a started by the model
        self.offset_scale = nnx.Param(jnp.zeros(()))
        self.literal = bool(getattr(self.head, "literal", False))
        if self.literal:                                                    # C_u = σ(W4 I_u + b4)
            self.literal_out = nnx.Linear(n_cf_categories, n_cf_items, rngs=rngs)

    def map(self, items: jax.Array, categories: jax.Array, mask: jax.Array, offset: jax.Array | None = None,
            **inputs: jax.Array) -> Mapped:
        """``offset [B]``: the user's O2 rating offset (:func:`jmf.models.joint.o2_user_offsets`; 0 on
        implicit data), added to ``b̂_u`` with the learned scale ``a``."""
        h = self.encoder(items, categories, mask, **inputs)
        p_hat = self.head(h)
        bias_hat = self.bias(h)[:, 0]
        if offset is not None:
            bias_hat = bias_hat + self.offset_scale[...] * offset
        return Mapped(h, p_hat, bias_hat, self.interest(p_hat))

    def literal_logits(self, interest: jax.Array) -> jax.Array:
        """``[B, K]`` -> ``[B, I_T]`` logits of ``C_u``."""
        return self.literal_out(jax.nn.softmax(interest, axis=-1))


class LossWeights(NamedTuple):
    """Weights of the joint objective (a pytree of scalars: changing them never recompiles)."""

    cf: float = 1.0
    dl: float = 0.1        # α
    map: float = 1.0       # β
    transfer: float = 1.0  # γ
    interest: float = 0.1  # δ
    rank: float = 0.0      # ρ: on ratings, which items a user rates (sampled softmax; 0 on implicit data)


def encoder_inputs(net: JMFNet, seq: dict, users: jax.Array) -> dict[str, jax.Array]:
    """The extra per-user arrays an encoder asks for (its ``input_keys``, e.g. the LM encoder's
    ``tokens``), gathered for ``users``; ``{}`` for the sequence encoders."""
    return {k: seq[k][users] for k in getattr(net.encoder, "input_keys", ())}


def cf_scores(p: jax.Array, q: jax.Array, b_i: jax.Array, b_u: jax.Array) -> jax.Array:
    """Paired ``[B, d] · [B, d] (+ biases) -> [B]``."""
    return (p * q).sum(-1) + b_i + b_u


def cf_scores_shared(p: jax.Array, q: jax.Array, b_i: jax.Array, b_u: jax.Array) -> jax.Array:
    """Every user against shared items: ``[B, d] · [N, d] (+ biases) -> [B, N]``."""
    return p @ q.T + b_i[None, :] + b_u[:, None]


def cf_loss(kind: str, pos: jax.Array, neg: jax.Array, values: jax.Array, weight: jax.Array, mean: float):
    """The CF loss on scores: MSE against ratings, or BPR / sampled softmax against negatives."""
    if kind == "mse":
        return losses.mse(mean + pos, values, weight)
    if kind == "bpr":
        return losses.bpr(pos, neg, weight)
    return losses.sampled_softmax(pos, neg, weight)


def joint_losses(net: JMFNet, rows: dict, batch: dict, seq: dict, kind: str, mean: float, reg: float,
                 key: jax.Array) -> dict[str, jax.Array]:
    """The named terms of ``L_JMF`` for one user-centric batch (all scalars).

    A batch is ``B`` users, each with ``m`` of their CF-side training items drawn uniformly, so
    every loss is a mean over a user's items, then over users (DESIGN 2.1), and the encoder
    runs once per user, not once per interaction.

    Args:
      rows: gathered CF-table rows: ``P [B, d]``, ``user_bias [B, 1]``, ``Q [B*m, d]``,
        ``item_bias [B*m, 1]``, ``rank_bias [B*m, 1]``, and of the ``N`` negatives shared by the
        batch ``Qneg [N, d]``, ``item_bias_neg [N, 1]``, ``rank_bias_neg [N, 1]``; optionally
        ``rank_Q [B*m, d]`` and ``rank_Qneg [N, d]`` (``L_rank``'s own item factors).
      batch: ``users [B]``, ``items, values, weight [B, m]``, ``neg_items [N]``, ``dl_users [B2]``.
      seq: device-resident per-user arrays: ``items/categories/mask [U, L]``, ``offset [U]``,
        ``interest [U, K]``.
      kind: CF loss (``mse``/``bpr``/``softmax``); mean: global rating mean ``μ`` (0 for ranking).
    """
    users = batch["users"]
    B, m = batch["items"].shape
    items, values, weight = batch["items"].reshape(-1), batch["values"].reshape(-1), batch["weight"].reshape(-1)
    q, b_i = rows["Q"], rows["item_bias"][:, 0]                               # [B*m, d], [B*m]
    q_neg, b_neg = rows["Qneg"], rows["item_bias_neg"][:, 0]                  # [N, d], [N]
    not_pos = batch["neg_items"][None, :] != items[:, None]                    # [B*m, N]

    def expand(x):  # per-user [B, ...] -> per-pair [B*m, ...]
        return jnp.repeat(x, m, axis=0)

    def negatives(scores):
        return jnp.where(not_pos, scores, -1e9) if kind == "softmax" else scores

    def cf_terms(p, b_u, w):
        pos = cf_scores(expand(p), q, b_i, expand(b_u))
        neg = expand(cf_scores_shared(p, q_neg, b_neg, b_u))
        return cf_loss(kind, pos, negatives(neg), values, w, mean)

    # L_CF: the CF model on O1 with the user's own factors
    p, b_u = rows["P"], rows["user_bias"][:, 0]
    out = {"cf": cf_terms(p, b_u, weight)}
    out["reg"] = reg * (losses.weighted_mean((p ** 2).sum(-1) + b_u ** 2, weight.reshape(B, m).max(1))
                        + losses.weighted_mean((q ** 2).sum(-1) + b_i ** 2, weight))

    # P̂_u from the user's O2 sequence; only users with O2 history carry weight
    mapped = net.map(seq["items"][users], seq["categories"][users], seq["mask"][users], seq["offset"][users],
                     **encoder_inputs(net, seq, users))
    has_dl = seq["mask"][users].any(1).astype(jnp.float32) * weight.reshape(B, m).max(1)   # [B]
    out["map"] = losses.weighted_mean(((mapped.p_hat - jax.lax.stop_gradient(p)) ** 2).sum(-1), has_dl)
    pair_dl = expand(has_dl) * weight
    if net.literal:
        logits = expand(net.literal_logits(mapped.interest))                  # [B*m, I_T]
        logits_pos = jnp.take_along_axis(logits, items[:, None], 1)[:, 0]
        logits_neg = jnp.where(not_pos, logits[:, batch["neg_items"]], -1e9)
        out["transfer"] = losses.weighted_mean(
            -jax.nn.log_sigmoid(logits_pos) - jax.nn.log_sigmoid(-logits_neg).mean(1), pair_dl)
    else:
        out["transfer"] = cf_terms(mapped.p_hat, mapped.bias_hat, pair_dl)
    # L_rank (ratings only): an MSE fit sees only rated items, so it cannot rank the unrated ones.
    # The same user factors also learn *which* items a user rates, s_ui = p_u·Q_i + r_i with a separate
    # item bias r (the popularity logit), for P_u and for P̂_u; score() ranks by it when ρ > 0.  With a
    # ``rank_Q`` table (model.rank_item_factors=own) the items get their own factors here, so the
    # rating fit's Q and the ranking's need not agree.
    if kind == "mse":
        r_i, r_neg = rows["rank_bias"][:, 0], rows["rank_bias_neg"][:, 0]
        q_r, q_r_neg = (rows["rank_Q"], rows["rank_Qneg"]) if "rank_Q" in rows else (q, q_neg)
        no_bias = jnp.zeros((B,))

        def rank_term(p_, w):
            pos = cf_scores(expand(p_), q_r, r_i, 0.0)
            neg = expand(cf_scores_shared(p_, q_r_neg, r_neg, no_bias))
            return losses.sampled_softmax(pos, jnp.where(not_pos, neg, -1e9), w)
        out["rank"] = rank_term(p, weight) + rank_term(mapped.p_hat, pair_dl)
    else:
        out["rank"] = jnp.zeros(())
    target = seq["interest"][users]
    out["interest"] = losses.weighted_mean(-(target * jax.nn.log_softmax(mapped.interest)).sum(-1), has_dl)

    # L_DL: masked-item prediction on O2 (one random behaviour hidden) + its category
    out["dl"] = dl_loss(net, batch["dl_users"], seq, key)
    return out


def dl_loss(net: JMFNet, users: jax.Array, seq: dict, key: jax.Array, n_negatives: int = 1024,
            full_softmax_max: int = 8192) -> jax.Array:
    """Masked-item cross-entropy over O2: hide one valid behaviour, predict it and its category from
    ``h_u`` of the rest.  Items: a full softmax when O2 has at most ``full_softmax_max`` items, else a
    sampled softmax over ``n_negatives`` uniform negatives shared by the batch (a shared draw keeps the
    embedding gradient a dense ``[N, d]`` block instead of a ``[B*N, d]`` scatter)."""
    items, cats, mask = seq["items"][users], seq["categories"][users], seq["mask"][users]
    key_pos, key_neg = jax.random.split(key)
    lengths = mask.sum(1)
    # a random valid position per user (users with < 2 behaviours carry no weight)
    pos = jnp.floor(jax.random.uniform(key_pos, lengths.shape) * jnp.maximum(lengths, 1)).astype(jnp.int32)
    onehot = jax.nn.one_hot(pos, mask.shape[1], dtype=bool)
    target_item = jnp.take_along_axis(items, pos[:, None], 1)[:, 0]
    target_cat = jnp.take_along_axis(cats, pos[:, None], 1)[:, 0]
    h = net.encoder(items, cats, mask & ~onehot, **encoder_inputs(net, seq, users))
    w = (lengths >= 2).astype(jnp.float32)
    n_items = net.dl_items.num_embeddings - 1
    table = net.dl_items.embedding[...]
    if n_items <= full_softmax_max:
        item_term = losses.softmax_xent(h @ table[1:].T, jnp.maximum(target_item - 1, 0), w)
    else:
        neg = jax.random.randint(key_neg, (n_negatives,), 1, n_items + 1)
        pos_logit = (h * table[target_item]).sum(-1)
        neg_logit = jnp.where(neg[None, :] == target_item[:, None], -1e9, h @ table[neg].T)
        item_term = losses.sampled_softmax(pos_logit, neg_logit, w)
    cat_term = losses.softmax_xent(net.dl_categories(h), target_cat, w)
    return item_term + cat_term
