"""What the three experiments share: running the pipeline on a study's settings, the MC
reference sets of a study and the setup section of a results page."""

from __future__ import annotations

from typing import Any

from flows.config import PipelineParams, ValidationConfig
from flows.reproduce.settings import StudySettings
from prnf_core.cluster import ExecutionConfig
from prnf_core.dataset import DatasetConfig
from tasks.validate import simulate_test_sets


def pipeline_params(settings: StudySettings, problem: str, execution: ExecutionConfig,
                    use_registry: bool, laws: dict[str, Any] | None = None,
                    training_update: dict[str, Any] | None = None) -> PipelineParams:
    """The pipeline parameters of a study (its training set, model, training, validation)."""
    training = settings.training.model_copy(update=training_update or {})
    return PipelineParams(
        problem=problem, n_train=settings.n_train, chunk_size=settings.chunk_size,
        t_end=settings.t_end, dt=settings.dt, seed=settings.seed, dtype=settings.dtype,
        model=settings.model, training=training,
        validation=ValidationConfig(laws=laws, n_samples=settings.validation_samples,
                                    kl_samples=settings.validation_kl_samples),
        execution=execution, use_registry=use_registry)


def mc_reference_sets(settings: StudySettings, problem: str, laws: dict[str, Any],
                      n_particles: int, seed: int, execution: ExecutionConfig) -> dict[str, str]:
    """Simulate the MC reference set of every law (``n_particles`` each, seeds ``seed``,
    ``seed + 1``, ... in the order of ``laws``) at the study's horizon, step and precision;
    returns law name -> store path."""
    configs = {
        key: DatasetConfig(problem=problem, initial=law, n_particles=n_particles,
                           chunk_size=settings.chunk_size, t_end=settings.t_end, dt=settings.dt,
                           seed=seed + i, dtype=settings.dtype)
        for i, (key, law) in enumerate(laws.items())}
    return simulate_test_sets(configs, execution)


def setup_section(doc: str | None, details: str) -> str:
    """A page's "Setup" section: the experiment module's docstring past its title line, then
    ``details``."""
    return "## Setup\n\n" + (doc or "").split("\n\n", 1)[1].strip() + "\n\n" + details
