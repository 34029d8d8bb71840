"""The JMF training step beside the same step written in PyTorch: examples/s of each, interleaved in one process.

    python benchmarks/jmf_peer.py --quick --models jmf-cnn          # 10^5 users, JMF-CNN (~2 min of 2 idle cores)
    python benchmarks/jmf_peer.py                                   # 10^5 users, JMF-CNN and JMF-Transformer
    python benchmarks/jmf_peer.py --users 1000000                   # 10^6 users x 10^5 items (the data: once)

The data, model and step are :mod:`engine_speed`'s (its synthetic split, cached under ``--cache``; the
JMF built as it builds it; the engine's jitted step through ``model.setup``), on one device.  The peer
(:class:`TorchStep`) starts from a copy of jmf's initial parameters and runs the same step: the same
layers, loss terms and weights, batch, shared negatives and optimisers -- dense Adam over the net
(its DL-side embeddings included), and Adagrad over the touched rows only of the CF tables
(``nn.Embedding(sparse=True)``: torch's Adagrad takes sparse gradients and sums a row's repeats, as
:func:`jmf.optim.sparse_rows_update` does).  :func:`parity` checks that both give the same losses and
parameters on a tiny split.

Timing: both steps warm up, then alternate rounds of ``steps`` steps each (the side that goes first
alternates too), so load from other processes falls on both; each side keeps its median round, and
the ratio is jmf's median over torch's.  torch runs on as many threads as JAX's CPU client has cores.
An "example" is one (user, CF-side item) pair of a step (``batch x items_per_user``), as in
:mod:`engine_speed`.  Writes ``benchmarks/results/jmf_peer{_<users>}.{md,csv,json}``.
"""

from __future__ import annotations

import argparse
import inspect
import os
import pickle
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import jax
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jmf.models.base import RunContext
from jmf.models.encoders.cnn import CNNEncoder
from jmf.models.encoders.transformer import TransformerEncoder
from jmf.models.heads.linear import LinearHead
from jmf.models.joint import JMF
from jmf.models.joint.losses import dl_term
from jmf.models.joint.start import NormalFactors

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODELS = ("jmf-cnn", "jmf-transformer")
SCALES = {100_000: (10_000, 30.0), 1_000_000: (100_000, 31.0)}   # users -> engine_speed's (--items, --per-user)
BATCH, ITEMS_PER_USER, NEGATIVES, MAX_LEN = 1024, 8, 64, 50       # engine_speed's JMF
_DL = inspect.signature(dl_term).parameters
DL_NEGATIVES, FULL_SOFTMAX_MAX = _DL["n_negatives"].default, _DL["full_softmax_max"].default   # L_DL's


# ---------------------------------------------------------------------------------------------- jmf
def build_jmf(split, model_name: str, batch: int = BATCH):
    """``(model, engine, state, joint phase)``: the JMF as :mod:`engine_speed` builds it, set up on one device."""
    if model_name not in MODELS:
        raise ValueError(f"--models: {model_name!r} is not one of {MODELS}")
    encoder = CNNEncoder if model_name == "jmf-cnn" else TransformerEncoder
    model = JMF(partial(encoder, embed_dim=64, out_dim=64), partial(LinearHead), dim=64, batch_size=batch,
                items_per_user=ITEMS_PER_USER, max_len=MAX_LEN, init=NormalFactors(), negatives=NEGATIVES)
    engine, state, phases = model.setup(split, RunContext(devices=1, checkpoint=False, progress=False))
    if model.kind != "softmax" or model.optimizer != "adam" or model.table_optimizer != "adagrad":
        raise ValueError(f"the peer implements the implicit-data step (softmax CF loss, adam + adagrad), not "
                         f"loss={model.kind}, optimizer={model.optimizer}, table_optimizer={model.table_optimizer}")
    return model, engine, state, phases[1]


def host_copy(state) -> tuple[dict, dict]:
    """``(params, tables)`` of a jmf state as nested dicts of numpy arrays (copies: a step donates its state)."""
    from flax import nnx

    return (jax.tree.map(np.array, nnx.to_pure_dict(state.params)), jax.tree.map(np.array, dict(state.tables)))


