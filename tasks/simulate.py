"""Prefect tasks for simulation. They pass paths and counts, never particle arrays."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from prnf_core.cluster import ExecutionConfig, dask_client
from prnf_core.dataset import DatasetConfig, create_dataset
from prnf_core.errors import format_bytes
from prnf_core.paths import default_dataset_path
from prnf_core.runner import run_dataset
from prnf_core.storage import check_disk_space
from tasks.progress import Reporter


@task(name="prepare-dataset")
def prepare_dataset(config: DatasetConfig, output: str | None = None) -> dict[str, Any]:
    """Create the store (or reopen it with the same config); report what is left to do.

    Refuses with :class:`~prnf_core.errors.InsufficientDiskSpaceError`, before creating
    anything, when the chunks still to write cannot fit on the target filesystem.
    """
    path = output or str(default_dataset_path(config.problem, config.dataset_id()))
    needed = check_disk_space(config, path)
    dataset = create_dataset(config, path)
    missing = dataset.missing_chunks()
    get_run_logger().info(
        "dataset %s at %s: %d of %d chunks to simulate (up to %s on disk)",
        dataset.dataset_id, path, len(missing), config.n_chunks, format_bytes(needed),
    )
    return {"path": path, "dataset_id": dataset.dataset_id, "missing": len(missing),
            "n_chunks": config.n_chunks}


@task(name="simulate-chunks")
def simulate_chunks(config: DatasetConfig, path: str,
                    execution: ExecutionConfig) -> dict[str, Any]:
    """Simulate the missing chunks on Dask and mark the dataset complete.

    Design: the chunks go to Dask as plain functions from inside this one task, not as Prefect
    tasks on a Dask task runner. On embedded defaults (no Prefect server) every Dask worker
    running a Prefect task would start its own temporary Prefect server (seen: 15 s -> 72 s);
    this way the workers never import Prefect, and the same code runs on any Dask cluster.
    """
    logger = get_run_logger()
    with dask_client(execution) as client:
        if client is not None:
            logger.info("Dask: %s", client.dashboard_link or client.scheduler.address)
        summary = run_dataset(
            config, path, client=client, device=execution.device,
            torch_threads=execution.threads_per_worker,
            progress=Reporter(f"simulate {config.problem} (chunks)", key=None),
        )
    logger.info(
        "simulated %d chunks (%d already done, %d corrupt ones re-simulated) in %.1f s; "
        "complete=%s", summary.chunks_simulated, summary.chunks_already_done,
        summary.chunks_repaired, summary.seconds, summary.complete,
    )
    return summary.as_dict()
