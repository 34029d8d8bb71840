"""Data parallelism by sharding (STYLE R8): one mesh with a ``data`` axis.

The batch is sharded ``P("data")`` and the state replicated ``P()``; XLA inserts the
gradient all-reduce, so no step contains a hand-written ``pmean``.  ``jax.pmap`` is in
maintenance mode and is not used: ``jax.jit`` over a ``Mesh`` is how current JAX
(big_vision, maxtext) writes pmap's semantics, and the same code runs on 1 CPU, 4 forced
CPU devices, a GPU or a TPU slice.
"""

from __future__ import annotations

import numpy as np
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all local devices) with axis ``data``."""
    devices = jax.local_devices() if devices is None else devices
    return Mesh(np.asarray(devices), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def check_batch_size(global_batch: int, mesh: Mesh, key: str = "trainer.batch_size") -> int:
    """The per-device batch; the global batch must divide evenly over the ``data`` axis."""
    n = mesh.shape["data"]
    if global_batch % n:
        raise ValueError(f"{key}: {global_batch} is not divisible by the {n} devices of the mesh")
    return global_batch // n


def put_batch(batch: dict, mesh: Mesh) -> dict:
    """Host arrays ``[B, ...]`` -> device arrays sharded over ``data`` along axis 0."""
    return jax.device_put(batch, batch_sharded(mesh))


def put_replicated(tree, mesh: Mesh):
    return jax.device_put(tree, replicated(mesh))
