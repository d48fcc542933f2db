"""The ``prnf`` command line. Each command validates its input, then starts a flow.

Errors: every command runs inside :class:`_Guarded`, which turns any exception into one line
on stderr: bad input (a prnf error, a pydantic ``ValidationError``, a missing file) exits 2 with
its message, which names the field; anything else is unexpected and exits 1 naming the
exception and a log file, ``<data root>/logs/prnf-<time>-<pid>.log``, that holds the full
traceback. ``prnf --debug COMMAND`` also prints tracebacks on the terminal (Prefect's log lines
of a failed flow or task carry theirs only then).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

import flows  # noqa: F401  (service defaults)
from prnf_core.errors import PrnfError
from prnf_core.paths import is_url


class _Guarded(TyperGroup):
    """The ``prnf`` command group: the one place where a command's errors are reported."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        ctx.meta["prnf.argv"] = list(args)  # for the log file of an unexpected error
        return super().parse_args(ctx, args)

    def invoke(self, ctx: typer.Context) -> Any:
        global _brief_logs
        debug = bool(ctx.params.get("debug"))
        _brief_logs = not debug
        if "prefect" in sys.modules:
            _quiet_log_tracebacks()
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # exits and usage errors: typer reports them
        except Exception as exc:
            _report(exc, debug, ctx.meta.get("prnf.argv", []))
        finally:
            _brief_logs = False


app = typer.Typer(
    help="prnf: surrogate samplers for SDEs (simulate, train, validate, sample).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=_Guarded,
)
console = Console(stderr=True)
out = Console()

# While a command runs without --debug, terminal log handlers leave tracebacks out.
_brief_logs = False


@app.callback()
def _global_options(
    debug: Annotated[bool, typer.Option(
        "--debug", help="Show full tracebacks on the terminal (otherwise an error is one line; "
                        "an unexpected one names a log file with its traceback).")] = False,
) -> None:
    """Options of every command (read by :class:`_Guarded`)."""


def _bad_input(exc: BaseException) -> str | None:
    """The one-line message of an error that is the user's to fix (exit 2), else None.

    Prefect re-raises a flow's or task's exception itself; should it wrap one (its own
    exception types), the prnf error in the chain is the one reported.
    """
    if isinstance(exc, ValidationError):
        return format_validation_error(exc)
    if isinstance(exc, PrnfError | FileNotFoundError):
        return str(exc)
    if type(exc).__module__.split(".")[0] == "prefect":
        inner = exc.__cause__ or exc.__context__
        return _bad_input(inner) if inner is not None else None
    return None


def _report(exc: Exception, debug: bool, argv: list[str]) -> None:
    """Report ``exc`` in one line and exit: 2 for bad input, 1 (with a log file holding the
    traceback) for an unexpected failure. With ``debug``, the traceback is printed first."""
    text = "".join(traceback.format_exception(exc))
    if debug:
        sys.stderr.write(text)
        sys.stderr.flush()
    message = _bad_input(exc)
    if message is not None:
        _fail(message)
    log = _write_log(text, argv)
    where = f"the traceback is in {log}" if log else "no log file could be written"
    cause = " ".join(str(exc).split())[:300]
    _fail(f"unexpected {type(exc).__name__}{': ' + cause if cause else ''} ({where}; "
          "`prnf --debug ...` shows it here)", code=1)


def _write_log(text: str, argv: list[str]) -> Path | None:
    """Write an unexpected error's traceback to ``<data root>/logs`` (else the temp dir)."""
    from prnf_core import __version__
    from prnf_core.paths import data_root

    stamp = time.strftime("%Y%m%dT%H%M%S")
    header = (f"prnf {__version__} (Python {sys.version.split()[0]}), pid {os.getpid()}, "
              f"{time.strftime('%Y-%m-%d %H:%M:%S %z')}\n"
              f"command: prnf {shlex.join(argv)}\ncwd: {os.getcwd()}\n\n")
    for folder in (data_root() / "logs", Path(tempfile.gettempdir())):
        path = folder / f"prnf-{stamp}-{os.getpid()}.log"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(header + text)
        except OSError:
            continue
        return path
    return None


