"""The ``simulate`` flow: create a dataset store and fill it on Dask."""

from __future__ import annotations

from typing import Any

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from prnf_core.cluster import ExecutionConfig
from prnf_core.dataset import DatasetConfig
from prnf_core.paths import DatasetPath
from tasks.simulate import prepare_dataset, simulate_chunks


class SimulateParams(BaseModel):
    """Parameters of the simulate flow (the Prefect UI form, the CLI and YAML share them)."""

    model_config = ConfigDict(extra="forbid")

    dataset: DatasetConfig = Field(description="What to simulate: problem, x0 law, sizes, seed.")
    output: DatasetPath | None = Field(
        None, description="Store path or s3://bucket/prefix/name.zarr URL; default: "
                          "<dataset root>/<problem>-<dataset id>.zarr, the dataset root being "
                          "$PRNF_DATASET_ROOT or <data root>/datasets. "
                          "A relative path is taken under the data root and may not leave it.",
    )
    execution: ExecutionConfig = Field(
        default_factory=ExecutionConfig, description="Dask workers, scheduler address or cluster.",
    )


@flow(name="simulate", log_prints=True)
def simulate_flow(params: SimulateParams) -> dict[str, Any]:
    """Simulate every missing chunk of a dataset; re-running resumes an interrupted store."""
    # The execution device fixes the noise generator, part of the id (and of the default path).
    dataset = params.dataset.on_device(params.execution.device)
    prepared = prepare_dataset(dataset, params.output)
    return simulate_chunks(dataset, prepared["path"], params.execution)
