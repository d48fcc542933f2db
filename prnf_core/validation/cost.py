r"""Cost: when is training a surrogate cheaper than Monte Carlo?

:func:`break_even` gives the number of initial distributions after which training plus
surrogate sampling costs less than simulating each distribution by Monte Carlo,
:math:`K^* = T_{train} / (N\,(1/r_{MC} - 1/r_{sur}))` (plain arithmetic of the two cost
lines, derived in its docstring); :func:`cost_summary` the numbers around it.

>>> cost_summary(100.0, 1e6, 1e3, 20_000)["mc_seconds_per_distribution"]
20.0
"""

from __future__ import annotations

import math


def break_even(train_seconds: float, surrogate_samples_per_s: float, mc_samples_per_s: float,
               n_samples_per_distribution: int) -> float:
    r"""Number of initial distributions K* beyond which the surrogate is cheaper than MC.

    With N = ``n_samples_per_distribution``, Monte Carlo costs :math:`K N / r_{MC}` for K
    distributions and the surrogate :math:`T_{train} + K N / r_{sur}`, so

    .. math::
        K^* = \frac{T_{train}}{N\,(1/r_{MC} - 1/r_{sur})}

    and the surrogate is cheaper for every :math:`K > K^*` (a real number: round up for a count).
    ``inf`` when the surrogate samples no faster than MC (:math:`r_{sur} \le r_{MC}`).
    For an honest count, ``train_seconds`` includes simulating the training pairs.

    >>> break_even(100.0, 1e6, 1e3, 20_000)  # 100 / (20 - 0.02)
    5.005005005005005
    """
    if train_seconds < 0 or n_samples_per_distribution <= 0:
        raise ValueError("need train_seconds >= 0 and n_samples_per_distribution > 0")
    if mc_samples_per_s <= 0 or surrogate_samples_per_s <= 0:
        raise ValueError("sampling rates must be > 0")
    if surrogate_samples_per_s <= mc_samples_per_s:
        return math.inf
    per_dist_saving = n_samples_per_distribution * (1 / mc_samples_per_s
                                                    - 1 / surrogate_samples_per_s)
    return train_seconds / per_dist_saving


def cost_summary(train_seconds: float, surrogate_samples_per_s: float, mc_samples_per_s: float,
                 n_samples_per_distribution: int) -> dict[str, float]:
    """The inputs of :func:`break_even`, per-distribution costs and K*, as plain floats."""
    n = n_samples_per_distribution
    return {
        "train_seconds": float(train_seconds),
        "surrogate_samples_per_s": float(surrogate_samples_per_s),
        "mc_samples_per_s": float(mc_samples_per_s),
        "n_samples_per_distribution": float(n),
        "surrogate_seconds_per_distribution": n / surrogate_samples_per_s,
        "mc_seconds_per_distribution": n / mc_samples_per_s,
        "break_even_distributions": break_even(train_seconds, surrogate_samples_per_s,
                                               mc_samples_per_s, n),
    }


__all__ = ["break_even", "cost_summary"]
