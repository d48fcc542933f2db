"""Simulated datasets: their configuration, id and chunked Zarr v3 layout.

One Zarr group per dataset::

    <store>/
      zarr.json            attributes["prnf"] = {schema_version, package_version, dataset_id,
                                                 config, resolved_config, problem, complete,
                                                 created_at, role, growth}
      x0        (n, d)     initial states, chunked (chunk_size, d) along particles
      xT        (n, d)     final states at t_end
      snapshots (k, n, d)  states at config.save_times (only when asked)
      theta     (n, p)     float64 per-particle parameters, columns sorted(config.param_box),
                           chunked (chunk_size, p) (only with a param_box)
      chunk_done (n_chunks,) uint8, one Zarr chunk per entry: 1 once a chunk's data is written
      chunk_seconds (n_chunks,) float64: each chunk's simulation time (for cost reports)
      x0_checksum, xT_checksum, snapshots_checksum, theta_checksum (n_chunks,) uint64, one Zarr
                           chunk per entry:
                           each chunk's digest, recorded before chunk_done (prnf_core.integrity)

Every simulation chunk is one Zarr chunk of each array and has exactly one writer, so parallel
writers never share a file (no sharding: parallel writes into one shard lose data). Completion is
recorded explicitly in ``chunk_done`` after the data, never inferred from chunk existence, and
``complete`` is set only when every chunk is done: a killed run leaves a store that reads as
incomplete and whose missing chunks a re-run fills. Reads verify the recorded checksums and fail
with :class:`~prnf_core.errors.CorruptChunkError` on damaged chunks; ``prnf repair`` (or any
re-run) re-simulates them. The checksum arrays were added without a schema bump: older prnf
versions ignore them, and stores without them still read (see :mod:`prnf_core.integrity`).

Attributes for bookkeeping (none of them is part of the id): ``created_at`` is the ISO-8601 UTC
time the store was created (set once); ``role`` what it is for (``"train"``, ``"test"``...,
``None`` if not said; the last one given wins); ``growth`` the log of its sizes, one
``{n_particles, n_chunks, at}`` entry at creation and at each growth. Stores written before these
existed lack them and still open (:attr:`Dataset.created_at` and :attr:`Dataset.role` are then
``None``); no schema bump.

Growing stores. Chunk ``i`` depends only on the config without its size and on ``i`` (its seeds
are ``SeedSequence(seed, spawn_key=(i,))``), so the configs that differ only in ``n_particles``
form a *family* (:meth:`DatasetConfig.family_id`) whose stores are prefixes of one another.
:func:`grow_dataset` turns a store of a family into a larger one in place: it records the new
config (its id, ``complete: False``, a growth entry) in the attributes first, then resizes every
array along the particle axis; the new chunks are not done, and :func:`~prnf_core.runner.
run_dataset` simulates only them. The result is bit-identical to a store created at the new size
and has its dataset id. A growth killed between the two steps leaves attributes larger than the
arrays, which the next :func:`grow_dataset` or :func:`create_dataset` with that config completes
(the resize is idempotent); stored chunks are never touched. Only a store of whole chunks grows
(a partial last chunk would change content), and a store never shrinks.

Conditioned datasets. A config with ``save_times`` and a ``param_box`` holds, per particle, x0,
its θ (``theta``) and its states at several times: :meth:`Dataset.conditioned_tuples` flattens
them into the ``(x0, [t, θ...], x_t)`` rows a surrogate over (t, θ) trains on.

The configuration, its id and the content of each chunk are in :mod:`prnf_core.dataset_config`
(re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

from prnf_core import objectstore
from prnf_core._version import __version__
from prnf_core.dataset_config import (
    DatasetConfig,
    chunk_seed,
    family_fields,
    simulate_chunk_arrays,
)
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
    store_lock,
)
from prnf_core.simulate import NOISE_GENERATORS, generator_device

# 2: chunk_seconds. 3: the noise generator (config and id) and samples-file content hashes; a
# schema-2 store still reads, but its id does not say which generator made it: never resumed.
SCHEMA_VERSION = 3
ATTR_KEY = "prnf"

__all__ = [  # DatasetConfig, chunk_seed, simulate_chunk_arrays: re-exported
    "ATTR_KEY", "SCHEMA_VERSION", "Dataset", "DatasetConfig", "chunk_seed", "create_dataset",
    "grow_dataset", "open_dataset", "read_verified_chunk", "simulate_and_write_chunk",
    "simulate_chunk_arrays",
]

T = TypeVar("T")


@dataclass
class Dataset:
    """An open dataset store. Create with :func:`create_dataset`, open with :func:`open_dataset`."""

    path: str
    group: zarr.Group
    # The group's arrays, each opened once: opening one reads its metadata, a round trip on
    # object storage, and so does asking whether a name is in the group. None until first used.
    opened: dict[str, zarr.Array] | None = field(default=None, repr=False, compare=False)

    @property
    def arrays(self) -> dict[str, zarr.Array]:
        """The group's arrays by name (listed and opened on first use, then kept: they change
        only through this object, by a resize or the checksum arrays :func:`~prnf_core.
        integrity.audit` adds)."""
        if self.opened is None:
            self.opened = dict(self.group.arrays())
        return self.opened

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
    def created_at(self) -> datetime | None:
        """When the store was created (UTC); None for stores written before this was kept."""
        value = self.meta.get("created_at")
        return None if value is None else datetime.fromisoformat(value)

    @property
    def role(self) -> str | None:
        """What the store is for (``"train"``, ``"test"``...); None if never said."""
        return self.meta.get("role")

    @property
    def growth(self) -> list[dict[str, Any]]:
        """The size log: ``{n_particles, n_chunks, at}`` at creation and at each growth."""
        return list(self.meta.get("growth", []))

    @property
    def dim(self) -> int:
        return int(self.arrays["x0"].shape[1])

    @property
    def param_names(self) -> list[str]:
        """Names of the per-particle parameters, the columns of ``theta``: ``sorted(param_box)``
        ([] for a dataset without ``param_box``)."""
        return self.config.param_names

    @property
    def n_particles(self) -> int:
        return int(self.arrays["x0"].shape[0])

    def done_mask(self) -> np.ndarray:
        return np.asarray(self.arrays["chunk_done"][:], dtype=bool)

    def missing_chunks(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(~self.done_mask())]

    @property
    def is_complete(self) -> bool:
        return bool(self.meta.get("complete")) and not self.missing_chunks()

    # -- writing ------------------------------------------------------------------------------
    def write_chunk(self, index: int, x0: np.ndarray, xT: np.ndarray,
                    snapshots: np.ndarray | None, seconds: float = float("nan"),
                    theta: np.ndarray | None = None) -> None:
        """Write one chunk's arrays and their checksums, then mark it done (the marker last).

        ``seconds`` is the chunk's simulation time, kept for cost reports. ``theta``: the
        chunk's per-particle parameters ``(rows, p)``, required by (and only by) a store with a
        ``theta`` array.
        """
        config = self.config
        start, stop = config.chunk_bounds(index)
        arrays = self.arrays
        checks = [("x0", x0, self.dim), ("xT", xT, self.dim)]
        if "theta" in arrays:
            if theta is None:
                raise ValueError(f"theta: chunk {index} of a dataset with a param_box needs its "
                                 "per-particle parameters; not written")
            checks.append(("theta", theta, arrays["theta"].shape[1]))
        elif theta is not None:
            raise ValueError(f"theta: the dataset at {self.path} has no param_box; chunk "
                             f"{index} not written")
        for name, arr, width in checks:
            if arr.shape != (stop - start, width):
                raise ValueError(f"{name}: chunk {index} needs shape {(stop - start, width)}")
            if not np.isfinite(arr).all():
                raise ValueError(f"{name}: chunk {index} holds non-finite values; not written")
        stored = {name: np.asarray(arr, dtype=arrays[name].dtype)  # hash what is stored
                  for name, arr in (("x0", x0), ("xT", xT), ("snapshots", snapshots),
                                    ("theta", theta)) if arr is not None}
        # Two steps: everything but the marker at once (the data arrays, separate objects;
        # the timing, read only for done chunks; each checksum entry as soon as its array is
        # hashed), then, once all of it is stored, the marker. A chunk is read only once
        # marked, so the order among the first step's writes does not matter.
        def checksum_entry(name: str, data: np.ndarray) -> None:
            value = digest(data)
            if checksum_name(name) in arrays:  # absent only in stores of older versions
                arrays[checksum_name(name)][index] = value

        writes = [partial(arrays[name].__setitem__, chunk_region(name, start, stop), data)
                  for name, data in stored.items()]
        writes.append(partial(arrays["chunk_seconds"].__setitem__, index, seconds))
        writes += [partial(checksum_entry, name, data) for name, data in stored.items()]
        _at_once(writes)
        arrays["chunk_done"][index] = 1

    def mark_not_done(self, indices: list[int]) -> None:
        """Forget chunks (e.g. corrupt ones) so that the next run re-simulates them."""
        for index in indices:
            self.arrays["chunk_done"][index] = 0

    def simulation_seconds(self) -> float:
        """Total single-worker simulation time of the done chunks (the cost of the data)."""
        seconds = np.asarray(self.arrays["chunk_seconds"][:])[self.done_mask()]
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

    def load(self, name: Literal["x0", "xT", "snapshots", "theta"] = "xT",
             allow_partial: bool = False) -> np.ndarray:
        """A whole array as numpy (only complete datasets unless ``allow_partial``).

        Raises:
            CorruptChunkError: a done chunk cannot be decoded or differs from what was written
                (the chunks are named; ``prnf repair`` fixes them).
        """
        self._require_complete(allow_partial)
        if name not in self.arrays:
            raise KeyError(f"array {name!r} not in dataset; has {sorted(self.arrays)}")
        try:
            data = self.arrays[name][:]
        except Exception:  # a chunk that does not decode: name it (chunk by chunk) if we can
            self._raise_if_corrupt(name)
            raise
        self._raise_if_corrupt(name, data)
        return data

    def to_dask(self, name: Literal["x0", "xT", "snapshots", "theta"] = "xT"):
        """A lazily loaded dask array, one block per chunk, each verified when it is computed."""
        import dask.array as da
        from dask import delayed

        self._require_complete(False)
        array = self.arrays[name]
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

    def conditioned_tuples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """Training rows of a surrogate conditioned on time and parameters.

        Returns ``(x0_rows, cond, y, cond_names)``: for each particle ``i`` and each snapshot
        time ``t_j`` (``config.save_times``; without them the one time ``t_end``, from ``xT``) a
        row ``x0_rows = x0[i]`` ``(n·k, d)``, ``cond = [t_j, θ_i...]`` ``(n·k, 1 + p)`` float64
        and ``y = X_{t_j}`` of particle ``i`` ``(n·k, d)``, ``cond_names = ["t", *param_names]``.
        Row order is particle-major: all times of particle 0, then particle 1, ... Only complete
        datasets; every array read is verified.
        """
        config = self.config
        x0 = self.load("x0")
        n = x0.shape[0]
        if config.save_times:
            times = np.asarray(config.save_times, dtype=np.float64)
            states = self.load("snapshots")  # (k, n, d)
        else:
            times = np.array([float(config.horizon)])
            states = self.load("xT")[None]
        k = len(times)
        y = np.ascontiguousarray(states.transpose(1, 0, 2)).reshape(n * k, self.dim)
        names = self.param_names
        cond = np.empty((n * k, 1 + len(names)), dtype=np.float64)
        cond[:, 0] = np.tile(times, n)
        if names:
            cond[:, 1:] = np.repeat(self.load("theta").astype(np.float64), k, axis=0)
        return np.repeat(x0, k, axis=0), cond, y, ["t", *names]


def _compressor() -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.bitshuffle)


def _open_group(path: str | Path, mode: str) -> zarr.Group:
    """A local path opens a ``LocalStore``, an ``s3://`` URL an ``FsspecStore`` (objectstore)."""
    return objectstore.open_group(path, mode)