def jmf_draws(state, batch: dict, n_items: int, n_dl_items: int) -> dict[str, torch.Tensor]:
    """The random numbers jmf's step draws from ``state``'s key (:func:`jmf.models.joint.step.make_train_step`,
    :func:`jmf.models.joint.losses.dl_term`), for the peer to reuse: the shared CF-side negatives, the
    uniforms that pick each ``L_DL`` user's hidden position, and the ``L_DL`` negatives."""
    draws = _jmf_draws(state.rng, state.step, batch["dl_users"].shape[0], n_items, n_dl_items)
    return {k: torch.from_numpy(np.array(v)).long() if k != "dl_uniform" else torch.from_numpy(np.array(v))
            for k, v in draws.items()}


@partial(jax.jit, static_argnums=(2, 3, 4))
def _jmf_draws(rng, step, n_dl_users: int, n_items: int, n_dl_items: int) -> dict:
    key_neg, key_dl = jax.random.split(jax.random.fold_in(rng, step))
    key_pos, key_dl_neg = jax.random.split(key_dl)
    return {"neg_items": jax.random.randint(key_neg, (NEGATIVES,), 0, n_items),
            "dl_uniform": jax.random.uniform(key_pos, (n_dl_users,)),
            "dl_negatives": jax.random.randint(key_dl_neg, (DL_NEGATIVES,), 1, n_dl_items + 1)}


# ---------------------------------------------------------------------------------------------- torch
def _tensor(x) -> torch.Tensor:
    return torch.from_numpy(np.array(x, copy=True))


def _linear(p: dict) -> nn.Linear:
    """nnx ``Linear`` (kernel ``[in, out]``) -> ``nn.Linear`` (weight ``[out, in]``)."""
    layer = nn.Linear(*p["kernel"].shape)
    with torch.no_grad():
        layer.weight.copy_(_tensor(p["kernel"]).T)
        layer.bias.copy_(_tensor(p["bias"]))
    return layer


def _layer_norm(p: dict) -> nn.LayerNorm:
    layer = nn.LayerNorm(p["scale"].shape[0], eps=1e-6)    # flax's epsilon
    with torch.no_grad():
        layer.weight.copy_(_tensor(p["scale"]))
        layer.bias.copy_(_tensor(p["bias"]))
    return layer


def _embedding(table, sparse: bool = False) -> nn.Embedding:
    return nn.Embedding.from_pretrained(_tensor(table), freeze=False, sparse=sparse)


def _masked_fill(x: torch.Tensor, keep: torch.Tensor, value: float) -> torch.Tensor:
    return x.masked_fill(~keep, value)


class _Behaviour(nn.Module):
    """``BehaviorEmbedding``: ``(E_item[i] + E_cat[c] + r̃·w_r) · mask``."""

    def __init__(self, p: dict):
        super().__init__()
        self.items, self.categories = _embedding(p["items"]["embedding"]), _embedding(p["categories"]["embedding"])
        self.rating = nn.Parameter(_tensor(p["rating"])) if "rating" in p else None

    def forward(self, items, categories, mask, values):
        e = self.items(items) + self.categories(categories)
        if self.rating is not None:
            e = e + values[..., None] * self.rating
        return e * mask[..., None]


