"""Initial distribution specs: serialization, sampling, densities and validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special, stats

from prnf_core import ConfigError
from prnf_core.initial import (
    INITIAL_KINDS,
    Gaussian,
    GaussianMixture,
    Maxwellian,
    SamplesFile,
    TruncatedGaussian,
    Uniform,
    initial_to_json,
    initial_to_yaml,
    parse_initial,
)

K_SE = 5.0  # standard errors allowed in sample-vs-density comparisons
TWO_PI = 2 * math.pi

SPECS = {
    "uniform1": {"kind": "uniform", "low": [-1.0], "high": [2.0]},
    "uniform2": {"kind": "uniform", "low": [0.0, -1.0], "high": [1.0, 3.0]},
    "gaussian1": {"kind": "gaussian", "mean": [0.5], "std": [1.3]},
    "gaussian_std2": {"kind": "gaussian", "mean": [0.5, -1.0], "std": [1.0, 0.3]},
    "gaussian_cov2": {"kind": "gaussian", "mean": [1.0, 2.0], "cov": [[1.0, 0.6], [0.6, 2.0]]},
    "truncated1": {"kind": "truncated_gaussian", "mu": [1.0], "s": [0.8], "low": [0.0],
                   "high": [2.5]},
    "truncated2": {"kind": "truncated_gaussian", "mu": [1.5 * math.pi, math.pi],
                   "s": [math.pi / 3, math.pi / 5], "low": [0.0, 0.0], "high": [TWO_PI, TWO_PI]},
    "truncated_paper3": {"kind": "truncated_gaussian", "mu": [1.5 * math.pi, math.pi, math.pi],
                         "s": [math.pi / 3, math.pi / 5, math.pi / 4], "low": [0.0] * 3,
                         "high": [TWO_PI] * 3},
    "mixture1": {"kind": "gaussian_mixture", "weights": [1.0, 3.0], "means": [[-1.0], [2.0]],
                 "stds": [[0.5], [0.8]]},
    "mixture2": {"kind": "gaussian_mixture", "weights": [0.3, 0.7],
                 "means": [[-1.0, 0.0], [2.0, 1.0]], "stds": [[0.5, 1.0], [1.0, 0.2]]},
    "point": {"kind": "point_mass", "point": [1.0, 2.0, 3.0]},
    "maxwellian": {"kind": "maxwellian", "temperature": 5.0},
    "maxwellian_cold": {"kind": "maxwellian", "temperature": 1.0, "T_tilde": 3.0, "p_min": 0.8},
}
DIMS = {"uniform1": 1, "uniform2": 2, "gaussian1": 1, "gaussian_std2": 2, "gaussian_cov2": 2,
        "truncated1": 1, "truncated2": 2, "truncated_paper3": 3, "mixture1": 1, "mixture2": 2,
        "point": 3, "maxwellian": 2, "maxwellian_cold": 2}

# Integration boxes that hold all the mass (the exact support where the density is bounded).
BOXES = {
    "uniform1": [(-1.0, 2.0)],
    "uniform2": [(0.0, 1.0), (-1.0, 3.0)],
    "gaussian1": [(0.5 - 13 * 1.3, 0.5 + 13 * 1.3)],
    "gaussian_std2": [(-12.5, 13.5), (-1 - 13 * 0.3, -1 + 13 * 0.3)],
    "gaussian_cov2": [(-12.0, 14.0), (2 - 13 * math.sqrt(2), 2 + 13 * math.sqrt(2))],
    "truncated1": [(0.0, 2.5)],
    "truncated2": [(0.0, TWO_PI), (0.0, TWO_PI)],
    "mixture1": [(-8.0, 12.5)],
    "mixture2": [(-8.0, 15.0), (-13.0, 14.0)],
    "maxwellian": [(0.5, 14.0), (-1.0, 1.0)],
    "maxwellian_cold": [(0.8, 8.0), (-1.0, 1.0)],
}


def spec_of(name: str):
    return parse_initial(SPECS[name])


# --------------------------------------------------------------------------------------------
# Serialization
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SPECS))
def test_json_and_yaml_round_trip(name, tmp_path):
    spec = spec_of(name)
    assert spec.kind == SPECS[name]["kind"]
    text = initial_to_json(spec)
    assert json.loads(text)["kind"] == spec.kind
    assert parse_initial(text) == spec
    assert parse_initial(initial_to_yaml(spec)) == spec
    assert parse_initial(json.loads(text)) == spec
    assert parse_initial(spec) is spec
    (tmp_path / "spec.json").write_text(text)
    (tmp_path / "spec.yaml").write_text(initial_to_yaml(spec))
    assert parse_initial(tmp_path / "spec.json") == spec
    assert parse_initial(str(tmp_path / "spec.yaml")) == spec


def test_all_kinds_covered():
    kinds = {s["kind"] for s in SPECS.values()} | {"samples_file"}
    assert kinds == set(INITIAL_KINDS)


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("n", [1, 37])
def test_sample_shapes(name, n):
    spec = spec_of(name)
    x = spec.sample(n, np.random.default_rng(0))
    assert spec.dim == DIMS[name]
    assert x.shape == (n, DIMS[name])
    assert np.isfinite(x).all()


@pytest.mark.parametrize("std", [[1.0, 1.0, 263.0, 0.00390625], [1e-4, 1e4], [0.5]])
def test_gaussian_std_logpdf_is_sum_of_normals(std):
    """Independent coordinates with widely spread scales (regression: scipy's
    multivariate_normal declared std=[.., 263, 0.0039] singular and raised)."""
    mean = np.linspace(-1, 1, len(std))
    spec = Gaussian(mean=mean.tolist(), std=std)
    x = spec.sample(25, np.random.default_rng(0))
    want = stats.norm(mean, std).logpdf(x).sum(axis=1)
    np.testing.assert_allclose(spec.logpdf(x), want, rtol=1e-12, atol=1e-9)


def test_gaussian_cov_logpdf_matches_scipy():
    spec = spec_of("gaussian_cov2")
    x = np.random.default_rng(0).normal(size=(30, 2)) * 3
    want = stats.multivariate_normal(spec.mean, spec.cov).logpdf(x)
    np.testing.assert_allclose(spec.logpdf(x), want, rtol=1e-12)


def test_point_mass_samples_the_point_and_has_no_density():
    spec = spec_of("point")
    np.testing.assert_array_equal(spec.sample(4, np.random.default_rng(0)), [[1.0, 2.0, 3.0]] * 4)
    assert not spec.has_density
    with pytest.raises(NotImplementedError, match="kind='point_mass' has no density"):
        spec.logpdf(np.zeros((1, 3)))


@pytest.mark.parametrize("name", ["gaussian_std2", "mixture2", "maxwellian"])
def test_logpdf_rejects_wrong_dimension(name):
    with pytest.raises(ValueError, match=r"x must have shape \(n, 2\)"):
        spec_of(name).logpdf(np.zeros((3, 3)))


# --------------------------------------------------------------------------------------------
# Densities: normalization and agreement of samples with the density
# --------------------------------------------------------------------------------------------


def grid_moments(name: str, points: int = 1601):
    """Mass, mean and covariance of exp(logpdf) by Simpson's rule on the integration box."""
    spec = spec_of(name)
    axes = [np.linspace(lo, hi, points if len(BOXES[name]) == 1 else 601)
            for lo, hi in BOXES[name]]
    mesh = np.meshgrid(*axes, indexing="ij")
    x = np.stack([m.reshape(-1) for m in mesh], axis=1)
    dens = np.exp(spec.logpdf(x)).reshape(mesh[0].shape)

    def integral(values):
        for ax in reversed(axes):
            values = integrate.simpson(values, x=ax, axis=-1)
        return float(values)

    mass = integral(dens)
    mean = np.array([integral(dens * m) for m in mesh])
    cov = np.array([[integral(dens * (mi - mean[i]) * (mj - mean[j]))
                     for j, mj in enumerate(mesh)] for i, mi in enumerate(mesh)])
    return mass, mean, cov