def create_dataset(config: DatasetConfig, path: str | Path, role: str | None = None) -> Dataset:
    """Create the store for ``config`` at ``path``, or reopen it if it holds the same config.

    An unset noise generator is first fixed to the default device's
    (:meth:`DatasetConfig.on_device`). A store whose growth to this config was interrupted
    (attributes already hold it, arrays still smaller) has its arrays resized; a store of
    another size is never grown here (see :func:`grow_dataset`).

    Args:
        config: The dataset configuration.
        path: Store path.
        role: What the store is for (``"train"``, ``"test"``...), kept in its attributes;
            ``None`` keeps the recorded one.

    Raises:
        DatasetMismatchError: ``path`` holds another dataset (the differing fields are named),
            one made with another noise generator, one of an older schema, or something that is
            not a prnf dataset. Nothing stored is touched.
    """
    path = str(path)
    config = config.on_device(None)
    existing = _existing_group(path)
    if existing is None:
        return _create_store(config, path, role)
    dataset = Dataset(path, existing)
    _check_same_config(dataset, config)
    _fit_arrays(dataset, config)
    _set_role(dataset, role)
    return dataset


def grow_dataset(config: DatasetConfig, path: str | Path, role: str | None = None,
                 lock_timeout: float = 0.0) -> Dataset:
    """Create the store for ``config`` at ``path``, or grow the store of its family there.

    A store of the same family (:meth:`DatasetConfig.family_id`) and of fewer particles is
    grown to ``config.n_particles`` in place: the attributes get the new config, id,
    ``complete: False`` and a growth entry first, then every array is resized along the
    particle axis. Its stored chunks are kept as they are; the new ones are missing, for
    :func:`~prnf_core.runner.run_dataset` to simulate. The grown store then equals a store
    created for ``config`` (same id, same data). A store of the same size is reopened (and a
    growth that was interrupted is completed).

    Holds the store's writer lock (:func:`~prnf_core.integrity.store_lock`) while it works, so
    do not call it from within a run of the same store.

    Args:
        config: The configuration to reach.
        path: Store path.
        role: As in :func:`create_dataset`.
        lock_timeout: Seconds to wait while another run writes the store.

    Raises:
        DatasetMismatchError: ``path`` holds a store of another family (the differing fields
            are named), a larger one (stores never shrink), one whose last chunk is partial
            (growing would change it), one of an older schema, or no prnf dataset. Nothing
            stored is touched.
        StoreLockedError: another run holds the store's writer lock.
    """
    path = str(path)
    config = config.on_device(None)
    with store_lock(path, timeout=lock_timeout):
        existing = _existing_group(path)
        if existing is None:
            return _create_store(config, path, role)
        dataset = Dataset(path, existing)
        _check_schema(dataset)
        meta = dataset.meta
        stored = meta.get("resolved_config", {})
        _check_fields(dataset, config, family_fields(stored), family_fields(config.resolved()),
                      "dataset family")
        size, requested = int(stored["n_particles"]), config.n_particles
        if requested < size:
            raise DatasetMismatchError(
                f"output: {path} holds {size} particles but {requested} were requested; a store "
                "never shrinks: ask for at least its size, or use another output path"
            )
        if requested > size:
            chunk_size = int(stored["chunk_size"])
            if size % chunk_size:
                raise DatasetMismatchError(
                    f"output: {path} holds {size} particles, not a whole number of chunks of "
                    f"chunk_size {chunk_size}: growing it to {requested} would change its last "
                    "chunk; create a new store instead"
                )
            _record_growth(dataset, config)
        _fit_arrays(dataset, config)
        _set_role(dataset, role)
        return dataset


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _growth_entry(config: DatasetConfig) -> dict[str, Any]:
    return {"n_particles": config.n_particles, "n_chunks": config.n_chunks, "at": _now()}


