"""The ``sample`` flow: X_T for an initial distribution from a registered or saved surrogate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import flow
from pydantic import BaseModel, ConfigDict, Field, field_validator

from prnf_core.dataset import ATTR_KEY
from prnf_core.errors import ConfigError, PrnfError
from prnf_core.initial import InitialSpec, parse_initial
from prnf_core.paths import ModelRef, atomic_path, is_url, resolve_path


class SampleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelRef = Field(description="models:/NAME@alias, models:/NAME/VERSION, runs:/... or "
                                        "a dir (a relative dir is taken under the data root).")
    initial: InitialSpec = Field(description="Initial distribution of x0.")
    n: int = Field(10_000, gt=0, description="Number of samples.")
    out: str = Field("samples.npy", description="Output file: .npy or .zarr; a relative path is "
                                                "taken under the data root and may not leave it.")
    seed: int = Field(0, ge=0, description="Seed of x0 and of the surrogate noise.")
    overwrite: bool = Field(
        False, description="Replace an existing output file (a prnf samples output only: a "
                           "dataset store or any other directory is never replaced).",
    )
    time: float | None = Field(
        None, ge=0, description="Time t of X_t, for a model conditioned on time (its trained "
                                "range is in its metadata); empty: the model's one horizon.",
    )
    sde_params: dict[str, float] = Field(
        default_factory=dict,
        description="SDE parameters of a model conditioned on them, e.g. {E0: 0.001} (each "
                    "within the trained box).",
    )
    allow_outside: bool = Field(
        False, description="Allow a time or SDE parameter outside the trained box (the model "
                           "then extrapolates, with a warning); otherwise it is refused.",
    )

    @field_validator("initial", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return parse_initial(value)

    @field_validator("out")
    @classmethod
    def _out(cls, value: str) -> str:
        if Path(value).suffix not in (".npy", ".zarr"):
            raise ValueError(f"must end in .npy or .zarr, got {value!r}")
        return resolve_path(value, "out")


def load_model_param(model: str) -> Any:
    """Load the surrogate a ``model`` parameter names, as a :class:`ConfigError` if it cannot be.

    A local directory holds a model saved by the train flow or an MLflow model (``MLmodel``).
    MLflow is configured only for a URI: a local model directory is read without creating the
    tracking store, so a refused request leaves nothing behind under the data root.
    """
    from tasks.pyfunc import load_surrogate
    from tasks.tracking import configure

    if is_url(model):
        configure()
    elif not any((Path(model) / name).is_file() for name in ("config.json", "MLmodel")):
        raise ConfigError(f"model: no saved model (config.json + weights.pt, or an MLflow "
                          f"MLmodel) in {model!r}")
    try:
        return load_surrogate(model)
    except PrnfError:
        raise
    except Exception as exc:  # MLflow raises its own types for unknown models and aliases
        raise ConfigError(f"model: cannot load {model!r}: {type(exc).__name__}: "
                          f"{str(exc)[:300]}") from exc


SAMPLES_ATTR = "prnf_samples"  # the attributes key of a .zarr samples output


def _zarr_attrs(path: Path) -> dict[str, Any] | None:
    """The attributes of the Zarr group at ``path``, or None when it is not one."""
    import zarr

    try:
        return dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception:  # not a Zarr group (zarr raises several types)
        return None


def check_output(path: str, overwrite: bool) -> None:
    """Refuse to clobber what lies at ``path``: anything unless ``overwrite``, and with it
    anything but a previous samples output (a ``.npy`` file or a ``.zarr`` group of samples).

    A training dataset is expensive and a samples output looks just like its path: a dataset
    store is refused by name, even with ``overwrite``.

    Raises:
        ConfigError: naming ``out`` and how to proceed.
    """
    target = Path(path)
    if not target.exists() and not target.is_symlink():
        return
    attrs = _zarr_attrs(target) if target.is_dir() else None
    if attrs is not None and ATTR_KEY in attrs:
        raise ConfigError(f"out: {path} is a prnf dataset store; samples never replace a "
                          "dataset, even with --overwrite: choose another output path")
    if not overwrite:
        raise ConfigError(f"out: {path} exists; pass --overwrite (overwrite: true) to replace "
                          "it or choose another output path")
    if target.is_symlink():
        replaceable = False
    elif target.suffix == ".npy":
        replaceable = target.is_file()
    else:
        samples = attrs is not None and SAMPLES_ATTR in attrs
        replaceable = target.is_dir() and (samples or not any(target.iterdir()))
    if not replaceable:
        raise ConfigError(f"out: {path} exists and is not a prnf samples output; refusing to "
                          "replace it even with --overwrite: choose another output path")


def write_samples(path: str, x0: np.ndarray, xT: np.ndarray, attrs: dict[str, Any],
                  overwrite: bool = False) -> None:
    """``.npy``: the (n, d) X_T array; ``.zarr``: a group with ``x0`` and ``xT`` and attrs.

    Written to a temporary sibling and renamed into place, so a failure never leaves a
    half-written output under the final name. What is at ``path`` is checked first
    (:func:`check_output`): a dataset store is never opened for writing.
    """
    check_output(path, overwrite)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, unique=True) as tmp:
        if target.suffix == ".npy":
            np.save(tmp, xT)
        else:
            _write_samples_group(tmp, x0, xT, attrs)
            if target.exists():
                check_output(path, overwrite)  # still a samples output, right before it goes


def _write_samples_group(path: Path, x0: np.ndarray, xT: np.ndarray,
                         attrs: dict[str, Any]) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="w-", zarr_format=3)
    group.create_array("x0", data=x0)
    group.create_array("xT", data=xT)
    group.attrs[SAMPLES_ATTR] = attrs


@flow(name="sample", log_prints=True)
def sample_flow(params: SampleParams) -> dict[str, Any]:
    """Draw x0 from the initial law and push each through the surrogate's generator."""
    check_output(params.out, params.overwrite)  # before any work
    surrogate = load_model_param(params.model)
    if params.initial.dim != surrogate.model.dim:
        raise ConfigError(f"initial: spec has dimension {params.initial.dim} but model "
                          f"{params.model!r} has dimension {surrogate.model.dim}")
    condition = {"t": params.time, "params": params.sde_params or None}
    started = time.perf_counter()
    with torch.no_grad():
        x0, xT = surrogate.model.sample_initial(params.initial, params.n, seed=params.seed,
                                                allow_outside=params.allow_outside,
                                                **condition)
    seconds = time.perf_counter() - started
    write_samples(params.out, x0, xT, {"model": params.model, "seed": params.seed,
                                       "initial": params.initial.model_dump(mode="json"),
                                       "time": params.time, "sde_params": params.sde_params},
                  overwrite=params.overwrite)
    return {"out": params.out, "n": params.n, "dim": int(xT.shape[1]), "seconds": seconds}
