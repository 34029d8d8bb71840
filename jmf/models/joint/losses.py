"""The loss terms of the joint objective, one small pure function each (design.md#the-objective, design.md#conventions).

``L_JMF = L_CF + α L_DL + β L_map + γ L_transfer + δ L_interest (+ ρ L_rank on ratings) + reg``:

* :func:`cf_term` -- ``L_CF``: the CF model on the CF side with the user's own ``P_u`` (MSE on ratings,
  BPR / sampled softmax against negatives on implicit data); also ``L_transfer`` with ``P̂_u``;
* :func:`reg_term` -- L2 on the touched CF rows;
* :func:`map_term` -- ``L_map = ‖P̂_u − P_u‖²`` on users with DL-side history;
* :func:`transfer_term` -- ``L_transfer``: the CF loss of the CF side with ``P̂_u`` in place of ``P_u`` (or
  the literal head's sigmoid cross-entropy);
* :func:`rank_term` -- ``L_rank`` (ratings only): which items a user rates, for ``P_u`` and ``P̂_u``;
* :func:`interest_term` -- ``L_interest``: ``I_u`` against the user's CF-side category distribution;
* :func:`dl_term` -- ``L_DL``: masked-item prediction on the DL side.

:func:`joint_losses` evaluates them on one user-centric batch and returns the named parts;
:func:`total_loss` weights them with :class:`LossWeights`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jmf import losses
from jmf.models.joint.net import JMFNet, Mapped, encoder_inputs


class LossWeights(NamedTuple):
    """Weights of the joint objective (a pytree of scalars: changing them never recompiles)."""

    cf: float = 1.0
    dl: float = 0.1        # α
    map: float = 1.0       # β
    transfer: float = 1.0  # γ
    interest: float = 0.1  # δ
    rank: float = 0.0      # ρ: on ratings, which items a user rates (sampled softmax; 0 on implicit data)


class Pairs(NamedTuple):
    """A batch's ``B·m`` (user, CF-side item) pairs and the ``N`` negatives they share."""

    m: int                 # items per user (static)
    items: jax.Array       # [B*m] int32
    values: jax.Array      # [B*m] ratings (1 on implicit data)
    weight: jax.Array      # [B*m] 0 on padding pairs
    q: jax.Array           # [B*m, d] Q_i
    b_i: jax.Array         # [B*m]    item bias
    q_neg: jax.Array       # [N, d]
    b_neg: jax.Array       # [N]
    not_pos: jax.Array     # [B*m, N] the negative is not the pair's positive

    def expand(self, x: jax.Array) -> jax.Array:
        """Per-user ``[B, ...]`` -> per-pair ``[B*m, ...]``."""
        return jnp.repeat(x, self.m, axis=0)


def total_loss(parts: dict[str, jax.Array], w: LossWeights) -> jax.Array:
    """``w.cf·(L_CF + reg) + α L_DL + β L_map + γ L_transfer + δ L_interest + ρ L_rank``."""
    return (w.cf * (parts["cf"] + parts["reg"]) + w.dl * parts["dl"] + w.map * parts["map"]
            + w.transfer * parts["transfer"] + w.interest * parts["interest"] + w.rank * parts["rank"])


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


