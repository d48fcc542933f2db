"""The ``check`` flow (``prnf check``): trust by verification for ONE initial law.

Coverage (:mod:`prnf_core.trust`) says whether a law lies where the model was trained; this
flow says how good the model actually is there: a small fresh Monte Carlo test set of that law
(two independent halves of ``n`` particles, sized by the user, simulated with a progress bar),
then the validation metrics of :func:`tasks.validate.evaluate_model`: the sliced-Wasserstein
ratio to the MC noise floor (with its bootstrap SE), the classifier two-sample test, the
problem's quantity of interest with both standard errors and, where the problem has an exact
transition, the exact KL. The report is logged to MLflow against the model: a run ``check`` in
the experiment of its problem, tagged with the model (and, for a registry URI, its name and
version), and, for a registry version, version tags ``check.<law>.sw_ratio``,
``check.<law>.passed``, ``check.<law>.outside_fraction`` and ``check.<law>.run_id``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field

from flows.config import BootstrapCount, InitialSpecField
from flows.sample import load_model_param, trust_of
from prnf_core.cluster import ExecutionConfig
from prnf_core.dataset import DatasetConfig
from prnf_core.errors import ConfigError
from prnf_core.initial import InitialSpec
from prnf_core.paths import ModelRef, data_root
from prnf_core.trust import DEFAULT_MAX_OUTSIDE
from prnf_core.validation import metric_key
from tasks import registry, tracking
from tasks.validate import evaluate_model, flat_metrics, simulate_test_sets, verdict_of


class TrustCheckParams(BaseModel):
    """What `prnf check` verifies: one model on one initial law, against fresh Monte Carlo."""

    model_config = ConfigDict(extra="forbid")

    model: ModelRef = Field(description="models:/NAME@alias, models:/NAME/VERSION, runs:/... or "
                                        "a dir (a relative dir is taken under the data root).")
    initial: InitialSpecField = Field(description="The initial law to check the model for.")
    name: str | None = Field(
        None, description="Name of the law in the metrics and tags (val/<name>/..., "
                          "check.<name>.*); default: its kind, e.g. maxwellian.")
    n: int = Field(2000, ge=100, description="MC particles per half of the fresh test set (the "
                                             "second half gives the noise floor), and "
                                             "surrogate samples.")
    seed: int = Field(2_000_003, ge=0, description="Seed of the fresh MC test set and the "
                                                   "surrogate samples (a test set of the same "
                                                   "seed and law is reused).")
    chunk_size: int = Field(5000, gt=0, description="Particles per chunk of the MC test set.")
    max_sw_ratio: float = Field(2.0, gt=0, description="Trusted only if the SW ratio to the MC "
                                                       "noise floor is at most this.")
    max_kl: float = Field(0.02, gt=0, description="Problems with an exact transition: trusted "
                                                  "only if the exact KL is at most this too.")
    bootstrap: BootstrapCount = Field(
        30, ge=0, description="Bootstrap resamples for the SW ratio's SE.")
    max_outside: float = Field(
        DEFAULT_MAX_OUTSIDE, ge=0, le=1,
        description="Warn when more of the law than this lies outside the training domain.")
    execution: ExecutionConfig = Field(
        default_factory=ExecutionConfig, description="Dask workers for the MC test set.")

    def law_name(self) -> str:
        return metric_key(self.name or self.initial.kind)


def mc_test_config(meta: dict[str, Any], law: InitialSpec, params: TrustCheckParams
                ) -> tuple[DatasetConfig, str, dict[str, Any], float]:
    """The MC test set of ``law`` for the model whose metadata is ``meta``: its problem and
    parameters, horizon, step and precision; with the problem, its parameters and horizon."""
    problem = meta["problem"]
    trained = meta.get("dataset_config") or {}
    problem_params = dict(trained.get("problem_params", problem["params"]))
    t_end = float(trained.get("t_end", problem["t_end"]))
    config = DatasetConfig(problem=problem["name"], problem_params=problem_params, initial=law,
                           n_particles=2 * params.n, chunk_size=min(params.chunk_size,
                                                                    2 * params.n),
                           t_end=t_end, dt=trained.get("dt", problem["dt"]),
                           seed=params.seed, dtype=trained.get("dtype", "float64"))
    return config, problem["name"], problem_params, t_end


@flow(name="check", log_prints=True)
def check_flow(params: TrustCheckParams) -> dict[str, Any]:
    """Coverage of the law, a fresh MC test set of it, the validation metrics; logged to MLflow
    against the model (its registry version's tags when it has one)."""
    surrogate = load_model_param(params.model)
    model, meta = surrogate.model, surrogate.metadata
    if params.initial.dim != model.dim:
        raise ConfigError(f"initial: spec has dimension {params.initial.dim} but model "
                          f"{params.model!r} has dimension {model.dim}")
    if model.conditioning is not None:
        raise ConfigError(f"model: {params.model!r} is conditioned on (t, θ); prnf check "
                          "verifies one-horizon models only for now (use prnf validate)")
    law = params.law_name()
    trust = trust_of(model, params.initial, params.max_outside, seed=params.seed)
    config, problem, problem_params, t_end = mc_test_config(meta, params.initial, params)
    client = tracking.configure()
    tracking.check_reachable(client)
    name, number = registry.model_version_of(client, params.model)
    # a version whose tags the check sets: one with a number (not models:/NAME/latest)
    version = (name, number) if name and number and number.isdigit() else None
    tags = {"model": params.model, "check.law": law}
    if version is not None:
        tags.update({"model_name": version[0], "model_version": version[1]})
    with tracking.model_run(client, problem, "check", params.model, tags=tags,
                            registered=(name, number)) as run:
        test_sets = simulate_test_sets({law: config}, params.execution)
        report, _, _ = evaluate_model(model, problem, problem_params, test_sets,
                                      {law: params.initial}, params.n, params.seed, t_end,
                                      detailed=True, bootstrap=params.bootstrap)
        metrics = flat_metrics(report)
        if trust.get("outside_fraction") is not None:
            metrics.update({f"trust/{k}": trust[k] for k in
                            ("outside_fraction", "outside_stderr", "p_value")})
        verdict = verdict_of(metrics, [law], params.max_sw_ratio, params.max_kl)
        markdown = _markdown(params, law, report.to_markdown(), trust, verdict, metrics)
        out = data_root() / "reports" / run.run_id
        out.mkdir(parents=True, exist_ok=True)
        (out / "check.md").write_text(markdown)
        run.log(params={"initial": params.initial.model_dump(mode="json"), "n": params.n,
                        "seed": params.seed, "max_sw_ratio": params.max_sw_ratio,
                        "test_set": test_sets[law]},
                metrics={**metrics, "passed": float(verdict.passed)},
                artifacts=[out / "check.md"], artifact_path="report")
        if version is not None:
            _tag_version(client, version, law, metrics, verdict.passed, run.run_id)
    create_markdown_artifact(markdown, key="prnf-check", description=f"check of {params.model}")
    return {"model": params.model, "law": law, "run_id": run.run_id, "problem": problem,
            "version": None if version is None else {"name": version[0],
                                                     "version": version[1]},
            "passed": verdict.passed, "failures": list(verdict.failures), "trust": trust,
            "metrics": {k.removeprefix(f"val/{law}/"): v for k, v in metrics.items()},
            "report": str(Path(out) / "check.md"), "markdown": markdown}


def _tag_version(client: Any, version: tuple[str, str], law: str, metrics: dict[str, float],
                 passed: bool, run_id: str) -> None:
    name, number = version
    values = {"sw_ratio": metrics.get(f"val/{law}/sw_ratio"),
              "sw_ratio_stderr": metrics.get(f"val/{law}/sw_ratio_stderr"),
              "c2st_acc": metrics.get(f"val/{law}/c2st_acc"),
              "outside_fraction": metrics.get("trust/outside_fraction"),
              "passed": str(passed).lower(), "run_id": run_id}
    for key, value in values.items():
        if value is not None:
            text = value if isinstance(value, str) else f"{value:.6g}"
            client.set_model_version_tag(name, number, f"check.{law}.{key}", text)


def _markdown(params: TrustCheckParams, law: str, report: str, trust: dict[str, Any],
              verdict: Any, metrics: dict[str, float]) -> str:
    lines = [f"# prnf check: {params.model} on {law}", "",
             f"Initial law: `{params.initial.model_dump_json()}`", "",
             f"Coverage: {trust['message']}", "",
             f"Fresh MC: {params.n} + {params.n} particles (seed {params.seed}); surrogate: "
             f"{params.n} samples.", "",
             f"**{'Trusted' if verdict.passed else 'NOT trusted'}** ({verdict.rule}); SW ratio "
             f"{metrics.get(f'val/{law}/sw_ratio', float('nan')):.3g} (limit "
             f"{params.max_sw_ratio:g})", ""]
    lines += [f"- {failure}" for failure in verdict.failures]
    return "\n".join(lines) + "\n\n" + report.split("\n", 1)[1].lstrip("\n")
