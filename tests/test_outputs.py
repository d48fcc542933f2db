"""Outputs never destroy data: `prnf sample` over existing files and dataset stores, `prnf
reproduce`'s default directory, and URLs where only local paths work.

Real model directory (untrained, normalization fitted), real stores, the real CLI.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import prefect.main  # noqa: F401  binds Prefect's log handler to stderr now, not to CliRunner's
import pytest
import zarr
from tiny_models import save_tiny_bm1d_model
from typer.testing import CliRunner

from flows.cli import app
from prnf_core import ConfigError, DatasetConfig, open_dataset, run_dataset

POINT = '{"kind": "point_mass", "point": [0.0]}'


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """A bm1d model directory as the train flow saves one (normalization fitted, untrained)."""
    return save_tiny_bm1d_model(tmp_path_factory.mktemp("model") / "bm1d-tiny")


def sample(model: str, out: Path, *extra: str):
    return CliRunner().invoke(app, ["sample", "--model", model, "--initial", POINT, "-n", "10",
                                    "--out", str(out), *extra])


def store_bytes(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def test_sample_refuses_an_existing_npy(model_dir, prefect_harness, tmp_path):
    out = tmp_path / "s.npy"
    np.save(out, np.full((3, 1), 7.0))
    before = out.read_bytes()
    result = sample(model_dir, out)
    assert result.exit_code == 2, result.output
    assert "out:" in result.output and "--overwrite" in result.output
    assert out.read_bytes() == before


def test_sample_never_replaces_a_dataset_store(model_dir, prefect_harness, tmp_path):
    store = tmp_path / "train.zarr"
    run_dataset(DatasetConfig(problem="bm1d", n_particles=40, chunk_size=20, dt=0.05), store)
    x0, xT = open_dataset(store).pairs()
    before = store_bytes(store)
    for extra in ((), ("--overwrite",)):
        result = sample(model_dir, store, *extra)
        assert result.exit_code == 2, result.output
        assert "is a prnf dataset store" in " ".join(result.output.split())
    assert store_bytes(store) == before
    reopened = open_dataset(store)
    assert reopened.is_complete
    np.testing.assert_array_equal(reopened.pairs()[0], x0)
    np.testing.assert_array_equal(reopened.pairs()[1], xT)


def test_overwrite_replaces_a_previous_samples_output(model_dir, prefect_harness, tmp_path):
    for name in ("s.npy", "s.zarr"):
        out = tmp_path / name
        assert sample(model_dir, out).exit_code == 0
        assert sample(model_dir, out).exit_code == 2  # exists
        result = CliRunner().invoke(app, ["sample", "--model", model_dir, "--initial", POINT,
                                          "-n", "20", "--out", str(out), "--overwrite"])
        assert result.exit_code == 0, result.output
        xT = np.load(out) if name.endswith(".npy") else zarr.open_group(str(out), mode="r")["xT"]
        assert xT.shape == (20, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npy", "s.zarr"]  # no temporaries


def test_sample_overwrite_refuses_a_folder_that_is_not_a_samples_output(model_dir,
                                                                        prefect_harness,
                                                                        tmp_path):
    folder = tmp_path / "results.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    result = sample(model_dir, folder, "--overwrite")
    assert result.exit_code == 2 and "not a prnf samples output" in result.output
    assert (folder / "notes.txt").read_text() == "keep me"


def test_reproduce_writes_under_the_data_root_by_default(tmp_path, monkeypatch):
    from flows.reproduce import ReproduceParams

    monkeypatch.setenv("PRNF_DATA_ROOT", str(tmp_path / "data"))
    params = ReproduceParams(experiment="bm1d")
    assert params.output_path() == (tmp_path / "data").resolve() / "results"
    assert params.command_line() == "prnf reproduce bm1d --profile quick"  # re-runs the same
    committed = ReproduceParams(experiment="bm1d", output_dir=str(Path.cwd() / "docs/results"))
    assert committed.command_line().endswith("--output docs/results")


def test_simulate_refuses_an_unknown_url_scheme(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PRNF_DATA_ROOT", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["simulate", "--problem", "bm1d", "-n", "20",
                                      "--chunk-size", "10", "--workers", "0",
                                      "--out", "gs://bucket/x.zarr"])
    assert result.exit_code == 2, result.output
    assert "output: unsupported URL scheme gs://" in " ".join(result.output.split())
    # s3:// is a dataset store on object storage: here, one that cannot be reached
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with pytest.raises(ConfigError, match=r"object storage at http://127.0.0.1:9 is unreachable"):
        run_dataset(DatasetConfig(problem="bm1d", n_particles=20), "s3://bucket/x.zarr")
    assert not list(tmp_path.rglob("s3:*"))
    assert not (tmp_path / "data").exists()
