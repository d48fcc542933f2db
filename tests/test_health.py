"""Champion health: the degradation rule (pure), and the flow end to end on embedded defaults
(temporary Prefect API, sqlite MLflow under the test data root, in-process simulation)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from tiny_models import register_perturbed_champion

from tasks.health import (
    RELATIVE_TOLERANCE,
    ChampionDegradedError,
    checks,
    degradations,
    markdown_table,
)

NO_SPREAD = {"kl": 0.0, "sw_ratio": 0.0}


def test_within_noise_is_healthy():
    base = {"val/g/kl": "0.012", "val/g/kl_stderr": "0.003"}
    # limit 0.012 + 3 * sqrt(0.003^2 + 0.002^2) = 0.0228
    assert degradations(base, {"val/g/kl": 0.02, "val/g/kl_stderr": 0.002}, 3.0) == []
    assert degradations(base, {"val/g/kl": 0.001, "val/g/kl_stderr": 0.002}, 3.0) == []


def test_beyond_noise_names_the_metric_and_values():
    base = {"val/gaussian/kl": "0.012", "val/gaussian/kl_stderr": "0.003"}
    found = degradations(base, {"val/gaussian/kl": 0.41, "val/gaussian/kl_stderr": 0.0}, 3.0)
    assert found == ["val/gaussian/kl: 0.41 now vs 0.012 ± 0.003 at registration (limit 0.021)"]


def test_both_metrics_every_common_law_only():
    base = {"val/a/kl": "0.01", "val/a/kl_stderr": "0.001", "val/a/sw_ratio": "1.0",
            "val/a/sw_ratio_stderr": "0.05", "val/b/kl": "0.01", "val/a/energy_ratio": "1"}
    now = {"val/a/kl": 0.5, "val/a/kl_stderr": 0.01, "val/a/sw_ratio": 4.0,
           "val/a/sw_ratio_stderr": 0.1, "val/c/kl": 9.0, "val/a/energy_ratio": 50.0}
    found = degradations(base, now, 3.0, NO_SPREAD)
    assert [f.split(":")[0] for f in found] == ["val/a/kl", "val/a/sw_ratio"]
    assert {c.key for c in checks(base, now, 3.0)} == {"val/a/kl", "val/a/sw_ratio"}


def test_missing_or_nan_se_counts_as_zero_on_that_side():
    base = {"val/g/kl": "0.01", "val/g/kl_stderr": "nan"}
    now = {"val/g/kl": 0.02, "val/g/kl_stderr": 0.002}  # limit 0.01 + 3 * 0.002 = 0.016
    (check,) = checks(base, now, 3.0)
    assert math.isclose(check.limit, 0.016) and check.degraded
    (check,) = checks({"val/g/kl": "0.01"}, {"val/g/kl": 0.012, "val/g/kl_stderr": 0.002}, 3.0)
    assert not check.degraded


def test_without_any_se_a_relative_tolerance_applies():
    base = {"val/g/sw_ratio": "1.0"}
    (check,) = checks(base, {"val/g/sw_ratio": 1.2, "val/g/sw_ratio_stderr": math.nan}, 3.0,
                      NO_SPREAD)
    assert math.isclose(check.limit, 1.0 + RELATIVE_TOLERANCE) and not check.degraded
    assert degradations(base, {"val/g/sw_ratio": 1.3}, 3.0, NO_SPREAD) == [
        "val/g/sw_ratio: 1.3 now vs 1 at registration (limit 1.25)"]


def test_sw_ratio_spread_widens_only_the_sw_ratio():
    base = {"val/g/sw_ratio": "1.0", "val/g/sw_ratio_stderr": "0.05", "val/g/kl": "0.01",
            "val/g/kl_stderr": "0.001"}
    now = {"val/g/sw_ratio": 1.6, "val/g/sw_ratio_stderr": 0.05, "val/g/kl": 0.02,
           "val/g/kl_stderr": 0.001}
    assert [f.split(":")[0] for f in degradations(base, now, 3.0, NO_SPREAD)] == [
        "val/g/sw_ratio", "val/g/kl"]
    # default: a fresh noise floor moves the ratio by ~25 %, which its bootstrap SE leaves out
    assert [f.split(":")[0] for f in degradations(base, now, 3.0)] == ["val/g/kl"]


def test_nan_now_is_degraded_and_bad_baseline_skipped():
    assert degradations({"val/g/kl": "0.01"}, {"val/g/kl": math.nan}, 3.0)
    assert degradations({"val/g/kl": "n/a"}, {"val/g/kl": 5.0}, 3.0) == []


def test_error_names_every_problem_and_pickles():
    exc = ChampionDegradedError("prnf-ou", "3", ["val/a/kl: worse", "fails the gate: x"])
    assert str(exc) == "champion prnf-ou v3 degraded: val/a/kl: worse; fails the gate: x"
    again = pickle.loads(pickle.dumps(exc))
    assert str(again) == str(exc) and again.problems == exc.problems
    table = markdown_table(checks({"val/g/kl": "0.01"}, {"val/g/kl": 1.0}, 3.0))
    assert "| val/g/kl |" in table and "DEGRADED" in table


def test_params_refuse_a_uri_and_unknown_fields():
    from pydantic import ValidationError

    from flows.health import HealthParams

    assert HealthParams().model == "prnf-ou"
    with pytest.raises(ValidationError, match="registered model name"):
        HealthParams(model="models:/prnf-ou@champion")
    with pytest.raises(ValidationError):
        HealthParams.model_validate({"modell": "x"})


# ---- end to end --------------------------------------------------------------------------


#: The registration and every check: exact KLs of 500 x 500 draws on both sides (the rule's
#: limit is in their combined SE; the 40-epoch model's KL is far below the gate's 0.02).
VALIDATION = {"n_samples": 1000, "chunk_size": 1000, "kl_samples": 500,
              "laws": {"gaussian": {"kind": "gaussian", "mean": [0.0], "std": [0.5]}}}


def _pipeline_params():
    from flows.config import PipelineParams

    return PipelineParams.model_validate({
        "problem": "bm1d", "n_train": 4000, "chunk_size": 2000,
        "training": {"epochs": 40, "batch_size": 128, "lr": 3e-3, "progress": False},
        "model": {"hidden_width": 32},
        "validation": VALIDATION, "execution": {"workers": 0}})


def _health_params(seed: int):
    from flows.health import HealthParams

    return HealthParams.model_validate({
        "model": "prnf-bm1d", "seed": seed, "validation": VALIDATION,
        "execution": {"workers": 0}})


def test_health_series_passes_then_fails_on_a_degraded_champion(prefect_harness,
                                                                private_data_root):
    from flows.health import health_flow
    from flows.pipeline import pipeline_flow
    from tasks import tracking
    from tasks.health import POINT_METRIC

    trained = pipeline_flow(_pipeline_params())
    assert trained["promoted"]
    name = trained["registered_model"]

    first = health_flow(_health_params(11))
    second = health_flow(_health_params(12))
    assert (first["point"], second["point"]) == (0, 1)
    assert first["run_id"] == second["run_id"] and first["version"] == trained["version"]
    assert first["seed"] == 11 and set(first["metrics"]) >= {"val/gaussian/kl",
                                                             "val/gaussian/sw_ratio"}
    from flows import cli_output

    cli_output.health(second)  # what `prnf health` prints for a healthy champion
    client = tracking.configure()
    run_id = first["run_id"]
    history = client.get_metric_history(run_id, POINT_METRIC)
    assert sorted(m.step for m in history) == [0, 1]
    assert len(client.get_metric_history(run_id, "val.gaussian.kl")) == 2
    assert [m.value for m in client.get_metric_history(run_id, "seed")] == [11.0, 12.0]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["prnf.model"] == name
    assert run.info.experiment_id == trained["experiment_id"]

    bad = register_perturbed_champion(client, trained["experiment_id"], trained["model_dir"],
                                      name, np.zeros((5, 1)))
    state = health_flow(_health_params(13), return_state=True)
    assert state.is_failed()
    assert "ChampionDegradedError" in state.message or "degraded" in state.message
    assert "val/gaussian/kl" in state.message or "val/gaussian/sw_ratio" in state.message
    with pytest.raises(ChampionDegradedError, match=f"champion {name} v{bad} degraded"):
        state.result()
    history = client.get_metric_history(run_id, POINT_METRIC)
    assert sorted(m.step for m in history) == [0, 1, 2]
    versions = client.get_metric_history(run_id, "champion_version")
    assert [m.value for m in sorted(versions, key=lambda m: m.step)] == [
        float(trained["version"]), float(trained["version"]), float(bad)]
    run = client.get_run(run_id)
    assert run.info.status == "FAILED" and run.data.tags["health.last_verdict"] == "degraded"


def test_cli_maps_options_and_exits_3_when_degraded(monkeypatch, tmp_path):
    import prefect.main  # noqa: F401  binds Prefect's log handler to stderr now, not to CliRunner's
    from typer.testing import CliRunner

    from flows.cli import app

    seen = {}

    def degraded(run, params):
        seen["params"] = params
        raise ChampionDegradedError(params.model, "4", ["val/gaussian/kl: 0.41 now vs 0.012"])

    monkeypatch.setattr("flows.cli_support.run_with_progress", degraded)
    config = tmp_path / "h.yaml"
    config.write_text("n_se: 2.5\nvalidation: {n_samples: 300, bootstrap: 0}\n")
    result = CliRunner().invoke(app, ["health", "prnf-bm1d", "--seed", "7", "--n-samples",
                                      "200", "--config", str(config), "--set",
                                      "execution.workers=0"])
    assert result.exit_code == ChampionDegradedError.exit_code == 3, result.output
    assert "champion prnf-bm1d v4 degraded: val/gaussian/kl" in result.output
    params = seen["params"]
    assert (params.model, params.seed, params.n_se) == ("prnf-bm1d", 7, 2.5)
    assert (params.validation.n_samples, params.validation.bootstrap) == (200, 0)
    assert params.execution.workers == 0
    result = CliRunner().invoke(app, ["health", "models:/prnf-ou@champion"])
    assert result.exit_code == 2 and "registered model name" in result.output
