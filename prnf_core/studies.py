r"""Parameter studies: one quantity of interest over many initial distributions.

This is where a surrogate pays off: one trained model of :math:`p(X_T \mid x_0)`, then any
number of initial laws :math:`p_0` by sampling :math:`x_0 \sim p_0`, :math:`X_T = g(x_0, z)`.
The helpers build the paper's families of laws, evaluate a QoI on the surrogate by counting
samples (never by a kernel-density estimate, which biases small probabilities), and compare with
Monte Carlo references under explicit tolerances.

>>> laws = abc3d_grid_laws(3)
>>> sorted(laws)[:2], laws[(1, 2)].mu[0] == laws[(1, 2)].mu[1] == math.pi
([(0, 0), (0, 1)], True)
>>> lattice_subset(22, 5)[:5]
[(0, 0), (0, 5), (0, 10), (0, 16), (0, 21)]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from prnf_core.initial import InitialSpec, Maxwellian, TruncatedGaussian, parse_initial
from prnf_core.models.base import ConditionalSampler

QoIFunction = Callable[[np.ndarray], dict[str, Any]]

ABC_GRID_S = (math.pi / 3, math.pi / 5, math.pi / 4)
"""Widths ``s`` (x, y, z) of the paper's truncated Gaussians (density ∝ exp(-(x-μ)²/s²))."""


def abc3d_grid_laws(n: int = 22, s: Sequence[float] = ABC_GRID_S, y_centre: float = math.pi
                    ) -> dict[tuple[int, int], TruncatedGaussian]:
    r"""The paper's ``n × n`` parameter study of experiment 3.

    Law ``(i, j)``: independent truncated Gaussians on :math:`[0, 2π]^3` with centre
    :math:`(i\,2π/(n-1),\ y_{centre},\ j\,2π/(n-1))` and widths ``s``.
    """
    if n < 2:
        raise ValueError(f"n: need at least 2 grid points per axis, got {n}")
    step = 2 * math.pi / (n - 1)
    return {
        (i, j): TruncatedGaussian(mu=[i * step, y_centre, j * step], s=list(s),
                                  low=[0.0] * 3, high=[2 * math.pi] * 3)
        for i in range(n) for j in range(n)
    }


def lattice_subset(n: int, per_axis: int) -> list[tuple[int, int]]:
    """``per_axis²`` index pairs of an ``n × n`` grid, evenly spread and including the corners."""
    if not 1 <= per_axis <= n:
        raise ValueError(f"per_axis: need 1 <= per_axis <= {n}, got {per_axis}")
    idx = sorted({round(v) for v in np.linspace(0, n - 1, per_axis)})
    return [(i, j) for i in idx for j in idx]


def maxwellian_laws(temperatures: Sequence[float], p_min: float = 0.5
                    ) -> dict[float, Maxwellian]:
    """Maxwellian initial laws of experiment 2, keyed by :math:`\\hat T_0`."""
    return {float(t): Maxwellian(temperature=float(t), p_min=p_min) for t in temperatures}


@dataclass(frozen=True)
class SurrogateQoI:
    """A QoI of one initial law from the surrogate: value, binomial SE, samples, seconds."""

    value: float
    stderr: float
    n: int
    seconds: float


def surrogate_qoi(model: ConditionalSampler, laws: Mapping[Hashable, InitialSpec | dict],
                  qoi: QoIFunction, n_samples: int, seed: int = 0,
                  batch: int = 200_000) -> dict[Hashable, SurrogateQoI]:
    """The QoI of every law from ``n_samples`` surrogate samples, drawn in batches of ``batch``.

    Law number ``k`` (in mapping order) uses seed ``seed + k`` (batches spawn from it), so
    results do not depend on which other laws are in the study.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples: must be >= 1, got {n_samples}")
    out = {}
    for k, (key, law) in enumerate(laws.items()):
        spec = parse_initial(law)
        started = time.perf_counter()
        hits = 0.0
        sub_seeds = np.random.SeedSequence(seed + k).generate_state(
            math.ceil(n_samples / batch), np.uint32)
        for b, sub in enumerate(sub_seeds):
            size = min(batch, n_samples - b * batch)
            with torch.no_grad():
                _, y = model.sample_initial(spec, size, seed=int(sub))
            hits += qoi(y)["value"] * size
        value = hits / n_samples
        out[key] = SurrogateQoI(value, math.sqrt(value * (1 - value) / n_samples), n_samples,
                                time.perf_counter() - started)
    return out


@dataclass(frozen=True)
class QoIAgreement:
    """Surrogate vs MC for one law, with the tolerance that applies to it."""

    key: str
    sur: float
    sur_stderr: float
    mc: float
    mc_stderr: float
    tolerance: float
    tolerance_rule: str

    @property
    def abs_error(self) -> float:
        return abs(self.sur - self.mc)

    @property
    def rel_error(self) -> float:
        return self.abs_error / self.mc if self.mc > 0 else math.inf

    @property
    def error(self) -> float:
        """The error the tolerance is stated in (relative or absolute)."""
        return self.rel_error if self.tolerance_rule == "relative" else self.abs_error

    @property
    def within(self) -> bool:
        return self.error <= self.tolerance

    @property
    def combined_stderr(self) -> float:
        """SE of ``sur - mc`` (independent samples), in the tolerance's units."""
        se = math.hypot(self.sur_stderr, self.mc_stderr)
        return se / self.mc if self.tolerance_rule == "relative" and self.mc > 0 else se

    @property
    def resolvable(self) -> bool:
        """Whether sampling noise is small enough to tell: 2 SE below the tolerance."""
        return 2 * self.combined_stderr < self.tolerance

    @property
    def bias_se(self) -> float:
        """Signed ``sur - mc`` in combined standard errors ``sqrt(SE_sur² + SE_mc²)``.

        The binomial SEs as given (zero hits: SE 0, as in :attr:`resolvable`); 0 when the two
        values agree exactly, ±inf when they differ with both SEs 0.
        """
        diff = self.sur - self.mc
        se = math.hypot(self.sur_stderr, self.mc_stderr)
        if se > 0:
            return diff / se
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "abs_error": self.abs_error, "rel_error": self.rel_error,
                "within": self.within, "resolvable": self.resolvable, "bias_se": self.bias_se}


def compare_rates(key: str, sur: SurrogateQoI, mc: Mapping[str, float], *, rel_tol: float,
                  abs_tol: float, use_relative: bool) -> QoIAgreement:
    """Surrogate vs MC ``{"value", "stderr"}`` under a relative or an absolute tolerance."""
    rule = "relative" if use_relative else "absolute"
    return QoIAgreement(str(key), sur.value, sur.stderr, float(mc["value"]), float(mc["stderr"]),
                        rel_tol if use_relative else abs_tol, rule)


__all__ = [
    "ABC_GRID_S",
    "QoIAgreement",
    "SurrogateQoI",
    "abc3d_grid_laws",
    "compare_rates",
    "lattice_subset",
    "maxwellian_laws",
    "surrogate_qoi",
]
