"""Euler–Maruyama: weak order on the exact OU transition, exactness for bm1d, reproducibility,
snapshots, input validation and non-finite states."""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest
import torch
from scipy import stats

from prnf_core import SDE, ConfigError, NonFiniteStateError, get_problem, simulate

K_SE = 4.5  # standard errors allowed in the statistical checks of this module

# --------------------------------------------------------------------------------------------
# (a) Weak first order of Euler–Maruyama on the Ornstein–Uhlenbeck process
# --------------------------------------------------------------------------------------------

OU_X0 = np.array([1.5, -1.0])
OU_CASES = {
    "default": dict(dim=2),
    # non-normal drift matrix, m = 3 > d (the (d, m) additive path), non-zero mean
    "nonnormal_m3": dict(dim=2, A=[[1.0, 0.8], [-0.3, 0.6]], mu=[0.5, -0.2],
                         Sigma=[[0.5, 0.2, 0.0], [0.1, 0.4, 0.3]]),
}


def exact_em_moments(sde: SDE, x0: np.ndarray, t_end: float, dt: float):
    """Mean and covariance of the Euler–Maruyama chain for linear OU, exactly:
    m_n = μ + (I - AΔt)^n (x0 - μ),  C_{k+1} = (I - AΔt) C_k (I - AΔt)ᵀ + ΣΣᵀ Δt."""
    a, mu, s = (np.asarray(sde.params[k], dtype=float) for k in ("A", "mu", "Sigma"))
    steps = round(t_end / dt)
    b = np.eye(len(mu)) - a * dt
    mean = mu + np.linalg.matrix_power(b, steps) @ (x0 - mu)
    cov = np.zeros((len(mu), len(mu)))
    for _ in range(steps):
        cov = b @ cov @ b.T + s @ s.T * dt
    return mean, cov


class Run:
    """Sample moments of X_T with their standard errors, and the exact moments."""

    def __init__(self, sde: SDE, dt: float, n: int, seed: int, t_end: float = 1.0):
        x = simulate(sde, np.tile(OU_X0, (n, 1)), t_end=t_end, dt=dt, seed=seed).xT
        self.n, self.dt = n, dt
        self.mean = x.mean(axis=0)
        dev = x - self.mean
        d = x.shape[1]
        prods = dev[:, :, None] * dev[:, None, :]  # (n, d, d)
        self.cov = prods.mean(axis=0) * n / (n - 1)
        self.se_mean = x.std(axis=0, ddof=1) / math.sqrt(n)
        self.se_cov = prods.reshape(n, d * d).std(axis=0, ddof=1).reshape(d, d) / math.sqrt(n)
        tr = (dev**2).sum(axis=1)  # for the trace of the covariance
        self.se_trace = tr.std(ddof=1) / math.sqrt(n)
        exact_mean, self.exact_cov = sde.transition_mean_cov(OU_X0[None], t_end)
        self.exact_mean = exact_mean[0]
        self.em_mean, self.em_cov = exact_em_moments(sde, OU_X0, t_end, dt)
        # Scalar error measures: the mean error projected on the direction of the EM mean bias,
        # and the error of the trace of the covariance.
        bias = self.em_mean - self.exact_mean
        self.u = bias / np.linalg.norm(bias)
        self.err_mean = float(self.u @ (self.mean - self.exact_mean))
        self.se_err_mean = float(np.sqrt(self.u @ self.cov @ self.u / n))
        self.bias_mean = float(self.u @ bias)
        self.err_trace = float(np.trace(self.cov - self.exact_cov))
        self.bias_trace = float(np.trace(self.em_cov - self.exact_cov))


def ou_runs(case: str, dts: tuple[float, ...], n: int, seed0: int) -> list[Run]:
    sde = get_problem("ou", **OU_CASES[case])
    # A separate seed per step size: the measured errors are independent across dt.
    return [Run(sde, dt, n, seed0 + i) for i, dt in enumerate(dts)]


@pytest.fixture(scope="module")
def ou_runs_default():
    # n = 1e6 resolves the error ratios well enough to tell order 1 from order 1/2 (see
    # check_ratios); about 6 s.
    return ou_runs("default", (0.2, 0.1, 0.05), n=1_000_000, seed0=2024)


