"""Weighted implicit ALS (Hu, Koren & Volinsky 2008) with a batched conjugate-gradient solve.

Objective: ``Σ_{u,i} c_ui (p_ui - x_u·y_i)² + λ(‖X‖² + ‖Y‖²)`` with ``p_ui = 1`` on observed
pairs, ``c_ui = α r_ui`` there and ``1`` elsewhere — the same formulation as the
``implicit`` package, so the two can be compared on equal terms.  Each half-epoch solves
``(YᵀY + λI + Σ_{i∈I_u} (c_ui-1) y_i y_iᵀ) x_u = Σ_{i∈I_u} c_ui y_i`` for all users at once
with ``cg_steps`` conjugate-gradient steps warm-started at the current ``x_u`` (Takács et
al. 2011), as ``implicit`` does.

Layout (what makes it fast on a CPU).  Rows are grouped by length into buckets of padded
width ``L`` (a half-octave grid: 2^k and 1.5·2^k), and each bucket into chunks of ``C`` rows whose gathered
factors ``Y[cols]`` ``[C, L, d]`` take about ``chunk_bytes`` (a quarter megabyte, within an L2 cache).
A chunk runs its whole CG — gather once, then 2 batched mat-vecs per step — while its
factors stay in cache, and ``lax.map`` walks the chunks.  Measured on 2 CPU cores and 1.2M
interactions (``benchmarks/speed_cf.py``), this is 10x faster per epoch than one
``segment_sum`` over all nonzeros per CG step (scatter-adds of ``[nnz, d]``) and 2x faster
than the same buckets without chunks (``[nnz, d]`` gathered factors stream through memory
eight times per half-epoch).  One half-epoch is one ``jax.jit`` call per bucket and one that
writes their rows into the factors; each compiles once per matrix.  (A whole Cholesky
epoch in one jit hung in the CPU LAPACK call on this machine; CG has no such call.)

Memory (``benchmarks/ials_scale.py``, 10M interactions, d=64, 2 devices: peak RSS 2.37 GB
before, 1.51 GB after; ``implicit`` 0.51 GB).  Host buckets go to their sharded place one at a
time, straight from NumPy: a single-device copy first, resharded, compiled one program per
array shape (about 0.4 GB and a minute at that scale).  One program per bucket, not one per
half-epoch, keeps XLA's compile-time peak to one bucket's loop.  What remains above
``implicit``: JAX and XLA themselves (about 0.19 GB once imported), the compiled loops, and
the factors, which every device holds whole (one copy per device).

Devices.  Each bucket's chunks are split over a 1-D mesh of the local devices
(``jax.shard_map``; ``X`` and ``Y`` replicated), and every device walks its own chunks.  The
rows are independent, so the result does not depend on the device count.  On a CPU the chunk
ops are small, and what they cost is largely the synchronisation of XLA's intra-op thread
pool; one CPU device per core, each running its chunks on its own
thread, removes it::

    XLA_FLAGS="--xla_force_host_platform_device_count=$(nproc) --xla_cpu_multi_thread_eigen=false" \
        jmf-train model=ials

(``benchmarks/speed_cf.py`` runs iALS this way; ``--ials-xla-flags ''`` runs it on XLA's
default single device for comparison.)  Models with large matmuls (JMF) want the opposite
setting, so this is a per-run choice, not a package default.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import cached_property, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jmf.data.split import SplitData
from jmf.models.base import ClosedFormModel, RunContext
from jmf.errors import ConfigError


class _Bucket(NamedTuple):
    """Rows of one padded width ``L``, in chunks of ``C`` rows."""

    rows: jax.Array   # [n_chunks, C] int32 row ids; the row count pads (their results are dropped)
    cols: jax.Array   # [n_chunks, C, L] int32 column ids; 0 pads
    conf: jax.Array   # [n_chunks, C, L] float32 confidence c_ui = α r_ui; 0 pads


def _bucketize(csr: sp.csr_matrix, alpha: float, dim: int, min_width: int, chunk_bytes: int,
               n_shards: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """CSR ``[n, m]`` -> host buckets covering every row (empty rows too: their CG shrinks them, as in ``implicit``).

    Yields ``(rows, cols, conf)`` of each bucket in turn (shapes of :class:`_Bucket`), so that the
    caller can move one to the devices before the next is built: the host holds one bucket at a
    time.  Each bucket's chunk count is padded to a multiple of ``n_shards`` (padding rows: id ``n``, dropped).
    """
    n_rows = csr.shape[0]
    lengths = np.diff(csr.indptr)
    # padded widths on a half-octave grid (2^k and 1.5·2^k): at most 33% padding, 17% on average
    grid = np.unique(np.concatenate([1 << np.arange(40), 3 << np.arange(39)]))
    grid = grid[grid >= min_width]
    widths, row_bucket = np.unique(grid[np.searchsorted(grid, np.maximum(lengths, 1))], return_inverse=True)
    # the bucket of every stored entry, 1 byte each (the grid has < 256 widths): a bucket's entries,
    # in CSR order, are exactly its rows' entries in row-major order
    entry_bucket = np.repeat(row_bucket.astype(np.uint8), lengths)
    for b, L in enumerate(widths.tolist()):
        rows = np.flatnonzero(row_bucket == b).astype(np.int32)
        C = int(min(len(rows), max(1, chunk_bytes // (L * dim * 4))))
        n_chunks = -(-len(rows) // C)
        n_chunks = -(-n_chunks // n_shards) * n_shards
        filled = np.arange(L, dtype=np.int32) < lengths[rows][:, None].astype(np.int32)   # [rows, L]
        entries = entry_bucket == b
        cols = np.zeros((n_chunks * C, L), np.int32)
        cols[:len(rows)][filled] = csr.indices[entries]
        conf = np.zeros((n_chunks * C, L), np.float32)
        conf[:len(rows)][filled] = alpha * csr.data[entries]
        del filled, entries
        padded_rows = np.full(n_chunks * C, n_rows, np.int32)
        padded_rows[:len(rows)] = rows
        yield padded_rows.reshape(n_chunks, C), cols.reshape(n_chunks, C, L), conf.reshape(n_chunks, C, L)


def _cg_chunk(X, Y, YtY, cg_steps: int, chunk):
    """CG on one chunk's rows: ``[C]`` rows, ``[C, L]`` cols/conf -> updated ``[C, d]`` factors."""
    rows, cols, conf = chunk
    Yc = Y[cols]                                          # [C, L, d], stays in cache for the whole CG
    weight = jnp.where(conf > 0, conf - 1.0, 0.0)         # c - 1 on observed pairs, 0 on padding

    def apply_a(P):                                       # (YᵀY + λI + Σ (c-1) y yᵀ) p, row by row
        return P @ YtY + jnp.einsum("cl,cld->cd", weight * jnp.einsum("cld,cd->cl", Yc, P), Yc)

    x = X.at[rows].get(mode="fill", fill_value=0.0)      # [C, d]
    # r = b - A x with b = Σ c y, in one pass over Yc: Σ (c - (c-1) y·x) y - (YᵀY + λI) x
    r = jnp.einsum("cl,cld->cd", conf - weight * jnp.einsum("cld,cd->cl", Yc, x), Yc) - x @ YtY
    rsold = (r * r).sum(1)

    def body(_, carry):
        x, r, p, rsold = carry
        Ap = apply_a(p)
        alpha = rsold / jnp.maximum((p * Ap).sum(1), 1e-20)
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * Ap
        rsnew = (r * r).sum(1)
        p = r + (rsnew / jnp.maximum(rsold, 1e-20))[:, None] * p
        return x, r, p, rsnew

    x, *_ = jax.lax.fori_loop(0, cg_steps, body, (x, r, r, rsold))
    return x


