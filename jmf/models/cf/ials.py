"""Weighted implicit ALS (Hu, Koren & Volinsky 2008) with a batched conjugate-gradient solve.

Objective: ``Σ_{u,i} c_ui (p_ui - x_u·y_i)² + λ(‖X‖² + ‖Y‖²)`` with ``p_ui = 1`` on observed
pairs, ``c_ui = α r_ui`` there and ``1`` elsewhere — the same formulation as the
``implicit`` package, so the two can be compared on equal terms.  Each half-epoch solves
``(YᵀY + λI + Σ_{i∈I_u} (c_ui-1) y_i y_iᵀ) x_u = Σ_{i∈I_u} c_ui y_i`` for all users at once
with ``cg_steps`` conjugate-gradient steps warm-started at the current ``x_u`` (Takács et
al. 2011), as ``implicit`` does.

Layout (what makes it fast on a CPU).  Rows are grouped by length into groups of padded
width ``L`` (powers of 2), and each group into chunks of ``C`` rows whose gathered factors
``Y[cols]`` ``[C, L, d]`` take about ``chunk_bytes`` (a quarter megabyte, within an L2 cache).
A chunk runs its whole CG — gather once, then 2 batched mat-vecs per step — while its
factors stay in cache, and a ``fori_loop`` walks the chunks.  Measured on 2 CPU cores and 1.2M
interactions (``benchmarks/speed_cf.py``), this is 10x faster per epoch than one
``segment_sum`` over all nonzeros per CG step (scatter-adds of ``[nnz, d]``) and 2x faster
than the same groups without chunks.  Rows longer than one chunk holds (``L > chunk_bytes / 4d``:
the popular items) are solved one at a time, each CG pass walking the row in chunk-sized pieces.
(A whole Cholesky epoch in one jit hung in the CPU LAPACK call on this machine; CG has no such call.)

Memory (``benchmarks/ials_scale.py``, 10M interactions, d=64: peak RSS 1.51 GB with 2 devices before
this layout, ``implicit`` 0.51 GB).  Where it went, above the loaded matrix: padded host and device
buckets ``[rows, L]`` of columns and confidences (0.2 GB), the factors once per device (0.3 GB for 2),
the per-bucket results held until one scatter wrote them all (a second ``X``), a copy of ``X`` to form
``XᵀX`` (a slice as a dot operand), and one compiled program per bucket shape and side (about 5 MB
resident each, and 363 s of compiling).  Now: the factors are one array ``W = [X; Y]`` and the two
sides' CSRs one joint CSR (user rows index ``W``'s item rows and back), read in place by the chunks
(no padded copies; one ``[1]`` confidence when all values are equal); each width group's call donates
``W`` and writes every chunk's rows as soon as they are solved (a row's solve reads only its own old row
and the other side); ``YᵀY`` is summed over row blocks; and as both sides share ``W`` and the CSR, they
share one program per ``(L, C)`` (traced chunk offsets and counts): about a dozen programs in all.

Devices.  Each group's chunks are split over a 1-D mesh of ``devices`` local devices
(``jax.shard_map``; ``W`` replicated), every device solves its own rows into its own replica, and one
``psum`` per half-epoch makes the replicas equal again.  The rows are independent, so the result does
not depend on the device count; but every device holds a whole ``W`` (and CSR), so on a CPU more
devices cost memory for speed.  On a CPU the chunk ops are small, and what they cost is largely the
synchronisation of XLA's intra-op thread pool; one CPU device per core, each running its chunks on its
own thread, removes it::

    XLA_FLAGS="--xla_force_host_platform_device_count=$(nproc) --xla_cpu_multi_thread_eigen=false" \
        jmf-train model=ials

(``benchmarks/speed_cf.py`` runs iALS this way; ``--ials-xla-flags ''`` runs it on XLA's
default single device for comparison; ``benchmarks/ials_scale.py`` runs one device,
``--jmf-devices``.)  Models with large matmuls (JMF) want the opposite setting, so this is a
per-run choice, not a package default.
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


class _Side(NamedTuple):
    """Both sides' rows on the devices, as rows of the joint factors ``W = [X; Y]`` ``[U + I, d]``: the joint
    CSR (user ``u``'s entries point at ``W`` rows ``U + i``, item ``i``'s, row ``U + i``, at rows ``u``; not
    padded: a chunk reads its rows' entries in place) and the row ids, grouped by padded width ``L`` and split
    over the devices.  ``plan``: per side, where each group lies.  Sharing one ``W`` and one CSR, the two
    sides run the same compiled programs (one per width, not one per width and side)."""

    indptr: jax.Array    # [U + I + 1] int32, replicated
    indices: jax.Array   # [2 nnz] int32 rows of W, replicated
    conf: jax.Array      # [2 nnz] float32 confidence c_ui = α r_ui, replicated; [1] when all are equal
    rows: jax.Array      # [devices * R] int32 row ids by group, one [R] slice per device; id U + I pads
    plan: tuple = ()     # per side: ((L, C, first, chunks per device), ...); C = 0: long rows
    n_users: int = 0     # U: W's rows [0, U) are X, [U, U + I) are Y


_GRID = 1 << np.arange(31)   # padded widths: powers of 2 (few programs; see _layout)


def _layout(lengths: np.ndarray, sides: tuple[slice, ...], dim: int, min_width: int, chunk_bytes: int,
            n_dev: int):
    """Row ids grouped by padded width -> (``[n_dev * R]`` int32 rows, plan per side) (see :class:`_Side`).

    Widths are powers of 2 (padding: at most 2x, about 1.4x on these matrices; a half-octave grid padded
    1.2x but took twice the programs, each about 5 MB resident once compiled), up to ``seg``, the widest row a chunk holds
    (``[1, seg, d]`` factors take ``chunk_bytes``); longer rows are walked one at a time in pieces of ``seg``
    (``C = 0``), so no temporary grows with the longest row.  A group of width ``L`` is cut into chunks of
    ``C = chunk_bytes / (L d 4)`` rows, its chunk count padded to a multiple of ``n_dev`` (padding: id ``N``).
    """
    seg = max(min_width, chunk_bytes // (dim * 4))
    grid = _GRID[(_GRID >= min_width) & (_GRID <= seg)]
    width = np.where(lengths > seg, 0, grid[np.minimum(np.searchsorted(grid, np.maximum(lengths, 1)), len(grid) - 1)])
    per_dev, plans, first = [[] for _ in range(n_dev)], [], 0
    for side in sides:
        order = (side.start + np.argsort(width[side], kind="stable")).astype(np.int32)   # long rows first
        plan = []
        for L in np.unique(width[side]).tolist():
            rows = order[width[order] == L]
            C = 1 if L == 0 else max(1, chunk_bytes // (L * dim * 4))
            chunks = -(-len(rows) // (C * n_dev))                   # per device
            padded = np.full(chunks * C * n_dev, len(lengths), np.int32)
            padded[:len(rows)] = rows
            for d, part in enumerate(padded.reshape(n_dev, chunks * C)):
                per_dev[d].append(part)
            plan.append((seg if L == 0 else L, 0 if L == 0 else C, first, chunks))
            first += chunks * C
        plans.append(tuple(plan))
    return np.concatenate([np.concatenate(p) for p in per_dev]), tuple(plans)


def _cg(x, r, apply_a, cg_steps: int):
    """``cg_steps`` CG steps on rows ``x`` ``[C, d]`` from residual ``r = b - A x``; ``apply_a``: ``P -> A P``."""
    def body(_, carry):
        x, r, p, rsold = carry
        Ap = apply_a(p)
        alpha = rsold / jnp.maximum((p * Ap).sum(1), 1e-20)
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * Ap
        rsnew = (r * r).sum(1)
        p = r + (rsnew / jnp.maximum(rsold, 1e-20))[:, None] * p
        return x, r, p, rsnew

    return jax.lax.fori_loop(0, cg_steps, body, (x, r, r, (r * r).sum(1)))[0]


def _entries(side: _Side, start, length, offset, L: int):
    """Columns and confidences ``[C, L]`` of rows starting at ``start`` ``[C]``, from entry ``offset`` on (0 pads)."""
    pos = (start + offset)[:, None] + jnp.arange(L, dtype=jnp.int32)
    filled = (offset + jnp.arange(L, dtype=jnp.int32))[None, :] < length[:, None]
    cols = side.indices.at[pos].get(mode="clip")
    conf = side.conf.at[pos].get(mode="clip") if side.conf.shape[0] > 1 else side.conf[0]
    return cols, jnp.where(filled, conf, 0.0)


def _cg_chunk(W, YtY, side: _Side, rows, L: int, cg_steps: int):
    """CG on one chunk's rows ``[C]`` of ``W`` (each at most ``L`` entries) -> their new ``[C, d]`` factors."""
    start = side.indptr.at[rows].get(mode="clip")                # padding row N: start 2 nnz, length 0
    cols, conf = _entries(side, start, side.indptr.at[rows + 1].get(mode="clip") - start, 0, L)
    Yc = W[cols]                                          # [C, L, d], stays in cache for the whole CG
    weight = jnp.where(conf > 0, conf - 1.0, 0.0)         # c - 1 on observed pairs, 0 on padding

    def apply_a(P):                                       # (YᵀY + λI + Σ (c-1) y yᵀ) p, row by row
        return P @ YtY + jnp.einsum("cl,cld->cd", weight * jnp.einsum("cld,cd->cl", Yc, P), Yc)

    x = W.at[rows].get(mode="fill", fill_value=0.0)      # [C, d]
    # r = b - A x with b = Σ c y, in one pass over Yc: Σ (c - (c-1) y·x) y - (YᵀY + λI) x
    r = jnp.einsum("cl,cld->cd", conf - weight * jnp.einsum("cld,cd->cl", Yc, x), Yc) - x @ YtY
    return _cg(x, r, apply_a, cg_steps)


def _cg_long(W, YtY, side: _Side, rows, seg: int, cg_steps: int):
    """CG on one row ``rows`` ``[1]`` longer than a chunk: each pass walks its entries in pieces of ``seg``."""
    start = side.indptr.at[rows].get(mode="clip")
    length = side.indptr.at[rows + 1].get(mode="clip") - start

    def wsum(v, with_conf: bool):                         # Σ (c·[with_conf] - (c-1) y·v) y over the row
        def piece(s, acc):
            cols, conf = _entries(side, start, length, s * seg, seg)
            Yc = W[cols]                                  # [1, seg, d]
            coef = jnp.where(conf > 0, conf - 1.0, 0.0) * jnp.einsum("cld,cd->cl", Yc, v)
            return acc + jnp.einsum("cl,cld->cd", (conf - coef) if with_conf else -coef, Yc)
        return jax.lax.fori_loop(0, (length[0] + seg - 1) // seg, piece, jnp.zeros_like(v))

    x = W.at[rows].get(mode="fill", fill_value=0.0)
    return _cg(x, wsum(x, True) - x @ YtY, lambda P: P @ YtY - wsum(P, False), cg_steps)


@partial(jax.jit, static_argnames=("rows", "reg"))
def _gram(W, rows: tuple[int, int], reg: float, block: int = 1 << 13):
    """``YᵀY + λI`` ``[d, d]`` of ``Y = W[rows[0]:rows[1]]``, summed over blocks of ``block`` rows: a slice of
    ``W`` as one operand would be a copy of the whole side (0.13 GB of ``X`` at 500 000 x 64)."""
    lo, hi = rows
    whole = (hi - lo) // block

    def add(b, acc):
        Y = jax.lax.dynamic_slice_in_dim(W, lo + b * block, block)
        return acc + Y.T @ Y
    acc = reg * jnp.eye(W.shape[1], dtype=W.dtype)
    acc = jax.lax.fori_loop(0, whole, add, acc) if whole else acc
    Y = W[lo + whole * block:hi]
    return acc + Y.T @ Y


@partial(jax.jit, static_argnames=("L", "C", "cg_steps", "mesh"), donate_argnums=0)
def _cg_group(W, YtY, side: _Side, first, chunks, L: int, C: int, cg_steps: int, mesh: Mesh):
    """``W`` with the rows of one width group (``chunks`` chunks of ``C`` rows from ``first`` of each device's
    row slice) solved, in place: each chunk's new rows are written as soon as they are solved (a row's solve
    reads only its own old row and the other side's), so no copy of ``W`` or of the group's results is held.
    ``first`` and ``chunks`` are traced: one program per ``(L, C)``, whatever the side and the row counts."""
    solve = partial(_cg_long, seg=L) if C == 0 else partial(_cg_chunk, L=L)

    def walk(W, YtY, indptr, indices, conf, rows, first, chunks):
        side = _Side(indptr, indices, conf, rows)

        def body(k, W):
            r = jax.lax.dynamic_slice(rows, (first + k * max(C, 1),), (max(C, 1),))
            return W.at[r].set(solve(W, YtY, side, r, cg_steps=cg_steps), mode="drop")
        return jax.lax.fori_loop(0, chunks, body, W)

    axis = mesh.axis_names[0]
    walk = jax.shard_map(walk, mesh=mesh, in_specs=(P(),) * 5 + (P(axis), P(), P()), out_specs=P(),
                         check_vma=False)
    return walk(W, YtY, *side[:4], first, chunks)


@partial(jax.jit, static_argnames=("mesh",), donate_argnums=0)
def _merge(W, rows, mesh: Mesh):
    """Replicas of ``W`` made equal again: each device's rows from that device (``psum`` of the owned rows)."""
    def merge(W, rows):
        mine = jnp.zeros(W.shape[0], bool).at[rows].set(True, mode="drop")
        return jax.lax.psum(jnp.where(mine[:, None], W, 0.0), mesh.axis_names[0])

    return jax.shard_map(merge, mesh=mesh, in_specs=(P(), P(mesh.axis_names[0])), out_specs=P(),
                         check_vma=False)(W, rows)


def _cg_half_epoch(W, side: _Side, which: int, *, reg: float, cg_steps: int, mesh: Mesh):
    """Update the rows of one side of ``W = [X; Y]`` (``which``: 0 users, 1 items) given the other, in place.

    ``W`` is donated.  One jitted call per width group, each walking its chunks and writing their rows into
    ``W`` as it goes.  With a mesh of several devices (``W`` replicated), every device solves its own rows
    into its own replica, and one ``psum`` at the end gives every replica all the rows.
    """
    YtY = _gram(W, (side.n_users, W.shape[0]) if which == 0 else (0, side.n_users), reg)
    for L, C, first, chunks in side.plan[which]:
        if chunks:
            W = _cg_group(W, YtY, _Side(*side[:4]), np.int32(first), np.int32(chunks), L=L, C=C,
                          cg_steps=cg_steps, mesh=mesh)
    return _merge(W, side.rows, mesh) if mesh.size > 1 else W


@partial(jax.jit, donate_argnums=0)
def _write(W, block, at):
    """``W`` with ``block`` written at row ``at``, in place."""
    return jax.lax.dynamic_update_slice(W, block, (at, 0))


class ImplicitALS(ClosedFormModel):
    """iALS with a conjugate-gradient solve.

    Args:
      dim: factor size.
      reg: L2 weight λ.
      alpha: confidence scale, ``c_ui = α r_ui`` on observed pairs.
      epochs: ALS sweeps (users then items).
      cg_steps: CG steps per half-epoch.
      init_scale: std of the initial factors.
      min_width: narrowest padded width (rows shorter than this are padded to it).
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

    def prepare(self, matrix: sp.csr_matrix) -> _Side:
        """The :class:`_Side` of ``matrix`` ``[U, I]``: its rows (users) and its transpose's (items), joint.

        What goes to the devices is the joint CSR itself (``W`` rows as indices, ``α r``, int32 row pointers)
        and the row ids by width group: about ``16 nnz + 8 (U + I)`` bytes per device, ``8 nnz + 8 (U + I)``
        when all values are equal (binary feedback: one confidence, not ``2 nnz``).  The host temporaries
        (the transpose, then the joint indices, then the joint ``α r``) are freed as soon as placed.
        """
        csr = matrix.tocsr().astype(np.float32, copy=False)   # no copy of a float32 CSR
        if not csr.has_canonical_format:
            csr = csr.copy()   # sum_duplicates works in place: leave the caller's matrix alone
            csr.sum_duplicates()
        if (csr.data <= 0).any():
            raise ConfigError("model=ials: training values must be positive (confidence = alpha * value)")
        if 2 * csr.nnz >= 2**31:
            raise ConfigError(f"model=ials: {csr.nnz} training values, more than int32 row pointers hold")
        (n_users, n_items), nnz = csr.shape, csr.nnz
        item = csr.T.tocsr()
        rows, plan = _layout(np.concatenate([np.diff(csr.indptr), np.diff(item.indptr)]),
                             (slice(0, n_users), slice(n_users, n_users + n_items)),
                             self.dim, self.min_width, self.chunk_bytes, self.mesh.size)
        everywhere = NamedSharding(self.mesh, P())

        def put(fill, dtype):   # a joint [2 nnz] array made on the host, placed, and freed before the next
            host = np.empty(2 * nnz, dtype)
            fill(host[:nnz], host[nnz:])
            return jax.block_until_ready(jax.device_put(host, everywhere))

        indices = put(lambda u, i: (np.add(csr.indices, n_users, out=u), np.copyto(i, item.indices)), np.int32)
        if nnz == 0 or csr.data.min() == csr.data.max():   # binary feedback: one confidence for all, no [2 nnz]
            conf = jax.device_put(np.full(1, self.alpha * (csr.data[0] if nnz else 1.0), np.float32), everywhere)
        else:
            conf = put(lambda u, i: (np.multiply(csr.data, self.alpha, out=u),
                                     np.multiply(item.data, self.alpha, out=i)), np.float32)
        indptr = np.concatenate([csr.indptr[:-1], nnz + item.indptr]).astype(np.int32)
        return _Side(jax.device_put(indptr, everywhere), indices, conf,
                     jax.device_put(rows, NamedSharding(self.mesh, P("chunks"))), plan, n_users)

    def init_factors(self, n_users: int, n_items: int, seed: int):
        """``W = [X; Y]`` ``[U + I, d]`` drawn from ``init_scale`` x a normal, on every device of the mesh."""
        key_u, key_i = jax.random.split(jax.random.key(seed))
        return self.place([self.init_scale * jax.random.normal(key_u, (n_users, self.dim)),
                           self.init_scale * jax.random.normal(key_i, (n_items, self.dim))], n_users + n_items)

    def place(self, blocks, n_rows: int):
        """``W`` ``[n_rows, d]`` on every device of :attr:`mesh` from ``blocks`` of consecutive rows (host arrays,
        or an iterator of them: each is written in place and dropped before the next is asked for)."""
        everywhere = NamedSharding(self.mesh, P())
        W = jax.jit(partial(jnp.zeros, (n_rows, self.dim), jnp.float32), out_shardings=everywhere)()
        at = 0
        for block in blocks:
            # from the host: a single-device array's move to every device would compile a program
            W = jax.block_until_ready(_write(W, jax.device_put(np.asarray(block, np.float32), everywhere), np.int32(at)))
            at += len(block)
            del block
        return W

    def epoch(self, W, side: _Side):
        """One sweep (users, then items) of ``W = [X; Y]``, donated."""
        for which in (0, 1):
            W = _cg_half_epoch(W, side, which, reg=self.reg, cg_steps=self.cg_steps, mesh=self.mesh)
        return W

    def fit(self, split: SplitData, ctx: RunContext | None = None) -> dict[str, float]:
        side = self.prepare(split.train)
        n_users = side.n_users
        W = self.init_factors(*split.train.shape, ctx.seed if ctx is not None else 0)
        start = time.perf_counter()
        for _ in range(self.epochs):
            W = self.epoch(W, side)
        W.block_until_ready()
        del side
        self.X, self.Y = W[:n_users], W[n_users:]
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
