"""One surrogate of p(X_t | X_0 = x0; θ) for t and θ in a declared box (issue 14, the model half):
the conditioning domain, the t=/params= API, refusal outside the box, training on (x0, c, y)
tuples, persistence, the checkpoint fingerprint and the pyfunc wrapper."""

from __future__ import annotations

import doctest
import json
import types
import warnings

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from prnf_core.checkpoints import data_id, training_fingerprint, training_pairs
from prnf_core.dataset import Dataset
from prnf_core.errors import ConfigError
from prnf_core.models import Conditioning, ModelConfig, build_model, load_metadata, load_model
from prnf_core.train import CheckpointMismatchError, TrainConfig, fit

BOX = Conditioning(time=(0.1, 1.0), params={"mu": (0.5, 2.0)})
ARCHS = ["prnf", "nsf"]


def make(arch: str = "prnf", box: Conditioning = BOX, dim: int = 2):
    model = build_model(ModelConfig(architecture=arch, dim=dim, hidden_width=16, transforms=2,
                                    dtype="float64", conditioning=box), seed=0)
    rng = np.random.default_rng(0)
    model.fit_normalization(rng.normal(size=(64, dim)), rng.normal(size=(64, dim)))
    return model.eval()


def decay(n: int, seed: int = 0, sigma: float = 0.1):
    """y = x0 exp(-μ t) + N(0, σ²), t ~ U[0.1, 1], μ ~ U[0.5, 2]: rows (x0, (t, μ), y)."""
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-2, 2, (n, 1))
    cond = np.column_stack([rng.uniform(0.1, 1.0, n), rng.uniform(0.5, 2.0, n)])
    y = x0 * np.exp(-cond[:, :1] * cond[:, 1:]) + rng.normal(0, sigma, (n, 1))
    return x0, cond, y


# -- the conditioning domain -------------------------------------------------------------------
def test_the_module_example_runs():
    import prnf_core.models.conditioning

    assert doctest.testmod(prnf_core.models.conditioning).failed == 0


def test_names_dim_features_and_normalization():
    box = Conditioning(time=(0.0, 2.0), params={"sigma": (0.1, 0.3), "E0": (0.0, 0.01)})
    assert box.names == ["t", "E0", "sigma"] and box.dim == 3
    rows = box.features(3, t=[0.5, 1.0, 1.5], params={"sigma": 0.2, "E0": np.array([0, 0.005,
                                                                                   0.01])})
    np.testing.assert_allclose(rows, [[0.5, 0.0, 0.2], [1.0, 0.005, 0.2], [1.5, 0.01, 0.2]])
    mean, std = box.normalization()
    np.testing.assert_allclose((box.features(1, t=2.0, params={"sigma": 0.1, "E0": 0.01})
                                - mean) / std, [[1.0, 1.0, -1.0]])
    assert box.example() == {"t": 2.0, "E0": 0.005, "sigma": 0.2}
    only_params = Conditioning(params={"mu": (1.0, 3.0)})
    assert only_params.names == ["mu"]
    with pytest.raises(ConfigError, match=r"^t: .*one horizon"):
        only_params.features(2, t=0.5, params={"mu": 2.0})


def test_features_name_what_is_missing_or_unknown():
    with pytest.raises(ConfigError, match=r"^conditions missing: t, mu"):
        BOX.features(2)
    with pytest.raises(ConfigError, match=r"^conditions missing: mu"):
        BOX.features(2, t=0.5)
    with pytest.raises(ConfigError, match=r"^params: nu not a condition of this model"):
        BOX.features(2, t=0.5, params={"mu": 1.0, "nu": 1.0})
    with pytest.raises(ConfigError, match=r"^t: needs a scalar or 2 values"):
        BOX.features(2, t=[0.5, 0.6, 0.7], params={"mu": 1.0})
    with pytest.raises(ConfigError, match=r"^mu: contains NaN"):
        BOX.features(2, t=0.5, params={"mu": np.nan})


