r"""Passive scalar in the chaotic ABC flow (paper experiment 3).

:math:`dX = \mathrm{Pe}\, v(X)\,dt + dW` in :math:`\mathbb{R}^3` with
:math:`v(x, y, z) = (A \sin z + C \cos y,\ B \sin x + A \cos z,\ C \sin y + B \cos x)`,
Pe = 3, A = B = 1, C = 0.25, unit additive noise, no boundary, dt = 0.002, T = 2; training
:math:`x_0 \sim U[0, 2π]^3`. Quantity of interest: the probability of the region
:math:`(X_T, Z_T) \in [0, π] × [2π, 3π]` (:func:`abc_region_probability`).
The Péclet number ``pe`` may vary per particle (``SDE.varying``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from prnf_core.arrays import ArrayLike
from prnf_core.qoi import region_probability
from prnf_core.sde import SDE

ABC_BOX: tuple[tuple[float, float], tuple[float, float]] = (
    (0.0, math.pi), (2.0 * math.pi, 3.0 * math.pi),
)
"""The region of :func:`abc_region_probability`: ``(low, high)`` of coordinates x and z."""


def abc_region_probability(samples: ArrayLike) -> dict[str, Any]:
    r""":math:`P[(X_T, Z_T) \in [0, π] × [2π, 3π]]` (coordinates 0 and 2, box :data:`ABC_BOX`).

    The flow has no boundary, so :math:`Z_T` is unwrapped and can leave :math:`[0, 2π]`.
    Binomial standard error :math:`\sqrt{P(1-P)/n}`.

    >>> abc_region_probability([[1.0, 0.0, 7.0], [1.0, 0.0, 1.0], [4.0, 0.0, 7.0],
    ...                         [0.0, 9.0, 6.5]])
    {'name': 'region_probability', 'value': 0.5, 'stderr': 0.25}
    """
    return region_probability(samples, ABC_BOX, coords=(0, 2))


def abc3d(*, pe: float = 3.0, A: float = 1.0, B: float = 1.0, C: float = 0.25,
          noise_scale: float = 1.0, t_end: float = 2.0, dt: float = 0.002) -> SDE:
    if not noise_scale > 0:
        raise ValueError(f"noise_scale must be > 0, got {noise_scale}")

    def drift(x: torch.Tensor, t: float, p: dict) -> torch.Tensor:
        pe_, a, b, c = p["pe"], p["A"], p["B"], p["C"]
        X, Y, Z = x.unbind(1)
        # Stacked along dim 0 and transposed: coordinate-major memory, which matches the
        # simulator's state layout so the update runs over contiguous rows.
        v = torch.stack((
            torch.sin(Z).mul_(a).add_(torch.cos(Y), alpha=c),
            torch.sin(X).mul_(b).add_(torch.cos(Z), alpha=a),
            torch.sin(Y).mul_(c).add_(torch.cos(X), alpha=b),
        ))
        if isinstance(pe_, torch.Tensor):  # per particle, (n, 1): scale the columns of v
            return v.mul_(pe_.T).T
        return v.mul_(pe_).T

    def diffusion(x: torch.Tensor, t: float, p: dict) -> torch.Tensor:
        return torch.full((3,), p["noise_scale"], dtype=x.dtype, device=x.device)

    two_pi = 2 * math.pi
    return SDE(
        name="abc3d", dim=3, drift=drift, diffusion=diffusion, noise="additive",
        params={"pe": float(pe), "A": float(A), "B": float(B), "C": float(C),
                "noise_scale": float(noise_scale)},
        t_end=t_end, dt=dt, domain=([0.0] * 3, [two_pi] * 3), coord_names=("x", "y", "z"),
        description="passive scalar in the chaotic ABC flow, Pe=3 (paper exp. 3)",
        # 2π-periodic drift, additive noise, no boundary: the law of X_T - x0 is 2π-periodic
        x0_period=(two_pi,) * 3,
        qois={"region_probability": abc_region_probability},
        varying=("pe",),
        regions={"paper": {"x": ABC_BOX[0], "z": ABC_BOX[1]}},
    )
