"""The whole pipeline on embedded defaults (temporary Prefect API, sqlite MLflow, local Dask).

Two runs on bm1d: a trained model becomes champion; a deliberately under-trained one is
registered but does not take the alias. Then the registry is used from a fresh process and from
`prnf sample`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.config import PipelineParams
from flows.pipeline import pipeline_flow
from prnf_core.paths import data_root

runner = CliRunner()


def params(epochs: int, **extra) -> PipelineParams:
    return PipelineParams.model_validate({
        "problem": "bm1d", "n_train": 4000, "chunk_size": 2000,
        "training": {"epochs": epochs, "batch_size": 128, "lr": 3e-3, "progress": False},
        "model": {"hidden_width": 32},
        # exact KLs of 500 x 500 draws: the trained model's is ~0.002 with an SE of ~0.003,
        # six SEs below the gate's 0.02; the 1-epoch model's is orders of magnitude above
        "validation": {"n_samples": 1000, "chunk_size": 1000, "kl_samples": 500,
                       "laws": {"gaussian": {"kind": "gaussian", "mean": [0.0], "std": [0.5]},
                                "bimodal": {"kind": "gaussian_mixture", "weights": [0.5, 0.5],
                                            "means": [[-1.0], [1.0]],
                                            "stds": [[0.3], [0.3]]}}},
        "execution": {"workers": 0}, **extra})


@pytest.fixture(scope="module")
def two_runs(private_data_root, prefect_harness):
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    good = pipeline_flow(params(epochs=40))
    bad = pipeline_flow(params(epochs=1, seed=5))
    return good, bad


def test_good_model_becomes_champion(two_runs):
    good, _ = two_runs
    assert good["passed"] and good["promoted"] and good["version"] == "1"
    assert good["decision"] == "no champion yet"
    assert good["champion_uri"] == "models:/prnf-bm1d@champion"
    assert good["metrics"]["val/gaussian/kl"] < 0.02
    assert good["tracking_uri"] == f"sqlite:///{data_root() / 'mlflow.db'}"


def test_worse_challenger_is_registered_but_not_promoted(two_runs):
    good, bad = two_runs
    assert bad["version"] == "2" and not bad["promoted"]
    assert bad["score"] > good["score"]
    from mlflow import MlflowClient

    client = MlflowClient(good["tracking_uri"], good["tracking_uri"])
    assert str(client.get_model_version_by_alias("prnf-bm1d", "champion").version) == "1"
    challenger = client.get_model_version_by_alias("prnf-bm1d", "challenger")
    assert str(challenger.version) == "2"
    tags = challenger.tags
    assert tags["dataset_id"] == bad["dataset_id"] and "validation_status" in tags
    assert tags["promotion"].startswith(("does not beat champion", "validation failed"))
    assert "val/gaussian/kl" in tags and "test_set.gaussian" in tags


def test_mlflow_runs_params_metrics_and_artifacts(two_runs):
    good, _ = two_runs
    from mlflow import MlflowClient

    client = MlflowClient(good["tracking_uri"])
    children = client.search_runs(
        [good["experiment_id"]], f"tags.mlflow.parentRunId = '{good['run_id']}'")
    by_step = {r.data.tags["prnf.step"]: r for r in children}
    assert set(by_step) == {"simulate", "train", "validate"}
    assert all(r.info.status == "FINISHED" for r in children)
    parent = client.get_run(good["run_id"])
    assert parent.data.params["training.epochs"] == "40"
    assert parent.data.params["validation.n_samples"] == "1000"
    train = by_step["train"]
    history = client.get_metric_history(train.info.run_id, "epoch.val_nll")
    assert len(history) == 40
    validate = by_step["validate"]
    assert "val/gaussian/energy_ratio".replace("/", ".") in validate.data.metrics
    artifacts = {a.path for a in client.list_artifacts(validate.info.run_id, "report")}
    assert {"report/report.md", "report/marginals_gaussian.png",
            "report/training_curves.png"} <= artifacts
    assert by_step["simulate"].data.tags["dataset_id"] == good["dataset_id"]
    report = (data_root() / "reports" / good["run_id"] / "report.md").read_text()
    assert "gaussian" in report and "Exact KL" in report


def test_champion_loads_in_a_fresh_process(two_runs):
    good, _ = two_runs
    code = (
        "import mlflow, numpy as np\n"
        "m = mlflow.pyfunc.load_model('models:/prnf-bm1d@champion')\n"
        "x0 = np.zeros((2000, 1))\n"
        "a = m.predict(x0, params={'seed': 3}); b = m.predict(x0, params={'seed': 3})\n"
        "lp = m.unwrap_python_model().log_prob(a[:5], x0[:5])\n"
        "import json\n"
        "print(json.dumps([a.shape, bool((a == b).all()), float(a.mean()), float(a.var()),\n"
        "                  lp.shape]))\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": good["tracking_uri"]}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shape, same, mean, var, lp_shape = json.loads(proc.stdout.strip().rsplit("\n", 1)[-1])
    # bm1d: X_T | x0=0 ~ N(0.5, 0.5); 2000 samples: SE(mean) = 0.016, SE(var) = 0.016
    assert shape == [2000, 1] and lp_shape == [5] and same
    assert abs(mean - 0.5) < 0.1 and abs(var - 0.5) < 0.1


def test_prnf_sample_from_the_registry(two_runs, tmp_path):
    good, _ = two_runs
    os.environ["MLFLOW_TRACKING_URI"] = good["tracking_uri"]
    try:
        out = tmp_path / "s.npy"
        result = runner.invoke(app, ["sample", "--model", "models:/prnf-bm1d@champion",
                                     "--initial", '{"kind": "point_mass", "point": [0.0]}',
                                     "-n", "3000", "--out", str(out)])
        assert result.exit_code == 0, result.output
        xs = np.load(out)
        assert xs.shape == (3000, 1) and abs(xs.mean() - 0.5) < 0.1
        zarr_out = tmp_path / "s.zarr"
        assert runner.invoke(app, ["sample", "--model", good["model_dir"], "--initial",
                                   '{"kind": "point_mass", "point": [0.0]}', "-n", "10",
                                   "--out", str(zarr_out)]).exit_code == 0
        import zarr

        group = zarr.open_group(str(zarr_out), mode="r")
        assert group["xT"].shape == (10, 1) and json.dumps(dict(group.attrs))
        bad = runner.invoke(app, ["sample", "--model", "models:/prnf-bm1d@champion",
                                  "--initial", '{"kind": "point_mass", "point": [0, 0]}',
                                  "--out", str(tmp_path / "x.npy")])
        assert bad.exit_code == 2 and "dimension 2" in bad.output and "dimension 1" in bad.output
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"problem": "nope"}, "known problems"),
        ({"n_train": 0}, "n_train"),
        ({"validation": {"n_samples": 5}}, "validation.n_samples"),
        ({"validation": {"laws": {"g": {"kind": "gaussian", "mean": [0, 0], "std": [1, 1]}}},
          "problem": "bm1d"}, "validation.laws.g"),
        ({"model": {"dim": 3}}, "model.dim"),
        ({"training": {"lr": 0}}, "training.lr"),
    ],
)
def test_pipeline_parameters_are_validated_before_work(raw, field):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=field):
        PipelineParams.model_validate(raw)


def test_prnf_validate_a_registered_model(two_runs):
    good, _ = two_runs
    os.environ["MLFLOW_TRACKING_URI"] = good["tracking_uri"]
    try:
        result = runner.invoke(app, ["validate", "--model", "models:/prnf-bm1d@champion",
                                     "--n-samples", "500", "--workers", "0",
                                     "--set", "validation.kl_samples=500"])
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    assert result.exit_code == 0, result.output
    for law in ("gaussian", "uniform", "bimodal", "skewed"):  # bm1d's default test laws
        assert f"val/{law}/kl" in result.output
    report_dir = result.output.rsplit("report and plots: ", 1)[1].split()[0]
    assert (data_root() / "reports").exists() and report_dir.startswith(str(data_root()))


def test_prnf_register_of_a_registered_model_dir_brings_back_its_version(two_runs, tmp_path):
    """What `prnf register MODEL_DIR` does after an outage that struck once the pipeline had
    registered the version: the same version comes back, the model is not logged again and no
    duplicate version is made. Last in this module: it moves the challenger alias back."""
    import yaml
    from mlflow import MlflowClient

    good, _ = two_runs
    client = MlflowClient(good["tracking_uri"], good["tracking_uri"])
    name = good["registered_model"]
    before = sorted(str(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    config = tmp_path / "register.yaml"
    config.write_text(yaml.safe_dump({"validation": {
        "n_samples": 1000, "chunk_size": 1000, "kl_samples": 500,
        "laws": {"gaussian": {"kind": "gaussian", "mean": [0.0], "std": [0.5]}}}}))
    result = runner.invoke(app, ["register", good["model_dir"], "--config", str(config),
                                 "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert f"registered {name} v{good['version']}:" in result.output
    after = sorted(str(v.version) for v in client.search_model_versions(f"name = '{name}'"))
    assert after == before
    version = client.get_model_version(name, good["version"])
    assert version.tags["model_dir"] == good["model_dir"]
    register_run = client.get_run(version.tags["pipeline_run_id"])
    assert register_run.data.tags["prnf.step"] == "register"
    assert register_run.data.tags["reused_model_version"] == f"{name}/{good['version']}"
    assert client.search_runs([good["experiment_id"]], "tags.`prnf.step` = 'log-model'") == []
