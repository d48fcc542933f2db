"""Real servers for the services tests: loopback only, free ports, one process group each.

Each server is started in its own session (``start_new_session=True``, i.e. ``setsid``) with its
output in a log file, and stopped by signalling its process group: SIGTERM, then SIGKILL for what
survives. ``stop`` also records the server's descendants first (a Prefect worker starts each flow
run in a new session, outside its group) and reports every process that is still alive after.

The same helpers start the stack of ``benchmarks/soak.py`` (``mlflow_server``, ``prefect_server``,
``prefect_worker``) and measure it (``tree``, ``open_fds``, ``processes_with_env``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

BIN = Path(sys.executable).parent  # the virtualenv's bin: mlflow, prefect, prnf, python
QUIET = {"DO_NOT_TRACK": "true", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
         "MLFLOW_DISABLE_TELEMETRY": "true"}


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that were free a moment ago (each bound to port 0,
    all held at once, then released)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                 for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def free_port() -> int:
    return free_ports(1)[0]


def clean_env(**values: str | Path) -> dict[str, str]:
    """This process's environment without Prefect/MLflow/prnf settings, plus quiet telemetry,
    a wide terminal (no wrapped lines to parse) and ``values``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "PRNF_"))}
    env.update(QUIET, COLUMNS="400", PYTHONUNBUFFERED="1")
    env.update({k: str(v) for k, v in values.items()})
    return env


def tail(path: Path, lines: int = 50) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"<{path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def output_tail(proc: subprocess.CompletedProcess, chars: int = 4000) -> str:
    """The end of a finished command's stdout and stderr, for assertion messages."""
    return (f"$ {' '.join(map(str, proc.args))}\nexit code {proc.returncode}\n"
            f"--- stdout ---\n{(proc.stdout or '')[-chars:]}\n"
            f"--- stderr ---\n{(proc.stderr or '')[-chars:]}")


def _group_members(pgid: int) -> set[int]:
    members = set()
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                members.add(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class Service:
    """One background server process (and whatever it starts)."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    cwd: Path | None = None
    proc: subprocess.Popen | None = None
    seen: set[int] = field(default_factory=set)

    def start(self) -> Service:
        """Start the process; also after ``stop`` (a restart: the log is appended to, and the
        processes remembered from the previous run are forgotten, so a recycled pid of theirs
        can never be signalled)."""
        self.seen = set()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(a) for a in self.args], env=self.env, cwd=self.cwd,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        return self

    @property
    def pgid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # a session leader leads its own process group

    def describe(self) -> str:
        return f"{self.name} (pid {self.proc.pid if self.proc else '-'}; log {self.log})"

    def wait_http(self, url: str, timeout: float = 120.0) -> float:
        """Poll ``url`` until it answers 200; return the seconds it took. Fails early, with the
        log's tail, if the process exits."""
        started = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.describe()} exited with {self.proc.returncode} "
                                   f"before {url} answered:\n{tail(self.log)}")
            try:
                if httpx.get(url, timeout=3).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{self.describe()}: {url} not healthy after {timeout:.0f} s:"
                                   f"\n{tail(self.log)}")
            time.sleep(0.3)

    def snapshot(self) -> None:
        """Remember the group's members and the leader's descendants (they may leave the group)."""
        if self.proc is None:
            return
        self.seen |= _group_members(self.pgid)
        with contextlib.suppress(psutil.NoSuchProcess):
            self.seen |= {p.pid for p in psutil.Process(self.proc.pid).children(recursive=True)}

    def stop(self, grace: float = 20.0) -> list[str]:
        """SIGTERM the process group, SIGKILL it (and strays) after ``grace`` seconds. Returns
        descriptions of processes still alive afterwards (empty: nothing leaked)."""
        if self.proc is None:
            return []
        self.snapshot()
        self._signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self._survivors():
            self.snapshot()
            time.sleep(0.2)
        if self._survivors():
            self._signal_group(signal.SIGKILL)
            for pid in self._survivors():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self._survivors():
            time.sleep(0.2)
        leftovers = []
        for pid in sorted(self._survivors()):
            try:
                leftovers.append(f"{self.name}: pid {pid} {psutil.Process(pid).cmdline()}")
            except psutil.NoSuchProcess:
                continue
        return leftovers

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def _survivors(self) -> set[int]:
        return {pid for pid in self.seen | _group_members(self.pgid) if _alive(pid)}


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