DENSITY_SPECS = list(BOXES)


@pytest.mark.parametrize("name", DENSITY_SPECS)
def test_logpdf_integrates_to_one(name):
    mass, _, _ = grid_moments(name)
    assert mass == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", ["uniform1", "gaussian1", "truncated1", "mixture1"])
def test_logpdf_integrates_to_one_adaptive_1d(name):
    spec = spec_of(name)
    (lo, hi), = BOXES[name]
    mass, _ = integrate.quad(lambda v: math.exp(spec.logpdf([[v]])[0]), lo - 5, hi + 5,
                               points=[lo, hi], limit=200)
    assert mass == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("name", ["uniform2", "truncated2", "maxwellian"])
def test_logpdf_is_minus_inf_outside_support(name):
    spec = spec_of(name)
    (lo0, hi0), (lo1, hi1) = BOXES[name]
    mid0, mid1 = (lo0 + hi0) / 2, (lo1 + hi1) / 2
    outside = np.array([[lo0 - 1e-9, mid1], [mid0, hi1 + 1e-9], [mid0, lo1 - 1e-9]])
    if name != "maxwellian":  # p is unbounded above
        outside = np.vstack([outside, [[hi0 + 1e-9, mid1]]])
    assert np.all(spec.logpdf(outside) == -np.inf)
    assert np.all(np.isfinite(spec.logpdf([[mid0, mid1]])))


