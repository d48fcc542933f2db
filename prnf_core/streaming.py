r"""Training rows streamed from a dataset store chunk by chunk, under a memory cap.

:func:`prnf_core.train.fit` loads a store's training rows whole. With
``TrainConfig.memory_cap_mb`` set and rows that would take more than the cap
(:attr:`StreamPlan.data_bytes`: every row, training and validation, in the model's dtype), it
streams them through this module instead:

* **Layout.** The rows are those of the in-memory path: ``(x0, xT)`` pairs, or the
  ``(x0, [t, θ...], X_t)`` rows of :meth:`~prnf_core.dataset.Dataset.conditioned_tuples`
  (particle-major), read chunk by chunk with
  :func:`~prnf_core.dataset.read_verified_chunk` (every read checked against its checksum).
  The validation split is the in-memory one (:func:`split_mask` equals
  :func:`prnf_core.train.split_indices` on any range of rows), so no validation row ever
  trains, as when the data fit.
* **One preparatory pass** (:meth:`ChunkStream.prepare`) reads every chunk once and keeps
  bounded, seeded subsamples: the validation rows (at most :data:`VAL_SHARE` of the cap, spread
  over all chunks in proportion to their validation rows; without a validation split, a sample
  of the training rows, as the in-memory path validates on the training rows), the rows the
  normalization is fitted on (at most :data:`STATS_ROWS`, and never more than the shuffle
  buffer holds: means, spreads, time scaling and the atoms' width come from this uniform
  subsample of the training rows instead of all of them; at 10^6 rows their relative error is
  about 10^-3 of a spread) and the x0 rows of the training domain (:data:`DOMAIN_ROWS`
  particles, plus the exact per-coordinate minimum and maximum over all of them).
* **Each epoch** (:meth:`ChunkStream.batches`) visits the chunks in an order seeded by
  ``(seed, epoch)``, keeps a shuffle buffer (a pool of rows preallocated once) filled with as
  many chunks as fit, and yields minibatches drawn uniformly without replacement from the
  whole pool, so one batch mixes rows of every chunk held; a drawn row leaves the pool, and a
  new chunk is read as soon as the pool has room for it. Every training row is yielded exactly
  once per epoch and every batch but the last has ``batch`` rows, so an epoch has as many steps
  as in memory. Deterministic given the seed (and the cap, which sets the pool's size).

Memory. The cap bounds what the data take: the validation rows, the pool, the read of one
chunk (its raw arrays and their rows; :func:`chunk_read_bytes`) and the batches drawn from it
take at most ``1 - HEADROOM`` of it, the rest is left to what this count does not see
(:data:`HEADROOM`). :attr:`ChunkStream.peak_bytes` records the largest sum of these that was
held, measured from the arrays' sizes. A cap that cannot hold one chunk plus a batch in the
pool is refused (:class:`~prnf_core.errors.ConfigError`, naming ``training.memory_cap_mb`` and
the minimum).
The model, the optimizer and the activations of a step come on top.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from prnf_core.dataset import Dataset, read_verified_chunk
from prnf_core.errors import ConfigError

__all__ = ["DOMAIN_ROWS", "HEADROOM", "MB", "SPLIT_BLOCK", "STATS_ROWS", "VAL_SHARE", "ChunkStream",
           "Prepared", "RowLayout", "StreamPlan", "chunk_read_bytes", "plan_stream",
           "split_mask"]

#: Rows per block of the validation split (:func:`prnf_core.train.split_indices`).
SPLIT_BLOCK = 100

#: Bytes per MB of ``TrainConfig.memory_cap_mb``.
MB = 1_000_000

#: Share of the cap the validation rows may take.
VAL_SHARE = 0.25

#: Share of the cap left to what the count of held bytes does not see: the decoder's buffers,
#: index arrays, copies made while a chunk enters the pool, the allocator's slack. Measured
#: (benchmarks/bench_streaming.py, 50 MB cap): the process grew ~7 % of the cap beyond the
#: counted bytes plus what the same training takes on one chunk in memory.
HEADROOM = 0.15

#: At most this many training rows fit the normalization (fewer if the pool is smaller).
STATS_ROWS = 1_000_000

#: x0 rows (particles) the training domain is fitted on (as many as it subsamples itself).
DOMAIN_ROWS = 40_000

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]


def split_mask(start: int, stop: int, n: int, val_fraction: float, seed: int) -> np.ndarray:
    """Boolean per row of ``start:stop`` (of ``n`` rows): in the validation split of
    :func:`prnf_core.train.split_indices` (same blocks, same seeded permutations).

    >>> from prnf_core.train import split_indices
    >>> val = split_indices(250, 0.2, 3)[1]
    >>> bool(np.array_equal(np.flatnonzero(split_mask(40, 230, 250, 0.2, 3)) + 40,
    ...                     val[(val >= 40) & (val < 230)]))
    True
    """
    mask = np.zeros(stop - start, dtype=bool)
    if stop <= start:
        return mask
    for block in range(start // SPLIT_BLOCK, (stop - 1) // SPLIT_BLOCK + 1):
        first = block * SPLIT_BLOCK
        size = min(SPLIT_BLOCK, n - first)
        n_val = round(size * val_fraction)
        if not n_val:
            continue
        rows = np.random.default_rng([seed, block]).permutation(size)[:n_val] + first
        rows = rows[(rows >= start) & (rows < stop)]
        mask[rows - start] = True
    return mask


def _val_count(start: int, stop: int, n: int, val_fraction: float) -> int | None:
    """Validation rows of ``start:stop`` when it is made of whole blocks (else None)."""
    if start % SPLIT_BLOCK or (stop % SPLIT_BLOCK and stop != n):
        return None
    total = 0
    for first in range(start, stop, SPLIT_BLOCK):
        total += round(min(SPLIT_BLOCK, n - first) * val_fraction)
    return total


@dataclass(frozen=True)
class RowLayout:
    """What a training row of a store is: ``(x0, xT)`` pairs, or conditioned rows
    ``(x0, [t, θ...], X_t)`` (without the t column when ``drop_t``)."""

    conditioned: bool
    drop_t: bool = False


@dataclass
class StreamPlan:
    """Sizes of a streamed run, from the store's shape alone (nothing read)."""

    path: str
    layout: RowLayout
    dim: int
    cond_dim: int
    times: np.ndarray | None  # the k times of each particle's rows (conditioned rows)
    snapshots: bool  # conditioned rows read from `snapshots` (else from xT)
    chunks: list[tuple[int, int, int]]  # (index, first particle, stop)
    n_rows: int
    val_fraction: float
    split_seed: int
    batch: int
    row_bytes: int  # one row in the model's dtype
    store_itemsize: int
    n_params: int
    cap_bytes: int
    n_val_split: int = 0  # rows of the validation split
    val_rows: int = 0  # validation rows kept
    pool_rows: int = 0
    read_bytes: int = 0  # the read of the largest chunk (chunk_read_bytes)

    @property
    def k(self) -> int:
        return 1 if self.times is None else len(self.times)

    @property
    def data_bytes(self) -> int:
        """Every row (training and validation) in the model's dtype: what loading takes."""
        return self.n_rows * self.row_bytes

    @property
    def n_train(self) -> int:
        return self.n_rows - self.n_val_split

    @property
    def streams(self) -> bool:
        """Whether the rows exceed the cap (else they are loaded whole, as without a cap)."""
        return self.data_bytes > self.cap_bytes


