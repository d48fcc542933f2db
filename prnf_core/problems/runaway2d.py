r"""Runaway electrons: hot-tail generation after a tokamak disruption (paper experiment 2).

State :math:`(p, ξ)`: normalized momentum and cosine of the pitch angle, a relativistic
collisional model with diagonal noise. With :math:`\tilde δ=\sqrt{2\tilde T/mc^2}`,
:math:`δ=\sqrt{2\hat T_f/mc^2}`, :math:`\bar v_T=\sqrt{\hat T_f/\tilde T}`,
:math:`\ln\hat Λ = 14.9-\tfrac12\ln 0.28+\ln\hat T_f`,
:math:`\ln\tilde Λ = 14.9-\tfrac12\ln 0.28+\ln\tilde T`,
:math:`\bar ν=(\tilde T/\hat T_f)^{3/2}\ln\hat Λ/\ln\tilde Λ`,
:math:`E=E_0(\tilde T/\hat T_f)^{3/2}`,
:math:`γ=\sqrt{1+(\tilde δ p)^2}`, :math:`x=p/(\bar v_T γ)`, :math:`φ=\mathrm{erf}(x)`,
:math:`ψ=(φ-xφ')/(2x^2)`:

.. math::
    C_A = \bar ν \bar v_T^2 ψ/x,\quad C_B = \tfrac12 \bar ν \bar v_T^2 (Z+φ-ψ+δ^4x^2/2)/x,\quad
    C_F = 2\bar ν \bar v_T ψ

    b_p = Eξ - γp(1-ξ^2)/τ - C_F + 2C_A/p + \partial_p C_A,\qquad
    b_ξ = E(1-ξ^2)/p + ξ(1-ξ^2)/(τγ) - 2ξ C_B/p^2

    σ_p = \sqrt{2 C_A},\qquad σ_ξ = \sqrt{2 C_B}\,\sqrt{1-ξ^2}/p

:math:`\partial_p C_A` is analytic: :math:`ψ' = φ' - 2ψ/x` and :math:`dx/dp = 1/(\bar v_T γ^3)`.
Boundaries: p below p_min = 0.5 is set to p_min; ξ is reflected at ±1. dt = 0.005, T = 20.
Quantity of interest: the runaway rate :math:`P[p_T > p^*]`, :math:`p^* = 1.75`
(:func:`runaway_rate`).
Parameters as in the same group's later public work (see ``shared/paper-notes.md``).
The electric field :math:`E_0` and the effective charge :math:`Z` may vary per particle
(``SDE.varying``): the coefficients then get ``(n, 1)`` tensors, and :math:`E` is derived from
the tensor (:func:`derived_constants`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from prnf_core.arrays import ArrayLike
from prnf_core.qoi import exceedance_probability
from prnf_core.sde import SDE, Boundary

_FLOOR = 1e-10
RUNAWAY_P_STAR = 1.75
"""Momentum above which an electron counts as a runaway: the threshold of :func:`runaway_rate`."""


def runaway_rate(samples: ArrayLike, p_star: float = RUNAWAY_P_STAR) -> dict[str, Any]:
    r"""Runaway production rate: fraction of particles with momentum :math:`p > p^*` (column 0).

    Returns ``{"name": "runaway_rate", "value": f, "stderr": sqrt(f (1 - f) / n)}``, the
    binomial standard error (0 when no or every particle runs away, where it understates the
    uncertainty: see :mod:`prnf_core.qoi`).

    >>> runaway_rate([[1.0, 0.0], [2.0, 0.5], [1.75, 0.1], [3.0, -1.0]])["value"]
    0.5
    """
    return exceedance_probability(samples, p_star, coord=0, name="runaway_rate")


def derived_constants(p: dict) -> dict[str, Any]:
    """Constants of the collision model from the primary parameters.

    Scalars, except ``E`` when ``p["E0"]`` is a per-particle tensor (then ``E`` is one too).
    """
    ratio = p["T_tilde"] / p["Tf_hat"]
    ln_hat = 14.9 - 0.5 * math.log(0.28) + math.log(p["Tf_hat"])
    ln_tilde = 14.9 - 0.5 * math.log(0.28) + math.log(p["T_tilde"])
    return {
        "delta_tilde": math.sqrt(2 * p["T_tilde"] / p["mc2"]),
        "delta": math.sqrt(2 * p["Tf_hat"] / p["mc2"]),
        "vT": math.sqrt(p["Tf_hat"] / p["T_tilde"]),
        "nu": ratio**1.5 * ln_hat / ln_tilde,
        "E": p["E0"] * ratio**1.5,
    }


def _column(value: Any) -> Any:
    """A per-particle ``(n, 1)`` parameter as ``(n,)``, to broadcast with one coordinate."""
    return value[:, 0] if isinstance(value, torch.Tensor) else value


def _coefficients(x: torch.Tensor, t: float, p: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The coefficients of the module doc, evaluated operation by operation (uncompiled path).

    Written with in-place operations into a few buffers (~25 % faster than one expression per
    line), in exactly the order and operands of the plain formulas (kept in the comments), so
    the results are bit for bit those of the plain formulas: stored datasets keep their bytes.
    """
    k = derived_constants(p)
    vT, nu, tau = k["vT"], k["nu"], p["tau"]
    e_field, z = _column(k["E"]), _column(p["Z"])
    mom, xi = x.unbind(1)
    b = torch.empty((2, mom.shape[0]), dtype=x.dtype, device=x.device)
    s = torch.empty_like(b)
    b_p, b_xi = b.unbind(0)
    s_p, s_xi = s.unbind(0)
    # gamma = sqrt(1 + (delta_tilde p)^2);  u = p / (vT gamma)
    gamma = torch.mul(mom, k["delta_tilde"])
    gamma.mul_(gamma).add_(1).sqrt_()
    u = torch.mul(gamma, vT)
    torch.div(mom, u, out=u)
    phi = torch.erf(u)
    u2 = torch.mul(u, u)
    # dphi = 2/sqrt(pi) exp(max(-u u, -87)): exp of a large negative argument underflows to 0
    # and hits torch's slow path (50-200x); clamping at -87 (float32's limit) changes nothing
    # measurable: e^-87 < 1.7e-38.
    dphi = torch.neg(u).mul_(u).clamp_min_(-87.0).exp_().mul_(2 / math.sqrt(math.pi))
    # psi = (phi - u dphi) / (2 u u)
    psi = torch.mul(u, dphi)
    torch.sub(phi, psi, out=psi)
    tmp = torch.mul(u, 2).mul_(u)
    psi.div_(tmp)
    # c_a = max(nu vT^2 psi / u, floor)
    c_a = torch.mul(psi, nu * vT**2).div_(u).clamp_min_(_FLOOR)
    # c_b = max(0.5 nu vT^2 (z + phi - psi + delta^4 u u / 2) / u, floor)
    c_b = torch.add(z, phi) if isinstance(z, torch.Tensor) else torch.add(phi, z)
    c_b.sub_(psi)
    torch.mul(u, k["delta"] ** 4, out=tmp).mul_(u).div_(2)
    c_b.add_(tmp).mul_(0.5 * nu * vT**2).div_(u).clamp_min_(_FLOOR)
    # dca_dp = nu vT^2 ((dphi - 2 psi / u) u - psi) / (u u) / (vT gamma^3)
    dca = torch.mul(psi, 2).div_(u)
    torch.sub(dphi, dca, out=dca)
    dca.mul_(u).sub_(psi).mul_(nu * vT**2).div_(u2)
    torch.pow(gamma, 3, out=tmp).mul_(vT)
    dca.div_(tmp)
    # one_m_xi2 = max(1 - xi xi, 0)
    one_m_xi2 = torch.mul(xi, xi).neg_().add_(1).clamp_min_(0)
    # b_p = E xi - gamma p one_m_xi2 / tau - c_f + 2 c_a / p + dca_dp,  c_f = 2 nu vT psi
    torch.mul(xi, e_field, out=b_p)
    torch.mul(gamma, mom, out=tmp).mul_(one_m_xi2).div_(tau)
    b_p.sub_(tmp)
    torch.mul(psi, 2 * nu * vT, out=tmp)
    b_p.sub_(tmp)
    torch.mul(c_a, 2, out=tmp).div_(mom)
    b_p.add_(tmp).add_(dca)
    # b_xi = E one_m_xi2 / p + xi one_m_xi2 / (tau gamma) - 2 xi c_b / p^2
    torch.mul(one_m_xi2, e_field, out=b_xi).div_(mom)
    torch.mul(xi, one_m_xi2, out=tmp).div_(gamma.mul_(tau))
    b_xi.add_(tmp)
    torch.mul(xi, 2, out=tmp).mul_(c_b).div_(torch.mul(mom, mom, out=gamma))
    b_xi.sub_(tmp)
    # s_p = sqrt(2 c_a);  s_xi = sqrt(2 c_b) sqrt(one_m_xi2) / p
    torch.mul(c_a, 2, out=s_p).sqrt_()
    torch.mul(c_b, 2, out=s_xi).sqrt_().mul_(one_m_xi2.sqrt_()).div_(mom)
    return b.T, s.T


