"""Dataset families: growing a store in place, crash-safe, equal to a store made at the new size."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import zarr

import prnf_core.dataset
from prnf_core import DatasetConfig, DatasetMismatchError, run_dataset
from prnf_core.dataset import ATTR_KEY, create_dataset, grow_dataset, open_dataset
from prnf_core.errors import StoreLockedError
from prnf_core.integrity import store_lock
from prnf_core.paths import default_family_path


def family_config(**overrides) -> DatasetConfig:
    base = dict(problem="bm1d", n_particles=200, chunk_size=100, dt=0.05, seed=3,
                save_times=[0.0, 0.25, 0.5])
    return DatasetConfig(**{**base, **overrides}).on_device("cpu")


def read_all(path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(path), mode="r")
    return {name: np.asarray(group[name][:]) for name in sorted(group.array_keys())}


def test_family_id_ignores_only_the_size(tmp_path, monkeypatch):
    small, large = family_config(), family_config(n_particles=400)
    assert small.family_id() == large.family_id() and len(small.family_id()) == 16
    int(small.family_id(), 16)
    assert small.dataset_id() != large.dataset_id()
    for other in (family_config(seed=4), family_config(chunk_size=50), family_config(dt=0.025),
                  family_config(save_times=None), family_config(problem_params={"mu": 2.0})):
        assert other.family_id() != small.family_id()
    monkeypatch.setenv("PRNF_DATA_ROOT", str(tmp_path))
    assert default_family_path("bm1d", small.family_id()) == (
        tmp_path / "datasets" / f"bm1d-family-{small.family_id()}.zarr")


def test_grown_store_equals_a_fresh_one_and_keeps_its_chunks(tmp_path):
    path = tmp_path / "family.zarr"
    small, large = family_config(), family_config(n_particles=400)
    ds = grow_dataset(small, path)  # absent: created
    assert ds.dataset_id == small.dataset_id() and ds.n_particles == 200
    assert run_dataset(small, path).complete
    before = read_all(path)

    grown = grow_dataset(large, path)
    assert grown.dataset_id == large.dataset_id() and grown.n_particles == 400
    assert grown.missing_chunks() == [2, 3] and not grown.is_complete
    assert grown.meta["complete"] is False and grown.verify() == []
    summary = run_dataset(large, path)
    assert summary.complete and summary.chunks_simulated == 2
    assert summary.chunks_already_done == 2 and summary.chunks_repaired == 0

    after = read_all(path)
    # The first two chunks were never rewritten: data, checksums, timings are bit-identical.
    np.testing.assert_array_equal(after["x0"][:200], before["x0"])
    np.testing.assert_array_equal(after["xT"][:200], before["xT"])
    np.testing.assert_array_equal(after["snapshots"][:, :200], before["snapshots"])
    for name in ("chunk_seconds", "x0_checksum", "xT_checksum", "snapshots_checksum"):
        np.testing.assert_array_equal(after[name][:2], before[name])
    assert (after["chunk_done"] == 1).all()

    fresh = open_dataset(run_dataset(large, tmp_path / "fresh.zarr").path)
    grown = open_dataset(path)
    assert grown.is_complete and grown.verify() == []
    assert grown.dataset_id == fresh.dataset_id
    for name in ("x0", "xT", "snapshots"):
        np.testing.assert_array_equal(grown.load(name), fresh.load(name))
    assert grown.meta["resolved_config"] == fresh.meta["resolved_config"]


def test_same_size_reopens_and_create_dataset_never_grows(tmp_path):
    path = tmp_path / "family.zarr"
    run_dataset(family_config(), path)
    before = read_all(path)
    again = grow_dataset(family_config(), path)
    assert again.is_complete and len(again.growth) == 1
    with pytest.raises(DatasetMismatchError, match="n_particles: stored 200, requested 400"):
        create_dataset(family_config(n_particles=400), path)
    after = read_all(path)
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value)


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        ({}, {"seed": 4, "n_particles": 400}, "dataset family.*seed: stored 3, requested 4"),
        ({}, {"chunk_size": 50, "n_particles": 400},
         "chunk_size: stored 100, requested 50"),
        ({}, {"dt": 0.025, "n_particles": 400}, "dt: stored 0.05, requested 0.025"),
        ({}, {"problem_params": {"sigma": 2.0}}, "problem_params"),
        ({"n_particles": 400}, {"n_particles": 200},
         "holds 400 particles but 200 were requested; a store never shrinks"),
        ({"n_particles": 250}, {"n_particles": 400},
         "holds 250 particles, not a whole number of chunks of chunk_size 100"),
    ],
)
def test_refusals_name_the_reason_and_touch_nothing(tmp_path, first, second, message):
    path = tmp_path / "family.zarr"
    run_dataset(family_config(**first), path)
    before, meta = read_all(path), open_dataset(path).meta
    with pytest.raises(DatasetMismatchError, match=message):
        grow_dataset(family_config(**second), path)
    assert open_dataset(path).meta == meta
    after = read_all(path)
    assert after.keys() == before.keys()
    for name, value in before.items():
        np.testing.assert_array_equal(after[name], value)


def _interrupt_resize(monkeypatch):
    def killed(dataset, config):
        raise KeyboardInterrupt("killed between the attributes and the resize")

    monkeypatch.setattr(prnf_core.dataset, "_fit_arrays", killed)


@pytest.mark.parametrize("completed_by", ["grow_dataset", "run_dataset"])
def test_interrupted_growth_is_completed_by_the_next_call(tmp_path, monkeypatch, completed_by):
    small, large = family_config(), family_config(n_particles=400)
    reference = tmp_path / "uninterrupted.zarr"
    run_dataset(small, reference)
    grow_dataset(large, reference)
    run_dataset(large, reference)

    path = tmp_path / "family.zarr"
    run_dataset(small, path)
    with monkeypatch.context() as patch:
        _interrupt_resize(patch)
        with pytest.raises(KeyboardInterrupt):
            grow_dataset(large, path)
    half = open_dataset(path)  # the attributes say 400, the arrays still hold 200
    assert half.dataset_id == large.dataset_id() and half.meta["complete"] is False
    assert half.group["x0"].shape == (200, 1) and half.group["chunk_done"].shape == (2,)
    with pytest.raises(DatasetMismatchError, match="never shrinks"):
        grow_dataset(small, path)  # nothing is lost: the old size is simply refused

    if completed_by == "grow_dataset":
        repaired = grow_dataset(large, path)
        assert repaired.missing_chunks() == [2, 3]
    summary = run_dataset(large, path)
    assert summary.complete and summary.chunks_simulated == 2
    assert summary.chunks_already_done == 2

    done, expected = open_dataset(path), open_dataset(reference)
    assert done.dataset_id == expected.dataset_id and done.is_complete
    for name in ("x0", "xT", "snapshots"):
        np.testing.assert_array_equal(done.load(name), expected.load(name))
    got, want = read_all(path), read_all(reference)
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
    for name in ("chunk_done", "x0_checksum", "xT_checksum", "snapshots_checksum"):
        np.testing.assert_array_equal(got[name], want[name])
    assert [g["n_particles"] for g in done.growth] == [200, 400]


def test_half_resized_arrays_are_completed(tmp_path, monkeypatch):
    """A kill in the middle of the resize (some arrays grown, others not) is also repaired."""
    path = tmp_path / "family.zarr"
    run_dataset(family_config(), path)
    real_resize = zarr.Array.resize
    calls = []

    def resize_twice_then_die(self, shape):
        calls.append(self.path)
        if len(calls) > 2:
            raise KeyboardInterrupt("killed mid-resize")
        real_resize(self, shape)

    with monkeypatch.context() as patch:
        patch.setattr(zarr.Array, "resize", resize_twice_then_die)
        with pytest.raises(KeyboardInterrupt):
            grow_dataset(family_config(n_particles=400), path)
    shapes = {name: a.shape for name, a in read_all(path).items()}
    assert shapes["chunk_done"] == (4,) and shapes["x0"] == (200, 1)  # some grown, some not
    summary = run_dataset(family_config(n_particles=400), path)
    assert summary.complete and summary.chunks_simulated == 2
    fresh = open_dataset(run_dataset(family_config(n_particles=400), tmp_path / "f.zarr").path)
    np.testing.assert_array_equal(open_dataset(path).load("xT"), fresh.load("xT"))


def test_growth_log(tmp_path):
    path = tmp_path / "family.zarr"
    started = datetime.now(UTC) - timedelta(seconds=1)
    grow_dataset(family_config(), path)
    grow_dataset(family_config(n_particles=400), path)
    grow_dataset(family_config(n_particles=400), path)  # same size: no entry
    run_dataset(family_config(n_particles=400), path)  # a run does not log either
    ds = grow_dataset(family_config(n_particles=600), path)
    log = ds.meta["growth"]
    assert [(e["n_particles"], e["n_chunks"]) for e in log] == [(200, 2), (400, 4), (600, 6)]
    times = [datetime.fromisoformat(e["at"]) for e in log]
    assert all(t.utcoffset() == timedelta(0) for t in times)
    assert times == sorted(times) and started <= times[0] <= datetime.now(UTC)
    assert ds.growth == log


def test_created_at_and_role(tmp_path):
    started = datetime.now(UTC) - timedelta(seconds=1)
    plain = create_dataset(family_config(), tmp_path / "plain.zarr")
    assert plain.role is None and plain.meta["role"] is None
    assert started <= plain.created_at <= datetime.now(UTC)
    assert plain.growth[0]["n_particles"] == 200

    path = tmp_path / "train.zarr"
    ds = grow_dataset(family_config(), path, role="train")
    created = ds.created_at
    assert ds.role == "train" and created.tzinfo is not None
    run_dataset(family_config(), path)  # no role given: kept
    grown = grow_dataset(family_config(n_particles=400), path)
    assert grown.role == "train" and grown.created_at == created
    assert create_dataset(family_config(n_particles=400), path, role="test").role == "test"
    assert open_dataset(path).role == "test" and open_dataset(path).created_at == created


def test_older_store_without_the_new_attributes(tmp_path):
    path = tmp_path / "old.zarr"
    run_dataset(family_config(), path)
    group = zarr.open_group(str(path), mode="r+")
    meta = dict(group.attrs[ATTR_KEY])
    for key in ("created_at", "role", "growth"):
        del meta[key]
    group.attrs[ATTR_KEY] = meta
    old = open_dataset(path)
    assert old.created_at is None and old.role is None and old.growth == []
    assert old.is_complete and old.load("xT").shape == (200, 1)
    grown = grow_dataset(family_config(n_particles=400), path)
    assert grown.created_at is None
    assert [e["n_particles"] for e in grown.growth] == [400]
    assert run_dataset(family_config(n_particles=400), path).chunks_simulated == 2


def test_growth_waits_for_no_running_writer(tmp_path):
    path = tmp_path / "family.zarr"
    run_dataset(family_config(), path)
    with store_lock(path), pytest.raises(StoreLockedError):
        grow_dataset(family_config(n_particles=400), path)
    assert open_dataset(path).n_particles == 200
