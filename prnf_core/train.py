r"""Training a conditional surrogate on (x0, X_T) pairs, or on (x0, c, X_t) tuples.

A conditioned model (``ModelConfig.conditioning``: a time range and SDE parameter boxes)
trains on tuples :math:`(x_0, c, y)` with :math:`c = (t, θ)`: minimizing
:math:`-\frac1N \sum \log q(y \mid x_0;\, c)` over rows drawn at many conditions fits one
surrogate of :math:`p(X_t \mid X_0 = x_0;\, θ)` on the whole box. Data: ``(x0, cond, xT)``
arrays, or a dataset simulated with ``save_times`` and/or a ``param_box``
(:meth:`~prnf_core.dataset.Dataset.conditioned_tuples`).

Every minibatch of every epoch is a gradient step (the reference scripts computed the loss on
every minibatch but stepped only on the last one; that defect is not copied). The validation
split is drawn with a recorded seed; early stopping watches the validation NLL and the best
weights are restored at the end. A NaN/inf loss stops training with
:class:`TrainingDivergedError`; the last good checkpoint on disk is kept, and ``fit(...,
resume=True)`` continues from it.

A store larger than ``TrainConfig.memory_cap_mb`` is streamed chunk by chunk through a
shuffle buffer under the cap instead of loaded (:mod:`prnf_core.streaming`; the normalization
is then fitted on a bounded sample of the training rows, validation uses a bounded share of the
validation rows); rows that fit in the cap train exactly as without one.

A checkpoint records the fingerprint of the run that wrote it and is resumed only under the
same settings (:mod:`prnf_core.checkpoints`); the settings are a :class:`TrainConfig`
(:mod:`prnf_core.train_config`). Both modules' public names are re-exported here.

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

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prnf_core.checkpoints import (
    COSMETIC_TRAINING_FIELDS,
    STOPPING_FIELDS,
    CheckpointMismatchError,
    check_fingerprint,
    data_id,
    dataset_tuples,
    load_checkpoint,
    save_checkpoint,
    training_fingerprint,
    training_pairs,
    weights_digest,
)
from prnf_core.dataset import Dataset, open_dataset
from prnf_core.errors import ConfigError, IncompleteDatasetError, PrnfError
from prnf_core.models import atoms
from prnf_core.models.base import ConditionalSampler, to_tensor
from prnf_core.streaming import (
    MB,
    SPLIT_BLOCK,
    ChunkStream,
    Prepared,
    RowLayout,
    plan_stream,
)
from prnf_core.train_config import TRAIN_PRESETS, TrainConfig
from prnf_core.trust import TrainingDomain

__all__ = [  # the names of checkpoints and train_config are re-exported
    "COSMETIC_TRAINING_FIELDS", "STOPPING_FIELDS", "TRAIN_PRESETS", "Callback",
    "CheckpointMismatchError", "FitResult", "TrainConfig", "TrainingDivergedError",
    "WeightAverage", "check_fingerprint", "data_id", "evaluate", "fit", "load_checkpoint",
    "lr_factor", "split_indices", "training_fingerprint", "training_pairs", "weights_digest",
]

Callback = Callable[[str, int, dict[str, float]], None]


class TrainingDivergedError(PrnfError, FloatingPointError):
    """The loss became NaN/inf; the last good checkpoint (if any) is kept."""


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
    #: A run streamed under ``TrainConfig.memory_cap_mb`` (:mod:`prnf_core.streaming`): the
    #: cap, the rows' size, the shuffle buffer's and validation rows, the peak data held (MB).
    streamed: dict[str, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "history"}


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation row indices: in each block of :data:`SPLIT_BLOCK` rows, a
    permutation seeded by ``(seed, block)`` puts ``round(len(block) * val_fraction)`` rows in
    validation.

    Prefix-stable: the rows of the first ``m`` blocks are assigned the same way whatever ``n``
    is, so when a dataset grows (:func:`prnf_core.dataset.grow_dataset`, whole chunks of a
    multiple of 100 rows) no row that validated a model trained on the smaller set moves into
    training, nor the reverse: a warm start's validation loss stays honest.

    >>> train, val = split_indices(300, 0.2, 0)
    >>> len(val), bool(np.array_equal(split_indices(200, 0.2, 0)[1], val[val < 200]))
    (60, True)
    """
    train, val = [], []
    for start in range(0, n, SPLIT_BLOCK):
        size = min(SPLIT_BLOCK, n - start)
        perm = np.random.default_rng([seed, start // SPLIT_BLOCK]).permutation(size) + start
        n_val = round(size * val_fraction)
        val.append(perm[:n_val])
        train.append(perm[n_val:])
    if not train:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


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
        self.params = list(model.parameters())
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
             batch: int = 8192, cond: torch.Tensor | None = None) -> dict[str, float]:
    """Validation NLL (physical units) and mean reversibility error of held-out pairs (with
    their condition rows ``cond`` for a model with condition features)."""
    was_training = model.training
    model.eval()
    nll, rev = 0.0, 0.0
    for start in range(0, len(x0), batch):
        xb, yb = x0[start:start + batch], y[start:start + batch]
        cb = None if cond is None else cond[start:start + batch]
        nll -= float(model.log_prob(yb, xb, cb).sum())
        rev += float(model.reversibility_error(yb, xb, cb).sum())
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
    init: str | None = None,
) -> FitResult:
    """Train ``model`` in place on ``data`` and return a :class:`FitResult`.

    Args:
        model: A surrogate from :func:`~prnf_core.models.build_model` (on its device).
        data: A :class:`~prnf_core.dataset.Dataset`, a store path, ``(x0, xT)`` arrays, or
            ``(x0, cond, xT)`` arrays for a model with condition features (``cond`` columns:
            ``model.conditioning.names``). A model with condition features trains on a
            dataset's :meth:`~prnf_core.dataset.Dataset.conditioned_tuples` (it needs
            ``save_times`` and/or a ``param_box``).
        config: Optimization settings (defaults: :class:`TrainConfig`).
        callbacks: ``callback(kind, index, metrics)`` for "step" and "epoch" events.
        checkpoint_dir: Where to keep ``checkpoint.pt`` (last good epoch, atomic writes).
        resume: Continue from ``checkpoint_dir/checkpoint.pt`` if it exists; one written for
            other data, model or training settings raises :class:`CheckpointMismatchError`.
        restart: Delete an existing checkpoint first and train from scratch.
        init: For a warm start (``model`` already holds trained weights, normalization
            included): their :func:`~prnf_core.checkpoints.weights_digest`, recorded in the
            checkpoint's fingerprint, so that a cold run's checkpoint is never resumed as a
            warm one, nor one warm-started from other weights. The start weights are scored
            first and kept (``best_epoch = -1``) unless an epoch beats them on validation.
    """
    config = config or TrainConfig()
    previous_threads = torch.get_num_threads()
    if config.threads is not None and model.device.type == "cpu":
        torch.set_num_threads(config.threads)
    try:
        return _fit(model, data, config, callbacks or [], checkpoint_dir, resume, restart, init)
    finally:
        torch.set_num_threads(previous_threads)


