"""A tiny saved model for the tests that need a model directory but not a trained model."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_tiny_bm1d_model(directory: Path, *, fitted: bool = True, seed: int = 0) -> str:
    """A 1-D bm1d model directory as the train flow writes one: untrained weights, the
    normalization fitted unless ``fitted=False``, and the metadata of a 64-pair dataset."""
    from prnf_core import DatasetConfig
    from prnf_core.models import ModelConfig, build_model
    from prnf_core.problems import get_problem

    model = build_model(ModelConfig(dim=1, hidden_width=8), seed=seed)
    if fitted:
        rng = np.random.default_rng(seed)
        model.fit_normalization(rng.normal(size=(64, 1)), rng.normal(size=(64, 1)))
    config = DatasetConfig(problem="bm1d", n_particles=64)
    model.save(directory, extra={"problem": get_problem("bm1d").describe(),
                                 "dataset_config": config.resolved(), "dataset_path": "",
                                 "dataset_id": config.dataset_id(), "train_seconds": 0.0})
    return str(directory)
