"""Trainable-or-frozen building blocks of the pretrained text encoder, with LoRA adapters.

Which weights train is decided by their NNX variable *type*, not by an optimiser filter:

* :class:`Frozen` (a plain ``nnx.Variable``, not an ``nnx.Param``) holds pretrained weights that
  do not train.  The joint trainer splits its net with ``nnx.split(net, nnx.Param, ...)``, so
  frozen weights land in the non-parameter state: they are neither differentiated nor given
  optimiser slots, and the trainer needs no filter option.
* Pretrained weights start at zero (ones for LayerNorm scales) and are filled by
  :func:`jmf.models.encoders.lm.load_pretrained`: drawing random values that are overwritten
  anyway cost seconds per model on CPU.
* :class:`LoRAParam` (an ``nnx.Param``) holds the adapters ``A [d_in, r]``, ``B [r, d_out]`` of
  ``y = x W + b + (α / r) · x A B`` (Hu et al. 2021).  ``B`` starts at zero, so at step 0 the
  adapted layer equals the pretrained one.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx


class Frozen(nnx.Variable):
    """A pretrained weight kept out of ``nnx.Param`` (hence out of gradients and the optimiser)."""


class LoRAParam(nnx.Param):
    """A low-rank adapter weight (trainable)."""


@dataclass(frozen=True)
class LoRASpec:
    """Where and how large the adapters are.

    Attributes:
      rank: ``r``; alpha: the scale numerator (``α / r`` multiplies ``x A B``).
      targets: which projections of a layer get adapters (``query``, ``key``, ``value``, ``attn_out``,
        ``ffn_in``, ``ffn_out``).
      layers: layer indices that get adapters (``None``: every layer).
    """

    rank: int = 8
    alpha: float = 16.0
    targets: tuple[str, ...] = ("query", "value")
    layers: tuple[int, ...] | None = None

    def applies(self, layer: int, target: str) -> bool:
        return target in self.targets and (self.layers is None or layer in self.layers)


def variable_type(trainable: bool) -> type[nnx.Variable]:
    return nnx.Param if trainable else Frozen


class Dense(nnx.Module):
    """``y = x W + b`` (``W [d_in, d_out]``), optionally ``+ (α/r) · x A B``."""

    def __init__(self, d_in: int, d_out: int, *, trainable: bool, lora: LoRASpec | None = None,
                 rngs: nnx.Rngs):
        var = variable_type(trainable)
        self.kernel = var(jnp.zeros((d_in, d_out)))
        self.bias = var(jnp.zeros((d_out,)))
        self.lora_scale = None
        if lora is not None:
            # A: Kaiming-uniform as in the reference implementation (peft); B = 0
            bound = 1.0 / d_in ** 0.5
            self.lora_a = LoRAParam(jax.random.uniform(rngs.params(), (d_in, lora.rank), minval=-bound, maxval=bound))
            self.lora_b = LoRAParam(jnp.zeros((lora.rank, d_out)))
            self.lora_scale = lora.alpha / lora.rank

    def __call__(self, x: jax.Array) -> jax.Array:
        y = x @ self.kernel[...] + self.bias[...]
        return y if self.lora_scale is None else y + self.adapter(x)

    def adapter(self, x: jax.Array) -> jax.Array:
        """The LoRA term ``(α/r) · x A B`` alone (for a caller that computes ``x W + b`` fused with others)."""
        return self.lora_scale * ((x @ self.lora_a[...]) @ self.lora_b[...])


class LayerNorm(nnx.Module):
    """``(x - mean) / sqrt(var + eps) · scale + bias`` over the last axis (biased variance, as torch)."""

    def __init__(self, dim: int, eps: float, *, trainable: bool):
        var = variable_type(trainable)
        self.scale = var(jnp.ones((dim,)))
        self.bias = var(jnp.zeros((dim,)))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        mean = x.mean(-1, keepdims=True)
        centred = x - mean
        var = (centred * centred).mean(-1, keepdims=True)
        return centred * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]


class Embedding(nnx.Module):
    """A ``[n, dim]`` lookup table."""

    def __init__(self, n: int, dim: int, *, trainable: bool):
        self.table = variable_type(trainable)(jnp.zeros((n, dim)))

    def __call__(self, ids: jax.Array) -> jax.Array:
        return jnp.take(self.table[...], ids, axis=0)
