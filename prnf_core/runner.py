"""Run every missing chunk of a dataset, sequentially or on a Dask cluster.

Chunks are submitted to a ``distributed.Client`` as plain functions
(:func:`~prnf_core.dataset.simulate_and_write_chunk`), each opening the store by path on the
worker. No Prefect code runs on the workers, which is what keeps a run on embedded defaults from
starting a temporary Prefect server in every worker process (``shared/stack-notes.md``).

>>> import tempfile
>>> from prnf_core.dataset import DatasetConfig
>>> from prnf_core.runner import run_dataset
>>> cfg = DatasetConfig(problem="bm1d", n_particles=200, chunk_size=100, dt=0.05)
>>> summary = run_dataset(cfg, tempfile.mkdtemp() + "/bm.zarr")
>>> summary.complete, summary.chunks_simulated
(True, 2)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prnf_core.dataset import DatasetConfig, create_dataset, simulate_and_write_chunk

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
) -> RunSummary:
    """Create (or reopen) the store and simulate its missing chunks.

    Args:
        config: The dataset configuration.
        path: Store path (created, or reopened if it holds the same config).
        client: A ``distributed.Client``; ``None`` runs the chunks one after another here.
        progress: Called with (finished, total) after each chunk.
        device: Torch device for the simulation (default: CUDA when present).
        torch_threads: Threads per chunk (default: torch's; 1 per Dask worker is typical).
    """
    started = time.perf_counter()
    dataset = create_dataset(config, path)
    missing = dataset.missing_chunks()
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
                          key=f"prnf-chunk-{config.dataset_id()}-{index}-{token}", pure=False)
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
    complete = dataset.finalize()
    return RunSummary(
        path=dataset.path,
        dataset_id=dataset.dataset_id,
        n_particles=config.n_particles,
        n_chunks=config.n_chunks,
        chunks_simulated=sum(not r["skipped"] for r in results),
        chunks_already_done=config.n_chunks - total,
        complete=complete,
        seconds=time.perf_counter() - started,
        simulate_seconds=sum(r["seconds"] - r.get("write_seconds", 0.0) for r in results),
        write_seconds=sum(r.get("write_seconds", 0.0) for r in results),
    )
