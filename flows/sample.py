"""The ``sample`` flow: X_T for an initial distribution from a registered or saved surrogate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow
from pydantic import BaseModel, ConfigDict, Field, field_validator

from prnf_core.errors import ConfigError
from prnf_core.initial import InitialSpec, parse_initial


class SampleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="models:/NAME@alias, models:/NAME/VERSION, runs:/... or a dir.")
    initial: InitialSpec = Field(description="Initial distribution of x0.")
    n: int = Field(10_000, gt=0, description="Number of samples.")
    out: str = Field("samples.npy", description="Output file: .npy or .zarr.")
    seed: int = Field(0, ge=0, description="Seed of x0 and of the surrogate noise.")

    @field_validator("initial", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return parse_initial(value)

    @field_validator("out")
    @classmethod
    def _suffix(cls, value: str) -> str:
        if Path(value).suffix not in (".npy", ".zarr"):
            raise ValueError(f"must end in .npy or .zarr, got {value!r}")
        return value


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
    from tasks.pyfunc import load_surrogate
    from tasks.tracking import configure

    configure()
    surrogate = load_surrogate(params.model)
    if params.initial.dim != surrogate.model.dim:
        raise ConfigError(f"initial: spec has dimension {params.initial.dim} but model "
                          f"{params.model!r} has dimension {surrogate.model.dim}")
    started = time.perf_counter()
    x0, xT = surrogate.sample_initial(params.initial, params.n, seed=params.seed)
    seconds = time.perf_counter() - started
    write_samples(params.out, x0, xT, {"model": params.model, "seed": params.seed,
                                       "initial": params.initial.model_dump(mode="json")})
    return {"out": params.out, "n": params.n, "dim": int(xT.shape[1]), "seconds": seconds}
