r"""Can a surrogate be trusted for *this* initial law? The training domain a model records, and
the coverage of a user's law by it.

A surrogate of :math:`p(X_T \mid x_0)` was trained on pairs whose :math:`x_0` were drawn from
one training law :math:`q` (``DatasetConfig.initial``, by default uniform on the problem's
domain). Where :math:`q` has no mass the network was never fitted: it extrapolates, silently.
Every model trained by :func:`prnf_core.train.fit` records a :class:`TrainingDomain`:

* the **x0 box** :math:`B = [lo, hi]`: the support of the training law where it is bounded
  (a uniform box, truncation bounds, the runaway momentum floor and :math:`|\xi| \le 1`), the
  range of the training :math:`x_0` where it is not (a Gaussian, a samples file, raw arrays);
* a **cheap density** :math:`q` of the training :math:`x_0`: the training law's own
  ``logpdf`` when it has one, else a diagonal Gaussian mixture fitted by a few EM steps to a
  subsample of the training :math:`x_0` (stored as plain numbers, a
  :class:`~prnf_core.initial_specs.GaussianMixture`); :math:`\log q = -\infty` outside :math:`B`;
* the mean and variance of :math:`\log q(x_0)` over the training :math:`x_0` (the reference of
  the test below; another half of the subsample than the one a mixture was fitted on).

The (t, θ) box of a conditioned model is its ``conditioning`` (checked when sampling).

:func:`coverage` measures a law :math:`p` (a spec, sampled with a seed, or given samples):

* **outside fraction** :math:`\hat f = \frac1n \#\{i : x_i \notin B\}`, an unbiased estimate of
  :math:`P_p(X_0 \notin B)`, with binomial standard error :math:`\sqrt{\hat f(1-\hat f)/n}`;
* a **typicality p-value** (the misspecification test of simulation-based inference applied to
  :math:`x_0`: Schmitt et al. 2023, "Detecting model misspecification in amortized Bayesian
  inference with neural networks"; in its density form, Nalisnick et al. 2019, "Detecting
  out-of-distribution inputs to deep generative models using typicality"). Under
  :math:`H_0: p = q` the mean log-density of the :math:`m` inside samples,
  :math:`\bar L = \frac1m \sum \log q(x_i)`, has mean :math:`\mu = E_q[\log q] = -H(q)` and
  variance :math:`\sigma^2/m`; with :math:`\hat\mu, \hat\sigma^2` from :math:`N` training
  :math:`x_0`, :math:`z = (\bar L - \hat\mu) / (\hat\sigma \sqrt{1/m + 1/N})` is asymptotically
  standard normal and :math:`p = 2\Phi(-|z|)` (two-sided: a law piled up at the training mode
  is atypical too). A small p-value says the law's shape differs from the training law's.
  The test only sees :math:`\log q`: for a **uniform** training law :math:`\log q` is constant
  inside :math:`B` and every inside law gets :math:`p = 1`; there the outside fraction is the
  whole answer. With a large :math:`n` the test detects small differences: read it with the
  outside fraction and, for a verdict on accuracy, verify (``prnf check``).

>>> import numpy as np
>>> from prnf_core.initial_specs import Gaussian, Uniform
>>> box = Uniform(low=[0.0], high=[1.0])
>>> domain = TrainingDomain.of_training(box.sample(1000, np.random.default_rng(0)), box)
>>> domain.low, domain.high
([0.0], [1.0])
>>> cov = coverage(domain, Gaussian(mean=[1.0], std=[0.1]), n=20_000, seed=0)
>>> abs(cov.outside_fraction - 0.5) < 4 * cov.outside_stderr
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from scipy import special, stats

from prnf_core.errors import ConfigError
from prnf_core.initial import InitialSpec, parse_initial
from prnf_core.initial_specs import (
    GaussianMixture,
    Maxwellian,
    PointMass,
    TruncatedGaussian,
    Uniform,
)

#: Default threshold on the outside fraction above which sampling warns (or, strict, refuses).
DEFAULT_MAX_OUTSIDE = 0.01
#: Default number of draws from a spec to measure its coverage (outside-fraction SE ≤ 0.0022).
DEFAULT_COVERAGE_N = 50_000
#: Training x0 rows used for the fitted density and the reference statistics.
_SUBSAMPLE = 40_000
_EM_COMPONENTS, _EM_STEPS = 8, 40


class OutsideDomainError(ConfigError):
    """A law's mass outside the model's training domain exceeds the threshold (strict mode)."""


class TrainingDomain(BaseModel):
    """Where a model was trained in x0: the box, the training law and a density of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: list[float] = Field(description="Lower corner of the x0 box (support of the training "
                                         "law, or the training x0's range where unbounded).")
    high: list[float] = Field(description="Upper corner of the x0 box.")
    law: InitialSpec | None = Field(
        None, description="The training initial law (null: trained on raw arrays).")
    density: GaussianMixture | None = Field(
        None, description="Diagonal Gaussian mixture fitted to the training x0, for a law "
                          "without a density of its own (a samples file, raw arrays).")
    logq_mean: float | None = Field(
        None, description="Mean of log q over the training x0 (null: no density).")
    logq_var: float | None = Field(
        None, ge=0, description="Variance of log q over the training x0.")
    logq_n: int = Field(0, ge=0, description="Training x0 rows of those two statistics.")

    @field_validator("law", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return None if value is None else parse_initial(value)

    @property
    def dim(self) -> int:
        return len(self.low)

    @property
    def has_density(self) -> bool:
        return self.logq_mean is not None

    @classmethod
    def of_training(cls, x0: np.ndarray, law: InitialSpec | None = None,
                    seed: int = 0) -> TrainingDomain:
        """The domain of a model trained on the rows ``x0`` drawn from ``law`` (None: unknown,
        e.g. raw arrays). ``seed`` fixes the subsample and the mixture fit."""
        x0 = np.asarray(x0, dtype=np.float64)
        if x0.ndim != 2 or len(x0) == 0 or not np.isfinite(x0).all():
            raise ConfigError(f"data.x0: need finite (n, d) training rows, got {x0.shape}")
        lo, hi = _support(law, x0.shape[1])
        lo = np.where(np.isfinite(lo), lo, x0.min(axis=0))
        hi = np.where(np.isfinite(hi), hi, x0.max(axis=0))
        rng = np.random.default_rng(seed)
        rows = x0[rng.permutation(len(x0))[:_SUBSAMPLE]]
        fields: dict[str, Any] = {"low": lo.tolist(), "high": hi.tolist(),
                                  "law": None if law is None else law}
        if np.any(hi <= lo):  # a point mass in some coordinate: no density
            return cls(**fields)
        if law is None or not law.has_density:
            half = max(1, len(rows) // 2)
            if len(rows) < 2 * _EM_COMPONENTS:
                return cls(**fields)
            fields["density"] = fit_mixture(rows[:half], rng)
            rows = rows[half:]
        domain = cls(**fields)
        logq = domain.log_density(rows)
        logq = logq[np.isfinite(logq)]
        if len(logq) < 2:
            return domain
        return domain.model_copy(update={"logq_mean": float(logq.mean()),
                                         "logq_var": float(logq.var(ddof=1)),
                                         "logq_n": len(logq)})

    def inside(self, x: np.ndarray) -> np.ndarray:
        """Boolean per row: in the box (bounds included)."""
        x = self._rows(x)
        return np.all((x >= np.asarray(self.low)) & (x <= np.asarray(self.high)), axis=1)

    def log_density(self, x: np.ndarray) -> np.ndarray:
        """:math:`\\log q(x)` per row (−inf outside the box); NaN everywhere without a density."""
        x = self._rows(x)
        inside = self.inside(x)
        out = np.full(len(x), -np.inf)
        if self.density is not None:
            source: Any = self.density
        elif self.law is not None and self.law.has_density:
            source = self.law
        else:
            return np.full(len(x), np.nan)
        if inside.any():
            out[inside] = source.logpdf(x[inside])
        return out

    def describe(self) -> str:
        """The box as a user reads it, e.g. ``x0 in [0.5, 5] x [-1, 1]``."""
        sides = " x ".join(f"[{lo:.4g}, {hi:.4g}]" for lo, hi in zip(self.low, self.high,
                                                                        strict=True))
        law = "" if self.law is None else f" (training law: {self.law.kind})"
        return f"x0 in {sides}{law}"

    def _rows(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1 and self.dim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ConfigError(f"x0: must have shape (n, {self.dim}), got {x.shape}")
        if not np.isfinite(x).all():
            raise ConfigError("x0: contains NaN or inf")
        return x


def _support(law: InitialSpec | None, d: int) -> tuple[np.ndarray, np.ndarray]:
    """The box holding the law's mass (±inf where it is unbounded)."""
    inf = np.full(d, np.inf)
    if isinstance(law, Uniform | TruncatedGaussian):
        return np.asarray(law.low, dtype=float), np.asarray(law.high, dtype=float)
    if isinstance(law, PointMass):
        point = np.asarray(law.point, dtype=float)
        return point, point.copy()
    if isinstance(law, Maxwellian):
        return np.array([law.p_min, -1.0]), np.array([np.inf, 1.0])
    return -inf, inf


def fit_mixture(x: np.ndarray, rng: np.random.Generator,
                components: int = _EM_COMPONENTS, steps: int = _EM_STEPS) -> GaussianMixture:
    """A diagonal Gaussian mixture fitted to the rows ``x`` by ``steps`` EM iterations from
    ``components`` rows drawn as means (standard deviations floored at 1e-3 of each
    coordinate's spread, so that no component collapses onto a point)."""
    n = len(x)
    k = max(1, min(components, n // 20))
    spread = x.std(axis=0)
    floor = np.maximum(1e-3 * spread, 1e-12)
    means = x[rng.choice(n, size=k, replace=False)]
    stds = np.tile(np.maximum(spread / k, floor), (k, 1))
    weights = np.full(k, 1.0 / k)
    for _ in range(steps):
        z = (x[:, None, :] - means[None]) / stds[None]
        log_r = (np.log(weights) - 0.5 * (z**2).sum(-1) - np.log(stds).sum(-1))
        log_r -= special.logsumexp(log_r, axis=1, keepdims=True)
        r = np.exp(log_r)
        mass = r.sum(axis=0) + 1e-12
        weights = mass / n
        means = (r.T @ x) / mass[:, None]
        var = (r.T @ x**2) / mass[:, None] - means**2
        stds = np.sqrt(np.maximum(var, floor**2))
    keep = weights > 1e-6
    return GaussianMixture(weights=weights[keep].tolist(), means=means[keep].tolist(),
                           stds=stds[keep].tolist())


class Coverage(BaseModel):
    """How much of a law the training domain covers (see the module doc for the maths)."""

    model_config = ConfigDict(frozen=True)

    outside_fraction: float = Field(description="Fraction of the law's samples outside the box.")
    outside_stderr: float = Field(description="Its binomial standard error.")
    p_value: float = Field(description="Two-sided typicality p-value of the inside samples "
                                       "under the training density (NaN: no density).")
    z: float = Field(description="The test's z statistic (NaN: no density).")
    n: int = Field(description="Samples of the law.")
    n_inside: int = Field(description="Of those, inside the box.")
    domain: str = Field(description="The training domain, as text.")

    def flagged(self, max_outside: float = DEFAULT_MAX_OUTSIDE) -> bool:
        return self.outside_fraction > max_outside

    def summary(self) -> str:
        p = "n/a" if math.isnan(self.p_value) else f"{self.p_value:.3g}"
        return (f"{100 * self.outside_fraction:.2f} % ± {100 * self.outside_stderr:.2f} % of "
                f"the initial law lies outside the training domain {self.domain}; typicality "
                f"p-value {p} (n = {self.n})")

    def metrics(self) -> dict[str, float]:
        """``trust/...`` metrics for MLflow."""
        return {"trust/outside_fraction": self.outside_fraction,
                "trust/outside_stderr": self.outside_stderr, "trust/p_value": self.p_value}


def coverage(domain: TrainingDomain, law: Any, n: int = DEFAULT_COVERAGE_N,
             seed: int = 0) -> Coverage:
    """The coverage of ``law`` by ``domain``: ``law`` is an initial-distribution spec (or
    anything :func:`~prnf_core.initial.parse_initial` reads; ``n`` draws with ``seed``) or an
    ``(n, d)`` array of x0 samples."""
    if isinstance(law, np.ndarray) or (isinstance(law, list) and law
                                       and isinstance(law[0], list | float | int)):
        x = np.asarray(law, dtype=np.float64)
    else:
        spec = parse_initial(law)
        if spec.dim != domain.dim:
            raise ConfigError(f"initial: spec has dimension {spec.dim}, the model's training "
                              f"domain has {domain.dim}")
        if n < 1:
            raise ConfigError(f"n: must be >= 1, got {n}")
        x = spec.sample(n, np.random.default_rng(seed))
    x = domain._rows(x)
    if len(x) == 0:
        raise ConfigError("x0: no samples")
    inside = domain.inside(x)
    m = int(inside.sum())
    f = 1.0 - m / len(x)
    z = p = math.nan
    if domain.has_density and m >= 1:
        mean = float(domain.log_density(x[inside]).mean())
        var = float(domain.logq_var)
        scale = max(1.0, abs(float(domain.logq_mean)))
        if var <= (1e-9 * scale) ** 2:  # rounding of a constant log q
            var = 0.0
        se = math.sqrt(var * (1.0 / m + 1.0 / max(domain.logq_n, 1)))
        diff = mean - float(domain.logq_mean)
        if se > 0:
            z = diff / se
            p = float(2 * stats.norm.sf(abs(z)))
        else:  # constant log q (uniform training law): no evidence either way
            z, p = (0.0, 1.0) if abs(diff) <= 1e-9 * scale else (math.inf, 0.0)
    return Coverage(outside_fraction=f, outside_stderr=math.sqrt(f * (1 - f) / len(x)),
                    p_value=p, z=z, n=len(x), n_inside=m, domain=domain.describe())


def check_coverage(cov: Coverage, max_outside: float = DEFAULT_MAX_OUTSIDE,
                   strict: bool = False) -> str | None:
    """None when the outside fraction is within ``max_outside``; else the warning text, or,
    with ``strict``, :class:`OutsideDomainError` naming the fraction and the threshold."""
    if not cov.flagged(max_outside):
        return None
    text = (f"initial: {100 * cov.outside_fraction:.2f} % (± {100 * cov.outside_stderr:.2f} %) "
            f"of the law's mass lies outside the model's training domain {cov.domain}, above "
            f"the threshold max_outside = {100 * max_outside:g} %: the surrogate extrapolates "
            "there")
    if strict:
        raise OutsideDomainError(text + " (refused: strict)")
    return text


def predates_domain(source: str = "model") -> ConfigError:
    """The error of a model saved before training domains were recorded."""
    return ConfigError(f"{source}: this model was saved before prnf recorded training domains "
                       "(no training_domain in its config.json): its coverage cannot be "
                       "checked; retrain it with this version")


__all__ = ["DEFAULT_COVERAGE_N", "DEFAULT_MAX_OUTSIDE", "Coverage", "OutsideDomainError",
           "TrainingDomain", "check_coverage", "coverage", "fit_mixture", "predates_domain"]
