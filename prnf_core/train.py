r"""Training a conditional surrogate on (x0, X_T) pairs.

Every minibatch of every epoch is a gradient step (the reference scripts computed the loss on
every minibatch but stepped only on the last one; that defect is not copied). The validation
split is drawn with a recorded seed; early stopping watches the validation NLL and the best
weights are restored at the end. A NaN/inf loss stops training with
:class:`TrainingDivergedError`; the last good checkpoint on disk is kept, and ``fit(...,
resume=True)`` continues from it.

A checkpoint records the :func:`training_fingerprint` of the run that wrote it (data, model and
the training settings that shape the weights). Resuming under other settings would put one
run's weights under another run's metadata, so it is refused with
:class:`CheckpointMismatchError` naming the fields that differ; ``restart=True`` discards the
checkpoint instead.

Metrics reach the outside world through callbacks ``callback(kind, index, metrics)`` with
``kind`` in ``{"step", "epoch"}``, so the MLflow layer can log them without ``prnf_core``
importing MLflow. Validation NLL is reported in physical units: :math:`-\frac1N\sum\log q(y\mid
x_0)`.

>>> import numpy as np
>>> from prnf_core.models import ModelConfig, build_model
>>> from prnf_core.train import TrainConfig, fit
>>> rng = np.random.default_rng(0)
>>> x0 = rng.uniform(-1, 1, (2000, 1)); y = x0 + 0.5 + rng.normal(0, 0.5, x0.shape)
>>> model = build_model(ModelConfig(dim=1, hidden_width=32), seed=0)
>>> config = TrainConfig(epochs=10, batch_size=128, lr=3e-3, progress=False)
>>> result = fit(model, (x0, y), config)
>>> len(result.history), result.best_val_nll < 0.85   # exact conditional entropy: 0.726
(10, True)
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from prnf_core.errors import ConfigError, PrnfError
from prnf_core.models.base import ConditionalSampler, ModelConfig, fill_from_preset, to_tensor

Callback = Callable[[str, int, dict[str, float]], None]


class TrainingDivergedError(PrnfError, FloatingPointError):
    """The loss became NaN/inf; the last good checkpoint (if any) is kept."""


class CheckpointMismatchError(ConfigError):
    """A checkpoint (or saved model) was written for other data, model or training settings."""


#: Values each preset gives to the fields the user did not set. Explicit values always win:
#: ``TrainConfig(preset="paper", epochs=5)`` trains 5 epochs, not the preset's iterations.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"iterations": 30_000, "batch_size": 5000, "lr": 1e-3, "lam": 100.0,
              "lr_schedule": "step", "lr_milestones": [3000], "lr_decay": 0.5},
}


class TrainConfig(BaseModel):
    """Optimization settings. ``preset="paper"`` = the paper's 3-D example (a GPU-sized run)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int | None = Field(
        30, ge=1, description="Passes over the training split. Given explicitly with a preset "
                              "that sets iterations, epochs win and the preset's iterations "
                              "are not applied.",
    )
    iterations: int | None = Field(
        None, ge=1, description="Gradient steps instead of epochs (overrides epochs)."
    )
    batch_size: int = Field(512, ge=1, description="Pairs per gradient step.")
    lr: float = Field(1e-3, gt=0, description="Adam learning rate.")
    lr_schedule: Literal["constant", "step", "cosine"] = Field(
        "cosine", description="constant; step (x lr_decay at lr_milestones); cosine annealing."
    )
    lr_milestones: list[int] = Field(
        default_factory=list, description="Steps at which 'step' multiplies the lr by lr_decay."
    )
    lr_decay: float = Field(0.5, gt=0, le=1, description="Factor of the 'step' schedule.")
    warmup_steps: int = Field(
        0, ge=0, description="Linear learning-rate warm-up over the first steps (0: none), "
                             "multiplying the schedule."
    )
    ema_decay: float | None = Field(
        None, gt=0, lt=1,
        description="Exponential moving average of the weights, updated every step with this "
                    "decay (e.g. 0.999) and used for validation, early stopping and the saved "
                    "model; None: the raw weights.",
    )
    lam: float = Field(100.0, ge=0, description="Reversibility weight λ (prnf).")
    val_fraction: float = Field(0.2, ge=0, lt=1, description="Share of pairs held out.")
    split_seed: int = Field(0, ge=0, description="Seed of the train/validation split.")
    seed: int = Field(0, ge=0, description="Seed of initialization and shuffling.")
    patience: int | None = Field(
        None, ge=1, description="Early stopping: epochs without validation improvement."
    )
    grad_clip: float | None = Field(10.0, gt=0, description="Max gradient norm (None: off).")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay.")
    log_every: int = Field(50, ge=1, description="Steps between 'step' callbacks.")
    progress: bool = Field(True, description="Show a progress bar.")
    threads: int | None = Field(
        1, ge=1,
        description="Torch CPU threads while training (None: torch's default). One thread is "
                    "fastest for CPU-sized models: measured 6 ms vs 74 ms per step with 2 "
                    "threads on a busy 2-core machine.",
    )
    torch_compile: bool = Field(
        False,
        description="Compile the training loss with torch.compile (any batch size, one "
                    "compile). Measured on one CPU thread at d=3, width 256, batch 512: "
                    "1.2x faster steps in float32 and float64 (1.1x at width 512, batch "
                    "5000), after a one-off compile of about 25 CPU s (2 s when the on-disk "
                    "cache of an earlier run with the same shapes applies): worth it for long "
                    "or repeated runs. Needs a C++ compiler on CPU.",
    )
    preset: Literal["paper"] | None = Field(
        None, description="'paper': 30,000 iterations, batch 5000, lr 1e-3 -> 5e-4 at 3000, "
                          "λ=100. Fills only the fields not given explicitly: an explicit "
                          "field (or explicit epochs, instead of the preset's iterations) wins, "
                          "in the CLI, YAML and the Prefect form alike.",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        return fill_from_preset(data, _preset_values)

    @model_validator(mode="after")
    def _has_length(self) -> TrainConfig:
        if self.epochs is None and self.iterations is None:
            raise ValueError("epochs: give epochs or iterations (both are None)")
        return self

    @classmethod
    def preset_fields(cls, preset: str | None) -> set[str]:
        """The fields a preset decides when they are not given: with ``iterations`` comes
        ``epochs`` (a default epochs count set alongside would cancel the preset's length)."""
        fields = set(TRAIN_PRESETS.get(preset or "", {}))
        return fields | {"epochs"} if "iterations" in fields else fields


def _preset_values(preset: str, given: dict[str, Any]) -> dict[str, Any]:
    """What ``preset`` contributes to an input that sets the keys in ``given``: only absent
    keys, and no ``iterations`` when ``epochs`` is given (explicit epochs win)."""
    values = dict(TRAIN_PRESETS.get(preset, {}))
    if given.get("epochs") is not None:
        values.pop("iterations", None)
    return {k: v for k, v in values.items() if k not in given}


@dataclass
class FitResult:
    """What training did: per-epoch history, best validation NLL, where it stopped."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_val_nll: float = math.inf
    best_epoch: int = -1
    epochs_run: int = 0
    steps: int = 0
    stopped_early: bool = False
    seconds: float = 0.0
    n_train: int = 0
    n_val: int = 0
    resumed_epochs: int = 0  # epochs taken over from the checkpoint (0: trained from scratch)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "history"}


def training_pairs(data: Any) -> tuple[np.ndarray, np.ndarray]:
    """(x0, xT) from a dataset, a store path, or an ``(x0, xT)`` tuple of arrays."""
    from prnf_core.dataset import Dataset, open_dataset

    if isinstance(data, str | Path):
        data = open_dataset(data)
    if isinstance(data, Dataset):
        return data.pairs()
    if isinstance(data, tuple | list) and len(data) == 2:
        return np.asarray(data[0]), np.asarray(data[1])
    raise ConfigError(f"data: expected a Dataset, a store path or (x0, xT); got {type(data)}")


#: TrainConfig fields that never change the weights (beyond rounding): display, logging, CPU
#: threads, torch.compile, and the preset's name (the values it gave are in the other fields).
COSMETIC_TRAINING_FIELDS = frozenset({"progress", "log_every", "threads", "preset",
                                      "torch_compile"})
#: Fields that only say where training stops. They enter the fingerprint only where they also
#: shape the steps before (the cosine schedule's horizon), so that a finished run with a
#: constant or step schedule can be continued for more epochs, bit-identical to a longer run.
STOPPING_FIELDS = frozenset({"epochs", "iterations", "patience"})


def data_id(data: Any, pairs: tuple[np.ndarray, np.ndarray] | None = None) -> str:
    """The identity of training data: a store's dataset id, else a hash of the arrays' bytes
    (with shapes and dtypes), so a checkpoint can tell whether it was trained on the same data."""
    from prnf_core.dataset import Dataset, open_dataset

    if isinstance(data, str | Path):
        data = open_dataset(data)
    if isinstance(data, Dataset):
        return data.dataset_id
    digest = hashlib.sha256()
    for array in pairs if pairs is not None else training_pairs(data):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        digest.update(array.tobytes())
    return "sha256:" + digest.hexdigest()[:16]


def training_fingerprint(data: str, model: ModelConfig, training: TrainConfig
                         ) -> tuple[dict[str, Any], str]:
    """The settings that determine a run's weights, as flat ``{"field": value}`` and a hash.

    Args:
        data: The data's identity (:func:`data_id`: a dataset id or an array hash).
        model: The resolved :class:`~prnf_core.models.ModelConfig` (``dim`` set); every field
            but ``preset`` shapes the network.
        training: The :class:`TrainConfig`; :data:`COSMETIC_TRAINING_FIELDS` are left out, and
            :data:`STOPPING_FIELDS` unless the cosine schedule makes the horizon matter.
    """
    fields: dict[str, Any] = {"data.id": data}
    fields.update({f"model.{k}": v for k, v in
                   model.model_dump(mode="json", exclude={"preset"}).items()})
    trained = training.model_dump(mode="json",
                                  exclude=set(COSMETIC_TRAINING_FIELDS | STOPPING_FIELDS))
    if training.lr_schedule == "cosine":  # T_max = total steps: the lr of every step
        length = "iterations" if training.iterations is not None else "epochs"
        trained[length] = getattr(training, length)
    fields.update({f"training.{k}": v for k, v in trained.items()})
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return fields, digest


def check_fingerprint(recorded: Any, fields: dict[str, Any], field: str, source: str) -> None:
    """Refuse to continue from ``source`` unless it was written for ``fields``.

    Raises:
        CheckpointMismatchError: naming every field that differs, or saying that ``source``
            records no fingerprint (written before fingerprints existed).
    """
    advice = "pass --restart (restart=True) to discard it and train from scratch"
    old = recorded.get("fields") if isinstance(recorded, dict) else None
    if not isinstance(old, dict):
        raise CheckpointMismatchError(
            f"{field}: {source} records no training fingerprint (written by an older prnf), so "
            f"it cannot be checked against these settings; {advice}")
    differ = sorted(k for k in old.keys() | fields.keys() if old.get(k) != fields.get(k))
    if differ:
        was = ", ".join(f"{k}={old.get(k)!r}" for k in differ)
        now = ", ".join(f"{k}={fields.get(k)!r}" for k in differ)
        raise CheckpointMismatchError(
            f"{field}: {source} was written for {was}; not for {now}; {advice}")


def load_checkpoint(path: str | Path, device: torch.device | str) -> dict[str, Any]:
    """Load ``checkpoint.pt`` on the CPU and place each part where resuming needs it.

    Loading with ``map_location=<model device>`` would also move the shuffling generator's
    state, and ``torch.Generator.set_state`` of the CPU generator accepts only a CPU
    ``ByteTensor``: a CUDA run could not resume. So everything is read on the CPU; the current
    and best weights then go to ``device``, the generator state stays on the CPU, and the
    optimizer state is left to ``Optimizer.load_state_dict``, which casts it to each
    parameter's device. Tested on the CPU with the "meta" device standing in for a GPU; not
    run on a GPU here.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)

    def to_device(weights: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
        return None if weights is None else {k: v.to(device) for k, v in weights.items()}

    return {**state, "model": to_device(state["model"]),
            "best_model": to_device(state.get("best_model")),
            "generator": state["generator"].cpu()}


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    n_val = round(n * val_fraction)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def lr_factor(config: TrainConfig, total_steps: int, step: int) -> float:
    """The multiple of ``config.lr`` used at ``step`` (0-based): warm-up times schedule.

    >>> config = TrainConfig(lr_schedule="cosine", warmup_steps=10)
    >>> [round(lr_factor(config, 100, s), 3) for s in (0, 9, 50, 100)]
    [0.1, 0.98, 0.5, 0.0]
    """
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
    if config.lr_schedule == "cosine":
        horizon = max(total_steps, 1)
        return warm * 0.5 * (1 + math.cos(math.pi * min(step, horizon) / horizon))
    if config.lr_schedule == "step":
        return warm * config.lr_decay ** sum(step >= m for m in config.lr_milestones)
    return warm


def _scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(config, total_steps, step))


