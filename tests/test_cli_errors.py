"""Every error of the `prnf` CLI is one line: exit 2 naming the field for bad input, exit 1 naming
a log file with the traceback for an unexpected failure; tracebacks on the terminal only with
`prnf --debug`.

The unexpected failure is a real one: a model directory saved before its normalization was
fitted makes the model raise ``RuntimeError("model is not trained ...")`` inside the sample
flow, an error prnf does not anticipate there.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import prefect.main  # noqa: F401  binds Prefect's log handler to stderr now, not to CliRunner's
import pytest
from services import BIN, clean_env, output_tail
from tiny_models import save_tiny_bm1d_model
from typer.testing import CliRunner

from flows.cli import app
from prnf_core.errors import ConfigError

POINT = '{"kind": "point_mass", "point": [0.0]}'
LOG = re.compile(r"the traceback is in (\S+\.log)")


def save_model(directory: Path, fitted: bool) -> str:
    return save_tiny_bm1d_model(directory, fitted=fitted)


@pytest.fixture
def data(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "data"
    monkeypatch.setenv("PRNF_DATA_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return root


def sample_args(model: str, out: Path) -> list[str]:
    return ["sample", "--model", model, "--initial", POINT, "-n", "5", "--out", str(out)]


def test_unexpected_error_is_one_line_naming_a_log_with_the_traceback(
        prefect_harness, data, tmp_path):
    model = save_model(tmp_path / "unfitted", fitted=False)
    result = CliRunner().invoke(app, sample_args(model, tmp_path / "x.npy"))
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: unexpected RuntimeError: model is not trained")
    assert "Traceback" not in result.output
    log = Path(LOG.search(lines[0]).group(1))
    assert log.parent == data / "logs" and log.name.startswith("prnf-")
    text = log.read_text()
    assert "Traceback (most recent call last)" in text
    assert "RuntimeError: model is not trained" in text and "sample_flow" in text
    assert f"command: prnf sample --model {model}" in text


def test_debug_shows_the_traceback_on_the_terminal(prefect_harness, data, tmp_path):
    model = save_model(tmp_path / "unfitted", fitted=False)
    result = CliRunner().invoke(app, ["--debug", *sample_args(model, tmp_path / "x.npy")])
    assert result.exit_code == 1, result.output
    assert "Traceback (most recent call last)" in result.stderr
    assert "RuntimeError: model is not trained" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: unexpected RuntimeError")


def test_prnf_error_raised_in_a_flow_is_bad_input(prefect_harness, data, tmp_path):
    model = Path(save_model(tmp_path / "corrupt", fitted=True))
    (model / "weights.pt").write_bytes(b"not a torch file")
    result = CliRunner().invoke(app, sample_args(str(model), tmp_path / "x.npy"))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: model: cannot load"), result.stderr
    assert not (data / "logs").exists()


def test_epochs_null_is_refused_naming_the_field(data, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("training: {epochs: null}\n")
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "store.zarr"),
                                      "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: training.epochs: "), result.stderr
    assert "Traceback" not in result.output and not (data / "logs").exists()


@pytest.mark.parametrize("fitted", [False, True])
def test_fit_refuses_a_model_with_conditions_naming_model_cond_dim(fitted):
    from prnf_core.models import ModelConfig, build_model
    from prnf_core.train import TrainConfig, fit

    model = build_model(ModelConfig(dim=1, hidden_width=8, cond_dim=2), seed=0)
    model.fitted.fill_(fitted)  # fitted: e.g. a model trained elsewhere, fitted again here
    pairs = (np.zeros((64, 1)), np.ones((64, 1)))
    with pytest.raises(ConfigError, match=r"^model\.cond_dim: .*cond_dim=2"):
        fit(model, pairs, TrainConfig(epochs=1, progress=False))


def test_terminal_shows_no_traceback_of_a_failed_flow(tmp_path):
    # A real `prnf` process: Prefect's console log of the failed flow run (which carries the
    # traceback by default) goes to this stderr too.
    model = save_model(tmp_path / "unfitted", fitted=False)
    data = tmp_path / "data"
    env = clean_env(PRNF_DATA_ROOT=data, PREFECT_HOME=tmp_path / "prefect")
    proc = subprocess.run([str(BIN / "prnf"), *sample_args(model, tmp_path / "x.npy")],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, output_tail(proc)
    assert "Encountered exception during execution: RuntimeError" in proc.stderr  # Prefect's
    assert "Traceback" not in proc.stderr + proc.stdout, output_tail(proc)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output_tail(proc)
    log = Path(LOG.search(errors[0]).group(1))
    assert log.parent == data / "logs"
    assert "Traceback (most recent call last)" in log.read_text()
