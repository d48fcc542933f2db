"""Per-particle SDE parameters (``SDE.varying``, ``simulate(param_values=...)``) and datasets over
(t, θ) (``DatasetConfig.param_box``, the ``theta`` array, ``Dataset.conditioned_tuples``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import qmc

from prnf_core import (
    SDE,
    ConfigError,
    DatasetConfig,
    create_dataset,
    get_problem,
    open_dataset,
    run_dataset,
    simulate,
)
from prnf_core.dataset import simulate_and_write_chunk
from prnf_core.dataset_config import SOBOL_SPAWN_KEY, chunk_theta, simulate_chunk_arrays
from prnf_core.problems.ou1d_rate import ou1d_rate_transition

Z_TOL = 5.0  # standard errors: a false alarm once in ~1.7 million runs per comparison


# --------------------------------------------------------------------------------------------
# SDE.varying
# --------------------------------------------------------------------------------------------


def _bm(**kw) -> SDE:
    base = dict(name="t", dim=1, drift=lambda x, t, p: x * 0, noise="additive",
                diffusion=lambda x, t, p: x.new_ones(1), params={"a": 1.0, "m": [1.0]},
                domain=([0.0], [1.0]))
    return SDE(**{**base, **kw})


def test_builtin_problems_declare_their_varying_parameters():
    assert get_problem("bm1d").varying == ("mu", "sigma")
    assert get_problem("runaway2d").varying == ("E0", "Z")
    assert get_problem("abc3d").varying == ("pe",)
    assert get_problem("ou1d_rate").varying == ("mu",)
    assert get_problem("ou").varying == ()


@pytest.mark.parametrize("varying, message", [
    (("b",), r"SDE.varying: 'b' is not a parameter"),
    (("m",), r"SDE.varying: parameter 'm' must be a real scalar"),
    ("a", r"SDE.varying must be a sequence"),
    (("a", "a"), r"distinct"),
])
def test_varying_is_validated(varying, message):
    with pytest.raises(ValueError, match=message):
        _bm(varying=varying)


@pytest.mark.parametrize("values, message", [
    ({"nope": np.zeros(4)}, r"param_values: problem 'bm1d' cannot vary \['nope'\] per particle; "
                            r"allowed: \['mu', 'sigma'\]"),
    ({"mu": np.zeros(3)}, r"param_values: 'mu' must have shape \(4,\)"),
    ({"mu": np.array([0.0, np.nan, 0.0, 0.0])}, r"param_values: 'mu' has 1 non-finite"),
    ({"mu": np.array(["a"] * 4)}, r"param_values: 'mu' must be a real array"),
])
def test_param_values_errors_name_the_field_and_the_allowed_names(values, message):
    with pytest.raises(ConfigError, match=message) as info:
        simulate(get_problem("bm1d"), np.zeros((4, 1)), param_values=values, device="cpu")
    assert isinstance(info.value, ValueError)


def test_param_values_on_a_problem_without_varying_parameters():
    with pytest.raises(ValueError, match=r"cannot vary \['A'\].*allowed: \[\] \(SDE.varying"):
        simulate(get_problem("ou", dim=1), np.zeros((4, 1)), param_values={"A": np.ones(4)},
                 device="cpu")


# --------------------------------------------------------------------------------------------
# simulate with per-particle parameters
# --------------------------------------------------------------------------------------------


def test_bm1d_per_particle_drift_gives_the_exact_means():
    sde = get_problem("bm1d")
    t_end, per_group = 0.5, 5000
    mus = np.array([-1.0, 0.0, 0.5, 2.0])
    mu = np.repeat(mus, per_group)
    x0 = np.linspace(-1.0, 1.0, mu.size)[:, None]
    out = simulate(sde, x0, seed=3, param_values={"mu": mu}, device="cpu")
    inc = (out.xT - x0)[:, 0]
    se = math.sqrt(sde.params["sigma"] ** 2 * t_end / per_group)
    for i, m in enumerate(mus):
        group = inc[i * per_group:(i + 1) * per_group]
        assert abs(group.mean() - m * t_end) < Z_TOL * se, (m, group.mean())
    # per particle: X_T - x0 - mu_i T ~ N(0, sigma^2 T) exactly
    resid = inc - mu * t_end
    assert abs(resid.mean()) < Z_TOL * math.sqrt(t_end / mu.size)
    assert abs(resid.var() / t_end - 1) < Z_TOL * math.sqrt(2 / mu.size)


def test_bm1d_per_particle_noise_scale():
    sde = get_problem("bm1d")
    sigmas, per_group = np.array([0.25, 1.0, 2.0]), 5000
    sigma = np.repeat(sigmas, per_group)
    out = simulate(sde, np.zeros((sigma.size, 1)), seed=4, param_values={"sigma": sigma},
                   device="cpu")
    for i, s in enumerate(sigmas):
        group = out.xT[i * per_group:(i + 1) * per_group, 0] - sde.params["mu"] * sde.t_end
        assert abs(group.var() / (s**2 * sde.t_end) - 1) < Z_TOL * math.sqrt(2 / per_group)


@pytest.mark.parametrize("name, t_end", [("bm1d", None), ("runaway2d", 0.5), ("abc3d", 0.1),
                                         ("ou1d_rate", None)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fixed_path_is_reproducible_and_equals_per_particle_defaults(name, t_end, dtype):
    """The fixed path is deterministic; every particle at the default θ reproduces it (bit for
    bit in float64, where the coefficient arithmetic is the same)."""
    sde = get_problem(name)
    lo, hi = (np.asarray(v) for v in sde.domain)
    x0 = lo + (hi - lo) * np.random.default_rng(0).random((500, sde.dim))
    kw = dict(t_end=t_end, seed=11, dtype=dtype, device="cpu", save_times=None)
    first = simulate(sde, x0, **kw)
    np.testing.assert_array_equal(first.xT, simulate(sde, x0, **kw).xT)
    np.testing.assert_array_equal(first.xT, simulate(sde, x0, param_values=None, **kw).xT)
    defaults = {k: np.full(len(x0), float(sde.params[k])) for k in sde.varying}
    varied = simulate(sde, x0, param_values=defaults, **kw)
    if dtype == "float64":
        np.testing.assert_array_equal(first.xT, varied.xT)
    else:  # float32 derives constants in float32 from the tensors: rounding apart at most
        np.testing.assert_allclose(first.xT, varied.xT, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name, values, t_end", [
    ("runaway2d", {"E0": (0.0, 0.01), "Z": (1.0, 3.0)}, 1.0),
    ("abc3d", {"pe": (0.5, 6.0)}, 0.2),
])
def test_runaway2d_and_abc3d_with_per_particle_parameters(name, values, t_end):
    sde = get_problem(name)
    n = 400
    rng = np.random.default_rng(5)
    lo, hi = (np.asarray(v) for v in sde.domain)
    x0 = lo + (hi - lo) * rng.random((n, sde.dim))
    theta = {k: rng.uniform(a, b, n) for k, (a, b) in values.items()}
    # the default on the first half: those particles follow the fixed path exactly
    for k in theta:
        theta[k][: n // 2] = sde.params[k]
    out = simulate(sde, x0, t_end=t_end, seed=2, param_values=theta, device="cpu",
                   save_times=[0.0, t_end])
    assert out.xT.shape == (n, sde.dim) and np.isfinite(out.xT).all()
    assert np.isfinite(out.snapshots).all()
    fixed = simulate(sde, x0, t_end=t_end, seed=2, device="cpu")
    np.testing.assert_array_equal(out.xT[: n // 2], fixed.xT[: n // 2])
    assert not np.array_equal(out.xT[n // 2:], fixed.xT[n // 2:])


def test_abc3d_pe_scales_the_drift_per_particle():
    """pe = 0 leaves pure Brownian motion: X_T - x0 ~ N(0, T I)."""
    sde = get_problem("abc3d")
    n, t_end = 4000, 0.2
    x0 = np.random.default_rng(1).uniform(0, 2 * np.pi, (n, 3))
    out = simulate(sde, x0, t_end=t_end, seed=6, param_values={"pe": np.zeros(n)},
                   device="cpu")
    inc = out.xT - x0
    assert np.all(np.abs(inc.mean(axis=0)) < Z_TOL * math.sqrt(t_end / n))
    assert np.all(np.abs(inc.var(axis=0) / t_end - 1) < Z_TOL * math.sqrt(2 / n))


def test_runaway2d_stronger_field_gives_more_runaways():
    sde = get_problem("runaway2d")
    n = 2000
    x0 = np.column_stack([np.full(n, 2.0), np.full(n, 0.9)])
    e0 = np.where(np.arange(n) < n // 2, 0.0, 0.005)
    out = simulate(sde, x0, t_end=2.0, seed=3, param_values={"E0": e0}, device="cpu")
    weak, strong = out.xT[: n // 2, 0].mean(), out.xT[n // 2:, 0].mean()
    assert strong > weak + 0.1


def test_ambiguous_square_additive_sigma_uses_the_fixed_shape():
    """n == d == m: an (n, d) σ is a per-particle diagonal when the fixed σ is a vector."""
    def diffusion(x, t, p):
        s = p["s"]
        return s.expand(-1, 2) if hasattr(s, "expand") else x.new_full((2,), s)

    sde = SDE(name="sq", dim=2, drift=lambda x, t, p: x * 0, diffusion=diffusion,
              noise="additive", params={"s": 1.0}, varying=("s",), domain=([0, 0], [1, 1]),
              t_end=0.1, dt=0.01)
    x0 = np.zeros((2, 2))
    fixed = simulate(sde, x0, seed=1, device="cpu")
    varied = simulate(sde, x0, seed=1, device="cpu", param_values={"s": np.ones(2)})
    np.testing.assert_array_equal(fixed.xT, varied.xT)


# --------------------------------------------------------------------------------------------
# ou1d_rate
# --------------------------------------------------------------------------------------------


def test_ou1d_rate_matches_its_exact_transition_at_several_t_and_mu():
    sde = get_problem("ou1d_rate")
    assert (sde.t_end, sde.dt, sde.domain) == (1.0, 0.005, ((-2.0,), (2.0,)))
    mus, per_group, times = np.array([0.2, 1.0, 3.0]), 10_000, [0.25, 0.5, 1.0]
    mu = np.repeat(mus, per_group)
    x0 = np.tile(np.linspace(-2.0, 2.0, per_group), len(mus))[:, None]
    out = simulate(sde, x0, seed=8, save_times=times, param_values={"mu": mu}, device="cpu")
    for j, t in enumerate(times):
        mean, cov = ou1d_rate_transition(x0, t, {"mu": mu})
        z = (out.snapshots[j] - mean)[:, 0] / np.sqrt(cov[:, 0, 0])  # N(0, 1) if exact
        for i, m in enumerate(mus):
            group = z[i * per_group:(i + 1) * per_group]
            assert abs(group.mean()) < Z_TOL / math.sqrt(per_group), (t, m, group.mean())
            assert abs(group.var() - 1) < Z_TOL * math.sqrt(2 / per_group), (t, m, group.var())


def test_ou1d_rate_fixed_mu_matches_the_sde_transition():
    sde = get_problem("ou1d_rate", mu=2.0)
    n = 20_000
    x0 = np.full((n, 1), 1.5)
    out = simulate(sde, x0, seed=9, device="cpu")
    mean, cov = sde.transition_mean_cov(x0, 1.0)
    assert cov.shape == (1, 1)
    z = (out.xT - mean)[:, 0] / math.sqrt(cov[0, 0])
    assert abs(z.mean()) < Z_TOL / math.sqrt(n)
    assert abs(z.var() - 1) < Z_TOL * math.sqrt(2 / n)


def test_gaussian_transition_accepts_per_row_mu():
    x0 = np.array([[1.0], [-2.0], [0.5], [0.0]])
    mu = np.array([1.0, 0.0, -0.5, 3.0])
    t = 0.7
    mean, cov = ou1d_rate_transition(x0, t, {"mu": mu})
    assert mean.shape == (4, 1) and cov.shape == (4, 1, 1)
    for i in range(4):
        m1, c1 = ou1d_rate_transition(x0[i:i + 1], t, {"mu": float(mu[i])})
        assert c1.shape == (1, 1)
        np.testing.assert_allclose(mean[i], m1[0], rtol=1e-14)
        np.testing.assert_allclose(cov[i], c1, rtol=1e-14)
    np.testing.assert_allclose(mean[:, 0], x0[:, 0] * np.exp(-mu * t), rtol=1e-14)
    expected = (1 + mu**2) * np.where(mu == 0, t, (1 - np.exp(-2 * mu * t)) / (2 * np.where(
        mu == 0, 1, mu)))
    np.testing.assert_allclose(cov[:, 0, 0], expected, rtol=1e-12)
    np.testing.assert_allclose(ou1d_rate_transition(x0, t, {"mu": 1e-12})[1], [[t]],
                               rtol=1e-9)  # the μ → 0 limit, no 0/0
    with pytest.raises(ValueError, match=r"params\['mu'\]: a per-row μ needs shape \(4,\)"):
        ou1d_rate_transition(x0, t, {"mu": np.ones(3)})


# --------------------------------------------------------------------------------------------
# DatasetConfig.param_box
# --------------------------------------------------------------------------------------------


def _cfg(**overrides) -> DatasetConfig:
    base = dict(problem="bm1d", n_particles=400, chunk_size=100, dt=0.05, seed=3,
                save_times=[0.0, 0.25, 0.5], param_box={"mu": (-1.0, 1.0), "sigma": (0.5, 2.0)})
    return DatasetConfig(**{**base, **overrides})


@pytest.mark.parametrize("overrides, message", [
    ({"param_box": {"kappa": (0.0, 1.0)}},
     r"param_box: problem 'bm1d' cannot vary \['kappa'\] per particle; allowed: "
     r"\['mu', 'sigma'\]"),
    ({"param_box": {"mu": (1.0, 1.0)}}, r"param_box: 'mu' needs finite low < high"),
    ({"param_box": {"mu": (2.0, 1.0)}}, r"param_box: 'mu' needs finite low < high"),
    ({"param_box": {}}, r"param_box: name at least one parameter; allowed: \['mu', 'sigma'\]"),
    ({"problem": "ou", "param_box": {"A": (0.0, 1.0)}},
     r"param_box: problem 'ou' has no parameters that vary per particle"),
    ({"param_design": "grid"}, r"param_design"),
])
def test_param_box_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        _cfg(**overrides)


def test_ids_cover_param_box_only_when_set():
    plain = DatasetConfig(problem="bm1d", n_particles=400, chunk_size=100)
    assert "param_box" not in plain.resolved() and "param_design" not in plain.resolved()
    # a config that sets only the design (no box) is the plain one
    assert DatasetConfig(problem="bm1d", n_particles=400, chunk_size=100,
                         param_design="uniform").dataset_id() == plain.dataset_id()
    boxed = _cfg()
    assert boxed.resolved()["param_box"] == {"mu": [-1.0, 1.0], "sigma": [0.5, 2.0]}
    assert boxed.resolved()["param_design"] == "sobol"
    ids = {boxed.dataset_id(), _cfg(param_design="uniform").dataset_id(),
           _cfg(param_box={"mu": (-1.0, 1.0)}).dataset_id(), _cfg(param_box=None).dataset_id()}
    assert len(ids) == 4
    assert boxed.param_names == ["mu", "sigma"] and plain.param_names == []
    # the family ignores the size only: a larger boxed dataset is a growth of this one
    assert _cfg(n_particles=800).family_id() == boxed.family_id()


@pytest.mark.filterwarnings("ignore:The balance properties of Sobol:UserWarning")
def test_sobol_design_is_one_sequence_over_chunks_and_a_prefix_when_grown():
    cfg = _cfg()
    whole = np.concatenate([chunk_theta(cfg, i) for i in range(cfg.n_chunks)])
    seq = np.random.SeedSequence(cfg.seed, spawn_key=(SOBOL_SPAWN_KEY,))
    unit = qmc.Sobol(d=2, scramble=True, rng=np.random.default_rng(seq)).random(400)
    np.testing.assert_array_equal(whole, np.array([-1.0, 0.5]) + unit * np.array([2.0, 1.5]))
    bigger = _cfg(n_particles=1000)
    np.testing.assert_array_equal(
        np.concatenate([chunk_theta(bigger, i) for i in range(4)]), whole)
    # the chunk size changes nothing either: row r always gets Sobol point r
    other = _cfg(chunk_size=64)
    np.testing.assert_array_equal(
        np.concatenate([chunk_theta(other, i) for i in range(other.n_chunks)]), whole)
    assert chunk_theta(_cfg(param_box=None), 0) is None


@pytest.mark.filterwarnings("ignore:The balance properties of Sobol:UserWarning")
@pytest.mark.parametrize("design", ["sobol", "uniform"])
def test_a_log_scale_design_is_the_linear_one_in_log_theta(design):
    """The same unit points, mapped to log θ: θ = low (high/low)^u for a log-scale parameter,
    the other columns untouched."""
    box = {"mu": (-1.0, 1.0), "sigma": (0.5, 2.0)}
    linear = chunk_theta(_cfg(param_box=box, param_design=design), 1)
    logged = chunk_theta(_cfg(param_box=box, param_design=design,
                              param_scale={"sigma": "log"}), 1)
    np.testing.assert_array_equal(logged[:, 0], linear[:, 0])
    unit = (linear[:, 1] - 0.5) / 1.5
    np.testing.assert_allclose(logged[:, 1], 0.5 * 4.0 ** unit, rtol=1e-12)
    assert ((logged[:, 1] >= 0.5) & (logged[:, 1] < 2.0)).all()


def test_param_scale_enters_the_id_only_when_log_and_is_validated():
    boxed = _cfg()
    assert "param_scale" not in boxed.resolved()
    assert _cfg(param_scale={"sigma": "linear"}).dataset_id() == boxed.dataset_id()
    logged = _cfg(param_scale={"sigma": "log"})
    assert logged.resolved()["param_scale"] == {"sigma": "log"}
    assert logged.dataset_id() != boxed.dataset_id() and logged.log_params == ["sigma"]
    with pytest.raises(ValueError, match=r"param_scale\.mu: a log scale needs a box with "
                                         r"low > 0, got \[-1\.0, 1\.0\]"):
        _cfg(param_scale={"mu": "log"})
    with pytest.raises(ValueError, match=r"param_scale: 'kappa' is not in the parameter box; "
                                         r"allowed: \['mu', 'sigma'\]"):
        _cfg(param_scale={"kappa": "log"})
    with pytest.raises(ValueError, match=r"param_scale: 'sigma' is not in the parameter box"):
        _cfg(param_box=None, param_scale={"sigma": "log"})


def test_uniform_design_is_a_third_child_and_leaves_x0_and_noise_alone():
    cfg = _cfg(param_design="uniform")
    theta = chunk_theta(cfg, 2)
    np.testing.assert_array_equal(theta, chunk_theta(cfg, 2))
    assert not np.array_equal(theta, chunk_theta(cfg, 1))
    assert ((theta >= [-1.0, 0.5]) & (theta < [1.0, 2.0])).all()
    x0, xT, _, th = simulate_chunk_arrays(cfg, 2, device="cpu")
    np.testing.assert_array_equal(th, theta)
    plain_x0, plain_xT, _, none = simulate_chunk_arrays(_cfg(param_box=None), 2, device="cpu")
    assert none is None
    np.testing.assert_array_equal(x0, plain_x0)  # the same x0 with or without θ
    # same noise: with each particle's θ, X_T - x0 - mu T = sigma (W_T), W_T shared
    w_boxed = (xT - x0)[:, 0] - theta[:, 0] * 0.5
    w_plain = (plain_xT - plain_x0)[:, 0] - 1.0 * 0.5
    np.testing.assert_allclose(w_boxed / theta[:, 1], w_plain, atol=1e-12)


# --------------------------------------------------------------------------------------------
# stores
# --------------------------------------------------------------------------------------------


def test_store_round_trip_with_theta(tmp_path):
    cfg = _cfg()
    summary = run_dataset(cfg, tmp_path / "a.zarr", client=None, device="cpu")
    assert summary.complete
    ds = open_dataset(tmp_path / "a.zarr")
    assert ds.param_names == ["mu", "sigma"]
    theta = ds.load("theta")
    assert theta.shape == (400, 2) and theta.dtype == np.float64
    assert ds.group["theta"].chunks == (100, 2)
    assert "theta_checksum" in ds.group and ds.verify() == []
    assert ((theta >= [-1.0, 0.5]) & (theta < [1.0, 2.0])).all()
    # a space-filling design: every quarter of the mu range holds a quarter of the points
    counts = np.histogram(theta[:, 0], bins=4, range=(-1.0, 1.0))[0]
    assert np.all(np.abs(counts - 100) <= 2)
    # the law per particle: X_T - x0 ~ N(mu_i T, sigma_i^2 T)
    z = (ds.load("xT") - ds.load("x0"))[:, 0] - theta[:, 0] * 0.5
    z /= theta[:, 1] * math.sqrt(0.5)
    assert abs(z.mean()) < Z_TOL / math.sqrt(400) and abs(z.var() - 1) < Z_TOL * math.sqrt(2 / 400)

    # bit-identical in a second run, and with the chunks written in another order
    run_dataset(cfg, tmp_path / "b.zarr", client=None, device="cpu")
    ds_b = open_dataset(tmp_path / "b.zarr")
    reordered = create_dataset(cfg.on_device("cpu"), tmp_path / "c.zarr")
    for index in (3, 1, 0, 2):
        simulate_and_write_chunk(reordered.path, index, "cpu")
    reordered.finalize()
    ds_c = open_dataset(reordered.path)
    for other in (ds_b, ds_c):
        for name in ("x0", "xT", "snapshots", "theta"):
            np.testing.assert_array_equal(ds.load(name), other.load(name))
        np.testing.assert_array_equal(ds.group["theta_checksum"][:],
                                      other.group["theta_checksum"][:])
    assert ds_c.dataset_id == ds.dataset_id == cfg.on_device("cpu").dataset_id()


def test_grown_store_keeps_its_theta(tmp_path):
    from prnf_core.dataset import grow_dataset

    small = _cfg(n_particles=200)
    run_dataset(small, tmp_path / "g.zarr", client=None, device="cpu")
    before = open_dataset(tmp_path / "g.zarr").load("theta")
    grow_dataset(_cfg().on_device("cpu"), tmp_path / "g.zarr")
    run_dataset(_cfg(), tmp_path / "g.zarr", client=None, device="cpu")
    grown = open_dataset(tmp_path / "g.zarr")
    assert grown.group["theta"].shape == (400, 2)
    np.testing.assert_array_equal(grown.load("theta")[:200], before)
    run_dataset(_cfg(), tmp_path / "fresh.zarr", client=None, device="cpu")
    np.testing.assert_array_equal(grown.load("theta"),
                                  open_dataset(tmp_path / "fresh.zarr").load("theta"))


def test_store_without_param_box_has_no_theta_and_the_same_id(tmp_path):
    cfg = _cfg(param_box=None, n_particles=200)
    run_dataset(cfg, tmp_path / "p.zarr", client=None, device="cpu")
    ds = open_dataset(tmp_path / "p.zarr")
    assert "theta" not in ds.group and "theta_checksum" not in ds.group
    assert ds.param_names == []
    assert "param_box" not in ds.meta["resolved_config"]
    x0_rows, cond, y, names = ds.conditioned_tuples()
    assert names == ["t"] and cond.shape == (600, 1) and x0_rows.shape == y.shape == (600, 1)
    with pytest.raises(ValueError, match=r"theta: the dataset .* has no param_box"):
        ds.write_chunk(0, ds.load("x0")[:100], ds.load("xT")[:100], None, theta=np.ones((100, 1)))


def test_write_chunk_needs_theta_in_a_boxed_store(tmp_path):
    ds = create_dataset(_cfg().on_device("cpu"), tmp_path / "w.zarr")
    x0, xT, snaps, theta = simulate_chunk_arrays(ds.config, 0, device="cpu")
    with pytest.raises(ValueError, match="theta: chunk 0 of a dataset with a param_box"):
        ds.write_chunk(0, x0, xT, snaps)
    with pytest.raises(ValueError, match=r"theta: chunk 0 needs shape \(100, 2\)"):
        ds.write_chunk(0, x0, xT, snaps, theta=theta[:, :1])
    assert ds.missing_chunks() == [0, 1, 2, 3]
    ds.write_chunk(0, x0, xT, snaps, theta=theta)
    assert ds.missing_chunks() == [1, 2, 3]


def test_conditioned_tuples_shapes_and_particle_major_order(tmp_path):
    cfg = _cfg()
    run_dataset(cfg, tmp_path / "t.zarr", client=None, device="cpu")
    ds = open_dataset(tmp_path / "t.zarr")
    x0_rows, cond, y, names = ds.conditioned_tuples()
    n, k, d, p = 400, 3, 1, 2
    assert names == ["t", "mu", "sigma"]
    assert x0_rows.shape == (n * k, d) and y.shape == (n * k, d) and cond.shape == (n * k, 1 + p)
    assert cond.dtype == np.float64
    x0, snaps, theta = ds.load("x0"), ds.load("snapshots"), ds.load("theta")
    for i in (0, 1, 137, n - 1):
        for j, t in enumerate(cfg.save_times):
            row = i * k + j
            np.testing.assert_array_equal(x0_rows[row], x0[i])
            np.testing.assert_array_equal(y[row], snaps[j, i])
            assert cond[row, 0] == t
            np.testing.assert_array_equal(cond[row, 1:], theta[i])
    np.testing.assert_array_equal(cond[:k, 0], cfg.save_times)
    # t = 0 rows are x0 itself
    np.testing.assert_array_equal(y[cond[:, 0] == 0.0], x0)
