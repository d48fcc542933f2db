"""Retention: pruning model versions (real MLflow, sqlite + local artifacts) and test sets."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pydantic
import pytest
import zarr
from mlflow.utils.file_utils import local_file_uri_to_path
from tiny_models import save_tiny_bm1d_model

from flows.config import RetentionConfig
from tasks import registry, tracking
from tasks.pyfunc import log_surrogate
from tasks.retention import prune_registry, prune_test_sets

NAME = "prnf-retention-test"


@pytest.fixture
def client(tmp_path, monkeypatch):
    """A fresh embedded tracking store (sqlite, artifacts on disk) under a temporary data root."""
    monkeypatch.setenv("PRNF_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    yield tracking.configure()
    mlflow.set_tracking_uri(previous[0])
    mlflow.set_registry_uri(previous[1])


def register_versions(client, tmp_path: Path, n: int, shared_dir: dict[int, int] | None = None
                      ) -> dict[int, str]:
    """Versions 1..n, each from its own tiny model directory (or, per ``shared_dir``
    {version: other}, registering the other version's directory and logged model again)."""
    experiment = tracking.experiment_id(client, "bm1d")
    uris: dict[int, str] = {}
    for i in range(1, n + 1):
        with tracking.child_run(client, experiment, f"v{i}", None) as run_id:
            if shared_dir and i in shared_dir:
                uri = uris[shared_dir[i]]
                version = client.create_model_version(
                    NAME, uri, run_id=run_id, model_id=uri.removeprefix("models:/"),
                    tags={"model_dir": str(tmp_path / f"model-{shared_dir[i]}")}).version
            else:
                model_dir = save_tiny_bm1d_model(tmp_path / f"model-{i}", seed=i)
                uri = log_surrogate(model_dir, run_id, np.zeros((3, 1)))
                version = registry.register(client, uri, NAME, run_id, {"i": i})
        assert version == str(i) or int(version) == i
        uris[i] = uri
    return uris


def artifact_dir(client, uri: str) -> Path:
    model_id = uri.removeprefix("models:/")
    return Path(local_file_uri_to_path(client.get_logged_model(model_id).artifact_location))


def live_versions(client) -> set[int]:
    return {int(v.version) for v in client.search_model_versions(f"name = '{NAME}'")}


def test_prune_keeps_champion_challenger_and_the_last_k(client, tmp_path):
    uris = register_versions(client, tmp_path, 7)
    client.set_registered_model_alias(NAME, registry.CHAMPION, "2")
    client.set_registered_model_alias(NAME, registry.CHALLENGER, "7")
    dirs = {i: artifact_dir(client, uri) for i, uri in uris.items()}
    assert all((d / "MLmodel").is_file() for d in dirs.values())

    report = prune_registry(client, NAME, keep_last=2)

    assert live_versions(client) == {2, 6, 7}
    assert [r["version"] for r in report] == ["1", "3", "4", "5"]
    for entry in report:
        i = int(entry["version"])
        assert entry["model_id"] == uris[i].removeprefix("models:/")
        assert entry["model_dir"] == os.path.abspath(tmp_path / f"model-{i}")
        assert entry["deleted"] == ["version", "artifacts", "logged_model", "model_dir"]
        assert entry["skipped"] == []
        assert not dirs[i].exists() and not dirs[i].parent.exists()  # no files left behind
        assert not (tmp_path / f"model-{i}").exists()
        with pytest.raises(mlflow.exceptions.MlflowException):
            client.get_logged_model(entry["model_id"])  # deleted (MLflow: soft delete)
    for i in (2, 6, 7):
        assert (dirs[i] / "MLmodel").is_file() and (tmp_path / f"model-{i}" / "weights.pt").exists()
    assert not list((tmp_path / "model-1").parent.glob(".*deleting"))

    champion = client.get_model_version_by_alias(NAME, registry.CHAMPION)
    assert str(champion.version) == "2"
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    assert model.predict(np.zeros((4, 1)), params={"seed": 1}).shape == (4, 1)
    assert prune_registry(client, NAME, keep_last=2) == []  # nothing more to do


def test_prune_never_deletes_what_the_champion_uses(client, tmp_path):
    # v3 is the champion's logged model and directory registered again (e.g. by hand)
    register_versions(client, tmp_path, 4, shared_dir={3: 1})
    client.set_registered_model_alias(NAME, registry.CHAMPION, "3")
    report = prune_registry(client, NAME, keep_last=1)
    assert live_versions(client) == {3, 4}
    assert {r["version"]: r["deleted"] for r in report} == {
        "1": ["version"], "2": ["version", "artifacts", "logged_model", "model_dir"]}
    skipped = next(r["skipped"] for r in report if r["version"] == "1")
    assert len(skipped) == 2 and all("champion v3" in s for s in skipped)
    assert (tmp_path / "model-1" / "weights.pt").is_file()
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    assert model.predict(np.zeros((2, 1))).shape == (2, 1)


def test_prune_leaves_a_directory_holding_other_weights(client, tmp_path):
    register_versions(client, tmp_path, 2)
    save_tiny_bm1d_model(tmp_path / "model-1", seed=99)  # retrained in place, not registered
    (report,) = prune_registry(client, NAME, keep_last=1, delete_model_dirs=True)
    assert report["deleted"] == ["version", "artifacts", "logged_model"]
    assert "other weights" in report["skipped"][0]
    assert (tmp_path / "model-1" / "weights.pt").is_file()


def test_prune_of_an_unknown_model_does_nothing(client):
    assert prune_registry(client, "prnf-nothing-here", keep_last=1) == []


def make_store(root: Path, name: str, **prnf: str) -> str:
    path = root / "datasets" / f"{name}.zarr"
    group = zarr.open_group(path, mode="w", zarr_format=3)
    group.attrs["prnf"] = {"dataset_id": name, **prnf}
    group.create_array("xT", shape=(4, 1), dtype="f8")[:] = np.ones((4, 1))
    return str(path.absolute())


def test_prune_test_sets_by_role_age_and_keep(tmp_path, monkeypatch):
    now = datetime(2025, 6, 30, 12, tzinfo=UTC)
    old = (now - timedelta(days=20)).isoformat().replace("+00:00", "Z")
    new = (now - timedelta(days=3)).isoformat()
    stores = {
        "old_test": make_store(tmp_path, "old-test", role="test", created_at=old),
        "new_test": make_store(tmp_path, "new-test", role="test", created_at=new),
        "regression": make_store(tmp_path, "regression", role="test", created_at=old),
        "train": make_store(tmp_path, "old-train", role="train", created_at=old),
        "legacy": make_store(tmp_path, "legacy"),  # no role, no created_at
        "bad_time": make_store(tmp_path, "bad-time", role="test", created_at="last week"),
    }
    deleted = prune_test_sets(tmp_path / "datasets", 14, keep={stores["regression"]}, now=now)
    assert deleted == [stores["old_test"]]
    assert not Path(stores["old_test"]).exists()
    assert all(Path(p).is_dir() for k, p in stores.items() if k != "old_test")
    assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == sorted(
        Path(p).name for k, p in stores.items() if k != "old_test")  # no hidden leftovers
    # everything older than a day, keep by a relative spelling of the path
    monkeypatch.chdir(tmp_path)
    deleted = prune_test_sets(tmp_path / "datasets", 1, keep={"datasets/regression.zarr"},
                              now=now)
    assert deleted == [stores["new_test"]]
    assert prune_test_sets(tmp_path / "nowhere", 0, keep=set()) == []


def test_retention_config_form():
    config = RetentionConfig()
    assert (config.keep_last, config.test_set_max_age_days, config.delete_model_dirs) == (
        5, 14, True)
    assert RetentionConfig(test_set_max_age_days=None).test_set_max_age_days is None
    for bad in ({"keep_last": 0}, {"test_set_max_age_days": -1}, {"keep_lats": 3}):
        with pytest.raises(pydantic.ValidationError):
            RetentionConfig(**bad)
    fields = RetentionConfig.model_json_schema()["properties"]
    assert all(field.get("description") for field in fields.values())
