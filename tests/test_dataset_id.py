"""The dataset id fixes the bits: noise generator and samples-file content are part of it.

Real stores on disk, tiny real simulations (bm1d, a few hundred particles, 10 steps).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from pydantic import ValidationError

from prnf_core import ConfigError, DatasetConfig, DatasetMismatchError, open_dataset, run_dataset
from prnf_core.dataset import ATTR_KEY, create_dataset, simulate_and_write_chunk
from prnf_core.simulate import NoiseSource, noise_generator


def tiny(**overrides) -> DatasetConfig:
    base = dict(problem="bm1d", n_particles=200, chunk_size=100, dt=0.05, seed=3)
    return DatasetConfig(**{**base, **overrides})


def store_bytes(path: Path) -> dict[str, bytes]:
    """Every file of a store with its content: what "nothing was written" compares."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def test_generator_is_named_per_device_and_dtype_by_the_noise_source_itself():
    assert noise_generator("cpu", "float64") == "numpy-sfc64"
    assert noise_generator("cpu", "float32") == "torch-cpu"
    assert noise_generator("cuda", "float64") == "torch-cuda"
    assert noise_generator("cuda:1", "float32") == "torch-cuda"
    for dtype, name in ((torch.float64, "numpy-sfc64"), (torch.float32, "torch-cpu")):
        assert NoiseSource(0, dtype, torch.device("cpu")).generator == name
    with pytest.raises(ConfigError, match="device: simulation runs on cpu or cuda"):
        noise_generator("meta", "float64")


def test_generator_and_dtype_give_different_ids():
    cfg = tiny()
    cpu64, cpu32 = cfg.on_device("cpu"), tiny(dtype="float32").on_device("cpu")
    gpu64 = cfg.on_device("cuda")
    assert cpu64.resolved()["noise_generator"] == "numpy-sfc64"
    assert cpu32.resolved()["noise_generator"] == "torch-cpu"
    assert gpu64.resolved()["noise_generator"] == "torch-cuda"
    ids = {cpu64.dataset_id(), cpu32.dataset_id(), gpu64.dataset_id(),
           tiny(dtype="float32").on_device("cuda").dataset_id()}
    assert len(ids) == 4
    # Fixed in the config, the generator wins over the machine the id is computed on.
    assert tiny(noise_generator="torch-cuda").dataset_id() == gpu64.dataset_id()
    with pytest.raises(ValidationError, match="noise_generator: 'torch-cpu' is not the generator "
                                              "of float64 on cpu"):
        tiny(noise_generator="torch-cpu")


def test_store_records_its_generator_and_runs_on_its_device(tmp_path):
    summary = run_dataset(tiny(), tmp_path / "d.zarr", device="cpu")
    dataset = open_dataset(summary.path)
    assert dataset.meta["config"]["noise_generator"] == "numpy-sfc64"
    assert dataset.meta["resolved_config"]["noise_generator"] == "numpy-sfc64"
    assert summary.dataset_id == tiny().on_device("cpu").dataset_id()
    # Repairing a chunk with no device named uses the store's generator: the same bits.
    xT = dataset.load("xT")
    dataset.mark_not_done([1])
    simulate_and_write_chunk(summary.path, 1)
    np.testing.assert_array_equal(open_dataset(summary.path).load("xT"), xT)