def test_box_is_validated_and_the_cond_dim_derived():
    for bad in ({"time": (-0.1, 1.0)}, {"time": (1.0, 1.0)}, {"params": {"mu": (2.0, 1.0)}},
                {"params": {"t": (0.0, 1.0)}}, {}):
        with pytest.raises(ValidationError):
            Conditioning(**bad)
    assert ModelConfig(dim=1, conditioning=BOX).cond_dim == 2
    assert ModelConfig(dim=1, cond_dim=2, conditioning=BOX).cond_dim == 2
    with pytest.raises(ValidationError, match="cond_dim: 3 != the conditioning's 2"):
        ModelConfig(dim=1, cond_dim=3, conditioning=BOX)
    # an unconditioned config serializes as before the field existed
    assert "conditioning" not in ModelConfig(dim=1).model_dump(mode="json")
    dumped = ModelConfig(dim=1, conditioning=BOX).model_dump(mode="json")
    assert dumped["conditioning"] == {"time": [0.1, 1.0], "params": {"mu": [0.5, 2.0]}}
    assert ModelConfig.model_validate(dumped) == ModelConfig(dim=1, conditioning=BOX)


def test_the_box_fixes_the_condition_normalization():
    model = make()
    torch.testing.assert_close(model.c_mean, torch.tensor([0.55, 1.25], dtype=torch.float64))
    torch.testing.assert_close(model.c_std, torch.tensor([0.45, 0.75], dtype=torch.float64))
    x0, cond, y = decay(50)  # a sample's statistics do not move it
    model.fit_normalization(np.repeat(x0, 2, 1), np.repeat(y, 2, 1), cond)
    torch.testing.assert_close(model.c_mean, torch.tensor([0.55, 1.25], dtype=torch.float64))


def test_a_log_scale_parameter_enters_as_its_log():
    box = Conditioning(time=(0.1, 1.0), params={"E0": (2e-4, 1.25e-3)},
                       param_scale={"E0": "log"})
    model = make(box=box)
    torch.testing.assert_close(model.c_mean[1], torch.tensor(np.log(5e-4), dtype=torch.float64))
    torch.testing.assert_close(model.c_std[1], torch.tensor(np.log(6.25) / 2, dtype=torch.float64))
    x0 = np.zeros((3, 2))
    _, ctx = model.normalize(torch.zeros(3, 2, dtype=torch.float64), None, torch.as_tensor(
        box.features(3, t=1.0, params={"E0": [2e-4, 5e-4, 1.25e-3]})))
    torch.testing.assert_close(ctx[:, -1], torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64))
    assert box.example() == {"t": 1.0, "E0": pytest.approx(5e-4)}
    # no logarithm of a field <= 0, not even to extrapolate
    with pytest.raises(ConfigError, match=r"^E0: 0\.0 is not > 0, and the model takes E0 on a "
                                          r"log scale"):
        model.sample(x0, t=0.5, params={"E0": 0.0}, allow_outside=True)
    # a linear scale is the default: the box and its dump are the plain ones
    plain = Conditioning(time=(0.1, 1.0), params={"E0": (2e-4, 1.25e-3)},
                         param_scale={"E0": "linear"})
    assert plain == Conditioning(time=(0.1, 1.0), params={"E0": (2e-4, 1.25e-3)})
    assert "param_scale" not in plain.model_dump() and box.model_dump()["param_scale"] == {
        "E0": "log"}
    with pytest.raises(ValidationError, match=r"param_scale\.E0: a log scale needs a box with "
                                              r"low > 0"):
        Conditioning(params={"E0": (0.0, 1.0)}, param_scale={"E0": "log"})
    with pytest.raises(ValidationError, match=r"param_scale: 'Z' is not in the parameter box; "
                                              r"allowed: \['E0'\]"):
        Conditioning(params={"E0": (1.0, 2.0)}, param_scale={"Z": "log"})


