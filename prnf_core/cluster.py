"""Where Dask work runs: a local cluster of processes, an existing scheduler, or a cluster class.

The same flows scale out by configuration only:

* default: a ``LocalCluster`` of processes sized to the machine (one single-threaded worker per
  core, since each chunk is already vectorized);
* ``address="tcp://host:8786"`` (or ``$PRNF_DASK_ADDRESS``): an existing scheduler; prnf must be
  importable on the scheduler and every worker;
* ``cluster_class="dask_jobqueue.SLURMCluster"`` with ``cluster_kwargs`` and ``workers``: any
  class following Dask's cluster protocol (dask-jobqueue, dask-kubernetes), imported by its dotted
  name and scaled to ``workers``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import dask
from pydantic import BaseModel, ConfigDict, Field, field_validator

from prnf_core.errors import ConfigError

ADDRESS_ENV = "PRNF_DASK_ADDRESS"


class ExecutionConfig(BaseModel):
    """How chunks are executed (not part of a dataset's identity: results do not depend on it)."""

    model_config = ConfigDict(extra="forbid")

    workers: int | None = Field(
        None, ge=0,
        description="Dask worker processes (default: one per core). 0 runs chunks in-process.",
    )
    threads_per_worker: int = Field(1, ge=1, description="Torch threads per worker process.")
    address: str | None = Field(
        None,
        description=f"Address of an existing Dask scheduler (default: ${ADDRESS_ENV} if set).",
    )
    cluster_class: str | None = Field(
        None, description="Dotted name of a Dask cluster class, e.g. dask_jobqueue.SLURMCluster.",
    )
    cluster_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for cluster_class."
    )
    device: str | None = Field(
        None, description="Torch device for simulation (default: cuda when present, else cpu)."
    )

    @field_validator("cluster_class")
    @classmethod
    def _dotted(cls, value: str | None) -> str | None:
        if value is not None and (
            "." not in value or not all(p.isidentifier() for p in value.split("."))
        ):
            raise ValueError(f"must be a dotted class name like 'pkg.Class', got {value!r}")
        return value

    def resolved_address(self) -> str | None:
        return self.address or os.environ.get(ADDRESS_ENV) or None

    def resolved_workers(self) -> int:
        return self.workers if self.workers is not None else (os.cpu_count() or 1)


@contextlib.contextmanager
def dask_client(execution: ExecutionConfig) -> Iterator[Any | None]:
    """Yield a ``distributed.Client`` for ``execution`` (``None`` when running in-process)."""
    address = execution.resolved_address()
    if address is None and execution.cluster_class is None and execution.resolved_workers() == 0:
        yield None
        return
    from distributed import Client, LocalCluster

    if address is not None:
        with Client(address, set_as_default=False) as client:
            yield client
        return
    if execution.cluster_class is not None:
        module_name, _, class_name = execution.cluster_class.rpartition(".")
        try:
            cluster_cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"cluster_class: cannot import {execution.cluster_class!r}: {exc}"
            ) from exc
        from distributed.deploy import Cluster

        # A flow parameter names it: only a Dask cluster class may be called, never any callable
        # (``os.system`` with ``cluster_kwargs={"command": ...}`` would run a shell command).
        if not (isinstance(cluster_cls, type) and issubclass(cluster_cls, Cluster)):
            raise ConfigError(f"cluster_class: {execution.cluster_class!r} is not a Dask cluster "
                              "class (a subclass of distributed.deploy.Cluster)")
        cluster = cluster_cls(**execution.cluster_kwargs)
        cluster.scale(max(execution.resolved_workers(), 1))
    else:
        # The scheduler and nannies run in this process: keep their chatter out of user logs.
        logging.getLogger("distributed").setLevel(logging.WARNING)
        # Dask's default MALLOC_TRIM_THRESHOLD_ for workers turns every large torch temporary
        # into a fresh mapping with page faults: measured 1.5-3x slower chunks. Drop it.
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_":
                              None}):
            cluster = LocalCluster(
                n_workers=execution.resolved_workers(),
                threads_per_worker=execution.threads_per_worker,
                processes=True,
                # A free port on the loopback interface: never collides with another cluster and
                # is not exposed (":0" alone binds the dashboard to every interface).
                dashboard_address="127.0.0.1:0",
                silence_logs=logging.WARNING,
            )
    environ = dict(os.environ)
    try:
        with cluster, Client(cluster, set_as_default=False) as client:
            yield client
    finally:
        # Starting a LocalCluster sets OMP/MKL/OPENBLAS_NUM_THREADS=1 and MALLOC_TRIM_THRESHOLD_
        # in this process too; restore the caller's environment.
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        os.environ.update(environ)
