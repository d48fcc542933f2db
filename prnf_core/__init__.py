"""prnf_core: the pure library of prnf (no Prefect, no MLflow).

SDEs and built-in problems, initial distributions, the Euler–Maruyama simulator and the chunked
Zarr dataset layout. See ``docs/architecture.md``.
"""

from prnf_core._version import __version__
from prnf_core.dataset import Dataset, DatasetConfig, create_dataset, open_dataset
from prnf_core.errors import (
    ConfigError,
    DatasetMismatchError,
    IncompleteDatasetError,
    NonFiniteStateError,
    PrnfError,
)
from prnf_core.initial import InitialSpec, parse_initial
from prnf_core.problems import get_problem, list_problems, register_problem
from prnf_core.runner import RunSummary, run_dataset
from prnf_core.sde import SDE, Boundary
from prnf_core.simulate import SimulationResult, simulate

__all__ = [
    "SDE",
    "Boundary",
    "ConfigError",
    "Dataset",
    "DatasetConfig",
    "DatasetMismatchError",
    "IncompleteDatasetError",
    "InitialSpec",
    "NonFiniteStateError",
    "PrnfError",
    "RunSummary",
    "SimulationResult",
    "__version__",
    "create_dataset",
    "get_problem",
    "list_problems",
    "open_dataset",
    "parse_initial",
    "register_problem",
    "run_dataset",
    "simulate",
]
