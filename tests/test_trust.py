"""Issue 15: the training domain a model records and the coverage of a user's initial law.

Tolerances come from the sample sizes: an outside fraction is a binomial proportion, checked
within 4 standard errors of its analytic value; p-values are checked far from their cut (a law
drawn from the training law itself against a shape the test must reject by many sigmas)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from prnf_core.errors import ConfigError
from prnf_core.initial_specs import Gaussian, Maxwellian, SamplesFile, Uniform
from prnf_core.models import ModelConfig, build_model, load_model
from prnf_core.train import TrainConfig, fit
from prnf_core.trust import (
    OutsideDomainError,
    TrainingDomain,
    check_coverage,
    coverage,
)

BOX = Uniform(low=[-1.0, -1.0], high=[1.0, 1.0])
N = 40_000


def _domain(law, n=20_000, seed=0) -> TrainingDomain:
    return TrainingDomain.of_training(law.sample(n, np.random.default_rng(seed)), law, seed)


def test_outside_fraction_of_a_gaussian_matches_its_analytic_mass():
    domain = _domain(BOX)
    assert domain.low == [-1.0, -1.0] and domain.high == [1.0, 1.0]  # the law's support
    law = Gaussian(mean=[0.8, 0.0], std=[0.3, 0.3])
    inside = ((stats.norm.cdf((1 - 0.8) / 0.3) - stats.norm.cdf((-1 - 0.8) / 0.3))
              * (stats.norm.cdf(1 / 0.3) - stats.norm.cdf(-1 / 0.3)))
    truth = 1 - inside  # about 0.25
    cov = coverage(domain, law, n=N, seed=1)
    se = math.sqrt(truth * (1 - truth) / N)
    assert abs(cov.outside_fraction - truth) < 4 * se
    assert cov.outside_stderr == pytest.approx(se, rel=0.05)
    assert cov.n == N and cov.n_inside == round(N * (1 - cov.outside_fraction))
    assert cov.flagged(0.01)


def test_an_inside_law_is_not_flagged_and_a_uniform_training_law_sees_no_shape():
    domain = _domain(BOX)
    cov = coverage(domain, Gaussian(mean=[0.0, 0.2], std=[0.1, 0.1]), n=N, seed=2)
    assert cov.outside_fraction == 0.0 and not cov.flagged(0.01)
    # log q is constant inside a uniform box: the typicality test has nothing to see
    assert cov.p_value == 1.0
    assert check_coverage(cov, 0.01, strict=True) is None


def test_p_value_rejects_an_inside_law_of_another_shape_under_a_gaussian_training_law():
    training = Gaussian(mean=[0.0, 0.0], std=[1.0, 1.0])
    domain = _domain(training, n=40_000)
    assert domain.law == training and domain.logq_n == 40_000
    # the box is the training x0's range (a Gaussian is unbounded): about ±4.2 std
    assert all(3.5 < -lo < 5 and 3.5 < hi < 5 for lo, hi in zip(domain.low, domain.high,
                                                                 strict=True))
    same = coverage(domain, training, n=5000, seed=3)
    assert same.p_value > 0.01 and same.outside_fraction < 0.002
    narrow = coverage(domain, Gaussian(mean=[0.0, 0.0], std=[0.3, 0.3]), n=5000, seed=4)
    assert narrow.outside_fraction == 0.0
    assert narrow.p_value < 1e-6 and narrow.z > 10  # piled up at the mode: too typical
    corner = coverage(domain, Gaussian(mean=[2.5, 2.5], std=[0.2, 0.2]), n=5000, seed=5)
    assert corner.outside_fraction == 0.0 and corner.p_value < 1e-6 and corner.z < -10


def test_a_law_without_density_gets_a_fitted_mixture_and_the_same_test(tmp_path):
    rng = np.random.default_rng(6)
    rows = np.concatenate([rng.normal(-2, 0.5, (10_000, 1)), rng.normal(2, 0.5, (10_000, 1))])
    np.save(tmp_path / "x0.npy", rows)
    law = SamplesFile(path=str(tmp_path / "x0.npy"))
    domain = TrainingDomain.of_training(rows, law, seed=0)
    assert domain.density is not None and domain.has_density
    stored = TrainingDomain.model_validate(json.loads(domain.model_dump_json()))
    assert stored == domain  # plain numbers, no pickle
    same = coverage(stored, rows[rng.integers(0, len(rows), 5000)])
    assert same.p_value > 0.01 and same.outside_fraction == 0.0
    gap = coverage(stored, Gaussian(mean=[0.0], std=[0.3]), n=5000, seed=7)
    assert gap.outside_fraction == 0.0 and gap.p_value < 1e-6  # between the modes


def test_strict_refuses_naming_the_fraction_and_the_threshold():
    cov = coverage(_domain(BOX), Gaussian(mean=[0.8, 0.0], std=[0.3, 0.3]), n=5000, seed=8)
    text = check_coverage(cov, 0.01)
    assert text.startswith("initial: ") and "max_outside = 1 %" in text
    assert f"{100 * cov.outside_fraction:.2f} %" in text
    fraction = f"{100 * cov.outside_fraction:.2f} %"
    with pytest.raises(OutsideDomainError, match=rf"{fraction}.*max_outside = 10 %.*strict"):
        check_coverage(cov, 0.1, strict=True)
    assert check_coverage(cov, 0.5, strict=True) is None


def test_runaway_maxwellian_support_and_bad_input():
    domain = _domain(Maxwellian(temperature=3.0))
    assert domain.low[0] == 0.5 and domain.low[1] == -1.0 and domain.high[1] == 1.0
    with pytest.raises(ConfigError, match="initial: spec has dimension 1"):
        coverage(domain, Gaussian(mean=[1.0], std=[1.0]))
    with pytest.raises(ConfigError, match=r"x0: must have shape \(n, 2\)"):
        coverage(domain, np.zeros((5, 3)))


def test_fit_records_the_domain_and_save_load_keeps_it(tmp_path):
    rng = np.random.default_rng(9)
    x0 = rng.uniform(-1, 1, (400, 1))
    xT = x0 + 0.1 * rng.standard_normal((400, 1))
    model = build_model(ModelConfig(dim=1, hidden_width=8), seed=0)
    fit(model, (x0, xT), TrainConfig(epochs=1, batch_size=200, progress=False))
    domain = model.training_domain
    assert domain is not None and domain.law is None and domain.density is not None
    assert domain.low == [float(x0.min())] and domain.high == [float(x0.max())]
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m", device="cpu")
    assert loaded.training_domain == domain
    law = Gaussian(mean=[1.0], std=[0.5])
    assert loaded.coverage(law, n=2000, seed=0) == model.coverage(law, n=2000, seed=0)


def test_a_model_saved_before_domains_were_recorded_says_so(tmp_path):
    from tests.tiny_models import save_tiny_bm1d_model

    model = load_model(save_tiny_bm1d_model(tmp_path / "old"), device="cpu")
    assert model.training_domain is None
    with pytest.raises(ConfigError, match="saved before prnf recorded training domains"):
        model.coverage({"kind": "gaussian", "mean": [0.0], "std": [1.0]})
