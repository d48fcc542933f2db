"""What a simulated dataset is: its configuration, its id, and the arrays of each chunk.

Randomness: chunk ``i`` uses ``SeedSequence(seed, spawn_key=(i,))`` (the i-th child of
``SeedSequence(seed)``) for both its initial states and its noise, so a dataset is bit-identical
whatever the number of workers or the order chunks run in.

The dataset id hashes everything that fixes the bits (:meth:`DatasetConfig.resolved`): besides
the configuration, the noise generator (``numpy-sfc64``, ``torch-cpu`` or ``torch-cuda``, a
function of device and dtype, fixed from the execution device when a run starts) and, for a
``samples_file`` initial law, the SHA-256 of the file's bytes; and ``compile: true`` when the
chunks run the compiled simulation step (which rounds differently; absent otherwise, so ids of
uncompiled datasets are unchanged). A store is resumed only with the
generator it was started with, never mixing two noise streams. The family id
(:meth:`DatasetConfig.family_id`) hashes the same fields but the size: chunk ``i`` is the same in
every config of a family, which is what lets a store grow (:func:`prnf_core.dataset.grow_dataset`).

Datasets over (t, θ). ``param_box`` names parameters of the problem's ``SDE.varying`` and a box
``[low, high]`` for each; every particle then gets its own θ (order: ``sorted(param_box)``),
stored in the array ``theta``, a pure function of (config, chunk) (:func:`chunk_theta`):

* ``param_design="sobol"`` (default): one scrambled Sobol sequence for the whole dataset, seeded
  by ``SeedSequence(seed, spawn_key=(2**31 - 1,))``; chunk ``[start, stop)`` takes its points
  ``start..stop-1`` (``fast_forward(start)``), so a prefix of a larger dataset is the same;
* ``"uniform"``: i.i.d. uniform in the box from the chunk's third child seed (its first two draw
  x0 and the noise, which are therefore the same with and without a ``param_box``).

``param_scale={name: "log"}`` draws that parameter's design uniformly in log θ over the box
(geometric spacing: as many particles from ×0.5 to ×1 of a field as from ×1 to ×2), and a model
trained on the store is conditioned on log θ (:class:`~prnf_core.models.Conditioning`).

With ``save_times`` this is the data of a surrogate conditioned on (t, θ)
(:meth:`prnf_core.dataset.Dataset.conditioned_tuples`). The id covers ``param_box`` and
``param_design`` only when ``param_box`` is set, so ids of other configs are unchanged.

>>> from prnf_core.dataset_config import DatasetConfig
>>> cfg = DatasetConfig(problem="bm1d", n_particles=1000, chunk_size=250)
>>> cfg.n_chunks, len(cfg.dataset_id())
(4, 16)
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from prnf_core.errors import ConfigError
from prnf_core.initial import InitialSpec, Uniform, parse_initial
from prnf_core.models.conditioning import check_param_scale, from_unit
from prnf_core.problems import get_problem
from prnf_core.sde import SDE
from prnf_core.simulate import (
    DType,
    NoiseGenerator,
    generator_device,
    noise_generator,
    save_steps,
    simulate,
    step_count,
)


class DatasetConfig(BaseModel):
    """Everything that determines a dataset's content; its hash is the dataset id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    problem: str = Field(description="Registered problem name (see `prnf problems`).")
    problem_params: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the problem's parameters."
    )
    initial: InitialSpec | None = Field(
        None, description="Initial distribution of x0; default: uniform on the training domain."
    )
    n_particles: int = Field(gt=0, description="Number of trajectories (rows).")
    chunk_size: int = Field(100_000, gt=0, description="Particles per chunk (unit of parallelism).")
    t_end: float | None = Field(None, gt=0, description="Horizon T; default: the problem's.")
    dt: float | None = Field(None, gt=0, description="Euler–Maruyama step; default: the problem's.")
    seed: int = Field(0, ge=0, description="Root seed; chunk i uses SeedSequence(seed, (i,)).")
    save_times: list[float] | None = Field(
        None, description="Times in [0, T] (on the dt grid) at which to keep snapshots."
    )
    dtype: DType = Field("float64", description="Simulation and storage precision.")
    noise_generator: NoiseGenerator | None = Field(
        None, description="Normal generator: numpy-sfc64 (CPU, float64), torch-cpu (CPU, "
                          "float32) or torch-cuda (GPU). Part of the id, since the same seed "
                          "gives other bits on another generator. Default: the one of the "
                          "execution device, fixed when the run starts.",
    )
    param_box: dict[str, tuple[float, float]] | None = Field(
        None, description="Per-particle parameters: name -> (low, high) for names in the "
                          "problem's SDE.varying; each particle gets its θ (stored in `theta`, "
                          "columns in sorted name order). None: every particle uses the "
                          "problem's parameters.",
    )
    param_design: Literal["sobol", "uniform"] = Field(
        "sobol", description="How θ fills param_box: a scrambled Sobol sequence over the whole "
                             "dataset, or i.i.d. uniform per chunk (both seeded by `seed`).",
    )
    param_scale: dict[str, Literal["linear", "log"]] | None = Field(
        None, description="Scale of the design per parameter of param_box: 'log' draws log θ "
                          "uniformly (needs low > 0; for a positive parameter spanning a factor "
                          "of several, such as a field) and conditions the model on log θ; "
                          "'linear' (the default) draws θ itself.",
    )
    compile: bool | None = Field(
        None, description="Simulate with the compiled step (simulate(compile=True): 2-3x "
                          "faster for runaway2d, other rounding, so part of the id when on). "
                          "None: the problem's SDE.compile (off for the built-in problems). A "
                          "chunk that cannot be compiled fails instead of running uncompiled.",
    )

    @field_validator("initial", mode="before")
    @classmethod
    def _parse_initial(cls, value: Any) -> Any:
        return None if value is None else parse_initial(value)

    @model_validator(mode="after")
    def _check_against_problem(self) -> DatasetConfig:
        sde = self.sde()
        if self.initial is not None and self.initial.dim != sde.dim:
            raise ValueError(
                f"initial: spec has dimension {self.initial.dim} but problem {self.problem!r} "
                f"has dimension {sde.dim}"
            )
        step_count(self.horizon, self.step)
        save_steps(self.save_times, self.horizon, self.step)
        if self.param_box is not None:
            _check_param_box(self.param_box, sde)
        if self.param_scale:
            check_param_scale(self.param_scale, self.param_box or {}, "param_scale")
        gen = self.noise_generator
        right = None if gen is None else noise_generator(generator_device(gen), self.dtype)
        if gen != right:
            raise ValueError(
                f"noise_generator: {gen!r} is not the generator of {self.dtype} on "
                f"{generator_device(gen)} ({right!r} is); set it to {right!r} or leave it unset"
            )
        return self

    def generator(self) -> NoiseGenerator:
        """The noise generator: the configured one, else the default device's (CUDA if any)."""
        return self.noise_generator or noise_generator(None, self.dtype)

    def on_device(self, device: str | None) -> DatasetConfig:
        """This config with its noise generator fixed for a run on ``device``.

        What every run calls first, so that the id it computes, the store it opens and the
        chunks it simulates agree on the generator. ``device=None`` keeps a configured
        generator (the run then simulates on its device) and otherwise takes the default
        device's.

        Raises:
            ConfigError: the config names another generator than ``device`` uses.
        """
        if device is None and self.noise_generator is not None:
            return self
        gen = noise_generator(device, self.dtype)
        if self.noise_generator is None:
            return self.model_copy(update={"noise_generator": gen})
        if gen != self.noise_generator:
            raise ConfigError(
                f"noise_generator: the dataset uses {self.noise_generator!r} but device "
                f"{device!r} ({self.dtype}) uses {gen!r}; run it on "
                f"{generator_device(self.noise_generator)} (execution.device) or leave "
                "noise_generator unset"
            )
        return self

    def sde(self) -> SDE:
        return get_problem(self.problem, **self.problem_params)

    @property
    def horizon(self) -> float:
        return self.t_end if self.t_end is not None else self.sde().t_end

    @property
    def step(self) -> float:
        return self.dt if self.dt is not None else self.sde().dt

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_particles / self.chunk_size)

    def initial_spec(self) -> InitialSpec:
        if self.initial is not None:
            return self.initial
        low, high = self.sde().domain
        return Uniform(low=list(low), high=list(high))

    def chunk_bounds(self, index: int) -> tuple[int, int]:
        start = index * self.chunk_size
        return start, min(start + self.chunk_size, self.n_particles)

    def resolved(self) -> dict[str, Any]:
        """The config with every default filled in (problem parameters too): what is hashed.

        Holds what fixes the bits and nothing else: the noise generator (:meth:`generator`),
        the initial law's identity (a samples file's content hash, not its path) and whether
        the step is compiled (:attr:`compiled`).
        """
        sde = self.sde()
        return {
            "problem": self.problem,
            "problem_params": sde.describe()["params"],
            "initial": self.initial_spec().identity(),
            "n_particles": self.n_particles,
            "chunk_size": self.chunk_size,
            "t_end": float(self.horizon),
            "dt": float(self.step),
            "seed": self.seed,
            "save_times": self.save_times,
            "dtype": self.dtype,
            "noise_generator": self.generator(),
            **self._param_fields(),
            # only when on: the ids of uncompiled datasets stay what they were
            **({"compile": True} if self.compiled else {}),
        }

    @property
    def compiled(self) -> bool:
        """Whether chunks run the compiled step: ``compile``, else the problem's ``SDE.compile``."""
        return self.compile if self.compile is not None else self.sde().compile

    def _param_fields(self) -> dict[str, Any]:
        # only when set: the ids of configs without per-particle parameters stay what they were
        if self.param_box is None:
            return {}
        logs = self.log_params
        return {"param_box": {k: [float(lo), float(hi)] for k, (lo, hi) in
                              sorted(self.param_box.items())},
                "param_design": self.param_design,
                # only when some are on a log scale: ids of linear designs stay what they were
                **({"param_scale": {k: "log" for k in logs}} if logs else {})}

    @property
    def log_params(self) -> list[str]:
        """The parameters of ``param_box`` designed (and conditioned on) on a log scale."""
        return sorted(k for k, kind in (self.param_scale or {}).items() if kind == "log")

    @property
    def param_names(self) -> list[str]:
        """The per-particle parameters, in the column order of ``theta``: ``sorted(param_box)``."""
        return sorted(self.param_box) if self.param_box else []

    def dataset_id(self) -> str:
        return _short_hash(self.resolved())

    def family_id(self) -> str:
        """The id of the dataset family: :meth:`resolved` without ``n_particles``.

        Every config of a family gives chunk ``i`` the same content (its seeds depend only on
        ``seed`` and ``i``), so the stores of a family differ only in how many chunks they
        hold, and a store can grow within its family (:func:`prnf_core.dataset.grow_dataset`).

        >>> small = DatasetConfig(problem="bm1d", n_particles=200, chunk_size=100)
        >>> large = DatasetConfig(problem="bm1d", n_particles=400, chunk_size=100)
        >>> len(small.family_id()), small.family_id() == large.family_id()
        (16, True)
        >>> small.dataset_id() == large.dataset_id()
        False
        >>> small.family_id() == DatasetConfig(problem="bm1d", n_particles=200, chunk_size=100,
        ...                                    seed=1).family_id()
        False
        """
        return _short_hash(family_fields(self.resolved()))


