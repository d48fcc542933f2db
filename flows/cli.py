"""The ``prnf`` command line. Each command maps its options onto its flow's parameters model
with :func:`flows.config.build_params` (a ``--config`` YAML file, then ``--set KEY.SUB=VALUE``
overrides, then the options), starts the flow and prints the result (:mod:`flows.cli_output`).
Errors are one line (:class:`flows.cli_support.Guarded`): exit 2 for bad input, naming the
field; exit 1 for an unexpected failure, naming a log file with the traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

import flows  # noqa: F401  (service defaults)
from flows import cli_output as show
from flows import cli_support as sup
from flows.cli_support import Opt
from flows.cli_support import format_validation_error as format_validation_error
from flows.config import build_params, parse_assignments
from prnf_core.errors import PrnfError

app = typer.Typer(
    help="prnf: surrogate samplers for SDEs (simulate, train, validate, sample).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=sup.Guarded,
)

app.callback()(sup.global_options)


@app.command()
def problems() -> None:
    """List the built-in problems."""
    show.problems()


@app.command()
def simulate(
    problem: Annotated[str | None, Opt(help="Problem name (see `prnf problems`).")] = None,
    n_particles: Annotated[int | None, Opt("-n", "--n-particles")] = None,
    chunk_size: Annotated[int | None, Opt(help="Particles per chunk.")] = None,
    t_end: Annotated[float | None, Opt(help="Horizon T.")] = None,
    dt: Annotated[float | None, Opt(help="Euler-Maruyama step.")] = None,
    seed: sup.Int = None,
    initial: Annotated[str | None, Opt(
        help="Initial distribution: JSON/YAML text or a .yaml/.json file.")] = None,
    param: sup.ProblemParams = None,
    save_times: Annotated[str | None, Opt(help="Comma-separated snapshot times.")] = None,
    dtype: Annotated[str | None, Opt(help="float64 or float32.")] = None,
    out_path: Annotated[str | None, Opt("--out", help="Store path.")] = None,
    workers: sup.Workers = None,
    address: Annotated[str | None, Opt(help="Existing Dask scheduler address.")] = None,
    config: sup.Config = None,
    set_: sup.Sets = None,
) -> None:
    """Simulate a dataset of (x0, X_T) pairs into a chunked Zarr store (resumable)."""
    from flows.simulate import SimulateParams, simulate_flow

    options = {**sup.under("dataset", problem=problem, n_particles=n_particles,
                           chunk_size=chunk_size, t_end=t_end, dt=dt, seed=seed, dtype=dtype,
                           initial=initial, save_times=sup.parse_times(save_times)),
               **sup.param_options(param, "dataset.problem_params"), "output": out_path,
               **sup.under("execution", workers=workers, address=address)}
    show.simulated(sup.run_with_progress(simulate_flow, build_params(
        SimulateParams, config=config, sets=set_, options=options, paths=("output",),
        sections=("dataset", "execution"),
        defaults={"dataset.problem": "abc3d", "dataset.n_particles": 40_000})))


@app.command()
def train(
    data: Annotated[str | None, Opt(help="Dataset store to train on.")] = None,
    architecture: Annotated[str | None, Opt(help="prnf (default) or nsf.")] = None,
    epochs: sup.Int = None,
    iterations: Annotated[int | None, Opt(help="Gradient steps (overrides epochs).")] = None,
    batch_size: sup.Int = None,
    lr: Annotated[float | None, Opt(help="Adam learning rate.")] = None,
    lam: Annotated[float | None, Opt(help="Reversibility weight lambda.")] = None,
    width: Annotated[int | None, Opt(help="Hidden width.")] = None,
    layers: Annotated[int | None, Opt(help="Hidden layers.")] = None,
    preset: Annotated[str | None, Opt(
        help="'paper': the paper's network and optimization settings.")] = None,
    seed: sup.Int = None,
    memory_cap: sup.MemoryCap = None,
    out_dir: Annotated[str | None, Opt("--out", help="Model directory.")] = None,
    config: sup.Config = None,
    set_: sup.Sets = None,
    restart: Annotated[bool, Opt(
        "--restart", help="Discard the checkpoint and model in the model directory and train "
                          "from scratch (a re-run otherwise resumes, and refuses a checkpoint "
                          "of other settings).")] = False,
) -> None:
    """Train a surrogate on a dataset; writes the model directory and summary.json."""
    from flows.train import TrainParams, train_flow

    options = {**sup.under("model", architecture=architecture, hidden_width=width,
                           hidden_layers=layers, preset=preset),
               **sup.under("training", epochs=epochs, iterations=iterations,
                           batch_size=batch_size, lr=lr, lam=lam, seed=seed, preset=preset,
                           memory_cap_mb=memory_cap),
               "data": data, "output": out_dir, "restart": restart or None}
    show.trained(sup.run_with_progress(train_flow, build_params(
        TrainParams, config=config, sets=set_, options=options, sections=("model", "training"),
        paths=("data", "output"))))


@app.command()
def sample(
    model: Annotated[str, Opt(
        help="models:/NAME@champion, models:/NAME/VERSION, runs:/ID/model or a model directory."
    )],
    initial: Annotated[str, Opt(help="Initial distribution: JSON/YAML text or file.")],
    n: Annotated[int, Opt("-n", help="Number of samples.")] = 10_000,
    out_file: Annotated[Path, Opt("--out", help="Output .npy or .zarr.")] = Path("samples.npy"),
    seed: Annotated[int, Opt()] = 0,
    overwrite: Annotated[bool, Opt(
        "--overwrite", help="Replace an existing samples output (never a dataset store).")] = False,
    time: Annotated[float | None, Opt(
        "--time", help="Time t of X_t (a model conditioned on time).")] = None,
    param: Annotated[list[str] | None, Opt(
        help="SDE parameter NAME=VALUE of a model conditioned on it (repeatable).")] = None,
    allow_outside: Annotated[bool, Opt(
        "--allow-outside", help="Allow a time or parameter outside the trained box (warns).")
    ] = False,
    max_outside: Annotated[float | None, Opt(
        help="Warn when more than this fraction of the initial law lies outside the model's "
             "training x0 domain (default 0.01).")] = None,
    strict: Annotated[bool, Opt(
        "--strict", help="Refuse instead of warning above --max-outside (or when the model "
                         "cannot be checked).")] = False,
    track: Annotated[bool, Opt(
        "--track", help="Log the sampling (trust.outside_fraction ...) as an MLflow run.")
    ] = False,
) -> None:
    """Sample X_T (or X_t at --time, with --param NAME=VALUE for a conditioned model) for an
    initial distribution from a trained surrogate (no simulation). Prints the fraction of the
    law outside the model's training domain; warns above --max-outside, refuses with --strict."""
    from flows.sample import SampleParams, sample_flow

    params = build_params(SampleParams, paths=("model", "out"), options={
        "model": model, "initial": initial, "n": n, "out": str(out_file), "seed": seed,
        "overwrite": overwrite, "time": time, "allow_outside": allow_outside or None,
        "max_outside": max_outside, "strict": strict or None, "track": track or None,
        **sup.param_options(param, "sde_params")})
    # an --out that cannot be written is bad input too (exit 2)
    show.sampled(sup.run_flow(sample_flow, params, bad_input=(PrnfError, OSError)))


