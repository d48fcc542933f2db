"""Real servers for the services tests: loopback only, free ports, one process group each.

Each server is a :class:`flows.services.process.Service` (the product's process-group
management, also used by ``prnf services``): started in its own session with its output in a log
file, stopped by signalling its process group (SIGTERM, then SIGKILL for what survives), with
every process still alive afterwards reported.

The same helpers start the stack of ``benchmarks/soak.py`` (``mlflow_server``, ``prefect_server``,
``prefect_worker``) and measure it (``tree``, ``open_fds``, ``processes_with_env``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from flows.services.process import (  # noqa: F401  (re-exported for the tests and the soak)
    Service,
    free_port,
    free_ports,
    tail,
)

BIN = Path(sys.executable).parent  # the virtualenv's bin: mlflow, prefect, prnf, python
QUIET = {"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
         "MLFLOW_DISABLE_TELEMETRY": "true"}


def clean_env(**values: str | Path) -> dict[str, str]:
    """This process's environment without Prefect/MLflow/prnf settings, plus quiet telemetry,
    a wide terminal (no wrapped lines to parse) and ``values``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "PRNF_"))}
    env.update(QUIET, COLUMNS="400", PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in values.items()})
    return env


def output_tail(proc: subprocess.CompletedProcess, chars: int = 4000) -> str:
    """The end of a finished command's stdout and stderr, for assertion messages."""
    return (f"$ {' '.join(map(str, proc.args))}\nexit code {proc.returncode}\n"
            f"--- stdout ---\n{(proc.stdout or '')[-chars:]}\n"
            f"--- stderr ---\n{(proc.stderr or '')[-chars:]}")


# --------------------------------------------------------------------------------------------
# The stack: one definition for the tests and the soak benchmark


def mlflow_server(root: Path, port: int, name: str = "mlflow server") -> Service:
    """``mlflow server`` on 127.0.0.1:``port`` with a sqlite backend and a proxied artifact
    store under ``root`` (``mlflow.db``, ``artifacts/``): a restart on the same ``root`` and port
    serves the same runs and registry."""
    slug = name.replace(" ", "-")
    return Service(
        name,
        [BIN / "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", root / "artifacts", "--host", "127.0.0.1",
         "--port", port, "--workers", "1"],
        clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"), root / "logs" / f"{slug}.log",
        cwd=root)


def prefect_server(root: Path, port: int, home: Path) -> Service:
    """``prefect server start`` on 127.0.0.1:``port``; its sqlite database lives in ``home``
    (``PREFECT_HOME``), so a restart with the same ``home`` keeps deployments and runs."""
    return Service(
        "prefect server",
        [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", port, "--no-ui"],
        clean_env(PREFECT_HOME=home), root / "logs" / "prefect-server.log", cwd=root)


def prefect_worker(root: Path, env: dict[str, str], pool: str = "prnf-process") -> Service:
    """A process worker on ``pool`` polling every 2 s; ``env`` points it (and the flow runs it
    starts) at the servers and the data root. ``--type process``: without it the worker asks
    the API for the pool's type at start-up and exits if the server is down at that moment."""
    return Service("prefect worker",
                   [BIN / "prefect", "worker", "start", "--pool", pool, "--type", "process"],
                   {**env, "PREFECT_WORKER_QUERY_SECONDS": "2"}, root / "logs" / "worker.log",
                   cwd=root)


#: SIGTERM-to-SIGKILL grace for a Prefect worker at teardown. A worker that has run no flow exits
#: in under a second; one that has run flow runs logs "Received SIGTERM. Sending SIGINT to the
#: process worker" and then did not exit in any run looked at, so the default 20 s grace was
#: spent waiting for the SIGKILL each time (what is left afterwards is still checked).
WORKER_STOP_GRACE = 5.0


def wait_worker_online(worker: Service, api: str, pool: str = "prnf-process",
                       timeout: float = 180.0) -> float:
    """Wait until the Prefect server lists a worker of ``pool`` as ONLINE (it has polled and sent
    its heartbeat); return the seconds it took. Fails early if the worker exits."""
    started = time.monotonic()
    while True:
        if worker.proc.poll() is not None:
            raise RuntimeError(f"{worker.describe()} exited with {worker.proc.returncode}:\n"
                               f"{tail(worker.log)}")
        with contextlib.suppress(httpx.HTTPError):
            workers = httpx.post(f"{api}/work_pools/{pool}/workers/filter", json={},
                                 timeout=10).json()
            if any(w.get("status") == "ONLINE" for w in workers):
                return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{worker.describe()}: not ONLINE after {timeout:.0f} s:\n"
                               f"{tail(worker.log)}")
        time.sleep(0.5)


def tree(pid: int) -> list[psutil.Process]:
    """The process ``pid`` and its live descendants (empty if it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def open_fds(service: Service) -> int:
    """Open file descriptors of the service's process and its descendants."""
    total = 0
    for proc in tree(service.proc.pid) if service.proc else []:
        with contextlib.suppress(psutil.Error):
            total += proc.num_fds()
    return total


def processes_with_env(name: str, value: str) -> list[psutil.Process]:
    """Live processes of this user whose environment has ``name=value``: with a unique value
    (a temporary data root) these are exactly the processes a stack started, wherever they were
    re-parented to."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.status() != psutil.STATUS_ZOMBIE \
                    and proc.environ().get(name) == value:
                found.append(proc)
        except psutil.Error:
            continue
    return found
