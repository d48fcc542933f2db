"""Typed parameters of the pipeline and validate flows (Prefect UI forms, CLI, YAML), and the one
way every flow's parameters are filled from a YAML file, dotted overrides and CLI options
(:func:`build_params`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from prnf_core.cluster import ExecutionConfig
from prnf_core.dataset import DatasetConfig
from prnf_core.errors import ConfigError
from prnf_core.initial import InitialSpec, parse_initial
from prnf_core.models import Conditioning, ModelConfig
from prnf_core.paths import is_url
from prnf_core.problems import default_test_laws, get_problem
from prnf_core.simulate import DType
from prnf_core.train import TrainConfig
from prnf_core.validation.kl import KL_SAMPLES
from prnf_core.verdict import Fingerprint


class ConditionGrid(BaseModel):
    """The (t, θ) points at which a surrogate conditioned on time and SDE parameters is
    validated: the product of ``times`` and every parameter's values."""

    model_config = ConfigDict(extra="forbid")

    times: list[float] | None = Field(
        None, description="Times t of X_t to validate at (each on the dt grid and inside the "
                          "trained time range); default: the range's midpoint (on the dt grid) "
                          "and its end. Only for a model conditioned on time.",
    )
    params: dict[str, list[float]] | None = Field(
        None, description="Values of conditioned SDE parameters, e.g. {mu: [0.8, 1.6]} (inside "
                          "the trained box); a parameter left out is validated at 25 % and 75 % "
                          "of its box.",
    )

    @field_validator("times")
    @classmethod
    def _times(cls, value: list[float] | None) -> list[float] | None:
        if value is None:
            return None
        if not value or any(not math.isfinite(t) or t <= 0 for t in value):
            raise ValueError(f"must be a non-empty list of finite times > 0, got {value}")
        return sorted(set(value))

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, list[float]] | None) -> dict[str, list[float]] | None:
        if value is None:
            return None
        for name, values in value.items():
            if not values or any(not math.isfinite(v) for v in values):
                raise ValueError(f"{name}: needs a non-empty list of finite values, got {values}")
        return {name: sorted(set(values)) for name, values in sorted(value.items())}


def _resamples(value: int) -> int:
    if value == 1:
        raise ValueError("must be 0 (no standard error) or at least 2 resamples")
    return value


#: Bootstrap resamples of a standard error: 0 (none) or at least 2.
BootstrapCount = Annotated[int, AfterValidator(_resamples)]

#: An initial law given as anything :func:`~prnf_core.initial.parse_initial` reads (a mapping,
#: JSON/YAML text, a spec file); its errors name the field ``initial``.
InitialSpecField = Annotated[InitialSpec, BeforeValidator(parse_initial)]


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
    bootstrap: BootstrapCount = Field(
        30, ge=0,
        description="Bootstrap resamples of the surrogate's samples for the standard error of "
                    "each SW ratio (0: none, and then no champion is ever replaced).",
    )
    kl_samples: int = Field(
        KL_SAMPLES, ge=100,
        description="Problems with an exact transition: exact draws of X_T, and draws of x0 "
                    "for both mixtures, of each law's exact KL (its SE shrinks as "
                    "1/sqrt(kl_samples), its cost grows as kl_samples squared).",
    )
    promotion_n_se: float = Field(
        2.0, gt=0,
        description="A challenger replaces the champion only if its score is better by more "
                    "than this many combined standard errors on the same test sets.",
    )
    conditions: ConditionGrid | None = Field(
        None,
        description="A surrogate conditioned on (t, θ) (trained with save_times and/or "
                    "param_box) is validated at every point of this grid, for every law (metrics "
                    "val/<law>_t_<t>_<param>_<value>/...; the gate takes the worst). Empty: "
                    "times at the midpoint and the end of the trained time range, each parameter "
                    "at 25 % and 75 % of its box. Refused for a model without conditioning.",
    )

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


class RetentionConfig(BaseModel):
    """How much a scheduled pipeline keeps of its registered versions and test sets."""

    model_config = ConfigDict(extra="forbid")

    keep_last: int = Field(
        5, ge=1, description="Model versions kept: the ones holding the champion or challenger "
        "alias, and this many of the highest version numbers.")
    test_set_max_age_days: float | None = Field(
        14, ge=0, description="Delete MC test sets older than this many days (never the fixed "
        "regression sets nor those the champion needs); empty: keep test sets forever.")
    delete_model_dirs: bool = Field(
        True, description="Also delete the local trained model directory of a deleted "
        "version (its `model_dir` tag), unless a kept version uses it.")