def _fit(model: ConditionalSampler, data: Any, config: TrainConfig, callbacks: list[Callback],
         checkpoint_dir: str | Path | None, resume: bool, restart: bool,
         init: str | None) -> FitResult:
    if isinstance(data, str | Path):
        data = open_dataset(data)
    if isinstance(data, Dataset) and model.config.clamp_bounds == "problem":
        # the atoms the store's problem puts on X_T (a model built without its problem)
        model.config = model.config.model_copy(
            update={"clamp_bounds": atoms.of_problem(data.config.sde())})
    device = model.device
    stream = _stream(model, data, config)
    if stream is None:
        arrays = _training_arrays(model, data)
        x_tr, y_tr, c_tr, x_va, y_va, c_va, n_val = _in_memory(model, data, arrays, config)
        n_train, norm = len(x_tr), (x_tr, y_tr, c_tr)
    else:
        arrays = None
        prepared = stream.prepare(config.seed)
        model.training_domain = _streamed_domain(data, prepared, config.seed)
        x_va, y_va, c_va = (None if a is None else a.to(device) for a in prepared.val)
        n_train, norm = stream.plan.n_train, prepared.stats
        n_val = stream.plan.val_rows if stream.plan.n_val_split else 0
        del prepared
    bounds = model.atom_bounds
    if bounds is not None:  # the rows on a clamp bound, spread beyond it (models/atoms.py)
        atom_width = atoms.WIDTH * norm[1].std(dim=0).to(device)
        y_va = atoms.dequantize(y_va, bounds, atom_width,
                                torch.Generator().manual_seed(config.seed + 1))

    torch.manual_seed(config.seed)
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    if not bool(model.fitted):
        model.fit_normalization(*norm)
    del norm  # a streamed run's sample of training rows is not kept
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
    batch = min(config.batch_size, n_train)
    steps_per_epoch = math.ceil(n_train / batch)
    if config.iterations is not None:
        epochs = math.ceil(config.iterations / steps_per_epoch)
        total_steps = config.iterations
    else:
        epochs, total_steps = config.epochs, config.epochs * steps_per_epoch
    scheduler = _scheduler(optimizer, config, total_steps)
    training_loss = (torch.compile(model.training_loss, dynamic=True) if config.torch_compile
                     else model.training_loss)
    average = WeightAverage(model, config.ema_decay) if config.ema_decay else None

    result = FitResult(n_train=n_train, n_val=n_val)
    best_state = None
    start_epoch = 0
    ckpt = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir is not None else None
    fingerprint = None
    if ckpt is not None:
        fingerprint = training_fingerprint(data_id(data, arrays), model.config, config, init)
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
    elif init is not None:
        # A warm start's own weights are the first candidate: fine-tuning never returns
        # weights that do worse on the validation rows than those it started from.
        result.best_val_nll = evaluate(model, x_va, y_va, cond=c_va)["val_nll"]
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    started = time.perf_counter()
    bar = _progress(config.progress, epochs, start_epoch)
    model.train()
    try:
        for epoch in range(start_epoch, epochs):
            # Accumulated on the device: one host sync per epoch, not per step, on a GPU.
            sums = {k: torch.zeros((), device=device) for k in ("loss", "nll", "rev")}
            seen = 0
            if stream is None:
                batches = _batches(x_tr, y_tr, c_tr, torch.randperm(len(x_tr), generator=gen)
                                   .to(device), batch)
            else:
                batches = _to_device(stream.batches(epoch, config.seed), device)
            for x_b, y_b, c_b in batches:
                if result.steps >= total_steps:
                    break
                if bounds is not None:  # fresh spread at every step, reproducible on resume
                    y_b = atoms.dequantize(y_b, bounds, atom_width, torch.Generator().manual_seed(
                        config.seed * 1_000_003 + result.steps))
                yn, ctx = model.normalize(x_b, y_b, c_b)
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
                n = len(x_b)
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
            metrics.update(evaluate(model, x_va, y_va, cond=c_va))
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
    if stream is not None:
        plan = stream.plan
        result.streamed = {"memory_cap_mb": config.memory_cap_mb,
                           "data_mb": plan.data_bytes / MB, "pool_rows": plan.pool_rows,
                           "val_rows": plan.val_rows, "peak_mb": stream.peak_bytes / MB}
    return result