@partial(jax.jit, static_argnames=("reg",))
def _gram(Y, reg: float):
    """``YᵀY + λI`` ``[d, d]``."""
    return Y.T @ Y + reg * jnp.eye(Y.shape[1], dtype=Y.dtype)


@partial(jax.jit, static_argnames=("cg_steps", "mesh"))
def _cg_bucket(X, Y, YtY, bucket: _Bucket, cg_steps: int, mesh: Mesh | None):
    """New factors ``[n_chunks, C, d]`` of one bucket's rows (split over ``mesh`` like the bucket)."""
    def walk(X, Y, YtY, rows, cols, conf):
        return jax.lax.map(partial(_cg_chunk, X, Y, YtY, cg_steps), (rows, cols, conf))   # [chunks, C, d]

    if mesh is not None:
        axis = mesh.axis_names[0]
        walk = jax.shard_map(walk, mesh=mesh, in_specs=(P(), P(), P(), P(axis), P(axis), P(axis)),
                             out_specs=P(axis), check_vma=False)
    return walk(X, Y, YtY, *bucket)


@partial(jax.jit, static_argnames=("mesh",), donate_argnums=0)
def _scatter(X, rows: tuple[jax.Array, ...], new: tuple[jax.Array, ...], mesh: Mesh | None):
    """``X`` with ``X[rows[b]] = new[b]`` for every bucket ``b`` (padding rows dropped), in place."""
    for r, x in zip(rows, new):
        X = X.at[r.reshape(-1)].set(x.reshape(-1, X.shape[1]), mode="drop")
    if mesh is not None:  # keep the factors replicated: the next half-epoch compiles for the same layout
        X = jax.lax.with_sharding_constraint(X, NamedSharding(mesh, P()))
    return X


