"""The production profile for tests: ``prnf services up`` in a fresh data root on free ports.

Used by the fixture ``production_profile`` (tests/conftest.py), so that the profile is brought
up once for every test module that needs it (again only if a test brought it down), and brought
down at the end of the session with a check that no process was left behind.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from services import BIN, clean_env, output_tail

from flows.services.config import GRPC_OFFSET
from flows.services.credentials import load_or_create
from flows.services.process import free_ports

REPO = Path(__file__).resolve().parents[1]
NAMES = ("postgres", "seaweedfs", "prefect", "mlflow", "dask-scheduler", "dask-worker")


def run(args: list, env: dict[str, str], timeout: float = 300,
        cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], env=env, cwd=cwd or REPO, capture_output=True,
                          text=True, timeout=timeout)


def parse_exports(text: str) -> dict[str, str]:
    """The ``export K=V`` lines printed by ``prnf services up`` / ``env``."""
    values = {}
    for line in text.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            values[key] = shlex.split(value)[0] if value else ""
    return values


@dataclass
class Profile:
    root: Path  # the data root; the profile's files are under root / "services"
    base: dict[str, str]  # environment that names only the data root (for `prnf services`)
    exported: dict[str, str]  # what `prnf services up` printed
    ports: dict[str, int] = field(default_factory=dict)
    up: subprocess.CompletedProcess | None = None  # the `prnf services up` that started it
    down: bool = False  # brought down by a test (`prnf services down` and its checks)

    @property
    def env(self) -> dict[str, str]:
        """The environment of a user who ran ``eval "$(prnf services up)"``."""
        return {**self.base, **self.exported}

    def services(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return run([BIN / "prnf", "services", *args], self.base, timeout=timeout)

    def s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.exported["AWS_ENDPOINT_URL"],
                            aws_access_key_id=self.exported["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.exported["AWS_SECRET_ACCESS_KEY"],
                            region_name=self.exported["AWS_REGION"])

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def postgres(self, database: str, query: str) -> list[tuple]:
        import psycopg2

        creds = load_or_create(self.root / "services" / "credentials.env")
        with psycopg2.connect(host="127.0.0.1", port=self.ports["postgres_port"],
                              dbname=database, user=creds.pg_user, password=creds.pg_password,
                              connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchall()

    def leftovers(self) -> list[str]:
        """Processes whose command line names the profile's directory."""
        found = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if str(self.root) in cmdline:
                found.append(f"{proc.info['pid']}: {cmdline[:160]}")
        return found


def bring_up() -> Profile:
    """``prnf services up`` in a new data root under /tmp (traversable by the ``postgres``
    user, unlike pytest's 0700 tmp_path base) on free ports."""
    root = Path(tempfile.mkdtemp(prefix="prnf-profile-", dir="/tmp"))
    os.chmod(root, 0o711)
    weed = free_ports(4, offset=GRPC_OFFSET)
    while max(weed) + GRPC_OFFSET > 65535:
        weed = free_ports(4, offset=GRPC_OFFSET)
    other = [p for p in free_ports(13) if p not in weed
             and p not in {w + GRPC_OFFSET for w in weed}][:5]
    ports = {"s3_port": weed[0], "weed_master_port": weed[1], "weed_volume_port": weed[2],
             "weed_filer_port": weed[3], "postgres_port": other[0], "prefect_port": other[1],
             "mlflow_port": other[2], "dask_port": other[3], "dask_dashboard_port": other[4]}
    base = clean_env(PRNF_DATA_ROOT=root)
    profile = Profile(root, base, {}, ports)
    # the options a user types (--postgres-port, ..., --dask-workers), --set for the rest
    flags = ("s3_port", "postgres_port", "prefect_port", "mlflow_port", "dask_port")
    args = [a for k in flags for a in (f"--{k.replace('_', '-')}", ports[k])]
    args += [a for k, v in ports.items() if k not in flags for a in ("--set", f"{k}={v}")]
    args += ["--set", "health_timeout=150", "--dask-workers", "2"]
    proc = profile.services("up", *args, timeout=400)
    if proc.returncode != 0:
        profile.services("down", timeout=120)
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"prnf services up failed\n{output_tail(proc)}")
    profile.exported = parse_exports(proc.stdout)
    profile.up = proc
    return profile


def bring_down(profile: Profile) -> list[str]:
    """``prnf services down`` (unless a test did it); returns what is wrong (its failure,
    processes left behind)."""
    problems = []
    if not profile.down:
        proc = profile.services("down", timeout=180)
        if proc.returncode != 0:
            problems.append(output_tail(proc))
        profile.down = True
    problems += profile.leftovers()
    if not problems:
        shutil.rmtree(profile.root, ignore_errors=True)
    return problems
