r"""Moments and quantiles of the surrogate against Monte Carlo, per coordinate, with standard
errors: :func:`moment_quantile_errors`.

Mean, standard deviation (``ddof=1``) and the quantiles at :data:`QUANTILE_LEVELS` (numpy's
linear interpolation, R. J. Hyndman, Y. Fan, "Sample quantiles in statistical packages",
Am. Stat. 50 (1996) 361–365, type 7); standard errors from the delta method and from order
statistics (A. W. van der Vaart, "Asymptotic Statistics", Cambridge 1998, ch. 3 and 21).

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> e = moment_quantile_errors(rng.normal(size=(4000, 1)) + 0.5, rng.normal(size=(4000, 1)))
>>> bool(abs(e.mean_diff[0] - 0.5) < 4 * e.diff_mean_se[0]), e.rows()[2][0]
(True, 'q01')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from prnf_core.arrays import ArrayLike, as_samples, resolve_coord_names

QUANTILE_LEVELS: tuple[float, ...] = (0.01, 0.05, 0.5, 0.95, 0.99)


def _moments_and_se(x: np.ndarray, levels: np.ndarray) -> dict[str, np.ndarray]:
    n = len(x)
    mean = x.mean(axis=0)
    std = x.std(axis=0, ddof=1) if n > 1 else np.zeros(x.shape[1])
    q = np.quantile(x, levels, axis=0)
    mu4 = ((x - mean) ** 4).mean(axis=0)
    var = std**2
    with np.errstate(divide="ignore", invalid="ignore"):
        std_se = np.where(std > 0, np.sqrt(np.maximum(mu4 - var**2, 0.0) / n) / (2 * std), 0.0)
    half = np.sqrt(levels * (1 - levels) / n)
    q_se = 0.5 * (np.quantile(x, np.minimum(levels + half, 1.0), axis=0)
                  - np.quantile(x, np.maximum(levels - half, 0.0), axis=0))
    return {"mean": mean, "std": std, "q": q, "mean_se": std / math.sqrt(n), "std_se": std_se,
            "q_se": q_se}


@dataclass(frozen=True)
class MomentQuantileErrors:
    r"""Per-coordinate errors of the surrogate (surrogate − MC) with standard errors.

    Arrays: ``*_diff`` and ``mc_*`` have shape (d,) for the mean and std and (k, d) for the k
    quantile levels; ``mc_*_se`` are the MC standard errors, ``diff_*_se`` the standard errors of
    the differences (surrogate and MC errors combined, the samples being independent).
    """

    coord_names: tuple[str, ...]
    quantile_levels: tuple[float, ...]
    n_sur: int
    n_mc: int
    mc_mean: np.ndarray
    mc_std: np.ndarray
    mc_quantiles: np.ndarray
    mean_diff: np.ndarray
    std_diff: np.ndarray
    quantile_diff: np.ndarray
    mc_mean_se: np.ndarray
    mc_std_se: np.ndarray
    mc_quantile_se: np.ndarray
    diff_mean_se: np.ndarray
    diff_std_se: np.ndarray
    diff_quantile_se: np.ndarray

    def rows(self) -> list[tuple[str, str, float, float, float]]:
        """``(statistic, coordinate, MC value, surrogate − MC, SE of the difference)`` rows."""
        out = []
        for i, c in enumerate(self.coord_names):
            out.append(("mean", c, self.mc_mean[i], self.mean_diff[i], self.diff_mean_se[i]))
            out.append(("std", c, self.mc_std[i], self.std_diff[i], self.diff_std_se[i]))
            for k, lev in enumerate(self.quantile_levels):
                out.append((quantile_label(lev), c, self.mc_quantiles[k, i],
                            self.quantile_diff[k, i], self.diff_quantile_se[k, i]))
        return [(s, c, float(v), float(d), float(e)) for s, c, v, d, e in out]

    def max_abs_z(self) -> float:
        """Largest |difference| / SE over all statistics and coordinates (nan if none defined)."""
        z = [abs(d) / e for *_, d, e in self.rows() if e > 0]
        return max(z) if z else math.nan


def quantile_label(level: float) -> str:
    """``0.05 -> 'q05'``, ``0.5 -> 'q50'``, ``0.995 -> 'q99.5'``."""
    pct = 100 * level
    return f"q{round(pct):02d}" if abs(pct - round(pct)) < 1e-9 else f"q{pct:g}"


def moment_quantile_errors(sur: ArrayLike, mc: ArrayLike,
                           quantiles: Sequence[float] = QUANTILE_LEVELS,
                           coord_names: Sequence[str] | None = None) -> MomentQuantileErrors:
    r"""Mean, standard deviation and quantile errors per coordinate, surrogate minus MC.

    Estimators: sample mean; sample standard deviation with ``ddof=1``; quantiles with numpy's
    default linear interpolation (Hyndman–Fan type 7).

    Standard errors (asymptotic, computed for each sample from its own data):

    * mean: :math:`s/\sqrt n`;
    * standard deviation (delta method): :math:`\sqrt{(m_4 - s^4)/n}\,/\,(2s)` with
      :math:`m_4` the fourth central sample moment (:math:`s/\sqrt{2n}` for a normal law);
    * q-quantile (distribution-free, order statistics): half the distance between the sample
      quantiles at :math:`q \pm \sqrt{q(1-q)/n}`, which converges to the asymptotic
      :math:`\sqrt{q(1-q)/n}\,/\,f(ξ_q)` without estimating the density f.

    The SE of each difference is :math:`\sqrt{SE_{sur}^2 + SE_{MC}^2}`.

    >>> import numpy as np
    >>> e = moment_quantile_errors(np.arange(1.0, 6.0), np.zeros(5))
    >>> float(e.mean_diff[0]), float(e.quantile_diff[1, 0])  # mean 3; 5 % quantile 1 + 0.05*4
    (3.0, 1.2)
    """
    sur, mc = as_samples(sur=sur, mc=mc)
    levels = np.asarray(quantiles, dtype=float)
    if levels.ndim != 1 or np.any((levels < 0) | (levels > 1)):
        raise ValueError(f"quantiles must be levels in [0, 1], got {quantiles}")
    names = resolve_coord_names(coord_names, sur.shape[1])
    s, m = _moments_and_se(sur, levels), _moments_and_se(mc, levels)
    return MomentQuantileErrors(
        coord_names=names, quantile_levels=tuple(float(v) for v in levels),
        n_sur=len(sur), n_mc=len(mc),
        mc_mean=m["mean"], mc_std=m["std"], mc_quantiles=m["q"],
        mean_diff=s["mean"] - m["mean"], std_diff=s["std"] - m["std"],
        quantile_diff=s["q"] - m["q"],
        mc_mean_se=m["mean_se"], mc_std_se=m["std_se"], mc_quantile_se=m["q_se"],
        diff_mean_se=np.hypot(s["mean_se"], m["mean_se"]),
        diff_std_se=np.hypot(s["std_se"], m["std_se"]),
        diff_quantile_se=np.hypot(s["q_se"], m["q_se"]),
    )


__all__ = ["QUANTILE_LEVELS", "MomentQuantileErrors", "moment_quantile_errors", "quantile_label"]
