r"""The initial distributions :math:`p_0` themselves: one pydantic model per kind, each with
``sample(n, rng) -> (n, d)`` and, where there is a density, ``logpdf(x) -> (n,)``. Parsing and
the ``InitialSpec`` union of them all are in :mod:`prnf_core.initial` (which re-exports these).

>>> import numpy as np
>>> from prnf_core.initial_specs import PointMass
>>> PointMass(point=[1.0, 2.0]).sample(2, np.random.default_rng(0)).tolist()
[[1.0, 2.0], [1.0, 2.0]]
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import linalg, special, stats

from prnf_core.errors import ConfigError

_LOG_2PI = math.log(2 * math.pi)


def _floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, list):
        return [f for v in value for f in _floats(v)]
    return []


class BaseSpec(BaseModel):
    """What every initial distribution has: finite fields, ``dim``, ``sample``, ``identity``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _may_be_infinite: ClassVar[tuple[str, ...]] = ()  # fields where ±inf is meaningful

    @model_validator(mode="after")
    def _check_finite(self) -> BaseSpec:
        for name, value in self:
            floats = _floats(value)
            if any(math.isnan(v) for v in floats) or (
                name not in self._may_be_infinite and any(math.isinf(v) for v in floats)
            ):
                raise ValueError(f"{name} must be finite (no NaN/inf), got {value}")
        return self

    @property
    def dim(self) -> int:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    @property
    def has_density(self) -> bool:
        return True

    def identity(self) -> dict[str, Any]:
        """What fixes the samples this spec draws from a seed: the part of a dataset id it
        contributes. Its fields, except where they point at data (see :class:`SamplesFile`)."""
        return self.model_dump(mode="json")

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"initial distribution kind={self.kind!r} has no density")

    def _check_x(self, x: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(x, dtype=float))
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (n, {self.dim}), got {x.shape}")
        return x


def _same_lengths(model: BaseModel, *names: str) -> None:
    lengths = {n: len(getattr(model, n)) for n in names if getattr(model, n) is not None}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"fields {list(lengths)} must have the same length, got {lengths}")
    if any(v == 0 for v in lengths.values()):
        raise ValueError(f"fields {list(lengths)} must not be empty")



def _low_below_high(low: list[float], high: list[float], where: str = "") -> None:
    if not all(lo < hi for lo, hi in zip(low, high, strict=True)):
        raise ValueError(f"need low < high{where}, got {low}, {high}")


class Uniform(BaseSpec):
    """Uniform on the box ``[low, high]``."""

    kind: Literal["uniform"] = "uniform"
    low: list[float] = Field(description="Lower corner of the box, one value per coordinate.")
    high: list[float] = Field(description="Upper corner of the box, one value per coordinate.")

    @model_validator(mode="after")
    def _check(self) -> Uniform:
        _same_lengths(self, "low", "high")
        _low_below_high(self.low, self.high, " in every coordinate")
        return self

    @property
    def dim(self) -> int:
        return len(self.low)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(self.low, self.high, size=(n, self.dim))

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        x = self._check_x(x)
        lo, hi = np.asarray(self.low), np.asarray(self.high)
        inside = np.all((x >= lo) & (x <= hi), axis=1)
        return np.where(inside, -np.log(hi - lo).sum(), -np.inf)


class Gaussian(BaseSpec):
    """Multivariate normal: give ``std`` (independent coordinates) or a full ``cov``."""

    kind: Literal["gaussian"] = "gaussian"
    mean: list[float] = Field(description="Mean vector.")
    std: list[float] | None = Field(None, description="Per-coordinate standard deviations.")
    cov: list[list[float]] | None = Field(None, description="Full covariance matrix (d x d).")

    @model_validator(mode="after")
    def _check(self) -> Gaussian:
        if (self.std is None) == (self.cov is None):
            raise ValueError("give exactly one of std or cov")
        if self.std is not None:
            _same_lengths(self, "mean", "std")
            if not all(s > 0 for s in self.std):
                raise ValueError(f"std must be > 0, got {self.std}")
        else:
            c = np.asarray(self.cov, dtype=float)
            if c.shape != (len(self.mean), len(self.mean)):
                raise ValueError(f"cov must be {len(self.mean)}x{len(self.mean)}, got {c.shape}")
            if not np.allclose(c, c.T) or np.linalg.eigvalsh(c).min() <= 0:
                raise ValueError("cov must be symmetric positive definite")
        return self

    @property
    def dim(self) -> int:
        return len(self.mean)

    def covariance(self) -> np.ndarray:
        return np.diag(np.square(self.std)) if self.std is not None else np.asarray(self.cov)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        chol = np.linalg.cholesky(self.covariance())
        return np.asarray(self.mean) + rng.standard_normal((n, self.dim)) @ chol.T

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        # Cholesky, not scipy's multivariate_normal: that one declares a valid covariance
        # singular once its eigenvalues span more than ~1e9 (e.g. std=[263, 0.004]).
        x = self._check_x(x)
        chol = np.linalg.cholesky(self.covariance())
        z = linalg.solve_triangular(chol, (x - np.asarray(self.mean)).T, lower=True)
        log_det = 2.0 * np.log(np.diag(chol)).sum()
        return -0.5 * (z**2).sum(axis=0) - 0.5 * log_det - 0.5 * self.dim * _LOG_2PI


