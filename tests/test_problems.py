"""Built-in problems: registry, runaway2d coefficients and boundaries, exact transitions."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy import stats
from scipy.integrate import quad_vec

from prnf_core import SDE, ConfigError, get_problem, list_problems, register_problem, simulate
from prnf_core.problems import problem_parameters
from prnf_core.problems.runaway2d import (
    _FLOOR,
    _coefficients,
    _coefficients_fused,
    derived_constants,
)

BUILTIN = ("abc3d", "bm1d", "ou", "runaway2d")

# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def test_list_problems_has_the_four_builtins():
    registry = list_problems()
    assert set(BUILTIN) <= set(registry)
    assert all(callable(registry[name]) for name in BUILTIN)


def test_unknown_problem_lists_known_ones():
    with pytest.raises(ConfigError, match=r"^problem: unknown problem 'heat'") as info:
        get_problem("heat")
    for name in BUILTIN:
        assert repr(name) in str(info.value)


@pytest.mark.parametrize("name, bad", [("ou", "sigma"), ("bm1d", "dim"), ("runaway2d", "E")])
def test_unknown_parameter_names_allowed(name, bad):
    with pytest.raises(ConfigError, match=rf"^problem_params: .*\['{bad}'\]") as info:
        get_problem(name, **{bad: 1.0})
    for allowed in problem_parameters(name):
        assert repr(allowed) in str(info.value)


@pytest.mark.parametrize(
    "name, params",
    [("bm1d", {"sigma": 0.0}), ("ou", {"dim": 0}), ("ou", {"dim": 2, "A": [[1.0]]}),
     ("abc3d", {"noise_scale": -1.0}), ("runaway2d", {"p_min": 6.0}), ("bm1d", {"dt": -0.1})],
)
def test_invalid_parameter_values_are_config_errors(name, params):
    with pytest.raises(ConfigError, match=rf"^problem_params: invalid parameters for '{name}'"):
        get_problem(name, **params)


def test_register_problem_refuses_overwrite():
    with pytest.raises(ValueError, match="already registered"):
        register_problem("ou", lambda: None)


@pytest.mark.usefixtures("private_problem_registry")  # no other test sees decay_test
def test_register_user_problem():
    def factory(*, rate: float = 2.0) -> SDE:
        return SDE(name="decay_test", dim=1, drift=lambda x, t, p: -p["rate"] * x,
                   diffusion=lambda x, t, p: torch.zeros_like(x), params={"rate": rate},
                   domain=([0.0], [1.0]))

    register_problem("decay_test", factory, overwrite=True)
    assert problem_parameters("decay_test") == {"rate": 2.0}
    sde = get_problem("decay_test", rate=3.0)
    assert sde.params == {"rate": 3.0}
    # Zero noise: EM is the explicit Euler recursion (1 - rate dt)^n x0.
    xT = simulate(sde, np.ones((3, 1)), t_end=1.0, dt=0.1).xT
    np.testing.assert_allclose(xT, (1 - 0.3) ** 10, rtol=1e-13)


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_simulates_a_few_steps(name):
    sde = get_problem(name)
    lo, hi = (np.asarray(v) for v in sde.domain)
    x0 = np.random.default_rng(0).uniform(lo, hi, size=(64, sde.dim))
    out = simulate(sde, x0, t_end=5 * sde.dt, dt=sde.dt, seed=1)
    assert out.xT.shape == (64, sde.dim)
    assert np.isfinite(out.xT).all()
    assert not np.array_equal(out.xT, x0)
    assert len(sde.coord_names) == sde.dim


def test_abc3d_drift_matches_formula():
    sde = get_problem("abc3d")
    p = sde.params
    x = np.random.default_rng(1).uniform(0, 2 * np.pi, size=(50, 3))
    X, Y, Z = x.T
    want = p["pe"] * np.stack([p["A"] * np.sin(Z) + p["C"] * np.cos(Y),
                               p["B"] * np.sin(X) + p["A"] * np.cos(Z),
                               p["C"] * np.sin(Y) + p["B"] * np.cos(X)], axis=1)
    got = sde.drift(torch.tensor(x), 0.0, p).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(sde.diffusion(torch.tensor(x), 0.0, p).numpy(), [1.0] * 3)


# --------------------------------------------------------------------------------------------
# runaway2d
# --------------------------------------------------------------------------------------------


def reference_runaway(p: torch.Tensor, xi: torch.Tensor, params: dict):
    """Drift and diffusion written directly from the paper notes, ∂_p C_A by autograd."""
    k = derived_constants(params)
    p = p.detach().clone().requires_grad_(True)
    gamma = torch.sqrt(1 + (k["delta_tilde"] * p) ** 2)
    x = p / (k["vT"] * gamma)
    phi = torch.erf(x)
    dphi = 2 * torch.exp(-x**2) / math.sqrt(math.pi)
    psi = (phi - x * dphi) / (2 * x**2)
    c_a = torch.clamp(k["nu"] * k["vT"] ** 2 * psi / x, min=1e-10)
    (dca_dp,) = torch.autograd.grad(c_a.sum(), p)
    c_b = torch.clamp(
        0.5 * k["nu"] * k["vT"] ** 2 * (params["Z"] + phi - psi + k["delta"] ** 4 * x**2 / 2) / x,
        min=1e-10,
    )
    c_f = 2 * k["nu"] * k["vT"] * psi
    tau, e_field = params["tau"], k["E"]
    b_p = e_field * xi - gamma * p * (1 - xi**2) / tau - c_f + 2 * c_a / p + dca_dp
    b_xi = e_field * (1 - xi**2) / p + xi * (1 - xi**2) / (tau * gamma) - 2 * xi * c_b / p**2
    s_p = torch.sqrt(2 * c_a)
    s_xi = torch.sqrt(2 * c_b) * torch.sqrt(1 - xi**2) / p
    return [v.detach() for v in (b_p, b_xi, s_p, s_xi, c_a, dca_dp)]


@pytest.fixture(scope="module")
def runaway_grid():
    p = torch.linspace(0.5, 5.0, 181, dtype=torch.float64)
    xi = torch.linspace(-1.0, 1.0, 9, dtype=torch.float64)
    pp, xx = torch.meshgrid(p, xi, indexing="ij")
    return pp.reshape(-1), xx.reshape(-1)


def test_runaway_constants_match_notes():
    params = get_problem("runaway2d").params
    k = derived_constants(params)
    ln_hat = 14.9 - 0.5 * math.log(0.28) + math.log(0.05)
    ln_tilde = 14.9 - 0.5 * math.log(0.28) + math.log(3.0)
    assert k["delta_tilde"] == pytest.approx(math.sqrt(6 / 500), rel=1e-14)
    assert k["delta"] == pytest.approx(math.sqrt(0.1 / 500), rel=1e-14)
    assert k["vT"] == pytest.approx(math.sqrt(0.05 / 3), rel=1e-14)
    assert k["nu"] == pytest.approx(60**1.5 * ln_hat / ln_tilde, rel=1e-14)
    assert k["E"] == pytest.approx(60**1.5 / 2000, rel=1e-14)


def test_runaway_analytic_dca_dp_matches_autograd(runaway_grid):
    sde = get_problem("runaway2d")
    p, xi = runaway_grid
    b, s = _coefficients(torch.stack((p, xi), 1), 0.0, sde.params)
    b_p, b_xi, s_p, s_xi, c_a, dca = reference_runaway(p, xi, sde.params)
    # The floor is inactive on [0.5, 5]: the derivative of the unfloored C_A is what is tested.
    assert float(c_a.min()) > 1e-6
    assert float(dca.abs().max()) > 1e-3  # ∂_p C_A is not negligible in b_p
    np.testing.assert_allclose(b[:, 0].numpy(), b_p.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b[:, 1].numpy(), b_xi.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(s[:, 0].numpy(), s_p.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(s[:, 1].numpy(), s_xi.numpy(), rtol=1e-10, atol=1e-12)


def test_runaway_separate_and_fused_coefficients_agree(runaway_grid):
    sde = get_problem("runaway2d")
    x = torch.stack(runaway_grid, 1)
    b, s = sde.coefficients(x, 0.0)
    assert torch.equal(b, sde.drift(x, 0.0, sde.params))
    assert torch.equal(s, sde.diffusion(x, 0.0, sde.params))
    assert b.shape == s.shape == (x.shape[0], 2)


def plain_runaway(x: torch.Tensor, t: float, p: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """runaway2d's coefficients as they were written before the in-place version, one
    expression per line: the bytes of stored datasets are those of these operations."""
    k = derived_constants(p)
    vT, nu, tau = k["vT"], k["nu"], p["tau"]
    col = lambda v: v[:, 0] if isinstance(v, torch.Tensor) else v  # noqa: E731
    e_field, z = col(k["E"]), col(p["Z"])
    mom, xi = x.unbind(1)
    gamma = torch.sqrt(1 + (k["delta_tilde"] * mom) ** 2)
    u = mom / (vT * gamma)
    phi = torch.erf(u)
    dphi = (2 / math.sqrt(math.pi)) * torch.exp((-u * u).clamp_min(-87.0))
    psi = (phi - u * dphi) / (2 * u * u)
    c_a = (nu * vT**2 * psi / u).clamp_min(_FLOOR)
    c_b = (0.5 * nu * vT**2 * (z + phi - psi + k["delta"] ** 4 * u * u / 2) / u).clamp_min(_FLOOR)
    c_f = 2 * nu * vT * psi
    dpsi = dphi - 2 * psi / u
    dca_dp = nu * vT**2 * (dpsi * u - psi) / (u * u) / (vT * gamma**3)
    one_m_xi2 = (1 - xi * xi).clamp_min(0)
    b_p = e_field * xi - gamma * mom * one_m_xi2 / tau - c_f + 2 * c_a / mom + dca_dp
    b_xi = e_field * one_m_xi2 / mom + xi * one_m_xi2 / (tau * gamma) - 2 * xi * c_b / mom**2
    s_p = torch.sqrt(2 * c_a)
    s_xi = torch.sqrt(2 * c_b) * torch.sqrt(one_m_xi2) / mom
    return torch.stack((b_p, b_xi)).T, torch.stack((s_p, s_xi)).T


def runaway_states(dtype: torch.dtype) -> tuple[torch.Tensor, dict]:
    """States in and beyond the training box (floors active at large p), and per-particle
    E0/Z in the (n, 1) form the simulator hands out."""
    rng = np.random.default_rng(0)
    n = 4001
    p = np.concatenate([rng.uniform(0.5, 5.0, n - 1000), np.linspace(0.01, 80.0, 1000)])
    xi = rng.uniform(-1.0, 1.0, n)
    xi[:3] = [-1.0, 1.0, 0.0]
    state = torch.from_numpy(np.stack([p, xi])).to(dtype)  # the simulator's (d, n) layout
    varying = {"E0": torch.from_numpy(rng.uniform(1e-4, 2e-3, (n, 1))).to(dtype),
               "Z": torch.from_numpy(rng.uniform(1.0, 4.0, (n, 1))).to(dtype)}
    return state, varying


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_runaway_in_place_coefficients_are_bit_identical_to_the_plain_formulas(dtype):
    sde = get_problem("runaway2d")
    state, varying = runaway_states(dtype)
    for params in (sde.params, {**sde.params, **varying}):
        for got, want in zip(_coefficients(state.T, 0.0, params),
                             plain_runaway(state.T, 0.0, params), strict=True):
            assert got.shape == want.shape and got.stride() == want.stride()
            assert torch.equal(got, want)


@pytest.mark.parametrize(("dtype", "start"), [(torch.float64, 6.0), (torch.float32, 4.0)])
def test_erf_is_exactly_one_from_where_the_fused_coefficients_skip_it(dtype, start):
    # what runaway2d's fused coefficients rely on to skip erf there (u >= 6 in float64, >= 4
    # in float32), on a grid fine enough to hit every float32 value near the start
    u = torch.cat([torch.linspace(start, 6.0, 2_000_001, dtype=dtype),
                   torch.linspace(6.0, 100.0, 20001, dtype=dtype),
                   torch.tensor([start, 1e3, 1e30, math.inf], dtype=dtype)])
    assert bool((torch.erf(u) == 1.0).all())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_runaway_fused_coefficients_equal_the_plain_ones_to_rounding(dtype):
    sde = get_problem("runaway2d")
    assert sde.compiled_drift_and_diffusion is _coefficients_fused
    state, varying = runaway_states(dtype)
    t = torch.zeros((), dtype=torch.float64)
    # relative to the values, and absolute to their scale (b_p sums terms of both signs)
    rtol, atol = (1e-11, 1e-14) if dtype == torch.float64 else (1e-5, 1e-6)
    for params in (sde.params, {**sde.params, **varying}):
        (b_p, b_xi), (s_p, s_xi) = _coefficients_fused(state.T, t, params)
        b, s = _coefficients(state.T, 0.0, params)
        for got, want in ((b_p, b[:, 0]), (b_xi, b[:, 1]), (s_p, s[:, 0]), (s_xi, s[:, 1])):
            torch.testing.assert_close(got, want, rtol=rtol,
                                       atol=atol * float(want.abs().max()))


def test_runaway_diffusion_non_negative(runaway_grid):
    sde = get_problem("runaway2d")
    p, xi = runaway_grid
    # also outside the training box, where the floors of C_A and C_B matter
    p = torch.cat([p, torch.linspace(0.01, 60.0, 500, dtype=torch.float64)])
    xi = torch.cat([xi, torch.linspace(-1.0, 1.0, 500, dtype=torch.float64)])
    _, s = sde.coefficients(torch.stack((p, xi), 1), 0.0)
    assert torch.isfinite(s).all()
    assert (s >= 0).all()
    assert (s[:, 0] > 0).all()


def test_runaway_boundaries_hold_after_simulate():
    sde = get_problem("runaway2d")
    assert [(b.kind, b.low, b.high) for b in sde.boundaries] == [
        ("clamp", 0.5, None), ("reflect", -1.0, 1.0)]
    n = 2000
    rng = np.random.default_rng(0)
    # Start next to the boundaries so that the rules act: small p (strong collisional drag,
    # near the clamp) and large p with |ξ| near 1 (weak inward pitch drift, near the mirror).
    x0 = np.concatenate([
        np.column_stack([rng.uniform(0.5, 0.6, n // 2), rng.uniform(-1, 1, n // 2)]),
        np.column_stack([rng.uniform(4.5, 5.0, n // 2), rng.choice([-0.9999, 0.9999], n // 2)]),
    ])
    xT = simulate(sde, x0, t_end=100 * sde.dt, dt=sde.dt, seed=3).xT
    assert np.all(xT[:, 0] >= 0.5)
    assert np.all(np.abs(xT[:, 1]) <= 1.0)
    assert np.any(xT[:, 0] == 0.5)  # the clamp really acted
    # Without the rules one step from the same start leaves the box: the checks above can fail.
    free = dataclasses.replace(sde, boundaries=None)
    x1 = simulate(free, x0, t_end=sde.dt, dt=sde.dt, seed=3).xT
    assert np.any(x1[:, 0] < 0.5) and np.any(np.abs(x1[:, 1]) > 1.0)


# --------------------------------------------------------------------------------------------
# Exact transitions
# --------------------------------------------------------------------------------------------

OU_CASES = {
    "default2": dict(dim=2),
    "default3": dict(dim=3),
    "nonnormal_m3": dict(dim=2, A=[[1.0, 0.8], [-0.3, 0.6]], mu=[0.5, -0.2],
                         Sigma=[[0.5, 0.2, 0.0], [0.1, 0.4, 0.3]]),
}


def ou_matrices(sde: SDE):
    return (np.asarray(sde.params[k], dtype=float) for k in ("A", "mu", "Sigma"))


@pytest.mark.parametrize("case", list(OU_CASES))
@pytest.mark.parametrize("t", [0.05, 0.7, 3.0])
def test_ou_covariance_equals_integral(case, t):
    sde = get_problem("ou", **OU_CASES[case])
    a, mu, s = ou_matrices(sde)
    q = s @ s.T
    want, _ = quad_vec(lambda u: scipy.linalg.expm(-a * u) @ q @ scipy.linalg.expm(-a.T * u),
                       0.0, t, epsabs=1e-13, epsrel=1e-11)
    x0 = np.random.default_rng(0).normal(size=(4, sde.dim))
    mean, cov = sde.transition_mean_cov(x0, t)
    np.testing.assert_allclose(cov, want, rtol=1e-9, atol=1e-13)
    np.testing.assert_allclose(mean, mu + (x0 - mu) @ scipy.linalg.expm(-a * t).T, rtol=1e-12)


@pytest.mark.parametrize("case", list(OU_CASES))
def test_ou_covariance_tends_to_stationary(case):
    sde = get_problem("ou", **OU_CASES[case])
    a, mu, s = ou_matrices(sde)
    # Stationary covariance: A C + C Aᵀ = ΣΣᵀ.
    stationary = scipy.linalg.solve_continuous_lyapunov(-a, -s @ s.T)
    for t in (40.0, 400.0):
        mean, cov = sde.transition_mean_cov(np.full((1, sde.dim), 3.0), t)
        np.testing.assert_allclose(cov, stationary, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(mean[0], mu, atol=1e-12)


def test_ou_transition_at_zero_time_is_degenerate():
    sde = get_problem("ou", **OU_CASES["nonnormal_m3"])
    mean, cov = sde.transition_mean_cov([[1.0, 2.0]], 0.0)
    np.testing.assert_allclose(mean, [[1.0, 2.0]])
    np.testing.assert_allclose(cov, 0.0, atol=1e-15)


@pytest.mark.parametrize("mu, sigma", [(1.0, 1.0), (-0.3, 2.5), (0.0, 0.1)])
@pytest.mark.parametrize("t", [0.01, 0.5, 4.0])
def test_bm1d_transition(mu, sigma, t):
    sde = get_problem("bm1d", mu=mu, sigma=sigma)
    x0 = np.array([[-1.0], [0.0], [2.5]])
    mean, cov = sde.transition_mean_cov(x0, t)
    np.testing.assert_allclose(mean, x0 + mu * t, rtol=1e-15)
    np.testing.assert_allclose(cov, [[sigma**2 * t]], rtol=1e-15)


@pytest.mark.parametrize(
    "name, params, t",
    [("bm1d", {}, 0.5), ("bm1d", {"mu": -2.0, "sigma": 0.3}, 1.7), ("ou", {"dim": 2}, 0.4),
     ("ou", {"dim": 3}, 2.0), ("ou", OU_CASES["nonnormal_m3"], 1.0)],
)
def test_transition_logpdf_matches_scipy(name, params, t):
    sde = get_problem(name, **params)
    rng = np.random.default_rng(5)
    x0 = rng.normal(size=(20, sde.dim))
    y = rng.normal(size=(20, sde.dim))
    mean, cov = sde.transition_mean_cov(x0, t)
    want = np.array([stats.multivariate_normal(m, cov).logpdf(v) for m, v in zip(mean, y,
                                                                                 strict=True)])
    got = sde.transition_logpdf(y, x0, t)
    assert got.shape == (20,)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_transition_shape_errors():
    sde = get_problem("ou", dim=2)
    with pytest.raises(ValueError, match=r"x0 must have shape \(n, 2\)"):
        sde.transition_mean_cov(np.zeros((3, 3)), 1.0)
    with pytest.raises(ValueError, match=r"y must have the shape of x0"):
        sde.transition_logpdf(np.zeros((2, 2)), np.zeros((3, 2)), 1.0)


@pytest.mark.parametrize("name", ["abc3d", "runaway2d"])
def test_no_exact_transition(name):
    sde = get_problem(name)
    assert not sde.has_exact_transition
    with pytest.raises(NotImplementedError, match=rf"problem '{name}' has no exact transition"):
        sde.transition_mean_cov(np.zeros((1, sde.dim)), 1.0)
    with pytest.raises(NotImplementedError, match=rf"problem '{name}' has no exact transition"):
        sde.transition_logpdf(np.zeros((1, sde.dim)), np.zeros((1, sde.dim)), 1.0)


@pytest.mark.parametrize("name", ["bm1d", "ou"])
def test_has_exact_transition(name):
    assert get_problem(name).has_exact_transition
