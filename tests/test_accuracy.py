"""Accuracy against exact transition densities (bm1d, 2-D OU), trained within the test budget.

Threshold: KL(p_T || q_T) < 0.03 nats. For reference, 0.03 is the KL between two normals of equal
variance whose means differ by 0.245 standard deviations: an error a histogram shows plainly.
The check uses the upper end of the estimate, KL + 4·SE (SE from the n_y exact draws), so
passing is not luck; the under-trained model must fail with KL − 4·SE above the threshold, so the
check can fail. Reversibility: mean ‖g(f(y)) − y‖² < 0.01 in normalized units (1% of the
variance of each standardized coordinate).
"""

from __future__ import annotations

import numpy as np
import pytest

from prnf_core import DatasetConfig, get_problem, open_dataset, run_dataset
from prnf_core.metrics import exact_kl
from prnf_core.models import ModelConfig, build_model
from prnf_core.train import TrainConfig, fit

KL_MAX = 0.03
REV_MAX = 0.01
K_SE = 4.0


def initial_laws(dim: int) -> dict[str, dict]:
    return {
        "gaussian": {"kind": "gaussian", "mean": [0.3] * dim, "std": [0.4] * dim},
        "bimodal": {"kind": "gaussian_mixture", "weights": [0.5, 0.5],
                    "means": [[-1.0] * dim, [1.0] * dim], "stds": [[0.3] * dim, [0.3] * dim]},
    }


def trained(problem: str, epochs: int, tmp_path_factory):
    store = tmp_path_factory.mktemp(problem) / "train.zarr"
    cfg = DatasetConfig(problem=problem, n_particles=8000, chunk_size=4000, seed=1)
    dataset = open_dataset(run_dataset(cfg, store).path)
    model = build_model(ModelConfig(dim=dataset.dim, hidden_width=64), seed=0)
    fit(model, dataset, TrainConfig(epochs=epochs, batch_size=256, lr=3e-3, progress=False))
    return model, dataset


@pytest.fixture(scope="module", params=["bm1d", "ou"])
def well_trained(request, tmp_path_factory):
    return request.param, *trained(request.param, 40, tmp_path_factory)


@pytest.mark.parametrize("law", ["gaussian", "bimodal"])
def test_exact_kl_below_threshold(well_trained, law):
    problem, model, _ = well_trained
    sde = get_problem(problem)
    est = exact_kl(sde, model, initial_laws(sde.dim)[law], n_y=1500, n_x0=1500, seed=2)
    assert est.kl + K_SE * est.stderr < KL_MAX, (problem, law, est)


def test_reversibility_below_threshold(well_trained):
    _, model, dataset = well_trained
    x0, xT = dataset.pairs()
    assert float(model.reversibility_error(xT[:4000], x0[:4000]).mean()) < REV_MAX


def test_under_trained_model_fails_the_check(tmp_path_factory):
    model, _ = trained("ou", 1, tmp_path_factory)
    sde = get_problem("ou")
    est = exact_kl(sde, model, initial_laws(2)["bimodal"], n_y=1500, n_x0=1500, seed=2)
    assert est.kl - K_SE * est.stderr > KL_MAX, est


def test_kl_of_the_exact_law_is_zero_within_its_error():
    """The estimator itself is unbiased: a 'model' equal to the truth scores KL ≈ 0."""
    import torch

    from prnf_core.models.base import ConditionalSampler, ModelConfig

    sde = get_problem("ou")

    class Exact(ConditionalSampler):
        def log_prob(self, y, x0, cond=None):
            return torch.as_tensor(sde.transition_logpdf(np.asarray(y), np.asarray(x0), 1.0))

    exact = Exact(ModelConfig(dim=2))
    exact.fitted.fill_(True)
    est = exact_kl(sde, exact, initial_laws(2)["bimodal"], n_y=1000, n_x0=1000, seed=3)
    assert abs(est.kl) < 1e-8 and est.stderr < 1e-8  # rounding only