class TruncatedGaussian(BaseSpec):
    r"""Independent coordinates with density :math:`\propto \exp(-(x-μ)^2/s^2)` on ``[low, high]``.

    The paper's form (no factor 2): the normal standard deviation is :math:`s/\sqrt 2`.
    """

    kind: Literal["truncated_gaussian"] = "truncated_gaussian"
    _may_be_infinite: ClassVar[tuple[str, ...]] = ("low", "high")  # one-sided truncation
    mu: list[float] = Field(description="Centre per coordinate.")
    s: list[float] = Field(description="Width s per coordinate (density exp(-(x-mu)^2/s^2)).")
    low: list[float] = Field(description="Lower truncation bound per coordinate.")
    high: list[float] = Field(description="Upper truncation bound per coordinate.")

    @model_validator(mode="after")
    def _check(self) -> TruncatedGaussian:
        _same_lengths(self, "mu", "s", "low", "high")
        if not all(v > 0 for v in self.s):
            raise ValueError(f"s must be > 0, got {self.s}")
        _low_below_high(self.low, self.high)
        return self

    @property
    def dim(self) -> int:
        return len(self.mu)

    def _marginals(self) -> stats.rv_continuous:
        scale = np.asarray(self.s) / math.sqrt(2)
        mu = np.asarray(self.mu)
        a, b = (np.asarray(self.low) - mu) / scale, (np.asarray(self.high) - mu) / scale
        return stats.truncnorm(a, b, loc=mu, scale=scale)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self._marginals().rvs(size=(n, self.dim), random_state=rng)

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        return self._marginals().logpdf(self._check_x(x)).sum(axis=1)


class GaussianMixture(BaseSpec):
    """Mixture of normals with independent coordinates per component."""

    kind: Literal["gaussian_mixture"] = "gaussian_mixture"
    weights: list[float] = Field(description="Component weights (normalized to sum 1).")
    means: list[list[float]] = Field(description="Component means, one vector each.")
    stds: list[list[float]] = Field(description="Component standard deviations, one vector each.")

    @model_validator(mode="after")
    def _check(self) -> GaussianMixture:
        _same_lengths(self, "weights", "means", "stds")
        if not all(w > 0 for w in self.weights):
            raise ValueError(f"weights must be > 0, got {self.weights}")
        dims = {len(v) for v in self.means} | {len(v) for v in self.stds}
        if len(dims) != 1:
            raise ValueError(f"every mean and std vector needs the same length, got {dims}")
        if not all(s > 0 for row in self.stds for s in row):
            raise ValueError("stds must be > 0")
        return self

    @property
    def dim(self) -> int:
        return len(self.means[0])

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        w = np.asarray(self.weights) / np.sum(self.weights)
        comp = rng.choice(len(w), size=n, p=w)
        z = rng.standard_normal((n, self.dim))
        return np.asarray(self.means)[comp] + z * np.asarray(self.stds)[comp]

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        x = self._check_x(x)
        w = np.asarray(self.weights) / np.sum(self.weights)
        m, s = np.asarray(self.means), np.asarray(self.stds)
        z = (x[:, None, :] - m[None]) / s[None]
        comp = -0.5 * (z**2).sum(-1) - np.log(s).sum(-1) - 0.5 * self.dim * _LOG_2PI
        return special.logsumexp(comp + np.log(w), axis=1)


