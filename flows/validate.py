"""The ``validate`` flow: re-validate a registered or saved surrogate on fresh simulations."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from flows.config import CheckParams, pipeline_for_model
from flows.sample import load_model_param
from prnf_core.errors import ConfigError
from prnf_core.paths import ModelRef, data_root
from tasks import tracking
from tasks.validate import simulate_test_sets, validate_surrogate


class ValidateParams(CheckParams):
    model: ModelRef = Field(description="models:/NAME@alias, models:/NAME/VERSION, runs:/... or "
                                        "a dir (a relative dir is taken under the data root).")


@flow(name="validate", log_prints=True)
def validate_flow(params: ValidateParams) -> dict[str, Any]:
    """Fresh MC test sets for the model's problem, metrics, plots; logged to MLflow."""
    surrogate = load_model_param(params.model)
    meta = surrogate.metadata
    problem = meta["problem"]["name"]
    problem_params = meta["problem"]["params"]
    laws = params.validation.resolved_laws(problem, problem_params)
    for name, law in laws.items():
        if law.dim != surrogate.model.dim:
            raise ConfigError(f"validation.laws.{name}: spec has dimension {law.dim} but model "
                              f"{params.model!r} has dimension {surrogate.model.dim}")
    pipeline = pipeline_for_model(params.model, meta, params)
    client = tracking.configure()
    tracking.check_reachable(client)  # also ends runs an outage or a kill left RUNNING
    experiment = tracking.experiment_id(client, problem)
    with tracking.child_run(client, experiment, "validate", None,
                            tags={"model": params.model}) as run_id:
        # a model conditioned on (t, θ): every law at every point of the validation grid
        cases, configs, conditions = pipeline.validation_sets(laws, surrogate.model.conditioning)
        test_sets = simulate_test_sets(configs, params.execution)
        result = validate_surrogate(
            params.model, test_sets, {k: v.model_dump(mode="json") for k, v in cases.items()},
            params.validation.n_samples, params.validation.seed, params.validation.max_kl,
            params.validation.max_sw_ratio,
            train_seconds=float(meta.get("train_seconds", 0.0)),
            report_dir=str(data_root() / "reports" / run_id),
            bootstrap=params.validation.bootstrap, kl_samples=params.validation.kl_samples,
            **({"conditions": conditions} if conditions else {}))
        tracking.log_params(client, run_id, {"validation": params.validation.model_dump(
            mode="json")})
        tracking.log_metrics(client, run_id, result["metrics"])
        tracking.log_metrics(client, run_id, {"score": result["score"],
                                              "score_stderr": result["score_stderr"],
                                              "passed": float(result["passed"])})
        tracking.log_artifacts(client, run_id, result["files"], "report")
    create_markdown_artifact(result["report_markdown"], key="prnf-validation",
                             description=f"validation of {params.model}")
    return {"model": params.model, "problem": problem, "run_id": run_id,
            "score": result["score"], "score_stderr": result["score_stderr"],
            "failures": result["failures"], "score_name": result["score_name"],
            "passed": result["passed"], "report_dir": str(data_root() / "reports" / run_id),
            "metrics": result["metrics"]}
