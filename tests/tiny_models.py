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


def register_perturbed_champion(client, experiment: str, model_dir: str, name: str,
                                example_x0: np.ndarray) -> str:
    """A copy of the champion at ``model_dir`` with noisy weights (std 0.5 added to every
    floating tensor), logged, registered with the champion's tags (so its health baseline is
    the good model's) and given the champion alias: a deliberately degraded champion."""
    import shutil

    import torch

    from tasks import registry, tracking
    from tasks.pyfunc import log_surrogate

    champion = registry.champion_version(client, name)
    noisy = model_dir + "-noisy"
    shutil.copytree(model_dir, noisy)
    weights = Path(noisy) / "weights.pt"
    state = torch.load(weights, weights_only=True)
    gen = torch.Generator().manual_seed(0)
    for key, value in state.items():
        if value.is_floating_point():
            state[key] = value + 0.5 * torch.randn(value.shape, generator=gen, dtype=value.dtype)
    torch.save(state, weights)
    with tracking.child_run(client, experiment, "train", None) as run_id:
        uri = log_surrogate(noisy, run_id, example_x0)
    tags = {k: v for k, v in champion.tags.items() if k not in registry.IDENTITY_TAGS}
    version = registry.register(client, uri, name, run_id, tags)
    client.set_registered_model_alias(name, registry.CHAMPION, version)
    return version
