"""The model contract every surrogate architecture passes (zuko-style, parametrized)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prnf_core.errors import ConfigError
from prnf_core.models import Conditioning, ModelConfig, build_model, load_model

ARCHS = ["prnf", "nsf"]
DIMS = [1, 2, 3]


def make(arch: str, dim: int, cond_dim: int = 0, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model(ModelConfig(architecture=arch, dim=dim, cond_dim=cond_dim,
                                    hidden_width=24, transforms=2, dtype="float64"))
    rng = np.random.default_rng(seed)
    cond = rng.normal(size=(64, cond_dim)) if cond_dim else None
    model.fit_normalization(rng.normal(1.0, 2.0, (64, dim)), rng.normal(-1.0, 0.5, (64, dim)),
                            cond)
    return model.eval()


def inputs(dim: int, n: int = 7, seed: int = 1, cond_dim: int = 0):
    rng = np.random.default_rng(seed)
    cond = rng.normal(size=(n, cond_dim)) if cond_dim else None
    return rng.normal(1.0, 2.0, (n, dim)), rng.normal(-1.0, 0.5, (n, dim)), cond


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("cond_dim", [0, 2])
def test_shapes(arch, dim, cond_dim):
    model = make(arch, dim, cond_dim)
    x0, y, cond = inputs(dim, cond_dim=cond_dim)
    assert model.log_prob(y, x0, cond).shape == (7,)
    assert model.sample(x0, cond).shape == (7, dim)
    assert model.reversibility_error(y, x0, cond).shape == (7,)
    assert model.mixture_log_prob(y[:3], x0, cond[:1] if cond is not None else None).shape == (3,)
    x0s, ys = model.sample_initial({"kind": "gaussian", "mean": [0.0] * dim, "std": [1.0] * dim},
                                   5, cond=cond[:1] if cond is not None else None)
    assert x0s.shape == ys.shape == (5, dim)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dim", DIMS)
def test_gradients_reach_every_parameter(arch, dim):
    model = make(arch, dim).train()
    x0, y, _ = inputs(dim, n=32)
    yn, ctx = model.normalize(torch.as_tensor(x0), torch.as_tensor(y), None)
    loss, parts = model.training_loss(yn, ctx, lam=100.0)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"no gradient for {name}"
        assert torch.isfinite(param.grad).all(), name
    assert any(float(p.grad.abs().sum()) > 0 for p in model.parameters())
    assert set(parts) == {"nll", "rev"}


def assert_log_prob_is_autograd_slogdet(model, x0: np.ndarray, y: np.ndarray,
                                        cond: np.ndarray | None = None) -> None:
    """log q(y|x0) = log N(f(y)) + log|det ∂f/∂y| with the Jacobian from autograd (physical y,
    through the model's own normalization), row by row."""
    got = model.log_prob(y, x0, cond).detach().numpy()
    x0_t, y_t = torch.as_tensor(x0), torch.as_tensor(y)
    c_t = None if cond is None else torch.as_tensor(cond)
    for i in range(len(y)):
        def f(v, i=i):
            yn, ctx = model.normalize(x0_t[i:i + 1], v[None],
                                      None if c_t is None else c_t[i:i + 1])
            return model.forward_map(yn, ctx)[0]

        jac = torch.autograd.functional.jacobian(f, y_t[i])
        z = f(y_t[i])
        want = (-0.5 * (z * z).sum() - 0.5 * model.dim * np.log(2 * np.pi)
                + torch.linalg.slogdet(jac)[1])
        np.testing.assert_allclose(got[i], float(want.detach()), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dim", DIMS)
def test_log_prob_matches_autograd_jacobian_slogdet(arch, dim):
    x0, y, _ = inputs(dim)
    assert_log_prob_is_autograd_slogdet(make(arch, dim), x0, y)


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip(arch, tmp_path):
    model = make(arch, 2, cond_dim=1)
    x0, y, cond = inputs(2, cond_dim=1)
    model.save(tmp_path / "m", extra={"note": "x"})
    loaded = load_model(tmp_path / "m", device="cpu")
    assert loaded.config == model.config
    assert not loaded.training
    torch.testing.assert_close(loaded.log_prob(y, x0, cond), model.log_prob(y, x0, cond),
                               rtol=0, atol=0)
    a = model.sample(x0, cond, generator=torch.Generator().manual_seed(3))
    b = loaded.sample(x0, cond, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_eval_mode_is_deterministic(arch):
    model = make(arch, 3)
    x0, y, _ = inputs(3)
    torch.testing.assert_close(model.log_prob(y, x0), model.log_prob(y, x0), rtol=0, atol=0)
    s1 = model.sample(x0, generator=torch.Generator().manual_seed(9))
    s2 = model.sample(x0, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)
    assert not torch.equal(s1, model.sample(x0, generator=torch.Generator().manual_seed(10)))


def test_mixture_log_prob_is_log_mean_of_densities():
    model = make("prnf", 2)
    x0, y, _ = inputs(2, n=5)
    got = model.mixture_log_prob(y[:2], x0, block=3)  # small block: exercises the blocking
    dens = torch.stack([model.log_prob(np.repeat(y[i:i + 1], 5, 0), x0) for i in range(2)])
    want = torch.logsumexp(dens, dim=1) - np.log(5)
    torch.testing.assert_close(got, want)
    # each x0's share of the mixture, summed over the rows of y (the exact KL's x0 error)
    again, shares = model.mixture_log_prob(y[:2], x0, block=3, with_shares=True)
    torch.testing.assert_close(again, want)
    torch.testing.assert_close(shares, torch.softmax(dens.double(), dim=1).sum(dim=0))


def test_prnf_reversibility_error_is_the_round_trip():
    model = make("prnf", 2)
    x0, y, _ = inputs(2)
    yn, ctx = model.normalize(torch.as_tensor(x0), torch.as_tensor(y), None)
    with torch.no_grad():
        want = ((model.inverse_map(model.forward_map(yn, ctx), ctx) - yn) ** 2).sum(1)
    torch.testing.assert_close(model.reversibility_error(y, x0), want)
    assert float(want.mean()) > 0  # an untrained PRNF is not reversible


def test_nsf_is_exactly_invertible():
    model = make("nsf", 3)
    x0, _, _ = inputs(3)
    gen = torch.Generator().manual_seed(0)
    y = model.sample(x0, generator=gen)
    yn, ctx = model.normalize(torch.as_tensor(x0), y, None)
    z = model.forward_map(yn, ctx)
    gen = torch.Generator().manual_seed(0)
    torch.testing.assert_close(z, torch.randn(7, 3, generator=gen, dtype=torch.float64),
                               atol=1e-6, rtol=1e-6)


def test_paper_preset():
    cfg = ModelConfig(dim=3, preset="paper")
    assert (cfg.hidden_width, cfg.hidden_layers, cfg.activation) == (512, 2, "tanh")
    cfg = ModelConfig(dim=3, preset="paper", hidden_width=7)  # an explicit field wins
    assert (cfg.hidden_width, cfg.hidden_layers, cfg.activation) == (7, 2, "tanh")


@pytest.mark.parametrize("activation", ["tanh", "silu", "softplus", "gelu", "elu"])
def test_every_activation_has_an_exact_jacobian(activation):
    torch.manual_seed(0)
    model = build_model(ModelConfig(dim=2, hidden_width=8, hidden_layers=3,
                                    activation=activation, dtype="float64"))
    inp = torch.randn(4, 4, dtype=torch.float64)  # [x0 (2), y (2)]
    _, jac = model.forward_net.forward_with_jacobian(inp)
    for i in range(4):
        def f(v, i=i):
            return model.forward_net(torch.cat([inp[i, :2], v])[None])[0]

        torch.testing.assert_close(jac[i], torch.autograd.functional.jacobian(f, inp[i, 2:]))


@pytest.mark.parametrize("arch", ARCHS)
def test_bad_inputs_are_refused_with_the_field_named(arch):
    model = make(arch, 2)
    x0, y, _ = inputs(2)
    with pytest.raises(ConfigError, match=r"x0: must have shape \(n, 2\), got \(7, 3\)"):
        model.log_prob(y, np.zeros((7, 3)))
    with pytest.raises(ConfigError, match=r"y: must have shape"):
        model.log_prob(np.zeros((7, 2, 1)), x0)
    with pytest.raises(ConfigError, match="y: needs one row per x0 row"):
        model.log_prob(y[:3], x0)
    bad = x0.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ConfigError, match="x0: contains NaN or inf"):
        model.sample(bad)
    with pytest.raises(ConfigError, match="real"):
        model.sample(x0.astype(complex))
    with pytest.raises(ConfigError, match="real"):
        model.sample(np.array([["a", "b"]]))
    with pytest.raises(ConfigError, match="cond: this model takes no condition"):
        model.sample(x0, cond=np.zeros((7, 1)))
    with pytest.raises(ConfigError, match="initial: spec has dimension 1, model has 2"):
        model.sample_initial({"kind": "point_mass", "point": [0.0]}, 3)
    untrained = build_model(ModelConfig(architecture=arch, dim=2))
    with pytest.raises(RuntimeError, match="not trained"):
        untrained.sample(x0)
    with pytest.raises(ConfigError, match=r"model\.dim"):
        build_model(ModelConfig(architecture=arch))


# -- a declared periodic symmetry (SDE.x0_period) ------------------------------------------------
PERIOD = [2 * np.pi, None]  # periodic in the first coordinate only: both feature kinds at once


def make_periodic(arch: str):
    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture=arch, dim=2, hidden_width=24, transforms=2,
                                    dtype="float64", x0_period=PERIOD))
    rng = np.random.default_rng(0)
    x0 = rng.uniform(0, 2 * np.pi, (64, 2))
    model.fit_normalization(x0, x0 + rng.normal(0.5, 0.3, (64, 2)))
    return model.eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_periodic_symmetry_is_exact_and_keeps_the_contract(arch, tmp_path):
    """Shifting x0 and y by a period leaves q(y | x0) unchanged and shifts samples by it; the
    log-density still equals the autograd slogdet form; save/load round-trips."""
    model = make_periodic(arch)
    assert model.context_dim == 3  # sin, cos of the periodic coordinate + the other one
    x0, y, _ = inputs(2)
    shift = np.array([2 * np.pi, 0.0])
    torch.testing.assert_close(model.log_prob(y + 3 * shift, x0 + 3 * shift),
                               model.log_prob(y, x0), rtol=0, atol=1e-9)
    a = model.sample(x0, generator=torch.Generator().manual_seed(1))
    b = model.sample(x0 + shift, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(b - a, torch.as_tensor(shift).expand(7, 2), rtol=0, atol=1e-9)
    assert_log_prob_is_autograd_slogdet(model, x0, y)
    model.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m", device="cpu")
    assert loaded.config.x0_period == PERIOD
    torch.testing.assert_close(loaded.log_prob(y, x0), model.log_prob(y, x0), rtol=0, atol=0)


def test_x0_period_comes_from_the_problem_and_is_checked():
    from prnf_core.problems import get_problem

    wanted = ModelConfig(x0_period="problem")
    assert wanted.for_problem(get_problem("abc3d")).x0_period == [2 * np.pi] * 3
    assert wanted.for_problem(get_problem("ou")).x0_period is None  # declares none
    # built without a problem (the library API), nothing is declared: no symmetry
    assert build_model(ModelConfig(dim=3)).config.x0_period is None
    with pytest.raises(ConfigError, match=r"model\.x0_period: needs 3 entries"):
        build_model(ModelConfig(dim=3, x0_period=[1.0]))
    with pytest.raises(ConfigError, match=r"model\.x0_period: periods must be > 0"):
        build_model(ModelConfig(dim=1, x0_period=[-1.0]))


@pytest.mark.parametrize("dim", DIMS)
def test_residual_prnf_keeps_the_contract(dim, tmp_path):
    """f = y + r(x0, y), g = z + s(x0, z): the exact log-det (identity added to the propagated
    Jacobian) equals the autograd slogdet form; gradients reach every parameter; round trip."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(dim=dim, hidden_width=24, dtype="float64", residual=True))
    rng = np.random.default_rng(0)
    model.fit_normalization(rng.normal(1.0, 2.0, (64, dim)), rng.normal(-1.0, 0.5, (64, dim)))
    x0, y, _ = inputs(dim)
    assert_log_prob_is_autograd_slogdet(model, x0, y)
    yn, ctx = model.normalize(torch.as_tensor(x0), torch.as_tensor(y), None)
    loss, _ = model.train().training_loss(yn, ctx, lam=100.0)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval().save(tmp_path / "m")
    loaded = load_model(tmp_path / "m", device="cpu")
    assert loaded.config.residual
    torch.testing.assert_close(loaded.log_prob(y, x0), model.log_prob(y, x0), rtol=0, atol=0)


# -- a conditioning domain (one model for t and SDE parameters in a box) ------------------------
BOXED = Conditioning(time=(0.0, 1.0), params={"mu": (-1.0, 1.0), "sigma": (0.1, 0.5)})


def conditions(n: int = 7):
    return {"t": np.linspace(0.0, 1.0, n),
            "params": {"mu": np.linspace(1.0, -1.0, n), "sigma": 0.3}}


@pytest.mark.parametrize("time_scaling", [True, False])
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dim", DIMS)
def test_conditioned_model_keeps_the_contract(arch, dim, time_scaling, tmp_path):
    """With a conditioning: shapes (t=/params=), gradients reach every parameter, the exact
    log-density equals the autograd slogdet form (with time scaling: through a spread that
    changes with t), save/load round-trips the box."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(architecture=arch, dim=dim, hidden_width=24, transforms=2,
                                    dtype="float64", conditioning=BOXED,
                                    time_scaling=time_scaling))
    assert model.config.cond_dim == 3
    rng = np.random.default_rng(0)
    fit_cond = BOXED.features(64, t=rng.uniform(0.0, 1.0, 64),
                              params={"mu": rng.uniform(-1.0, 1.0, 64), "sigma": 0.3})
    fit_x0 = rng.normal(1.0, 2.0, (64, dim))
    spread = 0.1 + fit_cond[:, :1]  # the increments widen with t
    model.fit_normalization(fit_x0, fit_x0 + rng.normal(-1.0, 0.5, (64, dim)) * spread, fit_cond)
    model.eval()
    scale = model._target_scale(torch.tensor([[0.0, 0.0, 0.3], [1.0, 0.0, 0.3]]))[1]
    scale = torch.broadcast_to(scale, (2, dim))  # rows t = 0 and t = 1
    assert bool((scale[1] > 2 * scale[0]).all()) == time_scaling, scale
    x0, y, _ = inputs(dim)
    cond = BOXED.features(7, **conditions())
    assert model.log_prob(y, x0, **conditions()).shape == (7,)
    assert model.sample(x0, **conditions()).shape == (7, dim)
    assert model.mixture_log_prob(y[:3], x0, t=0.5, params={"mu": 0.0, "sigma": 0.2}).shape == (3,)
    assert_log_prob_is_autograd_slogdet(model, x0, y, cond)
    yn, ctx = model.normalize(torch.as_tensor(x0), torch.as_tensor(y), torch.as_tensor(cond))
    assert ctx.shape[1] == model.context_dim == dim + 3
    assert float(ctx[:, dim:].abs().max()) <= 1.0  # the box maps to [-1, 1]
    loss, _ = model.train().training_loss(yn, ctx, lam=100.0)
    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    model.eval().save(tmp_path / "m")
    loaded = load_model(tmp_path / "m", device="cpu")
    assert loaded.config == model.config and loaded.config.conditioning == BOXED
    torch.testing.assert_close(loaded.log_prob(y, x0, **conditions()),
                               model.log_prob(y, x0, **conditions()), rtol=0, atol=0)
    a = model.sample(x0, generator=torch.Generator().manual_seed(3), **conditions())
    b = loaded.sample(x0, generator=torch.Generator().manual_seed(3), **conditions())
    torch.testing.assert_close(a, b, rtol=0, atol=0)
