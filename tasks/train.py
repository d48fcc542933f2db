"""Prefect task for training: reads a dataset store, writes a model directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from prnf_core.dataset import open_dataset
from prnf_core.errors import ConfigError
from prnf_core.models import ModelConfig, build_model
from prnf_core.train import TrainConfig, fit
from tasks.progress import Reporter


@task(name="train-model")
def train_model(data: str, model: ModelConfig, training: TrainConfig,
                output: str, resume: bool = True,
                tracking_run_id: str | None = None) -> dict[str, Any]:
    """Train on the store at ``data``; save weights, config and ``summary.json`` to ``output``.

    A checkpoint is kept in ``output`` after every epoch, so a re-run after a kill resumes.
    With ``tracking_run_id``, per-step and per-epoch metrics go to that MLflow run.
    """
    logger = get_run_logger()
    dataset = open_dataset(data)
    if model.dim is not None and model.dim != dataset.dim:
        raise ConfigError(
            f"model.dim: {model.dim} does not match the dataset's dimension {dataset.dim}"
        )
    model = model.model_copy(update={"dim": dataset.dim})
    net = build_model(model, seed=training.seed)
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
    out = Path(output)
    result = fit(net, dataset, training, callbacks=callbacks, checkpoint_dir=out,
                 resume=resume)
    problem = dataset.meta["problem"]
    net.save(out, extra={"dataset_id": dataset.dataset_id, "dataset_path": dataset.path,
                         "dataset_config": dataset.meta["resolved_config"], "problem": problem,
                         "training": training.model_dump(mode="json"),
                         "train_seconds": result.seconds + dataset.simulation_seconds()})
    summary = {
        "model_dir": str(out),
        "dataset_id": dataset.dataset_id,
        "problem": problem["name"],
        "architecture": model.architecture,
        **result.as_dict(),
        "final": result.history[-1] if result.history else {},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    (out / "history.json").write_text(json.dumps(result.history))
    logger.info("trained %s in %.1f s: best val_nll %.4f at epoch %d",
                model.architecture, result.seconds, result.best_val_nll, result.best_epoch)
    return summary
