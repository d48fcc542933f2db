"""The ``register`` flow: log, validate, register and gate a model trained earlier.

Used when a pipeline run trained a model but could not register it (e.g. the tracking server
was down): the dataset and the model directory are kept, and this flow completes the job.

Idempotent: if a version with this directory's identity (path and weights hash,
:func:`tasks.registry.model_identity`) exists already (the server died after the version was
created), its logged model is reused instead of logging the model again, and the same version
comes back, validated and gated again; no duplicate version is made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from pydantic import Field

from flows.config import CheckParams, pipeline_for_model
from flows.pipeline import validate_and_register
from prnf_core.dataset import open_dataset
from prnf_core.errors import ConfigError
from prnf_core.models import load_metadata
from prnf_core.paths import DataPath
from tasks import registry, tracking
from tasks.pyfunc import log_surrogate


class RegisterParams(CheckParams):
    model_dir: DataPath = Field(description="A model directory written by the train flow (a "
                                            "relative path is taken under the data root).")


@flow(name="register", log_prints=True)
def register_flow(params: RegisterParams) -> dict[str, Any]:
    if not (Path(params.model_dir) / "config.json").is_file():
        raise ConfigError(f"model_dir: no model (config.json) in {params.model_dir!r}")
    meta = load_metadata(params.model_dir)
    problem = meta["problem"]["name"]
    pipeline = pipeline_for_model(params.model_dir, meta, params)
    client = tracking.configure()
    tracking.check_reachable(client)
    experiment = tracking.experiment_id(client, problem)
    parent = tracking.start_run(client, experiment, "register",
                                tags={"model_dir": params.model_dir})
    try:
        existing = registry.find_version(client, registry.model_identity(params.model_dir))
        model_uri = registry.logged_model_uri(existing) if existing is not None else None
        if model_uri is not None:
            tracking.set_tags(client, parent, {"reused_model_version":
                                               f"{existing.name}/{existing.version}"})
        else:
            with tracking.child_run(client, experiment, "log-model", parent) as run_id:
                x0_example = open_dataset(meta["dataset_path"]).load("x0")[:5]
                model_uri = log_surrogate(params.model_dir, run_id, x0_example)
        result = validate_and_register(pipeline, client, experiment, parent, params.model_dir,
                                       model_uri, train_seconds=float(meta["train_seconds"]))
    except BaseException:
        client.set_terminated(parent, "FAILED")
        raise
    client.set_terminated(parent, "FINISHED")
    result["seconds"] = 0.0
    return result