class PointMass(BaseSpec):
    """All particles start at ``point`` (no density)."""

    kind: Literal["point_mass"] = "point_mass"
    point: list[float] = Field(min_length=1, description="The starting state.")

    @property
    def dim(self) -> int:
        return len(self.point)

    @property
    def has_density(self) -> bool:
        return False

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.tile(np.asarray(self.point, dtype=float), (n, 1))


class Maxwellian(BaseSpec):
    r"""Maxwellian of temperature :math:`\hat T_0` in the runaway coordinates ``(p, ξ)``.

    Project choice (documented in the paper notes): the momentum vector has i.i.d.
    :math:`N(0, \hat T_0/(2\tilde T))` components; :math:`p = |v|`, :math:`ξ = v_z/|v|`; draws
    with :math:`p < p_{min}` are resampled. Then p is a scaled chi(3) variable truncated to
    :math:`p \ge p_{min}`, ξ is uniform on [-1, 1] and independent of p.
    """

    kind: Literal["maxwellian"] = "maxwellian"
    temperature: float = Field(
        gt=0, description="Initial temperature T0_hat (same units as T_tilde)."
    )
    T_tilde: float = Field(3.0, gt=0, description="Reference temperature of the normalization.")
    p_min: float = Field(0.5, ge=0, description="Momentum floor: smaller draws are resampled.")

    @property
    def dim(self) -> int:
        return 2

    def _scale(self) -> float:
        return math.sqrt(self.temperature / (2 * self.T_tilde))

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        out = np.empty((n, 2))
        filled = 0
        while filled < n:
            v = rng.standard_normal((max(2 * (n - filled), 16), 3)) * self._scale()
            p = np.linalg.norm(v, axis=1)
            keep = p >= self.p_min
            v, p = v[keep][: n - filled], p[keep][: n - filled]
            out[filled : filled + len(p), 0] = p
            out[filled : filled + len(p), 1] = v[:, 2] / p
            filled += len(p)
        return out

    def logpdf(self, x: np.ndarray) -> np.ndarray:
        x = self._check_x(x)
        chi = stats.chi(3, scale=self._scale())
        p, xi = x[:, 0], x[:, 1]
        inside = (p >= self.p_min) & (np.abs(xi) <= 1)
        logp = chi.logpdf(p) - chi.logsf(self.p_min) - math.log(2.0)
        return np.where(inside, logp, -np.inf)


class SamplesFile(BaseSpec):
    """Resample (with replacement) rows of a ``.npy`` file of shape ``(n, d)``.

    A dataset id covers the file's content, not its path (:meth:`identity`): editing the file in
    place gives a new id, so a store is never resumed from other rows, while the same bytes under
    another path (a copy, a moved checkout) give the same id and reuse the store. The path is
    still recorded in the store's ``config``.
    """

    kind: Literal["samples_file"] = "samples_file"
    path: str = Field(description="Path to a .npy array of shape (n, d).")
    expected_dim: int | None = Field(None, ge=1, description="Dimension d, checked when loaded.")

    @property
    def dim(self) -> int:
        if self.expected_dim is not None:
            return self.expected_dim
        return int(self._load().shape[1])

    @property
    def has_density(self) -> bool:
        return False

    def _file(self) -> Path:
        path = Path(self.path)
        if path.suffix != ".npy":
            raise ConfigError(f"initial.path: only .npy files are supported, got {self.path!r}")
        if not path.is_file():
            raise ConfigError(f"initial.path: no such file {self.path!r}")
        return path

    def content_sha256(self) -> str:
        """SHA-256 of the file's bytes: what the samples depend on, wherever the file lies."""
        with self._file().open("rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()

    def identity(self) -> dict[str, Any]:
        """``kind`` and ``content_sha256``: the content, not the path (see the class doc)."""
        return {"kind": self.kind, "content_sha256": self.content_sha256()}

    def _load(self) -> np.ndarray:
        path = self._file()
        data = np.load(path, allow_pickle=False)
        if data.ndim != 2 or not np.isfinite(data).all():
            raise ConfigError(f"initial.path: need a finite (n, d) array, got shape {data.shape}")
        if self.expected_dim is not None and data.shape[1] != self.expected_dim:
            raise ConfigError(
                f"initial.path: array has d={data.shape[1]}, expected_dim={self.expected_dim}"
            )
        return data

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        data = self._load()
        return data[rng.integers(0, len(data), size=n)]
