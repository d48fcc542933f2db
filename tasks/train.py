"""Prefect task for training: reads a dataset store, writes a model directory."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from prnf_core.dataset import open_dataset
from prnf_core.errors import ConfigError
from prnf_core.models import Conditioning, ModelConfig, build_model
from prnf_core.train import (
    TrainConfig,
    check_fingerprint,
    fit,
    training_fingerprint,
    weights_digest,
)
from tasks.progress import Reporter


@task(name="train-model")
def train_model(data: str, model: ModelConfig, training: TrainConfig,
                output: str, resume: bool = True,
                tracking_run_id: str | None = None, restart: bool = False,
                init_from: str | None = None) -> dict[str, Any]:
    """Train on the store at ``data``; save weights, config and ``summary.json`` to ``output``.

    A checkpoint is kept in ``output`` after every epoch, so a re-run after a kill resumes.
    With ``tracking_run_id``, per-step and per-epoch metrics go to that MLflow run.

    ``output`` only ever holds one run's state: a checkpoint or finished model written for
    other data, model or training settings is refused (:class:`CheckpointMismatchError`),
    and ``restart`` deletes it, and the finished model's files, before training from scratch,
    so that a kill during the new run cannot leave the old weights next to its checkpoint.

    ``init_from`` (a model URI or directory) warm-starts from that model's weights, which must
    have exactly this architecture (:func:`warm_start_state`); the fingerprint then records
    their digest, and the saved metadata where they came from.
    """
    logger = get_run_logger()
    dataset = open_dataset(data)
    if model.dim is not None and model.dim != dataset.dim:
        raise ConfigError(
            f"model.dim: {model.dim} does not match the dataset's dimension {dataset.dim}"
        )
    model = model.for_problem(dataset.config.sde())
    if model.conditioning is None:  # a store over (t, θ): one model over the whole box
        box = Conditioning.of_dataset(dataset.config.save_times, dataset.config.param_box,
                                       dataset.config.param_scale)
        if box is not None:
            model = ModelConfig.model_validate({**model.model_dump(mode="json"),
                                                "conditioning": box.model_dump(mode="json")})
    out = Path(output)
    start = warm_start_state(init_from, model) if init_from is not None else None
    init = weights_digest(start) if start is not None else None
    fields, digest = training_fingerprint(dataset.dataset_id, model, training, init)
    if restart:  # the checkpoint first: once it is gone nothing stale can be resumed
        for name in ("checkpoint.pt", "config.json", "weights.pt", "summary.json",
                     "history.json"):
            (out / name).unlink(missing_ok=True)
    elif (out / "config.json").is_file() and not (out / "checkpoint.pt").is_file():
        # A finished model without its checkpoint (fit checks the checkpoint itself).
        check_fingerprint(json.loads((out / "config.json").read_text()).get(
            "training_fingerprint"), fields, "output", str(out / "config.json"))
    net = build_model(model, seed=training.seed)
    if start is not None:
        net.load_state_dict(start)
        logger.info("warm start from %s (weights %s)", init_from, init)
    reporter = Reporter("train (epochs)", key=None)
    epochs_total = training.epochs or 1

    def log_epoch(kind: str, index: int, metrics: dict[str, float]) -> None:
        if kind == "epoch":
            logger.info("epoch %d: loss=%.4f nll=%.4f rev=%.2e val_nll=%.4f val_rev=%.2e",
                        index, metrics["loss"], metrics["nll"], metrics["rev"],
                        metrics["val_nll"], metrics["val_rev"])
            reporter(index + 1, max(epochs_total, index + 1))

    callbacks = [log_epoch]
    if tracking_run_id is not None:
        from tasks.tracking import configure, log_metrics

        client = configure()

        def to_mlflow(kind: str, index: int, metrics: dict[str, float]) -> None:
            prefix = "train_step" if kind == "step" else "epoch"
            log_metrics(client, tracking_run_id,
                        {f"{prefix}.{k}": v for k, v in metrics.items() if k != "epoch"},
                        step=index)

        callbacks.append(to_mlflow)
    result = fit(net, dataset, training, callbacks=callbacks, checkpoint_dir=out,
                 resume=resume, restart=restart, init=init)
    problem = dataset.meta["problem"]
    net.save(out, extra={"dataset_id": dataset.dataset_id, "dataset_path": dataset.path,
                         "dataset_config": dataset.meta["resolved_config"], "problem": problem,
                         "training": training.model_dump(mode="json"),
                         "training_fingerprint": {"fields": fields, "hash": digest},
                         "warm_start": None if init is None else {"from": init_from,
                                                                  "weights": init},
                         "train_seconds": result.seconds + dataset.simulation_seconds()})
    summary = {
        "model_dir": str(out),
        "dataset_id": dataset.dataset_id,
        "problem": problem["name"],
        "architecture": model.architecture,
        "training_fingerprint": digest,
        "warm_start": init is not None,
        **result.as_dict(),
        "final": result.history[-1] if result.history else {},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    (out / "history.json").write_text(json.dumps(result.history))
    logger.info("trained %s in %.1f s: best val_nll %.4f at epoch %d",
                model.architecture, result.seconds, result.best_val_nll, result.best_epoch)
    return summary


def load_start_model(source: str) -> Any:
    """The surrogate at ``source`` (:func:`tasks.pyfunc.load_surrogate`); a pinned registry
    version (``models:/NAME/N``, immutable in its registry) is downloaded once per process and
    registry, since a warm start reads it to decide, to fingerprint and to train."""
    import mlflow

    from tasks.pyfunc import load_surrogate

    if _PINNED.fullmatch(source):
        return _pinned(mlflow.get_registry_uri(), source)
    return load_surrogate(source)


_PINNED = re.compile(r"models:/[^/@]+/\d+")


@functools.lru_cache(maxsize=2)
def _pinned(registry_uri: str, source: str) -> Any:
    from tasks.pyfunc import load_surrogate

    return load_surrogate(source)  # from the registry configured now: registry_uri


def warm_start_state(source: str, model: ModelConfig) -> dict[str, Any]:
    """The weights (normalization included) of the model at ``source`` (a model URI or a model
    directory), to start training ``model`` from.

    Raises:
        ConfigError: ``source``'s architecture differs from ``model`` (the fields are named).
    """
    start = load_start_model(source).model
    differ = start.config.differences(model)
    if differ:
        raise ConfigError(f"init_from: {source} has another architecture (there != here: "
                          + "; ".join(differ) + ")")
    return {k: v.detach().cpu() for k, v in start.state_dict().items()}
