"""Run every missing chunk of a dataset, sequentially or on a Dask cluster.

Chunks are submitted to a ``distributed.Client`` as plain functions
(:func:`~prnf_core.dataset.simulate_and_write_chunk`), each opening the store by path on the
worker. No Prefect code runs on the workers, which is what keeps a run on embedded defaults from
starting a temporary Prefect server in every worker process (``shared/stack-notes.md``).

The coordinating process holds the store's writer lock for the whole run (the workers write
chunks under it), and verifies the chunks already done before adding more: corrupt ones are
marked not done and re-simulated with the rest, bit-identical thanks to the per-chunk seeds
(:mod:`prnf_core.integrity`). Reading the done chunks once is the price of that check.

>>> import tempfile
>>> from prnf_core.dataset import DatasetConfig
>>> from prnf_core.runner import run_dataset
>>> cfg = DatasetConfig(problem="bm1d", n_particles=200, chunk_size=100, dt=0.05)
>>> summary = run_dataset(cfg, tempfile.mkdtemp() + "/bm.zarr")
>>> summary.complete, summary.chunks_simulated
(True, 2)
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prnf_core.dataset import (
    Dataset,
    DatasetConfig,
    create_dataset,
    open_dataset,
    simulate_and_write_chunk,
)
from prnf_core.integrity import audit, store_lock
from prnf_core.objectstore import check_access, check_url, is_remote, storage_errors

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]  # (chunks finished, chunks to run)


@dataclass(frozen=True)
class RunSummary:
    """Small, JSON-able metadata about a simulation run (what Prefect tasks return)."""

    path: str
    dataset_id: str
    n_particles: int
    n_chunks: int
    chunks_simulated: int
    chunks_already_done: int
    chunks_repaired: int  # done chunks that failed verification and were re-simulated
    corruption: list[str]  # what was wrong with each of them, "chunk 3: xT checksum mismatch"
    complete: bool
    seconds: float
    simulate_seconds: float
    write_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_dataset(
    config: DatasetConfig,
    path: str | Path,
    client: Any | None = None,
    progress: ProgressCallback | None = None,
    device: str | None = None,
    torch_threads: int | None = None,
    lock_timeout: float = 0.0,
    role: str | None = None,
) -> RunSummary:
    """Create (or reopen) the store, re-simulate its corrupt chunks and simulate its missing ones.

    Args:
        config: The dataset configuration.
        path: Store path (created, or reopened if it holds the same config).
        client: A ``distributed.Client``; ``None`` runs the chunks one after another here.
        progress: Called with (finished, total) after each chunk.
        device: Torch device for the simulation (default: CUDA when present).
        torch_threads: Threads per chunk (default: torch's; 1 per Dask worker is typical).
        lock_timeout: Seconds to wait while another run writes the store; default 0 refuses at
            once (see :func:`~prnf_core.integrity.store_lock`).
        role: What the store is for (``"train"``, ``"test"``), recorded in its attributes
            (retention deletes old test sets by it); None keeps the stored role.

    The noise generator is fixed from ``device`` first (:meth:`DatasetConfig.on_device`): a
    store started with another generator is refused, so chunks never mix two noise streams.

    Raises:
        StoreLockedError: another run holds the store's writer lock.
        DatasetMismatchError: ``path`` holds another dataset, or one made with another noise
            generator; nothing is written.
        ObjectStoreError: ``path`` is a URL of another scheme than ``s3://``, or malformed, or
            its object storage cannot be used (credentials, bucket, endpoint): a ConfigError;
            also when the service becomes unreachable while the store is written (the chunks
            marked done are kept for a re-run to resume).
    """
    started = time.perf_counter()
    outage: contextlib.AbstractContextManager = contextlib.nullcontext()
    if is_remote(path):  # s3://bucket/prefix: checked (scheme, bucket, access) before any work
        path = check_url(str(path), "output")
        check_access(path)
        outage = storage_errors(path, "the store", during=(
            " while the store was written; the chunks marked done are kept: re-run the same "
            "command once the service is back to resume"))
    config = config.on_device(device)
    with outage, store_lock(path, timeout=lock_timeout):
        dataset = create_dataset(config, path, role=role)
        corrupt = audit(dataset)
        if corrupt:
            logger.warning("dataset %s: %d corrupt chunk(s) %s will be re-simulated: %s",
                           dataset.path, len(corrupt), sorted(corrupt), corrupt)
            dataset.mark_not_done(sorted(corrupt))
        missing = dataset.missing_chunks()
        results = _run_chunks(dataset, missing, client, progress, device, torch_threads)
        complete = dataset.finalize()
    return RunSummary(
        path=dataset.path,
        dataset_id=dataset.dataset_id,
        n_particles=config.n_particles,
        n_chunks=config.n_chunks,
        chunks_simulated=sum(not r["skipped"] for r in results),
        chunks_already_done=config.n_chunks - len(missing),
        chunks_repaired=len(corrupt),
        corruption=[f"chunk {index}: {reason}" for index, reason in sorted(corrupt.items())],
        complete=complete,
        seconds=time.perf_counter() - started,
        simulate_seconds=sum(r["seconds"] - r.get("write_seconds", 0.0) for r in results),
        write_seconds=sum(r.get("write_seconds", 0.0) for r in results),
    )


def repair_dataset(path: str | Path, **kwargs: Any) -> RunSummary:
    """Verify every chunk of the store at ``path``; re-simulate the corrupt and missing ones.

    A :func:`run_dataset` with the stored config (keyword arguments are passed on), so the
    repaired chunks are bit-identical to the lost ones. Raises ``FileNotFoundError`` when there
    is no store at ``path``.
    """
    return run_dataset(open_dataset(path).config, path, **kwargs)


def _run_chunks(dataset: Dataset, missing: list[int], client: Any | None,
                progress: ProgressCallback | None, device: str | None,
                torch_threads: int | None) -> list[dict[str, Any]]:
    total = len(missing)
    results: list[dict[str, Any]] = []
    if progress:
        progress(0, total)
    if client is None:
        for index in missing:
            results.append(simulate_and_write_chunk(dataset.path, index, device, torch_threads))
            if progress:
                progress(len(results), total)
    elif missing:
        import uuid

        from distributed import as_completed

        # Unique per run: two runs of one config to different stores must not share futures.
        token = uuid.uuid4().hex[:12]
        futures = [
            client.submit(simulate_and_write_chunk, dataset.path, index, device, torch_threads,
                          key=f"prnf-chunk-{dataset.dataset_id}-{index}-{token}", pure=False)
            for index in missing
        ]
        try:
            for future in as_completed(futures, loop=client.loop):
                results.append(future.result())
                if progress:
                    progress(len(results), total)
        finally:
            for future in futures:
                future.cancel()
    return results