def _record_growth(dataset: Dataset, config: DatasetConfig) -> None:
    """Step 1 of a growth: the attributes describe the grown store (arrays follow)."""
    meta = dataset.meta
    meta.update({
        "package_version": __version__,
        "dataset_id": config.dataset_id(),
        "config": config.model_dump(mode="json"),
        "resolved_config": config.resolved(),
        "problem": config.sde().describe(),
        "complete": False,
        "growth": [*meta.get("growth", []), _growth_entry(config)],
    })
    dataset.group.attrs[ATTR_KEY] = meta


def _fit_arrays(dataset: Dataset, config: DatasetConfig) -> None:
    """Step 2 of a growth: every array reaches the size of ``config`` (idempotent, only grows).

    New entries take the fill values: NaN data, ``chunk_done`` 0 (missing), checksums 0 (none
    recorded: only done chunks are verified) and NaN seconds.
    """
    n, n_chunks = config.n_particles, config.n_chunks
    for name, array in sorted(dataset.arrays.items()):
        if name in ("x0", "xT", "snapshots", "theta"):
            axis, size = (1 if name == "snapshots" else 0), n
        elif name in ("chunk_done", "chunk_seconds") or name.endswith("_checksum"):
            axis, size = 0, n_chunks
        else:
            continue
        shape = list(array.shape)
        if shape[axis] == size:
            continue
        if shape[axis] > size:
            raise DatasetMismatchError(
                f"output: {dataset.path}: array {name} has {shape[axis]} entries along its "
                f"particle axis but the stored config needs {size}; the store is inconsistent, "
                "refusing to shrink it"
            )
        shape[axis] = size
        array.resize(tuple(shape))  # in place: the kept handle has the new shape


