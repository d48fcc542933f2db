"""Typed settings of the paper's three experiments, with a ``quick`` and a ``paper`` profile.

``quick`` is sized for a 2-core CPU (under ~20 minutes per experiment); ``paper`` uses the paper's
sizes and training settings (a GPU-sized run). Any field can be overridden with a dotted key
(``training.epochs=3``, :func:`flows.config.set_dotted`, as ``--set`` of every command), validated
like the rest: unknown keys and bad values are refused with the field named.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from flows.config import set_dotted
from prnf_core.models import ModelConfig
from prnf_core.simulate import DType
from prnf_core.train import TrainConfig
from prnf_core.validation.kl import KL_SAMPLES

Profile = Literal["quick", "paper"]
Experiment = Literal["bm1d", "runaway2d", "abc3d"]


def goal(value: float, what: str) -> Any:
    """A goal field: a positive threshold whose description starts with "Goal: "."""
    return Field(value, gt=0, description=f"Goal: {what}")


class StudySettings(BaseModel):
    """What every experiment shares: the training set, the model and its training."""

    model_config = ConfigDict(extra="forbid")

    n_train: int = Field(gt=0, description="Training trajectories (x0 uniform on the domain).")
    chunk_size: int = Field(10_000, gt=0, description="Particles per simulation chunk.")
    dtype: DType = Field("float64", description="Simulation precision (training and MC).")
    t_end: float | None = Field(None, gt=0, description="Horizon T; default: the problem's.")
    dt: float | None = Field(None, gt=0, description="Euler-Maruyama step; default: the problem's.")
    seed: int = Field(0, ge=0, description="Seed of the training set.")
    model: ModelConfig = Field(description="Surrogate architecture.")
    training: TrainConfig = Field(description="Optimization settings.")
    validation_samples: int = Field(
        10_000, ge=100, description="Particles per law in each MC half of the pipeline's "
                                    "validation, and surrogate samples per law.")
    validation_kl_samples: int = Field(
        KL_SAMPLES, ge=100, description="Problems with an exact transition: exact draws of "
                                        "X_T and of x0 of each exact KL in the pipeline's "
                                        "validation.")


class Bm1dSettings(StudySettings):
    """Experiment 1: exact KL on 1-D Brownian motion with drift for several λ."""

    lambdas: list[float] = Field(
        [0.0, 1.0, 10.0, 100.0, 1000.0], min_length=1,
        description="Reversibility weights λ trained and compared (one pipeline run each).")
    default_lambda: float = Field(100.0, ge=0, description="The λ whose model is registered.")
    kl_n_y: int = Field(4000, ge=100, description="Exact draws of X_T per KL estimate.")
    kl_n_x0: int = Field(2000, ge=100, description="x0 draws in each mixture density.")
    check_samples: int = Field(
        10_000, ge=100, description="Samples of g (and of each exact set) in the sample check.")
    kl_goal: float = goal(0.01, "KL at the default λ, every law.")

    @model_validator(mode="after")
    def _default_in_sweep(self) -> Bm1dSettings:
        if any(lam < 0 for lam in self.lambdas):
            raise ValueError(f"lambdas: must be >= 0, got {self.lambdas}")
        if self.default_lambda not in self.lambdas:
            raise ValueError(f"default_lambda: {self.default_lambda} is not in lambdas "
                             f"{self.lambdas}")
        return self


class RunawaySettings(StudySettings):
    """Experiment 2: runaway production rate against the initial temperature."""

    temperatures: list[float] = Field(
        [float(t) for t in range(1, 11)], min_length=1,
        description="Maxwellian temperatures T̂0 of the test laws.")
    n_mc: int = Field(100_000, ge=100, description="Fresh MC particles per temperature.")
    n_surrogate: int = Field(1_000_000, ge=100, description="Surrogate samples per temperature.")
    marginal_temperatures: list[float] = Field(
        [2.0, 5.0, 10.0], description="Temperatures whose 2-D (p, ξ) marginals are plotted.")
    relative_from: float = Field(
        4.0, description="Temperatures at or above use the relative tolerance, below the "
                         "absolute one.")
    rel_tol: float = goal(0.03, "relative error of every rate at T̂0 ≥ relative_from (issue 11).")
    abs_tol: float = goal(0.0005, "absolute error of every rate below relative_from (issue 11).")
    bias_goal_se: float = goal(3.0, "|surrogate − MC rate| at most this many combined binomial "
                                    "standard errors at every temperature (issue 11).")
    energy_goal: float = goal(2.0, "energy-distance ratio to the MC noise floor of every law "
                                   "the pipeline validates (issue 11).")
    mc_seed: int = Field(2_000_003, ge=0, description="Seed of the MC reference sets.")

    @model_validator(mode="after")
    def _marginals_in_sweep(self) -> RunawaySettings:
        if any(t <= 0 for t in self.temperatures):
            raise ValueError(f"temperatures: must be > 0, got {self.temperatures}")
        missing = sorted(set(self.marginal_temperatures) - set(self.temperatures))
        if missing:
            raise ValueError(f"marginal_temperatures: {missing} not in temperatures "
                             f"{self.temperatures}")
        return self


class AbcSettings(StudySettings):
    """Experiment 3: marginals of the paper's law and the 22 × 22 parameter study."""

    grid: int = Field(22, ge=2, description="Grid points per axis of the parameter study.")
    grid_samples: int = Field(
        20_000, ge=100, description="Surrogate samples per grid law (the paper's 20,000).")
    reference_per_axis: int = Field(
        5, ge=1, description="MC references on a reference_per_axis² sub-lattice of the grid.")
    reference_samples: int = Field(
        100_000, ge=100, description="MC particles, and surrogate samples, per reference law.")
    max_error_goal: float = goal(0.02, "max |error| on the references.")
    mean_error_goal: float = goal(0.005, "mean |error| on the references.")
    energy_goal: float = goal(1.5, "energy-distance ratio.")
    mc_seed: int = Field(3_000_017, ge=0, description="Seed of the MC reference sets.")
    baseline_model: ModelConfig | None = Field(
        None, description="A second surrogate trained and studied the same way for comparison "
                          "(e.g. the zuko NSF); None: PRNF only.")
    baseline_training: TrainConfig | None = Field(
        None, description="Training settings of the baseline (default: those of the PRNF).")

    @model_validator(mode="after")
    def _subset_fits(self) -> AbcSettings:
        if self.reference_per_axis > self.grid:
            raise ValueError(f"reference_per_axis: {self.reference_per_axis} exceeds grid "
                             f"{self.grid}")
        return self