@pytest.mark.parametrize("name", DENSITY_SPECS)
def test_sample_moments_match_density(name):
    n = 40_000
    x = spec_of(name).sample(n, np.random.default_rng(12345))
    _, mean, cov = grid_moments(name)
    dev = x - x.mean(axis=0)
    for i in range(x.shape[1]):
        se_mean = x[:, i].std(ddof=1) / math.sqrt(n)
        assert abs(x[:, i].mean() - mean[i]) <= K_SE * se_mean, (i, x[:, i].mean(), mean[i])
        for j in range(i, x.shape[1]):
            prod = dev[:, i] * dev[:, j]
            se = prod.std(ddof=1) / math.sqrt(n)
            assert abs(prod.mean() - cov[i, j]) <= K_SE * se, (i, j, prod.mean(), cov[i, j])


# --------------------------------------------------------------------------------------------
# TruncatedGaussian: the paper's exp(-(x-mu)^2/s^2) form
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mu, s", [(0.3, 0.7), (-2.0, 1.5)])
def test_truncated_untruncated_limit_has_variance_s2_over_2(mu, s):
    spec = TruncatedGaussian(mu=[mu], s=[s], low=[mu - 40 * s], high=[mu + 40 * s])
    var, _ = integrate.quad(lambda v: (v - mu) ** 2 * math.exp(spec.logpdf([[v]])[0]),
                            mu - 40 * s, mu + 40 * s, points=[mu], limit=200)
    assert var == pytest.approx(s**2 / 2, rel=1e-8)
    n = 40_000
    x = spec.sample(n, np.random.default_rng(1))[:, 0]
    sq = (x - mu) ** 2
    assert abs(sq.mean() - s**2 / 2) <= K_SE * sq.std(ddof=1) / math.sqrt(n)


@pytest.mark.parametrize("name", ["truncated1", "truncated2", "truncated_paper3"])
def test_truncated_density_shape_is_paper_form(name):
    """log p(μ) - log p(μ + s e_i) = 1 exactly for exp(-(x-μ)²/s²), whatever the truncation."""
    spec = spec_of(name)
    mu, s = np.asarray(spec.mu), np.asarray(spec.s)
    for i in range(spec.dim):
        shifted = mu.copy()
        shifted[i] += s[i] * (1 if mu[i] + s[i] <= spec.high[i] else -1)
        diff = spec.logpdf(mu[None])[0] - spec.logpdf(shifted[None])[0]
        assert diff == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("name", ["truncated1", "truncated2", "truncated_paper3"])
