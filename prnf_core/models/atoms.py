r"""Atoms of probability that a problem's clamp boundaries put on :math:`X_T`.

A ``clamp`` boundary (:class:`~prnf_core.sde.Boundary`) sets a coordinate that crosses a bound
back to the bound, so the law of :math:`X_T` has an atom there: in runaway2d about 38 % of the
particles end at exactly :math:`p = p_{min}`. A density has no atom, and maximum likelihood on
rows that repeat one value is unbounded: the flow can lower its loss without limit by narrowing
a spike at the bound, spending its capacity there instead of on the rest of the law.

The surrogate learns a continuous law whose clamp is the law of :math:`X_T` instead
(dequantization, as for discrete data):

.. math::
    \tilde y_i = \begin{cases} l_i - w_i\,|ε| & y_i = l_i \text{ (on the low bound)} \\
                               h_i + w_i\,|ε| & y_i = h_i \\
                               y_i & \text{inside} \end{cases}, \qquad ε \sim N(0, 1),

fresh :math:`ε` at every training step, :math:`w_i` = :data:`WIDTH` × the coordinate's spread
in the training data; and its samples are clamped back, :math:`y = \min(\max(\tilde y, l), h)`,
so the atom's probability is the mass the model puts beyond the bound, and every sample lies
in the problem's state space as a Monte Carlo particle does. The model's density is exact for
the continuous part inside the bounds; at the bound itself it is the density of the
dequantized law (the atom has no density).

>>> import torch
>>> bounds = [(0.5, None), None]
>>> y = torch.tensor([[0.5, 0.0], [2.0, 1.0]])
>>> spread = dequantize(y, bounds, torch.tensor([0.2, 0.2]), torch.Generator().manual_seed(0))
>>> bool(spread[0, 0] < 0.5), spread[1].tolist() == [2.0, 1.0]
(True, True)
>>> clamp(spread, bounds).tolist() == y.tolist()
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

#: Width of the half-normal beyond a bound, as a fraction of the coordinate's spread.
WIDTH = 0.5

Bounds = Sequence[tuple[float | None, float | None] | None]


def of_problem(sde: Any) -> list[tuple[float | None, float | None] | None] | None:
    """The clamp bounds a problem declares, one ``(low, high)`` or None per coordinate; None
    when it clamps nothing."""
    boundaries = getattr(sde, "boundaries", None) or [None] * sde.dim
    bounds = [(b.low, b.high) if b is not None and b.kind == "clamp" else None
              for b in boundaries]
    return bounds if any(b is not None for b in bounds) else None


def dequantize(y: torch.Tensor, bounds: Bounds, width: torch.Tensor,
               generator: torch.Generator | None) -> torch.Tensor:
    """``y`` with the values on a bound (or beyond it) moved beyond it by ``width`` ×
    :math:`|ε|` (a new tensor; rows inside the bounds unchanged)."""
    out = y.clone()
    for i, bound in enumerate(bounds):
        if bound is None:
            continue
        noise = torch.randn(len(y), generator=generator, dtype=y.dtype).to(y.device)
        step = width[i] * noise.abs()
        low, high = bound
        if low is not None:
            out[:, i] = torch.where(y[:, i] <= low, low - step, out[:, i])
        if high is not None:
            out[:, i] = torch.where(y[:, i] >= high, high + step, out[:, i])
    return out


def clamp(y: torch.Tensor, bounds: Bounds) -> torch.Tensor:
    """``y`` clamped into the bounds, coordinate by coordinate (a new tensor)."""
    out = y.clone()
    for i, bound in enumerate(bounds):
        if bound is not None:
            out[:, i] = out[:, i].clamp(min=bound[0], max=bound[1])
    return out
