"""`prnf reproduce`: the paper's experiments on the pipeline, end to end on tiny sizes.

Accuracy goals are not asserted here (the quick and paper profiles are benchmarks whose numbers
are in docs/results); these tests check that every experiment runs through the pipeline, writes
its page with tables and figures, logs to MLflow, and refuses bad settings naming the field.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from mlflow import MlflowClient
from pydantic import ValidationError
from typer.testing import CliRunner

from flows.cli import app
from flows.reproduce import ReproduceParams, reproduce_flow
from flows.reproduce.settings import PROFILES, resolve_settings
from prnf_core.studies import abc3d_grid_laws, lattice_subset
from tasks import tracking

TINY = {
    "bm1d": {"n_train": 1000, "chunk_size": 500, "training.epochs": 2, "lambdas": [0, 100],
             "kl_n_y": 200, "kl_n_x0": 200, "check_samples": 500, "validation_samples": 500,
             "model.hidden_width": 16},
    "runaway2d": {"n_train": 1000, "chunk_size": 500, "t_end": 0.5, "training.epochs": 2,
                  "temperatures": [2, 6], "marginal_temperatures": [6], "n_mc": 1000,
                  "n_surrogate": 2000, "validation_samples": 500, "model.hidden_width": 16},
    "abc3d": {"n_train": 1000, "chunk_size": 500, "t_end": 0.1, "training.epochs": 2,
              "grid": 3, "grid_samples": 500, "reference_per_axis": 2,
              "reference_samples": 500, "validation_samples": 500, "model.hidden_width": 16,
              "baseline_model.hidden_width": 8, "baseline_training.epochs": 1},
}


@pytest.mark.parametrize("experiment", sorted(PROFILES))
@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_profiles_are_valid(experiment, profile):
    settings = resolve_settings(experiment, profile, {})
    assert settings.n_train > 0
    if profile == "paper":
        assert settings.model.hidden_width == 512 and settings.training.iterations == 30_000


def test_overrides_are_dotted_and_validated():
    s = resolve_settings("bm1d", "paper", {"training.iterations": 10, "model.hidden_width": 8})
    assert s.training.iterations == 10 and s.model.hidden_width == 8  # beat the preset
    with pytest.raises(ValidationError, match="n_trian"):
        ReproduceParams(experiment="bm1d", overrides={"n_trian": 5})
    with pytest.raises(ValidationError, match=r"training\.epochs"):
        ReproduceParams(experiment="bm1d", overrides={"training.epochs": -1})
    with pytest.raises(ValidationError, match="default_lambda"):
        ReproduceParams(experiment="bm1d", overrides={"lambdas": [0, 1]})
    with pytest.raises(ValidationError, match="marginal_temperatures"):
        ReproduceParams(experiment="runaway2d", overrides={"marginal_temperatures": [11]})
    with pytest.raises(ValidationError, match="'n_train' is not a section"):
        ReproduceParams(experiment="abc3d", overrides={"n_train.x": 1})
    with pytest.raises(ValidationError, match="experiment"):
        ReproduceParams(experiment="lorenz")


def test_cli_refuses_bad_setting_before_any_work(tmp_path):
    result = CliRunner().invoke(app, ["reproduce", "abc3d", "--set", "grid=1",
                                      "--output", str(tmp_path)])
    assert result.exit_code == 2
    assert "grid" in result.output and "greater than or equal to 2" in result.output
    assert not any(tmp_path.iterdir())


def test_grid_and_reference_subset():
    laws = abc3d_grid_laws(22)
    assert len(laws) == 484
    assert laws[(21, 0)].mu == pytest.approx([2 * 3.141592653589793, 3.141592653589793, 0.0])
    subset = lattice_subset(22, 5)
    assert len(subset) == 25 and (0, 0) in subset and (21, 21) in subset


def test_command_line_reruns_the_same_parameters():
    params = ReproduceParams(experiment="bm1d", overrides={"lambdas": [0, 100]},
                             output_dir="out dir", execution={"workers": 0})
    line = params.command_line()
    assert line == ("prnf reproduce bm1d --profile quick --set 'lambdas=[0,100]' "
                    "--output 'out dir' --workers 0")


@pytest.mark.parametrize("experiment", sorted(TINY))
def test_experiment_end_to_end(experiment, prefect_harness, tmp_path):
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    result = reproduce_flow(ReproduceParams(experiment=experiment, overrides=TINY[experiment],
                                            output_dir=str(tmp_path), execution={"workers": 0}))
    page = Path(result["page"])
    text = page.read_text()
    assert page == tmp_path / f"{experiment}.md"
    assert f"prnf reproduce {experiment} --profile quick" in text
    assert "Machine:" in text and "wall time" in text
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert figures and all((tmp_path / f).is_file() for f in figures)
    assert "| " in text  # at least one table
    assert result["headline"] and isinstance(result["goal_met"], bool)

    client = MlflowClient(tracking.tracking_uri())
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["wall_seconds"] > 0
    assert run.data.params["profile"] == "quick"
    artifacts = {a.path for a in client.list_artifacts(result["run_id"])}
    assert f"{experiment}.md" in artifacts and experiment in artifacts
    assert run.data.tags.get("pipeline_run") or run.data.tags.get("pipeline_run.100")
    if experiment == "abc3d":  # the quick profile's NSF baseline went through the pipeline too
        assert run.data.tags["pipeline_run.baseline"] != run.data.tags["pipeline_run"]
        assert "Surrogates side by side" in text and "baseline.grid.max_abs_error" in result[
            "metrics"]


@pytest.mark.parametrize("experiment", sorted(PROFILES))
def test_committed_results_page_names_its_command_machine_and_figures(experiment):
    page = Path(__file__).resolve().parents[1] / "docs" / "results" / f"{experiment}.md"
    text = page.read_text()
    assert f"prnf reproduce {experiment} --profile quick --output docs/results" in text
    assert re.search(r"wall time \d+(\.\d+)? min", text) and "- Machine: " in text
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert figures and all((page.parent / f).is_file() for f in figures)
