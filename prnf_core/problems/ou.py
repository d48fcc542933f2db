r"""d-dimensional Ornstein–Uhlenbeck process :math:`dX = -A(X - μ)\,dt + Σ\,dW`.

Exact transition: :math:`X_t \mid x_0 \sim N\big(μ + e^{-At}(x_0 - μ),\ C_t\big)` with
:math:`C_t = \int_0^t e^{-As} ΣΣ^\top e^{-A^\top s}\,ds`, computed by Van Loan's block matrix
exponential (C. F. Van Loan, "Computing integrals involving the matrix exponential", IEEE TAC 1978).

Defaults: ``A = I + 0.5 (J - J^T)`` with J the superdiagonal (a damped rotation), ``μ = 0``,
``Σ = 0.5 I``, T = 1, dt = 0.01, training box ``[-2, 2]^d``.

>>> from prnf_core.problems import get_problem
>>> sde = get_problem("ou", dim=2)
>>> mean, cov = sde.transition_mean_cov([[1.0, 0.0]], 0.0)
>>> mean.tolist(), cov.round(12).tolist()
([[1.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]])
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch

from prnf_core.sde import SDE


def _default_a(dim: int) -> np.ndarray:
    skew = np.diag(np.full(dim - 1, 0.5), k=1)
    return np.eye(dim) + skew - skew.T


def ou(*, dim: int = 2, A: list | None = None, mu: list | None = None,
       Sigma: list | None = None, t_end: float = 1.0, dt: float = 0.01,
       low: float = -2.0, high: float = 2.0) -> SDE:
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    a = _default_a(dim) if A is None else np.asarray(A, dtype=float)
    m = np.zeros(dim) if mu is None else np.asarray(mu, dtype=float)
    s = 0.5 * np.eye(dim) if Sigma is None else np.asarray(Sigma, dtype=float)
    if a.shape != (dim, dim):
        raise ValueError(f"A must have shape ({dim}, {dim}), got {a.shape}")
    if m.shape != (dim,):
        raise ValueError(f"mu must have shape ({dim},), got {m.shape}")
    if s.ndim != 2 or s.shape[0] != dim:
        raise ValueError(f"Sigma must have shape ({dim}, m), got {s.shape}")

    def drift(x: torch.Tensor, t: float, p: dict) -> torch.Tensor:
        a_t = torch.as_tensor(p["A"], dtype=x.dtype, device=x.device)
        mu_t = torch.as_tensor(p["mu"], dtype=x.dtype, device=x.device)
        return (mu_t - x) @ a_t.T

    def diffusion(x: torch.Tensor, t: float, p: dict) -> torch.Tensor:
        return torch.as_tensor(p["Sigma"], dtype=x.dtype, device=x.device)

    def compiled(x: torch.Tensor, t: object, p: dict) -> tuple[torch.Tensor, torch.Tensor]:
        # For the compiled step: A (μ - x) as a broadcast sum over the d columns, which fuses
        # into the step's kernel (a matmul would be a separate BLAS call); equal up to rounding.
        a_t = torch.as_tensor(p["A"], dtype=x.dtype, device=x.device)
        mu_t = torch.as_tensor(p["mu"], dtype=x.dtype, device=x.device)
        return ((mu_t - x).unsqueeze(1) * a_t).sum(-1), diffusion(x, t, p)

    def transition(x0: np.ndarray, t: float, p: dict) -> tuple[np.ndarray, np.ndarray]:
        a_, mu_, s_ = (np.asarray(p[k], dtype=float) for k in ("A", "mu", "Sigma"))
        d = a_.shape[0]
        # Van Loan on a short step h = t / 2^k: expm([[A, Q], [0, -A^T]] h) = [[., G], [0, H]]
        # gives H^T G = ∫_0^h e^{-As} Q e^{-A^T s} ds (drift matrix -A). Then doubling,
        # C(2h) = C(h) + e^{-Ah} C(h) e^{-A^T h}, avoids the cancellation of one large expm.
        scale = float(np.abs(a_).sum(axis=0).max()) * t
        k = int(np.ceil(np.log2(scale))) if scale > 1 else 0
        h = t / 2**k
        block = np.zeros((2 * d, 2 * d))
        block[:d, :d] = a_
        block[:d, d:] = s_ @ s_.T
        block[d:, d:] = -a_.T
        e = scipy.linalg.expm(block * h)
        phi = e[d:, d:].T
        cov = phi @ e[:d, d:]
        for _ in range(k):
            cov = cov + phi @ cov @ phi.T
            phi = phi @ phi
        cov = 0.5 * (cov + cov.T)
        mean = mu_ + (x0 - mu_) @ scipy.linalg.expm(-a_ * t).T
        return mean, cov

    return SDE(
        name="ou", dim=dim, drift=drift, diffusion=diffusion, noise="additive",
        noise_dim=s.shape[1], params={"A": a.tolist(), "mu": m.tolist(), "Sigma": s.tolist()},
        t_end=t_end, dt=dt, domain=([low] * dim, [high] * dim), gaussian_transition=transition,
        compiled_drift_and_diffusion=compiled,
        description="d-dim Ornstein-Uhlenbeck, exact Gaussian transition (matrix exponential)",
    )
