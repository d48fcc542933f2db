"""Simulated datasets: their configuration, id and chunked Zarr v3 layout.

One Zarr group per dataset::

    <store>/
      zarr.json            attributes["prnf"] = {schema_version, package_version, dataset_id,
                                                 config, problem, complete}
      x0        (n, d)     initial states, chunked (chunk_size, d) along particles
      xT        (n, d)     final states at t_end
      snapshots (k, n, d)  states at config.save_times (only when asked)
      chunk_done (n_chunks,) uint8, one Zarr chunk per entry: 1 once a chunk's data is written
      chunk_seconds (n_chunks,) float64: each chunk's simulation time (for cost reports)
      x0_checksum, xT_checksum, snapshots_checksum (n_chunks,) uint64, one Zarr chunk per entry:
                           each chunk's digest, recorded before chunk_done (prnf_core.integrity)

Every simulation chunk is one Zarr chunk of each array and has exactly one writer, so parallel
writers never share a file (no sharding: parallel writes into one shard lose data). Completion is
recorded explicitly in ``chunk_done`` after the data, never inferred from chunk existence, and
``complete`` is set only when every chunk is done: a killed run leaves a store that reads as
incomplete and whose missing chunks a re-run fills. Reads verify the recorded checksums and fail
with :class:`~prnf_core.errors.CorruptChunkError` on damaged chunks; ``prnf repair`` (or any
re-run) re-simulates them. The checksum arrays were added without a schema bump: older prnf
versions ignore them, and stores without them still read (see :mod:`prnf_core.integrity`).

Randomness: chunk ``i`` uses ``SeedSequence(seed, spawn_key=(i,))`` (the i-th child of
``SeedSequence(seed)``) for both its initial states and its noise, so a dataset is bit-identical
whatever the number of workers or the order chunks run in.

The dataset id hashes everything that fixes the bits (:meth:`DatasetConfig.resolved`): besides
the configuration, the noise generator (``numpy-sfc64``, ``torch-cpu`` or ``torch-cuda``, a
function of device and dtype, fixed from the execution device when a run starts) and, for a
``samples_file`` initial law, the SHA-256 of the file's bytes. A store is resumed only with the
generator it was started with, never mixing two noise streams.

>>> from prnf_core.dataset import DatasetConfig
>>> cfg = DatasetConfig(problem="bm1d", n_particles=1000, chunk_size=250)
>>> cfg.n_chunks, len(cfg.dataset_id())
(4, 16)
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from zarr.codecs import BloscCodec, BloscShuffle

from prnf_core import __version__
from prnf_core.errors import (
    ConfigError,
    CorruptChunkError,
    DatasetMismatchError,
    IncompleteDatasetError,
)
from prnf_core.initial import InitialSpec, Uniform, parse_initial
from prnf_core.integrity import (
    checksum_name,
    chunk_fault,
    chunk_region,
    create_checksum_arrays,
    digest,
    find_corrupt,
    read_fault,
)
from prnf_core.problems import get_problem
from prnf_core.sde import SDE
from prnf_core.simulate import (
    NOISE_GENERATORS,
    DType,
    NoiseGenerator,
    generator_device,
    noise_generator,
    save_steps,
    simulate,
    step_count,
)

# 2: chunk_seconds. 3: the noise generator (config and id) and samples-file content hashes; a
# schema-2 store still reads, but its id does not say which generator made it: never resumed.
SCHEMA_VERSION = 3
ATTR_KEY = "prnf"


class DatasetConfig(BaseModel):
    """Everything that determines a dataset's content; its hash is the dataset id."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    problem: str = Field(description="Registered problem name (see `prnf problems`).")
    problem_params: dict[str, Any] = Field(
        default_factory=dict, description="Overrides of the problem's parameters."
    )
    initial: InitialSpec | None = Field(
        None, description="Initial distribution of x0; default: uniform on the training domain."
    )
    n_particles: int = Field(gt=0, description="Number of trajectories (rows).")
    chunk_size: int = Field(100_000, gt=0, description="Particles per chunk (unit of parallelism).")
    t_end: float | None = Field(None, gt=0, description="Horizon T; default: the problem's.")
    dt: float | None = Field(None, gt=0, description="Euler–Maruyama step; default: the problem's.")
    seed: int = Field(0, ge=0, description="Root seed; chunk i uses SeedSequence(seed, (i,)).")
    save_times: list[float] | None = Field(
        None, description="Times in [0, T] (on the dt grid) at which to keep snapshots."
    )
    dtype: DType = Field("float64", description="Simulation and storage precision.")
    noise_generator: NoiseGenerator | None = Field(
        None, description="Normal generator: numpy-sfc64 (CPU, float64), torch-cpu (CPU, "
                          "float32) or torch-cuda (GPU). Part of the id, since the same seed "
                          "gives other bits on another generator. Default: the one of the "
                          "execution device, fixed when the run starts.",
    )

    @field_validator("initial", mode="before")
    @classmethod
    def _parse_initial(cls, value: Any) -> Any:
        return None if value is None else parse_initial(value)

    @model_validator(mode="after")
    def _check_against_problem(self) -> DatasetConfig:
        sde = self.sde()
        if self.initial is not None and self.initial.dim != sde.dim:
            raise ValueError(
                f"initial: spec has dimension {self.initial.dim} but problem {self.problem!r} "
                f"has dimension {sde.dim}"
            )
        step_count(self.horizon, self.step)
        save_steps(self.save_times, self.horizon, self.step)
        gen = self.noise_generator
        right = None if gen is None else noise_generator(generator_device(gen), self.dtype)
        if gen != right:
            raise ValueError(
                f"noise_generator: {gen!r} is not the generator of {self.dtype} on "
                f"{generator_device(gen)} ({right!r} is); set it to {right!r} or leave it unset"
            )
        return self

    def generator(self) -> NoiseGenerator:
        """The noise generator: the configured one, else the default device's (CUDA if any)."""
        return self.noise_generator or noise_generator(None, self.dtype)

    def on_device(self, device: str | None) -> DatasetConfig:
        """This config with its noise generator fixed for a run on ``device``.

        What every run calls first, so that the id it computes, the store it opens and the
        chunks it simulates agree on the generator. ``device=None`` keeps a configured
        generator (the run then simulates on its device) and otherwise takes the default
        device's.

        Raises:
            ConfigError: the config names another generator than ``device`` uses.
        """
        if device is None and self.noise_generator is not None:
            return self
        gen = noise_generator(device, self.dtype)
        if self.noise_generator is None:
            return self.model_copy(update={"noise_generator": gen})
        if gen != self.noise_generator:
            raise ConfigError(
                f"noise_generator: the dataset uses {self.noise_generator!r} but device "
                f"{device!r} ({self.dtype}) uses {gen!r}; run it on "
                f"{generator_device(self.noise_generator)} (execution.device) or leave "
                "noise_generator unset"
            )
        return self

    def sde(self) -> SDE:
        return get_problem(self.problem, **self.problem_params)

    @property
    def horizon(self) -> float:
        return self.t_end if self.t_end is not None else self.sde().t_end

    @property
    def step(self) -> float:
        return self.dt if self.dt is not None else self.sde().dt

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_particles / self.chunk_size)

    def initial_spec(self) -> InitialSpec:
        if self.initial is not None:
            return self.initial
        low, high = self.sde().domain
        return Uniform(low=list(low), high=list(high))

    def chunk_bounds(self, index: int) -> tuple[int, int]:
        start = index * self.chunk_size
        return start, min(start + self.chunk_size, self.n_particles)

    def resolved(self) -> dict[str, Any]:
        """The config with every default filled in (problem parameters too): what is hashed.

        Holds what fixes the bits and nothing else: the noise generator (:meth:`generator`)
        and the initial law's identity (a samples file's content hash, not its path).
        """
        sde = self.sde()
        return {
            "problem": self.problem,
            "problem_params": sde.describe()["params"],
            "initial": self.initial_spec().identity(),
            "n_particles": self.n_particles,
            "chunk_size": self.chunk_size,
            "t_end": float(self.horizon),
            "dt": float(self.step),
            "seed": self.seed,
            "save_times": self.save_times,
            "dtype": self.dtype,
            "noise_generator": self.generator(),
        }

    def dataset_id(self) -> str:
        canonical = json.dumps(self.resolved(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def chunk_seed(seed: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(index,))


def simulate_chunk_arrays(
    config: DatasetConfig, index: int, device: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """x0, xT and snapshots of chunk ``index``: a pure function of (config, index).

    Runs on ``device`` (default: the device of the config's noise generator, see
    :meth:`DatasetConfig.on_device`); a device with another generator is refused.
    """
    config = config.on_device(device)
    device = device or generator_device(config.generator())
    start, stop = config.chunk_bounds(index)
    x0_seq, noise_seq = chunk_seed(config.seed, index).spawn(2)
    x0 = config.initial_spec().sample(stop - start, np.random.default_rng(x0_seq))
    dtype = np.float64 if config.dtype == "float64" else np.float32
    x0 = np.ascontiguousarray(x0, dtype=dtype)
    sde = config.sde()
    try:
        result = simulate(sde, x0, config.horizon, config.step, seed=noise_seq,
                          save_times=config.save_times, dtype=config.dtype, device=device)
    except Exception as exc:
        if hasattr(exc, "in_chunk"):
            raise exc.in_chunk(index) from None
        raise
    return x0, result.xT, result.snapshots


@dataclass
class Dataset:
    """An open dataset store. Create with :func:`create_dataset`, open with :func:`open_dataset`."""

    path: str
    group: zarr.Group

    # -- metadata -----------------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.group.attrs[ATTR_KEY])

    @property
    def config(self) -> DatasetConfig:
        return DatasetConfig.model_validate(self.meta["config"])

    @property
    def dataset_id(self) -> str:
        return self.meta["dataset_id"]

    @property
    def dim(self) -> int:
        return int(self.group["x0"].shape[1])

    @property
    def n_particles(self) -> int:
        return int(self.group["x0"].shape[0])

    def done_mask(self) -> np.ndarray:
        return np.asarray(self.group["chunk_done"][:], dtype=bool)

    def missing_chunks(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(~self.done_mask())]

    @property
    def is_complete(self) -> bool:
        return bool(self.meta.get("complete")) and not self.missing_chunks()

    # -- writing ------------------------------------------------------------------------------
    def write_chunk(self, index: int, x0: np.ndarray, xT: np.ndarray,
                    snapshots: np.ndarray | None, seconds: float = float("nan")) -> None:
        """Write one chunk's arrays and their checksums, then mark it done (the marker last).

        ``seconds`` is the chunk's simulation time, kept for cost reports.
        """
        config = self.config
        start, stop = config.chunk_bounds(index)
        for name, arr in (("x0", x0), ("xT", xT)):
            if arr.shape != (stop - start, self.dim):
                raise ValueError(f"{name}: chunk {index} needs shape {(stop - start, self.dim)}")
            if not np.isfinite(arr).all():
                raise ValueError(f"{name}: chunk {index} holds non-finite values; not written")
        for name, arr in (("x0", x0), ("xT", xT), ("snapshots", snapshots)):
            if arr is None:
                continue
            stored = np.asarray(arr, dtype=self.group[name].dtype)  # hash what is stored
            self.group[name][chunk_region(name, start, stop)] = stored
            if checksum_name(name) in self.group:  # absent only in stores of older versions
                self.group[checksum_name(name)][index] = digest(stored)
        self.group["chunk_seconds"][index] = seconds
        self.group["chunk_done"][index] = 1

    def mark_not_done(self, indices: list[int]) -> None:
        """Forget chunks (e.g. corrupt ones) so that the next run re-simulates them."""
        for index in indices:
            self.group["chunk_done"][index] = 0

    def simulation_seconds(self) -> float:
        """Total single-worker simulation time of the done chunks (the cost of the data)."""
        seconds = np.asarray(self.group["chunk_seconds"][:])[self.done_mask()]
        return float(np.nansum(seconds))

    def finalize(self) -> bool:
        """Set ``complete`` once every chunk is done; return whether the dataset is complete."""
        if self.missing_chunks():
            return False
        if not self.meta.get("complete"):
            meta = self.meta
            meta["complete"] = True
            self.group.attrs[ATTR_KEY] = meta
        return True

    # -- verifying ----------------------------------------------------------------------------
    def verify(self) -> list[int]:
        """Indices of the done chunks whose stored data fails verification (reads every one)."""
        return sorted(find_corrupt(self))

    def _raise_if_corrupt(self, name: str, loaded: np.ndarray | None = None) -> None:
        faults = find_corrupt(self, [name], loaded)
        if faults:
            raise CorruptChunkError(self.path, faults)

    # -- reading ------------------------------------------------------------------------------
    def _require_complete(self, allow_partial: bool) -> None:
        if not allow_partial and not self.is_complete:
            missing = self.missing_chunks()
            raise IncompleteDatasetError(
                f"dataset {self.path} is incomplete: {len(missing)} of {self.config.n_chunks} "
                f"chunks missing (first: {missing[:5]}); re-run the simulation to fill them"
            )

    def load(self, name: Literal["x0", "xT", "snapshots"] = "xT",
             allow_partial: bool = False) -> np.ndarray:
        """A whole array as numpy (only complete datasets unless ``allow_partial``).

        Raises:
            CorruptChunkError: a done chunk cannot be decoded or differs from what was written
                (the chunks are named; ``prnf repair`` fixes them).
        """
        self._require_complete(allow_partial)
        if name not in self.group:
            raise KeyError(f"array {name!r} not in dataset; has {sorted(self.group.array_keys())}")
        try:
            data = self.group[name][:]
        except Exception:  # a chunk that does not decode: name it (chunk by chunk) if we can
            self._raise_if_corrupt(name)
            raise
        self._raise_if_corrupt(name, data)
        return data

    def to_dask(self, name: Literal["x0", "xT", "snapshots"] = "xT"):
        """A lazily loaded dask array, one block per chunk, each verified when it is computed."""
        import dask.array as da
        from dask import delayed

        self._require_complete(False)
        array = self.group[name]
        axis = 1 if name == "snapshots" else 0
        blocks = []
        for index in range(self.config.n_chunks):
            start, stop = self.config.chunk_bounds(index)
            shape = list(array.shape)
            shape[axis] = stop - start
            block = delayed(read_verified_chunk, pure=True)(self.path, name, index, start, stop)
            blocks.append(da.from_delayed(block, shape=tuple(shape), dtype=array.dtype))
        return da.concatenate(blocks, axis=axis)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Training pairs ``(x0, xT)`` as numpy arrays."""
        return self.load("x0"), self.load("xT")


def _compressor() -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.bitshuffle)


def _open_group(path: str | Path, mode: str) -> zarr.Group:
    return zarr.open_group(str(path), mode=mode, zarr_format=3)


def create_dataset(config: DatasetConfig, path: str | Path) -> Dataset:
    """Create the store for ``config`` at ``path``, or reopen it if it holds the same config.

    An unset noise generator is first fixed to the default device's
    (:meth:`DatasetConfig.on_device`).

    Raises:
        DatasetMismatchError: ``path`` holds another dataset (the differing fields are named),
            one made with another noise generator, one of an older schema, or something that is
            not a prnf dataset. Nothing stored is touched.
    """
    path = str(path)
    config = config.on_device(None)
    existing = _existing_group(path)
    if existing is not None:
        dataset = Dataset(path, existing)
        _check_same_config(dataset, config)
        return dataset
    sde = config.sde()
    group = _open_group(path, "w-")
    n, d, cs = config.n_particles, sde.dim, config.chunk_size
    dtype = config.dtype
    for name in ("x0", "xT"):
        group.create_array(name, shape=(n, d), chunks=(cs, d), dtype=dtype,
                           compressors=_compressor(), fill_value=np.nan,
                           dimension_names=("particle", "coordinate"))
    if config.save_times:
        group.create_array("snapshots", shape=(len(config.save_times), n, d),
                           chunks=(len(config.save_times), cs, d), dtype=dtype,
                           compressors=_compressor(), fill_value=np.nan,
                           dimension_names=("time", "particle", "coordinate"))
    group.create_array("chunk_done", shape=(config.n_chunks,), chunks=(1,), dtype="uint8",
                       fill_value=0, compressors=None)
    group.create_array("chunk_seconds", shape=(config.n_chunks,), chunks=(1,), dtype="float64",
                       fill_value=np.nan, compressors=None)
    create_checksum_arrays(group, ["x0", "xT"] + (["snapshots"] if config.save_times else []),
                           config.n_chunks)
    # Attributes last: a store without them is not yet a dataset and is recreated cleanly.
    group.attrs[ATTR_KEY] = {
        "schema_version": SCHEMA_VERSION,
        "package_version": __version__,
        "dataset_id": config.dataset_id(),
        "config": config.model_dump(mode="json"),
        "resolved_config": config.resolved(),
        "problem": sde.describe(),
        "complete": False,
    }
    return Dataset(path, group)


def _existing_group(path: str) -> zarr.Group | None:
    p = Path(path)
    if not p.exists():
        return None
    try:
        group = _open_group(path, "r+")
    except Exception:
        if p.is_dir() and not any(p.iterdir()):
            return None
        raise DatasetMismatchError(
            f"output: {path} exists and is not a Zarr group; refusing to overwrite it"
        ) from None
    if ATTR_KEY not in group.attrs:
        if not list(group.keys()):
            return None
        raise DatasetMismatchError(
            f"output: {path} is a Zarr group but not a prnf dataset; refusing to overwrite it"
        )
    return group


def _check_same_config(dataset: Dataset, config: DatasetConfig) -> None:
    meta = dataset.meta
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise DatasetMismatchError(
            f"output: {dataset.path} holds dataset {meta.get('dataset_id')} of schema version "
            f"{meta.get('schema_version')} (prnf {meta.get('package_version')}), another "
            f"configuration to this prnf (schema {SCHEMA_VERSION}, whose ids also cover the "
            "noise generator): it still reads, but is not resumed or repaired; choose another "
            "output path"
        )
    if meta["dataset_id"] == config.dataset_id():
        return
    stored = meta.get("resolved_config", {})
    new = config.resolved()
    diff = sorted(k for k in set(stored) | set(new) if stored.get(k) != new.get(k))
    if diff == ["noise_generator"] and stored.get("noise_generator") in NOISE_GENERATORS:
        raise DatasetMismatchError(
            f"output: {dataset.path} was simulated with noise generator "
            f"{stored['noise_generator']!r} but this run uses {new['noise_generator']!r} "
            f"({generator_device(new['noise_generator'])}, {config.dtype}); resuming would mix "
            "two noise streams: run on the store's device (execution.device="
            f"{generator_device(stored['noise_generator'])}) or choose another output path"
        )
    details = "; ".join(f"{k}: stored {stored.get(k)!r}, requested {new.get(k)!r}" for k in diff)
    raise DatasetMismatchError(
        f"output: {dataset.path} holds dataset {meta['dataset_id']} with another config "
        f"({details}); choose another output path or the same config"
    )


def open_dataset(path: str | Path) -> Dataset:
    """Open an existing dataset store (read and append)."""
    path = str(path)
    if not Path(path).exists():
        raise FileNotFoundError(f"no dataset at {path}")
    group = _existing_group(path)
    if group is None:
        raise IncompleteDatasetError(f"{path} is an empty store, not (yet) a prnf dataset")
    return Dataset(path, group)


def read_verified_chunk(path: str, name: str, index: int, start: int, stop: int) -> np.ndarray:
    """Chunk ``index`` (rows ``start:stop``) of array ``name``, verified (what to_dask runs)."""
    group = _open_group(path, "r")
    key = checksum_name(name)
    try:
        data = group[name][chunk_region(name, start, stop)]
    except Exception as exc:  # Blosc/Zarr decode errors vary by codec and damage
        raise CorruptChunkError(path, {index: f"{name} {read_fault(exc)}"}) from exc
    fault = chunk_fault(data, int(group[key][index]) if key in group else None)
    if fault:
        raise CorruptChunkError(path, {index: f"{name} {fault}"})
    return data


def simulate_and_write_chunk(path: str, index: int, device: str | None = None,
                             torch_threads: int | None = None) -> dict[str, Any]:
    """Simulate chunk ``index`` of the dataset at ``path`` and write it. Returns small metadata.

    A plain function (no Prefect): it is what Dask workers run. Skips a chunk already done.
    """
    import time

    import torch

    if torch_threads:
        torch.set_num_threads(torch_threads)
    dataset = open_dataset(path)
    if dataset.done_mask()[index]:
        return {"chunk": index, "skipped": True, "seconds": 0.0, "n": 0}
    started = time.perf_counter()
    config = dataset.config
    now = config.dataset_id()
    if now != dataset.dataset_id:  # e.g. a samples file edited while the run goes on
        raise DatasetMismatchError(
            f"output: {path} holds dataset {dataset.dataset_id} but its configuration now "
            f"resolves to {now} (a samples_file initial law changed?); chunk {index} not "
            "written: restore the inputs or simulate into another output path"
        )
    x0, xT, snaps = simulate_chunk_arrays(config, index, device=device)
    simulated = time.perf_counter()
    dataset.write_chunk(index, x0, xT, snaps, seconds=simulated - started)
    return {
        "chunk": index,
        "skipped": False,
        "n": len(x0),
        "seconds": time.perf_counter() - started,
        "write_seconds": time.perf_counter() - simulated,
    }
