"""Checkpoints of a training run, and the fingerprint that says what they were written for.

A checkpoint records the :func:`training_fingerprint` of the run that wrote it (data, model and
the training settings that shape the weights). Resuming under other settings would put one
run's weights under another run's metadata, so it is refused with
:class:`CheckpointMismatchError` naming the fields that differ; ``restart=True`` discards the
checkpoint instead. Checkpoints are written atomically (:func:`~prnf_core.paths.atomic_path`).

>>> import numpy as np
>>> from prnf_core.checkpoints import data_id
>>> data_id((np.zeros((2, 1)), np.ones((2, 1)))) == data_id((np.zeros((2, 1)), np.ones((2, 1))))
True
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prnf_core.dataset import Dataset, open_dataset
from prnf_core.errors import ConfigError
from prnf_core.models.base import ModelConfig
from prnf_core.paths import atomic_path
from prnf_core.train_config import TrainConfig


class CheckpointMismatchError(ConfigError):
    """A checkpoint (or saved model) was written for other data, model or training settings."""


def training_pairs(data: Any, conditioned: bool = False) -> tuple[np.ndarray, ...]:
    """The training arrays: ``(x0, xT)``, or ``(x0, cond, xT)`` for conditioned training.

    ``data`` is a dataset, a store path, an ``(x0, xT)`` or an ``(x0, cond, xT)`` tuple of
    arrays (returned as given). A dataset gives its ``(x0, xT)`` pairs, or with
    ``conditioned=True`` the rows of :meth:`~prnf_core.dataset.Dataset.conditioned_tuples`
    (one per particle and saved time / parameter point).
    """
    if isinstance(data, str | Path):
        data = open_dataset(data)
    if isinstance(data, Dataset):
        return dataset_tuples(data)[0] if conditioned else data.pairs()
    if isinstance(data, tuple | list) and len(data) in (2, 3):
        return tuple(np.asarray(array) for array in data)
    raise ConfigError(f"data: expected a Dataset, a store path, (x0, xT) or (x0, cond, xT); "
                      f"got {type(data)}")


def dataset_tuples(dataset: Dataset) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray],
                                               list[str]]:
    """``((x0, cond, xT), cond_names)`` of a store simulated with ``save_times`` and/or a
    ``param_box``: the conditioned training rows and the names of the condition columns."""
    config = dataset.config
    if not (config.save_times or getattr(config, "param_box", None)):
        raise ConfigError(
            "data: a conditioned model trains on a dataset simulated with save_times and/or a "
            "param_box (rows at several times or parameters); this one has neither")
    tuples = getattr(dataset, "conditioned_tuples", None)
    if tuples is None:
        raise ConfigError("data: this prnf cannot read conditioned rows from a dataset "
                          "(Dataset.conditioned_tuples is missing)")
    x0, cond, y, names = tuples()
    return (np.asarray(x0), np.asarray(cond), np.asarray(y)), list(names)


#: TrainConfig fields that never change the weights (beyond rounding): display, logging, CPU
#: threads, torch.compile, and the preset's name (the values it gave are in the other fields).
COSMETIC_TRAINING_FIELDS = frozenset({"progress", "log_every", "threads", "preset",
                                      "torch_compile"})
#: Fields that only say where training stops. They enter the fingerprint only where they also
#: shape the steps before (the cosine schedule's horizon), so that a finished run with a
#: constant or step schedule can be continued for more epochs, bit-identical to a longer run.
STOPPING_FIELDS = frozenset({"epochs", "iterations", "patience"})


#: The validation split's rule (:func:`prnf_core.train.split_indices`), in the fingerprint: a
#: checkpoint written under another rule trained on other rows, and is not resumed.
SPLIT_RULE = "blocks-of-100"


def data_id(data: Any, pairs: tuple[np.ndarray, ...] | None = None) -> str:
    """The identity of training data: a store's dataset id, else a hash of the arrays' bytes
    (with shapes and dtypes) of every array, ``(x0, xT)`` or ``(x0, cond, xT)``, so a checkpoint
    can tell whether it was trained on the same data."""
    if isinstance(data, str | Path):
        data = open_dataset(data)
    if isinstance(data, Dataset):
        return data.dataset_id
    digest = hashlib.sha256()
    for array in pairs if pairs is not None else training_pairs(data):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        digest.update(array.tobytes())
    return "sha256:" + digest.hexdigest()[:16]


def training_fingerprint(data: str, model: ModelConfig, training: TrainConfig,
                         init: str | None = None) -> tuple[dict[str, Any], str]:
    """The settings that determine a run's weights, as flat ``{"field": value}`` and a hash.

    Args:
        data: The data's identity (:func:`data_id`: a dataset id or an array hash).
        init: The digest of the weights training starts from (:func:`weights_digest`) for a
            warm start; None (and then absent from the fields) for a fresh initialization.
        model: The resolved :class:`~prnf_core.models.ModelConfig` (``dim`` set); every field
            but ``preset`` shapes the network (the conditioning's box too: it fixes the
            condition normalization; absent when there is none, as before it existed).
        training: The :class:`TrainConfig`; :data:`COSMETIC_TRAINING_FIELDS` are left out, and
            :data:`STOPPING_FIELDS` unless the cosine schedule makes the horizon matter;
            ``memory_cap_mb`` only when set (a streamed run's batches depend on it; unset, the
            hashes of runs from before it existed hold).
    """
    fields: dict[str, Any] = {"data.id": data}
    fields.update({f"model.{k}": v for k, v in
                   model.model_dump(mode="json", exclude={"preset"}).items()})
    trained = training.model_dump(mode="json",
                                  exclude=set(COSMETIC_TRAINING_FIELDS | STOPPING_FIELDS))
    if trained.get("memory_cap_mb", 0) is None:  # absent unless set: earlier runs' hashes hold
        del trained["memory_cap_mb"]
    if training.lr_schedule == "cosine":  # T_max = total steps: the lr of every step
        length = "iterations" if training.iterations is not None else "epochs"
        trained[length] = getattr(training, length)
    fields.update({f"training.{k}": v for k, v in trained.items()})
    fields["training.split_rule"] = SPLIT_RULE
    if init is not None:
        fields["init.weights"] = init
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return fields, digest


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """A SHA-256 (16 hex) of a state dict's names, dtypes, shapes and values: what a warm start
    starts from, whatever file or registry the weights came from.

    >>> weights_digest({"w": torch.zeros(2)}) == weights_digest({"w": torch.zeros(2)})
    True
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16
                      else tensor.float().numpy().tobytes())
    return digest.hexdigest()[:16]