class _CNN(nn.Module):
    """``CNNEncoder``: convolutions of widths 2, 3, 4 ('SAME' padding), ReLU, masked max-pool, dense."""

    def __init__(self, p: dict):
        super().__init__()
        self.embed = _Behaviour(p["embed"])
        self.convs = nn.ModuleList()
        for conv in p["convs"].values():                       # kernel [k, in, out] -> weight [out, in, k]
            width, d_in, d_out = conv["kernel"].shape
            layer = nn.Conv1d(d_in, d_out, width)
            with torch.no_grad():
                layer.weight.copy_(_tensor(conv["kernel"]).permute(2, 1, 0))
                layer.bias.copy_(_tensor(conv["bias"]))
            self.convs.append(layer)
        self.out = _linear(p["out"])

    def forward(self, items, categories, mask, values):
        x = self.embed(items, categories, mask, values).transpose(1, 2)                 # [B, e, L]
        keep, any_valid = mask[:, None, :], mask.any(1, keepdim=True)
        pooled = []
        for conv in self.convs:   # 'SAME' as XLA pads it: (k - 1) // 2 zeros left, the rest right
            y = F.relu(conv(F.pad(x, _same(conv.kernel_size[0]))))                      # [B, f, L]
            pooled.append(torch.where(any_valid, _masked_fill(y, keep, -torch.inf).amax(2), 0.0))   # [B, f]
        return self.out(torch.cat(pooled, -1))


def _same(width: int) -> tuple[int, int]:
    return (width - 1) // 2, width - 1 - (width - 1) // 2


class _Block(nn.Module):
    """Pre-norm block; q, k, v in one ``[d, 3d]`` projection (as ``nn.MultiheadAttention`` packs them)."""

    def __init__(self, p: dict):
        super().__init__()
        a = p["attn"]
        d, self.heads, self.head_dim = a["query"]["kernel"].shape
        self.norm1, self.norm2 = _layer_norm(p["norm1"]), _layer_norm(p["norm2"])
        qkv = [a[k] for k in ("query", "key", "value")]                    # kernels [d, h, hd], biases [h, hd]
        self.qkv = _linear({"kernel": np.concatenate([x["kernel"].reshape(d, -1) for x in qkv], 1),
                            "bias": np.concatenate([x["bias"].reshape(-1) for x in qkv])})
        self.out = _linear({"kernel": a["out"]["kernel"].reshape(-1, d), "bias": a["out"]["bias"]})
        self.fc1, self.fc2 = _linear(p["fc1"]), _linear(p["fc2"])

    def forward(self, x, attn_mask):
        B, L, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)             # [B, h, L, hd]
        x = x + self.out(attn.transpose(1, 2).reshape(B, L, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x)), approximate="tanh"))         # nnx.gelu: tanh form


class _Transformer(nn.Module):
    """``TransformerEncoder``: embeddings + positions, pre-norm blocks, LayerNorm, masked mean, dense."""

    def __init__(self, p: dict):
        super().__init__()
        self.embed = _Behaviour(p["embed"])
        self.positions = nn.Parameter(_tensor(p["positions"]["embedding"]))
        self.blocks = nn.ModuleList(_Block(b) for b in p["blocks"].values())
        self.norm, self.out = _layer_norm(p["norm"]), _linear(p["out"])

    def forward(self, items, categories, mask, values):
        L = items.shape[1]
        x = self.embed(items, categories, mask, values) + self.positions[:L][None]
        # a query with no valid key would see only -inf: pads attend to themselves
        attn_mask = ((mask[:, None, :, None] & mask[:, None, None, :])
                     | torch.eye(L, dtype=torch.bool)[None, None])                       # [B, 1, L, L]
        for block in self.blocks:
            x = block(x, attn_mask)
        m = mask[..., None].to(x.dtype)
        return self.out((self.norm(x) * m).sum(1) / m.sum(1).clamp(min=1.0))


class TorchJMF(nn.Module):
    """``JMFNet`` and the CF tables ``P, Q, b_u, b_i``, from jmf's parameters (:func:`host_copy`).

    The tables are sparse-gradient embeddings; ``rank_bias`` is left out: it enters only ``L_rank``,
    which the softmax CF loss does not compute (jmf applies its zero gradient, a no-op)."""

    def __init__(self, params: dict, tables: dict):
        super().__init__()
        enc = params["encoder"]
        self.encoder = _CNN(enc) if "convs" in enc else _Transformer(enc)
        self.head, self.bias = _linear(params["head"]["linear"]), _linear(params["bias"])
        self.interest, self.dl_categories = _linear(params["interest"]), _linear(params["dl_categories"])
        self.dl_items = nn.Parameter(_tensor(params["dl_items"]["embedding"]))
        self.offset_scale = nn.Parameter(_tensor(params["offset_scale"]))
        self.P, self.Q = _embedding(tables["P"], sparse=True), _embedding(tables["Q"], sparse=True)
        self.user_bias = _embedding(tables["user_bias"], sparse=True)
        self.item_bias = _embedding(tables["item_bias"], sparse=True)

    def tables(self) -> list[nn.Parameter]:
        return [self.P.weight, self.Q.weight, self.user_bias.weight, self.item_bias.weight]


