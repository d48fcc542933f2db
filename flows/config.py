"""Typed parameters of the pipeline and validate flows (Prefect UI forms, CLI, YAML)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from prnf_core.cluster import ExecutionConfig
from prnf_core.dataset import DatasetConfig
from prnf_core.errors import ConfigError
from prnf_core.initial import InitialSpec, parse_initial
from prnf_core.models import ModelConfig
from prnf_core.problems import default_test_laws, get_problem
from prnf_core.simulate import DType
from prnf_core.train import TrainConfig


class ValidationConfig(BaseModel):
    """How a surrogate is checked against fresh Monte Carlo simulations."""

    model_config = ConfigDict(extra="forbid")

    laws: dict[str, InitialSpec] | None = Field(
        None, description="Named test initial distributions; default: the problem's test laws.",
    )
    n_samples: int = Field(
        10_000, ge=100,
        description="Particles per law in each of two independent MC sets (the second gives the "
                    "noise floor), and surrogate samples per law.",
    )
    seed: int = Field(
        1_000_003, ge=0, description="Seed of the MC test sets (not the training seed)."
    )
    chunk_size: int = Field(5_000, gt=0, description="Particles per chunk of the MC test sets.")
    max_sw_ratio: float = Field(
        2.0, gt=0,
        description="Pass only if every law's sliced-Wasserstein ratio of the surrogate's "
                    "samples to the MC noise floor is below (a perfect surrogate stays under "
                    "1.6 in 99% of cases).",
    )
    max_kl: float = Field(
        0.02, gt=0,
        description="Problems with an exact transition must also have every law's exact KL "
                    "(at the trained horizon) below this.",
    )
    bootstrap: int = Field(
        30, ge=0,
        description="Bootstrap resamples of the surrogate's samples for the standard error of "
                    "each SW ratio (0: none, and then no champion is ever replaced).",
    )
    promotion_n_se: float = Field(
        2.0, gt=0,
        description="A challenger replaces the champion only if its score is better by more "
                    "than this many combined standard errors on the same test sets.",
    )

    @field_validator("bootstrap")
    @classmethod
    def _bootstrap(cls, value: int) -> int:
        if value == 1:
            raise ValueError("must be 0 (no standard error) or at least 2 resamples")
        return value

    @field_validator("laws", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, dict) or not value:
            raise ValueError("must be a non-empty mapping of name -> initial-distribution spec")
        laws = {}
        for name, spec in value.items():
            try:
                laws[str(name)] = parse_initial(spec)
            except ConfigError as exc:  # "initial.kind: ..." -> "laws.<name>.kind: ..."
                raise ValueError(f"laws.{name}{str(exc).removeprefix('initial')}") from None
        return laws

    def resolved_laws(self, problem: str, params: dict[str, Any]) -> dict[str, InitialSpec]:
        if self.laws is not None:
            return dict(self.laws)
        return {k: parse_initial(v) for k, v in default_test_laws(problem, params).items()}


class CheckParams(BaseModel):
    """Shared by the flows that validate an existing model (validate, register)."""

    model_config = ConfigDict(extra="forbid")

    validation: ValidationConfig = Field(
        default_factory=ValidationConfig, description="Test laws, sample size, thresholds."
    )
    execution: ExecutionConfig = Field(
        default_factory=ExecutionConfig, description="Dask workers for the MC test sets."
    )


#: The pipeline's training defaults, the one definition the CLI, YAML files and the Prefect form
#: share: a ``training`` mapping that leaves a field out gets it from here (or from its preset),
#: not from :class:`TrainConfig`'s own defaults, which suit a standalone `prnf train`.
PIPELINE_TRAINING_DEFAULTS: dict[str, Any] = {
    "epochs": 40, "batch_size": 256, "lr": 3e-3, "progress": False,
}


def with_pipeline_defaults(training: dict[str, Any]) -> dict[str, Any]:
    """A ``training`` mapping completed with :data:`PIPELINE_TRAINING_DEFAULTS`, in the order
    explicit fields, then the preset's, then these defaults (the preset fills the rest when
    :class:`TrainConfig` validates it)."""
    preset = training.get("preset")
    decided = TrainConfig.preset_fields(preset if isinstance(preset, str) else None)
    defaults = {k: v for k, v in PIPELINE_TRAINING_DEFAULTS.items() if k not in decided}
    return {**defaults, **training}


def pipeline_training(**fields: Any) -> TrainConfig:
    """The pipeline's training settings with ``fields`` given explicitly."""
    return TrainConfig.model_validate(with_pipeline_defaults(fields))