class FineTuneConfig(BaseModel):
    """How a warm-started challenger is fine-tuned from the champion's weights."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1, description="Epochs of fine-tuning on the (grown) data.")
    lr: float = Field(3e-4, gt=0, description="Peak learning rate of fine-tuning (the "
                                              "training schedule's shape is kept): small, "
                                              "since the start weights are already annealed.")


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
    grow_to: int | None = Field(
        None, gt=0,
        description="Scheduled runs: cap of a growing training set. When set, the training "
                    "data is one dataset family (this configuration, any size): each run adds "
                    "grow_by particles of new chunks (seeds SeedSequence(seed, (chunk,))) until "
                    "it holds grow_to; None: one fixed store of n_train particles.",
    )
    grow_by: int | None = Field(
        None, gt=0, description="Particles added per run when grow_to is set (whole chunks); "
                                "default: n_train.",
    )
    warm_start: bool = Field(
        False,
        description="Start the challenger from the champion's weights when the champion has "
                    "the same architecture and configuration fingerprint, fine-tuning with the "
                    "fine_tune settings; otherwise train from scratch. The choice is logged.",
    )
    fine_tune: FineTuneConfig = Field(
        default_factory=FineTuneConfig, description="Optimizer settings of a warm start."
    )
    fresh_test_set: bool = Field(
        False,
        description="Also simulate a fresh test set per law with this run's seed (fresh_seed): "
                    "champion and challenger are scored on it (the promotion is decided there, "
                    "so no model is selected on one test set forever) and on the fixed "
                    "regression set (validation.seed, comparable across runs); both recorded. "
                    "The champion's fresh scores also go to its health series.",
    )
    fresh_seed: int | None = Field(
        None, ge=0, description="Seed of the fresh test set; default: drawn from the clock and "
                                "recorded in the run.",
    )
    retention: RetentionConfig | None = Field(
        None, description="What to delete after the run (old model versions and test sets); "
                          "None: keep everything.",
    )
    save_times: list[float] | None = Field(
        None,
        description="Times in (0, T] (on the dt grid) at which the training set keeps "
                    "snapshots: with two or more, ONE surrogate of X_t for every t between the "
                    "first and the last is trained (conditioned on t) and validated at a grid "
                    "of times (validation.conditions). Empty: one horizon T.",
    )
    param_box: dict[str, tuple[float, float]] | None = Field(
        None,
        description="SDE parameters varied per training particle, name -> [low, high] (names "
                    "from the problem's SDE.varying, e.g. {mu: [0.5, 2.0]} for ou1d_rate): the "
                    "surrogate is conditioned on them and validated at a grid of their values "
                    "(validation.conditions). Empty: the fixed problem_params.",
    )
    param_design: Literal["sobol", "uniform"] = Field(
        "sobol", description="How θ fills param_box: a scrambled Sobol sequence over the whole "
                             "training set, or i.i.d. uniform per chunk (both seeded by seed).",
    )
    param_scale: dict[str, Literal["linear", "log"]] | None = Field(
        None, description="Scale per parameter of param_box, e.g. {E0: log}: 'log' draws log θ "
                          "uniformly and conditions the surrogate on log θ (needs low > 0; for a "
                          "positive parameter spanning a factor of several); default 'linear'.",
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
        self._check_growth()
        for name, law in self.validation.resolved_laws(self.problem, self.problem_params).items():
            if law.dim != sde.dim:
                raise ValueError(f"validation.laws.{name}: dimension {law.dim}, problem "
                                 f"{self.problem!r} has dimension {sde.dim}")
        self.condition_points()  # the validation grid fits the model's box and the dt grid
        return self

    def _check_growth(self) -> None:
        if self.grow_to is None:
            if self.grow_by is not None:
                raise ValueError("grow_by: only used with grow_to (the cap); set grow_to too")
            return
        for name in ("n_train", "grow_by", "grow_to"):
            value = getattr(self, name)
            if value is not None and value % self.chunk_size:
                raise ValueError(f"{name}: {value} is not a whole number of chunks of "
                                 f"chunk_size={self.chunk_size} (a growing store adds whole "
                                 "chunks, so that chunk i is the same at any size)")
        if self.grow_to < self.n_train:
            raise ValueError(f"grow_to: {self.grow_to} is below n_train={self.n_train}")

    def training_dataset(self) -> DatasetConfig:
        over = ({} if self.param_box is None else
                {"param_box": self.param_box, "param_design": self.param_design,
                 "param_scale": self.param_scale})
        return DatasetConfig(problem=self.problem, problem_params=self.problem_params,
                             n_particles=self.n_train, chunk_size=self.chunk_size,
                             t_end=self.t_end, dt=self.dt, seed=self.seed, dtype=self.dtype,
                             save_times=self.save_times, **over)

    def fingerprint(self) -> Fingerprint:
        """What the surrogate this pipeline trains approximates (its registered-model name
        and the comparability of champions follow from it)."""
        box = self.surrogate_model().conditioning
        return Fingerprint.of(self.problem, self.problem_params,
                              self.training_dataset().horizon,
                              None if box is None else box.model_dump(mode="json"))

    def surrogate_model(self) -> ModelConfig:
        """``model`` with the conditioning box of the training data (snapshot times and
        ``param_box``) when it declares none: what training derives from the store."""
        box = Conditioning.of_dataset(self.save_times, self.param_box, self.param_scale)
        if box is None or self.model.conditioning is not None:
            return self.model
        return ModelConfig.model_validate({**self.model.model_dump(mode="json"),
                                           "conditioning": box.model_dump(mode="json")})

    def condition_points(self, box: Conditioning | str | None = "trained"
                         ) -> list[dict[str, Any]] | None:
        """The (t, θ) points a model with conditioning ``box`` is validated at
        (:func:`condition_points`); default box: the one this pipeline trains."""
        if box == "trained":
            box = self.surrogate_model().conditioning
        data = self.training_dataset()
        return condition_points(box, self.validation.conditions, data.horizon, data.step)

    def validation_sets(self, laws: Mapping[str, InitialSpec], box: Conditioning | None,
                        seed: int | None = None
                        ) -> tuple[dict[str, InitialSpec], dict[str, DatasetConfig],
                                   dict[str, dict[str, Any]] | None]:
        """What a model with conditioning ``box`` is validated on: ``(laws, test set configs,
        conditions)`` by case name. Without a box, the laws as given and ``conditions`` None;
        with one, each law at each grid point (:meth:`condition_points`) as the case
        ``"<law>@t=<t>,<param>=<value>"`` (metric keys: :func:`~prnf_core.validation.metric_key`
        of it), its MC test set simulated at that point, ``conditions[case] = {"t": t,
        "params": θ}``."""
        points = self.condition_points(box)
        if points is None:
            return dict(laws), {k: self.test_dataset(v, seed) for k, v in laws.items()}, None
        cases, configs, conditions = {}, {}, {}
        for law, spec in laws.items():
            for point in points:
                case = f"{law}@{condition_label(point, box)}"
                cases[case], conditions[case] = spec, point
                configs[case] = self.test_dataset(spec, seed, point)
        return cases, configs, conditions

    def test_dataset(self, law: InitialSpec, seed: int | None = None,
                     condition: Mapping[str, Any] | None = None) -> DatasetConfig:
        """The MC test set of one law: two independent halves of ``n_samples`` each, drawn
        with ``seed`` (default: ``validation.seed``, the fixed regression set); at a grid point
        ``condition`` (``{"t": t, "params": θ}``) simulated to ``t`` (same dt) with the
        problem's parameters updated by ``θ``."""
        problem_params, t_end = dict(self.problem_params), self.t_end
        if condition is not None:
            problem_params.update(condition.get("params") or {})
            t_end = condition["t"]
        return DatasetConfig(problem=self.problem, problem_params=problem_params,
                             initial=law, n_particles=2 * self.validation.n_samples,
                             chunk_size=self.validation.chunk_size, t_end=t_end, dt=self.dt,
                             seed=self.validation.seed if seed is None else seed,
                             dtype=self.dtype)


