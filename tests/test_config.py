"""The one way parameters are filled (``flows.config.build_params``): a YAML file, then dotted
``--set`` overrides, then explicit options, validated by the pydantic model; the settings
rebuild of a saved model; the abc3d grid keys of any grid size."""

from __future__ import annotations

import doctest
import os

import pytest
from pydantic import ValidationError

import flows.config
import flows.reproduce.abc3d
from flows.config import (
    CheckParams,
    PipelineParams,
    build_params,
    parse_assignments,
    pipeline_for_model,
    set_dotted,
)
from flows.reproduce.abc3d import grid_indices, grid_key
from flows.train import TrainParams
from prnf_core.errors import ConfigError
from prnf_core.train import TRAIN_PRESETS


@pytest.mark.parametrize("module", [flows.config, flows.reproduce.abc3d])
def test_doctests(module):
    assert doctest.testmod(module).failed == 0


def test_yaml_then_set_then_options_then_defaults(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("data: d.zarr\ntraining: {lr: 0.1, epochs: 2, batch_size: 64}\n"
                      "model: {hidden_width: 8}\n")
    params = build_params(
        TrainParams, config=config, sets=["training.epochs=3", "training.lam=0.5"],
        options={"training.lam": 2.0, "training.seed": None, "model.hidden_layers": 1},
        defaults={"training.batch_size": 999, "training.seed": 7}, paths=("data",))
    assert params.training.lr == 0.1  # the file
    assert params.training.epochs == 3  # --set over the file
    assert params.training.lam == 2.0  # an option over --set
    assert params.training.batch_size == 64 and params.training.seed == 7  # defaults: absent only
    assert (params.model.hidden_width, params.model.hidden_layers) == (8, 1)
    assert params.data == os.path.abspath("d.zarr")  # a typed path means the working directory


def test_keep_takes_only_some_sections_of_the_file(tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text("problem: bm1d\nvalidation: {n_samples: 200}\nexecution: {workers: 0}\n")
    params = build_params(CheckParams, config=config, keep=("validation", "execution"))
    assert params.validation.n_samples == 200 and params.execution.workers == 0


def test_sections_are_mappings_even_when_null(tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("data: d.zarr\ntraining: null\n")
    assert build_params(TrainParams, config=config, sections=("training",)).training.epochs == 30
    config.write_text("data: d.zarr\ntraining: 5\n")
    with pytest.raises(ConfigError, match=r"^training: must be a mapping, got 5$"):
        build_params(TrainParams, config=config, sections=("training",))


def test_a_preset_fills_only_absent_fields_and_explicit_epochs_win():
    paper = TRAIN_PRESETS["paper"]
    params = build_params(PipelineParams, sets=["training.preset=paper"],
                          options={"training.epochs": 5, "training.lr": 1e-4})
    assert params.training.epochs == 5 and params.training.iterations is None
    assert params.training.lr == 1e-4
    assert params.training.batch_size == paper["batch_size"]  # not the pipeline's 256


def test_errors_name_the_field_and_the_allowed_values():
    with pytest.raises(ValidationError, match=r"model\.architecture\n.*'prnf' or 'nsf'"):
        build_params(PipelineParams, sets=["model.architecture=maf"])
    with pytest.raises(ValidationError, match=r"training\.epoch\n.*Extra inputs"):
        build_params(PipelineParams, sets=["training.epoch=5"])


@pytest.mark.parametrize(("items", "message"), [
    (["training.epochs"], r"^--set: expected KEY=VALUE, got 'training.epochs'$"),
    (["=5"], r"^--set: expected KEY=VALUE"),
    (["lambdas=[1"], r"^--set: value of 'lambdas' is not valid YAML"),
])
def test_bad_assignments_name_the_option(items, message):
    with pytest.raises(ConfigError, match=message):
        parse_assignments(items)


def test_set_dotted_refuses_a_value_as_a_section():
    raw = {"n_train": 5, "model": None}
    with pytest.raises(ConfigError, match=r"^n_train: must be a mapping, got 5$"):
        set_dotted(raw, "n_train.x", 1)
    with pytest.raises(ConfigError, match=r"^overrides: 'n_train' is not a section, cannot set "
                                          r"'n_train.x'$"):
        set_dotted(raw, "n_train.x", 1, create=False)
    with pytest.raises(ConfigError, match="'model' is not a section"):
        set_dotted(raw, "model.hidden_width", 1, create=False)
    set_dotted(raw, "model.hidden_width", 1)
    assert raw == {"n_train": 5, "model": {"hidden_width": 1}}


def test_set_dotted_leaves_yaml_aliases_apart():
    shared = {"workers": 1}
    raw = {"a": shared, "b": shared}
    set_dotted(raw, "a.workers", 2)
    assert raw["b"]["workers"] == 1 and shared == {"workers": 1}


def test_pipeline_for_model_keeps_the_trained_precision_and_horizon():
    meta = {"problem": {"name": "bm1d", "params": {"mu": 1.0, "sigma": 1.0}, "t_end": 0.5,
                        "dt": 0.01},
            "dataset_config": {"problem_params": {"mu": 1.0, "sigma": 1.0}, "t_end": 0.25,
                               "dt": 0.005, "dtype": "float32"},
            "model": {"dim": 1, "hidden_width": 8}}
    pipeline = pipeline_for_model("m", meta, CheckParams())
    assert (pipeline.t_end, pipeline.dt, pipeline.dtype) == (0.25, 0.005, "float32")
    law = next(iter(pipeline.validation.resolved_laws("bm1d", {}).values()))
    assert pipeline.test_dataset(law).dtype == "float32"
    older = {**meta, "dataset_config": None}  # no dataset record: the problem's own horizon
    assert pipeline_for_model("m", older, CheckParams()).t_end == 0.5
    with pytest.raises(ConfigError, match=r"^model: 'm' does not fit its recorded problem: "
                                          r"model\.dim: 2"):
        pipeline_for_model("m", {**meta, "model": {"dim": 2}}, CheckParams())


@pytest.mark.parametrize("n", [22, 100, 123])
def test_grid_keys_round_trip_for_any_grid_size(n):
    keys = {grid_key(i, j): (i, j) for i in range(n) for j in range(n)}
    assert len(keys) == n * n
    assert all(grid_indices(key) == ij for key, ij in keys.items())
    assert grid_key(3, 105) == "i03_j105" and grid_indices("i104_j07") == (104, 7)
    with pytest.raises(ValueError, match="not a grid key"):
        grid_indices("T1")


def test_validation_kl_samples_sizes_every_exact_kl(tmp_path, monkeypatch):
    """``validation.kl_samples`` (default 2000, at least 100) is both sizes of each law's exact
    KL in a validation."""
    from tiny_models import save_tiny_bm1d_model

    from flows.config import ValidationConfig
    from prnf_core import DatasetConfig, run_dataset
    from prnf_core.initial import parse_initial
    from prnf_core.models import load_model
    from tasks import validate

    assert ValidationConfig().kl_samples == 2000
    with pytest.raises(ValidationError, match="kl_samples"):
        ValidationConfig(kl_samples=50)
    law = {"kind": "gaussian", "mean": [0.0], "std": [0.5]}
    store = run_dataset(DatasetConfig(problem="bm1d", initial=law, n_particles=400,
                                      chunk_size=400), tmp_path / "mc.zarr").path
    model = load_model(save_tiny_bm1d_model(tmp_path / "model"), device="cpu")
    sizes, exact_kl = [], validate.exact_kl

    def recording(*args, **kwargs):
        sizes.append((kwargs["n_y"], kwargs["n_x0"]))
        return exact_kl(*args, **kwargs)

    monkeypatch.setattr(validate, "exact_kl", recording)
    report, _, _ = validate.evaluate_model(model, "bm1d", {}, {"g": str(store)},
                                           {"g": parse_initial(law)}, 200, 0, 0.5,
                                           detailed=False, kl_samples=150)
    assert sizes == [(150, 150)] and set(report.meta["kl"]) == {"g"}
