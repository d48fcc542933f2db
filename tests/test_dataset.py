"""The Zarr dataset layout, ids, completion records, resume and order independence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import zarr

from prnf_core import (
    SDE,
    ConfigError,
    DatasetConfig,
    DatasetMismatchError,
    IncompleteDatasetError,
    NonFiniteStateError,
    create_dataset,
    open_dataset,
    run_dataset,
)
from prnf_core.dataset import simulate_and_write_chunk


def small_config(**overrides) -> DatasetConfig:
    base = dict(problem="ou", n_particles=1000, chunk_size=300, t_end=0.2, dt=0.01, seed=7)
    return DatasetConfig(**{**base, **overrides})


def assert_same_data(a, b) -> None:
    for name in ("x0", "xT"):
        np.testing.assert_array_equal(a.load(name), b.load(name))


def test_layout_and_attributes(tmp_path):
    cfg = small_config(save_times=[0.0, 0.1, 0.2])
    ds = create_dataset(cfg, tmp_path / "d.zarr")
    assert cfg.n_chunks == 4
    assert ds.missing_chunks() == [0, 1, 2, 3] and not ds.is_complete
    group = zarr.open_group(str(tmp_path / "d.zarr"), mode="r")
    assert group["x0"].shape == (1000, 2) and group["x0"].chunks == (300, 2)
    assert group["snapshots"].shape == (3, 1000, 2)
    assert group["x0"].compressors, "particle arrays must be compressed"
    meta = group.attrs["prnf"]
    json.dumps(meta)  # plain JSON only
    assert meta["dataset_id"] == cfg.dataset_id()
    assert meta["schema_version"] == 3 and meta["package_version"]
    assert meta["config"]["noise_generator"] == meta["resolved_config"]["noise_generator"]
    assert meta["resolved_config"]["problem_params"]["A"] == [[1.0, 0.5], [-0.5, 1.0]]
    assert meta["resolved_config"]["initial"] == {"kind": "uniform", "low": [-2.0, -2.0],
                                                  "high": [2.0, 2.0]}
    assert meta["complete"] is False


def test_incomplete_dataset_cannot_be_read(tmp_path):
    ds = create_dataset(small_config(), tmp_path / "d.zarr")
    simulate_and_write_chunk(ds.path, 1)
    ds = open_dataset(ds.path)
    assert ds.missing_chunks() == [0, 2, 3]
    with pytest.raises(IncompleteDatasetError, match="3 of 4 chunks missing"):
        ds.load("xT")
    with pytest.raises(IncompleteDatasetError):
        ds.to_dask()
    partial = ds.load("xT", allow_partial=True)
    assert np.isnan(partial[:300]).all() and np.isfinite(partial[300:600]).all()


def test_run_complete_and_readers(tmp_path):
    cfg = small_config(save_times=[0.0, 0.2])
    summary = run_dataset(cfg, tmp_path / "d.zarr")
    assert summary.complete and summary.chunks_simulated == 4
    ds = open_dataset(summary.path)
    assert ds.is_complete and ds.meta["complete"] is True
    x0, xT = ds.pairs()
    assert x0.shape == xT.shape == (1000, 2) and np.isfinite(xT).all()
    assert ((x0 >= -2) & (x0 <= 2)).all()
    snaps = ds.load("snapshots")
    np.testing.assert_array_equal(snaps[0], x0)
    np.testing.assert_array_equal(snaps[-1], xT)
    lazy = ds.to_dask("xT")
    assert lazy.chunks[0] == (300, 300, 300, 100)
    np.testing.assert_array_equal(lazy.compute(), xT)


def test_dataset_id_depends_on_content_only():
    a, b = small_config(), small_config()
    assert a.dataset_id() == b.dataset_id()
    assert small_config(seed=8).dataset_id() != a.dataset_id()
    assert small_config(problem_params={"dim": 2}).dataset_id() == a.dataset_id()  # default
    assert small_config(dtype="float32").dataset_id() != a.dataset_id()


def test_reopen_with_other_config_is_refused_and_keeps_data(tmp_path):
    path = tmp_path / "d.zarr"
    run_dataset(small_config(), path)
    before = open_dataset(path).load("xT")
    with pytest.raises(DatasetMismatchError, match=r"seed: stored 7, requested 8"):
        create_dataset(small_config(seed=8), path)
    with pytest.raises(DatasetMismatchError, match="n_particles"):
        run_dataset(small_config(n_particles=999), path)
    np.testing.assert_array_equal(open_dataset(path).load("xT"), before)


def test_refuses_to_overwrite_foreign_content(tmp_path):
    afile = tmp_path / "file.zarr"
    afile.write_text("not a store")
    with pytest.raises(DatasetMismatchError, match="not a Zarr group"):
        create_dataset(small_config(), afile)
    assert afile.read_text() == "not a store"
    foreign = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w")
    foreign.create_array("data", shape=(3,), dtype="f8")
    with pytest.raises(DatasetMismatchError, match="not a prnf dataset"):
        create_dataset(small_config(), tmp_path / "foreign.zarr")


def test_chunks_are_order_independent_and_resume_is_bit_identical(tmp_path):
    cfg = small_config()
    reference = open_dataset(run_dataset(cfg, tmp_path / "ref.zarr").path)
    # Another store filled in reverse order, interrupted after two chunks, then resumed.
    path = str(tmp_path / "resumed.zarr")
    create_dataset(cfg, path)
    for index in (3, 1):
        simulate_and_write_chunk(path, index)
    summary = run_dataset(cfg, path)
    assert summary.chunks_simulated == 2 and summary.chunks_already_done == 2
    assert_same_data(reference, open_dataset(path))


def test_dask_workers_give_bit_identical_data(tmp_path, dask_client_2):
    cfg = small_config(n_particles=2000, chunk_size=250)
    sequential = open_dataset(run_dataset(cfg, tmp_path / "seq.zarr").path)
    progress = []
    summary = run_dataset(cfg, tmp_path / "dask.zarr", client=dask_client_2,
                          progress=lambda done, total: progress.append((done, total)))
    assert summary.complete and summary.chunks_simulated == 8
    assert progress[0] == (0, 8) and progress[-1] == (8, 8)
    assert_same_data(sequential, open_dataset(summary.path))


def _exploding(threshold_step: int) -> SDE:
    def drift(x, t, p):
        # Particles with x0 > 0 blow up once t passes the threshold.
        b = torch.zeros_like(x)
        if t >= threshold_step * 0.01:
            b[x[:, 0] > 0] = float("inf")
        return b

    return SDE(name="exploding", dim=1, drift=drift,
               diffusion=lambda x, t, p: torch.zeros(1, dtype=x.dtype), noise="additive",
               t_end=0.1, dt=0.01, domain=([-1.0], [1.0]))


def test_non_finite_chunk_is_reported_and_never_stored(tmp_path, monkeypatch):
    import prnf_core.problems

    monkeypatch.setitem(prnf_core.problems._REGISTRY, "exploding", _exploding)
    cfg = DatasetConfig(problem="exploding", problem_params={"threshold_step": 4},
                        n_particles=100, chunk_size=50)
    path = tmp_path / "boom.zarr"
    with pytest.raises(NonFiniteStateError, match=r"chunk 0, step 5 .*of 50 particles") as info:
        run_dataset(cfg, path)
    assert info.value.chunk == 0 and 0 < info.value.n_bad < 50
    ds = open_dataset(path)
    assert ds.missing_chunks() == [0, 1] and not ds.is_complete
    assert np.isnan(ds.load("xT", allow_partial=True)).all()


def test_write_chunk_refuses_non_finite(tmp_path):
    ds = create_dataset(small_config(), tmp_path / "d.zarr")
    bad = np.full((300, 2), np.nan)
    with pytest.raises(ValueError, match="non-finite"):
        ds.write_chunk(0, np.zeros((300, 2)), bad, None)
    assert ds.missing_chunks() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"n_particles": 0}, "n_particles"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"dt": 0.0}, "dt"),
        ({"dt": -0.1}, "dt"),
        ({"t_end": 0.0}, "t_end"),
        ({"t_end": 0.205}, "t_end"),
        ({"problem": "nope"}, "known problems"),
        ({"problem_params": {"bogus": 1}}, "allowed"),
        ({"initial": {"kind": "gaussian", "mean": [0.0], "std": [1.0]}}, "dimension 1"),
        ({"initial": {"kind": "weird"}}, "allowed"),
        ({"save_times": [0.5]}, "save_times"),
        ({"dtype": "float16"}, "dtype"),
    ],
)
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises((ConfigError, ValueError), match=field):
        small_config(**overrides)