class _BriefFormatter(logging.Formatter):
    """A terminal handler's own formatter, minus the traceback while :data:`_brief_logs`."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        if not _brief_logs:
            return self.inner.format(record)
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:  # other handlers (Prefect's API log) still get the traceback
            record.exc_info, record.exc_text, record.stack_info = saved


def _quiet_log_tracebacks() -> None:
    """Give every terminal log handler (Prefect's console handler logs a failing flow's
    traceback) a :class:`_BriefFormatter`. Called once Prefect has set its logging up."""
    # list(): one C-level copy, so that a logger created meanwhile by another thread (Prefect
    # runs some) cannot change the dict under the loop
    known = list(logging.Logger.manager.loggerDict.values())
    loggers = [logging.getLogger(), *(x for x in known if isinstance(x, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if (isinstance(handler, logging.StreamHandler)
                    and not isinstance(handler, logging.FileHandler)
                    and not isinstance(handler.formatter, _BriefFormatter)):
                handler.setFormatter(_BriefFormatter(handler.formatter))


def _fail(message: str, code: int = 2) -> None:
    # escape: a message quoting input such as "[nan]" must not be read as console markup
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, each starting with the dotted field name.

    prnf's own messages start with the field they are about (``prnf_core.errors``): one raised
    by a whole section (``t_end: ...`` from ``dataset``) is joined to its location
    (``dataset.t_end: ...``), one that repeats its field (``initial.kind: ...`` under
    ``dataset.initial``) replaces it.
    """
    lines = []
    for err in exc.errors():
        parts = [str(p) for p in err["loc"]]
        msg = err["msg"].removeprefix("Value error, ")
        if parts and msg.startswith((f"{parts[-1]}:", f"{parts[-1]}.")):
            parts.pop()
        if re.match(r"[a-z_][\w.]*: ", msg):
            lines.append(".".join([*parts, msg]))
        else:
            lines.append(f"{'.'.join(parts) or '(input)'}: {msg}")
    return "\n  ".join(lines)


