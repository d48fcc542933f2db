"""The ``champion-health`` flow: score the champion on fresh Monte Carlo, log one point of its
health series, fail visibly when it degraded.

The champion (``models:/<model>@champion``) is validated on test sets simulated with a *fresh*
seed (not only the shared test sets it was selected on), and its metrics are
compared with those recorded at its registration (:func:`tasks.health.degradations`). Every
check logs one point to the model's health run in MLflow (:mod:`tasks.health`), then the flow
raises :class:`~tasks.health.ChampionDegradedError` when a metric degraded beyond noise or the
champion now fails the gate: the Prefect flow run ends FAILED with the metric in its state
message (ready for a Prefect automation), and the failing night is in the series too.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from pydantic import BaseModel, ConfigDict, Field, field_validator

from flows.config import CheckParams, ValidationConfig, pipeline_for_model
from flows.sample import load_model_param
from prnf_core.cluster import ExecutionConfig
from prnf_core.errors import ConfigError
from prnf_core.paths import data_root
from tasks import health, registry, tracking
from tasks.validate import simulate_test_sets, validate_surrogate


class HealthParams(BaseModel):
    """Which champion to check, on how much fresh Monte Carlo, and how strictly."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field("prnf-ou", description="Registered model name (e.g. prnf-ou); its "
                                              "champion alias is checked.")
    validation: ValidationConfig = Field(
        default_factory=ValidationConfig,
        description="Test laws, sample size and gate thresholds; its seed is ignored (the "
                    "fresh seed below is used).")
    seed: int | None = Field(
        None, ge=0, description="Seed of the fresh MC test sets and surrogate samples; none: "
                                "drawn from the clock (recorded in the health run).")
    n_se: float = Field(3.0, gt=0, description="A metric is degraded when it is worse than at "
                                               "registration by more than this many combined "
                                               "standard errors.")
    sw_ratio_spread: float = Field(
        health.SW_RATIO_SPREAD, ge=0,
        description="Relative spread of an SW ratio between independent MC test sets, not in "
                    "its bootstrap SE, added to the noise of both sides (0: plain SE test).")
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig,
                                       description="Dask workers for the MC test sets.")

    @field_validator("model")
    @classmethod
    def _name(cls, value: str) -> str:
        value = value.strip()
        if not value or any(c in value for c in "/@'") or value.startswith("models:"):
            raise ValueError(f"must be a registered model name such as 'prnf-ou', got {value!r}")
        return value


def fresh_seed() -> int:
    """A seed from the clock (microseconds, below 2**31)."""
    return time.time_ns() // 1000 % (2**31 - 1)


@flow(name="champion-health", log_prints=True)
def health_flow(params: HealthParams) -> dict[str, Any]:
    """Score the champion on fresh MC; log the point; raise when it degraded (module doc)."""
    logger = get_run_logger()
    client = tracking.configure()
    tracking.check_reachable(client)
    version = registry.champion_version(client, params.model)
    if version is None:
        raise ConfigError(f"model: {params.model!r} has no champion (no registered model of "
                          "that name, or no version with the alias 'champion')")
    ref = f"models:/{params.model}/{version.version}"  # the alias may move meanwhile
    surrogate = load_model_param(ref)
    meta = surrogate.metadata
    problem = meta["problem"]["name"]
    seed = fresh_seed() if params.seed is None else params.seed
    check = CheckParams(validation=params.validation.model_copy(update={"seed": seed}),
                        execution=params.execution)
    laws = check.validation.resolved_laws(problem, meta["problem"]["params"])
    for name, law in laws.items():
        if law.dim != surrogate.model.dim:
            raise ConfigError(f"validation.laws.{name}: spec has dimension {law.dim} but the "
                              f"champion {ref} has dimension {surrogate.model.dim}")
    pipeline = pipeline_for_model(ref, meta, check)
    experiment = tracking.experiment_id(client, problem)
    run_id = health.health_run(client, experiment, params.model)
    point = health.next_point(client, run_id)
    report_dir = data_root() / "reports" / run_id / f"point-{point}"

    cases, configs, conditions = pipeline.validation_sets(laws, surrogate.model.conditioning)
    test_sets = simulate_test_sets(configs, params.execution)
    result = validate_surrogate(
        ref, test_sets, {k: v.model_dump(mode="json") for k, v in cases.items()},
        check.validation.n_samples, seed, check.validation.max_kl, check.validation.max_sw_ratio,
        train_seconds=float(meta.get("train_seconds", 0.0)), report_dir=str(report_dir),
        bootstrap=check.validation.bootstrap, kl_samples=check.validation.kl_samples,
        **({"conditions": conditions} if conditions else {}))
    if params.seed is None:  # a clock seed is never asked for again: do not keep its MC sets
        for path in test_sets.values():
            shutil.rmtree(path, ignore_errors=True)

    spread = {**health.DEFAULT_SPREAD, "sw_ratio": params.sw_ratio_spread}
    rows = health.checks(version.tags, result["metrics"], params.n_se, spread)
    problems = [c.describe() for c in rows if c.degraded]
    problems += [f"fails the gate: {failure}" for failure in result["failures"]]
    verdict = "degraded" if problems else "healthy"
    tracking.log_artifacts(client, run_id, result["files"], f"point-{point}")
    health.log_point(client, run_id, point, {
        **result["metrics"], "score": result["score"], "score_stderr": result["score_stderr"],
        "passed": float(result["passed"]), "champion_version": float(version.version),
        "seed": float(seed), "degraded": float(bool(problems))}, tags={
        "health.last_seed": seed, "health.last_champion_version": version.version,
        "health.last_verdict": verdict, "health.last_point": point, "problem": problem,
        "health.last_problems": "; ".join(problems)[:5000]}, degraded=bool(problems))

    summary = {
        "model": params.model, "version": str(version.version), "problem": problem,
        "seed": seed, "point": point, "run_id": run_id, "experiment_id": experiment,
        "passed": result["passed"], "score": result["score"],
        "score_stderr": result["score_stderr"], "score_name": result["score_name"],
        "metrics": {c.key: c.now for c in rows}, "checks": [c.as_row() for c in rows],
        "problems": problems, "report_dir": str(report_dir),
        "tracking_uri": tracking.tracking_uri()}
    _artifact(summary, rows, verdict)
    if problems:
        raise health.ChampionDegradedError(params.model, str(version.version), problems)
    logger.info("champion %s v%s healthy (seed %d, point %d)", params.model, version.version,
                seed, point)
    return summary


def _artifact(summary: dict[str, Any], rows: list[health.Check], verdict: str) -> None:
    head = (f"# Champion health: {summary['model']} v{summary['version']}: **{verdict}**\n\n"
            f"- fresh MC seed {summary['seed']}; point {summary['point']} of the MLflow run "
            f"`{tracking.run_url(summary['run_id'], summary['experiment_id'])}`\n"
            f"- gate: {'passed' if summary['passed'] else 'FAILED'}; score "
            f"({summary['score_name']}) {summary['score']:.4g} ± {summary['score_stderr']:.2g}\n"
            f"- plots and report: `{summary['report_dir']}`\n\n")
    tail = "".join(f"\n- {p}" for p in summary["problems"])
    create_markdown_artifact(head + health.markdown_table(rows) + tail,
                             key=f"prnf-health-{summary['problem']}".replace("_", "-"),
                             description=f"champion health of {summary['model']}")