class PipelineParams(BaseModel):
    """Simulate -> train -> validate -> register/promote, in one form."""

    model_config = ConfigDict(extra="forbid")

    problem: str = Field("ou", description="Registered problem (see `prnf problems`).")
    problem_params: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the problem's parameters."
    )
    n_train: int = Field(
        20_000, gt=0, description="Training trajectories (x0 uniform on the domain)."
    )
    chunk_size: int = Field(5_000, gt=0, description="Particles per simulation chunk.")
    t_end: float | None = Field(None, gt=0, description="Horizon T; default: the problem's.")
    dt: float | None = Field(None, gt=0, description="Euler-Maruyama step; default: the problem's.")
    seed: int = Field(0, ge=0, description="Seed of the training set.")
    dtype: DType = Field("float64", description="Simulation precision.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Surrogate architecture.")
    training: TrainConfig = Field(
        default_factory=pipeline_training,
        description="Optimization settings; fields left out take the pipeline's defaults "
                    "(40 epochs, batch 256, lr 3e-3, no progress bar) unless a preset gives "
                    "them. Explicit fields win over the preset.",
    )
    validation: ValidationConfig = Field(
        default_factory=ValidationConfig, description="Fresh-simulation validation."
    )
    execution: ExecutionConfig = Field(
        default_factory=ExecutionConfig, description="Dask workers, scheduler address or cluster."
    )
    use_registry: bool = Field(
        True, description="Register the model in MLflow and apply the promotion gate."
    )

    @field_validator("training", mode="before")
    @classmethod
    def _training_defaults(cls, value: Any) -> Any:
        """A mapping (YAML, Prefect form, CLI) gets the pipeline's defaults for what it leaves
        out; a ready :class:`TrainConfig` is taken as it is."""
        return with_pipeline_defaults(value) if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _check(self) -> PipelineParams:
        sde = get_problem(self.problem, **self.problem_params)
        if self.model.dim not in (None, sde.dim):
            raise ValueError(f"model.dim: {self.model.dim} but problem {self.problem!r} has "
                             f"dimension {sde.dim}")
        self.training_dataset()  # validates T, dt, sizes against the problem
        for name, law in self.validation.resolved_laws(self.problem, self.problem_params).items():
            if law.dim != sde.dim:
                raise ValueError(f"validation.laws.{name}: dimension {law.dim}, problem "
                                 f"{self.problem!r} has dimension {sde.dim}")
        return self

    def training_dataset(self) -> DatasetConfig:
        return DatasetConfig(problem=self.problem, problem_params=self.problem_params,
                             n_particles=self.n_train, chunk_size=self.chunk_size,
                             t_end=self.t_end, dt=self.dt, seed=self.seed, dtype=self.dtype)

    def test_dataset(self, law: InitialSpec) -> DatasetConfig:
        """The MC test set of one law: two independent halves of ``n_samples`` each."""
        return DatasetConfig(problem=self.problem, problem_params=self.problem_params,
                             initial=law, n_particles=2 * self.validation.n_samples,
                             chunk_size=self.validation.chunk_size, t_end=self.t_end, dt=self.dt,
                             seed=self.validation.seed, dtype=self.dtype)


def pipeline_for_model(source: str, /, **fields: Any) -> PipelineParams:
    """The pipeline settings of a saved model (its recorded problem, horizon and dimension).

    A model whose metadata does not fit its problem (another dimension, edited files) is a
    :class:`ConfigError` naming the model and the fields, not a traceback from inside a flow.
    """
    try:
        return PipelineParams(**fields)
    except ValidationError as exc:
        details = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            loc = ".".join(str(p) for p in err["loc"])
            details.append(f"{loc}: {msg}" if loc else msg)  # model-level: names its fields
        raise ConfigError(
            f"model: {source!r} does not fit its recorded problem: {'; '.join(details)}"
        ) from None
