"""Property-based tests (hypothesis): initial-distribution specs, the store, the model's shapes.

Examples are few and small (100 specs, 40 model inputs, 10 tiny stores; networks of width 8)
so the module stays well under a minute on two cores.
"""

from __future__ import annotations

import math
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prnf_core.dataset import DatasetConfig, open_dataset, simulate_chunk_arrays
from prnf_core.errors import ConfigError
from prnf_core.initial import initial_to_json, parse_initial
from prnf_core.models import ModelConfig, build_model
from prnf_core.runner import run_dataset

# No example database: a failure prints its reproducing example, and the tree stays clean.
SPECS = settings(max_examples=100, deadline=None, database=None)
MODELS = settings(max_examples=40, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])
STORES = settings(max_examples=10, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow])

dims = st.integers(1, 4)
coord = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
width = st.floats(0.1, 5, allow_nan=False, allow_infinity=False)


@st.composite
def uniform_specs(draw):
    d = draw(dims)
    low = draw(st.lists(coord, min_size=d, max_size=d))
    high = [lo + w for lo, w in zip(low, draw(st.lists(width, min_size=d, max_size=d)),
                                    strict=True)]
    return {"kind": "uniform", "low": low, "high": high}


@st.composite
def gaussian_specs(draw):
    d = draw(dims)
    mean = draw(st.lists(coord, min_size=d, max_size=d))
    if draw(st.booleans()):
        return {"kind": "gaussian", "mean": mean,
                "std": draw(st.lists(width, min_size=d, max_size=d))}
    a = np.asarray(draw(st.lists(st.floats(-2, 2), min_size=d * d, max_size=d * d))).reshape(d, d)
    cov = a @ a.T + 0.5 * np.eye(d)
    return {"kind": "gaussian", "mean": mean, "cov": ((cov + cov.T) / 2).tolist()}


@st.composite
def truncated_specs(draw):
    d = draw(dims)
    mu = draw(st.lists(st.floats(-5, 5), min_size=d, max_size=d))
    s = draw(st.lists(width, min_size=d, max_size=d))
    low, high = [], []
    for m in mu:  # bounds within a few widths of the centre, or one-sided (infinite)
        lo = draw(st.one_of(st.just(-math.inf), st.floats(m - 3, m + 1)))
        hi = draw(st.one_of(st.just(math.inf), st.floats(0.1, 4).map(
            lambda w, lo=lo, m=m: (m if math.isinf(lo) else lo) + w)))
        low.append(lo)
        high.append(hi)
    return {"kind": "truncated_gaussian", "mu": mu, "s": s, "low": low, "high": high}


@st.composite
def mixture_specs(draw):
    d, k = draw(dims), draw(st.integers(1, 3))
    return {"kind": "gaussian_mixture",
            "weights": draw(st.lists(st.floats(0.1, 5), min_size=k, max_size=k)),
            "means": [draw(st.lists(coord, min_size=d, max_size=d)) for _ in range(k)],
            "stds": [draw(st.lists(width, min_size=d, max_size=d)) for _ in range(k)]}


@st.composite
def maxwellian_specs(draw):
    temperature, t_tilde = draw(st.floats(0.5, 50)), draw(st.floats(1, 5))
    scale = math.sqrt(temperature / (2 * t_tilde))
    # p_min up to twice the scale: the floor rejects at most ~75% of draws.
    return {"kind": "maxwellian", "temperature": temperature, "T_tilde": t_tilde,
            "p_min": draw(st.floats(0, 2)) * scale}


point_specs = dims.flatmap(lambda d: st.lists(coord, min_size=d, max_size=d)).map(
    lambda p: {"kind": "point_mass", "point": p})
specs = st.one_of(uniform_specs(), gaussian_specs(), truncated_specs(), mixture_specs(),
                  maxwellian_specs(), point_specs)


def _bounds(spec) -> tuple[np.ndarray, np.ndarray]:
    d = spec.dim
    if spec.kind in ("uniform", "truncated_gaussian"):
        return np.asarray(spec.low), np.asarray(spec.high)
    if spec.kind == "maxwellian":
        return np.array([spec.p_min, -1.0]), np.array([np.inf, 1.0])
    if spec.kind == "point_mass":
        return np.asarray(spec.point), np.asarray(spec.point)
    return np.full(d, -np.inf), np.full(d, np.inf)