def test_a_log_scale_box_survives_save_load_and_the_fingerprint(tmp_path):
    box = Conditioning(time=(0.1, 1.0), params={"mu": (0.5, 2.0)}, param_scale={"mu": "log"})
    model = make(box=box)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m", device="cpu")
    assert loaded.config.conditioning == box
    x0, y = np.zeros((3, 2)), np.ones((3, 2))
    torch.testing.assert_close(loaded.log_prob(y, x0, t=0.3, params={"mu": 1.0}),
                               model.log_prob(y, x0, t=0.3, params={"mu": 1.0}), rtol=0, atol=0)
    training = TrainConfig(epochs=1, progress=False)
    linear = training_fingerprint("d", ModelConfig(dim=1, conditioning=BOX), training)[1]
    assert training_fingerprint("d", ModelConfig(dim=1, conditioning=box), training)[1] != linear


# -- the API -----------------------------------------------------------------------------------
def test_time_scaling_is_on_for_a_time_box_and_refused_without_one():
    assert ModelConfig(dim=1, conditioning=BOX).time_scaling is True
    params_only = Conditioning(params={"mu": (0.5, 2.0)})
    assert ModelConfig(dim=1, conditioning=params_only).time_scaling is False
    assert ModelConfig(dim=1, conditioning=BOX, time_scaling=False).time_scaling is False
    with pytest.raises(ValidationError, match=r"time_scaling: needs a conditioning with a time "
                                              r"range \(conditioning.time\)"):
        ModelConfig(dim=1, conditioning=params_only, time_scaling=True)
    with pytest.raises(ValidationError, match="time_scaling: needs a conditioning"):
        ModelConfig(dim=1, time_scaling=True)
    assert "time_scaling" not in ModelConfig(dim=1).model_dump(mode="json")
    # an explicit choice on a config whose box comes from the store later is kept
    later = ModelConfig.model_validate({**ModelConfig(dim=1, time_scaling=False).model_dump(),
                                        "conditioning": BOX.model_dump()})
    assert later.time_scaling is False


def test_time_scaling_recovers_the_spread_and_mean_of_each_time():
    """Increments with mean c·u(t) and log spread a + b·u(t), u = log(t + ε) (the fitted form):
    the fitted m(t) and s(t) at every snapshot are within 4 standard errors of the truth
    (SE of a mean σ/√n, of a log standard deviation 1/√(2(n-1)), n rows per time)."""
    from prnf_core.models import time_scaling

    box, n = (0.1, 1.0), 4000
    times = np.linspace(*box, 10)
    u = np.log(times + time_scaling.EPS_FRACTION * (box[1] - box[0]))
    mean, log_std = 0.3 * u, -0.2 + 0.5 * u
    rng = np.random.default_rng(0)
    t = np.repeat(times, n)
    inc = (np.repeat(mean, n) + np.exp(np.repeat(log_std, n)) * rng.standard_normal(len(t)))
    model = build_model(ModelConfig(dim=1, hidden_width=8, dtype="float64",
                                    conditioning=Conditioning(time=box)), seed=0)
    x0 = rng.uniform(-1, 1, (len(t), 1))
    model.fit_normalization(x0, x0 + inc[:, None], t[:, None])
    got_mean, got_std = model._target_scale(torch.as_tensor(times)[:, None])
    got_mean, got_std = got_mean[:, 0].numpy(), got_std[:, 0].numpy()
    assert np.all(np.abs(got_mean - mean) < 4 * np.exp(log_std) / np.sqrt(n)), got_mean - mean
    assert np.all(np.abs(np.log(got_std) - log_std) < 4 / np.sqrt(2 * (n - 1))), got_std