def _in_memory(model: ConditionalSampler, data: Any, arrays: tuple[np.ndarray, ...],
               config: TrainConfig):
    """The training and validation tensors of data loaded whole (and the training domain):
    ``(x_tr, y_tr, c_tr, x_va, y_va, c_va, n_val)``."""
    x0_np, c_np, y_np = arrays if len(arrays) == 3 else (arrays[0], None, arrays[1])
    model.training_domain = _training_domain(data, x0_np, config.seed)
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
    cond = None
    if c_np is not None:
        cond = to_tensor(c_np, "data.cond", model.config.cond_dim, device, dtype)
        if len(cond) != len(x0):
            raise ConfigError(f"data: x0 has {len(x0)} rows but cond has {len(cond)}")
        if model.conditioning is not None:
            try:
                model.conditioning.check(np.asarray(c_np, dtype=np.float64).reshape(len(cond), -1))
            except ConfigError as error:
                raise ConfigError(f"data.cond: {error}") from None
    train_idx, val_idx = split_indices(len(x0), config.val_fraction, config.split_seed)
    if len(train_idx) == 0:
        raise ConfigError("data: no training pairs left after the validation split")
    x_tr, y_tr = x0[train_idx], y[train_idx]
    x_va, y_va = (x0[val_idx], y[val_idx]) if len(val_idx) else (x_tr, y_tr)
    c_tr = None if cond is None else cond[train_idx]
    c_va = None if cond is None else (cond[val_idx] if len(val_idx) else c_tr)
    return x_tr, y_tr, c_tr, x_va, y_va, c_va, len(val_idx)


