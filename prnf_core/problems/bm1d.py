r"""1-D Brownian motion with drift, :math:`dX = μ\,dt + σ\,dW` (paper experiment 1).

Exact transition :math:`X_t \mid X_0 = x_0 \sim N(x_0 + μt,\ σ^2 t)`; Euler–Maruyama is exact
in law for it at any step, which makes it the verification problem for the surrogate.

μ and σ may vary per particle (``SDE.varying``): the coefficients then get ``(n, 1)`` tensors;
with a per-particle σ the diffusion is the ``(n, 1)`` per-particle diagonal (each particle its
own noise scale), while a scalar σ keeps the ``(1,)`` additive vector of the fixed path.

>>> from prnf_core.problems import get_problem
>>> sde = get_problem("bm1d")
>>> mean, cov = sde.transition_mean_cov([[0.0]], 0.5)
>>> float(mean[0, 0]), float(cov[0, 0])
(0.5, 0.5)
"""

from __future__ import annotations

import numpy as np
import torch

from prnf_core.sde import SDE


def bm1d(*, mu: float = 1.0, sigma: float = 1.0, t_end: float = 0.5, dt: float = 0.01,
         low: float = -2.0, high: float = 2.0) -> SDE:
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")

    def drift(x: torch.Tensor, t: float, p: dict) -> torch.Tensor:
        mu = p["mu"]
        if isinstance(mu, torch.Tensor):  # per particle, (n, 1)
            return mu.expand_as(x)
        return torch.full_like(x, mu)

    def diffusion(x: torch.Tensor, t: float, p: dict) -> torch.Tensor:
        sigma = p["sigma"]
        if isinstance(sigma, torch.Tensor):  # per particle: an (n, 1) per-particle diagonal
            return sigma
        return torch.tensor([sigma], dtype=x.dtype, device=x.device)

    def transition(x0: np.ndarray, t: float, p: dict) -> tuple[np.ndarray, np.ndarray]:
        return x0 + p["mu"] * t, np.array([[p["sigma"] ** 2 * t]])

    return SDE(
        name="bm1d", dim=1, drift=drift, diffusion=diffusion, noise="additive",
        params={"mu": float(mu), "sigma": float(sigma)}, t_end=t_end, dt=dt,
        domain=([low], [high]), coord_names=("x",), gaussian_transition=transition,
        description="Brownian motion with drift, exact Gaussian transition (paper exp. 1)",
        varying=("mu", "sigma"),
    )