def test_a_conditioned_model_saved_before_time_scaling_loads_without_it(tmp_path):
    model = build_model(ModelConfig(dim=2, hidden_width=16, dtype="float64", conditioning=BOX,
                                    time_scaling=False), seed=0)
    rng = np.random.default_rng(0)
    model.fit_normalization(rng.normal(size=(64, 2)), rng.normal(size=(64, 2)))
    model.eval().save(tmp_path / "m")
    meta_path = tmp_path / "m" / "config.json"
    meta = json.loads(meta_path.read_text())
    del meta["model"]["time_scaling"]  # as written before the option existed
    meta_path.write_text(json.dumps(meta))
    loaded = load_model(tmp_path / "m", device="cpu")
    assert loaded.config.time_scaling is False
    x0, y = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    torch.testing.assert_close(loaded.log_prob(y, x0, t=0.5, params={"mu": 1.0}),
                               model.log_prob(y, x0, t=0.5, params={"mu": 1.0}), rtol=0, atol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_api_shapes_with_scalar_and_per_row_conditions(arch):
    model = make(arch)
    rng = np.random.default_rng(1)
    x0, y = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    per_row = {"t": np.linspace(0.1, 1.0, 5), "params": {"mu": np.linspace(0.5, 2.0, 5)}}
    for conditions in ({"t": 0.5, "params": {"mu": 1.0}}, per_row):
        assert model.log_prob(y, x0, **conditions).shape == (5,)
        assert model.sample(x0, **conditions).shape == (5, 2)
        assert model.reversibility_error(y, x0, **conditions).shape == (5,)
    assert model.mixture_log_prob(y[:3], x0, t=0.5, params={"mu": 1.0}).shape == (3,)
    x0s, ys = model.sample_initial({"kind": "gaussian", "mean": [0.0, 0.0], "std": [1.0, 1.0]},
                                   4, seed=2, t=1.0, params={"mu": 2.0})
    assert x0s.shape == ys.shape == (4, 2)
    # t=/params= and the raw condition rows are the same thing
    cond = np.column_stack([per_row["t"], per_row["params"]["mu"]])
    torch.testing.assert_close(model.log_prob(y, x0, cond), model.log_prob(y, x0, **per_row))
    a = model.sample(x0, generator=torch.Generator().manual_seed(0), **per_row)
    b = model.sample(x0, cond, torch.Generator().manual_seed(0))  # the old positional form
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the condition matters
    assert not torch.allclose(model.log_prob(y, x0, t=0.1, params={"mu": 1.0}),
                              model.log_prob(y, x0, t=1.0, params={"mu": 1.0}))


@pytest.mark.parametrize("arch", ARCHS)
def test_conditions_outside_the_box_are_refused_naming_the_box(arch):
    model = make(arch)
    x0, y = np.zeros((3, 2)), np.zeros((3, 2))
    with pytest.raises(ConfigError, match=r"^t: 1\.5 is outside the trained time range "
                                          r"\[0\.1, 1\.0\]; pass allow_outside=True"):
        model.sample(x0, t=1.5, params={"mu": 1.0})
    with pytest.raises(ConfigError, match=r"^mu: values from 1\.0 to 3\.0 are outside the "
                                          r"trained range of parameter mu \[0\.5, 2\.0\]"):
        model.log_prob(y, x0, t=0.5, params={"mu": [1.0, 2.0, 3.0]})
    with pytest.raises(ConfigError, match=r"t: 0\.0 is outside .*; mu: 9\.0 is outside"):
        model.log_prob(y, x0, np.array([[0.0, 9.0]]))  # raw cond rows are checked too
    with pytest.raises(ConfigError, match=r"mu: 0\.1 is outside"):
        model.mixture_log_prob(y, x0, t=0.5, params={"mu": 0.1})
    with pytest.warns(UserWarning, match=r"t: 1\.5 is outside the trained time range "
                                         r"\[0\.1, 1\.0\].*extrapolates"):
        out = model.sample(x0, t=1.5, params={"mu": 1.0}, allow_outside=True)
    assert out.shape == (3, 2) and torch.isfinite(out).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inside the box (its ends included): no warning
        model.sample(x0, t=[0.1, 1.0, 0.5], params={"mu": 2.0})


def test_missing_or_doubled_conditions_are_refused():
    model = make()
    x0 = np.zeros((3, 2))
    with pytest.raises(ConfigError, match=r"^cond: the model needs 2 condition features "
                                          r"\['t', 'mu'\]"):
        model.sample(x0)
    with pytest.raises(ConfigError, match=r"^conditions missing: mu"):
        model.sample(x0, t=0.5)
    with pytest.raises(ConfigError, match="either cond rows or t=/params="):
        model.sample(x0, np.array([[0.5, 1.0]]), t=0.5, params={"mu": 1.0})


def test_a_model_without_conditioning_refuses_t():
    plain = build_model(ModelConfig(dim=2, hidden_width=8), seed=0)
    plain.fit_normalization(np.zeros((4, 2)), np.ones((4, 2)))
    with pytest.raises(ConfigError, match=r"^t: this model was trained for one horizon and "
                                          r"fixed parameters"):
        plain.sample(np.zeros((3, 2)), t=0.5)
    with pytest.raises(ConfigError, match=r"^mu: this model was trained for one horizon"):
        plain.log_prob(np.zeros((3, 2)), np.zeros((3, 2)), params={"mu": 1.0})


# -- training ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("arch", "epochs"), [("prnf", 40), ("nsf", 15)])
def test_fit_on_tuples_learns_the_conditional_law(arch, epochs):
    """y = x0 exp(-μ t) + N(0, 0.1²): after a short CPU training (a few seconds) the validation
    NLL nears the exact conditional entropy and the sample mean and spread at several (x0, t, μ)
    inside the box follow the exact ones; the means span [-0.6, 1.3] across the conditions."""
    x0, cond, y = decay(6000)
    model = build_model(ModelConfig(architecture=arch, dim=1, hidden_width=32,
                                    conditioning=BOX), seed=0)
    result = fit(model, (x0, cond, y), TrainConfig(epochs=epochs, batch_size=250, lr=5e-3,
                                                   lam=10.0, progress=False, seed=0))
    assert result.n_train == 4800 and result.n_val == 1200
    # exact conditional entropy: 0.5 log(2πe 0.1²) = -0.884
    assert result.best_val_nll < -0.75, result.best_val_nll
    for x, t, mu in [(1.5, 0.2, 0.8), (1.5, 0.9, 1.8), (-1.0, 0.5, 1.0), (1.0, 0.3, 1.5),
                     (-1.5, 0.2, 0.7), (0.5, 0.7, 1.0)]:
        samples = model.sample(np.full((2000, 1), x), t=t, params={"mu": mu},
                               generator=torch.Generator().manual_seed(0))
        want = x * np.exp(-mu * t)
        mean, std = float(samples.mean()), float(samples.std())
        assert abs(mean - want) < 0.08 and 0.07 < std < 0.2, (x, t, mu, mean, want, std)


def test_fit_checks_the_condition_columns():
    x0, cond, y = decay(200)
    plain = build_model(ModelConfig(dim=1, hidden_width=8), seed=0)
    with pytest.raises(ConfigError, match=r"^model\.cond_dim: the data are \(x0, cond, X_T\) "
                                          r"tuples .* \(2 condition features\) but the model "
                                          r"has cond_dim=0"):
        fit(plain, (x0, cond, y), TrainConfig(epochs=1, progress=False))
    boxed = build_model(ModelConfig(dim=1, hidden_width=8, conditioning=BOX), seed=0)
    with pytest.raises(ConfigError, match=r"^model\.cond_dim: .*\(1 condition features\) but "
                                          r"the model has cond_dim=2"):
        fit(boxed, (x0, cond[:, :1], y), TrainConfig(epochs=1, progress=False))
    with pytest.raises(ConfigError, match=r"^model\.cond_dim: the data are \(x0, X_T\) pairs"):
        fit(boxed, (x0, y), TrainConfig(epochs=1, progress=False))
    outside = cond.copy()
    outside[3, 0] = 2.0
    with pytest.raises(ConfigError, match=r"^data\.cond: t: values from .* to 2\.0 are outside "
                                          r"the trained time range \[0\.1, 1\.0\]"):
        fit(boxed, (x0, outside, y), TrainConfig(epochs=1, progress=False))


class _Store(Dataset):
    """A stand-in for a store simulated with save_times and a param_box, whose condition
    columns a test may set at will (a real store's always match its configuration); its
    training law is unknown, as for raw arrays (the training domain comes from its x0)."""

    def __init__(self, rows, names, save_times=(0.5, 1.0), param_box=None):
        self._rows, self._names = rows, names
        self._config = types.SimpleNamespace(save_times=list(save_times or []) or None,
                                             param_box=param_box, initial_spec=lambda: None,
                                             sde=lambda: types.SimpleNamespace(dim=1,
                                                                               boundaries=None))

    def load(self, name, allow_partial=False):
        if name != "x0":
            raise KeyError(name)
        return self._rows[0]

    @property
    def config(self):
        return self._config

    @property
    def dataset_id(self):
        return "test-store"

    def conditioned_tuples(self):
        return (*self._rows, self._names)

    def pairs(self):
        return self._rows[0], self._rows[2]


def test_fit_on_a_store_uses_its_conditioned_tuples():
    x0, cond, y = decay(300)
    model = build_model(ModelConfig(dim=1, hidden_width=8, conditioning=BOX), seed=0)
    result = fit(model, _Store((x0, cond, y), ["t", "mu"]), TrainConfig(epochs=1,
                                                                      progress=False))
    assert result.n_train == 240
    with pytest.raises(ConfigError, match=r"^model\.conditioning: the model is conditioned on "
                                          r"\['t', 'mu'\] but the dataset's condition columns "
                                          r"are \['t', 'sigma'\]"):
        fit(model, _Store((x0, cond, y), ["t", "sigma"]), TrainConfig(epochs=1, progress=False))
    with pytest.raises(ConfigError, match="save_times and/or a param_box"):
        fit(model, _Store((x0, cond, y), ["t", "mu"], save_times=None),
            TrainConfig(epochs=1, progress=False))
    # one horizon, parameters only: the store's constant t column is dropped
    mu_only = build_model(ModelConfig(dim=1, hidden_width=8,
                                      conditioning=Conditioning(params={"mu": (0.5, 2.0)})))
    one_horizon = np.column_stack([np.ones(300), cond[:, 1]])
    fit(mu_only, _Store((x0, one_horizon, y), ["t", "mu"], save_times=None,
                        param_box={"mu": (0.5, 2.0)}), TrainConfig(epochs=1, progress=False))
    # an unconditioned model is refused a store that varies SDE parameters
    plain = build_model(ModelConfig(dim=1, hidden_width=8))
    with pytest.raises(ConfigError, match=r"^model\.cond_dim: the dataset varies SDE param"):
        fit(plain, _Store((x0, cond, y), ["t", "mu"], param_box={"mu": (0.5, 2.0)}),
            TrainConfig(epochs=1, progress=False))


def test_training_pairs_and_data_id_take_three_tuples():
    x0, cond, y = decay(10)
    arrays = training_pairs((x0, cond, y))
    assert len(arrays) == 3 and arrays[1].shape == (10, 2)
    other = cond.copy()
    other[0, 1] += 0.1
    assert data_id((x0, cond, y)) == data_id((x0, cond.copy(), y))
    assert data_id((x0, cond, y)) != data_id((x0, other, y))  # the condition rows count
    assert data_id((x0, cond, y)) != data_id((x0, y))


def test_the_fingerprint_covers_the_conditioning(tmp_path):
    training = TrainConfig(epochs=1, progress=False)
    fields, a = training_fingerprint("d", ModelConfig(dim=1, conditioning=BOX), training)
    assert fields["model.conditioning"] == {"time": [0.1, 1.0], "params": {"mu": [0.5, 2.0]}}
    wider = Conditioning(time=(0.1, 1.0), params={"mu": (0.5, 3.0)})
    assert training_fingerprint("d", ModelConfig(dim=1, conditioning=wider), training)[1] != a
    plain_fields, _ = training_fingerprint("d", ModelConfig(dim=1), training)
    assert "model.conditioning" not in plain_fields  # unconditioned fingerprints unchanged
    # a checkpoint written for one box is not resumed for another
    x0, cond, y = decay(200)
    model = build_model(ModelConfig(dim=1, hidden_width=8, conditioning=BOX), seed=0)
    fit(model, (x0, cond, y), training, checkpoint_dir=tmp_path)
    other = build_model(ModelConfig(dim=1, hidden_width=8, conditioning=wider), seed=0)
    with pytest.raises(CheckpointMismatchError, match=r"model\.conditioning"):
        fit(other, (x0, cond, y), training, checkpoint_dir=tmp_path, resume=True)


# -- persistence and the pyfunc wrapper -----------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_keeps_the_conditioning(arch, tmp_path):
    model = make(arch)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m", device="cpu")
    assert loaded.config.conditioning == BOX and loaded.conditioning.names == ["t", "mu"]
    x0, y = np.zeros((3, 2)), np.ones((3, 2))
    torch.testing.assert_close(loaded.log_prob(y, x0, t=0.3, params={"mu": 1.0}),
                               model.log_prob(y, x0, t=0.3, params={"mu": 1.0}), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="outside the trained time range"):
        loaded.sample(x0, t=5.0, params={"mu": 1.0})
    meta = load_metadata(tmp_path / "m")
    assert meta["conditioning"] == {"time": [0.1, 1.0], "params": {"mu": [0.5, 2.0]},
                                    "names": ["t", "mu"]}


def test_pyfunc_takes_conditions_as_params(tmp_path):
    from mlflow.models import infer_signature

    from tasks.pyfunc import load_surrogate, signature_params

    model = make("prnf", dim=1)
    model.save(tmp_path / "m")
    wrapper = load_surrogate(str(tmp_path / "m"))
    x0 = np.zeros((4, 1))
    a = wrapper.predict(None, x0, {"seed": 3, "t": 0.5, "mu": 1.0})
    b = wrapper.model.sample(x0, generator=torch.Generator().manual_seed(3), t=0.5,
                             params={"mu": 1.0}).numpy()
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match="conditions missing: mu"):
        wrapper.predict(None, x0, {"seed": 3, "t": 0.5})
    with pytest.raises(ConfigError, match="outside the trained"):
        wrapper.predict(None, x0, {"seed": 3, "t": 0.5, "mu": 9.0})
    assert wrapper.log_prob(np.ones((4, 1)), x0, t=0.5, params={"mu": 1.0}).shape == (4,)
    x0s, ys = wrapper.sample_initial({"kind": "point_mass", "point": [0.0]}, 3, t=0.2,
                                     params={"mu": 1.0})
    assert x0s.shape == ys.shape == (3, 1)
    params = signature_params(wrapper.model)
    assert params == {"seed": 0, "strict": False, "max_outside": 0.01, "t": 1.0, "mu": 1.25}
    signature = infer_signature(x0, a, params=params)
    assert {p.name: p.default for p in signature.params} == params
    # an unconditioned model's signature keeps seed (and the trust check's params) only, and
    # its predict refuses t
    plain = build_model(ModelConfig(dim=1, hidden_width=8), seed=0)
    plain.fit_normalization(np.zeros((4, 1)), np.ones((4, 1)))
    plain.save(tmp_path / "p")
    plain_wrapper = load_surrogate(str(tmp_path / "p"))
    assert signature_params(plain_wrapper.model) == {"seed": 0, "strict": False,
                                                     "max_outside": 0.01}
    assert plain_wrapper.predict(None, x0, {"seed": 1}).shape == (4, 1)
    with pytest.raises(ConfigError, match="one horizon and fixed parameters"):
        plain_wrapper.predict(None, x0, {"seed": 1, "t": 0.5})


