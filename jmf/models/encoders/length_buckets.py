"""Length-bucketed batches for encoding a whole set of texts at once (design.md#the-dl-side).

Users' behaviour texts range from a few tokens to the model's limit (MovieLens-100k: 32-512 tokens,
median 425; Ciao: 2-309, median 79), so padding every batch to its longest text, or every text to
``max_tokens``, spends much of the encoder's work on pads.  :func:`encode_bucketed` sorts the texts
by token length (longest first), cuts that order into batches of ``batch_size`` rows, pads each batch
only to the smallest *bucket length* holding its longest text, runs them, and puts the results back in
the input order.  The bucket lengths (:func:`bucket_lengths`) are few -- about four per doubling of
the length -- so a jitted encoder compiles once per bucket, not once per batch; only the last batch,
holding the shortest texts, is ragged, and it is padded with empty rows to the same ``batch_size``.

A pad is a masked attention key and is left out of the pooling, so a text's encoding does not depend
on how much padding it gets: bucketed and unbucketed encodings agree to float rounding
(``tests/models/test_lm.py``).  The batches are dispatched without waiting for their results (JAX
runs them asynchronously) and the pooled vectors come back to the host once, at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jmf.errors import ConfigError


def bucket_lengths(max_tokens: int, smallest: int = 16, per_octave: int = 4) -> tuple[int, ...]:
    """The padded lengths a batch may take: multiples of ``smallest``, about ``per_octave`` per doubling.

    ``bucket_lengths(512)`` is ``16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512``:
    a batch is padded by at most a quarter of its length beyond 64 tokens.  The last is always ``max_tokens``.
    """
    if max_tokens < 1 or smallest < 1 or per_octave < 1:
        raise ConfigError(f"bucket_lengths: max_tokens {max_tokens}, smallest {smallest} and per_octave "
                          f"{per_octave} must be positive")
    out, length = [], smallest
    while length < max_tokens:
        out.append(length)
        octave = 1 << (length.bit_length() - 1)                 # the power of two at or below length
        length += max(smallest, octave // per_octave)
    return (*out, max_tokens)


def text_lengths(valid: np.ndarray) -> np.ndarray:
    """``[N, T]`` valid-token mask -> ``[N]`` lengths: one past each row's last valid token (0: none)."""
    valid = np.asarray(valid, bool)
    last = valid.shape[1] - np.argmax(valid[:, ::-1], axis=1)
    return np.where(valid.any(1), last, 0)


def plan_batches(lengths: np.ndarray, batch_size: int, buckets: Sequence[int]) -> list[tuple[np.ndarray, int]]:
    """``(rows of the input, padded length T)`` per batch: rows sorted longest first, ``T`` a bucket length."""
    lengths = np.asarray(lengths)
    if batch_size < 1:
        raise ConfigError(f"batch_size: {batch_size} must be positive")
    buckets = np.asarray(sorted(buckets))
    if len(lengths) and lengths.max() > buckets[-1]:
        raise ConfigError(f"a text of {lengths.max()} tokens exceeds the longest bucket ({buckets[-1]})")
    order = np.argsort(-lengths, kind="stable")
    plan = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        plan.append((rows, int(buckets[np.searchsorted(buckets, max(int(lengths[rows[0]]), 1))])))
    return plan


def encode_bucketed(encode: Callable[[jax.Array, jax.Array], jax.Array], tokens: np.ndarray, valid: np.ndarray,
                    batch_size: int = 64, buckets: Sequence[int] | None = None) -> np.ndarray:
    """Run ``encode`` over every row of a token table in length-bucketed batches; rows come back in order.

    Args:
      encode: a jitted ``(input_ids [B, T] int32, attention_mask [B, T] bool) -> [B, H]`` (such as
        :func:`jmf.models.encoders.lm.jit_pool`); it sees ``B = batch_size`` and ``T`` in ``buckets``.
      tokens: ``[N, T_max]`` token ids; valid: ``[N, T_max]`` bool, the tokens a text holds.
      batch_size: rows per batch.
      buckets: the padded lengths (default :func:`bucket_lengths` up to ``T_max``).

    Returns:
      ``[N, H]`` float32, row ``i`` the encoding of ``tokens[i]``.
    """
    tokens, valid = np.asarray(tokens), np.asarray(valid, bool)
    buckets = bucket_lengths(tokens.shape[1]) if buckets is None else buckets
    plan = plan_batches(text_lengths(valid), batch_size, buckets)
    pending = []
    for rows, length in plan:
        ids = np.zeros((batch_size, length), np.int32)          # empty rows of a ragged batch: no valid token
        mask = np.zeros((batch_size, length), bool)
        ids[:len(rows)] = tokens[rows, :length]
        mask[:len(rows)] = valid[rows, :length]
        pending.append(encode(jnp.asarray(ids), jnp.asarray(mask)))   # dispatched; not waited for
    if not plan:
        return np.zeros((0, 0), np.float32)
    pooled = jax.device_get(pending)
    out = np.empty((len(tokens), pooled[0].shape[-1]), np.float32)
    for (rows, _), batch in zip(plan, pooled):
        out[rows] = batch[:len(rows)]
    return out
