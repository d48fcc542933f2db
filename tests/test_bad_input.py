"""Bad input is refused before any work: exit code 2, the field named, nothing written.

:data:`CASES` is the one table of cases: CLI arguments (or the parameters a Prefect form sends to
a flow) and a fragment of the expected message. Every case runs in a fresh working directory
against a data root that holds a small 1-D model and the same model in an MLflow registry; after
the refusal neither the data root nor the working directory holds a new file.
``scripts/bad_input_table.py`` renders the same cases as the documentation's table.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import prefect.main  # noqa: F401  binds Prefect's log handler to stderr now, not to CliRunner's
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from flows.cli import app, format_validation_error

GAUSS_2D = '{"kind": "gaussian", "mean": [0, 0], "std": [1, 1]}'
GAUSS_1D = '{"kind": "gaussian", "mean": [0], "std": [1]}'
REGISTERED = "prnf-bm1d-badinput"

# What the issue asks to be refused; every kind needs at least one case.
KINDS = (
    "n_particles <= 0", "chunk_size <= 0", "dt <= 0", "dt > T", "snapshot time outside [0, T]",
    "initial dimension != problem's", "unknown problem", "unknown problem parameter",
    "unknown initial kind", "wrong type", "unknown --set override",
    "sample: model dir of another dimension", "sample: registry model of another dimension",
    "validate: model of another dimension", "path outside the data root",
)


@dataclass(frozen=True)
class Case:
    """One refused input. ``args`` may use ``{tmp}`` (the working directory), ``{model1d}`` (a
    bm1d model directory) and ``{mislabelled}`` (a 2-D model whose metadata says bm1d);
    ``flow`` names a params class, then ``args[0]`` is its JSON."""

    id: str
    kind: str
    args: tuple[str, ...]
    expect: str
    files: dict[str, str] = field(default_factory=dict)
    flow: str | None = None


def _sim(*args: str) -> tuple[str, ...]:
    """A small in-process bm1d simulation, changed by ``args``."""
    base = {"-n": "100", "--workers": "0"}
    return ("simulate", "--problem", "bm1d",
            *(x for k, v in base.items() if k not in args for x in (k, v)), *args)


CASES: list[Case] = [
    # simulate: sizes, horizon, snapshots
    Case("sim-n-zero", "n_particles <= 0", _sim("-n", "0"), "dataset.n_particles: Input should "
         "be greater than 0"),
    Case("sim-n-negative", "n_particles <= 0", _sim("-n", "-5"), "dataset.n_particles"),
    Case("sim-chunk-zero", "chunk_size <= 0", _sim("--chunk-size", "0"), "dataset.chunk_size"),
    Case("sim-dt-zero", "dt <= 0", _sim("--dt", "0"), "dataset.dt: Input should be greater than 0"),
    Case("sim-dt-negative", "dt <= 0", _sim("--dt", "-0.1"), "dataset.dt"),
    Case("sim-dt-above-t", "dt > T", _sim("--t-end", "0.5", "--dt", "1"),
         "dataset.t_end: 0.5 is not a whole multiple of dt=1.0"),
    Case("sim-t-end-negative", "other", _sim("--t-end", "-1"), "dataset.t_end"),
    Case("sim-t-end-off-grid", "other", _sim("--t-end", "0.505"), "not a whole multiple of dt"),
    Case("sim-save-time-above-t", "snapshot time outside [0, T]", _sim("--save-times", "0.1,2"),
         "dataset.save_times: 2.0 must lie in [0, t_end=0.5]"),
    Case("sim-save-time-negative", "snapshot time outside [0, T]",
         _sim("--save-times", "-0.1"), "dataset.save_times: -0.1 must lie in [0, t_end=0.5]"),
    Case("sim-save-time-off-grid", "other", _sim("--save-times", "0.123"), "on the dt=0.01 grid"),
    Case("sim-save-times-type", "wrong type", _sim("--save-times", "a,b"),
         "--save-times: expected comma-separated numbers"),
    # simulate: problem and its parameters
    Case("sim-unknown-problem", "unknown problem", ("simulate", "--problem", "lorenz"),
         "known problems: ['abc3d', 'bm1d', 'ou', 'ou1d_rate', 'runaway2d']"),
    Case("sim-unknown-param", "unknown problem parameter", _sim("--param", "kappa=1"),
         "dataset.problem_params: problem 'bm1d' has no parameter(s) ['kappa']"),
    Case("sim-param-type", "wrong type", ("simulate", "--problem", "ou", "--param", "dim=abc"),
         "dataset.problem_params: invalid parameters for 'ou'"),
    Case("sim-param-no-value", "other", _sim("--param", "mu"), "--param: expected KEY=VALUE"),
    Case("sim-param-bad-yaml", "other", _sim("--param", "mu=[1"),
         "--param: value of 'mu' is not valid YAML"),
    # simulate: initial distribution
    Case("sim-initial-dim", "initial dimension != problem's", _sim("--initial", GAUSS_2D),
         "dataset.initial: spec has dimension 2 but problem 'bm1d' has dimension 1"),
    Case("sim-initial-kind", "unknown initial kind", _sim("--initial", '{"kind": "cauchy"}'),
         "dataset.initial.kind: unknown kind 'cauchy'; allowed: ['uniform', 'gaussian'"),
    Case("sim-initial-not-json", "other", _sim("--initial", "{not json"), "dataset.initial"),
    Case("sim-initial-std", "other",
         _sim("--initial", '{"kind": "gaussian", "mean": [0], "std": [-1]}'),
         "std must be > 0, got [-1.0]"),
    Case("sim-initial-nan", "other",
         _sim("--initial", '{"kind": "point_mass", "point": [.nan]}'),
         "point must be finite (no NaN/inf), got [nan]"),
    Case("sim-initial-both", "other", _sim("--initial", '{"kind": "gaussian", "mean": [0]}'),
         "give exactly one of std or cov"),
    Case("sim-initial-file-missing", "other", _sim("--initial", "{tmp}/missing.yaml"),
         "no such spec file"),
    # simulate: other options and the YAML config
    Case("sim-n-type", "wrong type", _sim("-n", "abc"),
         "Invalid value for '-n' / '--n-particles': Input should be a valid integer"),
    Case("sim-dt-type", "wrong type", _sim("--dt", "small"),
         "Invalid value for '--dt': Input should be a valid number"),
    Case("sim-seed-negative", "other", _sim("--seed", "-1"), "dataset.seed"),
    Case("sim-dtype", "other", _sim("--dtype", "float16"),
         "dataset.dtype: Input should be 'float64' or 'float32'"),
    Case("sim-workers-negative", "other", _sim("--workers", "-1"), "execution.workers"),
    Case("sim-out-is-a-file", "other", _sim("--out", "{tmp}/notes.txt"),
         "exists and is not a Zarr group; refusing to overwrite it", {"notes.txt": "keep me\n"}),
    Case("sim-config-missing", "other", ("simulate", "--config", "{tmp}/none.yaml"),
         "--config: no such file"),
    Case("sim-config-bad-yaml", "other", ("simulate", "--config", "{tmp}/c.yaml"),
         "is not valid YAML", {"c.yaml": "dataset: [1\n"}),
    Case("sim-config-not-mapping", "other", ("simulate", "--config", "{tmp}/c.yaml"),
         "must hold a mapping", {"c.yaml": "- 1\n"}),
    Case("sim-config-unknown-key", "other", ("simulate", "--config", "{tmp}/c.yaml"),
         "nope: Extra inputs are not permitted", {"c.yaml": "nope: 1\n"}),
    Case("sim-config-section-type", "wrong type", ("simulate", "--config", "{tmp}/c.yaml"),
         "dataset: must be a mapping, got 5", {"c.yaml": "dataset: 5\n"}),
    Case("sim-config-type", "wrong type", ("simulate", "--config", "{tmp}/c.yaml"),
         "dataset.n_particles: Input should be a valid integer",
         {"c.yaml": "dataset:\n  problem: bm1d\n  n_particles: many\n"}),
    # train
    Case("train-no-data", "other", ("train",), "data: Field required"),
    Case("train-data-missing", "other", ("train", "--data", "{tmp}/none.zarr"), "no dataset at"),
    Case("train-epochs-zero", "other", ("train", "--data", "{tmp}/d.zarr", "--epochs", "0"),
         "training.epochs"),
    Case("train-epochs-type", "wrong type", ("train", "--epochs", "ten"),
         "Invalid value for '--epochs': Input should be a valid integer"),
    Case("train-lr-negative", "other", ("train", "--data", "{tmp}/d.zarr", "--lr", "-1"),
         "training.lr"),
    Case("train-batch-zero", "other", ("train", "--data", "{tmp}/d.zarr", "--batch-size", "0"),
         "training.batch_size"),
    Case("train-width-zero", "other", ("train", "--data", "{tmp}/d.zarr", "--width", "0"),
         "model.hidden_width"),
    Case("train-architecture", "other", ("train", "--data", "{tmp}/d.zarr", "--architecture",
                                         "maf"), "model.architecture: Input should be 'prnf' or "
                                                 "'nsf'"),
    Case("train-preset", "other", ("train", "--data", "{tmp}/d.zarr", "--preset", "huge"),
         "preset: Input should be 'paper'"),
    # sample
    Case("sample-model-dim", "sample: model dir of another dimension",
         ("sample", "--model", "{model1d}", "--initial", GAUSS_2D, "--out", "{tmp}/s.npy"),
         "initial: spec has dimension 2 but model '{model1d}' has dimension 1"),
    Case("sample-registry-dim", "sample: registry model of another dimension",
         ("sample", "--model", f"models:/{REGISTERED}/1", "--initial", GAUSS_2D, "--out",
          "{tmp}/s.npy"),
         f"initial: spec has dimension 2 but model 'models:/{REGISTERED}/1' has dimension 1"),
    Case("sample-model-missing", "other",
         ("sample", "--model", "{tmp}/no-model", "--initial", GAUSS_1D, "--out", "{tmp}/s.npy"),
         "model: no saved model (config.json + weights.pt, or an MLflow MLmodel) in "
         "'{tmp}/no-model'"),
    Case("sample-registry-unknown", "other",
         ("sample", "--model", "models:/no-such-model@champion", "--initial", GAUSS_1D),
         "model: cannot load 'models:/no-such-model@champion'"),
    Case("sample-n-zero", "other", ("sample", "--model", "{model1d}", "--initial", GAUSS_1D,
                                    "-n", "0"), "n: Input should be greater than 0"),
    Case("sample-n-type", "wrong type", ("sample", "--model", "{model1d}", "--initial", GAUSS_1D,
                                         "-n", "many"),
         "Invalid value for '-n': Input should be a valid integer"),
    Case("sample-out-suffix", "other", ("sample", "--model", "{model1d}", "--initial", GAUSS_1D,
                                        "--out", "{tmp}/s.csv"), "out: must end in .npy or .zarr"),
    Case("sample-initial-kind", "unknown initial kind",
         ("sample", "--model", "{model1d}", "--initial", '{"kind": "levy"}'),
         "initial.kind: unknown kind 'levy'"),
    # validate
    Case("validate-laws-dim", "validate: model of another dimension",
         ("validate", "--model", "{model1d}", "--config", "{tmp}/v.yaml"),
         "validation.laws.wide: spec has dimension 2 but model '{model1d}' has dimension 1",
         {"v.yaml": f"validation:\n  laws:\n    wide: {GAUSS_2D}\n"}),
    Case("validate-n-samples", "other", ("validate", "--model", "{model1d}", "--n-samples", "10"),
         "validation.n_samples: Input should be greater than or equal to 100"),
    Case("validate-law-kind", "unknown initial kind",
         ("validate", "--model", "{model1d}", "--config", "{tmp}/v.yaml"),
         "validation.laws.odd.kind: unknown kind 'levy'",
         {"v.yaml": "validation:\n  laws:\n    odd: {kind: levy}\n"}),
    Case("validate-model-missing", "other", ("validate", "--model", "{tmp}/no-model"),
         "model: no saved model (config.json + weights.pt, or an MLflow MLmodel) in "
         "'{tmp}/no-model'"),
    Case("validate-model-problem", "validate: model of another dimension",
         ("validate", "--model", "{mislabelled}"),
         "validation.laws.gaussian: spec has dimension 1 but model '{mislabelled}' has "
         "dimension 2"),
    # register
    Case("register-no-model", "other", ("register", "{tmp}/no-model"),
         "model_dir: no model (config.json) in '{tmp}/no-model'"),
    Case("register-model-problem", "other", ("register", "{mislabelled}", "--workers", "0"),
         "model: '{mislabelled}' does not fit its recorded problem: model.dim: 2 but problem "
         "'bm1d' has dimension 1"),
    Case("register-workers-negative", "other", ("register", "{model1d}", "--workers", "-2"),
         "execution.workers"),
    # pipeline
    Case("pipeline-unknown-problem", "unknown problem", ("pipeline", "--problem", "lorenz"),
         "known problems"),
    Case("pipeline-unknown-param", "unknown problem parameter",
         ("pipeline", "--problem", "ou", "--param", "kappa=1"),
         "problem 'ou' has no parameter(s) ['kappa']"),
    Case("pipeline-n-train-zero", "n_particles <= 0", ("pipeline", "--n-train", "0"),
         "n_train: Input should be greater than 0"),
    Case("pipeline-epochs-zero", "other", ("pipeline", "--epochs", "0"), "training.epochs"),
    Case("pipeline-architecture", "other", ("pipeline", "--architecture", "maf"),
         "model.architecture"),
    Case("pipeline-model-dim", "initial dimension != problem's",
         ("pipeline", "--config", "{tmp}/p.yaml"),
         "model.dim: 3 but problem 'bm1d' has dimension 1",
         {"p.yaml": "problem: bm1d\nmodel:\n  dim: 3\n"}),
    Case("pipeline-laws-dim", "initial dimension != problem's",
         ("pipeline", "--config", "{tmp}/p.yaml"),
         "validation.laws.wide: dimension 2, problem 'bm1d' has dimension 1",
         {"p.yaml": f"problem: bm1d\nvalidation:\n  laws:\n    wide: {GAUSS_2D}\n"}),
    # reproduce
    Case("reproduce-unknown-experiment", "other", ("reproduce", "lorenz"),
         "experiment: Input should be 'bm1d', 'runaway2d' or 'abc3d'"),
    Case("reproduce-profile", "other", ("reproduce", "bm1d", "--profile", "huge"),
         "profile: Input should be 'quick' or 'paper'"),
    Case("reproduce-set-unknown", "unknown --set override", ("reproduce", "bm1d", "--set",
                                                              "n_trian=100"), "n_trian"),
    Case("reproduce-set-unknown-dotted", "unknown --set override",
         ("reproduce", "bm1d", "--set", "training.epoch=5"), "training.epoch"),
    Case("reproduce-set-not-section", "unknown --set override",
         ("reproduce", "abc3d", "--set", "n_train.x=1"), "'n_train' is not a section"),
    Case("reproduce-set-type", "wrong type", ("reproduce", "bm1d", "--set",
                                              "training.epochs=abc"), "training.epochs"),
    Case("reproduce-set-no-value", "other", ("reproduce", "bm1d", "--set", "training.epochs"),
         "--set: expected KEY=VALUE"),
    Case("reproduce-workers-negative", "other", ("reproduce", "bm1d", "--workers", "-1"),
         "execution.workers"),
    # info
    Case("info-missing", "other", ("info", "{tmp}/none.zarr"), "no dataset at"),
    # the parameters of a flow run (Prefect UI, deployments): relative paths stay in the data root
    Case("flow-simulate-output-escape", "path outside the data root",
         ('{"dataset": {"problem": "bm1d", "n_particles": 10}, "output": "../elsewhere.zarr"}',),
         "output: relative path '../elsewhere.zarr' resolves outside the data root",
         flow="simulate"),
    Case("flow-train-data-escape", "path outside the data root",
         ('{"data": "datasets/../../../etc"}',),
         "data: relative path 'datasets/../../../etc' resolves outside the data root",
         flow="train"),
    Case("flow-train-output-escape", "path outside the data root",
         ('{"data": "datasets/x.zarr", "output": "../m"}',),
         "output: relative path '../m' resolves outside the data root", flow="train"),
    Case("flow-sample-out-escape", "path outside the data root",
         (f'{{"model": "models:/m@champion", "initial": {GAUSS_1D}, "out": "../../s.npy"}}',),
         "out: relative path '../../s.npy' resolves outside the data root", flow="sample"),
    Case("flow-validate-model-escape", "path outside the data root", ('{"model": "../m"}',),
         "model: relative path '../m' resolves outside the data root", flow="validate"),
    Case("flow-register-model-escape", "path outside the data root", ('{"model_dir": "../m"}',),
         "model_dir: relative path '../m' resolves outside the data root", flow="register"),
    Case("flow-reproduce-output-escape", "path outside the data root",
         ('{"experiment": "bm1d", "output_dir": "../docs"}',),
         "output_dir: relative path '../docs' resolves outside the data root", flow="reproduce"),
    Case("flow-simulate-output-empty", "other",
         ('{"dataset": {"problem": "bm1d", "n_particles": 10}, "output": ""}',),
         "output: must not be empty", flow="simulate"),
]


def params_class(flow: str) -> type:
    from flows.config import PipelineParams
    from flows.register import RegisterParams
    from flows.reproduce import ReproduceParams
    from flows.sample import SampleParams
    from flows.simulate import SimulateParams
    from flows.train import TrainParams
    from flows.validate import ValidateParams

    return {"simulate": SimulateParams, "train": TrainParams, "sample": SampleParams,
            "validate": ValidateParams, "register": RegisterParams, "pipeline": PipelineParams,
            "reproduce": ReproduceParams}[flow]


def save_model(directory: Path, dim: int, problem: str) -> str:
    """An untrained (normalization-fitted) model of dimension ``dim`` whose metadata names
    ``problem``, saved as the train flow saves one."""
    from prnf_core import DatasetConfig
    from prnf_core.models import ModelConfig, build_model
    from prnf_core.problems import get_problem

    rng = np.random.default_rng(0)
    model = build_model(ModelConfig(dim=dim, hidden_width=8), seed=0)
    model.fit_normalization(rng.normal(size=(64, dim)), rng.normal(size=(64, dim)))
    config = DatasetConfig(problem=problem, n_particles=64)
    model.save(directory, extra={"problem": get_problem(problem).describe(),
                                 "dataset_config": config.resolved(), "dataset_path": "",
                                 "dataset_id": config.dataset_id(), "train_seconds": 0.0})
    return str(directory)


def make_world(data: Path) -> dict[str, str]:
    """Under the data root ``data``: a bm1d model directory, the same model registered as
    ``REGISTERED`` version 1 in the embedded MLflow store, and a 2-D model whose metadata says
    bm1d (1-D)."""
    from tasks import tracking
    from tasks.pyfunc import load_surrogate, log_surrogate

    model_dir = save_model(data / "models" / "bm1d-tiny", 1, "bm1d")
    mislabelled = save_model(data / "models" / "mislabelled", 2, "bm1d")
    client = tracking.configure()
    run_id = client.create_run(tracking.experiment_id(client, "bm1d")).info.run_id
    uri = log_surrogate(model_dir, run_id, np.zeros((5, 1)))
    client.set_terminated(run_id)
    client.create_registered_model(REGISTERED)
    client.create_model_version(REGISTERED, uri, run_id=run_id)
    # MLflow's first load through models:/ writes `registered_model_meta` into a local artifact
    # store: load once, so that a case's check for new files sees only what prnf writes.
    load_surrogate(f"models:/{REGISTERED}/1")
    return {"model1d": model_dir, "mislabelled": mislabelled}


def fill(text: str, places: dict[str, str]) -> str:
    for key, value in places.items():
        text = text.replace("{" + key + "}", value)
    return text


def _message(output: str) -> str:
    """The error message of a CLI run, on one line (Typer's boxes and wrapping removed)."""
    text = re.sub(r"[│╭╮╰╯─]", " ", output)
    if "error:" in text:
        text = text[text.rindex("error:") + len("error:"):]
    elif "Error" in text:
        text = text[text.index("Error") + len("Error"):]
    return " ".join(text.split())


def write_files(case: Case, places: dict[str, str]) -> None:
    for name, content in case.files.items():
        Path(places["tmp"], name).write_text(fill(content, places))


def run_case(case: Case, places: dict[str, str]) -> tuple[str, str]:
    """Run ``case`` (placeholders filled from ``places``): (outcome, one-line message)."""
    args = [fill(a, places) for a in case.args]
    if case.flow is not None:
        try:
            params_class(case.flow).model_validate(json.loads(args[0]))
        except ValidationError as exc:
            return "ValidationError", " ".join(format_validation_error(exc).split())
        return "accepted", ""
    result = CliRunner().invoke(app, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return f"exit {result.exit_code}", _message(result.output)


def files_under(*roots: Path) -> set[Path]:
    return {p for root in roots if root.exists() for p in root.rglob("*")}


@pytest.fixture(scope="module")
def world(tmp_path_factory, prefect_harness) -> dict[str, str]:
    root = tmp_path_factory.mktemp("world")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRNF_DATA_ROOT", str(root / "data"))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        places = make_world(root / "data")
    return {**places, "data": str(root / "data")}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused(case, world, tmp_path, monkeypatch):
    monkeypatch.setenv("PRNF_DATA_ROOT", world["data"])
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    places = {**world, "tmp": str(tmp_path)}
    write_files(case, places)
    before = files_under(Path(world["data"]), tmp_path)
    outcome, message = run_case(case, places)
    assert outcome == ("ValidationError" if case.flow else "exit 2"), message
    assert " ".join(fill(case.expect, places).split()) in message, message
    assert files_under(Path(world["data"]), tmp_path) == before, "refused input wrote files"


def test_every_kind_of_bad_input_has_a_case():
    assert len({c.id for c in CASES}) == len(CASES)
    assert set(KINDS) <= {c.kind for c in CASES}
    assert {c.kind for c in CASES} <= {*KINDS, "other"}