def cf_term(pairs: Pairs, p: jax.Array, b_u: jax.Array, weight: jax.Array, kind: str, mean: float,
            extra: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    """The CF loss of user vectors ``p [B, d]``, biases ``b_u [B]`` on the pairs (``L_CF``, ``L_transfer``);
    ``extra``: scores added to the positives ``[B*m]`` and the negatives ``[B, N]`` (item-level transfer)."""
    pos = cf_scores(pairs.expand(p), pairs.q, pairs.b_i, pairs.expand(b_u))
    neg = cf_scores_shared(p, pairs.q_neg, pairs.b_neg, b_u)
    if extra is not None:
        pos, neg = pos + extra[0], neg + extra[1]
    neg = pairs.expand(neg)
    if kind == "softmax":
        neg = jnp.where(pairs.not_pos, neg, -1e9)
    return cf_loss(kind, pos, neg, pairs.values, weight, mean)


def reg_term(pairs: Pairs, p: jax.Array, b_u: jax.Array, reg: float) -> jax.Array:
    """L2 on the touched user rows (a user counts when one of its pairs does) and item rows."""
    user_weight = pairs.weight.reshape(-1, pairs.m).max(1)
    return reg * (losses.weighted_mean((p ** 2).sum(-1) + b_u ** 2, user_weight)
                  + losses.weighted_mean((pairs.q ** 2).sum(-1) + pairs.b_i ** 2, pairs.weight))


def map_term(p_hat: jax.Array, p: jax.Array, has_dl: jax.Array) -> jax.Array:
    """``L_map = ‖P̂_u − P_u‖²`` (``P_u`` held fixed) over users with DL-side history."""
    return losses.weighted_mean(((p_hat - jax.lax.stop_gradient(p)) ** 2).sum(-1), has_dl)


def transfer_term(net: JMFNet, mapped: Mapped, pairs: Pairs, neg_items: jax.Array, pair_dl: jax.Array,
                  kind: str, mean: float, extra: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    """``L_transfer``: the CF-side loss with ``P̂_u, b̂_u``; with the literal head, a sigmoid cross-entropy
    of ``C_u = σ(W4 I_u + b4)`` on the user's items against the shared negatives."""
    if not net.literal:
        return cf_term(pairs, mapped.p_hat, mapped.bias_hat, pair_dl, kind, mean, extra)
    logits = pairs.expand(net.literal_logits(mapped.interest))                # [B*m, I_CF]
    logits_pos = jnp.take_along_axis(logits, pairs.items[:, None], 1)[:, 0]
    logits_neg = jnp.where(pairs.not_pos, logits[:, neg_items], -1e9)
    return losses.weighted_mean(-jax.nn.log_sigmoid(logits_pos) - jax.nn.log_sigmoid(-logits_neg).mean(1), pair_dl)


def rank_term(pairs: Pairs, p: jax.Array, p_hat: jax.Array, r_i: jax.Array, r_neg: jax.Array,
              pair_dl: jax.Array) -> jax.Array:
    """``L_rank`` (ratings only): an MSE fit sees only rated items, so it cannot rank the unrated ones.

    The same user factors also learn *which* items a user rates: a sampled softmax over
    ``s_ui = p_u·Q_i + r_i`` with a separate item bias ``r`` (the popularity logit), for ``P_u`` and
    for ``P̂_u``; ``score`` ranks by it when ``ρ > 0``."""
    no_bias = jnp.zeros((p.shape[0],))

    def one(p_, w):
        pos = cf_scores(pairs.expand(p_), pairs.q, r_i, 0.0)
        neg = pairs.expand(cf_scores_shared(p_, pairs.q_neg, r_neg, no_bias))
        return losses.sampled_softmax(pos, jnp.where(pairs.not_pos, neg, -1e9), w)
    return one(p, pairs.weight) + one(p_hat, pair_dl)


def interest_term(interest: jax.Array, target: jax.Array, has_dl: jax.Array) -> jax.Array:
    """``L_interest``: cross-entropy of ``softmax(I_u)`` against the user's CF-side category distribution."""
    return losses.weighted_mean(-(target * jax.nn.log_softmax(interest)).sum(-1), has_dl)


def joint_losses(net: JMFNet, rows: dict, batch: dict, seq: dict, kind: str, mean: float, reg: float,
                 key: jax.Array) -> dict[str, jax.Array]:
    """The named terms of ``L_JMF`` for one user-centric batch (all scalars).

    A batch is ``B`` users, each with ``m`` of their CF-side training items drawn uniformly, so
    every loss is a mean over a user's items, then over users (design.md#the-cf-side), and the encoder
    runs once per user, not once per interaction.

    Args:
      rows: gathered CF-table rows: ``P [B, d]``, ``user_bias [B, 1]``, ``Q [B*m, d]``,
        ``item_bias [B*m, 1]``, ``rank_bias [B*m, 1]``, and of the ``N`` negatives shared by the
        batch ``Qneg [N, d]``, ``item_bias_neg [N, 1]``, ``rank_bias_neg [N, 1]``.
      batch: ``users [B]``, ``items, values, weight [B, m]``, ``neg_items [N]``, ``dl_users [B2]``; with score
        terms inside the fit their values ``prior_pos [B, m]``, ``prior_neg [B, N]`` (added to the scores).
      seq: device-resident per-user arrays: ``items/categories/mask [U, L]``, ``offset [U]``,
        ``interest [U, K]``.
      kind: CF loss (``mse``/``bpr``/``softmax``); mean: global rating mean ``μ`` (0 for ranking).
    """
    users = batch["users"]
    B, m = batch["items"].shape
    items = batch["items"].reshape(-1)
    pairs = Pairs(m, items, batch["values"].reshape(-1), batch["weight"].reshape(-1), rows["Q"],
                  rows["item_bias"][:, 0], rows["Qneg"], rows["item_bias_neg"][:, 0],
                  batch["neg_items"][None, :] != items[:, None])
    p, b_u = rows["P"], rows["user_bias"][:, 0]
    # P̂_u from the user's DL-side sequence; only users with DL-side history carry weight.  model=jmf_map: the
    # batch's target category (``target [B]``, its sequence category id) is hidden from the input
    history, cats, mask = seq["items"][users], seq["categories"][users], seq["mask"][users]
    if "target" in batch:
        mask = mask & (cats != batch["target"][:, None])
    extra = None
    if net.item_attention is not None:      # model/item_transfer: item-level scores of the pairs and negatives
        extra = (net.item_attention(history, mask, batch["items"]).reshape(-1),
                 net.item_attention(history, mask, batch["neg_items"]))
    if "prior_pos" in batch:                # score terms inside the fit (model.terms.<t>.train_weight)
        prior = (batch["prior_pos"].reshape(-1), batch["prior_neg"])
        extra = prior if extra is None else (extra[0] + prior[0], extra[1] + prior[1])
    out = {"cf": cf_term(pairs, p, b_u, pairs.weight, kind, mean, extra), "reg": reg_term(pairs, p, b_u, reg)}

    mapped = net.map(history, cats, mask, seq["offset"][users], target=batch.get("target_index"),
                     **encoder_inputs(net, seq, users))
    has_dl = mask.any(1).astype(jnp.float32) * pairs.weight.reshape(B, m).max(1)   # [B]
    out["map"] = map_term(mapped.p_hat, p, has_dl)
    pair_dl = pairs.expand(has_dl) * pairs.weight
    out["transfer"] = transfer_term(net, mapped, pairs, batch["neg_items"], pair_dl, kind, mean, extra)
    out["rank"] = (rank_term(pairs, p, mapped.p_hat, rows["rank_bias"][:, 0], rows["rank_bias_neg"][:, 0], pair_dl)
                   if kind == "mse" else jnp.zeros(()))
    out["interest"] = interest_term(mapped.interest, seq["interest"][users], has_dl)
    out["dl"] = dl_term(net, batch["dl_users"], seq, key)
    return out


def dl_term(net: JMFNet, users: jax.Array, seq: dict, key: jax.Array, n_negatives: int = 1024,
            full_softmax_max: int = 8192) -> jax.Array:
    """``L_DL``: masked-item cross-entropy over the DL side -- hide one valid behaviour, predict it and its
    category from ``h_u`` of the rest.  Items: a full softmax when the DL side has at most ``full_softmax_max``
    items, else a sampled softmax over ``n_negatives`` uniform negatives shared by the batch (a shared
    draw keeps the embedding gradient a dense ``[N, d]`` block instead of a ``[B*N, d]`` scatter)."""
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