def _batches(x: torch.Tensor, y: torch.Tensor, c: torch.Tensor | None, perm: torch.Tensor,
             batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """An in-memory epoch's minibatches: the rows of ``perm`` in slices of ``batch``."""
    for start in range(0, len(perm), batch):
        idx = perm[start:start + batch]
        yield x[idx], y[idx], None if c is None else c[idx]


def _to_device(batches: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]],
               device: torch.device):
    for x, y, c in batches:
        yield x.to(device), y.to(device), None if c is None else c.to(device)


def _stream(model: ConditionalSampler, data: Any, config: TrainConfig) -> ChunkStream | None:
    """The chunk stream of a store whose rows exceed ``config.memory_cap_mb``; None when the
    data are loaded whole (no cap, raw arrays, or rows that fit: the path without a cap)."""
    if config.memory_cap_mb is None or not isinstance(data, Dataset):
        return None
    if data.dim != model.dim:
        raise ConfigError(
            f"data: the dataset has dimension {data.dim} but the model has dimension {model.dim}"
        )
    k = model.config.cond_dim
    layout = _dataset_layout(model, data)
    plan = plan_stream(data, layout, k, model.dtype, config.memory_cap_mb, config.batch_size,
                       config.val_fraction, config.split_seed)
    if not plan.streams:
        return None
    missing = data.missing_chunks()
    if missing or not data.is_complete:
        raise IncompleteDatasetError(
            f"dataset {data.path} is incomplete: {len(missing)} of {data.config.n_chunks} "
            f"chunks missing (first: {missing[:5]}); re-run the simulation to fill them")
    if plan.n_train == 0:
        raise ConfigError("data: no training pairs left after the validation split")
    conditioning = model.conditioning

    def check(x0: np.ndarray, y: np.ndarray, cond: np.ndarray | None) -> None:
        for name, rows in (("data.x0", x0), ("data.xT", y), ("data.cond", cond)):
            if rows is not None and not np.isfinite(rows).all():
                raise ConfigError(f"{name}: contains NaN or inf")
        if cond is not None and cond.shape[1] != k:
            raise ConfigError(f"data.cond: must have shape (n, {k}), got {cond.shape}")
        if cond is not None and conditioning is not None:
            try:
                conditioning.check(cond.astype(np.float64))
            except ConfigError as error:
                raise ConfigError(f"data.cond: {error}") from None

    return ChunkStream(plan, model.dtype, check)


def _dataset_layout(model: ConditionalSampler, data: Dataset) -> RowLayout:
    """The rows a model trains on from a store, checked as :func:`_training_arrays` checks the
    loaded arrays (without loading them)."""
    if not model.config.cond_dim:
        if getattr(data.config, "param_box", None):
            raise ConfigError(
                "model.cond_dim: the dataset varies SDE parameters (param_box) but the model "
                "has cond_dim=0 (no conditioning); give the model a conditioning")
        return RowLayout(conditioned=False)
    config = data.config
    if not (config.save_times or getattr(config, "param_box", None)):
        raise ConfigError(
            "data: a conditioned model trains on a dataset simulated with save_times and/or a "
            "param_box (rows at several times or parameters); this one has neither")
    names, boxed = ["t", *data.param_names], model.conditioning
    if boxed is not None and names != boxed.names:
        if names[1:] == boxed.names and not config.save_times:
            return RowLayout(conditioned=True, drop_t=True)
        raise ConfigError(
            f"model.conditioning: the model is conditioned on {boxed.names} but the "
            f"dataset's condition columns are {names}")
    return RowLayout(conditioned=True)


