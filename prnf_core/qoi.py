r"""Quantities of interest (QoIs): scalar summaries of the law of :math:`X_T`, with standard errors.

A QoI is a function ``f(samples) -> {"name": str, "value": float, "stderr": float}`` of an
``(n, d)`` sample array (:data:`~prnf_core.sde.QoIFunction`). Problems declare theirs in
:attr:`SDE.qois <prnf_core.sde.SDE>` (runaway2d: the runaway rate :math:`P[p > p^*]`; abc3d:
the probability of a region); :func:`~prnf_core.validation.validate_samples` compares the first
one on surrogate and MC samples. The helpers here are generic:

* :func:`binomial_qoi`: the probability of an event estimated by the fraction :math:`\hat P` of
  the n samples in which it happens, with the binomial standard error
  :math:`\sqrt{\hat P(1-\hat P)/n}` (the Wald error; it understates the uncertainty near 0 and
  1, see L. D. Brown, T. T. Cai, A. DasGupta, "Interval estimation for a binomial proportion",
  Stat. Sci. 16 (2001) 101–133: for zero hits the one-sided 95 % bound is ≈ 3/n, not 0);
* :func:`exceedance_probability` (:math:`P[X_i > t]`) and :func:`region_probability`
  (:math:`P[X_I \in \text{box}]`), both binomial;
* :func:`compare_qoi`: the QoI on both sample sets and
  :math:`z = (\hat q_{sur} - \hat q_{MC}) / \sqrt{SE_{sur}^2 + SE_{MC}^2}`.

>>> import numpy as np
>>> x = np.array([[0.5, 0.0], [2.0, 1.0], [3.0, 0.0], [1.0, 0.0]])
>>> exceedance_probability(x, 1.75, coord=0, name="p_above_1.75")
{'name': 'p_above_1.75', 'value': 0.5, 'stderr': 0.25}
>>> compare_qoi(lambda s: binomial_qoi("p_above_1", s[:, 0] > 1.0), x, x[:2]).z
0.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from prnf_core.arrays import ArrayLike, as_2d
from prnf_core.sde import QoIFunction


def binomial_qoi(name: str, hits: ArrayLike) -> dict[str, Any]:
    """``{"name", "value", "stderr"}`` of the event probability that the booleans ``hits``
    (one per sample) estimate: the fraction of hits and its binomial SE (module doc).

    >>> binomial_qoi("heads", np.array([True, False, True, True]))
    {'name': 'heads', 'value': 0.75, 'stderr': 0.21650635094610965}
    """
    hits = np.asarray(hits)
    n = len(hits)
    value = float(hits.mean())
    return {"name": name, "value": value, "stderr": math.sqrt(value * (1 - value) / n)}


def exceedance_probability(samples: ArrayLike, threshold: float, coord: int = 0,
                           name: str = "exceedance_probability") -> dict[str, Any]:
    r""":math:`P[X_{\text{coord}} > \text{threshold}]` (strictly above), binomial SE.

    >>> exceedance_probability([[1.0], [2.0], [1.75], [3.0]], 1.75)["value"]
    0.5
    """
    x = as_2d(samples, "samples")
    return binomial_qoi(name, x[:, coord] > threshold)


def region_probability(samples: ArrayLike, box: Sequence[Sequence[float]],
                       coords: Sequence[int], name: str = "region_probability") -> dict[str, Any]:
    r"""Probability that the ``coords`` of a sample lie in the closed ``box``, with its SE.

    ``box`` holds one ``(low, high)`` per entry of ``coords``. Binomial standard error
    :math:`\sqrt{P(1-P)/n}`.

    >>> region_probability([[1.0, 0.0, 7.0], [1.0, 0.0, 1.0], [4.0, 0.0, 7.0], [0.0, 9.0, 6.5]],
    ...                    box=((0.0, 3.2), (6.0, 9.0)), coords=(0, 2))
    {'name': 'region_probability', 'value': 0.5, 'stderr': 0.25}
    """
    x = as_2d(samples, "samples")
    if len(box) != len(coords):
        raise ValueError(f"box needs one (low, high) per coordinate in {tuple(coords)}, got {box}")
    inside = np.ones(len(x), dtype=bool)
    for (lo, hi), c in zip(box, coords, strict=True):
        inside &= (x[:, c] >= lo) & (x[:, c] <= hi)
    return binomial_qoi(name, inside)


@dataclass(frozen=True)
class QoIComparison:
    """A quantity of interest on the surrogate and on MC samples."""

    name: str
    sur: float
    sur_stderr: float
    mc: float
    mc_stderr: float

    @property
    def diff(self) -> float:
        return self.sur - self.mc

    @property
    def z(self) -> float:
        """Difference in units of its standard error (independent samples)."""
        se = math.hypot(self.sur_stderr, self.mc_stderr)
        if se > 0:
            return self.diff / se
        return 0.0 if self.diff == 0 else math.copysign(math.inf, self.diff)


def compare_qoi(fn: QoIFunction, sur: ArrayLike, mc: ArrayLike) -> QoIComparison:
    s, m = fn(as_2d(sur, "sur")), fn(as_2d(mc, "mc"))
    return QoIComparison(s["name"], s["value"], s["stderr"], m["value"], m["stderr"])


__all__ = ["QoIComparison", "QoIFunction", "binomial_qoi", "compare_qoi",
           "exceedance_probability", "region_probability"]