def check_against_em_bias(runs: list[Run]) -> None:
    for r in runs:
        assert np.all(np.abs(r.mean - r.em_mean) <= K_SE * r.se_mean), (r.dt, r.mean, r.em_mean)
        assert np.all(np.abs(r.cov - r.em_cov) <= K_SE * r.se_cov), (r.dt, r.cov, r.em_cov)
        # The bias is resolved by the sample: it is what is being measured, not noise.
        assert abs(r.bias_mean) > 2 * K_SE * r.se_err_mean
        assert abs(r.bias_trace) > 2 * K_SE * r.se_trace


def check_ratios(runs: list[Run]) -> None:
    """Error(Δt) / Error(Δt/2) ≈ 2. Tolerance: k standard errors of the ratio (delta method,
    independent runs) plus the deterministic O(Δt) deviation of the exact EM bias ratio."""
    for coarse, fine in itertools.pairwise(runs):
        for err, se, bias in (("err_mean", "se_err_mean", "bias_mean"),
                              ("err_trace", "se_trace", "bias_trace")):
            e1, e2 = getattr(coarse, err), getattr(fine, err)
            s1, s2 = getattr(coarse, se), getattr(fine, se)
            ratio = e1 / e2
            se_ratio = abs(ratio) * math.hypot(s1 / e1, s2 / e2)
            exact_ratio = getattr(coarse, bias) / getattr(fine, bias)
            # First order: the exact-bias ratio tends to 2 with a correction of order Δt.
            assert abs(exact_ratio - 2) <= 2 * coarse.dt, (err, exact_ratio)
            tol = K_SE * se_ratio + abs(exact_ratio - 2)
            assert abs(ratio - 2) <= tol, (err, coarse.dt, ratio, tol)
            # And the tolerance is tight enough to tell first order (ratio 2) from order 1/2
            # (ratio √2) and order 2 (ratio 4): the sample size is adequate for the claim.
            assert tol < 2 - math.sqrt(2), (err, tol)


def test_ou_em_moments_match_exact_em_bias(ou_runs_default):
    check_against_em_bias(ou_runs_default)


def test_ou_em_weak_first_order(ou_runs_default):
    check_ratios(ou_runs_default)


def test_ou_em_moments_match_exact_em_bias_general_sigma():
    """Non-normal A, μ ≠ 0 and a (2, 3) Σ (the additive (d, m) path of the simulator)."""
    check_against_em_bias(ou_runs("nonnormal_m3", (0.2, 0.1, 0.05), n=400_000, seed0=99))


@pytest.mark.slow
def test_ou_em_weak_first_order_more_steps():
    """Four step sizes, down to Δt = 0.025 (about 12 s)."""
    runs = ou_runs("default", (0.2, 0.1, 0.05, 0.025), n=2_000_000, seed0=77)
    check_against_em_bias(runs)
    check_ratios(runs)


def test_em_moments_recursion_reaches_exact_as_dt_shrinks():
    """Deterministic check of the reference itself: the EM moments converge to the Van Loan
    transition at first order."""
    sde = get_problem("ou", **OU_CASES["nonnormal_m3"])
    mean, cov = sde.transition_mean_cov(OU_X0[None], 1.0)
    errs = []
    for dt in (0.01, 0.005, 0.0025):
        m, c = exact_em_moments(sde, OU_X0, 1.0, dt)
        errs.append(max(np.abs(m - mean[0]).max(), np.abs(c - cov).max()))
    assert errs[0] < 0.02
    assert errs[0] / errs[1] == pytest.approx(2, abs=0.05)
    assert errs[1] / errs[2] == pytest.approx(2, abs=0.05)


# --------------------------------------------------------------------------------------------
# (b) bm1d: Euler–Maruyama is exact in law
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dt", [0.5, 0.01])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bm1d_exact_in_law(dt, dtype):
    sde = get_problem("bm1d", mu=0.7, sigma=1.3)
    n = 20_000
    x0 = np.random.default_rng(0).uniform(-2, 2, size=(n, 1))
    xT = simulate(sde, x0, t_end=0.5, dt=dt, seed=8, dtype=dtype).xT
    mean, cov = sde.transition_mean_cov(x0, 0.5)
    z = (xT[:, 0] - mean[:, 0]) / math.sqrt(cov[0, 0])
    assert stats.kstest(z, "norm").pvalue > 1e-3


