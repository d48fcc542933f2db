"""Chunk checksums and the exclusive writer lock of a dataset store.

Checksums. When a chunk is written, a 64-bit BLAKE2b digest of each of its arrays (``x0``, ``xT``,
``snapshots`` and ``theta``, the per-particle parameters of a dataset with a ``param_box``), taken
over the bytes as stored (the store's dtype, little-endian, C order), is recorded in
``<name>_checksum``: a uint64 array with one Zarr chunk per simulation chunk, so the one writer of
a chunk is also the only writer of its checksums (group attributes would not do: they are a single
JSON document every writer would rewrite). Digests are written after the data and before
``chunk_done``. Readers recompute them, so a chunk file with flipped bits, truncated
(Blosc cannot decode it) or deleted (Zarr silently returns the NaN fill value) makes the read fail
with :class:`~prnf_core.errors.CorruptChunkError` naming the chunks, instead of returning wrong
numbers. 0 means "no checksum recorded"; a true digest of 0 is stored as 1.

Stores written before checksums existed (no ``*_checksum`` arrays) still read: their done chunks
are only checked to decode and hold finite values (a deleted chunk file reads as NaN, which
``write_chunk`` never stores). The next run that writes such a store records their checksums.

Lock. A writer of a local store holds an exclusive ``flock`` on ``<store>.lock`` beside the store
(not inside it: Zarr warns about unknown files in a group, and the lock must exist before the
store does). The kernel drops the lock when its holder dies, even by SIGKILL, so a crashed run
never blocks the next one; the holder's pid, host and start time in the file are only for the
error message. A store on object storage (``s3://...``) has no ``flock``: its lock is the object
``<store>.lock``, created with a conditional put and held as a lease renewed by a heartbeat, so
a killed holder's lock expires after its TTL (:mod:`prnf_core.objectstore`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import zarr

from prnf_core.errors import StoreLockedError
from prnf_core.objectstore import is_remote, s3_lock

DATA_ARRAYS = ("x0", "xT", "snapshots", "theta")
NOT_RECORDED = 0
LOCK_POLL_SECONDS = 0.2


class ChunkLayout(Protocol):
    @property
    def n_chunks(self) -> int: ...

    def chunk_bounds(self, index: int) -> tuple[int, int]: ...


class ChunkedStore(Protocol):
    """What verification reads of a store: a :class:`~prnf_core.dataset.Dataset` (declared
    here, not imported, since the dataset module builds on this one)."""

    group: zarr.Group

    @property
    def arrays(self) -> dict[str, zarr.Array]: ...

    @property
    def config(self) -> ChunkLayout: ...

    def done_mask(self) -> np.ndarray: ...


def checksum_name(name: str) -> str:
    return f"{name}_checksum"


def digest(data: np.ndarray) -> int:
    """64-bit BLAKE2b of the array's bytes (little-endian, C order); never 0."""
    little = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<"))
    value = int.from_bytes(hashlib.blake2b(little.data, digest_size=8).digest(), "little")
    return value or 1


def create_checksum_arrays(group: zarr.Group, names: Sequence[str],
                           n_chunks: int) -> dict[str, zarr.Array]:
    """Create the checksum arrays of arrays ``names``; returns them by name."""
    return {checksum_name(name): group.create_array(
        checksum_name(name), shape=(n_chunks,), chunks=(1,), dtype="uint64",
        fill_value=NOT_RECORDED, compressors=None) for name in names}


def chunk_region(name: str, start: int, stop: int) -> tuple[slice, ...]:
    """The index of one simulation chunk in array ``name`` (particles are axis 1 of snapshots)."""
    rows = slice(start, stop)
    return (slice(None), rows) if name == "snapshots" else (rows,)


def chunk_fault(data: np.ndarray, recorded: int | None) -> str | None:
    """Why a chunk's data is not what was written, or None. ``recorded`` is None in old stores."""
    if recorded is None:
        return None if np.isfinite(data).all() else "non-finite values (chunk file missing?)"
    if recorded == NOT_RECORDED:
        return "no checksum recorded"
    return None if digest(data) == recorded else "checksum mismatch"


def read_fault(exc: Exception) -> str:
    return f"unreadable ({type(exc).__name__}: {str(exc)[:120]})"


