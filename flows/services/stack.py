"""The servers of the production profile: how each is started and how its health is read.

Every server listens on 127.0.0.1 only. The order of ``SERVICES`` is the start order (``down``
stops in reverse): PostgreSQL and SeaweedFS first, the servers that use them after.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import httpx

from flows.services import postgres
from flows.services.config import (
    ARTIFACT_BUCKET,
    DATA_BUCKET,
    DATASET_ROOT,
    GRPC_OFFSET,
    REGION,
    Layout,
    ServicesConfig,
)
from flows.services.credentials import Credentials, write_private
from flows.services.process import Service, http_ok

SERVICES = ("postgres", "seaweedfs", "prefect", "mlflow", "dask-scheduler", "dask-worker")
REPO = Path(__file__).resolve().parents[2]  # the checkout: Dask imports prnf from here too
QUIET = {"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
         "MLFLOW_DISABLE_TELEMETRY": "true"}


def executable(name: str) -> Path:
    """``name`` beside this Python (the virtualenv's bin), else on the PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found is None:
        from prnf_core.errors import ConfigError

        raise ConfigError(f"services: {name!r} not found beside {sys.executable} nor on the "
                          "PATH; install the production extra (bash scripts/install.sh "
                          "production)")
    return Path(found)


def port_of(name: str, config: ServicesConfig) -> int:
    return {"postgres": config.postgres_port, "seaweedfs": config.s3_port,
            "prefect": config.prefect_port, "mlflow": config.mlflow_port,
            "dask-scheduler": config.dask_port,
            "dask-worker": config.dask_port}[name]


def client_env(config: ServicesConfig, creds: Credentials, layout: Layout) -> dict[str, str]:
    """What a shell, a flow or a Dask worker needs to use the profile (``prnf services env``)."""
    s3 = f"http://127.0.0.1:{config.s3_port}"
    return {
        "PRNF_DATA_ROOT": str(layout.data_root),
        "PREFECT_API_URL": f"http://127.0.0.1:{config.prefect_port}/api",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{config.mlflow_port}",
        "PRNF_DASK_ADDRESS": f"tcp://127.0.0.1:{config.dask_port}",
        "AWS_ACCESS_KEY_ID": creds.s3_access_key,
        "AWS_SECRET_ACCESS_KEY": creds.s3_secret_key,
        "AWS_ENDPOINT_URL": s3,
        "AWS_REGION": REGION,
        "MLFLOW_S3_ENDPOINT_URL": s3,
        "PRNF_DATASET_ROOT": DATASET_ROOT,
        # The Prefect client retries 429/502/503 only; a request that meets PostgreSQL
        # restarting (or failing over) gets a 500: retried with backoff, a run survives it.
        "PREFECT_CLIENT_RETRY_EXTRA_CODES": "500",
    }


def base_env() -> dict[str, str]:
    """This process's environment without Prefect/MLflow/prnf/AWS settings, quiet telemetry."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "PRNF_", "AWS_", "PG"))}
    env.update(QUIET, PYTHONUNBUFFERED="1")
    return env


def service(name: str, config: ServicesConfig, creds: Credentials, layout: Layout) -> Service:
    """The (not yet started) process of server ``name``; ``postgres`` is started by ``pg_ctl``
    instead (:mod:`flows.services.postgres`)."""
    pg = f"{creds.pg_user}:{creds.pg_password}@127.0.0.1:{config.postgres_port}"
    log = layout.log(name)
    if name == "seaweedfs":
        args = [executable("weed"), "server", f"-dir={layout.weed}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", "-master.telemetry=false",
                f"-master.volumeSizeLimitMB={1024}", "-volume.max=0",
                f"-master.port={config.weed_master_port}",
                f"-master.port.grpc={config.weed_master_port + GRPC_OFFSET}",
                f"-volume.port={config.weed_volume_port}",
                f"-volume.port.grpc={config.weed_volume_port + GRPC_OFFSET}",
                f"-filer.port={config.weed_filer_port}",
                f"-filer.port.grpc={config.weed_filer_port + GRPC_OFFSET}",
                "-s3", f"-s3.port={config.s3_port}",
                f"-s3.port.grpc={config.s3_port + GRPC_OFFSET}",
                "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={layout.s3_config}"]
        return Service(name, args, base_env(), log, cwd=layout.weed)
    if name == "prefect":
        env = {**base_env(), "PREFECT_HOME": str(layout.prefect_home),
               "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"postgresql+asyncpg://{pg}/prefect"}
        return Service(name, [executable("prefect"), "server", "start", "--host", "127.0.0.1",
                              "--port", config.prefect_port], env, log, cwd=layout.dir)
    if name == "mlflow":
        # the store URI (with its password) goes in the environment, not on the command line
        env = {**base_env(), "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg2://{pg}/mlflow",
               "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{config.s3_port}",
               "AWS_ACCESS_KEY_ID": creds.s3_access_key,
               "AWS_SECRET_ACCESS_KEY": creds.s3_secret_key, "AWS_REGION": REGION,
               "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        return Service(name, [executable("mlflow"), "server",
                              "--artifacts-destination", f"s3://{ARTIFACT_BUCKET}",
                              "--host", "127.0.0.1", "--port", config.mlflow_port,
                              "--workers", "1"], env, log, cwd=layout.dir)
    env = {**base_env(), **client_env(config, creds, layout)}
    if name == "dask-scheduler":
        return Service(name, [executable("dask"), "scheduler", "--host", "127.0.0.1",
                              "--port", config.dask_port, "--dashboard-address",
                              f"127.0.0.1:{config.dask_dashboard_port}"], env, log, cwd=REPO)
    if name == "dask-worker":
        env["DASK_CONFIG"] = str(layout.dask / "config")  # see write_dask_config
        return Service(name, [executable("dask"), "worker",
                              f"tcp://127.0.0.1:{config.dask_port}", "--host", "127.0.0.1",
                              "--nworkers", config.dask_workers, "--nthreads", "1",
                              "--no-dashboard", "--local-directory", layout.dask],
                       env, log, cwd=REPO)
    raise KeyError(name)


def write_dask_config(layout: Layout) -> None:
    """The workers' Dask configuration: no ``MALLOC_TRIM_THRESHOLD_`` for the worker processes
    (Dask's default makes every large torch temporary a fresh mapping: chunks 1.5-3x slower;
    ``prnf_core.cluster`` drops it for its LocalCluster the same way)."""
    folder = layout.dask / "config"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prnf.yaml").write_text(
        "# written by prnf services up\n"
        "distributed:\n  nanny:\n    pre-spawn-environ:\n      MALLOC_TRIM_THRESHOLD_: null\n")


def write_s3_identities(layout: Layout, creds: Credentials) -> None:
    """SeaweedFS's identities: one with the generated key; anonymous requests are refused."""
    write_private(layout.s3_config, json.dumps({"identities": [{
        "name": "prnf",
        "credentials": [{"accessKey": creds.s3_access_key, "secretKey": creds.s3_secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, indent=2))


def s3_client(config: ServicesConfig, creds: Credentials):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{config.s3_port}",
                        aws_access_key_id=creds.s3_access_key,
                        aws_secret_access_key=creds.s3_secret_key, region_name=REGION,
                        config=Config(connect_timeout=3, read_timeout=10,
                                      retries={"max_attempts": 1}))


def create_buckets(config: ServicesConfig, creds: Credentials) -> None:
    s3 = s3_client(config, creds)
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    for bucket in (DATA_BUCKET, ARTIFACT_BUCKET):
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)


def dask_workers(config: ServicesConfig) -> int:
    """How many workers the scheduler has now (its dashboard's ``counts.json``)."""
    url = f"http://127.0.0.1:{config.dask_dashboard_port}/json/counts.json"
    return int(httpx.get(url, timeout=3).json().get("workers", 0))


def healthy(name: str, config: ServicesConfig, creds: Credentials) -> bool:
    """Whether server ``name`` answers as it should now (its own health endpoint; S3 with the
    credentials; PostgreSQL: the application role logs in; Dask: every worker is there)."""
    try:
        if name == "postgres":
            return postgres.healthy(config.postgres_port, creds)
        if name == "seaweedfs":
            s3 = s3_client(config, creds)
            names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
            return {DATA_BUCKET, ARTIFACT_BUCKET} <= names
        if name == "prefect":
            answer = httpx.get(f"http://127.0.0.1:{config.prefect_port}/api/health", timeout=3)
            return answer.status_code == 200 and answer.json() is True
        if name == "mlflow":
            return http_ok(f"http://127.0.0.1:{config.mlflow_port}/health")
        if name == "dask-scheduler":
            return http_ok(f"http://127.0.0.1:{config.dask_dashboard_port}/health")
        if name == "dask-worker":
            return dask_workers(config) >= config.dask_workers
    except Exception:  # any failure to answer is "not healthy"
        return False
    raise KeyError(name)