def test_truncated_samples_inside_bounds(name):
    spec = spec_of(name)
    x = spec.sample(20_000, np.random.default_rng(2))
    assert np.all(x >= np.asarray(spec.low)) and np.all(x <= np.asarray(spec.high))


def test_truncated_one_sided_infinite_bound():
    spec = parse_initial({"kind": "truncated_gaussian", "mu": [0.0], "s": [1.0], "low": [0.0],
                          "high": [math.inf]})
    assert parse_initial(initial_to_json(spec)) == spec
    x = spec.sample(2000, np.random.default_rng(0))
    assert np.all(x >= 0) and np.isfinite(x).all()


# --------------------------------------------------------------------------------------------
# Maxwellian
# --------------------------------------------------------------------------------------------


def truncated_chi3_cdf(p: np.ndarray, scale: float, p_min: float) -> np.ndarray:
    """CDF of |v| for v ~ N(0, scale² I_3), conditioned on |v| ≥ p_min (closed form)."""

    def cdf(r):
        u = np.asarray(r) / scale
        return special.erf(u / math.sqrt(2)) - math.sqrt(2 / math.pi) * u * np.exp(-u * u / 2)

    return (cdf(p) - cdf(p_min)) / (1 - cdf(p_min))


@pytest.mark.parametrize("temperature, p_min", [(1.0, 0.5), (5.0, 0.5), (10.0, 1.5), (2.0, 0.0)])
def test_maxwellian_samples(temperature, p_min):
    spec = Maxwellian(temperature=temperature, p_min=p_min)
    n = 20_000
    x = spec.sample(n, np.random.default_rng(7))
    p, xi = x[:, 0], x[:, 1]
    assert np.all(p >= p_min) and np.all(np.abs(xi) <= 1)
    assert stats.kstest(xi, stats.uniform(-1, 2).cdf).pvalue > 1e-3
    scale = math.sqrt(temperature / (2 * 3.0))
    assert stats.kstest(p, lambda v: truncated_chi3_cdf(v, scale, p_min)).pvalue > 1e-3
    # ξ independent of p: correlation of p and ξ² is zero within k standard errors.
    assert abs(np.corrcoef(p, xi**2)[0, 1]) <= K_SE / math.sqrt(n)


def test_maxwellian_density_factorizes():
    spec = spec_of("maxwellian")
    p = np.linspace(0.5, 4.0, 7)
    a = spec.logpdf(np.column_stack([p, np.full(7, -0.9)]))
    b = spec.logpdf(np.column_stack([p, np.full(7, 0.3)]))
    np.testing.assert_allclose(a, b, rtol=1e-14)


# --------------------------------------------------------------------------------------------
# SamplesFile
# --------------------------------------------------------------------------------------------


@pytest.fixture()
def samples_npy(tmp_path):
    data = np.random.default_rng(0).normal(size=(50, 3))
    path = tmp_path / "x0.npy"
    np.save(path, data)
    return path, data


def test_samples_file_resamples_rows(samples_npy):
    path, data = samples_npy
    spec = parse_initial({"kind": "samples_file", "path": str(path)})
    assert isinstance(spec, SamplesFile)
    assert spec.dim == 3 and not spec.has_density
    assert parse_initial(initial_to_json(spec)) == spec
    n = 5000
    x = spec.sample(n, np.random.default_rng(1))
    assert x.shape == (n, 3)
    index = {tuple(row): i for i, row in enumerate(data)}
    counts = np.bincount([index[tuple(row)] for row in x], minlength=len(data))
    # Every sample is a row of the file, drawn uniformly with replacement.
    assert counts.sum() == n
    assert stats.chisquare(counts).pvalue > 1e-3
    with pytest.raises(NotImplementedError, match="samples_file"):
        spec.logpdf(data[:2])