def test_bm1d_ks_detects_wrong_variance():
    """The KS check above has power: the same particles judged against a 10% wider law fail."""
    sde = get_problem("bm1d")
    n = 20_000
    xT = simulate(sde, np.zeros((n, 1)), seed=8).xT[:, 0]
    assert stats.kstest(xT, stats.norm(0.5, math.sqrt(0.5)).cdf).pvalue > 1e-3
    assert stats.kstest(xT, stats.norm(0.5, 1.1 * math.sqrt(0.5)).cdf).pvalue < 1e-3


# --------------------------------------------------------------------------------------------
# (c) Reproducibility, dtype and snapshots
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ou2():
    return get_problem("ou", dim=2)


X0_SMALL = np.random.default_rng(42).uniform(-2, 2, size=(300, 2))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_same_seed_is_bit_identical(ou2, dtype):
    a = simulate(ou2, X0_SMALL, t_end=0.2, seed=123, dtype=dtype).xT
    b = simulate(ou2, X0_SMALL, t_end=0.2, seed=123, dtype=dtype).xT
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_different_seed_differs(ou2, dtype):
    a = simulate(ou2, X0_SMALL, t_end=0.2, seed=123, dtype=dtype).xT
    b = simulate(ou2, X0_SMALL, t_end=0.2, seed=124, dtype=dtype).xT
    assert np.all(a != b)


def test_seed_sequence_seeds(ou2):
    a = simulate(ou2, X0_SMALL, t_end=0.1, seed=np.random.SeedSequence(5)).xT
    b = simulate(ou2, X0_SMALL, t_end=0.1, seed=np.random.SeedSequence(5)).xT
    c = simulate(ou2, X0_SMALL, t_end=0.1, seed=np.random.SeedSequence(5).spawn(1)[0]).xT
    np.testing.assert_array_equal(a, b)
    assert np.all(a != c)


@pytest.mark.parametrize("dtype, np_dtype", [("float64", np.float64), ("float32", np.float32)])
def test_output_dtype(ou2, dtype, np_dtype):
    out = simulate(ou2, X0_SMALL, t_end=0.1, seed=1, dtype=dtype, save_times=[0.0, 0.1])
    assert out.xT.dtype == np_dtype and out.snapshots.dtype == np_dtype
    assert out.xT.flags["C_CONTIGUOUS"]


def test_float32_close_to_float64_in_law(ou2):
    """float32 uses another generator, so compare distributions, not paths."""
    n = 50_000
    x0 = np.tile(OU_X0, (n, 1))
    a = simulate(ou2, x0, t_end=0.5, dt=0.05, seed=1, dtype="float32").xT.astype(float)
    b = simulate(ou2, x0, t_end=0.5, dt=0.05, seed=2, dtype="float64").xT
    se = np.sqrt(a.var(axis=0, ddof=1) / n + b.var(axis=0, ddof=1) / n)
    assert np.all(np.abs(a.mean(axis=0) - b.mean(axis=0)) <= K_SE * se)


def test_save_times_snapshots(ou2):
    t_end, dt = 0.3, 0.01
    times = [0.0, 0.1, 0.25, 0.3]
    out = simulate(ou2, X0_SMALL, t_end=t_end, dt=dt, seed=9, save_times=times)
    assert out.snapshots.shape == (4, *X0_SMALL.shape)
    np.testing.assert_array_equal(out.save_times, times)
    np.testing.assert_array_equal(out.snapshots[0], X0_SMALL)
    np.testing.assert_array_equal(out.snapshots[-1], out.xT)
    # Snapshot at t equals the end state of a run stopped at t: the noise stream is one
    # function of the seed, consumed step by step.
    for k in (1, 2):
        short = simulate(ou2, X0_SMALL, t_end=times[k], dt=dt, seed=9).xT
        np.testing.assert_array_equal(out.snapshots[k], short)


