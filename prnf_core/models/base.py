r"""The interface every conditional surrogate of :math:`p(X_T \mid X_0 = x_0)` implements.

A :class:`ConditionalSampler` works in physical units: it holds the z-scoring statistics of
:math:`x_0` (and of an optional extra condition vector ``c``) and of :math:`y = X_T`, fitted on
the training split and saved with the weights. Subclasses implement two maps in normalized units:

* ``_log_prob_normalized(yn, ctx) -> (n,)`` the log-density of ``yn`` given the context;
* ``_sample_normalized(ctx, generator) -> (n, d)``.

Physical log-density: :math:`\log q(y\mid x_0) = \log q_n(\hat y \mid \hat x_0) - \sum_i \log s_i`
with :math:`\hat y = (y - m)/s` (change of variables of the affine normalization). A model
conditioned on time scales the increment :math:`y - x_0` by statistics of the time instead,
:math:`m(t)` and :math:`s(t)` (:mod:`prnf_core.models.time_scaling`).

Conditioned models (``ModelConfig.conditioning``, :mod:`prnf_core.models.conditioning`) learn
:math:`q(y \mid x_0;\, c) \approx p(X_t = y \mid X_0 = x_0;\, θ)` for every condition
:math:`c = (t, θ)` in a declared box; the public methods take ``t=`` and ``params=`` (or raw
``cond`` rows), refuse conditions outside the box unless ``allow_outside=True``, and the
condition features are normalized from the box to :math:`[-1, 1]`.

Density of :math:`X_T` under an initial law :math:`p_0`:
:math:`p_T(y) = \mathbb{E}_{x_0\sim p_0}[q(y\mid x_0)] \approx \frac1K\sum_k q(y\mid x_0^{(k)})`
(:meth:`ConditionalSampler.mixture_log_prob`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_serializer, model_validator
from torch import nn

from prnf_core.errors import ConfigError
from prnf_core.initial import parse_initial
from prnf_core.models import atoms, time_scaling
from prnf_core.models.conditioning import Conditioning
from prnf_core.paths import atomic_path
from prnf_core.simulate import default_device
from prnf_core.trust import (
    DEFAULT_COVERAGE_N,
    Coverage,
    TrainingDomain,
    coverage,
    predates_domain,
)

Architecture = Literal["prnf", "nsf"]
Activation = Literal["tanh", "silu", "softplus", "gelu", "elu"]
ArrayLike = np.ndarray | torch.Tensor


#: Values each preset gives to the fields the user did not set (explicit values win).
MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"hidden_width": 512, "hidden_layers": 2, "activation": "tanh"},
}


def fill_from_preset(data: Any, values: Any) -> Any:
    """Raw input ``data`` with the keys it does not give filled from its preset, whose values
    are ``values(preset_name, data)``: explicit values always win.

    Used by ``mode="before"`` validators: after validation a default and an explicit value of
    the same field can no longer be told apart.
    """
    if isinstance(data, dict) and isinstance(data.get("preset"), str):
        return {**values(data["preset"], data), **data}
    return data


class ModelConfig(BaseModel):
    """Architecture and size of a surrogate. ``preset="paper"`` = 2 hidden layers of 512, tanh."""

    model_config = ConfigDict(extra="forbid")

    architecture: Architecture = Field("prnf", description="prnf (default) or nsf (zuko baseline).")
    dim: int | None = Field(
        None, ge=1, description="State dimension d of x0 and X_T (default: the dataset's)."
    )
    cond_dim: int = Field(0, ge=0, description="Extra condition features (time, SDE parameters); "
                                                "with a conditioning, its dimension.")
    conditioning: Conditioning | None = Field(
        None, description="The box of times and SDE parameters the model covers: one surrogate "
                          "of p(X_t | x0; θ) for t in time, θ in params; null: one horizon and "
                          "fixed parameters (the default).",
    )
    time_scaling: bool | None = Field(
        None, description="Conditioned on time: the flow models the increment X_t - x0 centred "
                          "and scaled by its mean and spread at each t (from the training "
                          "times), so early narrow laws and late wide ones are equally easy; "
                          "null (default): on for a model conditioned on time, else off.",
    )
    hidden_width: int = Field(128, ge=1, description="Width of each hidden layer.")
    hidden_layers: int = Field(2, ge=1, description="Number of hidden layers per network.")
    activation: Activation = Field("tanh", description="Hidden activation (prnf).")
    transforms: int = Field(3, ge=1, description="Coupling transforms (nsf).")
    bins: int = Field(8, ge=2, description="Spline bins (nsf).")
    dtype: Literal["float32", "float64"] = Field("float32", description="Parameter precision.")
    residual: bool = Field(
        False,
        description="prnf: f(x0, y) = y + r(x0, y) and g(x0, z) = z + s(x0, z) (still "
                    "unconstrained networks with the exact log-det and the λ penalty); the maps "
                    "start near the identity.",
    )
    x0_period: list[float | None] | Literal["problem"] | None = Field(
        "problem",
        description="Periodic symmetry of the problem: one period (or null) per coordinate such "
                    "that the law of X_T - x0 is periodic in x0. The model then learns X_T - x0 "
                    "and sees periodic coordinates of x0 as (sin, cos) features. 'problem' "
                    "(default): the problem's declaration (SDE.x0_period), if any, resolved when "
                    "the model is trained for a problem; null: none.",
    )
    clamp_bounds: list[tuple[float | None, float | None] | None] | Literal["problem"] | None = (
        Field("problem", description=(
            "Where the problem clamps X (a 'clamp' boundary puts an atom of probability on the "
            "bound, e.g. runaway2d's p_min): one [low, high] (either may be null) or null per "
            "coordinate. Training spreads the rows on a bound beyond it (dequantization: the "
            "likelihood of an atom is unbounded) and samples are clamped back, reproducing the "
            "atom. 'problem' (default): the problem's clamp boundaries; null: none.")))
    preset: Literal["paper"] | None = Field(
        None, description="'paper': width 512, 2 hidden layers, tanh, for those of these fields "
                          "not given explicitly (an explicit --width 64 stays 64), in the CLI, "
                          "YAML and the Prefect form alike.",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        return fill_from_preset(data, lambda name, _: MODEL_PRESETS.get(name, {}))

    @model_validator(mode="after")
    def _cond_dim_of_conditioning(self) -> ModelConfig:
        if self.conditioning is not None:
            if self.cond_dim not in (0, self.conditioning.dim):
                raise ValueError(
                    f"cond_dim: {self.cond_dim} != the conditioning's {self.conditioning.dim} "
                    f"features {self.conditioning.names}; leave cond_dim unset")
            self.cond_dim = self.conditioning.dim
        timed = self.conditioning is not None and self.conditioning.time is not None
        if self.time_scaling and not timed:
            raise ValueError("time_scaling: needs a conditioning with a time range "
                             "(conditioning.time); leave it unset or false")
        if self.conditioning is not None and self.time_scaling is None:
            # resolved only with a box: unset stays unset on a config whose box comes later
            # (from the training store), so that box gets the default too
            self.time_scaling = timed
        return self

    @model_serializer(mode="wrap")
    def _without_unset_conditioning(self, handler: Any) -> dict[str, Any]:
        # An unconditioned model serializes as before the field existed: its config.json,
        # training fingerprint and settings hashes are unchanged.
        data = handler(self)
        if isinstance(data, dict) and data.get("clamp_bounds", "problem") in ("problem", None):
            # as before the field existed, for every problem without a clamp boundary
            data.pop("clamp_bounds", None)
        if self.conditioning is None and isinstance(data, dict):
            data.pop("conditioning", None)
            if self.time_scaling is None:
                data.pop("time_scaling", None)
        return data

    def differences(self, other: ModelConfig) -> list[str]:
        """``field: mine != theirs`` for every field that shapes the network and differs
        (``preset`` only names where values came from); empty: the same architecture, so
        weights of one load into the other.

        >>> ModelConfig(hidden_width=32).differences(ModelConfig(hidden_width=64))
        ['hidden_width: 32 != 64']
        """
        mine = self.model_dump(mode="json", exclude={"preset"})
        theirs = other.model_dump(mode="json", exclude={"preset"})
        return [f"{k}: {mine.get(k)!r} != {theirs.get(k)!r}"
                for k in sorted(mine.keys() | theirs.keys()) if mine.get(k) != theirs.get(k)]

    def for_problem(self, sde: Any) -> ModelConfig:
        """This config with the problem's dimension and, for ``x0_period="problem"``, the
        problem's declared periodic symmetry (none if it declares none)."""
        update: dict[str, Any] = {"dim": sde.dim}
        if self.x0_period == "problem":
            update["x0_period"] = None if sde.x0_period is None else list(sde.x0_period)
        if self.clamp_bounds == "problem":
            update["clamp_bounds"] = atoms.of_problem(sde)
        return self.model_copy(update=update)


