"""One surrogate over (t, θ) from the command line: `prnf simulate` a store over snapshot times
and a parameter box, `prnf train` (the model is conditioned on the store's box by itself), then
`prnf sample --time T --param NAME=VALUE`, refused outside the box unless --allow-outside."""

from __future__ import annotations

import json

import numpy as np
import prefect.main  # noqa: F401  binds Prefect's log handler to stderr now, not to CliRunner's
import pytest
from typer.testing import CliRunner

from flows.cli import app
from prnf_core.models import load_metadata

runner = CliRunner()


@pytest.fixture(scope="module")
def conditioned_model(prefect_harness, tmp_path_factory):
    folder = tmp_path_factory.mktemp("conditioned")
    store, model_dir = folder / "ou1d.zarr", folder / "model"
    made = runner.invoke(app, [
        "simulate", "--problem", "ou1d_rate", "-n", "1000", "--chunk-size", "500",
        "--save-times", "0.25,0.5,0.75,1.0", "--set", "dataset.param_box={mu: [0.5, 2.0]}",
        "--workers", "0", "--out", str(store)])
    assert made.exit_code == 0, made.output
    trained = runner.invoke(app, ["train", "--data", str(store), "--out", str(model_dir),
                                  "--epochs", "2", "--width", "16"])
    assert trained.exit_code == 0, trained.output
    return model_dir


def _sample(model_dir, out, *extra):
    return runner.invoke(app, ["sample", "--model", str(model_dir), "--initial",
                               json.dumps({"kind": "gaussian", "mean": [0.5], "std": [0.3]}),
                               "-n", "300", "--out", str(out), *extra])


def test_train_conditions_the_model_on_the_stores_box(conditioned_model):
    meta = load_metadata(conditioned_model)
    assert meta["conditioning"]["names"] == ["t", "mu"]
    assert meta["conditioning"]["time"] == [0.25, 1.0]
    assert meta["conditioning"]["params"] == {"mu": [0.5, 2.0]}


def test_sample_at_a_time_and_parameter_inside_the_box(conditioned_model, tmp_path):
    result = _sample(conditioned_model, tmp_path / "a.npy", "--time", "0.6", "--param", "mu=1.3")
    assert result.exit_code == 0, result.output
    samples = np.load(tmp_path / "a.npy")
    assert samples.shape == (300, 1) and np.isfinite(samples).all()


def test_outside_the_box_is_refused_naming_it_unless_allowed(conditioned_model, tmp_path):
    refused = _sample(conditioned_model, tmp_path / "b.npy", "--time", "1.5", "--param", "mu=1.0")
    assert refused.exit_code == 2
    assert "t: 1.5 is outside the trained time range [0.25, 1.0]" in refused.output
    assert not (tmp_path / "b.npy").exists()
    missing = _sample(conditioned_model, tmp_path / "c.npy", "--time", "0.5")
    assert missing.exit_code == 2 and "mu" in missing.output
    with pytest.warns(UserWarning, match="outside the trained time range"):
        allowed = _sample(conditioned_model, tmp_path / "d.npy", "--time", "1.5", "--param",
                          "mu=1.0", "--allow-outside")
    assert allowed.exit_code == 0, allowed.output
