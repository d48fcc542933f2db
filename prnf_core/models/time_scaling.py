r"""Time-dependent normalization of the target of a surrogate conditioned on time.

A model of :math:`p(X_t \mid x_0)` for every :math:`t \in [t_{lo}, t_{hi}]` meets laws whose
spread changes with :math:`t` by orders of magnitude: the increment :math:`X_t - x_0` has a
spread :math:`\propto \sqrt t` for small :math:`t`, and in runaway2d its momentum spread grows
7× from :math:`t = 2` to :math:`t = 20`. One global z-score leaves the early laws as narrow
ridges the flow must resolve. With time scaling the flow instead models

.. math::
    \hat y = \frac{X_t - x_0 - m(t)}{s(t)}, \qquad
    \log q(X_t \mid x_0;\, c) = \log q_n(\hat y \mid \hat x_0, \hat c) - \sum_i \log s_i(t),

with :math:`m(t)` and :math:`\log s(t)` per coordinate quadratic polynomials in
:math:`u = \log(t + ε)`, :math:`ε = ` :data:`EPS_FRACTION` × the width of the time box (a
:math:`\sqrt t` spread is a straight line in :math:`u` away from 0), fitted by least squares to
the training increments' mean and log standard deviation per training time (per quantile bin of
the times when they are continuous), weighted by the rows of each time, and held constant
beyond the time box. The map is affine in :math:`y` for each :math:`(x_0, t)`, so the density
stays exact (a change of variables). The fit is smooth on purpose: :math:`s` only needs to be
positive and of the right size, while a jagged :math:`s(t)` (noisy per-time estimates joined by
straight lines) would hand the flow a conditional mean that jitters with :math:`t`.

>>> import torch
>>> t = torch.tensor([1.0] * 8 + [4.0] * 8)
>>> inc = torch.tensor([-1.0, 1.0] * 4 + [-2.0, 2.0] * 4)[:, None]  # twice the spread at t = 4
>>> mean, log_std = fit(t, inc, box=(1.0, 4.0))
>>> m, s = evaluate(mean, log_std, torch.tensor([1.0, 4.0, 9.0]), box=(1.0, 4.0))
>>> [round(v / float(s[0]), 4) for v in s.flatten().tolist()]  # t = 9: held at the box's end
[1.0, 2.0, 2.0]
"""

from __future__ import annotations

import torch

#: Degree of the polynomials in u = log(t + ε) (fewer when there are fewer training times).
DEGREE = 2

#: ε of u = log(t + ε), as a fraction of the width of the time box (keeps t = 0 finite).
EPS_FRACTION = 0.05

#: Statistics are taken per distinct training time when there are at most this many, each with
#: at least MIN_ROWS rows; otherwise in quantile bins of the times (at most this many, each of
#: about MIN_ROWS rows or more).
MAX_GROUPS = 64
MIN_ROWS = 8

#: Floor of the per-time spread, relative to the spread over all times (a snapshot at t = 0,
#: where the increment is exactly 0, must not divide by zero).
STD_FLOOR = 1e-3


def _features(t: torch.Tensor, box: tuple[float, float]) -> torch.Tensor:
    """``(n, DEGREE + 1)`` powers of u = log(t + ε), t clamped to the box."""
    low, high = box
    u = torch.log(t.clamp(low, high) + EPS_FRACTION * (high - low))
    return torch.stack([u**k for k in range(DEGREE + 1)], dim=1)


def _groups(t: torch.Tensor, target: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(times, rows, mean, log_std)`` per training time, or per quantile bin of the times
    (the bin's mean time) when they are many or thinly populated (continuous times)."""
    distinct, counts = torch.unique(t, return_counts=True)
    if len(distinct) <= MAX_GROUPS and int(counts.min()) >= MIN_ROWS:
        labels, groups = torch.bucketize(t, distinct), len(distinct)
    else:
        groups = max(1, min(MAX_GROUPS, len(t) // MIN_ROWS))
        edges = torch.quantile(t, torch.linspace(0, 1, groups + 1, dtype=t.dtype)[1:-1])
        labels = torch.bucketize(t, edges)
    floor = STD_FLOOR * target.std(dim=0).clamp_min(torch.finfo(target.dtype).tiny)
    out: list[list[torch.Tensor]] = [[], [], [], []]
    for g in range(groups):
        rows = labels == g
        if int(rows.sum()) < 2:
            continue
        part = target[rows]
        for column, value in zip(out, (t[rows].mean(), rows.sum().to(t.dtype),
                                       part.mean(dim=0),
                                       torch.log(torch.maximum(part.std(dim=0), floor))),
                                 strict=True):
            column.append(value)
    if not out[0]:  # too few rows per time: one group over all of them
        out = [[t.mean()], [torch.tensor(float(len(t)), dtype=t.dtype)], [target.mean(dim=0)],
               [torch.log(torch.maximum(target.std(dim=0), floor))]]
    times, rows, mean, log_std = (torch.stack(column) for column in out)
    return times, rows, mean, log_std


def fit(t: torch.Tensor, target: torch.Tensor, box: tuple[float, float]
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficients ``(mean, log_std)``, each ``(DEGREE + 1, d)``, of :math:`m(t)` and
    :math:`\\log s(t)` fitted to the per-time statistics of ``target`` (``(n, d)``, the
    increments) at the times ``t`` (``(n,)``)."""
    t = t.to(target.dtype).contiguous()
    times, rows, mean, log_std = _groups(t, target)
    design = _features(times, box)[:, : min(DEGREE + 1, len(times))]
    weight = rows.sqrt()[:, None]
    coefficients = []
    for values in (mean, log_std):
        solution = torch.linalg.lstsq(design * weight, values * weight).solution
        padded = torch.zeros(DEGREE + 1, values.shape[1], dtype=values.dtype)
        padded[: len(solution)] = solution
        coefficients.append(padded)
    return coefficients[0], coefficients[1]


def evaluate(mean: torch.Tensor, log_std: torch.Tensor, t: torch.Tensor,
             box: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m(t), s(t))`` per row of ``t``, each ``(n, d)``, from the fitted coefficients."""
    features = _features(t.to(mean.dtype), box)
    return features @ mean, (features @ log_std).exp()
