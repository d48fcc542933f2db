"""The pipeline flow: simulate -> train -> validate -> register/promote, tracked in MLflow.

One MLflow parent run per pipeline run with child runs ``simulate``, ``train`` and
``validate``; the trained surrogate is logged as a pyfunc model, registered as
``prnf-<problem>`` with the alias ``challenger``, and promoted to ``champion`` only when it passes
validation and beats the current champion on the same fresh test sets.

Nothing computed is lost when the tracking server goes away mid-run. Training does not need
it: if live metric logging fails on a dead server, training resumes from its last epoch
checkpoint without live metrics. Any later MLflow call that fails the same way (after the
bounded retries of :mod:`tasks.tracking`) ends the run with a
:class:`~tasks.tracking.TrackingUnavailableError` naming what was kept: the complete dataset
(reused by the next run with the same configuration) and the trained model directory, which
``prnf register MODEL_DIR`` validates and registers once the server is back.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from flows import nightly
from flows.config import PipelineParams, condition_label
from flows.train import TrainParams, default_model_dir
from prnf_core.dataset import open_dataset
from prnf_core.models import Conditioning, load_metadata
from prnf_core.paths import data_root, is_url
from prnf_core.train import TrainConfig
from prnf_core.validation import metric_key
from prnf_core.verdict import Fingerprint
from tasks import registry, tracking
from tasks.growth import grow_training_set, plan_training_set, training_chunks
from tasks.health import ChampionDegradedError
from tasks.pyfunc import log_surrogate
from tasks.simulate import prepare_dataset, simulate_chunks
from tasks.train import train_model
from tasks.validate import simulate_test_sets, validate_surrogate


@flow(name="pipeline", log_prints=True, flow_run_name=nightly.flow_run_name)
def pipeline_flow(params: PipelineParams) -> dict[str, Any]:
    """Run the whole pipeline on ``params``; return a small summary (ids, paths, metrics)."""
    logger = get_run_logger()
    started = time.perf_counter()
    client = tracking.configure()
    tracking.check_reachable(client)
    experiment = tracking.experiment_id(client, params.problem)
    parent = tracking.start_run(client, experiment, "pipeline")
    kept: dict[str, str] = {}  # what is already on disk: "dataset", "model_dir"
    try:
        result = _run(params, client, experiment, parent, logger, kept)
    except Exception as exc:
        if tracking.is_unavailable(exc):
            raise _tracking_lost(exc, parent, kept) from exc
        with contextlib.suppress(Exception):
            client.set_terminated(parent, "FAILED")
        raise
    except BaseException:  # interrupted: mark the run, but never mask the interruption
        with contextlib.suppress(Exception):
            client.set_terminated(parent, "FAILED")
        raise
    result["seconds"] = time.perf_counter() - started
    try:
        tracking.log_metrics(client, parent, {"pipeline_seconds": result["seconds"]})
        client.set_terminated(parent, "FINISHED")
    except Exception as exc:
        if not tracking.is_unavailable(exc):
            raise
        # Everything is registered already: failing now would only prompt a duplicate.
        logger.warning("MLflow run %s registered v%s but could not be marked FINISHED: the "
                       "tracking server went away (%s)", parent, result["version"],
                       type(exc).__name__)
    return result


def _tracking_lost(exc: Exception, parent: str, kept: dict[str, str]
                   ) -> tracking.TrackingUnavailableError:
    """The error for a tracking server lost mid-run: what is kept, and how to finish the job."""
    cause = exc if isinstance(exc, tracking.TrackingUnavailableError) else tracking.describe(exc)
    parts = [f"MLflow tracking server {tracking.tracking_uri()} became unreachable during "
             f"pipeline run {parent} (bounded retries spent; {cause})."]
    if "dataset" in kept:
        parts.append(f"Kept the dataset {kept['dataset']} ({_completeness(kept['dataset'])}; "
                     "a run with the same configuration reuses it).")
    if "model_dir" in kept:
        parts.append(f"Kept the trained model directory {kept['model_dir']}: once the server "
                     f"is back, run `prnf register {kept['model_dir']}` (with the pipeline's "
                     "--config for the same validation settings) to validate and register it.")
    else:
        parts.append("No model was trained yet: run `prnf pipeline` again once the server is "
                     "back.")
    return tracking.TrackingUnavailableError(" ".join(parts))


def _completeness(path: str) -> str:
    try:
        return "complete" if open_dataset(path).is_complete else "incomplete, resumable"
    except Exception as exc:  # only decorates an error message
        return f"not readable: {type(exc).__name__}"


def _run(params: PipelineParams, client, experiment: str, parent: str, logger,
         kept: dict[str, str]) -> dict[str, Any]:
    tracking.log_params(client, parent, params.model_dump(mode="json"))
    dataset_cfg = params.training_dataset().on_device(params.execution.device)  # its generator
    plan = plan_training_set(dataset_cfg, params.grow_to, params.grow_by)
    chunks = training_chunks(plan)
    tracking.set_tags(client, parent, {"mlflow.runName": nightly.run_name(params.problem, plan),
                                       "data.action": plan.action})

    # 1. simulate: a fixed store (reused when complete), or the family store, grown
    with tracking.child_run(client, experiment, "simulate", parent) as run_id:
        if plan.family_id is None:
            prepare_dataset(dataset_cfg, plan.path)
        else:
            grow_training_set(dataset_cfg, plan)
        dataset_cfg = dataset_cfg.model_copy(update={"n_particles": plan.n_particles})
        sim = simulate_chunks(dataset_cfg, plan.path, params.execution)
        kept["dataset"] = sim["path"]
        dataset = open_dataset(sim["path"])
        tracking.log_params(client, run_id, {"dataset": dataset_cfg.resolved(), **chunks})
        data_tags = {"dataset_id": sim["dataset_id"], "dataset_path": sim["path"],
                     "data.n_particles": plan.n_particles, "data.n_before": plan.n_before,
                     **({"data.family_id": plan.family_id} if plan.family_id else {})}
        tracking.set_tags(client, run_id, data_tags)
        tracking.log_metrics(client, run_id, {
            "chunks_simulated": sim["chunks_simulated"],
            "chunks_reused": sim["chunks_already_done"],
            "n_particles": plan.n_particles,
            "simulation_seconds": dataset.simulation_seconds(),
            "wall_seconds": sim["seconds"]})
    tracking.set_tags(client, parent, {**data_tags, **chunks})

    # 2. train (from scratch, or fine-tuning the champion), log the surrogate as pyfunc
    name = registry.model_name(params.fingerprint())
    init_from, start_note = nightly.warm_start_source(params, client, name, dataset_cfg)
    training = params.training
    if init_from is not None:
        training = training.model_copy(update={"epochs": params.fine_tune.epochs,
                                               "iterations": None, "lr": params.fine_tune.lr})
    logger.info("training: %s", start_note)
    tracking.set_tags(client, parent, {"warm_start": start_note})
    planned = nightly.training_digest(sim["dataset_id"], params, training, init_from,
                                      dataset_cfg.sde())
    trained = nightly.trained_before(client, name, planned) if params.use_registry else None
    if trained is not None:  # the same data, settings and start: the same weights again
        logger.info("not training: %s v%s was trained on the same data with the same settings "
                    "and start weights (training fingerprint %s)", name, trained.version,
                    planned)
        tracking.set_tags(client, parent, {"trained_before": trained.version})
        model_dir = trained.tags["model_dir"]
        return validate_and_register(
            params, client, experiment, parent, model_dir, registry.logged_model_uri(trained),
            train_seconds=float(load_metadata(model_dir)["train_seconds"]), duplicate_of=trained)
    model_cfg = params.surrogate_model()  # with the (t, θ) box of the data, if any
    train_params = TrainParams(data=sim["path"], model=model_cfg, training=training)
    model_dir = default_model_dir(train_params) + f"-{parent[:8]}"
    with tracking.child_run(client, experiment, "train", parent) as run_id:
        tracking.log_params(client, run_id, {"model": model_cfg.model_dump(mode="json"),
                                             "training": training.model_dump(mode="json"),
                                             "dataset_id": sim["dataset_id"],
                                             "init_from": init_from or "none"})
        tracking.set_tags(client, run_id, {"warm_start": start_note,
                                           **conditioning_tags(model_cfg.conditioning)})
        summary = _train(sim["path"], params, model_cfg, training, model_dir, run_id, logger,
                         init_from)
        kept["model_dir"] = model_dir
        tracking.log_metrics(client, run_id, {
            "best_val_nll": summary["best_val_nll"], "epochs_run": summary["epochs_run"],
            "train_seconds": summary["seconds"],
            "final_val_rev": summary["final"].get("val_rev", 0.0)})
        tracking.log_artifacts(client, run_id, [Path(model_dir) / "summary.json",
                                                Path(model_dir) / "history.json"])
        model_uri = log_surrogate(model_dir, run_id, dataset.load("x0")[:5])
    extra_tags = {**chunks, "data.n_particles": plan.n_particles, "warm_start": start_note,
                  "training_fingerprint": summary["training_fingerprint"]}
    return validate_and_register(params, client, experiment, parent, model_dir, model_uri,
                                 train_seconds=summary["seconds"] + dataset.simulation_seconds(),
                                 extra_tags=extra_tags)


def _train(data: str, params: PipelineParams, model_cfg: Any, training: TrainConfig,
           model_dir: str, run_id: str, logger, init_from: str | None) -> dict[str, Any]:
    """Train with live metrics in the MLflow run ``run_id``. If the tracking server stops
    answering, resume from the last epoch checkpoint (model, optimizer and RNG state restored),
    with live metrics again only if the server answers again, and at last without.
    Training never fails for want of a tracking server: the model directory it leaves is what
    ``prnf register`` needs."""
    tracking_run_id: str | None = run_id
    for attempt in range(3):
        try:
            return train_model(data, model_cfg, training, model_dir,
                               tracking_run_id=tracking_run_id, init_from=init_from)
        except Exception as exc:
            if tracking_run_id is None or not tracking.is_unavailable(exc):
                raise
            live = attempt == 0 and tracking.reachable()
            logger.warning("live metric logging failed (tracking server %s: %s); resuming "
                           "training from the last checkpoint in %s %s", tracking.tracking_uri(),
                           tracking.describe(exc), model_dir,
                           "(the server answers again)" if live else "without live metrics")
            tracking_run_id = run_id if live else None
    raise AssertionError("unreachable: the last attempt trains without tracking")


def validate_and_register(params: PipelineParams, client, experiment: str, parent: str,
                          model_dir: str, model_uri: str, train_seconds: float,
                          extra_tags: dict[str, Any] | None = None,
                          duplicate_of: Any | None = None) -> dict[str, Any]:
    """Steps 3 and 4: validate on MC test sets (the champion too), register, promote; then the
    champion's health point and the retention policy, when the parameters ask for them.

    The gate and the promotion are decided on the fresh test sets when ``fresh_test_set`` is
    on (drawn with this run's seed), else on the fixed regression sets (``validation.seed``);
    with fresh sets the regression sets are scored too and recorded (``regression/...``).
    """
    logger = get_run_logger()
    meta = load_metadata(model_dir)
    laws = params.validation.resolved_laws(params.problem, params.problem_params)
    box = model_box(meta)
    points = params.condition_points(box)  # a grid outside the model's box: refused here
    grid_tags = conditioning_tags(box, points)
    fingerprint = Fingerprint.of_model(meta)
    name = registry.model_name(fingerprint)
    champion = registry.champion_version(client, name) if params.use_registry else None
    champion_ref = f"models:/{name}@{registry.CHAMPION}" if champion is not None else None
    report_dir = data_root() / "reports" / parent
    fresh_seed = None
    if params.fresh_test_set:
        fresh_seed = params.fresh_seed if params.fresh_seed is not None else _clock_seed()
        tracking.set_tags(client, parent, {"fresh_seed": fresh_seed})
    if grid_tags:
        tracking.set_tags(client, parent, grid_tags)
    with tracking.child_run(client, experiment, "validate", parent) as run_id:
        tracking.set_tags(client, run_id, grid_tags)
        validation, test_ids, fixed_sets = _score(params, laws, box, fresh_seed, model_dir,
                                                  champion_ref, train_seconds, report_dir)
        _log_validation(client, run_id, validation, test_ids, "")
        regression = validation
        if fresh_seed is not None:
            regression, regression_ids, fixed_sets = _score(
                params, laws, box, None, model_dir, champion_ref, train_seconds,
                report_dir / "regression")
            _log_validation(client, run_id, regression, regression_ids, "regression/")
            test_ids.update({f"regression/{k}": v for k, v in regression_ids.items()})
        tracking.log_artifacts(client, run_id, validation["files"], "report")
    tracking.log_metrics(client, parent, {"score": validation["score"],
                                          "passed": float(validation["passed"])})

    promotion: dict[str, Any] = {"promoted": False, "decision": "registration disabled",
                                 "champion_uri": None, "champion_version": None}
    version, duplicate = None, duplicate_of
    if params.use_registry and duplicate is None:
        duplicate = registry.same_weights(client, name, model_dir)
    if duplicate is not None:
        current = registry.champion_version(client, name)
        why = ("not trained again: the same data, settings and start weights"
               if duplicate_of is not None else "bit-identical: same weights digest")
        promotion = {"promoted": False,
                     "decision": f"not registered: identical to v{duplicate.version} ({why})",
                     "champion_version": str(current.version) if current else None,
                     "champion_uri": champion_ref}
        tracking.set_tags(client, parent, {"promotion": promotion["decision"],
                                           "duplicate_of": duplicate.version})
    elif params.use_registry:
        tags = {"dataset_id": meta["dataset_id"], "problem": params.problem,
                "fingerprint": json.dumps(fingerprint.as_dict(), sort_keys=True),
                "fingerprint_digest": fingerprint.digest,
                "validation_status": "passed" if validation["passed"] else "failed",
                "validation_rule": validation["rule"], "score": validation["score"],
                "score_stderr": validation["score_stderr"],
                "score_name": validation["score_name"], "pipeline_run_id": parent,
                **test_ids, **grid_tags, **(extra_tags or {}),
                **({"fresh_seed": fresh_seed} if fresh_seed is not None else {}),
                **_metric_tags(validation["metrics"], ""),
                **(_metric_tags(regression["metrics"], "regression/")
                   if regression is not validation else {})}
        version = registry.register(client, model_uri, name, parent, tags)
        client.set_registered_model_tag(name, "fingerprint", tags["fingerprint"])
        promotion = registry.promote_if_better(client, name, version, validation,
                                               params.validation.promotion_n_se)
        tracking.set_tags(client, parent, {"model_version": version,
                                           "promotion": promotion["decision"]})
    champion_after = _champion_scores(validation, regression, promotion)
    tracking.log_metrics(client, parent, {
        "promoted": float(promotion["promoted"]), "registered": float(version is not None),
        **{f"champion_after.{k.removeprefix('champion_after_')}": v
           for k, v in champion_after.items()}})

    result = {
        "problem": params.problem, "dataset_id": meta["dataset_id"],
        "dataset_path": meta["dataset_path"], "model_dir": model_dir, "model_uri": model_uri,
        "registered_model": name, "version": version, "run_id": parent,
        "experiment_id": experiment, "score": validation["score"],
        "score_stderr": validation["score_stderr"], "score_name": validation["score_name"],
        "passed": validation["passed"], "failures": validation["failures"],
        "champion_score": validation["champion_score"],
        "champion_score_stderr": validation["champion_score_stderr"], **promotion,
        "duplicate_of": None if duplicate is None else str(duplicate.version),
        "fresh_seed": fresh_seed, "regression_score": regression["score"],
        "regression_score_stderr": regression["score_stderr"], **champion_after,
        "report_dir": str(report_dir),
        "metrics": {k: v for k, v in validation["metrics"].items()
                    if k.endswith(("kl", "energy_ratio", "sw_ratio", "c2st_acc", "_z"))
                    or k.startswith("cost/")},
        "tracking_uri": tracking.tracking_uri(),
    }
    if params.use_registry and fresh_seed is not None and promotion["champion_version"]:
        result["health"] = nightly.health_point(client, experiment, name, promotion,
                                                validation, fresh_seed, logger)
    if params.use_registry and params.retention is not None:
        result["retention"] = nightly.apply_retention(params, client, name, parent, fixed_sets,
                                                      duplicate, model_dir, logger)
    _report_artifact(result, validation["report_markdown"], experiment)
    logger.info("score %.4g, %s", result["score"], promotion["decision"])
    if result.get("health", {}).get("degraded"):
        raise ChampionDegradedError(name, promotion["champion_version"],
                                    result["health"]["degraded"])
    return result


def _clock_seed() -> int:
    """A fresh seed from the clock (recorded by the caller)."""
    return time.time_ns() % (2 ** 31)


def _score(params: PipelineParams, laws: dict, box: Conditioning | None, mc_seed: int | None,
           model_dir: str, champion_ref: str | None, train_seconds: float, report_dir: Path
           ) -> tuple[dict[str, Any], dict[str, str], set[str]]:
    """Validate the model (and the champion) on the test sets drawn with ``mc_seed`` (None:
    the fixed ``validation.seed``), each law at each point of the (t, θ) grid of a model with
    the conditioning ``box``; the validation, the test sets' ids and their paths."""
    seed = params.validation.seed if mc_seed is None else mc_seed
    cases, test_cfgs, conditions = params.validation_sets(laws, box, seed)
    test_sets = simulate_test_sets(test_cfgs, params.execution)
    validation = validate_surrogate(
        model_dir, test_sets, {k: v.model_dump(mode="json") for k, v in cases.items()},
        params.validation.n_samples, seed, params.validation.max_kl,
        params.validation.max_sw_ratio, train_seconds=train_seconds,
        report_dir=str(report_dir), bootstrap=params.validation.bootstrap,
        kl_samples=params.validation.kl_samples, champion_ref=champion_ref,
        history=training_history(model_dir),
        **({"conditions": conditions} if conditions else {}))
    ids = {f"test_set.{metric_key(k)}": open_dataset(p).dataset_id
           for k, p in test_sets.items()}
    return validation, ids, {p if is_url(p) else str(Path(p).resolve())
                             for p in test_sets.values()}


def model_box(meta: dict[str, Any]) -> Conditioning | None:
    """The conditioning box of a saved model (its metadata ``meta``), None without one."""
    box = (meta.get("model") or {}).get("conditioning")
    return None if box is None else Conditioning.model_validate(box)


def conditioning_tags(box: Conditioning | None,
                      points: list[dict[str, Any]] | None = None) -> dict[str, str]:
    """The MLflow tags of a conditioned model's domain (``conditioning.time = [a, b]``,
    ``conditioning.params.<name> = [low, high]``, ``conditioning.scale.<name> = log`` for a
    log-scale parameter) and, with ``points``, of its validation grid
    (``validation.grid``: every point; ``validation.grid.t``, ``validation.grid.<name>``: the
    values); empty for a model without conditioning.

    >>> box = Conditioning(time=(0.25, 1.0), params={"mu": (0.5, 2.0)})
    >>> conditioning_tags(box)
    {'conditioning.time': '[0.25, 1.0]', 'conditioning.params.mu': '[0.5, 2.0]'}
    >>> conditioning_tags(Conditioning(params={"mu": (0.5, 2.0)}, param_scale={"mu": "log"}))
    {'conditioning.params.mu': '[0.5, 2.0]', 'conditioning.scale.mu': 'log'}
    """
    if box is None:
        return {}
    tags = {} if box.time is None else {"conditioning.time": json.dumps(list(box.time))}
    tags.update({f"conditioning.params.{k}": json.dumps([lo, hi])
                 for k, (lo, hi) in box.params.items()})
    tags.update({f"conditioning.scale.{k}": scale for k, scale in box.param_scale.items()})
    if points:
        tags["validation.grid"] = "; ".join(condition_label(p, box) for p in points)
        if box.time is not None:
            tags["validation.grid.t"] = json.dumps(sorted({p["t"] for p in points}))
        tags.update({f"validation.grid.{k}": json.dumps(sorted({p["params"][k] for p in points}))
                     for k in box.params})
    return tags


def _log_validation(client, run_id: str, validation: dict[str, Any], ids: dict[str, str],
                    prefix: str) -> None:
    tracking.log_metrics(client, run_id, {f"{prefix}{k}": v
                                          for k, v in validation["metrics"].items()})
    tracking.log_metrics(client, run_id, {
        f"{prefix}score": validation["score"], f"{prefix}score_stderr": validation["score_stderr"],
        f"{prefix}passed": float(validation["passed"]),
        **({f"{prefix}champion_score": validation["champion_score"]}
           if validation["champion_score"] is not None else {})})
    tracking.set_tags(client, run_id, {f"{prefix}{k}": v for k, v in ids.items()})


def _metric_tags(metrics: dict[str, float], prefix: str) -> dict[str, str]:
    """The per-law metrics a version carries as tags (the health check's baseline)."""
    return {f"{prefix}{k}": f"{v:.6g}" for k, v in metrics.items()
            if k.endswith(("kl", "kl_stderr", "energy_ratio", "sw_ratio", "sw_ratio_stderr",
                           "c2st_acc"))}


def _champion_scores(validation: dict[str, Any], regression: dict[str, Any],
                     promotion: dict[str, Any]) -> dict[str, Any]:
    """The champion after this run, scored on this run's test sets and on the fixed regression
    sets (comparable across runs): the challenger's scores when it was promoted."""
    if promotion["promoted"]:
        return {"champion_after_score": validation["score"],
                "champion_after_regression_score": regression["score"],
                "champion_after_regression_score_stderr": regression["score_stderr"]}
    return {"champion_after_score": validation["champion_score"],
            "champion_after_regression_score": regression["champion_score"],
            "champion_after_regression_score_stderr": regression["champion_score_stderr"]}


def training_history(model_dir: str) -> list[dict[str, float]]:
    """The per-epoch history a training run saved in ``model_dir`` (empty when there is none)."""
    path = Path(model_dir) / "history.json"
    return json.loads(path.read_text()) if path.is_file() else []


def _report_artifact(result: dict[str, Any], report_md: str, experiment: str) -> None:
    links = [
        f"- MLflow run: `{tracking.run_url(result['run_id'], experiment)}` "
        f"(tracking: `{result['tracking_uri']}`)",
        f"- Model: `{result['model_uri']}`; registered `{result['registered_model']}` "
        f"v{result['version']}; {result['decision']}",
        f"- Champion: `{result['champion_uri']}`",
        f"- Plots and report: `{result['report_dir']}`",
    ]
    create_markdown_artifact("\n".join(links) + "\n\n" + report_md,
                             key=f"prnf-report-{result['problem']}".replace("_", "-"),
                             description="prnf pipeline validation report")
