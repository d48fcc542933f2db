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

The configuration, its id and the content of each chunk are in :mod:`prnf_core.dataset_config`
(re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from prnf_core._version import __version__
from prnf_core.dataset_config import DatasetConfig, chunk_seed, simulate_chunk_arrays
from prnf_core.errors import (
    CorruptChunkError,
    DatasetMismatchError,
    IncompleteDatasetError,
)
from prnf_core.integrity import (
    checksum_name,
    chunk_fault,
    chunk_region,
    create_checksum_arrays,
    digest,
    find_corrupt,
    read_fault,
)
from prnf_core.simulate import NOISE_GENERATORS, generator_device

# 2: chunk_seconds. 3: the noise generator (config and id) and samples-file content hashes; a
# schema-2 store still reads, but its id does not say which generator made it: never resumed.
SCHEMA_VERSION = 3
ATTR_KEY = "prnf"

__all__ = [  # DatasetConfig, chunk_seed, simulate_chunk_arrays: re-exported
    "ATTR_KEY", "SCHEMA_VERSION", "Dataset", "DatasetConfig", "chunk_seed", "create_dataset",
    "open_dataset", "read_verified_chunk", "simulate_and_write_chunk", "simulate_chunk_arrays",
]


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