def to_tensor(x: ArrayLike, name: str, dim: int | None, device: torch.device,
              dtype: torch.dtype) -> torch.Tensor:
    """Validate a ``(n, dim)`` real, finite input and move it to the model's device and dtype."""
    if isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise ConfigError(f"{name}: must be a real array, got dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise ConfigError(f"{name}: must be a numpy array or torch tensor, got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise ConfigError(f"{name}: must be real-valued, got dtype {x.dtype}")
    if x.ndim == 1 and dim is not None:
        x = x.reshape(-1, dim) if dim == 1 else x.reshape(1, -1)
    if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
        want = f"(n, {dim})" if dim is not None else "(n, k)"
        raise ConfigError(f"{name}: must have shape {want}, got {tuple(x.shape)}")
    x = x.to(device=device, dtype=dtype)
    if not torch.isfinite(x).all():
        raise ConfigError(f"{name}: contains NaN or inf")
    return x


#: The surrogate class of each ``ModelConfig.architecture``, filled by :func:`architecture`
#: where each class is defined (the modules of :mod:`prnf_core.models` import them all).
ARCHITECTURES: dict[str, type[ConditionalSampler]] = {}


def architecture(name: str):
    """Class decorator: register a :class:`ConditionalSampler` subclass as architecture
    ``name``, the class :func:`build_model` builds for ``ModelConfig(architecture=name)``."""

    def register(cls: type[ConditionalSampler]) -> type[ConditionalSampler]:
        ARCHITECTURES[name] = cls
        return cls

    return register


class ConditionalSampler(nn.Module):
    """Base class: normalization, validation, save/load and the physical-unit API."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.x0_period == "problem":  # built without a problem: nothing is declared
            config = config.model_copy(update={"x0_period": None})
        if config.clamp_bounds not in (None, "problem") and len(config.clamp_bounds) != config.dim:
            raise ConfigError(f"model.clamp_bounds: needs {config.dim} entries ([low, high] or "
                              f"null per coordinate), got {config.clamp_bounds}")
        if config.x0_period is not None and len(config.x0_period) != config.dim:
            raise ConfigError(f"model.x0_period: needs {config.dim} entries (a period or null "
                              f"per coordinate), got {config.x0_period}")
        if config.x0_period is not None and not all(p is None or p > 0
                                                    for p in config.x0_period):
            raise ConfigError(f"model.x0_period: periods must be > 0, got {config.x0_period}")
        self.config = config
        d, k = config.dim, config.cond_dim
        self.register_buffer("x0_mean", torch.zeros(d))
        self.register_buffer("x0_std", torch.ones(d))
        self.register_buffer("y_mean", torch.zeros(d))
        self.register_buffer("y_std", torch.ones(d))
        self.register_buffer("c_mean", torch.zeros(k))
        self.register_buffer("c_std", torch.ones(k))
        if config.time_scaling:  # coefficients of m(t) and log s(t)
            self.register_buffer("t_mean", torch.zeros(time_scaling.DEGREE + 1, d))
            self.register_buffer("t_log_std", torch.zeros(time_scaling.DEGREE + 1, d))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        #: Where in x0 the model was trained (set by :func:`prnf_core.train.fit`, saved with
        #: the model); None for a model saved before prnf recorded it.
        self.training_domain: TrainingDomain | None = None
        self._set_box_normalization()

    # -- subclass hooks -----------------------------------------------------------------------
    def _log_prob_normalized(self, yn: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _sample_normalized(self, ctx: torch.Tensor,
                           generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def training_loss(self, yn: torch.Tensor, ctx: torch.Tensor,
                      lam: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Minibatch loss in normalized units and its parts (``nll`` and ``rev``)."""
        nll = -self._log_prob_normalized(yn, ctx).mean()
        return nll, {"nll": nll, "rev": torch.zeros((), device=yn.device)}

    # -- properties ---------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def displaces(self) -> bool:
        """Whether the model learns :math:`X_T - x_0` (a declared periodic symmetry, or time
        scaling)."""
        return self.config.x0_period is not None or bool(self.config.time_scaling)

    @property
    def atom_bounds(self) -> list[tuple[float | None, float | None] | None] | None:
        """The clamp bounds whose atoms the model learns (:mod:`prnf_core.models.atoms`)."""
        bounds = self.config.clamp_bounds
        return None if bounds is None or bounds == "problem" else bounds

    @property
    def context_dim(self) -> int:
        """Width of the networks' context: x0 features (two per periodic coordinate) + c."""
        periodic = sum(p is not None for p in self.config.x0_period or ())
        return self.config.dim + periodic + self.config.cond_dim

    @property
    def device(self) -> torch.device:
        return self.x0_mean.device

    @property
    def dtype(self) -> torch.dtype:
        return self.x0_mean.dtype

    @property
    def conditioning(self) -> Conditioning | None:
        """The box of times and SDE parameters the model covers (None: one horizon)."""
        return self.config.conditioning

    # -- normalization ------------------------------------------------------------------------
    @torch.no_grad()
    def _set_box_normalization(self) -> None:
        r"""With a conditioning: :math:`\hat c = (c - m)/s` maps the box to [-1, 1]
        (:meth:`~prnf_core.models.conditioning.Conditioning.normalization`)."""
        if self.config.conditioning is not None:
            mean, std = self.config.conditioning.normalization()
            self.c_mean.copy_(torch.as_tensor(mean))
            self.c_std.copy_(torch.as_tensor(std))

    @torch.no_grad()
    def fit_normalization(self, x0: ArrayLike, y: ArrayLike, cond: ArrayLike | None = None) -> None:
        """Set the z-scoring statistics from training data (physical units). The condition
        features are z-scored from ``cond`` too, unless the model has a conditioning: then they
        are mapped from its box to [-1, 1] whatever the sample (``cond`` may be omitted).
        With time scaling, the increments' statistics per training time (from the ``t`` column
        of ``cond``; without ``cond``, those over all rows at every time)."""
        boxed = self.config.conditioning is not None
        x0, y, cond = self._inputs(x0, y, cond, allow_unfitted=True, need_cond=not boxed)
        for name, data in (("x0", x0), ("y", self._target(x0, y)), ("c", cond)):
            if data is None or data.shape[1] == 0 or (name == "c" and boxed):
                continue
            std = data.std(dim=0)
            getattr(self, f"{name}_mean").copy_(data.mean(dim=0))
            # A constant column (e.g. a point-mass x0) is left unscaled, not divided by zero.
            getattr(self, f"{name}_std").copy_(torch.where(std > 0, std, torch.ones_like(std)))
        self._set_box_normalization()
        if self.config.time_scaling:
            box = self.config.conditioning.time
            t = cond[:, 0] if cond is not None else torch.full((len(y),), box[1], dtype=y.dtype)
            mean, log_std = time_scaling.fit(t, self._target(x0, y), box)
            self.t_mean.copy_(mean)
            self.t_log_std.copy_(log_std)
        self.fitted.fill_(True)

    def _target_scale(self, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(m, s)`` of the affine normalization of the target: the global z-score, or with
        time scaling the statistics at each row's time (``(n, d)`` each)."""
        if not self.config.time_scaling:
            return self.y_mean, self.y_std
        return time_scaling.evaluate(self.t_mean, self.t_log_std, cond[:, 0],
                                     self.config.conditioning.time)

    def normalize(self, x0: torch.Tensor, y: torch.Tensor | None,
                  cond: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(yn, ctx)``: the normalized target and the networks' context (x0 features, c)."""
        ctx = (x0 - self.x0_mean) / self.x0_std
        if self.config.x0_period is not None:
            columns = []
            for i, period in enumerate(self.config.x0_period):
                if period is None:
                    columns.append(ctx[:, i:i + 1])
                else:  # a point on the circle: continuous across x0_i -> x0_i + period
                    angle = x0[:, i:i + 1] * (2 * math.pi / period)
                    columns += [torch.sin(angle), torch.cos(angle)]
            ctx = torch.cat(columns, dim=1)
        if self.config.cond_dim:
            box = self.config.conditioning
            features = cond if box is None else box.transform(cond)  # log θ on a log scale
            ctx = torch.cat([ctx, (features - self.c_mean) / self.c_std], dim=1)
        if y is None:
            return None, ctx
        mean, std = self._target_scale(cond)
        return (self._target(x0, y) - mean) / std, ctx

    def _target(self, x0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What the flow models: :math:`X_T - x_0` under a periodic symmetry or with time
        scaling, else :math:`X_T` (a shift by x0 has unit Jacobian: densities are unchanged)."""
        return y - x0 if self.displaces else y

    def _inputs(self, x0: ArrayLike, y: ArrayLike | None, cond: ArrayLike | None,
                allow_unfitted: bool = False, *, t: Any = None,
                params: Mapping[str, Any] | None = None, allow_outside: bool = False,
                need_cond: bool = True):
        """Validated tensors ``(x0, y, cond)``; ``t``/``params`` become the condition rows of a
        conditioned model, and its condition rows are checked against the box."""
        if not allow_unfitted and not bool(self.fitted):
            raise RuntimeError("model is not trained: call prnf_core.train.fit first")
        x0_t = to_tensor(x0, "x0", self.dim, self.device, self.dtype)
        y_t = None if y is None else to_tensor(y, "y", self.dim, self.device, self.dtype)
        if y_t is not None and len(y_t) != len(x0_t):
            raise ConfigError(f"y: needs one row per x0 row, got {len(y_t)} and {len(x0_t)}")
        conditioning = self.config.conditioning
        if t is not None or params is not None:
            if conditioning is None:
                given = ", ".join((["t"] if t is not None else []) + sorted(params or {}))
                given = given or "params"
                raise ConfigError(
                    f"{given}: this model was trained for one horizon and fixed parameters (it "
                    "has no conditioning); sample it without t= or params=")
            if cond is not None:
                raise ConfigError("cond: give either cond rows or t=/params=, not both")
            cond = conditioning.features(len(x0_t), t=t, params=params)
        c_t = None
        if self.config.cond_dim:
            if cond is None:
                if not need_cond:
                    return x0_t, y_t, None
                names = f" {conditioning.names} (pass t= and params=)" if conditioning else ""
                raise ConfigError(
                    f"cond: the model needs {self.config.cond_dim} condition features{names}"
                )
            c_t = to_tensor(cond, "cond", self.config.cond_dim, self.device, self.dtype)
            if len(c_t) == 1 and len(x0_t) > 1:
                c_t = c_t.expand(len(x0_t), -1)
            if len(c_t) != len(x0_t):
                raise ConfigError(f"cond: needs 1 or {len(x0_t)} rows, got {len(c_t)}")
            if conditioning is not None:  # the values as given (a message names them exactly)
                raw = cond.detach().cpu().numpy() if isinstance(cond, torch.Tensor) else cond
                conditioning.check(np.asarray(raw, dtype=np.float64).reshape(-1, c_t.shape[1]),
                                   allow_outside=allow_outside)
        elif cond is not None:
            raise ConfigError("cond: this model takes no condition features (cond_dim=0)")
        return x0_t, y_t, c_t

    # -- public API (physical units) ----------------------------------------------------------
    def log_prob(self, y: ArrayLike, x0: ArrayLike, cond: ArrayLike | None = None, *,
                 t: Any = None, params: Mapping[str, Any] | None = None,
                 allow_outside: bool = False) -> torch.Tensor:
        r"""Exact :math:`\log q(y \mid x_0)` row by row, shape ``(n,)``.

        For a conditioned model, :math:`\log q(y \mid x_0;\, t, θ)` with the time ``t`` and
        the SDE parameters ``params`` (``{name: value}``), each a scalar or one value per row
        (or the raw condition rows ``cond``, columns ``conditioning.names``). Conditions outside
        the trained box raise :class:`~prnf_core.errors.ConfigError` unless
        ``allow_outside=True`` (then a ``UserWarning``).
        """
        x0_t, y_t, c_t = self._inputs(x0, y, cond, t=t, params=params,
                                      allow_outside=allow_outside)
        yn, ctx = self.normalize(x0_t, y_t, c_t)
        log_scale = torch.log(self._target_scale(c_t)[1]).sum(dim=-1)
        return self._log_prob_normalized(yn, ctx) - log_scale

    @torch.no_grad()
    def sample(self, x0: ArrayLike, cond: ArrayLike | None = None,
               generator: torch.Generator | None = None, *, t: Any = None,
               params: Mapping[str, Any] | None = None,
               allow_outside: bool = False) -> torch.Tensor:
        """One :math:`X_T` (conditioned: :math:`X_t` under ``params``) per row of ``x0``, shape
        ``(n, d)`` (no gradient graph); ``t``/``params`` as in :meth:`log_prob`. Clamped into
        the problem's clamp bounds, where :math:`X_T` has atoms (:mod:`prnf_core.models.atoms`)."""
        x0_t, _, c_t = self._inputs(x0, None, cond, t=t, params=params,
                                    allow_outside=allow_outside)
        _, ctx = self.normalize(x0_t, None, c_t)
        mean, std = self._target_scale(c_t)
        out = self._sample_normalized(ctx, generator) * std + mean
        out = out + x0_t if self.displaces else out
        return out if self.atom_bounds is None else atoms.clamp(out, self.atom_bounds)

    def sample_initial(self, spec: Any, n: int, seed: int = 0,
                       cond: ArrayLike | None = None, *, t: Any = None,
                       params: Mapping[str, Any] | None = None,
                       allow_outside: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` x0 from an initial-distribution spec and push them through: (x0, X_T)
        (conditioned: X_t under ``params``, as in :meth:`log_prob`)."""
        spec = parse_initial(spec)
        if spec.dim != self.dim:
            raise ConfigError(f"initial: spec has dimension {spec.dim}, model has {self.dim}")
        x0_seq, z_seq = np.random.SeedSequence(seed).spawn(2)
        x0 = spec.sample(n, np.random.default_rng(x0_seq))
        gen = torch.Generator(device=self.device)
        gen.manual_seed(int(z_seq.generate_state(1, np.uint64)[0]) & (2**63 - 1))
        with torch.no_grad():
            y = self.sample(x0, cond, generator=gen, t=t, params=params,
                            allow_outside=allow_outside)
        return x0, y.cpu().numpy()

    def mixture_log_prob(self, y: ArrayLike, x0_samples: ArrayLike,
                         cond: ArrayLike | None = None, block: int | None = None, *,
                         t: Any = None, params: Mapping[str, Any] | None = None,
                         allow_outside: bool = False, with_shares: bool = False
                         ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        r""":math:`\log \frac1K \sum_k q(y \mid x_0^{(k)})` for every row of ``y``: shape ``(n,)``
        (conditioned: under the condition ``t``/``params``, one value or one per x0 sample).

        Evaluated in blocks of at most ``block`` (y, x0) pairs to bound memory; by default sized
        so a block's activations and Jacobians stay near 1 GB (the memory per pair is measured
        in ``benchmarks/README.md``). ``with_shares``: also each x0 sample's share of the
        mixture summed over the rows of ``y``, :math:`\sum_y q(y \mid x_0^{(k)}) / \sum_j
        q(y \mid x_0^{(j)})`, shape ``(K,)``: what the standard error of an exact KL needs for
        the error of the shared x0 set (:func:`prnf_core.validation.kl.exact_kl`).
        """
        if block is None:
            block = max(4096, 2**26 // (self.config.hidden_width * (self.dim + 1)))
        x0_t, _, c_t = self._inputs(x0_samples, None, cond, t=t, params=params,
                                    allow_outside=allow_outside)
        y_t = to_tensor(y, "y", self.dim, self.device, self.dtype)
        k = len(x0_t)
        rows = max(1, block // k)
        out = []
        shares = torch.zeros(k, dtype=torch.float64, device=self.device) if with_shares else None
        with torch.no_grad():
            for start in range(0, len(y_t), rows):
                yb = y_t[start:start + rows]
                yy = yb.repeat_interleave(k, dim=0)
                xx = x0_t.repeat(len(yb), 1)
                cc = None if c_t is None else c_t.repeat(len(yb), 1)
                # through log_prob, which a subclass may override; the condition rows were
                # checked above, with the caller's allow_outside
                checked = {} if cc is None else {"allow_outside": True}
                lp = self.log_prob(yy, xx, cc, **checked).reshape(len(yb), k)
                out.append(torch.logsumexp(lp, dim=1) - math.log(k))
                if shares is not None:
                    shares += torch.softmax(lp.double(), dim=1).sum(dim=0)
        return (torch.cat(out), shares) if with_shares else torch.cat(out)

    def reversibility_error(self, y: ArrayLike, x0: ArrayLike,
                            cond: ArrayLike | None = None, *, t: Any = None,
                            params: Mapping[str, Any] | None = None,
                            allow_outside: bool = False) -> torch.Tensor:
        r"""Per-row :math:`\|g(x_0, f(x_0, y)) - y\|^2` in normalized units (0 for exact flows)."""
        _, y_t, _ = self._inputs(x0, y, cond, t=t, params=params, allow_outside=allow_outside)
        return torch.zeros(len(y_t), device=self.device, dtype=self.dtype)

    def coverage(self, law: Any, n: int = DEFAULT_COVERAGE_N, seed: int = 0) -> Coverage:
        """How much of the initial law ``law`` (a spec, drawn ``n`` times with ``seed``, or an
        ``(n, d)`` array of x0 samples) lies outside the x0 domain the model was trained on,
        and a typicality p-value of it under the training x0 density
        (:func:`prnf_core.trust.coverage`, where the maths is).

        Raises:
            ConfigError: the model was saved before training domains were recorded.
        """
        if self.training_domain is None:
            raise predates_domain()
        return coverage(self.training_domain, law, n=n, seed=seed)

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` and ``weights.pt`` (a plain state dict) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        with atomic_path(directory / "weights.pt") as tmp:
            torch.save(state, tmp)
        meta = {"model": self.config.model_dump(mode="json"), "format": 1, **(extra or {})}
        if self.training_domain is not None:
            meta["training_domain"] = self.training_domain.model_dump(mode="json")
        (directory / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        return directory


def build_model(config: ModelConfig, seed: int | None = None) -> ConditionalSampler:
    """The surrogate for ``config.architecture``; ``seed`` fixes the initial weights."""
    if config.dim is None:
        raise ConfigError("model.dim: the state dimension is required to build a model")
    model_class = ARCHITECTURES[config.architecture]
    dtype = torch.float64 if config.dtype == "float64" else torch.float32
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return model_class(config).to(dtype)


def load_model(directory: str | Path, device: str | torch.device | None = None
               ) -> ConditionalSampler:
    """Load a model saved by :meth:`ConditionalSampler.save` (weights with ``weights_only``)."""
    directory = Path(directory)
    if not (directory / "config.json").is_file() or not (directory / "weights.pt").is_file():
        raise FileNotFoundError(f"no saved model (config.json + weights.pt) in {directory}")
    meta = json.loads((directory / "config.json").read_text())
    saved = dict(meta["model"])
    if saved.get("conditioning") is not None:  # saved before time scaling existed: without it
        saved.setdefault("time_scaling", False)
    model = build_model(ModelConfig.model_validate(saved))
    state = torch.load(directory / "weights.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    if meta.get("training_domain") is not None:
        model.training_domain = TrainingDomain.model_validate(meta["training_domain"])
    model.to(device if device is not None else default_device())
    return model.eval()


def load_metadata(directory: str | Path) -> dict[str, Any]:
    """``config.json`` of a saved model; for a conditioned model also ``conditioning``: its box
    (``time``, ``params``) and condition columns (``names``)."""
    meta = json.loads((Path(directory) / "config.json").read_text())
    model = meta.get("model")
    box = model.get("conditioning") if isinstance(model, dict) else None
    if box is not None:
        meta["conditioning"] = {**box, "names": Conditioning.model_validate(box).names}
    return meta