def check_fingerprint(recorded: Any, fields: dict[str, Any], field: str, source: str) -> None:
    """Refuse to continue from ``source`` unless it was written for ``fields``.

    Raises:
        CheckpointMismatchError: naming every field that differs, or saying that ``source``
            records no fingerprint (written before fingerprints existed).
    """
    advice = "pass --restart (restart=True) to discard it and train from scratch"
    old = recorded.get("fields") if isinstance(recorded, dict) else None
    if not isinstance(old, dict):
        raise CheckpointMismatchError(
            f"{field}: {source} records no training fingerprint (written by an older prnf), so "
            f"it cannot be checked against these settings; {advice}")
    differ = sorted(k for k in old.keys() | fields.keys() if old.get(k) != fields.get(k))
    if differ:
        was = ", ".join(f"{k}={old.get(k)!r}" for k in differ)
        now = ", ".join(f"{k}={fields.get(k)!r}" for k in differ)
        raise CheckpointMismatchError(
            f"{field}: {source} was written for {was}; not for {now}; {advice}")


def load_checkpoint(path: str | Path, device: torch.device | str) -> dict[str, Any]:
    """Load ``checkpoint.pt`` on the CPU and place each part where resuming needs it.

    Loading with ``map_location=<model device>`` would also move the shuffling generator's
    state, and ``torch.Generator.set_state`` of the CPU generator accepts only a CPU
    ``ByteTensor``: a CUDA run could not resume. So everything is read on the CPU; the current
    and best weights then go to ``device``, the generator state stays on the CPU, and the
    optimizer state is left to ``Optimizer.load_state_dict``, which casts it to each
    parameter's device. Tested on the CPU with the "meta" device standing in for a GPU; not
    run on a GPU here.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)

    def to_device(weights: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
        return None if weights is None else {k: v.to(device) for k, v in weights.items()}

    return {**state, "model": to_device(state["model"]),
            "best_model": to_device(state.get("best_model")),
            "generator": state["generator"].cpu()}


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a kill mid-write never leaves a truncated
    checkpoint, only the previous one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
