"""Issue 14's exact check at test size: ONE surrogate of p(X_t | x0; μ) for `ou1d_rate`
(dX = −μX dt + √(1+μ²) dW, Gaussian transition at every (t, μ)), trained ~10 CPU s on a store
over 10 snapshot times and a Sobol box of μ, scored by the exact KL at (t, μ) points that are
not training conditions, for two initial laws. The full-size run is
`benchmarks/study_conditioned.py` (docs/results/conditioned.md).

The rule: the KL estimate may not be significantly above the issue's goal 0.02, i.e.
``kl - 3 SE <= 0.02`` (SE of the estimator over its 1000 exact draws). An under-trained model
(2000 particles, 15 epochs: KL 0.16 ± 0.03 at t = 0.15) fails it.
"""

from __future__ import annotations

import pytest
import torch

from prnf_core.dataset import DatasetConfig, open_dataset
from prnf_core.models import Conditioning, ModelConfig, build_model
from prnf_core.problems import get_problem
from prnf_core.runner import run_dataset
from prnf_core.train import TrainConfig, fit
from prnf_core.validation import exact_kl, exact_sample_check

TIMES = [round(0.1 * k, 10) for k in range(1, 11)]
BOX = {"mu": (0.5, 2.0)}
LAWS = {"gaussian": {"kind": "gaussian", "mean": [0.5], "std": [0.3]},
        "uniform": {"kind": "uniform", "low": [-1.0], "high": [1.0]}}
GOAL = 0.02


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    config = DatasetConfig(problem="ou1d_rate", n_particles=4000, chunk_size=1000,
                           save_times=TIMES, param_box=BOX, seed=0)
    store = tmp_path_factory.mktemp("ou1d") / "store.zarr"
    run_dataset(config, store)
    net = build_model(ModelConfig(dim=1, hidden_width=32, x0_period=None,
                                  conditioning=Conditioning.of_dataset(TIMES, BOX)), seed=0)
    fit(net, open_dataset(store), TrainConfig(epochs=40, batch_size=512, lr=3e-3,
                                              progress=False))
    return net.eval()


@pytest.mark.parametrize("law", sorted(LAWS))
@pytest.mark.parametrize(("t", "mu"), [(0.15, 1.2), (0.35, 0.8), (0.75, 1.7)])
def test_exact_kl_off_the_training_conditions(model, law, t, mu):
    with torch.no_grad():
        est = exact_kl(get_problem("ou1d_rate", mu=mu), model, LAWS[law], t=t, n_y=1000,
                       n_x0=1000, seed=7)
    assert est.kl - 3 * est.stderr <= GOAL, (t, mu, law, est)


def test_the_sampler_matches_exact_draws_at_a_condition(model):
    """The density is not all: the samples users get (g) at (t, μ) against exact draws."""
    check = exact_sample_check(get_problem("ou1d_rate", mu=1.1), model, LAWS["gaussian"],
                               n=4000, seed=3, t=0.45)
    assert check.ks_pvalue > 1e-3, check  # a fixed seed: not a sequence of tries
    assert check.sw_ratio < 2.0, check