def test_resume_with_another_generator_is_refused_and_writes_nothing(tmp_path):
    path = tmp_path / "d.zarr"
    create_dataset(tiny().on_device("cpu"), path)
    simulate_and_write_chunk(str(path), 0, "cpu")  # a partly simulated store
    before = store_bytes(path)
    with pytest.raises(DatasetMismatchError, match="simulated with noise generator 'numpy-sfc64' "
                                                   "but this run uses 'torch-cuda'"):
        run_dataset(tiny(), path, device="cuda")
    with pytest.raises(DatasetMismatchError, match="noise_generator: stored 'numpy-sfc64', "
                                                   "requested 'torch-cuda'; seed: stored 3"):
        run_dataset(tiny(seed=4), path, device="cuda")  # several differences: all listed
    with pytest.raises(ConfigError, match="noise_generator: the dataset uses 'numpy-sfc64' but "
                                          "device 'cuda'"):
        run_dataset(tiny().on_device("cpu"), path, device="cuda")
    with pytest.raises(ConfigError, match="noise_generator: the dataset uses 'numpy-sfc64'"):
        simulate_and_write_chunk(str(path), 1, "cuda")  # a worker told another device
    assert store_bytes(path) == before
    assert open_dataset(path).missing_chunks() == [1]


def test_editing_a_samples_file_in_place_changes_the_id_and_blocks_resume(tmp_path):
    npy = tmp_path / "x0.npy"
    np.save(npy, np.linspace(-1, 1, 50).reshape(-1, 1))
    cfg = tiny(initial={"kind": "samples_file", "path": str(npy)})
    first = cfg.dataset_id()
    assert cfg.resolved()["initial"] == {
        "kind": "samples_file", "content_sha256": hashlib.sha256(npy.read_bytes()).hexdigest()}
    path = tmp_path / "d.zarr"
    create_dataset(cfg, path)
    simulate_and_write_chunk(str(path), 0)
    before = store_bytes(path)

    np.save(npy, np.linspace(-1, 1, 50).reshape(-1, 1) + 0.5)  # same path, other rows
    assert cfg.dataset_id() != first
    with pytest.raises(DatasetMismatchError, match="content_sha256"):
        run_dataset(cfg, path)
    with pytest.raises(DatasetMismatchError, match="samples_file initial law changed"):
        simulate_and_write_chunk(str(path), 1)  # a worker of a run started before the edit
    assert store_bytes(path) == before


def test_same_samples_content_under_another_path_has_the_same_id(tmp_path):
    """Content only: a copy or a moved checkout reuses the store; the path is kept as info."""
    npy = tmp_path / "a" / "x0.npy"
    npy.parent.mkdir()
    np.save(npy, np.arange(10.0).reshape(-1, 1))
    copy = tmp_path / "b.npy"
    shutil.copy(npy, copy)
    a = tiny(initial={"kind": "samples_file", "path": str(npy)})
    b = tiny(initial={"kind": "samples_file", "path": str(copy), "expected_dim": 1})
    assert a.dataset_id() == b.dataset_id()
    run_dataset(a, tmp_path / "d.zarr")
    summary = run_dataset(b, tmp_path / "d.zarr")  # reuses the store
    assert summary.chunks_simulated == 0 and summary.complete
    assert open_dataset(summary.path).meta["config"]["initial"]["path"] == str(npy)


def test_store_of_the_previous_schema_reads_but_is_reported_as_another_configuration(tmp_path):
    path = tmp_path / "old.zarr"
    run_dataset(tiny(), path)
    x0, xT = open_dataset(path).pairs()
    group = zarr.open_group(str(path), mode="r+")
    meta = dict(group.attrs[ATTR_KEY])  # what a schema-2 prnf wrote: no generator anywhere
    meta["schema_version"] = 2
    meta["dataset_id"] = "0123456789abcdef"
    meta["config"] = {k: v for k, v in meta["config"].items() if k != "noise_generator"}
    meta["resolved_config"] = {k: v for k, v in meta["resolved_config"].items()
                               if k != "noise_generator"}
    group.attrs[ATTR_KEY] = meta
    before = store_bytes(path)

    old = open_dataset(path)
    assert old.is_complete and old.verify() == []
    np.testing.assert_array_equal(old.pairs()[1], xT)
    np.testing.assert_array_equal(old.pairs()[0], x0)
    with pytest.raises(DatasetMismatchError, match=r"schema version 2 .* another configuration"):
        run_dataset(tiny(), path)
    assert store_bytes(path) == before
