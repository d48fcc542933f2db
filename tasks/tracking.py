"""MLflow tracking: embedded sqlite store under the data root by default, a server by env.

``MLFLOW_TRACKING_URI`` selects a server (``http://127.0.0.1:5000``); otherwise runs go to
``sqlite:///<data root>/mlflow.db`` with artifacts under ``<data root>/mlartifacts`` (the plain
``./mlruns`` file store is rejected by MLflow >= 3.13). One experiment per problem
(``prnf-<problem>``); a pipeline run is a parent run with child runs for its steps.

Runs are addressed by id through :class:`mlflow.MlflowClient`, not the fluent "active run",
because Prefect runs tasks in worker threads where the fluent run stack is not shared.

A server that stops answering costs each MLflow call a bounded time (``_RETRY_ENV``: 3 retries
with 0 + 2 + 4 s of back-off plus up to 1 s of jitter each, i.e. ~6-9 s when connections are
refused; 20 s per attempt when a hung server accepts them but never answers), after which the
call raises; :func:`is_unavailable` tells such a failure from an ordinary MLflow error.

Interrupted runs. A run whose process died (killed, or ended by a tracking outage: a run cannot
be marked FAILED on a server that is gone) would stay RUNNING forever. Every run prnf starts
records its owner in tags (``prnf.host``, ``prnf.pid``, ``prnf.pid_started``: the process's
creation time, which tells a live owner from a recycled pid), and every flow that starts
tracking (:func:`check_reachable`) first marks the orphans FAILED (:func:`fail_interrupted_runs`,
the rule is there), with a ``prnf.failed_reason`` tag.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import psutil
import requests
import urllib3
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from prnf_core.errors import PrnfError
from prnf_core.paths import data_root
from tasks.registry import model_version_of

# Bounded retries when the tracking server does not answer (seconds of back-off per try).
_RETRY_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
              "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}


class TrackingUnavailableError(PrnfError):
    """The MLflow tracking server could not be reached after bounded retries."""


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or the embedded sqlite store under the data root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    root = data_root()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def configure() -> MlflowClient:
    """Point MLflow at the tracking store and return a client."""
    for key, value in _RETRY_ENV.items():
        os.environ.setdefault(key, value)
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(client: MlflowClient, problem: str) -> str:
    """The experiment ``prnf-<problem>``, created with an artifact location under the data root
    when tracking is embedded (a server picks its own artifact store)."""
    name = f"prnf-{problem}"
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if tracking_uri().startswith("sqlite:"):
        location = (data_root() / "mlartifacts" / problem).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created concurrently by another run
        return client.get_experiment_by_name(name).experiment_id


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """Nested config -> ``{"a.b.c": "value"}`` (MLflow params are flat strings)."""
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for key, sub in value.items():
            out.update(flatten(f"{prefix}.{key}" if prefix else str(key), sub))
        return out
    text = json.dumps(value) if isinstance(value, list | tuple | type(None)) else str(value)
    return {prefix: text[:6000]}


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    flat = flatten("", params)
    items = [Param(k, v) for k, v in flat.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start:start + 100], synchronous=True)


def log_metrics(client: MlflowClient, run_id: str, metrics: Mapping[str, float],
                step: int = 0) -> None:
    now = int(time.time() * 1000)
    items = [Metric(k.replace("/", "."), float(v), now, step) for k, v in metrics.items()
             if v is not None and v == v]  # NaN is not a metric worth storing
    for start in range(0, len(items), 500):
        client.log_batch(run_id, metrics=items[start:start + 500], synchronous=True)


def set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, Any]) -> None:
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()],
                     synchronous=True)


def owner_tags() -> dict[str, str]:
    """Who runs this process: the tags by which :func:`fail_interrupted_runs` tells a run
    whose owner is gone from one still running."""
    created = psutil.Process().create_time()
    return {"prnf.host": socket.gethostname(), "prnf.pid": str(os.getpid()),
            "prnf.pid_started": f"{created:.3f}"}


def start_run(client: MlflowClient, experiment: str, name: str,
              parent_run_id: str | None = None, tags: Mapping[str, Any] | None = None) -> str:
    """Create a run (a child of ``parent_run_id`` if given) tagged with its step and owner."""
    all_tags = {"prnf.step": name, **owner_tags(), **(tags or {})}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    return client.create_run(experiment, run_name=name, tags=all_tags).info.run_id


@contextlib.contextmanager
def child_run(client: MlflowClient, experiment: str, name: str, parent_run_id: str | None,
              tags: Mapping[str, Any] | None = None) -> Iterator[str]:
    """A child run that ends FINISHED, or FAILED if the block raises."""
    run_id = start_run(client, experiment, name, parent_run_id, tags)
    try:
        yield run_id
    except BaseException as exc:
        # Marking the run FAILED on a server that just refused a connection would only add
        # another round of retries to the failure.
        if not _connection_failure(exc):
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")


def log_artifacts(client: MlflowClient, run_id: str, paths: list[str | Path],
                  artifact_path: str | None = None) -> None:
    for path in paths:
        client.log_artifact(run_id, str(path), artifact_path)


@dataclass(frozen=True)
class ModelRun:
    """An MLflow run about one model (:func:`model_run`): its id, and the model's registered
    name and version (None for a URI or directory outside the registry)."""

    client: MlflowClient
    run_id: str
    model_name: str | None
    model_version: str | None

    def log(self, params: Mapping[str, Any] | None = None,
            metrics: Mapping[str, float] | None = None, artifacts: Sequence[str | Path] = (),
            artifact_path: str | None = None) -> None:
        """Log params, metrics (``/`` becomes ``.``, None and NaN dropped) and files."""
        if params:
            log_params(self.client, self.run_id, params)
        if metrics:
            log_metrics(self.client, self.run_id, metrics)
        if artifacts:
            log_artifacts(self.client, self.run_id, list(artifacts), artifact_path)


@contextlib.contextmanager
def model_run(client: MlflowClient, problem: str, step: str, model: str, *,
              run_name: str | None = None, tags: Mapping[str, Any] | None = None,
              registered: tuple[str | None, str | None] | None = None) -> Iterator[ModelRun]:
    """A top-level run ``run_name`` (default: ``step``) in the experiment of ``problem`` about
    the model ``model`` (a registry or run URI, or a directory), for what a flow does with a
    model it did not train (sample, check, inverse).

    Tagged ``prnf.step = step``, ``prnf.model`` (the registered name, else ``model``),
    ``prnf.model_version`` (the version, else empty), the owner (:func:`start_run`) and
    ``tags``; it ends FINISHED, or FAILED if the block raises (:func:`child_run`).
    ``registered``: the model's ``(name, version)`` when the caller has resolved it already
    (:func:`tasks.registry.model_version_of`: an alias is resolved once).
    """
    name, version = registered if registered is not None else model_version_of(client, model)
    all_tags = {"prnf.step": step, "prnf.model": name or model,
                "prnf.model_version": version or "", **(tags or {})}
    with child_run(client, experiment_id(client, problem), run_name or step, None,
                   all_tags) as run_id:
        yield ModelRun(client, run_id, name, version)


def run_url(run_id: str, experiment: str) -> str:
    """A link to the run: the server UI when tracking is remote, else the runs:/ URI."""
    uri = tracking_uri()
    if uri.startswith("http"):
        return f"{uri.rstrip('/')}/#/experiments/{experiment}/runs/{run_id}"
    return f"runs:/{run_id}"


def check_reachable(client: MlflowClient) -> None:
    """Fail fast with a clear message when a remote tracking server does not answer; once it
    does, mark the runs an earlier outage or kill left RUNNING as FAILED
    (:func:`fail_interrupted_runs`). Every flow that tracks calls this first."""
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingUnavailableError(
            f"MLflow tracking server {tracking_uri()} is unreachable after bounded retries: "
            f"{type(exc).__name__}: {str(exc)[:300]}"
        ) from exc
    try:
        fail_interrupted_runs(client)
    except Exception as exc:  # housekeeping must never stop the run that does it
        logging.getLogger(__name__).warning("could not check for interrupted MLflow runs: %s",
                                            describe(exc))


#: A RUNNING run that this host cannot check (another host's, or one without owner tags) is
#: taken for interrupted only this long after it started: a week, far beyond any prnf run.
STALE_AFTER_SECONDS = 7 * 24 * 3600


def owner_gone(tags: Mapping[str, str], start_time_ms: int | None,
               now: float | None = None) -> str | None:
    """Why the run with these tags no longer has a live owner, or None if it may.

    The rule: a run started on this host (``prnf.host``) by ``prnf.pid`` is orphaned when no
    process with that pid runs, or it is a zombie, or it was created at another time than
    ``prnf.pid_started`` (a recycled pid). A run of another host, or without owner tags (older
    prnf, other tools), cannot be checked from here: it counts as orphaned only once it is
    older than :data:`STALE_AFTER_SECONDS`.
    """
    pid = tags.get("prnf.pid")
    if tags.get("prnf.host") == socket.gethostname() and pid and pid.isdigit():
        try:
            proc = psutil.Process(int(pid))
            alive = proc.status() != psutil.STATUS_ZOMBIE
            created = proc.create_time()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            alive, created = False, None
        except psutil.Error:  # e.g. access denied: someone's live process
            return None
        recorded = tags.get("prnf.pid_started")
        if alive and recorded and created is not None:
            with contextlib.suppress(ValueError):
                if abs(created - float(recorded)) > 1.0:
                    return f"its process {pid} on {tags['prnf.host']} ended (pid now reused)"
        return None if alive else f"its process {pid} on {tags['prnf.host']} ended"
    age = (now if now is not None else time.time()) - (start_time_ms or 0) / 1000
    if age > STALE_AFTER_SECONDS:
        where = f"on {tags['prnf.host']} " if tags.get("prnf.host") else ""
        return (f"it started {where}{age / 86400:.1f} days ago, longer than any prnf run, "
                "and its owner cannot be checked from this host")
    return None


def fail_interrupted_runs(client: MlflowClient) -> list[str]:
    """Mark FAILED the RUNNING runs of prnf's experiments (``prnf-*``) whose owner is gone
    (:func:`owner_gone`), tagged ``prnf.failed_reason``; return their ids.

    Such runs are left by a killed process or by a tracking outage (a run cannot be ended on a
    server that does not answer), and the next start that reaches the server ends them.
    """
    experiments = [e.experiment_id for e in client.search_experiments(
        filter_string="name LIKE 'prnf-%'", max_results=1000)]
    failed: list[str] = []
    if not experiments:
        return failed
    now = time.time()
    page_token = None
    while True:
        runs = client.search_runs(experiments, "attributes.status = 'RUNNING'",
                                  max_results=1000, page_token=page_token)
        for run in runs:
            reason = owner_gone(run.data.tags, run.info.start_time, now)
            if reason is None:
                continue
            set_tags(client, run.info.run_id, {
                "prnf.failed_reason": f"interrupted: {reason}; marked FAILED by pid "
                                      f"{os.getpid()} on {socket.gethostname()} at "
                                      f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')}"})
            client.set_terminated(run.info.run_id, "FAILED")
            failed.append(run.info.run_id)
        page_token = runs.token
        if not page_token:
            return failed


# Exceptions meaning "the tracking server did not answer", wherever MLflow wraps them: its REST
# client raises ``MlflowException("API request to ... failed with exception ...")`` while handling
# the requests/urllib3 error, which stays in the chain as ``__context__``.
# Only the HTTP libraries' own types: a builtin ConnectionError/TimeoutError may as well come
# from a Dask cluster during the simulation.
_CONNECTION_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                      urllib3.exceptions.MaxRetryError, urllib3.exceptions.ProtocolError)


_TRACKING_ERRORS = (mlflow.exceptions.MlflowException, requests.RequestException)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _connection_failure(exc: BaseException) -> bool:
    return any(isinstance(e, _CONNECTION_ERRORS) for e in _chain(exc))


def reachable(timeout: float = 5.0) -> bool:
    """One quick probe of the tracking server, without MLflow's retries: does it answer HTTP at
    all (status < 500)? Always True for the embedded sqlite store."""
    uri = tracking_uri()
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        return requests.get(f"{uri.rstrip('/')}/health", timeout=timeout).status_code < 500
    except requests.RequestException:
        return False


def is_unavailable(exc: BaseException) -> bool:
    """Did ``exc`` come from a tracking server that stopped answering?

    True when a connection error or timeout is in the exception chain (what MLflow's REST
    client raises once its bounded retries are spent), or when the exception is an MLflow or
    HTTP error and a direct probe of the server now fails too (e.g. artifact uploads, which
    report a dead server differently). A prnf error (bad configuration, diverged training) is
    never a tracking failure, whatever state the server is in.
    """
    if isinstance(exc, TrackingUnavailableError):
        return True
    if isinstance(exc, PrnfError):
        return False
    if _connection_failure(exc):
        return True
    tracking_error = any(isinstance(e, _TRACKING_ERRORS) for e in _chain(exc))
    return tracking_error and not reachable()


def describe(exc: BaseException) -> str:
    """A short one-line account of a tracking failure: the exception MLflow raised and the root
    cause at the bottom of its chain (``Connection refused``, a timeout), not the whole chain."""
    root = list(_chain(exc))[-1]
    if root is exc:
        return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return f"{type(exc).__name__} ({type(root).__name__}: {' '.join(str(root).split())[:200]})"
