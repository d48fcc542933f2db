"""``simulate(..., compile=True)``: the compiled Euler–Maruyama step.

Most tests run the step function the compiler would trace *uncompiled* (``torch.compile``
replaced by the identity), which checks its logic for every update kind cheaply; the tests that
compile for real (seconds each, cold) check that inductor's kernel agrees with the uncompiled path
to rounding, and the fast ones the options, errors, fallback and dataset ids.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import warnings

import numpy as np
import pytest
import torch

from prnf_core import SDE, Boundary, ConfigError, DatasetConfig, get_problem, simulate
from prnf_core.dataset_config import simulate_chunk_arrays
from prnf_core.errors import CompileError
from prnf_core.problems import list_problems

sim = importlib.import_module("prnf_core.simulate")  # the module (the package exports the function)


@pytest.fixture(autouse=True)
def fresh_compile_cache():
    """Compiled steps are cached per process: no test sees another's (possibly fake) ones."""
    sim._COMPILED_STEPS.clear()
    yield
    sim._COMPILED_STEPS.clear()


@pytest.fixture
def traced_uncompiled(monkeypatch):
    """``torch.compile`` as the identity: the compiled path runs its step function eagerly."""
    calls = []

    def identity(fn, **kwargs):
        calls.append(kwargs)
        return fn

    monkeypatch.setattr(torch, "compile", identity)
    return calls


def training_x0(sde: SDE, n: int, seed: int = 0) -> np.ndarray:
    low, high = (np.asarray(v) for v in sde.domain)
    return np.random.default_rng(seed).uniform(low, high, size=(n, sde.dim))


def general_sde() -> SDE:
    """2-D, general noise with m = 3 and a time-dependent drift written with torch ops of t."""

    def drift(x, t, p):
        return -x * (1.0 + 0.5 * torch.sin(torch.as_tensor(t, dtype=x.dtype) * 3.0))

    def diffusion(x, t, p):
        base = torch.tensor([[0.3, 0.1, 0.0], [0.0, 0.2, 0.4]], dtype=x.dtype)
        return base * (1.0 + 0.1 * x[:, :1, None] ** 2)

    return SDE(name="general", dim=2, drift=drift, diffusion=diffusion, noise="general",
               noise_dim=3, domain=([-1, -1], [1, 1]), t_end=0.1, dt=0.01,
               boundaries=(Boundary("periodic", -2.0, 2.0), Boundary("reflect", low=-1.5)))


CASES = {
    **{name: (lambda name=name: get_problem(name), None) for name in sorted(list_problems())},
    "ou_m3": (lambda: get_problem("ou", A=[[1.0, 0.8], [-0.3, 0.6]], mu=[0.5, -0.2],
                                  Sigma=[[0.5, 0.2, 0.0], [0.1, 0.4, 0.3]]), None),
    "runaway2d_varying": (lambda: get_problem("runaway2d"),
                          lambda n: {"E0": np.linspace(2e-4, 1e-3, n), "Z": np.linspace(1, 3, n)}),
    "bm1d_varying": (lambda: get_problem("bm1d"),
                     lambda n: {"mu": np.linspace(-1, 1, n), "sigma": np.linspace(0.5, 2, n)}),
    "general": (general_sde, None),
}