def test_fit_on_a_real_store_with_save_times(tmp_path):
    """A store simulated with snapshot times trains a time-conditioned model on its
    conditioned_tuples (one row per particle and time); an unconditioned one still trains on its
    (x0, xT) pairs."""
    from prnf_core import DatasetConfig, run_dataset

    if not hasattr(Dataset, "conditioned_tuples"):
        pytest.skip("Dataset.conditioned_tuples (the dataset half of issue 14) is not here yet")
    cfg = DatasetConfig(problem="ou", n_particles=300, chunk_size=300, t_end=0.1,
                        save_times=[0.05, 0.1])
    path = run_dataset(cfg, tmp_path / "ou.zarr").path
    boxed = build_model(ModelConfig(dim=2, hidden_width=8,
                                    conditioning=Conditioning(time=(0.05, 0.1))), seed=0)
    result = fit(boxed, path, TrainConfig(epochs=1, progress=False))
    assert result.n_train + result.n_val == 600  # 300 particles x 2 times
    assert boxed.sample(np.zeros((3, 2)), t=0.07).shape == (3, 2)
    plain = build_model(ModelConfig(dim=2, hidden_width=8), seed=0)
    assert fit(plain, path, TrainConfig(epochs=1, progress=False)).n_train == 240
    narrow = build_model(ModelConfig(dim=2, hidden_width=8,
                                     conditioning=Conditioning(time=(0.08, 0.1))), seed=0)
    with pytest.raises(ConfigError, match=r"^data\.cond: t: values from 0\.05 to 0\.1 are "
                                          r"outside the trained time range \[0\.08, 0\.1\]"):
        fit(narrow, path, TrainConfig(epochs=1, progress=False))


