r"""The inverse question: which initial states lead into a region :math:`R` of the state space.

A surrogate of :math:`p(X_T \mid x_0)` gives, without any simulation,

* the **hit-probability map** :math:`h(x_0) = P(X_T \in R \mid x_0)` over the initial space
  (:func:`hit_probability`, :func:`hit_map`): at every point, the fraction of :math:`k` surrogate
  samples of :math:`X_T \mid x_0` inside :math:`R`, with its binomial standard error
  :math:`\sqrt{h(1-h)/k}`; on a grid over two coordinates (the others fixed: a slice of a 3-D
  space), as in the runaway map of which initial momenta and pitch angles run away;
* the **posterior of the initial state** given that it ends in :math:`R`, for an initial law
  :math:`p_0` (:func:`posterior`): by Bayes,
  :math:`p(x_0 \mid X_T \in R) = p_0(x_0)\,h(x_0) / P(R)` with
  :math:`P(R) = E_{p_0}[h(x_0)]`. Draw :math:`x_0^{(i)} \sim p_0`, estimate
  :math:`\hat h_i` from :math:`k` surrogate samples each and resample the :math:`x_0^{(i)}` with
  weights :math:`\propto \hat h_i` (importance weighting with the unbiased weight estimate
  :math:`\hat h_i`; with :math:`k = 1` it is rejection sampling, exact for the surrogate's law).
  :math:`\hat P(R) = \frac1m\sum_i \hat h_i` with the SE of a mean of i.i.d. terms, and the
  effective sample size :math:`(\sum w)^2 / \sum w^2` says how many independent posterior draws
  the resample is worth.

A region (:class:`Region`) is a box over named coordinates, ``{"p": (1.75, None)}``
(``None``: unbounded), or the name of a region the problem declares (:attr:`SDE.regions
<prnf_core.sde.SDE>`: runaway2d ``"runaway"`` = :math:`p > p^*`, abc3d ``"paper"`` = the paper's
box of x and z). Membership is closed on both sides.

>>> from prnf_core.problems import get_problem
>>> region = Region.of("runaway", get_problem("runaway2d"))
>>> region.bounds, region.contains(np.array([[2.0, 0.1], [1.0, 0.0]]), ("p", "xi")).tolist()
({'p': (1.75, None)}, [True, False])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from prnf_core.errors import ConfigError
from prnf_core.initial import parse_initial
from prnf_core.sde import SDE

#: Surrogate samples drawn per call of the model (bounds memory for large maps).
SAMPLE_BLOCK = 200_000


class Region(BaseModel):
    """A closed box over named coordinates of the state; coordinates left out are free."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bounds: dict[str, tuple[float | None, float | None]] = Field(
        description="Coordinate name -> (low, high); None: unbounded on that side.")
    name: str | None = Field(None, description="The problem's name of the region, if any.")

    @classmethod
    def of(cls, spec: str | Mapping[str, Any] | Region, sde: SDE) -> Region:
        """A region from a declared name of ``sde`` or a ``{coordinate: [low, high]}`` mapping.

        Raises:
            ConfigError: an unknown name (the declared ones listed), an unknown coordinate
                (the coordinates listed), a bound that is not a pair, or ``low > high``.
        """
        if isinstance(spec, Region):
            bounds, name = spec.bounds, spec.name
        elif isinstance(spec, str):
            if spec not in sde.regions:
                declared = sorted(sde.regions) or "none"
                raise ConfigError(f"region: {spec!r} is not a region of problem {sde.name!r} "
                                  f"(declared: {declared}); or give a box, e.g. "
                                  f"{{{sde.coord_names[0]}: [low, high]}} (null: unbounded)")
            bounds, name = sde.regions[spec], spec
        elif isinstance(spec, Mapping) and spec:
            bounds, name = spec, None
        else:
            raise ConfigError("region: must be a region name or a non-empty mapping "
                              "{coordinate: [low, high]}")
        clean = {}
        for coord, pair in bounds.items():
            if coord not in sde.coord_names:
                raise ConfigError(f"region.{coord}: not a coordinate of problem {sde.name!r} "
                                  f"(coordinates: {list(sde.coord_names)})")
            if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
                raise ConfigError(f"region.{coord}: must be [low, high] (null: unbounded), got "
                                  f"{pair!r}")
            low, high = (None if v is None else float(v) for v in pair)
            if low is not None and high is not None and low > high:
                raise ConfigError(f"region.{coord}: low {low} > high {high}")
            clean[coord] = (low, high)
        return cls(bounds=clean, name=name)

    def contains(self, y: np.ndarray, coord_names: Sequence[str]) -> np.ndarray:
        """Boolean ``(n,)``: which rows of the ``(n, d)`` states lie in the region."""
        inside = np.ones(len(y), dtype=bool)
        for coord, (low, high) in self.bounds.items():
            column = y[:, list(coord_names).index(coord)]
            if low is not None:
                inside &= column >= low
            if high is not None:
                inside &= column <= high
        return inside

    def describe(self) -> str:
        """``"runaway: p ≥ 1.75"``-style text for reports and plots."""
        parts = []
        for coord, (low, high) in self.bounds.items():
            if low is not None and high is not None:
                parts.append(f"{low:g} ≤ {coord} ≤ {high:g}")
            elif low is not None:
                parts.append(f"{coord} ≥ {low:g}")
            elif high is not None:
                parts.append(f"{coord} ≤ {high:g}")
        text = ", ".join(parts) or "everywhere"
        return f"{self.name}: {text}" if self.name else text


