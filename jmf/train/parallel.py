"""Data parallelism by sharding (design.md#conventions): one mesh with a ``data`` axis.

The batch is sharded ``P("data")`` and the state replicated ``P()``; XLA inserts the
gradient all-reduce, so no step contains a hand-written ``pmean``.  ``jax.pmap`` is in
maintenance mode and is not used: ``jax.jit`` over a ``Mesh`` is how current JAX
(big_vision, maxtext) writes pmap's semantics, and the same code runs on 1 CPU, 4 forced
CPU devices, a GPU, a TPU slice or several hosts (``jax.distributed``; the mesh then spans
every process's devices).

Batches, explicitly:

* ``batch_size`` is the **global** batch; it must divide by the mesh's ``data`` size and
  each device gets ``batch_size / n_devices`` rows (:func:`check_batch_size`).
* Every process builds the same global batch plan from the shared seed and places only the
  rows of its own devices (:func:`put_batch`, ``make_array_from_process_local_data``), so
  each process reads its own shard of users.
* A ragged last batch is the model's choice, made explicit: padded with zero weights (MF) or
  filled by drawing more users (JMF); no step sees a new shape, so the step compiles once.

Large embedding tables can be sharded by rows over the same axis (``trainer.shard_tables``):
:func:`state_shardings` gives them ``P("data", None)``; their row count is padded to a
multiple of the device count (:func:`padded_rows`), as ``NamedSharding`` needs even shards.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jmf.errors import ConfigError


def make_mesh(devices: list | int | None = None) -> Mesh:
    """A 1-D mesh with axis ``data`` over ``devices`` (a list; a count of the first devices; default all).

    With ``jax.distributed`` initialised the default spans every process's devices.
    """
    if devices is None or isinstance(devices, int):
        available = jax.devices()
        n = devices or len(available)
        if n > len(available):
            raise ConfigError(f"trainer.devices: {n} requested, {len(available)} available ({jax.default_backend()})")
        devices = available[:n]
    return Mesh(np.asarray(devices), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def default_max_inflight() -> int:
    """Steps dispatched before the host waits for the oldest one.

    Small on CPU: with forced host devices on few cores, 50+ queued sharded steps deadlocked
    XLA's CPU all-reduce rendezvous here ("Expected 4 threads to join"); a bound of 10 ran
    300 steps cleanly.  Accelerators keep a deeper queue to hide dispatch latency.
    """
    return 8 if jax.default_backend() == "cpu" else 64


def check_batch_size(global_batch: int, mesh: Mesh, key: str = "trainer.batch_size") -> int:
    """The per-device batch; the global batch must divide evenly over the ``data`` axis."""
    n = mesh.shape["data"]
    if global_batch % n:
        raise ConfigError(f"{key}: {global_batch} is not divisible by the {n} devices of the mesh")
    return global_batch // n


def padded_rows(n_rows: int, mesh: Mesh) -> int:
    """``n_rows`` rounded up to a multiple of the ``data`` axis size (row-sharded tables)."""
    n = mesh.shape["data"]
    return -(-n_rows // n) * n


def _local_rows(sharding: NamedSharding, shape: tuple) -> slice:
    idx = sharding.addressable_devices_indices_map(shape).values()
    starts = [i[0].start or 0 for i in idx]
    stops = [shape[0] if i[0].stop is None else i[0].stop for i in idx]
    return slice(min(starts), max(stops))


def put_batch(batch: dict, mesh: Mesh, axis: int = 0) -> dict:
    """Host arrays (the global batch) -> device arrays sharded over ``data`` along ``axis``.

    On several processes each one transfers only the rows its own devices hold.
    """
    spec = P(*([None] * axis), "data")
    sharding = NamedSharding(mesh, spec)
    if jax.process_count() == 1:
        return jax.device_put(batch, sharding)

    def put(x):
        x = np.asarray(x)
        rows = _local_rows(sharding, x.shape)
        local = x[(slice(None),) * axis + (rows,)]
        return jax.make_array_from_process_local_data(sharding, local, x.shape)
    return jax.tree.map(put, batch)


def put_replicated(tree, mesh: Mesh):
    """Every leaf of ``tree`` replicated over the mesh (every process passes the same values)."""
    return put_global(tree, jax.tree.map(lambda _: replicated(mesh), tree))


def put_global(tree, shardings):
    """Place ``tree`` (host or single-device values, the same on every process) with ``shardings``.

    One process: ``jax.device_put``.  Several: each process builds its addressable shards from its
    own copy (``make_array_from_callback``), as ``device_put`` only reaches addressable devices.
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def put(leaf, sharding):
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            data = put(jax.random.key_data(leaf), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
        host = np.asarray(leaf)
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    return jax.tree.map(put, tree, shardings)


def state_shardings(state, mesh: Mesh, row_sharded: Callable[[tuple, jax.Array], bool] | None = None):
    """A sharding per leaf: ``P("data", None, ...)`` where ``row_sharded(path, leaf)``, else ``P()``."""
    def pick(path, leaf):
        if row_sharded is not None and getattr(leaf, "ndim", 0) >= 1 and row_sharded(path, leaf):
            return NamedSharding(mesh, P("data", *([None] * (leaf.ndim - 1))))
        return replicated(mesh)
    return jax.tree_util.tree_map_with_path(pick, state)