@app.command()
def validate(
    model: Annotated[str, Opt(help="models:/NAME@champion, runs:/... or a model dir.")],
    n_samples: Annotated[int | None, Opt(help="Samples per law and MC set.")] = None,
    workers: sup.Workers = None,
    config: sup.Config = None,
    set_: sup.Sets = None,
) -> None:
    """Re-validate a registered or saved surrogate against fresh simulations."""
    from flows.validate import ValidateParams, validate_flow

    params = build_params(ValidateParams, config=config, sets=set_, paths=("model",), options={
        "model": model, "validation.n_samples": n_samples, "execution.workers": workers})
    show.validated(sup.run_with_progress(validate_flow, params), model)


@app.command()
def check(
    model: Annotated[str, Opt(help="models:/NAME@champion, models:/NAME/N, runs:/... or a dir.")],
    initial: Annotated[str, Opt(help="The initial law: JSON/YAML text or file.")],
    n: Annotated[int | None, Opt(
        "-n", "--n", help="MC particles per half of the fresh test set (default 2000).")] = None,
    name: Annotated[str | None, Opt(help="Name of the law in metrics and tags.")] = None,
    seed: Annotated[int | None, Opt(help="Seed of the fresh MC test set.")] = None,
    workers: sup.Workers = None,
    config: sup.Config = None,
    set_: sup.Sets = None,
) -> None:
    """Can I trust the model for this initial law? Coverage, then a small fresh MC of the law:
    SW ratio, C2ST, the problem's QoIs with their errors; logged to MLflow against the model."""
    from flows.check import TrustCheckParams, check_flow

    params = build_params(TrustCheckParams, config=config, sets=set_, paths=("model",), options={
        "model": model, "initial": initial, "n": n, "name": name, "seed": seed,
        "execution.workers": workers})
    show.checked(sup.run_with_progress(check_flow, params))