class WeightAverage:
    r"""An exponential moving average of a model's floating-point parameters (Polyak averaging),
    :math:`\bar θ \leftarrow d\,\bar θ + (1 - d)\,θ` after every step. :meth:`swap`
    exchanges the model's weights and the average: once to evaluate (and keep) the average,
    once more to go on training the raw weights."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.params = [p for p in model.parameters()]
        self.average = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        torch._foreach_lerp_(self.average, [p.detach() for p in self.params], 1 - self.decay)

    @torch.no_grad()
    def swap(self) -> None:
        for p, a in zip(self.params, self.average, strict=True):
            raw = p.detach().clone()
            p.copy_(a)
            a.copy_(raw)

    def state_dict(self) -> list[torch.Tensor]:
        return self.average

    def load_state_dict(self, state: list[torch.Tensor]) -> None:
        for a, saved in zip(self.average, state, strict=True):
            a.copy_(saved)


@torch.no_grad()
def evaluate(model: ConditionalSampler, x0: torch.Tensor, y: torch.Tensor,
             batch: int = 8192) -> dict[str, float]:
    """Validation NLL (physical units) and mean reversibility error of held-out pairs."""
    was_training = model.training
    model.eval()
    nll, rev = 0.0, 0.0
    for start in range(0, len(x0), batch):
        xb, yb = x0[start:start + batch], y[start:start + batch]
        nll -= float(model.log_prob(yb, xb).sum())
        rev += float(model.reversibility_error(yb, xb).sum())
    model.train(was_training)
    return {"val_nll": nll / len(x0), "val_rev": rev / len(x0)}


def fit(
    model: ConditionalSampler,
    data: Any,
    config: TrainConfig | None = None,
    callbacks: list[Callback] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    restart: bool = False,
) -> FitResult:
    """Train ``model`` in place on ``data`` and return a :class:`FitResult`.

    Args:
        model: A surrogate from :func:`~prnf_core.models.build_model` (on its device).
        data: A :class:`~prnf_core.dataset.Dataset`, a store path, or ``(x0, xT)`` arrays.
        config: Optimization settings (defaults: :class:`TrainConfig`).
        callbacks: ``callback(kind, index, metrics)`` for "step" and "epoch" events.
        checkpoint_dir: Where to keep ``checkpoint.pt`` (last good epoch, atomic writes).
        resume: Continue from ``checkpoint_dir/checkpoint.pt`` if it exists; one written for
            other data, model or training settings raises :class:`CheckpointMismatchError`.
        restart: Delete an existing checkpoint first and train from scratch.
    """
    config = config or TrainConfig()
    previous_threads = torch.get_num_threads()
    if config.threads is not None and model.device.type == "cpu":
        torch.set_num_threads(config.threads)
    try:
        return _fit(model, data, config, callbacks or [], checkpoint_dir, resume, restart)
    finally:
        torch.set_num_threads(previous_threads)


def _fit(model: ConditionalSampler, data: Any, config: TrainConfig, callbacks: list[Callback],
         checkpoint_dir: str | Path | None, resume: bool, restart: bool) -> FitResult:
    from prnf_core.dataset import open_dataset

    if isinstance(data, str | Path):
        data = open_dataset(data)
    if model.config.cond_dim:
        # Training pairs carry no condition features: the loss would subtract the
        # condition mean from None (a TypeError deep in the first step).
        raise ConfigError(
            f"model.cond_dim: fit trains on (x0, X_T) pairs without condition features, so a "
            f"model with cond_dim={model.config.cond_dim} cannot be trained; use cond_dim=0"
        )
    x0_np, y_np = training_pairs(data)
    device, dtype = model.device, model.dtype
    data_dim = x0_np.shape[1] if x0_np.ndim == 2 else None
    if data_dim != model.dim:
        raise ConfigError(
            f"data: the dataset has dimension {data_dim} but the model has dimension {model.dim}"
        )
    x0 = to_tensor(x0_np, "data.x0", model.dim, device, dtype)
    y = to_tensor(y_np, "data.xT", model.dim, device, dtype)
    if len(x0) != len(y):
        raise ConfigError(f"data: x0 has {len(x0)} rows but xT has {len(y)}")
    train_idx, val_idx = split_indices(len(x0), config.val_fraction, config.split_seed)
    if len(train_idx) == 0:
        raise ConfigError("data: no training pairs left after the validation split")
    x_tr, y_tr = x0[train_idx], y[train_idx]
    x_va, y_va = (x0[val_idx], y[val_idx]) if len(val_idx) else (x_tr, y_tr)

    torch.manual_seed(config.seed)
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    if not bool(model.fitted):
        model.fit_normalization(x_tr, y_tr)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    batch = min(config.batch_size, len(x_tr))
    steps_per_epoch = math.ceil(len(x_tr) / batch)
    if config.iterations is not None:
        epochs = math.ceil(config.iterations / steps_per_epoch)
        total_steps = config.iterations
    else:
        epochs, total_steps = config.epochs, config.epochs * steps_per_epoch
    scheduler = _scheduler(optimizer, config, total_steps)
    training_loss = (torch.compile(model.training_loss, dynamic=True) if config.torch_compile
                     else model.training_loss)
    average = WeightAverage(model, config.ema_decay) if config.ema_decay else None

    result = FitResult(n_train=len(x_tr), n_val=len(val_idx))
    best_state = None
    start_epoch = 0
    ckpt = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir is not None else None
    fingerprint = None
    if ckpt is not None:
        fingerprint = training_fingerprint(data_id(data, (x0_np, y_np)), model.config, config)
        if restart:
            ckpt.unlink(missing_ok=True)
    if resume and ckpt is not None and ckpt.is_file():
        state = load_checkpoint(ckpt, device)
        check_fingerprint(state.get("training_fingerprint"), fingerprint[0], "checkpoint",
                          str(ckpt))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        if average is not None:
            average.load_state_dict(state["weight_average"])
        start_epoch = int(state["epoch"]) + 1
        result.steps = int(state["steps"])
        result.best_val_nll = float(state["best_val_nll"])
        result.best_epoch = int(state["best_epoch"])
        best_state = state["best_model"]
        result.history = list(state["history"])
        result.epochs_run = result.resumed_epochs = start_epoch
        if config.patience is not None and start_epoch - 1 - result.best_epoch >= config.patience:
            result.stopped_early = True  # it had stopped: a re-run trains no further epoch
            epochs = start_epoch

    started = time.perf_counter()
    bar = _progress(config.progress, epochs, start_epoch)
    model.train()
    try:
        for epoch in range(start_epoch, epochs):
            # Accumulated on the device: one host sync per epoch, not per step, on a GPU.
            sums = {k: torch.zeros((), device=device) for k in ("loss", "nll", "rev")}
            seen = 0
            perm = torch.randperm(len(x_tr), generator=gen).to(device)
            for b in range(steps_per_epoch):
                if result.steps >= total_steps:
                    break
                idx = perm[b * batch:(b + 1) * batch]
                yn, ctx = model.normalize(x_tr[idx], y_tr[idx], None)
                loss, parts = training_loss(yn, ctx, config.lam)
                if not torch.isfinite(loss):
                    raise TrainingDivergedError(
                        f"loss is {float(loss.detach())} at epoch {epoch}, step {result.steps}; "
                        f"last good checkpoint: {ckpt if ckpt and ckpt.exists() else 'none'}. "
                        "Lower lr, raise batch_size or enable grad_clip."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                scheduler.step()
                if average is not None:
                    average.update()
                result.steps += 1
                n = len(idx)
                seen += n
                parts = {"loss": loss.detach(), **{k: v.detach() for k, v in parts.items()}}
                for key in sums:
                    sums[key] += parts[key] * n
                if callbacks and result.steps % config.log_every == 0:
                    metrics = {k: float(v) for k, v in parts.items()}
                    metrics["lr"] = scheduler.get_last_lr()[0]
                    for cb in callbacks:
                        cb("step", result.steps, metrics)
            metrics = {k: float(v) / max(seen, 1) for k, v in sums.items()}
            if average is not None:  # validate (and keep as best) the averaged weights
                average.swap()
            metrics.update(evaluate(model, x_va, y_va))
            metrics["lr"] = scheduler.get_last_lr()[0]
            metrics["epoch"] = epoch
            if not math.isfinite(metrics["val_nll"]):
                raise TrainingDivergedError(
                    f"validation NLL is {metrics['val_nll']} at epoch {epoch}"
                )
            result.history.append(metrics)
            result.epochs_run = epoch + 1
            if metrics["val_nll"] < result.best_val_nll:
                result.best_val_nll, result.best_epoch = metrics["val_nll"], epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            for cb in callbacks:
                cb("epoch", epoch, metrics)
            if average is not None:
                average.swap()  # the raw weights go on training
            if ckpt is not None:
                _save_checkpoint(ckpt, model, optimizer, scheduler, gen, epoch, result, best_state,
                                 fingerprint, average)
            if bar is not None:
                bar.update(bar.task_ids[0], advance=1,
                           description=f"train val_nll={metrics['val_nll']:.4f} "
                                       f"rev={metrics['val_rev']:.2e}")
            if config.patience is not None and epoch - result.best_epoch >= config.patience:
                result.stopped_early = True
                break
            if result.steps >= total_steps:
                break
    finally:
        if bar is not None:
            bar.stop()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - started
    return result


def _save_checkpoint(path: Path, model, optimizer, scheduler, gen, epoch: int,
                     result: FitResult, best_state, fingerprint: tuple[dict[str, Any], str],
                     average: WeightAverage | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "generator": gen.get_state(), "epoch": epoch,
        "steps": result.steps, "best_val_nll": result.best_val_nll,
        "best_epoch": result.best_epoch, "best_model": best_state,
        "history": result.history,
        "weight_average": None if average is None else average.state_dict(),
        "training_fingerprint": {"fields": fingerprint[0], "hash": fingerprint[1]},
    }, tmp)
    tmp.replace(path)  # atomic: a kill mid-write never leaves a truncated checkpoint


def _progress(enabled: bool, epochs: int, start: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("epochs"), TimeElapsedColumn())
    bar.add_task("train", total=epochs, completed=start)
    bar.start()
    return bar