def describe_box(box: Conditioning) -> str:
    """The box as a user reads it.

    >>> describe_box(Conditioning(time=(0.25, 1.0), params={"mu": (0.5, 2.0)}))
    't in [0.25, 1.0], mu in [0.5, 2.0]'
    """
    bounds = zip(box.names, box.bounds(), strict=True)
    return ", ".join(f"{name} in [{float(lo)!r}, {float(hi)!r}]" for name, (lo, hi) in bounds)


def condition_label(point: Mapping[str, Any], box: Conditioning) -> str:
    """A grid point as a case suffix: ``t=...`` (for a time-conditioned model), then the
    parameters in sorted order.

    >>> box = Conditioning(time=(0.25, 1.0), params={"mu": (0.5, 2.0)})
    >>> condition_label({"t": 0.625, "params": {"mu": 0.875}}, box)
    't=0.625,mu=0.875'
    """
    parts = [f"t={point['t']:.6g}"] if box.time is not None else []
    return ",".join(parts + [f"{k}={v:.6g}" for k, v in sorted(point["params"].items())])


def condition_points(box: Conditioning | None, grid: ConditionGrid | None, horizon: float,
                     dt: float) -> list[dict[str, Any]] | None:
    """The validation grid ``[{"t": t, "params": θ}, ...]`` of a model conditioned on ``box``
    (None for a model without conditioning): the product of the times and each parameter's
    values of ``grid``, defaults for what it leaves out: the midpoint (on the ``dt`` grid) and
    the end of the time range (``horizon`` without one), each parameter at 25 % and 75 % of its
    box (on its scale: of log θ for a log-scale parameter).

    Raises:
        ConfigError: naming ``validation.conditions`` and the model's box: a grid for a model
            without conditioning, times for a model of one horizon, a parameter it is not
            conditioned on, a time off the dt grid, a point outside the box.

    >>> box = Conditioning(time=(0.25, 1.0), params={"mu": (0.5, 2.0)})
    >>> [(p["t"], p["params"]["mu"]) for p in condition_points(box, None, 1.0, 0.005)]
    [(0.625, 0.875), (0.625, 1.625), (1.0, 0.875), (1.0, 1.625)]
    """
    where = "validation.conditions"
    if box is None:
        if grid is not None:
            raise ConfigError(f"{where}: the model has no conditioning (one horizon, fixed "
                              "parameters): set save_times and/or param_box, or leave "
                              f"{where} unset")
        return None
    grid = grid or ConditionGrid()
    known = f"the model's conditioning box: {describe_box(box)}"
    if grid.times is not None and box.time is None:
        raise ConfigError(f"{where}.times: the model is not conditioned on time (one horizon "
                          f"T={horizon:g}; {known}); leave times unset")
    unknown = sorted(set(grid.params or {}) - set(box.params))
    if unknown:
        raise ConfigError(f"{where}.params: {unknown} not conditioned on ({known})")
    if box.time is None:
        times = [float(horizon)]
    elif grid.times is not None:
        times = grid.times
    else:
        low, high = box.time
        times = sorted({_on_grid((low + high) / 2, dt), float(high)})
    for t in times:
        steps = round(t / dt)
        if steps < 1 or abs(steps * dt - t) > 1e-9 * max(t, 1.0):
            raise ConfigError(f"{where}.times: {t!r} is not on the dt={dt:g} grid (a test set "
                              "is simulated to each time)")
    given = grid.params or {}
    values = {name: given.get(name) or [box.param_at(name, 0.25), box.param_at(name, 0.75)]
              for name in sorted(box.params)}
    points = [{"t": float(t), "params": {}} for t in times]
    for name, options in values.items():
        points = [{"t": p["t"], "params": {**p["params"], name: float(v)}}
                  for p in points for v in options]
    rows = np.array([([p["t"]] if box.time is not None else [])
                     + [p["params"][k] for k in sorted(box.params)] for p in points])
    try:
        box.check(rows)
    except ConfigError as exc:
        message = str(exc).split("; pass allow_outside")[0]
        raise ConfigError(f"{where}: {message} ({known})") from None
    return points


