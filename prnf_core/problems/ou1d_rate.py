r"""1-D Ornstein–Uhlenbeck process whose rate also sets the noise: a test problem over (t, μ).

.. math::
    dX = -μ X\,dt + \sqrt{1 + μ^2}\,dW,\qquad μ = 1 \text{ by default},

T = 1, dt = 0.005, training box :math:`[-2, 2]`. The rate μ may vary per particle
(``SDE.varying = ("mu",)``), which makes the problem the exact reference for a surrogate
conditioned on time and parameter: at any :math:`(t, μ)`

.. math::
    X_t \mid X_0 = x_0 \sim N\Big(x_0 e^{-μt},\ (1 + μ^2)\,\frac{1 - e^{-2μt}}{2μ}\Big)

(the variance tends to :math:`t` as :math:`μ \to 0`; computed with ``expm1``, so small μ and
μ < 0 are exact too).

Euler–Maruyama bias. With :math:`h = Δt` the scheme is :math:`X_{k+1} = (1 - μh) X_k +
s\sqrt h\,ξ_k`, :math:`s^2 = 1 + μ^2`, whose law after :math:`K = t/h` steps is Gaussian with mean
:math:`x_0 (1 - μh)^K` and variance :math:`s^2 h \sum_{j<K} (1-μh)^{2j}`, so its KL divergence to
the exact law is known in closed form. The variance is too large by a factor of at most
:math:`≈ 1 + μh` (a left Riemann sum; :math:`1 + μh/2` at stationarity) and the mean is off by
at most :math:`≈ |x_0|\,μh/(2e)`. Evaluated on every grid time :math:`t \in \{h, 2h, …, 1\}`,
:math:`|x_0| ≤ 2` and :math:`0 < μ ≤ 3`, the KL is at most :math:`5.7 \cdot 10^{-5}` (worst at
μ = 3, t = h: variance 1.5 % too large), over 300 times below a KL goal of 0.02, so EM samples at
this step stand for the exact law when a surrogate is judged against it. At μ = 10 the bound is
:math:`6.3 \cdot 10^{-4}`, still 30 times below; beyond, refine ``dt``.

>>> from prnf_core.problems import get_problem
>>> sde = get_problem("ou1d_rate")
>>> mean, cov = sde.transition_mean_cov([[1.0]], 1.0)
>>> round(float(mean[0, 0]), 6), round(float(cov[0, 0]), 6)
(0.367879, 0.864665)
>>> import numpy as np
>>> mean, cov = sde.gaussian_transition(np.array([[1.0], [1.0]]), 1.0, {"mu": np.array([1.0, 0.0])})
>>> mean.round(6).tolist(), cov.shape, cov.round(6).ravel().tolist()
([[0.367879], [1.0]], (2, 1, 1), [0.864665, 1.0])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from prnf_core.sde import SDE


def ou1d_rate_transition(x0: np.ndarray, t: float, params: Mapping[str, Any]
                         ) -> tuple[np.ndarray, np.ndarray]:
    r"""Exact law of :math:`X_t \mid X_0 = x_0`: mean ``(n, 1)`` and covariance.

    ``params["mu"]`` is a scalar (the :class:`~prnf_core.sde.SDE` contract: covariance ``(1, 1)``
    shared by every row) or an ``(n,)`` array with one μ per row of ``x0`` (covariance
    ``(n, 1, 1)``, one per row).
    """
    x0 = np.atleast_2d(np.asarray(x0, dtype=float))
    mu = np.asarray(params["mu"], dtype=float)
    per_row = mu.ndim > 0
    if per_row:
        mu = mu.reshape(-1)
        if mu.shape != (x0.shape[0],):
            raise ValueError(f"params['mu']: a per-row μ needs shape ({x0.shape[0]},), "
                             f"got {mu.shape}")
    t = float(t)
    mean = x0 * np.exp(-mu * t)[..., None] if per_row else x0 * math.exp(-float(mu) * t)
    # (1 - e^{-2μt}) / (2μ) = -expm1(-2μt) / (2μ), with its limit t at μ = 0
    two_mu = 2.0 * mu
    safe = np.where(two_mu == 0.0, 1.0, two_mu)
    ratio = np.where(two_mu == 0.0, t, -np.expm1(-two_mu * t) / safe)
    var = (1.0 + mu * mu) * ratio
    cov = var.reshape(-1, 1, 1) if per_row else np.array([[float(var)]])
    return mean, cov


def ou1d_rate(*, mu: float = 1.0, t_end: float = 1.0, dt: float = 0.005,
              low: float = -2.0, high: float = 2.0) -> SDE:
    if not (isinstance(mu, int | float) and math.isfinite(mu)):
        raise ValueError(f"mu must be a finite number, got {mu!r}")

    def drift(x: torch.Tensor, t: float, p: dict) -> torch.Tensor:
        return x * (-p["mu"])  # a scalar or an (n, 1) per-particle tensor

    def diffusion(x: torch.Tensor, t: float, p: dict) -> torch.Tensor:
        mu_ = p["mu"]
        if not isinstance(mu_, torch.Tensor):  # fixed μ: a (1,) additive σ
            mu_ = torch.tensor([mu_], dtype=x.dtype, device=x.device)
        # torch's square root for both paths (an (n, 1) per-particle diagonal or the fixed
        # (1,)): some CPU builds round it differently from math.sqrt, and a particle at the
        # default μ must follow the fixed path bit for bit
        return torch.sqrt(1.0 + mu_ * mu_)

    return SDE(
        name="ou1d_rate", dim=1, drift=drift, diffusion=diffusion, noise="additive",
        params={"mu": float(mu)}, t_end=t_end, dt=dt, domain=([low], [high]),
        coord_names=("x",), gaussian_transition=ou1d_rate_transition, varying=("mu",),
        description="1-D OU dX = -mu X dt + sqrt(1+mu^2) dW, exact transition at any (t, mu)",
    )