def test_samples_file_expected_dim(samples_npy):
    path, _ = samples_npy
    assert parse_initial({"kind": "samples_file", "path": str(path), "expected_dim": 3}).dim == 3
    spec = parse_initial({"kind": "samples_file", "path": str(path), "expected_dim": 2})
    with pytest.raises(ConfigError, match=r"^initial\.path: array has d=3, expected_dim=2"):
        spec.sample(3, np.random.default_rng(0))


@pytest.mark.parametrize(
    "content, filename, match",
    [
        (None, "missing.npy", r"^initial\.path: no such file"),
        (np.zeros((4, 2)), "x0.txt", r"^initial\.path: only \.npy files"),
        (np.zeros(4), "flat.npy", r"^initial\.path: need a finite \(n, d\) array"),
        (np.array([[0.0, np.nan]]), "nan.npy", r"^initial\.path: need a finite \(n, d\) array"),
    ],
)
def test_samples_file_errors(tmp_path, content, filename, match):
    path = tmp_path / filename
    if content is not None:
        with open(path, "wb") as fh:
            np.save(fh, content)
    spec = parse_initial({"kind": "samples_file", "path": str(path)})
    with pytest.raises(ConfigError, match=match):
        spec.sample(2, np.random.default_rng(0))


# --------------------------------------------------------------------------------------------
# Malformed specs
# --------------------------------------------------------------------------------------------

NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    "value, match",
    [
        ({"kind": "beta"}, r"^initial\.kind: unknown kind 'beta'"),
        ({"low": [0.0], "high": [1.0]}, r"^initial\.kind: unknown kind None"),
        ([1, 2], r"^initial: expected a mapping"),
        ("{bad: [", r"^initial: not valid JSON/YAML"),
        ("missing_spec.yaml", r"^initial: no such spec file"),
        ({"kind": "gaussian", "mean": [0, 0], "std": [1, 0]}, r"std must be > 0"),
        ({"kind": "gaussian", "mean": [0], "std": [-1]}, r"std must be > 0"),
        ({"kind": "gaussian", "mean": [0, 0], "std": [1]},
         r"fields \['mean', 'std'\] must have the same length"),
        ({"kind": "gaussian", "mean": [0], "std": [1], "cov": [[1]]}, r"exactly one of std or cov"),
        ({"kind": "gaussian", "mean": [0, 0], "cov": [[1, 2], [2, 1]]},
         r"cov must be symmetric positive definite"),
        ({"kind": "gaussian", "mean": [0, 0], "cov": [[1]]}, r"cov must be 2x2"),
        ({"kind": "gaussian", "std": [1]}, r"^initial: mean: Field required"),
        ({"kind": "gaussian", "mean": [NAN], "std": [1]}, r"mean must be finite"),
        ({"kind": "gaussian", "mean": [0], "std": [INF]}, r"std must be finite"),
        ({"kind": "uniform", "low": [0, 0], "high": [1]},
         r"fields \['low', 'high'\] must have the same length"),
        ({"kind": "uniform", "low": [], "high": []}, r"must not be empty"),
        ({"kind": "uniform", "low": [1], "high": [1]}, r"need low < high"),
        ({"kind": "uniform", "low": [-INF], "high": [0]}, r"low must be finite"),
        ({"kind": "uniform", "low": "abc", "high": [1]}, r"^initial: low: "),
        ({"kind": "uniform", "low": [0], "high": [1], "foo": 1}, r"^initial: foo: Extra inputs"),
        ({"kind": "truncated_gaussian", "mu": [0], "s": [0], "low": [0], "high": [1]},
         r"s must be > 0"),
        ({"kind": "truncated_gaussian", "mu": [0, 1], "s": [1], "low": [0], "high": [1]},
         r"fields \['mu', 's', 'low', 'high'\] must have the same length"),
        ({"kind": "truncated_gaussian", "mu": [0], "s": [1], "low": [2], "high": [1]},
         r"need low < high"),
        ({"kind": "truncated_gaussian", "mu": [0], "s": [1], "low": [0], "high": [NAN]},
         r"high must be finite"),
        ({"kind": "gaussian_mixture", "weights": [0.5, -0.5], "means": [[0], [1]],
          "stds": [[1], [1]]}, r"weights must be > 0"),
        ({"kind": "gaussian_mixture", "weights": [1], "means": [[0], [1]], "stds": [[1], [1]]},
         r"fields \['weights', 'means', 'stds'\] must have the same length"),
        ({"kind": "gaussian_mixture", "weights": [1, 1], "means": [[0], [1, 2]],
          "stds": [[1], [1]]}, r"every mean and std vector needs the same length"),
        ({"kind": "gaussian_mixture", "weights": [1], "means": [[0]], "stds": [[0]]},
         r"stds must be > 0"),
        ({"kind": "point_mass", "point": []}, r"^initial: point: "),
        ({"kind": "maxwellian", "temperature": 0}, r"^initial: temperature: .*greater than 0"),
        ({"kind": "maxwellian", "temperature": INF}, r"temperature must be finite"),
        ({"kind": "maxwellian", "temperature": 1, "p_min": -1}, r"^initial: p_min: "),
        ({"kind": "samples_file", "path": "x.npy", "expected_dim": 0}, r"^initial: expected_dim"),
    ],
)
def test_malformed_specs(value, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "missing_spec.yaml" is looked up relative to here
    with pytest.raises(ConfigError, match=match) as info:
        parse_initial(value)
    if isinstance(value, dict) and value.get("kind") not in INITIAL_KINDS:
        for kind in INITIAL_KINDS:
            assert repr(kind) in str(info.value)


def test_spec_classes_validate_directly():
    with pytest.raises(ValueError, match="std must be > 0"):
        Gaussian(mean=[0.0], std=[0.0])
    with pytest.raises(ValueError, match="need low < high"):
        Uniform(low=[1.0], high=[0.0])


# --------------------------------------------------------------------------------------------
# Property tests
# --------------------------------------------------------------------------------------------

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False, allow_infinity=False)


