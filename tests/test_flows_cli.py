"""The simulate flow and the `prnf` CLI (in-process, against a temporary Prefect server)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.simulate import SimulateParams, simulate_flow
from prnf_core import DatasetConfig, open_dataset

runner = CliRunner()


def test_problems_lists_the_builtins():
    result = runner.invoke(app, ["problems"])
    assert result.exit_code == 0
    for name in ("bm1d", "ou", "abc3d", "runaway2d"):
        assert name in result.output
    assert "parameters" in result.output


def test_simulate_flow_returns_metadata_and_reuses_the_store(prefect_harness, tmp_path):
    params = SimulateParams(
        dataset=DatasetConfig(problem="bm1d", n_particles=600, chunk_size=200, dt=0.05),
        output=str(tmp_path / "bm.zarr"),
        execution={"workers": 0},
    )
    first = simulate_flow(params)
    assert first["complete"] and first["chunks_simulated"] == 3
    assert len(json.dumps(first)) < 1000, "tasks/flows return small metadata, not arrays"
    second = simulate_flow(params)
    assert second["chunks_simulated"] == 0 and second["chunks_already_done"] == 3
    assert open_dataset(first["path"]).dataset_id == first["dataset_id"]


def test_cli_simulate_writes_under_the_data_root(prefect_harness):
    result = runner.invoke(app, ["simulate", "--problem", "ou", "-n", "500", "--chunk-size",
                                 "250", "--t-end", "0.1", "--workers", "0", "--param", "dim=3"])
    assert result.exit_code == 0, result.output
    assert "dataset id:" in result.output and "complete: True" in result.output
    path = next(line.split(": ", 1)[1] for line in result.output.splitlines()
                if line.startswith("store: "))
    assert "/data/datasets/ou-" in path
    ds = open_dataset(path)
    assert ds.dim == 3 and np.isfinite(ds.load("xT")).all()


def test_cli_config_file_and_initial_spec_file(prefect_harness, tmp_path):
    (tmp_path / "init.yaml").write_text("kind: point_mass\npoint: [0.25]\n")
    (tmp_path / "sim.yaml").write_text(
        "dataset:\n  problem: bm1d\n  n_particles: 300\n  chunk_size: 100\n"
        "execution:\n  workers: 0\n"
    )
    out = tmp_path / "pm.zarr"
    result = runner.invoke(app, ["simulate", "--config", str(tmp_path / "sim.yaml"),
                                 "--initial", str(tmp_path / "init.yaml"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    x0 = open_dataset(out).load("x0")
    assert x0.shape == (300, 1) and (x0 == 0.25).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "0"], "dataset.n_particles"),
        (["--chunk-size", "-5"], "dataset.chunk_size"),
        (["--dt", "0"], "dataset.dt"),
        (["--t-end", "-1"], "dataset.t_end"),
        (["--problem", "nope"],
         "known problems: ['abc3d', 'bm1d', 'ou', 'ou1d_rate', 'runaway2d']"),
        (["--initial", '{"kind": "gaussian", "mean": [0]}'], "exactly one of std or cov"),
        (["--initial", "{not json"], "initial"),
        (["--problem", "bm1d", "--t-end", "0.505"], "not a whole multiple of dt"),
        (["--save-times", "a,b"], "--save-times"),
        (["--param", "novalue"], "--param: expected KEY=VALUE"),
        (["--workers", "-1"], "execution.workers"),
    ],
)
def test_cli_bad_input_is_refused_naming_the_field(args, message, tmp_path):
    result = runner.invoke(app, ["simulate", "--out", str(tmp_path / "x.zarr"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "x.zarr").exists(), "nothing is written before input is valid"


def test_cli_refuses_a_store_with_another_config(prefect_harness, tmp_path):
    out = str(tmp_path / "bm.zarr")
    base = ["simulate", "--problem", "bm1d", "-n", "200", "--chunk-size", "100",
            "--workers", "0", "--out", out]
    assert runner.invoke(app, base).exit_code == 0
    before = open_dataset(out).load("xT")
    result = runner.invoke(app, [*base, "--seed", "3"])
    assert result.exit_code == 2
    assert "another config" in result.output and "seed: stored 0, requested 3" in result.output
    np.testing.assert_array_equal(open_dataset(out).load("xT"), before)


def test_cli_info(prefect_harness, tmp_path):
    out = str(tmp_path / "bm.zarr")
    runner.invoke(app, ["simulate", "--problem", "bm1d", "-n", "100", "--chunk-size", "50",
                        "--workers", "0", "--out", out])
    result = runner.invoke(app, ["info", out])
    assert result.exit_code == 0 and "complete: True" in result.output
    assert runner.invoke(app, ["info", str(tmp_path / "missing.zarr")]).exit_code == 2


def test_cli_train_writes_model_and_summary(prefect_harness, tmp_path):
    data = str(tmp_path / "bm.zarr")
    assert runner.invoke(app, ["simulate", "--problem", "bm1d", "-n", "1000", "--chunk-size",
                               "500", "--workers", "0", "--out", data]).exit_code == 0
    out = tmp_path / "model"
    result = runner.invoke(app, ["train", "--data", data, "--epochs", "2", "--width", "16",
                                 "--batch-size", "200", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["problem"] == "bm1d"
    assert summary["steps"] == 2 * 4  # 800 training pairs / 200 per step, every batch steps
    from prnf_core.models import load_metadata, load_model

    model = load_model(out, device="cpu")
    assert model.sample(np.zeros((3, 1))).shape == (3, 1)
    assert load_metadata(out)["dataset_id"] == summary["dataset_id"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "training.epochs"),
        (["--architecture", "maf"], "model.architecture"),
        (["--lr", "-1"], "training.lr"),
        (["--preset", "huge"], "preset"),
    ],
)
def test_cli_train_bad_input(args, message, tmp_path):
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "none.zarr"), *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_cli_train_refuses_missing_or_incomplete_data(prefect_harness, tmp_path):
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "none.zarr")])
    assert result.exit_code == 2 and "no dataset at" in result.output
    from prnf_core import create_dataset

    create_dataset(DatasetConfig(problem="bm1d", n_particles=10, chunk_size=5),
                   tmp_path / "half.zarr")
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "half.zarr")])
    assert result.exit_code == 2 and "incomplete" in result.output


def test_train_uses_the_problems_declared_symmetry_by_default(tmp_path):
    """abc3d declares x0_period = 2π: `prnf train` resolves the default model.x0_period
    ('problem') into the saved model; `x0_period: null` in YAML turns it off."""
    import math

    from prnf_core.models import load_metadata

    data = str(tmp_path / "abc.zarr")
    assert runner.invoke(app, ["simulate", "--problem", "abc3d", "-n", "200", "--chunk-size",
                               "200", "--t-end", "0.02", "--workers", "0",
                               "--out", data]).exit_code == 0
    on = runner.invoke(app, ["train", "--data", data, "--epochs", "1", "--width", "8",
                             "--out", str(tmp_path / "on")])
    assert on.exit_code == 0, on.output
    assert load_metadata(tmp_path / "on")["model"]["x0_period"] == [2 * math.pi] * 3
    (tmp_path / "off.yaml").write_text("model: {x0_period: null}\n")
    off = runner.invoke(app, ["train", "--data", data, "--epochs", "1", "--width", "8",
                              "--config", str(tmp_path / "off.yaml"), "--out",
                              str(tmp_path / "off")])
    assert off.exit_code == 0, off.output
    assert load_metadata(tmp_path / "off")["model"]["x0_period"] is None
