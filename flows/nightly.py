"""The scheduled-run steps of the pipeline (README "Scheduled runs"): the run's name, the warm
start, the champion's health point and the retention policy. :mod:`flows.pipeline` composes
them; the training set's growth is :mod:`tasks.growth`.
"""

from __future__ import annotations

import os
import shutil
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from flows.config import PipelineParams
from prnf_core.models import ModelConfig
from prnf_core.paths import dataset_root
from prnf_core.train import TrainConfig, training_fingerprint, weights_digest
from prnf_core.verdict import Fingerprint
from tasks import health, registry, tracking
from tasks.growth import TrainingPlan, plan_training_set
from tasks.retention import prune_registry, prune_test_sets
from tasks.train import load_start_model, warm_start_state


def run_name(problem: str, plan: TrainingPlan, day: date | None = None) -> str:
    """What a run did, as its name: ``ou-night-2026-12-01-grow-40k`` (growing data),
    ``ou-run-2026-12-01-fixed-20k`` (a fixed store)."""
    kind = "run" if plan.family_id is None else "night"
    return f"{problem}-{kind}-{(day or datetime.now(UTC).date()).isoformat()}-{plan.action}"


def flow_run_name() -> str:
    """The Prefect flow run's name: what the run will do (:func:`run_name`), planned from its
    parameters before it starts; parameters that do not validate get a plain name (the run
    then fails on them with the field named)."""
    from prefect.runtime import flow_run

    raw = flow_run.parameters.get("params")
    try:
        params = raw if isinstance(raw, PipelineParams) else PipelineParams.model_validate(raw)
        config = params.training_dataset().on_device(params.execution.device)
        return run_name(params.problem, plan_training_set(config, params.grow_to,
                                                          params.grow_by))
    except Exception:
        return f"pipeline-{datetime.now(UTC).date().isoformat()}"


def warm_start_source(params: PipelineParams, client, name: str, dataset_cfg
                      ) -> tuple[str | None, str]:
    """The model URI to fine-tune from (the champion's version, pinned) and why, or None and
    why training starts from scratch."""
    if not params.warm_start:
        return None, "from scratch (warm_start is off)"
    if not params.use_registry:
        return None, "from scratch (no registry: use_registry is off)"
    champion = registry.champion_version(client, name)
    if champion is None:
        return None, f"from scratch ({name} has no champion yet)"
    source = f"models:/{name}/{champion.version}"
    meta = load_start_model(source).metadata
    ours = params.fingerprint()
    differences = Fingerprint.of_model(meta).differences(ours)
    model = params.surrogate_model().for_problem(dataset_cfg.sde())
    differences += [f"model.{d}" for d in
                    ModelConfig.model_validate(meta["model"]).differences(model)]
    if differences:
        return None, (f"from scratch (champion v{champion.version} differs: "
                      + "; ".join(differences) + ")")
    return source, (f"warm start from champion v{champion.version} ({params.fine_tune.epochs} "
                    f"epochs at lr {params.fine_tune.lr:g})")


def training_digest(dataset_id: str, params: PipelineParams, training: TrainConfig,
                    init_from: str | None, sde: Any) -> str:
    """The training fingerprint's hash (:func:`prnf_core.train.training_fingerprint`) of the
    training this run is about to do: a version tagged with it has the same weights."""
    model = params.surrogate_model().for_problem(sde)
    init = None
    if init_from is not None:
        init = weights_digest(warm_start_state(init_from, model))
    return training_fingerprint(dataset_id, model, training, init)[1]


def trained_before(client, name: str, digest: str) -> Any | None:
    """The earliest version of ``name`` trained with the training fingerprint ``digest``
    whose model directory is still here with its weights unchanged (else None: train)."""
    try:
        found = client.search_model_versions(
            f"name = '{name}' and tags.training_fingerprint = '{digest}'")
    except MlflowException:
        return None
    for version in sorted(found, key=lambda v: int(v.version)):
        model_dir = version.tags.get("model_dir")
        if model_dir and (Path(model_dir) / "weights.pt").is_file() \
                and registry.weights_sha256(model_dir) == version.tags.get("weights_sha256"):
            return version
    return None


#: Combined standard errors beyond which the pipeline calls the champion degraded (as the
#: champion-health flow's default, :class:`flows.health.HealthParams`).
HEALTH_N_SE = 3.0


def health_point(client, experiment: str, name: str, promotion: dict[str, Any],
                 validation: dict[str, Any], seed: int, logger) -> dict[str, Any]:
    """Log the champion's scores on this run's fresh test sets as one point of its health
    series (:mod:`tasks.health`, as the champion-health flow does); return the point and what
    degraded (the caller fails the run on it, after everything else is done)."""
    version = registry.champion_version(client, name)
    promoted = promotion["promoted"]
    metrics = validation["metrics"] if promoted else validation["champion_metrics"]
    if version is None or not metrics:
        return {"note": "champion not scored on the fresh sets: "
                        + (validation.get("champion_note") or "no champion")}
    passed = validation["passed"] if promoted else validation["champion_passed"]
    failures = [] if passed else ["fails the gate on the fresh test sets"]
    rows = health.checks(version.tags, metrics, HEALTH_N_SE)
    problems = [c.describe() for c in rows if c.degraded] + failures
    run_id = health.health_run(client, experiment, name)
    point = health.next_point(client, run_id)
    health.log_point(client, run_id, point, {
        **metrics, "passed": float(passed), "champion_version": float(version.version),
        "seed": float(seed), "degraded": float(bool(problems))}, tags={
        "health.last_seed": seed, "health.last_champion_version": version.version,
        "health.last_verdict": "degraded" if problems else "healthy",
        "health.last_point": point, "health.last_problems": "; ".join(problems)[:5000]},
        degraded=bool(problems))
    logger.info("champion %s v%s health point %d: %s", name, version.version, point,
                "; ".join(problems) or "healthy")
    return {"point": point, "run_id": run_id, "degraded": problems}


def apply_retention(params: PipelineParams, client, name: str, parent: str,
                    fixed_sets: set[str], duplicate: Any, model_dir: str, logger
                    ) -> dict[str, Any]:
    """Apply the retention policy (:mod:`tasks.retention`): old versions of ``name`` and old
    test sets (never this run's fixed regression sets); a duplicate's model directory too."""
    policy = params.retention
    deleted = prune_registry(client, name, policy.keep_last, policy.delete_model_dirs)
    for entry in deleted:
        logger.info("retention: deleted %s v%s (%s)%s", name, entry["version"],
                    ", ".join(entry["deleted"]),
                    f"; kept {'; '.join(entry['skipped'])}" if entry["skipped"] else "")
    removed = []
    if policy.test_set_max_age_days is not None:
        removed = prune_test_sets(dataset_root(), policy.test_set_max_age_days,
                                  keep=fixed_sets)
        for path in removed:
            logger.info("retention: deleted test set %s", path)
    if duplicate is not None and policy.delete_model_dirs \
            and duplicate.tags.get("model_dir") != os.path.abspath(model_dir):
        shutil.rmtree(model_dir, ignore_errors=True)  # a copy of the duplicate's weights
    tracking.log_metrics(client, parent, {"retention.versions_deleted": len(deleted),
                                          "retention.test_sets_deleted": len(removed)})
    return {"versions_deleted": [str(d["version"]) for d in deleted],
            "test_sets_deleted": removed}