def _coefficients_fused(x: torch.Tensor, t: Any, p: dict
                        ) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    r"""The same coefficients written for one fused kernel (``SDE.compiled_drift_and_diffusion``).

    Equal to :func:`_coefficients` up to rounding, with one division, one reciprocal square
    root and two square roots per particle instead of 14 divisions and 4 square roots:
    :math:`1/γ` from ``rsqrt``, :math:`1/u = \bar v_T γ/p`, shared reciprocals,
    :math:`\partial_p C_A = \bar ν \bar v_T (uφ' - 3ψ)/(u^2 γ^3)`,
    :math:`\sqrt{2C_B}\sqrt{1-ξ^2} = \sqrt{2C_B(1-ξ^2)}`. Returns the rows ``(b_p, b_ξ)``,
    ``(σ_p, σ_ξ)`` (a form the compiled step takes; it spares the kernel two (n, 2) buffers).
    """
    k = derived_constants(p)
    vT, nu, tau = k["vT"], k["nu"], p["tau"]
    e_field, z = _column(k["E"]), _column(p["Z"])
    mom, xi = x.unbind(1)
    g2 = 1 + (k["delta_tilde"] * mom) ** 2
    inv_gamma = torch.rsqrt(g2)
    gamma = g2 * inv_gamma
    inv_p = 1 / mom
    u = mom * inv_gamma * (1 / vT)
    inv_u = gamma * inv_p * vT
    u2 = u * u
    # erf(u) rounds to exactly 1 from u = 6 on in float64 (erfc(6) < 2^-55) and from u = 4 on
    # in float32 (erfc(4) = 1.5e-8 < 2^-25; torch's erf gives 1.0 there, as a test checks).
    # Vectorized erf is ~2x faster on a vector without arguments in (2.5, 6), so hand it 0
    # there instead: the same values, -20 % of the step's kernel time in float64.
    big = u >= (6.0 if x.dtype == torch.float64 else 4.0)
    phi = torch.where(big, 1.0, torch.erf(torch.where(big, 0.0, u)))
    dphi = (2 / math.sqrt(math.pi)) * torch.exp((-u2).clamp_min(-87.0))
    psi = 0.5 * (phi - u * dphi) * inv_u * inv_u
    c_a = (nu * vT**2 * psi * inv_u).clamp_min(_FLOOR)
    c_b = (0.5 * nu * vT**2 * (z + phi - psi + 0.5 * k["delta"] ** 4 * u2) * inv_u
           ).clamp_min(_FLOOR)
    c_f = 2 * nu * vT * psi
    dca_dp = (nu * vT * (dphi * u - 3 * psi) * inv_u * inv_u
              * (inv_gamma * inv_gamma * inv_gamma))
    one_m_xi2 = (1 - xi * xi).clamp_min(0)
    b_p = e_field * xi - gamma * mom * one_m_xi2 * (1 / tau) - c_f + 2 * c_a * inv_p + dca_dp
    b_xi = (e_field * one_m_xi2 * inv_p + xi * one_m_xi2 * inv_gamma * (1 / tau)
            - 2 * xi * c_b * inv_p * inv_p)
    s_p = torch.sqrt(2 * c_a)
    s_xi = torch.sqrt(2 * c_b * one_m_xi2) * inv_p
    return (b_p, b_xi), (s_p, s_xi)


