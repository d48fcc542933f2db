"""The training set of a pipeline run: a fixed store, or a growing dataset family.

With ``grow_to`` set (:class:`flows.config.PipelineParams`), every run of a configuration
trains on one store per *dataset family* (:meth:`~prnf_core.dataset.DatasetConfig.family_id`:
the configuration without its size). A run adds ``grow_by`` particles of new chunks, up to the
cap; chunk ``i`` is drawn from ``SeedSequence(seed, spawn_key=(i,))`` at any size, so the
store of ``n`` particles is bit-identical to a fresh store of ``n`` and every chunk can be
re-simulated from its recorded seed. A run that finds the store incomplete (a killed run)
finishes it before growing any further.

>>> plan = TrainingPlan(path="x", n_particles=4000, chunk_size=1000, n_before=2000,
...                     family_id="f", seed=7)
>>> plan.action, training_chunks(plan)["data.chunks_added"]
('grow-4k', '2-3')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from prnf_core.dataset import DatasetConfig, grow_dataset, open_dataset
from prnf_core.paths import default_dataset_path, default_family_path


@dataclass(frozen=True)
class TrainingPlan:
    """What this run trains on: the store, its size now and before the run."""

    path: str
    n_particles: int  # the size this run trains on
    chunk_size: int
    n_before: int  # complete particles stored before this run (0: a new store)
    family_id: str | None  # None: a fixed store
    seed: int

    @property
    def capped(self) -> bool:
        """A growing store that gets nothing new this run (it is at its cap)."""
        return self.family_id is not None and self.n_particles == self.n_before

    @property
    def action(self) -> str:
        """What the run does to its data, for run names: ``grow-40k``, ``at-cap-80k``..."""
        size = short_count(self.n_particles)
        if self.family_id is None:
            return f"fixed-{size}"
        if self.n_before == 0:
            return f"new-{size}"
        return f"at-cap-{size}" if self.capped else f"grow-{size}"


def short_count(n: int) -> str:
    """``40000`` -> ``40k``, ``2500`` -> ``2.5k``, ``1500000`` -> ``1.5M``, ``500`` -> ``500``."""
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if n >= scale:
            return f"{n / scale:g}{unit}"
    return str(n)


def plan_training_set(config: DatasetConfig, grow_to: int | None, grow_by: int | None
                      ) -> TrainingPlan:
    """The training set of this run, without touching any store.

    ``config`` is the run's training configuration (its noise generator fixed,
    :meth:`~prnf_core.dataset.DatasetConfig.on_device`), of size ``n_train``. Without
    ``grow_to``: its own store. With it: the family store, at ``n_train`` when new, at its
    stored size when a previous run left it incomplete, else grown by ``grow_by`` (default
    ``n_train``) up to ``grow_to``; a store never shrinks.
    """
    if grow_to is None:
        path = str(default_dataset_path(config.problem, config.dataset_id()))
        return TrainingPlan(path, config.n_particles, config.chunk_size,
                            _complete_size(path), None, config.seed)
    family = config.family_id()
    path = str(default_family_path(config.problem, family))
    stored, complete = _stored(path)
    if stored == 0:
        target = config.n_particles
    elif not complete:
        target = stored  # finish what a killed run started before growing further
    else:
        grown = max(stored + (grow_by or config.n_particles), config.n_particles)
        target = max(stored, min(grown, grow_to))
    return TrainingPlan(path, target, config.chunk_size, stored if complete else 0, family,
                        config.seed)


def training_chunks(plan: TrainingPlan) -> dict[str, str]:
    """The chunks a run trains on and the ones it added, with the rule of their seeds: what
    the run records (as MLflow params) so that its data can be rebuilt chunk by chunk."""
    n_chunks = -(-plan.n_particles // plan.chunk_size)
    first_new = plan.n_before // plan.chunk_size
    return {"data.chunks": f"0-{n_chunks - 1}",
            "data.chunks_added": f"{first_new}-{n_chunks - 1}" if first_new < n_chunks else "none",
            "data.chunk_seeds": f"SeedSequence({plan.seed}, spawn_key=(i,))"}


@task(name="grow-training-set")
def grow_training_set(config: DatasetConfig, plan: TrainingPlan) -> dict[str, Any]:
    """Create or grow the family store to ``plan.n_particles`` (its new chunks are then
    simulated by :func:`tasks.simulate.simulate_chunks`); small metadata back."""
    sized = config.model_copy(update={"n_particles": plan.n_particles})
    dataset = grow_dataset(sized, plan.path, role="train")
    missing = dataset.missing_chunks()
    get_run_logger().info(
        "training family %s at %s: %d -> %d particles (%d chunks to simulate, cap reached: %s)",
        plan.family_id, plan.path, plan.n_before, plan.n_particles, len(missing), plan.capped)
    return {"path": plan.path, "dataset_id": dataset.dataset_id, "missing": len(missing)}


def _stored(path: str) -> tuple[int, bool]:
    """(particles, complete) of the store at ``path``; (0, False) when there is none."""
    try:
        dataset = open_dataset(path)
        return dataset.config.n_particles, dataset.is_complete
    except FileNotFoundError:
        return 0, False


def _complete_size(path: str) -> int:
    size, complete = _stored(path)
    return size if complete else 0