def _set_role(dataset: Dataset, role: str | None) -> None:
    if role is None or dataset.meta.get("role") == role:
        return
    meta = dataset.meta
    meta["role"] = role
    dataset.group.attrs[ATTR_KEY] = meta


def _create_store(config: DatasetConfig, path: str, role: str | None) -> Dataset:
    sde = config.sde()
    group = _open_group(path, "w-")
    n, d, cs = config.n_particles, sde.dim, config.chunk_size
    dtype = config.dtype
    arrays = {}  # the handles, kept by the Dataset: no need to list and reopen them
    for name in ("x0", "xT"):
        arrays[name] = group.create_array(
            name, shape=(n, d), chunks=(cs, d), dtype=dtype, compressors=_compressor(),
            fill_value=np.nan, dimension_names=("particle", "coordinate"))
    if config.save_times:
        arrays["snapshots"] = group.create_array(
            "snapshots", shape=(len(config.save_times), n, d),
            chunks=(len(config.save_times), cs, d), dtype=dtype, compressors=_compressor(),
            fill_value=np.nan, dimension_names=("time", "particle", "coordinate"))
    arrays["chunk_done"] = group.create_array(
        "chunk_done", shape=(config.n_chunks,), chunks=(1,), dtype="uint8", fill_value=0,
        compressors=None)
    arrays["chunk_seconds"] = group.create_array(
        "chunk_seconds", shape=(config.n_chunks,), chunks=(1,), dtype="float64",
        fill_value=np.nan, compressors=None)
    if config.param_box is not None:
        p = len(config.param_names)
        arrays["theta"] = group.create_array(
            "theta", shape=(n, p), chunks=(cs, p), dtype="float64", compressors=_compressor(),
            fill_value=np.nan, dimension_names=("particle", "parameter"))
    arrays |= create_checksum_arrays(
        group, ["x0", "xT"] + (["snapshots"] if config.save_times else [])
        + (["theta"] if config.param_box is not None else []), config.n_chunks)
    # Attributes last: a store without them is not yet a dataset and is recreated cleanly.
    group.attrs[ATTR_KEY] = {
        "schema_version": SCHEMA_VERSION,
        "package_version": __version__,
        "dataset_id": config.dataset_id(),
        "config": config.model_dump(mode="json"),
        "resolved_config": config.resolved(),
        "problem": sde.describe(),
        "complete": False,
        "created_at": _now(),
        "role": role,
        "growth": [_growth_entry(config)],
    }
    return Dataset(path, group, arrays)


