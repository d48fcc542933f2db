"""``prnf services up|status|down``: one command brings the production profile up, reports it
and stops it; every process is started and stopped by prnf.

State: ``<data root>/services/state.json`` records the configuration and, per server, its pid,
process group, start time, port and log. ``up`` leaves a running, healthy server alone, starts
the others and waits (bounded) for each to be healthy; if one is not, it stops what this call
started and fails naming the server and the tail of its log. ``down`` stops the servers in
reverse order (PostgreSQL with ``pg_ctl stop -m fast``, the others by process group: SIGTERM,
a bounded wait, SIGKILL) and reports any process that survived.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flows.services import postgres, stack
from flows.services.config import Layout, ServicesConfig
from flows.services.credentials import Credentials, load_or_create
from flows.services.process import Service, alive, create_time, same_process
from prnf_core.errors import ConfigError, PrnfError
from prnf_core.paths import atomic_path

# Seconds a server may take to stop on SIGTERM before its group is killed (SeaweedFS needs
# more than 15 s to stop on SIGTERM; its data is written through, so it is not waited for long).
GRACE = {"seaweedfs": 5.0, "dask-worker": 15.0}
DEFAULT_GRACE = 20.0


class ServiceError(PrnfError):
    """A server did not start or become healthy, or survived ``down``; exit code 1."""

    exit_code = 1


@dataclass
class ServiceStatus:
    name: str
    state: str  # healthy | running (not healthy) | stopped
    port: int | None
    pid: int | None
    log: str

    def line(self) -> str:
        pid = self.pid if self.state != "stopped" else "-"
        return f"{self.name:<15} {self.state:<9} port {self.port or '-':<6} pid {pid:<8} " \
               f"log {self.log}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_state(layout: Layout) -> dict[str, Any]:
    try:
        return json.loads(layout.state.read_text())
    except FileNotFoundError:
        return {"services": {}}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"services: cannot read {layout.state} ({exc}); stop any server "
                          "left running by hand and delete it") from None


def write_state(layout: Layout, state: dict[str, Any]) -> None:
    with atomic_path(layout.state) as tmp:
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")


def _running(record: dict[str, Any] | None) -> bool:
    return bool(record) and same_process(record["pid"], record.get("started"))


def _prepare_dirs(layout: Layout) -> None:
    """The services directory: others may traverse it when root (PostgreSQL runs as the
    ``postgres`` user), nobody else may list or read it."""
    shared = 0o711 if os.geteuid() == 0 else 0o700
    for folder, mode in ((layout.dir, shared), (layout.logs, shared), (layout.weed, 0o700),
                         (layout.prefect_home, 0o700), (layout.dask, 0o700)):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, mode)


def _private_log(layout: Layout, name: str) -> None:
    path = layout.log(name)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))


def resolve_config(layout: Layout, options: dict[str, Any]) -> ServicesConfig:
    """The configuration of ``up``: the options given (None: not given) over the defaults;
    while servers of an earlier ``up`` run, their recorded configuration, which an option may
    not contradict (``down`` first)."""
    given = {k: v for k, v in options.items() if v is not None}
    state = read_state(layout)
    if state.get("config") and any(_running(r) for r in state["services"].values()):
        recorded = ServicesConfig(**state["config"])
        clash = [f"{k}={getattr(recorded, k)}" for k, v in given.items()
                 if k in ServicesConfig.model_fields and getattr(recorded, k) != v]
        if clash:
            raise ConfigError(f"services: already running with {', '.join(clash)}; "
                              "`prnf services down` first to change it")
        return recorded.model_copy(update={k: v for k, v in given.items()
                                           if k == "health_timeout"})
    return ServicesConfig(**given)


def up(options: dict[str, Any] | None = None, echo=print) -> dict[str, str]:
    """Bring the profile up (idempotent); return the environment to export.

    Raises:
        ServiceError: a server did not become healthy within ``health_timeout`` (the message
            names it and ends with its log's tail); what this call started is stopped again.
        ConfigError: bad options, or options that contradict the running profile.
    """
    layout = Layout()
    config = resolve_config(layout, options or {})
    _prepare_dirs(layout)
    creds = load_or_create(layout.credentials)
    stack.write_s3_identities(layout, creds)
    stack.write_dask_config(layout)
    state = read_state(layout)
    state["config"] = config.model_dump()
    records: dict[str, Any] = state.setdefault("services", {})
    began = time.monotonic()
    started: list[str] = []
    pending: dict[str, Service] = {}

    def note(line: str) -> None:  # each line with the seconds since the start
        echo(f"[{time.monotonic() - began:5.1f} s] {line}")

    def record(name: str, pid: int, port: int) -> None:
        records[name] = {"pid": pid, "pgid": os.getpgid(pid), "started": create_time(pid),
                         "port": port, "log": str(layout.log(name)), "started_at": _now()}
        write_state(layout, state)

    def launch(name: str) -> None:
        """Start ``name`` unless it runs (a running one is waited for like a new one)."""
        if _running(records.get(name)):
            pending[name] = Service.attach(name, records[name]["pid"],
                                           records[name].get("started"), layout.log(name))
            return
        _private_log(layout, name)
        svc = stack.service(name, config, creds, layout).start()
        started.append(name)
        pending[name] = svc
        record(name, svc.pid, stack.port_of(name, config))
        note(f"started {name} (pid {svc.pid}, port {stack.port_of(name, config)})")

    def wait(name: str, check=None, what: str | None = None, say: bool = True) -> None:
        check = check or (lambda: stack.healthy(name, config, creds))
        svc = pending[name]
        try:
            seconds = svc.wait_until(check, what or f"{name}'s health check",
                                     timeout=config.health_timeout, every=0.5)
        except (RuntimeError, TimeoutError) as exc:
            raise ServiceError(f"services: {name} did not become healthy: {exc}") from None
        if say and name in started:
            note(f"{name} healthy after {seconds:.1f} s")

    try:
        # SeaweedFS and Dask need nothing else: started first, they come up while PostgreSQL
        # is prepared (pg_ctl waits for it) and Prefect and MLflow start on it
        for name in ("seaweedfs", "dask-scheduler", "dask-worker"):
            launch(name)
        data, pg_log = layout.postgres, layout.log("postgres")
        if _running(records.get("postgres")) and stack.healthy("postgres", config, creds):
            pass
        else:
            postgres.prepare(data, pg_log)
            pid = postgres.server_pid(data)
            if pid is None or not alive(pid):
                t0 = time.monotonic()
                try:
                    pid = postgres.start(data, config.postgres_port, pg_log,
                                         timeout=config.health_timeout)
                except postgres.PostgresError as exc:
                    raise ServiceError(f"services: postgres did not become healthy: {exc}"
                                       ) from None
                started.append("postgres")
                record("postgres", pid, config.postgres_port)
                note(f"started postgres (pid {pid}, port {config.postgres_port}) in "
                     f"{time.monotonic() - t0:.1f} s")
            else:
                record("postgres", pid, config.postgres_port)
            postgres.provision(data, config.postgres_port, creds)
        for name in ("prefect", "mlflow"):
            launch(name)
        wait("seaweedfs", lambda: stack.http_ok(
            f"http://127.0.0.1:{config.s3_port}/healthz"), "S3 /healthz", say=False)
        wait("seaweedfs", lambda: stack.create_buckets(config, creds) or True, "bucket creation")
        for name in ("dask-scheduler", "dask-worker", "mlflow", "prefect"):
            wait(name)
    except BaseException as exc:
        leftovers = _stop(layout, state, [n for n in reversed(stack.SERVICES) if n in started])
        if isinstance(exc, PrnfError) and leftovers:
            raise ServiceError(f"{exc}\nalso, still running after stopping: "
                               + "; ".join(leftovers)) from None
        raise
    state["up_seconds"] = round(time.monotonic() - began, 1)
    write_state(layout, state)
    note(f"services up in {state['up_seconds']:.1f} s "
         f"({'started ' + ', '.join(started) if started else 'all were running'})")
    return stack.client_env(config, creds, layout)


# Stopped in two waves, the servers of a wave at once: the users of the others first.
WAVES = (("dask-worker", "mlflow", "prefect"), ("dask-scheduler", "seaweedfs", "postgres"))


def _stop(layout: Layout, state: dict[str, Any], names: list[str], echo=None) -> list[str]:
    """Stop ``names`` (wave by wave, see ``WAVES``); return descriptions of surviving
    processes."""
    from concurrent.futures import ThreadPoolExecutor

    records = state.get("services", {})

    def stop_one(name: str) -> list[str]:
        leftovers = []
        rec = records.get(name)
        began = time.monotonic()
        if name == "postgres":
            try:
                postgres.stop(layout.postgres)
            except postgres.PostgresError as exc:
                leftovers.append(f"postgres: {exc}")
        if rec:
            svc = Service.attach(name, rec["pid"], rec.get("started"), layout.log(name))
            leftovers += svc.stop(grace=GRACE.get(name, DEFAULT_GRACE))
        if name == "seaweedfs" and state.get("config"):
            remove_weed_sockets(ServicesConfig(**state["config"]))
        if echo is not None and (rec or name == "postgres"):
            echo(f"stopped {name} in {time.monotonic() - began:.1f} s")
        return leftovers

    leftovers: list[str] = []
    for wave in WAVES:
        now = [n for n in wave if n in names]
        with ThreadPoolExecutor(max_workers=max(1, len(now))) as pool:
            for name, left in zip(now, pool.map(stop_one, now), strict=True):
                leftovers += left
                records.pop(name, None)
        write_state(layout, state)
    return leftovers


def remove_weed_sockets(config: ServicesConfig) -> None:
    """SeaweedFS leaves unix sockets named by its ports in /tmp
    (``/tmp/seaweedfs-master-grpc-<port>.sock``, ...) when it is killed: remove ours."""
    from pathlib import Path

    ports = {p for k, p in config.ports().items() if k.startswith(("s3_", "weed_"))}
    for port in ports:
        for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                if sock.is_socket() and sock.stat().st_uid == os.geteuid():
                    sock.unlink()


def down(echo=print) -> None:
    """Stop every server of the profile (reverse start order).

    Raises:
        ServiceError: a process survived (named with its command line).
    """
    layout = Layout()
    state = read_state(layout)
    names = [n for n in reversed(stack.SERVICES)
             if n in state.get("services", {}) or n == "postgres"]
    if not state.get("services") and postgres.server_pid(layout.postgres) is None:
        echo("services: nothing is running")
        return
    began = time.monotonic()
    leftovers = _stop(layout, state, names, echo)
    if leftovers:
        raise ServiceError("services: still running after down: " + "; ".join(leftovers))
    echo(f"services down in {time.monotonic() - began:.1f} s")


def credentials(layout: Layout | None = None) -> Credentials:
    layout = layout or Layout()
    if not layout.credentials.exists():
        raise ConfigError(f"services: no credentials in {layout.credentials}; run "
                          "`prnf services up` first")
    return load_or_create(layout.credentials)


def status() -> list[ServiceStatus]:
    """Each server's state (healthy, running but not healthy, stopped), port and pid."""
    layout = Layout()
    state = read_state(layout)
    if not state.get("config"):
        return [ServiceStatus(n, "stopped", None, None, str(layout.log(n)))
                for n in stack.SERVICES]
    config = ServicesConfig(**state["config"])
    creds = credentials(layout)
    out = []
    for name in stack.SERVICES:
        rec = state["services"].get(name)
        port = stack.port_of(name, config)
        if not _running(rec):
            out.append(ServiceStatus(name, "stopped", port, None, str(layout.log(name))))
            continue
        ok = stack.healthy(name, config, creds)
        out.append(ServiceStatus(name, "healthy" if ok else "running", port, rec["pid"],
                                 str(layout.log(name))))
    return out


def env() -> dict[str, str]:
    """The environment to export for the profile (from its recorded configuration)."""
    layout = Layout()
    state = read_state(layout)
    if not state.get("config"):
        raise ConfigError("services: the profile has not been brought up here "
                          f"({layout.state} missing); run `prnf services up`")
    return stack.client_env(ServicesConfig(**state["config"]), credentials(layout), layout)


def export_lines(values: dict[str, str]) -> str:
    import shlex

    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())