def test_no_save_times_means_no_snapshots(ou2):
    out = simulate(ou2, X0_SMALL, t_end=0.1, seed=1)
    assert out.snapshots is None and out.save_times is None


def test_integer_x0_is_accepted(ou2):
    x0 = np.array([[1, 0], [0, 1]])
    a = simulate(ou2, x0, t_end=0.1, seed=1).xT
    b = simulate(ou2, x0.astype(float), t_end=0.1, seed=1).xT
    np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------------------------
# (d) Bad input: ConfigError naming the field
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dt=0.0), r"^dt: must be a finite number > 0"),
        (dict(dt=-0.01), r"^dt: must be a finite number > 0"),
        (dict(dt=math.nan), r"^dt: must be a finite number > 0"),
        (dict(dt=math.inf), r"^dt: must be a finite number > 0"),
        (dict(t_end=0.0), r"^t_end: must be a finite number > 0"),
        (dict(t_end=-1.0), r"^t_end: must be a finite number > 0"),
        (dict(t_end=math.inf), r"^t_end: must be a finite number > 0"),
        (dict(t_end=1.0, dt=0.3), r"^t_end: 1\.0 is not a whole multiple of dt=0\.3"),
        (dict(t_end=0.005, dt=0.01), r"^t_end: 0\.005 is not a whole multiple of dt=0\.01"),
        (dict(save_times=[-0.1]), r"^save_times: -0\.1 must lie in \[0, t_end=0\.5\]"),
        (dict(save_times=[0.6]), r"^save_times: 0\.6 must lie in \[0, t_end=0\.5\]"),
        (dict(save_times=[0.015]), r"^save_times: 0\.015 .* on the dt=0\.01 grid"),
        (dict(save_times=[0.3, 0.2]), r"^save_times: must be strictly increasing"),
        (dict(save_times=[0.2, 0.2]), r"^save_times: must be strictly increasing"),
        (dict(dtype="float16"), r"^dtype: must be one of \['float64', 'float32'\]"),
        (dict(dtype="double"), r"^dtype: must be one of"),
    ],
)
def test_bad_run_parameters(ou2, kwargs, match):
    base = dict(t_end=0.5, dt=0.01)
    with pytest.raises(ConfigError, match=match):
        simulate(ou2, X0_SMALL[:5], **{**base, **kwargs})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_save_times(ou2, bad):
    with pytest.raises(ConfigError, match=r"^save_times: "):
        simulate(ou2, X0_SMALL[:5], t_end=0.5, dt=0.01, save_times=[0.1, bad])


@pytest.mark.parametrize("kwargs", [dict(t_end=np.int64(1), dt=0.5),
                                    dict(t_end=1.0, dt=np.float32(0.5))])
def test_numpy_scalar_horizon_and_step(ou2, kwargs):
    out = simulate(ou2, X0_SMALL[:5], seed=0, **kwargs)
    ref = simulate(ou2, X0_SMALL[:5], seed=0, t_end=1.0, dt=0.5)
    np.testing.assert_array_equal(out.xT, ref.xT)


@pytest.mark.parametrize(
    "x0, match",
    [
        (np.zeros((5, 3)), r"^x0: must have shape \(n, 2\) for 'ou', got \(5, 3\)"),
        (np.zeros((5, 1)), r"^x0: must have shape \(n, 2\)"),
        (np.zeros(2), r"^x0: must have shape \(n, 2\) for 'ou', got \(2,\)"),
        (np.zeros((1, 5, 2)), r"^x0: must have shape \(n, 2\)"),
        (np.zeros((0, 2)), r"^x0: needs at least one particle"),
        (np.array([[0.0, 1.0], [np.nan, 0.0], [np.inf, np.nan]]), r"^x0: 2 rows are not finite"),
        (np.array([["a", "b"]]), r"^x0: must be a real array"),
        (np.array([[True, False]]), r"^x0: must be a real array"),
    ],
)
def test_bad_x0(ou2, x0, match):
    with pytest.raises(ConfigError, match=match):
        simulate(ou2, x0, t_end=0.1, dt=0.01)


