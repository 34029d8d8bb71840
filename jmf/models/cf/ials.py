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
eight times per half-epoch).  One half-epoch is one ``jax.jit`` call per side; it compiles
once per matrix (one while loop per bucket, about a second each).  (A whole Cholesky
epoch in one jit hung in the CPU LAPACK call on this machine; CG has no such call.)

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
               n_shards: int = 1) -> tuple[_Bucket, ...]:
    """CSR ``[n, m]`` -> buckets covering every row (empty rows too: their CG shrinks them, as in ``implicit``).

    Each bucket's chunk count is padded to a multiple of ``n_shards`` (padding rows: id ``n``, dropped).
    """
    n_rows = csr.shape[0]
    lengths = np.diff(csr.indptr)
    # padded widths on a half-octave grid (2^k and 1.5·2^k): at most 33% padding, 17% on average
    grid = np.unique(np.concatenate([1 << np.arange(40), 3 << np.arange(39)]))
    grid = grid[grid >= min_width]
    width = grid[np.searchsorted(grid, np.maximum(lengths, 1))]
    buckets = []
    for L in np.unique(width):
        rows = np.flatnonzero(width == L).astype(np.int32)
        C = int(min(len(rows), max(1, chunk_bytes // (L * dim * 4))))
        n_chunks = -(-len(rows) // C)
        n_chunks = -(-n_chunks // n_shards) * n_shards
        n_slots = lengths[rows]
        cols = np.zeros((n_chunks * C, L), np.int32)
        conf = np.zeros((n_chunks * C, L), np.float32)
        slot_row = np.repeat(np.arange(len(rows)), n_slots)
        slot = np.arange(n_slots.sum()) - np.repeat(np.cumsum(n_slots) - n_slots, n_slots)
        src = np.repeat(csr.indptr[rows], n_slots) + slot
        cols[slot_row, slot] = csr.indices[src]
        conf[slot_row, slot] = alpha * csr.data[src]
        padded_rows = np.full(n_chunks * C, n_rows, np.int32)
        padded_rows[:len(rows)] = rows
        buckets.append(_Bucket(jnp.asarray(padded_rows.reshape(n_chunks, C)),
                               jnp.asarray(cols.reshape(n_chunks, C, L)), jnp.asarray(conf.reshape(n_chunks, C, L))))
    return tuple(buckets)


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


def _cg_half_epoch(X, Y, *buckets: _Bucket, reg: float, cg_steps: int, mesh: Mesh | None = None):
    """Update every row of ``X`` ``[n, d]`` given ``Y`` ``[m, d]`` and the rows' buckets (see :func:`_bucketize`).

    With ``mesh`` (1-D), each bucket's chunk axis is split over its devices (chunk counts must
    divide: ``_bucketize(..., n_shards)``); ``X`` and ``Y`` are replicated.
    """
    YtY = Y.T @ Y + reg * jnp.eye(Y.shape[1], dtype=Y.dtype)
    out = X

    def walk(X, Y, YtY, rows, cols, conf):
        return jax.lax.map(partial(_cg_chunk, X, Y, YtY, cg_steps), (rows, cols, conf))   # [chunks, C, d]

    if mesh is not None:
        axis = mesh.axis_names[0]
        walk = jax.shard_map(walk, mesh=mesh, in_specs=(P(), P(), P(), P(axis), P(axis), P(axis)),
                             out_specs=P(axis), check_vma=False)
    for bucket in buckets:
        x = walk(X, Y, YtY, *bucket)
        out = out.at[bucket.rows.reshape(-1)].set(x.reshape(-1, X.shape[1]), mode="drop")
    if mesh is not None:  # keep the factors replicated: the next half-epoch compiles for the same layout
        out = jax.lax.with_sharding_constraint(out, NamedSharding(mesh, P()))
    return out


_cg_jit = jax.jit(_cg_half_epoch, static_argnames=("reg", "cg_steps", "mesh"), donate_argnums=0)


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
        """Device buckets of the rows of ``matrix`` ``[U, I]`` (user side) and of its transpose (item side)."""
        csr = matrix.tocsr().astype(np.float32)
        csr.sum_duplicates()
        if (csr.data <= 0).any():
            raise ConfigError("model=ials: training values must be positive (confidence = alpha * value)")
        sides = (csr, csr.T.tocsr())
        mesh = self.mesh
        split = NamedSharding(mesh, P("chunks"))
        return tuple(tuple(jax.device_put(b, split) for b in _bucketize(
            m, self.alpha, self.dim, self.min_width, self.chunk_bytes, mesh.size)) for m in sides)

    def init_factors(self, n_users: int, n_items: int, seed: int):
        key_u, key_i = jax.random.split(jax.random.key(seed))
        return self.replicate(self.init_scale * jax.random.normal(key_u, (n_users, self.dim)),
                              self.init_scale * jax.random.normal(key_i, (n_items, self.dim)))

    def replicate(self, *arrays):
        """``arrays`` placed on every device of :attr:`mesh` (the factors' layout)."""
        return tuple(jax.device_put(jnp.asarray(a), NamedSharding(self.mesh, P())) for a in arrays)

    def epoch(self, X, Y, user_side, item_side):
        X = _cg_jit(X, Y, *user_side, reg=self.reg, cg_steps=self.cg_steps, mesh=self.mesh)
        Y = _cg_jit(Y, X, *item_side, reg=self.reg, cg_steps=self.cg_steps, mesh=self.mesh)
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