def _on_grid(t: float, dt: float) -> float:
    """``t`` rounded to the nearest multiple of ``dt`` (at least one step)."""
    return round(max(1, round(t / dt)) * dt, 12)


def pipeline_for_model(source: str, meta: dict[str, Any], check: CheckParams) -> PipelineParams:
    """The pipeline settings a saved model was trained with, from its metadata ``meta``
    (problem, horizon, precision and architecture), validated with ``check``'s test laws,
    thresholds and execution: the one rebuild the validate and register flows share.

    A model whose metadata does not fit its problem (another dimension, edited files) is a
    :class:`ConfigError` naming the model and the fields, not a traceback from inside a flow.
    """
    problem = meta["problem"]
    trained = meta.get("dataset_config") or {}  # else: the problem's own horizon
    fields = {"problem": problem["name"],
              "problem_params": trained.get("problem_params", problem["params"]),
              "t_end": trained.get("t_end", problem["t_end"]),
              "dt": trained.get("dt", problem["dt"]), "dtype": trained.get("dtype", "float64"),
              "model": meta["model"], "validation": check.validation,
              "execution": check.execution}
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


# ---- Filling a parameters model: YAML file, then dotted overrides, then options --------------

Params = TypeVar("Params", bound=BaseModel)


def load_yaml(path: Path | str | None) -> dict[str, Any]:
    """The mapping a YAML file holds (``{}`` for no file); errors name ``--config``."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: no such file {str(path)!r}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--config: {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config: {path} must hold a mapping")
    return data


def parse_assignments(items: Iterable[str] | None, option: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` strings as ``{KEY: value}``, each value read as YAML (``5``, ``[0, 1]``,
    ``{kind: point_mass, point: [0]}``); errors name ``option``.

    >>> parse_assignments(["training.epochs=5", "lambdas=[0, 1]"])
    {'training.epochs': 5, 'lambdas': [0, 1]}
    """
    result = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option}: expected KEY=VALUE, got {item!r}")
        try:
            result[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{option}: value of {key!r} is not valid YAML: {exc}") from None
    return result


def set_dotted(target: dict[str, Any], key: str, value: Any, *, create: bool = True) -> None:
    """``target[a][b][c] = value`` for the dotted ``key`` ``"a.b.c"``, in place.

    With ``create``, a section on the way that is absent or null becomes an empty mapping (a YAML
    file or the options name only what they set). Without it, ``target`` is a model's complete
    dump, so a section that is not a mapping there is refused (an unknown or unset section).

    >>> raw = {"training": {"lr": 0.1}}
    >>> set_dotted(raw, "training.epochs", 5); set_dotted(raw, "model.hidden_width", 8); raw
    {'training': {'lr': 0.1, 'epochs': 5}, 'model': {'hidden_width': 8}}
    """
    parts = key.split(".")
    node = target
    for i in range(1, len(parts)):
        node = _section(node, parts[:i], create, key)
    node[parts[-1]] = value


def _section(node: dict[str, Any], parts: list[str], create: bool, key: str) -> dict[str, Any]:
    """``node[parts[-1]]`` as a mapping of its own (a copy, which ``node`` now holds)."""
    child = node.get(parts[-1])
    if create and child is None:
        child = {}
    elif not isinstance(child, dict):
        where = ".".join(parts)
        raise ConfigError(f"{where}: must be a mapping, got {child!r}" if create else
                          f"overrides: {where!r} is not a section, cannot set {key!r}")
    node[parts[-1]] = child = dict(child)  # YAML aliases share one mapping: keep them apart
    return child


def from_cwd(path: str | None) -> str | None:
    """A relative path typed in a shell means the working directory; the flows would take it
    under the data root (``prnf_core.paths``), so the CLI passes it on as an absolute path."""
    if not path or is_url(path):
        return path
    return os.path.abspath(os.path.expanduser(path))


def build_params(model: type[Params], *, config: Path | str | None = None,
                 sets: Iterable[str] | None = None, options: Mapping[str, Any] | None = None,
                 defaults: Mapping[str, Any] | None = None, sections: Iterable[str] = (),
                 keep: Iterable[str] | None = None, paths: Iterable[str] = ()) -> Params:
    """``model`` filled from, in this order (a later source wins):

    1. the YAML file ``config`` (only its top-level ``keep`` sections, when given);
    2. ``sets``: dotted ``KEY=VALUE`` overrides of any field (``--set training.epochs=5``);
    3. ``options``: dotted key -> value of the explicit CLI options (``None``: not given);

    then ``defaults`` (dotted key -> value) fill what is still absent, the ``sections`` are
    made mappings (absent or null: empty), and a string at a dotted key of ``paths`` is taken
    from the working directory (:func:`from_cwd`). The model validates the whole: a bad value is
    a ``ValidationError`` naming the dotted field (and, for a choice, the allowed values), bad
    syntax a :class:`ConfigError` naming the option. Presets and the pipeline's training
    defaults apply at validation, so they fill only the fields that are still absent.

    >>> from prnf_core.train import TrainConfig
    >>> build_params(TrainConfig, sets=["epochs=3"], options={"lr": None, "lam": 0.5}).epochs
    3
    """
    raw = load_yaml(config)
    if keep is not None:
        raw = {k: raw[k] for k in keep if k in raw}
    for key, value in [*parse_assignments(sets).items(), *(options or {}).items()]:
        if value is not None:
            set_dotted(raw, key, value)
    for key in sections:
        _section(raw, [key], True, key)
    for key, value in (defaults or {}).items():
        if _get_dotted(raw, key, _ABSENT) is _ABSENT:
            set_dotted(raw, key, value)
    for key in paths:
        if isinstance(path := _get_dotted(raw, key), str):
            set_dotted(raw, key, from_cwd(path))
    return model.model_validate(raw)


_ABSENT = object()


def _get_dotted(raw: Mapping[str, Any], key: str, missing: Any = None) -> Any:
    node: Any = raw
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return missing
        node = node[part]
    return node