def find_corrupt(dataset: ChunkedStore, names: Sequence[str] = DATA_ARRAYS,
                 loaded: np.ndarray | None = None) -> dict[int, str]:
    """The done chunks of arrays ``names`` that fail verification, with why (chunk -> reason).

    Reads one chunk at a time, so a chunk that cannot be decoded is named rather than failing
    the whole read. ``loaded``: the whole array ``names[0]`` already in memory (only hashed).
    """
    config = dataset.config
    done = [int(i) for i in np.flatnonzero(dataset.done_mask())]
    faults: dict[int, list[str]] = {}
    for name in (n for n in names if n in dataset.arrays):
        sums = _recorded(dataset.arrays, name)
        array = dataset.arrays[name]
        for index in done:
            region = chunk_region(name, *config.chunk_bounds(index))
            try:
                data = loaded[region] if loaded is not None else array[region]
            except Exception as exc:  # Blosc/Zarr decode errors vary by codec and damage
                fault: str | None = read_fault(exc)
            else:
                fault = chunk_fault(data, None if sums is None else int(sums[index]))
            if fault:
                faults.setdefault(index, []).append(f"{name} {fault}")
    return {index: "; ".join(reasons) for index, reasons in sorted(faults.items())}


def audit(dataset: ChunkedStore) -> dict[int, str]:
    """Verify every done chunk before more are written; returns the corrupt ones.

    A store without checksum arrays (written by an older prnf) gets them here: the done chunks
    that decode and are finite have their digests recorded, so later damage is caught.
    """
    arrays = dataset.arrays
    names = [n for n in DATA_ARRAYS if n in arrays]
    if all(checksum_name(n) in arrays for n in names):
        return find_corrupt(dataset, names)
    faults = find_corrupt(dataset, names)
    missing = [n for n in names if checksum_name(n) not in arrays]
    arrays |= create_checksum_arrays(dataset.group, missing, dataset.config.n_chunks)
    config = dataset.config
    for index in (int(i) for i in np.flatnonzero(dataset.done_mask())):
        if index in faults:
            continue
        for name in missing:
            region = chunk_region(name, *config.chunk_bounds(index))
            arrays[checksum_name(name)][index] = digest(arrays[name][region])
    return faults


def _recorded(arrays: dict[str, zarr.Array], name: str) -> np.ndarray | None:
    key = checksum_name(name)
    return np.asarray(arrays[key][:], dtype=np.uint64) if key in arrays else None


# -- the writer lock ----------------------------------------------------------------------------
def lock_path(path: str | Path) -> Path:
    store = Path(path).expanduser().resolve()
    return store.with_name(store.name + ".lock")


@contextlib.contextmanager
def store_lock(path: str | Path, timeout: float = 0.0) -> Iterator[Path | str]:
    """Hold the exclusive writer lock of the store at ``path`` for the ``with`` block.

    Another holder makes this wait up to ``timeout`` seconds, then raise
    :class:`~prnf_core.errors.StoreLockedError` naming the store and the holder (pid, host, start
    time). The default, 0, refuses at once: a second writer of one store is almost always the
    same command started twice, and it has nothing to add (chunks are deterministic), so an
    immediate, explicit refusal is more useful than a silent wait; callers that share stores on
    purpose pass a timeout. The lock file is removed on release. A store on object storage is
    locked by a lease object instead (:func:`prnf_core.objectstore.s3_lock`; yields its URL).
    """
    if is_remote(path):
        with s3_lock(str(path), timeout=timeout) as url:
            yield url
        return
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock, str(path), timeout)
    try:
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield lock
    finally:
        lock.unlink(missing_ok=True)  # still held: a waiter that opened this file retries
        os.close(fd)


def _acquire(lock: Path, store: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreLockedError(store, holder, timeout) from None
            time.sleep(min(LOCK_POLL_SECONDS, left))
            continue
        except OSError:  # e.g. no lock support on this filesystem
            os.close(fd)
            raise
        if _is_current(fd, lock):
            return fd
        os.close(fd)  # the previous holder removed this file on release: lock the new one


def _holder(fd: int) -> dict[str, Any]:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:  # being written by a holder that has just started
        return {}
    return holder if isinstance(holder, dict) else {}


def _is_current(fd: int, lock: Path) -> bool:
    try:
        on_disk = os.stat(lock)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (held.st_dev, held.st_ino)
