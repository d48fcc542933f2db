"""A model directory holds one run's state: checkpoints of other settings are refused, not resumed.

The CLI tests run the real `prnf train` (in-process, tiny datasets, a few epochs); the
``prnf_core`` tests train real models on small arrays.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import prefect.main  # noqa: F401  binds Prefect's log handler to stderr now, not to CliRunner's
import pytest
import torch
from typer.testing import CliRunner

from flows.cli import app
from prnf_core import DatasetConfig, run_dataset
from prnf_core.models import ModelConfig, build_model
from prnf_core.train import (
    CheckpointMismatchError,
    TrainConfig,
    fit,
    load_checkpoint,
    training_fingerprint,
    weights_digest,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """A complete 2-D OU dataset of 600 pairs (480 training pairs)."""
    cfg = DatasetConfig(problem="ou", n_particles=600, chunk_size=300, t_end=0.1)
    return str(run_dataset(cfg, tmp_path_factory.mktemp("data") / "ou.zarr").path)


def train(store: str, out: Path, *args: str):
    return runner.invoke(app, ["train", "--data", store, "--out", str(out), "--epochs", "2",
                               "--batch-size", "120", *args])


def weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "weights.pt", weights_only=True)


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_refuses_a_checkpoint_of_other_settings_and_restart_retrains(
        prefect_harness, store, tmp_path):
    out = tmp_path / "M"
    first = train(store, out, "--width", "16", "--lam", "100")
    assert first.exit_code == 0, first.output
    trained = weights(out)

    stale = train(store, out, "--width", "16", "--lam", "0", "--seed", "5")
    assert stale.exit_code == 2, stale.output
    message = " ".join(stale.output.split())  # the console wraps long lines
    assert "checkpoint.pt was written for training.lam=100.0, training.seed=0; not for " \
           "training.lam=0.0, training.seed=5" in message
    assert "--restart" in message
    assert same_weights(weights(out), trained), "nothing in the directory was touched"
    assert json.loads((out / "config.json").read_text())["training"]["lam"] == 100.0

    fresh = train(store, out, "--width", "16", "--lam", "0", "--seed", "5", "--restart")
    assert fresh.exit_code == 0, fresh.output
    meta = json.loads((out / "config.json").read_text())
    assert (meta["training"]["lam"], meta["training"]["seed"]) == (0.0, 5)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["resumed_epochs"] == 0
    assert not same_weights(weights(out), trained), "the lam=0 model is a new model"
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["training_fingerprint"] == meta["training_fingerprint"]
    assert state["training_fingerprint"]["fields"]["training.lam"] == 0.0


def test_cli_refuses_another_width_with_a_message_not_a_traceback(prefect_harness, store,
                                                                   tmp_path):
    out = tmp_path / "M"
    assert train(store, out, "--width", "16").exit_code == 0
    result = train(store, out, "--width", "8")
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    message = " ".join(result.output.split())
    assert "model.hidden_width=16; not for model.hidden_width=8" in message
    assert "size mismatch" not in message and "--restart" in message


def test_cli_same_settings_resume_without_training_more(prefect_harness, store, tmp_path):
    out = tmp_path / "M"
    assert train(store, out, "--width", "16").exit_code == 0
    trained, history = weights(out), (out / "history.json").read_text()
    steps = json.loads((out / "summary.json").read_text())["steps"]

    again = train(store, out, "--width", "16")
    assert again.exit_code == 0, again.output
    assert "2 resumed from the checkpoint" in " ".join(again.output.split())
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["resumed_epochs"], summary["epochs_run"], summary["steps"]) == (2, 2, steps)
    assert same_weights(weights(out), trained)
    assert (out / "history.json").read_text() == history


def test_cli_refuses_a_finished_model_without_its_checkpoint_and_an_old_checkpoint(
        prefect_harness, store, tmp_path):
    out = tmp_path / "M"
    assert train(store, out, "--width", "16").exit_code == 0
    checkpoint = torch.load(out / "checkpoint.pt", weights_only=True)
    (out / "checkpoint.pt").unlink()  # a finished model directory, its checkpoint removed
    result = train(store, out, "--width", "16", "--lam", "1")
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "output:" in message and "config.json was written for training.lam=100.0" in message

    del checkpoint["training_fingerprint"]  # the format written before fingerprints
    torch.save(checkpoint, out / "checkpoint.pt")
    result = train(store, out, "--width", "16")
    assert result.exit_code == 2, result.output
    assert "records no training fingerprint" in " ".join(result.output.split())

    result = train(store, out, "--width", "16", "--restart")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["resumed_epochs"] == 0


def pairs(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1, 1, (n, 1))
    return x0, x0 + rng.normal(0, 0.3, x0.shape)


def model():
    return build_model(ModelConfig(dim=1, hidden_width=8), seed=0)


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 60, "progress": False, **kw})


def test_fit_refuses_other_arrays_and_a_cosine_horizon_but_restarts(tmp_path):
    fit(model(), pairs(), config(), checkpoint_dir=tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r"written for data\.id='sha256:"):
        fit(model(), pairs(seed=1), config(), checkpoint_dir=tmp_path, resume=True)
    # cosine: the horizon sets every step's lr, so 2 epochs are not the start of 3
    with pytest.raises(CheckpointMismatchError, match=r"training\.epochs=2; not for "
                                                      r"training\.epochs=3"):
        fit(model(), pairs(), config(epochs=3), checkpoint_dir=tmp_path, resume=True)
    result = fit(model(), pairs(seed=1), config(), checkpoint_dir=tmp_path, resume=True,
                 restart=True)
    assert result.resumed_epochs == 0 and result.epochs_run == 2


def test_fingerprint_leaves_out_cosmetic_fields_and_the_preset_name():
    cfg = ModelConfig(dim=1, hidden_width=8)
    base, digest = training_fingerprint("id", cfg, config())
    _, same = training_fingerprint("id", cfg, config(progress=True, log_every=1, threads=2))
    assert same == digest
    _, other = training_fingerprint("id", cfg, config(lam=1.0))
    assert other != digest and base["training.lam"] == 100.0
    assert base["model.hidden_width"] == 8 and "training.progress" not in base


def test_a_stopped_early_run_resumes_without_another_epoch(tmp_path):
    # lr 0.3 overshoots: with patience 1 it stops well before the 10 epochs (at 5-6 on the
    # CPUs seen; where exactly depends on the CPU's rounding)
    cfg = config(epochs=10, lr=0.3, lr_schedule="constant", patience=1)
    first = fit(model(), pairs(), cfg, checkpoint_dir=tmp_path)
    assert first.stopped_early and first.epochs_run < 10
    again = fit(model(), pairs(), cfg, checkpoint_dir=tmp_path, resume=True)
    assert again.stopped_early and again.steps == first.steps
    assert len(again.history) == first.epochs_run


def test_generator_state_stays_a_cpu_byte_tensor_when_weights_go_to_another_device(tmp_path):
    """The CUDA resume path, exercised on the CPU: "meta" stands in for a GPU (both move
    tensors off the CPU). Not run on a GPU here."""
    fit(model(), pairs(), config(epochs=1), checkpoint_dir=tmp_path)
    path = tmp_path / "checkpoint.pt"
    naive = torch.load(path, map_location="meta", weights_only=True)  # what fit did before
    with pytest.raises(TypeError, match="ByteTensor"):
        torch.Generator().set_state(naive["generator"])

    state = load_checkpoint(path, "meta")
    assert state["generator"].device.type == "cpu"
    assert state["generator"].dtype == torch.uint8
    torch.Generator().set_state(state["generator"])
    assert {v.device.type for v in state["model"].values()} == {"meta"}
    assert {v.device.type for v in state["best_model"].values()} == {"meta"}


def test_a_cold_checkpoint_is_not_resumed_as_a_warm_start(tmp_path):
    cfg = config(epochs=2)
    fit(model(), pairs(), cfg, checkpoint_dir=tmp_path)
    start = model()
    x0, y = pairs()
    start.fit_normalization(x0, y)  # a warm start's weights come trained and normalized
    init = weights_digest(start.state_dict())
    with pytest.raises(CheckpointMismatchError, match=r"init\.weights"):
        fit(start, pairs(), config(epochs=3), checkpoint_dir=tmp_path, resume=True, init=init)
    assert weights_digest(start.state_dict()) == init  # refused before any step


def test_warm_start_refuses_another_architecture(tmp_path):
    from tiny_models import save_tiny_bm1d_model

    from prnf_core.errors import ConfigError
    from tasks.train import warm_start_state

    source = save_tiny_bm1d_model(tmp_path / "m")
    state = warm_start_state(source, ModelConfig(dim=1, hidden_width=8, x0_period=None))
    assert "fitted" in state and bool(state["fitted"])
    with pytest.raises(ConfigError, match="hidden_width: 8 != 16"):
        warm_start_state(source, ModelConfig(dim=1, hidden_width=16, x0_period=None))