def _cg_half_epoch(X, Y, *buckets: _Bucket, reg: float, cg_steps: int, mesh: Mesh | None = None):
    """Update every row of ``X`` ``[n, d]`` given ``Y`` ``[m, d]`` and the rows' buckets (see :func:`_bucketize`).

    ``X`` is donated.  With ``mesh`` (1-D), each bucket's chunk axis is split over its devices
    (chunk counts must divide: ``_bucketize(..., n_shards)``); ``X`` and ``Y`` are replicated.
    One jitted CG call per bucket (no collectives: each device keeps its chunks' results; with an
    all-gather in each, the queued calls' rendezvous timed out on a loaded 2-core machine), then
    one call that writes them all into ``X``, rather than one program for the whole half-epoch:
    the results are the same, but XLA compiles one bucket's loop at a time, which keeps its
    compile-time memory to about one bucket's (one program took hundreds of MB more at its
    peak; ``benchmarks/ials_scale.py``).
    """
    YtY = _gram(Y, reg)
    new = tuple(_cg_bucket(X, Y, YtY, bucket, cg_steps, mesh) for bucket in buckets)
    return _scatter(X, tuple(bucket.rows for bucket in buckets), new, mesh)


class ImplicitALS(ClosedFormModel):
    """iALS with a conjugate-gradient solve.

    Args:
      dim: factor size.
      reg: L2 weight λ.
      alpha: confidence scale, ``c_ui = α r_ui`` on observed pairs.
      epochs: ALS sweeps (users then items).
      cg_steps: CG steps per half-epoch.
      init_scale: std of the initial factors.
      min_width: narrowest bucket (rows shorter than this are padded to it).
      chunk_bytes: target size of one chunk's gathered factors ``[C, L, d]`` float32.
      devices: local devices the chunks are split over (0: all; see the module docstring).
    """

    fitted = ("X", "Y")

    def __init__(self, dim: int = 64, reg: float = 0.01, alpha: float = 1.0, epochs: int = 15, cg_steps: int = 3,
                 init_scale: float = 0.01, min_width: int = 2, chunk_bytes: int = 1 << 18, devices: int = 0):
        self.dim, self.reg, self.alpha, self.epochs, self.cg_steps = dim, reg, alpha, epochs, cg_steps
        self.init_scale, self.min_width, self.chunk_bytes = init_scale, min_width, chunk_bytes
        if devices < 0:
            raise ConfigError(f"model.devices: {devices} must be >= 0 (0 = every local device)")
        self.devices = devices

    @cached_property
    def mesh(self) -> Mesh:
        """The 1-D ``chunks`` mesh over ``devices`` local devices."""
        local = jax.local_devices()
        if self.devices > len(local):
            raise ConfigError(f"model.devices: {self.devices} > the {len(local)} local devices")
        return Mesh(np.array(local[:self.devices or len(local)]), ("chunks",))

    def prepare(self, matrix: sp.csr_matrix) -> tuple[tuple[_Bucket, ...], tuple[_Bucket, ...]]:
        """Device buckets of the rows of ``matrix`` ``[U, I]`` (user side) and of its transpose (item side).

        Each host bucket goes straight to its chunk-sharded place (no single-device copy first, whose
        resharding would compile one program per array shape) and is freed before the next is built.
        """
        csr = matrix.tocsr().astype(np.float32, copy=False)   # no copy of a float32 CSR
        if not csr.has_canonical_format:
            csr = csr.copy()   # sum_duplicates works in place: leave the caller's matrix alone
            csr.sum_duplicates()
        if (csr.data <= 0).any():
            raise ConfigError("model=ials: training values must be positive (confidence = alpha * value)")
        split = NamedSharding(self.mesh, P("chunks"))

        def side(m: sp.csr_matrix) -> tuple[_Bucket, ...]:
            return tuple(_Bucket(*(jax.device_put(a, split) for a in bucket)) for bucket in _bucketize(
                m, self.alpha, self.dim, self.min_width, self.chunk_bytes, self.mesh.size))

        return side(csr), side(csr.T.tocsr())

    def init_factors(self, n_users: int, n_items: int, seed: int):
        key_u, key_i = jax.random.split(jax.random.key(seed))
        return self.replicate(self.init_scale * jax.random.normal(key_u, (n_users, self.dim)),
                              self.init_scale * jax.random.normal(key_i, (n_items, self.dim)))

    def replicate(self, *arrays):
        """``arrays`` placed on every device of :attr:`mesh` (the factors' layout)."""
        # from the host: a single-device array's move to every device would compile a program
        return tuple(jax.device_put(np.asarray(a, np.float32), NamedSharding(self.mesh, P())) for a in arrays)

    def epoch(self, X, Y, user_side, item_side):
        X = _cg_half_epoch(X, Y, *user_side, reg=self.reg, cg_steps=self.cg_steps, mesh=self.mesh)
        Y = _cg_half_epoch(Y, X, *item_side, reg=self.reg, cg_steps=self.cg_steps, mesh=self.mesh)
        return X, Y

    def fit(self, split: SplitData, ctx: RunContext | None = None) -> dict[str, float]:
        user_side, item_side = self.prepare(split.train)
        X, Y = self.init_factors(*split.train.shape, ctx.seed if ctx is not None else 0)
        start = time.perf_counter()
        for _ in range(self.epochs):
            X, Y = self.epoch(X, Y, user_side, item_side)
        X.block_until_ready()
        self.X, self.Y = X, Y
        return {"train/epochs": float(self.epochs), "train/fit_seconds": time.perf_counter() - start}

    def score_tables(self) -> tuple[jax.Array, jax.Array, None]:
        return self.X, self.Y, None

    def score(self, users: jax.Array) -> jax.Array:
        return self.X[users] @ self.Y.T

    def score_new(self, hist) -> tuple[np.ndarray, np.ndarray]:
        """Fold-in: the exact iALS user solve of a new user's CF row (:func:`jmf.models.foldin.implicit_fold_in`)."""
        from jmf.models.foldin import implicit_fold_in, rows_present

        Y = np.asarray(self.Y)
        x = implicit_fold_in(Y, hist.cf, self.reg, self.alpha, scale_values=True)
        return x @ Y.T, rows_present(hist.cf)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.asarray((self.X[users] * self.Y[items]).sum(-1))

    @property
    def user_factors(self) -> np.ndarray:
        return np.asarray(self.X)

    @property
    def item_factors(self) -> np.ndarray:
        return np.asarray(self.Y)
