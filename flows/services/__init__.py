"""The production profile on 127.0.0.1: PostgreSQL 15, SeaweedFS S3, a Prefect server and an
MLflow server on them, a Dask scheduler and workers; ``prnf services up|status|down|env``.

Modules, one concept each: :mod:`~flows.services.config` (the typed settings and the file
layout), :mod:`~flows.services.credentials` (generated secrets, mode 0600),
:mod:`~flows.services.process` (a server in its own process group, started and stopped by it),
:mod:`~flows.services.postgres` (the PostgreSQL cluster), :mod:`~flows.services.stack` (each
server's command, environment and health check) and :mod:`~flows.services.manager`
(``up``/``status``/``down`` and the state file).
"""
