"""Quiet, offline defaults for the services, applied before Prefect or MLflow is imported.

Users override any of them by setting the variable themselves.
"""

from __future__ import annotations

import os

DEFAULTS = {
    "DO_NOT_TRACK": "true",  # Prefect and MLflow telemetry ("1" is not honoured by MLflow)
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # The temporary Prefect server of embedded mode may start slowly on a busy machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_LEVEL": "WARNING" if os.environ.get("PRNF_QUIET") else "INFO",
}


def apply_defaults() -> None:
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
