"""Training: every minibatch steps, determinism, checkpoints and resume, divergence, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prnf_core import DatasetConfig, run_dataset
from prnf_core.errors import ConfigError
from prnf_core.models import ModelConfig, build_model
from prnf_core.train import TrainConfig, TrainingDivergedError, fit, split_indices


def pairs(n: int = 1000, dim: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1, 1, (n, dim))
    return x0, 0.5 * x0 + rng.normal(0, 0.3, (n, dim))


def quick(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 3, "batch_size": 100, "progress": False, **kw})


def fresh(dim: int = 2, arch: str = "prnf"):
    return build_model(ModelConfig(architecture=arch, dim=dim, hidden_width=16), seed=0)


def test_every_minibatch_is_a_step_and_callbacks_fire():
    events = []
    result = fit(fresh(), pairs(), quick(log_every=1),
                 callbacks=[lambda kind, i, m: events.append((kind, i, m))])
    steps_per_epoch = math.ceil(800 / 100)  # 20% held out
    assert result.steps == 3 * steps_per_epoch == 24
    assert (result.n_train, result.n_val) == (800, 200)
    step_events = [e for e in events if e[0] == "step"]
    epoch_events = [e for e in events if e[0] == "epoch"]
    assert [e[1] for e in step_events] == list(range(1, 25))
    assert len(epoch_events) == 3
    for key in ("loss", "nll", "rev", "val_nll", "val_rev", "lr"):
        assert math.isfinite(epoch_events[-1][2][key])


def test_iterations_override_epochs_and_paper_preset():
    result = fit(fresh(), pairs(), quick(iterations=5))
    assert result.steps == 5
    paper = TrainConfig(preset="paper")
    assert (paper.iterations, paper.batch_size, paper.lam, paper.lr_milestones) == (
        30_000, 5000, 100.0, [3000])


def test_training_reduces_the_validation_nll():
    result = fit(fresh(), pairs(3000), quick(epochs=8, lr=3e-3))
    assert result.history[-1]["val_nll"] < result.history[0]["val_nll"] - 0.1


def test_deterministic_with_a_seed_on_cpu():
    weights = []
    for global_seed in (123, 456):
        torch.manual_seed(global_seed)  # global state must not matter: everything is seeded
        model = fresh()
        fit(model, pairs(), quick(seed=4))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)


def test_split_is_recorded_by_seed():
    a, b = split_indices(100, 0.2, 3)
    assert len(b) == 20 and not set(a) & set(b)
    np.testing.assert_array_equal(split_indices(100, 0.2, 3)[1], b)
    assert not np.array_equal(split_indices(100, 0.2, 4)[1], b)


def test_resume_from_checkpoint_matches_an_uninterrupted_run(tmp_path):
    data = pairs()
    full = fresh()
    fit(full, data, quick(epochs=4, lr_schedule="constant"))

    first = fresh()
    fit(first, data, quick(epochs=2, lr_schedule="constant"), checkpoint_dir=tmp_path)
    resumed = fresh()  # a new process would start from fresh weights
    result = fit(resumed, data, quick(epochs=4, lr_schedule="constant"),
                 checkpoint_dir=tmp_path, resume=True)
    assert result.epochs_run == 4 and len(result.history) == 4
    for p, q in zip(full.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_learning_rate_warm_up_multiplies_the_schedule():
    lrs = []
    fit(fresh(), pairs(), quick(epochs=2, lr=1e-2, warmup_steps=4, lr_schedule="constant",
                                log_every=1),
        callbacks=[lambda kind, i, m: lrs.append(m["lr"]) if kind == "step" else None])
    # the lr reported after step k is the one step k + 1 uses: (k + 1) / 4 of the base lr
    np.testing.assert_allclose(lrs[:5], [5e-3, 7.5e-3, 1e-2, 1e-2, 1e-2])


def test_weight_average_is_what_is_validated_and_kept():
    """With ``ema_decay`` the saved weights are the exponential average of the raw weights
    (recomputed here from a callback's view of every step), not the last raw weights."""
    decay = 0.8
    model = fresh()
    average = [p.detach().clone() for p in model.parameters()]

    def follow(kind, index, metrics):
        if kind == "step":
            for a, p in zip(average, model.parameters(), strict=True):
                a.mul_(decay).add_(p.detach(), alpha=1 - decay)

    result = fit(model, pairs(), quick(epochs=1, ema_decay=decay, log_every=1),
                 callbacks=[follow])
    assert result.best_epoch == 0
    for a, p in zip(average, model.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), a, rtol=1e-5, atol=1e-6)
    raw = fresh()
    fit(raw, pairs(), quick(epochs=1, log_every=1))
    assert not torch.equal(raw.forward_net.linears[0].weight, model.forward_net.linears[0].weight)


def test_resume_with_weight_average_matches_an_uninterrupted_run(tmp_path):
    data, settings = pairs(), {"lr_schedule": "constant", "ema_decay": 0.9}
    full = fresh()
    fit(full, data, quick(epochs=4, **settings))
    first = fresh()
    fit(first, data, quick(epochs=2, **settings), checkpoint_dir=tmp_path)
    resumed = fresh()
    fit(resumed, data, quick(epochs=4, **settings), checkpoint_dir=tmp_path, resume=True)
    for p, q in zip(full.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path):
    model = fresh()
    original = model.training_loss
    calls = {"n": 0}

    def poisoned(yn, ctx, lam):
        calls["n"] += 1
        loss, parts = original(yn, ctx, lam)
        return (loss * float("nan") if calls["n"] > 12 else loss), parts

    model.training_loss = poisoned  # the fault: a loss that turns NaN at step 13
    with pytest.raises(TrainingDivergedError, match=r"loss is nan at epoch 1, step 12"):
        fit(model, pairs(), quick(), checkpoint_dir=tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 0 and state["steps"] == 8
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_trains_from_a_dataset_store_and_refuses_a_dimension_mismatch(tmp_path):
    cfg = DatasetConfig(problem="ou", n_particles=600, chunk_size=300, t_end=0.1)
    path = run_dataset(cfg, tmp_path / "ou.zarr").path
    result = fit(fresh(dim=2), path, quick(epochs=1))
    assert result.n_train == 480
    with pytest.raises(ConfigError, match="dataset has dimension 2 but the model has dimension 3"):
        fit(fresh(dim=3), path, quick(epochs=1))


def test_bad_training_input():
    x0, y = pairs()
    with pytest.raises(ConfigError, match=r"data\.xT: contains NaN"):
        fit(fresh(), (x0, np.where(y > 0.9, np.nan, y)), quick())
    with pytest.raises(ConfigError, match="x0 has 1000 rows but xT has 999"):
        fit(fresh(), (x0, y[:-1]), quick())
    with pytest.raises(ConfigError, match="data: expected"):
        fit(fresh(), 42, quick())
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="val_fraction"):
        TrainConfig(val_fraction=1.0)