@app.command()
def health(
    model: Annotated[str | None, typer.Argument(
        help="Registered model name whose champion is checked (default: prnf-ou).")] = None,
    seed: Annotated[int | None, Opt(
        help="Seed of the fresh MC test sets (default: drawn from the clock).")] = None,
    n_samples: Annotated[int | None, Opt(help="Samples per law and MC set.")] = None,
    workers: sup.Workers = None,
    config: sup.Config = None,
    set_: sup.Sets = None,
) -> None:
    """Score the champion on fresh simulations; log a point of its MLflow health series.

    Exit 0: healthy. Exit 3: the champion degraded beyond noise since its registration, or now
    fails the gate; the one-line error names every such metric (the point is logged all the
    same). Exit 2: bad input (e.g. no champion); 1: an unexpected failure.
    """
    from flows.health import HealthParams, health_flow

    params = build_params(HealthParams, config=config, sets=set_, options={
        "model": model, "seed": seed, "validation.n_samples": n_samples,
        "execution.workers": workers})
    show.health(sup.run_with_progress(health_flow, params))



@app.command()
def info(store: Annotated[str, typer.Argument(help="Dataset store: a path or an s3:// URL.")]
         ) -> None:
    """Show a dataset's id, configuration and completion."""
    show.dataset_info(store)


def _pipeline(**kwargs: Any) -> None:
    from flows.config import PipelineParams
    from flows.pipeline import pipeline_flow

    params = build_params(PipelineParams, **kwargs)
    show.pipeline_result(sup.run_with_progress(pipeline_flow, params))


@app.command()
def pipeline(
    problem: Annotated[str | None, Opt(help="Problem name.")] = None,
    n_train: Annotated[int | None, Opt(help="Training trajectories.")] = None,
    epochs: sup.Int = None,
    architecture: Annotated[str | None, Opt(help="prnf or nsf.")] = None,
    param: sup.ProblemParams = None,
    workers: sup.Workers = None,
    memory_cap: sup.MemoryCap = None,
    config: sup.Config = None,
    set_: sup.Sets = None,
) -> None:
    """Simulate -> train -> validate -> register/promote (MLflow + Prefect)."""
    # the pipeline's training defaults fill what the training section leaves out (flows.config)
    _pipeline(config=config, sets=set_, options={
        "problem": problem, "n_train": n_train, **sup.param_options(param, "problem_params"),
        "training.epochs": epochs, "training.memory_cap_mb": memory_cap,
        "model.architecture": architecture, "execution.workers": workers})


