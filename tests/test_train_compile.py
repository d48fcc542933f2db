"""``TrainConfig(torch_compile=True)``: the compiled training loss trains the same model."""

from __future__ import annotations

import numpy as np
import pytest

from prnf_core.models import ModelConfig, build_model
from prnf_core.train import TrainConfig, fit, training_fingerprint


@pytest.mark.slow  # a cold torch.compile takes tens of CPU seconds
def test_compiled_loss_trains_like_eager():
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1, 1, (1000, 3))
    data = (x0, 0.5 * x0 + rng.normal(0, 0.3, x0.shape))
    config = {"epochs": 2, "batch_size": 300, "progress": False, "lr_schedule": "constant"}
    runs = {}
    for compiled in (False, True):  # 800 training pairs: batches of 300, 300 and 200
        model = build_model(ModelConfig(dim=3, hidden_width=16, dtype="float64"), seed=0)
        runs[compiled] = fit(model, data, TrainConfig(**config, torch_compile=compiled)), model
    (eager, m_eager), (comp, m_comp) = runs[False], runs[True]
    for a, b in zip(eager.history, comp.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-9)
        assert a["val_nll"] == pytest.approx(b["val_nll"], rel=1e-9)
    for p, q in zip(m_eager.parameters(), m_comp.parameters(), strict=True):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-7, atol=1e-9)
    # An execution setting: a checkpoint resumes with it on or off.
    assert (training_fingerprint("d", m_eager.config, TrainConfig(**config))
            == training_fingerprint("d", m_eager.config, TrainConfig(**config, torch_compile=True)))