def _weighted_mean(values, weight):
    return (values * weight).sum() / weight.sum().clamp(min=1e-12)


def _sampled_softmax(pos, neg, weight):
    return _weighted_mean(-F.log_softmax(torch.cat([pos[:, None], neg], 1), 1)[:, 0], weight)


def _softmax_xent(logits, labels, weight):
    return _weighted_mean(-F.log_softmax(logits, -1).gather(1, labels[:, None])[:, 0], weight)


class TorchStep:
    """One jmf joint training step in torch (:func:`jmf.models.joint.losses.joint_losses` with the softmax
    CF loss, then the optimisers' updates).  ``seq``: jmf's per-user sequence arrays (``model.seq``)."""

    def __init__(self, model, params: dict, tables: dict, seq: dict, seed: int = 0):
        import optax

        self.net = TorchJMF(params, tables)
        self.seq = {k: _tensor(seq[k]).long() if k in ("items", "categories") else _tensor(seq[k])
                    for k in ("items", "categories", "mask", "values", "offset", "interest")}
        self.n_items, self.n_dl_items = model.n_items, self.net.dl_items.shape[0] - 1
        self.reg, self.w = model.reg, model.weights
        adam, adagrad = inspect.signature(optax.adam).parameters, inspect.signature(optax.adagrad).parameters
        tables_ids = {id(t) for t in self.net.tables()}
        self.dense_opt = torch.optim.Adam([p for p in self.net.parameters() if id(p) not in tables_ids], lr=model.lr,
                                          betas=(adam["b1"].default, adam["b2"].default), eps=adam["eps"].default,
                                          fused=True)
        # optax adds eps under the square root, torch after it: a relative 1e-7/(2·0.1) at most
        self.table_opt = torch.optim.Adagrad(self.net.tables(), lr=model.table_lr, eps=adagrad["eps"].default,
                                             initial_accumulator_value=adagrad["initial_accumulator_value"].default)
        self.generator = torch.Generator().manual_seed(seed)
        torch.sparse.check_sparse_tensor_invariants.disable()   # the tables' gradients come from nn.Embedding

    def draws(self, n_dl_users: int) -> dict[str, torch.Tensor]:
        """The step's own random numbers (what :func:`jmf_draws` gives from jmf's key)."""
        g = self.generator
        return {"neg_items": torch.randint(0, self.n_items, (NEGATIVES,), generator=g),
                "dl_uniform": torch.rand(n_dl_users, generator=g),
                "dl_negatives": torch.randint(1, self.n_dl_items + 1, (DL_NEGATIVES,), generator=g)}

    def losses(self, batch: dict, draws: dict) -> dict[str, torch.Tensor]:
        """The named terms of ``L_JMF`` (``batch``: ``users [B]``, ``items, weight [B, m]``, ``dl_users [B]``)."""
        net, seq = self.net, self.seq
        users, (B, m) = batch["users"], batch["items"].shape
        items, weight = batch["items"].reshape(-1), batch["weight"].reshape(-1)
        neg_items = draws["neg_items"]
        q, b_i = net.Q(items), net.item_bias(items)[:, 0]                                 # [B*m, d], [B*m]
        q_neg, b_neg = net.Q(neg_items), net.item_bias(neg_items)[:, 0]                   # [N, d], [N]
        not_pos = neg_items[None, :] != items[:, None]                                    # [B*m, N]

        def cf_term(p, b_u, w):
            pos = (p.repeat_interleave(m, 0) * q).sum(-1) + b_i + b_u.repeat_interleave(m)
            neg = (p @ q_neg.T + b_neg[None, :] + b_u[:, None]).repeat_interleave(m, 0)
            return _sampled_softmax(pos, _masked_fill(neg, not_pos, -1e9), w)

        p, b_u = net.P(users), net.user_bias(users)[:, 0]
        user_weight = weight.reshape(B, m).amax(1)
        out = {"cf": cf_term(p, b_u, weight),
               "reg": self.reg * (_weighted_mean((p ** 2).sum(-1) + b_u ** 2, user_weight)
                                  + _weighted_mean((q ** 2).sum(-1) + b_i ** 2, weight))}
        mask = seq["mask"][users]
        h = net.encoder(seq["items"][users], seq["categories"][users], mask, seq["values"][users])
        p_hat = net.head(h)
        bias_hat = net.bias(h)[:, 0] + net.offset_scale * seq["offset"][users]
        interest = net.interest(p_hat)
        has_dl = mask.any(1).float() * user_weight
        out["map"] = _weighted_mean(((p_hat - p.detach()) ** 2).sum(-1), has_dl)
        out["transfer"] = cf_term(p_hat, bias_hat, has_dl.repeat_interleave(m) * weight)
        out["interest"] = _weighted_mean(-(seq["interest"][users] * F.log_softmax(interest, -1)).sum(-1), has_dl)
        out["dl"] = self.dl_term(batch["dl_users"], draws)
        return out

    def dl_term(self, users, draws: dict) -> torch.Tensor:
        """``L_DL``: hide one valid behaviour, predict it (full or sampled softmax) and its category."""
        net, seq = self.net, self.seq
        items, cats, mask = seq["items"][users], seq["categories"][users], seq["mask"][users]
        lengths = mask.sum(1)
        pos = torch.floor(draws["dl_uniform"] * lengths.clamp(min=1)).long()
        hidden = F.one_hot(pos, mask.shape[1]).bool()
        target_item, target_cat = items.gather(1, pos[:, None])[:, 0], cats.gather(1, pos[:, None])[:, 0]
        h = net.encoder(items, cats, mask & ~hidden, seq["values"][users])
        w = (lengths >= 2).float()
        table = net.dl_items
        if self.n_dl_items <= FULL_SOFTMAX_MAX:
            item_term = _softmax_xent(h @ table[1:].T, (target_item - 1).clamp(min=0), w)
        else:
            neg = draws["dl_negatives"]
            neg_logit = _masked_fill(h @ table[neg].T, neg[None, :] != target_item[:, None], -1e9)
            item_term = _sampled_softmax((h * table[target_item]).sum(-1), neg_logit, w)
        return item_term + _softmax_xent(net.dl_categories(h), target_cat, w)

    def total(self, parts: dict) -> torch.Tensor:
        w = self.w
        return (w.cf * (parts["cf"] + parts["reg"]) + w.dl * parts["dl"] + w.map * parts["map"]
                + w.transfer * parts["transfer"] + w.interest * parts["interest"])

    def __call__(self, batch: dict, draws: dict | None = None) -> dict[str, torch.Tensor]:
        """One step on ``batch`` (torch tensors, :func:`torch_batch`); returns the loss and its parts."""
        parts = self.losses(batch, draws if draws is not None else self.draws(batch["dl_users"].shape[0]))
        loss = self.total(parts)
        self.dense_opt.zero_grad()
        self.table_opt.zero_grad()
        loss.backward()
        self.dense_opt.step()
        self.table_opt.step()
        return {"loss": loss.detach(), **{k: v.detach() for k, v in parts.items()}}