def _existing_group(path: str) -> zarr.Group | None:
    if not objectstore.store_exists(path):
        return None
    try:
        group = _open_group(path, "r+")
    except objectstore.ObjectStoreError:
        raise
    except Exception:
        if objectstore.store_is_empty(path):
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


def _check_schema(dataset: Dataset) -> None:
    meta = dataset.meta
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise DatasetMismatchError(
            f"output: {dataset.path} holds dataset {meta.get('dataset_id')} of schema version "
            f"{meta.get('schema_version')} (prnf {meta.get('package_version')}), another "
            f"configuration to this prnf (schema {SCHEMA_VERSION}, whose ids also cover the "
            "noise generator): it still reads, but is not resumed or repaired; choose another "
            "output path"
        )


def _check_same_config(dataset: Dataset, config: DatasetConfig) -> None:
    _check_schema(dataset)
    if dataset.meta["dataset_id"] == config.dataset_id():
        return
    _check_fields(dataset, config, dataset.meta.get("resolved_config", {}), config.resolved(),
                  "config")
    raise DatasetMismatchError(
        f"output: {dataset.path} holds dataset {dataset.meta['dataset_id']}, not "
        f"{config.dataset_id()}; choose another output path or the same config"
    )


def _check_fields(dataset: Dataset, config: DatasetConfig, stored: dict[str, Any],
                  new: dict[str, Any], what: str) -> None:
    """Refuse, naming the fields, when the resolved fields ``stored`` and ``new`` differ."""
    meta = dataset.meta
    diff = sorted(k for k in set(stored) | set(new) if stored.get(k) != new.get(k))
    if not diff:
        return
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
        f"output: {dataset.path} holds dataset {meta['dataset_id']} with another {what} "
        f"({details}); choose another output path or the same {what}"
    )


