"""The ``inverse`` flow: which initial states lead into a region (:mod:`prnf_core.inverse`).

From a registered or saved surrogate, without simulating: the map of
:math:`P(X_T \\in R \\mid x_0)` on a grid of the initial space (with its standard error) and, for
an initial law, posterior samples of :math:`x_0` given :math:`X_T \\in R`. Arrays
(``inverse.npz``), plots and a ``report.md`` are written to a new directory under the data root
(never over anything but a previous inverse output); for a model URI the results are also logged
to MLflow, in the problem's experiment, tagged with the model's name and version.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from pydantic import BaseModel, ConfigDict, Field, field_validator

from flows.sample import load_model_param
from prnf_core import inverse as inv
from prnf_core.errors import ConfigError
from prnf_core.initial import InitialSpec, parse_initial
from prnf_core.paths import ModelRef, atomic_path, is_url, resolve_path
from prnf_core.problems import get_problem
from prnf_core.verdict import Fingerprint

#: The marker file of an inverse output directory (what ``overwrite`` may replace).
MARKER = "inverse.json"


class InverseParams(BaseModel):
    """Which model, which region, which slice of the initial space, and how many samples."""

    model_config = ConfigDict(extra="forbid")

    model: ModelRef = Field(description="models:/NAME@alias, models:/NAME/VERSION, runs:/... or "
                                        "a model dir (a relative dir is taken under the data "
                                        "root).")
    region: str | dict[str, list[float | None]] = Field(
        description="Target region R: a region the problem declares (runaway2d: runaway; "
                    "abc3d: paper) or a box {coordinate: [low, high]} (null: unbounded).")
    initial: InitialSpec | None = Field(
        None, description="Initial law for posterior samples of x0 given X_T in R; empty: "
                          "the map only.")
    axes: list[str] | None = Field(
        None, description="One or two coordinates of the map's grid; default: the first two.")
    fixed: dict[str, float] = Field(
        default_factory=dict,
        description="Values of the coordinates off the axes (a slice); default: the middle of "
                    "the training domain.")
    resolution: int = Field(41, ge=2, le=400, description="Grid points per axis.")
    draws: int = Field(1000, ge=1, description="Surrogate samples per grid point (the SE of a "
                                               "probability h is sqrt(h(1-h)/draws)).")
    n_posterior: int = Field(20_000, ge=1, description="Draws of the initial law (posterior).")
    posterior_draws: int = Field(10, ge=1, description="Surrogate samples per initial draw "
                                                       "(its weight P(R | x0)).")
    seed: int = Field(0, ge=0, description="Seed of the initial draws and surrogate noise.")
    time: float | None = Field(None, ge=0, description="Time t, for a model conditioned on "
                                                       "time; empty: the model's horizon.")
    sde_params: dict[str, float] = Field(
        default_factory=dict, description="SDE parameters of a model conditioned on them.")
    out: str = Field("inverse/latest", description="Output directory; a relative path is taken "
                                                   "under the data root.")
    overwrite: bool = Field(False, description="Replace a previous inverse output there.")

    @field_validator("region", mode="before")
    @classmethod
    def _region(cls, value: Any) -> Any:
        """A box given as YAML/JSON text (the CLI) becomes a mapping; a name stays a name."""
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                return yaml.safe_load(value)
            except yaml.YAMLError as exc:
                raise ValueError(f"not a YAML mapping {{coordinate: [low, high]}}: {exc}"
                                 ) from None
        return value

    @field_validator("initial", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return None if value in (None, "", {}) else parse_initial(value)

    @field_validator("out")
    @classmethod
    def _out(cls, value: str) -> str:
        return resolve_path(value, "out")


def check_output(path: str, overwrite: bool) -> None:
    """Refuse anything at ``path`` except, with ``overwrite``, a previous inverse output."""
    target = Path(path)
    if not target.exists() and not target.is_symlink():
        return
    if not overwrite:
        raise ConfigError(f"out: {path} exists; pass --overwrite to replace it or choose "
                          "another directory")
    if target.is_symlink() or not (target / MARKER).is_file():
        raise ConfigError(f"out: {path} exists and is not a prnf inverse output; refusing to "
                          "replace it even with --overwrite")


def _plots(folder: Path, sde: Any, hits: inv.HitMap, post: inv.Posterior | None) -> list[str]:
    from prnf_core import plots

    title = f"P(X_T in R | x0), R = {hits.region.describe()}"
    if len(hits.axes) == 2:
        files = [plots.plot_heatmap(hits.probability, hits.grid[0], hits.grid[1],
                                    folder / "hit_map.png", xlabel=hits.axes[0],
                                    ylabel=hits.axes[1], label="P(X_T in R | x0)", title=title)]
    else:
        files = [plots.plot_curve(hits.grid[0], hits.probability, folder / "hit_map.png",
                                  err=hits.stderr, xlabel=hits.axes[0],
                                  ylabel="P(X_T in R | x0)", title=title)]
    if post is not None:
        files.append(plots.plot_marginals_1d(post.samples, post.x0, folder / "posterior.png",
                                             coord_names=list(sde.coord_names),
                                             title="x0 given X_T in R (orange) vs the law "
                                                   "(blue)"))
    return [str(f) for f in files]


def _report(params: InverseParams, hits: inv.HitMap, post: inv.Posterior | None,
            seconds: float) -> str:
    best = np.unravel_index(np.argmax(hits.probability), hits.probability.shape)
    at = ", ".join(f"{a} = {g[i]:.3g}" for a, g, i in zip(hits.axes, hits.grid, best,
                                                             strict=True))
    lines = [f"# Inverse question: which x0 lead into {hits.region.describe()}", "",
             f"Model `{params.model}`; map over {' × '.join(hits.axes)} "
             f"({' × '.join(str(len(g)) for g in hits.grid)} points"
             + (f", {', '.join(f'{k} = {v:.3g}' for k, v in hits.fixed.items())}" if hits.fixed
                else "") + f"), {hits.draws} surrogate samples per point; {seconds:.1f} s.", "",
             f"- largest P(R | x0): {hits.probability[best]:.3g} ± {hits.stderr[best]:.2g} at {at}",
             f"- mean over the grid: {hits.probability.mean():.3g}"]
    if post is not None:
        lines += [f"- initial law: P(X_T in R) = {post.probability:.4g} ± {post.stderr:.2g} "
                  f"({len(post.x0)} draws × {post.draws} samples); posterior effective sample "
                  f"size {post.ess:.0f}",
                  "- posterior mean of x0: " + ", ".join(
                      f"{v:.4g}" for v in post.samples.mean(axis=0))]
    return "\n".join(lines) + "\n"


def _track(params: InverseParams, problem: str, metrics: dict[str, float], folder: Path) -> str:
    """Log the results to MLflow against the model (name and version tags); the run id."""
    from tasks import registry, tracking

    client = tracking.configure()
    name, version = registry.model_version_of(client, params.model)
    region = params.region if isinstance(params.region, str) else json.dumps(params.region)
    with tracking.model_run(client, problem, "inverse", params.model,
                            run_name=f"inverse-{name or 'model'}", registered=(name, version),
                            tags={"model_uri": params.model}) as run:
        run.log(params={"region": region, "resolution": params.resolution,
                        "draws": params.draws, "seed": params.seed, "time": params.time,
                        "sde_params": params.sde_params},
                metrics=metrics, artifacts=sorted(folder.iterdir()))
    return run.run_id


@flow(name="inverse", log_prints=True)
def inverse_flow(params: InverseParams) -> dict[str, Any]:
    """Map P(X_T in R | x0) over a grid and, for an initial law, sample x0 given X_T in R."""
    logger = get_run_logger()
    check_output(params.out, params.overwrite)
    surrogate = load_model_param(params.model)
    fingerprint = Fingerprint.of_model(surrogate.metadata)
    sde = get_problem(fingerprint.problem, **dict(fingerprint.problem_params))
    condition = {"t": params.time, "params": params.sde_params or None}
    started = time.perf_counter()
    hits = inv.hit_map(surrogate.model, sde, params.region, params.axes, params.fixed,
                       params.resolution, params.draws, params.seed, **condition)
    post = None
    if params.initial is not None:
        post = inv.posterior(surrogate.model, sde, hits.region, params.initial,
                             n=params.n_posterior, draws=params.posterior_draws,
                             seed=params.seed, **condition)
    seconds = time.perf_counter() - started
    logger.info("inverse: map of %d points in %.1f s", hits.probability.size, seconds)
    metrics = {"inverse.max_probability": float(hits.probability.max()),
               "inverse.mean_probability": float(hits.probability.mean()),
               "inverse.seconds": seconds}
    if post is not None:
        metrics |= {"inverse.law_probability": post.probability,
                    "inverse.law_probability_stderr": post.stderr, "inverse.ess": post.ess}
    report = _report(params, hits, post, seconds)
    target = Path(params.out)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, unique=True) as tmp:
        tmp.mkdir()
        arrays = hits.arrays()
        if post is not None:
            arrays |= {"posterior_x0": post.samples, "law_x0": post.x0,
                       "law_weights": post.weights}
        np.savez(tmp / "inverse.npz", **arrays)
        files = _plots(tmp, sde, hits, post)
        (tmp / "report.md").write_text(report)
        (tmp / MARKER).write_text(json.dumps({
            "model": params.model, "region": hits.region.model_dump(mode="json"),
            "axes": list(hits.axes), "fixed": hits.fixed, "metrics": metrics,
            "params": params.model_dump(mode="json")}, indent=1))
        check_output(params.out, params.overwrite)  # still replaceable, right before it goes
    run_id = _track(params, fingerprint.problem, metrics, target) if is_url(params.model) else None
    create_markdown_artifact(report, key="inverse-report",
                             description=f"P(X_T in R | x0) for {params.model}")
    return {"out": str(target), "files": [str(target / Path(f).name) for f in files]
            + [str(target / "inverse.npz"), str(target / "report.md")],
            "metrics": metrics, "mlflow_run_id": run_id}
