"""The paper's three experiments as Prefect flows on the pipeline (``prnf reproduce``).

Each experiment runs the pipeline (simulate → train → validate → register) with its profile's
settings, then its study (exact KL per λ; runaway rate per temperature; the ABC parameter grid)
through the tasks in :mod:`tasks.study`, and writes ``<output_dir>/<experiment>.md`` with its
figures in ``<output_dir>/<experiment>/``. Everything is also logged to MLflow as one run
``reproduce-<experiment>`` (parameters, headline metrics, the page and figures as artifacts).
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from flows.reproduce import abc3d, bm1d, runaway2d
from flows.reproduce.report import ResultPage
from flows.reproduce.settings import Experiment, Profile, StudySettings, resolve_settings
from prnf_core.cluster import ExecutionConfig
from prnf_core.paths import resolve_path
from tasks import tracking

# Relative, so under the data root: a run never overwrites the committed pages by default.
DEFAULT_OUTPUT = "results"
EXPERIMENTS = {
    "bm1d": (bm1d.run, "Experiment 1: verification on 1-D Brownian motion (exact KL)"),
    "runaway2d": (runaway2d.run, "Experiment 2: runaway electrons (production rate vs T̂0)"),
    "abc3d": (abc3d.run, "Experiment 3: passive scalar in the chaotic ABC flow"),
}


class ReproduceParams(BaseModel):
    """One of the paper's experiments, at a profile, with optional overrides."""

    model_config = ConfigDict(extra="forbid")

    experiment: Experiment = Field(description="bm1d, runaway2d or abc3d.")
    profile: Profile = Field(
        "quick", description="quick: a 2-core CPU in under ~20 min; paper: the paper's sizes.")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Dotted setting -> value on top of the profile, e.g. "
                    "{\"training.epochs\": 5, \"n_train\": 2000}.")
    output_dir: str = Field(
        DEFAULT_OUTPUT,
        description="Where the page and figures go; a relative path is taken under the data root "
                    "(from `prnf reproduce --output`: under the working directory). Default: "
                    "<data root>/results, never the committed docs/results of a checkout.")
    execution: ExecutionConfig = Field(
        default_factory=ExecutionConfig, description="Dask workers for the simulations.")
    use_registry: bool = Field(True, description="Register the trained model in MLflow.")

    @field_validator("output_dir")
    @classmethod
    def _confine(cls, value: str) -> str:
        resolve_path(value, "output_dir")  # refuse an escape; kept as given for command_line()
        return value

    @model_validator(mode="after")
    def _check_overrides(self) -> ReproduceParams:
        self.settings()
        return self

    def settings(self) -> StudySettings:
        return resolve_settings(self.experiment, self.profile, self.overrides)

    def output_path(self) -> Path:
        """Where the page goes: ``output_dir`` under the path rule of :mod:`prnf_core.paths`."""
        return Path(resolve_path(self.output_dir, "output_dir"))

    def _shown_output(self) -> str:
        """``output_dir`` as given, except that an absolute path below the working directory
        (what the CLI makes of ``--output docs/results``) is shown relative to it, so that a
        results page reads the same on every machine."""
        path, cwd = Path(self.output_dir), Path.cwd()
        if path.is_absolute() and path.is_relative_to(cwd):
            return path.relative_to(cwd).as_posix()
        return self.output_dir

    def command_line(self) -> str:
        """The ``prnf reproduce`` call that runs these parameters."""
        parts = ["prnf reproduce", self.experiment, f"--profile {self.profile}"]
        for key, value in self.overrides.items():
            setting = f"{key}={json.dumps(value, separators=(',', ':'))}"
            parts.append(f"--set {shlex.quote(setting)}")
        if self.output_dir != DEFAULT_OUTPUT:  # the default is the CLI's default too
            parts.append(f"--output {shlex.quote(self._shown_output())}")
        if self.execution.workers is not None:
            parts.append(f"--workers {self.execution.workers}")
        if not self.use_registry:
            parts.append("--no-registry")
        return " ".join(parts)


@flow(name="reproduce", log_prints=True)
def reproduce_flow(params: ReproduceParams) -> dict[str, Any]:
    """Run one experiment; write its results page; log it to MLflow. Returns a summary."""
    logger = get_run_logger()
    started = time.perf_counter()
    settings = params.settings()
    run, title = EXPERIMENTS[params.experiment]
    page = ResultPage(params.experiment, title, params.output_path(), params.command_line(),
                      params.profile, settings.model_dump(mode="json"))
    client = tracking.configure()
    tracking.check_reachable(client)
    result = run(settings, page, params.execution, params.use_registry)
    seconds = time.perf_counter() - started
    path = page.write(seconds)

    experiment = tracking.experiment_id(client, params.experiment)
    with tracking.child_run(client, experiment, f"reproduce-{params.experiment}", None,
                            {"prnf.profile": params.profile}) as run_id:
        tracking.log_params(client, run_id, {"profile": params.profile,
                                             "settings": settings.model_dump(mode="json")})
        tracking.log_metrics(client, run_id, {**result["metrics"], "wall_seconds": seconds,
                                              "goal_met": float(result["goal_met"])})
        tracking.set_tags(client, run_id, {f"pipeline_run{('.' + k) if k else ''}": v
                                           for k, v in result["pipeline_runs"].items()})
        tracking.log_artifacts(client, run_id, [path])
        tracking.log_artifacts(client, run_id, page.files(), params.experiment)
    create_markdown_artifact(path.read_text(), key=f"reproduce-{params.experiment}",
                             description=title)
    logger.info("%s: %s; page %s (%.0f s)", params.experiment, result["headline"], path,
                seconds)
    return {"experiment": params.experiment, "profile": params.profile, "page": str(path),
            "run_id": run_id, "seconds": seconds, "goal_met": result["goal_met"],
            "headline": result["headline"], "metrics": result["metrics"]}
