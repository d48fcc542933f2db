"""Disk space: refuse a simulation that cannot fit before anything is written.

Why: a full disk surfaces late, as a failed chunk write after hours of simulation on every worker,
and can leave truncated chunk files behind. An upper bound of the store's size, checked against
the target filesystem's free space up front, turns that into an immediate error naming the path,
the estimate and the free space.

The bound is the uncompressed size of the chunks still to write (x0, xT and every snapshot, at the
dataset's dtype) plus one filesystem block per chunk file or directory and a little metadata.
Blosc never expands a chunk by more than its 16-byte header (``BLOSC_MAX_OVERHEAD``), and the NaN
padding of a short last chunk compresses to almost nothing, so the bound holds. It is checked
once, before the run: space taken meanwhile by other writers is not reserved.

>>> from prnf_core.dataset import DatasetConfig
>>> from prnf_core.storage import data_bytes
>>> data_bytes(DatasetConfig(problem="abc3d", n_particles=1000, chunk_size=500))  # 1000 x 3 x 2 x 8
48000
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from prnf_core.dataset import DatasetConfig, open_dataset
from prnf_core.errors import (
    DatasetMismatchError,
    IncompleteDatasetError,
    InsufficientDiskSpaceError,
)
from prnf_core.paths import is_url

BLOCK_BYTES = 4096  # allocation unit assumed per chunk file or directory (ext4/xfs blocks)
METADATA_BYTES = 1 << 20  # the zarr.json files and array directories, with room to spare


def data_bytes(config: DatasetConfig, chunks: Sequence[int] | None = None) -> int:
    """Uncompressed bytes of x0, xT and snapshots for ``chunks`` (default: every chunk)."""
    indices = range(config.n_chunks) if chunks is None else chunks
    rows = sum(stop - start for start, stop in map(config.chunk_bounds, indices))
    arrays = 2 + len(config.save_times or ())
    return rows * config.sde().dim * arrays * np.dtype(config.dtype).itemsize


def estimate_store_bytes(config: DatasetConfig, chunks: Sequence[int] | None = None) -> int:
    """Upper bound of the disk space that writing ``chunks`` (default: all) of a store takes."""
    n_chunks = config.n_chunks if chunks is None else len(chunks)
    data_arrays = 2 + bool(config.save_times)  # x0, xT (and snapshots)
    # Per chunk: a file and a directory (key c/<i>/0) of each data array; a file (key c/<i>) of
    # chunk_done, chunk_seconds and each data array's checksum.
    entries = n_chunks * (2 * data_arrays + 2 + data_arrays)
    return data_bytes(config, chunks) + entries * BLOCK_BYTES + METADATA_BYTES


def chunks_to_write(config: DatasetConfig, path: str | Path) -> list[int]:
    """The chunks a simulation of ``config`` into ``path`` would write.

    Every chunk for a new (or empty) store, the missing ones of a store of the same dataset, and
    none when ``path`` holds anything else: ``create_dataset`` then refuses it with its own error
    and writes nothing.
    """
    try:
        dataset = open_dataset(path)
    except (FileNotFoundError, IncompleteDatasetError):  # no store yet, or an empty one
        return list(range(config.n_chunks))
    except DatasetMismatchError:
        return []
    return dataset.missing_chunks() if dataset.dataset_id == config.dataset_id() else []


def nearest_existing(path: str | Path) -> Path:
    """``path`` itself or its closest existing ancestor: where the store's filesystem is."""
    current = Path(path).absolute()
    while not current.exists():
        current = current.parent
    return current


def check_disk_space(config: DatasetConfig, path: str | Path) -> int:
    """Raise :class:`InsufficientDiskSpaceError` unless the chunks still to write fit on disk.

    Returns the estimate in bytes; 0 when nothing is checked: the store is already complete, or
    ``path`` is a URL (``s3://...``), whose free space no local filesystem knows.
    """
    chunks = [] if is_url(str(path)) else chunks_to_write(config, path)
    if not chunks:
        return 0
    needed = estimate_store_bytes(config, chunks)
    where = nearest_existing(path)
    free = shutil.disk_usage(where).free
    if needed > free:
        raise InsufficientDiskSpaceError(str(path), needed, free, str(where))
    return needed