@st.composite
def uniform_specs(draw):
    d = draw(st.integers(1, 4))
    low = draw(st.lists(finite, min_size=d, max_size=d))
    width = draw(st.lists(positive, min_size=d, max_size=d))
    return Uniform(low=low, high=[lo + w for lo, w in zip(low, width, strict=True)])


@st.composite
def gaussian_specs(draw):
    d = draw(st.integers(1, 4))
    mean = draw(st.lists(finite, min_size=d, max_size=d))
    if draw(st.booleans()):
        return Gaussian(mean=mean, std=draw(st.lists(positive, min_size=d, max_size=d)))
    diag = draw(st.lists(st.floats(0.1, 10.0), min_size=d, max_size=d))
    off = draw(st.lists(st.floats(-1.0, 1.0), min_size=d * d, max_size=d * d))
    chol = np.tril(np.reshape(off, (d, d)), -1) + np.diag(diag)
    cov = chol @ chol.T
    cov = 0.5 * (cov + cov.T)
    return Gaussian(mean=mean, cov=cov.tolist())


@st.composite
def mixture_specs(draw):
    k, d = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    vec = lambda s: st.lists(s, min_size=d, max_size=d)  # noqa: E731
    return GaussianMixture(
        weights=draw(st.lists(positive, min_size=k, max_size=k)),
        means=draw(st.lists(vec(finite), min_size=k, max_size=k)),
        stds=draw(st.lists(vec(positive), min_size=k, max_size=k)),
    )


PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None)


@PROPERTY_SETTINGS
@given(spec=st.one_of(uniform_specs(), gaussian_specs(), mixture_specs()),
       n=st.integers(0, 40), seed=st.integers(0, 2**32 - 1))
def test_property_round_trip_and_sample(spec, n, seed):
    assert parse_initial(initial_to_json(spec)) == spec
    assert parse_initial(initial_to_yaml(spec)) == spec
    x = spec.sample(n, np.random.default_rng(seed))
    assert x.shape == (n, spec.dim)
    assert np.isfinite(x).all()
    if n:
        assert np.all(spec.logpdf(x) > -np.inf)  # samples lie in the support