def _parse_kv(items: list[str] | None, option: str) -> dict[str, Any]:
    result = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"{option}: expected KEY=VALUE, got {item!r}")
        try:
            result[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            _fail(f"{option}: value of {key!r} is not valid YAML: {exc}")
    return result


def _load_yaml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    if not path.is_file():
        _fail(f"--config: no such file {str(path)!r}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        _fail(f"--config: {path} is not valid YAML: {exc}")
    if not isinstance(data, dict):
        _fail(f"--config: {path} must hold a mapping")
    return data


def _section(raw: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
    """A copy of the mapping ``raw[key]`` (empty when absent), for options to be merged into."""
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail(f"{where}{key}: must be a mapping, got {value!r}")
    return dict(value)


def _from_cwd(path: str | None) -> str | None:
    """A relative path typed in a shell means the working directory; the flows would take it
    under the data root (``prnf_core.paths``), so the CLI passes it on as an absolute path."""
    if not path or is_url(path):
        return path
    return os.path.abspath(os.path.expanduser(path))


@app.command()
def problems() -> None:
    """List the built-in problems."""
    from prnf_core.problems import get_problem, list_problems, problem_parameters

    table = Table("name", "dim", "noise", "T", "dt", "exact p(X_T|x0)", "description")
    for name in sorted(list_problems()):
        try:
            sde = get_problem(name)
        except PrnfError:  # a registered problem without defaults for all its parameters
            table.add_row(name, "-", "-", "-", "-", "-", "needs parameters (see below)")
            continue
        table.add_row(name, str(sde.dim), sde.noise, f"{sde.t_end:g}", f"{sde.dt:g}",
                      "yes" if sde.has_exact_transition else "no", sde.description)
    out.print(table)
    out.print("parameters (override with --param KEY=VALUE):")
    for name in sorted(list_problems()):
        params = ", ".join(f"{k}={v}" for k, v in problem_parameters(name).items())
        out.print(f"  {name}: {params}", highlight=False)


def _start(params_model: type, run, raw: dict[str, Any]) -> Any:
    """Validate ``raw`` into ``params_model``, then run the flow with a progress bar. A
    ``ValidationError`` (exit 2 naming the fields) and the flow's errors are reported by
    :class:`_Guarded`."""
    params = params_model.model_validate(raw)
    return _run_with_progress(run, params)


def _run_flow(run, *args: Any) -> Any:
    """Run a flow (Prefect is imported by now) with brief terminal logs unless --debug."""
    _quiet_log_tracebacks()
    return run(*args)


def _run_with_progress(run, *args: Any) -> Any:
    from tasks.progress import listening

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        tasks_by_name: dict[str, Any] = {}

        def update(what: str, done: int, total: int) -> None:
            if what not in tasks_by_name:
                tasks_by_name[what] = bar.add_task(what, total=total)
            bar.update(tasks_by_name[what], completed=done, total=total)

        with listening(update):
            return _run_flow(run, *args)


@app.command()
def simulate(
    problem: Annotated[str | None, typer.Option(help="Problem name (see `prnf problems`).")] = None,
    n_particles: Annotated[int | None, typer.Option("-n", "--n-particles")] = None,
    chunk_size: Annotated[int | None, typer.Option(help="Particles per chunk.")] = None,
    t_end: Annotated[float | None, typer.Option(help="Horizon T.")] = None,
    dt: Annotated[float | None, typer.Option(help="Euler-Maruyama step.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    initial: Annotated[
        str | None, typer.Option(help="Initial distribution: JSON/YAML text or a .yaml/.json file.")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="Problem parameter KEY=VALUE (repeatable).")
    ] = None,
    save_times: Annotated[str | None, typer.Option(help="Comma-separated snapshot times.")] = None,
    dtype: Annotated[str | None, typer.Option(help="float64 or float32.")] = None,
    out_path: Annotated[str | None, typer.Option("--out", help="Store path.")] = None,
    workers: Annotated[int | None, typer.Option(help="Dask workers (0: in-process).")] = None,
    address: Annotated[str | None, typer.Option(help="Existing Dask scheduler address.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML file of simulate parameters; options override it.")
    ] = None,
) -> None:
    """Simulate a dataset of (x0, X_T) pairs into a chunked Zarr store (resumable)."""
    params = _load_yaml(config)
    dataset = _section(params, "dataset")
    overrides = {
        "problem": problem, "n_particles": n_particles, "chunk_size": chunk_size,
        "t_end": t_end, "dt": dt, "seed": seed, "dtype": dtype, "initial": initial,
    }
    dataset.update({k: v for k, v in overrides.items() if v is not None})
    if param:
        dataset["problem_params"] = {**_section(dataset, "problem_params", "dataset."),
                                     **_parse_kv(param, "--param")}
    if save_times:
        try:
            dataset["save_times"] = [float(t) for t in save_times.split(",")]
        except ValueError:
            _fail(f"--save-times: expected comma-separated numbers, got {save_times!r}")
    dataset.setdefault("problem", "abc3d")
    dataset.setdefault("n_particles", 40_000)
    params["dataset"] = dataset
    if out_path is not None:
        params["output"] = out_path
    if isinstance(params.get("output"), str):
        params["output"] = _from_cwd(params["output"])
    execution = _section(params, "execution")
    execution.update({k: v for k, v in {"workers": workers, "address": address}.items()
                      if v is not None})
    params["execution"] = execution
    result = _start_simulate(params)
    out.print(f"dataset id: {result['dataset_id']}")
    out.print(f"store: {result['path']}")
    out.print(
        f"chunks simulated: {result['chunks_simulated']} "
        f"(already complete: {result['chunks_already_done']}) of {result['n_chunks']}; "
        f"complete: {result['complete']}; {result['seconds']:.1f} s"
    )


def _start_simulate(raw: dict[str, Any]) -> dict[str, Any]:
    from flows.simulate import SimulateParams, simulate_flow

    return _start(SimulateParams, simulate_flow, raw)


@app.command()
def train(
    data: Annotated[str | None, typer.Option(help="Dataset store to train on.")] = None,
    architecture: Annotated[str | None, typer.Option(help="prnf (default) or nsf.")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    iterations: Annotated[
        int | None, typer.Option(help="Gradient steps (overrides epochs).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate.")] = None,
    lam: Annotated[float | None, typer.Option(help="Reversibility weight lambda.")] = None,
    width: Annotated[int | None, typer.Option(help="Hidden width.")] = None,
    layers: Annotated[int | None, typer.Option(help="Hidden layers.")] = None,
    preset: Annotated[
        str | None, typer.Option(help="'paper': the paper's network and optimization settings.")
    ] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    out_dir: Annotated[str | None, typer.Option("--out", help="Model directory.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML file of train parameters; options override it.")
    ] = None,
    restart: Annotated[bool, typer.Option(
        "--restart", help="Discard the checkpoint and model in the model directory and train "
                          "from scratch (a re-run otherwise resumes, and refuses a checkpoint "
                          "of other settings).")] = False,
) -> None:
    """Train a surrogate on a dataset; writes the model directory and summary.json."""
    from flows.train import TrainParams, train_flow

    raw = _load_yaml(config)
    model = _section(raw, "model")
    training = _section(raw, "training")
    model.update({k: v for k, v in {"architecture": architecture, "hidden_width": width,
                                    "hidden_layers": layers, "preset": preset}.items()
                  if v is not None})
    training.update({k: v for k, v in {"epochs": epochs, "iterations": iterations,
                                       "batch_size": batch_size, "lr": lr, "lam": lam,
                                       "seed": seed, "preset": preset}.items()
                     if v is not None})
    raw.update(model=model, training=training)
    if data is not None:
        raw["data"] = data
    if out_dir is not None:
        raw["output"] = out_dir
    if restart:
        raw["restart"] = True
    for key in ("data", "output"):
        if isinstance(raw.get(key), str):
            raw[key] = _from_cwd(raw[key])
    summary = _start(TrainParams, train_flow, raw)
    resumed = summary.get("resumed_epochs", 0)
    out.print(f"model: {summary['model_dir']}")
    out.print(f"summary: {summary['model_dir']}/summary.json")
    out.print(f"best val_nll {summary['best_val_nll']:.4f} (epoch {summary['best_epoch']}), "
              f"val reversibility {summary['final'].get('val_rev', 0.0):.2e}, "
              f"{summary['epochs_run']} epochs"
              f"{f' ({resumed} resumed from the checkpoint)' if resumed else ''} "
              f"in {summary['seconds']:.1f} s")


@app.command()
def sample(
    model: Annotated[str, typer.Option(
        help="models:/NAME@champion, models:/NAME/VERSION, runs:/ID/model or a model directory."
    )],
    initial: Annotated[str, typer.Option(help="Initial distribution: JSON/YAML text or file.")],
    n: Annotated[int, typer.Option("-n", help="Number of samples.")] = 10_000,
    out_file: Annotated[Path, typer.Option("--out", help="Output .npy or .zarr.")] = Path(
        "samples.npy"),
    seed: Annotated[int, typer.Option()] = 0,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing samples output (never a dataset store).")] = False,
) -> None:
    """Sample X_T for an initial distribution from a trained surrogate (no simulation)."""
    from flows.sample import SampleParams, sample_flow

    try:
        params = SampleParams(model=_from_cwd(model), initial=initial, n=n,
                              out=_from_cwd(str(out_file)), seed=seed, overwrite=overwrite)
    except ValidationError as exc:
        _fail(format_validation_error(exc))
    try:
        result = _run_flow(sample_flow, params)
    except (PrnfError, OSError) as exc:
        _fail(str(exc))
    out.print(f"wrote {result['n']} samples of X_T (d={result['dim']}) to {result['out']} "
              f"in {result['seconds']:.2f} s")


@app.command()
def validate(
    model: Annotated[str, typer.Option(help="models:/NAME@champion, runs:/... or a model dir.")],
    n_samples: Annotated[int | None, typer.Option(help="Samples per law and MC set.")] = None,
    workers: Annotated[int | None, typer.Option(help="Dask workers (0: in-process).")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML file of validate parameters.")
    ] = None,
) -> None:
    """Re-validate a registered or saved surrogate against fresh simulations."""
    from flows.validate import ValidateParams, validate_flow

    raw = _load_yaml(config)
    raw["model"] = _from_cwd(model)
    if n_samples is not None:
        raw["validation"] = {**_section(raw, "validation"), "n_samples": n_samples}
    if workers is not None:
        raw["execution"] = {**_section(raw, "execution"), "workers": workers}
    result = _start(ValidateParams, validate_flow, raw)
    table = Table("metric", "value", title=f"validation of {model}")
    for key, value in sorted(result["metrics"].items()):
        if key.endswith(("kl", "energy_ratio", "sw_ratio", "c2st_acc", "_z")):
            table.add_row(key, f"{value:.4g}")
    out.print(table)
    out.print(f"{'passed' if result['passed'] else 'FAILED'}: score ({result['score_name']}) "
              f"{result['score']:.4g} ± {result['score_stderr']:.2g}; report and plots: "
              f"{result['report_dir']}"
              + "".join(f"\n  {failure}" for failure in result["failures"]), highlight=False)


@app.command()
def info(store: Annotated[Path, typer.Argument(help="Dataset store path.")]) -> None:
    """Show a dataset's id, configuration and completion."""
    from prnf_core.dataset import open_dataset

    dataset = open_dataset(store)  # a missing or bad store: exit 2 by _Guarded
    meta = dataset.meta
    missing = dataset.missing_chunks()
    out.print(f"dataset id: {meta['dataset_id']}  (schema {meta['schema_version']}, "
              f"prnf {meta['package_version']})")
    out.print(f"particles: {dataset.n_particles}, dim: {dataset.dim}, "
              f"chunks missing: {len(missing)} of {dataset.config.n_chunks}, "
              f"complete: {dataset.is_complete}")
    out.print(json.dumps(meta["resolved_config"], indent=2))


def _start_pipeline(raw: dict[str, Any]) -> dict[str, Any]:
    from flows.config import PipelineParams
    from flows.pipeline import pipeline_flow

    return _start(PipelineParams, pipeline_flow, raw)


def _print_pipeline(result: dict[str, Any]) -> None:
    table = Table("metric", "value", title=f"prnf pipeline: {result['problem']}")
    for key, value in sorted(result["metrics"].items()):
        table.add_row(key, f"{value:.4g}")
    table.add_row(f"score ({result['score_name']})",
                  f"{result['score']:.4g} ± {result['score_stderr']:.2g}")
    out.print(table)
    out.print(f"validation: {'passed' if result['passed'] else 'FAILED'}"
              + "".join(f"\n  {failure}" for failure in result["failures"]), highlight=False)
    out.print(f"registered {result['registered_model']} v{result['version']}: "
              f"{result['decision']}", highlight=False)
    out.print(f"champion: {result['champion_uri'] or 'none'}", highlight=False)
    out.print(f"plots and report: {result['report_dir']}", highlight=False)
    out.print(f"MLflow run {result['run_id']} ({result['tracking_uri']}); "
              f"dataset {result['dataset_path']}; model {result['model_dir']}", highlight=False)


@app.command()
def pipeline(
    problem: Annotated[str | None, typer.Option(help="Problem name.")] = None,
    n_train: Annotated[int | None, typer.Option(help="Training trajectories.")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    architecture: Annotated[str | None, typer.Option(help="prnf or nsf.")] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="Problem parameter KEY=VALUE (repeatable).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Dask workers (0: in-process).")] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML file of pipeline parameters; options override it.")
    ] = None,
) -> None:
    """Simulate -> train -> validate -> register/promote (MLflow + Prefect)."""
    raw = _load_yaml(config)
    raw.update({k: v for k, v in {"problem": problem, "n_train": n_train}.items()
                if v is not None})
    if param:
        raw["problem_params"] = {**_section(raw, "problem_params"), **_parse_kv(param, "--param")}
    if epochs is not None:  # the pipeline's training defaults fill the rest (flows.config)
        raw["training"] = {**_section(raw, "training"), "epochs": epochs}
    if architecture is not None:
        raw["model"] = {**_section(raw, "model"), "architecture": architecture}
    if workers is not None:
        raw["execution"] = {**_section(raw, "execution"), "workers": workers}
    _print_pipeline(_start_pipeline(raw))


@app.command()
def register(
    model_dir: Annotated[str, typer.Argument(help="Model directory written by `prnf train`.")],
    workers: Annotated[int | None, typer.Option(help="Dask workers (0: in-process).")] = None,
    config: Annotated[Path | None, typer.Option(
        help="YAML whose `validation` and `execution` sections are used (the pipeline's YAML "
             "works: its other sections are ignored).")] = None,
) -> None:
    """Validate, register and (if better) promote a model trained earlier."""
    from flows.register import RegisterParams, register_flow

    sections = _load_yaml(config)
    raw: dict[str, Any] = {"model_dir": _from_cwd(model_dir),
                           **{k: sections[k] for k in ("validation", "execution") if k in sections}}
    if workers is not None:
        raw["execution"] = {**_section(raw, "execution"), "workers": workers}
    result = _start(RegisterParams, register_flow, raw)
    _print_pipeline(result)


@app.command()
def reproduce(
    experiment: Annotated[str, typer.Argument(help="bm1d, runaway2d or abc3d.")],
    profile: Annotated[str, typer.Option(
        help="quick (a 2-core CPU, under ~20 min) or paper (the paper's sizes).")] = "quick",
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a setting, dotted KEY=VALUE (repeatable), e.g. "
                      "training.epochs=5.")] = None,
    output: Annotated[str | None, typer.Option(
        help="Directory of the results page (default: <data root>/results); `--output "
             "docs/results` rewrites the committed pages of a checkout.")] = None,
    workers: Annotated[int | None, typer.Option(help="Dask workers (0: in-process).")] = None,
    no_registry: Annotated[bool, typer.Option(
        "--no-registry", help="Do not register the trained model.")] = False,
) -> None:
    """Reproduce one of the paper's experiments; write <output>/<experiment>.md and figures."""
    from flows.reproduce import ReproduceParams, reproduce_flow

    raw: dict[str, Any] = {"experiment": experiment, "profile": profile,
                           "overrides": _parse_kv(set_, "--set"), "use_registry": not no_registry}
    if output is not None:
        raw["output_dir"] = _from_cwd(output)
    if workers is not None:
        raw["execution"] = {"workers": workers}
    result = _start(ReproduceParams, reproduce_flow, raw)
    out.print(f"{result['experiment']} ({result['profile']}): {result['headline']}; goal "
              f"{'met' if result['goal_met'] else 'NOT met'}", highlight=False)
    out.print(f"page: {result['page']}; MLflow run {result['run_id']}; "
              f"{result['seconds'] / 60:.1f} min", highlight=False)


@app.command()
def repair(
    store: Annotated[str, typer.Argument(help="Dataset store path.")],
    workers: Annotated[int | None, typer.Option(help="Dask workers (default: in-process).")] = None,
    wait: Annotated[float, typer.Option(
        help="Seconds to wait for a run writing the store (default: refuse at once).")] = 0.0,
) -> None:
    """Verify every chunk of a dataset; re-simulate corrupt or missing ones (bit-identical)."""
    from flows.repair import RepairParams, repair_flow, report_lines

    raw: dict[str, Any] = {"store": _from_cwd(store), "lock_timeout": wait}
    if workers is not None:
        raw["execution"] = {"workers": workers}
    for line in report_lines(_start(RepairParams, repair_flow, raw)):
        out.print(line, highlight=False)


@app.command()
def run() -> None:
    """The main job on embedded defaults: the whole pipeline on the 2-D OU problem."""
    _print_pipeline(_start_pipeline({}))


def main() -> None:  # pragma: no cover - entry point for `python -m flows.cli`
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