def torch_batch(batch: dict) -> dict[str, torch.Tensor]:
    """A jmf batch (``users [B]``, ``items, values, weight [B, m]``, ``dl_users [B]``) as torch tensors."""
    return {k: torch.from_numpy(np.array(v)).long() if v.dtype.kind == "i" else torch.from_numpy(np.array(v))
            for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------- parity
def parity(model: str, users: int = 300, items: int = 30_000, batch: int = 64) -> dict:
    """Run jmf's step and the peer side by side for two steps on a tiny synthetic split, from the same
    parameters and with the same batches and random draws.  With ``items=30_000`` the DL side has more
    than ``FULL_SOFTMAX_MAX`` items (``L_DL`` samples its negatives, as at 10^6 users); a few thousand
    items take the full softmax (10^5 users).

    Returns:
      ``loss0/loss1`` jmf's and torch's total loss at steps 0 and 1 (``*_jmf``, ``*_torch``), the worst
      relative difference of the loss parts at both steps (``parts_rel``), and after step 0 the largest
      absolute parameter difference (``param_abs``, where ``param_where`` is) and the largest update
      (``update_abs``).  ``param_abs`` leaves out the parameters whose gradient is 0 by symmetry (Adam
      turns each side's rounding noise into a step of up to ``lr``): ``b̂_u``'s layer (the softmax CF
      loss is invariant to a per-user shift) and the attention key biases (a shift of every key's logit);
      their largest difference is ``invariant_abs``.
    """
    from jmf.data.split import make_split, partition_categories
    from jmf.data.synthetic import synthetic

    data = synthetic(n_users=users, n_items=items, n_categories=8, interactions_per_user=30, seed=0)
    split = make_split(data, partition_categories(data, k=4), "ratio", seed=0, valid_ratio=0.0)
    jmf, _, state, phase = build_jmf(split, model, batch)
    params0, tables0 = host_copy(state)
    peer = TorchStep(jmf, params0, tables0, jmf.seq)
    plan, out, parts_rel = phase.plan(0), {"model": model, "dl_items": peer.n_dl_items}, 0.0
    for i in range(2):
        b = plan.batch(i)
        draws = jmf_draws(state, b, jmf.n_items, peer.n_dl_items)
        state, metrics = phase.step(state, b)
        theirs = peer(torch_batch(b), draws)
        out[f"loss{i}_jmf"], out[f"loss{i}_torch"] = float(metrics["loss"]), float(theirs["loss"])
        for k, v in theirs.items():
            parts_rel = max(parts_rel, abs(float(v) - float(metrics[k])) / max(abs(float(metrics[k])), 1e-6))
        if i == 0:   # jmf's parameters after one step, laid out as torch's
            after = TorchJMF(*host_copy(state)).state_dict()
            before = TorchJMF(params0, tables0).state_dict()
            ours = peer.net.state_dict()
            diff = {k: (ours[k] - after[k]).abs() for k in after}
            invariant = {k: _invariant(k, v) for k, v in diff.items()}
            rest = {k: float(v[~invariant[k]].max()) for k, v in diff.items() if not invariant[k].all()}
            out["param_where"] = max(rest, key=rest.get)
            out["param_abs"] = rest[out["param_where"]]
            out["invariant_abs"] = max(float(v[invariant[k]].max()) for k, v in diff.items() if invariant[k].any())
            out["update_abs"] = max(float((after[k] - before[k]).abs().max()) for k in after)
    out["parts_rel"] = parts_rel
    return out


def _invariant(name: str, value: torch.Tensor) -> torch.Tensor:
    """The elements of parameter ``name`` whose gradient the step's losses make 0 by symmetry."""
    mask = torch.full(value.shape, name.startswith("bias."))
    if name.endswith("qkv.bias"):                        # [q | k | v]: the key part
        d = value.shape[0] // 3
        mask[d:2 * d] = True
    return mask


# ---------------------------------------------------------------------------------------------- timing
def _jmf_round(phase, state, batches: list, n: int, max_inflight: int):
    pending = []
    start = time.perf_counter()
    for i in range(n):
        state, metrics = phase.step(state, batches[i % len(batches)])
        pending.append(metrics["loss"])
        if len(pending) >= max_inflight:
            jax.block_until_ready(pending.pop(0))
    jax.block_until_ready(pending)
    return state, time.perf_counter() - start


def _torch_round(peer: TorchStep, batches: list, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        peer(batches[i % len(batches)])
    return time.perf_counter() - start


def jax_cores() -> int:
    """The cores JAX's CPU client runs on (its thread pools are sized to the process's CPU affinity)."""
    return len(os.sched_getaffinity(0))


def measure(users: int, quick: bool = False, models: tuple[str, ...] = MODELS,
            cache: str = "/tmp/jmf_bench") -> list[dict]:
    """jmf's and torch's examples/s of each model's step at ``users`` (10^5 or 10^6, engine_speed's data),
    timed in interleaved rounds; one row per model.  ``quick``: 3 rounds of 4 steps (else 5 of 10)."""
    from engine_speed import make_split

    if users not in SCALES:
        raise ValueError(f"--users: {users} is not one of {sorted(SCALES)} (engine_speed's scales)")
    items, per_user = SCALES[users]
    with open(make_split(users, items, per_user, Path(cache)), "rb") as f:
        split = pickle.load(f)
    rounds, steps = (3, 4) if quick else (5, 10)
    threads = jax_cores()
    torch.set_num_threads(threads)
    rows = []
    for model_name in models:
        t0 = time.perf_counter()
        model, engine, state, phase = build_jmf(split, model_name)
        peer = TorchStep(model, *host_copy(state), model.seq)
        setup_s = time.perf_counter() - t0
        plan = phase.plan(0)
        jmf_batches = [plan.batch(i) for i in range(steps)]
        torch_batches = [torch_batch(b) for b in jmf_batches]
        state, _ = _jmf_round(phase, state, jmf_batches, 2, engine.max_inflight)    # compile + warm-up
        _torch_round(peer, torch_batches, 2)
        times: dict[str, list[float]] = {"jmf": [], "torch": []}
        for r in range(rounds):
            for side in (("jmf", "torch") if r % 2 == 0 else ("torch", "jmf")):
                if side == "jmf":
                    state, s = _jmf_round(phase, state, jmf_batches, steps, engine.max_inflight)
                else:
                    s = _torch_round(peer, torch_batches, steps)
                times[side].append(s)
        per_step = BATCH * ITEMS_PER_USER
        rate = {k: [steps * per_step / s for s in v] for k, v in times.items()}
        row = {"model": model_name, "users": split.train.shape[0], "cf_items": split.train.shape[1],
               "dl_items": peer.n_dl_items, "batch": BATCH, "rounds": rounds, "steps/round": steps,
               "jmf examples/s": round(statistics.median(rate["jmf"])),
               "torch examples/s": round(statistics.median(rate["torch"])),
               "ratio": round(statistics.median(rate["jmf"]) / statistics.median(rate["torch"]), 2),
               "round ratios": " ".join(f"{a / b:.2f}" for a, b in zip(rate["jmf"], rate["torch"])),
               "jmf best": round(max(rate["jmf"])), "torch best": round(max(rate["torch"])),
               "threads": threads, "setup_s": round(setup_s, 1)}
        print(row, flush=True)
        rows.append(row)
        del model, engine, state, phase, peer
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000, choices=sorted(SCALES))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--quick", action="store_true", help="3 rounds of 4 steps (else 5 rounds of 10)")
    parser.add_argument("--cache", default="/tmp/jmf_bench", help="engine_speed's split cache")
    args = parser.parse_args()
    from common import markdown_table, write_results

    rows = measure(args.users, args.quick, tuple(args.models.split(",")), args.cache)
    columns = ["model", "users", "cf_items", "dl_items", "batch", "rounds", "steps/round", "jmf examples/s",
               "torch examples/s", "ratio", "round ratios", "jmf best", "torch best", "threads"]
    suffix = "" if args.users == 100_000 else f"_{args.users}"
    write_results(f"jmf_peer{suffix}", markdown_table(rows, columns, digits=2), rows,
                  {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                   "note": "ratio = jmf / torch median examples/s over interleaved rounds in one process"})


if __name__ == "__main__":
    main()
