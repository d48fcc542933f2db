"""The ``train`` flow: fit a surrogate to a simulated dataset."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from prnf_core.dataset import open_dataset
from prnf_core.models import ModelConfig
from prnf_core.paths import DataPath, DatasetPath, data_root
from prnf_core.train import TrainConfig
from tasks.train import train_model


class TrainParams(BaseModel):
    """Parameters of the train flow (Prefect UI form, CLI and YAML)."""

    model_config = ConfigDict(extra="forbid")

    data: DatasetPath = Field(description="Path (or s3:// URL) of a complete dataset store (from "
                                     "the simulate flow); a relative path is taken under the "
                                     "data root.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Architecture and size.")
    training: TrainConfig = Field(default_factory=TrainConfig, description="Optimization.")
    output: DataPath | None = Field(
        None, description="Model directory; default: <data root>/models/<dataset>-<arch>-<hash>. "
                          "A relative path is taken under the data root and may not leave it.",
    )
    restart: bool = Field(
        False, description="Discard the checkpoint and model already in the model directory and "
                           "train from scratch. Without it a re-run resumes, and state written "
                           "for other data, model or training settings is refused.",
    )


def default_model_dir(params: TrainParams) -> str:
    dataset = open_dataset(params.data)
    # memory_cap_mb only when set: the folders of models trained before it existed keep their
    # names (and so their checkpoints) for unchanged settings.
    unset = {"memory_cap_mb"} if params.training.memory_cap_mb is None else set()
    settings = json.dumps([params.model.model_dump(mode="json"),
                           params.training.model_dump(mode="json", exclude={"progress", *unset})],
                          sort_keys=True)
    digest = hashlib.sha256(settings.encode()).hexdigest()[:8]
    name = f"{dataset.meta['problem']['name']}-{dataset.dataset_id}-{params.model.architecture}"
    return str(data_root() / "models" / f"{name}-{digest}")


@flow(name="train", log_prints=True)
def train_flow(params: TrainParams) -> dict[str, Any]:
    """Train a surrogate on a dataset store and save it; resumes from its checkpoint (one
    written for the same settings) unless ``restart``."""
    output = params.output or default_model_dir(params)
    return train_model(params.data, params.model, params.training, output,
                       restart=params.restart)