def open_dataset(path: str | Path) -> Dataset:
    """Open an existing dataset store (read and append)."""
    path = str(path)
    if not objectstore.store_exists(path):
        raise FileNotFoundError(f"no dataset at {path}")
    group = _existing_group(path)
    if group is None:
        raise IncompleteDatasetError(f"{path} is an empty store, not (yet) a prnf dataset")
    return Dataset(path, group)


def read_verified_chunk(path: str, name: str, index: int, start: int, stop: int) -> np.ndarray:
    """Chunk ``index`` (rows ``start:stop``) of array ``name``, verified (what to_dask and
    training streams run, chunk after chunk)."""
    store = objectstore.store_for(path, read_only=True)
    # The chunk and its recorded digest are separate objects: each array is opened alone (no
    # group, no listing) and both are read at once, in two round trips on object storage.
    data, recorded = _at_once([partial(_read_data, store, path, name, index, start, stop),
                               partial(_read_checksum, store, name, index)])
    fault = chunk_fault(data, recorded)
    if fault:
        raise CorruptChunkError(path, {index: f"{name} {fault}"})
    return data


def _read_data(store: Any, path: str, name: str, index: int, start: int,
               stop: int) -> np.ndarray:
    """Chunk ``index`` of array ``name``; one that does not decode raises CorruptChunkError."""
    array = zarr.open_array(store, path=name, mode="r", zarr_format=3)
    try:
        return array[chunk_region(name, start, stop)]
    except Exception as exc:  # Blosc/Zarr decode errors vary by codec and damage
        raise CorruptChunkError(path, {index: f"{name} {read_fault(exc)}"}) from exc


def _read_checksum(store: Any, name: str, index: int) -> int | None:
    """The digest recorded for chunk ``index`` of array ``name``; None in stores without
    checksums (of older versions)."""
    try:
        sums = zarr.open_array(store, path=checksum_name(name), mode="r", zarr_format=3)
    except FileNotFoundError:  # zarr's ArrayNotFoundError
        return None
    return int(sums[index])


def _at_once(calls: Sequence[Callable[[], T]]) -> list[T]:
    """The results of ``calls``, made at once in threads. Each is a blocking Zarr call that
    waits on round trips to the store (Zarr's event loop does the I/O; Blosc and BLAKE2b
    release the GIL), so their waits overlap. Returns once every call has ended, and raises
    the first failure only then: nothing a later step depends on is still being written."""
    if len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
    return [future.result() for future in futures]


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
    if dataset.arrays["chunk_done"][index]:  # one entry: one object read on object storage
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
    x0, xT, snaps, theta = simulate_chunk_arrays(config, index, device=device)
    simulated = time.perf_counter()
    dataset.write_chunk(index, x0, xT, snaps, seconds=simulated - started, theta=theta)
    return {
        "chunk": index,
        "skipped": False,
        "n": len(x0),
        "seconds": time.perf_counter() - started,
        "write_seconds": time.perf_counter() - simulated,
    }