def test_config_error_is_value_error(ou2):
    with pytest.raises(ValueError):
        simulate(ou2, X0_SMALL, dt=-1.0)


def test_defaults_come_from_the_sde():
    sde = get_problem("bm1d", t_end=0.3, dt=0.1)
    calls = []

    def counting_drift(x, t, p):
        calls.append(t)
        return torch.zeros_like(x)

    counted = SDE(name="count", dim=1, drift=counting_drift,
                  diffusion=lambda x, t, p: torch.ones(1, dtype=x.dtype), noise="additive",
                  t_end=sde.t_end, dt=sde.dt, domain=([0.0], [1.0]))
    simulate(counted, np.zeros((3, 1)))
    np.testing.assert_allclose(calls, [0.0, 0.1, 0.2])


# --------------------------------------------------------------------------------------------
# (e) Non-finite states
# --------------------------------------------------------------------------------------------


def blowup_sde(bad_value: float, first_bad_step: int, dt: float) -> SDE:
    """2-D; the drift of both coordinates is ``bad_value`` for particles with x_0 > 0 from step
    ``first_bad_step`` on (so bad particles and bad values differ in number)."""

    def drift(x, t, p):
        bad = (x[:, :1] > 0) & (t >= first_bad_step * dt - 1e-12)
        return torch.where(bad, torch.full_like(x, bad_value), torch.zeros_like(x))

    return SDE(name="blowup", dim=2, drift=drift, noise="additive",
               diffusion=lambda x, t, p: torch.zeros(2, dtype=x.dtype),
               domain=([0.0, 0.0], [1.0, 1.0]))


@pytest.mark.parametrize("bad_value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("first_bad_step", [0, 3])
def test_non_finite_state_names_step_and_count(bad_value, first_bad_step):
    dt, n = 0.01, 20
    x0 = np.column_stack([np.where(np.arange(n) < 7, 1.0, -1.0), np.zeros(n)])  # 7 go bad
    sde = blowup_sde(bad_value, first_bad_step, dt)
    with pytest.raises(NonFiniteStateError) as info:
        simulate(sde, x0, t_end=0.1, dt=dt)
    err = info.value
    step = first_bad_step + 1  # the state after the step that used the bad drift
    assert (err.problem, err.step, err.n_bad, err.n_total, err.chunk) == ("blowup", step, 7, n,
                                                                          None)
    assert err.t == pytest.approx(step * dt)
    assert f"step {step} " in str(err) and "7 of 20 particles" in str(err)
    assert isinstance(err, FloatingPointError)

    restored = pickle.loads(pickle.dumps(err))
    assert type(restored) is NonFiniteStateError
    assert (restored.problem, restored.step, restored.t, restored.n_bad, restored.n_total,
            restored.chunk) == (err.problem, err.step, err.t, err.n_bad, err.n_total, err.chunk)
    assert str(restored) == str(err)


def test_non_finite_error_in_chunk_pickles():
    err = NonFiniteStateError("p", 12, 0.12, 3, 100).in_chunk(4)
    restored = pickle.loads(pickle.dumps(err))
    assert restored.chunk == 4 and "chunk 4, step 12" in str(restored)
    assert str(restored) == str(err)


def test_large_but_finite_state_is_not_an_error():
    """The fast check sums the state; an overflowing sum of finite values must not raise."""
    sde = SDE(name="big", dim=1, drift=lambda x, t, p: torch.zeros_like(x), noise="additive",
              diffusion=lambda x, t, p: torch.zeros(1, dtype=x.dtype), domain=([0.0], [1.0]))
    x0 = np.full((4, 1), 1e308)
    out = simulate(sde, x0, t_end=0.02, dt=0.01)
    np.testing.assert_array_equal(out.xT, x0)


def test_non_finite_check_every_step_on_cpu():
    """With the default check on CPU the first bad step is reported, not a later one."""
    dt = 0.01
    sde = blowup_sde(math.nan, 5, dt)
    with pytest.raises(NonFiniteStateError) as info:
        simulate(sde, np.ones((3, 2)), t_end=1.0, dt=dt, device="cpu")
    assert info.value.step == 6