def chunk_read_bytes(particles: int, dim: int, k: int, n_params: int, cond_dim: int,
                     store_itemsize: int, row_bytes: int) -> int:
    """Bytes of reading one chunk of ``particles``: its raw arrays (x0, the states, θ), the
    rows built from them (x0 repeated, condition columns, states particle-major) and the same
    rows in the model's dtype, all counted as if held at once (an upper bound)."""
    rows = particles * k
    raw = particles * dim * store_itemsize * (1 + k) + particles * n_params * 8
    built = 0
    if k > 1 or cond_dim:
        built = rows * dim * store_itemsize * 2 + rows * (cond_dim + 1) * 8
    return raw + built + rows * row_bytes


def plan_stream(dataset: Dataset, layout: RowLayout, cond_dim: int, dtype: torch.dtype,
                cap_mb: float, batch_size: int, val_fraction: float,
                split_seed: int) -> StreamPlan:
    """The plan of streaming ``dataset`` under ``cap_mb``: its rows' size and, when they exceed
    the cap, the validation rows kept and the pool's size.

    Raises:
        ConfigError: the cap cannot hold the pool of one chunk plus a batch (next to the
            validation rows it keeps and the read of a chunk); the minimum is named.
    """
    config = dataset.config
    times = None
    snapshots = False
    if layout.conditioned:
        snapshots = bool(config.save_times)
        times = np.asarray(config.save_times if snapshots else [float(config.horizon)],
                           dtype=np.float64)
    k = 1 if times is None else len(times)
    dim = dataset.dim
    itemsize = torch.empty((), dtype=dtype).element_size()
    row_bytes = (2 * dim + cond_dim) * itemsize
    chunks = [(i, *config.chunk_bounds(i)) for i in range(config.n_chunks)]
    n_rows = dataset.n_particles * k
    plan = StreamPlan(
        path=dataset.path, layout=layout, dim=dim, cond_dim=cond_dim, times=times,
        snapshots=snapshots, chunks=chunks, n_rows=n_rows, val_fraction=val_fraction,
        split_seed=split_seed, batch=0, row_bytes=row_bytes,
        store_itemsize=np.dtype(dataset.arrays["x0"].dtype).itemsize,
        n_params=len(dataset.param_names) if layout.conditioned else 0,
        cap_bytes=int(cap_mb * MB))
    plan.n_val_split = sum(round(min(SPLIT_BLOCK, n_rows - first) * val_fraction)
                           for first in range(0, n_rows, SPLIT_BLOCK))
    plan.batch = max(1, min(batch_size, plan.n_train))
    if not plan.streams:
        return plan
    largest = max(stop - start for _, start, stop in chunks)
    plan.read_bytes = chunk_read_bytes(largest, dim, k, plan.n_params, cond_dim,
                                       plan.store_itemsize, row_bytes)
    held = (largest * k + plan.batch) * row_bytes  # the pool must hold a chunk plus a batch
    fixed = held + plan.read_bytes + 2 * plan.batch * row_bytes  # ... next to a read, 2 batches
    val_total = plan.n_val_split or plan.n_train  # no split: validated on training rows
    budget = int(plan.cap_bytes * (1 - HEADROOM))
    val_rows = min(val_total, int(VAL_SHARE * budget) // row_bytes)
    spare = budget - val_rows * row_bytes - plan.read_bytes - 2 * plan.batch * row_bytes
    plan.pool_rows = spare // row_bytes
    if plan.pool_rows * row_bytes < held:
        minimum = min(fixed + val_total * row_bytes, fixed / (1 - VAL_SHARE)) / (1 - HEADROOM)
        raise ConfigError(
            f"training.memory_cap_mb: {cap_mb:g} MB cannot hold the shuffle buffer of one chunk "
            f"({largest * k} rows, {largest * k * row_bytes / MB:.3g} MB) plus a batch "
            f"({plan.batch} rows) next to the read of a chunk and the validation rows; the "
            f"minimum for this dataset and batch_size is {_round_up(minimum / MB):g} MB (or "
            "train with a smaller batch_size, on a store of smaller chunks, or without a cap)")
    plan.val_rows = val_rows
    return plan


def _round_up(value: float) -> float:
    """``value`` rounded up to 3 significant digits (a minimum that is enough as printed)."""
    step = 10.0 ** (math.floor(math.log10(value)) - 2)
    return round(math.ceil(value / step) * step, 12)


@dataclass
class Prepared:
    """What the preparatory pass keeps: validation rows, the normalization's sample of
    training rows (tensors on the CPU in the model's dtype; ``cond`` None without condition
    columns), a sample of the particles' x0 and their exact per-coordinate range."""

    val: Batch
    stats: Batch
    x0_sample: np.ndarray
    x0_min: np.ndarray
    x0_max: np.ndarray


def _quotas(total: int, counts: list[int]) -> list[int]:
    """``min(total, sum(counts))`` split over ``counts`` in proportion, none above its count
    (largest remainders: many small chunks still get their share).

    >>> _quotas(5, [3, 3, 3, 3]), _quotas(10, [1, 2])
    ([2, 1, 1, 1], [1, 2])
    """
    whole = sum(counts)
    total = min(total, whole)
    if not total:
        return [0] * len(counts)
    quotas = [total * c // whole for c in counts]
    order = sorted(range(len(counts)), key=lambda i: (-(total * counts[i] % whole), i))
    for i in order[:total - sum(quotas)]:
        quotas[i] += 1
    return quotas


@dataclass
class ChunkStream:
    """The store's training rows chunk by chunk: the preparatory pass and each epoch's
    minibatches (see the module's docstring). ``check(x0, y, cond)`` validates a chunk's rows
    (numpy, as read; as the in-memory path validates the whole arrays)."""

    plan: StreamPlan
    dtype: torch.dtype
    check: Callable[[np.ndarray, np.ndarray, np.ndarray | None], None] | None = None
    peak_bytes: int = 0  # the largest data held at once (validation, pool, read, batch)
    _pool: Batch | None = field(default=None, repr=False)
    _fixed: int = 0  # bytes held for the whole run (validation rows)

    # -- reading ------------------------------------------------------------------------------
    def _read(self, index: int, start: int, stop: int, extra: int = 0
              ) -> tuple[Batch, np.ndarray, np.ndarray]:
        """Chunk ``index``'s rows as tensors, the validation mask of its rows and its raw x0
        (verified reads). Counts the read's bytes, plus ``extra`` (batches held meanwhile),
        towards :attr:`peak_bytes`."""
        plan = self.plan
        path = plan.path
        x0 = read_verified_chunk(path, "x0", index, start, stop)
        cond = None
        if not plan.layout.conditioned:
            y = read_verified_chunk(path, "xT", index, start, stop)
            x0_rows = x0
        else:
            p, k = stop - start, plan.k
            states = (read_verified_chunk(path, "snapshots", index, start, stop) if plan.snapshots
                      else read_verified_chunk(path, "xT", index, start, stop)[None])
            y = np.ascontiguousarray(states.transpose(1, 0, 2)).reshape(p * k, plan.dim)
            del states
            columns = np.empty((p * k, 1 + plan.n_params), dtype=np.float64)
            columns[:, 0] = np.tile(plan.times, p)
            if plan.n_params:
                theta = read_verified_chunk(path, "theta", index, start, stop)
                columns[:, 1:] = np.repeat(theta.astype(np.float64), k, axis=0)
            cond = columns[:, 1:] if plan.layout.drop_t else columns
            x0_rows = np.repeat(x0, k, axis=0)
        first = start * plan.k
        mask = split_mask(first, first + len(y), plan.n_rows, plan.val_fraction,
                          plan.split_seed)
        if self.check is not None:
            self.check(x0_rows, y, cond)
        rows = tuple(None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(
            self.dtype) for a in (x0_rows, y, cond))
        batch: Batch = (rows[0], rows[1], rows[2])
        self._note(self._held() + extra + chunk_read_bytes(
            stop - start, plan.dim, plan.k, plan.n_params, plan.cond_dim, plan.store_itemsize,
            plan.row_bytes))
        return batch, mask, x0

    def _held(self) -> int:
        pool = 0 if self._pool is None else sum(
            0 if a is None else a.nbytes for a in self._pool)
        return self._fixed + pool

    def _note(self, nbytes: int) -> None:
        self.peak_bytes = max(self.peak_bytes, nbytes)

    # -- the preparatory pass -----------------------------------------------------------------
    def prepare(self, seed: int) -> Prepared:
        """Read every chunk once: the kept validation rows, the normalization's sample, the x0
        sample and range (seeded by ``seed`` and the split seed)."""
        plan = self.plan
        val_counts, train_counts = [], []
        for _, start, stop in plan.chunks:
            first, last = start * plan.k, stop * plan.k
            n_val = _val_count(first, last, plan.n_rows, plan.val_fraction)
            if n_val is None:
                n_val = int(split_mask(first, last, plan.n_rows, plan.val_fraction,
                                       plan.split_seed).sum())
            val_counts.append(n_val)
            train_counts.append(last - first - n_val)
        no_split = plan.n_val_split == 0
        val_quota = _quotas(plan.val_rows, train_counts if no_split else val_counts)
        n_stats = min(plan.n_train, STATS_ROWS, plan.pool_rows)
        stats_quota = _quotas(n_stats, train_counts)
        particles = [stop - start for _, start, stop in plan.chunks]
        domain_quota = _quotas(min(DOMAIN_ROWS, sum(particles)), particles)
        val = self._empty(sum(val_quota))
        stats = self._empty(sum(stats_quota))
        self._fixed = sum(0 if a is None else a.nbytes for a in (*val, *stats))
        x0_sample = np.empty((sum(domain_quota), plan.dim), dtype=np.float64)
        x0_min = np.full(plan.dim, np.inf)
        x0_max = np.full(plan.dim, -np.inf)
        at_val = at_stats = at_x0 = 0
        for i, (index, start, stop) in enumerate(plan.chunks):
            rows, mask, x0 = self._read(index, start, stop)
            rng = np.random.default_rng([seed, 7, index])
            x0_min = np.minimum(x0_min, x0.min(axis=0))
            x0_max = np.maximum(x0_max, x0.max(axis=0))
            pick = np.sort(rng.permutation(len(x0))[:domain_quota[i]])
            x0_sample[at_x0:at_x0 + len(pick)] = x0[pick]
            at_x0 += len(pick)
            train = np.flatnonzero(~mask)
            held_out = train if no_split else np.flatnonzero(mask)
            at_val = _put(val, rows, np.sort(rng.permutation(held_out)[:val_quota[i]]), at_val)
            at_stats = _put(stats, rows, np.sort(rng.permutation(train)[:stats_quota[i]]),
                            at_stats)
            del rows, mask, x0
            _trim()
        self._fixed = sum(0 if a is None else a.nbytes for a in val)
        return Prepared(val=val, stats=stats, x0_sample=x0_sample, x0_min=x0_min,
                        x0_max=x0_max)

    def _empty(self, rows: int) -> Batch:
        plan = self.plan
        cond = torch.empty((rows, plan.cond_dim), dtype=self.dtype) if plan.cond_dim else None
        return (torch.empty((rows, plan.dim), dtype=self.dtype),
                torch.empty((rows, plan.dim), dtype=self.dtype), cond)

    # -- the epochs ---------------------------------------------------------------------------
    def batches(self, epoch: int, seed: int) -> Iterator[Batch]:
        """One epoch's minibatches ``(x0, y, cond)`` (CPU tensors of the model's dtype; cond
        None without condition columns), every training row exactly once."""
        plan = self.plan
        if self._pool is None:
            self._pool = self._empty(plan.pool_rows)
        pool = self._pool
        rng = np.random.default_rng([seed, epoch])
        order = [plan.chunks[i] for i in rng.permutation(len(plan.chunks))]
        live = 0
        next_chunk = 0
        batch_bytes = plan.batch * plan.row_bytes
        while True:
            while (next_chunk < len(order) and live + (order[next_chunk][2]
                                                       - order[next_chunk][1]) * plan.k
                   <= plan.pool_rows):
                index, start, stop = order[next_chunk]
                rows, mask, _ = self._read(index, start, stop, extra=batch_bytes)
                train = torch.from_numpy(np.flatnonzero(~mask))
                live = _put(pool, rows, train, live)
                next_chunk += 1
                del rows, mask
                _trim()
            if live == 0:
                return
            size = min(plan.batch, live)
            drawn = rng.choice(live, size=size, replace=False)
            index_t = torch.from_numpy(drawn)
            batch = tuple(None if a is None else a[index_t] for a in pool)
            # the drawn rows leave the pool: the rows kept from its tail fill their places
            left = live - size
            holes = drawn[drawn < left]
            if len(holes):
                tail = np.setdiff1d(np.arange(left, live), drawn, assume_unique=True)
                for a in pool:
                    if a is not None:
                        a[torch.from_numpy(holes)] = a[torch.from_numpy(tail)]
            live = left
            self._note(self._held() + 2 * batch_bytes)  # the batch and the previous one
            yield batch[0], batch[1], batch[2]


_LIBC: list = []


def _trim() -> None:
    """Return freed heap memory to the OS after a chunk's read (glibc's ``malloc_trim``; a
    no-op elsewhere). Zarr decodes chunks in its own I/O thread, whose malloc arena otherwise
    keeps the freed buffers of past reads resident: measured, ~10 MB more RSS at a 12 MB cap
    (benchmarks/bench_streaming.py)."""
    if not _LIBC:
        import ctypes
        import ctypes.util

        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.append(libc.malloc_trim)
        except (OSError, AttributeError):
            _LIBC.append(None)
    if _LIBC[0] is not None:
        _LIBC[0](0)


def _put(target: Batch, rows: Batch, pick: np.ndarray | torch.Tensor, at: int) -> int:
    """Copy the rows ``pick`` of ``rows`` into ``target`` from row ``at``; the next free row."""
    n = len(pick)
    if n:
        index = torch.as_tensor(pick, dtype=torch.long)
        for dst, src in zip(target, rows, strict=True):
            if dst is not None and src is not None:
                dst[at:at + n] = src[index]
    return at + n