# -- the step function, traced uncompiled -------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_step_function_matches_the_uncompiled_loop(case, dtype, traced_uncompiled):
    make, values = CASES[case]
    sde = make()
    n = 300
    x0 = training_x0(sde, n)
    kwargs = dict(t_end=8 * sde.dt, seed=3, dtype=dtype, device="cpu",
                  save_times=[0.0, 4 * sde.dt, 8 * sde.dt],
                  param_values=None if values is None else values(n))
    plain = simulate(sde, x0, **kwargs)
    traced = simulate(sde, x0, compile=True, **kwargs)
    assert traced_uncompiled and {k: traced_uncompiled[0][k] for k in ("dynamic", "fullgraph")
                                  } == {"dynamic": False, "fullgraph": True}
    assert plain.compile_seconds is None and traced.compile_seconds is not None
    tol = dict(rtol=1e-11, atol=1e-11) if dtype == "float64" else dict(rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(traced.xT, plain.xT, **tol)
    np.testing.assert_allclose(traced.snapshots, plain.snapshots, **tol)
    assert traced.xT.dtype == plain.xT.dtype


def test_the_compiled_path_keeps_the_boundaries(traced_uncompiled):
    sde = get_problem("runaway2d")
    rng = np.random.default_rng(0)
    x0 = np.column_stack([rng.uniform(0.5, 0.6, 400), rng.choice([-0.9999, 0.9999], 400)])
    xT = simulate(sde, x0, t_end=50 * sde.dt, seed=3, compile=True).xT
    assert np.all(xT[:, 0] >= 0.5) and np.all(np.abs(xT[:, 1]) <= 1.0)


@pytest.mark.parametrize("rule", [
    Boundary("clamp", low=0.5), Boundary("clamp", high=1.0), Boundary("clamp", -1.0, 2.0),
    Boundary("reflect", low=0.5), Boundary("reflect", high=1.0), Boundary("reflect", -1.0, 1.0),
    Boundary("periodic", 0.0, 2 * math.pi), Boundary("periodic", -1.0, 3.0),
], ids=repr)
def test_boundary_apply_is_apply_in_place_up_to_rounding(rule):
    x = torch.cat([torch.linspace(-40.0, 40.0, 4001, dtype=torch.float64),
                   torch.tensor([-1.0, 0.5, 1.0, 2.0, 3.0, 2 * math.pi, -1e-300, 1e-300,
                                 -1e-17, 2 * math.pi - 1e-16], dtype=torch.float64)])
    expected = x.clone()
    rule.apply_(expected)
    got = rule.apply(x)
    assert got.shape == x.shape and torch.equal(x, x.clone())  # input untouched
    period = None if rule.kind != "periodic" else rule.high - rule.low
    diff = (got - expected).abs()
    if period is not None:  # low and high are the same point of the circle
        diff = torch.minimum(diff, (diff - period).abs())
    assert float(diff.max()) < 1e-12
    if rule.low is not None:
        assert float(got.min()) >= rule.low
    if rule.high is not None:
        assert float(got.max()) <= rule.high
    if rule.kind == "periodic":
        assert float(got.max()) < rule.high


# -- options and errors ---------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["yes", 1, 0.0, "True"])
def test_bad_compile_values_are_refused_naming_the_field(value):
    sde = get_problem("bm1d")
    with pytest.raises(ConfigError, match=r"^compile: must be True, False or None"):
        simulate(sde, np.zeros((4, 1)), compile=value)


def test_sde_declares_compile_and_its_coefficient_form():
    sde = get_problem("bm1d")
    fields = {f: getattr(sde, f) for f in ("name", "dim", "drift", "diffusion", "noise", "domain")}
    with pytest.raises(ValueError, match=r"SDE.compile must be True or False, got 'yes'"):
        SDE(**fields, compile="yes")
    with pytest.raises(ValueError, match=r"SDE.compiled_drift_and_diffusion must be a function"):
        SDE(**fields, compiled_drift_and_diffusion=3)
    assert SDE(**fields).compile is False
    assert all(get_problem(name).compile is False for name in list_problems())


def test_the_problem_default_decides_unless_the_call_does(traced_uncompiled):
    sde = dataclasses.replace(get_problem("bm1d"), compile=True)
    x0 = np.zeros((10, 1))
    assert simulate(sde, x0).compile_seconds is not None  # compile=None: the SDE's True
    assert simulate(sde, x0, compile=False).compile_seconds is None
    assert simulate(get_problem("bm1d"), x0).compile_seconds is None


def failing_compile(monkeypatch):
    def compile_(fn, **kwargs):
        def fails(*args):
            raise RuntimeError("Compiler: cc not found\nsecond line")
        return fails

    monkeypatch.setattr(torch, "compile", compile_)


def test_a_failed_compilation_warns_and_gives_the_uncompiled_results(monkeypatch):
    failing_compile(monkeypatch)
    sde = get_problem("runaway2d")
    x0 = training_x0(sde, 200)
    plain = simulate(sde, x0, t_end=5 * sde.dt, seed=2)
    with pytest.warns(RuntimeWarning, match=r"compile: torch.compile failed for problem "
                                            r"'runaway2d' \(RuntimeError: Compiler: cc not "
                                            r"found\); simulating uncompiled"):
        fallback = simulate(sde, x0, t_end=5 * sde.dt, seed=2, compile=True)
    assert fallback.compile_seconds is None
    assert np.array_equal(fallback.xT, plain.xT)  # no normal drawn before the fallback
    with pytest.raises(CompileError, match=r"^compile: torch.compile failed for problem "
                                           r"'runaway2d' \(RuntimeError"):
        simulate(sde, x0, t_end=5 * sde.dt, seed=2, compile=True, compile_fallback=False)
    assert not sim._COMPILED_STEPS  # a failure is not cached


def test_compiled_steps_are_cached_per_configuration(traced_uncompiled):
    sde = get_problem("bm1d")
    for n in (10, 10, 20):
        simulate(sde, np.zeros((n, 1)), compile=True)
    simulate(sde, np.zeros((10, 1)), compile=True, dtype="float32")
    simulate(get_problem("bm1d", mu=2.0), np.zeros((10, 1)), compile=True)
    assert len(traced_uncompiled) == len(sim._COMPILED_STEPS) == 4
    names = {step.fn.__code__.co_name for step in sim._COMPILED_STEPS.values()}
    assert len(names) == 4  # a code object (and so a torch.compile cache) of its own each
    for i in range(sim._COMPILED_MAX + 3):
        simulate(sde, np.zeros((30 + i, 1)), compile=True)
    assert len(sim._COMPILED_STEPS) == sim._COMPILED_MAX


# -- datasets ------------------------------------------------------------------------------------
def test_dataset_ids_cover_compile_and_stay_unchanged_without_it(traced_uncompiled):
    base = dict(problem="bm1d", n_particles=40, chunk_size=20)
    plain = DatasetConfig(**base)
    assert DatasetConfig(**base, compile=False).dataset_id() == plain.dataset_id()
    assert DatasetConfig(**base, compile=None).dataset_id() == plain.dataset_id()
    assert "compile" not in plain.resolved()
    compiled = DatasetConfig(**base, compile=True)
    assert compiled.resolved()["compile"] is True and compiled.compiled
    assert compiled.dataset_id() != plain.dataset_id()
    assert compiled.family_id() != plain.family_id()
    x0, xT, _, _ = simulate_chunk_arrays(compiled.on_device("cpu"), 1, device="cpu")
    x0p, xTp, _, _ = simulate_chunk_arrays(plain.on_device("cpu"), 1, device="cpu")
    assert np.array_equal(x0, x0p)
    np.testing.assert_allclose(xT, xTp, rtol=1e-12, atol=1e-12)


def test_a_dataset_chunk_that_cannot_compile_fails(monkeypatch):
    failing_compile(monkeypatch)
    config = DatasetConfig(problem="bm1d", n_particles=40, chunk_size=20, compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no fallback warning either
        with pytest.raises(CompileError, match=r"^compile: "):
            simulate_chunk_arrays(config.on_device("cpu"), 0, device="cpu")


# -- torch.compile for real --------------------------------------------------------------------
def test_a_real_compilation_agrees_with_the_uncompiled_path():
    sde = get_problem("bm1d")  # the cheapest kernel to compile (about a second)
    x0 = training_x0(sde, 500)
    plain = simulate(sde, x0, seed=4)
    first = simulate(sde, x0, seed=4, compile=True)
    again = simulate(sde, x0, seed=4, compile=True)
    if first.compile_seconds is None:
        pytest.skip("torch.compile is unavailable here (no C++ compiler?)")
    np.testing.assert_allclose(first.xT, plain.xT, rtol=1e-12, atol=1e-12)
    assert np.array_equal(first.xT, again.xT)  # deterministic
    assert again.compile_seconds < first.compile_seconds


@pytest.mark.slow  # a cold compile of each kernel takes seconds (runaway2d ~10 s)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_compiled_kernels_agree_with_the_uncompiled_path(case, dtype):
    make, values = CASES[case]
    sde = make()
    n = 1000
    x0 = training_x0(sde, n)
    kwargs = dict(t_end=20 * sde.dt, seed=5, dtype=dtype, device="cpu", save_times=[0.0],
                  param_values=None if values is None else values(n))
    plain = simulate(sde, x0, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback would fail the test
        compiled = simulate(sde, x0, compile=True, **kwargs)
    assert compiled.compile_seconds is not None
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == "float64" else dict(rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(compiled.xT, plain.xT, **tol)
    assert np.array_equal(compiled.snapshots[0], plain.snapshots[0])


@pytest.mark.slow
def test_coefficients_that_cannot_be_traced_fall_back_with_a_warning():
    base = get_problem("bm1d")

    def drift(x, t, p):  # math.sin needs a Python float: untraceable with t a tensor
        return torch.full_like(x, math.sin(float(t)))

    sde = SDE(name="untraceable", dim=1, drift=drift, diffusion=base.diffusion,
              noise="additive", params=base.params, domain=base.domain, dt=0.01, t_end=0.05)
    x0 = np.zeros((50, 1))
    with pytest.warns(RuntimeWarning, match=r"compile: torch.compile failed for problem "
                                            r"'untraceable' \(the compiled step recompiles when "
                                            r"t changes: .*math.sin"):
        out = simulate(sde, x0, compile=True)
    assert np.array_equal(out.xT, simulate(sde, x0).xT)
