"""The ``sample`` flow: X_T for an initial distribution from a registered or saved surrogate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow
from pydantic import BaseModel, ConfigDict, Field, field_validator

from prnf_core.errors import ConfigError, PrnfError
from prnf_core.initial import InitialSpec, parse_initial
from prnf_core.paths import is_url, resolve_path


class SampleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="models:/NAME@alias, models:/NAME/VERSION, runs:/... or a dir "
                                   "(a relative dir is taken under the data root).")
    initial: InitialSpec = Field(description="Initial distribution of x0.")
    n: int = Field(10_000, gt=0, description="Number of samples.")
    out: str = Field("samples.npy", description="Output file: .npy or .zarr; a relative path is "
                                                "taken under the data root and may not leave it.")
    seed: int = Field(0, ge=0, description="Seed of x0 and of the surrogate noise.")

    @field_validator("initial", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return parse_initial(value)

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        return resolve_path(value, "model")

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


def write_samples(path: str, x0: np.ndarray, xT: np.ndarray, attrs: dict[str, Any]) -> None:
    """``.npy``: the (n, d) X_T array; ``.zarr``: a group with ``x0`` and ``xT`` and attrs."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.suffix == ".npy":
        tmp = target.with_name(target.name + ".tmp.npy")
        np.save(tmp, xT)
        tmp.replace(target)
        return
    import zarr

    group = zarr.open_group(str(target), mode="w", zarr_format=3)
    group.create_array("x0", data=x0)
    group.create_array("xT", data=xT)
    group.attrs["prnf_samples"] = attrs


@flow(name="sample", log_prints=True)
def sample_flow(params: SampleParams) -> dict[str, Any]:
    """Draw x0 from the initial law and push each through the surrogate's generator."""
    surrogate = load_model_param(params.model)
    if params.initial.dim != surrogate.model.dim:
        raise ConfigError(f"initial: spec has dimension {params.initial.dim} but model "
                          f"{params.model!r} has dimension {surrogate.model.dim}")
    started = time.perf_counter()
    x0, xT = surrogate.sample_initial(params.initial, params.n, seed=params.seed)
    seconds = time.perf_counter() - started
    write_samples(params.out, x0, xT, {"model": params.model, "seed": params.seed,
                                       "initial": params.initial.model_dump(mode="json")})
    return {"out": params.out, "n": params.n, "dim": int(xT.shape[1]), "seconds": seconds}
