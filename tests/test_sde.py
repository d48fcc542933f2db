"""SDE construction and validation, boundary rules, and user-defined SDEs through ``simulate``."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from prnf_core import SDE, Boundary, ConfigError, simulate

K_SE = 5.0  # standard errors allowed in the statistical checks of this module


def zero_drift(x, t, p):
    return torch.zeros_like(x)


def unit_diag(x, t, p):
    return torch.ones_like(x)


def make_sde(**overrides) -> SDE:
    base = dict(name="user", dim=2, drift=zero_drift, diffusion=unit_diag, noise="diagonal",
                domain=([0.0, 0.0], [1.0, 1.0]))
    return SDE(**{**base, **overrides})


# --------------------------------------------------------------------------------------------
# Construction errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dim", [0, -1, 2.0, "2", None])
def test_bad_dim(dim):
    with pytest.raises(ValueError, match=r"SDE\.dim must be a positive int"):
        make_sde(dim=dim)


@pytest.mark.parametrize("noise", ["multiplicative", "Diagonal", "", None])
def test_unknown_noise_kind_names_allowed_values(noise):
    with pytest.raises(ValueError, match=r"SDE\.noise must be one of") as info:
        make_sde(noise=noise)
    for kind in ("additive", "diagonal", "general"):
        assert kind in str(info.value)


@pytest.mark.parametrize("noise_dim", [1, 3])
def test_diagonal_with_wrong_noise_dim(noise_dim):
    with pytest.raises(ValueError, match=r"noise_dim must equal dim=2 for diagonal"):
        make_sde(noise="diagonal", noise_dim=noise_dim)


def test_diagonal_noise_dim_defaults_to_dim():
    assert make_sde(noise="diagonal").noise_dim == 2
    assert make_sde(noise="diagonal", noise_dim=2).noise_dim == 2


def test_general_needs_noise_dim():
    with pytest.raises(ValueError, match=r"noise_dim .* is required for general noise"):
        make_sde(noise="general")


@pytest.mark.parametrize("noise_dim", [0, -2, 1.5])
def test_general_bad_noise_dim(noise_dim):
    with pytest.raises(ValueError, match=r"SDE\.noise_dim must be"):
        make_sde(noise="general", noise_dim=noise_dim)


def test_additive_noise_dim_defaults_to_dim_and_may_differ():
    assert make_sde(noise="additive").noise_dim == 2
    assert make_sde(noise="additive", noise_dim=5).noise_dim == 5


@pytest.mark.parametrize(
    "domain, match",
    [
        (None, r"SDE\.domain .* is required"),
        (([0.0], [1.0]), r"2 values each"),
        (([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]), r"2 values each"),
        (([0.0, 0.0], [1.0]), r"2 values each"),
        (([0.0, 1.0], [1.0, 1.0]), r"low < high"),
        (([0.0, 2.0], [1.0, 1.0]), r"low < high"),
    ],
)
def test_bad_domain(domain, match):
    with pytest.raises(ValueError, match=match):
        make_sde(domain=domain)


def test_domain_is_normalized_to_float_tuples():
    sde = make_sde(domain=(np.array([0, -1]), [2, 3]))
    assert sde.domain == ((0.0, -1.0), (2.0, 3.0))


@pytest.mark.parametrize("n", [1, 3])
def test_boundaries_length_mismatch(n):
    with pytest.raises(ValueError, match=rf"one entry .* per coordinate: 2, got {n}"):
        make_sde(boundaries=[Boundary("clamp", low=0.0)] * n)


@pytest.mark.parametrize("names", [("a",), ("a", "b", "c")])
def test_coord_names_length_mismatch(names):
    with pytest.raises(ValueError, match=rf"coord_names needs 2 names, got {len(names)}"):
        make_sde(coord_names=names)


def test_coord_names_default():
    assert make_sde().coord_names == ("x0", "x1")


@pytest.mark.parametrize("field", ["t_end", "dt"])
@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, math.inf, "1"])
def test_bad_default_horizon_or_step(field, value):
    with pytest.raises(ValueError, match=rf"SDE\.{field} must be a finite number > 0"):
        make_sde(**{field: value})


def test_describe_is_plain_json():
    import json

    sde = make_sde(params={"a": np.float64(1.5), "v": np.array([1.0, 2.0])},
                   boundaries=(Boundary("clamp", low=0.0), None))
    desc = json.loads(json.dumps(sde.describe()))
    assert desc["params"] == {"a": 1.5, "v": [1.0, 2.0]}
    assert desc["boundaries"] == [{"kind": "clamp", "low": 0.0, "high": None}, None]
    assert desc["noise_dim"] == 2 and desc["domain"] == [[0.0, 0.0], [1.0, 1.0]]


# --------------------------------------------------------------------------------------------
# Boundary rules against independent scalar references
# --------------------------------------------------------------------------------------------


def reflect_ref(v: float, lo: float | None, hi: float | None) -> float:
    """Mirror repeatedly until inside: the definition of reflection, one bounce at a time."""
    for _ in range(10_000):
        if lo is not None and v < lo:
            v = 2 * lo - v
        elif hi is not None and v > hi:
            v = 2 * hi - v
        else:
            return v
    raise AssertionError("reference reflection did not terminate")


def apply_rule(rule: Boundary, values: np.ndarray) -> np.ndarray:
    x = torch.tensor(values, dtype=torch.float64)
    out = rule.apply_(x)
    assert out is None  # in place
    return x.numpy()


# Overshoots of many interval widths on both sides, plus points inside and on the bounds.
overshoot_values = np.concatenate([np.linspace(-23.7, 25.3, 997), [-1.0, 1.0, 0.0, 2.0, 3.0, -3.0]])


@pytest.mark.parametrize("lo, hi", [(-1.0, 1.0), (0.5, 0.75), (2.0, 7.0), (-5.0, -4.0)])
def test_reflect_interval_matches_repeated_mirroring(lo, hi):
    got = apply_rule(Boundary("reflect", low=lo, high=hi), overshoot_values)
    want = np.array([reflect_ref(v, lo, hi) for v in overshoot_values])
    # The reference accumulates one rounding per bounce; allow a few ulps of the magnitude.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * (np.abs(overshoot_values).max() + 1))
    assert np.all((got >= lo) & (got <= hi))
    # Many values really were several widths outside: the test covers multiple bounces.
    width = hi - lo
    far = (overshoot_values < lo - 2 * width) | (overshoot_values > hi + 2 * width)
    assert np.sum(far) > 100


@pytest.mark.parametrize("lo", [-1.0, 0.0, 3.5])
def test_reflect_low_only(lo):
    got = apply_rule(Boundary("reflect", low=lo), overshoot_values)
    want = np.where(overshoot_values < lo, 2 * lo - overshoot_values, overshoot_values)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * 30)
    assert np.all(got >= lo)


@pytest.mark.parametrize("hi", [-1.0, 0.0, 3.5])
def test_reflect_high_only(hi):
    got = apply_rule(Boundary("reflect", high=hi), overshoot_values)
    want = np.where(overshoot_values > hi, 2 * hi - overshoot_values, overshoot_values)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * 30)
    assert np.all(got <= hi)


@pytest.mark.parametrize("lo, hi", [(0.5, None), (None, 2.0), (-1.0, 1.0)])
def test_clamp(lo, hi):
    got = apply_rule(Boundary("clamp", low=lo, high=hi), overshoot_values)
    want = np.clip(overshoot_values, -np.inf if lo is None else lo, np.inf if hi is None else hi)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("lo, hi", [(0.0, 2 * math.pi), (-1.0, 1.0), (3.0, 3.5)])
def test_periodic(lo, hi):
    got = apply_rule(Boundary("periodic", low=lo, high=hi), overshoot_values)
    length = hi - lo
    assert np.all((got >= lo) & (got <= hi))
    # Differs from the input by a whole number of periods...
    shifts = (overshoot_values - got) / length
    np.testing.assert_allclose(shifts, np.round(shifts), atol=1e-9)
    # ... and equals the floor-based reference.
    want = overshoot_values - length * np.floor((overshoot_values - lo) / length)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * 30)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lo, hi", [(0.0, 2 * math.pi), (3.0, 3.5), (-1.0, 1.0)])
def test_periodic_is_half_open_at_rounding_edges(dtype, lo, hi):
    """[low, high) even where the remainder or the shift back rounds up to high."""
    eps = torch.finfo(dtype).eps
    edge = [lo - 1e-20, lo - eps * abs(hi), hi, hi - 1e-20, hi + 1e-20, lo, 2 * hi - lo,
            np.nextafter(hi, lo), lo - (hi - lo)]
    x = torch.tensor(edge, dtype=dtype)
    Boundary("periodic", low=lo, high=hi).apply_(x)
    assert torch.all(x >= lo) and torch.all(x < hi), x.tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layout", ["row_major", "column_major"])
def test_apply_boundaries_on_strided_columns(dtype, layout):
    """Rules act per column of an (n, d) view, contiguous or not, and leave None columns alone."""
    rng = np.random.default_rng(3)
    values = rng.uniform(-6, 6, size=(200, 3))
    sde = make_sde(
        dim=3, domain=([0.0] * 3, [1.0] * 3),
        boundaries=(Boundary("reflect", low=-1.0, high=1.0), None, Boundary("clamp", low=0.0)),
    )
    x = torch.tensor(values, dtype=dtype)
    if layout == "column_major":
        x = x.T.contiguous().T
    sde.apply_boundaries_(x)
    np_dtype = x.numpy().dtype
    typed = values.astype(np_dtype)  # the values the rules actually saw
    ref0 = np.array([reflect_ref(float(v), -1.0, 1.0) for v in typed[:, 0]])
    atol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(x[:, 0].numpy(), ref0, atol=atol)
    np.testing.assert_array_equal(x[:, 1].numpy(), typed[:, 1])
    np.testing.assert_array_equal(x[:, 2].numpy(), np.maximum(typed[:, 2], 0))


def test_sde_without_boundaries_leaves_state_alone():
    sde = make_sde()
    assert not sde.has_boundaries
    x = torch.randn(10, 2, dtype=torch.float64)
    before = x.clone()
    sde.apply_boundaries_(x)
    assert torch.equal(x, before)
    assert not make_sde(boundaries=(None, None)).has_boundaries
    assert make_sde(boundaries=(None, Boundary("clamp", high=1.0))).has_boundaries


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(kind="mirror", low=0.0), r"Boundary\.kind must be one of"),
        (dict(kind="reflect"), r"at least one of low/high"),
        (dict(kind="clamp"), r"at least one of low/high"),
        (dict(kind="periodic", low=0.0), r"periodic.* needs both low and high"),
        (dict(kind="periodic", high=1.0), r"periodic.* needs both low and high"),
        (dict(kind="reflect", low=1.0, high=1.0), r"needs low < high"),
        (dict(kind="clamp", low=2.0, high=1.0), r"needs low < high"),
    ],
)
def test_boundary_validation(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        Boundary(**kwargs)
    if kwargs["kind"] == "mirror":
        for kind in ("reflect", "clamp", "periodic"):
            assert kind in str(info.value)


# --------------------------------------------------------------------------------------------
# User-defined SDEs through simulate
# --------------------------------------------------------------------------------------------


def test_user_gbm_diagonal_matches_exact_em_moments():
    """GBM dX = μX dt + σX dW. Euler–Maruyama moments are known exactly:
    E[X_n] = x0 (1+μΔt)^n and E[X_n²] = x0² ((1+μΔt)² + σ²Δt)^n."""
    mu, sigma, x0, dt, t_end, n = 0.5, 0.4, 1.3, 0.05, 1.0, 100_000
    gbm = SDE(
        name="gbm", dim=1,
        drift=lambda x, t, p: p["mu"] * x,
        diffusion=lambda x, t, p: p["sigma"] * x,
        noise="diagonal", params={"mu": mu, "sigma": sigma}, domain=([0.5], [2.0]),
    )
    xT = simulate(gbm, np.full((n, 1), x0), t_end=t_end, dt=dt, seed=11).xT[:, 0]
    steps = round(t_end / dt)
    m1 = x0 * (1 + mu * dt) ** steps
    m2 = x0**2 * ((1 + mu * dt) ** 2 + sigma**2 * dt) ** steps
    assert abs(xT.mean() - m1) <= K_SE * xT.std(ddof=1) / math.sqrt(n)
    sq = xT**2
    assert abs(sq.mean() - m2) <= K_SE * sq.std(ddof=1) / math.sqrt(n)


S_GENERAL = np.array([[0.6, -0.2, 0.3], [0.1, 0.5, -0.4]])


def general_sde(state_dependent: bool) -> SDE:
    """2-D SDE driven by a 3-D Brownian motion, σ (n, 2, 3)."""

    def diffusion(x, t, p):
        s = torch.as_tensor(p["S"], dtype=x.dtype)
        if not state_dependent:
            return s.expand(x.shape[0], 2, 3)
        scale = 1.0 + 0.5 * torch.sin(x[:, :1])  # (n, 1), in [0.5, 1.5]
        return s * scale[:, :, None]

    return SDE(name="general2d", dim=2, drift=zero_drift, diffusion=diffusion, noise="general",
               noise_dim=3, params={"S": S_GENERAL.tolist()}, domain=([-1, -1], [1, 1]))


def test_user_general_noise_constant_sigma_exact_covariance():
    """Constant σ, zero drift: X_T = x0 + σ W_T exactly, so Cov = σσᵀ T."""
    n, t_end = 100_000, 0.5
    x0 = np.array([0.3, -0.7])
    xT = simulate(general_sde(False), np.tile(x0, (n, 1)), t_end=t_end, dt=0.1, seed=5).xT
    want = S_GENERAL @ S_GENERAL.T * t_end
    dev = xT - xT.mean(axis=0)
    for i in range(2):
        assert abs(xT[:, i].mean() - x0[i]) <= K_SE * xT[:, i].std(ddof=1) / math.sqrt(n)
        for j in range(2):
            prod = dev[:, i] * dev[:, j]
            assert abs(prod.mean() - want[i, j]) <= K_SE * prod.std(ddof=1) / math.sqrt(n)


def test_user_general_noise_state_dependent_is_martingale():
    """Zero drift: every EM increment has conditional mean zero, so E[X_T] = x0 exactly."""
    n = 50_000
    x0 = np.array([1.0, -0.5])
    xT = simulate(general_sde(True), np.tile(x0, (n, 1)), t_end=1.0, dt=0.05, seed=6).xT
    se = xT.std(axis=0, ddof=1) / math.sqrt(n)
    assert np.all(np.abs(xT.mean(axis=0) - x0) <= K_SE * se)
    assert np.all(xT.std(axis=0) > 0.3)  # the noise really acted


def test_general_noise_with_diagonal_sigma_equals_diagonal_noise():
    """The general (n, d, m) path with σ = diag(s(x)) reproduces the diagonal path (same seed)."""

    def s_diag(x, t, p):
        return 0.3 + 0.2 * torch.cos(x)

    diag = make_sde(diffusion=s_diag, drift=lambda x, t, p: -x)
    gen = make_sde(noise="general", noise_dim=2, drift=lambda x, t, p: -x,
                   diffusion=lambda x, t, p: torch.diag_embed(s_diag(x, t, p)))
    x0 = np.random.default_rng(0).normal(size=(500, 2))
    a = simulate(diag, x0, t_end=0.5, dt=0.05, seed=9).xT
    b = simulate(gen, x0, t_end=0.5, dt=0.05, seed=9).xT
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_additive_vector_matrix_and_diagonal_agree():
    """Additive σ as a (d,) vector, a (d, d) diagonal matrix, or diagonal (n, d): same path."""
    s = torch.tensor([0.4, 0.9], dtype=torch.float64)
    drift = lambda x, t, p: 1.0 - x  # noqa: E731
    vec = make_sde(noise="additive", drift=drift, diffusion=lambda x, t, p: s)
    mat = make_sde(noise="additive", drift=drift, diffusion=lambda x, t, p: torch.diag(s))
    dia = make_sde(noise="diagonal", drift=drift, diffusion=lambda x, t, p: s.expand_as(x))
    x0 = np.random.default_rng(1).normal(size=(300, 2))
    outs = [simulate(sde, x0, t_end=0.3, dt=0.01, seed=4).xT for sde in (vec, mat, dia)]
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(outs[2], outs[0], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Shape errors from simulate name the coefficient and the expected shape
# --------------------------------------------------------------------------------------------

N_SHAPE = 7


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(drift=lambda x, t, p: x[:, 0]), r"^drift: .*\(n, d\) = \(7, 2\), got \(7,\)"),
        (dict(drift=lambda x, t, p: torch.zeros(x.shape[0], 3, dtype=x.dtype)),
         r"^drift: .*\(n, d\) = \(7, 2\), got \(7, 3\)"),
        (dict(diffusion=lambda x, t, p: torch.ones(x.shape[0], 2, 2, dtype=x.dtype)),
         r"^diffusion: .*noise='diagonal'.*\(n, d\) = \(7, 2\), got \(7, 2, 2\)"),
        (dict(noise="general", noise_dim=3,
              diffusion=lambda x, t, p: torch.ones(x.shape[0], 2, 2, dtype=x.dtype)),
         r"^diffusion: .*noise='general'.*\(n, d, m\) = \(7, 2, 3\), got \(7, 2, 2\)"),
        (dict(noise="general", noise_dim=3, diffusion=lambda x, t, p: torch.ones_like(x)),
         r"^diffusion: .*\(n, d, m\) = \(7, 2, 3\), got \(7, 2\)"),
        (dict(noise="additive", diffusion=lambda x, t, p: torch.ones(3, dtype=x.dtype)),
         r"^diffusion: .*\(d,\) = \(2,\), got \(3,\)"),
        (dict(noise="additive", noise_dim=3,
              diffusion=lambda x, t, p: torch.ones(2, dtype=x.dtype)),
         r"^diffusion: a \(d,\) vector needs noise_dim == dim"),
        (dict(noise="additive", noise_dim=3,
              diffusion=lambda x, t, p: torch.ones(2, 2, dtype=x.dtype)),
         r"^diffusion: .*\(d, m\) = \(2, 3\), got \(2, 2\)"),
    ],
)
def test_wrong_coefficient_shape_is_config_error(overrides, match):
    sde = make_sde(**overrides)
    with pytest.raises(ConfigError, match=match):
        simulate(sde, np.zeros((N_SHAPE, 2)), t_end=0.1, dt=0.05)


# --------------------------------------------------------------------------------------------
# σ is evaluated at X_k even when it returns (a view of) the state itself
# --------------------------------------------------------------------------------------------


def test_diffusion_aliasing_state_is_evaluated_before_drift():
    """From x0 = 0, drift 10 and σ(x) = x: one EM step gives exactly 10 (σ(X_0) = 0).
    Evaluating σ after the drift update would give 10 + 10·√Δt·ξ instead."""
    sde = make_sde(dim=1, domain=([0.0], [1.0]),
                   drift=lambda x, t, p: torch.full_like(x, 10.0),
                   diffusion=lambda x, t, p: x)
    xT = simulate(sde, np.zeros((1000, 1)), t_end=1.0, dt=1.0, seed=0).xT
    np.testing.assert_array_equal(xT, 10.0)


@pytest.mark.parametrize("noise", ["diagonal", "general"])
def test_aliased_diffusion_equals_copied_diffusion(noise):
    """σ returning the state (a view) gives bit-for-bit the path of σ returning a copy."""
    drift = lambda x, t, p: 0.7 - x  # noqa: E731
    if noise == "diagonal":
        alias = lambda x, t, p: x  # noqa: E731
        copy = lambda x, t, p: x.clone()  # noqa: E731
        extra = {}
    else:
        alias = lambda x, t, p: x.unsqueeze(-1)  # noqa: E731
        copy = lambda x, t, p: x.unsqueeze(-1).clone()  # noqa: E731
        extra = {"noise_dim": 1}
    a = make_sde(noise=noise, drift=drift, diffusion=alias, **extra)
    b = make_sde(noise=noise, drift=drift, diffusion=copy, **extra)
    x0 = np.random.default_rng(2).uniform(0.5, 1.5, size=(400, 2))
    xa = simulate(a, x0, t_end=0.5, dt=0.05, seed=3).xT
    xb = simulate(b, x0, t_end=0.5, dt=0.05, seed=3).xT
    np.testing.assert_array_equal(xa, xb)


def test_fused_coefficients_are_preferred_and_consistent():
    calls = {"fused": 0}

    def fused(x, t, p):
        calls["fused"] += 1
        return -x, torch.ones_like(x)

    sde = make_sde(drift=lambda x, t, p: -x, drift_and_diffusion=fused)
    plain = dataclasses.replace(sde, drift_and_diffusion=None)
    x0 = np.ones((50, 2))
    a = simulate(sde, x0, t_end=0.2, dt=0.05, seed=1).xT
    b = simulate(plain, x0, t_end=0.2, dt=0.05, seed=1).xT
    assert calls["fused"] == 4
    np.testing.assert_array_equal(a, b)