def runaway2d(*, Z: float = 1.0, E0: float = 1 / 2000, tau: float = 6000.0, T_tilde: float = 3.0,
              mc2: float = 500.0, Tf_hat: float = 0.05, p_min: float = 0.5, p_max: float = 5.0,
              t_end: float = 20.0, dt: float = 0.005) -> SDE:
    if not 0 < p_min < p_max:
        raise ValueError(f"need 0 < p_min < p_max, got p_min={p_min}, p_max={p_max}")
    return SDE(
        name="runaway2d", dim=2,
        drift=lambda x, t, p: _coefficients(x, t, p)[0],
        diffusion=lambda x, t, p: _coefficients(x, t, p)[1],
        drift_and_diffusion=_coefficients,
        compiled_drift_and_diffusion=_coefficients_fused,
        noise="diagonal",
        params={"Z": Z, "E0": E0, "tau": tau, "T_tilde": T_tilde, "mc2": mc2,
                "Tf_hat": Tf_hat, "p_min": p_min},
        boundaries=(Boundary("clamp", low=p_min), Boundary("reflect", low=-1.0, high=1.0)),
        coord_names=("p", "xi"), t_end=t_end, dt=dt,
        domain=([p_min, -1.0], [p_max, 1.0]),
        description="runaway electrons (p, xi), relativistic collisions (paper exp. 2)",
        qois={"runaway_rate": runaway_rate},
        varying=("E0", "Z"),
        regions={"runaway": {"p": (RUNAWAY_P_STAR, None)}},
    )
