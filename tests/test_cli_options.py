"""Every command maps its options, ``--set KEY.SUB=VALUE`` and its ``--config`` YAML file onto its
flow's parameters model the same way (``flows.config.build_params``). The command is stopped
at its flow: what is checked is the parameters it would have run with."""

from __future__ import annotations

import os
from typing import Any

import prefect.main  # noqa: F401  binds Prefect's log handler to stderr now, not to CliRunner's
import pytest
import typer
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


@pytest.fixture
def started(monkeypatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def stop(run, params):
        seen["params"] = params
        raise typer.Exit(0)

    monkeypatch.setattr("flows.cli_support.run_with_progress", stop)
    return seen


def invoke(*args: str) -> None:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output


def test_simulate_merges_file_set_and_options(started, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sim.yaml").write_text(
        "dataset: {problem: bm1d, n_particles: 100, seed: 1, problem_params: {mu: 2.0}}\n"
        "execution: {workers: 0}\n")
    invoke("simulate", "--config", "sim.yaml", "--set", "dataset.seed=4", "--set",
           "dataset.chunk_size=50", "--seed", "5", "--param", "sigma=0.5", "--out", "x.zarr",
           "--save-times", "0.1,0.2")
    params = started["params"]
    dataset = params.dataset
    assert (dataset.problem, dataset.n_particles, dataset.seed) == ("bm1d", 100, 5)
    assert dataset.chunk_size == 50 and dataset.save_times == [0.1, 0.2]
    assert dataset.problem_params == {"mu": 2.0, "sigma": 0.5}
    assert params.output == str(tmp_path / "x.zarr") and params.execution.workers == 0


def test_simulate_defaults_fill_only_what_is_absent(started):
    invoke("simulate")
    assert (started["params"].dataset.problem, started["params"].dataset.n_particles) == (
        "abc3d", 40_000)
    invoke("simulate", "--set", "dataset.problem=bm1d", "-n", "10")
    assert (started["params"].dataset.problem, started["params"].dataset.n_particles) == (
        "bm1d", 10)


def test_validate_and_register_take_set_and_their_sections(started, tmp_path):
    config = tmp_path / "p.yaml"
    config.write_text("problem: bm1d\nn_train: 5\nvalidation: {n_samples: 300}\n")
    invoke("register", str(tmp_path / "m"), "--config", str(config), "--set",
           "validation.seed=3", "--workers", "0")
    params = started["params"]
    assert params.model_dir == str(tmp_path / "m")
    assert (params.validation.n_samples, params.validation.seed) == (300, 3)
    assert params.execution.workers == 0
    invoke("validate", "--model", "models:/x@champion", "--n-samples", "200", "--set",
           "validation.bootstrap=0")
    params = started["params"]
    assert params.model == "models:/x@champion"
    assert (params.validation.n_samples, params.validation.bootstrap) == (200, 0)


def test_pipeline_set_and_options(started):
    invoke("pipeline", "--problem", "bm1d", "--set", "training.lr=0.01", "--set",
           "training.epochs=9", "--epochs", "3", "--param", "mu=0.5")
    params = started["params"]
    assert (params.problem, params.problem_params) == ("bm1d", {"mu": 0.5})
    assert (params.training.epochs, params.training.lr) == (3, 0.01)
    assert params.training.batch_size == 256  # the pipeline's default


def test_reproduce_set_goes_to_the_overrides(started, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    invoke("reproduce", "bm1d", "--set", "training.epochs=5", "--set", "lambdas=[0, 100]",
           "--output", "out", "--no-registry")
    params = started["params"]
    assert params.overrides == {"training.epochs": 5, "lambdas": [0, 100]}
    assert params.output_dir == os.path.join(str(tmp_path), "out")
    assert not params.use_registry and params.settings().training.epochs == 5
