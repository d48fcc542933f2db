"""What the three experiments share: running the pipeline on a study's settings."""

from __future__ import annotations

from typing import Any

from flows.config import PipelineParams, ValidationConfig
from flows.reproduce.settings import StudySettings
from prnf_core.cluster import ExecutionConfig


def pipeline_params(settings: StudySettings, problem: str, execution: ExecutionConfig,
                    use_registry: bool, laws: dict[str, Any] | None = None,
                    training_update: dict[str, Any] | None = None) -> PipelineParams:
    """The pipeline parameters of a study (its training set, model, training, validation)."""
    training = settings.training.model_copy(update=training_update or {})
    return PipelineParams(
        problem=problem, n_train=settings.n_train, chunk_size=settings.chunk_size,
        t_end=settings.t_end, dt=settings.dt, seed=settings.seed, dtype=settings.dtype,
        model=settings.model, training=training,
        validation=ValidationConfig(laws=laws, n_samples=settings.validation_samples),
        execution=execution, use_registry=use_registry)

