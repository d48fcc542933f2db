"""Atoms of X_T on a problem's clamp boundaries (prnf_core/models/atoms.py): declared from the
problem, dequantized in training, reproduced exactly by the sampler."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from prnf_core.dataset import DatasetConfig, open_dataset
from prnf_core.errors import ConfigError
from prnf_core.models import ModelConfig, atoms, build_model, load_model
from prnf_core.problems import get_problem
from prnf_core.runner import run_dataset
from prnf_core.train import TrainConfig, fit


def test_the_problem_declares_the_bounds_and_configs_without_them_serialize_as_before():
    runaway = ModelConfig().for_problem(get_problem("runaway2d"))
    p_min = get_problem("runaway2d").params["p_min"]
    assert runaway.clamp_bounds == [(p_min, None), None]
    assert runaway.model_dump(mode="json")["clamp_bounds"] == [[p_min, None], None]
    for name in ("bm1d", "ou", "abc3d"):  # no clamp boundary: nothing changes
        config = ModelConfig().for_problem(get_problem(name))
        assert config.clamp_bounds is None
        assert "clamp_bounds" not in config.model_dump(mode="json")
    assert "clamp_bounds" not in ModelConfig().model_dump(mode="json")


def test_bounds_of_the_wrong_length_are_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"^model\.clamp_bounds: needs 2 entries"):
        build_model(ModelConfig(dim=2, clamp_bounds=[(0.0, None)]))


def test_dequantize_spreads_only_the_rows_on_a_bound_by_the_width():
    """Rows on the low (high) bound move below (above) it by width·|ε|: mean width·√(2/π),
    within 4 standard errors (SE = width·√(1 - 2/π)/√n); rows inside are untouched."""
    n, width = 20_000, 0.3
    y = torch.zeros(n, 2, dtype=torch.float64)
    y[: n // 2, 0] = 1.0  # on the high bound
    y[n // 2:, 0] = 0.5   # inside
    out = atoms.dequantize(y, [(0.0, 1.0), None], torch.tensor([width, 1.0]),
                           torch.Generator().manual_seed(0))
    moved = out[: n // 2, 0] - 1.0
    assert bool((moved >= 0).all())
    se = width * math.sqrt(1 - 2 / math.pi) / math.sqrt(n // 2)
    assert abs(float(moved.mean()) - width * math.sqrt(2 / math.pi)) < 4 * se
    assert bool((out[n // 2:, 0] == 0.5).all()) and bool((out[:, 1] == 0).all())


def censored(n: int, seed: int = 0):
    """y = max(x0 + N(0, 1), 0), x0 ~ U[-2, 2]: an atom of probability Φ(-x0) at 0."""
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-2, 2, (n, 1))
    return x0, np.maximum(x0 + rng.standard_normal((n, 1)), 0.0)


def atom_errors(clamp_bounds) -> list[float]:
    """Trained on the censored law (an NSF, 30 epochs): sampled probability of the bound minus
    Φ(-x0) at x0 = -1.5, -1, 0, 1 (4000 samples each, binomial SE ≤ 0.008)."""
    x0, y = censored(20_000)
    model = build_model(ModelConfig(architecture="nsf", dim=1, hidden_width=32,
                                    clamp_bounds=clamp_bounds), seed=0)
    result = fit(model, (x0, y), TrainConfig(epochs=30, batch_size=256, lr=3e-3,
                                             progress=False, seed=0))
    assert math.isfinite(result.best_val_nll)
    errors = []
    for start in (-1.5, -1.0, 0.0, 1.0):
        samples = model.sample(np.full((4000, 1), start),
                               generator=torch.Generator().manual_seed(1)).numpy()
        errors.append(float(np.mean(samples <= 0.0)) - 0.5 * math.erfc(start / math.sqrt(2)))
        if clamp_bounds is not None:  # in the state space, with an exact atom
            assert samples.min() == 0.0
    return errors


def test_a_trained_model_reproduces_the_atom_a_plain_one_misses():
    """With the atom declared the bound's probability follows Φ(-x0) within 0.05 (the accuracy
    asked of this small model) at every start; trained on the raw rows (a spike of unbounded
    likelihood) the same model misses it by more than 0.2 where the atom is large."""
    with_atoms = atom_errors([(0.0, None)])
    assert max(abs(e) for e in with_atoms) < 0.05, with_atoms
    plain = atom_errors(None)
    assert min(plain[:2]) < -0.2, plain


def test_fit_on_a_store_takes_the_problems_bounds_and_they_survive_save_load(tmp_path):
    store = tmp_path / "runaway.zarr"
    run_dataset(DatasetConfig(problem="runaway2d", n_particles=400, chunk_size=200, seed=0,
                              problem_params={"t_end": 2.0}), store)
    model = build_model(ModelConfig(dim=2, hidden_width=8), seed=0)  # built without the problem
    assert model.atom_bounds is None
    fit(model, open_dataset(store), TrainConfig(epochs=1, batch_size=100, lam=10.0,
                                                progress=False))
    p_min = get_problem("runaway2d").params["p_min"]
    assert model.atom_bounds == [(p_min, None), None]
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m", device="cpu")
    assert loaded.atom_bounds == [(p_min, None), None]
    x0 = np.tile([[0.6, 0.0]], (500, 1))
    assert float(loaded.sample(x0, generator=torch.Generator().manual_seed(0))[:, 0].min()) \
        >= p_min


def test_a_model_saved_before_the_field_loads_without_atoms(tmp_path):
    model = build_model(ModelConfig(dim=1, hidden_width=8), seed=0)
    model.fit_normalization(np.zeros((8, 1)), np.arange(8.0)[:, None])
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert "clamp_bounds" not in meta["model"]  # what older versions wrote
    assert load_model(tmp_path / "m", device="cpu").atom_bounds is None