def family_fields(resolved: dict[str, Any]) -> dict[str, Any]:
    """The fields of a resolved config that fix its family (all but ``n_particles``)."""
    return {k: v for k, v in resolved.items() if k != "n_particles"}


def _short_hash(fields: dict[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _check_param_box(box: dict[str, tuple[float, float]], sde: SDE) -> None:
    allowed = list(sde.varying)
    if not allowed:
        raise ValueError(f"param_box: problem {sde.name!r} has no parameters that vary per "
                         "particle (its SDE.varying is empty); leave param_box unset")
    if not box:
        raise ValueError(f"param_box: name at least one parameter; allowed: {allowed}")
    unknown = sorted(k for k in box if k not in allowed)
    if unknown:
        raise ValueError(f"param_box: problem {sde.name!r} cannot vary {unknown} per particle; "
                         f"allowed: {allowed}")
    for name, (low, high) in box.items():
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"param_box: {name!r} needs finite low < high, got "
                             f"[{low}, {high}]")


def chunk_seed(seed: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(index,))


SOBOL_SPAWN_KEY = 2**31 - 1
"""The spawn key of the Sobol design's seed: ``SeedSequence(seed, spawn_key=(2**31 - 1,))``, a
child no chunk uses (chunk ``i`` is child ``i``)."""


def chunk_theta(config: DatasetConfig, index: int) -> np.ndarray | None:
    """Per-particle parameters ``(stop - start, p)`` float64 of chunk ``index`` (``None`` without
    ``param_box``): a pure function of (config, index), columns in ``config.param_names`` order.

    >>> cfg = DatasetConfig(problem="bm1d", n_particles=8, chunk_size=4,
    ...                     param_box={"mu": (0.0, 2.0), "sigma": (0.5, 1.0)})
    >>> theta = chunk_theta(cfg, 1)
    >>> theta.shape, bool(((theta >= [0.0, 0.5]) & (theta < [2.0, 1.0])).all())
    ((4, 2), True)
    >>> geometric = DatasetConfig(problem="bm1d", n_particles=4000, chunk_size=4000,
    ...                           param_box={"sigma": (0.1, 10.0)}, param_scale={"sigma": "log"})
    >>> round(float(np.mean(chunk_theta(geometric, 0)[:, 0] < 1.0)), 2)  # geometric midpoint 1
    0.5
    """
    if config.param_box is None:
        return None
    names = config.param_names
    start, stop = config.chunk_bounds(index)
    if config.param_design == "sobol":
        from scipy.stats import qmc

        seq = np.random.SeedSequence(config.seed, spawn_key=(SOBOL_SPAWN_KEY,))
        sampler = qmc.Sobol(d=len(names), scramble=True, rng=np.random.default_rng(seq))
        with warnings.catch_warnings():  # "balance properties need n = 2^m": the whole
            warnings.simplefilter("ignore", UserWarning)  # sequence is balanced, not each chunk
            if start:  # scipy refuses fast_forward(0)
                sampler.fast_forward(start)
            unit = sampler.random(stop - start)
    else:
        theta_seq = chunk_seed(config.seed, index).spawn(3)[2]
        unit = np.random.default_rng(theta_seq).random((stop - start, len(names)))
    theta = from_unit(unit, [config.param_box[k][0] for k in names],
                      [config.param_box[k][1] for k in names],
                      [k in config.log_params for k in names])
    return np.ascontiguousarray(theta, dtype=np.float64)


def simulate_chunk_arrays(
    config: DatasetConfig, index: int, device: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """x0, xT, snapshots and theta of chunk ``index``: a pure function of (config, index).

    ``theta`` (per-particle parameters, :func:`chunk_theta`) is ``None`` without ``param_box``.

    Runs on ``device`` (default: the device of the config's noise generator, see
    :meth:`DatasetConfig.on_device`); a device with another generator is refused.
    """
    config = config.on_device(device)
    device = device or generator_device(config.generator())
    start, stop = config.chunk_bounds(index)
    x0_seq, noise_seq = chunk_seed(config.seed, index).spawn(2)  # theta: the 3rd (uniform)
    x0 = config.initial_spec().sample(stop - start, np.random.default_rng(x0_seq))
    dtype = np.float64 if config.dtype == "float64" else np.float32
    x0 = np.ascontiguousarray(x0, dtype=dtype)
    sde = config.sde()
    theta = chunk_theta(config, index)
    values = None if theta is None else {k: theta[:, j] for j, k in
                                          enumerate(config.param_names)}
    try:
        result = simulate(sde, x0, config.horizon, config.step, seed=noise_seq,
                          save_times=config.save_times, dtype=config.dtype, device=device,
                          param_values=values, compile=config.compiled, compile_fallback=False)
    except Exception as exc:
        if hasattr(exc, "in_chunk"):
            raise exc.in_chunk(index) from None
        raise
    return x0, result.xT, result.snapshots, theta
