r"""The conditioning domain of a surrogate: one model of :math:`p(X_t \mid X_0 = x_0;\, θ)` for
every time :math:`t` and SDE parameter vector :math:`θ` in a declared box.

A plain surrogate learns :math:`q(y \mid x_0) \approx p(X_T = y \mid X_0 = x_0)` for one horizon
:math:`T` and fixed parameters. A conditioned one learns the family

.. math::
    q(y \mid x_0;\, c) \approx p(X_t = y \mid X_0 = x_0;\, θ), \qquad
    c = (t, θ_1, \dots, θ_p) \in [t_{lo}, t_{hi}] \times \prod_j [a_j, b_j],

with the condition :math:`c` as extra context of the flow (the columns are
:attr:`Conditioning.names`: ``"t"`` if a time range is declared, then the parameter names in
sorted order). The density stays exact in :math:`y` for each fixed :math:`(x_0, c)`: the
condition only enters the networks' context, never the change of variables.

Normalization: each condition feature is mapped affinely from its box to :math:`[-1, 1]`,

.. math::
    \hat c_j = \frac{c_j - m_j}{s_j}, \qquad m_j = \frac{lo_j + hi_j}2,\quad
    s_j = \frac{hi_j - lo_j}2,

fixed by the declared box (not by the training sample), so the same condition means the same
input whatever rows a model was trained on. A parameter declared on a log scale
(``param_scale={name: "log"}``, for a positive parameter spanning a factor of several, such as an
electric field) enters as :math:`\log θ_j`, mapped from :math:`[\log a_j, \log b_j]`: equal
ratios of θ are then equal steps of the feature, which is how such a response varies.

Outside the box the model extrapolates: the physical-unit API
(:class:`~prnf_core.models.base.ConditionalSampler`) refuses such conditions unless
``allow_outside=True``, and then warns.

>>> from prnf_core.models.conditioning import Conditioning
>>> box = Conditioning(time=(0.0, 1.0), params={"sigma": (0.1, 0.5), "mu": (0.5, 2.0)})
>>> box.names, box.dim
(['t', 'mu', 'sigma'], 3)
>>> box.features(2, t=0.5, params={"mu": [1.0, 2.0], "sigma": 0.2}).tolist()
[[0.5, 1.0, 0.2], [0.5, 2.0, 0.2]]
>>> box.normalization()[0].tolist(), box.normalization()[1].tolist()
([0.5, 1.25, 0.3], [0.5, 0.75, 0.2])
>>> logbox = Conditioning(params={"E0": (2e-4, 1.25e-3)}, param_scale={"E0": "log"})
>>> rows = logbox.features(3, params={"E0": [2e-4, 5e-4, 1.25e-3]})
>>> mean, std = logbox.normalization()
>>> ((logbox.transform(rows) - mean) / std)[:, 0].round(6).tolist()
[-1.0, 0.0, 1.0]
>>> try:
...     box.check(box.features(1, t=1.5, params={"mu": 1.0, "sigma": 0.2}))
... except ValueError as error:
...     print(str(error).split(";")[0])
t: 1.5 is outside the trained time range [0.0, 1.0]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from prnf_core.errors import ConfigError

#: Relative slack of the box test (a float32 copy of a bound is still inside the box): a
#: fraction of the larger of the box's width and its bounds' magnitudes.
BOX_SLACK = 1e-6


def _fmt(value: float) -> str:
    return repr(float(value))


class Conditioning(BaseModel):
    """The box of conditions a surrogate is trained for: a time range and SDE parameter boxes.

    ``time=(lo, hi)``: the model is conditioned on the time :math:`t \\in [lo, hi]` (``0 <= lo
    < hi``); None: one horizon. ``params={name: (lo, hi)}``: SDE parameters conditioned on
    (``lo < hi``); the condition columns follow :attr:`names`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    time: tuple[float, float] | None = Field(
        None, description="Time range [low, high] of X_t the model covers (0 <= low < high); "
                          "null: one horizon.")
    params: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="SDE parameter boxes {name: [low, high]} (low < high); "
                                          "the condition columns take them in sorted order.")
    param_scale: dict[str, Literal["linear", "log"]] = Field(
        default_factory=dict, description="Scale of a parameter's condition feature: 'log' "
                                          "(log θ mapped to [-1, 1]; needs low > 0) for a "
                                          "positive parameter spanning a factor of several; "
                                          "'linear' (the default) otherwise.")

    @field_validator("time")
    @classmethod
    def _check_time(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is None:
            return None
        low, high = value
        if not (math.isfinite(low) and math.isfinite(high)) or not 0 <= low < high:
            raise ValueError(f"time: needs 0 <= low < high (finite), got [{low}, {high}]")
        return value

    @field_validator("params")
    @classmethod
    def _check_params(cls, value: dict[str, tuple[float, float]]
                      ) -> dict[str, tuple[float, float]]:
        for name, (low, high) in value.items():
            if not name or name == "t" or name == "seed":
                raise ValueError(f"params: {name!r} cannot name an SDE parameter ('t' is the "
                                 "time, 'seed' the sampling seed)")
            if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
                raise ValueError(f"params.{name}: needs low < high (finite), got [{low}, {high}]")
        return dict(sorted(value.items()))

    @field_validator("param_scale")
    @classmethod
    def _only_log(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        """Checked against the boxes; only the log entries are kept ('linear' is the default,
        so a box serializes one way)."""
        check_param_scale(value, info.data.get("params") or {}, "param_scale")
        return {name: scale for name, scale in sorted(value.items()) if scale == "log"}

    @model_validator(mode="after")
    def _not_empty(self) -> Conditioning:
        if self.time is None and not self.params:
            raise ValueError("conditioning: declare a time range, parameter boxes or both")
        return self

    @model_serializer(mode="wrap")
    def _omit_linear(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A box without log parameters serializes as before the field existed, so the
        # fingerprints (and registered-model names) of such models are unchanged.
        data = handler(self)
        if not data.get("param_scale"):
            data.pop("param_scale", None)
        return data

    @classmethod
    def of_dataset(cls, save_times: list[float] | None,
                   param_box: Mapping[str, tuple[float, float]] | None,
                   param_scale: Mapping[str, str] | None = None) -> Conditioning | None:
        """The box a dataset's rows cover: its snapshot times (when there are two or more)
        and its parameter box (on the scale its design used); None for a dataset of one
        horizon and fixed parameters.

        >>> Conditioning.of_dataset([0.25, 0.5, 1.0], {"mu": (0.5, 2.0)}).names
        ['t', 'mu']
        >>> Conditioning.of_dataset(None, None) is None
        True
        """
        times = sorted(set(save_times or []))
        time = (times[0], times[-1]) if len(times) > 1 else None
        if time is None and not param_box:
            return None
        return cls(time=time, params=dict(param_box or {}), param_scale=dict(param_scale or {}))

    # -- the condition columns ----------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        """The condition columns: ``"t"`` (if a time range is declared), then sorted params."""
        return (["t"] if self.time is not None else []) + sorted(self.params)

    @property
    def dim(self) -> int:
        return len(self.names)

    def bounds(self) -> list[tuple[float, float]]:
        """``(low, high)`` of each column of :attr:`names`."""
        out = [self.time] if self.time is not None else []
        return out + [self.params[name] for name in sorted(self.params)]

    def log_columns(self) -> list[bool]:
        """Whether each column of :attr:`names` enters the model as its logarithm."""
        return [self.param_scale.get(name) == "log" for name in self.names]

    def normalization(self) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)`` mapping the box affinely to [-1, 1] (on the log of a log-scale
        column): midpoints and half-widths of the :meth:`transform`-ed bounds."""
        low, high = self.transform(np.array(self.bounds(), dtype=np.float64).T)
        return (low + high) / 2, (high - low) / 2

    def transform(self, cond: Any) -> Any:
        """Condition rows (physical units, numpy or torch) with the log-scale columns replaced
        by their logarithm: what :meth:`normalization` maps to [-1, 1]."""
        logs = self.log_columns()
        if not any(logs):
            return cond
        if isinstance(cond, torch.Tensor):
            mask = torch.tensor(logs, device=cond.device)
            return torch.where(mask, cond.clamp_min(torch.finfo(cond.dtype).tiny).log(), cond)
        values = np.asarray(cond, dtype=np.float64)
        return np.where(logs, np.log(np.maximum(values, np.finfo(np.float64).tiny)), values)

    def param_at(self, name: str, fraction: float) -> float:
        """The value of parameter ``name`` a ``fraction`` of the way through its box, on its
        scale (geometrically for a log-scale parameter).

        >>> box = Conditioning(params={"E0": (1.0, 100.0)}, param_scale={"E0": "log"})
        >>> linear = Conditioning(params={"E0": (1.0, 100.0)})
        >>> round(box.param_at("E0", 0.5), 12), linear.param_at("E0", 0.5)
        (10.0, 50.5)
        """
        low, high = self.params[name]
        return float(from_unit(fraction, low, high, self.param_scale.get(name) == "log"))

    def example(self) -> dict[str, float]:
        """Example condition values: the upper end of the time range, the parameter midpoints
        (on each parameter's scale)."""
        out = {} if self.time is None else {"t": float(self.time[1])}
        return out | {k: self.param_at(k, 0.5) for k in sorted(self.params)}

    # -- building and checking condition rows ----------------------------------------------------
    def features(self, n: int, t: Any = None, params: Mapping[str, Any] | None = None
                 ) -> np.ndarray:
        """The ``(n, dim)`` condition rows for time ``t`` and SDE parameters ``params``.

        ``t`` and each ``params[name]`` are a scalar (the same for every row) or ``n`` values
        (one per row).

        Raises:
            ConfigError: a required condition is missing (all are named), one is not a
                condition of this model, or a value has the wrong shape or is not finite.
        """
        params = dict(params or {})
        if t is not None and self.time is None:
            raise ConfigError(f"t: this model is conditioned on {self.names} only (one horizon, "
                              "no time range): do not pass t")
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            raise ConfigError(f"params: {', '.join(unknown)} not a condition of this model "
                              f"(it is conditioned on {self.names})")
        missing = (["t"] if self.time is not None and t is None else []) + [
            name for name in sorted(self.params) if params.get(name) is None]
        if missing:
            raise ConfigError(f"conditions missing: {', '.join(missing)} (the model is "
                              f"conditioned on {self.names}: pass t=... and params={{name: "
                              "value}}, scalars or one value per row)")
        values = ([t] if self.time is not None else []) + [params[k] for k in sorted(self.params)]
        columns = [_column(name, value, n) for name, value in zip(self.names, values, strict=True)]
        return np.stack(columns, axis=1) if columns else np.zeros((n, 0))

    def check(self, features: Any, allow_outside: bool = False) -> None:
        """Refuse condition rows outside the box (every offending column named, with the range
        of values given and the trained box); ``allow_outside=True`` warns instead.

        Raises:
            ConfigError: a value lies outside the box (and ``allow_outside`` is False), or the
                rows do not have :attr:`dim` columns.
        """
        if hasattr(features, "detach"):  # a torch tensor
            features = features.detach().cpu().numpy()
        values = np.asarray(features, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.dim:
            raise ConfigError(f"cond: needs shape (n, {self.dim}) (columns {self.names}), got "
                              f"{values.shape}")
        if len(values) == 0:
            return
        for j, (name, is_log) in enumerate(zip(self.names, self.log_columns(), strict=True)):
            if is_log and float(values[:, j].min()) <= 0:  # no log even to extrapolate
                raise ConfigError(f"{name}: {_fmt(values[:, j].min())} is not > 0, and the "
                                  f"model takes {name} on a log scale (param_scale)")
        problems = []
        for j, (name, (low, high)) in enumerate(zip(self.names, self.bounds(), strict=True)):
            lo_given, hi_given = float(values[:, j].min()), float(values[:, j].max())
            slack = BOX_SLACK * max(high - low, abs(low), abs(high))
            if lo_given >= low - slack and hi_given <= high + slack:
                continue
            given = (f"{_fmt(lo_given)} is" if lo_given == hi_given
                     else f"values from {_fmt(lo_given)} to {_fmt(hi_given)} are")
            kind = "time range" if name == "t" else f"range of parameter {name}"
            problems.append(f"{name}: {given} outside the trained {kind} "
                            f"[{_fmt(low)}, {_fmt(high)}]")
        if not problems:
            return
        message = "; ".join(problems)
        if not allow_outside:
            raise ConfigError(f"{message}; pass allow_outside=True to extrapolate anyway")
        warnings.warn(f"{message}: the model extrapolates (allow_outside=True)", UserWarning,
                      stacklevel=3)


def from_unit(unit: Any, low: Any, high: Any, log: Any) -> np.ndarray:
    """Values a fraction ``unit`` (in [0, 1]) of the way through ``[low, high]``, column by
    column: linearly, or geometrically where ``log`` is true (uniform in log θ).

    The one mapping of a design point or a grid fraction to a parameter value (the dataset's
    per-particle θ, :meth:`Conditioning.param_at`): the operations are those stored datasets
    were drawn with, so their bytes do not change.

    >>> from_unit([[0.5, 0.5]], [1.0, 1.0], [100.0, 100.0], [False, True]).round(12).tolist()
    [[50.5, 10.0]]
    """
    low, high = (np.asarray(v, dtype=np.float64) for v in (low, high))
    log = np.asarray(log, dtype=bool)
    low, high = (np.where(log, np.log(np.where(log, bound, 1.0)), bound) for bound in (low, high))
    values = low + np.asarray(unit, dtype=np.float64) * (high - low)
    return np.where(log, np.exp(np.where(log, values, 0.0)), values)


def check_param_scale(scale: Mapping[str, str], box: Mapping[str, tuple[float, float]],
                      where: str) -> None:
    """Refuse a ``param_scale`` (field ``where``) that names a parameter outside ``box``, or
    puts on a log scale a parameter whose box reaches 0 or below.

    Raises:
        ValueError: naming ``where``, the parameter and the allowed names or bound.
    """
    for name, kind in scale.items():
        if name not in box:
            raise ValueError(f"{where}: {name!r} is not in the parameter box; allowed: "
                             f"{sorted(box)}")
        if kind == "log" and box[name][0] <= 0:
            raise ValueError(f"{where}.{name}: a log scale needs a box with low > 0, got "
                             f"[{box[name][0]}, {box[name][1]}]")


def _column(name: str, value: Any, n: int) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: must be a number or an array of numbers, got "
                          f"{type(value).__name__}") from None
    if array.size == 1:
        array = np.full(n, float(array.reshape(())))
    elif array.squeeze().ndim == 1 and array.size == n:
        array = array.reshape(n)
    else:
        raise ConfigError(f"{name}: needs a scalar or {n} values (one per row), got shape "
                          f"{array.shape}")
    if not np.isfinite(array).all():
        raise ConfigError(f"{name}: contains NaN or inf")
    return array
