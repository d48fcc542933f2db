"""The ``sample`` flow: X_T for an initial distribution from a registered or saved surrogate."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import flow
from pydantic import BaseModel, ConfigDict, Field, field_validator

from flows.config import InitialSpecField
from prnf_core.dataset import ATTR_KEY
from prnf_core.errors import ConfigError, PrnfError
from prnf_core.paths import ModelRef, atomic_path, is_url, resolve_path
from prnf_core.trust import DEFAULT_MAX_OUTSIDE, check_coverage, predates_domain


class SampleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelRef = Field(description="models:/NAME@alias, models:/NAME/VERSION, runs:/... or "
                                        "a dir (a relative dir is taken under the data root).")
    initial: InitialSpecField = Field(description="Initial distribution of x0.")
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

    max_outside: float = Field(
        DEFAULT_MAX_OUTSIDE, ge=0, le=1,
        description="Warn when more than this fraction of the initial law's mass lies outside "
                    "the x0 domain the model was trained on (it extrapolates there); the "
                    "fraction is printed either way.",
    )
    strict: bool = Field(
        False, description="Refuse (no samples written) instead of warning when the outside "
                           "fraction exceeds max_outside, or when the model predates training-"
                           "domain records and cannot be checked.",
    )
    track: bool = Field(
        False, description="Log this sampling as an MLflow run 'sample' in the experiment of "
                           "the model's problem: the trust metrics (trust.outside_fraction, its "
                           "SE, the typicality p-value), n and seconds, tagged with the model.",
    )

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


def trust_of(model: Any, law: Any, max_outside: float = DEFAULT_MAX_OUTSIDE,
             strict: bool = False, seed: int = 0) -> dict[str, Any]:
    """The coverage of ``law`` by ``model``'s training domain as JSON-able metadata
    (``outside_fraction``, ``outside_stderr``, ``p_value``, ``flagged``, ``message``), a warning
    logged when the outside fraction exceeds ``max_outside``.

    Raises:
        OutsideDomainError: ``strict`` and above the threshold (fraction and threshold named).
        ConfigError: ``strict`` and a model saved before training domains were recorded.
    """
    logger = _run_logger()
    if getattr(model, "training_domain", None) is None:
        if strict:
            raise ConfigError(str(predates_domain()) + "; --strict refuses to sample unchecked")
        note = "coverage not checked: the model predates training-domain records"
        logger.warning(note)
        return {"outside_fraction": None, "flagged": False, "message": note,
                "max_outside": max_outside}
    cov = model.coverage(law, seed=seed)
    message = check_coverage(cov, max_outside, strict)
    if message is not None:
        logger.warning(message)
    return {"outside_fraction": cov.outside_fraction, "outside_stderr": cov.outside_stderr,
            "p_value": cov.p_value, "n": cov.n, "domain": cov.domain,
            "flagged": message is not None, "message": message or cov.summary(),
            "max_outside": max_outside}


def _run_logger() -> Any:
    """Prefect's run logger inside a flow, else the module's (a library call)."""
    import logging

    try:
        from prefect.logging import get_run_logger

        return get_run_logger()
    except Exception:  # no active flow or task run
        return logging.getLogger("prnf.trust")


@flow(name="sample", log_prints=True)
def sample_flow(params: SampleParams) -> dict[str, Any]:
    """Draw x0 from the initial law and push each through the surrogate's generator; first
    measure how much of the law lies outside the model's training domain (warn above
    ``max_outside``, refuse with ``strict``)."""
    check_output(params.out, params.overwrite)  # before any work
    surrogate = load_model_param(params.model)
    if params.initial.dim != surrogate.model.dim:
        raise ConfigError(f"initial: spec has dimension {params.initial.dim} but model "
                          f"{params.model!r} has dimension {surrogate.model.dim}")
    trust = trust_of(surrogate.model, params.initial, params.max_outside, params.strict,
                     seed=params.seed)
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
    result = {"out": params.out, "n": params.n, "dim": int(xT.shape[1]), "seconds": seconds,
              "trust": trust}
    if params.track:
        result["run_id"] = _track(params, surrogate.metadata, result)
    return result


def _track(params: SampleParams, meta: dict[str, Any], result: dict[str, Any]) -> str:
    """An MLflow run ``sample`` in the experiment of the model's problem; its id."""
    from tasks import tracking

    trust = result["trust"]
    with tracking.model_run(tracking.configure(), meta["problem"]["name"], "sample",
                            params.model, tags={
                                "model": params.model,
                                "trust.flagged": str(trust["flagged"]).lower()}) as run:
        run.log(params={"initial": params.initial.model_dump(mode="json"), "n": params.n,
                        "seed": params.seed, "max_outside": params.max_outside,
                        "strict": params.strict},
                metrics={"trust/outside_fraction": trust["outside_fraction"],
                         "trust/outside_stderr": trust.get("outside_stderr"),
                         "trust/p_value": trust.get("p_value"), "seconds": result["seconds"]})
    return run.run_id
