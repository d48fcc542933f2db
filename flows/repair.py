"""The ``repair`` flow: verify every chunk of a dataset store, re-simulate what is damaged.

A chunk is damaged when its file cannot be decoded, was truncated or deleted, or holds bytes other
than those written (its checksum differs). Those chunks are marked not done and simulated again
from their deterministic seeds, so the repaired store is bit-identical to an undamaged one;
chunks never written (an interrupted run) are simulated too. Like a simulation run, repair holds
the store's writer lock (:mod:`prnf_core.integrity`).
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.logging import get_run_logger
from pydantic import BaseModel, ConfigDict, Field, field_validator

from prnf_core.cluster import ExecutionConfig, dask_client
from prnf_core.objectstore import store_exists
from prnf_core.paths import resolve_path
from prnf_core.runner import repair_dataset
from tasks.progress import Reporter


class RepairParams(BaseModel):
    """Parameters of the repair flow."""

    model_config = ConfigDict(extra="forbid")

    store: str = Field(description="Dataset store to verify and repair, a path or an s3:// URL "
                                   "(a relative path is taken under the data root and may not "
                                   "leave it).")
    execution: ExecutionConfig = Field(
        default_factory=lambda: ExecutionConfig(workers=0),
        description="Dask workers for the re-simulation (default: in-process; damage is "
                    "usually a few chunks, not worth starting a cluster).",
    )
    lock_timeout: float = Field(
        0.0, ge=0, description="Seconds to wait for a run writing the store (0: refuse at once).",
    )

    @field_validator("store")
    @classmethod
    def _existing_store(cls, value: str) -> str:
        path = resolve_path(value, "store", dataset_store=True)
        if not store_exists(path):  # before any flow run starts (checks object-store access)
            raise ValueError(f"no dataset at {path}")
        return path


@flow(name="repair", log_prints=True)
def repair_flow(params: RepairParams) -> dict[str, Any]:
    """Verify a store's chunks; re-simulate the corrupt and the missing ones."""
    with dask_client(params.execution) as client:
        summary = repair_dataset(
            params.store, client=client, device=params.execution.device,
            torch_threads=params.execution.threads_per_worker,
            progress=Reporter(f"repair {params.store} (chunks)", key=None),
            lock_timeout=params.lock_timeout,
        )
    for line in report_lines(summary.as_dict()):
        get_run_logger().info(line)
    return summary.as_dict()


def report_lines(result: dict[str, Any]) -> list[str]:
    """What repair found and fixed, in a few lines (the CLI prints them)."""
    lines = []
    if result["corruption"]:
        lines.append(f"found {result['chunks_repaired']} corrupt chunk(s):")
        lines += [f"  {item}" for item in result["corruption"]]
        lines.append(f"re-simulated {result['chunks_repaired']} corrupt chunk(s)")
    filled = result["chunks_simulated"] - result["chunks_repaired"]
    if filled:
        lines.append(f"simulated {filled} missing chunk(s)")
    if not result["corruption"] and not filled:
        lines.append(f"verified {result['n_chunks']} chunks: all intact, nothing to repair")
    lines.append(f"store: {result['path']}; complete: {result['complete']}")
    return lines