def test_logged_conditioned_model_takes_conditions_through_its_signature(tmp_path, monkeypatch):
    """log_surrogate of a conditioned model: the signature declares seed and the conditions
    (defaults: the upper time, the parameter midpoints); the MLflow-loaded model predicts
    under them and still refuses conditions outside the box."""
    import mlflow

    from tasks import tracking
    from tasks.pyfunc import log_surrogate

    monkeypatch.setenv("PRNF_DATA_ROOT", str(tmp_path / "data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = tracking.configure()
    model = make("prnf", dim=1)
    model.save(tmp_path / "m")
    with tracking.child_run(client, tracking.experiment_id(client, "ou1d"), "log-model",
                            None) as run_id:
        uri = log_surrogate(tmp_path / "m", run_id, np.zeros((3, 1)))
    logged = mlflow.pyfunc.load_model(uri)
    defaults = {p.name: p.default for p in logged.metadata.get_params_schema().params}
    assert defaults == {"seed": 0, "strict": False, "max_outside": 0.01, "t": 1.0, "mu": 1.25}
    a = logged.predict(np.zeros((3, 1)), params={"seed": 1, "t": 0.5, "mu": 1.0})
    b = model.sample(np.zeros((3, 1)), generator=torch.Generator().manual_seed(1), t=0.5,
                     params={"mu": 1.0}).numpy()
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ConfigError, match=r"t: 5\.0 is outside the trained time range"):
        logged.predict(np.zeros((3, 1)), params={"seed": 1, "t": 5.0, "mu": 1.0})
    assert logged.unwrap_python_model().metadata["conditioning"]["names"] == ["t", "mu"]