@app.command()
def register(
    model_dir: Annotated[str, typer.Argument(help="Model directory written by `prnf train`.")],
    workers: sup.Workers = None,
    config: Annotated[Path | None, Opt(
        help="YAML whose `validation` and `execution` sections are used (the pipeline's YAML "
             "works: its other sections are ignored).")] = None,
    set_: sup.Sets = None,
) -> None:
    """Validate, register and (if better) promote a model trained earlier."""
    from flows.register import RegisterParams, register_flow

    params = build_params(RegisterParams, config=config, keep=("validation", "execution"),
                          sets=set_, options={"model_dir": model_dir, "execution.workers": workers},
                          paths=("model_dir",))
    show.pipeline_result(sup.run_with_progress(register_flow, params))


@app.command()
def reproduce(
    experiment: Annotated[str, typer.Argument(help="bm1d, runaway2d or abc3d.")],
    profile: Annotated[str, Opt(
        help="quick (a 2-core CPU, under ~20 min) or paper (the paper's sizes).")] = "quick",
    set_: sup.Sets = None,
    output: Annotated[str | None, Opt(
        help="Directory of the results page (default: <data root>/results); `--output "
             "docs/results` rewrites the committed pages of a checkout.")] = None,
    workers: sup.Workers = None,
    no_registry: Annotated[bool, Opt(
        "--no-registry", help="Do not register the trained model.")] = False,
) -> None:
    """Reproduce one of the paper's experiments; write <output>/<experiment>.md and figures."""
    from flows.reproduce import ReproduceParams, reproduce_flow

    params = build_params(ReproduceParams, paths=("output_dir",), options={
        "experiment": experiment, "profile": profile, "overrides": parse_assignments(set_),
        "use_registry": not no_registry, "output_dir": output, "execution.workers": workers})
    show.reproduced(sup.run_with_progress(reproduce_flow, params))


@app.command()
def repair(
    store: Annotated[str, typer.Argument(help="Dataset store path.")],
    workers: Annotated[int | None, Opt(help="Dask workers (default: in-process).")] = None,
    wait: Annotated[float, Opt(
        help="Seconds to wait for a run writing the store (default: refuse at once).")] = 0.0,
) -> None:
    """Verify every chunk of a dataset; re-simulate corrupt or missing ones (bit-identical)."""
    from flows.repair import RepairParams, repair_flow, report_lines

    params = build_params(RepairParams, paths=("store",), options={
        "store": store, "lock_timeout": wait, "execution.workers": workers})
    for line in report_lines(sup.run_with_progress(repair_flow, params)):
        show.out.print(line, highlight=False)


@app.command()
def inverse(
    model: Annotated[str, Opt(help="models:/NAME@champion, models:/NAME/VERSION, runs:/... "
                                   "or a model directory.")],
    region: Annotated[str, Opt(help="A region the problem declares (runaway2d: runaway; "
                                    "abc3d: paper) or a box '{p: [1.75, null]}'.")],
    initial: Annotated[str | None, Opt(
        help="Initial law (JSON/YAML text or file): posterior samples of x0 given X_T in R."
    )] = None,
    axes: Annotated[str | None, Opt(help="Map axes, e.g. p,xi (default: the first two).")] = None,
    fixed: Annotated[list[str] | None, Opt(
        help="NAME=VALUE of a coordinate off the axes (repeatable; default: mid-domain).")
    ] = None,
    resolution: Annotated[int, Opt(help="Grid points per axis.")] = 41,
    draws: Annotated[int, Opt(help="Surrogate samples per grid point.")] = 1000,
    seed: Annotated[int, Opt()] = 0,
    time: Annotated[float | None, Opt(
        "--time", help="Time t (a model conditioned on time).")] = None,
    param: Annotated[list[str] | None, Opt(
        help="SDE parameter NAME=VALUE of a model conditioned on it (repeatable).")] = None,
    out_dir: Annotated[str, Opt("--out", help="Output directory.")
                       ] = "inverse/latest",
    overwrite: Annotated[bool, Opt("--overwrite", help="Replace a previous inverse output.")
                         ] = False,
) -> None:
    """Which initial states lead into a region: the map of P(X_T in R | x0) on a grid and,
    with --initial, posterior samples of x0 given X_T in R (no simulation)."""
    from flows.inverse import InverseParams, inverse_flow

    params = build_params(InverseParams, paths=("model", "out"), options={
        "model": model, "region": region, "initial": initial, "resolution": resolution,
        "draws": draws, "seed": seed, "time": time, "out": out_dir,
        "overwrite": overwrite or None,
        "axes": None if axes is None else [a.strip() for a in axes.split(",")],
        **sup.param_options(param, "sde_params"),
        **sup.under("fixed", **parse_assignments(fixed, "--fixed"))})
    show.inverted(sup.run_flow(inverse_flow, params, bad_input=(PrnfError, OSError)))