def _condition(model: Any, t: Any, params: Mapping[str, Any] | None,
               allow_outside: bool) -> dict[str, Any]:
    """Keyword arguments of a (conditioned) model's sample call."""
    if getattr(model, "conditioning", None) is None:
        if t is not None or params:
            raise ConfigError("t/params: this model is not conditioned on time or SDE "
                              "parameters (it answers at its one horizon)")
        return {}
    return {"t": t, "params": params, "allow_outside": allow_outside}


def hit_probability(model: Any, x0: np.ndarray, region: Region, coord_names: Sequence[str],
                    draws: int = 1000, seed: int = 0, *, t: Any = None,
                    params: Mapping[str, Any] | None = None,
                    allow_outside: bool = False) -> tuple[np.ndarray, np.ndarray]:
    r""":math:`\hat h(x_0) = P(X_T \in R \mid x_0)` at each row of ``x0`` ``(m, d)`` from
    ``draws`` surrogate samples per row, and its binomial standard error; both ``(m,)``.

    A conditioned model answers for ``t`` and ``params`` (as in its ``sample``).
    """
    x0 = np.asarray(x0, dtype=np.float64)
    if x0.ndim != 2 or x0.shape[1] != model.dim:
        raise ConfigError(f"x0: must have shape (m, {model.dim}), got {x0.shape}")
    if draws < 1:
        raise ConfigError(f"draws: must be >= 1, got {draws}")
    kwargs = _condition(model, t, params, allow_outside)
    gen = torch.Generator(device=getattr(model, "device", "cpu")).manual_seed(seed)
    hits = np.zeros(len(x0), dtype=np.int64)
    per_block = max(1, SAMPLE_BLOCK // draws)  # x0 rows per model call
    with torch.no_grad():
        for start in range(0, len(x0), per_block):
            rows = x0[start:start + per_block]
            y = model.sample(np.repeat(rows, draws, axis=0), generator=gen, **kwargs)
            inside = region.contains(y.cpu().numpy(), coord_names).reshape(len(rows), draws)
            hits[start:start + len(rows)] = inside.sum(axis=1)
    prob = hits / draws
    return prob, np.sqrt(prob * (1 - prob) / draws)


@dataclass(frozen=True)
class HitMap:
    r""":math:`P(X_T \in R \mid x_0)` on a grid over two coordinates (or one, in 1-D).

    ``probability[i, j]`` is at ``axes[0] = grid[0][i]``, ``axes[1] = grid[1][j]`` with the
    other coordinates at ``fixed``; ``stderr`` its binomial SE from ``draws`` samples.
    """

    region: Region
    axes: tuple[str, ...]
    grid: tuple[np.ndarray, ...]
    fixed: dict[str, float]
    probability: np.ndarray
    stderr: np.ndarray
    draws: int
    condition: dict[str, Any] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        """The map as named arrays (for ``np.savez``)."""
        out = {f"grid_{axis}": g for axis, g in zip(self.axes, self.grid, strict=True)}
        return {**out, "probability": self.probability, "stderr": self.stderr}


def grid_points(sde: SDE, axes: Sequence[str] | None = None,
                fixed: Mapping[str, float] | None = None, resolution: int = 41,
                box: tuple[Sequence[float], Sequence[float]] | None = None
                ) -> tuple[tuple[str, ...], tuple[np.ndarray, ...], dict[str, float], np.ndarray]:
    """The initial states of a map: ``resolution`` points per axis over ``box`` (default: the
    problem's training domain, where a surrogate has been trained), the other coordinates at
    ``fixed`` (default: the middle of the box). Returns ``(axes, grid, fixed, x0)`` with
    ``x0`` of shape ``(resolution**len(axes), d)`` in C order of ``grid``.

    >>> from prnf_core.problems import get_problem
    >>> axes, grid, fixed, x0 = grid_points(get_problem("abc3d"), ("x", "z"), resolution=3)
    >>> axes, [round(float(v), 3) for v in grid[0]], fixed, x0.shape
    (('x', 'z'), [0.0, 3.142, 6.283], {'y': 3.141592653589793}, (9, 3))
    """
    names = list(sde.coord_names)
    axes = tuple(axes) if axes else tuple(names[:2])
    unknown = [a for a in axes if a not in names]
    if unknown or not 1 <= len(axes) <= 2 or len(set(axes)) != len(axes):
        raise ConfigError(f"axes: one or two distinct coordinates of {names}, got {list(axes)}")
    if resolution < 2:
        raise ConfigError(f"resolution: must be >= 2 points per axis, got {resolution}")
    low, high = (np.asarray(v, dtype=float) for v in (box or sde.domain))
    given = dict(fixed or {})
    bad = sorted(set(given) - (set(names) - set(axes)))
    if bad:
        raise ConfigError(f"fixed: {bad} are not coordinates off the axes "
                          f"(free: {sorted(set(names) - set(axes))})")
    fixed_all = {n: float(given.get(n, (low[i] + high[i]) / 2))
                 for i, n in enumerate(names) if n not in axes}
    grid = tuple(np.linspace(low[names.index(a)], high[names.index(a)], resolution) for a in axes)
    mesh = np.meshgrid(*grid, indexing="ij")
    x0 = np.empty((mesh[0].size, len(names)))
    for i, n in enumerate(names):
        x0[:, i] = mesh[axes.index(n)].ravel() if n in axes else fixed_all[n]
    return axes, grid, fixed_all, x0


def hit_map(model: Any, sde: SDE, region: Region | str | Mapping[str, Any],
            axes: Sequence[str] | None = None, fixed: Mapping[str, float] | None = None,
            resolution: int = 41, draws: int = 1000, seed: int = 0, *, t: Any = None,
            params: Mapping[str, Any] | None = None, allow_outside: bool = False) -> HitMap:
    r""":math:`P(X_T \in R \mid x_0)` on a grid (:func:`grid_points`) from ``draws`` surrogate
    samples per point (:func:`hit_probability`)."""
    region = Region.of(region, sde)
    axes, grid, fixed_all, x0 = grid_points(sde, axes, fixed, resolution)
    prob, se = hit_probability(model, x0, region, sde.coord_names, draws, seed, t=t,
                               params=params, allow_outside=allow_outside)
    shape = tuple(len(g) for g in grid)
    return HitMap(region=region, axes=axes, grid=grid, fixed=fixed_all,
                  probability=prob.reshape(shape), stderr=se.reshape(shape), draws=draws,
                  condition={"t": t, "params": dict(params or {})})


@dataclass(frozen=True)
class Posterior:
    r"""Initial states given :math:`X_T \in R`, for an initial law (module doc).

    ``x0``/``weights``: the law's draws and their :math:`\hat h_i`; ``samples``: a resample of
    ``x0`` with probabilities :math:`\propto \hat h_i`; ``probability`` :math:`\hat P(R)` under
    the law with ``stderr``; ``ess``: effective sample size of the weights.
    """

    region: Region
    x0: np.ndarray
    weights: np.ndarray
    samples: np.ndarray
    probability: float
    stderr: float
    ess: float
    draws: int


def posterior(model: Any, sde: SDE, region: Region | str | Mapping[str, Any], initial: Any,
              n: int = 20_000, draws: int = 10, n_samples: int | None = None, seed: int = 0,
              *, t: Any = None, params: Mapping[str, Any] | None = None,
              allow_outside: bool = False) -> Posterior:
    r"""Posterior of :math:`x_0` given :math:`X_T \in R` under the initial law ``initial``:
    ``n`` draws of the law, ``draws`` surrogate samples each for their weights, resampled to
    ``n_samples`` (default ``n``) posterior draws.

    Raises:
        ConfigError: no draw reached the region (the message gives the bound on P(R)).
    """
    region = Region.of(region, sde)
    spec = parse_initial(initial)
    if spec.dim != sde.dim:
        raise ConfigError(f"initial: dimension {spec.dim}, problem {sde.name!r} has {sde.dim}")
    x0_seq, h_seq, r_seq = np.random.SeedSequence(seed).spawn(3)
    x0 = spec.sample(n, np.random.default_rng(x0_seq))
    h_seed = int(h_seq.generate_state(1, np.uint64)[0] & np.uint64(2**63 - 1))
    weights, _ = hit_probability(model, x0, region, sde.coord_names, draws, h_seed, t=t,
                                 params=params, allow_outside=allow_outside)
    total = weights.sum()
    if total == 0:
        raise ConfigError(f"region: none of {n} x {draws} surrogate samples reached "
                          f"{region.describe()} (P(R) < {3 / (n * draws):.2g} at 95 %): "
                          "raise n or draws, or choose a larger region")
    chosen = np.random.default_rng(r_seq).choice(n, size=n_samples or n, p=weights / total)
    return Posterior(region=region, x0=x0, weights=weights, samples=x0[chosen],
                     probability=float(weights.mean()),
                     stderr=float(weights.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
                     ess=float(total**2 / np.sum(weights**2)), draws=draws)


__all__ = ["HitMap", "Posterior", "Region", "grid_points", "hit_map", "hit_probability",
           "posterior"]