@SPECS
@given(raw=specs, n=st.integers(1, 50), seed=st.integers(0, 2**32 - 1))
def test_spec_samples_have_shape_n_d_finite_within_bounds(raw, n, seed):
    spec = parse_initial(raw)
    x = spec.sample(n, np.random.default_rng(seed))
    assert x.shape == (n, spec.dim)
    assert np.isfinite(x).all()
    low, high = _bounds(spec)
    assert (x >= low).all() and (x <= high).all()
    if spec.has_density:
        assert np.isfinite(spec.logpdf(x)).all()


@SPECS
@given(raw=specs)
def test_spec_round_trips_through_dict_and_json(raw):
    spec = parse_initial(raw)
    assert parse_initial(spec.model_dump()) == spec
    assert parse_initial(initial_to_json(spec)) == spec
    assert parse_initial(spec.model_dump(mode="json")) == spec


@STORES
@given(n=st.integers(1, 40), chunk=st.integers(1, 25), seed=st.integers(0, 1000),
       snapshots=st.booleans())
def test_store_round_trip(n, chunk, seed, snapshots):
    config = DatasetConfig(problem="bm1d", n_particles=n, chunk_size=chunk, t_end=0.1, dt=0.05,
                           seed=seed, save_times=[0.05] if snapshots else None)
    with tempfile.TemporaryDirectory() as tmp:
        summary = run_dataset(config, f"{tmp}/bm.zarr")
        assert summary.complete and summary.chunks_simulated == config.n_chunks
        dataset = open_dataset(f"{tmp}/bm.zarr")
        assert dataset.is_complete and dataset.missing_chunks() == []
        assert dataset.dataset_id == config.dataset_id()
        x0, xT = dataset.load("x0"), dataset.load("xT")
        assert x0.shape == xT.shape == (n, 1)
        if snapshots:
            assert dataset.load("snapshots").shape == (1, n, 1)
        for index in range(config.n_chunks):  # what each chunk's writer got
            start, stop = config.chunk_bounds(index)
            want_x0, want_xT, want_snaps, _ = simulate_chunk_arrays(config, index)
            np.testing.assert_array_equal(x0[start:stop], want_x0)
            np.testing.assert_array_equal(xT[start:stop], want_xT)
            if snapshots:
                np.testing.assert_array_equal(dataset.load("snapshots")[:, start:stop],
                                              want_snaps)


_MODELS: dict[tuple[str, int], object] = {}


def _model(architecture: str, d: int):
    """A small fitted model per (architecture, d), built once: hypothesis varies the inputs."""
    if (architecture, d) not in _MODELS:
        model = build_model(ModelConfig(architecture=architecture, dim=d, hidden_width=8,
                                        transforms=1, bins=4), seed=0)
        rng = np.random.default_rng(d)
        model.fit_normalization(rng.normal(size=(32, d)), rng.normal(size=(32, d)))
        _MODELS[architecture, d] = model.eval()
    return _MODELS[architecture, d]


architectures = st.sampled_from(["prnf", "nsf"])


@MODELS
@given(architecture=architectures, d=dims, n=st.integers(1, 20), seed=st.integers(0, 1000))
def test_model_log_prob_and_sample_shapes(architecture, d, n, seed):
    model = _model(architecture, d)
    rng = np.random.default_rng(seed)
    x0, y = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    log_prob = model.log_prob(y, x0)
    assert log_prob.shape == (n,) and torch.isfinite(log_prob).all()
    xT = model.sample(x0, generator=torch.Generator().manual_seed(seed))
    assert xT.shape == (n, d) and torch.isfinite(xT).all()


@MODELS
@given(architecture=architectures, d=dims, n=st.integers(1, 20))
def test_model_one_dimensional_inputs_reshape_as_documented(architecture, d, n):
    """A 1-D array is n scalar states when d = 1, else one state of length d."""
    model = _model(architecture, d)
    rows = n if d == 1 else 1
    x0 = np.linspace(-1, 1, rows * d)
    assert model.sample(x0).shape == (rows, d)
    assert model.log_prob(np.zeros(rows * d), x0).shape == (rows,)


@MODELS
@given(architecture=architectures, d=dims, n=st.integers(1, 20), extra=st.integers(1, 3))
def test_model_refuses_a_wrong_dimension_naming_the_argument(architecture, d, n, extra):
    model = _model(architecture, d)
    good, bad = np.zeros((n, d)), np.zeros((n, d + extra))
    with pytest.raises(ConfigError, match=rf"x0: must have shape \(n, {d}\)"):
        model.sample(bad)
    with pytest.raises(ConfigError, match=rf"y: must have shape \(n, {d}\)"):
        model.log_prob(bad, good)
    with pytest.raises(ConfigError, match="cond: this model takes no condition features"):
        model.sample(good, cond=np.zeros((n, 1)))