# --------------------------------------------------------------------------------------------
# prnf services: the production profile (flows/services/)

services_app = typer.Typer(
    help="The production profile on 127.0.0.1: PostgreSQL, SeaweedFS S3, Prefect and MLflow "
         "servers, a Dask cluster (`up`, `status`, `down`, `env`).",
    no_args_is_help=True)
app.add_typer(services_app, name="services")


def _port_help(field: str) -> str:
    from flows.services.config import ServicesConfig

    return ServicesConfig.model_fields[field].description or ""


def _print_env(values: dict[str, str]) -> None:
    from flows.services.manager import export_lines

    typer.echo(export_lines(values), nl=False)


@services_app.command("up")
def services_up(
    postgres_port: Annotated[int | None, Opt(help=_port_help("postgres_port"))] = None,
    s3_port: Annotated[int | None, Opt(help=_port_help("s3_port"))] = None,
    prefect_port: Annotated[int | None, Opt(help=_port_help("prefect_port"))] = None,
    mlflow_port: Annotated[int | None, Opt(help=_port_help("mlflow_port"))] = None,
    dask_port: Annotated[int | None, Opt(help=_port_help("dask_port"))] = None,
    dask_workers: Annotated[int | None, Opt(help=_port_help("dask_workers"))] = None,
    set_: Annotated[list[str] | None, Opt(
        "--set", help="Any other setting, KEY=VALUE (repeatable), e.g. weed_filer_port=8889, "
                      "dask_dashboard_port=8790, health_timeout=300.")] = None,
) -> None:
    """Bring the profile up (idempotent: running healthy servers are left alone) and print
    the environment to export: `eval "$(prnf services up)"`. Progress goes to stderr."""
    from flows.services.manager import up

    given = {"postgres_port": postgres_port, "s3_port": s3_port, "prefect_port": prefect_port,
             "mlflow_port": mlflow_port, "dask_port": dask_port, "dask_workers": dask_workers}
    options = {**parse_assignments(set_), **{k: v for k, v in given.items() if v is not None}}
    _print_env(up(options, echo=lambda line: sup.console.print(line, highlight=False)))


@services_app.command("status")
def services_status() -> None:
    """Each server: healthy / running (not healthy) / stopped, its port and pid. Exit 1 if
    any is not healthy."""
    from flows.services.manager import status

    rows = status()
    for row in rows:
        typer.echo(row.line())
    if any(row.state != "healthy" for row in rows):
        raise typer.Exit(1)


@services_app.command("down")
def services_down() -> None:
    """Stop every server of the profile; fails naming any process that survived."""
    from flows.services.manager import down

    down(echo=lambda line: sup.console.print(line, highlight=False))


@services_app.command("env")
def services_env() -> None:
    """Print the profile's environment as `export K=V` lines: `eval "$(prnf services env)"`."""
    from flows.services.manager import env

    _print_env(env())


@app.command()
def run() -> None:
    """The main job on embedded defaults: the whole pipeline on the 2-D OU problem."""
    _pipeline()


if __name__ == "__main__":  # pragma: no cover - `python -m flows.cli`
    app()
