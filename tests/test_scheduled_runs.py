"""Scheduled pipeline runs on embedded defaults (temporary Prefect API, sqlite MLflow): growing
data, warm starts, fresh and fixed test sets, no duplicate versions, retention, health points.

The same three nights run against real Prefect and MLflow servers, triggered through the
nightly deployment, in tests/test_services.py; these tests check each mechanism in-process.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zarr
from mlflow import MlflowClient

from flows.config import PipelineParams
from flows.nightly import run_name
from flows.pipeline import pipeline_flow
from prnf_core.dataset import open_dataset
from prnf_core.paths import DATA_ROOT_ENV, data_root
from tasks import health, registry
from tasks.growth import TrainingPlan, plan_training_set

LAW = {"gaussian": {"kind": "gaussian", "mean": [0.3, -0.2], "std": [0.4, 0.4]}}


def nightly(**extra) -> PipelineParams:
    """The nightly modes on a tiny OU problem: 2000 -> 3000 -> 4000 particles (the cap).

    Exact KLs of 500 x 500 draws (a 16th of the default's cost, twice its SE): the gate is
    open and the KLs compared are those of one model on one test set, or within their SEs."""
    return PipelineParams.model_validate({
        "problem": "ou", "n_train": 2000, "chunk_size": 1000, "grow_to": 4000, "grow_by": 1000,
        "warm_start": True, "fine_tune": {"epochs": 5, "lr": 3e-4}, "fresh_test_set": True,
        "retention": {"keep_last": 1, "test_set_max_age_days": 30},
        "training": {"epochs": 10, "batch_size": 128, "lr": 3e-3},
        "model": {"hidden_width": 32},
        "validation": {"n_samples": 500, "chunk_size": 500, "laws": LAW, "max_sw_ratio": 50,
                       "max_kl": 0.5, "kl_samples": 500},
        "execution": {"workers": 0}, **extra})


@pytest.fixture(scope="module")
def nights(prefect_harness, private_data_root):
    """Two nights in a row (2000 -> 3000 particles, the cap here), then a stale test set and
    a third night at the cap."""
    runs = [pipeline_flow(nightly(fresh_seed=100 + i, grow_to=3000)) for i in range(2)]
    stale = private_data_root / "datasets" / "ou-stale-test.zarr"
    group = zarr.open_group(stale, mode="w", zarr_format=3)
    old = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    group.attrs["prnf"] = {"role": "test", "created_at": old}
    runs.append(pipeline_flow(nightly(fresh_seed=200, grow_to=3000)))
    return {"runs": runs, "stale": stale, "client": MlflowClient(
        tracking_uri=f"sqlite:///{private_data_root / 'mlflow.db'}")}


def test_training_data_grows_by_new_chunks_up_to_the_cap(nights):
    runs = nights["runs"]
    sizes = [open_dataset(r["dataset_path"]).n_particles for r in runs]
    assert sizes == [3000, 3000, 3000]  # one family store, at its cap now
    client = nights["client"]
    tags = [client.get_run(r["run_id"]).data.tags for r in runs]
    assert [t["data.n_particles"] for t in tags] == ["2000", "3000", "3000"]
    assert [t["data.chunks_added"] for t in tags] == ["0-1", "2-2", "none"]
    assert len({t["data.family_id"] for t in tags}) == 1
    assert len({r["dataset_path"] for r in runs}) == 1
    assert [t["mlflow.runName"].split("-", 5)[-1] for t in tags] == [
        "new-2k", "grow-3k", "at-cap-3k"]
    store = open_dataset(runs[0]["dataset_path"])
    assert [g["n_particles"] for g in store.growth] == [2000, 3000]


def test_challengers_warm_start_from_the_champion_and_say_so(nights):
    client = nights["client"]
    notes = [client.get_run(r["run_id"]).data.tags["warm_start"] for r in nights["runs"]]
    assert notes[0].startswith("from scratch (") and "no champion" in notes[0]
    assert all(n.startswith("warm start from champion v") for n in notes[1:]), notes


def test_fresh_and_fixed_test_sets_are_both_recorded(nights):
    client = nights["client"]
    for r in nights["runs"]:
        tags = client.get_run(r["run_id"]).data.tags
        assert tags["fresh_seed"] == str(r["fresh_seed"])
        assert r["regression_score"] is not None
    validate = client.search_runs(
        [nights["runs"][0]["experiment_id"]],
        f"tags.`mlflow.parentRunId` = '{nights['runs'][1]['run_id']}' "
        "and tags.`prnf.step` = 'validate'")[0].data
    assert {"val.gaussian.kl", "regression.val.gaussian.kl"} <= set(validate.metrics)
    assert validate.tags["test_set.gaussian"] != validate.tags["regression/test_set.gaussian"]


def test_no_duplicates_and_at_most_k_plus_two_versions(nights):
    client = nights["client"]
    name = nights["runs"][0]["registered_model"]
    versions = client.search_model_versions(f"name = '{name}'")
    digests = [v.tags["weights_sha256"] for v in versions]
    assert len(digests) == len(set(digests))
    assert len(versions) <= 1 + 2
    aliases = client.get_registered_model(name).aliases
    kept = {v.version for v in versions}
    assert aliases["champion"] in kept


def test_champion_kl_on_the_fixed_set_improves_or_the_champion_is_kept(nights):
    first, third = nights["runs"][0], nights["runs"][2]
    assert first["promoted"]
    kl1 = first["champion_after_regression_score"]
    kl3 = third["champion_after_regression_score"]
    se = (first["champion_after_regression_score_stderr"] ** 2
          + third["champion_after_regression_score_stderr"] ** 2) ** 0.5
    promoted_since = any(r["promoted"] for r in nights["runs"][1:3])
    assert kl3 < kl1 or (not promoted_since and abs(kl3 - kl1) <= 2 * se), (kl1, kl3, se)


def test_health_series_has_one_point_per_run(nights):
    client = nights["client"]
    name = nights["runs"][0]["registered_model"]
    run_id = health.health_run(client, nights["runs"][0]["experiment_id"], name)
    points = client.get_metric_history(run_id, health.POINT_METRIC)
    assert sorted(p.step for p in points) == [0, 1, 2]
    assert [r["health"]["point"] for r in nights["runs"]] == [0, 1, 2]


def test_retention_removes_old_test_sets_but_keeps_the_fixed_ones(nights):
    assert not nights["stale"].exists()
    last = nights["runs"][-1]
    assert last["retention"]["test_sets_deleted"] == [str(nights["stale"].resolve())]
    for key, path in _fixed_sets(nights).items():
        assert Path(path).exists(), key


def _fixed_sets(nights) -> dict[str, str]:
    client = nights["client"]
    tags = client.get_model_version(nights["runs"][0]["registered_model"],
                                    client.get_registered_model(
                                        nights["runs"][0]["registered_model"]
                                    ).aliases["champion"]).tags
    root = data_root() / "datasets"
    return {k: str(next(root.glob(f"ou-{v}.zarr"))) for k, v in tags.items()
            if k.startswith("regression/test_set.")}


def test_run_names_say_what_the_run_did():
    plan = TrainingPlan(path="p", n_particles=40_000, chunk_size=5000, n_before=20_000,
                        family_id="f", seed=0)
    day = datetime(2026, 12, 1).date()
    assert run_name("ou", plan, day) == "ou-night-2026-12-01-grow-40k"
    capped = TrainingPlan(path="p", n_particles=80_000, chunk_size=5000, n_before=80_000,
                          family_id="f", seed=0)
    assert run_name("ou", capped, day) == "ou-night-2026-12-01-at-cap-80k"
    fixed = TrainingPlan(path="p", n_particles=20_000, chunk_size=5000, n_before=0,
                         family_id=None, seed=0)
    assert run_name("ou", fixed, day) == "ou-run-2026-12-01-fixed-20k"


@pytest.mark.parametrize(("change", "message"), [
    ({"grow_to": 4500}, "grow_to: 4500 is not a whole number of chunks"),
    ({"grow_to": 1000}, "grow_to: 1000 is below n_train=2000"),
    ({"grow_to": None, "grow_by": 1000}, "grow_by: only used with grow_to"),
])
def test_growth_settings_are_checked_before_any_work(change, message):
    with pytest.raises(ValueError, match=message):
        nightly(**change)


def test_plan_of_a_new_family_starts_at_n_train(tmp_path, monkeypatch):
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path))
    params = nightly()
    plan = plan_training_set(params.training_dataset().on_device("cpu"), 4000, 1000)
    assert (plan.n_particles, plan.n_before, plan.action) == (2000, 0, "new-2k")
    assert Path(plan.path).name.startswith("ou-family-")


def test_the_same_run_twice_registers_one_version(prefect_harness, private_data_root, tmp_path):
    """The scenario of issue 13: the main job, then the same pipeline again. The second run
    does not train again (a version was trained on the same data with the same settings and
    start), says so, and registers nothing; a copy of the weights would not be registered
    either (the weights digest)."""
    same = nightly(grow_to=None, grow_by=None, warm_start=False, fresh_test_set=False,
                   retention=None, t_end=0.5)  # another fingerprint: its own registered model
    first, second = pipeline_flow(same), pipeline_flow(same)
    assert first["version"] == "1" and first["duplicate_of"] is None
    assert second["version"] is None and second["duplicate_of"] == "1"
    assert second["decision"] == ("not registered: identical to v1 (not trained again: the same "
                                  "data, settings and start weights)")
    assert second["model_dir"] == first["model_dir"]  # scored, not retrained
    client = MlflowClient(tracking_uri=f"sqlite:///{private_data_root / 'mlflow.db'}")
    name = first["registered_model"]
    assert [str(v.version) for v in client.search_model_versions(f"name = '{name}'")] == ["1"]
    tags = client.get_run(second["run_id"]).data.tags
    assert tags["duplicate_of"] == "1" and tags["trained_before"] == "1"
    assert tags["mlflow.runName"].startswith("ou-run-")
    assert client.search_runs([second["experiment_id"]],
                              f"tags.`mlflow.parentRunId` = '{second['run_id']}' "
                              "and tags.`prnf.step` = 'train'") == []

    copy = tmp_path / "copy"
    shutil.copytree(first["model_dir"], copy)
    assert str(registry.same_weights(client, name, copy).version) == "1"
    assert registry.same_weights(client, name, first["model_dir"]) is None  # itself: reused
