"""MLflow after an outage or a kill, on the embedded sqlite store.

Runs whose owner process is gone are marked FAILED when the next flow starts tracking; runs of
live processes (this one) and recent runs of other hosts are left alone. Registering the same
model directory twice gives one model version. The logged model pins prnf in its requirements
and its ``predict`` has the type hints MLflow asks for.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import psutil
import pytest
from tiny_models import save_tiny_bm1d_model

import prnf_core
from tasks import registry, tracking
from tasks.pyfunc import PIP_REQUIREMENTS, load_surrogate, log_surrogate

ROOT = Path(__file__).resolve().parents[1]
NAME = "prnf-recovery-test"


@pytest.fixture
def client(tmp_path, monkeypatch):
    """A fresh embedded tracking store under a temporary data root."""
    monkeypatch.setenv("PRNF_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tracking.configure()


def save_model(directory: Path, seed: int = 0) -> str:
    return save_tiny_bm1d_model(directory, seed=seed)


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not psutil.pid_exists(proc.pid)
    return proc.pid


def status(client, run_id: str) -> str:
    return client.get_run(run_id).info.status


def test_runs_record_their_owner(client):
    experiment = tracking.experiment_id(client, "bm1d")
    run_id = tracking.start_run(client, experiment, "pipeline")
    tags = client.get_run(run_id).data.tags
    assert tags["prnf.host"] == socket.gethostname() and tags["prnf.pid"] == str(os.getpid())
    assert abs(float(tags["prnf.pid_started"]) - psutil.Process().create_time()) < 1.0


def test_runs_of_gone_owners_are_failed_when_tracking_starts_again(client):
    experiment = tracking.experiment_id(client, "bm1d")
    host = socket.gethostname()
    now_ms = int(time.time() * 1000)
    me = psutil.Process()

    def run(tags: dict[str, str], start_time: int = now_ms) -> str:
        return client.create_run(experiment, start_time=start_time,
                                 tags={"prnf.step": "pipeline", **tags}).info.run_id

    # what an outage leaves: a parent and its child run of a process that has ended
    gone = dead_pid()
    killed = run({"prnf.host": host, "prnf.pid": str(gone), "prnf.pid_started": "1.0"})
    killed_child = run({"prnf.host": host, "prnf.pid": str(gone), "mlflow.parentRunId": killed})
    # this process's pid, but recorded for a process created at another time: a recycled pid
    recycled = run({"prnf.host": host, "prnf.pid": str(me.pid),
                    "prnf.pid_started": f"{me.create_time() - 3600:.3f}"})
    # runs that must be left alone: this live process's, another host's recent one, a recent
    # one without owner tags (another tool's), and a finished one of the ended process
    live = tracking.start_run(client, experiment, "pipeline")
    elsewhere = run({"prnf.host": "another-host", "prnf.pid": "1"})
    untagged = client.create_run(experiment).info.run_id
    finished = run({"prnf.host": host, "prnf.pid": str(gone)})
    client.set_terminated(finished, "FINISHED")
    # another host's run that has been RUNNING for longer than any prnf run
    week = tracking.STALE_AFTER_SECONDS * 1000
    stale = run({"prnf.host": "another-host", "prnf.pid": "1"}, start_time=now_ms - week - 1000)

    tracking.check_reachable(client)  # what every tracking flow calls first

    for run_id in (killed, killed_child, recycled, stale):
        assert status(client, run_id) == "FAILED", run_id
        reason = client.get_run(run_id).data.tags["prnf.failed_reason"]
        assert reason.startswith("interrupted: ")
    assert f"process {gone} on {host} ended" in client.get_run(killed).data.tags[
        "prnf.failed_reason"]
    assert "pid now reused" in client.get_run(recycled).data.tags["prnf.failed_reason"]
    assert "days ago" in client.get_run(stale).data.tags["prnf.failed_reason"]
    for run_id in (live, elsewhere, untagged):
        assert status(client, run_id) == "RUNNING", run_id
        assert "prnf.failed_reason" not in client.get_run(run_id).data.tags
    assert status(client, finished) == "FINISHED"
    assert tracking.fail_interrupted_runs(client) == []  # nothing left to do


def test_registering_the_same_model_dir_twice_gives_one_version(client, tmp_path):
    model_dir = save_model(tmp_path / "model")
    experiment = tracking.experiment_id(client, "bm1d")
    x0 = np.zeros((5, 1))

    def log_and_register(tags: dict[str, str]) -> tuple[str, str]:
        with tracking.child_run(client, experiment, "log-model", None) as run_id:
            uri = log_surrogate(model_dir, run_id, x0)
        return uri, registry.register(client, uri, NAME, run_id, tags)

    first_uri, first = log_and_register({"attempt": "1"})
    second_uri, second = log_and_register({"attempt": "2"})
    assert first_uri != second_uri  # logged twice, registered once
    assert first == second == "1"
    versions = client.search_model_versions(f"name = '{NAME}'")
    assert [str(v.version) for v in versions] == ["1"]
    tags = versions[0].tags
    assert tags["model_dir"] == os.path.abspath(model_dir)
    assert tags["weights_sha256"] == registry.weights_sha256(model_dir)
    assert tags["attempt"] == "2"  # the second registration's tags win
    assert str(client.get_model_version_by_alias(NAME, registry.CHALLENGER).version) == "1"
    found = registry.find_version(client, registry.model_identity(model_dir))
    assert found is not None and str(found.version) == "1" and found.name == NAME
    assert registry.logged_model_uri(found) == first_uri  # what `prnf register` reuses

    # other weights in the same directory are another model: a new version
    save_model(Path(model_dir), seed=1)
    _, third = log_and_register({"attempt": "3"})
    assert third == "2"
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 2


def test_logged_model_pins_prnf_and_predicts_through_its_signature(client, tmp_path):
    model_dir = save_model(tmp_path / "model")
    experiment = tracking.experiment_id(client, "bm1d")
    with tracking.child_run(client, experiment, "log-model", None) as run_id:
        uri = log_surrogate(model_dir, run_id, np.zeros((5, 1)))
    pin = f"prnf=={prnf_core.__version__}"
    assert pin in PIP_REQUIREMENTS
    requirements = Path(mlflow.pyfunc.get_model_dependencies(uri)).read_text().splitlines()
    assert pin in requirements
    model = mlflow.pyfunc.load_model(uri)
    assert model.metadata.get_input_schema() is not None  # the signature is still logged
    a = model.predict(np.zeros((7, 1)), params={"seed": 3})
    b = load_surrogate(model_dir).predict(None, np.zeros((7, 1)), params={"seed": 3})
    assert isinstance(a, np.ndarray) and a.shape == (7, 1) and np.array_equal(a, b)


def test_pyfunc_predict_has_type_hints_mlflow_accepts():
    # MLflow checks predict's hints when the class is defined, i.e. at import: a fresh process
    proc = subprocess.run([sys.executable, "-W", "always", "-c", "import tasks.pyfunc"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "type hint" not in proc.stderr.lower(), proc.stderr[-3000:]
