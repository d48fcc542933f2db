"""Explicit options win over presets, and the pipeline's training defaults are the same from
the CLI, a YAML file and the Prefect form (``PipelineParams.model_validate`` of a mapping).

The CLI tests stop the command at its flow and look at the parameters it would have run with:
what they check is how options are resolved, not training.
"""

from __future__ import annotations

from typing import Any

import prefect.main  # noqa: F401  binds Prefect's log handler to stderr now, not to CliRunner's
import pytest
import typer
from typer.testing import CliRunner

from flows.cli import app
from flows.config import PIPELINE_TRAINING_DEFAULTS, PipelineParams
from flows.reproduce.settings import resolve_settings
from prnf_core.models import ModelConfig
from prnf_core.train import TrainConfig

runner = CliRunner()


@pytest.fixture
def started(monkeypatch) -> dict[str, Any]:
    """The validated parameters `prnf train` / `prnf pipeline` start their flow with."""
    seen: dict[str, Any] = {}

    def stop(params):
        seen["params"] = params
        raise typer.Exit(0)

    monkeypatch.setattr("flows.train.train_flow", stop)
    monkeypatch.setattr("flows.pipeline.pipeline_flow", stop)
    return seen


def test_cli_preset_paper_keeps_an_explicit_width_and_epochs(started, tmp_path):
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "d.zarr"), "--preset",
                                 "paper", "--width", "64", "--epochs", "5"])
    assert result.exit_code == 0, result.output
    params = started["params"]
    assert (params.model.hidden_width, params.model.hidden_layers,
            params.model.activation) == (64, 2, "tanh")
    training = params.training
    assert (training.epochs, training.iterations) == (5, None), "5 epochs, not 30,000 steps"
    assert (training.batch_size, training.lr_schedule, training.lr_milestones) == (
        5000, "step", [3000]), "the fields not given come from the preset"


def test_cli_and_yaml_presets_resolve_alike(started, tmp_path):
    (tmp_path / "train.yaml").write_text(
        "model: {preset: paper, hidden_width: 64}\ntraining: {preset: paper, epochs: 5}\n")
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "d.zarr"), "--config",
                                 str(tmp_path / "train.yaml")])
    assert result.exit_code == 0, result.output
    model, training = started["params"].model, started["params"].training
    assert (model.hidden_width, model.hidden_layers, model.activation) == (64, 2, "tanh")
    assert (training.epochs, training.iterations, training.batch_size) == (5, None, 5000)
    assert model == ModelConfig(preset="paper", hidden_width=64)
    assert training == TrainConfig(preset="paper", epochs=5)


def test_presets_fill_only_the_fields_not_given():
    assert ModelConfig(preset="paper").hidden_width == 512
    model = ModelConfig(preset="paper", activation="silu")
    assert (model.hidden_width, model.activation) == (512, "silu")
    paper = TrainConfig(preset="paper")
    assert (paper.iterations, paper.batch_size, paper.lam) == (30_000, 5000, 100.0)
    explicit = TrainConfig(preset="paper", epochs=5, lam=0.0, batch_size=64)
    assert (explicit.epochs, explicit.iterations, explicit.lam, explicit.batch_size) == (
        5, None, 0.0, 64)
    assert explicit.lr_schedule == "step"
    # a saved configuration re-validates to itself (every field is then explicit)
    for config in (paper, explicit):
        assert TrainConfig.model_validate(config.model_dump(mode="json")) == config
    with pytest.raises(ValueError, match="epochs: give epochs or iterations"):
        TrainConfig(epochs=None)


def test_pipeline_training_defaults_are_the_same_from_cli_yaml_and_form(started, tmp_path):
    expected = TrainConfig(**{**PIPELINE_TRAINING_DEFAULTS, "epochs": 5})
    assert (expected.batch_size, expected.lr, expected.progress) == (256, 3e-3, False)

    assert PipelineParams(training={"epochs": 5}).training == expected
    assert PipelineParams.model_validate({"training": {"epochs": 5}}).training == expected

    result = runner.invoke(app, ["pipeline", "--epochs", "5"])
    assert result.exit_code == 0, result.output
    assert started["params"].training == expected

    (tmp_path / "pipeline.yaml").write_text("training:\n  epochs: 5\n")
    result = runner.invoke(app, ["pipeline", "--config", str(tmp_path / "pipeline.yaml")])
    assert result.exit_code == 0, result.output
    assert started["params"].training == expected

    assert PipelineParams().training == PipelineParams(training={}).training == TrainConfig(
        **PIPELINE_TRAINING_DEFAULTS)


def test_pipeline_preset_beats_the_pipeline_defaults_and_explicit_beats_both():
    paper = PipelineParams(training={"preset": "paper"}).training
    assert (paper.iterations, paper.batch_size, paper.lr, paper.progress) == (
        30_000, 5000, 1e-3, False)
    five = PipelineParams.model_validate({"training": {"preset": "paper", "epochs": 5,
                                                       "lr": 3e-3}}).training
    assert (five.epochs, five.iterations, five.batch_size, five.lr) == (5, None, 5000, 3e-3)


def test_reproduce_override_of_epochs_wins_over_the_paper_profile_iterations():
    settings = resolve_settings("bm1d", "paper", {"training.epochs": 5})
    assert (settings.training.epochs, settings.training.iterations) == (5, None)
    assert resolve_settings("bm1d", "paper", {}).training.iterations == 30_000
    both = resolve_settings("bm1d", "paper", {"training.epochs": 5, "training.iterations": 7})
    assert both.training.iterations == 7
