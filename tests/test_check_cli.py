"""Issue 15 from the command line on a real bm1d store and a small trained model: `prnf train`
records the store's training domain; `prnf sample` prints the law's outside fraction, warns
above --max-outside, refuses with --strict and logs it with --track; `prnf check` verifies the
model on a fresh MC of one law and logs the report against the registry version."""

from __future__ import annotations

import json
import math

import numpy as np
import prefect.main  # noqa: F401  binds Prefect's log handler to stderr now, not to CliRunner's
import pytest
from typer.testing import CliRunner

from flows.cli import app
from prnf_core.models import load_model

runner = CliRunner()
OUTSIDE = {"kind": "gaussian", "mean": [2.0], "std": [0.5]}  # half its mass beyond x = 2
INSIDE = {"kind": "gaussian", "mean": [0.0], "std": [0.4]}   # 1e-6 beyond |x| = 2


@pytest.fixture(scope="module")
def model_dir(private_data_root, prefect_harness, tmp_path_factory):
    folder = tmp_path_factory.mktemp("trust")
    store, model = folder / "bm1d.zarr", folder / "model"
    made = runner.invoke(app, ["simulate", "--problem", "bm1d", "-n", "4000", "--chunk-size",
                               "2000", "--workers", "0", "--out", str(store)])
    assert made.exit_code == 0, made.output
    trained = runner.invoke(app, ["train", "--data", str(store), "--out", str(model),
                                  "--epochs", "60", "--width", "32", "--batch-size", "256",
                                  "--lr", "0.01"])
    assert trained.exit_code == 0, trained.output
    return model


def _sample(model, out, law, *extra):
    return runner.invoke(app, ["sample", "--model", str(model), "--initial", json.dumps(law),
                               "-n", "500", "--out", str(out), *extra])


def test_train_records_the_stores_training_domain(model_dir):
    domain = load_model(model_dir, device="cpu").training_domain
    assert domain.law.kind == "uniform" and domain.low == [-2.0] and domain.high == [2.0]
    assert json.loads((model_dir / "config.json").read_text())["training_domain"]["low"] == [-2.0]


def test_sample_prints_the_fraction_and_warns_above_the_threshold(model_dir, tmp_path):
    inside = _sample(model_dir, tmp_path / "in.npy", INSIDE)
    assert inside.exit_code == 0, inside.output
    assert "coverage: 0.00 % ± 0.00 % of the initial law lies outside" in inside.output
    assert "WARNING" not in inside.output
    assert "typicality p-value 1 " in inside.output  # log q is constant in a uniform box
    outside = _sample(model_dir, tmp_path / "out.npy", OUTSIDE)
    assert outside.exit_code == 0, outside.output
    assert "WARNING: initial: " in outside.output and "max_outside = 1 %" in outside.output
    fraction = float(outside.output.split("WARNING: initial: ")[1].split(" %")[0]) / 100
    assert abs(fraction - 0.5) < 4 * math.sqrt(0.25 / 50_000)
    assert np.load(tmp_path / "out.npy").shape == (500, 1)
    relaxed = _sample(model_dir, tmp_path / "relaxed.npy", OUTSIDE, "--max-outside", "0.6")
    assert relaxed.exit_code == 0 and "WARNING" not in relaxed.output


def test_strict_refuses_naming_the_fraction_and_the_threshold(model_dir, tmp_path):
    refused = _sample(model_dir, tmp_path / "s.npy", OUTSIDE, "--strict", "--max-outside",
                      "0.05")
    assert refused.exit_code == 2
    assert "max_outside = 5 %" in refused.output and "refused: strict" in refused.output
    assert not (tmp_path / "s.npy").exists()
    fine = _sample(model_dir, tmp_path / "t.npy", INSIDE, "--strict")
    assert fine.exit_code == 0, fine.output


def test_track_logs_the_outside_fraction_to_mlflow(model_dir, tmp_path):
    from tasks import tracking

    tracked = _sample(model_dir, tmp_path / "k.npy", OUTSIDE, "--track")
    assert tracked.exit_code == 0, tracked.output
    run_id = tracked.output.split("logged to MLflow run ")[1].split()[0]
    run = tracking.configure().get_run(run_id)
    assert abs(run.data.metrics["trust.outside_fraction"] - 0.5) < 4 * math.sqrt(0.25 / 50_000)
    assert run.data.tags["model"] == str(model_dir) and run.data.tags["trust.flagged"] == "true"


def test_check_reports_and_logs_against_the_model_version(model_dir):
    from tasks import registry, tracking
    from tasks.pyfunc import log_surrogate

    client = tracking.configure()
    experiment = tracking.experiment_id(client, "bm1d")
    with tracking.child_run(client, experiment, "train", None) as run_id:
        uri = log_surrogate(model_dir, run_id, np.zeros((3, 1)))
    version = registry.register(client, uri, "prnf-bm1d-trust", run_id, {})
    result = runner.invoke(app, ["check", "--model", f"models:/prnf-bm1d-trust/{version}",
                                 "--initial", json.dumps(INSIDE), "--name", "narrow",
                                 "-n", "400", "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "SW ratio" in result.output and "C2ST accuracy" in result.output
    assert "coverage: 0.00 %" in result.output
    check_run = result.output.split("logged to MLflow run ")[1].split()[0]
    run = client.get_run(check_run)
    assert run.data.tags["model_name"] == "prnf-bm1d-trust"
    assert run.data.tags["model_version"] == str(version)
    metrics = run.data.metrics
    for key in ("val.narrow.sw_ratio", "val.narrow.c2st_acc", "val.narrow.kl",
                "trust.outside_fraction"):
        assert math.isfinite(metrics[key]), key
    # a 60-epoch model of a Gaussian transition: about 1.7 at this size (a 15-epoch one: 9)
    assert metrics["val.narrow.sw_ratio"] < 3
    tags = client.get_model_version("prnf-bm1d-trust", version).tags
    assert float(tags["check.narrow.sw_ratio"]) == pytest.approx(
        metrics["val.narrow.sw_ratio"], rel=1e-5)
    assert tags["check.narrow.run_id"] == check_run
    assert tags["check.narrow.passed"] == str(metrics["passed"] == 1.0).lower()


def test_pyfunc_predict_warns_and_refuses_on_rows_outside_the_domain(model_dir):
    from prnf_core.trust import OutsideDomainError
    from tasks.pyfunc import load_surrogate

    wrapper = load_surrogate(str(model_dir))
    rows = np.linspace(0.0, 4.0, 100)[:, None]  # half of them beyond x = 2
    with pytest.warns(UserWarning, match=r"initial: 50\.00 % .*max_outside = 1 %"):
        assert wrapper.predict(None, rows, {"seed": 0}).shape == (100, 1)
    with pytest.raises(OutsideDomainError, match="refused: strict"):
        wrapper.predict(None, rows, {"seed": 0, "strict": True})
    inside = wrapper.predict(None, rows[:50], {"seed": 0, "strict": True})
    assert inside.shape == (50, 1)
    assert wrapper.predict(None, rows, {"seed": 0, "max_outside": 0.6}).shape == (100, 1)


def test_bad_threshold_is_refused_naming_the_field(model_dir, tmp_path):
    result = _sample(model_dir, tmp_path / "b.npy", INSIDE, "--max-outside", "2")
    assert result.exit_code == 2
    assert "max_outside: Input should be less than or equal to 1" in result.output
