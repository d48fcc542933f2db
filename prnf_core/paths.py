"""The data root: where datasets, models and the embedded MLflow store live by default."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_ENV = "PRNF_DATA_ROOT"


def data_root() -> Path:
    """``$PRNF_DATA_ROOT`` or ``./data``, resolved to an absolute path."""
    return Path(os.environ.get(DATA_ROOT_ENV) or "data").expanduser().resolve()


def default_dataset_path(problem: str, dataset_id: str) -> Path:
    return data_root() / "datasets" / f"{problem}-{dataset_id}.zarr"