def _streamed_domain(data: Dataset, prepared: Prepared, seed: int) -> TrainingDomain:
    """The training domain of a streamed store: fitted on a sample of its x0 (as
    :meth:`TrainingDomain.of_training` subsamples anyway), its box widened to the exact range of
    every x0 where the initial law gives none (a law's own bounds contain every row)."""
    domain = TrainingDomain.of_training(prepared.x0_sample, data.config.initial_spec(), seed)
    return domain.model_copy(update={
        "low": np.minimum(domain.low, prepared.x0_min).tolist(),
        "high": np.maximum(domain.high, prepared.x0_max).tolist()})


def _training_domain(data: Any, x0: np.ndarray, seed: int) -> TrainingDomain | None:
    """The x0 domain the model is trained on (:mod:`prnf_core.trust`): a store's initial law
    and its x0 (one row per particle), or the rows of raw arrays (law unknown)."""
    if isinstance(data, Dataset):
        return TrainingDomain.of_training(data.load("x0"), data.config.initial_spec(), seed)
    try:
        rows = np.asarray(x0, dtype=np.float64)
    except (TypeError, ValueError, RuntimeError):
        return None  # refused below, with the message naming the field
    if rows.ndim != 2 or not len(rows) or not np.isfinite(rows).all():
        return None  # likewise
    return TrainingDomain.of_training(rows, None, seed)


def _training_arrays(model: ConditionalSampler, data: Any) -> tuple[np.ndarray, ...]:
    """``(x0, xT)`` or ``(x0, cond, xT)``, refused unless their condition features are the
    model's: as many columns as ``cond_dim`` and, from a dataset, the conditioning's names."""
    k = model.config.cond_dim
    boxed = model.conditioning
    if isinstance(data, Dataset):
        if not k:
            if getattr(data.config, "param_box", None):
                raise ConfigError(
                    "model.cond_dim: the dataset varies SDE parameters (param_box) but the model "
                    "has cond_dim=0 (no conditioning); give the model a conditioning")
            return data.pairs()
        arrays, names = dataset_tuples(data)
        if boxed is not None and names != boxed.names:
            if (names[:1] == ["t"] and names[1:] == boxed.names
                    and not data.config.save_times):  # one horizon: the t column is constant
                arrays, names = (arrays[0], arrays[1][:, 1:], arrays[2]), names[1:]
            else:
                raise ConfigError(
                    f"model.conditioning: the model is conditioned on {boxed.names} but the "
                    f"dataset's condition columns are {names}")
        return arrays
    arrays = training_pairs(data)
    cond = arrays[1] if len(arrays) == 3 else np.zeros((0, 0))
    given = {1: 1, 2: cond.shape[-1]}.get(cond.ndim) if cond.ndim else None
    if given != k:
        what = ("(x0, X_T) pairs without condition features" if len(arrays) == 2
                else f"(x0, cond, X_T) tuples with cond of shape {arrays[1].shape}")
        raise ConfigError(
            f"model.cond_dim: the data are {what} ({given} condition features) but the model "
            f"has cond_dim={k}; train a model with cond_dim={given or 0}"
            + ("" if len(arrays) == 3 else " or give (x0, cond, X_T) tuples / a dataset with "
                                           "save_times or a param_box"))
    return arrays


def _save_checkpoint(path: Path, model, optimizer, scheduler, gen, epoch: int,
                     result: FitResult, best_state, fingerprint: tuple[dict[str, Any], str],
                     average: WeightAverage | None) -> None:
    save_checkpoint(path, {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "generator": gen.get_state(), "epoch": epoch,
        "steps": result.steps, "best_val_nll": result.best_val_nll,
        "best_epoch": result.best_epoch, "best_model": best_state,
        "history": result.history,
        "weight_average": None if average is None else average.state_dict(),
        "training_fingerprint": {"fields": fingerprint[0], "hash": fingerprint[1]},
    })


def _progress(enabled: bool, epochs: int, start: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("epochs"), TimeElapsedColumn())
    bar.add_task("train", total=epochs, completed=start)
    bar.start()
    return bar