def _paper_training(**extra: Any) -> TrainConfig:
    return TrainConfig(preset="paper", progress=False, **extra)


PROFILES: dict[str, dict[str, StudySettings]] = {
    "bm1d": {
        "quick": Bm1dSettings(
            n_train=20_000, model=ModelConfig(hidden_width=64),
            training=TrainConfig(epochs=60, batch_size=256, lr=3e-3, progress=False)),
        "paper": Bm1dSettings(
            n_train=40_000, model=ModelConfig(preset="paper"), training=_paper_training()),
    },
    "runaway2d": {
        "quick": RunawaySettings(
            n_train=50_000, dtype="float32", model=ModelConfig(hidden_width=256, hidden_layers=3),
            # λ = 10: SW ratio 3.8 vs 15.5 at λ = 100 after 40 epochs (docs/results/accuracy.md)
            training=TrainConfig(epochs=150, batch_size=512, lr=2e-3, lam=10.0,
                                 progress=False)),
        "paper": RunawaySettings(
            n_train=40_000, model=ModelConfig(preset="paper"), training=_paper_training(),
            n_mc=1_000_000),
    },
    "abc3d": {
        "quick": AbcSettings(
            # λ = 10 and SiLU: SW ratio 4.3 vs 6.3 (λ = 100, tanh) after 100 epochs, at equal
            # CPU time (benchmarks/bench_accuracy.py, docs/results/accuracy.md)
            n_train=40_000, model=ModelConfig(hidden_width=256, activation="silu"),
            training=TrainConfig(epochs=200, batch_size=512, lr=2e-3, lam=10.0,
                                 progress=False),
            validation_samples=20_000,
            # the NSF without the periodic features: they made its validation NLL rise (overfit)
            # in benchmarks/bench_accuracy.py (docs/results/accuracy.md)
            baseline_model=ModelConfig(architecture="nsf", hidden_width=128, x0_period=None),
            baseline_training=TrainConfig(epochs=60, batch_size=512, lr=2e-3, progress=False)),
        "paper": AbcSettings(
            n_train=40_000, model=ModelConfig(preset="paper"), training=_paper_training(),
            validation_samples=20_000, reference_per_axis=8),
    },
}

SETTINGS_CLASSES: dict[str, type[StudySettings]] = {
    "bm1d": Bm1dSettings, "runaway2d": RunawaySettings, "abc3d": AbcSettings}


def resolve_settings(experiment: str, profile: str, overrides: dict[str, Any]
                     ) -> StudySettings:
    """The profile's settings with dotted-key ``overrides`` applied, validated as a whole."""
    if experiment not in PROFILES:
        raise ValueError(f"experiment: {experiment!r} is not one of {sorted(PROFILES)}")
    base = PROFILES[experiment][profile].model_dump(mode="json")
    # A preset sets fields at validation time; drop it so that overrides of those fields win.
    for section in ("model", "training", "baseline_model", "baseline_training"):
        if base.get(section):
            base[section].pop("preset", None)
    for key, value in overrides.items():  # the profile is complete: no section is created
        set_dotted(base, key, value, create=False)
    # Explicit epochs win over the profile's iterations (the paper preset's 30,000), as they
    # do over a preset's in TrainConfig: `--set training.epochs=5` trains 5 epochs.
    for key in overrides:
        section, _, name = key.rpartition(".")
        if (name == "epochs" and f"{section}.iterations" not in overrides
                and isinstance(base.get(section), dict)):
            base[section]["iterations"] = None
    return SETTINGS_CLASSES[experiment].model_validate(base)


__all__ = ["PROFILES", "AbcSettings", "Bm1dSettings", "Experiment", "Profile",
           "RunawaySettings", "StudySettings", "resolve_settings"]

